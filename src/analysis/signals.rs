//! Signals beyond the stories: terms trending against a trailing baseline, and dated upcoming events named in
//! the articles ("what to watch"). Pure and deterministic.

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{Datelike, Duration, NaiveDate, Weekday};
use serde::{Deserialize, Serialize};

use super::words::{
    contains_term, entities, excerpt, is_hangul, lowercase_same_layout, normalize, prefix_chars, sentence_spans,
};

/// A term trends when its rate per day in the window is at least this many times its baseline rate.
pub const MIN_RATIO: f64 = 3.0;
/// ... and when at least this many sources mention it.
pub const MIN_SOURCES: usize = 2;
/// Mentions assumed over the whole baseline for a term it never mentions: a new term must still be mentioned
/// more than a handful of times to trend, and its ratio stays finite.
pub const BASELINE_FLOOR: f64 = 0.5;
const MAX_TEXT_CHARS: usize = 20_000;
const SENTENCE_CHARS: usize = 240;
/// Events further than this after the article are more likely a misreading than a plan.
const MAX_DAYS_AHEAD: i64 = 400;
const MAX_EVENTS_PER_ARTICLE: usize = 10;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trend {
    /// Lowercased entity ("bank of england", "opec", "한국은행").
    pub term: String,
    /// Window texts naming it (each text counts once).
    pub window_mentions: usize,
    /// Baseline texts naming it, per baseline day.
    pub baseline_per_day: f64,
    /// Window rate per day over the baseline rate (floored, see `BASELINE_FLOOR`).
    pub ratio: f64,
    /// The window sources naming it, sorted.
    pub sources: Vec<String>,
}

/// Terms and names mentioned in `window` (source, text) at least `MIN_RATIO` times their rate per day in
/// `baseline`, by at least `MIN_SOURCES` sources; highest ratio first, then most mentions, then the term; at most
/// `top_n`. A text counts a term once however often it repeats it.
pub fn trending(
    window: &[(&str, &str)],
    window_days: f64,
    baseline: &[(&str, &str)],
    baseline_days: f64,
    top_n: usize,
) -> Vec<Trend> {
    // Guard degenerate spans (zero or negative days) instead of dividing by them.
    let window_days = if window_days > 0.0 { window_days } else { 1.0 };
    let baseline_days = if baseline_days > 0.0 { baseline_days } else { 1.0 };
    let distinct =
        |text: &str| -> HashSet<String> { entities(prefix_chars(text, MAX_TEXT_CHARS)).into_iter().collect() };

    let mut seen: HashMap<String, (usize, BTreeSet<String>)> = HashMap::new();
    for (source, text) in window {
        for term in distinct(text) {
            let e = seen.entry(term).or_default();
            e.0 += 1;
            e.1.insert(source.to_string());
        }
    }
    seen.retain(|_, (_, sources)| sources.len() >= MIN_SOURCES);
    if seen.is_empty() {
        return Vec::new();
    }
    let mut before: HashMap<&str, usize> = HashMap::new();
    for (_, text) in baseline {
        for term in distinct(text) {
            if let Some((k, _)) = seen.get_key_value(term.as_str()) {
                *before.entry(k.as_str()).or_default() += 1;
            }
        }
    }
    let floor = BASELINE_FLOOR / baseline_days;
    let mut out: Vec<Trend> = seen
        .iter()
        .filter_map(|(term, (n, sources))| {
            let baseline_per_day = before.get(term.as_str()).copied().unwrap_or(0) as f64 / baseline_days;
            let ratio = (*n as f64 / window_days) / baseline_per_day.max(floor);
            (ratio >= MIN_RATIO).then(|| Trend {
                term: term.clone(),
                window_mentions: *n,
                baseline_per_day,
                ratio,
                sources: sources.iter().cloned().collect(),
            })
        })
        .collect();
    out.sort_by(|a, b| {
        b.ratio.total_cmp(&a.ratio).then(b.window_mentions.cmp(&a.window_mentions)).then_with(|| a.term.cmp(&b.term))
    });
    out.truncate(top_n);
    out
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, strum::AsRefStr, strum::Display,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Precision {
    Day,
    /// `date` is the Monday of the week.
    Week,
    /// `date` is the first of the month.
    Month,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Upcoming {
    pub date: NaiveDate,
    pub precision: Precision,
    pub article_id: i64,
    /// The sentence naming the event, trimmed to about 240 characters around the date.
    pub sentence: String,
    /// The date as written ("on Wednesday", "March 15", "다음 주").
    pub phrase: String,
}

/// Words that make a sentence about a scheduled event rather than a past one.
const EVENT_CUES: &[&str] = &[
    "will",
    "'ll",
    "shall",
    "due",
    "expected",
    "scheduled",
    "slated",
    "set to",
    "plans to",
    "plan to",
    "upcoming",
    "ahead of",
    "meet",
    "meets",
    "meeting",
    "vote",
    "votes",
    "decide",
    "decides",
    "decision",
    "release",
    "releases",
    "report",
    "reports",
    "announce",
    "announces",
    "publish",
    "publishes",
    "deadline",
    "hearing",
    "testify",
    "summit",
    "talks",
    "election",
    "referendum",
    "예정",
    "발표",
    "앞두고",
    "열린다",
    "열릴",
    "연다",
    "개최",
    "회의",
    "결정",
    "마감",
];

const MONTHS: &[(&str, u32)] = &[
    ("january", 1),
    ("february", 2),
    ("march", 3),
    ("april", 4),
    ("may", 5),
    ("june", 6),
    ("july", 7),
    ("august", 8),
    ("september", 9),
    ("october", 10),
    ("november", 11),
    ("december", 12),
    ("jan", 1),
    ("feb", 2),
    ("mar", 3),
    ("apr", 4),
    ("jun", 6),
    ("jul", 7),
    ("aug", 8),
    ("sep", 9),
    ("sept", 9),
    ("oct", 10),
    ("nov", 11),
    ("dec", 12),
];

const WEEKDAYS: &[(&str, Weekday)] = &[
    ("monday", Weekday::Mon),
    ("tuesday", Weekday::Tue),
    ("wednesday", Weekday::Wed),
    ("thursday", Weekday::Thu),
    ("friday", Weekday::Fri),
    ("saturday", Weekday::Sat),
    ("sunday", Weekday::Sun),
    ("월요일", Weekday::Mon),
    ("화요일", Weekday::Tue),
    ("수요일", Weekday::Wed),
    ("목요일", Weekday::Thu),
    ("금요일", Weekday::Fri),
    ("토요일", Weekday::Sat),
    ("일요일", Weekday::Sun),
];

/// Words before a month name that make "in March" a month of the future or present, not any mention.
const MONTH_LEADS: &[&str] = &["in", "early", "mid", "late", "until", "by", "before", "end"];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Alpha,
    Num,
    Hangul,
    Punct,
}

#[derive(Debug, Clone, Copy)]
struct Tok<'a> {
    kind: Kind,
    text: &'a str,
    start: usize,
    end: usize,
}

fn tokenize(s: &str) -> Vec<Tok<'_>> {
    let mut out = Vec::new();
    let mut it = s.char_indices().peekable();
    while let Some((i, c)) = it.next() {
        if c.is_whitespace() {
            continue;
        }
        let kind = if c.is_ascii_digit() {
            Kind::Num
        } else if is_hangul(c) {
            Kind::Hangul
        } else if c.is_alphabetic() {
            Kind::Alpha
        } else {
            out.push(Tok { kind: Kind::Punct, text: &s[i..i + c.len_utf8()], start: i, end: i + c.len_utf8() });
            continue;
        };
        let mut end = i + c.len_utf8();
        while let Some(&(j, d)) = it.peek() {
            let same = match kind {
                Kind::Num => d.is_ascii_digit(),
                Kind::Hangul => is_hangul(d),
                _ => d.is_alphabetic() && !is_hangul(d),
            };
            if !same {
                break;
            }
            end = j + d.len_utf8();
            it.next();
        }
        out.push(Tok { kind, text: &s[i..end], start: i, end });
    }
    out
}

fn month_of(t: &Tok) -> Option<u32> {
    // Capitalised only: "may" and "march" are also a verb and a noun.
    if t.kind != Kind::Alpha || !t.text.starts_with(|c: char| c.is_ascii_uppercase()) {
        return None;
    }
    let l = t.text.to_ascii_lowercase();
    MONTHS.iter().find(|(n, _)| *n == l).map(|(_, m)| *m)
}

fn weekday_of(t: &Tok) -> Option<Weekday> {
    match t.kind {
        Kind::Alpha if t.text.starts_with(|c: char| c.is_ascii_uppercase()) => {
            let l = t.text.to_ascii_lowercase();
            WEEKDAYS.iter().find(|(n, _)| *n == l).map(|(_, w)| *w)
        }
        Kind::Hangul => WEEKDAYS.iter().find(|(n, _)| t.text.starts_with(n)).map(|(_, w)| *w),
        _ => None,
    }
}

fn num(t: Option<&Tok>, max_len: usize) -> Option<u32> {
    t.filter(|t| t.kind == Kind::Num && t.text.len() <= max_len).and_then(|t| t.text.parse().ok())
}

fn year(t: Option<&Tok>) -> Option<i32> {
    t.filter(|t| t.kind == Kind::Num && t.text.len() == 4)
        .and_then(|t| t.text.parse().ok())
        .filter(|y| (1900..=2200).contains(y))
}

/// A Hangul token that is `word` with at most a particle or time suffix after it ("내일", "내일부터", "다음주에").
fn hangul_is(t: Option<&Tok>, word: &str) -> bool {
    const SUFFIXES: &[&str] = &["", "에", "중", "부터", "까지", "께", "초", "말", "의", "엔", "에는"];
    t.is_some_and(|t| t.kind == Kind::Hangul && t.text.strip_prefix(word).is_some_and(|rest| SUFFIXES.contains(&rest)))
}

fn alpha_is(t: Option<&Tok>, word: &str) -> bool {
    t.is_some_and(|t| t.kind == Kind::Alpha && t.text.eq_ignore_ascii_case(word))
}

fn adjacent(a: Option<&Tok>, b: Option<&Tok>) -> bool {
    matches!((a, b), (Some(a), Some(b)) if a.end == b.start)
}

fn is_punct(t: Option<&Tok>, p: &str) -> bool {
    t.is_some_and(|t| t.kind == Kind::Punct && t.text == p)
}

fn month_start(y: i32, m: u32) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(y, m, 1)
}

fn next_month_start(d: NaiveDate) -> NaiveDate {
    let (y, m) = if d.month() == 12 { (d.year() + 1, 1) } else { (d.year(), d.month() + 1) };
    month_start(y, m).unwrap_or(d)
}

fn week_start(d: NaiveDate) -> NaiveDate {
    d - Duration::days(d.weekday().num_days_from_monday() as i64)
}

/// The first day after the period, to compare the period with the analysis time.
fn period_end(date: NaiveDate, p: Precision) -> NaiveDate {
    match p {
        Precision::Day => date + Duration::days(1),
        Precision::Week => date + Duration::days(7),
        Precision::Month => next_month_start(date),
    }
}

/// A month (and day) without a year: the year of the article, or the next one when that would put it more than
/// two months before the article ("Jan. 5" in late December).
fn infer_year(pub_date: NaiveDate, month: u32, day: Option<u32>) -> Option<NaiveDate> {
    let make = |y: i32| match day {
        Some(d) => NaiveDate::from_ymd_opt(y, month, d),
        None => month_start(y, month),
    };
    let this = make(pub_date.year())?;
    let end = if day.is_some() { this } else { next_month_start(this) - Duration::days(1) };
    if end < pub_date - Duration::days(60) {
        make(pub_date.year() + 1)
    } else {
        Some(this)
    }
}

/// The next `wd` strictly after `d`.
fn next_weekday(d: NaiveDate, wd: Weekday) -> NaiveDate {
    let ahead = (wd.num_days_from_monday() as i64 - d.weekday().num_days_from_monday() as i64).rem_euclid(7);
    d + Duration::days(if ahead == 0 { 7 } else { ahead })
}

/// Dates named in one sentence: (date, precision, byte range of the phrase).
fn dates_in(sentence: &str, pub_date: NaiveDate) -> Vec<(NaiveDate, Precision, usize, usize)> {
    let toks = tokenize(sentence);
    let t = |i: usize| toks.get(i);
    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let prev = i.checked_sub(1).and_then(t);
        let past = alpha_is(prev, "last") || alpha_is(prev, "past") || hangul_is(prev, "지난");
        let mut found: Option<(NaiveDate, Precision, usize)> = None; // (date, precision, index of the last token)

        // 2017-03-15
        if toks[i].kind == Kind::Num && toks[i].text.len() == 4 && is_punct(t(i + 1), "-") && is_punct(t(i + 3), "-") {
            if let (Some(y), Some(m), Some(d)) = (year(t(i)), num(t(i + 2), 2), num(t(i + 4), 2)) {
                let chained = (i..i + 4).all(|k| adjacent(t(k), t(k + 1)));
                if let (true, Some(date)) = (chained, NaiveDate::from_ymd_opt(y, m, d)) {
                    found = Some((date, Precision::Day, i + 4));
                }
            }
        }
        // March 15, Mar. 15th, March 15, 2017, March 2017, in March
        if found.is_none() {
            if let Some(m) = month_of(&toks[i]) {
                let mut j = i + 1;
                if is_punct(t(j), ".") && adjacent(t(i), t(j)) {
                    j += 1;
                }
                if let Some(d) = num(t(j), 2).filter(|d| (1..=31).contains(d)) {
                    let mut k = j;
                    if t(k + 1).is_some_and(|s| ["st", "nd", "rd", "th"].contains(&s.text)) && adjacent(t(k), t(k + 1))
                    {
                        k += 1;
                    }
                    let comma = usize::from(is_punct(t(k + 1), ","));
                    let date = match year(t(k + 1 + comma)) {
                        Some(y) => {
                            k += 1 + comma;
                            NaiveDate::from_ymd_opt(y, m, d)
                        }
                        None => infer_year(pub_date, m, Some(d)),
                    };
                    // Not a time or a figure ("March 3:30", "May 5%", "May 5.5").
                    let figure = k == j
                        && adjacent(t(k), t(k + 1))
                        && (is_punct(t(k + 1), ":")
                            || is_punct(t(k + 1), "%")
                            || is_punct(t(k + 1), ".") && adjacent(t(k + 1), t(k + 2)));
                    if let (Some(date), false) = (date, figure) {
                        found = Some((date, Precision::Day, k));
                    }
                } else if let Some(y) = year(t(j)) {
                    found = month_start(y, m).map(|d| (d, Precision::Month, j));
                } else if prev.is_some_and(|p| {
                    p.kind == Kind::Alpha && MONTH_LEADS.contains(&p.text.to_ascii_lowercase().as_str())
                }) || alpha_is(prev, "of") && alpha_is(i.checked_sub(2).and_then(t), "end")
                {
                    found = infer_year(pub_date, m, None).map(|d| (d, Precision::Month, i));
                }
            }
        }
        // 15 March, 15th March 2017
        if found.is_none() {
            if let Some(d) = num(t(i), 2).filter(|d| (1..=31).contains(d)) {
                let mut j = i + 1;
                if t(j).is_some_and(|s| ["st", "nd", "rd", "th"].contains(&s.text)) && adjacent(t(i), t(j)) {
                    j += 1;
                }
                if let Some(m) = t(j).and_then(month_of) {
                    found = match year(t(j + 1)) {
                        Some(y) => NaiveDate::from_ymd_opt(y, m, d).map(|x| (x, Precision::Day, j + 1)),
                        None => infer_year(pub_date, m, Some(d)).map(|x| (x, Precision::Day, j)),
                    };
                }
            }
        }
        // 2017년 3월 15일, 3월 15일, 오는 15일
        if found.is_none() && toks[i].kind == Kind::Num {
            let unit = |k: usize, u: char| {
                adjacent(t(k), t(k + 1)) && t(k + 1).is_some_and(|h| h.kind == Kind::Hangul && h.text.starts_with(u))
            };
            let mut k = i;
            let mut y = None;
            if toks[i].text.len() == 4 && unit(i, '년') {
                y = year(t(i));
                k = i + 2;
            }
            if let Some(m) = num(t(k), 2).filter(|m| (1..=12).contains(m) && unit(k, '월')) {
                if let Some(d) = num(t(k + 2), 2).filter(|d| (1..=31).contains(d) && unit(k + 2, '일')) {
                    let date = match y {
                        Some(y) => NaiveDate::from_ymd_opt(y, m, d),
                        None => infer_year(pub_date, m, Some(d)),
                    };
                    found = date.map(|x| (x, Precision::Day, k + 3));
                }
            } else if y.is_none() && hangul_is(prev, "오는") {
                if let Some(d) = num(t(i), 2).filter(|d| (1..=31).contains(d) && unit(i, '일')) {
                    // The next such day of the month after the article.
                    let this = NaiveDate::from_ymd_opt(pub_date.year(), pub_date.month(), d).filter(|x| *x > pub_date);
                    let next = next_month_start(pub_date);
                    found = this
                        .or_else(|| NaiveDate::from_ymd_opt(next.year(), next.month(), d))
                        .map(|x| (x, Precision::Day, i + 1));
                }
            }
        }
        // on Wednesday, 수요일
        if found.is_none() {
            if let Some(wd) = weekday_of(&toks[i]) {
                found = Some((next_weekday(pub_date, wd), Precision::Day, i));
            }
        }
        // tomorrow, next week, next month, this week, 내일, 다음 주, 내달
        if found.is_none() {
            let next = alpha_is(t(i), "next");
            let this = alpha_is(t(i), "this");
            let next_week = week_start(pub_date) + Duration::days(7);
            found = if alpha_is(t(i), "tomorrow") || hangul_is(t(i), "내일") {
                Some((pub_date + Duration::days(1), Precision::Day, i))
            } else if hangul_is(t(i), "모레") {
                Some((pub_date + Duration::days(2), Precision::Day, i))
            } else if next && alpha_is(t(i + 1), "week") {
                Some((next_week, Precision::Week, i + 1))
            } else if next && alpha_is(t(i + 1), "month") {
                Some((next_month_start(pub_date), Precision::Month, i + 1))
            } else if this && alpha_is(t(i + 1), "week") {
                Some((week_start(pub_date), Precision::Week, i + 1))
            } else if this && alpha_is(t(i + 1), "month") {
                Some((month_start(pub_date.year(), pub_date.month()).unwrap_or(pub_date), Precision::Month, i + 1))
            } else if hangul_is(t(i), "다음주") || hangul_is(t(i), "내주") {
                Some((next_week, Precision::Week, i))
            } else if t(i).is_some_and(|x| x.text == "다음") && hangul_is(t(i + 1), "주") {
                Some((next_week, Precision::Week, i + 1))
            } else if hangul_is(t(i), "다음달") || hangul_is(t(i), "내달") {
                Some((next_month_start(pub_date), Precision::Month, i))
            } else if t(i).is_some_and(|x| x.text == "다음") && hangul_is(t(i + 1), "달") {
                Some((next_month_start(pub_date), Precision::Month, i + 1))
            } else if hangul_is(t(i), "이번주") || (t(i).is_some_and(|x| x.text == "이번") && hangul_is(t(i + 1), "주"))
            {
                let last = if hangul_is(t(i), "이번주") { i } else { i + 1 };
                Some((week_start(pub_date), Precision::Week, last))
            } else {
                None
            };
        }
        match found {
            Some((date, p, last)) => {
                if !past {
                    // A weekday phrase reads better with its preposition ("on Wednesday").
                    let first = if weekday_of(&toks[i]).is_some()
                        && prev.is_some_and(|p| {
                            p.kind == Kind::Alpha && matches!(p.text, "on" | "On" | "by" | "until" | "next")
                        }) {
                        i - 1
                    } else {
                        i
                    };
                    out.push((date, p, toks[first].start, toks[last].end));
                }
                i = last + 1;
            }
            None => i += 1,
        }
    }
    out
}

/// Dated upcoming events named in an article: explicit dates ("March 15", "15 March", "2017-03-15", "Mar. 15",
/// "3월 15일"), weekdays ("on Wednesday": the next one after the article's date), "tomorrow", "next week", "next
/// month", "내일", "다음 주", resolved against the article's publication date (UTC), in sentences that read as an
/// event (will, due, expected, meet, vote, 예정, 발표...). Kept only when the day (week, month) is not over at
/// `after_ms`, the analysis time. Earliest first; one per date and precision.
pub fn upcoming_events(article_id: i64, published_ms: i64, text: &str, after_ms: i64) -> Vec<Upcoming> {
    let Some(published) = chrono::DateTime::from_timestamp_millis(published_ms) else { return Vec::new() };
    let pub_date = published.date_naive();
    let norm = normalize(prefix_chars(text, MAX_TEXT_CHARS));
    let mut out: Vec<(Upcoming, usize)> = Vec::new();
    let mut seen = HashSet::new();
    for (ss, se) in sentence_spans(&norm) {
        let sentence = &norm[ss..se];
        let lower = lowercase_same_layout(sentence);
        if !EVENT_CUES.iter().any(|c| contains_term(&lower, c)) {
            continue;
        }
        for (date, precision, s, e) in dates_in(sentence, pub_date) {
            let end_ms = period_end(date, precision).and_hms_opt(0, 0, 0).map(|d| d.and_utc().timestamp_millis());
            let ahead = (date - pub_date).num_days();
            if end_ms.is_none_or(|m| m <= after_ms) || ahead > MAX_DAYS_AHEAD || !seen.insert((date, precision)) {
                continue;
            }
            out.push((
                Upcoming {
                    date,
                    precision,
                    article_id,
                    sentence: excerpt(sentence, (s, e), SENTENCE_CHARS),
                    phrase: sentence[s..e].to_string(),
                },
                ss + s,
            ));
        }
    }
    out.sort_by(|a, b| a.0.date.cmp(&b.0.date).then(a.0.precision.cmp(&b.0.precision)).then(a.1.cmp(&b.1)));
    out.truncate(MAX_EVENTS_PER_ARTICLE);
    out.into_iter().map(|(u, _)| u).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(date: &str) -> i64 {
        NaiveDate::parse_from_str(date, "%Y-%m-%d").unwrap().and_hms_opt(12, 0, 0).unwrap().and_utc().timestamp_millis()
    }

    fn d(date: &str) -> NaiveDate {
        NaiveDate::parse_from_str(date, "%Y-%m-%d").unwrap()
    }

    /// (date, precision, phrase) of the events in `text` published on `published`, analysed at `published`.
    fn events(published: &str, text: &str) -> Vec<(NaiveDate, Precision, String)> {
        upcoming_events(1, ms(published), text, ms(published))
            .into_iter()
            .map(|u| (u.date, u.precision, u.phrase))
            .collect()
    }

    #[test]
    fn explicit_dates() {
        // 2017-03-01 was a Wednesday.
        let p = "2017-03-01";
        assert_eq!(
            events(p, "The Fed will meet on March 15 to decide on rates."),
            vec![(d("2017-03-15"), Precision::Day, "March 15".into())]
        );
        assert_eq!(
            events(p, "The vote is scheduled for 15 March."),
            vec![(d("2017-03-15"), Precision::Day, "15 March".into())]
        );
        assert_eq!(
            events(p, "Results are due Mar. 15th, 2017."),
            vec![(d("2017-03-15"), Precision::Day, "Mar. 15th, 2017".into())]
        );
        assert_eq!(
            events(p, "The report is due on 2017-03-20."),
            vec![(d("2017-03-20"), Precision::Day, "2017-03-20".into())]
        );
        assert_eq!(
            events(p, "The ECB is expected to act in April."),
            vec![(d("2017-04-01"), Precision::Month, "April".into())]
        );
        // A figure is not a date; a lowercase "may" is a verb.
        assert!(events(p, "Sales will rise, and may 5 analysts agree?").is_empty());
        // Late December: "Jan. 5" is next year.
        assert_eq!(
            events("2016-12-28", "Data are due on Jan. 5."),
            vec![(d("2017-01-05"), Precision::Day, "Jan. 5".into())]
        );
    }

    #[test]
    fn relative_dates() {
        let p = "2017-03-01"; // Wednesday
        assert_eq!(
            events(p, "The ECB meets on Thursday."),
            vec![(d("2017-03-02"), Precision::Day, "on Thursday".into())]
        );
        // The same weekday as the article means next week's.
        assert_eq!(
            events(p, "Opec will decide on Wednesday."),
            vec![(d("2017-03-08"), Precision::Day, "on Wednesday".into())]
        );
        assert_eq!(
            events(p, "Payrolls data are due tomorrow."),
            vec![(d("2017-03-02"), Precision::Day, "tomorrow".into())]
        );
        assert_eq!(events(p, "The Fed meets next week."), vec![(d("2017-03-06"), Precision::Week, "next week".into())]);
        assert_eq!(
            events(p, "Britain is expected to trigger Article 50 next month."),
            vec![(d("2017-04-01"), Precision::Month, "next month".into())]
        );
        // Past references and sentences that do not read as events are not events.
        assert!(events(p, "The Fed raised rates last Wednesday, as expected.").is_empty());
        assert!(events(p, "Prices rose on Wednesday.").is_empty());
    }

    #[test]
    fn korean_dates() {
        let p = "2017-03-01";
        assert_eq!(
            events(p, "한국은행은 3월 15일 금융통화위원회를 열 예정이다."),
            vec![(d("2017-03-15"), Precision::Day, "3월 15일".into())]
        );
        assert_eq!(
            events(p, "2017년 4월 3일 발표된다."),
            vec![(d("2017-04-03"), Precision::Day, "2017년 4월 3일".into())]
        );
        assert_eq!(
            events(p, "고용지표는 다음 주 발표될 예정이다."),
            vec![(d("2017-03-06"), Precision::Week, "다음 주".into())]
        );
        assert_eq!(events(p, "정부는 내일 대책을 발표한다."), vec![(d("2017-03-02"), Precision::Day, "내일".into())]);
        assert_eq!(events(p, "금통위는 오는 9일 회의를 연다."), vec![(d("2017-03-09"), Precision::Day, "9일".into())]);
        assert_eq!(
            events(p, "FOMC는 수요일에 결정을 발표한다."),
            vec![(d("2017-03-08"), Precision::Day, "수요일에".into())]
        );
        assert!(events(p, "지난 2월 15일 발표했다.").is_empty());
    }

    #[test]
    fn drops_events_not_after_the_analysis_time() {
        let text = "The Fed will meet on March 15. Opec meets on March 30.";
        let all = upcoming_events(7, ms("2017-03-01"), text, ms("2017-03-01"));
        assert_eq!(all.len(), 2);
        let later = upcoming_events(7, ms("2017-03-01"), text, ms("2017-03-20"));
        assert_eq!(later.len(), 1);
        assert_eq!((later[0].date, later[0].article_id), (d("2017-03-30"), 7));
        assert_eq!(later[0].sentence, "Opec meets on March 30.");
        // An event later on the analysis day itself is still ahead.
        assert_eq!(upcoming_events(7, ms("2017-03-01"), text, ms("2017-03-30")).len(), 1);
        // A sentence of several hundred characters is trimmed around its date.
        let long = format!("{} The vote will be held on March 15 {}.", "x".repeat(400), "y".repeat(400));
        let u = upcoming_events(1, ms("2017-03-01"), &long, 0);
        assert!(u[0].sentence.contains("March 15") && u[0].sentence.chars().count() <= 240, "{}", u[0].sentence);
    }

    #[test]
    fn trending_needs_ratio_and_sources() {
        let window = [
            ("reuters", "OPEC agreed to cut output. Saudi Arabia backed the deal."),
            ("bbc", "The OPEC deal lifted prices. Oil traders cheered Saudi Arabia."),
            ("bbc", "OPEC ministers met in Vienna."),
            ("cnn", "Angela Merkel spoke in Berlin about Angela Merkel."),
            ("ft", "Germany: Angela Merkel spoke again."),
        ];
        let baseline = [
            ("reuters", "Angela Merkel met Theresa May."),
            ("bbc", "Angela Merkel visited Paris."),
            ("ft", "Saudi Arabia raised prices."),
        ];
        let t = trending(&window, 1.0, &baseline, 7.0, 10);
        let terms: Vec<&str> = t.iter().map(|x| x.term.as_str()).collect();
        // opec: 3 texts, 2 sources, unseen before: 3 / (0.5/7) = 42.
        assert_eq!(t[0].term, "opec", "{t:?}");
        assert_eq!((t[0].window_mentions, t[0].sources.clone()), (3, vec!["bbc".to_string(), "reuters".to_string()]));
        assert!((t[0].ratio - 42.0).abs() < 1e-9);
        // saudi arabia: 2 / (1/7) = 14; angela merkel: 2 / (2/7) = 7 (a text counts once).
        assert_eq!(terms, vec!["opec", "saudi arabia", "angela merkel"], "{t:?}");
        assert!((t[2].baseline_per_day - 2.0 / 7.0).abs() < 1e-9);
        // One source is not a trend (vienna, berlin); ratio below 3 is not either.
        let flat = trending(&window, 1.0, &[("x", "OPEC. OPEC."); 30], 1.0, 10);
        assert!(flat.iter().all(|x| x.term != "opec"), "{flat:?}");
        assert_eq!(trending(&window, 1.0, &baseline, 7.0, 1).len(), 1);
        assert_eq!(trending(&window, 1.0, &baseline, 7.0, 10), t);
    }
}
