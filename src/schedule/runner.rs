//! Puts a [`ScheduleSet`] on tokio-cron-scheduler and keeps it in step with reloads.
//!
//! tokio-cron-scheduler is the trigger only: each cron tick calls the fire callback, and the daemon's executor
//! applies the job's policies (overlap, jitter, timeout, history). Applying a new set touches only the
//! difference: added and changed jobs are put on (beside their old version until the new one is live), removed
//! and changed ones taken off; [`ApplyOutcome`] says whether every job made it.
//!
//! tokio-cron-scheduler evaluates a job's cron expression at the UTC offset its time zone had when the job was
//! added; [`CronRunner::refresh_offsets`] (called every minute by the daemon) re-adds jobs whose zone changed
//! offset since (daylight saving), so fire times follow the zone's wall clock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Offset, TimeZone, Utc};
use serde::Serialize;
use tokio_cron_scheduler::{Job, JobScheduler};
use uuid::Uuid;

use super::{diff, JobSpec, ScheduleDiff, ScheduleSet};
use crate::store::ReloadStatus;

/// Called on every cron tick with the job and the tick time.
pub type FireFn = Arc<dyn Fn(Arc<JobSpec>, DateTime<Utc>) + Send + Sync>;

/// A job the scheduler would not take (jobs are validated before, so this is not expected).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailedJob {
    pub job: String,
    pub error: String,
    /// The job's previous version keeps running (a changed job); false for an added job, which does not run.
    pub kept_previous: bool,
}

/// What [`CronRunner::apply`] did. The runner's [`CronRunner::current`] set is, in every case, what runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ApplyOutcome {
    /// Every difference is in force.
    Applied { diff: ScheduleDiff },
    /// Some jobs could not be put on the scheduler; the rest of the difference is in force.
    Partial { diff: ScheduleDiff, failed: Vec<FailedJob> },
    /// No added or changed job could be put on the scheduler: nothing was changed, the previous schedule runs.
    RolledBack { diff: ScheduleDiff, failed: Vec<FailedJob> },
}

impl ApplyOutcome {
    pub fn diff(&self) -> &ScheduleDiff {
        match self {
            ApplyOutcome::Applied { diff } | ApplyOutcome::Partial { diff, .. } | ApplyOutcome::RolledBack { diff, .. } => diff,
        }
    }

    pub fn failed(&self) -> &[FailedJob] {
        match self {
            ApplyOutcome::Applied { .. } => &[],
            ApplyOutcome::Partial { failed, .. } | ApplyOutcome::RolledBack { failed, .. } => failed,
        }
    }

    /// `applied` | `partial` | `rolled_back`, as recorded in reload events.
    pub fn status(&self) -> ReloadStatus {
        match self {
            ApplyOutcome::Applied { .. } => ReloadStatus::Applied,
            ApplyOutcome::Partial { .. } => ReloadStatus::Partial,
            ApplyOutcome::RolledBack { .. } => ReloadStatus::RolledBack,
        }
    }

    /// The status's string (metrics labels, logs).
    pub fn as_str(&self) -> &'static str {
        self.status().as_str()
    }
}

impl std::fmt::Display for ApplyOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.diff())?;
        let failed = self.failed();
        if !failed.is_empty() {
            let list: Vec<String> = failed
                .iter()
                .map(|j| format!("{} ({}{})", j.job, j.error, if j.kept_previous { "; previous version kept" } else { "" }))
                .collect();
            write!(f, "; not scheduled: {}", list.join(", "))?;
        }
        if matches!(self, ApplyOutcome::RolledBack { .. }) {
            f.write_str("; rolled back: the previous schedule runs")?;
        }
        Ok(())
    }
}

struct Scheduled {
    id: Uuid,
    offset: i32,
}

pub struct CronRunner {
    sched: JobScheduler,
    fire: FireFn,
    current: ScheduleSet,
    /// Enabled jobs as they are on the scheduler; a tick fires only if its job is still the live one (a tick racing
    /// with a reload that removed or changed the job is dropped, and so is a tick of a new version not yet live).
    live: Arc<Mutex<HashMap<String, Arc<JobSpec>>>>,
    scheduled: HashMap<String, Scheduled>,
    /// Test support: jobs the scheduler is made to refuse.
    #[cfg(test)]
    refuse: std::collections::HashSet<String>,
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
            #[cfg(test)]
            refuse: Default::default(),
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

    /// Puts `spec` on the scheduler. Its ticks fire only once it is made live ([`Self::make_live`]).
    async fn place(&mut self, spec: Arc<JobSpec>) -> anyhow::Result<Uuid> {
        #[cfg(test)]
        if self.refuse.contains(&spec.name) {
            anyhow::bail!("job {}: refused by the test", spec.name);
        }
        let fire = self.fire.clone();
        let live = self.live.clone();
        let job_spec = spec.clone();
        // The last fire time this entry fired: a trigger that ran so late that it maps to the next fire time is not
        // fired again by that time's own trigger.
        let last_fired: Arc<Mutex<Option<DateTime<Utc>>>> = Arc::default();
        let job = Job::new_async_tz(spec.cron.as_str(), spec.timezone, move |_id, _sched| {
            let fire = fire.clone();
            let live = live.clone();
            let spec = job_spec.clone();
            let last_fired = last_fired.clone();
            Box::pin(async move {
                let is_live = live.lock().unwrap_or_else(|e| e.into_inner()).get(&spec.name).is_some_and(|l| Arc::ptr_eq(l, &spec));
                if is_live {
                    let now = Utc::now();
                    // The cron time this tick belongs to (the same on every node), not the moment it ran.
                    let tick = spec.fire_time_for_tick(now).unwrap_or_else(|| DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now));
                    {
                        let mut last = last_fired.lock().unwrap_or_else(|e| e.into_inner());
                        if last.is_some_and(|l| tick <= l) {
                            tracing::debug!(job = %spec.name, tick = %tick.to_rfc3339(), "a late trigger's fire time was already fired; not firing it twice");
                            return;
                        }
                        *last = Some(tick);
                    }
                    fire(spec, tick);
                }
            })
        })
        .map_err(|e| anyhow::anyhow!("job {}: scheduling {:?}: {e}", spec.name, spec.cron))?;
        self.sched.add(job).await.map_err(|e| anyhow::anyhow!("job {}: adding to the scheduler: {e}", spec.name))
    }

    /// Makes a placed job the live one, taking its previous version (if any) off the scheduler.
    async fn make_live(&mut self, spec: Arc<JobSpec>, id: Uuid) {
        let name = spec.name.clone();
        let offset = offset_now(&spec.timezone);
        self.live.lock().unwrap_or_else(|e| e.into_inner()).insert(name.clone(), spec);
        if let Some(old) = self.scheduled.insert(name.clone(), Scheduled { id, offset }) {
            self.unschedule(&name, old.id).await;
        }
    }

    /// Takes a job off: its ticks stop at once (it is no longer live), and its scheduler entry is removed.
    async fn remove(&mut self, name: &str) {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).remove(name);
        if let Some(s) = self.scheduled.remove(name) {
            self.unschedule(name, s.id).await;
        }
    }

    async fn unschedule(&mut self, name: &str, id: Uuid) {
        // A failure leaves a scheduler entry whose ticks are dropped (the job is not live): harmless, logged.
        if let Err(e) = self.sched.remove(&id).await {
            tracing::warn!(job = %name, error = %e, "removing a job's old entry from the scheduler");
        }
    }

    /// Replaces the schedule in force with `new`, touching only what differs: the new version of every added and
    /// changed job is put on the scheduler first, beside the old one, and made live only then, so a job the
    /// scheduler refuses keeps its previous version. When none of them could be placed nothing changes at all
    /// ([`ApplyOutcome::RolledBack`]).
    pub async fn apply(&mut self, new: ScheduleSet) -> ApplyOutcome {
        let d = diff(&self.current, &new);
        let mut placed = Vec::new();
        let mut failed = Vec::new();
        for name in d.added.iter().chain(d.changed.iter()) {
            let spec = &new.jobs[name];
            if !spec.enabled {
                continue;
            }
            let spec = Arc::new(spec.clone());
            match self.place(spec.clone()).await {
                Ok(id) => placed.push((spec, id)),
                Err(e) => {
                    let kept_previous = self.scheduled.contains_key(name);
                    tracing::error!(job = %name, error = %format!("{e:#}"), kept_previous, "the scheduler refused a job");
                    failed.push(FailedJob { job: name.clone(), error: format!("{e:#}"), kept_previous });
                }
            }
        }
        if !failed.is_empty() && placed.is_empty() {
            return ApplyOutcome::RolledBack { diff: d, failed };
        }
        let placed_names: std::collections::HashSet<String> = placed.iter().map(|(s, _)| s.name.clone()).collect();
        for (spec, id) in placed {
            self.make_live(spec, id).await;
        }
        // Removed jobs, and changed jobs now disabled, come off; a changed job that failed keeps its old version.
        let failed_names: std::collections::HashSet<&str> = failed.iter().map(|f| f.job.as_str()).collect();
        for name in d.removed.iter().chain(d.changed.iter()) {
            if !placed_names.contains(name) && !failed_names.contains(name.as_str()) {
                self.remove(name).await;
            }
        }
        let mut in_force = new;
        for f in &failed {
            // A changed job keeps its old version (running, or disabled as it was); an added one is not in force.
            match self.current.jobs.get(&f.job) {
                Some(old) => in_force.jobs.insert(f.job.clone(), old.clone()),
                None => in_force.jobs.remove(&f.job),
            };
        }
        self.current = in_force;
        if failed.is_empty() {
            ApplyOutcome::Applied { diff: d }
        } else {
            ApplyOutcome::Partial { diff: d, failed }
        }
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
            match self.place(spec.clone()).await {
                Ok(id) => self.make_live(spec, id).await,
                // The old entry stays live, at the old offset, until the next try.
                Err(e) => tracing::error!(job = %name, error = %format!("{e:#}"), "refreshing time zone offset"),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::load_texts;
    use std::path::Path;

    fn set(text: &str) -> ScheduleSet {
        load_texts([(Path::new("s/a.toml"), text)], None).unwrap()
    }

    fn job(name: &str, cron: &str) -> String {
        format!("[[job]]\nname = \"{name}\"\ncron = \"{cron}\"\ntask = \"notify\"\n")
    }

    async fn runner() -> CronRunner {
        CronRunner::new(Arc::new(|_, _| {})).await.unwrap()
    }

    #[tokio::test]
    async fn a_refused_add_is_partial_and_a_refused_change_keeps_the_old_version() {
        let mut r = runner().await;
        let first = set(&format!("{}{}", job("a", "0 * * * * *"), job("b", "0 * * * * *")));
        assert!(matches!(r.apply(first).await, ApplyOutcome::Applied { .. }));
        let old_b = r.live_spec("b").unwrap();
        r.refuse.insert("b".into());
        r.refuse.insert("c".into());
        let edit = set(&format!("{}{}{}", job("a", "30 * * * * *"), job("b", "15 * * * * *"), job("c", "0 * * * * *")));
        let out = r.apply(edit).await;
        let ApplyOutcome::Partial { diff, failed } = &out else { panic!("{out:?}") };
        assert_eq!(diff.added, ["c"]);
        assert_eq!(diff.changed, ["a", "b"]);
        let by: HashMap<&str, &FailedJob> = failed.iter().map(|f| (f.job.as_str(), f)).collect();
        assert!(by["b"].kept_previous && !by["c"].kept_previous, "{failed:?}");
        assert!(out.to_string().contains("b (job b: refused by the test; previous version kept)"), "{out}");
        // What is in force is what runs: the new a, the old b, no c.
        assert_eq!(r.current().jobs["a"].cron, "30 * * * * *");
        assert_eq!(r.live_spec("a").unwrap().cron, "30 * * * * *");
        assert_eq!(r.current().jobs["b"].cron, "0 * * * * *");
        assert!(Arc::ptr_eq(&r.live_spec("b").unwrap(), &old_b));
        assert!(!r.current().jobs.contains_key("c") && r.live_spec("c").is_none());
        // The refused change shows again on the next reload (it is not in force).
        r.refuse.clear();
        let again = set(&format!("{}{}", job("a", "30 * * * * *"), job("b", "15 * * * * *")));
        let out = r.apply(again).await;
        assert_eq!(out, ApplyOutcome::Applied { diff: ScheduleDiff { changed: vec!["b".into()], ..Default::default() } });
        r.shutdown().await;
    }

    #[tokio::test]
    async fn when_nothing_can_be_placed_the_whole_edit_is_rolled_back() {
        let mut r = runner().await;
        assert!(matches!(r.apply(set(&format!("{}{}", job("a", "0 * * * * *"), job("gone", "0 * * * * *")))).await, ApplyOutcome::Applied { .. }));
        r.refuse.insert("a".into());
        let out = r.apply(set(&job("a", "5 * * * * *"))).await;
        let ApplyOutcome::RolledBack { diff, failed } = &out else { panic!("{out:?}") };
        assert_eq!((diff.changed.clone(), diff.removed.clone()), (vec!["a".to_string()], vec!["gone".to_string()]));
        assert_eq!(failed.len(), 1);
        // Nothing changed: the removal in the same edit was not applied either.
        assert_eq!(r.current().jobs["a"].cron, "0 * * * * *");
        assert!(r.live_spec("gone").is_some());
        r.shutdown().await;
    }
}
