//! What the page and `summary.md` show, in order, decided once from the computed tables: a
//! header (data window, freshness, totals), the findings that need attention, one row of trends
//! per workflow, then the tables, each cut to a few rows with the count of the rest. The HTML and
//! Markdown renderers only lay this out, so both say the same things in the same order.

use chrono::{DateTime, NaiveDate, Utc};
use polars::prelude::*;

use super::attention::{Finding, attention};
use super::format::Kind;
use super::trends::{Trend, all_runs_per_day, days, trends};
use super::{Report, ReportOptions, Totals};

/// Rows of each table on the page and in `summary.md` (every row is in the CSV and Parquet).
pub const TABLE_ROWS: usize = 20;
/// Rows of each finding in "Needs attention".
pub const FINDING_ROWS: usize = 5;
/// Workflows with a row of trends (the busiest).
pub const TREND_WORKFLOWS: usize = 24;

/// One shown cell: its text, and for a workflow its id as secondary text.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    pub text: String,
    pub detail: Option<String>,
}

/// Where a shown column comes from.
#[derive(Debug, Clone, Copy)]
enum Source {
    Field(&'static str),
    /// `name`, with `workflow_id` as detail (the id alone when there is no name).
    Workflow,
}

/// A shown column.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub header: &'static str,
    pub kind: Kind,
    source: Source,
}

pub(super) const fn field(header: &'static str, name: &'static str, kind: Kind) -> Column {
    Column {
        header,
        kind,
        source: Source::Field(name),
    }
}

pub(super) const WORKFLOW: Column = Column {
    header: "workflow",
    kind: Kind::Label,
    source: Source::Workflow,
};

/// A table as shown: some rows of one of the report's tables.
#[derive(Debug, Clone)]
pub struct TableView {
    /// The report table it shows (its CSV is `{file}.csv`).
    pub file: &'static str,
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Cell>>,
    /// Rows the table has (shown or not).
    pub total: usize,
}

impl TableView {
    pub(super) fn of(
        file: &'static str,
        df: &DataFrame,
        columns: &[Column],
        keep: impl Fn(usize) -> bool,
        limit: usize,
    ) -> Self {
        let wanted: Vec<usize> = (0..df.height()).filter(|i| keep(*i)).collect();
        let rows = wanted
            .iter()
            .take(limit)
            .map(|&i| columns.iter().map(|c| cell(df, c, i)).collect())
            .collect();
        Self {
            file,
            columns: columns.to_vec(),
            rows,
            total: wanted.len(),
        }
    }

    /// "20 of 120 shown" when rows were left out.
    pub fn truncation(&self) -> Option<String> {
        (self.rows.len() < self.total).then(|| {
            format!(
                "{} of {} shown; every row is in `{}.csv`",
                self.rows.len(),
                super::format::count(self.total as f64),
                self.file
            )
        })
    }
}

pub(super) fn cell(df: &DataFrame, column: &Column, i: usize) -> Cell {
    match column.source {
        Source::Field(name) => Cell {
            text: value(df, name, i)
                .map(|v| column.kind.format(&v))
                .unwrap_or_else(|| "—".to_owned()),
            detail: None,
        },
        Source::Workflow => {
            let id = text_at(df, "workflow_id", i).unwrap_or_default();
            match text_at(df, "name", i).filter(|name| *name != id) {
                Some(name) => Cell {
                    text: name,
                    detail: Some(id),
                },
                None => Cell {
                    text: id,
                    detail: None,
                },
            }
        }
    }
}

fn value<'a>(df: &'a DataFrame, column: &str, i: usize) -> Option<AnyValue<'a>> {
    df.column(column).ok()?.get(i).ok()
}

pub(super) fn text_at(df: &DataFrame, column: &str, i: usize) -> Option<String> {
    match value(df, column, i)? {
        AnyValue::String(s) => Some(s.to_owned()),
        AnyValue::StringOwned(s) => Some(s.to_string()),
        _ => None,
    }
}

pub(super) fn f64_at(df: &DataFrame, column: &str, i: usize) -> Option<f64> {
    value(df, column, i)?.extract::<f64>()
}

pub(super) fn bool_at(df: &DataFrame, column: &str, i: usize) -> bool {
    matches!(value(df, column, i), Some(AnyValue::Boolean(true)))
}

/// Everything the page shows, in order.
pub struct Page {
    pub title: String,
    /// Header lines: data, scope, window, freshness, generated at.
    pub header: Vec<(&'static str, String)>,
    /// Totals shown as figures: (label, value).
    pub figures: Vec<(&'static str, String)>,
    pub attention: Vec<Finding>,
    /// The days of the data, oldest first, and whether each is complete.
    pub days: Vec<(NaiveDate, bool)>,
    /// Runs and failed runs per day, over all workflows in scope.
    pub all_runs_per_day: Vec<(f64, f64)>,
    pub trends: Vec<Trend>,
    /// Workflows in scope (trends show at most [`TREND_WORKFLOWS`]).
    pub workflows: usize,
    pub tables: Vec<(String, TableView)>,
    pub definitions: String,
}

/// The definitions under every report.
pub const DEFINITIONS: &str = "Error rate = failed ÷ all runs (cancelled runs count as runs, not as errors); \
durations in seconds from end_time − start_time; quantiles interpolate linearly; days are UTC; \
the first and last day of the data are partial.";

/// Builds the page from the computed report.
pub fn page(report: &Report, options: &ReportOptions) -> Page {
    let empty = DataFrame::empty();
    let get = |name| report.table(name).unwrap_or(&empty);
    let totals = &report.totals;
    let days = days(get("daily_trends"));
    let steps = report.table("failing_nodes").is_some();
    let tables = TABLES
        .iter()
        .filter(|(_, file, _)| steps || !STEP_TABLES.contains(file))
        .map(|(title, file, columns)| {
            // Costs only with a price.
            let columns: Vec<Column> = columns
                .iter()
                .filter(|c| c.kind != Kind::Money || totals.cost.is_some())
                .copied()
                .collect();
            let view = TableView::of(file, get(file), &columns, |_| true, TABLE_ROWS);
            ((*title).to_owned(), view)
        })
        .collect();
    Page {
        title: "Orchestra workflow report".to_owned(),
        header: header(totals, options),
        figures: figures(totals),
        attention: attention(report, totals),
        all_runs_per_day: all_runs_per_day(get("daily_trends"), &days),
        trends: trends(
            get("workflow_summary"),
            get("daily_trends"),
            get("regressions"),
            &days,
        ),
        days,
        workflows: get("workflow_summary").height(),
        tables,
        definitions: DEFINITIONS.to_owned(),
    }
}

/// The tables at the end of the page: title, report table, columns shown.
const TABLES: [(&str, &str, &[Column]); 8] = [
    (
        "Workflows",
        "workflow_summary",
        &[
            WORKFLOW,
            field("runs", "runs", Kind::Count),
            field("failed", "failed", Kind::Count),
            field("cancelled", "cancelled", Kind::Count),
            field("error rate", "error_rate", Kind::Rate),
            field("p50", "p50_s", Kind::Seconds),
            field("p95", "p95_s", Kind::Seconds),
            field("p99", "p99_s", Kind::Seconds),
            field("max", "max_s", Kind::Seconds),
            field("last run", "last_run", Kind::Time),
        ],
    ),
    (
        "Regressions: last 7 days against the 7 before",
        "regressions",
        &REGRESSION_COLUMNS,
    ),
    ("Error groups", "error_groups", &ERROR_GROUP_COLUMNS),
    (
        "Failing nodes (from steps)",
        "failing_nodes",
        &FAILING_NODE_COLUMNS,
    ),
    (
        "Slowest nodes (from steps)",
        "slowest_nodes",
        &SLOWEST_NODE_COLUMNS,
    ),
    (
        "Tokens by node (from steps)",
        "token_usage",
        &[
            WORKFLOW,
            field("node", "node_id", Kind::Label),
            field("steps", "steps", Kind::Count),
            field("tokens", "tokens", Kind::Count),
            field("per step", "tokens_per_step", Kind::Count),
            field("p95", "tokens_p95", Kind::Count),
            field("cost", "cost", Kind::Money),
        ],
    ),
    (
        "Slowest runs",
        "slowest_runs",
        &[
            WORKFLOW,
            field("run", "run_id", Kind::Label),
            field("status", "status", Kind::Label),
            field("started", "start_time", Kind::Time),
            field("duration", "duration_s", Kind::Seconds),
        ],
    ),
    (
        "Node outputs",
        "node_stats",
        &[
            WORKFLOW,
            field("node", "node", Kind::Label),
            field("outputs", "rows", Kind::Count),
            field("types", "value_types", Kind::Label),
            field("size p50", "output_bytes_p50", Kind::Bytes),
            field("size p95", "output_bytes_p95", Kind::Bytes),
        ],
    ),
];

/// Tables only a dataset with `steps` has.
const STEP_TABLES: [&str; 3] = ["failing_nodes", "slowest_nodes", "token_usage"];

const REGRESSION_COLUMNS: [Column; 9] = [
    WORKFLOW,
    field("runs before", "runs_prev", Kind::Count),
    field("runs last 7 d", "runs_last", Kind::Count),
    field("error rate before", "error_rate_prev", Kind::Rate),
    field("error rate last 7 d", "error_rate_last", Kind::Rate),
    field("change", "error_rate_change", Kind::Change),
    field("p95 before", "p95_s_prev", Kind::Seconds),
    field("p95 last 7 d", "p95_s_last", Kind::Seconds),
    field("p95 ratio", "p95_ratio", Kind::Ratio),
];

pub(super) const ERROR_GROUP_COLUMNS: [Column; 6] = [
    field("runs", "count", Kind::Count),
    field("status", "status", Kind::Label),
    field("workflows", "workflows", Kind::Count),
    field("most affected", "top_workflows", Kind::Text),
    field("message (values masked)", "fingerprint", Kind::Text),
    field("last seen", "last_seen", Kind::Time),
];

pub(super) const FAILING_NODE_COLUMNS: [Column; 6] = [
    WORKFLOW,
    field("node", "node_id", Kind::Label),
    field("steps", "steps", Kind::Count),
    field("failures", "failures", Kind::Count),
    field("failure rate", "failure_rate", Kind::Rate),
    field("sample error", "sample_error", Kind::Text),
];

pub(super) const SLOWEST_NODE_COLUMNS: [Column; 6] = [
    WORKFLOW,
    field("node", "node_id", Kind::Label),
    field("steps", "steps", Kind::Count),
    field("p50", "p50_s", Kind::Seconds),
    field("p95", "p95_s", Kind::Seconds),
    field("max", "max_s", Kind::Seconds),
];

fn header(totals: &Totals, options: &ReportOptions) -> Vec<(&'static str, String)> {
    let mut lines = vec![("data", format!("{}{}", options.data_name(), scope(options)))];
    let time = |t: Option<DateTime<Utc>>| {
        t.map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
            .unwrap_or_else(|| "—".to_owned())
    };
    lines.push((
        "window",
        format!(
            "{} → {} ({} days, {} complete)",
            time(totals.first_run),
            time(totals.newest_run),
            totals.days,
            totals.complete_days
        ),
    ));
    let freshness = match totals.newest_run {
        Some(newest) => format!(
            "{} ({} before this report)",
            time(Some(newest)),
            age(totals.generated_at - newest)
        ),
        None => "—".to_owned(),
    };
    lines.push(("newest run", freshness));
    lines.push(("generated", time(Some(totals.generated_at))));
    lines
}

/// `3 d 4 h`, `5 h 12 min`, `12 min`.
fn age(d: chrono::TimeDelta) -> String {
    let minutes = d.num_minutes().max(0);
    let (days, hours, mins) = (minutes / 1440, minutes / 60 % 24, minutes % 60);
    if days > 0 {
        format!("{days} d {hours} h")
    } else if hours > 0 {
        format!("{hours} h {mins} min")
    } else {
        format!("{mins} min")
    }
}

fn figures(totals: &Totals) -> Vec<(&'static str, String)> {
    use super::format::{count, rate};
    let mut figures = vec![
        ("runs", count(totals.runs as f64)),
        ("workflows", count(totals.workflows as f64)),
        ("failed", count(totals.failed as f64)),
        (
            "error rate",
            if totals.runs > 0 {
                rate(totals.failed as f64 / totals.runs as f64)
            } else {
                "—".to_owned()
            },
        ),
        ("cancelled", count(totals.cancelled as f64)),
    ];
    if let Some(tokens) = totals.tokens {
        figures.push(("tokens", count(tokens as f64)));
    }
    if let Some(cost) = totals.cost {
        figures.push(("token cost", super::format::money(cost)));
    }
    figures
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_say_how_many_rows_they_leave_out() {
        let df = df!("workflow_id" => (0..120).map(|i| format!("w{i}")).collect::<Vec<_>>(),
                     "name" => (0..120).map(|i| format!("Flow {i}")).collect::<Vec<_>>())
        .unwrap();
        let view = TableView::of("slowest_nodes", &df, &[WORKFLOW], |_| true, 20);
        assert_eq!(view.rows.len(), 20);
        assert_eq!(
            view.truncation().as_deref(),
            Some("20 of 120 shown; every row is in `slowest_nodes.csv`")
        );
        assert_eq!(
            view.rows[3][0],
            Cell {
                text: "Flow 3".into(),
                detail: Some("w3".into())
            },
            "a workflow shows by name, its id as detail"
        );
        let all = TableView::of("x", &df, &[WORKFLOW], |i| i < 5, 20);
        assert_eq!((all.rows.len(), all.truncation()), (5, None));
    }
}
