//! `[notify]` config section.
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    #[serde(default)]
    pub targets: Vec<TargetConfig>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    pub name: String,
}

impl NotifyConfig {
    /// Semantic checks; the error is (text to locate the line by, message).
    pub fn validate(&self) -> Result<(), (Option<String>, String)> {
        Ok(())
    }
}
