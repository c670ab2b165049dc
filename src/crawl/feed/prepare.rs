//! Text fix-ups between decoding and feed-rs: the XML declaration, the root element feed-rs dispatches on, and
//! the cut after `max_items` items that keeps a 100,000-item feed from being built whole in memory.
//!
//! Everything here scans quick-xml events (no tree, no recursion) and edits the text in place.

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use super::decode::pseudo_attr;

/// Namespaces feedparser treats as RSS / Atom that feed-rs does not know; elements in them are "unknown" to
/// feed-rs, so the feed parses with zero items. Rewritten to the ones feed-rs knows.
const NS_ALIASES: &[(&str, &str)] = &[
    ("http://purl.org/atom/ns#", "http://www.w3.org/2005/Atom"),
    ("http://backend.userland.com/rss", "http://purl.org/rss/1.0/"),
    ("http://backend.userland.com/rss2", "http://purl.org/rss/1.0/"),
    ("http://blogs.law.harvard.edu/tech/rss", "http://purl.org/rss/1.0/"),
    ("http://my.netscape.com/rdf/simple/0.9/", "http://purl.org/rss/1.0/"),
    ("http://channel.netscape.com/rdf/simple/0.9/", "http://purl.org/rss/1.0/"),
    ("http://purl.org/rss/1.0/modules/rss091#", "http://purl.org/rss/1.0/"),
];

/// The RSS versions feed-rs dispatches on; any other (or none) is read as 2.0, which is a superset.
const RSS_VERSIONS: &[&str] = &["2.0", "0.91", "0.92"];

pub(super) fn is_json(text: &str) -> bool {
    text.trim_start().starts_with('{')
}

/// Makes the declaration say UTF-8 (the text is UTF-8 now; feed-rs would otherwise decode it a second time with the
/// declared charset). Returns whether it changed.
pub(super) fn declare_utf8(text: &mut String) -> bool {
    let start = text.len() - text.trim_start().len();
    if !text[start..].starts_with("<?xml") {
        return false;
    }
    let Some(end) = text[start..].find("?>").map(|e| start + e) else { return false };
    let Some((value, range)) = pseudo_attr(&text[start..end], "encoding") else { return false };
    if value.eq_ignore_ascii_case("utf-8") {
        return false;
    }
    text.replace_range(start + range.start..start + range.end, "UTF-8");
    true
}

/// Rewrites the root start tag when feed-rs would refuse it (`<rss>` without a version it knows: "no root
/// element") or read it as empty (RSS or Atom 0.3 in a namespace it does not know). Returns what was done.
pub(super) fn fix_root(text: &mut String) -> Vec<&'static str> {
    let mut reader = Reader::from_str(text);
    let mut what = Vec::new();
    let (range, new_tag) = loop {
        let before = reader.buffer_position() as usize;
        match reader.read_event() {
            Ok(Event::Start(e)) | Ok(Event::Empty(e)) => {
                let after = reader.buffer_position() as usize;
                let Some(tag) = rewrite_root(&e, &text[before..after], &mut what) else { return what };
                break (before..after, tag);
            }
            Ok(Event::Eof) | Err(_) => return what,
            Ok(_) => continue,
        }
    };
    text.replace_range(range, &new_tag);
    what
}

fn rewrite_root(e: &BytesStart, raw: &str, what: &mut Vec<&'static str>) -> Option<String> {
    let local = e.local_name().as_ref().to_string();
    let mut attrs: Vec<(String, String)> = Vec::new();
    let mut changed = false;
    let mut version_seen = false;
    for a in e.html_attributes().flatten() {
        let key = a.key.as_ref().to_string();
        let mut value = a.value.to_string();
        if key == "xmlns" || key.starts_with("xmlns:") {
            if let Some((_, to)) = NS_ALIASES.iter().find(|(from, _)| value.trim() == *from) {
                value = to.to_string();
                changed = true;
                what.push("namespace");
            }
        }
        if local == "rss" && key == "version" {
            version_seen = true;
            if !RSS_VERSIONS.contains(&value.trim()) {
                value = "2.0".into();
                changed = true;
                what.push("rss version");
            }
        }
        attrs.push((key, value));
    }
    if local == "rss" && !version_seen {
        attrs.push(("version".into(), "2.0".into()));
        changed = true;
        what.push("rss version");
    }
    if !changed {
        return None;
    }
    let mut tag = format!("<{}", e.name().as_ref());
    for (k, v) in attrs {
        let q = if v.contains('"') { '\'' } else { '"' };
        tag.push_str(&format!(" {k}={q}{v}{q}"));
    }
    tag.push_str(if raw.ends_with("/>") { "/>" } else { ">" });
    Some(tag)
}

/// Cuts an XML feed after its `max` first items (`item` or `entry` elements not inside another one) and closes
/// the elements still open, so the parser never builds the rest. Returns how many items were seen when it cut
/// (None: fewer than `max`, or the structure was too odd to cut safely; the text is then left whole).
pub(super) fn cut_xml_items(text: &mut String, max: usize) -> Option<usize> {
    // Ancestors of items sit near the root; deeper names are not needed to close the document.
    const KEEP: usize = 16;
    let mut reader = Reader::from_str(text);
    let cfg = reader.config_mut();
    cfg.check_end_names = false;
    cfg.allow_unmatched_ends = true;
    cfg.allow_dangling_amp = true;
    let mut open: Vec<String> = Vec::new();
    let mut depth = 0usize;
    let mut item_depth: Option<usize> = None;
    let mut items = 0usize;
    let cut_at = loop {
        let before = reader.buffer_position() as usize;
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                if item_depth.is_none() && is_item(e.local_name().as_ref()) {
                    if items == max {
                        break before;
                    }
                    item_depth = Some(depth);
                }
                if depth < KEEP {
                    open.push(e.name().as_ref().to_string());
                }
                depth += 1;
            }
            Ok(Event::Empty(e)) => {
                if item_depth.is_none() && is_item(e.local_name().as_ref()) {
                    if items == max {
                        break before;
                    }
                    items += 1;
                }
            }
            Ok(Event::End(_)) => {
                depth = depth.saturating_sub(1);
                if depth < KEEP {
                    open.truncate(depth);
                }
                if item_depth == Some(depth) {
                    item_depth = None;
                    items += 1;
                }
            }
            Ok(Event::Eof) | Err(_) => return None,
            Ok(_) => {}
        }
    };
    if depth > KEEP || item_depth.is_some() {
        return None;
    }
    text.truncate(cut_at);
    for name in open.iter().rev() {
        text.push_str("</");
        text.push_str(name);
        text.push('>');
    }
    Some(items)
}

fn is_item(local: &str) -> bool {
    local == "item" || local == "entry"
}

/// The same cut for a JSON Feed: keeps the first `max` elements of the top-level `"items"` array and closes the
/// document (members after the array are dropped; JSON Feed puts nothing there that newsd reads).
pub(super) fn cut_json_items(text: &mut String, max: usize) -> Option<usize> {
    let b = text.as_bytes();
    let mut i = 0;
    let mut depth = 0usize;
    // Opening bracket, in nesting order; only what is above the items array matters when closing.
    let mut stack: Vec<u8> = Vec::new();
    let mut items_depth: Option<usize> = None;
    let mut last_string: Option<(usize, usize)> = None;
    let mut count = 0usize;
    while i < b.len() {
        match b[i] {
            b'"' => {
                let start = i + 1;
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                last_string = Some((start, i.min(b.len())));
            }
            c @ (b'{' | b'[') => {
                if depth == 1 && c == b'[' && items_depth.is_none() {
                    if let Some((s, e)) = last_string {
                        if &text[s..e] == "items" {
                            items_depth = Some(depth + 1);
                        }
                    }
                }
                if items_depth == Some(depth) && count == max {
                    return cut_json_at(text, i, &stack, count);
                }
                stack.push(c);
                depth += 1;
            }
            b'}' | b']' => {
                stack.pop();
                depth = depth.saturating_sub(1);
                if items_depth == Some(depth) {
                    count += 1;
                } else if items_depth == Some(depth + 1) {
                    return None; // the array ended before `max`
                }
            }
            b',' if items_depth == Some(depth) => {
                // A scalar element (not an object) counts too; objects were counted at their '}'.
                if i > 0 && !matches!(b[..i].iter().rev().find(|c| !c.is_ascii_whitespace()), Some(b'}') | Some(b']')) {
                    count += 1;
                    if count == max {
                        return cut_json_at(text, i, &stack, count);
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

fn cut_json_at(text: &mut String, at: usize, stack: &[u8], count: usize) -> Option<usize> {
    let mut cut = text[..at].trim_end().len();
    if text[..cut].ends_with(',') {
        cut = text[..cut - 1].trim_end().len();
    }
    text.truncate(cut);
    for c in stack.iter().rev() {
        text.push(if *c == b'{' { '}' } else { ']' });
    }
    Some(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declaration_is_rewritten_to_utf8() {
        let mut t = "<?xml version=\"1.0\" encoding='ISO-8859-1' ?><rss/>".to_string();
        assert!(declare_utf8(&mut t));
        assert_eq!(t, "<?xml version=\"1.0\" encoding='UTF-8' ?><rss/>");
        assert!(!declare_utf8(&mut t));
        let mut t = "<rss/>".to_string();
        assert!(!declare_utf8(&mut t));
    }

    #[test]
    fn rss_without_version_and_foreign_namespaces() {
        let mut t = "<?xml version=\"1.0\"?>\n<!-- c --><rss xmlns:dc=\"http://purl.org/dc/elements/1.1/\"><channel/></rss>".to_string();
        assert_eq!(fix_root(&mut t), vec!["rss version"]);
        assert!(t.contains("<rss xmlns:dc=\"http://purl.org/dc/elements/1.1/\" version=\"2.0\"><channel/>"), "{t}");
        let mut t = "<rss version=\"0.93\"><channel/></rss>".to_string();
        fix_root(&mut t);
        assert!(t.starts_with("<rss version=\"2.0\">"), "{t}");
        let mut t = "<feed version=\"0.3\" xmlns=\"http://purl.org/atom/ns#\"><entry/></feed>".to_string();
        assert_eq!(fix_root(&mut t), vec!["namespace"]);
        assert!(t.starts_with("<feed version=\"0.3\" xmlns=\"http://www.w3.org/2005/Atom\">"), "{t}");
        let mut t = "<rss version=\"2.0\"><channel/></rss>".to_string();
        assert!(fix_root(&mut t).is_empty());
        assert_eq!(t, "<rss version=\"2.0\"><channel/></rss>");
    }

    #[test]
    fn cuts_after_max_items_and_closes_the_document() {
        let mut t = "<rss version=\"2.0\"><channel><title>t</title><item><title>1</title></item><item/>\n<item><title>3</title></item><item>4</item></channel></rss>".to_string();
        assert_eq!(cut_xml_items(&mut t, 2), Some(2));
        assert_eq!(t, "<rss version=\"2.0\"><channel><title>t</title><item><title>1</title></item><item/>\n</channel></rss>");
        let mut t = "<feed><entry><title>1</title></entry></feed>".to_string();
        assert_eq!(cut_xml_items(&mut t, 5), None);
        assert_eq!(t, "<feed><entry><title>1</title></entry></feed>");
        // RSS 1.0: items are siblings of the channel.
        let mut t = "<rdf:RDF><channel/><item><title>1</title></item><item><title>2</title></item></rdf:RDF>".to_string();
        assert_eq!(cut_xml_items(&mut t, 1), Some(1));
        assert_eq!(t, "<rdf:RDF><channel/><item><title>1</title></item></rdf:RDF>");
    }

    #[test]
    fn cuts_json_feed_items() {
        let mut t = r#"{"version":"https://jsonfeed.org/version/1.1","title":"a [x] {y}","items":[{"id":"1","tags":["a"]}, {"id":"2"} ,{"id":"3"}],"z":1}"#.to_string();
        assert_eq!(cut_json_items(&mut t, 2), Some(2));
        assert_eq!(t, r#"{"version":"https://jsonfeed.org/version/1.1","title":"a [x] {y}","items":[{"id":"1","tags":["a"]}, {"id":"2"}]}"#);
        assert!(serde_json::from_str::<serde_json::Value>(&t).is_ok());
        let mut t = r#"{"items":[{"id":"1"}]}"#.to_string();
        assert_eq!(cut_json_items(&mut t, 2), None);
        let mut t = r#"{"items":[{"id":"1"},{"id":"2"}]}"#.to_string();
        assert_eq!(cut_json_items(&mut t, 0), Some(0));
        assert!(serde_json::from_str::<serde_json::Value>(&t).is_ok(), "{t}");
    }
}
