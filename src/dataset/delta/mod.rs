//! Delta: the dataset's tables as Delta Lake tables (`--table-format delta`), read and committed
//! through the Delta kernel (`delta_kernel`), never by a log writer of our own.
//!
//! Each table folder (`runs`, `node_outputs`, …) holds a `_delta_log` and data files in the same
//! `date=…` folders as the Hive layout; the partition column `date` lives in the log, not in the
//! files. Data files are immutable and named by the export that wrote them
//! (`part-{export id}-{n}.parquet`, a shard's ids ending in its tag), so a commit adds files and
//! removes the ones it rewrote, and readers see either version, whole. This module owns the
//! engine, the tables' schemas and what a snapshot holds; `commit` plans an export's adds and
//! removes per table, `txn` commits them (one Delta commit per table), `maintain` writes
//! checkpoints, vacuums and compacts.

mod commit;
mod maintain;
mod txn;

use std::collections::HashMap;
use std::sync::Arc;

use delta_kernel::engine::arrow_conversion::TryFromArrow;
use delta_kernel::schema::{DataType, SchemaRef, StructField, StructType};
use delta_kernel::snapshot::{Snapshot, SnapshotRef};
use delta_kernel_default_engine::DefaultEngine;
use delta_kernel_default_engine::DefaultEngineBuilder;
use delta_kernel_default_engine::executor::tokio::TokioMultiThreadExecutor;
use object_store::ObjectStore;
use url::Url;

use super::DatasetError;
use super::storage::Storage;
use crate::table::{PartitionDate, Table};

pub use commit::{DeltaCommit, commit, commit_snapshot};
pub use maintain::{MaintainOptions, TableMaintenance, maintain};
pub use txn::TxnId;

/// The folder of a table's Delta log.
pub const DELTA_LOG: &str = "_delta_log";
/// What every commit names as its writer (`engineInfo`).
pub const ENGINE_INFO: &str = concat!("orchestra-export/", env!("CARGO_PKG_VERSION"));
/// An export writes a checkpoint after every this many commits of a table (Delta's own default
/// `delta.checkpointInterval`, written into each table's properties so other writers agree).
pub const CHECKPOINT_INTERVAL: u64 = 10;
/// The partition column of the partitioned tables.
const PARTITION_COLUMN: &str = "date";
/// Worker threads of the kernel's runtime (log and checkpoint reads and writes).
const ENGINE_THREADS: usize = 2;

/// How the tables are stored: plain Hive-partitioned Parquet, or Delta Lake tables.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TableFormat {
    /// `{table}/date=…/part-0.parquet`, replaced partition by partition.
    #[default]
    Hive,
    /// A Delta table per folder, one commit per table per export.
    Delta,
}

impl TableFormat {
    /// The names the config file and `--table-format` accept.
    pub const NAMES: [&str; 2] = ["hive", "delta"];

    /// Parses a name of [`TableFormat::NAMES`].
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "hive" => Some(Self::Hive),
            "delta" => Some(Self::Delta),
            _ => None,
        }
    }

    /// The name, as the config file spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Hive => "hive",
            Self::Delta => "delta",
        }
    }
}

/// The file at the root of a Delta dataset that says so, written before its first table: a first
/// export killed before any table committed leaves data files without a log, which are not Hive
/// partitions.
pub const FORMAT_MARKER: &str = "_delta";

/// Marks the dataset in `storage` as a Delta dataset (once; of the shards, shard 0 only).
pub fn mark(storage: &dyn Storage) -> Result<(), DatasetError> {
    let marked = || -> Result<bool, DatasetError> {
        Ok(storage.list("")?.iter().any(|n| n == FORMAT_MARKER))
    };
    if marked()? {
        return Ok(());
    }
    match super::write_jsonl(
        storage,
        FORMAT_MARKER,
        [r#"{"table_format":"delta"}"#.to_owned()],
    ) {
        // Another shard, starting at the same moment, wrote it first.
        Err(_) if marked()? => Ok(()),
        Err(e) => Err(e),
        Ok(_) => Ok(()),
    }
}

/// The format the tables of a dataset are in, judged from what they hold: the marker or a Delta
/// log in any table folder makes it a Delta dataset; Parquet partitions without either, a Hive
/// one; `None` for a dataset without tables yet.
pub fn detect(storage: &dyn Storage) -> Result<Option<TableFormat>, DatasetError> {
    if storage.list("")?.iter().any(|n| n == FORMAT_MARKER) {
        return Ok(Some(TableFormat::Delta));
    }
    let mut found = None;
    for table in Table::ALL {
        if has_log(storage, table)? {
            return Ok(Some(TableFormat::Delta));
        }
        let dirs = storage.list_dirs(table.name())?;
        if dirs.iter().any(|d| d.starts_with("date="))
            || storage
                .list(table.name())?
                .iter()
                .any(|f| f.ends_with(".parquet"))
        {
            found = Some(TableFormat::Hive);
        }
    }
    Ok(found)
}

/// Whether `table` has a Delta log with a commit or a checkpoint.
pub fn has_log(storage: &dyn Storage, table: Table) -> Result<bool, DatasetError> {
    let log = format!("{}/{DELTA_LOG}", table.name());
    Ok(storage
        .list(&log)?
        .iter()
        .any(|n| n.ends_with(".json") || n.ends_with(".parquet")))
}

/// The kernel engine over the dataset's object store, and the dataset's root URL.
pub struct DeltaTables {
    engine: DefaultEngine<TokioMultiThreadExecutor>,
    store: Arc<dyn ObjectStore>,
    root: Url,
    shown: String,
}

/// A data file of a table's current snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveFile {
    /// Path from the dataset root (`runs/date=…/part-….parquet`).
    pub path: String,
    /// Its partition (`None` for the unpartitioned `workflows`).
    pub date: Option<PartitionDate>,
    /// Size in bytes.
    pub size: u64,
}

impl DeltaTables {
    /// The Delta tables of the dataset in `storage`.
    pub fn open(storage: &dyn Storage) -> Result<Self, DatasetError> {
        let (store, root) = storage.delta_store()?;
        let shown = storage.display("");
        let executor = TokioMultiThreadExecutor::new_owned_runtime(Some(ENGINE_THREADS), None)
            .map_err(|source| DatasetError::Delta {
                table: shown.clone(),
                action: "start the Delta engine for",
                source: Box::new(source),
            })?;
        let engine = DefaultEngineBuilder::new(store.clone())
            .with_task_executor(Arc::new(executor))
            .build();
        Ok(Self {
            engine,
            store,
            root,
            shown,
        })
    }

    /// The URL of `table`'s root (ending in `/`).
    fn url(&self, table: Table) -> Url {
        self.root
            .join(&format!("{}/", table.name()))
            .expect("a table name is a valid relative URL")
    }

    /// `table` as shown in messages.
    fn shown(&self, table: Table) -> String {
        format!("{}/{}", self.shown.trim_end_matches('/'), table.name())
    }

    /// An error of the kernel while doing `action` on `table`.
    fn error(
        &self,
        table: Table,
        action: &'static str,
    ) -> impl Fn(delta_kernel::KernelError) -> DatasetError {
        let shown = self.shown(table);
        move |source| DatasetError::Delta {
            table: shown.clone(),
            action,
            source: Box::new(source),
        }
    }

    /// The current snapshot of `table`; `None` while it has no log (`storage` lists it).
    pub fn snapshot(
        &self,
        storage: &dyn Storage,
        table: Table,
    ) -> Result<Option<SnapshotRef>, DatasetError> {
        if !has_log(storage, table)? {
            return Ok(None);
        }
        Snapshot::builder_for(self.url(table).as_str())
            .build(&self.engine)
            .map(Some)
            .map_err(self.error(table, "read the log of"))
    }

    /// The snapshot of `table` at `version`.
    fn snapshot_at(&self, table: Table, version: u64) -> Result<SnapshotRef, DatasetError> {
        Snapshot::builder_for(self.url(table).as_str())
            .at_version(version)
            .build(&self.engine)
            .map_err(self.error(table, "read an older version of"))
    }

    /// The data files of `snapshot` (of `table`).
    pub fn active_files(
        &self,
        table: Table,
        snapshot: &SnapshotRef,
    ) -> Result<Vec<ActiveFile>, DatasetError> {
        let err = self.error(table, "list the files of");
        let scan = snapshot.clone().scan_builder().build().map_err(&err)?;
        let mut files = Vec::new();
        for metadata in scan.scan_metadata(&self.engine).map_err(&err)? {
            let metadata = metadata.map_err(&err)?;
            files = metadata
                .visit_scan_files(files, |files: &mut Vec<ActiveFile>, file| {
                    // A null partition value is left out of the map.
                    let day = file.partition_values.get(PARTITION_COLUMN);
                    files.push(ActiveFile {
                        path: file.path,
                        date: Some(day.map_or(PartitionDate(None), |day| {
                            PartitionDate::from_dir_name(&format!("date={day}"))
                                .unwrap_or(PartitionDate(None))
                        })),
                        size: u64::try_from(file.size).unwrap_or(0),
                    });
                })
                .map_err(&err)?;
        }
        for file in &mut files {
            file.path = format!("{}/{}", table.name(), decode(&file.path));
            file.date = file.date.filter(|_| partitioned(table));
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }
}

/// Runs `f` on a thread of its own, outside any async runtime: the Delta kernel blocks on a
/// runtime it owns, which may be neither started nor dropped inside another.
pub fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| match scope.spawn(f).join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

/// A path of the Delta log (a URI reference) as a storage path.
fn decode(path: &str) -> String {
    percent_encoding::percent_decode_str(path)
        .decode_utf8_lossy()
        .into_owned()
}

/// Whether `table` is partitioned by `date` (every table but `workflows`).
fn partitioned(table: Table) -> bool {
    table != Table::Workflows
}

/// The Delta schema of `table`: its columns, then `date` for the partitioned ones.
fn schema(table: Table) -> Result<SchemaRef, delta_kernel::KernelError> {
    let columns = StructType::try_from_arrow(table.schema().as_ref())?;
    let mut fields: Vec<StructField> = columns.fields().cloned().collect();
    if partitioned(table) {
        fields.push(StructField::nullable(PARTITION_COLUMN, DataType::DATE));
    }
    Ok(Arc::new(StructType::try_new(fields)?))
}

/// The partition values of a file of `date` (`None`: the unpartitioned `workflows`), as the
/// kernel binds them.
fn partition_values(
    date: Option<PartitionDate>,
) -> HashMap<String, delta_kernel::expressions::Scalar> {
    use delta_kernel::expressions::Scalar;
    let Some(date) = date else {
        return HashMap::new();
    };
    let value = match date.0 {
        Some(day) => {
            let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("a valid date");
            let days = i32::try_from((day - epoch).num_days()).unwrap_or(i32::MAX);
            Scalar::Date(days)
        }
        None => Scalar::Null(DataType::DATE),
    };
    HashMap::from([(PARTITION_COLUMN.to_owned(), value)])
}

/// Whether the local dataset folder `root` is a Delta dataset (its marker, or a table's log).
pub fn is_local_delta(root: &std::path::Path) -> bool {
    root.join(FORMAT_MARKER).is_file()
        || Table::ALL
            .iter()
            .any(|t| root.join(t.name()).join(DELTA_LOG).is_dir())
}

/// The data files of every table of the local Delta dataset folder `root` (paths joined to it)
/// that its current snapshot holds, for readers of a local copy (`report`, `verify`). A table
/// without a log has none: files there are a killed export's, never committed.
pub fn local_tables(
    root: &std::path::Path,
) -> Result<HashMap<Table, Vec<std::path::PathBuf>>, DatasetError> {
    off_runtime(|| {
        let storage = super::LocalStorage::open(root)?;
        let tables = DeltaTables::open(&storage)?;
        let mut found = HashMap::new();
        for table in Table::ALL {
            let files = match tables.snapshot(&storage, table)? {
                Some(snapshot) => tables.active_files(table, &snapshot)?,
                None => Vec::new(),
            };
            found.insert(
                table,
                files.into_iter().map(|f| root.join(f.path)).collect(),
            );
        }
        Ok(found)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_formats_parse_by_name_and_round_trip() {
        for name in TableFormat::NAMES {
            assert_eq!(TableFormat::parse(name).map(TableFormat::name), Some(name));
        }
        assert_eq!(TableFormat::parse("Delta"), None);
        assert_eq!(TableFormat::parse("iceberg"), None);
        assert_eq!(TableFormat::default(), TableFormat::Hive);
    }

    #[test]
    fn partition_values_are_days_since_the_epoch_or_null() {
        use delta_kernel::expressions::Scalar;
        let day = |s: &str| {
            PartitionDate(Some(
                chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap(),
            ))
        };
        let cases = [
            (Some(day("1970-01-01")), Some(Scalar::Date(0))),
            (Some(day("1970-01-02")), Some(Scalar::Date(1))),
            (Some(day("1969-12-31")), Some(Scalar::Date(-1))),
            (Some(day("2026-12-02")), Some(Scalar::Date(20_789))),
            (
                Some(PartitionDate(None)),
                Some(Scalar::Null(DataType::DATE)),
            ),
            (None, None),
        ];
        for (date, want) in cases {
            let values = partition_values(date);
            assert_eq!(values.get(PARTITION_COLUMN).cloned(), want, "{date:?}");
            assert_eq!(values.len(), usize::from(want.is_some()));
        }
    }

    #[test]
    fn every_table_but_workflows_gets_the_date_partition_column() {
        for table in Table::ALL {
            let schema = schema(table).unwrap();
            let last = schema.fields().last().unwrap();
            assert_eq!(
                last.name() == PARTITION_COLUMN,
                table != Table::Workflows,
                "{table}"
            );
            assert_eq!(
                schema.fields().count(),
                table.schema().fields().len() + usize::from(partitioned(table))
            );
        }
    }

    /// A commit retried after its write landed (a lost answer, on the snapshot from before it) is
    /// recognised by its application transaction and not applied again; a rival export of the
    /// same layout committing the same sequence number (one that lost its lock) stops; the next
    /// export's commit lands.
    #[test]
    fn a_retried_commit_is_not_applied_twice_and_a_rival_with_its_sequence_stops() {
        use commit::{Names, Plan, write_file};
        let dir = tempfile::tempdir().unwrap();
        let storage = crate::dataset::LocalStorage::open(dir.path()).unwrap();
        let tables = DeltaTables::open(&storage).unwrap();
        let body = br#"[{"id": "wf-1", "name": "one"}, {"id": "wf-2", "name": "two"}]"#;
        let policy = crate::privacy::Policy::none();
        let list = crate::flatten::flatten_workflows(body, 0, policy).unwrap();
        let table = Table::Workflows;
        let plan_of = |id: &str| {
            let path = Names::new(id).next(table, None);
            let batch = std::iter::once(Ok(list.batch.clone()));
            let (size, rows) = write_file(&storage, table, &path, batch).unwrap();
            let mut plan = Plan::default();
            plan.added(&path, None, size, rows);
            plan
        };
        let layout = crate::dataset::Layout::Unsharded;
        let first = TxnId::next(&tables, &storage, layout).unwrap();
        assert_eq!(first.seq, 1);
        let plan = plan_of("a");
        let commit = |snapshot, plan: &Plan, txn: &TxnId| {
            txn::commit_plan(&tables, &storage, table, snapshot, plan, Some(txn))
        };
        assert_eq!(commit(None, &plan, &first).unwrap(), Some(0));
        assert_eq!(commit(None, &plan, &first).unwrap(), Some(0));
        let current = || tables.snapshot(&storage, table).unwrap().unwrap();
        assert_eq!(current().version(), 0);

        let rival = commit(Some(current()), &plan_of("r"), &first).unwrap_err();
        assert!(
            rival
                .to_string()
                .contains("another export of `orchestra-export` committed sequence 1"),
            "{rival}"
        );
        assert_eq!(current().version(), 0);

        let next = TxnId::next(&tables, &storage, layout).unwrap();
        assert_eq!(next.seq, 2);
        let mut replace = plan_of("b");
        replace.removes.insert(plan.adds[0].path.clone());
        assert_eq!(commit(Some(current()), &replace, &next).unwrap(), Some(1));
        let files = tables.active_files(table, &current()).unwrap();
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["workflows/part-b-00000.parquet"]);
        // A shard counts its own transactions.
        let shard = crate::dataset::Layout::Sharded(crate::dataset::Shard::new(1, 4).unwrap());
        let theirs = TxnId::next(&tables, &storage, shard).unwrap();
        let theirs = (theirs.app_id.as_str(), theirs.seq);
        assert_eq!(theirs, ("orchestra-export/shard-01-of-04", 1));
    }

    #[test]
    fn log_paths_are_decoded_to_storage_paths() {
        assert_eq!(
            decode("date=2026-01-02/part-a-00001.parquet"),
            "date=2026-01-02/part-a-00001.parquet"
        );
        assert_eq!(
            decode("date=__HIVE_DEFAULT_PARTITION__/x%20y.parquet"),
            "date=__HIVE_DEFAULT_PARTITION__/x y.parquet"
        );
    }
}
