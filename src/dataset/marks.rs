//! Marks: stored runs that the API no longer has, found by a `--full` export, get the export's
//! start in `deleted_upstream_at` (their rows are kept, never dropped); and batches read from
//! files of an older schema are brought to the current one (missing nullable columns as NULL,
//! `value_bytes` measured).
//!
//! Pure functions over batches: which partitions to visit and when to write stays in `commit`.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, RecordBatch, StringArray, TimestampMicrosecondArray, new_null_array,
};
use arrow::datatypes::{SchemaRef, TimestampMicrosecondType};

use super::DatasetError;
use crate::flatten::{KeySet, id_key};
use crate::table::{DELETED_UPSTREAM_AT, UTC, VALUE_BYTES};

/// The runs of workflows paged to their end by a `--full` export: any stored run of theirs not
/// among them no longer exists upstream.
#[derive(Debug, Default)]
pub struct DeletionMarks {
    /// When the export that found them gone started (µs since the epoch, UTC).
    pub at_us: i64,
    /// Per workflow paged to its end: fingerprints ([`id_key`]) of every run the API has now.
    pub upstream: HashMap<String, KeySet>,
}

impl DeletionMarks {
    /// Whether there is nothing to mark (not a `--full` export, or no workflow paged to its end).
    pub fn is_empty(&self) -> bool {
        self.upstream.is_empty()
    }

    /// Whether the stored run (`workflow_id`, `run_id`) is gone upstream.
    fn gone(&self, workflow_id: &str, run_id: &str) -> bool {
        self.upstream
            .get(workflow_id)
            .is_some_and(|runs| !runs.contains(&id_key(run_id)))
    }
}

/// `batch` (read from `path`) with the columns of `schema`, in its order: a nullable column
/// missing from an older file is added as NULL, except `node_outputs.value_bytes`, which is
/// measured from `value`. Says whether it had to change anything.
pub fn conform(
    batch: RecordBatch,
    schema: &SchemaRef,
    path: &str,
) -> Result<(RecordBatch, bool), DatasetError> {
    if batch.schema().fields() == schema.fields() {
        return Ok((batch, false));
    }
    let parquet_err = |message: String| DatasetError::Parquet {
        path: path.to_owned(),
        source: parquet::errors::ParquetError::General(message),
    };
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|field| match batch.column_by_name(field.name()) {
            Some(column) => Ok(column.clone()),
            None if field.name() == VALUE_BYTES => measured(&batch)
                .ok_or_else(|| parquet_err(format!("column `{VALUE_BYTES}` is missing"))),
            None if field.is_nullable() => Ok(new_null_array(field.data_type(), batch.num_rows())),
            None => Err(parquet_err(format!("column `{}` is missing", field.name()))),
        })
        .collect::<Result<_, _>>()?;
    let batch =
        RecordBatch::try_new(schema.clone(), columns).map_err(|e| parquet_err(e.to_string()))?;
    Ok((batch, true))
}

/// Bytes of each `value` of a `node_outputs` batch (NULL with it), as `value_bytes` holds them.
fn measured(batch: &RecordBatch) -> Option<ArrayRef> {
    let value = batch.column_by_name("value")?;
    let lengths = arrow::compute::kernels::length::length(value).ok()?;
    arrow::compute::cast(&lengths, &arrow::datatypes::DataType::Int64).ok()
}

/// The `workflow_id` and `run_id` columns of a `runs` batch, when it has them as strings.
fn run_keys(batch: &RecordBatch) -> Option<(&StringArray, &StringArray)> {
    let column = |name| {
        batch
            .column_by_name(name)
            .and_then(|c| c.as_string_opt::<i32>())
    };
    Some((column("workflow_id")?, column("run_id")?))
}

/// Whether [`mark_deleted`] would mark any row of `batch` (which needs `workflow_id`, `run_id`
/// and, when the file has it, `deleted_upstream_at`).
pub fn would_mark(batch: &RecordBatch, marks: &DeletionMarks) -> bool {
    let Some((workflow, run)) = run_keys(batch) else {
        return false;
    };
    let marked = batch
        .column_by_name(DELETED_UPSTREAM_AT)
        .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>());
    (0..batch.num_rows()).any(|i| {
        !marked.is_some_and(|m| m.is_valid(i)) && marks.gone(workflow.value(i), run.value(i))
    })
}

/// Sets `deleted_upstream_at` of the rows of a `runs` batch (in the current schema) that
/// `marks` finds gone and that are not marked yet; returns the batch and how many it marked.
pub fn mark_deleted(batch: RecordBatch, marks: &DeletionMarks) -> (RecordBatch, usize) {
    if marks.is_empty() {
        return (batch, 0);
    }
    let (Some((workflow, run)), Ok(index)) = (
        run_keys(&batch),
        batch.schema().index_of(DELETED_UPSTREAM_AT),
    ) else {
        return (batch, 0);
    };
    let current = batch
        .column(index)
        .as_primitive::<TimestampMicrosecondType>();
    let mut marked = 0;
    let values: TimestampMicrosecondArray = (0..batch.num_rows())
        .map(|i| {
            if current.is_valid(i) {
                return Some(current.value(i));
            }
            let gone = marks.gone(workflow.value(i), run.value(i));
            marked += usize::from(gone);
            gone.then_some(marks.at_us)
        })
        .collect();
    if marked == 0 {
        return (batch, 0);
    }
    let mut columns = batch.columns().to_vec();
    columns[index] = Arc::new(values.with_timezone(UTC));
    let batch = RecordBatch::try_new(batch.schema(), columns).expect("same schema, same lengths");
    (batch, marked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table as schema;
    use arrow::array::StringArray;

    fn runs(ids: &[(&str, &str)], marked: &[Option<i64>]) -> RecordBatch {
        let schema = schema::runs();
        let n = ids.len();
        let columns: Vec<ArrayRef> = schema
            .fields()
            .iter()
            .map(|f| -> ArrayRef {
                match f.name().as_str() {
                    "workflow_id" => {
                        Arc::new(StringArray::from_iter_values(ids.iter().map(|i| i.0)))
                    }
                    "run_id" => Arc::new(StringArray::from_iter_values(ids.iter().map(|i| i.1))),
                    "node_count" => Arc::new(arrow::array::Int32Array::from(vec![0; n])),
                    "extracted_at" => {
                        Arc::new(TimestampMicrosecondArray::from(vec![0; n]).with_timezone(UTC))
                    }
                    DELETED_UPSTREAM_AT => Arc::new(
                        TimestampMicrosecondArray::from(marked.to_vec()).with_timezone(UTC),
                    ),
                    _ => new_null_array(f.data_type(), n),
                }
            })
            .collect();
        RecordBatch::try_new(schema, columns).unwrap()
    }

    fn deleted(batch: &RecordBatch) -> Vec<Option<i64>> {
        batch
            .column_by_name(DELETED_UPSTREAM_AT)
            .unwrap()
            .as_primitive::<TimestampMicrosecondType>()
            .iter()
            .collect()
    }

    #[test]
    fn only_runs_of_fully_paged_workflows_that_are_gone_and_unmarked_are_marked() {
        let marks = DeletionMarks {
            at_us: 500,
            upstream: HashMap::from([("wf".to_owned(), [id_key("live")].into_iter().collect())]),
        };
        let batch = runs(
            &[
                ("wf", "live"),
                ("wf", "gone"),
                ("wf", "gone-before"),
                ("other", "x"),
            ],
            &[None, None, Some(100), None],
        );
        let (batch, marked) = mark_deleted(batch, &marks);
        assert_eq!(marked, 1);
        // A run marked by an earlier export keeps its first mark; other workflows are untouched.
        assert_eq!(deleted(&batch), [None, Some(500), Some(100), None]);
        let (same, none) = mark_deleted(batch.clone(), &DeletionMarks::default());
        assert_eq!((none, deleted(&same)), (0, deleted(&batch)));
    }

    #[test]
    fn batches_of_an_older_schema_get_the_missing_columns_as_null() {
        let batch = runs(&[("wf", "a")], &[None]);
        let old_schema = Arc::new(arrow::datatypes::Schema::new(
            batch
                .schema()
                .fields()
                .iter()
                .filter(|f| f.name() != DELETED_UPSTREAM_AT)
                .cloned()
                .collect::<Vec<_>>(),
        ));
        let old = batch
            .project(&(0..old_schema.fields().len()).collect::<Vec<_>>())
            .unwrap();
        assert_eq!(old.num_columns() + 1, batch.num_columns());
        let (conformed, changed) = conform(old, &schema::runs(), "runs/x.parquet").unwrap();
        assert!(changed);
        assert_eq!(conformed.schema(), schema::runs());
        assert_eq!(deleted(&conformed), [None]);
        // A required column cannot be made up.
        let no_ids = batch.project(&[1]).unwrap();
        let err = conform(no_ids, &schema::runs(), "runs/x.parquet").unwrap_err();
        assert!(
            crate::error_chain(&err).contains("column `workflow_id` is missing"),
            "{err}"
        );
    }
}
