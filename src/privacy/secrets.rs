//! The `secret` detector: API keys and tokens by their shapes. Every shape starts with a
//! literal (`sk-`, `ghp_`, `AKIA`, `eyJ`, `Bearer`, `-----BEGIN`, …), so the regex engine's
//! prefilter (Teddy, SIMD) skips text without one. Each thread searches with its own clone of
//! the regex: a clone has its own cache pool, so threads never contend for one. Pure.

use std::sync::LazyLock;

use regex::Regex;

use super::detect::Span;

static SECRETS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        // ASCII word boundaries: Unicode ones keep the engine off its DFA on non-ASCII text.
        r"(?-u:\b)(?:",
        r"sk-(?:proj-|ant-(?:api\d\d-)?|live-|test-)?[A-Za-z0-9_\-]{20,}",
        r"|(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}",
        r"|gh[pousr]_[A-Za-z0-9]{30,}",
        r"|github_pat_[A-Za-z0-9_]{30,}",
        r"|(?:AKIA|ASIA)[0-9A-Z]{16}",
        r"|xox[abposr]-[A-Za-z0-9\-]{10,}",
        r"|AIza[0-9A-Za-z_\-]{35}",
        r"|glpat-[A-Za-z0-9_\-]{20,}",
        r"|eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}",
        r"|(?:Bearer|bearer|BEARER)[ \t]+[A-Za-z0-9._~+/\-]{16,}=*",
        r")",
        r"|-----BEGIN[A-Z ]*PRIVATE KEY-----[\s\S]*?-----END[A-Z ]*PRIVATE KEY-----",
    ))
    .expect("the secret patterns are valid")
});

thread_local! {
    static LOCAL: Regex = SECRETS.clone();
}

/// Appends the secrets in `text`, labelled `label`.
pub fn secrets(text: &str, label: u16, out: &mut Vec<Span>) {
    LOCAL.with(|regex| {
        out.extend(regex.find_iter(text).map(|m| Span {
            start: m.start(),
            end: m.end(),
            label,
        }));
    });
}
