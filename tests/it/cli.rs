//! Bad command-line input: one clear error, the documented exit code, no panic, nothing written.

use orchestra_export::simulate::SimConfig;

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
    assert!(stderr(&out).contains("cannot connect"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("hint: check `--base-url`"),
        "{}",
        stderr(&out)
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
    let out_dir = dir.path().join("out");
    let url = sim.url();
    let out = run_with_env(
        &[
            "-vv",
            "export",
            "--base-url",
            &url,
            "--api-key-file",
            key_file.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
            "--all-workflows",
        ],
        &[],
    );
    assert_ok(&out);
    assert!(sim.server.requests().iter().all(|r| r.had_authorization));
    assert!(
        !stdout(&out).contains(KEY) && !stderr(&out).contains(KEY),
        "key leaked to output"
    );
    for path in parquet_files(&out_dir) {
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !bytes.windows(KEY.len()).any(|w| w == KEY.as_bytes()),
            "key in {path:?}"
        );
    }
    let help = run(&["export", "--help"]);
    assert!(!stdout(&help).contains(KEY));
}
