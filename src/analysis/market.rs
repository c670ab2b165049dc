//! Market relevance, tags and directions of a story, from a versioned lexicon (`market_lexicon.toml`, built in,
//! extensible with extra files).
//!
//! Everything here is deterministic and evidence-bound: a tag exists only with the article id and the phrase that
//! triggered it; a direction only where one sentence names both the tag and a move ("The Fed raised rates").

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::OnceLock;

use aho_corasick::AhoCorasick;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use toml::Spanned;

use super::words::{
    at_boundary, contains_term, excerpt, lowercase_same_layout, normalize, prefix_chars, sentence_spans,
};

/// The lexicon shipped with newsd.
pub const BUILTIN_LEXICON: &str = include_str!("market_lexicon.toml");
/// The newest lexicon `version` this build reads.
pub const LEXICON_FORMAT: u32 = 1;
const BUILTIN_NAME: &str = "<built-in market_lexicon.toml>";
/// Only the start of a body is read: bounds the work on hostile or huge input.
pub const MAX_BODY_CHARS: usize = 20_000;
const MAX_TITLE_CHARS: usize = 1_000;
const MAX_EVIDENCE_PER_TAG: usize = 10;
const MAX_DIRECTIONS_PER_TAG_MOVE: usize = 3;
const SENTENCE_CHARS: usize = 240;
/// Words between a term and a move that put them in different clauses ("Apple fell while Microsoft gained",
/// "the dollar rose against the yen").
const CLAUSE_BREAKS: &[&str] =
    &["while", "but", "whereas", "although", "though", "against", "versus", "than", "반면", "지만"];
/// Bytes added to the distance of a move written before its term: English and Korean state the move after the
/// subject ("Apple fell", "금리를 인상"), so a move after wins unless one before is much closer.
const BEFORE_PENALTY: usize = 40;
/// x at which relevance reaches 1 - 1/e: one strong term in a title (2.0) gives about 0.49.
const RELEVANCE_SCALE: f64 = 3.0;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, strum::AsRefStr, strum::Display,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum TagKind {
    Asset,
    Sector,
    Region,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, strum::AsRefStr, strum::Display)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Move {
    Up,
    Down,
}

#[derive(Debug, Clone, Copy)]
pub struct ArticleText<'a> {
    pub id: i64,
    pub title: &'a str,
    pub body: &'a str,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub article_id: i64,
    /// The matched term as it appears in the article (whitespace collapsed); for a region, the place and the
    /// event that made it a signal ("French presidential election").
    pub phrase: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MarketTag {
    pub tag: String,
    pub kind: TagKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticker: Option<String>,
    /// Never empty; at most 10 (article, phrase) pairs, in reading order.
    pub evidence: Vec<Evidence>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Direction {
    pub tag: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticker: Option<String>,
    pub direction: Move,
    pub article_id: i64,
    /// The sentence that states it, trimmed to about 240 characters around the tag and the move.
    pub sentence: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MarketReading {
    /// 0..1: how much the story is about markets.
    pub relevance: f64,
    /// 0..1: how much it is about sports, celebrity or crime.
    pub non_market: f64,
    /// By evidence count (most first), then name.
    pub tags: Vec<MarketTag>,
    pub directions: Vec<Direction>,
}

#[derive(Debug, thiserror::Error)]
pub enum LexiconError {
    #[error("market lexicon {file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("market lexicon {file}:{line}:{column}: {message}")]
    Invalid { file: String, line: usize, column: usize, message: String },
}

// ---- The file format ------------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    version: Option<Spanned<u32>>,
    #[serde(default)]
    ignore: Vec<String>,
    direction: Option<RawDirection>,
    cues: Option<RawCues>,
    #[serde(default)]
    non_market: Vec<RawNonMarket>,
    #[serde(default)]
    entry: Vec<RawEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDirection {
    #[serde(default)]
    up: Vec<String>,
    #[serde(default)]
    down: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCues {
    #[serde(default)]
    terms: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNonMarket {
    #[allow(dead_code)]
    category: Option<String>,
    weight: Option<Spanned<f64>>,
    #[serde(default)]
    terms: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    tag: Spanned<String>,
    kind: Option<TagKind>,
    weight: Option<Spanned<f64>>,
    #[allow(dead_code)]
    category: Option<String>,
    ticker: Option<String>,
    #[serde(default)]
    terms: Vec<String>,
    #[serde(default)]
    cased: Vec<String>,
    #[serde(default)]
    places: Vec<String>,
    #[serde(default)]
    cased_places: Vec<String>,
    #[serde(default)]
    also: Vec<Spanned<String>>,
}

// ---- The compiled lexicon -------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Entry {
    tag: String,
    kind: TagKind,
    weight: f64,
    ticker: Option<String>,
    /// Indices of the implied entries.
    also: Vec<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Role {
    /// `place`: counts only with a cue in the same sentence.
    Term {
        entry: usize,
        place: bool,
    },
    Dir(Move),
    Cue,
    NonMarket {
        weight: f64,
    },
    /// Matches only to shadow shorter terms inside it.
    Ignore,
}

/// Patterns of one automaton; identical texts share one pattern with all their roles.
#[derive(Debug, Clone, Default)]
struct PatternSet {
    texts: Vec<String>,
    roles: Vec<Vec<Role>>,
    index: HashMap<String, usize>,
}

impl PatternSet {
    fn add(&mut self, text: String, role: Role) {
        let i = *self.index.entry(text.clone()).or_insert_with(|| {
            self.texts.push(text);
            self.roles.push(Vec::new());
            self.texts.len() - 1
        });
        if !self.roles[i].contains(&role) {
            self.roles[i].push(role);
        }
    }

    fn build(&self) -> Option<AhoCorasick> {
        if self.texts.is_empty() {
            return None;
        }
        Some(AhoCorasick::new(&self.texts).expect("lexicon patterns are bounded in size"))
    }
}

/// The market lexicon, compiled for matching.
#[derive(Debug, Clone)]
pub struct Lexicon {
    version: u32,
    fingerprint: String,
    entries: Vec<Entry>,
    /// Case-insensitive terms (matched on lowercased text) and cased terms (matched as written).
    lower: PatternSet,
    cased: PatternSet,
    lower_ac: Option<AhoCorasick>,
    cased_ac: Option<AhoCorasick>,
}

/// Where a problem is: file, line, column.
#[derive(Debug, Clone)]
struct Loc {
    file: String,
    line: usize,
    column: usize,
}

fn locate(file: &str, text: &str, offset: usize) -> Loc {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    Loc { file: file.to_string(), line, column: before[line_start..].chars().count() + 1 }
}

fn invalid(loc: &Loc, message: impl Into<String>) -> LexiconError {
    LexiconError::Invalid { file: loc.file.clone(), line: loc.line, column: loc.column, message: message.into() }
}

struct Builder {
    entries: Vec<Entry>,
    by_tag: HashMap<String, usize>,
    /// Per entry: the implied tags as written, with where they were written.
    also: Vec<Vec<(String, Loc)>>,
    lower: PatternSet,
    cased: PatternSet,
    version: Option<u32>,
}

impl Builder {
    fn add_file(&mut self, file: &str, text: &str) -> Result<(), LexiconError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let loc = locate(file, text, e.span().map(|s| s.start).unwrap_or(0));
            invalid(&loc, e.message().trim().to_string())
        })?;
        let at = |span: std::ops::Range<usize>| locate(file, text, span.start);
        match &raw.version {
            Some(v) if *v.get_ref() == 0 || *v.get_ref() > LEXICON_FORMAT => {
                return Err(invalid(
                    &at(v.span()),
                    format!("version {} is not supported (this newsd reads up to {LEXICON_FORMAT})", v.get_ref()),
                ));
            }
            Some(v) => self.version = Some(self.version.unwrap_or(0).max(*v.get_ref())),
            None if self.version.is_none() => return Err(invalid(&at(0..0), "the first lexicon needs `version`")),
            None => {}
        }
        let file_loc = at(0..0);
        let term = |t: &str, what: &str| -> Result<String, LexiconError> {
            let n = normalize(t.trim());
            if n.is_empty() {
                return Err(invalid(&file_loc, format!("empty {what} term")));
            }
            Ok(n)
        };
        for t in &raw.ignore {
            self.lower.add(lowercase_same_layout(&term(t, "ignore")?), Role::Ignore);
        }
        if let Some(d) = &raw.direction {
            for (list, mv) in [(&d.up, Move::Up), (&d.down, Move::Down)] {
                for t in list {
                    self.lower.add(lowercase_same_layout(&term(t, "direction")?), Role::Dir(mv));
                }
            }
        }
        if let Some(c) = &raw.cues {
            for t in &c.terms {
                self.lower.add(lowercase_same_layout(&term(t, "cue")?), Role::Cue);
            }
        }
        for g in &raw.non_market {
            let weight = match &g.weight {
                Some(w) => check_weight(w, &at)?,
                None => 1.0,
            };
            for t in &g.terms {
                self.lower.add(lowercase_same_layout(&term(t, "non_market")?), Role::NonMarket { weight });
            }
        }
        for e in raw.entry {
            let tag_loc = at(e.tag.span());
            let tag = e.tag.get_ref().trim().to_string();
            if tag.is_empty() {
                return Err(invalid(&tag_loc, "empty tag"));
            }
            let idx = match self.by_tag.get(&tag) {
                Some(&i) => {
                    let en = &mut self.entries[i];
                    if let Some(k) = e.kind {
                        en.kind = k;
                    }
                    if let Some(w) = &e.weight {
                        en.weight = check_weight(w, &at)?;
                    }
                    if e.ticker.is_some() {
                        en.ticker = e.ticker.clone();
                    }
                    i
                }
                None => {
                    let kind = e.kind.ok_or_else(|| invalid(&tag_loc, format!("entry {tag:?} needs a `kind`")))?;
                    let weight = match &e.weight {
                        Some(w) => check_weight(w, &at)?,
                        None => 1.0,
                    };
                    self.entries.push(Entry {
                        tag: tag.clone(),
                        kind,
                        weight,
                        ticker: e.ticker.clone(),
                        also: Vec::new(),
                    });
                    self.also.push(Vec::new());
                    self.by_tag.insert(tag.clone(), self.entries.len() - 1);
                    self.entries.len() - 1
                }
            };
            if e.terms.is_empty()
                && e.cased.is_empty()
                && e.places.is_empty()
                && e.cased_places.is_empty()
                && !self.has_terms(idx)
            {
                return Err(invalid(&tag_loc, format!("entry {tag:?} has no terms")));
            }
            for t in &e.terms {
                self.lower.add(lowercase_same_layout(&term(t, "entry")?), Role::Term { entry: idx, place: false });
            }
            for t in &e.places {
                self.lower.add(lowercase_same_layout(&term(t, "place")?), Role::Term { entry: idx, place: true });
            }
            for t in &e.cased {
                self.cased.add(term(t, "cased")?, Role::Term { entry: idx, place: false });
            }
            for t in &e.cased_places {
                self.cased.add(term(t, "cased place")?, Role::Term { entry: idx, place: true });
            }
            for a in &e.also {
                self.also[idx].push((a.get_ref().trim().to_string(), at(a.span())));
            }
        }
        Ok(())
    }

    fn has_terms(&self, idx: usize) -> bool {
        let has =
            |p: &PatternSet| p.roles.iter().flatten().any(|r| matches!(r, Role::Term { entry, .. } if *entry == idx));
        has(&self.lower) || has(&self.cased)
    }

    fn finish(mut self, fingerprint: String) -> Result<Lexicon, LexiconError> {
        for (i, list) in self.also.iter().enumerate() {
            for (tag, loc) in list {
                let &j =
                    self.by_tag.get(tag).ok_or_else(|| invalid(loc, format!("`also` names unknown tag {tag:?}")))?;
                if j != i && !self.entries[i].also.contains(&j) {
                    self.entries[i].also.push(j);
                }
            }
        }
        let (lower_ac, cased_ac) = (self.lower.build(), self.cased.build());
        Ok(Lexicon {
            version: self.version.unwrap_or(LEXICON_FORMAT),
            fingerprint,
            entries: self.entries,
            lower: self.lower,
            cased: self.cased,
            lower_ac,
            cased_ac,
        })
    }
}

fn check_weight(w: &Spanned<f64>, at: &impl Fn(std::ops::Range<usize>) -> Loc) -> Result<f64, LexiconError> {
    let v = *w.get_ref();
    if !(v > 0.0 && v <= 10.0) {
        return Err(invalid(&at(w.span()), format!("weight {v} is outside (0, 10]")));
    }
    Ok(v)
}

/// One term occurrence in a normalised text, after overlaps were resolved.
struct Hit<'l> {
    start: usize,
    end: usize,
    roles: Vec<&'l Role>,
}

impl Lexicon {
    /// The built-in lexicon (parsed once).
    pub fn builtin() -> Lexicon {
        static BUILTIN: OnceLock<Lexicon> = OnceLock::new();
        BUILTIN
            .get_or_init(|| {
                Self::from_texts(&[(BUILTIN_NAME, BUILTIN_LEXICON)]).expect("the built-in market lexicon is valid")
            })
            .clone()
    }

    /// The built-in lexicon extended by `extra_paths`, in order. A file that cannot be read, does not parse, has
    /// an unknown key or an invalid value is refused with its name, line and column.
    pub fn load(extra_paths: &[PathBuf]) -> Result<Lexicon, LexiconError> {
        let mut sources = vec![(BUILTIN_NAME.to_string(), BUILTIN_LEXICON.to_string())];
        for p in extra_paths {
            let text = std::fs::read_to_string(p)
                .map_err(|source| LexiconError::Io { file: p.display().to_string(), source })?;
            sources.push((p.display().to_string(), text));
        }
        let refs: Vec<(&str, &str)> = sources.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
        Self::from_texts(&refs)
    }

    /// A lexicon from (name, TOML text) sources merged in order; the first must declare `version`.
    pub fn from_texts(sources: &[(&str, &str)]) -> Result<Lexicon, LexiconError> {
        let mut b = Builder {
            entries: Vec::new(),
            by_tag: HashMap::new(),
            also: Vec::new(),
            lower: PatternSet::default(),
            cased: PatternSet::default(),
            version: None,
        };
        let mut hash = Sha256::new();
        for (name, text) in sources {
            b.add_file(name, text)?;
            hash.update((text.len() as u64).to_le_bytes());
            hash.update(text.as_bytes());
        }
        b.finish(hex::encode(&hash.finalize()[..6]))
    }

    /// The lexicon format version (`version` in the files).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// A short hash of the lexicon texts, to record which lexicon an analysis used.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// All terms matched in `norm` (its lowercased copy `lower` has the same layout), overlaps resolved: the
    /// longest match at the earliest start wins.
    fn scan(&self, norm: &str, lower: &str) -> Vec<Hit<'_>> {
        let mut raw: Vec<(usize, usize, &Vec<Role>)> = Vec::new();
        for (ac, set, hay) in [(&self.lower_ac, &self.lower, lower), (&self.cased_ac, &self.cased, norm)] {
            let Some(ac) = ac else { continue };
            for m in ac.find_overlapping_iter(hay) {
                if at_boundary(hay, m.start(), m.end()) {
                    raw.push((m.start(), m.end(), &set.roles[m.pattern().as_usize()]));
                }
            }
        }
        raw.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        let mut hits: Vec<Hit> = Vec::new();
        let mut last_end = 0;
        for (s, e, roles) in raw {
            if let Some(h) = hits.last_mut().filter(|h| h.start == s && h.end == e) {
                h.roles.extend(roles.iter());
                continue;
            }
            if s < last_end {
                continue;
            }
            hits.push(Hit { start: s, end: e, roles: roles.iter().collect() });
            last_end = e;
        }
        hits
    }

    /// Reads a story's articles: its market relevance, the tags it touches (each with evidence) and the moves
    /// its sentences state.
    pub fn read(&self, articles: &[ArticleText]) -> MarketReading {
        #[derive(Default)]
        struct Acc {
            evidence: Vec<Evidence>,
            seen: HashSet<(i64, String)>,
        }
        let mut acc: HashMap<usize, Acc> = HashMap::new();
        // Entries found directly (not only implied), with whether a title names them: the relevance.
        let mut direct: HashMap<usize, bool> = HashMap::new();
        let mut non_market: HashMap<String, (f64, bool)> = HashMap::new();
        // (entry, move, article, sentence) -> first occurrence, in reading order.
        let mut dirs: Vec<(usize, Move, i64, String)> = Vec::new();
        let mut dir_seen: HashSet<(usize, Move, i64, String)> = HashSet::new();

        let add_evidence = |acc: &mut HashMap<usize, Acc>, entry: usize, article_id: i64, phrase: &str| {
            let a = acc.entry(entry).or_default();
            if a.seen.insert((article_id, phrase.to_lowercase())) {
                a.evidence.push(Evidence { article_id, phrase: phrase.to_string() });
            }
        };

        for art in articles {
            let fields =
                [(prefix_chars(art.title, MAX_TITLE_CHARS), true), (prefix_chars(art.body, MAX_BODY_CHARS), false)];
            for (text, is_title) in fields {
                let norm = normalize(text);
                let lower = lowercase_same_layout(&norm);
                let hits = self.scan(&norm, &lower);
                if hits.is_empty() {
                    continue;
                }
                let mut hi = 0;
                for (ss, se) in sentence_spans(&norm) {
                    let first = hi;
                    while hi < hits.len() && hits[hi].start < se {
                        hi += 1;
                    }
                    let in_sentence: Vec<&Hit> = hits[first..hi].iter().filter(|h| h.start >= ss).collect();
                    let cues: Vec<&Hit> =
                        in_sentence.iter().copied().filter(|h| h.roles.iter().any(|r| **r == Role::Cue)).collect();
                    let moves: Vec<(&Hit, Move)> = in_sentence
                        .iter()
                        .flat_map(|h| {
                            h.roles.iter().filter_map(move |r| if let Role::Dir(m) = r { Some((*h, *m)) } else { None })
                        })
                        .collect();
                    // Per entry, the one move of this sentence closest to one of its terms: "Oil prices slid as
                    // OPEC output rose" says oil fell, not both.
                    let mut best: HashMap<usize, (usize, (usize, usize), Move)> = HashMap::new();
                    for h in &in_sentence {
                        for role in &h.roles {
                            match **role {
                                Role::Term { entry, place } => {
                                    let phrase = if place {
                                        let Some(cue) = cues.iter().min_by_key(|c| c.start.abs_diff(h.start)) else {
                                            continue;
                                        };
                                        region_phrase(&norm, h, cue)
                                    } else {
                                        norm[h.start..h.end].to_string()
                                    };
                                    add_evidence(&mut acc, entry, art.id, &phrase);
                                    for &j in &self.entries[entry].also {
                                        add_evidence(&mut acc, j, art.id, &phrase);
                                    }
                                    let t = direct.entry(entry).or_insert(false);
                                    *t |= is_title;
                                    if place || self.entries[entry].kind == TagKind::Region {
                                        continue;
                                    }
                                    // The move nearest after the term (English "Apple fell", Korean "금리를
                                    // 인상"), else nearest before ("raised rates at the Fed"), in the same clause.
                                    let clear = |a: usize, b: usize| !separated(&lower[a..b]);
                                    let after = moves
                                        .iter()
                                        .filter(|(m, _)| m.start >= h.end && clear(h.end, m.start))
                                        .min_by_key(|(m, _)| m.start)
                                        .map(|(m, mv)| (m.start - h.end, *m, *mv));
                                    let before = moves
                                        .iter()
                                        .filter(|(m, _)| m.end <= h.start && clear(m.end, h.start))
                                        .max_by_key(|(m, _)| m.end)
                                        .map(|(m, mv)| (h.start - m.end + BEFORE_PENALTY, *m, *mv));
                                    if let Some((gap, m, mv)) = after.or(before) {
                                        if best.get(&entry).is_none_or(|b| gap < b.0) {
                                            best.insert(entry, (gap, (h.start.min(m.start), h.end.max(m.end)), mv));
                                        }
                                    }
                                }
                                Role::NonMarket { weight } => {
                                    let e =
                                        non_market.entry(lower[h.start..h.end].to_string()).or_insert((weight, false));
                                    e.1 |= is_title;
                                }
                                Role::Dir(_) | Role::Cue | Role::Ignore => {}
                            }
                        }
                    }
                    let mut chosen: Vec<(usize, (usize, usize), Move)> =
                        best.into_iter().map(|(e, (_, f, m))| (e, f, m)).collect();
                    chosen.sort_by_key(|c| (c.1, c.0));
                    for (entry, (fs, fe), mv) in chosen {
                        let sentence = excerpt(&norm[ss..se], (fs - ss, fe - ss), SENTENCE_CHARS);
                        let key = (entry, mv, art.id, sentence);
                        if dir_seen.insert(key.clone()) {
                            dirs.push(key);
                        }
                    }
                }
            }
        }

        let x: f64 = direct.iter().map(|(e, title)| self.entries[*e].weight * if *title { 2.0 } else { 1.0 }).sum();
        let y: f64 = non_market.values().map(|(w, title)| w * if *title { 2.0 } else { 1.0 }).sum();
        let relevance = if x > 0.0 { (1.0 - (-x / RELEVANCE_SCALE).exp()) * x / (x + 0.5 * y) } else { 0.0 };
        let non_market = 1.0 - (-y / RELEVANCE_SCALE).exp();

        let mut tags: Vec<(usize, MarketTag)> = acc
            .into_iter()
            .map(|(e, a)| {
                let en = &self.entries[e];
                let n = a.evidence.len();
                let mut evidence = a.evidence;
                evidence.truncate(MAX_EVIDENCE_PER_TAG);
                (n, MarketTag { tag: en.tag.clone(), kind: en.kind, ticker: en.ticker.clone(), evidence })
            })
            .collect();
        tags.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.tag.cmp(&b.1.tag)));
        let rank: HashMap<&str, usize> = tags.iter().enumerate().map(|(i, t)| (t.1.tag.as_str(), i)).collect();

        let mut per_tag_move: HashMap<(usize, Move), usize> = HashMap::new();
        let mut directions: Vec<(usize, usize, Direction)> = Vec::new();
        for (seq, (entry, mv, article_id, sentence)) in dirs.into_iter().enumerate() {
            let n = per_tag_move.entry((entry, mv)).or_default();
            if *n >= MAX_DIRECTIONS_PER_TAG_MOVE {
                continue;
            }
            *n += 1;
            let en = &self.entries[entry];
            let r = rank.get(en.tag.as_str()).copied().unwrap_or(usize::MAX);
            directions.push((
                r,
                seq,
                Direction { tag: en.tag.clone(), ticker: en.ticker.clone(), direction: mv, article_id, sentence },
            ));
        }
        directions.sort_by_key(|d| (d.0, d.1));

        MarketReading {
            relevance: round4(relevance),
            non_market: round4(non_market),
            tags: tags.into_iter().map(|t| t.1).collect(),
            directions: directions.into_iter().map(|d| d.2).collect(),
        }
    }
}

fn separated(between_lower: &str) -> bool {
    between_lower.contains(';') || CLAUSE_BREAKS.iter().any(|w| contains_term(between_lower, w))
}

fn round4(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0
}

/// A place and the cue that made it a region signal, as written: "French presidential election" when they are
/// close, else "France … election".
fn region_phrase(norm: &str, place: &Hit, cue: &Hit) -> String {
    let (s, e) = (place.start.min(cue.start), place.end.max(cue.end));
    if norm[s..e].chars().count() <= 60 {
        norm[s..e].to_string()
    } else {
        let (a, b) = if place.start < cue.start { (place, cue) } else { (cue, place) };
        format!("{} … {}", &norm[a.start..a.end], &norm[b.start..b.end])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn art<'a>(id: i64, title: &'a str, body: &'a str) -> ArticleText<'a> {
        ArticleText { id, title, body }
    }

    fn tag<'r>(r: &'r MarketReading, name: &str) -> Option<&'r MarketTag> {
        r.tags.iter().find(|t| t.tag == name)
    }

    fn has_dir(r: &MarketReading, name: &str, mv: Move) -> Option<String> {
        r.directions.iter().find(|d| d.tag == name && d.direction == mv).map(|d| d.sentence.clone())
    }

    fn dir_sentences(r: &MarketReading, name: &str, mv: Move) -> Vec<String> {
        r.directions.iter().filter(|d| d.tag == name && d.direction == mv).map(|d| d.sentence.clone()).collect()
    }

    #[test]
    fn builtin_lexicon_is_valid_and_versioned() {
        let lx = Lexicon::builtin();
        assert_eq!(lx.version(), 1);
        assert_eq!(lx.fingerprint().len(), 12);
        let companies = lx.entries.iter().filter(|e| e.ticker.is_some()).count();
        assert!(companies >= 40, "{companies} companies");
        for tag in ["USD rates", "KRW rates", "Brent crude", "KOSPI", "Banks", "Eurozone", "Semiconductors", "Bitcoin"]
        {
            assert!(lx.entries.iter().any(|e| e.tag == tag), "{tag} missing");
        }
        assert_eq!(Lexicon::load(&[]).unwrap().fingerprint(), lx.fingerprint());
    }

    #[test]
    fn rate_decision_gets_usd_rates_up_with_its_sentence() {
        let lx = Lexicon::builtin();
        let body = "The Federal Reserve raised rates by a quarter point on Wednesday, its second hike in a decade. \
                    Chair Janet Yellen said further increases would be gradual. The dollar rose against the yen.";
        let r = lx.read(&[art(42, "Fed raises interest rates", body)]);
        let usd = tag(&r, "USD rates").expect("USD rates tag");
        assert_eq!(usd.kind, TagKind::Asset);
        assert!(usd.evidence.iter().any(|e| e.article_id == 42 && e.phrase == "Fed"), "{:?}", usd.evidence);
        assert!(usd.evidence.iter().any(|e| e.phrase == "Federal Reserve"), "{:?}", usd.evidence);
        // A rate decision implies its currency, with the same evidence.
        assert!(tag(&r, "USD").is_some_and(|t| t.evidence.iter().any(|e| e.phrase == "Fed")));
        let up: Vec<&Direction> =
            r.directions.iter().filter(|d| d.tag == "USD rates" && d.direction == Move::Up).collect();
        assert!(
            up.iter().any(|d| d.sentence.starts_with("The Federal Reserve raised rates by a quarter point")),
            "{up:?}"
        );
        assert!(up.iter().all(|d| d.article_id == 42));
        assert!(has_dir(&r, "USD rates", Move::Down).is_none(), "{:?}", r.directions);
        assert!(
            has_dir(&r, "USD", Move::Up).is_some_and(|s| s == "The dollar rose against the yen."),
            "{:?}",
            r.directions
        );
        assert!(has_dir(&r, "JPY", Move::Up).is_none(), "{:?}", r.directions);
        assert!(r.relevance > 0.7, "relevance {}", r.relevance);
        assert_eq!(r.non_market, 0.0);
        // No tag without evidence.
        assert!(r.tags.iter().all(|t| !t.evidence.is_empty()));
    }

    #[test]
    fn football_is_not_market_news() {
        let lx = Lexicon::builtin();
        let r = lx.read(&[art(
            7,
            "Arsenal beat Chelsea in Premier League thriller",
            "The striker scored the winning goal in the 89th minute of the match at the Emirates Stadium. \
             The club's manager praised the goalkeeper after the game.",
        )]);
        assert!(r.relevance < 0.2, "relevance {}", r.relevance);
        assert!(r.non_market > 0.0);
    }

    #[test]
    fn market_story_outranks_sports_story_with_a_passing_market_word() {
        let lx = Lexicon::builtin();
        let sport = lx.read(&[art(
            1,
            "Cup final: City win on penalties",
            "The football club's shares are not listed. The match ended 2-2.",
        )]);
        let market =
            lx.read(&[art(2, "Oil prices jump as OPEC agrees output cut", "Brent crude rose 4% to $55 a barrel.")]);
        assert!(market.relevance > sport.relevance + 0.3, "{} vs {}", market.relevance, sport.relevance);
        assert!(has_dir(&market, "Brent crude", Move::Up).is_some(), "{:?}", market.directions);
        // One move per tag and sentence: the one closest to the tag's terms.
        let slid = lx.read(&[art(3, "", "Oil prices slid 2% as OPEC output rose.")]);
        assert_eq!(slid.directions.len(), 1, "{:?}", slid.directions);
        assert_eq!(slid.directions[0].direction, Move::Down);
    }

    #[test]
    fn korean_rate_decision() {
        let lx = Lexicon::builtin();
        let r = lx.read(&[art(5, "한은, 기준금리 인상", "한국은행이 기준금리를 인상했다. 원/달러 환율은 하락했다.")]);
        let krw = tag(&r, "KRW rates").expect("KRW rates");
        assert!(krw.evidence.iter().any(|e| e.phrase == "한국은행" && e.article_id == 5), "{:?}", krw.evidence);
        let up = dir_sentences(&r, "KRW rates", Move::Up);
        assert!(up.contains(&"한국은행이 기준금리를 인상했다.".to_string()), "{up:?}");
        assert!(up.contains(&"한은, 기준금리 인상".to_string()), "{up:?}");
        assert!(has_dir(&r, "KRW rates", Move::Down).is_none());
        assert!(has_dir(&r, "USD/KRW", Move::Down).is_some(), "{:?}", r.directions);
        assert!(tag(&r, "KRW").is_some());
    }

    #[test]
    fn company_moves_carry_the_ticker() {
        let lx = Lexicon::builtin();
        let r = lx.read(&[art(
            9,
            "Tech selloff",
            "Shares of Apple fell 3% on Tuesday after weak iPhone sales, while Microsoft gained.",
        )]);
        let apple = tag(&r, "Apple").expect("Apple");
        assert_eq!(apple.ticker.as_deref(), Some("AAPL"));
        let d = r.directions.iter().find(|d| d.tag == "Apple").expect("Apple direction");
        assert_eq!((d.direction, d.ticker.as_deref(), d.article_id), (Move::Down, Some("AAPL"), 9));
        assert!(has_dir(&r, "Microsoft", Move::Up).is_some(), "{:?}", r.directions);
        // "while Microsoft gained" is another clause: Apple did not go up.
        assert!(has_dir(&r, "Apple", Move::Up).is_none(), "{:?}", r.directions);
        // The fruit is not the company.
        let fruit = lx.read(&[art(10, "Recipes", "an apple pie with fresh apple slices")]);
        assert!(tag(&fruit, "Apple").is_none());
    }

    #[test]
    fn whole_words_and_ignored_phrases() {
        let lx = Lexicon::from_texts(&[(
            "test.toml",
            "version = 1\n[[entry]]\ntag = \"Markets\"\nkind = \"asset\"\nterms = [\"markets\"]\n",
        )])
        .unwrap();
        assert!(lx.read(&[art(1, "Supermarkets cut prices", "")]).tags.is_empty());
        assert_eq!(lx.read(&[art(1, "Markets rallied", "")]).tags.len(), 1);
        let b = Lexicon::builtin();
        let medal = b.read(&[art(3, "Olympics", "She won a gold medal in Rio.")]);
        assert!(tag(&medal, "Gold").is_none(), "{:?}", medal.tags);
        let gold = b.read(&[art(3, "Gold", "Gold rose to a three-month high.")]);
        assert!(has_dir(&gold, "Gold", Move::Up).is_some());
        // Korean: a particle attaches, a longer word containing the term is ignored (유가족 = bereaved families).
        assert!(tag(&b.read(&[art(4, "", "국제유가가 올랐다.")]), "Brent crude").is_some());
        assert!(tag(&b.read(&[art(4, "", "유가족들이 모였다.")]), "Brent crude").is_none());
    }

    #[test]
    fn elections_are_low_weight_region_signals() {
        let lx = Lexicon::builtin();
        let r =
            lx.read(&[art(11, "French presidential election: Le Pen leads polls", "Voters go to the polls in April.")]);
        let fr = tag(&r, "France").expect("France");
        assert_eq!(fr.kind, TagKind::Region);
        assert!(fr.evidence.iter().any(|e| e.phrase == "French presidential election"), "{:?}", fr.evidence);
        assert!(tag(&r, "EUR").is_some() && tag(&r, "CAC 40").is_some(), "{:?}", r.tags);
        assert!(r.relevance < 0.5, "relevance {}", r.relevance);
        assert!(r.directions.is_empty());
        // A place without an event is no signal.
        assert!(tag(&lx.read(&[art(12, "Holiday in France", "We ate in France.")]), "France").is_none());
    }

    #[test]
    fn deterministic_order_and_bounded_input() {
        let lx = Lexicon::builtin();
        let a = [
            art(1, "Fed raises rates", "The dollar rose. Gold fell."),
            art(2, "Dollar rallies after Fed", "Treasury yields climbed and the dollar rose."),
        ];
        let r1 = lx.read(&a);
        assert_eq!(r1, lx.read(&a));
        assert_eq!(r1.tags[0].tag, "USD", "{:?}", r1.tags);
        let counts: Vec<usize> = r1.tags.iter().map(|t| t.evidence.len()).collect();
        assert!(counts.windows(2).all(|w| w[0] >= w[1]), "{counts:?}");
        // Only the first 20,000 characters of a body are read.
        let huge = "filler text ".repeat(500_000) + "The Fed raised rates.";
        let t = std::time::Instant::now();
        let r = lx.read(&[art(3, &huge, &huge)]);
        assert!(r.tags.is_empty() && r.relevance == 0.0);
        assert!(t.elapsed().as_secs() < 5);
    }

    #[test]
    fn lexicon_errors_name_file_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("extra.toml");
        std::fs::write(&bad, "[[entry]]\ntag = \"Lumber\"\nkind = \"asset\nterms = [\"lumber\"]\n").unwrap();
        let e = Lexicon::load(std::slice::from_ref(&bad)).unwrap_err().to_string();
        assert!(e.contains(&format!("{}:3:", bad.display())), "{e}");

        let unknown = dir.path().join("unknown.toml");
        std::fs::write(
            &unknown,
            "[[entry]]\ntag = \"Lumber\"\nkind = \"asset\"\nterms = [\"lumber\"]\ntickr = \"LBR\"\n",
        )
        .unwrap();
        let e = Lexicon::load(std::slice::from_ref(&unknown)).unwrap_err().to_string();
        assert!(e.contains(&format!("{}:5:", unknown.display())) && e.contains("tickr"), "{e}");

        let also = "version = 1\n[[entry]]\ntag = \"A\"\nkind = \"asset\"\nterms = [\"a\"]\nalso = [\"Nope\"]\n";
        let e = Lexicon::from_texts(&[("x.toml", also)]).unwrap_err().to_string();
        assert!(e.contains("x.toml:6:") && e.contains("Nope"), "{e}");

        let kind = "version = 1\n[[entry]]\ntag = \"A\"\nkind = \"bond\"\nterms = [\"a\"]\n";
        assert!(Lexicon::from_texts(&[("k.toml", kind)]).unwrap_err().to_string().contains("k.toml:4:"));
        let newer = "version = 2\n";
        assert!(Lexicon::from_texts(&[("v.toml", newer)]).unwrap_err().to_string().contains("v.toml:1:"));
        let e = Lexicon::load(&[dir.path().join("missing.toml")]).unwrap_err().to_string();
        assert!(e.contains("missing.toml"), "{e}");
    }

    #[test]
    fn extra_files_extend_the_builtin() {
        let dir = tempfile::tempdir().unwrap();
        let extra = dir.path().join("mine.toml");
        std::fs::write(
            &extra,
            "[[entry]]\ntag = \"Gold\"\nterms = [\"yellow metal\"]\n\n[[entry]]\ntag = \"Lumber\"\nkind = \"asset\"\n\
             terms = [\"lumber\", \"목재\"]\nalso = [\"Real estate\"]\n",
        )
        .unwrap();
        let lx = Lexicon::load(&[extra]).unwrap();
        assert_ne!(lx.fingerprint(), Lexicon::builtin().fingerprint());
        let r = lx.read(&[art(1, "", "The yellow metal rose while lumber prices fell.")]);
        assert!(has_dir(&r, "Gold", Move::Up).is_some(), "{:?}", r.directions);
        assert!(has_dir(&r, "Lumber", Move::Down).is_some(), "{:?}", r.directions);
        assert!(tag(&r, "Real estate").is_some());
    }

    #[test]
    fn reading_serialises_with_lowercase_kinds() {
        let r = Lexicon::builtin().read(&[art(1, "Apple shares slump", "")]);
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["tags"][0]["kind"], "asset");
        assert_eq!(j["directions"][0]["direction"], "down");
        assert_eq!(
            (TagKind::Sector.as_ref(), Move::Up.as_ref(), Move::Down.to_string().as_str()),
            ("sector", "up", "down")
        );
        let back: MarketReading = serde_json::from_value(j).unwrap();
        assert_eq!(back, r);
    }
}
