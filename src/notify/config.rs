//! `[notify]` config section: notification targets and the outbox dispatcher's retry policy.
//!
//! ```toml
//! [notify]
//! ops_target = "ops"            # optional: receives failures (dead letters, failing sources, LLM failures...)
//! max_attempts = 8              # attempts before a message is dead-lettered
//! backoff_base = "30s"          # first retry delay; doubles per attempt (with jitter) up to backoff_max
//! backoff_max = "1h"
//! retry_after_max = "1h"        # longest Retry-After honoured (a 429 with one is not counted as an attempt)
//! ops_alert_dedup = "1h"        # the same operations alert is raised at most once per this period
//! timeout = "15s"               # one HTTP request
//!
//! [[notify.targets]]
//! name = "team-slack"
//! kind = "slack"                # slack | discord | webhook
//! url_env = "NEWSD_SLACK_WEBHOOK_URL"
//!
//! [[notify.targets]]
//! name = "my-service"
//! kind = "webhook"
//! url_env = "NEWSD_WEBHOOK_URL"
//! secret_env = "NEWSD_WEBHOOK_SECRET"   # required for kind = "webhook": HMAC-SHA256 signing key
//! ```
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    #[serde(default)]
    pub targets: Vec<TargetConfig>,
    /// Target that receives operational alerts (must be one of `targets`); none when unset.
    #[serde(default)]
    pub ops_target: Option<String>,
    /// Attempts (sends) before a message is dead-lettered.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    #[serde(default = "default_backoff_base", with = "humantime_serde")]
    pub backoff_base: Duration,
    #[serde(default = "default_backoff_max", with = "humantime_serde")]
    pub backoff_max: Duration,
    #[serde(default = "default_retry_after_max", with = "humantime_serde")]
    pub retry_after_max: Duration,
    /// Whole-request timeout for one delivery.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Messages taken per dispatcher pass.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// The same operations alert (kind and message, or kind and key) is recorded and sent at most once per this
    /// period (the one repeat window of `ops`).
    #[serde(default = "default_alert_dedup", with = "humantime_serde")]
    pub ops_alert_dedup: Duration,
}

fn default_max_attempts() -> u32 {
    8
}
fn default_backoff_base() -> Duration {
    Duration::from_secs(30)
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(3600)
}
fn default_retry_after_max() -> Duration {
    Duration::from_secs(3600)
}
fn default_timeout() -> Duration {
    Duration::from_secs(15)
}
fn default_batch() -> usize {
    100
}
fn default_alert_dedup() -> Duration {
    Duration::from_secs(3600)
}

impl Default for NotifyConfig {
    fn default() -> Self {
        toml::from_str("").expect("empty notify config deserialises")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// Slack incoming webhook (Block Kit: at most 50 blocks, 3,000 characters per section).
    Slack,
    /// Discord webhook (embeds: 2,000 characters of content, 6,000 across a message's embeds).
    Discord,
    /// Any HTTP endpoint: JSON body signed with HMAC-SHA256 (see `notify` module docs for the headers).
    Webhook,
}

impl TargetKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            TargetKind::Slack => "slack",
            TargetKind::Discord => "discord",
            TargetKind::Webhook => "webhook",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    pub name: String,
    pub kind: TargetKind,
    /// Environment variable holding the webhook URL (URLs of Slack/Discord webhooks are secrets).
    pub url_env: String,
    /// Environment variable holding the HMAC key (required for `kind = "webhook"`).
    #[serde(default)]
    pub secret_env: Option<String>,
    /// Message template file in the prompts directory (default `message.j2`, built in).
    #[serde(default)]
    pub template: Option<String>,
    /// Display name for Slack/Discord messages.
    #[serde(default)]
    pub username: Option<String>,
}

impl NotifyConfig {
    pub fn target(&self, name: &str) -> Option<&TargetConfig> {
        self.targets.iter().find(|t| t.name == name)
    }

    /// Semantic checks; the error is (text to locate the line by, message).
    pub fn validate(&self) -> Result<(), (Option<String>, String)> {
        let mut names = std::collections::HashSet::new();
        for t in &self.targets {
            let needle = Some(format!("\"{}\"", t.name));
            if t.name.trim().is_empty() {
                return Err((Some("name = \"\"".into()), "a notification target has an empty name".into()));
            }
            if !names.insert(t.name.as_str()) {
                return Err((needle, format!("duplicate notification target name {:?}", t.name)));
            }
            if t.url_env.trim().is_empty() {
                return Err((needle, format!("notification target {:?}: url_env is empty", t.name)));
            }
            if t.kind == TargetKind::Webhook && t.secret_env.as_deref().map(str::trim).unwrap_or("").is_empty() {
                return Err((
                    needle,
                    format!("notification target {:?}: kind = \"webhook\" needs secret_env (the HMAC signing key)", t.name),
                ));
            }
        }
        if let Some(ops) = &self.ops_target {
            if self.target(ops).is_none() {
                return Err((Some("ops_target".into()), format!("notify.ops_target {ops:?} is not a configured target")));
            }
        }
        if self.max_attempts == 0 {
            return Err((Some("max_attempts".into()), "notify.max_attempts must be at least 1".into()));
        }
        if self.batch_size == 0 {
            return Err((Some("batch_size".into()), "notify.batch_size must be at least 1".into()));
        }
        if self.timeout.is_zero() {
            return Err((Some("timeout".into()), "notify.timeout must be more than 0".into()));
        }
        Ok(())
    }
}
