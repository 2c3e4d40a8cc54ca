//! Which re-fetched runs changed: an order-independent digest of each run's rows in a table
//! (every column but `extracted_at`, which every fetch sets anew), taken of the stored rows a
//! commit replaces and of the staged rows that replace them. A run whose digests agree was only
//! re-read; the summary counts it as unchanged, not updated.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, SortField};

/// Digests of runs' rows, by (`workflow_id`, `run_id`): the wrapping sum of the rows' hashes
/// (order does not matter) and the row count.
pub(super) struct RunDigests {
    converter: Option<RowConverter>,
    /// Column indexes hashed (all but `extracted_at`).
    columns: Vec<usize>,
    hasher: RandomState,
    runs: HashMap<(String, String), (u64, usize)>,
}

impl RunDigests {
    /// Digests for rows of `schema`; `hasher` must be shared by the two sides compared.
    pub(super) fn new(schema: &SchemaRef, hasher: RandomState) -> Self {
        let columns: Vec<usize> = (0..schema.fields().len())
            .filter(|i| schema.field(*i).name() != "extracted_at")
            .collect();
        let fields = columns
            .iter()
            .map(|i| SortField::new(schema.field(*i).data_type().clone()))
            .collect();
        Self {
            // Every type of our tables has a row format; without one, nothing is called unchanged.
            converter: RowConverter::new(fields).ok(),
            columns,
            hasher,
            runs: HashMap::new(),
        }
    }

    /// Adds the rows of `batch` for which `pick(workflow_id, run_id)` holds.
    pub(super) fn add(
        &mut self,
        batch: &RecordBatch,
        workflow: &arrow::array::StringArray,
        run: &arrow::array::StringArray,
        pick: impl Fn(&str, &str) -> bool,
    ) {
        let Some(converter) = &self.converter else {
            return;
        };
        let picked: Vec<usize> = (0..batch.num_rows())
            .filter(|i| pick(workflow.value(*i), run.value(*i)))
            .collect();
        if picked.is_empty() {
            return;
        }
        let columns: Vec<_> = self
            .columns
            .iter()
            .map(|i| batch.column(*i).clone())
            .collect();
        let Ok(rows) = converter.convert_columns(&columns) else {
            self.converter = None;
            return;
        };
        for i in picked {
            let hash = self.hasher.hash_one(rows.row(i).as_ref());
            let entry = self
                .runs
                .entry((workflow.value(i).to_owned(), run.value(i).to_owned()))
                .or_insert((0, 0));
            entry.0 = entry.0.wrapping_add(hash);
            entry.1 += 1;
        }
    }

    /// Rows here (the staged side) of runs whose rows in `stored` are the same.
    pub(super) fn unchanged_rows(&self, stored: &RunDigests) -> usize {
        if self.converter.is_none() || stored.converter.is_none() {
            return 0;
        }
        self.runs
            .iter()
            .filter(|(key, digest)| stored.runs.get(*key) == Some(digest))
            .map(|(_, (_, rows))| rows)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::Table;
    use arrow::array::{AsArray, StringArray};

    fn batch(rows: &[(&str, &str, &str, i64)]) -> RecordBatch {
        let mut b = crate::table::RunInputsRows::default();
        for (run, name, value, _) in rows {
            b.workflow_id.append_value("wf");
            b.run_id.append_value(run);
            b.start_time.append_null();
            b.name.append_value(name);
            b.value_type.append_value("string");
            b.value.append_value(value);
        }
        b.finish()
    }

    fn digests(rows: &[(&str, &str, &str, i64)], hasher: &RandomState) -> RunDigests {
        let batch = batch(rows);
        let mut d = RunDigests::new(&Table::RunInputs.schema(), hasher.clone());
        let wf: &StringArray = batch.column(0).as_string();
        let run: &StringArray = batch.column(1).as_string();
        d.add(&batch, wf, run, |_, _| true);
        d
    }

    #[test]
    fn runs_with_the_same_rows_in_any_order_are_unchanged_and_any_difference_is_not() {
        let h = RandomState::new();
        let stored = digests(
            &[
                ("r1", "a", "x", 0),
                ("r1", "b", "y", 0),
                ("r2", "a", "z", 0),
            ],
            &h,
        );
        let table = [
            // reordered rows of r1, r2 unchanged: all 3 rows unchanged
            (
                vec![
                    ("r1", "b", "y", 0),
                    ("r1", "a", "x", 0),
                    ("r2", "a", "z", 0),
                ],
                3,
            ),
            // r2's value changed
            (
                vec![
                    ("r1", "a", "x", 0),
                    ("r1", "b", "y", 0),
                    ("r2", "a", "Z", 0),
                ],
                2,
            ),
            // r1 lost a row
            (vec![("r1", "a", "x", 0), ("r2", "a", "z", 0)], 1),
            // a new run is not unchanged
            (vec![("r3", "a", "x", 0)], 0),
        ];
        for (rows, want) in table {
            assert_eq!(digests(&rows, &h).unchanged_rows(&stored), want, "{rows:?}");
        }
    }
}
