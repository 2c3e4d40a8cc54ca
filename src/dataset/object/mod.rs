//! Object storage (S3, Google Cloud Storage, Azure Blob) behind the [`Storage`] seam, through the
//! `object_store` crate.
//!
//! It owns what local disk gives for free: atomic visibility (a staged file spools to a local
//! temp file and is uploaded whole on commit, see `object/upload.rs`), replacement that cannot
//! undo another export's change (every write readers can see is conditional on what this export
//! saw when it took its lock, see `object/fence.rs`; `rename` is a GET and a conditional PUT,
//! then a delete) and the writer locks (each a lock object, e.g. `_lock` or a shard's
//! `_lock.shard-03-of-08`, created with a conditional PUT and kept alive as a lease, see
//! `object/lease.rs`). It never decides what is written where: layout, lock names and commit
//! order stay in the rest of `dataset`.
//!
//! The [`Storage`] trait is synchronous and is called from async code and from the writer
//! thread, so every request runs on a small tokio runtime the storage owns; callers wait on a
//! channel, never with `block_on` inside their own runtime.

mod fence;
mod lease;
mod s3;
mod upload;

use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::aws::AmazonS3;
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, RetryConfig};
use url::Url;

use super::storage::{FetchRange, ParquetSource, StagedFile, Storage};
use super::{DatasetError, StoreFailure, Table};
use fence::{Snapshot, delete_checked};
use lease::Lease;
use s3::S3Direct;
use std::collections::{HashMap, HashSet};
use upload::Job;

/// How long a lock lease lasts unless renewed; a killed export blocks others at most this long.
pub const DEFAULT_LOCK_LEASE: Duration = Duration::from_secs(60);
/// Environment variable that changes the lease (`30s`, `5m`; between 2 s and 1 h).
pub const LOCK_LEASE_ENV: &str = "ORCHESTRA_LOCK_LEASE";
/// Staged files up to this size are uploaded with one PUT, larger ones in parts.
const SINGLE_PUT_MAX_BYTES: u64 = 16 * 1024 * 1024;
/// Part size of multipart uploads (S3 wants at least 5 MiB per part but the last).
const PART_BYTES: usize = 16 * 1024 * 1024;
/// Objects downloaded at once by [`download_tables`].
const DOWNLOADS_IN_FLIGHT: usize = 8;
/// Worker threads of the storage's own runtime: requests are I/O, not CPU.
const RUNTIME_THREADS: usize = 2;
/// Releasing the lock at exit waits at most this long (the lease expires anyway).
const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);
/// Stored files up to this size are read with one GET; larger ones range by range.
const WHOLE_READ_BYTES: u64 = 64 * 1024 * 1024;
/// Retries of a failed request: fewer and shorter than `object_store`'s defaults (10 over up to
/// 3 minutes), so a wrong endpoint fails in seconds; S3's own throttling still gets backoff.
const MAX_RETRIES: usize = 5;
/// Longest time spent retrying one request.
const RETRY_TIMEOUT: Duration = Duration::from_secs(60);

/// Tunables of [`ObjectStorage`].
#[derive(Debug, Clone)]
pub struct ObjectOptions {
    /// Lock lease; renewed every quarter of it.
    pub lease: Duration,
    /// Largest staged file uploaded with a single PUT.
    pub single_put_max: u64,
    /// Part size of multipart uploads.
    pub part_size: usize,
    /// Largest stored file read with one GET; larger ones are read range by range.
    pub whole_read_max: u64,
}

impl Default for ObjectOptions {
    fn default() -> Self {
        Self {
            lease: DEFAULT_LOCK_LEASE,
            single_put_max: SINGLE_PUT_MAX_BYTES,
            part_size: PART_BYTES,
            whole_read_max: WHOLE_READ_BYTES,
        }
    }
}

impl ObjectOptions {
    /// Defaults, with the lease from [`LOCK_LEASE_ENV`] when it is set.
    pub fn from_env() -> Result<Self, DatasetError> {
        let mut options = Self::default();
        if let Ok(text) = std::env::var(LOCK_LEASE_ENV) {
            options.lease = lease::parse_lease(&text).ok_or_else(|| DatasetError::BadSetting {
                name: LOCK_LEASE_ENV,
                value: text.clone(),
                expected: "a duration between 2s and 1h, such as `60s` or `5m`",
            })?;
        }
        Ok(options)
    }
}

/// The URL schemes `--out` accepts for object storage.
pub const OBJECT_SCHEMES: [&str; 7] = ["s3", "s3a", "gs", "az", "azure", "abfs", "abfss"];

/// A dataset root in an object store, e.g. `s3://bucket/prefix`.
pub struct ObjectStorage {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn ObjectStore>,
    /// The same store when it is S3, for the requests `object_store` cannot make conditional.
    s3: Option<S3Direct>,
    /// The store conditions writes on generations, not ETags (GCS): learnt with a HEAD.
    generations: bool,
    /// The export root inside the store (no leading or trailing `/`).
    root: ObjectPath,
    /// The root as the user wrote it (no secrets: credentials come from the environment).
    url: String,
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    handle: tokio::runtime::Handle,
    options: ObjectOptions,
    /// The leases of the locks this process holds (one per export: `_lock` or a shard's).
    leases: Mutex<Vec<Arc<Lease>>>,
    /// What the dataset held when the lock was taken, as this export changed it since (see
    /// [`fence`]); `None` while no lock is held.
    seen: Mutex<Option<Snapshot>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Dropped from async code at the end of an export: a blocking shutdown would panic.
        if let Some(runtime) = lock(&self.runtime).take() {
            runtime.shutdown_background();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ObjectStorage {
    /// Connects to the store `url` names (`s3://`, `gs://`, `az://` …), configured from the
    /// standard environment variables of that store (`AWS_*`, `GOOGLE_*`, `AZURE_*`).
    /// Nothing is requested yet: a wrong bucket or key shows at the first request.
    pub fn open(url: &Url, options: ObjectOptions) -> Result<Self, DatasetError> {
        let shown = display_url(url);
        let retry = RetryConfig {
            max_retries: MAX_RETRIES,
            retry_timeout: RETRY_TIMEOUT,
            ..RetryConfig::default()
        };
        let connect_err = |e| DatasetError::store("connect to", &shown, e);
        let root = ObjectPath::from_url_path(url.path()).map_err(|e| DatasetError::BadUrl {
            url: shown.clone(),
            reason: e.to_string(),
        })?;
        match url.scheme() {
            "s3" | "s3a" => {
                let store = object_store::aws::AmazonS3Builder::from_env()
                    .with_url(url.as_str())
                    .with_retry(retry)
                    .build()
                    .map_err(connect_err)?;
                Self::with_s3(Arc::new(store), root, shown, options)
            }
            "gs" => {
                let store = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(url.as_str())
                    .with_retry(retry)
                    .build()
                    .map_err(connect_err)?;
                Self::build(Arc::new(store), None, true, root, shown, options)
            }
            _ => {
                let store = object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(url.as_str())
                    .with_retry(retry)
                    .build()
                    .map_err(connect_err)?;
                Self::build(Arc::new(store), None, false, root, shown, options)
            }
        }
    }

    /// Storage below `root` of an existing store (tests use `object_store`'s in-memory store).
    pub fn with_store(
        store: Arc<dyn ObjectStore>,
        root: ObjectPath,
        url: String,
        options: ObjectOptions,
    ) -> Result<Self, DatasetError> {
        Self::build(store, None, false, root, url, options)
    }

    /// Storage below `root` of an S3 bucket, whose uploads in parts and deletes are then
    /// conditional too (see `object/fence.rs`).
    pub fn with_s3(
        store: Arc<AmazonS3>,
        root: ObjectPath,
        url: String,
        options: ObjectOptions,
    ) -> Result<Self, DatasetError> {
        let direct = S3Direct::new(store.clone()).map_err(|e| DatasetError::Store {
            action: "connect to",
            url: url.clone(),
            source: StoreFailure::other(&e.without_url().to_string()),
        })?;
        Self::build(store, Some(direct), false, root, url, options)
    }

    fn build(
        store: Arc<dyn ObjectStore>,
        s3: Option<S3Direct>,
        generations: bool,
        root: ObjectPath,
        url: String,
        options: ObjectOptions,
    ) -> Result<Self, DatasetError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(RUNTIME_THREADS)
            .thread_name("object-store")
            .enable_all()
            .build()
            .map_err(|source| {
                DatasetError::io(
                    "start the object store runtime for",
                    Path::new(&url),
                    source,
                )
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                s3,
                generations,
                root,
                url,
                handle: runtime.handle().clone(),
                runtime: Mutex::new(Some(runtime)),
                options,
                leases: Mutex::new(Vec::new()),
                seen: Mutex::new(None),
            }),
        })
    }

    /// The root URL, as shown to people.
    pub fn url(&self) -> &str {
        &self.inner.url
    }
}

/// `s3://bucket/prefix` without a trailing `/`, user info or query (never a secret).
fn display_url(url: &Url) -> String {
    let mut shown = format!(
        "{}://{}{}",
        url.scheme(),
        url.host_str().unwrap_or(""),
        url.path()
    );
    while shown.ends_with('/') && !shown.ends_with("://") {
        shown.pop();
    }
    shown
}

impl Inner {
    /// Runs `fut` on the storage's runtime and waits for it from any thread, async or not.
    fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, DatasetError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().map_err(|_| DatasetError::Store {
            action: "reach",
            url: self.url.clone(),
            source: StoreFailure::other("the object store runtime has stopped"),
        })
    }

    /// The object of `path` (relative, `/`-separated) below the root.
    fn object(&self, path: &str) -> Result<ObjectPath, DatasetError> {
        let full = match (self.root.as_ref(), path.trim_matches('/')) {
            ("", p) => p.to_owned(),
            (root, "") => root.to_owned(),
            (root, p) => format!("{root}/{p}"),
        };
        ObjectPath::parse(&full).map_err(|e| DatasetError::BadUrl {
            url: self.show(path),
            reason: e.to_string(),
        })
    }

    fn show(&self, path: &str) -> String {
        match path.trim_matches('/') {
            "" => self.url.clone(),
            p => format!("{}/{p}", self.url),
        }
    }

    fn error(&self, action: &'static str, path: &str, e: object_store::Error) -> DatasetError {
        DatasetError::store(action, &self.show(path), e)
    }
}

/// Staging folder of the pipeline: its objects are never visible as dataset rows.
const STAGING_PREFIX: &str = "_staging/";

fn same_etag(a: Option<&str>, b: Option<&str>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.trim_matches('"') == b.trim_matches('"'),
        _ => false,
    }
}

impl Inner {
    /// The objects and folders directly inside `dir`.
    fn list_one_level(&self, dir: &str) -> Result<object_store::ListResult, DatasetError> {
        let prefix = self.object(dir)?;
        let store = self.store.clone();
        let listed = self.run(async move {
            let prefix = (!prefix.as_ref().is_empty()).then_some(prefix);
            store.list_with_delimiter(prefix.as_ref()).await
        })?;
        listed.map_err(|e| self.error("list", dir, e))
    }
}

/// The last segments of `paths`, sorted, hidden ones (`.…`) left out.
fn visible_names(paths: impl Iterator<Item = ObjectPath>) -> Vec<String> {
    let mut names: Vec<String> = paths
        .filter_map(|p| p.filename().map(str::to_owned))
        .filter(|name| !name.starts_with('.'))
        .collect();
    names.sort();
    names
}

impl Storage for ObjectStorage {
    fn create(&self, path: &str) -> Result<Box<dyn StagedFile>, DatasetError> {
        upload::staged(&self.inner, path)
    }

    fn list(&self, dir: &str) -> Result<Vec<String>, DatasetError> {
        let listed = self.inner.list_one_level(dir)?;
        let objects = listed.objects.into_iter().map(|meta| meta.location);
        Ok(visible_names(objects))
    }

    fn list_dirs(&self, dir: &str) -> Result<Vec<String>, DatasetError> {
        let listed = self.inner.list_one_level(dir)?;
        Ok(visible_names(listed.common_prefixes.into_iter()))
    }

    fn read(&self, path: &str) -> Result<Bytes, DatasetError> {
        let location = self.inner.object(path)?;
        let store = self.inner.store.clone();
        self.inner
            .run(async move { store.get(&location).await?.bytes().await })?
            .map_err(|e| self.inner.error("read", path, e))
    }

    /// One GET, read whole when the file is at most `whole_read_max`; a larger file is
    /// then read by ranged GETs, each conditional on the ETag that GET saw: a merge holds a
    /// column chunk at a time, not the file, and never reads parts of two versions.
    fn read_parquet(&self, path: &str) -> Result<ParquetSource, DatasetError> {
        let location = self.inner.object(path)?;
        let store = self.inner.store.clone();
        let whole_max = self.inner.options.whole_read_max;
        let first = {
            let location = location.clone();
            self.inner.run(async move {
                let got = store.get(&location).await?;
                if got.meta.size <= whole_max {
                    got.bytes().await.map(Ok)
                } else {
                    Ok(Err(got.meta))
                }
            })?
        };
        let meta = match first.map_err(|e| self.inner.error("read", path, e))? {
            Ok(bytes) => return Ok(ParquetSource::Bytes(bytes)),
            Err(meta) => meta,
        };
        let (inner, shown) = (self.inner.clone(), self.inner.show(path));
        let etag = meta.e_tag;
        let fetch: FetchRange = Arc::new(move |start, length| {
            let (store, location) = (inner.store.clone(), location.clone());
            let options = GetOptions {
                if_match: etag.clone(),
                range: Some(GetRange::Bounded(start..start + length as u64)),
                ..GetOptions::default()
            };
            inner
                .run(async move { store.get_opts(&location, options).await?.bytes().await })
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("cannot read `{shown}`: {e}"))
        });
        Ok(ParquetSource::Ranges {
            len: meta.size,
            fetch,
        })
    }

    /// A GET of `from` and a conditional PUT to `to` (in parts when large), then a delete of
    /// `from`: no server-side copy, which S3 limits to 5 GiB and cannot make conditional.
    fn rename(&self, from: &str, to: &str) -> Result<(), DatasetError> {
        let inner = &self.inner;
        inner.check_lease(to)?;
        let (source, target) = (inner.object(from)?, inner.object(to)?);
        let expect = inner.expect(to, &target);
        let job = Job::new(inner, target.clone(), expect.clone());
        let relayed = source.clone();
        let version = inner
            .run(async move { job.relay(&relayed).await })?
            .map_err(|fail| inner.fail("move into place", to, fail))?;
        inner.wrote(&target, &expect, version);
        // The source goes only once the target holds its content.
        let store = inner.store.clone();
        inner
            .run(async move { store.delete(&source).await })?
            .map_err(|e| inner.error("remove", from, e))
    }

    /// Removes `path` if it still is as this export saw it (see `object/fence.rs`).
    fn remove(&self, path: &str) -> Result<(), DatasetError> {
        let inner = &self.inner;
        inner.check_lease(path)?;
        let location = inner.object(path)?;
        let expect = inner.expect(path, &location);
        let (store, s3, target) = (inner.store.clone(), inner.s3.clone(), location.clone());
        inner
            .run(async move { delete_checked(&store, s3.as_ref(), &target, expect).await })?
            .map_err(|fail| inner.fail("remove", path, fail))?;
        inner.deleted(&location);
        Ok(())
    }

    fn remove_dir_all(&self, dir: &str) -> Result<(), DatasetError> {
        let inner = &self.inner;
        inner.check_lease(&format!("{}/", dir.trim_end_matches('/')))?;
        let prefix = inner.object(dir)?;
        if prefix.as_ref().is_empty() {
            return Err(DatasetError::BadUrl {
                url: inner.url.clone(),
                reason: "refusing to remove the whole store".to_owned(),
            });
        }
        let store = inner.store.clone();
        inner
            .run(async move {
                let locations = store
                    .list(Some(&prefix))
                    .map(|meta| meta.map(|m| m.location))
                    .boxed();
                let mut deleted = store.delete_stream(locations);
                while let Some(result) = deleted.next().await {
                    match result {
                        Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            })?
            .map_err(|e| inner.error("remove", dir, e))
    }

    fn remove_abandoned(
        &self,
        _dir: &str,
        _owned: &dyn Fn(&str) -> bool,
    ) -> Result<usize, DatasetError> {
        // Staged files spool to unlinked local temp files: a killed process leaves no temp
        // object, of any writer (an unfinished multipart upload is invisible; see `docs/object-storage.md` on
        // lifecycle rules). What it leaves under its staging folder, the pipeline removes by
        // prefix, and a shard only its own (`_staging/shard-KK-of-NN/`).
        Ok(0)
    }

    /// Takes the lock object `name` (`_lock`, or a shard's `_lock.shard-03-of-08`): each name is
    /// a lease of its own, so shards never wait for each other; while held every change this
    /// storage makes is checked against it, and every visible one is conditional on what the
    /// dataset held when it was taken (see `object/fence.rs`).
    fn lock(&self, name: &str, holder: &str) -> Result<Box<dyn Send>, DatasetError> {
        lease::take(&self.inner, name, holder)
    }

    fn display(&self, path: &str) -> String {
        self.inner.show(path)
    }

    fn check_lock(&self, path: &str) -> Result<(), DatasetError> {
        self.inner.check_lease(path)
    }

    fn delta_store(&self) -> Result<(Arc<dyn ObjectStore>, Url), DatasetError> {
        // The store is the bucket's; the kernel maps a URL's path to a key in it.
        let bad = |reason: String| DatasetError::BadUrl {
            url: self.inner.url.clone(),
            reason,
        };
        let mut url = Url::parse(&self.inner.url).map_err(|e| bad(e.to_string()))?;
        url.set_path(&format!("/{}/", self.inner.root.as_ref()).replace("//", "/"));
        Ok((self.inner.store.clone(), url))
    }
}

/// Downloads the Parquet files of `tables` (all partitions) from the dataset in `storage` into
/// `dest`, keeping the layout, so that a local reader (the report) can scan them; of a Delta
/// table, its log first and then only the files its current snapshot holds. Returns how many
/// files were downloaded.
pub fn download_tables(
    storage: &ObjectStorage,
    tables: &[&str],
    dest: &Path,
) -> Result<usize, DatasetError> {
    let inner = &storage.inner;
    // The copy is a Delta dataset too, even before a table's first commit.
    let marker = super::delta::FORMAT_MARKER;
    if storage.list("")?.iter().any(|n| n == marker) {
        std::fs::create_dir_all(dest)
            .and_then(|()| std::fs::write(dest.join(marker), ""))
            .map_err(|source| DatasetError::io("write", &dest.join(marker), source))?;
    }
    let mut wanted = Vec::new();
    for table in tables {
        let prefix = inner.object(table)?;
        let store = inner.store.clone();
        let listed = inner.run(async move {
            store
                .list(Some(&prefix))
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<Result<Vec<_>, _>>()
        })?;
        for meta in listed.map_err(|e| inner.error("list", table, e))? {
            let Some(relative) = meta.location.prefix_match(&inner.root) else {
                continue;
            };
            let relative: Vec<String> = relative.map(|p| p.as_ref().to_owned()).collect();
            let hidden = relative.iter().any(|p| p.starts_with('.'));
            // A Delta table's log too: readers of the copy open its snapshot. Not the hint
            // `_last_checkpoint`, the one log file that changes: fetched after the listing, it
            // could name a checkpoint the copy lacks (the kernel finds checkpoints without it).
            let log = relative.iter().any(|p| p == super::delta::DELTA_LOG)
                && relative.last().is_some_and(|n| n != "_last_checkpoint");
            if !hidden && (log || relative.last().is_some_and(|n| n.ends_with(".parquet"))) {
                wanted.push((meta.location, relative.join("/")));
            }
        }
    }
    let (logs, mut data): (Vec<_>, Vec<_>) = wanted
        .into_iter()
        .partition(|(_, relative)| relative.split('/').any(|p| p == super::delta::DELTA_LOG));
    let mut count = logs.len();
    if !logs.is_empty() {
        fetch(inner, logs, dest)?;
        // Files removed from a Delta table (older versions) are not needed to read it.
        let active: HashMap<Table, HashSet<std::path::PathBuf>> = super::delta::local_tables(dest)?
            .into_iter()
            .map(|(table, files)| (table, files.into_iter().collect()))
            .collect();
        data.retain(|(_, relative)| {
            let table = Table::ALL
                .into_iter()
                .find(|t| relative.split('/').next() == Some(t.name()));
            match table.and_then(|t| active.get(&t)) {
                Some(files) => files.contains(&dest.join(relative)),
                None => true,
            }
        });
    }
    count += data.len();
    fetch(inner, data, dest)?;
    Ok(count)
}

/// Downloads the objects `wanted` to their paths below `dest`.
fn fetch(
    inner: &Inner,
    wanted: Vec<(ObjectPath, String)>,
    dest: &Path,
) -> Result<(), DatasetError> {
    let (store, dest, url) = (inner.store.clone(), dest.to_path_buf(), inner.url.clone());
    // Each object is streamed to its file chunk by chunk: memory holds a few chunks per object
    // in flight, whatever the partitions' sizes.
    let results = inner.run(async move {
        futures_util::stream::iter(wanted)
            .map(|(location, relative)| {
                let (store, target) = (store.clone(), dest.join(&relative));
                let shown = format!("{url}/{relative}");
                async move {
                    let store_err = |e| DatasetError::store("download", &shown, e);
                    let io_err = |source| DatasetError::io("write", &target, source);
                    let got = store.get(&location).await.map_err(store_err)?;
                    if let Some(parent) = target.parent() {
                        tokio::fs::create_dir_all(parent)
                            .await
                            .map_err(|source| DatasetError::io("create", parent, source))?;
                    }
                    let mut file = tokio::fs::File::create(&target).await.map_err(io_err)?;
                    let mut chunks = got.into_stream();
                    while let Some(chunk) = chunks.next().await {
                        let chunk = chunk.map_err(store_err)?;
                        tokio::io::AsyncWriteExt::write_all(&mut file, &chunk)
                            .await
                            .map_err(io_err)?;
                    }
                    tokio::io::AsyncWriteExt::flush(&mut file)
                        .await
                        .map_err(io_err)
                }
            })
            .buffer_unordered(DOWNLOADS_IN_FLIGHT)
            .collect::<Vec<_>>()
            .await
    })?;
    results.into_iter().collect::<Result<Vec<()>, _>>()?;
    Ok(())
}

#[cfg(test)]
mod tests;
