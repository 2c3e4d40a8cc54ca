//! One adaptive rate limiter shared by every request of an export.
//!
//! With `--max-rps` it spaces request starts at most that many per second. On a 429 the whole
//! client slows down at once: every request waits out the server's `Retry-After` (or a short
//! pause), and the allowed rate is cut to half of what was really being sent. It then grows back
//! by 10% per second without a 429 (additive at low rates), up to `--max-rps` or, without one,
//! until it no longer limits anything. Only one cut is made per pause: the 429s of requests that
//! were already on the wire when the first one came back do not cut the rate again, so a burst of
//! 429s is one slow-down, not a collapse (AIMD, as TCP congestion control does per round trip).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The rate never drops below this many requests per second.
pub const MIN_RATE: f64 = 0.5;
/// Above this, a limit set only by 429s is lifted.
const UNLIMITED_ABOVE: f64 = 5_000.0;
/// Pause after a 429 that names no `Retry-After`.
const DEFAULT_PAUSE: Duration = Duration::from_secs(1);
/// Growth per second without a 429: multiplicative part.
const GROWTH: f64 = 0.10;
/// Growth per second without a 429: additive part (requests per second).
const GROWTH_STEP: f64 = 1.0;
/// Window over which the rate actually sent is measured.
const WINDOW: Duration = Duration::from_secs(1);

/// The shared limiter. Cheap to share through an `Arc`.
#[derive(Debug)]
pub struct RateLimiter {
    max_rps: Option<f64>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Allowed starts per second; `None` when nothing limits.
    rate: Option<f64>,
    /// Earliest start of the next request under `rate`.
    next_slot: Instant,
    /// No request starts before this (a server's `Retry-After`).
    paused_until: Instant,
    /// When the rate was last cut; 429s of requests started before it are not cut for again.
    last_cut: Option<Instant>,
    /// When the rate last grew.
    grown_at: Instant,
    /// Starts within the last [`WINDOW`].
    recent: VecDeque<Instant>,
    /// Times the rate was cut.
    cuts: u64,
}

impl RateLimiter {
    /// A limiter capped at `max_rps` requests per second (`None`: only 429s limit).
    pub fn new(max_rps: Option<f64>) -> Self {
        let now = Instant::now();
        Self {
            max_rps,
            state: Mutex::new(State {
                rate: max_rps,
                next_slot: now,
                paused_until: now,
                last_cut: None,
                grown_at: now,
                recent: VecDeque::new(),
                cuts: 0,
            }),
        }
    }

    /// Waits for this request's turn; returns when it may start (the value to pass to
    /// [`RateLimiter::throttled`] if it gets a 429).
    pub async fn acquire(&self) -> Instant {
        loop {
            let start = self.reserve(Instant::now());
            let now = Instant::now();
            if start <= now {
                return now;
            }
            tokio::time::sleep_until(start.into()).await;
            // A pause may have begun while this request waited: check again.
            if self.state().paused_until <= Instant::now() {
                return Instant::now();
            }
        }
    }

    /// Reserves the next start at or after `now` and records it.
    fn reserve(&self, now: Instant) -> Instant {
        let mut s = self.state();
        self.grow(&mut s, now);
        let mut start = now.max(s.paused_until);
        if let Some(rate) = s.rate {
            start = start.max(s.next_slot);
            s.next_slot = start + Duration::from_secs_f64(1.0 / rate);
        }
        while s
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > WINDOW)
        {
            s.recent.pop_front();
        }
        s.recent.push_back(start);
        start
    }

    /// A request started at `sent_at` got a 429: pause everyone for `retry_after` and, once per
    /// pause, halve the rate.
    pub fn throttled(&self, sent_at: Instant, retry_after: Option<Duration>) {
        let now = Instant::now();
        let mut s = self.state();
        let pause = retry_after.unwrap_or(DEFAULT_PAUSE);
        s.paused_until = s.paused_until.max(now + pause);
        if s.last_cut.is_some_and(|cut| sent_at < cut) {
            return;
        }
        let sent = s
            .recent
            .iter()
            .filter(|t| now.duration_since(**t) <= WINDOW)
            .count() as f64;
        let current = s.rate.map_or(sent, |r| r.min(sent.max(MIN_RATE)));
        s.rate = Some((current / 2.0).max(MIN_RATE));
        s.last_cut = Some(now);
        s.grown_at = s.paused_until;
        s.cuts += 1;
        tracing::info!(target: "api", rate = s.rate, ?pause, "rate limited by the API: slowing down");
    }

    /// Grows a cut rate back, after the pause.
    fn grow(&self, s: &mut State, now: Instant) {
        let Some(rate) = s.rate else { return };
        if now <= s.grown_at {
            return;
        }
        let dt = now.duration_since(s.grown_at).as_secs_f64();
        s.grown_at = now;
        let grown = rate * (1.0 + GROWTH * dt) + GROWTH_STEP * dt;
        s.rate = match self.max_rps {
            Some(max) => Some(grown.min(max)),
            None if grown > UNLIMITED_ABOVE => None,
            None => Some(grown),
        };
    }

    /// The rate allowed now (`None`: unlimited) and how many times it was cut.
    pub fn current(&self) -> (Option<f64>, u64) {
        let s = self.state();
        (s.rate, s.cuts)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state inconsistent: recover it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_rps_spaces_starts_evenly() {
        let limiter = RateLimiter::new(Some(10.0));
        let t0 = Instant::now();
        let starts: Vec<Instant> = (0..5).map(|_| limiter.reserve(t0)).collect();
        for (i, start) in starts.iter().enumerate() {
            let want = Duration::from_millis(100 * i as u64);
            let got = start.duration_since(t0);
            assert!(
                got.abs_diff(want) < Duration::from_millis(1),
                "{i}: {got:?}"
            );
        }
    }

    #[test]
    fn a_burst_of_429s_cuts_the_rate_once_and_pauses_everyone() {
        let limiter = RateLimiter::new(None);
        let t0 = Instant::now();
        let sent: Vec<Instant> = (0..40).map(|_| limiter.reserve(t0)).collect();
        for at in &sent {
            limiter.throttled(*at, Some(Duration::from_secs(2)));
        }
        let (rate, cuts) = limiter.current();
        assert_eq!(cuts, 1);
        assert_eq!(rate, Some(20.0));
        let next = limiter.reserve(Instant::now());
        assert!(next >= t0 + Duration::from_millis(1900), "no pause");
    }

    #[test]
    fn the_rate_grows_back_gradually_and_lifts_without_a_cap() {
        let limiter = RateLimiter::new(None);
        let t0 = Instant::now();
        limiter.throttled(t0, Some(Duration::ZERO));
        // Growth is applied at every request; here once a second.
        let rates: Vec<Option<f64>> = (1..=200)
            .map(|secs| {
                let mut s = limiter.state();
                limiter.grow(&mut s, t0 + Duration::from_secs(secs));
                s.rate
            })
            .collect();
        let r1 = rates[0].unwrap();
        assert!((1.0..3.0).contains(&r1), "{r1}");
        let r10 = rates[9].unwrap();
        assert!(r10 > r1 * 2.0 && r10 < 100.0, "{r10}");
        assert_eq!(rates[199], None);
    }

    #[test]
    fn growth_stops_at_max_rps() {
        let limiter = RateLimiter::new(Some(8.0));
        let t0 = Instant::now();
        let sent: Vec<Instant> = (0..8).map(|_| limiter.reserve(t0)).collect();
        limiter.throttled(sent[0], None);
        let mut s = limiter.state();
        limiter.grow(&mut s, t0 + Duration::from_secs(120));
        assert_eq!(s.rate, Some(8.0));
    }
}
