//! The CLI through a running daemon: with the data directory's lock held by a live daemon that recorded its HTTP
//! address, `newsd search`, `status`, `analyze` and `notify` ask it instead of loading a second model.
//!
//! The token, when the daemon requires one, comes from the same environment variables the daemon reads
//! (`daemon.api_token_env`, else `daemon.api_read_token_env`).

use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::app::App;

pub struct DaemonClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl DaemonClient {
    /// The running daemon's API, when a live daemon holds the data directory's lock and recorded where it serves.
    pub async fn find(app: &App) -> Option<DaemonClient> {
        let holder = crate::daemon::lock::holder(&app.config.data_dir()).ok()??;
        let state = app.store.daemon_state(&app.node.id).await.ok()??;
        if holder.parse::<i64>().ok().is_some_and(|pid| pid != state.pid) {
            return None;
        }
        let addr = state.http_addr?;
        let d = &app.config.daemon;
        let token = [&d.api_token_env, &d.api_read_token_env]
            .into_iter()
            .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()).map(|v| v.trim().to_string()));
        // Searches wait in the daemon's compute queue; the daemon's own limit (api_timeout) bounds them.
        let http = reqwest::Client::builder().timeout(d.api_timeout + Duration::from_secs(5)).build().ok()?;
        Some(DaemonClient { base: format!("http://{addr}"), token, http })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    async fn send<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> anyhow::Result<T> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        // A queue that stays full for a while is waited out, as the local path would wait.
        for attempt in 0..60 {
            let resp = req.try_clone().ok_or_else(|| anyhow::anyhow!("request cannot be retried"))?.send().await?;
            let status = resp.status();
            if status == reqwest::StatusCode::SERVICE_UNAVAILABLE && attempt < 59 {
                let wait = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(1u64);
                tokio::time::sleep(Duration::from_secs(wait.min(5))).await;
                continue;
            }
            let body = resp.bytes().await?;
            if !status.is_success() {
                let message = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v.pointer("/error/message").and_then(|m| m.as_str()).map(str::to_string))
                    .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(300).collect());
                anyhow::bail!("the running daemon ({}) answered {status}: {message}", self.base);
            }
            return Ok(serde_json::from_slice(&body)?);
        }
        anyhow::bail!("the running daemon ({}) stayed busy", self.base)
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<T> {
        self.send(self.http.get(format!("{}{path}", self.base)).query(query)).await
    }

    pub async fn post<T: DeserializeOwned>(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<T> {
        self.send(self.http.post(format!("{}{path}", self.base)).query(query)).await
    }
}
