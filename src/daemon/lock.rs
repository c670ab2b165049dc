//! The data directory's lock file: one daemon per data directory.
//!
//! `newsd.lock` in the data directory is held with an exclusive advisory lock (flock) for the daemon's life and
//! holds its pid. The OS releases the lock when the process ends in any way (kill -9 included), so a stale file
//! never blocks a restart; the file itself is left in place. [`holder`] tells other processes (`newsd status`)
//! whether a daemon runs, by trying a shared lock for an instant.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    // A `newsd status` probing with `holder` holds a shared lock for an instant: try a few times before giving up.
    let mut tries = 0;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(TryLockError::WouldBlock) if tries < 5 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim().to_string();
                return Err(LockError::Held {
                    dir: data_dir.to_path_buf(),
                    lock: path.clone(),
                    pid: if pid.is_empty() { "unknown".into() } else { pid },
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
    }
    file.set_len(0).map_err(io)?;
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    writeln!(file, "{}", std::process::id()).map_err(io)?;
    file.flush().map_err(io)?;
    Ok(DataDirLock { _file: file, path })
}

/// The pid (as written in the lock file) of the daemon running on `data_dir`, or None when none runs.
pub fn holder(data_dir: &Path) -> Result<Option<String>, LockError> {
    let path = data_dir.join(LOCK_FILE);
    let mut file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(LockError::Io { path, source }),
    };
    match file.try_lock_shared() {
        // Nobody holds it; dropping the file releases the shared lock at once.
        Ok(()) => Ok(None),
        Err(TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            Ok(Some(pid.trim().to_string()))
        }
        Err(TryLockError::Error(source)) => Err(LockError::Io { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_with_the_holders_pid_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(holder(dir.path()).unwrap(), None, "no lock file: no daemon");
        let first = acquire(dir.path()).unwrap();
        assert_eq!(holder(dir.path()).unwrap(), Some(std::process::id().to_string()));
        let err = acquire(dir.path()).unwrap_err().to_string();
        assert!(err.contains(&format!("held by pid {}", std::process::id())), "{err}");
        assert!(err.contains("newsd.lock"), "{err}");
        drop(first);
        assert_eq!(holder(dir.path()).unwrap(), None, "released: no daemon");
        acquire(dir.path()).unwrap();
    }
}
