//! The compute worker: one OS thread owns the ONNX session(s) and the FAISS index(es); async code reaches it through
//! a bounded queue and gets replies on oneshot channels.
//!
//! Why one thread: ONNX Runtime and FAISS (OpenMP, BLAS) each like to start a thread per core; several requests at
//! once multiply that and a small server thrashes or crashes. Here every inference and every search runs on the
//! worker thread, with the configured thread budget (default 1) set for ONNX Runtime (intra/inter-op), OpenMP
//! (`omp_set_num_threads` inside the worker) and BLAS (environment, set by `pin_thread_env` before any thread
//! exists, plus `openblas_set_num_threads` when OpenBLAS is loaded).
//!
//! Requests are never rejected: the queue is bounded, so senders wait. Embedding requests queued at the same time are
//! coalesced: texts from several requests are tokenized, sorted by length (little padding) and run in batches of
//! `embed.batch_size` (memory is bounded by batch size x max tokens). Between two batches the worker answers
//! searches and index updates, so a long embedding job delays a search by one batch at most.
//!
//! Model versions: the worker serves searches from the *active* model version. When the config names a new model,
//! the new version is embedded into its own index alongside, and the worker switches to it only when it is complete
//! (`newsd embed` / `newsd reembed` do the switch), so the old index keeps serving until then.
//!
//! Index files: several processes may load the same index (the daemon, CLI `search`/`status`/`embed`). Only the one
//! holding `<index_dir>/index.lock` (see `index::owner`) writes the files; the others repair and update their copy
//! in memory only. Saves use unique temporary names and a manifest that names its index file, so a reader never
//! sees the two disagree (see `index::vector`).
//!
//! Layout: `handle` (the async API), `worker` (the thread), `threads` (thread budget), `error` (the shared error).

pub mod error;
mod handle;
mod threads;
mod worker;

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, RwLock};

pub use error::ComputeError;
pub use handle::{ComputeHandle, EngineInfo};
// The search types belong to the index; re-exported here for callers that only know the compute API.
pub use crate::index::vector::{Hit, SearchFilter};
pub use threads::{pin_thread_env, ThreadSettings};

use crate::config::Config;
use crate::embed::model::ModelSpec;
use crate::index::vector::IndexKind;
use crate::store::Store;
use handle::Shared;
use worker::WorkerConfig;

/// Starts the worker: picks the serving and target model versions, loads them, and checks each index against the
/// stored vectors (rebuilding or repairing it as needed: on disk if this process owns the index, else in memory).
pub async fn start(config: &Config, store: &Store) -> anyhow::Result<ComputeHandle> {
    let mut target = ModelSpec::from_config(config)?;
    let active = store.active_model().await?;
    target.adopt_legacy_version(active.as_ref().map(|a| a.version.as_str()));
    let mut specs = Vec::new();
    if let Some(a) = active.as_ref().filter(|a| a.version != target.version) {
        match ModelSpec::from_registered(Path::new(&a.model_dir), Some(&config.data_dir().join(crate::embed::model::DIGEST_CACHE))) {
            Ok(mut old) => {
                old.version = a.version.clone();
                old.dims = a.dims as usize;
                tracing::info!(
                    "the config names model version {} but the index serves {}: the new version is embedded alongside and takes over when complete (`newsd reembed`)",
                    target.version,
                    a.version
                );
                specs.push(old);
            }
            Err(e) => tracing::warn!(
                "the previous model version {} cannot be loaded ({e}); searches use the new version {} while it is built",
                a.version,
                target.version
            ),
        }
    }
    specs.push(target.clone());
    let serving = specs[0].clone();
    let threads = config.embed.threads.max(1);
    let cfg = WorkerConfig {
        batch_size: config.embed.batch_size.max(1),
        batch_tokens: config.embed.batch_tokens.max(1),
        save_every: config.index.save_every.max(1),
        min_free_bytes: config.daemon.min_free_disk_bytes,
        index_dir: config.index_dir(),
        kind: IndexKind::parse(&config.index.kind),
        hnsw_m: config.index.hnsw_m,
        ef_search: config.index.ef_search,
        serving_vectors: Arc::new(AtomicUsize::new(0)),
    };
    let serving_vectors = cfg.serving_vectors.clone();
    let ort_lib = config.resolve(&config.embed.onnxruntime_library);
    let (tx, thread, init) = worker::spawn(specs, serving.version.clone(), ort_lib, threads, cfg, config.embed.queue_capacity)?;
    let (outcomes, settings) = init.await.map_err(|_| anyhow::anyhow!("the compute worker died while starting"))??;
    // Recorded only once the model loads, so a broken model folder leaves no trace in the database.
    store.register_model(&target.version, target.dims, &target.registered_path()).await?;
    if active.is_none() {
        store.activate_model(&target.version).await?;
    }
    tracing::info!(
        budget = settings.budget,
        ort_intra_op = settings.ort_intra_op,
        ort_inter_op = settings.ort_inter_op,
        omp_max_threads = settings.omp_max_threads,
        openblas_threads = ?settings.openblas_threads,
        OMP_NUM_THREADS = ?settings.env_omp,
        OPENBLAS_NUM_THREADS = ?settings.env_openblas,
        MKL_NUM_THREADS = ?settings.env_mkl,
        model = %serving.version,
        index = %config.index.kind,
        "compute worker started"
    );
    let handle = ComputeHandle {
        shared: Arc::new(Shared {
            tx,
            serving_version: RwLock::new(Arc::from(serving.version.as_str())),
            serving_dims: AtomicUsize::new(serving.dims),
            serving_similarity: RwLock::new(serving.similarity),
            target_similarity: target.similarity,
            target_version: Arc::from(target.version.as_str()),
            target_dims: target.dims,
            serving_vectors,
            settings,
            thread: Mutex::new(Some(thread)),
            follow_lock: tokio::sync::Mutex::new(()),
        }),
    };
    for o in outcomes {
        if o.rebuild.is_none() && o.seq > 0 {
            // The saved index knows where it stopped: apply what was stored (by any node) since, vectors replaced
            // included; the id check below then only confirms.
            let _guard = handle.shared.follow_lock.lock().await;
            let (applied, seq) = follow_version(&handle, store, &o.version, o.seq).await?;
            if applied > 0 {
                tracing::info!(version = %o.version, changes = applied, from = o.seq, to = seq, "index caught up with the database");
                handle.save(false).await?;
            }
        }
        reconcile(&handle, store, &o.version, o.rebuild).await?;
    }
    Ok(handle)
}

/// What one pass of [`follow`] did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FollowReport {
    /// Changes applied (vectors added or replaced, vectors removed).
    pub applied: usize,
    /// The change sequence number the serving index has reached.
    pub seq: i64,
    /// Changes in the database past it (0 right after a pass unless writers are busy).
    pub lag: i64,
    /// The cluster finished a switch-over to the new model version (another node did): this one followed.
    pub switched: bool,
}

/// Brings every index of this process up to the stored vectors: applies, in sequence order, the vectors stored or
/// replaced and deleted since its last pass, by this node or any other (the embeddings change sequence; see
/// `store::EmbeddingChange`). Also follows a model switch-over the database records as done. One pass at a time
/// per process; cheap when nothing changed (two indexed MAX queries).
pub async fn follow(handle: &ComputeHandle, store: &Store) -> anyhow::Result<FollowReport> {
    let _guard = handle.shared.follow_lock.lock().await;
    let mut report = FollowReport::default();
    let target = handle.target_version().to_string();
    if handle.model_version() != target && store.active_model().await?.is_some_and(|m| m.version == target) {
        handle.activate(&target).await?;
        tracing::info!(version = %target, "another node completed the switch-over: searches use the new model version");
        report.switched = true;
    }
    let serving = handle.model_version();
    for e in handle.info().await? {
        let (applied, seq) = follow_version(handle, store, &e.version, e.seq).await?;
        report.applied += applied;
        if e.version == serving {
            report.seq = seq;
        }
    }
    report.lag = (store.embedding_seq().await? - report.seq).max(0);
    Ok(report)
}

/// Applies one version's changes after `from`; returns how many and the sequence number reached.
async fn follow_version(handle: &ComputeHandle, store: &Store, version: &str, from: i64) -> anyhow::Result<(usize, i64)> {
    let mut seq = from;
    let mut applied = 0;
    loop {
        let (changes, reached) = store.embedding_changes(version, seq, 2000).await?;
        if !changes.is_empty() {
            applied += changes.len();
            // The last change of an article decides: its current vector, or gone.
            let mut last: std::collections::HashMap<i64, Option<Vec<f32>>> = std::collections::HashMap::new();
            for c in changes {
                last.insert(c.article_id, c.vector);
            }
            let mut removed = Vec::new();
            let (mut ids, mut vectors) = (Vec::new(), Vec::new());
            for (id, v) in last {
                match v {
                    Some(v) => {
                        ids.push(id);
                        vectors.push(v);
                    }
                    None => removed.push(id),
                }
            }
            if !removed.is_empty() {
                handle.remove(Some(version), removed).await?;
            }
            if !ids.is_empty() {
                handle.add(version, ids, &vectors).await?;
            }
        }
        let moved = reached > seq;
        seq = reached;
        handle.set_seq(version, seq).await?;
        if !moved {
            break;
        }
    }
    Ok((applied, seq))
}

/// Makes a version's index hold exactly the stored vectors of that version.
pub(crate) async fn reconcile(handle: &ComputeHandle, store: &Store, version: &str, rebuild: Option<String>) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    // Read before the ids: the index will hold at least every change up to here.
    let end = store.embedding_seq().await?;
    let db: Vec<i64> = store.embedding_ids(version).await?;
    let in_index: HashSet<i64> = handle.live_ids(version).await?.into_iter().collect();
    let db_set: HashSet<i64> = db.iter().copied().collect();
    let missing: Vec<i64> = db.iter().copied().filter(|id| !in_index.contains(id)).collect();
    let extra: Vec<i64> = in_index.iter().copied().filter(|id| !db_set.contains(id)).collect();
    match &rebuild {
        Some(reason) if !db.is_empty() || reason != "no saved index" => {
            tracing::info!(version, vectors = db.len(), "rebuilding the index from stored vectors: {reason}")
        }
        _ if !missing.is_empty() || !extra.is_empty() => tracing::info!(
            version,
            missing = missing.len(),
            removed = extra.len(),
            "index is stale (behind the database): adding {} stored vectors, removing {}",
            missing.len(),
            extra.len()
        ),
        _ => {}
    }
    if !extra.is_empty() {
        handle.remove(Some(version), extra.clone()).await?;
    }
    if in_index.is_empty() && !missing.is_empty() {
        // Full rebuild: stream pages in id order.
        let mut after = 0;
        loop {
            let page = store.embedding_page(version, after, 2000).await?;
            let Some(last) = page.last() else { break };
            after = last.0;
            let (ids, vectors): (Vec<i64>, Vec<Vec<f32>>) = page.into_iter().unzip();
            handle.add(version, ids, &vectors).await?;
        }
    } else {
        for chunk in missing.chunks(2000) {
            let map = store.vectors(chunk, version).await?;
            let (ids, vectors): (Vec<i64>, Vec<Vec<f32>>) = chunk.iter().filter_map(|id| map.get(id).map(|v| (*id, v.clone()))).unzip();
            handle.add(version, ids, &vectors).await?;
        }
    }
    // An index that did not know its position (rebuilt, or saved before the sequence existed) is at `end` now.
    if handle.info().await?.iter().any(|e| e.version == version && e.seq == 0) {
        handle.set_seq(version, end).await?;
    }
    if rebuild.is_some() || !missing.is_empty() || !extra.is_empty() {
        handle.save(rebuild.is_some()).await?;
        tracing::info!(version, vectors = db.len(), ms = started.elapsed().as_millis() as u64, "index ready");
    }
    Ok(())
}

