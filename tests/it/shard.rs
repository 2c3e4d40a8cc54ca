//! Sharded runs: N processes with `--shard K/N` write one dataset at the same time, each its own
//! files, and together store exactly what one unsharded export stores; layouts never mix.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Output;

use orchestra_export::dataset::Shard;
use serde_json::Value;

use crate::support::*;

const RUN_TABLES: [&str; 3] = ["runs", "node_outputs", "run_inputs"];

/// Every row of the run tables without `extracted_at`, sorted: what two exports of the same
/// history must agree on.
fn content(out: &Path) -> BTreeMap<&'static str, Vec<Row>> {
    RUN_TABLES
        .into_iter()
        .map(|table| {
            let mut rows = read_table(out, table).1;
            for row in &mut rows {
                row.remove("extracted_at");
            }
            rows.sort();
            (table, rows)
        })
        .collect()
}

/// Runs the shards `0/n` … `n-1/n` as concurrent processes and returns their outputs by index.
fn run_shards_concurrently(sim: &Sim, out: &Path, n: u32, extra: &[&str]) -> Vec<Output> {
    let children: Vec<_> = (0..n)
        .map(|k| {
            let shard = format!("{k}/{n}");
            let mut args = vec!["--shard", shard.as_str()];
            args.extend_from_slice(extra);
            spawn_export(sim, out, &args)
        })
        .collect();
    children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect()
}

/// Paths below `dir`, relative, sorted.
fn relative_files(dir: &Path) -> Vec<String> {
    let mut files: Vec<String> = all_files(dir)
        .iter()
        .map(|p| p.strip_prefix(dir).unwrap().to_string_lossy().into_owned())
        .collect();
    files.sort();
    files
}

/// Workflow ids stored in one Parquet file.
fn workflows_in(file: &Path) -> BTreeSet<String> {
    column_values(file, "workflow_id")
}

fn manifest(out: &Path, tag: &str) -> Value {
    let dir = out.join("_manifest");
    let names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(&format!("-{tag}.json")))
        .collect();
    assert_eq!(names.len(), 1, "{tag}: {names:?}");
    serde_json::from_str(&std::fs::read_to_string(&names[0]).unwrap()).unwrap()
}

fn tag(k: u32, n: u32) -> String {
    Shard::new(k, n).unwrap().tag()
}

#[test]
fn four_concurrent_shards_store_exactly_what_one_export_stores() {
    let sim = sim_with_samples(12, 300, 25);
    let all_ids: BTreeSet<String> = sim
        .ids()
        .into_iter()
        .chain(["odd-shapes".to_owned(), "docs-example".to_owned()])
        .collect();
    let single = tempfile::tempdir().unwrap();
    assert_ok(&export(&sim, single.path(), &["--all-workflows"]));

    let sharded = tempfile::tempdir().unwrap();
    let outs = run_shards_concurrently(
        &sim,
        sharded.path(),
        4,
        &["--all-workflows", "--page-size", "20"],
    );
    let mut kept_total = 0;
    for (k, out) in outs.iter().enumerate() {
        assert_ok(out);
        let line = stdout(out)
            .lines()
            .find(|l| l.contains(&format!("shard {k}/4: ")))
            .unwrap_or_else(|| panic!("{}", stdout(out)))
            .to_owned();
        let kept: usize = line
            .split("shard ")
            .nth(1)
            .and_then(|l| l.split(": ").nth(1))
            .and_then(|l| l.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{line}"));
        assert!(line.contains(" of 14 workflows are this shard's"), "{line}");
        kept_total += kept;
    }
    assert_eq!(kept_total, 14);

    // The four were running at the same instant.
    let manifests: Vec<Value> = (0..4)
        .map(|k| manifest(sharded.path(), &tag(k, 4)))
        .collect();
    assert_exports_overlapped(&manifests);

    // The same rows as the unsharded export, each run once.
    let (one, four) = (content(single.path()), content(sharded.path()));
    for table in RUN_TABLES {
        assert_eq!(one[table].len(), four[table].len(), "{table} row count");
        assert!(one[table] == four[table], "{table} rows differ");
    }
    let keys: BTreeSet<(Cell, Cell)> = four["runs"]
        .iter()
        .map(|r| (r["workflow_id"].clone(), r["run_id"].clone()))
        .collect();
    assert_eq!(keys.len(), four["runs"].len(), "a run is stored twice");
    assert!(
        four["runs"]
            .iter()
            .any(|r| r["date"] == text("__HIVE_DEFAULT_PARTITION__")),
        "the undated partition is exercised"
    );

    // Each shard's files hold only its workflows; no workflow is in two shards.
    let mut owner: BTreeMap<String, u32> = BTreeMap::new();
    for table in RUN_TABLES.iter().chain(&["workflows"]) {
        for file in parquet_files(&sharded.path().join(table)) {
            let name = file.file_name().unwrap().to_str().unwrap().to_owned();
            let k = (0..4)
                .find(|k| name == format!("{}.parquet", tag(*k, 4)))
                .unwrap_or_else(|| panic!("unexpected data file {}", file.display()));
            for id in workflows_in(&file) {
                assert!(Shard::new(k, 4).unwrap().keeps(&id), "{id} in {name}");
                let first = *owner.entry(id.clone()).or_insert(k);
                assert_eq!(first, k, "{id} is in shards {first} and {k}");
            }
        }
    }
    assert_eq!(owner.keys().cloned().collect::<BTreeSet<_>>(), all_ids);

    // The `workflows` table is the union of the shards' parts.
    let strip = |mut rows: Vec<Row>| {
        for r in &mut rows {
            r.remove("extracted_at");
        }
        rows.sort();
        rows
    };
    assert_eq!(
        strip(read_table(single.path(), "workflows").1),
        strip(read_table(sharded.path(), "workflows").1)
    );

    // Lock, marker, state, manifests, staging: each shard's own, nothing left behind (not even
    // an empty staging folder).
    let files = relative_files(sharded.path());
    let staging = sharded.path().join("_staging");
    assert!(
        !staging.exists() || staging.read_dir().unwrap().next().is_none(),
        "{:?}",
        staging
            .read_dir()
            .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
    );
    for k in 0..4 {
        let t = tag(k, 4);
        for name in [format!("_lock.{t}"), format!("_SUCCESS.{t}")] {
            assert!(files.contains(&name), "{name} missing: {files:?}");
        }
        let states: BTreeSet<String> = files
            .iter()
            .filter_map(|f| f.strip_prefix(&format!("_state/{t}/")))
            .map(|f| f.trim_end_matches(".json").to_owned())
            .collect();
        let mine: BTreeSet<String> = all_ids
            .iter()
            .filter(|id| Shard::new(k, 4).unwrap().keeps(id))
            .cloned()
            .collect();
        assert_eq!(states, mine, "state files of shard {k}");
    }
    let stray: Vec<&String> = files
        .iter()
        .filter(|f| {
            f.starts_with("_staging")
                || f.contains(".tmp")
                || *f == "_lock"
                || *f == "_SUCCESS"
                || f.starts_with("_state/") && f.matches('/').count() == 1
                || f.ends_with("part-0.parquet")
        })
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
    let success: Value = serde_json::from_str(
        &std::fs::read_to_string(sharded.path().join(format!("_SUCCESS.{}", tag(2, 4)))).unwrap(),
    )
    .unwrap();
    assert_eq!(success["shard"]["shard"], "2/4");
    assert_eq!(success["shard"]["workflows_listed"], 14);
    assert!(success["export_id"].as_str().unwrap().ends_with(&tag(2, 4)));

    // `report` over the union computes what it computes over the unsharded export.
    let one_report = run(&["report", "--data", single.path().to_str().unwrap()]);
    let four_report = run(&["report", "--data", sharded.path().to_str().unwrap()]);
    assert_ok(&one_report);
    assert_ok(&four_report);
    let runs = one["runs"].len();
    for out in [&one_report, &four_report] {
        assert!(
            stdout(out).contains(&format!("report: {runs} runs")),
            "{}",
            stdout(out)
        );
    }
    let mut compared = 0;
    for file in all_files(&single.path().join("_reports")) {
        if file.extension().is_some_and(|e| e == "csv") {
            let name = file.file_name().unwrap();
            let theirs = sharded.path().join("_reports").join(name);
            // Every figure, but when each report was generated.
            let figures = |path: &std::path::Path| {
                let text = std::fs::read_to_string(path).unwrap();
                if name == "overview.csv" {
                    text.lines()
                        .map(|l| l.split_once(',').unwrap().1.to_owned())
                        .collect::<Vec<_>>()
                        .join("\n")
                } else {
                    text
                }
            };
            assert_eq!(figures(&file), figures(&theirs), "{name:?}");
            compared += 1;
        }
    }
    assert!(compared >= 6, "{compared} report tables compared");
}

#[test]
fn rerunning_one_shard_updates_only_its_own_files() {
    let sim = sim_with_samples(6, 200, 0);
    let dir = tempfile::tempdir().unwrap();
    for out in run_shards_concurrently(&sim, dir.path(), 2, &["--all-workflows"]) {
        assert_ok(&out);
    }
    let shard_of = |index: usize| {
        let id = &sim.ids()[index];
        (0..2)
            .find(|k| Shard::new(*k, 2).unwrap().keeps(id))
            .unwrap()
    };
    let in_0 = (0..6).find(|i| shard_of(*i) == 0).unwrap();
    let in_1 = (0..6).find(|i| shard_of(*i) == 1).unwrap();
    sim.server.add_runs(in_0, 30);
    sim.server.add_runs(in_1, 40);

    let snapshot = |dir: &Path| -> BTreeMap<String, Vec<u8>> {
        relative_files(dir)
            .into_iter()
            .map(|f| {
                let bytes = std::fs::read(dir.join(&f)).unwrap();
                (f, bytes)
            })
            .collect()
    };
    let before = snapshot(dir.path());
    // Shard 1 again, taking its shard from the environment as a Kubernetes pod would.
    let url = sim.url();
    let out = run_with_env(
        &[
            "export",
            "--base-url",
            &url,
            "--out",
            dir.path().to_str().unwrap(),
            "--all-workflows",
        ],
        &[("ORCHESTRA_API_KEY", KEY), ("ORCHESTRA_SHARD", "1/2")],
    );
    assert_ok(&out);
    let summary = stdout(&out);
    let runs_line = summary
        .lines()
        .find(|l| l.trim_start().starts_with("runs "))
        .unwrap();
    assert!(runs_line.contains(" 40 new,"), "{summary}");
    let after = snapshot(dir.path());
    let t1 = tag(1, 2);
    for (file, bytes) in &before {
        if !file.contains(&t1) {
            assert_eq!(after.get(file), Some(bytes), "{file} changed");
        }
    }
    let changed: Vec<&String> = after
        .iter()
        .filter(|(f, b)| before.get(*f) != Some(*b))
        .map(|(f, _)| f)
        .collect();
    assert!(!changed.is_empty());
    assert!(
        changed.iter().all(|f| f.contains(&t1)),
        "files of other shards changed: {changed:?}"
    );

    // Shard 0's new runs arrive with shard 0; then the union is the server's history.
    assert_ok(&export(
        &sim,
        dir.path(),
        &["--all-workflows", "--shard", "0/2"],
    ));
    let fresh = tempfile::tempdir().unwrap();
    assert_ok(&export(&sim, fresh.path(), &["--all-workflows"]));
    assert!(content(dir.path()) == content(fresh.path()));
    for index in [in_0, in_1] {
        let id = &sim.ids()[index];
        assert_dataset_matches(dir.path(), id, &sim.server.records(id), 0);
    }
}

#[test]
fn a_shard_cleans_up_only_what_it_left_itself() {
    let sim = sim_with_samples(4, 50, 0);
    let dir = tempfile::tempdir().unwrap();
    for out in run_shards_concurrently(&sim, dir.path(), 2, &["--all-workflows"]) {
        assert_ok(&out);
    }
    // What two killed shards would leave: staging areas and hidden temp files.
    let (t0, t1) = (tag(0, 2), tag(1, 2));
    let partition = parquet_files(&dir.path().join("runs"))[0]
        .parent()
        .unwrap()
        .to_path_buf();
    let leftovers = |t: &str| {
        vec![
            dir.path()
                .join(format!("_staging/{t}/old/runs/part-00000.parquet")),
            partition.join(format!(".{t}.parquet.4242-0.tmp")),
            dir.path().join(format!("_state/{t}/.wf.json.4242-1.tmp")),
            dir.path().join(format!(
                "_manifest/.20260101T000000Z-abcdef-{t}.json.4242-2.tmp"
            )),
        ]
    };
    for file in leftovers(&t0).iter().chain(&leftovers(&t1)) {
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, b"partial").unwrap();
    }
    assert_ok(&export(
        &sim,
        dir.path(),
        &["--all-workflows", "--shard", "1/2"],
    ));
    for file in leftovers(&t1) {
        assert!(!file.exists(), "{} was not cleaned up", file.display());
    }
    for file in leftovers(&t0) {
        assert!(
            file.exists(),
            "{} of the other shard was removed",
            file.display()
        );
    }
}

#[test]
fn explicit_ids_and_workflow_files_are_sharded_too() {
    let sim = sim_with_samples(8, 20, 0);
    let ids = sim.ids();
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("workflows.txt");
    std::fs::write(&list, format!("# all of them\n{}\n", ids.join("\n"))).unwrap();
    let out_dir = dir.path().join("out");
    let mut stored = BTreeSet::new();
    for k in 0..3 {
        let shard = format!("{k}/3");
        let out = if k == 0 {
            let mut args = vec!["--shard", shard.as_str()];
            for id in &ids {
                args.extend(["--workflow", id.as_str()]);
            }
            export(&sim, &out_dir, &args)
        } else {
            export(
                &sim,
                &out_dir,
                &[
                    "--shard",
                    &shard,
                    "--workflows-file",
                    list.to_str().unwrap(),
                ],
            )
        };
        assert_ok(&out);
        let want: BTreeSet<String> = ids
            .iter()
            .filter(|id| Shard::new(k, 3).unwrap().keeps(id))
            .cloned()
            .collect();
        assert!(
            stdout(&out).contains(&format!(
                "shard {k}/3: {} of 8 workflows are this shard's",
                want.len()
            )),
            "{}",
            stdout(&out)
        );
        let got: BTreeSet<String> = parquet_files(&out_dir.join("runs"))
            .iter()
            .filter(|f| f.ends_with(format!("{}.parquet", tag(k, 3))))
            .flat_map(|f| workflows_in(f))
            .collect();
        assert_eq!(got, want, "shard {k}");
        stored.extend(got);
    }
    assert_eq!(stored, ids.into_iter().collect());
}

#[test]
fn mixing_layouts_in_one_dataset_is_refused_with_a_hint() {
    let sim = sim_with_samples(4, 30, 0);
    // Sharded into unsharded: refused before anything is written.
    let single = tempfile::tempdir().unwrap();
    assert_ok(&export(&sim, single.path(), &["--all-workflows"]));
    let before = relative_files(single.path());
    let out = export(&sim, single.path(), &["--all-workflows", "--shard", "0/2"]);
    assert_usage_error(
        &out,
        &format!(
            "error: `{}` holds a dataset written without `--shard` (`_lock`); this export (`--shard 0/2`) would store runs twice",
            single.path().display()
        ),
        "sharded into unsharded",
    );
    assert_stderr_contains(
        &out,
        "hint: run it without `--shard`, or export the shards into a new `--out`",
    );
    assert_eq!(
        relative_files(single.path()),
        before,
        "a refused export left a trace"
    );

    // Unsharded, or another count, into shards of 4.
    let sharded = tempfile::tempdir().unwrap();
    for out in run_shards_concurrently(&sim, sharded.path(), 4, &["--all-workflows"]) {
        assert_ok(&out);
    }
    let before = relative_files(sharded.path());
    for (extra, wanted) in [
        (vec![], "without `--shard`"),
        (vec!["--shard", "1/2"], "`--shard 1/2`"),
        (vec!["--shard", "1/8"], "`--shard 1/8`"),
    ] {
        let mut args = vec!["--all-workflows"];
        args.extend(extra);
        let out = export(&sim, sharded.path(), &args);
        assert_usage_error(
            &out,
            &format!(
                "error: `{}` holds a dataset sharded 4 ways (`_lock.shard-00-of-04`); this export ({wanted}) would store runs twice",
                sharded.path().display()
            ),
            wanted,
        );
        assert_stderr_contains(
            &out,
            "hint: use `--shard K/4` with K from 0 to 3, or export into a new `--out` to change the layout",
        );
    }
    assert_eq!(relative_files(sharded.path()), before);

    // A dataset copied without its lock files and markers: the data files give it away at
    // commit, before any partition changes.
    let copied = tempfile::tempdir().unwrap();
    assert_ok(&export(&sim, copied.path(), &["--all-workflows"]));
    for name in ["_lock", "_SUCCESS"] {
        std::fs::remove_file(copied.path().join(name)).unwrap();
    }
    // Its lock file stays, and so does the `_rejected/` trace of the records it fetched (as
    // after any failed export).
    let data = || -> BTreeMap<String, Vec<u8>> {
        relative_files(copied.path())
            .into_iter()
            .filter(|f| f != "_lock.shard-00-of-02" && !f.starts_with("_rejected/"))
            .map(|f| (f.clone(), std::fs::read(copied.path().join(&f)).unwrap()))
            .collect()
    };
    let data_before = data();
    let out = export(&sim, copied.path(), &["--all-workflows", "--shard", "0/2"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_stderr_contains(&out, "holds a dataset written without `--shard` (`");
    assert_stderr_contains(&out, "/part-0.parquet`); this export (`--shard 0/2`)");
    assert!(
        data_before == data(),
        "the refused export changed the dataset"
    );
}

#[test]
fn bad_shard_values_are_one_line_errors() {
    let bad = |v: &str, why: &str| format!("error: invalid value '{v}' for '--shard <K/N>': {why}");
    let syntax = |v: &str| {
        format!(
            "`{v}` is not a shard like `0/4`: K/N with N from 1 to 1000 and K from 0 to N-1 (like `JOB_COMPLETION_INDEX`)"
        )
    };
    for (value, want) in [
        (
            "0/0",
            bad("0/0", "`0/0`: the shard count N must be between 1 and 1000"),
        ),
        (
            "3/2",
            bad(
                "3/2",
                "`3/2`: the shard index K must be below N (shards are numbered from 0 to 1)",
            ),
        ),
        (
            "4/4",
            bad(
                "4/4",
                "`4/4`: the shard index K must be below N (shards are numbered from 0 to 3)",
            ),
        ),
        (
            "0/1001",
            bad(
                "0/1001",
                "`0/1001`: the shard count N must be between 1 and 1000",
            ),
        ),
        ("a/b", bad("a/b", &syntax("a/b"))),
        ("-1/4", bad("-1/4", &syntax("-1/4"))),
        ("2", bad("2", &syntax("2"))),
    ] {
        let out = run(&["export", "--all-workflows", "--shard", value]);
        assert_usage_error(&out, &want, value);
    }
    let out = run_with_env(
        &["export", "--all-workflows"],
        &[("ORCHESTRA_API_KEY", KEY), ("ORCHESTRA_SHARD", "5/4")],
    );
    assert_usage_error(
        &out,
        &bad(
            "5/4",
            "`5/4`: the shard index K must be below N (shards are numbered from 0 to 3)",
        ),
        "ORCHESTRA_SHARD",
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("export.toml");
    std::fs::write(&config, "all_workflows = true\nshard = \"1/x\"\n").unwrap();
    let out = run(&["export", "--config", config.to_str().unwrap()]);
    assert_usage_error(
        &out,
        &format!(
            "error: invalid config file `{}`: line 2: `shard`: {}",
            config.display(),
            syntax("1/x")
        ),
        "config",
    );
    assert!(relative_files(dir.path()) == ["export.toml"]);
}
