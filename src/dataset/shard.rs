//! Shards: one export split across N workers that write the same dataset at the same time, with
//! no overlap and no coordination.
//!
//! It owns which workflows a shard keeps (a stable hash of the workflow id), how a shard names
//! every file it writes (partition files, lock, marker, staging area, state folder, export id),
//! and the check that refuses to mix layouts in one dataset — an unsharded export and a sharded
//! one, or shards of different counts, would store the same runs in two files. It never fetches
//! and never writes data itself: the pipeline and the commit ask it for names and verdicts, and
//! everything it reads goes through [`Storage`].

use std::fmt;
use std::str::FromStr;

use arrow::array::{AsArray, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;

use super::DatasetError;
use super::storage::{LOCK_FILE, Storage};
use super::writer::PARTITION_FILE;

/// The marker of an export in which every workflow succeeded (Hadoop's name); a shard's has its
/// tag appended.
pub const SUCCESS_MARKER: &str = "_SUCCESS";

/// Most shards an export may be split into: far beyond what one API serves in parallel, and
/// small enough that every shard's files fit in one folder listing.
pub const MAX_SHARDS: u32 = 1000;

/// FNV-1a 64 offset basis (<http://www.isthe.com/chongo/tech/comp/fnv/>).
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64 prime.
const FNV_PRIME: u64 = 0x0100_0000_01b3;

/// The stable hash of a workflow id: FNV-1a 64 over its UTF-8 bytes. Fixed by its definition,
/// not by a Rust version (unlike std's `DefaultHasher`), so every worker, release and platform
/// agrees on which shard a workflow belongs to. In Python:
/// `h = 0xcbf29ce484222325; for b in id.encode(): h = ((h ^ b) * 0x100000001b3) % 2**64`.
pub fn workflow_hash(workflow_id: &str) -> u64 {
    workflow_id.bytes().fold(FNV_OFFSET, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    })
}

/// Shard `index` of `count` (0-based, like Kubernetes' `JOB_COMPLETION_INDEX`): it keeps the
/// workflows whose [`workflow_hash`] modulo `count` is `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    index: u32,
    count: u32,
}

impl Shard {
    /// Shard `index` of `count`; an error message when `index` is not below `count` or `count`
    /// is not between 1 and [`MAX_SHARDS`].
    pub fn new(index: u32, count: u32) -> Result<Self, String> {
        if !(1..=MAX_SHARDS).contains(&count) {
            return Err(format!(
                "`{index}/{count}`: the shard count N must be between 1 and {MAX_SHARDS}"
            ));
        }
        if index >= count {
            return Err(format!(
                "`{index}/{count}`: the shard index K must be below N (shards are numbered from 0 to {})",
                count - 1
            ));
        }
        Ok(Self { index, count })
    }

    /// The shard's index, from 0.
    pub fn index(self) -> u32 {
        self.index
    }

    /// How many shards there are.
    pub fn count(self) -> u32 {
        self.count
    }

    /// Whether this shard exports `workflow_id`.
    pub fn keeps(self, workflow_id: &str) -> bool {
        workflow_hash(workflow_id) % u64::from(self.count) == u64::from(self.index)
    }

    /// The name part of every file this shard owns, e.g. `shard-03-of-08`: zero-padded to the
    /// width of N (at least two digits), so names sort by index.
    pub fn tag(self) -> String {
        let width = self.count.to_string().len().max(2);
        format!("shard-{:0width$}-of-{:0width$}", self.index, self.count)
    }

    /// The shard a tag names (`shard-03-of-08`), if it is one.
    /// The shard whose tag the file name `name` holds (`part-…-shard-03-of-08-00001.parquet`).
    pub fn in_name(name: &str) -> Option<Self> {
        let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
        name.match_indices("shard-").find_map(|(at, _)| {
            let rest = &name[at + "shard-".len()..];
            let index = digits(rest);
            let count = digits(rest[index..].strip_prefix("-of-")?);
            let end = at + "shard-".len() + index + "-of-".len() + count;
            Self::from_tag(&name[at..end])
        })
    }

    fn from_tag(tag: &str) -> Option<Self> {
        let (index, count) = tag.strip_prefix("shard-")?.split_once("-of-")?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(index) || !digits(count) {
            return None;
        }
        let shard = Self::new(index.parse().ok()?, count.parse().ok()?).ok()?;
        (shard.tag() == tag).then_some(shard)
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "`{text}` is not a shard like `0/4`: K/N with N from 1 to {MAX_SHARDS} and K from 0 to N-1 (like `JOB_COMPLETION_INDEX`)"
            )
        };
        let (index, count) = text.trim().split_once('/').ok_or_else(bad)?;
        let number = |s: &str| {
            let s = s.trim();
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            // Beyond u32, the value is out of range anyway: keep it visible in the message.
            Some(s.parse::<u32>().unwrap_or(u32::MAX))
        };
        let (index, count) = number(index).zip(number(count)).ok_or_else(bad)?;
        Self::new(index, count)
    }
}

/// What a `.parquet` file in a partition folder is to an export of a given [`Layout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileRole {
    /// This export merges it and may replace or remove it.
    Own,
    /// Another shard of the same count owns it: never read, never touched.
    OtherShard,
    /// A file of another layout: exporting here would store its runs twice.
    Conflict,
}

/// How an export names what it writes: the single-writer layout of unsharded exports, or one
/// shard's files next to the other shards'.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One writer: `part-0.parquet` per partition, `_lock`, `_SUCCESS`, `_state/`, `_staging/`.
    Unsharded,
    /// One of N writers: `shard-KK-of-NN.parquet` per partition, `_lock.shard-KK-of-NN`,
    /// `_SUCCESS.shard-KK-of-NN`, `_state/shard-KK-of-NN/`, `_staging/shard-KK-of-NN/`, and the
    /// tag at the end of its export ids (so its manifests and `_rejected/` files).
    Sharded(Shard),
}

impl From<Option<Shard>> for Layout {
    fn from(shard: Option<Shard>) -> Self {
        shard.map_or(Layout::Unsharded, Layout::Sharded)
    }
}

impl Layout {
    /// The one file each committed partition of this export holds.
    pub fn partition_file(self) -> String {
        match self {
            Layout::Unsharded => PARTITION_FILE.to_owned(),
            Layout::Sharded(s) => format!("{}.parquet", s.tag()),
        }
    }

    /// The lock file this export holds while it runs.
    pub fn lock_file(self) -> String {
        self.suffixed(LOCK_FILE)
    }

    /// The marker written when every workflow of this export succeeded.
    pub fn success_marker(self) -> String {
        self.suffixed(SUCCESS_MARKER)
    }

    /// The folder holding this export's staging areas (cleared when it starts).
    pub fn staging_root(self, base: &str) -> String {
        match self {
            Layout::Unsharded => base.to_owned(),
            Layout::Sharded(s) => format!("{base}/{}", s.tag()),
        }
    }

    /// The folder of this export's per-workflow state files.
    pub fn state_dir(self, base: &str) -> String {
        self.staging_root(base)
    }

    /// An export id naming this layout: a shard's ids end in its tag, so its manifests and
    /// `_rejected/` files are its own.
    pub fn export_id(self, base: String) -> String {
        match self {
            Layout::Unsharded => base,
            Layout::Sharded(s) => format!("{base}-{}", s.tag()),
        }
    }

    /// Whether this export keeps `workflow_id`.
    pub fn keeps(self, workflow_id: &str) -> bool {
        match self {
            Layout::Unsharded => true,
            Layout::Sharded(s) => s.keeps(workflow_id),
        }
    }

    /// The rows of a `workflows` batch this export keeps.
    pub fn keep_workflow_rows(self, batch: &RecordBatch) -> RecordBatch {
        let Layout::Sharded(shard) = self else {
            return batch.clone();
        };
        let Some(ids) = batch
            .column_by_name("workflow_id")
            .and_then(|c| c.as_string_opt::<i32>())
        else {
            return batch.clone();
        };
        let keep: BooleanArray = ids
            .iter()
            .map(|id| Some(id.is_some_and(|id| shard.keeps(id))))
            .collect();
        filter_record_batch(batch, &keep).expect("mask has the batch's length")
    }

    /// Whether the file at `path` (relative to the root) is this export's to clean up after a
    /// crash: every file for an unsharded export (it is the only writer), only the files named
    /// with its tag for a shard.
    pub fn owns(self, path: &str) -> bool {
        match self {
            Layout::Unsharded => true,
            Layout::Sharded(s) => {
                let tag = s.tag();
                path.match_indices(&tag).any(|(at, _)| {
                    let after = path[at + tag.len()..].bytes().next();
                    !after.is_some_and(|b| b.is_ascii_digit())
                })
            }
        }
    }

    /// What the `.parquet` file `name` in a partition folder is to this export.
    pub fn role(self, name: &str) -> FileRole {
        let other = name.strip_suffix(".parquet").and_then(Shard::from_tag);
        match (self, other) {
            (Layout::Unsharded, None) => FileRole::Own,
            (Layout::Unsharded, Some(_)) => FileRole::Conflict,
            (Layout::Sharded(mine), Some(theirs)) if theirs == mine => FileRole::Own,
            (Layout::Sharded(mine), Some(theirs)) if theirs.count == mine.count => {
                FileRole::OtherShard
            }
            (Layout::Sharded(_), _) => FileRole::Conflict,
        }
    }

    /// Takes this layout's lock on the dataset, refusing a dataset of another layout: checked
    /// before the lock file is created (so a refused export leaves no trace) and again after (so
    /// two exports of different layouts started at the same instant both see the other's lock
    /// file and both stop). A lock file that this export created and then was refused for is
    /// removed, while still held, so that it does not stand for a layout that wrote nothing.
    pub fn lock(self, storage: &dyn Storage, holder: &str) -> Result<Box<dyn Send>, DatasetError> {
        let names = storage.list("")?;
        self.check_root_names(storage, &names)?;
        let lock_file = self.lock_file();
        let had_lock_file = names.contains(&lock_file);
        let guard = storage.lock(&lock_file, holder)?;
        if let Err(conflict) = self.check_root(storage) {
            if !had_lock_file {
                let _ = storage.remove(&lock_file);
            }
            return Err(conflict);
        }
        Ok(guard)
    }

    /// Fails when the root shows that another layout writes this dataset. Its evidence is the
    /// lock files (the first thing any export creates, and never removed) and the `_SUCCESS`
    /// markers: `_lock` for unsharded exports, `_lock.shard-KK-of-NN` for shards of N.
    ///
    /// The pipeline checks before it takes its lock (so a refused export leaves no trace) and
    /// again after (so two exports of different layouts started at the same instant both see
    /// the other's lock file and both stop); [`Layout::check_partition`] backs it up at commit.
    pub fn check_root(self, storage: &dyn Storage) -> Result<(), DatasetError> {
        self.check_root_names(storage, &storage.list("")?)
    }

    /// [`Layout::check_root`] on the root's names, listed already.
    fn check_root_names(self, storage: &dyn Storage, names: &[String]) -> Result<(), DatasetError> {
        for base in [LOCK_FILE, SUCCESS_MARKER] {
            for name in names {
                // `Some(None)`: unsharded; `Some(Some(shard))`; `None`: another file.
                let found = name
                    .strip_prefix(base)
                    .and_then(|rest| match rest.strip_prefix('.') {
                        Some(tag) => Shard::from_tag(tag).map(Some),
                        None => rest.is_empty().then_some(None),
                    });
                let Some(found) = found else { continue };
                let conflict = match (self, found) {
                    (Layout::Unsharded, None) => false,
                    (Layout::Sharded(mine), Some(theirs)) => theirs.count != mine.count,
                    _ => true,
                };
                if conflict {
                    return Err(self.conflict(storage, "", name, found.map(Shard::count)));
                }
            }
        }
        Ok(())
    }

    /// Fails when partition folder `dir` holds a data file of another layout; else returns the
    /// names of the files this export owns there.
    pub fn check_partition(
        self,
        storage: &dyn Storage,
        dir: &str,
    ) -> Result<Vec<String>, DatasetError> {
        let mut own = Vec::new();
        for name in storage.list(dir)? {
            if !name.ends_with(".parquet") {
                continue;
            }
            match self.role(&name) {
                FileRole::Own => own.push(name),
                FileRole::OtherShard => {}
                FileRole::Conflict => {
                    let found = name
                        .strip_suffix(".parquet")
                        .and_then(Shard::from_tag)
                        .map(Shard::count);
                    return Err(self.conflict(storage, dir, &name, found));
                }
            }
        }
        Ok(own)
    }

    fn conflict(
        self,
        storage: &dyn Storage,
        dir: &str,
        name: &str,
        found: Option<u32>,
    ) -> DatasetError {
        let root = storage.display("");
        DatasetError::Layout {
            root: match root.trim_end_matches('/') {
                "" => root.clone(),
                trimmed => trimmed.to_owned(),
            },
            evidence: if dir.is_empty() {
                name.to_owned()
            } else {
                format!("{dir}/{name}")
            },
            found,
            wanted: match self {
                Layout::Unsharded => None,
                Layout::Sharded(s) => Some(s),
            },
        }
    }

    fn suffixed(self, base: &str) -> String {
        match self {
            Layout::Unsharded => base.to_owned(),
            Layout::Sharded(s) => format!("{base}.{}", s.tag()),
        }
    }
}

/// How a dataset of `found` shards (`None`: unsharded) is described in the layout error.
pub(crate) fn describe_found(found: Option<u32>) -> String {
    match found {
        None => "written without `--shard`".to_owned(),
        Some(n) => format!("sharded {n} ways"),
    }
}

/// How the refused export is described in the layout error.
pub(crate) fn describe_wanted(wanted: Option<Shard>) -> String {
    match wanted {
        None => "without `--shard`".to_owned(),
        Some(s) => format!("`--shard {s}`"),
    }
}

/// The hint after a layout error: what would work on this dataset.
pub fn layout_hint(found: Option<u32>) -> String {
    match found {
        None => "run it without `--shard`, or export the shards into a new `--out`".to_owned(),
        Some(n) => format!(
            "use `--shard K/{n}` with K from 0 to {}, or export into a new `--out` to change the layout",
            n - 1
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::LocalStorage;

    /// Expected values computed outside this code, with Python:
    /// `h = 0xcbf29ce484222325; for b in s.encode(): h = ((h ^ b) * 0x100000001b3) % 2**64`
    /// ("a" and "foobar" are also the published FNV-1a 64 test vectors).
    #[test]
    fn the_workflow_hash_is_fnv1a_64_and_stable() {
        for (id, hash, of4, of8) in [
            ("", 0xcbf2_9ce4_8422_2325, 1, 5),
            ("a", 0xaf63_dc4c_8601_ec8c, 0, 4),
            ("foobar", 0x8594_4171_f739_67e8, 0, 0),
            ("wf-1", 0x23a6_4ef6_0b52_3d62, 2, 2),
            (
                "2f0c5a1e-0000-4000-8000-000000000001",
                0xd5cb_657b_1d4b_9a6f,
                3,
                7,
            ),
            ("é/ü?#%", 0x6b1f_fad7_7994_cf66, 2, 6),
        ] {
            assert_eq!(workflow_hash(id), hash, "{id:?}");
            for (count, expected) in [(4, of4), (8, of8)] {
                let kept: Vec<u32> = (0..count)
                    .filter(|&k| Shard::new(k, count).unwrap().keeps(id))
                    .collect();
                assert_eq!(kept, [expected], "{id:?} in {count} shards");
            }
        }
    }

    #[test]
    fn shards_parse_and_bad_values_say_why() {
        let ok = |t: &str| t.parse::<Shard>().unwrap();
        assert_eq!(ok("0/4"), Shard::new(0, 4).unwrap());
        assert_eq!(ok(" 3/4 "), Shard::new(3, 4).unwrap());
        assert_eq!(ok("0/1").to_string(), "0/1");
        assert_eq!(ok("999/1000").tag(), "shard-0999-of-1000");
        assert_eq!(ok("3/8").tag(), "shard-03-of-08");
        assert_eq!(ok("42/100").tag(), "shard-042-of-100");
        for (text, message) in [
            ("0/0", "the shard count N must be between 1 and 1000"),
            ("0/1001", "the shard count N must be between 1 and 1000"),
            (
                "0/99999999999",
                "the shard count N must be between 1 and 1000",
            ),
            ("3/2", "the shard index K must be below N"),
            ("4/4", "shards are numbered from 0 to 3"),
            ("a/b", "`a/b` is not a shard like `0/4`"),
            ("1", "is not a shard"),
            ("-1/4", "is not a shard"),
            ("1/4/8", "is not a shard"),
            ("", "is not a shard"),
            ("+1/4", "is not a shard"),
        ] {
            let err = text.parse::<Shard>().unwrap_err();
            assert!(err.contains(message), "{text}: {err}");
            assert!(!err.contains('\n'), "{text}: {err}");
        }
    }

    #[test]
    fn tags_round_trip_and_only_exact_tags_parse() {
        for (k, n) in [(0, 1), (3, 8), (9, 10), (42, 100), (999, 1000)] {
            let shard = Shard::new(k, n).unwrap();
            assert_eq!(Shard::from_tag(&shard.tag()), Some(shard));
        }
        for tag in [
            "shard-3-of-8",
            "shard-03-of-8",
            "shard-08-of-08",
            "shard--of-08",
            "shard-0x-of-08",
            "part-0",
        ] {
            assert_eq!(Shard::from_tag(tag), None, "{tag}");
        }
    }

    /// Local storage where another layout's export creates its lock file at the moment this
    /// one takes its own: the race the second check is for.
    struct Racing {
        inner: LocalStorage,
        other_lock: &'static str,
    }

    impl Storage for Racing {
        fn create(&self, path: &str) -> Result<Box<dyn crate::dataset::StagedFile>, DatasetError> {
            self.inner.create(path)
        }
        fn list(&self, dir: &str) -> Result<Vec<String>, DatasetError> {
            self.inner.list(dir)
        }
        fn list_dirs(&self, dir: &str) -> Result<Vec<String>, DatasetError> {
            self.inner.list_dirs(dir)
        }
        fn read(&self, path: &str) -> Result<bytes::Bytes, DatasetError> {
            self.inner.read(path)
        }
        fn rename(&self, from: &str, to: &str) -> Result<(), DatasetError> {
            self.inner.rename(from, to)
        }
        fn remove(&self, path: &str) -> Result<(), DatasetError> {
            self.inner.remove(path)
        }
        fn remove_dir_all(&self, dir: &str) -> Result<(), DatasetError> {
            self.inner.remove_dir_all(dir)
        }
        fn remove_abandoned(
            &self,
            dir: &str,
            owned: &dyn Fn(&str) -> bool,
        ) -> Result<usize, DatasetError> {
            self.inner.remove_abandoned(dir, owned)
        }
        fn lock(&self, name: &str, holder: &str) -> Result<Box<dyn Send>, DatasetError> {
            std::fs::write(self.inner.root().join(self.other_lock), b"pid 2").unwrap();
            self.inner.lock(name, holder)
        }
        fn display(&self, path: &str) -> String {
            self.inner.display(path)
        }
    }

    #[test]
    fn two_layouts_racing_are_both_refused_and_only_the_loser_s_new_lock_file_goes() {
        let dir = tempfile::tempdir().unwrap();
        let racing = Racing {
            inner: LocalStorage::open(dir.path()).unwrap(),
            other_lock: "_lock.shard-00-of-04",
        };
        let err = match Layout::Unsharded.lock(&racing, "pid 1") {
            Err(e) => e.to_string(),
            Ok(_) => panic!("the race was not noticed"),
        };
        assert!(err.contains("sharded 4 ways"), "{err}");
        // Our `_lock` is gone; the other export's stays (it removes its own when refused).
        assert_eq!(racing.list("").unwrap(), ["_lock.shard-00-of-04"]);
        // A lock file from earlier exports of our own layout stays: it marks a real layout.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("_lock"), b"").unwrap();
        let racing = Racing {
            inner: LocalStorage::open(dir.path()).unwrap(),
            other_lock: "_lock.shard-00-of-04",
        };
        assert!(Layout::Unsharded.lock(&racing, "pid 1").is_err());
        assert_eq!(racing.list("").unwrap(), ["_lock", "_lock.shard-00-of-04"]);
        // Without a race the lock is taken and held.
        let dir = tempfile::tempdir().unwrap();
        let plain = LocalStorage::open(dir.path()).unwrap();
        let _held = Layout::Unsharded.lock(&plain, "pid 1").unwrap();
        assert_eq!(plain.list("").unwrap(), ["_lock"]);
    }

    #[test]
    fn layouts_name_their_files_and_own_only_theirs() {
        let one = Layout::Sharded(Shard::new(3, 8).unwrap());
        assert_eq!(Layout::Unsharded.partition_file(), "part-0.parquet");
        assert_eq!(one.partition_file(), "shard-03-of-08.parquet");
        assert_eq!(Layout::Unsharded.lock_file(), "_lock");
        assert_eq!(one.lock_file(), "_lock.shard-03-of-08");
        assert_eq!(one.success_marker(), "_SUCCESS.shard-03-of-08");
        assert_eq!(one.staging_root("_staging"), "_staging/shard-03-of-08");
        assert_eq!(one.state_dir("_state"), "_state/shard-03-of-08");
        assert_eq!(one.export_id("e1".into()), "e1-shard-03-of-08");
        assert_eq!(Layout::Unsharded.export_id("e1".into()), "e1");

        assert!(one.owns("runs/date=2025-01-01/shard-03-of-08.parquet"));
        assert!(one.owns("_manifest/e1-shard-03-of-08.json"));
        assert!(one.owns("_state/shard-03-of-08/wf.json"));
        assert!(!one.owns("runs/date=2025-01-01/shard-04-of-08.parquet"));
        assert!(!one.owns("runs/date=2025-01-01/part-0.parquet"));
        assert!(!one.owns("_state/wf.json"));
        assert!(Layout::Unsharded.owns("anything"));

        assert_eq!(one.role("shard-03-of-08.parquet"), FileRole::Own);
        assert_eq!(one.role("shard-05-of-08.parquet"), FileRole::OtherShard);
        assert_eq!(one.role("shard-03-of-16.parquet"), FileRole::Conflict);
        assert_eq!(one.role("part-0.parquet"), FileRole::Conflict);
        assert_eq!(Layout::Unsharded.role("part-0.parquet"), FileRole::Own);
        assert_eq!(Layout::Unsharded.role("part-00003.parquet"), FileRole::Own);
        assert_eq!(
            Layout::Unsharded.role("shard-00-of-02.parquet"),
            FileRole::Conflict
        );
    }

    #[test]
    fn the_root_check_refuses_other_layouts_only() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::open(dir.path()).unwrap();
        let of8 = |k| Layout::Sharded(Shard::new(k, 8).unwrap());
        let of4 = Layout::Sharded(Shard::new(0, 4).unwrap());
        for layout in [Layout::Unsharded, of8(0), of4] {
            layout.check_root(&storage).unwrap();
        }
        std::fs::write(dir.path().join("_lock.shard-05-of-08"), b"").unwrap();
        std::fs::write(dir.path().join("_lock.backup"), b"").unwrap();
        of8(1).check_root(&storage).unwrap();
        let err = Layout::Unsharded.check_root(&storage).unwrap_err();
        assert!(
            err.to_string()
                .contains("sharded 8 ways (`_lock.shard-05-of-08`)")
                && err.to_string().contains("this export (without `--shard`)"),
            "{err}"
        );
        let err = of4.check_root(&storage).unwrap_err().to_string();
        assert!(
            err.contains("(`--shard 0/4`) would store runs twice"),
            "{err}"
        );

        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::open(dir.path()).unwrap();
        std::fs::write(dir.path().join("_SUCCESS"), b"{}").unwrap();
        Layout::Unsharded.check_root(&storage).unwrap();
        let err = of8(2).check_root(&storage).unwrap_err().to_string();
        assert!(
            err.contains("written without `--shard` (`_SUCCESS`)"),
            "{err}"
        );
    }

    #[test]
    fn the_partition_check_lists_own_files_and_refuses_foreign_ones() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::open(dir.path()).unwrap();
        let part = dir.path().join("runs/date=2025-01-01");
        std::fs::create_dir_all(&part).unwrap();
        for name in ["shard-00-of-02.parquet", "shard-01-of-02.parquet", "x.json"] {
            std::fs::write(part.join(name), b"").unwrap();
        }
        let of2 = Layout::Sharded(Shard::new(1, 2).unwrap());
        let own = of2
            .check_partition(&storage, "runs/date=2025-01-01")
            .unwrap();
        assert_eq!(own, ["shard-01-of-02.parquet"]);
        let err = Layout::Unsharded
            .check_partition(&storage, "runs/date=2025-01-01")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("(`runs/date=2025-01-01/shard-00-of-02.parquet`)"),
            "{err}"
        );
    }
}
