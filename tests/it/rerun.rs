//! Scheduled re-runs: incremental fetches, merges without duplicates, reconciliation of
//! unfinished runs, state, locking, manifests and crash safety.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use orchestra_export::simulate::SimConfig;
use serde_json::{Value, json};

use crate::support::*;

/// Every row of every run table, without `extracted_at`, sorted: what must not change between
/// identical exports.
fn content(out: &Path) -> BTreeMap<&'static str, Vec<Row>> {
    let mut all = BTreeMap::new();
    for table in ["runs", "node_outputs", "run_inputs"] {
        let mut rows = read_table(out, table).1;
        for row in &mut rows {
            row.remove("extracted_at");
        }
        rows.sort();
        all.insert(table, rows);
    }
    all
}

fn state_cursor(out: &Path, workflow_id: &str) -> Option<String> {
    let text =
        std::fs::read_to_string(out.join("_state").join(format!("{workflow_id}.json"))).ok()?;
    let state: Value = serde_json::from_str(&text).unwrap();
    state["cursor"].as_str().map(str::to_owned)
}

fn partition_files(out: &Path) -> usize {
    parquet_files(out).len()
}

#[test]
fn an_incremental_rerun_fetches_only_what_is_new_and_finishes_running_runs() {
    // Workflow 0 has its two newest runs running/queued.
    let sim = Sim::start(SimConfig {
        workflows: 1,
        runs_per_workflow: 10_000,
        ..SimConfig::default()
    });
    let id = sim.ids()[0].clone();
    let dir = tempfile::tempdir().unwrap();
    let out = export(&sim, dir.path(), &["--workflow", &id]);
    assert_ok(&out);
    assert!(
        stdout(&out).contains(" (first export): "),
        "nothing saved yet: not labelled incremental\n{}",
        stdout(&out)
    );
    let full_requests = sim.paths().len();
    assert!(full_requests >= 101, "{full_requests}");
    let (_, runs) = read_table(dir.path(), "runs");
    let running: Vec<_> = runs
        .iter()
        .filter(|r| r["end_time"] == Cell::Null)
        .collect();
    assert_eq!(running.len(), 2);
    let running_ids: Vec<String> = running
        .iter()
        .map(|r| r["run_id"].text().unwrap().to_owned())
        .collect();

    sim.server.add_runs(0, 50);
    let before = sim.paths().len();
    let out = export(&sim, dir.path(), &["--workflow", &id]);
    assert_ok(&out);
    let rerun_requests = sim.paths().len() - before;
    assert!(
        rerun_requests <= 3,
        "incremental re-run made {rerun_requests} requests: {:?}",
        &sim.paths()[before..]
    );
    assert!(stdout(&out).contains("(incremental)"), "{}", stdout(&out));
    let summary = stdout(&out);
    let runs_line = summary
        .lines()
        .find(|l| l.trim_start().starts_with("runs "))
        .unwrap();
    assert!(runs_line.contains(" 50 new,"), "{summary}");

    // Exactly the server's history now: 10,050 runs, the formerly running ones finished.
    assert_dataset_matches(dir.path(), &id, &sim.server.records(&id), 0);
    assert_unique_keys(dir.path());
    assert_finished(dir.path(), &running_ids);
    println!("requests: full export {full_requests}, incremental re-run {rerun_requests}");
}

#[test]
fn running_the_same_export_twice_or_in_full_changes_nothing_but_extracted_at() {
    let sim = Sim::start(SimConfig {
        workflows: 3,
        runs_per_workflow: 400,
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    assert_ok(&export(
        &sim,
        dir.path(),
        &["--all-workflows", "--page-size", "70"],
    ));
    let first = content(dir.path());
    let files = partition_files(dir.path());
    assert_ok(&export(
        &sim,
        dir.path(),
        &["--all-workflows", "--page-size", "70"],
    ));
    assert_eq!(
        content(dir.path()),
        first,
        "incremental re-run changed the data"
    );
    let out = export(&sim, dir.path(), &["--all-workflows", "--full"]);
    assert_ok(&out);
    assert!(stdout(&out).contains("(full)"), "{}", stdout(&out));
    // Every run re-read, none changed: none is called updated.
    let text = stdout(&out);
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("runs "))
        .unwrap();
    assert!(
        line.contains("0 new,       0 updated rows in")
            && line.ends_with("(1200 re-read, unchanged)"),
        "{text}"
    );
    assert_eq!(content(dir.path()), first, "--full changed the data");
    assert_eq!(partition_files(dir.path()), files, "file count grew");
    for id in sim.ids() {
        assert_dataset_matches(dir.path(), &id, &sim.server.records(&id), 0);
    }
}

#[test]
fn unfinished_runs_beyond_the_lookback_are_fetched_by_id_and_replaced() {
    let t = |h: u32| format!("2025-03-12T{h:02}:00:00Z");
    let run = |id: &str, h: u32, status: &str, nodes: &[&str]| {
        let outputs: serde_json::Map<String, Value> = nodes
            .iter()
            .map(|n| (n.to_string(), json!(format!("{n} out"))))
            .collect();
        let finished = status != "running" && status != "queued";
        json!({"id": id, "status": status, "start_time": t(h),
               "end_time": if finished { json!(t(h + 1)) } else { Value::Null },
               "elapsed_time": if finished { json!(3600) } else { Value::Null },
               "error": null, "outputs": null, "all_outputs": outputs, "inputs": {"q": id}})
    };
    let queued = |start: Option<String>, status: &str| json!({"id": "late", "status": status, "start_time": start, "end_time": null, "all_outputs": {}, "inputs": {}});
    let before = vec![
        run("r4", 10, "completed", &["a", "b"]),
        run("r3", 9, "completed", &["a", "b"]),
        run("r2", 7, "completed", &["a", "b"]),
        run("r1", 6, "running", &["a"]),
        queued(None, "queued"),
        run("r0", 5, "completed", &["a", "b"]),
    ];
    let sim = Sim::start(SimConfig {
        workflows: 0,
        fixtures: vec![fixture("fx", before)],
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    assert_ok(&export(
        &sim,
        dir.path(),
        &["--workflow", "fx", "--page-size", "1"],
    ));
    let (_, runs) = read_table(dir.path(), "runs");
    assert_eq!(
        select(&runs, "run_id", "late")[0]["date"],
        text("__HIVE_DEFAULT_PARTITION__")
    );

    // Upstream, r1 finished with more nodes and the queued run started.
    let after = vec![
        run("r4", 10, "completed", &["a", "b"]),
        run("r3", 9, "completed", &["a", "b"]),
        run("r2", 7, "completed", &["a", "b"]),
        run("r1", 6, "completed", &["a", "b", "c"]),
        queued(Some(t(6)), "running"),
        run("r0", 5, "completed", &["a", "b"]),
    ];
    sim.server.set_fixture_records("fx", after.clone());
    let from = sim.paths().len();
    let out = export(
        &sim,
        dir.path(),
        &["--workflow", "fx", "--page-size", "1", "--lookback", "1h"],
    );
    assert_ok(&out);
    // Paging stops at r2 (07:00 is before the 10:00 cursor minus an hour); r1 and the queued
    // run are fetched by id.
    let paths = &sim.paths()[from..];
    let mut paged = offsets(paths, "fx");
    paged.sort();
    assert_eq!(paged, [0, 1, 2], "{paths:?}");
    assert!(
        paths.iter().any(|p| p.ends_with("/workflows/fx/runs/r1")),
        "{paths:?}"
    );
    assert!(
        paths.iter().any(|p| p.ends_with("/workflows/fx/runs/late")),
        "{paths:?}"
    );
    assert!(
        stdout(&out).contains("unfinished runs: 2 fetched again"),
        "{}",
        stdout(&out)
    );
    // The run that finished in place is an updated row (the one whose start moved is new in
    // its day); the runs only re-read are not called updated.
    let summary = stdout(&out);
    let runs_line = summary
        .lines()
        .find(|l| l.trim_start().starts_with("runs "))
        .unwrap();
    assert!(
        runs_line.contains(" 1 updated rows in ") && runs_line.ends_with("(3 re-read, unchanged)"),
        "{summary}"
    );
    assert_dataset_matches(dir.path(), "fx", &after, 0);
    assert_unique_keys(dir.path());
    // The started run left the default partition.
    let (_, runs) = read_table(dir.path(), "runs");
    assert_eq!(
        select(&runs, "run_id", "late")[0]["date"],
        text("2025-03-12")
    );
    assert!(
        !dir.path()
            .join("runs/date=__HIVE_DEFAULT_PARTITION__")
            .join("part-0.parquet")
            .exists()
    );
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("_state/fx.json")).unwrap())
            .unwrap();
    assert_eq!(
        state["unfinished"].as_array().unwrap().len(),
        1,
        "`late` is still running: {state}"
    );
}

/// A run queued before midnight whose start the API corrects to the next day once it ran.
fn day_moving_runs(queued: bool) -> Vec<Value> {
    let run = |id: &str, start: &str, end: Option<&str>, nodes: &[&str]| {
        let outputs: serde_json::Map<String, Value> = nodes
            .iter()
            .map(|n| (n.to_string(), json!(format!("{n} of {id}"))))
            .collect();
        json!({"id": id, "status": if end.is_some() { "completed" } else { "running" },
               "start_time": start, "end_time": end, "elapsed_time": end.map(|_| 60),
               "error": null, "outputs": null, "all_outputs": outputs, "inputs": {"q": id}})
    };
    let moving = if queued {
        run("q", "2025-03-11T23:59:00Z", None, &["a"])
    } else {
        run(
            "q",
            "2025-03-12T00:01:00Z",
            Some("2025-03-12T00:02:00Z"),
            &["a", "b"],
        )
    };
    vec![
        run(
            "r2",
            "2025-03-12T05:00:00Z",
            Some("2025-03-12T05:01:00Z"),
            &["a"],
        ),
        moving,
        run(
            "r1",
            "2025-03-10T10:00:00Z",
            Some("2025-03-10T10:01:00Z"),
            &["a"],
        ),
    ]
}

/// The `date` partitions holding rows of run `q` in `table`.
fn dates_of_q(out: &Path, table: &str) -> Vec<String> {
    let (_, rows) = read_table(out, table);
    let mut dates: Vec<String> = select(&rows, "run_id", "q")
        .iter()
        .map(|r| r["date"].text().unwrap().to_owned())
        .collect();
    dates.sort();
    dates
}

#[test]
fn a_run_whose_start_moves_to_another_day_is_stored_once() {
    let sim = Sim::start(SimConfig {
        workflows: 0,
        fixtures: vec![fixture("fx", day_moving_runs(true))],
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    assert_ok(&export(&sim, dir.path(), &["--workflow", "fx"]));
    assert_eq!(dates_of_q(dir.path(), "runs"), ["2025-03-11"]);

    let after = day_moving_runs(false);
    sim.server.set_fixture_records("fx", after.clone());
    let out = export(&sim, dir.path(), &["--workflow", "fx"]);
    assert_ok(&out);
    assert_eq!(dates_of_q(dir.path(), "runs"), ["2025-03-12"]);
    assert_eq!(dates_of_q(dir.path(), "node_outputs"), ["2025-03-12"; 2]);
    assert_eq!(dates_of_q(dir.path(), "run_inputs"), ["2025-03-12"]);
    assert_dataset_matches(dir.path(), "fx", &after, 0);
    assert_unique_keys(dir.path());
    // `q` was all the old day held: its partitions are gone.
    for table in ["runs", "node_outputs", "run_inputs"] {
        let old = dir
            .path()
            .join(format!("{table}/date=2025-03-11/part-0.parquet"));
        assert!(!old.exists(), "{table}");
    }
}

#[test]
fn a_full_export_removes_rows_of_runs_found_under_another_day() {
    let sim = Sim::start(SimConfig {
        workflows: 0,
        fixtures: vec![fixture("fx", day_moving_runs(false))],
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    assert_ok(&export(&sim, dir.path(), &["--workflow", "fx"]));
    // Rows left under a day no run of the API has (by an older version of this tool, say):
    // copies of 2025-03-12 (`q`, `r2`) under 2025-03-09.
    for table in ["runs", "node_outputs", "run_inputs"] {
        let planted = dir.path().join(format!("{table}/date=2025-03-09"));
        std::fs::create_dir_all(&planted).unwrap();
        let from = dir
            .path()
            .join(format!("{table}/date=2025-03-12/part-0.parquet"));
        std::fs::copy(from, planted.join("part-0.parquet")).unwrap();
    }
    let planted_days = |out: &Path| {
        let (_, rows) = read_table(out, "runs");
        rows.iter()
            .filter(|r| r["date"] == text("2025-03-09"))
            .count()
    };
    // An incremental export cannot know of them.
    assert_ok(&export(&sim, dir.path(), &["--workflow", "fx"]));
    assert_eq!(planted_days(dir.path()), 2);

    let out = export(&sim, dir.path(), &["--workflow", "fx", "--full"]);
    assert_ok(&out);
    assert_eq!(planted_days(dir.path()), 0);
    assert_eq!(dates_of_q(dir.path(), "runs"), ["2025-03-12"]);
    assert_eq!(dates_of_q(dir.path(), "node_outputs"), ["2025-03-12"; 2]);
    assert_dataset_matches(dir.path(), "fx", &day_moving_runs(false), 0);
    assert_unique_keys(dir.path());
    for table in ["runs", "node_outputs", "run_inputs"] {
        let planted = dir.path().join(format!("{table}/date=2025-03-09"));
        assert!(!planted.join("part-0.parquet").exists(), "{table}");
    }
}

#[test]
fn unfinished_runs_past_the_horizon_are_given_up_and_reported() {
    let old = (chrono::Utc::now() - chrono::Duration::days(30)).to_rfc3339();
    let sim = Sim::start(SimConfig {
        workflows: 0,
        fixtures: vec![fixture(
            "fx",
            vec![json!({"id": "stuck", "status": "running", "start_time": old})],
        )],
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let unfinished = |dir: &Path| -> usize {
        let text = std::fs::read_to_string(dir.join("_state/fx.json")).unwrap();
        serde_json::from_str::<Value>(&text).unwrap()["unfinished"]
            .as_array()
            .unwrap()
            .len()
    };
    // Found running a month after it started: it still gets the whole horizon from now.
    let out = export(
        &sim,
        dir.path(),
        &["--workflow", "fx", "--unfinished-horizon", "7d"],
    );
    assert_ok(&out);
    assert_eq!(unfinished(dir.path()), 1);
    assert!(!stdout(&out).contains("given up"), "{}", stdout(&out));
    // Once the horizon since it was first seen has passed, it is given up and reported.
    std::thread::sleep(Duration::from_millis(1100));
    let out = export(
        &sim,
        dir.path(),
        &["--workflow", "fx", "--unfinished-horizon", "1s"],
    );
    assert_ok(&out);
    assert!(
        stdout(&out).contains("1 given up past the horizon"),
        "{}",
        stdout(&out)
    );
    assert_eq!(unfinished(dir.path()), 0);
}

#[test]
fn a_failed_workflow_keeps_its_state_while_the_others_advance() {
    let sim = Sim::start(SimConfig {
        workflows: 2,
        runs_per_workflow: 300,
        ..SimConfig::default()
    });
    let [a, b] = [sim.ids()[0].clone(), sim.ids()[1].clone()];
    let dir = tempfile::tempdir().unwrap();
    assert_ok(&export(
        &sim,
        dir.path(),
        &["--workflow", &a, "--workflow", &b],
    ));
    let (cursor_a, cursor_b) = (
        state_cursor(dir.path(), &a).unwrap(),
        state_cursor(dir.path(), &b).unwrap(),
    );
    assert!(dir.path().join("_SUCCESS").exists());

    sim.server.add_runs(0, 20);
    sim.server.add_runs(1, 20);
    // `b` fails: its requests answer 500 (a second simulator serves the same data with a fault).
    let broken = Sim::start(SimConfig {
        workflows: 2,
        runs_per_workflow: 300,
        faults: vec![orchestra_export::simulate::Fault::status(&b, 500, 1000)],
        ..SimConfig::default()
    });
    broken.server.add_runs(0, 20);
    broken.server.add_runs(1, 20);
    let out = export(
        &broken,
        dir.path(),
        &["--workflow", &a, "--workflow", &b, "--max-retries", "0"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_ne!(
        state_cursor(dir.path(), &a).unwrap(),
        cursor_a,
        "a advanced"
    );
    assert_eq!(
        state_cursor(dir.path(), &b).unwrap(),
        cursor_b,
        "b kept its state"
    );
    assert!(
        !dir.path().join("_SUCCESS").exists(),
        "no _SUCCESS after a partial export"
    );
    let manifests: Vec<Value> = std::fs::read_dir(dir.path().join("_manifest"))
        .unwrap()
        .map(|e| {
            serde_json::from_str(&std::fs::read_to_string(e.unwrap().path()).unwrap()).unwrap()
        })
        .collect();
    assert_eq!(manifests.len(), 2);
    assert!(
        manifests.iter().any(|m| m["status"] == "partial"),
        "{manifests:?}"
    );

    // The next healthy run completes `b`.
    assert_ok(&export(
        &sim,
        dir.path(),
        &["--workflow", &a, "--workflow", &b],
    ));
    for id in [&a, &b] {
        assert_dataset_matches(dir.path(), id, &sim.server.records(id), 0);
    }
    assert!(dir.path().join("_SUCCESS").exists());
}

#[test]
fn the_manifest_records_what_an_export_did() {
    let sim = Sim::start(SimConfig {
        workflows: 2,
        runs_per_workflow: 120,
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    assert_ok(&export(&sim, dir.path(), &["--all-workflows"]));
    sim.server.add_runs(1, 7);
    assert_ok(&export(&sim, dir.path(), &["--all-workflows"]));
    let success: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("_SUCCESS")).unwrap())
            .unwrap();
    let id = success["export_id"].as_str().unwrap();
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("_manifest").join(format!("{id}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest, success);
    assert_eq!(manifest["status"], "ok");
    assert_eq!(manifest["mode"], "incremental");
    assert_eq!(manifest["tables"]["runs"]["rows_new"], 7);
    let wf = manifest["workflows"].as_array().unwrap();
    assert_eq!(wf.len(), 2);
    assert!(
        wf.iter()
            .all(|w| w["ok"] == true && w["cursor"].is_string())
    );
    assert_eq!(manifest["tool"]["name"], "orchestra-export");
    assert_eq!(manifest["tool"]["version"], env!("CARGO_PKG_VERSION"));
    let settings = &manifest["settings"];
    assert_eq!(settings["base_url"], sim.url());
    assert_eq!(settings["all_workflows"], true);
    assert_eq!(settings["page_size"], 100);
    assert_eq!(settings["request_timeout"], "1m");
    assert_eq!(settings["lookback"], "1h");
    assert_eq!(settings["keep_manifests"], 1000);
    let text = manifest.to_string();
    assert!(!text.contains(KEY), "the key is in the manifest: {text}");
}

#[test]
fn only_the_newest_manifests_are_kept_and_the_lock_file_says_it_is_free() {
    let sim = Sim::start(SimConfig {
        workflows: 1,
        runs_per_workflow: 20,
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let manifests = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.path().join("_manifest"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let mut ids = Vec::new();
    for _ in 0..4 {
        let out = export(
            &sim,
            dir.path(),
            &["--all-workflows", "--keep-manifests", "2"],
        );
        assert_ok(&out);
        let success: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("_SUCCESS")).unwrap())
                .unwrap();
        ids.push(format!("{}.json", success["export_id"].as_str().unwrap()));
        assert!(manifests().len() <= 2, "{:?}", manifests());
    }
    assert_eq!(manifests(), ids[2..], "the two newest are kept");
    // The config key does the same.
    let config = dir.path().join("export.toml");
    std::fs::write(&config, "keep_manifests = 1\n").unwrap();
    let config = config.to_str().unwrap();
    assert_ok(&export(
        &sim,
        dir.path(),
        &["--all-workflows", "--config", config],
    ));
    assert_eq!(manifests().len(), 1);

    // After a clean exit the lock file stays (it is the layout's mark) and says it is free.
    let lock = std::fs::read_to_string(dir.path().join("_lock")).unwrap();
    assert!(lock.starts_with("released 20"), "{lock}");
    assert!(lock.contains("; was held by pid "), "{lock}");
}

#[test]
fn a_second_export_into_the_same_folder_is_refused_while_the_first_runs() {
    let sim = Sim::start(SimConfig {
        workflows: 1,
        runs_per_workflow: 3000,
        latency: Duration::from_millis(40),
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let first = spawn_export(&sim, dir.path(), &["--all-workflows", "--concurrency", "1"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while sim.server.requests().len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let second = export(&sim, dir.path(), &["--all-workflows"]);
    assert_eq!(second.status.code(), Some(6), "{}", stderr(&second));
    let err = stderr(&second);
    assert!(err.contains("is locked by another export (pid "), "{err}");
    assert!(err.contains(&format!("pid {} on ", first.id())), "{err}");
    assert!(err.contains("hint: wait for it to finish"), "{err}");

    // A holder that dies (SIGKILL) leaves no stale lock behind.
    Command::new("kill")
        .args(["-KILL", &first.id().to_string()])
        .status()
        .unwrap();
    let mut first = first;
    first.wait().unwrap();
    let third = export(&sim, dir.path(), &["--all-workflows"]);
    assert_ok(&third);
    let id = sim.ids()[0].clone();
    assert_dataset_matches(dir.path(), &id, &sim.server.records(&id), 0);
}

#[test]
fn killing_exports_at_any_moment_loses_and_duplicates_nothing() {
    let sim = Sim::start(SimConfig {
        workflows: 3,
        runs_per_workflow: 1500,
        latency: Duration::from_millis(4),
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let spawn = || {
        spawn_export(
            &sim,
            dir.path(),
            &["--all-workflows", "--page-size", "50", "--concurrency", "4"],
        )
    };
    // Time one export into a scratch folder to place the kills across its whole life,
    // fetching and committing alike.
    let scratch = tempfile::tempdir().unwrap();
    let started = Instant::now();
    assert_ok(&export(
        &sim,
        scratch.path(),
        &["--all-workflows", "--page-size", "50", "--concurrency", "4"],
    ));
    let whole = started.elapsed();
    // SIGKILL, then: whatever the moment, every reader can open the dataset and no key is
    // duplicated. 1 when the dataset held data by then.
    let kill_and_check = |mut child: std::process::Child| {
        Command::new("kill")
            .args(["-KILL", &child.id().to_string()])
            .status()
            .unwrap();
        child.wait().unwrap();
        assert_unique_keys(dir.path());
        usize::from(!read_table(dir.path(), "runs").1.is_empty())
    };
    let mut killed_with_data = 0;
    for (round, fraction) in [0.05, 0.2, 0.35, 0.5, 0.65, 0.8, 0.9, 0.95, 0.99]
        .into_iter()
        .enumerate()
    {
        if round % 3 == 2 {
            sim.server.add_runs(round % 3, 25);
        }
        let child = spawn();
        std::thread::sleep(whole.mul_f64(fraction));
        killed_with_data += kill_and_check(child);
    }
    if killed_with_data == 0 {
        // A loaded machine ran every export slower than the timed one: kill one export only
        // once its first commit is visible, so the kill-after-commit case is always covered.
        let child = spawn();
        let deadline = Instant::now() + Duration::from_secs(120);
        while parquet_files(&dir.path().join("runs")).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        killed_with_data += kill_and_check(child);
    }
    assert!(killed_with_data > 0, "no kill landed after a commit");
    let out = export(&sim, dir.path(), &["--all-workflows", "--page-size", "50"]);
    assert_ok(&out);
    for id in sim.ids() {
        assert_dataset_matches(dir.path(), &id, &sim.server.records(&id), 0);
    }
    assert_unique_keys(dir.path());
    let leftovers: Vec<_> = walk_names(dir.path())
        .into_iter()
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(
        !dir.path()
            .join("_staging")
            .read_dir()
            .is_ok_and(|mut d| d.next().is_some())
    );
}

fn walk_names(dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            names.extend(walk_names(&p));
        } else {
            names.push(p.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    names
}

#[test]
fn a_hundred_hourly_reruns_keep_one_file_per_partition() {
    // ~1 run an hour: 1,000 runs over 42 days.
    let sim = Sim::start(SimConfig {
        workflows: 1,
        runs_per_workflow: 1000,
        ..SimConfig::default()
    });
    let id = sim.ids()[0].clone();
    let dir = tempfile::tempdir().unwrap();
    assert_ok(&export(&sim, dir.path(), &["--workflow", &id]));
    for _ in 0..100 {
        sim.server.add_runs(0, 1);
        assert_ok(&export(&sim, dir.path(), &["--workflow", &id]));
    }
    assert_dataset_matches(dir.path(), &id, &sim.server.records(&id), 0);
    let partitions = std::fs::read_dir(dir.path().join("runs")).unwrap().count();
    let files = partition_files(dir.path());
    // One file per partition and table, plus nothing else.
    assert_eq!(
        files,
        3 * partitions,
        "{files} files for {partitions} partitions"
    );
    println!("after 100 hourly re-runs: {partitions} partitions, {files} Parquet files");
}

#[test]
fn a_config_file_drives_the_export_and_flags_override_it() {
    let sim = Sim::start(SimConfig {
        workflows: 2,
        runs_per_workflow: 120,
        ..SimConfig::default()
    });
    let [a, b] = [sim.ids()[0].clone(), sim.ids()[1].clone()];
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("export.toml");
    std::fs::write(
        &config,
        format!(
            "base_url = \"{}\"\nworkflows = [\"{a}\"]\nout = \"dataset\"\npage_size = 50\nconcurrency = 1\nlookback = \"2h\"\n",
            sim.url()
        ),
    )
    .unwrap();
    let out = run(&["export", "--config", config.to_str().unwrap()]);
    assert_ok(&out);
    assert_eq!(offsets(&sim.paths(), &a), [0, 49, 98, 119]);
    let dataset = dir.path().join("dataset");
    assert_dataset_matches(&dataset, &a, &sim.server.records(&a), 0);

    // Flags win: another workflow and page size, same dataset folder from the file.
    let from = sim.paths().len();
    let out = run(&[
        "export",
        "--config",
        config.to_str().unwrap(),
        "--workflow",
        &b,
        "--page-size",
        "100",
    ]);
    assert_ok(&out);
    assert_eq!(offsets(&sim.paths()[from..], &b), [0, 99, 119]);
    assert!(offsets(&sim.paths()[from..], &a).is_empty());
    assert_dataset_matches(&dataset, &b, &sim.server.records(&b), 0);

    std::fs::write(&config, "api_key = \"sk-live-123\"\n").unwrap();
    let out = run(&["export", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert_stderr_contains(&out, "`api_key` is not allowed");
    assert!(!stderr(&out).contains("sk-live-123"));
}

#[test]
fn a_queued_run_that_starts_later_is_stored_once_even_without_state() {
    let queued = json!({"id": "q", "status": "queued", "start_time": null, "all_outputs": {}, "inputs": {"a": 1}});
    let done = json!({"id": "d", "status": "completed", "start_time": "2025-03-12T08:00:00Z",
                      "end_time": "2025-03-12T08:00:05Z", "all_outputs": {"m": "x"}, "inputs": {}});
    let sim = Sim::start(SimConfig {
        workflows: 0,
        fixtures: vec![fixture("fx", vec![queued, done.clone()])],
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    assert_ok(&export(&sim, dir.path(), &["--workflow", "fx"]));
    let started = json!({"id": "q", "status": "completed", "start_time": "2025-03-13T09:00:00Z",
                         "end_time": "2025-03-13T09:00:02Z", "all_outputs": {"m": "y"}, "inputs": {"a": 1}});
    sim.server
        .set_fixture_records("fx", vec![started.clone(), done.clone()]);
    // `--full` ignores the state that remembers `q` as unfinished: the commit still moves it.
    assert_ok(&export(&sim, dir.path(), &["--workflow", "fx", "--full"]));
    assert_unique_keys(dir.path());
    assert_dataset_matches(dir.path(), "fx", &[started, done], 0);
    assert!(
        !dir.path()
            .join("runs/date=__HIVE_DEFAULT_PARTITION__/part-0.parquet")
            .exists()
    );
}

#[test]
fn an_unfinished_run_that_cannot_be_fetched_again_is_kept_for_the_next_export() {
    let run = |id: &str, h: u32, status: &str| {
        json!({"id": id, "status": status, "start_time": format!("2025-03-12T{h:02}:00:00Z"),
               "end_time": if status == "running" { Value::Null } else { json!(format!("2025-03-12T{h:02}:30:00Z")) },
               "all_outputs": {}, "inputs": {}})
    };
    let records = vec![
        run("r3", 10, "completed"),
        run("r2", 9, "completed"),
        run("r15", 7, "completed"),
        run("r1", 5, "running"),
    ];
    let sim = Sim::start(SimConfig {
        workflows: 0,
        fixtures: vec![fixture("fx", records.clone())],
        faults: vec![orchestra_export::simulate::Fault::status(
            "/runs/r1", 500, 1,
        )],
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    assert_ok(&export(&sim, dir.path(), &["--workflow", "fx"]));
    let mut finished = records.clone();
    finished[3] = run("r1", 5, "completed");
    sim.server.set_fixture_records("fx", finished);
    // r1 is beyond the look-back (paging stops after r15), so it is fetched by id; the first
    // try fails.
    let args = ["--workflow", "fx", "--page-size", "1", "--max-retries", "0"];
    let out = export(&sim, dir.path(), &args);
    assert_ok(&out);
    assert!(
        stdout(&out).contains("1 could not be fetched (kept for the next export)"),
        "{}",
        stdout(&out)
    );
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("_state/fx.json")).unwrap())
            .unwrap();
    assert_eq!(state["unfinished"][0]["run_id"], "r1", "{state}");
    let out = export(&sim, dir.path(), &args);
    assert_ok(&out);
    assert!(
        stdout(&out).contains("unfinished runs: 1 fetched again"),
        "{}",
        stdout(&out)
    );
    let (_, runs) = read_table(dir.path(), "runs");
    assert_eq!(
        select(&runs, "run_id", "r1")[0]["status"],
        text("completed")
    );
}

#[test]
fn unfinished_runs_are_fetched_again_at_most_a_thousand_per_export_and_the_rest_next_time() {
    // 1,300 runs still running, hours older than the newest run: beyond the look-back, so each
    // is fetched again by id.
    let t = |minutes: i64| {
        (chrono::DateTime::parse_from_rfc3339("2025-03-12T12:00:00Z").unwrap()
            - chrono::Duration::minutes(minutes))
        .to_rfc3339()
    };
    let mut records = vec![
        json!({"id": "newest", "status": "completed", "start_time": t(0),
                                  "end_time": t(0), "all_outputs": {}}),
    ];
    for i in 0..1300 {
        records.push(json!({"id": format!("r{i:04}"), "status": "running",
                            "start_time": t(180 + i), "all_outputs": {}}));
    }
    let sim = Sim::start(SimConfig {
        workflows: 0,
        fixtures: vec![fixture("fx", records)],
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    assert_ok(&export(&sim, dir.path(), &["--workflow", "fx"]));
    let by_id = |paths: &[String]| {
        paths
            .iter()
            .filter(|p| p.contains("/workflows/fx/runs/r"))
            .count()
    };
    let from = sim.paths().len();
    let out = export(&sim, dir.path(), &["--workflow", "fx"]);
    assert_ok(&out);
    let first = by_id(&sim.paths()[from..]);
    assert_eq!(first, 1000, "fetched again by id");
    let text = stdout(&out);
    assert!(
        text.contains("unfinished runs: 1000 fetched again"),
        "{text}"
    );
    let deferred = number(&text, " left for the next export");
    assert!(deferred > 0 && deferred + 1000 <= 1300, "{text}");
    // `_SUCCESS` holds the manifest of the export that wrote it.
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("_SUCCESS")).unwrap())
            .unwrap();
    assert_eq!(
        manifest["workflows"][0]["unfinished_deferred"],
        json!(deferred)
    );

    // The next export starts with those left over.
    let from = sim.paths().len();
    assert_ok(&export(&sim, dir.path(), &["--workflow", "fx"]));
    let fetched: BTreeMap<String, ()> = sim.paths()[from..]
        .iter()
        .filter_map(|p| p.rsplit_once("/runs/").map(|(_, id)| (id.to_owned(), ())))
        .filter(|(id, _)| id.starts_with('r'))
        .collect();
    let never_before: Vec<&String> = fetched
        .keys()
        .filter(|id| {
            !sim.paths()[..from]
                .iter()
                .any(|p| p.ends_with(&format!("/runs/{id}")))
        })
        .collect();
    assert_eq!(
        never_before.len() as u64,
        deferred,
        "the deferred runs came first"
    );
}
