//! Bad command-line input: one clear error, the documented exit code, no panic, nothing written.

use orchestra_export::simulate::{Fault, SimConfig};

use crate::support::*;

fn assert_clean_error(out: &std::process::Output, code: i32, needle: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "stderr:\n{err}");
    assert!(err.contains(needle), "expected `{needle}` in:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn missing_workflows_file_is_a_usage_error() {
    let out = run(&["export", "--workflows-file", "/nonexistent/wf.txt"]);
    assert_clean_error(
        &out,
        2,
        "error: cannot read workflows file `/nonexistent/wf.txt`",
    );
    assert!(
        stderr(&out).contains("caused by: No such file or directory"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn page_size_zero_is_a_usage_error() {
    let out = run(&["export", "--workflow", "w", "--page-size", "0"]);
    assert_clean_error(&out, 2, "--page-size");
}

#[test]
fn no_key_and_no_workflows_are_usage_errors_with_hints() {
    let out = run_with_env(&["export", "--workflow", "w"], &[]);
    assert_clean_error(
        &out,
        2,
        "error: no API key: set `ORCHESTRA_API_KEY` or pass `--api-key-file PATH`",
    );
    let out = run(&["export"]);
    assert_clean_error(&out, 2, "error: no workflows to export");
}

#[test]
fn an_unreachable_api_is_exit_5_and_names_the_url() {
    // Port 9 (discard) on loopback: nothing listens there in a test sandbox.
    let dir = tempfile::tempdir().unwrap();
    let out = run(&[
        "export",
        "--base-url",
        "http://127.0.0.1:9/api/v1/workflow",
        "--workflow",
        "w",
        "--out",
        dir.path().to_str().unwrap(),
        "--max-retries",
        "1",
    ]);
    assert_clean_error(
        &out,
        5,
        "error: workflow `w` failed: request for offset 0 failed: request to `http://127.0.0.1:9/api/v1/workflow/workflows/w/runs?limit=100&offset=0` failed after 2 attempt(s)",
    );
    assert!(
        stderr(&out).contains(": cannot connect: "),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains(
            "\nhint: check `--base-url` and the network: nothing accepted a connection at `127.0.0.1:9`\n"
        ),
        "{}",
        stderr(&out)
    );
}

/// `export --all-workflows` against `base_url` with no retries: the listing fails first.
fn export_unreachable(base_url: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    run_with_env(
        &[
            "export",
            "--base-url",
            base_url,
            "--all-workflows",
            "--out",
            dir.path().to_str().unwrap(),
            "--max-retries",
            "0",
        ],
        &[("ORCHESTRA_API_KEY", KEY), ("NO_PROXY", "*")],
    )
}

/// Asserts the exit code and that stderr is one `error:` line starting with `error` and
/// naming the failure class `kind`, then exactly `hint`.
fn assert_unreachable(out: &std::process::Output, code: i32, error: &str, kind: &str, hint: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "one error line and one hint:\n{err}");
    assert!(lines[0].starts_with(error), "{err}");
    assert!(lines[0].contains(kind), "{err}");
    assert_eq!(lines[1], hint, "{err}");
}

#[test]
fn a_host_that_does_not_resolve_is_exit_7_and_names_the_host() {
    // `.invalid` never resolves (RFC 2606); failing takes milliseconds here.
    let out = export_unreachable("https://orchestra.invalid/api/v1/workflow");
    assert_unreachable(
        &out,
        7,
        "error: cannot list workflows: request to `https://orchestra.invalid/api/v1/workflow/workflows` failed after 1 attempt(s) in ",
        "s: cannot resolve the host name: ",
        "hint: the host `orchestra.invalid` does not resolve: check the host name in `--base-url`, and DNS or proxy settings",
    );
    let dir = tempfile::tempdir().unwrap();
    let per_workflow = run_with_env(
        &[
            "export",
            "--base-url",
            "http://orchestra.invalid/api",
            "--workflow",
            "w",
            "--out",
            dir.path().to_str().unwrap(),
            "--max-retries",
            "0",
        ],
        &[("ORCHESTRA_API_KEY", KEY), ("NO_PROXY", "*")],
    );
    assert_clean_error(
        &per_workflow,
        7,
        "error: workflow `w` failed: request for offset 0 failed: request to `http://orchestra.invalid/api/workflows/w/runs?limit=100&offset=0` failed after 1 attempt(s)",
    );
    assert!(
        stderr(&per_workflow).contains("\nhint: the host `orchestra.invalid` does not resolve"),
        "{}",
        stderr(&per_workflow)
    );
}

#[test]
fn https_to_a_plain_http_server_is_exit_8_and_names_the_host() {
    let sim = Sim::start(SimConfig {
        workflows: 1,
        runs_per_workflow: 5,
        ..SimConfig::default()
    });
    let url = sim.url().replacen("http://", "https://", 1);
    let authority = url.split('/').nth(2).unwrap().to_owned();
    let out = export_unreachable(&url);
    assert_unreachable(
        &out,
        8,
        &format!(
            "error: cannot list workflows: request to `{url}/workflows` failed after 1 attempt(s) in "
        ),
        "s: TLS handshake failed: ",
        &format!(
            "hint: no TLS session with `{authority}`: check the `--base-url` scheme (`https` to a plain-HTTP server fails), proxies, and the server's certificate"
        ),
    );
    assert!(
        sim.server.requests().is_empty(),
        "no HTTP request was answered"
    );
}

#[test]
fn a_refused_connection_is_exit_5_when_listing_workflows() {
    let out = export_unreachable("http://127.0.0.1:9/api/v1/workflow");
    assert_unreachable(
        &out,
        5,
        "error: cannot list workflows: request to `http://127.0.0.1:9/api/v1/workflow/workflows` failed after 1 attempt(s) in ",
        "s: cannot connect: ",
        "hint: check `--base-url` and the network: nothing accepted a connection at `127.0.0.1:9`",
    );
}

#[test]
fn out_that_is_a_file_is_exit_4_and_the_file_is_untouched() {
    let sim = Sim::start(SimConfig {
        workflows: 1,
        runs_per_workflow: 5,
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"keep me").unwrap();
    let out = export(&sim, &file, &["--all-workflows"]);
    assert_clean_error(
        &out,
        4,
        &format!("error: `{}` is not a directory", file.display()),
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
    assert!(
        sim.server.requests().is_empty(),
        "nothing fetched before the output was checked"
    );
}

/// Every file below `dir`, recursively.
fn all_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
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

/// Asserts `secret` is in neither stdout nor stderr of `out`, nor in any file below `dir`.
fn assert_no_secret(secret: &str, what: &str, out: &std::process::Output, dir: &std::path::Path) {
    assert!(
        !stdout(out).contains(secret) && !stderr(out).contains(secret),
        "{what}: the key leaked to the output:\n{}\n{}",
        stdout(out),
        stderr(out)
    );
    let files = all_files(dir);
    for path in &files {
        let bytes = std::fs::read(path).unwrap();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{what}: key in {path:?}"
        );
    }
}

#[test]
fn the_key_is_never_printed_logged_or_written() {
    let sim = Sim::start(SimConfig {
        workflows: 2,
        runs_per_workflow: 30,
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let url = sim.url();
    // (what, global flags, key from the file or the environment)
    let cases = [
        ("-vv, key file", vec!["-vv"], true),
        ("trace, text", vec![], false),
        ("trace, json", vec!["--log-format", "json"], false),
    ];
    for (what, global, from_file) in cases {
        let out_dir = dir.path().join(what.replace([',', ' '], "_"));
        let mut args = global.clone();
        args.extend([
            "export",
            "--base-url",
            &url,
            "--all-workflows",
            "--with-steps",
        ]);
        args.extend(["--out", out_dir.to_str().unwrap()]);
        let out = if from_file {
            args.extend(["--api-key-file", key_file.to_str().unwrap()]);
            run_with_env(&args, &[])
        } else {
            run_with_env(&args, &[("ORCHESTRA_API_KEY", KEY), ("RUST_LOG", "trace")])
        };
        assert_ok(&out);
        assert!(
            stderr(&out).contains("hyper_util::client"),
            "{what}: HTTP internals are logged"
        );
        assert_no_secret(KEY, what, &out, &out_dir);
        let files = all_files(&out_dir);
        for kind in [
            "_state",
            "_manifest",
            "runs",
            "steps",
            "workflows",
            "_SUCCESS",
        ] {
            assert!(
                files.iter().any(|f| f.to_str().unwrap().contains(kind)),
                "{what}: {kind} written and checked"
            );
        }
    }
    assert!(sim.server.requests().iter().all(|r| r.had_authorization));
}

#[test]
fn the_key_is_not_in_the_errors_of_failing_exports() {
    let other = Sim::start(SimConfig {
        workflows: 0,
        fixtures: vec![fixture("wf", vec![])],
        ..SimConfig::default()
    });
    let fault = |path: &str, status, redirect_to| Fault {
        path_contains: Some(path.to_owned()),
        status,
        times: 10,
        retry_after: None,
        redirect_to,
    };
    let sim = Sim::start(SimConfig {
        workflows: 0,
        fixtures: vec![fixture("down", vec![]), fixture("moved", vec![])],
        faults: vec![
            fault("/down/", 500, None),
            fault(
                "/moved/",
                307,
                Some(format!("http://{}", other.server.addr())),
            ),
        ],
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let url = sim.url();
    let wrong_key = "wrong-key-Vb71Qa";
    let export_with = |key: &str, workflow: &str| {
        let out = run_with_env(
            &[
                "export",
                "--base-url",
                &url,
                "--workflow",
                workflow,
                "--out",
                dir.path().to_str().unwrap(),
                "--max-retries",
                "1",
            ],
            &[("ORCHESTRA_API_KEY", key), ("RUST_LOG", "trace")],
        );
        assert_no_secret(key, workflow, &out, dir.path());
        out
    };
    let rejected = export_with(wrong_key, "down");
    assert_eq!(rejected.status.code(), Some(3), "{}", stderr(&rejected));
    let failing = export_with(KEY, "down");
    assert_eq!(failing.status.code(), Some(1), "{}", stderr(&failing));
    assert!(
        stderr(&failing).contains("HTTP 500 from"),
        "{}",
        stderr(&failing)
    );
    let redirected = export_with(KEY, "moved");
    assert_eq!(redirected.status.code(), Some(3), "{}", stderr(&redirected));
}

#[test]
fn help_never_shows_the_key_or_a_password_from_the_environment() {
    let env = [
        ("ORCHESTRA_API_KEY", KEY),
        (
            "ORCHESTRA_BASE_URL",
            "https://user:hunter2-pw@h.example/api",
        ),
    ];
    for args in [
        &["--help"][..],
        &["export", "--help"],
        &["demo", "--help"],
        &["simulate", "--help"],
        &["report", "--help"],
        &["help", "export"],
    ] {
        let out = run_with_env(args, &env);
        assert_ok(&out);
        let text = stdout(&out) + &stderr(&out);
        assert!(text.contains("Usage:"), "{args:?}: {text}");
        assert!(
            !text.contains(KEY) && !text.contains("hunter2-pw"),
            "{args:?} leaked:\n{text}"
        );
    }
    let out = run_with_env(&["export", "--help"], &env);
    assert!(
        stdout(&out).contains("[env: ORCHESTRA_BASE_URL]"),
        "{}",
        stdout(&out)
    );
    let bad = run_with_env(
        &[
            "export",
            "--workflow",
            "w",
            "--base-url",
            "ftp://user:hunter2-pw@h/x",
        ],
        &env,
    );
    assert_clean_error(
        &bad,
        2,
        "error: invalid `--base-url` `ftp://user:***@h/x`: scheme `ftp` is not http or https",
    );
    assert!(!stderr(&bad).contains("hunter2-pw"));
}

#[test]
fn demo_replaces_its_own_output_and_never_touches_other_folders() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let demo = |out: &std::path::Path| {
        run(&[
            "demo",
            "--out",
            out.to_str().unwrap(),
            "--workflows",
            "3",
            "--runs",
            "40",
            "--seed",
            "7",
        ])
    };
    let first = demo(&out);
    assert_ok(&first);
    assert!(
        stdout(&first).contains("3 of 3 workflows ok"),
        "{}",
        stdout(&first)
    );
    assert!(
        stdout(&first).contains("query it with DuckDB"),
        "{}",
        stdout(&first)
    );
    assert!(
        out.join("reports/report.html").exists(),
        "the demo writes the reports"
    );
    assert!(stdout(&first).contains("report: "), "{}", stdout(&first));
    let runs_once = read_table(&out, "runs").1.len();
    assert!(runs_once > 0);
    assert_ok(&demo(&out));
    assert_eq!(
        read_table(&out, "runs").1.len(),
        runs_once,
        "a second demo replaces, not appends"
    );

    let precious = dir.path().join("precious");
    std::fs::create_dir(&precious).unwrap();
    std::fs::write(precious.join("notes.txt"), b"mine").unwrap();
    let refused = demo(&precious);
    assert_eq!(refused.status.code(), Some(4), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("is not empty and was not written by `demo`"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(std::fs::read(precious.join("notes.txt")).unwrap(), b"mine");
}

#[test]
fn sigterm_stops_fetching_commits_what_was_fetched_and_exits_130() {
    let sim = Sim::start(SimConfig {
        workflows: 2,
        runs_per_workflow: 5000,
        latency: std::time::Duration::from_millis(50),
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let child = spawn_export(&sim, dir.path(), &["--all-workflows", "--concurrency", "2"]);
    // Wait (bounded) until a few pages were served, then ask it to stop.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while sim.server.requests().len() < 6 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("interrupted: committing what was fetched"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("failed: stopped: interrupted"),
        "{}",
        stderr(&out)
    );
    let (_, runs) = read_table(dir.path(), "runs");
    assert!(
        !runs.is_empty() && runs.len() < 10_000,
        "{} runs",
        runs.len()
    );
    let ids: std::collections::BTreeSet<_> = runs
        .iter()
        .map(|r| (r["workflow_id"].clone(), r["run_id"].clone()))
        .collect();
    assert_eq!(ids.len(), runs.len(), "no duplicates");
}

#[test]
fn a_key_file_other_users_can_read_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let sim = Sim::start(SimConfig {
        workflows: 1,
        runs_per_workflow: 5,
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, KEY).unwrap();
    let url = sim.url();
    let out_dir = dir.path().join("out");
    let args = |key: &str| {
        vec![
            "export".to_owned(),
            "--base-url".into(),
            url.clone(),
            "--api-key-file".into(),
            key.to_owned(),
            "--out".into(),
            out_dir.to_str().unwrap().to_owned(),
            "--all-workflows".into(),
        ]
    };
    let key = key_file.to_str().unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let loose = args(key);
    let out = run_with_env(&loose.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert_ok(&out);
    assert!(
        stderr(&out).contains("can be read by other users (mode 644); run `chmod 600"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains(KEY));
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = run_with_env(&loose.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert_ok(&out);
    assert!(
        !stderr(&out).contains("can be read by other users"),
        "{}",
        stderr(&out)
    );
}
