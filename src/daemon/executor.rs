//! Runs fired jobs with their policies and records every run.
//!
//! A fire goes through one path whatever the trigger (cron tick, missed run at start, queued run):
//! overlap policy (skip, or queue at most one) → jitter → disk-space guard for writing tasks → history row
//! `running` → the task in its own tokio task, under the job's timeout → outcome (`ok`, `failed`, `timeout`,
//! `panicked`) with counters or error → metrics, and an operations alert when a job starts failing. A panic or a
//! timeout costs that run only: the task runs on a thread of its own (a panic arrives as a `JoinError`), and a
//! timeout cancels it: its future is dropped at its next await point, which the executor waits for before the run
//! counts as ended, so a run is never started beside a cancelled one still running. A task busy in synchronous
//! code cannot be stopped earlier: when it has not stopped within [`CANCEL_WAIT`] the run is recorded as timed
//! out anyway (saying so) and the job stays "running" (later ticks are skipped) until the task does stop.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::Rng;
use tokio::sync::Notify;

use crate::metrics::{global as metrics, labels};
use crate::app::App;
use crate::schedule::{JobSpec, Overlap};
use crate::store::FireClaim;
use crate::tasks::run_task_until;

/// How long a timed-out run's task gets to reach an await point before the timeout is recorded without it.
pub const CANCEL_WAIT: Duration = Duration::from_secs(10);

/// Why a run started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum FiredBy {
    Schedule,
    /// At start, for a fire time missed while the daemon was down (`missed = "run_once"`).
    Missed,
    /// A tick that arrived while the previous run was running (`overlap = "queue"`).
    Queued,
    /// "Run now" from the HTTP API, the dashboard or the CLI through the daemon.
    Manual,
}

pub use crate::schedule::fire::{FireAccepted, RunEnd};

impl FiredBy {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// How a run ended: the store's `job_runs.outcome`.
pub use crate::store::RunOutcome as Outcome;

struct Fire {
    spec: Arc<JobSpec>,
    fired_by: FiredBy,
    scheduled_at: Option<DateTime<Utc>>,
    done: Option<tokio::sync::oneshot::Sender<RunEnd>>,
}

impl Fire {
    fn report(&mut self, end: RunEnd) {
        if let Some(d) = self.done.take() {
            let _ = d.send(end);
        }
    }
}

#[derive(Default)]
struct JobState {
    running: bool,
    queued: Option<Fire>,
    /// The last finished run failed (alerts are raised on the change from ok to failing).
    failing: bool,
}

#[derive(Default)]
struct Inner {
    jobs: HashMap<String, JobState>,
    /// Job runs in flight (job-run row ids), for marking them interrupted if shutdown's grace runs out.
    active_rows: HashMap<i64, String>,
    /// Cancellation of the tasks in flight, by job-run row id.
    cancels: HashMap<i64, tokio::sync::oneshot::Sender<()>>,
    /// Cancellation of tasks whose start could not be recorded.
    cancels_unrecorded: Vec<tokio::sync::oneshot::Sender<()>>,
    active: usize,
}

pub struct Executor {
    app: App,
    inner: Mutex<Inner>,
    stopping: AtomicBool,
    /// Signalled when a run loop ends and when shutdown begins.
    changed: Notify,
    /// Cancelled when shutdown begins: tasks that can stop at a clean point (the notification dispatcher,
    /// between messages) do so instead of being cut off after the grace period.
    shutdown: tokio_util::sync::CancellationToken,
}

impl Executor {
    pub fn new(app: App) -> Arc<Executor> {
        Arc::new(Executor {
            app,
            inner: Mutex::new(Inner::default()),
            stopping: AtomicBool::new(false),
            changed: Notify::new(),
            shutdown: tokio_util::sync::CancellationToken::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Jobs running (or waiting out their jitter) now.
    pub fn active(&self) -> usize {
        self.lock().active
    }

    /// Starts a run of `spec` (non-blocking), applying its overlap policy. A scheduled fire (a cron tick, or a missed
    /// one at start) is first claimed in the database: of all the nodes sharing it, the one that claims (job, fire
    /// time) first runs it; the others leave it (counted in `newsd_fires_taken_elsewhere_total`).
    pub fn fire(self: &Arc<Self>, spec: Arc<JobSpec>, fired_by: FiredBy, scheduled_at: Option<DateTime<Utc>>) -> FireAccepted {
        let Some(at) = scheduled_at.filter(|_| matches!(fired_by, FiredBy::Schedule | FiredBy::Missed)) else {
            return self.fire_inner(Fire { spec, fired_by, scheduled_at, done: None });
        };
        if self.is_stopping() {
            return FireAccepted::Stopping;
        }
        let this = self.clone();
        tokio::spawn(async move {
            // A few random milliseconds first: nodes whose timers fire in the same order every time would otherwise
            // leave one node winning every claim; this spreads the fires.
            let spread = Duration::from_millis(rand::rng().random_range(0..=100));
            tokio::time::sleep(spread).await;
            let node = &this.app.node.id;
            match this.app.store.claim_fire(&spec.name, at.timestamp_millis(), node).await {
                Ok(FireClaim::Won) => {
                    this.fire_inner(Fire { spec, fired_by, scheduled_at, done: None });
                }
                Ok(FireClaim::Taken { node: other }) => {
                    tracing::debug!(job = %spec.name, fire_at = %at.to_rfc3339(), node = %other, "fire claimed by another node");
                    metrics().fires_taken_elsewhere.get_or_create(&labels(&[("job", &spec.name)])).inc();
                }
                // Without the claim the fire might run twice; the database being unreachable, the run could not be
                // recorded either. Left to the next tick.
                Err(e) => tracing::error!(job = %spec.name, fire_at = %at.to_rfc3339(), error = %e, "claiming a scheduled fire failed; not running it"),
            }
        });
        FireAccepted::Started
    }

    /// [`Self::fire`] that also says how the run ended (a skipped fire ends at once as `skipped`; the receiver
    /// fails when the daemon stopped before running it).
    pub fn fire_tracked(
        self: &Arc<Self>,
        spec: Arc<JobSpec>,
        fired_by: FiredBy,
    ) -> (FireAccepted, tokio::sync::oneshot::Receiver<RunEnd>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (self.fire_inner(Fire { spec, fired_by, scheduled_at: None, done: Some(tx) }), rx)
    }

    fn fire_inner(self: &Arc<Self>, fire: Fire) -> FireAccepted {
        if self.is_stopping() {
            tracing::debug!(job = %fire.spec.name, "shutting down; tick ignored");
            return FireAccepted::Stopping;
        }
        let mut inner = self.lock();
        let state = inner.jobs.entry(fire.spec.name.clone()).or_default();
        if state.running {
            let reason = match fire.spec.overlap {
                Overlap::Queue if state.queued.is_none() => {
                    tracing::info!(job = %fire.spec.name, "previous run still running; queued one run");
                    state.queued = Some(Fire { fired_by: if fire.fired_by == FiredBy::Manual { FiredBy::Manual } else { FiredBy::Queued }, ..fire });
                    return FireAccepted::Queued;
                }
                Overlap::Queue => "previous run still running and one run already queued",
                Overlap::Skip => "previous run still running",
            };
            drop(inner);
            tracing::info!(job = %fire.spec.name, "{reason}; tick skipped");
            let this = self.clone();
            tokio::spawn(async move {
                let mut fire = fire;
                this.record_skipped(&fire, reason).await;
                fire.report(RunEnd { run_id: None, outcome: Outcome::Skipped, counters: None, error: Some(reason.into()) });
            });
            return FireAccepted::Skipped;
        }
        state.running = true;
        inner.active += 1;
        metrics().jobs_running.set(inner.active as i64);
        drop(inner);
        let this = self.clone();
        tokio::spawn(async move { this.run_loop(fire).await });
        FireAccepted::Started
    }

    async fn run_loop(self: Arc<Self>, first: Fire) {
        let name = first.spec.name.clone();
        let mut next = Some(first);
        while let Some(mut fire) = next.take() {
            if !fire.spec.jitter.is_zero() {
                let wait = Duration::from_millis(rand::rng().random_range(0..=fire.spec.jitter.as_millis() as u64));
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = self.wait_stopping() => {}
                }
            }
            if self.is_stopping() {
                break;
            }
            let end = self.run_one(&fire).await;
            fire.report(end);
            let mut inner = self.lock();
            if !self.is_stopping() {
                next = inner.jobs.get_mut(&name).and_then(|s| s.queued.take());
            }
        }
        let mut inner = self.lock();
        if let Some(s) = inner.jobs.get_mut(&name) {
            s.running = false;
            s.queued = None;
        }
        inner.active -= 1;
        metrics().jobs_running.set(inner.active as i64);
        drop(inner);
        self.changed.notify_waiters();
    }

    async fn wait_stopping(&self) {
        loop {
            let notified = self.changed.notified();
            if self.is_stopping() {
                return;
            }
            notified.await;
        }
    }

    async fn record_skipped(&self, fire: &Fire, reason: &str) {
        let spec = &fire.spec;
        let at = fire.scheduled_at.map(|t| t.timestamp_millis());
        if let Err(e) = self.app.store.record_skipped_run(&spec.name, spec.task.name(), fire.fired_by.as_str(), &self.app.node.id, at, reason).await {
            tracing::warn!(job = %spec.name, error = %e, "recording a skipped run");
        }
        metrics().job_runs.get_or_create(&labels(&[("job", &spec.name), ("task", spec.task.name()), ("outcome", Outcome::Skipped.as_str())])).inc();
    }

    /// The overlap policy across the cluster: a run of this job still running on another live node skips this fire
    /// (`overlap = "skip"`, recorded) or holds it until that run ends (`"queue"`). Returns the skip.
    async fn overlap_elsewhere(&self, fire: &Fire) -> Option<RunEnd> {
        let spec = &fire.spec;
        loop {
            let alive_after = crate::cluster::alive_after(&self.app.config);
            let other = match self.app.store.running_elsewhere(&spec.name, &self.app.node.id, alive_after).await {
                Ok(o) => o,
                Err(e) => {
                    tracing::warn!(job = %spec.name, error = %e, "checking runs on other nodes; running anyway");
                    None
                }
            };
            let Some((_, node)) = other else { return None };
            if spec.overlap == Overlap::Skip {
                let reason = format!("previous run still running on node {node}");
                tracing::info!(job = %spec.name, "{reason}; tick skipped");
                self.record_skipped(fire, &reason).await;
                return Some(RunEnd { run_id: None, outcome: Outcome::Skipped, counters: None, error: Some(reason) });
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = self.wait_stopping() => {}
            }
            if self.is_stopping() {
                return Some(RunEnd { run_id: None, outcome: Outcome::Skipped, counters: None, error: Some("the daemon is stopping".into()) });
            }
        }
    }

    /// One run, start to history row. Never panics, never returns an error: everything is recorded.
    async fn run_one(&self, fire: &Fire) -> RunEnd {
        let spec = &fire.spec;
        let task_name = spec.task.name();
        if let Some(skipped) = self.overlap_elsewhere(fire).await {
            return skipped;
        }
        if spec.task.writes_large_files() && !super::disk::guard(&self.app, &format!("job {}", spec.name), &self.app.config.data_dir()).await {
            self.record_skipped(fire, "low disk space").await;
            return RunEnd { run_id: None, outcome: Outcome::Skipped, counters: None, error: Some("low disk space".into()) };
        }
        let scheduled_at = fire.scheduled_at.map(|t| t.timestamp_millis());
        let row = match self.app.store.start_job_run(&spec.name, task_name, fire.fired_by.as_str(), &self.app.node.id, scheduled_at).await {
            Ok(id) => Some(id),
            Err(e) => {
                tracing::error!(job = %spec.name, error = %e, "recording the start of a run; running it anyway");
                None
            }
        };
        if let Some(id) = row {
            self.lock().active_rows.insert(id, spec.name.clone());
        }
        tracing::info!(job = %spec.name, task = task_name, fired_by = fire.fired_by.as_str(), "job started");
        let started = Instant::now();
        let app = self.app.clone();
        let task = spec.task.clone();
        let stop = self.shutdown.child_token();
        let span = tracing::info_span!("job", job = %spec.name, task = task_name);
        // The task runs on a thread of its own, driven by `Handle::block_on`: it needs no `Send` bound (the tasks'
        // futures borrow across awaits in ways the compiler cannot always prove Send), a panic stays in that thread
        // and comes back as a JoinError, and a CPU-heavy task cannot stall the runtime's workers. Cancellation
        // (timeout, shutdown) goes through `cancel`.
        let (cancel_tx, cancel_rx) = tokio::sync::oneshot::channel::<()>();
        if let Some(id) = row {
            self.lock().cancels.insert(id, cancel_tx);
        } else {
            let mut inner = self.lock();
            inner.cancels_unrecorded.retain(|c| !c.is_closed());
            inner.cancels_unrecorded.push(cancel_tx);
        }
        let rt = tokio::runtime::Handle::current();
        let mut handle = tokio::task::spawn_blocking(move || {
            let fut = async move {
                tokio::select! {
                    r = run_task_until(&app, &task, &stop) => Some(r),
                    _ = cancel_rx => None,
                }
            };
            rt.block_on(tracing::Instrument::instrument(fut, span))
        });
        let result = tokio::time::timeout(spec.timeout, &mut handle).await;
        let cancel = match row {
            Some(id) => self.lock().cancels.remove(&id),
            None => None,
        };
        // A timed-out task that has not stopped within CANCEL_WAIT; awaited after the run is recorded.
        let mut still_running = None;
        let (outcome, counters, error) = match result {
            Err(_) => {
                if let Some(c) = cancel {
                    let _ = c.send(());
                }
                let mut error = format!("timed out after {}", humantime::format_duration(spec.timeout));
                if tokio::time::timeout(CANCEL_WAIT, &mut handle).await.is_err() {
                    error.push_str(&format!(
                        "; the task had not stopped {} after its cancel (busy outside an await point)",
                        humantime::format_duration(CANCEL_WAIT)
                    ));
                    still_running = Some(handle);
                }
                (Outcome::Timeout, None, Some(error))
            }
            Ok(Ok(None)) => (Outcome::Failed, None, Some("cancelled: the daemon is stopping".into())),
            Ok(Err(join)) if join.is_panic() => {
                let payload = join.into_panic();
                let msg = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic payload".into());
                (Outcome::Panicked, None, Some(format!("panicked: {msg}")))
            }
            Ok(Err(join)) => (Outcome::Failed, None, Some(format!("task cancelled: {join}"))),
            Ok(Ok(Some(Err(e)))) => (Outcome::Failed, None, Some(format!("{e:#}"))),
            Ok(Ok(Some(Ok(v)))) => (Outcome::Ok, Some(v), None),
        };
        // The run's buffers are garbage now: hand their pages back so they do not accumulate in malloc's arenas.
        crate::memory::release_free_memory();
        let secs = started.elapsed().as_secs_f64();
        match outcome {
            Outcome::Ok => tracing::info!(job = %spec.name, seconds = secs, counters = %counters.as_ref().map(|c| c.to_string()).unwrap_or_default(), "job finished"),
            _ => tracing::error!(job = %spec.name, outcome = outcome.as_str(), seconds = secs, error = error.as_deref().unwrap_or(""), "job did not finish normally"),
        }
        if let Some(id) = row {
            if let Err(e) = self.app.store.finish_job_run(id, outcome, counters.as_ref(), error.as_deref()).await {
                tracing::error!(job = %spec.name, error = %e, "recording the end of a run");
            }
            self.lock().active_rows.remove(&id);
        }
        let m = metrics();
        m.job_runs.get_or_create(&labels(&[("job", &spec.name), ("task", task_name), ("outcome", outcome.as_str())])).inc();
        m.job_duration_seconds.get_or_create(&labels(&[("job", &spec.name), ("task", task_name)])).observe(secs);
        let failed = outcome != Outcome::Ok;
        let was_failing = {
            let mut inner = self.lock();
            let s = inner.jobs.entry(spec.name.clone()).or_default();
            std::mem::replace(&mut s.failing, failed)
        };
        if failed && !was_failing {
            let msg = format!("job {} ({task_name}) {}: {}", spec.name, outcome.as_str(), error.as_deref().unwrap_or(""));
            crate::ops::alert(&self.app, "job_failed", &msg).await;
        } else if !failed && was_failing {
            tracing::info!(job = %spec.name, "job recovered");
        }
        if let Some(h) = still_running {
            // The job counts as running (later ticks are skipped) until its task really ends.
            let _ = h.await;
            tracing::info!(job = %spec.name, "a timed-out task stopped at last");
        }
        RunEnd { run_id: row, outcome, counters, error }
    }

    /// Stops starting runs (queued runs and runs waiting out their jitter are dropped).
    pub fn begin_shutdown(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.shutdown.cancel();
        self.changed.notify_waiters();
    }

    /// Cancels every task in flight (after the shutdown grace period): each stops at its next await point.
    pub fn cancel_all(&self) {
        let mut inner = self.lock();
        for (_, c) in inner.cancels.drain() {
            let _ = c.send(());
        }
        for c in inner.cancels_unrecorded.drain(..) {
            let _ = c.send(());
        }
    }

    /// Waits up to `grace` for running jobs to end. Returns the ids of job-run rows still running after it.
    pub async fn wait_idle(&self, grace: Duration) -> Vec<i64> {
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let notified = self.changed.notified();
            let (active, rows) = {
                let inner = self.lock();
                (inner.active, inner.active_rows.keys().copied().collect::<Vec<_>>())
            };
            if active == 0 {
                return Vec::new();
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                tracing::warn!(running = active, "shutdown grace period over; jobs still running are interrupted");
                return rows;
            }
        }
    }
}
