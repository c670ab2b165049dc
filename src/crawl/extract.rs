//! Article page extraction: per-source CSS selectors when configured, otherwise a general main-content extractor
//! (paragraph-density scoring, boilerplate subtrees dropped), plus title and publication date from the usual
//! metadata (Open Graph, article:published_time, <time>, JSON-LD).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use ego_tree::iter::Edge;
use ego_tree::NodeId;
use scraper::{ElementRef, Html, Node, Selector};
use serde::Serialize;
use serde_json::{Map, Value};

use super::feed::parse_loose_date;
use super::text::{block_text, decode_html, html_to_text, limit_nesting, normalize_ws, MAX_NESTING};
use crate::config::SelectorConfig;

#[derive(Debug, Clone, Serialize)]
pub struct Extracted {
    pub title: String,
    pub body: String,
    pub published: Option<DateTime<Utc>>,
    /// How the body was found: "selectors" (the source's CSS selectors), "general" (paragraph scoring, or the
    /// page's text when it has no paragraphs), "json-ld" (the page's JSON-LD `articleBody`) or "dense-block" (the
    /// block with the most text and few links).
    pub method: &'static str,
    pub charset: &'static str,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{url}: {message}")]
pub struct ExtractError {
    pub url: String,
    pub message: String,
}

/// Bodies shorter than this are treated as "no article found" (cookie walls, error pages, video-only pages).
const MIN_BODY_CHARS: usize = 80;

fn long_enough(body: &str) -> bool {
    body.chars().count() >= MIN_BODY_CHARS
}

pub fn extract(bytes: &[u8], content_type: Option<&str>, url: &str, selectors: Option<&SelectorConfig>) -> Result<Extracted, ExtractError> {
    let (html, charset) = decode_html(bytes, content_type);
    let doc = Html::parse_document(&limit_nesting(&html, MAX_NESTING));
    let err = |message: String| ExtractError { url: url.to_string(), message };
    let json_ld = json_ld(&doc);

    let mut method = "general";
    let mut title = None;
    let mut body = None;
    let mut published = None;
    if let Some(sel) = selectors {
        if let Some(css) = &sel.title {
            title = select_text(&doc, css).filter(|t| !t.is_empty());
        }
        if let Some(css) = &sel.body {
            let s = Selector::parse(css).map_err(|e| err(format!("invalid body selector {css:?}: {e}")))?;
            let remove: Vec<Selector> = sel.remove.iter().filter_map(|r| Selector::parse(r).ok()).collect();
            let removed = removed_ids(&doc, &remove);
            let mut parts = Vec::new();
            for el in doc.select(&s) {
                let t = normalize_ws(&block_text(el, |e| removed.contains(&e.id())));
                if !t.is_empty() {
                    parts.push(t);
                }
            }
            if !parts.is_empty() {
                body = Some(parts.join("\n\n"));
                method = "selectors";
            }
        }
        if let Some(css) = &sel.date {
            if let Ok(s) = Selector::parse(css) {
                published = doc.select(&s).next().and_then(|el| {
                    let v = el.value();
                    v.attr("datetime").or(v.attr("content")).map(str::to_string).or_else(|| Some(el.text().collect::<String>()))
                }).and_then(|t| parse_loose_date(&t));
            }
        }
    }
    let title = title.or_else(|| general_title(&doc)).unwrap_or_default();
    let body = match body {
        Some(b) => b,
        None => {
            let (b, m) = general_body(&doc, &json_ld);
            method = m;
            b
        }
    };
    let published = published.or_else(|| general_date(&doc, &json_ld));
    if !long_enough(&body) {
        return Err(err(format!("no article text found ({} characters extracted)", body.chars().count())));
    }
    Ok(Extracted { title, body, published, method, charset })
}

fn sel(css: &str) -> Selector {
    Selector::parse(css).expect("built-in selector parses")
}

fn select_text(doc: &Html, css: &str) -> Option<String> {
    let s = Selector::parse(css).ok()?;
    doc.select(&s).next().map(|el| normalize_ws(&el.text().collect::<Vec<_>>().join(" ")))
}

fn removed_ids(doc: &Html, selectors: &[Selector]) -> HashSet<NodeId> {
    selectors.iter().flat_map(|s| doc.select(s).map(|e| e.id())).collect()
}

fn general_title(doc: &Html) -> Option<String> {
    for css in ["meta[property='og:title']", "meta[name='twitter:title']"] {
        if let Some(t) = doc.select(&sel(css)).next().and_then(|m| m.value().attr("content")) {
            let t = normalize_ws(t);
            if !t.is_empty() {
                return Some(t);
            }
        }
    }
    for css in ["article h1", "main h1", "h1", "title"] {
        if let Some(t) = select_text(doc, css).filter(|t| !t.is_empty()) {
            return Some(t);
        }
    }
    None
}

fn general_date(doc: &Html, json_ld: &[Value]) -> Option<DateTime<Utc>> {
    const METAS: &str = "meta[property='article:published_time'], meta[name='article:published_time'], \
        meta[itemprop='datePublished'], meta[name='pubdate'], meta[name='publishdate'], meta[name='date'], \
        meta[name='DC.date.issued'], meta[name='dc.date'], meta[name='parsely-pub-date'], meta[property='og:published_time']";
    for m in doc.select(&sel(METAS)) {
        if let Some(d) = m.value().attr("content").and_then(parse_loose_date) {
            return Some(d);
        }
    }
    for t in doc.select(&sel("article time[datetime], time[datetime], [itemprop='datePublished']")) {
        let v = t.value();
        if let Some(d) = v.attr("datetime").or(v.attr("content")).and_then(parse_loose_date) {
            return Some(d);
        }
    }
    // The article's own datePublished first; another object's (a WebPage, a publisher) only when it has none.
    let objects = json_ld_objects(json_ld);
    let date = |o: &&Map<String, Value>| o.get("datePublished").and_then(json_ld_string).and_then(parse_loose_date);
    objects.iter().filter(|o| is_article(o)).find_map(date).or_else(|| objects.iter().find_map(date))
}

/// The JSON values of a page's `<script type="application/ld+json">` blocks. Malformed blocks are skipped; raw
/// line breaks and tabs inside strings (invalid JSON, but common in `articleBody`) are tolerated.
fn json_ld(doc: &Html) -> Vec<Value> {
    let mut out = Vec::new();
    for script in doc.select(&sel("script[type]")) {
        let ty = script.value().attr("type").unwrap_or_default();
        if !ty.trim().to_ascii_lowercase().starts_with("application/ld+json") {
            continue;
        }
        let text: String = script.text().collect();
        let text = text.trim();
        let text = text.strip_prefix("<!--").and_then(|t| t.strip_suffix("-->")).unwrap_or(text).trim();
        let value = serde_json::from_str::<Value>(text).or_else(|_| {
            let cleaned: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
            serde_json::from_str::<Value>(&cleaned)
        });
        if let Ok(v) = value {
            out.push(v);
        }
    }
    out
}

/// Every object in the JSON-LD values, nested ones included (top-level arrays, `@graph`, `mainEntity`...), in
/// document order. Iterative; serde_json's recursion limit already bounds the depth.
fn json_ld_objects(values: &[Value]) -> Vec<&Map<String, Value>> {
    let mut out = Vec::new();
    let mut stack: Vec<&Value> = values.iter().rev().collect();
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(o) => {
                out.push(o);
                stack.extend(o.values().rev());
            }
            Value::Array(a) => stack.extend(a.iter().rev()),
            _ => {}
        }
    }
    out
}

/// `@type` NewsArticle, Article, BlogPosting, ReportageNewsArticle... (also as `schema:` names, URLs or arrays).
fn is_article(o: &Map<String, Value>) -> bool {
    let is = |t: &str| {
        let t = t.rsplit(['/', ':', '#']).next().unwrap_or(t);
        t.ends_with("Article") || t.ends_with("Posting")
    };
    match o.get("@type") {
        Some(Value::String(t)) => is(t),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).any(is),
        _ => false,
    }
}

/// A JSON-LD text value: a string, or `{"@value": "..."}`, or the first of an array of those.
fn json_ld_string(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) => Some(s),
        Value::Object(o) => o.get("@value").and_then(Value::as_str),
        Value::Array(a) => a.iter().find_map(json_ld_string),
        _ => None,
    }
}

/// The longest `articleBody` in the page's JSON-LD, as plain text (some sites put HTML in it).
fn json_ld_body(json_ld: &[Value]) -> Option<String> {
    json_ld_objects(json_ld)
        .into_iter()
        .filter_map(|o| o.get("articleBody").and_then(json_ld_string))
        .map(html_to_text)
        .max_by_key(|t| t.chars().count())
}

/// Whether an element is page furniture rather than article content.
fn is_boilerplate(el: &scraper::node::Element) -> bool {
    if matches!(
        el.name(),
        "script" | "style" | "noscript" | "nav" | "header" | "footer" | "aside" | "form" | "iframe" | "svg" | "button"
            | "select" | "template" | "figure" | "menu" | "dialog"
    ) {
        return true;
    }
    if matches!(el.attr("role"), Some("navigation" | "banner" | "contentinfo" | "complementary" | "search")) {
        return true;
    }
    if el.attr("aria-hidden") == Some("true") || el.attr("hidden").is_some() {
        return true;
    }
    let attrs = [el.attr("class"), el.attr("id")];
    for value in attrs.into_iter().flatten() {
        let v = value.to_ascii_lowercase();
        const SUBSTRINGS: [&str; 16] = [
            "comment", "share", "social", "related", "sidebar", "newsletter", "subscribe", "cookie", "breadcrumb",
            "outbrain", "taboola", "recommend", "popular", "advert", "sponsor", "promo",
        ];
        if SUBSTRINGS.iter().any(|s| v.contains(s)) {
            return true;
        }
        const TOKENS: [&str; 9] = ["ad", "ads", "nav", "navbar", "menu", "footer", "masthead", "byline", "tags"];
        if v.split(|c: char| !c.is_ascii_alphanumeric()).any(|t| TOKENS.contains(&t)) {
            return true;
        }
    }
    false
}

/// Headings and dates: left out of body text taken from a whole block, where they would pass a title off as a body.
fn is_heading_or_date(el: &scraper::node::Element) -> bool {
    matches!(el.name(), "h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "time")
}

fn inside_boilerplate(el: ElementRef, stop: Option<NodeId>) -> bool {
    let mut node = Some(*el);
    while let Some(n) = node {
        if Some(n.id()) == stop {
            return false;
        }
        if let Node::Element(e) = n.value() {
            if is_boilerplate(e) {
                return true;
            }
        }
        node = n.parent();
    }
    false
}

/// The body text and how it was found. In order, each taken when it is long enough to be an article: the
/// paragraphs of the best-scored container; the JSON-LD `articleBody`; the densest text block; the non-boilerplate
/// text of `<body>` (when the page has no scored paragraphs at all).
fn general_body(doc: &Html, json_ld: &[Value]) -> (String, &'static str) {
    let paragraphs = paragraph_body(doc);
    if paragraphs.as_deref().is_some_and(long_enough) {
        return (paragraphs.unwrap_or_default(), "general");
    }
    if let Some(b) = json_ld_body(json_ld).filter(|b| long_enough(b)) {
        return (b, "json-ld");
    }
    if let Some(b) = densest_block(doc).map(clean_text).filter(|b| long_enough(b)) {
        return (b, "dense-block");
    }
    match paragraphs {
        Some(p) => (p, "general"),
        // No paragraphs at all (text laid out with <br>): the non-boilerplate text of <body>.
        None => (doc.select(&sel("body")).next().map(clean_text).unwrap_or_default(), "general"),
    }
}

/// Block text of `el` without boilerplate, headings and dates, whitespace normalised.
fn clean_text(el: ElementRef) -> String {
    normalize_ws(&block_text(el, |e| is_boilerplate(e.value()) || is_heading_or_date(e.value())))
}

/// Readability-style: score containers by the paragraph text they hold, take the best one's paragraphs. None when
/// no paragraph scored.
fn paragraph_body(doc: &Html) -> Option<String> {
    let paragraphs = sel("p");
    let mut scores: HashMap<NodeId, f64> = HashMap::new();
    for p in doc.select(&paragraphs) {
        if inside_boilerplate(p, None) {
            continue;
        }
        let len = p.text().map(|t| t.trim().chars().count()).sum::<usize>();
        if len < 25 {
            continue;
        }
        let score = len as f64 + 10.0 * p.text().collect::<String>().matches(", ").count() as f64;
        if let Some(parent) = p.parent() {
            *scores.entry(parent.id()).or_default() += score;
            if let Some(grand) = parent.parent() {
                *scores.entry(grand.id()).or_default() += score / 2.0;
            }
        }
    }
    let container = best(scores).and_then(|id| doc.tree.get(id)).and_then(ElementRef::wrap)?;
    let blocks = sel("p, h2, h3, h4, blockquote, pre, li");
    let mut parts = Vec::new();
    for el in container.select(&blocks) {
        if inside_boilerplate(el, Some(container.id())) {
            continue;
        }
        let name = el.value().name();
        // Avoid taking text twice: a block nested in another taken block (p in blockquote, p in li).
        let nested = el.ancestors().take_while(|a| a.id() != container.id()).any(|a| {
            a.value().as_element().is_some_and(|e| matches!(e.name(), "p" | "blockquote" | "li" | "pre"))
        });
        if nested || (name == "li" && el.select(&paragraphs).next().is_some()) {
            continue;
        }
        let t = normalize_ws(&block_text(el, |e| is_boilerplate(e.value()))).replace('\n', " ");
        if !t.is_empty() {
            parts.push(t);
        }
    }
    Some(parts.join("\n\n"))
}

/// The highest score (ties: the first node in document order, for a stable choice).
fn best(scores: HashMap<NodeId, f64>) -> Option<NodeId> {
    let mut v: Vec<(NodeId, f64)> = scores.into_iter().collect();
    v.sort_by_key(|(id, _)| *id);
    v.into_iter().fold(None, |acc: Option<(NodeId, f64)>, (id, s)| match acc {
        Some((_, b)) if b >= s => acc,
        _ => Some((id, s)),
    }).map(|(id, _)| id)
}

/// For pages without usable paragraphs (text in `<div>`s, laid out with `<br>`): the text directly inside each
/// block (not inside a nested block) is scored like a paragraph, by its non-link characters, when it holds at
/// least 25 characters and less than half of it is link text; the block gets the score, its parent half. The
/// best-scored block wins. One iterative pass over the tree; boilerplate subtrees, headings and dates are skipped.
fn densest_block(doc: &Html) -> Option<ElementRef<'_>> {
    let body = doc.select(&sel("body")).next()?;
    let mut direct: HashMap<NodeId, (usize, usize)> = HashMap::new(); // block -> (characters, link characters)
    let mut blocks: Vec<NodeId> = Vec::new();
    let mut skipping: Option<NodeId> = None;
    let mut links = 0usize;
    let is_container = |name: &str| super::text::is_block(name) || matches!(name, "body" | "td" | "th" | "center");
    for edge in body.traverse() {
        match edge {
            Edge::Open(n) if skipping.is_none() => match n.value() {
                Node::Element(e) if is_boilerplate(e) || is_heading_or_date(e) => skipping = Some(n.id()),
                Node::Element(e) => {
                    links += usize::from(e.name() == "a");
                    if is_container(e.name()) {
                        blocks.push(n.id());
                    }
                }
                Node::Text(t) => {
                    if let Some(&b) = blocks.last() {
                        let chars = t.split_whitespace().map(|w| w.chars().count() + 1).sum::<usize>();
                        let entry = direct.entry(b).or_default();
                        entry.0 += chars;
                        if links > 0 {
                            entry.1 += chars;
                        }
                    }
                }
                _ => {}
            },
            Edge::Open(_) => {}
            Edge::Close(n) => {
                if skipping.is_some() {
                    if skipping == Some(n.id()) {
                        skipping = None;
                    }
                    continue;
                }
                if let Node::Element(e) = n.value() {
                    links = links.saturating_sub(usize::from(e.name() == "a"));
                    if is_container(e.name()) {
                        blocks.pop();
                    }
                }
            }
        }
    }
    let mut scores: HashMap<NodeId, f64> = HashMap::new();
    for (id, (chars, link_chars)) in direct {
        if chars < 25 || link_chars * 2 >= chars {
            continue;
        }
        let score = (chars - link_chars) as f64;
        *scores.entry(id).or_default() += score;
        if let Some(parent) = doc.tree.get(id).and_then(|n| n.parent()) {
            *scores.entry(parent.id()).or_default() += score / 2.0;
        }
    }
    best(scores).and_then(|id| doc.tree.get(id)).and_then(ElementRef::wrap)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"<!doctype html><html><head><title>Markets rally | Example News</title>
<meta property="og:title" content="Markets rally as rates hold">
<meta property="article:published_time" content="2017-01-10T09:30:00Z">
<script>var ads = 1;</script></head><body>
<header class="site-header"><nav><a href="/">Home</a><a href="/world">World</a></nav></header>
<div class="ad-slot"><p>Buy our product now, the best product anywhere in the world, really.</p></div>
<main><article><h1>Markets rally as rates hold</h1><p class="byline">By A Reporter</p>
<p>Stocks rose sharply on Tuesday, after the central bank held interest rates steady, surprising some analysts.</p>
<p>The benchmark index gained 2 percent, its biggest one-day rise in months, led by banks, miners and energy firms.</p>
<div class="share-tools"><p>Share this article on Facebook, Twitter, LinkedIn and by email with your friends.</p></div>
<p>Bond yields fell, and the currency weakened against the dollar, traders said.</p></article>
<aside class="related"><p>Related: ten other stories you might like to read about markets and more.</p></aside>
<section id="comments"><p>Great article, thanks for writing it, I learned a lot about this topic today.</p></section></main>
<footer><p>Copyright Example News 2017. All rights reserved. Terms and privacy policy apply.</p></footer></body></html>"#;

    #[test]
    fn general_extraction_drops_boilerplate() {
        let e = extract(PAGE.as_bytes(), Some("text/html"), "http://e.com/a", None).unwrap();
        assert_eq!(e.title, "Markets rally as rates hold");
        assert_eq!(e.method, "general");
        assert_eq!(e.published.unwrap().to_rfc3339(), "2017-01-10T09:30:00+00:00");
        assert!(e.body.starts_with("Stocks rose sharply"), "{}", e.body);
        assert!(e.body.contains("Bond yields fell"));
        for junk in ["Buy our product", "Share this", "Related:", "Great article", "Copyright", "By A Reporter", "Home"] {
            assert!(!e.body.contains(junk), "{junk} leaked into: {}", e.body);
        }
        assert_eq!(e.body.matches("\n\n").count(), 2, "three paragraphs: {}", e.body);
    }

    #[test]
    fn selectors_win_when_configured() {
        let s = SelectorConfig {
            title: Some("h1".into()),
            body: Some("article".into()),
            date: None,
            remove: vec![".share-tools".into(), ".byline".into(), "h1".into()],
        };
        let e = extract(PAGE.as_bytes(), None, "http://e.com/a", Some(&s)).unwrap();
        assert_eq!(e.method, "selectors");
        assert!(e.body.starts_with("Stocks rose"), "{}", e.body);
        assert!(!e.body.contains("Share this"));
    }

    #[test]
    fn euc_kr_page_decodes() {
        let html = "<html><head><meta charset=\"euc-kr\"><title>코스피 상승</title></head><body><article>\
            <p>코스피가 외국인 매수에 힘입어 이틀째 상승하며 2,100선을 회복했다. 반도체와 자동차 업종이 강세를 보였다.</p>\
            <p>원달러 환율은 하락했고, 채권 금리는 소폭 올랐다. 시장에서는 금리 동결 전망이 우세하다고 전했다.</p></article></body></html>";
        let (bytes, _, _) = encoding_rs::EUC_KR.encode(html);
        let e = extract(&bytes, Some("text/html"), "http://kr.example/1", None).unwrap();
        assert_eq!(e.charset, "EUC-KR");
        assert_eq!(e.title, "코스피 상승");
        assert!(e.body.contains("반도체와 자동차 업종이 강세를 보였다"), "{}", e.body);
    }

    const STORY: &str = "Stocks rose sharply on Tuesday after the central bank held interest rates steady, surprising some analysts. The benchmark index gained 2 percent, its biggest one-day rise in months.";

    /// A page whose article is rendered by script: no <p>, the text only in JSON-LD.
    fn script_rendered(json_ld: &str) -> String {
        format!(
            r#"<html><head><title>Markets | Example</title><script type="application/ld+json">{json_ld}</script></head>
<body><header><nav><a href="/">Home</a></nav></header><div id="app"><h1>Markets rally</h1><div class="loading">Loading…</div></div></body></html>"#
        )
    }

    #[test]
    fn json_ld_article_body_when_the_page_has_no_paragraphs() {
        let plain = format!(r#"{{"@context":"https://schema.org","@type":"NewsArticle","headline":"Markets rally","datePublished":"2017-01-10T09:30:00Z","articleBody":"{STORY}"}}"#);
        // A top-level array, with the article after another object.
        let array = format!(r#"[{{"@type":"Organization","name":"Example News"}},{plain}]"#);
        // An @graph, the article typed with an array, its body holding HTML and a raw line break (invalid JSON,
        // common in the wild).
        let graph = format!(
            r#"{{"@context":"https://schema.org","@graph":[{{"@type":"WebPage","datePublished":"2016-05-05T00:00:00Z"}},
            {{"@type":["ReportageNewsArticle"],"datePublished":"2017-01-10T09:30:00Z","articleBody":"<p>{}</p>
            <p>{}</p>"}}]}}"#,
            &STORY[..107],
            &STORY[108..]
        );
        for (name, ld) in [("object", plain), ("array", array), ("graph", graph)] {
            let e = extract(script_rendered(&ld).as_bytes(), None, "http://e.com/ld", None).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(e.method, "json-ld", "{name}");
            assert_eq!(e.body.replace("\n\n", " "), STORY, "{name}");
            assert_eq!(e.published.unwrap().to_rfc3339(), "2017-01-10T09:30:00+00:00", "{name}: the article's date, not the page's");
        }
        // Broken JSON-LD is skipped: the page is then an error, not a crash.
        let err = extract(script_rendered("{\"articleBody\": \"unterminated").as_bytes(), None, "http://e.com/bad", None).unwrap_err();
        assert!(err.message.starts_with("no article text"), "{err}");
    }

    #[test]
    fn json_ld_date_is_parsed_not_searched() {
        // A nested object's date comes first in the text; the article's own is a JSON-LD value object.
        let ld = r#"{"@type":"NewsArticle","publisher":{"@type":"Organization","datePublished":"1999-01-01T00:00:00Z"},"datePublished":{"@value":"2017-01-10T09:30:00Z"}}"#;
        let page = format!(
            r#"<html><head><script type="application/ld+json">{ld}</script></head><body><article><p>{STORY}</p></article></body></html>"#
        );
        let e = extract(page.as_bytes(), None, "http://e.com/d", None).unwrap();
        assert_eq!(e.method, "general");
        assert_eq!(e.published.unwrap().to_rfc3339(), "2017-01-10T09:30:00+00:00");
    }

    #[test]
    fn densest_block_when_text_is_in_divs_and_breaks() {
        // No <p>, no JSON-LD; an unlabelled menu of links and a short promo line beside the story.
        let page = format!(
            r#"<html><body><div class="top"><a href="/a">World news</a> | <a href="/b">Business news</a> | <a href="/c">Markets and economy</a> | <a href="/d">Technology</a></div>
<div class="wrap"><h1>Markets rally</h1><div class="txt">{}<br><br>{}<br>Bond yields fell, <a href="/fx">the currency</a> weakened against the dollar, traders said.</div>
<div class="note">Follow us for more updates every day.</div></div></body></html>"#,
            &STORY[..107],
            &STORY[108..]
        );
        let e = extract(page.as_bytes(), None, "http://e.com/br", None).unwrap();
        assert_eq!(e.method, "dense-block");
        assert_eq!(
            e.body,
            format!("{}\n\n{}\nBond yields fell, the currency weakened against the dollar, traders said.", &STORY[..107], &STORY[108..])
        );
        // Paragraphs as a run of <div>s: their common parent wins over any one of them.
        let soup = format!(
            r#"<html><body><div class="menu-x"><a href="/a">Home page</a> <a href="/b">Latest headlines today</a></div><div class="story"><div>{}</div><div>{}</div><div>Bond yields fell, and the currency weakened against the dollar.</div></div></body></html>"#,
            &STORY[..107],
            &STORY[108..]
        );
        let e = extract(soup.as_bytes(), None, "http://e.com/divs", None).unwrap();
        assert_eq!(e.method, "dense-block");
        assert!(e.body.starts_with(&STORY[..107]) && e.body.ends_with("against the dollar."), "{}", e.body);
        assert!(!e.body.contains("Home page"), "{}", e.body);
    }

    #[test]
    fn selectors_on_a_deeply_nested_page() {
        let depth = 30_000;
        let page = format!("<html><body><article>{}{STORY}{}<div class=\"share\">Share</div></article></body></html>", "<div>".repeat(depth), "</div>".repeat(depth));
        let s = SelectorConfig { title: None, body: Some("article".into()), date: None, remove: vec![".share".into()] };
        let e = extract(page.as_bytes(), None, "http://e.com/deep", Some(&s)).unwrap();
        assert_eq!((e.method, e.body.as_str()), ("selectors", STORY));
    }

    #[test]
    fn empty_page_is_an_error_naming_the_url() {
        let err = extract(b"<html><body><nav>menu</nav></body></html>", None, "http://e.com/x", None).unwrap_err();
        assert!(err.to_string().starts_with("http://e.com/x: no article text"), "{err}");
    }
}
