//! One pass over `runs` (six narrow columns) into per-workflow, per-day cells: counts by status,
//! every duration, first and last start; and the slowest runs. `workflow_summary`,
//! `daily_trends`, `regressions` and `slowest_runs` are read off these cells, so every quantile
//! is exact and the memory is 8 bytes a run.

use std::collections::{BTreeMap, HashMap, HashSet};

use polars::prelude::*;

use super::distribution::Samples;
use super::errors::ErrorGroups;
use super::frame::FrameBuilder;
use super::scan::{self, Batch, Files, Scope, at, day_of, min_of, text_at};
use super::{ERROR_RATE_REGRESSION, MIN_RUNS_FOR_REGRESSION, P95_REGRESSION_FACTOR, ReportError};
use crate::table::DELETED_UPSTREAM_AT;

/// Workflow id → name, from the `workflows` table.
pub type Names = HashMap<String, String>;

/// The runs of one workflow on one day (or without a start time).
#[derive(Debug, Clone, Default)]
pub struct Cell {
    pub runs: i64,
    pub completed: i64,
    pub failed: i64,
    pub cancelled: i64,
    /// `duration_ms` of the runs that have one.
    pub durations: Samples,
    pub first: Option<i64>,
    pub last: Option<i64>,
}

impl Cell {
    fn add(&mut self, status: Option<&str>, start: Option<i64>, duration_ms: Option<i64>) {
        self.runs += 1;
        match status {
            Some("completed") => self.completed += 1,
            Some("failed") => self.failed += 1,
            Some("cancelled") => self.cancelled += 1,
            _ => {}
        }
        if let Some(d) = duration_ms {
            self.durations.push(d);
        }
        self.first = min_of(self.first, start);
        self.last = self.last.max(start);
    }

    fn absorb(&mut self, other: Cell) {
        self.runs += other.runs;
        self.completed += other.completed;
        self.failed += other.failed;
        self.cancelled += other.cancelled;
        self.durations.absorb(other.durations);
        self.first = min_of(self.first, other.first);
        self.last = self.last.max(other.last);
    }

    fn error_rate(&self) -> Option<f64> {
        (self.runs > 0).then(|| self.failed as f64 / self.runs as f64)
    }

    /// Quantile `q` of the durations, in seconds.
    fn seconds(&mut self, q: f64) -> Option<f64> {
        self.durations.sort();
        self.durations.quantile(q).map(|ms| ms / 1000.0)
    }
}

/// One of the slowest runs.
#[derive(Debug, Clone)]
pub struct SlowRun {
    pub workflow_id: String,
    pub run_id: String,
    pub status: Option<String>,
    pub start: Option<i64>,
    pub duration_ms: i64,
    pub error: Option<String>,
}

/// The runs of every workflow in scope.
#[derive(Debug, Default)]
pub struct RunStats {
    /// Workflow → day (days since the epoch; `None` without a start time) → cell.
    pub workflows: HashMap<String, BTreeMap<Option<i32>, Cell>>,
    /// (workflow, run) of runs a `--full` export found deleted upstream: left out here, and
    /// their child rows too.
    pub deleted: HashSet<(String, String)>,
    /// The errors of failed and cancelled runs, grouped.
    pub errors: ErrorGroups,
    /// The slowest runs, at most `2 × top` between trims.
    slowest: Vec<SlowRun>,
    top: usize,
    /// The shortest duration among the `top` kept, once there are that many.
    floor: Option<i64>,
    /// The first and the last UTC day of the live runs, in scope or not: only these two are
    /// partial days.
    pub data_days: Option<(i32, i32)>,
    /// Every workflow with live runs, in scope or not.
    pub seen: HashSet<String>,
}

/// The columns of `runs` the report reads.
const COLUMNS: [&str; 7] = [
    "workflow_id",
    "run_id",
    "status",
    "start_time",
    "duration_ms",
    "error",
    DELETED_UPSTREAM_AT,
];

impl RunStats {
    /// Reads `runs` of `data` within `scope`, keeping the `top` slowest.
    pub fn read(data: &Files, scope: &Scope, top: usize) -> Result<Self, ReportError> {
        let init = || RunStats {
            top,
            ..RunStats::default()
        };
        scan::fold(
            data,
            "runs",
            &COLUMNS,
            &[],
            init,
            |stats, batch| stats.add(batch, scope),
            RunStats::merge,
        )
    }

    fn add(&mut self, batch: &Batch, scope: &Scope) {
        let (Some(workflows), Some(runs)) = (batch.text("workflow_id"), batch.text("run_id"))
        else {
            return;
        };
        let status = batch.text("status");
        let start = batch.micros("start_time");
        let duration = batch.int64("duration_ms");
        let deleted = batch.micros(DELETED_UPSTREAM_AT);
        for i in 0..batch.rows() {
            let workflow = workflows.value(i);
            if at(deleted, i, |c, i| c.value(i)).is_some() {
                self.deleted
                    .insert((workflow.to_owned(), runs.value(i).to_owned()));
                continue;
            }
            let start = at(start, i, |c, i| c.value(i));
            if !self.seen.contains(workflow) {
                self.seen.insert(workflow.to_owned());
            }
            if let Some(day) = start.map(day_of) {
                self.data_days = Some(
                    self.data_days
                        .map_or((day, day), |(a, b)| (a.min(day), b.max(day))),
                );
            }
            if !scope.covers(workflow, start) {
                continue;
            }
            let duration_ms = at(duration, i, |c, i| c.value(i));
            let status = text_at(status, i);
            if !self.workflows.contains_key(workflow) {
                self.workflows.insert(workflow.to_owned(), BTreeMap::new());
            }
            let days = self.workflows.get_mut(workflow).expect("inserted above");
            days.entry(start.map(day_of))
                .or_default()
                .add(status, start, duration_ms);
            if let Some(error) = text_at(batch.text("error"), i) {
                self.errors
                    .add(status, error, workflow, runs.value(i), start);
            }
            if let Some(d) = duration_ms {
                self.consider(d, || SlowRun {
                    workflow_id: workflow.to_owned(),
                    run_id: runs.value(i).to_owned(),
                    status: status.map(str::to_owned),
                    start,
                    duration_ms: d,
                    error: text_at(batch.text("error"), i).map(str::to_owned),
                });
            }
        }
    }

    /// Keeps the run made by `run` if it may be among the slowest.
    fn consider(&mut self, duration_ms: i64, run: impl FnOnce() -> SlowRun) {
        if self.top == 0 || self.floor.is_some_and(|floor| duration_ms < floor) {
            return;
        }
        self.slowest.push(run());
        if self.slowest.len() >= 2 * self.top {
            self.trim();
        }
    }

    /// Keeps the `top` slowest, longest first (ties by run id).
    fn trim(&mut self) {
        self.slowest.sort_by(|a, b| {
            b.duration_ms
                .cmp(&a.duration_ms)
                .then_with(|| a.run_id.cmp(&b.run_id))
        });
        self.slowest.truncate(self.top);
        if self.slowest.len() == self.top {
            self.floor = self.slowest.last().map(|r| r.duration_ms);
        }
    }

    fn merge(mut self, other: RunStats) -> RunStats {
        for (workflow, days) in other.workflows {
            let mine = self.workflows.entry(workflow).or_default();
            for (day, cell) in days {
                mine.entry(day).or_default().absorb(cell);
            }
        }
        self.deleted.extend(other.deleted);
        self.errors.absorb(other.errors);
        self.seen.extend(other.seen);
        self.data_days = match (self.data_days, other.data_days) {
            (Some((a, b)), Some((c, d))) => Some((a.min(c), b.max(d))),
            (x, y) => x.or(y),
        };
        self.slowest.extend(other.slowest);
        self.top = self.top.max(other.top);
        self.trim();
        self
    }

    /// The newest day with runs.
    pub fn newest_day(&self) -> Option<i32> {
        self.workflows
            .values()
            .flat_map(|days| days.keys().rev().find_map(|d| *d))
            .max()
    }

    /// Every run of `workflow` whose day passes `keep`, in one cell.
    fn total(&self, workflow: &str, keep: impl Fn(Option<i32>) -> bool) -> Cell {
        let mut total = Cell::default();
        for (day, cell) in self.workflows.get(workflow).into_iter().flatten() {
            if keep(*day) {
                total.runs += cell.runs;
                total.completed += cell.completed;
                total.failed += cell.failed;
                total.cancelled += cell.cancelled;
                total.durations.extend(&cell.durations);
                total.first = min_of(total.first, cell.first);
                total.last = total.last.max(cell.last);
            }
        }
        total
    }

    /// Workflow ids, the busiest first (then by name and id).
    fn by_runs(&self, names: &Names) -> Vec<(&String, i64)> {
        let mut ids: Vec<(&String, i64)> = self
            .workflows
            .iter()
            .map(|(id, days)| (id, days.values().map(|c| c.runs).sum()))
            .collect();
        ids.sort_by(|(a, ra), (b, rb)| {
            rb.cmp(ra)
                .then_with(|| match (names.get(*a), names.get(*b)) {
                    (Some(x), Some(y)) => x.cmp(y),
                    (Some(_), None) => std::cmp::Ordering::Less,
                    (None, Some(_)) => std::cmp::Ordering::Greater,
                    (None, None) => std::cmp::Ordering::Equal,
                })
                .then_with(|| a.cmp(b))
        });
        ids
    }

    /// `workflow_summary`: per workflow, the busiest first.
    pub fn summary(&self, names: &Names) -> PolarsResult<DataFrame> {
        let ids = self.by_runs(names);
        let mut cols = SummaryColumns::default();
        for (id, _) in &ids {
            let mut c = self.total(id, |_| true);
            cols.workflow_id.push(Some((*id).clone()));
            cols.name.push(names.get(*id).cloned());
            cols.runs.push(c.runs);
            cols.completed.push(c.completed);
            cols.failed.push(c.failed);
            cols.cancelled.push(c.cancelled);
            cols.other
                .push(c.runs - c.completed - c.failed - c.cancelled);
            cols.error_rate.push(c.error_rate());
            for (q, out) in [
                (0.5, &mut cols.p50),
                (0.9, &mut cols.p90),
                (0.95, &mut cols.p95),
                (0.99, &mut cols.p99),
            ] {
                out.push(c.seconds(q));
            }
            cols.max
                .push(c.durations.max().map(|ms| ms as f64 / 1000.0));
            cols.mean.push(c.durations.mean().map(|ms| ms / 1000.0));
            cols.first.push(c.first);
            cols.last.push(c.last);
        }
        FrameBuilder::default()
            .text("workflow_id", cols.workflow_id)
            .text("name", cols.name)
            .int("runs", cols.runs)
            .int("completed", cols.completed)
            .int("failed", cols.failed)
            .int("cancelled", cols.cancelled)
            .int("other", cols.other)
            .float("error_rate", cols.error_rate)
            .float("p50_s", cols.p50)
            .float("p90_s", cols.p90)
            .float("p95_s", cols.p95)
            .float("p99_s", cols.p99)
            .float("max_s", cols.max)
            .float("mean_s", cols.mean)
            .utc("first_run", cols.first)
            .utc("last_run", cols.last)
            .finish()
    }

    /// `daily_trends`: per day and workflow (by id); `complete` is false on the first and the
    /// last day of the data (of all of it, whatever the scope).
    pub fn daily(&self) -> PolarsResult<DataFrame> {
        let mut rows: Vec<(i32, &String, &Cell)> = self
            .workflows
            .iter()
            .flat_map(|(id, days)| {
                days.iter()
                    .filter_map(move |(day, cell)| Some(((*day)?, id, cell)))
            })
            .collect();
        rows.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        let (first, last) = self.data_days.unzip();
        let mut b = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut rate, mut p50, mut p95, mut complete) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (day, id, cell) in rows {
            let mut cell = cell.clone();
            b.0.push(day);
            b.1.push(Some(id.clone()));
            b.2.push(cell.runs);
            b.3.push(cell.failed);
            rate.push(cell.error_rate());
            p50.push(cell.seconds(0.5));
            p95.push(cell.seconds(0.95));
            complete.push(Some(day) != first && Some(day) != last);
        }
        FrameBuilder::default()
            .date("day", b.0)
            .text("workflow_id", b.1)
            .int("runs", b.2)
            .int("failed", b.3)
            .float("error_rate", rate)
            .float("p50_s", p50)
            .float("p95_s", p95)
            .flag("complete", complete)
            .finish()
    }

    /// `regressions`: the last 7 days against the 7 before, per workflow, relative to the newest
    /// day in the data (so a report on an old export means the same today and tomorrow).
    /// Workflows with runs in only one of the weeks are listed, NULL for the other; regressed
    /// ones first.
    pub fn regressions(&self, names: &Names) -> PolarsResult<DataFrame> {
        // Without any start time there is nothing to compare: no rows, the same columns.
        let newest = self.newest_day().unwrap_or(i32::MIN);
        let in_days =
            |from: i32, to: i32| move |d: Option<i32>| d.is_some_and(|d| d >= from && d <= to);
        let mut rows: Vec<Comparison> = self
            .workflows
            .keys()
            .filter_map(|id| {
                let mut prev = self.total(
                    id,
                    in_days(newest.saturating_sub(13), newest.saturating_sub(7)),
                );
                let mut last = self.total(id, in_days(newest.saturating_sub(6), newest));
                (prev.runs + last.runs > 0)
                    .then(|| Comparison::of(id, names.get(id).cloned(), &mut prev, &mut last))
            })
            .collect();
        rows.sort_by(|a, b| {
            b.regressed
                .cmp(&a.regressed)
                .then_with(|| {
                    let (x, y) = (a.error_rate_change, b.error_rate_change);
                    match (x, y) {
                        (Some(x), Some(y)) => y.total_cmp(&x),
                        (Some(_), None) => std::cmp::Ordering::Less,
                        (None, Some(_)) => std::cmp::Ordering::Greater,
                        (None, None) => std::cmp::Ordering::Equal,
                    }
                })
                .then_with(|| a.name.cmp(&b.name))
                .then_with(|| a.workflow_id.cmp(&b.workflow_id))
        });
        let col = |f: fn(&Comparison) -> Option<f64>| rows.iter().map(f).collect::<Vec<_>>();
        FrameBuilder::default()
            .text(
                "workflow_id",
                rows.iter().map(|r| Some(r.workflow_id.clone())).collect(),
            )
            .text("name", rows.iter().map(|r| r.name.clone()).collect())
            .flag("regressed", rows.iter().map(|r| r.regressed).collect())
            .flag("judged", rows.iter().map(|r| r.judged).collect())
            .int("runs_prev", rows.iter().map(|r| r.runs_prev).collect())
            .int("runs_last", rows.iter().map(|r| r.runs_last).collect())
            .float("error_rate_prev", col(|r| r.error_rate_prev))
            .float("error_rate_last", col(|r| r.error_rate_last))
            .float("error_rate_change", col(|r| r.error_rate_change))
            .float("p95_s_prev", col(|r| r.p95_prev))
            .float("p95_s_last", col(|r| r.p95_last))
            .float("p95_ratio", col(|r| r.p95_ratio))
            .finish()
    }

    /// `slowest_runs`: the `top` longest runs, longest first.
    pub fn slowest(&mut self, names: &Names) -> PolarsResult<DataFrame> {
        self.trim();
        let runs = &self.slowest;
        FrameBuilder::default()
            .text(
                "workflow_id",
                runs.iter().map(|r| Some(r.workflow_id.clone())).collect(),
            )
            .text(
                "name",
                runs.iter()
                    .map(|r| names.get(&r.workflow_id).cloned())
                    .collect(),
            )
            .text(
                "run_id",
                runs.iter().map(|r| Some(r.run_id.clone())).collect(),
            )
            .text("status", runs.iter().map(|r| r.status.clone()).collect())
            .utc("start_time", runs.iter().map(|r| r.start).collect())
            .float(
                "duration_s",
                runs.iter()
                    .map(|r| Some(r.duration_ms as f64 / 1000.0))
                    .collect(),
            )
            .text("error", runs.iter().map(|r| r.error.clone()).collect())
            .finish()
    }
}

#[derive(Default)]
struct SummaryColumns {
    workflow_id: Vec<Option<String>>,
    name: Vec<Option<String>>,
    runs: Vec<i64>,
    completed: Vec<i64>,
    failed: Vec<i64>,
    cancelled: Vec<i64>,
    other: Vec<i64>,
    error_rate: Vec<Option<f64>>,
    p50: Vec<Option<f64>>,
    p90: Vec<Option<f64>>,
    p95: Vec<Option<f64>>,
    p99: Vec<Option<f64>>,
    max: Vec<Option<f64>>,
    mean: Vec<Option<f64>>,
    first: Vec<Option<i64>>,
    last: Vec<Option<i64>>,
}

/// One workflow's two weeks, and whether they show a regression.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub workflow_id: String,
    pub name: Option<String>,
    pub runs_prev: i64,
    pub runs_last: i64,
    pub error_rate_prev: Option<f64>,
    pub error_rate_last: Option<f64>,
    pub error_rate_change: Option<f64>,
    pub p95_prev: Option<f64>,
    pub p95_last: Option<f64>,
    pub p95_ratio: Option<f64>,
    /// Both weeks have enough runs to compare.
    pub judged: bool,
    pub regressed: bool,
}

impl Comparison {
    /// The comparison of `prev` and `last`: regressed when both weeks have
    /// [`MIN_RUNS_FOR_REGRESSION`] runs and the error rate rose by [`ERROR_RATE_REGRESSION`] or
    /// p95 grew by [`P95_REGRESSION_FACTOR`].
    pub fn of(id: &str, name: Option<String>, prev: &mut Cell, last: &mut Cell) -> Self {
        let (p95_prev, p95_last) = (prev.seconds(0.95), last.seconds(0.95));
        let (error_rate_prev, error_rate_last) = (prev.error_rate(), last.error_rate());
        let error_rate_change = error_rate_prev.zip(error_rate_last).map(|(a, b)| b - a);
        let p95_ratio = p95_prev
            .zip(p95_last)
            .map(|(a, b)| b / a)
            .filter(|r| r.is_finite());
        let enough = i64::from(MIN_RUNS_FOR_REGRESSION);
        let judged = prev.runs >= enough && last.runs >= enough;
        // From 0 s to more is a regression too (the ratio, infinite, is left NULL).
        let from_zero = p95_prev == Some(0.0) && p95_last.is_some_and(|p| p > 0.0);
        let regressed = judged
            && (error_rate_change.is_some_and(|c| c >= ERROR_RATE_REGRESSION)
                || p95_ratio.is_some_and(|r| r >= P95_REGRESSION_FACTOR)
                || from_zero);
        Self {
            workflow_id: id.to_owned(),
            name,
            runs_prev: prev.runs,
            runs_last: last.runs,
            error_rate_prev,
            error_rate_last,
            error_rate_change,
            p95_prev,
            p95_last,
            p95_ratio,
            judged,
            regressed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(runs: i64, failed: i64, durations_ms: &[i64]) -> Cell {
        let mut c = Cell {
            runs,
            failed,
            ..Cell::default()
        };
        for d in durations_ms {
            c.durations.push(*d);
        }
        c
    }

    #[test]
    fn a_workflow_regresses_on_errors_or_latency_with_enough_runs_in_both_weeks() {
        let steady: Vec<i64> = (1..=40).map(|i| i * 1000).collect();
        let doubled: Vec<i64> = steady.iter().map(|d| d * 2).collect();
        // (before, last 7 days, judged, regressed)
        let cases = [
            (cell(40, 2, &steady), cell(40, 2, &steady), true, false),
            (cell(40, 2, &steady), cell(40, 5, &steady), true, true), // +7.5 pts
            (cell(40, 2, &steady), cell(40, 3, &steady), true, false), // +2.5 pts
            (cell(40, 2, &steady), cell(40, 2, &doubled), true, true), // p95 2×
            (
                cell(19, 0, &steady[..19]),
                cell(40, 20, &doubled),
                false,
                false,
            ), // too few before
            (cell(0, 0, &[]), cell(40, 2, &steady), false, false),
        ];
        for (i, (mut prev, mut last, judged, regressed)) in cases.into_iter().enumerate() {
            let c = Comparison::of("w", None, &mut prev, &mut last);
            assert_eq!(
                (c.judged, c.regressed),
                (judged, regressed),
                "case {i}: {c:?}"
            );
        }
    }

    #[test]
    fn the_slowest_runs_are_kept_longest_first_ties_by_run_id() {
        let mut stats = RunStats {
            top: 3,
            ..RunStats::default()
        };
        for (id, ms) in [
            ("e", 5),
            ("a", 9),
            ("c", 9),
            ("b", 1),
            ("d", 7),
            ("f", 9),
            ("g", 2),
        ] {
            stats.consider(ms, || SlowRun {
                workflow_id: "w".into(),
                run_id: id.into(),
                status: None,
                start: None,
                duration_ms: ms,
                error: None,
            });
        }
        stats.trim();
        let got: Vec<&str> = stats.slowest.iter().map(|r| r.run_id.as_str()).collect();
        assert_eq!(got, ["a", "c", "f"]);
    }
}
