//! Feed parsing (RSS 0.9x/1.0/2.0, Atom, JSON Feed via feed-rs) with recovery for the usual breakage:
//! HTML entities XML does not know, bare ampersands, illegal control characters, odd dates.

use std::borrow::Cow;

use chrono::{DateTime, Utc};

use super::text::html_to_text;

#[derive(Debug, Clone, thiserror::Error)]
#[error("{url}: malformed feed: {message}")]
pub struct FeedError {
    pub url: String,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct FeedItem {
    /// Absolute link (resolved against the feed URL), not yet canonicalised.
    pub link: String,
    pub title: String,
    /// Plain text from the item's content or summary (HTML stripped).
    pub text: String,
    pub published: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct ParsedFeed {
    pub items: Vec<FeedItem>,
    pub language: Option<String>,
    /// Set when the feed only parsed after repair; says what was repaired.
    pub recovered: Option<String>,
    /// Items dropped because they had no usable link.
    pub skipped_items: usize,
}

pub fn parse_feed(bytes: &[u8], feed_url: &str) -> Result<ParsedFeed, FeedError> {
    match parse_once(bytes, feed_url) {
        Ok(feed) => Ok(feed),
        Err(first) => {
            let (repaired, what) = repair(bytes);
            if what.is_empty() {
                return Err(FeedError { url: feed_url.to_string(), message: first });
            }
            let mut feed = parse_once(&repaired, feed_url)
                .map_err(|e| FeedError { url: feed_url.to_string(), message: format!("{first} (after repair: {e})") })?;
            feed.recovered = Some(format!("repaired {}", what.join(", ")));
            Ok(feed)
        }
    }
}

fn parse_once(bytes: &[u8], feed_url: &str) -> Result<ParsedFeed, String> {
    let parser = feed_rs::parser::Builder::new()
        .base_uri(Some(feed_url))
        .timestamp_parser(lenient_timestamp)
        .sanitize_content(false)
        .build();
    let feed = parser.parse(bytes).map_err(|e| e.to_string())?;
    let mut items = Vec::with_capacity(feed.entries.len());
    let mut skipped = 0;
    for entry in feed.entries {
        let link = entry
            .links
            .iter()
            .find(|l| l.rel.as_deref().is_none_or(|r| r == "alternate"))
            .or(entry.links.first())
            .map(|l| l.href.clone())
            .or_else(|| entry.id.starts_with("http").then(|| entry.id.clone()));
        let Some(link) = link.and_then(|l| super::canon::resolve(feed_url, &l)) else {
            skipped += 1;
            continue;
        };
        let title = entry.title.map(|t| html_to_text(&t.content)).unwrap_or_default();
        let content = entry.content.and_then(|c| c.body).map(|b| html_to_text(&b)).unwrap_or_default();
        let summary = entry.summary.map(|s| html_to_text(&s.content)).unwrap_or_default();
        let text = if content.len() >= summary.len() { content } else { summary };
        items.push(FeedItem { link, title: title.trim().to_string(), text, published: entry.published.or(entry.updated) });
    }
    Ok(ParsedFeed { items, language: feed.language, recovered: None, skipped_items: skipped })
}

/// Dates as real feeds write them: RFC 2822 with odd zones or day names, RFC 3339, bare dates.
fn lenient_timestamp(text: &str) -> Option<DateTime<Utc>> {
    let t = text.trim();
    if let Ok(d) = DateTime::parse_from_rfc2822(t) {
        return Some(d.with_timezone(&Utc));
    }
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Some(d.with_timezone(&Utc));
    }
    parse_loose_date(t)
}

/// Last-resort date parsing shared with page extraction.
pub fn parse_loose_date(t: &str) -> Option<DateTime<Utc>> {
    let t = t.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Some(d.with_timezone(&Utc));
    }
    if let Ok(d) = DateTime::parse_from_rfc2822(t) {
        return Some(d.with_timezone(&Utc));
    }
    // Drop a leading day name ("Tue, ") that is often wrong, and named zones chrono rejects.
    let mut s = t.to_string();
    if let Some((head, rest)) = s.split_once(", ") {
        if head.len() <= 9 && head.chars().all(|c| c.is_ascii_alphabetic()) {
            s = rest.to_string();
        }
    }
    for (zone, offset) in [("EST", "-0500"), ("EDT", "-0400"), ("CST", "-0600"), ("CDT", "-0500"), ("PST", "-0800"), ("PDT", "-0700"), ("UTC", "+0000"), ("GMT", "+0000"), ("KST", "+0900"), ("CET", "+0100"), ("CEST", "+0200"), ("BST", "+0100")] {
        if s.ends_with(zone) {
            s = format!("{}{}", &s[..s.len() - zone.len()], offset);
        }
    }
    let formats = [
        "%d %b %Y %H:%M:%S %z",
        "%d %b %Y %H:%M %z",
        "%d %B %Y %H:%M:%S %z",
        "%Y-%m-%dT%H:%M:%S%z",
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S %z",
        "%Y-%m-%d %H:%M:%S%z",
    ];
    for f in formats {
        if let Ok(d) = DateTime::parse_from_str(&s, f) {
            return Some(d.with_timezone(&Utc));
        }
    }
    for f in ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M", "%d %b %Y %H:%M:%S"] {
        if let Ok(d) = chrono::NaiveDateTime::parse_from_str(&s, f) {
            return Some(d.and_utc());
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s.get(..10).unwrap_or(&s), "%Y-%m-%d") {
        return d.and_hms_opt(0, 0, 0).map(|d| d.and_utc());
    }
    None
}

/// Repairs common XML breakage; returns the repaired text and a list of what was repaired (empty: nothing to do).
fn repair(bytes: &[u8]) -> (Vec<u8>, Vec<&'static str>) {
    let text: Cow<str> = String::from_utf8_lossy(bytes);
    let mut what = Vec::new();
    // Characters XML 1.0 forbids (C0 controls except tab/newline/CR).
    let cleaned: String = text.chars().filter(|c| !matches!(*c as u32, 0..=8 | 0x0B | 0x0C | 0x0E..=0x1F | 0xFFFE | 0xFFFF)).collect();
    if cleaned.len() != text.len() {
        what.push("illegal XML characters");
    }
    let (fixed, changed) = fix_entities(&cleaned);
    if changed {
        what.push("entities");
    }
    (fixed.into_bytes(), what)
}

/// Turns HTML named entities into numeric references and bare '&' into "&amp;", leaving CDATA alone.
fn fix_entities(s: &str) -> (String, bool) {
    let mut out = String::with_capacity(s.len() + 64);
    let mut changed = false;
    let mut rest = s;
    while let Some(pos) = rest.find(|c| c == '&' || c == '<') {
        out.push_str(&rest[..pos]);
        rest = &rest[pos..];
        if rest.starts_with("<![CDATA[") {
            let end = rest.find("]]>").map(|e| e + 3).unwrap_or(rest.len());
            out.push_str(&rest[..end]);
            rest = &rest[end..];
            continue;
        }
        if rest.starts_with('<') {
            out.push('<');
            rest = &rest[1..];
            continue;
        }
        // rest starts with '&'
        let name_end = rest[1..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '#')).map(|i| i + 1);
        match name_end {
            Some(end) if rest[end..].starts_with(';') && end > 1 => {
                let name = &rest[1..end];
                let xml_ok = matches!(name, "amp" | "lt" | "gt" | "quot" | "apos") || name.starts_with('#');
                if xml_ok {
                    out.push_str(&rest[..=end]);
                } else if let Some(cp) = html_entity(name) {
                    out.push_str(&format!("&#{cp};"));
                    changed = true;
                } else {
                    out.push_str("&amp;");
                    out.push_str(&rest[1..=end]);
                    changed = true;
                }
                rest = &rest[end + 1..];
            }
            _ => {
                out.push_str("&amp;");
                rest = &rest[1..];
                changed = true;
            }
        }
    }
    out.push_str(rest);
    (out, changed)
}

fn html_entity(name: &str) -> Option<u32> {
    Some(match name {
        "nbsp" => 160,
        "copy" => 169,
        "reg" => 174,
        "trade" => 8482,
        "hellip" => 8230,
        "mdash" => 8212,
        "ndash" => 8211,
        "lsquo" => 8216,
        "rsquo" => 8217,
        "ldquo" => 8220,
        "rdquo" => 8221,
        "laquo" => 171,
        "raquo" => 187,
        "bull" => 8226,
        "middot" => 183,
        "euro" => 8364,
        "pound" => 163,
        "yen" => 165,
        "cent" => 162,
        "deg" => 176,
        "eacute" => 233,
        "egrave" => 232,
        "aacute" => 225,
        "agrave" => 224,
        "ouml" => 246,
        "uuml" => 252,
        "auml" => 228,
        "szlig" => 223,
        "ccedil" => 231,
        "ntilde" => 241,
        "iacute" => 237,
        "oacute" => 243,
        "uacute" => 250,
        "times" => 215,
        "shy" => 173,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSS: &str = r#"<?xml version="1.0"?><rss version="2.0"><channel><title>T</title><link>http://e.com/</link>
<item><title>One &amp; two</title><link>/news/1?utm_source=rss</link><description>&lt;p&gt;Hello &lt;b&gt;world&lt;/b&gt;&lt;/p&gt;</description><pubDate>Tue, 10 Jan 2017 10:00:00 GMT</pubDate></item>
<item><title>No link</title></item>
</channel></rss>"#;

    #[test]
    fn parses_rss_and_resolves_links() {
        let f = parse_feed(RSS.as_bytes(), "http://e.com/feed.xml").unwrap();
        assert_eq!(f.items.len(), 1);
        assert_eq!(f.skipped_items, 1);
        assert_eq!(f.items[0].title, "One & two");
        assert_eq!(f.items[0].link, "http://e.com/news/1?utm_source=rss");
        assert_eq!(f.items[0].text, "Hello world");
        assert_eq!(f.items[0].published.unwrap().to_rfc3339(), "2017-01-10T10:00:00+00:00");
        assert!(f.recovered.is_none());
    }

    #[test]
    fn recovers_html_entities_bare_ampersands_and_control_chars() {
        let broken = "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>T</title>\
            <item><title>Caf&eacute; &nbsp; M&A deals \u{0001}up</title><link>http://e.com/a</link>\
            <description>AT&T &hellip; <![CDATA[ keep & this ]]></description>\
            <pubDate>Mon, 32 Foo 2017</pubDate></item></channel></rss>";
        let f = parse_feed(broken.as_bytes(), "http://e.com/feed").unwrap();
        assert_eq!(f.items.len(), 1);
        assert!(f.items[0].title.starts_with("Café"), "{}", f.items[0].title);
        assert!(f.items[0].title.contains("M&A deals up"), "{}", f.items[0].title);
        assert!(f.items[0].published.is_none());
        let rec = f.recovered.unwrap();
        assert!(rec.contains("entities") && rec.contains("illegal"), "{rec}");
    }

    #[test]
    fn hopeless_feed_is_an_error_naming_the_url() {
        let err = parse_feed(b"<html><body>not a feed</body></html>", "http://e.com/feed").unwrap_err();
        assert!(err.to_string().starts_with("http://e.com/feed: malformed feed"), "{err}");
    }

    #[test]
    fn parses_atom_and_json_feed() {
        let atom = r#"<feed xmlns="http://www.w3.org/2005/Atom"><title>A</title><id>x</id><updated>2017-01-01T00:00:00Z</updated>
          <entry><title type="html">&lt;i&gt;Hi&lt;/i&gt;</title><id>urn:1</id><link href="http://e.com/1"/><updated>2017-01-02T03:04:05+01:00</updated><summary>S</summary></entry></feed>"#;
        let f = parse_feed(atom.as_bytes(), "http://e.com/atom").unwrap();
        assert_eq!(f.items[0].title, "Hi");
        assert_eq!(f.items[0].published.unwrap().to_rfc3339(), "2017-01-02T02:04:05+00:00");
        let json = r#"{"version":"https://jsonfeed.org/version/1.1","title":"J","items":[{"id":"1","url":"http://e.com/j1","title":"J one","content_html":"<p>Body</p>","date_published":"2017-02-03T04:05:06Z"}]}"#;
        let f = parse_feed(json.as_bytes(), "http://e.com/feed.json").unwrap();
        assert_eq!(f.items[0].link, "http://e.com/j1");
        assert_eq!(f.items[0].text, "Body");
    }

    #[test]
    fn loose_dates() {
        assert!(parse_loose_date("Tue, 10 Jan 2017 10:00:00 EST").is_some());
        assert!(parse_loose_date("Wed, 10 Jan 2017 10:00:00 +0000").is_some(), "wrong day name is tolerated");
        assert!(parse_loose_date("2017-01-10 10:00:00").is_some());
        assert!(parse_loose_date("2017-01-10").is_some());
        assert!(parse_loose_date("yesterday").is_none());
    }
}
