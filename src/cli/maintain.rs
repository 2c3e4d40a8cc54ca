//! `maintain`: checkpoints, vacuums and (with `--compact`) compacts the Delta tables of a
//! dataset, holding every writer's lock meanwhile, and prints what it did per table.

use super::args::MaintainArgs;
use crate::config::units::format_duration;
use crate::dataset::delta::{self, DeltaTables, MaintainOptions, TableFormat};
use crate::dataset::{self, DatasetError, Storage};
use crate::exit;
use crate::pipeline::{new_export_id, off_runtime};

pub(super) fn run_maintain(args: MaintainArgs) -> i32 {
    let options = MaintainOptions {
        retention: args.retention,
        compact: args.compact,
        dry_run: args.dry_run,
    };
    match maintain(&args.out, &options) {
        Ok(code) => code,
        Err(e) => {
            shout!("error: {}", crate::error_chain(&e));
            if let Some(hint) = e.hint() {
                shout!("hint: {hint}");
            }
            if e.is_lock_conflict() {
                exit::LOCKED
            } else if matches!(e, DatasetError::TableFormat { .. }) {
                exit::USAGE
            } else {
                exit::OUTPUT
            }
        }
    }
}

fn maintain(out: &std::path::Path, options: &MaintainOptions) -> Result<i32, DatasetError> {
    let storage = dataset::open(out)?;
    match delta::detect(storage.as_ref())? {
        Some(TableFormat::Delta) => {}
        found => {
            return Err(DatasetError::TableFormat {
                root: storage.display(""),
                found: found.map_or("no", TableFormat::name),
                wanted: "Delta",
            });
        }
    }
    let id = format!("{}-maintain", new_export_id());
    let _locks = lock_every_writer(storage.as_ref(), &id)?;
    let done = off_runtime(|| {
        let tables = DeltaTables::open(storage.as_ref())?;
        delta::maintain(&tables, storage.as_ref(), options, &id)
    })?;
    let verb = if options.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    for t in &done {
        let mut line = match t.version {
            Some(version) => format!("{}: version {version}, {} files", t.table, t.files),
            None => format!(
                "{}: no Delta log (an export killed before its first commit)",
                t.table
            ),
        };
        if t.checkpointed {
            line.push_str(", checkpoint written");
        }
        if t.compacted.0 > 0 {
            line.push_str(&format!(
                ", compacted {} files into {}",
                t.compacted.0, t.compacted.1
            ));
        }
        line.push_str(&format!(
            ", vacuum {verb} {} files ({} bytes) older than {}",
            t.vacuumed.0,
            t.vacuumed.1,
            format_duration(options.retention)
        ));
        println!("{line}");
    }
    Ok(exit::SUCCESS)
}

/// Takes the lock of every writer the dataset has had (`_lock`, `_lock.shard-KK-of-NN`), so no
/// export commits while files are rewritten or deleted; an unsharded dataset that never had a
/// lock file gets `_lock`.
fn lock_every_writer(storage: &dyn Storage, id: &str) -> Result<Vec<Box<dyn Send>>, DatasetError> {
    let lock = crate::dataset::storage::LOCK_FILE;
    let mut names: Vec<String> = storage
        .list("")?
        .into_iter()
        .filter(|n| n == lock || n.starts_with(&format!("{lock}.shard-")))
        .collect();
    if names.is_empty() {
        names.push(lock.to_owned());
    }
    names.sort();
    let holder = format!(
        "orchestra-export maintain {id} (pid {})",
        std::process::id()
    );
    names.iter().map(|n| storage.lock(n, &holder)).collect()
}
