//! The shared parts every task needs: the configuration and the database (plus lazily built heavier parts).

use std::path::Path;
use std::sync::Arc;

use crate::compute::ComputeHandle;
use crate::config::Config;
use crate::crawl::Crawler;
use crate::store::Store;

#[derive(Clone)]
pub struct App {
    pub config: Arc<Config>,
    pub store: Store,
    /// This process in the cluster (node id, lease holder).
    pub node: Arc<crate::cluster::Node>,
    /// The compute worker (ONNX model + FAISS index), started on first use by `App::compute()`.
    pub compute: Arc<tokio::sync::OnceCell<ComputeHandle>>,
    /// Operations alerts raised recently (their repeat window), per app rather than per process.
    pub alerts: Arc<crate::ops::AlertWindow>,
    /// The crawler, built on first use and kept: its robots.txt cache, per-host spacing and Retry-After pauses
    /// must outlive one pass (the daemon crawls every few minutes).
    crawler: Arc<std::sync::OnceLock<Crawler>>,
}

impl App {
    /// Loads the config file and opens (creating and migrating) the database.
    pub async fn load(config_path: &Path) -> anyhow::Result<App> {
        let config = Config::load(config_path)?;
        App::open(config).await
    }

    pub async fn open(config: Config) -> anyhow::Result<App> {
        let store = Store::from_config(&config).await?;
        let node = Arc::new(crate::cluster::Node::load(&config)?);
        match crate::cluster::release_dead_holders(&store, &node).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(processes = n, "work leases left by dead processes of this node given back"),
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "checking this node's leases (they run out by themselves)"),
        }
        Ok(App {
            config: Arc::new(config),
            store,
            node,
            compute: Arc::new(tokio::sync::OnceCell::new()),
            alerts: Arc::default(),
            crawler: Arc::new(std::sync::OnceLock::new()),
        })
    }

    /// The process's one crawler (cheap to clone; clones share its state).
    pub fn crawler(&self) -> anyhow::Result<Crawler> {
        if let Some(c) = self.crawler.get() {
            return Ok(c.clone());
        }
        let built = Crawler::for_node(self.config.clone(), self.store.clone(), self.node.clone())?;
        // Two first callers at once: one wins, both use the winner.
        Ok(self.crawler.get_or_init(|| built).clone())
    }

    /// The compute worker, started on first use (loads the model and the index).
    pub async fn compute(&self) -> anyhow::Result<ComputeHandle> {
        let h = self.compute.get_or_try_init(|| crate::compute::start(&self.config, &self.store)).await?;
        Ok(h.clone())
    }

    /// The worker if it has been started (does not start it).
    pub fn compute_if_started(&self) -> Option<ComputeHandle> {
        self.compute.get().cloned()
    }

    /// Persists the index and stops the compute worker (if it was started). Call before the process exits.
    pub async fn shutdown(&self) -> anyhow::Result<()> {
        if let Some(h) = self.compute.get() {
            h.shutdown().await?;
        }
        Ok(())
    }
}
