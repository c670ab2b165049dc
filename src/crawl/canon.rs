//! URL canonicalisation, so the same article reached through different links is stored once.

use url::Url;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonError {
    #[error("{0}: not a URL: {1}")]
    Parse(String, url::ParseError),
    /// Only web pages are articles: `file:`, `javascript:`, `data:`, `ftp:`... links are refused.
    #[error("{0}: not an http(s) link")]
    Scheme(String),
    #[error("{0}: no host")]
    NoHost(String),
}

/// Canonical form of an article URL: lower-case scheme and host, no default port, no fragment, no tracking
/// parameters (utm_* and the configured list), no empty query, `/` for an empty path. Only http(s) URLs with a
/// host are accepted.
pub fn canonicalize(raw: &str, tracking_params: &[String]) -> Result<String, CanonError> {
    let raw = raw.trim();
    let mut url = Url::parse(raw).map_err(|e| CanonError::Parse(raw.chars().take(200).collect(), e))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(CanonError::Scheme(url.scheme().to_string()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(CanonError::NoHost(raw.chars().take(200).collect()));
    }
    url.set_fragment(None);
    // Url::parse already lower-cases scheme and host and drops a port equal to the scheme's default.
    if url.query().is_some() {
        let kept: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(k, _)| {
                let k = k.to_ascii_lowercase();
                !k.starts_with("utm_") && !tracking_params.iter().any(|t| t.eq_ignore_ascii_case(&k))
            })
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        if kept.is_empty() {
            url.set_query(None);
        } else {
            url.query_pairs_mut().clear().extend_pairs(kept);
        }
    }
    Ok(url.to_string())
}

/// Resolves a possibly relative link against the document it came from.
pub fn resolve(base: &str, link: &str) -> Option<String> {
    let link = link.trim();
    if link.is_empty() {
        return None;
    }
    match Url::parse(link) {
        Ok(u) => Some(u.to_string()),
        Err(url::ParseError::RelativeUrlWithoutBase) => Url::parse(base).ok()?.join(link).ok().map(|u| u.to_string()),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(u: &str) -> String {
        canonicalize(u, &["fbclid".to_string(), "ref".to_string()]).unwrap()
    }

    #[test]
    fn drops_fragment_tracking_and_default_port() {
        assert_eq!(
            canon("HTTPS://News.Example.COM:443/a/b?id=7&utm_source=rss&utm_MEDIUM=x&fbclid=abc#comments"),
            "https://news.example.com/a/b?id=7"
        );
        assert_eq!(canon("http://example.com:80/x?utm_source=a"), "http://example.com/x");
        assert_eq!(canon("http://example.com"), "http://example.com/");
        assert_eq!(canon("http://example.com:8080/x"), "http://example.com:8080/x");
    }

    #[test]
    fn keeps_meaningful_query_in_order() {
        assert_eq!(canon("http://e.com/p?b=2&a=1&ref=home"), "http://e.com/p?b=2&a=1");
    }

    #[test]
    fn same_article_two_links_same_canonical() {
        assert_eq!(canon("https://e.com/story/1?utm_campaign=feed"), canon("https://e.com/story/1#top"));
    }

    #[test]
    fn refuses_links_that_are_not_web_pages() {
        for bad in ["file:///etc/passwd", "javascript:alert(1)", "data:text/html,<b>x</b>", "ftp://e.com/a", "mailto:a@e.com", "about:blank"] {
            assert!(matches!(canonicalize(bad, &[]), Err(CanonError::Scheme(_))), "{bad}");
        }
        assert!(canonicalize("not a url", &[]).is_err());
        assert_eq!(canonicalize("HTTPS://E.com/x", &[]).unwrap(), "https://e.com/x");
    }

    #[test]
    fn resolves_relative_links() {
        assert_eq!(resolve("http://e.com/feeds/rss.xml", "/news/1").unwrap(), "http://e.com/news/1");
        assert_eq!(resolve("http://e.com/feeds/rss.xml", "https://x.org/a").unwrap(), "https://x.org/a");
        assert!(resolve("http://e.com/", "   ").is_none());
    }
}
