//! `[analysis]` config section: analysis profiles and the (optional) LLM.
//!
//! ```toml
//! [analysis]
//! prompts_dir = "prompts"          # templates; files here override the built-in ones of the same name
//!
//! [analysis.llm]                   # optional: without it the built-in analysis is used
//! base_url = "http://127.0.0.1:8080/v1"   # any OpenAI-compatible server (POST {base_url}/chat/completions)
//! model = "qwen2.5-7b-instruct"
//! api_key_env = "OPENAI_API_KEY"   # optional
//! temperature = 0.2
//! max_tokens = 2048                # cap; the answer gets 250 + 180 tokens per story
//! context_tokens = 8192            # the model's context: the prompt is trimmed to fit (4096 for small models)
//! json_mode = true                 # strict JSON schema, falling back to json_object, then prompt only
//! timeout = "120s"
//! retries = 2                      # extra attempts after a failed call (backoff doubles from retry_backoff)
//! retry_backoff = "2s"
//!
//! [[analysis.profiles]]
//! name = "markets"
//! window = "24h"                   # or since_last_run = true (bounded by window)
//! sources = []                     # empty: all sources
//! keywords = []                    # empty: every article; else title/body must contain one (case-insensitive;
//!                                  # whole words in Latin scripts, substrings in Hangul/CJK)
//! language = "en"                 # the brief's language: "en" or "ko"
//! relevance_weight = 1.0           # market relevance in the ranking (0: rank by sources, size, recency only)
//! min_relevance = 0.0              # leave out stories less market-relevant than this (0..1)
//! max_words = 600                  # the brief's length budget
//! continuing_window = "7days"      # same-event coverage this far back is "continuing", not an analogue
//! max_stories = 8
//! similar_k = 5
//! cluster_threshold = 0.6          # cosine (average link) to group articles into one story; unset: the model's
//!                                  # `[similarity] story` in newsd-model.toml, else 0.6 (likewise history_threshold,
//!                                  # recurring_threshold, duplicate_threshold: 0.45, 0.6, 0.95)
//! targets = ["team-slack"]
//! ```
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AnalysisConfig {
    #[serde(default)]
    pub profiles: Vec<ProfileConfig>,
    #[serde(default)]
    pub llm: Option<LlmConfig>,
    /// Directory of prompt and message templates (relative to the config file). A file there overrides the
    /// built-in template of the same name.
    #[serde(default = "default_prompts_dir")]
    pub prompts_dir: std::path::PathBuf,
    /// Profile used by `newsd analyze` without `--profile` (default: the first profile, or a built-in
    /// "default" profile over all sources when none is configured).
    #[serde(default)]
    pub default_profile: Option<String>,
    /// Extra market lexicon files (TOML, relative to the config file), merged over the built-in lexicon
    /// (src/analysis/market_lexicon.toml); a file with an error is refused at start with its file and line.
    #[serde(default)]
    pub lexicon: Vec<std::path::PathBuf>,
}

fn default_prompts_dir() -> std::path::PathBuf {
    "prompts".into()
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        toml::from_str("").expect("empty analysis config deserialises")
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileConfig {
    pub name: String,
    /// Only these sources (empty: all).
    #[serde(default)]
    pub sources: Vec<String>,
    /// Only articles whose title or text contains one of these (case-insensitive; empty: all).
    #[serde(default)]
    pub keywords: Vec<String>,
    /// The window: the last `window` before the analysis time.
    #[serde(default = "default_window", with = "humantime_serde")]
    pub window: Duration,
    /// Start the window where the previous analysis of this profile ended (at most `window` back).
    #[serde(default)]
    pub since_last_run: bool,
    /// Fixed analysis time (RFC 3339), for replaying the past; `newsd analyze --at` overrides it. Default: now.
    #[serde(default)]
    pub as_of: Option<String>,
    /// Most window articles considered (newest first).
    #[serde(default = "default_max_articles")]
    pub max_articles: usize,
    #[serde(default = "default_max_stories")]
    pub max_stories: usize,
    /// Stories need at least this many articles to be listed (1: single articles can be stories).
    #[serde(default = "default_min_story_articles")]
    pub min_story_articles: usize,
    /// Similar earlier articles retrieved per story.
    #[serde(default = "default_similar_k")]
    pub similar_k: usize,
    /// Average-link cosine similarity above which articles are the same story. Unset: the model's
    /// `[similarity] story` (newsd-model.toml), else 0.6 (all-MiniLM-L6-v2's scale).
    #[serde(default)]
    pub cluster_threshold: Option<f32>,
    /// Earlier articles at least this similar count as history of a story (model's `history`, else 0.45).
    #[serde(default)]
    pub history_threshold: Option<f32>,
    /// A story is "recurring" when its best earlier article is at least this similar (model's `recurring`, else 0.6).
    #[serde(default)]
    pub recurring_threshold: Option<f32>,
    /// Earlier articles this similar to the story are near-duplicates (reposts), not history (model's
    /// `duplicate`, else 0.95).
    #[serde(default)]
    pub duplicate_threshold: Option<f32>,
    /// Prompt template file (built in: `market_analysis.j2`).
    #[serde(default = "default_template")]
    pub template: String,
    /// Use the configured LLM (when `[analysis.llm]` exists).
    #[serde(default = "default_true")]
    pub use_llm: bool,
    /// Characters of each article's text put in the prompt.
    #[serde(default = "default_excerpt_chars")]
    pub excerpt_chars: usize,
    /// Notification targets (names from `[[notify.targets]]`).
    #[serde(default)]
    pub targets: Vec<String>,
    /// The language of the brief: "en" or "ko" (headings and labels of the built-in brief; an LLM is asked to
    /// write in it). News text stays as published.
    #[serde(default)]
    pub language: crate::analysis::lang::Language,
    /// How much market relevance (0..1, from the lexicon) counts in the ranking against source diversity, size
    /// and recency (0: not at all).
    #[serde(default = "default_relevance_weight")]
    pub relevance_weight: f64,
    /// Stories less market-relevant than this are left out (0: none are; e.g. 0.3 keeps only market news).
    #[serde(default)]
    pub min_relevance: f64,
    /// Longest brief in words (the lead, then the stories; lower stories and detail are cut to fit).
    #[serde(default = "default_max_words")]
    pub max_words: usize,
    /// Earlier articles of the same event within this span before the window are continuing coverage; older
    /// similar articles, or ones about another event, can be historical analogues.
    #[serde(default = "default_continuing", with = "humantime_serde")]
    pub continuing_window: Duration,
}

fn default_relevance_weight() -> f64 {
    1.0
}
fn default_max_words() -> usize {
    600
}
fn default_continuing() -> Duration {
    Duration::from_secs(7 * 86_400)
}

fn default_window() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_max_articles() -> usize {
    1000
}
fn default_max_stories() -> usize {
    8
}
fn default_min_story_articles() -> usize {
    1
}
fn default_similar_k() -> usize {
    5
}

/// The cosine levels an analysis uses: the profile's, else the model's declared ones, else these defaults
/// (measured on all-MiniLM-L6-v2).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub cluster: f32,
    pub history: f32,
    pub recurring: f32,
    pub duplicate: f32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds { cluster: 0.6, history: 0.45, recurring: 0.6, duplicate: 0.95 }
    }
}

impl ProfileConfig {
    /// The thresholds in force for vectors of a model declaring `model` levels.
    pub fn thresholds(&self, model: &crate::embed::model::Similarity) -> Thresholds {
        let d = Thresholds::default();
        Thresholds {
            cluster: self.cluster_threshold.or(model.story).unwrap_or(d.cluster),
            history: self.history_threshold.or(model.history).unwrap_or(d.history),
            recurring: self.recurring_threshold.or(model.recurring).unwrap_or(d.recurring),
            duplicate: self.duplicate_threshold.or(model.duplicate).unwrap_or(d.duplicate),
        }
    }
}
fn default_template() -> String {
    "market_analysis.j2".into()
}
fn default_true() -> bool {
    true
}
fn default_excerpt_chars() -> usize {
    600
}

impl Default for ProfileConfig {
    fn default() -> Self {
        toml::from_str("name = \"default\"").expect("minimal profile deserialises")
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    /// OpenAI-compatible API root, e.g. `http://127.0.0.1:8080/v1` (`/chat/completions` is appended).
    pub base_url: String,
    #[serde(default = "default_model")]
    pub model: String,
    /// Environment variable holding the API key (sent as `Authorization: Bearer`); none for local servers.
    #[serde(default)]
    pub api_key_env: Option<String>,
    #[serde(default = "default_temperature")]
    pub temperature: f32,
    /// Most answer tokens asked for: `max_tokens` is sized to the brief (250 + 180 per story) and capped here.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    /// The model's context window in tokens: the prompt is trimmed (fewer excerpt characters, history items,
    /// articles, then stories) until prompt + answer + a retry's margin fit. 4096 works for small local models.
    #[serde(default = "default_context_tokens")]
    pub context_tokens: u32,
    #[serde(default = "default_llm_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Extra attempts after a failed call (network error, 5xx, 429).
    #[serde(default = "default_retries")]
    pub retries: u32,
    #[serde(default = "default_retry_backoff", with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// Constrain the answer: a strict JSON schema (`response_format` type `json_schema`), falling back to
    /// `json_object`, then to the prompt alone, when the server answers HTTP 400 (remembered per endpoint).
    /// false: never send a `response_format`.
    #[serde(default = "default_true")]
    pub json_mode: bool,
    /// Fixed sampling seed (reproducible answers where the server supports it).
    #[serde(default)]
    pub seed: Option<i64>,
}

fn default_model() -> String {
    "default".into()
}
fn default_temperature() -> f32 {
    0.2
}
fn default_max_tokens() -> u32 {
    2048
}
fn default_context_tokens() -> u32 {
    8192
}
fn default_llm_timeout() -> Duration {
    Duration::from_secs(120)
}
fn default_retries() -> u32 {
    2
}
fn default_retry_backoff() -> Duration {
    Duration::from_secs(2)
}

impl Default for LlmConfig {
    /// A local llama.cpp server (`http://127.0.0.1:8080/v1`) with every other setting at its default.
    fn default() -> Self {
        toml::from_str("base_url = \"http://127.0.0.1:8080/v1\"").expect("minimal LLM config deserialises")
    }
}

impl LlmConfig {
    /// Checks of the values (the caller names the section): temperature, sizes, timeout.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if !(0.0..=2.0).contains(&self.temperature) {
            return Err(("temperature", "analysis.llm.temperature must be in [0, 2]".into()));
        }
        if self.max_tokens == 0 || self.timeout.is_zero() {
            return Err(("max_tokens", "analysis.llm.max_tokens and timeout must be more than 0".into()));
        }
        if self.context_tokens < 1024 {
            return Err(("context_tokens", format!("analysis.llm.context_tokens must be at least 1024, not {}", self.context_tokens)));
        }
        Ok(())
    }
}

impl AnalysisConfig {
    pub fn profile(&self, name: &str) -> Option<&ProfileConfig> {
        self.profiles.iter().find(|p| p.name == name)
    }

    /// Semantic checks; the error is (text to locate the line by, message).
    pub fn validate(&self, config: &crate::config::Config) -> Result<(), (Option<String>, String)> {
        let mut names = std::collections::HashSet::new();
        for p in &self.profiles {
            let needle = Some(format!("\"{}\"", p.name));
            let err = |m: String| Err((needle.clone(), format!("analysis profile {:?}: {m}", p.name)));
            if p.name.trim().is_empty() {
                return Err((Some("name = \"\"".into()), "an analysis profile has an empty name".into()));
            }
            if !names.insert(p.name.as_str()) {
                return Err((needle, format!("duplicate analysis profile name {:?}", p.name)));
            }
            if p.window.is_zero() {
                return err("window must be more than 0".into());
            }
            if p.max_stories == 0 || p.max_articles == 0 || p.min_story_articles == 0 {
                return err("max_stories, max_articles and min_story_articles must be at least 1".into());
            }
            for (what, v) in [
                ("cluster_threshold", p.cluster_threshold),
                ("history_threshold", p.history_threshold),
                ("recurring_threshold", p.recurring_threshold),
                ("duplicate_threshold", p.duplicate_threshold),
            ]
            .into_iter()
            .filter_map(|(w, v)| v.map(|v| (w, v)))
            {
                if !(v > 0.0 && v <= 1.0) {
                    return Err((Some(what.into()), format!("analysis profile {:?}: {what} must be in (0, 1], not {v}", p.name)));
                }
            }
            if !(0.0..=1.0).contains(&p.min_relevance) || !(0.0..=10.0).contains(&p.relevance_weight) {
                return err(format!(
                    "min_relevance must be in [0, 1] and relevance_weight in [0, 10] (not {} and {})",
                    p.min_relevance, p.relevance_weight
                ));
            }
            if p.max_words < 100 {
                return err(format!("max_words must be at least 100, not {}", p.max_words));
            }
            if let Some(at) = &p.as_of {
                if chrono::DateTime::parse_from_rfc3339(at).is_err() {
                    return Err((Some(at.clone()), format!("analysis profile {:?}: as_of {at:?} is not an RFC 3339 time", p.name)));
                }
            }
            for s in &p.sources {
                if config.source(s).is_none() {
                    return Err((Some(format!("\"{s}\"")), format!("analysis profile {:?}: unknown source {s:?}", p.name)));
                }
            }
            for t in &p.targets {
                if config.notify.target(t).is_none() {
                    return Err((
                        Some(format!("\"{t}\"")),
                        format!("analysis profile {:?}: unknown notification target {t:?}", p.name),
                    ));
                }
            }
            if !crate::analysis::templates::exists(config, &p.template) {
                return Err((
                    Some(p.template.clone()),
                    format!("analysis profile {:?}: template {:?} is neither built in nor in the prompts directory", p.name, p.template),
                ));
            }
        }
        for t in &config.notify.targets {
            if let Some(tmpl) = &t.template {
                if !crate::analysis::templates::exists(config, tmpl) {
                    return Err((Some(tmpl.clone()), format!("notification target {:?}: template {tmpl:?} not found", t.name)));
                }
            }
        }
        if let Some(name) = &self.default_profile {
            if self.profile(name).is_none() {
                return Err((Some("default_profile".into()), format!("analysis.default_profile {name:?} is not a profile")));
            }
        }
        if let Some(llm) = &self.llm {
            match url::Url::parse(&llm.base_url) {
                Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
                _ => return Err((Some("base_url".into()), format!("analysis.llm.base_url {:?} is not an http(s) URL", llm.base_url))),
            }
            llm.check().map_err(|(key, message)| (Some(key.to_string()), message))?;
        }
        // The market lexicon files must load (their errors name the lexicon file and line).
        if !self.lexicon.is_empty() {
            let paths: Vec<std::path::PathBuf> = self.lexicon.iter().map(|p| config.resolve(p)).collect();
            if let Err(e) = crate::analysis::market::Lexicon::load(&paths) {
                return Err((Some("lexicon".into()), e.to_string()));
            }
        }
        Ok(())
    }
}
