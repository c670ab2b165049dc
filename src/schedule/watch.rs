//! Watches the schedules directory and reports debounced changes.
//!
//! Any create, modify, remove or rename of a `*.toml` file in the directory (editors that write a temporary file
//! and rename it over the original included) counts; `notify-debouncer-full` turns a burst of events within the
//! debounce window into one batch, after which the daemon re-reads the whole directory.
//!
//! The watch recovers by itself: an OS watch on a directory dies with the directory, so the parent is watched as
//! well and, when the schedules directory is created, removed or renamed there, the watch is added again; a
//! periodic check of the directory's identity (device, inode) does the same if that event is missed, and a watcher
//! error recreates the watcher. Each recovery also reports a change, since edits made meanwhile were not seen.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{EventKind, RecursiveMode};
use notify_debouncer_full::{new_debouncer, DebounceEventResult, Debouncer, RecommendedCache};
use tokio::sync::mpsc;

/// How often the directory's identity is checked (the backstop for a missed parent event).
const IDENTITY_CHECK: Duration = Duration::from_secs(2);

/// Keeps the watch alive; dropping it stops watching.
pub struct ScheduleWatcher {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ScheduleWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn relevant(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else { return false };
    !name.starts_with('.') && name.ends_with(".toml")
}

/// The directory's (device, inode), None when it does not exist.
fn identity(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir).ok().filter(|m| m.is_dir()).map(|m| (m.dev(), m.ino()))
}

type Raw = mpsc::Sender<DebounceEventResult>;

struct Watch {
    dir: PathBuf,
    parent: Option<PathBuf>,
    debounce: Duration,
    raw: Raw,
    debouncer: Option<Debouncer<notify::RecommendedWatcher, RecommendedCache>>,
}

impl Watch {
    /// (Re)creates the debouncer and watches the parent and, when it exists, the directory.
    fn create(&mut self) -> anyhow::Result<()> {
        self.debouncer = None;
        let raw = self.raw.clone();
        // The handler runs on the debouncer's own thread: a blocking send applies back-pressure there.
        let mut d = new_debouncer(self.debounce, None, move |res: DebounceEventResult| {
            let _ = raw.blocking_send(res);
        })
        .map_err(|e| anyhow::anyhow!("creating the schedule file watcher: {e}"))?;
        if let Some(p) = &self.parent {
            if let Err(e) = d.watch(p, RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %p.display(), error = %e, "cannot watch the schedules directory's parent; a re-created schedules directory is noticed by the periodic check only");
            }
        }
        let dir_watch = d.watch(&self.dir, RecursiveMode::NonRecursive);
        self.debouncer = Some(d);
        dir_watch.map_err(|e| anyhow::anyhow!("watching schedules directory {}: {e}", self.dir.display()))
    }

    /// Watches the directory again (it was re-created or replaced).
    fn rewatch(&mut self) {
        let Some(d) = self.debouncer.as_mut() else {
            if let Err(e) = self.create() {
                tracing::warn!(error = %format!("{e:#}"), "recreating the schedule file watcher");
            }
            return;
        };
        let _ = d.unwatch(&self.dir);
        match d.watch(&self.dir, RecursiveMode::NonRecursive) {
            Ok(()) => tracing::info!(dir = %self.dir.display(), "watching the schedules directory again"),
            // Gone again (or not yet there): the next parent event or identity check retries.
            Err(e) => tracing::warn!(dir = %self.dir.display(), error = %e, "cannot watch the schedules directory"),
        }
    }
}

/// Starts watching `dir`; the receiver yields once per debounced burst of changes to schedule files (the paths
/// changed; the directory itself when the watch was recovered).
pub fn watch(dir: &Path, debounce: Duration) -> anyhow::Result<(ScheduleWatcher, mpsc::Receiver<Vec<PathBuf>>)> {
    // Events name absolute paths; compare against the absolute directory.
    let dir = std::path::absolute(dir).map_err(|e| anyhow::anyhow!("schedules directory {}: {e}", dir.display()))?;
    let (raw_tx, mut raw_rx) = mpsc::channel::<DebounceEventResult>(16);
    let parent = dir.parent().map(Path::to_path_buf);
    let mut w = Watch { dir: dir.clone(), parent, debounce, raw: raw_tx, debouncer: None };
    w.create()?;
    let (tx, rx) = mpsc::channel(4);
    let task = tokio::spawn(async move {
        let mut ident = identity(&w.dir);
        let mut check = tokio::time::interval(IDENTITY_CHECK);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut changed: Vec<PathBuf> = Vec::new();
            let mut recovered = false;
            tokio::select! {
                res = raw_rx.recv() => match res {
                    None => return,
                    Some(Ok(events)) => {
                        for ev in events {
                            if matches!(ev.kind, EventKind::Access(_)) {
                                continue;
                            }
                            for p in &ev.paths {
                                if p == &w.dir {
                                    // The directory itself was created, removed or moved (seen from the parent).
                                    recovered = true;
                                } else if p.parent() == Some(w.dir.as_path()) && relevant(p) {
                                    changed.push(p.clone());
                                }
                            }
                        }
                        if recovered {
                            ident = identity(&w.dir);
                            w.rewatch();
                        }
                    }
                    Some(Err(errors)) => {
                        let list: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
                        tracing::warn!(errors = %list.join("; "), "schedule file watcher failed; recreating it");
                        if let Err(e) = w.create() {
                            tracing::warn!(error = %format!("{e:#}"), "recreating the schedule file watcher");
                        }
                        ident = identity(&w.dir);
                        recovered = true;
                    }
                },
                _ = check.tick() => {
                    let now = identity(&w.dir);
                    if now != ident {
                        tracing::info!(dir = %w.dir.display(), "the schedules directory was replaced or re-created");
                        ident = now;
                        w.rewatch();
                        recovered = true;
                    }
                }
            }
            if recovered {
                changed.push(w.dir.clone());
            }
            if !changed.is_empty() {
                changed.sort();
                changed.dedup();
                if tx.send(changed).await.is_err() {
                    return;
                }
            }
        }
    });
    Ok((ScheduleWatcher { task }, rx))
}
