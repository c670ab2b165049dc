//! The cluster's shared state: nodes and their heartbeats, fire claims (each scheduled fire runs once), work leases,
//! per-host politeness, and the embeddings change sequence index replicas follow.
//!
//! Everything here is plain SQL both backends run: claims are `INSERT ... ON CONFLICT` whose outcome is the truth
//! (no read-then-write race), leases are upserts that only take a row whose lease ran out. PostgreSQL additionally
//! locks candidate rows `FOR UPDATE SKIP LOCKED` while claiming, so nodes claiming at once pass over each other's
//! rows instead of queueing on them. On SQLite (one machine, writers serialised) the same statements are trivially
//! local.

use serde::Serialize;

use super::daemon::RUNNING as RUNNING_SQL;
use super::{embeddings::vector_from_bytes, now_ms, placeholders, Backend, PendingArticle, Result, Store};
use crate::store::{PageStatus, RunOutcome};

/// One row of `nodes`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct NodeRow {
    pub id: String,
    pub host: String,
    pub pid: i64,
    pub version: String,
    pub started_at: i64,
    pub heartbeat_at: i64,
    /// Set at a clean stop.
    pub stopped_at: Option<i64>,
    pub http_addr: Option<String>,
    /// Embeddings changes its index has applied (the change sequence number).
    pub index_seq: i64,
    /// Changes stored but not yet in its index.
    pub index_lag: i64,
    pub index_vectors: i64,
    pub leases: i64,
}

const NODE_COLUMNS: &str =
    "id, host, pid, version, started_at, heartbeat_at, stopped_at, http_addr, index_seq, index_lag, index_vectors, leases";

/// Who took a scheduled fire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FireClaim {
    /// This node runs it.
    Won,
    /// Another node claimed it first.
    Taken { node: String },
}

/// A node's heartbeat: what it reports besides being alive.
#[derive(Debug, Clone, Default)]
pub struct Heartbeat {
    pub index_seq: i64,
    pub index_lag: i64,
    pub index_vectors: i64,
}

/// One change to a model version's vectors, in sequence order: a vector stored (inserted or replaced) or deleted.
#[derive(Debug, Clone)]
pub struct EmbeddingChange {
    pub seq: i64,
    pub article_id: i64,
    /// None: the vector was deleted.
    pub vector: Option<Vec<f32>>,
}

impl Store {
    // ---- nodes ----

    /// Records a node starting (or restarting: the same id takes its row over).
    pub async fn register_node(&self, id: &str, host: &str, pid: i64, version: &str) -> Result<()> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO nodes (id, host, pid, version, started_at, heartbeat_at) VALUES ($1, $2, $3, $4, $5, $5) \
             ON CONFLICT (id) DO UPDATE SET host = excluded.host, pid = excluded.pid, version = excluded.version, \
             started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at, stopped_at = NULL, \
             applied_at = NULL, http_addr = NULL, schedule = NULL, leases = 0",
        )
        .bind(id)
        .bind(host)
        .bind(pid)
        .bind(version)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// A node is alive; returns the leases it holds (counted here, reported with the row).
    pub async fn heartbeat(&self, id: &str, hb: &Heartbeat) -> Result<i64> {
        let leases: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM leases WHERE node = $1 AND expires_at > $2")
            .bind(id)
            .bind(now_ms())
            .fetch_one(self.pool())
            .await?;
        sqlx::query(
            "UPDATE nodes SET heartbeat_at = $2, index_seq = $3, index_lag = $4, index_vectors = $5, leases = $6 WHERE id = $1",
        )
        .bind(id)
        .bind(now_ms())
        .bind(hb.index_seq)
        .bind(hb.index_lag)
        .bind(hb.index_vectors)
        .bind(leases)
        .execute(self.pool())
        .await?;
        Ok(leases)
    }

    /// A clean stop: the node is no longer running (its schedule is cleared) and gives its leases back.
    pub async fn stop_node(&self, id: &str, pid: i64) -> Result<()> {
        sqlx::query("UPDATE nodes SET stopped_at = $3, schedule = NULL, http_addr = NULL, leases = 0 WHERE id = $1 AND pid = $2")
            .bind(id)
            .bind(pid)
            .bind(now_ms())
            .execute(self.pool())
            .await?;
        sqlx::query("DELETE FROM leases WHERE node = $1").bind(id).execute(self.pool()).await?;
        Ok(())
    }

    pub async fn nodes(&self) -> Result<Vec<NodeRow>> {
        Ok(sqlx::query_as(&format!("SELECT {NODE_COLUMNS} FROM nodes ORDER BY id")).fetch_all(self.pool()).await?)
    }

    /// Removes a stopped or dead node's row (an operator retiring a node); a live node's row is kept.
    pub async fn forget_node(&self, id: &str, alive_after: i64) -> Result<bool> {
        let r = sqlx::query("DELETE FROM nodes WHERE id = $1 AND (stopped_at IS NOT NULL OR heartbeat_at < $2)")
            .bind(id)
            .bind(alive_after)
            .execute(self.pool())
            .await?;
        Ok(r.rows_affected() > 0)
    }

    // ---- fire claims and run owners ----

    /// Claims a scheduled fire (job, fire time) for `node`: exactly one node wins it.
    pub async fn claim_fire(&self, job: &str, fire_at: i64, node: &str) -> Result<FireClaim> {
        let inserted = sqlx::query(
            "INSERT INTO fire_claims (job, fire_at, node, claimed_at) VALUES ($1, $2, $3, $4) ON CONFLICT (job, fire_at) DO NOTHING",
        )
        .bind(job)
        .bind(fire_at)
        .bind(node)
        .bind(now_ms())
        .execute(self.pool())
        .await?
        .rows_affected();
        if inserted == 1 {
            return Ok(FireClaim::Won);
        }
        let winner: Option<String> = sqlx::query_scalar("SELECT node FROM fire_claims WHERE job = $1 AND fire_at = $2")
            .bind(job)
            .bind(fire_at)
            .fetch_optional(self.pool())
            .await?;
        Ok(match winner {
            Some(w) if w == node => FireClaim::Won,
            Some(w) => FireClaim::Taken { node: w },
            // Deleted in between (claims older than a week are swept): nobody holds it now; claim again.
            None => Box::pin(self.claim_fire(job, fire_at, node)).await?,
        })
    }

    /// Forgets fire claims older than `before` (their fire times are long past; missed-run detection reads
    /// `job_runs`).
    pub async fn sweep_fire_claims(&self, before: i64) -> Result<u64> {
        Ok(sqlx::query("DELETE FROM fire_claims WHERE claimed_at < $1").bind(before).execute(self.pool()).await?.rows_affected())
    }

    /// A run of `job` still running on another live node (its id and node), for the cluster-wide overlap policy.
    pub async fn running_elsewhere(&self, job: &str, node: &str, alive_after: i64) -> Result<Option<(i64, String)>> {
        Ok(sqlx::query_as(&format!(
            "SELECT r.id, r.node FROM job_runs r JOIN nodes n ON n.id = r.node \
             WHERE r.{RUNNING_SQL} AND r.job = $1 AND r.node <> $2 AND n.stopped_at IS NULL AND n.heartbeat_at >= $3 \
             ORDER BY r.id LIMIT 1"
        ))
        .bind(job)
        .bind(node)
        .bind(alive_after)
        .fetch_optional(self.pool())
        .await?)
    }

    /// At a node's start: marks as interrupted the runs still `running` that this node left (it was killed), that
    /// no node owns (recorded before nodes existed), and those of dead nodes (see
    /// [`Store::interrupt_dead_nodes_runs`]). Never touches a live node's runs. Returns how many changed.
    pub async fn interrupt_runs_at_start(&self, node: &str, alive_after: i64, reason: &str) -> Result<u64> {
        self.interrupt_runs(node, true, alive_after, reason).await
    }

    /// Marks as interrupted the runs still `running` of nodes that stopped or whose heartbeat is older than
    /// `alive_after` (killed), and of nodes no longer listed; called by every live node on its heartbeat.
    pub async fn interrupt_dead_nodes_runs(&self, node: &str, alive_after: i64, reason: &str) -> Result<u64> {
        self.interrupt_runs(node, false, alive_after, reason).await
    }

    async fn interrupt_runs(&self, node: &str, own: bool, alive_after: i64, reason: &str) -> Result<u64> {
        let own_clause = if own { "node IS NULL OR node = $4 OR " } else { "" };
        let r = sqlx::query(&format!(
            "UPDATE job_runs SET outcome = $1, finished_at = $2, error = $3 WHERE {RUNNING_SQL} AND ({own_clause}\
             node IN (SELECT id FROM nodes WHERE id <> $4 AND (stopped_at IS NOT NULL OR heartbeat_at < $5)) \
             OR node NOT IN (SELECT id FROM nodes))"
        ))
        .bind(RunOutcome::Interrupted)
        .bind(now_ms())
        .bind(reason)
        .bind(node)
        .bind(alive_after)
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected())
    }

    // ---- leases ----

    /// Takes (or renews) the lease on (kind, key) for `holder` unless another holder's lease is still running.
    pub async fn claim_lease(&self, kind: &str, key: i64, holder: &str, node: &str, ttl_ms: i64) -> Result<bool> {
        upsert_lease(self.pool(), kind, key, holder, node, now_ms(), ttl_ms).await
    }

    /// The node holding a live lease on (kind, key), if any.
    pub async fn lease_holder(&self, kind: &str, key: i64) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT node FROM leases WHERE kind = $1 AND key = $2 AND expires_at > $3")
            .bind(kind)
            .bind(key)
            .bind(now_ms())
            .fetch_optional(self.pool())
            .await?)
    }

    /// Gives leases back (only `holder`'s).
    pub async fn release_leases(&self, kind: &str, keys: &[i64], holder: &str) -> Result<()> {
        for chunk in keys.chunks(500) {
            let sql = format!("DELETE FROM leases WHERE kind = $1 AND holder = $2 AND key IN ({})", placeholders(3, chunk.len()));
            let mut q = sqlx::query(&sql).bind(kind).bind(holder);
            for k in chunk {
                q = q.bind(*k);
            }
            q.execute(self.pool()).await?;
        }
        Ok(())
    }

    /// The holders of this node's leases (to find those left by a process of this node that died).
    pub async fn node_lease_holders(&self, node: &str) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT DISTINCT holder FROM leases WHERE node = $1").bind(node).fetch_all(self.pool()).await?)
    }

    /// Gives back every lease of `holder` (a process ending).
    pub async fn release_holder(&self, holder: &str) -> Result<()> {
        sqlx::query("DELETE FROM leases WHERE holder = $1").bind(holder).execute(self.pool()).await?;
        Ok(())
    }

    /// Claims up to `limit` articles needing a vector for `model_version` (id order, ids above `after_id`), skipping
    /// those another holder is embedding, and leases them to `holder` for `ttl_ms`. On PostgreSQL the candidates are
    /// locked `FOR UPDATE SKIP LOCKED` while the leases are written, so concurrent claimers take disjoint batches.
    #[allow(clippy::too_many_arguments)]
    pub async fn claim_pending_embeddings(
        &self,
        model_version: &str,
        after_id: i64,
        cutoff_ms: Option<i64>,
        limit: i64,
        holder: &str,
        node: &str,
        ttl_ms: i64,
    ) -> Result<Vec<PendingArticle>> {
        let kind = embed_lease_kind(model_version);
        let now = now_ms();
        let cutoff = if cutoff_ms.is_some() { " AND COALESCE(a.published_at, a.fetched_at) >= $6" } else { "" };
        let lock = if self.backend() == Backend::Postgres { " FOR UPDATE OF a SKIP LOCKED" } else { "" };
        let sql = format!(
            "SELECT a.id, a.title, a.body, a.content_hash FROM articles a \
             LEFT JOIN embeddings e ON e.article_id = a.id AND e.model_version = $1 \
             WHERE a.page_status <> '{}' AND (e.article_id IS NULL OR e.content_hash <> a.content_hash) AND a.id > $2 \
             AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.kind = $3 AND l.key = a.id AND l.expires_at > $4 AND l.holder <> $5){cutoff} \
             ORDER BY a.id LIMIT {}{lock}",
            PageStatus::Pending,
            limit.max(1)
        );
        // The same binds on either path (a macro: the query borrows `sql` for as long as it lives).
        macro_rules! candidates {
            ($exec:expr) => {{
                let q = sqlx::query_as::<_, PendingArticle>(&sql).bind(model_version).bind(after_id).bind(&kind).bind(now).bind(holder);
                let q = match cutoff_ms {
                    Some(c) => q.bind(c),
                    None => q,
                };
                q.fetch_all($exec).await?
            }};
        }
        let mut claimed = Vec::new();
        if self.backend() == Backend::Postgres {
            // The candidates stay locked until the leases are committed: a concurrent claimer skips them.
            let mut tx = self.pool().begin().await?;
            let candidates = candidates!(&mut *tx);
            for a in candidates {
                if upsert_lease(&mut *tx, &kind, a.id, holder, node, now, ttl_ms).await? {
                    claimed.push(a);
                }
            }
            tx.commit().await?;
        } else {
            // SQLite serialises writers; each upsert's answer is the truth (no transaction: a deferred one upgraded
            // to a writer would fail at once when another connection wrote since its read).
            let candidates = candidates!(self.pool());
            for a in candidates {
                if upsert_lease(self.pool(), &kind, a.id, holder, node, now, ttl_ms).await? {
                    claimed.push(a);
                }
            }
        }
        Ok(claimed)
    }

    // ---- per-host politeness ----

    /// Reserves the next request slot on `host` for the whole cluster: returns when this request may start (unix ms;
    /// the later of now, the end of the last reserved slot and any Retry-After pause) and moves the host's next
    /// slot `interval_ms` past it.
    pub async fn reserve_host_slot(&self, host: &str, interval_ms: i64) -> Result<i64> {
        let max = if self.backend() == Backend::Postgres { "GREATEST" } else { "MAX" };
        let now = now_ms();
        let next: i64 = sqlx::query_scalar(&format!(
            "INSERT INTO host_slots (host, next_at, paused_until) VALUES ($1, $2 + $3, 0) \
             ON CONFLICT (host) DO UPDATE SET next_at = {max}(host_slots.next_at, host_slots.paused_until, $2) + $3 \
             RETURNING next_at"
        ))
        .bind(host)
        .bind(now)
        .bind(interval_ms)
        .fetch_one(self.pool())
        .await?;
        Ok(next - interval_ms)
    }

    /// Until when the host asked every client to wait (0: never asked).
    pub async fn host_paused_until(&self, host: &str) -> Result<i64> {
        let until: Option<i64> = sqlx::query_scalar("SELECT paused_until FROM host_slots WHERE host = $1")
            .bind(host)
            .fetch_optional(self.pool())
            .await?;
        Ok(until.unwrap_or(0))
    }

    /// The host asked every client to wait (Retry-After) until `until_ms`.
    pub async fn pause_host(&self, host: &str, until_ms: i64) -> Result<()> {
        let max = if self.backend() == Backend::Postgres { "GREATEST" } else { "MAX" };
        sqlx::query(&format!(
            "INSERT INTO host_slots (host, next_at, paused_until) VALUES ($1, $2, $2) \
             ON CONFLICT (host) DO UPDATE SET paused_until = {max}(host_slots.paused_until, $2)"
        ))
        .bind(host)
        .bind(until_ms)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    // ---- the embeddings change sequence ----

    /// The highest change number so far (0 before any vector was stored).
    pub async fn embedding_seq(&self) -> Result<i64> {
        let stored: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM embeddings").fetch_one(self.pool()).await?;
        let deleted: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM embedding_tombstones").fetch_one(self.pool()).await?;
        Ok(stored.unwrap_or(0).max(deleted.unwrap_or(0)))
    }

    /// Changes to `model_version`'s vectors after `after_seq`, in sequence order, at most about `limit`: stored
    /// vectors (their current value) and deletions merged. Returns the changes and the sequence number they bring a
    /// follower to.
    pub async fn embedding_changes(&self, model_version: &str, after_seq: i64, limit: i64) -> Result<(Vec<EmbeddingChange>, i64)> {
        // The end first: a change committed while the lists below are read is left for the next call, not skipped.
        let end = self.embedding_seq().await?;
        let stored: Vec<(i64, i64, Vec<u8>)> = sqlx::query_as(
            "SELECT seq, article_id, vector FROM embeddings WHERE model_version = $1 AND seq > $2 AND seq <= $3 ORDER BY seq LIMIT $4",
        )
        .bind(model_version)
        .bind(after_seq)
        .bind(end)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        let deleted: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT seq, article_id FROM embedding_tombstones WHERE model_version = $1 AND seq > $2 AND seq <= $3 ORDER BY seq LIMIT $4",
        )
        .bind(model_version)
        .bind(after_seq)
        .bind(end)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        // A full page may stop before the other list's later entries: apply only up to the lower of the two ends.
        let full_end = |n: usize, last: Option<i64>| if n as i64 >= limit { last } else { None };
        let horizon = match (full_end(stored.len(), stored.last().map(|s| s.0)), full_end(deleted.len(), deleted.last().map(|d| d.0))) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let reached = horizon.unwrap_or(end).max(after_seq);
        let mut changes: Vec<EmbeddingChange> = stored
            .into_iter()
            .map(|(seq, article_id, v)| EmbeddingChange { seq, article_id, vector: Some(vector_from_bytes(&v)) })
            .chain(deleted.into_iter().map(|(seq, article_id)| EmbeddingChange { seq, article_id, vector: None }))
            .filter(|c| c.seq <= reached)
            .collect();
        changes.sort_by_key(|c| c.seq);
        Ok((changes, reached))
    }

    /// Forgets deletions older than `before` (a replica that far behind rebuilds from the id lists at start).
    pub async fn sweep_tombstones(&self, before: i64) -> Result<u64> {
        Ok(sqlx::query("DELETE FROM embedding_tombstones WHERE deleted_at < $1").bind(before).execute(self.pool()).await?.rows_affected())
    }
}

/// Takes (or renews) a lease unless another holder's is still running; true when `holder` has it now.
async fn upsert_lease<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    e: E,
    kind: &str,
    key: i64,
    holder: &str,
    node: &str,
    now: i64,
    ttl_ms: i64,
) -> Result<bool> {
    let got: Option<i64> = sqlx::query_scalar(
        "INSERT INTO leases (kind, key, holder, node, expires_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (kind, key) DO UPDATE SET holder = excluded.holder, node = excluded.node, expires_at = excluded.expires_at \
         WHERE leases.expires_at <= $6 OR leases.holder = excluded.holder RETURNING key",
    )
    .bind(kind)
    .bind(key)
    .bind(holder)
    .bind(node)
    .bind(now + ttl_ms)
    .bind(now)
    .fetch_optional(e)
    .await?;
    Ok(got.is_some())
}

/// The lease kind of embedding work for a model version.
pub fn embed_lease_kind(model_version: &str) -> String {
    format!("embed:{model_version}")
}

/// The lease kind of crawling a source.
pub const SOURCE_LEASE: &str = "source";

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn claims_leases_host_slots_and_the_change_sequence_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::open(&url, 2, std::time::Duration::from_secs(5)).await.unwrap();
        crate::testkit::cluster::cluster_store_checks(&store).await;
    }

    /// A database from before the cluster migration, with vectors, is upgraded in one pass: every vector gets a
    /// distinct change number in id order, and a replica following from 0 gets them all.
    #[tokio::test]
    async fn upgrading_a_database_with_vectors_numbers_them_once() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old-migrations");
        std::fs::create_dir_all(&old).unwrap();
        let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
        for e in std::fs::read_dir(&here).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.as_str() < "0006" {
                std::fs::copy(e.path(), old.join(&name)).unwrap();
            }
        }
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&url).await.unwrap();
        sqlx::migrate::Migrator::new(old.as_path()).await.unwrap().run(&pool).await.unwrap();
        sqlx::query("INSERT INTO sources (id, name, url) VALUES (1, 's', 'http://e/f')").execute(&pool).await.unwrap();
        let n = 20_000i64;
        let mut tx = pool.begin().await.unwrap();
        for id in 1..=n {
            sqlx::query("INSERT INTO articles (id, url, source_id, title, body, fetched_at, content_hash, extraction) VALUES ($1, $2, 1, 't', 'b', 0, 'h', 'feed')")
                .bind(id)
                .bind(format!("http://e/{id}"))
                .execute(&mut *tx)
                .await
                .unwrap();
            sqlx::query("INSERT INTO embeddings (article_id, model_version, content_hash, dims, vector, created_at) VALUES ($1, 'v', 'h', 1, $2, 0)")
                .bind(id)
                .bind(crate::store::vector_to_bytes(&[id as f32]))
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
        pool.close().await;
        let t = std::time::Instant::now();
        let store = Store::open(&url, 2, std::time::Duration::from_secs(5)).await.unwrap();
        let took = t.elapsed();
        assert!(took < std::time::Duration::from_secs(20), "migrating {n} vectors took {took:?}");
        assert_eq!(store.embedding_seq().await.unwrap(), n);
        let mut at = 0;
        let mut ids = Vec::new();
        loop {
            let (changes, to) = store.embedding_changes("v", at, 5000).await.unwrap();
            ids.extend(changes.iter().map(|c| c.article_id));
            if to == at {
                break;
            }
            at = to;
        }
        assert_eq!(ids, (1..=n).collect::<Vec<_>>(), "every vector once, in id order");
        // New writes continue the sequence.
        store.store_embeddings("v", &[(5, "h2".into())], &[vec![0.5]]).await.unwrap();
        assert_eq!(store.embedding_seq().await.unwrap(), n + 1);
    }
}
