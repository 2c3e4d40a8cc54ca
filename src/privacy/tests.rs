use serde_json::json;

use super::*;

fn key(text: &str) -> HashKey {
    HashKey::parse(text, "test").unwrap()
}

fn rules(mask: &[&str], hash: &[&str], drop: &[&str]) -> PolicyRules {
    let own = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect();
    PolicyRules {
        mask: own(mask),
        hash: own(hash),
        drop: own(drop),
        patterns: Vec::new(),
    }
}

#[test]
fn digests_are_keyed_hmac_sha256_in_lowercase_hex() {
    let k = key("0123456789abcdef0123456789abcdef");
    let p = Policy::build(&rules(&[], &["inputs.user_id"], &[]), Some(&k)).unwrap();
    // RFC 4231-style check against an independent implementation's answer for this key and text.
    let d = p.digest("u-42");
    assert_eq!(d.len(), 64);
    assert!(
        d.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    assert_eq!(d, p.digest("u-42"), "one key, one digest");
    let other = Policy::build(
        &rules(&[], &["inputs.user_id"], &[]),
        Some(&key("another key of 32 bytes, really!")),
    )
    .unwrap();
    assert_ne!(d, other.digest("u-42"));
    assert_ne!(p.record().key_fingerprint, other.record().key_fingerprint);
    assert_eq!(
        p.record().key_fingerprint.as_deref().map(str::len),
        Some(16)
    );
    assert!(
        !p.record()
            .key_fingerprint
            .as_deref()
            .unwrap()
            .contains("0123456789abcdef")
    );
}

#[test]
fn hmac_matches_the_rfc_4231_test_vector() {
    // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
    let h = Hasher(aws_lc_rs::hmac::Key::new(
        aws_lc_rs::hmac::HMAC_SHA256,
        b"Jefe",
    ));
    assert_eq!(
        h.hex(b"what do ya want for nothing?"),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

#[test]
fn bad_rules_and_keys_say_what_is_wrong() {
    let k = key("0123456789abcdef0123456789abcdef");
    let mut cases: Vec<(PolicyRules, Option<&HashKey>, &str)> = vec![
        (
            rules(&["emial"], &[], &[]),
            None,
            "unknown detector `emial`; did you mean `email`?",
        ),
        (
            rules(&["ssn"], &[], &[]),
            None,
            "the detectors are `email`, `phone`, `card`, `secret`, `ip`",
        ),
        (
            rules(&[], &["inputs.user_id"], &[]),
            None,
            "`hash` needs a key: set `ORCHESTRA_HASH_KEY`",
        ),
        (
            rules(&[], &[], &["input.x"]),
            Some(&k),
            "`drop`: `input.x` is not a field path: unknown field; did you mean `inputs`?",
        ),
        (
            PolicyRules {
                patterns: vec![("bad name".into(), "x".into())],
                ..PolicyRules::default()
            },
            None,
            "must be 1 to 40 letters",
        ),
        (
            PolicyRules {
                patterns: vec![("emp".into(), "(".into())],
                ..PolicyRules::default()
            },
            None,
            "`emp`: invalid regex",
        ),
        (
            PolicyRules {
                patterns: vec![("emp".into(), "x*".into())],
                ..PolicyRules::default()
            },
            None,
            "matches empty text",
        ),
        (
            PolicyRules {
                patterns: vec![("email".into(), "x".into())],
                ..PolicyRules::default()
            },
            None,
            "used twice",
        ),
    ];
    cases.push((
        rules(&[], &["inputs.user_id"], &["inputs.*"]),
        Some(&k),
        "`drop` `inputs.*` and `hash` `inputs.user_id` name the same values; keep one rule for them",
    ));
    for (r, k, want) in cases {
        let e = Policy::build(&r, k).unwrap_err();
        assert!(e.contains(want), "{r:?}: {e}");
    }
    assert!(
        HashKey::parse("short", "`X`")
            .unwrap_err()
            .contains("it must have at least 16")
    );
    assert_eq!(format!("{k:?}"), "HashKey(***)");
}

#[test]
fn a_record_has_its_rules_applied_and_every_string_masked() {
    let k = key("0123456789abcdef0123456789abcdef");
    let p = Policy::build(
        &rules(
            &["email", "phone"],
            &["inputs.user_id"],
            &[
                "all_outputs.retriever",
                "all_outputs.model/choices/*/message/content",
            ],
        ),
        Some(&k),
    )
    .unwrap();
    let mut record = json!({
        "id": "r1",
        "inputs": {"user_id": "u-42", "prompt": "mail jane@example.com"},
        "all_outputs": {
            "retriever": {"documents": ["secret doc"]},
            "model": {"choices": [{"message": {"content": "call +44 20 7946 0958", "role": "assistant"}}]},
        },
        "outputs": "ok, see secret doc",
    });
    let hidden = p.protect_record(&mut record);
    assert_eq!(record["inputs"]["user_id"], json!(p.digest("u-42")));
    assert_eq!(record["inputs"]["prompt"], json!("mail [email]"));
    assert_eq!(record["all_outputs"]["retriever"], Value::Null);
    assert_eq!(
        record["all_outputs"]["model"]["choices"][0]["message"],
        json!({"content": null, "role": "assistant"})
    );
    // What a rule replaced is replaced wherever else the record holds it, and hidden in
    // messages, keys of a dropped object too.
    assert_eq!(record["outputs"], json!("ok, see [dropped]"));
    let message = p.protect_message(
        "record u-42 from jane@example.com: duplicate key `all_outputs.retriever.documents`",
        &hidden,
    );
    assert_eq!(
        message,
        "record [hidden] from [email]: duplicate key `all_outputs.retriever.[hidden]`"
    );
    // A record that is not an object cannot have its fields found: withheld.
    let mut list = json!([{"inputs": {"user_id": "u-42"}}]);
    p.protect_record(&mut list);
    assert_eq!(
        list,
        json!("[31 bytes withheld by the privacy policy: the record is not an object]")
    );
}

#[test]
fn steps_follow_the_rules_of_their_node_and_inputs() {
    let k = key("0123456789abcdef0123456789abcdef");
    let p = Policy::build(
        &rules(
            &["email"],
            &["inputs.user_id"],
            &["all_outputs.retriever/documents"],
        ),
        Some(&k),
    )
    .unwrap();
    let mut step = json!({"node_id": "retriever", "outputs": {"output": {"documents": ["d"]}}, "inputs": {"user_id": "u-42"}, "error": "by bob@example.org"});
    p.protect_step(&mut step, &Hidden::default());
    assert_eq!(
        step["outputs"],
        Value::Null,
        "the whole outputs of the node's step"
    );
    assert_eq!(step["inputs"]["user_id"], json!(p.digest("u-42")));
    assert_eq!(step["error"], json!("by [email]"));
    // A later step's inputs carry what the run's rules replaced: replaced there too.
    let mut run = Hidden::default();
    run.note(
        Action::Drop,
        &json!({"documents": ["the merger closes Friday"]}),
        None,
    );
    let mut other = json!({"node_id": "model", "outputs": {"output": "x"}, "inputs": {"context": "the merger closes Friday"}});
    p.protect_step(&mut other, &run);
    assert_eq!(other["outputs"], json!({"output": "x"}));
    assert_eq!(other["inputs"]["context"], json!("[dropped]"));
}

#[test]
fn bodies_are_masked_or_withheld() {
    let masks = Policy::build(&rules(&["email"], &[], &[]), None).unwrap();
    assert_eq!(
        masks.protect_body("no user jane@example.com"),
        "no user [email]"
    );
    let drops = Policy::build(&rules(&[], &[], &["outputs"]), None).unwrap();
    assert_eq!(
        drops.protect_body("{\"outputs\": \"x\"}"),
        "[16 bytes withheld by the privacy policy: it may quote the fields the policy hashes or drops]"
    );
    assert_eq!(Policy::none().protect_body("as is"), "as is");
    assert!(Policy::none().is_empty());
}

#[test]
fn the_record_describes_the_policy_for_people() {
    let k = key("0123456789abcdef0123456789abcdef");
    let p = Policy::build(
        &rules(&["phone", "email"], &["inputs.user_id"], &["outputs"]),
        Some(&k),
    )
    .unwrap();
    let fp = p.record().key_fingerprint.clone().unwrap();
    assert_eq!(
        p.record().describe(),
        format!("mask email, phone; hash inputs.user_id (key {fp}); drop outputs")
    );
    assert_eq!(PolicyRecord::default().describe(), "none");
    // The order rules are given in does not change the record; a pattern's regex (which may
    // spell out the value it masks) is recorded as a digest.
    let mut r = rules(&["email", "phone"], &["inputs.b", "inputs.a"], &[]);
    r.patterns = vec![("name".into(), "Jane Doe".into())];
    let a = Policy::build(&r, Some(&k)).unwrap();
    r.hash.reverse();
    r.mask.reverse();
    let b = Policy::build(&r, Some(&k)).unwrap();
    assert_eq!(a.record(), b.record());
    let recorded = serde_json::to_string(a.record()).unwrap();
    assert!(
        !recorded.contains("Jane Doe") && recorded.contains("regex_sha256"),
        "{recorded}"
    );
}
