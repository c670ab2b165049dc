//! The HTTP endpoint (`daemon.http_listen`): `/healthz` and `/metrics` here, the API and the dashboard from
//! [`crate::api`].
//!
//! A scrape of `/metrics` is cheap: it encodes what is in memory. The gauges that need the database or the model and
//! index files (articles stored, pages and embeddings pending, index size, outbox) are refreshed at most every
//! [`GAUGE_TTL`], in a task of their own that a scrape finding them stale starts (it answers with the values it has);
//! only the first scrape, with nothing to show yet, waits for them (at most [`GAUGE_REFRESH_LIMIT`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::app::App;

#[derive(Clone)]
pub struct HttpState {
    pub app: App,
    /// The schedule is applied and the daemon is not stopping.
    pub ready: Arc<AtomicBool>,
    pub started_at: std::time::Instant,
}

/// How long the database-backed gauges are served before a scrape starts refreshing them.
pub const GAUGE_TTL: Duration = Duration::from_secs(15);
/// The longest one refresh of those gauges may take (a busy database does not pile refreshes up).
pub const GAUGE_REFRESH_LIMIT: Duration = Duration::from_secs(10);

/// When the database-backed gauges were last refreshed (None: never). Held while a refresh runs, so there is at
/// most one at a time.
type GaugeCache = Arc<tokio::sync::Mutex<Option<Instant>>>;

#[derive(Clone)]
struct Ctx {
    http: HttpState,
    gauges: GaugeCache,
    /// The gauges have been refreshed once.
    filled: Arc<AtomicBool>,
}

/// Binds `addr` (fails at startup when it cannot) and serves until the returned task is aborted.
pub async fn serve(
    addr: &str,
    state: HttpState,
    api: Option<crate::api::ApiState>,
) -> anyhow::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("daemon.http_listen {addr}: {e}"))?;
    let local = listener.local_addr()?;
    let ctx = Ctx { http: state, gauges: Arc::new(tokio::sync::Mutex::new(None)), filled: Arc::new(AtomicBool::new(false)) };
    let mut router = Router::new().route("/healthz", get(healthz)).route("/metrics", get(metrics)).with_state(ctx);
    if let Some(api) = api {
        router = router.merge(crate::api::router(api));
    }
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "HTTP endpoint stopped");
        }
    });
    Ok((local, task))
}

async fn healthz(State(Ctx { http: s, .. }): State<Ctx>) -> Response {
    let ready = s.ready.load(Ordering::SeqCst);
    let jobs = match s.app.store.job_summaries().await {
        Ok(sums) => sums
            .into_iter()
            .map(|j| {
                serde_json::json!({
                    "job": j.job,
                    "last_outcome": j.last_run.outcome,
                    "last_run_at": j.last_run.started_at,
                    "last_success_at": j.last_success_at,
                })
            })
            .collect::<Vec<_>>(),
        Err(e) => {
            let body = serde_json::json!({ "ready": false, "error": format!("database: {e}") });
            return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
        }
    };
    let body = serde_json::json!({
        "ready": ready,
        "uptime_seconds": s.started_at.elapsed().as_secs(),
        "jobs_running": crate::metrics::global().jobs_running.get(),
        "jobs": jobs,
    });
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, axum::Json(body)).into_response()
}

async fn metrics(State(ctx): State<Ctx>) -> Response {
    let m = crate::metrics::global();
    let cache = ctx.gauges.clone();
    match cache.try_lock_owned() {
        // Never refreshed: this first scrape waits for the values (a concurrent one waits on the lock below).
        Ok(mut last) if last.is_none() => {
            refresh_gauges(&ctx.http.app).await;
            *last = Some(Instant::now());
            ctx.filled.store(true, Ordering::SeqCst);
        }
        // Stale: refresh in the background; this scrape answers with the values it has.
        Ok(mut last) if last.is_some_and(|t| t.elapsed() >= GAUGE_TTL) => {
            let app = ctx.http.app.clone();
            tokio::spawn(async move {
                refresh_gauges(&app).await;
                *last = Some(Instant::now());
            });
        }
        Ok(_) => {}
        // A refresh is running: only the very first values are worth waiting for.
        Err(_) if !ctx.filled.load(Ordering::SeqCst) => {
            let _ = tokio::time::timeout(GAUGE_REFRESH_LIMIT, ctx.gauges.lock()).await;
        }
        Err(_) => {}
    }
    // In memory: read at every scrape.
    if let Some(h) = ctx.http.app.compute_if_started() {
        m.compute_queue_depth.set(h.queue_depth() as i64);
    }
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        m.encode(),
    )
        .into_response()
}

/// Sets the gauges read from the database and the index (a failed read keeps a gauge's previous value), within
/// [`GAUGE_REFRESH_LIMIT`].
async fn refresh_gauges(app: &App) {
    let m = crate::metrics::global();
    let work = async {
        if let Ok(n) = app.store.count_articles().await {
            m.articles_stored.set(n);
        }
        if let Ok(n) = app.store.count_all_pending_pages().await {
            m.pages_pending.set(n);
        }
        if let Ok(ix) = crate::index::summary(app).await {
            m.index_vectors.set(ix.index_size.unwrap_or(0) as i64);
            m.embeddings_pending.set(ix.pending_embeddings.unwrap_or(0));
        }
        if let Ok(c) = app.store.outbox_counts().await {
            m.notifications_pending.set(c.pending);
            m.notifications_dead.set(c.dead);
        }
    };
    if tokio::time::timeout(GAUGE_REFRESH_LIMIT, work).await.is_err() {
        tracing::warn!(limit_s = GAUGE_REFRESH_LIMIT.as_secs(), "refreshing the database gauges of /metrics timed out");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NewNotification;

    fn note(key: &str) -> NewNotification {
        NewNotification {
            category: "test".into(),
            target: "t".into(),
            kind: "webhook".into(),
            part: 1,
            parts: 1,
            idempotency_key: key.into(),
            payload: "{}".into(),
        }
    }

    /// The database gauges are read once for the first scrape, then served from memory until they are stale.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scrapes_serve_cached_database_gauges() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = crate::config::Config::default();
        config.data_dir = dir.path().to_path_buf();
        let app = App::open(config).await.unwrap();
        app.store.enqueue_notifications(&[note("a"), note("b")], 0).await.unwrap();
        let state = HttpState { app: app.clone(), ready: Arc::new(AtomicBool::new(true)), started_at: Instant::now() };
        let (addr, task) = serve("127.0.0.1:0", state, None).await.unwrap();
        let scrape = || async { reqwest::get(format!("http://{addr}/metrics")).await.unwrap().text().await.unwrap() };
        let first = scrape().await;
        assert!(first.contains("newsd_notifications_pending 2"), "{first}");
        assert!(first.contains("newsd_articles_stored 0"), "{first}");
        // A change within the TTL is not read by the next scrapes (no query per scrape).
        app.store.enqueue_notifications(&[note("c")], 0).await.unwrap();
        for _ in 0..3 {
            let again = scrape().await;
            assert!(again.contains("newsd_notifications_pending 2"), "{again}");
        }
        task.abort();
    }
}
