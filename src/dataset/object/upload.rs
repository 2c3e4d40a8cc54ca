//! Uploads: how a staged file reaches its object, whole or not at all.
//!
//! A staged file spools to an unlinked local temp file (a killed process leaves nothing) and is
//! uploaded on commit: one PUT up to `single_put_max`, else a multipart upload that becomes
//! visible only when it completes, parts read from the spool file a few at a time, so memory
//! holds at most [`PARTS_IN_FLIGHT`] parts whatever the size; it is aborted on failure, or when
//! the lease was lost meanwhile. It never chooses paths.

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};

use super::lease::Lease;
use super::{Inner, ObjectOptions, lock};
use crate::dataset::DatasetError;
use crate::dataset::storage::StagedFile;

/// Parts uploaded at once per file: bounds memory to this many parts.
const PARTS_IN_FLIGHT: usize = 4;
/// Buffer in front of each spool file.
const SPOOL_BUFFER_BYTES: usize = 64 * 1024;

/// A file being written to `path`: spooled locally, uploaded whole on commit.
pub(super) fn staged(inner: &Arc<Inner>, path: &str) -> Result<Box<dyn StagedFile>, DatasetError> {
    let location = inner.object(path)?;
    // Unlinked at once: a killed process leaves nothing behind.
    let spool = tempfile::tempfile().map_err(|source| {
        DatasetError::io("create a spool file in", &std::env::temp_dir(), source)
    })?;
    Ok(Box::new(ObjectStaged {
        file: Some(BufWriter::with_capacity(SPOOL_BUFFER_BYTES, spool)),
        path: path.to_owned(),
        location,
        inner: inner.clone(),
    }))
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
