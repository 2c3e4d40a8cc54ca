//! The record-by-record path: splitting a page body into records, each parsed on its own.
//!
//! The body is decoded as UTF-8 with invalid bytes replaced by U+FFFD (their positions are
//! remembered), split into the raw text of each array element without interpreting string escapes,
//! and only then is each element parsed, checked and split into its fields. So one broken record — bytes that are not
//! UTF-8, an escape that is no character (`"\ud800"`), a key repeated — becomes a quarantined
//! [`Element`] with its text kept, and the other records of the page are unaffected. A body that is
//! not a JSON array at all is a [`PageError`]: its records are unknown.

use std::borrow::Cow;

use serde_json::Value;
use serde_json::value::RawValue;

use super::PageError;
use super::cell::json_type_of;
use super::dupkeys::first_duplicate_key;
use super::raw::{RawRecord, entries};

/// One element of a page's array.
#[derive(Debug)]
pub(super) enum Element<'a> {
    /// A JSON object without repeated keys, split into its fields (it may still be unusable as
    /// a run).
    Record(RawRecord<'a>),
    /// Valid JSON, but not an object.
    NotAnObject(Value),
    /// Not parseable without losing something; `text` is the element as received (U+FFFD in
    /// place of bytes that are not UTF-8).
    Quarantined { reason: String, text: String },
}

/// The body as text, with the byte offsets (in the text) of each U+FFFD put in place of bytes
/// that are not UTF-8; ascending.
pub(super) struct Decoded<'a> {
    text: Cow<'a, str>,
    replaced: Vec<usize>,
}

impl<'a> Decoded<'a> {
    pub(super) fn new(body: &'a [u8]) -> Self {
        if let Ok(text) = std::str::from_utf8(body) {
            return Self {
                text: Cow::Borrowed(text),
                replaced: Vec::new(),
            };
        }
        let mut text = String::with_capacity(body.len() + 16);
        let mut replaced = Vec::new();
        for chunk in body.utf8_chunks() {
            text.push_str(chunk.valid());
            if !chunk.invalid().is_empty() {
                replaced.push(text.len());
                text.push(char::REPLACEMENT_CHARACTER);
            }
        }
        Self {
            text: Cow::Owned(text),
            replaced,
        }
    }

    /// Whether a replacement lies inside `part`, which must be a slice of `self.text`.
    fn has_replacement_in(&self, part: &str) -> bool {
        if self.replaced.is_empty() {
            return false;
        }
        let start = (part.as_ptr() as usize).saturating_sub(self.text.as_ptr() as usize);
        let first_at_or_after = self.replaced.partition_point(|&at| at < start);
        self.replaced
            .get(first_at_or_after)
            .is_some_and(|&at| at < start + part.len())
    }
}

/// Splits a decoded body into its array's elements, each parsed or quarantined.
pub(super) fn split<'a>(decoded: &'a Decoded<'_>) -> Result<Vec<Element<'a>>, PageError> {
    let raw_elements = raw_array(&decoded.text)?;
    Ok(raw_elements
        .into_iter()
        .map(|raw| {
            let text = raw.get();
            if decoded.has_replacement_in(text) {
                quarantine("record contains bytes that are not UTF-8", text)
            } else {
                parse_element(text)
            }
        })
        .collect())
}

/// The raw text of each element of the top-level array in `text`.
fn raw_array(text: &str) -> Result<Vec<&RawValue>, PageError> {
    let first = text
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .bytes()
        .next();
    if first != Some(b'[') {
        // Tell "not JSON" from "JSON, but not an array" by reading the whole value.
        let whole: &RawValue = serde_json::from_str(text).map_err(malformed)?;
        return Err(PageError::NotAnArray {
            found: json_type_of(whole.get()),
        });
    }
    serde_json::from_str(text).map_err(malformed)
}

fn malformed(e: serde_json::Error) -> PageError {
    PageError::Malformed {
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    }
}

/// Parses one element's text, refusing what a `Value` would alter (repeated keys).
fn parse_element(text: &str) -> Element<'_> {
    match serde_json::from_str::<Value>(text) {
        Err(e) => quarantine(&format!("record is not valid JSON: {e}"), text),
        Ok(value) => match first_duplicate_key(text) {
            Some(path) => quarantine(&format!("duplicate key `{path}`"), text),
            None if !value.is_object() => Element::NotAnObject(value),
            None => match entries(text) {
                Some(fields) => Element::Record(RawRecord { fields }),
                None => quarantine("record cannot be split into its fields", text),
            },
        },
    }
}

fn quarantine<'a>(reason: &str, text: &str) -> Element<'a> {
    Element::Quarantined {
        reason: reason.to_owned(),
        text: text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_page(body: &[u8]) -> Result<Vec<String>, PageError> {
        let decoded = Decoded::new(body);
        Ok(split(&decoded)?
            .into_iter()
            .map(|e| match e {
                Element::Record(r) => format!("ok {}", r.to_value()),
                Element::NotAnObject(v) => format!("ok {v}"),
                Element::Quarantined { reason, text } => format!("{reason} | {text}"),
            })
            .collect())
    }

    fn reasons(body: &[u8]) -> Vec<String> {
        split_page(body).unwrap()
    }

    #[test]
    fn one_bad_record_does_not_spoil_the_page() {
        let body = b"[{\"id\": \"a\"}, {\"id\": \"b\", \"x\": \"\\ud800\"}, {\"id\": \"\xff\"}, {\"id\": \"c\", \"id\": \"d\"}, 1]";
        assert_eq!(
            reasons(body),
            [
                r#"ok {"id":"a"}"#,
                r#"record is not valid JSON: unexpected end of hex escape at line 1 column 25 | {"id": "b", "x": "\ud800"}"#,
                "record contains bytes that are not UTF-8 | {\"id\": \"\u{FFFD}\"}",
                r#"duplicate key `id` | {"id": "c", "id": "d"}"#,
                "ok 1",
            ]
        );
    }

    #[test]
    fn replaced_bytes_are_located_in_the_right_record() {
        let body = b"[\"\xc3\", \"ok\", \"\xe2\x82\"]";
        let got = reasons(body);
        assert!(got[0].starts_with("record contains bytes"), "{got:?}");
        assert_eq!(got[1], r#"ok "ok""#);
        assert!(got[2].starts_with("record contains bytes"), "{got:?}");
    }

    #[test]
    fn bodies_that_are_not_arrays_are_page_errors() {
        let err = |body: &[u8]| split_page(body).unwrap_err().to_string();
        assert_eq!(
            err(b" {\"a\": 1}"),
            "expected a JSON array of runs, got object"
        );
        assert_eq!(
            err(b"\"\xff\""),
            "expected a JSON array of runs, got string"
        );
        assert_eq!(err(b"-1"), "expected a JSON array of runs, got number");
        assert!(err(b"").starts_with("response is not valid JSON"));
        assert!(err(b"{").starts_with("response is not valid JSON"));
        assert!(err(b"[{\"id\": 1},").starts_with("response is not valid JSON (line 1"));
        assert!(err(b"[1] x").starts_with("response is not valid JSON"));
    }
}
