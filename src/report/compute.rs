//! The report's tables, from one pass over each table (`runs`, `node_outputs`, `steps`) into
//! small per-group cells (`runs.rs`, `nodes.rs`, `errors.rs`): a Polars group-by with exact
//! quantiles held every key string and value at once (4.1 GB for `node_stats` over 24M node
//! outputs), the cells hold 8 bytes a value and the error groups one cell per status,
//! fingerprint and workflow. No statistic reads a text column it only measures
//! (`node_outputs.value_bytes` holds each output's size).

use polars::prelude::*;

use super::nodes::{Deleted, NodeStats, StepStats, deleted_keys};
use super::runs::{Names, RunStats};
use super::scan::{self, Scope};
use super::{ReportError, ReportOptions, polars_err};

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
                self.runs
                    .errors
                    .frame(names)
                    .map_err(polars_err("error_groups"))?,
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
        if scan::has_table(&self.options.data, "steps") {
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
                steps
                    .tokens(names, self.options.price_per_million_tokens)
                    .map_err(polars_err("token_usage"))?,
            ));
            tables.push((
                "daily_tokens",
                steps
                    .daily(self.options.price_per_million_tokens)
                    .map_err(polars_err("daily_tokens"))?,
            ));
        }
        Ok(tables)
    }
}
