//! Dataset: streams flattened rows into Hive-partitioned Parquet files under the export root.
//!
//! It owns file layout (`{table}/date=YYYY-MM-DD/part-0.parquet`, or one file per shard), Parquet
//! properties and the memory bound of the writing stage. It never talks to the API and never
//! decides what a row contains (`flatten` does); files reach disk or an object store only
//! through [`storage`] ([`LocalStorage`], [`ObjectStorage`]), picked by [`open`] from `--out`.

mod commit;
pub mod delta;
mod digest;
mod marks;
pub mod object;
pub mod shard;
pub mod storage;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use url::Url;

pub use crate::table::{PartitionDate, Table};
pub use commit::{CommitSummary, PartitionCommit, Revisit, RunKeys, Staged, batches, commit};
pub use marks::DeletionMarks;
pub use object::{ObjectOptions, ObjectStorage, download_tables};
pub use shard::{Layout, Shard};
pub use storage::{LocalStorage, StagedFile, Storage, share_files};
pub use writer::{
    DatasetWriter, PARTITION_FILE, WriteSummary, WriterOptions, WrittenFile, write_jsonl,
    write_snapshot, writer_properties,
};

/// Errors of the dataset stage; each names the file or folder involved.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// A file-system operation failed.
    #[error("cannot {action} `{}`", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A folder or file inside the dataset is a symbolic link (it could point anywhere).
    #[error(
        "`{}` is a symbolic link; folders and files inside a dataset must not be links (they could point outside it)",
        path.display()
    )]
    Link { path: PathBuf },
    /// The export root exists and is not a folder.
    #[error("`{}` is not a directory", path.display())]
    NotADirectory { path: PathBuf },
    /// Another process holds the dataset's lock.
    #[error("`{}` is locked by another export ({holder})", path.display())]
    Locked {
        path: PathBuf,
        holder: String,
        /// On object storage: when the holder's lease runs out unless renewed.
        lease_until: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// This export's lock lease on object storage was lost; it stopped writing.
    #[error("lost the lock `{url}`: {reason}; stopped before changing more objects")]
    LockLost { url: String, reason: String },
    /// The local lock file now names another export: the file lock did not hold.
    #[error(
        "the lock `{}` now names another export ({holder}); stopped before changing more files",
        path.display()
    )]
    LockTaken { path: PathBuf, holder: String },
    /// The object store does not do conditional writes, which the lock needs.
    #[error(
        "`{url}` does not support conditional writes (`If-None-Match`/`If-Match`), which the lock that keeps two exports apart needs"
    )]
    NoConditionalWrites { url: String },
    /// A request to the object store failed.
    #[error("cannot {action} `{url}`")]
    Store {
        action: &'static str,
        url: String,
        #[source]
        source: StoreFailure,
    },
    /// `--out` is not a path or a supported URL.
    #[error("invalid `--out` `{url}`: {reason}")]
    BadUrl { url: String, reason: String },
    /// An environment setting of the dataset stage is invalid.
    #[error("`{name}` is `{value}`: expected {expected}")]
    BadSetting {
        name: &'static str,
        value: String,
        expected: &'static str,
    },
    /// Exports of another layout (unsharded, or another shard count) write this dataset.
    #[error(
        "`{root}` holds a dataset {} (`{evidence}`); this export ({}) would store runs twice",
        shard::describe_found(*found),
        shard::describe_wanted(*wanted)
    )]
    Layout {
        root: String,
        evidence: String,
        found: Option<u32>,
        wanted: Option<Shard>,
    },
    /// `--out` holds files, none of them a dataset's: it is someone else's folder.
    #[error(
        "`{root}` is not empty and is not an orchestra-export dataset (it holds {found}); it is left untouched"
    )]
    NotADataset { root: String, found: String },
    /// The Parquet encoder failed.
    #[error("cannot write Parquet file `{path}`")]
    Parquet {
        path: String,
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// The Delta kernel failed on a table (reading its log, committing, checkpointing).
    #[error("cannot {action} Delta table `{table}`")]
    Delta {
        table: String,
        action: &'static str,
        #[source]
        source: Box<delta_kernel::KernelError>,
    },
    /// Another writer changed a table under this commit in a way it cannot retry over.
    #[error("cannot commit to Delta table `{table}`: {reason}")]
    DeltaConflict { table: String, reason: String },
    /// The dataset's tables are in another format than the one asked for.
    #[error("`{root}` holds {found} tables, not {wanted} ones")]
    TableFormat {
        root: String,
        found: &'static str,
        wanted: &'static str,
    },
}

impl DatasetError {
    pub(crate) fn store(action: &'static str, url: &str, error: object_store::Error) -> Self {
        Self::Store {
            action,
            url: url.to_owned(),
            source: StoreFailure::from_error(&error),
        }
    }

    /// Whether another export holds, or took over, the dataset's lock.
    pub fn is_lock_conflict(&self) -> bool {
        matches!(
            self,
            Self::Locked { .. } | Self::LockLost { .. } | Self::LockTaken { .. }
        )
    }

    /// What the user can do about it, when this error knows better than a generic hint.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            Self::Locked {
                lease_until: Some(until),
                ..
            } => format!(
                "wait for it to finish; if it was killed, its lease runs out at {} and the next export takes the lock over",
                until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            Self::Locked { .. } => {
                "wait for it to finish: the lock is released when that process exits".to_owned()
            }
            Self::LockLost { .. } => "this export was paused or cut off from the store for longer than its lease, and another may have taken the dataset over; run the export again: its state did not advance".to_owned(),
            Self::LockTaken { .. } => "the file lock does not hold on this volume: on NFS, mount without `nolock` and without `local_lock=flock` or `local_lock=all` (NFSv4, or NFSv3 with a working lock manager), and never run two exports into one folder from hosts whose mounts differ; run the export again: its state did not advance".to_owned(),
            Self::NoConditionalWrites { .. } => "use a store with conditional writes (AWS S3, MinIO, Cloudflare R2, Google Cloud Storage, Azure Blob), and leave `AWS_CONDITIONAL_PUT` unset".to_owned(),
            Self::BadUrl { .. } => "`--out` takes a folder, `file:///abs/path`, `s3://bucket/prefix`, `gs://bucket/prefix` or `az://container/prefix`".to_owned(),
            Self::Store { url, source, .. } => source.hint(url),
            Self::Layout { found, .. } => shard::layout_hint(*found),
            Self::NotADataset { .. } => "pass a new or empty folder, or the `--out` of an earlier export".to_owned(),
            Self::TableFormat { found, .. } => format!("pass `--table-format {found}` (or set `table_format = \"{found}\"`) to export into this dataset, or export into a new folder"),
            Self::DeltaConflict { .. } => "run the export again: its state did not advance, and the table is at the last version committed".to_owned(),
            _ => return None,
        })
    }

    pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// An object store failure on one line (response bodies reduced to their error code), sorted
/// into the kinds a user fixes differently.
#[derive(Debug)]
pub struct StoreFailure {
    kind: StoreFailureKind,
    message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StoreFailureKind {
    NoSuchBucket,
    Denied,
    Unreachable,
    Other,
}

/// Longest store message shown.
const MAX_STORE_MESSAGE: usize = 300;

/// `text` cut to about `max` bytes by replacing its middle with `…`: the start says which
/// request failed, the end holds the root cause (`Connection refused`) and the store's code.
fn elide_middle(text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut head = max * 2 / 3;
    while !text.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = text.len() - (max - head);
    while !text.is_char_boundary(tail) {
        tail += 1;
    }
    format!("{}…{}", &text[..head], &text[tail..])
}

/// An error and its causes on one line, each cause added only if the text does not hold it yet
/// (`object_store` and `reqwest` repeat causes in their own messages).
pub(crate) fn unrepeated_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

impl StoreFailure {
    fn from_error(error: &object_store::Error) -> Self {
        let mut text = unrepeated_chain(error);
        let code = xml_tag(&text, "Code");
        let detail = xml_tag(&text, "Message");
        if let Some(start) = text.find("<?xml").or_else(|| text.find("<Error>")) {
            text.truncate(start);
        }
        let mut message = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let message_end = message.trim_end_matches([':', ' ']).len();
        message.truncate(message_end);
        if let Some(code) = &code {
            message.push_str(&format!(" ({code}"));
            if let Some(detail) = &detail {
                message.push_str(&format!(": {detail}"));
            }
            message.push(')');
        }
        let message = elide_middle(message, MAX_STORE_MESSAGE);
        let code = code.as_deref().unwrap_or("");
        let kind = if code == "NoSuchBucket" {
            StoreFailureKind::NoSuchBucket
        } else if matches!(
            error,
            object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. }
        ) || [
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "AccessDenied",
            "ExpiredToken",
            "InvalidToken",
        ]
        .contains(&code)
        {
            StoreFailureKind::Denied
        } else if [
            "error sending request",
            "Connect",
            "dns error",
            "scheme is not allowed",
        ]
        .iter()
        .any(|needle| message.contains(needle))
        {
            StoreFailureKind::Unreachable
        } else {
            StoreFailureKind::Other
        };
        Self { kind, message }
    }

    pub(crate) fn other(message: &str) -> Self {
        Self {
            kind: StoreFailureKind::Other,
            message: message.to_owned(),
        }
    }

    fn hint(&self, url: &str) -> String {
        let scheme = url.split("://").next().unwrap_or_default();
        let bucket = url
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_default();
        let (credentials, endpoint) = match scheme {
            "gs" => (
                "`GOOGLE_SERVICE_ACCOUNT` (or `GOOGLE_APPLICATION_CREDENTIALS`)",
                "the network",
            ),
            "s3" | "s3a" => (
                "`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`)",
                "`AWS_ENDPOINT_URL` (set `AWS_ALLOW_HTTP=true` for a plain-HTTP endpoint) and the network",
            ),
            _ => (
                "`AZURE_STORAGE_ACCOUNT_NAME` and `AZURE_STORAGE_ACCOUNT_KEY` (or another `AZURE_*` credential)",
                "`AZURE_STORAGE_ACCOUNT_NAME` and the network",
            ),
        };
        match self.kind {
            StoreFailureKind::NoSuchBucket => format!(
                "the bucket `{bucket}` does not exist: create it, or check the bucket in `--out` and the endpoint"
            ),
            StoreFailureKind::Denied => {
                format!(
                    "check the credentials in {credentials} and that they may read and write `{url}`"
                )
            }
            StoreFailureKind::Unreachable => {
                format!("the object store did not answer: check {endpoint}")
            }
            StoreFailureKind::Other => {
                format!("check `--out` and the store's settings: {credentials}, {endpoint}")
            }
        }
    }
}

impl std::fmt::Display for StoreFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StoreFailure {}

/// The text of the first `<tag>…</tag>` in `text`.
fn xml_tag(text: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = text.find(&open)? + open.len();
    let end = text[start..].find(&format!("</{tag}>"))? + start;
    Some(text[start..end].trim().to_owned())
}

/// Where `--out` points: a local folder (a plain path or `file://`) or an object store URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A folder on the local file system.
    Local(PathBuf),
    /// `s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix`.
    Object(Url),
}

impl Location {
    /// Whether `out` is written as a URL (`scheme://…`) rather than a path.
    pub fn is_url(out: &Path) -> bool {
        let Some(text) = out.to_str() else {
            return false;
        };
        text.split_once("://").is_some_and(|(scheme, _)| {
            scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        })
    }

    /// Parses `--out` (or `out` in a config file).
    pub fn parse(out: &Path) -> Result<Self, DatasetError> {
        if !Self::is_url(out) {
            return Ok(Self::Local(out.to_path_buf()));
        }
        let text = out.to_string_lossy();
        let bad = |reason: &str| DatasetError::BadUrl {
            url: shown_url(&text),
            reason: reason.to_owned(),
        };
        let url = Url::parse(&text).map_err(|e| bad(&e.to_string()))?;
        if !url.username().is_empty() || url.password().is_some() || url.query().is_some() {
            return Err(DatasetError::BadUrl {
                url: format!("{}://{}", url.scheme(), url.host_str().unwrap_or("")),
                reason: "credentials and options come from the environment, not the URL".to_owned(),
            });
        }
        match url.scheme() {
            "file" => url.to_file_path().map(Self::Local).map_err(|()| {
                bad("a `file://` URL needs an absolute path, as in `file:///data/export`")
            }),
            scheme if object::OBJECT_SCHEMES.contains(&scheme) => {
                if url.host_str().is_none_or(str::is_empty) {
                    return Err(bad("no bucket (or container) after `://`"));
                }
                Ok(Self::Object(url))
            }
            scheme => Err(bad(&format!("the scheme `{scheme}` is not supported"))),
        }
    }
}

/// `url` as it may be shown in a message: without what an `@` ends (user and password) or a
/// query, also when it does not parse (a secret key with a `/` in it breaks the authority).
pub fn shown_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (masked, rest) = match rest.rfind('@') {
        Some(at) => ("…@", &rest[at + 1..]),
        None => ("", rest),
    };
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    format!("{scheme}://{masked}{rest}")
}

/// Opens the dataset root `out`: a local folder (created if needed) or an object store prefix.
pub fn open(out: &Path) -> Result<Arc<dyn Storage>, DatasetError> {
    Ok(match Location::parse(out)? {
        Location::Local(path) => Arc::new(LocalStorage::open(path)?),
        Location::Object(url) => Arc::new(ObjectStorage::open(&url, ObjectOptions::from_env()?)?),
    })
}

/// What an export (or `report`, `demo`) writes at the root besides the tables and the lock.
const OWN_NAMES: [&str; 7] = [
    delta::FORMAT_MARKER,
    "_state",
    "_manifest",
    "_staging",
    "_rejected",
    "_reports",
    "_demo",
];

/// Refuses a root that holds entries but none an export writes: exporting into a home folder
/// or a project checkout by mistake would scatter tables among someone's files.
pub fn check_is_dataset(storage: &dyn Storage) -> Result<(), DatasetError> {
    let mut names = storage.list("")?;
    names.extend(storage.list_dirs("")?);
    // Hidden entries and a file system's `lost+found` say nothing about whose folder it is.
    names.retain(|n| !n.starts_with('.') && n != "lost+found");
    // Only names this tool writes: a Spark output's `_SUCCESS` alone, or TensorBoard's `runs/`
    // without partitions, is somebody else's folder.
    let own_file = |name: &str| {
        // Not `_SUCCESS`: Spark and Hadoop write one too. Every export takes `_lock` first.
        let lock = storage::LOCK_FILE;
        name == lock || name.starts_with(&format!("{lock}.shard-")) || OWN_NAMES.contains(&name)
    };
    let table = |name: &str| -> Result<bool, DatasetError> {
        if !Table::ALL.iter().any(|t| t.name() == name) {
            return Ok(false);
        }
        Ok(storage
            .list_dirs(name)?
            .iter()
            .any(|d| d.starts_with("date="))
            || storage.list(name)?.iter().any(|f| f.ends_with(".parquet")))
    };
    // Own names first: a dataset always has one, so the table folders are listed (a request
    // each on object storage) only for a folder that is probably not a dataset.
    if names.is_empty() || names.iter().any(|n| own_file(n)) {
        return Ok(());
    }
    for name in &names {
        if table(name)? {
            return Ok(());
        }
    }
    names.sort();
    let shown: Vec<String> = names.iter().take(3).map(|n| format!("`{n}`")).collect();
    let more = names.len().saturating_sub(3);
    Err(DatasetError::NotADataset {
        root: storage.display(""),
        found: if more > 0 {
            format!("{} and {more} more", shown.join(", "))
        } else {
            shown.join(", ")
        },
    })
}

/// Downloads every table of the dataset at the URL `data` into the local folder `dest` (same
/// layout), for readers that need local files such as the report; returns the files fetched.
pub fn download(data: &Path, dest: &Path) -> Result<usize, DatasetError> {
    let Location::Object(url) = Location::parse(data)? else {
        return Err(DatasetError::BadUrl {
            url: shown_url(&data.to_string_lossy()),
            reason: "not an object store URL".to_owned(),
        });
    };
    let storage = ObjectStorage::open(&url, ObjectOptions::from_env()?)?;
    let tables = [
        Table::Runs,
        Table::NodeOutputs,
        Table::RunInputs,
        Table::Steps,
        Table::Workflows,
    ]
    .map(Table::name);
    download_tables(&storage, &tables, dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_parses_into_a_folder_or_an_object_store() {
        let local = |p: &str| Location::parse(Path::new(p)).unwrap();
        assert_eq!(local("data/export"), Location::Local("data/export".into()));
        assert_eq!(local("/a/b:c"), Location::Local("/a/b:c".into()));
        assert_eq!(local("file:///data/x"), Location::Local("/data/x".into()));
        for url in [
            "s3://b/p",
            "s3://b",
            "gs://b/p/q",
            "az://c/p",
            "abfss://c/p",
        ] {
            assert!(matches!(local(url), Location::Object(_)), "{url}");
        }
        for (bad, reason) in [
            ("http://host/x", "the scheme `http` is not supported"),
            ("file://host/x", "absolute path"),
            ("s3:///prefix", "no bucket"),
            ("s3://key:secret@b/p", "from the environment"),
            // A secret key with a `/` makes the URL unparsable: the message still hides it.
            ("s3://AKIAKEY:secret/with/slash@bucket/p", "s3://…@bucket/p"),
            ("s3://b/p?secret=1", "from the environment"),
        ] {
            let err = Location::parse(Path::new(bad)).unwrap_err().to_string();
            assert!(err.contains(reason), "{bad}: {err}");
            assert!(!err.contains("secret") && !err.contains("AKIAKEY"), "{err}");
        }
    }

    #[test]
    fn long_store_messages_keep_their_start_and_their_root_cause() {
        assert_eq!(elide_middle("short".to_owned(), 10), "short");
        let long = format!(
            "cannot list {}: Connection refused (os error 111)",
            "x".repeat(400)
        );
        let shown = elide_middle(long, 300);
        assert!(shown.len() <= 303, "{}", shown.len());
        assert!(shown.starts_with("cannot list xxx"), "{shown}");
        assert!(
            shown.ends_with("xxx: Connection refused (os error 111)"),
            "{shown}"
        );
        assert_eq!(shown.matches('…').count(), 1);
        // Never splits a character.
        let wide = "é".repeat(400);
        assert!(elide_middle(wide, 301).contains('…'));
    }

    #[test]
    fn store_failures_are_one_line_with_the_error_code() {
        let body = "Server returned non-2xx status code: 404 Not Found: <?xml version=\"1.0\"?>\n<Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message></Error>";
        let error = object_store::Error::NotFound {
            path: "p/_lock".into(),
            source: body.into(),
        };
        let failure = StoreFailure::from_error(&error);
        assert_eq!(failure.kind, StoreFailureKind::NoSuchBucket);
        let text = failure.to_string();
        assert!(!text.contains('\n') && !text.contains('<'), "{text}");
        assert!(
            text.ends_with("404 Not Found (NoSuchBucket: The specified bucket does not exist)"),
            "{text}"
        );
        assert!(
            failure
                .hint("s3://nope/p")
                .contains("the bucket `nope` does not exist")
        );
    }
}
