//! Bad input, one test per class: the simulator serves the odd page (as records, or byte for byte
//! as a raw fixture), the real binary exports it, and the dataset and `_rejected/` are read back
//! and compared exactly.

use std::path::Path;
use std::process::Output;

use orchestra_export::simulate::{RawFixture, SimConfig};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::support::*;

/// Exports workflow `id` served from `config`; returns the folder and the process output.
fn export_one(config: SimConfig, id: &str) -> (TempDir, Output) {
    let sim = Sim::start(SimConfig {
        workflows: 0,
        ..config
    });
    let dir = tempfile::tempdir().unwrap();
    let out = export(&sim, dir.path(), &["--workflow", id, "--no-progress"]);
    (dir, out)
}

fn raw(id: &str, body: &[u8]) -> SimConfig {
    SimConfig {
        raw_fixtures: vec![RawFixture {
            id: id.to_owned(),
            body: body.to_vec(),
        }],
        ..SimConfig::default()
    }
}

fn records(id: &str, records: Vec<Value>) -> SimConfig {
    SimConfig {
        fixtures: vec![fixture(id, records)],
        ..SimConfig::default()
    }
}

/// Rows of `table` keyed by run id (and node/name for child tables), `extracted_at` and
/// `deleted_upstream_at` checked and left out.
fn table(dir: &Path, name: &str) -> Vec<Row> {
    let (_, mut rows) = read_table(dir, name);
    for row in &mut rows {
        if let Some(extracted) = row.remove("extracted_at") {
            assert!(matches!(extracted, Cell::Micros(_)), "{extracted:?}");
        }
        // Every run here exists upstream.
        if let Some(deleted) = row.remove("deleted_upstream_at") {
            assert_eq!(deleted, Cell::Null);
        }
    }
    rows.sort();
    rows
}

/// Every line of every `_rejected/*.jsonl` file, in order.
fn rejected_lines(dir: &Path) -> Vec<Value> {
    let Ok(entries) = std::fs::read_dir(dir.join("_rejected")) else {
        return Vec::new();
    };
    let mut lines = Vec::new();
    for entry in entries {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        lines.extend(
            text.lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap()),
        );
    }
    lines
}

fn rejected(wf: &str, index: usize, reason: &str, kept: bool, record: Value) -> Value {
    json!({"workflow_id": wf, "offset": 0, "index": index, "reason": reason, "kept": kept, "record": record})
}

fn cell_text(v: Option<&str>) -> Cell {
    v.map_or(Cell::Null, text)
}

fn int(v: Option<i64>) -> Cell {
    v.map_or(Cell::Null, Cell::Int)
}

fn ts(v: Option<&str>) -> Cell {
    v.map_or(Cell::Null, |t| Cell::Micros(micros(t)))
}

/// A `runs` row; `date` is the partition folder's value.
#[allow(clippy::too_many_arguments)]
fn run_row(
    wf: &str,
    id: &str,
    status: Option<&str>,
    (start, end): (Option<&str>, Option<&str>),
    (elapsed, duration): (Option<i64>, Option<i64>),
    (error, outputs, inputs): (Option<&str>, Option<&str>, Option<&str>),
    node_count: i64,
) -> Row {
    let date = start.map_or("__HIVE_DEFAULT_PARTITION__".to_owned(), |t| {
        chrono::DateTime::from_timestamp_micros(micros(t))
            .unwrap()
            .format("%Y-%m-%d")
            .to_string()
    });
    Row::from([
        ("workflow_id".into(), text(wf)),
        ("run_id".into(), text(id)),
        ("status".into(), cell_text(status)),
        ("start_time".into(), ts(start)),
        ("end_time".into(), ts(end)),
        ("elapsed_time".into(), int(elapsed)),
        ("duration_ms".into(), int(duration)),
        ("error".into(), cell_text(error)),
        ("outputs".into(), cell_text(outputs)),
        ("node_count".into(), Cell::Int(node_count)),
        ("inputs".into(), cell_text(inputs)),
        ("date".into(), text(&date)),
    ])
}

/// A bare run: only an id (and maybe a status), everything else NULL.
fn bare_run(wf: &str, id: &str, status: Option<&str>) -> Row {
    run_row(
        wf,
        id,
        status,
        (None, None),
        (None, None),
        (None, None, None),
        0,
    )
}

fn node_row(wf: &str, id: &str, node: &str, index: i64, value_type: &str, value: &str) -> Row {
    Row::from([
        ("workflow_id".into(), text(wf)),
        ("run_id".into(), text(id)),
        ("start_time".into(), Cell::Null),
        ("node".into(), text(node)),
        ("node_index".into(), Cell::Int(index)),
        ("value_type".into(), text(value_type)),
        ("value".into(), text(value)),
        ("value_bytes".into(), Cell::Int(value.len() as i64)),
        ("date".into(), text("__HIVE_DEFAULT_PARTITION__")),
    ])
}

fn sorted(mut rows: Vec<Row>) -> Vec<Row> {
    rows.sort();
    rows
}

#[test]
fn a_lone_surrogate_escape_quarantines_its_record_only() {
    let wf = "wf-surrogate";
    let body = br#"[{"id": "good", "status": "completed", "all_outputs": {"m": "\ud83d\ude00"}},
 {"id": "bad", "status": "completed", "outputs": "x\ud800y"}]"#;
    let (dir, out) = export_one(raw(wf, body), wf);
    assert_ok(&out);
    assert_eq!(
        table(dir.path(), "runs"),
        [run_row(
            wf,
            "good",
            Some("completed"),
            (None, None),
            (None, None),
            (None, None, None),
            1
        )]
    );
    assert_eq!(
        table(dir.path(), "node_outputs"),
        [node_row(wf, "good", "m", 0, "string", "😀")]
    );
    assert_eq!(
        rejected_lines(dir.path()),
        [rejected(
            wf,
            1,
            "record is not valid JSON: unexpected end of hex escape at line 1 column 57",
            false,
            json!(r#"{"id": "bad", "status": "completed", "outputs": "x\ud800y"}"#)
        )]
    );
}

#[test]
fn bytes_that_are_not_utf8_quarantine_their_record_only() {
    let wf = "wf-latin1";
    let body = b"[{\"id\": \"latin1\", \"outputs\": \"r\xe9sum\xe9\"},\n {\"id\": \"utf8\", \"outputs\": \"r\xc3\xa9sum\xc3\xa9\"}]";
    let (dir, out) = export_one(raw(wf, body), wf);
    assert_ok(&out);
    assert_eq!(
        table(dir.path(), "runs"),
        [run_row(
            wf,
            "utf8",
            None,
            (None, None),
            (None, None),
            (None, Some("résumé"), None),
            0
        )]
    );
    assert_eq!(
        rejected_lines(dir.path()),
        [rejected(
            wf,
            0,
            "record contains bytes that are not UTF-8",
            false,
            json!("{\"id\": \"latin1\", \"outputs\": \"r\u{FFFD}sum\u{FFFD}\"}")
        )]
    );
}

#[test]
fn duplicate_keys_quarantine_the_record_and_name_the_key_path() {
    let wf = "wf-dupkeys";
    let body = br#"[{"id": "a", "status": "completed", "status": "failed"},
 {"id": "b", "all_outputs": {"node_a": 1, "node_b": 2, "node_a": 3}},
 {"id": "c", "all_outputs": {"node_a": {"k": 1}, "node_b": {"k": 1}}}]"#;
    let (dir, out) = export_one(raw(wf, body), wf);
    assert_ok(&out);
    assert_eq!(
        table(dir.path(), "runs"),
        [run_row(
            wf,
            "c",
            None,
            (None, None),
            (None, None),
            (None, None, None),
            2
        )]
    );
    assert_eq!(
        table(dir.path(), "node_outputs"),
        sorted(vec![
            node_row(wf, "c", "node_a", 0, "object", r#"{"k":1}"#),
            node_row(wf, "c", "node_b", 1, "object", r#"{"k":1}"#),
        ])
    );
    assert_eq!(
        rejected_lines(dir.path()),
        [
            rejected(
                wf,
                0,
                "duplicate key `status`",
                false,
                json!(r#"{"id": "a", "status": "completed", "status": "failed"}"#)
            ),
            rejected(
                wf,
                1,
                "duplicate key `all_outputs.node_a`",
                false,
                json!(r#"{"id": "b", "all_outputs": {"node_a": 1, "node_b": 2, "node_a": 3}}"#)
            ),
        ]
    );
}

#[test]
fn unknown_statuses_are_kept_verbatim() {
    let wf = "wf-status";
    let recs = vec![
        json!({"id": "a", "status": "cancelled_by_admin"}),
        json!({"id": "b", "status": "COMPLETED "}),
        json!({"id": "c", "status": 3}),
        json!({"id": "d", "status": {"state": "x"}}),
        json!({"id": "e", "status": ""}),
    ];
    let (dir, out) = export_one(records(wf, recs), wf);
    assert_ok(&out);
    assert_eq!(
        table(dir.path(), "runs"),
        [
            bare_run(wf, "a", Some("cancelled_by_admin")),
            bare_run(wf, "b", Some("COMPLETED ")),
            bare_run(wf, "c", Some("3")),
            bare_run(wf, "d", Some(r#"{"state":"x"}"#)),
            bare_run(wf, "e", Some("")),
        ]
    );
    assert_eq!(rejected_lines(dir.path()), Vec::<Value>::new());
}

#[test]
fn elapsed_time_floats_and_numeric_strings_are_read_and_the_rest_kept_with_a_trace() {
    let wf = "wf-elapsed";
    let body = br#"[{"id": "float", "elapsed_time": 12.7},
 {"id": "text", "elapsed_time": "12"},
 {"id": "neg", "elapsed_time": -3.9},
 {"id": "abc", "elapsed_time": "abc"},
 {"id": "huge", "elapsed_time": 1e400},
 {"id": "bool", "elapsed_time": true}]"#;
    let (dir, out) = export_one(raw(wf, body), wf);
    assert_ok(&out);
    assert!(
        stdout(&out).contains("3 unreadable values"),
        "{}",
        stdout(&out)
    );
    let with = |id: &str, elapsed: Option<i64>| {
        run_row(
            wf,
            id,
            None,
            (None, None),
            (elapsed, None),
            (None, None, None),
            0,
        )
    };
    assert_eq!(
        table(dir.path(), "runs"),
        sorted(vec![
            with("float", Some(12)),
            with("text", Some(12)),
            with("neg", Some(-3)),
            with("abc", None),
            with("huge", None),
            with("bool", None),
        ])
    );
    let why = |v: &str| {
        format!(
            "kept with unreadable values: `elapsed_time` is not a number of seconds (stored as NULL): {v}"
        )
    };
    assert_eq!(
        rejected_lines(dir.path()),
        [
            rejected(
                wf,
                3,
                &why(r#""abc""#),
                true,
                json!({"id": "abc", "elapsed_time": "abc"})
            ),
            rejected(
                wf,
                4,
                &why("1e+400"),
                true,
                serde_json::from_str(r#"{"id": "huge", "elapsed_time": 1e400}"#).unwrap()
            ),
            rejected(
                wf,
                5,
                &why("true"),
                true,
                json!({"id": "bool", "elapsed_time": true})
            ),
        ]
    );
}

#[test]
fn missing_and_null_fields_are_nulls_and_records_without_an_id_are_quarantined() {
    let wf = "wf-missing";
    let recs = vec![
        json!({"id": "only-id"}),
        json!({"id": "all-null", "status": null, "start_time": null, "end_time": null,
               "elapsed_time": null, "error": null, "outputs": null, "all_outputs": null, "inputs": null}),
        json!({"status": "completed"}),
        json!({"id": null}),
        json!(null),
    ];
    let (dir, out) = export_one(records(wf, recs), wf);
    assert_ok(&out);
    assert_eq!(
        table(dir.path(), "runs"),
        [
            bare_run(wf, "all-null", None),
            bare_run(wf, "only-id", None)
        ]
    );
    assert_eq!(table(dir.path(), "node_outputs"), Vec::<Row>::new());
    assert_eq!(table(dir.path(), "run_inputs"), Vec::<Row>::new());
    assert_eq!(
        rejected_lines(dir.path()),
        [
            rejected(
                wf,
                2,
                "`id` is missing",
                false,
                json!({"status": "completed"})
            ),
            rejected(wf, 3, "`id` is null", false, json!({"id": null})),
            rejected(
                wf,
                4,
                "record is a JSON null, not an object",
                false,
                json!(null)
            ),
        ]
    );
}

#[test]
fn all_outputs_and_inputs_that_are_not_objects_keep_one_run_row_and_no_child_rows() {
    let wf = "wf-shapes";
    let recs = vec![
        json!({"id": "arr", "all_outputs": [1, "two"], "inputs": ["a", 1]}),
        json!({"id": "str", "all_outputs": "plain text", "inputs": "plain text"}),
        json!({"id": "num", "all_outputs": 5, "inputs": 5}),
        json!({"id": "nul", "all_outputs": null, "inputs": null}),
        json!({"id": "obj", "all_outputs": {"n": null}, "inputs": {"q": "v"}}),
    ];
    let (dir, out) = export_one(records(wf, recs), wf);
    assert_ok(&out);
    let with = |id: &str, inputs: Option<&str>, nodes: i64| {
        run_row(
            wf,
            id,
            None,
            (None, None),
            (None, None),
            (None, None, inputs),
            nodes,
        )
    };
    assert_eq!(
        table(dir.path(), "runs"),
        sorted(vec![
            with("arr", Some(r#"["a",1]"#), 0),
            with("str", Some(r#""plain text""#), 0),
            with("num", Some("5"), 0),
            with("nul", None, 0),
            with("obj", Some(r#"{"q":"v"}"#), 1),
        ])
    );
    let mut null_node = node_row(wf, "obj", "n", 0, "null", "");
    null_node.insert("value".into(), Cell::Null);
    null_node.insert("value_bytes".into(), Cell::Null);
    assert_eq!(table(dir.path(), "node_outputs"), [null_node]);
    let (_, inputs) = read_table(dir.path(), "run_inputs");
    assert_eq!(
        inputs,
        [Row::from([
            ("workflow_id".into(), text(wf)),
            ("run_id".into(), text("obj")),
            ("start_time".into(), Cell::Null),
            ("name".into(), text("q")),
            ("value_type".into(), text("string")),
            ("value".into(), text("v")),
            ("date".into(), text("__HIVE_DEFAULT_PARTITION__")),
        ])]
    );
    let why = |t: &str, v: &str| {
        format!(
            "kept with unreadable values: `all_outputs` is a JSON {t}, not an object (no node_outputs rows): {v}"
        )
    };
    assert_eq!(
        rejected_lines(dir.path()),
        [
            rejected(
                wf,
                0,
                &why("array", r#"[1,"two"]"#),
                true,
                json!({"id": "arr", "all_outputs": [1, "two"], "inputs": ["a", 1]})
            ),
            rejected(
                wf,
                1,
                &why("string", r#""plain text""#),
                true,
                json!({"id": "str", "all_outputs": "plain text", "inputs": "plain text"})
            ),
            rejected(
                wf,
                2,
                &why("number", "5"),
                true,
                json!({"id": "num", "all_outputs": 5, "inputs": 5})
            ),
        ]
    );
}

#[test]
fn huge_strings_are_kept_byte_exact() {
    let wf = "wf-huge";
    // 8 MiB of multi-byte text, control characters and escapes.
    let unit = "東京 \"quoted\" \\ back\n\t\u{0}é😀 ";
    let huge: String = unit.repeat(8 * 1024 * 1024 / unit.len() + 1);
    assert!(huge.len() >= 8 * 1024 * 1024);
    let recs = vec![json!({"id": "big", "outputs": huge, "all_outputs": {"model": huge}})];
    let (dir, out) = export_one(records(wf, recs), wf);
    assert_ok(&out);
    let runs = table(dir.path(), "runs");
    assert_eq!(runs.len(), 1);
    assert!(runs[0]["outputs"] == text(&huge), "outputs not byte-exact");
    let nodes = table(dir.path(), "node_outputs");
    assert_eq!(nodes.len(), 1);
    assert!(
        nodes[0]["value"] == text(&huge),
        "node value not byte-exact"
    );
    assert_eq!(rejected_lines(dir.path()), Vec::<Value>::new());
}

#[test]
fn timestamps_in_every_documented_form_are_read_and_others_kept_with_a_trace() {
    let wf = "wf-times";
    let recs = vec![
        json!({"id": "z", "start_time": "2025-03-12T03:39:30.476391Z", "end_time": "2025-03-12T03:39:36.133074Z"}),
        json!({"id": "space", "start_time": "2025-03-12 00:59:55.465508+00:00", "end_time": "2025-03-12 01:00:00+00:00"}),
        json!({"id": "offset", "start_time": "2025-03-12T05:39:30+02:00", "end_time": "2025-03-11T22:39:31.5-05:00"}),
        json!({"id": "naive", "start_time": "2025-03-12T03:39:30", "end_time": "2025-03-12 03:39:30.1"}),
        json!({"id": "bad", "start_time": "2025-03-12", "end_time": 1741750770}),
    ];
    let (dir, out) = export_one(records(wf, recs), wf);
    assert_ok(&out);
    let with = |id: &str, start: Option<&str>, end: Option<&str>, duration: Option<i64>| {
        run_row(
            wf,
            id,
            None,
            (start, end),
            (None, duration),
            (None, None, None),
            0,
        )
    };
    assert_eq!(
        table(dir.path(), "runs"),
        sorted(vec![
            with(
                "z",
                Some("2025-03-12T03:39:30.476391Z"),
                Some("2025-03-12T03:39:36.133074Z"),
                Some(5656)
            ),
            with(
                "space",
                Some("2025-03-12T00:59:55.465508Z"),
                Some("2025-03-12T01:00:00Z"),
                Some(4534)
            ),
            with(
                "offset",
                Some("2025-03-12T03:39:30Z"),
                Some("2025-03-12T03:39:31.5Z"),
                Some(1500)
            ),
            with(
                "naive",
                Some("2025-03-12T03:39:30Z"),
                Some("2025-03-12T03:39:30.1Z"),
                Some(100)
            ),
            with("bad", None, None, None),
        ])
    );
    assert_eq!(
        rejected_lines(dir.path()),
        [rejected(
            wf,
            4,
            "kept with unreadable values: `start_time` is not a timestamp (stored as NULL): \"2025-03-12\"; \
             `end_time` is not a timestamp (stored as NULL): 1741750770",
            true,
            json!({"id": "bad", "start_time": "2025-03-12", "end_time": 1741750770})
        )]
    );
}

#[test]
fn a_body_that_is_not_a_json_array_fails_its_workflow_only() {
    let sim = Sim::start(SimConfig {
        workflows: 0,
        raw_fixtures: vec![
            RawFixture {
                id: "wf-truncated".into(),
                body: br#"[{"id": "a"}, {"id": "b", "status": "comp"#.to_vec(),
            },
            RawFixture {
                id: "wf-fine".into(),
                body: br#"[{"id": "ok"}]"#.to_vec(),
            },
        ],
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let out = export(
        &sim,
        dir.path(),
        &[
            "--workflow",
            "wf-truncated",
            "--workflow",
            "wf-fine",
            "--no-progress",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_stderr_contains(&out, "workflow `wf-truncated` failed");
    assert_eq!(table(dir.path(), "runs"), [bare_run("wf-fine", "ok", None)]);
    assert_eq!(rejected_lines(dir.path()), Vec::<Value>::new());
}
