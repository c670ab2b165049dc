//! Notifications: a transactional outbox in the database and a dispatcher that delivers it.
//!
//! An analysis and its notification rows are written in one transaction (`Store::save_analysis`); each row holds
//! the exact body to send (rendered once, at enqueue) and a stable idempotency key. `run_dispatch` takes due rows
//! oldest first, claims each (counting the attempt and setting a lease so that a concurrent dispatcher leaves it
//! alone), sends it, and marks it delivered; a failure is retried with exponential backoff and jitter (a 429 or 503
//! `Retry-After` is honoured, capped by `notify.retry_after_max`); after `notify.max_attempts` attempts, or on a
//! permanent 4xx answer, the row is dead-lettered and an alert goes to the operations target.
//!
//! Crash safety: if the process dies between sending and marking, the row is still pending; when its lease
//! expires (`notify.timeout` plus the same again, at most 5 s more) it is sent again with the SAME idempotency key and the same body, so a
//! receiver that deduplicates by key sees it once. A row marked delivered is never sent again.
//!
//! # Generic webhook headers (kind = "webhook")
//! - `Content-Type: application/json`
//! - `Idempotency-Key: <key>`: the same on every re-send of a message (also sent to Slack/Discord, which ignore it)
//! - `X-Newsd-Event: analysis | ops_alert`
//! - `X-Newsd-Timestamp: <unix seconds>` of this attempt
//! - `X-Newsd-Signature: sha256=<hex>`: HMAC-SHA256 keyed with the target's secret over
//!   `<X-Newsd-Timestamp> + "." + <raw body>`. Receivers recompute it, compare in constant time and reject old
//!   timestamps (e.g. more than 5 minutes) to stop replays; `verify_signature` does exactly that.
//! - `X-Newsd-Attempt: <n>`: 1 for the first send.

pub mod config;
pub mod render;

use std::collections::HashSet;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::analysis::doc::AnalysisDoc;
use crate::app::App;
use crate::notify::config::{TargetConfig, TargetKind};
use crate::notify::render::Format;
use crate::store::{now_ms, NewNotification, NotificationRow};

pub use config::NotifyConfig;

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("notification target {0:?} is not configured")]
    UnknownTarget(String),
    #[error("notification target {target:?}: environment variable {var} is not set")]
    MissingEnv { target: String, var: String },
    #[error("rendering the message for {target:?}: {message}")]
    Render { target: String, message: String },
}

/// What one dispatcher pass did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DispatchReport {
    /// Messages sent in this pass (successfully or not).
    pub attempted: usize,
    pub delivered: usize,
    /// Failed this time; scheduled again.
    pub retried: usize,
    /// Dead-lettered in this pass.
    pub dead: usize,
    /// Due but left for later (an earlier message to the same target failed in this pass, or another dispatcher
    /// holds it).
    pub deferred: usize,
    pub results: Vec<DeliveryResult>,
    /// Outbox totals after the pass.
    pub pending_after: i64,
    pub dead_total: i64,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeliveryResult {
    pub id: i64,
    pub target: String,
    pub idempotency_key: String,
    pub attempt: i64,
    /// delivered | retry | dead
    pub outcome: String,
    pub http_status: Option<u16>,
    pub error: Option<String>,
    pub next_attempt_at: Option<i64>,
}

/// `sha256=<hex>` of HMAC-SHA256(secret, timestamp + "." + body).
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a generic-webhook signature (constant-time) and the timestamp's age (`tolerance_s` either side of `now_s`).
pub fn verify_signature(secret: &[u8], timestamp: &str, body: &[u8], signature: &str, now_s: i64, tolerance_s: i64) -> bool {
    let Ok(ts) = timestamp.trim().parse::<i64>() else { return false };
    if (now_s - ts).abs() > tolerance_s {
        return false;
    }
    let Some(hex_sig) = signature.trim().strip_prefix("sha256=") else { return false };
    let Ok(expected) = hex::decode(hex_sig) else { return false };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(ts.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

fn short_hash(s: &str) -> String {
    hex::encode(&Sha256::digest(s.as_bytes())[..8])
}

/// Message bodies for one target: Slack/Discord may need several (i/N); a generic webhook gets one.
fn bodies_for_target(
    target: &TargetConfig,
    title: &str,
    text: &str,
    generic: impl FnOnce(&str) -> serde_json::Value,
) -> Vec<serde_json::Value> {
    match target.kind {
        TargetKind::Slack => render::slack_messages(title, text, target.username.as_deref()),
        TargetKind::Discord => render::discord_messages(title, text, target.username.as_deref()),
        TargetKind::Webhook => vec![generic(text)],
    }
}

fn rows_for(category: &str, target: &TargetConfig, key_base: &str, bodies: Vec<serde_json::Value>) -> Vec<NewNotification> {
    let parts = bodies.len() as i64;
    bodies
        .into_iter()
        .enumerate()
        .map(|(i, body)| NewNotification {
            category: category.into(),
            target: target.name.clone(),
            kind: target.kind.as_str().into(),
            part: i as i64 + 1,
            parts,
            idempotency_key: format!("{key_base}-{}-{}of{}", target.name, i + 1, parts),
            payload: body.to_string(),
        })
        .collect()
}

/// Renders an analysis for each target (its template, its format, its limits) as outbox rows. `run_key` is unique
/// per analysis run (a UUID), so keys never collide even if the database is recreated.
pub fn analysis_notifications(
    app: &App,
    analysis_id: i64,
    run_key: &str,
    doc: &AnalysisDoc,
    targets: &[String],
) -> anyhow::Result<Vec<NewNotification>> {
    let mut out = Vec::new();
    for name in targets {
        let target = app.config.notify.target(name).ok_or_else(|| NotifyError::UnknownTarget(name.clone()))?;
        let template_name = target.template.as_deref().unwrap_or("message.j2");
        let (template, _) = crate::analysis::templates::load(&app.config, template_name)?;
        let format = Format::for_kind(target.kind);
        let text = render::render_text(doc, format, &template)
            .map_err(|e| NotifyError::Render { target: name.clone(), message: format!("{e:#}") })?;
        let title = format!("Market analysis: {} ({})", doc.profile, crate::analysis::doc::fmt_datetime(doc.window_to));
        let key_base = format!("newsd-{run_key}");
        let bodies = bodies_for_target(target, &title, &text, |text| {
            serde_json::json!({
                "type": "analysis",
                "idempotency_key": format!("{key_base}-{}-1of1", target.name),
                "analysis_id": analysis_id,
                "profile": doc.profile,
                "title": title,
                "text": text,
                "analysis": doc,
            })
        });
        out.extend(rows_for("analysis", target, &key_base, bodies));
    }
    Ok(out)
}

/// Writes an operations alert to the outbox for the configured operations target (nothing when none is
/// configured). The same kind and message is enqueued at most once per `notify.ops_alert_dedup`.
/// Kinds used: `source_failing`, `schedule_refused`, `llm_failure`, `notification_dead`, ...
pub async fn enqueue_ops_alert(app: &App, kind: &str, message: &str) -> anyhow::Result<()> {
    let Some(ops) = app.config.notify.ops_target.as_deref() else {
        tracing::debug!(kind, message, "no operations target configured; alert only logged");
        return Ok(());
    };
    let target = app.config.notify.target(ops).ok_or_else(|| NotifyError::UnknownTarget(ops.into()))?;
    let now = now_ms();
    let bucket = now / (app.config.notify.ops_alert_dedup.as_millis().max(1) as i64);
    let key_base = format!("newsd-ops-{}-{}-{bucket}", kind.replace(|c: char| !c.is_ascii_alphanumeric(), "_"), short_hash(message));
    let title = format!("newsd alert: {kind}");
    let text = match target.kind {
        TargetKind::Slack => format!("*newsd alert* `{}`\n{}", render::slack_escape(kind), render::slack_escape(message)),
        _ => format!("**newsd alert** `{kind}`\n{message}"),
    };
    let bodies = bodies_for_target(target, &title, &text, |_| {
        serde_json::json!({
            "type": "ops_alert",
            "idempotency_key": format!("{key_base}-{}-1of1", target.name),
            "kind": kind,
            "message": message,
            "at": now,
        })
    });
    let rows = rows_for("ops", target, &key_base, bodies);
    let n = app.store.enqueue_notifications(&rows, now).await?;
    tracing::warn!(kind, message, enqueued = n, target = ops, "operations alert");
    Ok(())
}

/// Next attempt after `attempts` failed ones: base * 2^(attempts-1), capped, with jitter in [50%, 100%].
pub fn backoff_delay(config: &NotifyConfig, attempts: i64) -> Duration {
    let exp = (attempts.max(1) - 1).min(30) as u32;
    let raw = config.backoff_base.saturating_mul(2u32.saturating_pow(exp)).min(config.backoff_max);
    let ms = raw.as_millis() as u64;
    Duration::from_millis(if ms < 2 { ms } else { rand::random_range(ms / 2..=ms) })
}

/// Retry-After in seconds or as an HTTP date.
fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    let v = resp.headers().get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim().to_string();
    if let Ok(s) = v.parse::<f64>() {
        return (s >= 0.0).then(|| Duration::from_secs_f64(s));
    }
    let when = chrono::DateTime::parse_from_rfc2822(&v).ok()?;
    let ms = when.timestamp_millis() - now_ms();
    Some(Duration::from_millis(ms.max(0) as u64))
}

enum Sent {
    Ok(u16),
    /// Retry, optionally not before the given delay (Retry-After).
    Retry { status: Option<u16>, error: String, after: Option<Duration> },
    /// Permanent failure (4xx other than 408/425/429).
    Permanent { status: u16, error: String },
}

async fn send_one(client: &reqwest::Client, target: &TargetConfig, row: &NotificationRow, attempt: i64) -> Sent {
    let url = match std::env::var(&target.url_env) {
        Ok(u) if !u.trim().is_empty() => u,
        _ => {
            return Sent::Retry {
                status: None,
                error: NotifyError::MissingEnv { target: target.name.clone(), var: target.url_env.clone() }.to_string(),
                after: None,
            }
        }
    };
    let body = row.payload.clone().into_bytes();
    let mut req = client
        .post(&url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("Idempotency-Key", &row.idempotency_key)
        .header("X-Newsd-Attempt", attempt.to_string());
    if target.kind == TargetKind::Webhook {
        let var = target.secret_env.clone().unwrap_or_default();
        let secret = match std::env::var(&var) {
            Ok(s) => s,
            Err(_) => {
                return Sent::Retry {
                    status: None,
                    error: NotifyError::MissingEnv { target: target.name.clone(), var }.to_string(),
                    after: None,
                }
            }
        };
        let ts = now_ms() / 1000;
        let event = if row.category == "ops" { "ops_alert" } else { "analysis" };
        req = req
            .header("X-Newsd-Event", event)
            .header("X-Newsd-Timestamp", ts.to_string())
            .header("X-Newsd-Signature", sign(secret.as_bytes(), ts, &body));
    }
    match req.body(body).send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let after = retry_after(&resp);
            let text: String = resp.text().await.unwrap_or_default().chars().take(300).collect();
            match status {
                200..=299 => Sent::Ok(status),
                408 | 425 | 429 => Sent::Retry { status: Some(status), error: format!("HTTP {status}: {text}"), after },
                400..=499 => Sent::Permanent { status, error: format!("HTTP {status}: {text}") },
                _ => Sent::Retry {
                    status: Some(status),
                    error: format!("HTTP {status}: {text}"),
                    after: if status == 503 { after } else { None },
                },
            }
        }
        Err(e) => Sent::Retry { status: None, error: format!("{e}"), after: None },
    }
}

/// How long a claimed message is left alone by other dispatchers: the request timeout plus a margin (at most 5 s).
pub fn lease_for(cfg: &NotifyConfig) -> Duration {
    cfg.timeout + cfg.timeout.min(Duration::from_secs(5))
}

/// One dispatcher pass: delivers every due pending notification (oldest first, in order per target: a message
/// waiting for a retry holds back the later messages to the same target).
pub async fn run_dispatch(app: &App) -> anyhow::Result<DispatchReport> {
    let started = std::time::Instant::now();
    let cfg = &app.config.notify;
    let client = reqwest::Client::builder()
        .timeout(cfg.timeout)
        .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
        .user_agent(format!("newsd/{}", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::limited(3))
        .build()?;
    let lease = lease_for(cfg);
    let mut report = DispatchReport::default();
    // Every pending message, oldest first: a target's messages go out in order, so a message waiting for its retry
    // holds back the later ones to the same target (parts (i/N) of an analysis never arrive out of order).
    let pending = app.store.pending_notifications(cfg.batch_size as i64).await?;
    let mut blocked: HashSet<String> = HashSet::new();
    let mut dead_alerts: Vec<String> = Vec::new();
    for row in pending {
        let now = now_ms();
        if blocked.contains(&row.target) {
            report.deferred += 1;
            continue;
        }
        if row.next_attempt_at > now {
            blocked.insert(row.target.clone());
            continue;
        }
        let Some(target) = cfg.target(&row.target) else {
            let err = format!("target {:?} is no longer configured", row.target);
            app.store.mark_dead(row.id, &err, None).await?;
            report.dead += 1;
            report.results.push(DeliveryResult {
                id: row.id,
                target: row.target.clone(),
                idempotency_key: row.idempotency_key.clone(),
                attempt: row.attempts,
                outcome: "dead".into(),
                http_status: None,
                error: Some(err.clone()),
                next_attempt_at: None,
            });
            if row.category != "ops" {
                dead_alerts.push(format!("notification {} ({}) dead-lettered: {err}", row.id, row.idempotency_key));
            }
            continue;
        };
        if !app.store.claim_notification(row.id, now, now + lease.as_millis() as i64).await? {
            report.deferred += 1;
            continue;
        }
        let attempt = row.attempts + 1;
        report.attempted += 1;
        let span = tracing::info_span!("deliver", id = row.id, target = %row.target, attempt);
        let _enter = span.enter();
        let sent = send_one(&client, target, &row, attempt).await;
        let mut result = DeliveryResult {
            id: row.id,
            target: row.target.clone(),
            idempotency_key: row.idempotency_key.clone(),
            attempt,
            outcome: String::new(),
            http_status: None,
            error: None,
            next_attempt_at: None,
        };
        match sent {
            Sent::Ok(status) => {
                app.store.mark_delivered(row.id, Some(status as i64), now_ms()).await?;
                tracing::info!(status, key = %row.idempotency_key, "delivered");
                report.delivered += 1;
                result.outcome = "delivered".into();
                result.http_status = Some(status);
            }
            Sent::Permanent { status, error } => {
                app.store.mark_dead(row.id, &error, Some(status as i64)).await?;
                tracing::warn!(status, %error, "permanent failure: dead-lettered");
                report.dead += 1;
                blocked.insert(row.target.clone());
                if row.category != "ops" {
                    dead_alerts.push(format!(
                        "notification {} to {} ({}) dead-lettered after {attempt} attempt(s): {error}",
                        row.id, row.target, row.idempotency_key
                    ));
                }
                result.outcome = "dead".into();
                result.http_status = Some(status);
                result.error = Some(error);
            }
            Sent::Retry { status, error, after } => {
                blocked.insert(row.target.clone());
                result.http_status = status;
                if attempt >= cfg.max_attempts as i64 {
                    app.store.mark_dead(row.id, &error, status.map(|s| s as i64)).await?;
                    tracing::warn!(%error, attempt, "failed: dead-lettered");
                    report.dead += 1;
                    if row.category != "ops" {
                        dead_alerts.push(format!(
                            "notification {} to {} ({}) dead-lettered after {attempt} attempts: {error}",
                            row.id, row.target, row.idempotency_key
                        ));
                    }
                    result.outcome = "dead".into();
                } else {
                    let delay = match after {
                        Some(d) => d.min(cfg.retry_after_max),
                        None => backoff_delay(cfg, attempt),
                    };
                    let next = now_ms() + delay.as_millis() as i64;
                    app.store.mark_retry(row.id, &error, status.map(|s| s as i64), next).await?;
                    tracing::info!(%error, attempt, retry_in_ms = delay.as_millis() as u64, "failed: will retry");
                    report.retried += 1;
                    result.outcome = "retry".into();
                    result.next_attempt_at = Some(next);
                }
                result.error = Some(error);
            }
        }
        crate::metrics::global()
            .notifications
            .get_or_create(&crate::metrics::labels(&[("target", &result.target), ("outcome", &result.outcome)]))
            .inc();
        report.results.push(result);
    }
    for alert in dead_alerts {
        crate::ops::alert(app, "notification_dead", &alert).await;
    }
    let counts = app.store.outbox_counts().await?;
    report.pending_after = counts.pending;
    report.dead_total = counts.dead;
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// Outbox and analysis state for `newsd status`.
#[derive(Debug, Clone, Serialize)]
pub struct PendingSummary {
    pub pending: i64,
    pub delivered: i64,
    pub dead: i64,
    pub last_analysis: Option<LastAnalysis>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LastAnalysis {
    pub id: i64,
    pub profile: String,
    pub created_at: i64,
    pub mode: String,
    pub stories: i64,
    pub llm_error: Option<String>,
}

pub async fn pending_summary(app: &App) -> anyhow::Result<PendingSummary> {
    let c = app.store.outbox_counts().await?;
    let last = app.store.latest_analysis().await?.map(|a| LastAnalysis {
        id: a.id,
        profile: a.profile,
        created_at: a.created_at,
        mode: a.mode,
        stories: a.stories,
        llm_error: a.llm_error,
    });
    Ok(PendingSummary { pending: c.pending, delivered: c.delivered, dead: c.dead, last_analysis: last })
}

/// Sends a short test message to one target now (outside the outbox), to check its URL and secret.
pub async fn send_test(app: &App, target_name: &str) -> anyhow::Result<u16> {
    let target = app.config.notify.target(target_name).ok_or_else(|| NotifyError::UnknownTarget(target_name.into()))?;
    let key = format!("newsd-test-{}", uuid::Uuid::new_v4());
    let text = "newsd test message: this target is configured correctly.";
    let body = bodies_for_target(target, "newsd test", text, |t| {
        serde_json::json!({"type": "test", "idempotency_key": format!("{key}-{}-1of1", target.name), "text": t})
    })
    .remove(0);
    let row = NotificationRow {
        id: 0,
        analysis_id: None,
        category: "test".into(),
        target: target.name.clone(),
        kind: target.kind.as_str().into(),
        part: 1,
        parts: 1,
        idempotency_key: format!("{key}-{}-1of1", target.name),
        payload: body.to_string(),
        status: "pending".into(),
        attempts: 0,
        next_attempt_at: 0,
        last_error: None,
        last_status: None,
        created_at: now_ms(),
        delivered_at: None,
    };
    let client = reqwest::Client::builder().timeout(app.config.notify.timeout).build()?;
    match send_one(&client, target, &row, 1).await {
        Sent::Ok(s) => Ok(s),
        Sent::Retry { error, .. } | Sent::Permanent { error, .. } => anyhow::bail!("{target_name}: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_round_trip_and_tamper() {
        let sig = sign(b"k", 1700000000, b"{\"a\":1}");
        assert!(sig.starts_with("sha256=") && sig.len() == 7 + 64);
        assert!(verify_signature(b"k", "1700000000", b"{\"a\":1}", &sig, 1700000010, 300));
        assert!(!verify_signature(b"k", "1700000000", b"{\"a\":2}", &sig, 1700000010, 300));
        assert!(!verify_signature(b"other", "1700000000", b"{\"a\":1}", &sig, 1700000010, 300));
        assert!(!verify_signature(b"k", "1700000000", b"{\"a\":1}", &sig, 1700009999, 300), "too old");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let mut c = NotifyConfig::default();
        c.backoff_base = Duration::from_secs(10);
        c.backoff_max = Duration::from_secs(60);
        let d1 = backoff_delay(&c, 1);
        assert!(d1 >= Duration::from_secs(5) && d1 <= Duration::from_secs(10));
        let d3 = backoff_delay(&c, 3);
        assert!(d3 >= Duration::from_secs(20) && d3 <= Duration::from_secs(40));
        assert!(backoff_delay(&c, 50) <= Duration::from_secs(60));
    }
}
