//! A `Value` parser that refuses repeated keys.
//!
//! `serde_json::Value` silently keeps the last of two equal keys. This builds the values itself
//! and fails on the first repeat instead; used for values whose text is not compact and must be
//! written again ([`super::cell`]). Failure sends the record to the record-by-record path, which
//! names what is wrong.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// `text` (one JSON value) parsed; `None` when it is not valid JSON or repeats a key.
pub(super) fn value(text: &str) -> Option<Value> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = Strict.deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(value)
}

/// The token serde_json uses to pass a number's exact text with `arbitrary_precision`.
const NUMBER_TOKEN: &str = "$serde_json::private::Number";

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
    use super::value;

    #[test]
    fn values_parse_exactly_like_serde_json() {
        let text = r#"{"id": "a", "n": 12345678901234567890123, "f": 1.50, "o": {"z": [1, null, true, "s\u00e9"], "a": {}}}"#;
        let want: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(value(text).unwrap(), want);
        // Key order and the numbers' exact text survive.
        assert_eq!(
            value(text).unwrap().to_string(),
            r#"{"id":"a","n":12345678901234567890123,"f":1.50,"o":{"z":[1,null,true,"sé"],"a":{}}}"#
        );
    }

    #[test]
    fn repeated_keys_and_invalid_text_are_refused() {
        for text in [
            r#"{"id": "a", "id": "b"}"#,
            r#"[{"x": {"k": 1, "k": 2}}]"#,
            r#""\ud800""#,
            r#"{"id": "a""#,
            "[1] 2",
            "",
        ] {
            assert!(value(text).is_none(), "{text}");
        }
    }
}
