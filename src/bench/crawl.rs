//! `newsd bench crawl`: the whole corpus (feeds + article pages) from local servers, one loopback address per
//! outlet (127.0.0.2, .3, ...) as real crawls hit one host per site, into a fresh SQLite database.
//! Baseline in the same run: the same page requests with no extraction and no storage (the loopback HTTP ceiling).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use futures::StreamExt;

use super::{mib, RssSampler};
use crate::config::{Config, SourceConfig};
use crate::crawl::{CrawlOptions, Crawler};
use crate::store::Store;
use crate::testkit::{corpus, NewsServer};

#[derive(Debug, Args)]
pub struct CrawlBenchArgs {
    /// Corpus CSV (default: .cache/testdata/NewsArticles.csv or $NEWSD_CORPUS).
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// First crawl every Nth article only, to show memory does not grow with the number of articles crawled.
    #[arg(long, default_value_t = 4)]
    pub small_every: i64,
    /// Global concurrency of the crawler.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// Serve only articles whose id is divisible by this (1 = all).
    #[arg(long, default_value_t = 1)]
    pub every: i64,
}

/// Child-process side: serve, print "OUTLET URL" lines then "ready", run until killed.
pub async fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    let all = match &args.corpus {
        Some(p) => corpus::load_from(p)?,
        None => corpus::load()?,
    };
    let articles: Vec<_> = all.into_iter().filter(|a| a.id % args.every.max(1) == 0).collect();
    let mut outlets: Vec<String> = articles.iter().map(|a| a.source.clone()).collect();
    outlets.sort();
    outlets.dedup();
    let servers = start_servers(&articles, &outlets).await?;
    for (name, s) in &servers {
        println!("{name} {}", s.url(&format!("/feeds/{name}")));
    }
    println!("ready");
    futures::future::pending::<()>().await;
    Ok(())
}

/// Starts `newsd bench serve-corpus` as a child process and reads its feed URLs.
async fn spawn_server(corpus_path: &Option<PathBuf>, every: i64) -> anyhow::Result<(tokio::process::Child, Vec<(String, String)>)> {
    use tokio::io::AsyncBufReadExt;
    let mut cmd = tokio::process::Command::new(std::env::current_exe()?);
    cmd.args(["bench", "serve-corpus", "--every", &every.to_string()]);
    if let Some(p) = corpus_path {
        cmd.arg("--corpus").arg(p);
    }
    let mut child = cmd.stdout(std::process::Stdio::piped()).kill_on_drop(true).spawn()?;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut feeds = Vec::new();
    while let Some(line) = lines.next_line().await? {
        if line == "ready" {
            return Ok((child, feeds));
        }
        if let Some((name, url)) = line.split_once(' ') {
            feeds.push((name.to_string(), url.to_string()));
        }
    }
    anyhow::bail!("corpus server exited before it was ready")
}

struct Pass {
    articles: i64,
    secs: f64,
    peak_rss: u64,
    start_rss: u64,
}

pub async fn run(args: &CrawlBenchArgs) -> anyhow::Result<()> {
    let all = match &args.corpus {
        Some(p) => corpus::load_from(p)?,
        None => corpus::load()?,
    };
    let mut outlets: Vec<String> = all.iter().map(|a| a.source.clone()).collect();
    outlets.sort();
    outlets.dedup();
    println!("corpus: {} articles from {} outlets; crawler concurrency {}", all.len(), outlets.len(), args.concurrency);

    // The servers run in a child process so the RSS figures are the crawler's alone.
    let mut small_peak = 0;
    if args.small_every > 1 {
        let p = pass(&args.corpus, args.small_every, args.concurrency).await?;
        report("small", &p);
        small_peak = p.peak_rss;
    }
    let full = pass(&args.corpus, 1, args.concurrency).await?;
    report("full", &full);

    // Baseline: fetch the same pages with a plain client, same hosts, one connection per host, no work.
    let servers = start_servers(&all, &outlets).await?;
    let client = reqwest::Client::builder().pool_max_idle_per_host(1).build()?;
    let urls: Vec<Vec<String>> = servers
        .iter()
        .map(|(name, s)| all.iter().filter(|a| &a.source == name).map(|a| s.url(&format!("/articles/{}", a.id))).collect())
        .collect();
    let t = Instant::now();
    let total: usize = futures::stream::iter(urls.into_iter().map(|list| {
        let client = client.clone();
        async move {
            let mut n = 0;
            for u in list {
                if client.get(&u).send().await.and_then(|r| r.error_for_status()).is_ok() {
                    n += 1;
                }
            }
            n
        }
    }))
    .buffer_unordered(outlets.len())
    .collect::<Vec<usize>>()
    .await
    .into_iter()
    .sum();
    let raw = t.elapsed().as_secs_f64();
    let newsd_rate = full.articles as f64 / full.secs;
    let raw_rate = total as f64 / raw;
    println!("baseline raw page fetch (no extraction, no storage): {total} pages in {raw:.2} s = {raw_rate:.0} pages/s");
    println!("RESULT crawl: {newsd_rate:.0} articles/s end to end ({:.2}x of the raw-fetch ceiling); peak RSS {:.1} MiB full vs {:.1} MiB at {:.0}% of the corpus",
        newsd_rate / raw_rate, mib(full.peak_rss), mib(small_peak), 100.0 / args.small_every as f64);
    Ok(())
}

fn report(label: &str, p: &Pass) {
    println!(
        "{label:>5}: {} articles stored in {:.2} s = {:.0} articles/s; RSS at start {:.1} MiB, peak {:.1} MiB (+{:.1} MiB)",
        p.articles,
        p.secs,
        p.articles as f64 / p.secs,
        mib(p.start_rss),
        mib(p.peak_rss),
        mib(p.peak_rss.saturating_sub(p.start_rss))
    );
}

async fn start_servers(articles: &[corpus::CorpusArticle], outlets: &[String]) -> anyhow::Result<Vec<(String, NewsServer)>> {
    let mut out = Vec::new();
    for (i, name) in outlets.iter().enumerate() {
        let mine: Vec<_> = articles.iter().filter(|a| &a.source == name).cloned().collect();
        let addr = format!("127.0.0.{}:0", i + 2).parse()?;
        out.push((name.clone(), NewsServer::start_on(addr, mine).await?));
    }
    Ok(out)
}

async fn pass(corpus_path: &Option<PathBuf>, every: i64, concurrency: usize) -> anyhow::Result<Pass> {
    let (_child, feeds) = spawn_server(corpus_path, every).await?;
    let dir = tempfile_dir()?;
    let mut config = Config::default();
    config.data_dir = dir.clone();
    config.crawl.per_host_interval = Duration::ZERO;
    config.crawl.concurrency = concurrency;
    config.crawl.max_items_per_feed = 10_000;
    config.sources = feeds
        .iter()
        .map(|(name, url)| SourceConfig {
            name: name.clone(),
            url: url.clone(),
            enabled: true,
            full_text: true,
            selectors: None,
            language: Some("en".into()),
            min_interval: None,
            // The local news server is on loopback.
            allow_private_addresses: Some(true),
        })
        .collect();
    let store = Store::from_config(&config).await?;
    let crawler = Crawler::new(Arc::new(config), store.clone())?;
    let start_rss = super::rss_bytes();
    let sampler = RssSampler::start();
    let t = Instant::now();
    let report = crawler.crawl(&CrawlOptions::default()).await?;
    let secs = t.elapsed().as_secs_f64();
    let peak_rss = sampler.peak();
    if report.totals.failed > 0 {
        anyhow::bail!("benchmark crawl had failures: {:?}", report.sources.iter().filter_map(|s| s.error.clone()).collect::<Vec<_>>());
    }
    let articles = store.count_articles().await?;
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Pass { articles, secs, peak_rss, start_rss })
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("newsd-bench-{}-{}", std::process::id(), rand::random::<u32>()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
