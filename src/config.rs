//! newsd's configuration file (TOML).
//!
//! One `Config` type, deserialised with `deny_unknown_fields` everywhere so a typo is an error, not a silently
//! ignored setting. Durations are humantime strings ("15m", "1h 30m"). Secrets never live in the file: the file
//! names the environment variable that holds them (`api_key_env`, `secret_env`, `url_env`).
//!
//! Loading reports errors with the file, line and column at fault; semantic validation errors name the entry and,
//! when it can be found, its line.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::analysis::config::{AnalysisConfig, LlmConfig, ProfileConfig};
pub use crate::notify::config::{NotifyConfig, TargetConfig};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}:{column}: {message}")]
    Parse { path: PathBuf, line: usize, column: usize, message: String },
    #[error("{path}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Invalid { path: PathBuf, line: Option<usize>, message: String },
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directory for the database (SQLite default), the index, the lock file and logs. Relative paths in the
    /// config are resolved against the config file's directory.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub crawl: CrawlConfig,
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
    #[serde(default)]
    pub embed: EmbedConfig,
    #[serde(default)]
    pub index: IndexConfig,
    #[serde(default)]
    pub analysis: AnalysisConfig,
    #[serde(default)]
    pub notify: NotifyConfig,
    #[serde(default)]
    pub daemon: DaemonConfig,
    #[serde(default)]
    pub logging: LoggingConfig,
    #[serde(default)]
    pub cluster: ClusterConfig,
    /// Where the file was loaded from (set by `load`), used to resolve relative paths.
    #[serde(skip)]
    pub base_dir: PathBuf,
    #[serde(skip)]
    pub path: PathBuf,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://PATH` (created on first use; relative to the config file) or `postgres://...`.
    /// Empty means `sqlite://<data_dir>/newsd.db`.
    #[serde(default)]
    pub url: String,
    /// Name of an environment variable holding the URL instead (for PostgreSQL passwords).
    #[serde(default)]
    pub url_env: Option<String>,
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    #[serde(default = "default_busy_timeout", with = "humantime_serde")]
    pub busy_timeout: Duration,
}

fn default_max_connections() -> u32 {
    4
}
fn default_busy_timeout() -> Duration {
    Duration::from_secs(10)
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: String::new(),
            url_env: None,
            max_connections: default_max_connections(),
            busy_timeout: default_busy_timeout(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CrawlConfig {
    #[serde(default = "default_user_agent")]
    pub user_agent: String,
    /// Requests in flight across all hosts.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Minimum time between two requests to the same host (one connection per host at a time).
    #[serde(default = "default_host_interval", with = "humantime_serde")]
    pub per_host_interval: Duration,
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Whole-request timeout (headers and body).
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    #[serde(default = "default_max_redirects")]
    pub max_redirects: usize,
    #[serde(default = "default_true")]
    pub respect_robots_txt: bool,
    /// First back-off after a failure; doubles per consecutive failure (with jitter) up to `backoff_max`.
    #[serde(default = "default_backoff_base", with = "humantime_serde")]
    pub backoff_base: Duration,
    #[serde(default = "default_backoff_max", with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Longest Retry-After honoured; longer values are capped to this.
    #[serde(default = "default_retry_after_max", with = "humantime_serde")]
    pub retry_after_max: Duration,
    /// Articles written per transaction.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// How many times an article page is tried (across crawls) before its feed text is kept as final.
    #[serde(default = "default_page_attempts")]
    pub max_page_attempts: u32,
    /// Items taken from one feed per crawl (newest first); protects against runaway feeds.
    #[serde(default = "default_max_items")]
    pub max_items_per_feed: usize,
    /// Query parameters dropped from URLs when canonicalising (in addition to utm_*).
    #[serde(default = "default_tracking_params")]
    pub tracking_params: Vec<String>,
    /// Let article pages (full_text) be fetched from loopback, private, link-local and other non-public
    /// addresses. Off by default: a feed's items would otherwise make newsd request internal services. Feeds
    /// themselves are always fetched wherever they are. Per source: `allow_private_addresses` in `[[sources]]`.
    #[serde(default)]
    pub allow_private_addresses: bool,
    /// Hosts ("intranet.example" or "10.0.0.5:8080") whose article pages may be fetched although they are on a
    /// non-public address.
    #[serde(default)]
    pub allow_private_hosts: Vec<String>,
    /// Longest a source's article pages are fetched in one pass; pages not reached keep their feed text and stay
    /// pending for the next pass. Keep it well under the crawl job's timeout.
    #[serde(default = "default_source_time_budget", with = "humantime_serde")]
    pub source_time_budget: Duration,
}

/// Half the shipped crawl job's 10-minute timeout.
fn default_source_time_budget() -> Duration {
    Duration::from_secs(5 * 60)
}

fn default_user_agent() -> String {
    format!("newsd/{} (+https://github.com/newsd/newsd; news crawler)", env!("CARGO_PKG_VERSION"))
}
fn default_concurrency() -> usize {
    16
}
fn default_host_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_body() -> usize {
    8 * 1024 * 1024
}
fn default_max_redirects() -> usize {
    5
}
fn default_true() -> bool {
    true
}
fn default_backoff_base() -> Duration {
    Duration::from_secs(60)
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(6 * 3600)
}
fn default_retry_after_max() -> Duration {
    Duration::from_secs(6 * 3600)
}
fn default_batch_size() -> usize {
    200
}
fn default_page_attempts() -> u32 {
    3
}
fn default_max_items() -> usize {
    500
}
fn default_tracking_params() -> Vec<String> {
    ["fbclid", "gclid", "mc_cid", "mc_eid", "ocid", "cmpid", "ref", "ref_src", "at_medium", "at_campaign", "ns_mchannel", "ns_source", "ns_campaign", "ns_linkname", "ns_fee", "igshid", "_ga", "yclid", "spm"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

impl SourceConfig {
    /// Whether this source's article pages may be fetched from non-public addresses.
    pub fn allows_private_addresses(&self, crawl: &CrawlConfig) -> bool {
        self.allow_private_addresses.unwrap_or(crawl.allow_private_addresses)
    }
}

impl Default for CrawlConfig {
    fn default() -> Self {
        toml::from_str("").expect("empty crawl config deserialises")
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Unique, stable name (used in the database, CLI and logs).
    pub name: String,
    /// Feed URL (RSS 0.9x/1.0/2.0, Atom or JSON Feed).
    pub url: String,
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Fetch each new item's page and extract the full text (otherwise the feed's own text is stored).
    #[serde(default)]
    pub full_text: bool,
    /// Per-source CSS selectors for page extraction; unset fields fall back to the general extractor.
    #[serde(default)]
    pub selectors: Option<SelectorConfig>,
    /// Language code stored with the articles when the feed does not say.
    #[serde(default)]
    pub language: Option<String>,
    /// Minimum time between two fetches of this feed (the schedule may run more often; the source is then skipped).
    #[serde(default, with = "humantime_serde")]
    pub min_interval: Option<Duration>,
    /// Overrides `crawl.allow_private_addresses` for this source's article pages.
    #[serde(default)]
    pub allow_private_addresses: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SelectorConfig {
    pub title: Option<String>,
    pub body: Option<String>,
    /// Element whose `datetime`/`content` attribute or text holds the publication date.
    pub date: Option<String>,
    /// Elements removed from the body before extracting text (ads, share bars...).
    #[serde(default)]
    pub remove: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedConfig {
    /// Folder with model.onnx + tokenizer.json (+ optional newsd-model.toml giving dims/pooling/max_tokens/version).
    #[serde(default = "default_model_dir")]
    pub model_dir: PathBuf,
    /// ONNX Runtime shared library (from the onnxruntime PyPI wheel; `scripts/setup.sh` fetches it).
    #[serde(default = "default_ort_lib")]
    pub onnxruntime_library: PathBuf,
    /// Overrides of the model folder's own settings.
    #[serde(default)]
    pub dims: Option<usize>,
    #[serde(default)]
    pub max_tokens: Option<usize>,
    #[serde(default)]
    pub pooling: Option<String>,
    #[serde(default)]
    pub model_version: Option<String>,
    /// "fp32" (model.onnx) or "int8" (model.int8.onnx, made by `scripts/setup.sh` from the fp32 graph with ONNX
    /// Runtime's quantization tools): about twice as fast per article, its own model version (switching re-embeds
    /// through the usual switch-over).
    #[serde(default)]
    pub precision: Precision,
    /// Texts per inference batch; batch x max_tokens bounds the memory the runtime uses.
    #[serde(default = "default_embed_batch")]
    pub batch_size: usize,
    /// Padded tokens per inference batch (texts x the longest): full-length articles run one at a time, which
    /// keeps the activations in the CPU's cache (faster per article on one thread, measured); short texts still
    /// batch up to `batch_size`.
    #[serde(default = "default_batch_tokens")]
    pub batch_tokens: usize,
    /// Compute threads (ONNX Runtime intra-op, OpenMP, BLAS). 1 unless you know the machine is yours.
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// Bounded queue between the async side and the compute worker.
    #[serde(default = "default_queue")]
    pub queue_capacity: usize,
    /// The embed task stores vectors at least this often (requests to the worker are sized to take about this
    /// long), so a process killed mid-run keeps what it computed.
    #[serde(default = "default_commit_interval", with = "humantime_serde")]
    pub commit_interval: Duration,
}

/// Arithmetic the embedding model runs in (see `embed.precision`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    Fp32,
    Int8,
}

impl Precision {
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Int8 => "int8",
        }
    }
}

/// The HTTP endpoint when `daemon.http_listen` is unset.
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:9464";

fn default_api_token_env() -> String {
    "NEWSD_API_TOKEN".into()
}
fn default_api_read_token_env() -> String {
    "NEWSD_API_READ_TOKEN".into()
}
fn default_api_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(30)
}

fn default_model_dir() -> PathBuf {
    PathBuf::from("models/all-MiniLM-L6-v2")
}
fn default_ort_lib() -> PathBuf {
    PathBuf::from("models/onnxruntime/libonnxruntime.so.1.32.0")
}
fn default_embed_batch() -> usize {
    // ONNX Runtime's arena keeps the largest batch's activations: attention alone is batch x heads x tokens^2
    // floats (32 x 12 x 256^2 x 4 B = 100 MB per tensor). 8 texts keep it ~25 MB at the same throughput.
    8
}
fn default_batch_tokens() -> usize {
    256
}
fn default_threads() -> usize {
    1
}
fn default_queue() -> usize {
    256
}
fn default_commit_interval() -> Duration {
    Duration::from_secs(1)
}

impl Default for EmbedConfig {
    fn default() -> Self {
        toml::from_str("").expect("empty embed config deserialises")
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IndexConfig {
    /// "flat" (exact, supports removal), "sq8" (8-bit scalar-quantized vectors: 4x smaller, supports removal),
    /// "hnsw" (approximate graph, for large collections) or "hnsw_sq8" (the graph over 8-bit vectors).
    #[serde(default = "default_index_kind")]
    pub kind: String,
    /// Index directory; empty means `<data_dir>/index`.
    #[serde(default)]
    pub dir: PathBuf,
    #[serde(default = "default_hnsw_m")]
    pub hnsw_m: u32,
    #[serde(default = "default_ef_search")]
    pub ef_search: u32,
    /// Articles older than this are pruned from the index by the `prune` task (none when unset).
    #[serde(default, with = "humantime_serde")]
    pub retention: Option<Duration>,
    /// `prune` also deletes the pruned articles from the database.
    #[serde(default)]
    pub prune_database: bool,
    /// hnsw: `prune` rebuilds the index from the stored vectors when removed vectors (kept in the file as
    /// tombstones, since FAISS cannot delete from HNSW) exceed this share of it. 1.0 never rebuilds.
    #[serde(default = "default_rebuild_ratio")]
    pub rebuild_tombstone_ratio: f64,
    /// Save the index after this many additions (and always at the end of a task and at shutdown).
    #[serde(default = "default_save_every")]
    pub save_every: usize,
}

fn default_index_kind() -> String {
    "flat".into()
}
fn default_hnsw_m() -> u32 {
    32
}
fn default_ef_search() -> u32 {
    64
}
fn default_rebuild_ratio() -> f64 {
    0.2
}
fn default_save_every() -> usize {
    2000
}

impl Default for IndexConfig {
    fn default() -> Self {
        toml::from_str("").expect("empty index config deserialises")
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// Directory of schedule files (`*.toml`).
    #[serde(default = "default_schedules_dir")]
    pub schedules_dir: PathBuf,
    /// Time given to running jobs after SIGTERM/SIGINT.
    #[serde(default = "default_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Debounce for schedule file changes.
    #[serde(default = "default_debounce", with = "humantime_serde")]
    pub reload_debounce: Duration,
    /// Skip large writes (index saves) when free space on the data directory's disk is below this many bytes.
    #[serde(default = "default_min_free")]
    pub min_free_disk_bytes: u64,
    /// The HTTP endpoint: API, dashboard, /healthz and /metrics. Unset: 127.0.0.1:9464, or none (with a warning)
    /// when that port is taken; `"off"` turns it off. A non-loopback address needs an API token (the daemon
    /// refuses to start without one).
    #[serde(default)]
    pub http_listen: Option<String>,
    /// Environment variable holding the admin API token (read and run jobs). With a token set, every API and
    /// dashboard request must present a token (`Authorization: Bearer ...`, or the dashboard's login cookie).
    #[serde(default = "default_api_token_env")]
    pub api_token_env: String,
    /// Environment variable holding a read-only API token (GET requests only).
    #[serde(default = "default_api_read_token_env")]
    pub api_read_token_env: String,
    /// Longest time one API or dashboard request may take (searches wait in the compute queue within it).
    #[serde(default = "default_api_timeout", with = "humantime_serde")]
    pub api_timeout: std::time::Duration,
    /// A source failing this many runs in a row is reported to the operations target.
    #[serde(default = "default_source_alert")]
    pub source_failure_alert: u32,
}

fn default_schedules_dir() -> PathBuf {
    PathBuf::from("schedules")
}
fn default_grace() -> Duration {
    Duration::from_secs(30)
}
fn default_debounce() -> Duration {
    Duration::from_millis(500)
}
fn default_min_free() -> u64 {
    512 * 1024 * 1024
}
fn default_source_alert() -> u32 {
    5
}

impl DaemonConfig {
    /// The address to serve HTTP on and whether it is the default (a default port already taken is skipped with a
    /// warning; a configured one that cannot be bound stops the start). None: `http_listen = "off"`.
    pub fn http_address(&self) -> Option<(String, bool)> {
        match self.http_listen.as_deref() {
            None => Some((DEFAULT_HTTP_LISTEN.to_string(), true)),
            Some("off") => None,
            Some(a) => Some((a.to_string(), false)),
        }
    }
}

impl Default for DaemonConfig {
    fn default() -> Self {
        toml::from_str("").expect("empty daemon config deserialises")
    }
}

/// Several daemons on one PostgreSQL database act as one cluster: each scheduled fire runs on one node, work is
/// claimed with leases, every node follows the stored vectors into its own index. On SQLite the same code runs with
/// one node. Times here bound how long a dead node's work waits before another node takes it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's name in the cluster. Unset: generated once and kept in `<data_dir>/node-id`
    /// (`<hostname>-<random>`), so a restarted daemon is the same node.
    #[serde(default)]
    pub node_id: Option<String>,
    /// How often a running daemon records that it is alive (and its index lag and leases).
    #[serde(default = "default_heartbeat", with = "humantime_serde")]
    pub heartbeat: Duration,
    /// A node whose heartbeat is older than this is dead: its running runs are marked interrupted and its jobs no
    /// longer count as running for the overlap policy.
    #[serde(default = "default_node_timeout", with = "humantime_serde")]
    pub node_timeout: Duration,
    /// Length of a work lease (a batch of articles to embed; a source's lease adds `crawl.source_time_budget`). A
    /// process killed while holding one leaves the work to others once it runs out.
    #[serde(default = "default_lease", with = "humantime_serde")]
    pub lease: Duration,
    /// How often the daemon applies vectors stored by other nodes to its index.
    #[serde(default = "default_follow_interval", with = "humantime_serde")]
    pub follow_interval: Duration,
}

fn default_heartbeat() -> Duration {
    Duration::from_secs(5)
}
fn default_node_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_lease() -> Duration {
    Duration::from_secs(120)
}
fn default_follow_interval() -> Duration {
    Duration::from_secs(2)
}

impl Default for ClusterConfig {
    fn default() -> Self {
        toml::from_str("").expect("empty cluster config deserialises")
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingConfig {
    /// Filter directive (RUST_LOG syntax); RUST_LOG overrides it.
    #[serde(default = "default_log_level")]
    pub level: String,
    /// Rolling log files directory; empty means `<data_dir>/logs`.
    #[serde(default)]
    pub dir: PathBuf,
    /// Log files kept (one per day).
    #[serde(default = "default_log_keep")]
    pub keep_files: usize,
    #[serde(default)]
    pub json: bool,
    /// Also write to files (the daemon always does unless this is false).
    #[serde(default = "default_true")]
    pub files: bool,
}

fn default_log_level() -> String {
    "info".into()
}
fn default_log_keep() -> usize {
    14
}

impl Default for LoggingConfig {
    fn default() -> Self {
        toml::from_str("").expect("empty logging config deserialises")
    }
}

impl Default for Config {
    fn default() -> Self {
        let mut c: Config = toml::from_str("").expect("empty config deserialises");
        c.base_dir = PathBuf::from(".");
        c
    }
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Self::from_toml(&text, path)
    }

    /// Parses and validates config text; `path` is used for error messages and relative paths.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
            ConfigError::Parse { path: path.to_path_buf(), line, column, message: e.message().to_string() }
        })?;
        config.path = path.to_path_buf();
        config.base_dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
        config.validate(text)?;
        Ok(config)
    }

    fn validate(&self, text: &str) -> Result<(), ConfigError> {
        let invalid = |needle: Option<&str>, message: String| ConfigError::Invalid {
            path: self.path.clone(),
            line: needle.and_then(|n| find_line(text, n)),
            message,
        };
        let mut names = HashSet::new();
        for s in &self.sources {
            let needle = format!("\"{}\"", s.name);
            if s.name.trim().is_empty() {
                return Err(invalid(Some("name = \"\""), "a source has an empty name".into()));
            }
            if !names.insert(s.name.as_str()) {
                return Err(invalid(Some(&needle), format!("duplicate source name {:?}", s.name)));
            }
            match url::Url::parse(&s.url) {
                Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
                Ok(u) => {
                    return Err(invalid(Some(&s.url), format!("source {:?}: unsupported URL scheme {:?}", s.name, u.scheme())))
                }
                Err(e) => return Err(invalid(Some(&s.url), format!("source {:?}: invalid URL {:?}: {e}", s.name, s.url))),
            }
            if let Some(sel) = &s.selectors {
                for css in [&sel.title, &sel.body, &sel.date].into_iter().flatten().chain(sel.remove.iter()) {
                    if scraper::Selector::parse(css).is_err() {
                        return Err(invalid(Some(css), format!("source {:?}: invalid CSS selector {:?}", s.name, css)));
                    }
                }
            }
        }
        if self.crawl.concurrency == 0 {
            return Err(invalid(Some("concurrency"), "crawl.concurrency must be at least 1".into()));
        }
        if self.crawl.batch_size == 0 {
            return Err(invalid(Some("batch_size"), "crawl.batch_size must be at least 1".into()));
        }
        if self.crawl.source_time_budget.is_zero() {
            return Err(invalid(Some("source_time_budget"), "crawl.source_time_budget must be longer than 0s".into()));
        }
        if self.embed.threads == 0 {
            return Err(invalid(Some("threads"), "embed.threads must be at least 1".into()));
        }
        if self.embed.batch_tokens == 0 {
            return Err(invalid(Some("batch_tokens"), "embed.batch_tokens must be at least 1".into()));
        }
        if self.embed.batch_size == 0 {
            return Err(invalid(Some("batch_size"), "embed.batch_size must be at least 1".into()));
        }
        if self.embed.commit_interval.is_zero() {
            return Err(invalid(Some("commit_interval"), "embed.commit_interval must be more than 0s".into()));
        }
        if !matches!(self.index.kind.as_str(), "flat" | "sq8" | "hnsw" | "hnsw_sq8") {
            return Err(invalid(
                Some("kind"),
                format!("index.kind must be \"flat\", \"sq8\", \"hnsw\" or \"hnsw_sq8\", not {:?}", self.index.kind),
            ));
        }
        if let Some(listen) = self.daemon.http_listen.as_deref().filter(|l| *l != "off") {
            if let Err(e) = listen.parse::<std::net::SocketAddr>() {
                return Err(invalid(Some(listen), format!("daemon.http_listen {listen:?}: {e} (IP:PORT, or \"off\")")));
            }
        }
        if self.daemon.api_timeout.is_zero() {
            return Err(invalid(Some("api_timeout"), "daemon.api_timeout must be more than 0".into()));
        }
        let c = &self.cluster;
        if let Some(id) = &c.node_id {
            if id.is_empty() || id.len() > 64 || !id.chars().all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch)) {
                return Err(invalid(Some("node_id"), format!("cluster.node_id {id:?}: 1-64 characters of A-Z a-z 0-9 - _ .")));
            }
        }
        if c.heartbeat.is_zero() || c.lease.is_zero() || c.follow_interval.is_zero() {
            return Err(invalid(Some("[cluster]"), "cluster.heartbeat, lease and follow_interval must be more than 0".into()));
        }
        if c.node_timeout < c.heartbeat * 2 {
            return Err(invalid(
                Some("node_timeout"),
                format!(
                    "cluster.node_timeout ({}) must be at least twice cluster.heartbeat ({}): a live node would be taken for dead",
                    humantime::format_duration(c.node_timeout),
                    humantime::format_duration(c.heartbeat)
                ),
            ));
        }
        self.analysis.validate(self).map_err(|(needle, message)| invalid(needle.as_deref(), message))?;
        self.notify.validate().map_err(|(needle, message)| invalid(needle.as_deref(), message))?;
        Ok(())
    }

    /// Resolves a configured path against the config file's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.resolve(&self.data_dir)
    }

    pub fn index_dir(&self) -> PathBuf {
        if self.index.dir.as_os_str().is_empty() {
            self.data_dir().join("index")
        } else {
            self.resolve(&self.index.dir)
        }
    }

    pub fn log_dir(&self) -> PathBuf {
        if self.logging.dir.as_os_str().is_empty() {
            self.data_dir().join("logs")
        } else {
            self.resolve(&self.logging.dir)
        }
    }

    pub fn schedules_dir(&self) -> PathBuf {
        self.resolve(&self.daemon.schedules_dir)
    }

    /// The database URL: from `store.url_env`, else `store.url`, else SQLite in the data directory.
    pub fn database_url(&self) -> Result<String, ConfigError> {
        if let Some(var) = &self.store.url_env {
            return std::env::var(var).map_err(|_| ConfigError::Invalid {
                path: self.path.clone(),
                line: None,
                message: format!("store.url_env names {var:?}, which is not set in the environment"),
            });
        }
        if self.store.url.is_empty() {
            return Ok(format!("sqlite://{}", self.data_dir().join("newsd.db").display()));
        }
        if let Some(rest) = self.store.url.strip_prefix("sqlite://") {
            let p = Path::new(rest);
            if !p.is_absolute() && rest != ":memory:" {
                return Ok(format!("sqlite://{}", self.resolve(p).display()));
            }
        }
        Ok(self.store.url.clone())
    }

    pub fn source(&self, name: &str) -> Option<&SourceConfig> {
        self.sources.iter().find(|s| s.name == name)
    }
}

/// Reads a secret from the environment variable the config names.
pub fn secret_from_env(var: &str, what: &str) -> anyhow::Result<String> {
    std::env::var(var).map_err(|_| anyhow::anyhow!("{what}: environment variable {var} is not set"))
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
    (line, column)
}

/// 1-based line of the first occurrence of `needle`.
pub fn find_line(text: &str, needle: &str) -> Option<usize> {
    text.find(needle).map(|off| line_col(text, off).0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_has_defaults() {
        let c = Config::from_toml("", Path::new("x/newsd.toml")).unwrap();
        assert_eq!(c.crawl.concurrency, 16);
        assert_eq!(c.embed.threads, 1);
        assert_eq!(c.data_dir(), PathBuf::from("x/data"));
        assert_eq!(c.database_url().unwrap(), "sqlite://x/data/newsd.db");
    }

    #[test]
    fn unknown_field_names_line() {
        let text = "[crawl]\nconcurrency = 4\nconcurency = 5\n";
        let err = Config::from_toml(text, Path::new("newsd.toml")).unwrap_err().to_string();
        assert!(err.starts_with("newsd.toml:3:"), "{err}");
        assert!(err.contains("concurency"), "{err}");
    }

    #[test]
    fn bad_duration_names_line() {
        let text = "[crawl]\n\nrequest_timeout = \"5 parsecs\"\n";
        let err = Config::from_toml(text, Path::new("c.toml")).unwrap_err().to_string();
        assert!(err.starts_with("c.toml:3:"), "{err}");
    }

    #[test]
    fn duplicate_source_is_refused_with_line() {
        let text = "[[sources]]\nname = \"a\"\nurl = \"http://x/feed\"\n\n[[sources]]\nname = \"a\"\nurl = \"http://y/feed\"\n";
        let err = Config::from_toml(text, Path::new("c.toml")).unwrap_err().to_string();
        assert!(err.contains("duplicate source name"), "{err}");
        assert!(err.starts_with("c.toml:2"), "{err}");
    }

    #[test]
    fn bad_selector_and_url_are_refused() {
        let text = "[[sources]]\nname = \"a\"\nurl = \"ftp://x/feed\"\n";
        assert!(Config::from_toml(text, Path::new("c.toml")).unwrap_err().to_string().contains("scheme"));
        let text = "[[sources]]\nname = \"a\"\nurl = \"http://x/feed\"\nselectors = { body = \"div[[\" }\n";
        let err = Config::from_toml(text, Path::new("c.toml")).unwrap_err().to_string();
        assert!(err.contains("CSS selector") && err.starts_with("c.toml:4"), "{err}");
    }

    #[test]
    fn http_listen_is_an_address_or_off() {
        // Any address parses here; a non-loopback one without an API token is refused when the daemon starts.
        let ok = Config::from_toml("[daemon]\nhttp_listen = \"0.0.0.0:9000\"\n", Path::new("c.toml")).unwrap();
        assert_eq!(ok.daemon.http_address(), Some(("0.0.0.0:9000".to_string(), false)));
        let off = Config::from_toml("[daemon]\nhttp_listen = \"off\"\n", Path::new("c.toml")).unwrap();
        assert_eq!(off.daemon.http_address(), None);
        let default = Config::from_toml("", Path::new("c.toml")).unwrap();
        assert_eq!(default.daemon.http_address(), Some((DEFAULT_HTTP_LISTEN.to_string(), true)));
        let err = Config::from_toml("[daemon]\nhttp_listen = \"localhost\"\n", Path::new("c.toml")).unwrap_err().to_string();
        assert!(err.contains("http_listen"), "{err}");
    }
}
