//! Records borrowed from the page body: every top-level field as its raw JSON text.
//!
//! One `serde_json` pass over a clean page splits it into records and each record into its
//! fields — keys unescaped (borrowed unless they hold escapes), values as `&str` slices of the
//! body, validated but not interpreted. Nothing is built per value: what a field becomes is
//! decided later, per column ([`super::cell`]). A page with an element that is not an object, or
//! an object repeating a key at its top level, or anything that is not valid UTF-8 JSON, is not
//! read this way: [`page_records`] answers `None` and the caller takes the record-by-record path.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

/// The entries of one JSON object, in order: unescaped key, raw value text.
pub(super) type Entries<'a> = Vec<(Cow<'a, str>, &'a str)>;

/// One record: a JSON object's top-level entries.
#[derive(Debug)]
pub(super) struct RawRecord<'a> {
    pub(super) fields: Entries<'a>,
}

impl<'a> RawRecord<'a> {
    /// The raw text of field `name`, when present.
    pub(super) fn get(&self, name: &str) -> Option<&'a str> {
        self.fields
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, raw)| *raw)
    }

    /// The raw text of field `name`, unless it is absent or JSON `null`.
    pub(super) fn present(&self, name: &str) -> Option<&'a str> {
        self.get(name).filter(|raw| *raw != "null")
    }

    /// The record as a `Value` (for `_rejected/`, which keeps records as parsed).
    pub(super) fn to_value(&self) -> Value {
        let map = self
            .fields
            .iter()
            .map(|(key, raw)| {
                let value = serde_json::from_str(raw).unwrap_or(Value::Null);
                (key.clone().into_owned(), value)
            })
            .collect();
        Value::Object(map)
    }
}

/// The records of a page whose every element is an object without a repeated top-level key;
/// `None` otherwise.
pub(super) fn page_records(body: &[u8]) -> Option<Vec<RawRecord<'_>>> {
    // Checked once here (SIMD where the CPU has it, detected at run time), the text is not
    // checked again string by string and value by value.
    let text = simdutf8::basic::from_utf8(body).ok()?;
    let mut de = serde_json::Deserializer::from_str(text);
    let records = de.deserialize_seq(Records).ok()?;
    de.end().ok()?;
    Some(records)
}

/// The entries of the JSON object `text`; `None` when it is not an object or repeats a
/// top-level key.
pub(super) fn entries(text: &str) -> Option<Entries<'_>> {
    let mut de = serde_json::Deserializer::from_str(text);
    let entries = de.deserialize_map(Object).ok()?;
    de.end().ok()?;
    Some(entries)
}

struct Records;

impl<'de> Visitor<'de> for Records {
    type Value = Vec<RawRecord<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut records = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(fields) = seq.next_element_seed(ObjectSeed)? {
            records.push(RawRecord { fields });
        }
        Ok(records)
    }
}

struct ObjectSeed;

impl<'de> DeserializeSeed<'de> for ObjectSeed {
    type Value = Entries<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Entries<'de>, D::Error> {
        deserializer.deserialize_map(Object)
    }
}

/// An object's entries, refusing a repeated key.
struct Object;

impl<'de> Visitor<'de> for Object {
    type Value = Entries<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries<'de>, A::Error> {
        let mut entries: Entries<'de> = Vec::with_capacity(map.size_hint().unwrap_or(12));
        while let Some(key) = map.next_key_seed(Key)? {
            let raw: &'de RawValue = map.next_value()?;
            if entries.iter().any(|(k, _)| *k == key) {
                return Err(serde::de::Error::custom("a key is repeated"));
            }
            entries.push((key, raw.get()));
        }
        Ok(entries)
    }
}

/// An object key, borrowed from the input unless it holds escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_pages_split_into_borrowed_fields() {
        let body = br#"[{"id": "a", "all_outputs": {"n": [1, 2]}, "k\u00e9": 1.50}, {}]"#;
        let records = page_records(body).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].get("id"), Some(r#""a""#));
        assert_eq!(records[0].get("all_outputs"), Some(r#"{"n": [1, 2]}"#));
        assert_eq!(records[0].get("ké"), Some("1.50"));
        assert!(matches!(records[0].fields[0].0, Cow::Borrowed("id")));
        assert!(records[1].fields.is_empty());
    }

    #[test]
    fn pages_the_record_by_record_path_must_read_are_refused() {
        for body in [
            &br#"[{"id": "a", "id": "b"}]"#[..],
            br#"[{"id": "a"}, 1]"#,
            br#"[{"id": "\ud800"}]"#,
            b"[{\"id\": \"\xff\"}]",
            b"[{\"x\": [\"\xff\"]}]",
            br#"{"id": "a"}"#,
            br#"[{"id": "a"}"#,
            br#"[{}] 2"#,
            b"",
        ] {
            let records = page_records(body);
            // Lone surrogates pass the split (escapes are not decoded); the cells refuse them.
            let surrogate = body.windows(6).any(|w| w == br"\ud800");
            assert_eq!(
                records.is_some(),
                surrogate,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
