//! Stored: what a dataset's `runs` table holds, per workflow, read with the Arrow Parquet
//! reader (only the compared columns). A dataset on object storage is read from a download of
//! its `runs` table into a temporary folder; nothing is ever written into the dataset.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::TimestampMicrosecondType;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::VerifyError;
use super::compare::{RunFacts, StoredRun};
use crate::dataset::{self, DatasetError, Location, ObjectOptions, ObjectStorage, Table};
use crate::table::DELETED_UPSTREAM_AT;

/// Stored runs by workflow, then by run id.
pub type Stored = HashMap<String, HashMap<String, StoredRun>>;

/// Reads the runs of the workflows `wanted` accepts from the dataset at `out` (a folder or an
/// object store URL).
pub fn read(out: &Path, wanted: &dyn Fn(&str) -> bool) -> Result<Stored, VerifyError> {
    match Location::parse(out)? {
        Location::Local(root) => {
            if !root.is_dir() {
                return Err(VerifyError::NoDataset {
                    shown: root.display().to_string(),
                });
            }
            read_folder(&root, wanted)
        }
        Location::Object(url) => {
            let storage = ObjectStorage::open(&url, ObjectOptions::from_env()?)?;
            let dir = tempfile::tempdir().map_err(|source| {
                DatasetError::io(
                    "create a temporary folder in",
                    &std::env::temp_dir(),
                    source,
                )
            })?;
            dataset::download_tables(&storage, &[Table::Runs.name()], dir.path())?;
            read_folder(dir.path(), wanted)
        }
    }
}

/// Reads the `runs` table below the local dataset folder `root`.
fn read_folder(root: &Path, wanted: &dyn Fn(&str) -> bool) -> Result<Stored, VerifyError> {
    let mut stored = Stored::new();
    // A Delta dataset's `runs` is what its snapshot holds (nothing before its first commit).
    let files = match dataset::delta::is_local_delta(root) {
        true => (dataset::delta::local_tables(root)?.remove(&Table::Runs)).unwrap_or_default(),
        false => parquet_files(&root.join(Table::Runs.name()))?,
    };
    for path in files {
        read_file(&path, wanted, &mut stored)?;
    }
    Ok(stored)
}

/// The committed Parquet files below `dir` (hidden temp files are not).
fn parquet_files(dir: &Path) -> Result<Vec<PathBuf>, DatasetError> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(DatasetError::io("list", &d, source)),
        };
        for entry in entries {
            let entry = entry.map_err(|source| DatasetError::io("list", &d, source))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if name.starts_with('.') {
                continue;
            }
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
            } else if name.ends_with(".parquet") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

fn read_file(
    path: &Path,
    wanted: &dyn Fn(&str) -> bool,
    stored: &mut Stored,
) -> Result<(), VerifyError> {
    let shown = path.display().to_string();
    let parquet_err = |source: parquet::errors::ParquetError| DatasetError::Parquet {
        path: shown.clone(),
        source,
    };
    let file = File::open(path).map_err(|source| DatasetError::io("open", path, source))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet_err)?;
    let columns = [
        "workflow_id",
        "run_id",
        "status",
        "end_time",
        DELETED_UPSTREAM_AT,
    ];
    let mask = ProjectionMask::columns(builder.parquet_schema(), columns);
    let reader = builder.with_projection(mask).build().map_err(parquet_err)?;
    for batch in reader {
        let batch = batch.map_err(|e| parquet_err(e.into()))?;
        add_batch(&batch, &shown, wanted, stored)?;
    }
    Ok(())
}

fn add_batch(
    batch: &RecordBatch,
    path: &str,
    wanted: &dyn Fn(&str) -> bool,
    stored: &mut Stored,
) -> Result<(), VerifyError> {
    let missing = |name: &str| DatasetError::Parquet {
        path: path.to_owned(),
        source: parquet::errors::ParquetError::General(format!(
            "column `{name}` is missing or of another type"
        )),
    };
    let text = |name: &'static str| {
        batch
            .column_by_name(name)
            .and_then(|c| c.as_string_opt::<i32>())
            .ok_or_else(|| missing(name))
    };
    let (workflow, run, status) = (text("workflow_id")?, text("run_id")?, text("status")?);
    let end = batch
        .column_by_name("end_time")
        .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
        .ok_or_else(|| missing("end_time"))?;
    // Files written before the column existed hold no marks.
    let deleted = batch
        .column_by_name(DELETED_UPSTREAM_AT)
        .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>());
    for i in 0..batch.num_rows() {
        if workflow.is_null(i) || run.is_null(i) || !wanted(workflow.value(i)) {
            continue;
        }
        let facts = RunFacts {
            status: status.is_valid(i).then(|| status.value(i).to_owned()),
            end_time: end.is_valid(i).then(|| end.value(i)),
        };
        let marked_deleted = deleted.is_some_and(|d| d.is_valid(i));
        stored
            .entry(workflow.value(i).to_owned())
            .or_default()
            .entry(run.value(i).to_owned())
            .and_modify(|s| s.copies += 1)
            .or_insert(StoredRun {
                facts,
                copies: 1,
                marked_deleted,
            });
    }
    Ok(())
}
