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

use arrow::array::RecordBatch;
use parquet::arrow::ArrowWriter;

use super::txn::{TxnId, commit_plan};
use super::{ActiveFile, DeltaTables};
use crate::dataset::commit::{key_columns, without_keys};
use crate::dataset::digest::RunDigests;
use crate::dataset::marks::{DeletionMarks, conform, mark_deleted, would_mark};
use crate::dataset::{
    CommitSummary, DatasetError, Layout, PartitionCommit, Revisit, RunKeys, Staged, Storage,
    batches, writer_properties,
};
use crate::table::{DELETED_UPSTREAM_AT, PartitionDate, Table};

/// What a Delta commit did: the partitions, as the Hive commit reports them, and each table's
/// new version.
#[derive(Debug, Default, Clone)]
pub struct DeltaCommit {
    /// Per (table, partition), as [`crate::dataset::commit`] reports it.
    pub summary: CommitSummary,
    /// The version each table committed (tables without changes are left out).
    pub versions: BTreeMap<Table, u64>,
}

/// Commits the staged files of `change` as one Delta commit per table, each carrying `txn`; new
/// data files are named after `export_id` (see the module documentation).
pub fn commit(
    tables: &DeltaTables,
    storage: &dyn Storage,
    change: Staged<'_>,
    txn: &TxnId,
    export_id: &str,
) -> Result<DeltaCommit, DatasetError> {
    let Staged {
        files: staged,
        steps_fetched,
        layout,
        marks,
        revisit,
    } = change;
    let replace = change.runs(storage)?;
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
        if let Some(version) = commit_plan(tables, storage, table, snapshot, &plan, Some(txn))? {
            done.versions.insert(table, version);
        }
        done.summary
            .partitions
            .extend(plan.partitions.into_values());
    }
    Ok(done)
}

/// Commits a new snapshot of the unpartitioned `table` (`workflows`): `batch` replaces every
/// row this layout stored before. Returns the version committed.
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
    commit_plan(tables, storage, table, snapshot, &plan, Some(txn))
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
pub(super) struct Plan {
    pub(super) adds: Vec<NewFile>,
    /// Paths from the dataset root.
    pub(super) removes: HashSet<String>,
    partitions: BTreeMap<PartitionDate, PartitionCommit>,
    /// Per partition with replaced rows: digests of the rows replaced and of those replacing.
    digests: HashMap<PartitionDate, (RunDigests, RunDigests)>,
}

pub(super) struct NewFile {
    pub(super) path: String,
    pub(super) date: Option<PartitionDate>,
    pub(super) size: u64,
    pub(super) rows: usize,
}

impl Plan {
    /// Adds the new data file `path` of partition `date` (`None`: unpartitioned).
    pub(super) fn added(
        &mut self,
        path: &str,
        date: Option<PartitionDate>,
        size: u64,
        rows: usize,
    ) {
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
pub(super) fn write_file(
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
