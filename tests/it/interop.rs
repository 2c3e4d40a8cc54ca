//! Real readers: DuckDB, Polars and pyarrow (from PyPI, in the venv `scripts/test` creates) read
//! an export with the documented types, partitions and keys (`tests/interop/check_dataset.py`).

use std::path::PathBuf;
use std::process::Command;

use orchestra_export::simulate::SimConfig;
use serde_json::Value;

use crate::support::*;

#[test]
fn duckdb_polars_and_pyarrow_read_the_dataset_and_agree_with_the_report() {
    let odd: Vec<Value> =
        serde_json::from_str(include_str!("../../data/samples/varied-shapes.json")).unwrap();
    let docs: Vec<Value> =
        serde_json::from_str(include_str!("../../data/samples/docs-example.json")).unwrap();
    let sim = Sim::start(SimConfig {
        workflows: 5,
        runs_per_workflow: 300,
        fixtures: vec![fixture("odd-shapes", odd), fixture("docs-example", docs)],
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    assert_ok(&export(
        &sim,
        dir.path(),
        &["--all-workflows", "--with-steps"],
    ));
    assert_ok(&run(&["report", "--data", dir.path().to_str().unwrap()]));
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/check_dataset.py");
    let out = Command::new(python())
        .arg(&script)
        .arg(dir.path())
        .output()
        .unwrap();
    let report = format!("{}{}", stdout(&out), stderr(&out));
    assert!(out.status.success(), "{report}");
    assert!(report.contains(" passed, 0 failed"), "{report}");
}
