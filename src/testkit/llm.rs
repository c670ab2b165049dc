//! A local OpenAI-compatible chat-completions server on 127.0.0.1 for tests: it records every request and answers
//! what the test tells it to (a refusal of `json_schema`, invented numbers, links, 500s, prose, truncated, huge,
//! non-UTF-8 or deeply nested answers). The HTTP exchange is real; the real LLM (llama.cpp's `llama-server`, see
//! `scripts/setup.sh --llm`) is reached through [`LlmProxy`], which records what was sent and answered.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};

/// What the server answers to one request.
#[derive(Debug, Clone)]
pub enum LlmReply {
    /// 200 with this text as the assistant message content.
    Content(String),
    /// This status and body (e.g. 500, or 429; 400 to refuse a `response_format`).
    Status(u16, String),
    /// 200 with this content, cut at `max_tokens` (`finish_reason: "length"`).
    Truncated(String),
    /// This status, content type and raw body (not UTF-8, a cut-off body, deep nesting...).
    Raw { status: u16, content_type: String, body: Vec<u8> },
}

impl LlmReply {
    /// The `response_format.type` a request asked for ("json_schema", "json_object"), or "" without one.
    pub fn format_of(body: &serde_json::Value) -> &str {
        body["response_format"]["type"].as_str().unwrap_or("")
    }

    /// A 400 like the ones servers send for a `response_format` they do not support.
    pub fn refuse_format(body: &serde_json::Value) -> LlmReply {
        LlmReply::Status(
            400,
            format!(r#"{{"error":{{"message":"response_format type {} is not supported","type":"invalid_request_error"}}}}"#, Self::format_of(body)),
        )
    }
}

type Responder = dyn Fn(&serde_json::Value, usize) -> LlmReply + Send + Sync;

struct LlmState {
    requests: Mutex<Vec<serde_json::Value>>,
    responder: Box<Responder>,
}

pub struct LlmServer {
    pub addr: SocketAddr,
    state: Arc<LlmState>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

async fn completions(State(st): State<Arc<LlmState>>, Json(body): Json<serde_json::Value>) -> Response {
    let n = {
        let mut r = st.requests.lock().unwrap();
        r.push(body.clone());
        r.len() - 1
    };
    let completion = |text: String, finish: &str| {
        Json(serde_json::json!({
            "id": format!("chatcmpl-{n}"),
            "object": "chat.completion",
            "created": 0,
            "model": body["model"].as_str().unwrap_or("test-model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }))
        .into_response()
    };
    let status = |code: u16| StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match (st.responder)(&body, n) {
        LlmReply::Content(text) => completion(text, "stop"),
        LlmReply::Truncated(text) => completion(text, "length"),
        LlmReply::Status(code, text) => (status(code), text).into_response(),
        LlmReply::Raw { status: code, content_type, body } => {
            (status(code), [(axum::http::header::CONTENT_TYPE, content_type)], body).into_response()
        }
    }
}

impl LlmServer {
    /// Starts the server; `responder(request_body, request_index)` decides each answer.
    pub async fn start<F>(responder: F) -> anyhow::Result<LlmServer>
    where
        F: Fn(&serde_json::Value, usize) -> LlmReply + Send + Sync + 'static,
    {
        let state = Arc::new(LlmState { requests: Mutex::new(Vec::new()), responder: Box::new(responder) });
        let app = Router::new().route("/v1/chat/completions", post(completions)).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).with_graceful_shutdown(async { let _ = rx.await; }).await;
        });
        Ok(LlmServer { addr, state, shutdown: Some(tx) })
    }

    /// The `base_url` to configure (`http://127.0.0.1:PORT/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Every request body received, in order.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        self.state.requests.lock().unwrap().clone()
    }

    /// The user message of request `i`.
    pub fn user_prompt(&self, i: usize) -> String {
        let r = self.requests();
        r.get(i)
            .and_then(|b| b["messages"].as_array().and_then(|m| m.iter().find(|x| x["role"] == "user")).cloned())
            .and_then(|m| m["content"].as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

impl Drop for LlmServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// One request forwarded by [`LlmProxy`] and what came back.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub path: String,
    pub request: serde_json::Value,
    pub status: u16,
    pub response: Vec<u8>,
}

struct ProxyState {
    upstream: String,
    http: reqwest::Client,
    exchanges: Mutex<Vec<Exchange>>,
}

/// A recording HTTP proxy on 127.0.0.1 in front of a real OpenAI-compatible server: tests see exactly what newsd
/// sent (the schema) and what the server answered (its token counts).
pub struct LlmProxy {
    pub addr: SocketAddr,
    state: Arc<ProxyState>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

async fn forward(State(st): State<Arc<ProxyState>>, uri: axum::http::Uri, body: bytes::Bytes) -> Response {
    let path = uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
    let request = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    let sent = st
        .http
        .post(format!("{}{path}", st.upstream))
        .header(axum::http::header::CONTENT_TYPE, "application/json")
        .body(body.to_vec())
        .send()
        .await;
    let (status, response) = match sent {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.bytes().await.map(|b| b.to_vec()).unwrap_or_default())
        }
        Err(e) => (502, format!("proxy: {e}").into_bytes()),
    };
    st.exchanges.lock().unwrap().push(Exchange { path, request, status, response: response.clone() });
    (StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY), [(axum::http::header::CONTENT_TYPE, "application/json")], response)
        .into_response()
}

impl LlmProxy {
    /// Forwards every POST to `upstream` (an origin, e.g. `http://127.0.0.1:18080`), same path.
    pub async fn start(upstream: &str) -> anyhow::Result<LlmProxy> {
        let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(900)).build()?;
        let state = Arc::new(ProxyState { upstream: upstream.trim_end_matches('/').to_string(), http, exchanges: Mutex::new(Vec::new()) });
        let app = Router::new().fallback(axum::routing::post(forward)).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).with_graceful_shutdown(async { let _ = rx.await; }).await;
        });
        Ok(LlmProxy { addr, state, shutdown: Some(tx) })
    }

    /// The `base_url` to configure (`http://127.0.0.1:PORT/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Every exchange, in order.
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.state.exchanges.lock().unwrap().clone()
    }
}

impl Drop for LlmProxy {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
