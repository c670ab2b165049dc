//! Search quality on the real corpus, end to end: a real local news site serves feeds and pages, the crawler stores
//! them, `run_embed` embeds and indexes them with the real model, and articles about the same event from other
//! outlets must rank above unrelated ones. Nothing is mocked.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use newsd::index::vector::SearchFilter;
use newsd::config::{Config, Precision, SourceConfig};
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
    same_event_ranks_above_unrelated(Precision::Fp32).await;
}

/// The same with the int8 graph (embed.precision = "int8"): the same bars.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crawled_corpus_same_event_from_other_outlets_ranks_above_unrelated_int8() {
    same_event_ranks_above_unrelated(Precision::Int8).await;
}

async fn same_event_ranks_above_unrelated(precision: Precision) {
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
    // NEWSD_TEST_MODEL_DIR measures another model on the same test (e.g. models/multilingual-e5-small).
    config.embed.model_dir = std::env::var_os("NEWSD_TEST_MODEL_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("models/all-MiniLM-L6-v2"));
    config.embed.onnxruntime_library = root.join("models/onnxruntime/libonnxruntime.so.1.32.0");
    config.embed.precision = precision;
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

    let max: i64 = sqlx::query_scalar("SELECT MAX(id) FROM articles").fetch_one(app.store.pool()).await.unwrap();
    let ids: Vec<i64> = (1..=max).collect();
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
    eprintln!("{}: same-event-other-outlet above unrelated: {good}/{total} {per_event:?}", report.model_version);
    assert!(per_event.len() >= 6, "{per_event:?}");
    assert!(total >= 50, "{total} queries");
    assert!(good as f64 >= 0.9 * total as f64, "{good}/{total}: {per_event:?}");
    for (event, (ok, n)) in &per_event {
        assert!(*ok as f64 >= 0.75 * *n as f64, "{event}: {ok}/{n}");
    }
    margins.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let median_margin = margins[margins.len() / 2];
    eprintln!("median score margin same event vs unrelated: {median_margin:.3}");
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

/// The running daemon (`newsd run`), killed when dropped.
struct DaemonProcess(std::process::Child);

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The folder of the (single) model version's index once a saved index holds a few vectors (the daemon saves an
/// empty one at start).
fn saved_index_dir(index_dir: &std::path::Path) -> Option<PathBuf> {
    std::fs::read_dir(index_dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| newsd::index::vector::read_manifest(p).is_some_and(|m| m.count >= 8))
}

/// Issue 10 #12: CLI `newsd search` processes (20, ten at a time) beside a `newsd run` daemon that is crawling and
/// embedding (saving its index every few vectors): every search succeeds; none writes the index (the daemon owns
/// it; each CLI process says it keeps its repairs in memory); a reader loading the index in a loop meanwhile never
/// finds a manifest that disagrees with its file; after the daemon stops, the saved index loads as is (no
/// rebuild) and holds every stored vector.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cli_searches_beside_a_crawling_daemon_never_write_or_break_the_index() {
    let all = corpus::load().expect("the test corpus is fetched by scripts/setup.sh (see README)");
    let mut seen = std::collections::HashSet::new();
    let picked: Vec<_> = all
        .iter()
        .filter(|a| (a.source == "cnn" || a.source == "aljazeera") && a.text.len() > 300 && !a.title.trim().is_empty())
        .filter(|a| seen.insert(a.title.clone()))
        .take(80)
        .cloned()
        .collect();
    assert_eq!(picked.len(), 80);
    let server = NewsServer::start(picked.clone()).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut text = format!(
        "data_dir = \"data\"\n\n[crawl]\nper_host_interval = \"50ms\"\nbatch_size = 5\nallow_private_addresses = true\n\n\
         [embed]\nmodel_dir = \"{}\"\nonnxruntime_library = \"{}\"\nbatch_size = 4\ncommit_interval = \"300ms\"\n\n\
         [index]\nsave_every = 4\n\n[daemon]\nschedules_dir = \"schedules\"\nshutdown_grace = \"30s\"\n\n[logging]\nfiles = false\n",
        root.join("models/all-MiniLM-L6-v2").display(),
        root.join("models/onnxruntime/libonnxruntime.so.1.32.0").display()
    );
    for source in ["cnn", "aljazeera"] {
        text.push_str(&format!("\n[[sources]]\nname = \"{source}\"\nurl = \"{}\"\nfull_text = true\n", server.url(&format!("/feeds/{source}"))));
    }
    let config_path = dir.join("newsd.toml");
    std::fs::write(&config_path, text).unwrap();
    std::fs::create_dir_all(dir.join("schedules")).unwrap();
    std::fs::write(
        dir.join("schedules/jobs.toml"),
        "[[job]]\nname = \"crawl\"\ncron = \"* * * * * *\"\ntask = \"crawl\"\noverlap = \"skip\"\n\n\
         [[job]]\nname = \"embed\"\ncron = \"* * * * * *\"\ntask = \"embed\"\noverlap = \"skip\"\n",
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_newsd");
    let daemon_log = dir.join("daemon.log");
    let mut daemon = DaemonProcess(
        std::process::Command::new(bin)
            .arg("--config")
            .arg(&config_path)
            .arg("run")
            .env("RUST_LOG", "info")
            .stdout(std::fs::File::create(&daemon_log).unwrap())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let log = || std::fs::read_to_string(&daemon_log).unwrap_or_default();
    let index_root = dir.join("data/index");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let index_dir = loop {
        if let Some(d) = saved_index_dir(&index_root) {
            break d;
        }
        assert!(daemon.0.try_wait().unwrap().is_none(), "the daemon exited:\n{}", log());
        assert!(std::time::Instant::now() < deadline, "no index saved:\n{}", log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // A reader loading the saved index in a loop while the daemon saves it.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (stop, index_dir) = (stop.clone(), index_dir.clone());
        std::thread::spawn(move || {
            let (mut loads, mut errors, mut sizes) = (0, Vec::new(), std::collections::BTreeSet::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let m = newsd::index::vector::read_manifest(&index_dir).expect("the manifest is always there once written");
                match newsd::index::vector::VectorIndex::load(&m.model_version, m.kind, m.dims, m.hnsw_m, 64, index_dir.clone()) {
                    Ok(ix) => {
                        loads += 1;
                        sizes.insert(ix.len());
                    }
                    Err(e) => errors.push(e),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (loads, errors, sizes)
        })
    };

    // Waves of ten searches until the daemon has saved its index during one (at least two waves; at most six).
    let manifest = || std::fs::read_to_string(index_dir.join("manifest.json")).unwrap();
    let mut raced_a_save = false;
    let mut outputs = Vec::new();
    for wave in 0..6 {
        if wave >= 2 && raced_a_save {
            break;
        }
        let before = manifest();
        let children: Vec<_> = (0..10)
            .map(|i| {
                let title = &picked[(wave * 10 + i) % picked.len()].title;
                std::process::Command::new(bin)
                    .arg("--config")
                    .arg(&config_path)
                    // --local: each process loads the index files the daemon is saving (the point of this test);
                    // without it the CLI would ask the daemon (tests/api.rs covers that path).
                    .args(["--local", "search", title, "-k", "3", "--json"])
                    .env("RUST_LOG", "info")
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for c in children {
            outputs.push(tokio::task::spawn_blocking(move || c.wait_with_output().unwrap()).await.unwrap());
        }
        raced_a_save |= manifest() != before;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (loads, errors, sizes) = reader.join().unwrap();

    for out in &outputs {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "a search failed: {stderr}");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
        assert!(report["index_size"].as_u64().unwrap() > 0, "{report}");
        assert!(stderr.contains("keeps its index changes in memory"), "the daemon owns the index, not this search: {stderr}");
        assert!(!stderr.contains("rebuilding the index"), "a search found the saved index unusable: {stderr}");
    }
    assert!(errors.is_empty(), "{} of {} loads failed while the daemon saved: {:?}", errors.len(), loads + errors.len(), &errors[..errors.len().min(5)]);
    assert!(loads > 0);
    eprintln!("{loads} loads meanwhile; index sizes seen: {sizes:?}");
    // The daemon kept saving during the searches (it was embedding), so the readers raced real saves.
    assert!(raced_a_save, "the daemon never saved its index while the searches ran (sizes seen {sizes:?}):\n{}", log());

    unsafe { libc::kill(daemon.0.id() as i32, libc::SIGTERM) };
    let status = tokio::task::spawn_blocking(move || {
        daemon.0.wait().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Some(0), "{}", log());
    assert!(!log().contains("saving the index:"), "{}", log());

    // The saved index is consistent with its manifest and with the database: it loads as is.
    let m = newsd::index::vector::read_manifest(&index_dir).unwrap();
    let ix = newsd::index::vector::VectorIndex::load(&m.model_version, m.kind, m.dims, m.hnsw_m, 64, index_dir.clone())
        .unwrap_or_else(|e| panic!("the saved index needs a rebuild: {e}"));
    let store = newsd::store::Store::open(&format!("sqlite://{}", dir.join("data/newsd.db").display()), 2, Duration::from_secs(10)).await.unwrap();
    assert_eq!(ix.len() as i64, store.count_embeddings(&m.model_version).await.unwrap());
    let mut files: Vec<String> = std::fs::read_dir(&index_dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    files.sort();
    assert_eq!(files, vec![m.index_file.clone(), "manifest.json".to_string()], "no temporary or old files left");
}
