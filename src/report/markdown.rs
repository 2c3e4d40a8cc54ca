//! `summary.md`: the report's key tables as Markdown, ready to paste into a ticket.

use std::fmt::Write;

use polars::prelude::*;

use super::{Report, ReportOptions};

/// Rows shown per table in the Markdown summary.
const MAX_ROWS: usize = 15;

/// Formats one cell for people: percentages for rates, 3 decimals for seconds, minutes for times.
pub(super) fn cell(column: &str, value: &AnyValue<'_>) -> String {
    match value {
        AnyValue::Null => "—".to_owned(),
        AnyValue::Float64(v) if column.contains("_rate") => format!("{:.1}%", v * 100.0),
        AnyValue::Float64(v) if column.contains("ratio") => format!("{v:.2}×"),
        AnyValue::Float64(v) if column.contains("bytes") => format!("{v:.0}"),
        AnyValue::Float64(v) => format!("{v:.3}"),
        AnyValue::Datetime(..) | AnyValue::DatetimeOwned(..) => {
            let text = value.to_string();
            text.get(..16).unwrap_or(&text).replace('T', " ")
        }
        AnyValue::String(s) => s.replace('|', "\\|").replace('\n', " "),
        AnyValue::StringOwned(s) => s.replace('|', "\\|").replace('\n', " "),
        other => other.to_string(),
    }
}

/// The cells of `columns` for the first `limit` rows of `df` (rows where `keep` is true).
pub(super) fn rows(
    df: &DataFrame,
    columns: &[&str],
    limit: usize,
    keep: impl Fn(usize) -> bool,
) -> Vec<Vec<String>> {
    let cols: Vec<Option<&Column>> = columns.iter().map(|c| df.column(c).ok()).collect();
    (0..df.height())
        .filter(|i| keep(*i))
        .take(limit)
        .map(|i| {
            columns
                .iter()
                .zip(&cols)
                .map(|(name, col)| match col.and_then(|c| c.get(i).ok()) {
                    Some(v) => cell(name, &v),
                    None => "—".to_owned(),
                })
                .collect()
        })
        .collect()
}

fn table(out: &mut String, df: &DataFrame, columns: &[&str], keep: impl Fn(usize) -> bool) {
    let body = rows(df, columns, MAX_ROWS, keep);
    if body.is_empty() {
        let _ = writeln!(out, "_None._\n");
        return;
    }
    let _ = writeln!(out, "| {} |", columns.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(columns.len()));
    for row in body {
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    let _ = writeln!(out);
}

/// Renders `summary.md`.
pub fn render(report: &Report, options: &ReportOptions) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Orchestra workflow report\n");
    let _ = writeln!(
        out,
        "{} runs from `{}`{}. Error rate = failed ÷ all runs; durations in seconds from \
         `end_time − start_time`; quantiles interpolate linearly.\n",
        report.runs,
        options.data_name(),
        scope(options)
    );
    let empty = DataFrame::empty();
    let get = |name| report.table(name).unwrap_or(&empty);
    let _ = writeln!(out, "## Workflows\n");
    table(
        &mut out,
        get("workflow_summary"),
        &[
            "workflow_id",
            "name",
            "runs",
            "failed",
            "error_rate",
            "p50_s",
            "p95_s",
            "p99_s",
            "last_run",
        ],
        |_| true,
    );
    let regressions = get("regressions");
    let _ = writeln!(
        out,
        "## Regressions (last 7 days vs the 7 before)\n\nFlagged when both weeks have ≥ {} runs and the \
         error rate rose by ≥ {:.0} points or p95 grew ≥ {:.0}%.\n",
        super::MIN_RUNS_FOR_REGRESSION,
        super::ERROR_RATE_REGRESSION * 100.0,
        (super::P95_REGRESSION_FACTOR - 1.0) * 100.0
    );
    table(&mut out, regressions, &super::REGRESSION_COLUMNS, |i| {
        report.regressed(i)
    });
    let _ = writeln!(out, "## Top error groups\n");
    table(
        &mut out,
        get("error_groups"),
        &[
            "count",
            "workflows",
            "fingerprint",
            "last_seen",
            "sample_run_id",
        ],
        |_| true,
    );
    if report.table("failing_nodes").is_some() {
        let _ = writeln!(out, "## Failing nodes\n");
        table(
            &mut out,
            get("failing_nodes"),
            &[
                "workflow_id",
                "node_id",
                "steps",
                "failures",
                "failure_rate",
            ],
            |_| true,
        );
    }
    let _ = writeln!(out, "## Slowest runs\n");
    table(
        &mut out,
        get("slowest_runs"),
        &[
            "workflow_id",
            "run_id",
            "status",
            "start_time",
            "duration_s",
        ],
        |_| true,
    );
    out
}

/// " between 2025-03-01 and 2025-03-31 for 2 workflows", or nothing.
pub(super) fn scope(options: &ReportOptions) -> String {
    let mut text = String::new();
    match (options.since, options.until) {
        (Some(s), Some(u)) => text.push_str(&format!(" between {s} and {u}")),
        (Some(s), None) => text.push_str(&format!(" since {s}")),
        (None, Some(u)) => text.push_str(&format!(" until {u}")),
        (None, None) => {}
    }
    if !options.workflows.is_empty() {
        text.push_str(&format!(" for {} workflows", options.workflows.len()));
    }
    text
}
