//! `verify` against the simulator: a clean dataset agrees; a missing partition file, a duplicated
//! one, and runs deleted, added and finished upstream are each found and named; `export --full`
//! marks runs deleted upstream (kept, with `deleted_upstream_at`) and brings agreement back.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;

use orchestra_export::simulate::{Fault, SimConfig};
use serde_json::Value;

use crate::support::*;

fn sim(workflows: usize, runs: u64) -> Sim {
    Sim::start(SimConfig {
        workflows,
        runs_per_workflow: runs,
        ..SimConfig::default()
    })
}

/// `verify` of every generated workflow of `sim` against the dataset in `out`.
fn verify(sim: &Sim, out: &Path, extra: &[&str]) -> Output {
    let url = sim.url();
    let mut args = vec![
        "verify",
        "--base-url",
        url.as_str(),
        "--out",
        out.to_str().unwrap(),
    ];
    let ids = sim.ids();
    for id in &ids {
        args.extend(["--workflow", id.as_str()]);
    }
    args.extend_from_slice(extra);
    run(&args)
}

/// `verify --json`, parsed.
fn verify_json(sim: &Sim, out: &Path) -> (Option<i32>, Value) {
    let out = verify(sim, out, &["--json"]);
    let doc = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout(&out), stderr(&out)));
    (out.status.code(), doc)
}

fn workflow<'a>(doc: &'a Value, id: &str) -> &'a Value {
    doc["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["workflow_id"] == id)
        .unwrap_or_else(|| panic!("no `{id}` in {doc}"))
}

fn ids_of(value: &Value) -> BTreeSet<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_fresh_export_agrees_with_the_api() {
    let sim = sim(3, 400);
    let dir = tempfile::tempdir().unwrap();
    assert_ok(&export_all(&sim, dir.path(), &[]));
    let before = all_files(dir.path());
    let out = verify(&sim, dir.path(), &[]);
    assert_ok(&out);
    let text = stdout(&out);
    assert!(
        text.starts_with(&format!(
            "verify `{}`: 3 workflows, 3 agree with the API, 0 differ, 0 could not be read",
            dir.path().display()
        )),
        "{text}"
    );
    assert!(text.contains("  total "), "{text}");
    assert!(
        stderr(&out).lines().all(|l| !l.starts_with("error:")),
        "{}",
        stderr(&out)
    );
    // Nothing was written into the dataset.
    assert_eq!(all_files(dir.path()), before);

    let (code, doc) = verify_json(&sim, dir.path());
    assert_eq!(code, Some(0));
    assert_eq!(doc["agrees"], true);
    assert_eq!(doc["total"]["upstream"], 1200);
    assert_eq!(doc["total"]["stored"], 1200);
    for key in ["missing", "gone_upstream", "changed", "duplicates"] {
        assert_eq!(doc["total"][key], 0, "{key}");
    }
}

#[test]
fn a_missing_or_duplicated_partition_file_is_found_and_named() {
    let sim = sim(2, 600);
    let dir = tempfile::tempdir().unwrap();
    assert_ok(&export_all(&sim, dir.path(), &[]));
    let files = parquet_files(&dir.path().join("runs"));
    let (lost, copied) = (&files[3], &files[7]);
    // The runs the two files hold.
    let rows_of = |path: &Path| column_values(path, "run_id");
    let lost_ids = rows_of(lost);
    let copied_ids = rows_of(copied);
    std::fs::remove_file(lost).unwrap();
    std::fs::copy(copied, copied.with_file_name("part-1.parquet")).unwrap();

    let out = verify(&sim, dir.path(), &[]);
    assert_eq!(out.status.code(), Some(9), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("differs from the API: "), "{err}");
    assert!(err.contains("missing from the dataset (`"), "{err}");
    assert!(err.contains("stored more than once (`"), "{err}");
    assert!(err.contains("hint: "), "{err}");

    let (code, doc) = verify_json(&sim, dir.path());
    assert_eq!(code, Some(9));
    let missing: BTreeSet<String> = sim
        .ids()
        .iter()
        .flat_map(|id| ids_of(&workflow(&doc, id)["examples"]["missing"]))
        .collect();
    let duplicated: BTreeSet<String> = sim
        .ids()
        .iter()
        .flat_map(|id| ids_of(&workflow(&doc, id)["examples"]["duplicates"]))
        .collect();
    assert_eq!(missing, lost_ids);
    assert_eq!(duplicated, copied_ids);
    assert_eq!(doc["total"]["missing"], lost_ids.len());
    assert_eq!(doc["total"]["gone_upstream"], 0);
}

#[test]
fn runs_deleted_added_and_finished_upstream_are_found_and_a_full_export_brings_agreement() {
    // Every third workflow's newest two runs are running or queued.
    let sim = sim(3, 500);
    let dir = tempfile::tempdir().unwrap();
    assert_ok(&export_all(&sim, dir.path(), &[]));
    let ids = sim.ids();
    // Upstream: runs deleted from the middle of workflow 1, runs added to workflow 2, and the
    // running runs of workflow 0 finish.
    let deleted: BTreeSet<String> = sim
        .server
        .delete_runs(1, &[10, 50, 51, 300, 499])
        .into_iter()
        .collect();
    assert_eq!(deleted.len(), 5);
    sim.server.add_runs(2, 4);
    sim.server.finish_running();

    let (code, doc) = verify_json(&sim, dir.path());
    assert_eq!(code, Some(9), "{doc}");
    assert_eq!(
        ids_of(&workflow(&doc, &ids[1])["examples"]["gone_upstream"]),
        deleted
    );
    assert_eq!(workflow(&doc, &ids[2])["missing"], 4);
    let finished: Vec<&Value> = workflow(&doc, &ids[0])["examples"]["changed"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(finished.len(), 2, "{doc}");
    for change in finished {
        assert_ne!(change["stored"]["status"], "completed", "{change}");
        assert!(change["upstream"]["end_time"].is_string(), "{change}");
    }

    // An incremental export fetches what is new but cannot know what was deleted.
    assert_ok(&export_all(&sim, dir.path(), &[]));
    let (code, doc) = verify_json(&sim, dir.path());
    assert_eq!(code, Some(9));
    assert_eq!(doc["total"]["gone_upstream"], 5);
    assert_eq!(doc["total"]["missing"], 0);
    assert_eq!(doc["total"]["changed"], 0);

    // A full export marks them: kept, with the time it found them gone; then verify agrees.
    let full = export_all(&sim, dir.path(), &["--full"]);
    assert_ok(&full);
    assert!(
        stdout(&full).contains("deleted upstream: 5 stored runs no longer exist upstream"),
        "{}",
        stdout(&full)
    );
    let (_, runs) = read_table(dir.path(), "runs");
    let marked: BTreeSet<String> = runs
        .iter()
        .filter(|r| r["deleted_upstream_at"] != Cell::Null)
        .map(|r| r["run_id"].text().unwrap().to_owned())
        .collect();
    assert_eq!(marked, deleted);
    assert_eq!(runs.len(), 1504, "rows are kept, not dropped");
    let (code, doc) = verify_json(&sim, dir.path());
    assert_eq!(code, Some(0), "{doc}");
    assert_eq!(doc["total"]["marked_deleted_upstream"], 5);
    // A second full export keeps the first mark.
    let marks = |rows: &[Row]| -> Vec<Cell> {
        rows.iter()
            .filter(|r| r["deleted_upstream_at"] != Cell::Null)
            .map(|r| r["deleted_upstream_at"].clone())
            .collect()
    };
    assert_ok(&export_all(&sim, dir.path(), &["--full"]));
    let (_, again) = read_table(dir.path(), "runs");
    let (mut first, mut second) = (marks(&runs), marks(&again));
    first.sort();
    second.sort();
    assert_eq!(first, second);

    // The report leaves them out of its counts, and their node outputs out of `node_stats`.
    let report = run(&["report", "--data", dir.path().to_str().unwrap()]);
    assert_ok(&report);
    assert!(
        stdout(&report).starts_with("report: 1499 runs in "),
        "{}",
        stdout(&report)
    );
    let (_, nodes) = read_table(dir.path(), "node_outputs");
    let live = nodes
        .iter()
        .filter(|n| !deleted.contains(n["run_id"].text().unwrap()))
        .count() as i64;
    assert!(live < nodes.len() as i64);
    let stats = read_file(&dir.path().join("_reports/node_stats.parquet"));
    let counted: i64 = stats
        .iter()
        .map(|r| match r["rows"] {
            Cell::Int(n) => n,
            _ => 0,
        })
        .sum();
    assert_eq!(counted, live);
}

#[test]
fn a_workflow_the_api_cannot_serve_fails_verify_alone() {
    let ids = sim(2, 1).ids();
    let sim = Sim::start(SimConfig {
        workflows: 2,
        runs_per_workflow: 300,
        faults: vec![Fault::status(&ids[1], 500, usize::MAX)],
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let first = export_all(&sim, dir.path(), &["--max-retries", "0"]);
    assert_eq!(first.status.code(), Some(1));
    let out = verify(
        &sim,
        dir.path(),
        &["--max-retries", "0", "--retry-delay", "0.001"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_stderr_contains(
        &out,
        &format!("error: workflow `{}` could not be verified: ", ids[1]),
    );
    assert!(
        stdout(&out).contains("1 agree with the API, 0 differ, 1 could not be read"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn verify_of_a_folder_that_holds_no_dataset_is_a_usage_error() {
    let sim = sim(1, 10);
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let out = verify(&sim, &missing, &[]);
    assert_usage_error(
        &out,
        &format!(
            "error: no dataset at `{}`: nothing to verify",
            missing.display()
        ),
        "a folder that does not exist",
    );
    assert!(!missing.exists(), "verify created the folder");
}

#[test]
fn a_workflow_deleted_upstream_is_found_by_verify_and_marked_by_a_full_export() {
    let sim = sim(3, 200);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let url = sim.url();
    let all = |cmd: &str, extra: &[&str]| {
        let mut args = vec![
            cmd,
            "--base-url",
            url.as_str(),
            "--out",
            out,
            "--all-workflows",
        ];
        args.extend_from_slice(extra);
        run(&args)
    };
    assert_ok(&all("export", &[]));
    let gone = sim.ids()[1].clone();
    sim.server.delete_workflow(1);

    let differs = all("verify", &["--json"]);
    assert_eq!(differs.status.code(), Some(9), "{}", stderr(&differs));
    let doc: Value = serde_json::from_slice(&differs.stdout).unwrap();
    let w = workflow(&doc, &gone);
    assert_eq!(
        (w["listed"].clone(), w["gone_upstream"].clone()),
        (Value::Bool(false), Value::from(200))
    );
    assert_stderr_contains(
        &differs,
        &format!(
            "error: workflow `{gone}` differs from the API: 200 runs stored but gone upstream"
        ),
    );

    let full = all("export", &["--full"]);
    assert_ok(&full);
    assert!(
        stdout(&full).contains(&format!(
            "1 workflows stored earlier no longer exist upstream (not listed, 404): `{gone}`"
        )),
        "{}",
        stdout(&full)
    );
    assert!(
        stdout(&full).contains("deleted upstream: 200 stored runs"),
        "{}",
        stdout(&full)
    );
    let (_, runs) = read_table(dir.path(), "runs");
    let marked: BTreeSet<&str> = runs
        .iter()
        .filter(|r| r["deleted_upstream_at"] != Cell::Null)
        .map(|r| r["workflow_id"].text().unwrap())
        .collect();
    assert_eq!(marked, BTreeSet::from([gone.as_str()]));
    assert_ok(&all("verify", &[]));
}

#[test]
fn partitions_written_before_deleted_upstream_at_are_read_and_upgraded_by_a_full_export() {
    let sim = sim(2, 300);
    let dir = tempfile::tempdir().unwrap();
    assert_ok(&export_all(&sim, dir.path(), &[]));
    // The first partition as a version without the column wrote it.
    let first = parquet_files(&dir.path().join("runs")).remove(0);
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(&first).unwrap(),
    )
    .unwrap();
    let batches: Vec<_> = reader.build().unwrap().map(Result::unwrap).collect();
    let keep: Vec<usize> = (0..batches[0].num_columns() - 1).collect();
    let old_schema = std::sync::Arc::new(batches[0].schema().project(&keep).unwrap());
    let mut writer = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(&first).unwrap(),
        old_schema,
        None,
    )
    .unwrap();
    for batch in &batches {
        writer.write(&batch.project(&keep).unwrap()).unwrap();
    }
    writer.close().unwrap();
    assert!(read_table(dir.path(), "runs").0.is_some());

    // Read as it is, the column NULL there.
    let report = run(&["report", "--data", dir.path().to_str().unwrap()]);
    assert_ok(&report);
    assert!(
        stdout(&report).starts_with("report: 600 runs in "),
        "{}",
        stdout(&report)
    );
    assert_ok(&verify(&sim, dir.path(), &[]));
    // A full export writes it in the current schema.
    assert_ok(&export_all(&sim, dir.path(), &["--full"]));
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(&first).unwrap(),
    )
    .unwrap();
    assert!(
        reader
            .schema()
            .field_with_name("deleted_upstream_at")
            .is_ok()
    );
}

#[test]
fn runs_are_not_marked_deleted_when_records_came_without_a_readable_id() {
    let good = |id: &str| serde_json::json!({"id": id, "status": "completed", "start_time": "2025-03-12T03:39:30Z", "end_time": "2025-03-12T03:39:36Z"});
    let sim = Sim::start(SimConfig {
        workflows: 0,
        fixtures: vec![fixture("fx", vec![good("a"), good("b"), good("c")])],
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    assert_ok(&export(&sim, dir.path(), &["--workflow", "fx"]));
    // Upstream, `b` now comes back without its id (it could be any stored run).
    sim.server.set_fixture_records(
        "fx",
        vec![
            good("a"),
            serde_json::json!({"status": "completed"}),
            good("c"),
        ],
    );
    let full = export(&sim, dir.path(), &["--workflow", "fx", "--full"]);
    assert_ok(&full);
    assert_stderr_contains(
        &full,
        "runs deleted upstream are not marked for this workflow",
    );
    let (_, runs) = read_table(dir.path(), "runs");
    assert!(
        runs.iter().all(|r| r["deleted_upstream_at"] == Cell::Null),
        "{runs:?}"
    );
}
