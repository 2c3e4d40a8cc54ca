//! `report.html`: one self-contained page (inline CSS and SVG, no scripts, no network) with
//! charts of daily runs, error rate and p95 duration per workflow, and the report's tables.

use std::collections::BTreeMap;
use std::fmt::Write;

use polars::prelude::*;

use super::markdown::{rows, scope};
use super::{Report, ReportOptions};

/// Workflows drawn in the charts (the busiest); the tables list them all.
const CHART_WORKFLOWS: usize = 8;
/// Rows per table on the page.
const TABLE_ROWS: usize = 50;
const PALETTE: [&str; CHART_WORKFLOWS] = [
    "#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777",
];
const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 240.0;
const PAD_LEFT: f64 = 56.0;
const PAD_BOTTOM: f64 = 28.0;
const PAD_TOP: f64 = 12.0;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One series per workflow: day (days since epoch) → value.
type Series = Vec<(String, BTreeMap<i32, f64>)>;

fn daily_series(daily: &DataFrame, value: &str, workflows: &[String]) -> Series {
    let (Ok(days), Ok(ids), Ok(values)) = (
        daily
            .column("day")
            .and_then(|c| c.date().map(|d| d.physical().clone())),
        daily.column("workflow_id").and_then(|c| c.str().cloned()),
        daily.column(value).and_then(|c| c.cast(&DataType::Float64)),
    ) else {
        return Vec::new();
    };
    let Ok(values) = values.f64().cloned() else {
        return Vec::new();
    };
    workflows
        .iter()
        .map(|wf| {
            let points = (0..daily.height())
                .filter(|i| ids.get(*i) == Some(wf.as_str()))
                .filter_map(|i| Some((days.get(i)?, values.get(i)?)))
                .collect();
            (wf.clone(), points)
        })
        .collect()
}

fn chart(title: &str, series: &Series, format: fn(f64) -> String) -> String {
    let days: Vec<i32> = series.iter().flat_map(|(_, p)| p.keys().copied()).collect();
    let (Some(&first), Some(&last)) = (days.iter().min(), days.iter().max()) else {
        return format!("<h3>{}</h3><p class=muted>No data.</p>", escape(title));
    };
    let max = series
        .iter()
        .flat_map(|(_, p)| p.values().copied())
        .fold(0.0_f64, f64::max)
        .max(f64::MIN_POSITIVE);
    let x = |d: i32| {
        PAD_LEFT + (d - first) as f64 / (last - first).max(1) as f64 * (WIDTH - PAD_LEFT - 10.0)
    };
    let y = |v: f64| PAD_TOP + (1.0 - v / max) * (HEIGHT - PAD_TOP - PAD_BOTTOM);
    let mut svg = format!(
        r#"<h3>{}</h3><svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{}">"#,
        escape(title),
        escape(title)
    );
    for tick in 0..=4 {
        let v = max * f64::from(tick) / 4.0;
        let yy = y(v);
        let _ = write!(
            svg,
            r#"<line x1="{PAD_LEFT}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" class="grid"/><text x="{}" y="{:.1}" class="axis" text-anchor="end">{}</text>"#,
            WIDTH - 10.0,
            PAD_LEFT - 6.0,
            yy + 4.0,
            escape(&format(v))
        );
    }
    let span = (last - first).max(1);
    for step in 0..=4 {
        let d = first + span * step / 4;
        let label = chrono::NaiveDate::from_num_days_from_ce_opt(d + 719_163)
            .map(|day| day.format("%b %d").to_string())
            .unwrap_or_default();
        let anchor = match step {
            0 => "start",
            4 => "end",
            _ => "middle",
        };
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{}" class="axis" text-anchor="{anchor}">{label}</text>"#,
            x(d),
            HEIGHT - 8.0
        );
    }
    for (i, (_, points)) in series.iter().enumerate() {
        let path: Vec<String> = points
            .iter()
            .map(|(d, v)| format!("{:.1},{:.1}", x(*d), y(*v)))
            .collect();
        if !path.is_empty() {
            let _ = write!(
                svg,
                r#"<polyline fill="none" stroke="{}" stroke-width="1.6" points="{}"/>"#,
                PALETTE[i % PALETTE.len()],
                path.join(" ")
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

fn legend(workflows: &[(String, String)]) -> String {
    let items: Vec<String> = workflows
        .iter()
        .enumerate()
        .map(|(i, (id, name))| {
            format!(
                r#"<span><i style="background:{}"></i>{}</span>"#,
                PALETTE[i % PALETTE.len()],
                escape(if name.is_empty() { id } else { name })
            )
        })
        .collect();
    format!(r#"<div class="legend">{}</div>"#, items.join(""))
}

fn table(
    title: &str,
    df: Option<&DataFrame>,
    columns: &[&str],
    keep: impl Fn(usize) -> bool,
) -> String {
    let mut html = format!("<h2>{}</h2>", escape(title));
    let body = df
        .map(|df| rows(df, columns, TABLE_ROWS, keep))
        .unwrap_or_default();
    if body.is_empty() {
        html.push_str("<p class=muted>None.</p>");
        return html;
    }
    html.push_str("<div class=scroll><table><thead><tr>");
    for c in columns {
        let _ = write!(html, "<th>{}</th>", escape(&c.replace('_', " ")));
    }
    html.push_str("</tr></thead><tbody>");
    for row in body {
        html.push_str("<tr>");
        for cell in row {
            let _ = write!(html, "<td>{}</td>", escape(&cell.replace("\\|", "|")));
        }
        html.push_str("</tr>");
    }
    html.push_str("</tbody></table></div>");
    html
}

/// The busiest workflows: (id, name), by runs.
fn busiest(summary: Option<&DataFrame>) -> Vec<(String, String)> {
    let Some(df) = summary else { return Vec::new() };
    let Ok(sorted) = df.sort(
        ["runs"],
        SortMultipleOptions::default().with_order_descending(true),
    ) else {
        return Vec::new();
    };
    let ids = sorted
        .column("workflow_id")
        .ok()
        .and_then(|c| c.str().ok().cloned());
    let names = sorted
        .column("name")
        .ok()
        .and_then(|c| c.str().ok().cloned());
    (0..sorted.height().min(CHART_WORKFLOWS))
        .filter_map(|i| {
            let id = ids.as_ref()?.get(i)?.to_owned();
            let name = names
                .as_ref()
                .and_then(|n| n.get(i))
                .unwrap_or("")
                .to_owned();
            Some((id, name))
        })
        .collect()
}

/// Renders the page.
pub fn render(report: &Report, options: &ReportOptions) -> String {
    let summary = report.table("workflow_summary");
    let top = busiest(summary);
    let ids: Vec<String> = top.iter().map(|(id, _)| id.clone()).collect();
    let empty = DataFrame::empty();
    let daily = report.table("daily_trends").unwrap_or(&empty);
    let charts = [
        chart("Runs per day", &daily_series(daily, "runs", &ids), |v| {
            format!("{v:.0}")
        }),
        chart(
            "Error rate per day",
            &daily_series(daily, "error_rate", &ids),
            |v| format!("{:.0}%", v * 100.0),
        ),
        chart(
            "p95 duration per day (s)",
            &daily_series(daily, "p95_s", &ids),
            |v| format!("{v:.0}"),
        ),
    ];
    let mut html = String::from(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>Orchestra workflow report</title><style>
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2937;margin:0;background:#f8fafc}
main{max-width:1000px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px}h3{font-size:14px;margin:18px 0 4px;color:#374151}
.muted{color:#6b7280}.card{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:12px 16px;margin:12px 0}
svg{width:100%;height:auto}.grid{stroke:#e5e7eb}.axis{font-size:11px;fill:#6b7280}
.legend span{display:inline-flex;align-items:center;margin:0 14px 4px 0;font-size:12px}.legend i{width:10px;height:10px;border-radius:2px;margin-right:5px;display:inline-block}
.scroll{overflow-x:auto}table{border-collapse:collapse;width:100%;background:#fff;font-size:12.5px}
th,td{border-bottom:1px solid #e5e7eb;padding:5px 8px;text-align:left;white-space:nowrap;max-width:420px;overflow:hidden;text-overflow:ellipsis}
th{background:#f1f5f9;font-weight:600}
</style></head><body><main>"#,
    );
    let _ = write!(
        html,
        "<h1>Orchestra workflow report</h1><p class=muted>{} runs from <code>{}</code>{}. Error rate = failed ÷ all runs; durations in seconds from end_time − start_time; quantiles interpolate linearly.</p>",
        report.runs,
        escape(&options.data_name()),
        escape(&scope(options))
    );
    let _ = write!(
        html,
        r#"<div class="card">{}{}</div>"#,
        legend(&top),
        charts.join("")
    );
    html.push_str(&table(
        "Workflows",
        summary,
        &[
            "workflow_id",
            "name",
            "runs",
            "completed",
            "failed",
            "other",
            "error_rate",
            "p50_s",
            "p95_s",
            "p99_s",
            "max_s",
            "last_run",
        ],
        |_| true,
    ));
    html.push_str(&table(
        "Regressions (last 7 days vs the 7 before)",
        report.table("regressions"),
        &super::REGRESSION_COLUMNS,
        |i| report.regressed(i),
    ));
    html.push_str(&table(
        "Error groups",
        report.table("error_groups"),
        &[
            "count",
            "workflows",
            "fingerprint",
            "first_seen",
            "last_seen",
            "sample_run_id",
        ],
        |_| true,
    ));
    html.push_str(&table(
        "Slowest runs",
        report.table("slowest_runs"),
        &[
            "workflow_id",
            "name",
            "run_id",
            "status",
            "start_time",
            "duration_s",
        ],
        |_| true,
    ));
    if report.table("slowest_nodes").is_some() {
        html.push_str(&table(
            "Slowest nodes (from steps)",
            report.table("slowest_nodes"),
            &["workflow_id", "node_id", "steps", "p50_s", "p95_s", "max_s"],
            |_| true,
        ));
        html.push_str(&table(
            "Failing nodes (from steps)",
            report.table("failing_nodes"),
            &[
                "workflow_id",
                "node_id",
                "steps",
                "failures",
                "failure_rate",
                "sample_error",
            ],
            |_| true,
        ));
    }
    html.push_str(&table(
        "Node outputs",
        report.table("node_stats"),
        &[
            "workflow_id",
            "node",
            "rows",
            "value_types",
            "output_bytes_p50",
            "output_bytes_p95",
        ],
        |_| true,
    ));
    html.push_str("</main></body></html>\n");
    html
}
