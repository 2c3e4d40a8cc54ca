//! JSON text helpers shared by the flattener and the privacy policy: the contents of JSON
//! strings, unescaped without a parser.

/// The four hex digits at `at` in `bytes`, as a number (the parser checked they are hex).
pub fn hex4(bytes: &[u8], at: usize) -> u32 {
    bytes[at..at + 4]
        .iter()
        .fold(0, |n, b| n * 16 + char::from(*b).to_digit(16).unwrap_or(0))
}

/// Writes the unescaped `content` of a JSON string (between its quotes; valid JSON, lone
/// surrogates refused before — they would become U+FFFD) to `out`.
pub fn unescape_into(content: &str, out: &mut impl std::fmt::Write) {
    let bytes = content.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while let Some(at) = memchr::memchr(b'\\', &bytes[i..]) {
        i += at;
        let _ = out.write_str(&content[start..i]);
        let (ch, len) = match bytes[i + 1] {
            b'n' => ('\n', 2),
            b't' => ('\t', 2),
            b'r' => ('\r', 2),
            b'b' => ('\u{8}', 2),
            b'f' => ('\u{c}', 2),
            b'u' => {
                let unit = hex4(bytes, i + 2);
                if (0xD800..0xDC00).contains(&unit) {
                    let low = hex4(bytes, i + 8);
                    let code = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                    (char::from_u32(code).unwrap_or('\u{FFFD}'), 12)
                } else {
                    (char::from_u32(unit).unwrap_or('\u{FFFD}'), 6)
                }
            }
            // `\"`, `\\` and `\/` stand for themselves.
            other => (char::from(other), 2),
        };
        let _ = out.write_char(ch);
        i += len;
        start = i;
    }
    let _ = out.write_str(&content[start..]);
}
