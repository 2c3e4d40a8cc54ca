//! Units: one syntax for every duration (`90`, `0.25`, `250ms`, `30s`, `5m`, `1h30m`, `2d`) and
//! every size (`4096`, `512KB`, `256MB`, `1GB`), whether it comes from a flag or the config file,
//! each checked against the bounds of the setting it is for.

use std::time::Duration;

/// Longest duration accepted anywhere (ten years): beyond it arithmetic on timestamps overflows.
const TEN_YEARS: Duration = Duration::from_secs(3650 * 86_400);

/// The bounds of one duration setting.
#[derive(Debug, Clone, Copy)]
pub struct DurationLimits {
    /// Whether zero is refused.
    pub positive: bool,
    /// The longest value accepted.
    pub max: Duration,
}

/// `--lookback`, `lookback`: 0 re-reads nothing before the newest stored run.
pub const LOOKBACK: DurationLimits = DurationLimits {
    positive: false,
    max: TEN_YEARS,
};
/// `--unfinished-horizon`, `unfinished_horizon`.
pub const UNFINISHED_HORIZON: DurationLimits = LOOKBACK;
/// `--deadline`.
pub const DEADLINE: DurationLimits = DurationLimits {
    positive: true,
    max: TEN_YEARS,
};
/// `--request-timeout`, `request_timeout`.
pub const REQUEST_TIMEOUT: DurationLimits = DurationLimits {
    positive: true,
    max: Duration::from_secs(86_400),
};
/// `--retry-delay`, `retry_delay`: the first backoff.
pub const RETRY_DELAY: DurationLimits = DurationLimits {
    positive: true,
    max: Duration::from_secs(60),
};

const DURATION_FORMS: &str = "`90`, `30s`, `5m` or `1h30m`";

impl DurationLimits {
    /// Parses `text` ([`parse_duration`]) and checks it is within these bounds.
    pub fn parse(&self, text: &str) -> Result<Duration, String> {
        let duration = parse_duration(text)?;
        self.check(duration)
            .map_err(|bounds| format!("`{}` is not {bounds}", text.trim()))
    }

    /// `Ok(d)` within bounds, else what the bounds are (`a duration above 0 and at most 1d`).
    pub fn check(&self, d: Duration) -> Result<Duration, String> {
        let low_ok = !(self.positive && d.is_zero());
        if low_ok && d <= self.max {
            return Ok(d);
        }
        let low = if self.positive {
            "above 0"
        } else {
            "of 0 or more"
        };
        Err(format!(
            "a duration {low} and at most {}",
            format_duration(self.max)
        ))
    }
}

/// Parses a duration: a number of seconds (`90`, `0.25`), or numbers with units, largest first
/// (`250ms`, `30s`, `5m`, `1h30m`, `1.5h`, `2d`). At most ten years.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let bad = || format!("`{t}` is not a duration like {DURATION_FORMS}");
    if t.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = t.parse::<f64>() {
        // A bare number is seconds, as `sleep 90` and `timeout 90` read it.
        return seconds(secs).ok_or_else(bad);
    }
    let mut total = 0.0_f64;
    let mut rest = t;
    let mut last_unit = f64::INFINITY;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(digits);
        let units = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(units);
        let scale = match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            _ => return Err(bad()),
        };
        // Units largest first, each once: `1h30m`, not `30m1h` or `1h1h`.
        if scale >= last_unit {
            return Err(bad());
        }
        last_unit = scale;
        let value: f64 = number.parse().map_err(|_| bad())?;
        total += value * scale;
        rest = after;
    }
    seconds(total).ok_or_else(bad)
}

fn seconds(secs: f64) -> Option<Duration> {
    (secs.is_finite() && secs >= 0.0 && secs <= TEN_YEARS.as_secs_f64())
        .then(|| Duration::from_secs_f64(secs))
}

/// A duration in the syntax [`parse_duration`] reads, shortest form: `1h30m`, `250ms`, `0s`.
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    let mut text = String::new();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms >= size {
            text.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    if ms > 0 {
        text.push_str(&format!("{ms}ms"));
    }
    text
}

/// Smallest and largest `--max-response-size`.
pub const RESPONSE_SIZE_RANGE: (u64, u64) = (1024, 16 << 30);

/// A byte size: a number with an optional unit `B`, `KB`/`KiB`, `MB`/`MiB`, `GB`/`GiB`
/// (powers of 1024 for all: a response limit is about memory), within [`RESPONSE_SIZE_RANGE`].
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        _ => u32::MAX,
    };
    number
        .parse::<u64>()
        .ok()
        .filter(|_| shift != u32::MAX)
        .and_then(|n| n.checked_mul(1 << shift))
        .and_then(|n| check_size(n).ok())
        .ok_or_else(|| format!("`{t}` is not {SIZE_BOUNDS}"))
}

const SIZE_BOUNDS: &str = "a size between 1KB and 16GB, like `512KB` or `256MB`";

/// `Ok(bytes)` within [`RESPONSE_SIZE_RANGE`], else what the bounds are.
pub fn check_size(bytes: u64) -> Result<u64, String> {
    let (min, max) = RESPONSE_SIZE_RANGE;
    if (min..=max).contains(&bytes) {
        Ok(bytes)
    } else {
        Err(SIZE_BOUNDS.to_owned())
    }
}

/// A request rate: more than 0, at most 100000 per second.
pub fn check_max_rps(rps: f64) -> Result<f64, String> {
    if rps.is_finite() && rps > 0.0 && rps <= 100_000.0 {
        Ok(rps)
    } else {
        Err(format!(
            "`{rps}` is not a rate above 0 and at most 100000 requests per second"
        ))
    }
}

/// `--max-rps`, `--rate-limit`: a number of requests per second.
pub fn parse_rps(text: &str) -> Result<f64, String> {
    text.trim()
        .parse::<f64>()
        .map_err(|_| format!("`{text}` is not a number of requests per second"))
        .and_then(check_max_rps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_every_form_and_refuse_near_misses() {
        let ok = [
            ("90", 90_000),
            ("0", 0),
            ("0.25", 250),
            ("250ms", 250),
            ("30s", 30_000),
            ("5m", 300_000),
            ("1h30m", 5_400_000),
            ("1.5h", 5_400_000),
            ("2d", 172_800_000),
            ("1d2h3m4s5ms", 93_784_005),
            (" 7d ", 604_800_000),
        ];
        for (text, ms) in ok {
            assert_eq!(
                parse_duration(text).map(|d| d.as_millis()),
                Ok(ms),
                "{text}"
            );
        }
        for bad in [
            "", "1w", "h", "5 m", "30m1h", "1h1h", "-5", "1e3x", "NaN", "inf", "3651d", "1..5s",
            "s30",
        ] {
            assert!(parse_duration(bad).is_err(), "`{bad}` was accepted");
        }
    }

    #[test]
    fn bounds_are_said_in_the_same_syntax() {
        assert_eq!(
            REQUEST_TIMEOUT.parse("0"),
            Err("`0` is not a duration above 0 and at most 1d".to_owned())
        );
        assert_eq!(
            RETRY_DELAY.parse("61s"),
            Err("`61s` is not a duration above 0 and at most 1m".to_owned())
        );
        assert_eq!(LOOKBACK.parse("0"), Ok(Duration::ZERO));
        assert_eq!(
            LOOKBACK.check(Duration::from_secs(3651 * 86_400)),
            Err("a duration of 0 or more and at most 3650d".to_owned())
        );
    }

    #[test]
    fn formatted_durations_read_back() {
        for ms in [0, 5, 1000, 59_999, 5_400_000, 93_784_005] {
            let d = Duration::from_millis(ms);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{ms} ms");
        }
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
    }

    #[test]
    fn sizes_take_units_and_bounds() {
        assert_eq!(parse_size("512KB"), Ok(512 << 10));
        assert_eq!(parse_size("1GB"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("2 MiB"), Ok(2 << 20));
        for bad in ["1", "9TB", "lots", "", "1.5GB", "-1KB"] {
            assert!(parse_size(bad).is_err(), "`{bad}` was accepted");
        }
    }
}
