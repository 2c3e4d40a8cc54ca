//! Pipeline: wires the stages for one export — list workflows, page and flatten them
//! concurrently, stream rows to the writer thread, commit — and returns what happened.
//!
//! It holds no stage logic of its own; it decides only what ends the export (a rejected key, an
//! output that cannot be written) and what merely fails one workflow.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::mpsc;

use crate::api::{ApiClient, ApiError};
use crate::config::ExportConfig;
use crate::dataset::{
    DatasetError, DatasetWriter, LocalStorage, Storage, Table, WriteSummary, WriterOptions,
    write_jsonl, write_snapshot,
};
use crate::extract::{Extractor, SinkItem, Stopper, WorkflowOutcome};
use crate::flatten::{PageError, Rejected, flatten_workflows};
use crate::progress::Reporter;

/// Flattened partitions queued between extract and the writer; bounds memory between stages.
const WRITER_QUEUE_DEPTH: usize = 64;

/// What ends an export as a whole (as opposed to failing one workflow).
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The dataset could not be written.
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    /// Listing workflows failed.
    #[error("cannot list workflows")]
    ListWorkflows(#[source] ApiError),
    /// The workflow list is not the documented array.
    #[error("cannot read the workflow list from `{url}`")]
    WorkflowList {
        url: String,
        #[source]
        source: PageError,
    },
    /// The HTTP client could not be built.
    #[error(transparent)]
    Client(ApiError),
    /// The writer thread died; a bug.
    #[error("the dataset writer thread panicked")]
    WriterPanicked,
}

impl ExportError {
    /// The API error behind this one, if any.
    pub fn api_error(&self) -> Option<&ApiError> {
        match self {
            ExportError::ListWorkflows(e) | ExportError::Client(e) => Some(e),
            _ => None,
        }
    }
}

/// The result of an export.
#[derive(Debug)]
pub struct ExportSummary {
    /// Identifies the export in file names.
    pub export_id: String,
    /// One outcome per workflow, in the order requested.
    pub workflows: Vec<WorkflowOutcome>,
    /// Files committed.
    pub written: WriteSummary,
    /// Rows in the `workflows` table, when it was written.
    pub workflows_table_rows: Option<usize>,
    /// Records quarantined to `_rejected/`.
    pub rejected: u64,
    /// HTTP attempts made.
    pub requests: u64,
    /// Of which retries.
    pub retries: u64,
    /// Response bytes received.
    pub bytes_received: u64,
    /// Wall time of the export.
    pub elapsed: Duration,
}

impl ExportSummary {
    /// Workflows that failed.
    pub fn failed(&self) -> impl Iterator<Item = &WorkflowOutcome> {
        self.workflows.iter().filter(|w| w.error.is_some())
    }

    /// Distinct runs exported.
    pub fn runs(&self) -> u64 {
        self.workflows.iter().map(|w| w.stats.runs).sum()
    }

    /// Pages received.
    pub fn pages(&self) -> u64 {
        self.workflows.iter().map(|w| w.stats.pages).sum()
    }

    /// Runs skipped because they were already exported in this run.
    pub fn duplicates(&self) -> u64 {
        self.workflows.iter().map(|w| w.stats.duplicates).sum()
    }

    /// Values stored as NULL because they could not be read.
    pub fn unreadable_values(&self) -> u64 {
        self.workflows
            .iter()
            .map(|w| w.stats.unreadable_values)
            .sum()
    }
}

/// A new export id: UTC time (sortable) and a random suffix, e.g. `20261128T151000Z-3fa2c1`.
pub fn new_export_id() -> String {
    format!(
        "{}-{:06x}",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
        rand::random::<u32>() & 0xff_ffff
    )
}

/// Runs one export.
pub async fn export(
    config: ExportConfig,
    reporter: Arc<dyn Reporter>,
    stopper: Stopper,
) -> Result<ExportSummary, ExportError> {
    let started = Instant::now();
    let export_id = new_export_id();
    let storage: Arc<dyn Storage> = Arc::new(LocalStorage::open(&config.out)?);
    // Fail before the first request if the folder cannot be written to.
    drop(storage.create("_probe")?);

    let hook_reporter = reporter.clone();
    let client = ApiClient::new(config.client.clone())
        .map_err(ExportError::Client)?
        .with_retry_hook(Arc::new(move |url, attempt, delay, cause| {
            hook_reporter.on_retry(url, attempt, delay, cause);
        }));

    let mut workflow_ids = config.workflow_ids.clone();
    let mut workflows_table_rows = None;
    if config.all_workflows {
        let url = client.workflows_url();
        let body = client.get(&url).await.map_err(ExportError::ListWorkflows)?;
        let list =
            flatten_workflows(&body, chrono::Utc::now().timestamp_micros()).map_err(|source| {
                ExportError::WorkflowList {
                    url: crate::api::redact_url(&url),
                    source,
                }
            })?;
        if list.skipped > 0 {
            tracing::warn!(target: "extract", skipped = list.skipped, "workflow list entries without an id were skipped");
        }
        write_snapshot(storage.as_ref(), Table::Workflows, &export_id, &list.batch)?;
        workflows_table_rows = Some(list.batch.num_rows());
        for id in list.ids {
            if !workflow_ids.contains(&id) {
                workflow_ids.push(id);
            }
        }
    }
    reporter.on_start(workflow_ids.len());

    let (tx, rx) = mpsc::channel(WRITER_QUEUE_DEPTH);
    let writer = spawn_writer(
        storage.clone(),
        WriterOptions::new(&export_id),
        export_id.clone(),
        rx,
    );
    let extractor = Extractor::new(
        client.clone(),
        config.extract.clone(),
        tx,
        reporter.clone(),
        stopper,
    );
    let outcomes = extractor.run(workflow_ids).await;
    drop(extractor); // closes the queue so the writer finishes
    reporter.on_finish();
    let (written, rejected) = tokio::task::spawn_blocking(move || writer.join())
        .await
        .map_err(|_| ExportError::WriterPanicked)?
        .map_err(|_| ExportError::WriterPanicked)??;

    let stats = client.stats();
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    Ok(ExportSummary {
        export_id,
        workflows: outcomes,
        written,
        workflows_table_rows,
        rejected,
        requests: load(&stats.requests),
        retries: load(&stats.retries),
        bytes_received: load(&stats.bytes),
        elapsed: started.elapsed(),
    })
}

type WriterResult = Result<(WriteSummary, u64), DatasetError>;

/// The writer runs on its own thread: Parquet encoding is CPU work that must not block the
/// async runtime, and a single owner keeps the set of open files simple.
fn spawn_writer(
    storage: Arc<dyn Storage>,
    options: WriterOptions,
    export_id: String,
    mut rx: mpsc::Receiver<SinkItem>,
) -> std::thread::JoinHandle<WriterResult> {
    std::thread::Builder::new()
        .name("dataset-writer".into())
        .spawn(move || {
            let mut writer = DatasetWriter::try_new(storage.clone(), options)?;
            let mut rejected: Vec<Rejected> = Vec::new();
            while let Some(item) = rx.blocking_recv() {
                match item {
                    SinkItem::Rows(rows) => writer.write(&rows)?,
                    SinkItem::Rejected(list) => rejected.extend(list),
                }
            }
            let summary = writer.close()?;
            let count = rejected.len() as u64;
            if !rejected.is_empty() {
                let lines = rejected.into_iter().map(|r| {
                    json!({
                        "workflow_id": r.workflow_id,
                        "offset": r.offset,
                        "index": r.index,
                        "reason": r.reason,
                        "record": r.record,
                    })
                    .to_string()
                });
                write_jsonl(
                    storage.as_ref(),
                    &format!("_rejected/rejected-{export_id}.jsonl"),
                    lines,
                )?;
            }
            Ok((summary, count))
        })
        .expect("spawning a thread")
}
