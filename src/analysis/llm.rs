//! An OpenAI-compatible chat-completions client (OpenAI, llama.cpp `llama-server`, vLLM, Ollama's /v1...), and the
//! JSON answer format the analysis asks for, with its validation.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
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
}

pub struct LlmClient {
    http: reqwest::Client,
    cfg: LlmConfig,
    api_key: Option<String>,
}

/// What the model returned, with the usage the server reported.
#[derive(Debug, Clone)]
pub struct Completion {
    pub content: String,
    pub model: Option<String>,
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

    /// One chat completion, retried (network errors, timeouts, 429, 5xx) with exponential backoff.
    pub async fn chat(&self, system: &str, user: &str) -> Result<Completion, LlmError> {
        let mut body = serde_json::json!({
            "model": self.cfg.model,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": user},
            ],
            "temperature": self.cfg.temperature,
            "max_tokens": self.cfg.max_tokens,
            "stream": false,
        });
        if self.cfg.json_mode {
            body["response_format"] = serde_json::json!({"type": "json_object"});
        }
        if let Some(seed) = self.cfg.seed {
            body["seed"] = serde_json::json!(seed);
        }
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

    /// One request: its final result, or why to try again (and when, if the server said).
    async fn attempt(&self, body: &serde_json::Value) -> Attempt {
        let mut req = self.http.post(self.endpoint()).json(body);
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
                return Attempt::Done(Err(LlmError::NoContent(format!("HTTP {status}: {e}"))))
            }
            Err(e) => return Attempt::Retry { error: format!("HTTP {status}: {e}"), retry_after: None },
        };
        let text = String::from_utf8_lossy(&bytes);
        if (200..300).contains(&status) {
            return Attempt::Done(parse_completion(&text));
        }
        let snippet: String = text.chars().take(500).collect();
        if status != 429 && status != 408 && status < 500 {
            return Attempt::Done(Err(LlmError::Status { status, body: snippet }));
        }
        Attempt::Retry { error: format!("HTTP {status}: {snippet}"), retry_after }
    }
}

/// Longest LLM answer read: a completion is a few KiB (at most some hundreds); a server must not be able to make
/// the daemon buffer an endless body.
pub const RESPONSE_BODY_LIMIT: usize = 8 * 1024 * 1024;

/// Longest pause between attempts (a server's Retry-After included).
const RETRY_AFTER_MAX: Duration = Duration::from_secs(60);

enum Attempt {
    Done(Result<Completion, LlmError>),
    Retry { error: String, retry_after: Option<Duration> },
}

fn parse_completion(text: &str) -> Result<Completion, LlmError> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| LlmError::NoContent(format!("not JSON ({e}): {:.200}", text)))?;
    let content = v["choices"][0]["message"]["content"]
        .as_str()
        .ok_or_else(|| LlmError::NoContent(format!("{:.300}", text)))?
        .to_string();
    Ok(Completion { content, model: v["model"].as_str().map(str::to_string) })
}

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
    #[serde(default)]
    pub market_impact: Option<String>,
    /// Ids of the story's recent articles the analysis rests on.
    #[serde(default)]
    pub cited_ids: Vec<i64>,
    /// Earlier articles the model treats as analogues, with why.
    #[serde(default)]
    pub analogues: Vec<LlmAnalogue>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LlmAnalogue {
    pub id: i64,
    #[serde(default)]
    pub note: Option<String>,
}

/// The format as shown to the model (in the prompt's `schema` variable).
pub const ANSWER_SCHEMA: &str = r#"{
  "summary": "2-4 sentences: the main market-relevant developments of the window",
  "stories": [
    {
      "story": 1,
      "analysis": "what happened and why it matters for markets (2-5 sentences)",
      "market_impact": "assets/sectors/regions likely affected, direction and confidence",
      "cited_ids": [123, 456],
      "analogues": [{"id": 789, "note": "how the earlier event compares"}]
    }
  ],
  "outlook": "what to watch next (1-3 sentences)"
}"#;

/// What the validator knows about the input: each story's article ids and retrieved history (id -> date).
pub struct Grounding {
    pub window_from: i64,
    /// story number -> its recent article ids
    pub story_articles: HashMap<usize, HashSet<i64>>,
    /// story number -> retrieved earlier article id -> published_at
    pub story_history: HashMap<usize, HashMap<i64, Option<i64>>>,
}

/// Extracts the JSON object from a model's text (tolerates code fences and text around it).
pub fn extract_json(text: &str) -> Option<&str> {
    let start = text.find('{')?;
    let end = text.rfind('}')?;
    (end > start).then(|| &text[start..=end])
}

/// Parses and checks an answer: every story number exists, every cited id is one of that story's input articles
/// (every story cites at least one), every analogue is from that story's retrieved history and dated before the
/// window. The error lists every problem (it is sent back to the model on the retry).
pub fn validate_answer(text: &str, g: &Grounding) -> Result<LlmAnswer, String> {
    let json = extract_json(text).ok_or_else(|| "the answer contains no JSON object".to_string())?;
    let answer: LlmAnswer = serde_json::from_str(json).map_err(|e| format!("the JSON does not match the format: {e}"))?;
    let mut problems = Vec::new();
    if answer.summary.trim().is_empty() {
        problems.push("summary is empty".to_string());
    }
    let mut seen = HashSet::new();
    for s in &answer.stories {
        let Some(articles) = g.story_articles.get(&s.story) else {
            problems.push(format!("story {} does not exist", s.story));
            continue;
        };
        if !seen.insert(s.story) {
            problems.push(format!("story {} appears twice", s.story));
        }
        if s.analysis.trim().is_empty() {
            problems.push(format!("story {}: analysis is empty", s.story));
        }
        if s.cited_ids.is_empty() {
            problems.push(format!("story {}: cites no article id", s.story));
        }
        for id in &s.cited_ids {
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
    if problems.is_empty() {
        Ok(answer)
    } else {
        Err(problems.join("; "))
    }
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

    #[test]
    fn valid_answer_passes_and_fences_are_tolerated() {
        let text = "```json\n{\"summary\":\"s\",\"stories\":[{\"story\":1,\"analysis\":\"a\",\"cited_ids\":[10],\
                    \"analogues\":[{\"id\":5,\"note\":\"n\"}]}],\"outlook\":\"o\"}\n```";
        let a = validate_answer(text, &grounding()).unwrap();
        assert_eq!(a.stories[0].analogues[0].id, 5);
    }

    #[test]
    fn invented_ids_and_late_analogues_are_refused() {
        let text = r#"{"summary":"s","stories":[{"story":1,"analysis":"a","cited_ids":[10,99],"analogues":[{"id":6},{"id":7}]},
                      {"story":3,"analysis":"x","cited_ids":[1]},{"story":2,"analysis":"b","cited_ids":[]}]}"#;
        let e = validate_answer(text, &grounding()).unwrap_err();
        assert!(e.contains("cited id 99"), "{e}");
        assert!(e.contains("analogue 6 is not dated before"), "{e}");
        assert!(e.contains("analogue 7 is not one of"), "{e}");
        assert!(e.contains("story 3 does not exist"), "{e}");
        assert!(e.contains("story 2: cites no article id"), "{e}");
        assert!(validate_answer("no json here", &grounding()).is_err());
    }
}
