//! Polite HTTP fetching: robots.txt, one connection and a minimum interval per host, a global concurrency limit,
//! conditional GET, bounded bodies, bounded redirects, timeouts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, CONTENT_TYPE, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED, LOCATION, RETRY_AFTER};
use reqwest::StatusCode;
use tokio::sync::Semaphore;

use super::retry::parse_retry_after;
use crate::config::CrawlConfig;

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum FetchError {
    #[error("{url}: HTTP {code}{}", retry_after.map(|d| format!(" (Retry-After {}s)", d.as_secs())).unwrap_or_default())]
    Status { code: u16, url: String, retry_after: Option<Duration> },
    #[error("{0}: timed out")]
    Timeout(String),
    #[error("{0}")]
    Connect(String),
    #[error("{0}: too many redirects")]
    TooManyRedirects(String),
    #[error("{url}: response body exceeds {limit} bytes")]
    TooLarge { url: String, limit: usize },
    /// Not requested: the host answered 429/503 with a Retry-After that has not passed yet.
    #[error("{url}: not fetched: the host asked to wait (Retry-After), {}s left", wait.as_secs())]
    HostBackoff { url: String, wait: Duration },
    #[error("{0}: disallowed by robots.txt")]
    RobotsDisallowed(String),
    #[error("{0}: invalid URL")]
    InvalidUrl(String),
    #[error("{0}")]
    Body(String),
    #[error("{0}")]
    Other(String),
}

/// Validators from the previous fetch, for a conditional GET.
#[derive(Debug, Clone, Default)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

#[derive(Debug)]
pub enum Fetched {
    Body(Page),
    NotModified,
}

/// One request's outcome: a final answer, or where the server redirects to.
enum Hop {
    Done(Fetched),
    Redirect(url::Url),
}

#[derive(Debug)]
pub struct Page {
    pub final_url: String,
    pub body: Vec<u8>,
    pub content_type: Option<String>,
    pub validators: Validators,
}

/// Per-host gate: holding the lock is the host's one connection; the instant is when the next request may start
/// (the minimum interval after the last one, or later when the host sent Retry-After).
type HostGate = Arc<tokio::sync::Mutex<Option<Instant>>>;

/// Longest a request waits in line for a host's Retry-After; longer waits fail fast with `HostBackoff` (the page
/// stays pending and is retried by a later crawl) instead of holding the crawl up.
const HOST_WAIT_MAX: Duration = Duration::from_secs(5);
type RobotsSlot = Arc<tokio::sync::Mutex<Option<(Instant, Arc<RobotsRules>)>>>;

#[derive(Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    config: Arc<CrawlConfig>,
    global: Arc<Semaphore>,
    hosts: Arc<Mutex<HashMap<String, HostGate>>>,
    /// Per-origin robots.txt cache; each origin has its own lock so a slow host never delays the others.
    robots: Arc<Mutex<HashMap<String, RobotsSlot>>>,
    robots_agent: String,
}

#[derive(Debug)]
enum RobotsRules {
    AllowAll,
    DisallowAll(String),
    Rules(texting_robots::Robot),
}

const ROBOTS_TTL: Duration = Duration::from_secs(3600);

impl Fetcher {
    pub fn new(config: &CrawlConfig) -> anyhow::Result<Fetcher> {
        let client = reqwest::Client::builder()
            .user_agent(&config.user_agent)
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            // Redirects are followed in `fetch`, hop by hop, so every hop (often another host) gets its own
            // robots.txt check and per-host spacing.
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(1)
            .build()?;
        // robots.txt groups are matched on the product token ("newsd" in "newsd/0.1 (...)").
        let robots_agent = config.user_agent.split(['/', ' ']).next().unwrap_or("newsd").to_string();
        Ok(Fetcher {
            client,
            config: Arc::new(config.clone()),
            global: Arc::new(Semaphore::new(config.concurrency)),
            hosts: Arc::new(Mutex::new(HashMap::new())),
            robots: Arc::new(Mutex::new(HashMap::new())),
            robots_agent,
        })
    }

    fn host_gate(&self, host: &str) -> HostGate {
        let mut hosts = self.hosts.lock().expect("host map poisoned");
        hosts.entry(host.to_string()).or_default().clone()
    }

    /// Fetches a URL politely: robots.txt first (cached per host), then the request itself; redirects are followed
    /// up to `max_redirects`, each hop checked against its own host's robots.txt and spaced like any request.
    pub async fn fetch(&self, url: &str, validators: Option<&Validators>) -> Result<Fetched, FetchError> {
        let mut current = url::Url::parse(url).map_err(|_| FetchError::InvalidUrl(url.to_string()))?;
        for _hop in 0..=self.config.max_redirects {
            if self.config.respect_robots_txt && !self.robots_allowed(&current).await? {
                return Err(FetchError::RobotsDisallowed(current.to_string()));
            }
            match self.fetch_raw(&current, validators).await? {
                Hop::Done(fetched) => return Ok(fetched),
                Hop::Redirect(next) => current = next,
            }
        }
        Err(FetchError::TooManyRedirects(url.to_string()))
    }

    /// One request under the global and per-host limits, no robots.txt check, no redirect followed.
    async fn fetch_raw(&self, url: &url::Url, validators: Option<&Validators>) -> Result<Hop, FetchError> {
        let host_key = format!("{}:{}", url.host_str().unwrap_or(""), url.port_or_known_default().unwrap_or(0));
        let gate = self.host_gate(&host_key);
        let mut not_before = gate.lock().await;
        if let Some(ready) = *not_before {
            let now = Instant::now();
            if ready > now {
                let wait = ready - now;
                if wait > HOST_WAIT_MAX.max(self.config.per_host_interval) {
                    return Err(FetchError::HostBackoff { url: url.to_string(), wait });
                }
                tokio::time::sleep(wait).await;
            }
        }
        let _permit = self.global.acquire().await.map_err(|e| FetchError::Other(e.to_string()))?;
        let result = self.request(url, validators).await;
        let mut next = Instant::now() + self.config.per_host_interval;
        if let Err(FetchError::Status { retry_after: Some(d), .. }) = &result {
            // The whole host is rate limited, not only this URL: later requests to it wait too.
            next = next.max(Instant::now() + (*d).min(self.config.retry_after_max));
        }
        *not_before = Some(next);
        result
    }

    async fn request(&self, url: &url::Url, validators: Option<&Validators>) -> Result<Hop, FetchError> {
        let u = url.as_str();
        let mut req = self.client.get(url.clone());
        if let Some(v) = validators {
            if let Some(etag) = &v.etag {
                req = req.header(IF_NONE_MATCH, etag);
            }
            if let Some(lm) = &v.last_modified {
                req = req.header(IF_MODIFIED_SINCE, lm);
            }
        }
        let mut resp = req.send().await.map_err(|e| map_reqwest(u, e))?;
        let status = resp.status();
        if status == StatusCode::NOT_MODIFIED {
            return Ok(Hop::Done(Fetched::NotModified));
        }
        if status.is_redirection() {
            let location = resp.headers().get(LOCATION).and_then(|v| v.to_str().ok());
            let next = location.and_then(|l| url.join(l).ok()).filter(|n| matches!(n.scheme(), "http" | "https"));
            return match next {
                Some(next) => Ok(Hop::Redirect(next)),
                None => Err(FetchError::Other(format!(
                    "{u}: HTTP {} redirect without a usable Location ({})",
                    status.as_u16(),
                    location.unwrap_or("missing")
                ))),
            };
        }
        if !status.is_success() {
            let retry_after = if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
                resp.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(parse_retry_after)
            } else {
                None
            };
            return Err(FetchError::Status { code: status.as_u16(), url: u.to_string(), retry_after });
        }
        let limit = self.config.max_body_bytes;
        if resp.content_length().is_some_and(|n| n as usize > limit) {
            return Err(FetchError::TooLarge { url: u.to_string(), limit });
        }
        let headers = resp.headers().clone();
        let final_url = resp.url().to_string();
        let mut body = Vec::new();
        // Stream so a body without (or lying about) Content-Length cannot exceed the limit in memory.
        while let Some(chunk) = resp.chunk().await.map_err(|e| map_reqwest(u, e))? {
            if body.len() + chunk.len() > limit {
                return Err(FetchError::TooLarge { url: u.to_string(), limit });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Hop::Done(Fetched::Body(Page {
            final_url,
            body,
            content_type: header(&headers, CONTENT_TYPE),
            validators: validators_of(&headers),
        })))
    }

    async fn robots_allowed(&self, url: &url::Url) -> Result<bool, FetchError> {
        let origin = url.origin().ascii_serialization();
        let slot = self.robots.lock().expect("robots map poisoned").entry(origin).or_default().clone();
        let rules = {
            let mut cached = slot.lock().await;
            match &*cached {
                Some((at, rules)) if at.elapsed() < ROBOTS_TTL => rules.clone(),
                _ => {
                    // A host pausing us (Retry-After) is not an answer about robots.txt: nothing is cached.
                    let rules = Arc::new(self.load_robots(url).await?);
                    *cached = Some((Instant::now(), rules.clone()));
                    rules
                }
            }
        };
        match &*rules {
            RobotsRules::AllowAll => Ok(true),
            RobotsRules::DisallowAll(why) => Err(FetchError::Other(format!("{url}: {why}"))),
            RobotsRules::Rules(robot) => Ok(robot.allowed(url.as_str())),
        }
    }

    /// RFC 9309: 4xx means no rules; 5xx or unreachable means "assume disallowed" until it can be read.
    async fn load_robots(&self, url: &url::Url) -> Result<RobotsRules, FetchError> {
        let mut robots_url = url.clone();
        robots_url.set_path("/robots.txt");
        robots_url.set_query(None);
        robots_url.set_fragment(None);
        // robots.txt redirects are followed within its limit, without robots checks of their own (RFC 9309 2.3.1.2).
        let mut fetched = self.fetch_raw(&robots_url, None).await;
        for _hop in 0..self.config.max_redirects.min(5) {
            match fetched {
                Ok(Hop::Redirect(next)) => fetched = self.fetch_raw(&next, None).await,
                _ => break,
            }
        }
        Ok(match fetched {
            Ok(Hop::Redirect(_)) => RobotsRules::DisallowAll(format!("{robots_url}: too many redirects")),
            Ok(Hop::Done(Fetched::Body(page))) => match texting_robots::Robot::new(&self.robots_agent, &page.body) {
                Ok(robot) => RobotsRules::Rules(robot),
                Err(e) => {
                    tracing::warn!(url = %robots_url, error = %e, "unparsable robots.txt, treating as no rules");
                    RobotsRules::AllowAll
                }
            },
            Ok(Hop::Done(Fetched::NotModified)) => RobotsRules::AllowAll,
            Err(FetchError::Status { code, .. }) if (400..500).contains(&code) => RobotsRules::AllowAll,
            Err(e @ FetchError::HostBackoff { .. }) => return Err(e),
            Err(e) => RobotsRules::DisallowAll(format!("robots.txt unavailable ({e})")),
        })
    }
}

fn header(headers: &HeaderMap, name: reqwest::header::HeaderName) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(|s| s.to_string())
}

fn validators_of(headers: &HeaderMap) -> Validators {
    Validators { etag: header(headers, ETAG), last_modified: header(headers, LAST_MODIFIED) }
}

fn map_reqwest(url: &str, e: reqwest::Error) -> FetchError {
    if e.is_timeout() {
        FetchError::Timeout(url.to_string())
    } else if e.is_redirect() {
        FetchError::TooManyRedirects(url.to_string())
    } else if e.is_connect() {
        FetchError::Connect(format!("{url}: connection failed: {}", root_cause(&e)))
    } else if e.is_body() || e.is_decode() {
        FetchError::Body(format!("{url}: reading body: {}", root_cause(&e)))
    } else {
        FetchError::Other(format!("{url}: {}", root_cause(&e)))
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: &dyn std::error::Error = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
