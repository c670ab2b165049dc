//! Operations alerts: things a person should look at (a refused schedule edit, a job failing, a source failing
//! for a while, low disk space). Every alert is logged at WARN and recorded in `ops_alerts`; delivery to the
//! operations notification target is the notifier's part.
//!
//! The same alert (kind and message, or kind and key) is recorded and delivered at most once per [`REPEAT_AFTER`], so a
//! condition that persists for hours (a full disk checked every minute) does not flood the target.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::app::App;

/// An identical alert is repeated no more often than this.
pub const REPEAT_AFTER: Duration = Duration::from_secs(15 * 60);

static RECENT: Mutex<Option<HashMap<(String, String), Instant>>> = Mutex::new(None);

fn first_in_window(kind: &str, message: &str) -> bool {
    let mut guard = RECENT.lock().unwrap_or_else(|e| e.into_inner());
    let map = guard.get_or_insert_with(HashMap::new);
    let now = Instant::now();
    map.retain(|_, t| now.duration_since(*t) < REPEAT_AFTER);
    let key = (kind.to_string(), message.to_string());
    if map.contains_key(&key) {
        return false;
    }
    map.insert(key, now);
    true
}

/// Raises an operations alert. Never fails: problems recording or delivering it are logged.
pub async fn alert(app: &App, kind: &str, message: &str) {
    alert_keyed(app, kind, message, message).await
}

/// Like [`alert`], but repeats are recognised by `key` instead of the whole message (for messages that carry a
/// changing figure, such as the free space left).
pub async fn alert_keyed(app: &App, kind: &str, key: &str, message: &str) {
    tracing::warn!(alert = kind, "{message}");
    if !first_in_window(kind, key) {
        tracing::debug!(alert = kind, "identical alert raised recently; not repeated");
        return;
    }
    crate::metrics::global().alerts.get_or_create(&vec![("kind".to_string(), kind.to_string())]).inc();
    if let Err(e) = app.store.record_alert(kind, message).await {
        tracing::warn!(error = %e, "recording an operations alert");
    }
    // Queue it for the operations target (if one is configured); the dispatcher delivers it with retries.
    if let Err(e) = crate::notify::enqueue_ops_alert(app, kind, message).await {
        tracing::warn!(error = %e, "queueing an operations alert");
    }
}
