//! The structured analysis both modes fill (built-in and LLM), stored as JSON and rendered per target.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
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
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StoryStatus {
    /// Nothing similar in the history.
    New,
    /// Similar earlier articles exist (dates in `history`).
    Recurring,
    /// Already reported in the previous analysis; only what is new is shown.
    Update,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
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
    pub market_impact: Option<String>,
    /// Similar earlier articles (published before the window), best first.
    pub history: Vec<Analogue>,
    pub score: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
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
            .flat_map(|s| s.articles.iter().map(|a| a.id).chain(s.history.iter().map(|h| h.article.id)))
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
