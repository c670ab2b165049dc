//! Bytes to text: charset detection (BOM, headers, meta, then statistical detection) and HTML-to-plain-text, with
//! one iterative DOM walker and a nesting bound that keeps hostile documents from costing more than linear time.

use std::borrow::Cow;
use std::collections::HashMap;

use encoding_rs::{Encoding, UTF_8};
use scraper::{ElementRef, Html, Node};

/// Decodes an HTML page with the encoding [`detect_encoding`] picks (the Content-Type's charset parameter as the
/// header charset). Returns the text and the charset used.
pub fn decode_html(bytes: &[u8], content_type: Option<&str>) -> (String, &'static str) {
    let header = content_type.and_then(charset_param);
    let encoding = detect_encoding(bytes, header.as_deref());
    let (text, used, _had_errors) = encoding.decode(bytes);
    (text.into_owned(), used.name())
}

/// The encoding of a document, in this order: a byte-order mark; `header_charset` (a charset label, e.g. the
/// `charset=` parameter of an HTTP Content-Type, when it names a known encoding); an XML declaration's
/// `encoding=` or a `<meta charset>` / `http-equiv` within the first 4 KiB; UTF-8 when the bytes are valid UTF-8
/// (non-ASCII UTF-8 with a sequence cut short at the very end, as a bounded read leaves it, still counts); otherwise a statistical
/// guess by `chardetng` (the detector Firefox uses), so undeclared EUC-KR, GBK or Shift_JIS pages are not read as
/// windows-1252. Declarations of UTF-16 in ASCII-compatible bytes (a meta tag or XML declaration) mean UTF-8.
pub fn detect_encoding(bytes: &[u8], header_charset: Option<&str>) -> &'static Encoding {
    if let Some((e, _)) = Encoding::for_bom(bytes) {
        return e;
    }
    if let Some(e) = header_charset.and_then(|l| Encoding::for_label(l.trim().trim_matches(['"', '\'']).as_bytes())) {
        return e;
    }
    let head = &bytes[..bytes.len().min(4096)];
    if let Some(e) = xml_declared(head).or_else(|| meta_charset(head)) {
        return e;
    }
    match std::str::from_utf8(bytes) {
        Ok(_) => UTF_8,
        // Only an incomplete sequence at the very end, after UTF-8 text that is not all ASCII: UTF-8 cut short.
        Err(e) if e.error_len().is_none() && !bytes[..e.valid_up_to()].is_ascii() => UTF_8,
        Err(_) => guess_encoding(bytes),
    }
}

/// chardetng over (a prefix of) the bytes. Enough text decides; the cap keeps huge pages cheap.
fn guess_encoding(bytes: &[u8]) -> &'static Encoding {
    const SAMPLE: usize = 256 * 1024;
    // ISO-2022-JP is 7-bit, so it never gets here (it passes as UTF-8); denied as browsers do.
    let mut detector = chardetng::EncodingDetector::new(chardetng::Iso2022JpDetection::Deny);
    let sample = &bytes[..bytes.len().min(SAMPLE)];
    // Not the end of the stream when the sample is a prefix (chardetng's documented way to detect on a prefix).
    detector.feed(sample, sample.len() == bytes.len());
    detector.guess(None, chardetng::Utf8Detection::Allow)
}

fn charset_param(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case("charset").then(|| v.trim().trim_matches(['"', '\'']).to_string())
    })
}

/// A UTF-16 label found in ASCII-compatible bytes cannot be right (the declaration itself would not be ASCII).
fn ascii_compatible(e: &'static Encoding) -> &'static Encoding {
    if e == encoding_rs::UTF_16LE || e == encoding_rs::UTF_16BE {
        UTF_8
    } else {
        e
    }
}

/// `<?xml version="1.0" encoding="iso-8859-1"?>` at the start of the document (XHTML pages, feeds).
fn xml_declared(head: &[u8]) -> Option<&'static Encoding> {
    let start = head.iter().position(|b| !b.is_ascii_whitespace())?;
    let rest = head[start..].strip_prefix(b"<?xml")?;
    let decl = &rest[..rest.iter().position(|&b| b == b'>')?];
    let at = decl.windows(8).position(|w| w.eq_ignore_ascii_case(b"encoding"))? + 8;
    let value = decl[at..].trim_ascii_start().strip_prefix(b"=")?.trim_ascii_start();
    let (&quote, value) = value.split_first()?;
    if quote != b'"' && quote != b'\'' {
        return None;
    }
    let label = &value[..value.iter().position(|&b| b == quote)?];
    Encoding::for_label(label).map(ascii_compatible)
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
                return Some(ascii_compatible(e));
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
    let frag = Html::parse_fragment(&limit_nesting(html, MAX_NESTING));
    normalize_ws(&block_text(frag.root_element(), |_| false))
}

/// Elements whose content is never readable text.
pub(crate) fn is_hidden(name: &str) -> bool {
    matches!(name, "script" | "style" | "noscript" | "template" | "iframe" | "svg")
}

/// The one DOM-to-text walker. The text under `root` (not `root`'s own tag), with a line break around each block
/// element and at each `<br>`, leaving out hidden elements and every subtree for which `skip` is true. Not
/// normalised (callers run [`normalize_ws`]). Iterative, with an explicit stack: a document nested 100,000 deep
/// must not overflow the thread's stack.
pub(crate) fn block_text(root: ElementRef, mut skip: impl FnMut(ElementRef) -> bool) -> String {
    enum Step<'a> {
        Visit(ego_tree::NodeRef<'a, Node>),
        CloseBlock,
    }
    let mut out = String::new();
    // Children are pushed in reverse so that they pop in document order.
    let mut stack: Vec<Step> = root.children().rev().map(Step::Visit).collect();
    while let Some(step) = stack.pop() {
        let node = match step {
            Step::Visit(node) => node,
            Step::CloseBlock => {
                out.push('\n');
                continue;
            }
        };
        match node.value() {
            Node::Text(t) => out.push_str(t),
            Node::Element(e) => {
                let name = e.name();
                if is_hidden(name) || ElementRef::wrap(node).is_some_and(&mut skip) {
                    continue;
                }
                if name == "br" {
                    out.push('\n');
                } else if is_block(name) {
                    out.push('\n');
                    stack.push(Step::CloseBlock);
                }
                stack.extend(node.children().rev().map(Step::Visit));
            }
            _ => {}
        }
    }
    out
}

pub(crate) fn is_block(name: &str) -> bool {
    matches!(
        name,
        "p" | "div" | "section" | "article" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "li" | "ul" | "ol" | "blockquote"
            | "pre" | "table" | "tr" | "header" | "footer" | "figure" | "figcaption" | "main" | "aside" | "dd" | "dt"
    )
}

/// How deep elements may nest before [`limit_nesting`] drops tags. Real pages stay far below (tens of levels);
/// html5ever's tree builder scans its stack of open elements per tag, so parse cost grows with depth times tags.
pub(crate) const MAX_NESTING: usize = 256;

/// How many unclosed formatting elements [`limit_nesting`] lets through. The parser re-creates every one of them
/// (attributes differing, so its "Noah's Ark" cap of 3 does not apply) inside each later paragraph, so this
/// multiplies the node count of a sloppy page; text loses only bold, italics and links beyond it.
const MAX_OPEN_FORMATTING: usize = 32;

/// A linear pre-pass that bounds how deep html5ever will nest elements: past `max_depth` open elements, start tags
/// (and their end tags) are dropped, their text kept (a dropped block tag leaves a line break, so words do not run
/// together). Elements that cannot hold themselves (void elements, `p`, `li`, `td` and the like, which the parser
/// closes on the next one) are not counted; formatting elements (`b`, `a`, `font`...) are counted on their own,
/// since the parser re-opens unclosed ones inside every later block. Comments, doctypes and raw-text elements
/// (`script`, `style`, `textarea`, `title`...) are passed through whole, as the HTML tokenizer reads them. A
/// document with fewer tags than `max_depth` is returned as it is.
pub(crate) fn limit_nesting(html: &str, max_depth: usize) -> Cow<'_, str> {
    let b = html.as_bytes();
    if b.iter().filter(|&&c| c == b'<').count() <= max_depth {
        return Cow::Borrowed(html);
    }
    let mut out = String::new();
    let mut copied = 0; // html[..copied] is already in `out` (only used once something was dropped)
    let mut dropped_any = false;
    let mut stack: Vec<&str> = Vec::new(); // open counted elements, as written (compared case-insensitively)
    let mut foreign = 0usize; // open <svg>/<math> among them: their content is never raw text and `/>` closes
    let mut formatting = 0usize;
    let mut dropped: HashMap<String, usize> = HashMap::new(); // dropped start tags whose end tags are still to come
    let mut i = 0;
    while let Some(off) = memchr_lt(&b[i..]) {
        let lt = i + off;
        let Some(tag) = scan_tag(b, lt) else {
            // "<" that opens nothing ("a < b"): text.
            i = lt + 1;
            continue;
        };
        i = tag.end;
        let Some(name_range) = tag.name.clone() else { continue }; // comment, doctype, bogus comment
        let name = &html[name_range];
        let lname = name.to_ascii_lowercase();
        let mut drop = false;
        if tag.closing {
            if let Some(n) = dropped.get_mut(&lname).filter(|n| **n > 0) {
                *n -= 1;
                drop = true;
            } else if is_formatting(&lname) {
                formatting = formatting.saturating_sub(1);
            } else if let Some(pos) = stack.iter().rposition(|s| s.eq_ignore_ascii_case(name)) {
                foreign -= stack[pos..].iter().filter(|s| is_foreign(s)).count();
                stack.truncate(pos);
            }
        } else if is_void(&lname) || is_self_replacing(&lname) || matches!(lname.as_str(), "html" | "head" | "body") {
            // never nests
        } else if tag.self_closing && foreign > 0 {
            // <path/> in SVG: opens and closes
        } else if foreign == 0 && is_raw_text(&lname) {
            // The tokenizer reads everything up to the matching end tag as text: so do we.
            i = raw_text_end(b, i, &lname);
        } else if is_formatting(&lname) {
            if formatting >= max_depth.min(MAX_OPEN_FORMATTING) {
                drop = true;
            } else {
                formatting += 1;
            }
        } else if stack.len() >= max_depth {
            drop = true;
        } else {
            if is_foreign(name) {
                foreign += 1;
            }
            stack.push(name);
        }
        if drop {
            if !tag.closing {
                *dropped.entry(lname.clone()).or_default() += 1;
            }
            out.push_str(&html[copied..lt]);
            if is_block(&lname) {
                out.push('\n');
            }
            copied = tag.end;
            dropped_any = true;
        }
    }
    if !dropped_any {
        return Cow::Borrowed(html);
    }
    out.push_str(&html[copied..]);
    Cow::Owned(out)
}

fn memchr_lt(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'<')
}

struct Tag {
    /// Byte range of the tag name; None for comments, doctypes and other markup that opens no element.
    name: Option<std::ops::Range<usize>>,
    closing: bool,
    self_closing: bool,
    /// Just past the tag's `>` (or the end of the input when it is unterminated).
    end: usize,
}

/// The markup starting at `b[lt] == '<'`, per the HTML tokenizer's rules (simplified where it cannot change what
/// nests); None when the `<` is plain text.
fn scan_tag(b: &[u8], lt: usize) -> Option<Tag> {
    let find = |from: usize, pat: &[u8]| b[from.min(b.len())..].windows(pat.len()).position(|w| w == pat).map(|p| from + p);
    let gt_after = |from: usize| b[from.min(b.len())..].iter().position(|&c| c == b'>').map_or(b.len(), |p| from + p + 1);
    let markup = |end| Some(Tag { name: None, closing: false, self_closing: false, end });
    let next = *b.get(lt + 1)?;
    if b[lt + 1..].starts_with(b"!--") {
        // Searching from the "--" of "<!--" makes "<!-->" and "<!--->" end at once, as the tokenizer has them.
        let from = lt + 2;
        let end = match (find(from, b"-->"), find(from, b"--!>")) {
            (Some(a), Some(c)) if c < a => c + 4,
            (Some(a), _) => a + 3,
            (None, Some(c)) => c + 4,
            (None, None) => b.len(),
        };
        return markup(end);
    }
    if next == b'!' || next == b'?' {
        return markup(gt_after(lt + 2));
    }
    let closing = next == b'/';
    let name_start = if closing { lt + 2 } else { lt + 1 };
    match b.get(name_start) {
        Some(c) if c.is_ascii_alphabetic() => {}
        // "</>" is dropped, "</ x>" is a bogus comment; "<" followed by anything else is text.
        Some(_) if closing => return markup(gt_after(name_start)),
        None if closing => return markup(b.len()),
        _ => return None,
    }
    let name_end = b[name_start..]
        .iter()
        .position(|&c| c.is_ascii_whitespace() || c == b'/' || c == b'>')
        .map_or(b.len(), |p| name_start + p);
    // Attributes: a quoted value may hold '>'; a '/' right before '>' (outside a value) self-closes.
    let mut j = name_end;
    let mut self_closing = false;
    loop {
        let Some(&c) = b.get(j) else { return Some(Tag { name: Some(name_start..name_end), closing, self_closing, end: b.len() }) };
        match c {
            b'>' => break,
            b'/' => {
                self_closing = b.get(j + 1) == Some(&b'>');
                j += 1;
            }
            c if c.is_ascii_whitespace() => j += 1,
            _ => {
                self_closing = false;
                // Attribute name (a leading '=' belongs to it), then an optional value.
                j += 1;
                while j < b.len() && !b[j].is_ascii_whitespace() && !matches!(b[j], b'/' | b'>' | b'=') {
                    j += 1;
                }
                while j < b.len() && b[j].is_ascii_whitespace() {
                    j += 1;
                }
                if b.get(j) == Some(&b'=') {
                    j += 1;
                    while j < b.len() && b[j].is_ascii_whitespace() {
                        j += 1;
                    }
                    match b.get(j) {
                        Some(&q @ (b'"' | b'\'')) => {
                            j = b[j + 1..].iter().position(|&c| c == q).map_or(b.len(), |p| j + 1 + p + 1);
                        }
                        _ => {
                            while j < b.len() && !b[j].is_ascii_whitespace() && b[j] != b'>' {
                                j += 1;
                            }
                        }
                    }
                }
            }
        }
    }
    Some(Tag { name: Some(name_start..name_end), closing, self_closing, end: j + 1 })
}

/// Where the content of a raw-text element opened just before `from` ends: at the start of its end tag, or the end
/// of the input (`plaintext` never ends).
fn raw_text_end(b: &[u8], from: usize, lname: &str) -> usize {
    if lname == "plaintext" {
        return b.len();
    }
    let mut j = from;
    while let Some(p) = b[j..].windows(2).position(|w| w == b"</") {
        let at = j + p;
        let name = &b[at + 2..];
        if name.len() >= lname.len()
            && name[..lname.len()].eq_ignore_ascii_case(lname.as_bytes())
            && name.get(lname.len()).is_none_or(|&c| c.is_ascii_whitespace() || c == b'/' || c == b'>')
        {
            return at;
        }
        j = at + 2;
    }
    b.len()
}

fn is_void(n: &str) -> bool {
    matches!(
        n,
        "area" | "base" | "br" | "col" | "embed" | "hr" | "img" | "image" | "input" | "link" | "meta" | "param"
            | "source" | "track" | "wbr" | "keygen" | "basefont" | "bgsound" | "frame"
    )
}

/// Elements the parser closes when another of their kind (or a sibling kind) starts: they do not nest by themselves.
fn is_self_replacing(n: &str) -> bool {
    matches!(n, "p" | "li" | "dt" | "dd" | "td" | "th" | "tr" | "tbody" | "thead" | "tfoot" | "option" | "optgroup")
}

/// The HTML parser's formatting elements (re-opened by "reconstruct the active formatting elements").
fn is_formatting(n: &str) -> bool {
    matches!(n, "a" | "b" | "big" | "code" | "em" | "font" | "i" | "nobr" | "s" | "small" | "strike" | "strong" | "tt" | "u")
}

fn is_raw_text(n: &str) -> bool {
    matches!(n, "script" | "style" | "xmp" | "iframe" | "noembed" | "noframes" | "noscript" | "textarea" | "title" | "plaintext")
}

fn is_foreign(n: &str) -> bool {
    n.eq_ignore_ascii_case("svg") || n.eq_ignore_ascii_case("math")
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

/// All whitespace, line breaks included, collapsed to single spaces: one line of text (for leads, comparisons).
/// Unlike [`normalize_ws`], which keeps the line and paragraph structure.
pub fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
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

    /// A page as a server without any charset declaration sends it.
    fn undeclared(encoding: &'static Encoding, title: &str, text: &str) -> Vec<u8> {
        let html = format!("<!DOCTYPE html><html><head><title>{title}</title></head><body><article><h1>{title}</h1><p>{text}</p></article></body></html>");
        let (bytes, _, unmappable) = encoding.encode(&html);
        assert!(!unmappable, "test text fits {}", encoding.name());
        bytes.into_owned()
    }

    #[test]
    fn undeclared_legacy_encodings_are_detected() {
        let cases: [(&Encoding, &str, &str); 5] = [
            (
                encoding_rs::EUC_KR,
                "코스피, 외국인 매수에 이틀째 상승",
                "코스피가 외국인 투자자들의 순매수에 힘입어 이틀째 상승하며 2,100선을 회복했다. 반도체와 자동차 업종이 강세를 보였고, 원달러 환율은 하락했다. 시장에서는 한국은행이 다음 달 기준금리를 동결할 것이라는 전망이 우세하다.",
            ),
            (
                encoding_rs::GBK,
                "央行宣布下调存款准备金率",
                "中国人民银行周五宣布，将于下月起下调金融机构存款准备金率零点五个百分点，释放长期资金约一万亿元。分析人士认为，此举旨在支持实体经济发展，稳定市场预期，股市在消息公布后小幅上涨。",
            ),
            (
                encoding_rs::SHIFT_JIS,
                "日経平均株価、三日続伸",
                "東京株式市場で日経平均株価は三日続伸し、終値は前日比二百円高となった。円安を背景に輸出関連株が買われたほか、半導体関連の銘柄にも買いが広がった。市場関係者は、日銀の金融政策決定会合を前に様子見姿勢も強いと話している。",
            ),
            (
                encoding_rs::WINDOWS_1252,
                "La Bourse de Paris termine en hausse",
                "La Bourse de Paris a terminé la séance en nette hausse vendredi, portée par les valeurs bancaires et l'énergie. Les investisseurs ont salué les propos du président de la Banque centrale européenne, qui a laissé entendre que les taux resteraient inchangés jusqu'à la fin de l'année. Le CAC 40 a gagné 1,2 % à 5 432 points.",
            ),
            (
                encoding_rs::WINDOWS_1252,
                "Dax schließt mit deutlichem Plus",
                "Der deutsche Aktienmarkt hat am Freitag kräftig zugelegt. Der Leitindex Dax schloss 1,5 Prozent höher bei 12.850 Punkten, nachdem die Europäische Zentralbank signalisiert hatte, die Zinsen vorerst nicht zu erhöhen. Besonders gefragt waren Aktien von Autoherstellern und Banken; die Rendite zehnjähriger Bundesanleihen fiel leicht.",
            ),
        ];
        for (encoding, title, text) in cases {
            let bytes = undeclared(encoding, title, text);
            assert!(std::str::from_utf8(&bytes).is_err(), "{} bytes are not UTF-8", encoding.name());
            assert_eq!(detect_encoding(&bytes, None), encoding, "{title}");
            let (html, cs) = decode_html(&bytes, Some("text/html"));
            assert_eq!(cs, encoding.name());
            assert!(html.contains(text), "{cs}: {html}");
            // The whole path, through extraction.
            let e = crate::crawl::extract::extract(&bytes, Some("text/html"), "http://example.test/a", None).unwrap();
            assert_eq!((e.title.as_str(), e.body.as_str(), e.charset), (title, text, encoding.name()));
        }
    }

    #[test]
    fn encoding_declarations_and_their_order() {
        let (sjis, _, _) = encoding_rs::SHIFT_JIS.encode("<?xml version=\"1.0\" encoding=\"Shift_JIS\"?><p>株式市場</p>");
        assert_eq!(detect_encoding(&sjis, None), encoding_rs::SHIFT_JIS, "XML declaration");
        assert_eq!(detect_encoding(&sjis, Some("\"EUC-JP\"")), encoding_rs::EUC_JP, "a header charset wins");
        assert_eq!(detect_encoding(&sjis, Some("no-such-charset")), encoding_rs::SHIFT_JIS, "an unknown label is ignored");
        assert_eq!(detect_encoding(b"<?xml version='1.0' encoding='UTF-16'?><a/>", None), UTF_8);
        assert_eq!(detect_encoding(b"\xef\xbb\xbf<meta charset=gbk>x", Some("gbk")), UTF_8, "BOM first");
        // UTF-8 cut short in the middle of a character (a bounded read) is still UTF-8.
        let cut = "Börsenbericht für März".as_bytes();
        assert_eq!(detect_encoding(&cut[..cut.len() - 3], None), UTF_8);
        assert_eq!(charset_param("text/html; Charset=\"Shift_JIS\""), Some("Shift_JIS".into()));
    }

    #[test]
    fn html_to_text_blocks_and_scripts() {
        let t = html_to_text("<p>One <b>two</b></p><script>x()</script><p>Three&nbsp;four</p>line<br>break");
        assert_eq!(t, "One two\n\nThree four\nline\nbreak");
    }

    #[test]
    fn squash_is_one_line() {
        assert_eq!(squash("  One\n\n two\tthree \n"), "One two three");
        assert_eq!(normalize_ws("  One\n\n two\tthree \n"), "One\n\ntwo three");
    }

    #[test]
    fn nesting_limit_keeps_shallow_documents_and_text() {
        let page = "<html><body><div><p>One</p><!-- <div> --><script>if (a<b) document.write('<div>')</script></div></body></html>";
        assert!(matches!(limit_nesting(page, 3), Cow::Borrowed(_)), "nothing deeper than the limit");
        // Depth 3 kept, deeper tags dropped with their end tags, the text kept; void and p-like tags not counted.
        let deep = "<div><section><div><div><span>a</span><br><p>b<p>c</div>d</div></section>e</div><div>f</div>";
        let limited = limit_nesting(deep, 3);
        assert_eq!(limited, "<div><section><div>\n<span>a</span><br><p>b<p>c\nd</div></section>e</div><div>f</div>".replace("<span>a</span>", "a"));
        assert_eq!(squash(&html_to_text(&limited)), squash(&html_to_text(deep)));
    }

    #[test]
    fn nesting_limit_reads_markup_as_the_tokenizer_does() {
        let n = 50;
        let nested = |open: &str| format!("{}x{}", open.repeat(n), "</div>".repeat(n));
        // Markup hidden from the tokenizer does not count...
        for hidden in ["<!-- ", "<script>", "<textarea>", "<title>", "<div title=\"a>"] {
            let doc = format!("{hidden}{}", "<div>".repeat(n));
            assert!(matches!(limit_nesting(&doc, 10), Cow::Borrowed(_)), "{hidden}");
        }
        // ...and what only looks like a comment or a raw-text element does.
        for shown in ["<!-->", "<!--->", "<svg><title>", "<div title=a>"] {
            let doc = format!("{shown}{}", nested("<div>"));
            assert!(matches!(limit_nesting(&doc, 10), Cow::Owned(_)), "{shown}");
        }
        // Unclosed formatting elements are re-opened by the parser in every later block: bounded separately.
        let doc = "<p><b>x</p>".repeat(n);
        let limited = limit_nesting(&doc, 10);
        assert_eq!(limited.matches("<b>").count(), 10);
        assert_eq!(html_to_text(&doc).matches('x').count(), n);
    }

    /// CPU time of the calling thread, in seconds (for the numbers printed with --nocapture).
    fn thread_cpu() -> f64 {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime writes one timespec through a valid pointer.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
    }

    /// Escaped HTML in a feed item, decoded: `<div>`s nested `depth` deep, a word at every level.
    fn deep_fragment(depth: usize) -> (String, String) {
        let mut html = String::new();
        let mut words = Vec::new();
        for i in 0..depth {
            let open = ["<div>", "<span>", "<b>", "<section>", "<em>"][i % 5];
            html.push_str(open);
            html.push_str(&format!("w{i} "));
            words.push(format!("w{i}"));
        }
        for i in (0..depth).rev() {
            html.push_str(["</div>", "</span>", "</b>", "</section>", "</em>"][i % 5]);
        }
        (html, words.join(" "))
    }

    /// No crash and the right text at 20k, 50k and 100k levels (these overflowed the stack and parsed in
    /// superlinear time before). Run with --nocapture for the CPU time of each.
    #[test]
    fn deeply_nested_documents_are_read_in_linear_time() {
        for depth in [20_000, 50_000, 100_000] {
            let (html, words) = deep_fragment(depth);
            let t0 = thread_cpu();
            let text = html_to_text(&html);
            let fragment_s = thread_cpu() - t0;
            assert_eq!(squash(&text), words, "fragment nested {depth} deep");

            // A page nested as deep without any <p>: the body fallback walks it.
            let page = format!(
                "<html><head><title>Deep</title></head><body>{}The central bank held rates steady on Tuesday, and the benchmark index rose two percent.{}</body></html>",
                "<div>".repeat(depth),
                "</div>".repeat(depth)
            );
            let t0 = thread_cpu();
            let e = crate::crawl::extract::extract(page.as_bytes(), None, "http://example.test/deep", None).unwrap();
            let page_s = thread_cpu() - t0;
            assert_eq!(e.body, "The central bank held rates steady on Tuesday, and the benchmark index rose two percent.");
            eprintln!("depth {depth}: html_to_text {fragment_s:.3} s CPU, extract {page_s:.3} s CPU");
        }
    }

    /// Other shapes that make html5ever nest or rescan: unclosed elements the parser re-opens or does not close.
    /// Each must come back with all its text (no crash); --nocapture prints the CPU time of each.
    #[test]
    fn hostile_shapes_are_read_whole() {
        let n = 50_000;
        let shapes: [(&str, fn(usize) -> String); 10] = [
            ("unclosed p", |i| format!("<p>w{i} ")),
            ("unclosed li", |i| format!("<li>w{i} ")),
            ("unclosed a", |i| format!("<a href=\"/{i}\">w{i} ")),
            ("b with distinct attributes, closed by p", |i| format!("<p><b id=\"b{i}\">w{i} </p>")),
            ("unclosed font in divs", |i| format!("<div><font size=\"{}\">w{i} </div>", i % 7)),
            ("nested tables", |i| format!("<table><tr><td>w{i} ")),
            ("headings with spans", |i| format!("<h2><span>w{i} ")),
            ("ruby", |i| format!("<rt>w{i} ")),
            ("options and b", |i| format!("<option><b>w{i} ")),
            ("self-closed divs", |i| format!("<div/>w{i} ")),
        ];
        for (name, shape) in shapes {
            let html: String = (0..n).map(shape).collect();
            let words: Vec<String> = (0..n).map(|i| format!("w{i}")).collect();
            let t0 = thread_cpu();
            let text = html_to_text(&html);
            let s = thread_cpu() - t0;
            assert_eq!(squash(&text), words.join(" "), "{name}");
            eprintln!("{name} x{n}: {s:.3} s CPU");
        }
        // SVG's self-closing elements do not count, its open ones do (its text is not read: svg is hidden).
        let svg = format!("<svg>{}{}</svg>after", "<path d=\"M0 0\"/>".repeat(n), "<g>".repeat(n));
        assert_eq!(html_to_text(&svg), "after");
    }
}
