//! The secrets of the notification targets: each target's webhook URL (for Slack and Discord the URL IS the
//! credential) and, for generic webhooks, the HMAC signing key.
//!
//! Config files only name environment variables (`url_env`, `secret_env`); [`Credentials::from_env`] reads them
//! once per dispatcher pass. Tests build [`Credentials`] directly instead of mutating the process environment
//! (`set_var` while other threads read the environment is undefined behaviour).
//!
//! The values are `secrecy` secrets (their `Debug` prints `[REDACTED]`), and [`TargetSecrets::redact`] strips them
//! from any text about to be logged, stored or forwarded (a receiver's error body may echo the URL).

use std::collections::HashMap;

use secrecy::{ExposeSecret, SecretString};

use super::config::{NotifyConfig, TargetConfig, TargetKind};
use super::NotifyError;

/// One target's secrets.
#[derive(Debug, Clone)]
pub struct TargetSecrets {
    url: SecretString,
    signing_key: Option<SecretString>,
}

impl TargetSecrets {
    pub fn new(url: impl Into<String>) -> TargetSecrets {
        TargetSecrets { url: SecretString::from(url.into()), signing_key: None }
    }

    /// The HMAC-SHA256 key of a generic webhook.
    pub fn with_signing_key(mut self, key: impl Into<String>) -> TargetSecrets {
        self.signing_key = Some(SecretString::from(key.into()));
        self
    }

    pub(crate) fn url(&self) -> &str {
        self.url.expose_secret()
    }

    pub(crate) fn signing_key(&self) -> Option<&[u8]> {
        self.signing_key.as_ref().map(|k| k.expose_secret().as_bytes())
    }

    /// `text` with every form of the URL that could appear in it (as given, as normalised by the URL parser, its
    /// path and query, where the token of a Slack/Discord URL lives) and the signing key replaced by `[redacted]`.
    pub fn redact(&self, text: &str) -> String {
        let url = self.url.expose_secret().trim();
        let mut needles: Vec<String> = vec![url.to_string()];
        if let Ok(parsed) = url::Url::parse(url) {
            needles.push(parsed.as_str().to_string());
            let mut tail = parsed.path().to_string();
            if let Some(q) = parsed.query() {
                tail.push('?');
                tail.push_str(q);
            }
            // A bare "/" carries no secret (and replacing it would mangle every path in the text).
            if tail.len() > 1 {
                needles.push(tail);
            }
        }
        if let Some(key) = &self.signing_key {
            needles.push(key.expose_secret().to_string());
        }
        // Longest first, so that the whole URL goes before its path does.
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        let mut out = text.to_string();
        for n in needles.iter().filter(|n| n.len() >= 4) {
            out = out.replace(n.as_str(), "[redacted]");
        }
        out
    }
}

#[derive(Debug, Clone)]
enum Resolved {
    Ok(TargetSecrets),
    /// The environment variable named by the config is unset, empty or not UTF-8.
    Missing { var: String },
}

/// The secrets of every target, by target name.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    by_target: HashMap<String, Resolved>,
}

impl Credentials {
    pub fn new() -> Credentials {
        Credentials::default()
    }

    /// Reads each target's `url_env` (and `secret_env`) now. A missing variable is not an error here: that
    /// target's messages fail (and are retried) with the variable's name, the others go out.
    pub fn from_env(cfg: &NotifyConfig) -> Credentials {
        let var = |name: &str| std::env::var(name).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let mut creds = Credentials::new();
        for t in &cfg.targets {
            let resolved = match var(&t.url_env) {
                None => Resolved::Missing { var: t.url_env.clone() },
                Some(url) => {
                    let secrets = TargetSecrets::new(url);
                    match t.secret_env.as_deref() {
                        Some(name) => match var(name) {
                            Some(key) => Resolved::Ok(secrets.with_signing_key(key)),
                            None if t.kind == TargetKind::Webhook => Resolved::Missing { var: name.to_string() },
                            None => Resolved::Ok(secrets),
                        },
                        None => Resolved::Ok(secrets),
                    }
                }
            };
            creds.by_target.insert(t.name.clone(), resolved);
        }
        creds
    }

    /// Sets a target's secrets (tests, or a caller with its own secret store).
    pub fn with(mut self, target: &str, secrets: TargetSecrets) -> Credentials {
        self.by_target.insert(target.to_string(), Resolved::Ok(secrets));
        self
    }

    /// The secrets to send to `target` with; a generic webhook needs its signing key.
    pub fn get(&self, target: &TargetConfig) -> Result<&TargetSecrets, NotifyError> {
        let missing = |var: &str| NotifyError::MissingEnv { target: target.name.clone(), var: var.to_string() };
        match self.by_target.get(&target.name) {
            Some(Resolved::Ok(s)) if target.kind == TargetKind::Webhook && s.signing_key.is_none() => {
                Err(missing(target.secret_env.as_deref().unwrap_or("secret_env")))
            }
            Some(Resolved::Ok(s)) => Ok(s),
            Some(Resolved::Missing { var }) => Err(missing(var)),
            None => Err(missing(&target.url_env)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_every_form_of_the_url_and_the_key() {
        let s = TargetSecrets::new("https://hooks.slack.com/services/T0/B0/XyZsecret").with_signing_key("k3y-value");
        let text = "error sending request for url (https://hooks.slack.com/services/T0/B0/XyZsecret): \
                    path /services/T0/B0/XyZsecret; key k3y-value; host hooks.slack.com";
        let out = s.redact(text);
        assert!(!out.contains("XyZsecret") && !out.contains("k3y-value"), "{out}");
        assert!(out.contains("host hooks.slack.com"), "the rest of the text stays: {out}");
        assert!(!format!("{s:?}").contains("XyZsecret"), "Debug does not print secrets");
    }

    #[test]
    fn webhook_targets_need_their_signing_key() {
        let t = TargetConfig {
            name: "h".into(),
            kind: TargetKind::Webhook,
            url_env: "U".into(),
            secret_env: Some("S".into()),
            template: None,
            username: None,
        };
        let creds = Credentials::new().with("h", TargetSecrets::new("http://x/y"));
        assert!(matches!(creds.get(&t), Err(NotifyError::MissingEnv { var, .. }) if var == "S"));
        assert!(matches!(Credentials::new().get(&t), Err(NotifyError::MissingEnv { var, .. }) if var == "U"));
        let creds = creds.with("h", TargetSecrets::new("http://x/y").with_signing_key("k"));
        assert_eq!(creds.get(&t).unwrap().signing_key(), Some(&b"k"[..]));
    }
}
