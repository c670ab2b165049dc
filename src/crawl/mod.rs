//! The crawl stage: feeds in, articles out, politely.
//!
//! A pass fetches every due source concurrently (a failing, slow or panicking source only costs its own task),
//! stores new items in batches, and records per-source state (validators, failures, back-off). Feed validators
//! are recorded only after the feed's items are stored, so a crash mid-pass never turns into a 304 that hides
//! items. For full-text sources the items are stored first with the feed's text and their page pending; the pages
//! are then fetched within the source's time budget and the articles updated, so a hanging page or a cancelled
//! pass never loses what the feed said. Pages not read stay pending; later passes retry them.

pub mod addr;
pub mod canon;
pub mod extract;
pub mod feed;
pub mod fetch;
pub mod retry;
pub mod text;

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use futures::{FutureExt, StreamExt};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::config::{Config, SourceConfig};
use crate::store::{now_ms, ArticleRow, FetchOutcome, NewArticle, PageStatus, PageUpdate, SourceState, Store, SOURCE_LEASE};
pub use extract::{extract, Extracted};
pub use fetch::{FetchError, Fetched, Fetcher, HostLedger, Target, Validators};

/// The database as the cluster's host ledger (`host_slots`).
impl HostLedger for Store {
    fn reserve<'a>(&'a self, host: &'a str, interval: std::time::Duration) -> futures::future::BoxFuture<'a, anyhow::Result<i64>> {
        Box::pin(async move { Ok(self.reserve_host_slot(host, interval.as_millis() as i64).await?) })
    }

    fn pause<'a>(&'a self, host: &'a str, until_ms: i64) -> futures::future::BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move { Ok(self.pause_host(host, until_ms).await?) })
    }

    fn paused_until<'a>(&'a self, host: &'a str) -> futures::future::BoxFuture<'a, anyhow::Result<i64>> {
        Box::pin(async move { Ok(self.host_paused_until(host).await?) })
    }
}

/// Content-hash dedup needs this much normalised text (bytes) to tell one article from another: below it (link-only
/// items, a bare title) distinct articles would hash alike, so they are told apart by URL only.
pub const MIN_DEDUP_TEXT: usize = 200;

/// Whether a body carries enough text for content-hash dedup.
pub fn identifiable(body: &str) -> bool {
    let mut n = 0usize;
    for (i, w) in body.split_whitespace().enumerate() {
        n += w.len() + usize::from(i > 0);
        if n >= MIN_DEDUP_TEXT {
            return true;
        }
    }
    false
}

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
    /// Not fetched: another node or process is crawling it right now (it holds the source's lease).
    Leased,
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
    /// Articles of this source whose page is still to be read after this pass (they keep the feed's text).
    pub pages_pending: usize,
    /// Pages this pass did not get to because `crawl.source_time_budget` ran out.
    pub pages_not_reached: usize,
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
    pub pages_pending: usize,
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
            pages_pending: 0,
            pages_not_reached: 0,
            skipped_items: 0,
            recovered: None,
            error: None,
            next_fetch_at: None,
            duration_ms: 0,
        }
    }
}

/// What a crawl pass needs; cheap to clone. Meant to live as long as the process (see `App::crawler`), so the
/// fetcher's robots.txt cache, host spacing and Retry-After pauses carry over from one pass to the next.
#[derive(Clone)]
pub struct Crawler {
    config: Arc<Config>,
    store: Store,
    fetcher: Fetcher,
    /// Bounds CPU-bound parsing and extraction to the machine's cores.
    extract_slots: Arc<Semaphore>,
    /// Who holds the sources' leases while crawling them.
    node: Arc<crate::cluster::Node>,
}

/// An article whose page is to be read in this pass.
struct PageJob {
    id: i64,
    url: String,
    attempts: i64,
    title: String,
    body: String,
    published_at: Option<i64>,
    /// Stored by an earlier pass (counts as a retry).
    retry: bool,
}

impl Crawler {
    /// A crawler for this process's node (read from the data directory).
    pub fn new(config: Arc<Config>, store: Store) -> anyhow::Result<Crawler> {
        let node = Arc::new(crate::cluster::Node::load(&config)?);
        Crawler::for_node(config, store, node)
    }

    pub fn for_node(config: Arc<Config>, store: Store, node: Arc<crate::cluster::Node>) -> anyhow::Result<Crawler> {
        let fetcher = Fetcher::new(&config.crawl)?.with_ledger(Arc::new(store.clone()));
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        Ok(Crawler { config, store, fetcher, extract_slots: Arc::new(Semaphore::new(cores)), node })
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
                // A panic anywhere in one source's work (a parser or extractor bug hit by hostile input) is that
                // source's failure, recorded against it with back-off; the other sources carry on.
                let mut r = match this.lease_source(&src, &state).await {
                    Err(r) => r,
                    Ok(state) => {
                        let caught = AssertUnwindSafe(this.crawl_source(&src, &state, force)).catch_unwind().await;
                        let r = match caught {
                            Ok(r) => r,
                            Err(panic) => {
                                let msg = format!("{}: crawling panicked: {}", src.url, panic_message(panic.as_ref()));
                                this.fail(&src, &state, msg.clone(), &FetchError::Other(msg)).await
                            }
                        };
                        if let Err(e) = this.store.release_leases(SOURCE_LEASE, &[state.id], &this.node.holder).await {
                            tracing::warn!(error = %e, "giving the source's lease back (it runs out by itself)");
                        }
                        r
                    }
                };
                r.duration_ms = t.elapsed().as_millis() as u64;
                match r.status {
                    SourceStatus::Failed => tracing::warn!(error = r.error.as_deref().unwrap_or(""), "source failed"),
                    _ => tracing::info!(status = ?r.status, items = r.items, new = r.new, duplicate = r.duplicate, pages_failed = r.pages_failed, pages_pending = r.pages_pending, ms = r.duration_ms, "source done"),
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
                SourceStatus::Deferred | SourceStatus::Leased => totals.deferred += 1,
            }
            totals.items += r.items;
            totals.new += r.new;
            totals.duplicate += r.duplicate;
            totals.pages_failed += r.pages_failed;
            totals.pages_pending += r.pages_pending;
        }
        Ok(CrawlReport { sources: reports, totals, duration_ms: started.elapsed().as_millis() as u64 })
    }

    /// Takes the source's lease for this pass (its feed, then its pending pages), so no other node or process
    /// crawls it at the same time; returns its state as of now (another node may have crawled it since `state`
    /// was read). Held at most the source's time budget plus `cluster.lease`: a process killed mid-pass leaves the
    /// source to others then.
    async fn lease_source(&self, src: &SourceConfig, state: &SourceState) -> Result<SourceState, SourceReport> {
        let ttl = self.config.crawl.source_time_budget + self.config.crawl.request_timeout * 2 + self.config.cluster.lease;
        match self.store.claim_lease(SOURCE_LEASE, state.id, &self.node.holder, &self.node.id, ttl.as_millis() as i64).await {
            Ok(true) => match self.store.source_state(&src.name).await {
                Ok(Some(now)) => Ok(now),
                Ok(None) => Ok(state.clone()),
                Err(e) => {
                    let _ = self.store.release_leases(SOURCE_LEASE, &[state.id], &self.node.holder).await;
                    let mut r = SourceReport::new(&src.name, SourceStatus::Failed);
                    r.error = Some(format!("{}: reading source state: {e}", src.url));
                    Err(r)
                }
            },
            Ok(false) => {
                let holder = self.store.lease_holder(SOURCE_LEASE, state.id).await.ok().flatten().unwrap_or_else(|| "?".into());
                let mut r = SourceReport::new(&src.name, SourceStatus::Leased);
                r.error = Some(format!("being crawled by node {holder}"));
                Err(r)
            }
            Err(e) => {
                let mut r = SourceReport::new(&src.name, SourceStatus::Failed);
                r.error = Some(format!("{}: claiming the source: {e}", src.url));
                Err(r)
            }
        }
    }

    async fn crawl_source(&self, src: &SourceConfig, state: &SourceState, force: bool) -> SourceReport {
        let now = now_ms();
        let deadline = tokio::time::Instant::now() + self.config.crawl.source_time_budget;
        if !force && state.next_fetch_at > now {
            let mut r = SourceReport::new(&src.name, SourceStatus::Deferred);
            r.next_fetch_at = Some(rfc3339(state.next_fetch_at));
            r.error = state.last_error.clone().filter(|_| state.consecutive_failures > 0);
            return r;
        }
        let next_ok = now + src.min_interval.map(|d| d.as_millis() as i64).unwrap_or(0);
        let validators = Validators { etag: state.etag.clone(), last_modified: state.last_modified.clone() };
        let result = self.fetcher.fetch(&src.url, Some(&validators)).await;
        let mut new_jobs = Vec::new();
        let mut report = match result {
            Ok(Fetched::NotModified) => {
                self.record(state.id, FetchOutcome::NotModified { next_fetch_at: next_ok }).await;
                SourceReport::new(&src.name, SourceStatus::NotModified)
            }
            Ok(Fetched::Body(page)) => match self.parse(page.body, page.content_type, &src.url).await {
                Ok(parsed) => {
                    let mut r = SourceReport::new(&src.name, SourceStatus::Fetched);
                    match self.store_items(src, state.id, parsed, &mut r).await {
                        Ok(jobs) => {
                            new_jobs = jobs;
                            // The items are stored (pages pending): the validators may be recorded now.
                            let v = page.validators;
                            self.record(state.id, FetchOutcome::Fetched { etag: v.etag, last_modified: v.last_modified, next_fetch_at: next_ok }).await;
                        }
                        Err(e) => {
                            // Storing failed (database down, disk full): keep the old validators so the next
                            // pass fetches the whole feed again and nothing is lost.
                            r.status = SourceStatus::Failed;
                            r.error = Some(format!("{}: storing items: {e:#}", src.url));
                            let failures = state.consecutive_failures as u32 + 1;
                            let next = now + crate::net::backoff(failures, self.config.crawl.backoff_base, self.config.crawl.backoff_max).as_millis() as i64;
                            self.record(state.id, FetchOutcome::Failed { error: r.error.clone().unwrap_or_default(), next_fetch_at: next }).await;
                        }
                    }
                    r
                }
                Err(message) => self.fail(src, state, message.clone(), &FetchError::Other(message)).await,
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
        if src.full_text {
            if let Err(e) = self.read_pages(src, state.id, new_jobs, deadline, &mut report).await {
                tracing::warn!(error = %format!("{e:#}"), "reading article pages failed");
            }
            match self.store.count_pending_pages(state.id).await {
                Ok(n) => report.pages_pending = n as usize,
                Err(e) => tracing::warn!(error = %e, "counting pending pages"),
            }
            if report.pages_not_reached > 0 {
                tracing::warn!(
                    not_reached = report.pages_not_reached,
                    pending = report.pages_pending,
                    budget = %humantime::format_duration(self.config.crawl.source_time_budget),
                    "source time budget spent; the remaining pages stay pending for the next pass"
                );
            }
        }
        report
    }

    /// Parses a feed on the blocking pool (parsing is CPU-bound and may meet hostile input); a panic in the
    /// parser is returned as this feed's error, naming its URL.
    async fn parse(&self, body: Vec<u8>, content_type: Option<String>, url: &str) -> Result<feed::ParsedFeed, String> {
        let _slot = self.extract_slots.acquire().await.map_err(|e| format!("{url}: {e}"))?;
        let feed_url = url.to_string();
        let options = feed::FeedOptions { max_items: self.config.crawl.max_items_per_feed };
        let joined =
            tokio::task::spawn_blocking(move || feed::parse_feed_with(&body, content_type.as_deref(), &feed_url, &options)).await;
        match joined {
            Ok(Ok(parsed)) => Ok(parsed),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) if e.is_panic() => Err(format!("{url}: parsing the feed panicked: {}", panic_message(e.into_panic().as_ref()))),
            Err(e) => Err(format!("{url}: parsing the feed did not finish: {e}")),
        }
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

    /// Stores the feed's new items (feed text; page pending for full-text sources) and returns the pages to read.
    async fn store_items(&self, src: &SourceConfig, source_id: i64, parsed: feed::ParsedFeed, r: &mut SourceReport) -> anyhow::Result<Vec<PageJob>> {
        let c = &self.config.crawl;
        r.recovered = parsed.recovered.clone();
        r.skipped_items = parsed.skipped_items;
        if let Some(what) = &parsed.recovered {
            tracing::warn!(url = %src.url, "{what}");
        }
        let language = src.language.clone().or(parsed.language.clone());
        // Canonical URLs, first occurrence wins within the feed; only http(s) links are articles.
        let mut seen = HashSet::new();
        let mut items = Vec::new();
        for item in parsed.items.into_iter().take(c.max_items_per_feed) {
            r.items += 1;
            match canon::canonicalize(&item.link, &c.tracking_params) {
                Ok(url) if seen.insert(url.clone()) => items.push((url, item)),
                Ok(_) => r.duplicate += 1,
                Err(e) => {
                    tracing::debug!(error = %e, "feed item skipped");
                    r.skipped_items += 1;
                }
            }
        }
        let urls: Vec<String> = items.iter().map(|(u, _)| u.clone()).collect();
        let existing = self.store.existing_urls(&urls).await?;
        let fresh: Vec<_> = items.into_iter().filter(|(u, _)| !existing.contains(u)).collect();
        r.duplicate += urls.len() - fresh.len();
        let total = fresh.len();
        let fetched_at = now_ms();
        let mut jobs = Vec::new();
        for chunk in fresh.chunks(c.batch_size) {
            let articles: Vec<NewArticle> = chunk
                .iter()
                .map(|(url, item)| NewArticle {
                    url: url.clone(),
                    source_id,
                    title: item.title.clone(),
                    body: item.text.clone(),
                    published_at: item.published.map(|d| d.timestamp_millis()),
                    fetched_at,
                    content_hash: content_hash(&item.title, &item.text),
                    language: language.clone(),
                    extraction: "feed".into(),
                    page_status: if src.full_text { PageStatus::Pending } else { PageStatus::NoPage },
                    page_attempts: 0,
                    page_error: None,
                    charset: None,
                })
                .collect();
            // Same text under another URL (syndicated copies) is a duplicate too, when there is enough text to
            // tell articles apart. Full-text items are judged by their page's text once it is read.
            let hashes: Vec<String> =
                articles.iter().filter(|a| !src.full_text && identifiable(&a.body)).map(|a| a.content_hash.clone()).collect();
            let known = self.store.existing_hashes(&hashes).await?;
            let mut batch_hashes = HashSet::new();
            let batch: Vec<NewArticle> = articles
                .into_iter()
                .filter(|a| {
                    src.full_text
                        || !identifiable(&a.body)
                        || (!known.contains(&a.content_hash) && batch_hashes.insert(a.content_hash.clone()))
                })
                .collect();
            let ids = self.store.insert_articles(&batch).await?;
            r.new += ids.len();
            r.duplicate += chunk.len() - ids.len();
            if src.full_text && !ids.is_empty() {
                // Which rows were inserted (a URL stored meanwhile by another source is skipped by the insert).
                let inserted = self.store.articles_by_ids(&ids).await?;
                jobs.extend(inserted.into_iter().map(|a| PageJob {
                    id: a.id,
                    url: a.url,
                    attempts: 0,
                    title: a.title,
                    body: a.body,
                    published_at: a.published_at,
                    retry: false,
                }));
            }
            if total > c.batch_size {
                tracing::info!(done = r.new + r.duplicate, total, "crawl progress");
            }
        }
        Ok(jobs)
    }

    /// Reads the pages of this pass's new items and of pending ones from earlier passes (up to `batch_size`),
    /// writing results as they arrive, until done or until `deadline` (the source's time budget).
    async fn read_pages(&self, src: &SourceConfig, source_id: i64, new_jobs: Vec<PageJob>, deadline: tokio::time::Instant, r: &mut SourceReport) -> anyhow::Result<()> {
        let new_ids: HashSet<i64> = new_jobs.iter().map(|j| j.id).collect();
        let limit = self.config.crawl.batch_size as i64;
        let pending = self.store.pending_pages(source_id, limit + new_ids.len() as i64).await?;
        let old: Vec<(i64, String, i64)> = pending.into_iter().filter(|p| !new_ids.contains(&p.0)).take(limit as usize).collect();
        let current: HashMap<i64, ArticleRow> =
            self.store.articles_by_ids(&old.iter().map(|p| p.0).collect::<Vec<_>>()).await?.into_iter().map(|a| (a.id, a)).collect();
        let mut jobs = new_jobs;
        for (id, url, attempts) in old {
            let Some(a) = current.get(&id) else { continue };
            jobs.push(PageJob { id, url, attempts, title: a.title.clone(), body: a.body.clone(), published_at: a.published_at, retry: true });
        }
        if jobs.is_empty() {
            return Ok(());
        }
        let total = jobs.len();
        let mut done = 0usize;
        let mut pass_hashes: HashMap<String, i64> = HashMap::new();
        // Each page is fetched on a task of its own: fetching touches the database (the shared host slot), and a
        // future inside this stream is not polled while the loop below writes a group of results, so a fetch
        // suspended mid-query would hold its pooled connection while the write waits for one. Dropped tasks (the
        // time budget ran out) are aborted.
        let mut results = futures::stream::iter(jobs.into_iter().map(|job| {
            let this = self.clone();
            let src = src.clone();
            let url = job.url.clone();
            let task = AbortOnDrop(tokio::spawn(tracing::Instrument::in_current_span(async move { this.fetch_page(&url, &src).await })));
            async move {
                let result = match task.await {
                    Ok(r) => r,
                    Err(e) if e.is_panic() => {
                        Err(PageFailure::attempted(format!("{}: fetching the page panicked: {}", job.url, panic_message(e.into_panic().as_ref()))))
                    }
                    Err(e) => Err(PageFailure::attempted(format!("{}: fetching the page did not finish: {e}", job.url))),
                };
                (job, result)
            }
        }))
        .buffer_unordered(self.config.crawl.concurrency.max(1))
        .ready_chunks(32);
        let work = async {
            while let Some(group) = results.next().await {
                done += group.len();
                self.apply_pages(group, &mut pass_hashes, r).await?;
            }
            anyhow::Ok(())
        };
        let outcome = tokio::time::timeout_at(deadline, work).await;
        match outcome {
            Ok(result) => result,
            Err(_) => {
                r.pages_not_reached = total - done;
                Ok(())
            }
        }
    }

    /// Writes one group of page results: extracted text, or the failure (pending until `max_page_attempts`). A
    /// page whose text is already stored under another URL makes its article a duplicate, which is removed.
    async fn apply_pages(&self, group: Vec<(PageJob, Result<Extracted, PageFailure>)>, pass_hashes: &mut HashMap<String, i64>, r: &mut SourceReport) -> anyhow::Result<()> {
        let max_attempts = self.config.crawl.max_page_attempts as i64;
        let mut updates = Vec::new();
        let mut oks = Vec::new();
        for (job, result) in group {
            if job.retry {
                r.pages_retried += 1;
            }
            match result {
                Ok(e) => {
                    if !job.retry {
                        r.pages_fetched += 1;
                    }
                    let (mut title, mut body, mut published) = (job.title.clone(), job.body.clone(), job.published_at);
                    apply_extracted(&mut title, &mut body, &mut published, &e);
                    let hash = content_hash(&title, &body);
                    oks.push((job, e, title, body, published, hash));
                }
                Err(PageFailure { message: error, attempted, permanent }) => {
                    if !job.retry {
                        r.pages_failed += 1;
                    }
                    let attempts = job.attempts + i64::from(attempted);
                    tracing::warn!(url = %job.url, %error, attempts, "page failed; feed text kept");
                    updates.push(PageUpdate {
                        id: job.id,
                        title: None,
                        body: None,
                        published_at: None,
                        content_hash: None,
                        extraction: None,
                        charset: None,
                        page_status: if attempts < max_attempts && !permanent { PageStatus::Pending } else { PageStatus::Failed },
                        page_error: Some(error),
                        attempted,
                    });
                }
            }
        }
        let hashes: Vec<String> = oks.iter().filter(|o| identifiable(&o.3)).map(|o| o.5.clone()).collect();
        let mut owners: HashMap<String, Vec<i64>> = HashMap::new();
        for (h, id) in self.store.hash_owners(&hashes).await? {
            owners.entry(h).or_default().push(id);
        }
        let mut copies = Vec::new();
        for (job, e, title, body, published, hash) in oks {
            if identifiable(&body) {
                let elsewhere = owners.get(&hash).is_some_and(|ids| ids.iter().any(|&id| id != job.id))
                    || pass_hashes.get(&hash).is_some_and(|&id| id != job.id);
                if elsewhere {
                    tracing::debug!(url = %job.url, "page text already stored under another URL: duplicate");
                    copies.push(job.id);
                    if !job.retry {
                        r.new = r.new.saturating_sub(1);
                    }
                    r.duplicate += 1;
                    continue;
                }
                pass_hashes.insert(hash.clone(), job.id);
            }
            updates.push(PageUpdate {
                id: job.id,
                content_hash: Some(hash),
                title: Some(title),
                body: Some(body),
                published_at: published,
                extraction: Some(e.method.into()),
                charset: Some(e.charset.into()),
                page_status: PageStatus::Ok,
                page_error: None,
                attempted: true,
            });
        }
        self.store.delete_pending_articles(&copies).await?;
        self.store.update_pages(&updates).await?;
        Ok(())
    }

    async fn fetch_page(&self, url: &str, src: &SourceConfig) -> Result<Extracted, PageFailure> {
        let allow_private = src.allows_private_addresses(&self.config.crawl);
        let page = match self.fetcher.fetch_page(url, allow_private).await {
            Ok(Fetched::Body(p)) => p,
            Ok(Fetched::NotModified) => return Err(PageFailure::attempted(format!("{url}: unexpected 304"))),
            Err(e @ FetchError::HostBackoff { .. }) => {
                return Err(PageFailure { message: e.to_string(), attempted: false, permanent: false })
            }
            Err(e @ FetchError::NonPublic { .. }) => {
                return Err(PageFailure { message: e.to_string(), attempted: true, permanent: true })
            }
            Err(e) => return Err(PageFailure::attempted(e.to_string())),
        };
        let _slot = self.extract_slots.acquire().await.map_err(|e| PageFailure::attempted(e.to_string()))?;
        let selectors = src.selectors.clone();
        let final_url = page.final_url.clone();
        let joined = tokio::task::spawn_blocking(move || {
            extract(&page.body, page.content_type.as_deref(), &final_url, selectors.as_ref()).map_err(|e| e.to_string())
        })
        .await;
        match joined {
            Ok(result) => result.map_err(PageFailure::attempted),
            Err(e) if e.is_panic() => {
                Err(PageFailure::attempted(format!("{url}: extraction panicked: {}", panic_message(e.into_panic().as_ref()))))
            }
            Err(e) => Err(PageFailure::attempted(format!("{url}: extraction did not finish: {e}"))),
        }
    }
}

/// A spawned task that is aborted when its handle is dropped (a page fetch outliving a cancelled pass).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> std::future::Future for AbortOnDrop<T> {
    type Output = Result<T, tokio::task::JoinError>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Feed parsing, in one place so the parser's signature is adapted once.
/// The text of a panic payload (`panic!` with a literal or a formatted message).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic without a message".into()
    }
}

/// Why an article page was not read, whether the attempt counts toward `max_page_attempts` (it does not when
/// the page was never requested because its host asked us to wait), and whether retrying is pointless.
#[derive(Clone)]
struct PageFailure {
    message: String,
    attempted: bool,
    /// Will not change (a page on a refused address): the feed's text is final at once.
    permanent: bool,
}

impl PageFailure {
    fn attempted(message: String) -> PageFailure {
        PageFailure { message, attempted: true, permanent: false }
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
