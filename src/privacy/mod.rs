//! Protect: the field policy applied to every value before a byte of it is written. `mask`
//! replaces what the detectors find (`[email]`, …) in every text value; `hash` replaces the
//! values of the paths it names with their keyed HMAC-SHA256 (lowercase hex, the same across
//! exports, tables and shards for one key); `drop` replaces them with NULL. The key comes from
//! the environment or a key file and only its fingerprint is ever recorded.
//!
//! This module holds the rules and the pure functions that apply them to parsed values, texts
//! and compact JSON; the flattener applies them to its cells (`flatten::protect`), the API client
//! to the error bodies it quotes.

pub mod detect;
mod mask;
mod numbers;
pub mod path;
mod records;
mod secrets;

use std::path::Path;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use detect::Builtin;
pub use mask::Masker;
pub use path::{Field, Name, RulePath};
pub use records::Hidden;

/// Environment variable holding the hashing key.
pub const HASH_KEY_ENV: &str = "ORCHESTRA_HASH_KEY";
/// Shortest key accepted, in bytes of its text (`openssl rand -hex 32` gives 64).
pub const MIN_KEY_BYTES: usize = 16;

/// What a rule does to the values its path selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Not stored: NULL (the column's type is kept).
    Drop,
    /// Its keyed HMAC-SHA256 in lowercase hex.
    Hash,
}

/// The rules as written in `[privacy]` or given as flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyRules {
    /// Detector names: built-in ones and the names of `patterns`.
    pub mask: Vec<String>,
    /// Paths whose values are hashed.
    pub hash: Vec<String>,
    /// Paths whose values are dropped.
    pub drop: Vec<String>,
    /// Custom detectors: `(name, regex)`; each is applied (a pattern is defined to be used).
    pub patterns: Vec<(String, String)>,
}

impl PolicyRules {
    /// Whether there is no rule at all.
    pub fn is_empty(&self) -> bool {
        self.mask.is_empty()
            && self.hash.is_empty()
            && self.drop.is_empty()
            && self.patterns.is_empty()
    }
}

/// The hashing key. Neither `Debug` nor anything else shows it.
#[derive(Clone)]
pub struct HashKey(Vec<u8>);

impl std::fmt::Debug for HashKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HashKey(***)")
    }
}

impl HashKey {
    /// A key from its text (surrounding whitespace and a BOM removed); it must be at least
    /// [`MIN_KEY_BYTES`] long.
    pub fn parse(text: &str, from: &str) -> Result<Self, String> {
        let key = text.trim_start_matches('\u{feff}').trim();
        if key.len() < MIN_KEY_BYTES {
            return Err(format!(
                "the hashing key from {from} is {} bytes; it must have at least {MIN_KEY_BYTES} (hint: `openssl rand -hex 32`)",
                key.len()
            ));
        }
        Ok(Self(key.as_bytes().to_vec()))
    }

    /// The key from `file` if given, else from the environment value `env`; `None` when neither
    /// is set.
    pub fn load(file: Option<&Path>, env: Option<&str>) -> Result<Option<Self>, String> {
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read hashing key file `{}`: {e}", path.display()))?;
            return Self::parse(&text, &format!("`{}`", path.display())).map(Some);
        }
        env.map(|v| Self::parse(v, &format!("`{HASH_KEY_ENV}`")))
            .transpose()
    }
}

/// HMAC-SHA256 with the policy's key.
struct Hasher(aws_lc_rs::hmac::Key);

impl Hasher {
    fn hex(&self, data: &[u8]) -> String {
        let tag = aws_lc_rs::hmac::sign(&self.0, data);
        let mut out = String::with_capacity(64);
        for b in tag.as_ref() {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        out
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// What the manifest and the state record of a policy: its rules and a fingerprint of the key,
/// never the key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRecord {
    pub mask: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patterns: Vec<PatternRecord>,
    pub hash: Vec<String>,
    pub drop: Vec<String>,
    /// The first 16 hex digits of HMAC-SHA256(key, "orchestra-export key fingerprint"); set
    /// when values are hashed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_fingerprint: Option<String>,
}

/// A custom detector as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatternRecord {
    pub name: String,
    /// The first 16 hex digits of the SHA-256 of its regex: a regex may spell out the very
    /// value it masks, so it is not written.
    pub regex_sha256: String,
}

impl PolicyRecord {
    /// Whether this is no policy at all.
    pub fn is_none(&self) -> bool {
        *self == PolicyRecord::default()
    }

    /// One line for people: `mask email, phone; hash inputs.user_id (key 1a2b…); drop …`, or
    /// `none`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        let mut mask = self.mask.clone();
        mask.extend(self.patterns.iter().map(|p| p.name.clone()));
        mask.dedup();
        if !mask.is_empty() {
            parts.push(format!("mask {}", mask.join(", ")));
        }
        if !self.hash.is_empty() {
            let key = self
                .key_fingerprint
                .as_deref()
                .map(|f| format!(" (key {f})"))
                .unwrap_or_default();
            parts.push(format!("hash {}{key}", self.hash.join(", ")));
        }
        if !self.drop.is_empty() {
            parts.push(format!("drop {}", self.drop.join(", ")));
        }
        if parts.is_empty() {
            "none".to_owned()
        } else {
            parts.join("; ")
        }
    }
}

/// How many values a policy changed, by what it did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Protected {
    /// Values (a cell, a record, a step field) in which a mask replaced something.
    pub masked: u64,
    /// Values replaced by their digest.
    pub hashed: u64,
    /// Values dropped.
    pub dropped: u64,
}

/// A ready policy: detectors compiled, paths parsed, key loaded.
pub struct Policy {
    masker: Masker,
    rules: Vec<(Action, RulePath)>,
    hasher: Option<Hasher>,
    record: PolicyRecord,
    counts: [AtomicU64; 3],
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Policy({})", self.record.describe())
    }
}

static NONE: LazyLock<Policy> = LazyLock::new(Policy::default);

impl Default for Policy {
    /// No rule: every value is stored as it is.
    fn default() -> Self {
        Policy {
            masker: Masker::default(),
            rules: Vec::new(),
            hasher: None,
            record: PolicyRecord::default(),
            counts: Default::default(),
        }
    }
}

impl Policy {
    /// No rule: every value is stored as it is.
    pub fn none() -> &'static Policy {
        &NONE
    }

    /// Checks and compiles `rules`; `key` is needed when something is hashed. Errors name the
    /// rule at fault and what it may be.
    pub fn build(rules: &PolicyRules, key: Option<&HashKey>) -> Result<Policy, String> {
        let mut patterns = Vec::new();
        for (name, regex) in &rules.patterns {
            check_pattern_name(name)?;
            if patterns.iter().any(|(n, _): &(String, Regex)| n == name)
                || Builtin::parse(name).is_some()
            {
                return Err(format!(
                    "`[[privacy.pattern]]` name `{name}` is used twice (the built-in detectors are {})",
                    builtin_names()
                ));
            }
            let compiled = regex::RegexBuilder::new(regex)
                .size_limit(16 << 20)
                .build()
                .map_err(|e| {
                    format!(
                        "`[[privacy.pattern]]` `{name}`: invalid regex: {}",
                        one_line(&e.to_string())
                    )
                })?;
            if compiled.is_match("") {
                return Err(format!(
                    "`[[privacy.pattern]]` `{name}`: the regex matches empty text; it must match something"
                ));
            }
            patterns.push((name.clone(), compiled));
        }
        let mut builtins = Vec::new();
        for name in &rules.mask {
            match Builtin::parse(name) {
                Some(b) if !builtins.contains(&b) => builtins.push(b),
                Some(_) => {}
                None if patterns.iter().any(|(n, _)| n == name) => {}
                None => {
                    let suggestion = Builtin::ALL
                        .iter()
                        .map(|b| b.name())
                        .chain(patterns.iter().map(|(n, _)| n.as_str()))
                        .map(|known| (strsim::damerau_levenshtein(name, known), known))
                        .filter(|(d, _)| *d <= 2)
                        .min()
                        .map(|(_, k)| format!("; did you mean `{k}`?"))
                        .unwrap_or_default();
                    return Err(format!(
                        "`mask`: unknown detector `{}`{suggestion} (the detectors are {}, and the names of `[[privacy.pattern]]`)",
                        crate::terminal::safe(name),
                        builtin_names()
                    ));
                }
            }
        }
        builtins.sort();
        let mut parsed = Vec::new();
        for (action, list, key_name) in [
            (Action::Drop, &rules.drop, "drop"),
            (Action::Hash, &rules.hash, "hash"),
        ] {
            for text in list {
                let path = RulePath::parse(text).map_err(|e| format!("`{key_name}`: {e}"))?;
                if let Some((other, earlier)) = parsed
                    .iter()
                    .find(|(_, p): &&(Action, RulePath)| p.overlaps(&path))
                {
                    let name = |a: &Action| match a {
                        Action::Drop => "drop",
                        Action::Hash => "hash",
                    };
                    return Err(format!(
                        "`{}` `{}` and `{key_name}` `{text}` name the same values; keep one rule for them",
                        name(other),
                        earlier.text
                    ));
                }
                parsed.push((action, path));
            }
        }
        let hashes = parsed.iter().any(|(a, _)| *a == Action::Hash);
        let hasher = match (hashes, key) {
            (true, None) => {
                return Err(format!(
                    "`hash` needs a key: set `{HASH_KEY_ENV}` or `hash_key_file` (`--hash-key-file`); hint: create one with `openssl rand -hex 32` and keep it with your other secrets"
                ));
            }
            (true, Some(k)) => Some(Hasher(aws_lc_rs::hmac::Key::new(
                aws_lc_rs::hmac::HMAC_SHA256,
                &k.0,
            ))),
            (false, _) => None,
        };
        let mut mask: Vec<String> = builtins.iter().map(|b| b.name().to_owned()).collect();
        mask.extend(
            rules
                .mask
                .iter()
                .filter(|n| Builtin::parse(n).is_none())
                .cloned(),
        );
        mask.dedup();
        let record = PolicyRecord {
            mask,
            patterns: {
                let mut p: Vec<PatternRecord> = rules
                    .patterns
                    .iter()
                    .map(|(name, regex)| PatternRecord {
                        name: name.clone(),
                        regex_sha256: sha256_hex(regex)[..16].to_owned(),
                    })
                    .collect();
                p.sort_by(|a, b| a.name.cmp(&b.name));
                p
            },
            hash: sorted(&rules.hash),
            drop: sorted(&rules.drop),
            key_fingerprint: hasher
                .as_ref()
                .map(|h| h.hex(b"orchestra-export key fingerprint")[..16].to_owned()),
        };
        Ok(Policy {
            masker: Masker::new(&builtins, &patterns),
            rules: parsed,
            hasher,
            record,
            counts: Default::default(),
        })
    }

    /// Counts a value changed by `action` (`None`: masked).
    pub fn count(&self, action: Option<Action>) {
        let i = match action {
            None => 0,
            Some(Action::Hash) => 1,
            Some(Action::Drop) => 2,
        };
        self.counts[i].fetch_add(1, Ordering::Relaxed);
    }

    /// What the policy changed so far, across every thread that applied it.
    pub fn protected(&self) -> Protected {
        let n = |i: usize| self.counts[i].load(Ordering::Relaxed);
        Protected {
            masked: n(0),
            hashed: n(1),
            dropped: n(2),
        }
    }

    /// Whether the policy changes nothing.
    pub fn is_empty(&self) -> bool {
        self.masker.is_empty() && self.rules.is_empty()
    }

    /// Whether some path is hashed or dropped.
    pub fn has_path_rules(&self) -> bool {
        !self.rules.is_empty()
    }

    /// The rules and key fingerprint, as recorded.
    pub fn record(&self) -> &PolicyRecord {
        &self.record
    }

    /// The detectors.
    pub fn masker(&self) -> &Masker {
        &self.masker
    }

    /// The path rules, drops before hashes (a value both dropped and hashed is dropped).
    pub fn rules(&self) -> impl Iterator<Item = (Action, &RulePath)> {
        self.rules.iter().map(|(a, p)| (*a, p))
    }

    /// The digest of a value's text.
    pub fn digest(&self, text: &str) -> String {
        match &self.hasher {
            Some(h) => h.hex(text.as_bytes()),
            // `build` refuses hash rules without a key; nothing else asks.
            None => String::new(),
        }
    }

    /// What `action` turns `value` into: NULL, or the digest of its text (a string's content,
    /// anything else's compact JSON) as a string.
    pub fn act(&self, action: Action, value: &Value) -> Value {
        self.count(Some(action));
        self.replacement(action, value)
    }

    /// [`Policy::act`] without counting (for a second copy of a value counted already).
    pub fn replacement(&self, action: Action, value: &Value) -> Value {
        match action {
            Action::Drop => Value::Null,
            Action::Hash => Value::String(self.digest(&text_of(value))),
        }
    }
}

/// The rule paths as recorded: sorted, each once (the order rules are given in does not
/// change what they do).
fn sorted(list: &[String]) -> Vec<String> {
    let mut list = list.to_vec();
    list.sort();
    list.dedup();
    list
}

/// SHA-256 in lowercase hex.
fn sha256_hex(text: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    digest
        .as_ref()
        .iter()
        .flat_map(|b| [HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]])
        .map(char::from)
        .collect()
}

/// A value's text as hashed: a string's content, anything else's compact JSON.
pub fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn builtin_names() -> String {
    Builtin::ALL
        .iter()
        .map(|b| format!("`{}`", b.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A pattern name becomes the mask `[name]`: letters, digits, `_` and `-`.
fn check_pattern_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`[[privacy.pattern]]` name `{}` must be 1 to 40 letters, digits, `_` or `-` (it becomes the mask `[name]`)",
            crate::terminal::safe(name)
        ))
    }
}

#[cfg(test)]
mod tests;
