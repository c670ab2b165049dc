//! `newsd run`: the long-running daemon.
//!
//! Start: take the data directory's lock (one daemon per data directory), mark runs a previous process left
//! `running` as `interrupted`, load the schedule directory (refusing to start on an invalid one), start the
//! optional HTTP endpoint, put the jobs on the scheduler, run jobs whose fire time was missed while the daemon was
//! down (`missed = "run_once"`), then wait for events:
//! - schedule file changes (debounced) and SIGHUP both call [`Daemon::reload`]: re-read, validate, apply the
//!   difference, or refuse the whole edit (the running schedule stays) — logged, recorded, alerted; an edit the
//!   scheduler takes only in part is recorded and alerted as `partial`. The schedule in force is recorded in the
//!   database (`daemon_state`) after every reload, for `newsd status`, and cleared at a clean stop;
//! - SIGTERM/SIGINT: stop starting jobs, give running ones `daemon.shutdown_grace`, persist, exit 0.
//!
//! Resuming after a crash needs nothing special: every stage keeps its durable state in the database (crawl
//! validators are stored after the items, pending pages/embeddings/notifications are rows), so the next tick of
//! each job picks up what is pending and skips what is done.

pub mod disk;
pub mod executor;
pub mod http;
pub mod lock;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Mutex;

use crate::app::App;
use crate::metrics;
use crate::schedule::runner::{ApplyOutcome, CronRunner, FireFn};
use crate::schedule::{self, Missed};
use executor::{Executor, FiredBy};

/// What a reload did.
#[derive(Debug, Clone)]
pub enum ReloadOutcome {
    /// The files were valid; what putting them on the scheduler did (applied, partial or rolled back).
    Valid(ApplyOutcome),
    /// The files were invalid: nothing changed.
    Refused { error: String },
}

pub struct Daemon {
    pub app: App,
    pub executor: Arc<Executor>,
    runner: Mutex<CronRunner>,
    started_at: i64,
    /// The HTTP endpoint's bound address (recorded for `newsd status`; `http_listen` may name port 0).
    http_addr: Option<String>,
}

impl Daemon {
    /// Re-reads the schedule directory and applies it, or refuses it whole. The one reload path: file watcher,
    /// SIGHUP and startup all come here. `fired_by` is recorded with the outcome.
    pub async fn reload(&self, fired_by: &str) -> ReloadOutcome {
        let mut runner = self.runner.lock().await;
        let dir = self.app.config.schedules_dir();
        let m = metrics::global();
        match schedule::load_dir(&dir, Some(&self.app.config)) {
            Err(errors) => {
                let error = errors.to_string();
                tracing::error!(trigger = fired_by, "schedule edit refused; the previous schedule keeps running:\n{error}");
                if let Err(e) = self.app.store.record_reload(fired_by, crate::store::ReloadStatus::Refused, &error).await {
                    tracing::warn!(error = %e, "recording a reload event");
                }
                m.reloads.get_or_create(&metrics::labels(&[("outcome", crate::store::ReloadStatus::Refused.as_str())])).inc();
                crate::ops::alert(&self.app, "schedule_refused", &format!("schedule edit refused (previous schedule kept): {error}")).await;
                ReloadOutcome::Refused { error }
            }
            Ok(set) => {
                let jobs = set.jobs.len();
                let enabled = set.jobs.values().filter(|j| j.enabled).count();
                let outcome = runner.apply(set).await;
                let kind = outcome.as_str();
                let detail = outcome.to_string();
                match &outcome {
                    ApplyOutcome::Applied { .. } => tracing::info!(trigger = fired_by, jobs, enabled, "schedule applied: {detail}"),
                    _ => tracing::error!(trigger = fired_by, jobs, enabled, outcome = kind, "schedule not fully applied: {detail}"),
                }
                if let Err(e) = self.app.store.record_reload(fired_by, outcome.status(), &detail).await {
                    tracing::warn!(error = %e, "recording a reload event");
                }
                m.reloads.get_or_create(&metrics::labels(&[("outcome", kind)])).inc();
                self.record_state(runner.current()).await;
                match &outcome {
                    ApplyOutcome::Applied { .. } => {}
                    ApplyOutcome::Partial { .. } => {
                        crate::ops::alert(&self.app, "schedule_partial", &format!("schedule edit applied in part: {detail}")).await
                    }
                    ApplyOutcome::RolledBack { .. } => {
                        crate::ops::alert(&self.app, "schedule_rolled_back", &format!("schedule edit not applied: {detail}")).await
                    }
                }
                ReloadOutcome::Valid(outcome)
            }
        }
    }

    /// Records the schedule in force for `newsd status` (which otherwise could only read the files, which may hold
    /// a refused edit).
    async fn record_state(&self, set: &schedule::ScheduleSet) {
        let jobs: Vec<&schedule::JobSpec> = set.jobs.values().collect();
        let schedule = match serde_json::to_string(&jobs) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "encoding the schedule in force");
                return;
            }
        };
        let st = crate::store::DaemonState {
            node: self.app.node.id.clone(),
            pid: std::process::id() as i64,
            started_at: self.started_at,
            applied_at: crate::store::now_ms(),
            http_addr: self.http_addr.clone(),
            schedule,
        };
        if let Err(e) = self.app.store.put_daemon_state(&st).await {
            tracing::warn!(error = %e, "recording the schedule in force; `newsd status` may show an older one");
        }
    }

    /// Fires, once each, the `missed = "run_once"` jobs that had a fire time between their last recorded run and
    /// now. Jobs with no history have missed nothing.
    async fn run_missed(&self) {
        let runner = self.runner.lock().await;
        let now = Utc::now();
        for job in runner.current().jobs.values().filter(|j| j.enabled && j.missed == Missed::RunOnce) {
            let last = match self.app.store.last_job_start(&job.name).await {
                Ok(Some(ms)) => ms,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(job = %job.name, error = %e, "reading job history for missed runs");
                    continue;
                }
            };
            let Some(last) = chrono::DateTime::from_timestamp_millis(last) else { continue };
            // Claimed under the last missed fire time: of several nodes starting together, one runs it; a fire
            // another node ran while this one was down is in the history (`last`) and is not missed.
            if let Some(missed) = job.last_fire_between(last, now) {
                if let Some(spec) = runner.live_spec(&job.name) {
                    tracing::info!(job = %job.name, last_run = %last.to_rfc3339(), missed = %missed.to_rfc3339(), "a fire time passed while no node ran it; running once now");
                    let _ = self.executor.fire(spec, FiredBy::Missed, Some(missed));
                }
            }
        }
    }
}

impl crate::api::Control for Daemon {
    fn run_job<'a>(
        &'a self,
        name: &'a str,
    ) -> futures::future::BoxFuture<'a, Option<(executor::FireAccepted, tokio::sync::oneshot::Receiver<executor::RunEnd>)>> {
        Box::pin(async move {
            let runner = self.runner.lock().await;
            // Enabled jobs have a live spec; a disabled one may still be run by hand.
            let spec = runner.live_spec(name).or_else(|| runner.current().jobs.get(name).cloned().map(Arc::new))?;
            drop(runner);
            tracing::info!(job = name, "run now (HTTP API)");
            Some(self.executor.fire_tracked(spec, FiredBy::Manual))
        })
    }

    fn analyze(
        &self,
        profile: Option<String>,
    ) -> futures::future::BoxFuture<'_, (String, executor::FireAccepted, tokio::sync::oneshot::Receiver<executor::RunEnd>)> {
        Box::pin(async move {
            let runner = self.runner.lock().await;
            let wanted = crate::tasks::TaskSpec::Analyze { profile: profile.clone() };
            let scheduled = runner.current().jobs.values().find(|j| j.task == wanted).map(|j| j.name.clone());
            let spec = match scheduled.and_then(|n| runner.live_spec(&n).or_else(|| runner.current().jobs.get(&n).cloned().map(Arc::new))) {
                Some(spec) => spec,
                None => Arc::new(schedule::JobSpec {
                    name: format!("analyze:{}", profile.as_deref().unwrap_or("default")),
                    cron: "0 0 0 1 1 *".into(),
                    timezone: chrono_tz::UTC,
                    task: wanted,
                    enabled: true,
                    timeout: Duration::from_secs(15 * 60),
                    overlap: schedule::Overlap::Skip,
                    jitter: Duration::ZERO,
                    missed: Missed::Skip,
                    defined: schedule::DefinedAt { file: "(HTTP API)".into(), line: 0 },
                }),
            };
            drop(runner);
            let name = spec.name.clone();
            let (accepted, done) = self.executor.fire_tracked(spec, FiredBy::Manual);
            (name, accepted, done)
        })
    }

    fn schedule(&self) -> futures::future::BoxFuture<'_, Vec<schedule::JobSpec>> {
        Box::pin(async move { self.runner.lock().await.current().jobs.values().cloned().collect() })
    }
}

/// Runs the daemon until SIGTERM/SIGINT. Errors only at startup (lock held, invalid schedule, HTTP bind...).
/// The lock is taken before the database is opened, so a second daemon never touches (or migrates) it.
pub async fn run(config: crate::config::Config) -> anyhow::Result<()> {
    let data_dir = config.data_dir();
    let _lock = lock::acquire(&data_dir)?;
    let app = App::open(config).await?;
    let config = app.config.clone();
    tracing::info!(pid = std::process::id(), data_dir = %data_dir.display(), database = %crate::store::redact(app.store.url()), "newsd daemon starting");
    // Every configured source has its row before the first crawl, so the API and dashboard list them all.
    app.store.sync_sources(&config.sources).await?;
    let interrupted = crate::cluster::join(&app).await?;
    tracing::info!(node = %app.node.id, host = %app.node.host, "joined the cluster as this node");
    if interrupted > 0 {
        tracing::warn!(runs = interrupted, "runs cut off by this node's previous end (or a dead node's) marked interrupted");
    }
    let dir = config.schedules_dir();

    let started_at = crate::store::now_ms();
    let ready = Arc::new(AtomicBool::new(false));
    let auth = crate::api::Auth::from_env(&config.daemon);
    let api = crate::api::ApiState::new(app.clone(), auth);
    let (http_task, http_addr) = match config.daemon.http_address() {
        Some((addr, defaulted)) => {
            let loopback = addr.parse::<std::net::SocketAddr>().map(|a| a.ip().is_loopback()).unwrap_or(false);
            if !loopback && !api.auth.enabled() {
                anyhow::bail!(
                    "daemon.http_listen {addr} is not a loopback address: set an API token in ${} (admin) or ${} (read-only) first, or listen on 127.0.0.1",
                    config.daemon.api_token_env,
                    config.daemon.api_read_token_env
                );
            }
            let state = http::HttpState { app: app.clone(), ready: ready.clone(), started_at: std::time::Instant::now() };
            match http::serve(&addr, state, Some(api.clone())).await {
                Ok((local, task)) => {
                    tracing::info!(%local, auth = api.auth.enabled(), "HTTP endpoint: dashboard http://{local}/, API /api (OpenAPI at /api/openapi.json), /healthz, /metrics");
                    (Some(task), Some(local.to_string()))
                }
                Err(e) if defaulted => {
                    tracing::warn!(error = %format!("{e:#}"), "the default HTTP address is taken (another daemon?); running without the API and dashboard (set daemon.http_listen)");
                    (None, None)
                }
                Err(e) => return Err(e),
            }
        }
        None => (None, None),
    };

    let executor = Executor::new(app.clone());
    let fire: FireFn = {
        let executor = executor.clone();
        Arc::new(move |spec, tick| {
            executor.fire(spec, FiredBy::Schedule, Some(tick));
        })
    };
    let runner = CronRunner::new(fire).await?;
    let daemon = Arc::new(Daemon { app: app.clone(), executor: executor.clone(), runner: Mutex::new(runner), started_at, http_addr });
    let _ = api.control.set(daemon.clone() as Arc<dyn crate::api::Control>);
    match daemon.reload("startup").await {
        ReloadOutcome::Refused { error } => anyhow::bail!("invalid schedule in {}; not starting:\n{error}", dir.display()),
        ReloadOutcome::Valid(out @ ApplyOutcome::RolledBack { .. }) => {
            crate::cluster::leave(&app).await;
            anyhow::bail!("the scheduler took none of the jobs in {}; not starting: {out}", dir.display())
        }
        ReloadOutcome::Valid(_) => {}
    }
    daemon.runner.lock().await.start().await?;
    daemon.run_missed().await;
    // Load the model and check the index against the database now (logging the thread settings and any rebuild)
    // rather than at the first embed job; in the background, so signals and schedules are served meanwhile. A
    // missing model is logged and leaves crawling and notifications running.
    {
        let app = app.clone();
        tokio::spawn(async move {
            if let Err(e) = app.compute().await {
                tracing::error!(error = %format!("{e:#}"), "compute worker not started; embed, search and analyze jobs will fail until this is fixed");
            }
        });
    }

    // Heartbeat, index following and dead-node repair.
    let cluster_stop = tokio_util::sync::CancellationToken::new();
    let cluster_task = tokio::spawn(crate::cluster::run_background(app.clone(), cluster_stop.clone()));

    // Watching is best effort: without it, SIGHUP still reloads.
    let (_watcher, mut changes) = match schedule::watch::watch(&dir, config.daemon.reload_debounce) {
        Ok((w, rx)) => (Some(w), rx),
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "cannot watch the schedules directory; reload with SIGHUP");
            (None, tokio::sync::mpsc::channel(1).1)
        }
    };
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut offsets = tokio::time::interval(Duration::from_secs(60));
    offsets.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ready.store(true, Ordering::SeqCst);
    tracing::info!(schedules = %dir.display(), "newsd daemon running");

    let why = loop {
        tokio::select! {
            _ = sigterm.recv() => break "SIGTERM",
            _ = sigint.recv() => break "SIGINT",
            _ = sighup.recv() => {
                tracing::info!("SIGHUP: reloading schedules");
                daemon.reload("SIGHUP").await;
            }
            Some(paths) = changes.recv() => {
                let files: Vec<String> = paths.iter().filter_map(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned()).collect();
                tracing::info!(files = %files.join(", "), "schedule files changed; reloading");
                daemon.reload("watch").await;
            }
            _ = offsets.tick() => {
                let refreshed = daemon.runner.lock().await.refresh_offsets().await;
                if !refreshed.is_empty() {
                    tracing::info!(jobs = %refreshed.join(", "), "time zone offset changed; jobs rescheduled");
                }
            }
        }
    };

    let grace = config.daemon.shutdown_grace;
    tracing::info!(signal = why, running = executor.active(), grace = %humantime::format_duration(grace), "stopping: no new jobs; waiting for running ones");
    ready.store(false, Ordering::SeqCst);
    executor.begin_shutdown();
    daemon.runner.lock().await.shutdown().await;
    let left = executor.wait_idle(grace).await;
    if !left.is_empty() {
        executor.cancel_all();
        if let Err(e) = app.store.mark_runs_interrupted(&left, "the daemon stopped before the run finished (shutdown grace period over)").await {
            tracing::warn!(error = %e, "recording interrupted runs");
        }
    }
    cluster_stop.cancel();
    let _ = cluster_task.await;
    // Persist the index (and stop the compute worker) before the database closes.
    if let Err(e) = app.shutdown().await {
        tracing::error!(error = %e, "saving the index at shutdown");
    }
    if let Some(t) = http_task {
        t.abort();
    }
    crate::cluster::leave(&app).await;
    app.store.close().await;
    tracing::info!("newsd daemon stopped");
    Ok(())
}
