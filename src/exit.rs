//! Exit codes of `orchestra-export`, documented in one place (also in `docs/exporting.md`).

/// Every workflow was exported completely.
pub const SUCCESS: i32 = 0;
/// Some workflows failed; the others were exported and committed.
pub const PARTIAL_FAILURE: i32 = 1;
/// Bad command line, configuration or input file; nothing was fetched.
pub const USAGE: i32 = 2;
/// The API rejected the key (401/403); the export stopped.
pub const AUTH: i32 = 3;
/// The dataset could not be written (permissions, disk full, `--out` is a file; on object
/// storage: no such bucket, credentials refused, endpoint down, no conditional writes).
pub const OUTPUT: i32 = 4;
/// The API could not be reached at all: connection refused, no route, connect timeout.
pub const UNREACHABLE: i32 = 5;
/// Another export is writing to the same `--out`, or took the object storage lock over from this
/// one.
pub const LOCKED: i32 = 6;
/// The API's host name does not resolve (DNS).
pub const DNS: i32 = 7;
/// The TLS handshake with the API failed: certificate, protocol, or `https` to a plain-HTTP
/// server.
pub const TLS: i32 = 8;
/// `verify`: the dataset differs from the API (each differing workflow is named on stderr).
pub const DIFFERS: i32 = 9;
/// Stopped by SIGINT/SIGTERM; what was fetched before is committed.
pub const INTERRUPTED: i32 = 130;
/// A bug: an invariant broke. Please report it.
pub const INTERNAL: i32 = 70;

/// Every exit code with what it means, for `--help`.
pub const CODES: &[(i32, &str)] = &[
    (SUCCESS, "every workflow exported completely"),
    (
        PARTIAL_FAILURE,
        "some workflows failed or were not finished; the rest is committed",
    ),
    (
        USAGE,
        "bad command line, configuration or input file; nothing was fetched",
    ),
    (AUTH, "the API rejected the key (401/403)"),
    (OUTPUT, "the dataset could not be written"),
    (
        UNREACHABLE,
        "the API could not be reached (connection refused, no route, timeout)",
    ),
    (LOCKED, "another export holds the dataset's lock"),
    (DNS, "the API's host name does not resolve"),
    (TLS, "the TLS handshake with the API failed"),
    (DIFFERS, "`verify`: the dataset differs from the API"),
    (INTERNAL, "a bug: please report it"),
    (
        INTERRUPTED,
        "interrupted (SIGINT/SIGTERM); what was fetched is committed",
    ),
];
