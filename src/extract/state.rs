//! Per-workflow export state under `OUT/_state/` (a shard's under `OUT/_state/shard-KK-of-NN/`): how far the dataset is complete (the cursor),
//! which runs were stored unfinished, and when the workflow last succeeded.
//!
//! A state file is written only after the data it describes is committed, atomically (through
//! the storage seam: temp file, fsync, rename, fsync of the folder). A workflow that failed keeps
//! its previous state, so the next export fetches its window again.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::{Deserialize, Serialize};

use crate::dataset::{DatasetError, Storage};
use crate::flatten::{format_timestamp, parse_timestamp};
use crate::privacy::PolicyRecord;

/// Folder of the state files.
pub const STATE_DIR: &str = "_state";
/// Version of the state format; files of another version are ignored (a full export follows).
pub const STATE_VERSION: u32 = 1;
/// Characters kept as they are in state file names; everything else is percent-encoded.
const FILE_NAME_SET: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_');
/// Longest file name stem before a hash is used instead.
const MAX_STEM: usize = 180;

/// A run stored while not finished, to fetch again until it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnfinishedRun {
    /// The run id.
    pub run_id: String,
    /// Its start time as stored (RFC 3339), if it had one: it names the partition it is in.
    pub start_time: Option<String>,
    /// When an export first stored it unfinished (RFC 3339).
    pub first_seen: String,
}

impl UnfinishedRun {
    /// Start time in microseconds.
    pub fn start_us(&self) -> Option<i64> {
        self.start_time.as_deref().and_then(parse_timestamp)
    }

    /// Since when it is being reconciled: when an export first stored it unfinished. (Not its
    /// start: a long-running run discovered late still gets the whole horizon.)
    pub fn since_us(&self) -> i64 {
        parse_timestamp(&self.first_seen).unwrap_or(0)
    }
}

/// The state of one workflow's export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowState {
    /// Format version.
    pub version: u32,
    /// The workflow.
    pub workflow_id: String,
    /// Start time of the newest run stored (RFC 3339): history up to here is complete.
    pub cursor: Option<String>,
    /// Runs stored unfinished, to reconcile.
    pub unfinished: Vec<UnfinishedRun>,
    /// When the last successful export of this workflow finished (RFC 3339).
    pub last_success: String,
    /// Which export that was.
    pub last_export_id: String,
    /// The field policy of the rows that export wrote (absent: none).
    #[serde(default, skip_serializing_if = "PolicyRecord::is_none")]
    pub privacy: PolicyRecord,
    /// Other policies earlier exports wrote rows under that are still stored (cleared by a
    /// `--full` export, which rewrites every run the API still serves).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub older_privacy: Vec<PolicyRecord>,
}

impl WorkflowState {
    /// The cursor in microseconds.
    pub fn cursor_us(&self) -> Option<i64> {
        self.cursor.as_deref().and_then(parse_timestamp)
    }

    /// A new state.
    pub fn new(
        workflow_id: &str,
        cursor_us: Option<i64>,
        unfinished: Vec<UnfinishedRun>,
        export_id: &str,
    ) -> Self {
        Self {
            version: STATE_VERSION,
            workflow_id: workflow_id.to_owned(),
            cursor: cursor_us.map(format_timestamp),
            unfinished,
            last_success: format_timestamp(chrono::Utc::now().timestamp_micros()),
            last_export_id: export_id.to_owned(),
            privacy: PolicyRecord::default(),
            older_privacy: Vec::new(),
        }
    }

    /// Whether rows of this workflow follow another policy than `current`.
    pub fn holds_other_privacy(&self, current: &PolicyRecord) -> bool {
        self.privacy != *current || !self.older_privacy.is_empty()
    }
}

/// Path of a workflow's state file in folder `dir` ([`STATE_DIR`], or a shard's folder in it).
pub fn state_path(dir: &str, workflow_id: &str) -> String {
    let stem: String = utf8_percent_encode(workflow_id, FILE_NAME_SET).collect();
    let stem = if stem.len() > MAX_STEM {
        // Stable across runs and platforms (FNV-1a), unlike std's hasher.
        let hash = workflow_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        format!(
            "{}-{hash:016x}",
            &stem[..MAX_STEM.min(stem.len())].trim_end_matches('%')
        )
    } else {
        stem
    };
    format!("{dir}/{stem}.json")
}

/// Loads a workflow's state; `None` when there is none, it is of another version, or it names
/// another workflow. A file that cannot be parsed is an error (it is never silently ignored).
/// For many workflows, list the folder once with [`StateFolder::list`].
pub fn load(
    storage: &dyn Storage,
    dir: &str,
    workflow_id: &str,
) -> Result<Option<WorkflowState>, StateError> {
    StateFolder::list(storage, dir)?.load(storage, workflow_id)
}

/// The state files present in a folder, listed once: on object storage a listing is a request
/// (of up to 1,000 names), so listing per workflow would cost one request per workflow each.
pub struct StateFolder {
    dir: String,
    names: std::collections::HashSet<String>,
}

impl StateFolder {
    /// Lists the state folder `dir`.
    pub fn list(storage: &dyn Storage, dir: &str) -> Result<Self, StateError> {
        Ok(Self {
            dir: dir.to_owned(),
            names: storage.list(dir)?.into_iter().collect(),
        })
    }

    /// The workflows of the state files that belong to none of `known` (workflows earlier
    /// exports stored that are not among them).
    pub fn others<'a>(
        &self,
        storage: &dyn Storage,
        known: impl Iterator<Item = &'a str>,
    ) -> Result<Vec<String>, StateError> {
        let mut names = self.names.clone();
        for id in known {
            let path = state_path(&self.dir, id);
            names.remove(path.rsplit('/').next().unwrap_or_default());
        }
        let mut ids = Vec::new();
        for name in names.iter().filter(|n| n.ends_with(".json")) {
            let path = format!("{}/{name}", self.dir);
            ids.push(read_state(storage, &path)?.workflow_id);
        }
        ids.sort();
        Ok(ids)
    }

    /// Loads a workflow's state, as [`load`] does.
    pub fn load(
        &self,
        storage: &dyn Storage,
        workflow_id: &str,
    ) -> Result<Option<WorkflowState>, StateError> {
        let path = state_path(&self.dir, workflow_id);
        let name = path.rsplit('/').next().unwrap_or_default();
        if !self.names.contains(name) {
            return Ok(None);
        }
        let state = read_state(storage, &path)?;
        Ok((state.version == STATE_VERSION && state.workflow_id == workflow_id).then_some(state))
    }
}

/// Reads and parses one state file.
fn read_state(storage: &dyn Storage, path: &str) -> Result<WorkflowState, StateError> {
    let bytes = storage.read(path)?;
    serde_json::from_slice(&bytes).map_err(|source| StateError::Corrupt {
        path: storage.display(path),
        source,
    })
}

/// Saves a workflow's state in folder `dir` atomically and durably.
pub fn save(storage: &dyn Storage, dir: &str, state: &WorkflowState) -> Result<(), StateError> {
    let text = serde_json::to_string_pretty(state).expect("state serialises");
    crate::dataset::write_jsonl(storage, &state_path(dir, &state.workflow_id), [text])?;
    Ok(())
}

/// Errors reading or writing state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Storage failed.
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    /// A state file is not valid.
    #[error("state file `{path}` is not valid; remove it to export that workflow in full")]
    Corrupt {
        path: String,
        #[source]
        source: serde_json::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::LocalStorage;

    #[test]
    fn state_round_trips_and_names_are_safe_file_names() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::open(dir.path()).unwrap();
        let id = "a/b?c#d%e f..";
        assert_eq!(
            state_path(STATE_DIR, id),
            "_state/a%2Fb%3Fc%23d%25e%20f%2E%2E.json"
        );
        let long = "x".repeat(500);
        assert!(state_path(STATE_DIR, &long).len() < 220);
        assert_ne!(
            state_path(STATE_DIR, &long),
            state_path(STATE_DIR, &"x".repeat(501))
        );
        assert_eq!(load(&storage, STATE_DIR, id).unwrap(), None);
        let state = WorkflowState::new(
            id,
            Some(1_741_750_770_476_391),
            vec![UnfinishedRun {
                run_id: "r1".into(),
                start_time: None,
                first_seen: "2025-03-12T03:39:30.476391Z".into(),
            }],
            "e1",
        );
        save(&storage, STATE_DIR, &state).unwrap();
        let loaded = load(&storage, STATE_DIR, id).unwrap().unwrap();
        let shard_dir = "_state/shard-1-of-2";
        assert_eq!(load(&storage, shard_dir, id).unwrap(), None);
        save(&storage, shard_dir, &state).unwrap();
        assert_eq!(
            load(&storage, shard_dir, id).unwrap().as_ref(),
            Some(&state)
        );
        assert!(
            dir.path()
                .join(shard_dir)
                .join("a%2Fb%3Fc%23d%25e%20f%2E%2E.json")
                .is_file()
        );
        assert_eq!(loaded, state);
        assert_eq!(
            loaded.cursor.as_deref(),
            Some("2025-03-12T03:39:30.476391Z")
        );
        assert_eq!(loaded.cursor_us(), Some(1_741_750_770_476_391));
    }

    #[test]
    fn a_corrupt_state_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::open(dir.path()).unwrap();
        std::fs::create_dir_all(dir.path().join(STATE_DIR)).unwrap();
        std::fs::write(dir.path().join(state_path(STATE_DIR, "wf")), b"{not json").unwrap();
        let err = load(&storage, STATE_DIR, "wf").unwrap_err().to_string();
        assert!(
            err.contains("state file") && err.contains("wf.json"),
            "{err}"
        );
    }
}
