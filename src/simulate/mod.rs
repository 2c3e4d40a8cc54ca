//! Simulate: an Orchestra-compatible API server with seeded, realistic data and injectable faults.
//!
//! Used by `demo`, by the tests and by benchmarks, so none of them needs a key or a network. It
//! serves the documented paths under `/api/v1/workflow`, checks the Bearer key, and records every
//! request (path as received, whether a key came) for tests to assert on. It knows nothing of the
//! exporter's internals: it only speaks HTTP.

mod data;
mod faults;
mod llm;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub use data::{DEFAULT_ANCHOR_US, DataProfile, REGRESSING_WORKFLOW, REGRESSION_DAYS, SimWorkflow};
pub use faults::{Drift, Fault, FaultKind, RateLimit, RetryAfter, Schedule};

/// Path prefix of the API, as on the real service.
pub const API_PREFIX: &str = "/api/v1/workflow";
/// Key the simulator accepts unless told otherwise.
pub const DEFAULT_SIM_KEY: &str = "sim-key";
/// Page size when the request has no `limit`, as documented.
const DEFAULT_LIMIT: usize = 100;

/// A workflow whose records are given verbatim (docs examples, odd ids, bad records).
#[derive(Debug, Clone)]
pub struct Fixture {
    /// Workflow id, any string.
    pub id: String,
    /// Records served newest first, exactly as given.
    pub records: Vec<Value>,
}

/// A workflow whose first page is served as these exact bytes (malformed JSON, invalid UTF-8,
/// lone surrogate escapes, duplicate keys…); every later offset is an empty page.
#[derive(Debug, Clone)]
pub struct RawFixture {
    /// Workflow id, any string.
    pub id: String,
    /// Body of the page at offset 0, byte for byte.
    pub body: Vec<u8>,
}

/// What the simulator serves.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seed of all generated data.
    pub seed: u64,
    /// Generated workflows.
    pub workflows: usize,
    /// Runs per generated workflow (the average when `vary_runs`).
    pub runs_per_workflow: u64,
    /// Spread history sizes between a quarter and 1.75× the average.
    pub vary_runs: bool,
    /// Largest page served whatever `limit` asks (a server-side cap).
    pub page_cap: Option<usize>,
    /// The Bearer key accepted.
    pub api_key: String,
    /// Start time of the newest runs, microseconds since the epoch.
    pub anchor_us: i64,
    /// Workflows with literal records.
    pub fixtures: Vec<Fixture>,
    /// Workflows whose first page is given as raw bytes.
    pub raw_fixtures: Vec<RawFixture>,
    /// Injected failures.
    pub faults: Vec<Fault>,
    /// Delay before answering each request.
    pub latency: Duration,
    /// Serve every page from offset 0, as a broken API that ignores `offset` would.
    pub ignore_offset: bool,
    /// Refuse (400) offsets that are not a multiple of `limit`, as page-numbered APIs do.
    pub aligned_offsets: bool,
    /// A server-side rate limit (429 with `Retry-After` beyond it).
    pub rate_limit: Option<RateLimit>,
    /// Runs arriving and being purged while pages are requested.
    pub drift: Option<Drift>,
    /// Each page of a generated workflow is rendered once and then served as stored bytes, so
    /// the server costs next to no CPU once warm (like static files behind nginx): for
    /// benchmarks, where the exporter must not compete with the data generator.
    pub prerendered: bool,
    /// The shape of generated runs.
    pub profile: DataProfile,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            workflows: 4,
            runs_per_workflow: 250,
            vary_runs: false,
            page_cap: None,
            api_key: DEFAULT_SIM_KEY.to_owned(),
            anchor_us: DEFAULT_ANCHOR_US,
            fixtures: Vec::new(),
            raw_fixtures: Vec::new(),
            faults: Vec::new(),
            latency: Duration::ZERO,
            ignore_offset: false,
            aligned_offsets: false,
            rate_limit: None,
            drift: None,
            prerendered: false,
            profile: DataProfile::Small,
        }
    }
}

/// One request as the simulator received and answered it (requests the client abandoned
/// before the answer are not logged).
#[derive(Debug, Clone)]
pub struct LoggedRequest {
    /// Path and query exactly as received (still percent-encoded).
    pub path_and_query: String,
    /// Whether an `Authorization` header was present.
    pub had_authorization: bool,
    /// Names of the request headers, lower case, in the order received (values are not kept:
    /// one of them is the key).
    pub headers: Vec<String>,
    /// When it arrived, since the simulator started.
    pub received_at: Duration,
    /// How long it took to produce the answer's headers (a streamed body may take longer).
    pub took: Duration,
    /// Status answered.
    pub status: u16,
}

enum Source {
    Generated(usize),
    Fixture(usize),
    Raw(usize),
}

struct SimState {
    config: SimConfig,
    generated: Vec<SimWorkflow>,
    by_id: HashMap<String, Source>,
    faults: faults::FaultPlan,
    bucket: Option<faults::Bucket>,
    started: Instant,
    /// Page requests of generated workflows answered, for drift's seeded jitter.
    page_requests: AtomicU64,
    log: Mutex<Vec<LoggedRequest>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// Changes to generated workflows since start, by index.
    live: Vec<LiveHistory>,
    /// Current records of each fixture (they can be replaced while serving).
    fixture_records: Mutex<Vec<Vec<Value>>>,
    /// Rendered pages by (workflow, offset, limit), when `prerendered`.
    rendered: Mutex<HashMap<(usize, usize, usize), bytes::Bytes>>,
    /// Generated workflows deleted: no longer listed, their runs unknown (404).
    deleted_workflows: Mutex<std::collections::HashSet<usize>>,
}

/// How a generated workflow's history changed while the simulator ran.
#[derive(Default)]
struct LiveHistory {
    /// Runs added at the head.
    added: AtomicU64,
    /// Every run numbered below this is finished.
    finished_below: AtomicU64,
    /// Every run numbered below this was purged.
    purged: AtomicU64,
    /// Runs deleted from the middle, by number.
    deleted: Mutex<std::collections::BTreeSet<u64>>,
}

impl SimState {
    fn new(config: SimConfig) -> Self {
        let generated: Vec<SimWorkflow> = (0..config.workflows as u64)
            .map(|i| {
                let runs = if config.vary_runs {
                    let spread = (i.wrapping_mul(0x9E37_79B9) % 1000) as f64 / 1000.0;
                    ((0.25 + 1.5 * spread) * config.runs_per_workflow as f64) as u64
                } else {
                    config.runs_per_workflow
                };
                SimWorkflow::generate(config.seed, i, runs, config.anchor_us, config.profile)
            })
            .collect();
        let mut by_id = HashMap::new();
        for (i, wf) in generated.iter().enumerate() {
            by_id.insert(wf.id.clone(), Source::Generated(i));
        }
        for (i, fx) in config.fixtures.iter().enumerate() {
            by_id.insert(fx.id.clone(), Source::Fixture(i));
        }
        for (i, fx) in config.raw_fixtures.iter().enumerate() {
            by_id.insert(fx.id.clone(), Source::Raw(i));
        }
        let faults = faults::FaultPlan::new(config.seed, &config.faults);
        let bucket = config.rate_limit.map(faults::Bucket::new);
        let live = (0..generated.len())
            .map(|_| LiveHistory::default())
            .collect();
        let fixture_records =
            Mutex::new(config.fixtures.iter().map(|f| f.records.clone()).collect());
        Self {
            config,
            generated,
            by_id,
            faults,
            bucket,
            started: Instant::now(),
            page_requests: AtomicU64::new(0),
            log: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            live,
            fixture_records,
            rendered: Mutex::default(),
            deleted_workflows: Mutex::default(),
        }
    }

    /// Runs in generated workflow `i` now (purged ones included), and the sequence number
    /// below which all are finished.
    fn history(&self, i: usize) -> (u64, u64) {
        let live = &self.live[i];
        (
            self.generated[i].runs + live.added.load(Ordering::SeqCst),
            live.finished_below.load(Ordering::SeqCst),
        )
    }

    /// Sequence numbers below this are purged from generated workflow `i`.
    fn purged(&self, i: usize) -> u64 {
        self.live[i].purged.load(Ordering::SeqCst)
    }

    /// The numbers of the runs of generated workflow `i` at positions `offset..offset+limit`
    /// now (position 0 is the newest run, the one with the highest number), skipping runs
    /// deleted or purged.
    fn positions(&self, i: usize, offset: u64, limit: u64) -> Vec<u64> {
        let (total, _) = self.history(i);
        let purged = self.purged(i);
        let deleted = self.live[i].deleted.lock().expect("deleted lock");
        // The number at `offset`: each deleted run at or above it moves it one further down.
        let Some(mut seq) = total.checked_sub(1 + offset) else {
            return Vec::new();
        };
        for d in deleted.iter().rev() {
            if *d < seq {
                break;
            }
            match seq.checked_sub(1) {
                Some(next) => seq = next,
                None => return Vec::new(),
            }
        }
        let mut out = Vec::with_capacity(limit.min(10_000) as usize);
        let mut seq = Some(seq);
        while let Some(s) = seq.filter(|s| *s >= purged && (out.len() as u64) < limit) {
            if !deleted.contains(&s) {
                out.push(s);
            }
            seq = s.checked_sub(1);
        }
        out
    }

    /// What workflow `id` is, unless it does not exist (or was deleted).
    fn source(&self, id: &str) -> Option<&Source> {
        let source = self.by_id.get(id)?;
        let deleted = self.deleted_workflows.lock().expect("deleted lock");
        match source {
            Source::Generated(i) if deleted.contains(i) => None,
            source => Some(source),
        }
    }

    /// Whether run `seq` of generated workflow `i` is still served.
    fn live_run(&self, i: usize, seq: u64) -> bool {
        seq >= self.purged(i)
            && !self.live[i]
                .deleted
                .lock()
                .expect("deleted lock")
                .contains(&seq)
    }

    fn page(&self, source: &Source, offset: usize, limit: usize) -> Vec<Value> {
        match source {
            Source::Generated(i) => {
                let wf = &self.generated[*i];
                let (total, finished_below) = self.history(*i);
                self.positions(*i, offset as u64, limit as u64)
                    .into_iter()
                    .map(|seq| wf.run(seq, total, finished_below))
                    .collect()
            }
            Source::Fixture(i) => {
                let records = self.fixture_records.lock().expect("fixture lock");
                records[*i]
                    .iter()
                    .skip(offset)
                    .take(limit)
                    .cloned()
                    .collect()
            }
            // Raw pages cannot be served as values; `list_runs` answers them itself.
            Source::Raw(_) => Vec::new(),
        }
    }
}

/// A running simulator; stops when dropped or on [`SimServer::stop`].
pub struct SimServer {
    addr: SocketAddr,
    state: Arc<SimState>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl SimServer {
    /// Binds `addr` (use port 0 for any free port) and serves on the current Tokio runtime.
    pub async fn start(config: SimConfig, addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(SimState::new(config));
        let (shutdown, stopped) = oneshot::channel::<()>();
        let app = router(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Self {
            addr,
            state,
            shutdown: Some(shutdown),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL to give the exporter (`http://127.0.0.1:PORT/api/v1/workflow`).
    pub fn base_url(&self) -> String {
        format!("http://{}{API_PREFIX}", self.addr)
    }

    /// The generated workflows.
    pub fn workflows(&self) -> &[SimWorkflow] {
        &self.state.generated
    }

    /// Every record of workflow `id` as served, newest first (generated or fixture).
    pub fn records(&self, id: &str) -> Vec<Value> {
        match self.state.by_id.get(id) {
            Some(source) => self.state.page(source, 0, usize::MAX),
            None => Vec::new(),
        }
    }

    /// Deletes generated workflow `index`: it is no longer listed, and its runs are unknown.
    pub fn delete_workflow(&self, index: usize) {
        let mut deleted = self.state.deleted_workflows.lock().expect("deleted lock");
        deleted.insert(index);
    }

    /// Whether generated workflow `index` ever had the run `run_id` (served now, arrived,
    /// deleted or purged since).
    pub fn knows_run(&self, index: usize, run_id: &str) -> bool {
        let (total, _) = self.state.history(index);
        self.state.generated[index].run_seq(run_id, total).is_some()
    }

    /// Requests received so far.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.state.log.lock().expect("log lock").clone()
    }

    /// Adds `count` new runs at the head of generated workflow `index` (they start after every
    /// run before them); the runs that were running at the old head finish.
    pub fn add_runs(&self, index: usize, count: u64) {
        self.state.live[index]
            .added
            .fetch_add(count, Ordering::SeqCst);
    }

    /// Deletes the runs at these positions (0 = newest) of generated workflow `index`, as a
    /// user or a retention job deleting runs from the middle; returns their ids.
    pub fn delete_runs(&self, index: usize, positions: &[u64]) -> Vec<String> {
        let wf = &self.state.generated[index];
        let seqs: Vec<u64> = positions
            .iter()
            .filter_map(|p| self.state.positions(index, *p, 1).first().copied())
            .collect();
        let mut deleted = self.state.live[index].deleted.lock().expect("deleted lock");
        deleted.extend(&seqs);
        seqs.into_iter().map(|seq| wf.run_id(seq)).collect()
    }

    /// Purges the `count` oldest runs of generated workflow `index`.
    pub fn purge_runs(&self, index: usize, count: u64) {
        let (total, _) = self.state.history(index);
        let purged = &self.state.live[index].purged;
        let _ = purged.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |p| {
            Some(p.saturating_add(count).min(total))
        });
    }

    /// Replaces the records fixture `id` serves (as when runs finish or arrive upstream).
    pub fn set_fixture_records(&self, id: &str, records: Vec<Value>) {
        if let Some(Source::Fixture(i)) = self.state.by_id.get(id) {
            self.state.fixture_records.lock().expect("fixture lock")[*i] = records;
        }
    }

    /// Finishes every run that is running or queued now.
    pub fn finish_running(&self) {
        for i in 0..self.state.generated.len() {
            let (total, _) = self.state.history(i);
            self.state.live[i]
                .finished_below
                .store(total, Ordering::SeqCst);
        }
    }

    /// How many requests each configured fault was injected into, in the order given.
    pub fn injected(&self) -> Vec<u64> {
        self.state.faults.injected()
    }

    /// Bytes of `Huge` fault bodies actually sent (a client that stops reading stops them).
    pub fn huge_bytes_sent(&self) -> u64 {
        self.state.faults.huge_bytes_sent.load(Ordering::Relaxed)
    }

    /// The most requests it was answering at the same moment.
    pub fn max_concurrent_requests(&self) -> usize {
        self.state.max_in_flight.load(Ordering::Relaxed)
    }

    /// Stops serving.
    pub fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

fn router(state: Arc<SimState>) -> Router {
    let api = Router::new()
        .route("/workflows", get(list_workflows))
        .route("/workflows/{id}/runs", get(list_runs))
        .route("/workflows/{id}/runs/{run_id}", get(one_run))
        .route("/workflows/{id}/runs/{run_id}/steps", get(run_steps));
    Router::new()
        .nest(API_PREFIX, api)
        .layer(middleware::from_fn_with_state(state.clone(), gatekeeper))
        .with_state(state)
}

/// Logs the request, checks the key, applies the rate limit and injects configured faults.
async fn gatekeeper(State(state): State<Arc<SimState>>, request: Request, next: Next) -> Response {
    let arrived = Instant::now();
    let path_and_query = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let headers: Vec<String> = request
        .headers()
        .keys()
        .map(|k| k.as_str().to_owned())
        .collect();
    let auth = request.headers().get(header::AUTHORIZATION).cloned();
    let _in_flight = InFlight::enter(&state);
    if !state.config.latency.is_zero() {
        tokio::time::sleep(state.config.latency).await;
    }
    let expected = format!("Bearer {}", state.config.api_key);
    let refused = state.bucket.as_ref().and_then(faults::Bucket::refuse);
    let response = if auth.as_ref().and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        error_response(StatusCode::UNAUTHORIZED, "Invalid or missing API key", None)
    } else if let Some(too_many) = refused {
        too_many
    } else {
        match state.faults.pick(&path_and_query) {
            None => next.run(request).await,
            Some(kind) => match faults::replace(kind, &path_and_query) {
                Some(replaced) => replaced,
                None => match kind {
                    FaultKind::Huge { bytes } => {
                        faults::huge_body(*bytes, state.faults.huge_bytes_sent.clone())
                    }
                    FaultKind::EchoKey => {
                        let sent = auth.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("");
                        let detail = format!("cannot handle request with Authorization: {sent}");
                        error_response(StatusCode::INTERNAL_SERVER_ERROR, &detail, None)
                    }
                    FaultKind::Hang(wait) => {
                        tokio::time::sleep(*wait).await;
                        next.run(request).await
                    }
                    _ => faults::damage(kind, next.run(request).await).await,
                },
            },
        }
    };
    state.log.lock().expect("log lock").push(LoggedRequest {
        path_and_query,
        had_authorization: auth.is_some(),
        headers,
        received_at: arrived.duration_since(state.started),
        took: arrived.elapsed(),
        status: response.status().as_u16(),
    });
    response
}

/// Counts a request as in flight until dropped (also when the client goes away mid-answer).
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(state: &'a SimState) -> Self {
        let now = state.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        state.max_in_flight.fetch_max(now, Ordering::Relaxed);
        Self(&state.in_flight)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

use faults::error_response;

#[derive(Deserialize)]
struct PageQuery {
    limit: Option<String>,
    offset: Option<String>,
}

async fn list_workflows(State(state): State<Arc<SimState>>) -> Response {
    let deleted = state
        .deleted_workflows
        .lock()
        .expect("deleted lock")
        .clone();
    let mut list: Vec<Value> = (state.generated.iter().enumerate())
        .filter(|(i, _)| !deleted.contains(i))
        .map(|(_, wf)| wf.summary())
        .collect();
    let fixture_ids = state.config.fixtures.iter().map(|f| &f.id);
    for id in fixture_ids.chain(state.config.raw_fixtures.iter().map(|f| &f.id)) {
        list.push(serde_json::json!({ "workflow_id": id, "name": id, "status": "active" }));
    }
    axum::Json(list).into_response()
}

async fn list_runs(
    State(state): State<Arc<SimState>>,
    Path(id): Path<String>,
    Query(query): Query<PageQuery>,
) -> Response {
    let Some(source) = state.source(&id) else {
        return error_response(StatusCode::NOT_FOUND, "Workflow not found", None);
    };
    let parse = |v: Option<&String>, default: usize| match v {
        None => Some(default),
        Some(v) => v.parse::<usize>().ok(),
    };
    let (Some(limit), Some(offset)) = (
        parse(query.limit.as_ref(), DEFAULT_LIMIT),
        parse(query.offset.as_ref(), 0),
    ) else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "limit and offset must be integers",
            None,
        );
    };
    if state.config.aligned_offsets && limit > 0 && !offset.is_multiple_of(limit) {
        return error_response(
            StatusCode::BAD_REQUEST,
            "offset must be a multiple of limit",
            None,
        );
    }
    let limit = state.config.page_cap.map_or(limit, |cap| limit.min(cap));
    if let (true, Source::Generated(i)) = (state.config.prerendered, source) {
        return prerendered_page(&state, *i, offset, limit);
    }
    if let (Some(drift), Source::Generated(i)) = (state.config.drift, source) {
        return drifting_page(&state, *i, &drift, offset, limit).await;
    }
    let offset = if state.config.ignore_offset {
        0
    } else {
        offset
    };
    if let Source::Raw(i) = source {
        let body = if offset == 0 {
            state.config.raw_fixtures[*i].body.clone()
        } else {
            b"[]".to_vec()
        };
        return ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    }
    axum::Json(state.page(source, offset, limit)).into_response()
}

/// A page rendered on its first request and served as stored bytes after that.
fn prerendered_page(state: &SimState, i: usize, offset: usize, limit: usize) -> Response {
    let key = (i, offset, limit);
    let cached = state
        .rendered
        .lock()
        .expect("render cache lock")
        .get(&key)
        .cloned();
    let body = cached.unwrap_or_else(|| {
        let page = state.page(&Source::Generated(i), offset, limit);
        let body = bytes::Bytes::from(serde_json::to_vec(&page).expect("JSON values serialize"));
        let mut cache = state.rendered.lock().expect("render cache lock");
        cache.insert(key, body.clone());
        body
    });
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// A page of a generated workflow under drift: answered after a seeded delay, after which runs
/// arrive at the head and leave from the tail.
async fn drifting_page(
    state: &SimState,
    i: usize,
    drift: &Drift,
    offset: usize,
    limit: usize,
) -> Response {
    let n = state.page_requests.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(faults::jitter(state.config.seed, n, drift)).await;
    let page = state.page(&Source::Generated(i), offset, limit);
    let live = &state.live[i];
    // Deleted above the offset asked for (or at it): every run after it slides up.
    for k in 0..drift.delete_per_page {
        let position = faults::pick(state.config.seed, n, k, offset as u64 + 1);
        if let Some(seq) = state.positions(i, position, 1).first() {
            live.deleted.lock().expect("deleted lock").insert(*seq);
        }
    }
    live.added
        .fetch_add(drift.insert_per_page, Ordering::SeqCst);
    let (total, _) = state.history(i);
    let _ = live
        .purged
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |p| {
            Some(p.saturating_add(drift.purge_per_page).min(total))
        });
    axum::Json(page).into_response()
}

/// A run by id, and the node that failed it when it failed (generated workflows know it).
fn find_run(state: &SimState, id: &str, run_id: &str) -> Option<(Value, Option<String>)> {
    match state.source(id)? {
        Source::Generated(i) => {
            let wf = &state.generated[*i];
            let (total, finished_below) = state.history(*i);
            let seq = wf
                .run_seq(run_id, total)
                .filter(|seq| state.live_run(*i, *seq))?;
            let run = wf.run(seq, total, finished_below);
            let done = run["all_outputs"].as_object().map_or(0, |m| m.len());
            let failing = (run["status"] == "failed")
                .then(|| wf.nodes.get(done).map(|n| (*n).to_owned()))
                .flatten();
            Some((run, failing))
        }
        Source::Raw(_) => None,
        Source::Fixture(i) => {
            let records = state.fixture_records.lock().expect("fixture lock");
            let run = records[*i]
                .iter()
                .find(|r| r.get("id").and_then(Value::as_str) == Some(run_id))?
                .clone();
            let failing = (run["status"] == "failed").then(|| "unknown".to_owned());
            Some((run, failing))
        }
    }
}

/// The steps of a run, consistent with it: one completed step per entry of `all_outputs` (in
/// order), plus a failed step for the node that failed it. The run's time is split between its
/// steps by node (a model call takes far longer than a router), with jitter from the run id, so
/// the steps add up to the run; LLM nodes report tokens that grow with their output.
pub fn steps_of(run: &Value, failing_node: Option<&str>) -> Vec<Value> {
    use crate::flatten::{format_timestamp, parse_timestamp};
    use rand::{Rng, SeedableRng};
    let start = run["start_time"].as_str().and_then(parse_timestamp);
    let end = run["end_time"].as_str().and_then(parse_timestamp);
    let outputs: Vec<(String, Value)> = run["all_outputs"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let run_id = run["id"].as_str().unwrap_or_default();
    let mut rng =
        rand_chacha::ChaCha8Rng::seed_from_u64(crate::dataset::shard::workflow_hash(run_id));
    let nodes: Vec<&str> = outputs
        .iter()
        .map(|(node, _)| node.as_str())
        .chain(failing_node)
        .collect();
    // Cumulative share of the run's time at the end of each step.
    let weights: Vec<f64> = nodes
        .iter()
        .map(|node| data::step_weight(node) * rng.random_range(0.5..1.5))
        .collect();
    let total: f64 = weights.iter().sum::<f64>().max(f64::MIN_POSITIVE);
    let shares: Vec<f64> = weights
        .iter()
        .scan(0.0, |sum, w| {
            *sum += w;
            Some(*sum / total)
        })
        .collect();
    let at = |i: usize| match (start, end) {
        (Some(s), Some(_)) if i == 0 => Some(s),
        (Some(_), Some(e)) if i == nodes.len() => Some(e),
        (Some(s), Some(e)) => Some(s + ((e - s) as f64 * shares[i - 1]) as i64),
        (Some(s), None) => Some(s + i as i64 * 1_000_000),
        _ => None,
    };
    let mut step = |i: usize, status: &str, error: Value, outputs: Value, inputs: Value| {
        let (s, e) = (at(i), at(i + 1));
        let node = nodes[i];
        let tokens = if status == "completed" && data::LLM_NODES.contains(&node) {
            let written = outputs.to_string().len() as i64 / 4;
            written + rng.random_range(40..600)
        } else {
            0
        };
        serde_json::json!({
            "id": format!("{run_id}-step-{i}"),
            "node_id": node,
            "status": status,
            "start_time": s.map(format_timestamp),
            "end_time": e.map(format_timestamp),
            "elapsed_time": s.zip(e).map(|(s, e)| (e - s) / 1_000_000),
            "error": error,
            "outputs": outputs,
            "inputs": inputs,
            "step_metadata": {"node_type": node},
            "tokens": tokens,
            "user_id": "sim-user",
            "organization_id": "sim-org",
        })
    };
    let mut steps = Vec::with_capacity(nodes.len());
    for (i, (_, value)) in outputs.iter().enumerate() {
        let inputs = if i == 0 {
            run["inputs"].clone()
        } else {
            serde_json::json!({ "from": outputs[i - 1].0 })
        };
        let outputs = serde_json::json!({ "output": value });
        steps.push(step(i, "completed", Value::Null, outputs, inputs));
    }
    if failing_node.is_some() {
        let empty = || serde_json::json!({});
        steps.push(step(
            outputs.len(),
            "failed",
            run["error"].clone(),
            empty(),
            empty(),
        ));
    }
    steps
}

async fn run_steps(
    State(state): State<Arc<SimState>>,
    Path((id, run_id)): Path<(String, String)>,
) -> Response {
    match find_run(&state, &id, &run_id) {
        Some((run, failing)) => axum::Json(steps_of(&run, failing.as_deref())).into_response(),
        None => error_response(StatusCode::NOT_FOUND, "Run not found", None),
    }
}

async fn one_run(
    State(state): State<Arc<SimState>>,
    Path((id, run_id)): Path<(String, String)>,
) -> Response {
    match find_run(&state, &id, &run_id) {
        // The documented example answers with a one-element array.
        Some((run, _)) => axum::Json(vec![run]).into_response(),
        None => error_response(StatusCode::NOT_FOUND, "Run not found", None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flatten::parse_timestamp;

    #[test]
    fn steps_split_their_run_by_node_and_the_failed_one_names_itself() {
        let wf =
            data::SimWorkflow::generate(3, 1, 400, data::DEFAULT_ANCHOR_US, DataProfile::Small);
        let mut shares: HashMap<String, Vec<f64>> = HashMap::new();
        let mut tokens = std::collections::BTreeSet::new();
        let mut failures = 0;
        for seq in 0..398 {
            let run = wf.run(seq, 400, 0);
            let done = run["all_outputs"].as_object().unwrap().len();
            let failing = (run["status"] == "failed").then(|| wf.nodes[done]);
            let steps = steps_of(&run, failing);
            let time = |v: &Value| parse_timestamp(v.as_str().unwrap()).unwrap();
            // Steps follow each other and cover the run exactly.
            assert_eq!(time(&steps[0]["start_time"]), time(&run["start_time"]));
            assert_eq!(
                time(&steps.last().unwrap()["end_time"]),
                time(&run["end_time"])
            );
            for pair in steps.windows(2) {
                assert_eq!(pair[0]["end_time"], pair[1]["start_time"]);
            }
            let span = (time(&run["end_time"]) - time(&run["start_time"])) as f64;
            for step in &steps {
                let took = (time(&step["end_time"]) - time(&step["start_time"])) as f64;
                if span > 0.0 {
                    let node = step["node_id"].as_str().unwrap().to_owned();
                    shares.entry(node).or_default().push(took / span);
                }
                if let Some(t) = step["tokens"].as_i64().filter(|t| *t > 0) {
                    tokens.insert(t);
                }
            }
            if let Some(node) = failing {
                failures += 1;
                let last = steps.last().unwrap();
                assert_eq!(last["status"], "failed");
                assert_eq!(last["node_id"], node);
                let error = last["error"].as_str().unwrap();
                assert!(error.contains(&format!("'{node}'")), "{error}");
            }
        }
        assert!(failures > 5, "{failures} failed runs");
        assert!(tokens.len() > 100, "token counts vary: {}", tokens.len());
        // A summarizing model call takes far longer than routing.
        assert_eq!(wf.nodes, ["prompt", "guardrail", "summarize", "router"]);
        let mean = |node: &str| shares[node].iter().sum::<f64>() / shares[node].len() as f64;
        assert!(mean("summarize") > 5.0 * mean("router"), "{shares:?}");
    }
}
