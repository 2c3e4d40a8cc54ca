//! Delta tables on S3 (moto): exact after a first export and a re-run, the previous version
//! readable, `maintain` on the store; and 4 shards exporting at once into the same tables,
//! their commits retried over each other's (Delta's optimistic concurrency), none lost.

use super::*;
use crate::delta::{assert_exact, read_delta, served_statuses, statuses};

const URL: &str = "s3://lake/delta/history";

#[test]
fn delta_tables_on_s3_are_exact_after_an_export_a_rerun_and_four_shards_at_once() {
    let moto = Moto::start();
    moto.create_bucket("lake");
    let sim = Sim::start(SimConfig {
        workflows: 8,
        runs_per_workflow: 150,
        ..SimConfig::default()
    });
    let env = moto.env();
    let args = ["--all-workflows", "--with-steps", "--table-format", "delta"];
    assert_ok(&s3_export(&moto, &sim, URL, &args));
    let first_served = served_statuses(&sim);
    let first = read_delta(URL, None, &env);
    assert_exact(&first, &first_served);
    assert_eq!(first["runs"]["version"], 0);

    sim.server.add_runs(1, 25);
    assert_ok(&s3_export(&moto, &sim, URL, &args));
    let served = served_statuses(&sim);
    let second = read_delta(URL, Some(0), &env);
    assert_exact(&second, &served);
    assert_eq!(second["runs"]["version"], 1);
    assert_eq!(statuses(&second["runs_at_version"]), first_served);

    // `report` and `verify` on the store read the current snapshot: of each table, the log and
    // the files the snapshot holds are downloaded, not the files the re-run replaced.
    let reports = tempfile::tempdir().unwrap();
    let out = reports.path().to_str().unwrap();
    let report = command(
        &moto,
        &[
            "-v",
            "--log-format",
            "json",
            "report",
            "--data",
            URL,
            "--out",
            out,
        ],
    )
    .output()
    .unwrap();
    assert_ok(&report);
    let want = format!("report: {} runs in ", served.len());
    assert!(stdout(&report).starts_with(&want), "{}", stdout(&report));
    let downloaded = stderr(&report)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|l| l["fields"]["files"].as_u64())
        .unwrap_or_else(|| panic!("no download line: {}", stderr(&report)));
    let keys = moto.bucket("lake").keys("delta/history/");
    let tables = ["runs", "node_outputs", "run_inputs", "steps", "workflows"];
    let in_table = |k: &String| {
        tables
            .iter()
            .any(|t| k.starts_with(&format!("delta/history/{t}/")))
    };
    let logs = keys
        .iter()
        .filter(|k| in_table(k) && k.contains("/_delta_log/"))
        .count();
    let data = keys
        .iter()
        .filter(|k| in_table(k) && k.ends_with(".parquet") && !k.contains("/_delta_log/"))
        .count();
    let active: u64 = tables
        .iter()
        .map(|t| second[*t]["files"].as_u64().unwrap())
        .sum();
    assert!(
        data as u64 > active,
        "the re-run replaced no file: {data} stored, {active} active"
    );
    assert_eq!(downloaded, logs as u64 + active, "{}", stderr(&report));
    let url = sim.url();
    let verify = command(
        &moto,
        &[
            "verify",
            "--base-url",
            &url,
            "--out",
            URL,
            "--all-workflows",
        ],
    )
    .output()
    .unwrap();
    assert_ok(&verify);

    let kept = command(
        &moto,
        &["maintain", "--out", URL, "--retention", "0s", "--compact"],
    )
    .output()
    .unwrap();
    assert_ok(&kept);
    assert!(
        stdout(&kept).contains("checkpoint written"),
        "{}",
        stdout(&kept)
    );
    assert_exact(&read_delta(URL, None, &env), &served);
    // The copy a report reads leaves out `_last_checkpoint` and opens from the checkpoint.
    let log = moto.bucket("lake").keys("delta/history/runs/_delta_log/");
    assert!(
        log.iter().any(|k| k.ends_with(".checkpoint.parquet")),
        "{log:?}"
    );
    assert!(
        log.iter().any(|k| k.ends_with("/_last_checkpoint")),
        "{log:?}"
    );
    let again = tempfile::tempdir().unwrap();
    let again = again.path().to_str().unwrap();
    let report = command(&moto, &["report", "--data", URL, "--out", again])
        .output()
        .unwrap();
    assert_ok(&report);
    assert!(stdout(&report).starts_with(&want), "{}", stdout(&report));

    // Four shards at once into new tables: every shard's commits land, every run once.
    let sharded = "s3://lake/delta/sharded";
    let spawn_shard = |k: u32| {
        let shard = format!("{k}/4");
        let mut all = export_args(&url, sharded, &args);
        all.extend(["--shard", shard.as_str()]);
        command(&moto, &all)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let children: Vec<_> = (0..4).map(spawn_shard).collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert_ok(&out);
        assert_no_secret(&out);
    }
    let read = read_delta(sharded, None, &env);
    assert_exact(&read, &served);
    // At most one commit per table and shard (a shard without runs commits none).
    assert!(
        read["runs"]["version"].as_u64().unwrap() <= 3,
        "{}",
        read["runs"]
    );
    assert_eq!(read["workflows"]["rows"], 8);
    // A second round of all four at once merges again, still every run once.
    sim.server.add_runs(2, 10);
    let children: Vec<_> = (0..4).map(spawn_shard).collect();
    for child in children {
        assert_ok(&child.wait_with_output().unwrap());
    }
    let read = read_delta(sharded, None, &env);
    assert_exact(&read, &served_statuses(&sim));
}
