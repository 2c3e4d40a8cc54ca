//! The manifest of an export (`_manifest/<export id>.json`, also the `_SUCCESS` marker's body):
//! what a downstream job checks before it reads — the tool version, the effective settings
//! (never a key or a password), and what each workflow and partition got. Only the newest
//! `keep_manifests` of a layout are kept.

use serde_json::json;

use crate::config::{ExportConfig, format_duration};
use crate::dataset::{DatasetError, Layout, Storage, Table};

use super::{ExportSummary, MANIFEST_DIR};

/// `_manifest/` files a layout keeps by default: months of hourly exports, a few MB.
pub const DEFAULT_KEEP_MANIFESTS: u32 = 1000;

/// The policy's rules and key fingerprint, and how many values fetched it masked, hashed and
/// dropped.
fn privacy(s: &ExportSummary) -> serde_json::Value {
    let (record, protected) = &s.privacy;
    let mut value = json!(record);
    if let Some(map) = value.as_object_mut() {
        map.insert("values_changed".to_owned(), json!(protected));
    }
    value
}

/// The manifest record of an export: what a downstream job checks before it reads.
pub(super) fn manifest(
    s: &ExportSummary,
    config: &ExportConfig,
    started_at: chrono::DateTime<chrono::Utc>,
) -> serde_json::Value {
    let tables: serde_json::Map<String, serde_json::Value> = Table::RUN_TABLES
        .iter()
        .map(|table| {
            let partitions: Vec<serde_json::Value> = s
                .committed
                .partitions
                .iter()
                .filter(|p| p.table == *table)
                .map(|p| {
                    json!({
                        "partition": p.date.dir_name(),
                        "rows_written": p.rows_staged,
                        "rows_replaced": p.rows_replaced,
                        "rows_unchanged": p.rows_unchanged,
                        "rows_after": p.rows_after,
                        "rows_marked_deleted": p.rows_marked,
                        "file_replaced": p.rewrote,
                    })
                })
                .collect();
            (
                table.name().to_owned(),
                json!({
                    "rows_new": s.committed.rows_new(*table),
                    "rows_updated": s.committed.rows_updated(*table),
                    "rows_unchanged": s.committed.rows_unchanged(*table),
                    "partitions": partitions,
                }),
            )
        })
        .collect();
    let workflows: Vec<serde_json::Value> = s
        .workflows
        .iter()
        .map(|w| {
            json!({
                "workflow_id": w.workflow_id,
                "ok": w.error.is_none(),
                "error": w.error.as_ref().map(|e| crate::error_chain(e)),
                "pages": w.stats.pages,
                "runs_fetched": w.stats.runs,
                "duplicates": w.stats.duplicates,
                "page_retries": w.stats.page_retries,
                "drift_shifts": w.stats.drift_shifts,
                "drift_rereads": w.stats.drift_rereads,
                "drift_vanished": w.stats.drift_vanished,
                "unchecked_boundaries": w.stats.unchecked_boundaries,
                "aligned_offsets": w.stats.aligned_offsets,
                "rejected": w.stats.rejected,
                "unfinished_refreshed": w.stats.refreshed,
                "unfinished_abandoned": w.stats.abandoned,
                "unfinished_fetch_failed": w.stats.refresh_failed,
                "unfinished_deferred": w.stats.refresh_deferred,
                "cursor": w.new_state.as_ref().and_then(|st| st.cursor.clone()),
            })
        })
        .collect();
    let mut manifest = json!({
        "export_id": s.export_id,
        "tool": { "name": env!("CARGO_PKG_NAME"), "version": env!("CARGO_PKG_VERSION") },
        "settings": settings(config),
        // The rules and the key's fingerprint, never the key; what they changed.
        "privacy": privacy(s),
        "status": if s.failed().next().is_none() { "ok" } else { "partial" },
        "mode": if s.full { "full" } else { "incremental" },
        "started_at": started_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "finished_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "requests": s.requests,
        "retries": s.retries,
        "throttled": s.throttled,
        "rejected": s.quarantined(),
        "rejected_lines": s.rejected,
        "files_replaced": s.committed.files_rewritten(),
        "runs_marked_deleted_upstream": s.committed.runs_marked_deleted(),
        "workflows": workflows,
        "tables": tables,
        "workflows_table_rows": s.workflows_table_rows,
        "workflows_gone_upstream": s.workflows_gone,
        "table_format": config.table_format.name(),
    });
    if let Some((txn, versions)) = &s.delta {
        let versions: serde_json::Map<String, serde_json::Value> = versions
            .iter()
            .map(|(table, version)| (table.name().to_owned(), json!(version)))
            .collect();
        // In a Delta table, `rows_after` counts the rows of the files a partition's commit
        // added, not the partition's.
        manifest["delta"] = json!({
            "app_id": txn.app_id,
            "txn_version": txn.seq,
            "versions": versions,
        });
    }
    if let Some(sel) = s.shard {
        manifest["shard"] = json!({
            "shard": sel.shard.to_string(),
            "index": sel.shard.index(),
            "count": sel.shard.count(),
            "workflows_kept": sel.kept,
            "workflows_listed": sel.listed,
        });
    }
    manifest
}

/// The settings the export ran with, as a re-run would pass them. No key, no password: the base
/// URL is shown redacted, the key's source is not recorded.
fn settings(c: &ExportConfig) -> serde_json::Value {
    let client = &c.client;
    json!({
        "base_url": crate::api::redact_url(&client.base_url),
        "workflows": c.workflow_ids.len(),
        "all_workflows": c.all_workflows,
        "out": crate::dataset::shown_url(&c.out.to_string_lossy()),
        "full": c.full,
        "with_steps": c.extract.with_steps,
        "page_size": c.extract.page_size,
        "concurrency": client.concurrency,
        "request_timeout": format_duration(client.request_timeout),
        "max_retries": client.retry.max_retries,
        "retry_delay": format_duration(client.retry.base_delay),
        "max_rps": client.max_rps,
        "max_response_size": client.max_response_bytes,
        "lookback": format_duration(c.lookback),
        "unfinished_horizon": format_duration(c.extract.unfinished_horizon),
        "shard": c.shard.map(|s| s.to_string()),
        "keep_manifests": c.keep_manifests,
        "since": c.since_day(),
    })
}

/// Removes this layout's manifests beyond the newest `keep` (export ids sort by time); returns
/// how many went. Other shards' manifests are theirs to prune.
pub(super) fn prune(
    storage: &dyn Storage,
    layout: Layout,
    keep: u32,
) -> Result<usize, DatasetError> {
    let mut own: Vec<String> = storage
        .list(MANIFEST_DIR)?
        .into_iter()
        .map(|name| format!("{MANIFEST_DIR}/{name}"))
        .filter(|path| path.ends_with(".json") && layout.owns(path))
        .collect();
    own.sort();
    let excess = own.len().saturating_sub(keep as usize);
    for path in &own[..excess] {
        storage.remove(path)?;
    }
    Ok(excess)
}
