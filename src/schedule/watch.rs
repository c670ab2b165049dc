//! Watches the schedules directory and reports debounced changes.
//!
//! Any create, modify, remove or rename of a `*.toml` file in the directory (editors that write a temporary file
//! and rename it over the original included) counts; a burst of events within the debounce window produces one
//! notification, after which the daemon re-reads the whole directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Keeps the OS watch alive; dropping it stops watching.
pub struct ScheduleWatcher {
    _watcher: notify::RecommendedWatcher,
    _debouncer: tokio::task::JoinHandle<()>,
}

fn relevant(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else { return false };
    !name.starts_with('.') && name.ends_with(".toml")
}

/// Starts watching `dir`; the receiver yields once per debounced burst of changes to schedule files.
pub fn watch(dir: &Path, debounce: Duration) -> anyhow::Result<(ScheduleWatcher, mpsc::Receiver<Vec<PathBuf>>)> {
    let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<Vec<PathBuf>>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
        Ok(ev) => {
            if matches!(ev.kind, EventKind::Access(_)) {
                return;
            }
            let paths: Vec<PathBuf> = ev.paths.into_iter().filter(|p| relevant(p)).collect();
            if !paths.is_empty() {
                let _ = raw_tx.send(paths);
            }
        }
        Err(e) => tracing::warn!(error = %e, "schedule file watcher"),
    })?;
    watcher
        .watch(dir, RecursiveMode::NonRecursive)
        .map_err(|e| anyhow::anyhow!("watching schedules directory {}: {e}", dir.display()))?;
    let (tx, rx) = mpsc::channel(4);
    let debouncer = tokio::spawn(async move {
        while let Some(mut paths) = raw_rx.recv().await {
            // Wait until the directory has been quiet for the debounce period.
            loop {
                match tokio::time::timeout(debounce, raw_rx.recv()).await {
                    Ok(Some(more)) => paths.extend(more),
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            paths.sort();
            paths.dedup();
            if tx.send(paths).await.is_err() {
                return;
            }
        }
    });
    Ok((ScheduleWatcher { _watcher: watcher, _debouncer: debouncer }, rx))
}
