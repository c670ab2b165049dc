//! Analyses and the notification outbox. An analysis and its notifications are written in one transaction;
//! the dispatcher claims due rows (a lease in `next_attempt_at`), sends, then marks them delivered / retried / dead.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{FromRow, Row};

use super::{NotificationStatus, Result, Store};

/// An analysis about to be stored.
#[derive(Debug, Clone)]
pub struct NewAnalysis {
    pub profile: String,
    pub created_at: i64,
    pub as_of: i64,
    pub window_from: i64,
    pub window_to: i64,
    pub mode: String,
    pub model: Option<String>,
    pub template: String,
    pub template_hash: String,
    pub prompt: Option<String>,
    pub llm_error: Option<String>,
    /// JSON of the structured analysis.
    pub doc: String,
    pub text: String,
    pub article_ids: Vec<i64>,
    pub stories: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct AnalysisRow {
    pub id: i64,
    pub profile: String,
    pub created_at: i64,
    pub as_of: i64,
    pub window_from: i64,
    pub window_to: i64,
    pub mode: String,
    pub model: Option<String>,
    pub template: String,
    pub template_hash: String,
    pub prompt: Option<String>,
    pub llm_error: Option<String>,
    pub doc: String,
    pub text: String,
    pub article_ids: Vec<i64>,
    pub stories: i64,
}

/// A notification about to be put in the outbox.
#[derive(Debug, Clone)]
pub struct NewNotification {
    pub category: String,
    pub target: String,
    pub kind: String,
    pub part: i64,
    pub parts: i64,
    pub idempotency_key: String,
    pub payload: String,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct NotificationRow {
    pub id: i64,
    pub analysis_id: Option<i64>,
    pub category: String,
    pub target: String,
    pub kind: String,
    pub part: i64,
    pub parts: i64,
    pub idempotency_key: String,
    pub payload: String,
    pub status: NotificationStatus,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    pub last_status: Option<i64>,
    pub created_at: i64,
    pub delivered_at: Option<i64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct OutboxCounts {
    pub pending: i64,
    pub delivered: i64,
    pub dead: i64,
}

const ANALYSIS_COLUMNS: &str = "id, profile, created_at, as_of, window_from, window_to, mode, model, template, \
     template_hash, prompt, llm_error, doc, text, article_ids, stories";
const NOTIFICATION_COLUMNS: &str = "id, analysis_id, category, target, kind, part, parts, idempotency_key, payload, \
     status, attempts, next_attempt_at, last_error, last_status, created_at, delivered_at";

/// The columns map one to one except `article_ids`, stored as a JSON list (read as empty if it is not one), which
/// the `Any` driver cannot decode as JSON: hence a hand-written impl, not the derive.
impl<'r> FromRow<'r, AnyRow> for AnalysisRow {
    fn from_row(row: &'r AnyRow) -> sqlx::Result<Self> {
        Ok(AnalysisRow {
            id: row.try_get("id")?,
            profile: row.try_get("profile")?,
            created_at: row.try_get("created_at")?,
            as_of: row.try_get("as_of")?,
            window_from: row.try_get("window_from")?,
            window_to: row.try_get("window_to")?,
            mode: row.try_get("mode")?,
            model: row.try_get("model")?,
            template: row.try_get("template")?,
            template_hash: row.try_get("template_hash")?,
            prompt: row.try_get("prompt")?,
            llm_error: row.try_get("llm_error")?,
            doc: row.try_get("doc")?,
            text: row.try_get("text")?,
            article_ids: serde_json::from_str(&row.try_get::<String, _>("article_ids")?).unwrap_or_default(),
            stories: row.try_get("stories")?,
        })
    }
}

async fn insert_notification(
    conn: &mut sqlx::AnyConnection,
    analysis_id: Option<i64>,
    n: &NewNotification,
    now: i64,
) -> Result<bool> {
    let done = sqlx::query(
        "INSERT INTO notifications (analysis_id, category, target, kind, part, parts, idempotency_key, payload, \
           status, attempts, next_attempt_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, $10, $11) ON CONFLICT (idempotency_key) DO NOTHING",
    )
    .bind(analysis_id)
    .bind(&n.category)
    .bind(&n.target)
    .bind(&n.kind)
    .bind(n.part)
    .bind(n.parts)
    .bind(&n.idempotency_key)
    .bind(&n.payload)
    .bind(NotificationStatus::Pending)
    .bind(now)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

impl Store {
    /// Stores an analysis and the notifications built for it (given its id) in ONE transaction: either both exist
    /// or neither does, so a crash can never lose the notifications of a stored analysis (transactional outbox).
    pub async fn save_analysis<F>(&self, a: &NewAnalysis, notifications: F) -> anyhow::Result<(i64, usize)>
    where
        F: FnOnce(i64) -> anyhow::Result<Vec<NewNotification>>,
    {
        let mut tx = self.pool().begin().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO analyses (profile, created_at, as_of, window_from, window_to, mode, model, template, \
               template_hash, prompt, llm_error, doc, text, article_ids, stories) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) RETURNING id",
        )
        .bind(&a.profile)
        .bind(a.created_at)
        .bind(a.as_of)
        .bind(a.window_from)
        .bind(a.window_to)
        .bind(&a.mode)
        .bind(a.model.clone())
        .bind(&a.template)
        .bind(&a.template_hash)
        .bind(a.prompt.clone())
        .bind(a.llm_error.clone())
        .bind(&a.doc)
        .bind(&a.text)
        .bind(serde_json::to_string(&a.article_ids)?)
        .bind(a.stories)
        .fetch_one(&mut *tx)
        .await?;
        let list = notifications(id)?;
        let mut inserted = 0;
        for n in &list {
            if insert_notification(&mut tx, Some(id), n, a.created_at).await? {
                inserted += 1;
            }
        }
        tx.commit().await?;
        Ok((id, inserted))
    }

    /// Puts notifications not tied to an analysis (operations alerts, tests) in the outbox; a key already present
    /// is skipped. Returns how many were inserted.
    pub async fn enqueue_notifications(&self, list: &[NewNotification], now: i64) -> Result<usize> {
        let mut tx = self.pool().begin().await?;
        let mut inserted = 0;
        for n in list {
            if insert_notification(&mut tx, None, n, now).await? {
                inserted += 1;
            }
        }
        tx.commit().await?;
        Ok(inserted)
    }

    /// The latest analysis of a profile whose analysis time is strictly before `as_of` (replays of the past
    /// compare against what came before them, and re-running the same time reproduces its brief).
    pub async fn previous_analysis(&self, profile: &str, as_of: i64) -> Result<Option<AnalysisRow>> {
        let sql = format!(
            "SELECT {ANALYSIS_COLUMNS} FROM analyses WHERE profile = $1 AND as_of < $2 ORDER BY as_of DESC, id DESC LIMIT 1"
        );
        Ok(sqlx::query_as(&sql).bind(profile).bind(as_of).fetch_optional(self.pool()).await?)
    }

    /// The analysis of a profile that ran last (by when it ran, whatever its analysis time).
    pub async fn last_run_analysis(&self, profile: &str) -> Result<Option<AnalysisRow>> {
        let sql = format!("SELECT {ANALYSIS_COLUMNS} FROM analyses WHERE profile = $1 ORDER BY id DESC LIMIT 1");
        Ok(sqlx::query_as(&sql).bind(profile).fetch_optional(self.pool()).await?)
    }

    /// The latest analysis of any profile.
    pub async fn latest_analysis(&self) -> Result<Option<AnalysisRow>> {
        let sql = format!("SELECT {ANALYSIS_COLUMNS} FROM analyses ORDER BY id DESC LIMIT 1");
        Ok(sqlx::query_as(&sql).fetch_optional(self.pool()).await?)
    }

    /// Analyses newest first, optionally older than `before_id` (paging).
    pub async fn list_analyses(&self, before_id: Option<i64>, limit: i64) -> Result<Vec<AnalysisRow>> {
        let sql = format!("SELECT {ANALYSIS_COLUMNS} FROM analyses WHERE id < $1 ORDER BY id DESC LIMIT $2");
        Ok(sqlx::query_as(&sql).bind(before_id.unwrap_or(i64::MAX)).bind(limit.max(1)).fetch_all(self.pool()).await?)
    }

    /// The latest analysis whose articles include `article_id` (the article's story, for the API).
    pub async fn analysis_with_article(&self, article_id: i64, scan: i64) -> Result<Option<AnalysisRow>> {
        // Only the id lists of the last `scan` analyses are read; the whole row only for the one that matches.
        let lists: Vec<(i64, String)> = sqlx::query_as("SELECT id, article_ids FROM analyses ORDER BY id DESC LIMIT $1")
            .bind(scan.max(1))
            .fetch_all(self.pool())
            .await?;
        let found = lists.into_iter().find(|(_, ids)| serde_json::from_str::<Vec<i64>>(ids).unwrap_or_default().contains(&article_id));
        match found {
            Some((id, _)) => self.analysis(id).await,
            None => Ok(None),
        }
    }

    pub async fn analysis(&self, id: i64) -> Result<Option<AnalysisRow>> {
        let sql = format!("SELECT {ANALYSIS_COLUMNS} FROM analyses WHERE id = $1");
        Ok(sqlx::query_as(&sql).bind(id).fetch_optional(self.pool()).await?)
    }

    /// Pending notifications whose next attempt is due, oldest first.
    pub async fn due_notifications(&self, now: i64, limit: i64) -> Result<Vec<NotificationRow>> {
        let sql = format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE status = $1 AND next_attempt_at <= $2 \
             ORDER BY id LIMIT $3"
        );
        Ok(sqlx::query_as(&sql).bind(NotificationStatus::Pending).bind(now).bind(limit).fetch_all(self.pool()).await?)
    }

    /// Pending notifications (due or not), oldest first: the dispatcher keeps each target's messages in order.
    pub async fn pending_notifications(&self, limit: i64) -> Result<Vec<NotificationRow>> {
        let sql = format!("SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE status = $1 ORDER BY id LIMIT $2");
        Ok(sqlx::query_as(&sql).bind(NotificationStatus::Pending).bind(limit).fetch_all(self.pool()).await?)
    }

    /// All notifications (tests, `notify --json`), optionally of one analysis.
    pub async fn notifications(&self, analysis_id: Option<i64>) -> Result<Vec<NotificationRow>> {
        let rows = match analysis_id {
            Some(id) => {
                let sql = format!("SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE analysis_id = $1 ORDER BY id");
                sqlx::query_as(&sql).bind(id).fetch_all(self.pool()).await?
            }
            None => {
                let sql = format!("SELECT {NOTIFICATION_COLUMNS} FROM notifications ORDER BY id");
                sqlx::query_as(&sql).fetch_all(self.pool()).await?
            }
        };
        Ok(rows)
    }

    /// Claims a due notification for one send: counts the attempt and sets a lease (`next_attempt_at`) so that
    /// another dispatcher does not send it meanwhile. If the process dies after sending and before marking, the
    /// lease expires and the message is sent again, with the same idempotency key. False if someone else has it,
    /// or if an older message to the same target is still pending (per-target order holds even with two
    /// dispatchers at once). The claim clears the previous outcome: a pending row with a future
    /// `next_attempt_at` and no `last_error` is in flight, one with a `last_error` is waiting for its retry.
    pub async fn claim_notification(&self, id: i64, now: i64, lease_until: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE notifications SET attempts = attempts + 1, next_attempt_at = $1, last_error = NULL, last_status = NULL \
             WHERE id = $2 AND status = $4 AND next_attempt_at <= $3 \
             AND NOT EXISTS (SELECT 1 FROM notifications o WHERE o.target = notifications.target \
                             AND o.status = $4 AND o.id < notifications.id)",
        )
        .bind(lease_until)
        .bind(id)
        .bind(now)
        .bind(NotificationStatus::Pending)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Claims a notification before its retry time (its target answered again): only if it is still waiting
    /// for the retry the caller saw (`next_attempt_at` unchanged and a failure recorded, so not in flight
    /// elsewhere) and is the oldest pending message of its target.
    pub async fn claim_notification_early(&self, id: i64, seen_next_attempt_at: i64, lease_until: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE notifications SET attempts = attempts + 1, next_attempt_at = $1, last_error = NULL, last_status = NULL \
             WHERE id = $2 AND status = $4 AND next_attempt_at = $3 AND last_error IS NOT NULL \
             AND NOT EXISTS (SELECT 1 FROM notifications o WHERE o.target = notifications.target \
                             AND o.status = $4 AND o.id < notifications.id)",
        )
        .bind(lease_until)
        .bind(id)
        .bind(seen_next_attempt_at)
        .bind(NotificationStatus::Pending)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn mark_delivered(&self, id: i64, http_status: Option<i64>, now: i64) -> Result<()> {
        sqlx::query(
            "UPDATE notifications SET status = $1, delivered_at = $2, last_status = $3, last_error = NULL WHERE id = $4",
        )
        .bind(NotificationStatus::Delivered)
        .bind(now)
        .bind(http_status)
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Records a failed attempt and when to try again. `counted = false` gives the claim's attempt back (the
    /// receiver asked to come back later: a rate limit is not a failure of the message).
    pub async fn mark_retry(&self, id: i64, error: &str, http_status: Option<i64>, next_attempt_at: i64, counted: bool) -> Result<()> {
        sqlx::query(
            "UPDATE notifications SET last_error = $1, last_status = $2, next_attempt_at = $3, \
             attempts = CASE WHEN $4 = 1 THEN attempts ELSE attempts - 1 END WHERE id = $5",
        )
            .bind(error)
            .bind(http_status)
            .bind(next_attempt_at)
            .bind(counted as i64)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Dead-letters a notification: it stays in the table (for inspection and manual re-queueing), never sent again.
    pub async fn mark_dead(&self, id: i64, error: &str, http_status: Option<i64>) -> Result<()> {
        sqlx::query("UPDATE notifications SET status = $4, last_error = $1, last_status = $2 WHERE id = $3")
            .bind(error)
            .bind(http_status)
            .bind(id)
            .bind(NotificationStatus::Dead)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Puts dead notifications back in the queue (all, or one target's).
    pub async fn requeue_dead(&self, target: Option<&str>, now: i64) -> Result<u64> {
        let done = match target {
            Some(t) => sqlx::query(
                "UPDATE notifications SET status = $3, attempts = 0, next_attempt_at = $1 WHERE status = $4 AND target = $2",
            )
            .bind(now)
            .bind(t)
            .bind(NotificationStatus::Pending)
            .bind(NotificationStatus::Dead)
            .execute(self.pool())
            .await?,
            None => sqlx::query("UPDATE notifications SET status = $2, attempts = 0, next_attempt_at = $1 WHERE status = $3")
            .bind(now)
            .bind(NotificationStatus::Pending)
            .bind(NotificationStatus::Dead)
            .execute(self.pool())
            .await?,
        };
        Ok(done.rows_affected())
    }

    pub async fn outbox_counts(&self) -> Result<OutboxCounts> {
        let rows: Vec<(NotificationStatus, i64)> =
            sqlx::query_as("SELECT status, COUNT(*) FROM notifications GROUP BY status").fetch_all(self.pool()).await?;
        let mut c = OutboxCounts::default();
        for (status, n) in rows {
            match status {
                NotificationStatus::Pending => c.pending = n,
                NotificationStatus::Delivered => c.delivered = n,
                NotificationStatus::Dead => c.dead = n,
            }
        }
        Ok(c)
    }
}
