//! The end-of-export summary and the demo's how-to-query text (stdout).

use std::fmt::Write;
use std::path::Path;

use crate::config::{ExportConfig, format_duration};
use crate::dataset::Table;
use crate::pipeline::{ExportSummary, Plan};

/// Renders the summary printed after an export.
pub fn render(s: &ExportSummary, out: &Path) -> String {
    let total = s.workflows.len();
    let secs = s.elapsed.as_secs_f64();
    let runs = s.runs();
    let mode = match (s.full, s.first) {
        (true, _) => "full",
        (false, true) => "first export",
        (false, false) => "incremental",
    };
    let mut text = String::new();
    let errors = s.errors().count();
    let ok = total - s.failed().count();
    if ok == 0 && runs == 0 && s.stopped().is_none_or(|st| st.partway == 0) && total > 0 {
        // Nothing fetched: the errors above say why; a table of zeros would only bury them.
        let why = match (errors, s.stopped()) {
            (0, Some(stopped)) => format!("{} before any page was read", stopped.reason),
            (_, Some(stopped)) => format!(
                "{errors} of {total} workflows failed, the rest stopped: {}",
                stopped.reason
            ),
            _ => format!("{errors} of {total} workflows failed"),
        };
        let _ = writeln!(
            text,
            "export {}: nothing exported ({why}); no run in `{}` changed",
            s.export_id,
            out.display()
        );
        return text;
    }
    let mut parts = vec![format!("{ok} of {total} workflows ok")];
    if errors > 0 {
        parts.push(format!("{errors} failed"));
    }
    if let Some(stopped) = s.stopped() {
        if stopped.partway > 0 {
            parts.push(format!("{} stopped partway", stopped.partway));
        }
        if stopped.not_started > 0 {
            parts.push(format!("{} not started", stopped.not_started));
        }
        parts.push(format!("({})", stopped.reason));
    }
    let _ = writeln!(
        text,
        "export {} ({mode}): {}",
        s.export_id,
        parts.join(", ").replace(", (", " (")
    );
    if let Some(sel) = s.shard {
        let _ = writeln!(
            text,
            "  shard {}: {} of {} workflows are this shard's; the other shards export the rest",
            sel.shard, sel.kept, sel.listed
        );
    }
    let steps: u64 = s.workflows.iter().map(|w| w.stats.steps_fetched).sum();
    let requests = if steps > 0 {
        // Most requests of a `--with-steps` export are the steps: say so.
        format!("{} requests ({steps} of them for steps)", s.requests)
    } else {
        format!("{} requests", s.requests)
    };
    let _ = writeln!(
        text,
        "  {runs} runs, {} pages, {requests}, {} retries, {} duplicates skipped, {} quarantined, {} unreadable values",
        s.pages(),
        s.retries,
        s.duplicates(),
        s.quarantined(),
        s.unreadable_values()
    );
    let sum = |f: fn(&crate::extract::WorkflowStats) -> u64| -> u64 {
        s.workflows.iter().map(|w| f(&w.stats)).sum()
    };
    let (refreshed, abandoned, vanished, failed) = (
        sum(|w| w.refreshed),
        sum(|w| w.abandoned),
        sum(|w| w.vanished),
        sum(|w| w.refresh_failed),
    );
    let (page_retries, shifts, rereads, vanished_upstream) = (
        sum(|w| w.page_retries),
        sum(|w| w.drift_shifts),
        sum(|w| w.drift_rereads),
        sum(|w| w.drift_vanished),
    );
    if s.throttled + page_retries > 0 {
        let _ = writeln!(
            text,
            "  faults: {} answers were 429 (the client slowed down), {page_retries} unreadable pages fetched again",
            s.throttled
        );
    }
    if shifts + rereads + vanished_upstream > 0 {
        let _ = writeln!(
            text,
            "  drift: {shifts} pages shifted by runs arriving, {rereads} pages re-read, {vanished_upstream} runs vanished upstream while paging"
        );
    }
    let aligned: Vec<&str> = s
        .workflows
        .iter()
        .filter(|w| w.stats.aligned_offsets)
        .map(|w| w.workflow_id.as_str())
        .collect();
    if !aligned.is_empty() {
        let _ = writeln!(
            text,
            "  aligned paging: the API refused offsets that are not a multiple of `limit` for {} workflows; they were paged with aligned pages",
            aligned.len()
        );
    }
    let deferred = sum(|w| w.refresh_deferred);
    if refreshed + abandoned + vanished + failed + deferred > 0 {
        let _ = writeln!(
            text,
            "  unfinished runs: {refreshed} fetched again, {failed} could not be fetched (kept for the next export), {abandoned} given up past the horizon, {vanished} no longer known to the API"
        );
    }
    if deferred > 0 {
        let _ = writeln!(
            text,
            "  unfinished runs: {deferred} left for the next export (at most {} fetched again a workflow per export)",
            crate::extract::MAX_REFETCHES
        );
    }
    let has_steps = s
        .committed
        .partitions
        .iter()
        .any(|p| p.table == Table::Steps);
    for table in Table::RUN_TABLES
        .into_iter()
        .chain(has_steps.then_some(Table::Steps))
    {
        let partitions = s
            .committed
            .partitions
            .iter()
            .filter(|p| p.table == table)
            .count();
        let unchanged = s.committed.rows_unchanged(table);
        let _ = writeln!(
            text,
            "  {:<13} {:>9} new, {:>7} updated rows in {partitions} partitions{}",
            table.name(),
            s.committed.rows_new(table),
            s.committed.rows_updated(table),
            if unchanged > 0 {
                format!(" ({unchanged} re-read, unchanged)")
            } else {
                String::new()
            }
        );
    }
    if !s.workflows_gone.is_empty() {
        let _ = writeln!(
            text,
            "  {} workflows stored earlier no longer exist upstream (not listed, 404): {}",
            s.workflows_gone.len(),
            s.workflows_gone
                .iter()
                .map(|id| format!("`{id}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let marked = s.committed.runs_marked_deleted();
    if marked > 0 {
        let _ = writeln!(
            text,
            "  deleted upstream: {marked} stored runs no longer exist upstream; kept, marked in `runs.deleted_upstream_at`"
        );
    }
    if let Some(rows) = s.workflows_table_rows {
        let _ = writeln!(text, "  {:<13} {rows:>9} rows", Table::Workflows.name());
    }
    let (policy, protected) = &s.privacy;
    if !policy.is_none() {
        let _ = writeln!(
            text,
            "  privacy: {} values masked, {} hashed, {} dropped ({})",
            protected.masked,
            protected.hashed,
            protected.dropped,
            policy.describe()
        );
    }
    let _ = writeln!(
        text,
        "  {:.1} MB received, {:.1} MB written, committed to `{}` in {secs:.2} s ({:.0} runs/s)",
        s.bytes_received as f64 / 1e6,
        s.staged.bytes() as f64 / 1e6,
        out.display(),
        runs as f64 / secs.max(1e-9)
    );
    if s.rejected > 0 {
        let _ = writeln!(
            text,
            "  rejected records and traces of unreadable values: `{}`",
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
reports: `{out}/_reports/report.html` (open it in a browser) and `{out}/_reports/summary.md`
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

/// What `export --dry-run` prints: the workflows, the shard's share, and where each resumes.
pub fn render_plan(plan: &Plan, config: &ExportConfig) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "dry run: {} workflows would be exported into `{}`; no run was requested, nothing was written",
        plan.workflows.len(),
        crate::dataset::shown_url(&config.out.to_string_lossy())
    );
    if let Some(sel) = plan.shard {
        let _ = writeln!(
            text,
            "  shard {}: {} of {} workflows are this shard's; the other shards export the rest",
            sel.shard, sel.kept, sel.listed
        );
    }
    let policy = config.extract.policy.record();
    if !policy.is_none() {
        let _ = writeln!(text, "  privacy: {}", policy.describe());
    }
    let since = config.since_day();
    for w in &plan.workflows {
        let who = match &w.name {
            Some(name) => format!("{name} (`{}`)", w.workflow_id),
            None => format!("`{}`", w.workflow_id),
        };
        let from = match (&w.state, config.full) {
            (_, true) => "the whole history (`--full`)".to_owned(),
            (None, false) => match &since {
                Some(day) => format!("first export: back to runs started on {day}"),
                None => "first export: the whole history".to_owned(),
            },
            (Some(state), false) => {
                let mut from = match &state.cursor {
                    Some(cursor) => format!(
                        "resumes after {cursor} (re-reading {} before it)",
                        format_duration(config.lookback)
                    ),
                    None => "resumes: no run stored yet, the whole history".to_owned(),
                };
                if !state.unfinished.is_empty() {
                    from.push_str(&format!(
                        ", {} unfinished runs to fetch again",
                        state.unfinished.len()
                    ));
                }
                if state.holds_other_privacy(config.extract.policy.record()) {
                    from.push_str(
                        "; its stored rows follow another privacy policy (`--full` rewrites them)",
                    );
                }
                from
            }
        };
        let _ = writeln!(text, "  {who}: {from}");
    }
    text
}
