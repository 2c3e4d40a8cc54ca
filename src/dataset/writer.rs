//! The streaming Parquet writer: one file per (table, partition), bounded memory.
//!
//! Rows arrive a page at a time, spread over many partitions at once (every workflow pages its
//! own history newest first). They wait as Arrow batches per (table, partition) until that
//! partition has a row group's worth or the memory budget is reached, and are then encoded as
//! one row group in one go. Only the row group being encoded has Parquet column writers: each
//! holds page buffers and zstd contexts (about 100 KB per column even before it compresses
//! anything), which, kept open for every partition at once, once took half the memory of an
//! export (BENCHMARKS.md).

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;

use arrow::array::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use rayon::prelude::*;

use super::DatasetError;
use super::shard::Layout;
use super::storage::{StagedFile, Storage};
use crate::table::PartitionRows;
use crate::table::{PartitionDate, Table};

/// Rows per Parquet row group: large enough for good compression and fast scans, small enough
/// that one open partition buffers only a few MB.
const ROW_GROUP_ROWS: usize = 128 * 1024;
/// A partition file is closed and a new one started after this many rows.
const MAX_ROWS_PER_FILE: usize = 4 * 1024 * 1024;
/// Arrow bytes all partitions may hold waiting together before the largest is encoded.
const DEFAULT_MEMORY_BUDGET: usize = 32 * 1024 * 1024;
/// Files open at once (an open file holds a descriptor and the footer of its row groups so far);
/// past this the least recently written file is committed, and a partition written again later
/// gets a second file that the commit merges.
const MAX_OPEN_FILES: usize = 192;
/// zstd level 3: zstd's default, most of the ratio at a fraction of the CPU of higher levels.
const ZSTD_LEVEL: i32 = 3;
/// Columns that are nearly unique per row, where a dictionary only costs time (`end_time` and
/// `duration_ms` too: 2% smaller files without them, BENCHMARKS.md).
const NO_DICTIONARY_COLUMNS: [&str; 7] = [
    "run_id",
    "outputs",
    "inputs",
    "value",
    "extracted_at",
    "end_time",
    "duration_ms",
];
/// Long JSON text columns: min/max of values nobody filters by ranges cost encoding time and
/// footer space for nothing, so they get no statistics (2.5% less CPU on LLM-heavy runs,
/// BENCHMARKS.md).
const JSON_TEXT_COLUMNS: [&str; 4] = ["outputs", "inputs", "value", "error"];

/// The name of the one file each committed partition holds: replacing it is a single atomic
/// rename, so readers never see a partition with both old and new rows.
pub const PARTITION_FILE: &str = "part-0.parquet";

/// Tunables of the writer; the defaults suit any history size.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Folder (with a trailing `/`) the tables are written under, e.g. a staging area.
    pub prefix: String,
    /// Bound on the Arrow bytes of rows waiting to be encoded, across partitions.
    pub memory_budget: usize,
}

impl WriterOptions {
    /// Options writing below `prefix` with the default memory budget.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            memory_budget: DEFAULT_MEMORY_BUDGET,
        }
    }
}

/// What a writer committed.
#[derive(Debug, Default, Clone)]
pub struct WriteSummary {
    /// Committed files: table, relative path, rows, bytes.
    pub files: Vec<WrittenFile>,
}

/// One committed file.
#[derive(Debug, Clone)]
pub struct WrittenFile {
    /// Table the file belongs to.
    pub table: Table,
    /// Its partition; `None` for unpartitioned tables.
    pub date: Option<PartitionDate>,
    /// Path relative to the export root.
    pub path: String,
    /// Rows in the file.
    pub rows: usize,
    /// Size in bytes.
    pub bytes: u64,
}

impl WriteSummary {
    /// Rows committed to `table`.
    pub fn rows(&self, table: Table) -> usize {
        self.files
            .iter()
            .filter(|f| f.table == table)
            .map(|f| f.rows)
            .sum()
    }

    /// Bytes committed in all files.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }
}

/// The Parquet settings of every data file: zstd, page statistics, dictionaries except on
/// near-unique columns, bounded row groups. Public for the benchmarks.
pub fn writer_properties() -> WriterProperties {
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(ZSTD_LEVEL).expect("valid zstd level"),
        ))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_created_by(format!("orchestra-export {}", env!("CARGO_PKG_VERSION")));
    for column in NO_DICTIONARY_COLUMNS {
        builder = builder.set_column_dictionary_enabled(ColumnPath::from(column), false);
    }
    for column in JSON_TEXT_COLUMNS {
        builder = builder
            .set_column_statistics_enabled(ColumnPath::from(column), EnabledStatistics::None);
    }
    builder.build()
}

/// Rows of one (table, partition) waiting to be encoded as a row group.
#[derive(Default)]
struct Pending {
    batches: Vec<RecordBatch>,
    rows: usize,
    bytes: usize,
}

struct OpenFile {
    table: Table,
    date: PartitionDate,
    path: String,
    rows: usize,
    last_write: u64,
    writer: ArrowWriter<Box<dyn StagedFile>>,
}

impl OpenFile {
    /// Writes `pending` as one row group.
    fn append_row_group(&mut self, pending: &Pending) -> Result<(), DatasetError> {
        let path = &self.path;
        let parquet_err = |source| DatasetError::Parquet {
            path: path.clone(),
            source,
        };
        for batch in &pending.batches {
            self.writer.write(batch).map_err(parquet_err)?;
        }
        // Ends the row group, dropping its column writers.
        self.writer.flush().map_err(parquet_err)?;
        self.rows += pending.rows;
        Ok(())
    }

    fn close(self) -> Result<WrittenFile, DatasetError> {
        let parquet_err = |source| DatasetError::Parquet {
            path: self.path.clone(),
            source,
        };
        let staged = self.writer.into_inner().map_err(parquet_err)?;
        let bytes = staged.commit()?;
        Ok(WrittenFile {
            table: self.table,
            date: Some(self.date),
            path: self.path,
            rows: self.rows,
            bytes,
        })
    }
}

/// Streams partition rows into Parquet files; files appear when closed.
pub struct DatasetWriter {
    storage: Arc<dyn Storage>,
    options: WriterOptions,
    props: WriterProperties,
    open: HashMap<(Table, PartitionDate), OpenFile>,
    pending: HashMap<(Table, PartitionDate), Pending>,
    /// Sum of the pending batches' Arrow bytes.
    pending_bytes: usize,
    next_seq: u64,
    writes: u64,
    summary: WriteSummary,
}

impl DatasetWriter {
    /// A writer that commits through `storage`.
    pub fn try_new(
        storage: Arc<dyn Storage>,
        options: WriterOptions,
    ) -> Result<Self, DatasetError> {
        Ok(Self {
            storage,
            options,
            props: writer_properties(),
            open: HashMap::new(),
            pending: HashMap::new(),
            pending_bytes: 0,
            next_seq: 0,
            writes: 0,
            summary: WriteSummary::default(),
        })
    }

    /// Writes one page's rows for one partition to the three run tables.
    pub fn write(&mut self, rows: &PartitionRows) -> Result<(), DatasetError> {
        self.write_batch(Table::Runs, rows.date, &rows.runs)?;
        self.write_batch(Table::NodeOutputs, rows.date, &rows.node_outputs)?;
        self.write_batch(Table::RunInputs, rows.date, &rows.run_inputs)?;
        self.enforce_memory_budget()
    }

    /// Writes a batch of `table` to partition `date`.
    pub fn write_batch(
        &mut self,
        table: Table,
        date: PartitionDate,
        batch: &RecordBatch,
    ) -> Result<(), DatasetError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let key = (table, date);
        let bytes = batch.get_array_memory_size();
        let pending = self.pending.entry(key).or_default();
        pending.batches.push(batch.clone());
        pending.rows += batch.num_rows();
        pending.bytes += bytes;
        self.pending_bytes += bytes;
        if pending.rows >= ROW_GROUP_ROWS {
            self.encode(key)?;
        }
        Ok(())
    }

    /// Encodes the rows waiting for `key` as one row group of its file.
    fn encode(&mut self, key: (Table, PartitionDate)) -> Result<(), DatasetError> {
        self.encode_all(&[key])
    }

    /// Encodes the rows waiting for each of `keys` as one row group of its file, the files at
    /// once on the rayon pool (encoding and compressing is most of an export's CPU time, and
    /// the files are independent).
    fn encode_all(&mut self, keys: &[(Table, PartitionDate)]) -> Result<(), DatasetError> {
        let mut jobs = Vec::with_capacity(keys.len());
        for &key in keys {
            let Some(pending) = self.pending.remove(&key) else {
                continue;
            };
            self.pending_bytes -= pending.bytes;
            let mut file = match self.open.remove(&key) {
                Some(file) => file,
                None => {
                    if self.open.len() + jobs.len() >= MAX_OPEN_FILES {
                        self.close_least_recent()?;
                    }
                    self.open_file(key.0, key.1)?
                }
            };
            self.writes += 1;
            file.last_write = self.writes;
            jobs.push((key, file, pending));
        }
        let done: Vec<_> = jobs
            .into_par_iter()
            .map(|(key, mut file, pending)| {
                let written = file.append_row_group(&pending);
                (key, file, written)
            })
            .collect();
        let mut result = Ok(());
        for (key, file, written) in done {
            let full = file.rows >= MAX_ROWS_PER_FILE;
            self.open.insert(key, file);
            match written {
                Err(e) if result.is_ok() => result = Err(e),
                Ok(()) if full => self.close_file(key)?,
                _ => {}
            }
        }
        result
    }

    fn close_file(&mut self, key: (Table, PartitionDate)) -> Result<(), DatasetError> {
        if let Some(file) = self.open.remove(&key) {
            self.summary.files.push(file.close()?);
        }
        Ok(())
    }

    fn open_file(&mut self, table: Table, date: PartitionDate) -> Result<OpenFile, DatasetError> {
        let path = format!(
            "{}{}/{}/part-{:05}.parquet",
            self.options.prefix,
            table.name(),
            date.dir_name(),
            self.next_seq
        );
        self.next_seq += 1;
        let sink = self.storage.create(&path)?;
        let writer = ArrowWriter::try_new(sink, table.schema(), Some(self.props.clone())).map_err(
            |source| DatasetError::Parquet {
                path: path.clone(),
                source,
            },
        )?;
        Ok(OpenFile {
            table,
            date,
            path,
            rows: 0,
            last_write: 0,
            writer,
        })
    }

    fn close_least_recent(&mut self) -> Result<(), DatasetError> {
        let oldest = self
            .open
            .iter()
            .min_by_key(|(_, f)| f.last_write)
            .map(|(k, _)| *k);
        match oldest {
            Some(key) => self.close_file(key),
            None => Ok(()),
        }
    }

    /// Encodes the largest waiting partitions, as many at once as the pool has threads, until
    /// the rest fit the memory budget.
    fn enforce_memory_budget(&mut self) -> Result<(), DatasetError> {
        while self.pending_bytes > self.options.memory_budget && !self.pending.is_empty() {
            let mut largest: Vec<_> = self.pending.iter().map(|(k, p)| (p.bytes, *k)).collect();
            largest.sort_unstable_by(|a, b| b.cmp(a));
            let keys: Vec<_> = largest
                .into_iter()
                .take(rayon::current_num_threads().max(1))
                .map(|(_, key)| key)
                .collect();
            self.encode_all(&keys)?;
        }
        Ok(())
    }

    /// Arrow bytes of the rows waiting to be encoded.
    pub fn buffered_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// Encodes what waits, then closes and commits every file.
    pub fn close(mut self) -> Result<WriteSummary, DatasetError> {
        let mut waiting: Vec<_> = self.pending.keys().copied().collect();
        waiting.sort();
        // In groups, so that no more files are open at once than the limit allows.
        for keys in waiting.chunks(MAX_OPEN_FILES / 4) {
            self.encode_all(keys)?;
        }
        let mut open: Vec<_> = self.open.drain().collect();
        open.sort_by_key(|(key, _)| *key);
        for (_, file) in open {
            self.summary.files.push(file.close()?);
        }
        Ok(self.summary)
    }
}

/// Replaces `layout`'s part of the unpartitioned `table` with `batch`, atomically: the new file
/// takes the place of the old one in a single rename. (A shard's part holds its workflows; the
/// other shards' files are left alone.)
pub fn write_snapshot(
    storage: &dyn Storage,
    table: Table,
    batch: &RecordBatch,
    layout: Layout,
) -> Result<WrittenFile, DatasetError> {
    let dir = table.name();
    let file = layout.partition_file();
    let path = format!("{dir}/{file}");
    let sink = storage.create(&path)?;
    let parquet_err = |source| DatasetError::Parquet {
        path: path.clone(),
        source,
    };
    let mut writer = ArrowWriter::try_new(sink, table.schema(), Some(writer_properties()))
        .map_err(parquet_err)?;
    writer.write(batch).map_err(parquet_err)?;
    let bytes = writer.into_inner().map_err(parquet_err)?.commit()?;
    // Files of older layouts next to the snapshot would double its rows.
    for name in layout.check_partition(storage, dir)? {
        if name != file {
            storage.remove(&format!("{dir}/{name}"))?;
        }
    }
    Ok(WrittenFile {
        table,
        date: None,
        path,
        rows: batch.num_rows(),
        bytes,
    })
}

/// Writes `lines` (already JSON) as a JSON-lines file at `path`, atomically.
pub fn write_jsonl(
    storage: &dyn Storage,
    path: &str,
    lines: impl IntoIterator<Item = String>,
) -> Result<u64, DatasetError> {
    let mut file = storage.create(path)?;
    let io_err = |source| DatasetError::io("write", std::path::Path::new(path), source);
    for line in lines {
        file.write_all(line.as_bytes()).map_err(io_err)?;
        file.write_all(b"\n").map_err(io_err)?;
    }
    file.commit()
}

#[cfg(test)]
mod tests {
    use std::fs::File;

    use arrow::array::{Array, AsArray};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use serde_json::json;

    use super::*;
    use crate::dataset::LocalStorage;
    use crate::flatten::{PageContext, flatten_page};

    /// One run a day for `days` days, each in its own partition.
    fn rows(days: i64, text_len: usize) -> Vec<PartitionRows> {
        let records: Vec<serde_json::Value> = (0..days)
            .map(|d| {
                let start = crate::flatten::format_timestamp(1_700_000_000_000_000 + d * 86_400_000_000);
                json!({"id": format!("r{d}"), "start_time": start, "all_outputs": {"m": "x".repeat(text_len)}})
            })
            .collect();
        let ctx = PageContext {
            workflow_id: "w",
            offset: 0,
            extracted_at_us: 0,
            policy: crate::privacy::Policy::none(),
        };
        let body = serde_json::to_vec(&records).unwrap();
        flatten_page(&body, ctx).unwrap().partitions
    }

    fn read_run_ids(root: &std::path::Path, summary: &WriteSummary) -> Vec<String> {
        let mut ids = Vec::new();
        for file in summary.files.iter().filter(|f| f.table == Table::Runs) {
            let reader = ParquetRecordBatchReaderBuilder::try_new(
                File::open(root.join(&file.path)).unwrap(),
            )
            .unwrap()
            .build()
            .unwrap();
            for batch in reader {
                let batch = batch.unwrap();
                let col = batch
                    .column_by_name("run_id")
                    .unwrap()
                    .as_string::<i32>()
                    .clone();
                ids.extend((0..col.len()).map(|i| col.value(i).to_owned()));
            }
        }
        ids.sort();
        ids
    }

    #[test]
    fn years_of_partitions_keep_a_bounded_number_of_files_open() {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> = Arc::new(LocalStorage::open(dir.path()).unwrap());
        let mut writer = DatasetWriter::try_new(storage, WriterOptions::new("")).unwrap();
        let parts = rows(730, 10);
        for part in &parts {
            writer.write(part).unwrap();
            assert!(writer.open.len() <= MAX_OPEN_FILES);
        }
        let summary = writer.close().unwrap();
        assert_eq!(summary.rows(Table::Runs), 730);
        let mut want: Vec<String> = (0..730).map(|d| format!("r{d}")).collect();
        want.sort();
        assert_eq!(read_run_ids(dir.path(), &summary), want);
    }

    #[test]
    fn pages_of_one_partition_become_one_row_group() {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> = Arc::new(LocalStorage::open(dir.path()).unwrap());
        let mut writer = DatasetWriter::try_new(storage, WriterOptions::new("")).unwrap();
        // Two partitions, interleaved page by page, as concurrent workflows deliver them.
        let parts = rows(2, 10);
        for _ in 0..50 {
            for part in &parts {
                writer.write(part).unwrap();
            }
        }
        let summary = writer.close().unwrap();
        let runs: Vec<_> = summary
            .files
            .iter()
            .filter(|f| f.table == Table::Runs)
            .collect();
        assert_eq!(runs.len(), 2);
        for file in runs {
            let reader = ParquetRecordBatchReaderBuilder::try_new(
                File::open(dir.path().join(&file.path)).unwrap(),
            )
            .unwrap();
            assert_eq!(reader.metadata().num_row_groups(), 1, "{}", file.path);
            assert_eq!(reader.metadata().file_metadata().num_rows(), 50);
        }
    }

    #[test]
    fn a_tiny_memory_budget_flushes_row_groups_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> = Arc::new(LocalStorage::open(dir.path()).unwrap());
        let options = WriterOptions {
            memory_budget: 64 * 1024,
            ..WriterOptions::new("")
        };
        let mut writer = DatasetWriter::try_new(storage, options).unwrap();
        for part in rows(20, 50_000) {
            writer.write(&part).unwrap();
            assert!(
                writer.buffered_bytes() <= 64 * 1024,
                "{}",
                writer.buffered_bytes()
            );
        }
        let summary = writer.close().unwrap();
        assert_eq!(read_run_ids(dir.path(), &summary).len(), 20);
        assert_eq!(summary.rows(Table::NodeOutputs), 20);
    }
}
