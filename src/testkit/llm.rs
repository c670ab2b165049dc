//! A local OpenAI-compatible chat-completions server on 127.0.0.1 for tests: it records every request and answers
//! what the test tells it to. It stands in for a real LLM, which cannot run in the default test suite (the opt-in
//! test runs against a real llama.cpp server); the HTTP exchange itself is real.

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
    /// This status and body (e.g. 500, or 429).
    Status(u16, String),
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
    match (st.responder)(&body, n) {
        LlmReply::Content(text) => Json(serde_json::json!({
            "id": format!("chatcmpl-{n}"),
            "object": "chat.completion",
            "created": 0,
            "model": body["model"].as_str().unwrap_or("test-model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }))
        .into_response(),
        LlmReply::Status(code, text) => {
            (StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), text).into_response()
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
