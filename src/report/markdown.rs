//! `summary.md`: the page's content in the same order, as Markdown to paste into a ticket
//! (trends as text sparklines).

use std::fmt::Write;

use super::format::{count, rate, seconds, sparkline};
use super::view::{Cell, Page, TableView};

/// `text` safe in a Markdown table cell or list item: HTML-significant characters as entities
/// (`<n>` in a fingerprint would be read as a tag and vanish), `|` escaped, line breaks as spaces.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('|', "\\|")
        .replace(['\n', '\r'], " ")
}

/// A workflow's id shortened for a table cell.
fn short(id: &str) -> String {
    if id.chars().count() > 12 {
        format!("{}…", id.chars().take(8).collect::<String>())
    } else {
        id.to_owned()
    }
}

fn cell(c: &Cell) -> String {
    match &c.detail {
        Some(id) => format!("{} (`{}`)", escape(&c.text), short(id)),
        None => escape(&c.text),
    }
}

fn table(out: &mut String, view: &TableView) {
    if view.rows.is_empty() {
        let _ = writeln!(out, "_None._\n");
        return;
    }
    let headers: Vec<&str> = view.columns.iter().map(|c| c.header).collect();
    let _ = writeln!(out, "| {} |", headers.join(" | "));
    let align: Vec<&str> = view
        .columns
        .iter()
        .map(|c| if c.kind.numeric() { "---:" } else { "---" })
        .collect();
    let _ = writeln!(out, "|{}|", align.join("|"));
    for row in &view.rows {
        let cells: Vec<String> = row.iter().map(cell).collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    if let Some(note) = view.truncation() {
        let _ = writeln!(out, "\n_{note}._");
    }
    let _ = writeln!(out);
}

/// Renders `summary.md`.
pub fn render(page: &Page) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# {}\n", page.title);
    for (label, text) in &page.header {
        let _ = writeln!(out, "- **{label}**: {}", escape(text));
    }
    let figures: Vec<String> = page
        .figures
        .iter()
        .map(|(label, value)| format!("{value} {label}"))
        .collect();
    let _ = writeln!(out, "\n**{}**\n", figures.join(" · "));

    let _ = writeln!(out, "## Needs attention\n");
    for finding in &page.attention {
        let _ = writeln!(out, "### {}\n", escape(&finding.title));
        for line in &finding.lines {
            let _ = writeln!(out, "- {}", escape(line));
        }
        if !finding.lines.is_empty() {
            let _ = writeln!(out);
        }
        if let Some(view) = &finding.table {
            table(&mut out, view);
        }
    }

    let _ = writeln!(
        out,
        "## Trends per workflow ({} of {} shown)\n",
        page.trends.len(),
        page.workflows
    );
    if let (Some(first), Some(last)) = (page.days.first(), page.days.last()) {
        let _ = writeln!(
            out,
            "One mark per UTC day, {} → {}; the first and last day are partial.\n",
            first.0, last.0
        );
    }
    let _ = writeln!(
        out,
        "| workflow | runs | error rate | p95 | runs/day | error rate/day | p95/day |\n|---|---:|---:|---:|---|---|---|"
    );
    for t in &page.trends {
        let flag = if t.regressed { " **regressed**" } else { "" };
        let _ = writeln!(
            out,
            "| {}{flag} | {} | {} | {} | `{}` | `{}` | `{}` |",
            cell(&t.workflow),
            count(t.runs),
            t.error_rate.map_or("—".into(), rate),
            t.p95_s.map_or("—".into(), seconds),
            sparkline(&t.runs_per_day),
            sparkline(&t.error_rate_per_day),
            sparkline(&t.p95_per_day),
        );
    }
    let _ = writeln!(out);

    for (title, view) in &page.tables {
        let _ = writeln!(out, "## {title}\n");
        table(&mut out, view);
    }
    let _ = writeln!(out, "---\n{}", page.definitions);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_keep_what_markdown_would_swallow() {
        let cases = [
            (
                "Node '…' failed after <n>s (id <hex>)",
                "Node '…' failed after &lt;n&gt;s (id &lt;hex&gt;)",
            ),
            ("a | b\nc", "a \\| b c"),
            (
                "<script>x</script> & co",
                "&lt;script&gt;x&lt;/script&gt; &amp; co",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(escape(text), want);
        }
    }
}
