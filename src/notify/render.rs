//! Rendering an analysis for each kind of target, within the target's limits.
//!
//! The message text comes from an editable minijinja template (`prompts/message.j2` by default) rendered per
//! format ("slack" mrkdwn, "discord" markdown, plain "markdown" for generic webhooks). Paragraphs are separated by
//! blank lines; long messages are split between paragraphs (a paragraph longer than a limit is split between lines,
//! then words) and the parts are labelled (i/N).
//!
//! Limits: Slack 50 blocks per message and 3,000 characters per section block; Discord 2,000 characters of
//! content, 4,096 per embed description (we use 2,000), 10 embeds and 6,000 characters across a message's embeds.

use minijinja::value::Value;
use minijinja::{Environment, Error, ErrorKind};
use serde_json::json;

use crate::analysis::doc::{fmt_date, fmt_datetime, AnalysisDoc};
use crate::notify::config::TargetKind;

pub const SLACK_MAX_BLOCKS: usize = 50;
pub const SLACK_MAX_SECTION: usize = 3000;
pub const DISCORD_MAX_CONTENT: usize = 2000;
pub const DISCORD_MAX_EMBED: usize = 2000;
pub const DISCORD_MAX_EMBEDS: usize = 10;
pub const DISCORD_MAX_EMBED_TOTAL: usize = 6000;

/// The built-in message template (overridable by a file of the same name in the prompts directory).
pub const DEFAULT_MESSAGE_TEMPLATE: &str = include_str!("../../prompts/message.j2");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Slack,
    Discord,
    Markdown,
}

impl Format {
    pub fn for_kind(kind: TargetKind) -> Format {
        match kind {
            TargetKind::Slack => Format::Slack,
            TargetKind::Discord => Format::Discord,
            TargetKind::Webhook => Format::Markdown,
        }
    }
    pub fn as_str(&self) -> &'static str {
        match self {
            Format::Slack => "slack",
            Format::Discord => "discord",
            Format::Markdown => "markdown",
        }
    }
}

/// Slack mrkdwn control characters.
pub fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn md_escape_link_text(s: &str) -> String {
    s.replace('[', "(").replace(']', ")")
}

/// Renders the message text of an analysis for a format with a template source.
pub fn render_text(doc: &AnalysisDoc, format: Format, template: &str) -> anyhow::Result<String> {
    let mut env = Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    let f = format;
    if f == Format::Slack {
        // Everything interpolated is escaped for mrkdwn except what link()/bold() produced (marked safe).
        env.set_formatter(|out, _state, value| {
            if value.is_safe() || value.is_none() || value.is_undefined() {
                return minijinja::escape_formatter(out, _state, value);
            }
            let s = value.to_string();
            out.write_str(&slack_escape(&s)).map_err(|_| Error::new(ErrorKind::WriteFailure, "write"))
        });
    }
    env.add_function("link", move |text: String, url: String| -> Value {
        Value::from_safe_string(match f {
            Format::Slack => format!("<{}|{}>", url.replace('|', "%7C").replace('>', "%3E"), slack_escape(&text).replace('|', "/")),
            _ => format!("[{}]({})", md_escape_link_text(&text), url.replace(')', "%29").replace(' ', "%20")),
        })
    });
    env.add_function("bold", move |text: String| -> Value {
        Value::from_safe_string(match f {
            Format::Slack => format!("*{}*", slack_escape(&text).replace('*', "")),
            _ => format!("**{}**", text.replace("**", "")),
        })
    });
    env.add_function("date", |ms: Option<i64>| ms.map(fmt_date).unwrap_or_else(|| "undated".into()));
    env.add_function("datetime", |ms: Option<i64>| ms.map(fmt_datetime).unwrap_or_else(|| "undated".into()));
    env.add_filter("pct", |x: f64| format!("{:.0}%", x * 100.0));
    env.add_function("arrow", |direction: String| crate::analysis::arrow(&direction));
    // Labels and counts in the brief's language.
    let lang = doc.language;
    env.add_function("t", move |label: String| lang.label(&label).to_string());
    env.add_function("n", move |count: usize, noun: String| -> Result<String, Error> {
        let noun: crate::analysis::lang::Noun = noun.parse().map_err(|e: String| Error::new(ErrorKind::InvalidOperation, e))?;
        Ok(lang.count(count, noun))
    });
    env.add_function("tags", |story: minijinja::value::ViaDeserialize<crate::analysis::doc::Story>, n: usize| {
        crate::analysis::tag_line(&story, n)
    });
    let tmpl = env.template_from_str(template)?;
    let text = tmpl.render(minijinja::context! { doc => doc, format => f.as_str() })?;
    Ok(tidy(&text))
}

/// Trailing spaces off, runs of blank lines collapsed to one, so templates need not fight Jinja whitespace.
pub fn tidy(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank = 0;
    for line in text.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            blank += 1;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank > 0 { "\n\n" } else { "\n" });
        }
        blank = 0;
        out.push_str(line);
    }
    out
}

fn char_len(s: &str) -> usize {
    s.chars().count()
}

/// Splits a too-long piece at line breaks, then spaces, then anywhere, into pieces of at most `limit` characters.
fn split_piece(text: &str, limit: usize, seps: &[char]) -> Vec<String> {
    if char_len(text) <= limit {
        return vec![text.to_string()];
    }
    let Some((&sep, rest)) = seps.split_first() else {
        let chars: Vec<char> = text.chars().collect();
        return chars.chunks(limit).map(|c| c.iter().collect()).collect();
    };
    let mut out: Vec<String> = Vec::new();
    let mut cur = String::new();
    for part in text.split(sep) {
        let candidate_len = if cur.is_empty() { char_len(part) } else { char_len(&cur) + 1 + char_len(part) };
        if candidate_len <= limit {
            if !cur.is_empty() {
                cur.push(sep);
            }
            cur.push_str(part);
        } else {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            if char_len(part) <= limit {
                cur.push_str(part);
            } else {
                out.extend(split_piece(part, limit, rest));
            }
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Paragraphs (blank-line separated), each at most `limit` characters (longer ones split between lines/words).
pub fn paragraphs(text: &str, limit: usize) -> Vec<String> {
    text.split("\n\n")
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .flat_map(|p| split_piece(p, limit, &['\n', ' ']))
        .collect()
}

/// Packs paragraphs into chunks of at most `limit` characters, joined by blank lines, never splitting a paragraph
/// that fits.
pub fn pack(paragraphs: &[String], limit: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for p in paragraphs {
        if !cur.is_empty() && char_len(&cur) + 2 + char_len(p) > limit {
            out.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push_str("\n\n");
        }
        cur.push_str(p);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn truncate_chars(s: &str, n: usize) -> String {
    if char_len(s) <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// Slack incoming-webhook bodies: one section block per paragraph (<= 3,000 characters), at most 50 blocks per
/// message (49 sections plus a context block saying (i/N) when there are several messages).
pub fn slack_messages(title: &str, text: &str, username: Option<&str>) -> Vec<serde_json::Value> {
    let paras = paragraphs(text, SLACK_MAX_SECTION);
    let chunks: Vec<&[String]> = paras.chunks(SLACK_MAX_BLOCKS - 1).collect();
    let n = chunks.len().max(1);
    let mut out = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let mut blocks: Vec<serde_json::Value> =
            chunk.iter().map(|p| json!({"type": "section", "text": {"type": "mrkdwn", "text": p}})).collect();
        let label = if n > 1 { format!(" ({}/{})", i + 1, n) } else { String::new() };
        if n > 1 {
            blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": format!("({}/{})", i + 1, n)}]}));
        }
        // The title carries a headline (untrusted): escaped like the rest of the message.
        let mut body = json!({"text": truncate_chars(&slack_escape(&format!("{title}{label}")), 3000), "blocks": blocks});
        if let Some(u) = username {
            body["username"] = json!(u);
        }
        out.push(body);
    }
    out
}

/// Discord webhook bodies: embeds of at most 2,000 characters each (whole paragraphs), at most 10 embeds and 6,000
/// characters per message, the content line labelled (i/N) when there are several messages.
pub fn discord_messages(title: &str, text: &str, username: Option<&str>) -> Vec<serde_json::Value> {
    let chunks = pack(&paragraphs(text, DISCORD_MAX_EMBED), DISCORD_MAX_EMBED);
    let mut messages: Vec<Vec<String>> = Vec::new();
    let mut cur: Vec<String> = Vec::new();
    let mut cur_total = 0;
    for c in chunks {
        let len = char_len(&c);
        if !cur.is_empty() && (cur.len() == DISCORD_MAX_EMBEDS || cur_total + len > DISCORD_MAX_EMBED_TOTAL) {
            messages.push(std::mem::take(&mut cur));
            cur_total = 0;
        }
        cur_total += len;
        cur.push(c);
    }
    if !cur.is_empty() || messages.is_empty() {
        messages.push(cur);
    }
    let n = messages.len();
    messages
        .into_iter()
        .enumerate()
        .map(|(i, embeds)| {
            let label = if n > 1 { format!(" ({}/{})", i + 1, n) } else { String::new() };
            // The title carries a headline (untrusted): no masked links in it.
            let content = truncate_chars(&md_escape_link_text(&format!("{title}{label}")), DISCORD_MAX_CONTENT);
            let embeds: Vec<_> = embeds.into_iter().map(|d| json!({"description": d})).collect();
            let mut body = json!({"content": content, "embeds": embeds, "allowed_mentions": {"parse": []}});
            if let Some(u) = username {
                body["username"] = json!(u);
            }
            body
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_paragraphs_within_limits() {
        let paras: Vec<String> = (0..30).map(|i| format!("Paragraph {i}") + &" word".repeat(100)).collect();
        let text = paras.join("\n\n");
        let msgs = discord_messages("Title", &text, None);
        assert!(msgs.len() > 1);
        let mut seen = String::new();
        for (i, m) in msgs.iter().enumerate() {
            assert!(m["content"].as_str().unwrap().ends_with(&format!("({}/{})", i + 1, msgs.len())));
            let embeds = m["embeds"].as_array().unwrap();
            assert!(embeds.len() <= 10);
            let total: usize = embeds.iter().map(|e| e["description"].as_str().unwrap().chars().count()).sum();
            assert!(total <= 6000, "{total}");
            for e in embeds {
                let d = e["description"].as_str().unwrap();
                assert!(d.chars().count() <= 2000);
                // Whole paragraphs only.
                for p in d.split("\n\n") {
                    assert!(paras.iter().any(|q| q.trim() == p), "split inside a paragraph: {p:.40}");
                }
                seen.push_str(d);
                seen.push_str("\n\n");
            }
        }
        assert_eq!(seen.trim(), text.trim());
    }

    #[test]
    fn slack_blocks_and_sections_within_limits() {
        let huge = "x".repeat(7000);
        let mut paras: Vec<String> = (0..120).map(|i| format!("p{i}")).collect();
        paras.push(huge);
        let msgs = slack_messages("T", &paras.join("\n\n"), Some("newsd"));
        assert_eq!(msgs.len(), 3, "123 sections (120 + 7000 chars split in 3) -> 3 messages");
        for m in &msgs {
            let blocks = m["blocks"].as_array().unwrap();
            assert!(blocks.len() <= 50);
            for b in blocks {
                if b["type"] == "section" {
                    assert!(b["text"]["text"].as_str().unwrap().chars().count() <= 3000);
                }
            }
        }
        assert_eq!(msgs[2]["blocks"].as_array().unwrap().last().unwrap()["elements"][0]["text"], "(3/3)");
    }

    #[test]
    fn slack_escapes_untrusted_text_but_not_links() {
        let doc: AnalysisDoc = serde_json::from_value(json!({
            "profile": "p<x>", "mode": "builtin", "model": null, "as_of": 0, "window_from": 0, "window_to": 0,
            "window_articles": 0, "summary": "a < b & c", "nothing_significant": true, "stories": [], "changes": [],
            "continuing": [], "outlook": null, "note": null, "previous_analysis_id": null
        }))
        .unwrap();
        let t = render_text(&doc, Format::Slack, "{{ doc.summary }} {{ link('A<B', 'http://x/?a=1&b=2') }}").unwrap();
        assert_eq!(t, "a &lt; b &amp; c <http://x/?a=1&b=2|A&lt;B>");
        let t = render_text(&doc, Format::Discord, "{{ doc.summary }} {{ link('A [1]', 'http://x/a b') }}").unwrap();
        assert_eq!(t, "a < b & c [A (1)](http://x/a%20b)");
    }

    fn two_story_doc() -> AnalysisDoc {
        serde_json::from_value(json!({
            "profile": "markets", "mode": "builtin", "model": null, "as_of": 1486512000000i64,
            "window_from": 1486425600000i64, "window_to": 1486512000000i64, "window_articles": 12,
            "summary": "12 articles; 2 stories.", "nothing_significant": false,
            "stories": [
                {"rank": 1, "headline": "Kabul blast", "status": "recurring", "single_source": false,
                 "sources": ["aljazeera", "cnn"], "already_reported": [], "first_published": 1486425600000i64,
                 "last_published": 1486425600000i64, "analysis": "Twenty dead.", "score": 4.0,
                 "market_impact": [{"asset": "Oil", "direction": "up", "confidence": "medium", "cited_ids": [1]}],
                 "articles": [{"id": 1, "title": "Blast", "source": "cnn", "url": "http://x/1", "published_at": 1486425600000i64},
                              {"id": 2, "title": "Blast 2", "source": "aljazeera", "url": "http://x/2", "published_at": 1486425600000i64}],
                 "history": [{"article": {"id": 9, "title": "Earlier blast", "source": "bbc", "url": "http://x/9", "published_at": 1481500000000i64}, "score": 0.7, "note": null}]},
                {"rank": 2, "headline": "Local news", "status": "new", "single_source": true,
                 "sources": ["bbc"], "already_reported": [], "first_published": null, "last_published": null,
                 "analysis": "Something.", "market_impact": "None.", "score": 2.0,
                 "articles": [{"id": 3, "title": "Local", "source": "bbc", "url": "http://x/3", "published_at": null}],
                 "history": []}
            ],
            "changes": ["1 new story"], "continuing": ["Old story"], "outlook": null, "note": null,
            "previous_analysis_id": 4
        }))
        .unwrap()
    }

    /// A Korean brief: Korean labels and counts; split for Slack and Discord by characters (not bytes), never
    /// inside a character.
    #[test]
    fn korean_brief_renders_and_splits_by_characters() {
        let mut doc = two_story_doc();
        doc.language = crate::analysis::lang::Language::Ko;
        doc.lead = vec!["USD rates ↑: 한국은행, 기준금리 0.25%p 인상".into()];
        doc.stories[0].headline = "한국은행, 기준금리 0.25%p 인상…물가 우려".into();
        doc.stories[0].analysis = "한국은행이 기준금리를 인상했다. ".repeat(400);
        let text = render_text(&doc, Format::Markdown, DEFAULT_MESSAGE_TEMPLATE).unwrap();
        assert!(text.starts_with("**시장 브리핑 · markets**"), "{text}");
        assert!(text.contains("**시장에 중요한 것**") && text.contains("기사 12건") && text.contains("출처 2곳"), "{text}");
        assert!(text.contains("가까운 과거 사례 없음."), "{text}");
        assert!(text.len() > 3 * text.chars().count() / 2, "mostly multi-byte text");
        for m in slack_messages("브리핑", &text, None) {
            for b in m["blocks"].as_array().unwrap() {
                if let Some(t) = b["text"]["text"].as_str() {
                    assert!(t.chars().count() <= SLACK_MAX_SECTION);
                }
            }
        }
        let discord = discord_messages("브리핑", &text, None);
        let mut rebuilt = String::new();
        for m in &discord {
            for e in m["embeds"].as_array().unwrap() {
                let d = e["description"].as_str().unwrap();
                assert!(d.chars().count() <= DISCORD_MAX_EMBED);
                rebuilt.push_str(d);
            }
        }
        // Nothing lost or cut inside a character: every Hangul syllable of the text is still there.
        let hangul = |s: &str| s.chars().filter(|c| ('\u{ac00}'..='\u{d7a3}').contains(c)).count();
        assert_eq!(hangul(&rebuilt), hangul(&text));
        assert!(discord.len() >= 2 || discord[0]["embeds"].as_array().unwrap().len() >= 2, "long enough to split");
    }

    #[test]
    fn default_message_template_layout() {
        let text = render_text(&two_story_doc(), Format::Markdown, DEFAULT_MESSAGE_TEMPLATE).unwrap();
        println!("{text}");
        let paras: Vec<&str> = text.split("\n\n").collect();
        assert!(paras[0].starts_with("**Market brief · markets**\n2017-02-07 00:00 UTC → 2017-02-08 00:00 UTC"), "{text}");
        assert!(paras.iter().any(|p| p.starts_with("1. **Kabul blast** · 2 sources\n")), "{text}");
        assert!(text.contains("• [Blast](http://x/1) (cnn, 2017-02-07)"), "{text}");
        assert!(text.contains("Analogue: [Earlier blast](http://x/9) (2016-12-11, similarity 0.7"), "{text}");
        assert!(text.contains("No close analogue."), "the second story has none: {text}");
        assert!(text.contains("single source, unconfirmed"), "{text}");
        assert!(text.contains("Still developing, nothing new: Old story"), "{text}");
        assert!(text.contains("Impact: Oil ↑ (medium)"), "{text}");
        assert!(text.contains("**Since the previous brief**"), "{text}");
        assert!(text.contains("• 1 new story"), "{text}");
    }
}
