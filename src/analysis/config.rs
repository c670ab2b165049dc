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
//! max_tokens = 1500
//! timeout = "120s"
//! retries = 2                      # extra attempts after a failed call (backoff doubles from retry_backoff)
//! retry_backoff = "2s"
//!
//! [[analysis.profiles]]
//! name = "markets"
//! window = "24h"                   # or since_last_run = true (bounded by window)
//! sources = []                     # empty: all sources
//! keywords = []                    # empty: every article; else title/body must contain one (case-insensitive)
//! max_stories = 8
//! similar_k = 5
//! cluster_threshold = 0.6          # cosine (average link) to group articles into one story
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
    /// Average-link cosine similarity above which articles are the same story.
    #[serde(default = "default_cluster_threshold")]
    pub cluster_threshold: f32,
    /// Earlier articles at least this similar count as history of a story.
    #[serde(default = "default_history_threshold")]
    pub history_threshold: f32,
    /// A story is "recurring" when its best earlier article is at least this similar.
    #[serde(default = "default_recurring_threshold")]
    pub recurring_threshold: f32,
    /// Earlier articles this similar to the story are near-duplicates (reposts), not history.
    #[serde(default = "default_duplicate_threshold")]
    pub duplicate_threshold: f32,
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
fn default_cluster_threshold() -> f32 {
    0.6
}
fn default_history_threshold() -> f32 {
    0.45
}
fn default_recurring_threshold() -> f32 {
    0.6
}
fn default_duplicate_threshold() -> f32 {
    0.95
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
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    #[serde(default = "default_llm_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Extra attempts after a failed call (network error, 5xx, 429).
    #[serde(default = "default_retries")]
    pub retries: u32,
    #[serde(default = "default_retry_backoff", with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// Ask for `response_format = {"type": "json_object"}` (OpenAI, llama.cpp and vLLM support it).
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
    1500
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
            ] {
                if !(v > 0.0 && v <= 1.0) {
                    return Err((Some(what.into()), format!("analysis profile {:?}: {what} must be in (0, 1], not {v}", p.name)));
                }
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
            if !(0.0..=2.0).contains(&llm.temperature) {
                return Err((Some("temperature".into()), "analysis.llm.temperature must be in [0, 2]".into()));
            }
            if llm.max_tokens == 0 || llm.timeout.is_zero() {
                return Err((Some("max_tokens".into()), "analysis.llm.max_tokens and timeout must be more than 0".into()));
            }
        }
        Ok(())
    }
}
