//! The shared parts every task needs: the configuration and the database (plus lazily built heavier parts).

use std::path::Path;
use std::sync::Arc;

use crate::config::Config;
use crate::crawl::Crawler;
use crate::store::Store;

#[derive(Clone)]
pub struct App {
    pub config: Arc<Config>,
    pub store: Store,
    /// The compute worker (ONNX model + FAISS index), started on first use by `App::compute()`.
    pub compute: Arc<tokio::sync::OnceCell<crate::compute::ComputeHandle>>,
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
        Ok(App {
            config: Arc::new(config),
            store,
            compute: Arc::new(tokio::sync::OnceCell::new()),
            crawler: Arc::new(std::sync::OnceLock::new()),
        })
    }

    /// The process's one crawler (cheap to clone; clones share its state).
    pub fn crawler(&self) -> anyhow::Result<Crawler> {
        if let Some(c) = self.crawler.get() {
            return Ok(c.clone());
        }
        let built = Crawler::new(self.config.clone(), self.store.clone())?;
        // Two first callers at once: one wins, both use the winner.
        Ok(self.crawler.get_or_init(|| built).clone())
    }
}
