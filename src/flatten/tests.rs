//! Flattening tests on the sample pages in `data/samples/`.

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Int32Type, Int64Type, TimestampMicrosecondType};

use super::*;
use std::collections::BTreeMap;

const DOCS_EXAMPLE: &str = include_str!("../../data/samples/docs-example.json");
const VARIED: &str = include_str!("../../data/samples/varied-shapes.json");
const NOW: i64 = 1_800_000_000_000_000;

fn ctx() -> PageContext<'static> {
    PageContext {
        workflow_id: "wf-1",
        offset: 0,
        extracted_at_us: NOW,
        policy: crate::privacy::Policy::none(),
    }
}

fn text(batch: &RecordBatch, column: &str) -> Vec<Option<String>> {
    batch
        .column_by_name(column)
        .unwrap()
        .as_string::<i32>()
        .iter()
        .map(|v| v.map(str::to_owned))
        .collect()
}

fn micros(batch: &RecordBatch, column: &str) -> Vec<Option<i64>> {
    batch
        .column_by_name(column)
        .unwrap()
        .as_primitive::<TimestampMicrosecondType>()
        .iter()
        .collect()
}

fn int64(batch: &RecordBatch, column: &str) -> Vec<Option<i64>> {
    batch
        .column_by_name(column)
        .unwrap()
        .as_primitive::<Int64Type>()
        .iter()
        .collect()
}

fn int32(batch: &RecordBatch, column: &str) -> Vec<Option<i32>> {
    batch
        .column_by_name(column)
        .unwrap()
        .as_primitive::<Int32Type>()
        .iter()
        .collect()
}

fn ids(page: &FlatPage) -> Vec<&str> {
    page.runs.iter().map(|r| r.id.as_str()).collect()
}

fn s(v: &str) -> Option<String> {
    Some(v.to_owned())
}

fn partition<'a>(page: &'a FlatPage, date: &str) -> &'a PartitionRows {
    page.partitions
        .iter()
        .find(|p| p.date.dir_name() == format!("date={date}"))
        .unwrap_or_else(|| panic!("no partition {date}"))
}

#[test]
fn docs_example_becomes_one_run_two_nodes_one_input() {
    let page = flatten_page(DOCS_EXAMPLE.as_bytes(), ctx()).unwrap();
    assert_eq!(page.record_count, 1);
    assert_eq!(ids(&page), ["a40d4d53-7e5e-432b-8f23-8afdc53eefa3"]);
    let p = partition(&page, "2025-03-12");
    let runs = &p.runs;
    assert_eq!(text(runs, "status"), [s("completed")]);
    assert_eq!(micros(runs, "start_time"), [Some(1_741_750_770_476_391)]);
    assert_eq!(micros(runs, "end_time"), [Some(1_741_750_776_133_074)]);
    assert_eq!(int64(runs, "elapsed_time"), [Some(5)]);
    assert_eq!(int64(runs, "duration_ms"), [Some(5656)]);
    assert_eq!(text(runs, "error"), [None]);
    assert!(
        text(runs, "outputs")[0]
            .as_deref()
            .unwrap()
            .starts_with("Here's a weather-related joke")
    );
    assert_eq!(int32(runs, "node_count"), [Some(2)]);
    assert_eq!(
        text(runs, "inputs"),
        [s(r#"{"prompt":"Tell me a joke about the weather"}"#)]
    );
    assert_eq!(micros(runs, "extracted_at"), [Some(NOW)]);
    assert_eq!(text(&p.node_outputs, "node"), [s("prompt"), s("model")]);
    assert_eq!(int32(&p.node_outputs, "node_index"), [Some(0), Some(1)]);
    assert_eq!(
        text(&p.node_outputs, "value_type"),
        [s("string"), s("string")]
    );
    assert_eq!(text(&p.run_inputs, "name"), [s("prompt")]);
    assert_eq!(
        text(&p.run_inputs, "value"),
        [s("Tell me a joke about the weather")]
    );
}

#[test]
fn values_keep_their_type_order_and_exact_text() {
    let page = flatten_page(VARIED.as_bytes(), ctx()).unwrap();
    // 13th, 00:00 UTC: +02:00 converted to UTC lands on the 13th at 20:30.
    let p = partition(&page, "2025-03-13");
    let runs = &p.runs;
    let row = text(runs, "run_id")
        .iter()
        .position(|id| id.as_deref() == Some("run-object-outputs"))
        .unwrap();
    assert_eq!(
        micros(runs, "start_time")[row],
        parse_timestamp("2025-03-13T20:30:00.000001Z")
    );
    assert_eq!(
        int64(runs, "elapsed_time")[row],
        Some(7),
        "7.9 truncates to 7"
    );
    assert_eq!(int64(runs, "duration_ms")[row], Some(7499));
    assert_eq!(
        text(runs, "outputs")[row],
        s(r#"{"model":"Done","score":0.5}"#)
    );
    assert_eq!(int32(runs, "node_count")[row], Some(6));

    let nodes = &p.node_outputs;
    let of_run: Vec<usize> = text(nodes, "run_id")
        .iter()
        .enumerate()
        .filter(|(_, id)| id.as_deref() == Some("run-object-outputs"))
        .map(|(i, _)| i)
        .collect();
    let pick = |col: &str| -> Vec<Option<String>> {
        let all = text(nodes, col);
        of_run.iter().map(|i| all[*i].clone()).collect()
    };
    assert_eq!(
        pick("node"),
        [
            s("prompt"),
            s("classify"),
            s("list"),
            s("flag"),
            s("count"),
            s("nothing")
        ]
    );
    assert_eq!(
        pick("value_type"),
        [
            s("string"),
            s("object"),
            s("array"),
            s("boolean"),
            s("number"),
            s("null")
        ]
    );
    assert_eq!(
        pick("value"),
        [
            s("Classify \u{0} this: 東京 résumé"),
            s(r#"{"label":"billing","score":0.93,"tags":["a","b"],"z":null,"a":1}"#),
            s(r#"[1,"two",{"three":3}]"#),
            s("true"),
            s("42"),
            None,
        ]
    );
    let inputs = &p.run_inputs;
    let values: Vec<_> = text(inputs, "value");
    assert!(values.contains(&s(r#"{"z":1,"a":2}"#)), "{values:?}");
    assert!(
        values.contains(&s("3")),
        "top_k number kept as text: {values:?}"
    );
}

#[test]
fn unfinished_runs_and_missing_fields_are_nulls_not_errors() {
    let page = flatten_page(VARIED.as_bytes(), ctx()).unwrap();
    let p = partition(&page, "2025-03-13");
    let runs = &p.runs;
    let row = text(runs, "run_id")
        .iter()
        .position(|id| id.as_deref() == Some("run-running"))
        .unwrap();
    assert_eq!(
        micros(runs, "start_time")[row],
        parse_timestamp("2025-03-13T23:59:59Z")
    );
    assert_eq!(micros(runs, "end_time")[row], None);
    assert_eq!(int64(runs, "duration_ms")[row], None);
    assert_eq!(text(runs, "outputs")[row], None);

    let none = partition(&page, HIVE_DEFAULT);
    assert_eq!(text(&none.runs, "run_id"), [s("run-no-start")]);
    assert_eq!(int32(&none.runs, "node_count"), [Some(0)]);
    assert_eq!(text(&none.runs, "inputs"), [None]);
    assert_eq!(none.node_outputs.num_rows(), 0);

    let failed = partition(&page, "2025-03-12");
    assert_eq!(
        text(&failed.runs, "run_id"),
        [s("12345")],
        "numeric id kept as decimal text"
    );
    assert_eq!(
        text(&failed.runs, "error"),
        [s("Node 'model' failed: upstream timeout after 30s")]
    );
    assert_eq!(
        int32(&failed.runs, "node_count"),
        [Some(0)],
        "null all_outputs"
    );
}

const HIVE_DEFAULT: &str = "__HIVE_DEFAULT_PARTITION__";

/// (index in the page, reason) of each rejected record.
fn reasons(page: &FlatPage) -> Vec<(usize, &str)> {
    page.rejected
        .iter()
        .map(|r| (r.index, r.reason.as_str()))
        .collect()
}

#[test]
fn records_that_cannot_be_runs_are_rejected_with_reasons() {
    let page = flatten_page(VARIED.as_bytes(), ctx()).unwrap();
    assert_eq!(page.record_count, 9);
    assert_eq!(page.run_rows(), 4);
    let reasons = reasons(&page);
    assert_eq!(
        reasons,
        [
            (4, "`id` is missing"),
            (5, "`id` is empty"),
            (6, "`id` is null"),
            (7, "record is a JSON string, not an object"),
            (8, "`id` is a JSON array"),
        ]
    );
    assert_eq!(page.rejected[3].record, serde_json::json!("not a run"));
    assert!(page.rejected.iter().all(|r| r.workflow_id == "wf-1"));
}

#[test]
fn run_ids_that_urls_would_drop_are_rejected() {
    let body = br#"[{"id": "."}, {"id": ".."}, {"id": "..."}, {"id": "a.b"}]"#;
    let page = flatten_page(body, ctx()).unwrap();
    let reasons = reasons(&page);
    assert_eq!(
        reasons,
        [
            (0, "`id` is `.`, which cannot be a URL path segment"),
            (1, "`id` is `..`, which cannot be a URL path segment"),
        ]
    );
    let kept: Vec<&str> = page.runs.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(kept, ["...", "a.b"]);
}

#[test]
fn page_errors_say_what_was_wrong() {
    let err = flatten_page(b"[{\"id\": 1},", ctx()).unwrap_err();
    assert!(matches!(err, PageError::Malformed { line: 1, .. }), "{err}");
    let err = flatten_page(br#"{"detail": "nope"}"#, ctx()).unwrap_err();
    assert_eq!(err.to_string(), "expected a JSON array of runs, got object");
    assert_eq!(flatten_page(b"[]", ctx()).unwrap().record_count, 0);
}

#[test]
fn repeated_ids_in_a_page_keep_the_first_and_drop_runs_removes_children() {
    let body = br#"[
        {"id": "a", "status": "completed", "start_time": "2025-01-01T00:00:00Z", "all_outputs": {"n": 1}},
        {"id": "a", "status": "running", "start_time": "2025-01-01T00:00:00Z"},
        {"id": "b", "start_time": "2025-01-01T00:00:00Z", "all_outputs": {"n": 2}, "inputs": {"x": 1}}
    ]"#;
    let mut page = flatten_page(body, ctx()).unwrap();
    assert_eq!(page.duplicates, 1);
    assert_eq!(ids(&page), ["a", "b"]);
    assert_eq!(
        text(&page.partitions[0].runs, "status"),
        [s("completed"), None]
    );
    page.drop_runs(|id| id == "b");
    assert_eq!(ids(&page), ["a"]);
    let p = &page.partitions[0];
    assert_eq!(text(&p.runs, "run_id"), [s("a")]);
    assert_eq!(text(&p.node_outputs, "run_id"), [s("a")]);
    assert_eq!(p.run_inputs.num_rows(), 0);
}

#[test]
fn drop_runs_removes_a_leading_run_a_middle_run_or_none() {
    let body = br#"[
        {"id": "a", "start_time": "2025-01-01T00:00:03Z", "all_outputs": {"n": 1, "m": 2}},
        {"id": "b", "start_time": "2025-01-01T00:00:02Z", "all_outputs": {"n": 3}},
        {"id": "c", "start_time": "2025-01-01T00:00:01Z", "all_outputs": {"n": 4}}
    ]"#;
    let children = |page: &FlatPage| text(&page.partitions[0].node_outputs, "run_id");
    let mut page = flatten_page(body, ctx()).unwrap();
    page.drop_runs(|_| false);
    assert_eq!(ids(&page), ["a", "b", "c"]);
    assert_eq!(children(&page), [s("a"), s("a"), s("b"), s("c")]);
    page.drop_runs(|id| id == "a");
    assert_eq!(ids(&page), ["b", "c"]);
    assert_eq!(text(&page.partitions[0].runs, "run_id"), [s("b"), s("c")]);
    assert_eq!(children(&page), [s("b"), s("c")]);
    assert_eq!(
        int32(&page.partitions[0].node_outputs, "node_index"),
        [Some(0), Some(0)]
    );
    let mut page = flatten_page(body, ctx()).unwrap();
    page.drop_runs(|id| id == "b");
    assert_eq!(text(&page.partitions[0].runs, "run_id"), [s("a"), s("c")]);
    assert_eq!(children(&page), [s("a"), s("a"), s("c")]);
}

#[test]
fn starts_in_implausible_years_open_no_partition_of_their_own() {
    let body = br#"[{"id": "a", "start_time": "0001-01-01T00:00:00Z"},
                    {"id": "b", "start_time": "9999-12-31T00:00:00Z"},
                    {"id": "c", "start_time": "2025-01-01T00:00:00Z"}]"#;
    let page = flatten_page(body, ctx()).unwrap();
    let dates: Vec<String> = page.partitions.iter().map(|p| p.date.dir_name()).collect();
    assert_eq!(
        dates,
        [format!("date={HIVE_DEFAULT}"), "date=2025-01-01".to_owned()]
    );
    assert_eq!(page.unreadable_fields, BTreeMap::from([("start_time", 2)]));
    assert_eq!(page.rejected.len(), 2);
    assert!(page.rejected.iter().all(|r| r.kept));
}

#[test]
fn odd_numbers_and_timestamps_become_nulls_and_are_counted() {
    let body = br#"[{"id": "x", "start_time": "soon", "end_time": 5, "elapsed_time": "12.7"},
                    {"id": "y", "start_time": "2025-01-01T00:00:00Z", "elapsed_time": "n/a"}]"#;
    let page = flatten_page(body, ctx()).unwrap();
    assert_eq!(page.unreadable_values, 3);
    assert_eq!(
        page.unreadable_fields,
        BTreeMap::from([("start_time", 1), ("end_time", 1), ("elapsed_time", 1)])
    );
    let p = partition(&page, HIVE_DEFAULT);
    assert_eq!(int64(&p.runs, "elapsed_time"), [Some(12)]);
    assert_eq!(p.runs.column_by_name("start_time").unwrap().null_count(), 1);
    let traces: Vec<(usize, bool, &str)> = page
        .rejected
        .iter()
        .map(|r| (r.index, r.kept, r.reason.as_str()))
        .collect();
    assert_eq!(
        traces,
        [
            (
                0,
                true,
                "kept with unreadable values: `start_time` is not a timestamp (stored as NULL): \"soon\"; \
                 `end_time` is not a timestamp (stored as NULL): 5"
            ),
            (
                1,
                true,
                "kept with unreadable values: `elapsed_time` is not a number of seconds (stored as NULL): \"n/a\""
            ),
        ]
    );
    assert_eq!(page.rejected[1].record["elapsed_time"], "n/a");
}

#[test]
fn all_outputs_that_is_not_an_object_is_kept_with_a_trace() {
    let body = br#"[{"id": "a", "all_outputs": [1, 2], "inputs": "just text"},
                    {"id": "b", "all_outputs": "x", "inputs": [1]},
                    {"id": "c", "all_outputs": null, "inputs": 5}]"#;
    let page = flatten_page(body, ctx()).unwrap();
    assert_eq!(ids(&page), ["a", "b", "c"]);
    let p = partition(&page, HIVE_DEFAULT);
    assert_eq!(int32(&p.runs, "node_count"), [Some(0), Some(0), Some(0)]);
    assert_eq!(
        text(&p.runs, "inputs"),
        [s(r#""just text""#), s("[1]"), s("5")]
    );
    assert_eq!(p.node_outputs.num_rows(), 0);
    assert_eq!(p.run_inputs.num_rows(), 0);
    let reasons: Vec<&str> = page.rejected.iter().map(|r| r.reason.as_str()).collect();
    assert_eq!(
        reasons,
        [
            "kept with unreadable values: `all_outputs` is a JSON array, not an object (no node_outputs rows): [1,2]",
            "kept with unreadable values: `all_outputs` is a JSON string, not an object (no node_outputs rows): \"x\"",
        ]
    );
    assert_eq!(page.unreadable_fields, BTreeMap::from([("all_outputs", 2)]));
}

#[test]
fn long_original_values_are_shortened_in_the_reason_only() {
    let long = "é".repeat(500);
    let body = format!(r#"[{{"id": "a", "start_time": "{long}"}}]"#);
    let page = flatten_page(body.as_bytes(), ctx()).unwrap();
    let reason = &page.rejected[0].reason;
    assert!(
        reason.ends_with(&format!("\"{}…", "é".repeat(119))),
        "{reason}"
    );
    assert_eq!(page.rejected[0].record["start_time"], long.as_str());
}

#[test]
fn broken_records_are_quarantined_as_text_and_the_rest_of_the_page_kept() {
    let body = b"[{\"id\": \"a\", \"outputs\": \"\\ud800 x\"},\n {\"id\": \"b\", \"error\": \"\xff\xfe\"},\n {\"id\": \"c\", \"status\": \"ok\", \"status\": \"failed\"},\n {\"id\": \"d\"}]";
    let page = flatten_page(body, ctx()).unwrap();
    assert_eq!(page.record_count, 4);
    assert_eq!(ids(&page), ["d"]);
    let got: Vec<(usize, bool, &str, &Value)> = page
        .rejected
        .iter()
        .map(|r| (r.index, r.kept, r.reason.as_str(), &r.record))
        .collect();
    assert_eq!(
        got,
        [
            (
                0,
                false,
                "record is not valid JSON: unexpected end of hex escape at line 1 column 31",
                &Value::from(r#"{"id": "a", "outputs": "\ud800 x"}"#)
            ),
            (
                1,
                false,
                "record contains bytes that are not UTF-8",
                &Value::from("{\"id\": \"b\", \"error\": \"\u{FFFD}\u{FFFD}\"}")
            ),
            (
                2,
                false,
                "duplicate key `status`",
                &Value::from(r#"{"id": "c", "status": "ok", "status": "failed"}"#)
            ),
        ]
    );
}

#[test]
fn numbers_are_kept_exactly_as_sent() {
    let body = br#"[{"id": 7, "start_time": "2025-01-01T00:00:00Z",
        "all_outputs": {"price": 1.10, "big": 12345678901234567890123, "tiny": 1e400, "obj": {"v": 2.50}}}]"#;
    let page = flatten_page(body, ctx()).unwrap();
    let p = &page.partitions[0];
    assert_eq!(
        text(&p.node_outputs, "value"),
        [
            s("1.10"),
            s("12345678901234567890123"),
            s("1e+400"), // exact value; serde_json spells the exponent with a sign
            s(r#"{"v":2.50}"#)
        ]
    );
    assert_eq!(ids(&page), ["7"]);
}

#[test]
fn absurd_years_are_unreadable_not_an_overflow() {
    let body = br#"[{"id": "x", "start_time": "-262000-01-01T00:00:00", "end_time": "+262000-01-01T00:00:00"}]"#;
    let page = flatten_page(body, ctx()).unwrap();
    assert_eq!(page.unreadable_values, 2);
    let p = partition(&page, HIVE_DEFAULT);
    assert_eq!(int64(&p.runs, "duration_ms"), [None]);
}

#[test]
fn runs_without_end_time_or_with_a_running_status_are_unfinished() {
    let body = br#"[
        {"id": "done", "status": "completed", "start_time": "2025-01-01T00:00:00Z", "end_time": "2025-01-01T00:00:01Z"},
        {"id": "failed", "status": "failed", "start_time": "2025-01-01T00:00:00Z", "end_time": "2025-01-01T00:00:01Z"},
        {"id": "running", "status": "running", "start_time": "2025-01-01T00:00:00Z", "end_time": "2025-01-01T00:00:01Z"},
        {"id": "no-end", "status": "completed", "start_time": "2025-01-01T00:00:00Z"},
        {"id": "queued", "status": "queued"}
    ]"#;
    let page = flatten_page(body, ctx()).unwrap();
    let finished: Vec<(&str, bool)> = page
        .runs
        .iter()
        .map(|r| (r.id.as_str(), r.finished))
        .collect();
    assert_eq!(
        finished,
        [
            ("done", true),
            ("failed", true),
            ("running", false),
            ("no-end", false),
            ("queued", false)
        ]
    );
    assert_eq!(
        page.runs[4].date().dir_name(),
        "date=__HIVE_DEFAULT_PARTITION__"
    );
}

#[test]
fn simulated_llm_pages_take_the_one_pass_path() {
    use crate::simulate::{DEFAULT_ANCHOR_US, DataProfile, SimWorkflow};
    let wf = SimWorkflow::generate(7, 1, 300, DEFAULT_ANCHOR_US, DataProfile::Llm);
    let runs: Vec<serde_json::Value> = (0..300).map(|seq| wf.run(seq, 300, 0)).collect();
    let body = serde_json::to_vec(&runs).unwrap();
    let records = super::raw::page_records(&body).expect("a clean page splits in one pass");
    let page = super::flatten_items(
        records.into_iter().map(super::Item::Record),
        ctx(),
        super::OnUnusable::GiveUp,
    );
    let page = page.expect("every value is stored as it is");
    assert_eq!(page.runs.len(), 300);
}
