//! Embeddings: vectors per article and model version (the FAISS index's source of truth), model versions.

use std::collections::HashMap;

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{FromRow, Row};

use super::{now_ms, placeholders, PageStatus, Result, Store};

const IN_CHUNK: usize = 500;

/// An article still to embed for a model version.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PendingArticle {
    pub id: i64,
    pub title: String,
    pub body: String,
    pub content_hash: String,
}

/// A model version known to the database.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModelRow {
    pub version: String,
    pub dims: i64,
    pub model_dir: String,
    pub created_at: i64,
    pub activated_at: Option<i64>,
    pub active: bool,
}

/// `active` is a 0/1 integer in both schemas (the `Any` driver decodes no integer as `bool`): hence a hand-written
/// impl, not the derive.
impl<'r> FromRow<'r, AnyRow> for ModelRow {
    fn from_row(row: &'r AnyRow) -> sqlx::Result<Self> {
        Ok(ModelRow {
            version: row.try_get("version")?,
            dims: row.try_get("dims")?,
            model_dir: row.try_get("model_dir")?,
            created_at: row.try_get("created_at")?,
            activated_at: row.try_get("activated_at")?,
            active: row.try_get::<i64, _>("active")? != 0,
        })
    }
}

pub fn vector_to_bytes(v: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() * 4);
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

pub fn vector_from_bytes(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// The SQL condition selecting articles that need a vector for model version `$1` (and, with a retention cutoff,
/// are recent enough to be indexed at all).
fn pending_where(cutoff: bool) -> String {
    let mut w = format!(
        "FROM articles a LEFT JOIN embeddings e ON e.article_id = a.id AND e.model_version = $1 \
         WHERE a.page_status <> '{}' AND (e.article_id IS NULL OR e.content_hash <> a.content_hash)",
        PageStatus::Pending
    );
    if cutoff {
        w.push_str(" AND COALESCE(a.published_at, a.fetched_at) >= $2");
    }
    w
}

impl Store {
    /// Stored vectors of these articles for a model version (missing ids are absent from the map).
    pub async fn vectors(&self, ids: &[i64], model_version: &str) -> Result<HashMap<i64, Vec<f32>>> {
        let mut out = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(IN_CHUNK) {
            let sql = format!(
                "SELECT article_id, vector FROM embeddings WHERE model_version = $1 AND article_id IN ({})",
                placeholders(2, chunk.len())
            );
            let mut q = sqlx::query_as::<_, (i64, Vec<u8>)>(&sql).bind(model_version);
            for id in chunk {
                q = q.bind(*id);
            }
            out.extend(q.fetch_all(self.pool()).await?.into_iter().map(|(id, bytes)| (id, vector_from_bytes(&bytes))));
        }
        Ok(out)
    }

    pub async fn count_pending_embeddings(&self, model_version: &str, cutoff_ms: Option<i64>) -> Result<i64> {
        let sql = format!("SELECT COUNT(*) {}", pending_where(cutoff_ms.is_some()));
        let mut q = sqlx::query_scalar::<_, i64>(&sql).bind(model_version);
        if let Some(c) = cutoff_ms {
            q = q.bind(c);
        }
        Ok(q.fetch_one(self.pool()).await?)
    }

    /// Stores (or replaces) vectors in one transaction. `items` are (article id, content hash), parallel to `vectors`.
    pub async fn store_embeddings(&self, model_version: &str, items: &[(i64, String)], vectors: &[Vec<f32>]) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let mut tx = self.pool().begin().await?;
        for ((id, hash), v) in items.iter().zip(vectors) {
            sqlx::query(
                "INSERT INTO embeddings (article_id, model_version, content_hash, dims, vector, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (article_id, model_version) DO UPDATE SET content_hash = excluded.content_hash, \
                   dims = excluded.dims, vector = excluded.vector, created_at = excluded.created_at",
            )
            .bind(*id)
            .bind(model_version)
            .bind(hash.as_str())
            .bind(v.len() as i64)
            .bind(vector_to_bytes(v))
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Ids with a vector for this model version, ascending.
    pub async fn embedding_ids(&self, model_version: &str) -> Result<Vec<i64>> {
        Ok(sqlx::query_scalar("SELECT article_id FROM embeddings WHERE model_version = $1 ORDER BY article_id")
            .bind(model_version)
            .fetch_all(self.pool())
            .await?)
    }

    /// A page of stored vectors (id order, ids above `after_id`), for rebuilding an index.
    pub async fn embedding_page(&self, model_version: &str, after_id: i64, limit: i64) -> Result<Vec<(i64, Vec<f32>)>> {
        let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
            "SELECT article_id, vector FROM embeddings WHERE model_version = $1 AND article_id > $2 \
             ORDER BY article_id LIMIT $3",
        )
        .bind(model_version)
        .bind(after_id)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(|(id, bytes)| (id, vector_from_bytes(&bytes))).collect())
    }

    pub async fn count_embeddings(&self, model_version: &str) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM embeddings WHERE model_version = $1")
            .bind(model_version)
            .fetch_one(self.pool())
            .await?)
    }

    pub async fn embedding_models(&self) -> Result<Vec<ModelRow>> {
        Ok(sqlx::query_as(
            "SELECT version, dims, model_dir, created_at, activated_at, active FROM embedding_models ORDER BY created_at",
        )
        .fetch_all(self.pool())
        .await?)
    }

    pub async fn active_model(&self) -> Result<Option<ModelRow>> {
        Ok(self.embedding_models().await?.into_iter().find(|m| m.active))
    }

    /// Records a model version (no-op when known).
    pub async fn register_model(&self, version: &str, dims: usize, model_dir: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO embedding_models (version, dims, model_dir, created_at, active) VALUES ($1, $2, $3, $4, 0) \
             ON CONFLICT (version) DO UPDATE SET model_dir = excluded.model_dir",
        )
        .bind(version)
        .bind(dims as i64)
        .bind(model_dir)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Makes `version` the active model (and only it).
    pub async fn activate_model(&self, version: &str) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("UPDATE embedding_models SET active = 0 WHERE version <> $1").bind(version).execute(&mut *tx).await?;
        sqlx::query("UPDATE embedding_models SET active = 1, activated_at = $2 WHERE version = $1")
            .bind(version)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes the vectors of every other model version; returns how many.
    pub async fn delete_other_embeddings(&self, keep_version: &str) -> Result<u64> {
        let r = sqlx::query("DELETE FROM embeddings WHERE model_version <> $1").bind(keep_version).execute(self.pool()).await?;
        Ok(r.rows_affected())
    }

    /// Articles (with a vector of any version) older than the cutoff.
    pub async fn embedded_ids_before(&self, cutoff_ms: i64) -> Result<Vec<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT a.id FROM articles a JOIN embeddings e ON e.article_id = a.id \
             WHERE COALESCE(a.published_at, a.fetched_at) < $1 ORDER BY a.id",
        )
        .bind(cutoff_ms)
        .fetch_all(self.pool())
        .await?)
    }

    /// Articles older than the cutoff (whether embedded or not).
    pub async fn article_ids_before(&self, cutoff_ms: i64) -> Result<Vec<i64>> {
        Ok(sqlx::query_scalar("SELECT id FROM articles WHERE COALESCE(published_at, fetched_at) < $1 ORDER BY id")
            .bind(cutoff_ms)
            .fetch_all(self.pool())
            .await?)
    }

    /// Deletes the vectors (all versions) of these articles; returns rows deleted.
    pub async fn delete_embeddings(&self, ids: &[i64]) -> Result<u64> {
        let mut n = 0;
        let mut tx = self.pool().begin().await?;
        for chunk in ids.chunks(IN_CHUNK) {
            let sql = format!("DELETE FROM embeddings WHERE article_id IN ({})", placeholders(1, chunk.len()));
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(*id);
            }
            n += q.execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(n)
    }

    /// Deletes articles (and, by cascade, their vectors); returns rows deleted.
    pub async fn delete_articles(&self, ids: &[i64]) -> Result<u64> {
        let mut n = 0;
        let mut tx = self.pool().begin().await?;
        for chunk in ids.chunks(IN_CHUNK) {
            let list = placeholders(1, chunk.len());
            let sql = format!("DELETE FROM embeddings WHERE article_id IN ({list})");
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(*id);
            }
            q.execute(&mut *tx).await?;
            let sql = format!("DELETE FROM articles WHERE id IN ({list})");
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(*id);
            }
            n += q.execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(n)
    }
}
