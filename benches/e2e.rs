//! End-to-end benchmark: the export against the network floor, in one run.
//!
//! `cargo bench --bench e2e` (options after `--`: `--runs N`, `--workflows N`, `--page-size N`,
//! `--concurrency N`, `--repeat N`, `--latency-ms N`, `--skip-cpu`, `--skip-python` (the Python
//! route holds every row in memory: about 8 GB per million runs), `--exporter PATH` to measure
//! another build, `--table-format delta` to export Delta tables). It starts the simulator in this process with pre-rendered pages (each page is
//! rendered once, then served as stored bytes, so the server costs next to no CPU), exports once
//! to warm it and to learn the URLs the exporter asks for, then measures, `--repeat` times each:
//! - **download floor**: the same URLs fetched with the same concurrency by a bare reqwest
//!   client that only reads the bodies (and by `curl --parallel`, when curl is installed);
//! - **export**: the release binary exporting everything into a new folder, as a child process
//!   under `/usr/bin/time` for its wall time and peak RSS;
//! - **Python route** (up to 3 times, when `ORCHESTRA_EXPORT_PYTHON` or `.venv` has pyarrow):
//!   `benches/pyarrow_route.py`, the hand-written urllib + json + pyarrow export of the same URLs;
//! - **CPU floor** (one core, in this process, on up to 400 of the pages): `serde_json` merely
//!   parsing the bytes, against flattening them, and flattening plus Parquet encoding in memory.
//!
//! It prints medians with min–max and the ratios the performance issue sets targets for.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use orchestra_export::dataset::writer_properties;
use orchestra_export::flatten::{PageContext, flatten_page};
use orchestra_export::privacy::{Policy, PolicyRules};
use orchestra_export::simulate::{DataProfile, SimConfig, SimServer};
use parquet::arrow::ArrowWriter;

const KEY: &str = "bench-key";

/// The exporter's allocator, so the CPU floor measures flattening as the exporter runs it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Options {
    runs: u64,
    workflows: usize,
    page_size: u32,
    concurrency: usize,
    repeat: usize,
    latency_ms: u64,
    cpu: bool,
    python: bool,
    duckdb: bool,
    /// The simulator's data profile (`--data llm|small`).
    data: DataProfile,
    /// Another exporter binary to measure (an older build, for the optimisation history).
    exporter: Option<PathBuf>,
    /// `--mask` detectors: each repeat also exports with them, right after the plain export,
    /// and the CPU floor flattens under them too.
    mask: Option<String>,
    /// `--table-format` of every export (`hive` when not given).
    table_format: Option<String>,
}

fn options() -> Options {
    let mut o = Options {
        runs: 200_000,
        workflows: 100,
        page_size: 100,
        concurrency: 16,
        repeat: 5,
        latency_ms: 0,
        cpu: true,
        python: true,
        duckdb: true,
        data: DataProfile::Llm,
        exporter: None,
        mask: None,
        table_format: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = || {
            args.get(i + 1)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("{} needs a number", args[i]))
        };
        match args[i].as_str() {
            "--runs" => o.runs = value(),
            "--workflows" => o.workflows = value() as usize,
            "--page-size" => o.page_size = value() as u32,
            "--concurrency" => o.concurrency = value() as usize,
            "--repeat" => o.repeat = value() as usize,
            "--latency-ms" => o.latency_ms = value(),
            "--exporter" => o.exporter = args.get(i + 1).map(PathBuf::from),
            "--mask" => o.mask = args.get(i + 1).cloned(),
            "--table-format" => o.table_format = args.get(i + 1).cloned(),
            "--data" => {
                o.data = args
                    .get(i + 1)
                    .map(|v| v.parse().unwrap_or_else(|e| panic!("--data: {e}")))
                    .expect("--data needs llm or small")
            }
            "--skip-cpu" => {
                o.cpu = false;
                i += 1;
                continue;
            }
            "--skip-python" => {
                o.python = false;
                i += 1;
                continue;
            }
            "--skip-duckdb" => {
                o.duckdb = false;
                i += 1;
                continue;
            }
            // `cargo bench` passes `--bench`; ignore what is not ours.
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    o
}

/// Median, min and max.
fn stats(mut xs: Vec<f64>) -> (f64, f64, f64) {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    let median = if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    };
    (median, xs[0], xs[n - 1])
}

fn show(xs: &[f64], unit: &str) -> String {
    let (m, lo, hi) = stats(xs.to_vec());
    format!("{m:.2} {unit} ({lo:.2}–{hi:.2})")
}

/// What `/usr/bin/time` saw of one child process.
#[derive(Debug, Clone, Copy)]
struct Timed {
    wall: f64,
    rss_mb: f64,
    /// User plus system CPU seconds.
    cpu: f64,
}

/// Runs `command` under `/usr/bin/time`; panics with its output when it fails. Returns the
/// measure and the child's stdout and stderr.
fn timed(command: &mut Command, what: &str) -> (Timed, String) {
    let mut timed = Command::new("/usr/bin/time");
    timed
        .args(["-f", "BENCH %e %M %U %S"])
        .arg(command.get_program())
        .args(command.get_args());
    for (key, value) in command.get_envs() {
        if let Some(value) = value {
            timed.env(key, value);
        }
    }
    let output = timed.output().expect("/usr/bin/time runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{what} failed:\n{text}");
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with("BENCH "))
        .expect("/usr/bin/time output");
    let f: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap())
        .collect();
    let measure = Timed {
        wall: f[0],
        rss_mb: f[1] / 1024.0,
        cpu: f[2] + f[3],
    };
    (measure, text)
}

/// One export as a child process (masking `mask` when given).
fn export_once(bin: &Path, base_url: &str, out: &Path, o: &Options, mask: Option<&str>) -> Timed {
    let mut command = Command::new(bin);
    command.arg("export");
    if let Some(mask) = mask {
        command.args(["--mask", mask]);
    }
    if let Some(format) = &o.table_format {
        command.args(["--table-format", format]);
    }
    command
        .args(["--base-url", base_url, "--all-workflows", "--no-progress"])
        .args(["--page-size", &o.page_size.to_string()])
        .args(["--concurrency", &o.concurrency.to_string()])
        .arg("--out")
        .arg(out)
        .env("ORCHESTRA_API_KEY", KEY)
        .env("RUST_LOG", "error");
    timed(&mut command, "export").0
}

/// Fetches every URL with `concurrency` in flight and reads each body whole; keeps the bodies
/// of the first `keep` URLs. Returns (seconds, bytes received, kept bodies).
async fn download(urls: &[String], concurrency: usize, keep: usize) -> (f64, u64, Vec<Vec<u8>>) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    let auth = format!("Bearer {KEY}");
    let started = Instant::now();
    let bodies: Vec<(usize, u64, Option<Vec<u8>>)> =
        futures_util::stream::iter(urls.iter().enumerate())
            .map(|(i, url)| {
                let request = client.get(url).header("authorization", &auth);
                async move {
                    let body = request.send().await.unwrap().bytes().await.unwrap();
                    (i, body.len() as u64, (i < keep).then(|| body.to_vec()))
                }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
    let elapsed = started.elapsed().as_secs_f64();
    let bytes = bodies.iter().map(|(_, n, _)| n).sum();
    let mut kept: Vec<(usize, Vec<u8>)> = bodies
        .into_iter()
        .filter_map(|(i, _, body)| body.map(|b| (i, b)))
        .collect();
    kept.sort_by_key(|(i, _)| *i);
    (elapsed, bytes, kept.into_iter().map(|(_, b)| b).collect())
}

/// `curl --parallel` over the same URLs, bodies to /dev/null; `None` without curl.
fn curl(urls: &[String], concurrency: usize, dir: &Path) -> Option<f64> {
    let config = dir.join("curl.txt");
    let mut text = format!("header = \"Authorization: Bearer {KEY}\"\n");
    for url in urls {
        text.push_str(&format!("url = \"{url}\"\noutput = \"/dev/null\"\n"));
    }
    std::fs::write(&config, text).unwrap();
    let started = Instant::now();
    let status = Command::new("curl")
        .args([
            "--parallel",
            "--parallel-max",
            &concurrency.to_string(),
            "--silent",
            "--no-progress-meter",
            "-K",
        ])
        .arg(&config)
        .status()
        .ok()?;
    status.success().then(|| started.elapsed().as_secs_f64())
}

/// One core: seconds to merely parse `pages` with serde_json, to flatten them under `policy`,
/// and to flatten them and encode the rows to Parquet in memory.
fn cpu_floor(pages: &[Vec<u8>], policy: &Policy) -> (f64, f64, f64) {
    let ctx = |i: usize| PageContext {
        workflow_id: "bench",
        offset: i as u64,
        extracted_at_us: 0,
        policy,
    };
    let started = Instant::now();
    for page in pages {
        let value: serde_json::Value = serde_json::from_slice(page).unwrap();
        std::hint::black_box(value);
    }
    let parse = started.elapsed().as_secs_f64();
    let started = Instant::now();
    for (i, page) in pages.iter().enumerate() {
        std::hint::black_box(flatten_page(page, ctx(i)).unwrap());
    }
    let flatten_only = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let props = writer_properties();
    let mut writers: Option<[ArrowWriter<Vec<u8>>; 3]> = None;
    for (i, page) in pages.iter().enumerate() {
        let flat = flatten_page(page, ctx(i)).unwrap();
        for part in &flat.partitions {
            let w = writers.get_or_insert_with(|| {
                let open = |b: &arrow::array::RecordBatch| {
                    ArrowWriter::try_new(Vec::new(), b.schema(), Some(props.clone())).unwrap()
                };
                [
                    open(&part.runs),
                    open(&part.node_outputs),
                    open(&part.run_inputs),
                ]
            });
            w[0].write(&part.runs).unwrap();
            w[1].write(&part.node_outputs).unwrap();
            w[2].write(&part.run_inputs).unwrap();
        }
    }
    for w in writers.into_iter().flatten() {
        std::hint::black_box(w.into_inner().unwrap());
    }
    (parse, flatten_only, started.elapsed().as_secs_f64())
}

/// The Python with pyarrow: `ORCHESTRA_EXPORT_PYTHON`, else the repo's `.venv`.
fn python() -> Option<PathBuf> {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    std::env::var_os("ORCHESTRA_EXPORT_PYTHON")
        .map(PathBuf::from)
        .or_else(|| venv.exists().then_some(venv))
}

/// The hand-written Python route (`benches/pyarrow_route.py`) over the same URLs: its measure
/// and the Parquet bytes it wrote.
fn pyarrow_route(python: &Path, urls: &[String], dir: &Path) -> (Timed, u64) {
    let list = dir.join("urls.txt");
    std::fs::write(&list, urls.join("\n")).unwrap();
    let out = dir.join("pyarrow");
    std::fs::create_dir_all(&out).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/pyarrow_route.py");
    let mut command = Command::new(python);
    command.arg(script).arg(&list).arg(KEY).arg(&out);
    let (measure, text) = timed(&mut command, "the Python route");
    let _ = std::fs::remove_dir_all(&out);
    (measure, tagged_field(&text, "PYARROW", 2) as u64)
}

/// The DuckDB route: `curl --parallel` downloads the same pages to files, then
/// `benches/duckdb_route.py` reads them with `read_json` and writes the same tables as zstd
/// Parquet. The measure adds both steps' wall and CPU time; RSS is the larger peak.
fn duckdb_route(python: &Path, urls: &[String], concurrency: usize, dir: &Path) -> (Timed, u64) {
    let pages = dir.join("pages");
    let out = dir.join("duckdb");
    let _ = std::fs::remove_dir_all(&pages);
    std::fs::create_dir_all(&pages).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    let config = dir.join("curl-files.txt");
    let mut text = format!("header = \"Authorization: Bearer {KEY}\"\n");
    for url in urls.iter().filter(|u| u.contains("/runs?")) {
        let workflow = url
            .split("/workflows/")
            .nth(1)
            .unwrap()
            .split('/')
            .next()
            .unwrap();
        let offset = url
            .split("offset=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap();
        let file = pages.join(format!("{workflow}__{offset}.json"));
        text.push_str(&format!(
            "url = \"{url}\"\noutput = \"{}\"\n",
            file.display()
        ));
    }
    std::fs::write(&config, text).unwrap();
    let mut curl = Command::new("curl");
    curl.args(["--parallel", "--parallel-max", &concurrency.to_string()])
        .args(["--silent", "--fail", "-K"])
        .arg(&config);
    let (download, _) = timed(&mut curl, "curl to disk");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/duckdb_route.py");
    let mut command = Command::new(python);
    command.arg(script).arg(&pages).arg(&out);
    let (convert, text) = timed(&mut command, "the DuckDB route");
    let _ = std::fs::remove_dir_all(&pages);
    let _ = std::fs::remove_dir_all(&out);
    let measure = Timed {
        wall: download.wall + convert.wall,
        rss_mb: download.rss_mb.max(convert.rss_mb),
        cpu: download.cpu + convert.cpu,
    };
    (measure, tagged_field(&text, "DUCKDB", 2) as u64)
}

/// Field `i` (whitespace-separated) of the line of `text` starting with `tag`.
fn tagged_field(text: &str, tag: &str, i: usize) -> f64 {
    let line = text.lines().find(|l| l.starts_with(tag)).expect(tag);
    line.split_whitespace().nth(i).unwrap().parse().unwrap()
}

/// Bytes of every file below `dir`.
/// Parquet bytes of the three run tables below `dir` (what the Python route writes too).
fn size_of(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack: Vec<_> = ["runs", "node_outputs", "run_inputs"]
        .iter()
        .map(|t| dir.join(t))
        .filter(|d| d.is_dir())
        .collect();
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                total += std::fs::metadata(&p).unwrap().len();
            }
        }
    }
    total
}

fn main() {
    let o = options();
    let bin = o
        .exporter
        .clone()
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_orchestra-export")));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let per_workflow = o.runs / o.workflows as u64;
    let config = SimConfig {
        workflows: o.workflows,
        runs_per_workflow: per_workflow,
        api_key: KEY.to_owned(),
        prerendered: true,
        latency: Duration::from_millis(o.latency_ms),
        profile: o.data,
        ..SimConfig::default()
    };
    let sim = runtime
        .block_on(SimServer::start(config, "127.0.0.1:0".parse().unwrap()))
        .unwrap();
    let base = sim.base_url();
    let work = tempfile::tempdir().unwrap();
    let runs = per_workflow * o.workflows as u64;
    println!(
        "e2e: `{}` data, {} workflows × {per_workflow} runs = {runs} runs, page size {}, concurrency {}, latency {} ms, {} repeats",
        o.data.name(),
        o.workflows,
        o.page_size,
        o.concurrency,
        o.latency_ms,
        o.repeat
    );
    let warm_out = work.path().join("warm");
    let warm = export_once(&bin, &base, &warm_out, &o, None);
    let parquet_bytes = size_of(&warm_out);
    let _ = std::fs::remove_dir_all(&warm_out);
    let origin = format!("http://{}", sim.addr());
    let urls: Vec<String> = sim
        .requests()
        .iter()
        .map(|r| format!("{origin}{}", r.path_and_query))
        .collect();
    println!(
        "warm-up export: {:.2} s, {} requests",
        warm.wall,
        urls.len()
    );

    let mut floor = Vec::new();
    let mut curl_floor = Vec::new();
    let mut exports = Vec::new();
    let mut masked = Vec::new();
    let mut received = 0;
    let mut sample = Vec::new();
    for i in 0..o.repeat {
        let keep = if i == 0 && o.cpu { 400 } else { 0 };
        let (secs, bytes, kept) = runtime.block_on(download(&urls, o.concurrency, keep));
        floor.push(secs);
        received = bytes;
        if i == 0 {
            sample = kept;
        }
        if let Some(secs) = curl(&urls, o.concurrency, work.path()) {
            curl_floor.push(secs);
        }
        let out = work.path().join(format!("run-{i}"));
        exports.push(export_once(&bin, &base, &out, &o, None));
        let _ = std::fs::remove_dir_all(&out);
        if let Some(mask) = &o.mask {
            masked.push(export_once(&bin, &base, &out, &o, Some(mask)));
            let _ = std::fs::remove_dir_all(&out);
        }
    }
    let (floor_median, ..) = stats(floor.clone());
    let report = Report {
        runs,
        received,
        floor: floor_median,
    };
    println!();
    println!("| measure | median (min–max) of {} |", o.repeat);
    println!("|---|---|");
    println!(
        "| download floor, reqwest ({:.0} MB in {} requests, {:.0} bytes a run) | {} |",
        received as f64 / 1e6,
        urls.len(),
        received as f64 / runs as f64,
        show(&floor, "s")
    );
    if !curl_floor.is_empty() {
        println!(
            "| download floor, curl --parallel | {} |",
            show(&curl_floor, "s")
        );
    }
    report.route(
        "export (release binary, child process)",
        &exports,
        parquet_bytes,
    );
    if let Some(mask) = &o.mask {
        report.route(
            &format!("export with `--mask {mask}`"),
            &masked,
            parquet_bytes,
        );
        let cpu = |t: &[Timed]| stats(t.iter().map(|t| t.cpu).collect()).0;
        println!(
            "| CPU with `--mask {mask}` ÷ without (medians) | {:.3}× |",
            cpu(&masked) / cpu(&exports)
        );
    }
    let export_median = stats(exports.iter().map(|t| t.wall).collect()).0;
    println!("| export runs/s | {:.0} |", runs as f64 / export_median);
    let python = python().filter(|_| o.latency_ms == 0);
    if let Some(python) = python.as_ref().filter(|_| o.python) {
        let results: Vec<(Timed, u64)> = (0..o.repeat.min(3))
            .map(|_| pyarrow_route(python, &urls, work.path()))
            .collect();
        let measures: Vec<Timed> = results.iter().map(|r| r.0).collect();
        report.route(
            "Python route (urllib × 16, json, pyarrow zstd)",
            &measures,
            results[0].1,
        );
    }
    if let Some(python) = python.as_ref().filter(|_| o.duckdb) {
        let results: Vec<(Timed, u64)> = (0..o.repeat.min(3))
            .map(|_| duckdb_route(python, &urls, o.concurrency, work.path()))
            .collect();
        let measures: Vec<Timed> = results.iter().map(|r| r.0).collect();
        report.route(
            "curl to disk + DuckDB `read_json` → zstd Parquet",
            &measures,
            results[0].1,
        );
    }
    if o.latency_ms > 0 {
        let pages = urls.len() as f64;
        let ideal = pages * o.latency_ms as f64 / 1000.0 / o.concurrency as f64;
        println!("| pages × latency ÷ concurrency | {ideal:.2} s |");
        println!("| export ÷ that | {:.2}× |", export_median / ideal);
    }
    if o.cpu && !sample.is_empty() {
        let mb = sample.iter().map(Vec::len).sum::<usize>() as f64 / 1e6;
        let none = Policy::default();
        let (parse, flatten_only, flatten) = cpu_floor(&sample, &none);
        println!(
            "| one core, {mb:.0} MB: serde_json parse only | {parse:.2} s ({:.0} MB/s) |",
            mb / parse
        );
        println!(
            "| one core: flatten only | {flatten_only:.2} s ({:.0} MB/s, {:.2} ns/byte) |",
            mb / flatten_only,
            flatten_only * 1e3 / mb
        );
        println!(
            "| one core: flatten + Parquet encode | {flatten:.2} s ({:.0} MB/s, {:.2} ns/byte) |",
            mb / flatten,
            flatten * 1e3 / mb
        );
        println!("| flatten + encode ÷ parse | {:.2}× |", flatten / parse);
        if let Some(mask) = &o.mask {
            let rules = PolicyRules {
                mask: mask.split(',').map(str::to_owned).collect(),
                ..PolicyRules::default()
            };
            let policy = Policy::build(&rules, None).expect("--mask names detectors");
            let (_, masked_only, masked) = cpu_floor(&sample, &policy);
            println!(
                "| one core: flatten masking {mask} | {masked_only:.2} s ({:.2} ns/byte: +{:.2} ns/byte) |",
                masked_only * 1e3 / mb,
                (masked_only - flatten_only) * 1e3 / mb
            );
            println!(
                "| one core: flatten masking {mask} + Parquet encode | {masked:.2} s ({:.2} ns/byte, {:.3}× without) |",
                masked * 1e3 / mb,
                masked / flatten
            );
        }
    }
}

/// Prints the rows of one route against the floor and the input.
struct Report {
    runs: u64,
    received: u64,
    floor: f64,
}

impl Report {
    fn route(&self, name: &str, measures: &[Timed], parquet_bytes: u64) {
        let walls: Vec<f64> = measures.iter().map(|t| t.wall).collect();
        let cpus: Vec<f64> = measures.iter().map(|t| t.cpu).collect();
        let rss: Vec<f64> = measures.iter().map(|t| t.rss_mb).collect();
        let (wall, ..) = stats(walls.clone());
        let (cpu, ..) = stats(cpus.clone());
        println!(
            "| {name}, {} runs | {} |",
            measures.len(),
            show(&walls, "s")
        );
        println!("| … ÷ download floor | {:.2}× |", wall / self.floor);
        println!(
            "| … CPU | {} ({:.2} ns per input byte) |",
            show(&cpus, "s"),
            cpu * 1e9 / self.received as f64
        );
        println!("| … peak RSS | {} |", show(&rss, "MB"));
        println!(
            "| … Parquet bytes | {:.1} MB ({:.0} bytes a run) |",
            parquet_bytes as f64 / 1e6,
            parquet_bytes as f64 / self.runs as f64
        );
    }
}
