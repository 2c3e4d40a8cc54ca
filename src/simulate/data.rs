//! Deterministic, realistic run history: every run is generated on demand from
//! `(seed, workflow, index)`, so a history of millions of runs costs no memory.

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Map, Value, json};

use crate::flatten::format_timestamp;

const NODE_NAMES: [&str; 12] = [
    "prompt",
    "retriever",
    "model",
    "summarize",
    "classify",
    "router",
    "formatter",
    "json_extract",
    "web_search",
    "guardrail",
    "rerank",
    "translate",
];
const WORKFLOW_NAMES: [&str; 10] = [
    "Support triage",
    "Weather jokes",
    "Invoice extraction",
    "Release notes writer",
    "Lead scoring",
    "Contract summary",
    "Ticket router",
    "FAQ answerer",
    "Code review helper",
    "Sentiment monitor",
];
const WORDS: [&str; 40] = [
    "the", "customer", "asked", "about", "billing", "and", "refund", "policy", "model", "replied",
    "with", "a", "clear", "summary", "of", "next", "steps", "for", "this", "ticket", "weather",
    "cloud", "rainbow", "invoice", "total", "due", "date", "contract", "clause", "risk", "low",
    "high", "priority", "escalate", "team", "résumé", "naïve", "東京", "data", "report",
];
/// Why a failed run failed; `{node}` is the node that failed it.
const ERRORS: [&str; 5] = [
    "Node '{node}' failed: upstream timeout after {num}s (request id {hex})",
    "Node '{node}' failed: rate limit exceeded for model 'arcee-{num}b', retry after {num} seconds",
    "Node '{node}' failed: invalid JSON in output at position {num}",
    "Node '{node}' failed: HTTP 502 from https://search.example/{hex}",
    "Node '{node}' failed: index 'kb-{num}' not found",
];
const CANCELLED: &str = "Workflow cancelled by user {hex}";
/// The failure that appears with the regression of [`REGRESSING_WORKFLOW`].
const REGRESSION_ERROR: &str =
    "Node '{node}' failed: context length exceeded ({num} tokens, the model allows 8192)";
/// The workflow (by index) whose last [`REGRESSION_DAYS`] days regress: failures up from 7% to
/// about 25% of its runs and durations doubled, so the report has something to find.
pub const REGRESSING_WORKFLOW: u64 = 2;
const DAY_US: i64 = 86_400_000_000;
/// UTC days, the newest run's included, in which [`REGRESSING_WORKFLOW`] regresses.
pub const REGRESSION_DAYS: i64 = 7;
/// Nodes that call a model: their steps report tokens.
pub const LLM_NODES: [&str; 4] = ["model", "summarize", "translate", "web_search"];
const STATUSES_UNFINISHED: [&str; 2] = ["running", "queued"];
/// Newest run of every workflow starts at this instant (2026-11-20T12:00:00Z) minus jitter.
pub const DEFAULT_ANCHOR_US: i64 = 1_795_176_000_000_000;
/// History of a workflow spans about this many days.
const SPAN_DAYS: i64 = 42;

/// The shape of generated runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DataProfile {
    /// About 1.5 KB of JSON a run: short texts and small objects, where per-run costs show.
    #[default]
    Small,
    /// About 5.5 KB a run, shaped like LLM workflows' history: long texts with
    /// markdown, code, CJK and emoji, chat completions and retrieved documents as nested objects.
    Llm,
}

impl DataProfile {
    /// The names `--data` accepts.
    pub const NAMES: [&str; 2] = ["llm", "small"];

    /// The profile's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            DataProfile::Small => "small",
            DataProfile::Llm => "llm",
        }
    }
}

impl std::str::FromStr for DataProfile {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "llm" => Ok(DataProfile::Llm),
            "small" => Ok(DataProfile::Small),
            other => Err(format!(
                "unknown data profile `{other}` (expected one of: {})",
                DataProfile::NAMES.join(", ")
            )),
        }
    }
}

/// A simulated workflow.
#[derive(Debug, Clone)]
pub struct SimWorkflow {
    /// Its id (UUID-like).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Index, mixed into every random choice.
    pub index: u64,
    /// Runs in its history.
    pub runs: u64,
    /// Node names in graph order.
    pub nodes: Vec<&'static str>,
    /// The shape of its runs.
    pub profile: DataProfile,
    seed: u64,
    anchor_us: i64,
}

fn rng_for(seed: u64, a: u64, b: u64) -> ChaCha8Rng {
    let mixed = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(a.wrapping_mul(0xBF58_476D_1CE4_E5B9))
        .wrapping_add(b.wrapping_mul(0x94D0_49BB_1331_11EB));
    ChaCha8Rng::seed_from_u64(mixed)
}

fn uuid_like(rng: &mut impl Rng, tail: Option<u64>) -> String {
    let a: u32 = rng.random();
    let b: u16 = rng.random();
    let c: u16 = (rng.random::<u16>() & 0x0fff) | 0x4000;
    let d: u16 = (rng.random::<u16>() & 0x3fff) | 0x8000;
    let e: u64 = tail.unwrap_or_else(|| rng.random::<u64>()) & 0xffff_ffff_ffff;
    format!("{a:08x}-{b:04x}-{c:04x}-{d:04x}-{e:012x}")
}

impl SimWorkflow {
    /// The workflow number `index` of a seeded history with `runs` runs.
    pub fn generate(
        seed: u64,
        index: u64,
        runs: u64,
        anchor_us: i64,
        profile: DataProfile,
    ) -> Self {
        let mut rng = rng_for(seed, index, u64::MAX);
        let id = uuid_like(&mut rng, None);
        let count = rng.random_range(3..=7);
        let mut nodes: Vec<&'static str> = vec!["prompt"];
        let mut pool: Vec<&'static str> = NODE_NAMES[1..].to_vec();
        while nodes.len() < count {
            let pick = rng.random_range(0..pool.len());
            nodes.push(pool.swap_remove(pick));
        }
        let name = format!(
            "{} {}",
            WORKFLOW_NAMES[(index as usize) % WORKFLOW_NAMES.len()],
            index / WORKFLOW_NAMES.len() as u64 + 1
        );
        Self {
            id,
            name,
            index,
            runs,
            nodes,
            profile,
            seed,
            anchor_us,
        }
    }

    /// The `GET /workflows` entry.
    pub fn summary(&self) -> Value {
        let created = format_timestamp(self.anchor_us - (SPAN_DAYS + 30) * 86_400_000_000)
            .replace('T', " ")
            .replace('Z', "+00:00");
        json!({
            "workflow_id": self.id,
            "name": self.name,
            "description": format!("Simulated workflow with {} nodes", self.nodes.len()),
            "status": if self.index % 5 == 4 { "inactive" } else { "active" },
            "version": (self.index % 3) + 1,
            "public": false,
            "created_at": created,
            "updated_at": created,
            "created_by": "sim-user",
            "updated_by": "sim-user",
            "user_id": "sim-user",
            "organization_id": "sim-org",
            "graph": {"nodes": self.nodes, "edges": [], "entry_point": "prompt", "finish_point": self.nodes.last()},
            "file_metadata": null,
        })
    }

    /// The run id of the run with sequence number `seq` (0 = oldest); `seq` is readable from
    /// its last group.
    pub fn run_id(&self, seq: u64) -> String {
        let mut rng = rng_for(self.seed, self.index, seq);
        uuid_like(&mut rng, Some(seq))
    }

    /// Sequence number of a run id of this workflow among `total` runs, if it is one.
    pub fn run_seq(&self, run_id: &str, total: u64) -> Option<u64> {
        let seq = u64::from_str_radix(run_id.rsplit('-').next()?, 16).ok()?;
        (seq < total && self.run_id(seq) == run_id).then_some(seq)
    }

    /// The run with sequence number `seq` (0 = oldest) as the API returns it, in a history of
    /// `total` runs. Runs numbered `runs` and up were added after the history was generated and
    /// start after the anchor. The newest two runs of every third workflow are still running or
    /// queued, unless `finished_below` is above their number.
    pub fn run(&self, seq: u64, total: u64, finished_below: u64) -> Value {
        let mut rng = rng_for(self.seed, self.index, seq);
        let id = uuid_like(&mut rng, Some(seq));
        let gap = SPAN_DAYS * 86_400_000_000 / self.runs.max(1) as i64;
        let jitter = rng.random_range(0..(gap / 2).max(1));
        let age = self.runs as i64 - 1 - seq as i64;
        let start = self.anchor_us - age * gap - jitter;
        let newest_two = seq + 2 >= total;
        let finished = !newest_two || seq < finished_below || !self.index.is_multiple_of(3);
        // From midnight (UTC) of the first of the last `REGRESSION_DAYS` days, as reports count.
        let days_before = self.anchor_us.div_euclid(DAY_US) - start.div_euclid(DAY_US);
        let regressed = self.index == REGRESSING_WORKFLOW && days_before < REGRESSION_DAYS;
        let mut elapsed_us = (rng.random::<f64>().powi(3) * 110.0 + 0.4) as i64 * 1_000_000
            + rng.random_range(0..1_000_000);
        if regressed {
            elapsed_us *= 2;
        }
        let roll: f64 = rng.random();
        let completed_below = if regressed { 0.72 } else { 0.90 };
        let status = if !finished {
            STATUSES_UNFINISHED[(seq % 2) as usize]
        } else if roll < completed_below {
            "completed"
        } else if roll < 0.97 {
            "failed"
        } else {
            "cancelled"
        };
        let unfinished = STATUSES_UNFINISHED.contains(&status);
        let failing_at = (status == "failed").then(|| rng.random_range(1..self.nodes.len()));
        let inputs = self.inputs(&mut rng);
        let mut all_outputs = Map::new();
        let mut last = Value::Null;
        for (i, node) in self.nodes.iter().enumerate() {
            if failing_at.is_some_and(|f| i >= f) || (unfinished && i >= 1) {
                break;
            }
            let out = if i == 0 {
                inputs.get("prompt").cloned().unwrap_or(Value::Null)
            } else if self.profile == DataProfile::Llm {
                super::llm::node_output(node, &mut rng)
            } else {
                node_output(node, &mut rng)
            };
            last = out.clone();
            all_outputs.insert((*node).to_owned(), out);
        }
        let error = match (status, failing_at) {
            ("failed", Some(at)) => {
                let template = if regressed && roll >= 0.90 {
                    REGRESSION_ERROR
                } else {
                    ERRORS[rng.random_range(0..ERRORS.len())]
                };
                Value::String(error_message(&mut rng, template, self.nodes[at]))
            }
            ("cancelled", _) => Value::String(error_message(&mut rng, CANCELLED, "")),
            _ => Value::Null,
        };
        let (end_time, elapsed, outputs) = if unfinished {
            (Value::Null, Value::Null, Value::Null)
        } else {
            let outputs = if status == "completed" {
                last
            } else {
                Value::Null
            };
            (
                Value::String(format_timestamp(start + elapsed_us)),
                json!(elapsed_us / 1_000_000),
                outputs,
            )
        };
        json!({
            "id": id,
            "status": status,
            "start_time": format_timestamp(start),
            "end_time": end_time,
            "elapsed_time": elapsed,
            "error": error,
            "outputs": outputs,
            "all_outputs": all_outputs,
            "inputs": inputs,
        })
    }

    fn inputs(&self, rng: &mut ChaCha8Rng) -> Map<String, Value> {
        if self.profile == DataProfile::Llm {
            return super::llm::inputs(rng, self.index);
        }
        let mut inputs = Map::new();
        inputs.insert("prompt".into(), Value::String(sentence(rng, 6, 24)));
        if self.index % 2 == 1 {
            inputs.insert("top_k".into(), json!(rng.random_range(1..10)));
        }
        if self.index % 4 == 2 {
            inputs.insert(
                "metadata".into(),
                json!({"source": "api", "priority": rng.random_range(1..4)}),
            );
        }
        inputs
    }
}

/// A node's typical share of its run's time (relative; jittered per step).
pub fn step_weight(node: &str) -> f64 {
    match node {
        "model" => 10.0,
        "summarize" => 7.0,
        "translate" => 5.0,
        "web_search" => 4.0,
        "retriever" => 2.5,
        "rerank" => 1.5,
        "json_extract" => 1.0,
        "classify" | "guardrail" => 0.6,
        "router" | "formatter" => 0.25,
        _ => 0.1,
    }
}

fn sentence(rng: &mut impl Rng, min: usize, max: usize) -> String {
    let n = rng.random_range(min..=max);
    let mut words: Vec<&str> = (0..n)
        .map(|_| *WORDS.choose(rng).expect("non-empty"))
        .collect();
    if let Some(first) = words.first_mut() {
        *first = if *first == "the" { "The" } else { first };
    }
    words.join(" ") + "."
}

fn node_output(node: &str, rng: &mut impl Rng) -> Value {
    match node {
        "classify" | "router" | "guardrail" => json!({
            "label": (["billing", "technical", "sales", "other"][rng.random_range(0..4)]),
            "score": (rng.random::<f64>() * 1000.0).round() / 1000.0,
            "passed": rng.random_bool(0.9),
        }),
        "json_extract" => json!({
            "fields": {"total": rng.random_range(10..5000), "currency": "EUR", "lines": [1, 2, 3]},
            "warnings": [],
        }),
        "retriever" | "rerank" => json!([
            {"doc": format!("kb/{}", rng.random_range(1..500)), "score": 0.91},
            {"doc": format!("kb/{}", rng.random_range(1..500)), "score": 0.73},
        ]),
        _ => {
            // LLM-like text: mostly a paragraph, sometimes long.
            let paragraphs = if rng.random_bool(0.1) {
                rng.random_range(4..12)
            } else {
                1
            };
            let text: Vec<String> = (0..paragraphs).map(|_| sentence(rng, 12, 60)).collect();
            Value::String(text.join("\n\n"))
        }
    }
}

fn error_message(rng: &mut impl Rng, template: &str, node: &str) -> String {
    template
        .replace("{node}", node)
        .replace("{hex}", &format!("{:08x}", rng.random::<u32>()))
        .replace("{num}", &rng.random_range(2..90).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_deterministic_ordered_and_findable_by_id() {
        let wf = SimWorkflow::generate(1, 3, 500, DEFAULT_ANCHOR_US, DataProfile::Small);
        let again = SimWorkflow::generate(1, 3, 500, DEFAULT_ANCHOR_US, DataProfile::Small);
        assert_eq!(wf.run(17, 500, 0), again.run(17, 500, 0));
        let t = |seq| {
            wf.run(seq, 600, 0)["start_time"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        assert!(t(599) > t(500) && t(500) > t(499) && t(499) > t(250) && t(250) > t(0));
        assert_eq!(wf.run_seq(&wf.run_id(42), 500), Some(42));
        assert_eq!(wf.run(42, 500, 0)["id"], wf.run_id(42));
        assert_eq!(wf.run_seq(&wf.run_id(520), 500), None);
        assert_eq!(
            wf.run_seq("00000000-0000-4000-8000-000000000001", 500),
            None
        );
    }

    #[test]
    fn the_newest_runs_of_every_third_workflow_run_until_finished() {
        let wf = SimWorkflow::generate(1, 3, 100, DEFAULT_ANCHOR_US, DataProfile::Small);
        let status =
            |seq, total, finished_below| wf.run(seq, total, finished_below)["status"].clone();
        assert_eq!(status(99, 100, 0), "queued");
        assert_eq!(status(98, 100, 0), "running");
        assert!(wf.run(99, 100, 0)["end_time"].is_null());
        // New runs arrived: the old head has finished.
        assert!(wf.run(99, 105, 0)["end_time"].is_string());
        // Or the simulator was told to finish everything running.
        assert!(wf.run(99, 100, 100)["end_time"].is_string());
    }

    #[test]
    fn statuses_look_real() {
        let wf = SimWorkflow::generate(9, 0, 2000, DEFAULT_ANCHOR_US, DataProfile::Small);
        let runs: Vec<Value> = (0..2000).map(|i| wf.run(i, 2000, 0)).collect();
        let count = |s: &str| runs.iter().filter(|r| r["status"] == s).count();
        assert!(
            (1700..1900).contains(&count("completed")),
            "{}",
            count("completed")
        );
        assert!((80..200).contains(&count("failed")), "{}", count("failed"));
        assert_eq!(count("running") + count("queued"), 2);
        for r in runs.iter().filter(|r| r["status"] == "failed") {
            assert!(r["error"].as_str().unwrap().len() > 10);
            assert!(r["end_time"].is_string());
        }
    }

    #[test]
    fn one_workflow_regresses_in_its_last_week_and_failures_name_their_node() {
        let runs = 3000;
        let wf = SimWorkflow::generate(
            7,
            REGRESSING_WORKFLOW,
            runs,
            DEFAULT_ANCHOR_US,
            DataProfile::Small,
        );
        let (mut last, mut before) = (Vec::new(), Vec::new());
        for seq in 0..runs - 2 {
            let run = wf.run(seq, runs, 0);
            let start =
                crate::flatten::parse_timestamp(run["start_time"].as_str().unwrap()).unwrap();
            let days = DEFAULT_ANCHOR_US.div_euclid(DAY_US) - start.div_euclid(DAY_US);
            if days < REGRESSION_DAYS {
                last.push(run);
            } else if days < 2 * REGRESSION_DAYS {
                before.push(run);
            }
        }
        let failed = |runs: &[Value]| {
            runs.iter().filter(|r| r["status"] == "failed").count() as f64 / runs.len() as f64
        };
        let mean_elapsed = |runs: &[Value]| {
            runs.iter()
                .filter_map(|r| r["elapsed_time"].as_f64())
                .sum::<f64>()
                / runs.len() as f64
        };
        assert!(
            failed(&before) < 0.12 && failed(&last) > 0.18,
            "{} → {}",
            failed(&before),
            failed(&last)
        );
        assert!(mean_elapsed(&last) > 1.6 * mean_elapsed(&before));
        for run in last
            .iter()
            .chain(&before)
            .filter(|r| r["status"] == "failed")
        {
            let failing = wf.nodes[run["all_outputs"].as_object().unwrap().len()];
            let error = run["error"].as_str().unwrap();
            assert!(
                error.starts_with(&format!("Node '{failing}' failed: ")),
                "{error}"
            );
        }
        // Other workflows do not regress.
        let other = SimWorkflow::generate(
            7,
            REGRESSING_WORKFLOW + 1,
            runs,
            DEFAULT_ANCHOR_US,
            DataProfile::Small,
        );
        let recent = (runs - 300..runs - 2)
            .map(|seq| other.run(seq, runs, 0))
            .collect::<Vec<_>>();
        assert!(failed(&recent) < 0.12, "{}", failed(&recent));
    }
}
