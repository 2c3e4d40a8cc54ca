//! The numeric detectors — phone numbers, payment card numbers, IPv4 addresses — in one pass
//! over the digits of a text: a token of digits joined by single separators is found (jumping
//! to the next digit 16 bytes at a time), dismissed when it has too few digits, and otherwise
//! checked for each shape (digit counts and groupings, a card network's prefix and the Luhn
//! check, octet ranges). Pure.

use super::detect::{Span, is_word};

/// The numeric detectors a pass looks for, each with its label.
#[derive(Debug, Clone, Copy, Default)]
pub struct NumericKinds {
    pub phone: Option<u16>,
    pub card: Option<u16>,
    pub ipv4: Option<u16>,
}

impl NumericKinds {
    fn any(self) -> bool {
        self.phone.is_some() || self.card.is_some() || self.ipv4.is_some()
    }
}

/// Finds tokens of digits joined by single separators (` `, `-`, `.`, `/`, `(`, `)`, with a
/// leading `+`) in one pass, and keeps those that are what `kinds` asks for. A token inside a
/// word or a longer number (`a4111…`, `run-2026…`, `v1.2.3`) is not looked at.
pub fn numbers(text: &str, kinds: NumericKinds, out: &mut Vec<Span>) {
    if !kinds.any() {
        return;
    }
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let Some(digit) = next_digit(b, i) else {
            return;
        };
        // A token may start one or two bytes before its first digit: `+4…`, `(4…`, `+(4…`.
        i = match (
            digit.checked_sub(2).map(|k| &b[k..digit]),
            digit.checked_sub(1).map(|k| b[k]),
        ) {
            (Some(b"+("), _) if digit - 2 >= i => digit - 2,
            (_, Some(b'+' | b'(')) if digit > i => digit - 1,
            _ => digit,
        };
        let c = b[i];
        let next = |k: usize| b.get(i + k).copied().unwrap_or(0);
        let starts = c.is_ascii_digit()
            || next(1).is_ascii_digit()
            || (c == b'+' && next(1) == b'(' && next(2).is_ascii_digit());
        let inside = i > 0 && (is_word(b[i - 1]) || matches!(b[i - 1], b'.' | b'+' | b'-'));
        if !starts || inside {
            i += 1;
            while i < b.len() && is_word(b[i]) {
                i += 1;
            }
            continue;
        }
        let end = token_end(b, i);
        if b.get(end).copied().is_some_and(is_word) {
            // It runs into a word (`12ab`): an identifier, not a number.
            i = end;
            while i < b.len() && is_word(b[i]) {
                i += 1;
            }
            continue;
        }
        let token = &text[i..end];
        // Most numbers in text are short: counted without allocating, they are dismissed here.
        if digit_count(token) >= 4 {
            find_in_token(token, i, kinds, version_before(b, i), out);
        }
        i = end.max(i + 1);
    }
}

/// Most digits a value may have (a card number); a window of a token never holds more.
const MOST_DIGITS: usize = 19;

/// The values in one token (it starts at `at` in the text): the longest window of whole digit
/// groups from the leftmost group that is one, then the next after it — so a card number
/// followed by its CVV (`4111 1111 1111 1111 123`) or a date before it is still found.
fn find_in_token(token: &str, at: usize, kinds: NumericKinds, version: bool, out: &mut Vec<Span>) {
    let b = token.as_bytes();
    // (start, end, digits so far at end) of each digit group.
    let mut spans: Vec<(usize, usize, usize)> = Vec::new();
    let mut i = 0;
    let mut total = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let s = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            total += i - s;
            spans.push((s, i, total));
        } else {
            i += 1;
        }
    }
    let mut first = 0;
    while first < spans.len() {
        let before = if first == 0 { 0 } else { spans[first - 1].2 };
        // A window may begin with the `+`, `(` or `+(` just before its first group.
        let mut start = spans[first].0;
        if first == 0 {
            start = 0;
        } else {
            if start > 0 && b[start - 1] == b'(' {
                start -= 1;
            }
            if start > 0 && b[start - 1] == b'+' && (start == 1 || !b[start - 2].is_ascii_digit()) {
                start -= 1;
            }
        }
        let mut found = None;
        for last in (first..spans.len()).rev() {
            let digits = spans[last].2 - before;
            if !(4..=MOST_DIGITS).contains(&digits) {
                continue;
            }
            // A dot joins numbers into one value (a version, a decimal): no window splits one.
            let dotted = (first > 0 && b[spans[first].0 - 1] == b'.')
                || (last + 1 < spans.len() && b[spans[last].1] == b'.');
            if dotted {
                continue;
            }
            let window = &token[start..spans[last].1];
            let dots = memchr::memchr_iter(b'.', window.as_bytes()).count();
            let checks = [
                (
                    kinds.card.filter(|_| digits >= 13),
                    card as fn(&str) -> bool,
                ),
                (kinds.phone.filter(|_| digits >= 8), phone),
                (
                    kinds.ipv4.filter(|_| dots == 3 && digits <= 12 && !version),
                    ipv4,
                ),
            ];
            if let Some(label) = checks
                .into_iter()
                .find_map(|(label, check)| label.filter(|_| check(window)))
            {
                found = Some((last, label));
                break;
            }
        }
        match found {
            Some((last, label)) => {
                out.push(Span {
                    start: at + start,
                    end: at + spans[last].1,
                    label,
                });
                first = last + 1;
            }
            None => first += 1,
        }
    }
}

/// Whether the word before `at` (skipping spaces, `=`, `:` and quotes) names a version
/// (`version 1.0.0.0`, `AssemblyVersion("4.8.1.0")`, `ver 2.0.0.1`): four dotted numbers after
/// it are a version, not an IPv4 address.
fn version_before(b: &[u8], at: usize) -> bool {
    let mut i = at;
    while i > 0 && matches!(b[i - 1], b' ' | b'=' | b':' | b'"' | b'\'' | b'(' | b'\t') {
        i -= 1;
    }
    let end = i;
    while i > 0 && b[i - 1].is_ascii_alphabetic() {
        i -= 1;
    }
    let word = std::str::from_utf8(&b[i..end])
        .unwrap_or("")
        .to_ascii_lowercase();
    word.ends_with("version") || word == "ver" || word == "v" || word.ends_with("release")
}

/// The first ASCII digit at or after `from`: 16 bytes at a time (a loop the compiler turns
/// into vector compares), then byte by byte within the block.
fn next_digit(b: &[u8], from: usize) -> Option<usize> {
    let is_digit = |c: &u8| c.wrapping_sub(b'0') < 10;
    let rest = &b[from..];
    let mut chunks = rest.chunks_exact(16);
    let mut at = from;
    for chunk in &mut chunks {
        if chunk.iter().fold(false, |any, c| any | is_digit(c)) {
            return chunk.iter().position(is_digit).map(|k| at + k);
        }
        at += 16;
    }
    chunks.remainder().iter().position(is_digit).map(|k| at + k)
}

/// The end of the numeric token starting at `start`: digits, with one separator at a time
/// between them (a separator not followed by a digit or `(` is not part of it), and one pair of
/// parentheses.
fn token_end(b: &[u8], start: usize) -> usize {
    let mut i = start;
    if b[i] == b'+' {
        i += 1;
    }
    let mut end = i;
    let mut open = false;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_digit() {
            i += 1;
            end = i;
        } else if c == b')' && open {
            open = false;
            i += 1;
            end = i;
        } else if c == b'(' && !open && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
            open = true;
            i += 1;
        } else if matches!(c, b' ' | b'-' | b'.' | b'/')
            && b.get(i + 1)
                .is_some_and(|n| n.is_ascii_digit() || *n == b'(')
        {
            i += 1;
        } else {
            break;
        }
    }
    end
}

/// The digit groups of a token and the separators between them.
fn groups(token: &str) -> (Vec<&str>, Vec<u8>) {
    let mut groups = Vec::new();
    let mut seps = Vec::new();
    let b = token.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let s = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            groups.push(&token[s..i]);
        } else {
            if !groups.is_empty() && b[i] != b'(' {
                seps.push(b[i]);
            }
            i += 1;
        }
    }
    (groups, seps)
}

fn digit_count(token: &str) -> usize {
    token.bytes().filter(u8::is_ascii_digit).count()
}

/// `YYYY-MM-DD` or `YYYY/MM/DD` at the start of a token: a date, not a phone number.
fn is_date_like(groups: &[&str], seps: &[u8]) -> bool {
    groups.len() >= 3
        && groups[0].len() == 4
        && groups[1].len() <= 2
        && groups[2].len() <= 2
        && seps[0] == seps[1]
        && matches!(seps[0], b'-' | b'/' | b'.')
}

/// International (`+` and 8–15 digits) or North American (`(415) 555-0100`, `415-555-0100`)
/// phone numbers; the span within the token.
fn phone(token: &str) -> bool {
    let (groups, seps) = groups(token);
    if seps.contains(&b'/') || token.ends_with('(') {
        return false;
    }
    if token.starts_with('+') {
        return (8..=15).contains(&digit_count(token)) && !is_date_like(&groups, &seps);
    }
    // North American: 3-3-4 digits, `(415) 555-0100` or one separator kind throughout,
    // optionally after a country code 1.
    let (groups, seps, skip) = match groups.first() {
        Some(&"1") if groups.len() == 4 => (&groups[1..], &seps[1..], 2),
        _ => (&groups[..], &seps[..], 0),
    };
    let shape =
        groups.len() == 3 && groups[0].len() == 3 && groups[1].len() == 3 && groups[2].len() == 4;
    let rest = &token[skip..];
    let separators = if rest.starts_with('(') {
        // `(415) 555-0100`, `(415)555-0100`.
        rest.as_bytes().get(4) == Some(&b')')
            && matches!(
                seps,
                [b')', b'-' | b'.' | b' '] | [b')', b' ', b'-' | b'.' | b' ']
            )
    } else {
        seps.len() == 2 && seps[0] == seps[1] && matches!(seps[0], b'-' | b'.' | b' ')
    };
    shape && separators
}

/// 13–19 digits (runs of 4 with one separator kind, Amex's 4-6-5, or none) with a card
/// network's prefix and a valid Luhn check digit.
fn card(token: &str) -> bool {
    if token.starts_with(['+', '(']) || token.contains(['(', ')']) {
        return false;
    }
    let (groups, seps) = groups(token);
    let digits: String = groups.concat();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    let grouped = match lens.as_slice() {
        [_] => true,
        [4, 6, 5] | [4, 6, 4] => true,
        [.., last] => lens[..lens.len() - 1].iter().all(|l| *l == 4) && (1..=4).contains(last),
        [] => false,
    };
    let one_separator = seps.windows(2).all(|w| w[0] == w[1])
        && seps.iter().all(|s| matches!(s, b' ' | b'-' | b'.'));
    grouped && one_separator && issuer_length_ok(&digits) && luhn(&digits)
}

/// Whether the number starts with a card network's prefix and has one of its lengths.
pub(super) fn issuer_length_ok(d: &str) -> bool {
    let n = d.len();
    let p = |k: usize| d[..k].parse::<u32>().unwrap_or(0);
    match d.as_bytes()[0] {
        // Visa.
        b'4' => matches!(n, 13 | 16 | 19),
        // Mastercard 51–55 and 2221–2720.
        b'5' => (51..=55).contains(&p(2)) && n == 16,
        b'2' => (2221..=2720).contains(&p(4)) && n == 16,
        // Amex 34, 37; Diners 36, 38, 300–305; JCB 3528–3589.
        b'3' => match p(2) {
            34 | 37 => n == 15,
            36 | 38 => (14..=19).contains(&n),
            30 => (300..=305).contains(&p(3)) && (14..=19).contains(&n),
            35 => (3528..=3589).contains(&p(4)) && (16..=19).contains(&n),
            _ => false,
        },
        // Discover 6011, 644–649, 65; UnionPay 62; Maestro 6304, 6759, 676x.
        b'6' => {
            (p(4) == 6011
                || (644..=649).contains(&p(3))
                || p(2) == 65
                || p(2) == 62
                || p(2) == 67
                || p(4) == 6304)
                && (16..=19).contains(&n)
        }
        _ => false,
    }
}

/// The Luhn check over decimal digits.
pub(super) fn luhn(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, c)| {
            let d = u32::from(c - b'0');
            if i % 2 == 1 {
                let d2 = d * 2;
                if d2 > 9 { d2 - 9 } else { d2 }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Four dot-separated octets 0–255 without leading zeros.
fn ipv4(token: &str) -> bool {
    let (groups, seps) = groups(token);
    if token.starts_with(['+', '(']) || groups.len() != 4 || seps.iter().any(|s| *s != b'.') {
        return false;
    }
    let octet = |g: &str| {
        g.len() <= 3
            && (g == "0" || !g.starts_with('0'))
            && g.parse::<u16>().is_ok_and(|v| v <= 255)
    };
    groups.iter().all(|g| octet(g))
}
