//! One adaptive rate limiter shared by every request of an export.
//!
//! With `--max-rps` it spaces request starts at most that many per second. On a 429 the whole
//! client slows down at once: every request waits out the server's `Retry-After` (or a short
//! pause), and the allowed rate is cut to half of what was really being sent. It then grows back
//! by 25% per second without a 429 (plus 2 requests per second, so a low rate recovers), up to `--max-rps` or, without one,
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
const GROWTH: f64 = 0.25;
/// Growth per second without a 429: additive part (requests per second).
const GROWTH_STEP: f64 = 2.0;
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
    /// [`RateLimiter::throttled`] if it gets a 429). Nothing is reserved while waiting, so a
    /// request given up meanwhile costs no slot and a rate that grows applies at once.
    pub async fn acquire(&self) -> Instant {
        loop {
            let now = Instant::now();
            match self.try_start(now) {
                Ok(()) => return now,
                Err(at) => tokio::time::sleep_until(at.into()).await,
            }
        }
    }

    /// Starts a request at `now` if the pause and the rate allow it; otherwise says when to
    /// try again.
    fn try_start(&self, now: Instant) -> Result<(), Instant> {
        let mut s = self.state();
        self.grow(&mut s, now);
        let mut at = s.paused_until;
        if s.rate.is_some() {
            at = at.max(s.next_slot);
        }
        if at > now {
            return Err(at);
        }
        if let Some(rate) = s.rate {
            let interval = Duration::from_secs_f64(1.0 / rate);
            // After an idle spell, start from now: no burst of saved-up slots.
            let base = if s.next_slot + interval < now {
                now
            } else {
                s.next_slot
            };
            s.next_slot = base + interval;
        }
        while s
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > WINDOW)
        {
            s.recent.pop_front();
        }
        s.recent.push_back(now);
        Ok(())
    }

    /// A request started at `sent_at` got a 429: pause everyone for `retry_after` and, once per
    /// pause, halve the rate. Returns whether this 429 began a new pause (one sent before the
    /// last cut belongs to that pause).
    pub fn throttled(&self, sent_at: Instant, retry_after: Option<Duration>) -> bool {
        let now = Instant::now();
        let mut s = self.state();
        let pause = retry_after.unwrap_or(DEFAULT_PAUSE);
        s.paused_until = s.paused_until.max(now + pause);
        if s.last_cut.is_some_and(|cut| sent_at < cut) {
            return false;
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
        true
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
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // When to try again, in whole milliseconds after t0 (`None`: started).
        let start = |ms: u64| {
            limiter
                .try_start(at(ms))
                .err()
                .map(|t| (t.duration_since(t0).as_secs_f64() * 1000.0).round() as u64)
        };
        assert_eq!(start(0), None);
        assert_eq!(start(0), Some(100));
        assert_eq!(start(100), None);
        assert_eq!(start(150), Some(200));
        // After an idle second, one start, not ten saved up.
        assert_eq!(start(1200), None);
        assert_eq!(start(1200), Some(1300));
    }

    #[test]
    fn a_burst_of_429s_cuts_the_rate_once_and_pauses_everyone() {
        let limiter = RateLimiter::new(None);
        let t0 = Instant::now();
        for _ in 0..40 {
            assert_eq!(limiter.try_start(t0), Ok(()));
        }
        let began: Vec<bool> = (0..40)
            .map(|_| limiter.throttled(t0, Some(Duration::from_secs(2))))
            .collect();
        // Only the first began a pause: the retry budget counts that one.
        assert_eq!(began.iter().filter(|b| **b).count(), 1);
        assert!(began[0]);
        let (rate, cuts) = limiter.current();
        assert_eq!(cuts, 1);
        assert_eq!(rate, Some(20.0));
        let retry_at = limiter.try_start(Instant::now()).unwrap_err();
        assert!(retry_at >= t0 + Duration::from_millis(1900), "no pause");
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
        assert_eq!(limiter.try_start(t0), Ok(()));
        limiter.throttled(t0, None);
        let mut s = limiter.state();
        limiter.grow(&mut s, t0 + Duration::from_secs(120));
        assert_eq!(s.rate, Some(8.0));
    }
}
