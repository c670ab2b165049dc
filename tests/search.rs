//! Search quality on the real corpus, end to end: a real local news site serves feeds and pages, the crawler stores
//! them, `run_embed` embeds and indexes them with the real model, and articles about the same event from other
//! outlets must rank above unrelated ones. Nothing is mocked.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use newsd::compute::SearchFilter;
use newsd::config::{Config, SourceConfig};
use newsd::crawl::{CrawlOptions, Crawler};
use newsd::testkit::{corpus, NewsServer};
use newsd::App;

/// Events the corpus covers from several outlets, recognised by a title keyword.
const EVENTS: &[&str] = &["Chuck Berry", "DeVos", "Gorsuch", "Fillon", "Wilders", "Samsung", "Oscars"];

fn event_of(title: &str) -> Option<&'static str> {
    let t = title.to_lowercase();
    EVENTS.iter().copied().find(|e| t.contains(&e.to_lowercase()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crawled_corpus_same_event_from_other_outlets_ranks_above_unrelated() {
    let all = corpus::load().expect("the test corpus is fetched by scripts/setup.sh (see README)");
    // Every article of the events plus a fixed sample of articles mentioning none of them anywhere.
    let mentions_event = |a: &corpus::CorpusArticle| {
        let text = format!("{} {} {}", a.title, a.subtitle, a.text).to_lowercase();
        EVENTS.iter().any(|e| text.contains(&e.to_lowercase()))
    };
    let events: Vec<_> = all.iter().filter(|a| a.text.len() > 200 && event_of(&a.title).is_some()).cloned().collect();
    let unrelated: Vec<_> = all.iter().filter(|a| a.id % 20 == 0 && a.text.len() > 200 && !mentions_event(a)).cloned().collect();
    assert!(events.len() >= 60, "{} event articles", events.len());
    assert!(unrelated.len() >= 150, "{} unrelated articles", unrelated.len());
    let selected: Vec<_> = events.iter().chain(unrelated.iter()).cloned().collect();

    let server = NewsServer::start(selected.clone()).await.unwrap();
    let mut outlets: Vec<String> = selected.iter().map(|a| a.source.clone()).collect();
    outlets.sort();
    outlets.dedup();
    let dir = tempfile::tempdir().unwrap();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut config = Config::default();
    config.data_dir = dir.path().to_path_buf();
    config.embed.model_dir = root.join("models/all-MiniLM-L6-v2");
    config.embed.onnxruntime_library = root.join("models/onnxruntime/libonnxruntime.so.1.32.0");
    config.crawl.per_host_interval = Duration::ZERO;
    config.crawl.max_items_per_feed = 10_000;
    config.sources = outlets
        .iter()
        .map(|name| SourceConfig {
            name: name.clone(),
            url: server.url(&format!("/feeds/{name}")),
            enabled: true,
            full_text: true,
            selectors: None,
            language: Some("en".into()),
            min_interval: None,
            // The local news server is on loopback.
            allow_private_addresses: Some(true),
        })
        .collect();
    let app = App::open(config.clone()).await.unwrap();
    let crawl = Crawler::new(app.config.clone(), app.store.clone()).unwrap().crawl(&CrawlOptions::default()).await.unwrap();
    assert_eq!(crawl.totals.failed, 0);
    let stored = app.store.count_articles().await.unwrap();
    assert!(stored as usize >= selected.len() - 5, "{stored} of {}", selected.len());

    let report = newsd::embed::run_embed(&app).await.unwrap();
    assert_eq!(report.embedded as i64, stored);
    assert_eq!(report.index_size as i64, stored);
    assert_eq!(report.pending, 0);

    let ids: Vec<i64> = (1..=app.store.scalar_i64("SELECT MAX(id) FROM articles").await.unwrap()).collect();
    let articles = app.store.articles_by_ids(&ids).await.unwrap();
    let vectors = app.store.vectors(&ids, &report.model_version).await.unwrap();
    let by_id: HashMap<i64, _> = articles.iter().map(|a| (a.id, a)).collect();
    let h = app.compute().await.unwrap();

    // For every event article: the first same-event article from another outlet vs the first unrelated article.
    let mut per_event: HashMap<&str, (usize, usize)> = HashMap::new();
    let mut margins = Vec::new();
    for a in &articles {
        let Some(event) = event_of(&a.title) else { continue };
        let others_exist = articles.iter().any(|b| b.source != a.source && event_of(&b.title) == Some(event));
        if !others_exist {
            continue;
        }
        let hits = h.search(vectors[&a.id].clone(), 50, SearchFilter { exclude: vec![a.id] }).await.unwrap();
        assert!(hits.iter().all(|x| x.article_id != a.id));
        let same = hits.iter().position(|x| {
            let b = by_id[&x.article_id];
            b.source != a.source && event_of(&b.title) == Some(event)
        });
        let unrelated = hits.iter().position(|x| event_of(&by_id[&x.article_id].title).is_none());
        let ok = match (same, unrelated) {
            (Some(s), Some(u)) => s < u,
            (Some(_), None) => true,
            _ => false,
        };
        if let (Some(s), Some(u)) = (same, unrelated) {
            margins.push(hits[s].score - hits[u].score);
        }
        let e = per_event.entry(event).or_default();
        e.0 += ok as usize;
        e.1 += 1;
    }
    let total: usize = per_event.values().map(|v| v.1).sum();
    let good: usize = per_event.values().map(|v| v.0).sum();
    eprintln!("same-event-other-outlet above unrelated: {good}/{total} {per_event:?}");
    assert!(per_event.len() >= 6, "{per_event:?}");
    assert!(total >= 50, "{total} queries");
    assert!(good as f64 >= 0.9 * total as f64, "{good}/{total}: {per_event:?}");
    for (event, (ok, n)) in &per_event {
        assert!(*ok as f64 >= 0.75 * *n as f64, "{event}: {ok}/{n}");
    }
    margins.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let median_margin = margins[margins.len() / 2];
    assert!(median_margin > 0.1, "median score margin {median_margin}");

    // Free-text queries through the search task find the event.
    for (query, event) in [
        ("rock and roll pioneer dies at 90", "Chuck Berry"),
        ("Senate confirms the new US education secretary after a tie-breaking vote", "DeVos"),
        ("Supreme Court nominee confirmation hearings in the Senate", "Gorsuch"),
        ("French presidential candidate embroiled in fake jobs scandal involving his wife", "Fillon"),
        ("Academy Awards best picture mix-up", "Oscars"),
    ] {
        let r = newsd::index::search(&app, query, 3, None).await.unwrap();
        assert_eq!(r.results.len(), 3);
        assert_eq!(event_of(&r.results[0].title), Some(event), "{query:?} -> {:?}", r.results[0].title);
        assert!(r.results.windows(2).all(|w| w[0].score >= w[1].score));
        assert!(!r.results[0].url.is_empty() && !r.results[0].source.is_empty());
    }
    // --since: the corpus is from 2016-2017, so nothing is from the last week; everything is from the last 20 years.
    let recent = newsd::index::search(&app, "rock and roll pioneer dies", 5, Some(Duration::from_secs(7 * 86400))).await.unwrap();
    assert!(recent.results.is_empty());
    let old = newsd::index::search(&app, "rock and roll pioneer dies", 5, Some(Duration::from_secs(20 * 365 * 86400))).await.unwrap();
    assert_eq!(old.results.len(), 5);
    app.shutdown().await.unwrap();
}
