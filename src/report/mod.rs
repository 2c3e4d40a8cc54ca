//! Report: what regressed, where errors come from and what is slow, from an export's files:
//! tables (Parquet and CSV), `summary.md` and a self-contained `report.html` that say the same
//! things in the same order (`view`, `attention`, `trends`).
//!
//! It reads only the dataset's files, only the columns it needs (`scan`), into small per-group
//! cells (`runs`, `nodes`, `errors`); it never talks to the API and never changes the dataset.
//! Definitions, shared with `queries/` and the interop check:
//! - runs a `--full` export found deleted upstream (`deleted_upstream_at` set) are left out, with
//!   their child rows;
//! - error rate = runs with status `failed` ÷ all runs (any status) in the group;
//! - durations in seconds from `duration_ms` (runs without both timestamps are left out of them);
//! - quantiles are exact and interpolate linearly (numpy's default, DuckDB's `quantile_cont`).

mod attention;
mod compute;
mod distribution;
mod errors;
pub(crate) mod format;
mod frame;
mod html;
mod markdown;
mod nodes;
mod runs;
mod scan;
mod trends;
mod view;

pub use errors::fingerprint;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use polars::prelude::*;

/// The folder inside a dataset where `report` writes by default (and `demo` always): `_`-prefixed
/// like every folder that is not a table, so engines that read the dataset skip it.
pub const REPORTS_DIR: &str = "_reports";

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
    /// Where to write (default `DATA/_reports`).
    pub out: PathBuf,
    /// First UTC day included.
    pub since: Option<NaiveDate>,
    /// Last UTC day included.
    pub until: Option<NaiveDate>,
    /// Only these workflows (all when empty).
    pub workflows: Vec<String>,
    /// Rows of `slowest_runs`.
    pub top_n: usize,
    /// What a million tokens cost: adds `cost` to the token tables and the header.
    pub price_per_million_tokens: Option<f64>,
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
    /// `--workflow` names no workflow of the dataset, or a name several workflows share.
    #[error("{message}")]
    Filter { message: String, hint: String },
    /// A table's Parquet file could not be read.
    #[error("cannot read `{}`", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// A Delta table's log could not be read.
    #[error(transparent)]
    Delta(#[from] crate::dataset::DatasetError),
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
    /// The header's figures.
    pub totals: Totals,
    /// Time taken to compute and write.
    pub elapsed: Duration,
    /// What the reader should know about the scope (a day range without runs).
    pub warnings: Vec<String>,
}

impl Report {
    /// Workflows flagged in `regressions`.
    pub fn regressed(&self) -> usize {
        self.table("regressions")
            .and_then(|df| df.column("regressed").ok()?.bool().ok()?.sum())
            .unwrap_or(0) as usize
    }

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

/// The figures of the report's header, also written as the one-row `overview` table.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    /// When the report was computed.
    pub generated_at: DateTime<Utc>,
    /// Oldest and newest run start in scope.
    pub first_run: Option<DateTime<Utc>>,
    pub newest_run: Option<DateTime<Utc>>,
    /// UTC days from the first run to the newest, and how many of them the data covers whole
    /// (all but the first and the last).
    pub days: usize,
    pub complete_days: usize,
    pub runs: i64,
    pub workflows: usize,
    pub failed: i64,
    pub cancelled: i64,
    /// From `steps`, when the dataset has them.
    pub steps: Option<i64>,
    pub tokens: Option<i64>,
    /// What the tokens cost, with `--price-per-million-tokens`.
    pub cost: Option<f64>,
}

impl Totals {
    fn of(tables: &[(&'static str, DataFrame)]) -> Self {
        let get = |name: &str| tables.iter().find(|(n, _)| *n == name).map(|(_, df)| df);
        let sum = |df: Option<&DataFrame>, column: &str| -> Option<i64> {
            let c = df?.column(column).ok()?.cast(&DataType::Int64).ok()?;
            Some(c.i64().ok()?.sum().unwrap_or(0))
        };
        let instant = |column: &str, newest: bool| -> Option<DateTime<Utc>> {
            let c = get("workflow_summary")?.column(column).ok()?;
            let c = c.datetime().ok()?.physical();
            let us = if newest { c.max() } else { c.min() }?;
            DateTime::from_timestamp_micros(us)
        };
        let summary = get("workflow_summary");
        let (first_run, newest_run) = (instant("first_run", false), instant("last_run", true));
        let days = match (first_run, newest_run) {
            (Some(a), Some(b)) => (b.date_naive() - a.date_naive()).num_days() as usize + 1,
            _ => 0,
        };
        Self {
            generated_at: Utc::now(),
            first_run,
            newest_run,
            days,
            complete_days: get("daily_trends")
                .map_or(0, |d| trends::days(d).iter().filter(|(_, c)| *c).count()),
            runs: sum(summary, "runs").unwrap_or(0),
            workflows: summary.map_or(0, DataFrame::height),
            failed: sum(summary, "failed").unwrap_or(0),
            cancelled: sum(summary, "cancelled").unwrap_or(0),
            // From the per-node tables: steps without a start time have no day.
            steps: sum(get("slowest_nodes"), "steps"),
            tokens: sum(get("token_usage"), "tokens"),
            cost: get("token_usage").and_then(|df| {
                let cost = df.column("cost").ok()?.f64().ok()?;
                (cost.null_count() < cost.len()).then(|| cost.sum().unwrap_or(0.0))
            }),
        }
    }

    /// The `overview` table: one row of these figures.
    fn frame(&self) -> PolarsResult<DataFrame> {
        let us = |t: Option<DateTime<Utc>>| t.map(|t| t.timestamp_micros());
        let utc = DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC));
        let mut df = df!(
            "generated_at" => [Some(self.generated_at.timestamp_micros())],
            "first_run" => [us(self.first_run)],
            "newest_run" => [us(self.newest_run)],
            "days" => [self.days as i64],
            "complete_days" => [self.complete_days as i64],
            "runs" => [self.runs],
            "workflows" => [self.workflows as i64],
            "failed" => [self.failed],
            "cancelled" => [self.cancelled],
            "steps" => [self.steps],
            "tokens" => [self.tokens],
            "cost" => [self.cost],
        )?;
        for name in ["generated_at", "first_run", "newest_run"] {
            let cast = df.column(name)?.cast(&utc)?;
            df.with_column(cast)?;
        }
        Ok(df)
    }
}

/// Computes every table (without writing anything).
pub fn compute(options: &ReportOptions) -> Result<Report, ReportError> {
    let started = Instant::now();
    let files = scan::Files::of(&options.data)?;
    if !files.has_table("runs") {
        return Err(ReportError::NoData {
            path: options.data.clone(),
        });
    }
    let sources = compute::Sources::open(options, files)?;
    let warnings = sources.empty_scope().into_iter().collect();
    let mut tables = sources.tables()?;
    let totals = Totals::of(&tables);
    tables.insert(
        0,
        ("overview", totals.frame().map_err(polars_err("overview"))?),
    );
    Ok(Report {
        tables,
        runs: usize::try_from(totals.runs).unwrap_or(0),
        totals,
        elapsed: started.elapsed(),
        warnings,
    })
}

/// Computes and writes every table to `options.out`: `NAME.parquet`, `NAME.csv`, `summary.md`
/// and `report.html`. Files appear whole (temp file, then rename).
pub fn run(options: &ReportOptions) -> Result<Report, ReportError> {
    let started = Instant::now();
    let mut report = compute(options)?;
    let seconds = started.elapsed().as_secs_f64();
    tracing::debug!(target: "report", seconds, "tables computed");
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
    let seconds = started.elapsed().as_secs_f64();
    tracing::debug!(target: "report", seconds, "tables written");
    let page = view::page(&report, options);
    let markdown = markdown::render(&page);
    write_atomic(&options.out.join("summary.md"), |f| {
        std::io::Write::write_all(f, markdown.as_bytes()).map_err(|source| ReportError::Io {
            path: options.out.join("summary.md"),
            source,
        })
    })?;
    let html = html::render(&page);
    write_atomic(&options.out.join("report.html"), |f| {
        std::io::Write::write_all(f, html.as_bytes()).map_err(|source| ReportError::Io {
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
