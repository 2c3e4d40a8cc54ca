//! Flatten: one page of the run-history API (a JSON array) into Arrow record batches.
//!
//! This module owns the mapping from the wire format to the dataset's tables — every column of
//! `runs`, `node_outputs` and `run_inputs` is produced here, in `RowsBuilder` — and the rules for
//! records that cannot be runs (they become [`Rejected`] entries with a reason). It is pure and
//! synchronous: no I/O, no async, no knowledge of files or partitions' storage. Callers run it on
//! rayon threads, off the async runtime. It never panics on any input.
//!
//! Value encoding, shared by every JSON-valued column: a JSON string is stored verbatim (unescaped),
//! JSON `null` is SQL NULL, and any other value is stored as compact JSON text with its object key
//! order kept. A `value_type` column names the JSON type (`string`, `object`, `array`, `number`,
//! `boolean`, `null`).
//!
//! Bad input, record by record (a page is an error only when it is not a JSON array at all — see
//! [`PageError`] — since then its records are unknown; the caller retries or fails the workflow):
//! - **Quarantined** to `_rejected/` (`kept: false`), the record's text kept as a JSON string: an
//!   element that is not valid JSON on its own (`"\ud800"`, a lone surrogate), one holding bytes
//!   that are not UTF-8 (U+FFFD in their place), one repeating a key at any depth (a `Value` would
//!   keep only the last: the reason names the key's path, e.g. `all_outputs.node_a`). Parsed but
//!   not a run, the record is kept as parsed: not an object, or an `id` missing, null, empty or
//!   neither a string nor a number.
//! - **Kept with a trace** (`kept: true` in `_rejected/`, the run also in the tables): a
//!   `start_time`/`end_time` that is not a timestamp in a form [`parse_timestamp`] reads, or not a
//!   string; an `elapsed_time` that is not a number or numeric string of seconds (`"abc"`, `true`,
//!   `1e400`) — these are stored as NULL and counted in [`FlatPage::unreadable_values`] and per
//!   field — and an `all_outputs` that is present but neither an object nor null (no
//!   `node_outputs` rows; there is no column to hold it). The reason lists each field and its
//!   original value.
//! - **Kept as sent**: unknown `status` values (any JSON: strings verbatim, others compact JSON);
//!   `elapsed_time` 12.7 or `"12"` (whole seconds, truncated toward zero); missing or null fields
//!   (NULL; `node_count` 0); `inputs` that is not an object (kept in `runs.inputs` as compact JSON,
//!   no `run_inputs` rows); `outputs` of any type; strings of any size, byte for byte.

mod dupkeys;
mod page;
mod steps;
mod strict;
mod time;
mod workflows;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Int32Builder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::compute::filter_record_batch;
use serde_json::Value;

use crate::dataset::schema::{self, PartitionDate};
use page::Element;
pub use steps::flatten_steps;
pub use time::{format_timestamp, parse_timestamp};
pub use workflows::{WorkflowList, flatten_workflows};

/// Why a page could not be flattened at all (the records in it are unknown).
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// The body is not valid JSON.
    #[error("response is not valid JSON (line {line}, column {column}): {message}")]
    Malformed {
        line: usize,
        column: usize,
        message: String,
    },
    /// The body is JSON, but not the array of runs the API documents.
    #[error("expected a JSON array of runs, got {found}")]
    NotAnArray { found: &'static str },
}

/// Where a page came from; stamped on every row and rejected record.
#[derive(Debug, Clone, Copy)]
pub struct PageContext<'a> {
    /// The workflow whose history this page is.
    pub workflow_id: &'a str,
    /// The `offset` the page was requested at.
    pub offset: u64,
    /// When the page was received, microseconds since the Unix epoch (UTC).
    pub extracted_at_us: i64,
}

/// A record that cannot be a run, kept with the reason so nothing is silently dropped.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// Workflow the page belonged to.
    pub workflow_id: String,
    /// Offset of the page.
    pub offset: u64,
    /// Position of the record inside the page.
    pub index: usize,
    /// Human-readable reason, e.g. "`id` is missing".
    pub reason: String,
    /// The record as parsed, or its text as a JSON string when it could not be parsed whole.
    pub record: Value,
    /// Whether the run is in the tables all the same (with the values the reason lists stored as
    /// NULL or not flattened); `false` for records quarantined instead of written.
    pub kept: bool,
}

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

/// Statuses of runs that have not reached a final state.
const UNFINISHED_STATUSES: [&str; 3] = ["running", "queued", "pending"];

/// What paging and state need to know about one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunInfo {
    /// The run id.
    pub id: String,
    /// Its start, microseconds since the epoch (UTC).
    pub start_time: Option<i64>,
    /// Whether it reached a final state: it has an `end_time` and is not running, queued or
    /// pending.
    pub finished: bool,
}

impl RunInfo {
    /// The partition the run's rows are in.
    pub fn date(&self) -> PartitionDate {
        PartitionDate::from_micros(self.start_time)
    }
}

/// A flattened page.
#[derive(Debug, Default)]
pub struct FlatPage {
    /// How many records the page held (runs and rejected alike): drives paging.
    pub record_count: usize,
    /// The runs accepted from this page, in page order.
    pub runs: Vec<RunInfo>,
    /// Rows grouped by partition.
    pub partitions: Vec<PartitionRows>,
    /// Records that could not be runs.
    pub rejected: Vec<Rejected>,
    /// Values present but unreadable as their column's type (timestamps and numbers stored as
    /// NULL, `all_outputs` not flattened), in runs kept.
    pub unreadable_values: usize,
    /// [`Self::unreadable_values`] per field name.
    pub unreadable_fields: BTreeMap<&'static str, usize>,
    /// Records repeating a run id seen earlier in the same page (the first one is kept).
    pub duplicates: usize,
    /// A fingerprint of each record, in page order: its run id's ([`id_key`]), or its text's
    /// when it has no usable id. Paging uses them to check that consecutive pages join up.
    pub keys: Vec<u128>,
    /// Each record's start time when it is a run with a readable one, in page order (the
    /// same length as `keys`): paging tells runs that arrived from runs that slid by it.
    pub starts: Vec<Option<i64>>,
    /// Whether each record has a usable run id (its key is the id's), in page order.
    pub has_id: Vec<bool>,
}

impl FlatPage {
    /// Rows in the `runs` table across partitions.
    pub fn run_rows(&self) -> usize {
        self.partitions.iter().map(|p| p.runs.num_rows()).sum()
    }

    /// Removes the runs whose id `drop` selects, and their child rows, from every table.
    pub fn drop_runs(&mut self, drop: impl Fn(&str) -> bool) {
        self.runs.retain(|run| !drop(&run.id));
        for part in &mut self.partitions {
            part.runs = filter_by_run_id(&part.runs, &drop);
            part.node_outputs = filter_by_run_id(&part.node_outputs, &drop);
            part.run_inputs = filter_by_run_id(&part.run_inputs, &drop);
        }
        self.partitions.retain(|p| p.runs.num_rows() > 0);
    }
}

fn filter_by_run_id(batch: &RecordBatch, drop: &impl Fn(&str) -> bool) -> RecordBatch {
    let ids = batch
        .column_by_name("run_id")
        .and_then(|c| c.as_any().downcast_ref::<arrow::array::StringArray>())
        .expect("every table has a non-null utf8 run_id column");
    let keep: BooleanArray = ids.iter().map(|id| Some(!drop(id.unwrap_or("")))).collect();
    // Usually nothing is dropped, or only the page's first run (the record that overlaps the
    // previous page): keep those without copying the batch.
    let dropped_prefix = keep.values().iter().take_while(|k| !k).count();
    if keep.values().iter().skip(dropped_prefix).all(|k| k) {
        return batch.slice(dropped_prefix, batch.num_rows() - dropped_prefix);
    }
    filter_record_batch(batch, &keep).expect("filtering a batch by a mask of its own length")
}

/// A set of record fingerprints ([`id_key`]); they are hashes already, so the set folds them
/// instead of hashing them again.
pub type KeySet = HashSet<u128, std::hash::BuildHasherDefault<FingerprintHasher>>;

/// The hasher of [`KeySet`]: folds a 128-bit fingerprint to 64 bits.
#[derive(Default)]
pub struct FingerprintHasher(u64);

impl std::hash::Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used by `u128` keys; kept correct for any other input.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u128(&mut self, n: u128) {
        self.0 = (n as u64) ^ ((n >> 64) as u64);
    }
}

/// A 128-bit fingerprint of a run id: exact-set semantics at a fraction of the memory of the ids.
pub fn id_key(id: &str) -> u128 {
    fingerprint(0, id)
}

/// The fingerprint of a record without a usable id, from its text.
fn text_key(text: &str) -> u128 {
    fingerprint(2, text)
}

fn fingerprint(salt: u8, text: &str) -> u128 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let half = |salt: u8| {
        let mut h = DefaultHasher::new();
        salt.hash(&mut h);
        text.hash(&mut h);
        h.finish()
    };
    (u128::from(half(salt)) << 64) | u128::from(half(salt + 1))
}

/// Flattens one page body (the bytes of a `GET /workflows/{id}/runs` response).
pub fn flatten_page(body: &[u8], ctx: PageContext<'_>) -> Result<FlatPage, PageError> {
    Ok(flatten_elements(page::split_page(body)?, ctx))
}

/// Flattens already-parsed records (one page's worth).
pub fn flatten_records(records: Vec<Value>, ctx: PageContext<'_>) -> FlatPage {
    flatten_elements(records.into_iter().map(Element::Record).collect(), ctx)
}

fn flatten_elements(elements: Vec<Element>, ctx: PageContext<'_>) -> FlatPage {
    let mut out = FlatPage {
        record_count: elements.len(),
        ..FlatPage::default()
    };
    // BTreeMap keeps partitions in date order, so output is deterministic.
    let mut by_date: BTreeMap<PartitionDate, RowsBuilder> = BTreeMap::new();
    let mut ids_in_page: HashSet<String> = HashSet::new();
    for (index, element) in elements.into_iter().enumerate() {
        let reject = |reason: String, record: Value, kept: bool| Rejected {
            workflow_id: ctx.workflow_id.to_owned(),
            offset: ctx.offset,
            index,
            reason,
            record,
            kept,
        };
        let record = match element {
            Element::Record(record) => record,
            Element::Quarantined { reason, text } => {
                out.keys.push(text_key(&text));
                out.starts.push(None);
                out.has_id.push(false);
                out.rejected
                    .push(reject(reason, Value::String(text), false));
                continue;
            }
        };
        let run = match RunFields::from_record(&record) {
            Ok(run) => run,
            Err(reason) => {
                out.keys.push(text_key(&record.to_string()));
                out.starts.push(None);
                out.has_id.push(false);
                out.rejected.push(reject(reason, record, false));
                continue;
            }
        };
        out.keys.push(id_key(&run.id));
        out.starts.push(run.start_time);
        out.has_id.push(true);
        if !ids_in_page.insert(run.id.clone()) {
            out.duplicates += 1;
            continue;
        }
        out.count_unreadable(&run.unreadable);
        if let Some(reason) = run.unreadable_reason() {
            out.rejected.push(reject(reason, record.clone(), true));
        }
        let status = record.get("status").and_then(Value::as_str);
        out.runs.push(RunInfo {
            id: run.id.clone(),
            start_time: run.start_time,
            finished: run.end_time.is_some()
                && !status.is_some_and(|s| UNFINISHED_STATUSES.contains(&s)),
        });
        by_date
            .entry(PartitionDate::from_micros(run.start_time))
            .or_default()
            .push(&run, &record, ctx);
    }
    out.partitions = by_date
        .into_iter()
        .map(|(date, rows)| rows.finish(date))
        .collect();
    out
}

impl FlatPage {
    fn count_unreadable(&mut self, unreadable: &[Unreadable]) {
        self.unreadable_values += unreadable.len();
        for u in unreadable {
            *self.unreadable_fields.entry(u.field).or_default() += 1;
        }
    }
}

/// A value present in a kept run but not readable as its column's type.
struct Unreadable {
    field: &'static str,
    /// What was expected, e.g. "is not a timestamp (stored as NULL)".
    problem: String,
    /// The value as sent, compact JSON, shortened.
    original: String,
}

impl Unreadable {
    /// Longest original value quoted in a reason; the record in `_rejected/` has it whole.
    const MAX_QUOTED_CHARS: usize = 120;

    fn new(field: &'static str, problem: impl Into<String>, value: &Value) -> Self {
        let mut original = value.to_string();
        if let Some((cut, _)) = original.char_indices().nth(Self::MAX_QUOTED_CHARS) {
            original.truncate(cut);
            original.push('…');
        }
        Self {
            field,
            problem: problem.into(),
            original,
        }
    }
}

/// The scalar fields of one run, decoded from a record.
struct RunFields {
    id: String,
    start_time: Option<i64>,
    end_time: Option<i64>,
    elapsed_time: Option<i64>,
    unreadable: Vec<Unreadable>,
}

impl RunFields {
    fn from_record(record: &Value) -> Result<Self, String> {
        let Value::Object(map) = record else {
            return Err(format!(
                "record is a JSON {}, not an object",
                json_type(record)
            ));
        };
        let id = match map.get("id") {
            None => return Err("`id` is missing".to_owned()),
            Some(Value::Null) => return Err("`id` is null".to_owned()),
            Some(Value::String(s)) if s.is_empty() => return Err("`id` is empty".to_owned()),
            // URLs drop such segments: `…/runs/../steps` would be `…/steps`.
            Some(Value::String(s)) if s == "." || s == ".." => {
                return Err(format!("`id` is `{s}`, which cannot be a URL path segment"));
            }
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(other) => return Err(format!("`id` is a JSON {}", json_type(other))),
        };
        let mut unreadable = Vec::new();
        let mut timestamp = |field: &'static str| {
            let value = map.get(field).filter(|v| !v.is_null())?;
            let parsed = value.as_str().and_then(parse_timestamp);
            if parsed.is_none() {
                unreadable.push(Unreadable::new(
                    field,
                    "is not a timestamp (stored as NULL)",
                    value,
                ));
            }
            parsed
        };
        let start_time = timestamp("start_time");
        let end_time = timestamp("end_time");
        let elapsed_time = map
            .get("elapsed_time")
            .filter(|v| !v.is_null())
            .and_then(|value| {
                let parsed = integer_seconds(value);
                if parsed.is_none() {
                    unreadable.push(Unreadable::new(
                        "elapsed_time",
                        "is not a number of seconds (stored as NULL)",
                        value,
                    ));
                }
                parsed
            });
        match map.get("all_outputs") {
            None | Some(Value::Null | Value::Object(_)) => {}
            Some(other) => unreadable.push(Unreadable::new(
                "all_outputs",
                format!(
                    "is a JSON {}, not an object (no node_outputs rows)",
                    json_type(other)
                ),
                other,
            )),
        }
        Ok(Self {
            id,
            start_time,
            end_time,
            elapsed_time,
            unreadable,
        })
    }

    /// Why the run is also listed in `_rejected/`, when some of its values were not readable.
    fn unreadable_reason(&self) -> Option<String> {
        if self.unreadable.is_empty() {
            return None;
        }
        let notes: Vec<String> = self
            .unreadable
            .iter()
            .map(|u| format!("`{}` {}: {}", u.field, u.problem, u.original))
            .collect();
        Some(format!("kept with unreadable values: {}", notes.join("; ")))
    }

    /// End minus start in whole milliseconds (truncated), when both are known.
    fn duration_ms(&self) -> Option<i64> {
        Some(self.end_time?.checked_sub(self.start_time?)? / 1000)
    }
}

/// Whole seconds from a JSON number or numeric string; fractions are truncated toward zero.
fn integer_seconds(v: &Value) -> Option<i64> {
    let float = match v {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                return Some(i);
            }
            n.as_f64()?
        }
        Value::String(s) => {
            let s = s.trim();
            if let Ok(i) = s.parse::<i64>() {
                return Some(i);
            }
            s.parse::<f64>().ok()?
        }
        _ => return None,
    };
    // `as` saturates; reject values that do not fit rather than storing a clamped number.
    (float.is_finite() && float.abs() < 9.2e18).then(|| float.trunc() as i64)
}

/// The JSON type name used in `value_type` columns and messages.
pub fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Appends a JSON value with the shared encoding: strings verbatim, null as NULL, else compact JSON.
fn append_json(builder: &mut StringBuilder, v: Option<&Value>) {
    match v {
        None | Some(Value::Null) => builder.append_null(),
        Some(Value::String(s)) => builder.append_value(s),
        Some(other) => append_compact(builder, other),
    }
}

/// Appends `v` as compact JSON, serialized straight into the column's buffer.
fn append_compact(builder: &mut StringBuilder, v: &Value) {
    use std::fmt::Write as _;
    // Writing to a string builder cannot fail; `append_value("")` ends the value written.
    let _ = write!(builder, "{v}");
    builder.append_value("");
}

/// Column builders for the three tables of one partition.
#[derive(Default)]
struct RowsBuilder {
    runs: RunsColumns,
    nodes: ChildColumns,
    inputs: ChildColumns,
}

#[derive(Default)]
struct RunsColumns {
    workflow_id: StringBuilder,
    run_id: StringBuilder,
    status: StringBuilder,
    start_time: TimestampMicrosecondBuilder,
    end_time: TimestampMicrosecondBuilder,
    elapsed_time: Int64Builder,
    duration_ms: Int64Builder,
    error: StringBuilder,
    outputs: StringBuilder,
    node_count: Int32Builder,
    inputs: StringBuilder,
    extracted_at: TimestampMicrosecondBuilder,
}

/// Columns of `node_outputs` and `run_inputs`; `position` is `node_index` (inputs have none).
#[derive(Default)]
struct ChildColumns {
    workflow_id: StringBuilder,
    run_id: StringBuilder,
    start_time: TimestampMicrosecondBuilder,
    name: StringBuilder,
    position: Int32Builder,
    value_type: StringBuilder,
    value: StringBuilder,
}

impl ChildColumns {
    /// Appends one row per entry of `obj` (nothing when it is not an object).
    fn push_entries(&mut self, run: &RunFields, obj: Option<&Value>, ctx: PageContext<'_>) {
        let Some(Value::Object(map)) = obj else {
            return;
        };
        for (index, (name, value)) in map.iter().enumerate() {
            self.workflow_id.append_value(ctx.workflow_id);
            self.run_id.append_value(&run.id);
            self.start_time.append_option(run.start_time);
            self.name.append_value(name);
            self.position
                .append_value(i32::try_from(index).unwrap_or(i32::MAX));
            self.value_type.append_value(json_type(value));
            append_json(&mut self.value, Some(value));
        }
    }

    fn finish(mut self, schema: arrow::datatypes::SchemaRef, with_position: bool) -> RecordBatch {
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.workflow_id.finish()),
            Arc::new(self.run_id.finish()),
            Arc::new(self.start_time.finish().with_timezone(schema::UTC)),
            Arc::new(self.name.finish()),
        ];
        if with_position {
            columns.push(Arc::new(self.position.finish()));
        }
        columns.push(Arc::new(self.value_type.finish()));
        columns.push(Arc::new(self.value.finish()));
        RecordBatch::try_new(schema, columns).expect("child columns match their schema")
    }
}

impl RowsBuilder {
    fn push(&mut self, run: &RunFields, record: &Value, ctx: PageContext<'_>) {
        let field = |name: &str| record.get(name);
        let all_outputs = field("all_outputs");
        let r = &mut self.runs;
        r.workflow_id.append_value(ctx.workflow_id);
        r.run_id.append_value(&run.id);
        append_json(&mut r.status, field("status"));
        r.start_time.append_option(run.start_time);
        r.end_time.append_option(run.end_time);
        r.elapsed_time.append_option(run.elapsed_time);
        r.duration_ms.append_option(run.duration_ms());
        append_json(&mut r.error, field("error"));
        append_json(&mut r.outputs, field("outputs"));
        let node_count = match all_outputs {
            Some(Value::Object(m)) => m.len(),
            _ => 0,
        };
        r.node_count
            .append_value(i32::try_from(node_count).unwrap_or(i32::MAX));
        match field("inputs") {
            None | Some(Value::Null) => r.inputs.append_null(),
            Some(v) => append_compact(&mut r.inputs, v),
        }
        r.extracted_at.append_value(ctx.extracted_at_us);
        self.nodes.push_entries(run, all_outputs, ctx);
        self.inputs.push_entries(run, field("inputs"), ctx);
    }

    fn finish(self, date: PartitionDate) -> PartitionRows {
        let mut r = self.runs;
        let rows = arrow::array::ArrayBuilder::len(&r.run_id);
        let utc =
            |b: &mut TimestampMicrosecondBuilder| Arc::new(b.finish().with_timezone(schema::UTC));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(r.workflow_id.finish()),
            Arc::new(r.run_id.finish()),
            Arc::new(r.status.finish()),
            utc(&mut r.start_time),
            utc(&mut r.end_time),
            Arc::new(r.elapsed_time.finish()),
            Arc::new(r.duration_ms.finish()),
            Arc::new(r.error.finish()),
            Arc::new(r.outputs.finish()),
            Arc::new(r.node_count.finish()),
            Arc::new(r.inputs.finish()),
            utc(&mut r.extracted_at),
            // Fetched now, so it exists upstream.
            arrow::array::new_null_array(
                &arrow::datatypes::DataType::Timestamp(
                    arrow::datatypes::TimeUnit::Microsecond,
                    Some(schema::UTC.into()),
                ),
                rows,
            ),
        ];
        PartitionRows {
            date,
            runs: RecordBatch::try_new(schema::runs(), columns).expect("runs columns match schema"),
            node_outputs: self.nodes.finish(schema::node_outputs(), true),
            run_inputs: self.inputs.finish(schema::run_inputs(), false),
        }
    }
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
