//! `newsd bench search`: k=10 queries on a 100k-vector index, 1 thread, for each index kind (flat, sq8, hnsw,
//! hnsw_sq8; `--kinds`): newsd end to end through the compute worker's queue (query embedding excluded) against raw
//! FAISS searching the same saved index file on the calling thread; recall@k against exact search; the saved
//! file's bytes per vector; build time; the RSS of the process holding the model and the index.
//!
//! Each kind runs in its own child process (this executable, `bench search --child-kind KIND`), so its RSS holds
//! the model and that kind's index only, not what the allocator kept from an earlier kind.
//!
//! sq8: newsd searches a trained sq8 index with its own scan over the FAISS codes (`index::sq8scan`), not with
//! FAISS's SQ8 search; "raw FAISS" is still FAISS's own SQ8 search of the saved file, and the child also times the
//! scan alone on the calling thread ("raw scan", the saved file loaded as newsd loads it). The SIMD path the scan
//! ran (`NEWSD_SQ8_SCAN` forces one) is printed and put in the RESULT line. The parent writes the
//! vectors and queries to files in a temporary folder; a child reads the vectors back in chunks of 5,000 into one
//! reused buffer while adding them (so its RSS reflects the index), and reports its figures and hits as one JSON
//! line. Recall is measured by the parent against exact inner-product search (a FAISS `Flat` over the same vectors,
//! computed before any child starts).
//!
//! Vectors, by default: real embeddings of 256 corpus articles, spread into `--vectors` distinct vectors by adding
//! noise and re-normalising (so the distribution looks like real embeddings, not uniform noise); queries are made
//! the same way. With `--vectors-from DATA_DIR`: the vectors a newsd database holds for its active model (e.g.
//! after `bench reembed`), in article id order; `--queries` of them, drawn at random (fixed seed), are held out of
//! the index and used as the queries: real article vectors whose neighbours are other articles, with no self hit
//! (a query that is in the index finds itself at score 1, which makes recall@k easier than real searches), and no
//! synthetic perturbation. The index then holds the next `--vectors` stored vectors. With `--sentences`: real-model
//! vectors (the model at `--precision`, int8 by default) of distinct corpus sentences of 40+ characters, then
//! pairs of consecutive sentences (the corpus holds ~100k of them), `--queries` of them held out as queries.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use faiss::{Index, MetricType};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::{cpu_summary, mib, rss_bytes};
use crate::compute::SearchFilter;
use crate::config::Config;
use crate::embed::article_text;
use crate::embed::model::normalize;
use crate::index::vector::{IndexKind, VectorIndex};
use crate::testkit::corpus;
use crate::App;

const ALL_KINDS: &str = "flat,sq8,hnsw,hnsw_sq8";

#[derive(Debug, Args)]
pub struct SearchBenchArgs {
    #[arg(long, default_value_t = 100_000)]
    pub vectors: usize,
    #[arg(long, default_value_t = 1000)]
    pub queries: usize,
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    /// Index kinds to measure, comma-separated: flat, sq8, hnsw, hnsw_sq8.
    #[arg(long, default_value = ALL_KINDS)]
    pub kinds: String,
    /// Skip the HNSW kinds (hnsw, hnsw_sq8; each build takes a couple of minutes on one thread).
    #[arg(long)]
    pub no_hnsw: bool,
    /// Model folder (default: the config's); its dimensions size the index and its load counts in the RSS.
    #[arg(long)]
    pub model_dir: Option<PathBuf>,
    /// Index the vectors stored in this newsd data directory's database (active model) instead of synthetic ones;
    /// queries are held-out stored vectors (see the module comment).
    #[arg(long)]
    pub vectors_from: Option<PathBuf>,
    /// Index real-model vectors of distinct corpus sentences (then pairs of consecutive sentences), embedded here
    /// at `--precision`; queries are held-out sentences (see the module comment).
    #[arg(long)]
    pub sentences: bool,
    /// The model's precision for `--sentences` (int8: about twice as fast to make them).
    #[arg(long, value_enum, default_value_t = crate::config::Precision::Int8)]
    pub precision: crate::config::Precision,
    /// Internal: measure one kind on the vectors in `--child-dir` and print its figures as JSON.
    #[arg(long, hide = true)]
    pub child_kind: Option<String>,
    #[arg(long, hide = true)]
    pub child_dir: Option<PathBuf>,
}

/// What the parent hands the children (in `meta.json` beside `vectors.f32` and `queries.f32`).
#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    vectors: usize,
    queries: usize,
    dims: usize,
}

/// One child's figures.
#[derive(Debug, Serialize, Deserialize)]
struct KindResult {
    kind: String,
    build_s: f64,
    rss_model: u64,
    rss_index: u64,
    /// VmHWM at the end of the build and the searches through the queue (before raw FAISS loads its copy).
    peak: u64,
    file_bytes: u64,
    newsd_ms: Vec<f64>,
    raw_ms: Vec<f64>,
    newsd_hits: Vec<Vec<i64>>,
    raw_hits: Vec<Vec<i64>>,
    /// sq8: the scan's SIMD path (None: FAISS searched it) and its times alone on the calling thread.
    #[serde(default)]
    scan_path: Option<String>,
    #[serde(default)]
    scan_ms: Vec<f64>,
    #[serde(default)]
    scan_hits: Vec<Vec<i64>>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Peak resident set size of this process (VmHWM), bytes.
fn hwm_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok()))
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

fn write_f32(w: &mut impl Write, v: &[f32]) -> std::io::Result<()> {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    w.write_all(&bytes)
}

fn read_f32(r: &mut impl Read, n: usize, out: &mut Vec<f32>) -> std::io::Result<()> {
    let mut bytes = vec![0u8; n * 4];
    r.read_exact(&mut bytes)?;
    out.clear();
    out.extend(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])));
    Ok(())
}

fn kinds(args: &SearchBenchArgs) -> anyhow::Result<Vec<IndexKind>> {
    let mut out = Vec::new();
    for name in args.kinds.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let kind = IndexKind::parse(name);
        if kind.as_str() != name.to_ascii_lowercase() {
            anyhow::bail!("unknown index kind {name:?} in --kinds (flat, sq8, hnsw, hnsw_sq8)");
        }
        if !(args.no_hnsw && kind.is_hnsw()) && !out.contains(&kind) {
            out.push(kind);
        }
    }
    Ok(out)
}

pub async fn run(args: &SearchBenchArgs) -> anyhow::Result<()> {
    if let (Some(kind), Some(dir)) = (&args.child_kind, &args.child_dir) {
        let result = child(args, IndexKind::parse(kind), dir).await?;
        println!("CHILD-RESULT {}", serde_json::to_string(&result)?);
        return Ok(());
    }
    let kinds = kinds(args)?;
    println!("{}", cpu_summary());
    let work = tempfile::Builder::new().prefix("newsd-bench-search-").tempdir()?;
    let meta = match &args.vectors_from {
        Some(data_dir) => stored_vectors(args, data_dir, work.path()).await?,
        None if args.sentences => sentence_vectors(args, work.path()).await?,
        None => synthetic_vectors(args, work.path()).await?,
    };
    std::fs::write(work.path().join("meta.json"), serde_json::to_string(&meta)?)?;
    let t = Instant::now();
    let exact = exact_hits(work.path(), &meta, args.k)?;
    println!("exact top-{} of {} queries over {} vectors x {} in {:.1} s", args.k, meta.queries, meta.vectors, meta.dims, t.elapsed().as_secs_f64());

    let mut flat: Option<(f64, f64)> = None;
    for kind in kinds {
        let r = run_child(args, kind, work.path())?;
        report(args, &meta, &r, &exact, &mut flat);
    }
    Ok(())
}

/// Synthetic vectors from real base embeddings (the model runs here); the queries are made the same way.
async fn synthetic_vectors(args: &SearchBenchArgs, work: &Path) -> anyhow::Result<Meta> {
    let all = corpus::load()?;
    let base_dir = work.join("base");
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

    let make = |rng: &mut rand::rngs::StdRng| {
        let b = &base[rng.random_range(0..base.len())];
        let mut v: Vec<f32> = b.iter().map(|x| x + 0.06 * (rng.random::<f32>() - 0.5)).collect();
        normalize(&mut v);
        v
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut q = std::io::BufWriter::new(std::fs::File::create(work.join("queries.f32"))?);
    for _ in 0..args.queries {
        write_f32(&mut q, &make(&mut rng))?;
    }
    q.flush()?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut w = std::io::BufWriter::new(std::fs::File::create(work.join("vectors.f32"))?);
    for _ in 0..args.vectors {
        write_f32(&mut w, &make(&mut rng))?;
    }
    w.flush()?;
    Ok(Meta { vectors: args.vectors, queries: args.queries, dims })
}

/// Distinct corpus texts for `--sentences`: every sentence of 40+ characters, then pairs of consecutive ones,
/// until `n` (fewer if the corpus runs out).
pub fn corpus_sentences(n: usize) -> anyhow::Result<Vec<String>> {
    let all = corpus::load()?;
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(n);
    let split = |text: &str| -> Vec<String> { text.split_inclusive(". ").map(|s| s.trim().to_string()).filter(|s| s.len() >= 40).collect() };
    for pass in 0..2 {
        for a in &all {
            let sentences = split(&a.text);
            let texts: Vec<String> = if pass == 0 { sentences } else { sentences.windows(2).map(|w| format!("{} {}", w[0], w[1])).collect() };
            for t in texts {
                if out.len() == n {
                    return Ok(out);
                }
                if seen.insert(t.clone()) {
                    out.push(t);
                }
            }
        }
    }
    Ok(out)
}

/// Real-model vectors of distinct corpus sentences (`--sentences`): `--queries` random ones held out as queries.
async fn sentence_vectors(args: &SearchBenchArgs, work: &Path) -> anyhow::Result<Meta> {
    let want = args.vectors + args.queries;
    let texts = corpus_sentences(want)?;
    anyhow::ensure!(texts.len() == want, "the corpus gives {} distinct sentences, {want} wanted", texts.len());
    let base_dir = work.join("base");
    let mut cfg = Config::default();
    cfg.data_dir = base_dir.clone();
    cfg.embed.precision = args.precision;
    if let Some(m) = &args.model_dir {
        cfg.embed.model_dir = m.clone();
    }
    let app = App::open(cfg).await?;
    let h = app.compute().await?;
    let version = h.model_version().to_string();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let held: HashSet<usize> = rand::seq::index::sample(&mut rng, want, args.queries).into_iter().collect();
    let (mut w, mut q) = (
        std::io::BufWriter::new(std::fs::File::create(work.join("vectors.f32"))?),
        std::io::BufWriter::new(std::fs::File::create(work.join("queries.f32"))?),
    );
    let t = Instant::now();
    let mut dims = 0;
    let mut done = 0;
    for chunk in texts.chunks(4096) {
        for v in h.embed(chunk.to_vec()).await? {
            dims = v.len();
            if held.contains(&done) {
                write_f32(&mut q, &v)?;
            } else {
                write_f32(&mut w, &v)?;
            }
            done += 1;
        }
        if done % (4096 * 5) < 4096 {
            println!("  embedded {done}/{want} sentences in {:.0} s", t.elapsed().as_secs_f64());
        }
    }
    w.flush()?;
    q.flush()?;
    app.shutdown().await?;
    drop(app);
    let _ = std::fs::remove_dir_all(&base_dir);
    println!(
        "embedded {want} distinct corpus sentences with {version} in {:.1} s: {} indexed, {} held out as queries",
        t.elapsed().as_secs_f64(),
        args.vectors,
        args.queries
    );
    Ok(Meta { vectors: args.vectors, queries: args.queries, dims })
}

/// The stored vectors of a newsd database (its active model, else its newest): `--queries` random ones held out
/// as queries, the next `--vectors` others indexed (ids renumbered 1..; the children index positions).
async fn stored_vectors(args: &SearchBenchArgs, data_dir: &Path, work: &Path) -> anyhow::Result<Meta> {
    let mut cfg = Config::default();
    cfg.data_dir = data_dir.to_path_buf();
    let db = data_dir.join("newsd.db");
    anyhow::ensure!(db.exists(), "no newsd database at {}", db.display());
    let store = crate::store::Store::from_config(&cfg).await?;
    let models = store.embedding_models().await?;
    let model = match store.active_model().await? {
        Some(m) => m,
        None => models.iter().max_by_key(|m| m.created_at).cloned().ok_or_else(|| anyhow::anyhow!("{} holds no embeddings", db.display()))?,
    };
    let stored = store.count_embeddings(&model.version).await? as usize;
    let want = stored.min(args.vectors + args.queries);
    anyhow::ensure!(want > args.queries, "{} holds {stored} vectors of {:?}: too few for {} queries", db.display(), model.version, args.queries);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let held: HashSet<usize> = rand::seq::index::sample(&mut rng, want, args.queries).into_iter().collect();
    let (mut w, mut q) = (
        std::io::BufWriter::new(std::fs::File::create(work.join("vectors.f32"))?),
        std::io::BufWriter::new(std::fs::File::create(work.join("queries.f32"))?),
    );
    let t = Instant::now();
    let (mut after, mut seen, mut indexed) = (0i64, 0usize, 0usize);
    let mut dims = 0;
    while seen < want {
        let page = store.embedding_page(&model.version, after, 2000).await?;
        let Some(last) = page.last() else { break };
        after = last.0;
        for (_, v) in page {
            if seen == want {
                break;
            }
            dims = v.len();
            if held.contains(&seen) {
                write_f32(&mut q, &v)?;
            } else {
                write_f32(&mut w, &v)?;
                indexed += 1;
            }
            seen += 1;
        }
    }
    w.flush()?;
    q.flush()?;
    anyhow::ensure!(dims == model.dims as usize, "stored vectors have {dims} dimensions, model row says {}", model.dims);
    println!(
        "read {seen} stored vectors of {:?} ({dims} dims) from {} in {:.1} s: {indexed} indexed, {} held out as queries",
        model.version,
        db.display(),
        t.elapsed().as_secs_f64(),
        args.queries
    );
    Ok(Meta { vectors: indexed, queries: args.queries, dims })
}

/// Exact top-k of every query: a FAISS `Flat` (inner product) over all the vectors; ids are positions + 1.
fn exact_hits(work: &Path, meta: &Meta, k: usize) -> anyhow::Result<Vec<Vec<i64>>> {
    let mut index = faiss::index_factory(meta.dims as u32, "Flat", MetricType::InnerProduct)?;
    let mut r = std::io::BufReader::new(std::fs::File::open(work.join("vectors.f32"))?);
    let mut buf = Vec::new();
    let mut done = 0;
    while done < meta.vectors {
        let n = 5000.min(meta.vectors - done);
        read_f32(&mut r, n * meta.dims, &mut buf)?;
        index.add(&buf)?;
        done += n;
    }
    let mut queries = Vec::new();
    read_f32(&mut std::fs::File::open(work.join("queries.f32"))?, meta.queries * meta.dims, &mut queries)?;
    let result = index.search(&queries, k)?;
    Ok(result.labels.chunks(k).map(|c| c.iter().filter_map(|l| l.get().map(|v| v as i64 + 1)).collect()).collect())
}

fn run_child(args: &SearchBenchArgs, kind: IndexKind, work: &Path) -> anyhow::Result<KindResult> {
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.args(["bench", "search", "--k", &args.k.to_string(), "--child-kind", kind.as_str()]);
    cmd.arg("--child-dir").arg(work);
    if let Some(m) = &args.model_dir {
        cmd.arg("--model-dir").arg(m);
    }
    cmd.stderr(std::process::Stdio::inherit());
    let out = cmd.output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find_map(|l| l.strip_prefix("CHILD-RESULT "));
    match line {
        Some(json) if out.status.success() => Ok(serde_json::from_str(json)?),
        _ => anyhow::bail!("bench search for {kind} failed ({}): {}", out.status, text.lines().rev().take(5).collect::<Vec<_>>().join(" | ")),
    }
}

/// One kind, in this (child) process: build the worker's index from the vectors file, save it, search it through
/// the queue, then search the saved file with raw FAISS.
async fn child(args: &SearchBenchArgs, kind: IndexKind, work: &Path) -> anyhow::Result<KindResult> {
    let meta: Meta = serde_json::from_str(&std::fs::read_to_string(work.join("meta.json"))?)?;
    let mut queries = Vec::new();
    read_f32(&mut std::fs::File::open(work.join("queries.f32"))?, meta.queries * meta.dims, &mut queries)?;
    let queries: Vec<Vec<f32>> = queries.chunks_exact(meta.dims).map(|q| q.to_vec()).collect();

    let dir = work.join(format!("kind-{kind}"));
    let mut cfg = Config::default();
    cfg.data_dir = dir.clone();
    cfg.index.kind = kind.as_str().into();
    cfg.index.save_every = usize::MAX;
    if let Some(m) = &args.model_dir {
        cfg.embed.model_dir = m.clone();
    }
    let app = App::open(cfg.clone()).await?;
    let h = app.compute().await?;
    anyhow::ensure!(h.dims() == meta.dims, "the model has {} dimensions, the vectors {} (pick the model with --model-dir)", h.dims(), meta.dims);
    let version = h.model_version().to_string();
    let rss_model = rss_bytes();
    // Fill the worker's index in chunks read into reused buffers, so RSS reflects the index.
    let mut r = std::io::BufReader::new(std::fs::File::open(work.join("vectors.f32"))?);
    let (mut flat, mut chunk): (Vec<f32>, Vec<Vec<f32>>) = (Vec::new(), Vec::new());
    let mut build = 0.0;
    let mut id = 0usize;
    while id < meta.vectors {
        let n = 5000.min(meta.vectors - id);
        read_f32(&mut r, n * meta.dims, &mut flat)?;
        chunk.resize_with(n, Vec::new);
        for (c, v) in chunk.iter_mut().zip(flat.chunks_exact(meta.dims)) {
            c.clear();
            c.extend_from_slice(v);
        }
        let ids: Vec<i64> = (id as i64 + 1..=(id + n) as i64).collect();
        let t = Instant::now();
        h.add(&version, ids, &chunk).await?;
        build += t.elapsed().as_secs_f64();
        id += n;
    }
    drop((flat, chunk, r));
    let rss_index = rss_bytes();
    h.save(true).await?;
    let vdir = crate::index::vector::version_dir(&cfg.index_dir(), &version);
    let file_bytes = crate::index::vector::read_manifest(&vdir).map(|m| m.file_bytes).unwrap_or(0);

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
    let peak = hwm_bytes();
    app.shutdown().await?;
    drop(app);

    // Raw FAISS: the same saved file, searched on a blocking thread with 1 OpenMP thread. sq8: first newsd's scan
    // alone on the same file, loaded as the worker loads it.
    let path = crate::index::vector::index_path(&vdir);
    let k = args.k;
    let (idx_cfg, scan_dir) = (cfg.index.clone(), vdir.clone());
    type Raw = (Vec<f64>, Vec<Vec<i64>>, Option<String>, Vec<f64>, Vec<Vec<i64>>);
    let (raw_ms, raw_hits, scan_path, scan_ms, scan_hits) = tokio::task::spawn_blocking(move || -> anyhow::Result<Raw> {
        unsafe { omp_set_num_threads(1) };
        let (mut scan_path, mut scan_ms, mut scan_hits) = (None, Vec::new(), Vec::new());
        if kind == IndexKind::Sq8 {
            let v = VectorIndex::load(&version, kind, meta.dims, idx_cfg.hnsw_m, idx_cfg.ef_search, scan_dir).map_err(|e| anyhow::anyhow!("{e}"))?;
            if let Some(p) = v.sq8_scan_path() {
                scan_path = Some(p.as_str().to_string());
                let none = SearchFilter::default();
                for q in queries.iter().take(20) {
                    v.search_scan(q, k, &none, p)?;
                }
                for q in &queries {
                    let t = Instant::now();
                    let hits = v.search_scan(q, k, &none, p)?;
                    scan_ms.push(t.elapsed().as_secs_f64() * 1000.0);
                    scan_hits.push(hits.iter().map(|x| x.article_id).collect::<Vec<_>>());
                }
            }
        }
        let mut index = faiss::read_index(path.to_str().unwrap_or_default())?;
        for q in queries.iter().take(20) {
            index.search(q, k)?;
        }
        let mut ms = Vec::with_capacity(queries.len());
        let mut hits = Vec::with_capacity(queries.len());
        for q in &queries {
            let t = Instant::now();
            let r = index.search(q, k)?;
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
            hits.push(r.labels.iter().filter_map(|l| l.get().map(|v| v as i64)).collect::<Vec<_>>());
        }
        Ok((ms, hits, scan_path, scan_ms, scan_hits))
    })
    .await??;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(KindResult {
        kind: kind.as_str().into(),
        build_s: build,
        rss_model,
        rss_index,
        peak,
        file_bytes,
        newsd_ms,
        raw_ms,
        newsd_hits,
        raw_hits,
        scan_path,
        scan_ms,
        scan_hits,
    })
}

fn recall(hits: &[Vec<i64>], exact: &[Vec<i64>]) -> f64 {
    hits.iter().zip(exact).map(|(h, e)| h.iter().filter(|id| e.contains(id)).count() as f64 / e.len().max(1) as f64).sum::<f64>()
        / exact.len().max(1) as f64
}

/// Prints one kind's lines; `flat` keeps flat's (raw, newsd) medians for the speed-up of the kinds after it.
fn report(args: &SearchBenchArgs, meta: &Meta, r: &KindResult, exact: &[Vec<i64>], flat: &mut Option<(f64, f64)>) {
    let kind = &r.kind;
    let (mut newsd_ms, mut raw_ms) = (r.newsd_ms.clone(), r.raw_ms.clone());
    newsd_ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    raw_ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let same = r.newsd_hits.iter().zip(&r.raw_hits).filter(|(a, b)| a == b).count();
    let (nm, np) = (percentile(&newsd_ms, 0.5), percentile(&newsd_ms, 0.99));
    let (rm, rp) = (percentile(&raw_ms, 0.5), percentile(&raw_ms, 0.99));
    let per_vector = r.file_bytes as f64 / meta.vectors.max(1) as f64;
    let recall_raw = recall(&r.raw_hits, exact);
    let recall_newsd = recall(&r.newsd_hits, exact);
    println!(
        "{kind}: {} vectors x {} added in {:.1} s; index file {:.1} MiB ({per_vector:.0} bytes/vector); RSS with model {:.1} MiB, \
         with model + index {:.1} MiB (peak {:.1} MiB)",
        meta.vectors,
        meta.dims,
        r.build_s,
        mib(r.file_bytes),
        mib(r.rss_model),
        mib(r.rss_index),
        mib(r.peak)
    );
    let raw_label = if kind == "sq8" { "raw FAISS SQ8" } else { "raw FAISS" };
    println!("{kind}: {raw_label}   k={} median {rm:.3} ms  p99 {rp:.3} ms  recall@{} vs exact {recall_raw:.4}", args.k, args.k);
    let mut scan_note = String::new();
    if kind == "sq8" {
        match &r.scan_path {
            Some(path) => {
                let mut scan_ms = r.scan_ms.clone();
                scan_ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
                let (sm, sp) = (percentile(&scan_ms, 0.5), percentile(&scan_ms, 0.99));
                let same_scan = r.scan_hits.iter().zip(&r.raw_hits).filter(|(a, b)| a == b).count();
                println!(
                    "{kind}: raw scan ({path}) k={} median {sm:.3} ms  p99 {sp:.3} ms  recall@{} vs exact {:.4}  (identical to raw FAISS SQ8 {same_scan}/{}; \
                     {:.2}x faster than it)",
                    args.k,
                    args.k,
                    recall(&r.scan_hits, exact),
                    meta.queries,
                    rm / sm
                );
                println!("{kind} scan: {path} (newsd searches the SQ8 codes with its own {path} kernel, not FAISS's SQ8 search)");
                scan_note = format!("; sq8 scan: {path}, raw scan median {sm:.3} ms vs raw FAISS SQ8 {rm:.3} ms = {:.2}x", rm / sm);
            }
            None => {
                println!("{kind} scan: none (newsd searches with FAISS's SQ8 search)");
                scan_note = "; sq8 scan: none (FAISS search)".into();
            }
        }
    }
    println!(
        "{kind}: newsd queue k={} median {nm:.3} ms  p99 {np:.3} ms  recall@{} vs exact {recall_newsd:.4}  (identical to raw {same}/{})",
        args.k,
        args.k,
        meta.queries
    );
    let mut line = format!(
        "RESULT search {kind}: newsd median {nm:.3} ms / p99 {np:.3} ms vs {raw_label} {rm:.3} / {rp:.3} ms = {:+.1}% median; \
         recall@{} vs exact {recall_newsd:.3}; {per_vector:.0} bytes/vector; build {:.1} s; RSS model + {}k index {:.0} MiB (peak {:.0})",
        100.0 * (nm / rm - 1.0),
        args.k,
        r.build_s,
        meta.vectors / 1000,
        mib(r.rss_index),
        mib(r.peak)
    );
    match flat {
        None if kind == "flat" => *flat = Some((rm, nm)),
        Some((frm, fnm)) => line.push_str(&format!("; vs flat: raw median {:.2}x faster, newsd median {:.2}x faster", *frm / rm, *fnm / nm)),
        None => {}
    }
    line.push_str(&scan_note);
    println!("{line}");
}

extern "C" {
    fn omp_set_num_threads(n: std::os::raw::c_int);
}
