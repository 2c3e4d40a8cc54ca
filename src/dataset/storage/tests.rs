//! Unit tests of local storage: staging, cleanup, modes, links and the lock's token.
use super::*;

#[test]
fn staged_file_is_invisible_until_commit_and_gone_if_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStorage::open(dir.path()).unwrap();
    let mut staged = store.create("t/date=2025-01-01/a.parquet").unwrap();
    staged.write_all(b"hello").unwrap();
    assert!(store.list("t/date=2025-01-01").unwrap().is_empty());
    assert_eq!(staged.commit().unwrap(), 5);
    assert_eq!(store.list("t/date=2025-01-01").unwrap(), ["a.parquet"]);

    let mut dropped = store.create("t/date=2025-01-01/b.parquet").unwrap();
    dropped.write_all(b"partial").unwrap();
    drop(dropped);
    let names: Vec<_> = fs::read_dir(dir.path().join("t/date=2025-01-01"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["a.parquet"]);
}

#[test]
fn abandoned_temp_files_are_removed_only_when_owned() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStorage::open(dir.path()).unwrap();
    let part = dir.path().join("runs/date=2025-01-01");
    fs::create_dir_all(&part).unwrap();
    for name in [
        ".shard-00-of-02.parquet.11-0.tmp",
        ".shard-01-of-02.parquet.12-0.tmp",
        "shard-01-of-02.parquet",
        ".odd.tmp",
    ] {
        fs::write(part.join(name), b"x").unwrap();
    }
    fs::write(dir.path().join(".x.json.13-4.tmp"), b"x").unwrap();
    // Not ours: another program's temp file in a folder of ours, and a folder not ours.
    fs::write(part.join(".cache.tmp"), b"x").unwrap();
    fs::create_dir_all(dir.path().join("notes")).unwrap();
    fs::write(dir.path().join("notes/.draft.txt.1-2.tmp"), b"x").unwrap();
    let seen = std::sync::Mutex::new(Vec::new());
    let owned = |path: &str| {
        seen.lock().unwrap().push(path.to_owned());
        path.ends_with("shard-01-of-02.parquet")
    };
    assert_eq!(store.remove_abandoned("", &owned).unwrap(), 1);
    let mut seen = seen.into_inner().unwrap();
    seen.sort();
    assert_eq!(
        seen,
        [
            "runs/date=2025-01-01/shard-00-of-02.parquet",
            "runs/date=2025-01-01/shard-01-of-02.parquet",
            "x.json"
        ]
    );
    let mut left: Vec<_> = fs::read_dir(&part)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            ".cache.tmp",
            ".odd.tmp",
            ".shard-00-of-02.parquet.11-0.tmp",
            "shard-01-of-02.parquet"
        ]
    );
    assert_eq!(store.remove_abandoned("runs", &|_| true).unwrap(), 1);
    assert!(dir.path().join(".x.json.13-4.tmp").exists());
    assert!(part.join(".cache.tmp").exists() && part.join(".odd.tmp").exists());
    assert!(dir.path().join("notes/.draft.txt.1-2.tmp").exists());
}

#[cfg(unix)]
#[test]
fn files_and_folders_are_created_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStorage::open(dir.path().join("out")).unwrap();
    let mut file = store.create("runs/date=2025-01-01/part-0.parquet").unwrap();
    file.write_all(b"x").unwrap();
    file.commit().unwrap();
    let _lock = store.lock(LOCK_FILE, "me").unwrap();
    let mode = |p: &str| {
        let path = dir.path().join("out").join(p);
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode(""), 0o700);
    assert_eq!(mode("runs"), 0o700);
    assert_eq!(mode("runs/date=2025-01-01"), 0o700);
    assert_eq!(mode("runs/date=2025-01-01/part-0.parquet"), 0o600);
    assert_eq!(mode(LOCK_FILE), 0o600);
}

#[cfg(unix)]
#[test]
fn links_planted_in_the_dataset_are_refused_and_nothing_outside_changes() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("precious"), b"keep me").unwrap();
    let root = dir.path().join("out");
    let store = LocalStorage::open(&root).unwrap();
    symlink(outside.join("precious"), root.join(LOCK_FILE)).unwrap();
    symlink(&outside, root.join("_state")).unwrap();
    fs::create_dir_all(root.join("runs")).unwrap();
    symlink(&outside, root.join("runs/date=2025-01-01")).unwrap();

    let link = |e: DatasetError| match e {
        DatasetError::Link { path } => path.strip_prefix(&root).unwrap().to_owned(),
        other => panic!("{other}"),
    };
    let err = store.lock(LOCK_FILE, "me").err().unwrap();
    assert_eq!(link(err), Path::new(LOCK_FILE));
    let err = store.create("_state/wf.json").err().unwrap();
    assert_eq!(link(err), Path::new("_state"));
    let err = store
        .create("runs/date=2025-01-01/part-0.parquet")
        .err()
        .unwrap();
    assert_eq!(link(err), Path::new("runs/date=2025-01-01"));
    let err = store.remove("runs/date=2025-01-01/precious").unwrap_err();
    assert!(err.to_string().contains("is a symbolic link"), "{err}");
    let err = store.rename("x", "_state/wf.json").unwrap_err();
    assert!(matches!(err, DatasetError::Link { .. }), "{err}");

    let mut names: Vec<_> = fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["precious"]);
    assert_eq!(fs::read(outside.join("precious")).unwrap(), b"keep me");
}

#[test]
fn a_lock_another_host_took_stops_every_change() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStorage::open(dir.path()).unwrap();
    let commit = |path: &str| {
        let mut file = store.create(path).unwrap();
        file.write_all(b"x").unwrap();
        file.commit()
    };
    let guard = store.lock(LOCK_FILE, "pid 1 on here").unwrap();
    commit("a").unwrap();
    let text = fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
    assert!(text.starts_with("pid 1 on here\ntoken "), "{text}");
    // A host whose mount ignores the kernel lock took it and wrote its own holder.
    fs::write(dir.path().join(LOCK_FILE), "pid 2 on there\ntoken 00\n").unwrap();
    let taken = |result: Result<_, DatasetError>| match result {
        Err(e @ DatasetError::LockTaken { .. }) => e.to_string(),
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("a change went ahead"),
    };
    let message = taken(commit("b").map(|_| ()));
    assert!(
        message.contains("now names another export (pid 2 on there)"),
        "{message}"
    );
    taken(store.rename("a", "c"));
    taken(store.remove("a"));
    assert!(!dir.path().join("b").exists() && dir.path().join("a").exists());
    drop(guard);
    commit("b").unwrap();
}

#[test]
fn a_file_as_root_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    fs::write(&file, b"x").unwrap();
    let err = LocalStorage::open(&file).unwrap_err();
    assert!(err.to_string().contains("not a directory"), "{err}");
}
