//! JSON values as column cells, straight from the page's bytes.
//!
//! A value arrives as its raw text, borrowed from the page body (already checked to be valid JSON
//! by the parser that split it off). [`Cell::of`] decides how it is stored without building a
//! `Value`: a string's content is kept borrowed and unescaped only when it is appended (lone
//! surrogates are refused first); an object or array whose text is already the compact JSON
//! `serde_json` would write — no whitespace between tokens, only the escapes it writes, and no
//! object repeating a key — is stored as that very text; anything else (pretty-printed input,
//! `\/` or `\u00e9` escapes, keys with escapes, very deep nesting) is parsed into a `Value` and
//! written compact, which is what every value went through before. So the stored text is the
//! same byte for byte as `serde_json`'s compact form, and the parse that costs is skipped for
//! nearly all values.

use std::fmt::Write as _;

use crate::json_text::{hex4, unescape_into};

use arrow::array::StringBuilder;
use serde_json::Value;

/// Why a value cannot be stored as it is: the record needs the record-by-record path, which
/// names the problem.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Unusable;

/// How one JSON value is stored in a text column.
#[derive(Debug)]
pub(super) enum Cell<'a> {
    /// JSON `null`: SQL NULL.
    Null,
    /// Text stored as is: a string without escapes, or compact JSON.
    Text(&'a str),
    /// The content of a JSON string with escapes (between the quotes, still escaped).
    Escaped(&'a str),
    /// A value whose text is not compact: written from its parsed form.
    Parsed(Value),
    /// Text the privacy policy rewrote (masked, or a pointer inside it hashed or dropped).
    Owned(String),
    /// The policy's digest of the whole value: stored as it is, never masked.
    Digest(String),
}

/// Nesting beyond this is left to `serde_json`, which enforces its recursion limit.
const MAX_SCANNED_DEPTH: usize = 100;
/// Objects with more keys than this are checked for repeats by sorting instead of pairwise.
const PAIRWISE_KEYS: usize = 16;

impl<'a> Cell<'a> {
    /// The cell of `raw`, the text of one valid JSON value.
    pub(super) fn of(raw: &'a str) -> Result<Self, Unusable> {
        match raw.as_bytes().first() {
            Some(b'"') => string_cell(raw),
            Some(b'n') => Ok(Cell::Null),
            Some(b'{' | b'[') => match scan(raw)? {
                Scan::Compact => Ok(Cell::Text(raw)),
                Scan::Reformat => super::strict::value(raw).map(Cell::Parsed).ok_or(Unusable),
            },
            Some(b't' | b'f') => Ok(Cell::Text(raw)),
            // Numbers keep their text (`arbitrary_precision`) but for the exponent's form.
            _ if exponent_is_canonical(raw) => Ok(Cell::Text(raw)),
            _ => super::strict::value(raw).map(Cell::Parsed).ok_or(Unusable),
        }
    }

    /// Appends the cell to `builder`.
    pub(super) fn append(&self, builder: &mut StringBuilder) {
        match self {
            Cell::Null => builder.append_null(),
            Cell::Text(text) => builder.append_value(text),
            Cell::Owned(text) | Cell::Digest(text) => builder.append_value(text),
            Cell::Escaped(content) => {
                unescape_into(content, builder);
                builder.append_value("");
            }
            Cell::Parsed(value) => {
                // Writing to a string builder cannot fail; `append_value("")` ends the value.
                let _ = write!(builder, "{value}");
                builder.append_value("");
            }
        }
    }

    /// About how many bytes the cell takes in its column (at least as many, for escaped text).
    pub(super) fn len_hint(&self) -> usize {
        match self {
            Cell::Null | Cell::Parsed(_) => 0,
            Cell::Text(text) | Cell::Escaped(text) => text.len(),
            Cell::Owned(text) | Cell::Digest(text) => text.len(),
        }
    }

    /// The cell as an owned string (`None` for NULL).
    pub(super) fn to_text(&self) -> Option<String> {
        match self {
            Cell::Null => None,
            Cell::Text(text) => Some((*text).to_owned()),
            Cell::Owned(text) | Cell::Digest(text) => Some(text.clone()),
            Cell::Escaped(content) => {
                let mut out = String::with_capacity(content.len());
                unescape_into(content, &mut out);
                Some(out)
            }
            Cell::Parsed(value) => Some(value.to_string()),
        }
    }
}

/// Whether the exponents in `raw` (JSON text outside strings) are written as `serde_json` writes
/// them: `e`, never `E`, and always signed (`1e400` becomes `1e+400`).
fn exponent_is_canonical(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    !bytes
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'E' || (b == b'e' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)))
}

/// The number `raw` as `serde_json` writes it.
pub(super) fn canonical_number(raw: &str) -> std::borrow::Cow<'_, str> {
    if exponent_is_canonical(raw) {
        return std::borrow::Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len() + 1);
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == 'e' || c == 'E' {
            out.push('e');
            if chars.peek().is_some_and(char::is_ascii_digit) {
                out.push('+');
            }
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The JSON type name (as in `value_type` columns) of a valid JSON text, from its first byte.
pub(super) fn json_type_of(raw: &str) -> &'static str {
    match raw.as_bytes().first() {
        Some(b'{') => "object",
        Some(b'[') => "array",
        Some(b'"') => "string",
        Some(b't' | b'f') => "boolean",
        Some(b'n') => "null",
        _ => "number",
    }
}

/// The cell of a JSON string's raw text (quotes included).
fn string_cell(raw: &str) -> Result<Cell<'_>, Unusable> {
    let content = &raw[1..raw.len() - 1];
    let bytes = content.as_bytes();
    let Some(first) = memchr::memchr(b'\\', bytes) else {
        return Ok(Cell::Text(content));
    };
    // `\u` escapes are rare (`serde_json` and most writers send UTF-8 as is): only a text
    // holding one needs the escape-by-escape check.
    if memchr::memmem::find(&bytes[first..], b"\\u").is_some() {
        check_surrogates(content)?;
    }
    Ok(Cell::Escaped(content))
}

/// The content of the JSON string `raw`, unescaped; `None` when `raw` is not a string or holds
/// a lone surrogate.
pub(super) fn string_of(raw: &str) -> Option<std::borrow::Cow<'_, str>> {
    if !raw.starts_with('"') {
        return None;
    }
    match string_cell(raw).ok()? {
        Cell::Text(text) => Some(std::borrow::Cow::Borrowed(text)),
        cell => cell.to_text().map(std::borrow::Cow::Owned),
    }
}

/// Refuses a `\uD800`–`\uDFFF` escape that is not half of a pair: the value has no text.
fn check_surrogates(content: &str) -> Result<(), Unusable> {
    let bytes = content.as_bytes();
    let mut i = 0;
    while let Some(at) = memchr::memchr(b'\\', &bytes[i..]) {
        i += at;
        if bytes[i + 1] != b'u' {
            i += 2;
            continue;
        }
        let unit = hex4(bytes, i + 2).unwrap_or(0);
        i += 6;
        if (0xDC00..0xE000).contains(&unit) {
            return Err(Unusable);
        }
        if (0xD800..0xDC00).contains(&unit) {
            let low =
                (bytes.get(i..i + 2) == Some(b"\\u")).then(|| hex4(bytes, i + 2).unwrap_or(0));
            if !low.is_some_and(|low| (0xDC00..0xE000).contains(&low)) {
                return Err(Unusable);
            }
            i += 6;
        }
    }
    Ok(())
}

/// What a scan of an object's or array's text found.
#[derive(Debug, PartialEq, Eq)]
enum Scan {
    /// The text is exactly `serde_json`'s compact form, and no object repeats a key.
    Compact,
    /// The text must be parsed and written again (it may still be unusable).
    Reformat,
}

/// One open object or array during a scan.
struct Frame {
    object: bool,
    /// Byte ranges of the object's keys (without quotes).
    keys: Vec<(usize, usize)>,
}

/// Scans a valid JSON object or array: is it compact, and does any object repeat a key?
fn scan(raw: &str) -> Result<Scan, Unusable> {
    let bytes = raw.as_bytes();
    let mut stack: Vec<Frame> = Vec::new();
    // Whether the next string in an object is a key.
    let mut key_next = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'{' | b'[' => {
                if stack.len() >= MAX_SCANNED_DEPTH {
                    return Ok(Scan::Reformat);
                }
                let object = bytes[i] == b'{';
                stack.push(Frame {
                    object,
                    keys: Vec::new(),
                });
                key_next = object;
                i += 1;
            }
            b'}' | b']' => {
                let frame = stack.pop().ok_or(Unusable)?;
                if repeats_a_key(raw, &frame.keys) {
                    return Err(Unusable);
                }
                i += 1;
            }
            b',' => {
                key_next = stack.last().is_some_and(|f| f.object);
                i += 1;
            }
            b'"' => {
                let start = i + 1;
                let Some(end) = string_end(bytes, start)? else {
                    return Ok(Scan::Reformat);
                };
                if key_next {
                    if bytes[start..end].contains(&b'\\') {
                        // Keys equal once unescaped are left to the parse to compare.
                        return Ok(Scan::Reformat);
                    }
                    if let Some(frame) = stack.last_mut() {
                        frame.keys.push((start, end));
                    }
                    key_next = false;
                }
                i = end + 1;
            }
            b' ' | b'\n' | b'\r' | b'\t' | b'E' => return Ok(Scan::Reformat),
            // An exponent without a sign: `serde_json` writes `e+`.
            b'e' if bytes.get(i + 1).is_some_and(u8::is_ascii_digit) => return Ok(Scan::Reformat),
            _ => i += 1,
        }
    }
    Ok(Scan::Compact)
}

/// The position of the closing quote of the string whose content starts at `start`; `None`
/// when the string holds an escape `serde_json` would not write.
fn string_end(bytes: &[u8], start: usize) -> Result<Option<usize>, Unusable> {
    let mut i = start;
    loop {
        i += memchr::memchr2(b'"', b'\\', bytes.get(i..).ok_or(Unusable)?).ok_or(Unusable)?;
        match bytes[i] {
            b'"' => return Ok(Some(i)),
            b'\\' => {
                match bytes.get(i + 1).ok_or(Unusable)? {
                    b'"' | b'\\' | b'n' | b'r' | b't' | b'b' | b'f' => i += 2,
                    b'u' => {
                        // `serde_json` writes `\u00XX`, lowercase, only for control characters
                        // without a short escape.
                        let digits = bytes.get(i + 2..i + 6).ok_or(Unusable)?;
                        let unit = hex4(bytes, i + 2).unwrap_or(0);
                        let lower = digits.iter().all(|d| !d.is_ascii_uppercase());
                        if unit >= 0x20 || [8, 9, 10, 12, 13].contains(&unit) || !lower {
                            return Ok(None);
                        }
                        i += 6;
                    }
                    _ => return Ok(None),
                }
            }
            // memchr2 stops only at a quote or a backslash.
            _ => return Err(Unusable),
        }
    }
}

/// Whether two of `keys` (byte ranges of `raw`) are the same text.
fn repeats_a_key(raw: &str, keys: &[(usize, usize)]) -> bool {
    let text = |&(s, e): &(usize, usize)| &raw[s..e];
    if keys.len() <= PAIRWISE_KEYS {
        return keys
            .iter()
            .enumerate()
            .any(|(i, a)| keys[..i].iter().any(|b| text(a) == text(b)));
    }
    let mut sorted: Vec<&str> = keys.iter().map(text).collect();
    sorted.sort_unstable();
    sorted.windows(2).any(|w| w[0] == w[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(raw: &str) -> Result<Option<String>, Unusable> {
        Cell::of(raw).map(|c| c.to_text())
    }

    #[test]
    fn values_are_stored_as_serde_json_writes_them_compact() {
        let cases = [
            (r#""plain""#, Some("plain")),
            (
                r#""line\nbreak \"q\" \\ \/ \u00e9 \ud83d\ude80""#,
                Some("line\nbreak \"q\" \\ / é 🚀"),
            ),
            ("null", None),
            ("12.50", Some("12.50")),
            ("-1e+400", Some("-1e+400")),
            ("1e400", Some("1e+400")),
            ("-12.50E-3", Some("-12.50e-3")),
            (
                r#"[1E5,{"a":2e3,"t":true,"f":false}]"#,
                Some(r#"[1e+5,{"a":2e+3,"t":true,"f":false}]"#),
            ),
            ("true", Some("true")),
            (
                r#"{"a":[1,{"b":"x\ny"}],"c":{}}"#,
                Some(r#"{"a":[1,{"b":"x\ny"}],"c":{}}"#),
            ),
            // Not compact: written again, key order and number text kept.
            (
                r#"{ "z": 1.0, "a" : [1, 2] }"#,
                Some(r#"{"z":1.0,"a":[1,2]}"#),
            ),
            (
                r#"["\/", "\u00E9", "\u001F", "\u001f"]"#,
                Some(r#"["/","é","\u001f","\u001f"]"#),
            ),
            (r#"{"k\u0041":1,"kA":2}"#, None),
        ];
        for (raw, want) in cases {
            let got = stored(raw);
            match want {
                None if raw.starts_with('{') => assert_eq!(got, Err(Unusable), "{raw}"),
                want => assert_eq!(got, Ok(want.map(str::to_owned)), "{raw}"),
            }
            if let (Ok(Some(text)), false) = (&got, raw.starts_with('"')) {
                let value: Value = serde_json::from_str(raw).unwrap();
                assert_eq!(text, &value.to_string(), "{raw}");
            }
        }
    }

    #[test]
    fn repeated_keys_and_lone_surrogates_are_unusable() {
        for raw in [
            r#"{"a":1,"a":2}"#,
            r#"[{"x":{"k":1,"k":1}}]"#,
            r#"{"k1":1,"k2":1,"k3":1,"k4":1,"k5":1,"k6":1,"k7":1,"k8":1,"k9":1,"k10":1,"k11":1,"k12":1,"k13":1,"k14":1,"k15":1,"k16":1,"k17":1,"k3":1}"#,
            r#""\ud800""#,
            r#""\udc00\ud800""#,
            r#""x\ud83dy""#,
        ] {
            assert_eq!(Cell::of(raw).map(|c| c.to_text()), Err(Unusable), "{raw}");
        }
        // The same key in different objects is no repeat.
        assert!(Cell::of(r#"{"a":{"k":1},"b":{"k":1}}"#).is_ok());
    }

    #[test]
    fn string_content_is_unescaped_or_refused() {
        assert_eq!(string_of(r#""a\tb""#).as_deref(), Some("a\tb"));
        assert_eq!(string_of(r#""plain""#).as_deref(), Some("plain"));
        assert_eq!(string_of("12"), None);
        assert_eq!(string_of(r#""\udfff""#), None);
    }

    #[test]
    fn numbers_are_written_with_serde_json_exponents() {
        for raw in [
            "1e400",
            "1E400",
            "1e+400",
            "1e-400",
            "1.5E10",
            "-0",
            "0e0",
            "12345678901234567890123",
            "-12.50E-3",
        ] {
            let value: Value = serde_json::from_str(raw).unwrap();
            assert_eq!(canonical_number(raw), value.to_string(), "{raw}");
        }
    }
}
