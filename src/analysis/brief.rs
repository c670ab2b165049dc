//! The built-in writing of a brief: each story's text, the "what matters for markets" lead, the summary, what
//! changed since the previous brief, and fitting the whole within the profile's word budget.
//!
//! Deterministic: the same window, index and previous brief give the same text.

use std::collections::HashSet;

use super::doc::{Analogue, AnalysisDoc, Move, Story, StoryStatus, Tag, Trending, Watch};
use super::lang::{Language, Noun};
use super::{article_ref, lead, market, published, signals, Draft};

/// "1 article", "3 articles" (English; briefs count with [`Language::count`]).
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
    let lang = doc.language;
    let mut lines: Vec<String> = doc
        .stories
        .iter()
        .filter(|s| is_market(s) && !s.tags.is_empty())
        .take(3)
        .map(|s| format!("{}: {}", tag_line(s, 3), s.headline))
        .collect();
    if lines.is_empty() {
        match doc.stories.first() {
            Some(s) => lines.push(format!("{}: {}", lang.label("No market-moving story in this window; the main story"), s.headline)),
            None => return lines,
        }
    }
    // At least three lines: the next stories, then the window's size.
    for s in doc.stories.iter().filter(|s| !(is_market(s) && !s.tags.is_empty())).take(3usize.saturating_sub(lines.len())) {
        if !lines.iter().any(|l| l.ends_with(&s.headline)) {
            let label = if s.tags.is_empty() { lang.label("Also").to_string() } else { tag_line(s, 3) };
            lines.push(format!("{label}: {}", s.headline));
        }
    }
    // The next dated event on or after the analysis day (a week or month that started before it reads as past).
    let today = super::fmt_date(doc.as_of);
    if let Some(w) = doc.watch.iter().find(|w| w.date >= today).or(doc.watch.first()) {
        lines.push(format!("{}: {} \u{2014} {}", lang.label("Next"), when(lang, w), super::lead(&w.sentence, 110)));
    }
    if !doc.trending.is_empty() && lines.len() < 5 {
        let terms: Vec<&str> = doc.trending.iter().take(4).map(|t| t.term.as_str()).collect();
        lines.push(format!("{}: {}", lang.label("Trending"), terms.join(", ")));
    }
    if lines.len() < 3 {
        let sources: HashSet<&str> = doc.stories.iter().flat_map(|s| s.sources.iter().map(String::as_str)).collect();
        let (a, st, so) =
            (lang.count(doc.window_articles, Noun::Article), lang.count(doc.stories.len(), Noun::Story), lang.count(sources.len(), Noun::Source));
        lines.push(match lang {
            Language::En => format!("{a} in the window, {st} listed from {so}."),
            Language::Ko => format!("기간 내 {a}, {so}에서 {st}."),
        });
    }
    lines.truncate(5);
    lines
}

/// "2017-03-15", "week of 2017-03-13".
pub(crate) fn when(lang: Language, w: &Watch) -> String {
    match w.precision.as_str() {
        "week" => format!("{} {}", lang.label("week of"), w.date),
        "month" => format!("{} {}", lang.label("month of"), w.date),
        _ => w.date.clone(),
    }
}

pub(crate) fn summary(doc: &AnalysisDoc) -> String {
    let lang = doc.language;
    let market = doc.stories.iter().filter(|s| is_market(s)).count();
    let multi = doc.stories.iter().filter(|s| !s.single_source).count();
    let (a, st) = (lang.count(doc.window_articles, Noun::Article), lang.count(doc.stories.len(), Noun::Story));
    let mut s = match lang {
        Language::En => format!("{a} in the window; the top {st} ({market} market news, {multi} covered by several outlets)."),
        Language::Ko => format!("기간 내 {a}; 상위 {st} (시장 뉴스 {market}건, 여러 매체 보도 {multi}건)."),
    };
    if let Some(top) = doc.stories.first() {
        let sources = lang.count(top.sources.len(), Noun::Source);
        s.push_str(&match lang {
            Language::En => format!(" Leading: \"{}\" ({sources}).", top.headline),
            Language::Ko => format!(" 주요 이슈: \"{}\" ({sources}).", top.headline),
        });
    }
    s
}

pub(crate) fn changes(doc: &AnalysisDoc, prev: &AnalysisDoc, matched: &HashSet<usize>) -> Vec<String> {
    let lang = doc.language;
    let (now, before, at) = (lang.count(doc.window_articles, Noun::Article), prev.window_articles, super::fmt_datetime(prev.as_of));
    let mut out = vec![match lang {
        Language::En => format!("{now} in this window against {before} in the previous one ({at})."),
        Language::Ko => format!("이번 기간 {now}, 이전 기간 {before}건 ({at})."),
    }];
    let mut list = |label: &str, items: Vec<&str>| {
        if !items.is_empty() {
            out.push(format!("{}: {}.", lang.label(label), items.join("; ")));
        }
    };
    list("New since then", doc.stories.iter().filter(|s| s.status != StoryStatus::Update).map(|s| s.headline.as_str()).take(4).collect());
    list("Developing", doc.stories.iter().filter(|s| s.status == StoryStatus::Update).map(|s| s.headline.as_str()).collect());
    list(
        "No longer in the news",
        prev.stories.iter().enumerate().filter(|(i, _)| !matched.contains(i)).map(|(_, s)| s.headline.as_str()).take(4).collect(),
    );
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
