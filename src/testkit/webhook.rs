//! A local webhook receiver on 127.0.0.1 for tests: it records every delivery (path, headers, body), checks the
//! generic-webhook HMAC signature, and answers what the test scripts: 200, 500, 429 with Retry-After, a slow 200,
//! or a stall (it keeps the request open without answering, to simulate a crash between send and mark). It counts
//! the requests in flight per path (ordered delivery means at most one), and can go down and come back on the
//! same port (an outage: connections refused meanwhile). [`dropping_server`] accepts connections and closes them
//! unanswered.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;

#[derive(Debug, Clone)]
pub enum Reply {
    Ok,
    Status(u16),
    /// 429 with `Retry-After: <seconds>`.
    TooMany(u64),
    /// 429 with this exact `Retry-After` value (fractions of seconds, HTTP dates).
    TooManyAfter(String),
    /// 200 after this many milliseconds.
    Slow(u64),
    /// Never answer (until the server is dropped).
    Stall,
}

#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub idempotency_key: Option<String>,
    pub timestamp: Option<String>,
    pub signature: Option<String>,
    pub attempt: Option<String>,
    /// Whether the HMAC signature verified with the receiver's secret (None: no signature header).
    pub signature_ok: Option<bool>,
    pub body: serde_json::Value,
    /// The status this request was answered with (None for a stall).
    pub answered: Option<u16>,
}

struct RxState {
    secret: Vec<u8>,
    /// Per path, scripted replies taken in order; when empty, 200.
    script: Mutex<HashMap<String, VecDeque<Reply>>>,
    received: Mutex<Vec<Received>>,
    /// Per path: requests being answered now, and the most seen at once.
    in_flight: Mutex<HashMap<String, (usize, usize)>>,
}

/// Counts a request in flight until dropped (also when the client goes away mid-answer).
struct InFlight {
    state: Arc<RxState>,
    path: String,
}

impl InFlight {
    fn enter(state: &Arc<RxState>, path: &str) -> InFlight {
        let mut m = state.in_flight.lock().unwrap();
        let e = m.entry(path.to_string()).or_default();
        e.0 += 1;
        e.1 = e.1.max(e.0);
        InFlight { state: state.clone(), path: path.to_string() }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(e) = self.state.in_flight.lock().unwrap().get_mut(&self.path) {
            e.0 -= 1;
        }
    }
}

pub struct WebhookReceiver {
    pub addr: SocketAddr,
    state: Arc<RxState>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

async fn handle(State(st): State<Arc<RxState>>, Path(path): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    let timestamp = h("x-newsd-timestamp");
    let signature = h("x-newsd-signature");
    let signature_ok = match (&timestamp, &signature) {
        (Some(ts), Some(sig)) => {
            Some(crate::notify::verify_signature(&st.secret, ts, &body, sig, crate::store::now_ms() / 1000, 300))
        }
        _ => None,
    };
    let _in_flight = InFlight::enter(&st, &path);
    let reply = st.script.lock().unwrap().get_mut(&path).and_then(|q| q.pop_front()).unwrap_or(Reply::Ok);
    let answered = match &reply {
        Reply::Ok | Reply::Slow(_) => Some(200),
        Reply::Status(s) => Some(*s),
        Reply::TooMany(_) | Reply::TooManyAfter(_) => Some(429),
        Reply::Stall => None,
    };
    st.received.lock().unwrap().push(Received {
        path: path.clone(),
        idempotency_key: h("idempotency-key"),
        timestamp,
        signature,
        attempt: h("x-newsd-attempt"),
        signature_ok,
        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        answered,
    });
    match reply {
        Reply::Ok => (StatusCode::OK, "ok").into_response(),
        Reply::Status(s) => (StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), "scripted failure").into_response(),
        Reply::TooMany(secs) => (StatusCode::TOO_MANY_REQUESTS, [("retry-after", secs.to_string())], "slow down").into_response(),
        Reply::TooManyAfter(v) => (StatusCode::TOO_MANY_REQUESTS, [("retry-after", v)], "slow down").into_response(),
        Reply::Slow(ms) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            (StatusCode::OK, "ok").into_response()
        }
        Reply::Stall => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            (StatusCode::OK, "late").into_response()
        }
    }
}

impl WebhookReceiver {
    /// Starts a receiver verifying signatures with `secret`. Any path `/hook/NAME` is accepted.
    pub async fn start(secret: &str) -> anyhow::Result<WebhookReceiver> {
        let state = Arc::new(RxState {
            secret: secret.as_bytes().to_vec(),
            script: Mutex::new(HashMap::new()),
            received: Mutex::new(Vec::new()),
            in_flight: Mutex::new(HashMap::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mut rx = WebhookReceiver { addr, state, shutdown: None, server: None };
        rx.serve(listener);
        Ok(rx)
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let app = Router::new().route("/hook/{name}", post(handle)).with_state(self.state.clone());
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.server = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app).with_graceful_shutdown(async { let _ = rx.await; }).await;
        }));
        self.shutdown = Some(tx);
    }

    /// Goes down: stops listening (new connections are refused) once the requests in flight are answered.
    pub async fn go_down(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }

    /// Comes back on the same address after [`go_down`](Self::go_down), with its script and records.
    pub async fn come_back(&mut self) -> anyhow::Result<()> {
        // tokio sets SO_REUSEADDR, so the port is free again at once.
        let listener = tokio::net::TcpListener::bind(self.addr).await?;
        self.serve(listener);
        Ok(())
    }

    /// The most requests to `/hook/NAME` that were being answered at the same time.
    pub fn max_in_flight(&self, name: &str) -> usize {
        self.state.in_flight.lock().unwrap().get(name).map(|e| e.1).unwrap_or(0)
    }

    pub fn url(&self, name: &str) -> String {
        format!("http://{}/hook/{name}", self.addr)
    }

    /// Queues replies for `/hook/NAME` (taken in order; afterwards 200).
    pub fn script(&self, name: &str, replies: impl IntoIterator<Item = Reply>) {
        self.state.script.lock().unwrap().entry(name.to_string()).or_default().extend(replies);
    }

    pub fn clear_script(&self, name: &str) {
        self.state.script.lock().unwrap().remove(name);
    }

    /// Every request received (all paths), in order.
    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    pub fn received_at(&self, name: &str) -> Vec<Received> {
        self.received().into_iter().filter(|r| r.path == name).collect()
    }

    /// Requests answered 2xx, deduplicated by idempotency key (what a deduplicating receiver would process).
    pub fn accepted_unique(&self, name: &str) -> Vec<Received> {
        let mut seen = std::collections::HashSet::new();
        self.received_at(name)
            .into_iter()
            .filter(|r| r.answered.is_some_and(|s| (200..300).contains(&s)) || r.answered.is_none())
            .filter(|r| seen.insert(r.idempotency_key.clone()))
            .collect()
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A server that accepts connections, reads a little and closes them without answering (a receiver that resets).
/// Returns its address; it runs until the runtime ends.
pub async fn dropping_server() -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut buf = [0u8; 256];
            let _ = tokio::io::AsyncReadExt::read(&mut conn, &mut buf).await;
            drop(conn);
        }
    });
    Ok(addr)
}

/// A 127.0.0.1 address with nothing listening on it (bound once, then released).
pub fn closed_port() -> anyhow::Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    drop(l);
    Ok(addr)
}
