//! `newsd status`: sources with health and counts, pending work (stable JSON document).

use serde::Serialize;

use crate::app::App;
use crate::store::SourceHealth;

#[derive(Debug, Serialize)]
pub struct Status {
    pub database: String,
    pub articles: i64,
    /// Articles whose full-text page is still to be fetched.
    pub pending_pages: i64,
    pub sources: Vec<SourceHealth>,
    /// Embeddings and the vector index (None when it cannot be read).
    pub index: Option<crate::index::IndexSummary>,
}

pub async fn collect(app: &App) -> anyhow::Result<Status> {
    let store = &app.store;
    // Make configured sources visible even before their first crawl.
    store.sync_sources(&app.config.sources).await?;
    let names: Vec<String> = app.config.sources.iter().map(|s| s.name.clone()).collect();
    Ok(Status {
        database: crate::store::redact(store.url()),
        articles: store.count_articles().await?,
        pending_pages: store.scalar_i64("SELECT COUNT(*) FROM articles WHERE page_status = 'pending'").await?,
        sources: store.source_health(&names).await?,
        index: crate::index::summary(app).await.ok(),
    })
}

pub fn print_human(s: &Status) {
    println!("database: {}", s.database);
    println!("articles: {} ({} pages pending)", s.articles, s.pending_pages);
    if let Some(ix) = &s.index {
        println!(
            "index: {} vectors ({}), model {}{}; {} articles to embed{}",
            ix.index_size.map(|n| n.to_string()).unwrap_or_else(|| "no saved".into()),
            ix.kind,
            ix.model_version.as_deref().unwrap_or("none"),
            ix.target_version.as_deref().map(|t| format!(" (re-embedding for {t})")).unwrap_or_default(),
            ix.pending_embeddings.map(|n| n.to_string()).unwrap_or_else(|| "?".into()),
            ix.model_error.as_deref().map(|e| format!("; model: {e}")).unwrap_or_default()
        );
    }
    println!("sources:");
    for src in &s.sources {
        let last = src.last_success_at.map(fmt_ms).unwrap_or_else(|| "never".into());
        let health = if src.healthy { "ok".to_string() } else { format!("FAILING x{}", src.consecutive_failures) };
        println!("  {:<24} {:>6} articles  {:<12} last ok {}", src.name, src.articles, health, last);
        if let (false, Some(e)) = (src.healthy, &src.last_error) {
            println!("  {:<24} error: {e}", "");
        }
    }
}

pub fn fmt_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map(|d| d.format("%Y-%m-%d %H:%M:%SZ").to_string()).unwrap_or_default()
}
