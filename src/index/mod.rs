//! The FAISS index as tasks: search (with article details), prune (retention), reindex (rebuild from the stored
//! vectors) and the summary `newsd status` shows. The index itself lives in the compute worker (see `compute`).

pub mod owner;
pub mod sq8scan;
pub mod vector;

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::app::App;
use crate::compute::ComputeHandle;
use crate::embed::model::ModelSpec;
use crate::store::now_ms;
use vector::SearchFilter;

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SearchResult {
    pub article_id: i64,
    pub score: f32,
    pub title: String,
    pub source: String,
    /// Publication time (unix ms), or the fetch time when the article has no date.
    pub published_at: i64,
    pub url: String,
}

impl SearchResult {
    fn new(hit: &vector::Hit, a: &crate::store::ArticleRow) -> SearchResult {
        SearchResult {
            article_id: a.id,
            score: hit.score,
            title: a.title.clone(),
            source: a.source.clone(),
            published_at: a.published_at.unwrap_or(a.fetched_at),
            url: a.url.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SearchReport {
    pub query: String,
    pub model_version: String,
    pub k: usize,
    pub since_ms: Option<i64>,
    pub took_ms: f64,
    /// Vectors in the serving index when the search ran.
    pub index_size: usize,
    pub results: Vec<SearchResult>,
}

/// What to search for: [`search_with`].
#[derive(Debug, Clone, Default)]
pub struct SearchParams {
    pub query: String,
    pub k: usize,
    /// Only articles published (or, undated, fetched) at or after this time (unix ms).
    pub since_ms: Option<i64>,
    /// Only articles of this source.
    pub source: Option<String>,
    /// Fail with `ComputeError::Busy` instead of waiting when the compute worker's queue is full (the HTTP API).
    pub no_wait: bool,
}

/// Top-k articles for a free-text query, optionally only those published in the last `since`.
pub async fn search(app: &App, query: &str, k: usize, since: Option<Duration>) -> anyhow::Result<SearchReport> {
    let since_ms = since.map(|d| now_ms() - d.as_millis() as i64);
    search_with(app, &SearchParams { query: query.to_string(), k, since_ms, ..Default::default() }).await
}

/// Top-k articles for a free-text query with filters (the query's vector through the compute worker's queue).
pub async fn search_with(app: &App, p: &SearchParams) -> anyhow::Result<SearchReport> {
    let started = Instant::now();
    let (query, k, since_ms) = (p.query.as_str(), p.k, p.since_ms);
    let h = app.compute().await?;
    let vector = if p.no_wait { h.try_embed_query(query).await? } else { h.embed_query(query).await? };
    let size = h.serving_vectors();
    let filtered = since_ms.is_some() || p.source.is_some();
    let mut fetch = if filtered { k.saturating_mul(4) } else { k };
    let results = loop {
        let hits = h.search(vector.clone(), fetch.max(1), SearchFilter::default()).await?;
        let ids: Vec<i64> = hits.iter().map(|h| h.article_id).collect();
        let articles = app.store.articles_by_ids(&ids).await?;
        let by_id: std::collections::HashMap<i64, _> = articles.into_iter().map(|a| (a.id, a)).collect();
        let mut out = Vec::new();
        for hit in &hits {
            let Some(a) = by_id.get(&hit.article_id) else { continue };
            let date = a.published_at.unwrap_or(a.fetched_at);
            if since_ms.is_some_and(|s| date < s) || p.source.as_ref().is_some_and(|s| *s != a.source) {
                continue;
            }
            out.push(SearchResult::new(hit, a));
            if out.len() == k {
                break;
            }
        }
        if out.len() >= k || hits.len() < fetch || fetch >= size {
            break out;
        }
        fetch = fetch.saturating_mul(4).min(size.max(1));
    };
    Ok(SearchReport {
        query: query.to_string(),
        model_version: h.model_version().to_string(),
        k,
        since_ms,
        took_ms: started.elapsed().as_secs_f64() * 1000.0,
        index_size: size,
        results,
    })
}

/// The `k` articles nearest to a stored article (its own vector, through the compute worker without waiting for
/// room in its queue); empty when the article has no vector for the serving model.
pub async fn similar_to(app: &App, article_id: i64, k: usize) -> anyhow::Result<Vec<SearchResult>> {
    let h = app.compute().await?;
    let version = h.model_version();
    let mut vectors = app.store.vectors(&[article_id], &version).await?;
    let Some(vector) = vectors.remove(&article_id) else { return Ok(Vec::new()) };
    let hits = h.try_search(vector, k, SearchFilter { exclude: vec![article_id] }).await?;
    let ids: Vec<i64> = hits.iter().map(|h| h.article_id).collect();
    let by_id: std::collections::HashMap<i64, _> = app.store.articles_by_ids(&ids).await?.into_iter().map(|a| (a.id, a)).collect();
    Ok(hits.iter().filter_map(|hit| by_id.get(&hit.article_id).map(|a| SearchResult::new(hit, a))).collect())
}

#[derive(Debug, Clone, Serialize)]
pub struct PruneReport {
    /// None: no `index.retention` configured, nothing done.
    pub retention_secs: Option<u64>,
    pub cutoff_ms: Option<i64>,
    pub removed_from_index: usize,
    pub vectors_deleted: u64,
    pub articles_deleted: u64,
    pub index_size: usize,
    /// hnsw: the index was rebuilt to drop its tombstones (`index.rebuild_tombstone_ratio`).
    pub rebuilt: bool,
    pub duration_ms: u64,
}

/// Removes articles older than `index.retention` from the index (and their stored vectors, so they are not indexed
/// again); with `index.prune_database` also deletes the articles themselves.
pub async fn run_prune(app: &App) -> anyhow::Result<PruneReport> {
    let started = Instant::now();
    let Some(retention) = app.config.index.retention else {
        return Ok(PruneReport {
            retention_secs: None,
            cutoff_ms: None,
            removed_from_index: 0,
            vectors_deleted: 0,
            articles_deleted: 0,
            index_size: 0,
            rebuilt: false,
            duration_ms: 0,
        });
    };
    let cutoff = now_ms() - retention.as_millis() as i64;
    let h = app.compute().await?;
    let ids = app.store.embedded_ids_before(cutoff).await?;
    let removed = if ids.is_empty() { 0 } else { h.remove(None, ids.clone()).await? };
    let (vectors_deleted, articles_deleted) = if app.config.index.prune_database {
        let old = app.store.article_ids_before(cutoff).await?;
        (ids.len() as u64, app.store.delete_articles(&old).await?)
    } else {
        (app.store.delete_embeddings(&ids).await?, 0)
    };
    let rebuilt = rebuild_if_tombstoned(app, &h).await?;
    h.save(false).await?;
    let index_size = h.info().await?.into_iter().find(|e| e.serving).map(|e| e.vectors).unwrap_or(0);
    tracing::info!(removed, vectors_deleted, articles_deleted, index_size, rebuilt, "pruned articles older than the retention");
    Ok(PruneReport {
        retention_secs: Some(retention.as_secs()),
        cutoff_ms: Some(cutoff),
        removed_from_index: removed,
        vectors_deleted,
        articles_deleted,
        index_size,
        rebuilt,
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

/// HNSW cannot delete: removed vectors stay in the file as tombstones, costing memory and search time. Past
/// `index.rebuild_tombstone_ratio`, rebuilds from the stored vectors (which no longer hold the removed ones). Called
/// after a prune, and by every node after following deletions another node made. Returns whether it rebuilt.
pub async fn rebuild_if_tombstoned(app: &App, h: &ComputeHandle) -> anyhow::Result<bool> {
    let mut rebuilt = false;
    for e in h.info().await? {
        let share = e.tombstones as f64 / (e.vectors + e.tombstones).max(1) as f64;
        if e.tombstones > 0 && share > app.config.index.rebuild_tombstone_ratio {
            let why = format!("{} of {} vectors removed", e.tombstones, e.vectors + e.tombstones);
            rebuild(app, h, &e.version, why).await?;
            rebuilt = true;
        }
    }
    Ok(rebuilt)
}

#[derive(Debug, Clone, Serialize)]
pub struct ReindexReport {
    pub versions: Vec<ReindexedVersion>,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReindexedVersion {
    pub version: String,
    pub kind: vector::IndexKind,
    pub vectors: usize,
}

/// Empties one version's index and refills it from the stored vectors (logged with `why`).
async fn rebuild(app: &App, h: &ComputeHandle, version: &str, why: String) -> anyhow::Result<()> {
    h.reset(version).await?;
    crate::compute::reconcile(h, &app.store, version, Some(why)).await
}

/// Rebuilds every index from the stored vectors (drops hnsw tombstones, applies a changed index kind).
pub async fn run_reindex(app: &App) -> anyhow::Result<ReindexReport> {
    let started = Instant::now();
    let h = app.compute().await?;
    let mut versions = Vec::new();
    for e in h.info().await? {
        rebuild(app, &h, &e.version, "reindex requested".into()).await?;
    }
    for e in h.info().await? {
        versions.push(ReindexedVersion { version: e.version, kind: e.kind, vectors: e.vectors });
    }
    Ok(ReindexReport { versions, duration_ms: started.elapsed().as_millis() as u64 })
}

/// Index state for `newsd status` (does not start the compute worker).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IndexSummary {
    /// The version serving searches.
    pub model_version: Option<String>,
    /// The configured version, when it differs (a new model being embedded).
    pub target_version: Option<String>,
    pub kind: String,
    /// Vectors in the index (from the live worker, else from the saved manifest).
    pub index_size: Option<u64>,
    pub stored_vectors: i64,
    /// Articles without a vector for the configured model version.
    pub pending_embeddings: Option<i64>,
    pub index_dir: String,
    pub saved_at: Option<i64>,
    pub worker_running: bool,
    /// Why the configured model cannot be used, if it cannot.
    pub model_error: Option<String>,
}

pub async fn summary(app: &App) -> anyhow::Result<IndexSummary> {
    let store = &app.store;
    let active = store.active_model().await?.map(|m| m.version);
    let (target, model_error) = match ModelSpec::from_config(&app.config) {
        Ok(mut s) => {
            s.adopt_legacy_version(active.as_deref());
            (Some(s.version), None)
        }
        Err(e) => (app.config.embed.model_version.clone(), Some(e.to_string())),
    };
    let serving = active.clone().or_else(|| target.clone());
    let index_dir = app.config.index_dir();
    let manifest = serving.as_deref().and_then(|v| vector::read_manifest(&vector::version_dir(&index_dir, v)));
    let mut index_size = manifest.as_ref().map(|m| m.count);
    let mut worker_running = false;
    if let Some(h) = app.compute_if_started() {
        if let Ok(info) = h.info().await {
            worker_running = true;
            index_size = info.iter().find(|e| e.serving).map(|e| e.vectors as u64);
        }
    }
    let stored_vectors = match &serving {
        Some(v) => store.count_embeddings(v).await?,
        None => 0,
    };
    let pending_embeddings = match &target {
        Some(v) => Some(store.count_pending_embeddings(v, crate::embed::retention_cutoff(app)).await?),
        None => None,
    };
    Ok(IndexSummary {
        target_version: target.filter(|t| Some(t) != serving.as_ref()),
        model_version: serving,
        kind: app.config.index.kind.clone(),
        index_size,
        stored_vectors,
        pending_embeddings,
        index_dir: index_dir.display().to_string(),
        saved_at: manifest.map(|m| m.saved_at),
        worker_running,
        model_error,
    })
}
