//! The fast path of page parsing: the whole page into `Value`s in one pass, refusing anything
//! the record-by-record path ([`super::page`]) would quarantine.
//!
//! A repeated key makes `serde_json::Value` silently keep the last value, so this builds the
//! values itself and fails on the first repeat instead; invalid UTF-8, lone surrogates and
//! anything that is not an array of JSON values fail too. Any failure sends the page to the
//! slow path, which parses each record on its own, names what is wrong and keeps the rest.
//! Clean pages — nearly all of them — are read once instead of three times.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// The records of a clean page; `None` when the page needs the record-by-record path.
pub(super) fn records(body: &[u8]) -> Option<Vec<Value>> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let records = de.deserialize_seq(Records).ok()?;
    de.end().ok()?;
    Some(records)
}

/// The token serde_json uses to pass a number's exact text with `arbitrary_precision`.
const NUMBER_TOKEN: &str = "$serde_json::private::Number";

struct Records;

impl<'de> Visitor<'de> for Records {
    type Value = Vec<Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of records")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Value>, A::Error> {
        let mut records = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(record) = seq.next_element_seed(Strict)? {
            records.push(record);
        }
        Ok(records)
    }
}

/// One JSON value, built like `serde_json::Value` but refusing a repeated key.
struct Strict;

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("not a finite number"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element_seed(Strict)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let Some(first) = map.next_key::<String>()? else {
            return Ok(Value::Object(Map::new()));
        };
        if first == NUMBER_TOKEN {
            let text: String = map.next_value()?;
            return text
                .parse::<Number>()
                .map(Value::Number)
                .map_err(de::Error::custom);
        }
        let mut object = Map::new();
        object.insert(first, map.next_value_seed(Strict)?);
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(Strict)?;
            if object.insert(key, value).is_some() {
                return Err(de::Error::custom("a key is repeated"));
            }
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::records;
    use serde_json::Value;

    #[test]
    fn clean_pages_parse_exactly_like_serde_json() {
        let body = br#"[{"id": "a", "n": 12345678901234567890123, "f": 1.50, "o": {"z": [1, null, true, "s\u00e9"], "a": {}}}, 7, "x", []]"#;
        let want: Vec<Value> = serde_json::from_slice(body).unwrap();
        assert_eq!(records(body).unwrap(), want);
        // Key order and the numbers' exact text survive.
        assert_eq!(
            serde_json::to_string(&records(body).unwrap()[0]).unwrap(),
            r#"{"id":"a","n":12345678901234567890123,"f":1.50,"o":{"z":[1,null,true,"sé"],"a":{}}}"#
        );
    }

    #[test]
    fn pages_the_slow_path_must_read_are_refused() {
        for body in [
            &br#"[{"id": "a", "id": "b"}]"#[..],
            br#"[{"x": {"k": 1, "k": 2}}]"#,
            br#"[{"id": "\ud800"}]"#,
            b"[{\"id\": \"\xff\"}]",
            br#"{"id": "a"}"#,
            br#"[{"id": "a"}"#,
            br#"[1] 2"#,
            b"",
        ] {
            assert!(records(body).is_none(), "{}", String::from_utf8_lossy(body));
        }
    }
}
