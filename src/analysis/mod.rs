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

mod brief;
pub mod cluster;
pub mod config;
pub mod doc;
pub mod lang;
pub mod llm;
pub mod market;
pub mod signals;
pub mod templates;
pub mod words;

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use tracing::Instrument;

use crate::app::App;
use crate::compute::SearchFilter;
use crate::store::{now_ms, ArticleRow, NewAnalysis};
use config::ProfileConfig;
use doc::{fmt_date, fmt_datetime, AnalysisDoc, ArticleRef, StoryStatus};

pub use brief::{arrow, tag_line, word_count};

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
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct RenderedPrompt {
    pub system: String,
    pub user: String,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
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
pub(crate) struct Draft {
    pub(crate) articles: Vec<ArticleRow>,
    pub(crate) centroid: Vec<f32>,
    /// Index (in `articles`) of the article closest to the centroid.
    pub(crate) representative: usize,
    pub(crate) sources: Vec<String>,
    /// The story's most named entities (lower-cased), most frequent first.
    pub(crate) entities: Vec<String>,
    pub(crate) reading: market::MarketReading,
    /// 2: market news; 1: general news; 0: non-market news (sports, celebrity, crime). Higher tiers rank first.
    pub(crate) tier: u8,
    pub(crate) score: f64,
    /// Historical analogues: distinct earlier episodes.
    pub(crate) analogues: Vec<(ArticleRow, f32)>,
    /// Earlier coverage of this same event.
    pub(crate) earlier: Vec<(ArticleRow, f32)>,
    pub(crate) status: StoryStatus,
    pub(crate) already_reported: Vec<i64>,
    /// Previous story (headline) this continues.
    pub(crate) continues: Option<String>,
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
    /// Historical analogues (distinct earlier episodes).
    history: Vec<PromptHistory>,
    /// Earlier coverage of the same event.
    earlier: Vec<PromptHistory>,
    already_reported: Vec<i64>,
    /// Market tags found by the lexicon ("USD rates (up)"), with the relevance 0..1.
    tags: Vec<String>,
    relevance: String,
}

fn prompt_history(h: &doc::Analogue) -> PromptHistory {
    PromptHistory {
        id: h.article.id,
        title: h.article.title.clone(),
        source: h.article.source.clone(),
        published: h.article.published_at.map(fmt_date).unwrap_or_default(),
        score: format!("{:.2}", h.score),
    }
}

fn render_prompt(
    template_name: &str,
    template: &str,
    profile: &ProfileConfig,
    excerpt_chars: usize,
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
                    excerpt: lead(bodies.get(&a.id).map(String::as_str).unwrap_or(""), excerpt_chars),
                })
                .collect(),
            history: s.history.iter().map(prompt_history).collect(),
            earlier: s.earlier_coverage.iter().map(prompt_history).collect(),
            already_reported: s.already_reported.clone(),
            tags: s
                .tags
                .iter()
                .map(|t| match s.moves.iter().find(|m| m.tag == t.tag) {
                    Some(m) => format!("{} ({})", t.tag, m.direction),
                    None => t.tag.clone(),
                })
                .collect(),
            relevance: format!("{:.2}", s.relevance),
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
        language => doc.language.name(),
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
    let profile = resolve_profile(app, opts.profile.as_deref())?;
    let as_of = match (opts.as_of, &profile.as_of) {
        (Some(t), _) => t,
        (None, Some(s)) => parse_time(s)?,
        (None, None) => now_ms(),
    };
    let span = tracing::info_span!("analyze", profile = %profile.name, as_of = %fmt_datetime(as_of));
    analyze(app, opts, profile, as_of).instrument(span).await
}

/// Articles' text scanned for entities (title and the start of the body: where news names its actors).
fn entity_text(a: &ArticleRow) -> String {
    let head: String = a.body.chars().take(2000).collect();
    format!("{}\n{}", a.title, head)
}

/// Characters of an article's body that count for its market relevance.
const LEDE_CHARS: usize = 1200;
/// Most market tags listed per story.
const MAX_TAGS: usize = 6;

/// Keeps a story's defining market tags (named in a title or by two of its articles or more; at most
/// `MAX_TAGS`), and per tag one stated direction: the one most of its sentences state (none on a tie), quoting
/// the first sentence that states it.
fn focus(reading: &mut market::MarketReading, members: &[ArticleRow]) {
    let titles: Vec<String> = members.iter().map(|a| a.title.to_lowercase()).collect();
    let in_title = |phrase: &str| {
        let p = phrase.to_lowercase();
        titles.iter().any(|t| words::contains_term(t, &p))
    };
    let single = members.len() == 1;
    reading.tags.retain(|t| {
        let articles: HashSet<i64> = t.evidence.iter().map(|e| e.article_id).collect();
        single || articles.len() >= 2 || t.evidence.iter().any(|e| in_title(&e.phrase))
    });
    reading.tags.truncate(MAX_TAGS);
    let mut moves = Vec::new();
    for t in &reading.tags {
        let of_tag: Vec<&market::Direction> = reading.directions.iter().filter(|d| d.tag == t.tag).collect();
        let up = of_tag.iter().filter(|d| d.direction == market::Move::Up).count();
        let down = of_tag.len() - up;
        let want = match up.cmp(&down) {
            std::cmp::Ordering::Greater => market::Move::Up,
            std::cmp::Ordering::Less => market::Move::Down,
            std::cmp::Ordering::Equal => continue,
        };
        if let Some(d) = of_tag.into_iter().find(|d| d.direction == want) {
            moves.push(d.clone());
        }
    }
    reading.directions = moves;
}

/// Relevance at which a story counts as market news (ranked above general news).
const MARKET_TIER: f64 = 0.35;

async fn analyze(app: &App, opts: &AnalyzeOptions, profile: ProfileConfig, as_of: i64) -> anyhow::Result<AnalyzeReport> {
    let started = std::time::Instant::now();
    let window_ms = profile.window.as_millis() as i64;
    // Strictly before `as_of` (store): re-running the same analysis time reproduces the brief.
    let previous_row = app.store.previous_analysis(&profile.name, as_of).await?;
    let previous: Option<AnalysisDoc> = previous_row.as_ref().and_then(|r| serde_json::from_str(&r.doc).ok());
    let window_from = match (&previous_row, profile.since_last_run) {
        (Some(p), true) => p.window_to.max(as_of - window_ms).min(as_of),
        _ => as_of - window_ms,
    };
    let window_to = as_of;
    let lexicon_paths: Vec<std::path::PathBuf> =
        app.config.analysis.lexicon.iter().map(|p| app.config.resolve(p)).collect();
    let lexicon = market::Lexicon::load(&lexicon_paths)?;

    // One more than the cap tells whether the cap cut the window.
    let mut articles = app
        .store
        .articles_in_window(window_from, window_to, &profile.sources, profile.max_articles as i64 + 1)
        .await?;
    let truncated = articles.len() > profile.max_articles;
    articles.truncate(profile.max_articles);
    if !profile.keywords.is_empty() {
        let kws: Vec<String> = profile.keywords.iter().map(|k| k.to_lowercase()).collect();
        articles.retain(|a| {
            let t = a.title.to_lowercase();
            let b = a.body.to_lowercase();
            kws.iter().any(|k| words::contains_term(&t, k) || words::contains_term(&b, k))
        });
    }
    let window_articles = articles.len();
    tracing::info!(articles = window_articles, truncated, from = %fmt_datetime(window_from), "window");
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
        language: profile.language,
        lead: Vec::new(),
        truncated: truncated.then(|| {
            format!(
                "More than {} articles were published in the window; only the newest {} were read (raise the profile's max_articles).",
                profile.max_articles, profile.max_articles
            )
        }),
        trending: Vec::new(),
        watch: Vec::new(),
        lexicon_version: Some(lexicon.version()),
        dropped_claims: Vec::new(),
        response_format: None,
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
        // Grouping is CPU work (O(n^2) in the window): off the async runtime.
        let vecs: Vec<Vec<f32>> = articles.iter().map(|a| vectors[&a.id].clone()).collect();
        let entity_texts: Vec<String> = articles.iter().map(entity_text).collect();
        // The cosine levels of this model (its newsd-model.toml), unless the profile sets its own.
        let th = profile.thresholds(&compute.similarity());
        let params = cluster::StoryParams::new(th.cluster);
        let (groups, vecs, ents) = tokio::task::spawn_blocking(move || {
            let ents: Vec<Vec<String>> = entity_texts.iter().map(|t| words::entities(t)).collect();
            (cluster::stories(&vecs, &ents, &params), vecs, ents)
        })
        .await?;
        tracing::info!(stories = groups.len(), threshold = th.cluster, "clustered");

        let span_ms = (window_to - window_from).max(1) as f64;
        let mut drafts: Vec<Draft> = groups
            .into_iter()
            .filter(|g| g.len() >= profile.min_story_articles)
            .map(|g| {
                let centroid = cluster::centroid(&g.iter().map(|&i| vecs[i].as_slice()).collect::<Vec<_>>());
                let entities = cluster::story_entities(&ents, &g, &params);
                let mut members: Vec<ArticleRow> = g.iter().map(|&i| articles[i].clone()).collect();
                members.sort_by_key(|a| (std::cmp::Reverse(published(a)), a.id));
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
                let texts: Vec<market::ArticleText> =
                    members.iter().map(|a| market::ArticleText { id: a.id, title: &a.title, body: &a.body }).collect();
                let mut reading = lexicon.read(&texts);
                // A story's relevance is its articles' mean: a big story collects incidental market words from
                // many articles, which says nothing about how much it is about markets.
                // Each article is judged by its title and lede, where news says what it is about; long
                // articles mention many markets in passing.
                let ledes: Vec<String> = members.iter().map(|a| a.body.chars().take(LEDE_CHARS).collect()).collect();
                let per_article: Vec<market::MarketReading> = members
                    .iter()
                    .zip(&ledes)
                    .map(|(a, lede)| lexicon.read(&[market::ArticleText { id: a.id, title: &a.title, body: lede }]))
                    .collect();
                focus(&mut reading, &members);
                let n = per_article.len().max(1) as f64;
                reading.relevance = per_article.iter().map(|r| r.relevance).sum::<f64>() / n;
                reading.non_market = per_article.iter().map(|r| r.non_market).sum::<f64>() / n;
                let newest = members.iter().map(published).max().unwrap_or(window_from);
                let recency = ((newest - window_from) as f64 / span_ms).clamp(0.0, 1.0);
                let coverage = 2.0 * sources.len() as f64 + (members.len() as f64).ln_1p() + 0.5 * recency;
                // Relevance multiplies coverage (up to 4x at weight 1): a rate decision from four outlets outranks
                // an election from six; and with a weight, market news is a tier of its own.
                let score = coverage * (1.0 + profile.relevance_weight * 3.0 * reading.relevance);
                let tier = if profile.relevance_weight <= 0.0 {
                    1
                } else if reading.relevance >= MARKET_TIER {
                    2
                } else if reading.non_market > reading.relevance {
                    0
                } else {
                    1
                };
                Draft {
                    articles: members,
                    centroid,
                    representative,
                    sources,
                    entities,
                    reading,
                    tier,
                    score,
                    analogues: Vec::new(),
                    earlier: Vec::new(),
                    status: StoryStatus::New,
                    already_reported: Vec::new(),
                    continues: None,
                }
            })
            .filter(|d| d.reading.relevance >= profile.min_relevance)
            .collect();
        // Deterministic order: tier, score, then the representative's id.
        drafts.sort_by(|a, b| {
            b.tier
                .cmp(&a.tier)
                .then(b.score.total_cmp(&a.score))
                .then(a.articles[a.representative].id.cmp(&b.articles[b.representative].id))
        });

        // Updates: a story of the previous brief shares articles with this one, or a close centroid and entities.
        let mut prev_matched: HashSet<usize> = HashSet::new();
        if let Some(prev) = &previous {
            let prev_ids: Vec<i64> = prev.stories.iter().flat_map(|s| s.articles.iter().map(|a| a.id)).collect();
            let prev_vecs = app.store.vectors(&prev_ids, &model_version).await?;
            let prev_keys: Vec<(Vec<i64>, Option<Vec<f32>>)> = prev
                .stories
                .iter()
                .map(|s| {
                    let vs: Vec<&[f32]> =
                        s.articles.iter().filter_map(|a| prev_vecs.get(&a.id).map(|v| v.as_slice())).collect();
                    (s.articles.iter().map(|a| a.id).collect(), (!vs.is_empty()).then(|| cluster::centroid(&vs)))
                })
                .collect();
            let prev_stories: Vec<cluster::StoryKey> = prev
                .stories
                .iter()
                .zip(&prev_keys)
                .map(|(s, (ids, c))| cluster::StoryKey { articles: ids, centroid: c.as_deref(), entities: &s.entities })
                .collect();
            // A strong centroid match plus shared entities, or shared articles.
            let strong = (th.cluster + 0.1).min(0.95);
            for d in drafts.iter_mut() {
                let mine: Vec<i64> = d.articles.iter().map(|a| a.id).collect();
                let key = cluster::StoryKey { articles: &mine, centroid: Some(&d.centroid), entities: &d.entities };
                if let Some(pi) = cluster::best_previous_match(&key, &prev_stories, strong, 2) {
                    let before: HashSet<i64> = prev.stories[pi].articles.iter().map(|a| a.id).collect();
                    d.already_reported = mine.iter().copied().filter(|id| before.contains(id)).collect();
                    d.already_reported.sort_unstable();
                    d.status = StoryStatus::Update;
                    d.continues = Some(prev.stories[pi].headline.clone());
                    prev_matched.insert(pi);
                }
            }
        }
        // Updates with nothing new are named, not repeated.
        let (continuing, mut drafts): (Vec<Draft>, Vec<Draft>) =
            drafts.into_iter().partition(|d| d.status == StoryStatus::Update && d.already_reported.len() == d.articles.len());
        doc.continuing = continuing.iter().map(|d| d.articles[d.representative].title.clone()).collect();
        drafts.truncate(profile.max_stories);

        // Earlier articles (before the window): the same event in the days before is continuing coverage; a
        // distinct earlier episode of the same kind is a historical analogue (one per episode day).
        let window_ids: Vec<i64> = articles.iter().map(|a| a.id).collect();
        let continuing_ms = profile.continuing_window.as_millis() as i64;
        for d in drafts.iter_mut() {
            let fetch = profile.similar_k * 6 + 20;
            let hits = compute.search(d.centroid.clone(), fetch, SearchFilter { exclude: window_ids.clone() }).await?;
            let hit_ids: Vec<i64> = hits.iter().map(|h| h.article_id).collect();
            let rows: HashMap<i64, ArticleRow> =
                app.store.articles_by_ids(&hit_ids).await?.into_iter().map(|a| (a.id, a)).collect();
            let own_titles: HashSet<String> = d.articles.iter().map(|a| a.title.trim().to_lowercase()).collect();
            let story_entities: HashSet<&str> = d.entities.iter().map(String::as_str).collect();
            let mut seen_titles = HashSet::new();
            let mut analogue_days = HashSet::new();
            for h in hits {
                let Some(a) = rows.get(&h.article_id) else { continue };
                let t = a.title.trim().to_lowercase();
                if published(a) >= window_from
                    || h.score < th.history
                    || h.score >= th.duplicate
                    || own_titles.contains(&t)
                    || !seen_titles.insert(t)
                {
                    continue;
                }
                let age = window_from - published(a);
                let shared = words::entities(&entity_text(a)).iter().filter(|e| story_entities.contains(e.as_str())).count();
                // Within the continuing window an earlier article is this event's coverage (close and sharing a
                // distinctive entity, or a little less close sharing two) or nothing: an analogue is an earlier
                // episode, so older.
                if age <= continuing_ms {
                    let ct = th.cluster;
                    let same_event = (h.score >= ct && (shared >= 1 || h.score >= ct + 0.1))
                        || (h.score >= ct - 0.1 && shared >= 2);
                    if same_event && d.earlier.len() < profile.similar_k {
                        d.earlier.push((a.clone(), h.score));
                    }
                } else if d.analogues.len() < profile.similar_k && analogue_days.insert(published(a).div_euclid(86_400_000)) {
                    d.analogues.push((a.clone(), h.score));
                }
            }
            if d.status != StoryStatus::Update {
                d.status = if !d.earlier.is_empty() {
                    StoryStatus::Continuing
                } else if d.analogues.first().is_some_and(|(_, s)| *s >= th.recurring) {
                    StoryStatus::Recurring
                } else {
                    StoryStatus::New
                };
            }
        }

        for (i, d) in drafts.iter().enumerate() {
            for a in &d.articles {
                bodies.insert(a.id, a.body.clone());
            }
            doc.stories.push(brief::story(i + 1, d));
        }

        // Trending terms against the trailing week; upcoming dated events named by the stories' articles.
        let baseline_from = window_from - 7 * 86_400_000;
        let baseline = app.store.articles_in_window(baseline_from, window_from, &profile.sources, 5000).await?;
        let head = |a: &ArticleRow| format!("{}\n{}", a.title, a.body.chars().take(600).collect::<String>());
        let window_texts: Vec<(String, String)> = articles.iter().map(|a| (a.source.clone(), head(a))).collect();
        let baseline_texts: Vec<(String, String)> = baseline.iter().map(|a| (a.source.clone(), head(a))).collect();
        let window_days = (window_to - window_from) as f64 / 86_400_000.0;
        let baseline_days = (window_from - baseline_from) as f64 / 86_400_000.0;
        let story_articles: Vec<(i64, i64, String)> = drafts
            .iter()
            .flat_map(|d| d.articles.iter().map(|a| (a.id, published(a), format!("{}. {}", a.title, a.body))))
            .collect();
        let (trending, watch) = tokio::task::spawn_blocking(move || {
            let w: Vec<(&str, &str)> = window_texts.iter().map(|(s, t)| (s.as_str(), t.as_str())).collect();
            let b: Vec<(&str, &str)> = baseline_texts.iter().map(|(s, t)| (s.as_str(), t.as_str())).collect();
            let trending = signals::trending(&w, window_days, &b, baseline_days, 6);
            let mut watch: Vec<signals::Upcoming> =
                story_articles.iter().flat_map(|(id, at, text)| signals::upcoming_events(*id, *at, text, as_of)).collect();
            watch.sort_by(|a, b| a.date.cmp(&b.date).then(a.article_id.cmp(&b.article_id)));
            let mut seen = HashSet::new();
            watch.retain(|u| seen.insert((u.date, u.sentence.clone())));
            watch.truncate(5);
            (trending, watch)
        })
        .await?;
        doc.trending = trending.into_iter().map(brief::trending).collect();
        doc.watch = watch.into_iter().map(brief::watch).collect();

        doc.summary = brief::summary(&doc);
        if let Some(prev) = &previous {
            doc.changes = brief::changes(&doc, prev, &prev_matched);
        }
        doc.lead = brief::lead_lines(&doc);
    }
    if doc.stories.is_empty() && !doc.nothing_significant {
        doc.nothing_significant = true;
        doc.summary = if doc.continuing.is_empty() {
            format!("{}, but no story met the profile's criteria.", brief::count(doc.window_articles, "article", "articles"))
        } else {
            format!("{}, all about stories already reported.", brief::count(doc.window_articles, "article", "articles"))
        };
        if doc.language == lang::Language::Ko {
            let n = doc.language.count(doc.window_articles, lang::Noun::Article);
            doc.summary = if doc.continuing.is_empty() {
                format!("{n}, 프로필 조건에 맞는 이슈 없음.")
            } else {
                format!("{n}, 모두 이미 보고된 이슈.")
            };
        }
    }

    // The LLM, when configured: its answer must be valid JSON grounded in the input; else the built-in analysis.
    let llm_cfg = app.config.analysis.llm.clone().filter(|_| profile.use_llm);
    let mut prompt = None;
    let mut llm_error = None;
    if !doc.stories.is_empty() && (llm_cfg.is_some() || opts.dry_run) {
        // The prompt as sent: trimmed (shorter excerpts, fewer earlier articles, articles, stories) until it fits
        // the model's context with room for the answer.
        let full = llm::Trim {
            excerpt_chars: profile.excerpt_chars,
            history_items: profile.similar_k,
            articles_per_story: doc.stories.iter().map(|s| s.articles.len()).max().unwrap_or(1),
            stories: doc.stories.len(),
        };
        let render = |t: &llm::Trim| -> Result<(String, String), AnalysisError> {
            let p = render_prompt(&profile.template, &template, &profile, t.excerpt_chars, &trimmed(&doc, t), &bodies, previous.as_ref())?;
            Ok((p.system, p.user))
        };
        let (p, trim, fits) = match &llm_cfg {
            Some(cfg) => {
                let f = llm::fit_prompt(cfg, full, render)?;
                if !f.fits {
                    tracing::warn!(prompt_tokens = f.prompt_tokens, context = cfg.context_tokens, "the prompt does not fit the model's context");
                }
                (RenderedPrompt { system: f.system, user: f.user }, f.trim, f.fits.then_some(()).ok_or(f.prompt_tokens))
            }
            None => {
                let (system, user) = render(&full)?;
                (RenderedPrompt { system, user }, full, Ok(()))
            }
        };
        if let (Some(cfg), false) = (&llm_cfg, opts.dry_run) {
            let sent = trimmed(&doc, &trim);
            let inputs = story_inputs(&sent, &bodies, trim.excerpt_chars);
            let outcome = match fits {
                Ok(()) => llm::ask(cfg, &p.system, &p.user, doc.window_from, &inputs).await.map_err(|e| e.to_string()),
                Err(tokens) => Err(format!(
                    "the prompt needs about {tokens} tokens even trimmed: more than analysis.llm.context_tokens = {} allows",
                    cfg.context_tokens
                )),
            };
            match outcome {
                Ok(o) => {
                    apply_answer(&mut doc, o.answer);
                    doc.mode = "llm".into();
                    doc.model = Some(model_name(&cfg.model, o.model.as_deref()));
                    doc.dropped_claims = o.dropped_claims;
                    doc.response_format = Some(o.response_format.as_str().to_string());
                    for (rank, ids) in o.citations {
                        if let Some(s) = doc.stories.iter_mut().find(|s| s.rank == rank) {
                            s.cited_ids = ids;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "LLM analysis failed; using the built-in analysis");
                    doc.note = Some("The LLM analysis was not available; this is the built-in analysis.".into());
                    llm_error = Some(e.clone());
                    // The last analysis this profile ran (whatever its analysis time) also lost its LLM.
                    let last = app.store.last_run_analysis(&profile.name).await?;
                    if last.is_some_and(|r| r.llm_error.is_some()) {
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
    let text = brief::fit(&mut doc, &message_template, profile.max_words)?;
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

/// The model named in the brief: the configured name, or when that is the placeholder "default", what the server
/// reported, without a directory (llama.cpp reports the model file's path).
fn model_name(configured: &str, reported: Option<&str>) -> String {
    match reported {
        Some(r) if configured == "default" && !r.trim().is_empty() => {
            r.rsplit(['/', '\\']).next().unwrap_or(r).to_string()
        }
        _ => configured.to_string(),
    }
}

/// The stories as the prompt shows them under a trim.
fn trimmed(doc: &AnalysisDoc, t: &llm::Trim) -> AnalysisDoc {
    let mut d = doc.clone();
    d.stories.truncate(t.stories);
    for s in &mut d.stories {
        s.articles.truncate(t.articles_per_story);
        s.history.truncate(t.history_items);
        s.earlier_coverage.truncate(t.history_items);
    }
    d
}

/// What the model was shown per story: the ids it may cite and the text each id stood for (grounding).
fn story_inputs(doc: &AnalysisDoc, bodies: &HashMap<i64, String>, excerpt_chars: usize) -> Vec<llm::StoryInput> {
    doc.stories
        .iter()
        .map(|s| {
            let mut texts: Vec<(i64, String)> = s
                .articles
                .iter()
                .map(|a| {
                    let excerpt = lead(bodies.get(&a.id).map(String::as_str).unwrap_or(""), excerpt_chars);
                    (a.id, format!("{}\n{}\n{}", a.title, a.source, excerpt))
                })
                .collect();
            let earlier = s.history.iter().chain(&s.earlier_coverage);
            texts.extend(earlier.clone().map(|h| (h.article.id, format!("{}\n{}", h.article.title, h.article.source))));
            llm::StoryInput {
                rank: s.rank,
                article_ids: s.articles.iter().map(|a| a.id).collect(),
                history_ids: earlier.map(|h| (h.article.id, h.article.published_at)).collect(),
                texts,
            }
        })
        .collect()
}

/// A unit enum's serde name ("up", "medium").
fn serde_word<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// Puts the model's text into the structure (stories it did not cover keep the built-in text).
fn apply_answer(doc: &mut AnalysisDoc, answer: llm::LlmAnswer) {
    // Text emptied by grounding (every sentence unsupported) keeps the built-in text.
    if !answer.summary.trim().is_empty() {
        doc.summary = answer.summary.trim().to_string();
    }
    doc.outlook = answer.outlook.filter(|o| !o.trim().is_empty());
    for s in answer.stories {
        let Some(story) = doc.stories.iter_mut().find(|x| x.rank == s.story) else { continue };
        if !s.analysis.trim().is_empty() {
            story.analysis = s.analysis.trim().to_string();
        }
        story.market_impact = s
            .market_impact
            .iter()
            .map(|m| doc::Impact {
                asset: m.asset.clone(),
                direction: serde_word(&m.direction),
                confidence: serde_word(&m.confidence),
                cited_ids: m.cited_ids.clone(),
            })
            .collect();
        story.cited_ids = s.cited_ids.clone();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lead_cuts_at_sentence() {
        let body = "First sentence here. Second sentence is longer and goes on. Third.";
        assert_eq!(lead(body, 40), "First sentence here.");
        assert_eq!(lead("short", 40), "short");
    }

    fn sample_doc() -> AnalysisDoc {
        let art = |id: i64, title: &str| doc::ArticleRef {
            id,
            title: title.into(),
            source: "bbc".into(),
            url: format!("https://x/{id}"),
            published_at: Some(1_486_425_600_000),
        };
        AnalysisDoc {
            profile: "markets".into(),
            as_of: 1_486_512_000_000,
            window_from: 1_486_425_600_000,
            window_to: 1_486_512_000_000,
            window_articles: 2,
            stories: vec![
                doc::Story { rank: 1, headline: "Fed raises rates".into(), articles: vec![art(1, "Fed raises rates")], sources: vec!["bbc".into()], ..Default::default() },
                doc::Story { rank: 2, headline: "Oil falls".into(), articles: vec![art(2, "Oil falls")], sources: vec!["bbc".into()], ..Default::default() },
            ],
            ..Default::default()
        }
    }

    /// The built-in prompt keeps its lines apart (the window line, the previous brief, each story) and puts every
    /// news text between the markers.
    #[test]
    fn prompt_lines_are_separated() {
        let doc = sample_doc();
        let previous = AnalysisDoc { as_of: 1_486_425_600_000, stories: doc.stories.clone(), ..Default::default() };
        let bodies: HashMap<i64, String> = [(1, "The Fed raised rates.".to_string()), (2, "Oil fell 3%.".to_string())].into();
        let (_, template) = templates::BUILTIN.iter().find(|(n, _)| *n == "market_analysis.j2").unwrap();
        let p = render_prompt("market_analysis.j2", template, &ProfileConfig::default(), 600, &doc, &bodies, Some(&previous)).unwrap();
        println!("{}", p.user);
        assert!(p.user.contains("Analysis time: 2017-02-08 00:00 UTC.\n"), "{}", p.user);
        assert!(p.user.contains("\nPrevious analysis ("), "{}", p.user);
        assert!(p.user.contains("\n## Story 1:") && p.user.contains("\n## Story 2:"), "{}", p.user);
        assert!(!p.user.contains("NEWS>>>##"), "{}", p.user);
        assert_eq!(p.user.matches(UNTRUSTED_BEGIN).count(), p.user.matches(UNTRUSTED_END).count());
    }

    #[test]
    fn brief_names_the_model_without_a_path() {
        assert_eq!(model_name("default", Some("/home/u/.cache/llama/gemma-3-270m.gguf")), "gemma-3-270m.gguf");
        assert_eq!(model_name("qwen2.5-7b", Some("/models/x.gguf")), "qwen2.5-7b");
        assert_eq!(model_name("default", None), "default");
    }

    #[test]
    fn parses_times() {
        assert_eq!(parse_time("2017-02-01").unwrap(), 1485907200000);
        assert_eq!(parse_time("2017-02-01T00:00:00Z").unwrap(), 1485907200000);
        assert!(parse_time("yesterday").is_err());
    }
}
