//! Flatten: one page of the run-history API (a JSON array) into Arrow record batches.
//!
//! This module owns the mapping from the wire format to the dataset's tables — every column of
//! `runs`, `node_outputs` and `run_inputs` is filled here (`rows.rs`, into the typed builders of
//! [`crate::table`]) — and the rules for records that cannot be runs (they become [`Rejected`]
//! entries with a reason). It is pure and synchronous: no I/O, no async, no knowledge of files or
//! partitions' storage. Callers run it on rayon threads, off the async runtime. It never panics
//! on any input.
//!
//! No `Value` tree is built for a clean page: one `serde_json` pass splits it into records and
//! fields borrowed from the body (`raw.rs`), and each value is written into its column straight
//! from those bytes — strings unescaped into the builder, nested values kept as their own text
//! when it is already compact JSON (`cell.rs`). A page this pass cannot take whole (a record that
//! is not an object, a repeated key, bytes that are not UTF-8, a lone surrogate) goes the
//! record-by-record way (`page.rs`), which names what is wrong; both ways store the same bytes
//! (the fuzz suite checks it on reformatted and re-escaped pages).
//!
//! The field policy ([`PageContext::policy`], see [`crate::privacy`]) is applied here, to each
//! run's cells before they are appended and to each rejected record (`protect.rs`): no value
//! leaves this module unprotected. With no rule the step is skipped.
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

mod cell;
mod dupkeys;
mod page;
mod protect;
mod raw;
mod rows;
mod run;
mod steps;
mod strict;
mod time;
mod workflows;

use std::collections::{BTreeMap, HashSet};

use arrow::array::{BooleanArray, RecordBatch, StringBuilder};
use arrow::compute::filter_record_batch;
use serde_json::Value;

use crate::privacy::Policy;
use crate::table::{PartitionDate, PartitionRows};
use cell::Unusable;
use page::Element;
use raw::RawRecord;
use rows::RunCells;
use run::RunFields;
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
    /// The field policy applied to every value before it is stored ([`Policy::none`]: none).
    pub policy: &'a Policy,
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
    /// What the privacy policy's rules replaced in it: replaced in its steps too.
    pub hidden: crate::privacy::Hidden,
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
///
/// A clean page — every element an object, nothing repeated, every value storable — is read in
/// one borrowing pass; any other is split into its elements and each is parsed on its
/// own, so one bad record is named and quarantined and the rest are kept. Both ways
/// give the same rows for the same records.
pub fn flatten_page(body: &[u8], ctx: PageContext<'_>) -> Result<FlatPage, PageError> {
    if let Some(records) = raw::page_records(body) {
        let items = records.into_iter().map(Item::Record);
        if let Ok(page) = flatten_items(items, ctx, OnUnusable::GiveUp) {
            return Ok(page);
        }
    }
    flatten_one_by_one(body, ctx)
}

/// The record-by-record path alone (the fuzz suite compares it with the one-pass path).
fn flatten_one_by_one(body: &[u8], ctx: PageContext<'_>) -> Result<FlatPage, PageError> {
    let decoded = page::Decoded::new(body);
    let items = page::split(&decoded)?
        .into_iter()
        .map(|element| match element {
            Element::Record(record) => Item::Record(record),
            Element::NotAnObject(value) => Item::NotAnObject(value),
            Element::Quarantined { reason, text } => Item::Quarantined { reason, text },
        });
    // Records split one by one were checked by a full parse, so quarantining is only a guard.
    Ok(flatten_items(items, ctx, OnUnusable::Quarantine).unwrap_or_default())
}

/// What to do with a record holding a value that cannot be stored as it is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum OnUnusable {
    /// Stop: the page goes to the record-by-record path, which names the problem.
    GiveUp,
    /// Quarantine the record (the record-by-record path, where it should not happen).
    Quarantine,
}

/// One element of a page, as the flattener sees it.
enum Item<'a> {
    /// A JSON object (it may still be unusable as a run).
    Record(RawRecord<'a>),
    /// Valid JSON, but not an object.
    NotAnObject(Value),
    /// Not parseable without losing something.
    Quarantined { reason: String, text: String },
}

/// Flattens the items of one page; with [`OnUnusable::GiveUp`], `Err` as soon as a record holds
/// a value that cannot be stored as it is.
fn flatten_items<'a>(
    items: impl ExactSizeIterator<Item = Item<'a>>,
    ctx: PageContext<'_>,
    on_unusable: OnUnusable,
) -> Result<FlatPage, Unusable> {
    let mut out = FlatPage {
        record_count: items.len(),
        ..FlatPage::default()
    };
    // BTreeMap keeps partitions in date order, so output is deterministic.
    let mut by_date: BTreeMap<PartitionDate, Vec<(RunFields, RunCells<'a>)>> = BTreeMap::new();
    let mut ids_in_page: HashSet<String> = HashSet::new();
    for (index, item) in items.enumerate() {
        let reject = |reason: String, record: Value, kept: bool| Rejected {
            workflow_id: ctx.workflow_id.to_owned(),
            offset: ctx.offset,
            index,
            reason,
            record,
            kept,
        };
        let record = match item {
            Item::Record(record) => record,
            Item::Quarantined { reason, text } => {
                out.push_unkeyed(text_key(&text));
                out.rejected
                    .push(reject(reason, Value::String(text), false));
                continue;
            }
            Item::NotAnObject(value) => {
                let reason = format!("record is a JSON {}, not an object", json_type(&value));
                out.push_unkeyed(text_key(&value.to_string()));
                out.rejected.push(reject(reason, value, false));
                continue;
            }
        };
        let checked = RunFields::from_record(&record).and_then(|run| {
            let cells = RunCells::prepare(&record)?;
            Ok((run, cells))
        });
        let (run, mut cells) = match checked {
            Ok((Ok(run), cells)) => (run, cells),
            Ok((Err(reason), _)) => {
                let value = record.to_value();
                out.push_unkeyed(text_key(&value.to_string()));
                out.rejected.push(reject(reason, value, false));
                continue;
            }
            Err(Unusable) if on_unusable == OnUnusable::Quarantine => {
                let text = record.to_value().to_string();
                out.push_unkeyed(text_key(&text));
                let reason = "record holds a value that cannot be stored".to_owned();
                out.rejected
                    .push(reject(reason, Value::String(text), false));
                continue;
            }
            Err(Unusable) => return Err(Unusable),
        };
        out.keys.push(id_key(&run.id));
        out.starts.push(run.start_time);
        out.has_id.push(true);
        if !ids_in_page.insert(run.id.clone()) {
            out.duplicates += 1;
            continue;
        }
        let hidden = if ctx.policy.is_empty() {
            crate::privacy::Hidden::default()
        } else {
            protect::protect_cells(&mut cells, ctx.policy)
        };
        out.count_unreadable(&run);
        if let Some(reason) = run.unreadable_reason(|t| ctx.policy.masker().mask(t).into_owned()) {
            out.rejected.push(reject(reason, record.to_value(), true));
        }
        let status = record.get("status").and_then(cell::string_of);
        out.runs.push(RunInfo {
            id: run.id.clone(),
            start_time: run.start_time,
            finished: run.end_time.is_some()
                && !status.is_some_and(|s| UNFINISHED_STATUSES.contains(&&*s)),
            hidden,
        });
        by_date
            .entry(PartitionDate::from_micros(run.start_time))
            .or_default()
            .push((run, cells));
    }
    for rejected in &mut out.rejected {
        protect::protect_rejected(rejected, ctx.policy);
    }
    out.partitions = by_date
        .into_iter()
        .map(|(date, runs)| rows::build(date, &runs, ctx))
        .collect();
    Ok(out)
}

impl FlatPage {
    fn count_unreadable(&mut self, run: &RunFields) {
        self.unreadable_values += run.unreadable.len();
        for u in &run.unreadable {
            *self.unreadable_fields.entry(u.field).or_default() += 1;
        }
    }

    /// Records a record without a usable id: its key is its text's.
    fn push_unkeyed(&mut self, key: u128) {
        self.keys.push(key);
        self.starts.push(None);
        self.has_id.push(false);
    }
}

/// Whole seconds from a JSON number or numeric string; fractions are truncated toward zero.
fn integer_seconds(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => run::seconds_from_text(&n.to_string()),
        Value::String(s) => run::seconds_from_text(s),
        _ => None,
    }
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
    use std::fmt::Write as _;
    match v {
        None | Some(Value::Null) => builder.append_null(),
        Some(Value::String(s)) => builder.append_value(s),
        Some(other) => {
            // Writing to a string builder cannot fail; `append_value("")` ends the value.
            let _ = write!(builder, "{other}");
            builder.append_value("");
        }
    }
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
