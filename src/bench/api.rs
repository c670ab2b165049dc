//! `newsd bench api`: the HTTP API under load, against the old way.
//!
//! 1. The real daemon (`newsd run`, a child process) crawls and embeds the corpus from a local news site (one
//!    loopback host per outlet) every few seconds; once it has indexed `--warm` articles, `--searches` searches
//!    come from `--clients` concurrent clients on `/api/search` while it keeps crawling and embedding: answers by
//!    status (503s are designed backpressure, counted; anything else is an error), p50/p99 latency, the daemon's
//!    RSS before and after.
//! 2. The old way, on the same data: `--cli-processes` concurrent `newsd --local search` processes, each loading
//!    its own model and index: their summed peak RSS and the wall time.
//! 3. With `--hnsw-vectors N`: N synthetic articles with vectors (real embeddings plus noise, re-normalised) are
//!    added to the database, the daemon restarts with `index.kind = "hnsw"` (rebuilding the index), and the same
//!    load runs against it while it keeps embedding the rest of the corpus: p99 of `/api/search`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use rand::{Rng, SeedableRng};

use super::soak::{absolute, free_port, q, seconds_list};
use crate::testkit::{corpus, CorpusArticle, NewsServer};

#[derive(Debug, Args)]
pub struct ApiBenchArgs {
    /// Searches in the load phase.
    #[arg(long, default_value_t = 1000)]
    pub searches: usize,
    /// Concurrent API clients.
    #[arg(long, default_value_t = 50)]
    pub clients: usize,
    /// Concurrent `newsd --local search` processes for the old way (0: skip).
    #[arg(long, default_value_t = 50)]
    pub cli_processes: usize,
    /// Articles indexed before the load starts (the daemon keeps crawling and embedding the rest meanwhile).
    #[arg(long, default_value_t = 300)]
    pub warm: i64,
    /// Synthetic vectors for the HNSW phase (0: skip).
    #[arg(long, default_value_t = 0)]
    pub hnsw_vectors: usize,
    #[arg(long, default_value = "models/all-MiniLM-L6-v2")]
    pub model_dir: PathBuf,
    #[arg(long, default_value = "models/onnxruntime/libonnxruntime.so.1.32.0")]
    pub onnxruntime_library: PathBuf,
    /// Keep the data directory.
    #[arg(long)]
    pub keep: bool,
}

struct Child {
    process: tokio::process::Child,
    pid: u32,
}

fn proc_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix(field).map(|v| v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0))))
        .unwrap_or(0)
}

async fn start_daemon(dir: &Path) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("daemon.log"))?;
    let mut cmd = tokio::process::Command::new(std::env::current_exe()?);
    cmd.arg("--config").arg(dir.join("newsd.toml")).arg("run").stdout(log.try_clone()?).stderr(log).kill_on_drop(true);
    let process = cmd.spawn()?;
    let pid = process.id().ok_or_else(|| anyhow::anyhow!("the daemon exited at once"))?;
    Ok(Child { process, pid })
}

async fn stop_daemon(mut c: Child) -> anyhow::Result<()> {
    unsafe { libc::kill(c.pid as i32, libc::SIGTERM) };
    if tokio::time::timeout(Duration::from_secs(60), c.process.wait()).await.is_err() {
        c.process.kill().await?;
    }
    Ok(())
}

async fn status(http: &reqwest::Client, base: &str) -> Option<serde_json::Value> {
    http.get(format!("{base}/api/status")).send().await.ok()?.json().await.ok()
}

/// Waits until the daemon answers and has indexed at least `n` vectors.
async fn wait_indexed(http: &reqwest::Client, base: &str, n: i64, child: &mut Child, limit: Duration) -> anyhow::Result<i64> {
    let started = Instant::now();
    loop {
        if let Some(st) = status(http, base).await {
            let got = st.pointer("/index/index_size").and_then(|v| v.as_i64()).unwrap_or(0);
            if got >= n {
                return Ok(got);
            }
        }
        if let Ok(Some(s)) = child.process.try_wait() {
            anyhow::bail!("the daemon exited ({s})");
        }
        if started.elapsed() > limit {
            anyhow::bail!("the daemon did not index {n} articles within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

struct Load {
    ok: usize,
    busy: usize,
    errors: Vec<String>,
    latencies_ms: Vec<f64>,
    wall: f64,
}

/// `searches` searches from `clients` concurrent clients (titles of corpus articles as queries).
async fn load(base: &str, queries: &[String], searches: usize, clients: usize) -> Load {
    let http = reqwest::Client::builder().pool_max_idle_per_host(clients).timeout(Duration::from_secs(60)).build().unwrap();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (http, next, base, queries) = (http.clone(), next.clone(), base.to_string(), queries.to_vec());
            tokio::spawn(async move {
                let mut out = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if i >= searches {
                        break out;
                    }
                    let q = &queries[i % queries.len()];
                    let t = Instant::now();
                    let r = http.get(format!("{base}/api/search")).query(&[("q", q.as_str()), ("k", "10")]).send().await;
                    let ms = t.elapsed().as_secs_f64() * 1000.0;
                    let outcome = match r {
                        Ok(resp) => {
                            let s = resp.status().as_u16();
                            let _ = resp.bytes().await;
                            Ok(s)
                        }
                        Err(e) => Err(e.to_string()),
                    };
                    out.push((outcome, ms));
                }
            })
        })
        .collect();
    let mut l = Load { ok: 0, busy: 0, errors: Vec::new(), latencies_ms: Vec::new(), wall: 0.0 };
    for t in tasks {
        for (outcome, ms) in t.await.unwrap_or_default() {
            match outcome {
                Ok(200) => {
                    l.ok += 1;
                    l.latencies_ms.push(ms);
                }
                Ok(503) => l.busy += 1,
                Ok(s) => l.errors.push(format!("HTTP {s}")),
                Err(e) => l.errors.push(e),
            }
        }
    }
    l.wall = started.elapsed().as_secs_f64();
    l.latencies_ms.sort_by(|a, b| a.total_cmp(b));
    l
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn report(label: &str, l: &Load, rss_before: u64, rss_after: u64) {
    println!(
        "RESULT api {label}: {} searches in {:.1} s ({:.1}/s): {} answered, {} busy (503, Retry-After), {} errors; p50 {:.1} ms, p99 {:.1} ms; daemon RSS {:.0} -> {:.0} MiB",
        l.ok + l.busy + l.errors.len(),
        l.wall,
        (l.ok + l.busy) as f64 / l.wall,
        l.ok,
        l.busy,
        l.errors.len(),
        pct(&l.latencies_ms, 0.5),
        pct(&l.latencies_ms, 0.99),
        rss_before as f64 / 1024.0,
        rss_after as f64 / 1024.0
    );
    if !l.errors.is_empty() {
        println!("  first errors: {:?}", &l.errors[..l.errors.len().min(5)]);
    }
}

pub async fn run(args: &ApiBenchArgs) -> anyhow::Result<()> {
    let all = corpus::load()?;
    let mut outlets: Vec<String> = all.iter().map(|a| a.source.clone()).collect();
    outlets.sort();
    outlets.dedup();
    let mut servers = Vec::new();
    for (i, name) in outlets.iter().enumerate() {
        let mine: Vec<CorpusArticle> = all.iter().filter(|a| &a.source == name).cloned().collect();
        servers.push((name.clone(), NewsServer::start_on(format!("127.0.0.{}:0", i + 2).parse()?, mine).await?));
    }
    let dir = std::env::temp_dir().join(format!("newsd-bench-api-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("schedules"))?;
    let port = free_port()?;
    let base = format!("http://127.0.0.1:{port}");
    let write_config = |kind: &str| -> anyhow::Result<()> {
        let mut toml = format!(
            "data_dir = {data}\n\n[crawl]\nper_host_interval = \"0s\"\nmax_items_per_feed = 10000\nallow_private_addresses = true\n\n\
             [embed]\nmodel_dir = {model}\nonnxruntime_library = {ort}\nthreads = 1\n\n[index]\nkind = \"{kind}\"\n\n\
             [daemon]\nschedules_dir = {sched}\nhttp_listen = \"127.0.0.1:{port}\"\nmin_free_disk_bytes = 0\napi_timeout = \"60s\"\n\n\
             [logging]\nfiles = false\n\n",
            data = q(&dir.join("data")),
            model = q(&absolute(&args.model_dir)?),
            ort = q(&absolute(&args.onnxruntime_library)?),
            sched = q(&dir.join("schedules")),
        );
        for (name, s) in &servers {
            toml.push_str(&format!("[[sources]]\nname = \"{name}\"\nurl = \"{}\"\nfull_text = true\nlanguage = \"en\"\n\n", s.url(&format!("/feeds/{name}"))));
        }
        std::fs::write(dir.join("newsd.toml"), toml)?;
        Ok(())
    };
    write_config("flat")?;
    std::fs::write(
        dir.join("schedules/bench.toml"),
        format!(
            "[[job]]\nname = \"crawl\"\ncron = \"{} * * * * *\"\ntask = \"crawl\"\ntimeout = \"10m\"\n\n\
             [[job]]\nname = \"embed\"\ncron = \"{} * * * * *\"\ntask = \"embed\"\ntimeout = \"60m\"\n",
            seconds_list(10, 0)?,
            seconds_list(5, 2)?
        ),
    )?;
    let cpu = crate::bench::cpu_summary();
    println!("bench api: {} corpus articles on {} local hosts; {cpu}; data {}", all.len(), servers.len(), dir.display());

    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let mut daemon = start_daemon(&dir).await?;
    let indexed = wait_indexed(&http, &base, args.warm, &mut daemon, Duration::from_secs(1800)).await?;
    let queries: Vec<String> = all.iter().filter(|a| !a.title.trim().is_empty()).step_by(7).map(|a| a.title.clone()).take(500).collect();
    let rss_before = proc_kib(daemon.pid, "VmRSS:");
    println!("daemon pid {} indexed {indexed} articles; RSS {:.0} MiB; load starts while it keeps crawling and embedding", daemon.pid, rss_before as f64 / 1024.0);
    let l = load(&base, &queries, args.searches, args.clients).await;
    let rss_after = proc_kib(daemon.pid, "VmRSS:");
    let now_indexed = status(&http, &base).await.and_then(|s| s.pointer("/index/index_size").and_then(|v| v.as_i64())).unwrap_or(0);
    report(&format!("flat, {} clients, {indexed}->{now_indexed} vectors", args.clients), &l, rss_before, rss_after);

    // The old way: one process per search, each with its own model and index.
    if args.cli_processes > 0 {
        let exe = std::env::current_exe()?;
        let started = Instant::now();
        let mut children = Vec::new();
        for i in 0..args.cli_processes {
            let child = std::process::Command::new(&exe)
                .arg("--config")
                .arg(dir.join("newsd.toml"))
                .args(["--local", "search", &queries[i % queries.len()], "-k", "10", "--json"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()?;
            children.push(child);
        }
        // Peak RSS per process: VmHWM sampled until each exits.
        let pids: Vec<u32> = children.iter().map(|c| c.id()).collect();
        let sampler = std::thread::spawn(move || {
            let mut peaks = vec![0u64; pids.len()];
            loop {
                let mut alive = 0;
                for (i, pid) in pids.iter().enumerate() {
                    let hwm = proc_kib(*pid, "VmHWM:");
                    if hwm > 0 {
                        alive += 1;
                        peaks[i] = peaks[i].max(hwm);
                    }
                }
                if alive == 0 {
                    break peaks;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        let mut failed = 0;
        for mut c in children {
            if !c.wait()?.success() {
                failed += 1;
            }
        }
        let wall = started.elapsed().as_secs_f64();
        let peaks = sampler.join().map_err(|_| anyhow::anyhow!("sampler"))?;
        let total: u64 = peaks.iter().sum();
        println!(
            "RESULT api old way: {} concurrent `newsd --local search` processes: {:.1} s wall, {failed} failed, peak RSS summed {:.0} MiB (max {:.0} MiB per process) vs the daemon's {:.0} MiB",
            args.cli_processes,
            wall,
            total as f64 / 1024.0,
            peaks.iter().max().copied().unwrap_or(0) as f64 / 1024.0,
            rss_after as f64 / 1024.0
        );
    }

    if args.hnsw_vectors > 0 {
        stop_daemon(daemon).await?;
        let config = crate::Config::load(&dir.join("newsd.toml"))?;
        let store = crate::store::Store::from_config(&config).await?;
        let version = store.active_model().await?.ok_or_else(|| anyhow::anyhow!("no model recorded"))?.version;
        let base_vectors: Vec<Vec<f32>> = store.embedding_page(&version, 0, 2000).await?.into_iter().map(|(_, v)| v).collect();
        let source_id = store.sync_sources(&config.sources).await?.values().next().map(|s| s.id).ok_or_else(|| anyhow::anyhow!("no source"))?;
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let t = Instant::now();
        let now = crate::store::now_ms();
        let mut made = 0;
        while made < args.hnsw_vectors {
            let n = 5000.min(args.hnsw_vectors - made);
            let batch: Vec<crate::store::NewArticle> = (made..made + n)
                .map(|i| crate::store::NewArticle {
                    url: format!("https://synthetic.example/{i}"),
                    source_id,
                    title: format!("synthetic article {i}"),
                    body: String::new(),
                    published_at: Some(now - 86_400_000 * 400),
                    fetched_at: now,
                    content_hash: format!("synthetic-{i}"),
                    language: Some("en".into()),
                    extraction: "feed".into(),
                    page_status: crate::store::PageStatus::NoPage,
                    page_attempts: 0,
                    page_error: None,
                    charset: None,
                })
                .collect();
            let ids = store.insert_articles(&batch).await?;
            let vectors: Vec<Vec<f32>> = ids
                .iter()
                .map(|_| {
                    let b = &base_vectors[rng.random_range(0..base_vectors.len())];
                    let mut v: Vec<f32> = b.iter().map(|x| x + 0.06 * (rng.random::<f32>() - 0.5)).collect();
                    crate::embed::model::normalize(&mut v);
                    v
                })
                .collect();
            let items: Vec<(i64, String)> = ids.iter().map(|id| (*id, format!("synthetic-{id}"))).collect();
            store.store_embeddings(&version, &items, &vectors).await?;
            made += n;
        }
        store.close().await;
        println!("added {made} synthetic articles with vectors in {:.1} s; restarting with index.kind = \"hnsw\"", t.elapsed().as_secs_f64());
        write_config("hnsw")?;
        let mut daemon = start_daemon(&dir).await?;
        let t = Instant::now();
        let indexed = wait_indexed(&http, &base, made as i64, &mut daemon, Duration::from_secs(3600)).await?;
        println!("HNSW index of {indexed} vectors ready in {:.1} s (rebuilt at start)", t.elapsed().as_secs_f64());
        let rss_before = proc_kib(daemon.pid, "VmRSS:");
        let l = load(&base, &queries, args.searches, args.clients).await;
        let rss_after = proc_kib(daemon.pid, "VmRSS:");
        report(&format!("hnsw, {} clients, {indexed} vectors, embedding running", args.clients), &l, rss_before, rss_after);
        stop_daemon(daemon).await?;
    } else {
        stop_daemon(daemon).await?;
    }
    if !args.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}
