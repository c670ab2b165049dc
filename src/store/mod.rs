//! The database: newsd's spine. Every stage reads the previous stage's durable state from here and writes its own.
//!
//! One `sqlx::AnyPool` serves SQLite (embedded default) and PostgreSQL. Queries use `$N` placeholders, which both
//! accept, and only portable types (i64 unix-millisecond times, text, blobs), so the stages never care which
//! backend they run on. Each backend has its own migration folder (`migrations/sqlite`, `migrations/postgres`)
//! with the same tables; migrations are embedded in the binary and applied at open.

mod analysis;
mod articles;
mod cluster;
mod embeddings;
mod sources;
mod status;

pub use analysis::{AnalysisRow, NewAnalysis, NewNotification, NotificationRow, OutboxCounts};
pub use cluster::{embed_lease_kind, EmbeddingChange, FireClaim, Heartbeat, NodeRow, SOURCE_LEASE};
pub use articles::{ArticleFilter, ArticleRow, NewArticle, PageUpdate};
pub use embeddings::{vector_from_bytes, vector_to_bytes, ModelRow, PendingArticle};
mod daemon;
pub use daemon::{DaemonState, JobRun, JobSummary, OpsAlert, ReloadEvent};
pub use sources::{FetchOutcome, SourceHealth, SourceState};
pub use status::{FetchStatus, NotificationStatus, PageStatus, ReloadStatus, RunOutcome};

use std::path::Path;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::AnyPool;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("migrating database {url}: {source}")]
    Migrate { url: String, source: sqlx::migrate::MigrateError },
    #[error("cannot create database directory {path}: {source}")]
    CreateDir { path: String, source: std::io::Error },
    #[error("unsupported database URL {0:?} (expected sqlite://PATH or postgres://...)")]
    UnsupportedUrl(String),
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    url: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("backend", &self.backend).field("url", &redact(&self.url)).finish()
    }
}

/// Hides a password in a database URL for logs and errors.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("****"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

impl Store {
    /// Opens (creating a SQLite file and its directory on first use) and migrates the database.
    pub async fn open(url: &str, max_connections: u32, busy_timeout: Duration) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_string()));
        };
        let mut connect_url = url.to_string();
        if backend == Backend::Sqlite {
            let path = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
            let path = path.split('?').next().unwrap_or(path);
            if path != ":memory:" {
                if let Some(dir) = Path::new(path).parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .map_err(|source| StoreError::CreateDir { path: dir.display().to_string(), source })?;
                }
            }
            if !connect_url.contains("mode=") {
                connect_url.push_str(if connect_url.contains('?') { "&mode=rwc" } else { "?mode=rwc" });
            }
        }
        let busy_ms = busy_timeout.as_millis() as i64;
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { max_connections.max(1) } else { max_connections.max(2) })
            .acquire_timeout(Duration::from_secs(60))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if conn.backend_name().eq_ignore_ascii_case("sqlite") {
                        // WAL lets readers run during a write; busy_timeout makes writers wait instead of failing;
                        // synchronous=NORMAL is durable across process crashes in WAL mode.
                        sqlx::query("PRAGMA journal_mode = WAL").execute(&mut *conn).await?;
                        sqlx::query(&format!("PRAGMA busy_timeout = {busy_ms}")).execute(&mut *conn).await?;
                        sqlx::query("PRAGMA foreign_keys = ON").execute(&mut *conn).await?;
                        sqlx::query("PRAGMA synchronous = NORMAL").execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            })
            .connect(&connect_url)
            .await
            .map_err(|source| StoreError::Connect { url: redact(url), source })?;
        let migrator = match backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator.run(&pool).await.map_err(|source| StoreError::Migrate { url: redact(url), source })?;
        Ok(Store { pool, backend, url: url.to_string() })
    }

    /// Opens the database the config names.
    pub async fn from_config(config: &crate::config::Config) -> anyhow::Result<Store> {
        let url = config.database_url()?;
        Ok(Store::open(&url, config.store.max_connections, config.store.busy_timeout).await?)
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Size of the database file(s) in bytes (SQLite only; None for PostgreSQL).
    pub fn file_size(&self) -> Option<u64> {
        if self.backend != Backend::Sqlite {
            return None;
        }
        let path = self.url.trim_start_matches("sqlite://").split('?').next()?.to_string();
        let main = std::fs::metadata(&path).ok()?.len();
        let wal = std::fs::metadata(format!("{path}-wal")).map(|m| m.len()).unwrap_or(0);
        Some(main + wal)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Single i64 from a query (counts, max ids; NULL reads as 0). Raw SQL: for this crate's own tests only; the
    /// rest of newsd (and callers outside it) use the typed methods.
    #[cfg(test)]
    pub(crate) async fn scalar_i64(&self, sql: &str) -> Result<i64> {
        Ok(sqlx::query_scalar::<_, Option<i64>>(sql).fetch_one(&self.pool).await?.unwrap_or(0))
    }
}

/// Current time in unix milliseconds (the store's time unit).
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Builds "$start, $start+1, ..." placeholders for an IN list.
pub(crate) fn placeholders(start: usize, n: usize) -> String {
    (start..start + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn opens_and_migrates_sqlite_file() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("sub/dir/newsd.db");
        let url = format!("sqlite://{}", db.display());
        let store = Store::open(&url, 2, Duration::from_secs(5)).await.unwrap();
        assert!(db.exists());
        assert_eq!(store.scalar_i64("SELECT COUNT(*) FROM articles").await.unwrap(), 0);
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(store.pool()).await.unwrap();
        assert_eq!(mode.to_lowercase(), "wal");
        store.close().await;
        // Re-opening applies no migration twice.
        let store = Store::open(&url, 2, Duration::from_secs(5)).await.unwrap();
        assert_eq!(store.scalar_i64("SELECT COUNT(*) FROM sources").await.unwrap(), 0);
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:****@h/db");
        assert_eq!(redact("sqlite://x.db"), "sqlite://x.db");
    }
}
