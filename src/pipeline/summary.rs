//! What an export did, as the CLI prints it and the manifest records it.

use std::time::Duration;

use crate::dataset::{CommitSummary, Shard, WriteSummary};
use crate::extract::WorkflowOutcome;

/// The result of an export.
#[derive(Debug)]
pub struct ExportSummary {
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
