//! The daemon's history: job runs, schedule reload events and operations alerts.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{FromRow, Row};

use super::{now_ms, ReloadStatus, Result, RunOutcome, Store};

/// One row of `job_runs`.
#[derive(Debug, Clone, Serialize)]
pub struct JobRun {
    pub id: i64,
    pub job: String,
    pub task: String,
    pub fired_by: String,
    pub scheduled_at: Option<i64>,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub outcome: RunOutcome,
    /// The JSON document the task returned (ok runs).
    pub counters: Option<serde_json::Value>,
    pub error: Option<String>,
}

/// A job's latest run and latest success (for `newsd status` and /healthz).
#[derive(Debug, Clone, Serialize)]
pub struct JobSummary {
    pub job: String,
    pub last_run: JobRun,
    pub last_success_at: Option<i64>,
    pub runs: i64,
}

/// One row of `reload_events`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ReloadEvent {
    pub id: i64,
    pub at: i64,
    pub fired_by: String,
    pub outcome: ReloadStatus,
    pub detail: String,
}

/// The running daemon's row of `daemon_state`: the schedule it has in force (a JSON list of jobs).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct DaemonState {
    pub pid: i64,
    pub started_at: i64,
    pub applied_at: i64,
    pub http_addr: Option<String>,
    pub schedule: String,
}

/// One row of `ops_alerts`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct OpsAlert {
    pub id: i64,
    pub at: i64,
    pub kind: String,
    pub message: String,
}

/// Runs still running, written as the literal of the partial index `job_runs_running` (`WHERE outcome = 'running'`)
/// so that the planner can use it.
pub(super) const RUNNING: &str = "outcome = 'running'";

const RUN_COLUMNS: &str = "id, job, task, fired_by, scheduled_at, started_at, finished_at, outcome, counters, error";

/// The columns map one to one except `counters`, JSON text (the `Any` driver has no JSON type; text that is not
/// JSON reads as none): hence a hand-written impl, not the derive.
impl<'r> FromRow<'r, AnyRow> for JobRun {
    fn from_row(row: &'r AnyRow) -> sqlx::Result<Self> {
        let counters: Option<String> = row.try_get("counters")?;
        Ok(JobRun {
            id: row.try_get("id")?,
            job: row.try_get("job")?,
            task: row.try_get("task")?,
            fired_by: row.try_get("fired_by")?,
            scheduled_at: row.try_get("scheduled_at")?,
            started_at: row.try_get("started_at")?,
            finished_at: row.try_get("finished_at")?,
            outcome: row.try_get("outcome")?,
            counters: counters.and_then(|c| serde_json::from_str(&c).ok()),
            error: row.try_get("error")?,
        })
    }
}

impl Store {
    /// Records the start of a run (outcome `running`); returns the row id for [`Store::finish_job_run`].
    pub async fn start_job_run(&self, job: &str, task: &str, fired_by: &str, scheduled_at: Option<i64>) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "INSERT INTO job_runs (job, task, fired_by, scheduled_at, started_at, outcome) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(job)
        .bind(task)
        .bind(fired_by)
        .bind(scheduled_at)
        .bind(now_ms())
        .bind(RunOutcome::Running)
        .fetch_one(self.pool())
        .await?)
    }

    /// Records how a run ended.
    pub async fn finish_job_run(&self, id: i64, outcome: RunOutcome, counters: Option<&serde_json::Value>, error: Option<&str>) -> Result<()> {
        sqlx::query("UPDATE job_runs SET finished_at = $1, outcome = $2, counters = $3, error = $4 WHERE id = $5")
            .bind(now_ms())
            .bind(outcome)
            .bind(counters.map(|c| c.to_string()))
            .bind(error)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Records a run that did not start (overlap, low disk space): one finished row.
    pub async fn record_skipped_run(&self, job: &str, task: &str, fired_by: &str, scheduled_at: Option<i64>, reason: &str) -> Result<()> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO job_runs (job, task, fired_by, scheduled_at, started_at, finished_at, outcome, error) \
             VALUES ($1, $2, $3, $4, $5, $5, $7, $6)",
        )
        .bind(job)
        .bind(task)
        .bind(fired_by)
        .bind(scheduled_at)
        .bind(now)
        .bind(reason)
        .bind(RunOutcome::Skipped)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Marks runs still `running` as `interrupted` (at daemon start: they were cut off by a crash or kill -9;
    /// with ids: after the shutdown grace period ran out). Returns how many rows changed.
    pub async fn mark_runs_interrupted(&self, ids: Option<&[i64]>, reason: &str) -> Result<u64> {
        let now = now_ms();
        let done = match ids {
            None => {
                sqlx::query(&format!("UPDATE job_runs SET outcome = $3, finished_at = $1, error = $2 WHERE {RUNNING}"))
                    .bind(now)
                    .bind(reason)
                    .bind(RunOutcome::Interrupted)
                    .execute(self.pool())
                    .await?
            }
            Some([]) => return Ok(0),
            Some(ids) => {
                let sql = format!(
                    "UPDATE job_runs SET outcome = $3, finished_at = $1, error = $2 WHERE {RUNNING} AND id IN ({})",
                    super::placeholders(4, ids.len())
                );
                let mut q = sqlx::query(&sql).bind(now).bind(reason).bind(RunOutcome::Interrupted);
                for id in ids {
                    q = q.bind(*id);
                }
                q.execute(self.pool()).await?
            }
        };
        Ok(done.rows_affected())
    }

    /// Most recent runs first; only `job`'s when given.
    pub async fn job_runs(&self, job: Option<&str>, limit: i64) -> Result<Vec<JobRun>> {
        let rows = match job {
            Some(j) => {
                sqlx::query_as(&format!("SELECT {RUN_COLUMNS} FROM job_runs WHERE job = $1 ORDER BY id DESC LIMIT $2"))
                    .bind(j)
                    .bind(limit)
                    .fetch_all(self.pool())
                    .await?
            }
            None => {
                sqlx::query_as(&format!("SELECT {RUN_COLUMNS} FROM job_runs ORDER BY id DESC LIMIT $1"))
                    .bind(limit)
                    .fetch_all(self.pool())
                    .await?
            }
        };
        Ok(rows)
    }

    /// Start time of the job's latest run of any outcome (the last fire time the daemon saw), for missed-run
    /// detection.
    pub async fn last_job_start(&self, job: &str) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar("SELECT MAX(COALESCE(scheduled_at, started_at)) FROM job_runs WHERE job = $1")
            .bind(job)
            .fetch_one(self.pool())
            .await?)
    }

    /// Every job's latest run, latest success and run count, by job name.
    pub async fn job_summaries(&self) -> Result<Vec<JobSummary>> {
        let cols = RUN_COLUMNS.split(", ").map(|c| format!("r.{c}")).collect::<Vec<_>>().join(", ");
        let latest: Vec<JobRun> = sqlx::query_as(&format!(
            "SELECT {cols} FROM job_runs r JOIN (SELECT job, MAX(id) AS id FROM job_runs GROUP BY job) m ON r.id = m.id ORDER BY r.job"
        ))
        .fetch_all(self.pool())
        .await?;
        let stats: Vec<(String, Option<i64>, i64)> = sqlx::query_as(
            "SELECT job, MAX(CASE WHEN outcome = $1 THEN finished_at END) AS ok_at, COUNT(*) AS n FROM job_runs GROUP BY job",
        )
        .bind(RunOutcome::Ok)
        .fetch_all(self.pool())
        .await?;
        let by_job: std::collections::HashMap<_, _> = stats.into_iter().map(|(job, ok_at, n)| (job, (ok_at, n))).collect();
        Ok(latest
            .into_iter()
            .map(|last_run| {
                let (last_success_at, runs) = by_job.get(&last_run.job).cloned().unwrap_or((None, 0));
                JobSummary { job: last_run.job.clone(), last_run, last_success_at, runs }
            })
            .collect())
    }

    pub async fn record_reload(&self, fired_by: &str, outcome: ReloadStatus, detail: &str) -> Result<()> {
        sqlx::query("INSERT INTO reload_events (at, fired_by, outcome, detail) VALUES ($1, $2, $3, $4)")
            .bind(now_ms())
            .bind(fired_by)
            .bind(outcome)
            .bind(detail)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Most recent first.
    pub async fn reload_events(&self, limit: i64) -> Result<Vec<ReloadEvent>> {
        Ok(sqlx::query_as("SELECT id, at, fired_by, outcome, detail FROM reload_events ORDER BY id DESC LIMIT $1")
            .bind(limit)
            .fetch_all(self.pool())
            .await?)
    }

    /// Records the running daemon's state (replacing the previous daemon's).
    pub async fn put_daemon_state(&self, st: &DaemonState) -> Result<()> {
        sqlx::query(
            "INSERT INTO daemon_state (id, pid, started_at, applied_at, http_addr, schedule) VALUES (1, $1, $2, $3, $4, $5) \
             ON CONFLICT (id) DO UPDATE SET pid = excluded.pid, started_at = excluded.started_at, \
             applied_at = excluded.applied_at, http_addr = excluded.http_addr, schedule = excluded.schedule",
        )
        .bind(st.pid)
        .bind(st.started_at)
        .bind(st.applied_at)
        .bind(st.http_addr.clone())
        .bind(&st.schedule)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The last recorded daemon state (a daemon killed without a clean stop leaves its row: check the lock).
    pub async fn daemon_state(&self) -> Result<Option<DaemonState>> {
        Ok(sqlx::query_as("SELECT pid, started_at, applied_at, http_addr, schedule FROM daemon_state WHERE id = 1")
            .fetch_optional(self.pool())
            .await?)
    }

    /// Deletes the state `pid` recorded (at its clean stop).
    pub async fn clear_daemon_state(&self, pid: i64) -> Result<()> {
        sqlx::query("DELETE FROM daemon_state WHERE pid = $1").bind(pid).execute(self.pool()).await?;
        Ok(())
    }

    pub async fn record_alert(&self, kind: &str, message: &str) -> Result<()> {
        sqlx::query("INSERT INTO ops_alerts (at, kind, message) VALUES ($1, $2, $3)")
            .bind(now_ms())
            .bind(kind)
            .bind(message)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Most recent first.
    pub async fn ops_alerts(&self, limit: i64) -> Result<Vec<OpsAlert>> {
        Ok(sqlx::query_as("SELECT id, at, kind, message FROM ops_alerts ORDER BY id DESC LIMIT $1")
            .bind(limit)
            .fetch_all(self.pool())
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn daemon_state_is_replaced_and_cleared_by_its_pid_only() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::open(&url, 2, Duration::from_secs(5)).await.unwrap();
        assert!(store.daemon_state().await.unwrap().is_none());
        let st = DaemonState { pid: 7, started_at: 1, applied_at: 2, http_addr: None, schedule: "[]".into() };
        store.put_daemon_state(&st).await.unwrap();
        let next = DaemonState { pid: 8, applied_at: 3, http_addr: Some("127.0.0.1:9".into()), schedule: "[1]".into(), ..st };
        store.put_daemon_state(&next).await.unwrap();
        let got = store.daemon_state().await.unwrap().unwrap();
        assert_eq!((got.pid, got.applied_at, got.http_addr.as_deref(), got.schedule.as_str()), (8, 3, Some("127.0.0.1:9"), "[1]"));
        store.clear_daemon_state(7).await.unwrap();
        assert!(store.daemon_state().await.unwrap().is_some(), "another pid's row is not cleared");
        store.clear_daemon_state(8).await.unwrap();
        assert!(store.daemon_state().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn run_history_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::open(&url, 2, Duration::from_secs(5)).await.unwrap();
        let a = store.start_job_run("a", "crawl", "schedule", Some(1000)).await.unwrap();
        store.finish_job_run(a, RunOutcome::Ok, Some(&serde_json::json!({"new": 3})), None).await.unwrap();
        let b = store.start_job_run("a", "crawl", "schedule", Some(2000)).await.unwrap();
        store.record_skipped_run("b", "embed", "schedule", None, "previous run still running").await.unwrap();
        assert_eq!(store.mark_runs_interrupted(None, "daemon was killed").await.unwrap(), 1);
        let runs = store.job_runs(Some("a"), 10).await.unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].id, b);
        assert_eq!(runs[0].outcome, "interrupted");
        assert_eq!(runs[1].counters.as_ref().unwrap()["new"], 3);
        assert_eq!(store.last_job_start("a").await.unwrap(), Some(2000));
        assert_eq!(store.last_job_start("zzz").await.unwrap(), None);
        let sums = store.job_summaries().await.unwrap();
        assert_eq!(sums.len(), 2);
        assert_eq!(sums[0].job, "a");
        assert_eq!(sums[0].runs, 2);
        assert!(sums[0].last_success_at.is_some());
        assert_eq!(sums[1].last_run.outcome, "skipped");
        assert_eq!(sums[1].last_success_at, None);
        store.record_reload("watch", ReloadStatus::Refused, "x.toml:3: bad").await.unwrap();
        assert_eq!(store.reload_events(5).await.unwrap()[0].outcome, "refused");
        store.record_alert("k", "m").await.unwrap();
        assert_eq!(store.ops_alerts(5).await.unwrap()[0].kind, "k");
    }
}
