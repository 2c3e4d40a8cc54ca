//! Export end to end: every run exactly once with exact values, paging edge cases, layout.

use std::collections::BTreeSet;

use arrow::datatypes::{DataType, TimeUnit};
use orchestra_export::simulate::SimConfig;
use serde_json::{Value, json};

use crate::support::*;

#[test]
fn every_run_exactly_once_with_exact_values_in_every_column() {
    let sim = Sim::start(SimConfig {
        workflows: 3,
        runs_per_workflow: 437,
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let started = chrono::Utc::now().timestamp_micros();
    let ids: Vec<String> = sim.ids();
    let mut args = vec!["--page-size", "50"];
    for id in &ids {
        args.extend(["--workflow", id.as_str()]);
    }
    let out = export(&sim, dir.path(), &args);
    assert_ok(&out);
    assert!(
        stdout(&out).contains("3 of 3 workflows ok\n"),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("1311 runs"), "{}", stdout(&out));
    for id in &ids {
        assert_dataset_matches(dir.path(), id, &sim.server.records(id), started);
    }
    // Nothing but committed Parquet files in table folders; no temp files left anywhere.
    for entry in walk(dir.path()) {
        let name = entry.file_name().unwrap().to_str().unwrap().to_owned();
        assert!(!name.ends_with(".tmp"), "leftover temp file {entry:?}");
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut all = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            all.extend(walk(&p));
        } else {
            all.push(p);
        }
    }
    all
}

#[test]
fn tables_have_the_documented_types() {
    let sim = Sim::start(SimConfig {
        workflows: 1,
        runs_per_workflow: 40,
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    assert_ok(&export(&sim, dir.path(), &["--all-workflows"]));
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let expect = |table: &str, columns: &[(&str, DataType)]| {
        let (schema, rows) = read_table(dir.path(), table);
        assert!(!rows.is_empty(), "{table} has rows");
        let schema = schema.unwrap();
        let got: Vec<(String, DataType)> = schema
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().clone()))
            .collect();
        let want: Vec<(String, DataType)> = columns
            .iter()
            .map(|(n, t)| (n.to_string(), t.clone()))
            .collect();
        assert_eq!(got, want, "{table}");
    };
    use DataType::{Int32, Int64, Utf8};
    expect(
        "runs",
        &[
            ("workflow_id", Utf8),
            ("run_id", Utf8),
            ("status", Utf8),
            ("start_time", ts.clone()),
            ("end_time", ts.clone()),
            ("elapsed_time", Int64),
            ("duration_ms", Int64),
            ("error", Utf8),
            ("outputs", Utf8),
            ("node_count", Int32),
            ("inputs", Utf8),
            ("extracted_at", ts.clone()),
            ("deleted_upstream_at", ts.clone()),
        ],
    );
    expect(
        "node_outputs",
        &[
            ("workflow_id", Utf8),
            ("run_id", Utf8),
            ("start_time", ts.clone()),
            ("node", Utf8),
            ("node_index", Int32),
            ("value_type", Utf8),
            ("value", Utf8),
            ("value_bytes", Int64),
        ],
    );
    expect(
        "run_inputs",
        &[
            ("workflow_id", Utf8),
            ("run_id", Utf8),
            ("start_time", ts.clone()),
            ("name", Utf8),
            ("value_type", Utf8),
            ("value", Utf8),
        ],
    );
    expect(
        "workflows",
        &[
            ("workflow_id", Utf8),
            ("name", Utf8),
            ("description", Utf8),
            ("status", Utf8),
            ("version", Utf8),
            ("created_at", ts.clone()),
            ("updated_at", ts.clone()),
            ("extracted_at", ts),
        ],
    );
}

#[test]
fn pages_overlap_by_one_run_and_history_ends_on_a_page_with_nothing_new() {
    let sim = Sim::start(SimConfig {
        workflows: 1,
        runs_per_workflow: 300,
        ..SimConfig::default()
    });
    let id = sim.server.workflows()[0].id.clone();
    let dir = tempfile::tempdir().unwrap();
    assert_ok(&export(
        &sim,
        dir.path(),
        &[
            "--workflow",
            &id,
            "--page-size",
            "100",
            "--concurrency",
            "1",
        ],
    ));
    // Each page starts at the last run of the one before (checking they join up); the short
    // page at 297 is confirmed as the end by one holding only its last run.
    assert_eq!(offsets(&sim.paths(), &id), [0, 99, 198, 297, 299]);
    assert_dataset_matches(dir.path(), &id, &sim.server.records(&id), 0);
}

#[test]
fn a_server_page_cap_below_the_limit_loses_nothing() {
    let sim = Sim::start(SimConfig {
        workflows: 1,
        runs_per_workflow: 205,
        page_cap: Some(30),
        ..SimConfig::default()
    });
    let id = sim.server.workflows()[0].id.clone();
    let dir = tempfile::tempdir().unwrap();
    let out = export(
        &sim,
        dir.path(),
        &[
            "--workflow",
            &id,
            "--page-size",
            "100",
            "--concurrency",
            "1",
        ],
    );
    assert_ok(&out);
    // Offsets advance by what was received (30, less the one-run overlap), not by the limit
    // asked for (100).
    assert_eq!(
        offsets(&sim.paths(), &id),
        [0, 29, 58, 87, 116, 145, 174, 203, 204]
    );
    assert_dataset_matches(dir.path(), &id, &sim.server.records(&id), 0);

    // With pages fetched ahead, the stride learnt from the first page is used.
    let dir = tempfile::tempdir().unwrap();
    assert_ok(&export(
        &sim,
        dir.path(),
        &[
            "--workflow",
            &id,
            "--page-size",
            "100",
            "--concurrency",
            "8",
        ],
    ));
    assert_dataset_matches(dir.path(), &id, &sim.server.records(&id), 0);
}

#[test]
fn pages_of_one_long_workflow_are_fetched_concurrently() {
    let sim = Sim::start(SimConfig {
        workflows: 1,
        runs_per_workflow: 3000,
        latency: std::time::Duration::from_millis(30),
        ..SimConfig::default()
    });
    let id = sim.server.workflows()[0].id.clone();
    let dir = tempfile::tempdir().unwrap();
    assert_ok(&export(
        &sim,
        dir.path(),
        &["--workflow", &id, "--concurrency", "8"],
    ));
    let max = sim.server.max_concurrent_requests();
    assert!(
        (4..=8).contains(&max),
        "one workflow had {max} requests in flight at most"
    );
    assert_dataset_matches(dir.path(), &id, &sim.server.records(&id), 0);
}

#[test]
fn an_empty_workflow_succeeds_with_no_rows() {
    let sim = Sim::start(SimConfig {
        workflows: 1,
        runs_per_workflow: 10,
        fixtures: vec![fixture("empty-wf", vec![])],
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let out = export(&sim, dir.path(), &["--workflow", "empty-wf"]);
    assert_ok(&out);
    assert!(
        stdout(&out).contains("1 of 1 workflows ok"),
        "{}",
        stdout(&out)
    );
    assert_eq!(offsets(&sim.paths(), "empty-wf"), [0]);
    assert!(read_table(dir.path(), "runs").1.is_empty());
}

#[test]
fn workflow_ids_are_one_percent_encoded_path_segment() {
    let odd = "a/b?c#d%e f";
    let record = json!({"id": "r1", "status": "completed", "start_time": "2025-03-12T03:39:30.476391Z",
                        "end_time": "2025-03-12T03:39:36.133074Z", "elapsed_time": 5, "error": null,
                        "outputs": "x", "all_outputs": {"model": "x"}, "inputs": {"prompt": "p"}});
    let sim = Sim::start(SimConfig {
        workflows: 0,
        fixtures: vec![fixture(odd, vec![record.clone()])],
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    assert_ok(&export(&sim, dir.path(), &["--workflow", odd]));
    let paths = sim.paths();
    assert_eq!(
        paths[0], "/api/v1/workflow/workflows/a%2Fb%3Fc%23d%25e%20f/runs?limit=100&offset=0",
        "{paths:?}"
    );
    assert_dataset_matches(dir.path(), odd, &[record], 0);
}

#[test]
fn records_that_cannot_be_runs_are_quarantined_not_fatal() {
    let page: Vec<Value> =
        serde_json::from_str(include_str!("../../data/samples/varied-shapes.json")).unwrap();
    let sim = Sim::start(SimConfig {
        workflows: 0,
        fixtures: vec![fixture("odd-records", page)],
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let out = export(&sim, dir.path(), &["--workflow", "odd-records"]);
    assert_ok(&out);
    assert!(stdout(&out).contains("4 runs"), "{}", stdout(&out));
    assert!(stdout(&out).contains("5 quarantined"), "{}", stdout(&out));
    let rejected_dir = dir.path().join("_rejected");
    let files: Vec<_> = std::fs::read_dir(&rejected_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    let lines: Vec<Value> = std::fs::read_to_string(&files[0])
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let reasons: Vec<&str> = lines
        .iter()
        .map(|l| l["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        [
            "`id` is missing",
            "`id` is empty",
            "`id` is null",
            "record is a JSON string, not an object",
            "`id` is a JSON array"
        ]
    );
    assert!(lines.iter().all(|l| l["workflow_id"] == "odd-records"));
    assert_eq!(lines[3]["record"], json!("not a run"));
    let (_, runs) = read_table(dir.path(), "runs");
    let ids: BTreeSet<&str> = runs.iter().map(|r| r["run_id"].text().unwrap()).collect();
    assert_eq!(
        ids,
        BTreeSet::from(["12345", "run-no-start", "run-object-outputs", "run-running"])
    );
    let no_start = select(&runs, "run_id", "run-no-start");
    assert_eq!(no_start[0]["date"], text("__HIVE_DEFAULT_PARTITION__"));
}

#[test]
fn all_workflows_lists_exports_and_writes_the_workflows_table() {
    let sim = Sim::start(SimConfig {
        workflows: 3,
        runs_per_workflow: 25,
        fixtures: vec![fixture("extra-wf", vec![])],
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let out = export(&sim, dir.path(), &["--all-workflows"]);
    assert_ok(&out);
    assert!(
        stdout(&out).contains("4 of 4 workflows ok"),
        "{}",
        stdout(&out)
    );
    let (_, workflows) = read_table(dir.path(), "workflows");
    let mut listed: Vec<&str> = workflows
        .iter()
        .map(|w| w["workflow_id"].text().unwrap())
        .collect();
    listed.sort();
    let mut want: Vec<String> = sim.ids();
    want.push("extra-wf".into());
    want.sort();
    assert_eq!(listed, want);
    let first = &sim.server.workflows()[0];
    let row = select(&workflows, "workflow_id", &first.id)[0];
    assert_eq!(row["name"], text(&first.name));
    assert_eq!(row["version"], text("1"));
    assert!(matches!(row["created_at"], Cell::Micros(_)));
    let (_, runs) = read_table(dir.path(), "runs");
    assert_eq!(runs.len(), 75);
}

#[test]
fn a_prerendered_simulator_serves_every_page_as_first_rendered() {
    let sim = Sim::start(SimConfig {
        workflows: 3,
        runs_per_workflow: 250,
        prerendered: true,
        ..SimConfig::default()
    });
    let args = ["--all-workflows", "--page-size", "60"];
    let first = tempfile::tempdir().unwrap();
    assert_ok(&export(&sim, first.path(), &args));
    // The second export is served from stored pages: the same rows, bar `extracted_at`.
    let second = tempfile::tempdir().unwrap();
    assert_ok(&export(&sim, second.path(), &args));
    for dir in [first.path(), second.path()] {
        for wf in sim.server.workflows() {
            assert_dataset_matches(dir, &wf.id, &sim.server.records(&wf.id), 0);
        }
    }
}

/// Modes (permission bits) of every file and folder under `root`, root left out.
#[cfg(unix)]
fn modes(root: &std::path::Path) -> BTreeSet<(bool, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut seen = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            seen.insert((meta.is_dir(), meta.permissions().mode() & 0o777));
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    seen
}

#[cfg(unix)]
#[test]
fn files_are_private_to_their_owner_unless_shared_files_is_asked_for() {
    let sim = Sim::start(SimConfig {
        workflows: 2,
        runs_per_workflow: 30,
        ..SimConfig::default()
    });
    let private = tempfile::tempdir().unwrap();
    assert_ok(&export(&sim, private.path(), &["--all-workflows"]));
    assert_eq!(
        modes(private.path()),
        BTreeSet::from([(false, 0o600), (true, 0o700)])
    );
    assert!(private.path().join("_state").is_dir());
    assert!(private.path().join("runs").is_dir());

    // The umask still applies to shared files: this process's, which the export inherits.
    // SAFETY: `umask` only swaps the process's file-mode mask; it is set back at once.
    let mask = unsafe {
        let mask = libc::umask(0o022);
        libc::umask(mask);
        mask
    } as u32;
    let shared = tempfile::tempdir().unwrap();
    assert_ok(&export(
        &sim,
        shared.path(),
        &["--all-workflows", "--shared-files"],
    ));
    assert_eq!(
        modes(shared.path()),
        BTreeSet::from([(false, 0o644 & !mask), (true, 0o755 & !mask)])
    );
}
