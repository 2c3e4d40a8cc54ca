//! Progress bars for a terminal (the only `indicatif` code): workflows done out of total with
//! an estimate of the time left, then runs, pages, bytes and their rates, steps, retries and
//! 429s; then a commit phase until the summary replaces them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::extract::WorkflowOutcome;
use crate::progress::Reporter;

/// Two lines: workflows done (a bar, elapsed, ETA, the last failure by name), and the counters.
pub struct BarReporter {
    multi: MultiProgress,
    workflows: ProgressBar,
    counters: ProgressBar,
    started: Instant,
    runs: AtomicU64,
    pages: AtomicU64,
    bytes: AtomicU64,
    steps: AtomicU64,
    retries: AtomicU64,
    throttled: AtomicU64,
    names: Mutex<HashMap<String, String>>,
}

impl BarReporter {
    pub fn new() -> Self {
        let multi = MultiProgress::new();
        let workflows = multi.add(ProgressBar::new(0));
        // Until the workflows are known (listed, states read): no empty bar.
        workflows.set_style(
            ProgressStyle::with_template("{spinner} selecting workflows… {elapsed}")
                .expect("valid template"),
        );
        let counters = multi.add(ProgressBar::new_spinner());
        counters.set_style(ProgressStyle::with_template("  {wide_msg}").expect("valid template"));
        workflows.enable_steady_tick(Duration::from_millis(120));
        Self {
            multi,
            workflows,
            counters,
            started: Instant::now(),
            runs: AtomicU64::new(0),
            pages: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            steps: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            names: Mutex::default(),
        }
    }

    fn refresh(&self) {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let counts = Counts {
            runs: load(&self.runs),
            pages: load(&self.pages),
            bytes: load(&self.bytes),
            steps: load(&self.steps),
            retries: load(&self.retries),
            throttled: load(&self.throttled),
        };
        self.counters
            .set_message(counters_line(&counts, self.started.elapsed()));
    }
}

/// What the counters line shows.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    runs: u64,
    pages: u64,
    bytes: u64,
    steps: u64,
    retries: u64,
    throttled: u64,
}

/// `runs 36,540 (2,973/s) · 403 pages · 435.1 MB (35.4 MB/s) · steps of 36,540 runs · 2 retries,
/// 1 answered 429`: rates as whole numbers, sizes in decimal MB, the rare parts only when
/// non-zero.
fn counters_line(c: &Counts, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-3);
    let mut line = format!(
        "runs {} ({}/s) · {} pages · {:.1} MB ({:.1} MB/s)",
        thousands(c.runs),
        thousands((c.runs as f64 / secs).round() as u64),
        thousands(c.pages),
        c.bytes as f64 / 1e6,
        c.bytes as f64 / 1e6 / secs,
    );
    if c.steps > 0 {
        line.push_str(&format!(" · steps of {} runs", thousands(c.steps)));
    }
    if c.retries > 0 {
        line.push_str(&format!(" · {} retries", thousands(c.retries)));
        if c.throttled > 0 {
            line.push_str(&format!(" ({} after 429)", thousands(c.throttled)));
        }
    }
    line
}

/// `36540` → `36,540`, as the report writes counts.
fn thousands(n: u64) -> String {
    crate::report::format::count(n as f64)
}

impl Reporter for BarReporter {
    fn on_start(&self, workflows: usize, names: &HashMap<String, String>) {
        self.workflows.set_length(workflows as u64);
        self.workflows.set_style(
            ProgressStyle::with_template(
                "{spinner} workflows {pos}/{len} [{bar:24}] {elapsed} (eta {eta}) {wide_msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        *self
            .names
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = names.clone();
        self.refresh();
    }

    fn on_page(&self, _workflow_id: &str, new_runs: u64, bytes: u64) {
        self.pages.fetch_add(1, Ordering::Relaxed);
        self.runs.fetch_add(new_runs, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.refresh();
    }

    fn on_steps(&self, runs: u64) {
        self.steps.fetch_add(runs, Ordering::Relaxed);
    }

    fn on_retry(&self, _url: &str, _attempt: u32, _delay: Duration, cause: &str) {
        self.retries.fetch_add(1, Ordering::Relaxed);
        if cause == "HTTP 429" {
            self.throttled.fetch_add(1, Ordering::Relaxed);
        }
        self.refresh();
    }

    fn on_workflow_done(&self, outcome: &WorkflowOutcome) {
        self.workflows.inc(1);
        if outcome.error.is_some() {
            let names = self
                .names
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let id = &outcome.workflow_id;
            let name = names.get(id).unwrap_or(id);
            // `{wide_msg}` cuts it to the terminal's width.
            self.workflows
                .set_message(format!("last failure: {}", crate::terminal::safe(name)));
        }
    }

    fn note(&self, message: &str) {
        let message = crate::terminal::safe(message);
        if self.multi.println(&message).is_err() {
            eprintln!("{message}");
        }
    }

    fn on_finish(&self) {
        // The commit can take a while on a big export: say so instead of a blank screen.
        self.refresh();
        self.workflows.set_style(
            ProgressStyle::with_template("{spinner} committing what was fetched… {elapsed}")
                .expect("valid template"),
        );
        self.workflows.reset_elapsed();
    }

    fn on_done(&self) {
        self.workflows.finish_and_clear();
        self.counters.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_read_as_whole_rates_with_separators() {
        let table = [
            (
                Counts {
                    runs: 36_540,
                    pages: 403,
                    bytes: 435_100_000,
                    ..Counts::default()
                },
                12.3,
                "runs 36,540 (2,971/s) · 403 pages · 435.1 MB (35.4 MB/s)",
            ),
            (
                Counts {
                    runs: 7,
                    pages: 1,
                    bytes: 0,
                    steps: 7,
                    retries: 3,
                    throttled: 2,
                },
                0.5,
                "runs 7 (14/s) · 1 pages · 0.0 MB (0.0 MB/s) · steps of 7 runs · 3 retries (2 after 429)",
            ),
            (
                Counts::default(),
                0.0,
                "runs 0 (0/s) · 0 pages · 0.0 MB (0.0 MB/s)",
            ),
        ];
        for (counts, secs, want) in table {
            assert_eq!(counters_line(&counts, Duration::from_secs_f64(secs)), want);
        }
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(999), "999");
    }
}
