//! `newsd bench search`: k=10 queries on a 100k-vector index, 1 thread, Flat and HNSW: newsd end to end through the
//! compute worker's queue (query embedding excluded) against raw FAISS searching the same index file on the
//! calling thread. Also the RSS of the process holding the model and the 100k index.
//!
//! Vectors: real embeddings of corpus articles, spread into 100k distinct vectors by adding noise and
//! re-normalising (so the distribution looks like real embeddings, not uniform noise). HNSW recall@10 is measured
//! against the exact (Flat) results on the same queries.

use std::time::Instant;

use clap::Args;
use faiss::Index;
use rand::{Rng, SeedableRng};

use super::{mib, rss_bytes};
use crate::compute::SearchFilter;
use crate::config::Config;
use crate::embed::article_text;
use crate::embed::model::normalize;
use crate::testkit::corpus;
use crate::App;

#[derive(Debug, Args)]
pub struct SearchBenchArgs {
    #[arg(long, default_value_t = 100_000)]
    pub vectors: usize,
    #[arg(long, default_value_t = 1000)]
    pub queries: usize,
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    /// Skip the HNSW part (its build takes a couple of minutes on one thread).
    #[arg(long)]
    pub no_hnsw: bool,
    /// Model folder (default: the config's); its dimensions size the index and its load counts in the RSS.
    #[arg(long)]
    pub model_dir: Option<std::path::PathBuf>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

pub async fn run(args: &SearchBenchArgs) -> anyhow::Result<()> {
    let all = corpus::load()?;
    // Real base vectors: 256 embedded corpus articles (one worker, 1 thread).
    let base_dir = std::env::temp_dir().join(format!("newsd-bench-search-base-{}", std::process::id()));
    let mut cfg = Config::default();
    cfg.data_dir = base_dir.clone();
    if let Some(m) = &args.model_dir {
        cfg.embed.model_dir = m.clone();
    }
    let app = App::open(cfg).await?;
    let h = app.compute().await?;
    let texts: Vec<String> = all.iter().filter(|a| a.text.len() > 200).step_by(14).take(256).map(|a| article_text(&a.title, &a.text, 256)).collect();
    let t = Instant::now();
    let base = h.embed(texts).await?;
    println!("embedded {} real articles as base vectors in {:.1} s", base.len(), t.elapsed().as_secs_f64());
    let dims = base[0].len();
    app.shutdown().await?;
    drop(app);
    let _ = std::fs::remove_dir_all(&base_dir);

    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let make = |rng: &mut rand::rngs::StdRng| {
        let b = &base[rng.random_range(0..base.len())];
        let mut v: Vec<f32> = b.iter().map(|x| x + 0.06 * (rng.random::<f32>() - 0.5)).collect();
        normalize(&mut v);
        v
    };
    let queries: Vec<Vec<f32>> = (0..args.queries).map(|_| make(&mut rng)).collect();

    let mut flat_hits = Vec::new();
    for kind in ["flat", "hnsw"] {
        if kind == "hnsw" && args.no_hnsw {
            continue;
        }
        let dir = std::env::temp_dir().join(format!("newsd-bench-search-{kind}-{}", std::process::id()));
        let mut cfg = Config::default();
        cfg.data_dir = dir.clone();
        cfg.index.kind = kind.into();
        cfg.index.save_every = usize::MAX;
        if let Some(m) = &args.model_dir {
            cfg.embed.model_dir = m.clone();
        }
        let app = App::open(cfg.clone()).await?;
        let h = app.compute().await?;
        let version = h.model_version().to_string();
        let rss_model = rss_bytes();
        // Fill the worker's index in chunks (the chunk buffers are reused, so RSS reflects the index).
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let t = Instant::now();
        let mut id = 0i64;
        while (id as usize) < args.vectors {
            let n = 5000.min(args.vectors - id as usize);
            let chunk: Vec<Vec<f32>> = (0..n).map(|_| make(&mut rng)).collect();
            let ids: Vec<i64> = (id + 1..=id + n as i64).collect();
            h.add(&version, ids, &chunk).await?;
            id += n as i64;
        }
        let build = t.elapsed().as_secs_f64();
        let rss_index = rss_bytes();
        h.save(true).await?;

        // newsd: through the queue, one query at a time.
        for q in queries.iter().take(20) {
            h.search(q.clone(), args.k, SearchFilter::default()).await?;
        }
        let mut newsd_ms = Vec::with_capacity(queries.len());
        let mut newsd_hits = Vec::with_capacity(queries.len());
        for q in &queries {
            let t = Instant::now();
            let hits = h.search(q.clone(), args.k, SearchFilter::default()).await?;
            newsd_ms.push(t.elapsed().as_secs_f64() * 1000.0);
            newsd_hits.push(hits.iter().map(|x| x.article_id).collect::<Vec<_>>());
        }
        app.shutdown().await?;
        drop(app);

        // Raw FAISS: the same saved file, searched on a blocking thread with 1 OpenMP thread.
        let path = crate::index::vector::index_path(&crate::index::vector::version_dir(&cfg.index_dir(), &version));
        let qs = queries.clone();
        let k = args.k;
        let (mut raw_ms, raw_hits) = tokio::task::spawn_blocking(move || -> anyhow::Result<(Vec<f64>, Vec<Vec<i64>>)> {
            unsafe { omp_set_num_threads(1) };
            let mut index = faiss::read_index(path.to_str().unwrap_or_default())?;
            for q in qs.iter().take(20) {
                index.search(q, k)?;
            }
            let mut ms = Vec::with_capacity(qs.len());
            let mut hits = Vec::with_capacity(qs.len());
            for q in &qs {
                let t = Instant::now();
                let r = index.search(q, k)?;
                ms.push(t.elapsed().as_secs_f64() * 1000.0);
                hits.push(r.labels.iter().filter_map(|l| l.get().map(|v| v as i64)).collect::<Vec<_>>());
            }
            Ok((ms, hits))
        })
        .await??;
        let _ = std::fs::remove_dir_all(&dir);

        newsd_ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
        raw_ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let same = newsd_hits.iter().zip(&raw_hits).filter(|(a, b)| a == b).count();
        let (nm, np) = (percentile(&newsd_ms, 0.5), percentile(&newsd_ms, 0.99));
        let (rm, rp) = (percentile(&raw_ms, 0.5), percentile(&raw_ms, 0.99));
        println!(
            "{kind}: {} vectors x {dims} added in {build:.1} s; RSS with model {:.1} MiB, with model + index {:.1} MiB",
            args.vectors,
            mib(rss_model),
            mib(rss_index)
        );
        println!("{kind}: raw FAISS   k={} median {rm:.3} ms  p99 {rp:.3} ms", args.k);
        println!("{kind}: newsd queue k={} median {nm:.3} ms  p99 {np:.3} ms  (identical results {same}/{})", args.k, queries.len());
        let mut line = format!(
            "RESULT search {kind}: newsd median {nm:.3} ms / p99 {np:.3} ms vs raw FAISS {rm:.3} / {rp:.3} ms = {:+.1}% median; RSS model + {}k index {:.0} MiB",
            100.0 * (nm / rm - 1.0),
            args.vectors / 1000,
            mib(rss_index)
        );
        if kind == "flat" {
            flat_hits = raw_hits;
        } else if !flat_hits.is_empty() {
            let recall: f64 = raw_hits
                .iter()
                .zip(&flat_hits)
                .map(|(h, f)| h.iter().filter(|id| f.contains(id)).count() as f64 / f.len().max(1) as f64)
                .sum::<f64>()
                / raw_hits.len() as f64;
            line.push_str(&format!("; recall@{} vs exact {:.3}", args.k, recall));
        }
        println!("{line}");
    }
    Ok(())
}

extern "C" {
    fn omp_set_num_threads(n: std::os::raw::c_int);
}
