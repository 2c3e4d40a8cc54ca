//! The report's tables. Counts, rates and exact quantiles come from one pass over each table
//! (`runs`, `node_outputs`, `steps`) into small per-group cells (`runs.rs`, `nodes.rs`): a
//! group-by with exact quantiles in Polars held every key string and value at once (4.1 GB for
//! `node_stats` over 24M node outputs), the cells hold 8 bytes a value. The error groups, which
//! need regular expressions over the messages of failed and cancelled runs only, are a lazy
//! Polars query on the streaming engine. No statistic reads a text column it only measures
//! (`node_outputs.value_bytes` holds each output's size).

use std::path::Path;

use polars::prelude::*;

use super::nodes::{Deleted, NodeStats, StepStats, deleted_keys};
use super::runs::{Names, RunStats};
use super::scan::{self, Scope};
use super::{ReportError, ReportOptions, polars_err};
use crate::table::{DELETED_UPSTREAM_AT, Table};

pub(super) fn scan(data: &Path, table: &str) -> PolarsResult<LazyFrame> {
    let glob = format!("{}/{table}/**/*.parquet", data.display());
    LazyFrame::scan_parquet(
        PlRefPath::new(glob),
        ScanArgsParquet {
            hive_options: HiveOptions::new_enabled(),
            // The table's current columns, whatever file comes first: partitions written before
            // a column was added lack it (NULL there), later ones have it.
            schema: file_schema(table).map(Arc::new),
            allow_missing_columns: true,
            ..Default::default()
        },
    )
}

/// The columns of one of the dataset's tables (as `table` declares them), in Polars' types;
/// `None` for a folder that is not a table.
fn file_schema(table: &str) -> Option<Schema> {
    use arrow::datatypes::{DataType as Arrow, TimeUnit as ArrowUnit};
    let table = [
        Table::Runs,
        Table::NodeOutputs,
        Table::RunInputs,
        Table::Steps,
        Table::Workflows,
    ]
    .into_iter()
    .find(|t| t.name() == table)?;
    let schema = table.schema();
    let fields = schema.fields().iter().map(|f| {
        let dtype = match f.data_type() {
            Arrow::Utf8 => DataType::String,
            Arrow::Int64 => DataType::Int64,
            Arrow::Int32 => DataType::Int32,
            // Every timestamp column is UTC (`table::UTC`).
            Arrow::Timestamp(ArrowUnit::Microsecond, tz) => DataType::Datetime(
                TimeUnit::Microseconds,
                tz.is_some().then_some(TimeZone::UTC),
            ),
            other => unreachable!("no `{other}` column is declared in `table`"),
        };
        Field::new(f.name().as_str().into(), dtype)
    });
    Some(fields.collect::<Schema>())
}

/// Whether `dir` holds a Parquet file at any depth.
pub(super) fn has_files(dir: &Path) -> bool {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                return true;
            }
        }
    }
    false
}

/// Keeps the rows in scope: the day range (UTC date of `start_time`) and the workflows asked for.
fn in_scope(lf: LazyFrame, options: &ReportOptions) -> LazyFrame {
    let mut lf = lf;
    let day = col("start_time").dt().date();
    if let Some(since) = options.since {
        lf = lf.filter(day.clone().gt_eq(lit(since)));
    }
    if let Some(until) = options.until {
        lf = lf.filter(day.lt_eq(lit(until)));
    }
    if !options.workflows.is_empty() {
        let ids = Series::new("ids".into(), options.workflows.clone());
        lf = lf.filter(col("workflow_id").is_in(lit(ids).implode(true), false));
    }
    lf
}

/// The inputs of every table: the names of the workflows and the runs in scope.
pub(super) struct Sources {
    options: ReportOptions,
    scope: Scope,
    names: Names,
    runs: RunStats,
    deleted: Deleted,
}

impl Sources {
    /// Reads the names and the runs of `options.data`.
    pub(super) fn open(options: &ReportOptions) -> Result<Self, ReportError> {
        let started = std::time::Instant::now();
        let scope = Scope::of(options);
        let names = scan::fold(
            &options.data,
            "workflows",
            &["workflow_id", "name"],
            &[],
            Names::default,
            |names, batch| {
                let (Some(ids), Some(values)) = (batch.text("workflow_id"), batch.text("name"))
                else {
                    return;
                };
                for i in 0..batch.rows() {
                    if let Some(name) = scan::text_at(Some(values), i) {
                        names.insert(ids.value(i).to_owned(), name.to_owned());
                    }
                }
            },
            |mut a, b| {
                a.extend(b);
                a
            },
        )?;
        let runs = RunStats::read(&options.data, &scope, options.top_n)?;
        let deleted = deleted_keys(&runs.deleted);
        let seconds = started.elapsed().as_secs_f64();
        tracing::debug!(target: "report", seconds, "names and runs read");
        Ok(Self {
            options: options.clone(),
            scope,
            names,
            runs,
            deleted,
        })
    }

    /// Every table, in the order they are written.
    pub(super) fn tables(mut self) -> Result<Vec<(&'static str, DataFrame)>, ReportError> {
        let started = std::time::Instant::now();
        let timed = |what: &str| {
            tracing::debug!(target: "report", seconds = started.elapsed().as_secs_f64(), "{what} done");
        };
        let names = &self.names;
        let mut tables = vec![
            (
                "workflow_summary",
                self.runs
                    .summary(names)
                    .inspect(|_| timed("workflow_summary"))
                    .map_err(polars_err("workflow_summary"))?,
            ),
            (
                "daily_trends",
                self.runs
                    .daily()
                    .inspect(|_| timed("daily_trends"))
                    .map_err(polars_err("daily_trends"))?,
            ),
            (
                "error_groups",
                self.error_groups().inspect(|_| timed("error_groups"))?,
            ),
            (
                "node_stats",
                NodeStats::read(&self.options.data, &self.scope, &self.deleted)
                    .inspect(|_| timed("node_outputs"))?
                    .frame(names)
                    .map_err(polars_err("node_stats"))?,
            ),
            (
                "slowest_runs",
                self.runs
                    .slowest(names)
                    .map_err(polars_err("slowest_runs"))?,
            ),
            (
                "regressions",
                self.runs
                    .regressions(names)
                    .inspect(|_| timed("regressions"))
                    .map_err(polars_err("regressions"))?,
            ),
        ];
        if has_files(&self.options.data.join("steps")) {
            let mut steps = StepStats::read(&self.options.data, &self.scope, &self.deleted)
                .inspect(|_| timed("steps"))?;
            tables.push((
                "slowest_nodes",
                steps.slowest(names).map_err(polars_err("slowest_nodes"))?,
            ));
            tables.push((
                "failing_nodes",
                steps.failing(names).map_err(polars_err("failing_nodes"))?,
            ));
            tables.push((
                "token_usage",
                steps.tokens(names).map_err(polars_err("token_usage"))?,
            ));
            tables.push((
                "daily_tokens",
                steps.daily().map_err(polars_err("daily_tokens"))?,
            ));
        }
        Ok(tables)
    }

    /// Errors grouped by status and [`fingerprint`]: how many runs, how many workflows (the
    /// three most affected by name), first and last seen, a sample. A lazy Polars query on the
    /// streaming engine; it reads the messages of failed and cancelled runs only.
    fn error_groups(&self) -> Result<DataFrame, ReportError> {
        let err = polars_err("error_groups");
        let runs = scan(&self.options.data, "runs").map_err(&err)?;
        let per_workflow = in_scope(runs, &self.options)
            .filter(
                col("error")
                    .is_not_null()
                    .and(col(DELETED_UPSTREAM_AT).is_null()),
            )
            .with_column(fingerprint(col("error")).alias("fingerprint"))
            .group_by([col("status"), col("fingerprint"), col("workflow_id")])
            .agg([
                len().cast(DataType::Int64).alias("count"),
                col("start_time").min().alias("first_seen"),
                col("start_time").max().alias("last_seen"),
                // The newest run's, whatever order the files are read in.
                newest_first(col("error")).first().alias("sample_error"),
                newest_first(col("run_id")).first().alias("sample_run_id"),
            ])
            .collect_with_engine(Engine::Streaming)
            .map_err(&err)?
            .unwrap_single();
        let labels: Vec<Option<String>> = match per_workflow.column("workflow_id") {
            Ok(ids) => {
                let ids = ids.str().map_err(&err)?;
                (0..ids.len())
                    .map(|i| {
                        let id = ids.get(i)?;
                        Some(self.names.get(id).cloned().unwrap_or_else(|| id.to_owned()))
                    })
                    .collect()
            }
            Err(_) => Vec::new(),
        };
        // The most affected workflow first, ties by name.
        let by_count = |e: Expr| {
            e.sort_by(
                [col("count"), col("label")],
                SortMultipleOptions::default().with_order_descending_multi([true, false]),
            )
        };
        per_workflow
            .lazy()
            .with_column(lit(Series::new("label".into(), labels)).alias("label"))
            .group_by([col("status"), col("fingerprint")])
            .agg([
                col("count").sum().alias("count"),
                len().cast(DataType::Int64).alias("workflows"),
                by_count(col("label"))
                    .head(Some(3))
                    .str()
                    .join(", ", true)
                    .alias("top_workflows"),
                col("first_seen").min(),
                col("last_seen").max(),
                by_count(col("sample_error")).first().alias("sample_error"),
                by_count(col("sample_run_id"))
                    .first()
                    .alias("sample_run_id"),
            ])
            .sort(
                ["count", "fingerprint", "status"],
                SortMultipleOptions::default()
                    .with_order_descending_multi([true, false, false])
                    .with_nulls_last(true),
            )
            .collect()
            .map_err(err)
    }
}

/// `e` in the order newest run first (ties by run id).
fn newest_first(e: Expr) -> Expr {
    e.sort_by(
        [col("start_time"), col("run_id")],
        SortMultipleOptions::default()
            .with_order_descending_multi([true, false])
            .with_nulls_last(true),
    )
}

/// A normalised error message: quoted values, UUIDs, long hex strings and numbers are masked,
/// so messages that differ only in ids or values fall into one group.
pub fn fingerprint(message: Expr) -> Expr {
    let masks = [
        (r"'[^']*'", "'…'"),
        (r#""[^"]*""#, "\"…\""),
        (
            r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
            "<id>",
        ),
        (r"\b(0x)?[0-9a-fA-F]{8,}\b", "<hex>"),
        (r"\d+(\.\d+)?", "<n>"),
        (r"\s+", " "),
    ];
    masks.into_iter().fold(message, |expr, (pattern, with)| {
        expr.str().replace_all(lit(pattern), lit(with), false)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_group_messages_that_differ_only_in_values() {
        let df = df!("error" => [
            "Node 'model' failed: upstream timeout after 30s (request id 8f3a9c2e)",
            "Node 'retriever' failed: upstream timeout after 45s (request id 0badf00d1)",
            "Rate limit exceeded for model \"arcee-70b\", retry after 12 seconds",
            "Run a40d4d53-7e5e-432b-8f23-8afdc53eefa3 cancelled",
        ])
        .unwrap();
        let out = df
            .lazy()
            .select([fingerprint(col("error"))])
            .collect()
            .unwrap();
        let fingerprints = out.column("error").unwrap().str().unwrap();
        let got: Vec<&str> = (0..fingerprints.len())
            .filter_map(|i| fingerprints.get(i))
            .collect();
        assert_eq!(
            got,
            [
                "Node '…' failed: upstream timeout after <n>s (request id <hex>)",
                "Node '…' failed: upstream timeout after <n>s (request id <hex>)",
                "Rate limit exceeded for model \"…\", retry after <n> seconds",
                "Run <id> cancelled",
            ]
        );
    }
}
