//! Hostile input, end to end: feeds and pages built to break a crawler, served by a real HTTP server on 127.0.0.1
//! (`testkit::HostileServer`), crawled by the real `newsd crawl` binary (so a crash is an exit status, not a dead
//! test process) or through the scheduled task path, into the real SQLite store.
//!
//! Every case crawls a healthy source beside the hostile one and asserts: no crash, the healthy source stored in
//! full, the hostile one either read correctly or its error recorded against it with its URL; memory bounded
//! where input size is the attack.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use newsd::store::Store;
use newsd::testkit::HostileServer;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_newsd");

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// An RSS 2.0 document; `items` are (title, link, description) already escaped as the caller wants them.
fn rss_raw(items: &[(String, String, String)]) -> String {
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<rss version=\"2.0\"><channel><title>T</title><link>http://example.com/</link>\n");
    for (t, l, d) in items {
        s.push_str("<item>");
        if !t.is_empty() {
            s.push_str(&format!("<title>{t}</title>"));
        }
        if !l.is_empty() {
            s.push_str(&format!("<link>{l}</link>"));
        }
        if !d.is_empty() {
            s.push_str(&format!("<description>{d}</description>"));
        }
        s.push_str("</item>\n");
    }
    s.push_str("</channel></rss>\n");
    s
}

fn rss(items: &[(&str, &str, &str)]) -> String {
    rss_raw(&items.iter().map(|(t, l, d)| (esc(t), esc(l), esc(d))).collect::<Vec<_>>())
}

/// The healthy neighbour every case crawls: three plain items (their pages are not fetched).
struct Healthy {
    server: HostileServer,
}

impl Healthy {
    async fn start() -> Healthy {
        let server = HostileServer::start().await.unwrap();
        let items: Vec<(String, String, String)> = (1..=3)
            .map(|i| (format!("Healthy story {i}"), format!("http://example.org/healthy/{i}"), format!("The healthy feed's story number {i}.")))
            .collect();
        let refs: Vec<(&str, &str, &str)> = items.iter().map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str())).collect();
        server.serve("/feed", "application/rss+xml", rss(&refs));
        Healthy { server }
    }

    fn toml(&self) -> String {
        source_toml("healthy", &self.server.url("/feed"), false, "")
    }
}

fn source_toml(name: &str, url: &str, full_text: bool, extra: &str) -> String {
    format!("\n[[sources]]\nname = \"{name}\"\nurl = \"{url}\"\nfull_text = {full_text}\n{extra}\n")
}

struct CliRun {
    code: Option<i32>,
    signal: Option<i32>,
    report: Option<Value>,
    stderr: String,
    max_rss_kib: i64,
    store: Store,
    #[allow(dead_code)]
    dir: tempfile::TempDir,
}

impl CliRun {
    fn source(&self, name: &str) -> Value {
        let report = self.report.as_ref().unwrap_or_else(|| panic!("no report (exit {:?}, signal {:?}): {}", self.code, self.signal, tail(&self.stderr)));
        report["sources"].as_array().unwrap().iter().find(|s| s["name"] == name).cloned().unwrap_or_else(|| panic!("{name} not in {report}"))
    }

    /// No crash: the process exited by itself, 0 because the healthy source worked.
    fn assert_survived(&self) {
        assert_eq!((self.signal, self.code), (None, Some(0)), "newsd crawl crashed or failed; stderr:\n{}", tail(&self.stderr));
    }

    async fn assert_healthy_stored(&self) {
        let h = self.source("healthy");
        assert_eq!((h["status"].as_str(), h["new"].as_u64()), (Some("fetched"), Some(3)), "{h}");
        let health = self.store.source_health(&["healthy".to_string()]).await.unwrap();
        assert_eq!(health[0].articles, 3);
    }

    async fn titles(&self, source: &str) -> Vec<String> {
        let rows = self.store.articles_in_window(0, i64::MAX, &[source.to_string()], 100_000).await.unwrap();
        let mut t: Vec<String> = rows.into_iter().map(|a| a.title).collect();
        t.sort();
        t
    }

    /// The hostile source was read (with `items` stored), or it failed with its URL in the error, in the report
    /// and in the database (with back-off).
    async fn assert_read_or_recorded(&self, name: &str, url: &str, items: u64) {
        let r = self.source(name);
        if r["status"] == "failed" {
            let err = r["error"].as_str().unwrap_or("");
            assert!(err.contains(url), "{name}: error does not name {url}: {err}");
            let state = self.store.source_state(name).await.unwrap().unwrap();
            assert_eq!(state.consecutive_failures, 1, "{name}");
            assert!(state.last_error.unwrap_or_default().contains(url));
            assert!(state.next_fetch_at > newsd::store::now_ms(), "{name} backs off");
        } else {
            assert_eq!((r["status"].as_str(), r["new"].as_u64()), (Some("fetched"), Some(items)), "{name}: {r}");
        }
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Runs `newsd crawl --json` over the given sources, measuring the child's peak RSS.
async fn crawl_cli(crawl_extra: &str, sources: &str) -> CliRun {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("newsd.toml");
    std::fs::write(
        &config,
        format!("data_dir = \"state\"\n[crawl]\nper_host_interval = \"0s\"\nrequest_timeout = \"10s\"\n{crawl_extra}\n\n[logging]\nfiles = false\n{sources}"),
    )
    .unwrap();
    let out_path = dir.path().join("stdout.json");
    let err_path = dir.path().join("stderr.log");
    let (code, signal, max_rss_kib) = {
        let (config, out_path, err_path) = (config.clone(), out_path.clone(), err_path.clone());
        tokio::task::spawn_blocking(move || run_measured(&config, &out_path, &err_path)).await.unwrap()
    };
    let stdout = std::fs::read(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let report = serde_json::from_slice(&stdout).ok();
    let url = format!("sqlite://{}", dir.path().join("state/newsd.db").display());
    let store = Store::open(&url, 2, Duration::from_secs(10)).await.unwrap();
    CliRun { code, signal, report, stderr, max_rss_kib, store, dir }
}

fn run_measured(config: &Path, out: &PathBuf, err: &PathBuf) -> (Option<i32>, Option<i32>, i64) {
    let child = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(["crawl", "--json"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(out).unwrap())
        .stderr(std::fs::File::create(err).unwrap())
        .spawn()
        .expect("run newsd");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: plain wait4 on our own child; rusage is written by the kernel.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(rc, pid, "wait4");
    std::mem::forget(child); // already reaped
    let (code, signal) = if libc::WIFEXITED(status) {
        (Some(libc::WEXITSTATUS(status)), None)
    } else {
        (None, libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status)))
    };
    (code, signal, usage.ru_maxrss)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_description_and_page_do_not_crash() {
    let healthy = Healthy::start().await;
    let bad = HostileServer::start().await.unwrap();
    // An item description of escaped HTML nested 65,536 deep.
    let depth = 65_536;
    let desc = format!("{}deep text{}", "&lt;div&gt;".repeat(depth), "&lt;/div&gt;".repeat(depth));
    bad.serve(
        "/deep-desc",
        "application/rss+xml",
        rss_raw(&[("Deep description".into(), "http://example.com/deep/1".into(), desc)]),
    );
    // A page nested 20,000 deep, without a <p>.
    let page = format!("<html><head><title>Deep page</title></head><body>{}Deep page text.{}</body></html>", "<div>".repeat(20_000), "</div>".repeat(20_000));
    bad.serve("/deep-page", "text/html; charset=utf-8", page);
    bad.serve("/deep-page-feed", "application/rss+xml", rss(&[("Deep page", &bad.url("/deep-page"), "The feed's text of the deep page.")]));
    let sources = format!(
        "{}{}{}",
        healthy.toml(),
        source_toml("deep-desc", &bad.url("/deep-desc"), false, ""),
        source_toml("deep-page", &bad.url("/deep-page-feed"), true, "allow_private_addresses = true")
    );
    let run = crawl_cli("", &sources).await;
    run.assert_survived();
    run.assert_healthy_stored().await;
    run.assert_read_or_recorded("deep-desc", &bad.url("/deep-desc"), 1).await;
    // The deep page's article is stored with the feed's text whatever its page did; a failed page names its URL.
    let r = run.source("deep-page");
    assert_eq!((r["status"].as_str(), r["new"].as_u64()), (Some("fetched"), Some(1)), "{r}");
    let row = run.store.article_by_url(&bad.url("/deep-page")).await.unwrap().expect("deep page article stored");
    if row.page_status != "ok" {
        assert!(row.page_error.as_deref().unwrap_or("").contains(&bad.url("/deep-page")), "{row:?}");
    }
}

fn utf16(text: &str, big_endian: bool, bom: bool) -> Vec<u8> {
    let mut out = Vec::new();
    if bom {
        out.extend_from_slice(if big_endian { &[0xFE, 0xFF] } else { &[0xFF, 0xFE] });
    }
    for unit in text.encode_utf16() {
        out.extend_from_slice(&if big_endian { unit.to_be_bytes() } else { unit.to_le_bytes() });
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn utf16_feeds_with_and_without_bom_are_read() {
    let healthy = Healthy::start().await;
    let bad = HostileServer::start().await.unwrap();
    let mut sources = healthy.toml();
    let cases = [("be-bom", true, true), ("le-bom", false, true), ("be", true, false), ("le", false, false)];
    for (name, be, bom) in cases {
        let doc = rss(&[("Grüße aus Köln", &format!("http://example.com/u16/{name}"), "Straße und Größe")])
            .replace("encoding=\"UTF-8\"", "encoding=\"UTF-16\"");
        bad.serve(&format!("/{name}"), "application/rss+xml", utf16(&doc, be, bom));
        sources.push_str(&source_toml(name, &bad.url(&format!("/{name}")), false, ""));
    }
    let run = crawl_cli("", &sources).await;
    run.assert_survived();
    run.assert_healthy_stored().await;
    for (name, _, _) in cases {
        run.assert_read_or_recorded(name, &bad.url(&format!("/{name}")), 1).await;
        assert_eq!(run.titles(name).await, vec!["Grüße aus Köln".to_string()], "{name}: {}", run.source(name));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charsets_invalid_bytes_and_versionless_rss_are_read() {
    let healthy = Healthy::start().await;
    let bad = HostileServer::start().await.unwrap();
    // Latin-1 that needs repair (an HTML entity XML does not know, a bare ampersand).
    let latin1 = "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>\n<rss version=\"2.0\"><channel><title>L</title>\
        <item><title>Café &amp; Zürich&nbsp;heute</title><link>http://example.com/l1/1</link><description>Crème brûlée & more</description></item>\
        </channel></rss>";
    let (bytes, _, _) = encoding_rs::WINDOWS_1252.encode(latin1);
    bad.serve("/latin1", "application/rss+xml", bytes.into_owned());
    // One invalid UTF-8 byte in one title of three.
    let mut invalid = rss(&[
        ("First fine item", "http://example.com/inv/1", "One."),
        ("Broken XX byte", "http://example.com/inv/2", "Two."),
        ("Third fine item", "http://example.com/inv/3", "Three."),
    ])
    .into_bytes();
    let at = invalid.windows(2).position(|w| w == b"XX").unwrap();
    invalid[at] = 0xFF;
    bad.serve("/invalid", "application/rss+xml", invalid);
    // The charset only in the HTTP header (no encoding in the XML declaration).
    let cyrillic = "<?xml version=\"1.0\"?>\n<rss version=\"2.0\"><channel><title>C</title>\
        <item><title>Привет, мир</title><link>http://example.com/cy/1</link><description>Новости дня</description></item></channel></rss>";
    let (bytes, _, _) = encoding_rs::WINDOWS_1251.encode(cyrillic);
    bad.serve("/header-charset", "application/rss+xml; charset=windows-1251", bytes.into_owned());
    // <rss> without a version attribute.
    bad.serve(
        "/no-version",
        "application/rss+xml",
        "<?xml version=\"1.0\"?><rss><channel><title>N</title><item><title>No version</title><link>http://example.com/nv/1</link></item></channel></rss>",
    );
    let sources = format!(
        "{}{}{}{}{}",
        healthy.toml(),
        source_toml("latin1", &bad.url("/latin1"), false, ""),
        source_toml("invalid", &bad.url("/invalid"), false, ""),
        source_toml("header-charset", &bad.url("/header-charset"), false, ""),
        source_toml("no-version", &bad.url("/no-version"), false, "")
    );
    let run = crawl_cli("", &sources).await;
    run.assert_survived();
    run.assert_healthy_stored().await;

    run.assert_read_or_recorded("latin1", &bad.url("/latin1"), 1).await;
    let latin = run.titles("latin1").await;
    assert_eq!(latin.len(), 1, "{}", run.source("latin1"));
    assert!(latin[0].starts_with("Café & Zürich") && latin[0].ends_with("heute"), "accents survive the repair: {latin:?}");
    assert!(!latin[0].contains('\u{FFFD}') && !latin[0].contains("ï¿½"), "{latin:?}");

    run.assert_read_or_recorded("invalid", &bad.url("/invalid"), 3).await;
    let inv = run.titles("invalid").await;
    assert_eq!(inv.len(), 3, "one bad byte costs at most that character: {}", run.source("invalid"));
    assert!(inv.contains(&"First fine item".to_string()) && inv.contains(&"Third fine item".to_string()), "{inv:?}");

    run.assert_read_or_recorded("header-charset", &bad.url("/header-charset"), 1).await;
    assert_eq!(run.titles("header-charset").await, vec!["Привет, мир".to_string()], "{}", run.source("header-charset"));

    run.assert_read_or_recorded("no-version", &bad.url("/no-version"), 1).await;
    assert_eq!(run.titles("no-version").await, vec!["No version".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_items_are_cut_with_bounded_memory() {
    let healthy = Healthy::start().await;
    let bad = HostileServer::start().await.unwrap();
    let mut doc = String::from("<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>Flood</title>\n");
    for i in 0..100_000 {
        doc.push_str(&format!("<item><title>Flood item {i}</title><link>http://example.com/flood/{i}</link></item>\n"));
    }
    doc.push_str("</channel></rss>");
    let size = doc.len();
    bad.serve("/flood", "application/rss+xml", doc);
    let sources = format!("{}{}", healthy.toml(), source_toml("flood", &bad.url("/flood"), false, ""));
    let run = crawl_cli("max_body_bytes = 16777216", &sources).await;
    run.assert_survived();
    run.assert_healthy_stored().await;
    let r = run.source("flood");
    assert_eq!((r["status"].as_str(), r["new"].as_u64()), (Some("fetched"), Some(500)), "max_items_per_feed cuts the flood: {r}");
    eprintln!("100k-item feed ({size} bytes): newsd crawl peak RSS {} MiB", run.max_rss_kib / 1024);
    // The 8 MB document itself is held once; parsing every item whole took ~184 MiB.
    assert!(run.max_rss_kib < 120 * 1024, "peak RSS {} MiB", run.max_rss_kib / 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_address_links_and_redirects_to_them_are_refused() {
    let healthy = Healthy::start().await;
    let feeds = HostileServer::start().await.unwrap(); // feeds on loopback: the user's choice, allowed
    let internal = HostileServer::start().await.unwrap(); // the "internal service" nothing may reach
    let gateway = HostileServer::start().await.unwrap(); // an allow-listed page host that redirects inward
    let p = internal.port();
    let private_links = [
        format!("http://127.0.0.1:{p}/secret/1"),
        format!("http://localhost:{p}/secret/2"),
        format!("http://2130706433:{p}/secret/3"),
        format!("http://0x7f.0.0.1:{p}/secret/4"),
        format!("http://[::1]:{p}/secret/5"),
        format!("http://[::ffff:127.0.0.1]:{p}/secret/6"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://10.0.0.1/admin".to_string(),
    ];
    let mut items: Vec<(String, String, String)> =
        private_links.iter().enumerate().map(|(i, l)| (format!("Internal {i}"), l.clone(), format!("Feed text {i}"))).collect();
    for (i, l) in ["file:///etc/passwd", "javascript:alert(1)", "data:text/html,hello"].iter().enumerate() {
        items.push((format!("Not a page {i}"), l.to_string(), "x".into()));
    }
    let refs: Vec<(&str, &str, &str)> = items.iter().map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str())).collect();
    feeds.serve("/internal", "application/rss+xml", rss(&refs));

    gateway.redirect("/r/1", &internal.url("/secret/r1"));
    gateway.redirect("/r/2", &format!("http://localhost:{p}/secret/r2"));
    let article = format!("<html><head><title>Allowed</title></head><body><article><p>{}</p></article></body></html>", "An allowed page on an allow-listed internal host. ".repeat(8));
    gateway.serve("/ok", "text/html; charset=utf-8", article);
    feeds.serve(
        "/redirecting",
        "application/rss+xml",
        rss(&[("Hop one", &gateway.url("/r/1"), "r1"), ("Hop two", &gateway.url("/r/2"), "r2"), ("Allowed", &gateway.url("/ok"), "ok")]),
    );
    let sources = format!(
        "{}{}{}",
        healthy.toml(),
        source_toml("internal", &feeds.url("/internal"), true, ""),
        source_toml("redirecting", &feeds.url("/redirecting"), true, "")
    );
    let run = crawl_cli(&format!("allow_private_hosts = [\"127.0.0.1:{}\"]", gateway.port()), &sources).await;
    run.assert_survived();
    run.assert_healthy_stored().await;

    assert!(internal.requests().is_empty(), "the internal service was reached: {:?}", internal.requests());
    let r = run.source("internal");
    assert_eq!((r["new"].as_u64(), r["skipped_items"].as_u64()), (Some(8), Some(3)), "file:, javascript:, data: are not articles: {r}");
    let rows = run.store.articles_in_window(0, i64::MAX, &["internal".to_string()], 100).await.unwrap();
    assert_eq!(rows.len(), 8);
    for row in &rows {
        assert_eq!((row.page_status.as_str(), row.extraction.as_str()), ("failed", "feed"), "{row:?}");
        let err = row.page_error.as_deref().unwrap_or("");
        assert!(err.contains("not a public address") && err.contains(&row.url), "{err}");
        assert!(row.body.starts_with("Feed text"), "the feed's text is kept: {row:?}");
    }

    let hop1 = run.store.article_by_url(&gateway.url("/r/1")).await.unwrap().unwrap();
    assert!(hop1.page_error.as_deref().unwrap_or("").contains(&internal.url("/secret/r1")), "the refused hop is named: {hop1:?}");
    let hop2 = run.store.article_by_url(&gateway.url("/r/2")).await.unwrap().unwrap();
    assert!(hop2.page_error.as_deref().unwrap_or("").contains("not a public address"), "{hop2:?}");
    let ok = run.store.article_by_url(&gateway.url("/ok")).await.unwrap().unwrap();
    assert_eq!(ok.page_status, "ok", "an allow-listed host is read: {ok:?}");
    assert_eq!(gateway.hits("/r/1"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_only_and_same_title_items_are_all_stored() {
    let healthy = Healthy::start().await;
    let bad = HostileServer::start().await.unwrap();
    let links: Vec<String> = (0..10).map(|i| format!("http://example.com/only/{i}")).collect();
    bad.serve("/links", "application/rss+xml", rss_raw(&links.iter().map(|l| (String::new(), l.clone(), String::new())).collect::<Vec<_>>()));
    let same: Vec<(String, String, String)> =
        (0..10).map(|i| ("Breaking news".to_string(), format!("http://example.com/same/{i}"), String::new())).collect();
    bad.serve("/titles", "application/rss+xml", rss_raw(&same));
    // Content dedup still applies where there is text enough to identify an article.
    let long = "A syndicated story long enough to be recognised as the same article under another address. ".repeat(4);
    bad.serve(
        "/copies",
        "application/rss+xml",
        rss(&[("Syndicated", "http://example.com/copy/a", &long), ("Syndicated", "http://example.net/copy/b", &long)]),
    );
    let sources = format!(
        "{}{}{}{}",
        healthy.toml(),
        source_toml("links", &bad.url("/links"), false, ""),
        source_toml("titles", &bad.url("/titles"), false, ""),
        source_toml("copies", &bad.url("/copies"), false, "")
    );
    let run = crawl_cli("", &sources).await;
    run.assert_survived();
    run.assert_healthy_stored().await;
    assert_eq!(run.source("links")["new"], 10, "{}", run.source("links"));
    assert_eq!(run.source("titles")["new"], 10, "{}", run.source("titles"));
    assert_eq!((run.source("copies")["new"].as_u64(), run.source("copies")["duplicate"].as_u64()), (Some(1), Some(1)));
    assert_eq!(run.store.count_articles().await.unwrap(), 3 + 10 + 10 + 1);
}

/// In-process app for the scheduled task path (`tasks::run_task`, what the daemon's crawl job calls).
async fn app_with(dir: &Path, healthy: &Healthy, hanging_feed: &str, tweak: impl FnOnce(&mut newsd::config::Config)) -> newsd::app::App {
    let mut config = newsd::config::Config::default();
    config.data_dir = dir.to_path_buf();
    config.crawl.per_host_interval = Duration::ZERO;
    config.crawl.request_timeout = Duration::from_secs(300);
    let source = |name: &str, url: String, full_text: bool| newsd::config::SourceConfig {
        name: name.into(),
        url,
        enabled: true,
        full_text,
        selectors: None,
        language: None,
        min_interval: None,
        allow_private_addresses: Some(true),
    };
    config.sources = vec![source("healthy", healthy.server.url("/feed"), false), source("hanging", hanging_feed.to_string(), true)];
    tweak(&mut config);
    newsd::app::App::open(config).await.unwrap()
}

async fn hanging_site() -> HostileServer {
    let bad = HostileServer::start().await.unwrap();
    let items: Vec<(String, String, String)> =
        (0..5).map(|i| (format!("Hanging {i}"), bad.url(&format!("/hang/{i}")), format!("What the feed says about story {i}."))).collect();
    for i in 0..5 {
        bad.hang(&format!("/hang/{i}"));
    }
    let refs: Vec<(&str, &str, &str)> = items.iter().map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str())).collect();
    bad.serve("/feed", "application/rss+xml", rss(&refs));
    bad
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_pages_are_bounded_by_the_source_budget_and_left_pending() {
    let healthy = Healthy::start().await;
    let bad = hanging_site().await;
    let dir = tempfile::tempdir().unwrap();
    let app = app_with(dir.path(), &healthy, &bad.url("/feed"), |c| c.crawl.source_time_budget = Duration::from_secs(2)).await;
    let task = newsd::tasks::TaskSpec::Crawl { sources: vec![] };
    // Generous: only guards against the pass never ending (pages hang for 300 s each).
    let out = tokio::time::timeout(Duration::from_secs(120), newsd::tasks::run_task(&app, &task)).await.expect("the pass ended").unwrap();
    assert_eq!(out["totals"]["new"], 8, "{out}");
    assert_eq!(out["totals"]["pages_pending"], 5, "{out}");
    let crawler = app.crawler().unwrap();
    let opts = newsd::crawl::CrawlOptions { sources: vec!["hanging".into()], force: true };
    let second = tokio::time::timeout(Duration::from_secs(120), crawler.crawl(&opts)).await.expect("the pass ended").unwrap();
    let h = &second.sources[0];
    // Pass 2 retries the pending pages, which hang again: none finishes, all stay pending, the pass still ends.
    assert_eq!((h.new, h.duplicate, h.pages_not_reached, h.pages_pending), (0, 5, 5, 5), "{h:?}");
    let rows = app.store.articles_in_window(0, i64::MAX, &["hanging".into()], 100).await.unwrap();
    assert_eq!(rows.len(), 5);
    assert!(rows.iter().all(|a| a.page_status == "pending" && a.body.starts_with("What the feed says")), "{rows:?}");
    assert_eq!(app.store.source_health(&["healthy".into()]).await.unwrap()[0].articles, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_cancelled_by_the_job_timeout_keeps_what_it_read() {
    let healthy = Healthy::start().await;
    let bad = hanging_site().await;
    let dir = tempfile::tempdir().unwrap();
    // The default budget (10 min) is longer than this job's timeout: the job is cancelled mid-pass.
    let app = app_with(dir.path(), &healthy, &bad.url("/feed"), |_| {}).await;
    let task = newsd::tasks::TaskSpec::Crawl { sources: vec![] };
    let cancelled = tokio::time::timeout(Duration::from_secs(4), newsd::tasks::run_task(&app, &task)).await;
    assert!(cancelled.is_err(), "the pass should still be waiting on the hanging pages");
    let rows = app.store.articles_in_window(0, i64::MAX, &["hanging".into()], 100).await.unwrap();
    assert_eq!(rows.len(), 5, "the feed's items are stored before their pages are read");
    assert!(rows.iter().all(|a| a.page_status == "pending" && a.extraction == "feed"));
    assert_eq!(app.store.source_health(&["healthy".into()]).await.unwrap()[0].articles, 3);
    assert_eq!(bad.hits("/feed"), 1);
}
