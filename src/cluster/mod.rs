//! Several daemons on one database acting as one cluster, with no coordinator of their own: the database decides.
//!
//! - **Nodes**: every daemon is a node with a stable id ([`Node`]) and a row in `nodes`, refreshed by its
//!   heartbeat ([`run_background`]) with its index position, lag and leases. A node whose heartbeat is older than
//!   `cluster.node_timeout` is dead: live nodes mark its running runs interrupted, and its leases run out.
//! - **Fires**: each scheduled fire (job, fire time) is claimed in `fire_claims` by one node (the executor).
//! - **Work**: sources and batches of articles to embed are leased (`leases`); hosts' politeness lives in
//!   `host_slots` (see `crawl::fetch`).
//! - **Index replicas**: every node's index follows the embeddings change sequence (`compute::follow`), so all
//!   nodes answer searches alike once caught up.
//!
//! On SQLite (one machine) the same code runs with a single node.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::config::Config;
use crate::metrics::{global as metrics, labels};
use crate::store::{now_ms, Heartbeat, NodeRow};

/// File in the data directory keeping the generated node id.
pub const NODE_ID_FILE: &str = "node-id";

/// Who this process is in the cluster.
#[derive(Debug, Clone)]
pub struct Node {
    /// The node: `cluster.node_id`, else the id kept in `<data_dir>/node-id` (one per data directory, the same
    /// across restarts, shared by CLI commands run on that data directory).
    pub id: String,
    /// This process, for leases: a CLI command and the daemon on one data directory are one node but two holders.
    pub holder: String,
    pub host: String,
}

impl Node {
    /// This process's identity (creates `<data_dir>/node-id` on first use).
    pub fn load(config: &Config) -> anyhow::Result<Node> {
        let host = hostname();
        let id = match &config.cluster.node_id {
            Some(id) => id.clone(),
            None => {
                let dir = config.data_dir();
                let path = dir.join(NODE_ID_FILE);
                match std::fs::read_to_string(&path) {
                    Ok(text) if !text.trim().is_empty() => text.trim().to_string(),
                    _ => {
                        std::fs::create_dir_all(&dir).map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
                        let short: String = host.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(40).collect();
                        let id = format!("{}-{:06x}", if short.is_empty() { "node" } else { &short }, rand::random::<u32>() & 0xff_ffff);
                        // Written whole or not at all: two first starts at once both end with one id.
                        let tmp = dir.join(format!(".{NODE_ID_FILE}.{}", std::process::id()));
                        std::fs::write(&tmp, format!("{id}\n")).map_err(|e| anyhow::anyhow!("writing {}: {e}", tmp.display()))?;
                        match std::fs::hard_link(&tmp, &path) {
                            Ok(()) => {}
                            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                            Err(e) => {
                                let _ = std::fs::remove_file(&tmp);
                                anyhow::bail!("creating {}: {e}", path.display());
                            }
                        }
                        let _ = std::fs::remove_file(&tmp);
                        std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?.trim().to_string()
                    }
                }
            }
        };
        let holder = format!("{id}/{}", std::process::id());
        Ok(Node { id, holder, host })
    }
}

/// Gives back the leases that processes of this node left when they died (kill -9, crash): a node is one data
/// directory on one machine, so its holders' pids can be checked here; their work is free at once instead of when
/// the leases run out. Leases of live processes (a CLI command beside the daemon) are kept.
pub async fn release_dead_holders(store: &crate::store::Store, node: &Node) -> anyhow::Result<usize> {
    let mut released = 0;
    for holder in store.node_lease_holders(&node.id).await? {
        let Some(pid) = holder.rsplit_once('/').and_then(|(_, p)| p.parse::<i32>().ok()) else { continue };
        if holder == node.holder || pid <= 0 {
            continue;
        }
        // SAFETY: signal 0 only checks that the process exists.
        let gone = unsafe { libc::kill(pid, 0) } != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            store.release_holder(&holder).await?;
            released += 1;
        }
    }
    Ok(released)
}

/// The machine's host name (for the nodes table).
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer and its length are valid; gethostname writes at most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// A node's state as the others see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum NodeState {
    Alive,
    /// Its heartbeat is older than `cluster.node_timeout` (killed, hung or cut off).
    Dead,
    /// Stopped cleanly.
    Stopped,
}

/// How a node row reads now.
pub fn node_state(row: &NodeRow, node_timeout: Duration, now: i64) -> NodeState {
    if row.stopped_at.is_some() {
        NodeState::Stopped
    } else if row.heartbeat_at < now - node_timeout.as_millis() as i64 {
        NodeState::Dead
    } else {
        NodeState::Alive
    }
}

/// The oldest heartbeat time of a live node.
pub fn alive_after(config: &Config) -> i64 {
    now_ms() - config.cluster.node_timeout.as_millis() as i64
}

/// Records this daemon as a node (at start), marks the runs it left running interrupted (and dead nodes'), and
/// publishes its identity in /metrics.
pub async fn join(app: &App) -> anyhow::Result<u64> {
    let node = &app.node;
    app.store.register_node(&node.id, &node.host, std::process::id() as i64, env!("CARGO_PKG_VERSION")).await?;
    metrics().node_info.get_or_create(&labels(&[("node", &node.id), ("host", &node.host), ("version", env!("CARGO_PKG_VERSION"))])).set(1);
    Ok(app
        .store
        .interrupt_runs_at_start(&node.id, alive_after(&app.config), "the daemon stopped (crash or kill) before the run finished")
        .await?)
}

/// The daemon's cluster duties until `stop`: the index follows the stored vectors every `cluster.follow_interval`;
/// every `cluster.heartbeat` the node records that it is alive (index position, lag, leases) and repairs what dead
/// nodes left; hourly, old fire claims and deletion records are swept.
pub async fn run_background(app: App, stop: CancellationToken) {
    let cfg = app.config.cluster.clone();
    let mut follow_tick = tokio::time::interval(cfg.follow_interval);
    follow_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut heartbeat_tick = tokio::time::interval(cfg.heartbeat);
    heartbeat_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sweep_tick = tokio::time::interval(Duration::from_secs(3600));
    sweep_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = Heartbeat::default();
    let m = metrics();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = follow_tick.tick() => {
                if let Some(h) = app.compute_if_started() {
                    let span = tracing::debug_span!("index_follow");
                    match tracing::Instrument::instrument(crate::compute::follow(&h, &app.store), span).await {
                        Ok(r) => {
                            if r.applied > 0 {
                                tracing::debug!(changes = r.applied, seq = r.seq, lag = r.lag, "index followed the database");
                                // Deletions another node made (a prune) leave HNSW tombstones here too.
                                if let Err(e) = crate::index::rebuild_if_tombstoned(&app, &h).await {
                                    tracing::warn!(error = %format!("{e:#}"), "rebuilding the index after followed deletions");
                                }
                            }
                            last.index_seq = r.seq;
                            last.index_lag = r.lag;
                            last.index_vectors = h.serving_vectors() as i64;
                            m.index_seq.set(r.seq);
                            m.index_lag.set(r.lag);
                        }
                        Err(e) => tracing::warn!(error = %format!("{e:#}"), "following the stored vectors into the index"),
                    }
                }
            }
            _ = heartbeat_tick.tick() => {
                match app.store.heartbeat(&app.node.id, &last).await {
                    Ok(leases) => {
                        m.leases_held.set(leases);
                    }
                    Err(e) => tracing::warn!(error = %e, "recording the heartbeat"),
                }
                let alive_after = alive_after(&app.config);
                match app.store.interrupt_dead_nodes_runs(&app.node.id, alive_after, "its node died (no heartbeat) before the run finished").await {
                    Ok(0) => {}
                    Ok(n) => tracing::warn!(runs = n, "runs of dead nodes marked interrupted"),
                    Err(e) => tracing::warn!(error = %e, "repairing dead nodes' runs"),
                }
                if let Ok(nodes) = app.store.nodes().await {
                    let now = now_ms();
                    for state in [NodeState::Alive, NodeState::Dead, NodeState::Stopped] {
                        let n = nodes.iter().filter(|r| node_state(r, cfg.node_timeout, now) == state).count();
                        m.cluster_nodes.get_or_create(&labels(&[("state", state.into())])).set(n as i64);
                    }
                }
            }
            _ = sweep_tick.tick() => {
                let now = now_ms();
                let week = 7 * 24 * 3600 * 1000;
                if let Err(e) = app.store.sweep_fire_claims(now - week).await {
                    tracing::warn!(error = %e, "sweeping old fire claims");
                }
                if let Err(e) = app.store.sweep_tombstones(now - week).await {
                    tracing::warn!(error = %e, "sweeping old deletion records");
                }
            }
        }
    }
}

/// Leaves the cluster cleanly: the node row says stopped, its leases are given back.
pub async fn leave(app: &App) {
    if let Err(e) = app.store.stop_node(&app.node.id, std::process::id() as i64).await {
        tracing::warn!(error = %e, "recording this node's stop");
    }
}
