//! Unit tests of object storage on `object_store`'s in-memory store: visibility, uploads in
//! parts, the lease, and the fence (writes and deletes conditional on the lock's snapshot).

mod counting;

use std::io::Write;

use chrono::Utc;
use object_store::PutPayload;
use object_store::memory::InMemory;

use super::lease::LockRecord;
use super::*;
use crate::dataset::storage::LOCK_FILE;
use counting::NoCopy;

fn storage<S: ObjectStore>(store: &Arc<S>, options: ObjectOptions) -> ObjectStorage {
    ObjectStorage::with_store(
        store.clone(),
        ObjectPath::parse("pre/fix").unwrap(),
        "mem://bucket/pre/fix".to_owned(),
        options,
    )
    .unwrap()
}

fn block_on<T>(future: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(future)
}

fn keys<S: ObjectStore>(store: &Arc<S>) -> Vec<String> {
    let mut keys: Vec<String> = block_on(async {
        store
            .list(None)
            .map(|m| m.unwrap().location.to_string())
            .collect()
            .await
    });
    keys.sort();
    keys
}

/// Another export's write, straight to the store, behind the writer's back.
fn put_behind<S: ObjectStore>(store: &Arc<S>, key: &str, text: &str) {
    let location = ObjectPath::parse(key).unwrap();
    block_on(store.put(&location, PutPayload::from(text.to_owned()))).unwrap();
}

/// What the store holds at `key`, read straight from it.
fn content<S: ObjectStore>(store: &Arc<S>, key: &str) -> Bytes {
    let location = ObjectPath::parse(key).unwrap();
    block_on(async { store.get(&location).await.unwrap().bytes().await.unwrap() })
}

/// Writes `content` to `path` through the storage, as the dataset writer does.
fn write(storage: &ObjectStorage, path: &str, content: &[u8]) -> Result<u64, DatasetError> {
    let mut staged = storage.create(path).unwrap();
    staged.write_all(content).unwrap();
    staged.commit()
}

/// The message of a lock lost because another export changed `path`.
fn changed_message(path: &str) -> String {
    format!(
        "lost the lock `mem://bucket/pre/fix/_lock`: `{path}` was changed by another export after this one took the lock; stopped before changing more objects"
    )
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
    let lock_path = ObjectPath::parse("pre/fix/_lock").unwrap();
    for stale in [
        r#"{"holder": "pid 9", "token": "t", "expires_at": "2020-01-01T00:00:00Z"}"#,
        "pid 9 on a host, written by a local export",
    ] {
        block_on(mem.put(&lock_path, PutPayload::from(stale))).unwrap();
        let guard = first.lock(LOCK_FILE, "pid 1 on a").unwrap();
        let record: LockRecord = serde_json::from_slice(&first.read(LOCK_FILE).unwrap()).unwrap();
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
    block_on(mem.put(
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
    block_on(mem.put(
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

const PARTITION: &str = "runs/date=2025-03-11/part-0.parquet";
const PARTITION_KEY: &str = "pre/fix/runs/date=2025-03-11/part-0.parquet";

#[test]
fn a_partition_changed_behind_the_writers_back_stays_as_the_other_wrote_it_and_nothing_more_changes()
 {
    let mem = Arc::new(InMemory::new());
    put_behind(&mem, PARTITION_KEY, "before the lock");
    let writer = storage(&mem, ObjectOptions::default());
    let guard = writer.lock(LOCK_FILE, "pid 1").unwrap();
    let lock_record = content(&mem, "pre/fix/_lock");
    put_behind(&mem, PARTITION_KEY, "the other export's");

    let err = write(&writer, PARTITION, b"mine").unwrap_err();
    assert!(matches!(err, DatasetError::LockLost { .. }), "{err}");
    assert_eq!(err.to_string(), changed_message(PARTITION));
    assert_eq!(content(&mem, PARTITION_KEY), "the other export's");
    // The export stops: no other object changes, staged or visible, and the lock is not
    // released (it may be another export's now).
    assert!(matches!(
        write(&writer, "_state/w.json", b"{}"),
        Err(DatasetError::LockLost { .. })
    ));
    assert!(matches!(
        write(&writer, "_staging/e/x", b"x"),
        Err(DatasetError::LockLost { .. })
    ));
    drop(guard);
    assert_eq!(keys(&mem), ["pre/fix/_lock", PARTITION_KEY]);
    assert_eq!(content(&mem, "pre/fix/_lock"), lock_record);
}

#[test]
fn an_object_created_behind_the_writers_back_blocks_its_create_and_its_rename() {
    let mem = Arc::new(InMemory::new());
    let writer = storage(&mem, ObjectOptions::default());
    let _guard = writer.lock(LOCK_FILE, "pid 1").unwrap();
    put_behind(&mem, "pre/fix/_SUCCESS", "theirs");
    let err = write(&writer, "_SUCCESS", b"ours").unwrap_err();
    assert_eq!(err.to_string(), changed_message("_SUCCESS"));
    assert_eq!(content(&mem, "pre/fix/_SUCCESS"), "theirs");

    // A new partition moved into place from staging: refused the same way, staged object kept.
    let mem = Arc::new(InMemory::new());
    let writer = storage(&mem, ObjectOptions::default());
    let _guard = writer.lock(LOCK_FILE, "pid 1").unwrap();
    write(&writer, "_staging/e/runs/p.parquet", b"ours").unwrap();
    put_behind(&mem, PARTITION_KEY, "theirs");
    let err = writer
        .rename("_staging/e/runs/p.parquet", PARTITION)
        .unwrap_err();
    assert_eq!(err.to_string(), changed_message(PARTITION));
    assert_eq!(content(&mem, PARTITION_KEY), "theirs");
    assert!(keys(&mem).contains(&"pre/fix/_staging/e/runs/p.parquet".to_owned()));
}

#[test]
fn the_writers_own_successive_changes_of_one_object_succeed() {
    let mem = Arc::new(InMemory::new());
    put_behind(&mem, "pre/fix/_state/w.json", "v0");
    put_behind(&mem, "pre/fix/_staging/old/x", "left by a killed export");
    let writer = storage(&mem, ObjectOptions::default());
    let _guard = writer.lock(LOCK_FILE, "pid 1").unwrap();
    for version in ["v1", "v2", "v3"] {
        write(&writer, "_state/w.json", version.as_bytes()).unwrap();
        write(&writer, "_manifest/m.json", version.as_bytes()).unwrap();
    }
    assert_eq!(writer.read("_state/w.json").unwrap(), "v3");
    assert_eq!(writer.read("_manifest/m.json").unwrap(), "v3");
    for round in ["new", "merged"] {
        write(&writer, "_staging/e/p", round.as_bytes()).unwrap();
        writer.rename("_staging/e/p", PARTITION).unwrap();
        assert_eq!(writer.read(PARTITION).unwrap(), round);
    }
    // Removed, then written again; a file seen when the lock was taken, removed.
    writer.remove(PARTITION).unwrap();
    write(&writer, PARTITION, b"again").unwrap();
    writer.remove("_state/w.json").unwrap();
    // Staging is not fenced: what a killed export left there goes whatever it holds.
    put_behind(&mem, "pre/fix/_staging/old/x", "changed");
    writer.remove_dir_all("_staging").unwrap();
    assert_eq!(
        keys(&mem),
        ["pre/fix/_lock", "pre/fix/_manifest/m.json", PARTITION_KEY]
    );
}

#[test]
fn a_staged_file_over_one_part_is_moved_into_place_by_an_upload_in_parts_not_a_copy() {
    let mem = Arc::new(NoCopy::default());
    let options = ObjectOptions {
        single_put_max: 1000,
        part_size: 300,
        ..ObjectOptions::default()
    };
    let writer = storage(&mem, options);
    let _guard = writer.lock(LOCK_FILE, "pid 1").unwrap();
    for seed in [7u32, 11] {
        let bytes: Vec<u8> = (0..10_007u32).map(|i| (i * seed % 251) as u8).collect();
        write(&writer, "_staging/e/p", &bytes).unwrap();
        let uploads = mem.multipart_uploads();
        // The first round creates the partition, the second replaces it.
        writer.rename("_staging/e/p", PARTITION).unwrap();
        assert_eq!(mem.multipart_uploads(), uploads + 1);
        assert_eq!(content(&mem, PARTITION_KEY), bytes);
    }
    assert_eq!(mem.copies(), 0);
    assert_eq!(keys(&mem), ["pre/fix/_lock", PARTITION_KEY]);
}

#[test]
fn deletes_are_checked_against_what_the_writer_saw() {
    let (one, two) = ("runs/date=1/old.parquet", "runs/date=2/old.parquet");
    let mem = Arc::new(InMemory::new());
    put_behind(&mem, &format!("pre/fix/{one}"), "a");
    put_behind(&mem, &format!("pre/fix/{two}"), "b");
    let writer = storage(&mem, ObjectOptions::default());
    let _guard = writer.lock(LOCK_FILE, "pid 1").unwrap();
    writer.remove(one).unwrap();
    put_behind(&mem, &format!("pre/fix/{two}"), "changed");
    let err = writer.remove(two).unwrap_err();
    assert_eq!(err.to_string(), changed_message(two));
    assert_eq!(content(&mem, &format!("pre/fix/{two}")), "changed");

    // Created after the lock was taken: not this export's to delete.
    let mem = Arc::new(InMemory::new());
    let writer = storage(&mem, ObjectOptions::default());
    let _guard = writer.lock(LOCK_FILE, "pid 1").unwrap();
    put_behind(&mem, "pre/fix/_SUCCESS", "theirs");
    let err = writer.remove("_SUCCESS").unwrap_err();
    assert_eq!(err.to_string(), changed_message("_SUCCESS"));
    assert_eq!(content(&mem, "pre/fix/_SUCCESS"), "theirs");
}

#[test]
fn without_a_lock_writes_and_deletes_are_unconditional() {
    let mem = Arc::new(InMemory::new());
    let writer = storage(&mem, ObjectOptions::default());
    let guard = writer.lock(LOCK_FILE, "pid 1").unwrap();
    drop(guard);
    // Taken and released: what it saw no longer holds.
    put_behind(&mem, PARTITION_KEY, "theirs");
    write(&writer, PARTITION, b"ours").unwrap();
    assert_eq!(content(&mem, PARTITION_KEY), "ours");
    put_behind(&mem, PARTITION_KEY, "theirs again");
    writer.remove(PARTITION).unwrap();
    assert_eq!(keys(&mem), ["pre/fix/_lock"]);
}

#[test]
fn large_parquet_files_are_read_by_ranges_of_one_version() {
    use arrow::array::{Int64Array, RecordBatch};
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::WriterProperties;
    use parquet::file::reader::ChunkReader;

    let mem = Arc::new(InMemory::new());
    let options = ObjectOptions {
        whole_read_max: 100,
        ..ObjectOptions::default()
    };
    let store = storage(&mem, options);
    let batch =
        RecordBatch::try_from_iter([("n", Arc::new(Int64Array::from_iter_values(0..10_000)) as _)])
            .unwrap();
    let mut bytes = Vec::new();
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(1000))
        .build();
    let mut writer = ArrowWriter::try_new(&mut bytes, batch.schema(), Some(props)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    assert!(bytes.len() > 100);
    let mut staged = store.create("t.parquet").unwrap();
    staged.write_all(&bytes).unwrap();
    staged.commit().unwrap();

    let source = store.read_parquet("t.parquet").unwrap();
    assert!(matches!(source, ParquetSource::Ranges { .. }), "read whole");
    let rows: usize = crate::dataset::batches(&store, "t.parquet", None)
        .unwrap()
        .map(|b| b.unwrap().num_rows())
        .sum();
    assert_eq!(rows, 10_000);

    // The file is replaced between two ranges: the second is refused, not read from the new one.
    let mut read = source.get_read(0).unwrap();
    let mut first = [0u8; 4];
    std::io::Read::read_exact(&mut read, &mut first).unwrap();
    assert_eq!(&first, b"PAR1");
    let location = ObjectPath::parse("pre/fix/t.parquet").unwrap();
    block_on(mem.put(&location, PutPayload::from(bytes.clone()))).unwrap();
    let err = source.get_bytes(0, 4).unwrap_err();
    assert!(err.to_string().contains("cannot read"), "{err}");
}
