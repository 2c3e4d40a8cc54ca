//! Render: a verification as a table for people, one line per differing workflow, and JSON
//! for schedulers. Pure text; printing is the CLI's.

use std::fmt::Write;

use serde_json::{Value, json};

use super::Verification;
use super::compare::{Changed, RunFacts, WorkflowCheck};

/// Run ids quoted per kind of difference in a one-line description.
const IDS_IN_LINE: usize = 3;
/// Run ids listed per kind of difference and workflow in the JSON.
const IDS_IN_JSON: usize = 100;

/// Per-workflow counts and a total, for people.
pub fn table(v: &Verification, dataset: &str) -> String {
    let total = v.workflows.len();
    let agree = v.workflows.iter().filter(|w| w.agrees()).count();
    let failed = v.workflows.iter().filter(|w| w.error.is_some()).count();
    let mut text = String::new();
    let _ = writeln!(
        text,
        "verify `{dataset}`: {total} workflows, {agree} agree with the API, {} differ, {failed} could not be read",
        total - agree - failed
    );
    let width = v
        .workflows
        .iter()
        .map(|w| w.workflow_id.chars().count())
        .max()
        .unwrap_or(0)
        .max("workflow".len());
    let _ = writeln!(
        text,
        "  {:<width$}  {:>9} {:>9} {:>8} {:>8} {:>8} {:>10}  result",
        "workflow", "upstream", "stored", "missing", "gone", "changed", "duplicates"
    );
    let mut sum = [0usize; 6];
    for w in &v.workflows {
        let row = counts(w);
        for (s, n) in sum.iter_mut().zip(row) {
            *s += n;
        }
        let _ = writeln!(
            text,
            "  {:<width$}  {:>9} {:>9} {:>8} {:>8} {:>8} {:>10}  {}",
            w.workflow_id,
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            row[5],
            result(w)
        );
    }
    let _ = writeln!(
        text,
        "  {:<width$}  {:>9} {:>9} {:>8} {:>8} {:>8} {:>10}",
        "total", sum[0], sum[1], sum[2], sum[3], sum[4], sum[5]
    );
    let marked: usize = v.workflows.iter().map(|w| w.marked_deleted).sum();
    if marked > 0 {
        let _ = writeln!(
            text,
            "  {marked} stored runs are marked deleted upstream and are indeed gone (they agree)"
        );
    }
    let _ = writeln!(
        text,
        "  {} requests in {:.2} s",
        v.requests,
        v.elapsed.as_secs_f64()
    );
    text
}

/// upstream, stored, missing, gone upstream, changed, duplicates.
fn counts(w: &WorkflowCheck) -> [usize; 6] {
    [
        w.upstream,
        w.stored,
        w.missing.len(),
        w.gone_upstream.len(),
        w.changed.len(),
        w.duplicates.len(),
    ]
}

fn result(w: &WorkflowCheck) -> &'static str {
    match (&w.error, w.agrees(), w.unlisted) {
        (Some(_), _, _) => "could not be read",
        (None, true, _) => "agrees",
        (None, false, true) => "differs: no longer listed by the API",
        (None, false, false) => "differs",
    }
}

/// How a workflow differs, on one line: "3 runs missing (`a`, `b`, `c`), 1 changed (…)".
pub fn differences(w: &WorkflowCheck) -> String {
    let mut parts = Vec::new();
    let mut kind = |ids: Vec<String>, what: &str| {
        if ids.is_empty() {
            return;
        }
        let shown: Vec<String> = ids.iter().take(IDS_IN_LINE).cloned().collect();
        let more = if ids.len() > IDS_IN_LINE { ", …" } else { "" };
        let noun = if ids.len() == 1 { "run" } else { "runs" };
        parts.push(format!(
            "{} {noun} {what} ({}{more})",
            ids.len(),
            shown.join(", ")
        ));
    };
    let quoted = |ids: &[String]| ids.iter().map(|id| format!("`{id}`")).collect::<Vec<_>>();
    kind(quoted(&w.missing), "missing from the dataset");
    kind(quoted(&w.gone_upstream), "stored but gone upstream");
    kind(
        w.changed.iter().map(describe_change).collect(),
        "stored with other values",
    );
    kind(quoted(&w.duplicates), "stored more than once");
    if w.unlisted {
        parts.push("the API no longer lists this workflow (`export --full --all-workflows` marks its runs once the API no longer knows it)".to_owned());
    }
    parts.join(", ")
}

fn describe_change(c: &Changed) -> String {
    let show = |f: &RunFacts| {
        format!(
            "status {}, end {}",
            f.status
                .as_deref()
                .map_or("NULL".to_owned(), |s| format!("`{s}`")),
            f.end_time
                .map_or("NULL".to_owned(), crate::flatten::format_timestamp)
        )
    };
    match &c.stored {
        None => format!("`{}`: marked deleted upstream, but served again", c.run_id),
        Some(stored) => format!("`{}`: {} → {}", c.run_id, show(stored), show(&c.upstream)),
    }
}

/// The verification as JSON for schedulers.
pub fn json(v: &Verification, dataset: &str) -> Value {
    let ids = |ids: &[String]| -> Vec<String> { ids.iter().take(IDS_IN_JSON).cloned().collect() };
    let facts = |f: &RunFacts| {
        json!({
            "status": f.status,
            "end_time": f.end_time.map(crate::flatten::format_timestamp),
        })
    };
    let workflows: Vec<Value> = v
        .workflows
        .iter()
        .map(|w| {
            let changed: Vec<Value> = w
                .changed
                .iter()
                .take(IDS_IN_JSON)
                .map(|c| {
                    json!({
                        "run_id": c.run_id,
                        "stored": c.stored.as_ref().map(facts),
                        "upstream": facts(&c.upstream),
                    })
                })
                .collect();
            json!({
                "workflow_id": w.workflow_id,
                "result": if w.error.is_some() { "failed" } else if w.agrees() { "agrees" } else { "differs" },
                "error": w.error,
                "listed": !w.unlisted,
                "upstream": w.upstream,
                "stored": w.stored,
                "missing": w.missing.len(),
                "gone_upstream": w.gone_upstream.len(),
                "changed": w.changed.len(),
                "duplicates": w.duplicates.len(),
                "marked_deleted_upstream": w.marked_deleted,
                "examples": {
                    "missing": ids(&w.missing),
                    "gone_upstream": ids(&w.gone_upstream),
                    "changed": changed,
                    "duplicates": ids(&w.duplicates),
                },
            })
        })
        .collect();
    let sum = |f: fn(&WorkflowCheck) -> usize| -> usize { v.workflows.iter().map(f).sum() };
    json!({
        "dataset": dataset,
        "agrees": v.agrees(),
        "workflows": workflows,
        "total": {
            "workflows": v.workflows.len(),
            "agree": v.workflows.iter().filter(|w| w.agrees()).count(),
            "failed": v.workflows.iter().filter(|w| w.error.is_some()).count(),
            "upstream": sum(|w| w.upstream),
            "stored": sum(|w| w.stored),
            "missing": sum(|w| w.missing.len()),
            "gone_upstream": sum(|w| w.gone_upstream.len()),
            "changed": sum(|w| w.changed.len()),
            "duplicates": sum(|w| w.duplicates.len()),
            "marked_deleted_upstream": sum(|w| w.marked_deleted),
        },
        "requests": v.requests,
        "elapsed_s": v.elapsed.as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_difference_line_names_counts_and_the_first_runs_of_each_kind() {
        let w = WorkflowCheck {
            workflow_id: "wf".into(),
            missing: vec!["a".into(), "b".into(), "c".into(), "d".into()],
            changed: vec![Changed {
                run_id: "r".into(),
                stored: Some(RunFacts {
                    status: Some("running".into()),
                    end_time: None,
                }),
                upstream: RunFacts {
                    status: Some("completed".into()),
                    end_time: Some(1_741_750_776_133_074),
                },
            }],
            ..WorkflowCheck::default()
        };
        assert_eq!(
            differences(&w),
            "4 runs missing from the dataset (`a`, `b`, `c`, …), 1 run stored with other values (`r`: status `running`, end NULL → status `completed`, end 2025-03-12T03:39:36.133074Z)"
        );
        let v = Verification {
            workflows: vec![
                w,
                WorkflowCheck {
                    workflow_id: "ok".into(),
                    ..WorkflowCheck::default()
                },
            ],
            failures: Vec::new(),
            requests: 7,
            elapsed: Duration::from_millis(1500),
        };
        let text = table(&v, "data/export");
        assert!(text.starts_with("verify `data/export`: 2 workflows, 1 agree with the API, 1 differ, 0 could not be read\n"), "{text}");
        assert!(text.contains("  total     "), "{text}");
        let doc = json(&v, "data/export");
        assert_eq!(doc["agrees"], false);
        assert_eq!(doc["total"]["missing"], 4);
        assert_eq!(doc["workflows"][0]["result"], "differs");
        assert_eq!(doc["workflows"][1]["result"], "agrees");
        assert_eq!(
            doc["workflows"][0]["examples"]["changed"][0]["upstream"]["status"],
            "completed"
        );
    }
}
