//! An OpenAI-compatible chat-completions client (OpenAI, llama.cpp `llama-server`, vLLM, Ollama's /v1...), the
//! JSON answer the analysis asks for, and everything that stands between the model's text and a user:
//!
//! - **Structured output** ([`answer_schema`], [`ResponseFormat`]): a strict JSON schema built from the stories
//!   actually given (story numbers, cited ids and analogue ids are `enum`s of those ids, strings have `maxLength`,
//!   arrays `maxItems`), sent as `response_format: {"type": "json_schema", ...}`. A server that refuses it (HTTP
//!   400) gets `json_object`, then no `response_format` at all; what worked is remembered per endpoint and model
//!   for the life of the process.
//! - **Validation** ([`validate_answer`]): story numbers exist, cited ids are the story's articles, analogues come
//!   from the story's earlier articles dated before the window. An invalid answer is retried once with the problems
//!   listed.
//! - **Grounding** ([`ground_answer`]): every number, ticker and capitalised name in the model's text must occur in
//!   the texts of the articles it rests on; a sentence that does not is dropped and reported.
//! - **Neutralising** ([`neutralise`]): links and mentions the model writes are made inert; only newsd renders links.
//! - **Bad input**: a response that is not UTF-8, an answer cut at `max_tokens`, over [`MAX_ANSWER_BYTES`] or nested
//!   deeper than [`MAX_ANSWER_DEPTH`] is refused with a clear error (the caller falls back to the built-in analysis).
//! - **Prompt budget** ([`fit_prompt`], [`answer_token_budget`], [`estimate_tokens`]): the answer's `max_tokens`
//!   follows the number of stories, and the prompt is trimmed until prompt + answer fit `context_tokens`.

use std::collections::{HashMap, HashSet};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use regex::Regex;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use tracing::Instrument;

use super::config::LlmConfig;

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("LLM request failed after {attempts} attempt(s): {message}")]
    Request { attempts: u32, message: String },
    #[error("LLM answered HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("LLM answer has no message content: {0}")]
    NoContent(String),
    #[error("API key: environment variable {0} is not set")]
    MissingKey(String),
    /// The answer is unusable as sent (not UTF-8, cut at max_tokens, too large, nested too deep): not retried.
    #[error("LLM answer refused: {0}")]
    Refused(String),
    /// The answer did not pass validation, twice (the first time it was retried with the problems listed).
    #[error("invalid LLM answer twice: {0}")]
    Invalid(String),
    /// No story with article ids was given.
    #[error("nothing to ask the LLM: no story has article ids")]
    NoStories,
}

pub struct LlmClient {
    http: reqwest::Client,
    cfg: LlmConfig,
    api_key: Option<String>,
}

/// What the model returned, with what the server reported about it.
#[derive(Debug, Clone)]
pub struct Completion {
    pub content: String,
    pub model: Option<String>,
    /// "stop", "length" (cut at max_tokens)...
    pub finish_reason: Option<String>,
    pub prompt_tokens: Option<u32>,
    pub completion_tokens: Option<u32>,
}

// ------------------------------------------------------------------------------------------------------------------
// Response formats and their per-endpoint memory

/// How the answer is constrained, strongest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseFormat {
    /// `{"type": "json_schema", "json_schema": {"name": "market_brief", "strict": true, "schema": S}}`: the server
    /// constrains decoding to the schema (OpenAI, vLLM, llama.cpp, Ollama).
    JsonSchema,
    /// `{"type": "json_object"}`: any JSON object.
    JsonObject,
    /// No `response_format`: the prompt alone asks for JSON.
    PromptOnly,
}

impl ResponseFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseFormat::JsonSchema => "json_schema",
            ResponseFormat::JsonObject => "json_object",
            ResponseFormat::PromptOnly => "prompt_only",
        }
    }

    /// The next weaker format, tried when a server answers HTTP 400 to this one.
    pub fn fallback(self) -> Option<ResponseFormat> {
        match self {
            ResponseFormat::JsonSchema => Some(ResponseFormat::JsonObject),
            ResponseFormat::JsonObject => Some(ResponseFormat::PromptOnly),
            ResponseFormat::PromptOnly => None,
        }
    }
}

impl std::fmt::Display for ResponseFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What worked per endpoint (process-wide): later calls start there instead of paying the refusals again.
static FORMATS: LazyLock<Mutex<HashMap<String, ResponseFormat>>> = LazyLock::new(Default::default);

/// The memory key: the chat-completions URL without user info, query or fragment (where keys may hide), and the
/// model (one gateway serves models with different support).
pub fn endpoint_key(cfg: &LlmConfig) -> String {
    let base = match url::Url::parse(&cfg.base_url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => cfg.base_url.split(['?', '#']).next().unwrap_or("").to_string(),
    };
    format!("{}/chat/completions model={}", base.trim_end_matches('/'), cfg.model)
}

/// The format the next call to this endpoint starts with, if one was learned.
pub fn remembered_format(cfg: &LlmConfig) -> Option<ResponseFormat> {
    FORMATS.lock().unwrap().get(&endpoint_key(cfg)).copied()
}

/// Forgets what was learned about this endpoint (e.g. after a server upgrade; tests).
pub fn forget_format(cfg: &LlmConfig) {
    FORMATS.lock().unwrap().remove(&endpoint_key(cfg));
}

fn remember_format(cfg: &LlmConfig, f: ResponseFormat) {
    FORMATS.lock().unwrap().insert(endpoint_key(cfg), f);
}

/// The format a call starts with: what worked before, else the strongest allowed (`json_mode = false`: prompt only).
pub fn starting_format(cfg: &LlmConfig) -> ResponseFormat {
    if !cfg.json_mode {
        return ResponseFormat::PromptOnly;
    }
    remembered_format(cfg).unwrap_or(ResponseFormat::JsonSchema)
}

/// The chat-completions request body (pure: tests check exactly what is sent).
pub fn request_body(cfg: &LlmConfig, system: &str, user: &str, max_tokens: u32, format: ResponseFormat, schema: Option<&Json>) -> Json {
    let mut fields = vec![
        ("model", Json::str(&cfg.model)),
        (
            "messages",
            Json::Arr(vec![
                Json::obj([("role", Json::str("system")), ("content", Json::str(system))]),
                Json::obj([("role", Json::str("user")), ("content", Json::str(user))]),
            ]),
        ),
        ("temperature", Json::Float(cfg.temperature as f64)),
        ("max_tokens", Json::Int(max_tokens as i64)),
        ("stream", Json::Bool(false)),
    ];
    if let Some(seed) = cfg.seed {
        fields.push(("seed", Json::Int(seed)));
    }
    match (format, schema) {
        (ResponseFormat::JsonSchema, Some(s)) => fields.push((
            "response_format",
            Json::obj([
                ("type", Json::str("json_schema")),
                (
                    "json_schema",
                    Json::obj([("name", Json::str("market_brief")), ("strict", Json::Bool(true)), ("schema", s.clone())]),
                ),
            ]),
        )),
        (ResponseFormat::JsonSchema, None) | (ResponseFormat::JsonObject, _) => {
            fields.push(("response_format", Json::obj([("type", Json::str("json_object"))])))
        }
        (ResponseFormat::PromptOnly, _) => {}
    }
    Json::obj(fields)
}

/// Whether a 400 is about the request's size rather than its `response_format` (no fallback then: a weaker
/// format would not help, and remembering it would cost every later call its schema).
fn is_context_error(body: &str) -> bool {
    let b = body.to_ascii_lowercase();
    b.contains("context") && (b.contains("exceed") || b.contains("length") || b.contains("too long") || b.contains("size"))
}

impl LlmClient {
    pub fn new(cfg: &LlmConfig) -> Result<LlmClient, LlmError> {
        let api_key = match &cfg.api_key_env {
            Some(var) => Some(std::env::var(var).map_err(|_| LlmError::MissingKey(var.clone()))?),
            None => None,
        };
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
            .user_agent(format!("newsd/{}", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| LlmError::Request { attempts: 0, message: crate::net::error_without_url(e) })?;
        Ok(LlmClient { http, cfg: cfg.clone(), api_key })
    }

    pub fn endpoint(&self) -> String {
        format!("{}/chat/completions", self.cfg.base_url.trim_end_matches('/'))
    }

    /// One chat completion with the configured `max_tokens` and `json_object` when `json_mode` (the pre-schema
    /// behaviour; [`ask`] is the analysis' way in).
    pub async fn chat(&self, system: &str, user: &str) -> Result<Completion, LlmError> {
        let format = if self.cfg.json_mode { ResponseFormat::JsonObject } else { ResponseFormat::PromptOnly };
        self.complete(&request_body(&self.cfg, system, user, self.cfg.max_tokens, format, None)).await
    }

    /// One request body, retried (network errors, timeouts, 429, 5xx) with exponential backoff.
    pub async fn complete(&self, body: &Json) -> Result<Completion, LlmError> {
        let body = serde_json::to_vec(body).expect("JSON serialises");
        let attempts = self.cfg.retries + 1;
        let mut last = String::new();
        for attempt in 1..=attempts {
            let span = tracing::info_span!("llm", attempt, model = %self.cfg.model);
            let wait = match self.attempt(&body).instrument(span).await {
                Attempt::Done(result) => return result,
                Attempt::Retry { error, retry_after } => {
                    last = error;
                    retry_after
                        .map(|d| d.min(RETRY_AFTER_MAX))
                        .unwrap_or_else(|| crate::net::backoff(attempt, self.cfg.retry_backoff, RETRY_AFTER_MAX))
                }
            };
            tracing::warn!(error = %last, attempt, "LLM call failed");
            if attempt < attempts {
                tokio::time::sleep(wait).await;
            }
        }
        Err(LlmError::Request { attempts, message: last })
    }

    /// A completion constrained as strongly as the server accepts: starts at [`starting_format`], steps down on
    /// HTTP 400 (json_schema -> json_object -> prompt only) and remembers what worked for this endpoint. Returns the
    /// completion, the format it was asked with and the requests it took (network retries not counted).
    pub async fn complete_structured(
        &self,
        system: &str,
        user: &str,
        max_tokens: u32,
        schema: &Json,
    ) -> Result<(Completion, ResponseFormat, u32), LlmError> {
        let mut format = starting_format(&self.cfg);
        let mut requests = 0;
        loop {
            let body = request_body(&self.cfg, system, user, max_tokens, format, Some(schema));
            requests += 1;
            match self.complete(&body).await {
                Ok(c) => {
                    remember_format(&self.cfg, format);
                    return Ok((c, format, requests));
                }
                Err(LlmError::Status { status: 400, body }) if !is_context_error(&body) => match format.fallback() {
                    Some(next) => {
                        tracing::warn!(refused = %format, next = %next, body = %body, "LLM server refused the response format");
                        remember_format(&self.cfg, next);
                        format = next;
                    }
                    None => return Err(LlmError::Status { status: 400, body }),
                },
                Err(e) => return Err(e),
            }
        }
    }

    /// One request: its final result, or why to try again (and when, if the server said).
    async fn attempt(&self, body: &[u8]) -> Attempt {
        let mut req = self
            .http
            .post(self.endpoint())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec());
        if let Some(key) = &self.api_key {
            req = req.bearer_auth(key);
        }
        let resp = match req.send().await {
            Ok(resp) => resp,
            // The base URL may carry a key (some gateways take it in the query): errors never show it.
            Err(e) => return Attempt::Retry { error: crate::net::error_without_url(e), retry_after: None },
        };
        let status = resp.status().as_u16();
        let retry_after = crate::net::retry_after_of(resp.headers());
        let bytes = match crate::net::read_body_limited(resp, RESPONSE_BODY_LIMIT).await {
            Ok(b) => b,
            Err(e @ crate::net::BodyError::TooLarge { .. }) => {
                return Attempt::Done(Err(LlmError::Refused(format!("HTTP {status}: {e}"))))
            }
            Err(e) => return Attempt::Retry { error: format!("HTTP {status}: {e}"), retry_after: None },
        };
        if (200..300).contains(&status) {
            return Attempt::Done(match std::str::from_utf8(&bytes) {
                Ok(text) => parse_completion(text),
                Err(e) => Err(LlmError::Refused(format!(
                    "the response is not UTF-8 (invalid byte at offset {} of {})",
                    e.valid_up_to(),
                    bytes.len()
                ))),
            });
        }
        let text = String::from_utf8_lossy(&bytes);
        let snippet: String = text.chars().take(500).collect();
        if status != 429 && status != 408 && status < 500 {
            return Attempt::Done(Err(LlmError::Status { status, body: snippet }));
        }
        Attempt::Retry { error: format!("HTTP {status}: {snippet}"), retry_after }
    }
}

/// Longest LLM response read: a completion is a few KiB; a server must not be able to make the daemon buffer an
/// endless body.
pub const RESPONSE_BODY_LIMIT: usize = 1024 * 1024;
/// Longest answer (message content) accepted: the schema bounds a real answer to a few KiB.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Deepest JSON nesting accepted (the answer format needs 5; serde_json's own limit is 128).
pub const MAX_ANSWER_DEPTH: usize = 32;

/// Longest pause between attempts (a server's Retry-After included).
const RETRY_AFTER_MAX: Duration = Duration::from_secs(60);

enum Attempt {
    Done(Result<Completion, LlmError>),
    Retry { error: String, retry_after: Option<Duration> },
}

fn parse_completion(text: &str) -> Result<Completion, LlmError> {
    if let Err(e) = check_depth(text, MAX_ANSWER_DEPTH) {
        return Err(LlmError::Refused(format!("the response {e}")));
    }
    let v: Value = serde_json::from_str(text).map_err(|e| {
        if e.is_eof() {
            LlmError::Refused(format!("the response is truncated JSON ({e})"))
        } else {
            LlmError::NoContent(format!("not JSON ({e}): {:.200}", text))
        }
    })?;
    let choice = &v["choices"][0];
    let content = choice["message"]["content"].as_str().ok_or_else(|| LlmError::NoContent(format!("{:.300}", text)))?.to_string();
    let tokens = |k: &str| v["usage"][k].as_u64().map(|n| n.min(u32::MAX as u64) as u32);
    Ok(Completion {
        content,
        model: v["model"].as_str().map(str::to_string),
        finish_reason: choice["finish_reason"].as_str().map(str::to_string),
        prompt_tokens: tokens("prompt_tokens"),
        completion_tokens: tokens("completion_tokens"),
    })
}

/// Refuses JSON nested deeper than `max` (brackets outside strings), before any parser recurses into it.
pub fn check_depth(text: &str, max: usize) -> Result<(), String> {
    let (mut depth, mut in_str, mut esc) = (0usize, false, false);
    for b in text.bytes() {
        if in_str {
            match b {
                _ if esc => esc = false,
                b'\\' => esc = true,
                b'"' => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return Err(format!("is nested deeper than {max} levels"));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------------------------------
// A JSON value that keeps its keys in order (the schema's property order is the order a grammar-constrained model
// writes them in: story, cited ids, then the analysis; serde_json's map sorts keys).

#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    pub fn str(s: &str) -> Json {
        Json::Str(s.to_string())
    }
    pub fn obj<'a>(fields: impl IntoIterator<Item = (&'a str, Json)>) -> Json {
        Json::Obj(fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }
    pub fn ints(v: impl IntoIterator<Item = i64>) -> Json {
        Json::Arr(v.into_iter().map(Json::Int).collect())
    }
    pub fn strs(v: &[&str]) -> Json {
        Json::Arr(v.iter().map(|s| Json::str(s)).collect())
    }
    /// As a serde_json value (key order lost).
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("JSON converts")
    }
    /// Compact text, keys in order.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).expect("JSON serialises")
    }
}

impl Serialize for Json {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self {
            Json::Null => s.serialize_unit(),
            Json::Bool(b) => s.serialize_bool(*b),
            Json::Int(i) => s.serialize_i64(*i),
            Json::Float(f) => s.serialize_f64(*f),
            Json::Str(t) => s.serialize_str(t),
            Json::Arr(v) => {
                let mut seq = s.serialize_seq(Some(v.len()))?;
                for x in v {
                    seq.serialize_element(x)?;
                }
                seq.end()
            }
            Json::Obj(fields) => {
                let mut map = s.serialize_map(Some(fields.len()))?;
                for (k, v) in fields {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------------------------
// The answer

/// The answer format the model is asked for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LlmAnswer {
    pub summary: String,
    #[serde(default)]
    pub stories: Vec<LlmStory>,
    #[serde(default)]
    pub outlook: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LlmStory {
    /// The story number given in the prompt.
    pub story: usize,
    pub analysis: String,
    /// Assets the story moves. A plain string (or null) from a model without the schema is read as none: free
    /// text about markets cannot be grounded or cited.
    #[serde(default, deserialize_with = "impacts_lenient")]
    pub market_impact: Vec<MarketImpact>,
    /// Ids of the story's recent articles the analysis rests on.
    #[serde(default)]
    pub cited_ids: Vec<i64>,
    /// Earlier articles the model treats as analogues, with why.
    #[serde(default)]
    pub analogues: Vec<LlmAnalogue>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MarketImpact {
    /// The asset, sector, currency or index ("Brent crude", "EUR/USD", "European banks").
    pub asset: String,
    pub direction: Direction,
    pub confidence: Confidence,
    /// Ids of the story's articles this rests on.
    #[serde(default)]
    pub cited_ids: Vec<i64>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Up,
    Down,
    Mixed,
    None,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Confidence {
    Low,
    Medium,
    High,
}

impl Direction {
    pub const ALL: [&'static str; 4] = ["up", "down", "mixed", "none"];
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
            Direction::Mixed => "mixed",
            Direction::None => "none",
        }
    }
}

impl Confidence {
    pub const ALL: [&'static str; 3] = ["low", "medium", "high"];
    pub fn as_str(self) -> &'static str {
        match self {
            Confidence::Low => "low",
            Confidence::Medium => "medium",
            Confidence::High => "high",
        }
    }
}

fn impacts_lenient<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<MarketImpact>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        List(Vec<MarketImpact>),
        Text(#[allow(dead_code)] Option<String>),
    }
    Ok(match Either::deserialize(d)? {
        Either::List(v) => v,
        Either::Text(_) => Vec::new(),
    })
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LlmAnalogue {
    pub id: i64,
    #[serde(default)]
    pub note: Option<String>,
}

/// The format as shown to the model (in the prompt's `schema` variable); with `json_schema` the server enforces
/// [`answer_schema`] as well.
pub const ANSWER_SCHEMA: &str = r#"{
  "summary": "2-3 sentences: the main market-relevant developments of the window",
  "stories": [
    {
      "story": 1,
      "cited_ids": [123, 456],
      "analysis": "what happened and why it matters for markets (1-3 sentences, only facts from the cited articles)",
      "market_impact": [
        {"asset": "Brent crude", "direction": "up|down|mixed|none", "confidence": "low|medium|high", "cited_ids": [123]}
      ],
      "analogues": [{"id": 789, "note": "how the earlier event compares"}]
    }
  ],
  "outlook": "what to watch next (1-2 sentences)"
}"#;

/// Bounds the schema puts on the answer. They keep a schema-filling answer within [`answer_token_budget`]: a real
/// model writes less, a tiny model fills every field to its limit.
pub mod limits {
    pub const SUMMARY_CHARS: u32 = 360;
    pub const OUTLOOK_CHARS: u32 = 200;
    pub const ANALYSIS_CHARS: u32 = 280;
    pub const ASSET_CHARS: u32 = 32;
    pub const NOTE_CHARS: u32 = 120;
    pub const CITED_IDS: usize = 3;
    pub const IMPACTS: usize = 2;
    pub const ANALOGUES: usize = 1;
}

/// What `ask` needs to know about one story of the prompt.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoryInput {
    /// The story number shown in the prompt.
    pub rank: usize,
    /// Its recent (window) articles: the ids it may cite.
    pub article_ids: Vec<i64>,
    /// Earlier articles shown for it (id, published_at ms): analogue candidates (only those dated before the
    /// window are allowed).
    pub history_ids: Vec<(i64, Option<i64>)>,
    /// id -> the text the model saw for that article (title, source name and excerpt; date if shown), for grounding.
    pub texts: Vec<(i64, String)>,
}

fn sorted_unique(ids: impl IntoIterator<Item = i64>) -> Vec<i64> {
    let mut v: Vec<i64> = ids.into_iter().collect();
    v.sort_unstable();
    v.dedup();
    v
}

fn analogue_candidates(s: &StoryInput, window_from: i64) -> Vec<i64> {
    let own: HashSet<i64> = s.article_ids.iter().copied().collect();
    sorted_unique(
        s.history_ids.iter().filter(|(id, p)| !own.contains(id) && p.is_some_and(|p| p < window_from)).map(|(id, _)| *id),
    )
}

fn string_schema(min: u32, max: u32) -> Json {
    let mut f = vec![("type", Json::str("string"))];
    if min > 0 {
        f.push(("minLength", Json::Int(min as i64)));
    }
    f.push(("maxLength", Json::Int(max as i64)));
    Json::obj(f)
}

fn object_schema(props: Vec<(&str, Json)>) -> Json {
    let required = Json::Arr(props.iter().map(|(k, _)| Json::str(k)).collect());
    Json::obj([
        ("type", Json::str("object")),
        ("properties", Json::obj(props)),
        ("required", required),
        ("additionalProperties", Json::Bool(false)),
    ])
}

fn array_schema(items: Json, min: usize, max: usize) -> Json {
    Json::obj([
        ("type", Json::str("array")),
        ("items", items),
        ("minItems", Json::Int(min as i64)),
        ("maxItems", Json::Int(max as i64)),
    ])
}

fn id_enum(ids: &[i64]) -> Json {
    Json::obj([("type", Json::str("integer")), ("enum", Json::ints(ids.iter().copied()))])
}

/// The strict JSON schema of the answer for these stories: each story is its own branch (`anyOf`) in which the
/// story number is that story's, cited ids are an `enum` of its article ids and analogue ids an `enum` of its
/// earlier articles dated before the window. Every property is required and no other is allowed (OpenAI's strict
/// mode asks for that); strings have `maxLength`, arrays `maxItems` (see [`limits`]). Stories without article ids
/// are left out.
pub fn answer_schema(window_from: i64, stories: &[StoryInput]) -> Json {
    use limits::*;
    let branches: Vec<Json> = stories
        .iter()
        .filter(|s| !s.article_ids.is_empty())
        .map(|s| {
            let ids = sorted_unique(s.article_ids.iter().copied());
            let cited = || array_schema(id_enum(&ids), 1, CITED_IDS.min(ids.len()));
            let impact = object_schema(vec![
                ("asset", string_schema(1, ASSET_CHARS)),
                ("direction", Json::obj([("type", Json::str("string")), ("enum", Json::strs(&Direction::ALL))])),
                ("confidence", Json::obj([("type", Json::str("string")), ("enum", Json::strs(&Confidence::ALL))])),
                ("cited_ids", cited()),
            ]);
            let earlier = analogue_candidates(s, window_from);
            let analogues = if earlier.is_empty() {
                array_schema(object_schema(vec![("id", Json::obj([("type", Json::str("integer"))])), ("note", string_schema(0, NOTE_CHARS))]), 0, 0)
            } else {
                array_schema(
                    object_schema(vec![("id", id_enum(&earlier)), ("note", string_schema(0, NOTE_CHARS))]),
                    0,
                    ANALOGUES.min(earlier.len()),
                )
            };
            object_schema(vec![
                ("story", Json::obj([("type", Json::str("integer")), ("enum", Json::ints([s.rank as i64]))])),
                ("cited_ids", cited()),
                ("analysis", string_schema(1, ANALYSIS_CHARS)),
                ("market_impact", array_schema(impact, 0, IMPACTS)),
                ("analogues", analogues),
            ])
        })
        .collect();
    let n = branches.len();
    let item = if n == 1 { branches.into_iter().next().unwrap() } else { Json::obj([("anyOf", Json::Arr(branches))]) };
    object_schema(vec![
        ("summary", string_schema(1, SUMMARY_CHARS)),
        ("stories", array_schema(item, 1.min(n), n)),
        ("outlook", string_schema(0, OUTLOOK_CHARS)),
    ])
}

// ------------------------------------------------------------------------------------------------------------------
// Validation

/// What the validator knows about the input: each story's article ids and retrieved history (id -> date).
pub struct Grounding {
    pub window_from: i64,
    /// story number -> its recent article ids
    pub story_articles: HashMap<usize, HashSet<i64>>,
    /// story number -> retrieved earlier article id -> published_at
    pub story_history: HashMap<usize, HashMap<i64, Option<i64>>>,
}

impl Grounding {
    pub fn from_stories(window_from: i64, stories: &[StoryInput]) -> Grounding {
        Grounding {
            window_from,
            story_articles: stories.iter().map(|s| (s.rank, s.article_ids.iter().copied().collect())).collect(),
            story_history: stories.iter().map(|s| (s.rank, s.history_ids.iter().copied().collect())).collect(),
        }
    }
}

/// Extracts the JSON object from a model's text (tolerates code fences and text around it).
pub fn extract_json(text: &str) -> Option<&str> {
    let start = text.find('{')?;
    let end = text.rfind('}')?;
    (end > start).then(|| &text[start..=end])
}

/// Why an answer is not used.
#[derive(Debug, Clone, PartialEq)]
pub enum AnswerProblem {
    /// Unusable as sent (too large, nested too deep, cut short): refused, not retried.
    Refused(String),
    /// Wrong content (no JSON, wrong format, ids not given...): the model may fix it when told.
    Invalid(String),
}

/// Parses and checks an answer: every story number exists, every cited id is one of that story's input articles
/// (every story cites at least one; market impacts cite only the story's articles), every analogue is from that
/// story's retrieved history and dated before the window. The error lists every problem (it is sent back to the
/// model on the retry). A story answered twice keeps its first answer.
pub fn validate_answer(text: &str, g: &Grounding) -> Result<LlmAnswer, String> {
    match check_answer(text, g) {
        Ok((a, _)) => Ok(a),
        Err(AnswerProblem::Refused(e) | AnswerProblem::Invalid(e)) => Err(e),
    }
}

/// [`validate_answer`] with the kind of problem, and notes on what was left out (duplicate stories).
pub fn check_answer(text: &str, g: &Grounding) -> Result<(LlmAnswer, Vec<String>), AnswerProblem> {
    if text.len() > MAX_ANSWER_BYTES {
        return Err(AnswerProblem::Refused(format!("the answer is {} bytes, more than the {MAX_ANSWER_BYTES} accepted", text.len())));
    }
    let json = extract_json(text).ok_or_else(|| {
        if text.contains('{') {
            AnswerProblem::Refused("the answer is truncated: its JSON object never closes".into())
        } else {
            AnswerProblem::Invalid("the answer contains no JSON object".into())
        }
    })?;
    check_depth(json, MAX_ANSWER_DEPTH).map_err(|e| AnswerProblem::Refused(format!("the answer {e}")))?;
    let mut answer: LlmAnswer = serde_json::from_str(json).map_err(|e| {
        if e.is_eof() {
            AnswerProblem::Refused(format!("the answer is truncated JSON ({e})"))
        } else {
            AnswerProblem::Invalid(format!("the JSON does not match the format: {e}"))
        }
    })?;
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    if answer.summary.trim().is_empty() {
        problems.push("summary is empty".to_string());
    }
    let mut seen = HashSet::new();
    answer.stories.retain(|s| {
        let first = seen.insert(s.story);
        if !first {
            notes.push(format!("story {}: answered twice, the second answer was left out", s.story));
        }
        first
    });
    for s in &answer.stories {
        let Some(articles) = g.story_articles.get(&s.story) else {
            problems.push(format!("story {} does not exist", s.story));
            continue;
        };
        if s.analysis.trim().is_empty() {
            problems.push(format!("story {}: analysis is empty", s.story));
        }
        if s.cited_ids.is_empty() {
            problems.push(format!("story {}: cites no article id", s.story));
        }
        let impact_ids = s.market_impact.iter().flat_map(|m| m.cited_ids.iter());
        for id in s.cited_ids.iter().chain(impact_ids) {
            if !articles.contains(id) {
                problems.push(format!("story {}: cited id {id} is not one of this story's articles", s.story));
            }
        }
        let history = g.story_history.get(&s.story);
        for a in &s.analogues {
            match history.and_then(|h| h.get(&a.id)) {
                None => problems.push(format!("story {}: analogue {} is not one of the earlier articles given", s.story, a.id)),
                Some(Some(published)) if *published >= g.window_from => {
                    problems.push(format!("story {}: analogue {} is not dated before the window", s.story, a.id))
                }
                Some(None) => problems.push(format!("story {}: analogue {} has no date", s.story, a.id)),
                Some(Some(_)) => {}
            }
        }
    }
    problems.dedup();
    if problems.is_empty() {
        Ok((answer, notes))
    } else {
        Err(AnswerProblem::Invalid(problems.join("; ")))
    }
}

// ------------------------------------------------------------------------------------------------------------------
// Neutralising links and mentions

static MD_LINK: LazyLock<Regex> = LazyLock::new(|| Regex::new(r#"!?\[([^\[\]\n]{0,300})\]\(\s*<?[^()\s<>]*>?(?:\s+"[^"\n]*")?\s*\)"#).unwrap());
static MD_REF_LINK: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\[([^\[\]\n]{1,300})\]\[[^\[\]\n]{0,100}\]").unwrap());
static MD_REF_DEF: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?m)^[ \t]*\[[^\[\]\n]+\]:[ \t]*\S+.*$").unwrap());
static ANGLE_LINK: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)<(?:https?|ftp|mailto|tel|slack|discord)[:][^<>|\s]*(?:\|([^<>]*))?>").unwrap());
static HTML_A: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?i)</?a(?:\s[^<>]*)?>").unwrap());
static ANGLE_MENTION: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"<([@#!])([&!]?)([^<>\s|]{1,80})(?:\|([^<>]*))?>").unwrap());
static URL: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?i)\b(?:(?:https?|ftp)://|www\.)[^\s<>()\[\]{}]+").unwrap());
static SCHEME: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?i)\b(?:mailto|javascript|data|tel):\S+").unwrap());
static DOMAIN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b((?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+)(com|net|org|io|co|info|biz|ru|cn|uk|de|fr|jp|kr|xyz|me|ly|gg|app|dev|link|top|site|online|us|eu|tv|to|cc|sh|ai)\b(/[^\s<>()]*)?",
    )
    .unwrap()
});
static AT_ALL: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?i)@(everyone|here|channel|all)\b").unwrap());
static SPACES: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"[ \t]{2,}").unwrap());

const ZWSP: char = '\u{200B}';

/// Makes links and mentions in model-written text inert on every target: a markdown link keeps its text only,
/// bare URLs (and `mailto:`/`javascript:` links) are removed, bare domains are defanged (`example[.]com`), Slack
/// `<url|text>` becomes its text, `<@U123>`/`<#C1>`/`<@&role>` are removed (`<@U1|name>` keeps the name, inert),
/// `<!channel>`/`<!here>` become plain words, `@everyone`/`@here`/`@channel` get a zero-width space after the `@`.
/// Only newsd renders links (from the articles' stored URLs).
pub fn neutralise(text: &str) -> String {
    let t = MD_LINK.replace_all(text, "$1");
    let t = MD_REF_LINK.replace_all(&t, "$1");
    let t = MD_REF_DEF.replace_all(&t, "");
    let t = ANGLE_LINK.replace_all(&t, "$1");
    let t = HTML_A.replace_all(&t, "");
    let t = ANGLE_MENTION.replace_all(&t, |c: &regex::Captures| {
        let label = c.get(4).map(|m| m.as_str()).filter(|s| !s.is_empty());
        match (&c[1], label) {
            (_, Some(l)) => l.replace('@', &format!("@{ZWSP}")),
            ("!", None) => c[3].split('^').next().unwrap_or("").to_string(),
            // A user, role or channel id means nothing to a reader: gone.
            _ => String::new(),
        }
    });
    let t = URL.replace_all(&t, "");
    let t = SCHEME.replace_all(&t, "");
    let t = DOMAIN.replace_all(&t, |c: &regex::Captures| {
        let mut out = c[1].trim_end_matches('.').replace('.', "[.]");
        out.push_str("[.]");
        out.push_str(&c[2]);
        if let Some(p) = c.get(3) {
            out.push_str(p.as_str());
        }
        out
    });
    let t = AT_ALL.replace_all(&t, |c: &regex::Captures| format!("@{ZWSP}{}", &c[1]));
    let t = SPACES.replace_all(&t, " ");
    t.lines().map(str::trim_end).collect::<Vec<_>>().join("\n").trim().to_string()
}

// ------------------------------------------------------------------------------------------------------------------
// Grounding: every number, ticker and capitalised name must occur in the articles the text rests on

static NUMBER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\d+(?:[.,]\d+)*").unwrap());
static THOUSANDS: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^\d{1,3}(?:,\d{3})+(?:\.\d+)?$").unwrap());
static DOTTED_ABBREV: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\b(?:[A-Za-z]\.){2,}").unwrap());
static STORY_REF: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?i)\b(?:story|stories|id|ids|article)\s*#?\s*\d+").unwrap());

/// Capitalised words and all-caps tokens that are not claims: sentence words, dates, generic market terms and
/// major currency codes (naming a currency is not inventing a fact).
pub const NOT_NAMES: &[&str] = &[
    "i", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday", "january", "february", "march",
    "april", "may", "june", "july", "august", "september", "october", "november", "december", "story", "stories",
    "gdp", "cpi", "ppi", "pmi", "ipo", "etf", "etfs", "fx", "qe", "qt", "eps", "ceo", "cfo", "yoy", "ytd", "am", "pm",
    "ok", "usd", "eur", "jpy", "gbp", "cny", "chf", "krw", "aud", "cad", "rub", "inr", "hkd", "sgd", "try", "mxn",
    "brl", "zar", "sek", "nok",
];

/// Words that start a sentence without being part of a name ("The Federal Reserve": "The" is not checked).
const STARTERS: &[&str] = &[
    "the", "a", "an", "this", "that", "these", "those", "in", "on", "at", "for", "but", "and", "as", "with", "after",
    "before", "while", "meanwhile", "however", "if", "when", "its", "their", "his", "her", "it", "they", "we", "both",
    "some", "many", "most", "all", "no", "any", "by", "from", "to", "of", "over", "under", "despite", "amid",
    "following", "also", "further", "still", "yet", "so", "thus", "overall", "investors", "markets", "analysts",
];

const CONNECTORS: &[&str] = &["of", "and", "&", "de", "for", "the", "du", "von", "van"];

fn norm_number(raw: &str) -> String {
    let s = if THOUSANDS.is_match(raw) {
        raw.replace(',', "")
    } else if raw.contains(',') && !raw.contains('.') && raw.matches(',').count() == 1 {
        raw.replace(',', ".")
    } else {
        raw.replace(',', "")
    };
    let s = if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s };
    let t = s.trim_start_matches('0');
    if t.is_empty() || t.starts_with('.') {
        format!("0{t}")
    } else {
        t.to_string()
    }
}

/// The numbers and words of the texts a claim may rest on.
#[derive(Default)]
struct Evidence {
    numbers: HashSet<String>,
    words: HashSet<String>,
}

impl Evidence {
    fn add(&mut self, text: &str) {
        let undotted = DOTTED_ABBREV.replace_all(text, |c: &regex::Captures| c[0].replace('.', ""));
        for m in NUMBER.find_iter(&undotted) {
            self.numbers.insert(norm_number(m.as_str()));
            // "1.5bn" may be written "1,500" or "1.5": both forms of a decimal count.
            if let Some((int, _)) = m.as_str().split_once('.') {
                self.numbers.insert(norm_number(int));
            }
        }
        for w in undotted.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
            self.words.insert(w.to_lowercase());
        }
    }
}

/// The tokens of one sentence that its evidence does not contain.
fn unsupported(sentence: &str, ev: &Evidence, ok_numbers: &HashSet<String>) -> Vec<String> {
    let mut missing: Vec<String> = Vec::new();
    let mut miss = |t: String| {
        if !missing.contains(&t) {
            missing.push(t);
        }
    };
    let undotted = DOTTED_ABBREV.replace_all(sentence, |c: &regex::Captures| c[0].replace('.', ""));
    let without_refs = STORY_REF.replace_all(&undotted, "");
    for m in NUMBER.find_iter(&without_refs) {
        let n = norm_number(m.as_str());
        if !ev.numbers.contains(&n) && !ok_numbers.contains(&n) {
            miss(m.as_str().to_string());
        }
    }
    // Words, with their position: names are runs of capitalised words (connectors allowed inside).
    let words: Vec<&str> = without_refs
        .split(|c: char| c.is_whitespace() || matches!(c, '/' | '(' | ')' | '"' | '“' | '”' | ',' | ';' | ':'))
        .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric() && c != '&'))
        .map(|w| w.strip_suffix("'s").or_else(|| w.strip_suffix("’s")).unwrap_or(w))
        .filter(|w| !w.is_empty())
        .collect();
    let is_ticker = |w: &str| (2..=5).contains(&w.len()) && w.chars().all(|c| c.is_ascii_uppercase());
    let is_cap = |w: &str| {
        let mut cs = w.chars();
        cs.next().is_some_and(|c| c.is_uppercase()) && w.chars().any(|c| c.is_lowercase())
    };
    let known = |w: &str| {
        let l = w.to_lowercase();
        ev.words.contains(&l)
            || NOT_NAMES.contains(&l.as_str())
            || l.split(|c: char| !c.is_alphanumeric()).filter(|p| !p.is_empty()).all(|p| ev.words.contains(p))
    };
    let mut i = 0;
    while i < words.len() {
        let w = words[i];
        if is_ticker(w) {
            if !known(w) {
                miss(w.to_string());
            }
            i += 1;
            continue;
        }
        if !is_cap(w) {
            i += 1;
            continue;
        }
        // A run of capitalised words, connectors allowed between two of them.
        let start = i;
        let mut run = vec![w];
        let mut j = i + 1;
        while j < words.len() {
            if is_cap(words[j]) {
                run.push(words[j]);
                j += 1;
            } else if CONNECTORS.contains(&words[j].to_lowercase().as_str()) && j + 1 < words.len() && is_cap(words[j + 1]) {
                j += 1;
            } else {
                break;
            }
        }
        i = j;
        let mut names: &[&str] = &run;
        if start == 0 {
            // Sentence-initial: a single capitalised word is ordinary; a leading starter word is not a name.
            if names.len() == 1 {
                continue;
            }
            if STARTERS.contains(&names[0].to_lowercase().as_str()) {
                names = &names[1..];
            }
        }
        for n in names {
            if !known(n) {
                miss(n.to_string());
            }
        }
    }
    missing
}

/// Sentence spans of a text (a sentence ends at . ! ? or a line break followed by space; "U.S." and "7.3" do not
/// end one).
fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    for (k, &(i, c)) in chars.iter().enumerate() {
        let next = chars.get(k + 1).map(|x| x.1);
        let end = match c {
            '\n' => true,
            '!' | '?' | '。' => next.is_none_or(char::is_whitespace),
            '.' => {
                let word_before: String =
                    text[start..i].chars().rev().take_while(|c| !c.is_whitespace()).collect::<String>().chars().rev().collect();
                let abbrev = word_before.chars().count() == 1 && word_before.chars().all(char::is_uppercase)
                    || word_before.contains('.')
                    || matches!(word_before.as_str(), "Mr" | "Mrs" | "Ms" | "Dr" | "St" | "Inc" | "Corp" | "Co" | "Ltd" | "vs" | "No");
                next.is_none_or(char::is_whitespace) && !abbrev
            }
            _ => false,
        };
        if end {
            let e = i + c.len_utf8();
            if !text[start..e].trim().is_empty() {
                out.push(&text[start..e]);
            }
            start = e;
        }
    }
    if !text[start..].trim().is_empty() {
        out.push(&text[start..]);
    }
    out
}

/// Keeps the sentences of `text` whose numbers, tickers and names occur in the evidence; records the others.
fn ground_text(text: &str, ev: &Evidence, ok_numbers: &HashSet<String>, place: &str, dropped: &mut Vec<String>) -> String {
    let clean = neutralise(text);
    let mut kept: Vec<&str> = Vec::new();
    for s in sentences(&clean) {
        let missing = unsupported(s, ev, ok_numbers);
        if missing.is_empty() {
            kept.push(s.trim());
        } else {
            dropped.push(format!("{place}: \"{}\" (not in the cited articles: {})", s.trim(), missing.join(", ")));
        }
    }
    kept.join(" ")
}

/// Grounds and neutralises an answer in place; returns the dropped claims ("story 2 analysis: \"Brent jumped 7.3%
/// to $61.20.\" (not in the cited articles: 7.3, 61.20)").
///
/// Evidence: a story's analysis and its market impacts rest on the articles they cite (the story's cited ids;
/// impacts: their own, else the story's); an analogue note also on that earlier article; the summary and outlook
/// on every text given. Story numbers and ids given may appear as numbers. A market impact whose asset is not
/// supported is dropped whole; a sentence elsewhere is dropped alone. A field can end up empty (the caller keeps
/// its own text there).
///
/// What is checked, per sentence: numbers (any digits; "1,234.50" = "1234.5"; a decimal's integer part also counts,
/// so "3%" stands on "3.4%"), all-caps tokens of 2-5 letters (tickers, acronyms; "U.S." in an article = "US"), and
/// capitalised words mid-sentence or in a run of capitalised words ("Goldman Sachs", "Bank of Japan"), each word
/// case-insensitively. Not checked: a single capitalised word opening a sentence (it cannot be told from an ordinary
/// word without a dictionary), weekday and month names, and generic terms and major currency codes ([`NOT_NAMES`]:
/// GDP, CPI, USD, EUR...).
pub fn ground_answer(answer: &mut LlmAnswer, stories: &[StoryInput]) -> Vec<String> {
    let texts: HashMap<i64, &str> = stories.iter().flat_map(|s| s.texts.iter().map(|(id, t)| (*id, t.as_str()))).collect();
    let evidence_of = |ids: &mut dyn Iterator<Item = i64>| {
        let mut ev = Evidence::default();
        for id in ids {
            if let Some(t) = texts.get(&id) {
                ev.add(t);
            }
        }
        ev
    };
    let mut ok_numbers: HashSet<String> = HashSet::new();
    for s in stories {
        ok_numbers.insert(s.rank.to_string());
        ok_numbers.extend(s.article_ids.iter().chain(s.history_ids.iter().map(|(id, _)| id)).map(|id| id.to_string()));
    }
    let mut dropped = Vec::new();
    let all = evidence_of(&mut texts.keys().copied());
    answer.summary = ground_text(&answer.summary, &all, &ok_numbers, "summary", &mut dropped);
    if let Some(o) = &answer.outlook {
        let o = ground_text(o, &all, &ok_numbers, "outlook", &mut dropped);
        answer.outlook = (!o.is_empty()).then_some(o);
    }
    for s in &mut answer.stories {
        let own: Vec<i64> = stories.iter().find(|x| x.rank == s.story).map(|x| x.article_ids.clone()).unwrap_or_default();
        let cited: Vec<i64> = if s.cited_ids.iter().any(|id| texts.contains_key(id)) { s.cited_ids.clone() } else { own.clone() };
        let ev = evidence_of(&mut cited.iter().copied());
        s.analysis = ground_text(&s.analysis, &ev, &ok_numbers, &format!("story {} analysis", s.story), &mut dropped);
        s.market_impact.retain_mut(|m| {
            let ids: Vec<i64> = if m.cited_ids.iter().any(|id| texts.contains_key(id)) { m.cited_ids.clone() } else { cited.clone() };
            let ev = evidence_of(&mut ids.iter().copied());
            m.asset = neutralise(&m.asset);
            let missing = unsupported(&format!("x {}", m.asset), &ev, &ok_numbers);
            if missing.is_empty() && !m.asset.trim().is_empty() {
                true
            } else {
                dropped.push(format!(
                    "story {} market impact: \"{}\" {} (not in the cited articles: {})",
                    s.story,
                    m.asset,
                    m.direction.as_str(),
                    missing.join(", ")
                ));
                false
            }
        });
        for a in &mut s.analogues {
            if let Some(note) = &a.note {
                let ev = evidence_of(&mut cited.iter().copied().chain([a.id]));
                let n = ground_text(note, &ev, &ok_numbers, &format!("story {} analogue {}", s.story, a.id), &mut dropped);
                a.note = (!n.is_empty()).then_some(n);
            }
        }
    }
    dropped
}

// ------------------------------------------------------------------------------------------------------------------
// Prompt budget

/// Answer tokens for a brief of `stories` stories: 250 for the summary, outlook and JSON frame, 180 per story (a
/// schema-filling story of [`limits`] is about 750 characters). [`ask`] caps it at `max_tokens`.
pub fn answer_token_budget(stories: usize) -> u32 {
    250 + 180 * stories.min(64) as u32
}

/// The `max_tokens` sent: [`answer_token_budget`] capped by the configured `max_tokens`.
pub fn answer_tokens(cfg: &LlmConfig, stories: usize) -> u32 {
    answer_token_budget(stories).min(cfg.max_tokens).max(1)
}

/// Tokens kept free for the one retry, which repeats the prompt with the problems appended (capped at
/// [`RETRY_NOTE_CHARS`] characters).
pub const RETRY_RESERVE_TOKENS: u32 = 320;
/// Longest list of problems appended to the retry prompt.
pub const RETRY_NOTE_CHARS: usize = 700;
/// Chat template tokens around the two messages (role markers, BOS; gemma's is ~12, ChatML ~10).
pub const TEMPLATE_TOKENS: u32 = 32;

/// A conservative (high) estimate of a text's tokens for an unknown model, with no tokenizer at hand:
/// - ASCII letters, punctuation and spaces: 1 token per 3 characters (English BPE averages ~4; code-like and JSON
///   text ~3);
/// - digits: 1 token each (llama/gemma split numbers into single digits);
/// - other characters (Hangul, CJK, accented letters): 1 token each; 4-byte characters (emoji): 2.
///
/// Safe for small-vocabulary tokenizers (Llama-2/Mistral, 32k tokens, ~3.5 characters per token on English), so it
/// overestimates large vocabularies: on a 2-story news prompt gemma-3 (256k) counted 1,927 tokens where this says
/// 3,104. The prompt gets less than it could, never more than fits; tests/llm.rs checks it against llama.cpp's count.
pub fn estimate_tokens(text: &str) -> u32 {
    let (mut ascii, mut other) = (0u64, 0u64);
    for c in text.chars() {
        if c.is_ascii_digit() {
            other += 1;
        } else if c.is_ascii() {
            ascii += 1;
        } else if c.len_utf8() == 4 {
            other += 2;
        } else {
            other += 1;
        }
    }
    (ascii.div_ceil(3) + other).min(u32::MAX as u64) as u32
}

/// Estimated tokens of a chat prompt (both messages and the template around them).
pub fn estimate_prompt_tokens(system: &str, user: &str) -> u32 {
    estimate_tokens(system) + estimate_tokens(user) + TEMPLATE_TOKENS
}

/// The most prompt tokens that leave room for the answer of `stories` stories and the retry in `context_tokens`.
pub fn prompt_token_limit(cfg: &LlmConfig, stories: usize) -> u32 {
    cfg.context_tokens.saturating_sub(answer_tokens(cfg, stories)).saturating_sub(RETRY_RESERVE_TOKENS)
}

/// How much of the input the prompt shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trim {
    /// Characters of each article's text.
    pub excerpt_chars: usize,
    /// Earlier (history) articles per story.
    pub history_items: usize,
    /// Recent articles per story.
    pub articles_per_story: usize,
    /// Stories (the top ones).
    pub stories: usize,
}

/// Floors of the trimming steps, in the order they are reached.
pub const EXCERPT_FLOOR: usize = 160;
pub const EXCERPT_MIN: usize = 60;

/// One trimming step: `None` when the prompt fits (or nothing is left to cut). Steps: fewer excerpt characters
/// (proportionally, down to 160), history down to 2 then 0 items, articles down to 2 then 1 per story, excerpts
/// down to 60, then fewer stories.
pub fn next_trim(cfg: &LlmConfig, t: Trim, prompt_tokens: u32) -> Option<Trim> {
    let limit = prompt_token_limit(cfg, t.stories).max(1);
    if prompt_tokens <= limit {
        return None;
    }
    let ratio = limit as f64 / prompt_tokens as f64;
    let mut n = t;
    let shrink = |v: usize, floor: usize| ((v as f64 * ratio * 0.95) as usize).clamp(floor.min(v), v.saturating_sub(1).max(floor.min(v)));
    if t.excerpt_chars > EXCERPT_FLOOR {
        n.excerpt_chars = shrink(t.excerpt_chars, EXCERPT_FLOOR);
    } else if t.history_items > 2 {
        n.history_items = 2;
    } else if t.articles_per_story > 2 {
        n.articles_per_story = 2;
    } else if t.history_items > 0 {
        n.history_items = 0;
    } else if t.articles_per_story > 1 {
        n.articles_per_story = 1;
    } else if t.excerpt_chars > EXCERPT_MIN {
        n.excerpt_chars = shrink(t.excerpt_chars, EXCERPT_MIN);
    } else if t.stories > 1 {
        n.stories = ((t.stories as f64 * ratio) as usize).clamp(1, t.stories - 1);
    } else {
        return None;
    }
    Some(n)
}

/// A prompt fitted to the context.
#[derive(Debug, Clone)]
pub struct Fitted {
    pub system: String,
    pub user: String,
    pub trim: Trim,
    /// Estimated prompt tokens ([`estimate_prompt_tokens`]).
    pub prompt_tokens: u32,
    /// The `max_tokens` to send ([`answer_tokens`] for `trim.stories`).
    pub answer_tokens: u32,
    /// False when even the smallest prompt is over [`prompt_token_limit`] (do not send it).
    pub fits: bool,
    /// Renders it took.
    pub renders: usize,
}

/// Renders the prompt (`render(trim) -> (system, user)`), trimming with [`next_trim`] until the estimated prompt,
/// the answer and the retry reserve fit `context_tokens`. At most 16 renders.
pub fn fit_prompt<E>(cfg: &LlmConfig, start: Trim, mut render: impl FnMut(&Trim) -> Result<(String, String), E>) -> Result<Fitted, E> {
    let mut trim = start;
    let mut renders = 0;
    loop {
        let (system, user) = render(&trim)?;
        renders += 1;
        let prompt_tokens = estimate_prompt_tokens(&system, &user);
        let fits = prompt_tokens <= prompt_token_limit(cfg, trim.stories);
        let next = if fits || renders >= 16 { None } else { next_trim(cfg, trim, prompt_tokens) };
        match next {
            Some(t) => trim = t,
            None => {
                return Ok(Fitted { system, user, trim, prompt_tokens, answer_tokens: answer_tokens(cfg, trim.stories), fits, renders })
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------------------------
// The analysis' way in

/// What [`ask`] got.
#[derive(Debug, Clone, PartialEq)]
pub struct AskOutcome {
    /// Validated, grounded and neutralised.
    pub answer: LlmAnswer,
    /// The model the server named.
    pub model: Option<String>,
    /// Claims dropped by grounding, and other parts left out (a story answered twice).
    pub dropped_claims: Vec<String>,
    /// The format the accepted answer was asked with.
    pub response_format: ResponseFormat,
    /// Per story number: the article ids its analysis and market impacts cite (sorted, unique).
    pub citations: Vec<(usize, Vec<i64>)>,
    /// Requests sent (format fallbacks and the retry included; network retries not).
    pub attempts: u32,
    /// The `max_tokens` sent.
    pub max_tokens: u32,
    /// Tokens the server counted for the accepted answer (prompt, completion), when it said.
    pub usage: Option<(u32, u32)>,
}

/// Asks the LLM for the analysis of `stories` with the rendered prompt (`system`, `user`): structured output with
/// fallback ([`LlmClient::complete_structured`]), `max_tokens` from [`answer_tokens`], validation
/// ([`check_answer`]) with one retry listing the problems, then grounding ([`ground_answer`]); a grounded summary
/// that ends up empty counts as a problem too (retried once). Errors: the request failed ([`LlmError::Request`],
/// [`LlmError::Status`]), the answer was refused ([`LlmError::Refused`]: not UTF-8, cut at max_tokens, over 64 KiB,
/// nested deeper than 32), or invalid twice ([`LlmError::Invalid`]).
pub async fn ask(cfg: &LlmConfig, system: &str, user: &str, window_from: i64, stories: &[StoryInput]) -> Result<AskOutcome, LlmError> {
    if stories.iter().all(|s| s.article_ids.is_empty()) {
        return Err(LlmError::NoStories);
    }
    let client = LlmClient::new(cfg)?;
    let schema = answer_schema(window_from, stories);
    let grounding = Grounding::from_stories(window_from, stories);
    let max_tokens = answer_tokens(cfg, stories.len());
    let mut prompt = user.to_string();
    let mut attempts = 0u32;
    for round in 0..2 {
        let (c, format, requests) = client.complete_structured(system, &prompt, max_tokens, &schema).await?;
        attempts += requests;
        if c.finish_reason.as_deref() == Some("length") {
            return Err(LlmError::Refused(format!(
                "the answer was cut at max_tokens ({max_tokens}){}",
                c.completion_tokens.map(|n| format!(" after {n} tokens")).unwrap_or_default()
            )));
        }
        let problems = match check_answer(&c.content, &grounding) {
            Err(AnswerProblem::Refused(e)) => return Err(LlmError::Refused(e)),
            Err(AnswerProblem::Invalid(p)) => p,
            Ok((mut answer, notes)) => {
                let mut dropped = ground_answer(&mut answer, stories);
                if answer.summary.trim().is_empty() && round == 0 {
                    format!("every sentence of the summary was dropped as unsupported by the articles: {}", dropped.join("; "))
                } else {
                    dropped.extend(notes);
                    let citations = answer
                        .stories
                        .iter()
                        .map(|s| (s.story, sorted_unique(s.cited_ids.iter().chain(s.market_impact.iter().flat_map(|m| m.cited_ids.iter())).copied())))
                        .collect();
                    return Ok(AskOutcome {
                        answer,
                        model: c.model,
                        dropped_claims: dropped,
                        response_format: format,
                        citations,
                        attempts,
                        max_tokens,
                        usage: c.prompt_tokens.zip(c.completion_tokens),
                    });
                }
            }
        };
        if round == 1 {
            return Err(LlmError::Invalid(problems));
        }
        tracing::warn!(%problems, "LLM answer invalid; asking once more");
        let note: String = problems.chars().take(RETRY_NOTE_CHARS).collect();
        prompt = format!(
            "{user}\n\nYour previous answer was rejected: {note}.\nAnswer again with ONE JSON object in the required format, \
             citing only the ids given above and only facts stated in the articles."
        );
    }
    unreachable!("two rounds at most")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grounding() -> Grounding {
        Grounding {
            window_from: 1000,
            story_articles: HashMap::from([(1, HashSet::from([10, 11])), (2, HashSet::from([20]))]),
            story_history: HashMap::from([(1, HashMap::from([(5, Some(500)), (6, Some(1500))]))]),
        }
    }

    fn cfg() -> LlmConfig {
        LlmConfig { base_url: "http://user:pw@127.0.0.1:9/v1?key=SECRET".into(), ..LlmConfig::default() }
    }

    #[test]
    fn valid_answer_passes_and_fences_are_tolerated() {
        let text = "```json\n{\"summary\":\"s\",\"stories\":[{\"story\":1,\"analysis\":\"a\",\"cited_ids\":[10],\
                    \"analogues\":[{\"id\":5,\"note\":\"n\"}]}],\"outlook\":\"o\"}\n```";
        let a = validate_answer(text, &grounding()).unwrap();
        assert_eq!(a.stories[0].analogues[0].id, 5);
    }

    #[test]
    fn invented_ids_and_late_analogues_are_refused() {
        let text = r#"{"summary":"s","stories":[{"story":1,"analysis":"a","cited_ids":[10,99],"analogues":[{"id":6},{"id":7}],
                      "market_impact":[{"asset":"oil","direction":"up","confidence":"low","cited_ids":[98]}]},
                      {"story":3,"analysis":"x","cited_ids":[1]},{"story":2,"analysis":"b","cited_ids":[]}]}"#;
        let e = validate_answer(text, &grounding()).unwrap_err();
        assert!(e.contains("cited id 99"), "{e}");
        assert!(e.contains("cited id 98"), "{e}");
        assert!(e.contains("analogue 6 is not dated before"), "{e}");
        assert!(e.contains("analogue 7 is not one of"), "{e}");
        assert!(e.contains("story 3 does not exist"), "{e}");
        assert!(e.contains("story 2: cites no article id"), "{e}");
        assert!(validate_answer("no json here", &grounding()).is_err());
    }

    #[test]
    fn market_impact_is_structured_and_an_old_string_reads_as_none() {
        let a: LlmStory = serde_json::from_str(
            r#"{"story":1,"analysis":"a","cited_ids":[1],"market_impact":[{"asset":"Gold","direction":"mixed","confidence":"high","cited_ids":[1]}]}"#,
        )
        .unwrap();
        assert_eq!(a.market_impact[0].direction, Direction::Mixed);
        assert_eq!(a.market_impact[0].confidence, Confidence::High);
        let back: LlmStory = serde_json::from_value(serde_json::to_value(&a).unwrap()).unwrap();
        assert_eq!(back, a);
        for old in [r#""Bonds up.""#, "null"] {
            let s: LlmStory = serde_json::from_str(&format!(r#"{{"story":1,"analysis":"a","market_impact":{old}}}"#)).unwrap();
            assert!(s.market_impact.is_empty());
        }
        assert!(serde_json::from_str::<LlmStory>(
            r#"{"story":1,"analysis":"a","market_impact":[{"asset":"x","direction":"sideways","confidence":"low"}]}"#
        )
        .is_err());
    }

    #[test]
    fn duplicate_stories_keep_the_first() {
        let text = r#"{"summary":"s","stories":[{"story":1,"analysis":"a","cited_ids":[10]},{"story":1,"analysis":"b","cited_ids":[11]}]}"#;
        let (a, notes) = check_answer(text, &grounding()).unwrap();
        assert_eq!(a.stories.len(), 1);
        assert_eq!(a.stories[0].analysis, "a");
        assert!(notes[0].contains("answered twice"));
    }

    #[test]
    fn bad_answers_are_refused_not_crashed_on() {
        let g = grounding();
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let e = check_answer(&format!("{{\"summary\":{deep}}}"), &g).unwrap_err();
        assert!(matches!(&e, AnswerProblem::Refused(m) if m.contains("nested deeper than 32")), "{e:?}");
        // Nested past serde_json's own limit without the pre-check: an error, not a stack overflow.
        let very = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        assert!(serde_json::from_str::<Value>(&very).is_err());
        let huge = format!("{{\"summary\":\"{}\"}}", "a".repeat(MAX_ANSWER_BYTES));
        assert!(matches!(check_answer(&huge, &g), Err(AnswerProblem::Refused(m)) if m.contains("bytes")));
        let cut = r#"{"summary":"s","stories":[{"story":1,"analysis":"a","cited_ids":[10"#;
        assert!(matches!(check_answer(cut, &g), Err(AnswerProblem::Refused(m)) if m.contains("truncated")));
        let cut2 = r#"{"summary":"s","stories":[{"story":1,"analysis":"a}"#;
        assert!(matches!(check_answer(cut2, &g), Err(AnswerProblem::Refused(m)) if m.contains("truncated")), "{:?}", check_answer(cut2, &g));
        assert!(matches!(check_answer("I think markets will rise.", &g), Err(AnswerProblem::Invalid(_))));
        // Brackets inside strings do not count.
        assert!(check_depth(&format!("{{\"a\":\"{}\"}}", "[".repeat(100)), 32).is_ok());
        // The HTTP body: truncated, nested.
        assert!(matches!(parse_completion(r#"{"choices":[{"message":{"content":"x"#), Err(LlmError::Refused(m)) if m.contains("truncated")));
        assert!(matches!(parse_completion(&deep), Err(LlmError::Refused(_))));
    }

    fn story(rank: usize, ids: &[i64], history: &[(i64, Option<i64>)], texts: &[(i64, &str)]) -> StoryInput {
        StoryInput {
            rank,
            article_ids: ids.to_vec(),
            history_ids: history.to_vec(),
            texts: texts.iter().map(|(i, t)| (*i, t.to_string())).collect(),
        }
    }

    #[test]
    fn schema_has_per_story_enums_in_writing_order() {
        let stories = [
            story(1, &[11, 10], &[(5, Some(500)), (6, Some(1500)), (7, None)], &[]),
            story(2, &[20], &[], &[]),
            story(3, &[], &[], &[]),
        ];
        let s = answer_schema(1000, &stories);
        let v = s.to_value();
        assert_eq!(v["additionalProperties"], false);
        assert_eq!(v["required"], serde_json::json!(["summary", "stories", "outlook"]));
        assert_eq!(v["properties"]["stories"]["maxItems"], 2, "the story without ids is left out");
        let b = &v["properties"]["stories"]["items"]["anyOf"];
        assert_eq!(b[0]["properties"]["story"]["enum"], serde_json::json!([1]));
        assert_eq!(b[0]["properties"]["cited_ids"]["items"]["enum"], serde_json::json!([10, 11]));
        assert_eq!(b[0]["properties"]["analogues"]["items"]["properties"]["id"]["enum"], serde_json::json!([5]));
        let mi = &b[0]["properties"]["market_impact"]["items"]["properties"];
        assert_eq!(mi["direction"]["enum"], serde_json::json!(["up", "down", "mixed", "none"]));
        assert_eq!(mi["confidence"]["enum"], serde_json::json!(["low", "medium", "high"]));
        assert_eq!(mi["cited_ids"]["items"]["enum"], serde_json::json!([10, 11]));
        assert_eq!(mi["asset"]["maxLength"], limits::ASSET_CHARS);
        assert_eq!(b[1]["properties"]["story"]["enum"], serde_json::json!([2]));
        assert_eq!(b[1]["properties"]["analogues"]["maxItems"], 0);
        assert_eq!(b[1]["properties"]["cited_ids"]["maxItems"], 1);
        let text = s.to_text();
        let pos = |k: &str| text.find(k).unwrap();
        assert!(pos("\"story\"") < pos("\"cited_ids\"") && pos("\"cited_ids\"") < pos("\"analysis\""), "{text}");
        assert!(pos("\"summary\"") < pos("\"stories\""));
    }

    #[test]
    fn request_body_per_format() {
        let c = LlmConfig { seed: Some(7), ..cfg() };
        let schema = answer_schema(0, &[story(1, &[1], &[], &[])]);
        let b = request_body(&c, "sys", "usr", 610, ResponseFormat::JsonSchema, Some(&schema)).to_value();
        assert_eq!(b["max_tokens"], 610);
        assert_eq!(b["seed"], 7);
        assert_eq!(b["response_format"]["type"], "json_schema");
        assert_eq!(b["response_format"]["json_schema"]["name"], "market_brief");
        assert_eq!(b["response_format"]["json_schema"]["strict"], true);
        assert_eq!(b["response_format"]["json_schema"]["schema"], schema.to_value());
        let b = request_body(&c, "sys", "usr", 610, ResponseFormat::JsonObject, Some(&schema)).to_value();
        assert_eq!(b["response_format"], serde_json::json!({"type": "json_object"}));
        let b = request_body(&c, "sys", "usr", 610, ResponseFormat::PromptOnly, Some(&schema)).to_value();
        assert!(b.get("response_format").is_none());
        assert_eq!(b["messages"][1]["content"], "usr");
    }

    #[test]
    fn endpoint_key_has_no_secrets() {
        let k = endpoint_key(&cfg());
        assert!(!k.contains("SECRET") && !k.contains("pw") && !k.contains("user"), "{k}");
        assert!(k.starts_with("http://127.0.0.1:9/v1/chat/completions"), "{k}");
    }

    #[test]
    fn links_and_mentions_are_neutralised() {
        let t = neutralise(
            "See [the Fed](https://evil.example/x) and ![img](http://x/y.png) or <https://a.b/c|click> \
             https://bit.ly/abc www.evil.com/p evil.com/phish <@U123ABC> <@&999> <#C42> <!channel> <!here> \
             @everyone @here <a href=\"http://x\">x</a> [ref][1]\n[1]: http://ref.example\nmailto:a@b.c javascript:alert(1)",
        );
        for bad in ["http", "www.", "evil.com", "bit.ly", "<@", "<!", "<#", "(", "href", "ref.example", "mailto", "javascript"] {
            assert!(!t.contains(bad), "{bad:?} left in {t:?}");
        }
        assert!(t.contains("the Fed") && t.contains("click") && t.contains("img") && t.contains("ref"));
        assert!(!t.contains("@everyone") && !t.contains("@here") && t.contains(&format!("@{ZWSP}everyone")));
        assert!(!t.contains("U123ABC") && !t.contains("999") && !t.contains("C42"), "{t}");
        assert_eq!(neutralise("ask <@U1|bob> or <!subteam^S1>"), "ask bob or subteam");
        assert!(t.contains("evil[.]com"));
        // Ordinary text is untouched.
        let plain = "The U.S. Federal Reserve raised rates by 0.25 percentage points to 1.5%; e.g. banks rose.";
        assert_eq!(neutralise(plain), plain);
    }

    #[test]
    fn invented_figures_and_names_are_dropped() {
        let texts = [(10, "Oil prices rose on Tuesday after OPEC agreed to cut output by 1.2 million barrels a day, \
                           Reuters reported. Saudi Arabia's energy minister Khalid al-Falih said compliance was 90%."),
                     (11, "The U.S. dollar slipped against the yen.")];
        let stories = [story(1, &[10, 11], &[], &texts)];
        let mut a = LlmAnswer {
            summary: "OPEC agreed to cut output by 1.2 million barrels a day. Goldman Sachs sees 20% upside.".into(),
            stories: vec![LlmStory {
                story: 1,
                analysis: "Brent jumped 7.3% to $61.20 after the deal. Saudi Arabia said compliance was 90%. \
                           The US dollar slipped, see [Reuters](https://reuters.com/x). Story 1 rests on article 10."
                    .into(),
                market_impact: vec![
                    MarketImpact { asset: "Oil".into(), direction: Direction::Up, confidence: Confidence::Medium, cited_ids: vec![10] },
                    MarketImpact { asset: "XLE".into(), direction: Direction::Up, confidence: Confidence::Low, cited_ids: vec![10] },
                    MarketImpact { asset: "USD".into(), direction: Direction::Down, confidence: Confidence::Low, cited_ids: vec![11] },
                ],
                cited_ids: vec![10, 11],
                analogues: vec![],
            }],
            outlook: Some("Watch the OPEC meeting on 25 May.".into()),
        };
        let dropped = ground_answer(&mut a, &stories);
        assert_eq!(a.summary, "OPEC agreed to cut output by 1.2 million barrels a day.");
        assert_eq!(
            a.stories[0].analysis,
            "Saudi Arabia said compliance was 90%. The US dollar slipped, see Reuters. Story 1 rests on article 10."
        );
        let assets: Vec<&str> = a.stories[0].market_impact.iter().map(|m| m.asset.as_str()).collect();
        assert_eq!(assets, ["Oil", "USD"]);
        assert_eq!(a.outlook, None);
        let all = dropped.join("\n");
        assert!(all.contains("Brent jumped 7.3% to $61.20") && all.contains("(not in the cited articles: 7.3, 61.20)"), "{all}");
        assert!(all.contains("20, Goldman, Sachs"), "{all}");
        assert!(all.contains("XLE"), "{all}");
        assert!(all.contains("25"), "{all}");
        assert_eq!(dropped.len(), 4, "{all}");
    }

    #[test]
    fn numbers_match_in_their_usual_forms() {
        let mut ev = Evidence::default();
        ev.add("Shares fell 3.50 percent to 1,234.5 yen; the bank earned $2bn, or 2.0 billion, in 2017.");
        let ok = HashSet::new();
        for s in ["Shares fell 3.5% to 1234.5 yen.", "It earned 2 billion dollars in 2017.", "Shares fell 3.50%."] {
            assert!(unsupported(s, &ev, &ok).is_empty(), "{s}: {:?}", unsupported(s, &ev, &ok));
        }
        assert_eq!(unsupported("Shares fell 4% to 1,300 yen.", &ev, &ok), ["4", "1,300"]);
        assert_eq!(sentences("The U.S. rate rose 0.25 points. Then it fell! Why?"), ["The U.S. rate rose 0.25 points.", " Then it fell!", " Why?"]);
    }

    #[test]
    fn budget_scales_with_stories_and_a_4k_model_fits() {
        assert_eq!(answer_token_budget(2), 610);
        assert_eq!(answer_token_budget(8), 1690);
        let c = LlmConfig { context_tokens: 4096, max_tokens: 2048, ..cfg() };
        assert_eq!(answer_tokens(&c, 8), 1690);
        assert_eq!(answer_tokens(&LlmConfig { max_tokens: 1000, ..c.clone() }, 8), 1000);
        assert!(estimate_tokens("hello world") >= 3);
        assert_eq!(estimate_tokens("2017"), 4);
        assert_eq!(estimate_tokens("한국은행"), 4);
        // A render whose size follows the trim, like the real template: 8 stories x 4 articles x excerpt + history.
        let render = |t: &Trim| -> Result<(String, String), ()> {
            let mut u = String::new();
            for s in 0..t.stories {
                u.push_str(&format!("## Story {}\n", s + 1));
                for a in 0..t.articles_per_story {
                    u.push_str(&format!("<<<NEWS id={a} source=x published=2017-01-01\nTitle: a headline of some length\n"));
                    u.push_str(&"word ".repeat(t.excerpt_chars / 5));
                    u.push_str("\nNEWS>>>\n");
                }
                for _ in 0..t.history_items {
                    u.push_str("<<<NEWS id=1 source=x published=2016-01-01 similarity=0.55\nTitle: an earlier headline\nNEWS>>>\n");
                }
            }
            Ok(("system prompt ".repeat(100), u))
        };
        let start = Trim { excerpt_chars: 600, history_items: 5, articles_per_story: 4, stories: 8 };
        let f = fit_prompt(&c, start, render).unwrap();
        assert!(f.fits, "{f:?}");
        assert!(f.prompt_tokens + f.answer_tokens + RETRY_RESERVE_TOKENS <= 4096);
        assert!(f.trim.excerpt_chars < 600 && f.trim.stories >= 4, "{:?}", f.trim);
        // 8k: the default fits without trimming much.
        let big = LlmConfig { context_tokens: 8192, ..c.clone() };
        let f8 = fit_prompt(&big, start, render).unwrap();
        assert!(f8.fits && f8.trim.stories == 8 && f8.trim.excerpt_chars >= f.trim.excerpt_chars, "{:?}", f8.trim);
        // Too small for anything: reported, not looped on.
        let tiny = LlmConfig { context_tokens: 600, ..c };
        let ft = fit_prompt(&tiny, start, render).unwrap();
        assert!(!ft.fits && ft.renders <= 16);
    }

    #[test]
    fn fallback_order_and_context_errors() {
        assert_eq!(ResponseFormat::JsonSchema.fallback(), Some(ResponseFormat::JsonObject));
        assert_eq!(ResponseFormat::JsonObject.fallback(), Some(ResponseFormat::PromptOnly));
        assert_eq!(ResponseFormat::PromptOnly.fallback(), None);
        assert!(is_context_error("the request exceeds the available context size"));
        assert!(!is_context_error("response_format json_schema is not supported"));
    }
}
