//! `newsd bench precision`: what the int8 graph costs in retrieval, on the real corpus. Both precisions of one
//! model embed the same articles (title + body, as the embed task does) through the compute worker, one after the
//! other in this process; then, for `--queries` articles spread evenly over the corpus (each article's own vector
//! as the query, itself excluded), the exact top-k over all articles is computed with the fp32 vectors and with
//! the int8 vectors, and the int8 top-k is compared with the fp32 top-k:
//! - overlap@k: the share of the fp32 top-k the int8 top-k also holds (the bar: mean >= 0.95 at k = 10);
//! - the cosine between each article's fp32 and int8 vector (min, p1, p5, median);
//! - the speed of both in this run (articles/s per thread), and their ratio.
//!
//! Search is exact (brute force here, no FAISS), so the figure is the model's alone.

use std::time::Instant;

use clap::Args;

use crate::config::{Config, Precision};
use crate::embed::article_text;
use crate::embed::model::ModelSpec;
use crate::testkit::corpus;
use crate::App;

#[derive(Debug, Args)]
pub struct PrecisionBenchArgs {
    /// Articles to embed (0: every corpus article with a body, ~3,600).
    #[arg(long, default_value_t = 0)]
    pub articles: usize,
    /// Query articles (spread evenly over the embedded ones).
    #[arg(long, default_value_t = 500)]
    pub queries: usize,
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    /// Model folder (default: the config's); it needs both model.onnx and model.int8.onnx.
    #[arg(long)]
    pub model_dir: Option<std::path::PathBuf>,
    /// Compute threads for both.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

struct Embedded {
    version: String,
    vectors: Vec<Vec<f32>>,
    per_sec: f64,
}

async fn embed_all(args: &PrecisionBenchArgs, precision: Precision, texts: &[String]) -> anyhow::Result<Embedded> {
    let dir = std::env::temp_dir().join(format!("newsd-bench-precision-{}-{}", precision.as_str(), std::process::id()));
    let mut config = Config::default();
    config.data_dir = dir.clone();
    config.embed.threads = args.threads;
    config.embed.precision = precision;
    if let Some(m) = &args.model_dir {
        config.embed.model_dir = m.clone();
    }
    let app = App::open(config).await?;
    let h = app.compute().await?;
    let version = h.model_version().to_string();
    h.embed(texts[..texts.len().min(8)].to_vec()).await?; // warm-up
    let t = Instant::now();
    let mut vectors = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(256) {
        vectors.extend(h.embed(chunk.to_vec()).await?);
    }
    let secs = t.elapsed().as_secs_f64();
    app.shutdown().await?;
    drop(app);
    let _ = std::fs::remove_dir_all(&dir);
    let per_sec = texts.len() as f64 / secs / args.threads as f64;
    println!("{version}: embedded {} articles in {secs:.1} s = {per_sec:.2} articles/s/thread", texts.len());
    Ok(Embedded { version, vectors, per_sec })
}

/// The `k` nearest (inner product) to `vectors[q]` among all others, best first.
fn top_k(vectors: &[Vec<f32>], q: usize, k: usize) -> Vec<usize> {
    let query = &vectors[q];
    let mut scored: Vec<(f32, usize)> = vectors
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != q)
        .map(|(i, v)| (v.iter().zip(query).map(|(a, b)| a * b).sum::<f32>(), i))
        .collect();
    let k = k.min(scored.len());
    if k == 0 {
        return Vec::new();
    }
    scored.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0));
    scored.truncate(k);
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored.into_iter().map(|(_, i)| i).collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Retrieval agreement of `other` with `reference` on the given queries: (mean overlap@k, min overlap, share of
/// queries whose top-1 is the same).
pub fn overlap_at_k(reference: &[Vec<f32>], other: &[Vec<f32>], queries: &[usize], k: usize) -> (f64, f64, f64) {
    let mut sum = 0.0;
    let mut min = 1.0f64;
    let mut same_top1 = 0usize;
    for &q in queries {
        let a = top_k(reference, q, k);
        let b = top_k(other, q, k);
        let o = a.iter().filter(|i| b.contains(i)).count() as f64 / a.len().max(1) as f64;
        sum += o;
        min = min.min(o);
        same_top1 += (a.first() == b.first()) as usize;
    }
    let n = queries.len().max(1) as f64;
    (sum / n, min, same_top1 as f64 / n)
}

pub async fn run(args: &PrecisionBenchArgs) -> anyhow::Result<()> {
    let all = corpus::load()?;
    let pool: Vec<_> = all.iter().filter(|a| a.text.len() > 200).collect();
    let n = if args.articles == 0 { pool.len() } else { args.articles.min(pool.len()) };
    let mut config = Config::default();
    if let Some(m) = &args.model_dir {
        config.embed.model_dir = m.clone();
    }
    let spec = ModelSpec::from_config(&config)?;
    let texts: Vec<String> = pool[..n].iter().map(|a| article_text(&a.title, &a.text, spec.max_tokens)).collect();
    println!("{}", super::cpu_summary());
    println!("{} corpus articles, model folder {}, {} thread(s)", texts.len(), spec.dir.display(), args.threads);

    let fp32 = embed_all(args, Precision::Fp32, &texts).await?;
    let int8 = embed_all(args, Precision::Int8, &texts).await?;

    let mut cosines: Vec<f64> =
        fp32.vectors.iter().zip(&int8.vectors).map(|(a, b)| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>() as f64).collect();
    cosines.sort_by(|a, b| a.total_cmp(b));
    let step = (texts.len() / args.queries.max(1)).max(1);
    let queries: Vec<usize> = (0..texts.len()).step_by(step).take(args.queries).collect();
    let (mean, min, top1) = overlap_at_k(&fp32.vectors, &int8.vectors, &queries, args.k);
    println!(
        "cosine fp32 vs int8 per article: min {:.4}, p1 {:.4}, p5 {:.4}, median {:.4}, mean {:.4}",
        cosines[0],
        percentile(&cosines, 0.01),
        percentile(&cosines, 0.05),
        percentile(&cosines, 0.5),
        cosines.iter().sum::<f64>() / cosines.len().max(1) as f64
    );
    println!(
        "RESULT precision: {} vs {}: top-{} overlap {mean:.4} (min {min:.2}, same top-1 {:.1}%) on {} article queries over {} articles; speed {:.2} vs {:.2} articles/s/thread = {:.2}x",
        int8.version,
        fp32.version,
        args.k,
        100.0 * top1,
        queries.len(),
        texts.len(),
        int8.per_sec,
        fp32.per_sec,
        int8.per_sec / fp32.per_sec
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_counts_shared_neighbours_and_excludes_the_query() {
        let v = |x: f32, y: f32| {
            let n = (x * x + y * y).sqrt();
            vec![x / n, y / n]
        };
        let a = vec![v(1.0, 0.0), v(0.9, 0.1), v(0.8, 0.2), v(0.0, 1.0)];
        assert_eq!(top_k(&a, 0, 2), vec![1, 2]);
        assert_eq!(overlap_at_k(&a, &a, &[0, 1, 2, 3], 2), (1.0, 1.0, 1.0));
        // Another set where query 0's nearest are 1 and 3: half its top-2 is shared, its top-1 still agrees.
        let b = vec![v(1.0, 0.0), v(0.95, 0.05), v(0.0, 1.0), v(0.8, 0.2)];
        let (mean, min, _) = overlap_at_k(&a, &b, &[0], 2);
        assert_eq!((mean, min), (0.5, 0.5));
    }
}
