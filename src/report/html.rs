//! `report.html`: the page as one self-contained file (inline CSS and SVG; no script, no font,
//! no request). The header and "Needs attention" come first, then a chart of runs per day and
//! one row of sparklines per workflow on a shared time axis, then the tables. Tables fit the
//! width or scroll inside their own box; numbers are right-aligned.

use std::fmt::Write;

use super::format::{count, rate, seconds, tick_label, ticks};
use super::trends::Trend;
use super::view::{Cell, Page, TableView};

const STYLE: &str = r#"
:root{--fg:#1f2937;--muted:#6b7280;--line:#e5e7eb;--bad:#dc2626;--accent:#2563eb}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);margin:0;background:#f8fafc}
main{max-width:1480px;margin:0 auto;padding:20px 24px 40px}
h1{font-size:22px;margin:0 0 6px}h2{font-size:18px;margin:30px 0 10px}h3{font-size:15px;margin:0 0 6px}
.muted,small{color:var(--muted)}small{font-size:11.5px}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:8px 0 12px;font-size:13px}
dl.meta dt{color:var(--muted)}dl.meta dd{margin:0;overflow-wrap:anywhere}
.figures{display:flex;flex-wrap:wrap;gap:10px;margin:8px 0}
.figure{background:#fff;border:1px solid var(--line);border-radius:8px;padding:8px 14px;min-width:110px}
.figure b{display:block;font-size:20px;font-variant-numeric:tabular-nums}.figure span{color:var(--muted);font-size:12px}
.findings{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,560px),1fr));gap:12px}
.card{background:#fff;border:1px solid var(--line);border-radius:8px;padding:12px 14px;min-width:0}
.card.alert{border-color:var(--bad);border-width:2px}.card.wide{grid-column:1/-1}
.card ul{margin:4px 0 8px;padding-left:18px}
.tbl{overflow-x:auto;max-width:100%;border:1px solid var(--line);border-radius:6px;background:#fff}
table{border-collapse:collapse;width:100%;font-size:12.5px}
th,td{border-bottom:1px solid var(--line);padding:5px 8px;text-align:left;vertical-align:top;white-space:nowrap}
th{background:#f1f5f9;font-weight:600;position:sticky;top:0}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
td.text{white-space:normal;min-width:16ch;max-width:60ch;overflow-wrap:anywhere}
td small{display:block}
p.note{margin:4px 0 0;font-size:12px;color:var(--muted)}
svg{display:block;width:100%;height:auto}
.grid{stroke:var(--line)}.axis{font-size:11px;fill:var(--muted)}
.trends{display:grid;grid-template-columns:minmax(150px,1.3fr) repeat(3,minmax(110px,1fr));gap:0 14px;align-items:center;background:#fff;border:1px solid var(--line);border-radius:8px;padding:8px 12px}
.trends>div{padding:5px 0;border-bottom:1px solid var(--line);min-width:0}
.trends .head{font-weight:600;font-size:12px;color:var(--muted)}
.trends .wf{overflow-wrap:anywhere}.trends .wf small{display:block}
.spark figcaption{font-size:11px;color:var(--muted);font-variant-numeric:tabular-nums}
.spark{margin:0}
.badge{display:inline-block;background:var(--bad);color:#fff;border-radius:4px;font-size:11px;padding:0 5px;margin-left:6px}
.legend{font-size:12px;color:var(--muted);margin:4px 0}
.legend i{display:inline-block;width:10px;height:10px;border-radius:2px;margin:0 4px 0 10px;vertical-align:-1px}
footer{margin-top:30px;font-size:12px;color:var(--muted)}
"#;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `text` with `code spans` (backticks) as `<code>`.
fn inline(text: &str) -> String {
    let mut out = String::new();
    for (i, part) in escape(text).split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "<code>{part}</code>");
        } else {
            out.push_str(part);
        }
    }
    out
}

fn cell(c: &Cell) -> String {
    match &c.detail {
        Some(id) => format!("{}<small>{}</small>", escape(&c.text), escape(id)),
        None => escape(&c.text),
    }
}

fn table(html: &mut String, view: &TableView) {
    if view.rows.is_empty() {
        html.push_str("<p class=muted>None.</p>");
        return;
    }
    let class = |kind: super::format::Kind| {
        if kind.numeric() {
            " class=num"
        } else if kind == super::format::Kind::Text {
            " class=text"
        } else {
            ""
        }
    };
    let _ = write!(
        html,
        r#"<div class="tbl" data-table="{}"><table><thead><tr>"#,
        view.file
    );
    for c in &view.columns {
        let _ = write!(html, "<th{}>{}</th>", class(c.kind), escape(c.header));
    }
    html.push_str("</tr></thead><tbody>");
    for row in &view.rows {
        html.push_str("<tr>");
        for (c, value) in view.columns.iter().zip(row) {
            let _ = write!(html, "<td{}>{}</td>", class(c.kind), cell(value));
        }
        html.push_str("</tr>");
    }
    html.push_str("</tbody></table></div>");
    if let Some(note) = view.truncation() {
        let _ = write!(html, "<p class=note>{}.</p>", inline(&note));
    }
}

/// Runs per day over all workflows: bars, failed runs in red, partial days pale.
fn runs_chart(page: &Page) -> String {
    const W: f64 = 1000.0;
    const H: f64 = 190.0;
    const LEFT: f64 = 52.0;
    const BOTTOM: f64 = 24.0;
    const TOP: f64 = 8.0;
    let n = page.days.len();
    if n == 0 {
        return "<p class=muted>No runs with a start time.</p>".to_owned();
    }
    let max = page
        .all_runs_per_day
        .iter()
        .map(|(runs, _)| *runs)
        .fold(0.0, f64::max);
    let ticks = ticks(max, 4);
    let top = *ticks.last().unwrap_or(&1.0);
    let step = ticks.get(1).copied().unwrap_or(1.0);
    let y = |v: f64| TOP + (1.0 - v / top) * (H - TOP - BOTTOM);
    let slot = (W - LEFT - 4.0) / n as f64;
    let mut svg = format!(
        r#"<svg viewBox="0 0 {W} {H}" role="img" aria-label="Runs per day, all workflows">"#
    );
    for t in &ticks {
        let _ = write!(
            svg,
            r#"<line x1="{LEFT}" x2="{W}" y1="{0:.1}" y2="{0:.1}" class="grid"/><text x="{1}" y="{2:.1}" class="axis" text-anchor="end">{3}</text>"#,
            y(*t),
            LEFT - 6.0,
            y(*t) + 4.0,
            tick_label(*t, step, false)
        );
    }
    for (i, ((day, complete), (runs, failed))) in
        page.days.iter().zip(&page.all_runs_per_day).enumerate()
    {
        let x = LEFT + i as f64 * slot + slot * 0.1;
        let w = (slot * 0.8).max(0.5);
        let opacity = if *complete { "1" } else { "0.35" };
        let partial = if *complete { "" } else { " (partial day)" };
        let _ = write!(
            svg,
            r##"<g opacity="{opacity}"><title>{day}{partial}: {} runs, {} failed</title><rect x="{x:.1}" y="{:.1}" width="{w:.1}" height="{:.1}" fill="#93c5fd"/><rect x="{x:.1}" y="{:.1}" width="{w:.1}" height="{:.1}" fill="#dc2626"/></g>"##,
            count(*runs),
            count(*failed),
            y(*runs),
            (y(0.0) - y(*runs)).max(0.0),
            y(*failed),
            (y(0.0) - y(*failed)).max(0.0),
        );
    }
    let label_every = n.div_ceil(8).max(1);
    for (i, (day, _)) in page.days.iter().enumerate() {
        // Every few days, and the last one (not crowding the one before it).
        let regular = i % label_every == 0 && n - 1 - i >= label_every.div_ceil(2);
        if regular || i + 1 == n {
            let (x, anchor) = match i {
                0 => (LEFT, "start"),
                _ if i + 1 == n => (W, "end"),
                _ => (LEFT + (i as f64 + 0.5) * slot, "middle"),
            };
            let _ = write!(
                svg,
                r#"<text x="{x:.1}" y="{}" class="axis" text-anchor="{anchor}">{}</text>"#,
                H - 6.0,
                day.format("%b %d")
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

/// A sparkline of one workflow's daily values on the shared axis: complete days as a line,
/// partial days as open dots.
fn sparkline(
    values: &[Option<f64>],
    days: &[(chrono::NaiveDate, bool)],
    label: &str,
    fmt: fn(f64) -> String,
) -> String {
    const W: f64 = 200.0;
    const H: f64 = 34.0;
    let max = values.iter().flatten().copied().fold(0.0, f64::max);
    let n = values.len().max(1);
    let x = |i: usize| 2.0 + i as f64 * (W - 4.0) / (n.max(2) - 1) as f64;
    let y = |v: f64| 2.0 + (1.0 - if max > 0.0 { v / max } else { 0.0 }) * (H - 4.0);
    let mut svg = format!(
        r#"<svg viewBox="0 0 {W} {H}" preserveAspectRatio="none" role="img" aria-label="{}"><line x1="0" x2="{W}" y1="{:.1}" y2="{:.1}" class="grid"/>"#,
        escape(label),
        y(0.0),
        y(0.0)
    );
    let mut segment: Vec<String> = Vec::new();
    let flush = |svg: &mut String, segment: &mut Vec<String>| {
        if !segment.is_empty() {
            let _ = write!(
                svg,
                r##"<polyline fill="none" stroke="#2563eb" stroke-width="1.5" vector-effect="non-scaling-stroke" points="{}"/>"##,
                segment.join(" ")
            );
            segment.clear();
        }
    };
    for (i, v) in values.iter().enumerate() {
        let complete = days.get(i).is_some_and(|d| d.1);
        match v {
            Some(v) if complete => segment.push(format!("{:.1},{:.1}", x(i), y(*v))),
            Some(v) => {
                flush(&mut svg, &mut segment);
                let _ = write!(
                    svg,
                    r##"<circle cx="{:.1}" cy="{:.1}" r="2" fill="none" stroke="#9ca3af"><title>partial day</title></circle>"##,
                    x(i),
                    y(*v)
                );
            }
            None => flush(&mut svg, &mut segment),
        }
    }
    flush(&mut svg, &mut segment);
    svg.push_str("</svg>");
    let last = values
        .iter()
        .zip(days)
        .rev()
        .find_map(|(v, d)| v.filter(|_| d.1));
    format!(
        r#"<figure class="spark">{svg}<figcaption>max {} · last full day {}</figcaption></figure>"#,
        fmt(max),
        last.map_or("—".into(), fmt)
    )
}

fn trend_row(html: &mut String, t: &Trend, days: &[(chrono::NaiveDate, bool)]) {
    let badge = if t.regressed {
        r#"<span class="badge">regressed</span>"#
    } else {
        ""
    };
    let _ = write!(
        html,
        r#"<div class="wf">{}{badge}<small>{} runs · {} errors · p95 {}</small></div>"#,
        cell(&t.workflow),
        count(t.runs),
        t.error_rate.map_or("—".into(), rate),
        t.p95_s.map_or("—".into(), seconds)
    );
    let fmt_count: fn(f64) -> String = count;
    let fmt_rate: fn(f64) -> String = rate;
    let fmt_seconds: fn(f64) -> String = seconds;
    for (values, label, fmt) in [
        (&t.runs_per_day, "runs per day", fmt_count),
        (&t.error_rate_per_day, "error rate per day", fmt_rate),
        (&t.p95_per_day, "p95 per day", fmt_seconds),
    ] {
        let _ = write!(
            html,
            "<div>{}</div>",
            sparkline(values, days, &format!("{}: {label}", t.workflow.text), fmt)
        );
    }
}

/// Renders the page.
pub fn render(page: &Page) -> String {
    let mut html = format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>{}</title><style>{STYLE}</style></head><body><main>"#,
        escape(&page.title)
    );
    let _ = write!(
        html,
        r#"<header id="overview"><h1>{}</h1><dl class="meta">"#,
        escape(&page.title)
    );
    for (label, text) in &page.header {
        let _ = write!(html, "<dt>{}</dt><dd>{}</dd>", escape(label), inline(text));
    }
    html.push_str(r#"</dl><div class="figures">"#);
    for (label, value) in &page.figures {
        let _ = write!(
            html,
            r#"<div class="figure"><b>{}</b><span>{}</span></div>"#,
            escape(value),
            escape(label)
        );
    }
    html.push_str("</div></header>");

    html.push_str(r#"<section id="attention"><h2>Needs attention</h2><div class="findings">"#);
    for (i, finding) in page.attention.iter().enumerate() {
        // The regression finding comes first and spans the row; red when something regressed.
        let alert = match (i, finding.table.is_some()) {
            (0, true) => " wide alert",
            (0, false) => " wide",
            _ => "",
        };
        let _ = write!(
            html,
            r#"<div class="card{alert}"><h3>{}</h3>"#,
            escape(&finding.title)
        );
        if !finding.lines.is_empty() {
            html.push_str("<ul>");
            for line in &finding.lines {
                let _ = write!(html, "<li>{}</li>", inline(line));
            }
            html.push_str("</ul>");
        }
        if let Some(view) = &finding.table {
            table(&mut html, view);
        }
        html.push_str("</div>");
    }
    html.push_str("</div></section>");

    let _ = write!(
        html,
        r##"<section id="trends"><h2>Trends</h2><div class="card"><h3>Runs per day, all workflows</h3><div class="legend"><i style="background:#93c5fd"></i>runs<i style="background:#dc2626"></i>failed<i style="background:#93c5fd;opacity:.35"></i>partial day (first and last)</div>{}</div>"##,
        runs_chart(page)
    );
    let span = match (page.days.first(), page.days.last()) {
        (Some(a), Some(b)) => format!("{} → {}", a.0, b.0),
        _ => String::new(),
    };
    let _ = write!(
        html,
        r#"<h3 style="margin-top:16px">Per workflow: {} of {} shown</h3><p class=note>Each sparkline spans the same days ({span}, UTC); open dots are partial days, gaps are days without runs.</p><div class="trends"><div class="head">workflow</div><div class="head">runs per day</div><div class="head">error rate per day</div><div class="head">p95 per day</div>"#,
        page.trends.len(),
        page.workflows
    );
    for t in &page.trends {
        trend_row(&mut html, t, &page.days);
    }
    html.push_str("</div></section>");

    html.push_str(r#"<section id="tables">"#);
    for (title, view) in &page.tables {
        let _ = write!(html, "<h2>{}</h2>", escape(title));
        table(&mut html, view);
    }
    let _ = writeln!(
        html,
        "</section><footer>{}</footer></main></body></html>",
        escape(&page.definitions)
    );
    html
}
