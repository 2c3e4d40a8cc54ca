//! How the report's numbers read: each shown column has a [`Kind`] that decides its text and
//! alignment (the files keep the raw values), plus round axis ticks and text sparklines.
//! Pure functions, tested with tables.

use polars::prelude::AnyValue;

/// What a shown column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Free text (error messages): wraps.
    Text,
    /// An identifier or a label that does not wrap.
    Label,
    /// A count of runs, steps or rows: `1,145`.
    Count,
    /// A share (0.071): `7.1%`.
    Rate,
    /// A difference of shares (0.192): `+19.2 pts`.
    Change,
    /// A ratio (2.14): `2.14×`.
    Ratio,
    /// A duration in seconds: `8.42 s`, `1 min 51 s`.
    Seconds,
    /// A size in bytes: `1.2 KB`.
    Bytes,
    /// An instant: `2026-10-10 06:18` (UTC).
    Time,
    /// An amount of money: `1,234.56`.
    Money,
}

impl Kind {
    /// Whether the column is a number (right-aligned).
    pub fn numeric(self) -> bool {
        matches!(
            self,
            Kind::Count
                | Kind::Rate
                | Kind::Change
                | Kind::Ratio
                | Kind::Seconds
                | Kind::Bytes
                | Kind::Money
        )
    }

    /// The text of `value` in a column of this kind (`—` for NULL).
    pub fn format(self, value: &AnyValue<'_>) -> String {
        if value.is_null() {
            return "—".to_owned();
        }
        let number = value.extract::<f64>();
        match (self, number) {
            (Kind::Count, Some(v)) => count(v),
            (Kind::Rate, Some(v)) => rate(v),
            (Kind::Change, Some(v)) => format!("{:+.1} pts", v * 100.0),
            (Kind::Ratio, Some(v)) => format!("{v:.2}×"),
            (Kind::Seconds, Some(v)) => seconds(v),
            (Kind::Bytes, Some(v)) => bytes(v),
            (Kind::Money, Some(v)) => money(v),
            (Kind::Time, _) => time(value),
            _ => text(value),
        }
    }
}

fn text(value: &AnyValue<'_>) -> String {
    match value {
        AnyValue::String(s) => (*s).to_owned(),
        AnyValue::StringOwned(s) => s.to_string(),
        other => other.to_string(),
    }
}

fn time(value: &AnyValue<'_>) -> String {
    let text = value.to_string();
    text.get(..16).unwrap_or(&text).replace('T', " ")
}

/// `1145.0` → `1,145`.
pub fn count(v: f64) -> String {
    let digits = format!("{:.0}", v.abs());
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 && digits != "0" {
        out.insert(0, '-');
    }
    out
}

/// `1234.5678` → `1,234.57`.
pub fn money(v: f64) -> String {
    let cents = (v.abs() * 100.0).round();
    let sign = if v < 0.0 && cents > 0.0 { "-" } else { "" };
    format!(
        "{sign}{}.{:02}",
        count((cents / 100.0).trunc()),
        (cents % 100.0) as i64
    )
}

/// `0.0712` → `7.1%`.
pub fn rate(v: f64) -> String {
    if v == 0.0 {
        "0%".to_owned()
    } else {
        format!("{:.1}%", v * 100.0)
    }
}

/// Seconds as people read them: two decimals under 10 s, one under a minute, then minutes and
/// hours.
pub fn seconds(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2} s")
    } else if v < 60.0 {
        format!("{v:.1} s")
    } else if v < 3600.0 {
        let s = v.round() as i64;
        format!("{} min {:02} s", s / 60, s % 60)
    } else {
        let m = (v / 60.0).round() as i64;
        format!("{} h {:02} min", m / 60, m % 60)
    }
}

/// `1234.0` → `1.2 KB` (powers of 1000).
pub fn bytes(v: f64) -> String {
    if v < 1000.0 {
        format!("{v:.0} B")
    } else if v < 1e6 {
        format!("{:.1} KB", v / 1e3)
    } else if v < 1e9 {
        format!("{:.1} MB", v / 1e6)
    } else {
        format!("{:.1} GB", v / 1e9)
    }
}

/// Round ticks from 0 to at least `max`: steps of 1, 2 or 5 times a power of ten, at most
/// `most` steps.
pub fn ticks(max: f64, most: usize) -> Vec<f64> {
    if !max.is_finite() || max <= 0.0 {
        return vec![0.0, 1.0];
    }
    let rough = max / most.max(1) as f64;
    let power = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|s| (max / s).ceil() as usize <= most.max(1))
        .unwrap_or(10.0 * power);
    let n = (max / step - 1e-9).ceil().max(1.0) as usize;
    (0..=n).map(|i| i as f64 * step).collect()
}

/// A tick's label: no decimals beyond the step's.
pub fn tick_label(v: f64, step: f64, as_rate: bool) -> String {
    let (v, step) = if as_rate {
        (v * 100.0, step * 100.0)
    } else {
        (v, step)
    };
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    };
    let text = if decimals == 0 && v >= 1000.0 {
        count(v)
    } else {
        format!("{v:.decimals$}")
    };
    if as_rate { format!("{text}%") } else { text }
}

/// A text sparkline of `values` (`None` for days without runs): `▁▂▅█ ▃`.
pub fn sparkline(values: &[Option<f64>]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = values.iter().flatten().copied().fold(0.0_f64, f64::max);
    values
        .iter()
        .map(|v| match v {
            None => ' ',
            Some(_) if max <= 0.0 => BARS[0],
            Some(v) => BARS[((v / max) * 7.0).round().clamp(0.0, 7.0) as usize],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_formats_its_values() {
        let cases: &[(Kind, AnyValue<'_>, &str)] = &[
            // A duration is seconds, never a ratio (the bug `duration_s` → `110.96×`).
            (Kind::Seconds, AnyValue::Float64(110.956), "1 min 51 s"),
            (Kind::Seconds, AnyValue::Float64(8.4249), "8.42 s"),
            (Kind::Seconds, AnyValue::Float64(42.06), "42.1 s"),
            (Kind::Seconds, AnyValue::Float64(7384.0), "2 h 03 min"),
            (Kind::Ratio, AnyValue::Float64(2.1449), "2.14×"),
            (Kind::Rate, AnyValue::Float64(0.0712), "7.1%"),
            (Kind::Rate, AnyValue::Float64(0.0), "0%"),
            (Kind::Change, AnyValue::Float64(0.192), "+19.2 pts"),
            (Kind::Change, AnyValue::Float64(-0.031), "-3.1 pts"),
            (Kind::Count, AnyValue::Int64(1145), "1,145"),
            (Kind::Count, AnyValue::Int64(36_540_000), "36,540,000"),
            (Kind::Count, AnyValue::Int64(999), "999"),
            (Kind::Count, AnyValue::Float64(-1234.0), "-1,234"),
            (Kind::Bytes, AnyValue::Float64(812.0), "812 B"),
            (Kind::Bytes, AnyValue::Float64(5_830.0), "5.8 KB"),
            (Kind::Bytes, AnyValue::Float64(2_400_000.0), "2.4 MB"),
            (Kind::Text, AnyValue::String("a | b"), "a | b"),
            (Kind::Money, AnyValue::Float64(1234.5678), "1,234.57"),
            (Kind::Money, AnyValue::Float64(0.004), "0.00"),
            (Kind::Money, AnyValue::Float64(99.999), "100.00"),
            (Kind::Count, AnyValue::Null, "—"),
        ];
        for (kind, value, want) in cases {
            assert_eq!(kind.format(value), *want, "{kind:?} {value:?}");
        }
    }

    #[test]
    fn ticks_are_round_and_cover_the_maximum() {
        let cases: &[(f64, usize, &[f64])] = &[
            (63.0, 4, &[0.0, 20.0, 40.0, 60.0, 80.0]),
            (100.0, 4, &[0.0, 50.0, 100.0]),
            (0.27, 4, &[0.0, 0.1, 0.2, 0.3]),
            (1340.0, 5, &[0.0, 500.0, 1000.0, 1500.0]),
            (7.0, 4, &[0.0, 2.0, 4.0, 6.0, 8.0]),
            (0.0, 4, &[0.0, 1.0]),
        ];
        for (max, most, want) in cases {
            let got = ticks(*max, *most);
            assert_eq!(got.len(), want.len(), "{max}: {got:?}");
            for (g, w) in got.iter().zip(*want) {
                assert!((g - w).abs() < 1e-9, "{max}: {got:?}");
            }
        }
        assert_eq!(tick_label(0.2, 0.1, true), "20%");
        assert_eq!(tick_label(0.05, 0.05, true), "5%");
        assert_eq!(tick_label(1500.0, 500.0, false), "1,500");
        assert_eq!(tick_label(0.3, 0.1, false), "0.3");
    }

    #[test]
    fn sparklines_scale_to_the_largest_value_and_leave_gaps() {
        assert_eq!(
            sparkline(&[Some(0.0), Some(4.0), None, Some(8.0), Some(2.0)]),
            "▁▅ █▃"
        );
        assert_eq!(sparkline(&[Some(0.0), Some(0.0)]), "▁▁");
        assert_eq!(sparkline(&[]), "");
    }
}
