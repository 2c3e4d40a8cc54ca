//! What a newcomer and an operator see: help that teaches, one syntax for durations and sizes
//! from flags and the config file alike, `--dry-run`, `--quiet`, `--since`, and a folder that is
//! not a dataset left alone.

use orchestra_export::simulate::SimConfig;

use crate::support::*;

#[test]
fn export_help_groups_options_and_shows_environment_exit_codes_and_examples() {
    // Set, the environment must not show its values (`[env: ORCHESTRA_SHARD=]` was one).
    let out = run_with_env(&["export", "--help"], &[("ORCHESTRA_SHARD", "")]);
    assert_ok(&out);
    let help = stdout(&out);
    let usage = "Usage: orchestra-export export [OPTIONS] <--workflow ID|--workflows-file PATH|--all-workflows>";
    assert!(help.contains(usage), "{help}");
    let mut at = 0;
    for heading in [
        "What to export:",
        "The API:",
        "Where:",
        "Re-runs:",
        "Output:",
        "Limits and retries:",
        "Logging and output:",
        "Environment:",
        "Exit codes:",
        "Examples:",
    ] {
        let found = help[at..].find(&format!("\n{heading}\n"));
        assert!(
            found.is_some(),
            "`{heading}` missing or out of order:\n{help}"
        );
        at += found.unwrap();
    }
    for needle in [
        "ORCHESTRA_API_KEY",
        "ORCHESTRA_BASE_URL",
        "ORCHESTRA_SHARD",
        "ORCHESTRA_LOCK_LEASE",
        "AWS_*, GOOGLE_*, AZURE_*",
        "    0  every workflow exported completely",
        "  130  interrupted",
        "--dry-run",
        "--since <DATE>",
        "--request-timeout <DURATION>",
        "--max-response-size <SIZE>",
    ] {
        assert!(help.contains(needle), "`{needle}` missing:\n{help}");
    }
    assert!(
        !help.contains("=]"),
        "an empty environment value is shown:\n{help}"
    );
    let demo = stdout(&run(&["demo", "--help"]));
    for needle in [
        "with their steps",
        "_reports",
        "is replaced",
        "left untouched",
    ] {
        assert!(demo.contains(needle), "`{needle}` missing:\n{demo}");
    }
}

#[test]
fn durations_and_sizes_read_the_same_from_flags_and_the_config_file() {
    let sim = Sim::start(SimConfig {
        workflows: 1,
        runs_per_workflow: 30,
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("export.toml");
    std::fs::write(
        &config,
        "all_workflows = true\nrequest_timeout = 60\nretry_delay = \"250ms\"\nmax_response_size = \"512MB\"\nlookback = \"1h30m\"\n",
    )
    .unwrap();
    let out = dir.path().join("data");
    let from_file = export(&sim, &out, &["--config", config.to_str().unwrap()]);
    assert_ok(&from_file);
    let from_flags = export(
        &sim,
        &out,
        &[
            "--all-workflows",
            "--request-timeout",
            "1m",
            "--retry-delay",
            "0.25",
            "--max-response-size",
            "536870912",
            "--lookback",
            "5400",
        ],
    );
    assert_ok(&from_flags);
    // Both exports recorded the same effective settings.
    let mut settings: Vec<serde_json::Value> = std::fs::read_dir(out.join("_manifest"))
        .unwrap()
        .map(|e| {
            let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
            serde_json::from_str::<serde_json::Value>(&text).unwrap()["settings"].clone()
        })
        .collect();
    assert_eq!(settings.len(), 2);
    assert_eq!(settings[0], settings[1]);
    let s = settings.pop().unwrap();
    assert_eq!(s["request_timeout"], "1m");
    assert_eq!(s["retry_delay"], "250ms");
    assert_eq!(s["max_response_size"], 512 << 20);
    assert_eq!(s["lookback"], "1h30m");
}

#[test]
fn dry_run_says_what_each_workflow_would_resume_from_and_requests_no_runs() {
    let sim = Sim::start(SimConfig {
        workflows: 4,
        runs_per_workflow: 40,
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("data");
    // Before any export: a first export for each, and the folder is not even created.
    let first = export(&sim, &out, &["--all-workflows", "--dry-run"]);
    assert_ok(&first);
    let text = stdout(&first);
    assert!(
        text.starts_with("dry run: 4 workflows would be exported into `"),
        "{text}"
    );
    assert_eq!(
        text.matches(": first export: the whole history\n").count(),
        4,
        "{text}"
    );
    assert!(
        text.contains("Support triage 1 (`"),
        "names, not only ids:\n{text}"
    );
    assert!(!out.exists(), "a dry run wrote {}", out.display());
    assert!(
        sim.paths().iter().all(|p| !p.contains("/runs")),
        "a dry run requested runs: {:?}",
        sim.paths()
    );
    // After one: where each resumes.
    assert_ok(&export(&sim, &out, &["--all-workflows"]));
    let before = sim.paths().len();
    let again = export(&sim, &out, &["--all-workflows", "--dry-run"]);
    assert_ok(&again);
    let text = stdout(&again);
    assert_eq!(text.matches(": resumes after 20").count(), 4, "{text}");
    assert!(text.contains("(re-reading 1h before it)"), "{text}");
    assert!(!text.contains("first export"), "{text}");
    let requests = sim.paths()[before..].to_vec();
    assert_eq!(requests.len(), 1, "only the workflow list: {requests:?}");
    // One shard's share; a sharded run into an unsharded dataset is refused as the export
    // would refuse it.
    let fresh = dir.path().join("fresh");
    let shard = export(
        &sim,
        &fresh,
        &["--all-workflows", "--dry-run", "--shard", "1/2"],
    );
    assert_ok(&shard);
    assert!(
        stdout(&shard).contains("\n  shard 1/2: "),
        "{}",
        stdout(&shard)
    );
    let refused = export(
        &sim,
        &out,
        &["--all-workflows", "--dry-run", "--shard", "1/2"],
    );
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
}

#[test]
fn since_bounds_a_first_export_and_never_skips_runs_after_the_stored_ones() {
    let sim = Sim::start(SimConfig {
        workflows: 1,
        runs_per_workflow: 600,
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let id = sim.ids()[0].clone();
    let records = sim.server.records(&id);
    let starts: Vec<i64> = records
        .iter()
        .filter_map(|r| r["start_time"].as_str())
        .map(micros)
        .collect();
    let (oldest, newest) = (*starts.iter().min().unwrap(), *starts.iter().max().unwrap());
    // A day in the middle of the history.
    let middle = chrono::DateTime::from_timestamp_micros((oldest + newest) / 2).unwrap();
    let day = middle.format("%Y-%m-%d").to_string();
    let day_start = micros(&format!("{day}T00:00:00Z"));
    let out = export(
        &sim,
        dir.path(),
        &["--workflow", &id, "--since", &day, "--page-size", "20"],
    );
    assert_ok(&out);
    let (_, runs) = read_table(dir.path(), "runs");
    let want = starts.iter().filter(|s| **s >= day_start).count();
    let stored_since = runs
        .iter()
        .filter(|r| matches!(r["start_time"], Cell::Micros(t) if t >= day_start))
        .count();
    assert_eq!(stored_since, want, "every run since {day}");
    // Pages in flight past the day bring older runs: they are not stored.
    assert_eq!(runs.len(), want, "only runs since {day}");
    let requests = sim.paths().len();
    assert!(
        requests < records.len() / 20,
        "{requests} requests: the whole history was read"
    );
    // `--full` reads everything: a bound with it would leave a gap, so the two are refused.
    let both = export(
        &sim,
        dir.path(),
        &["--workflow", &id, "--full", "--since", &day],
    );
    assert_eq!(both.status.code(), Some(2), "{}", stderr(&both));
    assert_stderr_contains(&both, "cannot be used with");
    // A --since after the stored runs does not skip the runs that arrive in between.
    sim.server.add_runs(0, 5);
    let later = export(
        &sim,
        dir.path(),
        &["--workflow", &id, "--since", "2999-01-01"],
    );
    assert_ok(&later);
    assert!(stdout(&later).contains("5 new"), "{}", stdout(&later));
}

#[test]
fn quiet_prints_nothing_on_success_and_still_says_why_on_failure() {
    let sim = Sim::start(SimConfig {
        workflows: 1,
        runs_per_workflow: 10,
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let ok = export(&sim, dir.path(), &["--all-workflows", "-q"]);
    assert_ok(&ok);
    assert_eq!(stdout(&ok), "");
    assert_eq!(stderr(&ok), "");
    let failed = export(&sim, dir.path(), &["--workflow", "nope", "--quiet"]);
    assert_eq!(failed.status.code(), Some(1));
    assert_eq!(stdout(&failed), "");
    assert!(
        stderr(&failed).starts_with("error: workflow `nope` failed: "),
        "{}",
        stderr(&failed)
    );
    let report = run(&["report", "--data", dir.path().to_str().unwrap(), "-q"]);
    assert_ok(&report);
    assert_eq!(stdout(&report), "");
    assert!(dir.path().join("_reports/report.html").exists());
}

#[test]
fn export_into_a_folder_that_is_not_a_dataset_is_refused_and_left_untouched() {
    let sim = Sim::start(SimConfig {
        workflows: 1,
        runs_per_workflow: 10,
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
    let out = export(&sim, dir.path(), &["--all-workflows"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_stderr_contains(
        &out,
        "is not empty and is not an orchestra-export dataset (it holds `notes.txt`); it is left untouched\nhint: pass a new or empty folder, or the `--out` of an earlier export\n",
    );
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["notes.txt"], "the folder was changed");
    assert!(
        sim.server.requests().is_empty(),
        "it fetched before refusing"
    );
    // A Spark output folder (its `_SUCCESS` and parts) is somebody else's too.
    let spark = dir.path().join("spark");
    std::fs::create_dir(&spark).unwrap();
    std::fs::write(spark.join("_SUCCESS"), b"").unwrap();
    std::fs::write(spark.join("part-00000.csv"), b"a,b\n").unwrap();
    let out = export(&sim, &spark, &["--all-workflows"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_stderr_contains(&out, "(it holds `_SUCCESS`, `part-00000.csv`)");
    // A dataset with a file of the user's beside it is still a dataset.
    let data = dir.path().join("data");
    assert_ok(&export(&sim, &data, &["--all-workflows"]));
    std::fs::write(data.join("README.txt"), b"ours").unwrap();
    assert_ok(&export(&sim, &data, &["--all-workflows"]));
}
