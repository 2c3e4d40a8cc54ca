//! Config: the validated settings of an export, built once from flags and environment.
//!
//! Nothing below this module reads flags or environment variables. Every check that can fail
//! before a request is sent happens here, with an error that names the flag, config key or file
//! involved, and never the key or a password.

mod file;
pub mod units;

use crate::dataset::delta::TableFormat;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use file::ConfigFile;
pub use units::{check_max_rps, format_duration, parse_duration, parse_rps, parse_size};

use url::Url;

use crate::api::{self, ApiKey, ClientOptions, RetryPolicy};
use crate::dataset::{Location, Shard};
use crate::extract::{DEFAULT_MAX_WINDOW, ExtractOptions};
use crate::privacy::{HashKey, Policy, PolicyRules};

/// Environment variable holding the API key.
pub const API_KEY_ENV: &str = "ORCHESTRA_API_KEY";
/// Default dataset folder.
pub const DEFAULT_OUT: &str = "data/export";
/// Default `limit` per page, the API's own default.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// Default look-back of incremental exports: runs that start late or show up late by up to an
/// hour are still picked up.
pub const DEFAULT_LOOKBACK: Duration = Duration::from_secs(3600);
/// Default horizon for unfinished runs: a run still unfinished a week after it started is given
/// up on (reported, no longer fetched).
pub const DEFAULT_UNFINISHED_HORIZON: Duration = Duration::from_secs(7 * 86_400);
/// Default requests in flight: enough to hide latency, gentle on the API.
pub const DEFAULT_CONCURRENCY: usize = 8;

/// A configuration problem; exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No key anywhere.
    #[error("no API key: set `{API_KEY_ENV}` or pass `--api-key-file PATH`")]
    NoApiKey,
    /// The key file could not be read.
    #[error("cannot read API key file `{}`", path.display())]
    KeyFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The key is empty or cannot be sent.
    #[error("the API key from {from} {reason}")]
    BadKey { from: String, reason: &'static str },
    /// The config file could not be read.
    #[error("cannot read config file `{}`", path.display())]
    ConfigFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The field policy is not usable, or its key is missing.
    #[error("privacy policy: {0}")]
    Privacy(String),
    /// The config file has a bad key or value.
    #[error("invalid config file `{}`: {message}", path.display())]
    ConfigInvalid { path: PathBuf, message: String },
    /// The workflows file could not be read.
    #[error("cannot read workflows file `{}`", path.display())]
    WorkflowsFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// No workflow selected.
    #[error(
        "no workflows to export: pass `--workflow ID`, `--workflows-file PATH` or `--all-workflows`"
    )]
    NoWorkflows,
    /// A workflow id that cannot be a URL path segment.
    #[error("invalid workflow id `{id}` in {from}: {reason}")]
    WorkflowId {
        id: String,
        from: String,
        reason: &'static str,
    },
    /// The base URL is not usable.
    #[error("invalid `--base-url` `{url}`: {reason}")]
    BaseUrl { url: String, reason: String },
    /// `--out` is neither a path nor a supported URL.
    #[error(transparent)]
    Out(crate::dataset::DatasetError),
}

/// Validated settings of `export`.
#[derive(Debug, Clone)]
pub struct ExportConfig {
    /// HTTP client settings, key included.
    pub client: ClientOptions,
    /// Workflows named explicitly (flags and file), de-duplicated, in order.
    pub workflow_ids: Vec<String>,
    /// Also export every workflow `GET /workflows` lists.
    pub all_workflows: bool,
    /// Dataset root.
    pub out: PathBuf,
    /// Paging settings.
    pub extract: ExtractOptions,
    /// Ignore earlier state and page every history to its end (still merging, never duplicating).
    pub full: bool,
    /// How far before the cursor an incremental export re-reads.
    pub lookback: Duration,
    /// Export only the workflows of this shard, into its own files.
    pub shard: Option<Shard>,
    /// `_manifest/` files of this layout kept after an export (the newest).
    pub keep_manifests: u32,
    /// Hive-partitioned Parquet or Delta tables.
    pub table_format: TableFormat,
}

/// Raw inputs, as the CLI collected them. No `Debug`: it holds the raw key.
#[derive(Clone, Default)]
pub struct ExportInputs {
    pub base_url: String,
    pub api_key_file: Option<PathBuf>,
    pub api_key_env: Option<String>,
    pub workflows: Vec<String>,
    pub workflows_file: Option<PathBuf>,
    pub all_workflows: bool,
    pub out: PathBuf,
    pub page_size: u32,
    pub concurrency: usize,
    pub request_timeout: Duration,
    pub max_retries: u32,
    /// Requests per second at most (`None`: only the API's 429s limit).
    pub max_rps: Option<f64>,
    /// Largest response body (`None`: the default).
    pub max_response_bytes: Option<u64>,
    /// First retry backoff (`None`: the default).
    pub retry_delay: Option<Duration>,
    pub full: bool,
    pub lookback: Duration,
    pub unfinished_horizon: Duration,
    pub with_steps: bool,
    pub shard: Option<Shard>,
    /// `_manifest/` files kept (`None`: the default).
    pub keep_manifests: Option<u32>,
    /// `--table-format` / `table_format`.
    pub table_format: TableFormat,
    /// `--since`: read back to runs started on this UTC day, not further.
    pub since: Option<chrono::NaiveDate>,
    /// `[privacy]` rules, flags merged in.
    pub privacy: PolicyRules,
    /// `--hash-key-file` / `hash_key_file`.
    pub hash_key_file: Option<PathBuf>,
    /// `ORCHESTRA_HASH_KEY`.
    pub hash_key_env: Option<String>,
}

impl ExportConfig {
    /// `--since` as its UTC day (`YYYY-MM-DD`), for people and the manifest.
    pub fn since_day(&self) -> Option<String> {
        self.extract
            .since_us
            .and_then(chrono::DateTime::from_timestamp_micros)
            .map(|t| t.format("%Y-%m-%d").to_string())
    }
}

impl ExportInputs {
    /// Validates everything and loads the key and workflows file.
    pub fn validate(self) -> Result<ExportConfig, ConfigError> {
        let base_url = parse_base_url(&self.base_url)?;
        Location::parse(&self.out).map_err(ConfigError::Out)?;
        let key = load_key(self.api_key_file.as_deref(), self.api_key_env.as_deref())?;
        let mut ids = self.workflows;
        for id in &ids {
            check_workflow_id(id, "`--workflow`")?;
        }
        if let Some(path) = &self.workflows_file {
            let from_file = read_workflows_file(path)?;
            for id in &from_file {
                check_workflow_id(id, &format!("`{}`", path.display()))?;
            }
            ids.extend(from_file);
        }
        let mut seen = std::collections::HashSet::new();
        ids.retain(|id| seen.insert(id.clone()));
        if ids.is_empty() && !self.all_workflows {
            return Err(ConfigError::NoWorkflows);
        }
        let concurrency = self.concurrency.max(1);
        let policy = std::sync::Arc::new(build_policy(
            &self.privacy,
            self.hash_key_file.as_deref(),
            self.hash_key_env.as_deref(),
        )?);
        Ok(ExportConfig {
            client: ClientOptions {
                base_url,
                key,
                concurrency,
                request_timeout: self.request_timeout,
                connect_timeout: api::DEFAULT_CONNECT_TIMEOUT.min(self.request_timeout),
                retry: RetryPolicy {
                    max_retries: self.max_retries,
                    base_delay: self.retry_delay.unwrap_or(api::retry::DEFAULT_BASE_DELAY),
                },
                max_response_bytes: self
                    .max_response_bytes
                    .unwrap_or(api::DEFAULT_MAX_RESPONSE_BYTES),
                max_rps: self.max_rps,
                policy: policy.clone(),
            },
            workflow_ids: ids,
            all_workflows: self.all_workflows,
            out: self.out,
            full: self.full,
            lookback: self.lookback,
            shard: self.shard,
            keep_manifests: self
                .keep_manifests
                .unwrap_or(crate::pipeline::DEFAULT_KEEP_MANIFESTS),
            table_format: self.table_format,
            extract: ExtractOptions {
                export_id: String::new(),
                lookback: None,
                since_us: self.since.map(|day| {
                    day.and_time(chrono::NaiveTime::MIN)
                        .and_utc()
                        .timestamp_micros()
                }),
                unfinished_horizon: self.unfinished_horizon,
                with_steps: self.with_steps,
                page_size: self.page_size,
                max_window: concurrency.min(DEFAULT_MAX_WINDOW),
                parallel_workflows: concurrency,
                keep_seen: self.full,
                policy,
            },
        })
    }
}

/// The field policy of `rules`, with its key when something is hashed.
fn build_policy(
    rules: &PolicyRules,
    key_file: Option<&Path>,
    key_env: Option<&str>,
) -> Result<Policy, ConfigError> {
    if rules.is_empty() {
        return Ok(Policy::default());
    }
    let key = if rules.hash.is_empty() {
        None
    } else {
        if let Some(path) = key_file {
            warn_if_others_can_read(path, "hashing key");
        }
        HashKey::load(key_file, key_env).map_err(ConfigError::Privacy)?
    };
    Policy::build(rules, key.as_ref()).map_err(ConfigError::Privacy)
}

/// Parses and checks a base URL: http(s), no query or fragment.
pub fn parse_base_url(text: &str) -> Result<Url, ConfigError> {
    let bad = |reason: String| ConfigError::BaseUrl {
        url: redact_userinfo(text),
        reason,
    };
    let url = Url::parse(text).map_err(|e| bad(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad(format!(
            "scheme `{}` is not http or https",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host".to_owned()));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("must not have a query or fragment".to_owned()));
    }
    Ok(url)
}

/// `text` with any `user:password@` masked, whether or not it parses as a URL.
fn redact_userinfo(text: &str) -> String {
    if let Ok(url) = Url::parse(text) {
        return api::redact_url(&url);
    }
    let Some(start) = text.find("://").map(|i| i + 3) else {
        return text.to_owned();
    };
    match text[start..].rfind('@') {
        Some(at) => format!("{}***{}", &text[..start], &text[start + at..]),
        None => text.to_owned(),
    }
}

fn load_key(file: Option<&Path>, env: Option<&str>) -> Result<ApiKey, ConfigError> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::KeyFile {
            path: path.to_path_buf(),
            source,
        })?;
        warn_if_others_can_read(path, "API key");
        return ApiKey::parse(&text).map_err(|reason| ConfigError::BadKey {
            from: format!("`{}`", path.display()),
            reason,
        });
    }
    match env {
        Some(value) => ApiKey::parse(value).map_err(|reason| ConfigError::BadKey {
            from: format!("`{API_KEY_ENV}`"),
            reason,
        }),
        None => Err(ConfigError::NoApiKey),
    }
}

/// Warns when a key file (`what`: "API key") can be read by other users of the machine.
fn warn_if_others_can_read(path: &Path, what: &str) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    target: "config",
                    "{what} file `{}` can be read by other users (mode {mode:o}); run `chmod 600 {}`",
                    path.display(),
                    path.display()
                );
            }
        }
    }
}

/// Reads one workflow id per line; blank lines and `#` comments are skipped.
pub fn read_workflows_file(path: &Path) -> Result<Vec<String>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::WorkflowsFile {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(parse_workflow_lines(&text))
}

fn parse_workflow_lines(text: &str) -> Vec<String> {
    text.trim_start_matches('\u{feff}')
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

fn check_workflow_id(id: &str, from: &str) -> Result<(), ConfigError> {
    api::check_workflow_id(id).map_err(|reason| ConfigError::WorkflowId {
        id: crate::terminal::safe(id).into_owned(),
        from: from.to_owned(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> ExportInputs {
        ExportInputs {
            base_url: api::DEFAULT_BASE_URL.to_owned(),
            api_key_env: Some("k".to_owned()),
            workflows: vec!["w".to_owned()],
            out: DEFAULT_OUT.into(),
            page_size: 100,
            concurrency: 4,
            request_timeout: Duration::from_secs(5),
            ..ExportInputs::default()
        }
    }

    #[test]
    fn invalid_inputs_name_what_is_wrong() {
        type Case = (&'static str, fn(&mut ExportInputs), &'static str);
        let cases: [Case; 10] = [
            ("no key", |i| i.api_key_env = None, "no API key"),
            (
                "blank key",
                |i| i.api_key_env = Some(" \n".into()),
                "is empty",
            ),
            (
                "two-line key",
                |i| i.api_key_env = Some("ab\ncd".into()),
                "cannot be sent in an HTTP header",
            ),
            (
                "no workflows",
                |i| i.workflows.clear(),
                "no workflows to export",
            ),
            (
                "dot id",
                |i| i.workflows = vec!["..".into()],
                "invalid workflow id `..`",
            ),
            (
                "ftp url",
                |i| i.base_url = "ftp://h/x".into(),
                "scheme `ftp`",
            ),
            (
                "not a url",
                |i| i.base_url = "orchestra".into(),
                "invalid `--base-url` `orchestra`",
            ),
            (
                "password in a bad url",
                |i| i.base_url = "ftp://user:hunter2@h/x".into(),
                "invalid `--base-url` `ftp://user:***@h/x`",
            ),
            (
                "password in an unparsable url",
                |i| i.base_url = "http://user:hunter2@".into(),
                "invalid `--base-url` `http://***@`",
            ),
            (
                "missing key file",
                |i| i.api_key_file = Some("/nonexistent/key".into()),
                "cannot read API key file `/nonexistent/key`",
            ),
        ];
        for (name, mutate, want) in cases {
            let mut i = inputs();
            mutate(&mut i);
            let err = i.validate().unwrap_err().to_string();
            assert!(err.contains(want), "{name}: {err}");
        }
    }

    #[test]
    fn workflow_lines_skip_blanks_and_comments_and_dedupe() {
        let text = "# prod\nwf-1\n\n  wf-2  \n# wf-3\nwf-1\n";
        assert_eq!(parse_workflow_lines(text), ["wf-1", "wf-2", "wf-1"]);
        let mut i = inputs();
        i.workflows = parse_workflow_lines(text);
        assert_eq!(i.validate().unwrap().workflow_ids, ["wf-1", "wf-2"]);
    }

    #[test]
    fn a_workflows_file_of_a_million_ids_is_read_in_order_without_repeats() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("workflows.txt");
        let mut text = String::from("# every workflow of the account\n");
        for i in 0..1_000_000 {
            text.push_str(&format!("wf-{i}\n"));
        }
        for i in (0..1_000_000).step_by(1000) {
            text.push_str(&format!("wf-{i}\n"));
        }
        std::fs::write(&path, text).unwrap();
        let mut i = inputs();
        i.workflows = vec!["wf-999999".to_owned(), "first".to_owned()];
        i.workflows_file = Some(path);
        let ids = i.validate().unwrap().workflow_ids;
        assert_eq!(ids.len(), 1_000_001);
        assert_eq!(ids[..3], ["wf-999999", "first", "wf-0"]);
        assert_eq!(ids.last().map(String::as_str), Some("wf-999998"));
    }

    #[test]
    fn key_file_wins_and_is_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "from-file\n").unwrap();
        let mut i = inputs();
        i.api_key_file = Some(path);
        let config = i.validate().unwrap();
        assert_eq!(format!("{:?}", config.client.key), "ApiKey(***)");
        assert!(!format!("{config:?}").contains("from-file"));
    }
}
