//! Periodic market analysis grounded in similar past news.
//!
//! `run_analyze`: take the profile's window of recent articles, group them into stories by embedding similarity
//! (average-link clustering), rank the stories (source diversity, size, recency), retrieve each story's most
//! similar EARLIER articles from the vector index, compare with the previous analysis (updates, what changed),
//! and write the analysis: by the configured LLM (JSON citing article ids, validated, retried once, else the
//! built-in analysis) or by the built-in analysis. The analysis and its notifications are stored in one
//! transaction (outbox); `notify::run_dispatch` delivers them.
//!
//! The analysis time ("now") is injectable: `AnalyzeOptions::as_of`, `newsd analyze --at`, or the profile's
//! `as_of`, so the past can be replayed (the tests use the 2016-2017 corpus).

pub mod cluster;
pub mod config;
pub mod doc;
pub mod llm;
pub mod templates;

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::app::App;
use crate::compute::SearchFilter;
use crate::store::{now_ms, ArticleRow, NewAnalysis};
use config::ProfileConfig;
use doc::{fmt_date, fmt_datetime, Analogue, AnalysisDoc, ArticleRef, Story, StoryStatus};

#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    #[error("unknown analysis profile {0:?}")]
    UnknownProfile(String),
    #[error("invalid analysis time {0:?} (expected RFC 3339, e.g. 2017-02-01T00:00:00Z)")]
    BadTime(String),
    #[error("prompt template {name}: {message}")]
    Template { name: String, message: String },
}

#[derive(Debug, Clone, Default)]
pub struct AnalyzeOptions {
    pub profile: Option<String>,
    /// Render the prompt, store and send nothing, call no LLM.
    pub dry_run: bool,
    /// The analysis' "now" (unix ms); default: the profile's `as_of`, else the current time.
    pub as_of: Option<i64>,
}

/// The rendered chat messages.
#[derive(Debug, Clone, Serialize)]
pub struct RenderedPrompt {
    pub system: String,
    pub user: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct AnalyzeReport {
    /// None for a dry run.
    pub analysis_id: Option<i64>,
    pub profile: String,
    /// builtin | llm
    pub mode: String,
    pub dry_run: bool,
    pub as_of: i64,
    pub window_from: i64,
    pub window_to: i64,
    pub window_articles: usize,
    pub stories: usize,
    /// Notification messages put in the outbox.
    pub notifications: usize,
    pub llm_error: Option<String>,
    pub template: String,
    pub template_hash: String,
    /// The prompt (when an LLM was asked, and always for a dry run).
    pub prompt: Option<RenderedPrompt>,
    /// The analysis as plain markdown.
    pub text: String,
    pub doc: AnalysisDoc,
    pub duration_ms: u64,
}

/// Runs the analysis of a profile now (or at the profile's `as_of`).
pub async fn run_analyze(app: &App, profile: Option<&str>, dry_run: bool) -> anyhow::Result<AnalyzeReport> {
    run_analyze_with(app, &AnalyzeOptions { profile: profile.map(str::to_string), dry_run, as_of: None }).await
}

/// Parses an RFC 3339 time (or a plain date, taken as midnight UTC) to unix ms.
pub fn parse_time(s: &str) -> Result<i64, AnalysisError> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc().timestamp_millis())
        .ok_or_else(|| AnalysisError::BadTime(s.to_string()))
}

/// The profile to run: the named one, else `analysis.default_profile`, else the first, else a built-in default.
pub fn resolve_profile(app: &App, name: Option<&str>) -> Result<ProfileConfig, AnalysisError> {
    let a = &app.config.analysis;
    match name.or(a.default_profile.as_deref()) {
        Some(n) => match a.profile(n) {
            Some(p) => Ok(p.clone()),
            None if n == "default" && a.profiles.is_empty() => Ok(ProfileConfig::default()),
            None => Err(AnalysisError::UnknownProfile(n.to_string())),
        },
        None => Ok(a.profiles.first().cloned().unwrap_or_default()),
    }
}

/// A story before it is written up.
struct Draft {
    articles: Vec<ArticleRow>,
    centroid: Vec<f32>,
    /// Index (in `articles`) of the article closest to the centroid.
    representative: usize,
    sources: Vec<String>,
    score: f64,
    history: Vec<(ArticleRow, f32)>,
    status: StoryStatus,
    already_reported: Vec<i64>,
    /// Previous story (headline) this continues.
    continues: Option<String>,
}

fn published(a: &ArticleRow) -> i64 {
    a.published_at.unwrap_or(a.fetched_at)
}

fn article_ref(a: &ArticleRow) -> ArticleRef {
    ArticleRef { id: a.id, title: a.title.clone(), source: a.source.clone(), url: a.url.clone(), published_at: Some(published(a)) }
}

/// The text embedded for an article that has no stored vector yet (as the embedding task would embed it; the
/// tokenizer truncates to the model's max tokens).
fn embed_text(a: &ArticleRow) -> String {
    crate::embed::article_text(&a.title, &a.body, 512)
}

/// The first sentence(s) of an article, up to about `max` characters.
pub fn lead(body: &str, max: usize) -> String {
    let text = crate::crawl::text::squash(body);
    if text.chars().count() <= max {
        return text;
    }
    let cut: String = text.chars().take(max).collect();
    match cut.rfind(". ") {
        Some(i) if i > max / 3 => cut[..=i].to_string(),
        _ => match cut.rfind(' ') {
            Some(i) => format!("{}…", &cut[..i]),
            None => format!("{cut}…"),
        },
    }
}

fn untrusted_filter(s: String) -> String {
    // The markers delimiting untrusted text must not be forgeable from inside it.
    s.replace("<<<", "‹‹‹").replace(">>>", "›››")
}

pub const UNTRUSTED_BEGIN: &str = "<<<NEWS";
pub const UNTRUSTED_END: &str = "NEWS>>>";

#[derive(Serialize)]
struct PromptArticle {
    id: i64,
    title: String,
    source: String,
    published: String,
    url: String,
    excerpt: String,
}

#[derive(Serialize)]
struct PromptHistory {
    id: i64,
    title: String,
    source: String,
    published: String,
    score: String,
}

#[derive(Serialize)]
struct PromptStory {
    rank: usize,
    headline: String,
    status: StoryStatus,
    single_source: bool,
    sources: Vec<String>,
    articles: Vec<PromptArticle>,
    history: Vec<PromptHistory>,
    already_reported: Vec<i64>,
}

fn render_prompt(
    template_name: &str,
    template: &str,
    profile: &ProfileConfig,
    doc: &AnalysisDoc,
    bodies: &HashMap<i64, String>,
    previous: Option<&AnalysisDoc>,
) -> Result<RenderedPrompt, AnalysisError> {
    let terr = |e: minijinja::Error| AnalysisError::Template { name: template_name.into(), message: format!("{e:#}") };
    let stories: Vec<PromptStory> = doc
        .stories
        .iter()
        .map(|s| PromptStory {
            rank: s.rank,
            headline: s.headline.clone(),
            status: s.status,
            single_source: s.single_source,
            sources: s.sources.clone(),
            articles: s
                .articles
                .iter()
                .map(|a| PromptArticle {
                    id: a.id,
                    title: a.title.clone(),
                    source: a.source.clone(),
                    published: a.published_at.map(fmt_date).unwrap_or_default(),
                    url: a.url.clone(),
                    excerpt: lead(bodies.get(&a.id).map(String::as_str).unwrap_or(""), profile.excerpt_chars),
                })
                .collect(),
            history: s
                .history
                .iter()
                .map(|h| PromptHistory {
                    id: h.article.id,
                    title: h.article.title.clone(),
                    source: h.article.source.clone(),
                    published: h.article.published_at.map(fmt_date).unwrap_or_default(),
                    score: format!("{:.2}", h.score),
                })
                .collect(),
            already_reported: s.already_reported.clone(),
        })
        .collect();
    let previous = previous.map(|p| {
        minijinja::context! {
            as_of => fmt_datetime(p.as_of),
            summary => p.summary,
            headlines => p.stories.iter().map(|s| s.headline.clone()).collect::<Vec<_>>(),
        }
    });
    let mut env = minijinja::Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.add_filter("untrusted", untrusted_filter);
    let tmpl = env.template_from_str(template).map_err(terr)?;
    let ctx = minijinja::context! {
        profile => minijinja::context! {
            name => profile.name,
            window => humantime::format_duration(profile.window).to_string(),
            sources => profile.sources,
            keywords => profile.keywords,
        },
        as_of => fmt_datetime(doc.as_of),
        window_from => fmt_datetime(doc.window_from),
        window_to => fmt_datetime(doc.window_to),
        window_articles => doc.window_articles,
        stories => stories,
        previous => previous,
        schema => llm::ANSWER_SCHEMA,
        begin => UNTRUSTED_BEGIN,
        end => UNTRUSTED_END,
    };
    #[allow(deprecated)] // render_captured renders both blocks; eval_to_state renders none.
    let mut state = tmpl.eval_to_state(ctx).map_err(terr)?;
    let system = state.render_block("system").map_err(terr)?;
    let user = state.render_block("user").map_err(terr)?;
    Ok(RenderedPrompt { system: system.trim().to_string(), user: crate::notify::render::tidy(&user) })
}

/// Runs an analysis with options (see `AnalyzeOptions`).
pub async fn run_analyze_with(app: &App, opts: &AnalyzeOptions) -> anyhow::Result<AnalyzeReport> {
    let started = std::time::Instant::now();
    let profile = resolve_profile(app, opts.profile.as_deref())?;
    let as_of = match (opts.as_of, &profile.as_of) {
        (Some(t), _) => t,
        (None, Some(s)) => parse_time(s)?,
        (None, None) => now_ms(),
    };
    let span = tracing::info_span!("analyze", profile = %profile.name, as_of = %fmt_datetime(as_of));
    let _enter = span.enter();
    let window_ms = profile.window.as_millis() as i64;
    let previous_row = app.store.previous_analysis(&profile.name, as_of).await?;
    let previous: Option<AnalysisDoc> = previous_row.as_ref().and_then(|r| serde_json::from_str(&r.doc).ok());
    let window_from = match (&previous_row, profile.since_last_run) {
        (Some(p), true) => p.window_to.max(as_of - window_ms).min(as_of),
        _ => as_of - window_ms,
    };
    let window_to = as_of;

    let mut articles =
        app.store.articles_in_window(window_from, window_to, &profile.sources, profile.max_articles as i64).await?;
    if !profile.keywords.is_empty() {
        let kws: Vec<String> = profile.keywords.iter().map(|k| k.to_lowercase()).collect();
        articles.retain(|a| {
            let t = a.title.to_lowercase();
            let b = a.body.to_lowercase();
            kws.iter().any(|k| t.contains(k) || b.contains(k))
        });
    }
    let window_articles = articles.len();
    tracing::info!(articles = window_articles, from = %fmt_datetime(window_from), "window");
    let (template, template_hash) = templates::load(&app.config, &profile.template)?;

    let mut doc = AnalysisDoc {
        profile: profile.name.clone(),
        mode: "builtin".into(),
        model: None,
        as_of,
        window_from,
        window_to,
        window_articles,
        summary: String::new(),
        nothing_significant: false,
        stories: Vec::new(),
        changes: Vec::new(),
        continuing: Vec::new(),
        outlook: None,
        note: None,
        previous_analysis_id: previous_row.as_ref().map(|r| r.id),
    };
    let mut bodies: HashMap<i64, String> = HashMap::new();

    if articles.is_empty() {
        doc.nothing_significant = true;
        doc.summary = format!(
            "no articles{} were published between {} and {}.",
            if profile.keywords.is_empty() { String::new() } else { format!(" matching {}", profile.keywords.join(", ")) },
            fmt_datetime(window_from),
            fmt_datetime(window_to)
        );
    } else {
        let compute = app.compute().await?;
        let model_version = compute.model_version().to_string();
        doc.model = Some(format!("builtin (embedder {model_version})"));
        let ids: Vec<i64> = articles.iter().map(|a| a.id).collect();
        let mut vectors = app.store.vectors(&ids, &model_version).await?;
        let missing: Vec<&ArticleRow> = articles.iter().filter(|a| !vectors.contains_key(&a.id)).collect();
        if !missing.is_empty() {
            tracing::info!(missing = missing.len(), "embedding window articles without stored vectors");
            let embedded = compute.embed(missing.iter().map(|a| embed_text(a)).collect()).await?;
            for (a, v) in missing.iter().zip(embedded) {
                vectors.insert(a.id, v);
            }
        }
        let vecs: Vec<Vec<f32>> = articles.iter().map(|a| vectors[&a.id].clone()).collect();
        let groups = cluster::average_link(&vecs, profile.cluster_threshold);
        tracing::info!(stories = groups.len(), threshold = profile.cluster_threshold, "clustered");

        let span_ms = (window_to - window_from).max(1) as f64;
        let mut drafts: Vec<Draft> = groups
            .into_iter()
            .filter(|g| g.len() >= profile.min_story_articles)
            .map(|g| {
                let centroid = cluster::centroid(&g.iter().map(|&i| vecs[i].as_slice()).collect::<Vec<_>>());
                let mut members: Vec<ArticleRow> = g.iter().map(|&i| articles[i].clone()).collect();
                members.sort_by_key(|a| std::cmp::Reverse(published(a)));
                let representative = members
                    .iter()
                    .enumerate()
                    .max_by(|(_, a), (_, b)| {
                        cluster::dot(&vectors[&a.id], &centroid).total_cmp(&cluster::dot(&vectors[&b.id], &centroid))
                    })
                    .map(|(i, _)| i)
                    .unwrap_or(0);
                let mut sources: Vec<String> = members.iter().map(|a| a.source.clone()).collect();
                sources.sort();
                sources.dedup();
                let newest = members.iter().map(published).max().unwrap_or(window_from);
                let recency = ((newest - window_from) as f64 / span_ms).clamp(0.0, 1.0);
                let score = 2.0 * sources.len() as f64 + (members.len() as f64).ln_1p() + 0.5 * recency;
                Draft {
                    articles: members,
                    centroid,
                    representative,
                    sources,
                    score,
                    history: Vec::new(),
                    status: StoryStatus::New,
                    already_reported: Vec::new(),
                    continues: None,
                }
            })
            .collect();
        drafts.sort_by(|a, b| b.score.total_cmp(&a.score));

        // Updates: stories overlapping (same articles, or a close centroid) a story of the previous analysis.
        let mut prev_matched: HashSet<usize> = HashSet::new();
        if let Some(prev) = &previous {
            let prev_ids: Vec<i64> = prev.stories.iter().flat_map(|s| s.articles.iter().map(|a| a.id)).collect();
            let prev_vecs = app.store.vectors(&prev_ids, &model_version).await?;
            let prev_centroids: Vec<Option<Vec<f32>>> = prev
                .stories
                .iter()
                .map(|s| {
                    let vs: Vec<&[f32]> =
                        s.articles.iter().filter_map(|a| prev_vecs.get(&a.id).map(|v| v.as_slice())).collect();
                    (!vs.is_empty()).then(|| cluster::centroid(&vs))
                })
                .collect();
            for d in drafts.iter_mut() {
                let mine: HashSet<i64> = d.articles.iter().map(|a| a.id).collect();
                let mut best: Option<(usize, f32)> = None;
                for (pi, ps) in prev.stories.iter().enumerate() {
                    let overlap: Vec<i64> = ps.articles.iter().map(|a| a.id).filter(|id| mine.contains(id)).collect();
                    let sim = prev_centroids[pi].as_ref().map(|c| cluster::dot(c, &d.centroid)).unwrap_or(0.0);
                    if !overlap.is_empty() || sim >= profile.cluster_threshold {
                        d.already_reported.extend(overlap);
                        let s = if d.already_reported.is_empty() { sim } else { 2.0 };
                        if best.is_none_or(|(_, b)| s > b) {
                            best = Some((pi, s));
                        }
                    }
                }
                if let Some((pi, _)) = best {
                    d.status = StoryStatus::Update;
                    d.continues = Some(prev.stories[pi].headline.clone());
                    d.already_reported.sort_unstable();
                    d.already_reported.dedup();
                    prev_matched.insert(pi);
                }
            }
        }
        // Updates with nothing new are named, not repeated.
        let (continuing, mut drafts): (Vec<Draft>, Vec<Draft>) =
            drafts.into_iter().partition(|d| d.status == StoryStatus::Update && d.already_reported.len() == d.articles.len());
        doc.continuing = continuing.iter().map(|d| d.articles[d.representative].title.clone()).collect();
        drafts.truncate(profile.max_stories);

        // History: the most similar EARLIER articles (before the window), not the window's own, not near-duplicates.
        let window_ids: Vec<i64> = articles.iter().map(|a| a.id).collect();
        for d in drafts.iter_mut() {
            let fetch = profile.similar_k * 4 + 20;
            let hits = compute.search(d.centroid.clone(), fetch, SearchFilter { exclude: window_ids.clone() }).await?;
            let hit_ids: Vec<i64> = hits.iter().map(|h| h.article_id).collect();
            let rows: HashMap<i64, ArticleRow> =
                app.store.articles_by_ids(&hit_ids).await?.into_iter().map(|a| (a.id, a)).collect();
            let own_titles: HashSet<String> = d.articles.iter().map(|a| a.title.trim().to_lowercase()).collect();
            let mut seen_titles = HashSet::new();
            for h in hits {
                let Some(a) = rows.get(&h.article_id) else { continue };
                let t = a.title.trim().to_lowercase();
                if published(a) >= window_from
                    || h.score < profile.history_threshold
                    || h.score >= profile.duplicate_threshold
                    || own_titles.contains(&t)
                    || !seen_titles.insert(t)
                {
                    continue;
                }
                d.history.push((a.clone(), h.score));
                if d.history.len() >= profile.similar_k {
                    break;
                }
            }
            if d.status != StoryStatus::Update
                && d.history.first().is_some_and(|(_, s)| *s >= profile.recurring_threshold)
            {
                d.status = StoryStatus::Recurring;
            }
        }

        for (i, d) in drafts.iter().enumerate() {
            for a in &d.articles {
                bodies.insert(a.id, a.body.clone());
            }
            doc.stories.push(builtin_story(i + 1, d));
        }
        doc.summary = builtin_summary(&doc);
        let _ = &prev_matched;
        if let Some(prev) = &previous {
            doc.changes = builtin_changes(&doc, prev, &prev_matched);
        }
    }
    if doc.stories.is_empty() && !doc.nothing_significant {
        doc.nothing_significant = true;
        doc.summary = if doc.continuing.is_empty() {
            format!("{} articles, but no story met the profile's criteria.", doc.window_articles)
        } else {
            format!("{} articles, all about stories already reported.", doc.window_articles)
        };
    }

    // The LLM, when configured: its answer must be valid JSON grounded in the input; else the built-in analysis.
    let llm_cfg = app.config.analysis.llm.clone().filter(|_| profile.use_llm);
    let mut prompt = None;
    let mut llm_error = None;
    if !doc.stories.is_empty() && (llm_cfg.is_some() || opts.dry_run) {
        let p = render_prompt(&profile.template, &template, &profile, &doc, &bodies, previous.as_ref())?;
        if let (Some(cfg), false) = (&llm_cfg, opts.dry_run) {
            match ask_llm(cfg, &p, &doc).await {
                Ok((answer, model)) => {
                    apply_answer(&mut doc, answer);
                    doc.mode = "llm".into();
                    doc.model = Some(model.unwrap_or_else(|| cfg.model.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "LLM analysis failed; using the built-in analysis");
                    doc.note = Some("The LLM analysis was not available; this is the built-in analysis.".into());
                    llm_error = Some(e.clone());
                    let repeated = previous_row.as_ref().is_some_and(|r| r.llm_error.is_some());
                    if repeated && !opts.dry_run {
                        let msg = format!("profile {:?}: LLM failed on two analyses in a row: {e}", profile.name);
                        // Keyed by profile: the error text varies from call to call.
                        crate::ops::alert_keyed(app, "llm_failure", &format!("llm_failure:{}", profile.name), &msg).await;
                    }
                }
            }
        }
        prompt = Some(p);
    }

    let (message_template, _) = templates::load(&app.config, "message.j2")?;
    let text = crate::notify::render::render_text(&doc, crate::notify::render::Format::Markdown, &message_template)?;
    let mut report = AnalyzeReport {
        analysis_id: None,
        profile: profile.name.clone(),
        mode: doc.mode.clone(),
        dry_run: opts.dry_run,
        as_of,
        window_from,
        window_to,
        window_articles,
        stories: doc.stories.len(),
        notifications: 0,
        llm_error: llm_error.clone(),
        template: profile.template.clone(),
        template_hash: template_hash.clone(),
        prompt: prompt.clone(),
        text: text.clone(),
        doc: doc.clone(),
        duration_ms: 0,
    };
    if !opts.dry_run {
        let run_key = uuid::Uuid::new_v4().to_string();
        let new = NewAnalysis {
            profile: profile.name.clone(),
            created_at: now_ms(),
            as_of,
            window_from,
            window_to,
            mode: doc.mode.clone(),
            model: doc.model.clone(),
            template: profile.template.clone(),
            template_hash,
            prompt: prompt.map(|p| format!("[system]\n{}\n\n[user]\n{}", p.system, p.user)),
            llm_error,
            doc: serde_json::to_string(&doc)?,
            text,
            article_ids: doc.article_ids(),
            stories: doc.stories.len() as i64,
        };
        let (id, n) = app
            .store
            .save_analysis(&new, |id| crate::notify::analysis_notifications(app, id, &run_key, &doc, &profile.targets))
            .await?;
        tracing::info!(analysis_id = id, notifications = n, mode = %doc.mode, stories = doc.stories.len(), "analysis stored");
        report.analysis_id = Some(id);
        report.notifications = n;
    }
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

async fn ask_llm(cfg: &config::LlmConfig, prompt: &RenderedPrompt, doc: &AnalysisDoc) -> Result<(llm::LlmAnswer, Option<String>), String> {
    let client = llm::LlmClient::new(cfg).map_err(|e| e.to_string())?;
    let grounding = llm::Grounding {
        window_from: doc.window_from,
        story_articles: doc.stories.iter().map(|s| (s.rank, s.articles.iter().map(|a| a.id).collect())).collect(),
        story_history: doc
            .stories
            .iter()
            .map(|s| (s.rank, s.history.iter().map(|h| (h.article.id, h.article.published_at)).collect()))
            .collect(),
    };
    let first = client.chat(&prompt.system, &prompt.user).await.map_err(|e| e.to_string())?;
    let problems = match llm::validate_answer(&first.content, &grounding) {
        Ok(a) => return Ok((a, first.model)),
        Err(p) => p,
    };
    tracing::warn!(%problems, "LLM answer invalid; asking once more");
    let retry_user = format!(
        "{}\n\nYour previous answer was rejected: {problems}.\nAnswer again with ONE JSON object in the required format, \
         citing only the ids given above.",
        prompt.user
    );
    let second = client.chat(&prompt.system, &retry_user).await.map_err(|e| e.to_string())?;
    match llm::validate_answer(&second.content, &grounding) {
        Ok(a) => Ok((a, second.model)),
        Err(p) => Err(format!("invalid LLM answer twice: {p}")),
    }
}

/// Puts the model's text into the structure (stories it did not cover keep the built-in text).
fn apply_answer(doc: &mut AnalysisDoc, answer: llm::LlmAnswer) {
    doc.summary = answer.summary.trim().to_string();
    doc.outlook = answer.outlook.filter(|o| !o.trim().is_empty());
    for s in answer.stories {
        let Some(story) = doc.stories.iter_mut().find(|x| x.rank == s.story) else { continue };
        story.analysis = s.analysis.trim().to_string();
        story.market_impact = s.market_impact.filter(|m| !m.trim().is_empty());
        // Cited articles first.
        story.articles.sort_by_key(|a| !s.cited_ids.contains(&a.id));
        for an in s.analogues {
            if let Some(h) = story.history.iter_mut().find(|h| h.article.id == an.id) {
                h.note = an.note.or_else(|| Some("analogue".into()));
            }
        }
        // Analogues the model picked first.
        story.history.sort_by_key(|h| h.note.is_none());
    }
}

fn builtin_story(rank: usize, d: &Draft) -> Story {
    let rep = &d.articles[d.representative];
    let first = d.articles.iter().map(published).min();
    let last = d.articles.iter().map(published).max();
    let single = d.sources.len() == 1;
    let new_articles: Vec<&ArticleRow> = d.articles.iter().filter(|a| !d.already_reported.contains(&a.id)).collect();
    let mut text = String::new();
    text.push_str(&lead(&rep.body, 280));
    text.push(' ');
    if d.articles.len() == 1 {
        text.push_str(&format!("Reported only by {} ({}).", rep.source, fmt_date(published(rep))));
    } else {
        let (f, l) = (first.map(fmt_date).unwrap_or_default(), last.map(fmt_date).unwrap_or_default());
        text.push_str(&format!(
            "{} articles from {} source{} ({}), {}.",
            d.articles.len(),
            d.sources.len(),
            if single { "" } else { "s" },
            d.sources.join(", "),
            if f == l { format!("on {f}") } else { format!("{f} to {l}") }
        ));
    }
    if single {
        text.push_str(" Single source: not confirmed by other outlets yet.");
    }
    match d.status {
        StoryStatus::Update => {
            text.push_str(&format!(
                " Update to a story already reported (\"{}\"): {} new article{}.",
                d.continues.as_deref().unwrap_or(""),
                new_articles.len(),
                if new_articles.len() == 1 { "" } else { "s" }
            ));
        }
        StoryStatus::Recurring => {
            let (h, s) = &d.history[0];
            let dates: Vec<String> = d.history.iter().filter_map(|(a, _)| a.published_at.map(fmt_date)).collect();
            let mut dates_sorted = dates.clone();
            dates_sorted.sort();
            dates_sorted.dedup();
            text.push_str(&format!(
                " Recurring theme: similar coverage before, closest \"{}\" ({}, {}, similarity {:.2}); earlier occurrences on {}.",
                h.title,
                h.source,
                fmt_date(published(h)),
                s,
                dates_sorted.join(", ")
            ));
        }
        StoryStatus::New => match d.history.first() {
            Some((h, s)) => text.push_str(&format!(
                " New: nothing closely similar earlier (nearest: \"{}\", {}, similarity {:.2}).",
                h.title,
                fmt_date(published(h)),
                s
            )),
            None => text.push_str(" New: nothing similar in the archive."),
        },
    }
    // Updates list their new articles first.
    let mut arts: Vec<&ArticleRow> = new_articles.clone();
    arts.extend(d.articles.iter().filter(|a| d.already_reported.contains(&a.id)));
    Story {
        rank,
        headline: rep.title.clone(),
        status: d.status,
        single_source: single,
        sources: d.sources.clone(),
        articles: arts.into_iter().map(article_ref).collect(),
        already_reported: d.already_reported.clone(),
        first_published: first,
        last_published: last,
        analysis: text,
        market_impact: None,
        history: d
            .history
            .iter()
            .map(|(a, s)| Analogue { article: article_ref(a), score: (*s * 1000.0).round() / 1000.0, note: None })
            .collect(),
        score: (d.score * 1000.0).round() / 1000.0,
    }
}

fn builtin_summary(doc: &AnalysisDoc) -> String {
    let n = doc.stories.len();
    let count = |st: StoryStatus| doc.stories.iter().filter(|s| s.status == st).count();
    let multi = doc.stories.iter().filter(|s| !s.single_source).count();
    let mut s = format!(
        "{} articles in the window; the top {} stor{} ({} new, {} recurring, {} update{}; {} covered by several outlets).",
        doc.window_articles,
        n,
        if n == 1 { "y" } else { "ies" },
        count(StoryStatus::New),
        count(StoryStatus::Recurring),
        count(StoryStatus::Update),
        if count(StoryStatus::Update) == 1 { "" } else { "s" },
        multi
    );
    if let Some(top) = doc.stories.first() {
        s.push_str(&format!(" Leading: \"{}\" ({} sources).", top.headline, top.sources.len()));
    }
    s
}

fn builtin_changes(doc: &AnalysisDoc, prev: &AnalysisDoc, matched: &HashSet<usize>) -> Vec<String> {
    let mut out = Vec::new();
    out.push(format!(
        "{} articles in this window against {} in the previous one ({}).",
        doc.window_articles,
        prev.window_articles,
        fmt_datetime(prev.as_of)
    ));
    let fresh: Vec<&str> =
        doc.stories.iter().filter(|s| s.status != StoryStatus::Update).map(|s| s.headline.as_str()).collect();
    if !fresh.is_empty() {
        out.push(format!("New since then: {}.", fresh.join("; ")));
    }
    let updates: Vec<&str> =
        doc.stories.iter().filter(|s| s.status == StoryStatus::Update).map(|s| s.headline.as_str()).collect();
    if !updates.is_empty() {
        out.push(format!("Developing: {}.", updates.join("; ")));
    }
    let faded: Vec<&str> = prev
        .stories
        .iter()
        .enumerate()
        .filter(|(i, _)| !matched.contains(i))
        .map(|(_, s)| s.headline.as_str())
        .collect();
    if !faded.is_empty() {
        out.push(format!("No longer in the news: {}.", faded.join("; ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lead_cuts_at_sentence() {
        let body = "First sentence here. Second sentence is longer and goes on. Third.";
        assert_eq!(lead(body, 40), "First sentence here.");
        assert_eq!(lead("short", 40), "short");
    }

    #[test]
    fn parses_times() {
        assert_eq!(parse_time("2017-02-01").unwrap(), 1485907200000);
        assert_eq!(parse_time("2017-02-01T00:00:00Z").unwrap(), 1485907200000);
        assert!(parse_time("yesterday").is_err());
    }
}
