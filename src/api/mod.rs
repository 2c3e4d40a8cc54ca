//! API client for the Orchestra workflow API: URLs, authentication, timeouts, retries, limits.
//!
//! It owns everything about one HTTP exchange and nothing about paging or rows: callers get the
//! body bytes of a successful response or an [`ApiError`] that names the URL (never the key),
//! the attempts made and the cause. All requests share one concurrency budget, one adaptive
//! rate limiter ([`limiter`]) and one retry budget: retries beyond [`RETRY_BUDGET_RESERVE`] plus
//! [`RETRY_BUDGET_RATIO`] of the requests made fail at once, so a failing API cannot turn an
//! export into a retry storm.

pub mod limiter;
pub mod retry;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderValue, RETRY_AFTER};
use tokio::sync::Semaphore;
use url::Url;

pub use limiter::RateLimiter;
pub use retry::{RetryPolicy, is_transient_status};

/// Documented base URL of the Orchestra workflow API.
pub const DEFAULT_BASE_URL: &str = "https://orchestra.arcee.ai/api/v1/workflow";
/// Time to establish a connection: set low so an unreachable host fails fast.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for a whole request, body included.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest response body accepted; a page is normally well under a few MB.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 256 * 1024 * 1024;
/// Retries any export may make, whatever its size.
pub const RETRY_BUDGET_RESERVE: u64 = 100;
/// Further retries allowed per first attempt (a 429 counts once per pause it begins).
pub const RETRY_BUDGET_RATIO: f64 = 0.2;
/// How much of an error response body is quoted in messages.
const ERROR_BODY_SNIPPET: usize = 200;

/// An API key. Its `Debug` and `Display` never show it.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key; surrounding whitespace (a key file's trailing newline, a BOM) is removed.
    /// Returns `None` when nothing is left.
    pub fn new(key: &str) -> Option<Self> {
        Self::parse(key).ok()
    }

    /// Like [`ApiKey::new`], saying what is wrong: empty, or not sendable in an HTTP header.
    pub fn parse(key: &str) -> Result<Self, &'static str> {
        let key = key.trim_start_matches('\u{feff}').trim();
        if key.is_empty() {
            return Err("is empty");
        }
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(
                "contains spaces, line breaks or characters that cannot be sent in an HTTP header",
            );
        }
        Ok(Self(key.to_owned()))
    }

    /// `text` with every occurrence of the key masked (an API may echo it in an error body).
    pub fn redact(&self, text: &str) -> String {
        text.replace(&self.0, "***")
    }

    fn header(&self) -> Result<HeaderValue, ApiError> {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", self.0))
            .map_err(|_| ApiError::InvalidKey)?;
        value.set_sensitive(true);
        Ok(value)
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

/// Errors of the API stage.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The server answered with a status that is not success.
    #[error(
        "HTTP {status} from `{url}` after {attempts} attempt(s){}",
        snippet(body)
    )]
    Status {
        status: u16,
        url: String,
        attempts: u32,
        body: String,
    },
    /// 401 or 403: the key is missing, wrong or lacks access.
    #[error("HTTP {status} from `{url}`: the API key was rejected")]
    Unauthorized { status: u16, url: String },
    /// The request never got a complete response.
    #[error("request to `{url}` failed after {attempts} attempt(s) in {:.1}s: {kind}", elapsed.as_secs_f64())]
    Transport {
        url: String,
        attempts: u32,
        elapsed: Duration,
        kind: TransportKind,
        #[source]
        source: reqwest::Error,
    },
    /// The export's retry budget is spent: too many requests failed.
    #[error(
        "{cause} from `{url}` after {attempts} attempt(s); not retried: the export already made {retries} retries (its retry budget)"
    )]
    RetryBudgetSpent {
        url: String,
        attempts: u32,
        cause: String,
        retries: u64,
    },
    /// The body was larger than the configured limit.
    #[error("response from `{url}` is larger than {limit} bytes")]
    TooLarge { url: String, limit: u64 },
    /// The key cannot be sent in an HTTP header.
    #[error("the API key contains characters that cannot be sent in an HTTP header")]
    InvalidKey,
    /// The HTTP client could not be built.
    #[error("cannot set up the HTTP client")]
    Client(#[source] reqwest::Error),
}

fn snippet(body: &str) -> String {
    let body = body.trim();
    if body.is_empty() {
        return String::new();
    }
    let cut: String = body.chars().take(ERROR_BODY_SNIPPET).collect();
    let more = if cut.len() < body.len() { "…" } else { "" };
    format!(": {}{more}", cut.replace(['\n', '\r'], " "))
}

/// Transport failure classes, for messages and exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// The host name does not resolve.
    Dns,
    /// No connection: refused, no route, or no answer within the connect timeout.
    Connect,
    /// Connected, but the TLS handshake failed (certificate, protocol, a plain-HTTP server).
    Tls,
    /// No complete response within the timeout.
    Timeout,
    /// The connection broke while sending or receiving.
    Broken,
}

impl TransportKind {
    /// Whether the API could not be reached at all (as opposed to failing mid-exchange).
    pub fn is_unreachable(self) -> bool {
        matches!(
            self,
            TransportKind::Dns | TransportKind::Connect | TransportKind::Tls
        )
    }
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransportKind::Dns => "cannot resolve the host name",
            TransportKind::Connect => "cannot connect",
            TransportKind::Tls => "TLS handshake failed",
            TransportKind::Timeout => "timed out",
            TransportKind::Broken => "connection broken",
        })
    }
}

impl ApiError {
    /// Whether this error means the API could not be reached at all (DNS, connect or TLS).
    pub fn is_connect(&self) -> bool {
        matches!(self, ApiError::Transport { kind, .. } if kind.is_unreachable())
    }
}

/// Settings of the client.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Base URL; endpoint paths are appended to it.
    pub base_url: Url,
    /// The key sent as `Authorization: Bearer …`.
    pub key: ApiKey,
    /// Requests in flight at once, across all workflows.
    pub concurrency: usize,
    /// Time for one request, body included.
    pub request_timeout: Duration,
    /// Time to connect.
    pub connect_timeout: Duration,
    /// Retry policy for transient failures.
    pub retry: RetryPolicy,
    /// Largest body accepted.
    pub max_response_bytes: u64,
    /// Requests started per second at most, across the whole export.
    pub max_rps: Option<f64>,
    /// The field policy: an error body is quoted in messages only as it lets
    /// ([`Policy::protect_body`](crate::privacy::Policy::protect_body)).
    pub policy: Arc<crate::privacy::Policy>,
}

/// Counters shared by all requests.
#[derive(Debug, Default)]
pub struct ClientStats {
    /// HTTP attempts made.
    pub requests: AtomicU64,
    /// Attempts that were retries.
    pub retries: AtomicU64,
    /// Response body bytes received.
    pub bytes: AtomicU64,
    /// Answers that were 429 Too Many Requests.
    pub throttled: AtomicU64,
    /// Of the retries, those of 429s within a pause another began: outside the retry budget.
    pub paused_retries: AtomicU64,
    /// Whether any request got an HTTP answer: until one does, a refused connection or a failed
    /// TLS handshake is a wrong address or scheme, not a blip worth retrying.
    pub answered: AtomicBool,
}

/// Called before each retry wait, for progress reporting.
pub type RetryHook = Arc<dyn Fn(&str, u32, Duration, &str) + Send + Sync>;

/// The Orchestra API client. Cheap to clone.
#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    options: Arc<ClientOptions>,
    auth: HeaderValue,
    permits: Arc<Semaphore>,
    limiter: Arc<RateLimiter>,
    stats: Arc<ClientStats>,
    on_retry: Option<RetryHook>,
}

impl ApiClient {
    /// Builds a client.
    pub fn new(options: ClientOptions) -> Result<Self, ApiError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("orchestra-export/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(options.connect_timeout)
            .timeout(options.request_timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .gzip(true)
            .zstd(true)
            .build()
            .map_err(ApiError::Client)?;
        Ok(Self {
            http,
            auth: options.key.header()?,
            permits: Arc::new(Semaphore::new(options.concurrency.max(1))),
            limiter: Arc::new(RateLimiter::new(options.max_rps)),
            options: Arc::new(options),
            stats: Arc::default(),
            on_retry: None,
        })
    }

    /// Calls `hook(url, retry_number, delay, cause)` before each retry wait.
    pub fn with_retry_hook(mut self, hook: RetryHook) -> Self {
        self.on_retry = Some(hook);
        self
    }

    /// Shared counters.
    pub fn stats(&self) -> &ClientStats {
        &self.stats
    }

    /// The shared rate limiter.
    pub fn limiter(&self) -> &RateLimiter {
        &self.limiter
    }

    /// `{base}/workflows/{id}/runs?limit=…&offset=…`, the id percent-encoded as one segment.
    pub fn runs_url(&self, workflow_id: &str, limit: u32, offset: u64) -> Url {
        let mut url = self.endpoint(&["workflows", workflow_id, "runs"]);
        url.query_pairs_mut()
            .append_pair("limit", &limit.to_string())
            .append_pair("offset", &offset.to_string());
        url
    }

    /// `{base}/workflows/{id}/runs/{run_id}`, both percent-encoded as one segment each.
    pub fn run_url(&self, workflow_id: &str, run_id: &str) -> Url {
        self.endpoint(&["workflows", workflow_id, "runs", run_id])
    }

    /// `{base}/workflows/{id}/runs/{run_id}/steps`.
    pub fn steps_url(&self, workflow_id: &str, run_id: &str) -> Url {
        self.endpoint(&["workflows", workflow_id, "runs", run_id, "steps"])
    }

    /// `{base}/workflows`.
    pub fn workflows_url(&self) -> Url {
        self.endpoint(&["workflows"])
    }

    fn endpoint(&self, segments: &[&str]) -> Url {
        let mut url = self.options.base_url.clone();
        url.set_query(None);
        url.path_segments_mut()
            .expect("base URL was validated as http(s)")
            .pop_if_empty()
            .extend(segments);
        url
    }

    /// GETs `url`, retrying transient failures, and returns the body.
    pub async fn get(&self, url: &Url) -> Result<Vec<u8>, ApiError> {
        let shown = redact_url(url);
        let started = Instant::now();
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let (error, retry_after, in_pause) = match self.attempt(url, &shown).await {
                Ok(body) => return Ok(body),
                Err(Attempt::Final(error)) => return Err(error),
                Err(Attempt::Transient {
                    error,
                    retry_after,
                    in_pause,
                }) => (error, retry_after, in_pause),
            };
            let cause = error.describe();
            match self.may_retry(attempt, in_pause) {
                Ok(()) => {}
                Err(None) => return Err(error.into_api_error(shown, attempt, started.elapsed())),
                Err(Some(retries)) => {
                    return Err(ApiError::RetryBudgetSpent {
                        url: shown,
                        attempts: attempt,
                        cause,
                        retries,
                    });
                }
            }
            self.wait_to_retry(&shown, attempt, retry_after, &cause)
                .await;
        }
    }

    /// Whether attempt number `attempt` (1-based) may be followed by another: `Err(None)` when
    /// the per-request limit is reached, `Err(Some(retries))` when the export's retry budget is
    /// spent. A granted retry is counted. `in_pause`: a 429 within a pause that another 429
    /// began, whose retry that one counted (a pause costs the budget once, not once per request
    /// it held up).
    pub fn may_retry(&self, attempt: u32, in_pause: bool) -> Result<(), Option<u64>> {
        if attempt > self.options.retry.max_retries {
            return Err(None);
        }
        if in_pause {
            self.stats.paused_retries.fetch_add(1, Ordering::Relaxed);
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let requests = self.stats.requests.load(Ordering::Relaxed);
        let paused = self.stats.paused_retries.load(Ordering::Relaxed);
        let budget = |retries: u64| {
            let firsts = requests.saturating_sub(retries);
            RETRY_BUDGET_RESERVE + (firsts as f64 * RETRY_BUDGET_RATIO) as u64
        };
        let granted =
            self.stats
                .retries
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |retries| {
                    let counted = retries.saturating_sub(paused);
                    (counted < budget(retries)).then_some(retries + 1)
                });
        granted
            .map(|_| ())
            .map_err(|retries| Some(retries.saturating_sub(paused)))
    }

    /// Reports and sleeps the backoff before retry number `attempt`.
    pub async fn wait_to_retry(
        &self,
        shown: &str,
        attempt: u32,
        retry_after: Option<Duration>,
        cause: &str,
    ) {
        let delay = self
            .options
            .retry
            .delay(attempt - 1, retry_after, &mut rand::rng());
        if let Some(hook) = &self.on_retry {
            hook(shown, attempt, delay, cause);
        }
        tracing::debug!(target: "api", url = %shown, attempt, ?delay, cause, "retrying");
        tokio::time::sleep(delay).await;
    }

    async fn attempt(&self, url: &Url, shown: &str) -> Result<Vec<u8>, Attempt> {
        let sent_at = self.limiter.acquire().await;
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("semaphore is never closed");
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let response = self
            .http
            .get(url.clone())
            .header(AUTHORIZATION, self.auth.clone())
            .send()
            .await
            .map_err(|e| {
                // A name that does not exist will not appear within a retry's backoff; nor will
                // a server at an address that refuses, or one that speaks no TLS, before the API
                // ever answered (as `curl --retry` does not retry a refused connection). Once it
                // has answered, the same failures are a restart or a blip: retried.
                let first_contact = !self.stats.answered.load(Ordering::Relaxed);
                if is_unknown_host(&e) || (first_contact && is_wrong_address(&e)) {
                    let error = TransientError::Transport(e);
                    Attempt::Final(error.into_api_error(shown.to_owned(), 1, sent_at.elapsed()))
                } else {
                    Attempt::Transient {
                        error: TransientError::Transport(e),
                        retry_after: None,
                        in_pause: false,
                    }
                }
            })?;
        self.stats.answered.store(true, Ordering::Relaxed);
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(Attempt::Final(ApiError::Unauthorized {
                status: status.as_u16(),
                url: shown.to_owned(),
            }));
        }
        if !status.is_success() {
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| retry::parse_retry_after(v, chrono::Utc::now()));
            let mut in_pause = false;
            if status == StatusCode::TOO_MANY_REQUESTS {
                self.stats.throttled.fetch_add(1, Ordering::Relaxed);
                in_pause = !self.limiter.throttled(sent_at, retry_after);
            }
            let body = read_limited(response, ERROR_BODY_SNIPPET as u64 * 4)
                .await
                .map(|(b, _)| {
                    let text = self.options.key.redact(&String::from_utf8_lossy(&b));
                    self.options.policy.protect_body(&text)
                })
                .unwrap_or_default();
            let error = TransientError::Status {
                status: status.as_u16(),
                body,
            };
            return Err(if is_transient_status(status.as_u16()) {
                Attempt::Transient {
                    error,
                    retry_after,
                    in_pause,
                }
            } else {
                Attempt::Final(error.into_api_error(shown.to_owned(), 1, Duration::ZERO))
            });
        }
        let limit = self.options.max_response_bytes;
        if response.content_length().is_some_and(|len| len > limit) {
            return Err(Attempt::Final(ApiError::TooLarge {
                url: shown.to_owned(),
                limit,
            }));
        }
        match read_limited(response, limit).await {
            Ok((body, false)) => {
                self.stats
                    .bytes
                    .fetch_add(body.len() as u64, Ordering::Relaxed);
                Ok(body)
            }
            Ok((_, true)) => Err(Attempt::Final(ApiError::TooLarge {
                url: shown.to_owned(),
                limit,
            })),
            Err(e) => Err(Attempt::Transient {
                error: TransientError::Transport(e),
                retry_after: None,
                in_pause: false,
            }),
        }
    }
}

/// Reads a body up to `limit` bytes; the flag says whether it was longer.
async fn read_limited(
    mut response: reqwest::Response,
    limit: u64,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut body = Vec::with_capacity(response.content_length().unwrap_or(0).min(limit) as usize);
    while let Some(chunk) = response.chunk().await? {
        if (body.len() + chunk.len()) as u64 > limit {
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}

enum Attempt {
    Final(ApiError),
    Transient {
        error: TransientError,
        retry_after: Option<Duration>,
        /// A 429 sent before the pause another 429 began: its retry is that pause's, counted
        /// once.
        in_pause: bool,
    },
}

enum TransientError {
    Status { status: u16, body: String },
    Transport(reqwest::Error),
}

impl TransientError {
    fn describe(&self) -> String {
        match self {
            TransientError::Status { status, .. } => format!("HTTP {status}"),
            TransientError::Transport(e) => transport_kind(e).to_string(),
        }
    }

    fn into_api_error(self, url: String, attempts: u32, elapsed: Duration) -> ApiError {
        match self {
            TransientError::Status { status, body } => ApiError::Status {
                status,
                url,
                attempts,
                body,
            },
            TransientError::Transport(source) => ApiError::Transport {
                url,
                attempts,
                elapsed,
                kind: transport_kind(&source),
                source: source.without_url(),
            },
        }
    }
}

/// A DNS failure that is an answer ("no such host"), not a resolver that is temporarily down.
fn is_unknown_host(e: &reqwest::Error) -> bool {
    if transport_kind(e) != TransportKind::Dns {
        return false;
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(error) = cause {
        if error.to_string().contains("Temporary failure") {
            return false;
        }
        cause = error.source();
    }
    true
}

/// A refused connection or a failed TLS handshake: nothing at that address speaks this API
/// (wrong port or host, `https` to a plain-HTTP server, a certificate that will not verify).
fn is_wrong_address(e: &reqwest::Error) -> bool {
    // A refused connection; or a TLS library error (a certificate or protocol it refuses, such
    // as a plain-HTTP answer), not a reset or an early EOF during the handshake, which a
    // reloading proxy causes and a retry fixes.
    let wanted = match transport_kind(e) {
        TransportKind::Tls => std::io::ErrorKind::InvalidData,
        TransportKind::Connect => std::io::ErrorKind::ConnectionRefused,
        _ => return false,
    };
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(error) = cause {
        let io = error.downcast_ref::<std::io::Error>();
        if io.is_some_and(|io| io.kind() == wanted) {
            return true;
        }
        cause = match io.and_then(std::io::Error::get_ref) {
            Some(inner) => Some(inner),
            None => error.source(),
        };
    }
    false
}

/// Classifies a transport failure by walking its causes. reqwest 0.13 with rustls yields, under
/// a hyper-util connect error: `ConnectError("dns error", …)` when the name does not resolve,
/// `ConnectError("tcp connect error", io::Error)` when refused or timed out, and for a failed
/// TLS handshake an `io::Error` wrapping an `InvalidData` `io::Error` (a `rustls::Error`), a
/// "tls handshake eof", or a reset after the TCP connection was made.
fn transport_kind(e: &reqwest::Error) -> TransportKind {
    if !e.is_connect() {
        return if e.is_timeout() {
            TransportKind::Timeout
        } else {
            TransportKind::Broken
        };
    }
    let mut tls = false;
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(error) = cause {
        let text = error.to_string();
        if text.starts_with("dns error") || text.contains("failed to lookup address") {
            return TransportKind::Dns;
        }
        if text.starts_with("tcp ") {
            // hyper-util's TCP stage: "tcp connect error", "tcp open error", …
            return TransportKind::Connect;
        }
        let io = error.downcast_ref::<std::io::Error>();
        tls |= io.is_some_and(|io| io.kind() == std::io::ErrorKind::InvalidData)
            || text.contains("tls handshake");
        // `io::Error::source` skips the error it wraps; `get_ref` does not.
        cause = match io.and_then(std::io::Error::get_ref) {
            Some(inner) => Some(inner),
            None => error.source(),
        };
    }
    // Past DNS and TCP: what failed is the TLS handshake.
    if tls || e.url().is_some_and(|u| u.scheme() == "https") {
        TransportKind::Tls
    } else {
        TransportKind::Connect
    }
}

#[cfg(test)]
mod transport_kind_tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::time::Duration;

    use super::{TransportKind, transport_kind};

    /// A loopback listener that treats each connection with `serve`; returns its port.
    fn listener(serve: fn(std::net::TcpStream)) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || serve(stream));
            }
        });
        port
    }

    fn kind_of(url: &str) -> TransportKind {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let error = runtime.block_on(async {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_millis(500))
                .build()
                .unwrap();
            client.get(url).send().await.unwrap_err()
        });
        transport_kind(&error)
    }

    #[test]
    fn failures_are_told_apart_by_their_causes() {
        let refused = TcpListener::bind("127.0.0.1:0").unwrap();
        let refused_port = refused.local_addr().unwrap().port();
        drop(refused);
        let plain_http = listener(|mut s| {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
        });
        let closes = listener(drop);
        let silent = listener(|s| {
            std::thread::sleep(Duration::from_secs(2));
            drop(s);
        });
        let hangs_up = listener(|mut s| {
            let _ = s.read(&mut [0; 1024]);
        });
        let cases = [
            ("http://nosuch.invalid/".to_owned(), TransportKind::Dns),
            (
                format!("http://127.0.0.1:{refused_port}/"),
                TransportKind::Connect,
            ),
            (
                format!("https://127.0.0.1:{plain_http}/"),
                TransportKind::Tls,
            ),
            (format!("https://127.0.0.1:{closes}/"), TransportKind::Tls),
            (
                format!("http://127.0.0.1:{silent}/"),
                TransportKind::Timeout,
            ),
            (
                format!("http://127.0.0.1:{hangs_up}/"),
                TransportKind::Broken,
            ),
        ];
        for (url, want) in cases {
            assert_eq!(kind_of(&url), want, "{url}");
        }
    }
}

/// Whether `id` can be sent as one URL path segment; the reason when it cannot.
pub fn check_workflow_id(id: &str) -> Result<(), &'static str> {
    if id.trim().is_empty() {
        Err("it is empty")
    } else if id == "." || id == ".." {
        Err("`.` and `..` cannot be used as a URL path segment")
    } else if id.chars().any(char::is_control) {
        Err("it contains control characters")
    } else {
        Ok(())
    }
}

/// A URL safe to show: any password in it is masked.
pub fn redact_url(url: &Url) -> String {
    if url.password().is_some() {
        let mut shown = url.clone();
        let _ = shown.set_password(Some("***"));
        shown.to_string()
    } else if !url.username().is_empty() {
        // `https://TOKEN@host/…`: a user name alone may be the secret.
        let mut shown = url.clone();
        let _ = shown.set_username("***");
        shown.to_string()
    } else {
        url.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(base: &str) -> ApiClient {
        ApiClient::new(ClientOptions {
            base_url: Url::parse(base).unwrap(),
            key: ApiKey::new("k").unwrap(),
            concurrency: 1,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            retry: RetryPolicy::default(),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            max_rps: None,
            policy: Default::default(),
        })
        .unwrap()
    }

    /// Answers one request on `listener` with an empty JSON array, then closes it.
    fn answer_once(listener: std::net::TcpListener) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut stream, _) = listener.accept().unwrap();
            let _ = stream.read(&mut [0; 4096]);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n[]");
        })
    }

    #[test]
    fn a_refused_connection_is_final_until_the_api_answered_and_retried_after() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let base = format!("http://127.0.0.1:{port}/api");
        let fast = |base: &str| {
            let mut c = client(base);
            Arc::get_mut(&mut c.options).unwrap().retry.base_delay = Duration::from_millis(100);
            c
        };
        // Nothing answered yet: a refused connection fails at once, retries or not.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_url = format!(
            "http://127.0.0.1:{}/api",
            closed.local_addr().unwrap().port()
        );
        drop(closed);
        let never = fast(&closed_url);
        let err = runtime
            .block_on(never.get(&never.workflows_url()))
            .unwrap_err();
        assert!(
            matches!(
                err,
                ApiError::Transport {
                    attempts: 1,
                    kind: TransportKind::Connect,
                    ..
                }
            ),
            "{err}"
        );
        // Once it has answered, the same failure is a restart: retried until it is back.
        let c = fast(&base);
        let first = answer_once(listener);
        assert_eq!(runtime.block_on(c.get(&c.workflows_url())).unwrap(), b"[]");
        first.join().unwrap();
        let back = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(400));
            answer_once(std::net::TcpListener::bind(("127.0.0.1", port)).unwrap())
                .join()
                .unwrap();
        });
        assert_eq!(runtime.block_on(c.get(&c.workflows_url())).unwrap(), b"[]");
        back.join().unwrap();
        assert!(c.stats().retries.load(Ordering::Relaxed) >= 1);
    }

    #[test]
    fn retries_held_up_by_one_pause_cost_the_budget_once() {
        let c = client("https://h.example/api/v1/workflow/");
        // No first attempts made: the budget is its reserve.
        for _ in 0..1000 {
            assert_eq!(c.may_retry(1, true), Ok(()), "a 429 within a pause");
        }
        // ... and they leave the budget whole for other failures (a 429 that began a pause
        // is one of those).
        let granted = (0..200).filter(|_| c.may_retry(1, false).is_ok()).count();
        assert_eq!(granted as u64, RETRY_BUDGET_RESERVE);
        assert_eq!(c.may_retry(1, false), Err(Some(RETRY_BUDGET_RESERVE)));
        assert_eq!(
            c.may_retry(99, true),
            Err(None),
            "the per-request limit holds"
        );
    }

    #[test]
    fn workflow_id_is_one_percent_encoded_segment() {
        let c = client("https://h.example/api/v1/workflow/");
        assert_eq!(
            c.runs_url("a/b?c#d%e f", 100, 200).as_str(),
            "https://h.example/api/v1/workflow/workflows/a%2Fb%3Fc%23d%25e%20f/runs?limit=100&offset=200"
        );
        let c = client("https://h.example/api/v1/workflow");
        assert_eq!(
            c.workflows_url().as_str(),
            "https://h.example/api/v1/workflow/workflows"
        );
    }

    #[test]
    fn key_never_shows_in_debug_and_is_trimmed() {
        let key = ApiKey::new(" secret-123\n").unwrap();
        assert_eq!(format!("{key:?}"), "ApiKey(***)");
        assert_eq!(key.0, "secret-123");
        assert!(ApiKey::new(" \n").is_none());
    }

    #[test]
    fn passwords_in_urls_are_masked() {
        let url = Url::parse("https://user:pw@h.example/x").unwrap();
        assert_eq!(redact_url(&url), "https://user:***@h.example/x");
    }
}
