//! The real `newsd` binary driven the way users and scripts drive it: a config file, `--json` output, exit codes.

use std::process::Command;

use newsd::testkit::{corpus, squash, NewsServer};

fn newsd(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_newsd")).arg("--config").arg(config).args(args).output().expect("run newsd")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crawl_status_and_extract_json() {
    let articles: Vec<_> = corpus::load().unwrap().into_iter().filter(|a| a.source == "rte").take(12).collect();
    let server = NewsServer::start(articles.clone()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("newsd.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"state\"\n[crawl]\nper_host_interval = \"0s\"\nallow_private_addresses = true\n\n[[sources]]\nname = \"rte\"\nurl = \"{}\"\nfull_text = true\n\n[[sources]]\nname = \"down\"\nurl = \"{}\"\n",
            server.url("/feeds/rte"),
            server.url("/faults/status/503")
        ),
    )
    .unwrap();

    let out = newsd(&config, &["crawl", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document on stdout");
    assert_eq!(report["totals"]["new"], 12);
    assert_eq!(report["totals"]["failed"], 1);
    let down = report["sources"].as_array().unwrap().iter().find(|s| s["name"] == "down").unwrap();
    assert_eq!(down["status"], "failed");
    assert!(down["error"].as_str().unwrap().contains("/faults/status/503: HTTP 503"), "{down}");
    assert!(dir.path().join("state/newsd.db").exists(), "database created relative to the config file");

    let out = newsd(&config, &["status", "--json"]);
    assert!(out.status.success());
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["articles"], 12);
    let rte = status["sources"].as_array().unwrap().iter().find(|s| s["name"] == "rte").unwrap();
    assert_eq!((rte["articles"].as_i64(), rte["healthy"].as_bool()), (Some(12), Some(true)));

    let a = articles.iter().find(|a| a.text.len() > 300).unwrap();
    let out = newsd(&config, &["extract", &server.url(&format!("/articles/{}", a.id)), "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let e: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(e["title"], squash(&a.title));
    assert_eq!(squash(e["body"].as_str().unwrap()), squash(&a.text));
    assert_eq!(e["method"], "general");
    assert_eq!(e["charset"], "UTF-8");

    // Search: an empty index says so; after `embed`, the article found by its own title comes first.
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[embed]\nmodel_dir = \"{}\"\nonnxruntime_library = \"{}\"\n",
        repo.join("models/all-MiniLM-L6-v2").display(),
        repo.join("models/onnxruntime/libonnxruntime.so.1.32.0").display()
    ));
    std::fs::write(&config, text).unwrap();
    let out = newsd(&config, &["search", &a.title]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("the index is empty"), "{}", String::from_utf8_lossy(&out.stdout));
    let out = newsd(&config, &["embed", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let embedded: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Articles whose page is still pending wait for it before they are embedded.
    let n = embedded["embedded"].as_u64().unwrap();
    assert!(n >= 10, "{embedded}");
    let out = newsd(&config, &["search", &a.title, "-k", "3", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let found: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(found["index_size"].as_u64(), Some(n));
    assert_eq!(found["results"].as_array().unwrap().len(), 3);
    assert_eq!(found["results"][0]["title"], squash(&a.title));

    // Only the broken source: every source failed -> exit status 2.
    let out = newsd(&config, &["crawl", "--source", "down", "--force", "--json"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn bad_config_is_refused_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("newsd.toml");
    std::fs::write(&config, "[crawl]\nconcurrency = 4\nuser_agnet = \"x\"\n").unwrap();
    let out = newsd(&config, &["status"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:3:", config.display())) && err.contains("user_agnet"), "{err}");

    std::fs::write(&config, "[[sources]]\nname = \"x\"\nurl = \"not a url\"\n").unwrap();
    let err = String::from_utf8_lossy(&newsd(&config, &["crawl"]).stderr).to_string();
    assert!(err.contains(":3") && err.contains("invalid URL"), "{err}");

    let err = String::from_utf8_lossy(&newsd(&dir.path().join("missing.toml"), &["status"]).stderr).to_string();
    assert!(err.contains("missing.toml") && err.contains("cannot read config file"), "{err}");
}

/// A market lexicon file with a mistake is refused at start, naming the lexicon file and its line; a good one is
/// taken.
#[test]
fn bad_lexicon_file_is_refused_with_its_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("newsd.toml");
    std::fs::write(&config, "[analysis]\nlexicon = [\"extra.toml\"]\n").unwrap();
    let lexicon = dir.path().join("extra.toml");
    std::fs::write(&lexicon, "[[entry]]\ntag = \"Lumber\"\nkind = \"asset\"\nterms = [\"lumber\"\n").unwrap();
    let out = newsd(&config, &["status"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("extra.toml:4") || err.contains("extra.toml:5"), "the lexicon file and line: {err}");

    std::fs::write(&lexicon, "[[entry]]\ntag = \"Lumber\"\nkind = \"asset\"\nterms = [\"lumber\"]\ntickr = \"LBS\"\n").unwrap();
    let err = String::from_utf8_lossy(&newsd(&config, &["status"]).stderr).to_string();
    assert!(err.contains("extra.toml:5") && err.contains("tickr"), "{err}");

    std::fs::write(&lexicon, "[[entry]]\ntag = \"Lumber\"\nkind = \"asset\"\nterms = [\"lumber\"]\n").unwrap();
    let out = newsd(&config, &["status"]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("extra.toml"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Both shipped configurations load and validate: the English one and the Korean one (multilingual model, Korean
/// briefs, thresholds for that model).
#[test]
fn shipped_configs_load() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let en = newsd::Config::load(&root.join("newsd.toml")).unwrap_or_else(|e| panic!("newsd.toml: {e}"));
    assert!(en.embed.model_dir.ends_with("all-MiniLM-L6-v2"));
    let ko = newsd::Config::load(&root.join("newsd.ko.toml")).unwrap_or_else(|e| panic!("newsd.ko.toml: {e}"));
    assert!(ko.embed.model_dir.ends_with("multilingual-e5-small"));
    assert!(ko.analysis.profiles.iter().all(|p| p.language == newsd::analysis::lang::Language::Ko));
    // Thresholds follow the model: e5's folder declares its levels; MiniLM's declares none (the defaults).
    let e5 = newsd::embed::model::ModelSpec::from_config(&ko).unwrap();
    let t = ko.analysis.profiles[0].thresholds(&e5.similarity);
    assert_eq!((t.cluster, t.history, t.recurring, t.duplicate), (0.88, 0.87, 0.90, 0.97));
    let mini = newsd::embed::model::ModelSpec::from_config(&en).unwrap();
    assert_eq!(en.analysis.profiles[0].thresholds(&mini.similarity), newsd::analysis::config::Thresholds::default());
    let mut own = ko.analysis.profiles[0].clone();
    own.cluster_threshold = Some(0.9);
    assert_eq!(own.thresholds(&e5.similarity).cluster, 0.9, "a profile's own threshold wins");
    assert!(ko.sources.iter().all(|s| s.language.as_deref() == Some("ko")));
    assert_ne!(en.data_dir, ko.data_dir, "another model, another index");
}
