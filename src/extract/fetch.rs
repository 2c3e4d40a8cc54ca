//! Fetch: one page (or run, or run's steps) requested, read and flattened, as its own task.
//!
//! It owns the retry of pages whose body is unreadable (cut short, an HTML page from a proxy)
//! and flattening on the rayon pool; it decides nothing about paging (`paging`) and sends
//! nothing to the writer (`extract`).

use std::sync::Arc;

use arrow::array::RecordBatch;
use futures_util::stream::{self, StreamExt};
use tokio::sync::oneshot;

use super::ExtractError;
use super::paging::PageRequest;
use crate::api::{ApiClient, ApiError};
use crate::dataset::PartitionDate;
use crate::flatten::{self, FlatPage, PageContext, RunInfo};
use crate::privacy::Policy;

/// The steps of one run.
pub(super) struct RunSteps {
    pub run_id: String,
    pub date: PartitionDate,
    pub batch: RecordBatch,
}

/// A page and, when asked for, the steps of its runs.
pub(super) struct Fetched {
    pub page: FlatPage,
    pub steps: Vec<RunSteps>,
    /// Times the page was fetched again because its body was unreadable.
    pub retries: u64,
}

/// A fetch running as its own task, so it makes progress (and frees its slot of the shared
/// concurrency budget) even while the workflow that asked for it is waiting on something else.
/// Dropping it aborts the task (pages requested ahead that turned out not to be needed).
pub(super) struct Spawned<T>(pub tokio::task::JoinHandle<T>);

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
    policy: Arc<Policy>,
) -> Option<Result<FlatPage, flatten::PageError>> {
    let extracted_at_us = chrono::Utc::now().timestamp_micros();
    let (tx, rx) = oneshot::channel();
    rayon::spawn(move || {
        let ctx = PageContext {
            workflow_id: &workflow,
            offset,
            extracted_at_us,
            policy: &policy,
        };
        let _ = tx.send(flatten::flatten_page(&body, ctx));
    });
    rx.await.ok()
}

/// Fetches and flattens pages (and steps); cheap to clone into tasks.
#[derive(Clone)]
pub(super) struct Fetcher {
    pub client: ApiClient,
    pub with_steps: bool,
    pub steps_at_once: usize,
    /// The field policy every value goes through before it is stored.
    pub policy: Arc<Policy>,
}

impl Fetcher {
    /// Fetches and flattens the page `request` asks for, then the steps of its runs when
    /// asked for (all but the records it overlaps with pages already read): (request, body
    /// bytes, result). A body that is not a JSON array (cut short, an HTML error page from a
    /// proxy) is fetched again, within the retry limits.
    pub async fn page(
        self,
        workflow: Arc<str>,
        request: PageRequest,
    ) -> (PageRequest, u64, Result<Fetched, ExtractError>) {
        let limit = u32::try_from(request.limit).unwrap_or(u32::MAX);
        let url = self.client.runs_url(&workflow, limit, request.offset);
        let skip = usize::try_from(request.overlap).unwrap_or(usize::MAX);
        let (bytes, fetched) = self.fetch(workflow, url, request.offset, skip).await;
        (request, bytes, fetched)
    }

    /// Fetches and flattens one page or run (`offset` is for messages and rows), then the steps
    /// of its runs but the first `skip` when asked for: (body bytes, result).
    pub async fn fetch(
        self,
        workflow: Arc<str>,
        url: url::Url,
        offset: u64,
        skip: usize,
    ) -> (u64, Result<Fetched, ExtractError>) {
        let mut attempt = 0u32;
        let (page, bytes) = loop {
            attempt += 1;
            let body = match self.client.get(&url).await {
                Ok(body) => body,
                Err(source) => return (0, Err(ExtractError::Api { offset, source })),
            };
            let bytes = body.len() as u64;
            let page =
                match flatten_on_rayon(body, workflow.clone(), offset, self.policy.clone()).await {
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
                        return (bytes, Err(error));
                    }
                    None => return (bytes, Err(ExtractError::WriterStopped)),
                };
            break (page, bytes);
        };
        let steps = if self.with_steps {
            let runs = page.runs.iter().skip(skip).cloned().collect();
            match self.steps(&workflow, runs).await {
                Ok(steps) => steps,
                Err(e) => return (bytes, Err(e)),
            }
        } else {
            Vec::new()
        };
        let retries = u64::from(attempt - 1);
        (
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
    pub async fn steps(
        &self,
        workflow: &Arc<str>,
        runs: Vec<RunInfo>,
    ) -> Result<Vec<RunSteps>, ExtractError> {
        stream::iter(runs.into_iter().map(|run| {
            let (client, workflow) = (self.client.clone(), workflow.clone());
            Self::run_steps(client, workflow, run, self.policy.clone())
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
        policy: Arc<Policy>,
    ) -> Result<Option<RunSteps>, ExtractError> {
        {
            let url = client.steps_url(&workflow, &run.id);
            let body = match client.get(&url).await {
                Ok(body) => body,
                Err(ApiError::Status { status: 404, .. }) => return Ok(None),
                Err(source) => return Err(ExtractError::Api { offset: 0, source }),
            };
            let batch = flatten::flatten_steps(&body, &workflow, &run.id, &policy, &run.hidden)
                .map_err(|source| ExtractError::Page {
                    offset: 0,
                    url: crate::api::redact_url(&url),
                    attempts: 1,
                    source,
                })?;
            Ok(Some(RunSteps {
                date: run.date(),
                run_id: run.id,
                batch,
            }))
        }
    }
}
