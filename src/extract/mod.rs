//! Extract: pages through every workflow's run history and hands flattened rows to the writer.
//!
//! It owns the fan-out across workflows and across the pages of one long workflow, the
//! reconciliation of unfinished runs, and the per-workflow tally. Every paging decision (offsets,
//! page-size discovery, drift, the end of history) is [`paging`]'s, a state machine this module
//! drives; fetching and flattening one page is `fetch`'s. It does not build HTTP requests
//! (`api`) or rows (`flatten`), and never touches files (`dataset`).

mod fetch;
pub mod paging;
pub mod state;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arrow::array::RecordBatch;
use futures_util::stream::{self, FuturesOrdered, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::api::{ApiClient, ApiError};
use crate::dataset::PartitionDate;
use crate::flatten::{self, FlatPage, KeySet, PageError, Rejected, RunInfo, format_timestamp};
use crate::progress::Reporter;
use crate::table::PartitionRows;
use fetch::{Fetched, Fetcher, RunSteps, Spawned};
pub use paging::DEFAULT_MAX_WINDOW;
use paging::{Answer, Pager, PagerOptions, PagingError, Poll, Refusal};
use state::{UnfinishedRun, WorkflowState};

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
    /// `--since`: page back to runs started at this instant (µs), not further; never past the
    /// incremental stop, so it cannot skip runs newer than what was stored.
    pub since_us: Option<i64>,
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
    /// Hand back the fingerprints of every run a workflow's paging received (for `--full`,
    /// which marks the stored runs the API no longer has, and for `verify`).
    pub keep_seen: bool,
    /// The field policy every value goes through before it is stored.
    pub policy: std::sync::Arc<crate::privacy::Policy>,
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
    /// Stored unfinished runs beyond [`MAX_REFETCHES`] this export: left, first in line, for
    /// the next.
    pub refresh_deferred: u64,
    /// Paging stopped at the cursor (an incremental export) rather than at the end.
    pub stopped_at_cursor: bool,
    /// Pages whose start had shifted because runs arrived at the head during paging.
    pub drift_shifts: u64,
    /// Pages requested again because runs could have slid past between two answers.
    pub drift_rereads: u64,
    /// Runs found deleted upstream while paging (at least this many): the records after them
    /// slid toward the head, and paging stepped back until it joined the runs already read.
    pub drift_vanished: u64,
    /// Page boundaries that could not be checked for drift (pages of one record).
    pub unchecked_boundaries: u64,
    /// The API refused offsets that are not multiples of `limit`: paged with aligned pages.
    pub aligned_offsets: bool,
    /// Pages fetched again because their body was unreadable (truncated, not JSON).
    pub page_retries: u64,
    /// Runs whose steps were fetched (`--with-steps`; one request each).
    pub steps_fetched: u64,
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
    /// With [`ExtractOptions::keep_seen`], the fingerprints (`flatten::id_key`) of every run
    /// received, when the history was paged to its end.
    pub seen: Option<KeySet>,
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
    /// Paging gave up: the API does not page, or runs vanished faster than paging could rejoin.
    #[error(transparent)]
    Paging(#[from] PagingError),
    /// The runs read span more days than one export writes for a workflow.
    #[error(
        "runs on more than {max} different days (one partition each): more than one export writes for a workflow; this workflow's export is incomplete"
    )]
    TooManyDays { max: usize },
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

    /// Whether the API refused the request as invalid (400 or 422).
    fn is_refusal(&self) -> bool {
        matches!(
            self.api_error(),
            Some(ApiError::Status {
                status: 400 | 422,
                ..
            })
        )
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
    /// `--deadline` passed.
    Deadline,
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StopReason::KeyRejected => "the API key was rejected",
            StopReason::Interrupted => "interrupted",
            StopReason::Deadline => "the `--deadline` was reached",
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
            policy: options.policy.clone(),
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
        // Every run the API has now, only when that is certain: paged to the end, every
        // boundary checked, and no record without a readable id (it may be a stored run).
        let s = &tally.stats;
        let complete = result.is_ok()
            && !s.stopped_at_cursor
            && s.rejected == 0
            && s.unchecked_boundaries == 0;
        if self.options.keep_seen && result.is_ok() && !complete {
            tracing::warn!(target: "extract", workflow_id, quarantined = s.rejected, unchecked = s.unchecked_boundaries, "runs deleted upstream are not marked for this workflow: its history was not read with every run's id");
        }
        let seen = (self.options.keep_seen && complete).then(|| std::mem::take(&mut tally.seen));
        WorkflowOutcome {
            workflow_id,
            stats: tally.stats,
            new_state,
            error: result.err(),
            seen,
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
        let incremental = match (
            self.options.lookback,
            previous.and_then(WorkflowState::cursor_us),
        ) {
            (Some(lookback), Some(cursor)) => Some(cursor.saturating_sub(micros(lookback))),
            _ => None,
        };
        let stop_before = stop_point(incremental, self.options.since_us);
        // Only when `--since` is where paging stops: otherwise the page at the incremental stop
        // holds runs (unfinished ones among them) that a re-run keeps, as it always did.
        tally.drop_before = self
            .options
            .since_us
            .filter(|since| incremental.is_none_or(|stop| *since < stop));
        self.page_through(workflow_id, stop_before, tally).await?;
        let Some(previous) = previous else {
            return Ok(());
        };
        let horizon = micros(self.options.unfinished_horizon);
        let now = chrono::Utc::now().timestamp_micros();
        let workflow: Arc<str> = Arc::from(workflow_id);
        let mut fetched_again = 0;
        for run in &previous.unfinished {
            if tally.seen.contains(&flatten::id_key(&run.run_id)) {
                continue;
            }
            if now.saturating_sub(run.since_us()) > horizon {
                tally.stats.abandoned += 1;
                continue;
            }
            if fetched_again == MAX_REFETCHES {
                // One request each: bounded per export; the next export starts with these.
                tally.stats.refresh_deferred += 1;
                tally.carried.push(run.clone());
                continue;
            }
            fetched_again += 1;
            let url = self.client.run_url(workflow_id, &run.run_id);
            let (bytes, fetched) = self
                .fetcher
                .clone()
                .fetch(workflow.clone(), url, 0, 0)
                .await;
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
            let keep: Vec<bool> = page.keys.iter().map(|k| tally.seen.insert(*k)).collect();
            tally.keep(&mut page, &keep);
            tally.count_days(&page)?;
            tally.stats.steps_fetched += steps.len() as u64;
            self.reporter.on_steps(steps.len() as u64);
            self.reporter
                .on_page(workflow_id, page.runs.len() as u64, bytes);
            self.send(page, steps).await?;
        }
        Ok(())
    }

    /// Pages through the history until the pager says it ended (or the workflow must fail);
    /// what it stored is in `tally` either way.
    async fn page_through(
        &self,
        workflow_id: &str,
        stop_before: Option<i64>,
        tally: &mut Tally,
    ) -> Result<(), ExtractError> {
        let mut pager = Pager::new(PagerOptions {
            limit: u64::from(self.options.page_size),
            max_window: self.options.max_window,
            stop_before,
        });
        let result = self.drive(workflow_id, &mut pager, tally).await;
        let paged = pager.stats();
        let s = &mut tally.stats;
        s.drift_shifts += paged.shifts;
        s.drift_rereads += paged.rereads;
        s.drift_vanished += paged.vanished;
        s.unchecked_boundaries += paged.unchecked;
        s.aligned_offsets |= paged.aligned;
        s.stopped_at_cursor |= paged.stopped_at_cursor;
        tally.seen = pager.into_seen();
        result
    }

    /// The shell around the pager: sends what it asks for, hands it each answer in request
    /// order, and stores and sends the records it keeps.
    async fn drive(
        &self,
        workflow_id: &str,
        pager: &mut Pager,
        tally: &mut Tally,
    ) -> Result<(), ExtractError> {
        let paging = Paging::enter(&self.paging);
        let workflow: Arc<str> = Arc::from(workflow_id);
        let mut in_flight = FuturesOrdered::new();
        loop {
            // Requests ahead beyond this workflow's share of the concurrency only queue.
            let share = self
                .options
                .parallel_workflows
                .div_ceil(paging.count())
                .max(1);
            match pager.poll(share) {
                Poll::Send(request) => {
                    let fetch = self.fetcher.clone().page(workflow.clone(), request);
                    in_flight.push_back(Spawned(tokio::spawn(fetch)));
                    continue;
                }
                Poll::Done => return Ok(()),
                Poll::Failed(e) => return Err(e.into()),
                Poll::Wait => {}
            }
            let joined = in_flight.next().await.ok_or(ExtractError::TaskFailed)?;
            let (request, bytes, fetched) = joined.map_err(|_| ExtractError::TaskFailed)?;
            tally.stats.pages += 1;
            let Fetched {
                mut page,
                mut steps,
                retries,
            } = match fetched {
                Err(e) if e.is_refusal() && pager.on_refused(request.id) == Refusal::Aligned => {
                    tracing::warn!(target: "extract", workflow_id, offset = request.offset, limit = request.limit, error = %crate::error_chain(&e), "the API refuses offsets that are not a multiple of `limit`; paging this workflow with aligned pages");
                    in_flight = FuturesOrdered::new();
                    continue;
                }
                fetched => fetched?,
            };
            tally.stats.page_retries += retries;
            let answer = Answer {
                keys: &page.keys,
                starts: &page.starts,
                has_id: &page.has_id,
            };
            let verdict = pager.on_page(request.id, answer);
            if verdict.cancel {
                in_flight = FuturesOrdered::new();
            }
            tally.stats.duplicates += verdict.repeats;
            if !verdict.keep.contains(&true) {
                continue;
            }
            if let Some(since) = tally.drop_before {
                // Pages in flight reach past `--since`: their older runs are not this export's.
                let older: HashSet<String> = page
                    .runs
                    .iter()
                    .filter(|run| run.start_time.is_some_and(|t| t < since))
                    // A run an earlier export stored unfinished is followed up, wherever it is.
                    .filter(|run| !tally.stored_unfinished.contains_key(&run.id))
                    .map(|run| run.id.clone())
                    .collect();
                if !older.is_empty() {
                    page.drop_runs(|id| older.contains(id));
                }
            }
            tally.keep(&mut page, &verdict.keep);
            tally.count_days(&page)?;
            if self.options.with_steps {
                self.fetch_missing_steps(&workflow, &page, &mut steps)
                    .await?;
            }
            tally.stats.steps_fetched += steps.len() as u64;
            self.reporter.on_steps(steps.len() as u64);
            self.reporter
                .on_page(workflow_id, page.runs.len() as u64, bytes);
            self.send(page, steps).await?;
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

/// Stored unfinished runs fetched again by id per workflow and export at most (one request
/// each); the rest wait, first in line, for the next export.
pub const MAX_REFETCHES: usize = 1000;

/// Days (partitions) one workflow's runs may span in one export: more than any real history
/// (runs from 2000 to now span about 9,800). Beyond it the workflow fails before its runs open
/// tens of thousands more files.
pub const MAX_DAYS: usize = 10_000;

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
    /// The days of the runs kept (their partitions).
    days: HashSet<PartitionDate>,
    /// [`MAX_DAYS`] (lower in tests).
    max_days: usize,
    /// With `--since`: runs started before this are not kept (pages in flight reach past it).
    drop_before: Option<i64>,
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
            days: HashSet::new(),
            max_days: MAX_DAYS,
            drop_before: None,
        }
    }

    /// Counts the days of a page's kept runs; fails past [`MAX_DAYS`] (before the page is
    /// written).
    fn count_days(&mut self, page: &FlatPage) -> Result<(), ExtractError> {
        self.days.extend(page.partitions.iter().map(|p| p.date));
        if self.days.len() > self.max_days {
            return Err(ExtractError::TooManyDays { max: self.max_days });
        }
        Ok(())
    }

    /// Keeps the records of `page` that `keep` selects (one flag per record, in page order):
    /// runs with their child rows and traces, and quarantined records; then records what is
    /// left.
    fn keep(&mut self, page: &mut FlatPage, keep: &[bool]) {
        let kept: HashSet<u128> = page
            .keys
            .iter()
            .zip(keep)
            .filter(|(_, k)| **k)
            .map(|(key, _)| *key)
            .collect();
        let (keys, flags) = (&page.keys, keep);
        // A trace goes with its run; a quarantined record is kept on its own flag.
        page.rejected.retain(|r| match r.kept {
            true => keys.get(r.index).is_some_and(|key| kept.contains(key)),
            false => flags.get(r.index).copied().unwrap_or(false),
        });
        let quarantined = page.rejected.iter().filter(|r| !r.kept).count();
        if page
            .runs
            .iter()
            .any(|run| !kept.contains(&flatten::id_key(&run.id)))
        {
            page.drop_runs(|id| !kept.contains(&flatten::id_key(id)));
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
        let privacy = options.policy.record().clone();
        let mut older_privacy = Vec::new();
        for p in previous
            .into_iter()
            .flat_map(|p| p.older_privacy.iter().chain([&p.privacy]))
        {
            if *p != privacy && !older_privacy.contains(p) {
                older_privacy.push(p.clone());
            }
        }
        WorkflowState {
            privacy,
            older_privacy,
            ..WorkflowState::new(workflow_id, cursor, unfinished, &options.export_id)
        }
    }
}

/// Where paging stops: the incremental stop, or `--since`; with both, the earlier of the two, so
/// that `--since` widens what is read back but never leaves a gap after the stored runs.
fn stop_point(incremental: Option<i64>, since: Option<i64>) -> Option<i64> {
    match (incremental, since) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A duration in microseconds, saturating.
fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flatten::{PageContext, flatten_page};

    fn page_on_days(days: std::ops::Range<u32>) -> FlatPage {
        let records: Vec<serde_json::Value> = days
            .map(|d| {
                let start = format!("2020-01-{:02}T00:00:00Z", d + 1);
                serde_json::json!({"id": format!("r{d}"), "start_time": start})
            })
            .collect();
        let body = serde_json::to_vec(&records).expect("records serialize");
        let ctx = PageContext {
            workflow_id: "wf",
            offset: 0,
            extracted_at_us: 0,
            policy: crate::privacy::Policy::none(),
        };
        flatten_page(&body, ctx).expect("a JSON array")
    }

    #[test]
    fn since_widens_the_read_back_but_never_leaves_a_gap() {
        // (incremental stop, --since, where paging stops)
        let table = [
            (None, None, None),
            (Some(100), None, Some(100)),
            (None, Some(50), Some(50)),
            (Some(100), Some(50), Some(50)),
            // A --since after the stored runs would skip the runs between: the cursor wins.
            (Some(100), Some(150), Some(100)),
        ];
        for (incremental, since, want) in table {
            assert_eq!(
                stop_point(incremental, since),
                want,
                "{incremental:?} {since:?}"
            );
        }
    }

    #[test]
    fn a_workflow_whose_runs_span_too_many_days_fails_before_writing_them() {
        let mut tally = Tally::new(None);
        tally.max_days = 3;
        assert!(tally.count_days(&page_on_days(0..2)).is_ok());
        // The same days again, and one more: three in all.
        assert!(tally.count_days(&page_on_days(1..3)).is_ok());
        let err = tally.count_days(&page_on_days(3..4)).unwrap_err();
        assert!(matches!(err, ExtractError::TooManyDays { max: 3 }), "{err}");
        assert!(
            err.to_string().contains("more than 3 different days"),
            "{err}"
        );
    }
}
