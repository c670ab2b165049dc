//! The structured analysis both modes fill (built-in and LLM), stored as JSON and rendered per target.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AnalysisDoc {
    pub profile: String,
    /// "builtin" or "llm".
    pub mode: String,
    pub model: Option<String>,
    /// The analysis' "now" (unix ms).
    pub as_of: i64,
    pub window_from: i64,
    pub window_to: i64,
    /// Articles in the window (after source/keyword filters).
    pub window_articles: usize,
    /// One-paragraph overview.
    pub summary: String,
    /// Nothing worth telling (an empty window): renderers say so instead of filling space.
    pub nothing_significant: bool,
    pub stories: Vec<Story>,
    /// What changed against the previous analysis of the profile.
    pub changes: Vec<String>,
    /// Stories from the previous analysis still running with nothing new (named, not repeated).
    pub continuing: Vec<String>,
    pub outlook: Option<String>,
    /// e.g. why the LLM's answer was not used.
    pub note: Option<String>,
    /// The analysis this one compares against.
    pub previous_analysis_id: Option<i64>,
    /// The language the brief is written in (the profile's `language`).
    #[serde(default)]
    pub language: super::lang::Language,
    /// "What matters for markets": 3-5 lines at the top of the brief.
    #[serde(default)]
    pub lead: Vec<String>,
    /// Set when `max_articles` cut the window (the brief says so).
    #[serde(default)]
    pub truncated: Option<String>,
    /// Terms mentioned far more than in the trailing days, by several sources.
    #[serde(default)]
    pub trending: Vec<Trending>,
    /// Dated upcoming events named in the window's articles, after the analysis time.
    #[serde(default)]
    pub watch: Vec<Watch>,
    /// The market lexicon's version that scored the stories.
    #[serde(default)]
    pub lexicon_version: Option<u32>,
    /// Claims of the LLM's text that the cited articles do not support (dropped from the brief).
    #[serde(default)]
    pub dropped_claims: Vec<String>,
    /// How the LLM's answer was constrained (json_schema, json_object, prompt_only), when one was used.
    #[serde(default)]
    pub response_format: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Trending {
    pub term: String,
    pub mentions: usize,
    /// Mentions per day in the trailing baseline.
    pub baseline_per_day: f64,
    pub ratio: f64,
    pub sources: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Watch {
    /// YYYY-MM-DD (the first day of the week or month when only that is known).
    pub date: String,
    /// day | week | month
    pub precision: String,
    pub article_id: i64,
    pub sentence: String,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StoryStatus {
    /// Nothing earlier: neither coverage of this event nor a close analogue.
    #[default]
    New,
    /// A distinct earlier episode of the same kind exists (in `history`, the analogues).
    Recurring,
    /// The same event was covered in the days before the window (in `earlier_coverage`), not in a brief.
    Continuing,
    /// Already reported in the previous analysis; only what is new is shown.
    Update,
}

/// A market tag (asset, sector or region) with the articles and phrases that triggered it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Tag {
    pub tag: String,
    /// asset | sector | region
    pub kind: String,
    pub ticker: Option<String>,
    /// (article id, phrase as it appears)
    pub evidence: Vec<(i64, String)>,
}

/// A direction an article states for a tag, with the sentence that states it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Move {
    pub tag: String,
    /// up | down
    pub direction: String,
    pub article_id: i64,
    pub sentence: String,
}

/// The LLM's market impact of a story.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Impact {
    pub asset: String,
    /// up | down | mixed | none
    pub direction: String,
    /// low | medium | high
    pub confidence: String,
    pub cited_ids: Vec<i64>,
}

/// Older documents stored `market_impact` as one string (or null).
fn impacts_or_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Impact>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        List(Vec<Impact>),
        Text(Option<String>),
    }
    Ok(match Either::deserialize(d)? {
        Either::List(v) => v,
        Either::Text(Some(t)) if !t.trim().is_empty() => {
            vec![Impact { asset: t, direction: "none".into(), confidence: "low".into(), cited_ids: Vec::new() }]
        }
        Either::Text(_) => Vec::new(),
    })
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Story {
    /// 1-based rank.
    pub rank: usize,
    pub headline: String,
    pub status: StoryStatus,
    pub single_source: bool,
    pub sources: Vec<String>,
    /// The window's articles of the story (for updates: the ones not in the previous analysis first).
    pub articles: Vec<ArticleRef>,
    /// Ids of articles already reported in the previous analysis (updates only).
    pub already_reported: Vec<i64>,
    pub first_published: Option<i64>,
    pub last_published: Option<i64>,
    pub analysis: String,
    #[serde(default, deserialize_with = "impacts_or_text")]
    pub market_impact: Vec<Impact>,
    /// Historical analogues: distinct earlier episodes of the same kind (published before the window), best first.
    pub history: Vec<Analogue>,
    /// Earlier articles of this same event, from the days before the window.
    #[serde(default)]
    pub earlier_coverage: Vec<Analogue>,
    /// The story's most named entities (lower-cased): how a later brief recognises it.
    #[serde(default)]
    pub entities: Vec<String>,
    /// The previous brief's story this one updates (its headline).
    #[serde(default)]
    pub continues: Option<String>,
    pub score: f64,
    /// Market relevance from the lexicon, 0..1.
    #[serde(default)]
    pub relevance: f64,
    #[serde(default)]
    pub tags: Vec<Tag>,
    #[serde(default)]
    pub moves: Vec<Move>,
    /// Articles the LLM cited for this story.
    #[serde(default)]
    pub cited_ids: Vec<i64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ArticleRef {
    pub id: i64,
    pub title: String,
    pub source: String,
    pub url: String,
    pub published_at: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Analogue {
    pub article: ArticleRef,
    /// Cosine similarity to the story.
    pub score: f32,
    pub note: Option<String>,
}

impl AnalysisDoc {
    /// Every article id the analysis drew on (window articles and history), sorted, unique.
    pub fn article_ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self
            .stories
            .iter()
            .flat_map(|s| {
                s.articles
                    .iter()
                    .map(|a| a.id)
                    .chain(s.history.iter().map(|h| h.article.id))
                    .chain(s.earlier_coverage.iter().map(|h| h.article.id))
            })
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

pub fn fmt_date(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map(|d| d.format("%Y-%m-%d").to_string()).unwrap_or_default()
}

pub fn fmt_datetime(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map(|d| d.format("%Y-%m-%d %H:%M UTC").to_string()).unwrap_or_default()
}
