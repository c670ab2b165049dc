//! Notifications: a transactional outbox in the database and a dispatcher that delivers it.
//!
//! An analysis and its notification rows are written in one transaction (`Store::save_analysis`); each row holds
//! the exact body to send (rendered once, at enqueue) and a stable idempotency key. A [`Dispatcher`] pass takes
//! pending rows oldest first, claims each (counting the attempt and setting a lease so that a concurrent
//! dispatcher leaves it alone; a claim succeeds only for the oldest pending message of its target, so two
//! dispatchers at once keep each target's order), sends it, and marks it delivered. A failure is retried with
//! exponential backoff and jitter; after `notify.max_attempts` counted attempts, or on a permanent 4xx answer, the
//! row is dead-lettered and returned in the report's `dead_letters` (the caller raises the operations alerts:
//! `ops::alert_dead_letters`).
//!
//! Rate limits and outages:
//! - a 429 with `Retry-After` is honoured (capped by `notify.retry_after_max`) and does NOT count as an attempt:
//!   the receiver asked for a pause, the message did not fail (a 429 without it counts; so does a 503);
//! - when the oldest message of a target waits out a backoff because the target did not answer (connection
//!   refused or reset, timeout) or a gateway could not reach it (502/504), each pass sends the target one `HEAD`
//!   probe; when it answers (anything but 5xx/429), that message and the rest of the queue go at once instead
//!   of at the backoff time. Likewise, once a message to a target is delivered, its later messages that wait
//!   for a retry go in the same pass.
//! - the dispatcher stops between messages when its stop token is cancelled (daemon shutdown): the message in
//!   flight is finished and recorded; a requested stop is not a failure.
//!
//! Crash safety: if the process dies between sending and marking, the row is still pending; when its lease
//! expires (`notify.timeout` plus the same again, at most 5 s more) it is sent again with the SAME idempotency key
//! and the same body, so a receiver that deduplicates by key sees it once. A row marked delivered is never sent
//! again.
//!
//! Secrets: webhook URLs (the credential of Slack/Discord webhooks) and signing keys are read once per pass into
//! [`Credentials`] and never reach a log line, an error, the database or an alert (errors are stripped of URLs).
//! Responses are read at most [`RESPONSE_BODY_LIMIT`] bytes.
//!
//! # Generic webhook headers (kind = "webhook")
//! - `Content-Type: application/json`
//! - `Idempotency-Key: <key>`: the same on every re-send of a message (also sent to Slack/Discord, which ignore it)
//! - `X-Newsd-Event: analysis | ops_alert`
//! - `X-Newsd-Timestamp: <unix seconds>` of this attempt
//! - `X-Newsd-Signature: sha256=<hex>`: HMAC-SHA256 keyed with the target's secret over
//!   `<X-Newsd-Timestamp> + "." + <raw body>`. Receivers recompute it, compare in constant time and reject old
//!   timestamps (e.g. more than 5 minutes) to stop replays; `verify_signature` does exactly that.
//! - `X-Newsd-Attempt: <n>`: 1 for the first send; sends answered 429 with Retry-After are not counted, so a
//!   re-send after one carries the same number.

pub mod config;
pub mod credentials;
pub mod render;

use std::collections::HashSet;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::analysis::doc::AnalysisDoc;
use crate::app::App;
use crate::notify::config::{TargetConfig, TargetKind};
use crate::notify::render::Format;
use crate::store::{now_ms, NewNotification, NotificationRow, NotificationStatus};

pub use config::NotifyConfig;
pub use credentials::{Credentials, TargetSecrets};

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("notification target {0:?} is not configured")]
    UnknownTarget(String),
    #[error("notification target {target:?}: environment variable {var} is not set")]
    MissingEnv { target: String, var: String },
    #[error("rendering the message for {target:?}: {message}")]
    Render { target: String, message: String },
    #[error("test message to {target:?} failed: {error}")]
    TestFailed { target: String, error: String },
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
    /// The pass stopped early because it was asked to (shutdown); what is left stays queued.
    pub stopped: bool,
    /// Targets found answering again by a probe (after an outage) in this pass.
    pub probes_answered: usize,
    /// Dead-lettered in this pass, for the caller's operations alerts.
    pub dead_letters: Vec<DeadLetter>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeliveryResult {
    pub id: i64,
    pub target: String,
    pub idempotency_key: String,
    pub attempt: i64,
    pub outcome: DeliveryOutcome,
    pub http_status: Option<u16>,
    pub error: Option<String>,
    pub next_attempt_at: Option<i64>,
}

/// What one delivery attempt ended with (reports and the `newsd_notifications` metric's `outcome` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, strum::Display, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum DeliveryOutcome {
    Delivered,
    /// Failed; tried again later.
    Retry,
    /// Dead-lettered.
    Dead,
}

impl DeliveryOutcome {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
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
        // Slack's `text` (notifications, previews) and Discord's content line: the brief's first lead line.
        let mut title = format!("Market brief: {} ({})", doc.profile, crate::analysis::doc::fmt_datetime(doc.window_to));
        if let Some(first) = doc.lead.first() {
            title.push_str(" \u{2014} ");
            title.push_str(first);
        }
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

/// The outbox rows of an operations alert for the operations target `target`, one per message part.
/// `key_base` identifies this occurrence of the alert (the caller, `ops`, decides what counts as a repeat).
pub fn ops_alert_notifications(target: &TargetConfig, kind: &str, message: &str, key_base: &str, at_ms: i64) -> Vec<NewNotification> {
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
            "at": at_ms,
        })
    });
    rows_for("ops", target, key_base, bodies)
}

/// A short stable digest of a text, for idempotency keys.
pub fn key_digest(s: &str) -> String {
    short_hash(s)
}

/// Next attempt after `attempts` counted failures: the shared [`crate::net::backoff`] with the target policy
/// (`notify.backoff_base` doubling up to `notify.backoff_max`, jitter). The result is persisted in the row.
pub fn backoff_delay(config: &NotifyConfig, attempts: i64) -> Duration {
    crate::net::backoff(attempts.clamp(1, u32::MAX as i64) as u32, config.backoff_base, config.backoff_max)
}

/// Longest webhook response body read: only its start goes into the error text, and a receiver must not be able
/// to make the dispatcher buffer an endless answer.
pub const RESPONSE_BODY_LIMIT: usize = 64 * 1024;

/// How much of a failed answer's body is kept in the error.
const ERROR_SNIPPET_CHARS: usize = 300;

enum Sent {
    Ok(u16),
    /// Retry, optionally not before the given delay (Retry-After). `counted = false`: the receiver asked us to
    /// come back later (429 with Retry-After), which is not a failure of the message and does not use up
    /// `notify.max_attempts`.
    Retry { status: Option<u16>, error: String, after: Option<Duration>, counted: bool },
    /// Permanent failure (4xx other than 408/425/429).
    Permanent { status: u16, error: String },
}

fn retry(status: Option<u16>, error: String) -> Sent {
    Sent::Retry { status, error, after: None, counted: true }
}

async fn send_one(client: &reqwest::Client, target: &TargetConfig, creds: &Credentials, row: &NotificationRow, attempt: i64) -> Sent {
    let secrets = match creds.get(target) {
        Ok(s) => s,
        Err(e) => return retry(None, e.to_string()),
    };
    let body = row.payload.clone().into_bytes();
    let mut req = client
        .post(secrets.url())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("Idempotency-Key", &row.idempotency_key)
        .header("X-Newsd-Attempt", attempt.to_string());
    if target.kind == TargetKind::Webhook {
        // `Credentials::get` guarantees the key for webhooks.
        let key = secrets.signing_key().unwrap_or_default();
        let ts = now_ms() / 1000;
        let event = if row.category == "ops" { "ops_alert" } else { "analysis" };
        req = req
            .header("X-Newsd-Event", event)
            .header("X-Newsd-Timestamp", ts.to_string())
            .header("X-Newsd-Signature", sign(key, ts, &body));
    }
    let resp = match req.body(body).send().await {
        Ok(resp) => resp,
        // The URL is the credential: reqwest's Display would carry it into the log, the DB and the alerts.
        Err(e) => return retry(None, secrets.redact(&crate::net::error_without_url(e))),
    };
    let status = resp.status().as_u16();
    if (200..300).contains(&status) {
        return Sent::Ok(status);
    }
    let after = crate::net::retry_after_of(resp.headers());
    let text = match crate::net::read_body_limited(resp, RESPONSE_BODY_LIMIT).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).chars().take(ERROR_SNIPPET_CHARS).collect::<String>(),
        Err(e) => format!("({e})"),
    };
    let error = secrets.redact(&format!("HTTP {status}: {}", text.trim()));
    match status {
        429 => Sent::Retry { status: Some(status), error, after, counted: after.is_none() },
        408 | 425 => Sent::Retry { status: Some(status), error, after, counted: true },
        400..=499 => Sent::Permanent { status, error },
        503 => Sent::Retry { status: Some(status), error, after, counted: true },
        _ => retry(Some(status), error),
    }
}

/// Whether a message waiting for its retry failed because its target did not answer (a refused or reset
/// connection, a timeout: `last_status` is empty) or a gateway could not reach it (502, 504). Then a cheap probe
/// can tell when the target is back, and its queue need not wait out the backoff. Other failures (a 500, a 503
/// "overloaded") keep their backoff: the target answered and said no.
fn waiting_out_an_outage(row: &NotificationRow) -> bool {
    row.attempts > 0 && row.last_error.is_some() && matches!(row.last_status, None | Some(502) | Some(504))
}

/// Asks whether a target answers again: a HEAD request (safe by definition: receivers act on POSTs). Any answer
/// but a 5xx or 429 means it is reachable.
async fn probe(client: &reqwest::Client, secrets: &TargetSecrets, timeout: Duration) -> bool {
    match client.head(secrets.url()).timeout(timeout).send().await {
        Ok(resp) => {
            let s = resp.status().as_u16();
            s != 429 && s < 500
        }
        Err(_) => false,
    }
}

/// How long a claimed message is left alone by other dispatchers: the request timeout plus a margin (at most 5 s).
pub fn lease_for(cfg: &NotifyConfig) -> Duration {
    cfg.timeout + cfg.timeout.min(Duration::from_secs(5))
}

/// A message that will not be sent again (until re-queued). The dispatcher does not raise alerts itself: the
/// caller passes these to `ops::alert_dead_letters` (the dispatcher does not depend on the ops module).
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub id: i64,
    pub target: String,
    /// analysis | ops | ...: dead operations alerts raise no further alert (no loop).
    pub category: String,
    pub idempotency_key: String,
    pub attempts: i64,
    pub http_status: Option<u16>,
    /// Already free of secrets.
    pub error: String,
}

impl DeadLetter {
    /// The text of the operations alert about this dead letter.
    pub fn alert_message(&self) -> String {
        format!(
            "notification {} to {} ({}) dead-lettered after {} attempt(s): {}",
            self.id, self.target, self.idempotency_key, self.attempts, self.error
        )
    }
}

/// Delivers the outbox: one [`Dispatcher::run`] is one pass. Holds the targets' secrets (resolved once) and an
/// optional stop signal.
pub struct Dispatcher {
    credentials: Credentials,
    stop: CancellationToken,
}

impl Dispatcher {
    pub fn new(credentials: Credentials) -> Dispatcher {
        Dispatcher { credentials, stop: CancellationToken::new() }
    }

    /// Secrets read from the environment variables the config names.
    pub fn from_env(cfg: &NotifyConfig) -> Dispatcher {
        Dispatcher::new(Credentials::from_env(cfg))
    }

    /// Stop between messages once `stop` is cancelled: the message in flight is finished and recorded, the rest
    /// stays pending for the next pass. A requested stop is not a failure (`DispatchReport::stopped`).
    pub fn with_stop(mut self, stop: CancellationToken) -> Dispatcher {
        self.stop = stop;
        self
    }

    /// One pass: delivers every due pending notification, oldest first and in order per target (a message waiting
    /// for a retry holds back the later messages to the same target; so does a message another dispatcher has
    /// claimed). A target that answers again (a message to it delivered, or a probe answered after an outage)
    /// has its waiting messages taken up at once instead of at their backoff time.
    pub async fn run(&self, app: &App) -> anyhow::Result<DispatchReport> {
        let started = std::time::Instant::now();
        let cfg = &app.config.notify;
        let client = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
            .user_agent(format!("newsd/{}", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()?;
        let lease = lease_for(cfg);
        let probe_timeout = cfg.timeout.min(Duration::from_secs(5));
        let mut report = DispatchReport::default();
        let pending = app.store.pending_notifications(cfg.batch_size as i64).await?;
        // Targets that cannot take a message in this pass (to keep their order).
        let mut blocked: HashSet<String> = HashSet::new();
        // Targets known to answer now: their waiting messages go without waiting out the backoff.
        let mut answering: HashSet<String> = HashSet::new();
        let mut probed: HashSet<String> = HashSet::new();
        for row in pending {
            if self.stop.is_cancelled() {
                report.stopped = true;
                break;
            }
            if blocked.contains(&row.target) {
                report.deferred += 1;
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
                    outcome: DeliveryOutcome::Dead,
                    http_status: None,
                    error: Some(err.clone()),
                    next_attempt_at: None,
                });
                report.dead_letters.push(DeadLetter {
                    id: row.id,
                    target: row.target.clone(),
                    category: row.category.clone(),
                    idempotency_key: row.idempotency_key.clone(),
                    attempts: row.attempts,
                    http_status: None,
                    error: err,
                });
                continue;
            };
            let now = now_ms();
            let mut early = false;
            if row.next_attempt_at > now {
                // No recorded failure: another dispatcher has it in flight (its lease).
                let waiting_retry = row.last_error.is_some();
                if waiting_retry
                    && !answering.contains(&row.target)
                    && waiting_out_an_outage(&row)
                    && probed.insert(row.target.clone())
                {
                    if let Ok(secrets) = self.credentials.get(target) {
                        if probe(&client, secrets, probe_timeout).await {
                            tracing::info!(target = %row.target, "target answers again; its queue resumes now");
                            report.probes_answered += 1;
                            answering.insert(row.target.clone());
                        }
                    }
                }
                // A 429 asked for a pause: keep it even if the target answered something else meanwhile.
                early = waiting_retry && answering.contains(&row.target) && row.last_status != Some(429);
                if !early {
                    blocked.insert(row.target.clone());
                    continue;
                }
            }
            let lease_until = now + lease.as_millis() as i64;
            let claimed = if early {
                app.store.claim_notification_early(row.id, row.next_attempt_at, lease_until).await?
            } else {
                app.store.claim_notification(row.id, now, lease_until).await?
            };
            if !claimed {
                // Another dispatcher has this message or an older one of this target: sending a later one now
                // would break the target's order.
                blocked.insert(row.target.clone());
                report.deferred += 1;
                continue;
            }
            let attempt = row.attempts + 1;
            report.attempted += 1;
            let span = tracing::info_span!("deliver", id = row.id, target = %row.target, attempt);
            let sent = send_one(&client, target, &self.credentials, &row, attempt).instrument(span).await;
            let mut result = DeliveryResult {
                id: row.id,
                target: row.target.clone(),
                idempotency_key: row.idempotency_key.clone(),
                attempt,
                outcome: DeliveryOutcome::Retry, // set by every arm below
                http_status: None,
                error: None,
                next_attempt_at: None,
            };
            let mut dead: Option<(Option<u16>, String)> = None;
            match sent {
                Sent::Ok(status) => {
                    app.store.mark_delivered(row.id, Some(status as i64), now_ms()).await?;
                    tracing::info!(id = row.id, target = %row.target, status, key = %row.idempotency_key, "delivered");
                    report.delivered += 1;
                    answering.insert(row.target.clone());
                    result.outcome = DeliveryOutcome::Delivered;
                    result.http_status = Some(status);
                }
                Sent::Permanent { status, error } => {
                    app.store.mark_dead(row.id, &error, Some(status as i64)).await?;
                    tracing::warn!(id = row.id, target = %row.target, status, %error, "permanent failure: dead-lettered");
                    blocked.insert(row.target.clone());
                    result.outcome = DeliveryOutcome::Dead;
                    result.http_status = Some(status);
                    result.error = Some(error.clone());
                    dead = Some((Some(status), error));
                }
                Sent::Retry { status, error, after, counted } => {
                    blocked.insert(row.target.clone());
                    answering.remove(&row.target);
                    result.http_status = status;
                    result.error = Some(error.clone());
                    if counted && attempt >= cfg.max_attempts as i64 {
                        app.store.mark_dead(row.id, &error, status.map(|s| s as i64)).await?;
                        tracing::warn!(id = row.id, target = %row.target, %error, attempt, "failed: dead-lettered");
                        result.outcome = DeliveryOutcome::Dead;
                        dead = Some((status, error));
                    } else {
                        let delay = match after {
                            Some(d) => d.min(cfg.retry_after_max),
                            None => backoff_delay(cfg, attempt),
                        };
                        let next = now_ms() + delay.as_millis() as i64;
                        app.store.mark_retry(row.id, &error, status.map(|s| s as i64), next, counted).await?;
                        if counted {
                            tracing::info!(id = row.id, target = %row.target, %error, attempt, retry_in_ms = delay.as_millis() as u64, "failed: will retry");
                        } else {
                            tracing::info!(id = row.id, target = %row.target, %error, retry_in_ms = delay.as_millis() as u64, "rate limited: will retry (not counted)");
                            result.attempt = row.attempts;
                        }
                        report.retried += 1;
                        result.outcome = DeliveryOutcome::Retry;
                        result.next_attempt_at = Some(next);
                    }
                }
            }
            if let Some((http_status, error)) = dead {
                report.dead += 1;
                report.dead_letters.push(DeadLetter {
                    id: row.id,
                    target: row.target.clone(),
                    category: row.category.clone(),
                    idempotency_key: row.idempotency_key.clone(),
                    attempts: attempt,
                    http_status,
                    error,
                });
            }
            crate::metrics::global()
                .notifications
                .get_or_create(&crate::metrics::labels(&[("target", &result.target), ("outcome", result.outcome.as_str())]))
                .inc();
            report.results.push(result);
        }
        if report.stopped {
            tracing::info!(delivered = report.delivered, "dispatcher stopped on request; the rest stays queued");
        }
        let counts = app.store.outbox_counts().await?;
        report.pending_after = counts.pending;
        report.dead_total = counts.dead;
        report.duration_ms = started.elapsed().as_millis() as u64;
        Ok(report)
    }
}

/// One dispatcher pass with the secrets from the environment and no stop signal. Dead letters are in the
/// report (`dead_letters`); raising alerts for them is the caller's (`ops::alert_dead_letters`).
pub async fn run_dispatch(app: &App) -> anyhow::Result<DispatchReport> {
    Dispatcher::from_env(&app.config.notify).run(app).await
}

/// Outbox and analysis state for `newsd status`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct PendingSummary {
    pub pending: i64,
    pub delivered: i64,
    pub dead: i64,
    pub last_analysis: Option<LastAnalysis>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
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
    send_test_with(app, &Credentials::from_env(&app.config.notify), target_name).await
}

/// [`send_test`] with the given secrets.
pub async fn send_test_with(app: &App, creds: &Credentials, target_name: &str) -> anyhow::Result<u16> {
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
        status: NotificationStatus::Pending,
        attempts: 0,
        next_attempt_at: 0,
        last_error: None,
        last_status: None,
        created_at: now_ms(),
        delivered_at: None,
    };
    let client = reqwest::Client::builder().timeout(app.config.notify.timeout).build()?;
    match send_one(&client, target, creds, &row, 1).await {
        Sent::Ok(s) => Ok(s),
        Sent::Retry { error, .. } | Sent::Permanent { error, .. } => Err(NotifyError::TestFailed { target: target_name.into(), error }.into()),
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
        assert!(d1 >= Duration::from_millis(7500) && d1 <= Duration::from_millis(12500), "{d1:?}");
        let d3 = backoff_delay(&c, 3);
        assert!(d3 >= Duration::from_secs(30) && d3 <= Duration::from_secs(50), "{d3:?}");
        assert!(backoff_delay(&c, 50) <= Duration::from_secs(60));
        assert!(backoff_delay(&c, 0) <= Duration::from_millis(12500), "0 counts as the first failure");
    }

    fn row(attempts: i64, last_error: Option<&str>, last_status: Option<i64>) -> NotificationRow {
        NotificationRow {
            id: 1,
            analysis_id: None,
            category: "analysis".into(),
            target: "t".into(),
            kind: "webhook".into(),
            part: 1,
            parts: 1,
            idempotency_key: "k".into(),
            payload: "{}".into(),
            status: NotificationStatus::Pending,
            attempts,
            next_attempt_at: 0,
            last_error: last_error.map(str::to_string),
            last_status,
            created_at: 0,
            delivered_at: None,
        }
    }

    #[test]
    fn only_unreachable_targets_are_probed() {
        assert!(waiting_out_an_outage(&row(1, Some("connection refused"), None)));
        assert!(waiting_out_an_outage(&row(2, Some("HTTP 502"), Some(502))));
        assert!(!waiting_out_an_outage(&row(1, Some("HTTP 500"), Some(500))), "it answered: keep the backoff");
        assert!(!waiting_out_an_outage(&row(1, Some("HTTP 503"), Some(503))));
        assert!(!waiting_out_an_outage(&row(1, None, None)), "in flight elsewhere (claimed, no outcome yet)");
        assert!(!waiting_out_an_outage(&row(0, None, None)));
    }
}
