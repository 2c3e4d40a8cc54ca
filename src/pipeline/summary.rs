//! What an export did, as the CLI prints it and the manifest records it.

use std::collections::HashMap;
use std::time::Duration;

use crate::dataset::{CommitSummary, Shard, WriteSummary};
use crate::extract::{ExtractError, StopReason, WorkflowOutcome};

/// The result of an export.
#[derive(Debug)]
pub struct ExportSummary {
    /// The field policy, and what it changed in what was fetched.
    pub privacy: (crate::privacy::PolicyRecord, crate::privacy::Protected),
    /// Identifies the export in file names.
    pub export_id: String,
    /// One outcome per workflow, in the order requested.
    pub workflows: Vec<WorkflowOutcome>,
    /// Whether the export ignored earlier state and paged every history to its end.
    pub full: bool,
    /// No workflow had a saved state: the dataset's first export (of these workflows).
    pub first: bool,
    /// Files written to staging.
    pub staged: WriteSummary,
    /// What the commit did, partition by partition.
    pub committed: CommitSummary,
    /// Rows in the `workflows` table (this shard's part of it), when it was written.
    pub workflows_table_rows: Option<usize>,
    /// Delta tables: the export's application transaction and each table's new version.
    pub delta: Option<(
        crate::dataset::delta::TxnId,
        std::collections::BTreeMap<crate::dataset::Table, u64>,
    )>,
    /// With `--full --all-workflows`: workflows earlier exports stored that the API no longer
    /// lists nor serves (404); their stored runs were marked deleted upstream.
    pub workflows_gone: Vec<String>,
    /// With `--shard`: how many of the workflows named and listed the shard kept.
    pub shard: Option<ShardSelection>,
    /// Lines written to `_rejected/`: quarantined records and the traces of runs kept with
    /// unreadable values.
    pub rejected: u64,
    /// HTTP attempts made.
    pub requests: u64,
    /// Of which retries.
    pub retries: u64,
    /// Answers that were 429 Too Many Requests.
    pub throttled: u64,
    /// Response bytes received.
    pub bytes_received: u64,
    /// Wall time of the export.
    pub elapsed: Duration,
    /// Workflow id → name, from `GET /workflows` (empty without `--all-workflows`).
    pub names: HashMap<String, String>,
    /// Whether the workflows were listed (`--all-workflows`).
    pub listed: bool,
}

impl ExportSummary {
    /// Workflows that failed, for any reason (stopped ones included).
    pub fn failed(&self) -> impl Iterator<Item = &WorkflowOutcome> {
        self.workflows.iter().filter(|w| w.error.is_some())
    }

    /// Workflows that failed on their own (not stopped for the whole export).
    pub fn errors(&self) -> impl Iterator<Item = &WorkflowOutcome> {
        self.failed().filter(|w| stop_reason(w).is_none())
    }

    /// Why the export stopped before every workflow was done (an interrupt, the deadline, a
    /// rejected key), and how many workflows it stopped partway and before their first page.
    pub fn stopped(&self) -> Option<Stopped> {
        let mut stopped: Option<Stopped> = None;
        for w in &self.workflows {
            let Some(reason) = stop_reason(w) else {
                continue;
            };
            let s = stopped.get_or_insert(Stopped {
                reason,
                partway: 0,
                not_started: 0,
            });
            if w.stats.pages > 0 {
                s.partway += 1;
            } else {
                s.not_started += 1;
            }
        }
        stopped
    }

    /// The workflow's name when the API listed one, else its id.
    pub fn name_of<'a>(&'a self, workflow_id: &'a str) -> &'a str {
        self.names
            .get(workflow_id)
            .map_or(workflow_id, String::as_str)
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

    /// Records quarantined instead of stored (no usable id, not valid JSON, duplicate keys).
    pub fn quarantined(&self) -> u64 {
        self.workflows.iter().map(|w| w.stats.rejected).sum()
    }

    /// Values stored as NULL because they could not be read.
    pub fn unreadable_values(&self) -> u64 {
        self.workflows
            .iter()
            .map(|w| w.stats.unreadable_values)
            .sum()
    }
}

/// What a sharded export kept of the workflows it was given (the others are other shards').
#[derive(Debug, Clone, Copy)]
pub struct ShardSelection {
    /// The shard.
    pub shard: Shard,
    /// Workflows it exported.
    pub kept: usize,
    /// Workflows named and listed, before sharding.
    pub listed: usize,
}

/// Workflows an export stopped for one reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    /// Why.
    pub reason: StopReason,
    /// Workflows with pages fetched (and committed) before the stop.
    pub partway: usize,
    /// Workflows not reached: no page fetched.
    pub not_started: usize,
}

fn stop_reason(w: &WorkflowOutcome) -> Option<StopReason> {
    match w.error {
        Some(ExtractError::Cancelled { reason }) => Some(reason),
        _ => None,
    }
}
