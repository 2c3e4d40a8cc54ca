//! Real readers: DuckDB, Polars and pyarrow (from PyPI, in the venv `scripts/test` creates) read
//! an export with the documented types, partitions and keys (`tests/interop/check_dataset.py`);
//! Spark reads it with partition discovery and as an external table (`spark_read.py`).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::support::*;

#[test]
fn duckdb_polars_and_pyarrow_read_the_dataset_and_agree_with_the_report() {
    let sim = sim_with_samples(5, 300, 0);
    let dir = tempfile::tempdir().unwrap();
    assert_ok(&export(
        &sim,
        dir.path(),
        &["--all-workflows", "--with-steps"],
    ));
    assert_ok(&run(&["report", "--data", dir.path().to_str().unwrap()]));
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/check_dataset.py");
    let out = Command::new(python())
        .arg(&script)
        .arg(dir.path())
        .output()
        .unwrap();
    let report = format!("{}{}", stdout(&out), stderr(&out));
    assert!(out.status.success(), "{report}");
    assert!(report.contains(" passed, 0 failed"), "{report}");
}

/// Spark (pyspark from PyPI on the machine's Java 17, `local[2]`) reads an unsharded and a
/// sharded export of the same history with partition discovery, and through the external-table
/// DDL `docs/engines.md` documents; the values it sees are checked here (`tests/interop/spark_read.py`).
#[test]
fn spark_reads_the_dataset_with_partition_discovery_and_as_an_external_table() {
    let sim = sim_with_samples(4, 250, 0);
    let single = tempfile::tempdir().unwrap();
    assert_ok(&export(
        &sim,
        single.path(),
        &["--all-workflows", "--with-steps"],
    ));
    let sharded = tempfile::tempdir().unwrap();
    for k in 0..3 {
        let shard = format!("{k}/3");
        assert_ok(&export(
            &sim,
            sharded.path(),
            &["--all-workflows", "--with-steps", "--shard", &shard],
        ));
    }

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/spark_read.py");
    let started = std::time::Instant::now();
    let out = Command::new(python())
        .arg(&script)
        .arg(single.path())
        .arg(sharded.path())
        .env("SPARK_LOCAL_IP", "127.0.0.1")
        .env("PYSPARK_PYTHON", python())
        .output()
        .unwrap();
    let wall = started.elapsed();
    let log = format!("{}{}", stdout(&out), stderr(&out));
    assert!(out.status.success(), "{log}");
    let result: Value = stdout(&out)
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .map(|l| serde_json::from_str(l).unwrap())
        .unwrap_or_else(|| panic!("no RESULT line:\n{log}"));
    println!(
        "spark {}: JVM and session {} s, all reads {} s, test wall {:.1} s",
        result["spark_version"].as_str().unwrap_or("?"),
        result["startup_s"],
        result["total_s"],
        wall.as_secs_f64()
    );

    fn text_types(names: &[&'static str]) -> Vec<(&'static str, &'static str)> {
        names.iter().map(|n| (*n, "string")).collect()
    }
    let expected_types: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "runs",
            [
                text_types(&[
                    "workflow_id",
                    "run_id",
                    "status",
                    "error",
                    "outputs",
                    "inputs",
                ]),
                vec![
                    ("start_time", "timestamp"),
                    ("end_time", "timestamp"),
                    ("extracted_at", "timestamp"),
                    ("deleted_upstream_at", "timestamp"),
                    ("elapsed_time", "bigint"),
                    ("duration_ms", "bigint"),
                    ("node_count", "int"),
                    ("date", "date"),
                ],
            ]
            .concat(),
        ),
        (
            "node_outputs",
            [
                text_types(&["workflow_id", "run_id", "node", "value_type", "value"]),
                vec![
                    ("start_time", "timestamp"),
                    ("node_index", "int"),
                    ("value_bytes", "bigint"),
                    ("date", "date"),
                ],
            ]
            .concat(),
        ),
        (
            "run_inputs",
            [
                text_types(&["workflow_id", "run_id", "name", "value_type", "value"]),
                vec![("start_time", "timestamp"), ("date", "date")],
            ]
            .concat(),
        ),
        (
            "steps",
            [
                text_types(&[
                    "workflow_id",
                    "run_id",
                    "step_id",
                    "node_id",
                    "status",
                    "error",
                    "outputs",
                    "inputs",
                ]),
                vec![
                    ("start_time", "timestamp"),
                    ("end_time", "timestamp"),
                    ("elapsed_time", "bigint"),
                    ("duration_ms", "bigint"),
                    ("tokens", "bigint"),
                    ("date", "date"),
                ],
            ]
            .concat(),
        ),
        (
            "workflows",
            [
                text_types(&["workflow_id", "name", "description", "status", "version"]),
                vec![
                    ("created_at", "timestamp"),
                    ("updated_at", "timestamp"),
                    ("extracted_at", "timestamp"),
                ],
            ]
            .concat(),
        ),
    ];

    let datasets = result["datasets"].as_array().unwrap();
    assert_eq!(datasets.len(), 2);
    for (dataset, dir, files) in [
        (&datasets[0], single.path(), vec!["part-0.parquet"]),
        (
            &datasets[1],
            sharded.path(),
            vec![
                "shard-00-of-03.parquet",
                "shard-01-of-03.parquet",
                "shard-02-of-03.parquet",
            ],
        ),
    ] {
        let what = dir.display().to_string();
        for (table, types) in &expected_types {
            let seen = &dataset["tables"][table];
            let (_, rows) = read_table(dir, table);
            assert!(!rows.is_empty(), "{what} {table}");
            assert_eq!(seen["rows"], rows.len(), "{what} {table} rows");
            let want: serde_json::Map<String, Value> = types
                .iter()
                .map(|(n, t)| ((*n).to_owned(), Value::from(*t)))
                .collect();
            assert_eq!(seen["types"], Value::Object(want), "{what} {table} types");
            assert_eq!(
                seen["files"],
                serde_json::json!(files),
                "{what} {table} files"
            );
            if *table == "workflows" {
                continue;
            }
            // The partition column as Spark discovered it, against the folders.
            let folders: BTreeSet<String> = rows
                .iter()
                .map(|r| r["date"].text().unwrap().to_owned())
                .collect();
            let undated = "__HIVE_DEFAULT_PARTITION__";
            let dated: Vec<&String> = folders.iter().filter(|f| *f != undated).collect();
            assert!(dated.len() >= 30, "{what} {table}: {} dates", dated.len());
            assert_eq!(seen["dates"], dated.len(), "{what} {table} dates");
            assert_eq!(seen["first_date"], **dated.first().unwrap());
            assert_eq!(seen["last_date"], **dated.last().unwrap());
            let undated_rows = rows
                .iter()
                .filter(|r| r["date"] == Cell::Text(undated.into()))
                .count();
            assert_eq!(seen["undated_rows"], undated_rows, "{what} {table} undated");
        }
        let (_, runs) = read_table(dir, "runs");
        let (_, nodes) = read_table(dir, "node_outputs");
        let undated_runs = runs
            .iter()
            .filter(|r| r["date"] == text("__HIVE_DEFAULT_PARTITION__"))
            .count();
        assert!(undated_runs > 0, "the sample has a run without start time");

        // UTC instants to the microsecond, whatever the JVM's or Python's time zone.
        let docs_run = &dataset["docs_run"];
        assert_eq!(docs_run.as_array().unwrap().len(), 1, "{what}: {docs_run}");
        let run = &docs_run[0];
        assert_eq!(run["start_us"], micros("2025-03-12T03:39:30.476391Z"));
        assert_eq!(run["end_us"], micros("2025-03-12T03:39:36.133074Z"));
        assert_eq!(run["start_text"], "2025-03-12T03:39:30.476391");
        assert_eq!(run["date"], "2025-03-12");
        assert_eq!(run["elapsed_time"], 5);
        assert_eq!(run["duration_ms"], 5656);
        assert_eq!(run["node_count"], 2);
        assert_eq!(
            dataset["docs_run_nodes"],
            serde_json::json!(["prompt", "model"])
        );

        // The join: every run with its node outputs, each run once.
        let join = &dataset["join"];
        assert_eq!(join["runs"], runs.len(), "{what}");
        assert_eq!(join["node_rows"], nodes.len(), "{what}");
        assert_eq!(join["runs_matching_node_count"], runs.len(), "{what}");
        assert_eq!(join["undated_runs"], undated_runs, "{what}");
        assert_eq!(dataset["distinct_run_keys"], runs.len(), "{what}");

        // `docs/engines.md`'s `CREATE TABLE … LOCATION` + `MSCK REPAIR TABLE`.
        let table = &dataset["external_table"];
        assert_eq!(
            table["rows_before_repair"], 0,
            "{what}: partitions come with the repair"
        );
        assert_eq!(table["rows"], runs.len(), "{what}");
        assert_eq!(table["undated_rows"], undated_runs, "{what}");
        let folders: BTreeSet<&str> = runs.iter().map(|r| r["date"].text().unwrap()).collect();
        assert_eq!(table["partitions"], folders.len(), "{what}");
        assert_eq!(
            table["workflows_rows"],
            read_table(dir, "workflows").1.len(),
            "{what}"
        );
    }
}
