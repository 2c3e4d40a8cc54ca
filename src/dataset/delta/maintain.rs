//! Maintain: what keeps Delta tables fast to open and small on disk, run by
//! `orchestra-export maintain` while it holds every writer's lock.
//!
//! Per table, in this order: compaction (optional) rewrites each partition's small files of one
//! writer into one file in an `OPTIMIZE` commit that changes no data; a checkpoint of the newest
//! version lets readers skip replaying the JSON log; vacuum deletes data files that no version
//! within the retention needs — every file of the current snapshot and of the snapshots readers
//! can still travel to is kept, and so is any file younger than the retention (an export's file
//! not committed yet).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use futures_util::StreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;

use super::commit::{Names, Plan, write_file};
use super::txn::commit_plan;
use super::{ActiveFile, DELTA_LOG, DeltaTables};
use crate::dataset::marks::conform;
use crate::dataset::{DatasetError, Shard, Storage, batches};
use crate::table::{PartitionDate, Table};

/// Files below this size are compacted; compacted files grow up to it.
pub const COMPACT_TARGET_BYTES: u64 = 128 * 1024 * 1024;

/// What `maintain` does.
#[derive(Debug, Clone)]
pub struct MaintainOptions {
    /// Removed files younger than this are kept for time travel.
    pub retention: Duration,
    /// Rewrite small files into bigger ones first.
    pub compact: bool,
    /// Report what vacuum would delete, delete nothing.
    pub dry_run: bool,
}

/// What `maintain` did to one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableMaintenance {
    /// The table.
    pub table: Table,
    /// Its version after maintenance; `None` for a table folder without a log (data files of a
    /// first export killed before that table's commit, which only vacuum removes).
    pub version: Option<u64>,
    /// Whether a checkpoint was written (false: one existed for that version already).
    pub checkpointed: bool,
    /// Files compaction rewrote, and the files it wrote.
    pub compacted: (usize, usize),
    /// Files vacuum deleted (or would delete, with `dry_run`), and their bytes.
    pub vacuumed: (usize, u64),
    /// Data files the current snapshot holds.
    pub files: usize,
}

/// Maintains every Delta table of the dataset; `id` names the files compaction writes.
pub fn maintain(
    tables: &DeltaTables,
    storage: &dyn Storage,
    options: &MaintainOptions,
    id: &str,
) -> Result<Vec<TableMaintenance>, DatasetError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| {
            DatasetError::io(
                "start a runtime for",
                std::path::Path::new(&tables.shown),
                source,
            )
        })?;
    let mut done = Vec::new();
    let mut names = Names::new(id);
    for table in Table::ALL {
        let mut result = TableMaintenance {
            table,
            version: None,
            checkpointed: false,
            compacted: (0, 0),
            vacuumed: (0, 0),
            files: 0,
        };
        if let Some(mut snapshot) = tables.snapshot(storage, table)? {
            if options.compact && !options.dry_run {
                let active = tables.active_files(table, &snapshot)?;
                result.compacted = compact(tables, storage, table, &active, &mut names)?;
                if result.compacted.0 > 0 {
                    snapshot = tables.snapshot(storage, table)?.unwrap_or(snapshot);
                }
            }
            if !options.dry_run {
                let (written, _) = snapshot
                    .checkpoint(&tables.engine, None)
                    .map_err(tables.error(table, "write a checkpoint of"))?;
                result.checkpointed = matches!(
                    written,
                    delta_kernel::snapshot::CheckpointWriteResult::Written
                );
            }
            result.version = Some(snapshot.version());
            result.files = tables.active_files(table, &snapshot)?.len();
        } else if storage.list_dirs(table.name())?.is_empty()
            && storage.list(table.name())?.is_empty()
        {
            continue;
        }
        result.vacuumed = vacuum(&runtime, tables, table, result.version, options)?;
        done.push(result);
    }
    Ok(done)
}

/// Who wrote a data file, as far as compaction must keep apart: a shard's tag, or nobody's.
fn owner(path: &str) -> String {
    let name = path.rsplit('/').next().unwrap_or(path);
    Shard::in_name(name).map(Shard::tag).unwrap_or_default()
}

/// Rewrites, per partition and writer, the files below [`COMPACT_TARGET_BYTES`] into files up to
/// that size, in one commit; returns the files rewritten and written.
fn compact(
    tables: &DeltaTables,
    storage: &dyn Storage,
    table: Table,
    active: &[ActiveFile],
    names: &mut Names,
) -> Result<(usize, usize), DatasetError> {
    let mut groups: BTreeMap<(Option<PartitionDate>, String), Vec<&ActiveFile>> = BTreeMap::new();
    for file in active.iter().filter(|f| f.size < COMPACT_TARGET_BYTES) {
        groups
            .entry((file.date, owner(&file.path)))
            .or_default()
            .push(file);
    }
    let schema = table.schema();
    let mut plan = Plan::default();
    let mut written = 0;
    for ((date, owner), files) in groups {
        if files.len() < 2 {
            continue;
        }
        // Bins of consecutive files up to the target size.
        let mut bins: Vec<Vec<&ActiveFile>> = vec![Vec::new()];
        let mut size = 0;
        for file in files {
            if size + file.size > COMPACT_TARGET_BYTES && !bins.last().expect("one bin").is_empty()
            {
                bins.push(Vec::new());
                size = 0;
            }
            size += file.size;
            bins.last_mut().expect("one bin").push(file);
        }
        for bin in bins.into_iter().filter(|b| b.len() > 1) {
            let mut path = names.next(table, date);
            if !owner.is_empty() {
                path = path.replace(".parquet", &format!("-{owner}.parquet"));
            }
            let mut read = Vec::new();
            for file in &bin {
                for batch in batches(storage, &file.path, None)? {
                    read.push(conform(batch?, &schema, &file.path).map(|(b, _)| b));
                }
                plan.removes.insert(file.path.clone());
            }
            let (size, rows) = write_file(storage, table, &path, read.into_iter())?;
            plan.added(&path, date, size, rows);
            written += 1;
        }
    }
    if plan.removes.is_empty() {
        return Ok((0, 0));
    }
    let snapshot = tables.snapshot(storage, table)?;
    commit_plan(tables, storage, table, snapshot, &plan, None)?;
    Ok((plan.removes.len(), written))
}

/// Deletes the data files of `table` that no version within the retention needs and that are
/// older than it; returns how many and their bytes. `runtime` runs the store's requests (the
/// kernel's own reads must run outside it).
fn vacuum(
    runtime: &tokio::runtime::Runtime,
    tables: &DeltaTables,
    table: Table,
    current: Option<u64>,
    options: &MaintainOptions,
) -> Result<(usize, u64), DatasetError> {
    let cutoff = chrono::Duration::from_std(options.retention)
        .ok()
        .and_then(|d| chrono::Utc::now().checked_sub_signed(d))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
    let (objects, mut commits) = runtime.block_on(list(tables, table))?;
    commits.sort();
    // The state at the cutoff is the newest version committed before it: readers may travel
    // to it and to every later one.
    let mut needed: HashSet<String> = HashSet::new();
    let versions = current.map(|current| {
        let first = commits
            .iter()
            .rev()
            .find(|(_, at)| *at <= cutoff)
            .or(commits.first())
            .map_or(current, |(v, _)| *v);
        first..=current
    });
    for version in versions.into_iter().flatten() {
        let snapshot = tables.snapshot_at(table, version)?;
        for file in tables.active_files(table, &snapshot)? {
            needed.insert(file.path);
        }
    }
    let doomed: Vec<object_store::ObjectMeta> = objects
        .into_iter()
        .filter(|(path, meta)| !needed.contains(path) && meta.last_modified <= cutoff)
        .map(|(_, meta)| meta)
        .collect();
    let bytes = doomed.iter().map(|m| m.size).sum();
    let count = doomed.len();
    if !options.dry_run {
        runtime.block_on(async {
            for meta in &doomed {
                match tables.store.delete(&meta.location).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(DatasetError::store("delete", &tables.shown(table), e)),
                }
            }
            Ok(())
        })?;
    }
    Ok((count, bytes))
}

/// The data files below `table` (paths from the dataset root, hidden ones left out) and the
/// commits of its log, with their times.
async fn list(tables: &DeltaTables, table: Table) -> Result<Listing, DatasetError> {
    let table_url = tables.url(table);
    let prefix = ObjectPath::from_url_path(table_url.path()).map_err(|e| DatasetError::BadUrl {
        url: tables.shown(table),
        reason: e.to_string(),
    })?;
    let list_err = |e| DatasetError::store("list", &tables.shown(table), e);
    let mut objects = Vec::new();
    let mut commits = Vec::new();
    let mut listing = tables.store.list(Some(&prefix));
    while let Some(meta) = listing.next().await {
        let meta = meta.map_err(list_err)?;
        let Some(rel) = meta.location.prefix_match(&prefix) else {
            continue;
        };
        let parts: Vec<String> = rel.map(|p| p.as_ref().to_owned()).collect();
        if parts.first().is_some_and(|p| p == DELTA_LOG) {
            let name = parts.last().map(String::as_str).unwrap_or_default();
            if let Some(version) = name
                .strip_suffix(".json")
                .and_then(|v| v.parse::<u64>().ok())
            {
                commits.push((version, meta.last_modified));
            }
            continue;
        }
        // Hidden files (a killed write's temp file) and folders of other tools stay.
        if parts
            .iter()
            .any(|p| p.starts_with('.') || p.starts_with('_'))
        {
            continue;
        }
        if parts.last().is_some_and(|p| p.ends_with(".parquet")) {
            objects.push((format!("{}/{}", table.name(), parts.join("/")), meta));
        }
    }
    Ok((objects, commits))
}

/// Data files with their metadata, and commits with their times.
type Listing = (
    Vec<(String, object_store::ObjectMeta)>,
    Vec<(u64, chrono::DateTime<chrono::Utc>)>,
);

#[cfg(test)]
mod tests {
    use super::owner;

    #[test]
    fn compaction_keeps_each_shards_files_apart() {
        let cases = [
            (
                "runs/date=2026-01-01/part-20261202T000000.000Z-abcdef-00001.parquet",
                "",
            ),
            (
                "runs/date=2026-01-01/part-20261202T000000.000Z-abcdef-shard-01-of-04-00003.parquet",
                "shard-01-of-04",
            ),
            (
                "runs/date=2026-01-01/part-20261202T000000.000Z-abcdef-maintain-00000-shard-12-of-16.parquet",
                "shard-12-of-16",
            ),
            // Shard counts of three digits keep their whole tag.
            (
                "runs/date=2026-01-01/part-20261202T000000.000Z-abcdef-shard-001-of-100-00002.parquet",
                "shard-001-of-100",
            ),
            // Not a tag this tool writes.
            ("runs/date=2026-01-01/part-x-shard-1-of-4-00002.parquet", ""),
            ("workflows/part-x-00000.parquet", ""),
        ];
        for (path, want) in cases {
            assert_eq!(owner(path), want, "{path}");
        }
    }
}
