//! JSON text helpers shared by the flattener and the privacy policy: the contents of JSON
//! strings, unescaped without a parser. Never panics, whatever the text.

use std::borrow::Cow;

/// The four hex digits at `at` in `bytes`, as a number; `None` when they are not four hex
/// digits.
pub fn hex4(bytes: &[u8], at: usize) -> Option<u32> {
    let digits = bytes.get(at..at + 4)?;
    digits
        .iter()
        .try_fold(0, |n, b| char::from(*b).to_digit(16).map(|d| n * 16 + d))
}

/// Writes the unescaped `content` of a JSON string (between its quotes) to `out`. A lone
/// surrogate becomes U+FFFD; an escape JSON does not have is written as it is.
pub fn unescape_into(content: &str, out: &mut impl std::fmt::Write) {
    let bytes = content.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while let Some(at) = memchr::memchr(b'\\', &bytes[i..]) {
        i += at;
        let _ = out.write_str(&content[start..i]);
        let (ch, len) = match bytes.get(i + 1) {
            Some(b'n') => ('\n', 2),
            Some(b't') => ('\t', 2),
            Some(b'r') => ('\r', 2),
            Some(b'b') => ('\u{8}', 2),
            Some(b'f') => ('\u{c}', 2),
            Some(b'u') => match hex4(bytes, i + 2) {
                Some(unit) if (0xD800..0xDC00).contains(&unit) => {
                    let low = (bytes.get(i + 6..i + 8) == Some(b"\\u"))
                        .then(|| hex4(bytes, i + 8))
                        .flatten()
                        .filter(|low| (0xDC00..0xE000).contains(low));
                    match low {
                        Some(low) => {
                            let code = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                            (char::from_u32(code).unwrap_or('\u{FFFD}'), 12)
                        }
                        None => ('\u{FFFD}', 6),
                    }
                }
                Some(unit) => (char::from_u32(unit).unwrap_or('\u{FFFD}'), 6),
                None => ('\\', 1),
            },
            // `\"`, `\\` and `\/` stand for themselves.
            Some(&other) if other.is_ascii() => (char::from(other), 2),
            _ => ('\\', 1),
        };
        let _ = out.write_char(ch);
        i += len;
        start = i;
    }
    let _ = out.write_str(&content[start..]);
}

/// `text` with its JSON escapes decoded, leniently (for text that may not be JSON, such as an
/// error body or a record that does not parse): borrowed when it has none.
pub fn decode_escapes(text: &str) -> Cow<'_, str> {
    if memchr::memchr(b'\\', text.as_bytes()).is_none() {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    unescape_into(text, &mut out);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_decode_and_odd_ones_never_panic() {
        let table = [
            (r"a\nb\t\u0040\/\u00e9", "a\nb\t@/é"),
            (r"\ud83d\ude00", "😀"),
            (r"\ud800", "\u{FFFD}"),
            (r"\ud800\u0041", "\u{FFFD}A"),
            (r"\u12", r"\u12"),
            (r"end\", r"end\"),
            (r"\x", "x"),
            ("\\é", "\\é"),
        ];
        for (escaped, want) in table {
            assert_eq!(decode_escapes(escaped), want, "{escaped}");
        }
    }
}
