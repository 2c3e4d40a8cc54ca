//! Object storage (S3, Google Cloud Storage, Azure Blob) behind the [`Storage`] seam, through the
//! `object_store` crate.
//!
//! It owns what local disk gives for free: atomic visibility (a staged file spools to a local
//! temp file and is uploaded whole on commit, with one PUT or a multipart upload that only
//! completes at the end), replacement (`rename` is a server-side copy, which replaces the
//! destination whole, then a delete) and the writer locks (each a lock object, e.g. `_lock` or a
//! shard's `_lock.shard-03-of-08`, created with a conditional PUT and kept alive as a lease, see
//! [`ObjectStorage::lock`]). It never decides what is written where: layout, lock names and
//! commit order stay in the rest of `dataset`.
//!
//! The [`Storage`] trait is synchronous and is called from async code and from the writer
//! thread, so every request runs on a small tokio runtime the storage owns; callers wait on a
//! channel, never with `block_on` inside their own runtime.

use std::fs::File;
use std::future::Future;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{
    ObjectStore, ObjectStoreExt, PutMode, PutPayload, PutResult, RetryConfig, UpdateVersion,
    WriteMultipart,
};
use url::Url;

use super::storage::{StagedFile, Storage};
use super::{DatasetError, StoreFailure};

/// How long a lock lease lasts unless renewed; a killed export blocks others at most this long.
pub const DEFAULT_LOCK_LEASE: Duration = Duration::from_secs(60);
/// Environment variable that changes the lease (`30s`, `5m`; between 2 s and 1 h).
pub const LOCK_LEASE_ENV: &str = "ORCHESTRA_LOCK_LEASE";
/// Staged files up to this size are uploaded with one PUT, larger ones in parts.
const SINGLE_PUT_MAX_BYTES: u64 = 16 * 1024 * 1024;
/// Part size of multipart uploads (S3 wants at least 5 MiB per part but the last).
const PART_BYTES: usize = 16 * 1024 * 1024;
/// Parts uploaded at once per file: bounds memory to this many parts.
const PARTS_IN_FLIGHT: usize = 4;
/// Buffer in front of each spool file.
const SPOOL_BUFFER_BYTES: usize = 64 * 1024;
/// Objects downloaded at once by [`download_tables`].
const DOWNLOADS_IN_FLIGHT: usize = 8;
/// Worker threads of the storage's own runtime: requests are I/O, not CPU.
const RUNTIME_THREADS: usize = 2;
/// Releasing the lock at exit waits at most this long (the lease expires anyway).
const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);
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
}

impl Default for ObjectOptions {
    fn default() -> Self {
        Self {
            lease: DEFAULT_LOCK_LEASE,
            single_put_max: SINGLE_PUT_MAX_BYTES,
            part_size: PART_BYTES,
        }
    }
}

impl ObjectOptions {
    /// Defaults, with the lease from [`LOCK_LEASE_ENV`] when it is set.
    pub fn from_env() -> Result<Self, DatasetError> {
        let mut options = Self::default();
        if let Ok(text) = std::env::var(LOCK_LEASE_ENV) {
            options.lease = parse_lease(&text).ok_or_else(|| DatasetError::BadSetting {
                name: LOCK_LEASE_ENV,
                value: text.clone(),
                expected: "a duration between 2s and 1h, such as `60s` or `5m`",
            })?;
        }
        Ok(options)
    }
}

/// `90`, `90s`, `2m` → a lease between 2 s and 1 h.
fn parse_lease(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (number, unit) = match text.strip_suffix('m') {
        Some(n) => (n, 60),
        None => (text.strip_suffix('s').unwrap_or(text), 1),
    };
    let secs = number.trim().parse::<u64>().ok()?.checked_mul(unit)?;
    (2..=3600)
        .contains(&secs)
        .then(|| Duration::from_secs(secs))
}

/// The URL schemes `--out` accepts for object storage.
pub const OBJECT_SCHEMES: [&str; 7] = ["s3", "s3a", "gs", "az", "azure", "abfs", "abfss"];

/// A dataset root in an object store, e.g. `s3://bucket/prefix`.
pub struct ObjectStorage {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn ObjectStore>,
    /// The export root inside the store (no leading or trailing `/`).
    root: ObjectPath,
    /// The root as the user wrote it (no secrets: credentials come from the environment).
    url: String,
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    handle: tokio::runtime::Handle,
    options: ObjectOptions,
    /// The leases of the locks this process holds (one per export: `_lock` or a shard's).
    leases: Mutex<Vec<Arc<Lease>>>,
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
        let built: Result<Arc<dyn ObjectStore>, object_store::Error> = match url.scheme() {
            "s3" | "s3a" => object_store::aws::AmazonS3Builder::from_env()
                .with_url(url.as_str())
                .with_retry(retry)
                .build()
                .map(|s| Arc::new(s) as _),
            "gs" => object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_url(url.as_str())
                .with_retry(retry)
                .build()
                .map(|s| Arc::new(s) as _),
            _ => object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_url(url.as_str())
                .with_retry(retry)
                .build()
                .map(|s| Arc::new(s) as _),
        };
        let store = built.map_err(|e| DatasetError::store("connect to", &shown, e))?;
        let root = ObjectPath::from_url_path(url.path()).map_err(|e| DatasetError::BadUrl {
            url: shown.clone(),
            reason: e.to_string(),
        })?;
        Self::with_store(store, root, shown, options)
    }

    /// Storage below `root` of an existing store (tests use `object_store`'s in-memory store).
    pub fn with_store(
        store: Arc<dyn ObjectStore>,
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
                root,
                url,
                handle: runtime.handle().clone(),
                runtime: Mutex::new(Some(runtime)),
                options,
                leases: Mutex::new(Vec::new()),
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

    /// Fails when this process no longer holds a lock it took: before any change, locally;
    /// and for changes readers can see (anything outside `_staging/`) also by asking the store
    /// whether each lock object is still ours.
    fn check_lease(&self, path: &str) -> Result<(), DatasetError> {
        let leases = lock(&self.leases).clone();
        for lease in &leases {
            self.check_one_lease(lease, path)?;
        }
        Ok(())
    }

    fn check_one_lease(&self, lease: &Arc<Lease>, path: &str) -> Result<(), DatasetError> {
        let lost = |reason: String| DatasetError::LockLost {
            url: self.show(&lease.name),
            reason,
        };
        lease.check_local().map_err(lost)?;
        if path.starts_with(STAGING_PREFIX) {
            return Ok(());
        }
        let store = self.store.clone();
        let location = self.object(&lease.name)?;
        let held = lease.clone();
        let verdict = self.run(async move {
            let _renewal = held.renewal.lock().await;
            let ours = held.version().e_tag;
            match store.head(&location).await {
                Ok(meta) if same_etag(meta.e_tag.as_deref(), ours.as_deref()) => Ok(()),
                Ok(_) => Err(Ok("another export took the lock over")),
                Err(object_store::Error::NotFound { .. }) => Err(Ok("the lock object was removed")),
                Err(e) => Err(Err(e)),
            }
        })?;
        match verdict {
            Ok(()) => {}
            Err(Ok(reason)) => {
                lease.lose(reason);
                return Err(lost(reason.to_owned()));
            }
            // Not known to be lost, not known to be held: change nothing.
            Err(Err(e)) => return Err(self.error("check the lock", &lease.name, e)),
        }
        Ok(())
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

impl Storage for ObjectStorage {
    fn create(&self, path: &str) -> Result<Box<dyn StagedFile>, DatasetError> {
        let location = self.inner.object(path)?;
        // Unlinked at once: a killed process leaves nothing behind.
        let spool = tempfile::tempfile().map_err(|source| {
            DatasetError::io("create a spool file in", &std::env::temp_dir(), source)
        })?;
        Ok(Box::new(ObjectStaged {
            file: Some(BufWriter::with_capacity(SPOOL_BUFFER_BYTES, spool)),
            path: path.to_owned(),
            location,
            inner: self.inner.clone(),
        }))
    }

    fn list(&self, dir: &str) -> Result<Vec<String>, DatasetError> {
        let inner = &self.inner;
        let prefix = inner.object(dir)?;
        let store = inner.store.clone();
        let listed = inner.run(async move {
            let prefix = (!prefix.as_ref().is_empty()).then_some(prefix);
            store.list_with_delimiter(prefix.as_ref()).await
        })?;
        let mut names: Vec<String> = listed
            .map_err(|e| inner.error("list", dir, e))?
            .objects
            .into_iter()
            .filter_map(|meta| meta.location.filename().map(str::to_owned))
            .filter(|name| !name.starts_with('.'))
            .collect();
        names.sort();
        Ok(names)
    }

    fn list_dirs(&self, dir: &str) -> Result<Vec<String>, DatasetError> {
        let inner = &self.inner;
        let prefix = inner.object(dir)?;
        let store = inner.store.clone();
        let listed = inner.run(async move {
            let prefix = (!prefix.as_ref().is_empty()).then_some(prefix);
            store.list_with_delimiter(prefix.as_ref()).await
        })?;
        let mut names: Vec<String> = listed
            .map_err(|e| inner.error("list", dir, e))?
            .common_prefixes
            .into_iter()
            .filter_map(|p| p.filename().map(str::to_owned))
            .filter(|name| !name.starts_with('.'))
            .collect();
        names.sort();
        Ok(names)
    }

    fn read(&self, path: &str) -> Result<Bytes, DatasetError> {
        let location = self.inner.object(path)?;
        let store = self.inner.store.clone();
        self.inner
            .run(async move { store.get(&location).await?.bytes().await })?
            .map_err(|e| self.inner.error("read", path, e))
    }

    fn rename(&self, from: &str, to: &str) -> Result<(), DatasetError> {
        let inner = &self.inner;
        inner.check_lease(to)?;
        let (source, target) = (inner.object(from)?, inner.object(to)?);
        let store = inner.store.clone();
        // A copy replaces the destination whole; the source goes only once the copy exists.
        inner
            .run(async move {
                store.copy(&source, &target).await?;
                store.delete(&source).await
            })?
            .map_err(|e| inner.error("rename", from, e))
    }

    fn remove(&self, path: &str) -> Result<(), DatasetError> {
        let inner = &self.inner;
        inner.check_lease(path)?;
        let location = inner.object(path)?;
        let store = inner.store.clone();
        inner
            .run(async move { store.delete(&location).await })?
            .map_err(|e| inner.error("remove", path, e))
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
        // object, of any writer (an unfinished multipart upload is invisible; see the README on
        // lifecycle rules). What it leaves under its staging folder, the pipeline removes by
        // prefix, and a shard only its own (`_staging/shard-KK-of-NN/`).
        Ok(0)
    }

    /// Takes the lock object `name` (`_lock`, or a shard's `_lock.shard-03-of-08`): each name is
    /// a lease of its own, so shards never wait for each other, and while held every change
    /// this storage makes is checked against it.
    fn lock(&self, name: &str, holder: &str) -> Result<Box<dyn Send>, DatasetError> {
        let location = self.inner.object(name)?;
        let lease = Arc::new(Lease::new(name, holder, self.inner.options.lease));
        acquire(&self.inner, &lease)?;
        lock(&self.inner.leases).push(lease.clone());
        let heartbeat =
            self.inner
                .handle
                .spawn(heartbeat(self.inner.store.clone(), location, lease.clone()));
        Ok(Box::new(LockGuard {
            inner: self.inner.clone(),
            lease,
            heartbeat,
        }))
    }

    fn display(&self, path: &str) -> String {
        self.inner.show(path)
    }
}

/// What the lock object holds.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct LockRecord {
    /// Who holds the lock, for the error another export shows.
    holder: String,
    /// Random: tells the holder its own record from another's.
    token: String,
    /// Until when the holder may write without renewing (RFC 3339, UTC).
    expires_at: DateTime<Utc>,
    /// Set by the holder when it ends: the lock is free, and the object stays as the trace of
    /// the dataset's layout (`_lock` or `_lock.shard-KK-of-NN`, like the files on local disk).
    #[serde(default)]
    released: bool,
}

/// This process's hold on one lock object.
struct Lease {
    /// The lock object's path from the root (`_lock`, `_lock.shard-03-of-08`).
    name: String,
    holder: String,
    token: String,
    duration: Duration,
    state: Mutex<LeaseState>,
    /// Held while renewing or checking, so a check never sees a renewal half done.
    renewal: tokio::sync::Mutex<()>,
}

struct LeaseState {
    version: UpdateVersion,
    /// After this instant the lease may have expired for others: no more writes.
    valid_until: Instant,
    lost: Option<String>,
}

impl Lease {
    fn new(name: &str, holder: &str, duration: Duration) -> Self {
        Self {
            name: name.to_owned(),
            holder: holder.to_owned(),
            token: format!("{:032x}", rand::random::<u128>()),
            duration,
            state: Mutex::new(LeaseState {
                version: UpdateVersion {
                    e_tag: None,
                    version: None,
                },
                valid_until: Instant::now(),
                lost: None,
            }),
            renewal: tokio::sync::Mutex::new(()),
        }
    }

    /// The record to write now; it expires one lease from now.
    fn record(&self) -> PutPayload {
        let expires_at = Utc::now()
            + chrono::Duration::from_std(self.duration).unwrap_or(chrono::Duration::seconds(60));
        self.payload(expires_at, false)
    }

    /// The record that frees the lock: released, and expired as of now.
    fn released_record(&self) -> PutPayload {
        self.payload(Utc::now(), true)
    }

    fn payload(&self, expires_at: DateTime<Utc>, released: bool) -> PutPayload {
        let record = LockRecord {
            holder: self.holder.clone(),
            token: self.token.clone(),
            expires_at,
            released,
        };
        PutPayload::from(serde_json::to_vec_pretty(&record).expect("lock record serialises"))
    }

    /// Records a successful write of the lock object, sent at `sent`. Others may take the lock
    /// one lease after that by their clocks; this process stops writing a quarter lease
    /// earlier, the margin for clock differences between hosts.
    fn renewed(&self, version: UpdateVersion, sent: Instant) {
        let mut state = lock(&self.state);
        state.version = version;
        state.valid_until = sent + self.duration.mul_f64(0.75);
    }

    fn version(&self) -> UpdateVersion {
        lock(&self.state).version.clone()
    }

    fn lose(&self, reason: &str) {
        lock(&self.state)
            .lost
            .get_or_insert_with(|| reason.to_owned());
    }

    fn check_local(&self) -> Result<(), String> {
        let state = lock(&self.state);
        if let Some(reason) = &state.lost {
            return Err(reason.clone());
        }
        if Instant::now() >= state.valid_until {
            return Err(format!(
                "the lease could not be renewed in time (it lasts {} s; see `{LOCK_LEASE_ENV}`)",
                self.duration.as_secs()
            ));
        }
        Ok(())
    }
}

fn version_of(result: PutResult) -> UpdateVersion {
    UpdateVersion {
        e_tag: result.e_tag,
        version: result.version,
    }
}

/// Creates the lock object, or takes it over from a holder whose lease expired.
fn acquire(inner: &Inner, lease: &Arc<Lease>) -> Result<(), DatasetError> {
    let name = lease.name.as_str();
    let location = inner.object(name)?;
    let not_conditional = || DatasetError::NoConditionalWrites {
        url: inner.url.clone(),
    };
    for _ in 0..3 {
        let (store, path, payload) = (inner.store.clone(), location.clone(), lease.record());
        let sent = Instant::now();
        match inner
            .run(async move { store.put_opts(&path, payload, PutMode::Create.into()).await })?
        {
            Ok(result) => {
                lease.renewed(version_of(result), sent);
                return Ok(());
            }
            Err(object_store::Error::AlreadyExists { .. }) => {}
            Err(e) if unsupported(&e) => return Err(not_conditional()),
            Err(e) => return Err(inner.error("create the lock", name, e)),
        }
        let (store, path) = (inner.store.clone(), location.clone());
        let current = inner.run(async move {
            let got = store.get(&path).await?;
            let meta = got.meta.clone();
            Ok::<_, object_store::Error>((meta, got.bytes().await?))
        })?;
        let (meta, bytes) = match current {
            Ok(current) => current,
            // Released in between: try to create it again.
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(e) => return Err(inner.error("read the lock", name, e)),
        };
        let record: Option<LockRecord> = serde_json::from_slice(&bytes).ok();
        let version = UpdateVersion {
            e_tag: meta.e_tag.clone(),
            version: meta.version.clone(),
        };
        match &record {
            // Our own create, retried after its answer was lost.
            Some(r) if r.token == lease.token => {
                lease.renewed(version, sent);
                return Ok(());
            }
            Some(r) if !r.released && r.expires_at > Utc::now() => {
                return Err(DatasetError::Locked {
                    path: PathBuf::from(inner.show(name)),
                    holder: format!(
                        "{}; its lease runs until {}",
                        r.holder,
                        r.expires_at
                            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    ),
                    lease_until: Some(r.expires_at),
                });
            }
            // Released, expired (a killed export), or not a lease at all (a lock file copied
            // from a local dataset): take it over, unless someone else changes it first.
            _ => {}
        }
        let (store, path, payload) = (inner.store.clone(), location.clone(), lease.record());
        let sent = Instant::now();
        let taken = inner.run(async move {
            store
                .put_opts(&path, payload, PutMode::Update(version).into())
                .await
        })?;
        match taken {
            Ok(result) => {
                lease.renewed(version_of(result), sent);
                if let Some(r) = record.filter(|r| !r.released) {
                    tracing::warn!(target: "dataset", lock = name, holder = %r.holder, expired = %r.expires_at, "took over the lock of an export whose lease expired");
                }
                return Ok(());
            }
            Err(
                object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. },
            ) => {}
            Err(e) if unsupported(&e) => return Err(not_conditional()),
            Err(e) => return Err(inner.error("take over the lock", name, e)),
        }
    }
    Err(DatasetError::Locked {
        path: PathBuf::from(inner.show(name)),
        holder: "the lock changed hands three times while this export tried to take it".to_owned(),
        lease_until: None,
    })
}

/// Whether the store said it cannot do conditional writes.
fn unsupported(e: &object_store::Error) -> bool {
    match e {
        object_store::Error::NotImplemented { .. } | object_store::Error::NotSupported { .. } => {
            true
        }
        other => {
            let text = other.to_string();
            text.contains("501 Not Implemented") || text.contains("NotImplemented")
        }
    }
}

/// Renews the lease every quarter of it until the guard aborts this task or the lock is lost.
async fn heartbeat(store: Arc<dyn ObjectStore>, location: ObjectPath, lease: Arc<Lease>) {
    let every = lease.duration / 4;
    loop {
        tokio::time::sleep(every).await;
        let _renewal = lease.renewal.lock().await;
        let sent = Instant::now();
        let mode = PutMode::Update(lease.version());
        match store.put_opts(&location, lease.record(), mode.into()).await {
            Ok(result) => lease.renewed(version_of(result), sent),
            Err(object_store::Error::Precondition { .. })
                if still_ours(&store, &location, &lease, sent).await =>
            {
                // Our renewal landed but its answer was lost and the retry saw the new ETag.
                tracing::debug!(target: "dataset", lock = %lease.name, "lock renewal answered late; the lease is still ours");
            }
            Err(
                object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. },
            ) => {
                lease.lose("another export took the lock over");
                tracing::error!(target: "dataset", lock = %lease.name, "lost the dataset lock: another export took it over");
                return;
            }
            // Transient: the next beat tries again; writes stop once the lease runs out.
            Err(e) => {
                tracing::warn!(target: "dataset", lock = %lease.name, error = %e, "cannot renew the lock lease");
            }
        }
    }
}

/// Whether the lock object still holds this lease's record (same token, not released); if so,
/// the lease adopts the object's current version. A conditional renewal that the store applied
/// but whose answer was lost is retried by the client and then fails its own precondition:
/// that is not a takeover.
async fn still_ours(
    store: &Arc<dyn ObjectStore>,
    location: &ObjectPath,
    lease: &Lease,
    sent: Instant,
) -> bool {
    let Ok(got) = store.get(location).await else {
        return false;
    };
    let version = UpdateVersion {
        e_tag: got.meta.e_tag.clone(),
        version: got.meta.version.clone(),
    };
    let Ok(bytes) = got.bytes().await else {
        return false;
    };
    match serde_json::from_slice::<LockRecord>(&bytes) {
        Ok(record) if record.token == lease.token && !record.released => {
            // The record was written by the renewal sent at `sent` (or later, by its retry), so
            // it expires no earlier than one lease after `sent`: counting from `sent` is safe.
            lease.renewed(version, sent);
            true
        }
        _ => false,
    }
}

/// Holds the lock; dropping it stops the renewals and, if the lock object is still ours, marks
/// it released with a conditional PUT on its ETag. The object is not deleted: like the lock
/// files on local disk, it tells later exports the dataset's layout (see `Layout::check_root`).
struct LockGuard {
    inner: Arc<Inner>,
    lease: Arc<Lease>,
    heartbeat: tokio::task::JoinHandle<()>,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.heartbeat.abort();
        lock(&self.inner.leases).retain(|held| !Arc::ptr_eq(held, &self.lease));
        if self.lease.check_local().is_err() {
            return;
        }
        let Ok(location) = self.inner.object(&self.lease.name) else {
            return;
        };
        let (store, lease) = (self.inner.store.clone(), self.lease.clone());
        let released = self.inner.run(async move {
            tokio::time::timeout(RELEASE_TIMEOUT, async move {
                let _renewal = lease.renewal.lock().await;
                let mode = PutMode::Update(lease.version());
                match store
                    .put_opts(&location, lease.released_record(), mode.into())
                    .await
                {
                    // Changed by another export meanwhile: no longer ours to release.
                    Ok(_)
                    | Err(
                        object_store::Error::Precondition { .. }
                        | object_store::Error::NotFound { .. },
                    ) => Ok(()),
                    Err(e) => Err(e),
                }
            })
            .await
        });
        if !matches!(released, Ok(Ok(Ok(())))) {
            tracing::warn!(target: "dataset", lock = %self.lease.name, "could not release the lock; it expires with its lease");
        }
    }
}

/// A file being written: spooled to an unlinked local temp file (partitions can be large),
/// uploaded whole on commit.
struct ObjectStaged {
    file: Option<BufWriter<File>>,
    path: String,
    location: ObjectPath,
    inner: Arc<Inner>,
}

impl Write for ObjectStaged {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.as_mut().map_or(Ok(0), |f| f.write(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().map_or(Ok(()), |f| f.flush())
    }
}

impl StagedFile for ObjectStaged {
    fn commit(mut self: Box<Self>) -> Result<u64, DatasetError> {
        let spool_err = |source| DatasetError::io("spool", Path::new(&self.path), source);
        let Some(writer) = self.file.take() else {
            return Err(spool_err(io::Error::other("file already committed")));
        };
        let mut file = writer.into_inner().map_err(|e| spool_err(e.into_error()))?;
        let bytes = file.seek(SeekFrom::End(0)).map_err(spool_err)?;
        file.seek(SeekFrom::Start(0)).map_err(spool_err)?;
        let inner = &self.inner;
        inner.check_lease(&self.path)?;
        let (store, location) = (inner.store.clone(), self.location.clone());
        let options = inner.options.clone();
        let leases = lock(&inner.leases).clone();
        let uploaded = inner.run(upload(store, location, file, bytes, options, leases))?;
        match uploaded {
            Ok(()) => Ok(bytes),
            Err(Upload::Spool(source)) => Err(spool_err(source)),
            Err(Upload::Store(e)) => Err(inner.error("upload", &self.path, e)),
            Err(Upload::LockLost(name, reason)) => Err(DatasetError::LockLost {
                url: inner.show(&name),
                reason,
            }),
        }
    }
}

enum Upload {
    Spool(io::Error),
    Store(object_store::Error),
    /// The lock's name and why it was lost.
    LockLost(String, String),
}

/// Uploads a spooled file: one PUT when small, else a multipart upload that becomes visible
/// only when it completes (and is aborted on failure, or when the lease was lost meanwhile).
async fn upload(
    store: Arc<dyn ObjectStore>,
    location: ObjectPath,
    mut file: File,
    bytes: u64,
    options: ObjectOptions,
    leases: Vec<Arc<Lease>>,
) -> Result<(), Upload> {
    if bytes <= options.single_put_max {
        let mut content = Vec::with_capacity(usize::try_from(bytes).unwrap_or(0));
        file.read_to_end(&mut content).map_err(Upload::Spool)?;
        store
            .put(&location, PutPayload::from(content))
            .await
            .map_err(Upload::Store)?;
        return Ok(());
    }
    let parts = store
        .put_multipart(&location)
        .await
        .map_err(Upload::Store)?;
    let mut writer = WriteMultipart::new_with_chunk_size(parts, options.part_size);
    let mut chunk = vec![0; options.part_size];
    loop {
        let read = match read_full(&mut file, &mut chunk) {
            Ok(read) => read,
            Err(e) => {
                let _ = writer.abort().await;
                return Err(Upload::Spool(e));
            }
        };
        if read == 0 {
            break;
        }
        if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
            let _ = writer.abort().await;
            return Err(Upload::Store(e));
        }
        writer.put(Bytes::copy_from_slice(&chunk[..read]));
    }
    // A large upload takes a while: the lease must still hold when the object appears.
    if let Err(e) = writer.wait_for_capacity(0).await {
        let _ = writer.abort().await;
        return Err(Upload::Store(e));
    }
    for lease in &leases {
        if let Err(reason) = lease.check_local() {
            let _ = writer.abort().await;
            return Err(Upload::LockLost(lease.name.clone(), reason));
        }
    }
    writer.finish().await.map_err(Upload::Store)?;
    Ok(())
}

/// Reads until `buf` is full or the file ends.
fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Downloads the Parquet files of `tables` (all partitions) from the dataset in `storage` into
/// `dest`, keeping the layout, so that a local reader (the report) can scan them. Returns how
/// many files were downloaded.
pub fn download_tables(
    storage: &ObjectStorage,
    tables: &[&str],
    dest: &Path,
) -> Result<usize, DatasetError> {
    let inner = &storage.inner;
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
            if !hidden && relative.last().is_some_and(|n| n.ends_with(".parquet")) {
                wanted.push((meta.location, relative.join("/")));
            }
        }
    }
    let count = wanted.len();
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
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::storage::LOCK_FILE;
    use object_store::memory::InMemory;

    fn storage(store: &Arc<InMemory>, options: ObjectOptions) -> ObjectStorage {
        ObjectStorage::with_store(
            store.clone(),
            ObjectPath::parse("pre/fix").unwrap(),
            "mem://bucket/pre/fix".to_owned(),
            options,
        )
        .unwrap()
    }

    fn keys(store: &Arc<InMemory>) -> Vec<String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut keys: Vec<String> = rt.block_on(async {
            store
                .list(None)
                .map(|m| m.unwrap().location.to_string())
                .collect()
                .await
        });
        keys.sort();
        keys
    }

    #[test]
    fn a_renewal_that_landed_unanswered_keeps_the_lease_and_another_record_loses_it() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let location = ObjectPath::from("_lock");
        let lease = Lease::new("_lock", "pid 1", Duration::from_secs(60));
        let other = Lease::new("_lock", "pid 2", Duration::from_secs(60));
        rt.block_on(async {
            let sent = Instant::now();
            // Our record is there, under an ETag the lease does not know yet.
            let put = store.put(&location, lease.record()).await.unwrap();
            assert!(still_ours(&store, &location, &lease, sent).await);
            assert_eq!(lease.version().e_tag, put.e_tag);
            assert!(lease.check_local().is_ok());
            // Released by us, or taken by another export: not ours any more.
            store.put(&location, lease.released_record()).await.unwrap();
            assert!(!still_ours(&store, &location, &lease, sent).await);
            store.put(&location, other.record()).await.unwrap();
            assert!(!still_ours(&store, &location, &lease, sent).await);
            store.delete(&location).await.unwrap();
            assert!(!still_ours(&store, &location, &lease, sent).await);
        });
    }

    #[test]
    fn a_staged_file_appears_whole_on_commit_and_not_at_all_when_dropped() {
        let mem = Arc::new(InMemory::new());
        let store = storage(&mem, ObjectOptions::default());
        let mut staged = store.create("t/date=2025-01-01/a.parquet").unwrap();
        staged.write_all(b"hello").unwrap();
        assert!(keys(&mem).is_empty());
        assert_eq!(staged.commit().unwrap(), 5);
        assert_eq!(keys(&mem), ["pre/fix/t/date=2025-01-01/a.parquet"]);
        assert_eq!(store.list("t/date=2025-01-01").unwrap(), ["a.parquet"]);
        assert_eq!(store.read("t/date=2025-01-01/a.parquet").unwrap(), "hello");

        let mut dropped = store.create("t/date=2025-01-01/b.parquet").unwrap();
        dropped.write_all(b"partial").unwrap();
        drop(dropped);
        assert_eq!(keys(&mem), ["pre/fix/t/date=2025-01-01/a.parquet"]);
    }

    #[test]
    fn large_files_go_up_in_parts_and_read_back_identical() {
        let mem = Arc::new(InMemory::new());
        let options = ObjectOptions {
            single_put_max: 1000,
            part_size: 300,
            ..ObjectOptions::default()
        };
        let store = storage(&mem, options);
        let content: Vec<u8> = (0..10_007u32).map(|i| (i % 251) as u8).collect();
        let mut staged = store.create("big.bin").unwrap();
        staged.write_all(&content).unwrap();
        assert_eq!(staged.commit().unwrap(), content.len() as u64);
        assert_eq!(store.read("big.bin").unwrap(), content);
    }

    #[test]
    fn rename_replaces_the_target_and_remove_dir_all_takes_only_its_folder() {
        let mem = Arc::new(InMemory::new());
        let store = storage(&mem, ObjectOptions::default());
        for (path, text) in [
            ("_staging/e1/t/a", "new"),
            ("_staging/e1/t/b", "b"),
            ("_staging2/keep", "k"),
            ("t/a", "old"),
            ("_state/a%2Fb.json", "s"),
        ] {
            let mut f = store.create(path).unwrap();
            f.write_all(text.as_bytes()).unwrap();
            f.commit().unwrap();
        }
        store.rename("_staging/e1/t/a", "t/a").unwrap();
        assert_eq!(store.read("t/a").unwrap(), "new");
        store.remove_dir_all("_staging").unwrap();
        assert_eq!(
            keys(&mem),
            [
                "pre/fix/_staging2/keep",
                "pre/fix/_state/a%2Fb.json",
                "pre/fix/t/a"
            ]
        );
        // Percent signs in names round-trip (state files are percent-encoded ids).
        assert_eq!(store.list("_state").unwrap(), ["a%2Fb.json"]);
        assert_eq!(store.list("").unwrap(), Vec::<String>::new());
        store.remove("t/a").unwrap();
        assert!(store.list("t").unwrap().is_empty());
    }

    #[test]
    fn a_second_holder_is_refused_until_the_lease_expires_then_takes_over() {
        let mem = Arc::new(InMemory::new());
        let options = ObjectOptions {
            lease: Duration::from_secs(2),
            ..ObjectOptions::default()
        };
        let first = storage(&mem, options.clone());
        let second = storage(&mem, options);
        let guard = first.lock(LOCK_FILE, "pid 1 on a").unwrap();
        let err = second.lock(LOCK_FILE, "pid 2 on b").err().unwrap();
        let text = err.to_string();
        assert!(matches!(err, DatasetError::Locked { .. }), "{text}");
        assert!(text.contains("pid 1 on a; its lease runs until "), "{text}");
        assert!(text.contains("mem://bucket/pre/fix/_lock"), "{text}");

        // Released on drop: the object stays, marked released, and the next one gets it at once.
        drop(guard);
        assert_eq!(keys(&mem), ["pre/fix/_lock"]);
        let record: LockRecord = serde_json::from_slice(&first.read(LOCK_FILE).unwrap()).unwrap();
        assert!(
            record.released && record.expires_at <= Utc::now(),
            "{record:?}"
        );
        assert_eq!(record.holder, "pid 1 on a");
        let guard = second.lock(LOCK_FILE, "pid 2 on b").unwrap();
        let record: LockRecord = serde_json::from_slice(&first.read(LOCK_FILE).unwrap()).unwrap();
        assert!(
            !record.released && record.expires_at > Utc::now(),
            "{record:?}"
        );
        assert_eq!(record.holder, "pid 2 on b");
        drop(guard);

        // A killed holder stops renewing: its record stays with an expiry in the past, and the
        // next export takes the lock over (a record that is not a lease at all, too).
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let lock_path = ObjectPath::parse("pre/fix/_lock").unwrap();
        for stale in [
            r#"{"holder": "pid 9", "token": "t", "expires_at": "2020-01-01T00:00:00Z"}"#,
            "pid 9 on a host, written by a local export",
        ] {
            rt.block_on(mem.put(&lock_path, PutPayload::from(stale)))
                .unwrap();
            let guard = first.lock(LOCK_FILE, "pid 1 on a").unwrap();
            let record: LockRecord =
                serde_json::from_slice(&first.read(LOCK_FILE).unwrap()).unwrap();
            assert_eq!(record.holder, "pid 1 on a");
            drop(guard);
        }
    }

    #[test]
    fn a_holder_whose_lock_was_taken_over_writes_nothing_more() {
        let mem = Arc::new(InMemory::new());
        let options = ObjectOptions {
            lease: Duration::from_secs(2),
            ..ObjectOptions::default()
        };
        let first = storage(&mem, options.clone());
        let _guard = first.lock(LOCK_FILE, "pid 1").unwrap();
        // Someone overwrites the lock object (as a takeover would).
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(mem.put(
            &ObjectPath::parse("pre/fix/_lock").unwrap(),
            PutPayload::from("{}"),
        ))
        .unwrap();
        let mut staged = first.create("runs/date=2025-01-01/part-0.parquet").unwrap();
        staged.write_all(b"x").unwrap();
        let err = staged.commit().unwrap_err();
        assert!(matches!(err, DatasetError::LockLost { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("another export took the lock over"),
            "{err}"
        );
        // Staging writes stop too, from the local state alone.
        let mut staged = first.create("_staging/e/x").unwrap();
        staged.write_all(b"x").unwrap();
        assert!(matches!(
            staged.commit(),
            Err(DatasetError::LockLost { .. })
        ));
        assert!(keys(&mem).iter().all(|k| !k.contains("runs")));
    }

    #[test]
    fn the_lease_is_renewed_while_held() {
        let mem = Arc::new(InMemory::new());
        let store = storage(
            &mem,
            ObjectOptions {
                lease: Duration::from_secs(2),
                ..ObjectOptions::default()
            },
        );
        let _guard = store.lock(LOCK_FILE, "pid 1").unwrap();
        // Past the lease: renewals kept it valid, and the record's expiry moved on.
        std::thread::sleep(Duration::from_millis(2500));
        let mut staged = store.create("t/a").unwrap();
        staged.write_all(b"x").unwrap();
        staged.commit().unwrap();
        let record: LockRecord = serde_json::from_slice(&store.read(LOCK_FILE).unwrap()).unwrap();
        assert!(record.expires_at > Utc::now());
    }

    #[test]
    fn each_named_lock_is_its_own_lease_and_guards_only_its_holder() {
        let mem = Arc::new(InMemory::new());
        let options = ObjectOptions {
            lease: Duration::from_secs(2),
            ..ObjectOptions::default()
        };
        let (zero, one) = ("_lock.shard-00-of-02", "_lock.shard-01-of-02");
        let first = storage(&mem, options.clone());
        let second = storage(&mem, options.clone());
        let third = storage(&mem, options);
        let _zero = first.lock(zero, "pid 1").unwrap();
        let _one = second.lock(one, "pid 2").unwrap();
        assert_eq!(
            keys(&mem),
            [
                "pre/fix/_lock.shard-00-of-02",
                "pre/fix/_lock.shard-01-of-02"
            ]
        );
        let err = third.lock(zero, "pid 3").err().unwrap().to_string();
        assert!(
            err.contains("`mem://bucket/pre/fix/_lock.shard-00-of-02` is locked by another export (pid 1; its lease runs until "),
            "{err}"
        );
        for (name, holder) in [(zero, "pid 1"), (one, "pid 2")] {
            let record: LockRecord = serde_json::from_slice(&first.read(name).unwrap()).unwrap();
            assert_eq!(record.holder, holder);
        }

        // Shard 0's lease is taken over: shard 0 stops, naming its own lock; shard 1 goes on.
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(mem.put(
            &ObjectPath::parse("pre/fix/_lock.shard-00-of-02").unwrap(),
            PutPayload::from("{}"),
        ))
        .unwrap();
        let mut staged = first
            .create("runs/date=2025-01-01/shard-00-of-02.parquet")
            .unwrap();
        staged.write_all(b"x").unwrap();
        let err = staged.commit().unwrap_err();
        assert!(matches!(err, DatasetError::LockLost { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with("lost the lock `mem://bucket/pre/fix/_lock.shard-00-of-02`: another export took the lock over"),
            "{err}"
        );
        let mut staged = second
            .create("runs/date=2025-01-01/shard-01-of-02.parquet")
            .unwrap();
        staged.write_all(b"y").unwrap();
        staged.commit().unwrap();
        assert_eq!(
            second.list("runs/date=2025-01-01").unwrap(),
            ["shard-01-of-02.parquet"]
        );
    }

    #[test]
    fn lease_durations_parse_within_bounds() {
        assert_eq!(parse_lease("60"), Some(Duration::from_secs(60)));
        assert_eq!(parse_lease("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_lease("2m"), Some(Duration::from_secs(120)));
        for bad in ["", "1s", "61m", "x", "-5", "1h"] {
            assert_eq!(parse_lease(bad), None, "{bad}");
        }
    }
}
