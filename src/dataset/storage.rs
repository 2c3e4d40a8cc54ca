//! The storage seam: the only code that knows how a file appears atomically under the export root.
//!
//! Writers stream into a [`StagedFile`]; nothing is visible to readers until
//! [`StagedFile::commit`]. On local disk a staged file is a hidden temp file in the destination
//! folder (its name starts with `.` and ends in `.tmp`, so `**/*.parquet` globs never match it),
//! committed by fsync, rename and fsync of the folder. Object storage is behind the same trait
//! ([`super::object`]).

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;

use super::DatasetError;

/// Buffer in front of each staged local file; Parquet writes whole pages and row groups anyway,
/// and one is held per open file (up to 192).
const WRITE_BUFFER_BYTES: usize = 16 * 1024;

/// Where committed files live. Paths are relative, `/`-separated, below the export root.
pub trait Storage: Send + Sync {
    /// Starts a new file at `path`; it stays invisible until committed.
    fn create(&self, path: &str) -> Result<Box<dyn StagedFile>, DatasetError>;
    /// Names of the committed files directly inside folder `dir` (empty when it does not exist).
    fn list(&self, dir: &str) -> Result<Vec<String>, DatasetError>;
    /// Names of the folders directly inside folder `dir` (empty when it does not exist), such as
    /// a table's partitions; hidden ones (`.…`) are left out.
    fn list_dirs(&self, dir: &str) -> Result<Vec<String>, DatasetError>;
    /// The whole content of a committed file.
    fn read(&self, path: &str) -> Result<Bytes, DatasetError>;
    /// Moves a committed file to `to`, atomically replacing any file there, durably.
    fn rename(&self, from: &str, to: &str) -> Result<(), DatasetError>;
    /// Removes a committed file.
    fn remove(&self, path: &str) -> Result<(), DatasetError>;
    /// Removes a folder and everything in it (nothing when it does not exist).
    fn remove_dir_all(&self, dir: &str) -> Result<(), DatasetError>;
    /// Removes staged files that a killed process left below `dir` and that were to become a
    /// file whose path `owned` accepts (shards clean only their own); returns how many. Only
    /// call it while holding the lock of every writer those files could belong to.
    fn remove_abandoned(
        &self,
        dir: &str,
        owned: &dyn Fn(&str) -> bool,
    ) -> Result<usize, DatasetError>;
    /// Takes the writer lock `name` (a file in the root, e.g. [`LOCK_FILE`]), released when the
    /// guard is dropped (or the process dies). `holder` describes this process for the error
    /// another process will see.
    fn lock(&self, name: &str, holder: &str) -> Result<Box<dyn Send>, DatasetError>;
    /// How to show `path` to a person (an absolute path or URL).
    fn display(&self, path: &str) -> String;
}

/// A file being written; dropped without `commit`, it disappears.
pub trait StagedFile: Write + Send {
    /// Makes the file durable and visible at its final path, returning its size in bytes.
    fn commit(self: Box<Self>) -> Result<u64, DatasetError>;
}

/// A folder on the local file system.
#[derive(Debug, Clone)]
pub struct LocalStorage {
    root: PathBuf,
}

impl LocalStorage {
    /// Opens (creating if needed) the export root `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, DatasetError> {
        let root = root.into();
        if root.exists() && !root.is_dir() {
            return Err(DatasetError::NotADirectory { path: root });
        }
        create_dir_durable(&root)?;
        Ok(Self { root })
    }

    /// The export root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn full(&self, path: &str) -> PathBuf {
        self.root.join(path)
    }

    /// `path` (from the root) and the folders between it and the root, as far as they exist,
    /// checked not to be symbolic links: a link planted in the dataset would have it write, or
    /// remove, outside it. (The root itself may be a link.)
    fn checked(&self, path: &str) -> Result<PathBuf, DatasetError> {
        let mut at = self.root.clone();
        for part in Path::new(path).components() {
            at.push(part);
            match fs::symlink_metadata(&at) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(DatasetError::Link { path: at });
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(source) => return Err(DatasetError::io("inspect", &at, source)),
            }
        }
        Ok(self.full(path))
    }

    /// Sorted names of the entries of folder `dir` of a kind `keep` accepts, hidden ones left
    /// out (empty when the folder does not exist).
    fn entries(
        &self,
        dir: &str,
        keep: impl Fn(fs::FileType) -> bool,
    ) -> Result<Vec<String>, DatasetError> {
        let full = self.full(dir);
        let entries = match fs::read_dir(&full) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(DatasetError::io("list", &full, source)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| DatasetError::io("list", &full, source))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && entry.file_type().is_ok_and(&keep) {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }
}

static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

static SHARED_FILES: AtomicBool = AtomicBool::new(false);

/// Files and folders created from now on are readable by other users (`0644`/`0755`, before the
/// umask: `--shared-files`) instead of by their owner only (`0600`/`0700`, the default: the
/// dataset holds run inputs and outputs, `_rejected/` raw records).
pub fn share_files(shared: bool) {
    SHARED_FILES.store(shared, Ordering::Relaxed);
}

/// The modes of new files and folders.
fn modes() -> (u32, u32) {
    if SHARED_FILES.load(Ordering::Relaxed) {
        (0o644, 0o755)
    } else {
        (0o600, 0o700)
    }
}

/// Opens a new file for writing: never an existing one, never through a link.
fn create_file(path: &Path) -> io::Result<File> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, modes().0);
    options.open(path)
}

/// The name of the file a hidden temp file of ours (`.{name}.{pid}-{seq}.tmp`, both numbers
/// decimal) was to become; `None` for any other name, which is never ours to remove.
fn temp_target(temp: &str) -> Option<&str> {
    let (name, pid_seq) = temp
        .strip_prefix('.')?
        .strip_suffix(".tmp")?
        .rsplit_once('.')?;
    let (pid, seq) = pid_seq.split_once('-')?;
    let decimal = |n: &str| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit());
    (!name.is_empty() && decimal(pid) && decimal(seq)).then_some(name)
}

/// The folders an export writes under its root: the only ones start-up cleanup looks into
/// (a root given by mistake, such as a home folder, keeps everything else).
pub const DATASET_DIRS: [&str; 9] = [
    "runs",
    "node_outputs",
    "run_inputs",
    "steps",
    "workflows",
    "_state",
    "_manifest",
    "_rejected",
    "_staging",
];

/// The lock file in the export root; see [`Storage::lock`].
pub const LOCK_FILE: &str = "_lock";

/// Creates `dir` and its missing parents, and makes each new entry durable in its parent.
fn create_dir_durable(dir: &Path) -> Result<(), DatasetError> {
    let mut missing = Vec::new();
    let mut cur = dir;
    while !cur.exists() {
        missing.push(cur.to_path_buf());
        match cur.parent() {
            Some(parent) => cur = parent,
            None => break,
        }
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, modes().1);
    builder
        .create(dir)
        .map_err(|source| DatasetError::io("create", dir, source))?;
    for created in missing.iter().rev() {
        if let Some(parent) = created.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
    }
    Ok(())
}

/// Makes renames and new entries in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), DatasetError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| DatasetError::io("sync", dir, source))
}

impl Storage for LocalStorage {
    fn create(&self, path: &str) -> Result<Box<dyn StagedFile>, DatasetError> {
        let target = self.checked(path)?;
        let dir = target.parent().unwrap_or(&self.root).to_path_buf();
        create_dir_durable(&dir)?;
        let name = target.file_name().unwrap_or_default().to_string_lossy();
        let seq = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
        let temp = dir.join(format!(".{name}.{}-{seq}.tmp", std::process::id()));
        let file =
            create_file(&temp).map_err(|source| DatasetError::io("create", &temp, source))?;
        Ok(Box::new(LocalStaged {
            file: Some(BufWriter::with_capacity(WRITE_BUFFER_BYTES, file)),
            temp,
            target,
            dir,
        }))
    }

    fn list(&self, dir: &str) -> Result<Vec<String>, DatasetError> {
        self.entries(dir, |t| t.is_file())
    }

    fn list_dirs(&self, dir: &str) -> Result<Vec<String>, DatasetError> {
        self.entries(dir, |t| t.is_dir())
    }

    fn read(&self, path: &str) -> Result<Bytes, DatasetError> {
        let full = self.full(path);
        fs::read(&full)
            .map(Bytes::from)
            .map_err(|source| DatasetError::io("read", &full, source))
    }

    fn rename(&self, from: &str, to: &str) -> Result<(), DatasetError> {
        let (from, to) = (self.checked(from)?, self.checked(to)?);
        let dir = to.parent().unwrap_or(&self.root).to_path_buf();
        create_dir_durable(&dir)?;
        fs::rename(&from, &to).map_err(|source| DatasetError::io("rename", &from, source))?;
        sync_dir(&dir)
    }

    fn remove(&self, path: &str) -> Result<(), DatasetError> {
        let full = self.checked(path)?;
        fs::remove_file(&full).map_err(|source| DatasetError::io("remove", &full, source))?;
        // The unlink is durable before the commit goes on (a crash must not bring it back).
        sync_dir(full.parent().unwrap_or(&self.root))
    }

    fn remove_dir_all(&self, dir: &str) -> Result<(), DatasetError> {
        let full = self.full(dir);
        match fs::remove_dir_all(&full) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(DatasetError::io("remove", &full, e))
            }
            _ => Ok(()),
        }
    }

    fn remove_abandoned(
        &self,
        dir: &str,
        owned: &dyn Fn(&str) -> bool,
    ) -> Result<usize, DatasetError> {
        let mut removed = 0;
        let mut stack = vec![(self.full(dir), dir.trim_matches('/').to_owned())];
        while let Some((dir, relative)) = stack.pop() {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                let below = |name: &str| match relative.as_str() {
                    "" => name.to_owned(),
                    _ => format!("{relative}/{name}"),
                };
                // `file_type` does not follow links: a link is never walked into nor removed.
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                if kind.is_dir() {
                    if !relative.is_empty() || DATASET_DIRS.contains(&name.as_str()) {
                        stack.push((path, below(&name)));
                    }
                } else if kind.is_file()
                    && let Some(target) = temp_target(&name)
                {
                    // Judged by the file it was to become.
                    if !owned(&below(target)) {
                        continue;
                    }
                    fs::remove_file(&path)
                        .map_err(|source| DatasetError::io("remove", &path, source))?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    fn lock(&self, name: &str, holder: &str) -> Result<Box<dyn Send>, DatasetError> {
        let path = self.checked(name)?;
        let mut options = fs::OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            // Checked above, and refused here too should a link appear in between.
            options.mode(modes().0).custom_flags(libc::O_NOFOLLOW);
        }
        let mut file = options
            .open(&path)
            .map_err(|source| DatasetError::io("open", &path, source))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = io::Read::read_to_string(&mut file, &mut text);
                return Err(DatasetError::Locked {
                    path,
                    holder: text.trim().to_owned(),
                    lease_until: None,
                });
            }
            Err(fs::TryLockError::Error(source)) => {
                return Err(DatasetError::io("lock", &path, source));
            }
        }
        // The lock is the kernel's (released when the process dies, so never stale); the
        // content only tells others who holds it.
        file.set_len(0)
            .and_then(|()| io::Seek::seek(&mut file, io::SeekFrom::Start(0)))
            .and_then(|_| file.write_all(holder.as_bytes()))
            .map_err(|source| DatasetError::io("write", &path, source))?;
        Ok(Box::new(file))
    }

    fn display(&self, path: &str) -> String {
        self.full(path).display().to_string()
    }
}

struct LocalStaged {
    file: Option<BufWriter<File>>,
    temp: PathBuf,
    target: PathBuf,
    dir: PathBuf,
}

impl Write for LocalStaged {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.as_mut().map_or(Ok(0), |f| f.write(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().map_or(Ok(()), |f| f.flush())
    }
}

impl StagedFile for LocalStaged {
    fn commit(mut self: Box<Self>) -> Result<u64, DatasetError> {
        let Some(writer) = self.file.take() else {
            return Err(DatasetError::io(
                "commit",
                &self.target,
                io::Error::other("file already committed"),
            ));
        };
        let result = self.finish(writer);
        if result.is_err() {
            // Failed before the rename (disk full, I/O error): the temp file must not linger.
            let _ = fs::remove_file(&self.temp);
        }
        result
    }
}

impl LocalStaged {
    fn finish(&self, writer: BufWriter<File>) -> Result<u64, DatasetError> {
        let file = writer
            .into_inner()
            .map_err(|e| DatasetError::io("write", &self.temp, e.into_error()))?;
        file.sync_all()
            .map_err(|source| DatasetError::io("sync", &self.temp, source))?;
        let bytes = file
            .metadata()
            .map_err(|source| DatasetError::io("stat", &self.temp, source))?
            .len();
        drop(file);
        fs::rename(&self.temp, &self.target)
            .map_err(|source| DatasetError::io("rename", &self.target, source))?;
        sync_dir(&self.dir)?;
        Ok(bytes)
    }
}

impl Drop for LocalStaged {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            // Not committed: the temp file must not linger.
            let _ = fs::remove_file(&self.temp);
        }
    }
}

#[cfg(test)]
mod tests {
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
    fn a_file_as_root_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, b"x").unwrap();
        let err = LocalStorage::open(&file).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
    }
}
