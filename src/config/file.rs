//! The `--config` TOML file: every key optional, flags win over it. Errors say the line, the key,
//! what the key takes, and suggest the key meant when one is misspelt.

use crate::dataset::delta::TableFormat;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::units::{self, DurationLimits};
use super::{API_KEY_ENV, ConfigError, parse_base_url};
use crate::api;
use crate::dataset::{Location, Shard};

/// Settings from a `--config` TOML file; every key is optional and flags win over it.
/// Relative paths in it are relative to the file's folder.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub base_url: Option<String>,
    pub api_key_file: Option<PathBuf>,
    /// Never allowed: present only to refuse it with a clear message.
    api_key: Option<toml::Value>,
    pub workflows: Option<Vec<String>>,
    pub workflows_file: Option<PathBuf>,
    pub all_workflows: Option<bool>,
    pub out: Option<PathBuf>,
    pub page_size: Option<u32>,
    pub concurrency: Option<usize>,
    #[serde(default, deserialize_with = "duration")]
    pub request_timeout: Option<Duration>,
    pub max_retries: Option<u32>,
    pub max_rps: Option<f64>,
    #[serde(default, deserialize_with = "size")]
    pub max_response_size: Option<u64>,
    #[serde(default, deserialize_with = "duration")]
    pub retry_delay: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub lookback: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub unfinished_horizon: Option<Duration>,
    pub with_steps: Option<bool>,
    /// `"K/N"`: export only shard K (from 0) of N; see [`Shard`].
    #[serde(default, deserialize_with = "shard")]
    pub shard: Option<Shard>,
    /// `_manifest/` files kept (the newest); older ones are removed after an export.
    pub keep_manifests: Option<u32>,
    /// `"hive"` (the default) or `"delta"`.
    #[serde(default, deserialize_with = "table_format")]
    pub table_format: Option<TableFormat>,
    /// The field policy.
    pub privacy: Option<PrivacyFile>,
}

/// `[privacy]`: what is masked, hashed and dropped before anything is written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyFile {
    pub mask: Option<Vec<String>>,
    pub hash: Option<Vec<String>>,
    pub drop: Option<Vec<String>>,
    pub hash_key_file: Option<PathBuf>,
    /// Never allowed: present only to refuse it with a clear message.
    hash_key: Option<toml::Value>,
    /// `[[privacy.pattern]]`: custom detectors.
    #[serde(default)]
    pub pattern: Vec<PatternFile>,
}

impl PrivacyFile {
    /// The custom detectors, as `(name, regex)`.
    pub fn patterns(&self) -> Vec<(String, String)> {
        self.pattern
            .iter()
            .map(|p| (p.name.clone(), p.regex.clone()))
            .collect()
    }
}

/// One `[[privacy.pattern]]`: `name = "employee_id"`, `regex = "EMP-[0-9]{6}"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatternFile {
    pub name: String,
    pub regex: String,
}

/// Every key a config file may set, with what it takes (for errors and suggestions).
const KEYS: &[(&str, &str)] = &[
    ("base_url", "a URL string"),
    ("api_key_file", "a path string"),
    (
        "workflows",
        "a list of workflow ids, like [\"wf-1\", \"wf-2\"]",
    ),
    ("workflows_file", "a path string"),
    ("all_workflows", "`true` or `false`"),
    ("out", "a folder path or object store URL string"),
    ("page_size", "a whole number from 1 to 100000"),
    ("concurrency", "a whole number from 1 to 256"),
    ("request_timeout", "a duration like `60`, `30s` or `1h30m`"),
    ("max_retries", "a whole number from 0 to 50"),
    ("max_rps", "a number of requests per second"),
    (
        "max_response_size",
        "a size like `512KB` or `256MB`, or a number of bytes",
    ),
    ("retry_delay", "a duration like `0.25`, `250ms` or `2s`"),
    ("lookback", "a duration like `30m`, `1h` or `2d`"),
    ("unfinished_horizon", "a duration like `7d`"),
    ("with_steps", "`true` or `false`"),
    ("shard", "a string `K/N`, like \"0/4\""),
    ("keep_manifests", "a whole number from 1 to 100000"),
    ("table_format", "`\"hive\"` or `\"delta\"`"),
    (
        "privacy",
        "a table `[privacy]` with `mask`, `hash`, `drop`, `hash_key_file` and `[[privacy.pattern]]` entries",
    ),
];

/// Every key `[privacy]` may set, with what it takes.
const PRIVACY_KEYS: &[(&str, &str)] = &[
    (
        "mask",
        "a list of detectors, like [\"email\", \"phone\", \"card\", \"secret\", \"ip\"]",
    ),
    ("hash", "a list of field paths, like [\"inputs.user_id\"]"),
    (
        "drop",
        "a list of field paths, like [\"all_outputs.retriever\"]",
    ),
    ("hash_key_file", "a path string"),
    (
        "pattern",
        "`[[privacy.pattern]]` tables with `name` and `regex` strings",
    ),
];

/// Takes a duration as seconds (`60`, `0.25`) or as text (`"30s"`, `"1h30m"`); bounds are
/// checked by [`ConfigFile::check`], which knows the key.
fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    struct Visitor;
    impl serde::de::Visitor<'_> for Visitor {
        type Value = Duration;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a duration like `60`, `30s`, `5m` or `1h30m`")
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Duration, E> {
            self.visit_f64(v as f64)
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Duration, E> {
            self.visit_f64(v as f64)
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Duration, E> {
            units::parse_duration(&v.to_string()).map_err(E::custom)
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
            units::parse_duration(v).map_err(E::custom)
        }
    }
    d.deserialize_any(Visitor).map(Some)
}

/// Takes a size as bytes (`1048576`) or as text (`"512KB"`).
fn size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    struct Visitor;
    impl serde::de::Visitor<'_> for Visitor {
        type Value = u64;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a size like `512KB` or `256MB`, or a number of bytes")
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v)
                .map_err(|_| E::custom(format!("`{v}` is not a size")))
                .and_then(|v| self.visit_u64(v))
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<u64, E> {
            units::check_size(v).map_err(|bounds| E::custom(format!("`{v}` is not {bounds}")))
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<u64, E> {
            units::parse_size(v).map_err(E::custom)
        }
    }
    d.deserialize_any(Visitor).map(Some)
}

fn table_format<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<TableFormat>, D::Error> {
    let text = <String as Deserialize>::deserialize(d)?;
    TableFormat::parse(&text).map(Some).ok_or_else(|| {
        serde::de::Error::custom(format!("`{text}` is not a table format: `hive` or `delta`"))
    })
}

fn shard<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Shard>, D::Error> {
    let text = <String as Deserialize>::deserialize(d)?;
    text.parse().map(Some).map_err(serde::de::Error::custom)
}

impl ConfigFile {
    /// Reads and checks a config file: every error names the line and the key at fault.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ConfigFile {
            path: path.to_path_buf(),
            source,
        })?;
        let bad = |message: String| ConfigError::ConfigInvalid {
            path: path.to_path_buf(),
            message,
        };
        let table: toml::Table =
            toml::from_str(&text).map_err(|e| bad(syntax_message(&text, &e)))?;
        for key in table.keys() {
            check_key(&text, key, KEYS, "").map_err(bad)?;
        }
        if let Some(toml::Value::Table(privacy)) = table.get("privacy") {
            for key in privacy.keys() {
                check_key(&text, key, PRIVACY_KEYS, "[privacy] ").map_err(bad)?;
            }
        }
        let mut file: ConfigFile =
            toml::from_str(&text).map_err(|e| bad(type_message(&text, &e)))?;
        let dir = path.parent().unwrap_or(Path::new(""));
        let hash_key_file = file.privacy.as_mut().and_then(|p| p.hash_key_file.as_mut());
        for p in [
            &mut file.api_key_file,
            &mut file.workflows_file,
            &mut file.out,
        ]
        .into_iter()
        .flatten()
        .chain(hash_key_file)
        {
            if p.is_relative() && !p.as_os_str().is_empty() && !Location::is_url(p) {
                *p = dir.join(&*p);
            }
        }
        file.check()
            .map_err(|(key, message)| bad(at_key(&text, key, &message)))?;
        Ok(file)
    }

    /// Checks values the types alone do not; the error names its key.
    fn check(&self) -> Result<(), (&'static str, String)> {
        if self.api_key.is_some() {
            return Err((
                "api_key",
                format!(
                    "`api_key` is not allowed: keep the key out of config files; set `{API_KEY_ENV}` or `api_key_file`"
                ),
            ));
        }
        if self.privacy.as_ref().is_some_and(|p| p.hash_key.is_some()) {
            return Err((
                "hash_key",
                format!(
                    "`hash_key` is not allowed: keep the key out of config files; set `{}` or `hash_key_file`",
                    crate::privacy::HASH_KEY_ENV
                ),
            ));
        }
        let range = |key: &'static str, value: Option<u64>, low: u64, high: u64| match value {
            Some(n) if !(low..=high).contains(&n) => Err((
                key,
                format!("`{key}` must be between {low} and {high}, not {n}"),
            )),
            _ => Ok(()),
        };
        range("page_size", self.page_size.map(u64::from), 1, 100_000)?;
        range("concurrency", self.concurrency.map(|n| n as u64), 1, 256)?;
        range("max_retries", self.max_retries.map(u64::from), 0, 50)?;
        range(
            "keep_manifests",
            self.keep_manifests.map(u64::from),
            1,
            100_000,
        )?;
        if let Some(rps) = self.max_rps {
            units::check_max_rps(rps).map_err(|e| ("max_rps", format!("`max_rps`: {e}")))?;
        }
        let durations: [(&'static str, Option<Duration>, DurationLimits); 4] = [
            (
                "request_timeout",
                self.request_timeout,
                units::REQUEST_TIMEOUT,
            ),
            ("retry_delay", self.retry_delay, units::RETRY_DELAY),
            ("lookback", self.lookback, units::LOOKBACK),
            (
                "unfinished_horizon",
                self.unfinished_horizon,
                units::UNFINISHED_HORIZON,
            ),
        ];
        for (key, value, limits) in durations {
            if let Some(d) = value {
                limits.check(d).map_err(|bounds| {
                    (
                        key,
                        format!(
                            "`{key}` must be {bounds}, not {}",
                            units::format_duration(d)
                        ),
                    )
                })?;
            }
        }
        if let Some(url) = &self.base_url {
            parse_base_url(url).map_err(|e| {
                let message = match e {
                    ConfigError::BaseUrl { url, reason } => {
                        format!("`base_url` `{url}`: {reason}")
                    }
                    other => other.to_string(),
                };
                ("base_url", message)
            })?;
        }
        for id in self.workflows.iter().flatten() {
            api::check_workflow_id(id).map_err(|reason| {
                (
                    "workflows",
                    format!(
                        "`workflows`: invalid workflow id `{}`: {reason}",
                        crate::terminal::safe(id)
                    ),
                )
            })?;
        }
        let hash_key_file = self.privacy.as_ref().and_then(|p| p.hash_key_file.clone());
        for (key, path) in [
            ("api_key_file", &self.api_key_file),
            ("workflows_file", &self.workflows_file),
            ("hash_key_file", &hash_key_file),
        ] {
            if let Some(path) = path {
                check_readable_file(path)
                    .map_err(|e| (key, format!("`{key}` `{}`: {e}", path.display())))?;
            }
        }
        if self.out.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            return Err(("out", "`out` must not be empty".to_owned()));
        }
        Ok(())
    }
}

/// A key the file may not have: `api_key` (refused by [`ConfigFile::check`] with its reason
/// passes here), or an unknown one, with the closest known key as a suggestion.
fn check_key(text: &str, key: &str, keys: &[(&str, &str)], table: &str) -> Result<(), String> {
    let refused = ["api_key", "hash_key"];
    if refused.contains(&key) || keys.iter().any(|(known, _)| *known == key) {
        return Ok(());
    }
    let shown = crate::terminal::safe(key);
    let suggestion = keys
        .iter()
        .map(|(known, _)| (strsim::damerau_levenshtein(key, known), *known))
        .filter(|(distance, known)| *distance <= 2.max(known.len() / 4))
        .min();
    let message = match suggestion {
        Some((_, known)) => format!("unknown key {table}`{shown}`; did you mean `{known}`?"),
        None => format!(
            "unknown key {table}`{shown}`; the keys are {} (see `export.example.toml`)",
            keys.iter()
                .map(|(k, _)| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    Err(at_key(text, key, &message))
}

/// `line N: message`, N being the line that sets `key` (when found).
fn at_key(text: &str, key: &str, message: &str) -> String {
    match key_line(text, key) {
        Some(line) => format!("line {line}: {message}"),
        None => message.to_owned(),
    }
}

/// The 1-based line where `key = …` is set at the top level.
fn key_line(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|line| {
            line.split_once('=')
                .is_some_and(|(k, _)| k.trim().trim_matches(['"', '\'']) == key)
        })
        .map(|i| i + 1)
}

/// 1-based line and column of byte `at`.
fn line_column(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// A syntax error: where it is and what the parser expected; never the file's text.
fn syntax_message(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim().replace('\n', "; ");
    match error.span() {
        Some(span) => {
            let (line, column) = line_column(text, span.start);
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

/// A value of the wrong type: the line, the key, and what the key takes.
fn type_message(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim().replace('\n', "; ");
    let Some(span) = error.span() else {
        return message;
    };
    let (line, _) = line_column(text, span.start);
    let Some(key) = key_above(text, span.start) else {
        return format!("line {line}: {message}");
    };
    let takes = KEYS
        .iter()
        .chain(PRIVACY_KEYS)
        .find(|(k, _)| *k == key)
        .map(|(_, t)| *t);
    // serde says `invalid type: string "ten", expected u32`: say what the key takes instead,
    // and keep messages our own parsers wrote (they quote the value and the forms).
    match (
        takes,
        message
            .strip_prefix("invalid type: ")
            .or(message.strip_prefix("invalid value: ")),
    ) {
        (Some(takes), Some(found)) => {
            let found = found.split(", expected").next().unwrap_or(found);
            format!(
                "line {line}: `{key}` takes {takes}, not {}",
                describe_found(found)
            )
        }
        _ => format!("line {line}: `{key}`: {message}"),
    }
}

/// `string "ten"` → `a string`, `integer `-1`` → `-1`: what serde found, without quoting text.
fn describe_found(found: &str) -> String {
    let (kind, value) = found.split_once(' ').unwrap_or((found, ""));
    match kind {
        "string" => "a string".to_owned(),
        "integer" | "floating" => value
            .trim_start_matches("point ")
            .trim_matches('`')
            .to_owned(),
        "boolean" => value.trim_matches('`').to_owned(),
        "sequence" => "a list".to_owned(),
        "map" => "a table".to_owned(),
        other => format!("a {other}"),
    }
}

/// The key of the nearest `key = …` line at or above byte `at` (an array may span lines).
fn key_above(text: &str, at: usize) -> Option<String> {
    let end = text.get(at..)?.find('\n').map_or(text.len(), |i| at + i);
    text[..end].lines().rev().find_map(|line| {
        let key = line.split_once('=')?.0.trim().trim_matches(['"', '\'']);
        let plain = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        plain.then(|| key.to_owned())
    })
}

fn check_readable_file(path: &Path) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(_) => Err("is not a file".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<ConfigFile, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("export.toml");
        std::fs::write(&path, text).unwrap();
        ConfigFile::load(&path).map_err(|e| e.to_string())
    }

    #[test]
    fn every_listed_key_is_a_field_and_every_field_is_listed() {
        for (key, _) in KEYS {
            // A value of the wrong type for every key: refused for its type, never as unknown.
            let wrong = if *key == "privacy" { "1" } else { "{ x = 1 }" };
            let err = toml::from_str::<ConfigFile>(&format!("{key} = {wrong}")).unwrap_err();
            assert!(!err.message().contains("unknown field"), "{key}: {err}");
        }
        let err = toml::from_str::<ConfigFile>("nope = 1").unwrap_err();
        let fields = err.message().split("expected one of ").nth(1).unwrap();
        assert_eq!(fields.matches('`').count() / 2, KEYS.len() + 1, "{fields}");
    }

    #[test]
    fn the_privacy_table_loads_and_names_its_mistakes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hash.key"), "k".repeat(32)).unwrap();
        let path = dir.path().join("export.toml");
        let load = |text: &str| {
            std::fs::write(&path, text).unwrap();
            ConfigFile::load(&path)
        };
        let file = load(
            "out = \"x\"\n[privacy]\nmask = [\"email\"]\nhash = [\"inputs.user_id\"]\nhash_key_file = \"hash.key\"\n[[privacy.pattern]]\nname = \"emp\"\nregex = \"EMP-[0-9]+\"\n",
        )
        .unwrap();
        let privacy = file.privacy.unwrap();
        assert_eq!(privacy.mask, Some(vec!["email".to_owned()]));
        assert_eq!(privacy.hash_key_file, Some(dir.path().join("hash.key")));
        assert_eq!(privacy.pattern[0].regex, "EMP-[0-9]+");
        let cases = [
            (
                "[privacy]\nmask = \"email\"\n",
                "line 2: `mask` takes a list of detectors, like [\"email\", \"phone\", \"card\", \"secret\", \"ip\"], not a string",
            ),
            (
                "[privacy]\nmasks = [\"email\"]\n",
                "line 2: unknown key [privacy] `masks`; did you mean `mask`?",
            ),
            (
                "[privacy]\nhash_key = \"secret-value\"\n",
                "line 2: `hash_key` is not allowed",
            ),
            (
                "[privacy]\nhash_key_file = \"missing.key\"\n",
                "line 2: `hash_key_file` `",
            ),
            (
                "[[privacy.pattern]]\nname = \"x\"\n",
                "missing field `regex`",
            ),
        ];
        for (text, want) in cases {
            let e = load(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
            assert!(!e.contains("secret-value"), "{e}");
        }
    }

    #[test]
    fn the_example_config_loads_with_paths_relative_to_it() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("export.example.toml");
        let file = ConfigFile::load(&path).unwrap();
        assert_eq!(file.lookback, Some(Duration::from_secs(3600)));
        assert_eq!(file.request_timeout, Some(Duration::from_secs(60)));
        assert_eq!(
            file.unfinished_horizon,
            Some(Duration::from_secs(7 * 86_400))
        );
        assert_eq!(
            file.out,
            Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("data/export"))
        );
        assert_eq!(file.all_workflows, Some(true));
    }

    #[test]
    fn an_object_store_out_is_kept_as_written() {
        let file = load("out = \"s3://bucket/exports/orchestra\"").unwrap();
        assert_eq!(
            file.out,
            Some(PathBuf::from("s3://bucket/exports/orchestra"))
        );
        let file = load("out = \"data/export\"").unwrap();
        assert!(file.out.unwrap().is_absolute());
    }

    #[test]
    fn durations_and_sizes_take_numbers_and_text_alike() {
        let file = load(
            "request_timeout = 60\nretry_delay = 0.5\nlookback = \"1h30m\"\nmax_response_size = \"512KB\"",
        )
        .unwrap();
        assert_eq!(file.request_timeout, Some(Duration::from_secs(60)));
        assert_eq!(file.retry_delay, Some(Duration::from_millis(500)));
        assert_eq!(file.lookback, Some(Duration::from_secs(5400)));
        assert_eq!(file.max_response_size, Some(512 << 10));
        let file = load("max_response_size = 1048576\nrequest_timeout = \"30s\"").unwrap();
        assert_eq!(file.max_response_size, Some(1 << 20));
        assert_eq!(file.request_timeout, Some(Duration::from_secs(30)));
    }

    #[test]
    fn bad_config_files_name_the_line_and_the_key() {
        let cases = [
            (
                "page_size = 0",
                "line 1: `page_size` must be between 1 and 100000, not 0",
            ),
            (
                "page_size = 10\nconcurency = 3",
                "line 2: unknown key `concurency`; did you mean `concurrency`?",
            ),
            ("lookbak = \"1h\"", "did you mean `lookback`?"),
            (
                "colour = 3",
                "unknown key `colour`; the keys are `base_url`,",
            ),
            (
                "lookback = \"soon\"",
                "line 1: `lookback`: `soon` is not a duration like",
            ),
            ("api_key = \"sk-123\"", "line 1: `api_key` is not allowed"),
            (
                "page_size = \"ten\"",
                "line 1: `page_size` takes a whole number from 1 to 100000, not a string",
            ),
            (
                "concurrency = -1",
                "`concurrency` takes a whole number from 1 to 256, not -1",
            ),
            (
                "with_steps = 1",
                "`with_steps` takes `true` or `false`, not 1",
            ),
            ("page_size = 5\n[net\nx = 1", "line 2, column 5: "),
            ("out = ", "line 1, column 7: "),
            (
                "request_timeout = 0",
                "line 1: `request_timeout` must be a duration above 0 and at most 1d, not 0s",
            ),
            (
                "retry_delay = 61",
                "`retry_delay` must be a duration above 0 and at most 1m, not 1m1s",
            ),
            (
                "request_timeout = true",
                "`request_timeout` takes a duration like `60`, `30s` or `1h30m`, not true",
            ),
            ("shard = \"3/2\"", "the shard index K must be below N"),
            ("shard = 2", "`shard` takes a string `K/N`"),
        ];
        for (text, want) in cases {
            let err = load(text).unwrap_err();
            assert!(
                err.contains(want) && err.contains("export.toml"),
                "{text}:\n  got  {err}\n  want {want}"
            );
            assert!(!err.contains("sk-123"), "the key leaked: {err}");
            assert!(
                !err.contains("`api_key`,"),
                "api_key offered as a key: {err}"
            );
        }
    }
}
