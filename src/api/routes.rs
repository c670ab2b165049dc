//! The JSON endpoints and their OpenAPI document (generated from these types and annotations by utoipa).

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use super::{parse_since, public_url, ApiError, ApiState, MAX_K, MAX_LIMIT};
use crate::index::{SearchParams, SearchReport, SearchResult};
use crate::schedule::fire::FireAccepted;
use crate::store::{AnalysisRow, ArticleFilter, ArticleRow, JobRun, NotificationRow};

pub(super) fn router() -> Router<ApiState> {
    Router::new()
        .route("/api/openapi.json", get(openapi))
        .route("/api/search", get(search))
        .route("/api/articles", get(articles))
        .route("/api/articles/{id}", get(article))
        .route("/api/analyses", get(analyses))
        .route("/api/analyses/latest", get(latest_analysis))
        .route("/api/analyses/{id}", get(analysis))
        .route("/api/sources", get(sources))
        .route("/api/jobs", get(jobs))
        .route("/api/jobs/{name}/runs", get(job_runs))
        .route("/api/jobs/{name}/run", post(run_job))
        .route("/api/analyze", post(analyze))
        .route("/api/status", get(status))
        .route("/api/nodes", get(nodes))
        .fallback(not_found)
}

#[derive(OpenApi)]
#[openapi(
    info(title = "newsd API", description = "Ask the running newsd daemon: search, articles, analyses, sources, jobs. \
        Model and index work goes through the daemon's one compute worker; a full queue answers 503 with Retry-After."),
    paths(search, articles, article, analyses, latest_analysis, analysis, sources, jobs, job_runs, run_job, analyze, status, nodes),
    components(schemas(SearchReport, SearchResult, ArticleList, ArticleOut, ArticleDetail, StoryOut, AnalysisList,
        AnalysisSummary, AnalysisDetail, NotificationOut, SourceOut, JobList, crate::status::JobStatus, RunList, RunOut,
        RunStarted, AnalyzeAnswer, FireAccepted, ErrorBody, ErrorDetail, crate::status::NodeStatus))
)]
pub struct ApiDoc;

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no such endpoint: {}", uri.path()))
}

/// The error answer of every endpoint.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// bad_request, not_found, unauthorized, forbidden, cross_site, body_too_large, busy, unavailable, timeout, ...
    pub code: String,
    pub message: String,
}

/// A page size: `default` when absent, else 1 to [`MAX_LIMIT`].
fn page_limit(limit: Option<i64>, default: i64) -> Result<i64, ApiError> {
    let limit = limit.unwrap_or(default);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(format!("limit must be between 1 and {MAX_LIMIT}, not {limit}")));
    }
    Ok(limit)
}

fn query_error(e: axum::extract::rejection::QueryRejection) -> ApiError {
    ApiError::bad_request(e.body_text())
}

// ---------------------------------------------------------------------------------------------------- search

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// The query text.
    q: Option<String>,
    /// Results (1 to 100, default 10).
    k: Option<usize>,
    /// Only articles published since: an age (7d, 12h) or a time (RFC 3339, YYYY-MM-DD).
    since: Option<String>,
    /// Only articles of this source.
    source: Option<String>,
}

/// Semantic search (the query is embedded by the compute worker).
#[utoipa::path(get, path = "/api/search", params(SearchQuery), responses(
    (status = 200, body = SearchReport), (status = 400, body = ErrorBody),
    (status = 503, description = "the compute queue is full (Retry-After)", body = ErrorBody)))]
async fn search(State(st): State<ApiState>, q: Result<Query<SearchQuery>, axum::extract::rejection::QueryRejection>) -> Result<Json<SearchReport>, ApiError> {
    let Query(q) = q.map_err(query_error)?;
    let text = q.q.as_deref().map(str::trim).unwrap_or("");
    if text.is_empty() {
        return Err(ApiError::bad_request("q (the query text) is required"));
    }
    if text.chars().count() > 2000 {
        return Err(ApiError::bad_request("q is limited to 2000 characters"));
    }
    let params = search_params(text, q.k, q.since.as_deref(), q.source.as_deref())?;
    Ok(Json(crate::index::search_with(&st.app, &params).await?))
}

pub(super) fn search_params(text: &str, k: Option<usize>, since: Option<&str>, source: Option<&str>) -> Result<SearchParams, ApiError> {
    let k = k.unwrap_or(10);
    if k == 0 || k > MAX_K {
        return Err(ApiError::bad_request(format!("k must be between 1 and {MAX_K}, not {k}")));
    }
    let since_ms = since.filter(|s| !s.trim().is_empty()).map(parse_since).transpose().map_err(ApiError::bad_request)?;
    Ok(SearchParams {
        query: text.to_string(),
        k,
        since_ms,
        source: source.map(str::trim).filter(|s| !s.is_empty()).map(str::to_string),
        no_wait: true,
    })
}

// ---------------------------------------------------------------------------------------------------- articles

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ArticlesQuery {
    /// Only this source.
    source: Option<String>,
    /// Only articles published since: an age (7d) or a time.
    since: Option<String>,
    /// Only titles containing this text (case-insensitive).
    q: Option<String>,
    /// Older than this article id (paging).
    before: Option<i64>,
    /// Page size (1 to 200, default 50).
    limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct ArticleOut {
    pub id: i64,
    pub source: String,
    pub title: String,
    pub url: String,
    /// Unix ms; null when the article has no date.
    pub published_at: Option<i64>,
    pub fetched_at: i64,
    pub language: Option<String>,
    /// pending | ok | failed | feed_only ...
    pub page_status: String,
    /// The body (only in /api/articles/{id}).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

impl ArticleOut {
    pub(super) fn from_row(a: ArticleRow, with_body: bool) -> ArticleOut {
        ArticleOut {
            id: a.id,
            source: a.source,
            title: a.title,
            url: a.url,
            published_at: a.published_at,
            fetched_at: a.fetched_at,
            language: a.language,
            page_status: a.page_status.as_str().to_string(),
            body: with_body.then_some(a.body),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ArticleList {
    pub articles: Vec<ArticleOut>,
    /// Pass as `before` for the next page (null on the last page).
    pub next_before: Option<i64>,
}

#[utoipa::path(get, path = "/api/articles", params(ArticlesQuery), responses((status = 200, body = ArticleList), (status = 400, body = ErrorBody)))]
async fn articles(State(st): State<ApiState>, q: Result<Query<ArticlesQuery>, axum::extract::rejection::QueryRejection>) -> Result<Json<ArticleList>, ApiError> {
    let Query(q) = q.map_err(query_error)?;
    let limit = page_limit(q.limit, 50)?;
    let filter = ArticleFilter {
        source: q.source.filter(|s| !s.is_empty()),
        since_ms: q.since.as_deref().filter(|s| !s.trim().is_empty()).map(parse_since).transpose().map_err(ApiError::bad_request)?,
        title_contains: q.q.filter(|s| !s.trim().is_empty()),
        before_id: q.before,
        limit,
    };
    let rows = st.app.store.list_articles(&filter).await?;
    let next_before = if rows.len() as i64 == limit { rows.last().map(|a| a.id) } else { None };
    Ok(Json(ArticleList { articles: rows.into_iter().map(|a| ArticleOut::from_row(a, false)).collect(), next_before }))
}

/// The story an article was part of, in the latest analysis that included it.
#[derive(Serialize, ToSchema)]
pub struct StoryOut {
    pub analysis_id: i64,
    pub profile: String,
    pub headline: String,
    pub rank: usize,
    pub status: String,
    /// The story's articles (ids).
    pub article_ids: Vec<i64>,
    pub tags: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ArticleDetail {
    pub article: ArticleOut,
    pub story: Option<StoryOut>,
    /// Nearest articles by the stored vector (empty until the article is embedded).
    pub similar: Vec<SearchResult>,
}

pub(super) async fn article_detail(st: &ApiState, id: i64) -> Result<ArticleDetail, ApiError> {
    let row = st.app.store.articles_by_ids(&[id]).await?.pop().ok_or_else(|| ApiError::not_found(format!("no article {id}")))?;
    let story = match st.app.store.analysis_with_article(id, 50).await? {
        Some(a) => story_of(&a, id),
        None => None,
    };
    let similar = crate::index::similar_to(&st.app, id, 5).await?;
    Ok(ArticleDetail { article: ArticleOut::from_row(row, true), story, similar })
}

fn story_of(a: &AnalysisRow, article_id: i64) -> Option<StoryOut> {
    let doc: crate::analysis::doc::AnalysisDoc = serde_json::from_str(&a.doc).ok()?;
    let s = doc.stories.into_iter().find(|s| s.articles.iter().any(|r| r.id == article_id))?;
    Some(StoryOut {
        analysis_id: a.id,
        profile: a.profile.clone(),
        headline: s.headline,
        rank: s.rank,
        status: serde_json::to_value(s.status).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default(),
        article_ids: s.articles.iter().map(|r| r.id).collect(),
        tags: s.tags.into_iter().map(|t| t.tag).collect(),
    })
}

/// One article with its story and similar articles.
#[utoipa::path(get, path = "/api/articles/{id}", params(("id" = i64, Path, description = "article id")),
    responses((status = 200, body = ArticleDetail), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn article(State(st): State<ApiState>, id: Result<Path<i64>, axum::extract::rejection::PathRejection>) -> Result<Json<ArticleDetail>, ApiError> {
    let Path(id) = id.map_err(|e| ApiError::bad_request(e.body_text()))?;
    Ok(Json(article_detail(&st, id).await?))
}

// ---------------------------------------------------------------------------------------------------- analyses

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Older than this id (paging).
    before: Option<i64>,
    /// Page size (1 to 200, default 20).
    limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct AnalysisSummary {
    pub id: i64,
    pub profile: String,
    pub created_at: i64,
    pub as_of: i64,
    /// llm | builtin ...
    pub mode: String,
    pub model: Option<String>,
    pub stories: i64,
    /// The brief's first line.
    pub headline: String,
}

impl AnalysisSummary {
    pub(super) fn from_row(a: &AnalysisRow) -> AnalysisSummary {
        AnalysisSummary {
            id: a.id,
            profile: a.profile.clone(),
            created_at: a.created_at,
            as_of: a.as_of,
            mode: a.mode.clone(),
            model: a.model.clone(),
            stories: a.stories,
            headline: a.text.lines().find(|l| !l.trim().is_empty()).unwrap_or("").chars().take(200).collect(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct AnalysisList {
    pub analyses: Vec<AnalysisSummary>,
    pub next_before: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct NotificationOut {
    pub id: i64,
    /// The target's name (never its URL).
    pub target: String,
    pub kind: String,
    pub part: i64,
    pub parts: i64,
    /// pending | delivered | dead
    pub status: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub last_status: Option<i64>,
    pub delivered_at: Option<i64>,
}

impl NotificationOut {
    fn from_row(n: NotificationRow) -> NotificationOut {
        NotificationOut {
            id: n.id,
            target: n.target,
            kind: n.kind,
            part: n.part,
            parts: n.parts,
            status: n.status.as_str().to_string(),
            attempts: n.attempts,
            last_error: n.last_error,
            last_status: n.last_status,
            delivered_at: n.delivered_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct AnalysisDetail {
    #[serde(flatten)]
    pub summary: AnalysisSummary,
    pub window_from: i64,
    pub window_to: i64,
    /// The brief as sent.
    pub text: String,
    /// The analysis document: stories (articles, tags, analogues, market impact), changes, outlook...
    #[schema(value_type = Object)]
    pub doc: serde_json::Value,
    pub llm_error: Option<String>,
    pub article_ids: Vec<i64>,
    /// Its notifications and their delivery state.
    pub notifications: Vec<NotificationOut>,
}

pub(super) async fn analysis_detail(st: &ApiState, a: AnalysisRow) -> Result<AnalysisDetail, ApiError> {
    let notifications = st.app.store.notifications(Some(a.id)).await?.into_iter().map(NotificationOut::from_row).collect();
    Ok(AnalysisDetail {
        summary: AnalysisSummary::from_row(&a),
        window_from: a.window_from,
        window_to: a.window_to,
        doc: serde_json::from_str(&a.doc).unwrap_or(serde_json::Value::Null),
        text: a.text,
        llm_error: a.llm_error,
        article_ids: a.article_ids,
        notifications,
    })
}

#[utoipa::path(get, path = "/api/analyses", params(PageQuery), responses((status = 200, body = AnalysisList), (status = 400, body = ErrorBody)))]
async fn analyses(State(st): State<ApiState>, q: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>) -> Result<Json<AnalysisList>, ApiError> {
    let Query(q) = q.map_err(query_error)?;
    let limit = page_limit(q.limit, 20)?;
    let rows = st.app.store.list_analyses(q.before, limit).await?;
    let next_before = if rows.len() as i64 == limit { rows.last().map(|a| a.id) } else { None };
    Ok(Json(AnalysisList { analyses: rows.iter().map(AnalysisSummary::from_row).collect(), next_before }))
}

/// The latest analysis (any profile).
#[utoipa::path(get, path = "/api/analyses/latest", responses((status = 200, body = AnalysisDetail), (status = 404, body = ErrorBody)))]
async fn latest_analysis(State(st): State<ApiState>) -> Result<Json<AnalysisDetail>, ApiError> {
    let a = st.app.store.latest_analysis().await?.ok_or_else(|| ApiError::not_found("no analysis yet"))?;
    Ok(Json(analysis_detail(&st, a).await?))
}

#[utoipa::path(get, path = "/api/analyses/{id}", params(("id" = i64, Path, description = "analysis id")),
    responses((status = 200, body = AnalysisDetail), (status = 404, body = ErrorBody)))]
async fn analysis(State(st): State<ApiState>, id: Result<Path<i64>, axum::extract::rejection::PathRejection>) -> Result<Json<AnalysisDetail>, ApiError> {
    let Path(id) = id.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let a = st.app.store.analysis(id).await?.ok_or_else(|| ApiError::not_found(format!("no analysis {id}")))?;
    Ok(Json(analysis_detail(&st, a).await?))
}

// ---------------------------------------------------------------------------------------------------- sources

#[derive(Serialize, ToSchema)]
pub struct SourceOut {
    pub name: String,
    /// The feed URL without credentials or query.
    pub url: String,
    pub enabled: bool,
    pub articles: i64,
    pub healthy: bool,
    pub consecutive_failures: i64,
    pub last_status: Option<String>,
    pub last_fetch_at: Option<i64>,
    pub last_success_at: Option<i64>,
    /// When the source is next due (unix ms).
    pub next_fetch_at: i64,
    pub last_error: Option<String>,
}

pub(super) async fn source_list(st: &ApiState) -> Result<Vec<SourceOut>, ApiError> {
    // The daemon recorded every configured source at start (`daemon::run`); a GET writes nothing.
    let cfg = &st.app.config.sources;
    let names: Vec<String> = cfg.iter().map(|s| s.name.clone()).collect();
    let health = st.app.store.source_health(&names).await?;
    Ok(health
        .into_iter()
        .map(|h| SourceOut {
            enabled: cfg.iter().find(|s| s.name == h.name).is_none_or(|s| s.enabled),
            url: public_url(&h.url),
            name: h.name,
            articles: h.articles,
            healthy: h.healthy,
            consecutive_failures: h.consecutive_failures,
            last_status: h.last_status.map(|s| s.as_str().to_string()),
            last_fetch_at: h.last_fetch_at,
            last_success_at: h.last_success_at,
            next_fetch_at: h.next_fetch_at,
            last_error: h.last_error,
        })
        .collect())
}

/// Sources: health, article counts, last error, next fetch.
#[utoipa::path(get, path = "/api/sources", responses((status = 200, body = Vec<SourceOut>)))]
async fn sources(State(st): State<ApiState>) -> Result<Json<Vec<SourceOut>>, ApiError> {
    Ok(Json(source_list(&st).await?))
}

// ---------------------------------------------------------------------------------------------------- jobs

#[derive(Serialize, ToSchema)]
pub struct JobList {
    pub jobs: Vec<crate::status::JobStatus>,
    /// Why the schedule files are invalid (an edit the daemon refused; it runs the jobs listed).
    pub schedule_error: Option<String>,
}

#[utoipa::path(get, path = "/api/jobs", responses((status = 200, body = JobList)))]
async fn jobs(State(st): State<ApiState>) -> Result<Json<JobList>, ApiError> {
    let (jobs, schedule_error) = crate::status::job_statuses(&st.app).await?;
    Ok(Json(JobList { jobs, schedule_error }))
}

#[derive(Serialize, ToSchema)]
pub struct RunOut {
    pub id: i64,
    pub job: String,
    pub task: String,
    /// schedule | missed | queued | manual
    pub fired_by: String,
    /// The node that ran it (several daemons on one database).
    pub node: Option<String>,
    pub scheduled_at: Option<i64>,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    /// running | ok | failed | timeout | panicked | skipped | interrupted
    pub outcome: String,
    #[schema(value_type = Option<Object>)]
    pub counters: Option<serde_json::Value>,
    pub error: Option<String>,
}

impl RunOut {
    pub(super) fn from_row(r: JobRun) -> RunOut {
        RunOut {
            id: r.id,
            job: r.job,
            task: r.task,
            fired_by: r.fired_by,
            node: r.node,
            scheduled_at: r.scheduled_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            outcome: r.outcome.as_str().to_string(),
            counters: r.counters,
            error: r.error,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct RunList {
    pub runs: Vec<RunOut>,
}

#[utoipa::path(get, path = "/api/jobs/{name}/runs", params(("name" = String, Path, description = "job name"), PageQuery),
    responses((status = 200, body = RunList)))]
async fn job_runs(
    State(st): State<ApiState>,
    Path(name): Path<String>,
    q: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<RunList>, ApiError> {
    let Query(q) = q.map_err(query_error)?;
    let limit = page_limit(q.limit, 20)?;
    let runs = st.app.store.job_runs(Some(&name), limit).await?;
    Ok(Json(RunList { runs: runs.into_iter().map(RunOut::from_row).collect() }))
}

#[derive(Serialize, ToSchema)]
pub struct RunStarted {
    pub job: String,
    /// What the job's overlap policy made of the request.
    pub accepted: FireAccepted,
}

/// Run a job now (recorded like a scheduled run, fired_by "manual"; its overlap policy applies).
#[utoipa::path(post, path = "/api/jobs/{name}/run", params(("name" = String, Path, description = "job name")),
    responses((status = 202, body = RunStarted), (status = 404, body = ErrorBody), (status = 409, description = "skipped: the previous run is still running", body = RunStarted)))]
async fn run_job(State(st): State<ApiState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let accepted = run_now(&st, &name).await?;
    let code = if accepted == FireAccepted::Skipped { StatusCode::CONFLICT } else { StatusCode::ACCEPTED };
    Ok((code, Json(RunStarted { job: name, accepted })).into_response())
}

pub(super) async fn run_now(st: &ApiState, name: &str) -> Result<FireAccepted, ApiError> {
    let control = st.control()?;
    let (accepted, _done) = control.run_job(name).await.ok_or_else(|| ApiError::not_found(format!("no job {name:?} in the schedule")))?;
    if accepted == FireAccepted::Stopping {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "stopping", "the daemon is stopping"));
    }
    Ok(accepted)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AnalyzeQuery {
    /// Analysis profile (default: analysis.default_profile, else every profile).
    profile: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AnalyzeAnswer {
    pub job: String,
    pub accepted: FireAccepted,
    /// The job run (once it ended within the request's time).
    pub run_id: Option<i64>,
    /// The analysis stored (once it ended within the request's time).
    pub analysis_id: Option<i64>,
    /// ok | failed | ... once it ended; null while it still runs (follow /api/jobs/{job}/runs).
    pub outcome: Option<String>,
    pub error: Option<String>,
    /// The analysis report (what `newsd analyze --json` prints), once it ended.
    #[schema(value_type = Option<Object>)]
    pub report: Option<serde_json::Value>,
}

/// Run a market analysis now, as a job; waits for it within the request's time limit.
#[utoipa::path(post, path = "/api/analyze", params(AnalyzeQuery), responses(
    (status = 200, description = "the analysis ran", body = AnalyzeAnswer),
    (status = 202, description = "still running (or queued)", body = AnalyzeAnswer),
    (status = 400, body = ErrorBody)))]
async fn analyze(State(st): State<ApiState>, q: Result<Query<AnalyzeQuery>, axum::extract::rejection::QueryRejection>) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(query_error)?;
    let profile = q.profile.filter(|p| !p.trim().is_empty());
    if let Some(p) = &profile {
        if !st.app.config.analysis.profiles.iter().any(|x| &x.name == p) {
            let known: Vec<&str> = st.app.config.analysis.profiles.iter().map(|x| x.name.as_str()).collect();
            return Err(ApiError::bad_request(format!("no analysis profile {p:?} (configured: {})", known.join(", "))));
        }
    }
    let control = st.control()?;
    let (job, accepted, done) = control.analyze(profile).await;
    if accepted == FireAccepted::Stopping {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "stopping", "the daemon is stopping"));
    }
    let wait = st.app.config.daemon.api_timeout.saturating_sub(Duration::from_secs(2)).max(Duration::from_millis(100));
    let mut answer = AnalyzeAnswer { job, accepted, run_id: None, analysis_id: None, outcome: None, error: None, report: None };
    match tokio::time::timeout(wait, done).await {
        Ok(Ok(end)) => {
            answer.run_id = end.run_id;
            answer.outcome = Some(end.outcome.as_str().to_string());
            answer.error = end.error;
            // The analyze task's counters: {"analysis": <AnalyzeReport>, "delivery": ...}.
            answer.report = end.counters.as_ref().and_then(|c| c.get("analysis")).cloned();
            answer.analysis_id = answer.report.as_ref().and_then(|r| r.get("analysis_id")).and_then(|v| v.as_i64());
            Ok((StatusCode::OK, Json(answer)).into_response())
        }
        _ => Ok((StatusCode::ACCEPTED, Json(answer)).into_response()),
    }
}

// ---------------------------------------------------------------------------------------------------- status

/// The daemons sharing this database (the cluster): state, heartbeat, index position and lag, leases held.
#[utoipa::path(get, path = "/api/nodes", responses((status = 200, body = Vec<crate::status::NodeStatus>)))]
async fn nodes(State(st): State<ApiState>) -> Result<Json<Vec<crate::status::NodeStatus>>, ApiError> {
    Ok(Json(crate::status::nodes(&st.app).await?))
}

/// What `newsd status --json` prints.
#[utoipa::path(get, path = "/api/status", responses((status = 200, description = "the status document of `newsd status --json`", body = Object)))]
async fn status(State(st): State<ApiState>) -> Result<Json<crate::status::Status>, ApiError> {
    Ok(Json(crate::status::collect(&st.app).await?))
}
