//! The real `newsd run` daemon with a schedule that crawls hostile feeds beside a healthy one, every second: the
//! daemon keeps running, every crawl run ends `ok` (never `panicked`), the hostile sources are recorded and backed
//! off, and the healthy source is stored. Served by a real HTTP server on 127.0.0.1 (`testkit::HostileServer`).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use newsd::store::Store;
use newsd::testkit::HostileServer;

const BIN: &str = env!("CARGO_BIN_EXE_newsd");

struct Daemon {
    child: Child,
    log: std::path::PathBuf,
}

impl Daemon {
    fn start(dir: &Path) -> Daemon {
        let log = dir.join("daemon.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(BIN)
            .args(["-c", dir.join("newsd.toml").to_str().unwrap(), "run"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("starting newsd run");
        Daemon { child, log }
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rss(items: &[(String, String)]) -> String {
    let mut s = String::from("<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>T</title>");
    for (title, link) in items {
        s.push_str(&format!("<item><title>{title}</title><link>{link}</link><description>About {title}.</description></item>"));
    }
    s.push_str("</channel></rss>");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_crawling_hostile_feeds_keeps_running_backs_them_off_and_stores_the_healthy_one() {
    let healthy = HostileServer::start().await.unwrap();
    let healthy_items: Vec<(String, String)> = (0..4).map(|i| (format!("Healthy {i}"), format!("http://example.org/h/{i}"))).collect();
    healthy.serve("/feed", "application/rss+xml", rss(&healthy_items));

    let bad = HostileServer::start().await.unwrap();
    // Not a feed at all: a guaranteed failure, so back-off can be observed.
    bad.serve("/garbage", "application/rss+xml", vec![0xFFu8, 0x00, 0x3C, 0x3C, 0x3C, 0xFE, 0x12, 0x80]);
    // UTF-16BE without a BOM (quick-xml panicked on it inside feed-rs).
    let doc = rss(&[("Grüße".into(), "http://example.com/u16/1".into())]).replace("<?xml version=\"1.0\"?>", "<?xml version=\"1.0\" encoding=\"UTF-16\"?>");
    let be: Vec<u8> = doc.encode_utf16().flat_map(|u| u.to_be_bytes()).collect();
    bad.serve("/utf16", "application/rss+xml", be);
    // Escaped HTML nested 65,536 deep in a description (the recursive walker overflowed the stack).
    let deep = format!("{}deep{}", "&lt;b&gt;".repeat(65_536), "&lt;/b&gt;".repeat(65_536));
    bad.serve(
        "/deep",
        "application/rss+xml",
        format!("<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>D</title><item><title>Deep</title><link>http://example.com/deep/1</link><description>{deep}</description></item></channel></rss>"),
    );

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut config = format!(
        "data_dir = \"data\"\n\n[crawl]\nper_host_interval = \"0s\"\nrequest_timeout = \"5s\"\nbackoff_base = \"1h\"\n\n\
         [daemon]\nschedules_dir = \"schedules\"\nshutdown_grace = \"5s\"\n\n[logging]\nfiles = false\n\n\
         [embed]\nmodel_dir = \"{}\"\nonnxruntime_library = \"{}\"\n",
        repo.join("models/all-MiniLM-L6-v2").display(),
        repo.join("models/onnxruntime/libonnxruntime.so.1.32.0").display()
    );
    for (name, url) in [("healthy", healthy.url("/feed")), ("garbage", bad.url("/garbage")), ("utf16", bad.url("/utf16")), ("deep", bad.url("/deep"))] {
        config.push_str(&format!("\n[[sources]]\nname = \"{name}\"\nurl = \"{url}\"\n"));
    }
    std::fs::write(dir.join("newsd.toml"), config).unwrap();
    std::fs::create_dir_all(dir.join("schedules")).unwrap();
    std::fs::write(dir.join("schedules/crawl.toml"), "[[job]]\nname = \"crawl\"\ncron = \"* * * * * *\"\ntask = \"crawl\"\n").unwrap();
    let url = format!("sqlite://{}", dir.join("data/newsd.db").display());
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let store = Store::open(&url, 2, Duration::from_secs(10)).await.unwrap();
    let mut daemon = Daemon::start(dir);

    // Wait for four finished crawl runs (generous deadline; nothing asserts on timing).
    let deadline = Instant::now() + Duration::from_secs(60);
    let runs = loop {
        if let Some(st) = daemon.exited() {
            panic!("the daemon exited ({st}):\n{}", daemon.log_tail());
        }
        let runs: Vec<_> = store.job_runs(Some("crawl"), 100).await.unwrap().into_iter().filter(|r| r.finished_at.is_some()).collect();
        if runs.len() >= 4 {
            break runs;
        }
        assert!(Instant::now() < deadline, "only {} crawl runs finished:\n{}", runs.len(), daemon.log_tail());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(daemon.exited().is_none(), "the daemon keeps running:\n{}", daemon.log_tail());
    for r in &runs {
        assert_eq!(r.outcome, "ok", "a crawl with hostile sources is still a successful run: {r:?}\n{}", daemon.log_tail());
    }

    // The healthy source is stored in full.
    let health = store.source_health(&[]).await.unwrap();
    let h = |name: &str| health.iter().find(|s| s.name == name).unwrap().clone();
    assert_eq!(h("healthy").articles, 4);
    assert!(h("healthy").healthy);

    // The broken feed failed once, its error names its URL, and it is backed off: not fetched by later runs.
    let garbage = h("garbage");
    assert_eq!(garbage.consecutive_failures, 1, "{garbage:?}");
    assert!(garbage.last_error.as_deref().unwrap_or("").contains(&bad.url("/garbage")), "{garbage:?}");
    assert!(garbage.next_fetch_at > newsd::store::now_ms() + 30 * 60 * 1000, "backed off: {garbage:?}");
    assert_eq!(bad.hits("/garbage"), 1, "a backed-off source is not fetched again");

    // The feeds that used to panic or crash: read, or recorded against the source with its URL and backed off.
    for (name, path) in [("utf16", "/utf16"), ("deep", "/deep")] {
        let s = h(name);
        if s.consecutive_failures > 0 {
            assert!(s.last_error.as_deref().unwrap_or("").contains(&bad.url(path)), "{s:?}");
            assert_eq!(bad.hits(path), 1, "{name} is backed off");
        } else {
            assert_eq!(s.articles, 1, "{s:?}");
        }
    }
}
