//! Transactions: a table's adds and removes committed through the Delta kernel, with the
//! export's application transaction, retried on a newer snapshot when another writer (a shard)
//! committed first; and the checkpoint every [`CHECKPOINT_INTERVAL`] commits.

use std::time::Duration;

use arrow::array::{Int64Array, StructArray};
use arrow::datatypes::{DataType as ArrowType, Field};
use delta_kernel::committer::FileSystemCommitter;
use delta_kernel::engine_data::FilteredEngineData;
use delta_kernel::snapshot::SnapshotRef;
use delta_kernel::transaction::create_table::create_table;
use delta_kernel::transaction::data_layout::DataLayout;
use delta_kernel::transaction::{CommitResult, Transaction, UpdateTableOperation};
use delta_kernel::{FileMeta, KernelError};
use delta_kernel_default_engine::build_add_file_metadata;
use delta_kernel_default_engine::parquet::DataFileMetadata;
use std::collections::HashSet;

use super::commit::{NewFile, Plan};
use super::{
    CHECKPOINT_INTERVAL, DELTA_LOG, DeltaTables, ENGINE_INFO, PARTITION_COLUMN, partition_values,
    partitioned, schema,
};
use crate::dataset::{DatasetError, Layout, Storage};
use crate::table::Table;

/// Attempts at one table's commit when other writers (shards) commit in between.
const MAX_ATTEMPTS: u32 = 40;

/// The application transaction of one export: `app_id` names the writer (one per layout, so
/// shards count on their own), `seq` the export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnId {
    /// `orchestra-export`, or `orchestra-export/shard-KK-of-NN`.
    pub app_id: String,
    /// One more than the highest any table recorded for `app_id`.
    pub seq: i64,
}

impl TxnId {
    /// The transaction of the next export of `layout`.
    pub fn next(
        tables: &DeltaTables,
        storage: &dyn Storage,
        layout: Layout,
    ) -> Result<Self, DatasetError> {
        let app_id = match layout {
            Layout::Unsharded => "orchestra-export".to_owned(),
            Layout::Sharded(s) => format!("orchestra-export/{}", s.tag()),
        };
        let mut highest = 0;
        for table in Table::ALL {
            if let Some(snapshot) = tables.snapshot(storage, table)? {
                let seen = snapshot
                    .get_app_id_version(&app_id, &tables.engine)
                    .map_err(tables.error(table, "read the transactions of"))?;
                highest = highest.max(seen.unwrap_or(0));
            }
        }
        Ok(Self {
            app_id,
            seq: highest + 1,
        })
    }
}

/// Whether `snapshot` of `table` holds `plan` committed with `txn` already: this export's commit
/// landed on an earlier attempt (whose answer was lost). A table that records `txn` without
/// holding the plan's new files was committed by another export of the same layout with the
/// same sequence number — one that lost its lock — and this commit stops.
pub(super) fn already_applied(
    tables: &DeltaTables,
    table: Table,
    snapshot: Option<&SnapshotRef>,
    plan: &Plan,
    txn: &TxnId,
) -> Result<bool, DatasetError> {
    let Some(snapshot) = snapshot else {
        return Ok(false);
    };
    let seen = snapshot
        .get_app_id_version(&txn.app_id, &tables.engine)
        .map_err(tables.error(table, "read the transactions of"))?;
    if seen.is_none_or(|v| v < txn.seq) {
        return Ok(false);
    }
    let active: HashSet<String> = (tables.active_files(table, snapshot)?.into_iter())
        .map(|f| f.path)
        .collect();
    let landed = match plan.adds.first() {
        Some(add) => active.contains(&add.path),
        None => plan.removes.iter().all(|r| !active.contains(r)),
    };
    if landed {
        return Ok(true);
    }
    Err(DatasetError::DeltaConflict {
        table: tables.shown(table),
        reason: format!(
            "another export of `{}` committed sequence {} already; two exports of one layout ran at once",
            txn.app_id, txn.seq
        ),
    })
}

/// Commits the adds and removes of `plan` to `table`, retrying on a newer snapshot when another
/// writer committed first. `txn` is `None` for a compaction (an `OPTIMIZE` commit that changes no
/// data). Returns the version committed (`None`: nothing to commit, or the table records `txn`).
pub(super) fn commit_plan(
    tables: &DeltaTables,
    storage: &dyn Storage,
    table: Table,
    mut snapshot: Option<SnapshotRef>,
    plan: &Plan,
    txn: Option<&TxnId>,
) -> Result<Option<u64>, DatasetError> {
    let operation = match txn {
        Some(_) => UpdateTableOperation::Write,
        None => UpdateTableOperation::Optimize,
    };
    if plan.adds.is_empty() && plan.removes.is_empty() {
        return Ok(None);
    }
    for attempt in 0..MAX_ATTEMPTS {
        if attempt > 0 {
            // Another writer committed this version: back off a little (jittered), read the
            // newer snapshot, and build the same change on it.
            let wait = 20 * u64::from(attempt.min(10)) + u64::from(rand::random::<u8>() % 50);
            std::thread::sleep(Duration::from_millis(wait));
            snapshot = tables.snapshot(storage, table)?;
        }
        if let Some(txn) = txn
            && already_applied(tables, table, snapshot.as_ref(), plan, txn)?
        {
            return Ok(snapshot.as_ref().map(|s| s.version()));
        }
        // The kernel writes the commit itself: the lock is checked here, as every write of
        // `Storage` checks it.
        storage.check_lock(&format!("{}/{DELTA_LOG}", table.name()))?;
        let committed = match snapshot.as_ref() {
            None => create(tables, table, plan, txn)?,
            Some(current) => update(tables, table, current, plan, txn, operation.clone())?,
        };
        if committed.is_some() {
            return Ok(committed);
        }
    }
    Err(DatasetError::DeltaConflict {
        table: tables.shown(table),
        reason: format!("other writers committed first {MAX_ATTEMPTS} times in a row"),
    })
}

/// Creates `table` with the adds of `plan`; `None` when another writer (a shard) created it
/// first: then the commit is retried as an update.
fn create(
    tables: &DeltaTables,
    table: Table,
    plan: &Plan,
    txn: Option<&TxnId>,
) -> Result<Option<u64>, DatasetError> {
    let err = tables.error(table, "create");
    let mut builder = create_table(
        tables.url(table).as_str(),
        schema(table).map_err(&err)?,
        ENGINE_INFO,
        txn.is_some(),
    )
    .with_table_properties([(
        "delta.checkpointInterval".to_owned(),
        CHECKPOINT_INTERVAL.to_string(),
    )]);
    if partitioned(table) {
        builder = builder.with_data_layout(DataLayout::partitioned([PARTITION_COLUMN]));
    }
    let exists = |e: &KernelError| matches!(e, KernelError::TableAlreadyExistsAtPath(_));
    let mut t = match builder.build(&tables.engine, Box::new(FileSystemCommitter::new())) {
        Err(e) if exists(&e) => return Ok(None),
        built => built.map_err(&err)?,
    };
    if let Some(txn) = txn {
        t = t.with_transaction_id(txn.app_id.clone(), txn.seq);
    }
    add_files(tables, table, &mut t, &plan.adds)?;
    match t.commit(&tables.engine) {
        Ok(CommitResult::Committed(c)) => Ok(Some(c.commit_version())),
        Ok(_) => Ok(None),
        Err(e) if exists(&e) => Ok(None),
        Err(e) => Err(err(e)),
    }
}

/// Commits `plan` on top of `current`; `None` when another writer committed that version first.
fn update(
    tables: &DeltaTables,
    table: Table,
    current: &SnapshotRef,
    plan: &Plan,
    txn: Option<&TxnId>,
    operation: UpdateTableOperation,
) -> Result<Option<u64>, DatasetError> {
    let err = tables.error(table, "commit to");
    let mut t = current
        .clone()
        .update_table(operation, ENGINE_INFO, txn.is_some())
        .build(&tables.engine, Box::new(FileSystemCommitter::new()))
        .map_err(&err)?;
    if let Some(txn) = txn {
        t = t.with_transaction_id(txn.app_id.clone(), txn.seq);
    }
    add_files(tables, table, &mut t, &plan.adds)?;
    remove_files(tables, table, current, &mut t, &plan.removes)?;
    match t.commit(&tables.engine).map_err(&err)? {
        CommitResult::Committed(c) => {
            let version = c.commit_version();
            checkpoint_if_due(tables, table, version, c.post_commit_snapshot());
            Ok(Some(version))
        }
        _ => Ok(None),
    }
}

/// Writes a checkpoint when `version` is a multiple of [`CHECKPOINT_INTERVAL`]; a failure only
/// warns (the next one, or `maintain`, writes it).
fn checkpoint_if_due(
    tables: &DeltaTables,
    table: Table,
    version: u64,
    snapshot: Option<&SnapshotRef>,
) {
    if version == 0 || !version.is_multiple_of(CHECKPOINT_INTERVAL) {
        return;
    }
    let Some(snapshot) = snapshot else {
        return;
    };
    if let Err(e) = snapshot.checkpoint(&tables.engine, None) {
        let e = tables.error(table, "write a checkpoint of")(e);
        tracing::warn!(target: "dataset", error = %crate::error_chain(&e), "no checkpoint written; `maintain` writes one");
    }
}

/// Stages the add actions of `adds` in `t`.
fn add_files<S>(
    tables: &DeltaTables,
    table: Table,
    t: &mut Transaction<S>,
    adds: &[NewFile],
) -> Result<(), DatasetError> {
    let err = tables.error(table, "add files to");
    let state = t.write_state().map_err(&err)?;
    let now = chrono::Utc::now().timestamp_millis();
    for file in adds {
        let mut context = state.write_context_builder();
        if file.date.is_some() {
            context = context.with_partition_values(partition_values(file.date));
        }
        let context = context.build().map_err(&err)?;
        let location = tables
            .root
            .join(&file.path)
            .map_err(|e| err(delta_kernel::KernelError::InvalidUrl(e)))?;
        let meta = FileMeta {
            location,
            last_modified: now,
            size: file.size,
        };
        let metadata = DataFileMetadata::new(meta, num_records(file.rows)?);
        t.add_files(build_add_file_metadata(metadata, &context).map_err(&err)?);
    }
    Ok(())
}

/// File statistics holding the row count only.
fn num_records(rows: usize) -> Result<StructArray, DatasetError> {
    let rows = i64::try_from(rows).unwrap_or(i64::MAX);
    let field = Field::new("numRecords", ArrowType::Int64, true);
    Ok(StructArray::from(vec![(
        std::sync::Arc::new(field),
        std::sync::Arc::new(Int64Array::from(vec![rows])) as arrow::array::ArrayRef,
    )]))
}

/// Stages the remove actions of `removes` (all in `snapshot`) in `t`; fails when one is no
/// longer in the snapshot (another writer removed it).
fn remove_files(
    tables: &DeltaTables,
    table: Table,
    snapshot: &SnapshotRef,
    t: &mut Transaction,
    removes: &HashSet<String>,
) -> Result<(), DatasetError> {
    if removes.is_empty() {
        return Ok(());
    }
    let err = tables.error(table, "remove files from");
    let scan = snapshot.clone().scan_builder().build().map_err(&err)?;
    let prefix = format!("{}/", table.name());
    let mut found = 0;
    for metadata in scan.scan_metadata(&tables.engine).map_err(&err)? {
        let metadata = metadata.map_err(&err)?;
        let paths = metadata
            .visit_scan_files(Vec::new(), |paths: &mut Vec<String>, file| {
                paths.push(file.path)
            })
            .map_err(&err)?;
        let (data, selected) = metadata.scan_files.into_parts();
        let mut paths = paths.into_iter();
        let mut chosen = Vec::with_capacity(data.len());
        for row in 0..data.len() {
            let live = selected.get(row).copied().unwrap_or(true);
            let remove = live
                && paths
                    .next()
                    .is_some_and(|p| removes.contains(&format!("{prefix}{}", super::decode(&p))));
            found += usize::from(remove);
            chosen.push(remove);
        }
        if chosen.iter().any(|c| *c) {
            t.remove_files(FilteredEngineData::try_new(data, chosen).map_err(&err)?);
        }
    }
    if found != removes.len() {
        return Err(DatasetError::DeltaConflict {
            table: tables.shown(table),
            reason: format!(
                "{} of the files this export replaces were removed by another writer",
                removes.len() - found
            ),
        });
    }
    Ok(())
}
