//! Commit (Delta): an export's staged files become one Delta commit per table, children before
//! `runs`, each carrying the export's application transaction (`txn`).
//!
//! Staged files are added as they are; a stored file holding a run this export fetched again (or
//! a run a `--full` export marks deleted upstream) is rewritten without it, and the commit removes
//! the old file and adds the new one. Only files of this export's layout are read or replaced
//! (a shard never touches another's), so two shards' commits never conflict on a file: when
//! another shard committed first, the commit is built again on the newer snapshot and retried.
//! A commit whose application transaction the table already records is not applied again (a
//! retried write that had landed). The same candidates as the Hive commit are visited: the days
//! staged, the undated partition, the days of runs fetched again, everything for `--full`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use arrow::array::RecordBatch;
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
use parquet::arrow::ArrowWriter;

use super::{
    ActiveFile, CHECKPOINT_INTERVAL, DeltaTables, ENGINE_INFO, PARTITION_COLUMN, partition_values,
    partitioned, schema,
};
use crate::dataset::commit::{key_columns, staged_keys, without_keys};
use crate::dataset::digest::RunDigests;
use crate::dataset::marks::{DeletionMarks, conform, mark_deleted, would_mark};
use crate::dataset::{
    CommitSummary, DatasetError, Layout, PartitionCommit, Revisit, RunKeys, Storage, WriteSummary,
    batches, writer_properties,
};
use crate::table::{DELETED_UPSTREAM_AT, PartitionDate, Table};

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

/// What a Delta commit did: the partitions, as the Hive commit reports them, and each table's
/// new version.
#[derive(Debug, Default, Clone)]
pub struct DeltaCommit {
    /// Per (table, partition), as [`crate::dataset::commit`] reports it.
    pub summary: CommitSummary,
    /// The version each table committed (tables without changes are left out).
    pub versions: BTreeMap<Table, u64>,
}

/// Commits the staged files of `staged` as one Delta commit per table (see the module
/// documentation); the arguments are those of the Hive [`crate::dataset::commit`].
#[allow(clippy::too_many_arguments)]
pub fn commit(
    tables: &DeltaTables,
    storage: &dyn Storage,
    staged: &WriteSummary,
    steps_fetched: bool,
    layout: Layout,
    marks: &DeletionMarks,
    revisit: &Revisit,
    txn: &TxnId,
    export_id: &str,
) -> Result<DeltaCommit, DatasetError> {
    let staged_runs: Vec<String> = staged
        .files
        .iter()
        .filter(|f| f.table == Table::Runs)
        .map(|f| f.path.clone())
        .collect();
    let replace = staged_keys(storage, &staged_runs)?;
    let mut days: BTreeSet<PartitionDate> = staged.files.iter().filter_map(|f| f.date).collect();
    days.insert(PartitionDate(None));
    if let Revisit::Dates(dates) = revisit {
        days.extend(dates);
    }
    let mut names = Names::new(export_id);
    let mut done = DeltaCommit::default();
    let order = [
        Table::NodeOutputs,
        Table::RunInputs,
        Table::Steps,
        Table::Runs,
    ];
    for table in order {
        if table == Table::Steps && !steps_fetched {
            continue;
        }
        let no_marks = DeletionMarks::default();
        let marks = if table == Table::Runs {
            marks
        } else {
            &no_marks
        };
        let scope = Scope {
            days: &days,
            everywhere: matches!(revisit, Revisit::All) || !marks.is_empty(),
            replace: &replace,
            marks,
            layout,
        };
        let snapshot = tables.snapshot(storage, table)?;
        if already_applied(tables, table, snapshot.as_ref(), txn)? {
            continue;
        }
        let mut plan = Plan::default();
        if let Some(snapshot) = &snapshot {
            let active = tables.active_files(table, snapshot)?;
            rewrite_touched(storage, table, &active, &scope, &mut names, &mut plan)?;
        }
        for file in staged.files.iter().filter(|f| f.table == table) {
            let date = file.date.unwrap_or(PartitionDate(None));
            let path = names.next(table, Some(date));
            storage.rename(&file.path, &path)?;
            plan.added(&path, Some(date), file.bytes, file.rows);
            let part = plan.partition(table, date);
            part.rows_staged += file.rows;
            part.rows_after += file.rows;
            if let Some((_, replacing)) = plan.digests.get_mut(&date) {
                digest_all(storage, &path, replacing)?;
            }
        }
        plan.finish_digests(table);
        if let Some(version) = commit_plan(tables, storage, table, snapshot, &plan, txn)? {
            done.versions.insert(table, version);
        }
        done.summary
            .partitions
            .extend(plan.partitions.into_values());
    }
    Ok(done)
}

/// Commits a new snapshot of the unpartitioned `table` (`workflows`): `batch` replaces every
/// row this layout stored before. Returns the rows written and the version.
pub fn commit_snapshot(
    tables: &DeltaTables,
    storage: &dyn Storage,
    table: Table,
    batch: &RecordBatch,
    layout: Layout,
    txn: &TxnId,
    export_id: &str,
) -> Result<Option<u64>, DatasetError> {
    let snapshot = tables.snapshot(storage, table)?;
    if already_applied(tables, table, snapshot.as_ref(), txn)? {
        return Ok(None);
    }
    let mut plan = Plan::default();
    if let Some(snapshot) = &snapshot {
        for file in tables.active_files(table, snapshot)? {
            if layout.owns(&file.path) {
                plan.removes.insert(file.path);
            }
        }
    }
    let path = Names::new(export_id).next(table, None);
    let (size, rows) = write_file(storage, table, &path, std::iter::once(Ok(batch.clone())))?;
    plan.added(&path, None, size, rows);
    commit_plan(tables, storage, table, snapshot, &plan, txn)
}

/// Whether `table` records `txn` already: this export's commit landed on an earlier attempt.
fn already_applied(
    tables: &DeltaTables,
    table: Table,
    snapshot: Option<&SnapshotRef>,
    txn: &TxnId,
) -> Result<bool, DatasetError> {
    let Some(snapshot) = snapshot else {
        return Ok(false);
    };
    let seen = snapshot
        .get_app_id_version(&txn.app_id, &tables.engine)
        .map_err(tables.error(table, "read the transactions of"))?;
    Ok(seen.is_some_and(|v| v >= txn.seq))
}

/// Which stored files a commit of one table reads, and what it takes out of them.
struct Scope<'a> {
    days: &'a BTreeSet<PartitionDate>,
    /// Every partition (`--full`, or marks to set).
    everywhere: bool,
    replace: &'a RunKeys,
    marks: &'a DeletionMarks,
    layout: Layout,
}

impl Scope<'_> {
    fn visits(&self, file: &ActiveFile) -> bool {
        let date = file.date.unwrap_or(PartitionDate(None));
        self.layout.owns(&file.path) && (self.everywhere || self.days.contains(&date))
    }
}

/// The adds and removes of one table's commit, and what it did per partition.
#[derive(Default)]
struct Plan {
    adds: Vec<NewFile>,
    /// Paths from the dataset root.
    removes: HashSet<String>,
    partitions: BTreeMap<PartitionDate, PartitionCommit>,
    /// Per partition with replaced rows: digests of the rows replaced and of those replacing.
    digests: HashMap<PartitionDate, (RunDigests, RunDigests)>,
}

pub(super) struct NewFile {
    path: String,
    date: Option<PartitionDate>,
    size: u64,
    rows: usize,
}

impl Plan {
    fn added(&mut self, path: &str, date: Option<PartitionDate>, size: u64, rows: usize) {
        self.adds.push(NewFile {
            path: path.to_owned(),
            date,
            size,
            rows,
        });
    }

    fn partition(&mut self, table: Table, date: PartitionDate) -> &mut PartitionCommit {
        self.partitions.entry(date).or_insert(PartitionCommit {
            table,
            date,
            rows_before: 0,
            rows_staged: 0,
            rows_replaced: 0,
            rows_unchanged: 0,
            rows_after: 0,
            rows_marked: 0,
            rewrote: false,
        })
    }

    fn finish_digests(&mut self, table: Table) {
        for (date, (replaced, replacing)) in std::mem::take(&mut self.digests) {
            self.partition(table, date).rows_unchanged = replacing.unchanged_rows(&replaced);
        }
    }
}

/// Rewrites the stored files `scope` visits that hold a run to replace or to mark.
fn rewrite_touched(
    storage: &dyn Storage,
    table: Table,
    active: &[ActiveFile],
    scope: &Scope<'_>,
    names: &mut Names,
    plan: &mut Plan,
) -> Result<(), DatasetError> {
    let schema = table.schema();
    let hasher = std::hash::RandomState::new();
    for file in active.iter().filter(|f| scope.visits(f)) {
        if !touched(storage, &file.path, scope)? {
            continue;
        }
        let date = file.date.unwrap_or(PartitionDate(None));
        let (replaced, _) = plan.digests.entry(date).or_insert_with(|| {
            (
                RunDigests::new(&schema, hasher.clone()),
                RunDigests::new(&schema, hasher.clone()),
            )
        });
        let (mut before, mut marked) = (0, 0);
        let mut kept = Vec::new();
        for batch in batches(storage, &file.path, None)? {
            let (batch, _) = conform(batch?, &schema, &file.path)?;
            before += batch.num_rows();
            let (wf, run) = key_columns(&batch, &file.path)?;
            replaced.add(&batch, wf, run, |w, r| scope.replace.contains(w, r));
            let rest = without_keys(&batch, scope.replace, &file.path)?;
            let (rest, n) = mark_deleted(rest, scope.marks);
            marked += n;
            if rest.num_rows() > 0 {
                kept.push(rest);
            }
        }
        let after: usize = kept.iter().map(RecordBatch::num_rows).sum();
        plan.removes.insert(file.path.clone());
        if after > 0 {
            let path = names.next(table, Some(date));
            let (size, rows) = write_file(storage, table, &path, kept.into_iter().map(Ok))?;
            plan.added(&path, Some(date), size, rows);
        }
        let part = plan.partition(table, date);
        part.rows_before += before;
        part.rows_replaced += before - after;
        part.rows_after += after;
        part.rows_marked += marked;
        part.rewrote = true;
    }
    Ok(())
}

/// Whether a stored file holds a run `scope` replaces or marks (reads only the key columns).
fn touched(storage: &dyn Storage, path: &str, scope: &Scope<'_>) -> Result<bool, DatasetError> {
    let mut columns = vec!["workflow_id", "run_id"];
    if !scope.marks.is_empty() {
        columns.push(DELETED_UPSTREAM_AT);
    }
    for batch in batches(storage, path, Some(&columns))? {
        let batch = batch?;
        if without_keys(&batch, scope.replace, path)?.num_rows() != batch.num_rows()
            || would_mark(&batch, scope.marks)
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Adds every row of the file at `path` to `digests`.
fn digest_all(
    storage: &dyn Storage,
    path: &str,
    digests: &mut RunDigests,
) -> Result<(), DatasetError> {
    for batch in batches(storage, path, None)? {
        let batch = batch?;
        let (wf, run) = key_columns(&batch, path)?;
        digests.add(&batch, wf, run, |_, _| true);
    }
    Ok(())
}

/// Writes `batches` of `table` as a new data file at `path`; returns its size and rows.
fn write_file(
    storage: &dyn Storage,
    table: Table,
    path: &str,
    batches: impl Iterator<Item = Result<RecordBatch, DatasetError>>,
) -> Result<(u64, usize), DatasetError> {
    let parquet_err = |source| DatasetError::Parquet {
        path: path.to_owned(),
        source,
    };
    let sink = storage.create(path)?;
    let mut writer = ArrowWriter::try_new(sink, table.schema(), Some(writer_properties()))
        .map_err(parquet_err)?;
    let mut rows = 0;
    for batch in batches {
        let batch = batch?;
        rows += batch.num_rows();
        writer.write(&batch).map_err(parquet_err)?;
    }
    let size = writer.into_inner().map_err(parquet_err)?.commit()?;
    Ok((size, rows))
}

/// Writes `batches` as the new data file `path` of `table` in partition `date` (compaction).
pub(super) fn write_new(
    storage: &dyn Storage,
    table: Table,
    path: &str,
    date: Option<PartitionDate>,
    batches: Vec<Result<RecordBatch, DatasetError>>,
) -> Result<NewFile, DatasetError> {
    let (size, rows) = write_file(storage, table, path, batches.into_iter())?;
    Ok(NewFile {
        path: path.to_owned(),
        date,
        size,
        rows,
    })
}

/// Commits a compaction: `adds` hold the rows of `removes`, so the commit changes no data and
/// carries no application transaction.
pub(super) fn commit_files_for_compaction(
    tables: &DeltaTables,
    storage: &dyn Storage,
    table: Table,
    mut snapshot: Option<SnapshotRef>,
    adds: Vec<NewFile>,
    removes: &HashSet<String>,
) -> Result<Option<u64>, DatasetError> {
    commit_files(
        tables,
        storage,
        table,
        &mut snapshot,
        &adds,
        removes,
        None,
        UpdateTableOperation::Optimize,
    )
}

/// Names of the data files one export (or one `maintain` run) writes: the id, then a counter.
pub(super) struct Names {
    id: String,
    next: usize,
}

impl Names {
    pub(super) fn new(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            next: 0,
        }
    }

    /// The path from the dataset root of the next file of `table` in partition `date`.
    pub(super) fn next(&mut self, table: Table, date: Option<PartitionDate>) -> String {
        let n = self.next;
        self.next += 1;
        match date {
            Some(date) => format!(
                "{}/{}/part-{}-{n:05}.parquet",
                table.name(),
                date.dir_name(),
                self.id
            ),
            None => format!("{}/part-{}-{n:05}.parquet", table.name(), self.id),
        }
    }
}

/// Commits `plan` to `table`, retrying on a newer snapshot when another writer committed first.
/// Returns the version committed (`None`: nothing to commit, or the table records `txn`).
fn commit_plan(
    tables: &DeltaTables,
    storage: &dyn Storage,
    table: Table,
    mut snapshot: Option<SnapshotRef>,
    plan: &Plan,
    txn: &TxnId,
) -> Result<Option<u64>, DatasetError> {
    commit_files(
        tables,
        storage,
        table,
        &mut snapshot,
        &plan.adds,
        &plan.removes,
        Some(txn),
        UpdateTableOperation::Write,
    )
}

/// Commits adding `adds` and removing `removes` (paths from the dataset root); see
/// [`commit_plan`]. `txn` is `None` for maintenance (compaction, which changes no data).
#[allow(clippy::too_many_arguments)]
fn commit_files(
    tables: &DeltaTables,
    storage: &dyn Storage,
    table: Table,
    snapshot: &mut Option<SnapshotRef>,
    adds: &[NewFile],
    removes: &HashSet<String>,
    txn: Option<&TxnId>,
    operation: UpdateTableOperation,
) -> Result<Option<u64>, DatasetError> {
    if adds.is_empty() && removes.is_empty() {
        return Ok(None);
    }
    let err = tables.error(table, "commit to");
    let data_change = txn.is_some();
    for attempt in 0..MAX_ATTEMPTS {
        if attempt > 0 {
            // Another writer committed this version: back off a little (jittered), read the
            // newer snapshot, and build the same change on it.
            let wait = 20 * u64::from(attempt.min(10)) + u64::from(rand::random::<u8>() % 50);
            std::thread::sleep(Duration::from_millis(wait));
            *snapshot = tables.snapshot(storage, table)?;
        }
        if let Some(txn) = txn
            && already_applied(tables, table, snapshot.as_ref(), txn)?
        {
            return Ok(snapshot.as_ref().map(|s| s.version()));
        }
        let result = match snapshot.as_ref() {
            None => {
                let mut builder = create_table(
                    tables.url(table).as_str(),
                    schema(table).map_err(&err)?,
                    ENGINE_INFO,
                    data_change,
                )
                .with_table_properties([(
                    "delta.checkpointInterval".to_owned(),
                    CHECKPOINT_INTERVAL.to_string(),
                )]);
                if partitioned(table) {
                    builder = builder.with_data_layout(DataLayout::partitioned([PARTITION_COLUMN]));
                }
                // Another writer (a shard) may create the table first: then retry as an update.
                let created =
                    |e: &KernelError| matches!(e, KernelError::TableAlreadyExistsAtPath(_));
                match builder.build(&tables.engine, Box::new(FileSystemCommitter::new())) {
                    Err(e) if created(&e) => Err(()),
                    Err(e) => return Err(err(e)),
                    Ok(mut t) => {
                        if let Some(txn) = txn {
                            t = t.with_transaction_id(txn.app_id.clone(), txn.seq);
                        }
                        add_files(tables, table, &mut t, adds)?;
                        match t.commit(&tables.engine) {
                            Ok(CommitResult::Committed(c)) => Ok(c.commit_version()),
                            Ok(_) => Err(()),
                            Err(e) if created(&e) => Err(()),
                            Err(e) => return Err(err(e)),
                        }
                    }
                }
            }
            Some(current) => {
                let mut t = current
                    .clone()
                    .update_table(operation.clone(), ENGINE_INFO, data_change)
                    .build(&tables.engine, Box::new(FileSystemCommitter::new()))
                    .map_err(&err)?;
                if let Some(txn) = txn {
                    t = t.with_transaction_id(txn.app_id.clone(), txn.seq);
                }
                add_files(tables, table, &mut t, adds)?;
                remove_files(tables, table, current, &mut t, removes)?;
                match t.commit(&tables.engine).map_err(&err)? {
                    CommitResult::Committed(c) => {
                        checkpoint_if_due(
                            tables,
                            table,
                            c.commit_version(),
                            c.post_commit_snapshot(),
                        );
                        Ok(c.commit_version())
                    }
                    _ => Err(()),
                }
            }
        };
        if let Ok(version) = result {
            return Ok(Some(version));
        }
    }
    Err(DatasetError::DeltaConflict {
        table: tables.shown(table),
        reason: format!("other writers committed first {MAX_ATTEMPTS} times in a row"),
    })
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
