//! Fencing: every change readers can see is conditional on what this export saw when it took
//! its lock, so a writer whose lease lapsed with a request in flight cannot replace what another
//! export wrote after it.
//!
//! Once a lock is ours, the dataset root is listed once (all but `_staging/`) and each object's
//! version kept ([`Snapshot`]). From then on every write of a visible object — partitions,
//! `_state/`, `_manifest/`, `_SUCCESS*`, `_rejected/`, `workflows/` — carries a precondition
//! ([`Expect`]): `If-Match` on the version seen when the snapshot holds the path,
//! `If-None-Match: *` when it does not; a write that succeeds puts its new version in the
//! snapshot, a delete removes it. Deletes are checked too: a conditional `DELETE` on S3
//! ([`super::s3`]), a HEAD just before elsewhere. A precondition the store refuses ends the export with [`DatasetError::LockLost`]
//! naming the object, and the leases are marked lost so that nothing more changes.
//!
//! It owns that bookkeeping; it never decides what is written (the rest of `dataset` does), and
//! the lock objects are not fenced here: they are the lease's own ([`super::lease`]). Without a
//! lock (a report's download) nothing is conditional.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::Arc;

use futures_util::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload, UpdateVersion};

use super::s3::S3Direct;
use super::{Inner, STAGING_PREFIX, lock, same_etag};
use crate::dataset::DatasetError;

/// The version of every visible object when the lock was taken, as this export changed them
/// since.
pub(super) type Snapshot = HashMap<ObjectPath, UpdateVersion>;

/// What a change needs to find at its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Expect {
    /// Not fenced (no lock held, a staged object, a lock object): written unconditionally.
    Anything,
    /// Absent when the lock was taken and not written by this export since.
    Absent,
    /// This version, seen in the snapshot or written by this export.
    Version(UpdateVersion),
}

impl Expect {
    /// The `object_store` write mode that makes a PUT conditional on this.
    pub(super) fn put_mode(&self) -> PutMode {
        match self {
            Expect::Anything => PutMode::Overwrite,
            Expect::Absent => PutMode::Create,
            Expect::Version(version) => PutMode::Update(version.clone()),
        }
    }
}

/// Why a request made for a change failed.
#[derive(Debug)]
pub(super) enum Fail {
    /// The local spool file.
    Spool(io::Error),
    /// The store refused or did not answer.
    Store(object_store::Error),
    /// Another export changed the object after this one took the lock.
    Changed,
    /// The lock `.0` was lost, for the reason `.1`.
    LockLost(String, String),
}

impl Fail {
    /// The failure of a write made with `expect`: a refused precondition is another export's
    /// change (S3 answers 404 for `If-Match` on an object deleted meanwhile, Azure too).
    pub(super) fn of_write(error: object_store::Error, expect: &Expect) -> Self {
        use object_store::Error as E;
        match (error, expect) {
            (error, Expect::Anything) => Fail::Store(error),
            (E::Precondition { .. } | E::AlreadyExists { .. }, _) => Fail::Changed,
            (E::NotFound { .. }, Expect::Version(_)) => Fail::Changed,
            (error, _) => Fail::Store(error),
        }
    }
}

impl Inner {
    /// Lists the whole root (but `_staging/`) and keeps every object's version; a second lock
    /// taken by the same storage keeps the first snapshot.
    pub(super) fn take_snapshot(&self) -> Result<(), DatasetError> {
        if lock(&self.seen).is_some() {
            return Ok(());
        }
        let (store, root) = (self.store.clone(), self.root.clone());
        let listed = self.run(async move {
            let prefix = (!root.as_ref().is_empty()).then(|| root.clone());
            let mut objects = store.list(prefix.as_ref());
            let mut seen = Snapshot::new();
            let staging = STAGING_PREFIX.trim_end_matches('/');
            while let Some(meta) = objects.next().await {
                let meta = meta?;
                let first = meta.location.prefix_match(&root).and_then(|mut p| p.next());
                if first.is_some_and(|part| part.as_ref() == staging) {
                    continue;
                }
                let version = UpdateVersion {
                    e_tag: meta.e_tag.map(quoted),
                    version: meta.version,
                };
                seen.insert(meta.location, version);
            }
            Ok::<_, object_store::Error>(seen)
        })?;
        let seen = listed.map_err(|e| self.error("list", "", e))?;
        *lock(&self.seen) = Some(seen);
        Ok(())
    }

    /// Drops the snapshot once no lock is held: later writes are unconditional.
    pub(super) fn forget_snapshot(&self) {
        *lock(&self.seen) = None;
    }

    /// What a change of `path` (at `location`) needs to find there.
    pub(super) fn expect(&self, path: &str, location: &ObjectPath) -> Expect {
        let path = path.trim_matches('/');
        if path.starts_with(STAGING_PREFIX) || lock(&self.leases).iter().any(|l| l.name == path) {
            return Expect::Anything;
        }
        match lock(&self.seen).as_ref() {
            None => Expect::Anything,
            Some(seen) => seen
                .get(location)
                .cloned()
                .map_or(Expect::Absent, Expect::Version),
        }
    }

    /// Records this export's write of `location`, made with `expect`, as its new version.
    pub(super) fn wrote(&self, location: &ObjectPath, expect: &Expect, version: UpdateVersion) {
        if *expect == Expect::Anything {
            return;
        }
        if let Some(seen) = lock(&self.seen).as_mut() {
            seen.insert(location.clone(), version);
        }
    }

    /// Records this export's delete of `location`.
    pub(super) fn deleted(&self, location: &ObjectPath) {
        if let Some(seen) = lock(&self.seen).as_mut() {
            seen.remove(location);
        }
    }

    /// The error for `path` changed behind this export's back; every lease is marked lost, so
    /// that nothing more changes (not even the lock's release).
    pub(super) fn changed(&self, path: &str) -> DatasetError {
        let reason = format!(
            "`{}` was changed by another export after this one took the lock",
            path.trim_matches('/')
        );
        let leases = lock(&self.leases).clone();
        for lease in &leases {
            lease.lose(&reason);
        }
        let name = leases.first().map_or("", |l| l.name.as_str());
        DatasetError::LockLost {
            url: self.show(name),
            reason,
        }
    }

    /// The error for a failed `action` on `path`.
    pub(super) fn fail(&self, action: &'static str, path: &str, fail: Fail) -> DatasetError {
        match fail {
            Fail::Spool(source) => DatasetError::io("spool", Path::new(path), source),
            Fail::Store(e) => self.error(action, path, e),
            Fail::Changed => self.changed(path),
            Fail::LockLost(name, reason) => DatasetError::LockLost {
                url: self.show(&name),
                reason,
            },
        }
    }
}

/// An ETag as `If-Match` wants it: in quotes, which some stores' listings leave out (Azure).
fn quoted(e_tag: String) -> String {
    match e_tag.starts_with('"') || e_tag.starts_with("W/") {
        true => e_tag,
        false => format!("\"{e_tag}\""),
    }
}

/// Whether `location` still is as `expect` says, asked of the store with a HEAD; returns the
/// expectation with the version the store reports (GCS conditions writes on the generation,
/// which a LIST does not return).
pub(super) async fn check_unchanged(
    store: &dyn ObjectStore,
    location: &ObjectPath,
    expect: Expect,
) -> Result<Expect, Fail> {
    if expect == Expect::Anything {
        return Ok(expect);
    }
    let found = match store.head(location).await {
        Ok(meta) => Some(meta),
        Err(object_store::Error::NotFound { .. }) => None,
        Err(e) => return Err(Fail::Store(e)),
    };
    match (expect, found) {
        (Expect::Absent, None) => Ok(Expect::Absent),
        (Expect::Version(seen), Some(meta))
            if same_etag(meta.e_tag.as_deref(), seen.e_tag.as_deref()) =>
        {
            Ok(Expect::Version(UpdateVersion {
                e_tag: meta.e_tag,
                version: meta.version.or(seen.version),
            }))
        }
        _ => Err(Fail::Changed),
    }
}

/// One PUT of `payload` to `location`, conditional on `expect`; returns the new version.
/// `generations`: the store conditions on generations (GCS), learnt with a HEAD when the
/// snapshot has none.
pub(super) async fn put_checked(
    store: &Arc<dyn ObjectStore>,
    generations: bool,
    location: &ObjectPath,
    payload: PutPayload,
    expect: Expect,
) -> Result<UpdateVersion, Fail> {
    let expect = match expect {
        Expect::Version(seen) if generations && seen.version.is_none() => {
            check_unchanged(store.as_ref(), location, Expect::Version(seen)).await?
        }
        other => other,
    };
    let put = store
        .put_opts(location, payload, expect.put_mode().into())
        .await
        .map_err(|e| Fail::of_write(e, &expect))?;
    Ok(UpdateVersion {
        e_tag: put.e_tag,
        version: put.version,
    })
}

/// Deletes `location` if it is still as `expect` says: atomically on S3 (a `DELETE` with
/// `If-Match`), else by a HEAD just before. An object the snapshot does not hold was created by
/// someone else: refused.
pub(super) async fn delete_checked(
    store: &Arc<dyn ObjectStore>,
    s3: Option<&S3Direct>,
    location: &ObjectPath,
    expect: Expect,
) -> Result<(), Fail> {
    let seen = match expect {
        Expect::Anything => return store.delete(location).await.map_err(Fail::Store),
        Expect::Absent => return Err(Fail::Changed),
        Expect::Version(seen) => seen,
    };
    if let (Some(s3), Some(e_tag)) = (s3, seen.e_tag.as_deref())
        && s3.delete_if_match(location, e_tag).await?
    {
        return Ok(());
    }
    // Not S3, or an S3-compatible store without conditional deletes.
    check_unchanged(store.as_ref(), location, Expect::Version(seen)).await?;
    store.delete(location).await.map_err(Fail::Store)
}
