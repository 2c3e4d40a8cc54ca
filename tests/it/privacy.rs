//! Field policies: planted personal data and secrets in inputs, outputs, node outputs (deep
//! inside nested ones too), errors, steps, `_rejected/` records and an error body never reach a
//! byte under `--out` or the console; hashes join across exports with one key and differ with
//! another; a changed policy is said, and `--full` rewrites the older rows.

use std::collections::BTreeSet;
use std::path::Path;

use arrow::array::AsArray;
use arrow::compute::cast;
use arrow::datatypes::DataType;
use orchestra_export::simulate::{Fault, FaultKind, RawFixture, SimConfig};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Value, json};

use crate::support::*;

const EMAIL: &str = "jane.planted@example.com";
const PHONE: &str = "+44 20 7946 0958";
const CARD: &str = "4111 1111 1111 1111";
const SECRET: &str = "sk-proj-PLANTEDabcdefghijklmnop123456";
const USER_ID: &str = "user-planted-8841";
const DOC: &str = "Planted retrieved document: the merger closes on Friday";
/// A document's title, planted as a key (a retriever's scores by title).
const TITLE: &str = "Planted memo title";
const HASH_KEY: &str = "hash-key-for-tests-0123456789abcdef";
const OTHER_KEY: &str = "another-hash-key-for-tests-987654";

const PLANTED: [&str; 8] = [
    EMAIL,
    PHONE,
    CARD,
    SECRET,
    USER_ID,
    DOC,
    TITLE,
    // The address as a JSON escape, in a record that does not parse.
    "jane.planted\\u0040example.com",
];

fn time(minute: u32) -> String {
    format!("2026-11-30T10:{minute:02}:00.000000Z")
}

/// Runs holding every planted value, in every place a run carries text.
fn planted_runs() -> Vec<Value> {
    vec![
        json!({
            "id": "r1", "status": "completed", "start_time": time(1), "end_time": time(2), "elapsed_time": 60,
            "inputs": {"user_id": USER_ID, "prompt": format!("contact {EMAIL} or {PHONE}"), EMAIL: "owner"},
            // A card number with its CVV after it, and the answer quoting the dropped document.
            "outputs": format!("charged card {CARD} 123; source: {DOC}"),
            "all_outputs": {
                "retriever": {"documents": [DOC]},
                "model": {"choices": [{"message": {"role": "assistant", "content": format!("use key {SECRET}")}}], "usage": {"total_tokens": 12}},
                "writer": format!("Dear {EMAIL},\nyour number {PHONE} is on file"),
            },
            "error": null,
        }),
        json!({
            "id": "r2", "status": "failed", "start_time": time(3), "end_time": time(4), "elapsed_time": 60,
            "inputs": {"user_id": USER_ID, "note": {"deep": [{"card": CARD}]}},
            "outputs": null,
            "all_outputs": {"retriever": DOC},
            "error": format!("upstream refused {EMAIL} with {SECRET}"),
        }),
        // Kept with a trace in `_rejected/` (its start is not a time): the record is written there.
        json!({
            "id": "r3", "status": "completed", "start_time": "not a time", "end_time": time(6),
            "inputs": {"user_id": USER_ID, "prompt": EMAIL},
            "all_outputs": {"retriever": DOC, "model": PHONE},
        }),
        // Quarantined (no id): only `_rejected/` holds it.
        json!({
            "status": "completed", "start_time": time(7),
            "inputs": {"user_id": USER_ID, "prompt": CARD},
            "all_outputs": {"retriever": DOC, "writer": SECRET},
        }),
        // Not an object: its fields cannot be found, so it is withheld.
        json!([{"id": "r9", "inputs": {"user_id": USER_ID}, "all_outputs": {"retriever": DOC}}]),
    ]
}

fn sim() -> Sim {
    // A page repeating a key is quarantined as text; it is read as JSON all the same to apply
    // the policy.
    // Its reason names the repeated key's path, here a document title. A lone surrogate makes
    // the second record unparseable; it holds the address as an escape.
    let repeated = format!(
        r#"[{{"id":"x1","start_time":"{}","inputs":{{"user_id":"{USER_ID}","user_id":"{USER_ID}"}},"all_outputs":{{"retriever":{{"{TITLE}":0.9,"{TITLE}":0.8}},"writer":"{EMAIL}"}}}},
           {{"id":"x2","inputs":{{"prompt":"\ud800 jane.planted\u0040example.com"}}}}]"#,
        time(8)
    );
    Sim::start(SimConfig {
        workflows: 0,
        fixtures: vec![
            fixture("wf-private", planted_runs()),
            fixture("wf-echo", planted_runs()),
        ],
        raw_fixtures: vec![RawFixture {
            id: "wf-repeated".into(),
            body: repeated.into_bytes(),
        }],
        // An API quoting the page it failed on in its error body.
        faults: vec![Fault {
            path_contains: Some("/wf-echo/".into()),
            kind: FaultKind::EchoRecord,
            schedule: orchestra_export::simulate::Schedule::Always,
        }],
        ..SimConfig::default()
    })
}

const POLICY: &str = r#"
[privacy]
mask = ["email", "phone", "card", "secret"]
hash = ["inputs.user_id"]
drop = ["all_outputs.retriever"]
"#;

fn config(dir: &Path) -> String {
    let path = dir.join("export.toml");
    std::fs::write(&path, POLICY).unwrap();
    path.to_str().unwrap().to_owned()
}

fn export_with_key(
    sim: &Sim,
    out: &Path,
    config: &str,
    key: &str,
    extra: &[&str],
) -> std::process::Output {
    let mut args = vec![
        "--config",
        config,
        "--all-workflows",
        "--with-steps",
        "--max-retries",
        "0",
    ];
    args.extend_from_slice(extra);
    export_with_env(sim, out, &args, &[("ORCHESTRA_HASH_KEY", key)])
}

/// Every text below `dir`: Parquet files read back (every column cast to text), every other file
/// as its bytes.
fn every_text(dir: &Path) -> Vec<(String, String)> {
    let mut texts = Vec::new();
    for path in all_files(dir) {
        let name = path.display().to_string();
        if path.extension().is_some_and(|e| e == "parquet") {
            let reader =
                ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&path).unwrap())
                    .unwrap()
                    .build()
                    .unwrap();
            for batch in reader {
                let batch = batch.unwrap();
                for column in batch.columns() {
                    let Ok(text) = cast(column, &DataType::Utf8) else {
                        continue;
                    };
                    for v in text.as_string::<i32>().iter().flatten() {
                        texts.push((name.clone(), v.to_owned()));
                    }
                }
            }
        } else {
            texts.push((
                name,
                String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned(),
            ));
        }
    }
    texts
}

fn assert_nothing_planted(dir: &Path, console: &str, also: &[&str]) {
    for (file, text) in every_text(dir) {
        for planted in PLANTED.iter().chain(also) {
            assert!(!text.contains(planted), "{planted:?} is in {file}: {text}");
        }
    }
    for planted in PLANTED.iter().chain(also) {
        assert!(
            !console.contains(planted),
            "{planted:?} was printed:\n{console}"
        );
    }
}

fn console(out: &std::process::Output) -> String {
    format!("{}{}", stdout(out), stderr(out))
}

fn cell<'a>(rows: &'a [Row], run: &str, key: &str, value: &str, column: &str) -> &'a Cell {
    let row = rows
        .iter()
        .find(|r| r["run_id"].text() == Some(run) && r[key].text() == Some(value))
        .unwrap_or_else(|| panic!("no row {run}/{value}"));
    &row[column]
}

fn digest_of_user(out: &Path) -> String {
    let (_, inputs) = read_table(out, "run_inputs");
    cell(&inputs, "r1", "name", "user_id", "value")
        .text()
        .unwrap()
        .to_owned()
}

#[test]
fn planted_values_never_reach_a_file_or_the_console_and_every_run_is_kept() {
    let sim = sim();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("data");
    let config = config(dir.path());
    let first = export_with_key(&sim, &out, &config, HASH_KEY, &[]);
    // wf-echo fails (its pages answer 500); the others are committed.
    assert_eq!(first.status.code(), Some(1), "{}", console(&first));
    assert!(
        stderr(&first).contains("withheld by the privacy policy"),
        "{}",
        stderr(&first)
    );
    let report = run(&["report", "--data", out.to_str().unwrap()]);
    assert_ok(&report);
    let mut printed = console(&first);
    printed.push_str(&console(&report));
    assert_nothing_planted(&out, &printed, &[HASH_KEY]);

    // Every run is still there, with the values the policy left.
    let ids = stored_ids(&out);
    let private: Vec<&str> = ids["wf-private"].iter().map(String::as_str).collect();
    assert_eq!(private, ["r1", "r2", "r3"]);
    assert!(
        !ids.contains_key("wf-repeated"),
        "the record repeating a key is quarantined"
    );
    let (_, runs) = read_table(&out, "runs");
    let r = |id: &str, c: &str| {
        runs.iter()
            .find(|r| {
                r["run_id"].text() == Some(id) && r["workflow_id"].text() == Some("wf-private")
            })
            .unwrap()[c]
            .clone()
    };
    assert_eq!(
        r("r1", "outputs"),
        Cell::Text("charged card [card] 123; source: [dropped]".into())
    );
    assert_eq!(
        r("r2", "error"),
        Cell::Text("upstream refused [email] with [secret]".into())
    );
    let digest = digest_of_user(&out);
    assert_eq!(digest.len(), 64);
    assert!(
        digest
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    let inputs: Value = serde_json::from_str(r("r1", "inputs").text().unwrap()).unwrap();
    assert_eq!(
        inputs,
        json!({"user_id": digest, "prompt": "contact [email] or [phone]", "[email]": "owner"}),
        "runs.inputs and run_inputs agree"
    );
    let inputs: Value = serde_json::from_str(r("r2", "inputs").text().unwrap()).unwrap();
    assert_eq!(inputs["note"], json!({"deep": [{"card": "[card]"}]}));

    let (_, nodes) = read_table(&out, "node_outputs");
    for run in ["r1", "r2", "r3"] {
        assert_eq!(
            cell(&nodes, run, "node", "retriever", "value"),
            &Cell::Null,
            "{run}"
        );
        assert_eq!(
            cell(&nodes, run, "node", "retriever", "value_bytes"),
            &Cell::Null,
            "{run}"
        );
    }
    assert_eq!(
        cell(&nodes, "r1", "node", "retriever", "value_type"),
        &text("object"),
        "the type is kept"
    );
    let model: Value =
        serde_json::from_str(cell(&nodes, "r1", "node", "model", "value").text().unwrap()).unwrap();
    assert_eq!(
        model,
        json!({"choices": [{"message": {"role": "assistant", "content": "use key [secret]"}}], "usage": {"total_tokens": 12}}),
        "structure and key order kept"
    );
    assert_eq!(
        cell(&nodes, "r1", "node", "writer", "value"),
        &text("Dear [email],\nyour number [phone] is on file")
    );
    let writer_bytes = "Dear [email],\nyour number [phone] is on file".len() as i64;
    assert_eq!(
        cell(&nodes, "r1", "node", "writer", "value_bytes"),
        &Cell::Int(writer_bytes)
    );

    // Steps: the retriever's outputs are dropped, the first step's inputs hashed and masked.
    let (_, steps) = read_table(&out, "steps");
    let retriever: Vec<&Row> = steps
        .iter()
        .filter(|s| {
            s["node_id"].text() == Some("retriever")
                && s["workflow_id"].text() == Some("wf-private")
        })
        .collect();
    assert_eq!(retriever.len(), 3);
    assert!(retriever.iter().all(|s| s["outputs"] == Cell::Null));
    assert!(
        steps
            .iter()
            .filter_map(|s| s["inputs"].text())
            .any(|i| i.contains(&digest))
    );

    // `_rejected/` keeps the quarantined and the traced records, protected.
    let rejected: Vec<Value> = all_files(&out.join("_rejected"))
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<Value>>()
        })
        .collect();
    assert_eq!(rejected.len(), 5, "{rejected:?}");
    let withheld = rejected
        .iter()
        .filter(|r| {
            r["record"]
                .as_str()
                .is_some_and(|t| t.contains("bytes withheld by the privacy policy"))
        })
        .count();
    assert_eq!(
        withheld, 2,
        "the array and the record that does not parse: {rejected:?}"
    );
    // Names are masked alike in `run_inputs` and in the keys of `runs.inputs`.
    let (_, inputs) = read_table(&out, "run_inputs");
    assert!(
        inputs
            .iter()
            .any(|r| r["name"] == text("[email]") && r["value"] == text("owner"))
    );
    let quarantined = rejected
        .iter()
        .find(|r| r["record"]["inputs"]["prompt"] == json!("[card]"))
        .expect("the record without an id");
    assert_eq!(quarantined["record"]["inputs"]["user_id"], json!(digest));
    assert_eq!(
        quarantined["record"]["all_outputs"]["retriever"],
        Value::Null
    );

    // The manifest records the policy and the key's fingerprint.
    let manifest = newest_manifest(&out);
    assert_eq!(manifest["privacy"]["hash"], json!(["inputs.user_id"]));
    assert_eq!(
        manifest["privacy"]["mask"],
        json!(["email", "phone", "card", "secret"])
    );
    assert_eq!(
        manifest["privacy"]["key_fingerprint"]
            .as_str()
            .map(str::len),
        Some(16)
    );

    // The digest is HMAC-SHA256 as Python's standard library computes it.
    let python = std::process::Command::new(python())
        .args(["-c", "import hmac, hashlib, sys; print(hmac.new(sys.argv[1].encode(), sys.argv[2].encode(), hashlib.sha256).hexdigest())", HASH_KEY, USER_ID])
        .output()
        .unwrap();
    assert_eq!(stdout(&python).trim(), digest);
}

fn newest_manifest(out: &Path) -> Value {
    let mut files = all_files(&out.join("_manifest"));
    files.sort();
    serde_json::from_slice(&std::fs::read(files.last().unwrap()).unwrap()).unwrap()
}

#[test]
fn digests_join_across_exports_with_one_key_and_differ_with_another() {
    let sim = sim();
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let digests: Vec<String> = [HASH_KEY, HASH_KEY, OTHER_KEY]
        .iter()
        .enumerate()
        .map(|(i, key)| {
            let out = dir.path().join(format!("data-{i}"));
            let done = export_with_key(&sim, &out, &config, key, &[]);
            assert_eq!(done.status.code(), Some(1), "{}", console(&done));
            let digest = digest_of_user(&out);
            // Every table holding the value holds the same digest.
            let (_, runs) = read_table(&out, "runs");
            let stored: BTreeSet<String> = runs
                .iter()
                .filter_map(|r| r["inputs"].text())
                .filter_map(|t| serde_json::from_str::<Value>(t).ok())
                .filter_map(|v| v["user_id"].as_str().map(str::to_owned))
                .collect();
            assert_eq!(stored, BTreeSet::from([digest.clone()]));
            digest
        })
        .collect();
    assert_eq!(digests[0], digests[1]);
    assert_ne!(digests[0], digests[2]);
}

#[test]
fn a_policy_needs_its_key_and_says_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let out = dir.path().join("data");
    let args = [
        "export",
        "--workflow",
        "w",
        "--out",
        out.to_str().unwrap(),
        "--config",
        &config,
    ];
    let no_key = run(&args);
    assert_usage_error(
        &no_key,
        "error: privacy policy: `hash` needs a key: set `ORCHESTRA_HASH_KEY` or `hash_key_file` (`--hash-key-file`); hint: create one with `openssl rand -hex 32` and keep it with your other secrets",
        "no key",
    );
    let short = run_with_env(
        &args,
        &[("ORCHESTRA_API_KEY", KEY), ("ORCHESTRA_HASH_KEY", "short")],
    );
    assert_usage_error(
        &short,
        "error: privacy policy: the hashing key from `ORCHESTRA_HASH_KEY` is 5 bytes; it must have at least 16 (hint: `openssl rand -hex 32`)",
        "short key",
    );
    let typo = run(&[
        "export",
        "--workflow",
        "w",
        "--out",
        out.to_str().unwrap(),
        "--mask",
        "emial",
    ]);
    assert_usage_error(
        &typo,
        "error: privacy policy: `mask`: unknown detector `emial`; did you mean `email`? (the detectors are `email`, `phone`, `card`, `secret`, `ip`, and the names of `[[privacy.pattern]]`)",
        "typo",
    );
    let path = run(&[
        "export",
        "--workflow",
        "w",
        "--out",
        out.to_str().unwrap(),
        "--drop",
        "input.x",
    ]);
    assert!(
        stderr(&path).contains(
            "`drop`: `input.x` is not a field path: unknown field; did you mean `inputs`?"
        ),
        "{}",
        stderr(&path)
    );
    std::fs::write(
        dir.path().join("bad.toml"),
        "[privacy]\nhash_key = \"abc\"\n",
    )
    .unwrap();
    let in_file = run(&[
        "export",
        "--workflow",
        "w",
        "--config",
        dir.path().join("bad.toml").to_str().unwrap(),
    ]);
    assert!(
        stderr(&in_file)
            .contains("line 2: `hash_key` is not allowed: keep the key out of config files"),
        "{}",
        stderr(&in_file)
    );
    assert!(!out.exists(), "nothing written");
}

#[test]
fn custom_patterns_and_flags_mask_without_a_config_file() {
    let sim = Sim::start(SimConfig {
        workflows: 0,
        fixtures: vec![fixture(
            "wf-custom",
            vec![
                json!({"id": "c1", "start_time": time(1), "inputs": {"employee": "EMP-123456 at 10.1.2.3"}, "all_outputs": {"a": "EMP-654321"}}),
            ],
        )],
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("export.toml");
    std::fs::write(
        &path,
        "[[privacy.pattern]]\nname = \"employee\"\nregex = \"EMP-[0-9]{6}\"\n",
    )
    .unwrap();
    let out = dir.path().join("data");
    let done = export(
        &sim,
        &out,
        &[
            "--all-workflows",
            "--config",
            path.to_str().unwrap(),
            "--mask",
            "ip",
        ],
    );
    assert_ok(&done);
    let (_, inputs) = read_table(&out, "run_inputs");
    assert_eq!(inputs[0]["value"], text("[employee] at [ip]"));
    let (_, nodes) = read_table(&out, "node_outputs");
    assert_eq!(nodes[0]["value"], text("[employee]"));
    assert_eq!(nodes[0]["value_bytes"], Cell::Int(10));
}

#[test]
fn a_changed_policy_is_said_and_full_rewrites_the_older_rows() {
    let sim = Sim::start(SimConfig {
        workflows: 0,
        fixtures: vec![fixture("wf-private", planted_runs())],
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("data");
    // A first export without a policy stores the values as they are.
    assert_ok(&export(&sim, &out, &["--all-workflows"]));
    assert!(every_text(&out).iter().any(|(_, t)| t.contains(EMAIL)));
    let config = config(dir.path());
    let plan = export_with_key(&sim, &out, &config, HASH_KEY, &["--dry-run"]);
    assert_ok(&plan);
    assert!(
        stdout(&plan)
            .contains("  privacy: mask email, phone, card, secret; hash inputs.user_id (key "),
        "{}",
        stdout(&plan)
    );
    assert!(
        stdout(&plan)
            .contains("its stored rows follow another privacy policy (`--full` rewrites them)"),
        "{}",
        stdout(&plan)
    );
    let changed = export_with_key(&sim, &out, &config, HASH_KEY, &[]);
    assert_ok(&changed);
    let warning = "1 of 1 workflows hold rows written under another privacy policy (none), not this export's (mask email, phone, card, secret; hash inputs.user_id (key ";
    assert_stderr_contains(&changed, warning);
    assert_stderr_contains(
        &changed,
        "run `export --full` to rewrite them under this one",
    );
    // The older rows keep what they were written under, and the next export says so again.
    let again = export_with_key(&sim, &out, &config, HASH_KEY, &[]);
    assert_stderr_contains(
        &again,
        "hold rows written under another privacy policy (none)",
    );
    let full = export_with_key(&sim, &out, &config, HASH_KEY, &["--full"]);
    assert_ok(&full);
    let after = export_with_key(&sim, &out, &config, HASH_KEY, &[]);
    assert_ok(&after);
    assert!(
        !stderr(&after).contains("another privacy policy"),
        "{}",
        stderr(&after)
    );
    // The three runs are kept once each, rewritten under the policy. (`_rejected/` files of the
    // first export stay as it wrote them — `--full` does not rewrite them, as documented — so
    // only the tables are checked here.)
    let texts: Vec<(String, String)> = every_text(&out)
        .into_iter()
        .filter(|(f, _)| f.ends_with(".parquet"))
        .collect();
    for planted in PLANTED {
        assert!(
            texts.iter().all(|(_, t)| !t.contains(planted)),
            "{planted} still stored"
        );
    }
    assert_eq!(stored_ids(&out)["wf-private"].len(), 3);
    // `verify` reads the same config without the hashing key (it stores nothing) and agrees.
    let url = sim.url();
    let verified = run(&[
        "verify",
        "--base-url",
        &url,
        "--out",
        out.to_str().unwrap(),
        "--config",
        &config,
        "--all-workflows",
    ]);
    assert_ok(&verified);
    // A `--full` export without `--with-steps` leaves `steps` as it is, and says so.
    let args = ["--config", config.as_str(), "--all-workflows", "--full"];
    let without_steps = export_with_env(&sim, &out, &args, &[("ORCHESTRA_HASH_KEY", HASH_KEY)]);
    assert_ok(&without_steps);
    assert_stderr_contains(
        &without_steps,
        "this `--full` export does not rewrite `steps` (rewritten only with `--with-steps`): its rows keep the privacy policy they were written under",
    );
}
