//! `newsd bench reembed`: re-embedding a large archive through the real `newsd reembed` (a child process: the
//! CLI path users run when the model or its precision changes), with a `kill -9` halfway.
//!
//! 1. A fresh SQLite database gets `--articles` articles: the real corpus cycled, each cycle with varied text (its
//!    sentences rotated and the cycle number in the title, so every article has its own text and vector), and a
//!    vector for the *other* precision of the same model (random unit vectors: what is measured is re-embedding,
//!    and computing 100k old vectors first would double the run), active; so the configured model is a new
//!    version and `reembed` embeds everything for it and switches over at the end, as a real precision switch does.
//! 2. `newsd reembed` runs; its RSS is sampled every second (VmRSS of the child); at `--kill-at` of the articles
//!    stored it is killed with SIGKILL.
//! 3. `newsd reembed` runs again: the time from its start to its first newly stored vector is the resume time; it
//!    must finish the rest (no article embedded twice beyond the chunk lost in flight) and switch over.
//!
//! Articles/hour counts both runs' embedding time (the time between kill and restart excluded).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use rand::{Rng, SeedableRng};

use super::soak::{absolute, q};
use crate::config::{Config, Precision};
use crate::embed::model::{normalize, ModelSpec};
use crate::store::{now_ms, NewArticle, PageStatus, Store};
use crate::testkit::corpus;

#[derive(Debug, Args)]
pub struct ReembedBenchArgs {
    #[arg(long, default_value_t = 100_000)]
    pub articles: usize,
    /// The precision re-embedded into (the database starts with the other one's vectors).
    #[arg(long, value_enum, default_value_t = Precision::Int8)]
    pub precision: Precision,
    /// Kill the first run (SIGKILL) when this share of the articles is stored; 0 never.
    #[arg(long, default_value_t = 0.5)]
    pub kill_at: f64,
    /// Compute threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    #[arg(long, default_value = "models/all-MiniLM-L6-v2")]
    pub model_dir: PathBuf,
    #[arg(long, default_value = "models/onnxruntime/libonnxruntime.so.1.32.0")]
    pub onnxruntime_library: PathBuf,
    /// Keep the data directory (its database then holds `--articles` real vectors of the new version, e.g. for
    /// `newsd bench search --vectors-from`) here instead of a temporary one that is deleted.
    #[arg(long)]
    pub keep: Option<PathBuf>,
}

/// The body of a cycled article: its sentences rotated by `cycle` places (cycle 0: as is).
pub fn varied_text(text: &str, cycle: usize) -> String {
    if cycle == 0 {
        return text.to_string();
    }
    let sentences: Vec<&str> = text.split_inclusive(". ").collect();
    if sentences.len() < 2 {
        return format!("{text} ({cycle})");
    }
    let k = cycle % sentences.len();
    let mut out = String::with_capacity(text.len() + 8);
    for s in sentences[k..].iter().chain(&sentences[..k]) {
        out.push_str(s);
        if !s.ends_with(' ') {
            out.push(' ');
        }
    }
    out.trim_end().to_string()
}

fn vm_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb * 1024)
}

/// One `newsd reembed` run: how long it ran, when it stored its first new vector (checked every 250 ms), RSS
/// samples (share done, bytes; every second), whether it was killed.
struct RunResult {
    secs: f64,
    first_new_secs: Option<f64>,
    rss: Vec<(f64, u64)>,
    killed: bool,
    stored_at_start: i64,
    stored_at_end: i64,
}

async fn run_once(exe: &Path, config: &Path, store: &Store, version: &str, total: usize, kill_at: Option<i64>, log: &Path) -> anyhow::Result<RunResult> {
    let stored_at_start = store.count_embeddings(version).await?;
    let log_file = std::fs::File::create(log)?;
    let started = Instant::now();
    let mut child = tokio::process::Command::new(exe)
        .arg("--config")
        .arg(config)
        .args(["reembed", "--quiet"])
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().unwrap_or(0);
    let mut rss = Vec::new();
    let mut first_new_secs = None;
    let mut killed = false;
    let mut next_report = 0.0;
    let mut ticks = 0u64;
    loop {
        tokio::select! {
            status = child.wait() => {
                let status = status?;
                if !status.success() {
                    let tail = std::fs::read_to_string(log).unwrap_or_default();
                    anyhow::bail!("newsd reembed failed ({status}): {}", tail.lines().rev().take(6).collect::<Vec<_>>().join(" | "));
                }
                break;
            }
            _ = tokio::time::sleep(Duration::from_millis(250)) => {
                ticks += 1;
                let stored = store.count_embeddings(version).await?;
                if first_new_secs.is_none() && stored > stored_at_start {
                    first_new_secs = Some(started.elapsed().as_secs_f64());
                }
                let share = stored as f64 / total as f64;
                if ticks % 4 == 0 {
                    if let Some(bytes) = vm_rss(pid) {
                        rss.push((share, bytes));
                    }
                }
                if share >= next_report {
                    println!(
                        "  {:>6.1} s  {stored}/{total} stored  RSS {:.0} MiB",
                        started.elapsed().as_secs_f64(),
                        rss.last().map(|r| super::mib(r.1)).unwrap_or(0.0)
                    );
                    next_report = (share * 10.0).floor() / 10.0 + 0.1;
                }
                if kill_at.is_some_and(|k| stored >= k) {
                    // SIGKILL: no shutdown, no save; what is stored is what the next run finds.
                    child.start_kill()?;
                    child.wait().await?;
                    killed = true;
                    break;
                }
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(RunResult { secs, first_new_secs, rss, killed, stored_at_start, stored_at_end: store.count_embeddings(version).await? })
}

pub async fn run(args: &ReembedBenchArgs) -> anyhow::Result<()> {
    let all = corpus::load()?;
    let pool: Vec<_> = all.iter().filter(|a| a.text.len() > 200).collect();
    let dir = match &args.keep {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            absolute(d)?
        }
        None => std::env::temp_dir().join(format!("newsd-bench-reembed-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir)?;
    let data = dir.join("data");
    if data.exists() {
        anyhow::bail!("{} exists: --keep wants a new folder", data.display());
    }
    let old_precision = match args.precision {
        Precision::Fp32 => Precision::Int8,
        Precision::Int8 => Precision::Fp32,
    };
    let model_dir = absolute(&args.model_dir)?;
    let toml = format!(
        "data_dir = {data}\n\n[embed]\nmodel_dir = {model}\nonnxruntime_library = {ort}\nthreads = {threads}\nprecision = \"{precision}\"\n\n[daemon]\nmin_free_disk_bytes = 0\n",
        data = q(&data),
        model = q(&model_dir),
        ort = q(&absolute(&args.onnxruntime_library)?),
        threads = args.threads,
        precision = args.precision.as_str(),
    );
    let config_path = dir.join("newsd.toml");
    std::fs::write(&config_path, &toml)?;
    let config = Config::load(&config_path)?;
    let new = ModelSpec::from_config(&config)?;
    let old = ModelSpec::from_dir_as(&model_dir, old_precision, None)?;
    println!("{}", super::cpu_summary());
    println!(
        "reembed: {} articles (corpus of {} cycled with varied text), {} -> {} ({} thread(s)), data {}",
        args.articles,
        pool.len(),
        old.version,
        new.version,
        args.threads,
        data.display()
    );

    // 1. The archive, with vectors of the old version.
    let t = Instant::now();
    let store = Store::from_config(&config).await?;
    let source_id: i64 = sqlx::query_scalar("INSERT INTO sources (name, url) VALUES ('archive', 'http://archive.invalid/feed') RETURNING id")
        .fetch_one(store.pool())
        .await?;
    store.register_model(&old.version, old.dims, &old.registered_path()).await?;
    store.activate_model(&old.version).await?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let now = now_ms();
    let mut at = 0;
    while at < args.articles {
        let end = (at + 2000).min(args.articles);
        let batch: Vec<NewArticle> = (at..end)
            .map(|i| {
                let a = pool[i % pool.len()];
                let cycle = i / pool.len();
                let title = if cycle == 0 { a.title.clone() } else { format!("{} ({cycle})", a.title) };
                let body = varied_text(&a.text, cycle);
                NewArticle {
                    url: format!("{}#{cycle}", a.original_link),
                    source_id,
                    content_hash: crate::crawl::content_hash(&title, &body),
                    title,
                    body,
                    published_at: Some(now - (args.articles - i) as i64 * 60_000),
                    fetched_at: now,
                    language: Some("en".into()),
                    extraction: "feed".into(),
                    page_status: PageStatus::NoPage,
                    page_attempts: 0,
                    page_error: None,
                    charset: None,
                }
            })
            .collect();
        let ids = store.insert_articles(&batch).await?;
        let items: Vec<(i64, String)> = ids.iter().zip(&batch).map(|(id, a)| (*id, a.content_hash.clone())).collect();
        let vectors: Vec<Vec<f32>> = (0..items.len())
            .map(|_| {
                let mut v: Vec<f32> = (0..old.dims).map(|_| rng.random::<f32>() - 0.5).collect();
                normalize(&mut v);
                v
            })
            .collect();
        store.store_embeddings(&old.version, &items, &vectors).await?;
        at = end;
    }
    let stored = store.count_articles().await?;
    println!("archive: {stored} articles with {} vectors in {:.1} s", old.version, t.elapsed().as_secs_f64());
    anyhow::ensure!(stored as usize == args.articles, "{stored} of {} articles stored (duplicate URLs?)", args.articles);

    // 2. reembed, killed at --kill-at.
    let exe = std::env::current_exe()?;
    let kill_at = (args.kill_at > 0.0 && args.kill_at < 1.0).then(|| (args.articles as f64 * args.kill_at) as i64);
    println!("run 1: newsd reembed{}", kill_at.map(|k| format!(", SIGKILL at {k} stored")).unwrap_or_default());
    let first = run_once(&exe, &config_path, &store, &new.version, args.articles, kill_at, &dir.join("run1.log")).await?;
    let mut runs = vec![first];
    if runs[0].killed {
        println!("run 2: newsd reembed (after SIGKILL with {} stored)", runs[0].stored_at_end);
        runs.push(run_once(&exe, &config_path, &store, &new.version, args.articles, None, &dir.join("run2.log")).await?);
    }

    // 3. Figures.
    let done = store.count_embeddings(&new.version).await?;
    let active = store.active_model().await?.map(|m| m.version);
    let old_left = store.count_embeddings(&old.version).await?;
    let secs: f64 = runs.iter().map(|r| r.secs).sum();
    let per_hour = args.articles as f64 / secs * 3600.0;
    let rss: Vec<(f64, u64)> = runs.iter().flat_map(|r| r.rss.iter().copied()).collect();
    let at_share = |s: f64| rss.iter().find(|r| r.0 >= s).map(|r| super::mib(r.1)).unwrap_or(0.0);
    let max_rss = rss.iter().map(|r| r.1).max().unwrap_or(0);
    println!(
        "RSS (MiB) at 10% {:.0}, 25% {:.0}, 50% {:.0}, 75% {:.0}, 95% {:.0}; max {:.0}",
        at_share(0.10),
        at_share(0.25),
        at_share(0.50),
        at_share(0.75),
        at_share(0.95),
        super::mib(max_rss)
    );
    let mut line = format!(
        "RESULT reembed: {} articles {} -> {} in {:.0} s = {:.0} articles/hour ({:.2}/s, {} thread(s)); switched: {}; old vectors left {}",
        args.articles,
        old.precision.as_str(),
        new.precision.as_str(),
        secs,
        per_hour,
        args.articles as f64 / secs,
        args.threads,
        active.as_deref() == Some(new.version.as_str()),
        old_left
    );
    if let Some(second) = runs.get(1) {
        let redone = (second.stored_at_end - second.stored_at_start) - (args.articles as i64 - second.stored_at_start);
        line.push_str(&format!(
            "; killed (SIGKILL) at {} stored, the next run stored its first vector {:.1} s after starting, re-embedded {} twice",
            runs[0].stored_at_end,
            second.first_new_secs.unwrap_or(f64::NAN),
            redone.max(0)
        ));
    }
    line.push_str(&format!("; RSS max {:.0} MiB", super::mib(max_rss)));
    println!("{line}");
    anyhow::ensure!(done as usize == args.articles, "{done} of {} articles have vectors of {}", args.articles, new.version);
    store.close().await;
    if args.keep.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::varied_text;

    #[test]
    fn cycles_rotate_sentences() {
        let t = "One. Two. Three.";
        assert_eq!(varied_text(t, 0), t);
        assert_eq!(varied_text(t, 1), "Two. Three. One.");
        assert_eq!(varied_text(t, 2), "Three. One. Two.");
        assert_eq!(varied_text("No stop", 3), "No stop (3)");
    }
}
