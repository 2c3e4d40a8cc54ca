//! The LLM-heavy data profile: runs shaped like those of real LLM workflows.
//!
//! Node outputs are texts of 100–3,000 characters (log-uniform) mixing prose, markdown headings
//! and lists, fenced code with quotes and backslashes, CJK and emoji; about one output in five is
//! a nested object instead — a chat completion (`{id, model, usage, choices: [{message}]}`), a
//! retriever's `{query, documents: […]}` or a tool call. Runs carry 1–3 inputs. A run is about
//! 5.5 KB of JSON, against about 1.5 KB for the small profile ([`super::data`]), so per-byte costs
//! (parsing text, compressing it) weigh as they do on users' data.

use std::fmt::Write as _;

use rand::Rng;
use rand::seq::IndexedRandom;
use serde_json::{Map, Value, json};

const PROSE: [&str; 48] = [
    "the",
    "customer",
    "asked",
    "whether",
    "their",
    "invoice",
    "includes",
    "the",
    "annual",
    "discount",
    "and",
    "model",
    "replied",
    "that",
    "policy",
    "allows",
    "refunds",
    "within",
    "30",
    "days",
    "of",
    "purchase",
    "we",
    "recommend",
    "escalating",
    "ticket",
    "to",
    "billing",
    "team",
    "because",
    "contract",
    "clause",
    "risk",
    "is",
    "high",
    "for",
    "this",
    "account",
    "résumé",
    "naïve",
    "data",
    "pipeline",
    "returned",
    "summary",
    "next",
    "steps",
    "are",
    "clear",
];
const CJK: [&str; 6] = [
    "東京の天気は晴れです。",
    "请在三十天内申请退款。",
    "계약 조항을 검토했습니다.",
    "お問い合わせありがとうございます。",
    "数据管道已成功完成。",
    "この請求書には割引が含まれています。",
];
const EMOJI: [&str; 8] = ["🙂", "🚀", "✅", "📄", "⚠️", "🔍", "💡", "🎉"];
const CODE: [&str; 8] = [
    "def total(lines):",
    "    return sum(l[\"amount\"] for l in lines)",
    "print(f\"Total: {total(lines):.2f}\\n\")",
    "const re = /\\d{4}-\\d{2}-\\d{2}/;",
    "if (!resp.ok) throw new Error(`HTTP ${resp.status}`);",
    "SELECT status, count(*) FROM runs GROUP BY 1;",
    "path = \"C:\\\\Users\\\\agent\\\\report.md\"",
    "}",
];
const LANGS: [&str; 4] = ["python", "javascript", "sql", "text"];
const TOOLS: [&str; 4] = ["web_search", "calculator", "crm_lookup", "send_email"];

/// A text of `min..=max` characters (log-uniform), cut at a character boundary.
pub(super) fn text(rng: &mut impl Rng, min: f64, max: f64) -> String {
    let target = (min.ln() + rng.random::<f64>() * (max.ln() - min.ln())).exp() as usize;
    let mut out = String::with_capacity(target + 64);
    let mut chars = 0;
    while chars < target {
        let before = out.len();
        match rng.random_range(0..10) {
            0 => {
                out.push_str("## ");
                words(rng, &mut out, 2, 6);
                out.push_str("\n\n");
            }
            1 | 2 => {
                for _ in 0..rng.random_range(2..5) {
                    out.push_str(if rng.random_bool(0.5) { "- " } else { "1. " });
                    words(rng, &mut out, 3, 10);
                    out.push('\n');
                }
                out.push('\n');
            }
            3 => {
                let _ = writeln!(out, "```{}", LANGS.choose(rng).expect("non-empty"));
                for _ in 0..rng.random_range(2..7) {
                    out.push_str(CODE.choose(rng).expect("non-empty"));
                    out.push('\n');
                }
                out.push_str("```\n\n");
            }
            4 => {
                out.push_str(CJK.choose(rng).expect("non-empty"));
                out.push_str(CJK.choose(rng).expect("non-empty"));
                out.push_str(EMOJI.choose(rng).expect("non-empty"));
                out.push_str("\n\n");
            }
            _ => {
                words(rng, &mut out, 12, 40);
                if rng.random_bool(0.3) {
                    let _ = write!(out, " **{}**", PROSE.choose(rng).expect("non-empty"));
                }
                if rng.random_bool(0.2) {
                    out.push(' ');
                    out.push_str(EMOJI.choose(rng).expect("non-empty"));
                }
                out.push_str(".\n\n");
            }
        }
        chars += out[before..].chars().count();
    }
    if let Some((cut, _)) = out.char_indices().nth(target) {
        out.truncate(cut);
    }
    out.trim_end().to_owned()
}

fn words(rng: &mut impl Rng, out: &mut String, min: usize, max: usize) {
    for i in 0..rng.random_range(min..=max) {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(PROSE.choose(rng).expect("non-empty"));
    }
}

/// The output of a node of the LLM-heavy profile.
pub(super) fn node_output(node: &str, rng: &mut impl Rng) -> Value {
    // The prompt node's output is a text (the prompt), so a quarter here is a fifth of all.
    if rng.random_bool(0.75) {
        return Value::String(text(rng, 100.0, 3000.0));
    }
    match node {
        "retriever" | "rerank" | "web_search" => {
            let documents: Vec<Value> = (0..rng.random_range(2..5))
                .map(|_| {
                    json!({
                        "id": format!("kb/{}", rng.random_range(1..5000)),
                        "score": (rng.random::<f64>() * 1000.0).round() / 1000.0,
                        "title": text(rng, 20.0, 60.0),
                        "text": text(rng, 100.0, 800.0),
                    })
                })
                .collect();
            json!({"query": text(rng, 20.0, 80.0), "documents": documents})
        }
        "router" | "classify" | "guardrail" => json!({
            "tool_calls": [{
                "id": format!("call_{:012x}", rng.random::<u64>() & 0xffff_ffff_ffff),
                "type": "function",
                "function": {
                    "name": TOOLS.choose(rng).expect("non-empty"),
                    "arguments": format!("{{\"query\": \"{}\", \"limit\": {}}}", text(rng, 10.0, 40.0).replace(['"', '\\', '\n'], " "), rng.random_range(1..20)),
                },
            }],
            "label": (["billing", "technical", "sales", "other"][rng.random_range(0..4)]),
        }),
        _ => {
            let content = text(rng, 100.0, 3000.0);
            let completion = content.len() as u64 / 4;
            let prompt = rng.random_range(200..4000);
            json!({
                "id": format!("chatcmpl-{:016x}", rng.random::<u64>()),
                "object": "chat.completion",
                "model": (["arcee-blitz", "arcee-maestro", "virtuoso-large"][rng.random_range(0..3)]),
                "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            })
        }
    }
}

/// The inputs of a run of the LLM-heavy profile: a prompt and up to two more.
pub(super) fn inputs(rng: &mut impl Rng, workflow_index: u64) -> Map<String, Value> {
    let mut inputs = Map::new();
    inputs.insert("prompt".into(), Value::String(text(rng, 60.0, 1200.0)));
    if workflow_index % 2 == 1 {
        inputs.insert(
            "user_id".into(),
            json!(format!("user-{}", rng.random_range(1..100_000))),
        );
    }
    if workflow_index % 3 == 2 {
        inputs.insert(
            "options".into(),
            json!({"temperature": (rng.random::<f64>() * 10.0).round() / 10.0, "locale": (["en-US", "de-DE", "ja-JP"][rng.random_range(0..3)])}),
        );
    }
    inputs
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    #[test]
    fn texts_span_the_profile_lengths_and_carry_what_escapes() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let texts: Vec<String> = (0..2000).map(|_| text(&mut rng, 100.0, 3000.0)).collect();
        let lengths: Vec<usize> = texts.iter().map(|t| t.chars().count()).collect();
        assert!(
            lengths.iter().all(|&n| (60..=3000).contains(&n)),
            "{lengths:?}"
        );
        let short = lengths.iter().filter(|&&n| n < 300).count();
        let long = lengths.iter().filter(|&&n| n > 1500).count();
        // Log-uniform: about a third below 300 characters, a fifth above 1,500.
        assert!((500..900).contains(&short), "{short}");
        assert!((250..550).contains(&long), "{long}");
        let all = texts.concat();
        for needle in ["\n", "\"", "\\", "```", "## ", "東京", "🚀"] {
            assert!(all.contains(needle), "{needle}");
        }
    }
}
