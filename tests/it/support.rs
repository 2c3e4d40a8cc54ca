//! Shared helpers: a simulator on 127.0.0.1:0, running the binary, reading tables back.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int32Type, Int64Type, SchemaRef, TimestampMicrosecondType};
use orchestra_export::simulate::{Fixture, SimConfig, SimServer};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;

pub const KEY: &str = "test-key-Zq8Xw3";

/// A simulator running on its own runtime for the duration of a test.
pub struct Sim {
    pub server: SimServer,
    _runtime: tokio::runtime::Runtime,
}

impl Sim {
    pub fn start(config: SimConfig) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let config = SimConfig {
            api_key: KEY.to_owned(),
            ..config
        };
        let server = runtime
            .block_on(SimServer::start(
                config,
                SocketAddr::from(([127, 0, 0, 1], 0)),
            ))
            .unwrap();
        Self {
            server,
            _runtime: runtime,
        }
    }

    pub fn url(&self) -> String {
        self.server.base_url()
    }

    /// Ids of the generated workflows.
    pub fn ids(&self) -> Vec<String> {
        self.server
            .workflows()
            .iter()
            .map(|w| w.id.clone())
            .collect()
    }

    /// Paths (with query) of the requests answered, in order.
    pub fn paths(&self) -> Vec<String> {
        self.server
            .requests()
            .into_iter()
            .map(|r| r.path_and_query)
            .collect()
    }
}

pub fn fixture(id: &str, records: Vec<Value>) -> Fixture {
    Fixture {
        id: id.to_owned(),
        records,
    }
}

/// Runs the binary with the test key in the environment.
pub fn run(args: &[&str]) -> Output {
    run_with_env(args, &[("ORCHESTRA_API_KEY", KEY)])
}

pub fn run_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_orchestra-export"));
    cmd.args(args)
        .env_remove("ORCHESTRA_API_KEY")
        .env_remove("ORCHESTRA_BASE_URL")
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// `export` against `sim` into `out`, with extra args.
pub fn export(sim: &Sim, out: &Path, extra: &[&str]) -> Output {
    export_with_env(sim, out, extra, &[])
}

/// [`export`] with more environment variables than the API key.
pub fn export_with_env(sim: &Sim, out: &Path, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let url = sim.url();
    let out = out.to_str().unwrap();
    let mut args = vec!["export", "--base-url", url.as_str(), "--out", out];
    args.extend_from_slice(extra);
    let mut env = env.to_vec();
    env.push(("ORCHESTRA_API_KEY", KEY));
    run_with_env(&args, &env)
}

/// Starts `export` against `sim` into `out` as a child process, stdout and stderr piped.
pub fn spawn_export(sim: &Sim, out: &Path, extra: &[&str]) -> std::process::Child {
    let url = sim.url();
    let mut args = vec![
        "export",
        "--base-url",
        url.as_str(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Command::new(env!("CARGO_BIN_EXE_orchestra-export"))
        .args(&args)
        .env_remove("ORCHESTRA_BASE_URL")
        .env_remove("RUST_LOG")
        .env("ORCHESTRA_API_KEY", KEY)
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts that stderr contains `needle`, showing stderr otherwise.
pub fn assert_stderr_contains(o: &Output, needle: &str) {
    assert!(stderr(o).contains(needle), "{}", stderr(o));
}

/// Asserts exit 2 and that stderr is exactly the line `want`, then an optional `hint:` line;
/// clap's own indented detail and its "For more information" trailer are allowed.
pub fn assert_usage_error(out: &Output, want: &str, what: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "{what}:\n{err}");
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with(' '))
        .filter(|l| *l != "For more information, try '--help'.")
        .collect();
    assert_eq!(lines.first().copied(), Some(want), "{what}:\n{err}");
    assert!(
        lines.len() == 1 || (lines.len() == 2 && lines[1].starts_with("hint: ")),
        "{what}: one error line and at most a hint:\n{err}"
    );
}

/// Asserts success, showing output otherwise.
pub fn assert_ok(o: &Output) {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        stdout(o),
        stderr(o)
    );
}

/// A cell of a table read back, typed as the Parquet column was.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cell {
    Null,
    Text(String),
    Int(i64),
    Micros(i64),
}

impl Cell {
    pub fn text(&self) -> Option<&str> {
        match self {
            Cell::Text(s) => Some(s),
            _ => None,
        }
    }
}

pub type Row = BTreeMap<String, Cell>;

/// Every `.parquet` file below `dir`, sorted.
pub fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                files.push(p);
            }
        }
    }
    files.sort();
    files
}

/// Reads all rows of `table`, adding the Hive partition folder as the `date` cell.
pub fn read_table(out: &Path, table: &str) -> (Option<SchemaRef>, Vec<Row>) {
    let mut rows = Vec::new();
    let mut schema = None;
    for path in parquet_files(&out.join(table)) {
        let partition = path
            .parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("date="))
            .map(str::to_owned);
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap())
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            schema = Some(batch.schema());
            for mut row in batch_rows(&batch) {
                if let Some(p) = &partition {
                    row.insert("date".into(), Cell::Text(p.clone()));
                }
                rows.push(row);
            }
        }
    }
    (schema, rows)
}

/// A simulator with `workflows` × `runs` generated runs, exported with their steps into a new
/// folder.
pub fn exported_with_steps(workflows: usize, runs: u64) -> (Sim, tempfile::TempDir) {
    let sim = Sim::start(SimConfig {
        workflows,
        runs_per_workflow: runs,
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let out = export(&sim, dir.path(), &["--all-workflows", "--with-steps"]);
    assert_ok(&out);
    // The summary says that most requests were for steps: one a run.
    let text = stdout(&out);
    let runs = text
        .lines()
        .nth(1)
        .and_then(|l| l.trim().split(' ').next())
        .unwrap_or_default()
        .to_owned();
    assert!(
        text.contains(&format!(" requests ({runs} of them for steps), ")),
        "{text}"
    );
    (sim, dir)
}

/// The text, integer and time columns of one Parquet file (a report table; Polars' view strings
/// read as plain ones).
pub fn read_file(path: &Path) -> Vec<Row> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap();
    reader
        .flat_map(|b| {
            let b = b.unwrap();
            let (fields, columns): (Vec<_>, Vec<_>) = b
                .schema()
                .fields()
                .iter()
                .zip(b.columns())
                .filter_map(|(f, c)| {
                    let c = match c.data_type() {
                        DataType::Utf8View => arrow::compute::cast(c, &DataType::Utf8).unwrap(),
                        DataType::Utf8 | DataType::Int64 | DataType::Int32 => c.clone(),
                        DataType::Timestamp(..) => c.clone(),
                        _ => return None,
                    };
                    let field = arrow::datatypes::Field::new(f.name(), c.data_type().clone(), true);
                    Some((field, c))
                })
                .unzip();
            let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(fields));
            batch_rows(&RecordBatch::try_new(schema, columns).unwrap())
        })
        .collect()
}

fn batch_rows(batch: &RecordBatch) -> Vec<Row> {
    let mut rows = vec![Row::new(); batch.num_rows()];
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        for (i, row) in rows.iter_mut().enumerate() {
            let cell = if column.is_null(i) {
                Cell::Null
            } else {
                match field.data_type() {
                    DataType::Utf8 => Cell::Text(column.as_string::<i32>().value(i).to_owned()),
                    DataType::Int64 => Cell::Int(column.as_primitive::<Int64Type>().value(i)),
                    DataType::Int32 => {
                        Cell::Int(column.as_primitive::<Int32Type>().value(i).into())
                    }
                    DataType::Timestamp(_, _) => {
                        Cell::Micros(column.as_primitive::<TimestampMicrosecondType>().value(i))
                    }
                    other => panic!("unexpected type {other}"),
                }
            };
            row.insert(field.name().clone(), cell);
        }
    }
    rows
}

/// Microseconds of an RFC 3339 timestamp, parsed independently of the exporter.
pub fn micros(text: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .timestamp_micros()
}

/// The value encoding the contract promises: strings verbatim, null NULL, others compact JSON.
pub fn encoded(v: Option<&Value>) -> Cell {
    match v {
        None | Some(Value::Null) => Cell::Null,
        Some(Value::String(s)) => Cell::Text(s.clone()),
        Some(other) => Cell::Text(serde_json::to_string(other).unwrap()),
    }
}

pub fn text(s: &str) -> Cell {
    Cell::Text(s.to_owned())
}

/// Rows of `rows` whose `column` equals `value`.
pub fn select<'a>(rows: &'a [Row], column: &str, value: &str) -> Vec<&'a Row> {
    rows.iter().filter(|r| r[column] == text(value)).collect()
}

/// Offsets requested for a workflow, in request order.
pub fn offsets(paths: &[String], workflow_segment: &str) -> Vec<u64> {
    paths
        .iter()
        .filter(|p| p.contains(&format!("/workflows/{workflow_segment}/runs?")))
        .map(|p| {
            p.split("offset=")
                .nth(1)
                .unwrap()
                .split('&')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect()
}

/// Checks every column of every table against the records the simulator served.
pub fn assert_dataset_matches(
    out: &std::path::Path,
    workflow_id: &str,
    records: &[Value],
    started_us: i64,
) {
    let (_, runs) = read_table(out, "runs");
    let (_, nodes) = read_table(out, "node_outputs");
    let (_, inputs) = read_table(out, "run_inputs");
    let runs = select(&runs, "workflow_id", workflow_id);
    assert_eq!(runs.len(), records.len(), "{workflow_id}: one row per run");
    let ids: BTreeSet<&str> = runs.iter().map(|r| r["run_id"].text().unwrap()).collect();
    assert_eq!(ids.len(), records.len(), "{workflow_id}: run ids unique");
    let now_us = chrono::Utc::now().timestamp_micros();
    // Index by run id once: histories in these tests have up to ~10k runs.
    let by_run = |rows: Vec<Row>| {
        let mut index: BTreeMap<String, Vec<Row>> = BTreeMap::new();
        for row in rows
            .into_iter()
            .filter(|r| r["workflow_id"] == text(workflow_id))
        {
            index
                .entry(row["run_id"].text().unwrap().to_owned())
                .or_default()
                .push(row);
        }
        index
    };
    let (nodes, inputs) = (by_run(nodes), by_run(inputs));
    let run_rows: BTreeMap<&str, &Row> = runs
        .iter()
        .map(|r| (r["run_id"].text().unwrap(), *r))
        .collect();
    let none = Vec::new();
    for record in records {
        let id = record["id"].as_str().unwrap();
        let row = *run_rows
            .get(id)
            .unwrap_or_else(|| panic!("run {id} missing"));
        let start = record["start_time"].as_str().map(micros);
        let end = record["end_time"].as_str().map(micros);
        let ts = |v: Option<i64>| v.map_or(Cell::Null, Cell::Micros);
        assert_eq!(row["status"], encoded(record.get("status")), "{id}");
        assert_eq!(row["start_time"], ts(start), "{id}");
        assert_eq!(row["end_time"], ts(end), "{id}");
        assert_eq!(
            row["elapsed_time"],
            record["elapsed_time"]
                .as_i64()
                .map_or(Cell::Null, Cell::Int),
            "{id}"
        );
        let duration = start.zip(end).map(|(s, e)| (e - s) / 1000);
        assert_eq!(
            row["duration_ms"],
            duration.map_or(Cell::Null, Cell::Int),
            "{id}"
        );
        assert_eq!(row["error"], encoded(record.get("error")), "{id}");
        assert_eq!(row["outputs"], encoded(record.get("outputs")), "{id}");
        let all_outputs = record["all_outputs"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            row["node_count"],
            Cell::Int(all_outputs.len() as i64),
            "{id}"
        );
        assert_eq!(
            row["inputs"],
            Cell::Text(record["inputs"].to_string()),
            "{id}"
        );
        let Cell::Micros(extracted) = row["extracted_at"] else {
            panic!("extracted_at")
        };
        assert!(
            extracted >= started_us && extracted <= now_us,
            "{id}: extracted_at {extracted}"
        );
        let date = chrono::DateTime::from_timestamp_micros(start.unwrap())
            .unwrap()
            .format("%Y-%m-%d")
            .to_string();
        assert_eq!(row["date"], Cell::Text(date.clone()), "{id}: partition");

        let mut run_nodes: Vec<_> = nodes.get(id).unwrap_or(&none).iter().collect();
        run_nodes.sort_by_key(|n| n["node_index"].clone());
        assert_eq!(run_nodes.len(), all_outputs.len(), "{id}: node rows");
        for (i, ((name, value), node)) in all_outputs.iter().zip(&run_nodes).enumerate() {
            assert_eq!(node["node"], text(name));
            assert_eq!(node["node_index"], Cell::Int(i as i64));
            assert_eq!(node["value"], encoded(Some(value)));
            let stored = match &node["value"] {
                Cell::Text(t) => Cell::Int(t.len() as i64),
                _ => Cell::Null,
            };
            assert_eq!(node["value_bytes"], stored, "{id}: value_bytes");
            assert_eq!(node["value_type"], text(json_type(value)));
            assert_eq!(node["start_time"], ts(start));
            assert_eq!(node["date"], Cell::Text(date.clone()));
        }
        let wanted_inputs = record["inputs"].as_object().cloned().unwrap_or_default();
        let run_inputs: Vec<_> = inputs.get(id).unwrap_or(&none).iter().collect();
        assert_eq!(run_inputs.len(), wanted_inputs.len(), "{id}: input rows");
        for (name, value) in &wanted_inputs {
            let row = run_inputs.iter().find(|r| r["name"] == text(name)).unwrap();
            assert_eq!(row["value"], encoded(Some(value)));
            assert_eq!(row["value_type"], text(json_type(value)));
        }
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The interpreter with the readers and servers of `tests/interop/requirements.txt` (duckdb,
/// polars, pyarrow, pyspark, moto): `ORCHESTRA_EXPORT_PYTHON`, else the repo's `.venv` that `scripts/test`
/// creates.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("ORCHESTRA_EXPORT_PYTHON") {
        return p.into();
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with duckdb/polars/pyarrow/pyspark/moto: run `scripts/test` (it creates .venv) or set ORCHESTRA_EXPORT_PYTHON"
    );
    venv
}

/// Every file below `dir`, recursively.
pub fn all_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// Each run of `run_ids` is stored with an `end_time`: it was fetched again once finished.
pub fn assert_finished(out: &Path, run_ids: &[String]) {
    let (_, runs) = read_table(out, "runs");
    for run_id in run_ids {
        let row = select(&runs, "run_id", run_id)[0];
        assert!(
            matches!(row["end_time"], Cell::Micros(_)),
            "{run_id} still unfinished"
        );
    }
}

/// No (workflow_id, run_id[, child key]) appears twice in any run table of the dataset `out`.
pub fn assert_unique_keys(out: &Path) {
    for (table, extra) in [
        ("runs", None),
        ("node_outputs", Some("node")),
        ("run_inputs", Some("name")),
    ] {
        let rows = read_table(out, table).1;
        let keys: BTreeSet<_> = rows
            .iter()
            .map(|r| {
                (
                    r["workflow_id"].clone(),
                    r["run_id"].clone(),
                    extra.map(|c| r[c].clone()),
                )
            })
            .collect();
        assert_eq!(keys.len(), rows.len(), "{table} has duplicate keys");
    }
}

/// The exports whose manifests these are were running at the same instant: the last one
/// started before the first one finished.
pub fn assert_exports_overlapped(manifests: &[Value]) {
    let at = |m: &Value, key: &str| micros(m[key].as_str().unwrap());
    let last_start = manifests.iter().map(|m| at(m, "started_at")).max().unwrap();
    let first_end = manifests
        .iter()
        .map(|m| at(m, "finished_at"))
        .min()
        .unwrap();
    assert!(
        last_start < first_end,
        "the shard exports did not overlap: {manifests:?}"
    );
}

/// A simulator of `workflows` × `runs` seeded runs, answering after `latency_ms`, plus two
/// fixture workflows: the sample pages of odd shapes (one run has no start time, so the
/// `__HIVE_DEFAULT_PARTITION__` folder is written too) and the docs' example (`data/samples/`).
pub fn sim_with_samples(workflows: usize, runs: u64, latency_ms: u64) -> Sim {
    let odd: Vec<Value> =
        serde_json::from_str(include_str!("../../data/samples/varied-shapes.json")).unwrap();
    let docs: Vec<Value> =
        serde_json::from_str(include_str!("../../data/samples/docs-example.json")).unwrap();
    Sim::start(SimConfig {
        workflows,
        runs_per_workflow: runs,
        latency: std::time::Duration::from_millis(latency_ms),
        fixtures: vec![fixture("odd-shapes", odd), fixture("docs-example", docs)],
        ..SimConfig::default()
    })
}

/// `export` of every generated workflow of `sim`, with quick retries.
pub fn export_all(sim: &Sim, out: &Path, extra: &[&str]) -> std::process::Output {
    let ids: Vec<String> = sim.ids();
    let mut args: Vec<&str> = vec!["--retry-delay", "0.001"];
    for id in &ids {
        args.extend(["--workflow", id.as_str()]);
    }
    args.extend_from_slice(extra);
    export(sim, out, &args)
}

/// The number printed just before `label` in the summary, e.g. `number(out, " retries")`.
pub fn number(text: &str, label: &str) -> u64 {
    let end = text
        .find(label)
        .unwrap_or_else(|| panic!("no `{label}` in:\n{text}"));
    let digits: String = text[..end]
        .chars()
        .rev()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.chars().rev().collect::<String>().parse().unwrap()
}

/// Prints one line for the fault table of the closing note and BENCHMARKS-style records
/// (`cargo test --test it hostile:: -- --nocapture | grep fault-report`).
pub fn fault_report(name: &str, sim: &Sim, out: &Path, expected_runs: usize) {
    let (_, runs) = read_table(out, "runs");
    let distinct: BTreeSet<(String, String)> = runs
        .iter()
        .map(|r| {
            let get = |c: &str| r[c].text().unwrap().to_owned();
            (get("workflow_id"), get("run_id"))
        })
        .collect();
    println!(
        "fault-report | {name} | injected {} | runs expected {expected_runs} | exported {} | duplicates {} | requests {}",
        sim.server.injected().iter().sum::<u64>(),
        runs.len(),
        runs.len() - distinct.len(),
        sim.server.requests().len()
    );
}

pub fn total_runs(sim: &Sim) -> usize {
    sim.server
        .workflows()
        .iter()
        .map(|w| sim.server.records(&w.id).len())
        .sum()
}

/// Run ids in the `runs` table per workflow, failing on any run stored twice.
pub fn stored_ids(out: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let (_, runs) = read_table(out, "runs");
    let mut by_workflow: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for row in &runs {
        let wf = row["workflow_id"].text().unwrap().to_owned();
        let id = row["run_id"].text().unwrap().to_owned();
        assert!(
            by_workflow.entry(wf).or_default().insert(id.clone()),
            "run {id} stored twice"
        );
    }
    by_workflow
}

/// The distinct values of text column `column` in one Parquet file.
pub fn column_values(file: &Path, column: &str) -> BTreeSet<String> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(file).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let mut values = BTreeSet::new();
    for batch in reader {
        let batch = batch.unwrap();
        let strings = batch.column_by_name(column).unwrap().as_string::<i32>();
        values.extend(strings.iter().flatten().map(str::to_owned));
    }
    values
}
