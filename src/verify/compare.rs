//! Compare: one workflow's runs as the API serves them now against the runs its dataset stores.
//! Pure: no I/O, tested with tables.

use std::collections::{BTreeMap, HashMap};

/// What `verify` compares of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFacts {
    /// `status` as stored (JSON text for values that are not strings).
    pub status: Option<String>,
    /// `end_time`, µs since the epoch.
    pub end_time: Option<i64>,
}

/// A run as the dataset stores it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredRun {
    /// Its values (of the first row, when stored more than once).
    pub facts: RunFacts,
    /// Rows holding it in `runs`: more than one is a duplicate.
    pub copies: u32,
    /// Marked by a `--full` export as no longer existing upstream.
    pub marked_deleted: bool,
}

/// A run stored with other values than the API has now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    /// The run.
    pub run_id: String,
    /// What the dataset holds; `None` when it holds the run marked as deleted upstream.
    pub stored: Option<RunFacts>,
    /// What the API serves.
    pub upstream: RunFacts,
}

/// How one workflow's stored runs compare with the API's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkflowCheck {
    /// The workflow.
    pub workflow_id: String,
    /// Runs the API serves.
    pub upstream: usize,
    /// Distinct runs stored (those marked as deleted upstream too).
    pub stored: usize,
    /// Served upstream, not stored (sorted).
    pub missing: Vec<String>,
    /// Stored, not marked, and no longer served upstream (sorted).
    pub gone_upstream: Vec<String>,
    /// Stored and marked as deleted upstream, and indeed not served: as it should be.
    pub marked_deleted: usize,
    /// Stored with another status or end time than served, or marked deleted but served
    /// (sorted by run id).
    pub changed: Vec<Changed>,
    /// Stored more than once (sorted).
    pub duplicates: Vec<String>,
    /// The API's runs could not be read to the end: nothing was compared.
    pub error: Option<String>,
    /// Stored, but the API no longer lists the workflow (`--all-workflows`); it was read all the
    /// same, and when the API no longer knows it either, nothing is served upstream.
    pub unlisted: bool,
}

impl WorkflowCheck {
    /// Whether the dataset holds exactly what the API serves for this workflow.
    pub fn agrees(&self) -> bool {
        self.error.is_none()
            && self.missing.is_empty()
            && self.gone_upstream.is_empty()
            && self.changed.is_empty()
            && self.duplicates.is_empty()
    }

    /// A workflow whose history could not be read.
    pub fn failed(workflow_id: &str, stored: usize, error: String) -> Self {
        Self {
            workflow_id: workflow_id.to_owned(),
            stored,
            error: Some(error),
            ..Self::default()
        }
    }
}

/// Compares one workflow's runs served `upstream` now with those `stored`.
pub fn compare(
    workflow_id: &str,
    upstream: &HashMap<String, RunFacts>,
    stored: &HashMap<String, StoredRun>,
) -> WorkflowCheck {
    let mut check = WorkflowCheck {
        workflow_id: workflow_id.to_owned(),
        upstream: upstream.len(),
        stored: stored.len(),
        ..WorkflowCheck::default()
    };
    let mut changed = BTreeMap::new();
    for (run_id, facts) in upstream {
        match stored.get(run_id) {
            None => check.missing.push(run_id.clone()),
            Some(s) if s.marked_deleted => {
                changed.insert(run_id.clone(), (None, facts.clone()));
            }
            Some(s) if s.facts != *facts => {
                changed.insert(run_id.clone(), (Some(s.facts.clone()), facts.clone()));
            }
            Some(_) => {}
        }
    }
    for (run_id, s) in stored {
        if s.copies > 1 {
            check.duplicates.push(run_id.clone());
        }
        if !upstream.contains_key(run_id) {
            match s.marked_deleted {
                true => check.marked_deleted += 1,
                false => check.gone_upstream.push(run_id.clone()),
            }
        }
    }
    check.missing.sort();
    check.gone_upstream.sort();
    check.duplicates.sort();
    check.changed = changed
        .into_iter()
        .map(|(run_id, (stored, upstream))| Changed {
            run_id,
            stored,
            upstream,
        })
        .collect();
    check
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(status: &str, end: Option<i64>) -> RunFacts {
        RunFacts {
            status: Some(status.to_owned()),
            end_time: end,
        }
    }

    fn stored(status: &str, end: Option<i64>, copies: u32, marked: bool) -> StoredRun {
        StoredRun {
            facts: facts(status, end),
            copies,
            marked_deleted: marked,
        }
    }

    #[test]
    fn each_kind_of_difference_is_found_and_nothing_else() {
        let upstream: HashMap<String, RunFacts> = [
            ("same", facts("completed", Some(5))),
            ("new", facts("completed", Some(6))),
            ("finished", facts("completed", Some(7))),
            ("twice", facts("failed", Some(8))),
            ("back", facts("completed", Some(9))),
            ("re-ended", facts("completed", Some(11))),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let stored_runs: HashMap<String, StoredRun> = [
            ("same", stored("completed", Some(5), 1, false)),
            ("finished", stored("running", None, 1, false)),
            ("twice", stored("failed", Some(8), 2, false)),
            ("back", stored("completed", Some(9), 1, true)),
            ("re-ended", stored("completed", Some(10), 1, false)),
            ("deleted", stored("completed", Some(1), 1, false)),
            ("marked", stored("completed", Some(2), 1, true)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let check = compare("wf", &upstream, &stored_runs);
        assert_eq!((check.upstream, check.stored), (6, 7));
        assert_eq!(check.missing, ["new"]);
        assert_eq!(check.gone_upstream, ["deleted"]);
        assert_eq!(check.marked_deleted, 1);
        assert_eq!(check.duplicates, ["twice"]);
        // (run, stored end time if stored live, served end time)
        type Seen<'a> = (&'a str, Option<Option<i64>>, Option<i64>);
        let changed: Vec<Seen> = check
            .changed
            .iter()
            .map(|c| {
                (
                    c.run_id.as_str(),
                    c.stored.as_ref().map(|s| s.end_time),
                    c.upstream.end_time,
                )
            })
            .collect();
        // A run marked deleted but served again counts as changed, with nothing stored live.
        assert_eq!(
            changed,
            [
                ("back", None, Some(9)),
                ("finished", Some(None), Some(7)),
                ("re-ended", Some(Some(10)), Some(11)),
            ]
        );
        assert!(!check.agrees());
    }

    #[test]
    fn a_dataset_holding_exactly_what_is_served_agrees() {
        let upstream: HashMap<String, RunFacts> =
            [("a".to_owned(), facts("completed", Some(1)))].into();
        let mut stored_runs: HashMap<String, StoredRun> =
            [("a".to_owned(), stored("completed", Some(1), 1, false))].into();
        assert!(compare("wf", &upstream, &stored_runs).agrees());
        // Runs marked deleted upstream and gone agree too.
        stored_runs.insert("old".to_owned(), stored("completed", Some(0), 1, true));
        let check = compare("wf", &upstream, &stored_runs);
        assert!(check.agrees(), "{check:?}");
        assert_eq!(check.marked_deleted, 1);
        // Nothing served and nothing stored agrees; a failed read never does.
        assert!(compare("wf", &HashMap::new(), &HashMap::new()).agrees());
        assert!(!WorkflowCheck::failed("wf", 0, "HTTP 500".into()).agrees());
    }
}
