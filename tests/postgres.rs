//! The whole pipeline on PostgreSQL, the backend users move to when they outgrow one machine: the real `newsd`
//! binary crawls a real HTTP news server on 127.0.0.1 (corpus articles), embeds them with the real ONNX model into
//! the real FAISS index, searches, runs the built-in market analysis and delivers it to a real webhook receiver,
//! every stage reading and writing a real PostgreSQL database (a fresh schema per run).
//!
//! Needs a server at `$NEWSD_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432/test`, trust auth): an
//! unreachable server fails the test with the URL it tried and how to provide one (never a silent skip).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use newsd::testkit::{corpus, squash, NewsServer, WebhookReceiver};

const SECRET: &str = "pg-test-secret";

const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Connects to the test server (`$NEWSD_TEST_POSTGRES`, else [`DEFAULT_PG`]); panics with what to do when it is not
/// reachable. Returns the URL and an admin pool.
async fn test_server() -> (String, sqlx::PgPool) {
    let base = std::env::var("NEWSD_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_PG.into());
    // One plain connection first: a pool retries a refused connection until its timeout and reports only that.
    let error = match tokio::time::timeout(Duration::from_secs(10), <sqlx::PgConnection as sqlx::Connection>::connect(&base)).await {
        Ok(Ok(probe)) => {
            let _ = sqlx::Connection::close(probe).await;
            return (base.clone(), sqlx::PgPool::connect(&base).await.unwrap());
        }
        Ok(Err(e)) => e.to_string(),
        Err(_) => "no answer within 10 s".to_string(),
    };
    panic!(
        "PostgreSQL is not reachable at {} ({error}).\n\
         This test needs a PostgreSQL server: start the local one (127.0.0.1:5432, trust auth for `postgres`, a \
         database `test`; e.g. `pg_ctlcluster <version> main start && createdb -h 127.0.0.1 -U postgres test`), \
         or set NEWSD_TEST_POSTGRES=postgres://USER@HOST:PORT/DB to use another server.",
        newsd::store::redact(&base)
    );
}

/// Runs the real binary; `hook` is the webhook URL handed to it in `NEWSD_PG_HOOK` (the child's environment only).
fn newsd(config: &Path, hook: &str, args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_newsd"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("NEWSD_PG_HOOK", hook)
        .env("NEWSD_PG_SECRET", SECRET)
        .output()
        .expect("run newsd");
    assert!(out.status.success(), "newsd {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("newsd {args:?}: not one JSON document ({e})"))
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crawl_embed_search_analyze_notify_on_postgres() {
    let (base, admin) = test_server().await;
    let schema = format!("newsd_pipeline_{}", rand::random::<u32>());
    sqlx::query(&format!("CREATE SCHEMA {schema}")).execute(&admin).await.unwrap();
    let url = format!("{base}?options=-c%20search_path%3D{schema}");

    // 6 Feb 2017 is the history, 8 Feb 2017 the analysis window (as of 9 Feb 00:00 UTC, 24 hours).
    let on_day = |a: &corpus::CorpusArticle, d: &str| a.published.is_some_and(|p| p.to_rfc3339().starts_with(d));
    let mut articles: Vec<_> = corpus::load()
        .unwrap()
        .into_iter()
        .filter(|a| (on_day(a, "2017-02-06") || on_day(a, "2017-02-08")) && a.text.len() > 200)
        .collect();
    // Syndicated copies (same title) are stored once by design; keep one of each so counts are exact.
    let mut seen = std::collections::HashSet::new();
    articles.retain(|a| seen.insert(squash(&a.title)));
    let window = articles.iter().filter(|a| on_day(a, "2017-02-08")).count();
    assert!(articles.len() > 80 && window > 40, "{} articles, {window} in the window", articles.len());
    let mut outlets: Vec<String> = articles.iter().map(|a| a.source.clone()).collect();
    outlets.sort();
    outlets.dedup();

    let server = NewsServer::start(articles.clone()).await.unwrap();
    let rx = WebhookReceiver::start(SECRET).await.unwrap();
    let hook = rx.url("pg");
    let newsd = |config: &Path, args: &[&str]| newsd(config, &hook, args);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("newsd.toml");
    let mut toml = format!(
        r#"data_dir = "state"
[store]
url = "{url}"
[crawl]
per_host_interval = "0s"
max_items_per_feed = 1000
[embed]
model_dir = "{model}"
onnxruntime_library = "{ort}"
[[analysis.profiles]]
name = "daily"
window = "24h"
targets = ["hook"]
[[notify.targets]]
name = "hook"
kind = "webhook"
url_env = "NEWSD_PG_HOOK"
secret_env = "NEWSD_PG_SECRET"
"#,
        model = root().join("models/all-MiniLM-L6-v2").display(),
        ort = root().join("models/onnxruntime/libonnxruntime.so.1.32.0").display(),
    );
    for o in &outlets {
        toml.push_str(&format!("[[sources]]\nname = \"{o}\"\nurl = \"{}\"\nfull_text = true\nallow_private_addresses = true\n", server.url(&format!("/feeds/{o}"))));
    }
    std::fs::write(&config, toml).unwrap();

    // Crawl: every article stored once, in PostgreSQL (no SQLite file appears).
    let crawl = newsd(&config, &["crawl", "--json"]);
    assert_eq!(crawl["totals"]["new"], articles.len(), "{crawl}");
    assert_eq!(crawl["totals"]["failed"], 0, "{crawl}");
    assert!(!dir.path().join("state/newsd.db").exists(), "a SQLite file was created");
    let status = newsd(&config, &["status", "--json"]);
    assert_eq!(status["articles"], articles.len(), "{status}");

    // Embed: every article once; a second run has nothing to do.
    let embed = newsd(&config, &["embed", "--json"]);
    assert_eq!((embed["embedded"].as_u64(), embed["pending"].as_i64()), (Some(articles.len() as u64), Some(0)), "{embed}");
    assert_eq!(embed["index_size"], articles.len());
    let again = newsd(&config, &["embed", "--json"]);
    assert_eq!(again["embedded"], 0, "{again}");

    // Search: an article's own title finds it first.
    let probe = articles.iter().find(|a| a.title.len() > 40).unwrap();
    let found = newsd(&config, &["search", &probe.title, "-k", "3", "--json"]);
    assert_eq!(found["results"][0]["title"], squash(&probe.title), "{found}");

    // Analysis (built-in) as of 9 Feb: the window's articles, stored with its notification, delivered signed.
    let analysis = newsd(&config, &["analyze", "--profile", "daily", "--at", "2017-02-09T00:00:00Z", "--json"]);
    assert_eq!(analysis["mode"], "builtin");
    assert_eq!(analysis["window_articles"], window, "{}", analysis["text"]);
    assert!(analysis["stories"].as_u64().unwrap() > 0);
    assert!(analysis["notifications"].as_u64().unwrap() >= 1);
    let notify = newsd(&config, &["notify", "--json"]);
    assert_eq!(notify["pending_after"], 0, "{notify}");
    let got = rx.received_at("pg");
    assert_eq!(got.len() as u64, analysis["notifications"].as_u64().unwrap(), "{got:?}");
    assert!(got.iter().all(|r| r.signature_ok == Some(true) && r.idempotency_key.is_some()), "{got:?}");
    // Delivered messages are not sent again.
    let notify = newsd(&config, &["notify", "--json"]);
    assert_eq!(notify["attempted"], 0, "{notify}");
    assert_eq!(rx.received_at("pg").len(), got.len());

    // The same rows, read straight from PostgreSQL.
    let pg = sqlx::PgPool::connect(&url).await.unwrap();
    let count = |sql: &'static str| {
        let pg = pg.clone();
        async move { sqlx::query_scalar::<_, i64>(sql).fetch_one(&pg).await.unwrap() }
    };
    assert_eq!(count("SELECT COUNT(*) FROM articles").await, articles.len() as i64);
    assert_eq!(count("SELECT COUNT(*) FROM embeddings").await, articles.len() as i64);
    assert_eq!(count("SELECT COUNT(*) FROM analyses").await, 1);
    pg.close().await;
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE")).execute(&admin).await.unwrap();
}

/// The cluster's shared state on PostgreSQL (the same checks the SQLite unit test runs): fire claims, leases
/// (claimed `FOR UPDATE SKIP LOCKED`), host slots, the embeddings change sequence with its triggers and deletions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_state_on_postgres() {
    let (base, admin) = test_server().await;
    let schema = format!("newsd_cluster_state_{}", rand::random::<u32>());
    sqlx::query(&format!("CREATE SCHEMA {schema}")).execute(&admin).await.unwrap();
    let url = format!("{base}?options=-c%20search_path%3D{schema}");
    let store = newsd::store::Store::open(&url, 4, Duration::from_secs(5)).await.unwrap();
    newsd::testkit::cluster::cluster_store_checks(&store).await;
    store.close().await;
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE")).execute(&admin).await.unwrap();
}
