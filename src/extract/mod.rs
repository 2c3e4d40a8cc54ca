//! Extract: pages through every workflow's run history and hands flattened rows to the writer.
//!
//! It owns paging (offsets, page-size discovery, end of history), the fan-out across workflows
//! and across the pages of one long workflow, and de-duplication of runs by id. It does not
//! build HTTP requests (`api`) or rows (`flatten`), and never touches files (`dataset`).
//!
//! Paging: a workflow ends on an empty page, and the next offset is always the previous one plus
//! the records actually received, so a server that caps `limit` loses nothing. Once pages come
//! back full, requests for the following offsets are issued ahead of the answers, the window
//! doubling up to the concurrency budget (like TCP slow start); any page of an unexpected size
//! cancels the speculation and re-aligns on what was really received.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, OnceLock};

use futures_util::stream::{self, FuturesOrdered, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::api::{ApiClient, ApiError};
use crate::flatten::{self, FlatPage, PageContext, PageError, PartitionRows, Rejected};
use crate::progress::Reporter;

/// Largest number of pages of one workflow requested ahead of the answers.
pub const DEFAULT_MAX_WINDOW: usize = 16;

/// Consecutive non-empty pages holding only runs already seen before a workflow is failed. New
/// runs arriving during paging cause at most one such page per page size of arrivals.
const MAX_PAGES_WITHOUT_NEWS: u32 = 5;

/// What the extract stage sends to the writer.
#[derive(Debug)]
pub enum SinkItem {
    /// Rows of one partition.
    Rows(PartitionRows),
    /// Records that could not be runs.
    Rejected(Vec<Rejected>),
}

/// Paging settings.
#[derive(Debug, Clone)]
pub struct ExtractOptions {
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
}

/// How one workflow's export ended.
#[derive(Debug)]
pub struct WorkflowOutcome {
    /// The workflow.
    pub workflow_id: String,
    /// Counters, also for a failed workflow (what was fetched before the failure).
    pub stats: WorkflowStats,
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
    #[error("page at offset {offset} from `{url}` is unreadable")]
    Page {
        offset: u64,
        url: String,
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
        Self {
            client,
            options,
            sink,
            reporter,
            stopper,
        }
    }

    /// Exports every workflow; outcomes come back in the order given.
    pub async fn run(&self, workflows: Vec<String>) -> Vec<WorkflowOutcome> {
        let mut outcomes: Vec<(usize, WorkflowOutcome)> =
            stream::iter(workflows.into_iter().enumerate())
                .map(|(i, id)| async move {
                    let outcome = self.workflow(id).await;
                    self.reporter.on_workflow_done(&outcome);
                    (i, outcome)
                })
                .buffer_unordered(self.options.parallel_workflows.max(1))
                .collect()
                .await;
        outcomes.sort_by_key(|(i, _)| *i);
        outcomes.into_iter().map(|(_, o)| o).collect()
    }

    async fn workflow(&self, workflow_id: String) -> WorkflowOutcome {
        let mut stats = WorkflowStats::default();
        let error = if let Err(reason) = crate::api::check_workflow_id(&workflow_id) {
            Some(ExtractError::InvalidWorkflowId { reason })
        } else {
            tokio::select! {
                biased;
                () = self.stopper.token.cancelled() => Some(ExtractError::Cancelled {
                    reason: self.stopper.reason().unwrap_or(StopReason::Interrupted),
                }),
                result = self.page_through(&workflow_id, &mut stats) => result.err(),
            }
        };
        if let Some(ExtractError::Api {
            source: ApiError::Unauthorized { .. },
            ..
        }) = &error
        {
            self.stopper.stop(StopReason::KeyRejected);
        }
        WorkflowOutcome {
            workflow_id,
            stats,
            error,
        }
    }

    async fn page_through(
        &self,
        workflow_id: &str,
        stats: &mut WorkflowStats,
    ) -> Result<(), ExtractError> {
        let limit = self.options.page_size;
        let max_window = self.options.max_window.max(1);
        let workflow: Arc<str> = Arc::from(workflow_id);
        let mut seen: HashSet<u128> = HashSet::new();
        let mut stride = u64::from(limit);
        let mut next_offset = 0u64;
        let mut window = 1usize;
        let mut first_page = true;
        let mut pages_without_news = 0u32;
        let mut in_flight = FuturesOrdered::new();
        loop {
            while in_flight.len() < window {
                in_flight.push_back(self.fetch(workflow.clone(), next_offset));
                next_offset += stride;
            }
            let Some((offset, bytes, page)) = in_flight.next().await else {
                return Ok(());
            };
            let mut page = page?;
            stats.pages += 1;
            let received = page.record_count as u64;
            self.keep_new_runs(&mut page, &mut seen, stats);
            let news = page.run_ids.len() + page.rejected.len();
            self.reporter
                .on_page(workflow_id, page.run_ids.len() as u64, bytes);
            self.send(page).await?;
            if received == 0 {
                return Ok(());
            }
            pages_without_news = if news == 0 { pages_without_news + 1 } else { 0 };
            if pages_without_news >= MAX_PAGES_WITHOUT_NEWS {
                return Err(ExtractError::NoProgress {
                    pages: pages_without_news,
                    offset,
                });
            }
            if received == stride {
                window = (window * 2).min(max_window);
            } else {
                // Not the size the requests ahead assumed: drop them and continue from exactly
                // what was received. A short first page reveals a server-side cap; a short
                // later page is usually the last one.
                in_flight = FuturesOrdered::new();
                next_offset = offset + received;
                stride = if first_page {
                    received
                } else {
                    stride.max(received.min(u64::from(limit)))
                };
                window = 1;
            }
            first_page = false;
        }
    }

    /// Drops runs already exported from an earlier page and counts what is left.
    fn keep_new_runs(
        &self,
        page: &mut FlatPage,
        seen: &mut HashSet<u128>,
        stats: &mut WorkflowStats,
    ) {
        let repeated: HashSet<String> = page
            .run_ids
            .iter()
            .filter(|id| !seen.insert(id_hash(id)))
            .cloned()
            .collect();
        if !repeated.is_empty() {
            page.drop_runs(|id| repeated.contains(id));
        }
        stats.duplicates += (repeated.len() + page.duplicates) as u64;
        stats.runs += page.run_ids.len() as u64;
        stats.rejected += page.rejected.len() as u64;
        stats.unreadable_values += page.unreadable_values as u64;
    }

    async fn send(&self, page: FlatPage) -> Result<(), ExtractError> {
        if !page.rejected.is_empty() {
            self.sink
                .send(SinkItem::Rejected(page.rejected))
                .await
                .map_err(|_| ExtractError::WriterStopped)?;
        }
        for part in page.partitions {
            self.sink
                .send(SinkItem::Rows(part))
                .await
                .map_err(|_| ExtractError::WriterStopped)?;
        }
        Ok(())
    }

    /// Fetches and flattens the page at `offset`: (offset, body bytes, page).
    async fn fetch(
        &self,
        workflow: Arc<str>,
        offset: u64,
    ) -> (u64, u64, Result<FlatPage, ExtractError>) {
        let url = self
            .client
            .runs_url(&workflow, self.options.page_size, offset);
        let body = match self.client.get(&url).await {
            Ok(body) => body,
            Err(source) => return (offset, 0, Err(ExtractError::Api { offset, source })),
        };
        let bytes = body.len() as u64;
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
        let page = match rx.await {
            Ok(Ok(page)) => Ok(page),
            Ok(Err(source)) => Err(ExtractError::Page {
                offset,
                url: crate::api::redact_url(&url),
                source,
            }),
            Err(_) => Err(ExtractError::WriterStopped),
        };
        (offset, bytes, page)
    }
}

/// A 128-bit fingerprint of a run id: exact-set semantics at a fraction of the memory of the ids.
fn id_hash(id: &str) -> u128 {
    let half = |salt: u8| {
        let mut h = DefaultHasher::new();
        salt.hash(&mut h);
        id.hash(&mut h);
        h.finish()
    };
    (u128::from(half(0)) << 64) | u128::from(half(1))
}
