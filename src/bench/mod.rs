//! Benchmarks that print figures (`newsd bench ...`); never timed tests. Each compares against a baseline measured
//! in the same run, because the machines are shared and noisy.

pub mod api;
pub mod crawl;
pub mod cluster;
pub mod e2e;
pub mod embed;
pub mod precision;
pub mod reembed;
pub mod search;
pub mod soak;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// The HTTP API under load while the daemon crawls and embeds: concurrent searches (p50/p99, 503s, RSS) vs
    /// concurrent `newsd --local search` processes; optionally on a large HNSW index.
    Api(api::ApiBenchArgs),
    /// Crawl the whole corpus (feeds + pages) from local servers into a fresh database.
    Crawl(crawl::CrawlBenchArgs),
    /// Embedding throughput on real articles vs the fp32 ceiling and sentence-transformers; RSS over the run.
    Embed(embed::EmbedBenchArgs),
    /// Retrieval with the int8 graph against fp32 on the real corpus: top-k overlap, cosine distribution, speed.
    Precision(precision::PrecisionBenchArgs),
    /// Re-embedding a large archive through `newsd reembed` (child processes) with a SIGKILL halfway:
    /// articles/hour, RSS over the run, resume time.
    Reembed(reembed::ReembedBenchArgs),
    /// k-NN search on 100k vectors (flat, sq8, hnsw, hnsw_sq8): newsd through the worker queue vs raw FAISS, recall@k
    /// against exact, bytes per vector, RSS with the model and the index.
    Search(search::SearchBenchArgs),
    /// Crawl + store + embed + index of the corpus from local servers, articles/hour.
    E2e(e2e::E2eBenchArgs),
    /// The daemon (`newsd run`, a child process) crawling, embedding and analysing every few seconds, first with
    /// growing then with constant data; its RSS over time and the slope (MB/h) with constant data.
    Soak(soak::SoakBenchArgs),
    /// Serve the corpus news site (one loopback host per outlet) until killed; used by `bench crawl` so the
    /// server's memory is not counted as the crawler's.
    #[command(hide = true)]
    ServeCorpus(crawl::ServeArgs),
}

pub async fn run(cmd: &BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Api(args) => api::run(args).await,
        BenchCommand::Crawl(args) => crawl::run(args).await,
        BenchCommand::Embed(args) => embed::run(args).await,
        BenchCommand::Precision(args) => precision::run(args).await,
        BenchCommand::Reembed(args) => reembed::run(args).await,
        BenchCommand::Search(args) => search::run(args).await,
        BenchCommand::E2e(args) => e2e::run(args).await,
        BenchCommand::Soak(args) => soak::run(args).await,
        BenchCommand::ServeCorpus(args) => crawl::serve(args).await,
    }
}

/// The CPU that produced a figure: model name, cores, and the vector extensions that matter here.
pub fn cpu_summary() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info.lines().find_map(|l| l.strip_prefix("model name")).map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string()).unwrap_or_default();
    let flags: Vec<&str> = info.lines().find_map(|l| l.strip_prefix("flags")).map(|v| v.split_whitespace().collect()).unwrap_or_default();
    let has: Vec<&str> = ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8"].into_iter().filter(|f| flags.contains(f)).collect();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    format!("CPU {model}, {cores} cores, {}", has.join(" "))
}

/// Resident set size of this process in bytes (Linux), for memory figures.
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

/// Samples RSS every 20 ms until dropped; `peak()` is the highest seen.
pub struct RssSampler {
    peak: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl RssSampler {
    pub fn start() -> RssSampler {
        use std::sync::atomic::Ordering;
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(rss_bytes()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss_bytes(), Ordering::Relaxed);
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        });
        RssSampler { peak, stop }
    }

    pub fn peak(&self) -> u64 {
        self.peak.load(std::sync::atomic::Ordering::Relaxed).max(rss_bytes())
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
