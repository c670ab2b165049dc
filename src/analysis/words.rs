//! Text matching helpers shared by keyword filters, the market lexicon and the signals.
//!
//! Scripts written with spaces between words (Latin, Cyrillic, Greek) match whole words: "markets" does not match
//! "supermarkets", "rate" does not match "rated". Scripts without word spaces (Hangul, CJK, Kana, Thai...) match
//! substrings: Korean particles attach to the noun ("금리를" contains "금리").

/// Characters of scripts written without spaces between words, where a term matches as a plain substring.
pub fn is_unspaced(c: char) -> bool {
    matches!(c as u32,
        0x0E00..=0x0EFF      // Thai, Lao
        | 0x1000..=0x109F    // Myanmar
        | 0x1100..=0x11FF    // Hangul Jamo
        | 0x1780..=0x17FF    // Khmer
        | 0x2E80..=0x2FDF    // CJK radicals
        | 0x3040..=0x30FF    // Hiragana, Katakana
        | 0x3130..=0x318F    // Hangul compatibility Jamo
        | 0x31F0..=0x31FF    // Katakana extensions
        | 0x3400..=0x4DBF    // CJK extension A
        | 0x4E00..=0x9FFF    // CJK unified
        | 0xA960..=0xA97F    // Hangul Jamo extended A
        | 0xAC00..=0xD7AF    // Hangul syllables
        | 0xD7B0..=0xD7FF    // Hangul Jamo extended B
        | 0xF900..=0xFAFF    // CJK compatibility
        | 0xFF66..=0xFFDC    // halfwidth Katakana, Hangul
        | 0x20000..=0x3FFFF  // CJK extensions B..
    )
}

/// A letter or digit of a script written with spaces (Latin, Cyrillic, Greek, ...): part of a word.
pub fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() && !is_unspaced(c)
}

pub fn is_hangul(c: char) -> bool {
    matches!(c as u32, 0xAC00..=0xD7A3)
}

/// Whether `hay[start..end]` (a found occurrence) stands as a whole term: a match that begins (ends) with a
/// word character must not continue a word on that side. A match edge in an unspaced script needs no boundary.
pub fn at_boundary(hay: &str, start: usize, end: usize) -> bool {
    let m = &hay[start..end];
    let (Some(first), Some(last)) = (m.chars().next(), m.chars().next_back()) else { return false };
    if is_word_char(first) && hay[..start].chars().next_back().is_some_and(is_word_char) {
        return false;
    }
    if is_word_char(last) && hay[end..].chars().next().is_some_and(is_word_char) {
        return false;
    }
    true
}

/// The byte range of the first whole-term occurrence of `term_lower` in `haystack_lower` (both already
/// lowercased by the caller); see the module doc for what "whole term" means per script.
pub fn find_term(haystack_lower: &str, term_lower: &str) -> Option<(usize, usize)> {
    let first_len = term_lower.chars().next()?.len_utf8();
    let mut from = 0;
    while let Some(i) = haystack_lower[from..].find(term_lower) {
        let (s, e) = (from + i, from + i + term_lower.len());
        if at_boundary(haystack_lower, s, e) {
            return Some((s, e));
        }
        // Next candidate may overlap this one ("aa" in "aaa"): step one character, not the whole term.
        from = s + first_len;
    }
    None
}

pub fn contains_term(haystack_lower: &str, term_lower: &str) -> bool {
    find_term(haystack_lower, term_lower).is_some()
}

/// `text` with every run of whitespace made one space and typographic quotes made plain, so terms match
/// "Bank of\nEngland" and "Moody’s"; this is also the form quoted as evidence.
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_space = false;
    for c in text.chars() {
        if c.is_whitespace() {
            if !in_space {
                out.push(' ');
            }
            in_space = true;
            continue;
        }
        in_space = false;
        out.push(match c {
            '’' | '‘' | '′' => '\'',
            '“' | '”' => '"',
            c => c,
        });
    }
    out
}

/// `text` lowercased character by character, keeping a character as is where its lowercase has another
/// length ('İ'), so byte offsets in the result are offsets in `text`.
pub fn lowercase_same_layout(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let mut l = c.to_lowercase();
        match (l.next(), l.next()) {
            (Some(lc), None) if lc.len_utf8() == c.len_utf8() => out.push(lc),
            _ => out.push(c),
        }
    }
    out
}

/// The prefix of `text` of at most `max_chars` characters (cut on a character boundary).
pub fn prefix_chars(text: &str, max_chars: usize) -> &str {
    match text.char_indices().nth(max_chars) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

/// Words before a '.' that do not end a sentence.
const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "dr", "prof", "gen", "sen", "rep", "gov", "st", "jr", "sr", "inc", "corp", "co", "ltd", "vs",
    "no", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "approx",
];

/// Byte ranges of the sentences of `text` (trimmed, non-empty). Ends: '.', '!', '?' followed by a space (not
/// after an abbreviation, an initial or "U.S."; not before a lowercase word), '。', '！', '？', a Korean '다.'
/// even without a space after it, and line breaks.
pub fn sentence_spans(text: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut start = 0;
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let push = |s: usize, e: usize, spans: &mut Vec<(usize, usize)>| {
        let piece = &text[s..e];
        let lead = piece.len() - piece.trim_start().len();
        let trimmed = piece.trim();
        if !trimmed.is_empty() {
            spans.push((s + lead, s + lead + trimmed.len()));
        }
    };
    let mut k = 0;
    while k < chars.len() {
        let (i, c) = chars[k];
        let end_here = match c {
            '\n' | '\r' | '。' | '！' | '？' => true,
            '.' | '!' | '?' => {
                // Closing quotes and brackets stay with the sentence they close.
                let mut j = k + 1;
                while j < chars.len() && matches!(chars[j].1, '"' | '\'' | ')' | ']' | '”' | '’' | '»') {
                    j += 1;
                }
                let next = chars.get(j).map(|x| x.1);
                let ends = match next {
                    None => true,
                    Some(n) if n.is_whitespace() => {
                        let after = chars[j..].iter().map(|x| x.1).find(|c| !c.is_whitespace());
                        c != '.' || (!after.is_some_and(|a| a.is_lowercase()) && !abbreviation_before(text, i))
                    }
                    // "했다.그러나": Korean sentences sometimes run on without a space.
                    Some(n) => c == '.' && is_hangul(n) && text[..i].ends_with('다'),
                };
                if ends {
                    k = j - 1;
                    true
                } else {
                    false
                }
            }
            _ => false,
        };
        if end_here {
            let e = chars[k].0 + chars[k].1.len_utf8();
            push(start, e, &mut spans);
            start = e;
        }
        k += 1;
    }
    push(start, text.len(), &mut spans);
    spans
}

/// Whether the word ending right before the '.' at byte `dot` is an abbreviation, an initial or a dotted
/// initialism ("U.S").
fn abbreviation_before(text: &str, dot: usize) -> bool {
    let before = &text[..dot];
    let word = match before.char_indices().rev().find(|(_, c)| !(c.is_alphanumeric() || *c == '.')) {
        Some((i, c)) => &before[i + c.len_utf8()..],
        None => before,
    };
    if word.is_empty() {
        return false;
    }
    let initial = word.chars().count() == 1 && word.chars().all(char::is_uppercase);
    let initialism = word.contains('.') && word.split('.').all(|p| p.chars().count() <= 1);
    initial || initialism || ABBREVIATIONS.contains(&word.to_lowercase().as_str())
}

pub fn sentences(text: &str) -> Vec<&str> {
    sentence_spans(text).into_iter().map(|(s, e)| &text[s..e]).collect()
}

/// At most `max_chars` characters of `text` around the byte range `focus`, with "…" where cut, so a long
/// sentence is quoted where its evidence is.
pub fn excerpt(text: &str, focus: (usize, usize), max_chars: usize) -> String {
    let total = text.chars().count();
    if total <= max_chars {
        return text.to_string();
    }
    let f_start = text[..focus.0.min(text.len())].chars().count();
    let f_end = text[..focus.1.min(text.len())].chars().count();
    let room = max_chars.saturating_sub(2);
    let span = f_end.saturating_sub(f_start);
    let lead = room.saturating_sub(span) / 3; // more context after the focus than before
    let mut from = f_start.saturating_sub(lead);
    let to = (from + room).min(total);
    from = to.saturating_sub(room);
    let mut out = String::new();
    if from > 0 {
        out.push('…');
    }
    out.extend(text.chars().skip(from).take(to - from));
    let mut out = out.trim_end().to_string();
    if to < total {
        out.push('…');
    }
    out
}

/// Common capitalised words that are not names when they open a sentence (and a few that never are).
const STOPWORDS: &[&str] = &[
    "a",
    "about",
    "according",
    "after",
    "again",
    "all",
    "also",
    "although",
    "an",
    "and",
    "any",
    "as",
    "at",
    "because",
    "before",
    "both",
    "but",
    "by",
    "can",
    "despite",
    "during",
    "each",
    "even",
    "every",
    "for",
    "from",
    "he",
    "her",
    "here",
    "his",
    "how",
    "however",
    "i",
    "if",
    "in",
    "into",
    "is",
    "it",
    "its",
    "just",
    "last",
    "many",
    "meanwhile",
    "more",
    "most",
    "mr",
    "mrs",
    "ms",
    "dr",
    "much",
    "my",
    "next",
    "no",
    "not",
    "now",
    "of",
    "on",
    "once",
    "one",
    "only",
    "or",
    "other",
    "our",
    "over",
    "since",
    "so",
    "some",
    "still",
    "such",
    "that",
    "the",
    "their",
    "then",
    "there",
    "these",
    "they",
    "this",
    "those",
    "though",
    "three",
    "through",
    "to",
    "today",
    "tomorrow",
    "two",
    "under",
    "unlike",
    "until",
    "we",
    "what",
    "when",
    "where",
    "whether",
    "which",
    "while",
    "who",
    "why",
    "will",
    "with",
    "without",
    "yesterday",
    "yet",
    "you",
    "your",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
    "ceo",
    "am",
    "pm",
    "tv",
    "ok",
    "said",
    "says",
    // Titles before a name and company suffixes after it: "President Donald Trump" is "donald trump".
    "president",
    "chancellor",
    "minister",
    "prime",
    "governor",
    "chairman",
    "chairwoman",
    "chair",
    "secretary",
    "senator",
    "sen",
    "rep",
    "gov",
    "inc",
    "corp",
    "co",
    "ltd",
    "plc",
    "llc",
];

/// Titles before a name: where one is inside a capitalised run it separates two names.
const TITLES: &[&str] = &[
    "president",
    "chancellor",
    "minister",
    "governor",
    "chairman",
    "chairwoman",
    "chair",
    "secretary",
    "senator",
    "ceo",
];

/// Lowercase words allowed inside a capitalised name ("Bank of England", "Banque de France").
const CONNECTORS: &[&str] = &["of", "de", "du", "des", "da", "von", "van", "der", "la", "le", "al", "del"];

/// Korean particles stripped from the end of a noun (longest first).
const PARTICLES: &[&str] = &["에서", "으로", "은", "는", "이", "가", "을", "를", "의", "에", "로", "과", "와", "도"];

/// Endings of Korean verbs and adjectives (after particle stripping), which are not nouns. Single syllables
/// like 고/서/면 are left out: too many nouns end with them (재고, 보고서, 국면).
const VERB_ENDINGS: &[&str] = &[
    "하고", "했고", "되고", "하며", "으며", "이며", "하면", "으면", "지만", "는데", "하는", "되는", "있는", "없는",
    "하게", "하기", "하여", "해서", "겠", "했",
];

/// Syllables before a final 다 that make a verb form (인상한다, 있다, 이다); a past tense (했다, 올랐다) is
/// recognised by its ㅆ final consonant. Nouns ending in 다 (캐나다, 바다) pass.
const VERB_BEFORE_DA: &[char] =
    &['한', '된', '있', '없', '이', '린', '진', '난', '는', '운', '은', '간', '온', '친', '킨', '든', '하', '되'];

fn is_verb_form(noun: &str) -> bool {
    if VERB_ENDINGS.iter().any(|e| noun.ends_with(e)) {
        return true;
    }
    let mut rev = noun.chars().rev();
    if rev.next() != Some('다') {
        return false;
    }
    rev.next().is_some_and(|c| VERB_BEFORE_DA.contains(&c) || (is_hangul(c) && (c as u32 - 0xAC00) % 28 == 20))
}

const KOREAN_STOPWORDS: &[&str] = &[
    "이번",
    "지난",
    "오늘",
    "내일",
    "어제",
    "올해",
    "지난해",
    "이날",
    "그러나",
    "하지만",
    "또한",
    "따라",
    "대해",
    "위해",
    "통해",
    "관련",
    "이후",
    "가운데",
    "이상",
    "이하",
    "정도",
    "경우",
    "때문",
    "기자",
    "그는",
    "그리고",
    "현재",
    "월요일",
    "화요일",
    "수요일",
    "목요일",
    "금요일",
    "토요일",
    "일요일",
    "대통령",
    "장관",
    "총리",
];

/// A token of an entity scan: a run of spaced-script word characters (with internal '.', '\'', '-', '&'), or a
/// run of Hangul syllables.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Tok<'a> {
    Word(&'a str),
    Hangul(&'a str),
}

fn tokens(s: &str) -> Vec<(Tok<'_>, usize, usize)> {
    let mut out = Vec::new();
    let chars: Vec<(usize, char)> = s.char_indices().collect();
    let mut k = 0;
    while k < chars.len() {
        let (i, c) = chars[k];
        if is_word_char(c) {
            let mut j = k + 1;
            while j < chars.len() {
                let cj = chars[j].1;
                let internal =
                    matches!(cj, '.' | '\'' | '’' | '-' | '&') && chars.get(j + 1).is_some_and(|n| is_word_char(n.1));
                if is_word_char(cj) || internal {
                    j += if internal { 2 } else { 1 };
                } else {
                    break;
                }
            }
            let e = chars.get(j).map(|x| x.0).unwrap_or(s.len());
            out.push((Tok::Word(&s[i..e]), i, e));
            k = j;
        } else if is_hangul(c) {
            let mut j = k + 1;
            while j < chars.len() && is_hangul(chars[j].1) {
                j += 1;
            }
            let e = chars.get(j).map(|x| x.0).unwrap_or(s.len());
            out.push((Tok::Hangul(&s[i..e]), i, e));
            k = j;
        } else {
            k += 1;
        }
    }
    out
}

fn is_acronym(w: &str) -> bool {
    let n = w.chars().count();
    (2..=5).contains(&n)
        && w.chars().next().is_some_and(|c| c.is_alphabetic())
        && w.chars().all(|c| c.is_uppercase() || c.is_ascii_digit())
        && w.chars().filter(|c| c.is_alphabetic()).count() >= 2
}

/// "U.S" / "U.K" as written before the final dot.
fn is_initialism(w: &str) -> bool {
    w.contains('.') && w.split('.').all(|p| p.chars().count() == 1 && p.chars().all(|c| c.is_uppercase()))
}

fn normal_word(w: &str) -> String {
    let w = w.strip_suffix("'s").or_else(|| w.strip_suffix("’s")).unwrap_or(w);
    w.to_lowercase()
}

fn korean_noun(tok: &str) -> Option<String> {
    let syllables = |s: &str| s.chars().count();
    let mut noun = tok;
    for p in PARTICLES {
        if let Some(rest) = tok.strip_suffix(p) {
            if syllables(rest) >= 2 {
                noun = rest;
                break;
            }
        }
    }
    let n = syllables(noun);
    if !(2..=10).contains(&n) || is_verb_form(noun) || KOREAN_STOPWORDS.contains(&noun) {
        return None;
    }
    Some(noun.to_string())
}

/// Emits one capitalised run (see `entities`): connectors and stopwords trimmed from its ends; a single word only
/// when it does not open the sentence.
fn flush_run(run: &mut Vec<&str>, initial: bool, out: &mut Vec<String>) {
    // A title inside a run separates two names: "Bank of England Governor Mark Carney".
    if let Some(k) = (1..run.len()).find(|&k| TITLES.contains(&normal_word(run[k]).as_str())) {
        let mut tail: Vec<&str> = run.split_off(k + 1);
        run.truncate(k);
        flush_run(run, initial, out);
        flush_run(&mut tail, false, out);
        return;
    }
    while run.last().is_some_and(|w| CONNECTORS.contains(w)) {
        run.pop();
    }
    let mut initial = initial;
    while run.first().is_some_and(|w| STOPWORDS.contains(&normal_word(w).as_str())) {
        run.remove(0);
        initial = false;
    }
    // "May" ends "Theresa May" more often than a month ends a name.
    while run.last().is_some_and(|w| w != &"May" && STOPWORDS.contains(&normal_word(w).as_str())) {
        run.pop();
    }
    match run.len() {
        0 => {}
        1 => {
            let w = run[0];
            // Acronyms are emitted on their own; a lone capitalised word opening a sentence is ambiguous.
            if !initial && !is_acronym(w) && !is_initialism(w) && w.chars().count() >= 2 {
                out.push(normal_word(w));
            }
        }
        // Longer runs are lists or headlines, not one name.
        2..=6 => out.push(run.iter().map(|w| normal_word(w)).collect::<Vec<_>>().join(" ")),
        _ => {}
    }
    run.clear();
}

/// Names and terms in `text` (its first 20,000 characters), lowercased, in order of appearance, one item per
/// occurrence: capitalised word sequences ("bank of england"; a single capitalised word only when it does not open
/// the sentence), acronyms and tickers of 2-5 capitals ("fomc", "u.s."), Korean nouns of 2+ syllables with their
/// particle stripped ("한국은행이" -> "한국은행"). Headline-style all-capitals sentences give no capitalised names.
pub fn entities(text: &str) -> Vec<String> {
    let mut out = names(text);
    out.retain(|e| !BOILERPLATE.contains(&e.as_str()));
    out
}

/// Bylines, agencies and page furniture: named by every article of an outlet, they say nothing about the story.
const BOILERPLATE: &[&str] = &[
    "tass", "ap", "afp", "reuters", "rt", "dw", "cnn", "bbc", "abc", "abc news", "rte", "xinhua", "yonhap", "kyodo",
    "al jazeera", "huffpost", "huffington post", "china daily", "associated press", "getty images", "ap photo",
    "read", "more", "read more", "photo", "video", "copyright", "연합뉴스", "뉴스1", "뉴시스",
];

fn names(text: &str) -> Vec<String> {
    let text = prefix_chars(text, 20_000);
    let mut out = Vec::new();
    for (ss, se) in sentence_spans(text) {
        let sentence = &text[ss..se];
        let toks = tokens(sentence);
        let words: Vec<&str> =
            toks.iter().filter_map(|t| if let Tok::Word(w) = t.0 { Some(w) } else { None }).collect();
        let lettered: Vec<&&str> =
            words.iter().filter(|w| w.chars().filter(|c| c.is_alphabetic()).count() >= 2).collect();
        let shouting = lettered.len() >= 3
            && lettered.iter().filter(|w| w.chars().all(|c| !c.is_lowercase())).count() * 10 >= lettered.len() * 6;
        // A Title Case headline capitalises every word but the short ones: its capitals say nothing about names.
        let long: Vec<&&&str> = lettered.iter().filter(|w| w.chars().count() >= 4).collect();
        let title_case = long.len() >= 4 && long.iter().all(|w| w.starts_with(|c: char| c.is_uppercase()));

        // Capitalised runs: (tokens, whether the run starts the sentence).
        let mut run: Vec<&str> = Vec::new();
        let mut run_initial = false;
        let mut prev_end: Option<usize> = None;
        let mut first_word = true;
        for &(tok, s, e) in &toks {
            match tok {
                Tok::Word(w) => {
                    let gap = prev_end.map(|p| &sentence[p..s]).unwrap_or("");
                    let joined = gap.chars().all(char::is_whitespace);
                    if !joined && !run.is_empty() {
                        flush_run(&mut run, run_initial, &mut out);
                    }
                    if !shouting {
                        if is_acronym(w) {
                            out.push(w.to_lowercase());
                        } else if is_initialism(w) {
                            out.push(format!("{}.", w.to_lowercase()));
                        }
                    }
                    let capital = w.chars().next().is_some_and(|c| c.is_uppercase());
                    if capital && !shouting && !title_case {
                        if run.is_empty() {
                            run_initial = first_word;
                        }
                        run.push(w);
                    } else if !run.is_empty() && CONNECTORS.contains(&w) {
                        run.push(w);
                    } else if !run.is_empty() {
                        flush_run(&mut run, run_initial, &mut out);
                    }
                    first_word = false;
                    prev_end = Some(e);
                }
                Tok::Hangul(h) => {
                    if !run.is_empty() {
                        flush_run(&mut run, run_initial, &mut out);
                    }
                    if let Some(n) = korean_noun(h) {
                        out.push(n);
                    }
                    first_word = false;
                    prev_end = Some(e);
                }
            }
        }
        flush_run(&mut run, run_initial, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_words_in_latin_scripts() {
        assert!(!contains_term("supermarkets rallied", "markets"));
        assert!(contains_term("stock markets rallied", "markets"));
        assert!(!contains_term("the bond was rated aaa", "rate"));
        assert!(contains_term("the rate, a record", "rate"));
        assert!(contains_term("non-farm payrolls rose", "payrolls"));
        assert!(contains_term("apple's shares", "apple"));
        assert!(contains_term("the bank of england said", "bank of england"));
        assert!(!contains_term("s&p 5000 points", "s&p 500"));
        assert!(contains_term("(fomc)", "fomc"));
        assert!(!contains_term("рынки", "рын"));
        assert!(contains_term("акции и рынки", "рынки"));
        // A Latin term followed by a Korean particle is still a whole word.
        assert!(contains_term("fed가 금리를", "fed"));
    }

    #[test]
    fn substrings_in_unspaced_scripts() {
        assert!(contains_term("한국은행이 기준금리를 인상했다", "금리"));
        assert!(contains_term("한국은행이 기준금리를 인상했다", "한국은행"));
        assert!(contains_term("日本銀行は金利を", "金利"));
        assert!(!contains_term("한국은행이", "금리"));
    }

    #[test]
    fn find_term_skips_partial_words_and_reports_bytes() {
        let hay = "supermarkets and markets";
        assert_eq!(find_term(hay, "markets"), Some((17, 24)));
        assert_eq!(find_term("aaa a", "a"), Some((4, 5)));
        assert_eq!(find_term("x", ""), None);
        let k = "오늘 금리를";
        let (s, e) = find_term(k, "금리").unwrap();
        assert_eq!(&k[s..e], "금리");
    }

    #[test]
    fn normalises_keeping_offsets() {
        assert_eq!(normalize("Bank of\n  England’s “rates”"), "Bank of England's \"rates\"");
        let t = "İSTANBUL Fed";
        let l = lowercase_same_layout(t);
        assert_eq!(l.len(), t.len());
        assert!(l.ends_with(" fed"));
    }

    #[test]
    fn splits_sentences() {
        let t = "The U.S. economy grew 3.5% in Q3. Mr. Smith said rates would rise! Did they? Yes.\nNew line";
        assert_eq!(
            sentences(t),
            vec![
                "The U.S. economy grew 3.5% in Q3.",
                "Mr. Smith said rates would rise!",
                "Did they?",
                "Yes.",
                "New line"
            ]
        );
        let k = "한국은행이 기준금리를 인상했다. 시장은 놀랐다.그러나 환율은 안정적이었다.";
        assert_eq!(
            sentences(k),
            vec!["한국은행이 기준금리를 인상했다.", "시장은 놀랐다.", "그러나 환율은 안정적이었다."]
        );
        assert_eq!(
            sentences("日本銀行は金利を上げた。市場は驚いた。"),
            vec!["日本銀行は金利を上げた。", "市場は驚いた。"]
        );
        assert_eq!(
            sentences("He said \"rates will rise.\" Then he left."),
            vec!["He said \"rates will rise.\"", "Then he left."]
        );
        assert_eq!(sentences("  "), Vec::<&str>::new());
    }

    #[test]
    fn excerpts_around_the_focus() {
        let s = "a".repeat(300) + " FOCUS " + &"b".repeat(300);
        let f = s.find("FOCUS").unwrap();
        let e = excerpt(&s, (f, f + 5), 100);
        assert!(e.contains("FOCUS"));
        assert!(e.starts_with('…') && e.ends_with('…'));
        assert!(e.chars().count() <= 100);
        assert_eq!(excerpt("short", (0, 5), 100), "short");
    }

    #[test]
    fn extracts_entities() {
        let t = "The Bank of England held rates. Mr. Carney said the FOMC and the U.S. Treasury matter. \
                 Markets fell as Apple's shares dropped.";
        let e = entities(t);
        assert!(e.contains(&"bank of england".to_string()), "{e:?}");
        assert!(e.contains(&"carney".to_string()), "{e:?}");
        assert!(e.contains(&"fomc".to_string()), "{e:?}");
        assert!(e.contains(&"u.s.".to_string()), "{e:?}");
        assert!(e.contains(&"apple".to_string()), "{e:?}");
        let p = entities("Shares rose, President Donald Trump said, and Tesla Inc. gained.");
        assert!(p.contains(&"donald trump".to_string()) && p.contains(&"tesla".to_string()), "{p:?}");
        assert_eq!(entities("In March, Prime Minister Theresa May wrote."), vec!["theresa may"]);
        assert!(!e.iter().any(|x| x == "the" || x == "markets" || x == "mr"), "{e:?}");
        let k = entities("한국은행이 기준금리를 인상했다. 삼성전자는 반도체 투자를 늘린다고 밝혔다.");
        for n in ["한국은행", "기준금리", "삼성전자", "반도체", "투자"] {
            assert!(k.contains(&n.to_string()), "{n} missing from {k:?}");
        }
        assert!(!k.iter().any(|x| x.ends_with('다')), "{k:?}");
        let k = entities("캐나다 중앙은행은 북한 문제를 논의했다.");
        for n in ["캐나다", "중앙은행", "북한", "문제"] {
            assert!(k.contains(&n.to_string()), "{n} missing from {k:?}");
        }
        // An all-capitals headline yields no capitalised names.
        assert!(entities("STOCKS FALL AS OIL PRICES SLUMP AGAIN").is_empty());
        assert_eq!(entities("Fed Raises Rates As Inflation Picks Up"), Vec::<String>::new());
        assert_eq!(
            entities("Bank of England Governor Mark Carney said rates would rise."),
            vec!["bank of england", "mark carney"]
        );
    }
}
