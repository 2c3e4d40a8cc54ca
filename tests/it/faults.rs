//! Retries, authentication and failing workflows, against the simulator's injected faults.

use std::time::Duration;

use orchestra_export::api::{self, ApiClient, ApiError, ApiKey, ClientOptions, RetryPolicy};
use orchestra_export::simulate::{Fault, FaultKind, RetryAfter, SimConfig};

use crate::support::*;

fn fault(path: &str, status: u16, times: usize, retry_after: Option<u64>) -> Fault {
    let fault = Fault::status(path, status, times);
    match retry_after {
        Some(secs) => fault.with_retry_after(RetryAfter::Seconds(secs)),
        None => fault,
    }
}

#[test]
fn transient_statuses_are_retried_and_others_are_not_for_every_code() {
    // Each status code gets its own (empty) workflow and one injected failure.
    let codes: Vec<u16> = (400..=599).collect();
    let sim = Sim::start(SimConfig {
        workflows: 0,
        fixtures: codes
            .iter()
            .map(|c| fixture(&format!("status-{c}"), vec![]))
            .collect(),
        faults: codes
            .iter()
            .map(|c| fault(&format!("/status-{c}/"), *c, 1, None))
            .collect(),
        ..SimConfig::default()
    });
    let client = ApiClient::new(ClientOptions {
        base_url: url::Url::parse(&sim.url()).unwrap(),
        key: ApiKey::new(KEY).unwrap(),
        concurrency: 4,
        request_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(5),
        retry: RetryPolicy {
            max_retries: 1,
            base_delay: Duration::from_millis(1),
        },
        max_response_bytes: api::DEFAULT_MAX_RESPONSE_BYTES,
        max_rps: None,
        policy: Default::default(),
    })
    .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut retried = Vec::new();
    for code in &codes {
        let url = client.runs_url(&format!("status-{code}"), 10, 0);
        let result = runtime.block_on(client.get(&url));
        let attempts = sim
            .paths()
            .iter()
            .filter(|p| p.contains(&format!("/status-{code}/")))
            .count();
        match (attempts, result) {
            (2, Ok(body)) => {
                assert_eq!(body, b"[]");
                retried.push(*code);
            }
            (1, Err(ApiError::Unauthorized { status, .. })) => assert!(matches!(status, 401 | 403)),
            (1, Err(ApiError::Status { status, .. })) => assert_eq!(status, *code),
            (n, other) => panic!("status {code}: {n} attempts, {other:?}"),
        }
    }
    let mut want = vec![408, 429];
    want.extend(500..=599);
    assert_eq!(retried, want);
}

#[test]
fn export_retries_429_and_5xx_honouring_retry_after_and_completes() {
    let sim = Sim::start(SimConfig {
        workflows: 2,
        runs_per_workflow: 120,
        ..SimConfig::default()
    });
    let ids: Vec<String> = sim.ids();
    drop(sim);
    let sim = Sim::start(SimConfig {
        workflows: 2,
        runs_per_workflow: 120,
        faults: vec![
            fault(&format!("{}/runs?limit=100&offset=0", ids[0]), 503, 2, None),
            fault(
                &format!("{}/runs?limit=100&offset=99", ids[1]),
                429,
                1,
                Some(1),
            ),
            fault(
                &format!("{}/runs?limit=100&offset=99", ids[0]),
                502,
                1,
                None,
            ),
        ],
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let out = export(
        &sim,
        dir.path(),
        &["--workflow", &ids[0], "--workflow", &ids[1]],
    );
    assert_ok(&out);
    assert!(stdout(&out).contains("240 runs"), "{}", stdout(&out));
    assert!(stdout(&out).contains("4 retries"), "{}", stdout(&out));
    let statuses: Vec<u16> = sim.server.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 503).count(), 2);
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 1);
    // The retry repeats the same URL.
    let retried_429: Vec<_> = sim
        .paths()
        .into_iter()
        .filter(|p| p.contains(&format!("{}/runs?limit=100&offset=99", ids[1])))
        .collect();
    assert_eq!(retried_429.len(), 2);
    let (_, runs) = read_table(dir.path(), "runs");
    assert_eq!(runs.len(), 240);
    assert_stderr_contains(&out, "retrying");
}

#[test]
fn a_rejected_key_stops_the_export_quickly_with_exit_3() {
    let sim = Sim::start(SimConfig {
        workflows: 6,
        runs_per_workflow: 500,
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let url = sim.url();
    let out = run_with_env(
        &[
            "export",
            "--base-url",
            &url,
            "--out",
            dir.path().to_str().unwrap(),
            "--all-workflows",
        ],
        &[("ORCHESTRA_API_KEY", "wrong-key-Pq7")],
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_stderr_contains(&out, "error: cannot list workflows");
    assert_stderr_contains(&out, "HTTP 401");
    assert_stderr_contains(&out, "hint: check `ORCHESTRA_API_KEY`");
    assert_eq!(sim.server.requests().len(), 1, "no retries on 401");

    // With explicit workflows, the first 401 cancels the rest.
    let ids: Vec<String> = sim.ids();
    let mut args = vec![
        "export",
        "--base-url",
        &url,
        "--out",
        dir.path().to_str().unwrap(),
        "--concurrency",
        "2",
    ];
    for id in &ids {
        args.extend(["--workflow", id.as_str()]);
    }
    let out = run_with_env(&args, &[("ORCHESTRA_API_KEY", "wrong-key-Pq7")]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        sim.server.requests().len() <= 1 + 2,
        "{} requests",
        sim.server.requests().len()
    );
    assert!(!stderr(&out).contains("wrong-key-Pq7") && !stdout(&out).contains("wrong-key-Pq7"));
}

#[test]
fn one_missing_workflow_fails_alone_and_the_others_are_committed() {
    let sim = Sim::start(SimConfig {
        workflows: 2,
        runs_per_workflow: 150,
        ..SimConfig::default()
    });
    let ids: Vec<String> = sim.ids();
    let dir = tempfile::tempdir().unwrap();
    let out = export(
        &sim,
        dir.path(),
        &[
            "--workflow",
            &ids[0],
            "--workflow",
            "no-such-wf",
            "--workflow",
            &ids[1],
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].starts_with(
            "error: workflow `no-such-wf` failed: request for offset 0 failed: HTTP 404 from `"
        ),
        "{err}"
    );
    assert!(
        lines[0].contains("/workflows/no-such-wf/runs?limit=100&offset=0"),
        "{err}"
    );
    // Said once (no log line repeating it), with what to check.
    assert_eq!(err.matches("no-such-wf").count(), 2, "{err}");
    assert!(!err.contains("WARN"), "{err}");
    assert_stderr_contains(
        &out,
        "\nhint: the API does not know this workflow: check the id; `--all-workflows` exports every workflow the key can read\n",
    );
    assert!(
        stdout(&out).contains("2 of 3 workflows ok, 1 failed"),
        "{}",
        stdout(&out)
    );
    let (_, runs) = read_table(dir.path(), "runs");
    assert_eq!(runs.len(), 300);
    assert_eq!(
        sim.paths()
            .iter()
            .filter(|p| p.contains("no-such-wf"))
            .count(),
        1,
        "404 is not retried"
    );
}

#[test]
fn persistent_server_errors_fail_the_workflow_after_the_retry_budget() {
    let sim = Sim::start(SimConfig {
        workflows: 1,
        runs_per_workflow: 10,
        fixtures: vec![fixture("flaky", vec![])],
        faults: vec![fault("/flaky/", 500, 100, None)],
        ..SimConfig::default()
    });
    let good = sim.server.workflows()[0].id.clone();
    let dir = tempfile::tempdir().unwrap();
    let out = export(
        &sim,
        dir.path(),
        &[
            "--workflow",
            "flaky",
            "--workflow",
            &good,
            "--max-retries",
            "2",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_stderr_contains(
        &out,
        "error: workflow `flaky` failed: request for offset 0 failed: HTTP 500 from",
    );
    assert_stderr_contains(&out, "after 3 attempt(s)");
    assert_eq!(
        sim.paths().iter().filter(|p| p.contains("/flaky/")).count(),
        3
    );
    assert_eq!(read_table(dir.path(), "runs").1.len(), 10);
}

#[test]
fn a_redirect_to_another_host_never_carries_the_key() {
    let other = Sim::start(SimConfig {
        workflows: 0,
        fixtures: vec![fixture("wf", vec![])],
        ..SimConfig::default()
    });
    let origin = format!("http://{}", other.server.addr());
    let sim = Sim::start(SimConfig {
        workflows: 0,
        fixtures: vec![fixture("wf", vec![])],
        faults: vec![Fault::new("/wf/", FaultKind::Redirect { origin }, 1)],
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let out = export(&sim, dir.path(), &["--workflow", "wf"]);
    let received = other.server.requests();
    assert_eq!(
        received.len(),
        1,
        "the redirect was followed: {}",
        stderr(&out)
    );
    assert!(
        !received[0].had_authorization,
        "the key went to another host"
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
}

#[test]
fn an_api_that_ignores_offset_fails_the_workflow_instead_of_looping() {
    let sim = Sim::start(SimConfig {
        workflows: 1,
        runs_per_workflow: 500,
        ignore_offset: true,
        ..SimConfig::default()
    });
    let id = sim.server.workflows()[0].id.clone();
    let dir = tempfile::tempdir().unwrap();
    let out = export(&sim, dir.path(), &["--workflow", &id, "--concurrency", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_stderr_contains(
        &out,
        "5 pages in a row up to offset 495 held only runs already seen",
    );
    assert_eq!(offsets(&sim.paths(), &id), [0, 99, 198, 297, 396, 495]);
    // The runs it did get are kept, once each.
    let (_, runs) = read_table(dir.path(), "runs");
    assert_eq!(runs.len(), 100);
}

#[test]
fn a_listed_workflow_id_that_cannot_be_a_path_segment_fails_alone() {
    let sim = Sim::start(SimConfig {
        workflows: 1,
        runs_per_workflow: 20,
        fixtures: vec![fixture("..", vec![])],
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let out = export(&sim, dir.path(), &["--all-workflows"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_stderr_contains(
        &out,
        "error: workflow `..` failed: invalid workflow id: `.` and `..` cannot be used as a URL path segment",
    );
    assert!(
        !sim.paths().iter().any(|p| p.contains("/workflows/runs")),
        "{:?}",
        sim.paths()
    );
    assert_eq!(read_table(dir.path(), "runs").1.len(), 20);
}
