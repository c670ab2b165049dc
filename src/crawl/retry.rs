//! Which fetch failures are worth retrying, and when (the back-off formula itself is `crate::net::backoff`).

use std::time::Duration;

use super::fetch::FetchError;
use crate::net::backoff;

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
        FetchError::Timeout(_) | FetchError::Connect { .. } | FetchError::Body { .. } | FetchError::Request { .. } => {
            RetryClass::Backoff
        }
        FetchError::NonPublic { .. }
        | FetchError::TooManyRedirects(_)
        | FetchError::TooLarge { .. }
        | FetchError::RobotsDisallowed(_)
        | FetchError::InvalidUrl(_)
        | FetchError::Other(_) => RetryClass::Permanent,
    }
}

/// The wait after a failure, as the fetcher's policy decides it.
pub fn delay_for(err: &FetchError, failures: u32, base: Duration, max: Duration, retry_after_max: Duration) -> Duration {
    match classify(err) {
        RetryClass::After(d) => d.min(retry_after_max),
        RetryClass::Backoff => backoff(failures, base, max),
        RetryClass::Permanent => backoff(failures.max(4), base, max),
    }
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
}
