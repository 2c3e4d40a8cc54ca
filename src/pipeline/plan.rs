//! `export --dry-run`: what an export would do — the workflows it would read (listed, when
//! `--all-workflows` asks), the shard's share, and where each would resume from its saved
//! state — without requesting a run or writing a byte.

use std::collections::HashMap;
use std::path::Path;

use crate::api::ApiClient;
use crate::config::ExportConfig;
use crate::dataset::{self, Layout, Location};
use crate::extract::state::{self, WorkflowState};

use super::{ExportError, ShardSelection, keep_shard, select_workflows};

/// One workflow of a plan.
#[derive(Debug)]
pub struct PlannedWorkflow {
    /// The workflow.
    pub workflow_id: String,
    /// Its name, when the API listed it.
    pub name: Option<String>,
    /// Its saved state (`None`: the first export of it, or `--full`).
    pub state: Option<WorkflowState>,
}

/// What an export with these settings would do.
#[derive(Debug)]
pub struct Plan {
    /// The workflows, in the order they would be read.
    pub workflows: Vec<PlannedWorkflow>,
    /// With `--shard`: its share of the workflows.
    pub shard: Option<ShardSelection>,
}

/// Builds the plan: lists workflows if asked, reads saved states; requests no runs and writes
/// nothing (a local `--out` that does not exist stays so).
pub async fn plan(config: &ExportConfig) -> Result<Plan, ExportError> {
    let client = ApiClient::new(config.client.clone()).map_err(ExportError::Client)?;
    let layout = Layout::from(config.shard);
    let (mut ids, list) = select_workflows(&client, config).await?;
    let shard = keep_shard(&mut ids, config.shard);
    let names: HashMap<String, String> = list.map(|l| l.names).unwrap_or_default();
    let states = if !exists(&config.out) {
        None
    } else {
        let storage = dataset::open(&config.out)?;
        // Refused as the export would refuse it.
        dataset::check_is_dataset(storage.as_ref())?;
        layout.check_root(storage.as_ref())?;
        let dir = layout.state_dir(state::STATE_DIR);
        let folder = state::StateFolder::list(storage.as_ref(), &dir)?;
        (!config.full).then_some((storage, folder))
    };
    let mut workflows = Vec::with_capacity(ids.len());
    for id in ids {
        let state = match &states {
            Some((storage, folder)) => folder.load(storage.as_ref(), &id)?,
            None => None,
        };
        workflows.push(PlannedWorkflow {
            name: names.get(&id).cloned(),
            workflow_id: id,
            state,
        });
    }
    Ok(Plan { workflows, shard })
}

/// Whether the dataset may have state to read: an object store always may; a local folder only
/// when it exists (opening it would create it).
fn exists(out: &Path) -> bool {
    match Location::parse(out) {
        Ok(Location::Local(path)) => path.exists(),
        _ => true,
    }
}
