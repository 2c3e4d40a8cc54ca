//! `report`: the numbers users read, computed with Polars from a real export.

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int64Type};
use orchestra_export::simulate::{REGRESSING_WORKFLOW, SimConfig};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Value, json};

use crate::support::*;

fn run_record(id: &str, day: u32, secs: u32, status: &str, error: Option<&str>) -> Value {
    json!({"id": id, "status": status,
           "start_time": format!("2025-03-{day:02}T10:00:00Z"),
           "end_time": format!("2025-03-{day:02}T10:00:{secs:02}Z"),
           "elapsed_time": secs, "error": error, "outputs": "ok",
           "all_outputs": {"prompt": "p", "model": "x".repeat(secs as usize * 10)},
           "inputs": {"prompt": "p"}})
}

fn read(path: &std::path::Path) -> RecordBatch {
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
    arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()
}

fn f64s(batch: &RecordBatch, column: &str) -> Vec<Option<f64>> {
    batch
        .column_by_name(column)
        .unwrap()
        .as_primitive::<Float64Type>()
        .iter()
        .collect()
}

fn i64s(batch: &RecordBatch, column: &str) -> Vec<Option<i64>> {
    batch
        .column_by_name(column)
        .unwrap()
        .as_primitive::<Int64Type>()
        .iter()
        .collect()
}

fn strs(batch: &RecordBatch, column: &str) -> Vec<Option<String>> {
    // Polars may write large or view strings; compare as plain UTF-8.
    let col = batch.column_by_name(column).unwrap();
    let utf8 = arrow::compute::cast(col, &arrow::datatypes::DataType::Utf8).unwrap();
    utf8.as_string::<i32>()
        .iter()
        .map(|v| v.map(str::to_owned))
        .collect()
}

#[test]
fn the_report_computes_counts_rates_quantiles_and_groups() {
    let a = vec![
        run_record(
            "a4",
            3,
            4,
            "failed",
            Some("Node 'model' failed after 30s (request id 8f3a9c2e)"),
        ),
        run_record("a3", 2, 3, "completed", None),
        run_record("a2", 1, 2, "completed", None),
        run_record("a1", 1, 1, "completed", None),
    ];
    let b = vec![run_record(
        "b1",
        2,
        9,
        "failed",
        Some("Node 'search' failed after 45s (request id 0badf00d1)"),
    )];
    let sim = Sim::start(SimConfig {
        workflows: 0,
        fixtures: vec![fixture("wf-a", a), fixture("wf-b", b)],
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    assert_ok(&export(&sim, dir.path(), &["--all-workflows"]));
    let out = run(&[
        "report",
        "--data",
        dir.path().to_str().unwrap(),
        "--top",
        "3",
    ]);
    assert_ok(&out);
    assert!(stdout(&out).contains("report: 5 runs"), "{}", stdout(&out));
    let reports = dir.path().join("_reports");

    let summary = read(&reports.join("workflow_summary.parquet"));
    assert_eq!(
        strs(&summary, "workflow_id"),
        [Some("wf-a".into()), Some("wf-b".into())]
    );
    assert_eq!(
        strs(&summary, "name"),
        [Some("wf-a".into()), Some("wf-b".into())],
        "names from the workflows table"
    );
    assert_eq!(i64s(&summary, "runs"), [Some(4), Some(1)]);
    assert_eq!(i64s(&summary, "failed"), [Some(1), Some(1)]);
    assert_eq!(f64s(&summary, "error_rate"), [Some(0.25), Some(1.0)]);
    assert_eq!(f64s(&summary, "p50_s"), [Some(2.5), Some(9.0)]);
    // Linear interpolation over 1, 2, 3, 4 s: position 0.95 × 3 = 2.85 → 3.85 s.
    let p95 = f64s(&summary, "p95_s");
    assert!((p95[0].unwrap() - 3.85).abs() < 1e-9, "{p95:?}");
    assert_eq!(f64s(&summary, "max_s"), [Some(4.0), Some(9.0)]);

    let daily = read(&reports.join("daily_trends.parquet"));
    assert_eq!(
        i64s(&daily, "runs"),
        [Some(2), Some(1), Some(1), Some(1)],
        "a: 1st×2, 2nd; b: 2nd; a: 3rd"
    );

    let errors = read(&reports.join("error_groups.parquet"));
    assert_eq!(
        errors.num_rows(),
        1,
        "the two messages differ only in values"
    );
    assert_eq!(i64s(&errors, "count"), [Some(2)]);
    assert_eq!(i64s(&errors, "workflows"), [Some(2)]);
    assert_eq!(
        strs(&errors, "fingerprint"),
        [Some("Node '…' failed after <n>s (request id <hex>)".into())]
    );

    let slowest = read(&reports.join("slowest_runs.parquet"));
    assert_eq!(
        strs(&slowest, "run_id"),
        [Some("b1".into()), Some("a4".into()), Some("a3".into())]
    );

    let nodes = read(&reports.join("node_stats.parquet"));
    assert_eq!(
        strs(&nodes, "node"),
        [
            Some("prompt".into()),
            Some("model".into()),
            Some("prompt".into()),
            Some("model".into())
        ]
    );
    assert_eq!(strs(&nodes, "value_types")[0], Some("string".into()));

    let md = std::fs::read_to_string(reports.join("summary.md")).unwrap();
    assert!(md.starts_with("# Orchestra workflow report"), "{md}");
    assert!(
        md.contains(
            "| wf-a | 4 | 1 | 0 | 25.0% | 2.50 s | 3.85 s | 3.97 s | 4.00 s | 2025-03-03 10:00 |"
        ),
        "{md}"
    );
    // Three days of history cannot show a regression: the report says so.
    assert!(
        md.contains("### Regressions: too little data to judge"),
        "{md}"
    );
    assert!(md.contains("(the data covers 3 days)"), "{md}");
    let html = std::fs::read_to_string(reports.join("report.html")).unwrap();
    // The runs chart and one sparkline per workflow and measure.
    assert_eq!(html.matches("<svg").count(), 1 + 2 * 3);
    assert!(!html.contains("<script") && !html.contains("src=\"http"));
    for name in [
        "overview",
        "workflow_summary",
        "daily_trends",
        "error_groups",
        "node_stats",
        "slowest_runs",
        "regressions",
    ] {
        assert!(reports.join(format!("{name}.csv")).exists(), "{name}.csv");
    }

    // Scope: one day, one workflow.
    let scoped = dir.path().join("scoped");
    let out = run(&[
        "report",
        "--data",
        dir.path().to_str().unwrap(),
        "--out",
        scoped.to_str().unwrap(),
        "--since",
        "2025-03-02",
        "--until",
        "2025-03-02",
        "--workflow",
        "wf-a",
    ]);
    assert_ok(&out);
    let summary = read(&scoped.join("workflow_summary.parquet"));
    assert_eq!(i64s(&summary, "runs"), [Some(1)]);
    // 2025-03-02 lies inside the data (03-01 to 03-03): a whole day, whatever the scope.
    let daily = read(&scoped.join("daily_trends.parquet"));
    let complete: Vec<Option<bool>> = daily
        .column_by_name("complete")
        .unwrap()
        .as_boolean()
        .iter()
        .collect();
    assert_eq!(complete, [Some(true)]);
}

#[test]
fn a_report_on_a_folder_without_an_export_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["report", "--data", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_stderr_contains(&out, "error: no `runs` table in");
    let out = run(&[
        "report",
        "--data",
        ".",
        "--since",
        "2025-03-05",
        "--until",
        "2025-03-01",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert_stderr_contains(&out, "is after `--until`");
}

#[test]
fn steps_are_exported_consistently_and_reported_per_node() {
    let (sim, dir) = exported_with_steps(2, 60);
    let (_, steps) = read_table(dir.path(), "steps");
    let (_, runs) = read_table(dir.path(), "runs");
    // One step per node output, plus the failed step of each failed run.
    let failed = runs
        .iter()
        .filter(|r| r["status"] == text("failed"))
        .count();
    let nodes: i64 = runs
        .iter()
        .map(|r| match r["node_count"] {
            Cell::Int(n) => n,
            _ => 0,
        })
        .sum();
    assert_eq!(steps.len() as i64, nodes + failed as i64);
    let failed_run = runs
        .iter()
        .find(|r| r["status"] == text("failed"))
        .expect("the sim fails ~7% of runs");
    let id = failed_run["run_id"].text().unwrap();
    let of_run: Vec<_> = steps.iter().filter(|s| s["run_id"] == text(id)).collect();
    let failed_step = of_run
        .iter()
        .find(|s| s["status"] == text("failed"))
        .unwrap();
    assert_eq!(failed_step["error"], failed_run["error"]);
    assert_eq!(
        failed_step["date"], failed_run["date"],
        "steps live in their run's partition"
    );
    assert_eq!(
        sim.paths().iter().filter(|p| p.ends_with("/steps")).count(),
        runs.len(),
        "one steps request per run"
    );

    assert_ok(&run(&["report", "--data", dir.path().to_str().unwrap()]));
    let reports = dir.path().join("_reports");
    let slowest = read(&reports.join("slowest_nodes.parquet"));
    assert!(slowest.num_rows() >= 6, "{} node rows", slowest.num_rows());
    let failing = read(&reports.join("failing_nodes.parquet"));
    let failures: i64 = i64s(&failing, "failures").into_iter().flatten().sum();
    assert_eq!(failures, failed as i64);
    assert!(
        std::fs::read_to_string(reports.join("report.html"))
            .unwrap()
            .contains("Failing nodes")
    );

    // A later export without --with-steps leaves the steps alone.
    let before = steps.len();
    assert_ok(&export(&sim, dir.path(), &["--all-workflows", "--full"]));
    assert_eq!(read_table(dir.path(), "steps").1.len(), before);
}

#[test]
fn steps_with_a_small_concurrency_budget_complete_without_stalling() {
    // Pages requested ahead must not hold the shared request slots the steps requests need.
    let sim = Sim::start(SimConfig {
        workflows: 4,
        runs_per_workflow: 400,
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn_export(
        &sim,
        dir.path(),
        &[
            "--all-workflows",
            "--with-steps",
            "--concurrency",
            "2",
            "--page-size",
            "50",
        ],
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!(
                "the export stalled: {} requests answered",
                sim.server.requests().len()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success());
    assert_eq!(
        sim.paths().iter().filter(|p| p.ends_with("/steps")).count(),
        1600
    );
    let steps = read_table(dir.path(), "steps").1;
    let runs: std::collections::BTreeSet<_> = steps.iter().map(|s| s["run_id"].clone()).collect();
    assert_eq!(runs.len(), 1600);
}

/// A history where one workflow regressed in its last week, with steps: what the page and
/// `summary.md` lead with, names for ids, durations as seconds, tokens, and cut tables that say so.
#[test]
fn the_report_leads_with_what_regressed_and_names_every_workflow() {
    let (sim, dir) = exported_with_steps(4, 700);
    let out = run(&[
        "report",
        "--data",
        dir.path().to_str().unwrap(),
        "--top",
        "30",
    ]);
    assert_ok(&out);
    assert!(
        stdout(&out).contains(" regressions (1 of 4 workflows regressed), "),
        "{}",
        stdout(&out)
    );
    let reports = dir.path().join("_reports");
    let regressed_name = sim.server.workflows()[REGRESSING_WORKFLOW as usize]
        .name
        .clone();

    let regressions = read(&reports.join("regressions.parquet"));
    let flagged: Vec<Option<String>> = strs(&regressions, "name")
        .into_iter()
        .zip(
            regressions
                .column_by_name("regressed")
                .unwrap()
                .as_boolean()
                .iter(),
        )
        .filter(|(_, r)| *r == Some(true))
        .map(|(n, _)| n)
        .collect();
    assert_eq!(flagged, [Some(regressed_name.clone())]);

    let md = std::fs::read_to_string(reports.join("summary.md")).unwrap();
    let at = |needle: &str| {
        md.find(needle)
            .unwrap_or_else(|| panic!("no {needle:?} in {md}"))
    };
    // The same order as the page: header, needs attention, trends, tables.
    assert!(at("- **newest run**: ") < at("## Needs attention"));
    assert!(at("## Needs attention") < at("### Regressed: 1 of 4 workflows compared"));
    assert!(at("### Regressed") < at("## Trends per workflow (4 of 4 shown)"));
    assert!(at("## Trends per workflow") < at("## Workflows"));
    let why = &md[at(&format!("- {regressed_name}: error rate "))..];
    let why = &why[..why.find('\n').unwrap()];
    assert!(
        why.contains("pts, threshold +5)") && why.contains("×, threshold 1.25×)"),
        "{why}"
    );
    assert!(
        md.contains(&format!("| {regressed_name} (`")),
        "a workflow shows by name, then id"
    );
    assert!(md.contains(&format!(
        "{regressed_name} (`{}…`) **regressed**",
        &sim.server.workflows()[REGRESSING_WORKFLOW as usize].id[..8]
    )));

    // Durations read as seconds, whatever the column is called (`duration_s` once read as 110.96×).
    let slowest = read(&reports.join("slowest_runs.parquet"));
    let top_run = strs(&slowest, "run_id")[0].clone().unwrap();
    let top_secs = f64s(&slowest, "duration_s")[0].unwrap();
    let line = md.lines().find(|l| l.contains(&top_run)).unwrap();
    let shown = format!(
        "{} min {:02} s |",
        top_secs.round() as i64 / 60,
        top_secs.round() as i64 % 60
    );
    assert!(
        line.ends_with(&shown) && !line.contains('×'),
        "{line} ({top_secs})"
    );
    assert!(
        md.contains("_20 of 30 shown; every row is in `slowest_runs.csv`._"),
        "{md}"
    );

    // Error groups carry their status: cancellations are not failures.
    let groups = read(&reports.join("error_groups.parquet"));
    let statuses = strs(&groups, "status");
    assert!(
        statuses.contains(&Some("cancelled".into())) && statuses.contains(&Some("failed".into()))
    );

    // Tokens from the steps, per node and per day, add up to the steps table.
    let (_, steps) = read_table(dir.path(), "steps");
    let tokens: i64 = steps
        .iter()
        .map(|s| match s["tokens"] {
            Cell::Int(t) => t,
            _ => 0,
        })
        .sum();
    assert!(tokens > 0);
    let per_node: i64 = i64s(&read(&reports.join("token_usage.parquet")), "tokens")
        .into_iter()
        .flatten()
        .sum();
    let per_day: i64 = i64s(&read(&reports.join("daily_tokens.parquet")), "tokens")
        .into_iter()
        .flatten()
        .sum();
    let overview = read(&reports.join("overview.parquet"));
    assert_eq!(
        (per_node, per_day, i64s(&overview, "tokens")[0]),
        (tokens, tokens, Some(tokens))
    );
    assert!(
        md.contains(&format!("{} tokens", thousands(tokens))),
        "{md}"
    );
    assert_eq!(f64s(&overview, "cost"), [None], "no price, no cost");
    assert!(!md.contains("token cost"));

    // With a price, what the tokens cost: in the tables, the overview and the header.
    let priced = dir.path().join("priced");
    assert_ok(&run(&[
        "report",
        "--data",
        dir.path().to_str().unwrap(),
        "--out",
        priced.to_str().unwrap(),
        "--price-per-million-tokens",
        "2.5",
    ]));
    let want = tokens as f64 * 2.5 / 1e6;
    let cost = f64s(&read(&priced.join("overview.parquet")), "cost")[0].unwrap();
    assert!((cost - want).abs() < 1e-9, "{cost} vs {want}");
    let per_node: f64 = f64s(&read(&priced.join("token_usage.parquet")), "cost")
        .into_iter()
        .flatten()
        .sum();
    assert!((per_node - want).abs() < 1e-6, "{per_node} vs {want}");
    let md = std::fs::read_to_string(priced.join("summary.md")).unwrap();
    assert!(md.contains(&format!("{want:.2} token cost")), "{md}");
    assert!(md.contains("| tokens | per step | p95 | cost |"), "{md}");

    // Output sizes come from `value_bytes`, equal to the stored text's length.
    let (_, nodes) = read_table(dir.path(), "node_outputs");
    for node in &nodes {
        if let Cell::Text(value) = &node["value"] {
            assert_eq!(node["value_bytes"], Cell::Int(value.len() as i64));
        }
    }
    let stats = read(&reports.join("node_stats.parquet"));
    assert!(
        f64s(&stats, "output_bytes_p50")
            .iter()
            .all(|v| v.is_some_and(|v| v > 0.0))
    );
}

/// `1234567` → `1,234,567`.
fn thousands(n: i64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The batches of one Parquet file.
fn batches(path: &std::path::Path) -> Vec<RecordBatch> {
    ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Rewrites every `node_outputs` file without `value_bytes`, as a release before it wrote them.
fn strip_value_bytes(dataset: &std::path::Path) {
    for path in parquet_files(&dataset.join("node_outputs")) {
        let batches = batches(&path);
        let keep: Vec<usize> = (0..batches[0].num_columns())
            .filter(|i| batches[0].schema().field(*i).name() != "value_bytes")
            .collect();
        let schema = std::sync::Arc::new(batches[0].schema().project(&keep).unwrap());
        let file = std::fs::File::create(&path).unwrap();
        let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema, None).unwrap();
        for batch in &batches {
            writer.write(&batch.project(&keep).unwrap()).unwrap();
        }
        writer.close().unwrap();
    }
}

/// Files written before `node_outputs.value_bytes` existed: the report measures `value` there,
/// and finds the sizes it finds from the column; a commit that rewrites such a file measures them.
#[test]
fn output_sizes_in_files_without_value_bytes_are_measured_from_the_text() {
    let (sim, dir) = exported_with_steps(2, 120);
    let data = dir.path().to_str().unwrap();
    assert_ok(&run(&["report", "--data", data]));
    let want = read(&dir.path().join("_reports/node_stats.parquet"));
    strip_value_bytes(dir.path());
    assert!(!read_table(dir.path(), "node_outputs").1[0].contains_key("value_bytes"));
    assert_ok(&run(&["report", "--data", data]));
    let got = read(&dir.path().join("_reports/node_stats.parquet"));
    for column in ["output_bytes_p50", "output_bytes_p95"] {
        assert_eq!(f64s(&got, column), f64s(&want, column), "{column}");
        assert!(f64s(&got, column).iter().all(Option::is_some), "{column}");
    }
    // New runs rewrite their partition: its older rows are brought to the current schema with
    // their sizes measured.
    let before: std::collections::BTreeSet<String> = read_table(dir.path(), "runs")
        .1
        .iter()
        .map(|r| r["run_id"].text().unwrap().to_owned())
        .collect();
    sim.server.add_runs(0, 3);
    assert_ok(&export(&sim, dir.path(), &["--all-workflows"]));
    let (_, nodes) = read_table(dir.path(), "node_outputs");
    let mut measured_old = 0;
    for node in nodes.iter().filter(|n| n.contains_key("value_bytes")) {
        let want = match &node["value"] {
            Cell::Text(value) => Cell::Int(value.len() as i64),
            _ => Cell::Null,
        };
        assert_eq!(node["value_bytes"], want);
        measured_old += usize::from(before.contains(node["run_id"].text().unwrap()));
    }
    assert!(
        measured_old > 0,
        "older rows of the rewritten partition are measured"
    );
}

/// A dataset rewritten by another tool (large strings, nanosecond timestamps) reports the same
/// numbers; a file without a column the table needs is refused by name, not read as no runs.
#[test]
fn files_rewritten_in_other_types_report_the_same_and_a_missing_key_is_an_error() {
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    let (_sim, dir) = exported_with_steps(2, 80);
    let data = dir.path().to_str().unwrap();
    assert_ok(&run(&["report", "--data", data]));
    let want = std::fs::read_to_string(dir.path().join("_reports/workflow_summary.csv")).unwrap();
    let rewrite = |drop: Option<&str>| {
        for path in parquet_files(&dir.path().join("runs")) {
            let batches = batches(&path);
            let retype = |t: &DataType| match t {
                DataType::Utf8 => DataType::LargeUtf8,
                DataType::Timestamp(_, tz) => DataType::Timestamp(TimeUnit::Nanosecond, tz.clone()),
                other => other.clone(),
            };
            let schema = batches[0].schema();
            let keep: Vec<usize> = (0..schema.fields().len())
                .filter(|i| Some(schema.field(*i).name().as_str()) != drop)
                .collect();
            let fields: Vec<Field> = keep
                .iter()
                .map(|i| {
                    let f = schema.field(*i);
                    Field::new(f.name(), retype(f.data_type()), true)
                })
                .collect();
            let schema = std::sync::Arc::new(Schema::new(fields));
            let file = std::fs::File::create(&path).unwrap();
            let mut writer =
                parquet::arrow::ArrowWriter::try_new(file, schema.clone(), None).unwrap();
            for batch in &batches {
                let columns = keep
                    .iter()
                    .zip(schema.fields())
                    .map(|(i, f)| arrow::compute::cast(batch.column(*i), f.data_type()).unwrap())
                    .collect();
                writer
                    .write(&RecordBatch::try_new(schema.clone(), columns).unwrap())
                    .unwrap();
            }
            writer.close().unwrap();
        }
    };
    rewrite(None);
    assert_ok(&run(&["report", "--data", data]));
    let got = std::fs::read_to_string(dir.path().join("_reports/workflow_summary.csv")).unwrap();
    assert_eq!(got, want);
    rewrite(Some("workflow_id"));
    let out = run(&["report", "--data", data]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_stderr_contains(&out, "column `workflow_id` is missing");
}

/// `--workflow` takes an id or a name; a filter that matches nothing says so instead of writing
/// an empty report without a word.
#[test]
fn report_filters_take_names_and_say_when_they_match_nothing() {
    let (sim, dir) = exported_with_steps(3, 60);
    let data = dir.path().to_str().unwrap();
    let wf = &sim.server.workflows()[1];

    let out = run(&["report", "--data", data, "--workflow", "nope"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_stderr_contains(&out, &format!("error: no workflow `nope` in `{data}`"));
    assert_stderr_contains(
        &out,
        "hint: `--workflow` takes an id or a name; the dataset has `",
    );

    let by_name = dir.path().join("by-name");
    let out = run(&[
        "report",
        "--data",
        data,
        "--workflow",
        &wf.name,
        "--out",
        by_name.to_str().unwrap(),
    ]);
    assert_ok(&out);
    let summary = read(&by_name.join("workflow_summary.parquet"));
    assert_eq!(strs(&summary, "workflow_id"), [Some(wf.id.clone())]);

    // An RFC 3339 instant stands for its UTC day (20:00 in New York is the next day in UTC).
    let instant = dir.path().join("instant");
    let out = run(&[
        "report",
        "--data",
        data,
        "--since",
        "2026-11-19T20:00:00-05:00",
        "--out",
        instant.to_str().unwrap(),
    ]);
    assert_ok(&out);
    let daily = read(&instant.join("daily_trends.parquet"));
    let days = arrow::compute::cast(
        daily.column_by_name("day").unwrap(),
        &arrow::datatypes::DataType::Utf8,
    )
    .unwrap();
    let days: std::collections::BTreeSet<_> = days
        .as_string::<i32>()
        .iter()
        .flatten()
        .map(str::to_owned)
        .collect();
    assert_eq!(days.into_iter().collect::<Vec<_>>(), ["2026-11-20"]);

    let out = run(&["report", "--data", data, "--since", "2030-01-01"]);
    assert_ok(&out);
    assert_stderr_contains(
        &out,
        "warning: no runs since 2030-01-01: the data covers 2026-",
    );
    assert!(stdout(&out).contains("report: 0 runs"), "{}", stdout(&out));
}
