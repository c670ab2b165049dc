//! `newsd bench soak`: does the daemon's memory stay flat? Starts the real daemon (`newsd run`, a child process,
//! so only its memory is measured) on a fresh data directory with a schedule that crawls a local news site (the
//! real corpus, one loopback host per outlet), embeds and runs the built-in analysis every few seconds. First the
//! site grows (new articles at every crawl), then it stops adding articles; the daemon's RSS is sampled from
//! /proc throughout, and the slope over the constant-data phase (least squares, MB/h) is the result.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;

use crate::testkit::{corpus, NewsServer};

#[derive(Debug, Args)]
pub struct SoakBenchArgs {
    /// Minutes of the constant-data phase (the site adds nothing; the slope is measured over this phase).
    #[arg(long, default_value_t = 60.0)]
    pub minutes: f64,
    /// Minutes of the growing phase before it: the site adds articles at every crawl until it serves the corpus.
    #[arg(long, default_value_t = 5.0)]
    pub grow_minutes: f64,
    /// Seconds between two memory samples.
    #[arg(long, default_value_t = 5)]
    pub interval: u64,
    /// Seconds between two crawls (and two embeds); must divide 60.
    #[arg(long, default_value_t = 10)]
    pub crawl_every: u32,
    /// Seconds between two analyses (built-in analysis, no LLM); must divide 60.
    #[arg(long, default_value_t = 30)]
    pub analyze_every: u32,
    /// Articles on the site when the daemon starts (the corpus' oldest).
    #[arg(long, default_value_t = 1000)]
    pub start_articles: usize,
    /// Longest wait, after the growth, for the daemon to embed its backlog before the constant phase.
    #[arg(long, default_value_t = 20.0)]
    pub settle_minutes: f64,
    /// The newsd binary to soak (default: this one).
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// Corpus CSV (default: .cache/testdata/NewsArticles.csv or $NEWSD_CORPUS).
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// Model folder and ONNX Runtime library (default: the shipped config's, under the current directory).
    #[arg(long, default_value = "models/all-MiniLM-L6-v2")]
    pub model_dir: PathBuf,
    #[arg(long, default_value = "models/onnxruntime/libonnxruntime.so.1.32.0")]
    pub onnxruntime_library: PathBuf,
    /// Write every sample here (CSV).
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Print a table row every this many seconds.
    #[arg(long, default_value_t = 60)]
    pub print_every: u64,
    /// Extra environment for the daemon, NAME=VALUE (repeatable), e.g. MALLOC_ARENA_MAX=8 to compare.
    #[arg(long = "env")]
    pub env: Vec<String>,
    /// Keep the data directory (default: removed at the end).
    #[arg(long)]
    pub keep: bool,
}

/// One reading of the daemon's memory (/proc/PID/status and smaps_rollup), in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcMem {
    pub rss_kib: u64,
    pub anon_kib: u64,
    pub file_kib: u64,
    pub threads: u64,
}

/// Reads a process's memory; None once it has exited.
pub fn proc_mem(pid: u32) -> Option<ProcMem> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |text: &str, name: &str| -> Option<u64> {
        text.lines().find(|l| l.starts_with(name)).and_then(|l| l[name.len()..].split_whitespace().next()?.parse().ok())
    };
    let mut m = ProcMem {
        rss_kib: field(&status, "VmRSS:")?,
        anon_kib: field(&status, "RssAnon:").unwrap_or(0),
        file_kib: field(&status, "RssFile:").unwrap_or(0),
        threads: field(&status, "Threads:").unwrap_or(0),
    };
    // smaps_rollup's Anonymous is exact (status' RssAnon is a per-thread cached counter, slightly behind).
    if let Some(anon) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok().and_then(|s| field(&s, "Anonymous:")) {
        m.anon_kib = anon;
    }
    Some(m)
}

/// Least-squares slope of `y` over `x`; None with fewer than two distinct x.
pub fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx == 0.0 {
        return None;
    }
    Some(points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum::<f64>() / sxx)
}

/// The daemon's counters from /metrics that tell whether it is doing the work.
#[derive(Debug, Clone, Default)]
struct Progress {
    articles: i64,
    indexed: i64,
    pending_embed: i64,
    pending_pages: i64,
    crawls: i64,
    embeds: i64,
    analyses: i64,
    failed: i64,
}

fn parse_metrics(text: &str) -> Progress {
    let mut p = Progress::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else { continue };
        let v = value.parse::<f64>().unwrap_or(0.0) as i64;
        match name {
            "newsd_articles_stored" => p.articles = v,
            "newsd_index_vectors" => p.indexed = v,
            "newsd_embeddings_pending" => p.pending_embed = v,
            "newsd_pages_pending" => p.pending_pages = v,
            n if n.starts_with("newsd_job_runs_total{") => {
                if !n.contains("outcome=\"ok\"") {
                    if !n.contains("outcome=\"skipped\"") {
                        p.failed += v;
                    }
                    continue;
                }
                if n.contains("task=\"crawl\"") {
                    p.crawls += v;
                } else if n.contains("task=\"embed\"") {
                    p.embeds += v;
                } else if n.contains("task=\"analyze\"") {
                    p.analyses += v;
                }
            }
            _ => {}
        }
    }
    p
}

pub(super) fn seconds_list(every: u32, offset: u32) -> anyhow::Result<String> {
    if every == 0 || 60 % every != 0 {
        anyhow::bail!("--crawl-every and --analyze-every must divide 60 (got {every})");
    }
    Ok((0..60).step_by(every as usize).map(|s| ((s + offset % every) % 60).to_string()).collect::<Vec<_>>().join(","))
}

pub(super) fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    std::fs::canonicalize(p).map_err(|e| anyhow::anyhow!("{}: {e} (run from the repository root, or pass the path)", p.display()))
}

/// TOML string literal.
pub(super) fn q(p: &Path) -> String {
    toml::Value::String(p.display().to_string()).to_string()
}

pub(super) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

struct Sample {
    t: f64,
    phase: &'static str,
    mem: ProcMem,
    progress: Progress,
}

fn mb(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

pub async fn run(args: &SoakBenchArgs) -> anyhow::Result<()> {
    let mut all = match &args.corpus {
        Some(p) => corpus::load_from(p)?,
        None => corpus::load()?,
    };
    // The site publishes in date order: the oldest are there at the start, the newest arrive during the growth.
    all.sort_by(|a, b| a.published.cmp(&b.published).then(a.id.cmp(&b.id)));
    let total = all.len();
    let start_n = args.start_articles.min(total);
    let mut outlets: Vec<String> = all.iter().map(|a| a.source.clone()).collect();
    outlets.sort();
    outlets.dedup();
    // One server per outlet; each holds its outlet's articles in publication order, so "the first k" of a server
    // are its articles among the first N of the whole site.
    let mut servers = Vec::new();
    for (i, name) in outlets.iter().enumerate() {
        let mine: Vec<_> = all.iter().filter(|a| &a.source == name).cloned().collect();
        let addr = format!("127.0.0.{}:0", i + 2).parse()?;
        servers.push((name.clone(), NewsServer::start_on(addr, mine).await?));
    }
    let show = |n: usize| {
        for (name, s) in &servers {
            s.set_visible(all[..n].iter().filter(|a| &a.source == name).count());
        }
    };
    show(start_n);

    let dir = std::env::temp_dir().join(format!("newsd-soak-{}-{}", std::process::id(), rand::random::<u32>()));
    std::fs::create_dir_all(dir.join("schedules"))?;
    let port = free_port()?;
    let mut toml = format!(
        "data_dir = {data}\n\n[crawl]\nper_host_interval = \"0s\"\nmax_items_per_feed = 10000\n\n[embed]\nmodel_dir = {model}\nonnxruntime_library = {ort}\nthreads = 1\n\n\
         [daemon]\nschedules_dir = {sched}\nhttp_listen = \"127.0.0.1:{port}\"\nmin_free_disk_bytes = 0\n\n\
         [[analysis.profiles]]\nname = \"soak\"\nwindow = \"3650days\"\n\n",
        data = q(&dir.join("data")),
        model = q(&absolute(&args.model_dir)?),
        ort = q(&absolute(&args.onnxruntime_library)?),
        sched = q(&dir.join("schedules")),
    );
    for (name, s) in &servers {
        toml.push_str(&format!("[[sources]]\nname = \"{name}\"\nurl = \"{}\"\nfull_text = true\nlanguage = \"en\"\n\n", s.url(&format!("/feeds/{name}"))));
    }
    std::fs::write(dir.join("newsd.toml"), toml)?;
    let schedule = format!(
        "[[job]]\nname = \"crawl\"\ncron = \"{crawl} * * * * *\"\ntask = \"crawl\"\ntimeout = \"5m\"\n\n\
         [[job]]\nname = \"embed\"\ncron = \"{embed} * * * * *\"\ntask = \"embed\"\ntimeout = \"30m\"\n\n\
         [[job]]\nname = \"analyze\"\ncron = \"{analyze} * * * * *\"\ntask = \"analyze\"\nprofile = \"soak\"\ntimeout = \"5m\"\n",
        crawl = seconds_list(args.crawl_every, 0)?,
        embed = seconds_list(args.crawl_every, args.crawl_every / 2)?,
        analyze = seconds_list(args.analyze_every, 7)?,
    );
    std::fs::write(dir.join("schedules/soak.toml"), schedule)?;

    let binary = match &args.binary {
        Some(b) => b.clone(),
        None => std::env::current_exe()?,
    };
    let log = std::fs::File::create(dir.join("daemon.log"))?;
    let mut cmd = tokio::process::Command::new(&binary);
    cmd.arg("--config").arg(dir.join("newsd.toml")).arg("run").stdout(log.try_clone()?).stderr(log).kill_on_drop(true);
    for kv in &args.env {
        let (k, v) = kv.split_once('=').ok_or_else(|| anyhow::anyhow!("--env {kv:?}: expected NAME=VALUE"))?;
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().map_err(|e| anyhow::anyhow!("starting {}: {e}", binary.display()))?;
    let pid = child.id().ok_or_else(|| anyhow::anyhow!("daemon exited at once"))?;
    println!(
        "soak: daemon pid {pid} ({}), data {}; site {start_n} -> {total} articles over {} min, then constant for {} min; crawl+embed every {} s, analysis every {} s, sample every {} s",
        binary.display(),
        dir.display(),
        args.grow_minutes,
        args.minutes,
        args.crawl_every,
        args.analyze_every,
        args.interval
    );

    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let metrics_url = format!("http://127.0.0.1:{port}/metrics");
    let mut csv = match &args.csv {
        Some(p) => {
            let mut f = std::fs::File::create(p)?;
            writeln!(f, "seconds,phase,rss_kib,anon_kib,file_kib,threads,articles,indexed,pending_embed,crawls,embeds,analyses,failed")?;
            Some(f)
        }
        None => None,
    };
    println!(
        "{:>7} {:>8} {:>8} {:>8} {:>8} {:>4} {:>8} {:>8} {:>7} {:>6} {:>6} {:>6} {:>5}",
        "min", "phase", "RSS MB", "anon MB", "file MB", "thr", "articles", "indexed", "pending", "crawls", "embeds", "analy", "fail"
    );

    let started = Instant::now();
    let grow = Duration::from_secs_f64(args.grow_minutes * 60.0);
    let settle_max = Duration::from_secs_f64(args.settle_minutes * 60.0);
    let constant = Duration::from_secs_f64(args.minutes * 60.0);
    let mut samples: Vec<Sample> = Vec::new();
    let mut progress = Progress::default();
    let mut last_print: Option<Instant> = None;
    let mut shown = start_n;
    let mut constant_from: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(args.interval.max(1)));
    let result: anyhow::Result<()> = loop {
        tick.tick().await;
        let now = Instant::now();
        let el = now - started;
        if let Ok(Some(status)) = child.try_wait() {
            break Err(anyhow::anyhow!("the daemon exited ({status}); see {}", dir.join("daemon.log").display()));
        }
        if let Ok(r) = client.get(&metrics_url).send().await {
            if let Ok(text) = r.text().await {
                progress = parse_metrics(&text);
            }
        }
        let phase = if el < grow {
            let n = start_n + ((total - start_n) as f64 * el.as_secs_f64() / grow.as_secs_f64()) as usize;
            if n > shown {
                shown = n;
                show(n);
            }
            "grow"
        } else if constant_from.is_none() {
            if shown < total {
                shown = total;
                show(total);
            }
            // The backlog embedded (or waited for long enough), the constant phase starts.
            let settled = progress.articles > 0 && progress.pending_embed == 0 && progress.indexed > 0;
            if settled || el > grow + settle_max {
                if !settled {
                    println!("soak: backlog not embedded after {} min; starting the constant phase anyway", args.settle_minutes);
                }
                constant_from = Some(now);
                "constant"
            } else {
                "settle"
            }
        } else {
            "constant"
        };
        if let Some(t0) = constant_from {
            if now - t0 > constant {
                break Ok(());
            }
        }
        let Some(mem) = proc_mem(pid) else { break Err(anyhow::anyhow!("daemon pid {pid} is gone")) };
        let s = Sample { t: el.as_secs_f64(), phase, mem, progress: progress.clone() };
        if let Some(f) = csv.as_mut() {
            let p = &s.progress;
            writeln!(
                f,
                "{:.1},{},{},{},{},{},{},{},{},{},{},{},{}",
                s.t, s.phase, mem.rss_kib, mem.anon_kib, mem.file_kib, mem.threads, p.articles, p.indexed, p.pending_embed, p.crawls, p.embeds, p.analyses, p.failed
            )?;
        }
        if last_print.is_none_or(|t| now - t >= Duration::from_secs(args.print_every)) || s.phase != samples.last().map(|l| l.phase).unwrap_or("") {
            last_print = Some(now);
            let p = &s.progress;
            println!(
                "{:>7.1} {:>8} {:>8.1} {:>8.1} {:>8.1} {:>4} {:>8} {:>8} {:>7} {:>6} {:>6} {:>6} {:>5}",
                s.t / 60.0,
                s.phase,
                mb(mem.rss_kib),
                mb(mem.anon_kib),
                mb(mem.file_kib),
                mem.threads,
                p.articles,
                p.indexed,
                p.pending_embed,
                p.crawls,
                p.embeds,
                p.analyses,
                p.failed
            );
        }
        samples.push(s);
    };

    // SIGTERM: let it save and stop as in production.
    // SAFETY: kill(2) on our own child's pid, which has not been reaped yet (try_wait returned None above).
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    let _ = tokio::time::timeout(Duration::from_secs(60), child.wait()).await;
    let index_bytes = dir_size(&dir.join("data/index"));
    let db_bytes = ["newsd.db", "newsd.db-wal"].iter().map(|f| std::fs::metadata(dir.join("data").join(f)).map(|m| m.len()).unwrap_or(0)).sum::<u64>();
    if !args.keep && result.is_ok() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        println!("soak: data and daemon.log kept in {}", dir.display());
    }
    result?;

    let phase_slope = |phase: &str, f: fn(&ProcMem) -> u64| -> Option<(f64, f64, f64, f64)> {
        let pts: Vec<(f64, f64)> = samples.iter().filter(|s| s.phase == phase).map(|s| (s.t / 3600.0, mb(f(&s.mem)))).collect();
        let hours = pts.last()?.0 - pts.first()?.0;
        Some((slope(&pts)?, pts.first()?.1, pts.last()?.1, hours * 60.0))
    };
    // Before the constant phase the model and the index are loaded and the backlog embedded: its end, not a slope.
    if let Some(g) = samples.iter().rev().find(|s| s.phase != "constant") {
        println!(
            "growing data and backlog ({:.1} min): RSS at its end {:.1} MB (anonymous {:.1} MB)",
            g.t / 60.0,
            mb(g.mem.rss_kib),
            mb(g.mem.anon_kib)
        );
    }
    if let Some((anon, a, b, mins)) = phase_slope("constant", |m| m.anon_kib) {
        println!("constant data ({mins:.1} min): anonymous memory {a:.1} -> {b:.1} MB, slope {anon:+.1} MB/h");
    }
    // The second half of the constant phase, once every cache has had its chance to fill.
    let constant: Vec<&Sample> = samples.iter().filter(|s| s.phase == "constant").collect();
    let half: Vec<(f64, f64)> = constant[constant.len() / 2..].iter().map(|s| (s.t / 3600.0, mb(s.mem.rss_kib))).collect();
    let last = samples.last().map(|s| s.progress.clone()).unwrap_or_default();
    let (rss_slope, first, last_rss) = match phase_slope("constant", |m| m.rss_kib) {
        Some((s, a, b, _)) => (s, a, b),
        None => anyhow::bail!("no samples in the constant phase (use a longer --minutes)"),
    };
    let peak = samples.iter().map(|s| s.mem.rss_kib).max().unwrap_or(0);
    println!(
        "RESULT soak: constant data ({} articles, {} indexed) for {:.0} min: RSS {first:.1} -> {last_rss:.1} MB, slope {rss_slope:+.1} MB/h ({:+.1} MB/h over the second half); peak {:.1} MB; {} crawls, {} embeds, {} analyses ok, {} failed runs; index {:.1} MB, database {:.1} MB",
        last.articles,
        last.indexed,
        args.minutes,
        slope(&half).unwrap_or(f64::NAN),
        mb(peak),
        last.crawls,
        last.embeds,
        last.analyses,
        last.failed,
        index_bytes as f64 / 1048576.0,
        db_bytes as f64 / 1048576.0
    );
    Ok(())
}

fn dir_size(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum::<u64>()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_of_a_line_and_of_noise_around_it() {
        let line: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 3.0 + 2.0 * i as f64)).collect();
        assert!((slope(&line).unwrap() - 2.0).abs() < 1e-9);
        let flat: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, if i % 2 == 0 { 1.0 } else { -1.0 })).collect();
        assert!(slope(&flat).unwrap().abs() < 0.25);
        assert!(slope(&[(1.0, 1.0)]).is_none());
        assert!(slope(&[(1.0, 1.0), (1.0, 2.0)]).is_none());
    }

    #[test]
    fn reads_this_process_memory() {
        let m = proc_mem(std::process::id()).expect("own /proc entry");
        assert!(m.rss_kib > 0 && m.threads >= 1, "{m:?}");
        assert!(m.anon_kib <= m.rss_kib, "{m:?}");
    }

    #[test]
    fn cron_seconds_lists() {
        assert_eq!(seconds_list(10, 0).unwrap(), "0,10,20,30,40,50");
        assert_eq!(seconds_list(10, 5).unwrap(), "5,15,25,35,45,55");
        assert_eq!(seconds_list(30, 7).unwrap(), "7,37");
        assert!(seconds_list(7, 0).is_err());
    }

    #[test]
    fn metrics_counters_are_read() {
        let text = "# HELP x\nnewsd_articles_stored 12\nnewsd_index_vectors 10\nnewsd_embeddings_pending 2\n\
                    newsd_job_runs_total{job=\"crawl\",task=\"crawl\",outcome=\"ok\"} 5\n\
                    newsd_job_runs_total{job=\"a\",task=\"analyze\",outcome=\"failed\"} 1\n\
                    newsd_job_runs_total{job=\"a\",task=\"analyze\",outcome=\"skipped\"} 4\n";
        let p = parse_metrics(text);
        assert_eq!((p.articles, p.indexed, p.pending_embed, p.crawls, p.analyses, p.failed), (12, 10, 2, 5, 0, 1));
    }
}
