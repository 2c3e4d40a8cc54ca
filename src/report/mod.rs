//! Report: computes elapsed-time and error-rate trends, error groups, node statistics, slow runs
//! and regressions from an export with Polars (a lazy scan of the Hive-partitioned Parquet), and
//! writes them as Parquet, CSV, Markdown and a self-contained HTML page.
//!
//! It reads only the dataset's files; it never talks to the API and never changes the dataset.
//! Definitions, shared with `queries/` and the interop check:
//! - runs a `--full` export found deleted upstream (`deleted_upstream_at` set) are left out;
//! - error rate = runs with status `failed` ÷ all runs (any status) in the group;
//! - durations in seconds from `duration_ms` (runs without both timestamps are left out of them);
//! - quantiles interpolate linearly (numpy's default, DuckDB's `quantile_cont`).

mod html;
mod markdown;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use polars::prelude::*;

use crate::dataset::Table;
use crate::table::DELETED_UPSTREAM_AT;

/// Slowest runs listed.
pub const DEFAULT_TOP_N: usize = 20;
/// A regression needs at least this many runs in both weeks compared.
pub const MIN_RUNS_FOR_REGRESSION: u32 = 20;
/// Error rate up by at least this much (absolute, 0.05 = 5 percentage points) is a regression.
pub const ERROR_RATE_REGRESSION: f64 = 0.05;
/// p95 duration up by at least this factor is a regression.
pub const P95_REGRESSION_FACTOR: f64 = 1.25;

/// What to report on.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    /// The export folder.
    pub data: PathBuf,
    /// Where to write (default `DATA/reports`).
    pub out: PathBuf,
    /// First UTC day included.
    pub since: Option<NaiveDate>,
    /// Last UTC day included.
    pub until: Option<NaiveDate>,
    /// Only these workflows (all when empty).
    pub workflows: Vec<String>,
    /// Rows of `slowest_runs`.
    pub top_n: usize,
    /// Where `data` was downloaded from (an object store URL), named in the reports instead.
    pub source: Option<String>,
}

impl ReportOptions {
    /// The dataset as the reports name it.
    pub fn data_name(&self) -> String {
        self.source
            .clone()
            .unwrap_or_else(|| self.data.display().to_string())
    }
}

/// Errors of the report stage.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The folder holds no `runs` table.
    #[error("no `runs` table in `{}`: is it an orchestra-export dataset?", path.display())]
    NoData { path: PathBuf },
    /// Polars failed computing a table.
    #[error("cannot compute `{table}`")]
    Polars {
        table: &'static str,
        #[source]
        source: PolarsError,
    },
    /// A report file could not be written.
    #[error("cannot write `{}`", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The computed tables, in the order they are written.
pub struct Report {
    /// (name, table).
    pub tables: Vec<(&'static str, DataFrame)>,
    /// Runs in scope.
    pub runs: usize,
    /// Time taken to compute and write.
    pub elapsed: Duration,
}

impl Report {
    /// A table by name.
    pub fn table(&self, name: &str) -> Option<&DataFrame> {
        self.tables
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, df)| df)
    }
}

fn polars_err(table: &'static str) -> impl Fn(PolarsError) -> ReportError {
    move |source| ReportError::Polars { table, source }
}

fn scan(data: &Path, table: &str) -> PolarsResult<LazyFrame> {
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

/// The columns of one of the dataset's tables (as `dataset::schema` declares them), in Polars'
/// types; `None` for a folder that is not a table.
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
            // Every timestamp column is UTC (`schema::UTC`).
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

/// The `runs` table without the runs a `--full` export found deleted upstream (they stay in the
/// dataset, but counting them would skew rates and trends), and the keys of those runs, for
/// leaving their child rows out too (`None` when there are none).
fn live_runs(data: &Path) -> PolarsResult<(LazyFrame, Option<Series>)> {
    let mut runs = scan(data, "runs")?;
    if !runs.collect_schema()?.contains(DELETED_UPSTREAM_AT) {
        return Ok((runs, None));
    }
    let deleted = runs
        .clone()
        .filter(col(DELETED_UPSTREAM_AT).is_not_null())
        .select([run_key().alias("key")])
        .collect()?
        .column("key")?
        .as_materialized_series()
        .clone();
    runs = runs.filter(col(DELETED_UPSTREAM_AT).is_null());
    Ok((runs, (!deleted.is_empty()).then_some(deleted)))
}

/// A run's key in one string column (workflow and run id, joined by a unit separator).
fn run_key() -> Expr {
    concat_str([col("workflow_id"), col("run_id")], "\u{1f}", false)
}

/// A child table (`node_outputs`, `steps`) in scope, without the rows of deleted runs.
fn child_rows(
    options: &ReportOptions,
    table: &'static str,
    deleted: Option<&Series>,
) -> Result<LazyFrame, ReportError> {
    let mut rows = in_scope(
        scan(&options.data, table).map_err(polars_err(table))?,
        options,
    );
    if let Some(keys) = deleted {
        rows = rows.filter(
            run_key()
                .is_in(lit(keys.clone()).implode(true), false)
                .not(),
        );
    }
    Ok(rows)
}

fn has_files(dir: &Path) -> bool {
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

fn quantile(column: &str, q: f64) -> Expr {
    col(column).quantile(lit(q), QuantileMethod::Linear)
}

fn count_where(condition: Expr) -> Expr {
    condition.cast(DataType::Int64).sum()
}

fn error_rate() -> Expr {
    (col("failed").cast(DataType::Float64) / col("runs").cast(DataType::Float64))
        .alias("error_rate")
}

/// Columns shown for `regressions` in the Markdown and HTML renderings.
const REGRESSION_COLUMNS: [&str; 8] = [
    "workflow_id",
    "runs_prev",
    "runs_last",
    "error_rate_prev",
    "error_rate_last",
    "p95_s_prev",
    "p95_s_last",
    "p95_ratio",
];

impl Report {
    /// Whether row `i` of `regressions` is flagged as a regression.
    fn regressed(&self, i: usize) -> bool {
        self.table("regressions")
            .and_then(|df| df.column("regressed").ok())
            .and_then(|c| c.bool().ok())
            .and_then(|f| f.get(i))
            .unwrap_or(false)
    }
}

/// Computes every table (without writing anything).
pub fn compute(options: &ReportOptions) -> Result<Report, ReportError> {
    let started = Instant::now();
    if !has_files(&options.data.join("runs")) {
        return Err(ReportError::NoData {
            path: options.data.clone(),
        });
    }
    let (runs, deleted) = live_runs(&options.data).map_err(polars_err("runs"))?;
    let runs = in_scope(runs, options).with_column(
        (col("duration_ms").cast(DataType::Float64) / lit(1000.0)).alias("duration_s"),
    );
    let names = if has_files(&options.data.join("workflows")) {
        scan(&options.data, "workflows")
            .map_err(polars_err("workflows"))?
            .select([col("workflow_id"), col("name")])
    } else {
        runs.clone()
            .select([col("workflow_id")])
            .unique(None, UniqueKeepStrategy::First)
            .with_column(lit(NULL).cast(DataType::String).alias("name"))
    };

    let summary = runs
        .clone()
        .group_by([col("workflow_id")])
        .agg([
            len().cast(DataType::Int64).alias("runs"),
            count_where(col("status").eq(lit("completed"))).alias("completed"),
            count_where(col("status").eq(lit("failed"))).alias("failed"),
            quantile("duration_s", 0.5).alias("p50_s"),
            quantile("duration_s", 0.9).alias("p90_s"),
            quantile("duration_s", 0.95).alias("p95_s"),
            quantile("duration_s", 0.99).alias("p99_s"),
            col("duration_s").max().alias("max_s"),
            col("duration_s").mean().alias("mean_s"),
            col("start_time").min().alias("first_run"),
            col("start_time").max().alias("last_run"),
        ])
        .with_columns([
            (col("runs") - col("completed") - col("failed")).alias("other"),
            error_rate(),
        ])
        .left_join(names.clone(), col("workflow_id"), col("workflow_id"))
        .select([
            col("workflow_id"),
            col("name"),
            col("runs"),
            col("completed"),
            col("failed"),
            col("other"),
            col("error_rate"),
            col("p50_s"),
            col("p90_s"),
            col("p95_s"),
            col("p99_s"),
            col("max_s"),
            col("mean_s"),
            col("first_run"),
            col("last_run"),
        ])
        .sort(["workflow_id"], SortMultipleOptions::default());

    let daily = runs
        .clone()
        .filter(col("start_time").is_not_null())
        .group_by([
            col("start_time").dt().date().alias("day"),
            col("workflow_id"),
        ])
        .agg([
            len().cast(DataType::Int64).alias("runs"),
            count_where(col("status").eq(lit("failed"))).alias("failed"),
            quantile("duration_s", 0.5).alias("p50_s"),
            quantile("duration_s", 0.95).alias("p95_s"),
        ])
        .with_column(error_rate())
        .select([
            col("day"),
            col("workflow_id"),
            col("runs"),
            col("failed"),
            col("error_rate"),
            col("p50_s"),
            col("p95_s"),
        ])
        .sort(["day", "workflow_id"], SortMultipleOptions::default());

    let errors = runs
        .clone()
        .filter(col("error").is_not_null())
        .with_column(fingerprint(col("error")).alias("fingerprint"))
        .group_by([col("fingerprint")])
        .agg([
            len().cast(DataType::Int64).alias("count"),
            col("workflow_id")
                .n_unique()
                .cast(DataType::Int64)
                .alias("workflows"),
            col("start_time").min().alias("first_seen"),
            col("start_time").max().alias("last_seen"),
            col("error").first().alias("sample_error"),
            col("run_id").first().alias("sample_run_id"),
        ])
        .sort(
            ["count", "fingerprint"],
            SortMultipleOptions::default().with_order_descending_multi([true, false]),
        );

    let nodes = child_rows(options, "node_outputs", deleted.as_ref())?
        .with_column(
            col("value")
                .str()
                .len_bytes()
                .cast(DataType::Float64)
                .alias("bytes"),
        )
        .group_by([col("workflow_id"), col("node")])
        .agg([
            len().cast(DataType::Int64).alias("rows"),
            col("node_index").min().alias("position"),
            col("value_type")
                .unique()
                .sort(SortOptions::default())
                .str()
                .join(",", true)
                .alias("value_types"),
            quantile("bytes", 0.5).alias("output_bytes_p50"),
            quantile("bytes", 0.95).alias("output_bytes_p95"),
        ])
        .sort(
            ["workflow_id", "position", "node"],
            SortMultipleOptions::default(),
        );

    let slowest = runs
        .clone()
        .filter(col("duration_ms").is_not_null())
        .sort(
            ["duration_ms", "run_id"],
            SortMultipleOptions::default().with_order_descending_multi([true, false]),
        )
        .limit(options.top_n as IdxSize)
        .left_join(names, col("workflow_id"), col("workflow_id"))
        .select([
            col("workflow_id"),
            col("name"),
            col("run_id"),
            col("status"),
            col("start_time"),
            col("duration_s"),
            col("error"),
        ]);

    let mut tables = vec![
        (
            "workflow_summary",
            aggregate(summary).map_err(polars_err("workflow_summary"))?,
        ),
        (
            "daily_trends",
            aggregate(daily).map_err(polars_err("daily_trends"))?,
        ),
        (
            "error_groups",
            aggregate(errors).map_err(polars_err("error_groups"))?,
        ),
        (
            "node_stats",
            aggregate(nodes).map_err(polars_err("node_stats"))?,
        ),
        (
            "slowest_runs",
            slowest.collect().map_err(polars_err("slowest_runs"))?,
        ),
    ];
    let regressions = regressions(&runs).map_err(polars_err("regressions"))?;
    tables.push(("regressions", regressions));
    if has_files(&options.data.join("steps")) {
        let steps = child_rows(options, "steps", deleted.as_ref())?.with_column(
            (col("duration_ms").cast(DataType::Float64) / lit(1000.0)).alias("duration_s"),
        );
        let slowest_nodes = steps
            .clone()
            .group_by([col("workflow_id"), col("node_id")])
            .agg([
                len().cast(DataType::Int64).alias("steps"),
                quantile("duration_s", 0.5).alias("p50_s"),
                quantile("duration_s", 0.95).alias("p95_s"),
                col("duration_s").max().alias("max_s"),
                col("duration_s").mean().alias("mean_s"),
            ])
            .sort(
                ["p95_s", "workflow_id", "node_id"],
                SortMultipleOptions::default()
                    .with_order_descending_multi([true, false, false])
                    .with_nulls_last(true),
            );
        let failing_nodes = steps
            .group_by([col("workflow_id"), col("node_id")])
            .agg([
                len().cast(DataType::Int64).alias("steps"),
                count_where(col("status").eq(lit("failed"))).alias("failures"),
                col("error")
                    .filter(col("status").eq(lit("failed")))
                    .first()
                    .alias("sample_error"),
            ])
            .filter(col("failures").gt(lit(0)))
            .with_column(
                (col("failures").cast(DataType::Float64) / col("steps").cast(DataType::Float64))
                    .alias("failure_rate"),
            )
            .sort(
                ["failures", "workflow_id", "node_id"],
                SortMultipleOptions::default().with_order_descending_multi([true, false, false]),
            );
        tables.push((
            "slowest_nodes",
            slowest_nodes
                .collect()
                .map_err(polars_err("slowest_nodes"))?,
        ));
        tables.push((
            "failing_nodes",
            failing_nodes
                .collect()
                .map_err(polars_err("failing_nodes"))?,
        ));
    }
    let total = tables[0]
        .1
        .column("runs")
        .and_then(|c| c.i64().map(|c| c.sum().unwrap_or(0)))
        .map_err(polars_err("workflow_summary"))?;
    Ok(Report {
        tables,
        runs: usize::try_from(total).unwrap_or(0),
        elapsed: started.elapsed(),
    })
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

/// Collects an aggregation with Polars' streaming engine: it reads the Parquet files in
/// batches instead of whole columns (`node_stats` reads every node output's text only to measure
/// it). On 5M runs in 8 shards it halved the report's time (21.4 s to 11.0 s) and lowered its peak
/// memory by 1.3 GB, with byte-identical tables (BENCHMARKS.md). `slowest_runs` (a sort with a
/// limit) stays on the in-memory engine: under streaming its top rows differed (Polars 0.55).
fn aggregate(frame: LazyFrame) -> PolarsResult<DataFrame> {
    Ok(frame
        .collect_with_engine(Engine::Streaming)?
        .unwrap_single())
}

/// Last 7 days against the 7 before, per workflow, relative to the newest day in the data (so a
/// report on an old export means the same thing today and tomorrow).
fn regressions(runs: &LazyFrame) -> PolarsResult<DataFrame> {
    let newest = runs
        .clone()
        .select([col("start_time").dt().date().max().alias("newest")])
        .collect()?;
    let Some(newest) = newest.column("newest")?.date()?.physical().get(0) else {
        return Ok(DataFrame::empty());
    };
    let day = col("start_time").dt().date().cast(DataType::Int32);
    let window = |from: i32, to: i32, suffix: &str| {
        runs.clone()
            .filter(day.clone().gt_eq(lit(from)).and(day.clone().lt_eq(lit(to))))
            .group_by([col("workflow_id")])
            .agg([
                len().cast(DataType::Int64).alias("runs"),
                count_where(col("status").eq(lit("failed"))).alias("failed"),
                quantile("duration_s", 0.95).alias("p95_s"),
            ])
            .with_column(error_rate())
            .select([
                col("workflow_id"),
                col("runs").alias(format!("runs_{suffix}")),
                col("error_rate").alias(format!("error_rate_{suffix}")),
                col("p95_s").alias(format!("p95_s_{suffix}")),
            ])
    };
    let last = window(newest - 6, newest, "last");
    let previous = window(newest - 13, newest - 7, "prev");
    let enough = col("runs_prev")
        .gt_eq(lit(MIN_RUNS_FOR_REGRESSION as i64))
        .and(col("runs_last").gt_eq(lit(MIN_RUNS_FOR_REGRESSION as i64)));
    let error_up = (col("error_rate_last") - col("error_rate_prev")).alias("error_rate_change");
    let p95_ratio = (col("p95_s_last") / col("p95_s_prev")).alias("p95_ratio");
    previous
        .join(
            last,
            [col("workflow_id")],
            [col("workflow_id")],
            JoinArgs::new(JoinType::Inner),
        )
        .with_columns([error_up, p95_ratio])
        .with_column(
            enough
                .and(
                    col("error_rate_change")
                        .gt_eq(lit(ERROR_RATE_REGRESSION))
                        .or(col("p95_ratio").gt_eq(lit(P95_REGRESSION_FACTOR))),
                )
                .fill_null(lit(false))
                .alias("regressed"),
        )
        .sort(["workflow_id"], SortMultipleOptions::default())
        .collect()
}

/// Computes and writes every table to `options.out`: `NAME.parquet`, `NAME.csv`, `summary.md`
/// and `report.html`. Files appear whole (temp file, then rename).
pub fn run(options: &ReportOptions) -> Result<Report, ReportError> {
    let started = Instant::now();
    let mut report = compute(options)?;
    std::fs::create_dir_all(&options.out).map_err(|source| ReportError::Io {
        path: options.out.clone(),
        source,
    })?;
    for (name, df) in &mut report.tables {
        let table: &'static str = name;
        write_atomic(&options.out.join(format!("{name}.parquet")), |f| {
            ParquetWriter::new(f)
                .finish(df)
                .map(drop)
                .map_err(polars_err(table))
        })?;
        write_atomic(&options.out.join(format!("{name}.csv")), |f| {
            CsvWriter::new(f)
                .include_header(true)
                .finish(df)
                .map_err(polars_err(table))
        })?;
    }
    let markdown = markdown::render(&report, options);
    write_atomic(&options.out.join("summary.md"), |f| {
        std::io::Write::write_all(f, markdown.as_bytes()).map_err(|source| ReportError::Io {
            path: options.out.join("summary.md"),
            source,
        })
    })?;
    let page = html::render(&report, options);
    write_atomic(&options.out.join("report.html"), |f| {
        std::io::Write::write_all(f, page.as_bytes()).map_err(|source| ReportError::Io {
            path: options.out.join("report.html"),
            source,
        })
    })?;
    report.elapsed = started.elapsed();
    Ok(report)
}

fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut std::fs::File) -> Result<(), ReportError>,
) -> Result<(), ReportError> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let io = |source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::create(&temp).map_err(io)?;
    let result = write(&mut file).and_then(|()| file.sync_all().map_err(io));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    std::fs::rename(&temp, path).map_err(io)
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
