//! Dataset: streams flattened rows into Hive-partitioned Parquet files under the export root.
//!
//! It owns file layout (`{table}/date=YYYY-MM-DD/part-0.parquet`, or one file per shard), Parquet
//! properties and the memory bound of the writing stage. It never talks to the API and never
//! decides what a row contains (`flatten` does); files reach disk only through [`storage`].

mod commit;
pub mod schema;
pub mod shard;
pub mod storage;
mod writer;

use std::path::{Path, PathBuf};

pub use commit::{CommitSummary, PartitionCommit, RunKeys, batches, commit};
pub use schema::{PartitionDate, Table};
pub use shard::{Layout, Shard};
pub use storage::{LocalStorage, StagedFile, Storage};
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
    /// The export root exists and is not a folder.
    #[error("`{}` is not a directory", path.display())]
    NotADirectory { path: PathBuf },
    /// Another process holds the dataset's lock.
    #[error("`{}` is locked by another export ({holder})", path.display())]
    Locked { path: PathBuf, holder: String },
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
    /// The Parquet encoder failed.
    #[error("cannot write Parquet file `{path}`")]
    Parquet {
        path: String,
        #[source]
        source: parquet::errors::ParquetError,
    },
}

impl DatasetError {
    pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}
