//! The rows one run adds to `runs`, `node_outputs` and `run_inputs`: every cell is prepared
//! (and every value checked storable) before anything is appended, so a record that turns out
//! unusable halfway leaves the builders as they were.

use std::borrow::Cow;

use super::PageContext;
use super::cell::{self, Cell, Unusable};
use super::raw::{self, RawRecord};
use super::run::RunFields;
use arrow::array::StringBuilder;

use crate::table::{NodeOutputsRows, PartitionDate, PartitionRows, RunInputsRows, RunsRows};

/// Fields with a column of their own; every other field is only checked to be storable.
const CELL_FIELDS: [&str; 5] = ["status", "error", "outputs", "all_outputs", "inputs"];

/// One entry of `all_outputs` or `inputs`.
pub(super) struct Entry<'a> {
    pub(super) name: Cow<'a, str>,
    pub(super) value_type: &'static str,
    pub(super) value: Cell<'a>,
}

/// The cells of one run's rows.
pub(super) struct RunCells<'a> {
    status: Cell<'a>,
    pub(super) error: Cell<'a>,
    /// The JSON type of `error` (`string`, `object`, …).
    pub(super) error_type: &'static str,
    pub(super) outputs: Cell<'a>,
    /// The JSON type of `outputs`.
    pub(super) outputs_type: &'static str,
    /// `runs.inputs`: compact JSON whatever the type (a string input is quoted).
    pub(super) inputs: Cell<'a>,
    pub(super) nodes: Vec<Entry<'a>>,
    pub(super) inputs_rows: Vec<Entry<'a>>,
}

impl<'a> RunCells<'a> {
    /// The cells of `record`'s rows; `Err` when some value in it cannot be stored as it is.
    pub(super) fn prepare(record: &RawRecord<'a>) -> Result<Self, Unusable> {
        for (key, raw) in &record.fields {
            if !CELL_FIELDS.contains(&&**key) {
                Cell::of(raw)?;
            }
        }
        let cell = |name: &str| record.get(name).map_or(Ok(Cell::Null), Cell::of);
        let inputs = match record.get("inputs") {
            None => Cell::Null,
            Some(raw) if raw.starts_with('"') => {
                let content = cell::string_of(raw).ok_or(Unusable)?;
                Cell::Parsed(serde_json::Value::String(content.into_owned()))
            }
            Some(raw) => Cell::of(raw)?,
        };
        let json_type = |name: &str| record.get(name).map_or("null", cell::json_type_of);
        Ok(Self {
            status: cell("status")?,
            error: cell("error")?,
            error_type: json_type("error"),
            outputs: cell("outputs")?,
            outputs_type: json_type("outputs"),
            inputs,
            nodes: entries(record.get("all_outputs"))?,
            inputs_rows: entries(record.get("inputs"))?,
        })
    }
}

/// The entries of an object's raw text (none when it is not an object).
fn entries(raw: Option<&str>) -> Result<Vec<Entry<'_>>, Unusable> {
    let Some(raw) = raw.filter(|r| r.starts_with('{')) else {
        return Ok(Vec::new());
    };
    raw::entries(raw)
        .ok_or(Unusable)?
        .into_iter()
        .map(|(name, value)| {
            Ok(Entry {
                name,
                value_type: cell::json_type_of(value),
                value: Cell::of(value)?,
            })
        })
        .collect()
}

/// The rows of one partition's runs, each builder sized for them up front.
pub(super) fn build<'a>(
    date: PartitionDate,
    runs: &[(RunFields, RunCells<'a>)],
    ctx: PageContext<'_>,
) -> PartitionRows {
    let nodes: usize = runs.iter().map(|(_, c)| c.nodes.len()).sum();
    let inputs: usize = runs.iter().map(|(_, c)| c.inputs_rows.len()).sum();
    let text = |cell: for<'c> fn(&'c RunCells<'a>) -> &'c Cell<'a>| -> usize {
        runs.iter().map(|(_, c)| cell(c).len_hint()).sum()
    };
    let entries = |list: for<'c> fn(&'c RunCells<'a>) -> &'c [Entry<'a>]| -> usize {
        runs.iter()
            .flat_map(|(_, c)| list(c))
            .map(|e| e.value.len_hint())
            .sum()
    };
    let mut r = RunsRows::with_rows(runs.len());
    r.error = StringBuilder::with_capacity(runs.len(), text(|c| &c.error));
    r.outputs = StringBuilder::with_capacity(runs.len(), text(|c| &c.outputs));
    r.inputs = StringBuilder::with_capacity(runs.len(), text(|c| &c.inputs));
    let mut n = NodeOutputsRows::with_rows(nodes);
    n.value = StringBuilder::with_capacity(nodes, entries(|c| &c.nodes));
    let mut i = RunInputsRows::with_rows(inputs);
    i.value = StringBuilder::with_capacity(inputs, entries(|c| &c.inputs_rows));
    for (run, cells) in runs {
        push_run(&mut r, run, cells, ctx);
        push_nodes(&mut n, run, &cells.nodes, ctx);
        push_inputs(&mut i, run, &cells.inputs_rows, ctx);
    }
    PartitionRows {
        date,
        runs: r.finish(),
        node_outputs: n.finish(),
        run_inputs: i.finish(),
    }
}

fn push_run(r: &mut RunsRows, run: &RunFields, cells: &RunCells<'_>, ctx: PageContext<'_>) {
    r.workflow_id.append_value(ctx.workflow_id);
    r.run_id.append_value(&run.id);
    cells.status.append(&mut r.status);
    r.start_time.append_option(run.start_time);
    r.end_time.append_option(run.end_time);
    r.elapsed_time.append_option(run.elapsed_time);
    r.duration_ms.append_option(run.duration_ms());
    cells.error.append(&mut r.error);
    cells.outputs.append(&mut r.outputs);
    r.node_count
        .append_value(i32::try_from(cells.nodes.len()).unwrap_or(i32::MAX));
    cells.inputs.append(&mut r.inputs);
    r.extracted_at.append_value(ctx.extracted_at_us);
    // Fetched now, so it exists upstream.
    r.deleted_upstream_at.append_null();
}

fn push_nodes(n: &mut NodeOutputsRows, run: &RunFields, nodes: &[Entry<'_>], ctx: PageContext<'_>) {
    for (index, entry) in nodes.iter().enumerate() {
        n.workflow_id.append_value(ctx.workflow_id);
        n.run_id.append_value(&run.id);
        n.start_time.append_option(run.start_time);
        n.node.append_value(&entry.name);
        n.node_index
            .append_value(i32::try_from(index).unwrap_or(i32::MAX));
        n.value_type.append_value(entry.value_type);
        let before = n.value.values_slice().len();
        entry.value.append(&mut n.value);
        if matches!(entry.value, Cell::Null) {
            n.value_bytes.append_null();
        } else {
            let bytes = n.value.values_slice().len() - before;
            n.value_bytes
                .append_value(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
    }
}

fn push_inputs(i: &mut RunInputsRows, run: &RunFields, inputs: &[Entry<'_>], ctx: PageContext<'_>) {
    for entry in inputs {
        i.workflow_id.append_value(ctx.workflow_id);
        i.run_id.append_value(&run.id);
        i.start_time.append_option(run.start_time);
        i.name.append_value(&entry.name);
        i.value_type.append_value(entry.value_type);
        entry.value.append(&mut i.value);
    }
}
