//! Which failures are worth another attempt, and how long to wait before it.
//!
//! Kept pure (no I/O, no clock) so the policy is pinned by tests: 408, 429 and every 5xx are
//! transient, as are connection failures, timeouts and bodies cut short; every other status is final.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;

/// Retries after the first attempt, by default; with the default backoff they span about 30 s.
pub const DEFAULT_MAX_RETRIES: u32 = 6;
/// First backoff delay; doubled on each further retry.
pub const DEFAULT_BASE_DELAY: Duration = Duration::from_millis(250);
/// No single backoff waits longer than this, unless the server asked for more with `Retry-After`.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A `Retry-After` longer than this is capped: a scheduled export should fail, not hang for hours.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Whether an HTTP status is worth retrying (408 Request Timeout, 429 Too Many Requests, 5xx).
pub fn is_transient_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500..=599)
}

/// How many times to retry and how long to wait.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Delay before the first retry; doubles each time, capped at [`MAX_BACKOFF`].
    pub base_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: DEFAULT_MAX_RETRIES,
            base_delay: DEFAULT_BASE_DELAY,
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (0-based): exponential with "equal jitter" (half
    /// fixed, half random) so that parallel workers that failed together do not retry together.
    /// A server's `Retry-After` wins when it asks for longer.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>, rng: &mut impl Rng) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << retry.min(20))
            .min(MAX_BACKOFF);
        let half = exp / 2;
        let jittered = half + half.mul_f64(rng.random::<f64>());
        match retry_after {
            Some(asked) => asked.min(MAX_RETRY_AFTER).max(jittered),
            None => jittered,
        }
    }
}

/// Parses a `Retry-After` header: delta-seconds or an HTTP-date (relative to `now`).
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = DateTime::parse_from_rfc2822(value).ok()?;
    let wait = when.with_timezone(&Utc) - now;
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn transient_statuses_are_exactly_408_429_and_5xx() {
        let transient: Vec<u16> = (100..=599).filter(|s| is_transient_status(*s)).collect();
        let mut want = vec![408, 429];
        want.extend(500..=599);
        assert_eq!(transient, want);
    }

    #[test]
    fn backoff_grows_is_jittered_and_capped() {
        let policy = RetryPolicy::default();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for retry in 0..12 {
            let d = policy.delay(retry, None, &mut rng);
            let exp = (DEFAULT_BASE_DELAY * 2u32.pow(retry)).min(MAX_BACKOFF);
            assert!(d >= exp / 2 && d <= exp, "retry {retry}: {d:?} vs {exp:?}");
        }
    }

    #[test]
    fn retry_after_wins_when_longer_and_is_capped() {
        let policy = RetryPolicy::default();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let asked = Duration::from_secs(7);
        assert_eq!(policy.delay(0, Some(asked), &mut rng), asked);
        let huge = Duration::from_secs(86_400);
        assert_eq!(policy.delay(0, Some(huge), &mut rng), MAX_RETRY_AFTER);
    }

    #[test]
    fn parses_both_retry_after_forms() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:27:58Z")
            .unwrap()
            .to_utc();
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
