//! The task registry: what a scheduled job can do. Each task is one plain async call on the shared [`App`];
//! the daemon's executor wraps it with timeout, overlap policy, panic capture and run history, and the
//! returned JSON document is stored as the run's counters.

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::crawl::{CrawlOptions, SourceStatus};

/// A task with its parameters (from a schedule file's job). The one list of tasks: schedule files are read
/// through its `Deserialize` (`task = "NAME"` plus the task's parameters; unknown parameters are errors), and its
/// names come from the same variants (`name()`, [`task_names`]).
///
/// Tasks without parameters are empty struct variants (`Embed {}`), not unit variants: serde ignores extra keys
/// for a unit variant of an internally tagged enum, so `task = "embed"` with `sources = [...]` would pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr, strum::VariantNames, strum::Display)]
#[serde(tag = "task", rename_all = "snake_case", deny_unknown_fields)]
#[strum(serialize_all = "snake_case")]
pub enum TaskSpec {
    /// One crawl pass over `sources` (all enabled sources when empty).
    Crawl {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        sources: Vec<String>,
    },
    /// Embed articles not embedded yet and add them to the index.
    Embed {},
    /// Re-embed articles embedded with another model version.
    Reembed {},
    /// Market analysis with `profile` (every configured profile when unset).
    Analyze {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        profile: Option<String>,
    },
    /// Deliver pending notifications.
    Notify {},
    /// Drop articles past the retention period from the index (and the database when configured).
    Prune {},
    /// Rebuild the index from the stored embeddings.
    Reindex {},
    /// Test support (cargo feature `test-hooks`, never in a product build): sleeps, to exercise timeouts and
    /// overlap.
    #[cfg(feature = "test-hooks")]
    #[serde(rename = "_test_sleep")]
    #[strum(serialize = "_test_sleep")]
    TestSleep {
        #[serde(with = "humantime_serde")]
        duration: std::time::Duration,
    },
    /// Test support (cargo feature `test-hooks`): panics, to exercise panic capture.
    #[cfg(feature = "test-hooks")]
    #[serde(rename = "_test_panic")]
    #[strum(serialize = "_test_panic")]
    TestPanic {},
}

/// Task names users can write in schedule files (test hooks, present only with the `test-hooks` feature, are
/// left out).
pub fn task_names() -> Vec<&'static str> {
    <TaskSpec as strum::VariantNames>::VARIANTS.iter().copied().filter(|n| !n.starts_with('_')).collect()
}

/// Whether `name` is a task of this build (test hooks included when built with them).
pub fn is_task(name: &str) -> bool {
    <TaskSpec as strum::VariantNames>::VARIANTS.contains(&name)
}

impl TaskSpec {
    pub fn name(&self) -> &'static str {
        self.into()
    }

    /// Tasks that grow the database or write index files: skipped when the data disk is low on space.
    pub fn writes_large_files(&self) -> bool {
        matches!(self, TaskSpec::Crawl { .. } | TaskSpec::Embed {} | TaskSpec::Reembed {} | TaskSpec::Reindex {})
    }
}

/// Runs one task to completion and returns its counters (a JSON document stored in the run history).
pub async fn run_task(app: &App, task: &TaskSpec) -> anyhow::Result<serde_json::Value> {
    run_task_until(app, task, &CancellationToken::new()).await
}

/// [`run_task`] that tasks able to stop at a clean point (the notification dispatcher, between messages) end
/// early once `stop` is cancelled (daemon shutdown); the others ignore it.
pub async fn run_task_until(app: &App, task: &TaskSpec, stop: &CancellationToken) -> anyhow::Result<serde_json::Value> {
    match task {
        TaskSpec::Crawl { sources } => {
            let opts = CrawlOptions { sources: sources.clone(), force: false };
            let report = app.crawler()?.crawl(&opts).await?;
            let metrics = crate::metrics::global();
            metrics.articles_crawled.inc_by(report.totals.new as u64);
            let failed: Vec<serde_json::Value> = report
                .sources
                .iter()
                .filter(|s| s.status == SourceStatus::Failed)
                .map(|s| serde_json::json!({ "source": s.name, "error": s.error }))
                .collect();
            alert_failing_sources(app, &report).await;
            let t = &report.totals;
            if t.sources > 0 && t.failed == t.sources {
                anyhow::bail!(
                    "all {} sources failed (first: {})",
                    t.sources,
                    report.sources.iter().find_map(|s| s.error.as_deref()).unwrap_or("unknown error")
                );
            }
            Ok(serde_json::json!({ "totals": report.totals, "failed_sources": failed, "duration_ms": report.duration_ms }))
        }
        TaskSpec::Embed {} => Ok(serde_json::to_value(crate::embed::run_embed(app).await?)?),
        TaskSpec::Reembed {} => Ok(serde_json::to_value(crate::embed::run_reembed(app, false).await?)?),
        TaskSpec::Analyze { profile } => {
            let report = crate::analysis::run_analyze(app, profile.as_deref(), false).await?;
            // Deliver what the analysis just queued now rather than at the next notify tick; failures stay queued.
            let delivery = match dispatch(app, stop).await {
                Ok(d) => serde_json::to_value(d)?,
                Err(e) => serde_json::json!({ "error": format!("{e:#}") }),
            };
            Ok(serde_json::json!({ "analysis": report, "delivery": delivery }))
        }
        TaskSpec::Notify {} => Ok(serde_json::to_value(dispatch(app, stop).await?)?),
        TaskSpec::Prune {} => Ok(serde_json::to_value(crate::index::run_prune(app).await?)?),
        TaskSpec::Reindex {} => Ok(serde_json::to_value(crate::index::run_reindex(app).await?)?),
        #[cfg(feature = "test-hooks")]
        TaskSpec::TestSleep { duration } => {
            tokio::time::sleep(*duration).await;
            Ok(serde_json::json!({ "slept_ms": duration.as_millis() as u64 }))
        }
        #[cfg(feature = "test-hooks")]
        TaskSpec::TestPanic {} => panic!("_test_panic: deliberate panic for the tests"),
    }
}

/// One dispatcher pass (secrets from the environment), then the operations alerts for its dead letters.
async fn dispatch(app: &App, stop: &CancellationToken) -> anyhow::Result<crate::notify::DispatchReport> {
    let mut report = crate::notify::Dispatcher::from_env(&app.config.notify).with_stop(stop.clone()).run(app).await?;
    crate::ops::alert_dead_letters(app, &report.dead_letters).await;
    // The alerts just queued are pending too.
    report.pending_after = app.store.outbox_counts().await?.pending;
    Ok(report)
}

/// Reports a source once when its consecutive failures reach `daemon.source_failure_alert`.
async fn alert_failing_sources(app: &App, report: &crate::crawl::CrawlReport) {
    let threshold = app.config.daemon.source_failure_alert as i64;
    if threshold == 0 {
        return;
    }
    let failed: Vec<String> =
        report.sources.iter().filter(|s| s.status == SourceStatus::Failed).map(|s| s.name.clone()).collect();
    if failed.is_empty() {
        return;
    }
    match app.store.source_health(&failed).await {
        Ok(health) => {
            for h in health.iter().filter(|h| h.consecutive_failures == threshold) {
                let msg = format!(
                    "source {} has failed {} crawls in a row: {}",
                    h.name,
                    h.consecutive_failures,
                    h.last_error.as_deref().unwrap_or("unknown error")
                );
                crate::ops::alert(app, "source_failing", &msg).await;
            }
        }
        Err(e) => tracing::warn!(error = %e, "reading source health for alerts"),
    }
}
