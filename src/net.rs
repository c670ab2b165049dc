//! HTTP helpers every stage that talks to the network shares: Retry-After parsing, exponential back-off with
//! jitter, bounded response bodies and reqwest errors stripped of their URL (a webhook URL is a credential).

use std::time::{Duration, SystemTime};

/// A URL without its credentials and query (feed URLs may carry keys): scheme://host[:port]/path.
pub fn public_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            let had_query = u.query().is_some();
            u.set_query(None);
            u.set_fragment(None);
            if had_query {
                format!("{u}?…")
            } else {
                u.to_string()
            }
        }
        Err(_) => "(invalid URL)".into(),
    }
}

/// Parses a Retry-After value: delta-seconds (fractions accepted, as some servers send them) or an HTTP date
/// (IMF-fixdate, RFC 850 or asctime, via `httpdate`). A date in the past means "now".
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(u32::MAX as f64)));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(when.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO))
}

/// The Retry-After of a response, if it carries a valid one.
pub fn retry_after_of(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok().and_then(parse_retry_after)
}

/// Delay before the next attempt after `failures` consecutive failures (1 = first failure):
/// base x 2^(failures-1), capped at `max`, with jitter in [75%, 125%] (never above `max`) so that many
/// things failing together do not retry together.
pub fn backoff(failures: u32, base: Duration, max: Duration) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    let raw = base.saturating_mul(1u32 << exp).min(max);
    let jitter = rand::random_range(0.75..=1.25);
    raw.mul_f64(jitter).min(max)
}

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("response body larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("reading the response body: {0}")]
    Read(String),
}

/// Reads a response body, streaming, refusing more than `limit` bytes (a lying or absent Content-Length cannot make
/// it buffer more).
pub async fn read_body_limited(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, BodyError> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge { limit });
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| BodyError::Read(error_without_url(e)))? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A reqwest error as text with its URL removed and its causes appended ("error sending request: connection
/// refused"). Use this for anything stored, logged or forwarded when the URL may be a secret.
pub fn error_without_url(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut out = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after(" 5 "), Some(Duration::from_secs(5)));
        assert_eq!(parse_retry_after("1.5"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_retry_after("-3"), None);
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        let d = parse_retry_after(&later).unwrap();
        assert!(d > Duration::from_secs(100) && d <= Duration::from_secs(120), "{d:?}");
    }

    #[test]
    fn backoff_grows_and_caps() {
        let (base, max) = (Duration::from_secs(1), Duration::from_secs(60));
        let first = backoff(1, base, max);
        assert!(first >= Duration::from_millis(750) && first <= Duration::from_millis(1250));
        assert!(backoff(4, base, max) >= Duration::from_secs(6));
        assert!(backoff(100, base, max) <= max);
    }
}
