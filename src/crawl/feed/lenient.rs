//! Last-resort item reader for feeds feed-rs refuses: one pass over quick-xml events (no tree, no recursion),
//! tolerant of mismatched end tags and bare ampersands, keeping every item read before the first fatal error.
//!
//! It knows the item shapes of RSS 0.9x/1.0/2.0 and Atom 0.3/1.0 by local name, which is what feedparser does too.

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

#[derive(Debug, Default)]
pub(super) struct RawItem {
    pub title: String,
    /// `<link>` text (RSS) or the alternate `href` (Atom).
    pub link: Option<String>,
    /// Any `href` link, used when there is no alternate one.
    pub other_link: Option<String>,
    pub id: Option<String>,
    pub content: String,
    pub summary: String,
    pub published: Option<String>,
    pub updated: Option<String>,
}

#[derive(Debug, Default)]
pub(super) struct Lenient {
    pub items: Vec<RawItem>,
    pub language: Option<String>,
    /// Local name of the root element, lower-cased (CDF writes `<CHANNEL>`).
    pub root: Option<String>,
    /// The XML error that ended the read early, with its byte offset.
    pub error: Option<String>,
}

impl Lenient {
    /// A document whose root is a feed root and that read to the end: an empty feed, not a broken one.
    pub fn is_feed(&self) -> bool {
        self.error.is_none() && matches!(self.root.as_deref(), Some("rss" | "feed" | "rdf" | "channel"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Title,
    Link,
    Id,
    Content,
    Summary,
    Published,
    Updated,
    Language,
}

/// Reads at most `max_items` items.
pub(super) fn read(text: &str, max_items: usize) -> Lenient {
    let mut reader = Reader::from_str(text);
    let cfg = reader.config_mut();
    cfg.check_end_names = false;
    cfg.allow_unmatched_ends = true;
    cfg.allow_dangling_amp = true;
    let mut out = Lenient::default();
    // Names of the open elements: an end tag closes up to its match (like an HTML parser) and a stray one is
    // ignored, so one bad tag does not shift every later item's depth.
    let mut open: Vec<String> = Vec::new();
    let mut item: Option<(usize, RawItem)> = None;
    // The element whose text is being collected, its depth, and the text so far.
    let mut field: Option<(Field, usize, String)> = None;
    loop {
        if out.items.len() >= max_items {
            break;
        }
        let event = match reader.read_event() {
            Ok(e) => e,
            Err(e) => {
                out.error = Some(format!("{e} at byte {}", reader.error_position()));
                break;
            }
        };
        match event {
            Event::Start(e) => {
                let local = e.local_name().as_ref().to_ascii_lowercase();
                if out.root.is_none() {
                    out.root = Some(local.clone());
                    out.language = attr(&e, "xml:lang");
                }
                on_start(&e, &local, open.len(), &mut item, &mut field, false);
                open.push(e.name().as_ref().to_string());
            }
            Event::Empty(e) => {
                let local = e.local_name().as_ref().to_ascii_lowercase();
                if out.root.is_none() {
                    out.root = Some(local.clone());
                }
                if item.is_none() && is_item(&local) {
                    out.items.push(RawItem { link: attr(&e, "href"), ..RawItem::default() });
                } else {
                    on_start(&e, &local, open.len(), &mut item, &mut field, true);
                }
            }
            Event::End(e) => {
                const SEARCH: usize = 64;
                let name = e.name();
                let Some(pos) = open.iter().rev().take(SEARCH).position(|n| n.as_str() == name.as_ref()) else { continue };
                let target = open.len() - 1 - pos;
                while open.len() > target {
                    open.pop();
                    let depth = open.len();
                    if let Some((f, d, _)) = &mut field {
                        if *d == depth {
                            let (f, _, text) = field.take().expect("checked");
                            store(f, text, item.as_mut().map(|(_, i)| i), &mut out.language);
                        } else if matches!(f, Field::Content | Field::Summary) {
                            // Nested XHTML markup: keep paragraphs apart.
                            field.as_mut().expect("checked").2.push('\n');
                        }
                    }
                    if item.as_ref().is_some_and(|(d, _)| *d == depth) {
                        field = None;
                        out.items.push(item.take().expect("checked").1);
                    }
                }
            }
            Event::Text(t) => push_text(&mut field, &t.xml10_content()),
            Event::CData(t) => push_text(&mut field, &t.xml10_content()),
            Event::GeneralRef(r) => {
                let name = r.xml10_content();
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    _ => match &*name {
                        "amp" => "&".into(),
                        "lt" => "<".into(),
                        "gt" => ">".into(),
                        "quot" => "\"".into(),
                        "apos" => "'".into(),
                        n => htmlize::ENTITIES
                            .get(format!("&{n};").as_bytes())
                            .and_then(|b| std::str::from_utf8(b).ok())
                            .map(str::to_string)
                            .unwrap_or_else(|| format!("&{n};")),
                    },
                };
                push_text(&mut field, &resolved);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    // An item cut short by a fatal error still counts when its link was read.
    if let Some((_, mut it)) = item {
        if let Some((f, _, text)) = field {
            store(f, text, Some(&mut it), &mut out.language);
        }
        if it.link.is_some() || it.other_link.is_some() {
            out.items.push(it);
        }
    }
    out
}

fn on_start(e: &BytesStart, local: &str, depth: usize, item: &mut Option<(usize, RawItem)>, field: &mut Option<(Field, usize, String)>, empty: bool) {
    if field.is_some() {
        return; // markup inside a field: its text is collected by the field
    }
    let Some((item_depth, it)) = item.as_mut() else {
        if is_item(local) && !empty {
            // CDF puts the item's link on the item itself.
            let link = attr(e, "href");
            *item = Some((depth, RawItem { link, ..RawItem::default() }));
        } else if local == "language" && !empty {
            *field = Some((Field::Language, depth, String::new()));
        }
        return;
    };
    if depth != *item_depth + 1 || !known_prefix(e) {
        return;
    }
    if local == "link" {
        if let Some(href) = attr(e, "href") {
            let rel = attr(e, "rel");
            if rel.as_deref().is_none_or(|r| r == "alternate") {
                it.link.get_or_insert(href);
            } else {
                it.other_link.get_or_insert(href);
            }
            return;
        }
    }
    let f = match local {
        "title" => Field::Title,
        "link" => Field::Link,
        "guid" | "id" => Field::Id,
        "encoded" | "content" | "body" | "fullitem" => Field::Content,
        "description" | "summary" | "abstract" => Field::Summary,
        "pubdate" | "published" | "issued" | "date" | "created" => Field::Published,
        "updated" | "modified" => Field::Updated,
        _ => return,
    };
    if !empty {
        *field = Some((f, depth, String::new()));
    }
}

fn store(f: Field, text: String, item: Option<&mut RawItem>, language: &mut Option<String>) {
    let trimmed = text.trim();
    if f == Field::Language {
        if language.is_none() && !trimmed.is_empty() {
            *language = Some(trimmed.to_string());
        }
        return;
    }
    let Some(it) = item else { return };
    let set = |slot: &mut Option<String>| {
        if slot.is_none() && !trimmed.is_empty() {
            *slot = Some(trimmed.to_string());
        }
    };
    match f {
        Field::Title if it.title.is_empty() => it.title = text,
        Field::Link => set(&mut it.link),
        Field::Id => set(&mut it.id),
        Field::Content if it.content.is_empty() => it.content = text,
        Field::Summary if it.summary.is_empty() => it.summary = text,
        Field::Published => set(&mut it.published),
        Field::Updated => set(&mut it.updated),
        _ => {}
    }
}

fn push_text(field: &mut Option<(Field, usize, String)>, s: &str) {
    if let Some((_, _, text)) = field {
        text.push_str(s);
    }
}

fn is_item(local: &str) -> bool {
    local == "item" || local == "entry"
}

/// Item children in the feed vocabularies; `media:title`, `itunes:summary` and the like are not the item's own.
fn known_prefix(e: &BytesStart) -> bool {
    match e.name().prefix() {
        None => true,
        Some(p) => matches!(p.as_ref(), "dc" | "dcterms" | "content" | "atom" | "rss" | "rdf" | "a"),
    }
}

fn attr(e: &BytesStart, name: &str) -> Option<String> {
    e.html_attributes().flatten().find(|a| a.key.as_ref().eq_ignore_ascii_case(name)).map(|a| {
        let raw = a.value.to_string();
        quick_xml::escape::unescape(&raw).map(|c| c.into_owned()).unwrap_or(raw)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_items_up_to_the_first_fatal_error() {
        let doc = "<rss><channel><language>de</language><item><title>One &amp; &eacute;</title><link>http://e.com/1</link>\
            <description><![CDATA[<p>Body</p>]]></description><pubDate>Tue, 10 Jan 2017 10:00:00 GMT</pubDate></item>\
            <item><title>Two</title><link>http://e.com/2</link></wrong><media:title>not this</media:title></item>\
            <item><title>Three</title><link>http://e.com/3</link><description>cut</description><guid a=\"unclosed";
        let r = read(doc, 100);
        assert_eq!(r.items.len(), 3, "{r:?}");
        assert_eq!(r.items[0].title, "One & é");
        assert_eq!(r.items[0].summary, "<p>Body</p>");
        assert_eq!(r.items[0].published.as_deref(), Some("Tue, 10 Jan 2017 10:00:00 GMT"));
        assert_eq!(r.items[1].title, "Two");
        assert_eq!(r.items[2].link.as_deref(), Some("http://e.com/3"));
        assert!(r.error.is_some());
        assert!(!r.is_feed());
        assert_eq!(r.language.as_deref(), Some("de"));
    }

    #[test]
    fn atom_links_and_xhtml_content() {
        let doc = r#"<feed xmlns="http://www.w3.org/2005/Atom"><entry><title type="odd/type">A</title>
            <link rel="self" href="http://e.com/self"/><link href="http://e.com/a?x=1&amp;y=2"/><id>urn:1</id>
            <content type="xhtml"><div><p>One</p><p>Two</p></div></content><updated>2017-01-02T00:00:00Z</updated></entry><entry/></feed>"#;
        let r = read(doc, 100);
        assert!(r.is_feed());
        assert_eq!(r.items.len(), 2);
        assert_eq!(r.items[0].link.as_deref(), Some("http://e.com/a?x=1&y=2"));
        assert_eq!(r.items[0].other_link.as_deref(), Some("http://e.com/self"));
        assert_eq!(r.items[0].content.split_whitespace().collect::<Vec<_>>(), ["One", "Two"]);
        assert_eq!(r.items[0].updated.as_deref(), Some("2017-01-02T00:00:00Z"));
        assert_eq!(read(doc, 1).items.len(), 1, "max_items bounds the read");
    }

    #[test]
    fn deep_nesting_does_not_recurse() {
        let mut doc = String::from("<rss><channel><item><title>deep</title><link>http://e.com/d</link><description>");
        doc.push_str(&"<div>".repeat(200_000));
        doc.push_str("x");
        doc.push_str(&"</div>".repeat(200_000));
        doc.push_str("</description></item></channel></rss>");
        let r = read(&doc, 10);
        assert_eq!(r.items.len(), 1);
        assert_eq!(r.items[0].title, "deep");
    }
}
