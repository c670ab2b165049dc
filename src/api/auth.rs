//! API tokens: an admin one and a read-only one, from environment variables (never from the config file, so the
//! file can be shared). Compared in constant time; never logged.

use axum::http::{header, HeaderMap};
use secrecy::{ExposeSecret, SecretString};

use crate::config::DaemonConfig;

/// The cookie the dashboard's login sets (HttpOnly, SameSite=Strict).
pub const COOKIE: &str = "newsd_token";

pub struct Auth {
    admin: Option<SecretString>,
    read: Option<SecretString>,
}

pub(super) enum Verdict {
    Allowed,
    /// No token, or an unknown one.
    Missing,
    /// A read-only token on a request that changes something.
    ReadOnly,
}

impl Auth {
    /// Tokens from the environment variables the config names (empty values count as unset).
    pub fn from_env(cfg: &DaemonConfig) -> Auth {
        let get = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty()).map(|v| SecretString::from(v.trim().to_string()));
        Auth { admin: get(&cfg.api_token_env), read: get(&cfg.api_read_token_env) }
    }

    /// No tokens: a loopback-only daemon where every local user may do everything.
    pub fn open() -> Auth {
        Auth { admin: None, read: None }
    }

    pub fn enabled(&self) -> bool {
        self.admin.is_some() || self.read.is_some()
    }

    pub(super) fn check(&self, headers: &HeaderMap, writes: bool) -> Verdict {
        if !self.enabled() {
            return Verdict::Allowed;
        }
        let Some(presented) = presented(headers) else { return Verdict::Missing };
        if self.admin.as_ref().is_some_and(|t| same(t.expose_secret(), &presented)) {
            return Verdict::Allowed;
        }
        if self.read.as_ref().is_some_and(|t| same(t.expose_secret(), &presented)) {
            return if writes { Verdict::ReadOnly } else { Verdict::Allowed };
        }
        Verdict::Missing
    }

    /// Whether `token` is one of ours (the dashboard's login form).
    pub(super) fn knows(&self, token: &str) -> bool {
        [&self.admin, &self.read].into_iter().flatten().any(|t| same(t.expose_secret(), token.trim()))
    }
}

fn presented(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        return v.strip_prefix("Bearer ").map(|t| t.trim().to_string());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| kv.trim().strip_prefix(COOKIE).and_then(|r| r.strip_prefix('=')).map(str::to_string))
}

/// Constant-time equality (the length is not secret).
pub(super) fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
