//! The HTTP API (`/api/...`, JSON, OpenAPI at `/api/openapi.json`) and the web dashboard (`/`), served by
//! `newsd run` on `daemon.http_listen` beside `/healthz` and `/metrics`.
//!
//! - Every model or index request (search, "similar articles") goes through the one compute worker's bounded
//!   queue without waiting for room: a full queue answers 503 with Retry-After (counted in /metrics), so callers
//!   see backpressure instead of piling up.
//! - Auth: with an admin token (`daemon.api_token_env`, default `NEWSD_API_TOKEN`) or a read-only one
//!   (`daemon.api_read_token_env`) set, every request presents one (`Authorization: Bearer ...`, or the cookie the
//!   dashboard's login sets); the read-only token may only GET. Without tokens only a loopback address may be
//!   bound (the daemon refuses to start otherwise).
//! - POSTs from another site are refused (`Origin` not this host, or `Sec-Fetch-Site: cross-site`), and the
//!   dashboard's forms carry a CSRF token on top.
//! - Each request has a time limit (`daemon.api_timeout`) and a body limit ([`MAX_BODY`]); `k` is capped ([`MAX_K`]).
//! - News text is untrusted: the dashboard's templates escape everything (minijinja auto-escaping); no secret
//!   (webhook URLs, API keys, the database password, feed URL credentials) is in any answer.
//!
//! Layout: `routes` (the JSON endpoints and the OpenAPI document), `dashboard` (the HTML pages), `auth`, `error`,
//! `client` (the CLI talking to a running daemon). The daemon plugs its scheduler in through [`Control`].

mod auth;
pub mod client;
mod dashboard;
mod error;
mod routes;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures::future::BoxFuture;

use crate::app::App;
use crate::schedule::fire::{FireAccepted, RunEnd};
use crate::schedule::JobSpec;
pub use auth::Auth;
pub use error::ApiError;
pub use routes::ApiDoc;

/// Largest request body accepted (the API takes its parameters in the query; forms are small).
pub const MAX_BODY: usize = 64 * 1024;
/// An oversized body up to this size is read and dropped before the 413 (see `check`).
const DRAIN_LIMIT: usize = 1024 * 1024;
/// Largest `k` (results) a search may ask for.
pub const MAX_K: usize = 100;
/// Largest page of articles or analyses.
pub const MAX_LIMIT: i64 = 200;

/// What the API may ask of the running daemon's scheduler (implemented by the daemon; absent until it is up).
pub trait Control: Send + Sync + 'static {
    /// Fires the job now through its overlap policy ("run now"); None when no such job is in the schedule.
    fn run_job<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Option<(FireAccepted, tokio::sync::oneshot::Receiver<RunEnd>)>>;
    /// Runs an analysis of `profile` as a job: the schedule's analyze job for that profile when there is one, else
    /// a one-off job `analyze:<profile>`. Returns the job's name.
    fn analyze(&self, profile: Option<String>) -> BoxFuture<'_, (String, FireAccepted, tokio::sync::oneshot::Receiver<RunEnd>)>;
    /// The schedule in force.
    fn schedule(&self) -> BoxFuture<'_, Vec<JobSpec>>;
}

#[derive(Clone)]
pub struct ApiState {
    pub app: App,
    /// Set by the daemon once its scheduler runs.
    pub control: Arc<OnceLock<Arc<dyn Control>>>,
    pub auth: Arc<Auth>,
    /// The dashboard forms' CSRF token (random per process: another site cannot read it from our pages).
    csrf: Arc<str>,
    templates: Arc<minijinja::Environment<'static>>,
}

impl ApiState {
    pub fn new(app: App, auth: Auth) -> ApiState {
        ApiState {
            app,
            control: Arc::new(OnceLock::new()),
            auth: Arc::new(auth),
            csrf: Arc::from(uuid::Uuid::new_v4().simple().to_string()),
            templates: Arc::new(dashboard::templates()),
        }
    }

    fn control(&self) -> Result<Arc<dyn Control>, ApiError> {
        self.control.get().cloned().ok_or_else(|| {
            ApiError { retry_after: Some(2), ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "starting", "the daemon is still starting") }
        })
    }
}

/// The API and dashboard routes with their guards (auth, cross-site POSTs, body size, time limit, metrics).
pub fn router(state: ApiState) -> Router {
    let timeout = state.app.config.daemon.api_timeout;
    routes::router()
        .merge(dashboard::router())
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(move |req: Request, next: Next| time_limit(timeout, req, next)))
        .with_state(state)
}

async fn time_limit(limit: Duration, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!("the request took longer than daemon.api_timeout ({})", humantime::format_duration(limit)),
        )
        .into_response(),
    }
}

/// Per request, after routing: body size, cross-site POSTs, tokens; then counts the answer by route and status.
async fn guard(State(st): State<ApiState>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| "other".into());
    let resp = match check(&st, req).await {
        Ok(req) => next.run(req).await,
        Err(resp) => resp,
    };
    crate::metrics::global()
        .api_requests
        .get_or_create(&crate::metrics::labels(&[("route", &route), ("status", resp.status().as_str())]))
        .inc();
    resp
}

async fn check(st: &ApiState, req: Request) -> Result<Request, Response> {
    let is_api = req.uri().path().starts_with("/api/");
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared.filter(|n| *n > MAX_BODY as u64) {
        // Read (and drop) a moderately oversized body before answering, so the client reads our 413 instead of a
        // connection reset; a huge one is not worth reading.
        if n <= DRAIN_LIMIT as u64 {
            let _ = axum::body::to_bytes(req.into_body(), DRAIN_LIMIT).await;
        }
        return Err(too_large());
    }
    let writes = req.method() != Method::GET && req.method() != Method::HEAD;
    if writes {
        if let Some(why) = cross_site(&req) {
            return Err(ApiError::new(StatusCode::FORBIDDEN, "cross_site", why).into_response());
        }
    }
    // A body without a length (chunked) is read here within the limit, so no handler sees more.
    let req = if writes && declared.is_none() {
        use futures::StreamExt;
        let (parts, body) = req.into_parts();
        let mut stream = body.into_data_stream();
        let mut kept = Vec::new();
        let mut seen = 0usize;
        while let Some(chunk) = stream.next().await {
            let Ok(chunk) = chunk else { return Err(too_large()) };
            seen += chunk.len();
            if seen <= MAX_BODY {
                kept.extend_from_slice(&chunk);
            } else if seen > DRAIN_LIMIT {
                break;
            }
        }
        if seen > MAX_BODY {
            return Err(too_large());
        }
        Request::from_parts(parts, axum::body::Body::from(kept))
    } else {
        req
    };
    if req.uri().path() == "/login" {
        return Ok(req);
    }
    match st.auth.check(req.headers(), writes) {
        auth::Verdict::Allowed => Ok(req),
        auth::Verdict::Missing if !is_api => Err(axum::response::Redirect::to("/login").into_response()),
        auth::Verdict::Missing => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "an API token is required: Authorization: Bearer <token>",
        )
        .into_response()),
        auth::Verdict::ReadOnly => {
            Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "this token is read-only; this request needs the admin token").into_response())
        }
    }
}

fn too_large() -> Response {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", format!("request bodies are limited to {MAX_BODY} bytes"))
        .into_response()
}

/// Why a state-changing request looks like it comes from another site (a page the user visits posting to the
/// daemon on their machine), if it does.
fn cross_site(req: &Request) -> Option<String> {
    let h = req.headers();
    if let Some(site) = h.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if site == "cross-site" || site == "same-site" {
            return Some(format!("refused: a {site} request (Sec-Fetch-Site) may not change anything here"));
        }
    }
    let origin = h.get(header::ORIGIN).and_then(|v| v.to_str().ok())?;
    if origin == "null" {
        return Some("refused: a request from an opaque origin".into());
    }
    let host = h.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    let origin_host = url::Url::parse(origin).ok().map(|u| match u.port() {
        Some(p) => format!("{}:{p}", u.host_str().unwrap_or("")),
        None => u.host_str().unwrap_or("").to_string(),
    });
    if origin_host.as_deref() != Some(host) {
        return Some(format!("refused: Origin {origin} is not this server ({host})"));
    }
    None
}

pub use crate::net::public_url;

/// `since` as an age ("7d", "12h") or a time (RFC 3339, or YYYY-MM-DD as UTC midnight): unix ms.
pub fn parse_since(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(crate::store::now_ms() - d.as_millis() as i64);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).map(|t| t.and_utc().timestamp_millis()).unwrap_or(0));
    }
    Err(format!("since {s:?}: expected an age (7d, 12h) or a time (RFC 3339 or YYYY-MM-DD)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_urls_lose_credentials_and_queries() {
        assert_eq!(public_url("https://user:pw@example.com/feed.xml?key=SECRET#x"), "https://example.com/feed.xml?…");
        assert_eq!(public_url("https://example.com/rss"), "https://example.com/rss");
        assert!(!public_url("https://hooks.slack.com/services/T0/B0/XYZ?token=abc").contains("abc"));
    }

    #[test]
    fn since_takes_ages_times_and_dates() {
        let now = crate::store::now_ms();
        let d = parse_since("7d").unwrap();
        assert!((now - 7 * 86_400_000 - d).abs() < 5_000);
        assert_eq!(parse_since("2025-03-10").unwrap(), 1_741_564_800_000);
        assert_eq!(parse_since("2025-03-10T09:00:00+09:00").unwrap(), 1_741_564_800_000);
        assert!(parse_since("yesterday-ish").unwrap_err().contains("since"));
    }
}
