//! Who writes the saved index: the process holding an exclusive lock (flock) on `<index_dir>/index.lock`.
//!
//! The daemon, CLI `search`, `status`, `embed` and others each load the index into their own compute worker. Only
//! the owner saves it; the others repair and update their copy in memory. The first worker to start takes the lock
//! and keeps it for its life; a worker without it tries again at each save, so the daemon takes over once a CLI
//! process that held it exits. The OS drops the lock when its process ends in any way (kill -9 included).

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use fs2::FileExt;

use crate::compute::error::ComputeError;
use crate::index::vector;

pub const LOCK_FILE: &str = "index.lock";

/// Held until dropped.
#[derive(Debug)]
pub struct IndexLock {
    _file: File,
    pub path: PathBuf,
}

/// Takes the index lock if no other process (or other worker in this process) holds it: `Ok(None)` when one does.
/// On taking it, deletes what crashed saves left (temporary files, index files no manifest names).
pub fn try_acquire(index_dir: &Path) -> Result<Option<IndexLock>, ComputeError> {
    let path = index_dir.join(LOCK_FILE);
    let io = |what: &str, e: std::io::Error| ComputeError::Failed(format!("index lock {}: {what}: {e}", path.display()));
    std::fs::create_dir_all(index_dir).map_err(|e| io("creating the folder", e))?;
    let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(|e| io("opening", e))?;
    match file.try_lock_exclusive() {
        Ok(()) => {}
        Err(e) if e.kind() == fs2::lock_contended_error().kind() => return Ok(None),
        Err(e) => return Err(io("locking", e)),
    }
    if let Ok(entries) = std::fs::read_dir(index_dir) {
        for dir in entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()) {
            if let Some(m) = vector::read_manifest(&dir) {
                vector::remove_leftovers(&dir, &m.index_file);
            }
        }
    }
    Ok(Some(IndexLock { _file: file, path }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_owner_at_a_time_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let first = try_acquire(dir.path()).unwrap().expect("free lock taken");
        assert!(try_acquire(dir.path()).unwrap().is_none(), "a second holder is refused while the first holds it");
        drop(first);
        assert!(try_acquire(dir.path()).unwrap().is_some(), "free again once dropped");
    }
}
