//! Operations alerts: things a person should look at (a refused schedule edit, a job failing, a source failing
//! for a while, low disk space, a dead-lettered notification). Every alert is logged at WARN; the first of a kind
//! and key in a window is also recorded in `ops_alerts` and queued in the outbox for the operations target
//! (`notify.ops_target`), which the dispatcher delivers with retries like any message.
//!
//! Repeats: the same alert (kind and message, or kind and key) is recorded and delivered at most once per
//! `notify.ops_alert_dedup`, so a condition that persists for hours (a full disk checked every minute) does not
//! flood the target. The window is kept per [`App`] (not process-wide), so two apps in one process (tests) never
//! silence each other; it starts afresh when the process does.
//!
//! This module uses the notifier (to render and queue the alert); the notifier never calls back here: the
//! dispatcher returns its dead letters and its caller passes them to [`alert_dead_letters`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::app::App;
use crate::notify::{DeadLetter, NotifyError};
use crate::store::now_ms;

/// The alerts raised recently (kind, key), for the repeat window. One per [`App`].
#[derive(Debug, Default)]
pub struct AlertWindow {
    recent: Mutex<HashMap<(String, String), Instant>>,
}

impl AlertWindow {
    /// True for the first `(kind, key)` in `window` (and remembers it).
    fn first_in_window(&self, kind: &str, key: &str, window: Duration) -> bool {
        let mut map = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        map.retain(|_, t| now.duration_since(*t) < window);
        let key = (kind.to_string(), key.to_string());
        if map.contains_key(&key) {
            return false;
        }
        map.insert(key, now);
        true
    }
}

/// Raises an operations alert. Never fails: problems recording or queueing it are logged.
pub async fn alert(app: &App, kind: &str, message: &str) {
    alert_keyed(app, kind, message, message).await
}

/// Like [`alert`], but repeats are recognised by `key` instead of the whole message (for messages that carry a
/// changing figure, such as the free space left).
pub async fn alert_keyed(app: &App, kind: &str, key: &str, message: &str) {
    tracing::warn!(alert = kind, "{message}");
    if !app.alerts.first_in_window(kind, key, app.config.notify.ops_alert_dedup) {
        tracing::debug!(alert = kind, "identical alert raised recently; not repeated");
        return;
    }
    crate::metrics::global().alerts.get_or_create(&vec![("kind".to_string(), kind.to_string())]).inc();
    if let Err(e) = app.store.record_alert(kind, message).await {
        tracing::warn!(error = %e, "recording an operations alert");
    }
    if let Err(e) = enqueue(app, kind, key, message).await {
        tracing::warn!(error = %e, "queueing an operations alert");
    }
}

/// Raises a `notification_dead` alert for each dead letter of a dispatcher pass, except dead operations alerts
/// themselves (an unreachable operations target must not feed itself alerts).
pub async fn alert_dead_letters(app: &App, dead: &[DeadLetter]) {
    for d in dead.iter().filter(|d| d.category != "ops") {
        alert(app, "notification_dead", &d.alert_message()).await;
    }
}

/// Queues an alert for the operations target (nothing when none is configured). Returns the rows queued. The
/// key names this occurrence (kind, digest of the key, time), so a repeat after the window is a new message.
async fn enqueue(app: &App, kind: &str, key: &str, message: &str) -> anyhow::Result<usize> {
    let Some(ops) = app.config.notify.ops_target.as_deref() else {
        tracing::debug!(kind, "no operations target configured; alert only logged");
        return Ok(0);
    };
    let target = app.config.notify.target(ops).ok_or_else(|| NotifyError::UnknownTarget(ops.into()))?;
    let now = now_ms();
    let safe_kind = kind.replace(|c: char| !c.is_ascii_alphanumeric(), "_");
    let key_base = format!("newsd-ops-{safe_kind}-{}-{now}", crate::notify::key_digest(key));
    let rows = crate::notify::ops_alert_notifications(target, kind, message, &key_base, now);
    let n = app.store.enqueue_notifications(&rows, now).await?;
    tracing::debug!(kind, enqueued = n, target = ops, "operations alert queued");
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_suppresses_repeats_until_it_passes() {
        let w = AlertWindow::default();
        let win = Duration::from_millis(50);
        assert!(w.first_in_window("disk_low", "/data", win));
        assert!(!w.first_in_window("disk_low", "/data", win));
        assert!(w.first_in_window("disk_low", "/other", win), "another key");
        assert!(w.first_in_window("job_failed", "/data", win), "another kind");
        std::thread::sleep(Duration::from_millis(60));
        assert!(w.first_in_window("disk_low", "/data", win), "after the window");
        // Two windows (two apps) are independent.
        assert!(AlertWindow::default().first_in_window("job_failed", "/data", win));
    }
}
