//! Korean market news, end to end (issue 12), on a test set written for the project
//! (`tests/fixtures/korean/events.toml`: ten Korean market events, three articles each from three outlets, English
//! versions of eight of them, and Japanese and Chinese pages for the charset cases). Nothing is mocked:
//! - the real crawler reads them over HTTP from 127.0.0.1 as UTF-8 pages, EUC-KR pages declared in the header or a
//!   meta tag, EUC-KR pages declared nowhere, and EUC-KR RSS feeds declared in the XML prolog (with and without
//!   full-text pages), plus Shift_JIS, GBK, Big5, windows-1251 and UTF-16 (BOM) pages declared nowhere: every title and body stored exactly;
//! - the real multilingual-e5-small (queries and passages with its prefixes, through the compute worker) finds the
//!   same event among the Korean articles, and across Korean and English; all-MiniLM-L6-v2 measured beside it;
//! - `cluster::stories` groups each event's Korean articles into one story (the threshold measured for e5);
//! - a Korean brief (`language = "ko"`, keyword "금리") written by `run_analyze_with` from the stored articles.
//!
//! Run: `cargo test --release --features test-hooks --test korean -- --nocapture` (prints the measurements).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use newsd::analysis::cluster::{self, StoryParams};
use newsd::analysis::config::ProfileConfig;
use newsd::analysis::lang::Language;
use newsd::analysis::{parse_time, run_analyze_with, words, AnalyzeOptions};
use newsd::config::SourceConfig;
use newsd::crawl::{CrawlOptions, Crawler};
use newsd::store::{NewArticle, PageStatus};
use newsd::testkit::{squash, HostileServer};
use newsd::{App, Config};

// ---------------------------------------------------------------------------------------------------------------
// The test set

#[derive(serde::Deserialize)]
struct Fixture {
    event: Vec<Event>,
    other: Vec<Other>,
}

#[derive(serde::Deserialize)]
struct Event {
    id: String,
    #[allow(dead_code)]
    label: String,
    article: Vec<Article>,
    english: Option<Article>,
}

#[derive(serde::Deserialize, Clone)]
struct Article {
    #[serde(default)]
    outlet: String,
    title: String,
    date: String,
    body: String,
}

#[derive(serde::Deserialize)]
struct Other {
    lang: String,
    encoding: String,
    title: String,
    body: String,
}

impl Article {
    fn published_ms(&self) -> i64 {
        chrono::DateTime::parse_from_rfc3339(&self.date).unwrap_or_else(|e| panic!("{}: {e}", self.date)).timestamp_millis()
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture() -> Fixture {
    let path = root().join("tests/fixtures/korean/events.toml");
    let f: Fixture = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    // The set is what the issue asks for: 10+ events, 3+ Korean articles each from different outlets, English
    // versions of some, every Korean article 4-8 sentences.
    assert!(f.event.len() >= 10);
    for e in &f.event {
        let outlets: HashSet<&str> = e.article.iter().map(|a| a.outlet.as_str()).collect();
        assert!(e.article.len() >= 3 && outlets.len() == e.article.len(), "{}: articles from different outlets", e.id);
        for a in &e.article {
            let chars: Vec<char> = a.body.chars().collect();
            let sentences = (0..chars.len()).filter(|&i| chars[i] == '.' && chars.get(i + 1).is_none_or(|c| c.is_whitespace())).count();
            assert!((4..=8).contains(&sentences), "{}: {} sentences in {:?}", e.id, sentences, a.title);
            a.published_ms();
        }
    }
    assert!(f.event.iter().filter(|e| e.english.is_some()).count() >= 5);
    f
}

/// Every Korean article with its event index, in fixture order.
fn korean(f: &Fixture) -> Vec<(usize, &Article)> {
    f.event.iter().enumerate().flat_map(|(e, ev)| ev.article.iter().map(move |a| (e, a))).collect()
}

fn english(f: &Fixture) -> Vec<(usize, &Article)> {
    f.event.iter().enumerate().filter_map(|(e, ev)| ev.english.as_ref().map(|a| (e, a))).collect()
}

// ---------------------------------------------------------------------------------------------------------------
// (a) Charsets through the real crawler

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Sentences (ending in '.', '?', '!' or '。' and whitespace or the end), two to a paragraph, as pages show them.
fn paragraphs(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut n = 0;
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        cur.push(c);
        let end = matches!(c, '.' | '?' | '!' | '。') && chars.get(i + 1).is_none_or(|n| n.is_whitespace() || c == '。');
        if end {
            n += 1;
            if n == 2 {
                out.push(cur.trim().to_string());
                cur.clear();
                n = 0;
            }
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

/// A news article page with the furniture Korean news sites put around the text; `head` holds any charset
/// declaration.
fn page(lang: &str, head: &str, title: &str, outlet: &str, date: &str, body: &str) -> String {
    let ps: String = paragraphs(body).iter().map(|p| format!("<p>{}</p>\n", esc(p))).collect();
    let (home, economy, byline, footer, related) = match lang {
        "ko" => ("홈", "경제", "김지훈 기자", "저작권자 무단전재 및 재배포 금지. 이 기사의 모든 권리는 신문사에 있습니다.", "많이 본 뉴스"),
        "ja" => ("ホーム", "経済", "経済部 記者", "無断転載を禁じます。記事の著作権は新聞社に帰属します。", "よく読まれている記事"),
        "zh-TW" => ("首頁", "財經", "本報記者", "版權所有，未經授權不得轉載。本網站所有內容均受著作權保護。", "熱門新聞"),
        "ru" => ("Главная", "Экономика", "Корреспондент", "Все права защищены. Перепечатка без разрешения запрещена.", "Популярное"),
        _ => ("首页", "财经", "本报记者", "版权所有，未经授权不得转载。本网站所有内容均受著作权保护。", "热门新闻"),
    };
    format!(
        r#"<!DOCTYPE html>
<html lang="{lang}"><head>{head}<title>{title}</title>
<meta property="article:published_time" content="{date}">
<script>var section = "economy";</script></head>
<body>
<header class="site-header"><div class="logo">{outlet}</div>
<nav class="gnb"><ul><li><a href="/">{home}</a></li><li><a href="/economy">{economy}</a></li></ul></nav></header>
<main id="content">
<article class="news-article">
<h1 class="headline">{title}</h1>
<p class="byline">{byline}</p>
<time datetime="{date}">{date}</time>
<div class="article-body">
{ps}</div>
</article>
<aside class="related-news"><h2>{related}</h2><ul><li><a href="/economy/1">{related} 1</a></li></ul></aside>
</main>
<footer class="site-footer"><p>{footer}</p></footer>
</body></html>
"#,
        title = esc(title),
        outlet = esc(outlet),
    )
}

/// An RSS 2.0 feed; `items` are (title or "" for none, link, description or "", RFC 2822 date).
fn rss(encoding: &str, items: &[(String, String, String, String)]) -> String {
    let mut s = format!("<?xml version=\"1.0\" encoding=\"{encoding}\"?>\n<rss version=\"2.0\"><channel><title>경제 뉴스</title><link>http://127.0.0.1/</link><description>경제</description>\n");
    for (t, l, d, date) in items {
        s.push_str("<item>");
        if !t.is_empty() {
            s.push_str(&format!("<title>{}</title>", esc(t)));
        }
        s.push_str(&format!("<link>{}</link><guid>{}</guid>", esc(l), esc(l)));
        if !d.is_empty() {
            s.push_str(&format!("<description>{}</description>", esc(d)));
        }
        s.push_str(&format!("<pubDate>{date}</pubDate></item>\n"));
    }
    s.push_str("</channel></rss>\n");
    s
}

fn encode(enc: &'static encoding_rs::Encoding, text: &str) -> Vec<u8> {
    if enc == encoding_rs::UTF_16LE {
        // encoding_rs decodes UTF-16 but never encodes it: a byte-order mark and the code units, as Windows tools
        // save "Unicode" HTML.
        return [0xFF, 0xFE].into_iter().chain(text.encode_utf16().flat_map(|u| u.to_le_bytes())).collect();
    }
    let (bytes, used, errors) = enc.encode(text);
    assert!(!errors && used == enc, "{} cannot encode the text", enc.name());
    bytes.into_owned()
}

fn rfc2822(date: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(date).unwrap().to_rfc2822()
}

/// How each Korean article is served (article i gets mode i % 6).
const MODES: [&str; 6] = ["utf8", "euckr-header", "euckr-meta", "euckr-undeclared", "euckr-feed", "euckr-feed-text"];

fn source(name: &str, url: String, full_text: bool, language: &str) -> SourceConfig {
    SourceConfig {
        name: name.into(),
        url,
        enabled: true,
        full_text,
        selectors: None,
        language: Some(language.into()),
        min_interval: None,
        allow_private_addresses: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn korean_pages_and_feeds_in_every_encoding_are_stored_exactly() {
    let f = fixture();
    let ko = korean(&f);
    let server = HostileServer::start().await.unwrap();
    let euc_kr = encoding_rs::EUC_KR;
    // Feed items per mode: (title, link, description, date).
    let mut items: HashMap<&str, Vec<(String, String, String, String)>> = HashMap::new();
    for (i, (_, a)) in ko.iter().enumerate() {
        let mode = MODES[i % MODES.len()];
        let path = format!("/kr/{mode}/{i}");
        let link = server.url(&path);
        let date = rfc2822(&a.date);
        let meta_utf8 = "<meta charset=\"utf-8\">";
        let meta_euckr = "<meta http-equiv=\"Content-Type\" content=\"text/html; charset=euc-kr\">";
        let html = |head: &str| page("ko", head, &a.title, &a.outlet, &a.date, &a.body);
        match mode {
            "utf8" => server.serve(&path, "text/html; charset=utf-8", html(meta_utf8)),
            // Declared in the HTTP header only.
            "euckr-header" => server.serve(&path, "text/html; charset=EUC-KR", encode(euc_kr, &html(""))),
            // Declared in a meta tag only.
            "euckr-meta" => server.serve(&path, "text/html", encode(euc_kr, &html(meta_euckr))),
            // Declared nowhere: no header charset, no meta, no BOM.
            "euckr-undeclared" => server.serve(&path, "text/html", encode(euc_kr, &html(""))),
            // The feed is EUC-KR (declared in its prolog), its pages EUC-KR declared in a meta tag.
            "euckr-feed" => server.serve(&path, "text/html", encode(euc_kr, &html(meta_euckr))),
            // The EUC-KR feed's own text is the article (no page fetched).
            "euckr-feed-text" => {}
            _ => unreachable!(),
        }
        let (title, description) = match mode {
            // No title in the feed: the page's title (decoded from undeclared EUC-KR) is the one stored.
            "euckr-undeclared" => (String::new(), String::new()),
            "euckr-feed-text" => (a.title.clone(), a.body.clone()),
            _ => (a.title.clone(), String::new()),
        };
        items.entry(mode).or_default().push((title, link, description, date));
    }
    let mut sources = Vec::new();
    for mode in MODES {
        let feed = format!("/feeds/{mode}");
        if mode.starts_with("euckr-feed") {
            // Declared in the XML prolog only (no charset in the Content-Type).
            server.serve(&feed, "application/rss+xml", encode(euc_kr, &rss("EUC-KR", &items[mode])));
        } else {
            server.serve(&feed, "application/rss+xml; charset=utf-8", rss("UTF-8", &items[mode]));
        }
        sources.push(source(mode, server.url(&feed), mode != "euckr-feed-text", "ko"));
    }
    // Japanese (Shift_JIS), Chinese (GBK, Big5), Russian (windows-1251) and UTF-16 (byte-order mark only) pages declared nowhere, listed by a UTF-8 feed without titles.
    let mut other_items = Vec::new();
    for (k, o) in f.other.iter().enumerate() {
        let enc = encoding_rs::Encoding::for_label(o.encoding.as_bytes()).unwrap();
        let path = format!("/other/{k}");
        server.serve(&path, "text/html", encode(enc, &page(&o.lang, "", &o.title, "Nikkei Shimbun", "2025-03-10T09:00:00+09:00", &o.body)));
        other_items.push((String::new(), server.url(&path), String::new(), rfc2822("2025-03-10T09:00:00+09:00")));
    }
    server.serve("/feeds/other", "application/rss+xml; charset=utf-8", rss("UTF-8", &other_items));
    sources.push(source("other-undeclared", server.url("/feeds/other"), true, "ja"));

    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.data_dir = dir.path().to_path_buf();
    config.crawl.per_host_interval = Duration::ZERO;
    config.crawl.allow_private_addresses = true;
    config.sources = sources;
    let store = newsd::store::Store::from_config(&config).await.unwrap();
    let crawler = Crawler::new(Arc::new(config), store.clone()).unwrap();
    let report = crawler.crawl(&CrawlOptions::default()).await.unwrap();
    assert_eq!(report.totals.failed, 0, "{report:#?}");
    assert_eq!(report.totals.new, ko.len() + f.other.len(), "{report:#?}");

    // Exact per mode.
    let mut exact: HashMap<&str, (usize, usize)> = HashMap::new();
    let mut failures = Vec::new();
    for (i, (_, a)) in ko.iter().enumerate() {
        let mode = MODES[i % MODES.len()];
        let url = server.url(&format!("/kr/{mode}/{i}"));
        let row = store.article_by_url(&url).await.unwrap().unwrap_or_else(|| panic!("{mode}: {url} not stored"));
        let ok_title = row.title == squash(&a.title);
        let ok_body = squash(&row.body) == squash(&a.body);
        let ok_date = row.published_at == Some(a.published_ms());
        let e = exact.entry(mode).or_default();
        e.1 += 1;
        if ok_title && ok_body && ok_date {
            e.0 += 1;
        } else {
            failures.push(format!("{mode} {i}: title {:?} vs {:?}\n  body {:?}\n  vs   {:?}\n  date {:?} vs {}", row.title, a.title, row.body, a.body, row.published_at, a.published_ms()));
        }
        if mode != "euckr-feed-text" {
            assert_eq!(row.page_status, PageStatus::Ok, "{mode} {i}: page read");
        }
    }
    let mut other_exact = 0;
    for (k, o) in f.other.iter().enumerate() {
        let row = store.article_by_url(&server.url(&format!("/other/{k}"))).await.unwrap().expect("other page stored");
        // Chinese and Japanese put no space between sentences: the paragraph breaks of the page are the only
        // whitespace difference allowed.
        let bare = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
        if row.title == squash(&o.title) && bare(&row.body) == bare(&o.body) {
            other_exact += 1;
        } else {
            failures.push(format!("{} ({}) undeclared: title {:?}\n  body {:?}", o.encoding, o.lang, row.title, row.body));
        }
    }
    let mut modes: Vec<_> = exact.iter().collect();
    modes.sort();
    println!("korean charset: exact title+body+date per mode {modes:?}; Shift_JIS/GBK/Big5/windows-1251/UTF-16LE undeclared {other_exact}/{}", f.other.len());
    assert!(failures.is_empty(), "{} not stored exactly:\n{}", failures.len(), failures.join("\n"));
    assert_eq!(exact.values().map(|e| e.0).sum::<usize>(), ko.len());
}

// ---------------------------------------------------------------------------------------------------------------
// Embeddings

fn model_config(dir: &std::path::Path, model: &str) -> Config {
    model_config_as(dir, model, newsd::config::Precision::Fp32)
}

fn model_config_as(dir: &std::path::Path, model: &str, precision: newsd::config::Precision) -> Config {
    let mut c = Config::default();
    c.embed.precision = precision;
    c.data_dir = dir.to_path_buf();
    c.embed.model_dir = root().join("models").join(model);
    c.embed.onnxruntime_library = root().join("models/onnxruntime/libonnxruntime.so.1.32.0");
    c.embed.threads = 2;
    c
}

/// Vectors of one model: articles as passages (title, blank line, body, as the embed task builds them) and as
/// queries, through the compute worker.
struct Embedded {
    ko_passages: Vec<Vec<f32>>,
    ko_queries: Vec<Vec<f32>>,
    en_passages: Vec<Vec<f32>>,
    en_queries: Vec<Vec<f32>>,
}

async fn embed_all(f: &Fixture, model: &str) -> Embedded {
    embed_all_as(f, model, newsd::config::Precision::Fp32).await
}

async fn embed_all_as(f: &Fixture, model: &str, precision: newsd::config::Precision) -> Embedded {
    let dir = tempfile::tempdir().unwrap();
    let app = App::open(model_config_as(dir.path(), model, precision)).await.unwrap();
    let h = app.compute().await.unwrap();
    let text = |a: &Article| newsd::embed::article_text(&a.title, &a.body, 512);
    let ko: Vec<String> = korean(f).iter().map(|(_, a)| text(a)).collect();
    let en: Vec<String> = english(f).iter().map(|(_, a)| text(a)).collect();
    let ko_passages = h.embed(ko.clone()).await.unwrap();
    let en_passages = h.embed(en.clone()).await.unwrap();
    let mut ko_queries = Vec::new();
    for t in &ko {
        ko_queries.push(h.embed_query(t).await.unwrap());
    }
    let mut en_queries = Vec::new();
    for t in &en {
        en_queries.push(h.embed_query(t).await.unwrap());
    }
    app.shutdown().await.unwrap();
    Embedded { ko_passages, ko_queries, en_passages, en_queries }
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

/// Top-1 retrieval: for each query (with its event), the best passage (excluding `skip(query, passage)`) is of
/// the same event. Returns (hits, queries) and the misses as (query's event, top-1's event).
fn top1(queries: &[(usize, &Vec<f32>)], passages: &[(usize, &Vec<f32>)], skip: impl Fn(usize, usize) -> bool) -> ((usize, usize), Vec<(usize, usize)>) {
    let mut hits = 0;
    let mut misses = Vec::new();
    for (qi, (qe, q)) in queries.iter().enumerate() {
        let best = passages
            .iter()
            .enumerate()
            .filter(|(pi, _)| !skip(qi, *pi))
            .map(|(_, (pe, p))| (cosine(q, p), *pe))
            .max_by(|a, b| a.0.partial_cmp(&b.0).unwrap())
            .unwrap();
        hits += (best.1 == *qe) as usize;
        if best.1 != *qe {
            misses.push((*qe, best.1));
        }
    }
    ((hits, queries.len()), misses)
}

struct Retrieval {
    ko_ko: (usize, usize),
    en_ko: (usize, usize),
    ko_en: (usize, usize),
    misses: Vec<String>,
}

fn retrieval(f: &Fixture, v: &Embedded) -> Retrieval {
    let ko_events: Vec<usize> = korean(f).iter().map(|(e, _)| *e).collect();
    let en_events: Vec<usize> = english(f).iter().map(|(e, _)| *e).collect();
    let ko_q: Vec<(usize, &Vec<f32>)> = ko_events.iter().copied().zip(&v.ko_queries).collect();
    let ko_p: Vec<(usize, &Vec<f32>)> = ko_events.iter().copied().zip(&v.ko_passages).collect();
    let en_q: Vec<(usize, &Vec<f32>)> = en_events.iter().copied().zip(&v.en_queries).collect();
    let en_p: Vec<(usize, &Vec<f32>)> = en_events.iter().copied().zip(&v.en_passages).collect();
    // Korean -> the other Korean articles.
    let (ko_ko, m1) = top1(&ko_q, &ko_p, |q, p| q == p);
    // English -> every Korean article.
    let (en_ko, m2) = top1(&en_q, &ko_p, |_, _| false);
    // Korean articles of the events with an English version -> the English articles.
    let with_en: Vec<(usize, &Vec<f32>)> = ko_q.iter().copied().filter(|(e, _)| en_events.contains(e)).collect();
    let (ko_en, m3) = top1(&with_en, &en_p, |_, _| false);
    let id = |e: usize| f.event[e].id.as_str();
    let misses = [("ko->ko", m1), ("en->ko", m2), ("ko->en", m3)]
        .iter()
        .flat_map(|(dir, m)| m.iter().map(move |(q, p)| format!("{dir} {} -> {}", id(*q), id(*p))))
        .collect();
    Retrieval { ko_ko, en_ko, ko_en, misses }
}

fn pct(x: (usize, usize)) -> String {
    format!("{}/{} ({:.0}%)", x.0, x.1, 100.0 * x.0 as f64 / x.1 as f64)
}

/// Same-event retrieval with multilingual-e5-small, and all-MiniLM-L6-v2 on the same queries.
///
/// Measured (this machine, release build): e5 Korean -> Korean 30/30, English -> Korean 8/8 (among 30 Korean
/// articles), Korean -> English 21/24 (among 8 English articles; the three misses land on a neighbouring market
/// story: oil -> won, Fed -> KOSPI, Hyundai strike -> KOSPI); all-MiniLM-L6-v2 12/30, 2/8 and 6/24.
/// Floors:
/// - Korean -> Korean top-1 >= 90% (the issue's bar).
/// - English -> Korean >= 7/8 and Korean -> English >= 19/24 (79%): the measurement less one resp. two misses, a
///   margin for float differences between machines (the Korean -> English misses are near ties with a related
///   market story); both are far above chance (1/10, 1/8) and above MiniLM (25%).
/// - MiniLM on Korean -> Korean must be at least 20 points below e5: an English-only model splits Hangul into
///   characters, which is why the multilingual model is needed for Korean sources.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn korean_same_event_and_cross_lingual_retrieval_e5_vs_minilm() {
    let f = fixture();
    let e5 = retrieval(&f, &embed_all(&f, "multilingual-e5-small").await);
    let mini = retrieval(&f, &embed_all(&f, "all-MiniLM-L6-v2").await);
    println!(
        "korean retrieval top-1 same event: multilingual-e5-small ko->ko {}, en->ko {}, ko->en {}; all-MiniLM-L6-v2 ko->ko {}, en->ko {}, ko->en {}",
        pct(e5.ko_ko),
        pct(e5.en_ko),
        pct(e5.ko_en),
        pct(mini.ko_ko),
        pct(mini.en_ko),
        pct(mini.ko_en)
    );
    println!("e5 misses: {:?}", e5.misses);
    let rate = |x: (usize, usize)| x.0 as f64 / x.1 as f64;
    assert_eq!(e5.ko_ko.1, 30);
    assert!(rate(e5.ko_ko) >= 0.9, "e5 Korean -> Korean top-1 {}", pct(e5.ko_ko));
    assert!(e5.en_ko.1 == 8 && e5.en_ko.0 >= 7, "e5 English -> Korean top-1 {}", pct(e5.en_ko));
    assert!(e5.ko_en.1 == 24 && e5.ko_en.0 >= 19, "e5 Korean -> English top-1 {}", pct(e5.ko_en));
    assert!(rate(mini.ko_ko) <= rate(e5.ko_ko) - 0.2, "MiniLM ko->ko {} vs e5 {}", pct(mini.ko_ko), pct(e5.ko_ko));
}

/// The int8 graph of multilingual-e5-small (embed.precision = "int8", made by scripts/setup.sh) on the same
/// Korean and cross-lingual retrieval: the same floors as fp32 above, and the same top-1 answer as fp32 for at
/// least 90% of the queries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn korean_retrieval_with_e5_int8_keeps_the_fp32_floors() {
    let f = fixture();
    let fp32 = embed_all(&f, "multilingual-e5-small").await;
    let int8 = embed_all_as(&f, "multilingual-e5-small", newsd::config::Precision::Int8).await;
    let (a, b) = (retrieval(&f, &fp32), retrieval(&f, &int8));
    println!(
        "e5 int8 top-1 same event: ko->ko {}, en->ko {}, ko->en {} (fp32 {}, {}, {})",
        pct(b.ko_ko),
        pct(b.en_ko),
        pct(b.ko_en),
        pct(a.ko_ko),
        pct(a.en_ko),
        pct(a.ko_en)
    );
    assert!(b.ko_ko.0 as f64 >= 0.9 * b.ko_ko.1 as f64, "int8 Korean -> Korean top-1 {}", pct(b.ko_ko));
    assert!(b.en_ko.1 == 8 && b.en_ko.0 >= 7, "int8 English -> Korean top-1 {}", pct(b.en_ko));
    assert!(b.ko_en.1 == 24 && b.ko_en.0 >= 19, "int8 Korean -> English top-1 {}", pct(b.ko_en));
    // The same nearest passage as fp32, query by query (Korean queries over Korean passages).
    let nearest = |q: &[f32], passages: &[Vec<f32>], skip: usize| {
        (0..passages.len()).filter(|&j| j != skip).max_by(|&x, &y| cosine(q, &passages[x]).total_cmp(&cosine(q, &passages[y]))).unwrap()
    };
    let same = (0..fp32.ko_queries.len())
        .filter(|&i| nearest(&fp32.ko_queries[i], &fp32.ko_passages, i) == nearest(&int8.ko_queries[i], &int8.ko_passages, i))
        .count();
    let cos: Vec<f32> = fp32.ko_passages.iter().zip(&int8.ko_passages).map(|(x, y)| cosine(x, y)).collect();
    let min_cos = cos.iter().copied().fold(1.0f32, f32::min);
    println!("e5 int8 vs fp32: same top-1 {same}/{}, passage cosine min {min_cos:.4}", fp32.ko_queries.len());
    assert!(same as f64 >= 0.9 * fp32.ko_queries.len() as f64, "same top-1 {same}/{}", fp32.ko_queries.len());
    assert!(min_cos > 0.98, "int8 passage vector cosine to fp32 {min_cos}");
}

// ---------------------------------------------------------------------------------------------------------------
// (c) Clustering

#[derive(Default, Clone, Copy, Debug)]
struct PairScore {
    tp: usize,
    predicted: usize,
    actual: usize,
}

impl PairScore {
    fn precision(&self) -> f64 {
        if self.predicted == 0 { 1.0 } else { self.tp as f64 / self.predicted as f64 }
    }
    fn recall(&self) -> f64 {
        if self.actual == 0 { 1.0 } else { self.tp as f64 / self.actual as f64 }
    }
}

fn pair_score(events: &[usize], groups: &[Vec<usize>]) -> PairScore {
    let mut story = vec![usize::MAX; events.len()];
    for (g, m) in groups.iter().enumerate() {
        for &i in m {
            story[i] = g;
        }
    }
    let mut s = PairScore::default();
    for i in 0..events.len() {
        for j in (i + 1)..events.len() {
            let same_event = events[i] == events[j];
            let same_story = story[i] == story[j];
            s.actual += same_event as usize;
            s.predicted += same_story as usize;
            s.tp += (same_event && same_story) as usize;
        }
    }
    s
}

/// The cluster threshold recommended for multilingual-e5-small profiles (measured below).
const E5_THRESHOLD: f32 = 0.88;

/// Korean stories with e5: the Korean articles as passages, `words::entities` over title and body,
/// `cluster::stories` swept over thresholds 0.60-0.95; pair precision and recall printed for each.
///
/// e5 cosines are high everywhere. Measured on this set: same-event pairs 0.872-0.949 (median 0.920), pairs of
/// different Korean market events 0.794-0.894 (median 0.833). Up to 0.82 every article is one story (precision
/// 0.069); 0.86 still merges the Bank of Korea with the Fed and the won with oil (precision 0.625); 0.87 one wrong
/// merge (0.769); 0.88 is exact (10 stories, precision 1.0, recall 1.0); 0.89-0.91 split one article off (recall
/// 0.933), 0.92-0.95 two (0.867). On the English labelled corpus days (tests/stories.rs' labels, measured once
/// with e5 the same way) 0.88 is also e5's best F1 (precision 0.61, recall 0.72; at 0.60 everything is one
/// story), hence E5_THRESHOLD = 0.88 as the cluster_threshold for e5 profiles.
/// Floors at it: precision >= 0.95 (no two events merged) and recall >= 0.9 (at most one article split off).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn korean_articles_cluster_into_their_events_with_e5() {
    let f = fixture();
    let v = embed_all(&f, "multilingual-e5-small").await;
    let ko = korean(&f);
    let events: Vec<usize> = ko.iter().map(|(e, _)| *e).collect();
    let ents: Vec<Vec<String>> = ko.iter().map(|(_, a)| words::entities(&format!("{}\n{}", a.title, a.body))).collect();

    // Cosine distributions: same event vs different events.
    let (mut same, mut diff) = (Vec::new(), Vec::new());
    for i in 0..ko.len() {
        for j in (i + 1)..ko.len() {
            let c = cosine(&v.ko_passages[i], &v.ko_passages[j]);
            if events[i] == events[j] { same.push(c) } else { diff.push(c) }
        }
    }
    let stats = |x: &mut Vec<f32>| {
        x.sort_by(|a, b| a.partial_cmp(b).unwrap());
        (x[0], x[x.len() / 2], x[x.len() - 1])
    };
    let (s_min, s_med, s_max) = stats(&mut same);
    let (d_min, d_med, d_max) = stats(&mut diff);
    println!("e5 Korean passage cosines: same event min {s_min:.3} median {s_med:.3} max {s_max:.3}; different events min {d_min:.3} median {d_med:.3} max {d_max:.3}");

    let mut best: Option<(f64, f32, PairScore)> = None;
    for t in (60..=95).map(|x| x as f32 / 100.0) {
        let groups = cluster::stories(&v.ko_passages, &ents, &StoryParams::new(t));
        let s = pair_score(&events, &groups);
        let f1 = 2.0 * s.precision() * s.recall() / (s.precision() + s.recall()).max(1e-9);
        println!("  threshold {t:.2}: {} stories, pair precision {:.3} recall {:.3} F1 {f1:.3}", groups.len(), s.precision(), s.recall());
        if best.is_none_or(|b| f1 > b.0) {
            best = Some((f1, t, s));
        }
    }
    let (f1, t, s) = best.unwrap();
    println!("best threshold on this set {t:.2}: precision {:.3} recall {:.3} F1 {f1:.3}", s.precision(), s.recall());

    let at_default = pair_score(&events, &cluster::stories(&v.ko_passages, &ents, &StoryParams::new(0.6)));
    let groups = cluster::stories(&v.ko_passages, &ents, &StoryParams::new(E5_THRESHOLD));
    let at = pair_score(&events, &groups);
    println!(
        "e5 stories at 0.60: precision {:.3} recall {:.3}; at {E5_THRESHOLD}: {} stories, precision {:.3} recall {:.3}",
        at_default.precision(),
        at_default.recall(),
        groups.len(),
        at.precision(),
        at.recall()
    );
    for g in &groups {
        println!("    {:?}", g.iter().map(|&i| f.event[events[i]].id.as_str()).collect::<Vec<_>>());
    }
    assert!(at.precision() >= 0.95, "precision {:.3} at {E5_THRESHOLD}", at.precision());
    assert!(at.recall() >= 0.9, "recall {:.3} at {E5_THRESHOLD}", at.recall());
}

// ---------------------------------------------------------------------------------------------------------------
// (d) A Korean brief

/// The Korean articles stored (one source per outlet) and embedded with e5; a Korean profile with the keyword
/// "금리" over the week before 7 Mar 2025 (the chip export record, the oil jump and the Bank of Korea hike):
/// only the articles that contain 금리 (attached to particles, as in "금리가" or "기준금리를") are kept, the
/// brief is in Korean and the Bank of Korea hike leads, tagged KRW rates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn korean_brief_with_a_hangul_keyword() {
    let f = fixture();
    let ko = korean(&f);
    let dir = tempfile::tempdir().unwrap();
    let mut c = model_config(dir.path(), "multilingual-e5-small");
    let outlets: Vec<String> = {
        let mut o: Vec<String> = ko.iter().map(|(_, a)| a.outlet.clone()).collect();
        o.sort();
        o.dedup();
        o
    };
    c.sources = outlets.iter().map(|o| source(o, format!("http://127.0.0.1/{o}/rss"), false, "ko")).collect();
    let as_of = "2025-03-07T00:00:00+09:00";
    c.analysis.profiles = vec![ProfileConfig {
        name: "korea".into(),
        keywords: vec!["금리".into()],
        language: Language::Ko,
        window: Duration::from_secs(7 * 86_400),
        // No thresholds: the model folder's [similarity] levels apply (story 0.88 = E5_THRESHOLD).
        ..ProfileConfig::default()
    }];
    let app = App::open(c).await.unwrap();
    let states = app.store.sync_sources(&app.config.sources).await.unwrap();
    let batch: Vec<NewArticle> = ko
        .iter()
        .enumerate()
        .map(|(i, (_, a))| NewArticle {
            url: format!("https://{}.example/news/{i}", a.outlet),
            source_id: states[&a.outlet].id,
            title: a.title.clone(),
            body: a.body.clone(),
            published_at: Some(a.published_ms()),
            fetched_at: a.published_ms(),
            content_hash: format!("ko-{i}"),
            language: Some("ko".into()),
            extraction: "feed".into(),
            page_status: PageStatus::NoPage,
            page_attempts: 0,
            page_error: None,
            charset: None,
        })
        .collect();
    let ids = app.store.insert_articles(&batch).await.unwrap();
    assert_eq!(ids.len(), ko.len());
    newsd::embed::run_embed(&app).await.unwrap();

    let opts = AnalyzeOptions { profile: Some("korea".into()), dry_run: false, as_of: Some(parse_time(as_of).unwrap()) };
    let r = run_analyze_with(&app, &opts).await.unwrap();
    println!("--- Korean brief ({} window articles, {} stories) ---\n{}", r.window_articles, r.stories, r.text);
    for s in &r.doc.stories {
        println!("{} rel {:.3} sources {} tags {:?}", s.rank, s.relevance, s.sources.len(), s.tags.iter().map(|t| &t.tag).collect::<Vec<_>>());
    }

    // The keyword filter: exactly the window's articles containing 금리.
    let to = parse_time(as_of).unwrap();
    let from = to - 7 * 86_400_000;
    let in_window: Vec<usize> = (0..ko.len()).filter(|&i| (from..to).contains(&ko[i].1.published_ms())).collect();
    let with_kw: HashSet<i64> = in_window.iter().filter(|&&i| format!("{} {}", ko[i].1.title, ko[i].1.body).contains("금리")).map(|&i| ids[i]).collect();
    assert!(in_window.len() > with_kw.len() && with_kw.len() >= 3, "{} in the window, {} with 금리", in_window.len(), with_kw.len());
    // Korean attaches particles to words: an article where 금리 never stands alone ("금리가", "기준금리를") must
    // still match.
    let attached_only: Vec<i64> = in_window
        .iter()
        .filter(|&&i| {
            let text = format!("{} {}", ko[i].1.title, ko[i].1.body);
            text.contains("금리") && !text.split_whitespace().any(|w| w.trim_matches(|c: char| !c.is_alphanumeric()) == "금리")
        })
        .map(|&i| ids[i])
        .collect();
    assert!(!attached_only.is_empty(), "the set has an article with 금리 only inside longer words");
    assert_eq!(r.window_articles, with_kw.len());
    let listed: HashSet<i64> = r.doc.stories.iter().flat_map(|s| s.articles.iter().map(|a| a.id)).collect();
    assert!(listed.is_subset(&with_kw), "only 금리 articles: {listed:?} vs {with_kw:?}");
    let bok: HashSet<i64> = (0..ko.len()).filter(|&i| f.event[ko[i].0].id == "bok_rate_hike").map(|i| ids[i]).collect();
    assert!(bok.is_subset(&listed), "every Bank of Korea article is kept");
    assert!(attached_only.iter().all(|id| listed.contains(id)), "금리 matched inside words: {attached_only:?}");

    // In Korean; the Bank of Korea hike leads, one story, tagged KRW rates with Korean evidence.
    assert!(r.text.contains("시장에 중요한 것"), "{}", r.text);
    let top = &r.doc.stories[0];
    let top_ids: HashSet<i64> = top.articles.iter().map(|a| a.id).collect();
    assert_eq!(top_ids, bok, "the hike is one story and leads: {:?}", top.headline);
    let tag = top.tags.iter().find(|t| t.tag == "KRW rates").unwrap_or_else(|| panic!("a KRW rates tag: {:?}", top.tags));
    assert!(tag.evidence.iter().any(|(_, p)| p.contains("한국은행") || p.contains("금통위") || p.contains("금융통화위원회") || p.contains("한은")), "{tag:?}");
    assert!(r.doc.lead[0].contains(&top.headline), "{:?}", r.doc.lead);
}
