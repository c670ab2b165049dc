//! The language a brief is written in (`language` per profile): the built-in brief's headings, labels and counts.
//! The news text itself stays as published; an LLM is asked to answer in the profile's language.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    #[default]
    En,
    Ko,
}

impl Language {
    pub fn as_str(self) -> &'static str {
        match self {
            Language::En => "en",
            Language::Ko => "ko",
        }
    }

    /// The language's name, as a prompt names it.
    pub fn name(self) -> &'static str {
        match self {
            Language::En => "English",
            Language::Ko => "Korean",
        }
    }

    /// A label of the brief in this language (the English text is the key; unknown keys stay English).
    pub fn label(self, en: &str) -> &str {
        if self == Language::En {
            return en;
        }
        KO.iter().find(|(k, _)| *k == en).map(|(_, v)| *v).unwrap_or(en)
    }

    /// "1 article" / "3 articles" / "기사 3건".
    pub fn count(self, n: usize, noun: Noun) -> String {
        match self {
            Language::En => {
                let (one, many) = match noun {
                    Noun::Article => ("article", "articles"),
                    Noun::Source => ("source", "sources"),
                    Noun::Story => ("story", "stories"),
                    Noun::Claim => ("claim", "claims"),
                };
                format!("{n} {}", if n == 1 { one } else { many })
            }
            Language::Ko => match noun {
                Noun::Article => format!("기사 {n}건"),
                Noun::Source => format!("출처 {n}곳"),
                Noun::Story => format!("이슈 {n}건"),
                Noun::Claim => format!("주장 {n}건"),
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Noun {
    Article,
    Source,
    Story,
    Claim,
}

impl std::str::FromStr for Noun {
    type Err = String;
    fn from_str(s: &str) -> Result<Noun, String> {
        Ok(match s {
            "article" => Noun::Article,
            "source" => Noun::Source,
            "story" => Noun::Story,
            "claim" => Noun::Claim,
            other => return Err(format!("unknown noun {other:?}")),
        })
    }
}

/// Korean labels of the built-in brief (the English label is the key).
const KO: &[(&str, &str)] = &[
    ("Market brief", "시장 브리핑"),
    ("What matters for markets", "시장에 중요한 것"),
    ("built-in analysis", "내장 분석"),
    ("Nothing significant", "특이 사항 없음"),
    ("single source, unconfirmed", "단일 출처, 미확인"),
    ("UPDATE", "업데이트"),
    ("reported before", "이전 보고"),
    ("Update to", "이전 이슈의 업데이트"),
    ("new", "신규"),
    ("Continuing coverage", "이어지는 보도"),
    ("Analogue", "과거 유사 사례"),
    ("similarity", "유사도"),
    ("No close analogue.", "가까운 과거 사례 없음."),
    ("Still developing, nothing new", "진행 중, 새 소식 없음"),
    ("What to watch", "주목할 일정"),
    ("week of", "주간"),
    ("month of", "월간"),
    ("Since the previous brief", "이전 브리핑 이후"),
    ("Outlook", "전망"),
    ("Impact", "영향"),
    ("left out", "근거가 인용 기사에 없어 제외됨"),
    ("Next", "다음 일정"),
    ("Trending", "급부상 키워드"),
    ("Also", "그 밖에"),
    ("No market-moving story in this window; the main story", "이 기간에 시장을 움직인 이슈 없음; 주요 이슈"),
    ("New since then", "새 이슈"),
    ("Developing", "진행 중"),
    ("No longer in the news", "보도가 끊긴 이슈"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_counts() {
        assert_eq!(Language::Ko.label("What matters for markets"), "시장에 중요한 것");
        assert_eq!(Language::En.label("What matters for markets"), "What matters for markets");
        assert_eq!(Language::Ko.label("not a label"), "not a label");
        assert_eq!(Language::En.count(1, Noun::Source), "1 source");
        assert_eq!(Language::En.count(2, Noun::Story), "2 stories");
        assert_eq!(Language::Ko.count(3, Noun::Article), "기사 3건");
        let doc: super::super::doc::AnalysisDoc = serde_json::from_str(r#"{"profile":"p","mode":"builtin","model":null,"as_of":0,"window_from":0,"window_to":0,"window_articles":0,"summary":"","nothing_significant":true,"stories":[],"changes":[],"continuing":[],"outlook":null,"note":null,"previous_analysis_id":null}"#).unwrap();
        assert_eq!(doc.language, Language::En, "older documents are English");
    }
}
