//! Crawler integration tests: a real HTTP server on 127.0.0.1 serving feeds and pages generated from the real
//! news corpus (fetched by `scripts/setup.sh`), the real SQLite store, exact outcomes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use newsd::config::{Config, SourceConfig};
use newsd::crawl::{CrawlOptions, CrawlReport, Crawler, SourceStatus};
use newsd::store::{ArticleRow, Store};
use newsd::testkit::{corpus, squash, CorpusArticle, NewsServer};

fn source(name: &str, url: String, full_text: bool) -> SourceConfig {
    SourceConfig {
        name: name.into(),
        url,
        enabled: true,
        full_text,
        selectors: None,
        language: Some("en".into()),
        min_interval: None,
        allow_private_addresses: None,
    }
}

async fn setup(dir: &std::path::Path, sources: Vec<SourceConfig>, tweak: impl FnOnce(&mut Config)) -> (Crawler, Store) {
    let mut config = Config::default();
    config.data_dir = dir.to_path_buf();
    config.crawl.per_host_interval = Duration::ZERO;
    config.crawl.max_items_per_feed = 10_000;
    // The test servers are on loopback: article pages there need the opt-in.
    config.crawl.allow_private_addresses = true;
    config.sources = sources;
    tweak(&mut config);
    let store = Store::from_config(&config).await.unwrap();
    (Crawler::new(Arc::new(config), store.clone()).unwrap(), store)
}

fn by_name(report: &CrawlReport) -> HashMap<String, newsd::crawl::SourceReport> {
    report.sources.iter().map(|s| (s.name.clone(), s.clone())).collect()
}

/// One number from SQL (NULL reads as 0), through the store's pool.
async fn scalar(store: &Store, sql: &str) -> i64 {
    sqlx::query_scalar::<_, Option<i64>>(sql).fetch_one(store.pool()).await.unwrap().unwrap_or(0)
}

async fn all_articles(store: &Store) -> Vec<ArticleRow> {
    let max = scalar(store, "SELECT MAX(id) FROM articles").await;
    store.articles_by_ids(&(1..=max).collect::<Vec<_>>()).await.unwrap()
}

fn load_corpus() -> Vec<CorpusArticle> {
    corpus::load().expect("the test corpus is fetched by scripts/setup.sh (see README)")
}

/// The corpus articles the crawler must store: every one, except a repeat of the same substantial text
/// (the corpus holds the same article twice in a couple of places; those are duplicates by content).
fn expected_unique(articles: &[CorpusArticle]) -> Vec<&CorpusArticle> {
    let mut seen = std::collections::HashSet::new();
    articles
        .iter()
        .filter(|a| {
            let text_ok = a.text.chars().count() >= 80;
            let body = if text_ok { squash(&a.text) } else { squash(&a.subtitle) };
            body.len() < 200 || seen.insert(newsd::crawl::content_hash(&squash(&a.title), &body))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_corpus_is_stored_once_with_right_fields_and_second_crawl_is_not_modified() {
    let corpus = load_corpus();
    assert_eq!(corpus.len(), 3824);
    let server = NewsServer::start(corpus.clone()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sources: Vec<_> = server.feed_urls().into_iter().map(|(n, u)| source(&n, u, true)).collect();
    assert_eq!(sources.len(), 9);
    let (crawler, store) = setup(dir.path(), sources, |_| {}).await;

    let report = crawler.crawl(&CrawlOptions::default()).await.unwrap();
    assert_eq!(report.totals.failed, 0, "{report:#?}");
    assert_eq!(report.totals.fetched, 9);
    assert_eq!(report.totals.items, 3824);
    let expected = expected_unique(&corpus);
    assert_eq!(report.totals.new, expected.len(), "new articles");
    assert_eq!(report.totals.new + report.totals.duplicate, 3824);
    assert_eq!(store.count_articles().await.unwrap() as usize, expected.len());

    let stored: HashMap<String, ArticleRow> = all_articles(&store).await.into_iter().map(|a| (a.url.clone(), a)).collect();
    let stored_hashes: std::collections::HashSet<&str> = stored.values().map(|a| a.content_hash.as_str()).collect();
    let mut short = 0;
    let mut copies = 0;
    for a in &corpus {
        // The feed links carry utm_ parameters: the stored URL is the canonical one.
        let url = server.url(&format!("/articles/{}", a.id));
        let Some(row) = stored.get(&url) else {
            // Only a second copy of the same text under another URL may be missing.
            let hash = newsd::crawl::content_hash(&squash(&a.title), &squash(&a.text));
            assert!(stored_hashes.contains(hash.as_str()), "article {} ({url}) not stored and not a copy", a.id);
            copies += 1;
            continue;
        };
        assert_eq!(row.source, a.source);
        if !a.title.trim().is_empty() {
            assert_eq!(row.title, squash(&a.title), "title of {}", a.id);
        }
        assert_eq!(row.published_at, a.published.map(|d| d.timestamp_millis()), "date of {}", a.id);
        if a.text.chars().count() >= 80 {
            assert_eq!(squash(&row.body), squash(&a.text), "body of article {}", a.id);
            assert_eq!(row.extraction, "general");
            assert_eq!(row.page_status, "ok");
        } else {
            // No article text on the page: the feed's text is kept and the page retried later.
            short += 1;
            assert_eq!(row.page_status, "pending", "article {}", a.id);
        }
    }
    assert_eq!(copies, 3824 - expected.len());
    assert!(short < 70, "{short} pages without text");

    // Second pass: every feed answers 304 to the conditional GET; nothing new, nothing lost.
    let before = store.count_articles().await.unwrap();
    let second = crawler.crawl(&CrawlOptions::default()).await.unwrap();
    assert_eq!(second.totals.not_modified, 9, "{:#?}", second.totals);
    assert_eq!(second.totals.new, 0);
    assert_eq!(store.count_articles().await.unwrap(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_are_recorded_per_source_and_lose_nothing_from_the_others() {
    let corpus: Vec<_> = load_corpus().into_iter().filter(|a| a.source == "cnn").take(40).collect();
    let server = NewsServer::start(corpus.clone()).await.unwrap();
    // A 429 with Retry-After pauses its whole host (see the next test), so the rate-limited source has its own.
    let limiter = NewsServer::start(Vec::new()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sources = vec![
        source("good", server.url("/feeds/cnn"), true),
        source("malformed", server.url("/faults/malformed"), false),
        source("recoverable", server.url("/faults/recoverable"), false),
        source("error500", server.url("/faults/status/500"), false),
        source("ratelimited", limiter.url("/faults/ratelimited"), false),
        source("slow", server.url("/faults/slow"), false),
        source("huge", server.url("/faults/huge"), false),
        source("huge-chunked", server.url("/faults/huge-chunked"), false),
        source("loop", server.url("/faults/loop"), false),
        source("robots", server.url("/private/feed"), false),
        source("korean", server.url("/kr/feed"), true),
    ];
    let (crawler, store) = setup(dir.path(), sources, |c| {
        c.crawl.request_timeout = Duration::from_secs(1);
        c.crawl.max_body_bytes = 1024 * 1024;
        c.crawl.max_redirects = 3;
    })
    .await;
    let started = std::time::Instant::now();
    let report = crawler.crawl(&CrawlOptions::default()).await.unwrap();
    let r = by_name(&report);
    let err = |n: &str| r[n].error.clone().unwrap_or_default();

    // The good source is complete despite ten broken neighbours.
    assert_eq!(r["good"].status, SourceStatus::Fetched);
    assert_eq!(r["good"].new, expected_unique(&corpus).len());
    assert_eq!(r["good"].pages_failed, corpus.iter().filter(|a| a.text.chars().count() < 80).count());

    assert_eq!(r["malformed"].status, SourceStatus::Failed);
    assert!(err("malformed").contains("malformed feed") && err("malformed").contains("/faults/malformed"), "{}", err("malformed"));

    assert_eq!(r["recoverable"].status, SourceStatus::Fetched);
    assert_eq!(r["recoverable"].new, 2);
    assert!(r["recoverable"].recovered.as_deref().unwrap_or("").contains("entities"));

    assert!(err("error500").contains("HTTP 500"), "{}", err("error500"));
    assert!(err("ratelimited").contains("HTTP 429") && err("ratelimited").contains("Retry-After 120s"), "{}", err("ratelimited"));
    assert!(err("slow").contains("timed out"), "{}", err("slow"));
    assert!(err("huge").contains("exceeds 1048576 bytes"), "{}", err("huge"));
    assert!(err("huge-chunked").contains("exceeds 1048576 bytes"), "{}", err("huge-chunked"));
    assert!(err("loop").contains("too many redirects"), "{}", err("loop"));
    assert!(err("robots").contains("disallowed by robots.txt"), "{}", err("robots"));
    assert_eq!(server.hits("/private/feed"), 0, "a disallowed URL is never requested");
    // The slow source cost its own timeout, not everyone's: the whole pass is bounded by ~1 timeout.
    assert!(started.elapsed() < Duration::from_secs(4), "pass took {:?}", started.elapsed());

    // EUC-KR pages (charset in the header for one, only in a meta tag for the other) decode correctly.
    assert_eq!(r["korean"].new, 2);
    for (i, (title, text)) in newsd::testkit::server::KOREAN_ARTICLES.iter().enumerate() {
        let row = store.article_by_url(&server.url(&format!("/kr/{i}"))).await.unwrap().expect("korean article stored");
        assert_eq!(row.title, *title);
        assert_eq!(squash(&row.body), squash(text));
    }

    // Recorded state: failures counted, Retry-After honoured, back-off applied.
    let state = |n: &str| {
        let store = store.clone();
        let n = n.to_string();
        async move { store.source_state(&n).await.unwrap().unwrap() }
    };
    let now = newsd::store::now_ms();
    let rl = state("ratelimited").await;
    assert!(rl.next_fetch_at >= now + 110_000 && rl.next_fetch_at <= now + 125_000, "Retry-After 120 s: {}", rl.next_fetch_at - now);
    let e5 = state("error500").await;
    assert_eq!(e5.consecutive_failures, 1);
    assert!(e5.next_fetch_at > now + 30_000, "backed off");
    assert!(e5.last_error.unwrap().contains("HTTP 500"));
    assert_eq!(state("good").await.consecutive_failures, 0);

    // Next pass: failing sources are deferred (not hammered), the good one is not modified.
    let hits_429 = limiter.hits("/faults/ratelimited");
    let second = by_name(&crawler.crawl(&CrawlOptions::default()).await.unwrap());
    assert_eq!(second["ratelimited"].status, SourceStatus::Deferred);
    assert_eq!(limiter.hits("/faults/ratelimited"), hits_429);
    assert_eq!(second["error500"].status, SourceStatus::Deferred);
    assert_eq!(second["good"].status, SourceStatus::NotModified);

    // Health as `newsd status` shows it.
    let health = store.source_health(&[]).await.unwrap();
    let h: HashMap<_, _> = health.iter().map(|h| (h.name.as_str(), h)).collect();
    assert!(h["good"].healthy && h["good"].articles as usize == expected_unique(&corpus).len());
    assert!(!h["slow"].healthy && h["slow"].last_error.as_deref().unwrap().contains("timed out"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_page_keeps_feed_text_and_is_retried_until_it_succeeds() {
    let corpus: Vec<_> = load_corpus().into_iter().filter(|a| a.source == "bbc" && a.text.len() > 500).take(10).collect();
    let victim = corpus[3].id;
    let server = NewsServer::start(corpus.clone()).await.unwrap();
    server.force_status(&format!("/articles/{victim}"), Some(503));
    let dir = tempfile::tempdir().unwrap();
    let (crawler, store) = setup(dir.path(), vec![source("bbc", server.url("/feeds/bbc"), true)], |_| {}).await;
    let r = crawler.crawl(&CrawlOptions::default()).await.unwrap();
    assert_eq!(r.totals.new, 10);
    assert_eq!(r.sources[0].pages_failed, 1);
    let url = server.url(&format!("/articles/{victim}"));
    let row = store.article_by_url(&url).await.unwrap().unwrap();
    assert_eq!(row.page_status, "pending");
    assert_eq!(row.extraction, "feed");

    server.force_status(&format!("/articles/{victim}"), None);
    let r = crawler.crawl(&CrawlOptions::default()).await.unwrap();
    assert_eq!(r.sources[0].status, SourceStatus::NotModified);
    assert_eq!(r.sources[0].pages_retried, 1);
    let row = store.article_by_url(&url).await.unwrap().unwrap();
    assert_eq!(row.page_status, "ok");
    let original = corpus.iter().find(|a| a.id == victim).unwrap();
    assert_eq!(squash(&row.body), squash(&original.text));
    assert_eq!(store.count_articles().await.unwrap(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_429_with_retry_after_pauses_the_whole_host_and_loses_nothing() {
    let corpus: Vec<_> = load_corpus().into_iter().filter(|a| a.source == "bbc" && a.text.len() > 500).take(10).collect();
    let server = NewsServer::start(corpus.clone()).await.unwrap();
    for a in &corpus {
        server.force_status(&format!("/articles/{}", a.id), Some(429)); // with Retry-After: 60
    }
    let dir = tempfile::tempdir().unwrap();
    let (crawler, store) = setup(dir.path(), vec![source("bbc", server.url("/feeds/bbc"), true)], |_| {}).await;
    let r = crawler.crawl(&CrawlOptions::default()).await.unwrap();
    // The first page's 429 pauses the host: the other nine pages are not requested at all.
    let page_hits = server.requests().iter().filter(|(p, _)| p.starts_with("/articles/")).count();
    assert_eq!(page_hits, 1, "{:?}", server.requests());
    assert_eq!((r.totals.new, r.sources[0].pages_failed), (10, 10));
    // Nothing is lost: every article is stored with its feed text and waits for a page retry.
    let rows = all_articles(&store).await;
    assert_eq!(rows.len(), 10);
    assert!(rows.iter().all(|a| a.page_status == "pending" && a.extraction == "feed"));
    let errors: Vec<&str> = rows.iter().map(|a| a.page_error.as_deref().unwrap_or("")).collect();
    assert_eq!(errors.iter().filter(|e| e.contains("HTTP 429 (Retry-After 60s)")).count(), 1, "{errors:?}");
    assert_eq!(errors.iter().filter(|e| e.contains("not fetched: the host asked to wait")).count(), 9, "{errors:?}");
    // Only the requested page used up an attempt: the other nine keep all of theirs for when the host is back.
    let attempts = scalar(&store, "SELECT SUM(page_attempts) FROM articles").await;
    assert_eq!(attempts, 1);
    let pass2 = crawler.crawl(&CrawlOptions { sources: vec![], force: true }).await.unwrap();
    assert_eq!(pass2.sources[0].pages_retried, 10);
    assert_eq!(scalar(&store, "SELECT SUM(page_attempts) FROM articles").await, 1, "still paused: nothing requested");
    assert_eq!(server.requests().iter().filter(|(p, _)| p.starts_with("/articles/")).count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hosts_retry_after_defers_its_other_feeds_without_counting_a_failure() {
    let corpus: Vec<_> = load_corpus().into_iter().filter(|a| a.source == "cnn").take(3).collect();
    let server = NewsServer::start(corpus).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sources = vec![source("limited", server.url("/faults/ratelimited"), false), source("neighbour", server.url("/feeds/cnn"), false)];
    let (crawler, store) = setup(dir.path(), sources, |_| {}).await;
    let only = |name: &str| CrawlOptions { sources: vec![name.to_string()], force: false };
    let first = crawler.crawl(&only("limited")).await.unwrap();
    assert!(first.sources[0].error.as_deref().unwrap_or("").contains("Retry-After 120s"), "{:?}", first.sources[0]);
    // Same host, asked to wait 120 s: the neighbour's feed is not requested, and that is not its failure.
    let second = crawler.crawl(&only("neighbour")).await.unwrap();
    let n = &second.sources[0];
    assert_eq!(n.status, SourceStatus::Deferred, "{n:?}");
    assert!(n.error.as_deref().unwrap_or("").contains("the host asked to wait"), "{n:?}");
    assert_eq!(server.hits("/feeds/cnn"), 0);
    let health = store.source_health(&["neighbour".to_string()]).await.unwrap();
    assert_eq!((health[0].consecutive_failures, health[0].last_error.clone()), (0, None));
    assert_eq!(store.source_health(&["limited".to_string()]).await.unwrap()[0].consecutive_failures, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_to_another_host_obeys_that_hosts_robots_txt() {
    let corpus: Vec<_> = load_corpus().into_iter().filter(|a| a.source == "cnn").take(5).collect();
    let first = NewsServer::start(corpus.clone()).await.unwrap();
    let other = NewsServer::start(corpus.clone()).await.unwrap(); // another port: another host and origin
    let port = url::Url::parse(&other.url("/")).unwrap().port().unwrap();
    first.set_robots("User-agent: *\nAllow: /\n");
    other.set_robots("User-agent: *\nDisallow: /private/\n");
    let dir = tempfile::tempdir().unwrap();
    let sources = vec![
        source("moved", first.url(&format!("/faults/moved/{port}/feeds/cnn")), false),
        source("moved-private", first.url(&format!("/faults/moved/{port}/private/feed")), false),
    ];
    let (crawler, _store) = setup(dir.path(), sources, |_| {}).await;
    let report = crawler.crawl(&CrawlOptions::default()).await.unwrap();
    let r = by_name(&report);
    // Followed to the other host, whose feed is read in full.
    assert_eq!((r["moved"].status.clone(), r["moved"].new), (SourceStatus::Fetched, 5), "{:?}", r["moved"]);
    // The other host's robots.txt forbids the target: it is never requested, and the error names the target URL.
    let err = r["moved-private"].error.clone().unwrap_or_default();
    assert!(err.contains("disallowed by robots.txt") && err.contains(&other.url("/private/feed")), "{err}");
    assert_eq!(other.hits("/private/feed"), 0);
    assert_eq!(other.hits("/robots.txt"), 1, "robots.txt is read once per host and cached");
    assert_eq!(first.hits("/private/feed"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_failing_several_crawls_in_a_row_raises_one_alert() {
    let corpus: Vec<_> = load_corpus().into_iter().filter(|a| a.source == "cnn").take(3).collect();
    let server = NewsServer::start(corpus).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.data_dir = dir.path().to_path_buf();
    config.crawl.per_host_interval = Duration::ZERO;
    // No back-off, so every pass retries the broken source (the scheduled daemon would wait between them).
    config.crawl.backoff_base = Duration::ZERO;
    config.crawl.backoff_max = Duration::ZERO;
    config.daemon.source_failure_alert = 3;
    config.sources = vec![source("good", server.url("/feeds/cnn"), false), source("broken", server.url("/faults/status/500"), false)];
    let app = newsd::app::App::open(config).await.unwrap();
    let alerts = || async {
        let all = app.store.ops_alerts(100).await.unwrap();
        all.into_iter().filter(|a| a.kind == "source_failing").map(|a| a.message).collect::<Vec<_>>()
    };
    for pass in 1..=5 {
        // A crawl with one failed source out of two is a successful run: the failure is the source's, not the job's.
        newsd::tasks::run_task(&app, &newsd::tasks::TaskSpec::Crawl { sources: vec![] }).await.unwrap();
        assert_eq!(alerts().await.len(), usize::from(pass >= 3), "after pass {pass}: {:?}", alerts().await);
    }
    assert_eq!(server.hits("/faults/status/500"), 5);
    let msg = &alerts().await[0];
    assert!(msg.contains("source broken has failed 3 crawls in a row") && msg.contains("HTTP 500"), "{msg}");
    assert!(msg.contains(&server.url("/faults/status/500")), "the alert names the URL: {msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_article_in_two_feeds_is_stored_once_and_hosts_are_spaced() {
    let corpus: Vec<_> = load_corpus().into_iter().filter(|a| a.source == "tass").take(6).collect();
    let server = NewsServer::start(corpus.clone()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sources = vec![source("tass", server.url("/feeds/tass"), true), source("tass-mirror", server.url("/feeds/tass"), true)];
    let (crawler, store) = setup(dir.path(), sources, |c| c.crawl.per_host_interval = Duration::from_millis(150)).await;
    let r = crawler.crawl(&CrawlOptions::default()).await.unwrap();
    assert_eq!(r.totals.new, 6);
    assert_eq!(r.totals.duplicate, 6);
    assert_eq!(store.count_articles().await.unwrap(), 6);
    // One host: one connection at a time and at least 150 ms between requests.
    let times: Vec<_> = server.requests().into_iter().map(|(_, t)| t).collect();
    assert!(times.len() >= 8, "{} requests", times.len());
    for w in times.windows(2) {
        assert!(w[1].duration_since(w[0]) >= Duration::from_millis(140), "requests {:?} apart", w[1].duration_since(w[0]));
    }
}

/// The same store code on PostgreSQL (the backend users move to). Needs a server at `$NEWSD_TEST_POSTGRES` (default
/// `postgres://postgres@127.0.0.1:5432/test`, trust auth); an unreachable server fails the test, saying how to fix it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crawl_into_postgres() {
    let base = std::env::var("NEWSD_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("newsd_test_{}", rand::random::<u32>());
    // One plain connection first: a pool retries a refused connection until its timeout and reports only that.
    let admin = match tokio::time::timeout(Duration::from_secs(10), <sqlx::PgConnection as sqlx::Connection>::connect(&base)).await {
        Ok(Ok(probe)) => {
            let _ = sqlx::Connection::close(probe).await;
            sqlx::PgPool::connect(&base).await.unwrap()
        }
        Ok(Err(e)) => pg_unreachable(&base, &e.to_string()),
        Err(_) => pg_unreachable(&base, "no answer within 10 s"),
    };
    sqlx::query(&format!("CREATE SCHEMA {schema}")).execute(&admin).await.unwrap();
    let url = format!("{base}?options=-c%20search_path%3D{schema}");

    let corpus: Vec<_> = load_corpus().into_iter().filter(|a| a.source == "dw").take(25).collect();
    let server = NewsServer::start(corpus.clone()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (crawler, store) = setup(dir.path(), vec![source("dw", server.url("/feeds/dw"), true)], |c| c.store.url = url.clone()).await;
    assert_eq!(store.backend(), newsd::store::Backend::Postgres);
    let r = crawler.crawl(&CrawlOptions::default()).await.unwrap();
    let expected = expected_unique(&corpus).len();
    assert_eq!(r.totals.new, expected, "{r:#?}");
    let second = crawler.crawl(&CrawlOptions::default()).await.unwrap();
    assert_eq!(second.totals.not_modified, 1);
    assert_eq!(store.count_articles().await.unwrap() as usize, expected);
    let a = &corpus.iter().find(|a| a.text.len() > 200).unwrap();
    let row = store.article_by_url(&server.url(&format!("/articles/{}", a.id))).await.unwrap().unwrap();
    assert_eq!(squash(&row.body), squash(&a.text));
    store.close().await;
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE")).execute(&admin).await.unwrap();
}

fn pg_unreachable(url: &str, error: &str) -> ! {
    panic!(
        "PostgreSQL is not reachable at {} ({error}).\n\
         This test needs a PostgreSQL server: start the local one (127.0.0.1:5432, trust auth for `postgres`, a \
         database `test`; e.g. `pg_ctlcluster <version> main start && createdb -h 127.0.0.1 -U postgres test`), \
         or set NEWSD_TEST_POSTGRES=postgres://USER@HOST:PORT/DB to use another server.",
        newsd::store::redact(url)
    )
}

/// The daemon's crawl job goes through `tasks::run_task`, which uses the app's one crawler: robots.txt, host
/// spacing and a host's Retry-After pause carry over from one scheduled pass to the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_passes_share_robots_cache_and_retry_after_pause() {
    use newsd::tasks::{run_task, TaskSpec};
    let corpus: Vec<_> = load_corpus().into_iter().filter(|a| a.source == "cnn").take(3).collect();
    let limited = NewsServer::start(corpus.clone()).await.unwrap();
    let calm = NewsServer::start(corpus).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.data_dir = dir.path().to_path_buf();
    config.crawl.per_host_interval = Duration::ZERO;
    config.sources = vec![
        source("limited", limited.url("/faults/ratelimited"), false),
        source("neighbour", limited.url("/feeds/cnn"), false),
        source("calm", calm.url("/feeds/cnn"), false),
    ];
    let app = newsd::app::App::open(config).await.unwrap();
    let crawl = |name: &str| TaskSpec::Crawl { sources: vec![name.to_string()] };

    // Pass 1: the limited feed answers 429 with Retry-After 120 (the run fails: its only source failed).
    let err = run_task(&app, &crawl("limited")).await.unwrap_err();
    assert!(format!("{err:#}").contains("Retry-After 120s"), "{err:#}");
    // Pass 2, another scheduled run: the same host is still paused, so its other feed is not requested.
    let second = run_task(&app, &crawl("neighbour")).await.unwrap();
    assert_eq!(second["totals"]["deferred"], 1, "{second}");
    assert_eq!(limited.hits("/feeds/cnn"), 0, "the Retry-After pause outlived the pass");
    assert_eq!(limited.hits("/robots.txt"), 1, "robots.txt read once for both passes");

    // Two passes over a healthy host: robots.txt once, the feed twice (the second a 304).
    let first = run_task(&app, &crawl("calm")).await.unwrap();
    assert_eq!(first["totals"]["new"], 3, "{first}");
    let again = run_task(&app, &crawl("calm")).await.unwrap();
    assert_eq!(again["totals"]["not_modified"], 1, "{again}");
    assert_eq!(calm.hits("/robots.txt"), 1);
    assert_eq!(calm.hits("/feeds/cnn"), 2);
    // One crawler: the app hands out clones of the same one.
    let (hosts, robots) = app.crawler().unwrap().fetcher().cached_hosts();
    assert_eq!((hosts, robots), (2, 2));
}

/// Politeness is shared through the database: two fetchers (two processes or nodes) on one store keep a host's
/// requests `per_host_interval` apart between them, and a Retry-After one of them receives pauses the host for the
/// other, which does not send a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_spacing_and_retry_after_are_shared_through_the_database() {
    let tmp = tempfile::tempdir().unwrap();
    let server = NewsServer::start(corpus::load().unwrap().into_iter().take(3).collect()).await.unwrap();
    let mut cfg = newsd::config::CrawlConfig::default();
    cfg.per_host_interval = Duration::from_millis(300);
    cfg.respect_robots_txt = false;
    let url = format!("sqlite://{}", tmp.path().join("t.db").display());
    let store = Store::open(&url, 4, Duration::from_secs(5)).await.unwrap();
    // Two fetchers, as two nodes would have: nothing in memory is shared, only the database.
    let a = newsd::crawl::Fetcher::new(&cfg).unwrap().with_ledger(Arc::new(store.clone()));
    let b = newsd::crawl::Fetcher::new(&cfg).unwrap().with_ledger(Arc::new(store.clone()));
    let feed = server.url(&format!("/feeds/{}", server.feed_urls()[0].0));
    let mut handles = Vec::new();
    for i in 0..6 {
        let f = if i % 2 == 0 { a.clone() } else { b.clone() };
        let feed = feed.clone();
        handles.push(tokio::spawn(async move { f.fetch(&feed, None).await.map(|_| ()) }));
    }
    for h in handles {
        h.await.unwrap().unwrap();
    }
    let mut times: Vec<std::time::Instant> = server.requests().into_iter().filter(|(p, _)| p.starts_with("/feeds/")).map(|(_, t)| t).collect();
    times.sort();
    assert_eq!(times.len(), 6);
    let gaps: Vec<u128> = times.windows(2).map(|w| (w[1] - w[0]).as_millis()).collect();
    // 300 ms apart by reservation; arrivals at the server vary by each request's own latency (a loaded machine),
    // hence the margin. Without the shared slots the two fetchers' requests would arrive together.
    assert!(gaps.iter().all(|&g| g >= 200), "requests to one host from two fetchers: gaps {gaps:?} ms");

    // A 429 with Retry-After 120 s to one fetcher: the other fails fast without asking the host.
    let limited = server.url("/faults/ratelimited");
    let first = a.fetch(&limited, None).await;
    assert!(matches!(first, Err(newsd::crawl::FetchError::Status { code: 429, .. })), "{first:?}");
    let before = server.hits("/faults/ratelimited");
    let other = b.fetch(&feed, None).await;
    assert!(matches!(other, Err(newsd::crawl::FetchError::HostBackoff { .. })), "the other fetcher respects the pause: {other:?}");
    assert_eq!(server.hits("/faults/ratelimited"), before);
    assert_eq!(server.requests().iter().filter(|(p, _)| p.starts_with("/feeds/")).count(), 6, "no request sent during the pause");
    // A fetcher without spacing (no slot to reserve) still reads the pause.
    let unspaced = newsd::config::CrawlConfig { per_host_interval: Duration::ZERO, ..cfg.clone() };
    let c = newsd::crawl::Fetcher::new(&unspaced).unwrap().with_ledger(Arc::new(store.clone()));
    let third = c.fetch(&feed, None).await;
    assert!(matches!(third, Err(newsd::crawl::FetchError::HostBackoff { .. })), "{third:?}");
    assert_eq!(server.requests().iter().filter(|(p, _)| p.starts_with("/feeds/")).count(), 6);
}
