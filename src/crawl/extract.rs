//! Article page extraction: per-source CSS selectors when configured, otherwise a general main-content extractor
//! (paragraph-density scoring, boilerplate subtrees dropped), plus title and publication date from the usual
//! metadata (Open Graph, article:published_time, <time>, JSON-LD).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use ego_tree::NodeId;
use scraper::{ElementRef, Html, Node, Selector};
use serde::Serialize;

use super::feed::parse_loose_date;
use super::text::{decode_html, is_block, normalize_ws};
use crate::config::SelectorConfig;

#[derive(Debug, Clone, Serialize)]
pub struct Extracted {
    pub title: String,
    pub body: String,
    pub published: Option<DateTime<Utc>>,
    /// "selectors" or "general"
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

pub fn extract(bytes: &[u8], content_type: Option<&str>, url: &str, selectors: Option<&SelectorConfig>) -> Result<Extracted, ExtractError> {
    let (html, charset) = decode_html(bytes, content_type);
    let doc = Html::parse_document(&html);
    let err = |message: String| ExtractError { url: url.to_string(), message };

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
                let mut out = String::new();
                text_without(el, &removed, &mut out);
                let t = normalize_ws(&out);
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
        None => general_body(&doc),
    };
    let published = published.or_else(|| general_date(&doc));
    if body.chars().count() < MIN_BODY_CHARS {
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

fn removed_ids(doc: &Html, selectors: &[Selector]) -> std::collections::HashSet<NodeId> {
    selectors.iter().flat_map(|s| doc.select(s).map(|e| e.id())).collect()
}

fn text_without(el: ElementRef, removed: &std::collections::HashSet<NodeId>, out: &mut String) {
    for child in el.children() {
        if removed.contains(&child.id()) {
            continue;
        }
        match child.value() {
            Node::Text(t) => out.push_str(t),
            Node::Element(e) => {
                if matches!(e.name(), "script" | "style" | "noscript" | "template" | "iframe" | "svg") {
                    continue;
                }
                let block = is_block(e.name()) || e.name() == "br";
                if block {
                    out.push('\n');
                }
                if let Some(c) = ElementRef::wrap(child) {
                    text_without(c, removed, out);
                }
                if block {
                    out.push('\n');
                }
            }
            _ => {}
        }
    }
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

fn general_date(doc: &Html) -> Option<DateTime<Utc>> {
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
    for script in doc.select(&sel("script[type='application/ld+json']")) {
        let text: String = script.text().collect();
        if let Some(pos) = text.find("\"datePublished\"") {
            let rest = &text[pos + "\"datePublished\"".len()..];
            let value = rest.trim_start().trim_start_matches(':').trim_start().trim_start_matches('"');
            if let Some(end) = value.find('"') {
                if let Some(d) = parse_loose_date(&value[..end]) {
                    return Some(d);
                }
            }
        }
    }
    None
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

/// Readability-style: score containers by the paragraph text they hold, take the best one's paragraphs.
fn general_body(doc: &Html) -> String {
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
    let best = scores.into_iter().max_by(|a, b| a.1.total_cmp(&b.1)).map(|(id, _)| id);
    let Some(container) = best.and_then(|id| doc.tree.get(id)).and_then(ElementRef::wrap) else {
        // No paragraphs at all (text laid out with <br>): the non-boilerplate text of <body>, without headings
        // and dates, which would otherwise pass a title off as a body.
        let mut out = String::new();
        if let Some(body) = doc.select(&sel("body")).next() {
            collect_clean_with(body, &mut out, true);
        }
        return normalize_ws(&out);
    };
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
        if nested || (matches!(name, "li" | "blockquote") && el.select(&paragraphs).next().is_some() && name == "li") {
            continue;
        }
        let mut out = String::new();
        collect_clean(el, &mut out);
        let t = normalize_ws(&out).replace('\n', " ");
        if !t.is_empty() {
            parts.push(t);
        }
    }
    parts.join("\n\n")
}

fn collect_clean(el: ElementRef, out: &mut String) {
    collect_clean_with(el, out, false)
}

fn collect_clean_with(el: ElementRef, out: &mut String, skip_headings: bool) {
    for child in el.children() {
        match child.value() {
            Node::Text(t) => out.push_str(t),
            Node::Element(e) => {
                if is_boilerplate(e) || (skip_headings && matches!(e.name(), "h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "time")) {
                    continue;
                }
                let block = is_block(e.name()) || e.name() == "br";
                if block {
                    out.push('\n');
                }
                if let Some(c) = ElementRef::wrap(child) {
                    collect_clean_with(c, out, skip_headings);
                }
                if block {
                    out.push('\n');
                }
            }
            _ => {}
        }
    }
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

    #[test]
    fn empty_page_is_an_error_naming_the_url() {
        let err = extract(b"<html><body><nav>menu</nav></body></html>", None, "http://e.com/x", None).unwrap_err();
        assert!(err.to_string().starts_with("http://e.com/x: no article text"), "{err}");
    }
}
