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
    /// The node that ran it (None: recorded before nodes existed).
    pub node: Option<String>,
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

/// A running daemon's schedule in force (a JSON list of jobs), from its row of `nodes`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct DaemonState {
    pub node: String,
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

const RUN_COLUMNS: &str = "id, job, task, fired_by, node, scheduled_at, started_at, finished_at, outcome, counters, error";

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
            node: row.try_get("node")?,
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
    pub async fn start_job_run(&self, job: &str, task: &str, fired_by: &str, node: &str, scheduled_at: Option<i64>) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "INSERT INTO job_runs (job, task, fired_by, scheduled_at, started_at, outcome, node) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(job)
        .bind(task)
        .bind(fired_by)
        .bind(scheduled_at)
        .bind(now_ms())
        .bind(RunOutcome::Running)
        .bind(node)
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
    pub async fn record_skipped_run(&self, job: &str, task: &str, fired_by: &str, node: &str, scheduled_at: Option<i64>, reason: &str) -> Result<()> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO job_runs (job, task, fired_by, scheduled_at, started_at, finished_at, outcome, error, node) \
             VALUES ($1, $2, $3, $4, $5, $5, $7, $6, $8)",
        )
        .bind(job)
        .bind(task)
        .bind(fired_by)
        .bind(scheduled_at)
        .bind(now)
        .bind(reason)
        .bind(RunOutcome::Skipped)
        .bind(node)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Marks these runs, if still `running`, as `interrupted` (after the shutdown grace period ran out; at start,
    /// see [`Store::interrupt_orphaned_runs`]). Returns how many rows changed.
    pub async fn mark_runs_interrupted(&self, ids: &[i64], reason: &str) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let sql = format!(
            "UPDATE job_runs SET outcome = $3, finished_at = $1, error = $2 WHERE {RUNNING} AND id IN ({})",
            super::placeholders(4, ids.len())
        );
        let mut q = sqlx::query(&sql).bind(now_ms()).bind(reason).bind(RunOutcome::Interrupted);
        for id in ids {
            q = q.bind(*id);
        }
        Ok(q.execute(self.pool()).await?.rows_affected())
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

    /// Records the schedule a node has in force (its row exists: [`Store::register_node`]).
    pub async fn put_daemon_state(&self, st: &DaemonState) -> Result<()> {
        sqlx::query("UPDATE nodes SET applied_at = $2, http_addr = $3, schedule = $4 WHERE id = $1 AND pid = $5")
            .bind(&st.node)
            .bind(st.applied_at)
            .bind(st.http_addr.clone())
            .bind(&st.schedule)
            .bind(st.pid)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// The schedule a node's running daemon recorded (None once it stopped cleanly; a daemon killed without a clean
    /// stop leaves its row: check the lock or the heartbeat).
    pub async fn daemon_state(&self, node: &str) -> Result<Option<DaemonState>> {
        Ok(sqlx::query_as(
            "SELECT id AS node, pid, started_at, applied_at, http_addr, schedule FROM nodes \
             WHERE id = $1 AND stopped_at IS NULL AND schedule IS NOT NULL AND applied_at IS NOT NULL",
        )
        .bind(node)
        .fetch_optional(self.pool())
        .await?)
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
    async fn daemon_state_is_per_node_and_cleared_at_a_clean_stop_of_its_pid_only() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::open(&url, 2, Duration::from_secs(5)).await.unwrap();
        assert!(store.daemon_state("a").await.unwrap().is_none());
        store.register_node("a", "h", 7, "0.1").await.unwrap();
        store.register_node("b", "h", 9, "0.1").await.unwrap();
        assert!(store.daemon_state("a").await.unwrap().is_none(), "no schedule recorded yet");
        let st = DaemonState { node: "a".into(), pid: 7, started_at: 1, applied_at: 2, http_addr: None, schedule: "[]".into() };
        store.put_daemon_state(&st).await.unwrap();
        let next = DaemonState { applied_at: 3, http_addr: Some("127.0.0.1:9".into()), schedule: "[1]".into(), ..st.clone() };
        store.put_daemon_state(&next).await.unwrap();
        let got = store.daemon_state("a").await.unwrap().unwrap();
        assert_eq!((got.pid, got.applied_at, got.http_addr.as_deref(), got.schedule.as_str()), (7, 3, Some("127.0.0.1:9"), "[1]"));
        assert!(store.daemon_state("b").await.unwrap().is_none(), "another node's state is its own");
        store.stop_node("a", 8).await.unwrap();
        assert!(store.daemon_state("a").await.unwrap().is_some(), "another pid's stop does not clear it");
        store.stop_node("a", 7).await.unwrap();
        assert!(store.daemon_state("a").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn run_history_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::open(&url, 2, Duration::from_secs(5)).await.unwrap();
        store.register_node("n1", "h", 1, "0.1").await.unwrap();
        let a = store.start_job_run("a", "crawl", "schedule", "n1", Some(1000)).await.unwrap();
        store.finish_job_run(a, RunOutcome::Ok, Some(&serde_json::json!({"new": 3})), None).await.unwrap();
        let b = store.start_job_run("a", "crawl", "schedule", "n1", Some(2000)).await.unwrap();
        store.record_skipped_run("b", "embed", "schedule", "n1", None, "previous run still running").await.unwrap();
        assert_eq!(store.interrupt_runs_at_start("n1", 0, "daemon was killed").await.unwrap(), 1);
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
