//! `newsd status`: sources with health and counts, pending work (stable JSON document).

use serde::{Deserialize, Serialize};

use crate::app::App;
use crate::schedule::JobSpec;
use crate::store::SourceHealth;

#[derive(Debug, Serialize, Deserialize)]
pub struct Status {
    pub database: String,
    pub articles: i64,
    /// Articles whose full-text page is still to be fetched.
    pub pending_pages: i64,
    pub sources: Vec<SourceHealth>,
    /// Embeddings and the vector index (None when it cannot be read).
    pub index: Option<crate::index::IndexSummary>,
    /// Notification outbox (pending, delivered, dead) and the last analysis.
    pub notifications: Option<crate::notify::PendingSummary>,
    /// Whether a daemon runs on this data directory, and since when.
    pub daemon: DaemonStatus,
    /// Scheduled jobs (and jobs with history that are no longer scheduled), by name. "Scheduled" means in the
    /// running daemon's schedule when a daemon runs, else in the schedule files.
    pub jobs: Vec<JobStatus>,
    /// Why the schedule files are invalid, when they are (with a daemon running: an edit it refused, while it
    /// keeps running the schedule in `jobs`).
    pub schedule_error: Option<String>,
    /// Every daemon (node) that has used this database: one on SQLite, several sharing a PostgreSQL database.
    #[serde(default)]
    pub nodes: Vec<NodeStatus>,
}

/// A node of the cluster as `status` and the API show it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeStatus {
    pub id: String,
    pub host: String,
    pub pid: i64,
    pub version: String,
    /// alive | dead (heartbeat older than cluster.node_timeout) | stopped (cleanly)
    pub state: String,
    pub started_at: i64,
    pub heartbeat_at: i64,
    pub stopped_at: Option<i64>,
    /// Its HTTP endpoint (API, dashboard, /metrics), when it serves one.
    pub http_addr: Option<String>,
    /// Vectors in its serving index, the change sequence number it has applied, and how many changes it is behind.
    pub index_vectors: i64,
    pub index_seq: i64,
    pub index_lag: i64,
    /// Work leases it holds (sources being crawled, articles being embedded).
    pub leases: i64,
    /// This process's node (the data directory's).
    pub this_node: bool,
}

/// The nodes recorded in the database, with their state as of now.
pub async fn nodes(app: &App) -> anyhow::Result<Vec<NodeStatus>> {
    let now = crate::store::now_ms();
    Ok(app
        .store
        .nodes()
        .await?
        .into_iter()
        .map(|n| NodeStatus {
            state: <&str>::from(crate::cluster::node_state(&n, app.config.cluster.node_timeout, now)).to_string(),
            this_node: n.id == app.node.id,
            id: n.id,
            host: n.host,
            pid: n.pid,
            version: n.version,
            started_at: n.started_at,
            heartbeat_at: n.heartbeat_at,
            stopped_at: n.stopped_at,
            http_addr: n.http_addr,
            index_vectors: n.index_vectors,
            index_seq: n.index_seq,
            index_lag: n.index_lag,
            leases: n.leases,
        })
        .collect())
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub running: bool,
    pub pid: Option<i64>,
    pub started_at: Option<i64>,
    /// When the schedule in force was applied.
    pub schedule_applied_at: Option<i64>,
    /// The address its HTTP endpoint is bound to.
    pub http_addr: Option<String>,
    /// Where `jobs` comes from: `daemon` (the schedule the daemon runs) or `files` (no daemon, or it has not
    /// recorded its schedule yet).
    pub jobs_from: String,
    /// Why the daemon's schedule could not be shown, when a daemon runs and it cannot.
    pub note: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobStatus {
    pub name: String,
    pub task: String,
    /// In the schedule in force: the running daemon's, or the files' when no daemon runs.
    pub scheduled: bool,
    pub enabled: bool,
    pub cron: Option<String>,
    pub timezone: Option<String>,
    /// Unix ms of the next fire time (enabled scheduled jobs).
    pub next_run_at: Option<i64>,
    pub last_run_at: Option<i64>,
    /// ok | failed | timeout | panicked | skipped | interrupted | running
    #[schema(value_type = Option<String>)]
    pub last_outcome: Option<crate::store::RunOutcome>,
    pub last_error: Option<String>,
    pub last_success_at: Option<i64>,
    pub runs: i64,
}

/// The running daemon (by its lock) and the schedule it recorded, if it did.
async fn daemon(app: &App) -> anyhow::Result<(DaemonStatus, Option<Vec<JobSpec>>)> {
    let mut d = DaemonStatus {
        running: false,
        pid: None,
        started_at: None,
        schedule_applied_at: None,
        http_addr: None,
        jobs_from: "files".into(),
        note: None,
    };
    let Some(holder) = crate::daemon::lock::holder(&app.config.data_dir())? else { return Ok((d, None)) };
    d.running = true;
    d.pid = holder.parse().ok();
    let state = app.store.daemon_state(&app.node.id).await?;
    let Some(st) = state.filter(|st| d.pid.is_none_or(|p| p == st.pid)) else {
        d.note = Some("the daemon has not recorded its schedule yet (starting?); jobs are read from the files".into());
        return Ok((d, None));
    };
    d.pid = Some(st.pid);
    d.started_at = Some(st.started_at);
    d.schedule_applied_at = Some(st.applied_at);
    d.http_addr = st.http_addr.clone();
    match serde_json::from_str::<Vec<JobSpec>>(&st.schedule) {
        Ok(jobs) => {
            d.jobs_from = "daemon".into();
            Ok((d, Some(jobs)))
        }
        Err(e) => {
            d.note = Some(format!("the daemon's recorded schedule cannot be read by this newsd ({e}); jobs are read from the files"));
            Ok((d, None))
        }
    }
}

async fn jobs(app: &App, running: Option<Vec<JobSpec>>) -> anyhow::Result<(Vec<JobStatus>, Option<String>)> {
    let now = chrono::Utc::now();
    let (files, error) = match crate::schedule::load_dir(&app.config.schedules_dir(), Some(&app.config)) {
        Ok(set) => (set.jobs.into_values().collect(), None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    let set: Vec<JobSpec> = running.unwrap_or(files);
    let mut history: std::collections::HashMap<String, crate::store::JobSummary> =
        app.store.job_summaries().await?.into_iter().map(|s| (s.job.clone(), s)).collect();
    let mut out = Vec::new();
    for j in &set {
        let h = history.remove(&j.name);
        out.push(JobStatus {
            name: j.name.clone(),
            task: j.task.name().to_string(),
            scheduled: true,
            enabled: j.enabled,
            cron: Some(j.cron.clone()),
            timezone: Some(j.timezone.name().to_string()),
            next_run_at: if j.enabled { j.next_fires(now, 1).first().map(|t| t.timestamp_millis()) } else { None },
            last_run_at: h.as_ref().map(|h| h.last_run.started_at),
            last_outcome: h.as_ref().map(|h| h.last_run.outcome),
            last_error: h.as_ref().and_then(|h| h.last_run.error.clone()),
            last_success_at: h.as_ref().and_then(|h| h.last_success_at),
            runs: h.as_ref().map(|h| h.runs).unwrap_or(0),
        });
    }
    let mut gone: Vec<_> = history.into_values().collect();
    gone.sort_by(|a, b| a.job.cmp(&b.job));
    for h in gone {
        out.push(JobStatus {
            name: h.job.clone(),
            task: h.last_run.task.clone(),
            scheduled: false,
            enabled: false,
            cron: None,
            timezone: None,
            next_run_at: None,
            last_run_at: Some(h.last_run.started_at),
            last_outcome: Some(h.last_run.outcome),
            last_error: h.last_run.error.clone(),
            last_success_at: h.last_success_at,
            runs: h.runs,
        });
    }
    Ok((out, error))
}

/// The jobs part of [`collect`] alone (the API's /api/jobs), and the schedule files' error if any.
pub async fn job_statuses(app: &App) -> anyhow::Result<(Vec<JobStatus>, Option<String>)> {
    let (_, running) = daemon(app).await?;
    jobs(app, running).await
}

pub async fn collect(app: &App) -> anyhow::Result<Status> {
    let store = &app.store;
    // Make configured sources visible even before their first crawl.
    store.sync_sources(&app.config.sources).await?;
    let names: Vec<String> = app.config.sources.iter().map(|s| s.name.clone()).collect();
    let (daemon, running) = daemon(app).await?;
    let (jobs, schedule_error) = jobs(app, running).await?;
    Ok(Status {
        database: crate::store::redact(store.url()),
        articles: store.count_articles().await?,
        pending_pages: store.count_all_pending_pages().await?,
        // Feed URLs may carry keys in their query: shown without it (and without credentials).
        sources: store
            .source_health(&names)
            .await?
            .into_iter()
            .map(|mut s| {
                s.url = crate::net::public_url(&s.url);
                s
            })
            .collect(),
        index: crate::index::summary(app).await.ok(),
        notifications: crate::notify::pending_summary(app).await.ok(),
        daemon,
        jobs,
        schedule_error,
        nodes: nodes(app).await?,
    })
}

pub fn print_human(s: &Status) {
    println!("database: {}", s.database);
    println!("articles: {} ({} pages pending)", s.articles, s.pending_pages);
    if let Some(ix) = &s.index {
        println!(
            "index: {} vectors ({}), model {}{}; {} articles to embed{}",
            ix.index_size.map(|n| n.to_string()).unwrap_or_else(|| "no saved".into()),
            ix.kind,
            ix.model_version.as_deref().unwrap_or("none"),
            ix.target_version.as_deref().map(|t| format!(" (re-embedding for {t})")).unwrap_or_default(),
            ix.pending_embeddings.map(|n| n.to_string()).unwrap_or_else(|| "?".into()),
            ix.model_error.as_deref().map(|e| format!("; model: {e}")).unwrap_or_default()
        );
    }
    if let Some(n) = &s.notifications {
        println!("notifications: {} pending, {} delivered, {} dead-lettered", n.pending, n.delivered, n.dead);
        if let Some(a) = &n.last_analysis {
            println!("last analysis: #{} profile {} at {} ({})", a.id, a.profile, fmt_ms(a.created_at), a.mode);
        }
    }
    println!("sources:");
    for src in &s.sources {
        let last = src.last_success_at.map(fmt_ms).unwrap_or_else(|| "never".into());
        let health = if src.healthy { "ok".to_string() } else { format!("FAILING x{}", src.consecutive_failures) };
        println!("  {:<24} {:>6} articles  {:<12} last ok {}", src.name, src.articles, health, last);
        if let (false, Some(e)) = (src.healthy, &src.last_error) {
            println!("  {:<24} error: {e}", "");
        }
    }
    let d = &s.daemon;
    match (d.running, d.jobs_from.as_str()) {
        (false, _) => println!("daemon: not running (jobs as the schedule files define them)"),
        (true, "daemon") => println!(
            "daemon: running, pid {}, since {}; schedule applied {}{}",
            d.pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into()),
            d.started_at.map(fmt_ms).unwrap_or_default(),
            d.schedule_applied_at.map(fmt_ms).unwrap_or_default(),
            d.http_addr.as_deref().map(|a| format!("; HTTP on {a}")).unwrap_or_default()
        ),
        (true, _) => println!("daemon: running, pid {}; {}", d.pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into()), d.note.as_deref().unwrap_or("")),
    }
    if s.nodes.len() > 1 || s.nodes.iter().any(|n| !n.this_node) {
        println!("nodes:");
        for n in &s.nodes {
            println!(
                "  {:<28} {:<8} {:<16} pid {:<8} heartbeat {}  index {} vectors, {} behind  {} leases{}",
                n.id,
                n.state,
                n.host,
                n.pid,
                fmt_ms(n.heartbeat_at),
                n.index_vectors,
                n.index_lag,
                n.leases,
                if n.this_node { "  (this data directory)" } else { "" }
            );
        }
    }
    println!("jobs:");
    if let Some(e) = &s.schedule_error {
        if d.jobs_from == "daemon" {
            println!("  schedule files invalid (the edit was refused; the daemon runs the jobs below): {e}");
        } else {
            println!("  schedule files invalid: {e}");
        }
    }
    for j in &s.jobs {
        let next = match (j.scheduled, j.enabled, j.next_run_at) {
            (false, _, _) => "not scheduled".to_string(),
            (true, false, _) => "disabled".to_string(),
            (true, true, t) => format!("next {}", t.map(fmt_ms).unwrap_or_else(|| "never".into())),
        };
        let last = match (&j.last_outcome, j.last_run_at) {
            (Some(o), Some(t)) => format!("last {} {o}", fmt_ms(t)),
            _ => "never run".to_string(),
        };
        println!("  {:<24} {:<8} {:<32} {:<34} {} runs", j.name, j.task, next, last, j.runs);
        if let (Some(e), Some(o)) = (&j.last_error, &j.last_outcome) {
            if *o != crate::store::RunOutcome::Ok {
                println!("  {:<24} error: {e}", "");
            }
        }
    }
}

pub fn fmt_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map(|d| d.format("%Y-%m-%d %H:%M:%SZ").to_string()).unwrap_or_default()
}
