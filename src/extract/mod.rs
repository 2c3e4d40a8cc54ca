//! Extract: pages through every workflow's run history and hands flattened rows to the writer.
//!
//! It owns paging (offsets, page-size discovery, end of history), the fan-out across workflows
//! and across the pages of one long workflow, and de-duplication of runs by id. It does not
//! build HTTP requests (`api`) or rows (`flatten`), and never touches files (`dataset`).
//!
//! Paging is drift-safe. Each page is requested one record short of the previous page's end, so
//! consecutive pages overlap by one record, the *anchor*: the last record of the part of the
//! history known to be complete. A page that holds the anchor joins up (records before it were
//! pushed down by runs arriving at the head: a *shift*, harmless, their repeats are skipped). A
//! page that does not hold it but brings unseen runs may have left a gap — runs that slid past
//! between two answers — so the boundary is *re-read* from the anchor's offset before going on.
//! The next offset is always derived from the records actually received, so a server that caps
//! `limit` loses nothing; history ends on a short page that brings nothing past the anchor, or
//! an empty one. Once pages come back full, the following pages are requested ahead of the
//! answers, the window doubling up to the concurrency budget (like TCP slow start); a page of an
//! unexpected size or a re-read cancels the speculation.

pub mod state;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arrow::array::RecordBatch;
use futures_util::stream::{self, FuturesOrdered, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::api::{ApiClient, ApiError};
use crate::dataset::PartitionDate;
use crate::flatten::{
    self, FlatPage, KeySet, PageContext, PageError, PartitionRows, Rejected, RunInfo,
    format_timestamp,
};
use crate::progress::Reporter;
use state::{UnfinishedRun, WorkflowState};

/// Largest number of pages of one workflow requested ahead of the answers.
pub const DEFAULT_MAX_WINDOW: usize = 16;

/// Consecutive non-empty pages holding only runs already seen before a workflow is failed. New
/// runs arriving during paging cause at most one such page per page size of arrivals.
const MAX_PAGES_WITHOUT_NEWS: u32 = 5;

/// Re-reads of the anchor's own offset that still do not join before the anchor is taken as
/// deleted upstream (re-reads caused by pages requested ahead do not count).
const MAX_REREADS: u32 = 3;

/// What the extract stage sends to the writer.
#[derive(Debug)]
pub enum SinkItem {
    /// Rows of one partition.
    Rows(PartitionRows),
    /// Records that could not be runs.
    Rejected(Vec<Rejected>),
    /// The steps of one run, in its run's partition.
    Steps(PartitionDate, RecordBatch),
}

/// Paging settings.
#[derive(Debug, Clone)]
pub struct ExtractOptions {
    /// Names the export in state files.
    pub export_id: String,
    /// Incremental look-back before the cursor; `None` pages every history to its end.
    pub lookback: Option<Duration>,
    /// Unfinished runs older than this are given up on.
    pub unfinished_horizon: Duration,
    /// Fetch each run's steps (`GET …/runs/{run_id}/steps`) into the `steps` table.
    pub with_steps: bool,
    /// `limit` sent with every page request.
    pub page_size: u32,
    /// Pages of one workflow in flight at most.
    pub max_window: usize,
    /// Workflows paged at the same time.
    pub parallel_workflows: usize,
}

/// Counters of one workflow's export.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WorkflowStats {
    /// Pages received (including the final empty one).
    pub pages: u64,
    /// Distinct runs exported.
    pub runs: u64,
    /// Runs received again (offsets shifted by new runs, or repeated in a page) and skipped.
    pub duplicates: u64,
    /// Records quarantined to `_rejected/`.
    pub rejected: u64,
    /// Timestamps or numbers that could not be read and were stored as NULL.
    pub unreadable_values: u64,
    /// Stored unfinished runs fetched again by id.
    pub refreshed: u64,
    /// Unfinished runs given up on: still unfinished past the horizon.
    pub abandoned: u64,
    /// Stored unfinished runs the API no longer knows (404).
    pub vanished: u64,
    /// Stored unfinished runs whose fetch failed this time (kept for the next export).
    pub refresh_failed: u64,
    /// Paging stopped at the cursor (an incremental export) rather than at the end.
    pub stopped_at_cursor: bool,
    /// Pages whose start had shifted because runs arrived at the head during paging.
    pub drift_shifts: u64,
    /// Page boundaries re-read because runs could have slid past between two answers.
    pub drift_rereads: u64,
    /// Boundaries whose anchor never came back (deleted upstream); paging went on after it.
    pub drift_unresolved: u64,
    /// Pages fetched again because their body was unreadable (truncated, not JSON).
    pub page_retries: u64,
}

/// How one workflow's export ended.
#[derive(Debug)]
pub struct WorkflowOutcome {
    /// The workflow.
    pub workflow_id: String,
    /// Counters, also for a failed workflow (what was fetched before the failure).
    pub stats: WorkflowStats,
    /// The state to save once the data is committed; `None` when the workflow failed.
    pub new_state: Option<WorkflowState>,
    /// Why it failed, if it did.
    pub error: Option<ExtractError>,
}

/// Why a workflow's export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// A request failed for good.
    #[error("request for offset {offset} failed")]
    Api {
        offset: u64,
        #[source]
        source: ApiError,
    },
    /// A page could not be read.
    #[error("page at offset {offset} from `{url}` is unreadable after {attempts} attempt(s)")]
    Page {
        offset: u64,
        url: String,
        attempts: u32,
        #[source]
        source: PageError,
    },
    /// Stopped because another workflow hit an error that ends the whole export.
    #[error("stopped: {reason}")]
    Cancelled { reason: StopReason },
    /// The id cannot be sent as a URL path segment.
    #[error("invalid workflow id: {reason}")]
    InvalidWorkflowId { reason: &'static str },
    /// Page after page brought only runs already seen: the API ignores `offset`, or is looping.
    #[error(
        "{pages} pages in a row up to offset {offset} held only runs already seen; the API seems to ignore `offset`"
    )]
    NoProgress { pages: u32, offset: u64 },
    /// A fetch task ended without an answer (a bug).
    #[error("a fetch task failed")]
    TaskFailed,
    /// The writer stopped (its own error is reported separately).
    #[error("the dataset writer stopped")]
    WriterStopped,
}

impl ExtractError {
    /// The API error inside, if any.
    pub fn api_error(&self) -> Option<&ApiError> {
        match self {
            ExtractError::Api { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Pages through workflows and streams their rows to a writer.
pub struct Extractor {
    client: ApiClient,
    options: ExtractOptions,
    sink: mpsc::Sender<SinkItem>,
    reporter: Arc<dyn Reporter>,
    stopper: Stopper,
    fetcher: Fetcher,
    /// Workflows paging right now; they share the requests in flight.
    paging: Arc<std::sync::atomic::AtomicUsize>,
}

/// Why an export was stopped before every workflow finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The API answered 401/403.
    KeyRejected,
    /// SIGINT or SIGTERM.
    Interrupted,
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StopReason::KeyRejected => "the API key was rejected",
            StopReason::Interrupted => "interrupted",
        })
    }
}

/// Stops a running extraction from anywhere (another workflow, a signal handler). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Stopper {
    token: CancellationToken,
    reason: Arc<OnceLock<StopReason>>,
}

impl Stopper {
    /// Stops every workflow still running; they fail with `reason`. The first reason wins.
    pub fn stop(&self, reason: StopReason) {
        let _ = self.reason.set(reason);
        self.token.cancel();
    }

    /// Why it was stopped, once it was.
    pub fn reason(&self) -> Option<StopReason> {
        self.reason.get().copied()
    }
}

impl Extractor {
    /// An extractor sending to `sink`, stopped early through `stopper`.
    pub fn new(
        client: ApiClient,
        options: ExtractOptions,
        sink: mpsc::Sender<SinkItem>,
        reporter: Arc<dyn Reporter>,
        stopper: Stopper,
    ) -> Self {
        let fetcher = Fetcher {
            client: client.clone(),
            with_steps: options.with_steps,
            steps_at_once: options.max_window,
        };
        Self {
            client,
            options,
            sink,
            reporter,
            stopper,
            fetcher,
            paging: Arc::default(),
        }
    }

    /// Exports every workflow, each with the state of its previous export (if any); outcomes
    /// come back in the order given.
    pub async fn run(
        &self,
        workflows: Vec<(String, Option<WorkflowState>)>,
    ) -> Vec<WorkflowOutcome> {
        let mut outcomes: Vec<(usize, WorkflowOutcome)> =
            stream::iter(workflows.into_iter().enumerate())
                .map(|(i, (id, state))| async move {
                    let outcome = self.workflow(id, state).await;
                    self.reporter.on_workflow_done(&outcome);
                    (i, outcome)
                })
                .buffer_unordered(self.options.parallel_workflows.max(1))
                .collect()
                .await;
        outcomes.sort_by_key(|(i, _)| *i);
        outcomes.into_iter().map(|(_, o)| o).collect()
    }

    async fn workflow(
        &self,
        workflow_id: String,
        previous: Option<WorkflowState>,
    ) -> WorkflowOutcome {
        let mut tally = Tally::new(previous.as_ref());
        let result = if let Err(reason) = crate::api::check_workflow_id(&workflow_id) {
            Err(ExtractError::InvalidWorkflowId { reason })
        } else {
            tokio::select! {
                biased;
                () = self.stopper.token.cancelled() => Err(ExtractError::Cancelled {
                    reason: self.stopper.reason().unwrap_or(StopReason::Interrupted),
                }),
                result = self.export_workflow(&workflow_id, previous.as_ref(), &mut tally) => result,
            }
        };
        if let Err(ExtractError::Api {
            source: ApiError::Unauthorized { .. },
            ..
        }) = &result
        {
            self.stopper.stop(StopReason::KeyRejected);
        }
        let new_state = result
            .is_ok()
            .then(|| tally.next_state(&workflow_id, previous.as_ref(), &self.options));
        WorkflowOutcome {
            workflow_id,
            stats: tally.stats,
            new_state,
            error: result.err(),
        }
    }

    /// Pages through the new part of the history, then fetches the stored unfinished runs that
    /// paging did not reach.
    async fn export_workflow(
        &self,
        workflow_id: &str,
        previous: Option<&WorkflowState>,
        tally: &mut Tally,
    ) -> Result<(), ExtractError> {
        // Incremental: stop once a page reaches past the cursor minus the look-back.
        let stop_before = match (
            self.options.lookback,
            previous.and_then(WorkflowState::cursor_us),
        ) {
            (Some(lookback), Some(cursor)) => Some(cursor.saturating_sub(micros(lookback))),
            _ => None,
        };
        self.page_through(workflow_id, stop_before, tally).await?;
        let Some(previous) = previous else {
            return Ok(());
        };
        let horizon = micros(self.options.unfinished_horizon);
        let now = chrono::Utc::now().timestamp_micros();
        let workflow: Arc<str> = Arc::from(workflow_id);
        for run in &previous.unfinished {
            if tally.seen.contains(&flatten::id_key(&run.run_id)) {
                continue;
            }
            if now.saturating_sub(run.since_us()) > horizon {
                tally.stats.abandoned += 1;
                continue;
            }
            let url = self.client.run_url(workflow_id, &run.run_id);
            let (_, bytes, fetched) = self.fetcher.clone().fetch(workflow.clone(), url, 0).await;
            let Fetched {
                mut page, steps, ..
            } = match fetched {
                Ok(f) if f.page.runs.iter().any(|r| r.id == run.run_id) => f,
                Err(ExtractError::Api {
                    source: ApiError::Status { status: 404, .. },
                    ..
                }) => {
                    // Deleted upstream: nothing to refresh; its stored row stays as it was.
                    tally.stats.vanished += 1;
                    continue;
                }
                Err(
                    e @ ExtractError::Api {
                        source: ApiError::Unauthorized { .. },
                        ..
                    },
                ) => return Err(e),
                other => {
                    // One run that cannot be fetched must not hold the workflow back: keep it
                    // for the next export and say so.
                    let why = other.err().map_or_else(
                        || "the answer does not hold that run".to_owned(),
                        |e| crate::error_chain(&e),
                    );
                    tracing::warn!(target: "extract", workflow_id, run_id = %run.run_id, error = %why, "cannot fetch unfinished run again");
                    tally.stats.refresh_failed += 1;
                    tally.carried.push(run.clone());
                    continue;
                }
            };
            tally.stats.refreshed += 1;
            tally.keep_new_runs(&mut page);
            self.reporter
                .on_page(workflow_id, page.runs.len() as u64, bytes);
            self.send(page, steps).await?;
        }
        Ok(())
    }

    async fn page_through(
        &self,
        workflow_id: &str,
        stop_before: Option<i64>,
        tally: &mut Tally,
    ) -> Result<(), ExtractError> {
        let limit = u64::from(self.options.page_size);
        let max_window = self.options.max_window.max(1);
        let paging = Paging::enter(&self.paging);
        let workflow: Arc<str> = Arc::from(workflow_id);
        // Records a full page holds: `limit`, or less when the server caps pages.
        let mut stride = limit;
        let mut next_offset = 0u64;
        let mut window = 1usize;
        let mut anchor: Option<Anchor> = None;
        // The next page answered is a re-read of the anchor's offset, requested after the
        // anchor's page was processed (not one requested ahead).
        let mut rereading = false;
        let mut largest_page = 0u64;
        let mut pages_without_news = 0u32;
        let mut previous_oldest: Option<i64> = None;
        let mut in_flight = FuturesOrdered::new();
        loop {
            while in_flight.len() < window {
                let url = self
                    .client
                    .runs_url(&workflow, self.options.page_size, next_offset);
                let fetch = self
                    .fetcher
                    .clone()
                    .fetch(workflow.clone(), url, next_offset);
                in_flight.push_back(Spawned(tokio::spawn(fetch)));
                next_offset += stride.saturating_sub(1).max(1);
            }
            let Some(joined) = in_flight.next().await else {
                return Ok(());
            };
            let (offset, bytes, fetched) = joined.map_err(|_| ExtractError::TaskFailed)?;
            let Fetched {
                mut page,
                mut steps,
                retries,
            } = fetched?;
            tally.stats.pages += 1;
            tally.stats.page_retries += retries;
            let received = page.record_count as u64;
            let was_reread = std::mem::take(&mut rereading);
            if received == 0 {
                match anchor.as_ref() {
                    // An empty answer requested ahead may be stale: answered before runs arrived
                    // that pushed older ones past it. Only an empty re-read of the anchor's own
                    // offset ends the history (the anchor was purged at the tail).
                    Some(a) if stride > 1 && !was_reread => {
                        tally.stats.drift_rereads += 1;
                        in_flight = FuturesOrdered::new();
                        next_offset = a.offset;
                        window = 1;
                        rereading = true;
                        continue;
                    }
                    Some(_) if stride > 1 => tally.stats.drift_unresolved += 1,
                    _ => {}
                }
                return Ok(());
            }
            // Pages of one record cannot overlap: nothing to check them by.
            let join = if stride > 1 {
                Join::of(anchor.as_ref(), &page, &tally.seen, tally.newest_start)
            } else {
                Join::First
            };
            if let (Join::Before, true, Some(a)) = (join, was_reread, anchor.as_mut()) {
                // The anchor is further on: runs arrived, none slid past.
                a.rereads = 0;
            }
            if let (Join::Gap, Some(a)) = (join, anchor.as_mut()) {
                // A page requested ahead that does not join may have been answered before runs
                // arrived that pushed older ones past it: read on from the anchor again, one
                // page at a time, and drop this page (its runs come again). Only a re-read
                // that still does not join counts toward giving up: then the anchor itself was
                // deleted upstream, and what follows it is what the re-read holds.
                if was_reread {
                    a.rereads += 1;
                }
                if !was_reread || a.rereads < MAX_REREADS {
                    tally.stats.drift_rereads += 1;
                    tracing::debug!(target: "extract", workflow_id, offset, anchor = a.offset, "page does not join the previous one: re-reading the boundary");
                    in_flight = FuturesOrdered::new();
                    next_offset = a.offset;
                    window = 1;
                    rereading = true;
                    continue;
                }
                tracing::warn!(target: "extract", workflow_id, offset = a.offset, "the run that ended the previous page is gone upstream; paging on after it");
                tally.stats.drift_unresolved += 1;
            }
            let oldest = page.runs.iter().filter_map(|r| r.start_time).min();
            let page_newest = page.runs.iter().filter_map(|r| r.start_time).max();
            let next_anchor = Anchor::after(&page, offset);
            let repeated = tally.keep_new_runs(&mut page);
            if self.options.with_steps {
                self.fetch_missing_steps(&workflow, &page, &mut steps)
                    .await?;
            }
            match join {
                Join::At(i) => {
                    // The anchor itself is the expected overlap, not a duplicate.
                    tally.stats.duplicates += repeated.saturating_sub(1);
                    tally.stats.drift_shifts += u64::from(i > 0);
                }
                Join::Before => {
                    tally.stats.duplicates += repeated;
                    tally.stats.drift_shifts += 1;
                }
                Join::First | Join::Gap => tally.stats.duplicates += repeated,
            }
            let news = page.runs.len() + page.rejected.len();
            self.reporter
                .on_page(workflow_id, page.runs.len() as u64, bytes);
            self.send(page, steps).await?;
            // Joined, and nothing new past the anchor (what follows it, if anything, is records
            // without an id already stored): a short such page is the end of the history.
            let nothing_past_anchor = matches!(join, Join::At(_)) && news == 0;
            if join != Join::Before {
                anchor = next_anchor.or(anchor);
            }
            let short = received < limit && received < largest_page;
            if nothing_past_anchor && (received == 1 || short) {
                return Ok(());
            }
            if join == Join::Before && short {
                // The end of history, every run in it already seen: the anchor was purged
                // upstream (runs deleted from the tail while paging).
                tally.stats.drift_unresolved += 1;
                return Ok(());
            }
            largest_page = largest_page.max(received);
            // Stop once a whole page is older than the cursor minus the look-back (its newest
            // run, not its oldest: one run with an odd old start must not end paging early).
            if stop_before
                .zip(page_newest)
                .is_some_and(|(stop, newest)| newest < stop)
            {
                tally.stats.stopped_at_cursor = true;
                return Ok(());
            }
            // A page before the anchor brings nothing new because runs arrived, not because the
            // API ignores `offset` (that repeats the anchor's page): it does not count.
            pages_without_news = match (news, join) {
                (0, Join::Before) => pages_without_news,
                (0, _) => pages_without_news + 1,
                _ => 0,
            };
            if pages_without_news >= MAX_PAGES_WITHOUT_NEWS {
                return Err(ExtractError::NoProgress {
                    pages: pages_without_news,
                    offset,
                });
            }
            if received == stride && stride > 1 {
                // Requests ahead beyond this workflow's share of the concurrency only queue, and
                // past the end of a history they are wasted.
                let share = self
                    .options
                    .parallel_workflows
                    .div_ceil(paging.count())
                    .max(1);
                window = (window * 2).min(max_window).min(share);
                if let (Some(stop), Some(oldest)) = (stop_before, oldest) {
                    // Incremental: do not request far past the cursor. Estimate the pages left
                    // from the time one page covered.
                    let newest = page_newest.unwrap_or(oldest);
                    let span = previous_oldest
                        .map_or(newest - oldest, |p| p - oldest)
                        .max(1);
                    let pages_left = ((oldest - stop) / span).saturating_add(1);
                    let pages_left = usize::try_from(pages_left).unwrap_or(usize::MAX);
                    window = window.min(pages_left).max(1);
                }
            } else {
                // Not the size the requests ahead assumed: drop them and continue from exactly
                // what was received. A short first page reveals a server-side cap.
                in_flight = FuturesOrdered::new();
                if join == Join::First {
                    stride = received;
                } else {
                    stride = stride.max(received.min(limit));
                }
                // Overlap on the anchor; pages of one record cannot overlap.
                next_offset = match (&anchor, join) {
                    _ if stride <= 1 => offset + received,
                    (Some(a), j) if j != Join::Before => a.offset,
                    _ => offset + received - 1,
                };
                window = 1;
            }
            previous_oldest = oldest.or(previous_oldest);
        }
    }

    /// Fetches the steps of the runs kept from a page that its fetch skipped (the first run of
    /// an overlapping page, usually the anchor already exported, turned out to be new).
    async fn fetch_missing_steps(
        &self,
        workflow: &Arc<str>,
        page: &FlatPage,
        steps: &mut Vec<RunSteps>,
    ) -> Result<(), ExtractError> {
        let have: HashSet<&str> = steps.iter().map(|s| s.run_id.as_str()).collect();
        let missing: Vec<RunInfo> = page
            .runs
            .iter()
            .filter(|r| !have.contains(r.id.as_str()))
            .cloned()
            .collect();
        if !missing.is_empty() {
            steps.extend(self.fetcher.steps(workflow, missing).await?);
        }
        Ok(())
    }

    /// Sends a page's rows, and the steps of the runs kept from it, to the writer.
    async fn send(&self, page: FlatPage, steps: Vec<RunSteps>) -> Result<(), ExtractError> {
        let sink = |item| async {
            self.sink
                .send(item)
                .await
                .map_err(|_| ExtractError::WriterStopped)
        };
        if !page.rejected.is_empty() {
            sink(SinkItem::Rejected(page.rejected)).await?;
        }
        let kept: HashSet<&str> = page.runs.iter().map(|r| r.id.as_str()).collect();
        let steps: Vec<RunSteps> = steps
            .into_iter()
            .filter(|s| kept.contains(s.run_id.as_str()))
            .collect();
        for part in page.partitions {
            sink(SinkItem::Rows(part)).await?;
        }
        for step in steps {
            sink(SinkItem::Steps(step.date, step.batch)).await?;
        }
        Ok(())
    }
}

/// Counts a workflow as paging while alive.
struct Paging<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Paging<'a> {
    fn enter(count: &'a std::sync::atomic::AtomicUsize) -> Self {
        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(count)
    }

    fn count(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::Relaxed).max(1)
    }
}

impl Drop for Paging<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The last record of the part of a workflow's history known to be complete.
#[derive(Debug)]
struct Anchor {
    /// Its fingerprint (`FlatPage::keys`).
    key: u128,
    /// The offset it was received at.
    offset: u64,
    /// Times the boundary after it was re-read.
    rereads: u32,
}

impl Anchor {
    /// The anchor after a page that joined (or was accepted): its last record; `None` for an
    /// empty page.
    fn after(page: &FlatPage, offset: u64) -> Option<Self> {
        let index = page.keys.len().checked_sub(1)?;
        Some(Self {
            key: page.keys[index],
            offset: offset + index as u64,
            rereads: 0,
        })
    }
}

/// How a page relates to the anchor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Join {
    /// The first page: nothing to join.
    First,
    /// The anchor is record `i` of the page: what follows it continues the history.
    At(usize),
    /// Every record was seen already: the page lies before the anchor (many runs arrived).
    Before,
    /// The anchor is missing and unseen runs are present: runs may have slid past unseen.
    Gap,
}

impl Join {
    /// How `page` relates to `anchor`, given the records `seen` so far and the newest start
    /// time among them.
    fn of(anchor: Option<&Anchor>, page: &FlatPage, seen: &KeySet, newest: Option<i64>) -> Self {
        let Some(anchor) = anchor else {
            return Join::First;
        };
        if let Some(i) = page.keys.iter().position(|k| *k == anchor.key) {
            return Join::At(i);
        }
        // Runs that start after every run seen arrived during the export: they push the page
        // before the anchor, they are not a gap.
        let arrived: HashSet<u128> = page
            .runs
            .iter()
            .filter(|r| r.start_time.is_some() && r.start_time > newest)
            .map(|r| flatten::id_key(&r.id))
            .collect();
        if page
            .keys
            .iter()
            .all(|k| seen.contains(k) || arrived.contains(k))
        {
            Join::Before
        } else {
            Join::Gap
        }
    }
}

/// The steps of one run.
struct RunSteps {
    run_id: String,
    date: PartitionDate,
    batch: RecordBatch,
}

/// A page and, when asked for, the steps of its runs.
struct Fetched {
    page: FlatPage,
    steps: Vec<RunSteps>,
    /// Times the page was fetched again because its body was unreadable.
    retries: u64,
}

/// A fetch running as its own task, so it makes progress (and frees its slot of the shared
/// concurrency budget) even while the workflow that asked for it is waiting on something else.
/// Dropping it aborts the task (pages requested ahead that turned out not to be needed).
struct Spawned<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for Spawned<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> std::future::Future for Spawned<T> {
    type Output = Result<T, tokio::task::JoinError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

/// Flattens a page body on the rayon pool; `None` if the pool dropped the job.
async fn flatten_on_rayon(
    body: Vec<u8>,
    workflow: Arc<str>,
    offset: u64,
) -> Option<Result<FlatPage, flatten::PageError>> {
    let extracted_at_us = chrono::Utc::now().timestamp_micros();
    let (tx, rx) = oneshot::channel();
    rayon::spawn(move || {
        let ctx = PageContext {
            workflow_id: &workflow,
            offset,
            extracted_at_us,
        };
        let _ = tx.send(flatten::flatten_page(&body, ctx));
    });
    rx.await.ok()
}

/// Fetches and flattens pages (and steps); cheap to clone into tasks.
#[derive(Clone)]
struct Fetcher {
    client: ApiClient,
    with_steps: bool,
    steps_at_once: usize,
}

impl Fetcher {
    /// Fetches and flattens one page (`offset` is for messages and rows), then its runs'
    /// steps when asked for: (offset, body bytes, result). A body that is not a JSON array (cut
    /// short, an HTML error page from a proxy) is fetched again, within the retry limits.
    async fn fetch(
        self,
        workflow: Arc<str>,
        url: url::Url,
        offset: u64,
    ) -> (u64, u64, Result<Fetched, ExtractError>) {
        let mut attempt = 0u32;
        let (page, bytes) = loop {
            attempt += 1;
            let body = match self.client.get(&url).await {
                Ok(body) => body,
                Err(source) => return (offset, 0, Err(ExtractError::Api { offset, source })),
            };
            let bytes = body.len() as u64;
            let page = match flatten_on_rayon(body, workflow.clone(), offset).await {
                Some(Ok(page)) => page,
                Some(Err(source)) => {
                    let shown = crate::api::redact_url(&url);
                    if self.client.may_retry(attempt, false).is_ok() {
                        let cause = format!("unreadable page: {source}");
                        self.client
                            .wait_to_retry(&shown, attempt, None, &cause)
                            .await;
                        continue;
                    }
                    let error = ExtractError::Page {
                        offset,
                        url: shown,
                        attempts: attempt,
                        source,
                    };
                    return (offset, bytes, Err(error));
                }
                None => return (offset, bytes, Err(ExtractError::WriterStopped)),
            };
            break (page, bytes);
        };
        let steps = if self.with_steps {
            // The first record of a page after the first is normally the previous page's last
            // run, already fetched; if it is new after all, paging fetches its steps.
            let skip = usize::from(offset > 0);
            let runs = page.runs.iter().skip(skip).cloned().collect();
            match self.steps(&workflow, runs).await {
                Ok(steps) => steps,
                Err(e) => return (offset, bytes, Err(e)),
            }
        } else {
            Vec::new()
        };
        let retries = u64::from(attempt - 1);
        (
            offset,
            bytes,
            Ok(Fetched {
                page,
                steps,
                retries,
            }),
        )
    }

    /// Fetches the steps of `runs`, several at once within the shared concurrency budget. A run
    /// the API knows no steps for (404) has none; any other failure fails the workflow.
    async fn steps(
        &self,
        workflow: &Arc<str>,
        runs: Vec<RunInfo>,
    ) -> Result<Vec<RunSteps>, ExtractError> {
        stream::iter(runs.into_iter().map(|run| {
            let (client, workflow) = (self.client.clone(), workflow.clone());
            Self::run_steps(client, workflow, run)
        }))
        .buffered(self.steps_at_once.max(1))
        .filter_map(|r| async move { r.transpose() })
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
    }

    async fn run_steps(
        client: ApiClient,
        workflow: Arc<str>,
        run: RunInfo,
    ) -> Result<Option<RunSteps>, ExtractError> {
        {
            let url = client.steps_url(&workflow, &run.id);
            let body = match client.get(&url).await {
                Ok(body) => body,
                Err(ApiError::Status { status: 404, .. }) => return Ok(None),
                Err(source) => return Err(ExtractError::Api { offset: 0, source }),
            };
            let batch = flatten::flatten_steps(&body, &workflow, &run.id).map_err(|source| {
                ExtractError::Page {
                    offset: 0,
                    url: crate::api::redact_url(&url),
                    attempts: 1,
                    source,
                }
            })?;
            Ok(Some(RunSteps {
                date: run.date(),
                run_id: run.id,
                batch,
            }))
        }
    }
}

/// What one workflow's export has seen so far.
struct Tally {
    stats: WorkflowStats,
    /// Fingerprints of the run ids received.
    seen: KeySet,
    /// Newest start time received.
    newest_start: Option<i64>,
    /// Runs received unfinished.
    unfinished: Vec<RunInfo>,
    /// Runs stored unfinished by earlier exports, by id.
    stored_unfinished: HashMap<String, UnfinishedRun>,
    /// Stored unfinished runs that could not be fetched again this time: kept as they were.
    carried: Vec<UnfinishedRun>,
}

impl Tally {
    fn new(previous: Option<&WorkflowState>) -> Self {
        let stored_unfinished = previous
            .map(|p| {
                p.unfinished
                    .iter()
                    .map(|u| (u.run_id.clone(), u.clone()))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            stats: WorkflowStats::default(),
            seen: KeySet::default(),
            newest_start: None,
            unfinished: Vec::new(),
            stored_unfinished,
            carried: Vec::new(),
        }
    }

    /// Drops runs (and quarantined records) already received from an earlier page, with the
    /// traces of dropped runs, and records what is left. Returns how many records repeated.
    fn keep_new_runs(&mut self, page: &mut FlatPage) -> u64 {
        let repeated: HashSet<String> = page
            .runs
            .iter()
            .filter(|run| !self.seen.insert(flatten::id_key(&run.id)))
            .map(|run| run.id.clone())
            .collect();
        let keys = &page.keys;
        let seen = &mut self.seen;
        // Traces of repeated runs go with their runs (already counted); only quarantined
        // records received again count as repeats.
        let mut repeated_quarantined = 0u64;
        page.rejected.retain(|r| {
            let key = keys.get(r.index).copied().unwrap_or_default();
            if r.kept {
                !repeated.iter().any(|id| flatten::id_key(id) == key)
            } else {
                let new = seen.insert(key);
                repeated_quarantined += u64::from(!new);
                new
            }
        });
        let quarantined = page.rejected.iter().filter(|r| !r.kept).count();
        if !repeated.is_empty() {
            page.drop_runs(|id| repeated.contains(id));
        }
        for run in &page.runs {
            self.newest_start = self.newest_start.max(run.start_time);
            if !run.finished {
                self.unfinished.push(run.clone());
            }
        }
        let s = &mut self.stats;
        s.duplicates += page.duplicates as u64;
        s.runs += page.runs.len() as u64;
        s.rejected += quarantined as u64;
        s.unreadable_values += page.unreadable_values as u64;
        repeated.len() as u64 + repeated_quarantined
    }

    /// The state to save once this export's data is committed.
    fn next_state(
        &mut self,
        workflow_id: &str,
        previous: Option<&WorkflowState>,
        options: &ExtractOptions,
    ) -> WorkflowState {
        let now = chrono::Utc::now().timestamp_micros();
        let horizon = micros(options.unfinished_horizon);
        let first_seen = |id: &str| {
            self.stored_unfinished
                .get(id)
                .map_or_else(|| format_timestamp(now), |u| u.first_seen.clone())
        };
        let mut unfinished = std::mem::take(&mut self.carried);
        for run in &self.unfinished {
            let stored = UnfinishedRun {
                run_id: run.id.clone(),
                start_time: run.start_time.map(format_timestamp),
                first_seen: first_seen(&run.id),
            };
            if now.saturating_sub(stored.since_us()) > horizon {
                self.stats.abandoned += 1;
            } else {
                unfinished.push(stored);
            }
        }
        // A start time in the future (bad data, a scheduled run) must not move the cursor past
        // runs that have not happened yet.
        let newest = self.newest_start.map(|t| t.min(now));
        let cursor = previous.and_then(WorkflowState::cursor_us).max(newest);
        WorkflowState::new(workflow_id, cursor, unfinished, &options.export_id)
    }
}

/// A duration in microseconds, saturating.
fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}
