//! Progress reporting as an interface: stages call a [`Reporter`]; how it is shown (bars on a
//! terminal, log lines for schedulers, nothing in tests) is decided at the binary's edge.

use std::collections::HashMap;
use std::time::Duration;

use crate::extract::WorkflowOutcome;

/// Receives progress events from the export. Every method has a no-op default.
pub trait Reporter: Send + Sync {
    /// The export is about to fetch `workflows` workflows; `names` maps ids to names where the
    /// API listed them.
    fn on_start(&self, _workflows: usize, _names: &HashMap<String, String>) {}
    /// A page of `workflow_id` arrived holding `new_runs` runs not seen before and `bytes` bytes.
    fn on_page(&self, _workflow_id: &str, _new_runs: u64, _bytes: u64) {}
    /// The steps of `runs` runs were fetched (one request each).
    fn on_steps(&self, _runs: u64) {}
    /// A request failed transiently and will be retried after `delay`.
    fn on_retry(&self, _url: &str, _attempt: u32, _delay: Duration, _cause: &str) {}
    /// A workflow finished, successfully or not.
    fn on_workflow_done(&self, _outcome: &WorkflowOutcome) {}
    /// All fetching is over; files are being committed.
    fn on_finish(&self) {}
    /// The command is done (committed or failed): take any progress display off the screen.
    fn on_done(&self) {}
    /// A message for the person watching (an interrupt was received, say): on stderr, above
    /// any progress display.
    fn note(&self, message: &str) {
        eprintln!("{}", crate::terminal::safe(message));
    }
}

/// Shows nothing.
#[derive(Debug, Default)]
pub struct Silent;

impl Reporter for Silent {}

/// Plain log lines through `tracing` (text or JSON, as the subscriber is set up).
#[derive(Debug)]
pub struct LogReporter {
    /// The command whose progress this is (`export`, `verify`), for the log lines.
    pub command: &'static str,
    /// Log each workflow's failure as it happens (`warn`). Off for text logs: the command prints
    /// one `error:` line per failure at its end, and a log line would say it twice.
    pub failures: bool,
}

impl Default for LogReporter {
    fn default() -> Self {
        Self {
            command: "export",
            failures: true,
        }
    }
}

impl Reporter for LogReporter {
    fn on_start(&self, workflows: usize, _names: &HashMap<String, String>) {
        tracing::info!(target: "extract", workflows, "{} started", self.command);
    }

    fn on_retry(&self, url: &str, attempt: u32, delay: Duration, cause: &str) {
        tracing::warn!(target: "api", url, attempt, delay_ms = delay.as_millis() as u64, cause, "retrying");
    }

    fn on_workflow_done(&self, outcome: &WorkflowOutcome) {
        let s = &outcome.stats;
        match &outcome.error {
            None => tracing::info!(
                target: "extract",
                workflow_id = %outcome.workflow_id, runs = s.runs, pages = s.pages,
                duplicates = s.duplicates, rejected = s.rejected, "workflow read to the end"
            ),
            Some(error) if self.failures => tracing::warn!(
                target: "extract",
                workflow_id = %outcome.workflow_id, runs = s.runs, pages = s.pages,
                error = %crate::error_chain(error), "workflow failed"
            ),
            Some(error) => tracing::debug!(
                target: "extract",
                workflow_id = %outcome.workflow_id, runs = s.runs, pages = s.pages,
                error = %crate::error_chain(error), "workflow failed"
            ),
        }
    }
}
