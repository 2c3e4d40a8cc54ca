//! `report`: reads a dataset (downloading one from object storage first) and writes the
//! report tables, `summary.md` and `report.html`.

use super::args::ReportArgs;
use super::{Ui, report_error};
use crate::dataset::{self, Location};
use crate::exit;
use crate::report::{self, ReportError, ReportOptions};

pub(super) fn run_report(args: ReportArgs, ui: Ui) -> i32 {
    if let (Some(since), Some(until)) = (args.since, args.until)
        && since > until
    {
        shout!("error: `--since` {since} is after `--until` {until}");
        return exit::USAGE;
    }
    // An object store dataset is downloaded to a temporary folder first (removed on return).
    let (data, source, _download) = if Location::is_url(&args.data) {
        match download_for_report(&args.data, args.out.is_some()) {
            Ok(dir) => (
                dir.path().to_path_buf(),
                Some(args.data.display().to_string()),
                Some(dir),
            ),
            Err(code) => return code,
        }
    } else {
        (args.data.clone(), None, None)
    };
    let options = ReportOptions {
        out: args
            .out
            .unwrap_or_else(|| args.data.join(report::REPORTS_DIR)),
        data,
        since: args.since,
        until: args.until,
        workflows: args.workflows,
        top_n: args.top,
        price_per_million_tokens: args.price_per_million_tokens,
        source,
    };
    write_report(&options, ui)
}

/// Downloads the dataset at the URL `data` into a temporary folder; on failure prints the error
/// and returns the exit code.
pub(super) fn download_for_report(
    data: &std::path::Path,
    has_out: bool,
) -> Result<tempfile::TempDir, i32> {
    let shown = crate::dataset::shown_url(&data.to_string_lossy());
    if !has_out {
        shout!(
            "error: `--data {shown}` is in an object store: pass `--out DIR`, the local folder for the reports"
        );
        return Err(exit::USAGE);
    }
    let dir = tempfile::tempdir().map_err(|e| {
        report_error(
            &e,
            Some("set `TMPDIR` to a folder with room for the dataset"),
        );
        exit::OUTPUT
    })?;
    match dataset::download(data, dir.path()) {
        Ok(_) if !dir.path().join("runs").exists() => {
            shout!("error: no `runs` table in `{shown}`: is it an orchestra-export dataset?");
            shout!("hint: pass `--data URL`, the `--out` of an export");
            Err(exit::USAGE)
        }
        Ok(files) => {
            tracing::info!(target: "report", files, "downloaded the dataset from `{shown}`");
            Ok(dir)
        }
        Err(e) => {
            shout!("error: {}", crate::error_chain(&e));
            if let Some(hint) = e.hint() {
                shout!("hint: {hint}");
            }
            Err(exit::OUTPUT)
        }
    }
}

/// Writes the reports and prints where they are; returns the exit code.
pub(super) fn write_report(options: &ReportOptions, ui: Ui) -> i32 {
    match report::run(options) {
        Ok(done) => {
            for warning in &done.warnings {
                shout!("warning: {warning}");
            }
            let tables: Vec<String> = done
                .tables
                .iter()
                .map(|(name, df)| match *name {
                    // Rows compared are not regressions: say how many regressed.
                    "regressions" => format!(
                        "{name} ({} of {} workflows regressed)",
                        done.regressed(),
                        df.height()
                    ),
                    _ => format!("{name} ({})", df.height()),
                })
                .collect();
            if ui.quiet {
                return exit::SUCCESS;
            }
            say!(
                "report: {} runs in {:.2} s -> `{}`: {}, summary.md, report.html",
                done.runs,
                done.elapsed.as_secs_f64(),
                options.out.display(),
                tables.join(", ")
            );
            exit::SUCCESS
        }
        Err(e) => {
            let (code, hint) = match e {
                ReportError::NoData { .. } => (
                    exit::USAGE,
                    Some("pass `--data DIR`, the `--out` folder of an export"),
                ),
                ReportError::Io { .. } => (exit::OUTPUT, None),
                ReportError::Delta(_) => (exit::PARTIAL_FAILURE, None),
                ReportError::Polars { .. } => (exit::PARTIAL_FAILURE, None),
                ReportError::Filter { ref hint, .. } => {
                    report_error(&e, Some(hint.as_str()));
                    return exit::USAGE;
                }
                ReportError::Read { .. } => (
                    exit::PARTIAL_FAILURE,
                    Some(
                        "`orchestra-export verify --out DIR` reads every file of the dataset and compares it with the API",
                    ),
                ),
            };
            report_error(&e, hint);
            code
        }
    }
}
