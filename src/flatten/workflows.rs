//! The `GET /workflows` list into the `workflows` table.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringBuilder, TimestampMicrosecondBuilder};
use serde_json::Value;

use super::{PageError, append_json, json_type, parse_timestamp};
use crate::dataset::schema;

/// The workflows table and the ids it lists, in API order.
#[derive(Debug)]
pub struct WorkflowList {
    /// Rows of the `workflows` table.
    pub batch: RecordBatch,
    /// Workflow ids, in the order the API listed them.
    pub ids: Vec<String>,
    /// Entries without a usable id (counted, not exported).
    pub skipped: usize,
}

/// Flattens a `GET /workflows` body. Ids come from `workflow_id` (or `id` when that is absent).
pub fn flatten_workflows(body: &[u8], extracted_at_us: i64) -> Result<WorkflowList, PageError> {
    let list: Value = serde_json::from_slice(body).map_err(|e| PageError::Malformed {
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    let Value::Array(entries) = list else {
        return Err(PageError::NotAnArray {
            found: json_type(&list),
        });
    };
    let mut ids = Vec::new();
    let mut skipped = 0;
    let (mut id_col, mut name, mut description, mut status, mut version) = (
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    let mut created = TimestampMicrosecondBuilder::new();
    let mut updated = TimestampMicrosecondBuilder::new();
    let mut extracted = TimestampMicrosecondBuilder::new();
    for entry in &entries {
        let id = match entry.get("workflow_id").or_else(|| entry.get("id")) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => {
                skipped += 1;
                continue;
            }
        };
        id_col.append_value(&id);
        ids.push(id);
        append_json(&mut name, entry.get("name"));
        append_json(&mut description, entry.get("description"));
        append_json(&mut status, entry.get("status"));
        append_json(&mut version, entry.get("version"));
        let ts = |field: &str| {
            entry
                .get(field)
                .and_then(Value::as_str)
                .and_then(parse_timestamp)
        };
        created.append_option(ts("created_at"));
        updated.append_option(ts("updated_at"));
        extracted.append_value(extracted_at_us);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(id_col.finish()),
        Arc::new(name.finish()),
        Arc::new(description.finish()),
        Arc::new(status.finish()),
        Arc::new(version.finish()),
        Arc::new(created.finish().with_timezone(schema::UTC)),
        Arc::new(updated.finish().with_timezone(schema::UTC)),
        Arc::new(extracted.finish().with_timezone(schema::UTC)),
    ];
    let batch = RecordBatch::try_new(schema::workflows(), columns)
        .expect("workflow columns match their schema");
    Ok(WorkflowList {
        batch,
        ids,
        skipped,
    })
}
