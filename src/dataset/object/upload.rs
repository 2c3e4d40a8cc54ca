//! Uploads: how a staged file or a staged object reaches its object, whole or not at all, under
//! the condition [`super::fence`] sets.
//!
//! A staged file spools to an unlinked local temp file (a killed process leaves nothing) and is
//! uploaded on commit: one PUT up to `single_put_max`, else a multipart upload that becomes
//! visible only when it completes, parts read from the spool file a few at a time, so memory
//! holds at most [`PARTS_IN_FLIGHT`] parts whatever the size. Moving a staged object into place
//! is a GET and such an upload, not a server-side copy (which S3 limits to 5 GiB and cannot make
//! conditional). On S3, a conditional upload in parts is completed by [`super::s3`] with
//! `If-Match`/`If-None-Match`; elsewhere `object_store` completes it, after the same checks
//! (lease fresh, object unchanged by a HEAD) that every upload in parts makes just before. Any
//! failure aborts the upload. It never chooses paths or conditions.

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use object_store::aws::AmazonS3;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as ObjectPath;
use object_store::{
    GetResult, MultipartId, ObjectStore, ObjectStoreExt, PutPayload, UpdateVersion, WriteMultipart,
};

use super::fence::{Expect, Fail, check_unchanged, put_checked};
use super::lease::Lease;
use super::s3::S3Direct;
use super::{Inner, ObjectOptions, lock};
use crate::dataset::DatasetError;
use crate::dataset::storage::StagedFile;

/// Parts uploaded at once per file: bounds memory to this many parts.
const PARTS_IN_FLIGHT: usize = 4;
/// Buffer in front of each spool file.
const SPOOL_BUFFER_BYTES: usize = 64 * 1024;

/// A new unlinked spool file.
fn spool_file() -> Result<File, DatasetError> {
    tempfile::tempfile()
        .map_err(|source| DatasetError::io("create a spool file in", &std::env::temp_dir(), source))
}

/// A file being written to `path`: spooled locally, uploaded whole on commit.
pub(super) fn staged(inner: &Arc<Inner>, path: &str) -> Result<Box<dyn StagedFile>, DatasetError> {
    let location = inner.object(path)?;
    Ok(Box::new(ObjectStaged {
        file: Some(BufWriter::with_capacity(SPOOL_BUFFER_BYTES, spool_file()?)),
        path: path.to_owned(),
        location,
        inner: inner.clone(),
    }))
}

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
        let expect = inner.expect(&self.path, &self.location);
        let job = Job::new(inner, self.location.clone(), expect.clone());
        let version = inner
            .run(job.upload(file, bytes))?
            .map_err(|fail| inner.fail("upload", &self.path, fail))?;
        inner.wrote(&self.location, &expect, version);
        Ok(bytes)
    }
}

/// One upload to one object: where, on what condition, and the leases that must still hold.
pub(super) struct Job {
    store: Arc<dyn ObjectStore>,
    s3: Option<S3Direct>,
    generations: bool,
    location: ObjectPath,
    options: ObjectOptions,
    leases: Vec<Arc<Lease>>,
    expect: Expect,
}

impl Job {
    pub(super) fn new(inner: &Inner, location: ObjectPath, expect: Expect) -> Self {
        Self {
            store: inner.store.clone(),
            s3: inner.s3.clone(),
            generations: inner.generations,
            location,
            options: inner.options.clone(),
            leases: lock(&inner.leases).clone(),
            expect,
        }
    }

    /// Uploads the `bytes` of the spooled `file`; returns the object's new version.
    pub(super) async fn upload(self, mut file: File, bytes: u64) -> Result<UpdateVersion, Fail> {
        if bytes <= self.options.single_put_max {
            let mut content = Vec::with_capacity(usize::try_from(bytes).unwrap_or(0));
            file.read_to_end(&mut content).map_err(Fail::Spool)?;
            return self.put(Bytes::from(content)).await;
        }
        match (&self.s3, &self.expect) {
            (Some(s3), Expect::Absent | Expect::Version(_)) => self.s3_parts(s3, file).await,
            _ => self.parts(file).await,
        }
    }

    /// Copies the object `source` here with a GET and a PUT (streamed through a spool file
    /// when large); returns the new version.
    pub(super) async fn relay(self, source: &ObjectPath) -> Result<UpdateVersion, Fail> {
        let got = self.store.get(source).await.map_err(Fail::Store)?;
        let size = got.meta.size;
        if size <= self.options.single_put_max {
            let content = got.bytes().await.map_err(Fail::Store)?;
            return self.put(content).await;
        }
        let file = spool(got).await?;
        self.upload(file, size).await
    }

    async fn put(self, content: Bytes) -> Result<UpdateVersion, Fail> {
        let payload = PutPayload::from(content);
        put_checked(
            &self.store,
            self.generations,
            &self.location,
            payload,
            self.expect,
        )
        .await
    }

    /// An upload in parts through `object_store`, which completes it unconditionally: the
    /// checks just before are the fence.
    async fn parts(self, mut file: File) -> Result<UpdateVersion, Fail> {
        let upload = self
            .store
            .put_multipart(&self.location)
            .await
            .map_err(Fail::Store)?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, self.options.part_size);
        let mut chunk = vec![0; self.options.part_size];
        let sent = async {
            loop {
                let read = read_full(&mut file, &mut chunk).map_err(Fail::Spool)?;
                if read == 0 {
                    break;
                }
                let capacity = writer.wait_for_capacity(PARTS_IN_FLIGHT).await;
                capacity.map_err(Fail::Store)?;
                writer.put(Bytes::copy_from_slice(&chunk[..read]));
            }
            writer.wait_for_capacity(0).await.map_err(Fail::Store)?;
            self.ready_to_complete().await
        }
        .await;
        if let Err(fail) = sent {
            let _ = writer.abort().await;
            return Err(fail);
        }
        let put = writer.finish().await.map_err(Fail::Store)?;
        Ok(UpdateVersion {
            e_tag: put.e_tag,
            version: put.version,
        })
    }

    /// An upload in parts to S3, completed by a conditional CompleteMultipartUpload.
    async fn s3_parts(&self, s3: &S3Direct, mut file: File) -> Result<UpdateVersion, Fail> {
        let location = &self.location;
        let id = s3
            .store
            .create_multipart(location)
            .await
            .map_err(Fail::Store)?;
        let done = async {
            let parts = self.put_parts(&s3.store, &id, &mut file).await?;
            self.ready_to_complete().await?;
            s3.complete(location, &id, &parts, &self.expect).await
        }
        .await;
        if done.is_err() {
            let _ = s3.store.abort_multipart(location, &id).await;
        }
        done
    }

    /// Sends the spooled `file` as parts of upload `id`, at most [`PARTS_IN_FLIGHT`] at once;
    /// returns their ids in order.
    async fn put_parts(
        &self,
        store: &Arc<AmazonS3>,
        id: &MultipartId,
        file: &mut File,
    ) -> Result<Vec<PartId>, Fail> {
        let mut parts: Vec<Option<PartId>> = Vec::new();
        let mut in_flight = FuturesUnordered::new();
        loop {
            if in_flight.len() >= PARTS_IN_FLIGHT {
                settle(&mut in_flight, &mut parts).await?;
                continue;
            }
            let mut chunk = vec![0; self.options.part_size];
            let read = read_full(file, &mut chunk).map_err(Fail::Spool)?;
            if read == 0 {
                break;
            }
            chunk.truncate(read);
            let index = parts.len();
            parts.push(None);
            let (store, location, id) = (store.clone(), self.location.clone(), id.clone());
            in_flight.push(async move {
                let payload = PutPayload::from(chunk);
                (index, store.put_part(&location, &id, index, payload).await)
            });
        }
        while !in_flight.is_empty() {
            settle(&mut in_flight, &mut parts).await?;
        }
        Ok(parts.into_iter().flatten().collect())
    }

    /// Just before an upload in parts becomes visible (it took a while): every lease must still
    /// be fresh and the object still as this export saw it.
    async fn ready_to_complete(&self) -> Result<(), Fail> {
        for lease in &self.leases {
            if let Err(reason) = lease.check_local() {
                return Err(Fail::LockLost(lease.name.clone(), reason));
            }
        }
        check_unchanged(self.store.as_ref(), &self.location, self.expect.clone())
            .await
            .map(drop)
    }
}

type PartUpload = (usize, object_store::Result<PartId>);

/// Waits for one part in flight and keeps its id.
async fn settle(
    in_flight: &mut FuturesUnordered<impl Future<Output = PartUpload>>,
    parts: &mut [Option<PartId>],
) -> Result<(), Fail> {
    if let Some((index, part)) = in_flight.next().await {
        parts[index] = Some(part.map_err(Fail::Store)?);
    }
    Ok(())
}

/// Streams a downloaded object into a new spool file, rewound.
async fn spool(got: GetResult) -> Result<File, Fail> {
    let mut file = tempfile::tempfile().map_err(Fail::Spool)?;
    let mut chunks = got.into_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(Fail::Store)?;
        file.write_all(&chunk).map_err(Fail::Spool)?;
    }
    file.seek(SeekFrom::Start(0)).map_err(Fail::Spool)?;
    Ok(file)
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
