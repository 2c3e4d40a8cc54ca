//! The writer locks on object storage: each lock object (`_lock`, or a shard's
//! `_lock.shard-03-of-08`) is a lease, created with a conditional PUT, renewed every quarter lease
//! with a conditional PUT on its ETag, taken over with one when it expired, and marked released
//! when the export ends.
//!
//! It owns the lease's life and the checks that this process still holds it
//! ([`Inner::check_lease`]); it never decides which lock a layout takes, and it does not fence the
//! dataset's objects themselves: that is [`super::fence`], which the lease only starts (the
//! snapshot is taken once the lock is ours).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload, PutResult, UpdateVersion};

use super::{Inner, LOCK_LEASE_ENV, RELEASE_TIMEOUT, STAGING_PREFIX, lock, same_etag};
use crate::dataset::DatasetError;

/// `90`, `90s`, `2m` → a lease between 2 s and 1 h.
pub(super) fn parse_lease(text: &str) -> Option<Duration> {
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

impl Inner {
    /// Fails when this process no longer holds a lock it took: before any change, locally;
    /// and for changes readers can see (anything outside `_staging/`) also by asking the store
    /// whether each lock object is still ours.
    pub(super) fn check_lease(&self, path: &str) -> Result<(), DatasetError> {
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

/// What the lock object holds.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct LockRecord {
    /// Who holds the lock, for the error another export shows.
    pub(super) holder: String,
    /// Random: tells the holder its own record from another's.
    token: String,
    /// Until when the holder may write without renewing (RFC 3339, UTC).
    pub(super) expires_at: DateTime<Utc>,
    /// Set by the holder when it ends: the lock is free, and the object stays as the trace of
    /// the dataset's layout (`_lock` or `_lock.shard-KK-of-NN`, like the files on local disk).
    #[serde(default)]
    pub(super) released: bool,
}

/// This process's hold on one lock object.
pub(super) struct Lease {
    /// The lock object's path from the root (`_lock`, `_lock.shard-03-of-08`).
    pub(super) name: String,
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

    pub(super) fn lose(&self, reason: &str) {
        lock(&self.state)
            .lost
            .get_or_insert_with(|| reason.to_owned());
    }

    pub(super) fn check_local(&self) -> Result<(), String> {
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

/// Takes the lock object `name` for `holder` (see [`crate::dataset::Storage::lock`]) and, once
/// it is ours, the snapshot that every visible write is then conditional on.
pub(super) fn take(
    inner: &Arc<Inner>,
    name: &str,
    holder: &str,
) -> Result<Box<dyn Send>, DatasetError> {
    let location = inner.object(name)?;
    let lease = Arc::new(Lease::new(name, holder, inner.options.lease));
    acquire(inner, &lease)?;
    lock(&inner.leases).push(lease.clone());
    let heartbeat = inner
        .handle
        .spawn(heartbeat(inner.store.clone(), location, lease.clone()));
    let guard = LockGuard {
        inner: inner.clone(),
        lease,
        heartbeat,
    };
    // On failure the guard is dropped here, which releases the lock again.
    inner.take_snapshot()?;
    Ok(Box::new(guard))
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
        let none_left = {
            let mut leases = lock(&self.inner.leases);
            leases.retain(|held| !Arc::ptr_eq(held, &self.lease));
            leases.is_empty()
        };
        if none_left {
            self.inner.forget_snapshot();
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

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
    fn lease_durations_parse_within_bounds() {
        assert_eq!(parse_lease("60"), Some(Duration::from_secs(60)));
        assert_eq!(parse_lease("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_lease("2m"), Some(Duration::from_secs(120)));
        for bad in ["", "1s", "61m", "x", "-5", "1h"] {
            assert_eq!(parse_lease(bad), None, "{bad}");
        }
    }
}
