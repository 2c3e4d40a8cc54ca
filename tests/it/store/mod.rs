//! Object storage output: exports to `s3://bucket/prefix` against a real S3-compatible server
//! (moto, from PyPI, in the venv `scripts/test` creates) on 127.0.0.1, read back through the
//! S3 API with the Arrow reader, pyarrow and Polars; re-runs, the lock lease, kills in the
//! middle of a commit, and the errors a user sees. Fenced writes (a writer whose lease lapsed
//! with a request in flight, conditional uploads in parts and deletes) are in [`fence`];
//! `verify` of a dataset on S3 in [`verify`].

mod delta;
mod fence;
mod proxy;
mod verify;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use orchestra_export::simulate::SimConfig;
use serde_json::Value;

use crate::support::*;

/// The secret key given to every export: it must never appear in anything they print.
const SECRET: &str = "s3cret-Vb7Qp2-never-printed";
/// A short lease, so that tests of killed and paused writers wait seconds, not a minute.
const TEST_LEASE_SECS: u64 = 6;

/// A moto S3 server on a free loopback port, stopped when dropped.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Moto {
    fn start() -> Self {
        let python = python();
        let probe = Command::new(&python)
            .args(["-c", "import moto.server, flask, werkzeug"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", python.display()));
        assert!(
            probe.status.success(),
            "`{}` has no `moto[server]`: run `scripts/test` (it installs tests/interop/requirements.txt into its venv) or set ORCHESTRA_EXPORT_PYTHON to a Python that has it\n{}",
            python.display(),
            stderr(&probe)
        );
        // The port is free when probed; another process may take it before moto binds, so a
        // server that exits early is started again on another port.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut child = Command::new(&python)
                .args([
                    "-m",
                    "moto.server",
                    "-H",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Self {
                        child,
                        endpoint: format!("http://127.0.0.1:{port}"),
                    };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("moto did not start on 127.0.0.1");
    }

    /// Creates a bucket (moto takes unsigned requests).
    fn create_bucket(&self, bucket: &str) {
        let authority = self.endpoint.trim_start_matches("http://");
        let mut stream = TcpStream::connect(authority).unwrap();
        write!(
            stream,
            "PUT /{bucket} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }

    /// The environment an export reads its store settings from.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "test-key-id".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET.to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".to_owned()),
            ("ORCHESTRA_LOCK_LEASE", format!("{TEST_LEASE_SECS}s")),
        ]
    }

    /// A client for reading the bucket back.
    fn bucket(&self, bucket: &str) -> Bucket {
        let store = s3_client(&self.endpoint, bucket);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Bucket { store, runtime }
    }
}

/// An S3 client of `bucket` at `endpoint` with the test key.
fn s3_client(endpoint: &str, bucket: &str) -> AmazonS3 {
    AmazonS3Builder::new()
        .with_endpoint(endpoint)
        .with_allow_http(true)
        .with_bucket_name(bucket)
        .with_region("us-east-1")
        .with_access_key_id("test-key-id")
        .with_secret_access_key(SECRET)
        .build()
        .unwrap()
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A bucket read through the S3 API, independently of the exporter.
struct Bucket {
    store: AmazonS3,
    runtime: tokio::runtime::Runtime,
}

impl Bucket {
    /// Every key below `prefix` with its ETag, sorted.
    fn objects(&self, prefix: &str) -> BTreeMap<String, String> {
        self.runtime.block_on(async {
            self.store
                .list(Some(&ObjectPath::from(prefix)))
                .map(|meta| {
                    let meta = meta.unwrap();
                    (meta.location.to_string(), meta.e_tag.unwrap_or_default())
                })
                .collect()
                .await
        })
    }

    fn keys(&self, prefix: &str) -> Vec<String> {
        self.objects(prefix).into_keys().collect()
    }

    /// The record in lock object `key`.
    fn lock_record(&self, key: &str) -> Value {
        let bytes = self.runtime.block_on(async {
            let got = self.store.get(&ObjectPath::from(key)).await;
            got.unwrap().bytes().await.unwrap()
        });
        serde_json::from_slice(&bytes).unwrap()
    }

    /// Asserts that lock object `key` exists and is marked released by its last holder.
    fn assert_released(&self, key: &str) {
        let record = self.lock_record(key);
        assert_eq!(record["released"], true, "{key}: {record:#}");
    }

    /// Downloads every object below `prefix` into a local folder, keeping the layout, so that
    /// the shared helpers can read the tables.
    fn download(&self, prefix: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for key in self.keys(prefix) {
            let relative = key.strip_prefix(&format!("{prefix}/")).unwrap();
            let target = dir.path().join(relative);
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            let bytes = self.runtime.block_on(async {
                let got = self.store.get(&ObjectPath::from(key.as_str())).await;
                got.unwrap().bytes().await.unwrap()
            });
            std::fs::write(target, bytes).unwrap();
        }
        dir
    }
}

/// The exporter with the test key and the store environment; other `AWS_*` variables of the
/// machine are removed.
fn command(moto: &Moto, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_orchestra-export"));
    cmd.args(args)
        .env_remove("ORCHESTRA_BASE_URL")
        .env_remove("RUST_LOG")
        .env("ORCHESTRA_API_KEY", KEY)
        .env("NO_COLOR", "1");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(name);
        }
    }
    for (name, value) in moto.env() {
        cmd.env(name, value);
    }
    cmd
}

fn export_args<'a>(sim_url: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["export", "--base-url", sim_url, "--out", out];
    args.extend_from_slice(extra);
    args
}

fn s3_export(moto: &Moto, sim: &Sim, out: &str, extra: &[&str]) -> Output {
    let url = sim.url();
    let out = command(moto, &export_args(&url, out, extra))
        .output()
        .unwrap();
    assert_no_secret(&out);
    out
}

fn spawn_s3_export(moto: &Moto, sim: &Sim, out: &str, extra: &[&str]) -> Child {
    let url = sim.url();
    command(moto, &export_args(&url, out, extra))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn assert_no_secret(out: &Output) {
    for text in [stdout(out), stderr(out)] {
        assert!(
            !text.contains(SECRET),
            "the secret key was printed:\n{text}"
        );
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([name, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop")
        .join(name)
}

#[test]
fn an_export_to_s3_reads_back_with_state_manifest_and_success_beside_the_data() {
    let moto = Moto::start();
    moto.create_bucket("lake");
    let sim = Sim::start(SimConfig {
        workflows: 3,
        runs_per_workflow: 400,
        ..SimConfig::default()
    });
    let out = s3_export(
        &moto,
        &sim,
        "s3://lake/orchestra/runs-history",
        &["--all-workflows"],
    );
    assert_ok(&out);
    assert!(
        stdout(&out).contains("committed to `s3://lake/orchestra/runs-history`"),
        "{}",
        stdout(&out)
    );

    let bucket = moto.bucket("lake");
    let prefix = "orchestra/runs-history";
    let keys = bucket.keys(prefix);
    let top: BTreeSet<&str> = keys
        .iter()
        .map(|k| k[prefix.len() + 1..].split('/').next().unwrap())
        .collect();
    assert_eq!(
        top,
        BTreeSet::from([
            "_SUCCESS",
            "_lock",
            "_manifest",
            "_state",
            "node_outputs",
            "run_inputs",
            "runs",
            "workflows"
        ]),
        "{keys:#?}"
    );
    for id in sim.ids() {
        assert!(
            keys.contains(&format!("{prefix}/_state/{id}.json")),
            "{keys:#?}"
        );
    }
    // One object per partition, named as on local disk.
    assert!(
        keys.iter()
            .filter(|k| k.contains("/date="))
            .all(|k| k.ends_with("/part-0.parquet")),
        "{keys:#?}"
    );

    let local = bucket.download(prefix);
    for id in sim.ids() {
        assert_dataset_matches(local.path(), &id, &sim.server.records(&id), 0);
    }
    assert_unique_keys(local.path());
    let manifests: Vec<_> = std::fs::read_dir(local.path().join("_manifest"))
        .unwrap()
        .collect();
    assert_eq!(manifests.len(), 1);
    let success: Value =
        serde_json::from_slice(&std::fs::read(local.path().join("_SUCCESS")).unwrap()).unwrap();
    assert_eq!(success["status"], "ok");
    assert_eq!(success["tables"]["runs"]["rows_new"], 1200);

    // Real readers, straight from the S3 endpoint.
    let read = Command::new(python())
        .arg(script("read_s3.py"))
        .args([&moto.endpoint, "lake/orchestra/runs-history"])
        .env_remove("AWS_CA_BUNDLE")
        .env("AWS_ACCESS_KEY_ID", "test-key-id")
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .output()
        .unwrap();
    assert!(read.status.success(), "{}", stderr(&read));
    let counts: Value = serde_json::from_str(&stdout(&read)).unwrap();
    let (_, runs) = read_table(local.path(), "runs");
    let (_, nodes) = read_table(local.path(), "node_outputs");
    let (_, inputs) = read_table(local.path(), "run_inputs");
    for (table, rows) in [
        ("runs", runs.len()),
        ("node_outputs", nodes.len()),
        ("run_inputs", inputs.len()),
    ] {
        for reader in ["pyarrow", "polars"] {
            assert_eq!(
                counts[table][format!("{reader}_rows")],
                rows,
                "{table} {counts}"
            );
            assert_eq!(
                counts[table][format!("{reader}_distinct_keys")],
                rows,
                "{table} {counts}"
            );
        }
    }

    // The report reads the dataset from the store too.
    let reports = tempfile::tempdir().unwrap();
    let report = command(
        &moto,
        &[
            "report",
            "--data",
            "s3://lake/orchestra/runs-history",
            "--out",
            reports.path().to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    assert_ok(&report);
    assert!(
        stdout(&report).starts_with("report: 1200 runs in "),
        "{}",
        stdout(&report)
    );
    let summary = std::fs::read_to_string(reports.path().join("summary.md")).unwrap();
    assert!(
        summary.contains("- **data**: s3://lake/orchestra/runs-history\n")
            && summary.contains("**1,200 runs · "),
        "{summary}"
    );
}

#[test]
fn a_rerun_on_s3_fetches_only_new_runs_and_finishes_running_ones() {
    let moto = Moto::start();
    moto.create_bucket("lake");
    let sim = Sim::start(SimConfig {
        workflows: 1,
        runs_per_workflow: 2000,
        ..SimConfig::default()
    });
    let id = sim.ids()[0].clone();
    let out_url = "s3://lake/x";
    assert_ok(&s3_export(&moto, &sim, out_url, &["--workflow", &id]));
    let bucket = moto.bucket("lake");
    let local = bucket.download("x");
    let (_, runs) = read_table(local.path(), "runs");
    let running: Vec<String> = runs
        .iter()
        .filter(|r| r["end_time"] == Cell::Null)
        .map(|r| r["run_id"].text().unwrap().to_owned())
        .collect();
    assert_eq!(running.len(), 2);

    sim.server.add_runs(0, 50);
    let before = sim.paths().len();
    let out = s3_export(&moto, &sim, out_url, &["--workflow", &id]);
    assert_ok(&out);
    let requests = sim.paths().len() - before;
    assert!(requests <= 3, "{:?}", &sim.paths()[before..]);
    assert!(stdout(&out).contains("(incremental)"), "{}", stdout(&out));
    let summary = stdout(&out);
    let runs_line = summary
        .lines()
        .find(|l| l.trim_start().starts_with("runs "))
        .unwrap();
    assert!(runs_line.contains(" 50 new,"), "{summary}");

    let local = bucket.download("x");
    assert_dataset_matches(local.path(), &id, &sim.server.records(&id), 0);
    assert_unique_keys(local.path());
    assert_finished(local.path(), &running);
    let keys = bucket.keys("x");
    assert_eq!(
        keys.iter()
            .filter(|k| k.starts_with("x/_manifest/"))
            .count(),
        2
    );
    assert!(
        !keys.iter().any(|k| k.starts_with("x/_staging/")),
        "{keys:#?}"
    );
    bucket.assert_released("x/_lock");
}

#[test]
fn a_second_writer_is_refused_while_the_first_holds_the_lock() {
    let moto = Moto::start();
    moto.create_bucket("lake");
    let sim = Sim::start(SimConfig {
        workflows: 1,
        runs_per_workflow: 3000,
        latency: Duration::from_millis(40),
        ..SimConfig::default()
    });
    let out_url = "s3://lake/shared";
    let first = spawn_s3_export(
        &moto,
        &sim,
        out_url,
        &["--all-workflows", "--concurrency", "1"],
    );
    let bucket = moto.bucket("lake");
    let deadline = Instant::now() + Duration::from_secs(30);
    while sim.server.requests().len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(bucket.keys("shared"), ["shared/_lock"]);

    let second = s3_export(&moto, &sim, out_url, &["--all-workflows"]);
    assert_eq!(second.status.code(), Some(6), "{}", stderr(&second));
    let err = stderr(&second);
    assert!(
        err.contains("`s3://lake/shared/_lock` is locked by another export (pid "),
        "{err}"
    );
    assert!(err.contains(&format!("pid {} on ", first.id())), "{err}");
    assert!(err.contains("its lease runs until "), "{err}");
    assert!(
        err.contains("hint: wait for it to finish; if it was killed"),
        "{err}"
    );

    // The first finishes undisturbed and releases the lock (the object stays, marked released).
    let first = first.wait_with_output().unwrap();
    assert_ok(&first);
    bucket.assert_released("shared/_lock");
    assert_ok(&s3_export(&moto, &sim, out_url, &["--all-workflows"]));
    let id = sim.ids()[0].clone();
    let local = bucket.download("shared");
    assert_dataset_matches(local.path(), &id, &sim.server.records(&id), 0);
}

#[test]
fn killing_an_export_in_the_middle_of_its_commit_then_rerunning_leaves_exactly_the_runs() {
    let moto = Moto::start();
    moto.create_bucket("lake");
    let sim = Sim::start(SimConfig {
        workflows: 3,
        runs_per_workflow: 1500,
        ..SimConfig::default()
    });
    let out_url = "s3://lake/k";
    let bucket = moto.bucket("lake");
    let args = ["--all-workflows", "--page-size", "50", "--concurrency", "4"];
    for round in 0..2 {
        if round == 1 {
            sim.server.add_runs(0, 25);
            sim.server.add_runs(2, 40);
            // The killed holder's lease runs out; until then the lock refuses others.
            std::thread::sleep(Duration::from_secs(TEST_LEASE_SECS + 1));
        }
        let before: BTreeMap<String, String> = bucket
            .objects("k/runs")
            .into_iter()
            .chain(bucket.objects("k/node_outputs"))
            .collect();
        let child = spawn_s3_export(&moto, &sim, out_url, &args);
        // The commit has begun once a partition object is new or replaced; it has many more
        // partitions to go.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let now: BTreeMap<String, String> = bucket
                .objects("k/runs")
                .into_iter()
                .chain(bucket.objects("k/node_outputs"))
                .collect();
            if now != before {
                break;
            }
            assert!(Instant::now() < deadline, "round {round}: no commit began");
            std::thread::sleep(Duration::from_millis(20));
        }
        signal(&child, "-KILL");
        let killed = child.wait_with_output().unwrap();
        assert_eq!(killed.status.code(), None, "{}", stderr(&killed));
        if round == 1 {
            // Straight after a kill, the lease still holds the lock.
            let refused = s3_export(&moto, &sim, out_url, &args);
            assert_eq!(refused.status.code(), Some(6), "{}", stderr(&refused));
            assert_stderr_contains(&refused, "its lease runs until");
        }

        // Whatever the moment: every object reads, no key is stored twice, `_SUCCESS` is gone.
        let local = bucket.download("k");
        assert_unique_keys(local.path());
        let keys = bucket.keys("k");
        assert!(!keys.contains(&"k/_SUCCESS".to_owned()), "{keys:#?}");
        // The killed holder never released its lock.
        assert_eq!(bucket.lock_record("k/_lock")["released"], false);
        // Killed in the middle of the commit: staged objects were still waiting.
        assert!(
            keys.iter().any(|k| k.starts_with("k/_staging/")),
            "{keys:#?}"
        );
    }

    std::thread::sleep(Duration::from_secs(TEST_LEASE_SECS + 1));
    let out = s3_export(&moto, &sim, out_url, &args);
    assert_ok(&out);
    let local = bucket.download("k");
    for id in sim.ids() {
        assert_dataset_matches(local.path(), &id, &sim.server.records(&id), 0);
    }
    assert_unique_keys(local.path());
    let keys = bucket.keys("k");
    assert!(keys.contains(&"k/_SUCCESS".to_owned()), "{keys:#?}");
    let leftovers: Vec<_> = keys
        .iter()
        .filter(|k| k.starts_with("k/_staging"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:#?}");
    bucket.assert_released("k/_lock");
}

#[test]
fn a_paused_writer_whose_lease_was_taken_over_writes_nothing_more() {
    let moto = Moto::start();
    moto.create_bucket("lake");
    let sim = Sim::start(SimConfig {
        workflows: 2,
        runs_per_workflow: 1500,
        latency: Duration::from_millis(30),
        ..SimConfig::default()
    });
    let out_url = "s3://lake/p";
    let bucket = moto.bucket("lake");
    let first = spawn_s3_export(
        &moto,
        &sim,
        out_url,
        &["--all-workflows", "--concurrency", "1"],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while sim.server.requests().len() < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    // Paused (as a VM or a container can be) for longer than its lease.
    signal(&first, "-STOP");
    std::thread::sleep(Duration::from_secs(TEST_LEASE_SECS + 1));
    let second = s3_export(&moto, &sim, out_url, &["--all-workflows"]);
    assert_ok(&second);
    let after_second = bucket.objects("p");

    signal(&first, "-CONT");
    let first = first.wait_with_output().unwrap();
    assert_eq!(first.status.code(), Some(6), "{}", stderr(&first));
    let err = stderr(&first);
    assert!(
        err.contains("error: lost the lock `s3://lake/p/_lock`: "),
        "{err}"
    );
    assert!(
        err.contains("stopped before changing more objects"),
        "{err}"
    );
    assert_eq!(
        bucket.objects("p"),
        after_second,
        "the paused writer changed objects"
    );
    let local = bucket.download("p");
    for id in sim.ids() {
        assert_dataset_matches(local.path(), &id, &sim.server.records(&id), 0);
    }
}

#[test]
fn store_errors_are_one_line_naming_the_url_with_a_hint_and_no_secret() {
    let moto = Moto::start();
    moto.create_bucket("lake");
    let sim = Sim::start(SimConfig {
        workflows: 1,
        runs_per_workflow: 10,
        ..SimConfig::default()
    });
    let error_lines = |out: &Output| -> Vec<String> {
        stderr(out)
            .lines()
            .filter(|l| !l.contains(" INFO "))
            .map(str::to_owned)
            .collect()
    };

    let out = s3_export(&moto, &sim, "s3://no-such-bucket/x", &["--all-workflows"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let lines = error_lines(&out);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(
        // The first request: the layout check lists the root before the lock is taken.
        lines[0].starts_with("error: cannot list `s3://no-such-bucket/x`: "),
        "{lines:#?}"
    );
    assert!(lines[0].contains("NoSuchBucket"), "{lines:#?}");
    assert_eq!(
        lines[1],
        "hint: the bucket `no-such-bucket` does not exist: create it, or check the bucket in `--out` and the endpoint"
    );

    // Nothing listens on a port just freed.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = sim.url();
    let out = command(
        &moto,
        &export_args(&url, "s3://lake/x", &["--all-workflows"]),
    )
    .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{closed}"))
    .output()
    .unwrap();
    assert_no_secret(&out);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let lines = error_lines(&out);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(
        lines[0].starts_with("error: cannot list `s3://lake/x`: "),
        "{lines:#?}"
    );
    assert!(lines[0].contains("Connection refused"), "{lines:#?}");
    assert!(
        lines[1].starts_with("hint: the object store did not answer: check `AWS_ENDPOINT_URL`"),
        "{lines:#?}"
    );

    // A store without conditional writes cannot hold the lock: refused, not silently unsafe.
    let out = command(
        &moto,
        &export_args(&url, "s3://lake/x", &["--all-workflows"]),
    )
    .env("AWS_CONDITIONAL_PUT", "disabled")
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert_stderr_contains(
        &out,
        "error: `s3://lake/x` does not support conditional writes",
    );
    assert!(moto.bucket("lake").keys("x").is_empty());

    // URLs that are not a store: usage errors before anything is fetched.
    for (out_url, message) in [
        (
            "http://lake/x",
            "error: invalid `--out` `http://lake/x`: the scheme `http` is not supported",
        ),
        ("s3:///x", "no bucket"),
        (
            "s3://key:pw-Zx9@lake/x",
            "credentials and options come from the environment",
        ),
    ] {
        let out = s3_export(&moto, &sim, out_url, &["--all-workflows"]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert_stderr_contains(&out, message);
        assert!(!stderr(&out).contains("pw-Zx9"), "{}", stderr(&out));
    }
    assert!(sim.paths().is_empty(), "{:?}", sim.paths());
}

#[test]
fn a_file_url_writes_the_local_folder() {
    let sim = Sim::start(SimConfig {
        workflows: 1,
        runs_per_workflow: 120,
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let out = format!("file://{}", dir.path().join("lake").display());
    let url = sim.url();
    assert_ok(&run(&export_args(&url, &out, &["--all-workflows"])));
    let id = sim.ids()[0].clone();
    let local = dir.path().join("lake");
    assert_dataset_matches(&local, &id, &sim.server.records(&id), 0);
    assert!(local.join("_SUCCESS").exists());
}

#[test]
fn two_shards_writing_one_s3_prefix_at_once_store_exactly_the_runs_of_one_export() {
    let moto = Moto::start();
    moto.create_bucket("lake");
    let sim = Sim::start(SimConfig {
        workflows: 8,
        runs_per_workflow: 400,
        latency: Duration::from_millis(25),
        ..SimConfig::default()
    });
    let bucket = moto.bucket("lake");
    let args = ["--all-workflows", "--page-size", "25"];
    assert_ok(&s3_export(&moto, &sim, "s3://lake/single", &args));

    let children: Vec<Child> = (0..2)
        .map(|k| {
            let shard = format!("{k}/2");
            let mut extra = args.to_vec();
            extra.extend(["--shard", shard.as_str()]);
            spawn_s3_export(&moto, &sim, "s3://lake/sharded", &extra)
        })
        .collect();
    let pids: Vec<u32> = children.iter().map(Child::id).collect();
    let mut kept = 0;
    for (k, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert_no_secret(&out);
        assert_ok(&out);
        let line = stdout(&out)
            .lines()
            .find(|l| l.contains(&format!("shard {k}/2: ")))
            .unwrap_or_else(|| panic!("{}", stdout(&out)))
            .to_owned();
        assert!(line.contains(" of 8 workflows are this shard's"), "{line}");
        kept += line
            .split(": ")
            .nth(1)
            .and_then(|l| l.split(' ').next())
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or_else(|| panic!("{line}"));
    }
    assert_eq!(kept, 8);

    // Each shard held its own lease object, at the same time as the other: both manifests'
    // intervals overlap, both lock objects exist, each named by its shard and released by that
    // shard's process; there is no unsharded `_lock`.
    let keys = bucket.keys("sharded");
    let manifests: Vec<Value> = (0..2)
        .map(|k| {
            let tag = format!("shard-0{k}-of-02");
            let key = keys
                .iter()
                .find(|key| {
                    key.starts_with("sharded/_manifest/") && key.ends_with(&format!("-{tag}.json"))
                })
                .unwrap_or_else(|| panic!("no manifest of {tag}: {keys:#?}"));
            let bytes = bucket.runtime.block_on(async {
                let got = bucket.store.get(&ObjectPath::from(key.as_str())).await;
                got.unwrap().bytes().await.unwrap()
            });
            serde_json::from_slice(&bytes).unwrap()
        })
        .collect();
    assert_exports_overlapped(&manifests);
    let root: Vec<&str> = keys
        .iter()
        .map(|k| &k["sharded/".len()..])
        .filter(|k| !k.contains('/'))
        .collect();
    assert_eq!(
        root,
        [
            "_SUCCESS.shard-00-of-02",
            "_SUCCESS.shard-01-of-02",
            "_lock.shard-00-of-02",
            "_lock.shard-01-of-02"
        ]
    );
    for (k, manifest) in manifests.iter().enumerate() {
        let key = format!("sharded/_lock.shard-0{k}-of-02");
        bucket.assert_released(&key);
        let holder = bucket.lock_record(&key)["holder"]
            .as_str()
            .unwrap()
            .to_owned();
        let export_id = manifest["export_id"].as_str().unwrap();
        assert!(
            holder.starts_with(&format!("pid {} on ", pids[k]))
                && holder.contains(&format!(", export {export_id} started ")),
            "{key}: {holder}"
        );
    }
    assert!(
        !keys.iter().any(|k| k.starts_with("sharded/_staging")),
        "{keys:#?}"
    );

    // Exactly the runs of the unsharded export, each once, in the shards' own files.
    let (single, sharded) = (bucket.download("single"), bucket.download("sharded"));
    for table in ["runs", "node_outputs", "run_inputs"] {
        let rows = |out: &Path| {
            let mut rows = read_table(out, table).1;
            for row in &mut rows {
                row.remove("extracted_at");
            }
            rows.sort();
            rows
        };
        let (one, two) = (rows(single.path()), rows(sharded.path()));
        assert_eq!(one.len(), two.len(), "{table} row count");
        assert!(one == two, "{table} rows differ");
    }
    assert_unique_keys(sharded.path());
    for id in sim.ids() {
        assert_dataset_matches(sharded.path(), &id, &sim.server.records(&id), 0);
    }
    for key in keys.iter().filter(|k| k.ends_with(".parquet")) {
        let name = key.rsplit('/').next().unwrap();
        assert!(
            ["shard-00-of-02.parquet", "shard-01-of-02.parquet"].contains(&name),
            "{key}"
        );
    }

    // The released lock objects still tell the layout: an unsharded export is refused before it
    // writes anything.
    let refused = s3_export(&moto, &sim, "s3://lake/sharded", &args);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert_stderr_contains(
        &refused,
        "error: `s3://lake/sharded` holds a dataset sharded 2 ways (`_lock.shard-00-of-02`); this export (without `--shard`) would store runs twice",
    );
    assert_eq!(bucket.keys("sharded"), keys);
}
