//! The end-of-export summary and the demo's how-to-query text (stdout).

use std::fmt::Write;
use std::path::Path;

use crate::dataset::Table;
use crate::pipeline::ExportSummary;

/// Renders the summary printed after an export.
pub fn render(s: &ExportSummary, out: &Path) -> String {
    let total = s.workflows.len();
    let failed = s.failed().count();
    let secs = s.elapsed.as_secs_f64();
    let runs = s.runs();
    let mut text = String::new();
    let _ = writeln!(
        text,
        "export {}: {} of {total} workflows ok, {failed} failed",
        s.export_id,
        total - failed
    );
    let _ = writeln!(
        text,
        "  {runs} runs, {} pages, {} requests, {} retries, {} duplicates skipped, {} rejected, {} unreadable values",
        s.pages(),
        s.requests,
        s.retries,
        s.duplicates(),
        s.rejected,
        s.unreadable_values()
    );
    for table in Table::RUN_TABLES {
        let files = s.written.files.iter().filter(|f| f.table == table).count();
        let _ = writeln!(
            text,
            "  {:<13} {:>10} rows in {files} files",
            table.name(),
            s.written.rows(table)
        );
    }
    if let Some(rows) = s.workflows_table_rows {
        let _ = writeln!(
            text,
            "  {:<13} {rows:>10} rows in 1 file",
            Table::Workflows.name()
        );
    }
    let _ = writeln!(
        text,
        "  {:.1} MB received, {:.1} MB written to `{}` in {secs:.2} s ({:.0} runs/s)",
        s.bytes_received as f64 / 1e6,
        s.written.bytes() as f64 / 1e6,
        out.display(),
        runs as f64 / secs.max(1e-9)
    );
    if s.rejected > 0 {
        let _ = writeln!(
            text,
            "  rejected records: `{}`",
            out.join("_rejected").display()
        );
    }
    text
}

/// How to query a fresh export, printed by `demo`.
pub fn query_help(out: &Path) -> String {
    let out = out.display();
    format!(
        r#"
query it with DuckDB:
  duckdb -c "SELECT workflow_id, status, count(*) AS runs, median(duration_ms)/1000 AS p50_s
             FROM read_parquet('{out}/runs/**/*.parquet', hive_partitioning=true)
             GROUP BY ALL ORDER BY runs DESC"
or with Polars:
  python -c "import polars as pl; print(pl.scan_parquet('{out}/runs/**/*.parquet', hive_partitioning=True)
             .group_by('status').len().collect())"
"#
    )
}
