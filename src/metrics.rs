//! Prometheus metrics (`/metrics`). One process-wide [`Metrics`] ([`global`]); any part of newsd can count into
//! the fixed metrics below or register its own counters and gauges by name:
//!
//! ```text
//! newsd::metrics::global().counter("newsd_articles_embedded", "Articles embedded").inc_by(n);
//! newsd::metrics::global().gauge("newsd_index_vectors", "Vectors in the index").set(len as i64);
//! ```
//! (prometheus-client appends `_total` to counter names.)

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

pub type Labels = Vec<(String, String)>;

fn duration_histogram() -> Histogram {
    // 10 ms .. ~45 min
    Histogram::new(exponential_buckets(0.01, 3.0, 15))
}

pub struct Metrics {
    registry: Mutex<Registry>,
    named: Mutex<HashMap<String, Named>>,
    /// Job runs by job, task and outcome.
    pub job_runs: Family<Labels, Counter>,
    /// Job run durations in seconds by job and task (runs that started).
    pub job_duration_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    /// Jobs running now.
    pub jobs_running: Gauge,
    /// New articles stored by crawls.
    pub articles_crawled: Counter,
    /// Articles in the database (refreshed from the database at most every 15 s, when scraped).
    pub articles_stored: Gauge,
    /// Article pages still to fetch (refreshed from the database at most every 15 s, when scraped).
    pub pages_pending: Gauge,
    /// Schedule reloads by outcome (applied, refused).
    pub reloads: Family<Labels, Counter>,
    /// Operations alerts raised, by kind.
    pub alerts: Family<Labels, Counter>,
    /// Articles embedded (vectors stored and indexed).
    pub articles_embedded: Counter,
    /// Notification delivery attempts by target and outcome (delivered, retry, dead).
    pub notifications: Family<Labels, Counter>,
    /// Vectors in the serving index (refreshed from the database at most every 15 s, when scraped).
    pub index_vectors: Gauge,
    /// Articles without a vector for the configured model version (refreshed from the database at most every 15 s, when scraped).
    pub embeddings_pending: Gauge,
    /// Requests waiting in the compute worker's queue (read at each scrape).
    pub compute_queue_depth: Gauge,
    /// Notifications waiting for delivery, and dead-lettered ones (refreshed from the database at most every 15 s, when scraped).
    pub notifications_pending: Gauge,
    pub notifications_dead: Gauge,
    /// HTTP API and dashboard requests by route and status code.
    pub api_requests: Family<Labels, Counter>,
    /// Requests answered 503 because the compute worker's queue was full (explicit backpressure).
    pub api_busy: Counter,
    /// 1, labelled with this node's id, host and version.
    pub node_info: Family<Labels, Gauge>,
    /// Scheduled fires another node claimed first, by job (this node did not run them).
    pub fires_taken_elsewhere: Family<Labels, Counter>,
    /// Nodes in the cluster by state (alive, dead, stopped), as of this node's last heartbeat.
    pub cluster_nodes: Family<Labels, Gauge>,
    /// Embeddings changes in the database not yet in this node's index.
    pub index_lag: Gauge,
    /// The embeddings change sequence number this node's index has applied.
    pub index_seq: Gauge,
    /// Work leases this node holds.
    pub leases_held: Gauge,
}

#[derive(Clone)]
enum Named {
    Counter(Counter),
    Gauge(Gauge),
}

impl Metrics {
    fn new() -> Metrics {
        let mut r = Registry::default();
        let job_runs = Family::<Labels, Counter>::default();
        r.register("newsd_job_runs", "Job runs by job, task and outcome", job_runs.clone());
        let job_duration_seconds = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(duration_histogram);
        r.register("newsd_job_duration_seconds", "Job run duration in seconds", job_duration_seconds.clone());
        let jobs_running = Gauge::default();
        r.register("newsd_jobs_running", "Jobs running now", jobs_running.clone());
        let articles_crawled = Counter::default();
        r.register("newsd_articles_crawled", "New articles stored by crawls", articles_crawled.clone());
        let articles_stored = Gauge::default();
        r.register("newsd_articles_stored", "Articles in the database", articles_stored.clone());
        let pages_pending = Gauge::default();
        r.register("newsd_pages_pending", "Article pages still to fetch", pages_pending.clone());
        let reloads = Family::<Labels, Counter>::default();
        r.register("newsd_schedule_reloads", "Schedule reloads by outcome", reloads.clone());
        let alerts = Family::<Labels, Counter>::default();
        r.register("newsd_ops_alerts", "Operations alerts raised, by kind", alerts.clone());
        let articles_embedded = Counter::default();
        r.register("newsd_articles_embedded", "Articles embedded and indexed", articles_embedded.clone());
        let notifications = Family::<Labels, Counter>::default();
        r.register("newsd_notifications", "Notification delivery attempts by target and outcome", notifications.clone());
        let index_vectors = Gauge::default();
        r.register("newsd_index_vectors", "Vectors in the serving index", index_vectors.clone());
        let embeddings_pending = Gauge::default();
        r.register("newsd_embeddings_pending", "Articles without a vector for the configured model", embeddings_pending.clone());
        let compute_queue_depth = Gauge::default();
        r.register("newsd_compute_queue_depth", "Requests waiting for the compute worker", compute_queue_depth.clone());
        let notifications_pending = Gauge::default();
        r.register("newsd_notifications_pending", "Notifications waiting for delivery", notifications_pending.clone());
        let notifications_dead = Gauge::default();
        r.register("newsd_notifications_dead", "Dead-lettered notifications", notifications_dead.clone());
        let api_requests = Family::<Labels, Counter>::default();
        r.register("newsd_api_requests", "HTTP API and dashboard requests by route and status", api_requests.clone());
        let api_busy = Counter::default();
        r.register("newsd_api_busy", "Requests answered 503 because the compute queue was full", api_busy.clone());
        let node_info = Family::<Labels, Gauge>::default();
        r.register("newsd_node_info", "This node (labels: node, host, version)", node_info.clone());
        let fires_taken_elsewhere = Family::<Labels, Counter>::default();
        r.register("newsd_fires_taken_elsewhere", "Scheduled fires another node claimed first, by job", fires_taken_elsewhere.clone());
        let cluster_nodes = Family::<Labels, Gauge>::default();
        r.register("newsd_cluster_nodes", "Nodes in the cluster by state (alive, dead, stopped)", cluster_nodes.clone());
        let index_lag = Gauge::default();
        r.register("newsd_index_lag", "Embeddings changes stored but not yet in this node's index", index_lag.clone());
        let index_seq = Gauge::default();
        r.register("newsd_index_seq", "Embeddings change sequence number this node's index has applied", index_seq.clone());
        let leases_held = Gauge::default();
        r.register("newsd_leases_held", "Work leases this node holds", leases_held.clone());
        Metrics {
            node_info,
            fires_taken_elsewhere,
            cluster_nodes,
            index_lag,
            index_seq,
            leases_held,
            registry: Mutex::new(r),
            named: Mutex::new(HashMap::new()),
            job_runs,
            job_duration_seconds,
            jobs_running,
            articles_crawled,
            articles_stored,
            pages_pending,
            reloads,
            alerts,
            articles_embedded,
            notifications,
            index_vectors,
            embeddings_pending,
            compute_queue_depth,
            notifications_pending,
            notifications_dead,
            api_requests,
            api_busy,
        }
    }

    /// A counter registered under `name` (created on first use; the same counter afterwards).
    pub fn counter(&self, name: &str, help: &str) -> Counter {
        let mut named = self.named.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(Named::Counter(c)) = named.get(name) {
            return c.clone();
        }
        let c = Counter::default();
        if !named.contains_key(name) {
            self.registry.lock().unwrap_or_else(|e| e.into_inner()).register(name, help, c.clone());
            named.insert(name.to_string(), Named::Counter(c.clone()));
        }
        c
    }

    /// A gauge registered under `name` (created on first use; the same gauge afterwards).
    pub fn gauge(&self, name: &str, help: &str) -> Gauge {
        let mut named = self.named.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(Named::Gauge(g)) = named.get(name) {
            return g.clone();
        }
        let g = Gauge::default();
        if !named.contains_key(name) {
            self.registry.lock().unwrap_or_else(|e| e.into_inner()).register(name, help, g.clone());
            named.insert(name.to_string(), Named::Gauge(g.clone()));
        }
        g
    }

    /// Registers any prometheus-client metric (families with labels, histograms...).
    pub fn register(&self, name: &str, help: &str, metric: impl prometheus_client::registry::Metric) {
        self.registry.lock().unwrap_or_else(|e| e.into_inner()).register(name, help, metric);
    }

    /// OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let r = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = encode(&mut out, &r) {
            tracing::warn!(error = %e, "encoding metrics");
        }
        out
    }
}

/// The process-wide metrics.
pub fn global() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::new)
}

pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_fixed_and_named_metrics() {
        let m = Metrics::new();
        m.job_runs.get_or_create(&labels(&[("job", "a"), ("task", "crawl"), ("outcome", "ok")])).inc();
        m.job_duration_seconds.get_or_create(&labels(&[("job", "a"), ("task", "crawl")])).observe(0.5);
        m.counter("newsd_test_things", "Things").inc_by(3);
        m.counter("newsd_test_things", "Things").inc();
        let text = m.encode();
        assert!(text.contains("newsd_job_runs_total{job=\"a\",task=\"crawl\",outcome=\"ok\"} 1"), "{text}");
        assert!(text.contains("newsd_job_duration_seconds_count{job=\"a\",task=\"crawl\"} 1"), "{text}");
        assert!(text.contains("newsd_test_things_total 4"), "{text}");
    }
}
