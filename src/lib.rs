//! orchestra-export: turns the run history of Arcee Orchestra workflows into a Hive-partitioned
//! Parquet dataset.
//!
//! The pipeline reads left to right, one module per stage: [`api`] (HTTP, retries) →
//! [`extract`] (paging, fan-out, de-duplication) → [`flatten`] (JSON → Arrow rows, each value through the [`privacy`] policy first) →
//! [`dataset`] (Parquet files, partitions, atomic commits). [`report`] reads a dataset back with
//! Polars; [`verify`] proves a dataset against the API. [`pipeline`] wires the stages for one export; [`cli`] turns flags into a validated [`config`]; [`simulate`] is an Orchestra-compatible
//! server for demos, tests and benchmarks.

pub mod api;
pub mod cli;
pub mod config;
pub mod dataset;
pub mod exit;
pub mod extract;
pub mod flatten;
pub mod json_text;
pub mod pipeline;
pub mod privacy;
pub mod progress;
pub mod report;
pub mod simulate;
pub mod table;
pub mod terminal;
pub mod verify;

/// An error and its causes on one line, joined by `: ` (for per-item failure lines and logs).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
