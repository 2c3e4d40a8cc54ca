//! Detectors: where in a text an e-mail address, a phone number, a payment card number, a secret
//! or an IP address is. Each one finds candidates with a cheap scan (`memchr` for `@` and `:`,
//! one pass over the digits for the numeric ones in `numbers.rs`, a search for the secrets'
//! literal prefixes in `secrets.rs`) and then validates them (a Luhn check and issuer prefixes
//! for cards, octet ranges for IPv4, the standard parser for IPv6, digit counts and shapes for
//! phones), so dates, ids, version numbers and prices are not mistaken for them. Pure: text in,
//! byte spans out.

pub use super::numbers::{NumericKinds, numbers};
pub use super::secrets::secrets;

/// A built-in detector, as named in `[privacy] mask`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Builtin {
    /// `name@example.com`.
    Email,
    /// `+44 20 7946 0958`, `+1 (415) 555-0100`, and North American `(415) 555-0100`.
    Phone,
    /// 13–19 digits of a card network's prefix that pass the Luhn check.
    Card,
    /// API keys and tokens: `sk-…`, `ghp_…`, `AKIA…`, `xox…`, `AIza…`, bearer tokens, JWTs,
    /// private key blocks.
    Secret,
    /// IPv4 and IPv6 addresses.
    Ip,
}

impl Builtin {
    /// Every built-in detector, in the order they are listed to users.
    pub const ALL: [Builtin; 5] = [
        Builtin::Email,
        Builtin::Phone,
        Builtin::Card,
        Builtin::Secret,
        Builtin::Ip,
    ];

    /// The name used in configs and in the mask (`[email]`).
    pub fn name(self) -> &'static str {
        match self {
            Builtin::Email => "email",
            Builtin::Phone => "phone",
            Builtin::Card => "card",
            Builtin::Secret => "secret",
            Builtin::Ip => "ip",
        }
    }

    /// The detector of that name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.name() == name)
    }

    /// Appends the spans of `text` this detector finds, labelled `label`.
    pub fn find(self, text: &str, label: u16, out: &mut Vec<Span>) {
        match self {
            Builtin::Email => emails(text, label, out),
            Builtin::Phone => numbers(
                text,
                NumericKinds {
                    phone: Some(label),
                    ..NumericKinds::default()
                },
                out,
            ),
            Builtin::Card => numbers(
                text,
                NumericKinds {
                    card: Some(label),
                    ..NumericKinds::default()
                },
                out,
            ),
            Builtin::Secret => secrets(text, label, out),
            Builtin::Ip => {
                numbers(
                    text,
                    NumericKinds {
                        ipv4: Some(label),
                        ..NumericKinds::default()
                    },
                    out,
                );
                ipv6(text, label, out);
            }
        }
    }
}

/// A found value: bytes `start..end` of the text, and which mask replaces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
    pub label: u16,
}

/// Whether `b` continues a word (letters, digits, `_`): a value must not be part of one.
pub(super) fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

pub fn emails(text: &str, label: u16, out: &mut Vec<Span>) {
    let b = text.as_bytes();
    let is_local = |c: u8| c.is_ascii_alphanumeric() || b"._%+-_".contains(&c);
    let mut resume = 0;
    for at in memchr::memchr_iter(b'@', b) {
        if at < resume {
            continue;
        }
        let mut start = at;
        while start > 0 && is_local(b[start - 1]) {
            start -= 1;
        }
        while start < at && b[start] == b'.' {
            start += 1;
        }
        if start == at {
            continue;
        }
        let Some(end) = domain_end(b, at + 1) else {
            continue;
        };
        out.push(Span { start, end, label });
        resume = end;
    }
}

/// The end of a domain name (`label.label.tld`, letters-only TLD) starting at `from`.
fn domain_end(b: &[u8], from: usize) -> Option<usize> {
    let is_label = |c: u8| c.is_ascii_alphanumeric() || c == b'-';
    let mut i = from;
    let mut labels = 0;
    let mut last_label;
    loop {
        let start = i;
        while i < b.len() && is_label(b[i]) {
            i += 1;
        }
        if i == start || b[start] == b'-' || b[i - 1] == b'-' {
            return None;
        }
        labels += 1;
        last_label = (start, i);
        // Another label follows only if a label character comes after the dot (a sentence's
        // full stop ends the address).
        if i + 1 < b.len() && b[i] == b'.' && is_label(b[i + 1]) {
            i += 1;
            continue;
        }
        break;
    }
    let tld = &b[last_label.0..last_label.1];
    let ok = labels >= 2
        && tld.len() >= 2
        && tld.iter().all(u8::is_ascii_alphabetic)
        && !b.get(i).copied().is_some_and(is_word);
    ok.then_some(i)
}

/// IPv6 addresses around a `:`, checked by the standard parser; a candidate needs a digit and
/// two colons, so `std::vec` or `a::b` are not taken.
pub fn ipv6(text: &str, label: u16, out: &mut Vec<Span>) {
    let b = text.as_bytes();
    let is_part = |c: u8| c.is_ascii_hexdigit() || c == b':' || c == b'.';
    let mut resume = 0;
    for colon in memchr::memchr_iter(b':', b) {
        if colon < resume {
            continue;
        }
        let mut start = colon;
        while start > 0 && is_part(b[start - 1]) {
            start -= 1;
        }
        let mut end = colon;
        while end < b.len() && is_part(b[end]) {
            end += 1;
        }
        resume = end;
        // A trailing full stop ends a sentence, not the address.
        while end > start && b[end - 1] == b'.' {
            end -= 1;
        }
        let candidate = &text[start..end];
        let word_before = start > 0 && is_word(b[start - 1]);
        let bounded = !word_before && !b.get(end).copied().is_some_and(is_word);
        // `::1` is the loopback; other compressed forms need five hex digits (`2001::1`), so
        // `12::30` or `1::2` are not taken.
        let hex_digits = candidate.bytes().filter(u8::is_ascii_hexdigit).count();
        let plausible = candidate.bytes().filter(|c| *c == b':').count() >= 2
            && candidate.bytes().any(|c| c.is_ascii_digit())
            && (hex_digits >= 5 || candidate == "::1");
        if bounded && plausible && candidate.parse::<std::net::Ipv6Addr>().is_ok() {
            out.push(Span { start, end, label });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(detector: Builtin, text: &str) -> Vec<&str> {
        let mut spans = Vec::new();
        detector.find(text, 0, &mut spans);
        spans.iter().map(|s| &text[s.start..s.end]).collect()
    }

    #[test]
    fn each_detector_finds_its_values_and_not_their_near_misses() {
        use Builtin::*;
        // (detector, text, what it must find)
        let table: &[(Builtin, &str, &[&str])] = &[
            (
                Email,
                "write to jane.doe+tag@mail.example.co.uk.",
                &["jane.doe+tag@mail.example.co.uk"],
            ),
            (
                Email,
                "mailto:a_b@x-y.io, or B@EXAMPLE.COM",
                &["a_b@x-y.io", "B@EXAMPLE.COM"],
            ),
            (
                Email,
                "@mention, user@localhost, npm i lodash@4.17.21, a@b.c",
                &[],
            ),
            (Email, "x@-bad.com y@bad-.com z@.com", &[]),
            (Phone, "call +44 20 7946 0958 today", &["+44 20 7946 0958"]),
            (
                Phone,
                "+1 (415) 555-0100, +49-30-1234567, +33 1 23 45 67 89",
                &["+1 (415) 555-0100", "+49-30-1234567", "+33 1 23 45 67 89"],
            ),
            (
                Phone,
                "office (415) 555-0100 or 415-555-0100 or 415.555.0100",
                &["(415) 555-0100", "415-555-0100", "415.555.0100"],
            ),
            (Phone, "+14155550100", &["+14155550100"]),
            // Dates, times, versions, prices, ids, scores, short numbers.
            (Phone, "2026-12-01 10:30:00, 01/12/2026, +2026-12-01", &[]),
            (
                Phone,
                "v1.2.3, 10.0.19041.1, $1,299.99, €12.50, +1.5%, +20 points",
                &[],
            ),
            (
                Phone,
                "order 12345678, run-20261201-000123, 1764627600, +123 4",
                &[],
            ),
            (
                Phone,
                "123-45-6789, 978-3-16-148410-0, 555-0100, 3+4=7",
                &[],
            ),
            (
                Card,
                "card 4111 1111 1111 1111 exp",
                &["4111 1111 1111 1111"],
            ),
            (
                Card,
                "4111-1111-1111-1111, 5500005555555559, 378282246310005",
                &["4111-1111-1111-1111", "5500005555555559", "378282246310005"],
            ),
            (
                Card,
                "amex 3782 822463 10005 and 6011111111111117",
                &["3782 822463 10005", "6011111111111117"],
            ),
            // Luhn failures, µs and ms timestamps, long ids, mixed separators, grouping.
            (
                Card,
                "4111111111111112, 1764627600000000, 1764627600000, 12345678901234",
                &[],
            ),
            (
                Card,
                "4111 1111-1111 1111, 41 111111 11111111, order-4111111111111111",
                &[],
            ),
            (Card, "+4111111111111111 a4111111111111111", &[]),
            (
                Secret,
                "key sk-proj-abcdefghijklmnopqrstuvwx1234 here",
                &["sk-proj-abcdefghijklmnopqrstuvwx1234"],
            ),
            (
                Secret,
                "ghp_0123456789abcdefghijABCDEFGHIJ0123456789 and AKIAIOSFODNN7EXAMPLE",
                &[
                    "ghp_0123456789abcdefghijABCDEFGHIJ0123456789",
                    "AKIAIOSFODNN7EXAMPLE",
                ],
            ),
            (
                Secret,
                "Authorization: Bearer abcdefghijklmnop1234.xyz",
                &["Bearer abcdefghijklmnop1234.xyz"],
            ),
            (
                Secret,
                "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
                &[
                    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
                ],
            ),
            (
                Secret,
                "sk_live_abcdefghijklmnop1234 xoxb-1234567890-abcdefghij",
                &["sk_live_abcdefghijklmnop1234", "xoxb-1234567890-abcdefghij"],
            ),
            (
                Secret,
                "sk-learn, task-abcdefghijklmnopqrstuvwxyz, AKIA123, bearer token, eyJhbGciOi",
                &[],
            ),
            (
                Ip,
                "from 192.168.1.20, to 10.0.0.1.",
                &["192.168.1.20", "10.0.0.1"],
            ),
            (
                Ip,
                "fe80::1ff:fe23:4567:890a and 2001:db8::8a2e:370:7334 and ::1",
                &["fe80::1ff:fe23:4567:890a", "2001:db8::8a2e:370:7334", "::1"],
            ),
            (
                Ip,
                "v1.2.3, 1.2.3.4.5, 256.1.1.1, 01.02.03.04, 10:30:45, std::vec, a::b, u8::MAX",
                &[],
            ),
            (
                Ip,
                "00:1a:2b:3c:4d:5e, 2026-12-01T10:30:00Z, v10.0.0.1",
                &[],
            ),
            (
                Secret,
                "key:\n-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----\nok; -----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----",
                &["-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----"],
            ),
            (
                Secret,
                "AKIAIOSFODNN7EXAMPLEXYZ AIzaSyA-1234567890abcdefghijklmnopqrstu",
                &[
                    "AKIAIOSFODNN7EXAMPLE",
                    "AIzaSyA-1234567890abcdefghijklmnopqrstu",
                ],
            ),
            // Values next to other numbers are still found.
            (
                Card,
                "card 4111 1111 1111 1111 123, 4111 1111 1111 1111 12/28",
                &["4111 1111 1111 1111", "4111 1111 1111 1111"],
            ),
            (
                Card,
                "2026-12-01 4111111111111111, qty 2 4111111111111111, 4111.1111.1111.1111",
                &[
                    "4111111111111111",
                    "4111111111111111",
                    "4111.1111.1111.1111",
                ],
            ),
            (Phone, "415-555-0100 2 times", &["415-555-0100"]),
            (
                Ip,
                "10.0.0.0/8, 192.168.1.0/24, from 10.0.0.1 2 times",
                &["10.0.0.0", "192.168.1.0", "10.0.0.1"],
            ),
            // Four-part versions, and short compressed IPv6 look-alikes.
            (
                Ip,
                "AssemblyVersion(\"1.0.0.0\"), version 4.8.1.0, ver 2.0.0.1, 1.2.3.4.5.6",
                &[],
            ),
            (Ip, "12::30, 1::2, ::", &[]),
        ];
        for (detector, text, want) in table {
            assert_eq!(found(*detector, text), *want, "{detector:?} in {text:?}");
        }
    }

    #[test]
    fn luhn_and_issuer_prefixes() {
        use super::super::numbers::{issuer_length_ok, luhn};
        for (digits, ok) in [
            ("4111111111111111", true),
            ("4111111111111112", false),
            ("4012888888881881", true),
            ("2223003122003222", true),
            ("1234567812345670", false), // Luhn-valid, no network starts with 1
        ] {
            assert_eq!(luhn(digits) && issuer_length_ok(digits), ok, "{digits}");
        }
        assert!(luhn("1234567812345670"));
    }

    #[test]
    fn detectors_never_panic_on_odd_text() {
        let texts = [
            "",
            "@",
            "+",
            "(",
            "+(",
            "::",
            ":",
            "1",
            "é@é.é",
            "a@b.cé",
            "+1 (",
            "(1",
            "4111 ",
            "x.@y.co",
            "—+44 20 7946 0958—",
            "１２３",
        ];
        for text in texts {
            for d in Builtin::ALL {
                let mut spans = Vec::new();
                d.find(text, 0, &mut spans);
                for s in spans {
                    assert!(
                        text.is_char_boundary(s.start) && text.is_char_boundary(s.end),
                        "{d:?} {text:?}"
                    );
                }
            }
        }
    }
}
