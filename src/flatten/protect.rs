//! The privacy policy applied to a run's cells before they are appended: `hash` and `drop`
//! rules first (on the values as received, so a digest is of the original value), then the
//! masks over every text cell that is not a digest. The same value gets the same treatment in
//! `runs.inputs` and in `run_inputs`, and in `_rejected/` (through [`Policy::protect_record`]).

use serde_json::Value;

use super::Rejected;
use super::cell::Cell;
use super::rows::{Entry, RunCells};
use crate::privacy::{Action, Field, Name, Policy, path};

/// Applies `policy` to one run's cells.
pub(super) fn protect_cells(cells: &mut RunCells<'_>, policy: &Policy) {
    for (action, rule) in policy.rules() {
        match &rule.field {
            Field::Outputs => act_on_cell(
                &mut cells.outputs,
                cells.outputs_type,
                &rule.pointer,
                action,
                policy,
            ),
            Field::Error => act_on_cell(
                &mut cells.error,
                cells.error_type,
                &rule.pointer,
                action,
                policy,
            ),
            Field::Inputs(name) => {
                act_on_entries(&mut cells.inputs_rows, name, &rule.pointer, action, policy);
                act_on_inputs_object(&mut cells.inputs, name, &rule.pointer, action, policy);
            }
            Field::AllOutputs(name) => {
                act_on_entries(&mut cells.nodes, name, &rule.pointer, action, policy)
            }
        }
    }
    mask_cell(&mut cells.outputs, cells.outputs_type, policy, true);
    mask_cell(&mut cells.error, cells.error_type, policy, true);
    // The same values as `run_inputs`: counted there.
    mask_cell(&mut cells.inputs, "object", policy, false);
    for entry in cells.nodes.iter_mut().chain(cells.inputs_rows.iter_mut()) {
        mask_cell(&mut entry.value, entry.value_type, policy, true);
    }
}

/// Applies `policy` to a record kept in `_rejected/`: the record, and its reason, which may
/// quote values of it.
pub(super) fn protect_rejected(rejected: &mut Rejected, policy: &Policy) {
    if policy.is_empty() {
        return;
    }
    let hidden = match &mut rejected.record {
        // Text that could not be parsed as a record: read it as JSON if it is (a repeated key,
        // say), else mask it as text — unless paths are hashed or dropped, which cannot be found
        // in text that does not parse: then it is withheld.
        Value::String(text) if !rejected.kept => match serde_json::from_str::<Value>(text) {
            Ok(mut value) => {
                let hidden = policy.protect_record(&mut value);
                *text = value.to_string();
                hidden
            }
            Err(_) if policy.has_path_rules() => {
                *text = format!(
                    "[{} bytes withheld by the privacy policy: the record does not parse, so the fields it hashes or drops cannot be found]",
                    text.len()
                );
                Vec::new()
            }
            Err(_) => {
                if let std::borrow::Cow::Owned(m) = policy.masker().mask(text) {
                    *text = m;
                    policy.count(None);
                }
                Vec::new()
            }
        },
        record => policy.protect_record(record),
    };
    rejected.reason = policy.protect_message(&rejected.reason, &hidden);
}

fn act_on_entries(
    entries: &mut [Entry<'_>],
    name: &Name,
    pointer: &[Name],
    action: Action,
    policy: &Policy,
) {
    for entry in entries.iter_mut().filter(|e| name.matches(&e.name)) {
        act_on_cell(&mut entry.value, entry.value_type, pointer, action, policy);
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
) {
    if matches!(cell, Cell::Null) {
        return;
    }
    if pointer.is_empty() {
        *cell = match action {
            Action::Drop => Cell::Null,
            Action::Hash => match cell.to_text() {
                Some(text) if !matches!(cell, Cell::Digest(_)) => {
                    Cell::Digest(policy.digest(&text))
                }
                _ => return,
            },
        };
        return;
    }
    if !matches!(value_type, "object" | "array") || matches!(cell, Cell::Digest(_)) {
        return;
    }
    let Some(mut value) = cell
        .to_text()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
    else {
        return;
    };
    if path::apply(&mut value, pointer, &mut |old| policy.act(action, old)) {
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
    let Ok(Value::Object(mut map)) = serde_json::from_str::<Value>(&text) else {
        return;
    };
    let mut any = false;
    for (k, v) in map.iter_mut() {
        if name.matches(k) {
            any |= path::apply(v, pointer, &mut |old| policy.replacement(action, old));
        }
    }
    if any {
        *cell = Cell::Owned(Value::Object(map).to_string());
    }
}

/// Masks a cell: its text when it is a string, the strings inside it when it is an object or
/// an array; numbers, booleans and digests are left as they are. `count`: whether a change is
/// counted in [`Policy::protected`].
fn mask_cell(cell: &mut Cell<'_>, value_type: &str, policy: &Policy, count: bool) {
    let masker = policy.masker();
    let counted = || {
        if count {
            policy.count(None);
        }
    };
    if masker.is_empty() || matches!(cell, Cell::Null | Cell::Digest(_)) {
        return;
    }
    match value_type {
        "string" => match cell {
            Cell::Text(text) => {
                if let std::borrow::Cow::Owned(m) = masker.mask(text) {
                    *cell = Cell::Owned(m);
                    counted();
                }
            }
            _ => {
                // Escaped: unescaped once here, and kept so (not unescaped again on append).
                if let Some(text) = cell.to_text() {
                    let masked = match masker.mask(&text) {
                        std::borrow::Cow::Owned(m) => Some(m),
                        std::borrow::Cow::Borrowed(_) => None,
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
