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
use std::sync::{Arc, Mutex};

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
    /// A committed Parquet file to read row group by row group: on a local disk the open file
    /// (memory does not grow with the file), elsewhere its whole content.
    fn read_parquet(&self, path: &str) -> Result<ParquetSource, DatasetError> {
        self.read(path).map(ParquetSource::Bytes)
    }
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
    /// Fails when this process no longer holds the locks it took, before a change readers see at
    /// `path` that does not go through this trait (a Delta commit, which the kernel writes).
    fn check_lock(&self, path: &str) -> Result<(), DatasetError> {
        let _ = path;
        Ok(())
    }
    /// The object store holding the dataset and the URL of its root (ending in `/`), for the
    /// Delta kernel, which reads and commits table logs itself (`--table-format delta`).
    fn delta_store(&self) -> Result<(Arc<dyn object_store::ObjectStore>, url::Url), DatasetError> {
        Err(DatasetError::BadSetting {
            name: "table_format",
            value: "delta".to_owned(),
            expected: "a dataset in a local folder or an object store",
        })
    }
}

/// A file being written; dropped without `commit`, it disappears.
pub trait StagedFile: Write + Send {
    /// Makes the file durable and visible at its final path, returning its size in bytes.
    fn commit(self: Box<Self>) -> Result<u64, DatasetError>;
}

/// Fetches `length` bytes from `start` of a stored file (a ranged GET).
pub type FetchRange = Arc<dyn Fn(u64, usize) -> Result<Bytes, String> + Send + Sync>;

/// A Parquet file being read: an open local file, ranges fetched as they are needed, or bytes
/// in memory.
pub enum ParquetSource {
    /// Read as it is needed.
    File(File),
    /// A file of `len` bytes fetched range by range (object storage).
    Ranges { len: u64, fetch: FetchRange },
    /// The whole file.
    Bytes(Bytes),
}

/// Bytes a reader of [`ParquetSource::Ranges`] fetches first (parquet reads each page header
/// through one: a few dozen bytes), doubling with each further fetch up to [`RANGE_BYTES`].
const FIRST_RANGE_BYTES: u64 = 16 * 1024;
/// Bytes fetched at a time at most by a reader of [`ParquetSource::Ranges`].
const RANGE_BYTES: u64 = 8 * 1024 * 1024;

impl parquet::file::reader::Length for ParquetSource {
    fn len(&self) -> u64 {
        match self {
            Self::File(file) => file.len(),
            Self::Ranges { len, .. } => *len,
            Self::Bytes(bytes) => bytes.len() as u64,
        }
    }
}

impl parquet::file::reader::ChunkReader for ParquetSource {
    type T = Box<dyn io::Read + Send>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(match self {
            Self::File(file) => Box::new(file.get_read(start)?),
            Self::Ranges { len, fetch } => Box::new(RangeReader {
                fetch: fetch.clone(),
                at: start,
                end: *len,
                next: FIRST_RANGE_BYTES,
                buffer: Bytes::new(),
            }),
            Self::Bytes(bytes) => Box::new(bytes.get_read(start)?),
        })
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        match self {
            Self::File(file) => file.get_bytes(start, length),
            Self::Ranges { .. } if length == 0 => Ok(Bytes::new()),
            Self::Ranges { fetch, .. } => {
                fetch(start, length).map_err(parquet::errors::ParquetError::General)
            }
            Self::Bytes(bytes) => bytes.get_bytes(start, length),
        }
    }
}

/// Reads a [`ParquetSource::Ranges`] from `at` to its end, in ranges that grow from
/// [`FIRST_RANGE_BYTES`] to [`RANGE_BYTES`].
struct RangeReader {
    fetch: FetchRange,
    at: u64,
    end: u64,
    /// Bytes the next fetch asks for.
    next: u64,
    buffer: Bytes,
}

impl io::Read for RangeReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.buffer.is_empty() && self.at < self.end {
            let length = self.next.min(self.end - self.at) as usize;
            self.next = (self.next * 2).min(RANGE_BYTES);
            self.buffer = (self.fetch)(self.at, length).map_err(io::Error::other)?;
            self.at += self.buffer.len() as u64;
        }
        let n = out.len().min(self.buffer.len());
        out[..n].copy_from_slice(&self.buffer.split_to(n));
        Ok(n)
    }
}

/// A folder on the local file system.
#[derive(Debug, Clone)]
pub struct LocalStorage {
    root: PathBuf,
    /// The lock files this process holds and what it wrote into each (a token of its own):
    /// checked before every visible change, so that a lock the volume did not honour (NFS
    /// with `nolock`, a lost NFSv4 lease) stops the export instead of two writing at once.
    held: Arc<Mutex<Vec<(PathBuf, String)>>>,
}

/// Fails when a lock file this process holds no longer holds what it wrote.
fn check_held(held: &Mutex<Vec<(PathBuf, String)>>) -> Result<(), DatasetError> {
    let held = held
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for (path, ours) in held.iter() {
        let now = match fs::read_to_string(path) {
            Ok(now) => now,
            // Gone: someone removed it (and may have made their own).
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(source) => return Err(DatasetError::io("read", path, source)),
        };
        if now != *ours {
            let holder = now.lines().next().unwrap_or("nobody").to_owned();
            return Err(DatasetError::LockTaken {
                path: path.clone(),
                holder,
            });
        }
    }
    Ok(())
}

/// A held local lock: the open file (whose kernel lock dies with it) and its entry in `held`.
struct LocalLock {
    file: File,
    path: PathBuf,
    held: Arc<Mutex<Vec<(PathBuf, String)>>>,
}

impl Drop for LocalLock {
    /// Says in the file that the lock is free, while still holding it: the file stays (it is
    /// the layout's evidence, and removing a lock file others may have open races them), but
    /// it no longer names a live holder. A killed process leaves its holder line; the kernel
    /// releases the lock all the same.
    fn drop(&mut self) {
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let ours = held
            .iter()
            .find(|(path, _)| *path == self.path)
            .map(|(_, content)| content.clone())
            .unwrap_or_default();
        // Where the volume does not honour the lock, another export may have written its own
        // holder line since: that one stays.
        let mut now = String::new();
        let still_ours = io::Seek::seek(&mut self.file, io::SeekFrom::Start(0)).is_ok()
            && io::Read::read_to_string(&mut self.file, &mut now).is_ok()
            && now == ours;
        held.retain(|(path, _)| *path != self.path);
        if !still_ours {
            return;
        }
        let holder = ours.lines().next().unwrap_or_default();
        let released = format!(
            "released {}; was held by {holder}\n",
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        let _ = self
            .file
            .set_len(0)
            .and_then(|()| io::Seek::seek(&mut self.file, io::SeekFrom::Start(0)))
            .and_then(|_| self.file.write_all(released.as_bytes()));
    }
}

impl LocalStorage {
    /// Opens (creating if needed) the export root `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, DatasetError> {
        let root = root.into();
        if root.exists() && !root.is_dir() {
            return Err(DatasetError::NotADirectory { path: root });
        }
        create_dir_durable(&root)?;
        Ok(Self {
            root,
            held: Arc::default(),
        })
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
            held: self.held.clone(),
        }))
    }

    fn list(&self, dir: &str) -> Result<Vec<String>, DatasetError> {
        self.entries(dir, |t| t.is_file())
    }

    fn list_dirs(&self, dir: &str) -> Result<Vec<String>, DatasetError> {
        self.entries(dir, |t| t.is_dir())
    }

    fn read(&self, path: &str) -> Result<Bytes, DatasetError> {
        let full = self.checked(path)?;
        fs::read(&full)
            .map(Bytes::from)
            .map_err(|source| DatasetError::io("read", &full, source))
    }

    fn read_parquet(&self, path: &str) -> Result<ParquetSource, DatasetError> {
        let full = self.checked(path)?;
        File::open(&full)
            .map(ParquetSource::File)
            .map_err(|source| DatasetError::io("read", &full, source))
    }

    fn rename(&self, from: &str, to: &str) -> Result<(), DatasetError> {
        let (from, to) = (self.checked(from)?, self.checked(to)?);
        check_held(&self.held)?;
        let dir = to.parent().unwrap_or(&self.root).to_path_buf();
        create_dir_durable(&dir)?;
        fs::rename(&from, &to).map_err(|source| DatasetError::io("rename", &from, source))?;
        sync_dir(&dir)
    }

    fn remove(&self, path: &str) -> Result<(), DatasetError> {
        let full = self.checked(path)?;
        check_held(&self.held)?;
        fs::remove_file(&full).map_err(|source| DatasetError::io("remove", &full, source))?;
        // The unlink is durable before the commit goes on (a crash must not bring it back).
        sync_dir(full.parent().unwrap_or(&self.root))
    }

    fn remove_dir_all(&self, dir: &str) -> Result<(), DatasetError> {
        let full = self.checked(dir)?;
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
                    holder: text.lines().next().unwrap_or_default().trim().to_owned(),
                    lease_until: None,
                });
            }
            Err(fs::TryLockError::Error(source)) => {
                return Err(DatasetError::io("lock", &path, source));
            }
        }
        // The lock is the kernel's (released when the process dies, so never stale); the
        // content tells others who holds it, and its token tells this process that nobody
        // else took it (where the volume does not honour the kernel's lock).
        let content = format!("{holder}\ntoken {:032x}\n", rand::random::<u128>());
        file.set_len(0)
            .and_then(|()| io::Seek::seek(&mut file, io::SeekFrom::Start(0)))
            .and_then(|_| file.write_all(content.as_bytes()))
            .and_then(|()| file.sync_all())
            .map_err(|source| DatasetError::io("write", &path, source))?;
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((path.clone(), content));
        Ok(Box::new(LocalLock {
            file,
            path,
            held: self.held.clone(),
        }))
    }

    fn display(&self, path: &str) -> String {
        self.full(path).display().to_string()
    }

    fn check_lock(&self, _path: &str) -> Result<(), DatasetError> {
        check_held(&self.held)
    }

    fn delta_store(&self) -> Result<(Arc<dyn object_store::ObjectStore>, url::Url), DatasetError> {
        let root = std::path::absolute(&self.root)
            .map_err(|source| DatasetError::io("resolve", &self.root, source))?;
        let url = url::Url::from_directory_path(&root).map_err(|()| DatasetError::BadUrl {
            url: root.display().to_string(),
            reason: "not an absolute path".to_owned(),
        })?;
        Ok((Arc::new(object_store::local::LocalFileSystem::new()), url))
    }
}

struct LocalStaged {
    file: Option<BufWriter<File>>,
    temp: PathBuf,
    target: PathBuf,
    dir: PathBuf,
    held: Arc<Mutex<Vec<(PathBuf, String)>>>,
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
        check_held(&self.held)?;
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
mod tests;
