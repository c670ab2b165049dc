//! The built-in writing of a brief: each story's text, the "what matters for markets" lead, the summary, what
//! changed since the previous brief, and fitting the whole within the profile's word budget.
//!
//! Deterministic: the same window, index and previous brief give the same text.

use std::collections::HashSet;

use super::doc::{Analogue, AnalysisDoc, Move, Story, StoryStatus, Tag, Trending, Watch};
use super::{article_ref, lead, market, published, signals, Draft};

/// "1 article", "3 articles".
pub(crate) fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn tags_of(r: &market::MarketReading) -> Vec<Tag> {
    r.tags
        .iter()
        .map(|t| Tag {
            tag: t.tag.clone(),
            kind: t.kind.as_ref().to_string(),
            ticker: t.ticker.clone(),
            evidence: t.evidence.iter().map(|e| (e.article_id, e.phrase.clone())).collect(),
        })
        .collect()
}

fn moves_of(r: &market::MarketReading) -> Vec<Move> {
    r.directions
        .iter()
        .map(|d| Move {
            tag: d.tag.clone(),
            direction: d.direction.as_ref().to_string(),
            article_id: d.article_id,
            sentence: d.sentence.clone(),
        })
        .collect()
}

fn analogue(a: &crate::store::ArticleRow, score: f32) -> Analogue {
    Analogue { article: article_ref(a), score: (score * 1000.0).round() / 1000.0, note: None }
}

/// A story written by the built-in analysis: its lead sentence, and the sentence stating a market move if an
/// article states one. Tags, coverage and analogues are structured fields the template renders.
pub(crate) fn story(rank: usize, d: &Draft) -> Story {
    let rep = &d.articles[d.representative];
    let first = d.articles.iter().map(published).min();
    let last = d.articles.iter().map(published).max();
    let mut text = lead(&rep.body, 220);
    if text.is_empty() {
        text = rep.title.clone();
    }
    let moves = moves_of(&d.reading);
    if let Some(m) = moves.iter().find(|m| !text.contains(m.sentence.as_str())) {
        let source = d.articles.iter().find(|a| a.id == m.article_id).map(|a| a.source.as_str()).unwrap_or("");
        text.push_str(&format!(" {} {}: \u{201c}{}\u{201d} ({source})", m.tag, arrow(&m.direction), m.sentence));
    }
    // Updates list their new articles first.
    let mut arts: Vec<&crate::store::ArticleRow> =
        d.articles.iter().filter(|a| !d.already_reported.contains(&a.id)).collect();
    arts.extend(d.articles.iter().filter(|a| d.already_reported.contains(&a.id)));
    Story {
        rank,
        headline: rep.title.clone(),
        status: d.status,
        single_source: d.sources.len() == 1,
        sources: d.sources.clone(),
        articles: arts.into_iter().map(article_ref).collect(),
        already_reported: d.already_reported.clone(),
        first_published: first,
        last_published: last,
        analysis: text,
        market_impact: Vec::new(),
        history: d.analogues.iter().map(|(a, s)| analogue(a, *s)).collect(),
        earlier_coverage: d.earlier.iter().map(|(a, s)| analogue(a, *s)).collect(),
        entities: d.entities.clone(),
        continues: d.continues.clone(),
        score: (d.score * 1000.0).round() / 1000.0,
        relevance: (d.reading.relevance * 1000.0).round() / 1000.0,
        tags: tags_of(&d.reading),
        moves,
        cited_ids: Vec::new(),
    }
}

pub fn arrow(direction: &str) -> &'static str {
    match direction {
        "up" => "\u{2191}",
        "down" => "\u{2193}",
        "mixed" => "\u{2195}",
        _ => "",
    }
}

/// "USD rates ↑ · Banks · Eurozone": a story's first tags, with the direction an article states.
pub fn tag_line(s: &Story, n: usize) -> String {
    s.tags
        .iter()
        .take(n)
        .map(|t| match s.moves.iter().find(|m| m.tag == t.tag) {
            Some(m) => format!("{} {}", t.tag, arrow(&m.direction)),
            None => t.tag.clone(),
        })
        .collect::<Vec<_>>()
        .join(" \u{b7} ")
}

fn is_market(s: &Story) -> bool {
    s.relevance >= super::MARKET_TIER
}

/// "What matters for markets": 3-5 lines: the market stories, then what is dated next and what is trending.
pub(crate) fn lead_lines(doc: &AnalysisDoc) -> Vec<String> {
    let mut lines: Vec<String> = doc
        .stories
        .iter()
        .filter(|s| is_market(s) && !s.tags.is_empty())
        .take(3)
        .map(|s| format!("{}: {}", tag_line(s, 3), s.headline))
        .collect();
    if lines.is_empty() {
        match doc.stories.first() {
            Some(s) => lines.push(format!("No market-moving story in this window; the main story: {}", s.headline)),
            None => return lines,
        }
    }
    // At least three lines: the next stories, then the window's size.
    for s in doc.stories.iter().filter(|s| !(is_market(s) && !s.tags.is_empty())).take(3usize.saturating_sub(lines.len())) {
        if !lines.iter().any(|l| l.ends_with(&s.headline)) {
            lines.push(if s.tags.is_empty() { format!("Also: {}", s.headline) } else { format!("{}: {}", tag_line(s, 3), s.headline) });
        }
    }
    if let Some(w) = doc.watch.first() {
        let when = match w.precision.as_str() {
            "week" => format!("week of {}", w.date),
            "month" => format!("month of {}", w.date),
            _ => w.date.clone(),
        };
        lines.push(format!("Next: {when} \u{2014} {}", super::lead(&w.sentence, 110)));
    }
    if !doc.trending.is_empty() && lines.len() < 5 {
        let terms: Vec<&str> = doc.trending.iter().take(4).map(|t| t.term.as_str()).collect();
        lines.push(format!("Trending: {}", terms.join(", ")));
    }
    if lines.len() < 3 {
        let sources: HashSet<&str> = doc.stories.iter().flat_map(|s| s.sources.iter().map(String::as_str)).collect();
        lines.push(format!(
            "{} in the window, {} listed from {}.",
            count(doc.window_articles, "article", "articles"),
            count(doc.stories.len(), "story", "stories"),
            count(sources.len(), "source", "sources")
        ));
    }
    lines.truncate(5);
    lines
}

pub(crate) fn summary(doc: &AnalysisDoc) -> String {
    let n = doc.stories.len();
    let market = doc.stories.iter().filter(|s| is_market(s)).count();
    let multi = doc.stories.iter().filter(|s| !s.single_source).count();
    let mut s = format!(
        "{} in the window; the top {} ({} market news, {} covered by several outlets).",
        count(doc.window_articles, "article", "articles"),
        count(n, "story", "stories"),
        market,
        multi
    );
    if let Some(top) = doc.stories.first() {
        s.push_str(&format!(" Leading: \"{}\" ({}).", top.headline, count(top.sources.len(), "source", "sources")));
    }
    s
}

pub(crate) fn changes(doc: &AnalysisDoc, prev: &AnalysisDoc, matched: &HashSet<usize>) -> Vec<String> {
    let mut out = vec![format!(
        "{} in this window against {} in the previous one ({}).",
        count(doc.window_articles, "article", "articles"),
        prev.window_articles,
        super::fmt_datetime(prev.as_of)
    )];
    let fresh: Vec<&str> =
        doc.stories.iter().filter(|s| s.status != StoryStatus::Update).map(|s| s.headline.as_str()).take(4).collect();
    if !fresh.is_empty() {
        out.push(format!("New since then: {}.", fresh.join("; ")));
    }
    let updates: Vec<&str> =
        doc.stories.iter().filter(|s| s.status == StoryStatus::Update).map(|s| s.headline.as_str()).collect();
    if !updates.is_empty() {
        out.push(format!("Developing: {}.", updates.join("; ")));
    }
    let faded: Vec<&str> = prev
        .stories
        .iter()
        .enumerate()
        .filter(|(i, _)| !matched.contains(i))
        .map(|(_, s)| s.headline.as_str())
        .take(4)
        .collect();
    if !faded.is_empty() {
        out.push(format!("No longer in the news: {}.", faded.join("; ")));
    }
    out
}

pub(crate) fn trending(t: signals::Trend) -> Trending {
    Trending {
        term: t.term,
        mentions: t.window_mentions,
        baseline_per_day: (t.baseline_per_day * 100.0).round() / 100.0,
        ratio: (t.ratio * 10.0).round() / 10.0,
        sources: t.sources,
    }
}

pub(crate) fn watch(u: signals::Upcoming) -> Watch {
    Watch {
        date: u.date.format("%Y-%m-%d").to_string(),
        precision: u.precision.as_ref().to_string(),
        article_id: u.article_id,
        sentence: u.sentence,
    }
}

pub fn word_count(text: &str) -> usize {
    text.split_whitespace().filter(|w| w.chars().any(char::is_alphanumeric)).count()
}

/// Renders the brief (markdown) and cuts detail, then the lowest stories, until it fits `max_words`: the brief as
/// sent is the document stored. Returns the rendered text.
pub(crate) fn fit(doc: &mut AnalysisDoc, template: &str, max_words: usize) -> anyhow::Result<String> {
    let render = |doc: &AnalysisDoc| crate::notify::render::render_text(doc, crate::notify::render::Format::Markdown, template);
    let mut text = render(doc)?;
    // Cheapest loss first: detail, then the lowest stories down to four, then what changed, then stories.
    let mut step = 0;
    while word_count(&text) > max_words {
        match step {
            0 => {
                for s in &mut doc.stories {
                    s.history.truncate(1);
                    s.earlier_coverage.truncate(1);
                }
                doc.trending.truncate(3);
                doc.watch.truncate(3);
                doc.changes.truncate(2);
                step += 1;
            }
            1 => {
                for s in &mut doc.stories {
                    s.analysis = lead(&s.analysis, 160);
                }
                step += 1;
            }
            2 if doc.stories.len() > 4 => {
                doc.stories.pop();
            }
            2 => {
                doc.changes.clear();
                doc.continuing.truncate(3);
                step += 1;
            }
            _ if doc.stories.len() > 1 => {
                doc.stories.pop();
            }
            _ => break,
        }
        text = render(doc)?;
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plurals() {
        assert_eq!(count(1, "source", "sources"), "1 source");
        assert_eq!(count(0, "source", "sources"), "0 sources");
        assert_eq!(count(3, "story", "stories"), "3 stories");
    }

    #[test]
    fn words_are_counted_without_punctuation() {
        assert_eq!(word_count("**Brief** · 3 articles — ok"), 4);
    }
}
