//! The optional local HTTP endpoint (`daemon.http_listen`, loopback only): `/healthz` and `/metrics`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

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

/// Binds `addr` (fails at startup when it cannot) and serves until the returned task is aborted.
pub async fn serve(addr: &str, state: HttpState) -> anyhow::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("daemon.http_listen {addr}: {e}"))?;
    let local = listener.local_addr()?;
    let router = Router::new().route("/healthz", get(healthz)).route("/metrics", get(metrics)).with_state(state);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "HTTP endpoint stopped");
        }
    });
    Ok((local, task))
}

async fn healthz(State(s): State<HttpState>) -> Response {
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

async fn metrics(State(s): State<HttpState>) -> Response {
    let m = crate::metrics::global();
    // Gauges read from the database at scrape time.
    if let Ok(n) = s.app.store.count_articles().await {
        m.articles_stored.set(n);
    }
    if let Ok(n) = s.app.store.scalar_i64("SELECT COUNT(*) FROM articles WHERE page_status = 'pending'").await {
        m.pages_pending.set(n);
    }
    if let Ok(ix) = crate::index::summary(&s.app).await {
        m.index_vectors.set(ix.index_size.unwrap_or(0) as i64);
        m.embeddings_pending.set(ix.pending_embeddings.unwrap_or(0));
    }
    if let Some(h) = s.app.compute_if_started() {
        m.compute_queue_depth.set(h.queue_depth() as i64);
    }
    if let Ok(n) = crate::notify::pending_summary(&s.app).await {
        m.notifications_pending.set(n.pending);
        m.notifications_dead.set(n.dead);
    }
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        m.encode(),
    )
        .into_response()
}
