//! The data directory's lock file: one daemon per data directory.
//!
//! `newsd.lock` in the data directory is held with an exclusive advisory lock (flock) for the daemon's life and
//! holds its pid. The OS releases the lock when the process ends in any way (kill -9 included), so a stale file
//! never blocks a restart; the file itself is left in place.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use fs2::FileExt;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another newsd daemon is already running on data directory {dir} (lock file {lock} is held by pid {pid}); stop it first or use another data_dir")]
    Held { dir: PathBuf, lock: PathBuf, pid: String },
    #[error("lock file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// Holds the lock until dropped.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    pub path: PathBuf,
}

pub const LOCK_FILE: &str = "newsd.lock";

/// Takes the data directory's lock (creating the directory and file as needed) or says who holds it.
pub fn acquire(data_dir: &Path) -> Result<DataDirLock, LockError> {
    let path = data_dir.join(LOCK_FILE);
    let io = |source| LockError::Io { path: path.clone(), source };
    std::fs::create_dir_all(data_dir).map_err(io)?;
    let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
    if file.try_lock_exclusive().is_err() {
        let mut pid = String::new();
        let _ = file.read_to_string(&mut pid);
        let pid = pid.trim().to_string();
        return Err(LockError::Held {
            dir: data_dir.to_path_buf(),
            lock: path.clone(),
            pid: if pid.is_empty() { "unknown".into() } else { pid },
        });
    }
    file.set_len(0).map_err(io)?;
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    writeln!(file, "{}", std::process::id()).map_err(io)?;
    file.flush().map_err(io)?;
    Ok(DataDirLock { _file: file, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_with_the_holders_pid_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let first = acquire(dir.path()).unwrap();
        let err = acquire(dir.path()).unwrap_err().to_string();
        assert!(err.contains(&format!("held by pid {}", std::process::id())), "{err}");
        assert!(err.contains("newsd.lock"), "{err}");
        drop(first);
        acquire(dir.path()).unwrap();
    }
}
