//! `newsd bench e2e`: crawl + store + embed + index of the corpus from local servers (one loopback address per
//! outlet, as in `bench crawl`) with the default single-thread compute, in articles/hour. Same-run baselines: the
//! embedding stage alone (the compute ceiling of this pipeline) and the published re-embedding guide's figure
//! (962.6 documents/hour).

use std::time::{Duration, Instant};

use clap::Args;

use super::{mib, RssSampler};
use crate::config::{Config, SourceConfig};
use crate::crawl::{CrawlOptions, Crawler};
use crate::testkit::{corpus, NewsServer};
use crate::App;

#[derive(Debug, Args)]
pub struct E2eBenchArgs {
    /// Only the first N corpus articles (default: all 3,824).
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Run as a cluster of real daemon processes on one PostgreSQL database, once per size given (e.g. `1,2,3`),
    /// instead of in this process.
    #[arg(long, value_delimiter = ',')]
    pub nodes: Vec<usize>,
    /// The PostgreSQL server for `--nodes` (a fresh schema per size, dropped after).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    pub postgres: String,
}

pub async fn run(args: &E2eBenchArgs) -> anyhow::Result<()> {
    if !args.nodes.is_empty() {
        if args.nodes.iter().any(|&n| n == 0 || n > 8) {
            anyhow::bail!("--nodes takes cluster sizes from 1 to 8, e.g. --nodes 1,2,3");
        }
        return super::cluster::run(&args.nodes, args.limit, &args.postgres).await;
    }
    let mut all = corpus::load()?;
    if let Some(n) = args.limit {
        all.truncate(n);
    }
    let mut outlets: Vec<String> = all.iter().map(|a| a.source.clone()).collect();
    outlets.sort();
    outlets.dedup();
    let mut servers = Vec::new();
    for (i, name) in outlets.iter().enumerate() {
        let mine: Vec<_> = all.iter().filter(|a| &a.source == name).cloned().collect();
        let addr = format!("127.0.0.{}:0", i + 2).parse()?;
        servers.push((name.clone(), NewsServer::start_on(addr, mine).await?));
    }
    let dir = std::env::temp_dir().join(format!("newsd-bench-e2e-{}", std::process::id()));
    let mut config = Config::default();
    config.data_dir = dir.clone();
    config.embed.threads = args.threads;
    config.crawl.per_host_interval = Duration::ZERO;
    config.crawl.max_items_per_feed = 10_000;
    config.sources = servers
        .iter()
        .map(|(name, s)| SourceConfig {
            name: name.clone(),
            url: s.url(&format!("/feeds/{name}")),
            enabled: true,
            full_text: true,
            selectors: None,
            language: Some("en".into()),
            min_interval: None,
            // The local news server is on loopback.
            allow_private_addresses: Some(true),
        })
        .collect();
    let app = App::open(config).await?;
    // Model loading and index opening are part of a daemon's start, not of each crawl: start the worker first.
    let t0 = Instant::now();
    app.compute().await?;
    let startup = t0.elapsed().as_secs_f64();
    let sampler = RssSampler::start();
    let t = Instant::now();
    let crawl = Crawler::new(app.config.clone(), app.store.clone())?.crawl(&CrawlOptions::default()).await?;
    let crawl_secs = t.elapsed().as_secs_f64();
    let embed = crate::embed::run_embed(&app).await?;
    let total = t.elapsed().as_secs_f64();
    let peak = sampler.peak();
    app.shutdown().await?;
    let stored = app.store.count_articles().await?;
    app.store.close().await;
    let _ = std::fs::remove_dir_all(&dir);

    let indexed = embed.index_size as f64;
    let per_hour = indexed / total * 3600.0;
    let embed_secs = embed.duration_ms as f64 / 1000.0;
    let embed_only = embed.embedded as f64 / embed_secs * 3600.0;
    println!(
        "corpus {} articles, {} outlets; worker start {:.1} s (model + index)",
        all.len(),
        outlets.len(),
        startup
    );
    println!(
        "crawl: {} new articles in {:.1} s ({} failed sources); embed + index: {} articles in {:.1} s ({:.2}/s, {} thread(s)); index {} vectors",
        crawl.totals.new, crawl_secs, crawl.totals.failed, embed.embedded, embed_secs, embed.articles_per_sec, embed.threads, embed.index_size
    );
    println!(
        "RESULT e2e: {indexed:.0} of {stored} stored articles crawled + stored + embedded + indexed in {total:.1} s (the rest wait for a page retry) = {per_hour:.0} articles/hour ({:.0}% of the embedding stage alone, {:.0} articles/hour; {:.0}x the guide's 962.6 documents/hour); peak RSS {:.0} MiB",
        100.0 * per_hour / embed_only,
        embed_only,
        per_hour / 962.6,
        mib(peak)
    );
    Ok(())
}
