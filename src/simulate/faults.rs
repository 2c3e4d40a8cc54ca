//! Injected misbehaviour: which requests get a fault (a schedule, deterministic for a seed) and
//! what the fault does to the answer (a status, a redirect, a broken or malformed body, a hang,
//! a slow body), plus the server-side rate limit and history drift.
//!
//! Faults are given in the library as [`Fault`] values, or on `simulate --fault SPEC` in the
//! compact form parsed by [`Fault::from_str`], e.g. `429:rate=0.1:retry-after=2`,
//! `reset:first=3:path=/runs`, `malformed:always:path=wf-0003`.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt as _;

/// What an injected fault does to the answer.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultKind {
    /// Answer with this status (and a small JSON error body).
    Status {
        /// The status, e.g. 429, 500, 502, 503, 504.
        status: u16,
        /// A `Retry-After` header to send.
        retry_after: Option<RetryAfter>,
    },
    /// A 307 to the same path on another origin (`http://host:port`).
    Redirect {
        /// Origin to redirect to.
        origin: String,
    },
    /// Send the headers (with the full `Content-Length`) and half the body, then drop the
    /// connection.
    ResetMidBody,
    /// A complete `200` whose JSON stops in the middle (the body is well framed, the JSON is not).
    TruncatedBody,
    /// Wait this long before answering (past the client's timeout), then answer normally.
    Hang(Duration),
    /// A `200` whose body is not JSON at all (an HTML error page from a proxy).
    Malformed,
    /// Send the real body in small chunks with a pause after each.
    SlowBody {
        /// Pause between chunks.
        pause: Duration,
    },
    /// A 500 whose error body quotes the request's `Authorization` header back (as careless
    /// APIs do): the client must not print it.
    EchoKey,
    /// A 500 whose error body quotes the start of the page it would have served (as APIs that
    /// echo the record they failed on do): messages must not leak what the privacy policy hides.
    EchoRecord,
    /// A `200` whose body is this many bytes (a JSON array padded with spaces), generated
    /// while it is sent, without a `Content-Length`: a client must stop reading at its limit.
    Huge {
        /// Body length.
        bytes: u64,
    },
}

/// A `Retry-After` value, in either of the forms HTTP allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAfter {
    /// `Retry-After: N`.
    Seconds(u64),
    /// `Retry-After: <HTTP-date N seconds from now>`.
    HttpDate(u64),
}

impl RetryAfter {
    /// The header value, dates relative to the current time.
    pub fn header_value(self) -> String {
        match self {
            RetryAfter::Seconds(s) => s.to_string(),
            RetryAfter::HttpDate(s) => {
                // Round up to the next whole second so the wait is never shorter than asked.
                let when = chrono::Utc::now() + chrono::Duration::seconds(s as i64 + 1);
                when.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
            }
        }
    }
}

/// Which matching requests get the fault.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Schedule {
    /// The first N matching requests; then requests pass.
    First(usize),
    /// Each matching request with this probability, decided by a hash of the seed, the fault's
    /// position and the request's number: the same seed injects the same count over N requests.
    Rate(f64),
    /// Every matching request.
    Always,
}

/// One injected fault: which requests (by path substring and schedule) and what happens.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// Substring of the raw request path and query (percent-encoded as received) to match;
    /// `None` matches every request.
    pub path_contains: Option<String>,
    /// What happens.
    pub kind: FaultKind,
    /// Which of the matching requests get it.
    pub schedule: Schedule,
}

impl Fault {
    /// Answer the first `times` requests whose path contains `path` with `status`.
    pub fn status(path: &str, status: u16, times: usize) -> Self {
        Self {
            path_contains: Some(path.to_owned()),
            kind: FaultKind::Status {
                status,
                retry_after: None,
            },
            schedule: Schedule::First(times),
        }
    }

    /// The first `times` requests whose path contains `path` get `kind`.
    pub fn new(path: &str, kind: FaultKind, times: usize) -> Self {
        Self {
            path_contains: Some(path.to_owned()),
            kind,
            schedule: Schedule::First(times),
        }
    }

    /// The same fault on another schedule.
    pub fn on(self, schedule: Schedule) -> Self {
        Self { schedule, ..self }
    }

    /// The same status fault with a `Retry-After` header.
    pub fn with_retry_after(mut self, value: RetryAfter) -> Self {
        if let FaultKind::Status { retry_after, .. } = &mut self.kind {
            *retry_after = Some(value);
        }
        self
    }
}

impl FromStr for Fault {
    type Err = String;

    /// `KIND[:OPTION]…` where KIND is an HTTP status (`429`, `503`…), `reset`, `truncate`,
    /// `malformed`, `echo-key`, `echo-record`, `hang=SECS`, `slow=MILLIS`, `huge=BYTES` or `redirect=http://host:port`, and the options
    /// are `first=N` (the default is `first=1`), `rate=P`, `always`, `path=TEXT` and, for
    /// statuses, `retry-after=SECS` or `retry-date=SECS`.
    fn from_str(spec: &str) -> Result<Self, String> {
        // A redirect's URL holds colons of its own: its options start at the first known one.
        let kind_end = if spec.starts_with("redirect=") {
            [":first=", ":rate=", ":always", ":path="]
                .iter()
                .filter_map(|o| spec.find(o))
                .min()
                .unwrap_or(spec.len())
        } else {
            spec.find(':').unwrap_or(spec.len())
        };
        let (kind_text, options) = spec.split_at(kind_end);
        let parts = options.split(':').filter(|o| !o.is_empty());
        let mut fault = Fault {
            path_contains: None,
            kind: parse_kind(kind_text)?,
            schedule: Schedule::First(1),
        };
        for option in parts {
            let (name, value) = option.split_once('=').unwrap_or((option, ""));
            match name {
                "first" => fault.schedule = Schedule::First(number(name, value)?),
                "rate" => {
                    let p: f64 = number(name, value)?;
                    if !(0.0..=1.0).contains(&p) {
                        return Err(format!("`rate={value}` must be between 0 and 1"));
                    }
                    fault.schedule = Schedule::Rate(p);
                }
                "always" => fault.schedule = Schedule::Always,
                "path" if !value.is_empty() => fault.path_contains = Some(value.to_owned()),
                "retry-after" | "retry-date" => {
                    let secs = number(name, value)?;
                    let FaultKind::Status { retry_after, .. } = &mut fault.kind else {
                        return Err(format!("`{name}` only goes with an HTTP status fault"));
                    };
                    *retry_after = Some(if name == "retry-after" {
                        RetryAfter::Seconds(secs)
                    } else {
                        RetryAfter::HttpDate(secs)
                    });
                }
                _ => return Err(format!("unknown fault option `{option}`")),
            }
        }
        Ok(fault)
    }
}

fn parse_kind(text: &str) -> Result<FaultKind, String> {
    let (name, value) = text.split_once('=').unwrap_or((text, ""));
    Ok(match name {
        "reset" => FaultKind::ResetMidBody,
        "truncate" => FaultKind::TruncatedBody,
        "malformed" => FaultKind::Malformed,
        "echo-key" => FaultKind::EchoKey,
        "echo-record" => FaultKind::EchoRecord,
        "hang" => FaultKind::Hang(Duration::from_secs_f64(number(name, value)?)),
        "slow" => FaultKind::SlowBody {
            pause: Duration::from_millis(number(name, value)?),
        },
        "huge" => FaultKind::Huge {
            bytes: number(name, value)?,
        },
        "redirect" if value.starts_with("http://") || value.starts_with("https://") => {
            FaultKind::Redirect {
                origin: value.trim_end_matches('/').to_owned(),
            }
        }
        _ => match name.parse::<u16>() {
            Ok(status @ 400..=599) => FaultKind::Status {
                status,
                retry_after: None,
            },
            _ => {
                return Err(format!(
                    "unknown fault `{text}`: expected an HTTP status 400-599, reset, truncate, \
                     malformed, echo-key, echo-record, hang=SECS, slow=MILLIS, huge=BYTES or redirect=http://HOST:PORT"
                ));
            }
        },
    })
}

fn number<T: FromStr>(name: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("`{name}={value}` needs a number"))
}

/// The faults of one simulator, how many requests each has matched and how many it hit.
pub(super) struct FaultPlan {
    seed: u64,
    faults: Vec<(Fault, AtomicU64, AtomicU64)>,
    /// Bytes of `Huge` bodies actually sent.
    pub(super) huge_bytes_sent: Arc<AtomicU64>,
}

impl FaultPlan {
    pub(super) fn new(seed: u64, faults: &[Fault]) -> Self {
        Self {
            seed,
            faults: faults
                .iter()
                .map(|f| (f.clone(), AtomicU64::new(0), AtomicU64::new(0)))
                .collect(),
            huge_bytes_sent: Arc::default(),
        }
    }

    /// The fault this request gets, if any: the first fault whose path matches and whose
    /// schedule picks this request.
    pub(super) fn pick(&self, path: &str) -> Option<&FaultKind> {
        self.faults
            .iter()
            .enumerate()
            .find_map(|(i, (fault, seen, hits))| {
                if !fault
                    .path_contains
                    .as_deref()
                    .is_none_or(|p| path.contains(p))
                {
                    return None;
                }
                let n = seen.fetch_add(1, Ordering::SeqCst);
                let hit = match fault.schedule {
                    Schedule::First(times) => n < times as u64,
                    Schedule::Always => true,
                    Schedule::Rate(p) => unit_hash(self.seed, i as u64, n) < p,
                };
                if hit {
                    hits.fetch_add(1, Ordering::SeqCst);
                }
                hit.then_some(&fault.kind)
            })
    }

    /// How many requests each fault was injected into, in the order given.
    pub(super) fn injected(&self) -> Vec<u64> {
        self.faults
            .iter()
            .map(|(_, _, hits)| hits.load(Ordering::SeqCst))
            .collect()
    }
}

/// A number in [0, 1) from (seed, a, b): SplitMix64 of the mixed inputs.
fn unit_hash(seed: u64, a: u64, b: u64) -> f64 {
    let mut z =
        seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// An error answer with the API's `{"detail": …}` body.
pub(super) fn error_response(
    status: StatusCode,
    detail: &str,
    retry_after: Option<&str>,
) -> Response {
    let mut response =
        (status, axum::Json(serde_json::json!({ "detail": detail }))).into_response();
    if let Some(value) = retry_after.and_then(|v| HeaderValue::from_str(v).ok()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// The answer for a fault that replaces the response before the handler runs; `None` for the
/// faults that act on the handler's real answer ([`damage`]) or only delay it.
pub(super) fn replace(kind: &FaultKind, path_and_query: &str) -> Option<Response> {
    match kind {
        FaultKind::Status {
            status,
            retry_after,
        } => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let value = retry_after.map(RetryAfter::header_value);
            Some(error_response(status, "injected fault", value.as_deref()))
        }
        FaultKind::Redirect { origin } => {
            let mut response = error_response(StatusCode::TEMPORARY_REDIRECT, "moved", None);
            if let Ok(value) = HeaderValue::from_str(&format!("{origin}{path_and_query}")) {
                response.headers_mut().insert(header::LOCATION, value);
            }
            Some(response)
        }
        FaultKind::Huge { .. } | FaultKind::EchoKey => None,
        FaultKind::Malformed => Some(
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                "<html><body><h1>502 Bad Gateway</h1></body></html>",
            )
                .into_response(),
        ),
        _ => None,
    }
}

/// A body of `bytes` bytes, `[` then spaces then `]`, generated as it is sent, counting what
/// was sent into `sent`.
pub(super) fn huge_body(bytes: u64, sent: Arc<AtomicU64>) -> Response {
    const CHUNK: u64 = 64 * 1024;
    let chunks = bytes.div_ceil(CHUNK);
    let stream = futures_util::stream::iter(0..chunks).map(move |i| {
        let len = CHUNK.min(bytes - i * CHUNK) as usize;
        let mut chunk = vec![b' '; len];
        if i == 0 {
            chunk[0] = b'[';
        }
        if i + 1 == chunks {
            chunk[len - 1] = b']';
        }
        sent.fetch_add(len as u64, Ordering::Relaxed);
        Ok::<_, std::io::Error>(Bytes::from(chunk))
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// Applies a body fault to the handler's real (successful) answer.
pub(super) async fn damage(kind: &FaultKind, response: Response) -> Response {
    if !response.status().is_success() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return error_response(StatusCode::INTERNAL_SERVER_ERROR, "body", None);
    };
    let half = bytes.slice(..bytes.len() / 2);
    if matches!(kind, FaultKind::EchoRecord) {
        let quoted = String::from_utf8_lossy(&bytes[..bytes.len().min(600)]).into_owned();
        let detail = format!("cannot serialize record {quoted}");
        return error_response(StatusCode::INTERNAL_SERVER_ERROR, &detail, None);
    }
    let body = match kind {
        FaultKind::TruncatedBody => {
            parts.headers.remove(header::CONTENT_LENGTH);
            Body::from(half)
        }
        FaultKind::ResetMidBody => {
            // The full length is announced, half is sent, then the stream fails: hyper closes
            // the connection and the client sees a body cut short.
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
            let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
                Ok(half),
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "injected reset",
                )),
            ];
            Body::from_stream(futures_util::stream::iter(chunks))
        }
        FaultKind::SlowBody { pause } => {
            let pause = *pause;
            let chunks: Vec<Bytes> = bytes
                .chunks(bytes.len().div_ceil(8).max(1))
                .map(Bytes::copy_from_slice)
                .collect();
            let stream = futures_util::stream::iter(chunks).then(move |chunk| async move {
                tokio::time::sleep(pause).await;
                Ok::<_, std::io::Error>(chunk)
            });
            Body::from_stream(stream)
        }
        _ => Body::from(bytes),
    };
    Response::from_parts(parts, body)
}

/// A server-side rate limit: a token bucket of `burst` requests refilled at `per_second`;
/// requests over it get 429 with a `Retry-After` telling when a token will be there.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Sustained requests per second allowed.
    pub per_second: f64,
    /// Requests allowed at once after a quiet spell.
    pub burst: f64,
    /// Send `Retry-After` as an HTTP-date instead of seconds.
    pub http_date: bool,
}

/// The token bucket behind a [`RateLimit`].
pub(super) struct Bucket {
    limit: RateLimit,
    state: std::sync::Mutex<(f64, Instant)>,
}

impl Bucket {
    pub(super) fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            state: std::sync::Mutex::new((limit.burst, Instant::now())),
        }
    }

    /// Takes a token; when there is none, the 429 to send instead.
    pub(super) fn refuse(&self) -> Option<Response> {
        let mut state = self.state.lock().expect("bucket lock");
        let (tokens, at) = &mut *state;
        let now = Instant::now();
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.limit.per_second)
            .min(self.limit.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            return None;
        }
        let wait = ((1.0 - *tokens) / self.limit.per_second).ceil().max(1.0) as u64;
        let value = if self.limit.http_date {
            RetryAfter::HttpDate(wait)
        } else {
            RetryAfter::Seconds(wait)
        };
        Some(error_response(
            StatusCode::TOO_MANY_REQUESTS,
            "rate limit exceeded",
            Some(&value.header_value()),
        ))
    }
}

/// History changing while it is paged: every page request of a generated workflow adds runs at
/// its head, deletes runs from its middle and purges runs from its tail, after a pseudo-random
/// delay that reorders concurrent requests (as a loaded server does).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Drift {
    /// Runs inserted at the head after each page request is answered.
    pub insert_per_page: u64,
    /// Runs deleted after each page request is answered, each picked (seeded) among the runs
    /// at or above the requested offset: every run after it slides toward the head.
    pub delete_per_page: u64,
    /// Oldest runs purged after each page request is answered.
    pub purge_per_page: u64,
    /// Each page request waits a seeded random time below this before it is answered.
    pub jitter: Duration,
}

impl FromStr for Drift {
    type Err = String;

    /// `insert=N,delete=N,purge=N,jitter=MS`, every part optional.
    fn from_str(spec: &str) -> Result<Self, String> {
        let mut drift = Drift::default();
        for part in spec.split(',').filter(|p| !p.is_empty()) {
            let (name, value) = part.split_once('=').unwrap_or((part, ""));
            match name {
                "insert" => drift.insert_per_page = number(name, value)?,
                "delete" => drift.delete_per_page = number(name, value)?,
                "purge" => drift.purge_per_page = number(name, value)?,
                "jitter" => drift.jitter = Duration::from_millis(number(name, value)?),
                _ => {
                    return Err(format!(
                        "unknown drift part `{part}`: expected insert=N, delete=N, purge=N or jitter=MS"
                    ));
                }
            }
        }
        Ok(drift)
    }
}

/// A seeded number in `0..n` for request number `n`'s `k`-th pick.
pub(super) fn pick(seed: u64, request: u64, k: u64, n: u64) -> u64 {
    let stream = u64::MAX - 1 - k;
    (unit_hash(seed, stream, request) * n as f64) as u64 % n.max(1)
}

/// The seeded delay of request number `n` under `drift`.
pub(super) fn jitter(seed: u64, n: u64, drift: &Drift) -> Duration {
    drift.jitter.mul_f64(unit_hash(seed, u64::MAX, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_into_faults_and_bad_specs_say_why() {
        let f: Fault = "429:rate=0.25:retry-date=3:path=/runs".parse().unwrap();
        assert_eq!(
            f,
            Fault {
                path_contains: Some("/runs".into()),
                kind: FaultKind::Status {
                    status: 429,
                    retry_after: Some(RetryAfter::HttpDate(3))
                },
                schedule: Schedule::Rate(0.25),
            }
        );
        assert_eq!(
            "hang=2.5:always".parse::<Fault>().unwrap().kind,
            FaultKind::Hang(Duration::from_millis(2500))
        );
        assert_eq!(
            "reset".parse::<Fault>().unwrap().schedule,
            Schedule::First(1)
        );
        let redirect: Fault = "redirect=http://127.0.0.1:9000:first=2".parse().unwrap();
        assert_eq!(
            (redirect.kind, redirect.schedule),
            (
                FaultKind::Redirect {
                    origin: "http://127.0.0.1:9000".into()
                },
                Schedule::First(2)
            )
        );
        for (bad, says) in [
            ("200", "unknown fault `200`"),
            ("reset:retry-after=2", "only goes with an HTTP status"),
            ("503:rate=2", "between 0 and 1"),
            ("503:first=x", "`first=x` needs a number"),
            ("503:sometimes", "unknown fault option `sometimes`"),
        ] {
            let err = bad.parse::<Fault>().unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn rate_schedules_inject_the_same_count_for_the_same_seed() {
        let fault = Fault::status("", 503, 0).on(Schedule::Rate(0.1));
        let count = |seed| {
            let plan = FaultPlan::new(seed, std::slice::from_ref(&fault));
            (0..10_000).filter(|_| plan.pick("/x").is_some()).count()
        };
        assert_eq!(count(7), count(7));
        assert!((900..1100).contains(&count(7)), "{}", count(7));
        assert_ne!(count(7), count(8));
    }

    #[test]
    fn http_dates_are_in_the_future_and_parse_back() {
        let value = RetryAfter::HttpDate(5).header_value();
        let wait = crate::api::retry::parse_retry_after(&value, chrono::Utc::now()).unwrap();
        assert!(
            wait >= Duration::from_secs(4) && wait <= Duration::from_secs(7),
            "{value}"
        );
    }
}
