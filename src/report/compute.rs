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

/// The workflow ids `asked` names: an id as it is, or a name one workflow has. A name several
/// workflows share is refused with their ids.
fn resolve(asked: &[String], names: &Names) -> Result<Vec<String>, ReportError> {
    asked
        .iter()
        .map(|w| {
            if names.contains_key(w) {
                return Ok(w.clone());
            }
            let mut ids: Vec<&String> = names
                .iter()
                .filter(|(_, name)| *name == w)
                .map(|(id, _)| id)
                .collect();
            ids.sort();
            match ids.as_slice() {
                [] => Ok(w.clone()),
                [id] => Ok((*id).clone()),
                many => Err(ReportError::Filter {
                    message: format!("`{}` names {} workflows", w, many.len()),
                    hint: format!(
                        "pass one of their ids: {}",
                        many.iter()
                            .map(|id| id.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                }),
            }
        })
        .collect()
}

/// A hint naming a few of the dataset's workflows.
fn known_workflows(runs: &RunStats, names: &Names) -> String {
    let mut ids: Vec<&String> = runs.seen.iter().collect();
    ids.sort();
    let shown: Vec<String> = ids
        .iter()
        .take(5)
        .map(|id| match names.get(*id) {
            Some(name) => format!("`{}` ({})", name, id),
            None => format!("`{}`", id),
        })
        .collect();
    let more = ids.len().saturating_sub(shown.len());
    let more = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    format!(
        "`--workflow` takes an id or a name; the dataset has {}{more}",
        shown.join(", ")
    )
}

/// The inputs of every table: the names of the workflows and the runs in scope.
pub(super) struct Sources {
    options: ReportOptions,
    files: scan::Files,
    scope: Scope,
    names: Names,
    runs: RunStats,
    deleted: Deleted,
}

impl Sources {
    /// Reads the names and the runs of `options.data`, whose tables hold `files`.
    pub(super) fn open(options: &ReportOptions, files: scan::Files) -> Result<Self, ReportError> {
        let started = std::time::Instant::now();
        let names = scan::fold(
            &files,
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
        let mut options = options.clone();
        options.workflows = resolve(&options.workflows, &names)?;
        let scope = Scope::of(&options);
        let runs = RunStats::read(&files, &scope, options.top_n)?;
        if let Some(missing) = options.workflows.iter().find(|w| !runs.seen.contains(*w)) {
            return Err(ReportError::Filter {
                message: format!("no workflow `{}` in `{}`", missing, options.data_name()),
                hint: known_workflows(&runs, &names),
            });
        }
        let deleted = deleted_keys(&runs.deleted);
        let seconds = started.elapsed().as_secs_f64();
        tracing::debug!(target: "report", seconds, "names and runs read");
        Ok(Self {
            options,
            files,
            scope,
            names,
            runs,
            deleted,
        })
    }

    /// When a day range leaves no run of the data in scope: which, and what the data covers.
    pub(super) fn empty_scope(&self) -> Option<String> {
        let (first, last) = self.runs.data_days?;
        let in_scope: i64 = self
            .runs
            .workflows
            .values()
            .flatten()
            .map(|(_, c)| c.runs)
            .sum();
        if in_scope > 0 || !self.scope.by_day() {
            return None;
        }
        let day = |d: i32| {
            chrono::NaiveDate::from_num_days_from_ce_opt(d + 719_163)
                .map_or_else(String::new, |d| d.to_string())
        };
        let range = match (self.options.since, self.options.until) {
            (Some(s), Some(u)) => format!("between {s} and {u}"),
            (Some(s), None) => format!("since {s}"),
            (None, Some(u)) => format!("until {u}"),
            (None, None) => String::new(),
        };
        Some(format!(
            "no runs {range}: the data covers {} to {}",
            day(first),
            day(last)
        ))
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
                NodeStats::read(&self.files, &self.scope, &self.deleted)
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
        if self.files.has_table("steps") {
            let mut steps = StepStats::read(&self.files, &self.scope, &self.deleted)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workflow_filter_takes_an_id_or_a_name_one_workflow_has() {
        let names = Names::from([
            ("id-a".to_owned(), "Triage".to_owned()),
            ("id-b".to_owned(), "Jokes".to_owned()),
            ("id-c".to_owned(), "Jokes".to_owned()),
        ]);
        let asked = |w: &[&str]| {
            resolve(
                &w.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
                &names,
            )
        };
        assert_eq!(asked(&["id-b", "Triage"]).unwrap(), ["id-b", "id-a"]);
        assert_eq!(
            asked(&["unknown"]).unwrap(),
            ["unknown"],
            "checked against the runs later"
        );
        match asked(&["Jokes"]) {
            Err(ReportError::Filter { message, hint }) => {
                assert_eq!(message, "`Jokes` names 2 workflows");
                assert_eq!(hint, "pass one of their ids: id-b, id-c");
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
    }
}
