//! `newsd bench embed`: embedding throughput on real corpus articles (title + body, max tokens from the model,
//! 256 for the default), through the compute worker, with the same-run baselines:
//! - the fp32 ceiling: FLOPs of the texts actually run (per token: 2 x params-per-token-layer + attention) against
//!   one core's GEMM rate measured now with the BLAS FAISS links (sgemm, model-shaped and square);
//! - the sentence-transformers figure (`--python-baseline`, articles/s; measured with
//!   ../shared/bench/python-baseline.sh on the same texts; scripts/BASELINE.md records it).
//!
//! Also RSS at start, after a quarter of the texts and at the end (it must not grow with batches processed).

use std::time::Instant;

use clap::Args;

use super::{mib, rss_bytes, RssSampler};
use crate::config::{Config, Precision};
use crate::embed::article_text;
use crate::embed::model::ModelSpec;
use crate::testkit::corpus;
use crate::App;

#[derive(Debug, Args)]
pub struct EmbedBenchArgs {
    /// Articles to embed (the corpus is cycled when more are asked than it holds).
    #[arg(long, default_value_t = 1000)]
    pub articles: usize,
    /// Compute threads (ONNX Runtime intra-op).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Texts per inference batch (default: the config default).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Padded tokens per inference batch (default: the config default, 256: one full-length article at a time).
    #[arg(long)]
    pub batch_tokens: Option<usize>,
    /// sentence-transformers articles/s per thread on the same corpus (1 thread), from scripts/BASELINE.md; used
    /// when `--python-script` is not given.
    #[arg(long, default_value_t = 13.5)]
    pub python_baseline: f64,
    /// Run this python-baseline.sh (../shared/bench/python-baseline.sh) on the same number of articles in this run.
    #[arg(long)]
    pub python_script: Option<std::path::PathBuf>,
    /// Model folder (default: the config's).
    #[arg(long)]
    pub model_dir: Option<std::path::PathBuf>,
    /// Also run this model folder on the same articles, in a child process of its own (so each RSS is its own), and
    /// print the speed and memory ratios of the two in this run.
    #[arg(long)]
    pub compare_model_dir: Option<std::path::PathBuf>,
    /// The model's graph: fp32 (model.onnx) or int8 (model.int8.onnx).
    #[arg(long, value_enum, default_value_t = Precision::Fp32)]
    pub precision: Precision,
    /// Also run the same model at this precision on the same articles, in a child process of its own, and print
    /// the speed and memory ratios of the two in this run.
    #[arg(long, value_enum)]
    pub compare_precision: Option<Precision>,
}

extern "C" {
    fn sgemm_(
        transa: *const u8,
        transb: *const u8,
        m: *const i32,
        n: *const i32,
        k: *const i32,
        alpha: *const f32,
        a: *const f32,
        lda: *const i32,
        b: *const f32,
        ldb: *const i32,
        beta: *const f32,
        c: *mut f32,
        ldc: *const i32,
    );
}

/// Best-of-3 single-thread sgemm rate (GFLOP/s) for C[m x n] = A[m x k] B[k x n].
pub fn gemm_gflops(m: usize, n: usize, k: usize) -> f64 {
    let a: Vec<f32> = (0..m * k).map(|i| ((i % 17) as f32) * 0.01).collect();
    let b: Vec<f32> = (0..k * n).map(|i| ((i % 13) as f32) * 0.01).collect();
    let mut c = vec![0f32; m * n];
    let (mi, ni, ki) = (m as i32, n as i32, k as i32);
    let (alpha, beta) = (1f32, 0f32);
    let mut best = f64::MAX;
    for _ in 0..4 {
        let t = Instant::now();
        unsafe {
            sgemm_(b"N".as_ptr(), b"N".as_ptr(), &ni, &mi, &ki, &alpha, b.as_ptr(), &ni, a.as_ptr(), &ki, &beta, c.as_mut_ptr(), &ni);
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    std::hint::black_box(&c);
    2.0 * (m * n * k) as f64 / best / 1e9
}

/// FLOPs of one BERT-style forward pass over `t` tokens (dims d, feed-forward ff, layers l): the dense layers
/// (QKV + output projections 4d^2, feed-forward 2 d ff; 2 FLOPs per multiply-add) plus attention scores and
/// weighted sums (2 x 2 t d per token).
pub fn forward_flops(t: usize, d: usize, ff: usize, layers: usize) -> f64 {
    let per_token = 2.0 * (4.0 * (d * d) as f64 + 2.0 * (d * ff) as f64) + 4.0 * (t * d) as f64;
    per_token * t as f64 * layers as f64
}

pub async fn run(args: &EmbedBenchArgs) -> anyhow::Result<()> {
    let all = corpus::load()?;
    let pool: Vec<_> = all.iter().filter(|a| a.text.len() > 200).collect();
    let dir = std::env::temp_dir().join(format!("newsd-bench-embed-{}", std::process::id()));
    let mut config = Config::default();
    config.data_dir = dir.clone();
    config.embed.threads = args.threads;
    if let Some(b) = args.batch_size {
        config.embed.batch_size = b;
    }
    if let Some(b) = args.batch_tokens {
        config.embed.batch_tokens = b;
    }
    if let Some(m) = &args.model_dir {
        config.embed.model_dir = m.clone();
    }
    config.embed.precision = args.precision;
    let spec = ModelSpec::from_config(&config)?;
    let texts: Vec<String> =
        (0..args.articles).map(|i| pool[i % pool.len()]).map(|a| article_text(&a.title, &a.text, spec.max_tokens)).collect();

    // Token counts (tokenizer only; the session is not run here).
    let mut tokenizer = tokenizers::Tokenizer::from_file(spec.tokenizer_path()).map_err(|e| anyhow::anyhow!("{e}"))?;
    tokenizer
        .with_truncation(Some(tokenizers::TruncationParams { max_length: spec.max_tokens, ..Default::default() }))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    tokenizer.with_padding(None);
    let tokens: Vec<usize> = texts.iter().map(|t| tokenizer.encode(t.as_str(), true).map(|e| e.get_ids().len()).unwrap_or(0)).collect();
    drop(tokenizer);
    let (d, ff, layers) = model_shape(&spec);
    let flops: f64 = tokens.iter().map(|&t| forward_flops(t, d, ff, layers)).sum();
    let mean_tokens = tokens.iter().sum::<usize>() as f64 / tokens.len().max(1) as f64;

    let app_batch = format!("batch {} texts / {} tokens", config.embed.batch_size, config.embed.batch_tokens);
    let gemm_before = gemm_gflops(1024, 1024, 1024);
    let app = App::open(config).await?;
    let h = app.compute().await?;
    h.embed(texts[..texts.len().min(8)].to_vec()).await?; // warm-up
    let rss_start = rss_bytes();
    let sampler = RssSampler::start();
    let quarter = texts.len() / 4;
    let t = Instant::now();
    let mut rss_quarter = 0;
    let mut done = 0;
    for chunk in texts.chunks(256) {
        h.embed(chunk.to_vec()).await?;
        done += chunk.len();
        if rss_quarter == 0 && done >= quarter {
            rss_quarter = rss_bytes();
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let rss_end = rss_bytes();
    let peak = sampler.peak();
    app.shutdown().await?;
    let _ = std::fs::remove_dir_all(&dir);

    // Same-run GEMM rate on this thread (pinned to one OpenMP/BLAS thread by main()).
    let gemm_model = gemm_gflops(32 * mean_tokens as usize, ff, d);
    let gemm_square = gemm_gflops(1024, 1024, 1024);
    let gemm = gemm_model.max(gemm_square).max(gemm_before);
    let (python, python_src) = match &args.python_script {
        Some(script) => {
            let out = std::process::Command::new("bash")
                .arg(script)
                .args(["embed", &args.threads.to_string(), &texts.len().to_string(), "32"])
                .output()?;
            let text = String::from_utf8_lossy(&out.stdout);
            let line = text.lines().rev().find(|l| l.contains("texts_per_s_best")).unwrap_or("");
            let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
            match v.get("texts_per_s_best").and_then(|x| x.as_f64()) {
                Some(r) => {
                    println!("python baseline (same run): {line}");
                    (r / args.threads as f64, "measured in this run")
                }
                None => {
                    println!("python baseline failed: {}", String::from_utf8_lossy(&out.stderr));
                    (args.python_baseline, "--python-baseline figure")
                }
            }
        }
        None => (args.python_baseline, "--python-baseline figure"),
    };
    let rate = texts.len() as f64 / secs;
    let per_thread = rate / args.threads as f64;
    let ceiling = gemm * 1e9 * args.threads as f64 / (flops / texts.len() as f64);
    println!("{}", super::cpu_summary());
    println!(
        "model {} ({}, {} dims, {} layers, max {} tokens, {}); {} articles, mean {:.0} tokens, {:.2} GFLOP/article",
        spec.version,
        spec.precision.as_str(),
        d,
        layers,
        spec.max_tokens,
        app_batch,
        texts.len(),
        mean_tokens,
        flops / texts.len() as f64 / 1e9
    );
    println!("GEMM (sgemm, 1 thread): 1024^3 before {gemm_before:.1} GFLOP/s; after: model-shaped {gemm_model:.1}, 1024^3 {gemm_square:.1} GFLOP/s");
    println!(
        "embedded {} articles in {:.2} s = {:.2} articles/s with {} thread(s) ({:.1} GFLOP/s achieved)",
        texts.len(),
        secs,
        rate,
        args.threads,
        flops / secs / 1e9
    );
    println!(
        "RSS: start {:.1} MiB, after 25% {:.1} MiB, end {:.1} MiB, peak {:.1} MiB",
        mib(rss_start),
        mib(rss_quarter),
        mib(rss_end),
        mib(peak)
    );
    println!(
        "RESULT embed: {:.2} articles/s/thread = {:.0}% of the fp32 ceiling ({:.2}/s at {:.1} GFLOP/s) and {:.2}x sentence-transformers ({:.2}/s per thread, {})",
        per_thread,
        100.0 * rate / ceiling,
        ceiling,
        gemm,
        per_thread / python,
        python,
        python_src
    );
    if let Some(other) = &args.compare_model_dir {
        compare(args, Some(other), args.precision, per_thread, peak)?;
    }
    if let Some(p) = args.compare_precision {
        compare(args, args.model_dir.as_deref(), p, per_thread, peak)?;
    }
    Ok(())
}

/// Runs `bench embed` on another model folder or precision in a child process with the same settings and prints
/// both figures and their ratio.
fn compare(
    args: &EmbedBenchArgs,
    model_dir: Option<&std::path::Path>,
    precision: Precision,
    per_thread: f64,
    peak: u64,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["bench", "embed", "--articles", &args.articles.to_string(), "--threads", &args.threads.to_string()]);
    cmd.args(["--precision", precision.as_str()]);
    if let Some(m) = model_dir {
        cmd.arg("--model-dir").arg(m);
    }
    if let Some(b) = args.batch_size {
        cmd.args(["--batch-size", &b.to_string()]);
    }
    if let Some(b) = args.batch_tokens {
        cmd.args(["--batch-tokens", &b.to_string()]);
    }
    let out = cmd.output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let label = format!("{} {}", model_dir.map(|m| m.display().to_string()).unwrap_or_else(|| "the same model".into()), precision.as_str());
    println!("--- {label} (child process, same articles and settings)");
    for line in text.lines().filter(|l| l.starts_with("model ") || l.starts_with("embedded") || l.starts_with("RSS")) {
        println!("{line}");
    }
    let rate = text
        .lines()
        .find_map(|l| l.strip_prefix("RESULT embed: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok());
    let other_peak = text
        .lines()
        .find(|l| l.starts_with("RSS:"))
        .and_then(|l| l.rsplit("peak ").next())
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok());
    match (rate, other_peak) {
        (Some(r), Some(p)) => println!(
            "RESULT embed compare: {} {:.2} articles/s/thread = {:.2}x {label} ({:.2}); peak RSS {:.0} vs {:.0} MiB",
            args.precision.as_str(),
            per_thread,
            per_thread / r,
            r,
            mib(peak),
            p
        ),
        _ => anyhow::bail!(
            "bench embed on {label} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).lines().rev().take(5).collect::<Vec<_>>().join(" | ")
        ),
    }
    Ok(())
}

/// (hidden size, feed-forward size, layers) from the model folder's config.json (MiniLM-L6 defaults).
fn model_shape(spec: &ModelSpec) -> (usize, usize, usize) {
    let c: serde_json::Value = std::fs::read_to_string(spec.dir.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let get = |k: &str, d: usize| c.get(k).and_then(|v| v.as_u64()).map(|v| v as usize).unwrap_or(d);
    (get("hidden_size", spec.dims), get("intermediate_size", 4 * spec.dims), get("num_hidden_layers", 6))
}
