//! The `GET /workflows` list into the `workflows` table.

use arrow::array::RecordBatch;
use serde_json::Value;

use super::{PageError, append_json, json_type, parse_timestamp};
use crate::privacy::Policy;
use crate::table::WorkflowsRows;

/// The workflows table and the ids it lists, in API order.
#[derive(Debug)]
pub struct WorkflowList {
    /// Rows of the `workflows` table.
    pub batch: RecordBatch,
    /// Workflow ids, in the order the API listed them.
    pub ids: Vec<String>,
    /// Entries without a usable id (counted, not exported).
    pub skipped: usize,
    /// Workflow id → name, for the entries that have a text name (for people, in progress and
    /// messages).
    pub names: std::collections::HashMap<String, String>,
}

/// Flattens a `GET /workflows` body. Ids come from `workflow_id` (or `id` when that is absent);
/// names and descriptions are masked by `policy` (here and in [`WorkflowList::names`]).
pub fn flatten_workflows(
    body: &[u8],
    extracted_at_us: i64,
    policy: &Policy,
) -> Result<WorkflowList, PageError> {
    let list: Value = serde_json::from_slice(body).map_err(|e| PageError::Malformed {
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    let Value::Array(mut entries) = list else {
        return Err(PageError::NotAnArray {
            found: json_type(&list),
        });
    };
    let mut ids = Vec::new();
    let mut skipped = 0;
    let mut names = std::collections::HashMap::new();
    let mut rows = WorkflowsRows::default();
    for entry in &mut entries {
        for field in ["name", "description"] {
            if let Some(v) = entry.get_mut(field)
                && policy.masker().mask_value(v)
            {
                policy.count(None);
            }
        }
        let entry = &*entry;
        let id = match entry.get("workflow_id").or_else(|| entry.get("id")) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => {
                skipped += 1;
                continue;
            }
        };
        rows.workflow_id.append_value(&id);
        if let Some(Value::String(name)) = entry.get("name")
            && !name.trim().is_empty()
        {
            names.insert(id.clone(), name.clone());
        }
        ids.push(id);
        append_json(&mut rows.name, entry.get("name"));
        append_json(&mut rows.description, entry.get("description"));
        append_json(&mut rows.status, entry.get("status"));
        append_json(&mut rows.version, entry.get("version"));
        let ts = |field: &str| {
            entry
                .get(field)
                .and_then(Value::as_str)
                .and_then(parse_timestamp)
        };
        rows.created_at.append_option(ts("created_at"));
        rows.updated_at.append_option(ts("updated_at"));
        rows.extracted_at.append_value(extracted_at_us);
    }
    let batch = rows.finish();
    Ok(WorkflowList {
        batch,
        ids,
        skipped,
        names,
    })
}
