//! Progress bars for a terminal (the only `indicatif` code): workflows done, runs, pages, rate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::extract::WorkflowOutcome;
use crate::progress::Reporter;

/// Two bars: workflows done out of total, and a running count of runs and pages.
pub struct BarReporter {
    _multi: MultiProgress,
    workflows: ProgressBar,
    runs: ProgressBar,
    pages: AtomicU64,
    retries: AtomicU64,
}

impl BarReporter {
    pub fn new() -> Self {
        let multi = MultiProgress::new();
        let workflows = multi.add(ProgressBar::new(0));
        workflows.set_style(
            ProgressStyle::with_template(
                "{spinner} workflows {pos}/{len} [{bar:30}] {elapsed_precise} {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        let runs = multi.add(ProgressBar::new_spinner());
        runs.set_style(
            ProgressStyle::with_template("  runs {human_pos} ({per_sec}) {msg}")
                .expect("valid template"),
        );
        workflows.enable_steady_tick(Duration::from_millis(120));
        Self {
            _multi: multi,
            workflows,
            runs,
            pages: AtomicU64::new(0),
            retries: AtomicU64::new(0),
        }
    }

    fn refresh_message(&self) {
        let pages = self.pages.load(Ordering::Relaxed);
        let retries = self.retries.load(Ordering::Relaxed);
        self.runs
            .set_message(format!("{pages} pages, {retries} retries"));
    }
}

impl Reporter for BarReporter {
    fn on_start(&self, workflows: usize) {
        self.workflows.set_length(workflows as u64);
    }

    fn on_page(&self, _workflow_id: &str, new_runs: u64, _bytes: u64) {
        self.pages.fetch_add(1, Ordering::Relaxed);
        self.runs.inc(new_runs);
        self.refresh_message();
    }

    fn on_retry(&self, _url: &str, _attempt: u32, _delay: Duration, _cause: &str) {
        self.retries.fetch_add(1, Ordering::Relaxed);
        self.refresh_message();
    }

    fn on_workflow_done(&self, outcome: &WorkflowOutcome) {
        self.workflows.inc(1);
        if outcome.error.is_some() {
            self.workflows.set_message(format!(
                "last failure: {}",
                crate::terminal::safe(&outcome.workflow_id)
            ));
        }
    }

    fn on_finish(&self) {
        self.workflows.finish_and_clear();
        self.runs.finish_and_clear();
    }
}
