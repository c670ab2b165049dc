//! Articles: batched inserts, set-based duplicate checks, full-text page state.

use std::collections::HashSet;

use serde::Serialize;

use super::{placeholders, PageStatus, Result, Store};

/// An article about to be stored.
#[derive(Debug, Clone, Serialize)]
pub struct NewArticle {
    pub url: String,
    pub source_id: i64,
    pub title: String,
    pub body: String,
    pub published_at: Option<i64>,
    pub fetched_at: i64,
    pub content_hash: String,
    pub language: Option<String>,
    /// feed | selectors | general
    pub extraction: String,
    pub page_status: PageStatus,
    pub page_attempts: i64,
    pub page_error: Option<String>,
    pub charset: Option<String>,
}

/// What [`Store::list_articles`] returns.
#[derive(Debug, Clone, Default)]
pub struct ArticleFilter {
    pub source: Option<String>,
    pub since_ms: Option<i64>,
    pub title_contains: Option<String>,
    pub before_id: Option<i64>,
    pub limit: i64,
}

/// A stored article (read with [`ARTICLE_COLUMNS`]).
#[derive(Debug, Clone, Serialize, PartialEq, sqlx::FromRow)]
pub struct ArticleRow {
    pub id: i64,
    pub url: String,
    pub source: String,
    pub title: String,
    pub body: String,
    pub published_at: Option<i64>,
    pub fetched_at: i64,
    pub content_hash: String,
    pub language: Option<String>,
    pub extraction: String,
    pub page_status: PageStatus,
    /// Why the article's page could not be fetched or read (last attempt), while `page_status` is pending/failed.
    pub page_error: Option<String>,
}

/// New content for an article whose page was fetched (or failed) after the feed item was stored.
#[derive(Debug, Clone)]
pub struct PageUpdate {
    pub id: i64,
    pub title: Option<String>,
    pub body: Option<String>,
    pub published_at: Option<i64>,
    pub content_hash: Option<String>,
    pub extraction: Option<String>,
    pub charset: Option<String>,
    /// ok | failed | pending (to try again later)
    pub page_status: PageStatus,
    pub page_error: Option<String>,
    /// The page was requested (counts toward `max_page_attempts`); false when the host asked us to wait.
    pub attempted: bool,
}

/// The filter for articles waiting for their page, written as the literal of the partial index
/// `articles_page_pending` (`WHERE page_status = 'pending'`): a bound parameter would keep the planner from using it.
pub(crate) const PENDING_PAGE: &str = "page_status = 'pending'";

/// SQLite's default limit on bound parameters is 32766; stay far below it.
const IN_CHUNK: usize = 500;

pub(crate) const ARTICLE_COLUMNS: &str = "a.id, a.url, s.name AS source, a.title, a.body, a.published_at, a.fetched_at, \
     a.content_hash, a.language, a.extraction, a.page_status, a.page_error";

impl Store {
    /// Which of these canonical URLs are already stored (one query per 500 URLs, not one per URL).
    pub async fn existing_urls(&self, urls: &[String]) -> Result<HashSet<String>> {
        self.existing_values("url", urls).await
    }

    /// Which of these content hashes are already stored.
    pub async fn existing_hashes(&self, hashes: &[String]) -> Result<HashSet<String>> {
        self.existing_values("content_hash", hashes).await
    }

    /// Stored articles holding any of these content hashes: (hash, id) pairs.
    pub async fn hash_owners(&self, hashes: &[String]) -> Result<Vec<(String, i64)>> {
        let mut out = Vec::new();
        for chunk in hashes.chunks(IN_CHUNK) {
            let sql = format!("SELECT content_hash, id FROM articles WHERE content_hash IN ({})", placeholders(1, chunk.len()));
            let mut q = sqlx::query_as::<_, (String, i64)>(&sql);
            for v in chunk {
                q = q.bind(v.as_str());
            }
            out.extend(q.fetch_all(self.pool()).await?);
        }
        Ok(out)
    }

    /// Deletes articles still waiting for their page (copies found once their page was read). Only pending rows
    /// are touched: those are never embedded or analysed, so nothing else refers to them.
    pub async fn delete_pending_articles(&self, ids: &[i64]) -> Result<u64> {
        let mut n = 0;
        for chunk in ids.chunks(IN_CHUNK) {
            let sql = format!("DELETE FROM articles WHERE page_status = $1 AND id IN ({})", placeholders(2, chunk.len()));
            let mut q = sqlx::query(&sql).bind(PageStatus::Pending);
            for id in chunk {
                q = q.bind(*id);
            }
            n += q.execute(self.pool()).await?.rows_affected();
        }
        Ok(n)
    }

    /// How many articles of a source still wait for their page.
    pub async fn count_pending_pages(&self, source_id: i64) -> Result<i64> {
        let sql = format!("SELECT COUNT(*) FROM articles WHERE {PENDING_PAGE} AND source_id = $1");
        Ok(sqlx::query_scalar(&sql).bind(source_id).fetch_one(self.pool()).await?)
    }

    /// How many articles of all sources still wait for their page.
    pub async fn count_all_pending_pages(&self) -> Result<i64> {
        Ok(sqlx::query_scalar(&format!("SELECT COUNT(*) FROM articles WHERE {PENDING_PAGE}")).fetch_one(self.pool()).await?)
    }

    async fn existing_values(&self, column: &str, values: &[String]) -> Result<HashSet<String>> {
        let mut found = HashSet::new();
        for chunk in values.chunks(IN_CHUNK) {
            let sql = format!(
                "SELECT {column} FROM articles WHERE {column} IN ({})",
                placeholders(1, chunk.len())
            );
            let mut q = sqlx::query_scalar::<_, String>(&sql);
            for v in chunk {
                q = q.bind(v.as_str());
            }
            found.extend(q.fetch_all(self.pool()).await?);
        }
        Ok(found)
    }

    /// Inserts a batch in one transaction; a URL stored meanwhile (another feed, another node) is skipped.
    /// Returns the ids of the rows actually inserted, in batch order.
    pub async fn insert_articles(&self, batch: &[NewArticle]) -> Result<Vec<i64>> {
        let mut ids = Vec::with_capacity(batch.len());
        if batch.is_empty() {
            return Ok(ids);
        }
        let mut tx = self.pool().begin().await?;
        for a in batch {
            let id = sqlx::query_scalar::<_, i64>(
                "INSERT INTO articles (url, source_id, title, body, published_at, fetched_at, content_hash, language, \
                   extraction, page_status, page_attempts, page_error, charset) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                 ON CONFLICT (url) DO NOTHING RETURNING id",
            )
            .bind(&a.url)
            .bind(a.source_id)
            .bind(&a.title)
            .bind(&a.body)
            .bind(a.published_at)
            .bind(a.fetched_at)
            .bind(&a.content_hash)
            .bind(a.language.clone())
            .bind(&a.extraction)
            .bind(a.page_status)
            .bind(a.page_attempts)
            .bind(a.page_error.clone())
            .bind(a.charset.clone())
            .fetch_optional(&mut *tx)
            .await?;
            ids.extend(id);
        }
        tx.commit().await?;
        Ok(ids)
    }

    /// Articles of a source whose full-text page is still to be fetched (oldest first).
    pub async fn pending_pages(&self, source_id: i64, limit: i64) -> Result<Vec<(i64, String, i64)>> {
        let sql = format!("SELECT id, url, page_attempts FROM articles WHERE {PENDING_PAGE} AND source_id = $1 ORDER BY id LIMIT $2");
        Ok(sqlx::query_as(&sql).bind(source_id).bind(limit).fetch_all(self.pool()).await?)
    }

    /// Applies page results in one transaction.
    pub async fn update_pages(&self, updates: &[PageUpdate]) -> Result<()> {
        if updates.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool().begin().await?;
        for u in updates {
            sqlx::query(
                "UPDATE articles SET title = COALESCE($1, title), body = COALESCE($2, body), \
                   published_at = COALESCE(published_at, $3), content_hash = COALESCE($4, content_hash), \
                   extraction = COALESCE($5, extraction), charset = COALESCE($6, charset), page_status = $7, \
                   page_error = $8, page_attempts = page_attempts + $9 WHERE id = $10",
            )
            .bind(u.title.clone())
            .bind(u.body.clone())
            .bind(u.published_at)
            .bind(u.content_hash.clone())
            .bind(u.extraction.clone())
            .bind(u.charset.clone())
            .bind(u.page_status)
            .bind(u.page_error.clone())
            .bind(i64::from(u.attempted))
            .bind(u.id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Articles by id (any order in, id order out).
    pub async fn articles_by_ids(&self, ids: &[i64]) -> Result<Vec<ArticleRow>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(IN_CHUNK) {
            let sql = format!(
                "SELECT {ARTICLE_COLUMNS} FROM articles a JOIN sources s ON s.id = a.source_id \
                 WHERE a.id IN ({}) ORDER BY a.id",
                placeholders(1, chunk.len())
            );
            let mut q = sqlx::query_as::<_, ArticleRow>(&sql);
            for id in chunk {
                q = q.bind(*id);
            }
            out.extend(q.fetch_all(self.pool()).await?);
        }
        out.sort_by_key(|a| a.id);
        Ok(out)
    }

    /// Articles newest first (by id), filtered by source name, a publication (or fetch) time lower bound and a
    /// case-insensitive title substring; `before_id` pages through older ones.
    pub async fn list_articles(&self, filter: &ArticleFilter) -> Result<Vec<ArticleRow>> {
        let mut sql = format!("SELECT {ARTICLE_COLUMNS} FROM articles a JOIN sources s ON s.id = a.source_id WHERE 1 = 1");
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        if filter.source.is_some() {
            sql.push_str(&format!(" AND s.name = {}", next()));
        }
        if filter.since_ms.is_some() {
            sql.push_str(&format!(" AND COALESCE(a.published_at, a.fetched_at) >= {}", next()));
        }
        if filter.title_contains.is_some() {
            sql.push_str(&format!(" AND LOWER(a.title) LIKE {} ESCAPE '\\'", next()));
        }
        if filter.before_id.is_some() {
            sql.push_str(&format!(" AND a.id < {}", next()));
        }
        sql.push_str(&format!(" ORDER BY a.id DESC LIMIT {}", next()));
        let mut q = sqlx::query_as::<_, ArticleRow>(&sql);
        if let Some(s) = &filter.source {
            q = q.bind(s.clone());
        }
        if let Some(t) = filter.since_ms {
            q = q.bind(t);
        }
        if let Some(text) = &filter.title_contains {
            let escaped = text.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
            q = q.bind(format!("%{escaped}%"));
        }
        if let Some(id) = filter.before_id {
            q = q.bind(id);
        }
        Ok(q.bind(filter.limit.max(1)).fetch_all(self.pool()).await?)
    }

    pub async fn article_by_url(&self, url: &str) -> Result<Option<ArticleRow>> {
        let sql = format!("SELECT {ARTICLE_COLUMNS} FROM articles a JOIN sources s ON s.id = a.source_id WHERE a.url = $1");
        Ok(sqlx::query_as(&sql).bind(url).fetch_optional(self.pool()).await?)
    }

    /// Articles published (or, without a date, fetched) in [from, to), newest first, optionally from some sources.
    pub async fn articles_in_window(&self, from_ms: i64, to_ms: i64, sources: &[String], limit: i64) -> Result<Vec<ArticleRow>> {
        let mut sql = format!(
            "SELECT {ARTICLE_COLUMNS} FROM articles a JOIN sources s ON s.id = a.source_id \
             WHERE COALESCE(a.published_at, a.fetched_at) >= $1 AND COALESCE(a.published_at, a.fetched_at) < $2"
        );
        if !sources.is_empty() {
            sql.push_str(&format!(" AND s.name IN ({})", placeholders(3, sources.len())));
        }
        sql.push_str(&format!(" ORDER BY COALESCE(a.published_at, a.fetched_at) DESC, a.id DESC LIMIT ${}", 3 + sources.len()));
        let mut q = sqlx::query_as(&sql).bind(from_ms).bind(to_ms);
        for s in sources {
            q = q.bind(s.as_str());
        }
        Ok(q.bind(limit).fetch_all(self.pool()).await?)
    }

    pub async fn count_articles(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM articles").fetch_one(self.pool()).await?)
    }
}
