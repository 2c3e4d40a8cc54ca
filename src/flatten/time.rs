//! Timestamp parsing for the forms the Orchestra docs show, normalised to UTC microseconds.

use chrono::{DateTime, Datelike, NaiveDateTime, SecondsFormat, Utc};

/// Naive forms (no offset) accepted and read as UTC.
const NAIVE_FORMATS: [&str; 2] = ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"];
/// Offset forms without the colon RFC 3339 requires (`+0000`).
const OFFSET_FORMATS: [&str; 2] = ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z"];

/// Parses `2025-03-12T03:39:30.476391Z`, `2025-03-12 00:59:55.465508+00:00`, other offsets,
/// `T` or a space between date and time, with or without fractional seconds, into microseconds
/// since the Unix epoch in UTC. A timestamp without an offset is taken to be UTC.
/// Returns `None` when the text is none of these forms.
pub fn parse_timestamp(text: &str) -> Option<i64> {
    let text = text.trim();
    let utc = DateTime::parse_from_rfc3339(text)
        .ok()
        .or_else(|| {
            OFFSET_FORMATS
                .iter()
                .find_map(|format| DateTime::parse_from_str(text, format).ok())
        })
        .map(|dt| dt.to_utc())
        .or_else(|| {
            NAIVE_FORMATS.iter().find_map(|format| {
                NaiveDateTime::parse_from_str(text, format)
                    .ok()
                    .map(|naive| naive.and_utc())
            })
        })?;
    // A run started before 2000 or after 2099 is a broken value, not a run: stored as one it
    // would open a partition of its own (3,000 such runs, 9,000 files).
    PLAUSIBLE_YEARS
        .contains(&utc.year())
        .then(|| utc.timestamp_micros())
}

/// The years a timestamp is read in; others are unreadable values (stored as NULL, traced in
/// `_rejected/`).
pub const PLAUSIBLE_YEARS: std::ops::RangeInclusive<i32> = 2000..=2099;

/// Formats microseconds since the epoch as RFC 3339 UTC with 6 fractional digits, as the API does.
pub fn format_timestamp(micros: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(micros)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: i64 = 1_741_750_770_476_391; // 2025-03-12T03:39:30.476391Z

    #[test]
    fn accepts_every_documented_form() {
        let cases = [
            ("2025-03-12T03:39:30.476391Z", BASE),
            ("2025-03-12T03:39:30.476391+00:00", BASE),
            ("2025-03-12 03:39:30.476391+00:00", BASE),
            ("2025-03-12 03:39:30.476391Z", BASE),
            ("2025-03-12T03:39:30Z", BASE - 476_391),
            ("2025-03-12 03:39:30+00:00", BASE - 476_391),
            ("2025-03-12T05:39:30.476391+02:00", BASE),
            ("2025-03-11T22:39:30.476391-05:00", BASE),
            ("2025-03-12T03:39:30.476391+0000", BASE),
            ("2025-03-12T03:39:30.476391", BASE),
            ("2025-03-12 03:39:30", BASE - 476_391),
            ("2025-03-12T03:39:30.4Z", BASE - 76_391),
        ];
        for (text, want) in cases {
            assert_eq!(parse_timestamp(text), Some(want), "{text}");
        }
        // The first and last instants read.
        assert_eq!(
            parse_timestamp("2000-01-01T00:00:00Z"),
            Some(946_684_800_000_000)
        );
        assert_eq!(
            parse_timestamp("2099-12-31T23:59:59.999999Z"),
            Some(4_102_444_799_999_999)
        );
    }

    #[test]
    fn rejects_what_is_not_a_timestamp() {
        for text in [
            "",
            "yesterday",
            "2025-13-12T00:00:00Z",
            "2025-03-12",
            "1741750770",
            "0001-01-01T00:00:00Z",
            "1999-12-31T23:59:59Z",
            "2100-01-01T00:00:00Z",
            "9999-12-31T00:00:00Z",
        ] {
            assert_eq!(parse_timestamp(text), None, "{text}");
        }
    }

    #[test]
    fn formats_like_the_api() {
        assert_eq!(format_timestamp(BASE), "2025-03-12T03:39:30.476391Z");
    }
}
