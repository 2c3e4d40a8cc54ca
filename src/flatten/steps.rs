//! `GET /workflows/{id}/runs/{run_id}/steps` into rows of the `steps` table.

use arrow::array::RecordBatch;
use serde_json::Value;

use super::{PageError, append_json, integer_seconds, json_type, parse_timestamp};
use crate::privacy::{Hidden, Policy};
use crate::table::StepsRows;

/// Flattens one run's steps under `policy` ([`Policy::protect_step`]; `run_hidden`: what it
/// replaced in the run). Every step is kept; a
/// field of an unexpected type is stored as NULL (timestamps, numbers) or as compact JSON text
/// (everything else).
pub fn flatten_steps(
    body: &[u8],
    workflow_id: &str,
    run_id: &str,
    policy: &Policy,
    run_hidden: &Hidden,
) -> Result<RecordBatch, PageError> {
    let steps: Value = serde_json::from_slice(body).map_err(|e| PageError::Malformed {
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    let Value::Array(mut steps) = steps else {
        return Err(PageError::NotAnArray {
            found: json_type(&steps),
        });
    };
    let mut rows = StepsRows::default();
    for step in &mut steps {
        policy.protect_step(step, run_hidden);
        let step = &*step;
        let field = |name: &str| step.get(name);
        let ts = |name: &str| {
            field(name)
                .and_then(Value::as_str)
                .and_then(parse_timestamp)
        };
        rows.workflow_id.append_value(workflow_id);
        rows.run_id.append_value(run_id);
        append_json(&mut rows.step_id, field("id"));
        append_json(&mut rows.node_id, field("node_id"));
        append_json(&mut rows.status, field("status"));
        let (s, e) = (ts("start_time"), ts("end_time"));
        rows.start_time.append_option(s);
        rows.end_time.append_option(e);
        rows.elapsed_time
            .append_option(field("elapsed_time").and_then(integer_seconds));
        rows.duration_ms.append_option(
            s.zip(e)
                .and_then(|(s, e)| e.checked_sub(s))
                .map(|d| d / 1000),
        );
        append_json(&mut rows.error, field("error"));
        for (builder, name) in [(&mut rows.outputs, "outputs"), (&mut rows.inputs, "inputs")] {
            match field(name) {
                None | Some(Value::Null) => builder.append_null(),
                Some(v) => builder.append_value(v.to_string()),
            }
        }
        rows.tokens
            .append_option(field("tokens").and_then(integer_seconds));
    }
    Ok(rows.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::AsArray;
    use arrow::datatypes::Int64Type;

    #[test]
    fn steps_become_typed_rows() {
        let body = br#"[
            {"id": "s1", "node_id": "prompt", "status": "completed", "start_time": "2025-03-12T03:39:30Z",
             "end_time": "2025-03-12T03:39:31.5Z", "elapsed_time": 1, "error": null,
             "outputs": {"output": "hi"}, "inputs": {"prompt": "x"}, "tokens": 0},
            {"id": "s2", "node_id": "model", "status": "failed", "start_time": "2025-03-12T03:39:31.5Z",
             "end_time": null, "elapsed_time": null, "error": "boom", "outputs": {}, "inputs": null, "tokens": "7"}
        ]"#;
        let batch = flatten_steps(body, "wf", "r1", Policy::none(), &Hidden::default()).unwrap();
        assert_eq!(batch.num_rows(), 2);
        let text = |c: &str| -> Vec<Option<String>> {
            batch
                .column_by_name(c)
                .unwrap()
                .as_string::<i32>()
                .iter()
                .map(|v| v.map(str::to_owned))
                .collect()
        };
        let ints = |c: &str| -> Vec<Option<i64>> {
            batch
                .column_by_name(c)
                .unwrap()
                .as_primitive::<Int64Type>()
                .iter()
                .collect()
        };
        assert_eq!(
            text("node_id"),
            [Some("prompt".into()), Some("model".into())]
        );
        assert_eq!(
            text("outputs"),
            [Some(r#"{"output":"hi"}"#.into()), Some("{}".into())]
        );
        assert_eq!(text("inputs"), [Some(r#"{"prompt":"x"}"#.into()), None]);
        assert_eq!(text("error"), [None, Some("boom".into())]);
        assert_eq!(ints("duration_ms"), [Some(1500), None]);
        assert_eq!(ints("tokens"), [Some(0), Some(7)]);
        assert!(flatten_steps(b"{}", "wf", "r1", Policy::none(), &Hidden::default()).is_err());
    }
}
