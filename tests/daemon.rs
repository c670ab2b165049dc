//! The daemon, end to end: the real `newsd run` binary in a temporary directory, with every-second schedules,
//! crawling a real HTTP news server on 127.0.0.1 (the corpus server from `newsd::testkit`), its run history read
//! from the real SQLite database it writes. Signals are real signals (libc::kill).
//!
//! Waits are polls with generous deadlines (a loaded CI machine is slow); nothing asserts on timings.
//!
//! The test that needs the test-only tasks (`_test_sleep`, `_test_panic`) runs only in a build with them:
//! `cargo test --release --features test-hooks --test daemon`; the others use real tasks (`notify` with nothing
//! to send is the cheap one).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use newsd::store::{JobRun, RunOutcome, Store};
use newsd::testkit::{corpus, squash, CorpusArticle, NewsServer};

const BIN: &str = env!("CARGO_BIN_EXE_newsd");

struct Daemon {
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    fn start(dir: &Path) -> Daemon {
        let log = dir.join(format!("daemon-{}.log", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(BIN)
            .args(["-c", dir.join("newsd.toml").to_str().unwrap(), "run"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("starting newsd run");
        Daemon { child: Some(child), log }
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: i32) {
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({}, {sig})", self.pid());
    }

    fn alive(&mut self) -> bool {
        self.child.as_mut().unwrap().try_wait().unwrap().is_none()
    }

    /// Waits for the process to exit (it must, within `limit`).
    async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return st;
            }
            if Instant::now() > deadline {
                panic!("newsd did not exit within {limit:?}; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        self.child.take().unwrap().wait().unwrap();
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

fn write_config(dir: &Path, sources: &[(&str, String, bool)], daemon_extra: &str) {
    let mut text = format!(
        "data_dir = \"data\"\n\n[crawl]\nper_host_interval = \"20ms\"\nallow_private_addresses = true\nbatch_size = 10\nrequest_timeout = \"5s\"\nbackoff_base = \"1h\"\n\n\
         [daemon]\nschedules_dir = \"schedules\"\nreload_debounce = \"200ms\"\nshutdown_grace = \"20s\"\n{daemon_extra}\n\n\
         [logging]\nfiles = false\n"
    );
    for (name, url, full_text) in sources {
        text.push_str(&format!("\n[[sources]]\nname = \"{name}\"\nurl = \"{url}\"\nfull_text = {full_text}\n"));
    }
    std::fs::write(dir.join("newsd.toml"), text).unwrap();
    std::fs::create_dir_all(dir.join("schedules")).unwrap();
}

fn job(name: &str, cron: &str, task: &str, extra: &str) -> String {
    format!("[[job]]\nname = \"{name}\"\ncron = \"{cron}\"\ntask = \"{task}\"\n{extra}\n")
}

/// Writes a schedule file the way editors do: a temporary file renamed over the original.
fn write_schedule(dir: &Path, file: &str, text: &str) {
    let tmp = dir.join("schedules").join(format!(".{file}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join("schedules").join(file)).unwrap();
}

async fn open_store(dir: &Path) -> Store {
    let url = format!("sqlite://{}", dir.join("data/newsd.db").display());
    Store::open(&url, 2, Duration::from_secs(10)).await.unwrap()
}

/// One number from SQL (NULL reads as 0), through the store's pool.
async fn scalar(store: &Store, sql: &str) -> i64 {
    sqlx::query_scalar::<_, Option<i64>>(sql).fetch_one(store.pool()).await.unwrap().unwrap_or(0)
}

async fn runs(store: &Store, job: &str) -> Vec<JobRun> {
    store.job_runs(Some(job), 10_000).await.unwrap()
}

/// Polls `check` until it returns Some (or panics after `limit` with the daemon's log).
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
        let exited = !daemon.alive();
        if exited || Instant::now() > deadline {
            let what = if exited { format!("{what} (the daemon exited)") } else { what.to_string() };
            let log = daemon.log();
            let tail: String = log.lines().rev().take(60).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
            panic!("timed out waiting for: {what}\n--- daemon log (tail) ---\n{tail}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const LIMIT: Duration = Duration::from_secs(30);

/// `n` articles of one outlet with substantial, distinct text: each must be stored exactly once.
fn distinct_articles(source: &str, n: usize) -> Vec<CorpusArticle> {
    let mut seen = HashSet::new();
    let picked: Vec<CorpusArticle> = corpus::load()
        .expect("the test corpus is fetched by scripts/setup.sh (see README)")
        .into_iter()
        .filter(|a| a.source == source && a.text.chars().count() >= 300 && !a.title.trim().is_empty())
        .filter(|a| seen.insert(newsd::crawl::content_hash(&squash(&a.title), &squash(&a.text))))
        .take(n)
        .collect();
    assert_eq!(picked.len(), n, "corpus has enough {source} articles");
    picked
}

/// `newsd status --json` for the daemon directory `dir`.
fn status(dir: &Path) -> serde_json::Value {
    let out = Command::new(BIN).args(["-c", dir.join("newsd.toml").to_str().unwrap(), "status", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn status_job(status: &serde_json::Value, name: &str) -> Option<serde_json::Value> {
    status["jobs"].as_array().unwrap().iter().find(|j| j["name"] == name).cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_fire_reload_applies_refuses_and_removes_endpoints_answer_and_sigterm_exits_0() {
    let articles = distinct_articles("cnn", 12);
    let server = NewsServer::start(articles.clone()).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Port 0: the daemon binds a free port itself and records it (`newsd status`), so no port is picked here and
    // raced for.
    write_config(dir, &[("cnn", server.url("/feeds/cnn"), false)], "http_listen = \"127.0.0.1:0\"");
    // The real model (scripts/setup.sh) for the embed job; the daemon loads it at start.
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut config_text = std::fs::read_to_string(dir.join("newsd.toml")).unwrap();
    config_text.push_str(&format!(
        "\n[embed]\nmodel_dir = \"{}\"\nonnxruntime_library = \"{}\"\n",
        repo.join("models/all-MiniLM-L6-v2").display(),
        repo.join("models/onnxruntime/libonnxruntime.so.1.32.0").display()
    ));
    std::fs::write(dir.join("newsd.toml"), config_text).unwrap();
    write_schedule(dir, "a.toml", &job("crawl-a", "* * * * * *", "crawl", ""));
    write_schedule(dir, "e.toml", &job("embed-e", "*/2 * * * * *", "embed", ""));
    // The test opens (creating and migrating) the database before the daemon so the two do not migrate at once.
    let store = open_store(dir).await;
    let mut daemon = Daemon::start(dir);

    // Jobs fire on time: every second, the first crawl stores the feed, later ones find it not modified.
    let crawls = wait_for("two finished crawl-a runs", LIMIT, &mut daemon, || async {
        let r: Vec<JobRun> = runs(&store, "crawl-a").await.into_iter().filter(|r| r.outcome == "ok").collect();
        (r.len() >= 2).then_some(r)
    })
    .await;
    let first = crawls.last().unwrap();
    assert_eq!(first.task, "crawl");
    assert_eq!(first.fired_by, "schedule");
    assert_eq!(first.counters.as_ref().unwrap()["totals"]["new"], 12, "{first:?}");
    assert_eq!(crawls[0].counters.as_ref().unwrap()["totals"]["not_modified"], 1, "{:?}", crawls[0]);
    assert_eq!(store.count_articles().await.unwrap(), 12);

    // A second daemon on the same data directory refuses to start, naming the lock and the holder.
    let second = Command::new(BIN).args(["-c", dir.join("newsd.toml").to_str().unwrap(), "run"]).output().unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "second daemon started: {err}");
    assert!(err.contains("already running") && err.contains("newsd.lock") && err.contains(&format!("pid {}", daemon.pid())), "{err}");
    assert!(daemon.alive());

    // The embed job indexes what the crawls stored.
    wait_for("an embed run that indexed the 12 articles", LIMIT, &mut daemon, || async {
        runs(&store, "embed-e").await.into_iter().find(|r| r.outcome == "ok" && r.counters.as_ref().is_some_and(|c| c["index_size"] == 12))
    })
    .await;

    // /healthz and /metrics on loopback, at the address the daemon bound.
    let st = status(dir);
    assert_eq!(st["daemon"]["running"], true, "{st}");
    assert_eq!(st["daemon"]["pid"], daemon.pid(), "{st}");
    let addr: std::net::SocketAddr = st["daemon"]["http_addr"].as_str().unwrap_or_else(|| panic!("{st}")).parse().unwrap();
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
    let port = addr.port();
    let http = reqwest::Client::new();
    let health: serde_json::Value = http.get(format!("http://127.0.0.1:{port}/healthz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["ready"], true, "{health}");
    let job_health = health["jobs"].as_array().unwrap().iter().find(|j| j["job"] == "crawl-a").expect("crawl-a in /healthz").clone();
    assert!(job_health["last_success_at"].as_i64().unwrap() > 0, "{health}");
    let metrics = http.get(format!("http://127.0.0.1:{port}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("newsd_job_runs_total{job=\"crawl-a\",task=\"crawl\",outcome=\"ok\"}"), "{metrics}");
    assert!(metrics.contains("newsd_articles_crawled_total 12"), "{metrics}");
    assert!(metrics.contains("newsd_articles_stored 12"), "{metrics}");
    assert!(metrics.contains("newsd_job_duration_seconds_bucket{"), "{metrics}");
    assert!(metrics.contains("newsd_articles_embedded_total 12"), "{metrics}");
    assert!(metrics.contains("newsd_index_vectors 12"), "{metrics}");
    assert!(metrics.contains("newsd_embeddings_pending 0"), "{metrics}");
    assert!(metrics.contains("newsd_compute_queue_depth 0"), "{metrics}");
    assert!(metrics.contains("newsd_notifications_pending 0"), "{metrics}");

    // A new file is picked up without restart.
    write_schedule(dir, "b.toml", &job("tick-b", "* * * * * *", "notify", ""));
    wait_for("tick-b runs", LIMIT, &mut daemon, || async { (runs(&store, "tick-b").await.iter().any(|r| r.outcome == "ok")).then_some(()) }).await;
    let applied = store.reload_events(20).await.unwrap();
    assert!(applied.iter().any(|e| e.outcome == "applied" && e.fired_by == "watch" && e.detail == "added: tick-b"), "{applied:?}");

    // An invalid edit is refused whole, naming file, line and problem; the previous schedule keeps firing.
    let bad = format!("{}\n{}", job("crawl-a", "* * * * * *", "crawl", ""), job("broken", "0 61 * * * *", "crawl", ""));
    let bad_line = bad.lines().position(|l| l.contains("61 *")).unwrap() + 1;
    write_schedule(dir, "a.toml", &bad);
    let refused = wait_for("a refused reload", LIMIT, &mut daemon, || async {
        store.reload_events(20).await.unwrap().into_iter().find(|e| e.outcome == "refused")
    })
    .await;
    assert!(refused.detail.contains(&format!("a.toml:{bad_line}:")) && refused.detail.contains("invalid cron"), "{refused:?}");
    // The alert is recorded just after the reload event: wait for it rather than race it.
    wait_for("the schedule_refused alert", LIMIT, &mut daemon, || async {
        let alerts = store.ops_alerts(20).await.unwrap();
        alerts.iter().any(|a| a.kind == "schedule_refused" && a.message.contains("a.toml")).then_some(())
    })
    .await;
    for job in ["crawl-a", "tick-b"] {
        let before = runs(&store, job).await.len();
        wait_for(&format!("{job} firing after the refused edit"), LIMIT, &mut daemon, || async {
            (runs(&store, job).await.len() >= before + 2).then_some(())
        })
        .await;
    }
    assert!(runs(&store, "broken").await.is_empty());
    // `newsd status` shows what runs, not what the files say: both jobs scheduled, the refused job absent, and the
    // files' error beside them.
    let st = status(dir);
    assert_eq!(st["daemon"]["jobs_from"], "daemon", "{st}");
    for job in ["crawl-a", "tick-b"] {
        let j = status_job(&st, job).unwrap_or_else(|| panic!("{job} in {st}"));
        assert_eq!(j["scheduled"], true, "{j}");
        assert!(j["next_run_at"].as_i64().unwrap() > 0, "{j}");
    }
    assert!(status_job(&st, "broken").is_none(), "{st}");
    assert!(st["schedule_error"].as_str().unwrap_or("").contains(&format!("a.toml:{bad_line}:")), "{st}");

    // A later valid edit applies normally; deleting a file removes its job and it stops firing.
    write_schedule(dir, "a.toml", &job("crawl-a", "*/2 * * * * *", "crawl", ""));
    std::fs::remove_file(dir.join("schedules/b.toml")).unwrap();
    wait_for("the valid edit and the deletion applied", LIMIT, &mut daemon, || async {
        let ev = store.reload_events(50).await.unwrap();
        let changed = ev.iter().any(|e| e.outcome == "applied" && e.detail.contains("changed: crawl-a"));
        let removed = ev.iter().any(|e| e.outcome == "applied" && e.detail.contains("removed: tick-b"));
        (changed && removed).then_some(())
    })
    .await;
    // No tick of tick-b after its removal: wait for two crawl-a ticks after it (the scheduler ticked on), then
    // every tick-b run belongs to a tick before the removal (a run of an earlier tick may still be recorded).
    let removed_at = store.reload_events(50).await.unwrap().into_iter().find(|e| e.detail.contains("removed: tick-b")).unwrap().at;
    wait_for("two crawl-a ticks after the removal", LIMIT, &mut daemon, || async {
        let after = runs(&store, "crawl-a").await.iter().filter(|r| r.scheduled_at.is_some_and(|t| t > removed_at)).count();
        (after >= 2).then_some(())
    })
    .await;
    let late: Vec<JobRun> = runs(&store, "tick-b").await.into_iter().filter(|r| r.scheduled_at.is_none_or(|t| t > removed_at)).collect();
    assert!(late.is_empty(), "a deleted job kept firing: {late:?}");

    // SIGHUP goes through the same reload path.
    let n_events = store.reload_events(100).await.unwrap().len();
    daemon.signal(libc::SIGHUP);
    wait_for("a SIGHUP reload event", LIMIT, &mut daemon, || async {
        let ev = store.reload_events(100).await.unwrap();
        (ev.len() > n_events && ev[0].fired_by == "SIGHUP" && ev[0].outcome == "applied").then_some(())
    })
    .await;

    // SIGTERM: exit 0, nothing left running.
    daemon.signal(libc::SIGTERM);
    let status = daemon.wait_exit(LIMIT).await;
    assert_eq!(status.code(), Some(0), "log:\n{}", daemon.log());
    assert!(daemon.log().contains("newsd daemon stopped"));
    // The index was saved: its manifest holds every embedded article.
    let version = store.active_model().await.unwrap().expect("an active model version").version;
    let manifest = newsd::index::vector::read_manifest(&newsd::index::vector::version_dir(&dir.join("data/index"), &version))
        .expect("index manifest saved");
    assert_eq!(manifest.count, 12);
    let all = store.job_runs(None, 10_000).await.unwrap();
    assert!(all.iter().all(|r| r.outcome != "running"), "a run left running");
    assert_eq!(store.count_articles().await.unwrap(), 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "test-hooks"), ignore = "needs the test-only tasks: cargo test --release --features test-hooks")]
async fn panics_timeouts_failures_overlap_and_missed_runs_are_recorded_and_the_daemon_lives_on() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // A feed the server does not have (404): the crawl fails.
    let server = NewsServer::start(Vec::new()).await.unwrap();
    write_config(dir, &[("dead", server.url("/feeds/nowhere"), false)], "");
    // History from an earlier life: yearly jobs that last ran two years ago, so a fire time was missed.
    let store = open_store(dir).await;
    let long_ago = chrono::Utc::now().timestamp_millis() - 2 * 365 * 86_400_000;
    for name in ["yearly-run-once", "yearly-skip"] {
        let id = store.start_job_run(name, "_test_sleep", "schedule", "old-node", Some(long_ago)).await.unwrap();
        store.finish_job_run(id, RunOutcome::Ok, None, None).await.unwrap();
    }
    let schedule = [
        job("panics", "* * * * * *", "_test_panic", ""),
        job("times-out", "*/3 * * * * *", "_test_sleep", "duration = \"30s\"\ntimeout = \"1s\""),
        job("slow-skip", "* * * * * *", "_test_sleep", "duration = \"2500ms\"\noverlap = \"skip\""),
        job("slow-queue", "* * * * * *", "_test_sleep", "duration = \"2500ms\"\noverlap = \"queue\""),
        job("crawl-dead", "* * * * * *", "crawl", ""),
        job("alive", "* * * * * *", "_test_sleep", "duration = \"1ms\"\njitter = \"300ms\""),
        job("disabled", "* * * * * *", "_test_sleep", "duration = \"1ms\"\nenabled = false"),
        job("yearly-run-once", "0 0 0 1 1 *", "_test_sleep", "duration = \"1ms\"\nmissed = \"run_once\""),
        job("yearly-skip", "0 0 0 1 1 *", "_test_sleep", "duration = \"1ms\"\nmissed = \"skip\""),
    ]
    .join("\n");
    write_schedule(dir, "jobs.toml", &schedule);
    let mut daemon = Daemon::start(dir);

    // A missed fire time with run_once runs at start; with skip it does not.
    let missed = wait_for("the missed run", LIMIT, &mut daemon, || async {
        runs(&store, "yearly-run-once").await.into_iter().find(|r| r.fired_by == "missed" && r.outcome == "ok")
    })
    .await;
    assert!(missed.started_at > long_ago);

    let panicked = wait_for("two panicked runs", LIMIT, &mut daemon, || async {
        let r: Vec<JobRun> = runs(&store, "panics").await.into_iter().filter(|r| r.outcome == "panicked").collect();
        (r.len() >= 2).then_some(r)
    })
    .await;
    assert!(panicked[0].error.as_deref().unwrap_or("").contains("deliberate panic"), "{:?}", panicked[0]);
    let timed_out = wait_for("a timed-out run", LIMIT, &mut daemon, || async {
        runs(&store, "times-out").await.into_iter().find(|r| r.outcome == "timeout")
    })
    .await;
    assert_eq!(timed_out.error.as_deref(), Some("timed out after 1s"));
    let failed = wait_for("a failed crawl", LIMIT, &mut daemon, || async {
        runs(&store, "crawl-dead").await.into_iter().find(|r| r.outcome == "failed")
    })
    .await;
    assert!(failed.error.as_deref().unwrap_or("").contains("all 1 sources failed"), "{failed:?}");
    let skipped = wait_for("a skipped tick", LIMIT, &mut daemon, || async {
        runs(&store, "slow-skip").await.into_iter().find(|r| r.outcome == "skipped")
    })
    .await;
    assert_eq!(skipped.error.as_deref(), Some("previous run still running"));
    wait_for("a queued run", LIMIT, &mut daemon, || async {
        runs(&store, "slow-queue").await.into_iter().find(|r| r.fired_by == "queued" && r.outcome == "ok")
    })
    .await;
    // The skip policy never runs two at once: runs (not skipped ticks) of slow-skip never overlap.
    let mut spans: Vec<(i64, i64)> = runs(&store, "slow-skip")
        .await
        .iter()
        .filter(|r| r.outcome == "ok")
        .map(|r| (r.started_at, r.finished_at.unwrap()))
        .collect();
    spans.sort();
    assert!(spans.windows(2).all(|w| w[0].1 <= w[1].0), "overlapping runs: {spans:?}");

    // After all that the daemon is alive and the healthy job keeps running.
    let before = runs(&store, "alive").await.len();
    wait_for("alive keeps running", LIMIT, &mut daemon, || async { (runs(&store, "alive").await.len() >= before + 3).then_some(()) }).await;
    assert!(daemon.alive());
    assert!(runs(&store, "disabled").await.is_empty());
    assert_eq!(runs(&store, "yearly-skip").await.len(), 1, "missed = skip ran anyway");
    let alerts = store.ops_alerts(50).await.unwrap();
    assert!(alerts.iter().any(|a| a.kind == "job_failed" && a.message.contains("panics")), "{alerts:?}");
    assert_eq!(alerts.iter().filter(|a| a.kind == "job_failed" && a.message.contains("job panics ")).count(), 1, "alert once per failing streak");

    // `newsd status` shows jobs with last and next run and last outcome.
    let out = Command::new(BIN).args(["-c", dir.join("newsd.toml").to_str().unwrap(), "status", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let jobs = status["jobs"].as_array().unwrap();
    let get = |n: &str| jobs.iter().find(|j| j["name"] == n).unwrap_or_else(|| panic!("{n} in status: {status}")).clone();
    assert_eq!(get("panics")["last_outcome"], "panicked");
    assert!(get("panics")["next_run_at"].as_i64().unwrap() > 0);
    assert!(get("alive")["last_success_at"].as_i64().unwrap() > 0);
    assert_eq!(get("disabled")["enabled"], false);
    assert!(get("disabled")["next_run_at"].is_null());
    assert!(status["articles"].is_i64() && status["sources"].is_array(), "existing fields kept: {status}");

    // SIGINT stops like SIGTERM; runs in progress finish within the grace period.
    daemon.signal(libc::SIGINT);
    let status = daemon.wait_exit(LIMIT).await;
    assert_eq!(status.code(), Some(0), "log:\n{}", daemon.log());
    let all = store.job_runs(None, 100_000).await.unwrap();
    assert!(all.iter().all(|r| r.outcome != "running"), "runs left running");
    // A run in progress at SIGINT (2.5 s sleeps) finished inside the 20 s grace period instead of being cut off.
    assert!(all.iter().filter(|r| r.job == "slow-skip").all(|r| r.outcome != "interrupted"), "grace period not honoured");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_crawl_then_restart_loses_no_article_and_redoes_nothing() {
    let articles = distinct_articles("aljazeera", 150);
    let server = NewsServer::start(articles.clone()).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Full text: the items are stored first with their feed text, then every article page is fetched and written
    // as it arrives, one host at a time, so the pages take a while.
    write_config(dir, &[("aljazeera", server.url("/feeds/aljazeera"), true)], "");
    write_schedule(dir, "crawl.toml", &job("crawl", "* * * * * *", "crawl", "overlap = \"skip\""));
    let store = open_store(dir).await;
    let pages_ok = || async { scalar(&store, "SELECT COUNT(*) FROM articles WHERE page_status = 'ok'").await };
    let mut daemon = Daemon::start(dir);
    let pages_at_first_look = wait_for("the first stored page", LIMIT, &mut daemon, || async {
        let n = pages_ok().await;
        (n > 0).then_some(n)
    })
    .await;
    daemon.kill9();
    let at_kill = store.count_articles().await.unwrap();
    let pages_at_kill = pages_ok().await;
    assert!(pages_at_kill >= pages_at_first_look);
    assert!(pages_at_kill < 150, "every page was read before the kill ({pages_at_kill}); make it slower");
    let killed_run = runs(&store, "crawl").await.into_iter().find(|r| r.outcome == "running").expect("the cut-off run is in history");

    let mut daemon = Daemon::start(dir);
    // The cut-off run is marked interrupted; crawls resume the pending pages until every page is read and a
    // crawl finds the feed not modified.
    let done = wait_for("a crawl that finds nothing to do", Duration::from_secs(60), &mut daemon, || async {
        if pages_ok().await < 150 {
            return None;
        }
        runs(&store, "crawl").await.into_iter().find(|r| {
            r.outcome == "ok" && r.counters.as_ref().is_some_and(|c| c["totals"]["not_modified"] == 1 && c["totals"]["new"] == 0)
        })
    })
    .await;
    let history = runs(&store, "crawl").await;
    let killed = history.iter().find(|r| r.id == killed_run.id).unwrap();
    assert_eq!(killed.outcome, "interrupted", "{killed:?}");
    // Every article stored once; the crawls after the restart stored exactly what the killed one had not.
    assert_eq!(store.count_articles().await.unwrap(), 150);
    let distinct = scalar(&store, "SELECT COUNT(DISTINCT content_hash) FROM articles").await;
    assert_eq!(distinct, 150);
    let new_after: i64 = history
        .iter()
        .filter(|r| r.id > killed_run.id && r.id <= done.id && r.outcome == "ok")
        .map(|r| r.counters.as_ref().unwrap()["totals"]["new"].as_i64().unwrap())
        .sum();
    assert_eq!(new_after, 150 - at_kill, "articles stored after the restart");
    let bodies_ok = scalar(&store, "SELECT COUNT(*) FROM articles WHERE page_status = 'ok'").await;
    assert_eq!(bodies_ok, 150, "every article has its full text");
    // Each article page was fetched successfully once: nothing re-done. (A page fetched by the killed run whose
    // batch was not yet committed is fetched again; those are the only repeats.)
    let page_hits: usize = articles.iter().map(|a| server.hits(&format!("/articles/{}", a.id))).sum();
    assert!(page_hits <= 150 + 10, "{page_hits} page fetches for 150 articles");

    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit(LIMIT).await.code(), Some(0), "log:\n{}", daemon.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_disk_space_skips_writing_jobs_alerts_once_and_keeps_running() {
    let articles = distinct_articles("cnn", 3);
    let server = NewsServer::start(articles).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // A threshold no disk meets: every writing task is below it.
    write_config(dir, &[("cnn", server.url("/feeds/cnn"), false)], "min_free_disk_bytes = 9000000000000000000");
    let schedule = [job("crawl", "* * * * * *", "crawl", ""), job("light", "* * * * * *", "notify", "")].join("\n");
    write_schedule(dir, "jobs.toml", &schedule);
    let store = open_store(dir).await;
    let mut daemon = Daemon::start(dir);
    wait_for("two skipped crawls and a light run", LIMIT, &mut daemon, || async {
        let skipped = runs(&store, "crawl").await.iter().filter(|r| r.outcome == "skipped").count();
        let light = runs(&store, "light").await.iter().filter(|r| r.outcome == "ok").count();
        (skipped >= 2 && light >= 1).then_some(())
    })
    .await;
    let crawl_runs = runs(&store, "crawl").await;
    assert!(crawl_runs.iter().all(|r| r.outcome == "skipped" && r.error.as_deref() == Some("low disk space")), "{crawl_runs:?}");
    assert_eq!(store.count_articles().await.unwrap(), 0, "a crawl wrote despite the disk guard");
    assert_eq!(server.hits("/feeds/cnn"), 0);
    let alerts = store.ops_alerts(50).await.unwrap();
    let disk: Vec<_> = alerts.iter().filter(|a| a.kind == "disk_low").collect();
    assert_eq!(disk.len(), 1, "one alert, not one per tick: {alerts:?}");
    assert!(disk[0].message.contains("skipped job crawl"), "{disk:?}");
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit(LIMIT).await.code(), Some(0), "log:\n{}", daemon.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_files_are_refused_and_a_recreated_schedules_dir_is_watched_again_without_sighup() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_config(dir, &[], "");
    let sched = dir.join("schedules");
    write_schedule(dir, "a.toml", &job("n1", "* * * * * *", "notify", ""));
    let store = open_store(dir).await;
    let mut daemon = Daemon::start(dir);
    let fired = |n: usize| {
        let store = store.clone();
        move || {
            let store = store.clone();
            async move { (runs(&store, "n1").await.len() >= n).then_some(()) }
        }
    };
    wait_for("n1 fires", LIMIT, &mut daemon, fired(1)).await;
    let refusals = |n: usize| {
        let store = store.clone();
        move || {
            let store = store.clone();
            async move {
                let refused: Vec<_> = store.reload_events(100).await.unwrap().into_iter().filter(|e| e.outcome == "refused").collect();
                (refused.len() >= n).then_some(refused)
            }
        }
    };

    // A file truncated to nothing (written in place, as a crash or a full disk leaves it) is refused, naming it;
    // the job it held keeps firing and stays scheduled.
    std::fs::write(sched.join("a.toml"), "").unwrap();
    let refused = wait_for("the empty file refused", LIMIT, &mut daemon, refusals(1)).await;
    assert!(refused[0].detail.contains("a.toml:1: ") && refused[0].detail.contains("no jobs"), "{refused:?}");
    let before = runs(&store, "n1").await.len();
    wait_for("n1 firing after the refused empty file", LIMIT, &mut daemon, fired(before + 2)).await;
    assert_eq!(status_job(&status(dir), "n1").unwrap()["scheduled"], true);

    // An explicitly empty file is accepted (here beside the restored job).
    write_schedule(dir, "a.toml", &job("n1", "* * * * * *", "notify", ""));
    write_schedule(dir, "none.toml", "# no jobs here on purpose\njob = []\n");
    wait_for("the explicit empty file accepted", LIMIT, &mut daemon, || async {
        let ev = store.reload_events(1).await.unwrap();
        (ev.first().is_some_and(|e| e.outcome == "applied" && e.fired_by == "watch")).then_some(())
    })
    .await;

    // The directory removed: refused (cannot read it), the job keeps firing.
    let n_refused = refusals(1)().await.map(|r| r.len()).unwrap_or(0);
    std::fs::remove_dir_all(&sched).unwrap();
    wait_for("the removed directory refused", LIMIT, &mut daemon, || async {
        let refused = refusals(n_refused + 1)().await?;
        refused.iter().any(|e| e.detail.contains("cannot read schedules directory")).then_some(())
    })
    .await;
    let before = runs(&store, "n1").await.len();
    wait_for("n1 firing without its directory", LIMIT, &mut daemon, fired(before + 2)).await;

    // Re-created and edited: the edit applies through the watcher (no SIGHUP is ever sent in this test).
    std::fs::create_dir(&sched).unwrap();
    write_schedule(dir, "a.toml", &format!("{}\n{}", job("n1", "* * * * * *", "notify", ""), job("n2", "* * * * * *", "notify", "")));
    wait_for("n2 added after the directory came back", LIMIT, &mut daemon, || async {
        let ev = store.reload_events(100).await.unwrap();
        ev.iter().any(|e| e.outcome == "applied" && e.fired_by == "watch" && e.detail == "added: n2").then_some(())
    })
    .await;
    wait_for("n2 fires", LIMIT, &mut daemon, || async { (!runs(&store, "n2").await.is_empty()).then_some(()) }).await;
    // And later edits keep being seen.
    write_schedule(dir, "a.toml", &job("n2", "* * * * * *", "notify", ""));
    wait_for("n1 removed by a later edit", LIMIT, &mut daemon, || async {
        let ev = store.reload_events(100).await.unwrap();
        ev.iter().any(|e| e.outcome == "applied" && e.fired_by == "watch" && e.detail == "removed: n1").then_some(())
    })
    .await;
    assert!(store.reload_events(1000).await.unwrap().iter().all(|e| e.fired_by != "SIGHUP"));
    let st = status(dir);
    assert!(status_job(&st, "n2").unwrap()["scheduled"] == true, "{st}");
    assert!(status_job(&st, "n1").is_none_or(|j| j["scheduled"] == false), "{st}");

    // Stopped: status says no daemon runs and reads the files.
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit(LIMIT).await.code(), Some(0), "log:\n{}", daemon.log());
    let st = status(dir);
    assert_eq!(st["daemon"]["running"], false, "{st}");
    assert_eq!(st["daemon"]["jobs_from"], "files", "{st}");
    assert_eq!(status_job(&st, "n2").unwrap()["scheduled"], true, "{st}");
}
