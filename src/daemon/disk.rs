//! Free disk space guard: check before large writes (index saves, database growth) and skip the write when the
//! disk holding `path` is below the configured threshold (`daemon.min_free_disk_bytes`).

use std::path::Path;

use crate::app::App;

/// Free bytes available to this user on the file system holding `path` (the nearest existing ancestor).
pub fn available(path: &Path) -> std::io::Result<u64> {
    let mut p = path;
    loop {
        if p.exists() {
            return fs2::available_space(p);
        }
        match p.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => p = parent,
            _ => return fs2::available_space(Path::new(".")),
        }
    }
}

/// Whether the disk holding `path` has at least `min_free` bytes free. When free space cannot be read, says yes
/// (a failing statvfs must not stop the daemon) and logs why.
pub fn enough_space(path: &Path, min_free: u64) -> bool {
    match available(path) {
        Ok(free) => free >= min_free,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read free disk space");
            true
        }
    }
}

/// The check every large writer makes: `true` to go ahead; `false` after logging and raising an operations
/// alert (`disk_low`) naming `what` would have been written. Example: `if !guard(app, "index save", &dir).await
/// { return Ok(skipped) }`.
pub async fn guard(app: &App, what: &str, path: &Path) -> bool {
    let min = app.config.daemon.min_free_disk_bytes;
    if enough_space(path, min) {
        return true;
    }
    let free = available(path).unwrap_or(0);
    let msg = format!(
        "low disk space on {}: {} MiB free, below daemon.min_free_disk_bytes ({} MiB); skipped {what}",
        path.display(),
        free / (1024 * 1024),
        min / (1024 * 1024)
    );
    crate::ops::alert_keyed(app, "disk_low", &format!("{} {what}", path.display()), &msg).await;
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds() {
        let dir = tempfile::tempdir().unwrap();
        assert!(enough_space(dir.path(), 0));
        assert!(!enough_space(dir.path(), u64::MAX));
        // A path that does not exist yet is judged by its nearest existing ancestor.
        assert!(enough_space(&dir.path().join("not/yet"), 1));
        assert!(available(dir.path()).unwrap() > 0);
    }
}
