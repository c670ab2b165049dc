//! The HTTP API and the dashboard, end to end (issue 13): the real `newsd run` binary on a local news site
//! (`newsd::testkit::NewsServer` on 127.0.0.1), the real model and FAISS index behind the compute worker, a real
//! webhook receiver, and for the dashboard a real headless Chromium driven through chromedriver (WebDriver over
//! HTTP). Nothing is mocked.
//!
//! - `api_contract`: every endpoint, the errors (bad `k`, unknown ids, oversized bodies, cross-site POSTs), no
//!   secret in any answer, "run now" recorded like a scheduled run, `/api/analyze` returning the analysis id;
//! - `tokens`: a non-loopback bind without a token is refused at start; read-only and admin tokens; the dashboard's
//!   login;
//! - `backpressure`: a full compute queue answers 503 with Retry-After (counted in /metrics), a queue with room
//!   never rejects;
//! - `cli_through_the_daemon`: `newsd search`/`status`/`analyze` ask the running daemon, print the same results as
//!   `--local`, and the CLI process stays small (peak RSS sampled from /proc);
//! - `dashboard_in_a_browser`: search, an analysis, a source, "run now" and its run appearing, hostile titles
//!   rendered as text (no script runs), a screenshot under target/.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use newsd::testkit::{corpus, CorpusArticle, NewsServer, WebhookReceiver};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_newsd");
const HOOK_ENV: &str = "NEWSD_API_TEST_HOOK";

struct Daemon {
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    fn start(dir: &Path, env: &[(&str, &str)]) -> Daemon {
        let log = dir.join(format!("daemon-{}.log", Utc::now().timestamp_nanos_opt().unwrap_or(0)));
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(["-c", dir.join("newsd.toml").to_str().unwrap(), "run"])
            .env("RUST_LOG", "info")
            .env_remove("NEWSD_API_TOKEN")
            .env_remove("NEWSD_API_READ_TOKEN")
            .env("NEWSD_API_TEST_HOOK_KEY", "s")
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out));
        for (k, v) in env {
            cmd.env(k, v);
        }
        Daemon { child: Some(cmd.spawn().expect("starting newsd run")), log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().unwrap().try_wait().unwrap()
    }

    /// The address the daemon recorded (it listens on port 0).
    async fn http_addr(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(line) = self.log().lines().find(|l| l.contains("HTTP endpoint: dashboard")) {
                if let Some(rest) = line.split("http://").nth(1) {
                    return rest.split('/').next().unwrap().to_string();
                }
            }
            if let Some(st) = self.exited() {
                panic!("the daemon exited ({st}):\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "no HTTP endpoint in the log:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn stop(&mut self) {
        if let Some(c) = self.child.as_ref() {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        }
        if let Some(mut c) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(30);
            while c.try_wait().unwrap().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Corpus articles of two outlets, re-dated into the last hours (so an analysis "now" has a window of news).
fn recent_articles(per_outlet: usize) -> Vec<CorpusArticle> {
    let all = corpus::load().expect("the test corpus is fetched by scripts/setup.sh (see README)");
    let mut out = Vec::new();
    for outlet in ["bbc", "cnn"] {
        let mut seen = std::collections::HashSet::new();
        out.extend(
            all.iter()
                .filter(|a| a.source == outlet && a.text.chars().count() > 400 && !a.title.trim().is_empty())
                .filter(|a| seen.insert(a.title.clone()))
                .take(per_outlet)
                .cloned(),
        );
    }
    let now = Utc::now();
    for (i, a) in out.iter_mut().enumerate() {
        a.published = Some(now - chrono::Duration::minutes(10 + 7 * i as i64));
    }
    out
}

/// `embed_extra`: more `[embed]` settings.
fn write_config(dir: &Path, site: &NewsServer, listen: &str, embed_extra: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut text = format!(
        "data_dir = \"data\"\n\n[embed]\nmodel_dir = \"{}\"\nonnxruntime_library = \"{}\"\n{}\n\n[crawl]\nper_host_interval = \"10ms\"\nallow_private_addresses = true\nbatch_size = 50\n\n\
         [daemon]\nschedules_dir = \"schedules\"\nhttp_listen = \"{listen}\"\nshutdown_grace = \"20s\"\n\n\
         [logging]\nfiles = false\n\n\
         [[notify.targets]]\nname = \"hook\"\nkind = \"webhook\"\nurl_env = \"{HOOK_ENV}\"\nsecret_env = \"NEWSD_API_TEST_HOOK_KEY\"\n\n\
         [[analysis.profiles]]\nname = \"brief\"\nwindow = \"24h\"\ntargets = [\"hook\"]\n",
        root.join("models/all-MiniLM-L6-v2").display(),
        root.join("models/onnxruntime/libonnxruntime.so.1.32.0").display(),
        embed_extra,
    );
    for (i, (name, url)) in site.feed_urls().into_iter().enumerate() {
        // A feed URL with a key in its query: it must never appear in an answer.
        let url = if i == 0 { format!("{url}?key=FEEDSECRET123") } else { url };
        text.push_str(&format!("\n[[sources]]\nname = \"{name}\"\nurl = \"{url}\"\nfull_text = true\n"));
    }
    std::fs::write(dir.join("newsd.toml"), text).unwrap();
    std::fs::create_dir_all(dir.join("schedules")).unwrap();
    std::fs::write(
        dir.join("schedules/jobs.toml"),
        "[[job]]\nname = \"crawl\"\ncron = \"*/2 * * * * *\"\ntask = \"crawl\"\n\n\
         [[job]]\nname = \"embed\"\ncron = \"*/2 * * * * *\"\ntask = \"embed\"\n\n\
         [[job]]\nname = \"brief\"\ncron = \"0 0 5 1 1 *\"\ntask = \"analyze\"\nprofile = \"brief\"\n\n\
         [[job]]\nname = \"deliver\"\ncron = \"*/3 * * * * *\"\ntask = \"notify\"\n",
    )
    .unwrap();
}

struct Api {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
}

impl Api {
    fn new(addr: &str) -> Api {
        Api { base: format!("http://{addr}"), http: reqwest::Client::new(), token: None }
    }

    async fn call(&self, method: reqwest::Method, path: &str) -> (u16, Value, reqwest::header::HeaderMap) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)), headers)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let (s, v, _) = self.call(reqwest::Method::GET, path).await;
        (s, v)
    }

    async fn ok(&self, path: &str) -> Value {
        let (s, v) = self.get(path).await;
        assert_eq!(s, 200, "GET {path}: {v}");
        v
    }

    async fn post(&self, path: &str) -> (u16, Value) {
        let (s, v, _) = self.call(reqwest::Method::POST, path).await;
        (s, v)
    }
}

/// Polls until `check` gives Some, or fails with the daemon's log.
async fn wait_for<T, F, Fut>(what: &str, limit: Duration, daemon: &mut Daemon, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if daemon.exited().is_some() || Instant::now() > deadline {
            let log = daemon.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            panic!("timed out waiting for {what}\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn error_code(v: &Value) -> &str {
    v.pointer("/error/code").and_then(|c| c.as_str()).unwrap_or("(no error code)")
}

/// A running daemon over `n` articles per outlet, all crawled and indexed.
async fn indexed_daemon(dir: &Path, site: &NewsServer, n: usize, extra: &str, env: &[(&str, &str)]) -> (Daemon, Api) {
    write_config(dir, site, "127.0.0.1:0", extra);
    let mut d = Daemon::start(dir, env);
    let addr = d.http_addr().await;
    let mut api = Api::new(&addr);
    api.token = env.iter().find(|(k, _)| *k == "NEWSD_API_TOKEN").map(|(_, v)| v.to_string());
    let want = 2 * n as i64;
    wait_for("every article crawled and indexed", Duration::from_secs(240), &mut d, || async {
        let (s, v) = api.get("/api/status").await;
        let indexed = v.pointer("/index/index_size").and_then(|x| x.as_i64()).unwrap_or(0);
        (s == 200 && v["articles"].as_i64() == Some(want) && indexed == want).then_some(())
    })
    .await;
    (d, api)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_contract() {
    let rx = WebhookReceiver::start("s").await.unwrap();
    let articles = recent_articles(15);
    let site = NewsServer::start(articles.clone()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let hook_url = rx.url("api-hook");
    let (mut d, api) = indexed_daemon(dir.path(), &site, 15, "", &[(HOOK_ENV, hook_url.as_str())]).await;

    // OpenAPI: every endpoint documented.
    let doc = api.ok("/api/openapi.json").await;
    for path in [
        "/api/search",
        "/api/articles",
        "/api/articles/{id}",
        "/api/analyses",
        "/api/analyses/latest",
        "/api/analyses/{id}",
        "/api/sources",
        "/api/jobs",
        "/api/jobs/{name}/runs",
        "/api/jobs/{name}/run",
        "/api/analyze",
        "/api/status",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing from the OpenAPI document");
    }

    // Search: an article's own title finds it first; k and source filter; errors.
    let probe = &articles[3];
    let q = url_q(&probe.title);
    let r = api.ok(&format!("/api/search?q={q}&k=3")).await;
    assert_eq!(r["results"].as_array().unwrap().len(), 3);
    assert_eq!(r["results"][0]["title"].as_str().unwrap(), newsd::testkit::squash(&probe.title));
    let top_id = r["results"][0]["article_id"].as_i64().unwrap();
    let only_cnn = api.ok(&format!("/api/search?q={q}&k=5&source=cnn")).await;
    assert!(only_cnn["results"].as_array().unwrap().iter().all(|x| x["source"] == "cnn"), "{only_cnn}");
    assert!(!only_cnn["results"].as_array().unwrap().is_empty());
    for (path, what) in [
        (format!("/api/search?q={q}&k=0"), "k"),
        (format!("/api/search?q={q}&k=1000"), "k"),
        ("/api/search?k=3".to_string(), "q"),
        (format!("/api/search?q={q}&since=someday"), "since"),
        (format!("/api/search?q={q}&k=abc"), "k"),
    ] {
        let (s, v) = api.get(&path).await;
        assert_eq!(s, 400, "{path}: {v}");
        assert_eq!(error_code(&v), "bad_request", "{path}: {v}");
        assert!(v.pointer("/error/message").unwrap().as_str().unwrap().contains(what), "{path}: {v}");
    }

    // Articles: filter by source, paging, title search, one article with similar ones, unknown id.
    let page1 = api.ok("/api/articles?source=bbc&limit=10").await;
    let ids1: Vec<i64> = page1["articles"].as_array().unwrap().iter().map(|a| a["id"].as_i64().unwrap()).collect();
    assert_eq!(ids1.len(), 10);
    assert!(page1["articles"].as_array().unwrap().iter().all(|a| a["source"] == "bbc"));
    let before = page1["next_before"].as_i64().expect("a next page");
    let page2 = api.ok(&format!("/api/articles?source=bbc&limit=10&before={before}")).await;
    let ids2: Vec<i64> = page2["articles"].as_array().unwrap().iter().map(|a| a["id"].as_i64().unwrap()).collect();
    assert_eq!(ids2.len(), 5);
    assert!(ids2.iter().all(|id| !ids1.contains(id) && *id < before));
    let word = probe.title.split_whitespace().max_by_key(|w| w.len()).unwrap().to_lowercase();
    let titled = api.ok(&format!("/api/articles?q={}", url_q(&word))).await;
    assert!(!titled["articles"].as_array().unwrap().is_empty());
    assert!(titled["articles"].as_array().unwrap().iter().all(|a| a["title"].as_str().unwrap().to_lowercase().contains(&word)));
    let one = api.ok(&format!("/api/articles/{top_id}")).await;
    assert_eq!(one["article"]["id"].as_i64(), Some(top_id));
    assert!(one["article"]["body"].as_str().unwrap().len() > 300);
    let similar = one["similar"].as_array().unwrap();
    assert_eq!(similar.len(), 5, "{one}");
    assert!(similar.iter().all(|s| s["article_id"].as_i64() != Some(top_id)));
    let (s, v) = api.get("/api/articles/999999").await;
    assert_eq!((s, error_code(&v)), (404, "not_found"), "{v}");
    let (s, v) = api.get("/api/articles/abc").await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = api.get("/api/articles?limit=100000").await;
    assert_eq!((s, error_code(&v)), (400, "bad_request"), "{v}");

    // Sources: health and counts, the feed key never shown.
    let sources = api.ok("/api/sources").await;
    let list = sources.as_array().unwrap();
    assert_eq!(list.len(), 2);
    for s in list {
        assert_eq!(s["articles"].as_i64(), Some(15), "{s}");
        assert_eq!(s["healthy"], true, "{s}");
        assert!(s["next_fetch_at"].as_i64().unwrap() > 0);
    }

    // Analyze now: runs as a job, answers the analysis id; the analysis lists its stories and deliveries.
    let (s, a) = api.post("/api/analyze?profile=brief").await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(a["job"], "brief", "the schedule's analyze job for the profile ran: {a}");
    assert_eq!(a["outcome"], "ok", "{a}");
    let analysis_id = a["analysis_id"].as_i64().expect("analysis id");
    let (s, v) = api.post("/api/analyze?profile=nope").await;
    assert_eq!((s, error_code(&v)), (400, "bad_request"), "{v}");
    let latest = api.ok("/api/analyses/latest").await;
    assert_eq!(latest["id"].as_i64(), Some(analysis_id));
    assert!(latest["doc"]["stories"].as_array().is_some_and(|s| !s.is_empty()), "{latest}");
    assert!(latest["text"].as_str().unwrap().len() > 100);
    let one = api.ok(&format!("/api/analyses/{analysis_id}")).await;
    assert_eq!(one["id"].as_i64(), Some(analysis_id));
    let delivered = wait_for("the brief delivered", Duration::from_secs(60), &mut d, || async {
        let v = api.ok(&format!("/api/analyses/{analysis_id}")).await;
        let n = v["notifications"].as_array().unwrap().clone();
        (!n.is_empty() && n.iter().all(|x| x["status"] == "delivered")).then_some(n)
    })
    .await;
    assert!(delivered.iter().all(|n| n["target"] == "hook"));
    let list = api.ok("/api/analyses?limit=5").await;
    assert_eq!(list["analyses"][0]["id"].as_i64(), Some(analysis_id));
    let (s, v) = api.get("/api/analyses/424242").await;
    assert_eq!((s, error_code(&v)), (404, "not_found"), "{v}");

    // The article's story.
    let story_article = latest["doc"]["stories"][0]["articles"][0]["id"].as_i64().unwrap();
    let with_story = api.ok(&format!("/api/articles/{story_article}")).await;
    assert_eq!(with_story["story"]["analysis_id"].as_i64(), Some(analysis_id), "{with_story}");

    // Run now: recorded like a scheduled run (fired_by manual); unknown jobs are 404.
    let (s, v) = api.post("/api/jobs/deliver/run").await;
    assert!(s == 202 || s == 409, "{s} {v}");
    let runs = wait_for("the manual run recorded", Duration::from_secs(30), &mut d, || async {
        let r = api.ok("/api/jobs/deliver/runs?limit=50").await;
        let runs = r["runs"].as_array().unwrap().clone();
        runs.iter().any(|x| x["fired_by"] == "manual" && x["outcome"] != "running").then_some(runs)
    })
    .await;
    assert!(runs.iter().any(|x| x["fired_by"] == "schedule"), "scheduled runs are listed too");
    let (s, v) = api.post("/api/jobs/nope/run").await;
    assert_eq!((s, error_code(&v)), (404, "not_found"), "{v}");
    let jobs = api.ok("/api/jobs").await;
    let names: Vec<&str> = jobs["jobs"].as_array().unwrap().iter().map(|j| j["name"].as_str().unwrap()).collect();
    for n in ["crawl", "embed", "brief", "deliver"] {
        assert!(names.contains(&n), "{names:?}");
    }

    // Oversized bodies, cross-site POSTs, unknown endpoints: clear JSON errors.
    let big = vec![b'x'; 80_000];
    let resp = api.http.post(format!("{}/api/jobs/deliver/run", api.base)).body(big.clone()).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(error_code(&v), "body_too_large");
    let chunked = reqwest::Body::wrap_stream(futures::stream::iter(big.chunks(8192).map(|c| Ok::<_, std::io::Error>(c.to_vec())).collect::<Vec<_>>()));
    let resp = api.http.post(format!("{}/api/jobs/deliver/run", api.base)).body(chunked).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 413, "a chunked body over the limit");
    let resp = api.http.post(format!("{}/api/jobs/deliver/run", api.base)).header("Origin", "http://evil.example").send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(error_code(&v), "cross_site");
    let (s, v) = api.get("/api/nothing-here").await;
    assert_eq!((s, error_code(&v)), (404, "not_found"), "{v}");

    // Status: what `status --json` prints locally.
    let remote = api.ok("/api/status").await;
    let local = cli(dir.path(), &["--local", "status", "--json"]);
    let local: Value = serde_json::from_str(&local.0).unwrap();
    assert_eq!(remote["articles"], local["articles"]);
    assert_eq!(remote["sources"].as_array().unwrap().len(), local["sources"].as_array().unwrap().len());

    // No secret in any answer: the webhook URL and the feed key.
    let mut all = String::new();
    for path in ["/api/status", "/api/sources", "/api/jobs", "/api/analyses/latest", "/api/jobs/brief/runs", "/api/openapi.json", "/"] {
        let (_, v, _) = api.call(reqwest::Method::GET, path).await;
        all.push_str(&v.to_string());
    }
    assert!(!all.contains(&hook_url) && !all.contains("api-hook"), "the webhook URL leaked");
    assert!(!all.contains("FEEDSECRET123"), "a feed URL's key leaked");

    // The dashboard's schedule page: the schedule as loaded, and a refused edit with its file:line.
    std::fs::write(dir.path().join("schedules/broken.toml"), "[[job]]\nname = \"bad\"\ncron = \"not a cron\"\ntask = \"crawl\"\n").unwrap();
    let page = wait_for("the refused edit on /schedule", Duration::from_secs(30), &mut d, || async {
        let (_, v, _) = api.call(reqwest::Method::GET, "/schedule").await;
        let html = v.as_str().unwrap_or("").to_string();
        html.contains("id=\"refused\"").then_some(html)
    })
    .await;
    assert!(page.contains("broken.toml:3: job &quot;bad&quot;: cron expression"), "the refused edit names file:line: {page}");
    // (minijinja escapes "/" too)
    assert!(page.contains("<code>*&#x2f;2 * * * * *</code>"), "the schedule as loaded is still shown");
    let jobs = api.ok("/api/jobs").await;
    assert!(jobs["schedule_error"].as_str().is_some_and(|e| e.contains("broken.toml")), "{jobs}");
    std::fs::remove_file(dir.path().join("schedules/broken.toml")).unwrap();

    // Counted in /metrics.
    let metrics = api.http.get(format!("{}/metrics", api.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("newsd_api_requests_total{route=\"/api/search\",status=\"200\"}"), "{metrics}");
    assert!(metrics.contains("newsd_api_requests_total{route=\"/api/search\",status=\"400\"}"));
    d.stop();
}

fn url_q(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Runs the CLI on the daemon's directory: (stdout, stderr, peak RSS in KiB).
fn cli(dir: &Path, args: &[&str]) -> (String, String, i64) {
    cli_env(dir, args, &[])
}

/// The peak RSS is the process's VmHWM from /proc, sampled every millisecond until it exits (wait4's ru_maxrss
/// would not do: Linux carries the parent's RSS at fork over into a child's maximum, so every child of this large
/// test process would report at least its size).
fn cli_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (String, String, i64) {
    let mut cmd = Command::new(BIN);
    cmd.args(["-c", dir.join("newsd.toml").to_str().unwrap()]).args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    let status_path = format!("/proc/{}/status", child.id());
    let sampler = std::thread::spawn(move || {
        let mut peak = 0i64;
        while let Ok(text) = std::fs::read_to_string(&status_path) {
            match text.lines().find_map(|l| l.strip_prefix("VmHWM:")) {
                Some(v) => peak = peak.max(v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0)),
                None => break, // a zombie: the process has exited
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        peak
    });
    let out = child.wait_with_output().unwrap();
    let peak = sampler.join().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(out.status.success(), "newsd {args:?} failed:\n{stderr}");
    (stdout, stderr, peak)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_through_the_daemon() {
    let articles = recent_articles(10);
    let site = NewsServer::start(articles.clone()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut d, api) = indexed_daemon(dir.path(), &site, 10, "", &[(HOOK_ENV, "http://127.0.0.1:9/unused")]).await;

    let mut worst_remote = 0;
    let mut best_local = i64::MAX;
    for probe in articles.iter().step_by(5) {
        let (remote, _, remote_kib) = cli(dir.path(), &["search", &probe.title, "-k", "5", "--json"]);
        let (local, _, local_kib) = cli(dir.path(), &["--local", "search", &probe.title, "-k", "5", "--json"]);
        let (remote, local): (Value, Value) = (serde_json::from_str(&remote).unwrap(), serde_json::from_str(&local).unwrap());
        let ids = |v: &Value| v["results"].as_array().unwrap().iter().map(|r| r["article_id"].as_i64().unwrap()).collect::<Vec<_>>();
        assert_eq!(ids(&remote), ids(&local), "the same results through the daemon");
        for (a, b) in remote["results"].as_array().unwrap().iter().zip(local["results"].as_array().unwrap()) {
            assert!((a["score"].as_f64().unwrap() - b["score"].as_f64().unwrap()).abs() < 1e-4);
        }
        worst_remote = worst_remote.max(remote_kib);
        best_local = best_local.min(local_kib);
    }
    // Human output too.
    let (remote_text, _, _) = cli(dir.path(), &["search", &articles[0].title, "-k", "3"]);
    let (local_text, _, _) = cli(dir.path(), &["--local", "search", &articles[0].title, "-k", "3"]);
    assert_eq!(remote_text, local_text);
    let model_bytes = std::fs::metadata(Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2/model.onnx")).unwrap().len() as i64;
    println!(
        "cli search peak RSS: through the daemon {:.1} MiB, local {:.1} MiB (model file {:.1} MiB)",
        worst_remote as f64 / 1024.0,
        best_local as f64 / 1024.0,
        model_bytes as f64 / 1048576.0
    );
    assert!(worst_remote * 1024 < model_bytes, "the CLI through the daemon loads no model: {worst_remote} KiB");
    assert!(worst_remote * 2 < best_local, "{worst_remote} KiB vs {best_local} KiB locally");

    // status and analyze through the daemon.
    let (remote, _, _) = cli(dir.path(), &["status", "--json"]);
    let remote: Value = serde_json::from_str(&remote).unwrap();
    assert_eq!(remote["daemon"]["running"], true);
    assert_eq!(remote["articles"].as_i64(), Some(20));
    let (text, err, _) = cli(dir.path(), &["analyze", "--profile", "brief"]);
    assert!(text.len() > 100, "{text}\n{err}");
    let runs = api.ok("/api/jobs/brief/runs").await;
    assert!(runs["runs"].as_array().unwrap().iter().any(|r| r["fired_by"] == "manual" && r["outcome"] == "ok"), "{runs}");
    d.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens() {
    let site = NewsServer::start(recent_articles(3)).await.unwrap();
    // A non-loopback bind without a token: refused at start, naming the variable.
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &site, "0.0.0.0:0", "");
    let mut d = Daemon::start(dir.path(), &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = d.exited() {
            break st;
        }
        assert!(Instant::now() < deadline, "the daemon kept running:\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!status.success());
    assert!(d.log().contains("NEWSD_API_TOKEN") && d.log().contains("not a loopback address"), "{}", d.log());

    // With tokens: none -> 401, read-only -> GET only, admin -> everything; the dashboard asks to log in.
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &site, "127.0.0.1:0", "");
    let env = [("NEWSD_API_TOKEN", "admin-token-1"), ("NEWSD_API_READ_TOKEN", "read-token-1"), (HOOK_ENV, "http://127.0.0.1:9/x")];
    let mut d = Daemon::start(dir.path(), &env);
    let addr = d.http_addr().await;
    let mut api = Api::new(&addr);
    let (s, v) = api.get("/api/sources").await;
    assert_eq!((s, error_code(&v)), (401, "unauthorized"), "{v}");
    api.token = Some("wrong".into());
    assert_eq!(api.get("/api/sources").await.0, 401);
    api.token = Some("read-token-1".into());
    assert_eq!(api.get("/api/sources").await.0, 200);
    let (s, v) = api.post("/api/jobs/deliver/run").await;
    assert_eq!((s, error_code(&v)), (403, "forbidden"), "{v}");
    api.token = Some("admin-token-1".into());
    let (s, v) = api.post("/api/jobs/deliver/run").await;
    assert!(s == 202 || s == 409, "{s} {v}");
    // /healthz and /metrics stay open for monitoring.
    assert_eq!(reqwest::get(format!("http://{addr}/metrics")).await.unwrap().status().as_u16(), 200);
    // Dashboard: redirected to the login page; a wrong token is refused; the right one sets a cookie.
    let browser = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = browser.get(format!("http://{addr}/")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(r.headers()["location"], "/login");
    let r = browser.post(format!("http://{addr}/login")).form(&[("token", "nope")]).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = browser.post(format!("http://{addr}/login")).form(&[("token", "read-token-1")]).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    let page = browser.get(format!("http://{addr}/")).header("Cookie", cookie).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.text().await.unwrap().contains("Latest analyses"));
    // The CLI finds the token in the same variable.
    let (out, err, _) = cli_env(dir.path(), &["status", "--json"], &[("NEWSD_API_READ_TOKEN", "read-token-1")]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    assert_eq!(v["daemon"]["running"], true);
    d.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backpressure() {
    let articles = recent_articles(40);
    let site = NewsServer::start(articles.clone()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A queue of 2: a burst of searches fills it.
    let (mut d, api) = indexed_daemon(dir.path(), &site, 40, "", &[(HOOK_ENV, "http://127.0.0.1:9/x")]).await;
    d.stop();
    let text = std::fs::read_to_string(dir.path().join("newsd.toml")).unwrap();
    write_config(dir.path(), &site, "127.0.0.1:0", "queue_capacity = 2");
    let mut d = Daemon::start(dir.path(), &[(HOOK_ENV, "http://127.0.0.1:9/x")]);
    let addr = d.http_addr().await;
    let api = Api { base: format!("http://{addr}"), ..api };
    wait_for("the worker loaded", Duration::from_secs(60), &mut d, || async { (api.get("/api/search?q=warmup&k=1").await.0 == 200).then_some(()) }).await;
    let answers = burst(&api, &articles, 200).await;
    let busy: Vec<_> = answers.iter().filter(|(s, _, _)| *s == 503).collect();
    let ok = answers.iter().filter(|(s, _, _)| *s == 200).count();
    println!("burst of 200 searches on a queue of 2: {ok} answered, {} told to retry", busy.len());
    assert_eq!(ok + busy.len(), 200, "only 200 or 503: {:?}", answers.iter().map(|a| a.0).collect::<Vec<_>>());
    assert!(!busy.is_empty(), "a full queue answers 503");
    assert!(ok > 0);
    for (_, v, h) in &busy {
        assert_eq!(error_code(v), "busy");
        assert_eq!(h["retry-after"], "1");
    }
    let metrics = api.http.get(format!("{}/metrics", api.base)).send().await.unwrap().text().await.unwrap();
    let counted: u64 = metrics.lines().find_map(|l| l.strip_prefix("newsd_api_busy_total ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    assert_eq!(counted, busy.len() as u64, "{metrics}");
    d.stop();

    // The default queue (256): the same burst waits its turn, nothing is rejected.
    std::fs::write(dir.path().join("newsd.toml"), text).unwrap();
    let mut d = Daemon::start(dir.path(), &[(HOOK_ENV, "http://127.0.0.1:9/x")]);
    let addr = d.http_addr().await;
    let api = Api { base: format!("http://{addr}"), ..api };
    wait_for("the worker loaded", Duration::from_secs(60), &mut d, || async { (api.get("/api/search?q=warmup&k=1").await.0 == 200).then_some(()) }).await;
    let answers = burst(&api, &articles, 200).await;
    assert!(answers.iter().all(|(s, _, _)| *s == 200), "{:?}", answers.iter().map(|a| a.0).filter(|s| *s != 200).collect::<Vec<_>>());
    d.stop();
}

/// `n` concurrent searches (articles' titles, cycled).
async fn burst(api: &Api, articles: &[CorpusArticle], n: usize) -> Vec<(u16, Value, reqwest::header::HeaderMap)> {
    let paths: Vec<String> = articles.iter().cycle().take(n).map(|a| format!("/api/search?q={}&k=10", url_q(&a.title))).collect();
    futures::future::join_all(paths.iter().map(|p| api.call(reqwest::Method::GET, p))).await
}

// ------------------------------------------------------------------------------------------------ the browser

/// A WebDriver session on chromedriver + headless Chromium (Debian's `chromium` and `chromium-driver`, installed by
/// scripts/setup.sh), spoken to in plain JSON over HTTP.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
}

impl Browser {
    async fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian package chromium-driver, installed by scripts/setup.sh)");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while http.get(format!("{base}/status")).send().await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=412,1400", "--lang=en-US"]
        }}}});
        let v: Value = http.post(format!("{base}/session")).json(&caps).send().await.unwrap().json().await.unwrap();
        let session = v.pointer("/value/sessionId").and_then(|s| s.as_str()).unwrap_or_else(|| panic!("no session: {v}")).to_string();
        let b = Browser { driver, base, session, http };
        // Elements are looked for up to 5 s (a page still loading after a click).
        b.cmd(reqwest::Method::POST, "/timeouts", json!({ "implicit": 5000 })).await;
        b
    }

    async fn cmd(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let req = self.http.request(method.clone(), url);
        let req = if method == reqwest::Method::GET { req } else { req.json(&body) };
        let v: Value = req.send().await.unwrap().json().await.unwrap();
        if v.pointer("/value/error").is_some() {
            let page = self
                .http
                .post(format!("{}/session/{}/execute/sync", self.base, self.session))
                .json(&json!({"script": "return location.href + '\\n' + document.body.innerText", "args": []}))
                .send()
                .await
                .ok();
            let page: Value = match page {
                Some(r) => r.json().await.unwrap_or_default(),
                None => Value::Null,
            };
            panic!("webdriver {path}: {}\n--- page ---\n{}", v.pointer("/value/message").unwrap_or(&v), page["value"].as_str().unwrap_or(""));
        }
        v["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "/url", json!({ "url": url })).await;
    }

    async fn find(&self, css: &str) -> String {
        let v = self.cmd(reqwest::Method::POST, "/element", json!({"using": "css selector", "value": css})).await;
        v.as_object().unwrap().values().next().unwrap().as_str().unwrap().to_string()
    }

    async fn text(&self, css: &str) -> String {
        let el = self.find(css).await;
        self.cmd(reqwest::Method::GET, &format!("/element/{el}/text"), Value::Null).await.as_str().unwrap_or("").to_string()
    }

    async fn click(&self, css: &str) {
        let el = self.find(css).await;
        self.cmd(reqwest::Method::POST, &format!("/element/{el}/click"), json!({})).await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css).await;
        self.cmd(reqwest::Method::POST, &format!("/element/{el}/value"), json!({ "text": text })).await;
    }

    async fn script(&self, js: &str) -> Value {
        self.cmd(reqwest::Method::POST, "/execute/sync", json!({"script": js, "args": []})).await
    }

    async fn url(&self) -> String {
        self.cmd(reqwest::Method::GET, "/url", Value::Null).await.as_str().unwrap_or("").to_string()
    }

    async fn screenshot(&self, name: &str) -> PathBuf {
        use base64::Engine;
        let png = self.cmd(reqwest::Method::GET, "/screenshot", Value::Null).await;
        let bytes = base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap()).unwrap();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_a_browser() {
    let articles = recent_articles(12);
    let site = NewsServer::start(articles.clone()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut d, api) = indexed_daemon(dir.path(), &site, 12, "", &[(HOOK_ENV, "http://127.0.0.1:9/x")]).await;
    // Hostile titles and bodies, stored as a feed could deliver them (the crawler strips tags from titles, so they
    // are written to the database directly: the pages must escape whatever text they are given).
    let hostile = [
        ("<script>window.__xss=1</script> Markets rally on <b>hopes</b>", "Stocks rose. <script>window.__xss=4</script> Traders cheered the rally in markets."),
        ("\"><img src=x onerror=\"window.__xss=2\"> Oil slides as markets rally", "<img src=x onerror=\"window.__xss=3\"> Oil prices fell while markets rallied."),
        // Korean text must come through as it is (and show in Hangul in the screenshot: fonts-nanum).
        ("코스피 2,700 돌파…반도체 강세에 외국인 <순매수>", "코스피가 반도체 대형주 강세에 힘입어 2,700선을 회복했다. 외국인이 사흘 연속 순매수에 나섰다."),
    ];
    {
        let config = newsd::Config::load(&dir.path().join("newsd.toml")).unwrap();
        let store = newsd::store::Store::from_config(&config).await.unwrap();
        let source_id = store.sync_sources(&config.sources).await.unwrap()["bbc"].id;
        let now = Utc::now().timestamp_millis();
        let batch: Vec<newsd::store::NewArticle> = hostile
            .iter()
            .enumerate()
            .map(|(i, (title, body))| newsd::store::NewArticle {
                url: format!("https://hostile.example/{i}"),
                source_id,
                title: title.to_string(),
                body: body.to_string(),
                published_at: Some(now - 60_000),
                fetched_at: now,
                content_hash: format!("hostile-{i}"),
                language: Some("en".into()),
                extraction: "feed".into(),
                page_status: newsd::store::PageStatus::NoPage,
                page_attempts: 0,
                page_error: None,
                charset: None,
            })
            .collect();
        store.insert_articles(&batch).await.unwrap();
        store.close().await;
    }
    wait_for("the hostile articles indexed", Duration::from_secs(60), &mut d, || async {
        let v = api.ok("/api/status").await;
        (v.pointer("/index/index_size").and_then(|x| x.as_i64()) == Some(27)).then_some(())
    })
    .await;
    let newest = api.ok("/api/articles?limit=3").await;
    let hostile_ids: Vec<i64> = newest["articles"].as_array().unwrap().iter().map(|a| a["id"].as_i64().unwrap()).collect();
    let (s, a) = api.post("/api/analyze?profile=brief").await;
    assert_eq!(s, 200, "{a}");
    let analysis_id = a["analysis_id"].as_i64().unwrap();

    let b = Browser::start().await;
    let base = api.base.clone();
    // Search from the overview page's box.
    b.goto(&format!("{base}/")).await;
    let probe = newsd::testkit::squash(&articles[5].title);
    b.type_into("main input[name=q]", &probe).await;
    b.click("main button[type=submit]").await;
    let first = b.text("#results li a").await;
    assert_eq!(first, probe);
    b.screenshot("dashboard-search.png").await;
    // "More like this" on the first result.
    b.click("#results li a[href$='#similar']").await;
    assert!(b.url().await.contains("/articles/"));
    let similar = b.script("return document.querySelectorAll('#similar li').length").await;
    assert!(similar.as_u64().unwrap() >= 3, "{similar}");

    // An analysis: the brief as sent, its stories, delivery state.
    b.goto(&format!("{base}/analyses")).await;
    b.click("#analyses li a").await;
    assert!(b.url().await.ends_with(&format!("/analyses/{analysis_id}")));
    let brief = b.text("#brief").await;
    assert!(brief.len() > 100, "{brief}");
    let stories = b.script("return document.querySelectorAll('#stories article').length").await;
    assert!(stories.as_u64().unwrap() >= 1);
    b.screenshot("dashboard-analysis.png").await;

    // A source.
    b.goto(&format!("{base}/sources")).await;
    b.click("#sources a").await;
    let name = b.text("#source-name").await;
    assert!(name == "bbc" || name == "cnn", "{name}");
    let listed = b.script("return document.querySelectorAll('#articles li a').length").await;
    assert!(listed.as_u64().unwrap() >= 12, "{listed}");

    // Run now, and the run appears.
    b.goto(&format!("{base}/jobs/deliver")).await;
    let before = b.script("return document.querySelectorAll('#runs tr.run').length").await.as_u64().unwrap();
    b.click("#run-now").await;
    // The form's POST answers with a redirect back to the job, saying what the overlap policy made of it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !b.url().await.contains("/jobs/deliver?ran=") {
        assert!(Instant::now() < deadline, "no redirect after Run now: {}", b.url().await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let flash = b.text("#flash").await;
    assert!(flash.starts_with("Run now: "), "{flash}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        b.goto(&format!("{base}/jobs/deliver")).await;
        let manual = b.script("return [...document.querySelectorAll('#runs tr.run')].filter(r => r.textContent.includes('manual')).length").await;
        if manual.as_u64().unwrap() >= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the manual run did not appear ({before} runs before)");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    b.screenshot("dashboard-job.png").await;

    // Hostile titles render as text on every page that shows them; no script ran.
    let mut pages = vec!["/".to_string(), "/sources/bbc".into(), format!("/analyses/{analysis_id}"), "/search?q=Markets+rally+Oil+slides&k=20".into()];
    pages.extend(hostile_ids.iter().map(|id| format!("/articles/{id}")));
    for path in &pages {
        b.goto(&format!("{base}{path}")).await;
        let ran = b.script("return window.__xss || 0").await;
        assert_eq!(ran.as_i64(), Some(0), "a script from a title ran on {path}");
        let imgs = b.script("return document.querySelectorAll('img').length").await;
        assert_eq!(imgs.as_u64(), Some(0), "an <img> from a title became an element on {path}");
    }
    b.goto(&format!("{base}/search?q=Markets+rally&k=20")).await;
    let body = b.text("#results").await;
    assert!(body.contains(hostile[0].0), "the title is shown as text: {body}");
    assert!(body.contains(hostile[1].0), "the title is shown as text: {body}");
    let shot = b.screenshot("dashboard-xss.png").await;
    b.goto(&format!("{base}/search?q={}&k=5", url_q("코스피 반도체 외국인"))).await;
    let first = b.text("#results li a").await;
    assert_eq!(first, hostile[2].0, "Korean text shown exactly");
    b.screenshot("dashboard-korean.png").await;
    println!("screenshots in {}", shot.parent().unwrap().display());
    // CSRF: a form post without the token is refused.
    let r = reqwest::Client::new().post(format!("{base}/jobs/deliver/run")).form(&[("csrf", "forged")]).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 403);
    d.stop();
}
