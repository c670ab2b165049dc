//! A real HTTP news site on 127.0.0.1 for tests and benchmarks: feeds (RSS 2.0, RSS 1.0, Atom, JSON Feed) and
//! article pages rendered from the real corpus inside realistic page furniture (navigation, ads, share bars,
//! related links, comments, footer), conditional GET, robots.txt, and the faults real sites produce.
//!
//! Nothing here is mocked: it is a real server speaking HTTP over loopback; only its content is generated.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::corpus::CorpusArticle;

/// Feed formats served, by outlet, so every parser path is exercised with real content.
pub fn feed_format(source: &str) -> &'static str {
    match source {
        "dw" | "chinadaily" => "atom",
        "bbc" => "rss1",
        "cnn" => "json",
        _ => "rss2",
    }
}

pub struct ServerState {
    articles: Vec<CorpusArticle>,
    by_id: HashMap<i64, usize>,
    feeds: HashMap<String, Vec<usize>>,
    /// Requests seen: (path, time).
    log: Mutex<Vec<(String, Instant)>>,
    robots: Mutex<String>,
    /// Per-path overrides of the status code (to make a feed fail for a while and then recover).
    forced_status: Mutex<HashMap<String, u16>>,
    pub slow_delay: Duration,
    pub huge_bytes: usize,
    /// Only the first `visible` articles (in the order given to `start`) are served: a site that grows
    /// (`NewsServer::set_visible`, for the soak benchmark).
    visible: AtomicUsize,
    /// Article pages answer after this many milliseconds (a slow site: crawls hold their leases longer).
    page_delay_ms: std::sync::atomic::AtomicU64,
}

pub struct NewsServer {
    pub addr: SocketAddr,
    pub state: Arc<ServerState>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl NewsServer {
    /// Serves `articles` on 127.0.0.1 (random port).
    pub async fn start(articles: Vec<CorpusArticle>) -> anyhow::Result<NewsServer> {
        Self::start_on("127.0.0.1:0".parse()?, articles).await
    }

    /// Serves on a given address (benchmarks use 127.0.0.x, one host per outlet).
    pub async fn start_on(addr: SocketAddr, articles: Vec<CorpusArticle>) -> anyhow::Result<NewsServer> {
        let mut feeds: HashMap<String, Vec<usize>> = HashMap::new();
        let mut by_id = HashMap::new();
        for (i, a) in articles.iter().enumerate() {
            feeds.entry(a.source.clone()).or_default().push(i);
            by_id.insert(a.id, i);
        }
        // Newest first, as feeds are.
        for list in feeds.values_mut() {
            list.sort_by(|&a, &b| articles[b].published.cmp(&articles[a].published).then(articles[b].id.cmp(&articles[a].id)));
        }
        let state = Arc::new(ServerState {
            articles,
            by_id,
            feeds,
            log: Mutex::new(Vec::new()),
            robots: Mutex::new("User-agent: *\nDisallow: /private/\n".into()),
            forced_status: Mutex::new(HashMap::new()),
            slow_delay: Duration::from_secs(5),
            huge_bytes: 3 * 1024 * 1024,
            visible: AtomicUsize::new(usize::MAX),
            page_delay_ms: std::sync::atomic::AtomicU64::new(0),
        });
        let app = Router::new()
            .route("/robots.txt", get(robots))
            .route("/feeds/{name}", get(feed))
            .route("/articles/{id}", get(article))
            .route("/private/feed", get(private_feed))
            .route("/faults/recoverable", get(recoverable_feed))
            .route("/faults/malformed", get(malformed_feed))
            .route("/faults/status/{code}", get(status_code))
            .route("/faults/ratelimited", get(rate_limited))
            .route("/faults/slow", get(slow))
            .route("/faults/huge", get(huge))
            .route("/faults/huge-chunked", get(huge_chunked))
            .route("/faults/loop", get(redirect_loop))
            .route("/faults/moved/{port}/{*path}", get(moved))
            .route("/kr/feed", get(korean_feed))
            .route("/kr/{n}", get(korean_page))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).with_graceful_shutdown(async { let _ = rx.await; }).await;
        });
        Ok(NewsServer { addr, state, shutdown: Some(tx) })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Outlets served, with their feed URL.
    pub fn feed_urls(&self) -> Vec<(String, String)> {
        let mut v: Vec<_> = self.state.feeds.keys().map(|s| (s.clone(), self.url(&format!("/feeds/{s}")))).collect();
        v.sort();
        v
    }

    /// Paths requested so far, in order, with their times.
    pub fn requests(&self) -> Vec<(String, Instant)> {
        self.state.log.lock().unwrap().clone()
    }

    pub fn hits(&self, path: &str) -> usize {
        self.state.log.lock().unwrap().iter().filter(|(p, _)| p == path).count()
    }

    pub fn set_robots(&self, text: &str) {
        *self.state.robots.lock().unwrap() = text.to_string();
    }

    /// Serves only the first `n` articles (in the order given to `start`); the others are absent from the feeds
    /// and answer 404, until a later call makes them appear, as new stories do.
    pub fn set_visible(&self, n: usize) {
        self.state.visible.store(n, Ordering::Relaxed);
    }

    /// Article pages answer after `delay` (zero: at once).
    pub fn set_page_delay(&self, delay: Duration) {
        self.state.page_delay_ms.store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    /// Makes `path` answer `code` until cleared with `None` (a 429 carries `Retry-After: 60`).
    pub fn force_status(&self, path: &str, code: Option<u16>) {
        let mut m = self.state.forced_status.lock().unwrap();
        match code {
            Some(c) => m.insert(path.to_string(), c),
            None => m.remove(path),
        };
    }
}

impl Drop for NewsServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

fn log(state: &ServerState, path: String) -> Option<Response> {
    let forced = state.forced_status.lock().unwrap().get(&path).copied();
    state.log.lock().unwrap().push((path, Instant::now()));
    forced.map(|c| {
        let code = StatusCode::from_u16(c).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if code == StatusCode::TOO_MANY_REQUESTS {
            // A forced 429 asks for a minute's pause, as rate limiters do.
            (code, [(header::RETRY_AFTER, "60")]).into_response()
        } else {
            code.into_response()
        }
    })
}

async fn robots(State(s): State<Arc<ServerState>>) -> Response {
    if let Some(r) = log(&s, "/robots.txt".into()) {
        return r;
    }
    ([(header::CONTENT_TYPE, "text/plain")], s.robots.lock().unwrap().clone()).into_response()
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn rfc2822(a: &CorpusArticle) -> Option<String> {
    a.published.map(|d| d.to_rfc2822())
}

/// Feed document for an outlet, and its ETag.
pub fn render_feed(state: &ServerState, base: &str, source: &str) -> Option<(String, &'static str, String)> {
    let idx = state.feeds.get(source)?;
    let visible = state.visible.load(Ordering::Relaxed);
    let items: Vec<&CorpusArticle> = idx.iter().filter(|&&i| i < visible).map(|&i| &state.articles[i]).collect();
    let link = |a: &CorpusArticle| format!("{base}/articles/{}?utm_source=feed&utm_medium=rss", a.id);
    let fmt = feed_format(source);
    let (body, ctype) = match fmt {
        "atom" => {
            let mut s = format!("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<feed xmlns=\"http://www.w3.org/2005/Atom\"><title>{source}</title><id>{base}/</id><updated>2017-03-31T00:00:00Z</updated>\n");
            for a in &items {
                s.push_str(&format!(
                    "<entry><title>{}</title><id>urn:newsd-test:{}</id><link rel=\"alternate\" href=\"{}\"/>{}<summary>{}</summary></entry>\n",
                    esc(&a.title),
                    a.id,
                    esc(&link(a)),
                    a.published.map(|d| format!("<updated>{}</updated><published>{}</published>", d.to_rfc3339(), d.to_rfc3339())).unwrap_or_default(),
                    esc(&a.subtitle)
                ));
            }
            s.push_str("</feed>\n");
            (s, "application/atom+xml")
        }
        "rss1" => {
            let mut s = format!("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<rdf:RDF xmlns:rdf=\"http://www.w3.org/1999/02/22-rdf-syntax-ns#\" xmlns=\"http://purl.org/rss/1.0/\" xmlns:dc=\"http://purl.org/dc/elements/1.1/\"><channel rdf:about=\"{base}/\"><title>{source}</title><link>{base}/</link><description>{source}</description></channel>\n");
            for a in &items {
                s.push_str(&format!(
                    "<item rdf:about=\"{0}\"><title>{1}</title><link>{0}</link><description>{2}</description>{3}</item>\n",
                    esc(&link(a)),
                    esc(&a.title),
                    esc(&a.subtitle),
                    a.published.map(|d| format!("<dc:date>{}</dc:date>", d.to_rfc3339())).unwrap_or_default()
                ));
            }
            s.push_str("</rdf:RDF>\n");
            (s, "application/rdf+xml")
        }
        "json" => {
            let items: Vec<serde_json::Value> = items
                .iter()
                .map(|a| {
                    let mut v = serde_json::json!({"id": a.id.to_string(), "url": link(a), "title": a.title, "summary": a.subtitle});
                    if let Some(d) = a.published {
                        v["date_published"] = d.to_rfc3339().into();
                    }
                    v
                })
                .collect();
            let doc = serde_json::json!({"version": "https://jsonfeed.org/version/1.1", "title": source, "home_page_url": format!("{base}/"), "items": items});
            (doc.to_string(), "application/feed+json")
        }
        _ => {
            let mut s = format!("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<rss version=\"2.0\"><channel><title>{source}</title><link>{base}/</link><description>{source} news</description>\n");
            for a in &items {
                s.push_str(&format!(
                    "<item><title>{}</title><link>{}</link><guid isPermaLink=\"false\">{}</guid><description>{}</description>{}</item>\n",
                    esc(&a.title),
                    esc(&link(a)),
                    a.id,
                    esc(&a.subtitle),
                    rfc2822(a).map(|d| format!("<pubDate>{d}</pubDate>")).unwrap_or_default()
                ));
            }
            s.push_str("</channel></rss>\n");
            (s, "application/rss+xml")
        }
    };
    let etag = format!("\"{:x}\"", {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        body.hash(&mut h);
        h.finish()
    });
    Some((body, ctype, etag))
}

fn base_url(headers: &HeaderMap) -> String {
    format!("http://{}", headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1"))
}

async fn feed(State(s): State<Arc<ServerState>>, Path(name): Path<String>, headers: HeaderMap) -> Response {
    if let Some(r) = log(&s, format!("/feeds/{name}")) {
        return r;
    }
    let Some((body, ctype, etag)) = render_feed(&s, &base_url(&headers), &name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    ([(header::CONTENT_TYPE, ctype.to_string()), (header::ETAG, etag), (header::LAST_MODIFIED, "Fri, 31 Mar 2017 00:00:00 GMT".to_string())], body).into_response()
}

/// Splits corpus text into paragraphs of about three sentences, as pages show them.
pub fn paragraphs(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut sentences = 0;
    for word in text.split_whitespace() {
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(word);
        if word.ends_with('.') || word.ends_with('?') || word.ends_with('!') {
            sentences += 1;
            if sentences >= 3 {
                out.push(std::mem::take(&mut cur));
                sentences = 0;
            }
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// An article page with the furniture real news sites wrap around the text.
pub fn render_page(a: &CorpusArticle, related: &[&CorpusArticle]) -> String {
    let mut body = String::new();
    for (i, p) in paragraphs(&a.text).iter().enumerate() {
        body.push_str(&format!("<p>{}</p>\n", esc(p)));
        if i == 1 {
            body.push_str("<div class=\"ad-container\"><p>Advertisement: open a trading account today and get zero commission on your first hundred trades.</p></div>\n");
            body.push_str("<figure><img src=\"/img/1.jpg\"><figcaption>A photo taken earlier this week, supplied by a news agency.</figcaption></figure>\n");
        }
    }
    let rel: String = related.iter().map(|r| format!("<li><a href=\"/articles/{}\">{}</a></li>", r.id, esc(&r.title))).collect();
    let date = a.published.map(|d| d.to_rfc3339()).unwrap_or_default();
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title} | {site}</title>
<meta property="og:title" content="{title}">
<meta property="article:published_time" content="{date}">
<script>window.dataLayer = [{{"page": "article"}}];</script>
<style>body {{ font-family: serif; }}</style></head>
<body>
<header class="site-header"><div class="logo">{site}</div>
<nav class="main-nav"><ul><li><a href="/">Home</a></li><li><a href="/world">World</a></li><li><a href="/business">Business</a></li><li><a href="/markets">Markets</a></li></ul></nav></header>
<div class="cookie-banner"><p>We use cookies to improve your experience on our site and to show you personalised advertising.</p></div>
<main id="content">
<article class="story">
<h1 class="headline">{title}</h1>
<p class="byline">By Staff Reporter, {site}</p>
<time datetime="{date}">{date}</time>
<div class="share-bar"><p>Share this story on Facebook, Twitter, WhatsApp and LinkedIn, or send it by email.</p></div>
<div class="story-body">
{body}</div>
</article>
<aside class="related-stories"><h2>Related stories</h2><ul>{rel}</ul><p>More from our correspondents around the world, updated every hour of every day.</p></aside>
<section id="comments"><h2>Comments</h2><p>First comment: this is a very interesting article and I agree with most of what it says about the topic.</p></section>
</main>
<footer class="site-footer"><p>Copyright 2017 {site}. All rights reserved. Terms of use, privacy policy and cookie policy apply.</p></footer>
</body></html>
"#,
        title = esc(&a.title),
        site = esc(&a.source),
    )
}

async fn article(State(s): State<Arc<ServerState>>, Path(id): Path<String>) -> Response {
    if let Some(r) = log(&s, format!("/articles/{id}")) {
        return r;
    }
    let delay = s.page_delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let visible = s.visible.load(Ordering::Relaxed);
    let Some(&i) = id.trim_end_matches(".html").parse::<i64>().ok().and_then(|id| s.by_id.get(&id)).filter(|&&i| i < visible) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let a = &s.articles[i];
    let related: Vec<&CorpusArticle> =
        s.feeds[&a.source].iter().filter(|&&j| j < visible).take(5).map(|&j| &s.articles[j]).filter(|r| r.id != a.id).collect();
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], render_page(a, &related)).into_response()
}

async fn private_feed(State(s): State<Arc<ServerState>>, headers: HeaderMap) -> Response {
    log(&s, "/private/feed".into());
    let base = base_url(&headers);
    ([(header::CONTENT_TYPE, "application/rss+xml")], format!("<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>p</title><item><title>Secret</title><link>{base}/private/1</link></item></channel></rss>")).into_response()
}

/// A feed with the breakage real feeds have: HTML entities, bare ampersands, a control character, odd dates.
async fn recoverable_feed(State(s): State<Arc<ServerState>>, headers: HeaderMap) -> Response {
    log(&s, "/faults/recoverable".into());
    let base = base_url(&headers);
    let body = format!(
        "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>Broken &amp; co</title>\
         <item><title>M&A boom &ndash; bankers cheer\u{0001}</title><link>{base}/recoverable/1</link><description>Deals&nbsp;rise &hellip; AT&T and others</description><pubDate>Mon, 32 Foo 2017 99:00:00 XYZ</pubDate></item>\
         <item><title>Second &eacute;dition</title><link>{base}/recoverable/2</link><description>Caf&eacute; prices up</description><pubDate>Tue, 10 Jan 2017 10:00:00 EST</pubDate></item>\
         </channel></rss>"
    );
    ([(header::CONTENT_TYPE, "application/rss+xml")], body).into_response()
}

async fn malformed_feed(State(s): State<Arc<ServerState>>) -> Response {
    log(&s, "/faults/malformed".into());
    ([(header::CONTENT_TYPE, "application/rss+xml")], "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>Cut off</title><item><title>Half an item</ti").into_response()
}

async fn status_code(State(s): State<Arc<ServerState>>, Path(code): Path<u16>) -> Response {
    log(&s, format!("/faults/status/{code}"));
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR).into_response()
}

async fn rate_limited(State(s): State<Arc<ServerState>>) -> Response {
    log(&s, "/faults/ratelimited".into());
    (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "120")], "slow down").into_response()
}

async fn slow(State(s): State<Arc<ServerState>>) -> Response {
    log(&s, "/faults/slow".into());
    tokio::time::sleep(s.slow_delay).await;
    ([(header::CONTENT_TYPE, "application/rss+xml")], "<rss version=\"2.0\"><channel><title>late</title></channel></rss>").into_response()
}

async fn huge(State(s): State<Arc<ServerState>>) -> Response {
    log(&s, "/faults/huge".into());
    let mut body = String::from("<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>huge</title><description>");
    body.push_str(&"x".repeat(s.huge_bytes));
    body.push_str("</description></channel></rss>");
    ([(header::CONTENT_TYPE, "application/rss+xml")], body).into_response()
}

/// Oversized body without Content-Length (chunked), so only a streaming limit can stop it.
async fn huge_chunked(State(s): State<Arc<ServerState>>) -> Response {
    log(&s, "/faults/huge-chunked".into());
    let chunks = s.huge_bytes / 65536 + 1;
    let stream = futures::stream::iter((0..chunks).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'x'; 65536]))));
    Response::builder().header(header::CONTENT_TYPE, "application/rss+xml").body(Body::from_stream(stream)).unwrap()
}

async fn redirect_loop(State(s): State<Arc<ServerState>>) -> Response {
    log(&s, "/faults/loop".into());
    (StatusCode::FOUND, [(header::LOCATION, "/faults/loop")]).into_response()
}

/// `/faults/moved/PORT/PATH` redirects to `http://127.0.0.1:PORT/PATH`: another host, as far as politeness goes.
async fn moved(State(s): State<Arc<ServerState>>, Path((port, path)): Path<(u16, String)>) -> Response {
    log(&s, format!("/faults/moved/{port}/{path}"));
    (StatusCode::MOVED_PERMANENTLY, [(header::LOCATION, format!("http://127.0.0.1:{port}/{path}"))]).into_response()
}

/// Korean text for the EUC-KR pages (real Korean, written for this test).
pub const KOREAN_ARTICLES: [(&str, &str); 2] = [
    ("코스피 외국인 매수에 상승 마감", "코스피가 외국인 투자자의 순매수에 힘입어 이틀째 상승 마감했다. 반도체와 자동차 업종이 강세를 보였고, 원달러 환율은 하락했다. 증권가에서는 당분간 박스권 흐름이 이어질 것으로 내다봤다."),
    ("한국은행 기준금리 동결", "한국은행 금융통화위원회가 기준금리를 연 1.25퍼센트로 동결했다. 가계부채 증가와 미국의 금리 인상 가능성이 부담 요인으로 꼽혔다. 시장은 이번 결정을 예상된 수순으로 받아들였다."),
];

async fn korean_feed(State(s): State<Arc<ServerState>>, headers: HeaderMap) -> Response {
    log(&s, "/kr/feed".into());
    let base = base_url(&headers);
    let items: String = KOREAN_ARTICLES
        .iter()
        .enumerate()
        .map(|(i, (t, _))| format!("<item><title>{t}</title><link>{base}/kr/{i}</link><pubDate>Tue, 07 Mar 2017 09:00:00 +0900</pubDate></item>"))
        .collect();
    ([(header::CONTENT_TYPE, "application/rss+xml; charset=utf-8")], format!("<?xml version=\"1.0\" encoding=\"utf-8\"?><rss version=\"2.0\"><channel><title>kr</title>{items}</channel></rss>")).into_response()
}

/// EUC-KR pages: page 0 declares the charset in the header, page 1 only in a meta tag.
async fn korean_page(State(s): State<Arc<ServerState>>, Path(n): Path<usize>) -> Response {
    log(&s, format!("/kr/{n}"));
    let Some((title, text)) = KOREAN_ARTICLES.get(n) else { return StatusCode::NOT_FOUND.into_response() };
    let html = format!("<html><head><meta http-equiv=\"Content-Type\" content=\"text/html; charset=euc-kr\"><title>{title}</title></head><body><nav><a href=\"/\">홈</a> <a href=\"/economy\">경제</a></nav><article><h1>{title}</h1><p>{text}</p></article><footer><p>저작권자 무단전재 및 재배포 금지</p></footer></body></html>");
    let (bytes, _, _) = encoding_rs::EUC_KR.encode(&html);
    let ctype = if n == 0 { "text/html; charset=EUC-KR" } else { "text/html" };
    ([(header::CONTENT_TYPE, ctype)], bytes.into_owned()).into_response()
}
