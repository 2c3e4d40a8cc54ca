//! The privacy policy applied to a run's cells before they are appended: `hash` and `drop`
//! rules first (on the values as received, so a digest is of the original value), then what
//! they replaced wherever else the run's cells hold it (an answer quoting a dropped document),
//! then the masks over every text cell that is not a digest, and over the names of its node
//! outputs and inputs. The same value gets the same treatment in `runs.inputs` and in
//! `run_inputs`, in the run's steps (through [`RunInfo::hidden`](super::RunInfo)) and in
//! `_rejected/` (through [`Policy::protect_record`]).

use std::borrow::Cow;

use serde_json::Value;

use super::Rejected;
use super::cell::Cell;
use super::rows::{Entry, RunCells};
use crate::privacy::{Action, Field, Hidden, Name, Policy, path};

/// Applies `policy` to one run's cells; returns what its rules replaced.
pub(super) fn protect_cells(cells: &mut RunCells<'_>, policy: &Policy) -> Hidden {
    let mut hidden = Hidden::default();
    for (action, rule) in policy.rules() {
        let mut act = |cell: &mut Cell<'_>, value_type: &str| {
            act_on_cell(cell, value_type, &rule.pointer, action, policy, &mut hidden);
        };
        match &rule.field {
            Field::Outputs => act(&mut cells.outputs, cells.outputs_type),
            Field::Error => act(&mut cells.error, cells.error_type),
            Field::Inputs(name) => {
                for entry in entries(&mut cells.inputs_rows, name) {
                    act(&mut entry.value, entry.value_type);
                }
                act_on_inputs_object(&mut cells.inputs, name, &rule.pointer, action, policy);
            }
            Field::AllOutputs(name) => {
                for entry in entries(&mut cells.nodes, name) {
                    act(&mut entry.value, entry.value_type);
                }
            }
        }
    }
    let each = |cell: &mut Cell<'_>, value_type: &str, count: bool| {
        if !hidden.is_empty() {
            hide_in_cell(cell, value_type, &hidden);
        }
        mask_cell(cell, value_type, policy, count);
    };
    each(&mut cells.outputs, cells.outputs_type, true);
    each(&mut cells.error, cells.error_type, true);
    // The same values as `run_inputs`: counted there.
    each(&mut cells.inputs, "object", false);
    for entry in cells.nodes.iter_mut().chain(cells.inputs_rows.iter_mut()) {
        each(&mut entry.value, entry.value_type, true);
        // Names are text too; masked alike here and as keys in `runs.inputs`.
        if let Cow::Owned(name) = policy.masker().mask(&entry.name) {
            entry.name = Cow::Owned(name);
        }
    }
    hidden
}

fn entries<'e, 'a>(
    list: &'e mut [Entry<'a>],
    name: &'e Name,
) -> impl Iterator<Item = &'e mut Entry<'a>> {
    list.iter_mut().filter(move |e| name.matches(&e.name))
}

/// Applies `policy` to a record kept in `_rejected/`: the record, and its reason, which may
/// quote values of it.
pub(super) fn protect_rejected(rejected: &mut Rejected, policy: &Policy) {
    if policy.is_empty() {
        return;
    }
    let hidden = match &mut rejected.record {
        // Text that could not be parsed as a record: read it as JSON if it is (a repeated key,
        // say), else protected as text (withheld when paths are hashed or dropped).
        Value::String(text) if !rejected.kept => match serde_json::from_str::<Value>(text) {
            Ok(mut value) => {
                let hidden = policy.protect_record(&mut value);
                *text = match value {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                hidden
            }
            Err(_) => {
                let why = "the record does not parse, so the fields the policy hashes or drops cannot be found";
                *text = policy.protect_text(text, why).into_owned();
                Hidden::default()
            }
        },
        record => policy.protect_record(record),
    };
    rejected.reason = policy.protect_message(&rejected.reason, &hidden);
}

/// A value as parsed from a cell's text, for noting what a rule replaced.
fn value_of(text: &str, value_type: &str) -> Value {
    match value_type {
        "string" => Value::String(text.to_owned()),
        _ => serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned())),
    }
}

/// A rule on one cell: the whole value (`pointer` empty), or the values it points to inside a
/// nested one.
fn act_on_cell(
    cell: &mut Cell<'_>,
    value_type: &str,
    pointer: &[Name],
    action: Action,
    policy: &Policy,
    hidden: &mut Hidden,
) {
    if matches!(cell, Cell::Null | Cell::Digest(_)) {
        return;
    }
    let Some(text) = cell.to_text() else {
        return;
    };
    if pointer.is_empty() {
        let old = value_of(&text, value_type);
        *cell = match policy.act_hiding(action, &old, hidden) {
            Value::String(digest) => Cell::Digest(digest),
            _ => Cell::Null,
        };
        return;
    }
    if !matches!(value_type, "object" | "array") {
        return;
    }
    let Ok(mut value) = serde_json::from_str::<Value>(&text) else {
        return;
    };
    if path::apply(&mut value, pointer, &mut |old| {
        policy.act_hiding(action, old, hidden)
    }) {
        *cell = Cell::Owned(value.to_string());
    }
}

/// A rule on the entries of `runs.inputs` (compact JSON of the whole `inputs` object); not
/// counted, as the same values are counted in `run_inputs`.
fn act_on_inputs_object(
    cell: &mut Cell<'_>,
    name: &Name,
    pointer: &[Name],
    action: Action,
    policy: &Policy,
) {
    let Some(text) = cell.to_text().filter(|t| t.starts_with('{')) else {
        return;
    };
    let Ok(mut inputs) = serde_json::from_str::<Value>(&text) else {
        return;
    };
    if path::apply_to_entries(&mut inputs, name, pointer, &mut |old| {
        policy.replacement(action, old)
    }) {
        *cell = Cell::Owned(inputs.to_string());
    }
}

/// Replaces what the rules replaced elsewhere in the run wherever this cell holds it.
fn hide_in_cell(cell: &mut Cell<'_>, value_type: &str, hidden: &Hidden) {
    if matches!(cell, Cell::Null | Cell::Digest(_)) {
        return;
    }
    let Some(text) = cell.to_text() else {
        return;
    };
    let replaced = match value_type {
        "string" => match hidden.in_text(&text) {
            Cow::Owned(t) => Some(t),
            Cow::Borrowed(_) => None,
        },
        "object" | "array" => hidden.in_json(&text),
        _ => None,
    };
    if let Some(t) = replaced {
        *cell = Cell::Owned(t);
    }
}

/// Masks a cell: its text when it is a string, the strings inside it when it is an object or
/// an array; numbers, booleans and digests are left as they are. `count`: whether a change is
/// counted in [`Policy::protected`].
fn mask_cell(cell: &mut Cell<'_>, value_type: &str, policy: &Policy, count: bool) {
    let masker = policy.masker();
    if masker.is_empty() || matches!(cell, Cell::Null | Cell::Digest(_)) {
        return;
    }
    let counted = || {
        if count {
            policy.count(None);
        }
    };
    match value_type {
        "string" => match cell {
            Cell::Text(text) => {
                if let Cow::Owned(m) = masker.mask(text) {
                    *cell = Cell::Owned(m);
                    counted();
                }
            }
            _ => {
                // Escaped: unescaped once here, and kept so (not unescaped again on append).
                if let Some(text) = cell.to_text() {
                    let masked = match masker.mask(&text) {
                        Cow::Owned(m) => Some(m),
                        Cow::Borrowed(_) => None,
                    };
                    if masked.is_some() {
                        counted();
                    }
                    *cell = Cell::Owned(masked.unwrap_or(text));
                }
            }
        },
        "object" | "array" => {
            let masked = match &*cell {
                Cell::Text(text) => masker.mask_json(text),
                Cell::Owned(text) => masker.mask_json(text),
                other => other.to_text().and_then(|t| masker.mask_json(&t)),
            };
            if let Some(m) = masked {
                *cell = Cell::Owned(m);
                counted();
            }
        }
        _ => {}
    }
}
