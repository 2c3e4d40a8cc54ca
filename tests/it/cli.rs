//! Bad command-line input: one clear error, the documented exit code, no panic, nothing written.

use orchestra_export::simulate::{Fault, FaultKind, SimConfig};

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
    assert_usage_error(
        &out,
        "error: cannot read workflows file `/nonexistent/wf.txt`: No such file or directory (os error 2)",
        "missing workflows file",
    );
}

#[test]
fn every_flag_rejects_bad_values_with_one_line_naming_it() {
    let bad_value =
        |v: &str, flag: &str, why: &str| format!("error: invalid value '{v}' for '{flag}': {why}");
    let timeout = |v: &str, why: &str| {
        bad_value(
            v,
            "--request-timeout <DURATION>",
            &format!("`{v}` is not {why}"),
        )
    };
    let not_a_date = |v: &str| {
        format!(
            "`{v}` is not a date: expected YYYY-MM-DD (or an RFC 3339 instant such as 2026-11-01T08:00:00Z)"
        )
    };
    let duration = |v: &str, flag: &str| {
        bad_value(
            v,
            flag,
            &format!("`{v}` is not a duration like `90`, `30s`, `5m` or `1h30m`"),
        )
    };
    let cases: Vec<(Vec<&str>, String)> = vec![
        // export
        (vec!["export", "--workflow", "w", "--page-size", "0"], bad_value("0", "--page-size <N>", "0 is not in 1..=100000")),
        (vec!["export", "--workflow", "w", "--page-size", "100001"], bad_value("100001", "--page-size <N>", "100001 is not in 1..=100000")),
        (vec!["export", "--workflow", "w", "--concurrency", "-1"], bad_value("-1", "--concurrency <N>", "-1 is not in 1..=256")),
        (vec!["export", "--workflow", "w", "--concurrency", "257"], bad_value("257", "--concurrency <N>", "257 is not in 1..=256")),
        (vec!["export", "--workflow", "w", "--request-timeout", "0"], timeout("0", "a duration above 0 and at most 1d")),
        (vec!["export", "--workflow", "w", "--request-timeout", "25h"], timeout("25h", "a duration above 0 and at most 1d")),
        (vec!["export", "--workflow", "w", "--request-timeout", "NaN"], timeout("NaN", "a duration like `90`, `30s`, `5m` or `1h30m`")),
        (vec!["export", "--workflow", "w", "--request-timeout", "1e9"], timeout("1e9", "a duration like `90`, `30s`, `5m` or `1h30m`")),
        (vec!["export", "--workflow", "w", "--deadline", "0"], bad_value("0", "--deadline <DURATION>", "`0` is not a duration above 0 and at most 3650d")),
        (vec!["export", "--workflow", "w", "--max-retries", "51"], bad_value("51", "--max-retries <N>", "51 is not in 0..=50")),
        (vec!["export", "--workflow", "w", "--max-rps", "0"], bad_value("0", "--max-rps <N>", "`0` is not a rate above 0 and at most 100000 requests per second")),
        (vec!["export", "--workflow", "w", "--max-rps", "fast"], bad_value("fast", "--max-rps <N>", "`fast` is not a number of requests per second")),
        (vec!["export", "--workflow", "w", "--retry-delay", "61"], bad_value("61", "--retry-delay <DURATION>", "`61` is not a duration above 0 and at most 1m")),
        (vec!["export", "--workflow", "w", "--max-response-size", "1"], bad_value("1", "--max-response-size <SIZE>", "`1` is not a size between 1KB and 16GB, like `512KB` or `256MB`")),
        (vec!["export", "--workflow", "w", "--max-response-size", "9TB"], bad_value("9TB", "--max-response-size <SIZE>", "`9TB` is not a size between 1KB and 16GB, like `512KB` or `256MB`")),
        (vec!["export", "--workflow", "w", "--lookback", "soon"], duration("soon", "--lookback <DURATION>")),
        (vec!["export", "--workflow", "w", "--lookback", "3651d"], bad_value("3651d", "--lookback <DURATION>", "`3651d` is not a duration like `90`, `30s`, `5m` or `1h30m`")),
        (vec!["export", "--workflow", "w", "--unfinished-horizon", "1w"], duration("1w", "--unfinished-horizon <DURATION>")),
        (vec!["export", "--workflow", "w", "--unfinished-horizon", ""], duration("", "--unfinished-horizon <DURATION>")),
        (vec!["export", "--workflow", "w", "--base-url", ""], "error: invalid `--base-url` ``: relative URL without a base".into()),
        (vec!["export", "--workflow", "w", "--base-url", "ftp://h/x"], "error: invalid `--base-url` `ftp://h/x`: scheme `ftp` is not http or https".into()),
        (vec!["export", "--workflow", "w", "--base-url", "http://h/x?limit=5"], "error: invalid `--base-url` `http://h/x?limit=5`: must not have a query or fragment".into()),
        (vec!["export", "--workflow", ""], "error: a value is required for '--workflow <ID>' but none was supplied".into()),
        (vec!["export", "--workflow", " "], "error: invalid workflow id ` ` in `--workflow`: it is empty".into()),
        (vec!["export", "--workflow", ".."], "error: invalid workflow id `..` in `--workflow`: `.` and `..` cannot be used as a URL path segment".into()),
        (vec!["export", "--workflows-file", "/nonexistent/wf.txt"], "error: cannot read workflows file `/nonexistent/wf.txt`: No such file or directory (os error 2)".into()),
        (vec!["export", "--workflow", "w", "--api-key-file", "/nonexistent/key"], "error: cannot read API key file `/nonexistent/key`: No such file or directory (os error 2)".into()),
        (vec!["export", "--workflow", "w", "--api-key-file", "/"], "error: cannot read API key file `/`: Is a directory (os error 21)".into()),
        (vec!["export", "--workflow", "w", "--config", "/nonexistent/export.toml"], "error: cannot read config file `/nonexistent/export.toml`: No such file or directory (os error 2)".into()),
        (vec!["export", "--workflow", "w", "--out", ""], "error: a value is required for '--out <DIR|URL>' but none was supplied".into()),
        (vec!["--log-format", "xml", "export"], "error: invalid value 'xml' for '--log-format <LOG_FORMAT>'".into()),
        // demo
        (vec!["demo", "--workflows", "0"], bad_value("0", "--workflows <N>", "0 is not in 1..=10000")),
        (vec!["demo", "--runs", "0"], bad_value("0", "--runs <N>", "0 is not in 1..=1000000")),
        (vec!["demo", "--runs", "18446744073709551616"], bad_value("18446744073709551616", "--runs <N>", "number too large to fit in target type")),
        (vec!["demo", "--seed", "-5"], bad_value("-5", "--seed <SEED>", "invalid digit found in string")),
        (vec!["demo", "--page-size", "0"], bad_value("0", "--page-size <N>", "0 is not in 1..=100000")),
        (vec!["demo", "--data", "bogus"], bad_value("bogus", "--data <PROFILE>", "unknown data profile `bogus` (expected one of: llm, small)")),
        (vec!["demo", "--out", ""], "error: a value is required for '--out <DIR>' but none was supplied".into()),
        // simulate
        (vec!["simulate", "--listen", "localhost"], bad_value("localhost", "--listen <ADDR>", "invalid socket address syntax")),
        (vec!["simulate", "--listen", "127.0.0.1:99999"], bad_value("127.0.0.1:99999", "--listen <ADDR>", "invalid socket address syntax")),
        (vec!["simulate", "--listen", "192.0.2.1:8900"], "error: cannot listen on `192.0.2.1:8900`: Cannot assign requested address (os error 99)".into()),
        (vec!["simulate", "--workflows", "0"], bad_value("0", "--workflows <N>", "0 is not in 1..=10000")),
        (vec!["simulate", "--runs", "1000001"], bad_value("1000001", "--runs <N>", "1000001 is not in 1..=1000000")),
        (vec!["simulate", "--page-cap", "0"], bad_value("0", "--page-cap <N>", "0 is not in 1..=100000")),
        (vec!["simulate", "--latency-ms", "600001"], bad_value("600001", "--latency-ms <MS>", "600001 is not in 0..=600000")),
        (vec!["simulate", "--fault", "200"], bad_value("200", "--fault <SPEC>", "unknown fault `200`: expected an HTTP status 400-599, reset, truncate, malformed, echo-key, echo-record, hang=SECS, slow=MILLIS, huge=BYTES or redirect=http://HOST:PORT")),
        (vec!["simulate", "--fault", "503:rate=2"], bad_value("503:rate=2", "--fault <SPEC>", "`rate=2` must be between 0 and 1")),
        (vec!["simulate", "--drift", "insert=x"], bad_value("insert=x", "--drift <SPEC>", "`insert=x` needs a number")),
        (vec!["simulate", "--rate-limit", "-3"], bad_value("-3", "--rate-limit <RPS>", "`-3` is not a rate above 0 and at most 100000 requests per second")),
        // report
        (vec!["report", "--top", "0"], bad_value("0", "--top <N>", "0 is not in 1..=100000")),
        (vec!["report", "--price-per-million-tokens", "-1"], bad_value("-1", "--price-per-million-tokens <PRICE>", "`-1` is not a price (a number, 0 or more)")),
        (vec!["report", "--price-per-million-tokens", "cheap"], bad_value("cheap", "--price-per-million-tokens <PRICE>", "`cheap` is not a price (a number, 0 or more)")),
        (vec!["report", "--since", "2026-13-01"], bad_value("2026-13-01", "--since <DATE>", &not_a_date("2026-13-01"))),
        (vec!["report", "--until", "yesterday"], bad_value("yesterday", "--until <DATE>", &not_a_date("yesterday"))),
        (vec!["report", "--since", "11/01/2026"], bad_value("11/01/2026", "--since <DATE>", &not_a_date("11/01/2026"))),
        (vec!["report", "--since", "2026-02-01", "--until", "2026-01-01"], "error: `--since` 2026-02-01 is after `--until` 2026-01-01".into()),
        (vec!["report", "--workflow", ""], "error: a value is required for '--workflow <ID>' but none was supplied".into()),
        (vec!["report", "--data", "/nonexistent/export"], "error: no `runs` table in `/nonexistent/export`: is it an orchestra-export dataset?".into()),
    ];
    for (args, want) in &cases {
        let out = run(args);
        assert_usage_error(&out, want, &args.join(" "));
    }
}

#[test]
fn every_config_key_rejects_bad_values_with_one_line_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("export.toml");
    let file = path.display().to_string();
    let cases = [
        ("concurency = 3", "line 1: unknown key `concurency`; did you mean `concurrency`?".to_owned()),
        ("page_size = 10\ncolour = \"red\"", "line 2: unknown key `colour`; the keys are `base_url`, `api_key_file`, `workflows`, `workflows_file`, `all_workflows`, `out`, `page_size`, `concurrency`, `request_timeout`, `max_retries`, `max_rps`, `max_response_size`, `retry_delay`, `lookback`, `unfinished_horizon`, `with_steps`, `shard`, `keep_manifests`, `table_format`, `privacy` (see `export.example.toml`)".into()),
        ("page_size = 5\n[net\nx = 1", "line 2, column 5: unclosed table, expected `]`".into()),
        ("base_url = 5", "line 1: `base_url` takes a URL string, not 5".into()),
        ("base_url = \"ftp://user:pw@h/x\"", "line 1: `base_url` `ftp://user:***@h/x`: scheme `ftp` is not http or https".into()),
        ("api_key = \"sk-123\"", "line 1: `api_key` is not allowed: keep the key out of config files; set `ORCHESTRA_API_KEY` or `api_key_file`".into()),
        ("api_key_file = \"missing-key\"", format!("line 1: `api_key_file` `{}`: No such file or directory (os error 2)", dir.path().join("missing-key").display())),
        ("workflows = \"wf-1\"", "line 1: `workflows` takes a list of workflow ids, like [\"wf-1\", \"wf-2\"], not a string".into()),
        ("workflows = [\n  \"wf-1\",\n  7,\n]", "line 3: `workflows` takes a list of workflow ids, like [\"wf-1\", \"wf-2\"], not 7".into()),
        ("workflows = [\"..\"]", "line 1: `workflows`: invalid workflow id `..`: `.` and `..` cannot be used as a URL path segment".into()),
        ("workflows_file = \"/\"", "line 1: `workflows_file` `/`: is not a file".into()),
        ("all_workflows = \"yes\"", "line 1: `all_workflows` takes `true` or `false`, not a string".into()),
        ("out = \"\"", "line 1: `out` must not be empty".into()),
        ("out =", "line 1, column 6: string values must be quoted, expected literal string".into()),
        ("page_size = 0", "line 1: `page_size` must be between 1 and 100000, not 0".into()),
        ("page_size = \"ten\"", "line 1: `page_size` takes a whole number from 1 to 100000, not a string".into()),
        ("concurrency = 257", "line 1: `concurrency` must be between 1 and 256, not 257".into()),
        ("concurrency = -1", "line 1: `concurrency` takes a whole number from 1 to 256, not -1".into()),
        ("request_timeout = \"0s\"", "line 1: `request_timeout` must be a duration above 0 and at most 1d, not 0s".into()),
        ("request_timeout = \"2d\"", "line 1: `request_timeout` must be a duration above 0 and at most 1d, not 2d".into()),
        ("request_timeout = true", "line 1: `request_timeout` takes a duration like `60`, `30s` or `1h30m`, not true".into()),
        ("max_retries = 51", "line 1: `max_retries` must be between 0 and 50, not 51".into()),
        ("max_rps = -1.0", "line 1: `max_rps`: `-1` is not a rate above 0 and at most 100000 requests per second".into()),
        ("max_response_size = \"lots\"", "line 1: `max_response_size`: `lots` is not a size between 1KB and 16GB, like `512KB` or `256MB`".into()),
        ("retry_delay = 0.0", "line 1: `retry_delay` must be a duration above 0 and at most 1m, not 0s".into()),
        ("lookback = \"soon\"", "line 1: `lookback`: `soon` is not a duration like `90`, `30s`, `5m` or `1h30m`".into()),
        ("unfinished_horizon = \"3651d\"", "line 1: `unfinished_horizon`: `3651d` is not a duration like `90`, `30s`, `5m` or `1h30m`".into()),
        ("keep_manifests = 0", "line 1: `keep_manifests` must be between 1 and 100000, not 0".into()),
        ("with_steps = 1", "line 1: `with_steps` takes `true` or `false`, not 1".into()),
        ("[privacy]\nmask = \"email\"", "line 2: `mask` takes a list of detectors, like [\"email\", \"phone\", \"card\", \"secret\", \"ip\"], not a string".into()),
        ("[privacy]\ndorp = [\"outputs\"]", "line 2: unknown key [privacy] `dorp`; did you mean `drop`?".into()),
        ("privacy = 1", "line 1: `privacy` takes a table `[privacy]` with `mask`, `hash`, `drop`, `hash_key_file` and `[[privacy.pattern]]` entries, not 1".into()),
    ];
    for (text, want) in &cases {
        std::fs::write(&path, text).unwrap();
        let out = run(&["export", "--config", &file]);
        let want = format!("error: invalid config file `{file}`: {want}");
        assert_usage_error(&out, &want, text);
        assert!(!stderr(&out).contains("sk-123"), "the key leaked");
    }
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
    ]);
    // Nothing answered yet, so a refused connection is not retried (as `curl --retry`).
    assert_clean_error(
        &out,
        5,
        "error: workflow `w` failed: request for offset 0 failed: request to `http://127.0.0.1:9/api/v1/workflow/workflows/w/runs?limit=100&offset=0` failed after 1 attempt(s)",
    );
    assert!(!stderr(&out).contains("retrying"), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(": nothing exported (1 of 1 workflows failed); no run in `"),
        "{}",
        stdout(&out)
    );
    assert_stderr_contains(&out, ": cannot connect: ");
    assert_stderr_contains(
        &out,
        "\nhint: check `--base-url` and the network: nothing accepted a connection at `127.0.0.1:9`\n",
    );
}

/// `export --all-workflows` against `base_url` with the default retries: the listing fails
/// first, after one attempt (a refused connection, a failed TLS handshake and a name that does
/// not resolve are not retried before the API ever answered).
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
    // A name that does not exist is not retried, whatever `--max-retries` allows.
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
        ],
        &[("ORCHESTRA_API_KEY", KEY), ("NO_PROXY", "*")],
    );
    assert_clean_error(
        &per_workflow,
        7,
        "error: workflow `w` failed: request for offset 0 failed: request to `http://orchestra.invalid/api/workflows/w/runs?limit=100&offset=0` failed after 1 attempt(s)",
    );
    assert_stderr_contains(
        &per_workflow,
        "\nhint: the host `orchestra.invalid` does not resolve",
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

/// Unmounts a mount point when dropped, also when the test fails.
struct Mounted(std::path::PathBuf);

impl Mounted {
    /// A read-only tmpfs at `dir`: even root cannot write there.
    fn read_only_tmpfs(dir: &std::path::Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(status.success(), "mounting a read-only tmpfs needs root");
        Self(dir.to_path_buf())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn an_unwritable_out_is_exit_4_with_one_line_naming_the_path() {
    use std::os::unix::fs::PermissionsExt;
    let sim = Sim::start(SimConfig {
        workflows: 1,
        runs_per_workflow: 5,
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    // Everyone may traverse it, for the run as `nobody` below.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"keep me").unwrap();
    let read_only = dir.path().join("read-only");
    let _mounted = Mounted::read_only_tmpfs(&read_only);
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
    let hint = "hint: check that `--out` is a writable folder with free space";
    let path = |p: std::path::PathBuf| p.display().to_string();
    let cases = [
        (
            file.join("sub"),
            format!(
                "error: cannot create `{}`: Not a directory (os error 20)",
                path(file.join("sub"))
            ),
        ),
        (
            read_only.clone(),
            format!(
                "error: cannot open `{}`: Read-only file system (os error 30)",
                path(read_only.join("_lock"))
            ),
        ),
        (
            read_only.join("sub"),
            format!(
                "error: cannot create `{}`: Read-only file system (os error 30)",
                path(read_only.join("sub"))
            ),
        ),
    ];
    for (out_dir, want) in &cases {
        let out = export(&sim, out_dir, &["--all-workflows"]);
        assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
        assert_eq!(stderr(&out), format!("{want}\n{hint}\n"));
    }
    // Root ignores permissions: run as `nobody` to get "permission denied".
    let url = sim.url();
    let as_nobody = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_orchestra-export"))
        .args(["export", "--base-url", &url, "--all-workflows", "--out"])
        .arg(&locked)
        .env("ORCHESTRA_API_KEY", KEY)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert_eq!(as_nobody.status.code(), Some(4), "{}", stderr(&as_nobody));
    assert_eq!(
        stderr(&as_nobody),
        format!(
            "error: cannot open `{}`: Permission denied (os error 13)\n{hint}\n",
            path(locked.join("_lock"))
        )
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
    assert!(
        sim.server.requests().is_empty(),
        "nothing fetched before the output was checked"
    );
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
    let sim = Sim::start(SimConfig {
        workflows: 0,
        fixtures: vec![
            fixture("down", vec![]),
            fixture("moved", vec![]),
            fixture("echo", vec![]),
        ],
        faults: vec![
            Fault::status("/down/", 500, 10),
            Fault::new("/echo/", FaultKind::EchoKey, 10),
            Fault::new(
                "/moved/",
                FaultKind::Redirect {
                    origin: format!("http://{}", other.server.addr()),
                },
                10,
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
    assert_stderr_contains(&failing, "HTTP 500 from");
    let redirected = export_with(KEY, "moved");
    assert_eq!(redirected.status.code(), Some(3), "{}", stderr(&redirected));
    // An API that quotes the Authorization header back in its error body: the quote is masked.
    let echoed = export_with(KEY, "echo");
    assert_eq!(echoed.status.code(), Some(1), "{}", stderr(&echoed));
    assert_stderr_contains(
        &echoed,
        "cannot handle request with Authorization: Bearer ***",
    );
    assert_eq!(sim.server.injected()[1], 2, "the key was echoed twice");
}

#[test]
fn a_closed_stdout_does_not_crash_the_export() {
    let sim = Sim::start(SimConfig {
        workflows: 1,
        runs_per_workflow: 30,
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let id = sim.server.workflows()[0].id.clone();
    let mut child = spawn_export(&sim, dir.path(), &["--workflow", &id]);
    // Like `orchestra-export export … | head -0`: the reader is gone before the summary.
    drop(child.stdout.take());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(read_table(dir.path(), "runs").1.len(), 30);
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
        out.join("_reports/report.html").exists(),
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
    assert_stderr_contains(&refused, "is not empty and was not written by `demo`");
    assert_eq!(std::fs::read(precious.join("notes.txt")).unwrap(), b"mine");
}

#[test]
fn sigterm_stops_fetching_commits_what_was_fetched_and_exits_130() {
    let sim = Sim::start(SimConfig {
        workflows: 6,
        runs_per_workflow: 5000,
        latency: std::time::Duration::from_millis(50),
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    // Two workflows at a time: four are not reached when the signal comes.
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
    let err = stderr(&out);
    assert_stderr_contains(&out, "interrupted: committing what was fetched");
    // One line for the interrupt, not one error per workflow it stopped.
    assert_stderr_contains(
        &out,
        "interrupted: 6 of 6 workflows not finished (2 stopped partway, 4 not started); what was fetched is committed, and the next export continues them\n",
    );
    assert!(!err.contains("error:"), "{err}");
    assert!(
        stdout(&out)
            .contains("0 of 6 workflows ok, 2 stopped partway, 4 not started (interrupted)"),
        "{}",
        stdout(&out)
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

#[test]
fn control_characters_from_the_api_or_the_command_line_never_reach_the_terminal() {
    use orchestra_export::simulate::RawFixture;
    let evil = "wf-\u{1b}]0;PWNED\u{7}\u{1b}[2J\u{202e}";
    // Listed by `GET /workflows`; its page is not an array, so it fails with its id in the
    // log line and the error line.
    let sim = Sim::start(SimConfig {
        workflows: 1,
        raw_fixtures: vec![RawFixture {
            id: evil.to_owned(),
            body: b"{\"detail\": \"nope\"}".to_vec(),
        }],
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let listed = export(&sim, dir.path(), &["--all-workflows"]);
    let given = export(&sim, dir.path(), &["--workflow", evil]);
    for (what, out) in [("listed", &listed), ("given", &given)] {
        assert_eq!(
            out.status.code(),
            Some(if what == "listed" { 1 } else { 2 })
        );
        for (stream, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            let raw = bytes
                .iter()
                .position(|b| matches!(b, 0x1b | 0x07 | 0x9b))
                .or_else(|| String::from_utf8_lossy(bytes).find('\u{202e}'));
            assert_eq!(
                raw,
                None,
                "{what}, {stream}: {}",
                String::from_utf8_lossy(bytes)
            );
        }
        let err = stderr(out);
        assert!(
            err.contains(r"wf-\u001b]0;PWNED\u0007\u001b[2J\u202e"),
            "{what}: {err}"
        );
    }
    assert!(
        stderr(&listed).contains("error: workflow `wf-\\u001b"),
        "{}",
        stderr(&listed)
    );
}

#[test]
fn a_base_url_without_the_api_path_says_where_the_api_usually_is() {
    let sim = Sim::start(SimConfig {
        workflows: 1,
        runs_per_workflow: 5,
        ..SimConfig::default()
    });
    // The simulator serves under `/api/v1/workflow`; its bare origin answers 404.
    let origin = sim.url().replace("/api/v1/workflow", "");
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().to_str().unwrap();
    let listing = run(&[
        "export",
        "--base-url",
        &origin,
        "--all-workflows",
        "--out",
        out_dir,
    ]);
    assert_eq!(listing.status.code(), Some(1), "{}", stderr(&listing));
    assert_stderr_contains(&listing, "error: cannot list workflows\n");
    assert_stderr_contains(
        &listing,
        "hint: the workflow list is not where `--base-url` points: the base URL usually ends in `/api/v1/workflow` (the default is `https://orchestra.arcee.ai/api/v1/workflow`)\n",
    );
    let id = &sim.ids()[0];
    let explicit = run(&[
        "export",
        "--base-url",
        &origin,
        "--workflow",
        id,
        "--out",
        out_dir,
    ]);
    assert_eq!(explicit.status.code(), Some(1), "{}", stderr(&explicit));
    assert_stderr_contains(
        &explicit,
        "hint: the API does not know this workflow: check the id; `--all-workflows` exports every workflow the key can read, and `--base-url` usually ends in `/api/v1/workflow`\n",
    );
    // No table of zeros ending in "committed to": one line saying nothing changed.
    let summary = stdout(&explicit);
    assert!(
        summary.contains(": nothing exported (1 of 1 workflows failed); no run in `")
            && !summary.contains("committed to"),
        "{summary}"
    );
}
