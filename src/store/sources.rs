//! Per-source fetch state: conditional-GET validators, failures, back-off and health.

use std::collections::HashMap;

use serde::Serialize;
use super::{now_ms, FetchStatus, Result, Store};
use crate::config::SourceConfig;

#[derive(Debug, Clone, Default, Serialize, sqlx::FromRow)]
pub struct SourceState {
    pub id: i64,
    pub name: String,
    pub url: String,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub consecutive_failures: i64,
    /// Unix ms before which the feed must not be fetched (back-off, Retry-After, min_interval).
    pub next_fetch_at: i64,
    pub last_fetch_at: Option<i64>,
    pub last_success_at: Option<i64>,
    pub last_error: Option<String>,
}

/// What one feed fetch ended with, as recorded in the store.
#[derive(Debug, Clone)]
pub enum FetchOutcome {
    /// 200 with a parsed feed (validators to store for the next conditional GET).
    Fetched { etag: Option<String>, last_modified: Option<String>, next_fetch_at: i64 },
    /// 304 Not Modified.
    NotModified { next_fetch_at: i64 },
    /// Failure: the error text and when to try again.
    Failed { error: String, next_fetch_at: i64 },
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, sqlx::FromRow)]
pub struct SourceHealth {
    pub name: String,
    pub url: String,
    pub articles: i64,
    pub consecutive_failures: i64,
    pub last_status: Option<FetchStatus>,
    pub last_fetch_at: Option<i64>,
    pub last_success_at: Option<i64>,
    pub next_fetch_at: i64,
    pub last_error: Option<String>,
    /// No failure since the last success.
    #[sqlx(skip)]
    pub healthy: bool,
}

const STATE_COLUMNS: &str = "id, name, url, etag, last_modified, consecutive_failures, next_fetch_at, \
                             last_fetch_at, last_success_at, last_error";

impl Store {
    /// Makes sure every configured source has a row and returns their states by name. A source whose URL changed
    /// loses its validators and back-off (it is a different feed now).
    pub async fn sync_sources(&self, sources: &[SourceConfig]) -> Result<HashMap<String, SourceState>> {
        let mut tx = self.pool().begin().await?;
        for s in sources {
            sqlx::query(
                "INSERT INTO sources (name, url) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET url = excluded.url, \
                   etag = CASE WHEN sources.url = excluded.url THEN sources.etag ELSE NULL END, \
                   last_modified = CASE WHEN sources.url = excluded.url THEN sources.last_modified ELSE NULL END, \
                   next_fetch_at = CASE WHEN sources.url = excluded.url THEN sources.next_fetch_at ELSE 0 END",
            )
            .bind(&s.name)
            .bind(&s.url)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        let rows: Vec<SourceState> = sqlx::query_as(&format!("SELECT {STATE_COLUMNS} FROM sources")).fetch_all(self.pool()).await?;
        Ok(rows.into_iter().filter(|st| sources.iter().any(|s| s.name == st.name)).map(|st| (st.name.clone(), st)).collect())
    }

    pub async fn source_state(&self, name: &str) -> Result<Option<SourceState>> {
        Ok(sqlx::query_as(&format!("SELECT {STATE_COLUMNS} FROM sources WHERE name = $1"))
            .bind(name)
            .fetch_optional(self.pool())
            .await?)
    }

    /// Records the outcome of a feed fetch.
    pub async fn record_fetch(&self, source_id: i64, outcome: &FetchOutcome) -> Result<()> {
        let now = now_ms();
        match outcome {
            FetchOutcome::Fetched { etag, last_modified, next_fetch_at } => {
                sqlx::query(
                    "UPDATE sources SET etag = $1, last_modified = $2, consecutive_failures = 0, next_fetch_at = $3, \
                     last_fetch_at = $4, last_success_at = $4, last_status = $6 WHERE id = $5",
                )
                .bind(etag.clone())
                .bind(last_modified.clone())
                .bind(*next_fetch_at)
                .bind(now)
                .bind(source_id)
                .bind(FetchStatus::Fetched)
                .execute(self.pool())
                .await?;
            }
            FetchOutcome::NotModified { next_fetch_at } => {
                sqlx::query(
                    "UPDATE sources SET consecutive_failures = 0, next_fetch_at = $1, last_fetch_at = $2, \
                     last_success_at = $2, last_status = $4 WHERE id = $3",
                )
                .bind(*next_fetch_at)
                .bind(now)
                .bind(source_id)
                .bind(FetchStatus::NotModified)
                .execute(self.pool())
                .await?;
            }
            FetchOutcome::Failed { error, next_fetch_at } => {
                sqlx::query(
                    "UPDATE sources SET consecutive_failures = consecutive_failures + 1, next_fetch_at = $1, \
                     last_fetch_at = $2, last_error = $3, last_error_at = $2, last_status = $5 WHERE id = $4",
                )
                .bind(*next_fetch_at)
                .bind(now)
                .bind(error.clone())
                .bind(source_id)
                .bind(FetchStatus::Failed)
                .execute(self.pool())
                .await?;
            }
        }
        Ok(())
    }

    /// Health of the named sources (all sources when `names` is empty), with article counts, in one query.
    pub async fn source_health(&self, names: &[String]) -> Result<Vec<SourceHealth>> {
        let rows: Vec<SourceHealth> = sqlx::query_as(
            "SELECT s.name, s.url, s.consecutive_failures, s.last_status, s.last_fetch_at, s.last_success_at, \
                    s.next_fetch_at, s.last_error, COALESCE(c.n, 0) AS articles \
             FROM sources s LEFT JOIN (SELECT source_id, COUNT(*) AS n FROM articles GROUP BY source_id) c \
               ON c.source_id = s.id ORDER BY s.name",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .filter(|h| names.is_empty() || names.contains(&h.name))
            .map(|h| SourceHealth { healthy: h.consecutive_failures == 0, ..h })
            .collect())
    }
}
