//! Text bound for a terminal or a log: whatever came from the API or a user (workflow ids, error
//! bodies, paths) is printed with its control characters escaped, so that no escape sequence,
//! bell or bidirectional override in it reaches the terminal raw. Line breaks and tabs stay;
//! with `keep_sgr`, the colour sequences our own log formatter writes (`ESC [ digits m`) stay too.
//! The escape is `\u001b` (four hex digits: every such character is below U+10000), which is
//! also valid inside a JSON string, so JSON logs and `--json` output stay parseable.

use std::borrow::Cow;
use std::io::{self, Write};

/// Whether `c` must not reach a terminal raw: C0 controls but line feed and tab, DEL, C1
/// controls, and the Unicode bidirectional formatting characters.
fn unsafe_char(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every unsafe character written as `\uXXXX`.
pub fn safe(text: &str) -> Cow<'_, str> {
    escape(text, false)
}

/// The length of the SGR sequence (`ESC [ 0-9;* m`) at the start of `rest`, if one is there.
fn sgr_len(rest: &str) -> Option<usize> {
    let body = rest.strip_prefix("\u{1b}[")?;
    let params = body.find(|c: char| !(c.is_ascii_digit() || c == ';'))?;
    (body[params..].starts_with('m')).then_some(2 + params + 1)
}

fn escape(text: &str, keep_sgr: bool) -> Cow<'_, str> {
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if keep_sgr
            && c == '\u{1b}'
            && let Some(len) = sgr_len(rest)
        {
            out.push_str(&rest[..len]);
            rest = &rest[len..];
            continue;
        }
        if unsafe_char(c) {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    Cow::Owned(out)
}

/// A writer that escapes what [`safe`] escapes, keeping colour sequences when `keep_sgr` (for
/// the log formatter, which writes each event in one call).
pub struct SafeWriter<W> {
    inner: W,
    keep_sgr: bool,
}

impl<W: Write> SafeWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W, keep_sgr: bool) -> Self {
        Self { inner, keep_sgr }
    }
}

impl<W: Write> Write for SafeWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        self.inner
            .write_all(escape(&text, self.keep_sgr).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_escaped_and_text_kept() {
        let cases = [
            ("wf-1", "wf-1"),
            ("a\nb\tc", "a\nb\tc"),
            (
                "wf-\u{1b}]0;PWNED\u{7}\u{1b}[2J",
                "wf-\\u001b]0;PWNED\\u0007\\u001b[2J",
            ),
            ("\u{9b}31m", "\\u009b31m"),
            ("r\u{202e}txt.exe", "r\\u202etxt.exe"),
            ("\u{7f}\r", "\\u007f\\u000d"),
            ("日本語 😀", "日本語 😀"),
        ];
        for (text, want) in cases {
            assert_eq!(safe(text), want, "{text:?}");
        }
    }

    #[test]
    fn escaped_text_is_still_a_json_string() {
        let line = serde_json::json!({"error": "a\u{85}b\u{200f}c\u{1b}"}).to_string();
        let shown = safe(&line);
        let back: serde_json::Value = serde_json::from_str(&shown).unwrap();
        assert_eq!(back["error"], "a\u{85}b\u{200f}c\u{1b}");
        assert!(!shown.chars().any(unsafe_char));
    }

    #[test]
    fn the_log_writer_keeps_only_colour_sequences() {
        let mut out = Vec::new();
        let mut w = SafeWriter::new(&mut out, true);
        w.write_all(b"\x1b[2m12:00\x1b[0m \x1b[33mWARN\x1b[0m id=wf-\x1b[2J\x1b]0;x\x07\n")
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\u{1b}[2m12:00\u{1b}[0m \u{1b}[33mWARN\u{1b}[0m id=wf-\\u001b[2J\\u001b]0;x\\u0007\n"
        );
        let mut out = Vec::new();
        SafeWriter::new(&mut out, false)
            .write_all(b"\x1b[33mWARN\xff")
            .unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "\\u001b[33mWARN\u{fffd}");
    }
}
