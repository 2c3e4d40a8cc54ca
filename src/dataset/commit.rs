//! Commit: moves an export's staged files into the dataset, merging each touched partition with
//! the rows already there, so that every run is stored exactly once.
//!
//! Every committed partition holds one file per writer ([`PARTITION_FILE`], or one per shard, named
//! by its [`Layout`]; a shard never reads or touches another's). A partition is replaced by
//! writing its merged content to a hidden temp file and renaming it over that file: readers see
//! the old rows or the new ones, never both, at every instant — also when the process is killed.
//! Rows are keyed by (`workflow_id`, `run_id`); a run in the export replaces the stored run and
//! all its child rows (`node_outputs`, `run_inputs`) in every partition it is found in: its own
//! day, the undated partition, and the days where runs fetched again were stored before (a start
//! corrected to another day moves a run; [`Revisit`]). Within a date, child tables are committed
//! before `runs`; partitions that receive rows before those that only lose some. A `--full`
//! export visits every partition of `runs`, to remove rows of runs staged under another day and
//! to mark the stored runs the API no longer has ([`DeletionMarks`]); a partition in which
//! nothing changes is left as it is.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use parquet::arrow::ArrowWriter;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::DatasetError;
use super::digest::RunDigests;
use super::marks::{DeletionMarks, conform, mark_deleted, would_mark};
use super::shard::Layout;
use super::storage::Storage;
#[cfg(doc)]
use super::writer::PARTITION_FILE;
use super::writer::{WriteSummary, writer_properties};
use crate::table::{PartitionDate, Table};

/// A set of run keys (`workflow_id`, `run_id`), probed without allocating.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunKeys(HashMap<String, HashSet<String>>);

impl RunKeys {
    /// Adds a key.
    pub fn insert(&mut self, workflow_id: &str, run_id: &str) {
        self.0
            .entry(workflow_id.to_owned())
            .or_default()
            .insert(run_id.to_owned());
    }

    /// Whether the key is in the set.
    pub fn contains(&self, workflow_id: &str, run_id: &str) -> bool {
        self.0
            .get(workflow_id)
            .is_some_and(|runs| runs.contains(run_id))
    }

    /// Whether any key is in both sets.
    pub fn intersects(&self, other: &RunKeys) -> bool {
        self.0.iter().any(|(workflow, runs)| {
            other
                .0
                .get(workflow)
                .is_some_and(|theirs| runs.iter().any(|r| theirs.contains(r)))
        })
    }

    /// Adds every key of `other`.
    pub fn extend(&mut self, other: &RunKeys) {
        for (workflow, runs) in &other.0 {
            self.0
                .entry(workflow.clone())
                .or_default()
                .extend(runs.iter().cloned());
        }
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.values().all(HashSet::is_empty)
    }
}

/// What committing one (table, partition) did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionCommit {
    /// The table.
    pub table: Table,
    /// The partition.
    pub date: PartitionDate,
    /// Rows stored before.
    pub rows_before: usize,
    /// Rows of this export written.
    pub rows_staged: usize,
    /// Stored rows this export replaced (the same run fetched again) or moved elsewhere.
    pub rows_replaced: usize,
    /// Of the rows staged, those of runs fetched again with the same content (only re-read).
    pub rows_unchanged: usize,
    /// Rows stored after.
    pub rows_after: usize,
    /// Stored runs marked as deleted upstream by this export (`runs` only).
    pub rows_marked: usize,
    /// Whether an existing file was rewritten (as opposed to a new partition appearing).
    pub rewrote: bool,
}

/// What a commit did, partition by partition.
#[derive(Debug, Default, Clone)]
pub struct CommitSummary {
    /// One entry per (table, partition) touched.
    pub partitions: Vec<PartitionCommit>,
}

impl CommitSummary {
    /// Rows of `table` stored for the first time.
    pub fn rows_new(&self, table: Table) -> usize {
        self.of(table)
            .map(|p| p.rows_staged - p.rows_replaced.min(p.rows_staged))
            .sum()
    }

    /// Rows of `table` that replaced a stored version that differed (a run that finished
    /// since, say); runs only re-read are [`CommitSummary::rows_unchanged`].
    pub fn rows_updated(&self, table: Table) -> usize {
        self.of(table)
            .map(|p| {
                p.rows_replaced
                    .min(p.rows_staged)
                    .saturating_sub(p.rows_unchanged)
            })
            .sum()
    }

    /// Rows of `table` fetched again and stored as they were (every column but `extracted_at`).
    pub fn rows_unchanged(&self, table: Table) -> usize {
        self.of(table).map(|p| p.rows_unchanged).sum()
    }

    /// Stored runs this export marked as deleted upstream.
    pub fn runs_marked_deleted(&self) -> usize {
        self.of(Table::Runs).map(|p| p.rows_marked).sum()
    }

    /// Existing files rewritten.
    pub fn files_rewritten(&self) -> usize {
        self.partitions.iter().filter(|p| p.rewrote).count()
    }

    fn of(&self, table: Table) -> impl Iterator<Item = &PartitionCommit> {
        self.partitions.iter().filter(move |p| p.table == table)
    }
}

/// What an export hands to the commit: its staged files and what it learnt while fetching.
#[derive(Debug, Clone, Copy)]
pub struct Staged<'a> {
    /// The files written to staging.
    pub files: &'a WriteSummary,
    /// Whether the export fetched steps: only then are a re-fetched run's stored steps
    /// replaced (an export without `--with-steps` leaves the `steps` table alone).
    pub steps_fetched: bool,
    /// The export's layout: only its files are merged.
    pub layout: Layout,
    /// Runs to mark deleted upstream (a `--full` export).
    pub marks: &'a DeletionMarks,
    /// Partitions without staged rows that may hold older rows of the runs staged.
    pub revisit: &'a Revisit,
}

impl Staged<'_> {
    /// The runs staged: every stored row of one of them is obsolete, in whichever partition it
    /// is (a run may have moved: a start first missing, or corrected to another day).
    pub(super) fn runs(&self, storage: &dyn Storage) -> Result<RunKeys, DatasetError> {
        let runs: Vec<String> = (self.files.files.iter())
            .filter(|f| f.table == Table::Runs && f.date.is_some())
            .map(|f| f.path.clone())
            .collect();
        staged_keys(storage, &runs)
    }
}

/// Commits the staged files of `staged` into the dataset.
///
/// A run without a start time is stored in the default partition until it starts; when an export
/// stages it under its date, it leaves the default partition. That partition is committed first,
/// so a kill in between can make such a run briefly absent (the next export, whose state did not
/// advance, fetches it again) but never present twice.
///
/// Only the files the layout owns are merged; every folder the commit touches is checked before
/// the first one changes, so a partition holding files of another layout fails the commit with
/// the dataset untouched.
///
/// With `marks` (a `--full` export), every partition of `runs` is visited, and stored runs of the
/// workflows it paged to their end that the API no longer has get `deleted_upstream_at`.
pub fn commit(storage: &dyn Storage, change: Staged<'_>) -> Result<CommitSummary, DatasetError> {
    let Staged {
        files: staged,
        steps_fetched,
        layout,
        marks,
        revisit,
    } = change;
    let mut by_partition: BTreeMap<PartitionDate, BTreeMap<Table, Vec<String>>> = BTreeMap::new();
    for file in &staged.files {
        if let Some(date) = file.date {
            by_partition
                .entry(date)
                .or_default()
                .entry(file.table)
                .or_default()
                .push(file.path.clone());
        }
    }
    let replace = change.runs(storage)?;
    // Partitions visited only to mark runs deleted upstream: their other tables do not change.
    let mut only_marks: HashSet<PartitionDate> = HashSet::new();
    let everywhere = !marks.is_empty() || matches!(revisit, Revisit::All);
    let mut candidates: BTreeSet<PartitionDate> = match revisit {
        Revisit::Dates(dates) => dates.clone(),
        Revisit::All => BTreeSet::new(),
    };
    candidates.insert(PartitionDate(None));
    if everywhere {
        for dir in storage.list_dirs(Table::Runs.name())? {
            candidates.extend(PartitionDate::from_dir_name(&dir));
        }
    }
    for date in candidates {
        if by_partition.contains_key(&date) {
            continue;
        }
        let stored = stored_keys(storage, date, layout)?;
        if stored.intersects(&replace) {
            // An older row of a run staged elsewhere: rewritten without it, children too.
            by_partition.insert(date, BTreeMap::new());
        } else if !marks.is_empty() {
            by_partition.insert(date, BTreeMap::new());
            only_marks.insert(date);
        }
    }
    // Children first: a committed `runs` row always has its children committed.
    let order = [
        Table::NodeOutputs,
        Table::RunInputs,
        Table::Steps,
        Table::Runs,
    ]
    .into_iter()
    .filter(|t| *t != Table::Steps || steps_fetched);
    let mut own: HashMap<(Table, PartitionDate), Vec<String>> = HashMap::new();
    for date in by_partition.keys() {
        for table in order.clone() {
            if only_marks.contains(date) && table != Table::Runs {
                continue;
            }
            let dir = format!("{}/{}", table.name(), date.dir_name());
            let files = layout.check_partition(storage, &dir)?;
            let paths = files.into_iter().map(|n| format!("{dir}/{n}")).collect();
            own.insert((table, *date), paths);
        }
    }
    let rows: HashMap<&str, usize> = staged
        .files
        .iter()
        .map(|f| (f.path.as_str(), f.rows))
        .collect();
    let mut summary = CommitSummary::default();
    // Partitions that receive rows first, those that only lose some after: a moved run whose
    // old day gains no row is twice for a moment rather than nowhere. (When its old day gains
    // rows too, days go in date order, and it can be nowhere for a moment; a commit that stops
    // there leaves it so until the next export, which fetches it again.)
    let (receiving, losing): (Vec<_>, Vec<_>) =
        by_partition.into_iter().partition(|(_, t)| !t.is_empty());
    for (date, tables) in receiving.into_iter().chain(losing) {
        for table in order.clone() {
            if only_marks.contains(&date) && table != Table::Runs {
                continue;
            }
            let files = tables.get(&table).map(Vec::as_slice).unwrap_or_default();
            let partition = Partition {
                table,
                date,
                existing: own.remove(&(table, date)).unwrap_or_default(),
                target: format!(
                    "{}/{}/{}",
                    table.name(),
                    date.dir_name(),
                    layout.partition_file()
                ),
            };
            let marks = if table == Table::Runs {
                marks
            } else {
                &DeletionMarks::default()
            };
            let change = Change {
                staged: files,
                staged_rows: &rows,
                replace: &replace,
                marks,
            };
            if let Some(done) = commit_partition(storage, partition, change)? {
                summary.partitions.push(done);
            }
        }
    }
    Ok(summary)
}

/// Partitions without staged rows that may hold older rows of the runs staged (the undated
/// partition always may).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revisit {
    /// These days: where runs fetched again were stored before.
    Dates(BTreeSet<PartitionDate>),
    /// Every partition (`--full`): a run found anywhere but in its current partition goes.
    All,
}

/// Keys of the runs `layout` stored in one partition of `runs`.
fn stored_keys(
    storage: &dyn Storage,
    date: PartitionDate,
    layout: Layout,
) -> Result<RunKeys, DatasetError> {
    let dir = format!("{}/{}", Table::Runs.name(), date.dir_name());
    let files: Vec<String> = layout
        .check_partition(storage, &dir)?
        .into_iter()
        .map(|n| format!("{dir}/{n}"))
        .collect();
    staged_keys(storage, &files)
}

/// Calls `f(workflow_id, run_id)` for every row of a Parquet file.
fn for_each_key(
    storage: &dyn Storage,
    path: &str,
    mut f: impl FnMut(&str, &str),
) -> Result<(), DatasetError> {
    for batch in batches(storage, path, Some(&["workflow_id", "run_id"]))? {
        let batch = batch?;
        let (wf, run) = key_columns(&batch, path)?;
        for i in 0..batch.num_rows() {
            f(wf.value(i), run.value(i));
        }
    }
    Ok(())
}

/// The run keys in the staged `runs` files of one partition.
pub(super) fn staged_keys(
    storage: &dyn Storage,
    files: &[String],
) -> Result<RunKeys, DatasetError> {
    let mut keys = RunKeys::default();
    for path in files {
        for_each_key(storage, path, |w, r| keys.insert(w, r))?;
    }
    Ok(keys)
}

/// One (table, partition) of one writer.
struct Partition {
    table: Table,
    date: PartitionDate,
    /// The writer's committed files there (paths from the root).
    existing: Vec<String>,
    /// The writer's partition file.
    target: String,
}

/// What a commit does to one partition: the staged files to add, the stored runs they replace,
/// and the runs to mark deleted upstream.
struct Change<'a> {
    staged: &'a [String],
    staged_rows: &'a HashMap<&'a str, usize>,
    replace: &'a RunKeys,
    marks: &'a DeletionMarks,
}

fn commit_partition(
    storage: &dyn Storage,
    partition: Partition,
    change: Change<'_>,
) -> Result<Option<PartitionCommit>, DatasetError> {
    let Partition {
        table,
        date,
        existing,
        target,
    } = partition;
    let staged = change.staged;
    if existing.is_empty() && staged.is_empty() {
        return Ok(None);
    }
    if existing.is_empty() && staged.len() == 1 {
        // A new partition: the staged file becomes it as it is.
        let rows = change
            .staged_rows
            .get(staged[0].as_str())
            .copied()
            .unwrap_or(0);
        storage.rename(&staged[0], &target)?;
        return Ok(Some(PartitionCommit {
            table,
            date,
            rows_before: 0,
            rows_staged: rows,
            rows_replaced: 0,
            rows_unchanged: 0,
            rows_after: rows,
            rows_marked: 0,
            rewrote: false,
        }));
    }
    let parquet_err = |source| DatasetError::Parquet {
        path: target.clone(),
        source,
    };
    let schema = table.schema();
    if staged.is_empty() && unchanged(storage, &existing, &target, &schema, &change)? {
        return Ok(None);
    }
    let sink = storage.create(&target)?;
    let mut writer = ArrowWriter::try_new(sink, schema.clone(), Some(writer_properties()))
        .map_err(parquet_err)?;
    let (mut rows_before, mut rows_after, mut rows_staged, mut rows_marked) = (0, 0, 0, 0);
    // A file of an older schema (without a column added since) is rewritten in the current one.
    let mut upgraded = false;
    let hasher = std::hash::RandomState::new();
    let mut replaced = RunDigests::new(&schema, hasher.clone());
    let mut replacing = RunDigests::new(&schema, hasher);
    for path in &existing {
        for batch in batches(storage, path, None)? {
            let (batch, changed) = conform(batch?, &schema, path)?;
            upgraded |= changed;
            rows_before += batch.num_rows();
            if !change.replace.is_empty() && !staged.is_empty() {
                let (wf, run) = key_columns(&batch, path)?;
                replaced.add(&batch, wf, run, |w, r| change.replace.contains(w, r));
            }
            let kept = without_keys(&batch, change.replace, path)?;
            let (kept, marked) = mark_deleted(kept, change.marks);
            rows_marked += marked;
            rows_after += kept.num_rows();
            writer.write(&kept).map_err(parquet_err)?;
        }
    }
    let rows_replaced = rows_before - rows_after;
    for path in staged {
        for batch in batches(storage, path, None)? {
            let batch = batch?;
            rows_staged += batch.num_rows();
            if rows_replaced > 0 {
                let (wf, run) = key_columns(&batch, path)?;
                replacing.add(&batch, wf, run, |_, _| true);
            }
            writer.write(&batch).map_err(parquet_err)?;
        }
    }
    rows_after += rows_staged;
    let staged_file = writer.into_inner().map_err(parquet_err)?;
    let old_layout = existing.iter().any(|p| *p != target);
    if staged.is_empty() && rows_replaced == 0 && rows_marked == 0 && !old_layout && !upgraded {
        // Visited to mark runs, none was: the partition stays as it is.
        drop(staged_file);
        return Ok(None);
    }
    if rows_after == 0 {
        // Every run left this partition: remove it rather than keep an empty file.
        drop(staged_file);
        for path in &existing {
            storage.remove(path)?;
        }
    } else {
        staged_file.commit()?;
        // Files other than the partition file exist only in datasets of older layouts.
        for path in existing.iter().filter(|p| **p != target) {
            storage.remove(path)?;
        }
    }
    Ok(Some(PartitionCommit {
        table,
        date,
        rows_before,
        rows_staged,
        rows_replaced,
        rows_unchanged: replacing.unchanged_rows(&replaced),
        rows_after,
        rows_marked,
        rewrote: !existing.is_empty(),
    }))
}

/// Whether a partition visited with nothing staged stays as it is: one file, the partition
/// file, in the current schema, and no stored run to replace or to mark. Reads only the key
/// columns (and the marks), so a `--full` export does not re-encode every partition.
fn unchanged(
    storage: &dyn Storage,
    existing: &[String],
    target: &str,
    schema: &arrow::datatypes::SchemaRef,
    change: &Change<'_>,
) -> Result<bool, DatasetError> {
    if existing.iter().any(|p| p != target) {
        return Ok(false);
    }
    for path in existing {
        let parquet_err = |source| DatasetError::Parquet {
            path: path.clone(),
            source,
        };
        let builder = ParquetRecordBatchReaderBuilder::try_new(storage.read_parquet(path)?)
            .map_err(parquet_err)?;
        if builder.schema().fields() != schema.fields() {
            return Ok(false);
        }
        let columns = ["workflow_id", "run_id", crate::table::DELETED_UPSTREAM_AT];
        let mask = ProjectionMask::columns(builder.parquet_schema(), columns);
        for batch in builder.with_projection(mask).build().map_err(parquet_err)? {
            let batch = batch.map_err(|e| parquet_err(e.into()))?;
            if without_keys(&batch, change.replace, path)?.num_rows() != batch.num_rows()
                || would_mark(&batch, change.marks)
            {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// Streams a Parquet file's batches, optionally only some columns.
pub fn batches(
    storage: &dyn Storage,
    path: &str,
    columns: Option<&[&str]>,
) -> Result<impl Iterator<Item = Result<RecordBatch, DatasetError>> + use<>, DatasetError> {
    let parquet_err = |source| DatasetError::Parquet {
        path: path.to_owned(),
        source,
    };
    let source = storage.read_parquet(path)?;
    let mut builder = ParquetRecordBatchReaderBuilder::try_new(source).map_err(parquet_err)?;
    if let Some(columns) = columns {
        let mask = ProjectionMask::columns(builder.parquet_schema(), columns.iter().copied());
        builder = builder.with_projection(mask);
    }
    let reader = builder.build().map_err(parquet_err)?;
    let path = path.to_owned();
    Ok(reader.map(move |batch| {
        batch.map_err(|e| DatasetError::Parquet {
            path: path.clone(),
            source: e.into(),
        })
    }))
}

/// The key columns of a batch read from `path`.
pub(super) fn key_columns<'a>(
    batch: &'a RecordBatch,
    path: &str,
) -> Result<(&'a arrow::array::StringArray, &'a arrow::array::StringArray), DatasetError> {
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .and_then(|c| c.as_string_opt::<i32>())
            .filter(|c| c.null_count() == 0)
            .ok_or_else(|| DatasetError::Parquet {
                path: path.to_owned(),
                source: parquet::errors::ParquetError::General(format!(
                    "column `{name}` is missing, not a UTF-8 string column, or has nulls"
                )),
            })
    };
    Ok((column("workflow_id")?, column("run_id")?))
}

/// The rows of `batch` (read from `path`) whose run key is not in `keys`.
pub(super) fn without_keys(
    batch: &RecordBatch,
    keys: &RunKeys,
    path: &str,
) -> Result<RecordBatch, DatasetError> {
    if keys.is_empty() {
        return Ok(batch.clone());
    }
    let (wf, run) = key_columns(batch, path)?;
    let keep: BooleanArray = (0..batch.num_rows())
        .map(|i| Some(!keys.contains(wf.value(i), run.value(i))))
        .collect();
    Ok(filter_record_batch(batch, &keep).expect("mask has the batch's length"))
}
