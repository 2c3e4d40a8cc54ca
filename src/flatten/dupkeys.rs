//! Duplicate object keys, at any depth, in the text of one record.
//!
//! `serde_json::Value` silently keeps the last of two equal keys, so a record that repeats a key
//! would lose data without a trace. This walks the record's JSON once with a visitor that keeps
//! nothing but the keys of the object it is in, and names the first repeated key by its path.
//! It decides nothing about the record: the caller quarantines it.

use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// The path of the first key repeated inside one object of `json`, e.g. `all_outputs.node_a` or
/// `all_outputs.list[2].x`; `None` when no object repeats a key (or `json` does not parse).
pub(super) fn first_duplicate_key(json: &str) -> Option<String> {
    let mut de = serde_json::Deserializer::from_str(json);
    let mut reversed = Walk.deserialize(&mut de).ok()??;
    reversed.reverse();
    Some(format_path(&reversed))
}

/// One step of a path: an object key or an array position.
enum Segment {
    Key(String),
    Index(usize),
}

fn format_path(segments: &[Segment]) -> String {
    let mut path = String::new();
    for segment in segments {
        match segment {
            Segment::Key(key) => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
            }
            Segment::Index(i) => path.push_str(&format!("[{i}]")),
        }
    }
    path
}

/// Path segments from the duplicate up to the value walked (innermost first).
type Found = Option<Vec<Segment>>;

/// Visits one value; returns the path of the first duplicate key inside it.
struct Walk;

impl<'de> DeserializeSeed<'de> for Walk {
    type Value = Found;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Found, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk {
    type Value = Found;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Found, E> {
        Ok(None)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Found, E> {
        Ok(None)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Found, E> {
        Ok(None)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Found, E> {
        Ok(None)
    }

    fn visit_str<E>(self, _: &str) -> Result<Found, E> {
        Ok(None)
    }

    fn visit_unit<E>(self) -> Result<Found, E> {
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Found, A::Error> {
        let mut index = 0;
        while let Some(found) = seq.next_element_seed(Walk)? {
            if let Some(mut path) = found {
                path.push(Segment::Index(index));
                // The rest must still be read for the parser to accept the array.
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                return Ok(Some(path));
            }
            index += 1;
        }
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Found, A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if seen.contains(&key) {
                map.next_value::<IgnoredAny>()?;
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                return Ok(Some(vec![Segment::Key(key)]));
            }
            if let Some(mut path) = map.next_value_seed(Walk)? {
                path.push(Segment::Key(key));
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                return Ok(Some(path));
            }
            seen.insert(key);
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::first_duplicate_key;

    #[test]
    fn names_the_first_repeated_key_by_its_path() {
        let cases = [
            (
                r#"{"id": "a", "status": "x", "status": "y"}"#,
                Some("status"),
            ),
            (
                r#"{"id": "a", "all_outputs": {"node_a": 1, "node_b": 2, "node_a": 3}}"#,
                Some("all_outputs.node_a"),
            ),
            (
                r#"{"all_outputs": {"list": [1, {"x": 1}, {"x": 1, "x": 2}]}, "id": "a"}"#,
                Some("all_outputs.list[2].x"),
            ),
            (r#"{"a": {"k": 1}, "b": {"k": 1}}"#, None),
            (r#"{"a": 1.5e400, "b": [1, 2, {"c": null}]}"#, None),
            (r#"{"a\u0041": 1, "aA": 2}"#, Some("aA")),
            (r#"[{"k": 1, "k": 1}]"#, Some("[0].k")),
            ("\"text\"", None),
        ];
        for (json, want) in cases {
            assert_eq!(first_duplicate_key(json).as_deref(), want, "{json}");
        }
    }
}
