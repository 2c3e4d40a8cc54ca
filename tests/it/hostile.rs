//! A hostile API: one test per injected fault, drift, rate limit and resource limit, each
//! asserting on the dataset's exact contents and on the simulator's request log.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use orchestra_export::simulate::{Fault, FaultKind, RateLimit, RetryAfter, Schedule, SimConfig};

use crate::support::*;

/// Ids of the workflows a simulator with this many generated workflows serves (they depend on
/// the seed only, so faults can name them before the faulty simulator starts).
fn generated_ids(workflows: usize) -> Vec<String> {
    let sim = Sim::start(SimConfig {
        workflows,
        runs_per_workflow: 1,
        ..SimConfig::default()
    });
    sim.ids()
}

fn sim(workflows: usize, runs: u64, faults: Vec<Fault>) -> Sim {
    Sim::start(SimConfig {
        workflows,
        runs_per_workflow: runs,
        faults,
        ..SimConfig::default()
    })
}

/// Every generated workflow's dataset equals what the simulator serves now, run for run.
fn assert_exact(sim: &Sim, out: &Path) {
    for wf in sim.server.workflows() {
        assert_dataset_matches(out, &wf.id, &sim.server.records(&wf.id), 0);
    }
}

/// Exports every workflow of `sim` into a new folder, expecting success and a dataset equal,
/// run for run, to what the simulator serves.
fn export_exact(sim: &Sim, extra: &[&str]) -> (tempfile::TempDir, std::process::Output) {
    let dir = tempfile::tempdir().unwrap();
    let out = export_all(sim, dir.path(), extra);
    assert_ok(&out);
    assert_exact(sim, dir.path());
    (dir, out)
}

fn answered(sim: &Sim, status: u16) -> usize {
    sim.server
        .requests()
        .iter()
        .filter(|r| r.status == status)
        .count()
}

#[test]
fn http_429_is_waited_out_whether_retry_after_is_seconds_or_a_date() {
    let sim = sim(
        1,
        300,
        vec![
            Fault::status("offset=0", 429, 1).with_retry_after(RetryAfter::Seconds(1)),
            Fault::status("offset=99", 429, 1).with_retry_after(RetryAfter::HttpDate(1)),
        ],
    );
    let (dir, out) = export_exact(&sim, &["--concurrency", "1"]);
    assert_eq!(sim.server.injected(), [1, 1]);
    let log = sim.server.requests();
    // Every request carried the key and offered compressed bodies.
    for r in &log {
        for header in ["authorization", "accept-encoding", "user-agent"] {
            assert!(r.headers.iter().any(|h| h == header), "{header}: {r:?}");
        }
    }
    for page in ["offset=0", "offset=99"] {
        let tries: Vec<_> = log
            .iter()
            .filter(|r| r.path_and_query.ends_with(page))
            .collect();
        assert_eq!(tries.len(), 2, "{page}: one 429, one retry");
        assert_eq!((tries[0].status, tries[1].status), (429, 200));
        let waited = tries[1].received_at - tries[0].received_at;
        assert!(
            waited >= Duration::from_millis(950),
            "{page}: retried after {waited:?}"
        );
    }
    let text = stdout(&out);
    assert_eq!(number(&text, " answers were 429"), 2, "{text}");
    assert_eq!(number(&text, " retries"), 2, "{text}");
    fault_report(
        "429 with Retry-After (seconds and HTTP-date)",
        &sim,
        dir.path(),
        total_runs(&sim),
    );
}

#[test]
fn server_errors_at_a_rate_are_retried_to_an_exact_dataset() {
    let faults = [500, 502, 503, 504]
        .into_iter()
        .map(|status| Fault::status("/runs", status, 0).on(Schedule::Rate(0.05)))
        .collect();
    let sim = sim(3, 900, faults);
    let (dir, out) = export_exact(&sim, &["--concurrency", "1", "--page-size", "50"]);
    let injected: u64 = sim.server.injected().iter().sum();
    assert!(injected >= 3, "the rate injected only {injected} faults");
    let errors: usize = [500, 502, 503, 504]
        .iter()
        .map(|s| answered(&sim, *s))
        .sum();
    assert_eq!(errors as u64, injected);
    // One page at a time: each fault costs exactly one retry and one request.
    let text = stdout(&out);
    assert_eq!(number(&text, " retries"), injected, "{text}");
    assert_eq!(
        number(&text, " requests") as usize,
        sim.server.requests().len()
    );
    assert_eq!(
        sim.server.requests().len() as u64,
        answered(&sim, 200) as u64 + injected
    );
    fault_report(
        "500/502/503/504 at 5% each",
        &sim,
        dir.path(),
        total_runs(&sim),
    );
}

#[test]
fn connections_reset_mid_body_are_retried() {
    let fault = Fault::new("/runs", FaultKind::ResetMidBody, 0).on(Schedule::Rate(0.15));
    let sim = sim(2, 1000, vec![fault]);
    let (dir, out) = export_exact(&sim, &["--concurrency", "1"]);
    let injected = sim.server.injected()[0];
    assert!(injected >= 2, "{injected}");
    assert_eq!(
        number(&stdout(&out), " retries"),
        injected,
        "{}",
        stdout(&out)
    );
    assert_stderr_contains(&out, "connection broken");
    fault_report(
        "connection reset mid-body at 15%",
        &sim,
        dir.path(),
        total_runs(&sim),
    );
}

#[test]
fn bodies_cut_mid_json_are_fetched_again() {
    let fault = Fault::new("/runs", FaultKind::TruncatedBody, 0).on(Schedule::Rate(0.15));
    let sim = sim(2, 1000, vec![fault]);
    let (dir, out) = export_exact(&sim, &["--concurrency", "1"]);
    let injected = sim.server.injected()[0];
    assert!(injected >= 2, "{injected}");
    let text = stdout(&out);
    assert_eq!(
        number(&text, " unreadable pages fetched again"),
        injected,
        "{text}"
    );
    assert_eq!(number(&text, " retries"), injected, "{text}");
    assert_stderr_contains(&out, "unreadable page");
    fault_report(
        "body truncated mid-JSON at 15%",
        &sim,
        dir.path(),
        total_runs(&sim),
    );
}

#[test]
fn a_response_that_hangs_past_the_timeout_is_retried() {
    let sim = sim(
        1,
        250,
        vec![Fault::new(
            "offset=99",
            FaultKind::Hang(Duration::from_secs(5)),
            2,
        )],
    );
    let (dir, out) = export_exact(&sim, &["--concurrency", "1", "--request-timeout", "0.5"]);
    assert_eq!(sim.server.injected(), [2]);
    assert_eq!(number(&stdout(&out), " retries"), 2);
    assert_stderr_contains(&out, "timed out");
    fault_report(
        "response hangs 5 s past a 0.5 s timeout",
        &sim,
        dir.path(),
        total_runs(&sim),
    );
}

#[test]
fn slow_bodies_are_read_to_the_end() {
    let fault = Fault::new(
        "/runs",
        FaultKind::SlowBody {
            pause: Duration::from_millis(15),
        },
        0,
    )
    .on(Schedule::Rate(0.3));
    let sim = sim(2, 600, vec![fault]);
    let (dir, out) = export_exact(&sim, &[]);
    assert!(sim.server.injected()[0] >= 2);
    assert_eq!(number(&stdout(&out), " retries"), 0);
    fault_report(
        "slow body (8 chunks, 15 ms apart) at 30%",
        &sim,
        dir.path(),
        total_runs(&sim),
    );
}

#[test]
fn a_page_malformed_once_is_fetched_again_and_one_malformed_always_fails_alone() {
    let ids = generated_ids(3);
    let sim = sim(
        3,
        300,
        vec![
            Fault::new(
                &format!("{}/runs?limit=100&offset=99", ids[0]),
                FaultKind::Malformed,
                1,
            ),
            Fault::new(&ids[1], FaultKind::Malformed, 0).on(Schedule::Always),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let out = export_all(&sim, dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    // The first page of ids[1] was tried 1 + 6 retries times, then its workflow failed.
    assert_eq!(sim.server.injected(), [1, 7]);
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "workflow `{}` failed: page at offset 0 from `{}/workflows/{}/runs?limit=100&offset=0` is unreadable after 7 attempt(s): response is not valid JSON (line 1, column 1)",
            ids[1],
            sim.url(),
            ids[1]
        )),
        "{err}"
    );
    for ok in [&ids[0], &ids[2]] {
        assert_dataset_matches(dir.path(), ok, &sim.server.records(ok), 0);
    }
    assert!(!stored_ids(dir.path()).contains_key(&ids[1]));
    assert_eq!(number(&stdout(&out), " unreadable pages fetched again"), 1);
    fault_report(
        "malformed page once + always (that workflow fails alone)",
        &sim,
        dir.path(),
        600,
    );
}

#[test]
fn a_rate_limited_api_slows_the_whole_client_instead_of_storming_it() {
    let sim = Sim::start(SimConfig {
        workflows: 6,
        runs_per_workflow: 250,
        rate_limit: Some(RateLimit {
            per_second: 20.0,
            burst: 5.0,
            http_date: false,
        }),
        ..SimConfig::default()
    });
    let (dir, out) = export_exact(&sim, &["--page-size", "50", "--concurrency", "16"]);
    let log = sim.server.requests();
    let throttled = answered(&sim, 429);
    let ok = answered(&sim, 200);
    assert_eq!(log.len(), ok + throttled);
    // Six workflows start at once against a burst of five: the limit is hit. After the first
    // 429 the whole client waits out its `Retry-After` and then paces itself below the limit,
    // so 429s stay a handful instead of multiplying with every retry.
    assert!(throttled >= 1, "the server limit was never hit");
    assert!(
        throttled <= 12,
        "{throttled} answers were 429 for {ok} pages"
    );
    let first_429 = log.iter().find(|r| r.status == 429).unwrap().received_at;
    let during_pause = log
        .iter()
        .filter(|r| r.received_at > first_429 + Duration::from_millis(50))
        .filter(|r| r.received_at < first_429 + Duration::from_millis(900))
        .count();
    assert_eq!(during_pause, 0, "requests were sent during the pause");
    assert_eq!(
        number(&stdout(&out), " answers were 429") as usize,
        throttled
    );
    fault_report(
        &format!("server rate limit 20/s burst 5 ({throttled} answers 429)"),
        &sim,
        dir.path(),
        total_runs(&sim),
    );
}

#[test]
fn max_rps_caps_the_request_rate_across_workflows() {
    let sim = sim(3, 500, vec![]);
    let (dir, _) = export_exact(
        &sim,
        &[
            "--page-size",
            "25",
            "--concurrency",
            "16",
            "--max-rps",
            "40",
        ],
    );
    let mut at: Vec<Duration> = sim
        .server
        .requests()
        .iter()
        .map(|r| r.received_at)
        .collect();
    at.sort();
    assert!(at.len() >= 60, "{}", at.len());
    for (i, start) in at.iter().enumerate() {
        let in_a_second = at[i..]
            .iter()
            .take_while(|t| **t < *start + Duration::from_secs(1))
            .count();
        assert!(in_a_second <= 42, "{in_a_second} requests within a second");
    }
    let span = at[at.len() - 1] - at[0];
    let floor = Duration::from_secs_f64((at.len() - 1) as f64 / 40.0 * 0.9);
    assert!(span >= floor, "{} requests in {span:?}", at.len());
    fault_report("--max-rps 40", &sim, dir.path(), total_runs(&sim));
}

#[test]
fn the_retry_budget_stops_a_failing_api_from_causing_a_retry_storm() {
    let sim = sim(
        300,
        1,
        vec![Fault::status("/runs", 503, 0).on(Schedule::Always)],
    );
    let dir = tempfile::tempdir().unwrap();
    let out = export_all(&sim, dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    // Without a budget: 300 × (1 + 6) = 2100 requests. With it: 300 first attempts, 100
    // retries in reserve and 20% of the first attempts (plus retries already granted when the
    // budget ran out, one per request in flight).
    let requests = sim.server.requests().len();
    assert!(requests >= 300 + 100, "{requests}");
    assert!(requests <= 300 + 100 + 60 + 8, "{requests} requests");
    assert_stderr_contains(&out, "not retried: the export already made");
    assert!(stored_ids(dir.path()).is_empty());
    fault_report(
        "503 always on 300 workflows (retry budget)",
        &sim,
        dir.path(),
        0,
    );
}

#[test]
fn a_response_larger_than_the_limit_fails_its_workflow_without_being_read() {
    let ids = generated_ids(2);
    let sim = sim(
        2,
        200,
        vec![
            Fault::new(
                &ids[0],
                FaultKind::Huge {
                    bytes: 2_000_000_000,
                },
                0,
            )
            .on(Schedule::Always),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let out = export_all(&sim, dir.path(), &["--max-response-size", "8MB"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_stderr_contains(&out, "is larger than 8388608 bytes");
    // Not retried, and reading stopped near the limit: far from the 2 GB offered.
    assert_eq!(sim.server.injected(), [1]);
    let sent = sim.server.huge_bytes_sent();
    assert!(sent < 64 << 20, "{sent} bytes were sent");
    assert_dataset_matches(dir.path(), &ids[1], &sim.server.records(&ids[1]), 0);
    assert!(!stored_ids(dir.path()).contains_key(&ids[0]));
    fault_report(
        "2 GB body vs --max-response-size 8MB",
        &sim,
        dir.path(),
        200,
    );
}

/// A small tmpfs mounted over a folder, unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> Self {
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("mount runs");
        assert!(status.success(), "mounting a tmpfs needs root");
        Self(dir.to_path_buf())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// Every file below `dir` with its bytes, except `_lock` (it names the last holder).
fn snapshot(dir: &Path) -> BTreeMap<std::path::PathBuf, Vec<u8>> {
    all_files(dir)
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n != "_lock"))
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p.strip_prefix(dir).unwrap().to_path_buf(), bytes)
        })
        .collect()
}

#[test]
fn a_full_disk_fails_with_exit_4_and_leaves_the_previous_dataset_intact() {
    let sim = sim(2, 400, vec![]);
    let dir = tempfile::tempdir().unwrap();
    let _disk = SmallDisk::mount(dir.path(), "4m");
    let out_dir = dir.path().join("dataset");
    assert_ok(&export_all(&sim, &out_dir, &[]));
    let previous = snapshot(&out_dir);
    // Far more than fits: the commit cannot happen.
    sim.server.add_runs(0, 40_000);
    let out = export_all(&sim, &out_dir, &[]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let err = stderr(&out);
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(errors[0].contains("No space left on device"), "{err}");
    assert!(errors[0].contains(out_dir.to_str().unwrap()), "{err}");
    // Nothing of the failed export remains: the dataset, its state and markers are as before.
    let after = snapshot(&out_dir);
    let changed: Vec<_> = after
        .iter()
        .filter(|(p, bytes)| previous.get(*p) != Some(*bytes))
        .map(|(p, _)| p)
        .collect();
    assert!(changed.is_empty(), "changed or left behind: {changed:?}");
    assert_eq!(after.len(), previous.len());
}

#[test]
fn a_deadline_commits_what_was_fetched_and_the_next_export_completes_it() {
    let sim = Sim::start(SimConfig {
        workflows: 2,
        runs_per_workflow: 1500,
        latency: Duration::from_millis(30),
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let slow = ["--page-size", "20", "--concurrency", "1"];
    let started = std::time::Instant::now();
    let out = export_all(
        &sim,
        dir.path(),
        &[&slow[..], &["--deadline", "1s"]].concat(),
    );
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("the `--deadline` was reached"), "{err}");
    assert!(took < Duration::from_secs(4), "stopped after {took:?}");
    let stored: usize = stored_ids(dir.path()).values().map(|r| r.len()).sum();
    assert!(
        stored > 0 && stored < 3000,
        "{stored} runs stored by the deadline"
    );
    assert_unique_keys(dir.path());
    assert!(!dir.path().join("_SUCCESS").exists());

    assert_ok(&export_all(&sim, dir.path(), &slow));
    for id in sim.ids() {
        assert_dataset_matches(dir.path(), &id, &sim.server.records(&id), 0);
    }
}

#[test]
fn a_deadline_ends_an_export_held_up_by_429s_with_long_retry_afters() {
    // Every request for one page is answered 429 with `Retry-After: 300`: without a deadline the
    // export would pause for minutes, seven times.
    let sim = Sim::start(SimConfig {
        workflows: 2,
        runs_per_workflow: 400,
        faults: vec![Fault {
            path_contains: Some("offset=198".to_owned()),
            kind: FaultKind::Status {
                status: 429,
                retry_after: Some(RetryAfter::Seconds(300)),
            },
            schedule: Schedule::Always,
        }],
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let out = export_all(&sim, dir.path(), &["--deadline", "2s"]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(took < Duration::from_secs(10), "stopped after {took:?}");
    let err = stderr(&out);
    assert!(err.contains("the `--deadline` was reached"), "{err}");
    assert!(answered(&sim, 429) >= 1, "the 429 was never served");
    // What was fetched before the pause is committed, each run once.
    let stored: usize = stored_ids(dir.path()).values().map(|r| r.len()).sum();
    assert!(stored >= 199, "{stored} runs stored");
    assert_unique_keys(dir.path());
}
