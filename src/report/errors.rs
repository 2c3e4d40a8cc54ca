//! Error groups, folded in the pass over `runs`: each message is reduced to a [`fingerprint`]
//! (quoted values, UUIDs, long hex strings and numbers masked) and counted per status,
//! fingerprint and workflow, so memory grows with the groups, not with the runs. `error_groups`
//! is read off these cells: runs, workflows affected and the three most affected, first and last
//! seen, and a sample (the newest run of the most affected workflow).

use std::collections::HashMap;
use std::sync::LazyLock;

use polars::prelude::*;
use regex::Regex;

use super::frame::FrameBuilder;
use super::runs::Names;
use super::scan::min_of;

/// The masks, applied in order (`queries/top_errors.sql` applies the same).
static MASKS: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    [
        (r"'[^']*'", "'…'"),
        (r#""[^"]*""#, "\"…\""),
        (
            r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
            "<id>",
        ),
        (r"\b(0x)?[0-9a-fA-F]{8,}\b", "<hex>"),
        (r"\d+(\.\d+)?", "<n>"),
        (r"\s+", " "),
    ]
    .into_iter()
    .map(|(pattern, with)| (Regex::new(pattern).expect("a valid mask"), with))
    .collect()
});

/// A normalised error message: messages that differ only in ids or values share one.
pub fn fingerprint(message: &str) -> String {
    let mut text = message.to_owned();
    for (mask, with) in MASKS.iter() {
        if let std::borrow::Cow::Owned(changed) = mask.replace_all(&text, *with) {
            text = changed;
        }
    }
    text
}

/// A sampled run: (start, run id, message); the newest wins, ties to the smaller run id.
type Sample = (Option<i64>, String, String);

fn newer(a: Option<Sample>, b: Option<Sample>) -> Option<Sample> {
    match (a, b) {
        (Some(a), Some(b)) => {
            let b_newer = (b.0, std::cmp::Reverse(&b.1)) > (a.0, std::cmp::Reverse(&a.1));
            Some(if b_newer { b } else { a })
        }
        (a, b) => a.or(b),
    }
}

/// The runs of one workflow in one group.
#[derive(Debug, Default)]
struct Cell {
    count: i64,
    first: Option<i64>,
    last: Option<i64>,
    sample: Option<Sample>,
}

impl Cell {
    fn absorb(&mut self, other: Cell) {
        self.count += other.count;
        self.first = min_of(self.first, other.first);
        self.last = self.last.max(other.last);
        self.sample = newer(self.sample.take(), other.sample);
    }
}

/// (status, fingerprint) → workflow → cell.
#[derive(Debug, Default)]
pub struct ErrorGroups(HashMap<(Option<String>, String), HashMap<String, Cell>>);

impl ErrorGroups {
    /// Counts one run's error.
    pub fn add(
        &mut self,
        status: Option<&str>,
        error: &str,
        workflow: &str,
        run_id: &str,
        start: Option<i64>,
    ) {
        let key = (status.map(str::to_owned), fingerprint(error));
        let cells = self.0.entry(key).or_default();
        if !cells.contains_key(workflow) {
            cells.insert(workflow.to_owned(), Cell::default());
        }
        let cell = cells.get_mut(workflow).expect("inserted above");
        cell.count += 1;
        cell.first = min_of(cell.first, start);
        cell.last = cell.last.max(start);
        let newer_than = |s: &Sample| {
            (start, std::cmp::Reverse(run_id)) > (s.0, std::cmp::Reverse(s.1.as_str()))
        };
        if cell.sample.as_ref().is_none_or(newer_than) {
            cell.sample = Some((start, run_id.to_owned(), error.to_owned()));
        }
    }

    /// Takes the groups of `other`.
    pub fn absorb(&mut self, other: ErrorGroups) {
        for (key, cells) in other.0 {
            let mine = self.0.entry(key).or_default();
            for (workflow, cell) in cells {
                mine.entry(workflow).or_default().absorb(cell);
            }
        }
    }

    /// `error_groups`: the most runs first (then by fingerprint and status).
    pub fn frame(&self, names: &Names) -> PolarsResult<DataFrame> {
        let label = |id: &String| names.get(id).cloned().unwrap_or_else(|| id.clone());
        let mut groups: Vec<Group> = self
            .0
            .iter()
            .map(|((status, fingerprint), cells)| {
                let mut by_count: Vec<(&String, &Cell, String)> =
                    cells.iter().map(|(id, c)| (id, c, label(id))).collect();
                by_count.sort_by(|a, b| {
                    b.1.count
                        .cmp(&a.1.count)
                        .then_with(|| a.2.cmp(&b.2))
                        .then_with(|| a.0.cmp(b.0))
                });
                let sample = by_count.first().and_then(|(_, c, _)| c.sample.clone());
                Group {
                    status: status.clone(),
                    fingerprint: fingerprint.clone(),
                    count: cells.values().map(|c| c.count).sum(),
                    workflows: cells.len() as i64,
                    top: by_count
                        .iter()
                        .take(3)
                        .map(|(_, _, l)| l.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    first: cells.values().filter_map(|c| c.first).min(),
                    last: cells.values().filter_map(|c| c.last).max(),
                    sample,
                }
            })
            .collect();
        groups.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.fingerprint.cmp(&b.fingerprint))
                .then_with(|| match (&a.status, &b.status) {
                    (Some(x), Some(y)) => x.cmp(y),
                    (x, y) => y.is_some().cmp(&x.is_some()),
                })
        });
        FrameBuilder::default()
            .text(
                "status",
                groups.iter().map(|g| g.status.as_deref()).collect(),
            )
            .text(
                "fingerprint",
                groups.iter().map(|g| Some(&g.fingerprint)).collect(),
            )
            .int("count", groups.iter().map(|g| g.count).collect())
            .int("workflows", groups.iter().map(|g| g.workflows).collect())
            .text(
                "top_workflows",
                groups.iter().map(|g| Some(&g.top)).collect(),
            )
            .utc("first_seen", groups.iter().map(|g| g.first).collect())
            .utc("last_seen", groups.iter().map(|g| g.last).collect())
            .text(
                "sample_error",
                groups
                    .iter()
                    .map(|g| g.sample.as_ref().map(|s| &s.2))
                    .collect(),
            )
            .text(
                "sample_run_id",
                groups
                    .iter()
                    .map(|g| g.sample.as_ref().map(|s| &s.1))
                    .collect(),
            )
            .finish()
    }
}

struct Group {
    status: Option<String>,
    fingerprint: String,
    count: i64,
    workflows: i64,
    top: String,
    first: Option<i64>,
    last: Option<i64>,
    sample: Option<Sample>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_group_messages_that_differ_only_in_values() {
        let cases = [
            (
                "Node 'model' failed: upstream timeout after 30s (request id 8f3a9c2e)",
                "Node '…' failed: upstream timeout after <n>s (request id <hex>)",
            ),
            (
                "Node 'retriever' failed: upstream timeout after 45s (request id 0badf00d1)",
                "Node '…' failed: upstream timeout after <n>s (request id <hex>)",
            ),
            (
                "Rate limit exceeded for model \"arcee-70b\", retry after 12 seconds",
                "Rate limit exceeded for model \"…\", retry after <n> seconds",
            ),
            (
                "Run a40d4d53-7e5e-432b-8f23-8afdc53eefa3 cancelled",
                "Run <id> cancelled",
            ),
            ("price 3.50\n\tUSD", "price <n> USD"),
        ];
        for (message, want) in cases {
            assert_eq!(fingerprint(message), want, "{message}");
        }
    }

    #[test]
    fn groups_count_workflows_and_sample_the_newest_run_of_the_most_affected() {
        let mut a = ErrorGroups::default();
        a.add(Some("failed"), "timeout after 3s", "w1", "r1", Some(10));
        a.add(Some("failed"), "timeout after 5s", "w1", "r2", Some(30));
        let mut b = ErrorGroups::default();
        b.add(Some("failed"), "timeout after 9s", "w2", "r3", Some(50));
        b.add(
            Some("cancelled"),
            "cancelled by user 1",
            "w2",
            "r4",
            Some(40),
        );
        a.absorb(b);
        let names = Names::from([("w1".to_owned(), "One".to_owned())]);
        let df = a.frame(&names).unwrap();
        let text = |c: &str, i: usize| {
            df.column(c)
                .unwrap()
                .str()
                .unwrap()
                .get(i)
                .map(str::to_owned)
        };
        let int = |c: &str, i: usize| df.column(c).unwrap().i64().unwrap().get(i);
        assert_eq!(df.height(), 2);
        assert_eq!(
            text("fingerprint", 0).as_deref(),
            Some("timeout after <n>s")
        );
        assert_eq!((int("count", 0), int("workflows", 0)), (Some(3), Some(2)));
        assert_eq!(text("top_workflows", 0).as_deref(), Some("One, w2"));
        assert_eq!(
            text("sample_run_id", 0).as_deref(),
            Some("r2"),
            "the newest of w1's"
        );
        assert_eq!(text("status", 1).as_deref(), Some("cancelled"));

        // Two workflows of one name and count: the sample is the smaller id's, every time.
        for _ in 0..20 {
            let mut g = ErrorGroups::default();
            for (w, r) in [("wb", "r1"), ("wa", "r2"), ("wc", "r3")] {
                g.add(Some("failed"), "boom", w, r, Some(5));
            }
            let names = Names::from([
                ("wa".into(), "Same".into()),
                ("wb".into(), "Same".into()),
                ("wc".into(), "Same".into()),
            ]);
            let df = g.frame(&names).unwrap();
            assert_eq!(
                df.column("sample_run_id").unwrap().str().unwrap().get(0),
                Some("r2")
            );
        }
    }
}
