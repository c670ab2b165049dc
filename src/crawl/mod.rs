//! The crawl stage: feeds in, articles out, politely.
//!
//! A pass fetches every due source concurrently (a failing or slow source only costs its own task), stores new
//! items in batches, and records per-source state (validators, failures, back-off). Feed validators are
//! recorded only after the feed's items are stored, so a crash mid-pass never turns into a 304 that hides items.
//! Full-text pages that fail are stored with the feed's text and marked pending; later passes retry them.

pub mod canon;
pub mod extract;
pub mod feed;
pub mod fetch;
pub mod retry;
pub mod text;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::config::{Config, SourceConfig};
use crate::store::{now_ms, FetchOutcome, NewArticle, PageUpdate, SourceState, Store};
pub use extract::{extract, Extracted};
pub use fetch::{FetchError, Fetched, Fetcher, Validators};

#[derive(Debug, Clone, Default)]
pub struct CrawlOptions {
    /// Only these sources (all enabled sources when empty).
    pub sources: Vec<String>,
    /// Fetch even when a source is backing off or inside its minimum interval.
    pub force: bool,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SourceStatus {
    /// The feed was fetched and parsed.
    Fetched,
    /// 304 Not Modified.
    NotModified,
    /// Fetch or parse failed (see `error`).
    Failed,
    /// Not fetched: backing off (failures, Retry-After) or inside `min_interval` until `next_fetch_at`.
    Deferred,
}

/// One source's result in a crawl pass (part of the stable `--json` output).
#[derive(Debug, Clone, Serialize)]
pub struct SourceReport {
    pub name: String,
    pub status: SourceStatus,
    /// Items in the feed (after `max_items_per_feed`).
    pub items: usize,
    /// Articles stored by this pass.
    pub new: usize,
    /// Items already stored (same canonical URL or same content).
    pub duplicate: usize,
    pub pages_fetched: usize,
    pub pages_failed: usize,
    /// Pages from earlier passes retried in this one.
    pub pages_retried: usize,
    /// Feed items without a usable link.
    pub skipped_items: usize,
    /// What was repaired in a malformed feed that still parsed.
    pub recovered: Option<String>,
    pub error: Option<String>,
    /// RFC 3339 time before which the source will not be fetched again (deferred/failed).
    pub next_fetch_at: Option<String>,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CrawlTotals {
    pub sources: usize,
    pub fetched: usize,
    pub not_modified: usize,
    pub failed: usize,
    pub deferred: usize,
    pub items: usize,
    pub new: usize,
    pub duplicate: usize,
    pub pages_failed: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct CrawlReport {
    pub sources: Vec<SourceReport>,
    pub totals: CrawlTotals,
    pub duration_ms: u64,
}

impl SourceReport {
    fn new(name: &str, status: SourceStatus) -> SourceReport {
        SourceReport {
            name: name.to_string(),
            status,
            items: 0,
            new: 0,
            duplicate: 0,
            pages_fetched: 0,
            pages_failed: 0,
            pages_retried: 0,
            skipped_items: 0,
            recovered: None,
            error: None,
            next_fetch_at: None,
            duration_ms: 0,
        }
    }
}

/// What a crawl pass needs; cheap to clone.
#[derive(Clone)]
pub struct Crawler {
    config: Arc<Config>,
    store: Store,
    fetcher: Fetcher,
    /// Bounds CPU-bound extraction to the machine's cores.
    extract_slots: Arc<Semaphore>,
}

impl Crawler {
    pub fn new(config: Arc<Config>, store: Store) -> anyhow::Result<Crawler> {
        let fetcher = Fetcher::new(&config.crawl)?;
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        Ok(Crawler { config, store, fetcher, extract_slots: Arc::new(Semaphore::new(cores)) })
    }

    pub fn fetcher(&self) -> &Fetcher {
        &self.fetcher
    }

    /// One pass over the selected sources.
    pub async fn crawl(&self, opts: &CrawlOptions) -> anyhow::Result<CrawlReport> {
        let started = Instant::now();
        for name in &opts.sources {
            if self.config.source(name).is_none() {
                anyhow::bail!("unknown source {name:?} (not in {})", self.config.path.display());
            }
        }
        let selected: Vec<SourceConfig> = self
            .config
            .sources
            .iter()
            .filter(|s| if opts.sources.is_empty() { s.enabled } else { opts.sources.contains(&s.name) })
            .cloned()
            .collect();
        let states = self.store.sync_sources(&self.config.sources).await?;
        let parallel = self.config.crawl.concurrency.max(1);
        let mut reports: Vec<SourceReport> = futures::stream::iter(selected.into_iter().map(|src| {
            let state = states.get(&src.name).cloned().unwrap_or_default();
            let span = tracing::info_span!("crawl", source = %src.name);
            let this = self.clone();
            let force = opts.force;
            async move {
                let t = Instant::now();
                let mut r = this.crawl_source(&src, &state, force).await;
                r.duration_ms = t.elapsed().as_millis() as u64;
                match r.status {
                    SourceStatus::Failed => tracing::warn!(error = r.error.as_deref().unwrap_or(""), "source failed"),
                    _ => tracing::info!(status = ?r.status, items = r.items, new = r.new, duplicate = r.duplicate, pages_failed = r.pages_failed, ms = r.duration_ms, "source done"),
                }
                r
            }
            .instrument(span)
        }))
        .buffer_unordered(parallel)
        .collect()
        .await;
        reports.sort_by(|a, b| a.name.cmp(&b.name));
        let mut totals = CrawlTotals { sources: reports.len(), ..Default::default() };
        for r in &reports {
            match r.status {
                SourceStatus::Fetched => totals.fetched += 1,
                SourceStatus::NotModified => totals.not_modified += 1,
                SourceStatus::Failed => totals.failed += 1,
                SourceStatus::Deferred => totals.deferred += 1,
            }
            totals.items += r.items;
            totals.new += r.new;
            totals.duplicate += r.duplicate;
            totals.pages_failed += r.pages_failed;
        }
        Ok(CrawlReport { sources: reports, totals, duration_ms: started.elapsed().as_millis() as u64 })
    }

    async fn crawl_source(&self, src: &SourceConfig, state: &SourceState, force: bool) -> SourceReport {
        let now = now_ms();
        if !force && state.next_fetch_at > now {
            let mut r = SourceReport::new(&src.name, SourceStatus::Deferred);
            r.next_fetch_at = Some(rfc3339(state.next_fetch_at));
            r.error = state.last_error.clone().filter(|_| state.consecutive_failures > 0);
            return r;
        }
        // Pages that failed in earlier passes first, so a page that fails in this pass waits for the next one.
        let mut retried = SourceReport::new(&src.name, SourceStatus::Fetched);
        if src.full_text {
            if let Err(e) = self.retry_pending_pages(src, state.id, &mut retried).await {
                tracing::warn!(error = %e, "retrying pending pages failed");
            }
        }
        let retried = retried.pages_retried;
        let next_ok = now + src.min_interval.map(|d| d.as_millis() as i64).unwrap_or(0);
        let validators = Validators { etag: state.etag.clone(), last_modified: state.last_modified.clone() };
        let result = self.fetcher.fetch(&src.url, Some(&validators)).await;
        let mut report = match result {
            Ok(Fetched::NotModified) => {
                self.record(state.id, FetchOutcome::NotModified { next_fetch_at: next_ok }).await;
                SourceReport::new(&src.name, SourceStatus::NotModified)
            }
            Ok(Fetched::Body(page)) => match feed::parse_feed_with(&page.body, page.content_type.as_deref(), &src.url, &feed::FeedOptions { max_items: self.config.crawl.max_items_per_feed }) {
                Ok(parsed) => {
                    let mut r = SourceReport::new(&src.name, SourceStatus::Fetched);
                    match self.store_items(src, state.id, parsed, &mut r).await {
                        Ok(()) => {
                            let v = page.validators;
                            self.record(state.id, FetchOutcome::Fetched { etag: v.etag, last_modified: v.last_modified, next_fetch_at: next_ok }).await;
                        }
                        Err(e) => {
                            // Storing failed (database down, disk full): keep the old validators so the next
                            // pass fetches the whole feed again and nothing is lost.
                            r.status = SourceStatus::Failed;
                            r.error = Some(format!("{}: storing items: {e:#}", src.url));
                            let next = now + retry::backoff(state.consecutive_failures as u32 + 1, self.config.crawl.backoff_base, self.config.crawl.backoff_max).as_millis() as i64;
                            self.record(state.id, FetchOutcome::Failed { error: r.error.clone().unwrap_or_default(), next_fetch_at: next }).await;
                        }
                    }
                    r
                }
                Err(e) => self.fail(src, state, e.to_string(), &FetchError::Other(String::new())).await,
            },
            Err(FetchError::HostBackoff { wait, .. }) => {
                // Not requested: another request to this host got a Retry-After. Not this source's failure, so its
                // health and back-off are left alone; the next pass after the wait fetches it.
                let mut r = SourceReport::new(&src.name, SourceStatus::Deferred);
                r.next_fetch_at = Some(rfc3339(now + wait.as_millis() as i64));
                r.error = Some(format!("{}: the host asked to wait (Retry-After) after another request", src.url));
                r
            }
            Err(e) => self.fail(src, state, e.to_string(), &e).await,
        };
        report.pages_retried = retried;
        report
    }

    async fn fail(&self, src: &SourceConfig, state: &SourceState, error: String, cause: &FetchError) -> SourceReport {
        let c = &self.config.crawl;
        let failures = state.consecutive_failures as u32 + 1;
        let delay = retry::delay_for(cause, failures, c.backoff_base, c.backoff_max, c.retry_after_max);
        let next = now_ms() + delay.as_millis() as i64;
        self.record(state.id, FetchOutcome::Failed { error: error.clone(), next_fetch_at: next }).await;
        let mut r = SourceReport::new(&src.name, SourceStatus::Failed);
        r.error = Some(error);
        r.next_fetch_at = Some(rfc3339(next));
        r
    }

    async fn record(&self, source_id: i64, outcome: FetchOutcome) {
        if let Err(e) = self.store.record_fetch(source_id, &outcome).await {
            tracing::error!(error = %e, "recording source state failed");
        }
    }

    async fn store_items(&self, src: &SourceConfig, source_id: i64, parsed: feed::ParsedFeed, r: &mut SourceReport) -> anyhow::Result<()> {
        let c = &self.config.crawl;
        r.recovered = parsed.recovered.clone();
        r.skipped_items = parsed.skipped_items;
        if let Some(what) = &parsed.recovered {
            tracing::warn!(url = %src.url, "{what}");
        }
        let language = src.language.clone().or(parsed.language.clone());
        // Canonical URLs, first occurrence wins within the feed.
        let mut seen = HashSet::new();
        let mut items = Vec::new();
        for item in parsed.items.into_iter().take(c.max_items_per_feed) {
            r.items += 1;
            match canon::canonicalize(&item.link, &c.tracking_params) {
                Ok(url) if seen.insert(url.clone()) => items.push((url, item)),
                Ok(_) => r.duplicate += 1,
                Err(_) => r.skipped_items += 1,
            }
        }
        let urls: Vec<String> = items.iter().map(|(u, _)| u.clone()).collect();
        let existing = self.store.existing_urls(&urls).await?;
        let fresh: Vec<_> = items.into_iter().filter(|(u, _)| !existing.contains(u)).collect();
        r.duplicate += urls.len() - fresh.len();
        let total = fresh.len();
        for chunk in fresh.chunks(c.batch_size) {
            let articles = self.build_articles(src, source_id, language.clone(), chunk, r).await;
            // Same text under another URL (syndicated copies) is a duplicate too.
            let hashes: Vec<String> = articles.iter().map(|a| a.content_hash.clone()).collect();
            let known = self.store.existing_hashes(&hashes).await?;
            let mut batch_hashes = HashSet::new();
            let batch: Vec<NewArticle> = articles
                .into_iter()
                .filter(|a| !known.contains(&a.content_hash) && batch_hashes.insert(a.content_hash.clone()))
                .collect();
            let ids = self.store.insert_articles(&batch).await?;
            r.new += ids.len();
            r.duplicate += chunk.len() - ids.len();
            if total > c.batch_size {
                tracing::info!(done = r.new + r.duplicate, total, "crawl progress");
            }
        }
        Ok(())
    }

    async fn build_articles(&self, src: &SourceConfig, source_id: i64, language: Option<String>, chunk: &[(String, feed::FeedItem)], r: &mut SourceReport) -> Vec<NewArticle> {
        let fetched_at = now_ms();
        let pages: Vec<Option<Result<Extracted, PageFailure>>> = if src.full_text {
            futures::stream::iter(chunk.iter().map(|(url, _)| self.fetch_page(url, src)))
                .buffered(self.config.crawl.concurrency.max(1))
                .map(Some)
                .collect()
                .await
        } else {
            vec![None; chunk.len()]
        };
        let max_attempts = self.config.crawl.max_page_attempts as i64;
        chunk
            .iter()
            .zip(pages)
            .map(|((url, item), page)| {
                let mut a = NewArticle {
                    url: url.clone(),
                    source_id,
                    title: item.title.clone(),
                    body: item.text.clone(),
                    published_at: item.published.map(|d| d.timestamp_millis()),
                    fetched_at,
                    content_hash: String::new(),
                    language: language.clone(),
                    extraction: "feed".into(),
                    page_status: "none".into(),
                    page_attempts: 0,
                    page_error: None,
                    charset: None,
                };
                match page {
                    None => {}
                    Some(Ok(e)) => {
                        r.pages_fetched += 1;
                        apply_extracted(&mut a.title, &mut a.body, &mut a.published_at, &e);
                        a.extraction = e.method.into();
                        a.charset = Some(e.charset.into());
                        a.page_status = "ok".into();
                        a.page_attempts = 1;
                    }
                    Some(Err(failure)) => {
                        r.pages_failed += 1;
                        let error = failure.message;
                        tracing::warn!(%url, %error, "page failed; feed text kept");
                        a.page_attempts = i64::from(failure.attempted);
                        a.page_status = if a.page_attempts < max_attempts { "pending".into() } else { "failed".into() };
                        a.page_error = Some(error);
                    }
                }
                a.content_hash = content_hash(&a.title, &a.body);
                a
            })
            .collect()
    }

    async fn fetch_page(&self, url: &str, src: &SourceConfig) -> Result<Extracted, PageFailure> {
        let page = match self.fetcher.fetch(url, None).await {
            Ok(Fetched::Body(p)) => p,
            Ok(Fetched::NotModified) => return Err(PageFailure::attempted(format!("{url}: unexpected 304"))),
            Err(e @ FetchError::HostBackoff { .. }) => return Err(PageFailure { message: e.to_string(), attempted: false }),
            Err(e) => return Err(PageFailure::attempted(e.to_string())),
        };
        let _slot = self.extract_slots.acquire().await.map_err(|e| PageFailure::attempted(e.to_string()))?;
        let selectors = src.selectors.clone();
        let final_url = page.final_url.clone();
        tokio::task::spawn_blocking(move || {
            extract(&page.body, page.content_type.as_deref(), &final_url, selectors.as_ref()).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| format!("{url}: extraction panicked: {e}"))
        .and_then(|r| r)
        .map_err(PageFailure::attempted)
    }

    async fn retry_pending_pages(&self, src: &SourceConfig, source_id: i64, r: &mut SourceReport) -> anyhow::Result<()> {
        let pending = self.store.pending_pages(source_id, self.config.crawl.batch_size as i64).await?;
        if pending.is_empty() {
            return Ok(());
        }
        let max_attempts = self.config.crawl.max_page_attempts as i64;
        let results: Vec<_> = futures::stream::iter(pending.iter().map(|(_, url, _)| self.fetch_page(url, src)))
            .buffered(self.config.crawl.concurrency.max(1))
            .collect()
            .await;
        let ids: Vec<i64> = pending.iter().map(|p| p.0).collect();
        let current = self.store.articles_by_ids(&ids).await?;
        let mut updates = Vec::new();
        for ((id, url, attempts), result) in pending.into_iter().zip(results) {
            r.pages_retried += 1;
            let Some(cur) = current.iter().find(|a| a.id == id) else { continue };
            updates.push(match result {
                Ok(e) => {
                    let (mut title, mut body, mut published) = (cur.title.clone(), cur.body.clone(), cur.published_at);
                    apply_extracted(&mut title, &mut body, &mut published, &e);
                    PageUpdate {
                        id,
                        content_hash: Some(content_hash(&title, &body)),
                        title: Some(title),
                        body: Some(body),
                        published_at: published,
                        extraction: Some(e.method.into()),
                        charset: Some(e.charset.into()),
                        page_status: "ok".into(),
                        page_error: None,
                        attempted: true,
                    }
                }
                Err(PageFailure { message: error, attempted }) => {
                    let attempts = attempts + i64::from(attempted);
                    tracing::warn!(%url, %error, attempts, "page retry failed");
                    PageUpdate {
                        id,
                        title: None,
                        body: None,
                        published_at: None,
                        content_hash: None,
                        extraction: None,
                        charset: None,
                        page_status: if attempts < max_attempts { "pending".into() } else { "failed".into() },
                        page_error: Some(error),
                        attempted,
                    }
                }
            });
        }
        self.store.update_pages(&updates).await?;
        Ok(())
    }
}

/// Why an article page was not read, and whether the attempt counts toward `max_page_attempts` (it does not when
/// the page was never requested because its host asked us to wait).
#[derive(Clone)]
struct PageFailure {
    message: String,
    attempted: bool,
}

impl PageFailure {
    fn attempted(message: String) -> PageFailure {
        PageFailure { message, attempted: true }
    }
}

/// The feed's title wins when it has one (feeds rarely carry site-name suffixes); the page's body wins (a feed's
/// text is a teaser, and extraction only succeeds with real article text); the feed's date wins.
fn apply_extracted(title: &mut String, body: &mut String, published: &mut Option<i64>, e: &Extracted) {
    if title.trim().is_empty() {
        *title = e.title.clone();
    }
    *body = e.body.clone();
    if published.is_none() {
        *published = e.published.map(|d| d.timestamp_millis());
    }
}

/// Hash of the normalised title and body: the same article under two URLs hashes the same.
pub fn content_hash(title: &str, body: &str) -> String {
    let mut h = Sha256::new();
    for part in [title, body] {
        for word in part.split_whitespace() {
            h.update(word.to_lowercase().as_bytes());
            h.update(b" ");
        }
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map(|d| d.to_rfc3339()).unwrap_or_default()
}
