//! Puts a [`ScheduleSet`] on tokio-cron-scheduler and keeps it in step with reloads.
//!
//! tokio-cron-scheduler is the trigger only: each cron tick calls the fire callback, and the daemon's executor
//! applies the job's policies (overlap, jitter, timeout, history). Applying a new set touches only the
//! difference: removed and changed jobs are taken off the scheduler, added and changed ones put on.
//!
//! tokio-cron-scheduler evaluates a job's cron expression at the UTC offset its time zone had when the job was
//! added; [`CronRunner::refresh_offsets`] (called every minute by the daemon) re-adds jobs whose zone changed
//! offset since (daylight saving), so fire times follow the zone's wall clock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Offset, TimeZone, Utc};
use tokio_cron_scheduler::{Job, JobScheduler};
use uuid::Uuid;

use super::{diff, JobSpec, ScheduleDiff, ScheduleSet};

/// Called on every cron tick with the job and the tick time.
pub type FireFn = Arc<dyn Fn(Arc<JobSpec>, DateTime<Utc>) + Send + Sync>;

struct Scheduled {
    id: Uuid,
    offset: i32,
}

pub struct CronRunner {
    sched: JobScheduler,
    fire: FireFn,
    current: ScheduleSet,
    /// Enabled jobs as they are on the scheduler; a tick fires only if its job is still the live one (a tick racing
    /// with a reload that removed or changed the job is dropped).
    live: Arc<Mutex<HashMap<String, Arc<JobSpec>>>>,
    scheduled: HashMap<String, Scheduled>,
}

fn offset_now(tz: &chrono_tz::Tz) -> i32 {
    tz.offset_from_utc_datetime(&Utc::now().naive_utc()).fix().local_minus_utc()
}

impl CronRunner {
    pub async fn new(fire: FireFn) -> anyhow::Result<CronRunner> {
        let sched = JobScheduler::new().await.map_err(|e| anyhow::anyhow!("creating the job scheduler: {e}"))?;
        Ok(CronRunner {
            sched,
            fire,
            current: ScheduleSet::default(),
            live: Arc::new(Mutex::new(HashMap::new())),
            scheduled: HashMap::new(),
        })
    }

    pub async fn start(&self) -> anyhow::Result<()> {
        self.sched.start().await.map_err(|e| anyhow::anyhow!("starting the job scheduler: {e}"))
    }

    /// The schedule now in force (disabled jobs included).
    pub fn current(&self) -> &ScheduleSet {
        &self.current
    }

    /// The live spec of an enabled job.
    pub fn live_spec(&self, name: &str) -> Option<Arc<JobSpec>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).get(name).cloned()
    }

    async fn add(&mut self, spec: Arc<JobSpec>) -> anyhow::Result<()> {
        let fire = self.fire.clone();
        let live = self.live.clone();
        let job_spec = spec.clone();
        let job = Job::new_async_tz(spec.cron.as_str(), spec.timezone, move |_id, _sched| {
            let fire = fire.clone();
            let live = live.clone();
            let spec = job_spec.clone();
            Box::pin(async move {
                let is_live = live.lock().unwrap_or_else(|e| e.into_inner()).get(&spec.name).is_some_and(|l| Arc::ptr_eq(l, &spec));
                if is_live {
                    let now = Utc::now();
                    let tick = DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now);
                    fire(spec, tick);
                }
            })
        })
        .map_err(|e| anyhow::anyhow!("job {}: scheduling {:?}: {e}", spec.name, spec.cron))?;
        let id = self.sched.add(job).await.map_err(|e| anyhow::anyhow!("job {}: adding to the scheduler: {e}", spec.name))?;
        self.scheduled.insert(spec.name.clone(), Scheduled { id, offset: offset_now(&spec.timezone) });
        self.live.lock().unwrap_or_else(|e| e.into_inner()).insert(spec.name.clone(), spec);
        Ok(())
    }

    async fn remove(&mut self, name: &str) -> anyhow::Result<()> {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).remove(name);
        if let Some(s) = self.scheduled.remove(name) {
            self.sched.remove(&s.id).await.map_err(|e| anyhow::anyhow!("job {name}: removing from the scheduler: {e}"))?;
        }
        Ok(())
    }

    /// Replaces the schedule in force with `new`, touching only what differs. Returns the difference and any
    /// scheduler errors (jobs were validated before, so these are not expected).
    pub async fn apply(&mut self, new: ScheduleSet) -> (ScheduleDiff, Vec<String>) {
        let d = diff(&self.current, &new);
        let mut errors = Vec::new();
        for name in d.removed.iter().chain(d.changed.iter()) {
            if let Err(e) = self.remove(name).await {
                errors.push(format!("{e:#}"));
            }
        }
        for name in d.added.iter().chain(d.changed.iter()) {
            let spec = &new.jobs[name];
            if spec.enabled {
                if let Err(e) = self.add(Arc::new(spec.clone())).await {
                    errors.push(format!("{e:#}"));
                }
            }
        }
        self.current = new;
        (d, errors)
    }

    /// Re-adds jobs whose time zone changed its UTC offset since they were added. Returns their names.
    pub async fn refresh_offsets(&mut self) -> Vec<String> {
        let stale: Vec<String> = self
            .scheduled
            .iter()
            .filter(|(name, s)| self.current.jobs.get(*name).is_some_and(|j| offset_now(&j.timezone) != s.offset))
            .map(|(n, _)| n.clone())
            .collect();
        for name in &stale {
            let spec = Arc::new(self.current.jobs[name].clone());
            if let Err(e) = self.remove(name).await {
                tracing::warn!(job = %name, error = %format!("{e:#}"), "refreshing time zone offset");
            }
            if let Err(e) = self.add(spec).await {
                tracing::error!(job = %name, error = %format!("{e:#}"), "refreshing time zone offset");
            }
        }
        stale
    }

    /// Stops ticking (jobs already fired are the executor's business).
    pub async fn shutdown(&mut self) {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).clear();
        if let Err(e) = self.sched.shutdown().await {
            tracing::warn!(error = %e, "stopping the job scheduler");
        }
    }
}
