//! Fenced writes against moto: a writer whose lease was taken over while one of its requests was
//! in flight (held by [`Proxy`]) changes nothing; uploads in parts are conditional (the
//! completion with `If-None-Match`, which moto enforces; a replace after a change refused at
//! least by the check before completing, since moto does not enforce `If-Match` there); a delete
//! is a conditional `DELETE`.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload};
use orchestra_export::dataset::{DatasetError, ObjectOptions, ObjectStorage, Storage};
use orchestra_export::simulate::SimConfig;

use super::proxy::Proxy;
use super::*;

const MIB: usize = 1024 * 1024;
const PARTITION: &str = "runs/date=2025-03-11/part-0.parquet";

impl Bucket {
    /// Every object below `prefix` with its content.
    fn contents(&self, prefix: &str) -> BTreeMap<String, Vec<u8>> {
        self.keys(prefix)
            .into_iter()
            .map(|key| {
                let content = self.content(&key);
                (key, content)
            })
            .collect()
    }

    fn content(&self, key: &str) -> Vec<u8> {
        self.runtime.block_on(async {
            let got = self.store.get(&ObjectPath::from(key)).await.unwrap();
            got.bytes().await.unwrap().to_vec()
        })
    }

    /// Another export's write, straight to moto.
    fn put(&self, key: &str, content: &str) {
        let payload = PutPayload::from(content.to_owned());
        let location = ObjectPath::from(key);
        let put = self.store.put(&location, payload);
        self.runtime.block_on(put).unwrap();
    }
}

impl Moto {
    /// Multipart uploads of `bucket` begun and neither completed nor aborted.
    fn unfinished_uploads(&self, bucket: &str) -> usize {
        let authority = self.endpoint.trim_start_matches("http://");
        let mut stream = TcpStream::connect(authority).unwrap();
        write!(
            stream,
            "GET /{bucket}?uploads HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        answer.matches("<UploadId>").count()
    }
}

/// A request line with its percent-escapes decoded.
fn decoded(line: &str) -> String {
    percent_encoding::percent_decode_str(line)
        .decode_utf8_lossy()
        .into_owned()
}

/// The object a held request line (`PUT /lake/p/runs/date%3D…/part-0.parquet?… HTTP/1.1`)
/// writes, from the dataset root `p`.
fn held_object(line: &str, root: &str) -> String {
    let path = line.split(' ').nth(1).unwrap().split('?').next().unwrap();
    decoded(path)
        .strip_prefix(&format!("/lake/{root}/"))
        .unwrap()
        .to_owned()
}

/// A partition write of an export into `s3://lake/p` or `s3://lake/q`: one PUT, or an upload
/// in parts.
fn partition_write(line: &str) -> bool {
    ["p", "q"].iter().any(|root| {
        let to_runs = |method: &str| line.starts_with(&format!("{method} /lake/{root}/runs/"));
        to_runs("PUT") || (to_runs("POST") && line.contains("uploadId="))
    })
}

#[test]
fn a_paused_writer_whose_lease_was_taken_over_cannot_overwrite_anything_even_with_a_request_in_flight()
 {
    let moto = Moto::start();
    moto.create_bucket("lake");
    let sim = Sim::start(SimConfig {
        workflows: 2,
        runs_per_workflow: 200,
        ..SimConfig::default()
    });
    // Into an empty prefix the held write creates a partition (`If-None-Match: *`); over an
    // existing dataset it replaces one (`If-Match`).
    paused_writer_round(&moto, &sim, "p", "if-none-match: *");
    assert_ok(&s3_export(&moto, &sim, "s3://lake/q", &["--all-workflows"]));
    sim.server.add_runs(0, 30);
    sim.server.add_runs(1, 30);
    paused_writer_round(&moto, &sim, "q", "if-match: \"");
}

/// Writer A exports into `s3://lake/{root}` through a proxy that holds its first partition
/// write (whose head must hold `condition`); A is paused past its lease, B exports to the end,
/// then A's write goes on and A wakes up: refused, A exits 6 and the bucket is as B left it.
fn paused_writer_round(moto: &Moto, sim: &Sim, root: &str, condition: &str) {
    let out_url = format!("s3://lake/{root}");
    let bucket = moto.bucket("lake");
    let proxy = Proxy::start(&moto.endpoint, partition_write);
    let url = sim.url();
    let first = command(moto, &export_args(&url, &out_url, &["--all-workflows"]))
        .env("AWS_ENDPOINT_URL", &proxy.endpoint)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let held = proxy.wait_held(Duration::from_secs(120));
    signal(&first, "-STOP");
    // Only the request line is shown: the head carries a signature.
    let line = held.lines().next().unwrap().to_owned();
    let conditional = held.to_ascii_lowercase().contains(condition);
    assert!(conditional, "{line}: no `{condition}`");
    std::thread::sleep(Duration::from_secs(TEST_LEASE_SECS + 1));
    let second = s3_export(moto, sim, &out_url, &["--all-workflows"]);
    assert_ok(&second);
    let after_second = bucket.contents(root);

    // The write lands after all, then the writer wakes up.
    proxy.release();
    signal(&first, "-CONT");
    let first = first.wait_with_output().unwrap();
    assert_no_secret(&first);
    assert_eq!(first.status.code(), Some(6), "{}", stderr(&first));
    let object = held_object(&line, root);
    assert!(object.starts_with("runs/date="), "{line}");
    assert_stderr_contains(
        &first,
        &format!(
            "error: lost the lock `{out_url}/_lock`: `{object}` was changed by another export after this one took the lock; stopped before changing more objects"
        ),
    );
    assert!(
        bucket.contents(root) == after_second,
        "the paused writer changed objects in {out_url}"
    );
    let local = bucket.download(root);
    for id in sim.ids() {
        assert_dataset_matches(local.path(), &id, &sim.server.records(&id), 0);
    }
}

/// Storage of `s3://lake/{prefix}` through `endpoint`, putting objects over 6 MiB in 5 MiB parts
/// (S3's smallest part but the last); its lock taken.
fn locked_writer(endpoint: &str, prefix: &str) -> (Arc<ObjectStorage>, Box<dyn Send>) {
    let options = ObjectOptions {
        single_put_max: 6 * MIB as u64,
        part_size: 5 * MIB,
        ..ObjectOptions::default()
    };
    let store = Arc::new(s3_client(endpoint, "lake"));
    let url = format!("s3://lake/{prefix}");
    let storage = ObjectStorage::with_s3(store, ObjectPath::from(prefix), url, options).unwrap();
    let guard = storage.lock("_lock", "pid 1 (a test)").unwrap();
    (Arc::new(storage), guard)
}

/// 11 MiB that differ by `seed`: three parts.
fn eleven_mib(seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..11 * MIB)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn write(storage: &ObjectStorage, path: &str, content: &[u8]) -> Result<u64, DatasetError> {
    let mut staged = storage.create(path)?;
    staged.write_all(content).unwrap();
    staged.commit()
}

fn changed(prefix: &str, path: &str) -> String {
    format!(
        "lost the lock `s3://lake/{prefix}/_lock`: `{path}` was changed by another export after this one took the lock; stopped before changing more objects"
    )
}

#[test]
fn uploads_in_parts_to_s3_are_conditional_on_what_the_writer_saw() {
    let moto = Moto::start();
    moto.create_bucket("lake");
    let bucket = moto.bucket("lake");

    // Its own uploads in parts: created, then replaced, each read back identical, in 3 parts.
    let fresh = "runs/date=2025-03-12/part-0.parquet";
    let proxy = Proxy::start(&moto.endpoint, |line| {
        let line = decoded(line);
        line.starts_with("POST /lake/a/runs/date=2025-03-12/") && line.contains("uploadId=")
    });
    let (writer, _guard) = locked_writer(&proxy.endpoint, "a");
    for seed in [1, 2] {
        let content = eleven_mib(seed);
        assert_eq!(
            write(&writer, PARTITION, &content).unwrap(),
            11 * MIB as u64
        );
        assert!(bucket.content(&format!("a/{PARTITION}")) == content);
        let e_tag = &bucket.objects("a/runs")[&format!("a/{PARTITION}")];
        assert!(e_tag.ends_with("-3\""), "{e_tag}");
    }

    // A create in parts of an absent object that another export creates while the completion
    // is on its way: refused by the store (`If-None-Match: *`), the upload aborted.
    let racing = writer.clone();
    let upload = std::thread::spawn(move || write(&racing, fresh, &eleven_mib(3)));
    proxy.wait_held(Duration::from_secs(120));
    bucket.put(&format!("a/{fresh}"), "theirs");
    proxy.release();
    let err = upload.join().unwrap().unwrap_err();
    assert!(matches!(err, DatasetError::LockLost { .. }), "{err}");
    assert_eq!(err.to_string(), changed("a", fresh));
    assert_eq!(bucket.content(&format!("a/{fresh}")), b"theirs");
    assert_eq!(moto.unfinished_uploads("lake"), 0);

    // A replace in parts after another export replaced the object: refused before completing
    // (moto does not enforce `If-Match` on the completion; S3 does).
    let (writer, _guard) = locked_writer(&moto.endpoint, "b");
    write(&writer, PARTITION, &eleven_mib(4)).unwrap();
    bucket.put(&format!("b/{PARTITION}"), "theirs");
    let err = write(&writer, PARTITION, &eleven_mib(5)).unwrap_err();
    assert_eq!(err.to_string(), changed("b", PARTITION));
    assert_eq!(bucket.content(&format!("b/{PARTITION}")), b"theirs");
    assert_eq!(moto.unfinished_uploads("lake"), 0);
}

#[test]
fn a_delete_on_s3_is_conditional_on_the_etag_the_writer_saw() {
    let moto = Moto::start();
    moto.create_bucket("lake");
    let bucket = moto.bucket("lake");
    bucket.put(&format!("c/{PARTITION}"), "seen when the lock was taken");
    let proxy = Proxy::start(&moto.endpoint, |line| {
        line.starts_with("DELETE /lake/c/runs/")
    });
    let (writer, _guard) = locked_writer(&proxy.endpoint, "c");
    // Another export replaces the object while the delete is on its way: S3 refuses it.
    let racing = writer.clone();
    let delete = std::thread::spawn(move || racing.remove(PARTITION));
    proxy.wait_held(Duration::from_secs(60));
    bucket.put(&format!("c/{PARTITION}"), "theirs");
    proxy.release();
    let err = delete.join().unwrap().unwrap_err();
    assert_eq!(err.to_string(), changed("c", PARTITION));
    assert_eq!(bucket.content(&format!("c/{PARTITION}")), b"theirs");
}
