//! Unit tests of object storage on `object_store`'s in-memory store: visibility, uploads in
//! parts and the lease.

use std::io::Write;

use chrono::Utc;
use object_store::PutPayload;
use object_store::memory::InMemory;

use super::lease::LockRecord;
use super::*;
use crate::dataset::storage::LOCK_FILE;

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
