//! Polite HTTP fetching: robots.txt, one connection and a minimum interval per host, a global concurrency limit,
//! conditional GET, bounded bodies, bounded redirects, timeouts, and (for article pages) no requests to
//! non-public addresses.
//!
//! A `Fetcher` is meant to live as long as the process (the daemon keeps one): its robots.txt cache, host spacing
//! and Retry-After pauses only mean something across passes. Idle entries are evicted so the maps stay small.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, CONTENT_TYPE, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED, LOCATION};
use reqwest::StatusCode;
use tokio::sync::Semaphore;

use super::addr::{is_public, NonPublicAddress, PublicResolver};
use crate::config::CrawlConfig;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: HTTP {code}{}", retry_after.map(|d| format!(" (Retry-After {}s)", d.as_secs())).unwrap_or_default())]
    Status { code: u16, url: String, retry_after: Option<Duration> },
    #[error("{0}: timed out")]
    Timeout(String),
    #[error("{url}: connection failed: {detail}")]
    Connect { url: String, detail: String, #[source] source: reqwest::Error },
    /// An article page (or a redirect hop of one) on a loopback, private, link-local... address.
    #[error("{url}: refused: {addr} is not a public address (article pages on private networks need crawl.allow_private_addresses = true)")]
    NonPublic { url: String, addr: IpAddr },
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
    #[error("{url}: reading body: {detail}")]
    Body { url: String, detail: String, #[source] source: reqwest::Error },
    #[error("{url}: {detail}")]
    Request { url: String, detail: String, #[source] source: reqwest::Error },
    #[error("{0}")]
    Other(String),
}

/// Whose URL is fetched: feeds are the user's choice and go anywhere; article pages come from whoever writes the
/// feed's items, so they may only reach public addresses unless the user allowed private ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Feed,
    Page { allow_private: bool },
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

/// Per-host politeness shared with other processes and nodes (the database's `host_slots`): each request reserves
/// the host's next slot, and a Retry-After pauses the host for everyone. The in-process gate still keeps one
/// connection per host and spaces this process's own requests.
pub trait HostLedger: Send + Sync {
    /// Reserves the next request slot on `host`; returns when it starts (unix ms).
    fn reserve<'a>(&'a self, host: &'a str, interval: Duration) -> futures::future::BoxFuture<'a, anyhow::Result<i64>>;
    /// Until when the host asked everyone to wait (unix ms; 0: no pause). A read: for hosts without spacing, where
    /// a reservation would be a write per request for nothing.
    fn paused_until<'a>(&'a self, host: &'a str) -> futures::future::BoxFuture<'a, anyhow::Result<i64>>;
    /// The host asked every client to wait until `until_ms` (unix ms).
    fn pause<'a>(&'a self, host: &'a str, until_ms: i64) -> futures::future::BoxFuture<'a, anyhow::Result<()>>;
}

#[derive(Clone)]
pub struct Fetcher {
    /// Feeds (and pages where private addresses are allowed).
    client: reqwest::Client,
    /// Article pages: its resolver drops non-public addresses, so the check holds after DNS resolution (and for
    /// every redirect hop, each hop being its own request) and a rebinding name cannot slip through.
    public_client: reqwest::Client,
    config: Arc<CrawlConfig>,
    global: Arc<Semaphore>,
    hosts: Arc<Mutex<HashMap<String, HostGate>>>,
    /// Per-origin robots.txt cache; each origin has its own lock so a slow host never delays the others.
    robots: Arc<Mutex<HashMap<String, RobotsSlot>>>,
    robots_agent: String,
    last_sweep: Arc<Mutex<Instant>>,
    /// Spacing and pauses shared across processes (None: this process's own only).
    ledger: Option<Arc<dyn HostLedger>>,
}

#[derive(Debug)]
enum RobotsRules {
    AllowAll,
    DisallowAll(String),
    Rules(texting_robots::Robot),
}

const ROBOTS_TTL: Duration = Duration::from_secs(3600);
/// A host not requested for this long (and not paused by Retry-After) is forgotten.
const HOST_IDLE_TTL: Duration = Duration::from_secs(30 * 60);
/// How often the maps are swept for idle entries (on the next fetch after this long).
const SWEEP_EVERY: Duration = Duration::from_secs(60);

impl Fetcher {
    pub fn new(config: &CrawlConfig) -> anyhow::Result<Fetcher> {
        let builder = || {
            reqwest::Client::builder()
                .user_agent(&config.user_agent)
                .connect_timeout(config.connect_timeout)
                .timeout(config.request_timeout)
                // Redirects are followed in `fetch`, hop by hop, so every hop (often another host) gets its own
                // robots.txt check, address check and per-host spacing.
                .redirect(reqwest::redirect::Policy::none())
                .pool_max_idle_per_host(1)
        };
        let client = builder().build()?;
        let public_client = builder().dns_resolver(Arc::new(PublicResolver)).build()?;
        // robots.txt groups are matched on the product token ("newsd" in "newsd/0.1 (...)").
        let robots_agent = config.user_agent.split(['/', ' ']).next().unwrap_or("newsd").to_string();
        Ok(Fetcher {
            client,
            public_client,
            config: Arc::new(config.clone()),
            global: Arc::new(Semaphore::new(config.concurrency)),
            hosts: Arc::new(Mutex::new(HashMap::new())),
            robots: Arc::new(Mutex::new(HashMap::new())),
            robots_agent,
            last_sweep: Arc::new(Mutex::new(Instant::now())),
            ledger: None,
        })
    }

    /// Shares host spacing and Retry-After pauses through `ledger` (the database), so several processes and
    /// nodes crawling the same host stay as polite as one.
    pub fn with_ledger(mut self, ledger: Arc<dyn HostLedger>) -> Fetcher {
        self.ledger = Some(ledger);
        self
    }

    fn host_gate(&self, host: &str) -> HostGate {
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        hosts.entry(host.to_string()).or_default().clone()
    }

    /// Hosts and robots.txt origins currently remembered (for tests and status).
    pub fn cached_hosts(&self) -> (usize, usize) {
        let hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner()).len();
        let robots = self.robots.lock().unwrap_or_else(|p| p.into_inner()).len();
        (hosts, robots)
    }

    /// Forgets hosts idle for `HOST_IDLE_TTL` (their spacing and any Retry-After pause are over) and robots.txt
    /// entries past `ROBOTS_TTL`; entries in use (a request holding or waiting for them) are kept.
    pub fn evict_idle(&self, now: Instant) {
        self.hosts.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, gate| {
            if Arc::strong_count(gate) > 1 {
                return true;
            }
            match gate.try_lock() {
                Ok(not_before) => not_before.is_some_and(|t| t + HOST_IDLE_TTL > now),
                Err(_) => true,
            }
        });
        self.robots.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, slot| {
            if Arc::strong_count(slot) > 1 {
                return true;
            }
            match slot.try_lock() {
                Ok(cached) => cached.as_ref().is_some_and(|(at, _)| *at + ROBOTS_TTL > now),
                Err(_) => true,
            }
        });
    }

    fn maybe_sweep(&self) {
        let now = Instant::now();
        {
            let mut last = self.last_sweep.lock().unwrap_or_else(|p| p.into_inner());
            if now.duration_since(*last) < SWEEP_EVERY {
                return;
            }
            *last = now;
        }
        self.evict_idle(now);
    }

    /// Fetches a feed (or any URL the user gave) politely: robots.txt first (cached per host), then the request
    /// itself; redirects are followed up to `max_redirects`, each hop checked against its own host's robots.txt
    /// and spaced like any request.
    pub async fn fetch(&self, url: &str, validators: Option<&Validators>) -> Result<Fetched, FetchError> {
        self.fetch_target(url, validators, Target::Feed).await
    }

    /// Fetches an article page: like `fetch`, and every hop must resolve to a public address unless
    /// `allow_private` (or the host is in `crawl.allow_private_hosts`).
    pub async fn fetch_page(&self, url: &str, allow_private: bool) -> Result<Fetched, FetchError> {
        self.fetch_target(url, None, Target::Page { allow_private }).await
    }

    pub async fn fetch_target(&self, url: &str, validators: Option<&Validators>, target: Target) -> Result<Fetched, FetchError> {
        self.maybe_sweep();
        let mut current = url::Url::parse(url).map_err(|_| FetchError::InvalidUrl(url.to_string()))?;
        for _hop in 0..=self.config.max_redirects {
            let public_only = matches!(target, Target::Page { allow_private: false }) && !self.host_allowed(&current);
            if public_only {
                check_literal_address(&current)?;
            }
            let client = if public_only { &self.public_client } else { &self.client };
            if self.config.respect_robots_txt {
                match self.robots_allowed(client, &current).await {
                    Ok(true) => {}
                    Ok(false) => return Err(FetchError::RobotsDisallowed(current.to_string())),
                    // Refused while reading the host's robots.txt: the error names the URL that was asked for.
                    Err(FetchError::NonPublic { addr, .. }) => return Err(FetchError::NonPublic { url: current.to_string(), addr }),
                    Err(e) => return Err(e),
                }
            }
            match self.fetch_raw(client, &current, validators).await? {
                Hop::Done(fetched) => return Ok(fetched),
                Hop::Redirect(next) => current = next,
            }
        }
        Err(FetchError::TooManyRedirects(url.to_string()))
    }

    /// `crawl.allow_private_hosts`: "host" (any port) or "host:port".
    fn host_allowed(&self, url: &url::Url) -> bool {
        let Some(host) = url.host_str() else { return false };
        let port = url.port_or_known_default();
        self.config.allow_private_hosts.iter().any(|entry| match entry.rsplit_once(':') {
            Some((h, p)) if p.parse::<u16>().is_ok() && !h.ends_with(':') => {
                h.trim_matches(['[', ']']).eq_ignore_ascii_case(host.trim_matches(['[', ']'])) && port == p.parse().ok()
            }
            _ => entry.trim_matches(['[', ']']).eq_ignore_ascii_case(host.trim_matches(['[', ']'])),
        })
    }

    /// One request under the global and per-host limits, no robots.txt check, no redirect followed.
    async fn fetch_raw(&self, client: &reqwest::Client, url: &url::Url, validators: Option<&Validators>) -> Result<Hop, FetchError> {
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
        if let Some(ledger) = &self.ledger {
            // The cluster-wide slot: other processes may have used (or paused) this host since.
            let slot = if self.config.per_host_interval.is_zero() {
                ledger.paused_until(&host_key).await
            } else {
                ledger.reserve(&host_key, self.config.per_host_interval).await
            };
            match slot {
                Ok(start_ms) => {
                    let wait = Duration::from_millis((start_ms - crate::store::now_ms()).max(0) as u64);
                    if wait > HOST_WAIT_MAX.max(self.config.per_host_interval) {
                        return Err(FetchError::HostBackoff { url: url.to_string(), wait });
                    }
                    if !wait.is_zero() {
                        tokio::time::sleep(wait).await;
                    }
                }
                Err(e) => tracing::warn!(host = %host_key, error = %format!("{e:#}"), "reserving a shared host slot failed; spacing this process's requests only"),
            }
        }
        let _permit = self.global.acquire().await.map_err(|e| FetchError::Other(e.to_string()))?;
        let result = self.request(client, url, validators).await;
        let mut next = Instant::now() + self.config.per_host_interval;
        if let Err(FetchError::Status { retry_after: Some(d), .. }) = &result {
            // The whole host is rate limited, not only this URL: later requests to it wait too.
            let pause = (*d).min(self.config.retry_after_max);
            next = next.max(Instant::now() + pause);
            if let Some(ledger) = &self.ledger {
                if let Err(e) = ledger.pause(&host_key, crate::store::now_ms() + pause.as_millis() as i64).await {
                    tracing::warn!(host = %host_key, error = %format!("{e:#}"), "recording a host's Retry-After for other nodes failed");
                }
            }
        }
        *not_before = Some(next);
        result
    }

    async fn request(&self, client: &reqwest::Client, url: &url::Url, validators: Option<&Validators>) -> Result<Hop, FetchError> {
        let u = url.as_str();
        let mut req = client.get(url.clone());
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
                crate::net::retry_after_of(resp.headers())
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

    async fn robots_allowed(&self, client: &reqwest::Client, url: &url::Url) -> Result<bool, FetchError> {
        let origin = url.origin().ascii_serialization();
        let slot = self.robots.lock().unwrap_or_else(|p| p.into_inner()).entry(origin).or_default().clone();
        let rules = {
            let mut cached = slot.lock().await;
            match &*cached {
                Some((at, rules)) if at.elapsed() < ROBOTS_TTL => rules.clone(),
                _ => {
                    // A host pausing us (Retry-After) is not an answer about robots.txt: nothing is cached.
                    let rules = Arc::new(self.load_robots(client, url).await?);
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
    async fn load_robots(&self, client: &reqwest::Client, url: &url::Url) -> Result<RobotsRules, FetchError> {
        let mut robots_url = url.clone();
        robots_url.set_path("/robots.txt");
        robots_url.set_query(None);
        robots_url.set_fragment(None);
        // robots.txt redirects are followed within its limit, without robots checks of their own (RFC 9309 2.3.1.2).
        let mut fetched = self.fetch_raw(client, &robots_url, None).await;
        for _hop in 0..self.config.max_redirects.min(5) {
            match fetched {
                Ok(Hop::Redirect(next)) => fetched = self.fetch_raw(client, &next, None).await,
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
            // Neither is an answer about robots.txt: nothing is cached, and the refusal is the page's error.
            Err(e @ (FetchError::HostBackoff { .. } | FetchError::NonPublic { .. })) => return Err(e),
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

/// Refuses a URL whose host is a non-public IP literal (the resolver never sees those). `url` has already
/// normalised decimal, octal and hex IPv4 forms ("http://2130706433/", "http://0x7f.1/") to dotted quads.
fn check_literal_address(url: &url::Url) -> Result<(), FetchError> {
    let addr = match url.host() {
        Some(url::Host::Ipv4(a)) => IpAddr::V4(a),
        Some(url::Host::Ipv6(a)) => IpAddr::V6(a),
        _ => return Ok(()),
    };
    if is_public(addr) {
        Ok(())
    } else {
        Err(FetchError::NonPublic { url: url.to_string(), addr })
    }
}

fn map_reqwest(url: &str, e: reqwest::Error) -> FetchError {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = cur {
        if let Some(refused) = err.downcast_ref::<NonPublicAddress>() {
            return FetchError::NonPublic { url: url.to_string(), addr: refused.addr };
        }
        cur = err.source();
    }
    let detail = root_cause(&e);
    if e.is_timeout() {
        FetchError::Timeout(url.to_string())
    } else if e.is_redirect() {
        FetchError::TooManyRedirects(url.to_string())
    } else if e.is_connect() {
        FetchError::Connect { url: url.to_string(), detail, source: e }
    } else if e.is_body() || e.is_decode() {
        FetchError::Body { url: url.to_string(), detail, source: e }
    } else {
        FetchError::Request { url: url.to_string(), detail, source: e }
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: &dyn std::error::Error = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::NewsServer;

    fn config() -> CrawlConfig {
        CrawlConfig { per_host_interval: Duration::ZERO, ..CrawlConfig::default() }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_hosts_and_stale_robots_are_evicted_but_a_paused_host_is_kept() {
        let server = NewsServer::start(Vec::new()).await.unwrap();
        let fetcher = Fetcher::new(&config()).unwrap();
        assert!(matches!(fetcher.fetch(&server.url("/faults/status/404"), None).await, Err(FetchError::Status { code: 404, .. })));
        assert_eq!(fetcher.cached_hosts(), (1, 1));
        fetcher.evict_idle(Instant::now());
        assert_eq!(fetcher.cached_hosts(), (1, 1), "fresh entries stay");
        fetcher.evict_idle(Instant::now() + Duration::from_secs(2 * 3600));
        assert_eq!(fetcher.cached_hosts(), (0, 0), "idle entries go");

        // A host paused by Retry-After 120 s is remembered until the pause is over (plus the idle time).
        let err = fetcher.fetch(&server.url("/faults/ratelimited"), None).await.unwrap_err();
        assert!(err.to_string().contains("Retry-After 120s"), "{err}");
        fetcher.evict_idle(Instant::now() + HOST_IDLE_TTL + Duration::from_secs(60));
        assert_eq!(fetcher.cached_hosts().0, 1, "the pause is kept");
        let again = fetcher.fetch(&server.url("/feeds/none"), None).await.unwrap_err();
        assert!(matches!(again, FetchError::HostBackoff { .. }), "{again}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pages_on_private_addresses_are_refused_before_any_request() {
        let server = NewsServer::start(Vec::new()).await.unwrap();
        let port = server.addr.port();
        let fetcher = Fetcher::new(&config()).unwrap();
        for url in [
            format!("http://127.0.0.1:{port}/feeds/x"),
            format!("http://2130706433:{port}/feeds/x"),
            format!("http://0x7f.0.0.1:{port}/feeds/x"),
            format!("http://[::ffff:127.0.0.1]:{port}/feeds/x"),
            format!("http://localhost:{port}/feeds/x"),
        ] {
            let err = fetcher.fetch_page(&url, false).await.unwrap_err();
            assert!(matches!(err, FetchError::NonPublic { .. }), "{url}: {err}");
            assert!(err.to_string().contains("not a public address"), "{err}");
        }
        assert!(server.requests().is_empty(), "nothing requested: {:?}", server.requests());
        // Feeds are the user's choice, and the opt-in lets pages through.
        assert!(matches!(fetcher.fetch(&format!("http://localhost:{port}/faults/status/404"), None).await, Err(FetchError::Status { code: 404, .. })));
        assert!(matches!(fetcher.fetch_page(&format!("http://127.0.0.1:{port}/faults/status/404"), true).await, Err(FetchError::Status { code: 404, .. })));
    }
}
