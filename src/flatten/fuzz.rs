//! Property tests ("fuzzing" with proptest) of the page parser and the flattener, and the seed
//! corpus in `tests/fuzz-corpus/`.
//!
//! A longer run: `PROPTEST_CASES=20000 cargo test --lib flatten::fuzz` (`docs/fuzzing.md`).
//! Failing cases proptest finds are saved under `proptest-regressions/` and replayed first.

use std::collections::{BTreeMap, HashSet};

use arrow::array::{AsArray, RecordBatch};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::{FlatPage, PageContext, flatten_page};

fn ctx() -> PageContext<'static> {
    PageContext {
        workflow_id: "wf",
        offset: 0,
        extracted_at_us: 0,
        policy: crate::privacy::Policy::none(),
    }
}

/// Any JSON value, a few levels deep, strings of any characters (NUL and non-BMP included).
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((any::<String>(), inner), 0..4)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

/// Timestamps in the forms the docs show, and near misses.
fn timestamp_text() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just("2025-03-12T03:39:30.476391Z"),
        Just("2025-03-12 00:59:55.465508+00:00"),
        Just("2025-03-12T05:39:30+02:00"),
        Just("2025-03-12T03:39:30"),
        Just("2025-03-12"),
        Just("soon"),
        Just("+262000-01-01T00:00:00"),
    ]
    .prop_map(Value::from)
}

fn field_value(name: &'static str) -> BoxedStrategy<Value> {
    match name {
        "id" => prop_oneof![
            "[abc]".prop_map(Value::from),
            (0..3i64).prop_map(Value::from),
            Just(json!("")),
            any_json(),
        ]
        .boxed(),
        "start_time" | "end_time" => prop_oneof![timestamp_text(), any_json()].boxed(),
        "elapsed_time" => prop_oneof![
            any::<i64>().prop_map(Value::from),
            Just(json!(12.7)),
            Just(json!("12")),
            Just(json!("abc")),
            any_json(),
        ]
        .boxed(),
        "all_outputs" | "inputs" => prop_oneof![
            3 => prop::collection::vec((any::<String>(), any_json()), 0..5)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
            1 => any_json(),
        ]
        .boxed(),
        _ => any_json().boxed(),
    }
}

const FIELDS: [&str; 9] = [
    "id",
    "status",
    "start_time",
    "end_time",
    "elapsed_time",
    "error",
    "outputs",
    "all_outputs",
    "inputs",
];

/// A record: usually an object with some of the run fields, of random types; sometimes anything.
fn any_record() -> impl Strategy<Value = Value> {
    let fields: Vec<_> = FIELDS
        .iter()
        .map(|&name| prop::option::weighted(0.8, field_value(name)).prop_map(move |v| (name, v)))
        .collect();
    let object = fields.prop_map(|fields| {
        let map: Map<String, Value> = fields
            .into_iter()
            .filter_map(|(name, v)| Some((name.to_owned(), v?)))
            .collect();
        Value::Object(map)
    });
    prop_oneof![9 => object, 1 => any_json()]
}

/// One way of damaging a page body; positions are taken modulo its length.
#[derive(Debug, Clone)]
enum Damage {
    Truncate(usize),
    FlipByte(usize, u8),
    Insert(usize, Vec<u8>),
}

fn any_damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        any::<usize>().prop_map(Damage::Truncate),
        (any::<usize>(), 1..=255u8).prop_map(|(at, mask)| Damage::FlipByte(at, mask)),
        (
            any::<usize>(),
            prop_oneof![
                Just(br"\ud800".to_vec()),
                Just(br"\udc00\ud800".to_vec()),
                Just(vec![0xff]),
                Just(vec![0xc3]),
                Just(vec![0xed, 0xa0, 0x80]),
                Just(b"\"".to_vec()),
                Just(b",".to_vec()),
                Just(b"]".to_vec()),
                prop::collection::vec(any::<u8>(), 1..4),
            ]
        )
            .prop_map(|(at, bytes)| Damage::Insert(at, bytes)),
    ]
}

fn damage(mut body: Vec<u8>, how: &Damage) -> Vec<u8> {
    let len = body.len().max(1);
    match how {
        Damage::Truncate(at) => body.truncate(at % len),
        Damage::FlipByte(at, mask) => {
            if let Some(b) = body.get_mut(at % len) {
                *b ^= mask;
            }
        }
        Damage::Insert(at, bytes) => {
            let at = (at % len).min(body.len());
            body.splice(at..at, bytes.iter().copied());
        }
    }
    body
}

fn strings(batch: &RecordBatch, column: &str) -> Vec<Option<String>> {
    batch.column_by_name(column).map_or_else(Vec::new, |c| {
        c.as_string::<i32>()
            .iter()
            .map(|v| v.map(str::to_owned))
            .collect()
    })
}

/// The run id a record would get, when it has a usable one (the flattener's rule, restated).
fn usable_id(record: &Value) -> Option<String> {
    match record.get("id")? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Checks that every record of `page` is accounted for exactly once, and that what is kept is
/// byte-exact, against the records as generated.
fn assert_accounted(page: &FlatPage, records: &[Value]) {
    assert_eq!(page.record_count, records.len());
    let quarantined = page.rejected.iter().filter(|r| !r.kept).count();
    assert_eq!(
        page.record_count,
        page.runs.len() + quarantined + page.duplicates,
        "every element exactly once"
    );
    assert_eq!(page.run_rows(), page.runs.len());
    let mut seen = HashSet::new();
    let first_of_id: BTreeMap<String, &Value> = records
        .iter()
        .filter_map(|r| Some((usable_id(r)?, r)))
        .filter(|(id, r)| r.is_object() && seen.insert(id.clone()))
        .collect();
    let kept: Vec<&str> = page.runs.iter().map(|r| r.id.as_str()).collect();
    let mut expected_kept: Vec<&str> = first_of_id.keys().map(String::as_str).collect();
    let mut got_kept = kept.clone();
    expected_kept.sort_unstable();
    got_kept.sort_unstable();
    assert_eq!(
        got_kept, expected_kept,
        "the first record of each usable id"
    );
    for r in page.rejected.iter().filter(|r| r.kept) {
        let id = usable_id(&records[r.index]).unwrap_or_default();
        assert!(kept.contains(&id.as_str()), "kept trace of a run kept");
    }
    let mut want_nodes = Vec::new();
    let mut want_outputs = Vec::new();
    for (id, record) in &first_of_id {
        if let Some(Value::Object(nodes)) = record.get("all_outputs") {
            for (name, value) in nodes {
                let text = match value {
                    Value::Null => None,
                    Value::String(s) => Some(s.clone()),
                    other => Some(other.to_string()),
                };
                want_nodes.push((id.clone(), name.clone(), text));
            }
        }
        if let Some(Value::String(s)) = record.get("outputs") {
            want_outputs.push((id.clone(), s.clone()));
        }
    }
    let mut got_nodes = Vec::new();
    let mut got_outputs = Vec::new();
    for part in &page.partitions {
        let n = &part.node_outputs;
        let rows = strings(n, "run_id")
            .into_iter()
            .zip(strings(n, "node"))
            .zip(strings(n, "value"));
        for ((id, node), value) in rows {
            got_nodes.push((id.unwrap_or_default(), node.unwrap_or_default(), value));
        }
        let r = &part.runs;
        for (id, out) in strings(r, "run_id").into_iter().zip(strings(r, "outputs")) {
            let id = id.unwrap_or_default();
            let is_text = matches!(first_of_id[&id].get("outputs"), Some(Value::String(_)));
            if let (true, Some(out)) = (is_text, out) {
                got_outputs.push((id, out));
            }
        }
    }
    want_nodes.sort();
    got_nodes.sort();
    want_outputs.sort();
    got_outputs.sort();
    assert_eq!(got_nodes, want_nodes, "node_outputs rows, byte-exact");
    assert_eq!(got_outputs, want_outputs, "string outputs, byte-exact");
}

/// `value` as valid JSON text that is not compact: whitespace between tokens, escapes
/// `serde_json` never writes (`\/`, `\u00E9`, surrogate pairs), exponents without a sign. Every
/// choice comes from `noise`.
fn noisy_json(value: &Value, noise: &mut impl FnMut(u32) -> u32, out: &mut String) {
    let space = |noise: &mut dyn FnMut(u32) -> u32, out: &mut String| match noise(6) {
        0 => out.push(' '),
        1 => out.push_str("\n  "),
        _ => {}
    };
    space(noise, out);
    match value {
        Value::String(text) => {
            out.push('"');
            for c in text.chars() {
                match (c, noise(5)) {
                    ('"', _) => out.push_str("\\\""),
                    ('\\', _) => out.push_str("\\\\"),
                    ('/', 0) => out.push_str("\\/"),
                    (c, 0 | 1) if c as u32 > 0xFFFF => {
                        let mut units = [0u16; 2];
                        for unit in c.encode_utf16(&mut units) {
                            out.push_str(&format!("\\u{unit:04X}"));
                        }
                    }
                    (c, 0) if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04X}", c as u32)),
                    (c, 1) if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
                    (c, _) if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                    (c, _) => out.push(c),
                }
            }
            out.push('"');
        }
        Value::Number(n) => {
            let text = n.to_string();
            match noise(3) {
                0 => out.push_str(&text.replace("e+", "e")),
                1 => out.push_str(&text.replace('e', "E")),
                _ => out.push_str(&text),
            }
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                noisy_json(item, noise, out);
            }
            space(noise, out);
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                noisy_json(&Value::String(key.clone()), noise, out);
                out.push(':');
                noisy_json(item, noise, out);
            }
            space(noise, out);
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Every detector, a hash and a drop, with a pointer: what the policy fuzz test applies.
static FUZZ_POLICY: std::sync::LazyLock<crate::privacy::Policy> = std::sync::LazyLock::new(|| {
    let rules = crate::privacy::PolicyRules {
        mask: ["email", "phone", "card", "secret", "ip"]
            .map(String::from)
            .to_vec(),
        hash: vec!["inputs.user_id".into()],
        drop: vec!["all_outputs.pii/a/1".into()],
        patterns: Vec::new(),
    };
    let key = crate::privacy::HashKey::parse("fuzz-key-0123456789abcdef", "fuzz").unwrap();
    crate::privacy::Policy::build(&rules, Some(&key)).unwrap()
});

/// `record` with personal data planted where the policy must find it: a user id input, and a
/// node output holding an address (escaped, in a key too) and a value to drop.
fn plant(mut record: Value, seed: u64) -> Value {
    if let Value::Object(map) = &mut record {
        let text = if seed.is_multiple_of(2) {
            "x\n \"q\" jane@example.com"
        } else {
            "jane@example.com"
        };
        let inputs = map.entry("inputs").or_insert_with(|| json!({}));
        if let Value::Object(inputs) = inputs {
            inputs.insert("user_id".into(), json!("u-secret-1"));
        }
        let outputs = map.entry("all_outputs").or_insert_with(|| json!({}));
        if let Value::Object(outputs) = outputs {
            outputs.insert(
                "pii".into(),
                json!({"a": [text, "u-secret-1"], "jane@example.com": 1}),
            );
        }
    }
    record
}

/// Deterministic noise from `seed` (xorshift): `noise(n)` is below `n`.
fn noise_from(seed: u64) -> impl FnMut(u32) -> u32 {
    let mut state = seed | 1;
    move |n: u32| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % u64::from(n)) as u32
    }
}

/// Everything a flattened page holds, as text, to compare two pages whole.
fn everything(page: &Result<FlatPage, super::PageError>) -> String {
    format!("{page:?}")
}

proptest! {
    #[test]
    fn one_pass_and_record_by_record_agree_on_any_formatting(
        records in prop::collection::vec(any_record(), 0..8),
        seed in any::<u64>(),
    ) {
        let compact = serde_json::to_vec(&records).unwrap_or_default();
        let mut noise = noise_from(seed);
        let mut noisy = String::new();
        noisy_json(&Value::Array(records.clone()), &mut noise, &mut noisy);
        prop_assert_eq!(serde_json::from_str::<Value>(&noisy).ok(), Some(Value::Array(records)));
        let want = everything(&flatten_page(&compact, ctx()));
        prop_assert_eq!(&everything(&super::flatten_one_by_one(&compact, ctx())), &want, "record by record");
        prop_assert_eq!(&everything(&flatten_page(noisy.as_bytes(), ctx())), &want, "noisy: {}", noisy);
        prop_assert_eq!(&everything(&super::flatten_one_by_one(noisy.as_bytes(), ctx())), &want, "noisy, record by record");
    }

    #[test]
    fn under_a_policy_both_paths_store_the_same_and_nested_values_stay_json(
        records in prop::collection::vec(any_record(), 0..6),
        seed in any::<u64>(),
    ) {
        let records: Vec<Value> = records.into_iter().enumerate().map(|(i, r)| plant(r, i as u64 ^ seed)).collect();
        let compact = serde_json::to_vec(&records).unwrap_or_default();
        let mut noise = noise_from(seed);
        let mut noisy = String::new();
        noisy_json(&Value::Array(records), &mut noise, &mut noisy);
        let ctx = PageContext { policy: &FUZZ_POLICY, ..ctx() };
        let page = flatten_page(&compact, ctx);
        let want = everything(&page);
        prop_assert_eq!(&everything(&super::flatten_one_by_one(&compact, ctx)), &want, "record by record");
        prop_assert_eq!(&everything(&flatten_page(noisy.as_bytes(), ctx)), &want, "noisy: {}", noisy);
        let page = page.unwrap();
        for part in &page.partitions {
            let types = strings(&part.node_outputs, "value_type");
            for (t, v) in types.iter().zip(strings(&part.node_outputs, "value")) {
                if let (Some("object" | "array"), Some(v)) = (t.as_deref(), v) {
                    prop_assert!(serde_json::from_str::<Value>(&v).is_ok(), "{}", v);
                }
            }
            let all = format!("{:?}", (&part.runs, &part.node_outputs, &part.run_inputs));
            prop_assert!(!all.contains("jane@example.com") && !all.contains("u-secret-1"), "{}", all);
        }
        let rejected = format!("{:?}", page.rejected);
        prop_assert!(!rejected.contains("jane@example.com"), "{}", rejected);
    }

    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = flatten_page(&body, ctx());
    }

    #[test]
    fn damaged_pages_never_panic_and_lose_nothing_they_parse(
        records in prop::collection::vec(any_record(), 0..6),
        hurt in prop::collection::vec(any_damage(), 1..4),
    ) {
        let mut body = serde_json::to_vec(&records).unwrap_or_default();
        for how in &hurt {
            body = damage(body, how);
        }
        if let Ok(page) = flatten_page(&body, ctx()) {
            let quarantined = page.rejected.iter().filter(|r| !r.kept).count();
            prop_assert_eq!(
                page.record_count,
                page.runs.len() + quarantined + page.duplicates
            );
        }
    }

    #[test]
    fn every_record_is_accounted_for_once(records in prop::collection::vec(any_record(), 0..8)) {
        let body = serde_json::to_vec(&records).unwrap_or_default();
        let page = flatten_page(&body, ctx());
        prop_assert!(page.is_ok(), "{:?}", page.err());
        if let Ok(page) = page {
            assert_accounted(&page, &records);
        }
    }
}

/// What a corpus page must yield: its records' fate in page order, or the page error.
fn outcome(body: &[u8]) -> Vec<String> {
    let page = match flatten_page(body, ctx()) {
        Ok(page) => page,
        Err(e) => return vec![format!("page error: {e}")],
    };
    let mut fates: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for r in &page.rejected {
        let kind = if r.kept { "kept" } else { "rejected" };
        fates
            .entry(r.index)
            .or_default()
            .push(format!("{kind}: {}", r.reason));
    }
    let mut lines = vec![format!(
        "{} records, {} runs, {} duplicates, {} node rows, {} input rows",
        page.record_count,
        page.runs.len(),
        page.duplicates,
        page.partitions
            .iter()
            .map(|p| p.node_outputs.num_rows())
            .sum::<usize>(),
        page.partitions
            .iter()
            .map(|p| p.run_inputs.num_rows())
            .sum::<usize>(),
    )];
    lines.extend(
        fates
            .into_iter()
            .flat_map(|(index, reasons)| reasons.into_iter().map(move |r| format!("{index} {r}"))),
    );
    lines
}

#[test]
fn seed_corpus_yields_what_each_page_should() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fuzz-corpus");
    let expected: BTreeMap<&str, Vec<&str>> = corpus_expectations().into_iter().collect();
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    let listed: Vec<&str> = expected.keys().copied().collect();
    assert_eq!(names, listed, "every corpus file has an expectation");
    for name in names {
        let body = std::fs::read(format!("{dir}/{name}")).unwrap();
        assert_eq!(outcome(&body), expected[name.as_str()], "{name}");
    }
}

fn corpus_expectations() -> Vec<(&'static str, Vec<&'static str>)> {
    vec![
        (
            "deep-nesting.json",
            vec!["2 records, 2 runs, 0 duplicates, 1 node rows, 0 input rows"],
        ),
        (
            "duplicate-keys.json",
            vec![
                "4 records, 1 runs, 0 duplicates, 2 node rows, 0 input rows",
                "0 rejected: duplicate key `status`",
                "1 rejected: duplicate key `all_outputs.node_a`",
                "2 rejected: duplicate key `inputs.x[0].k`",
            ],
        ),
        (
            "empty.json",
            vec!["0 records, 0 runs, 0 duplicates, 0 node rows, 0 input rows"],
        ),
        (
            "invalid-utf8.json",
            vec![
                "4 records, 1 runs, 0 duplicates, 0 node rows, 0 input rows",
                "0 rejected: record contains bytes that are not UTF-8",
                "2 rejected: record contains bytes that are not UTF-8",
                "3 rejected: record contains bytes that are not UTF-8",
            ],
        ),
        (
            "lone-surrogates.json",
            vec![
                "4 records, 2 runs, 0 duplicates, 1 node rows, 0 input rows",
                "1 rejected: record is not valid JSON: unexpected end of hex escape at line 1 column 62",
                "3 rejected: record is not valid JSON: lone leading surrogate in hex escape at line 1 column 34",
            ],
        ),
        (
            "not-an-array.json",
            vec!["page error: expected a JSON array of runs, got object"],
        ),
        (
            "odd-types.json",
            vec![
                "11 records, 6 runs, 1 duplicates, 0 node rows, 0 input rows",
                "0 kept: kept with unreadable values: `all_outputs` is a JSON array, not an object (no node_outputs rows): [1,2]",
                "1 kept: kept with unreadable values: `all_outputs` is a JSON string, not an object (no node_outputs rows): \"just text\"",
                "2 kept: kept with unreadable values: `elapsed_time` is not a number of seconds (stored as NULL): \"abc\"; `all_outputs` is a JSON number, not an object (no node_outputs rows): 5",
                "3 kept: kept with unreadable values: `elapsed_time` is not a number of seconds (stored as NULL): 1e+400; `all_outputs` is a JSON boolean, not an object (no node_outputs rows): true",
                "4 kept: kept with unreadable values: `elapsed_time` is not a number of seconds (stored as NULL): true",
                "6 rejected: `id` is a JSON boolean",
                "8 rejected: `id` is missing",
                "9 rejected: record is a JSON null, not an object",
                "10 rejected: record is a JSON array, not an object",
            ],
        ),
        (
            "timestamps.json",
            vec![
                "8 records, 8 runs, 0 duplicates, 0 node rows, 0 input rows",
                "5 kept: kept with unreadable values: `start_time` is not a timestamp (stored as NULL): \"2025-03-12\"; `end_time` is not a timestamp (stored as NULL): 1741750770",
                "6 kept: kept with unreadable values: `start_time` is not a timestamp (stored as NULL): \"yesterday\"; `end_time` is not a timestamp (stored as NULL): {\"t\":1}",
                "7 kept: kept with unreadable values: `start_time` is not a timestamp (stored as NULL): \"+262000-01-01T00:00:00\"",
            ],
        ),
        (
            "too-deep.json",
            vec![
                "2 records, 1 runs, 0 duplicates, 0 node rows, 0 input rows",
                "0 rejected: record is not valid JSON: recursion limit exceeded at line 1 column 157",
            ],
        ),
        (
            "truncated.json",
            vec![
                "page error: response is not valid JSON (line 1, column 64): EOF while parsing a string at line 1 column 64",
            ],
        ),
    ]
}
