//! Reading a table for the report: its Parquet files (any depth, as Hive readers find them), only
//! the columns asked for, file by file on the rayon pool, each file folded into an accumulator
//! and the accumulators merged. Memory is one batch of a few columns per thread plus what the
//! accumulator keeps. Rows outside the report's scope never reach the accumulator.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, AsArray, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{Field, Int32Type, Int64Type, Schema, SchemaRef, TimestampMicrosecondType};
use chrono::NaiveDate;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rayon::prelude::*;

use super::{ReportError, ReportOptions};
use crate::dataset::delta;
use crate::table::Table;

/// Rows per batch read.
const BATCH_ROWS: usize = 65_536;
/// Microseconds in a day.
const DAY_US: i64 = 86_400_000_000;

/// The Parquet files of every table of a dataset, listed once per report: those of a Delta
/// table's current snapshot, every one (hidden temp files left out) of a Hive table.
pub struct Files(HashMap<&'static str, Vec<PathBuf>>);

impl Files {
    /// Lists the tables of the dataset folder `data`.
    pub fn of(data: &Path) -> Result<Self, ReportError> {
        let mut delta = match delta::is_local_delta(data) {
            true => delta::local_tables(data)?,
            false => HashMap::new(),
        };
        Ok(Self(
            Table::ALL
                .into_iter()
                .map(|t| {
                    let files = delta
                        .remove(&t)
                        .unwrap_or_else(|| hive_files(data, t.name()));
                    (t.name(), files)
                })
                .collect(),
        ))
    }

    /// The files of table `name`, in path order.
    pub fn of_table(&self, name: &str) -> &[PathBuf] {
        self.0.get(name).map_or(&[], Vec::as_slice)
    }

    /// Whether table `name` has a Parquet file.
    pub fn has_table(&self, name: &str) -> bool {
        !self.of_table(name).is_empty()
    }
}

/// Every Parquet file below table `name` of `data`, in path order (hidden temp files left out).
fn hive_files(data: &Path, name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![data.join(name)];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            if path.is_dir() {
                stack.push(path);
            } else if !hidden && path.extension().is_some_and(|e| e == "parquet") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// One batch of a table, its columns by name (`None` for a column the file lacks: it was
/// written before the column existed).
pub struct Batch(RecordBatch);

impl Batch {
    /// Rows in the batch.
    pub fn rows(&self) -> usize {
        self.0.num_rows()
    }

    /// A text column.
    pub fn text(&self, name: &str) -> Option<&StringArray> {
        self.0.column_by_name(name)?.as_string_opt::<i32>()
    }

    /// A 64-bit integer column.
    pub fn int64(&self, name: &str) -> Option<&Int64Array> {
        self.0.column_by_name(name)?.as_primitive_opt::<Int64Type>()
    }

    /// A 32-bit integer column.
    pub fn int32(&self, name: &str) -> Option<&Int32Array> {
        self.0.column_by_name(name)?.as_primitive_opt::<Int32Type>()
    }

    /// A timestamp column (µs).
    pub fn micros(&self, name: &str) -> Option<&TimestampMicrosecondArray> {
        self.0
            .column_by_name(name)?
            .as_primitive_opt::<TimestampMicrosecondType>()
    }
}

/// A value of a column, `None` when the column is missing or the value NULL.
pub fn at<A: Array>(column: Option<&A>, i: usize, get: impl Fn(&A, usize) -> i64) -> Option<i64> {
    column.filter(|c| c.is_valid(i)).map(|c| get(c, i))
}

/// The text at `i`, `None` when missing or NULL.
pub fn text_at(column: Option<&StringArray>, i: usize) -> Option<&str> {
    column.filter(|c| c.is_valid(i)).map(|c| c.value(i))
}

/// The smaller of two optional values (`None` only when both are).
pub fn min_of<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The UTC day (days since 1970-01-01) of an instant in µs.
pub fn day_of(us: i64) -> i32 {
    us.div_euclid(DAY_US) as i32
}

/// Which rows the report covers: the UTC days of `start_time` from `since` to `until` and the
/// workflows asked for (rows without a start time only when no day bound is set).
pub struct Scope {
    since: Option<i32>,
    until: Option<i32>,
    workflows: HashSet<String>,
}

impl Scope {
    /// The scope of `options`.
    pub fn of(options: &ReportOptions) -> Self {
        let days = |d: Option<NaiveDate>| {
            d.map(|d| (d - NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days() as i32)
        };
        Self {
            since: days(options.since),
            until: days(options.until),
            workflows: options.workflows.iter().cloned().collect(),
        }
    }

    /// Whether the scope bounds the days (rows need their `start_time` to be judged).
    pub fn by_day(&self) -> bool {
        self.since.is_some() || self.until.is_some()
    }

    /// Whether a row of `workflow` started at `start` (µs) is in scope.
    pub fn covers(&self, workflow: &str, start: Option<i64>) -> bool {
        if !self.workflows.is_empty() && !self.workflows.contains(workflow) {
            return false;
        }
        match (start.map(day_of), self.since, self.until) {
            (_, None, None) => true,
            (None, _, _) => false,
            (Some(day), since, until) => {
                since.is_none_or(|s| day >= s) && until.is_none_or(|u| day <= u)
            }
        }
    }
}

/// Folds every batch of table `name` (the columns `columns` that its files have) into
/// accumulators, one file at a time per thread, and merges them. `instead` names, for a column
/// a file may lack (an older file), the column to read in its place.
pub fn fold<A: Send>(
    data: &Files,
    name: &str,
    columns: &[&str],
    instead: &[(&str, &str)],
    init: impl Fn() -> A + Sync + Send,
    step: impl Fn(&mut A, &Batch) + Sync + Send,
    merge: impl Fn(A, A) -> A + Sync + Send,
) -> Result<A, ReportError> {
    let declared = [
        Table::Runs,
        Table::NodeOutputs,
        Table::RunInputs,
        Table::Steps,
        Table::Workflows,
    ]
    .into_iter()
    .find(|t| t.name() == name)
    .map(|t| t.schema());
    data.of_table(name)
        .par_iter()
        .map(|path| {
            let mut acc = init();
            let columns = Wanted {
                columns,
                instead,
                declared: declared.as_ref(),
            };
            read(path, columns, |batch| step(&mut acc, batch))?;
            Ok(acc)
        })
        .try_reduce(&init, |a, b| Ok(merge(a, b)))
}

/// What [`read`] reads of one file, and the table's declared columns.
struct Wanted<'a> {
    columns: &'a [&'a str],
    instead: &'a [(&'a str, &'a str)],
    declared: Option<&'a SchemaRef>,
}

/// Reads `wanted` of the file at `path`. A column the table declares NOT NULL must be there; a
/// column stored in another type than declared (a file rewritten by another tool: large or view
/// strings, dictionaries, nanoseconds) is cast to the declared type, or the file is refused.
fn read(path: &Path, wanted: Wanted<'_>, mut each: impl FnMut(&Batch)) -> Result<(), ReportError> {
    let Wanted {
        columns,
        instead,
        declared,
    } = wanted;
    let err = |source: parquet::errors::ParquetError| ReportError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(|source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(err)?;
    let schema = builder.schema().clone();
    let replaced = instead
        .iter()
        .filter(|(missing, _)| schema.index_of(missing).is_err())
        .map(|(_, other)| other);
    let roots: Vec<usize> = columns
        .iter()
        .chain(replaced)
        .filter_map(|c| schema.index_of(c).ok())
        .collect();
    let refuse = |message: String| ReportError::Read {
        path: path.to_path_buf(),
        source: parquet::errors::ParquetError::General(message),
    };
    if let Some(declared) = declared {
        let missing = columns.iter().find(|c| {
            schema.index_of(c).is_err()
                && declared.field_with_name(c).is_ok_and(|f| !f.is_nullable())
        });
        if let Some(c) = missing {
            return Err(refuse(format!("column `{c}` is missing")));
        }
    }
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(err)?;
    for batch in reader {
        let batch = batch.map_err(|e| err(e.into()))?;
        each(&Batch(conform(batch, declared).map_err(refuse)?));
    }
    Ok(())
}

/// `batch` with each column in the type the table declares for it.
fn conform(batch: RecordBatch, declared: Option<&SchemaRef>) -> Result<RecordBatch, String> {
    let Some(declared) = declared else {
        return Ok(batch);
    };
    let schema = batch.schema();
    if schema.fields().iter().all(|f| {
        declared
            .field_with_name(f.name())
            .map_or(true, |d| d.data_type() == f.data_type())
    }) {
        return Ok(batch);
    }
    let mut fields = Vec::new();
    let mut arrays = Vec::new();
    for (field, array) in schema.fields().iter().zip(batch.columns()) {
        let array = match declared.field_with_name(field.name()) {
            Ok(want) if want.data_type() != field.data_type() => {
                arrow::compute::cast(array, want.data_type()).map_err(|e| {
                    format!(
                        "column `{}` is {}, not {} as declared: {e}",
                        field.name(),
                        field.data_type(),
                        want.data_type()
                    )
                })?
            }
            _ => array.clone(),
        };
        fields.push(Field::new(field.name(), array.data_type().clone(), true));
        arrays.push(array);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scope_keeps_its_days_and_workflows() {
        let options =
            |since: Option<&str>, until: Option<&str>, workflows: &[&str]| ReportOptions {
                data: PathBuf::new(),
                out: PathBuf::new(),
                since: since.map(|d| d.parse().unwrap()),
                until: until.map(|d| d.parse().unwrap()),
                workflows: workflows.iter().map(|w| (*w).to_owned()).collect(),
                top_n: 20,
                price_per_million_tokens: None,
                source: None,
            };
        let at = |day: &str, hour: i64| {
            let d: NaiveDate = day.parse().unwrap();
            d.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp_micros() + hour * 3_600_000_000
        };
        let all = Scope::of(&options(None, None, &[]));
        assert!(all.covers("a", None) && all.covers("b", Some(at("2026-11-01", 3))));
        let days = Scope::of(&options(Some("2026-11-02"), Some("2026-11-03"), &[]));
        let cases = [
            (at("2026-11-01", 23), false),
            (at("2026-11-02", 0), true),
            (at("2026-11-03", 23), true),
            (at("2026-11-04", 0), false),
        ];
        for (start, want) in cases {
            assert_eq!(days.covers("a", Some(start)), want, "{start}");
        }
        assert!(
            !days.covers("a", None),
            "no start time, outside any day range"
        );
        let one = Scope::of(&options(None, None, &["a"]));
        assert!(one.covers("a", None) && !one.covers("b", None));
        assert_eq!(day_of(-1), -1, "before 1970 rounds down");
    }
}
