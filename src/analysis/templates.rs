//! Prompt and message templates: files in the prompts directory override the built-in ones of the same name.

use sha2::{Digest, Sha256};

use crate::config::Config;

/// Built-in templates (the files in the repository's `prompts/`, compiled in).
pub const BUILTIN: &[(&str, &str)] = &[
    ("market_analysis.j2", include_str!("../../prompts/market_analysis.j2")),
    ("message.j2", include_str!("../../prompts/message.j2")),
];

fn file_path(config: &Config, name: &str) -> Option<std::path::PathBuf> {
    if name.is_empty() || name.contains("..") || std::path::Path::new(name).is_absolute() {
        return None;
    }
    Some(config.resolve(&config.analysis.prompts_dir).join(name))
}

/// Whether a template of this name exists (file or built in).
pub fn exists(config: &Config, name: &str) -> bool {
    file_path(config, name).is_some_and(|p| p.is_file()) || BUILTIN.iter().any(|(n, _)| *n == name)
}

/// The template's source and its SHA-256 (hex).
pub fn load(config: &Config, name: &str) -> anyhow::Result<(String, String)> {
    let source = match file_path(config, name) {
        Some(p) if p.is_file() => {
            std::fs::read_to_string(&p).map_err(|e| anyhow::anyhow!("reading template {}: {e}", p.display()))?
        }
        _ => BUILTIN
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| s.to_string())
            .ok_or_else(|| anyhow::anyhow!("template {name:?} is neither built in nor in the prompts directory"))?,
    };
    let hash = hex::encode(Sha256::digest(source.as_bytes()));
    Ok((source, hash))
}
