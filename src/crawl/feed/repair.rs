//! Repairs for the usual XML breakage in feeds, on decoded text (never on bytes: a lossy UTF-8 read here is what
//! turned Latin-1 accents into U+FFFD): characters XML forbids, HTML entities XML does not know, bare `&`.

/// Returns the repaired text and what was repaired (empty list: nothing to do).
pub(super) fn repair(text: &str) -> (String, Vec<&'static str>) {
    let mut what = Vec::new();
    let cleaned: String = text.chars().filter(|c| !forbidden(*c)).collect();
    if cleaned.len() != text.len() {
        what.push("illegal XML characters");
    }
    let (fixed, changed) = fix_entities(&cleaned);
    if changed {
        what.push("entities");
    }
    (fixed, what)
}

/// Characters XML 1.0 forbids (C0 controls except tab/newline/CR, and the two non-characters).
fn forbidden(c: char) -> bool {
    matches!(c as u32, 0..=8 | 0x0B | 0x0C | 0x0E..=0x1F | 0xFFFE | 0xFFFF)
}

/// Turns HTML named entities into numeric references and bare '&' into "&amp;", leaving CDATA alone.
fn fix_entities(s: &str) -> (String, bool) {
    let mut out = String::with_capacity(s.len() + 64);
    let mut changed = false;
    let mut rest = s;
    while let Some(pos) = rest.find(['&', '<']) {
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
                let xml_ok = matches!(name, "amp" | "lt" | "gt" | "quot" | "apos") || valid_char_ref(name);
                if xml_ok {
                    out.push_str(&rest[..=end]);
                } else if let Some(chars) = html_entity(&rest[..=end]) {
                    for c in chars.chars() {
                        out.push_str(&format!("&#{};", c as u32));
                    }
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

/// `#123` / `#x1F` naming a character XML allows.
fn valid_char_ref(name: &str) -> bool {
    let Some(num) = name.strip_prefix('#') else { return false };
    let n = match num.strip_prefix(['x', 'X']) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => num.parse::<u32>().ok(),
    };
    n.and_then(char::from_u32).is_some_and(|c| !forbidden(c))
}

/// The expansion of a named HTML5 entity (`&name;`, with the ampersand and semicolon), from htmlize's copy of the
/// WHATWG table.
fn html_entity(reference: &str) -> Option<&'static str> {
    htmlize::ENTITIES.get(reference.as_bytes()).and_then(|b| std::str::from_utf8(b).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_html5_entity_table() {
        let (t, what) = repair("<t>&eacute;&hellip;&nbsp;&Scaron;&fjlig;&NotEqualTilde;&amp;&#233;&#x0;</t>");
        assert_eq!(what, vec!["entities"]);
        // Entities outside the old 35-entry table: Š, the two-character "fj" and "≂̸".
        assert_eq!(t, "<t>&#233;&#8230;&#160;&#352;&#102;&#106;&#8770;&#824;&amp;&#233;&amp;#x0;</t>");
    }

    #[test]
    fn bare_ampersands_unknown_entities_and_cdata() {
        let (t, what) = repair("<t>AT&T &bogus; <![CDATA[a & b]]>\u{1}x</t>");
        assert_eq!(t, "<t>AT&amp;T &amp;bogus; <![CDATA[a & b]]>x</t>");
        assert_eq!(what, vec!["illegal XML characters", "entities"]);
        let (t, what) = repair("<t>fine &amp; dandy &#8230;</t>");
        assert!(what.is_empty());
        assert_eq!(t, "<t>fine &amp; dandy &#8230;</t>");
    }

    #[test]
    fn accents_survive_repair() {
        // The text is decoded before repair: Latin-1 accents stay accents.
        let (t, _) = repair("<t>Caf\u{e9} &eacute; M&A</t>");
        assert_eq!(t, "<t>Caf\u{e9} &#233; M&amp;A</t>");
    }
}
