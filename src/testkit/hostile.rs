//! A real HTTP server on 127.0.0.1 answering whatever a test tells it to: raw bytes with any headers, redirects,
//! responses that never come. For the hostile-input tests (feeds and pages built to break a crawler).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::Response;
use axum::Router;

/// One canned answer.
#[derive(Debug, Clone)]
pub struct Canned {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Never answer (the connection stays open until the client gives up).
    pub hang: bool,
}

impl Canned {
    pub fn ok(content_type: &str, body: impl Into<Vec<u8>>) -> Canned {
        Canned { status: 200, headers: vec![("content-type".into(), content_type.into())], body: body.into(), hang: false }
    }
}

#[derive(Default)]
struct Shared {
    routes: Mutex<HashMap<String, Canned>>,
    log: Mutex<Vec<String>>,
}

pub struct HostileServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl HostileServer {
    pub async fn start() -> anyhow::Result<HostileServer> {
        let shared = Arc::new(Shared::default());
        let app = Router::new().fallback(answer).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).with_graceful_shutdown(async { let _ = rx.await; }).await;
        });
        Ok(HostileServer { addr, shared, shutdown: Some(tx) })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Answers `path` (with its query, if any) with `canned`.
    pub fn serve_with(&self, path: &str, canned: Canned) {
        self.shared.routes.lock().unwrap().insert(path.to_string(), canned);
    }

    pub fn serve(&self, path: &str, content_type: &str, body: impl Into<Vec<u8>>) {
        self.serve_with(path, Canned::ok(content_type, body));
    }

    /// `path` never answers.
    pub fn hang(&self, path: &str) {
        self.serve_with(path, Canned { status: 200, headers: vec![], body: vec![], hang: true });
    }

    pub fn redirect(&self, path: &str, location: &str) {
        self.serve_with(path, Canned { status: 302, headers: vec![("location".into(), location.into())], body: vec![], hang: false });
    }

    /// Requests seen for `path` (with its query).
    pub fn hits(&self, path: &str) -> usize {
        self.shared.log.lock().unwrap().iter().filter(|p| *p == path).count()
    }

    /// Every request seen, in order.
    pub fn requests(&self) -> Vec<String> {
        self.shared.log.lock().unwrap().clone()
    }
}

impl Drop for HostileServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

async fn answer(State(shared): State<Arc<Shared>>, uri: Uri) -> Response {
    let key = uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| uri.path().to_string());
    shared.log.lock().unwrap().push(key.clone());
    let canned = shared.routes.lock().unwrap().get(&key).cloned();
    let Some(c) = canned else {
        let mut r = Response::new(Body::from("not found"));
        *r.status_mut() = StatusCode::NOT_FOUND;
        return r;
    };
    if c.hang {
        std::future::pending::<()>().await;
    }
    let mut r = Response::new(Body::from(c.body));
    *r.status_mut() = StatusCode::from_u16(c.status).unwrap_or(StatusCode::OK);
    for (k, v) in c.headers {
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::try_from(v)) {
            r.headers_mut().insert(k, v);
        }
    }
    r
}
