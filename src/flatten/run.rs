//! The scalar fields of one run — id, times, elapsed seconds — read from a borrowed record, and
//! the values present but unreadable as their column's type.

use super::cell::{self, Cell, Unusable};
use super::raw::RawRecord;
use super::time::parse_timestamp;

/// A value present in a kept run but not readable as its column's type.
pub(super) struct Unreadable {
    pub(super) field: &'static str,
    /// What was expected, e.g. "is not a timestamp (stored as NULL)".
    problem: String,
    /// The value as sent, compact JSON (shortened when quoted).
    original: String,
}

impl Unreadable {
    /// Longest original value quoted in a reason; the record in `_rejected/` has it whole.
    const MAX_QUOTED_CHARS: usize = 120;

    fn new(field: &'static str, problem: impl Into<String>, raw: &str) -> Result<Self, Unusable> {
        // Kept whole: it is masked (by the privacy policy) before it is shortened, so a value
        // cut in the middle cannot slip past a detector.
        let original = compact_json(raw)?;
        Ok(Self {
            field,
            problem: problem.into(),
            original,
        })
    }
}

/// The compact JSON text of a raw value, as `serde_json` writes it.
fn compact_json(raw: &str) -> Result<String, Unusable> {
    if raw.starts_with('"') {
        let content = cell::string_of(raw).ok_or(Unusable)?;
        return Ok(serde_json::Value::String(content.into_owned()).to_string());
    }
    Ok(Cell::of(raw)?
        .to_text()
        .unwrap_or_else(|| "null".to_owned()))
}

/// The scalar fields of one run, decoded from a record.
pub(super) struct RunFields {
    pub(super) id: String,
    pub(super) start_time: Option<i64>,
    pub(super) end_time: Option<i64>,
    pub(super) elapsed_time: Option<i64>,
    pub(super) unreadable: Vec<Unreadable>,
}

impl RunFields {
    /// The run's fields, or why the record is not a run (`Ok(Err(reason))`); `Err(Unusable)`
    /// when a value has no text (a lone surrogate), for the record-by-record path to name.
    pub(super) fn from_record(record: &RawRecord<'_>) -> Result<Result<Self, String>, Unusable> {
        let id = match record.get("id") {
            None => return Ok(Err("`id` is missing".to_owned())),
            Some("null") => return Ok(Err("`id` is null".to_owned())),
            Some(raw) if raw.starts_with('"') => {
                let id = cell::string_of(raw).ok_or(Unusable)?;
                match &*id {
                    "" => return Ok(Err("`id` is empty".to_owned())),
                    // URLs drop such segments: `…/runs/../steps` would be `…/steps`.
                    "." | ".." => {
                        return Ok(Err(format!(
                            "`id` is `{id}`, which cannot be a URL path segment"
                        )));
                    }
                    _ => id.into_owned(),
                }
            }
            Some(raw) if cell::json_type_of(raw) == "number" => {
                cell::canonical_number(raw).into_owned()
            }
            Some(raw) => return Ok(Err(format!("`id` is a JSON {}", cell::json_type_of(raw)))),
        };
        let mut unreadable = Vec::new();
        let mut timestamp = |field: &'static str| -> Result<Option<i64>, Unusable> {
            let Some(raw) = record.present(field) else {
                return Ok(None);
            };
            let parsed = match cell::string_of(raw) {
                Some(text) => parse_timestamp(&text),
                None if raw.starts_with('"') => return Err(Unusable),
                None => None,
            };
            if parsed.is_none() {
                unreadable.push(Unreadable::new(
                    field,
                    "is not a timestamp (stored as NULL)",
                    raw,
                )?);
            }
            Ok(parsed)
        };
        let start_time = timestamp("start_time")?;
        let end_time = timestamp("end_time")?;
        let mut elapsed_time = None;
        if let Some(raw) = record.present("elapsed_time") {
            elapsed_time = integer_seconds(raw)?;
            if elapsed_time.is_none() {
                unreadable.push(Unreadable::new(
                    "elapsed_time",
                    "is not a number of seconds (stored as NULL)",
                    raw,
                )?);
            }
        }
        if let Some(raw) = record
            .present("all_outputs")
            .filter(|r| !r.starts_with('{'))
        {
            let problem = format!(
                "is a JSON {}, not an object (no node_outputs rows)",
                cell::json_type_of(raw)
            );
            unreadable.push(Unreadable::new("all_outputs", problem, raw)?);
        }
        Ok(Ok(Self {
            id,
            start_time,
            end_time,
            elapsed_time,
            unreadable,
        }))
    }

    /// Why the run is also listed in `_rejected/`, when some of its values were not readable,
    /// quoting each of them through `mask` (the privacy policy's masks) before shortening it.
    pub(super) fn unreadable_reason(&self, mask: impl Fn(&str) -> String) -> Option<String> {
        if self.unreadable.is_empty() {
            return None;
        }
        let notes: Vec<String> = self
            .unreadable
            .iter()
            .map(|u| {
                let mut quoted = mask(&u.original);
                if let Some((cut, _)) = quoted.char_indices().nth(Unreadable::MAX_QUOTED_CHARS) {
                    quoted.truncate(cut);
                    quoted.push('…');
                }
                format!("`{}` {}: {quoted}", u.field, u.problem)
            })
            .collect();
        Some(format!("kept with unreadable values: {}", notes.join("; ")))
    }

    /// End minus start in whole milliseconds (truncated), when both are known.
    pub(super) fn duration_ms(&self) -> Option<i64> {
        Some(self.end_time?.checked_sub(self.start_time?)? / 1000)
    }
}

/// Whole seconds from a JSON number or numeric string (raw text); fractions are truncated
/// toward zero. `Ok(None)` for anything else.
fn integer_seconds(raw: &str) -> Result<Option<i64>, Unusable> {
    let text = match cell::json_type_of(raw) {
        "number" => std::borrow::Cow::Borrowed(raw),
        "string" => cell::string_of(raw).ok_or(Unusable)?,
        _ => return Ok(None),
    };
    Ok(seconds_from_text(&text))
}

/// Whole seconds from the text of a number (surrounding whitespace ignored), truncated toward
/// zero; `None` when it is no number or does not fit.
pub(super) fn seconds_from_text(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(i) = text.parse::<i64>() {
        return Some(i);
    }
    let float = text.parse::<f64>().ok()?;
    // `as` saturates; reject values that do not fit rather than storing a clamped number.
    (float.is_finite() && float.abs() < 9.2e18).then(|| float.trunc() as i64)
}

#[cfg(test)]
mod tests {
    use super::integer_seconds;

    #[test]
    fn seconds_are_read_from_numbers_and_numeric_strings() {
        let cases = [
            ("12", Some(12)),
            ("12.7", Some(12)),
            ("-0.5", Some(0)),
            (r#"" 12 ""#, Some(12)),
            (r#""12.9""#, Some(12)),
            ("1e3", Some(1000)),
            ("1e400", None),
            ("9.3e18", None),
            (r#""abc""#, None),
            (r#""inf""#, None),
            ("true", None),
            ("[1]", None),
        ];
        for (raw, want) in cases {
            assert_eq!(integer_seconds(raw), Ok(want), "{raw}");
        }
    }
}
