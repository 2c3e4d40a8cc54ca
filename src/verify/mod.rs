//! Verify: proves a dataset against the API. It reads what the dataset's `runs` table holds,
//! pages every selected workflow's current history with the export's own drift-safe paging,
//! and compares them run by run ([`compare`]): runs missing from the dataset, runs stored but
//! gone upstream (and not marked), runs whose status or end time differ, and duplicates.
//!
//! It writes nothing into the dataset (no lock, no state, no manifest): a dataset on object
//! storage is read from a temporary download. Rendering the result is [`render`]'s.

pub mod compare;
pub mod render;
mod stored;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::TimestampMicrosecondType;
use tokio::sync::mpsc;

use crate::api::ApiClient;
use crate::config::ExportConfig;
use crate::dataset::{DatasetError, Layout};
use crate::extract::{ExtractError, ExtractOptions, Extractor, SinkItem, Stopper};
use crate::pipeline::{self, ExportError};
use crate::progress::Reporter;
use compare::{RunFacts, WorkflowCheck};

/// Pages queued between paging and the collector of what the API serves.
const COLLECT_QUEUE_DEPTH: usize = 64;

/// What ends a verification as a whole (as opposed to failing one workflow).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// Listing workflows or building the client failed.
    #[error(transparent)]
    Api(#[from] ExportError),
    /// The dataset could not be read.
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    /// `--out` names no dataset.
    #[error("no dataset at `{shown}`: nothing to verify")]
    NoDataset {
        /// The folder, as given.
        shown: String,
    },
    /// The task collecting the API's runs died; a bug.
    #[error("the collector of the API's runs stopped")]
    CollectorFailed,
}

/// The result of a verification.
#[derive(Debug)]
pub struct Verification {
    /// One check per workflow: those selected, in order, then (with `--all-workflows`) stored
    /// workflows the API no longer lists.
    pub workflows: Vec<WorkflowCheck>,
    /// Why workflows could not be read from the API, by workflow.
    pub failures: Vec<(String, ExtractError)>,
    /// HTTP attempts made.
    pub requests: u64,
    /// Wall time.
    pub elapsed: Duration,
}

impl Verification {
    /// Whether the dataset holds exactly what the API serves, for every workflow.
    pub fn agrees(&self) -> bool {
        self.workflows.iter().all(WorkflowCheck::agrees)
    }

    /// Workflows that were read and differ.
    pub fn differing(&self) -> impl Iterator<Item = &WorkflowCheck> {
        self.workflows
            .iter()
            .filter(|w| w.error.is_none() && !w.agrees())
    }
}

/// Verifies the dataset in `config.out` against the API, for the workflows `config` selects.
pub async fn verify(
    config: ExportConfig,
    reporter: Arc<dyn Reporter>,
    stopper: Stopper,
) -> Result<Verification, VerifyError> {
    let started = Instant::now();
    let layout = Layout::from(config.shard);
    let out = config.out.clone();
    // The dataset first: what it held when verify began.
    let mut stored = tokio::task::spawn_blocking(move || {
        stored::read(&out, &|workflow: &str| layout.keeps(workflow))
    })
    .await
    .map_err(|_| VerifyError::CollectorFailed)??;

    let hook_reporter = reporter.clone();
    let client = ApiClient::new(config.client.clone())
        .map_err(ExportError::Client)?
        .with_retry_hook(Arc::new(move |url, attempt, delay, cause| {
            hook_reporter.on_retry(url, attempt, delay, cause);
        }));
    let (mut ids, list) = pipeline::select_workflows(&client, &config).await?;
    ids.retain(|id| layout.keeps(id));
    // With `--all-workflows`, stored workflows the API no longer lists are read too: one it no
    // longer knows (404) has nothing upstream any more.
    let unlisted: HashSet<String> = if config.all_workflows {
        let selected: HashSet<&String> = ids.iter().collect();
        stored
            .keys()
            .filter(|id| !selected.contains(id))
            .cloned()
            .collect()
    } else {
        HashSet::new()
    };
    let mut extra: Vec<String> = unlisted.iter().cloned().collect();
    extra.sort();
    ids.extend(extra);
    reporter.on_start(ids.len(), &list.map(|l| l.names).unwrap_or_default());
    let (tx, rx) = mpsc::channel(COLLECT_QUEUE_DEPTH);
    let collector = tokio::spawn(collect(rx));
    let options = ExtractOptions {
        export_id: "verify".to_owned(),
        lookback: None,
        since_us: None,
        with_steps: false,
        keep_seen: false,
        ..config.extract.clone()
    };
    let extractor = Extractor::new(client.clone(), options, tx, reporter.clone(), stopper);
    let work = ids.iter().map(|id| (id.clone(), None)).collect();
    let outcomes = extractor.run(work).await;
    drop(extractor); // closes the queue so the collector finishes
    reporter.on_finish();
    let mut upstream = collector.await.map_err(|_| VerifyError::CollectorFailed)?;

    let mut workflows = Vec::with_capacity(outcomes.len());
    let mut failures = Vec::new();
    for outcome in outcomes {
        let id = outcome.workflow_id;
        let runs = stored.remove(&id).unwrap_or_default();
        let listed = !unlisted.contains(&id);
        let gone = !listed && outcome.error.as_ref().is_some_and(unknown_workflow);
        match outcome.error {
            Some(error) if !gone => {
                let shown = crate::error_chain(&error);
                workflows.push(WorkflowCheck::failed(&id, runs.len(), shown));
                failures.push((id, error));
            }
            _ => {
                let served = upstream.remove(&id).unwrap_or_default();
                let mut check = compare::compare(&id, &served, &runs);
                check.unlisted = !listed;
                workflows.push(check);
            }
        }
    }
    let stats = client.stats();
    Ok(Verification {
        workflows,
        failures,
        requests: stats.requests.load(std::sync::atomic::Ordering::Relaxed),
        elapsed: started.elapsed(),
    })
}

/// Whether paging failed because the API does not know the workflow (404).
fn unknown_workflow(error: &ExtractError) -> bool {
    matches!(
        error.api_error(),
        Some(crate::api::ApiError::Status { status: 404, .. })
    )
}

/// What the API serves, by workflow then run id, from the rows paging sends.
async fn collect(mut rx: mpsc::Receiver<SinkItem>) -> HashMap<String, HashMap<String, RunFacts>> {
    let mut served: HashMap<String, HashMap<String, RunFacts>> = HashMap::new();
    while let Some(item) = rx.recv().await {
        if let SinkItem::Rows(rows) = item {
            add_served(&rows.runs, &mut served);
        }
    }
    served
}

fn add_served(batch: &RecordBatch, served: &mut HashMap<String, HashMap<String, RunFacts>>) {
    let text = |name: &str| {
        batch
            .column_by_name(name)
            .and_then(|c| c.as_string_opt::<i32>())
            .expect("the runs schema has this text column")
    };
    let (workflow, run, status) = (text("workflow_id"), text("run_id"), text("status"));
    let end = batch
        .column_by_name("end_time")
        .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
        .expect("the runs schema has `end_time`");
    for i in 0..batch.num_rows() {
        let facts = RunFacts {
            status: status.is_valid(i).then(|| status.value(i).to_owned()),
            end_time: end.is_valid(i).then(|| end.value(i)),
        };
        served
            .entry(workflow.value(i).to_owned())
            .or_default()
            .insert(run.value(i).to_owned(), facts);
    }
}
