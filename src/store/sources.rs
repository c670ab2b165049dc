//! Per-source fetch state: conditional-GET validators, failures, back-off and health.

use std::collections::HashMap;

use serde::Serialize;
use sqlx::Row;

use super::{now_ms, Result, Store};
use crate::config::SourceConfig;

#[derive(Debug, Clone, Default, Serialize)]
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

#[derive(Debug, Clone, Serialize)]
pub struct SourceHealth {
    pub name: String,
    pub url: String,
    pub articles: i64,
    pub consecutive_failures: i64,
    pub last_status: Option<String>,
    pub last_fetch_at: Option<i64>,
    pub last_success_at: Option<i64>,
    pub next_fetch_at: i64,
    pub last_error: Option<String>,
    pub healthy: bool,
}

fn state_from_row(row: &sqlx::any::AnyRow) -> Result<SourceState> {
    Ok(SourceState {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        url: row.try_get("url")?,
        etag: row.try_get("etag")?,
        last_modified: row.try_get("last_modified")?,
        consecutive_failures: row.try_get("consecutive_failures")?,
        next_fetch_at: row.try_get("next_fetch_at")?,
        last_fetch_at: row.try_get("last_fetch_at")?,
        last_success_at: row.try_get("last_success_at")?,
        last_error: row.try_get("last_error")?,
    })
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
        let rows = sqlx::query(&format!("SELECT {STATE_COLUMNS} FROM sources")).fetch_all(self.pool()).await?;
        let mut out = HashMap::new();
        for row in &rows {
            let st = state_from_row(row)?;
            if sources.iter().any(|s| s.name == st.name) {
                out.insert(st.name.clone(), st);
            }
        }
        Ok(out)
    }

    pub async fn source_state(&self, name: &str) -> Result<Option<SourceState>> {
        let row = sqlx::query(&format!("SELECT {STATE_COLUMNS} FROM sources WHERE name = $1"))
            .bind(name)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(state_from_row).transpose()
    }

    /// Records the outcome of a feed fetch.
    pub async fn record_fetch(&self, source_id: i64, outcome: &FetchOutcome) -> Result<()> {
        let now = now_ms();
        match outcome {
            FetchOutcome::Fetched { etag, last_modified, next_fetch_at } => {
                sqlx::query(
                    "UPDATE sources SET etag = $1, last_modified = $2, consecutive_failures = 0, next_fetch_at = $3, \
                     last_fetch_at = $4, last_success_at = $4, last_status = 'fetched' WHERE id = $5",
                )
                .bind(etag.clone())
                .bind(last_modified.clone())
                .bind(*next_fetch_at)
                .bind(now)
                .bind(source_id)
                .execute(self.pool())
                .await?;
            }
            FetchOutcome::NotModified { next_fetch_at } => {
                sqlx::query(
                    "UPDATE sources SET consecutive_failures = 0, next_fetch_at = $1, last_fetch_at = $2, \
                     last_success_at = $2, last_status = 'not_modified' WHERE id = $3",
                )
                .bind(*next_fetch_at)
                .bind(now)
                .bind(source_id)
                .execute(self.pool())
                .await?;
            }
            FetchOutcome::Failed { error, next_fetch_at } => {
                sqlx::query(
                    "UPDATE sources SET consecutive_failures = consecutive_failures + 1, next_fetch_at = $1, \
                     last_fetch_at = $2, last_error = $3, last_error_at = $2, last_status = 'failed' WHERE id = $4",
                )
                .bind(*next_fetch_at)
                .bind(now)
                .bind(error.clone())
                .bind(source_id)
                .execute(self.pool())
                .await?;
            }
        }
        Ok(())
    }

    /// Health of the named sources (all sources when `names` is empty), with article counts, in one query.
    pub async fn source_health(&self, names: &[String]) -> Result<Vec<SourceHealth>> {
        let rows = sqlx::query(
            "SELECT s.name, s.url, s.consecutive_failures, s.last_status, s.last_fetch_at, s.last_success_at, \
                    s.next_fetch_at, s.last_error, COALESCE(c.n, 0) AS articles \
             FROM sources s LEFT JOIN (SELECT source_id, COUNT(*) AS n FROM articles GROUP BY source_id) c \
               ON c.source_id = s.id ORDER BY s.name",
        )
        .fetch_all(self.pool())
        .await?;
        let mut out = Vec::new();
        for row in rows {
            let name: String = row.try_get("name")?;
            if !names.is_empty() && !names.contains(&name) {
                continue;
            }
            let failures: i64 = row.try_get("consecutive_failures")?;
            out.push(SourceHealth {
                name,
                url: row.try_get("url")?,
                articles: row.try_get("articles")?,
                consecutive_failures: failures,
                last_status: row.try_get("last_status")?,
                last_fetch_at: row.try_get("last_fetch_at")?,
                last_success_at: row.try_get("last_success_at")?,
                next_fetch_at: row.try_get("next_fetch_at")?,
                last_error: row.try_get("last_error")?,
                healthy: failures == 0,
            });
        }
        Ok(out)
    }
}
