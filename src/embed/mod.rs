//! Embedding tasks: `run_embed` (incremental: every article without a vector for the current model version) and
//! `run_reembed` (the same with a progress bar, for a new model version). Articles are claimed with a lease (so
//! nodes sharing a database embed disjoint articles), vectors are stored in the database first (one transaction per
//! chunk), then the index follows the stored changes, so an interrupted run loses nothing and redoes nothing.

pub mod model;

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::app::App;
use crate::compute::ComputeHandle;
use crate::store::{now_ms, PendingArticle};

/// What one embedding run did.
#[derive(Debug, Clone, Serialize)]
pub struct EmbedReport {
    /// The configured model version (the one new vectors are made for).
    pub model_version: String,
    /// The version serving searches after the run (equal to `model_version` unless a switch-over is unfinished).
    pub serving_version: String,
    pub embedded: u64,
    /// Per model version (two while a new model is embedded alongside the active one).
    pub versions: Vec<VersionReport>,
    /// Articles still without a vector for `model_version` (pending pages, articles stored during the run).
    pub pending: i64,
    pub index_size: usize,
    /// The run completed a new model version and searches switched to it.
    pub switched: bool,
    pub duration_ms: u64,
    pub articles_per_sec: f64,
    pub threads: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct VersionReport {
    pub version: String,
    pub embedded: u64,
}

/// The text embedded for an article: title, blank line, body. Cut (on a char boundary) well past what the model's
/// max tokens can cover, so a huge body is not tokenized in full; the tokenizer does the exact truncation.
pub fn article_text(title: &str, body: &str, max_tokens: usize) -> String {
    let budget = max_tokens.max(16) * 24;
    let mut text = String::with_capacity(title.len() + 2 + body.len().min(budget));
    text.push_str(title.trim());
    if !body.trim().is_empty() {
        text.push_str("\n\n");
        text.push_str(body.trim());
    }
    if text.len() > budget {
        let mut cut = budget;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

/// Cut-off (unix ms) below which articles are outside the retention window and not indexed.
pub fn retention_cutoff(app: &App) -> Option<i64> {
    app.config.index.retention.map(|r| now_ms() - r.as_millis() as i64)
}

/// Embeds every article that has no vector for the current model version (and, while a new model is being
/// introduced, for the serving version too), stores the vectors and adds them to the index.
pub async fn run_embed(app: &App) -> anyhow::Result<EmbedReport> {
    run(app, None).await
}

/// Re-embeds for the configured model version with a progress bar (bar, rate, ETA) on stderr and a final
/// throughput line, then switches searches over to it. Without `progress`, the same as `run_embed`.
pub async fn run_reembed(app: &App, progress: bool) -> anyhow::Result<EmbedReport> {
    if !progress {
        return run(app, None).await;
    }
    let h = app.compute().await?;
    let cutoff = retention_cutoff(app);
    let total = app.store.count_pending_embeddings(h.target_version(), cutoff).await?;
    let bar = indicatif::ProgressBar::new(total.max(0) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} articles  {per_sec}  ETA {eta}  {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(h.target_version().to_string());
    bar.enable_steady_tick(Duration::from_millis(500));
    let report = run(app, Some(&bar)).await;
    bar.finish_and_clear();
    let report = report?;
    eprintln!(
        "re-embedded {} articles in {:.1} s = {:.1} articles/s with {} thread(s) (model {}){}",
        report.embedded,
        report.duration_ms as f64 / 1000.0,
        report.articles_per_sec,
        report.threads,
        report.model_version,
        if report.switched { "; searches switched to the new model" } else { "" }
    );
    Ok(report)
}

async fn run(app: &App, bar: Option<&indicatif::ProgressBar>) -> anyhow::Result<EmbedReport> {
    let started = Instant::now();
    let h = app.compute().await?;
    let target = h.target_version().to_string();
    let mut versions = Vec::new();
    // Keep the serving index current while a new version is built; then the new version.
    if h.model_version() != target {
        let serving = h.model_version().to_string();
        let n = embed_version(app, &h, &serving, None).await?;
        versions.push(VersionReport { version: serving, embedded: n });
    }
    let n = embed_version(app, &h, &target, bar).await?;
    versions.push(VersionReport { version: target.clone(), embedded: n });
    h.save(false).await?;

    let cutoff = retention_cutoff(app);
    let pending = app.store.count_pending_embeddings(&target, cutoff).await?;
    let mut switched = false;
    let active = app.store.active_model().await?.map(|m| m.version);
    if pending == 0 && (h.model_version() != target || active.as_deref() != Some(target.as_str())) {
        // Complete: the database says so first (a crash after this restarts on the new version), then the worker.
        app.store.activate_model(&target).await?;
        if h.model_version() != target {
            h.activate(&target).await?;
        }
        let deleted = app.store.delete_other_embeddings(&target).await?;
        tracing::info!(version = %target, old_vectors_deleted = deleted, "switched to the new model version");
        switched = true;
    }
    let index_size = h.info().await?.into_iter().find(|e| e.serving).map(|e| e.vectors).unwrap_or(0);
    let embedded: u64 = versions.iter().map(|v| v.embedded).sum();
    crate::metrics::global().articles_embedded.inc_by(embedded);
    let secs = started.elapsed().as_secs_f64();
    Ok(EmbedReport {
        model_version: target,
        serving_version: h.model_version().to_string(),
        embedded,
        versions,
        pending,
        index_size,
        switched,
        duration_ms: (secs * 1000.0) as u64,
        articles_per_sec: if secs > 0.0 { embedded as f64 / secs } else { 0.0 },
        threads: h.thread_settings().budget,
    })
}

/// Embeds the pending articles of one version in chunks, keeping one chunk in flight in the worker while the
/// previous one is stored, so the worker does not wait for the database.
///
/// Each chunk is one database transaction. Chunks are sized by time, not only by count: the first is one inference
/// batch, the next ones as many articles as the measured rate embeds in `embed.commit_interval` (at most
/// `batch_size * 8`, at least one batch). So a process killed (or a job cancelled) mid-run has stored what it
/// computed up to about one interval before, and a crash loop of short lives still makes progress.
async fn embed_version(app: &App, h: &ComputeHandle, version: &str, bar: Option<&indicatif::ProgressBar>) -> anyhow::Result<u64> {
    let store = &app.store;
    let cutoff = retention_cutoff(app);
    let max_tokens = crate::embed::model::ModelSpec::from_config(&app.config).map(|s| s.max_tokens).unwrap_or(512);
    let batch = app.config.embed.batch_size.max(1);
    let max_chunk = (batch * 8).clamp(32, 1024).max(batch);
    let interval = app.config.embed.commit_interval.max(Duration::from_millis(1));
    let mut sizer = ChunkSizer::new(batch, max_chunk, interval);
    let lease_ms = app.config.cluster.lease.as_millis() as i64;
    let lease_kind = crate::store::embed_lease_kind(version);
    let mut after = 0i64;
    let mut done = 0u64;
    type InFlight = (Vec<PendingArticle>, tokio::task::JoinHandle<Result<Vec<Vec<f32>>, crate::compute::error::ComputeError>>);
    let mut in_flight: Option<InFlight> = None;
    loop {
        // Claimed with a lease: another node (or process) embedding at the same time takes other articles, and
        // a killed process's claim runs out for someone else to take.
        let rows = store
            .claim_pending_embeddings(version, after, cutoff, sizer.next() as i64, &app.node.holder, &app.node.id, lease_ms)
            .await?;
        let next = match rows.last() {
            Some(last) => {
                after = last.id;
                let texts: Vec<String> = rows.iter().map(|r| article_text(&r.title, &r.body, max_tokens)).collect();
                let (h2, v) = (h.clone(), version.to_string());
                Some((rows, tokio::spawn(async move { h2.embed_with(&v, texts).await })))
            }
            None => None,
        };
        if let Some((rows, job)) = in_flight.take() {
            let vectors = job.await??;
            sizer.done(rows.len());
            let items: Vec<(i64, String)> = rows.iter().map(|r| (r.id, r.content_hash.clone())).collect();
            store.store_embeddings(version, &items, &vectors).await?;
            let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
            store.release_leases(&lease_kind, &ids, &app.node.holder).await?;
            // Into the index the way every node's index gets them: from the stored change sequence.
            crate::compute::follow(h, store).await?;
            done += rows.len() as u64;
            if let Some(b) = bar {
                b.inc(rows.len() as u64);
            }
            tracing::debug!(version, articles = rows.len(), total = done, "embedded and indexed");
        }
        match next {
            Some(n) => in_flight = Some(n),
            None => break,
        }
    }
    Ok(done)
}

/// Sizes embedding requests so each takes about `interval` at the measured throughput.
#[derive(Debug)]
struct ChunkSizer {
    batch: usize,
    max: usize,
    interval: Duration,
    size: usize,
    last: Instant,
}

impl ChunkSizer {
    fn new(batch: usize, max: usize, interval: Duration) -> ChunkSizer {
        ChunkSizer { batch, max, interval, size: batch, last: Instant::now() }
    }

    fn next(&self) -> usize {
        self.size
    }

    /// A chunk of `n` articles came back: the time since the previous one is what the worker needed for it (one
    /// chunk is always queued behind the one being stored, so the worker is not idle in between).
    fn done(&mut self, n: usize) {
        let took = self.last.elapsed().max(Duration::from_millis(1));
        self.last = Instant::now();
        let rate = n as f64 / took.as_secs_f64();
        // Whole batches, so no inference runs a part-filled batch.
        let batches = (rate * self.interval.as_secs_f64() / self.batch as f64).round() as usize;
        self.size = (batches * self.batch).clamp(self.batch, self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_start_at_one_batch_and_follow_the_rate_within_bounds() {
        let mut s = ChunkSizer::new(8, 64, Duration::from_secs(1));
        assert_eq!(s.next(), 8, "the first request is one batch");
        // 8 articles in ~0 ms: fast, capped at the maximum.
        s.done(8);
        assert_eq!(s.next(), 64);
        // 64 articles in 2 s = 32/s: 32 per second.
        s.last = Instant::now() - Duration::from_secs(2);
        s.done(64);
        assert_eq!(s.next(), 32);
        // 8 articles in 10 s: slower than one batch per interval, still one batch.
        s.last = Instant::now() - Duration::from_secs(10);
        s.done(8);
        assert_eq!(s.next(), 8);
    }
}
