//! Histories that change while they are paged: runs arriving at the head, deleted from the
//! middle, purged from the tail, answers overtaking each other, and an API that accepts only
//! aligned offsets. Each test checks what must hold under any drift: every run that existed for
//! the whole export is stored exactly once (or its workflow fails loudly and a re-run completes
//! it), and nothing is stored that the API never had.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use orchestra_export::simulate::{Drift, SimConfig};
use serde_json::Value;

use crate::support::*;

/// A simulator whose histories drift while they are paged.
fn drifting(config: SimConfig, drift: Drift) -> Sim {
    Sim::start(SimConfig {
        drift: Some(drift),
        ..config
    })
}

fn config(workflows: usize, runs: u64, page_cap: Option<usize>) -> SimConfig {
    SimConfig {
        workflows,
        runs_per_workflow: runs,
        page_cap,
        ..SimConfig::default()
    }
}

/// The run ids each generated workflow serves now.
fn history_ids(sim: &Sim) -> Vec<BTreeSet<String>> {
    sim.server
        .workflows()
        .iter()
        .map(|w| record_ids(&sim.server.records(&w.id)))
        .collect()
}

fn record_ids(records: &[Value]) -> BTreeSet<String> {
    records
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

/// What a drifting workflow served: its run ids when the export began and when it ended.
struct Drifted {
    id: String,
    before: BTreeSet<String>,
    after: BTreeSet<String>,
}

/// Checks the dataset in `out` against what `sim` served before and after the exports: every
/// run that existed throughout is stored, exactly once, and every run stored is one the API had.
fn assert_drift_safe(sim: &Sim, out: &Path, before: &[BTreeSet<String>]) -> Vec<Drifted> {
    let stored = stored_ids(out);
    let after = history_ids(sim);
    let mut drifted = Vec::new();
    for (i, wf) in sim.server.workflows().iter().enumerate() {
        let got = stored.get(&wf.id).cloned().unwrap_or_default();
        let missing: Vec<_> = before[i]
            .intersection(&after[i])
            .filter(|run| !got.contains(*run))
            .collect();
        assert!(
            missing.is_empty(),
            "{}: {} runs lost: {missing:?}",
            wf.id,
            missing.len()
        );
        let invented: Vec<_> = got
            .iter()
            .filter(|run| !sim.server.knows_run(i, run))
            .collect();
        assert!(
            invented.is_empty(),
            "{}: runs the API never had: {invented:?}",
            wf.id
        );
        drifted.push(Drifted {
            id: wf.id.clone(),
            before: before[i].clone(),
            after: after[i].clone(),
        });
    }
    drifted
}

/// Exports `sim` while its histories drift and expects success and a drift-safe dataset.
fn export_while_drifting(
    sim: &Sim,
    extra: &[&str],
    name: &str,
) -> (std::process::Output, Vec<Drifted>) {
    let before = history_ids(sim);
    let dir = tempfile::tempdir().unwrap();
    let out = export_all(sim, dir.path(), extra);
    assert_ok(&out);
    let drifted = assert_drift_safe(sim, dir.path(), &before);
    let existed = drifted.iter().map(|d| d.before.len()).sum();
    fault_report(name, sim, dir.path(), existed);
    (out, drifted)
}

#[test]
fn runs_arriving_during_the_export_are_all_exported_exactly_once() {
    let drift = Drift {
        insert_per_page: 3,
        jitter: Duration::from_millis(25),
        ..Drift::default()
    };
    let sim = drifting(config(3, 1200, None), drift);
    let extra = ["--page-size", "50", "--concurrency", "8"];
    let (out, drifted) = export_while_drifting(
        &sim,
        &extra,
        "drift: 3 runs inserted per page, 25 ms jitter",
    );
    for d in &drifted {
        assert!(d.after.len() > d.before.len(), "{}: no run arrived", d.id);
    }
    let text = stdout(&out);
    assert!(
        number(&text, " pages shifted by runs arriving") > 0,
        "{text}"
    );
    // Re-reads happen when answers overtake each other; they are counted, whatever their number.
    number(&text, " pages re-read");
    assert_eq!(number(&text, " runs vanished upstream"), 0, "{text}");
    let drift_line = text
        .lines()
        .find(|l| l.contains("drift:"))
        .unwrap_or_default();
    println!("fault-report-detail | {}", drift_line.trim());
}

#[test]
fn runs_deleted_from_the_middle_while_paging_are_never_lost_silently() {
    // Every page request deletes runs above the offset it asked for (so every later run
    // slides toward the head), adds runs at the head and purges the tail; answers overtake
    // each other. Before paging joined every page to a stored run, such exports exited 0 with
    // runs missing that existed for the whole export.
    let drift = Drift {
        insert_per_page: 2,
        delete_per_page: 2,
        purge_per_page: 1,
        jitter: Duration::from_millis(15),
    };
    let mut vanished = 0;
    for seed in 1..=5 {
        let sim = drifting(
            SimConfig {
                seed,
                ..config(3, 700, None)
            },
            drift,
        );
        let before = history_ids(&sim);
        let dir = tempfile::tempdir().unwrap();
        let extra = ["--page-size", "50", "--concurrency", "8"];
        let first = export_all(&sim, dir.path(), &extra);
        match first.status.code() {
            Some(0) => vanished += number(&stdout(&first), " runs vanished upstream"),
            // Loudly incomplete: each failed workflow is named, and the next export completes it.
            Some(1) => {
                assert_stderr_contains(&first, "export is incomplete");
                assert_ok(&export_all(&sim, dir.path(), &extra));
            }
            other => panic!("seed {seed}: exit {other:?}\n{}", stderr(&first)),
        }
        let drifted = assert_drift_safe(&sim, dir.path(), &before);
        for d in &drifted {
            assert!(
                !d.before.is_subset(&d.after),
                "{}: nothing was deleted",
                d.id
            );
        }
        if seed == 1 {
            let existed = drifted.iter().map(|d| d.before.len()).sum();
            let name =
                "drift: 2 deleted above the offset + 2 inserted + 1 purged per page, 15 ms jitter";
            fault_report(name, &sim, dir.path(), existed);
        }
    }
    assert!(vanished > 0, "no run was seen to vanish");
}

#[test]
fn runs_purged_from_the_tail_during_the_export_are_never_duplicated() {
    let drift = Drift {
        insert_per_page: 1,
        purge_per_page: 7,
        jitter: Duration::from_millis(10),
        ..Drift::default()
    };
    let sim = drifting(config(2, 1500, None), drift);
    let extra = ["--page-size", "50", "--concurrency", "4"];
    let name = "drift: 7 runs purged + 1 inserted per page (runs existing at start)";
    for d in export_while_drifting(&sim, &extra, name).1 {
        assert!(
            d.after.len() < d.before.len(),
            "{}: nothing was purged",
            d.id
        );
    }
}

#[test]
fn a_history_purged_while_its_end_is_read_ends_cleanly() {
    // Runs arrive at the head and leave from the tail on every request, pages are capped: the
    // run that ended the last page read is purged before the next answer.
    let drift = Drift {
        insert_per_page: 3,
        purge_per_page: 1,
        jitter: Duration::from_millis(25),
        ..Drift::default()
    };
    let sim = drifting(config(4, 1000, Some(50)), drift);
    let name = "drift: 3 inserted + 1 purged per page, pages capped at 50";
    for d in export_while_drifting(&sim, &["--concurrency", "8"], name).1 {
        assert!(
            !d.before.is_subset(&d.after),
            "{}: nothing was purged",
            d.id
        );
    }
}

/// The manifest of the only export in `out`.
fn only_manifest(out: &Path) -> Value {
    let dir = out.join("_manifest");
    let mut entries = std::fs::read_dir(&dir).unwrap();
    let path = entries.next().unwrap().unwrap().path();
    assert!(entries.next().is_none());
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn an_api_that_accepts_only_aligned_offsets_is_exported_completely() {
    let sim = Sim::start(SimConfig {
        aligned_offsets: true,
        ..config(3, 700, None)
    });
    let dir = tempfile::tempdir().unwrap();
    let out = export_all(&sim, dir.path(), &["--page-size", "100"]);
    assert_ok(&out);
    for wf in sim.server.workflows() {
        assert_dataset_matches(dir.path(), &wf.id, &sim.server.records(&wf.id), 0);
    }
    // The first unaligned page of each workflow is refused (with the one requested ahead of
    // it), then only aligned pages are asked for; one warning per workflow.
    let log = sim.server.requests();
    for wf in sim.server.workflows() {
        let asked: Vec<_> = log
            .iter()
            .filter(|r| r.path_and_query.contains(&wf.id))
            .collect();
        let refused = asked.iter().filter(|r| r.status == 400).count();
        assert!((1..=2).contains(&refused), "{}: {refused} refused", wf.id);
        let first_ok_after = asked.iter().rposition(|r| r.status == 400).unwrap() + 1;
        for r in &asked[first_ok_after..] {
            let query = r.path_and_query.split_once('?').unwrap().1;
            let (limit, offset) = query.split_once('&').unwrap();
            let limit: u64 = limit.trim_start_matches("limit=").parse().unwrap();
            let offset: u64 = offset.trim_start_matches("offset=").parse().unwrap();
            assert_eq!(offset % limit, 0, "{}", r.path_and_query);
            assert_eq!(r.status, 200, "{}", r.path_and_query);
        }
    }
    let warnings = stderr(&out)
        .lines()
        .filter(|l| l.contains("paging this workflow with aligned pages"))
        .count();
    assert_eq!(warnings, 3, "{}", stderr(&out));
    let manifest = only_manifest(dir.path());
    assert_eq!(manifest["status"], "ok");
    for w in manifest["workflows"].as_array().unwrap() {
        assert_eq!(w["aligned_offsets"], true, "{w}");
    }
    assert!(
        stdout(&out).contains("paged with aligned pages"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn an_aligned_only_api_whose_history_drifts_loses_nothing() {
    let drift = Drift {
        insert_per_page: 2,
        delete_per_page: 1,
        jitter: Duration::from_millis(15),
        ..Drift::default()
    };
    let sim = drifting(
        SimConfig {
            aligned_offsets: true,
            ..config(3, 700, None)
        },
        drift,
    );
    let extra = ["--page-size", "50", "--concurrency", "8"];
    export_while_drifting(
        &sim,
        &extra,
        "drift on an aligned-only API: 2 inserted + 1 deleted per page",
    );
}
