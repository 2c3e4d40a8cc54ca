//! The dataset's tables: their columns, folder names and partition key, and the rows of one
//! partition as they travel from `flatten` to `dataset`.
//!
//! This is the single place where column names and types are declared (`table/columns.rs`): each
//! table's columns are listed once, and that list yields both the Arrow schema and a builder
//! struct with one typed builder per column that finishes them in the schema's order — so the
//! compiler, not a runtime check, keeps the two in step. `flatten` fills the builders, `dataset`
//! writes the batches. Timestamps are `Timestamp(Microsecond, "UTC")`.

mod columns;

use std::fmt;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use chrono::{DateTime, NaiveDate};

pub use columns::{
    NodeOutputsRows, RunInputsRows, RunsRows, StepsRows, WorkflowsRows, node_outputs, run_inputs,
    runs, steps, workflows,
};

/// Time zone of every timestamp column.
pub const UTC: &str = "UTC";

/// Hive's name for the partition of rows whose key is NULL (runs without a `start_time`).
pub const HIVE_DEFAULT_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// The tables of the dataset, each stored in the folder of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// One row per run.
    Runs,
    /// One row per entry of a run's `all_outputs`.
    NodeOutputs,
    /// One row per entry of a run's `inputs`.
    RunInputs,
    /// One row per executed node of a run (`--with-steps`).
    Steps,
    /// One row per workflow (`--all-workflows`), not partitioned.
    Workflows,
}

impl Table {
    /// The partitioned tables written for every run.
    pub const RUN_TABLES: [Table; 3] = [Table::Runs, Table::NodeOutputs, Table::RunInputs];
    /// Every table.
    pub const ALL: [Table; 5] = [
        Table::Runs,
        Table::NodeOutputs,
        Table::RunInputs,
        Table::Steps,
        Table::Workflows,
    ];

    /// Folder name under the export root.
    pub fn name(self) -> &'static str {
        match self {
            Table::Runs => "runs",
            Table::NodeOutputs => "node_outputs",
            Table::RunInputs => "run_inputs",
            Table::Steps => "steps",
            Table::Workflows => "workflows",
        }
    }

    /// Arrow schema of the table.
    pub fn schema(self) -> SchemaRef {
        match self {
            Table::Runs => runs(),
            Table::NodeOutputs => node_outputs(),
            Table::RunInputs => run_inputs(),
            Table::Steps => steps(),
            Table::Workflows => workflows(),
        }
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The UTC date of a run's `start_time`; `None` for runs without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionDate(pub Option<NaiveDate>);

impl PartitionDate {
    /// The partition of a timestamp in microseconds since the epoch.
    pub fn from_micros(micros: Option<i64>) -> Self {
        Self(
            micros
                .and_then(DateTime::from_timestamp_micros)
                .map(|dt| dt.date_naive()),
        )
    }

    /// The partition a Hive folder name (`date=YYYY-MM-DD`, `date=__HIVE_DEFAULT_PARTITION__`)
    /// names; `None` for any other folder.
    pub fn from_dir_name(name: &str) -> Option<Self> {
        match name.strip_prefix("date=")? {
            HIVE_DEFAULT_PARTITION => Some(Self(None)),
            day => NaiveDate::parse_from_str(day, "%Y-%m-%d")
                .ok()
                .map(|d| Self(Some(d))),
        }
    }

    /// The Hive folder name: `date=YYYY-MM-DD` or `date=__HIVE_DEFAULT_PARTITION__`.
    pub fn dir_name(self) -> String {
        match self.0 {
            Some(day) => format!("date={}", day.format("%Y-%m-%d")),
            None => format!("date={HIVE_DEFAULT_PARTITION}"),
        }
    }
}

/// The `runs` column that marks a stored run the API no longer has: when a `--full` export
/// found it gone (NULL for runs that exist upstream).
pub const DELETED_UPSTREAM_AT: &str = "deleted_upstream_at";

/// The `node_outputs` column with the bytes of each stored `value` (files written before it
/// existed get it measured when a commit rewrites them).
pub const VALUE_BYTES: &str = "value_bytes";

/// The rows of one partition (one UTC start date) of one page, one batch per table.
#[derive(Debug, Clone)]
pub struct PartitionRows {
    /// The partition these rows belong to.
    pub date: PartitionDate,
    /// Rows of the `runs` table.
    pub runs: RecordBatch,
    /// Rows of the `node_outputs` table.
    pub node_outputs: RecordBatch,
    /// Rows of the `run_inputs` table.
    pub run_inputs: RecordBatch,
}
