//! The dataset's tables: their Arrow schemas, folder names and partition key.
//!
//! This is the single place where column names and types are declared; `flatten` fills them and
//! `dataset` writes them. Timestamps are `Timestamp(Microsecond, "UTC")`.

use std::fmt;
use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, NaiveDate};

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

fn timestamp(name: &str, nullable: bool) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
        nullable,
    )
}

fn text(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

static RUNS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        text("workflow_id", false),
        text("run_id", false),
        text("status", true),
        timestamp("start_time", true),
        timestamp("end_time", true),
        Field::new("elapsed_time", DataType::Int64, true),
        Field::new("duration_ms", DataType::Int64, true),
        text("error", true),
        text("outputs", true),
        Field::new("node_count", DataType::Int32, false),
        text("inputs", true),
        timestamp("extracted_at", false),
        timestamp(DELETED_UPSTREAM_AT, true),
    ]))
});

/// The `runs` column that marks a stored run the API no longer has: when a `--full` export
/// found it gone (NULL for runs that exist upstream).
pub const DELETED_UPSTREAM_AT: &str = "deleted_upstream_at";

static NODE_OUTPUTS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        text("workflow_id", false),
        text("run_id", false),
        timestamp("start_time", true),
        text("node", false),
        Field::new("node_index", DataType::Int32, false),
        text("value_type", false),
        text("value", true),
    ]))
});

static RUN_INPUTS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        text("workflow_id", false),
        text("run_id", false),
        timestamp("start_time", true),
        text("name", false),
        text("value_type", false),
        text("value", true),
    ]))
});

static STEPS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        text("workflow_id", false),
        text("run_id", false),
        text("step_id", true),
        text("node_id", true),
        text("status", true),
        timestamp("start_time", true),
        timestamp("end_time", true),
        Field::new("elapsed_time", DataType::Int64, true),
        Field::new("duration_ms", DataType::Int64, true),
        text("error", true),
        text("outputs", true),
        text("inputs", true),
        Field::new("tokens", DataType::Int64, true),
    ]))
});

static WORKFLOWS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        text("workflow_id", false),
        text("name", true),
        text("description", true),
        text("status", true),
        text("version", true),
        timestamp("created_at", true),
        timestamp("updated_at", true),
        timestamp("extracted_at", false),
    ]))
});

/// Schema of `runs`.
pub fn runs() -> SchemaRef {
    RUNS.clone()
}

/// Schema of `node_outputs`.
pub fn node_outputs() -> SchemaRef {
    NODE_OUTPUTS.clone()
}

/// Schema of `run_inputs`.
pub fn run_inputs() -> SchemaRef {
    RUN_INPUTS.clone()
}

/// Schema of `steps`.
pub fn steps() -> SchemaRef {
    STEPS.clone()
}

/// Schema of `workflows`.
pub fn workflows() -> SchemaRef {
    WORKFLOWS.clone()
}
