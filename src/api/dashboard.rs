//! The web dashboard: server-rendered pages (minijinja templates compiled into the binary, auto-escaped since
//! every title and body is untrusted), plain links and forms (no JavaScript), readable on a phone.

use axum::extract::{Form, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use minijinja::{context, Environment, Value};
use serde::Deserialize;

use super::routes::{analysis_detail, article_detail, run_now, search_params, source_list, AnalysisSummary, ArticleOut};
use super::{auth, ApiError, ApiState};
use crate::store::ArticleFilter;

pub(super) fn router() -> Router<ApiState> {
    Router::new()
        .route("/", get(index))
        .route("/search", get(search))
        .route("/articles/{id}", get(article))
        .route("/analyses", get(analyses))
        .route("/analyses/{id}", get(analysis))
        .route("/sources", get(sources))
        .route("/sources/{name}", get(source))
        .route("/jobs", get(jobs))
        .route("/jobs/{name}", get(job))
        .route("/jobs/{name}/run", post(run_job))
        .route("/schedule", get(schedule))
        .route("/login", get(login_page).post(login))
}

pub(super) fn templates() -> Environment<'static> {
    let mut env = Environment::new();
    // Auto-escaping follows the template name: every template here ends in .html.
    for (name, text) in [
        ("base.html", include_str!("templates/base.html")),
        ("index.html", include_str!("templates/index.html")),
        ("sources_table.html", include_str!("templates/sources_table.html")),
        ("jobs_table.html", include_str!("templates/jobs_table.html")),
        ("search.html", include_str!("templates/search.html")),
        ("article.html", include_str!("templates/article.html")),
        ("analyses.html", include_str!("templates/analyses.html")),
        ("analysis.html", include_str!("templates/analysis.html")),
        ("sources.html", include_str!("templates/sources.html")),
        ("source.html", include_str!("templates/source.html")),
        ("jobs.html", include_str!("templates/jobs.html")),
        ("job.html", include_str!("templates/job.html")),
        ("schedule.html", include_str!("templates/schedule.html")),
        ("login.html", include_str!("templates/login.html")),
        ("error.html", include_str!("templates/error.html")),
    ] {
        env.add_template(name, text).expect("dashboard templates compile");
    }
    env.add_filter("ms", |v: Value| -> String {
        match v.as_i64() {
            Some(ms) => crate::status::fmt_ms(ms),
            None => "–".into(),
        }
    });
    env.add_filter("fixed", |v: f64, digits: Option<usize>| format!("{v:.*}", digits.unwrap_or(2)));
    env.add_filter("urlencode", |s: String| percent_encode(&s));
    // Links to articles come from feeds: only http(s) URLs become links (no javascript: or data:).
    env.add_filter("safe_url", |s: String| -> String {
        match url::Url::parse(&s) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => u.to_string(),
            _ => "#".into(),
        }
    });
    env
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A page, or the error page with the error's status.
fn render(st: &ApiState, name: &str, ctx: Value) -> Response {
    let page = st.templates.get_template(name).and_then(|t| t.render(context! { csrf => st.csrf.as_ref(), ..ctx }));
    match page {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(template = name, error = %format!("{e:#}"), "dashboard template failed");
            (StatusCode::INTERNAL_SERVER_ERROR, Html(format!("template {name} failed"))).into_response()
        }
    }
}

fn error_page(st: &ApiState, e: ApiError) -> Response {
    let status = e.status;
    let mut resp = render(st, "error.html", context! { status => status.as_u16(), message => e.message });
    *resp.status_mut() = status;
    if let Some(s) = e.retry_after {
        resp.headers_mut().insert(header::RETRY_AFTER, s.into());
    }
    resp
}

async fn index(State(st): State<ApiState>) -> Response {
    let page = async {
        let analyses: Vec<AnalysisSummary> = st.app.store.list_analyses(None, 5).await?.iter().map(AnalysisSummary::from_row).collect();
        let sources = source_list(&st).await?;
        let (jobs, _) = crate::status::job_statuses(&st.app).await?;
        let articles = st.app.store.count_articles().await?;
        let index = crate::index::summary(&st.app).await.ok();
        let nodes = crate::status::nodes(&st.app).await?;
        Ok::<_, ApiError>(context! {
            analyses, sources, jobs, articles, nodes,
            index_size => index.as_ref().and_then(|i| i.index_size).unwrap_or(0),
            model => index.as_ref().and_then(|i| i.model_version.clone()).unwrap_or_default(),
        })
    }
    .await;
    match page {
        Ok(ctx) => render(&st, "index.html", ctx),
        Err(e) => error_page(&st, e),
    }
}

#[derive(Deserialize)]
struct SearchForm {
    q: Option<String>,
    k: Option<usize>,
    since: Option<String>,
    source: Option<String>,
}

async fn search(State(st): State<ApiState>, Query(f): Query<SearchForm>) -> Response {
    let q = f.q.clone().unwrap_or_default();
    let k = f.k.unwrap_or(10);
    if q.trim().is_empty() {
        return render(&st, "search.html", context! { q, k, since => f.since });
    }
    let result = async {
        let params = search_params(q.trim(), Some(k), f.since.as_deref(), f.source.as_deref())?;
        Ok::<_, ApiError>(crate::index::search_with(&st.app, &params).await?)
    }
    .await;
    match result {
        Ok(report) => render(&st, "search.html", context! { q, k, since => f.since, report }),
        Err(e) => {
            let status = e.status;
            let mut resp = render(&st, "search.html", context! { q, k, since => f.since, error => e.message });
            *resp.status_mut() = status;
            resp
        }
    }
}

async fn article(State(st): State<ApiState>, Path(id): Path<i64>) -> Response {
    match article_detail(&st, id).await {
        Ok(d) => {
            let paragraphs: Vec<String> =
                d.article.body.as_deref().unwrap_or("").split('\n').map(str::trim).filter(|p| !p.is_empty()).map(str::to_string).collect();
            render(&st, "article.html", context! { d, paragraphs })
        }
        Err(e) => error_page(&st, e),
    }
}

#[derive(Deserialize)]
struct Paging {
    before: Option<i64>,
}

async fn analyses(State(st): State<ApiState>, Query(p): Query<Paging>) -> Response {
    match st.app.store.list_analyses(p.before, 30).await {
        Ok(rows) => {
            let next_before = if rows.len() == 30 { rows.last().map(|a| a.id) } else { None };
            let analyses: Vec<AnalysisSummary> = rows.iter().map(AnalysisSummary::from_row).collect();
            render(&st, "analyses.html", context! { analyses, next_before })
        }
        Err(e) => error_page(&st, e.into()),
    }
}

async fn analysis(State(st): State<ApiState>, Path(id): Path<i64>) -> Response {
    let detail = async {
        let a = st.app.store.analysis(id).await?.ok_or_else(|| ApiError::not_found(format!("no analysis {id}")))?;
        analysis_detail(&st, a).await
    }
    .await;
    match detail {
        Ok(d) => {
            let a = Value::from_serialize(&d);
            render(&st, "analysis.html", context! { a })
        }
        Err(e) => error_page(&st, e),
    }
}

async fn sources(State(st): State<ApiState>) -> Response {
    match source_list(&st).await {
        Ok(sources) => render(&st, "sources.html", context! { sources }),
        Err(e) => error_page(&st, e),
    }
}

async fn source(State(st): State<ApiState>, Path(name): Path<String>) -> Response {
    let page = async {
        let s = source_list(&st).await?.into_iter().find(|s| s.name == name).ok_or_else(|| ApiError::not_found(format!("no source {name:?}")))?;
        let rows = st.app.store.list_articles(&ArticleFilter { source: Some(name.clone()), limit: 30, ..Default::default() }).await?;
        let articles: Vec<ArticleOut> = rows.into_iter().map(|a| ArticleOut::from_row(a, false)).collect();
        Ok::<_, ApiError>(context! { s, articles })
    }
    .await;
    match page {
        Ok(ctx) => render(&st, "source.html", ctx),
        Err(e) => error_page(&st, e),
    }
}

#[derive(Deserialize)]
struct Flash {
    ran: Option<String>,
}

async fn jobs(State(st): State<ApiState>) -> Response {
    match crate::status::job_statuses(&st.app).await {
        Ok((jobs, schedule_error)) => render(&st, "jobs.html", context! { jobs, schedule_error }),
        Err(e) => error_page(&st, e.into()),
    }
}

async fn job(State(st): State<ApiState>, Path(name): Path<String>, Query(flash): Query<Flash>) -> Response {
    let page = async {
        let (jobs, _) = crate::status::job_statuses(&st.app).await?;
        let Some(j) = jobs.iter().find(|j| j.name == name) else { return Err(ApiError::not_found(format!("no job {name:?}"))) };
        let runs: Vec<super::routes::RunOut> =
            st.app.store.job_runs(Some(&name), 30).await?.into_iter().map(super::routes::RunOut::from_row).collect();
        let flash = flash.ran.map(|r| format!("Run now: {r}"));
        Ok(context! { name, scheduled => j.scheduled, runs, flash })
    }
    .await;
    match page {
        Ok(ctx) => render(&st, "job.html", ctx),
        Err(e) => error_page(&st, e),
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: Option<String>,
}

async fn run_job(State(st): State<ApiState>, Path(name): Path<String>, Form(form): Form<CsrfForm>) -> Response {
    if !form.csrf.as_deref().is_some_and(|t| auth::same(t, &st.csrf)) {
        return error_page(&st, ApiError::new(StatusCode::FORBIDDEN, "csrf", "the form's CSRF token is missing or stale; reload the page"));
    }
    match run_now(&st, &name).await {
        Ok(accepted) => {
            let word: &'static str = accepted.into();
            Redirect::to(&format!("/jobs/{}?ran={word}", percent_encode(&name))).into_response()
        }
        Err(e) => error_page(&st, e),
    }
}

async fn schedule(State(st): State<ApiState>) -> Response {
    let page = async {
        let jobs: Vec<crate::schedule::JobSpec> = match st.control.get() {
            Some(c) => c.schedule().await,
            None => Vec::new(),
        };
        let refused = st
            .app
            .store
            .reload_events(50)
            .await?
            .into_iter()
            .find(|e| e.outcome == crate::store::ReloadStatus::Refused);
        Ok::<_, ApiError>(context! { jobs, refused })
    }
    .await;
    match page {
        Ok(ctx) => render(&st, "schedule.html", ctx),
        Err(e) => error_page(&st, e),
    }
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login_page(State(st): State<ApiState>) -> Response {
    render(&st, "login.html", context! {})
}

async fn login(State(st): State<ApiState>, Form(form): Form<LoginForm>) -> Response {
    if !st.auth.knows(&form.token) {
        let mut resp = render(&st, "login.html", context! { failed => true });
        *resp.status_mut() = StatusCode::UNAUTHORIZED;
        return resp;
    }
    let cookie = format!("{}={}; Path=/; HttpOnly; SameSite=Strict", auth::COOKIE, form.token.trim());
    let mut resp = Redirect::to("/").into_response();
    if let Ok(v) = cookie.parse() {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}
