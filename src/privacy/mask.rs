//! Masking: every value a detector finds becomes its label (`[email]`, `[phone]`, …), in plain
//! text, in every string of a compact JSON text (keys too), and in every string of a parsed
//! value. A JSON text keeps its structure, its key order and `serde_json`'s escaping: only the
//! contents of strings change. Pure.

use std::borrow::Cow;

use regex::Regex;
use serde_json::Value;

use super::detect::{self, Builtin, NumericKinds, Span};

/// The detectors of a policy, ready to run.
#[derive(Debug, Default)]
pub struct Masker {
    email: Option<u16>,
    secret: Option<u16>,
    ipv6: Option<u16>,
    numeric: NumericKinds,
    custom: Vec<(Regex, u16)>,
    /// `[name]` of each label.
    labels: Vec<String>,
}

impl Masker {
    /// A masker for `builtins` and the custom `(name, regex)` patterns.
    pub fn new(builtins: &[Builtin], custom: &[(String, Regex)]) -> Self {
        let mut m = Masker::default();
        for &b in builtins {
            let label = m.label(b.name());
            match b {
                Builtin::Email => m.email = Some(label),
                Builtin::Phone => m.numeric.phone = Some(label),
                Builtin::Card => m.numeric.card = Some(label),
                Builtin::Secret => m.secret = Some(label),
                Builtin::Ip => {
                    m.numeric.ipv4 = Some(label);
                    m.ipv6 = Some(label);
                }
            }
        }
        for (name, regex) in custom {
            let label = m.label(name);
            m.custom.push((regex.clone(), label));
        }
        m
    }

    fn label(&mut self, name: &str) -> u16 {
        self.labels.push(format!("[{name}]"));
        u16::try_from(self.labels.len() - 1).unwrap_or(u16::MAX)
    }

    /// Whether there is nothing to mask.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The spans to replace in `text`: sorted, and overlapping ones joined into one (with the
    /// label of the earliest), so no part of any match is left. A digest is never masked.
    fn spans(&self, text: &str, spans: &mut Vec<Span>) {
        spans.clear();
        if is_digest(text) {
            return;
        }
        if let Some(label) = self.email {
            detect::emails(text, label, spans);
        }
        if let Some(label) = self.secret {
            detect::secrets(text, label, spans);
        }
        detect::numbers(text, self.numeric, spans);
        if let Some(label) = self.ipv6 {
            detect::ipv6(text, label, spans);
        }
        for (regex, label) in &self.custom {
            spans.extend(
                regex
                    .find_iter(text)
                    .filter(|m| !m.is_empty())
                    .map(|m| Span {
                        start: m.start(),
                        end: m.end(),
                        label: *label,
                    }),
            );
        }
        if spans.len() > 1 {
            spans.sort_by_key(|s| (s.start, std::cmp::Reverse(s.end)));
            let mut joined: Vec<Span> = Vec::with_capacity(spans.len());
            for s in spans.drain(..) {
                match joined.last_mut() {
                    Some(last) if s.start < last.end => last.end = last.end.max(s.end),
                    _ => joined.push(s),
                }
            }
            *spans = joined;
        }
    }

    /// `text` with every value found replaced by its label; borrowed when nothing was found.
    pub fn mask<'t>(&self, text: &'t str) -> Cow<'t, str> {
        if self.is_empty() {
            return Cow::Borrowed(text);
        }
        let mut spans = Vec::new();
        self.spans(text, &mut spans);
        if spans.is_empty() {
            return Cow::Borrowed(text);
        }
        let mut out = String::with_capacity(text.len());
        self.replace(text, &spans, &mut out);
        Cow::Owned(out)
    }

    fn replace(&self, text: &str, spans: &[Span], out: &mut String) {
        let mut at = 0;
        for s in spans {
            out.push_str(&text[at..s.start]);
            out.push_str(&self.labels[usize::from(s.label)]);
            at = s.end;
        }
        out.push_str(&text[at..]);
    }

    /// A compact JSON text with every string masked (keys too); `None` when nothing was found.
    /// `json` must be valid JSON (the caller's cells are).
    pub fn mask_json(&self, json: &str) -> Option<String> {
        if self.is_empty() {
            return None;
        }
        let b = json.as_bytes();
        let mut spans = Vec::new();
        let mut scratch = String::new();
        let mut out: Option<String> = None;
        let mut copied = 0;
        let mut i = 0;
        while let Some(q) = memchr::memchr(b'"', &b[i..]) {
            let open = i + q;
            let Some((close, escaped)) = string_close(b, open + 1) else {
                // Not JSON after all: masked as text, which finds everything (fails closed).
                return Some(self.mask(json).into_owned());
            };
            let content = &json[open + 1..close];
            let masked = if escaped {
                scratch.clear();
                crate::json_text::unescape_into(content, &mut scratch);
                self.spans(&scratch, &mut spans);
                (!spans.is_empty()).then(|| {
                    let mut plain = String::with_capacity(scratch.len());
                    self.replace(&scratch, &spans, &mut plain);
                    let quoted = serde_json::to_string(&plain).unwrap_or_default();
                    quoted[1..quoted.len() - 1].to_owned()
                })
            } else {
                self.spans(content, &mut spans);
                (!spans.is_empty()).then(|| {
                    let mut plain = String::with_capacity(content.len());
                    self.replace(content, &spans, &mut plain);
                    plain
                })
            };
            if let Some(masked) = masked {
                if b.get(close + 1) == Some(&b':') {
                    // A key: masked keys may collide, which only a parsed object can resolve.
                    return Some(self.mask_json_parsed(json));
                }
                let o = out.get_or_insert_with(|| String::with_capacity(json.len()));
                o.push_str(&json[copied..open + 1]);
                o.push_str(&masked);
                copied = close;
            }
            i = close + 1;
        }
        let mut o = out?;
        o.push_str(&json[copied..]);
        Some(o)
    }

    /// [`Masker::mask_json`] through a parsed value: for texts whose keys are masked.
    fn mask_json_parsed(&self, json: &str) -> String {
        match serde_json::from_str::<Value>(json) {
            Ok(mut value) => {
                self.mask_value(&mut value);
                value.to_string()
            }
            Err(_) => self.mask(json).into_owned(),
        }
    }

    /// Masks every string of `value` in place, keys too; keys that become equal are told apart
    /// by a number (`[email]`, `[email] 2`), so no value is lost. Whether anything changed.
    pub fn mask_value(&self, value: &mut Value) -> bool {
        if self.is_empty() {
            return false;
        }
        match value {
            Value::String(s) => match self.mask(s) {
                Cow::Owned(m) => {
                    *s = m;
                    true
                }
                Cow::Borrowed(_) => false,
            },
            Value::Array(items) => items
                .iter_mut()
                .fold(false, |changed, v| self.mask_value(v) | changed),
            Value::Object(map) => {
                let mut changed = false;
                for v in map.values_mut() {
                    changed |= self.mask_value(v);
                }
                if map.keys().any(|k| matches!(self.mask(k), Cow::Owned(_))) {
                    let old = std::mem::take(map);
                    for (k, v) in old {
                        let masked = self.mask(&k).into_owned();
                        let mut key = masked.clone();
                        let mut n = 1;
                        while map.contains_key(&key) {
                            n += 1;
                            key = format!("{masked} {n}");
                        }
                        map.insert(key, v);
                    }
                    changed = true;
                }
                changed
            }
            _ => false,
        }
    }
}

/// Whether `text` is a digest the policy wrote: 64 lowercase hex digits.
fn is_digest(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The closing quote of the string whose content starts at `from`, and whether it has escapes.
fn string_close(b: &[u8], from: usize) -> Option<(usize, bool)> {
    let mut j = from;
    let mut escaped = false;
    loop {
        let k = memchr::memchr2(b'"', b'\\', b.get(j..)?)?;
        if b[j + k] == b'\\' {
            escaped = true;
            j += k + 2;
        } else {
            return Some((j + k, escaped));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masker() -> Masker {
        let custom = vec![("order".to_owned(), Regex::new(r"ORD-\d{6}").unwrap())];
        Masker::new(&Builtin::ALL, &custom)
    }

    #[test]
    fn text_values_become_their_labels() {
        let m = masker();
        let table = [
            ("mail jane@example.com now", "mail [email] now"),
            (
                "ring +44 20 7946 0958 or jane@example.com",
                "ring [phone] or [email]",
            ),
            (
                "pay 4111 1111 1111 1111, key sk-abcdefghijklmnopqrstuvwxyz",
                "pay [card], key [secret]",
            ),
            ("from 10.1.2.3 about ORD-123456", "from [ip] about [order]"),
            (
                "nothing here: 2026-12-01, v1.2.3, $12.50",
                "nothing here: 2026-12-01, v1.2.3, $12.50",
            ),
            ("", ""),
        ];
        for (text, want) in table {
            assert_eq!(m.mask(text), want, "{text}");
        }
        assert!(matches!(m.mask("plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn json_keeps_its_structure_order_and_escapes() {
        let m = masker();
        let table = [
            (
                r#"{"z":"jane@example.com","a":[1,"x\ny +44 20 7946 0958"],"n":4111111111111111}"#,
                Some(r#"{"z":"[email]","a":[1,"x\ny [phone]"],"n":4111111111111111}"#),
            ),
            // Keys are strings too; an escaped `@` is still an address.
            (
                r#"{"jane@example.com":{"k":"jane\u0040example.com"}}"#,
                Some(r#"{"[email]":{"k":"[email]"}}"#),
            ),
            // Keys that mask alike are told apart; no value is lost.
            (
                r#"{"jane@example.com":1,"bob@example.org":2}"#,
                Some(r#"{"[email]":1,"[email] 2":2}"#),
            ),
            // A digest is left as it is; not JSON at all is masked as text.
            (
                r#"{"d":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}"#,
                None,
            ),
            (r#"{"a":"jane@example.com"#, Some(r#"{"a":"[email]"#)),
            (
                r#"{"q":"say \"hi\" to bob@example.org\t"}"#,
                Some(r#"{"q":"say \"hi\" to [email]\t"}"#),
            ),
            (r#"{"clean":"text","n":[1,2]}"#, None),
            (
                r#""just a string with 10.0.0.1""#,
                Some(r#""just a string with [ip]""#),
            ),
        ];
        for (json, want) in table {
            let got = m.mask_json(json);
            assert_eq!(got.as_deref(), want, "{json}");
            if let Some(got) = got
                && serde_json::from_str::<Value>(json).is_ok()
            {
                let value: Value = serde_json::from_str(&got).expect("still JSON");
                let mut expected: Value = serde_json::from_str(json).unwrap();
                m.mask_value(&mut expected);
                assert_eq!(value, expected, "text and value masking agree on {json}");
            }
        }
    }

    #[test]
    fn overlapping_matches_are_joined_so_no_part_is_left() {
        let custom = vec![("acct".to_owned(), Regex::new(r"ACCT \d{4}").unwrap())];
        let m = Masker::new(&[Builtin::Card], &custom);
        assert_eq!(m.mask("ACCT 4111 1111 1111 1111 ok"), "[acct] ok");
    }

    proptest::proptest! {
        #[test]
        fn any_text_masks_without_panicking_and_json_stays_json(
            text in "[0-9a-zA-Z@+().:/ \\-_\"\\\\é😀\n]{0,60}|\\PC{0,40}",
        ) {
            let m = masker();
            let masked = m.mask(&text);
            for label in ["[email]", "[phone]", "[card]", "[secret]", "[ip]", "[order]"] {
                let _ = masked.matches(label).count();
            }
            let json = serde_json::to_string(&serde_json::json!({ text.clone(): [text.clone()] })).unwrap();
            if let Some(out) = m.mask_json(&json) {
                proptest::prop_assert!(serde_json::from_str::<Value>(&out).is_ok(), "{}", out);
            }
        }
    }

    #[test]
    fn an_empty_masker_changes_nothing() {
        let m = Masker::default();
        assert!(m.mask_json(r#"{"a":"jane@example.com"}"#).is_none());
        let mut v = serde_json::json!({"a": "jane@example.com"});
        assert!(!m.mask_value(&mut v));
    }
}
