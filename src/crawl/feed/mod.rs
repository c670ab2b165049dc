//! Feed parsing (RSS 0.9x/1.0/2.0, Atom 0.3/1.0, JSON Feed via feed-rs) that reads what real feeds send.
//!
//! The bytes go through four stages, each of which exists because one flaw used to reject a whole feed:
//! 1. `decode`: any charset (BOM, UTF-16/32 sniffing, HTTP charset, XML declaration, `chardetng`) to UTF-8;
//! 2. `prepare`: the declaration made to say UTF-8, the root fixed where feed-rs would refuse or misread it,
//!    and the document cut after `max_items` items so a huge feed is never built whole;
//! 3. feed-rs, then `repair` (entities, forbidden characters) and feed-rs again;
//! 4. `lenient`: an event-level item reader that keeps what a broken feed still holds.
//!
//! The whole of it runs under `catch_unwind`: a parser panic is a `FeedError` naming the URL, not a dead task.

mod dates;
mod decode;
mod lenient;
mod prepare;
mod repair;

use std::panic::{catch_unwind, AssertUnwindSafe};

use chrono::{DateTime, Utc};

pub use dates::parse_loose_date;
use dates::lenient_timestamp;

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
    /// Set when the feed only read after repair (or was not clean); says what was repaired.
    pub recovered: Option<String>,
    /// Items dropped because they had no usable link.
    pub skipped_items: usize,
    /// The document held more than `max_items` items; the rest were not read.
    pub truncated: bool,
    /// The charset the feed was decoded from ("UTF-8", "UTF-16BE", "windows-1252", ...).
    pub charset: &'static str,
}

#[derive(Debug, Clone)]
pub struct FeedOptions {
    /// Items read at most; the document is cut after them before parsing (bounds memory on huge feeds).
    pub max_items: usize,
}

/// The same default as `crawl.max_items_per_feed`.
pub const DEFAULT_MAX_ITEMS: usize = 500;

impl Default for FeedOptions {
    fn default() -> Self {
        FeedOptions { max_items: DEFAULT_MAX_ITEMS }
    }
}

/// Parses a feed as fetched: `content_type` is the HTTP Content-Type (its charset is honoured).
pub fn parse_feed(bytes: &[u8], content_type: Option<&str>, feed_url: &str) -> Result<ParsedFeed, FeedError> {
    parse_feed_with(bytes, content_type, feed_url, &FeedOptions::default())
}

pub fn parse_feed_with(bytes: &[u8], content_type: Option<&str>, feed_url: &str, opts: &FeedOptions) -> Result<ParsedFeed, FeedError> {
    guarded(feed_url, || parse_text(bytes, content_type, feed_url, opts))
}

/// Last line of defence: the parsers are third-party code fed untrusted bytes, and a panic there must not take
/// the crawl task (and every other source of the pass) with it.
fn guarded(feed_url: &str, parse: impl FnOnce() -> Result<ParsedFeed, String>) -> Result<ParsedFeed, FeedError> {
    let error = |message: String| FeedError { url: feed_url.to_string(), message };
    match catch_unwind(AssertUnwindSafe(parse)) {
        Ok(result) => result.map_err(error),
        Err(panic) => {
            let what = panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned());
            Err(error(format!("the feed parser panicked: {}", what.unwrap_or_else(|| "(no message)".into()))))
        }
    }
}

fn parse_text(bytes: &[u8], content_type: Option<&str>, feed_url: &str, opts: &FeedOptions) -> Result<ParsedFeed, String> {
    let decoded = decode::decode(bytes, content_type);
    let mut notes = decoded.notes;
    let charset = decoded.charset;
    let mut text = decoded.text;
    let json = prepare::is_json(&text);
    let truncated = if json {
        prepare::cut_json_items(&mut text, opts.max_items).is_some()
    } else {
        prepare::declare_utf8(&mut text);
        prepare::fix_root(&mut text);
        prepare::cut_xml_items(&mut text, opts.max_items).is_some()
    };
    let finish = |mut feed: ParsedFeed, notes: Vec<String>| {
        feed.items.truncate(opts.max_items);
        feed.truncated |= truncated;
        feed.charset = charset;
        feed.recovered = (!notes.is_empty()).then(|| notes.join("; "));
        feed
    };
    let first = match parse_once(&text, feed_url) {
        Ok(feed) if !feed.items.is_empty() || feed.skipped_items > 0 || json => return Ok(finish(feed, notes)),
        Ok(empty) => {
            // feed-rs read no items; a lenient read may find some (a vocabulary or layout feed-rs does not know).
            let l = lenient::read(&text, opts.max_items);
            if l.items.is_empty() {
                return Ok(finish(empty, notes));
            }
            notes.push("items read leniently (feed-rs found none)".into());
            return Ok(finish(from_lenient(l, feed_url), notes));
        }
        Err(e) if json => return Err(e),
        Err(e) => e,
    };
    let (repaired, what) = repair::repair(&text);
    drop(text);
    if !what.is_empty() {
        if let Ok(feed) = parse_once(&repaired, feed_url) {
            notes.push(format!("repaired {}", what.join(", ")));
            return Ok(finish(feed, notes));
        }
    }
    let l = lenient::read(&repaired, opts.max_items);
    let feed_root = matches!(l.root.as_deref(), Some("rss" | "feed" | "rdf" | "channel"));
    if !feed_root || (l.items.is_empty() && !l.is_feed()) {
        let after = if what.is_empty() { String::new() } else { format!(" (also after repairing {})", what.join(", ")) };
        return Err(format!("{first}{after}"));
    }
    let mut how = format!("read leniently ({first}");
    if let Some(e) = &l.error {
        how.push_str(&format!("; stopped at {e}"));
    }
    how.push(')');
    if !what.is_empty() {
        how.push_str(&format!(" after repairing {}", what.join(", ")));
    }
    let broken = l.error.is_some();
    let feed = from_lenient(l, feed_url);
    if broken && feed.items.is_empty() && feed.skipped_items == 0 {
        // A truncated or broken document that yields no item is a failure, not an empty feed.
        return Err(first);
    }
    notes.push(how);
    Ok(finish(feed, notes))
}

fn parse_once(text: &str, feed_url: &str) -> Result<ParsedFeed, String> {
    let parser = feed_rs::parser::Builder::new()
        .base_uri(Some(feed_url))
        .timestamp_parser(lenient_timestamp)
        .sanitize_content(false)
        .build();
    let feed = parser.parse(text.as_bytes()).map_err(|e| e.to_string())?;
    let mut items = Vec::with_capacity(feed.entries.len());
    let mut skipped = 0;
    for entry in feed.entries {
        let link = entry
            .links
            .iter()
            .find(|l| l.rel.as_deref().is_none_or(|r| r == "alternate"))
            .or(entry.links.first())
            .map(|l| l.href.clone());
        let id = Some(entry.id);
        let title = entry.title.map(|t| t.content).unwrap_or_default();
        let content = entry.content.and_then(|c| c.body).unwrap_or_default();
        let summary = entry.summary.map(|s| s.content).unwrap_or_default();
        match item(feed_url, link, id, &title, &content, &summary, entry.published.or(entry.updated)) {
            Some(i) => items.push(i),
            None => skipped += 1,
        }
    }
    Ok(ParsedFeed { items, language: feed.language, recovered: None, skipped_items: skipped, truncated: false, charset: "UTF-8" })
}

fn from_lenient(l: lenient::Lenient, feed_url: &str) -> ParsedFeed {
    let mut items = Vec::with_capacity(l.items.len());
    let mut skipped = 0;
    for raw in l.items {
        let published = raw.published.as_deref().or(raw.updated.as_deref()).and_then(lenient_timestamp);
        match item(feed_url, raw.link.or(raw.other_link), raw.id, &raw.title, &raw.content, &raw.summary, published) {
            Some(i) => items.push(i),
            None => skipped += 1,
        }
    }
    ParsedFeed { items, language: l.language, recovered: None, skipped_items: skipped, truncated: false, charset: "UTF-8" }
}

/// One item from either reader: the link (or an http id) resolved against the feed URL, HTML made plain text.
fn item(feed_url: &str, link: Option<String>, id: Option<String>, title: &str, content: &str, summary: &str, published: Option<DateTime<Utc>>) -> Option<FeedItem> {
    let link = link.or_else(|| id.filter(|i| i.starts_with("http")))?;
    let link = super::canon::resolve(feed_url, &link)?;
    let content = html_to_text(content);
    let summary = html_to_text(summary);
    let text = if content.len() >= summary.len() { content } else { summary };
    Some(FeedItem { link, title: html_to_text(title).trim().to_string(), text, published })
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
        let f = parse_feed(RSS.as_bytes(), None, "http://e.com/feed.xml").unwrap();
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
        let f = parse_feed(broken.as_bytes(), None, "http://e.com/feed").unwrap();
        assert_eq!(f.items.len(), 1);
        assert!(f.items[0].title.starts_with("Café"), "{}", f.items[0].title);
        assert!(f.items[0].title.contains("M&A deals up"), "{}", f.items[0].title);
        assert!(f.items[0].published.is_none());
        let rec = f.recovered.unwrap();
        assert!(rec.contains("entities") && rec.contains("illegal"), "{rec}");
    }

    #[test]
    fn hopeless_feed_is_an_error_naming_the_url() {
        let err = parse_feed(b"<html><body>not a feed</body></html>", None, "http://e.com/feed").unwrap_err();
        assert!(err.to_string().starts_with("http://e.com/feed: malformed feed"), "{err}");
    }

    #[test]
    fn parses_atom_and_json_feed() {
        let atom = r#"<feed xmlns="http://www.w3.org/2005/Atom"><title>A</title><id>x</id><updated>2017-01-01T00:00:00Z</updated>
          <entry><title type="html">&lt;i&gt;Hi&lt;/i&gt;</title><id>urn:1</id><link href="http://e.com/1"/><updated>2017-01-02T03:04:05+01:00</updated><summary>S</summary></entry></feed>"#;
        let f = parse_feed(atom.as_bytes(), None, "http://e.com/atom").unwrap();
        assert_eq!(f.items[0].title, "Hi");
        assert_eq!(f.items[0].published.unwrap().to_rfc3339(), "2017-01-02T02:04:05+00:00");
        let json = r#"{"version":"https://jsonfeed.org/version/1.1","title":"J","items":[{"id":"1","url":"http://e.com/j1","title":"J one","content_html":"<p>Body</p>","date_published":"2017-02-03T04:05:06Z"}]}"#;
        let f = parse_feed(json.as_bytes(), None, "http://e.com/feed.json").unwrap();
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

    fn utf16(s: &str, big_endian: bool, bom: bool) -> Vec<u8> {
        let mut out = Vec::new();
        if bom {
            out.extend_from_slice(if big_endian { &[0xFE, 0xFF] } else { &[0xFF, 0xFE] });
        }
        for u in s.encode_utf16() {
            out.extend_from_slice(&if big_endian { u.to_be_bytes() } else { u.to_le_bytes() });
        }
        out
    }

    fn rss_items(n: usize) -> String {
        let mut s = String::from("<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>T</title>");
        for i in 0..n {
            s.push_str(&format!("<item><title>Item {i}</title><link>http://e.com/{i}</link><description>Text of item {i}</description></item>\n"));
        }
        s.push_str("</channel></rss>");
        s
    }

    #[test]
    fn utf16_and_ucs2_feeds_parse() {
        let doc = "<?xml version=\"1.0\" encoding=\"UTF-16\"?><rss version=\"2.0\"><channel><title>T</title><item><title>Grüße €</title><link>http://e.com/1</link></item></channel></rss>";
        for (be, bom) in [(true, true), (true, false), (false, true), (false, false)] {
            let f = parse_feed(&utf16(doc, be, bom), None, "http://e.com/f").unwrap_or_else(|e| panic!("be={be} bom={bom}: {e}"));
            assert_eq!(f.items[0].title, "Grüße €", "be={be} bom={bom}");
            assert!(f.recovered.is_none(), "{:?}", f.recovered);
        }
        // UCS-2 is UTF-16 without surrogates; labelled as such in the header.
        let ucs2 = doc.replace("UTF-16", "ISO-10646-UCS-2");
        let f = parse_feed(&utf16(&ucs2, true, false), Some("application/xml; charset=ucs-2"), "http://e.com/f").unwrap();
        assert_eq!(f.items.len(), 1);
    }

    #[test]
    fn a_parser_panic_is_a_feed_error_naming_the_url() {
        let err = guarded("http://e.com/bad", || panic!("boom in the parser")).unwrap_err();
        assert_eq!(err.url, "http://e.com/bad");
        assert!(err.to_string().starts_with("http://e.com/bad: malformed feed: the feed parser panicked: boom"), "{err}");
        // And raw UTF-16, which panics inside quick-xml when handed to feed-rs as is, comes out as a result too.
        let doc = "<?xml version=\"1.0\" encoding=\"UTF-16\"?><rss version=\"2.0\"><channel><item><title>x</title></item></channel></rss>";
        let raw = utf16(doc, true, true);
        let r = guarded("http://e.com/u16", || feed_rs::parser::parse(raw.as_slice()).map(|_| unreachable!()).map_err(|e| e.to_string()));
        assert!(r.unwrap_err().url == "http://e.com/u16");
    }

    #[test]
    fn rss_without_version_is_read() {
        let doc = "<rss><channel><title>T</title><item><title>One</title><link>http://e.com/1</link></item></channel></rss>";
        let f = parse_feed(doc.as_bytes(), None, "http://e.com/f").unwrap();
        assert_eq!(f.items.len(), 1);
        assert_eq!(f.items[0].title, "One");
        let f = parse_feed(doc.replace("<rss>", "<rss version=\"0.94\">").as_bytes(), None, "http://e.com/f").unwrap();
        assert_eq!(f.items.len(), 1);
    }

    #[test]
    fn one_odd_atom_type_does_not_reject_the_feed() {
        let doc = r#"<feed xmlns="http://www.w3.org/2005/Atom"><title>A</title><id>x</id>
          <entry><title type="text/plain">Odd</title><id>urn:1</id><link href="http://e.com/1"/><summary>S1</summary></entry>
          <entry><title>Fine</title><id>urn:2</id><link href="http://e.com/2"/><content type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml"><p>C2</p></div></content></entry></feed>"#;
        let f = parse_feed(doc.as_bytes(), None, "http://e.com/atom").unwrap();
        assert_eq!(f.items.len(), 2, "{:?}", f.items);
        assert_eq!((f.items[0].title.as_str(), f.items[0].text.as_str()), ("Odd", "S1"));
        assert_eq!((f.items[1].title.as_str(), f.items[1].text.as_str()), ("Fine", "C2"));
        assert!(f.recovered.unwrap().contains("read leniently"));
    }

    #[test]
    fn one_invalid_utf8_byte_does_not_reject_the_feed() {
        let mut doc = rss_items(3).into_bytes();
        let at = doc.windows(6).position(|w| w == b"Item 1").unwrap();
        doc.splice(at + 4..at + 4, [0xE9]); // "Item\xe9 1"
        let f = parse_feed(&doc, None, "http://e.com/f").unwrap();
        assert_eq!(f.items.len(), 3);
        // No other UTF-8 in the document: read as windows-1252 by detection.
        assert_eq!(f.items[1].title, "Itemé 1");
        let mut mixed = doc.clone();
        let channel = mixed.windows(9).position(|w| w == b"<channel>").unwrap() + 9;
        mixed.splice(channel..channel, "<!-- ünïcödé -->".bytes());
        let f = parse_feed(&mixed, None, "http://e.com/f").unwrap();
        assert_eq!(f.items[1].title, "Itemé 1");
        assert!(f.recovered.unwrap().contains("1 bytes invalid in UTF-8"));
    }

    #[test]
    fn charset_named_only_in_the_http_header() {
        let doc = "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><item><title>Новости дня</title><link>http://e.com/1</link></item></channel></rss>";
        let (bytes, _, _) = encoding_rs::WINDOWS_1251.encode(doc);
        let f = parse_feed(&bytes, Some("application/rss+xml; charset=windows-1251"), "http://e.com/f").unwrap();
        assert_eq!(f.items[0].title, "Новости дня");
        let japanese = doc.replace("Новости дня", "今日のニュース");
        let (bytes, _, _) = encoding_rs::SHIFT_JIS.encode(&japanese);
        let f = parse_feed(&bytes, Some("text/xml;charset=Shift_JIS"), "http://e.com/f").unwrap();
        assert_eq!(f.items[0].title, "今日のニュース");
    }

    #[test]
    fn atom_03_and_rss_in_a_default_namespace_have_items() {
        let atom03 = r#"<?xml version="1.0"?><feed version="0.3" xmlns="http://purl.org/atom/ns#"><title>A</title>
          <entry><title>Old atom</title><link rel="alternate" type="text/html" href="http://e.com/a1"/><id>tag:1</id><issued>2004-01-01T00:00:00Z</issued>
          <content type="text/html" mode="escaped">&lt;p&gt;Hi&lt;/p&gt;</content></entry></feed>"#;
        let f = parse_feed(atom03.as_bytes(), None, "http://e.com/a").unwrap();
        assert_eq!(f.items.len(), 1, "{f:?}");
        assert_eq!((f.items[0].title.as_str(), f.items[0].link.as_str()), ("Old atom", "http://e.com/a1"));
        let rss_ns = r#"<rss version="2.0" xmlns="http://backend.userland.com/rss2"><channel><title>T</title>
          <item><title>Namespaced</title><link>http://e.com/n1</link></item></channel></rss>"#;
        let f = parse_feed(rss_ns.as_bytes(), None, "http://e.com/r").unwrap();
        assert_eq!(f.items.len(), 1);
        assert_eq!(f.items[0].title, "Namespaced");
    }

    #[test]
    fn latin1_feed_with_repairs_keeps_its_accents() {
        let doc = "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><rss version=\"2.0\"><channel><item><title>Caf\u{e9} cr\u{e8}me &nbsp;&eacute;t\u{e9} &Scaron; M&A</title><link>http://e.com/1</link><description>\u{c0} bient\u{f4}t &hellip;</description></item></channel></rss>";
        let (bytes, _, _) = encoding_rs::WINDOWS_1252.encode(doc);
        assert!(std::str::from_utf8(&bytes).is_err(), "the fixture is really Latin-1");
        let f = parse_feed(&bytes, None, "http://e.com/f").unwrap();
        assert_eq!(f.items[0].title, "Café crème été Š M&A");
        assert_eq!(f.items[0].text, "À bientôt …");
        assert!(!f.items[0].title.contains('\u{FFFD}'));
        assert!(f.recovered.unwrap().contains("repaired entities"));
    }

    #[test]
    fn huge_feed_is_cut_at_max_items_before_parsing() {
        let doc = rss_items(20_000);
        let f = parse_feed_with(doc.as_bytes(), None, "http://e.com/f", &FeedOptions { max_items: 500 }).unwrap();
        assert_eq!(f.items.len(), 500);
        assert!(f.truncated);
        assert_eq!(f.items[499].title, "Item 499");
        let f = parse_feed_with(rss_items(10).as_bytes(), None, "http://e.com/f", &FeedOptions { max_items: 500 }).unwrap();
        assert_eq!(f.items.len(), 10);
        assert!(!f.truncated);
        let mut json = String::from(r#"{"version":"https://jsonfeed.org/version/1.1","title":"J","items":["#);
        for i in 0..2000 {
            json.push_str(&format!(r#"{}{{"id":"{i}","url":"http://e.com/j{i}","content_text":"t {i}"}}"#, if i > 0 { "," } else { "" }));
        }
        json.push_str("]}");
        let f = parse_feed_with(json.as_bytes(), None, "http://e.com/j", &FeedOptions { max_items: 7 }).unwrap();
        assert_eq!(f.items.len(), 7);
        assert!(f.truncated);
    }

    #[test]
    fn items_of_an_ill_formed_feed_are_recovered() {
        // Cut off mid-item (a truncated download) with a mismatched tag before it.
        let doc = "<rss version=\"2.0\"><channel><title>T</title><item><title>One</title><link>http://e.com/1</link></item>\
            <item><title>Two</title><link>http://e.com/2</link><description>a <b>bold</i> claim</description></item>\
            <item><title>Three</title><link>http://e.com/3</link><descr";
        let f = parse_feed(doc.as_bytes(), None, "http://e.com/f").unwrap();
        let titles: Vec<_> = f.items.iter().map(|i| i.title.as_str()).collect();
        assert_eq!(titles, ["One", "Two", "Three"]);
        assert!(f.recovered.unwrap().starts_with("read leniently"));
        // Cut off inside its only item: nothing usable, so an error naming the URL.
        let err = parse_feed(b"<rss version=\"2.0\"><channel><item><title>Half an item</ti", None, "http://e.com/cut").unwrap_err();
        assert!(err.to_string().starts_with("http://e.com/cut: malformed feed"), "{err}");
        // Not a feed at all, even leniently: still an error.
        assert!(parse_feed(b"<html><item>x</item></html>", None, "http://e.com/f").is_err());
    }
}
