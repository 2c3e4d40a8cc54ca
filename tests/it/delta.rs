//! Delta Lake tables (`--table-format delta`), read back by delta-rs (`deltalake`) and Polars
//! `scan_delta` from PyPI (`tests/interop/check_delta.py`): exact after a first export, after a
//! re-run that adds runs and finishes running ones (a new version; the previous one still
//! readable), after exports killed at any moment and a re-run, after `maintain`; `report` and
//! `verify` read the current snapshot. On S3 and with 4 shards at once: `store/delta.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use orchestra_export::simulate::SimConfig;
use serde_json::Value;

use crate::support::*;

const DELTA: [&str; 2] = ["--table-format", "delta"];

/// What `check_delta.py` reads at `root` (a folder or URL), with `runs` also at `version`.
pub fn read_delta(root: &str, version: Option<u64>, env: &[(&str, String)]) -> Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/check_delta.py");
    let mut cmd = Command::new(python());
    cmd.arg(&script).arg(root);
    if let Some(v) = version {
        cmd.arg(v.to_string());
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let log = format!("{}{}", stdout(&out), stderr(&out));
    assert!(out.status.success(), "{log}");
    stdout(&out)
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .map(|l| serde_json::from_str(l).unwrap())
        .unwrap_or_else(|| panic!("no RESULT line:\n{log}"))
}

/// Each run's status as the simulator serves it now, by `workflow_id/run_id`.
pub fn served_statuses(sim: &Sim) -> BTreeMap<String, String> {
    let mut all = BTreeMap::new();
    for id in sim.ids() {
        for run in sim.server.records(&id) {
            let run_id = run["id"].as_str().unwrap().to_owned();
            all.insert(
                format!("{id}/{run_id}"),
                run["status"].as_str().unwrap().to_owned(),
            );
        }
    }
    all
}

/// The statuses of a `runs` entry of `check_delta.py`.
pub fn statuses(runs: &Value) -> BTreeMap<String, String> {
    runs["status"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
        .collect()
}

/// Every run stored once, in its day's partition, with the status the API serves; both readers
/// agree on every table.
pub fn assert_exact(read: &Value, served: &BTreeMap<String, String>) {
    let runs = &read["runs"];
    assert_eq!(runs["duplicates"].as_array().unwrap().len(), 0, "{runs}");
    assert_eq!(runs["wrong_day"], 0);
    assert_eq!(runs["rows"].as_u64().unwrap() as usize, served.len());
    assert_eq!(&statuses(runs), served);
    for table in ["runs", "node_outputs", "run_inputs", "workflows"] {
        assert_eq!(
            read[table]["polars_agrees"], true,
            "{table}: {}",
            read[table]
        );
    }
}

#[test]
fn delta_tables_are_exact_after_exports_reruns_and_maintenance_and_travel_back() {
    let sim = Sim::start(SimConfig {
        workflows: 3,
        runs_per_workflow: 300,
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let args = ["--all-workflows", "--with-steps", DELTA[0], DELTA[1]];
    assert_ok(&export(&sim, dir.path(), &args));
    let first = read_delta(root, None, &[]);
    let served_first = served_statuses(&sim);
    assert_exact(&first, &served_first);
    assert!(
        served_first.values().any(|s| s == "running"),
        "nothing running to finish"
    );
    let runs = &first["runs"];
    assert_eq!(runs["partition_columns"], serde_json::json!(["date"]));
    assert_eq!(runs["types"]["start_time"], "timestamp[us, tz=UTC]");
    assert_eq!(runs["types"]["date"], "date32[day]");
    assert_eq!(runs["types"]["run_id"], "string");
    assert_eq!(first["workflows"]["rows"], 3);
    assert!(first["steps"]["rows"].as_u64().unwrap() > 0);
    // One commit per table: the first export creates each table at version 0.
    for table in ["runs", "node_outputs", "run_inputs", "steps", "workflows"] {
        assert_eq!(first[table]["version"], 0, "{table}");
    }

    // A re-run: new runs, and the running ones finished since (merged: remove + add).
    sim.server.add_runs(0, 40);
    let out = export(&sim, dir.path(), &args);
    assert_ok(&out);
    let second = read_delta(root, Some(0), &[]);
    let served = served_statuses(&sim);
    assert_exact(&second, &served);
    assert_eq!(second["runs"]["version"], 1);
    let finished = served_first
        .iter()
        .filter(|(key, s)| *s == "running" && served[*key] != "running")
        .count();
    assert!(finished > 0, "no run stored as running finished since");
    // Time travel: version 0 is the first export, its running runs still running.
    let old = &second["runs_at_version"];
    assert_eq!(old["version"], 0);
    assert_eq!(statuses(old), served_first);
    let manifest = newest_manifest(dir.path());
    assert_eq!(manifest["table_format"], "delta");
    assert_eq!(manifest["delta"]["versions"]["runs"], 1);
    assert_eq!(manifest["delta"]["txn_version"], 2);

    // `report` and `verify` read the current snapshot, not every file below the folder.
    let report = run(&["report", "--data", root]);
    assert_ok(&report);
    let summary = std::fs::read_to_string(dir.path().join("_reports/summary.md")).unwrap();
    assert!(
        summary.contains(&format!("{} runs", served.len())),
        "{summary}"
    );
    let url = sim.url();
    let verify = run(&[
        "verify",
        "--base-url",
        &url,
        "--out",
        root,
        "--all-workflows",
    ]);
    assert_ok(&verify);

    // Maintenance: compaction, checkpoint, vacuum of the files no version within the retention
    // needs; the current snapshot reads the same.
    // Within the retention nothing goes: version 0 still reads; a dry run only says what would.
    let week = run(&["maintain", "--out", root]);
    assert_ok(&week);
    assert!(
        stdout(&week).contains("runs: version 1,"),
        "{}",
        stdout(&week)
    );
    assert!(
        stdout(&week).contains("vacuum deleted 0 files (0 bytes) older than 7d"),
        "{}",
        stdout(&week)
    );
    let dry = run(&["maintain", "--out", root, "--retention", "0s", "--dry-run"]);
    assert_ok(&dry);
    assert!(
        stdout(&dry).contains("vacuum would delete "),
        "{}",
        stdout(&dry)
    );
    assert!(
        !stdout(&dry).contains("would delete 0 files"),
        "{}",
        stdout(&dry)
    );
    let kept = read_delta(root, Some(0), &[]);
    assert_eq!(statuses(&kept["runs_at_version"]), served_first);
    let files_before = second["node_outputs"]["files"].as_u64().unwrap();
    let kept = run(&["maintain", "--out", root, "--retention", "0s", "--compact"]);
    assert_ok(&kept);
    let text = stdout(&kept);
    assert!(text.contains("runs: version 2"), "{text}");
    assert!(!text.contains("vacuum deleted 0 files"), "{text}");
    assert!(text.contains("checkpoint written"), "{text}");
    assert!(text.contains("vacuum deleted"), "{text}");
    let third = read_delta(root, None, &[]);
    assert_exact(&third, &served);
    assert!(third["node_outputs"]["files"].as_u64().unwrap() < files_before);
    assert!(
        dir.path()
            .join("runs/_delta_log/00000000000000000002.checkpoint.parquet")
            .exists()
    );
    // A Hive export into the Delta dataset is refused, the dataset untouched.
    let refused = export(&sim, dir.path(), &["--all-workflows"]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert_stderr_contains(&refused, "holds delta tables, not hive ones");
    assert_stderr_contains(&refused, "hint: pass `--table-format delta`");
}

/// Kills `child` with SIGKILL and reaps it.
fn sigkill(child: &mut std::process::Child) {
    Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status()
        .unwrap();
    child.wait().unwrap();
}

fn newest_manifest(root: &Path) -> Value {
    let mut names: Vec<PathBuf> = std::fs::read_dir(root.join("_manifest"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    serde_json::from_str(&std::fs::read_to_string(names.last().unwrap()).unwrap()).unwrap()
}

#[test]
fn killed_delta_exports_leave_a_version_readers_open_and_a_rerun_completes_it() {
    let sim = Sim::start(SimConfig {
        workflows: 3,
        runs_per_workflow: 1200,
        latency: Duration::from_millis(3),
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let args = [
        "--all-workflows",
        "--page-size",
        "50",
        "--concurrency",
        "4",
        DELTA[0],
        DELTA[1],
    ];
    let scratch = tempfile::tempdir().unwrap();
    let started = Instant::now();
    assert_ok(&export(&sim, scratch.path(), &args));
    let whole = started.elapsed();
    let mut readable_after_kill = 0;
    for (round, fraction) in [0.3, 0.6, 0.8, 0.9, 0.97, 0.99].into_iter().enumerate() {
        if round % 2 == 1 {
            sim.server.add_runs(round % 3, 20);
        }
        let mut child = spawn_export(&sim, dir.path(), &args);
        std::thread::sleep(whole.mul_f64(fraction));
        sigkill(&mut child);
        // Whatever the moment: every table that exists opens at a whole version, no run twice.
        if dir.path().join("runs/_delta_log").is_dir() {
            readable_after_kill += 1;
            let read = read_delta(root, None, &[]);
            assert_eq!(read["runs"]["duplicates"].as_array().unwrap().len(), 0);
        }
    }
    if readable_after_kill == 0 {
        // A loaded machine ran every export slower than the timed one: kill one export once
        // its first table committed, before `runs` did.
        let mut child = spawn_export(&sim, dir.path(), &args);
        let deadline = Instant::now() + Duration::from_secs(120);
        let log = dir.path().join("node_outputs/_delta_log");
        while !log.is_dir() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        sigkill(&mut child);
        readable_after_kill += 1;
    }
    assert!(readable_after_kill > 0, "no kill landed after a commit");
    assert_ok(&export(&sim, dir.path(), &args));
    let read = read_delta(root, None, &[]);
    assert_exact(&read, &served_statuses(&sim));
    for table in ["node_outputs", "run_inputs"] {
        // Children of a run are stored once: one row per (run, node) or (run, input) served.
        assert!(read[table]["rows"].as_u64().unwrap() > 0);
    }
    let hive = tempfile::tempdir().unwrap();
    assert_ok(&export(&sim, hive.path(), &args[..5]));
    for table in ["node_outputs", "run_inputs"] {
        let (_, rows) = read_table(hive.path(), table);
        assert_eq!(
            read[table]["rows"].as_u64().unwrap() as usize,
            rows.len(),
            "{table}"
        );
    }
}

/// `--full` on Delta marks the runs gone upstream in a new version (their rows kept, the files
/// holding them replaced), and a field policy applies to what Delta tables store as to Hive ones.
#[test]
fn a_full_delta_export_marks_runs_deleted_upstream_and_field_policies_apply() {
    let sim = Sim::start(SimConfig {
        workflows: 3,
        runs_per_workflow: 200,
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let args = ["--all-workflows", "--drop", "outputs", DELTA[0], DELTA[1]];
    assert_ok(&export(&sim, dir.path(), &args));
    let first = read_delta(root, None, &[]);
    assert_exact(&first, &served_statuses(&sim));
    assert_eq!(
        first["runs"]["non_null"]["outputs"], 0,
        "{}",
        first["runs"]["non_null"]
    );
    assert_eq!(first["runs"]["non_null"]["run_id"], 600);

    let id = sim.ids()[1].clone();
    let deleted: Vec<String> = sim
        .server
        .delete_runs(1, &[10, 50, 150])
        .into_iter()
        .map(|run| format!("{id}/{run}"))
        .collect();
    let full = export(&sim, dir.path(), &[&args[..], &["--full"]].concat());
    assert_ok(&full);
    assert!(
        stdout(&full).contains("deleted upstream: 3 stored runs no longer exist upstream"),
        "{}",
        stdout(&full)
    );
    let after = read_delta(root, Some(0), &[]);
    let runs = &after["runs"];
    assert_eq!(runs["version"], 1);
    let mut marked: Vec<String> = serde_json::from_value(runs["marked_deleted"].clone()).unwrap();
    marked.sort();
    let mut want = deleted.clone();
    want.sort();
    assert_eq!(marked, want);
    assert_eq!(runs["rows"], 600, "rows are kept, not dropped");
    assert_eq!(runs["duplicates"].as_array().unwrap().len(), 0);
    assert_eq!(runs["non_null"]["outputs"], 0);
    assert_eq!(
        after["runs_at_version"]["marked_deleted"],
        serde_json::json!([])
    );
    let url = sim.url();
    let verify = run(&[
        "verify",
        "--base-url",
        &url,
        "--out",
        root,
        "--all-workflows",
    ]);
    assert_ok(&verify);
}

/// Exports write a checkpoint of a table by themselves every tenth commit
/// (`delta.checkpointInterval`), and readers open the table from it.
#[test]
fn every_tenth_commit_of_a_table_writes_a_checkpoint() {
    let sim = Sim::start(SimConfig {
        workflows: 1,
        runs_per_workflow: 30,
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let args = ["--all-workflows", DELTA[0], DELTA[1]];
    let log = dir.path().join("runs/_delta_log");
    let checkpoint = log.join("00000000000000000010.checkpoint.parquet");
    for round in 0..=10 {
        if round > 0 {
            sim.server.add_runs(0, 1);
        }
        assert_ok(&export(&sim, dir.path(), &args));
        assert_eq!(checkpoint.exists(), round == 10, "after export {round}");
    }
    assert!(log.join("_last_checkpoint").exists());
    let read = read_delta(dir.path().to_str().unwrap(), Some(9), &[]);
    assert_eq!(read["runs"]["version"], 10);
    assert_exact(&read, &served_statuses(&sim));
    assert_eq!(read["runs_at_version"]["rows"], 39);
}

/// Data files in a table folder without a log (a first export killed after moving them in,
/// before that table's first commit) are no rows to `report` and `verify`, and `maintain`'s
/// vacuum removes them.
#[test]
fn files_of_a_table_never_committed_are_not_read_and_maintain_removes_them() {
    let sim = Sim::start(SimConfig {
        workflows: 2,
        runs_per_workflow: 60,
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    assert_ok(&export(
        &sim,
        dir.path(),
        &["--all-workflows", DELTA[0], DELTA[1]],
    ));
    let hive = tempfile::tempdir().unwrap();
    assert_ok(&export(
        &sim,
        hive.path(),
        &["--all-workflows", "--with-steps"],
    ));
    // What a killed `--with-steps` export leaves: a steps file, moved in, never committed.
    let source = parquet_files(&hive.path().join("steps"))[0].clone();
    let day = source.parent().unwrap().file_name().unwrap();
    let orphan = dir
        .path()
        .join("steps")
        .join(day)
        .join("part-killed-00000.parquet");
    std::fs::create_dir_all(orphan.parent().unwrap()).unwrap();
    std::fs::copy(&source, &orphan).unwrap();

    let report = run(&["report", "--data", root]);
    assert_ok(&report);
    assert!(
        !stdout(&report).contains("slowest_nodes"),
        "{}",
        stdout(&report)
    );
    let url = sim.url();
    assert_ok(&run(&[
        "verify",
        "--base-url",
        &url,
        "--out",
        root,
        "--all-workflows",
    ]));
    let kept = run(&["maintain", "--out", root, "--retention", "0s"]);
    assert_ok(&kept);
    let text = stdout(&kept);
    assert!(
        text.contains(
            "steps: no Delta log (an export killed before its first commit), vacuum deleted 1 files"
        ),
        "{text}"
    );
    assert!(!orphan.exists());
    assert_exact(&read_delta(root, None, &[]), &served_statuses(&sim));
}
