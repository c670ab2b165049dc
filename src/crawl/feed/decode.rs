//! Feed bytes to UTF-8 text, before any XML parser sees them.
//!
//! quick-xml (under feed-rs) panics on UTF-16 input and rejects a document over one bad byte, and a lossy UTF-8
//! read of a Latin-1 feed turns every accent into U+FFFD. So the charset is settled here, in the order XML and HTTP
//! define it: byte order mark, then the zero-byte pattern of `<` in UTF-16/32, then the HTTP `charset` (RFC 7303
//! lets it override the document), then the XML declaration, then UTF-8 when the bytes are valid, then `chardetng`.

use encoding_rs::{Encoding, UTF_16BE, UTF_16LE, UTF_8, WINDOWS_1252};

#[derive(Debug)]
pub(super) struct Decoded {
    pub text: String,
    /// Name of the charset the text was decoded from ("UTF-8", "UTF-16BE", "windows-1252", ...).
    pub charset: &'static str,
    /// What was not clean: a lying declaration, invalid bytes. Empty for a clean read.
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wide {
    Utf16(&'static Encoding),
    Utf32Be,
    Utf32Le,
}

pub(super) fn decode(bytes: &[u8], content_type: Option<&str>) -> Decoded {
    let mut notes = Vec::new();
    // UTF-32 marks first: FF FE 00 00 also starts like the UTF-16LE mark.
    let (wide, body) = if let Some(rest) = bytes.strip_prefix(&[0, 0, 0xFE, 0xFF]) {
        (Some(Wide::Utf32Be), rest)
    } else if let Some(rest) = bytes.strip_prefix(&[0xFF, 0xFE, 0, 0]) {
        (Some(Wide::Utf32Le), rest)
    } else if let Some((enc, len)) = Encoding::for_bom(bytes) {
        if enc == UTF_8 {
            return from_utf8_label(&bytes[len..], "UTF-8 (byte order mark)", notes);
        }
        (Some(Wide::Utf16(enc)), &bytes[len..])
    } else {
        (sniff_wide(bytes), bytes)
    };
    if let Some(w) = wide {
        return match w {
            Wide::Utf16(enc) => {
                let (text, had_errors) = enc.decode_without_bom_handling(body);
                if had_errors {
                    notes.push(format!("invalid {} sequences replaced", enc.name()));
                }
                Decoded { text: strip_bom(text.into_owned()), charset: enc.name(), notes }
            }
            Wide::Utf32Be | Wide::Utf32Le => {
                let (text, bad) = decode_utf32(body, w == Wide::Utf32Be);
                if bad > 0 {
                    notes.push(format!("{bad} invalid UTF-32 code units replaced"));
                }
                Decoded { text: strip_bom(text), charset: if w == Wide::Utf32Be { "UTF-32BE" } else { "UTF-32LE" }, notes }
            }
        };
    }
    // ASCII-compatible from here on: a UTF-16/32 label in the header or declaration is a lie (no zero bytes).
    let header = content_type.and_then(charset_param);
    let declared = xml_declared_encoding(bytes);
    for (label, source) in [(header.as_deref(), "HTTP charset"), (declared.as_deref(), "XML declaration")] {
        let Some(label) = label else { continue };
        match Encoding::for_label(label.trim().as_bytes()) {
            Some(e) if e == UTF_16LE || e == UTF_16BE => notes.push(format!("{source} says {label} but the bytes are not UTF-16")),
            Some(e) if e == UTF_8 => return from_utf8_label(bytes, source, notes),
            Some(e) => {
                let (text, had_errors) = e.decode_without_bom_handling(bytes);
                if had_errors {
                    notes.push(format!("bytes invalid in {} ({source}) replaced", e.name()));
                }
                return Decoded { text: strip_bom(text.into_owned()), charset: e.name(), notes };
            }
            None if is_ucs4_label(label) => notes.push(format!("{source} says {label} but the bytes are not UTF-32")),
            None => notes.push(format!("unknown charset {label:?} in the {source}")),
        }
    }
    from_utf8_label(bytes, "default", notes)
}

/// Bytes that should be UTF-8 (declared, or nothing declared). Valid: zero-copy check, one copy. Not valid: when
/// the rest is mostly real UTF-8 (more multi-byte characters than stray bytes), the stray bytes are read as windows-1252 (a CMS pasting
/// cp1252 into a UTF-8 template); with no UTF-8 at all, the bytes are in a legacy charset and `chardetng` picks it.
fn from_utf8_label(bytes: &[u8], source: &str, mut notes: Vec<String>) -> Decoded {
    if let Ok(s) = std::str::from_utf8(bytes) {
        return Decoded { text: strip_bom(s.to_string()), charset: "UTF-8", notes };
    }
    // Legacy double-byte text contains accidental UTF-8 sequences, so "mostly UTF-8" needs more real characters
    // than stray bytes.
    let (mut valid_chars, mut invalid) = (0usize, 0usize);
    for chunk in bytes.utf8_chunks() {
        valid_chars += chunk.valid().chars().filter(|c| !c.is_ascii()).count();
        invalid += chunk.invalid().len();
    }
    let valid_multibyte = valid_chars >= invalid;
    if valid_multibyte {
        let mut text = String::with_capacity(bytes.len() + invalid * 2);
        for chunk in bytes.utf8_chunks() {
            text.push_str(chunk.valid());
            if !chunk.invalid().is_empty() {
                text.push_str(&WINDOWS_1252.decode_without_bom_handling(chunk.invalid()).0);
            }
        }
        notes.push(format!("{invalid} bytes invalid in UTF-8 read as windows-1252"));
        return Decoded { text: strip_bom(text), charset: "UTF-8", notes };
    }
    let mut detector = chardetng::EncodingDetector::new(chardetng::Iso2022JpDetection::Deny);
    detector.feed(bytes, true);
    let guess = detector.guess(None, chardetng::Utf8Detection::Deny);
    let (text, _, _) = guess.decode(bytes);
    if source != "default" {
        notes.push(format!("{source} says UTF-8 but the bytes are {}", guess.name()));
    } else {
        notes.push(format!("no charset declared; detected {}", guess.name()));
    }
    Decoded { text: strip_bom(text.into_owned()), charset: guess.name(), notes }
}

/// UTF-16/32 without a byte order mark: XML starts with `<` (or whitespace), JSON with `{`, so the first code unit
/// is ASCII and the zero bytes around it give the width and byte order away.
fn sniff_wide(b: &[u8]) -> Option<Wide> {
    let [a, b2, c, d] = *b.get(..4)? else { return None };
    match (a, b2, c, d) {
        (0, 0, 0, x) if x != 0 && x.is_ascii() => Some(Wide::Utf32Be),
        (x, 0, 0, 0) if x != 0 && x.is_ascii() => Some(Wide::Utf32Le),
        (0, x, 0, y) if x != 0 && y != 0 && x.is_ascii() => Some(Wide::Utf16(UTF_16BE)),
        (x, 0, y, 0) if x != 0 && y != 0 && x.is_ascii() => Some(Wide::Utf16(UTF_16LE)),
        _ => None,
    }
}

fn decode_utf32(b: &[u8], big_endian: bool) -> (String, usize) {
    let mut out = String::with_capacity(b.len() / 4);
    let mut bad = 0;
    for unit in b.chunks(4) {
        let c = <[u8; 4]>::try_from(unit)
            .ok()
            .map(|u| if big_endian { u32::from_be_bytes(u) } else { u32::from_le_bytes(u) })
            .and_then(char::from_u32);
        match c {
            Some(c) => out.push(c),
            None => {
                bad += 1;
                out.push('\u{FFFD}');
            }
        }
    }
    (out, bad)
}

fn is_ucs4_label(label: &str) -> bool {
    let l = label.trim().to_ascii_lowercase();
    l.starts_with("utf-32") || l.starts_with("ucs-4") || l == "iso-10646-ucs-4" || l == "csucs4"
}

fn strip_bom(mut s: String) -> String {
    if s.starts_with('\u{FEFF}') {
        s.drain(..'\u{FEFF}'.len_utf8());
    }
    s
}

/// The `charset` parameter of a Content-Type header.
pub(super) fn charset_param(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case("charset").then(|| v.trim().trim_matches(['"', '\'']).to_string()).filter(|v| !v.is_empty())
    })
}

/// The `encoding` pseudo-attribute of an XML declaration at the very start of an ASCII-compatible document.
fn xml_declared_encoding(bytes: &[u8]) -> Option<String> {
    let head = &bytes[..bytes.len().min(1024)];
    let start = head.iter().position(|b| !b.is_ascii_whitespace())?;
    let head = head[start..].strip_prefix(b"<?xml")?;
    let end = head.windows(2).position(|w| w == b"?>")?;
    let decl = std::str::from_utf8(&head[..end]).ok()?;
    pseudo_attr(decl, "encoding").map(|(v, _)| v.to_string())
}

/// Value and byte range (of the value, inside `decl`) of a pseudo-attribute such as `encoding="..."`.
pub(super) fn pseudo_attr<'a>(decl: &'a str, name: &str) -> Option<(&'a str, std::ops::Range<usize>)> {
    let mut from = 0;
    while let Some(pos) = decl[from..].find(name) {
        let after = from + pos + name.len();
        let rest = &decl[after..];
        let trimmed = rest.trim_start();
        if let Some(v) = trimmed.strip_prefix('=') {
            let v = v.trim_start();
            let quote = v.chars().next().filter(|c| *c == '"' || *c == '\'')?;
            let value_start = decl.len() - v.len() + 1;
            let value_len = v[1..].find(quote)?;
            return Some((&decl[value_start..value_start + value_len], value_start..value_start + value_len));
        }
        from = after;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn utf16_and_utf32_with_and_without_bom() {
        let doc = "<?xml version=\"1.0\" encoding=\"UTF-16\"?><rss>é€😀</rss>";
        for (be, bom) in [(true, true), (true, false), (false, true), (false, false)] {
            let d = decode(&utf16(doc, be, bom), None);
            assert_eq!(d.text, doc, "be={be} bom={bom}");
            assert_eq!(d.charset, if be { "UTF-16BE" } else { "UTF-16LE" });
        }
        for be in [true, false] {
            for bom in [true, false] {
                let mut bytes = Vec::new();
                for c in (if bom { "\u{FEFF}" } else { "" }).chars().chain(doc.chars()) {
                    bytes.extend_from_slice(&if be { (c as u32).to_be_bytes() } else { (c as u32).to_le_bytes() });
                }
                let d = decode(&bytes, Some("text/xml; charset=utf-32"));
                assert_eq!(d.text, doc, "utf-32 be={be} bom={bom}");
            }
        }
    }

    #[test]
    fn header_charset_wins_then_declaration_then_detection() {
        let latin1 = b"<?xml version=\"1.0\" encoding=\"iso-8859-1\"?><rss>caf\xe9</rss>";
        assert!(decode(latin1, None).text.contains("café"));
        assert_eq!(decode(latin1, None).charset, "windows-1252");
        // Only the HTTP header names the charset.
        let (koi, _, _) = encoding_rs::KOI8_R.encode("<rss>Привет мир</rss>");
        assert!(decode(&koi, Some("application/rss+xml; charset=\"koi8-r\"")).text.contains("Привет мир"));
        // Header overrides a wrong declaration (RFC 7303).
        let d = decode(b"<?xml version=\"1.0\" encoding=\"utf-8\"?><rss>caf\xe9</rss>", Some("text/xml; charset=ISO-8859-1"));
        assert!(d.text.contains("café"), "{}", d.text);
        // Nothing declared, no UTF-8 in it: chardetng.
        let (euc, _, _) = encoding_rs::EUC_KR.encode("<rss><title>서울 경제 뉴스 오늘의 주요 기사</title></rss>");
        let d = decode(&euc, None);
        assert!(d.text.contains("서울 경제 뉴스"), "{} via {}", d.text, d.charset);
    }

    #[test]
    fn stray_bytes_in_utf8_become_windows_1252_not_replacement_chars() {
        let d = decode("<rss>naïve \u{201C}q\u{201D} ".as_bytes().iter().copied().chain(*b"caf\xe9 \x93x\x94</rss>").collect::<Vec<_>>().as_slice(), None);
        assert_eq!(d.text, "<rss>naïve \u{201C}q\u{201D} café \u{201C}x\u{201D}</rss>");
        assert!(d.notes[0].contains("3 bytes invalid in UTF-8"), "{:?}", d.notes);
        assert!(!d.text.contains('\u{FFFD}'));
    }

    #[test]
    fn lying_labels_are_ignored() {
        let d = decode(b"<?xml version=\"1.0\" encoding=\"utf-16\"?><rss>x</rss>", None);
        assert_eq!((d.text.as_str(), d.charset), ("<?xml version=\"1.0\" encoding=\"utf-16\"?><rss>x</rss>", "UTF-8"));
        let d = decode(b"<rss>x</rss>", Some("text/xml; charset=bogus-thing"));
        assert_eq!(d.charset, "UTF-8");
        assert!(d.notes[0].contains("bogus-thing"));
    }
}
