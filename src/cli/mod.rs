//! CLI: flags (clap), turned once into validated config; runs a command and maps the outcome to
//! an exit code and messages (`error: …`, `caused by: …`, `hint: …` on stderr; results on stdout).
//! Bad input (exit 2) and an unreachable API (exits 5, 7, 8) are one `error:` line naming the
//! flag, key, file or URL. Flag bounds live here; clap's own errors name the flag.

mod bars;
mod summary;

/// `println!` to stdout that ignores a closed pipe (`orchestra-export … | head`): the summary
/// is a courtesy, and the export it describes is already committed.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let text = format!($($arg)*);
        let _ = writeln!(std::io::stdout(), "{}", $crate::terminal::safe(&text));
    }};
}

/// `print!` to stdout that ignores a closed pipe.
macro_rules! say_raw {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let text = format!($($arg)*);
        let _ = write!(std::io::stdout(), "{}", $crate::terminal::safe(&text));
    }};
}

/// `eprintln!` with control characters escaped ([`crate::terminal::safe`]): error lines carry
/// workflow ids, paths and API messages.
macro_rules! shout {
    ($($arg:tt)*) => {{
        let text = format!($($arg)*);
        eprintln!("{}", $crate::terminal::safe(&text));
    }};
}

mod verify;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::builder::{NonEmptyStringValueParser, TypedValueParser};
use clap::{Args, Parser, Subcommand, ValueEnum};
use url::Url;

use crate::api::{self, ApiError, TransportKind};
use crate::config::{self, ConfigFile, ExportConfig, ExportInputs, units};
use crate::dataset::{self, Location};
use crate::exit;
use crate::extract::state::StateError;
use crate::extract::{ExtractError, StopReason, Stopper};
use crate::pipeline::{self, ExportError, ExportSummary};
use crate::progress::{LogReporter, Reporter};
use crate::report::{self, ReportError, ReportOptions};
use crate::simulate::{self, DataProfile, SimConfig, SimServer};

/// Export Arcee Orchestra workflow run history to a Hive-partitioned Parquet dataset.
#[derive(Debug, Parser)]
#[command(name = "orchestra-export", version, about, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format on stderr: `text` for people, `json` for schedulers.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log more (`-v` debug, `-vv` trace); `RUST_LOG` overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Show no progress bars even on a terminal.
    #[arg(long, global = true)]
    no_progress: bool,
    /// Create files readable by other users (0644, folders 0755, before the umask) instead of
    /// by their owner only (0600 and 0700): for a dataset that other accounts read in place.
    #[arg(long, global = true, env = "ORCHESTRA_EXPORT_SHARED_FILES")]
    shared_files: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Export run history from the Orchestra API into a Parquet dataset.
    Export(ExportArgs),
    /// Start the built-in simulator and export a realistic history from it: no key, no network.
    Demo(DemoArgs),
    /// Serve an Orchestra-compatible API with seeded data (for tests, demos, benchmarks).
    Simulate(SimulateArgs),
    /// Compute trends, error groups, slow runs and regressions from an export.
    Report(ReportArgs),
    /// Compare a dataset with what the API serves now, run by run; exit 0 only if they agree.
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
struct ReportArgs {
    /// The export folder to read, or its object store URL (`s3://bucket/prefix`; then `--out`
    /// is required).
    #[arg(long, default_value = config::DEFAULT_OUT, value_name = "DIR|URL")]
    data: PathBuf,
    /// Where to write the reports [default: DATA/reports].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// First UTC day to include (YYYY-MM-DD, or an RFC 3339 instant: its UTC day).
    #[arg(long, value_name = "DATE", value_parser = parse_day)]
    since: Option<chrono::NaiveDate>,
    /// Last UTC day to include (YYYY-MM-DD, or an RFC 3339 instant: its UTC day).
    #[arg(long, value_name = "DATE", value_parser = parse_day)]
    until: Option<chrono::NaiveDate>,
    /// Only this workflow (its id, or a name only one workflow has); repeat for several.
    #[arg(long = "workflow", value_name = "ID", value_parser = NonEmptyStringValueParser::new())]
    workflows: Vec<String>,
    /// Rows in `slowest_runs` (1–100000).
    #[arg(long, allow_negative_numbers = true, default_value_t = report::DEFAULT_TOP_N, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=100_000).map(|n| n as usize))]
    top: usize,
    /// What a million tokens cost (in your currency, e.g. `3.5`): adds cost to the token figures.
    #[arg(long, allow_negative_numbers = true, value_name = "PRICE", value_parser = parse_price)]
    price_per_million_tokens: Option<f64>,
}

/// A UTC day: `YYYY-MM-DD`, or the UTC day of an RFC 3339 instant.
fn parse_day(text: &str) -> Result<chrono::NaiveDate, String> {
    if let Ok(day) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(day);
    }
    if let Ok(instant) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(instant.with_timezone(&chrono::Utc).date_naive());
    }
    Err(format!(
        "`{text}` is not a date: expected YYYY-MM-DD (or an RFC 3339 instant such as \
         2026-11-01T08:00:00Z)"
    ))
}

fn parse_price(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(p) if p.is_finite() && p >= 0.0 => Ok(p),
        _ => Err(format!("`{text}` is not a price (a number, 0 or more)")),
    }
}

/// Which API and workflows, shared by `export` and `verify`.
#[derive(Debug, Args)]
struct ApiArgs {
    /// A TOML file with any of the settings below (see `export.example.toml`); flags win over it.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Base URL of the workflow API; endpoint paths are appended to it.
    /// [default: https://orchestra.arcee.ai/api/v1/workflow]
    // The environment value is hidden from `--help`: it may hold a password.
    #[arg(
        long,
        env = "ORCHESTRA_BASE_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    base_url: Option<String>,
    /// Read the API key from this file (default: the `ORCHESTRA_API_KEY` environment variable).
    #[arg(long, value_name = "PATH")]
    api_key_file: Option<PathBuf>,
    /// A workflow to export; repeat for several.
    #[arg(long = "workflow", value_name = "ID", value_parser = NonEmptyStringValueParser::new())]
    workflows: Vec<String>,
    /// A file with one workflow id per line (blank lines and `#` comments ignored).
    #[arg(long, value_name = "PATH")]
    workflows_file: Option<PathBuf>,
    /// Every workflow `GET /workflows` lists (`export` also writes the `workflows` table).
    #[arg(long)]
    all_workflows: bool,
    /// Only shard K of N (K from 0, like `JOB_COMPLETION_INDEX`): the workflows whose stable hash
    /// modulo N is K, into this shard's own files. N workers with K = 0…N-1 split the work with
    /// no overlap and may write the same `--out` at the same time.
    #[arg(long, env = "ORCHESTRA_SHARD", value_name = "K/N", allow_hyphen_values = true,
          value_parser = |t: &str| t.parse::<crate::dataset::Shard>())]
    shard: Option<crate::dataset::Shard>,
}

#[derive(Debug, Args)]
struct ExportArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// Dataset folder, or an object store URL: `s3://bucket/prefix`, `gs://…`, `az://…`
    /// (credentials from the store's environment variables). [default: data/export]
    #[arg(long, value_name = "DIR|URL")]
    out: Option<PathBuf>,
    /// Ignore what earlier exports stored and page every history to its end (rows are still
    /// merged, never duplicated), and mark stored runs the API no longer has in
    /// `runs.deleted_upstream_at`. By default only what is new since the last export is fetched.
    #[arg(long)]
    full: bool,
    /// How far before the newest stored run an incremental export re-reads (`30m`, `1h`, `2d`).
    /// [default: 1h]
    #[arg(long, value_name = "DURATION", value_parser = |t: &str| units::LOOKBACK.parse(t))]
    lookback: Option<Duration>,
    /// Also fetch each run's steps (one request per run) into the `steps` table.
    #[arg(long)]
    with_steps: bool,
    /// Stop fetching after this long (`90s`, `30m`, `1h`) and commit what was fetched by then;
    /// workflows not finished are reported as failed (exit 1) and fetched again next time.
    #[arg(long, value_name = "DURATION", value_parser = |t: &str| units::DEADLINE.parse(t))]
    deadline: Option<Duration>,
    /// Give up on a run still unfinished this long after an export first stored it. [default: 7d]
    #[arg(long, value_name = "DURATION", value_parser = |t: &str| units::UNFINISHED_HORIZON.parse(t))]
    unfinished_horizon: Option<Duration>,
    /// Manifests kept in `_manifest/` (the newest; older ones are removed after an export).
    /// [default: 1000]
    #[arg(long, allow_negative_numbers = true, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    keep_manifests: Option<u32>,
    #[command(flatten)]
    tuning: Tuning,
}

#[derive(Debug, Args)]
struct VerifyArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// The dataset to verify: the `--out` of the exports (a folder or an object store URL).
    /// [default: data/export]
    #[arg(long, value_name = "DIR|URL")]
    out: Option<PathBuf>,
    /// Print the result as one JSON document on stdout instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    tuning: Tuning,
}

#[derive(Debug, Args)]
struct Tuning {
    /// Runs per page (`limit`). [default: 100]
    #[arg(long, allow_negative_numbers = true, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    page_size: Option<u32>,
    /// Requests in flight at once, across all workflows. [default: 8]
    #[arg(long, allow_negative_numbers = true, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=256).map(usize::from))]
    concurrency: Option<usize>,
    /// How long one request may take, body included (`90`, `30s`, `5m`). [default: 60s]
    #[arg(long, value_name = "DURATION", value_parser = |t: &str| units::REQUEST_TIMEOUT.parse(t))]
    request_timeout: Option<Duration>,
    /// Retries of a transient failure (timeouts, resets, 408, 429, 5xx) before giving up.
    /// [default: 6]
    #[arg(long, allow_negative_numbers = true, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=50))]
    max_retries: Option<u32>,
    /// Wait before the first retry (`0.25`, `250ms`, `2s`); doubled each time (with jitter), at
    /// most 30 s unless the API's `Retry-After` asks for more. [default: 250ms]
    #[arg(long, value_name = "DURATION", value_parser = |t: &str| units::RETRY_DELAY.parse(t))]
    retry_delay: Option<Duration>,
    /// Requests started per second at most, across all workflows. Without it only the API's
    /// 429 answers slow the export down (it then halves its rate and speeds back up slowly).
    #[arg(long, allow_negative_numbers = true, value_name = "N",
          value_parser = config::parse_rps)]
    max_rps: Option<f64>,
    /// Largest response body accepted (`512KB`, `256MB`, `1GB`); a larger one fails its workflow
    /// without being read further. [default: 256MB]
    #[arg(long, value_name = "SIZE", value_parser = config::parse_size)]
    max_response_size: Option<u64>,
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Dataset folder.
    #[arg(long, default_value = config::DEFAULT_OUT, value_name = "DIR")]
    out: PathBuf,
    /// Workflows to simulate (1–10000).
    #[arg(long, allow_negative_numbers = true, default_value_t = 24, value_name = "N", value_parser = workflow_count())]
    workflows: usize,
    /// Average runs per workflow (1–1000000).
    #[arg(long, allow_negative_numbers = true, default_value_t = 1500, value_name = "N", value_parser = run_count())]
    runs: u64,
    /// Seed of the simulated data.
    #[arg(long, allow_negative_numbers = true, default_value_t = 42)]
    seed: u64,
    /// Shape of the simulated runs: `llm` (about 5.5 KB of JSON a run: long texts, chat
    /// completions, retrieved documents) or `small` (about 1.5 KB).
    #[arg(long, default_value = "llm", value_name = "PROFILE")]
    data: DataProfile,
    #[command(flatten)]
    tuning: Tuning,
}

#[derive(Debug, Args)]
struct SimulateArgs {
    /// Address to listen on (loopback only by default).
    #[arg(long, default_value = "127.0.0.1:8900", value_name = "ADDR")]
    listen: SocketAddr,
    /// Workflows to simulate (1–10000).
    #[arg(long, allow_negative_numbers = true, default_value_t = 4, value_name = "N", value_parser = workflow_count())]
    workflows: usize,
    /// Runs per workflow (1–1000000).
    #[arg(long, allow_negative_numbers = true, default_value_t = 250, value_name = "N", value_parser = run_count())]
    runs: u64,
    /// Vary history sizes between a quarter and 1.75× `--runs`.
    #[arg(long)]
    vary_runs: bool,
    /// Seed of the simulated data.
    #[arg(long, allow_negative_numbers = true, default_value_t = 42)]
    seed: u64,
    /// Serve at most this many runs per page whatever `limit` asks (1–100000).
    #[arg(long, allow_negative_numbers = true, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=100_000).map(|n| n as usize))]
    page_cap: Option<usize>,
    /// Delay before each answer, in milliseconds (at most 600000).
    #[arg(long, allow_negative_numbers = true, default_value_t = 0, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(0..=600_000))]
    latency_ms: u64,
    /// Inject a fault, e.g. `503:rate=0.1`, `429:first=5:retry-after=2`, `reset:rate=0.05`,
    /// `truncate:path=/runs`, `malformed:always:path=WORKFLOW`, `hang=90`, `slow=200`,
    /// `huge=3000000000`, `redirect=http://127.0.0.1:9000`. Repeatable; the first that matches
    /// a request wins.
    #[arg(long = "fault", value_name = "SPEC", value_parser = |t: &str| t.parse::<simulate::Fault>())]
    faults: Vec<simulate::Fault>,
    /// Answer 429 (with `Retry-After`) beyond this many requests per second.
    #[arg(long, allow_negative_numbers = true, value_name = "RPS",
          value_parser = config::parse_rps)]
    rate_limit: Option<f64>,
    /// Change histories while they are paged: `insert=N,delete=N,purge=N,jitter=MS` (runs added
    /// at the head, deleted above the offset asked for and purged from the tail after each page
    /// request, and a random delay per request).
    #[arg(long, value_name = "SPEC", value_parser = |t: &str| t.parse::<simulate::Drift>())]
    drift: Option<simulate::Drift>,
    /// Refuse (400) page requests whose `offset` is not a multiple of `limit`.
    #[arg(long)]
    aligned_offsets: bool,
    /// Shape of the generated runs: `llm` (about 5.5 KB of JSON a run) or `small` (about 1.5 KB).
    #[arg(long, default_value = "llm", value_name = "PROFILE")]
    data: DataProfile,
}

/// Simulated workflows: at least one, at most what fits in memory comfortably.
fn workflow_count() -> impl TypedValueParser<Value = usize> {
    clap::value_parser!(u32)
        .range(1..=10_000)
        .map(|n| n as usize)
}

/// Simulated runs per workflow: the benchmarks use 41,700; a million is the ceiling.
fn run_count() -> clap::builder::RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(1..=1_000_000)
}

/// Parses the command line, runs it, and returns the exit code.
pub fn run() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::SUCCESS
            };
            let _ = e.print();
            return code;
        }
    };
    init_logging(cli.log_format, cli.verbose);
    crate::dataset::share_files(cli.shared_files);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            report_error(&e, None);
            return exit::INTERNAL;
        }
    };
    let bars = !cli.no_progress
        && matches!(cli.log_format, LogFormat::Text)
        && std::io::stderr().is_terminal();
    runtime.block_on(async move {
        match cli.command {
            Command::Export(args) => run_export(args, bars).await,
            Command::Demo(args) => run_demo(args, bars).await,
            Command::Simulate(args) => run_simulate(args).await,
            Command::Report(args) => run_report(args),
            Command::Verify(args) => verify::run_verify(args, bars).await,
        }
    })
}

fn init_logging(format: LogFormat, verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn,extract=info",
        1 => "debug,hyper=info,reqwest=info",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let ansi = std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(move || crate::terminal::SafeWriter::new(std::io::stderr(), ansi))
        .with_ansi(ansi);
    let _ = match format {
        LogFormat::Text => builder.compact().try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

fn reporter(bars: bool) -> Arc<dyn Reporter> {
    reporter_for(bars, "export")
}

/// Progress of `command`: bars on a terminal, log lines otherwise.
fn reporter_for(bars: bool, command: &'static str) -> Arc<dyn Reporter> {
    if bars {
        Arc::new(bars::BarReporter::new())
    } else {
        Arc::new(LogReporter { command })
    }
}

/// Settings from flags, then the config file, then defaults.
fn export_inputs(tuning: &Tuning, file: &ConfigFile, out: Option<PathBuf>) -> ExportInputs {
    ExportInputs {
        out: out
            .or_else(|| file.out.clone())
            .unwrap_or_else(|| config::DEFAULT_OUT.into()),
        page_size: tuning
            .page_size
            .or(file.page_size)
            .unwrap_or(config::DEFAULT_PAGE_SIZE),
        concurrency: tuning
            .concurrency
            .or(file.concurrency)
            .unwrap_or(config::DEFAULT_CONCURRENCY),
        request_timeout: tuning
            .request_timeout
            .or(file.request_timeout)
            .unwrap_or(api::DEFAULT_REQUEST_TIMEOUT),
        max_retries: tuning
            .max_retries
            .or(file.max_retries)
            .unwrap_or(api::retry::DEFAULT_MAX_RETRIES),
        max_rps: tuning.max_rps.or(file.max_rps),
        max_response_bytes: tuning.max_response_size.or(file.max_response_size),
        retry_delay: tuning.retry_delay.or(file.retry_delay),
        lookback: file.lookback.unwrap_or(config::DEFAULT_LOOKBACK),
        unfinished_horizon: file
            .unfinished_horizon
            .unwrap_or(config::DEFAULT_UNFINISHED_HORIZON),
        ..ExportInputs::default()
    }
}

/// The inputs shared by `export` and `verify`: the config file, then flags over it; or the exit
/// code of a bad config file.
fn api_inputs(
    api: ApiArgs,
    tuning: &Tuning,
    out: Option<PathBuf>,
) -> Result<(ExportInputs, ConfigFile), i32> {
    let file = match api.config.as_deref().map(ConfigFile::load).transpose() {
        Ok(file) => file.unwrap_or_default(),
        Err(e) => return Err(usage_error(&e)),
    };
    // A selection on the command line replaces the file's.
    let cli_selects =
        !api.workflows.is_empty() || api.workflows_file.is_some() || api.all_workflows;
    let (workflows, workflows_file, all_workflows) = if cli_selects {
        (api.workflows, api.workflows_file, api.all_workflows)
    } else {
        (
            file.workflows.clone().unwrap_or_default(),
            file.workflows_file.clone(),
            file.all_workflows.unwrap_or(false),
        )
    };
    let base = export_inputs(tuning, &file, out);
    let inputs = ExportInputs {
        base_url: api
            .base_url
            .or_else(|| file.base_url.clone())
            .unwrap_or_else(|| api::DEFAULT_BASE_URL.to_owned()),
        api_key_file: api.api_key_file.or_else(|| file.api_key_file.clone()),
        api_key_env: std::env::var(config::API_KEY_ENV).ok(),
        workflows,
        workflows_file,
        all_workflows,
        shard: api.shard.or(file.shard),
        ..base
    };
    Ok((inputs, file))
}

async fn run_export(args: ExportArgs, bars: bool) -> i32 {
    let (inputs, file) = match api_inputs(args.api, &args.tuning, args.out) {
        Ok(inputs) => inputs,
        Err(code) => return code,
    };
    let inputs = ExportInputs {
        full: args.full,
        with_steps: args.with_steps || file.with_steps.unwrap_or(false),
        lookback: args.lookback.unwrap_or(inputs.lookback),
        unfinished_horizon: args.unfinished_horizon.unwrap_or(inputs.unfinished_horizon),
        keep_manifests: args.keep_manifests.or(file.keep_manifests),
        ..inputs
    };
    let config = match inputs.validate() {
        Ok(config) => config,
        Err(e) => return usage_error(&e),
    };
    let out = config.out.clone();
    finish_export(
        export_until_signalled(config, bars, args.deadline).await,
        &out,
    )
}

/// Runs an export; the first SIGINT/SIGTERM stops fetching and commits what was fetched, a
/// second one exits at once (uncommitted files are hidden temp files readers never see).
async fn export_until_signalled(
    config: ExportConfig,
    bars: bool,
    deadline: Option<Duration>,
) -> Result<ExportSummary, ExportError> {
    let stopper = Stopper::default();
    let watcher = stop_on_signals(
        &stopper,
        "interrupted: committing what was fetched (interrupt again to quit at once)",
    );
    // The deadline stops fetching as an interrupt does, for its own reason.
    let timer = deadline.map(|after| {
        let stopper = stopper.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            tracing::warn!(target: "extract", "the deadline was reached: committing what was fetched");
            stopper.stop(StopReason::Deadline);
        })
    });
    let result = pipeline::export(config, reporter(bars), stopper).await;
    watcher.abort();
    if let Some(timer) = timer {
        timer.abort();
    }
    result
}

/// The first SIGINT/SIGTERM prints `message` and stops `stopper`; a second one exits at once.
/// Abort the handle when the command is done.
fn stop_on_signals(stopper: &Stopper, message: &'static str) -> tokio::task::JoinHandle<()> {
    let stopper = stopper.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        shout!("{message}");
        stopper.stop(StopReason::Interrupted);
        shutdown_signal().await;
        std::process::exit(exit::INTERRUPTED);
    })
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Prints the summary or the error, and picks the exit code.
fn finish_export(result: Result<ExportSummary, ExportError>, out: &std::path::Path) -> i32 {
    match result {
        Ok(summary) => {
            for failed in summary.failed() {
                let error = failed.error.as_ref().expect("failed() yields errors");
                shout!(
                    "error: workflow `{}` failed: {}",
                    failed.workflow_id,
                    crate::error_chain(error)
                );
            }
            say_raw!("{}", summary::render(&summary, out));
            exit_code(&summary)
        }
        Err(e) => {
            let (code, hint) = failure_code(&e);
            report_failure(&e, code, hint.as_deref());
            code
        }
    }
}

/// Prints why a command failed as a whole: one line naming the path or URL (like the
/// per-workflow failures) for bad input and unreachable places, else the error with its causes.
fn report_failure(e: &dyn std::error::Error, code: i32, hint: Option<&str>) {
    if [
        exit::USAGE,
        exit::OUTPUT,
        exit::UNREACHABLE,
        exit::DNS,
        exit::TLS,
    ]
    .contains(&code)
    {
        shout!("error: {}", crate::error_chain(e));
        if let Some(hint) = hint {
            shout!("hint: {hint}");
        }
    } else {
        report_error(e, hint);
    }
}

/// The exit code and hint of an export that failed as a whole.
fn failure_code(e: &ExportError) -> (i32, Option<String>) {
    const OUT_HINT: &str = "check that `--out` is a writable folder with free space";
    if let ExportError::Dataset(e) | ExportError::State(StateError::Dataset(e)) = e {
        let code = if e.is_lock_conflict() {
            exit::LOCKED
        } else if matches!(e, crate::dataset::DatasetError::Layout { .. }) {
            exit::USAGE
        } else {
            exit::OUTPUT
        };
        return (code, Some(e.hint().unwrap_or_else(|| OUT_HINT.into())));
    }
    match e {
        ExportError::State(_) => (exit::OUTPUT, Some(OUT_HINT.into())),
        ExportError::WriterPanicked => (exit::INTERNAL, None),
        _ => match e.api_error() {
            Some(ApiError::Unauthorized { .. }) => (exit::AUTH, Some(AUTH_HINT.into())),
            Some(api) => unreachable(&[api])
                .map_or((exit::PARTIAL_FAILURE, None), |(code, hint)| {
                    (code, Some(hint))
                }),
            None => (exit::PARTIAL_FAILURE, None),
        },
    }
}

const AUTH_HINT: &str =
    "check `ORCHESTRA_API_KEY` or `--api-key-file`, and that the key may read these workflows";

/// When every error says the API could not be reached: the exit code of that failure class
/// (refused, DNS or TLS; mixed classes are [`exit::UNREACHABLE`]) and a hint naming the host.
fn unreachable(errors: &[&ApiError]) -> Option<(i32, String)> {
    let mut found: Option<(TransportKind, &str)> = None;
    for error in errors {
        let ApiError::Transport { kind, url, .. } = error else {
            return None;
        };
        if !kind.is_unreachable() {
            return None;
        }
        found = match found {
            Some((seen, _)) if seen != *kind => Some((TransportKind::Connect, url)),
            _ => Some((*kind, url)),
        };
    }
    let (kind, url) = found?;
    let url = url::Url::parse(url).ok();
    let host = url.as_ref().and_then(Url::host_str).unwrap_or("?");
    let port = url.as_ref().and_then(Url::port_or_known_default);
    let authority = port.map_or_else(|| host.to_owned(), |p| format!("{host}:{p}"));
    Some(match kind {
        TransportKind::Dns => (
            exit::DNS,
            format!(
                "the host `{host}` does not resolve: check the host name in `--base-url`, and DNS or proxy settings"
            ),
        ),
        TransportKind::Tls => (
            exit::TLS,
            format!(
                "no TLS session with `{authority}`: check the `--base-url` scheme (`https` to a plain-HTTP server fails), proxies, and the server's certificate"
            ),
        ),
        _ => (
            exit::UNREACHABLE,
            format!(
                "check `--base-url` and the network: nothing accepted a connection at `{authority}`"
            ),
        ),
    })
}

fn exit_code(summary: &ExportSummary) -> i32 {
    let errors: Vec<_> = summary.failed().filter_map(|w| w.error.as_ref()).collect();
    if errors.is_empty() {
        return exit::SUCCESS;
    }
    let interrupted = |e: &&ExtractError| {
        matches!(
            e,
            ExtractError::Cancelled {
                reason: StopReason::Interrupted
            }
        )
    };
    if errors.iter().any(interrupted) {
        return exit::INTERRUPTED;
    }
    let api_errors: Vec<_> = errors.iter().filter_map(|e| e.api_error()).collect();
    if api_errors
        .iter()
        .any(|e| matches!(e, ApiError::Unauthorized { .. }))
    {
        shout!("hint: {AUTH_HINT}");
        return exit::AUTH;
    }
    if summary.runs() == 0
        && api_errors.len() == errors.len()
        && let Some((code, hint)) = unreachable(&api_errors)
    {
        shout!("hint: {hint}");
        return code;
    }
    exit::PARTIAL_FAILURE
}

/// Prints a bad command line, config or input file as one `error: …` line (causes joined by
/// `: `) naming the flag, key or file, and returns [`exit::USAGE`].
fn usage_error(error: &dyn std::error::Error) -> i32 {
    shout!("error: {}", crate::error_chain(error));
    exit::USAGE
}

/// Prints `error: …`, a `caused by: …` line per cause, and an optional `hint: …`.
pub fn report_error(error: &dyn std::error::Error, hint: Option<&str>) {
    shout!("error: {error}");
    let mut source = error.source();
    while let Some(cause) = source {
        shout!("  caused by: {cause}");
        source = cause.source();
    }
    if let Some(hint) = hint {
        shout!("hint: {hint}");
    }
}

async fn run_demo(args: DemoArgs, bars: bool) -> i32 {
    if Location::is_url(&args.out) {
        shout!(
            "error: `demo` writes to a local folder, not to `{}`; `export --out URL` writes to object storage",
            crate::dataset::shown_url(&args.out.to_string_lossy())
        );
        return exit::USAGE;
    }
    let sim_config = SimConfig {
        seed: args.seed,
        workflows: args.workflows,
        runs_per_workflow: args.runs,
        vary_runs: true,
        profile: args.data,
        ..SimConfig::default()
    };
    let server = match SimServer::start(sim_config, SocketAddr::from(([127, 0, 0, 1], 0))).await {
        Ok(server) => server,
        Err(e) => {
            report_error(&e, Some("the demo needs a free port on 127.0.0.1"));
            return exit::INTERNAL;
        }
    };
    if let Err(e) = prepare_demo_out(&args.out) {
        report_error(&e, Some("pass another `--out`, or remove the folder"));
        return exit::OUTPUT;
    }
    say!(
        "simulator: serving {} workflows at {}",
        args.workflows,
        server.base_url()
    );
    let inputs = ExportInputs {
        base_url: server.base_url(),
        api_key_env: Some(simulate::DEFAULT_SIM_KEY.to_owned()),
        all_workflows: true,
        with_steps: true,
        ..export_inputs(&args.tuning, &ConfigFile::default(), Some(args.out))
    };
    let config: ExportConfig = match inputs.validate() {
        Ok(config) => config,
        Err(e) => {
            report_error(&e, None);
            return exit::USAGE;
        }
    };
    let out = config.out.clone();
    let code = finish_export(export_until_signalled(config, bars, None).await, &out);
    if code == exit::SUCCESS {
        let code = write_report(&ReportOptions {
            data: out.clone(),
            out: out.join("reports"),
            since: None,
            until: None,
            workflows: Vec::new(),
            top_n: report::DEFAULT_TOP_N,
            price_per_million_tokens: None,
            source: None,
        });
        if code != exit::SUCCESS {
            return code;
        }
        say_raw!("{}", summary::query_help(&out));
    }
    server.stop();
    code
}

fn run_report(args: ReportArgs) -> i32 {
    if let (Some(since), Some(until)) = (args.since, args.until)
        && since > until
    {
        shout!("error: `--since` {since} is after `--until` {until}");
        return exit::USAGE;
    }
    // An object store dataset is downloaded to a temporary folder first (removed on return).
    let (data, source, _download) = if Location::is_url(&args.data) {
        match download_for_report(&args.data, args.out.is_some()) {
            Ok(dir) => (
                dir.path().to_path_buf(),
                Some(args.data.display().to_string()),
                Some(dir),
            ),
            Err(code) => return code,
        }
    } else {
        (args.data.clone(), None, None)
    };
    let options = ReportOptions {
        out: args.out.unwrap_or_else(|| args.data.join("reports")),
        data,
        since: args.since,
        until: args.until,
        workflows: args.workflows,
        top_n: args.top,
        price_per_million_tokens: args.price_per_million_tokens,
        source,
    };
    write_report(&options)
}

/// Downloads the dataset at the URL `data` into a temporary folder; on failure prints the error
/// and returns the exit code.
fn download_for_report(data: &std::path::Path, has_out: bool) -> Result<tempfile::TempDir, i32> {
    let shown = crate::dataset::shown_url(&data.to_string_lossy());
    if !has_out {
        shout!(
            "error: `--data {shown}` is in an object store: pass `--out DIR`, the local folder for the reports"
        );
        return Err(exit::USAGE);
    }
    let dir = tempfile::tempdir().map_err(|e| {
        report_error(
            &e,
            Some("set `TMPDIR` to a folder with room for the dataset"),
        );
        exit::OUTPUT
    })?;
    match dataset::download(data, dir.path()) {
        Ok(_) if !dir.path().join("runs").exists() => {
            shout!("error: no `runs` table in `{shown}`: is it an orchestra-export dataset?");
            shout!("hint: pass `--data URL`, the `--out` of an export");
            Err(exit::USAGE)
        }
        Ok(files) => {
            tracing::info!(target: "report", files, "downloaded the dataset from `{shown}`");
            Ok(dir)
        }
        Err(e) => {
            shout!("error: {}", crate::error_chain(&e));
            if let Some(hint) = e.hint() {
                shout!("hint: {hint}");
            }
            Err(exit::OUTPUT)
        }
    }
}

/// Writes the reports and prints where they are; returns the exit code.
fn write_report(options: &ReportOptions) -> i32 {
    match report::run(options) {
        Ok(done) => {
            for warning in &done.warnings {
                shout!("warning: {warning}");
            }
            let tables: Vec<String> = done
                .tables
                .iter()
                .map(|(name, df)| match *name {
                    // Rows compared are not regressions: say how many regressed.
                    "regressions" => format!(
                        "{name} ({} of {} workflows regressed)",
                        done.regressed(),
                        df.height()
                    ),
                    _ => format!("{name} ({})", df.height()),
                })
                .collect();
            say!(
                "report: {} runs in {:.2} s -> `{}`: {}, summary.md, report.html",
                done.runs,
                done.elapsed.as_secs_f64(),
                options.out.display(),
                tables.join(", ")
            );
            exit::SUCCESS
        }
        Err(e) => {
            let (code, hint) = match e {
                ReportError::NoData { .. } => (
                    exit::USAGE,
                    Some("pass `--data DIR`, the `--out` folder of an export"),
                ),
                ReportError::Io { .. } => (exit::OUTPUT, None),
                ReportError::Polars { .. } => (exit::PARTIAL_FAILURE, None),
                ReportError::Filter { ref hint, .. } => {
                    report_error(&e, Some(hint.as_str()));
                    return exit::USAGE;
                }
                ReportError::Read { .. } => (
                    exit::PARTIAL_FAILURE,
                    Some("`verify --data DIR` checks every file of the dataset"),
                ),
            };
            report_error(&e, hint);
            code
        }
    }
}

/// Marks a folder the demo wrote, so a later demo may replace it.
const DEMO_MARKER: &str = "_demo";

/// The demo writes a fresh dataset each time: into a new or empty folder, or over an earlier
/// demo's output (its tables are removed first). Any other folder is left alone.
fn prepare_demo_out(out: &std::path::Path) -> std::io::Result<()> {
    let is_empty = |p: &std::path::Path| std::fs::read_dir(p).map(|mut d| d.next().is_none());
    if out.exists() && !out.join(DEMO_MARKER).exists() && !is_empty(out)? {
        return Err(std::io::Error::other(format!(
            "`{}` is not empty and was not written by `demo`; it is left untouched",
            out.display()
        )));
    }
    if out.join(DEMO_MARKER).exists() {
        std::fs::remove_dir_all(out)?;
    }
    std::fs::create_dir_all(out)?;
    std::fs::write(
        out.join(DEMO_MARKER),
        "written by `orchestra-export demo`; a later demo replaces this folder\n",
    )
}

async fn run_simulate(args: SimulateArgs) -> i32 {
    let api_key =
        std::env::var(config::API_KEY_ENV).unwrap_or_else(|_| simulate::DEFAULT_SIM_KEY.to_owned());
    let using_default = api_key == simulate::DEFAULT_SIM_KEY;
    let sim_config = SimConfig {
        seed: args.seed,
        workflows: args.workflows,
        runs_per_workflow: args.runs,
        vary_runs: args.vary_runs,
        page_cap: args.page_cap,
        api_key,
        latency: Duration::from_millis(args.latency_ms),
        faults: args.faults,
        rate_limit: args.rate_limit.map(|per_second| simulate::RateLimit {
            per_second,
            burst: per_second.max(1.0),
            http_date: false,
        }),
        drift: args.drift,
        aligned_offsets: args.aligned_offsets,
        profile: args.data,
        ..SimConfig::default()
    };
    let server = match SimServer::start(sim_config, args.listen).await {
        Ok(server) => server,
        Err(e) => {
            shout!("error: cannot listen on `{}`: {e}", args.listen);
            return exit::USAGE;
        }
    };
    say!(
        "simulator: serving {} workflows at {}",
        args.workflows,
        server.base_url()
    );
    if using_default {
        say!(
            "simulator: accepting the key `{}` (set ORCHESTRA_API_KEY to choose another)",
            simulate::DEFAULT_SIM_KEY
        );
    } else {
        say!("simulator: accepting the key from ORCHESTRA_API_KEY");
    }
    let _ = tokio::signal::ctrl_c().await;
    server.stop();
    exit::SUCCESS
}
