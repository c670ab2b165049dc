//! Bytes to text: charset detection (headers, BOM, meta) and HTML-to-plain-text.

use encoding_rs::{Encoding, UTF_8};
use scraper::{Html, Node};

/// Decodes an HTML page. Order: BOM, Content-Type charset, `<meta charset>` / `http-equiv` in the first 4 KiB,
/// then UTF-8 (falling back to windows-1252 when the bytes are not UTF-8). Returns the text and the charset used.
pub fn decode_html(bytes: &[u8], content_type: Option<&str>) -> (String, &'static str) {
    let encoding = Encoding::for_bom(bytes)
        .map(|(e, _)| e)
        .or_else(|| content_type.and_then(charset_param).and_then(|l| Encoding::for_label(l.as_bytes())))
        .or_else(|| meta_charset(&bytes[..bytes.len().min(4096)]))
        .unwrap_or_else(|| if std::str::from_utf8(bytes).is_ok() { UTF_8 } else { encoding_rs::WINDOWS_1252 });
    let (text, used, _had_errors) = encoding.decode(bytes);
    (text.into_owned(), used.name())
}

fn charset_param(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case("charset").then(|| v.trim().trim_matches(['"', '\'']).to_string())
    })
}

fn meta_charset(head: &[u8]) -> Option<&'static Encoding> {
    let lower: String = head.iter().map(|b| b.to_ascii_lowercase() as char).collect();
    let mut from = 0;
    while let Some(pos) = lower[from..].find("charset") {
        let at = from + pos + "charset".len();
        let rest = lower[at..].trim_start();
        if let Some(rest) = rest.strip_prefix('=') {
            let rest = rest.trim_start().trim_start_matches(['"', '\'']);
            let label: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').collect();
            if let Some(e) = Encoding::for_label(label.as_bytes()) {
                // A page that declares UTF-16 in a meta tag cannot be UTF-16 (the tag would not be ASCII).
                return Some(if e == encoding_rs::UTF_16LE || e == encoding_rs::UTF_16BE { UTF_8 } else { e });
            }
        }
        from = at;
    }
    None
}

/// Plain text of an HTML fragment: block elements become line breaks, whitespace collapsed, scripts dropped.
pub fn html_to_text(html: &str) -> String {
    if !html.contains('<') && !html.contains('&') {
        return normalize_ws(html);
    }
    let frag = Html::parse_fragment(html);
    let mut out = String::with_capacity(html.len());
    collect_text(frag.root_element(), &mut out);
    normalize_ws(&out)
}

fn collect_text(el: scraper::ElementRef, out: &mut String) {
    for child in el.children() {
        match child.value() {
            Node::Text(t) => out.push_str(t),
            Node::Element(e) => {
                let name = e.name();
                if matches!(name, "script" | "style" | "noscript" | "template" | "iframe" | "svg") {
                    continue;
                }
                let block = is_block(name);
                if block {
                    out.push('\n');
                }
                if name == "br" {
                    out.push('\n');
                }
                if let Some(child_el) = scraper::ElementRef::wrap(child) {
                    collect_text(child_el, out);
                }
                if block {
                    out.push('\n');
                }
            }
            _ => {}
        }
    }
}

pub(crate) fn is_block(name: &str) -> bool {
    matches!(
        name,
        "p" | "div" | "section" | "article" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "li" | "ul" | "ol" | "blockquote"
            | "pre" | "table" | "tr" | "header" | "footer" | "figure" | "figcaption" | "main" | "aside" | "dd" | "dt"
    )
}

/// Collapses runs of spaces inside lines, trims lines, keeps at most one blank line between paragraphs.
pub fn normalize_ws(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut blank = false;
    for line in s.lines() {
        let collapsed = line.split_whitespace().collect::<Vec<_>>().join(" ");
        if collapsed.is_empty() {
            blank = !out.is_empty();
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank { "\n\n" } else { "\n" });
        }
        out.push_str(&collapsed);
        blank = false;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_euc_kr_from_header_and_meta() {
        let (bytes, _, _) = encoding_rs::EUC_KR.encode("<html><head><meta charset=\"euc-kr\"></head><body>서울 경제 뉴스</body></html>");
        let (text, cs) = decode_html(&bytes, Some("text/html; charset=EUC-KR"));
        assert!(text.contains("서울 경제 뉴스"));
        assert_eq!(cs, "EUC-KR");
        let (text, cs) = decode_html(&bytes, Some("text/html"));
        assert!(text.contains("서울 경제 뉴스"), "meta charset is honoured");
        assert_eq!(cs, "EUC-KR");
        let (bytes, _, _) = encoding_rs::EUC_KR.encode("<meta http-equiv=\"Content-Type\" content=\"text/html; charset=ks_c_5601-1987\">한국");
        assert!(decode_html(&bytes, None).0.contains("한국"));
    }

    #[test]
    fn utf8_default_and_latin1_fallback() {
        assert_eq!(decode_html("héllo".as_bytes(), None).1, "UTF-8");
        let (t, cs) = decode_html(b"caf\xe9", None);
        assert_eq!((t.as_str(), cs), ("café", "windows-1252"));
    }

    #[test]
    fn html_to_text_blocks_and_scripts() {
        let t = html_to_text("<p>One <b>two</b></p><script>x()</script><p>Three&nbsp;four</p>line<br>break");
        assert_eq!(t, "One two\n\nThree four\nline\nbreak");
    }
}
