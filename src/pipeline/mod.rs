//! Pipeline: wires the stages for one export — list workflows, page and flatten them
//! concurrently, stream rows to the writer thread, commit — and returns what happened.
//!
//! It holds no stage logic of its own; it decides only what ends the export (a rejected key, an
//! output that cannot be written) and what merely fails one workflow.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use tokio::sync::mpsc;

use crate::api::{ApiClient, ApiError};
use crate::config::ExportConfig;
pub use crate::dataset::delta::off_runtime;
use crate::dataset::delta::{self, DeltaTables, TableFormat, TxnId};
use crate::dataset::{
    self, DatasetError, DatasetWriter, DeletionMarks, Layout, PartitionDate, Revisit, Shard,
    StagedFile, Storage, Table, WriteSummary, WriterOptions, write_jsonl, write_snapshot,
};
use crate::extract::state::{self, StateError};
use crate::extract::{ExtractOptions, Extractor, SinkItem, Stopper, WorkflowOutcome};
use crate::flatten::{KeySet, PageError, Rejected, WorkflowList, flatten_workflows};
use crate::privacy::PolicyRecord;
use crate::progress::Reporter;

mod manifest;
mod plan;
mod summary;

pub use manifest::DEFAULT_KEEP_MANIFESTS;
pub use plan::{Plan, PlannedWorkflow, plan};
pub use summary::{ExportSummary, ShardSelection, Stopped};

/// Flattened partitions queued between extract and the writer; bounds memory between stages.
const WRITER_QUEUE_DEPTH: usize = 32;

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
    /// A state file could not be read or written.
    #[error(transparent)]
    State(#[from] StateError),
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

/// Warns when stored rows of the selected workflows follow another field policy than this
/// export's: they keep it (only `--full` rewrites them).
fn warn_of_other_privacy(work: &[(String, Option<state::WorkflowState>)], current: &PolicyRecord) {
    let mut others: Vec<&PolicyRecord> = Vec::new();
    let mut workflows = 0;
    for state in work.iter().filter_map(|(_, s)| s.as_ref()) {
        if state.holds_other_privacy(current) {
            workflows += 1;
            for p in state.older_privacy.iter().chain([&state.privacy]) {
                if p != current && !others.contains(&p) {
                    others.push(p);
                }
            }
        }
    }
    if workflows == 0 {
        return;
    }
    let others: Vec<String> = others.iter().map(|p| p.describe()).collect();
    tracing::warn!(
        target: "privacy",
        "{workflows} of {} workflows hold rows written under another privacy policy ({}), not this export's ({}): those rows keep it; run `export --full` to rewrite them under this one",
        work.len(),
        others.join(" | "),
        current.describe()
    );
}

/// Warns when `--full` leaves a table holding rows of earlier exports (written under their
/// policy): `steps` without `--with-steps`, `workflows` without `--all-workflows`.
fn warn_of_tables_kept(storage: &dyn Storage, config: &ExportConfig) {
    let roots = storage.list_dirs("").unwrap_or_default();
    let kept: Vec<String> = [
        (Table::Steps, config.extract.with_steps, "--with-steps"),
        (Table::Workflows, config.all_workflows, "--all-workflows"),
    ]
    .into_iter()
    .filter(|(table, rewritten, _)| !rewritten && roots.iter().any(|r| r == table.name()))
    .map(|(table, _, flag)| format!("`{}` (rewritten only with `{flag}`)", table.name()))
    .collect();
    if !kept.is_empty() {
        tracing::warn!(
            target: "privacy",
            "this `--full` export does not rewrite {}: its rows keep the privacy policy they were written under",
            kept.join(" and ")
        );
    }
}

/// A new export id: UTC time to the millisecond (sortable: manifests are pruned by it) and a
/// random suffix, e.g. `20261128T151000.042Z-3fa2c1`.
pub fn new_export_id() -> String {
    format!(
        "{}-{:06x}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ"),
        rand::random::<u32>() & 0xff_ffff
    )
}

/// Folder of the per-export staging area; cleared when an export starts and after it commits.
const STAGING_DIR: &str = "_staging";
/// Folder of the per-export manifests.
pub const MANIFEST_DIR: &str = "_manifest";
/// Written after an export in which every workflow succeeded; removed while one commits. A
/// shard's marker has its tag appended ([`Layout::success_marker`]).
pub const SUCCESS_MARKER: &str = dataset::shard::SUCCESS_MARKER;

/// Runs one export: lock, fetch into staging, merge-commit, then state, manifest and marker.
pub async fn export(
    config: ExportConfig,
    reporter: Arc<dyn Reporter>,
    stopper: Stopper,
) -> Result<ExportSummary, ExportError> {
    let started = Instant::now();
    let started_at = chrono::Utc::now();
    let layout = Layout::from(config.shard);
    let export_id = layout.export_id(new_export_id());
    let storage: Arc<dyn Storage> = dataset::open(&config.out)?;
    dataset::check_is_dataset(storage.as_ref())?;
    // A dataset of another layout is refused, also when two layouts start at the same instant.
    let _lock = layout.lock(storage.as_ref(), &lock_holder(&export_id))?;
    // What a killed export of this layout left: its staging area and hidden temp files. Nobody
    // else writes them while we hold the lock (other shards write only their own).
    let staging_root = layout.staging_root(STAGING_DIR);
    let owned = |path: &str| layout.owns(path);
    storage.remove_dir_all(&staging_root)?;
    let abandoned = storage.remove_abandoned("", &owned)?;
    check_table_format(storage.as_ref(), config.table_format)?;
    // Delta: the application transaction of this export's commits, read before anything is
    // fetched so that a table that cannot be read stops the export early.
    let txn = match config.table_format {
        TableFormat::Delta => Some(off_runtime(|| {
            // One writer of the marker: shards writing it at once would fence each other out.
            if !matches!(layout, Layout::Sharded(s) if s.index() > 0) {
                delta::mark(storage.as_ref())?;
            }
            let tables = DeltaTables::open(storage.as_ref())?;
            TxnId::next(&tables, storage.as_ref(), layout)
        })?),
        TableFormat::Hive => None,
    };
    if abandoned > 0 {
        tracing::info!(target: "dataset", files = abandoned, "removed files left by an interrupted export");
    }

    let staging = format!("{staging_root}/{export_id}");
    let state_dir = layout.state_dir(state::STATE_DIR);
    let result: Result<ExportSummary, ExportError> = async {
        let hook_reporter = reporter.clone();
        let client = ApiClient::new(config.client.clone())
            .map_err(ExportError::Client)?
            .with_retry_hook(Arc::new(move |url, attempt, delay, cause| {
                hook_reporter.on_retry(url, attempt, delay, cause);
            }));

        let (mut workflow_ids, workflow_list) = select_workflows(&client, &config).await?;
        let shard = keep_shard(&mut workflow_ids, config.shard);
        if let Some(s) = shard {
            tracing::info!(target: "extract", "shard {}: {} of {} workflows are this shard's", s.shard, s.kept, s.listed);
        }
        let mut work = Vec::with_capacity(workflow_ids.len());
        let states = if config.full {
            None
        } else {
            Some(state::StateFolder::list(storage.as_ref(), &state_dir)?)
        };
        for id in workflow_ids {
            let previous = match &states {
                Some(states) => states.load(storage.as_ref(), &id)?,
                None => None,
            };
            work.push((id, previous));
        }
        warn_of_other_privacy(&work, config.extract.policy.record());
        if config.full && !config.extract.policy.is_empty() {
            warn_of_tables_kept(storage.as_ref(), &config);
        }
        let first = !config.full && work.iter().all(|(_, state)| state.is_none());
        let no_names = std::collections::HashMap::new();
        reporter.on_start(
            work.len(),
            workflow_list.as_ref().map_or(&no_names, |l| &l.names),
        );
        let selected: Vec<String> = work.iter().map(|(id, _)| id.clone()).collect();
        // Where the runs fetched again (unfinished when stored) were stored: a start corrected
        // to another day moves a run, and its older row must go.
        let revisit = if config.full {
            Revisit::All
        } else {
            Revisit::Dates(
                work.iter()
                    .flat_map(|(_, state)| state.iter().flat_map(|s| &s.unfinished))
                    .map(|run| PartitionDate::from_micros(run.start_us()))
                    .collect(),
            )
        };

        let (tx, rx) = mpsc::channel(WRITER_QUEUE_DEPTH);
        let writer = spawn_writer(
            storage.clone(),
            WriterOptions::new(format!("{staging}/")),
            export_id.clone(),
            rx,
        );
        let options = ExtractOptions {
            export_id: export_id.clone(),
            lookback: (!config.full).then_some(config.lookback),
            ..config.extract.clone()
        };
        let extractor = Extractor::new(client.clone(), options, tx, reporter.clone(), stopper);
        let mut outcomes = extractor.run(work).await;
        drop(extractor); // closes the queue so the writer finishes
        reporter.on_finish();
        let (staged, rejected) = tokio::task::spawn_blocking(move || writer.join())
            .await
            .map_err(|_| ExportError::WriterPanicked)?
            .map_err(|_| ExportError::WriterPanicked)??;

        // Commit: from here on the dataset changes. `_SUCCESS` goes first so that nobody takes a
        // dataset in the middle of a commit for a finished one.
        let success_marker = layout.success_marker();
        if workflow_list.is_some() && txn.is_none() {
            // Refuse a `workflows` folder of another layout before any partition changes.
            layout.check_partition(storage.as_ref(), Table::Workflows.name())?;
        }
        remove_if_present(storage.as_ref(), &success_marker)?;
        let mut marks = deletion_marks(&mut outcomes, started_at);
        let mut workflows_gone = Vec::new();
        if config.full && workflow_list.is_some() {
            workflows_gone =
                gone_workflows(&client, storage.as_ref(), &state_dir, &selected, layout).await?;
            for id in &workflows_gone {
                marks.upstream.insert(id.clone(), KeySet::default());
            }
        }
        let workflow_rows = workflow_list
            .as_ref()
            .map(|list| layout.keep_workflow_rows(&list.batch));
        let change = dataset::Staged {
            files: &staged,
            steps_fetched: config.extract.with_steps,
            layout,
            marks: &marks,
            revisit: &revisit,
        };
        let (committed, workflows_table_rows, delta_versions) = match &txn {
            None => {
                let committed = dataset::commit(storage.as_ref(), change)?;
                let rows = match &workflow_rows {
                    Some(rows) => {
                        Some(write_snapshot(storage.as_ref(), Table::Workflows, rows, layout)?.rows)
                    }
                    None => None,
                };
                (committed, rows, BTreeMap::new())
            }
            Some(txn) => off_runtime(|| {
                let tables = DeltaTables::open(storage.as_ref())?;
                let mut done = delta::commit(&tables, storage.as_ref(), change, txn, &export_id)?;
                let mut rows = None;
                if let Some(batch) = &workflow_rows {
                    let store = storage.as_ref();
                    let table = Table::Workflows;
                    if let Some(v) =
                        delta::commit_snapshot(&tables, store, table, batch, layout, txn, &export_id)?
                    {
                        done.versions.insert(table, v);
                    }
                    rows = Some(batch.num_rows());
                }
                Ok::<_, DatasetError>((done.summary, rows, done.versions))
            })?,
        };
        // State advances only now that the data it describes is durable; failed workflows keep
        // theirs.
        for state in outcomes.iter().filter_map(|o| o.new_state.as_ref()) {
            state::save(storage.as_ref(), &state_dir, state)?;
        }
        // The whole staging root is this export's (cleared at the start, under the lock): a
        // shard's `_staging/shard-KK-of-NN` goes too instead of staying as an empty folder.
        storage.remove_dir_all(&staging_root)?;

        let stats = client.stats();
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        let summary = ExportSummary {
            privacy: (
                config.extract.policy.record().clone(),
                config.extract.policy.protected(),
            ),
            export_id,
            full: config.full,
            first,
            workflows: outcomes,
            staged,
            committed,
            workflows_table_rows,
            delta: txn.map(|txn| (txn, delta_versions)),
            workflows_gone,
            shard,
            rejected,
            requests: load(&stats.requests),
            retries: load(&stats.retries),
            throttled: load(&stats.throttled),
            bytes_received: load(&stats.bytes),
            elapsed: started.elapsed(),
            listed: workflow_list.is_some(),
            names: workflow_list.map(|list| list.names).unwrap_or_default(),
        };
        let manifest = manifest::manifest(&summary, &config, started_at);
        write_jsonl(
            storage.as_ref(),
            &format!("{MANIFEST_DIR}/{}.json", summary.export_id),
            [manifest.to_string()],
        )?;
        if summary.failed().next().is_none() {
            write_jsonl(storage.as_ref(), &success_marker, [manifest.to_string()])?;
        }
        // Housekeeping after the export is whole: a manifest that cannot be removed now is
        // removed by a later export.
        match manifest::prune(storage.as_ref(), layout, config.keep_manifests) {
            Ok(0) => {}
            Ok(pruned) => tracing::debug!(target: "dataset", pruned, keep = config.keep_manifests, "removed the oldest manifests"),
            Err(e) => tracing::warn!(target: "dataset", error = %crate::error_chain(&e), "cannot remove the oldest manifests; a later export tries again"),
        }
        Ok(summary)
    }
    .await;
    if result.is_err() {
        // Leave the dataset as the last good export left it: no staged files, no temp files
        // (a full disk is the usual reason to be here, and they hold the space).
        let _ = storage.remove_dir_all(&staging);
        let _ = storage.remove_abandoned("", &owned);
    }
    result
}

/// Refuses to export in `wanted` into a dataset whose tables are in the other format: Hive
/// files next to a Delta log would be invisible to Delta readers, and the reverse.
fn check_table_format(storage: &dyn Storage, wanted: TableFormat) -> Result<(), DatasetError> {
    match delta::detect(storage)? {
        Some(found) if found != wanted => Err(DatasetError::TableFormat {
            root: storage.display(""),
            found: found.name(),
            wanted: wanted.name(),
        }),
        _ => Ok(()),
    }
}

/// The workflows named on the command line or in a file, then (with `--all-workflows`) every
/// workflow `GET /workflows` lists, each once; and the list, for the `workflows` table.
pub async fn select_workflows(
    client: &ApiClient,
    config: &ExportConfig,
) -> Result<(Vec<String>, Option<WorkflowList>), ExportError> {
    let mut workflow_ids = config.workflow_ids.clone();
    if !config.all_workflows {
        return Ok((workflow_ids, None));
    }
    let url = client.workflows_url();
    let body = client.get(&url).await.map_err(ExportError::ListWorkflows)?;
    let list = flatten_workflows(
        &body,
        chrono::Utc::now().timestamp_micros(),
        &config.extract.policy,
    )
    .map_err(|source| ExportError::WorkflowList {
        url: crate::api::redact_url(&url),
        source,
    })?;
    if list.skipped > 0 {
        tracing::warn!(target: "extract", skipped = list.skipped, "workflow list entries without an id were skipped");
    }
    let mut known: HashSet<String> = workflow_ids.iter().cloned().collect();
    for id in &list.ids {
        if known.insert(id.clone()) {
            workflow_ids.push(id.clone());
        }
    }
    Ok((workflow_ids, Some(list)))
}

/// Keeps the workflows of `shard` (all without one) and says what it kept of how many.
fn keep_shard(ids: &mut Vec<String>, shard: Option<Shard>) -> Option<ShardSelection> {
    let listed = ids.len();
    ids.retain(|id| Layout::from(shard).keeps(id));
    shard.map(|shard| ShardSelection {
        shard,
        kept: ids.len(),
        listed,
    })
}

/// Workflows that earlier exports of this layout stored (they have a state file) that are not
/// among `selected` (what `GET /workflows` lists now) and whose history the API no longer knows
/// (404): deleted upstream. One request each; a workflow that is still served is left alone.
async fn gone_workflows(
    client: &ApiClient,
    storage: &dyn Storage,
    state_dir: &str,
    selected: &[String],
    layout: Layout,
) -> Result<Vec<String>, ExportError> {
    let folder = state::StateFolder::list(storage, state_dir)?;
    let others = folder.others(storage, selected.iter().map(String::as_str))?;
    let mut gone = Vec::new();
    for id in others.into_iter().filter(|id| layout.keeps(id)) {
        match client.get(&client.runs_url(&id, 1, 0)).await {
            Err(ApiError::Status { status: 404, .. }) => gone.push(id),
            Ok(_) => {
                tracing::warn!(target: "extract", workflow_id = %id, "a workflow stored earlier is no longer listed but still served; its runs are left as they are (pass it with `--workflow` to export it)")
            }
            Err(e) => {
                tracing::warn!(target: "extract", workflow_id = %id, error = %crate::error_chain(&e), "cannot tell whether a workflow stored earlier still exists; its runs are left as they are")
            }
        }
    }
    Ok(gone)
}

/// What a `--full` export found deleted upstream: the runs of each workflow paged to its end
/// (outcomes carry them only in `--full` exports).
fn deletion_marks(
    outcomes: &mut [WorkflowOutcome],
    started_at: chrono::DateTime<chrono::Utc>,
) -> DeletionMarks {
    DeletionMarks {
        at_us: started_at.timestamp_micros(),
        upstream: outcomes
            .iter_mut()
            .filter_map(|o| Some((o.workflow_id.clone(), o.seen.take()?)))
            .collect(),
    }
}

fn remove_if_present(storage: &dyn Storage, path: &str) -> Result<(), DatasetError> {
    if storage.list("")?.iter().any(|name| name == path) {
        storage.remove(path)?;
    }
    Ok(())
}

/// Who holds the lock, for the message another export shows.
fn lock_holder(export_id: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "this host".to_owned());
    format!(
        "pid {} on {host}, export {export_id} started {}",
        std::process::id(),
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )
}

type WriterResult = Result<(WriteSummary, u64), DatasetError>;

/// One line of `_rejected/`.
fn rejected_line(r: Rejected) -> String {
    json!({
        "workflow_id": r.workflow_id,
        "offset": r.offset,
        "index": r.index,
        "reason": r.reason,
        "kept": r.kept,
        "record": r.record,
    })
    .to_string()
}

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
            // `_rejected/` lines go to a staged file as they arrive: memory does not grow with
            // bad data (every record of a format change, say).
            let path = format!("_rejected/rejected-{export_id}.jsonl");
            let mut rejected: Option<(Box<dyn StagedFile>, u64)> = None;
            while let Some(item) = rx.blocking_recv() {
                match item {
                    SinkItem::Rows(rows) => writer.write(&rows)?,
                    SinkItem::Rejected(list) => {
                        let (file, count) = match &mut rejected {
                            Some(open) => open,
                            None => rejected.insert((storage.create(&path)?, 0)),
                        };
                        for r in list {
                            let line = rejected_line(r);
                            file.write_all(line.as_bytes())
                                .and_then(|()| file.write_all(b"\n"))
                                .map_err(|e| {
                                    DatasetError::io("write", std::path::Path::new(&path), e)
                                })?;
                            *count += 1;
                        }
                    }
                    SinkItem::Steps(date, batch) => {
                        writer.write_batch(Table::Steps, date, &batch)?
                    }
                }
            }
            let summary = writer.close()?;
            let count = match rejected {
                Some((file, count)) => {
                    file.commit()?;
                    count
                }
                None => 0,
            };
            Ok((summary, count))
        })
        .expect("spawning a thread")
}
