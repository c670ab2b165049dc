//! Which fetch failures are worth retrying, and when.

use std::time::Duration;

use rand::Rng;

use super::fetch::FetchError;

/// How a failure should be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryClass {
    /// The server said when to come back (429/503 with Retry-After).
    After(Duration),
    /// Transient (timeouts, connection errors, 5xx, 429 without Retry-After): exponential back-off.
    Backoff,
    /// Will not fix itself soon (404, robots.txt, malformed content, too large): back off at the maximum.
    Permanent,
}

pub fn classify(err: &FetchError) -> RetryClass {
    match err {
        FetchError::Status { retry_after: Some(d), .. } => RetryClass::After(*d),
        FetchError::HostBackoff { wait, .. } => RetryClass::After(*wait),
        FetchError::Status { code, .. } if *code == 429 || *code == 408 || *code >= 500 => RetryClass::Backoff,
        FetchError::Status { .. } => RetryClass::Permanent,
        FetchError::Timeout(_) | FetchError::Connect(_) | FetchError::Body(_) => RetryClass::Backoff,
        FetchError::TooManyRedirects(_)
        | FetchError::TooLarge { .. }
        | FetchError::RobotsDisallowed(_)
        | FetchError::InvalidUrl(_)
        | FetchError::Other(_) => RetryClass::Permanent,
    }
}

/// Delay before the next attempt after `failures` consecutive failures (1 = first failure):
/// base x 2^(failures-1), capped, with +-25% jitter so many sources failing together do not retry together.
pub fn backoff(failures: u32, base: Duration, max: Duration) -> Duration {
    let exp = failures.saturating_sub(1).min(30);
    let raw = base.saturating_mul(1u32 << exp.min(20)).min(max);
    let jitter = rand::rng().random_range(0.75..=1.25);
    raw.mul_f64(jitter).min(max)
}

/// The wait after a failure, as the fetcher's policy decides it.
pub fn delay_for(err: &FetchError, failures: u32, base: Duration, max: Duration, retry_after_max: Duration) -> Duration {
    match classify(err) {
        RetryClass::After(d) => d.min(retry_after_max),
        RetryClass::Backoff => backoff(failures, base, max),
        RetryClass::Permanent => backoff(failures.max(4), base, max),
    }
}

/// Parses a Retry-After header: delta-seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let delta = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies() {
        let s = |code, ra| FetchError::Status { code, url: "u".into(), retry_after: ra };
        assert_eq!(classify(&s(429, Some(Duration::from_secs(7)))), RetryClass::After(Duration::from_secs(7)));
        assert_eq!(classify(&s(429, None)), RetryClass::Backoff);
        assert_eq!(classify(&s(503, None)), RetryClass::Backoff);
        assert_eq!(classify(&s(500, None)), RetryClass::Backoff);
        assert_eq!(classify(&s(404, None)), RetryClass::Permanent);
        let deferred = FetchError::HostBackoff { url: "u".into(), wait: Duration::from_secs(42) };
        assert_eq!(classify(&deferred), RetryClass::After(Duration::from_secs(42)));
        assert_eq!(classify(&FetchError::Timeout("u".into())), RetryClass::Backoff);
        assert_eq!(classify(&FetchError::RobotsDisallowed("u".into())), RetryClass::Permanent);
        assert_eq!(classify(&FetchError::TooLarge { url: "u".into(), limit: 1 }), RetryClass::Permanent);
    }

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let base = Duration::from_secs(60);
        let max = Duration::from_secs(3600);
        for _ in 0..50 {
            let d1 = backoff(1, base, max);
            assert!(d1 >= Duration::from_secs(45) && d1 <= Duration::from_secs(75), "{d1:?}");
            let d3 = backoff(3, base, max);
            assert!(d3 >= Duration::from_secs(180) && d3 <= Duration::from_secs(300), "{d3:?}");
            assert!(backoff(30, base, max) <= max);
        }
        let distinct: std::collections::HashSet<_> = (0..20).map(|_| backoff(2, base, max).as_millis()).collect();
        assert!(distinct.len() > 1, "jitter varies the delay");
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        let future = (chrono::Utc::now() + chrono::Duration::seconds(90)).to_rfc2822();
        let d = parse_retry_after(&future).unwrap();
        assert!(d.as_secs() >= 85 && d.as_secs() <= 90, "{d:?}");
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon"), None);
    }
}
