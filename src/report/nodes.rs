//! One pass over `node_outputs` (sizes from `value_bytes`, never the text) and one over `steps`
//! into per-workflow, per-node cells: `node_stats`, `slowest_nodes`, `failing_nodes`,
//! `token_usage` and `daily_tokens` are read off them, every quantile exact.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use polars::prelude::*;

use super::ReportError;
use super::distribution::Samples;
use super::frame::FrameBuilder;
use super::runs::Names;
use super::scan::{self, Batch, Files, Scope, at, day_of, min_of, text_at};
use crate::table::VALUE_BYTES;

/// Stands for a NULL node id in the maps (output as NULL).
const NO_NODE: &str = "\u{0}";

/// Runs left out (deleted upstream), by workflow: looked up without allocating.
pub type Deleted = HashMap<String, HashSet<String>>;

/// The runs of `runs` as [`Deleted`] holds them.
pub fn deleted_keys(runs: &HashSet<(String, String)>) -> Deleted {
    let mut deleted = Deleted::new();
    for (workflow, run) in runs {
        deleted
            .entry(workflow.clone())
            .or_default()
            .insert(run.clone());
    }
    deleted
}

/// Cells by workflow, then by node.
type ByNode<C> = HashMap<String, HashMap<String, C>>;

fn cell_of<'a, C: Default>(map: &'a mut ByNode<C>, workflow: &str, node: &str) -> &'a mut C {
    if !map.contains_key(workflow) {
        map.insert(workflow.to_owned(), HashMap::new());
    }
    let nodes = map.get_mut(workflow).expect("inserted above");
    if !nodes.contains_key(node) {
        nodes.insert(node.to_owned(), C::default());
    }
    nodes.get_mut(node).expect("inserted above")
}

fn merge_maps<C>(mut a: ByNode<C>, b: ByNode<C>, absorb: impl Fn(&mut C, C)) -> ByNode<C>
where
    C: Default,
{
    for (workflow, nodes) in b {
        let mine = a.entry(workflow).or_default();
        for (node, cell) in nodes {
            absorb(mine.entry(node).or_default(), cell);
        }
    }
    a
}

/// Whether row `i` (of `workflow`, started at `start`) counts: in scope, its run not deleted.
fn counts(
    batch: &Batch,
    i: usize,
    workflow: &str,
    start: Option<i64>,
    scope: &Scope,
    deleted: &Deleted,
) -> bool {
    if !scope.covers(workflow, start) {
        return false;
    }
    deleted.is_empty()
        || text_at(batch.text("run_id"), i)
            .is_none_or(|run| deleted.get(workflow).is_none_or(|runs| !runs.contains(run)))
}

/// Rows sorted by workflow name (unnamed last), then id, then `rest`.
fn sorted_keys<'a, C>(map: &'a ByNode<C>, names: &Names) -> Vec<(&'a String, &'a String, &'a C)> {
    let mut rows: Vec<_> = map
        .iter()
        .flat_map(|(w, nodes)| nodes.iter().map(move |(n, c)| (w, n, c)))
        .collect();
    rows.sort_by(|a, b| {
        let name = |w: &String| (names.get(w).is_none(), names.get(w).cloned());
        name(a.0)
            .cmp(&name(b.0))
            .then_with(|| a.0.cmp(b.0))
            .then_with(|| a.1.cmp(b.1))
    });
    rows
}

fn node_name(node: &str) -> Option<String> {
    (node != NO_NODE).then(|| node.to_owned())
}

/// The outputs of one node of one workflow.
#[derive(Debug, Default)]
struct OutputCell {
    rows: i64,
    position: Option<i32>,
    types: BTreeSet<String>,
    sizes: Samples,
}

/// Output sizes per workflow and node.
#[derive(Debug, Default)]
pub struct NodeStats(ByNode<OutputCell>);

impl NodeStats {
    /// Reads `node_outputs`: the sizes from `value_bytes`, or measured from `value` in files
    /// written before `value_bytes` existed.
    pub fn read(data: &Files, scope: &Scope, deleted: &Deleted) -> Result<Self, ReportError> {
        let mut columns = vec![
            "workflow_id",
            "node",
            "node_index",
            "value_type",
            VALUE_BYTES,
        ];
        // Its start only places a row in a day range: not read without one.
        if scope.by_day() {
            columns.push("start_time");
        }
        if !deleted.is_empty() {
            columns.push("run_id");
        }
        scan::fold(
            data,
            "node_outputs",
            &columns,
            &[(VALUE_BYTES, "value")],
            NodeStats::default,
            |stats, batch| stats.add(batch, scope, deleted),
            |a, b| {
                NodeStats(merge_maps(a.0, b.0, |mine, other| {
                    mine.rows += other.rows;
                    mine.position = min_of(mine.position, other.position);
                    mine.types.extend(other.types);
                    mine.sizes.absorb(other.sizes);
                }))
            },
        )
    }

    fn add(&mut self, batch: &Batch, scope: &Scope, deleted: &Deleted) {
        let (Some(workflows), Some(nodes)) = (batch.text("workflow_id"), batch.text("node")) else {
            return;
        };
        let start = batch.micros("start_time");
        let index = batch.int32("node_index");
        let types = batch.text("value_type");
        let bytes = batch.int64(VALUE_BYTES);
        let values = batch.text("value");
        // Rows come run by run, so one workflow holds for long stretches: its map is looked up
        // once per stretch.
        let mut i = 0;
        while i < batch.rows() {
            let workflow = workflows.value(i);
            let end = (i..batch.rows())
                .find(|j| workflows.value(*j) != workflow)
                .unwrap_or(batch.rows());
            if !self.0.contains_key(workflow) {
                self.0.insert(workflow.to_owned(), HashMap::new());
            }
            let cells = self.0.get_mut(workflow).expect("inserted above");
            for i in i..end {
                if !counts(
                    batch,
                    i,
                    workflow,
                    at(start, i, |c, i| c.value(i)),
                    scope,
                    deleted,
                ) {
                    continue;
                }
                let node = nodes.value(i);
                if !cells.contains_key(node) {
                    cells.insert(node.to_owned(), OutputCell::default());
                }
                let cell = cells.get_mut(node).expect("inserted above");
                cell.rows += 1;
                if let Some(p) = at(index, i, |c, i| i64::from(c.value(i))) {
                    let p = p as i32;
                    cell.position = min_of(cell.position, Some(p));
                }
                if let Some(t) = text_at(types, i)
                    && !cell.types.contains(t)
                {
                    cell.types.insert(t.to_owned());
                }
                let size = match bytes {
                    Some(_) => at(bytes, i, |c, i| c.value(i)),
                    None => text_at(values, i).map(|v| v.len() as i64),
                };
                if let Some(size) = size {
                    cell.sizes.push(size);
                }
            }
            i = end;
        }
    }

    /// `node_stats`: per workflow (by name) and node (in graph order).
    pub fn frame(mut self, names: &Names) -> PolarsResult<DataFrame> {
        for nodes in self.0.values_mut() {
            for cell in nodes.values_mut() {
                cell.sizes.sort();
            }
        }
        let mut rows = sorted_keys(&self.0, names);
        rows.sort_by(|a, b| {
            let name = |w: &String| (names.get(w).is_none(), names.get(w).cloned());
            name(a.0)
                .cmp(&name(b.0))
                .then_with(|| a.0.cmp(b.0))
                .then_with(|| a.2.position.cmp(&b.2.position))
                .then_with(|| a.1.cmp(b.1))
        });
        FrameBuilder::default()
            .text("workflow_id", rows.iter().map(|r| Some(r.0)).collect())
            .text("name", rows.iter().map(|r| names.get(r.0)).collect())
            .text("node", rows.iter().map(|r| Some(r.1)).collect())
            .int("rows", rows.iter().map(|r| r.2.rows).collect())
            .opt_int(
                "position",
                rows.iter().map(|r| r.2.position.map(i64::from)).collect(),
            )
            .text(
                "value_types",
                rows.iter()
                    .map(|r| Some(r.2.types.iter().cloned().collect::<Vec<_>>().join(",")))
                    .collect(),
            )
            .float(
                "output_bytes_p50",
                rows.iter().map(|r| r.2.sizes.quantile(0.5)).collect(),
            )
            .float(
                "output_bytes_p95",
                rows.iter().map(|r| r.2.sizes.quantile(0.95)).collect(),
            )
            .finish()
    }
}

/// The steps of one node of one workflow.
#[derive(Debug, Default)]
struct StepCell {
    steps: i64,
    failures: i64,
    durations: Samples,
    tokens: Samples,
    /// The newest failure: (start, error).
    sample_error: Option<(Option<i64>, String)>,
}

/// Step durations, failures and tokens per workflow and node, and tokens per day.
#[derive(Debug, Default)]
pub struct StepStats {
    nodes: ByNode<StepCell>,
    /// (day, workflow) → (steps, tokens).
    daily: BTreeMap<(i32, String), (i64, i64)>,
}

impl StepStats {
    /// Reads `steps`.
    pub fn read(data: &Files, scope: &Scope, deleted: &Deleted) -> Result<Self, ReportError> {
        let mut columns = vec![
            "workflow_id",
            "node_id",
            "status",
            "start_time",
            "duration_ms",
            "error",
            "tokens",
        ];
        if !deleted.is_empty() {
            columns.push("run_id");
        }
        scan::fold(
            data,
            "steps",
            &columns,
            &[],
            StepStats::default,
            |stats, batch| stats.add(batch, scope, deleted),
            |a, b| {
                let nodes = merge_maps(a.nodes, b.nodes, |mine, other| {
                    mine.steps += other.steps;
                    mine.failures += other.failures;
                    mine.durations.absorb(other.durations);
                    mine.tokens.absorb(other.tokens);
                    mine.sample_error = newest(mine.sample_error.take(), other.sample_error);
                });
                let mut daily = a.daily;
                for (key, (steps, tokens)) in b.daily {
                    let mine = daily.entry(key).or_default();
                    mine.0 += steps;
                    mine.1 += tokens;
                }
                StepStats { nodes, daily }
            },
        )
    }

    fn add(&mut self, batch: &Batch, scope: &Scope, deleted: &Deleted) {
        let Some(workflows) = batch.text("workflow_id") else {
            return;
        };
        let nodes = batch.text("node_id");
        let status = batch.text("status");
        let start = batch.micros("start_time");
        let duration = batch.int64("duration_ms");
        let tokens = batch.int64("tokens");
        let errors = batch.text("error");
        for i in 0..batch.rows() {
            let workflow = workflows.value(i);
            let start = at(start, i, |c, i| c.value(i));
            if !counts(batch, i, workflow, start, scope, deleted) {
                continue;
            }
            let node = text_at(nodes, i).unwrap_or(NO_NODE);
            let cell = cell_of(&mut self.nodes, workflow, node);
            cell.steps += 1;
            if let Some(d) = at(duration, i, |c, i| c.value(i)) {
                cell.durations.push(d);
            }
            let used = at(tokens, i, |c, i| c.value(i));
            if let Some(t) = used {
                cell.tokens.push(t);
            }
            if text_at(status, i) == Some("failed") {
                cell.failures += 1;
                if let Some(error) = text_at(errors, i) {
                    let sample = Some((start, error.to_owned()));
                    cell.sample_error = newest(cell.sample_error.take(), sample);
                }
            }
            if let Some(day) = start.map(day_of) {
                let daily = self.daily.entry((day, workflow.to_owned())).or_default();
                daily.0 += 1;
                daily.1 += used.unwrap_or(0);
            }
        }
    }

    fn sorted(&mut self) {
        for nodes in self.nodes.values_mut() {
            for cell in nodes.values_mut() {
                cell.durations.sort();
                cell.tokens.sort();
            }
        }
    }

    /// `slowest_nodes`: the slowest p95 first.
    pub fn slowest(&mut self, names: &Names) -> PolarsResult<DataFrame> {
        self.sorted();
        let mut rows = sorted_keys(&self.nodes, names);
        let p95 = |c: &StepCell| c.durations.quantile(0.95);
        rows.sort_by(|a, b| match (p95(a.2), p95(b.2)) {
            (Some(x), Some(y)) => y.total_cmp(&x),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        });
        let secs = |f: &dyn Fn(&Samples) -> Option<f64>| -> Vec<Option<f64>> {
            rows.iter()
                .map(|r| f(&r.2.durations).map(|ms| ms / 1000.0))
                .collect()
        };
        FrameBuilder::default()
            .text("workflow_id", rows.iter().map(|r| Some(r.0)).collect())
            .text("name", rows.iter().map(|r| names.get(r.0)).collect())
            .text("node_id", rows.iter().map(|r| node_name(r.1)).collect())
            .int("steps", rows.iter().map(|r| r.2.steps).collect())
            .float("p50_s", secs(&|s| s.quantile(0.5)))
            .float("p95_s", secs(&|s| s.quantile(0.95)))
            .float("max_s", secs(&|s| s.max().map(|v| v as f64)))
            .float("mean_s", secs(&|s| s.mean()))
            .float(
                "total_s",
                secs(&|s| (!s.is_empty()).then(|| s.sum() as f64)),
            )
            .finish()
    }

    /// `failing_nodes`: nodes with failed steps, the most failures first.
    pub fn failing(&self, names: &Names) -> PolarsResult<DataFrame> {
        let mut rows: Vec<_> = sorted_keys(&self.nodes, names)
            .into_iter()
            .filter(|r| r.2.failures > 0)
            .collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.2.failures));
        FrameBuilder::default()
            .text("workflow_id", rows.iter().map(|r| Some(r.0)).collect())
            .text("name", rows.iter().map(|r| names.get(r.0)).collect())
            .text("node_id", rows.iter().map(|r| node_name(r.1)).collect())
            .int("steps", rows.iter().map(|r| r.2.steps).collect())
            .int("failures", rows.iter().map(|r| r.2.failures).collect())
            .float(
                "failure_rate",
                rows.iter()
                    .map(|r| Some(r.2.failures as f64 / r.2.steps as f64))
                    .collect(),
            )
            .text(
                "sample_error",
                rows.iter()
                    .map(|r| r.2.sample_error.as_ref().map(|(_, e)| e.as_str()))
                    .collect(),
            )
            .finish()
    }

    /// `token_usage`: nodes that used tokens, the most first (with `cost` at `price` a million).
    pub fn tokens(&mut self, names: &Names, price: Option<f64>) -> PolarsResult<DataFrame> {
        self.sorted();
        let mut rows: Vec<_> = sorted_keys(&self.nodes, names)
            .into_iter()
            .filter(|r| r.2.tokens.sum() > 0)
            .collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.2.tokens.sum()));
        FrameBuilder::default()
            .text("workflow_id", rows.iter().map(|r| Some(r.0)).collect())
            .text("name", rows.iter().map(|r| names.get(r.0)).collect())
            .text("node_id", rows.iter().map(|r| node_name(r.1)).collect())
            .int("steps", rows.iter().map(|r| r.2.steps).collect())
            .int("tokens", rows.iter().map(|r| r.2.tokens.sum()).collect())
            .float(
                "tokens_per_step",
                rows.iter().map(|r| r.2.tokens.mean()).collect(),
            )
            .float(
                "tokens_p95",
                rows.iter().map(|r| r.2.tokens.quantile(0.95)).collect(),
            )
            .float(
                "cost",
                rows.iter().map(|r| cost(r.2.tokens.sum(), price)).collect(),
            )
            .finish()
    }

    /// `daily_tokens`: steps, tokens (and `cost` at `price` a million) per day and workflow.
    pub fn daily(&self, price: Option<f64>) -> PolarsResult<DataFrame> {
        let rows: Vec<_> = self.daily.iter().collect();
        FrameBuilder::default()
            .date("day", rows.iter().map(|((d, _), _)| *d).collect())
            .text(
                "workflow_id",
                rows.iter().map(|((_, w), _)| Some(w)).collect(),
            )
            .int("steps", rows.iter().map(|(_, (s, _))| *s).collect())
            .int("tokens", rows.iter().map(|(_, (_, t))| *t).collect())
            .float(
                "cost",
                rows.iter().map(|(_, (_, t))| cost(*t, price)).collect(),
            )
            .finish()
    }
}

/// What `tokens` cost at `price` a million (NULL without a price).
fn cost(tokens: i64, price: Option<f64>) -> Option<f64> {
    price.map(|p| tokens as f64 * p / 1e6)
}

/// The newer of two sampled failures (by start, then the smaller text, so any read order
/// picks the same).
fn newest(
    a: Option<(Option<i64>, String)>,
    b: Option<(Option<i64>, String)>,
) -> Option<(Option<i64>, String)> {
    match (a, b) {
        (Some(a), Some(b)) => Some(
            if (b.0, std::cmp::Reverse(&b.1)) > (a.0, std::cmp::Reverse(&a.1)) {
                b
            } else {
                a
            },
        ),
        (a, b) => a.or(b),
    }
}
