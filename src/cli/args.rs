//! The command line: every command's flags, their help text and their bounds (clap). Turned
//! into validated settings by the command modules; clap's own errors name the flag.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::{NonEmptyStringValueParser, TypedValueParser};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{self, units};
use crate::report;
use crate::simulate::{self, DataProfile};

/// Export Arcee Orchestra workflow run history to a Hive-partitioned Parquet dataset.
#[derive(Debug, Parser)]
#[command(name = "orchestra-export", version, about, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub(super) command: Command,
    /// Log format on stderr: `text` for people, `json` for schedulers.
    #[arg(help_heading = "Logging and output", long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub(super) log_format: LogFormat,
    /// Log more (`-v` debug, `-vv` trace); `RUST_LOG` overrides.
    #[arg(help_heading = "Logging and output", short, long, global = true, action = clap::ArgAction::Count)]
    pub(super) verbose: u8,
    /// Show no progress bars even on a terminal.
    #[arg(help_heading = "Logging and output", long, global = true)]
    pub(super) no_progress: bool,
    /// Print only warnings and errors: no progress, no summary (the exit code says how it went).
    #[arg(
        help_heading = "Logging and output",
        short,
        long,
        global = true,
        conflicts_with = "verbose"
    )]
    pub(super) quiet: bool,
    /// Create files readable by other users (0644, folders 0755, before the umask) instead of
    /// by their owner only (0600 and 0700): for a dataset that other accounts read in place.
    #[arg(
        help_heading = "Logging and output",
        long,
        global = true,
        env = "ORCHESTRA_EXPORT_SHARED_FILES",
        hide_env_values = true
    )]
    pub(super) shared_files: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(super) enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub(super) enum Command {
    /// Export run history from the Orchestra API into a Parquet dataset.
    #[command(
        override_usage = "orchestra-export export [OPTIONS] <--workflow ID|--workflows-file PATH|--all-workflows>\n       orchestra-export export --config FILE [OPTIONS]",
        after_long_help = export_after_help()
    )]
    Export(ExportArgs),
    /// Start the built-in simulator and export a realistic history from it: no key, no network.
    ///
    /// Serves `--workflows` simulated workflows on 127.0.0.1, exports every one of them with
    /// their steps (`--all-workflows --with-steps`) into `--out`, then writes the report to
    /// `OUT/_reports/` and prints how to query the result. A folder an earlier demo wrote is
    /// replaced; any other non-empty folder is refused and left untouched.
    Demo(DemoArgs),
    /// Serve an Orchestra-compatible API with seeded data (for tests, demos, benchmarks).
    Simulate(SimulateArgs),
    /// Compute trends, error groups, slow runs and regressions from an export.
    Report(ReportArgs),
    /// Compare a dataset with what the API serves now, run by run; exit 0 only if they agree.
    Verify(VerifyArgs),
    /// Keep a Delta dataset (`--table-format delta`) fast to read and small on disk: checkpoint
    /// every table, vacuum files no version within the retention needs, optionally compact.
    ///
    /// Holds every writer's lock while it runs (an export waiting for it fails with exit code 6
    /// and runs again later). Files the current snapshot or any version younger than
    /// `--retention` reads are never deleted, nor is any file younger than the retention.
    Maintain(MaintainArgs),
}

#[derive(Debug, Args)]
pub(super) struct MaintainArgs {
    /// The dataset: the `--out` of the exports (a folder or an object store URL).
    #[arg(long, default_value = config::DEFAULT_OUT, value_name = "DIR|URL")]
    pub(super) out: PathBuf,
    /// How long removed files stay for time travel (`DeltaTable(path, version=…)`).
    #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = crate::config::units::parse_duration)]
    pub(super) retention: std::time::Duration,
    /// Also rewrite each partition's small files (below 128 MiB) into bigger ones.
    #[arg(long)]
    pub(super) compact: bool,
    /// Print what vacuum would delete; change nothing.
    #[arg(long)]
    pub(super) dry_run: bool,
}

#[derive(Debug, Args)]
pub(super) struct ReportArgs {
    /// The export folder to read, or its object store URL (`s3://bucket/prefix`; then `--out`
    /// is required).
    #[arg(long, default_value = config::DEFAULT_OUT, value_name = "DIR|URL")]
    pub(super) data: PathBuf,
    /// Where to write the reports [default: DATA/_reports].
    #[arg(long, value_name = "DIR")]
    pub(super) out: Option<PathBuf>,
    /// First UTC day to include (YYYY-MM-DD, or an RFC 3339 instant: its UTC day).
    #[arg(long, value_name = "DATE", value_parser = parse_day)]
    pub(super) since: Option<chrono::NaiveDate>,
    /// Last UTC day to include (YYYY-MM-DD, or an RFC 3339 instant: its UTC day).
    #[arg(long, value_name = "DATE", value_parser = parse_day)]
    pub(super) until: Option<chrono::NaiveDate>,
    /// Only this workflow (its id, or a name only one workflow has); repeat for several.
    #[arg(long = "workflow", value_name = "ID", value_parser = NonEmptyStringValueParser::new())]
    pub(super) workflows: Vec<String>,
    /// Rows in `slowest_runs` (1–100000).
    #[arg(long, allow_negative_numbers = true, default_value_t = report::DEFAULT_TOP_N, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=100_000).map(|n| n as usize))]
    pub(super) top: usize,
    /// What a million tokens cost (in your currency, e.g. `3.5`): adds cost to the token figures.
    #[arg(long, allow_negative_numbers = true, value_name = "PRICE", value_parser = parse_price)]
    pub(super) price_per_million_tokens: Option<f64>,
}

/// A UTC day: `YYYY-MM-DD`, or the UTC day of an RFC 3339 instant.
pub(super) fn parse_day(text: &str) -> Result<chrono::NaiveDate, String> {
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

pub(super) fn parse_price(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(p) if p.is_finite() && p >= 0.0 => Ok(p),
        _ => Err(format!("`{text}` is not a price (a number, 0 or more)")),
    }
}

/// Which API and workflows, shared by `export` and `verify`.
#[derive(Debug, Args)]
pub(super) struct ApiArgs {
    /// A workflow to export; repeat for several.
    #[arg(help_heading = "What to export", long = "workflow", value_name = "ID", value_parser = NonEmptyStringValueParser::new())]
    pub(super) workflows: Vec<String>,
    /// A file with one workflow id per line (blank lines and `#` comments ignored).
    #[arg(help_heading = "What to export", long, value_name = "PATH")]
    pub(super) workflows_file: Option<PathBuf>,
    /// Every workflow `GET /workflows` lists (`export` also writes the `workflows` table).
    #[arg(help_heading = "What to export", long)]
    pub(super) all_workflows: bool,
    /// Only shard K of N (K from 0, like `JOB_COMPLETION_INDEX`): the workflows whose stable hash
    /// modulo N is K, into this shard's own files. N workers with K = 0…N-1 split the work with
    /// no overlap and may write the same `--out` at the same time.
    #[arg(help_heading = "What to export", long, env = "ORCHESTRA_SHARD", hide_env_values = true, value_name = "K/N", allow_hyphen_values = true,
          value_parser = |t: &str| t.parse::<crate::dataset::Shard>())]
    pub(super) shard: Option<crate::dataset::Shard>,
    /// A TOML file with any of the settings below (see `export.example.toml`); flags win over it.
    #[arg(help_heading = "The API", long, value_name = "PATH")]
    pub(super) config: Option<PathBuf>,
    /// Base URL of the workflow API; endpoint paths are appended to it.
    /// [default: https://orchestra.arcee.ai/api/v1/workflow]
    // The environment value is hidden from `--help`: it may hold a password.
    #[arg(
        help_heading = "The API",
        long,
        env = "ORCHESTRA_BASE_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub(super) base_url: Option<String>,
    /// Read the API key from this file (default: the `ORCHESTRA_API_KEY` environment variable).
    #[arg(help_heading = "The API", long, value_name = "PATH")]
    pub(super) api_key_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(super) struct ExportArgs {
    #[command(flatten)]
    pub(super) api: ApiArgs,
    /// Dataset folder, or an object store URL: `s3://bucket/prefix`, `gs://…`, `az://…`
    /// (credentials from the store's environment variables). [default: data/export]
    #[arg(help_heading = "Where", long, value_name = "DIR|URL")]
    pub(super) out: Option<PathBuf>,
    /// Ignore what earlier exports stored and page every history to its end (rows are still
    /// merged, never duplicated), and mark stored runs the API no longer has in
    /// `runs.deleted_upstream_at`. By default only what is new since the last export is fetched.
    #[arg(help_heading = "Re-runs", long)]
    pub(super) full: bool,
    /// How far before the newest stored run an incremental export re-reads (`30m`, `1h`, `2d`).
    /// [default: 1h]
    #[arg(help_heading = "Re-runs", long, value_name = "DURATION", value_parser = |t: &str| units::LOOKBACK.parse(t))]
    pub(super) lookback: Option<Duration>,
    /// Also fetch each run's steps (one request per run) into the `steps` table.
    #[arg(help_heading = "What to export", long)]
    pub(super) with_steps: bool,
    /// Read back to runs started on this UTC day (YYYY-MM-DD or an RFC 3339 instant), not
    /// further: a bounded backfill for a first export. Never skips runs newer than what earlier
    /// exports stored.
    #[arg(help_heading = "What to export", long, value_name = "DATE", value_parser = parse_day,
          conflicts_with = "full")]
    pub(super) since: Option<chrono::NaiveDate>,
    /// Say what would be exported — which workflows, which shard, where each resumes — and
    /// stop: no runs are requested (`--all-workflows` still lists workflows) and nothing is
    /// written.
    #[arg(help_heading = "Output", long)]
    pub(super) dry_run: bool,
    /// Stop fetching after this long (`90s`, `30m`, `1h`) and commit what was fetched by then;
    /// workflows not finished are reported (exit 1) and continued by the next export.
    #[arg(help_heading = "Re-runs", long, value_name = "DURATION", value_parser = |t: &str| units::DEADLINE.parse(t))]
    pub(super) deadline: Option<Duration>,
    /// Give up on a run still unfinished this long after an export first stored it. [default: 7d]
    #[arg(help_heading = "Re-runs", long, value_name = "DURATION", value_parser = |t: &str| units::UNFINISHED_HORIZON.parse(t))]
    pub(super) unfinished_horizon: Option<Duration>,
    /// Manifests kept in `_manifest/` (the newest; older ones are removed after an export).
    /// [default: 1000]
    #[arg(help_heading = "Where", long, allow_negative_numbers = true, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(super) keep_manifests: Option<u32>,
    /// How the tables are stored: `hive` (Hive-partitioned Parquet, replaced partition by
    /// partition) or `delta` (Delta Lake tables: one atomic commit per table and export, time
    /// travel; `maintain` keeps them compact). A dataset keeps the format it was created with.
    /// [default: hive]
    #[arg(help_heading = "Where", long, value_name = "FORMAT", value_parser = ["hive", "delta"])]
    pub(super) table_format: Option<String>,
    #[command(flatten)]
    pub(super) privacy: PrivacyArgs,
    #[command(flatten)]
    pub(super) tuning: Tuning,
}

/// `[privacy]` as flags; each one given replaces the config file's key of the same name.
#[derive(Debug, Args)]
pub(super) struct PrivacyArgs {
    /// Mask what these detectors find in every text value before it is written, e.g.
    /// `email,phone,card,secret` (also `ip`, and the names of the config file's
    /// `[[privacy.pattern]]`): `jane@example.com` is stored as `[email]`.
    #[arg(
        help_heading = "Privacy",
        long,
        value_name = "DETECTORS",
        value_delimiter = ','
    )]
    pub(super) mask: Vec<String>,
    /// Store the keyed HMAC-SHA256 (64 hex digits) of the values at this path instead of them,
    /// e.g. `inputs.user_id` or `all_outputs.model/usage/user`; repeat for several. The key
    /// comes from `ORCHESTRA_HASH_KEY` or `--hash-key-file`.
    #[arg(help_heading = "Privacy", long = "hash", value_name = "PATH")]
    pub(super) hash: Vec<String>,
    /// Store NULL instead of the values at this path, e.g. `all_outputs.retriever`; repeat for
    /// several.
    #[arg(help_heading = "Privacy", long = "drop", value_name = "PATH")]
    pub(super) drop: Vec<String>,
    /// Read the hashing key from this file (default: the `ORCHESTRA_HASH_KEY` environment
    /// variable).
    #[arg(help_heading = "Privacy", long, value_name = "PATH")]
    pub(super) hash_key_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(super) struct VerifyArgs {
    #[command(flatten)]
    pub(super) api: ApiArgs,
    /// The dataset to verify: the `--out` of the exports (a folder or an object store URL).
    /// [default: data/export]
    #[arg(long, value_name = "DIR|URL")]
    pub(super) out: Option<PathBuf>,
    /// Print the result as one JSON document on stdout instead of a table.
    #[arg(long)]
    pub(super) json: bool,
    /// What `verify` prints (workflow names, quoted error bodies) follows the export's privacy
    /// policy; hashed paths need no key here.
    #[command(flatten)]
    pub(super) privacy: PrivacyArgs,
    #[command(flatten)]
    pub(super) tuning: Tuning,
}

#[derive(Debug, Args)]
pub(super) struct Tuning {
    /// Runs per page (`limit`). [default: 100]
    #[arg(help_heading = "Limits and retries", long, allow_negative_numbers = true, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(super) page_size: Option<u32>,
    /// Requests in flight at once, across all workflows. [default: 8]
    #[arg(help_heading = "Limits and retries", long, allow_negative_numbers = true, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=256).map(usize::from))]
    pub(super) concurrency: Option<usize>,
    /// How long one request may take, body included (`90`, `30s`, `5m`). [default: 60s]
    #[arg(help_heading = "Limits and retries", long, value_name = "DURATION", value_parser = |t: &str| units::REQUEST_TIMEOUT.parse(t))]
    pub(super) request_timeout: Option<Duration>,
    /// Retries of a transient failure (timeouts, resets, 408, 429, 5xx) before giving up.
    /// [default: 6]
    #[arg(help_heading = "Limits and retries", long, allow_negative_numbers = true, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=50))]
    pub(super) max_retries: Option<u32>,
    /// Wait before the first retry (`0.25`, `250ms`, `2s`); doubled each time (with jitter), at
    /// most 30 s unless the API's `Retry-After` asks for more. [default: 250ms]
    #[arg(help_heading = "Limits and retries", long, value_name = "DURATION", value_parser = |t: &str| units::RETRY_DELAY.parse(t))]
    pub(super) retry_delay: Option<Duration>,
    /// Requests started per second at most, across all workflows. Without it only the API's
    /// 429 answers slow the export down (it then halves its rate and speeds back up slowly).
    #[arg(help_heading = "Limits and retries", long, allow_negative_numbers = true, value_name = "N",
          value_parser = config::parse_rps)]
    pub(super) max_rps: Option<f64>,
    /// Largest response body accepted (`512KB`, `256MB`, `1GB`); a larger one fails its workflow
    /// without being read further. [default: 256MB]
    #[arg(help_heading = "Limits and retries", long, value_name = "SIZE", value_parser = config::parse_size)]
    pub(super) max_response_size: Option<u64>,
}

#[derive(Debug, Args)]
pub(super) struct DemoArgs {
    /// Dataset folder.
    #[arg(long, default_value = config::DEFAULT_OUT, value_name = "DIR")]
    pub(super) out: PathBuf,
    /// Workflows to simulate (1–10000).
    #[arg(long, allow_negative_numbers = true, default_value_t = 24, value_name = "N", value_parser = workflow_count())]
    pub(super) workflows: usize,
    /// Average runs per workflow (1–1000000).
    #[arg(long, allow_negative_numbers = true, default_value_t = 1500, value_name = "N", value_parser = run_count())]
    pub(super) runs: u64,
    /// Seed of the simulated data.
    #[arg(long, allow_negative_numbers = true, default_value_t = 42)]
    pub(super) seed: u64,
    /// Shape of the simulated runs: `llm` (about 5.5 KB of JSON a run: long texts, chat
    /// completions, retrieved documents) or `small` (about 1.5 KB).
    #[arg(long, default_value = "llm", value_name = "PROFILE")]
    pub(super) data: DataProfile,
    #[command(flatten)]
    pub(super) tuning: Tuning,
}

#[derive(Debug, Args)]
pub(super) struct SimulateArgs {
    /// Address to listen on (loopback only by default).
    #[arg(long, default_value = "127.0.0.1:8900", value_name = "ADDR")]
    pub(super) listen: SocketAddr,
    /// Workflows to simulate (1–10000).
    #[arg(long, allow_negative_numbers = true, default_value_t = 4, value_name = "N", value_parser = workflow_count())]
    pub(super) workflows: usize,
    /// Runs per workflow (1–1000000).
    #[arg(long, allow_negative_numbers = true, default_value_t = 250, value_name = "N", value_parser = run_count())]
    pub(super) runs: u64,
    /// Vary history sizes between a quarter and 1.75× `--runs`.
    #[arg(long)]
    pub(super) vary_runs: bool,
    /// Seed of the simulated data.
    #[arg(long, allow_negative_numbers = true, default_value_t = 42)]
    pub(super) seed: u64,
    /// Serve at most this many runs per page whatever `limit` asks (1–100000).
    #[arg(long, allow_negative_numbers = true, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=100_000).map(|n| n as usize))]
    pub(super) page_cap: Option<usize>,
    /// Delay before each answer, in milliseconds (at most 600000).
    #[arg(long, allow_negative_numbers = true, default_value_t = 0, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub(super) latency_ms: u64,
    /// Inject a fault, e.g. `503:rate=0.1`, `429:first=5:retry-after=2`, `reset:rate=0.05`,
    /// `truncate:path=/runs`, `malformed:always:path=WORKFLOW`, `hang=90`, `slow=200`,
    /// `huge=3000000000`, `redirect=http://127.0.0.1:9000`. Repeatable; the first that matches
    /// a request wins.
    #[arg(long = "fault", value_name = "SPEC", value_parser = |t: &str| t.parse::<simulate::Fault>())]
    pub(super) faults: Vec<simulate::Fault>,
    /// Answer 429 (with `Retry-After`) beyond this many requests per second.
    #[arg(long, allow_negative_numbers = true, value_name = "RPS",
          value_parser = config::parse_rps)]
    pub(super) rate_limit: Option<f64>,
    /// Change histories while they are paged: `insert=N,delete=N,purge=N,jitter=MS` (runs added
    /// at the head, deleted above the offset asked for and purged from the tail after each page
    /// request, and a random delay per request).
    #[arg(long, value_name = "SPEC", value_parser = |t: &str| t.parse::<simulate::Drift>())]
    pub(super) drift: Option<simulate::Drift>,
    /// Refuse (400) page requests whose `offset` is not a multiple of `limit`.
    #[arg(long)]
    pub(super) aligned_offsets: bool,
    /// Shape of the generated runs: `llm` (about 5.5 KB of JSON a run) or `small` (about 1.5 KB).
    #[arg(long, default_value = "llm", value_name = "PROFILE")]
    pub(super) data: DataProfile,
}

/// Simulated workflows: at least one, at most what fits in memory comfortably.
pub(super) fn workflow_count() -> impl TypedValueParser<Value = usize> {
    clap::value_parser!(u32)
        .range(1..=10_000)
        .map(|n| n as usize)
}

/// Simulated runs per workflow: the benchmarks use 41,700; a million is the ceiling.
pub(super) fn run_count() -> clap::builder::RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(1..=1_000_000)
}

/// `export --help` after the options: the environment, exit codes and examples.
fn export_after_help() -> String {
    let codes: String = crate::exit::CODES
        .iter()
        .map(|(code, meaning)| format!("  {code:>3}  {meaning}\n"))
        .collect();
    format!(
        "\
Environment:
  ORCHESTRA_API_KEY      The API key (or `--api-key-file`); never printed, logged or written
  ORCHESTRA_BASE_URL     Same as `--base-url`
  ORCHESTRA_SHARD        Same as `--shard K/N` (e.g. from a Kubernetes Indexed Job)
  ORCHESTRA_LOCK_LEASE   Object storage: how long a writer's lease lasts without renewal
  ORCHESTRA_HASH_KEY     The key of `--hash` (or `--hash-key-file`); never printed, logged or
                         written (the manifest records a fingerprint of it)
  AWS_*, GOOGLE_*, AZURE_*  Object storage credentials and endpoints, as each SDK reads them
                         (AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, GOOGLE_APPLICATION_CREDENTIALS, …)
  RUST_LOG               Log filter, overriding `-v`

Exit codes:
{codes}
Examples:
  # Every workflow the key can read, into ./data/export; run it again to fetch what is new
  ORCHESTRA_API_KEY=... orchestra-export export --all-workflows

  # Two workflows, with their steps, into a bucket
  orchestra-export export --workflow 2f0c... --workflow 9a1b... --with-steps --out s3://lake/orchestra

  # What would run, and from where each workflow resumes, without fetching a run
  orchestra-export export --config export.toml --dry-run

  # Personal data masked, a user id hashed and a retriever's documents dropped before writing
  ORCHESTRA_HASH_KEY=... orchestra-export export --all-workflows --mask email,phone,card,secret \
      --hash inputs.user_id --drop all_outputs.retriever

  # A first export of the runs since November 1, then hourly from cron
  orchestra-export export --all-workflows --since 2026-11-01
  0 * * * * orchestra-export export --config /etc/orchestra/export.toml --quiet
"
    )
}
