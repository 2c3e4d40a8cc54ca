//! "Needs attention": the findings the page and `summary.md` lead with, chosen from the
//! computed tables: what regressed (with the numbers that flagged it and the thresholds, or why
//! nothing could be judged), the worst error rates and p95, the largest error groups, the failing
//! and slowest nodes.

use polars::prelude::*;

use super::format::Kind;
use super::view::{
    Column, ERROR_GROUP_COLUMNS, FAILING_NODE_COLUMNS, FINDING_ROWS, SLOWEST_NODE_COLUMNS,
    TableView, WORKFLOW, bool_at, f64_at, field, text_at,
};
use super::{
    ERROR_RATE_REGRESSION, MIN_RUNS_FOR_REGRESSION, P95_REGRESSION_FACTOR, Report, Totals,
};

/// A finding of "Needs attention": a title, sentences, and the rows behind it.
#[derive(Debug, Clone)]
pub struct Finding {
    pub title: String,
    pub lines: Vec<String>,
    pub table: Option<TableView>,
}

pub fn attention(report: &Report, totals: &Totals) -> Vec<Finding> {
    let empty = DataFrame::empty();
    let get = |name| report.table(name).unwrap_or(&empty);
    let mut findings = vec![regression_finding(get("regressions"), totals)];
    let summary = get("workflow_summary");
    let judged =
        |i: usize| f64_at(summary, "runs", i).unwrap_or(0.0) >= f64::from(MIN_RUNS_FOR_REGRESSION);
    let by = |column: &str| -> Vec<usize> {
        let mut rows: Vec<usize> = (0..summary.height())
            .filter(|i| judged(*i) && f64_at(summary, column, *i).is_some_and(|v| v > 0.0))
            .collect();
        rows.sort_by(|a, b| {
            let (a, b) = (f64_at(summary, column, *a), f64_at(summary, column, *b));
            b.partial_cmp(&a).unwrap_or(std::cmp::Ordering::Equal)
        });
        rows
    };
    let top =
        |title: &str, line: Option<String>, file, df: &DataFrame, columns: &[Column]| Finding {
            title: title.to_owned(),
            lines: line.into_iter().collect(),
            table: Some(TableView::of(file, df, columns, |_| true, FINDING_ROWS)),
        };
    findings.push(top(
        "Highest error rates",
        Some(format!(
            "Workflows with at least {MIN_RUNS_FOR_REGRESSION} runs, by failed ÷ all runs."
        )),
        "workflow_summary",
        &take(summary, &by("error_rate")),
        &[
            WORKFLOW,
            field("error rate", "error_rate", Kind::Rate),
            field("failed", "failed", Kind::Count),
            field("runs", "runs", Kind::Count),
            field("p95", "p95_s", Kind::Seconds),
        ],
    ));
    findings.push(top(
        "Slowest workflows (p95)",
        None,
        "workflow_summary",
        &take(summary, &by("p95_s")),
        &[
            WORKFLOW,
            field("p95", "p95_s", Kind::Seconds),
            field("p50", "p50_s", Kind::Seconds),
            field("max", "max_s", Kind::Seconds),
            field("runs", "runs", Kind::Count),
        ],
    ));
    findings.push(top(
        "Largest error groups",
        Some("Messages that differ only in ids and values are one group; `cancelled` groups are not errors in the error rate.".to_owned()),
        "error_groups",
        get("error_groups"),
        &ERROR_GROUP_COLUMNS[..5],
    ));
    if let Some(failing) = report.table("failing_nodes") {
        findings.push(top(
            "Failing nodes",
            None,
            "failing_nodes",
            failing,
            &FAILING_NODE_COLUMNS[..5],
        ));
    }
    if let Some(slowest) = report.table("slowest_nodes") {
        findings.push(top(
            "Slowest nodes (p95)",
            None,
            "slowest_nodes",
            slowest,
            &SLOWEST_NODE_COLUMNS[..5],
        ));
    }
    findings
}

/// The rows `rows` of `df`, in that order.
fn take(df: &DataFrame, rows: &[usize]) -> DataFrame {
    let idx = IdxCa::from_vec("idx".into(), rows.iter().map(|r| *r as IdxSize).collect());
    df.take(&idx).unwrap_or_else(|_| df.clear())
}

/// What the regression check found: regressed workflows with the numbers that flagged them,
/// or that none did, or that the data is too short to tell.
fn regression_finding(regressions: &DataFrame, totals: &Totals) -> Finding {
    let thresholds = format!(
        "Flagged when the error rate rose by ≥ {:.0} pts or p95 grew to ≥ {:.2}× the week before, with ≥ {} runs in each week; weeks end on the newest day of the data.",
        ERROR_RATE_REGRESSION * 100.0,
        P95_REGRESSION_FACTOR,
        MIN_RUNS_FOR_REGRESSION
    );
    let regressed: Vec<usize> = (0..regressions.height())
        .filter(|i| bool_at(regressions, "regressed", *i))
        .collect();
    let judged = (0..regressions.height())
        .filter(|i| bool_at(regressions, "judged", *i))
        .count();
    let unjudged = regressions.height() - judged;
    let title;
    let mut lines = Vec::new();
    if !regressed.is_empty() {
        title = format!(
            "Regressed: {} of {} workflows compared",
            regressed.len(),
            judged
        );
        for &i in &regressed {
            let name = text_at(regressions, "name", i)
                .or_else(|| text_at(regressions, "workflow_id", i))
                .unwrap_or_default();
            lines.push(format!("{name}: {}", reasons(regressions, i).join("; ")));
        }
    } else if judged == 0 {
        title = "Regressions: too little data to judge".to_owned();
        lines.push(format!(
            "No workflow has {MIN_RUNS_FOR_REGRESSION} runs in both of the last two weeks (the data covers {} days).",
            totals.days
        ));
    } else {
        title = format!("No regression among {judged} workflows compared");
    }
    if unjudged > 0 && judged > 0 {
        lines.push(format!(
            "{unjudged} more had too few runs in one of the weeks to judge."
        ));
    }
    lines.push(thresholds);
    Finding {
        title,
        lines,
        table: (!regressed.is_empty()).then(|| {
            TableView::of(
                "regressions",
                regressions,
                &[
                    WORKFLOW,
                    field("runs (7 d)", "runs_last", Kind::Count),
                    field("errors before", "error_rate_prev", Kind::Rate),
                    field("errors (7 d)", "error_rate_last", Kind::Rate),
                    field("p95 before", "p95_s_prev", Kind::Seconds),
                    field("p95 (7 d)", "p95_s_last", Kind::Seconds),
                ],
                |i| regressed.contains(&i),
                FINDING_ROWS * 2,
            )
        }),
    }
}

/// Why row `i` of `regressions` is flagged: the numbers against their thresholds.
pub(super) fn reasons(regressions: &DataFrame, i: usize) -> Vec<String> {
    use super::format::{rate, seconds};
    let get = |c| f64_at(regressions, c, i);
    let mut out = Vec::new();
    if let (Some(before), Some(last), Some(change)) = (
        get("error_rate_prev"),
        get("error_rate_last"),
        get("error_rate_change"),
    ) && change >= ERROR_RATE_REGRESSION
    {
        out.push(format!(
            "error rate {} → {} ({:+.1} pts, threshold +{:.0})",
            rate(before),
            rate(last),
            change * 100.0,
            ERROR_RATE_REGRESSION * 100.0
        ));
    }
    if let (Some(before), Some(last), Some(ratio)) =
        (get("p95_s_prev"), get("p95_s_last"), get("p95_ratio"))
        && ratio >= P95_REGRESSION_FACTOR
    {
        out.push(format!(
            "p95 {} → {} ({ratio:.2}×, threshold {P95_REGRESSION_FACTOR:.2}×)",
            seconds(before),
            seconds(last)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (name, regressed, judged, runs before, runs last, error rate before, last, p95 before, last)
    type Row = (&'static str, bool, bool, i64, i64, f64, f64, f64, f64);

    fn regressions(rows: &[Row]) -> DataFrame {
        let col = |f: fn(&Row) -> f64| -> Vec<f64> { rows.iter().map(f).collect() };
        df!(
            "workflow_id" => rows.iter().map(|r| format!("id-{}", r.0)).collect::<Vec<_>>(),
            "name" => rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            "regressed" => rows.iter().map(|r| r.1).collect::<Vec<_>>(),
            "judged" => rows.iter().map(|r| r.2).collect::<Vec<_>>(),
            "runs_prev" => rows.iter().map(|r| r.3).collect::<Vec<_>>(),
            "runs_last" => rows.iter().map(|r| r.4).collect::<Vec<_>>(),
            "error_rate_prev" => col(|r| r.5),
            "error_rate_last" => col(|r| r.6),
            "error_rate_change" => col(|r| r.6 - r.5),
            "p95_s_prev" => col(|r| r.7),
            "p95_s_last" => col(|r| r.8),
            "p95_ratio" => col(|r| r.8 / r.7),
        )
        .unwrap()
    }

    fn totals(days: usize) -> Totals {
        Totals {
            days,
            ..Totals::default()
        }
    }

    #[test]
    fn the_regression_finding_says_what_triggered_it_and_when_it_cannot_judge() {
        let cases: &[(DataFrame, &str, &[&str])] = &[
            (
                regressions(&[
                    ("Invoices", true, true, 300, 280, 0.07, 0.26, 40.0, 84.0),
                    ("Jokes", false, true, 300, 290, 0.07, 0.08, 40.0, 41.0),
                    ("Slow", true, true, 300, 290, 0.07, 0.07, 10.0, 13.0),
                    ("New", false, false, 0, 50, f64::NAN, 0.1, f64::NAN, 5.0),
                ]),
                "Regressed: 2 of 3 workflows compared",
                &[
                    "Invoices: error rate 7.0% → 26.0% (+19.0 pts, threshold +5); p95 40.0 s → 1 min 24 s (2.10×, threshold 1.25×)",
                    "Slow: p95 10.0 s → 13.0 s (1.30×, threshold 1.25×)",
                    "1 more had too few runs in one of the weeks to judge.",
                ],
            ),
            (
                regressions(&[("Jokes", false, true, 300, 290, 0.07, 0.08, 40.0, 41.0)]),
                "No regression among 1 workflows compared",
                &[],
            ),
            (
                regressions(&[("New", false, false, 0, 50, f64::NAN, 0.1, f64::NAN, 5.0)]),
                "Regressions: too little data to judge",
                &[
                    "No workflow has 20 runs in both of the last two weeks (the data covers 6 days).",
                ],
            ),
        ];
        for (df, title, lines) in cases {
            let finding = regression_finding(df, &totals(6));
            assert_eq!(finding.title, *title);
            let (thresholds, rest) = finding.lines.split_last().unwrap();
            assert!(
                thresholds.starts_with(
                    "Flagged when the error rate rose by ≥ 5 pts or p95 grew to ≥ 1.25×"
                ),
                "{thresholds}"
            );
            assert_eq!(rest, *lines, "{title}");
            assert_eq!(finding.table.is_some(), title.starts_with("Regressed"));
        }
    }
}
