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

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::embed::model::{Model, ModelSpec};
use crate::index::vector::{version_dir, IndexKind, VectorIndex};

#[derive(Debug, thiserror::Error)]
pub enum ComputeError {
    #[error("compute worker is not available: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Failed(String),
}

/// A search result: an article id and its cosine similarity to the query (vectors are L2-normalised).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Hit {
    pub article_id: i64,
    pub score: f32,
}

#[derive(Debug, Clone, Default)]
pub struct SearchFilter {
    /// Article ids that must not be returned (the query's own articles, deleted ones).
    pub exclude: Vec<i64>,
}

/// Effective thread settings, logged once when the worker starts.
#[derive(Debug, Clone, Serialize)]
pub struct ThreadSettings {
    pub budget: usize,
    pub ort_intra_op: usize,
    pub ort_inter_op: usize,
    pub omp_max_threads: i32,
    pub openblas_threads: Option<i32>,
    pub env_omp: Option<String>,
    pub env_openblas: Option<String>,
    pub env_mkl: Option<String>,
}

/// What the worker holds for one model version.
#[derive(Debug, Clone, Serialize)]
pub struct EngineInfo {
    pub version: String,
    pub serving: bool,
    pub kind: IndexKind,
    pub dims: usize,
    pub vectors: usize,
    pub tombstones: usize,
    pub max_id: i64,
    pub unsaved: usize,
    pub dir: PathBuf,
}

type Reply<T> = oneshot::Sender<Result<T, ComputeError>>;

enum Request {
    Embed { version: Option<String>, texts: Vec<String>, reply: Reply<Vec<Vec<f32>>> },
    Search { query: Vec<f32>, k: usize, filter: SearchFilter, reply: Reply<Vec<Hit>> },
    Add { version: String, ids: Vec<i64>, vectors: Vec<f32>, reply: Reply<()> },
    Remove { version: Option<String>, ids: Vec<i64>, reply: Reply<usize> },
    Reset { version: String, reply: Reply<()> },
    Save { force: bool, reply: Reply<()> },
    Activate { version: String, reply: Reply<()> },
    Info { reply: Reply<Vec<EngineInfo>> },
    LiveIds { version: String, reply: Reply<Vec<i64>> },
    Shutdown { reply: Reply<()> },
}

struct Shared {
    tx: mpsc::Sender<Request>,
    serving_version: RwLock<&'static str>,
    serving_dims: AtomicUsize,
    target_version: &'static str,
    target_dims: usize,
    settings: ThreadSettings,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Cheap to clone; every clone talks to the same worker thread.
#[derive(Clone)]
pub struct ComputeHandle {
    shared: Arc<Shared>,
}

/// Model versions live as long as the process (there are one or two per process; the worker may switch once).
fn intern(s: &str) -> &'static str {
    static SEEN: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(v) = seen.iter().find(|v| **v == s) {
        return v;
    }
    let v: &'static str = Box::leak(s.to_string().into_boxed_str());
    seen.push(v);
    v
}

impl ComputeHandle {
    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Request) -> Result<T, ComputeError> {
        let (tx, rx) = oneshot::channel();
        self.shared.tx.send(make(tx)).await.map_err(|_| ComputeError::Unavailable("the compute worker has stopped".into()))?;
        rx.await.map_err(|_| ComputeError::Unavailable("the compute worker stopped before answering".into()))?
    }

    /// Requests queued for the worker and not yet taken (for metrics).
    pub fn queue_depth(&self) -> usize {
        self.shared.tx.max_capacity() - self.shared.tx.capacity()
    }

    /// Embeds texts (L2-normalised vectors, `dims()` long), batched and queued behind other requests.
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, ComputeError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        self.call(|reply| Request::Embed { version: None, texts, reply }).await
    }

    /// Embeds with a given model version (the serving one or the one being built).
    pub async fn embed_with(&self, version: &str, texts: Vec<String>) -> Result<Vec<Vec<f32>>, ComputeError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        self.call(|reply| Request::Embed { version: Some(version.to_string()), texts, reply }).await
    }

    /// Top-k articles by cosine similarity from the live index.
    pub async fn search(&self, query: Vec<f32>, k: usize, filter: SearchFilter) -> Result<Vec<Hit>, ComputeError> {
        let (tx, mut rx) = oneshot::channel();
        let request = Request::Search { query, k, filter, reply: tx };
        self.shared.tx.send(request).await.map_err(|_| ComputeError::Unavailable("the compute worker has stopped".into()))?;
        // An HNSW search takes ~0.15 ms (p99 ~0.3): poll for the answer that long before parking this task, since waking a
        // parked runtime thread costs tens of microseconds on virtual machines. Bounded, so a slow (Flat) search or
        // one queued behind an embedding batch costs at most REPLY_SPIN of this thread's time.
        let started = std::time::Instant::now();
        while started.elapsed() < REPLY_SPIN {
            match rx.try_recv() {
                Ok(answer) => return answer,
                Err(oneshot::error::TryRecvError::Empty) => std::hint::spin_loop(),
                Err(oneshot::error::TryRecvError::Closed) => break,
            }
        }
        rx.await.map_err(|_| ComputeError::Unavailable("the compute worker stopped before answering".into()))?
    }

    pub fn dims(&self) -> usize {
        self.shared.serving_dims.load(Ordering::Relaxed)
    }

    /// The model version that serves searches (the vectors `embed` returns).
    pub fn model_version(&self) -> &str {
        *self.shared.serving_version.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The configured model version (equal to `model_version()` unless a new model is being embedded).
    pub fn target_version(&self) -> &str {
        self.shared.target_version
    }

    pub fn target_dims(&self) -> usize {
        self.shared.target_dims
    }

    pub fn thread_settings(&self) -> &ThreadSettings {
        &self.shared.settings
    }

    /// Adds vectors to a version's index (replacing ids already there); saved every `index.save_every` changes.
    pub async fn add(&self, version: &str, ids: Vec<i64>, vectors: &[Vec<f32>]) -> Result<(), ComputeError> {
        let flat: Vec<f32> = vectors.iter().flat_map(|v| v.iter().copied()).collect();
        self.call(|reply| Request::Add { version: version.to_string(), ids, vectors: flat, reply }).await
    }

    /// Removes ids from one version's index, or from all (`None`); returns how many were in the serving index.
    pub async fn remove(&self, version: Option<&str>, ids: Vec<i64>) -> Result<usize, ComputeError> {
        self.call(|reply| Request::Remove { version: version.map(str::to_string), ids, reply }).await
    }

    /// Empties a version's index (before a rebuild).
    pub async fn reset(&self, version: &str) -> Result<(), ComputeError> {
        self.call(|reply| Request::Reset { version: version.to_string(), reply }).await
    }

    /// Saves indexes with unsaved changes (all of them with `force`).
    pub async fn save(&self, force: bool) -> Result<(), ComputeError> {
        self.call(|reply| Request::Save { force, reply }).await
    }

    /// Switches searches to `version` and drops the other versions' models and indexes.
    pub async fn activate(&self, version: &str) -> Result<(), ComputeError> {
        self.call(|reply| Request::Activate { version: version.to_string(), reply }).await?;
        let mut v = self.shared.serving_version.write().unwrap_or_else(|e| e.into_inner());
        *v = intern(version);
        self.shared.serving_dims.store(self.shared.target_dims, Ordering::Relaxed);
        Ok(())
    }

    pub async fn info(&self) -> Result<Vec<EngineInfo>, ComputeError> {
        self.call(|reply| Request::Info { reply }).await
    }

    /// Ids searchable in a version's index.
    pub async fn live_ids(&self, version: &str) -> Result<Vec<i64>, ComputeError> {
        self.call(|reply| Request::LiveIds { version: version.to_string(), reply }).await
    }

    /// Saves every index and stops the worker thread (later calls fail with `Unavailable`).
    pub async fn shutdown(&self) -> Result<(), ComputeError> {
        let r = self.call(|reply| Request::Shutdown { reply }).await;
        let thread = self.shared.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = thread {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        r
    }
}

/// Sets OMP_NUM_THREADS / OPENBLAS_NUM_THREADS / MKL_NUM_THREADS to the thread budget. Call first thing in main(),
/// before the async runtime (or any other thread) exists: the environment is not thread-safe to modify later.
pub fn pin_thread_env(threads: usize) {
    let n = threads.max(1).to_string();
    for var in ["OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"] {
        // SAFETY (edition 2021 API): called before other threads exist.
        std::env::set_var(var, &n);
    }
    set_library_threads(threads);
}

extern "C" {
    fn omp_set_num_threads(n: std::os::raw::c_int);
    fn omp_get_max_threads() -> std::os::raw::c_int;
}

/// OpenBLAS reads its environment when it is loaded (before main), so also set it at run time when it is there.
fn openblas_threads(set: Option<usize>) -> Option<i32> {
    unsafe {
        let setter = libc::dlsym(libc::RTLD_DEFAULT, c"openblas_set_num_threads".as_ptr());
        let getter = libc::dlsym(libc::RTLD_DEFAULT, c"openblas_get_num_threads".as_ptr());
        if let (Some(n), false) = (set, setter.is_null()) {
            let f: extern "C" fn(std::os::raw::c_int) = std::mem::transmute(setter);
            f(n as std::os::raw::c_int);
        }
        if getter.is_null() {
            None
        } else {
            let f: extern "C" fn() -> std::os::raw::c_int = std::mem::transmute(getter);
            Some(f())
        }
    }
}

/// OpenMP (per calling thread) and OpenBLAS thread counts.
fn set_library_threads(threads: usize) {
    unsafe { omp_set_num_threads(threads.max(1) as std::os::raw::c_int) };
    openblas_threads(Some(threads.max(1)));
}

struct WorkerConfig {
    batch_size: usize,
    save_every: usize,
    min_free_bytes: u64,
    index_dir: PathBuf,
    kind: IndexKind,
    hnsw_m: u32,
    ef_search: u32,
}

struct Engine {
    model: Model,
    index: VectorIndex,
}

struct EmbedJob {
    id: u64,
    version: String,
    texts: Vec<String>,
    out: Vec<Vec<f32>>,
    taken: usize,
    done: usize,
    reply: Option<Reply<Vec<Vec<f32>>>>,
}

struct Worker {
    engines: Vec<Engine>,
    serving: String,
    cfg: WorkerConfig,
    rx: mpsc::Receiver<Request>,
    jobs: VecDeque<EmbedJob>,
    next_job: u64,
    stop: bool,
}

/// How an engine's saved index fared at start.
struct LoadOutcome {
    version: String,
    /// None: the saved index was loaded; Some(reason): starting from an empty index.
    rebuild: Option<String>,
}

/// How long a search polls for its answer before it parks (see `ComputeHandle::search`).
const REPLY_SPIN: std::time::Duration = std::time::Duration::from_micros(500);

/// How long the idle worker polls its queue before it sleeps (see `Worker::poll_briefly`).
const IDLE_SPIN: std::time::Duration = std::time::Duration::from_micros(200);

impl Worker {
    fn engine(&mut self, version: &str) -> Result<&mut Engine, ComputeError> {
        self.engines
            .iter_mut()
            .find(|e| e.index.version == version)
            .ok_or_else(|| ComputeError::Failed(format!("no index for model version {version:?} in the compute worker")))
    }

    fn run(mut self) {
        while !self.stop {
            self.drain();
            if self.stop {
                break;
            }
            if self.jobs.is_empty() {
                let next = match self.poll_briefly() {
                    Some(req) => Some(req),
                    None => self.rx.blocking_recv(),
                };
                match next {
                    Some(req) => self.handle(req),
                    None => break,
                }
                continue;
            }
            self.embed_window();
        }
        // Channel closed or shutdown: persist what changed.
        let _ = self.save_all(false);
        for job in self.jobs.drain(..) {
            if let Some(r) = job.reply {
                let _ = r.send(Err(ComputeError::Unavailable("the compute worker stopped".into())));
            }
        }
    }

    /// Waits up to `IDLE_SPIN` for the next request without sleeping. Waking a sleeping thread costs tens of
    /// microseconds on virtual machines, as much as an HNSW search; a request that follows closely (a burst of
    /// searches, the next batch of an embedding run) is taken without that cost. At most `IDLE_SPIN` of CPU per idle.
    fn poll_briefly(&mut self) -> Option<Request> {
        let started = std::time::Instant::now();
        loop {
            match self.rx.try_recv() {
                Ok(req) => return Some(req),
                Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => return None,
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) if started.elapsed() >= IDLE_SPIN => return None,
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => std::hint::spin_loop(),
            }
        }
    }

    /// Handles everything queued without waiting.
    fn drain(&mut self) {
        while !self.stop {
            match self.rx.try_recv() {
                Ok(req) => self.handle(req),
                Err(_) => break,
            }
        }
    }

    fn handle(&mut self, req: Request) {
        match req {
            Request::Embed { version, texts, reply } => {
                let version = version.unwrap_or_else(|| self.serving.clone());
                if !self.engines.iter().any(|e| e.index.version == version) {
                    let _ = reply.send(Err(ComputeError::Failed(format!("no model loaded for version {version:?}"))));
                    return;
                }
                self.next_job += 1;
                let n = texts.len();
                self.jobs.push_back(EmbedJob { id: self.next_job, version, texts, out: vec![Vec::new(); n], taken: 0, done: 0, reply: Some(reply) });
            }
            Request::Search { query, k, filter, reply } => {
                let serving = self.serving.clone();
                let r = self.engine(&serving).and_then(|e| e.index.search(&query, k, &filter));
                let _ = reply.send(r);
            }
            Request::Add { version, ids, vectors, reply } => {
                let save_every = self.cfg.save_every.max(1);
                let min_free = self.cfg.min_free_bytes;
                let r = self.engine(&version).and_then(|e| {
                    e.index.add(&ids, &vectors)?;
                    if e.index.unsaved >= save_every {
                        if let Err(err) = e.index.save(min_free) {
                            tracing::warn!(version = %e.index.version, "saving the index: {err}");
                        }
                    }
                    Ok(())
                });
                let _ = reply.send(r);
            }
            Request::Remove { version, ids, reply } => {
                let serving = self.serving.clone();
                let mut removed = 0;
                let mut result = Ok(());
                for e in self.engines.iter_mut().filter(|e| version.as_ref().is_none_or(|v| *v == e.index.version)) {
                    match e.index.remove(&ids) {
                        Ok(n) if e.index.version == serving || version.is_some() => removed = n,
                        Ok(_) => {}
                        Err(err) => result = Err(err),
                    }
                }
                let _ = reply.send(result.map(|_| removed));
            }
            Request::Reset { version, reply } => {
                let cfg = &self.cfg;
                let (kind, m, ef, dir) = (cfg.kind, cfg.hnsw_m, cfg.ef_search, version_dir(&cfg.index_dir, &version));
                let r = self.engine(&version).and_then(|e| {
                    e.index = VectorIndex::new(&version, kind, e.model.spec.dims, m, ef, dir)?;
                    Ok(())
                });
                let _ = reply.send(r);
            }
            Request::Save { force, reply } => {
                let _ = reply.send(self.save_all(force));
            }
            Request::Activate { version, reply } => {
                if !self.engines.iter().any(|e| e.index.version == version) {
                    let _ = reply.send(Err(ComputeError::Failed(format!("no index for model version {version:?}"))));
                    return;
                }
                let min_free = self.cfg.min_free_bytes;
                let r = self.engine(&version).and_then(|e| e.index.save(min_free));
                if r.is_ok() {
                    let old: Vec<PathBuf> =
                        self.engines.iter().filter(|e| e.index.version != version).map(|e| e.index.dir.clone()).collect();
                    self.engines.retain(|e| e.index.version == version);
                    self.serving = version.clone();
                    for dir in old {
                        if let Err(e) = std::fs::remove_dir_all(&dir) {
                            tracing::warn!("removing the old index {}: {e}", dir.display());
                        }
                    }
                    tracing::info!(version = %version, "searches now use model version {version}");
                }
                let _ = reply.send(r);
            }
            Request::Info { reply } => {
                let serving = self.serving.clone();
                let infos = self
                    .engines
                    .iter()
                    .map(|e| EngineInfo {
                        version: e.index.version.clone(),
                        serving: e.index.version == serving,
                        kind: e.index.kind,
                        dims: e.index.dims,
                        vectors: e.index.len(),
                        tombstones: e.index.tombstones(),
                        max_id: e.index.max_id(),
                        unsaved: e.index.unsaved,
                        dir: e.index.dir.clone(),
                    })
                    .collect();
                let _ = reply.send(Ok(infos));
            }
            Request::LiveIds { version, reply } => {
                let r = self.engine(&version).map(|e| {
                    let mut ids: Vec<i64> = e.index.live_ids().copied().collect();
                    ids.sort_unstable();
                    ids
                });
                let _ = reply.send(r);
            }
            Request::Shutdown { reply } => {
                let _ = reply.send(self.save_all(false));
                self.stop = true;
            }
        }
    }

    fn save_all(&mut self, force: bool) -> Result<(), ComputeError> {
        let min_free = self.cfg.min_free_bytes;
        let mut result = Ok(());
        for e in &mut self.engines {
            if force || e.index.unsaved > 0 {
                if let Err(err) = e.index.save(min_free) {
                    tracing::warn!(version = %e.index.version, "saving the index: {err}");
                    result = Err(err);
                }
            }
        }
        result
    }

    /// One coalesced window: up to 4 batches of texts from the queued jobs of one model version (smallest jobs first,
    /// so a query is not stuck behind a bulk job), sorted by token count, run batch by batch.
    fn embed_window(&mut self) {
        let version = match self.jobs.front() {
            Some(j) => j.version.clone(),
            None => return,
        };
        let batch = self.cfg.batch_size.max(1);
        let cap = batch * 4;
        let mut order: Vec<usize> = (0..self.jobs.len()).filter(|&i| self.jobs[i].version == version).collect();
        order.sort_by_key(|&i| (self.jobs[i].texts.len() - self.jobs[i].taken, self.jobs[i].id));
        // (job id, text index, encoding)
        let mut items = Vec::new();
        let mut failed: Vec<(u64, ComputeError)> = Vec::new();
        {
            let engine = match self.engines.iter().find(|e| e.index.version == version) {
                Some(e) => e,
                None => return,
            };
            for i in order {
                let job = &mut self.jobs[i];
                while job.taken < job.texts.len() && items.len() < cap {
                    let t = job.taken;
                    job.taken += 1;
                    match engine.model.tokenize(&job.texts[t]) {
                        Ok(enc) => items.push((job.id, t, enc)),
                        Err(e) => {
                            failed.push((job.id, e));
                            break;
                        }
                    }
                }
                if items.len() >= cap {
                    break;
                }
            }
        }
        for (id, err) in failed {
            self.fail_job(id, err);
        }
        items.retain(|(id, _, _)| self.jobs.iter().any(|j| j.id == *id));
        items.sort_by_key(|(_, _, enc)| enc.get_ids().len());
        for chunk in items.chunks(batch) {
            let result = {
                let engine = match self.engines.iter_mut().find(|e| e.index.version == version) {
                    Some(e) => e,
                    None => return,
                };
                let encs: Vec<&tokenizers::Encoding> = chunk.iter().map(|(_, _, e)| e).collect();
                engine.model.infer(&encs)
            };
            match result {
                Ok(vectors) => {
                    for ((job_id, t, _), v) in chunk.iter().zip(vectors) {
                        if let Some(job) = self.jobs.iter_mut().find(|j| j.id == *job_id) {
                            job.out[*t] = v;
                            job.done += 1;
                        }
                    }
                }
                Err(e) => {
                    let ids: HashSet<u64> = chunk.iter().map(|(id, _, _)| *id).collect();
                    for id in ids {
                        self.fail_job(id, ComputeError::Failed(e.to_string()));
                    }
                }
            }
            self.finish_jobs();
            // Searches and index updates do not wait for the whole window.
            self.drain();
            if self.stop {
                return;
            }
        }
    }

    fn fail_job(&mut self, id: u64, err: ComputeError) {
        if let Some(pos) = self.jobs.iter().position(|j| j.id == id) {
            if let Some(job) = self.jobs.remove(pos) {
                if let Some(r) = job.reply {
                    let _ = r.send(Err(err));
                }
            }
        }
    }

    fn finish_jobs(&mut self) {
        let mut i = 0;
        while i < self.jobs.len() {
            if self.jobs[i].done == self.jobs[i].texts.len() {
                if let Some(mut job) = self.jobs.remove(i) {
                    if let Some(r) = job.reply.take() {
                        let _ = r.send(Ok(std::mem::take(&mut job.out)));
                    }
                }
            } else {
                i += 1;
            }
        }
    }
}

/// Starts the worker thread: loads the models and the saved indexes there, and reports what it found.
fn spawn_worker(
    specs: Vec<ModelSpec>,
    serving: String,
    ort_lib: PathBuf,
    threads: usize,
    cfg: WorkerConfig,
    queue: usize,
) -> Result<(mpsc::Sender<Request>, std::thread::JoinHandle<()>, oneshot::Receiver<Result<(Vec<LoadOutcome>, ThreadSettings), ComputeError>>), ComputeError> {
    let (tx, rx) = mpsc::channel(queue.max(1));
    let (init_tx, init_rx) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("newsd-compute".into())
        .spawn(move || {
            set_library_threads(threads);
            let settings = ThreadSettings {
                budget: threads,
                ort_intra_op: threads,
                ort_inter_op: 1,
                omp_max_threads: unsafe { omp_get_max_threads() },
                openblas_threads: openblas_threads(None),
                env_omp: std::env::var("OMP_NUM_THREADS").ok(),
                env_openblas: std::env::var("OPENBLAS_NUM_THREADS").ok(),
                env_mkl: std::env::var("MKL_NUM_THREADS").ok(),
            };
            let mut engines = Vec::new();
            let mut outcomes = Vec::new();
            for spec in specs {
                let version = spec.version.clone();
                let dims = spec.dims;
                let model = match Model::load(spec, &ort_lib, threads) {
                    Ok(m) => m,
                    Err(e) => {
                        let _ = init_tx.send(Err(e));
                        return;
                    }
                };
                let dir = version_dir(&cfg.index_dir, &version);
                let (index, rebuild) = match VectorIndex::load(&version, cfg.kind, dims, cfg.hnsw_m, cfg.ef_search, dir.clone()) {
                    Ok(ix) => (ix, None),
                    Err(reason) => match VectorIndex::new(&version, cfg.kind, dims, cfg.hnsw_m, cfg.ef_search, dir) {
                        Ok(ix) => (ix, Some(reason)),
                        Err(e) => {
                            let _ = init_tx.send(Err(e));
                            return;
                        }
                    },
                };
                outcomes.push(LoadOutcome { version, rebuild });
                engines.push(Engine { model, index });
            }
            let _ = init_tx.send(Ok((outcomes, settings)));
            Worker { engines, serving, cfg, rx, jobs: VecDeque::new(), next_job: 0, stop: false }.run();
        })
        .map_err(|e| ComputeError::Unavailable(format!("starting the compute thread: {e}")))?;
    Ok((tx, thread, init_rx))
}

/// Starts the worker for an app: picks the serving and target model versions, loads them, and checks each index
/// against the stored vectors (rebuilding or repairing it as needed).
pub async fn start(app: &crate::app::App) -> anyhow::Result<ComputeHandle> {
    let config = &app.config;
    let store = &app.store;
    let target = ModelSpec::from_config(config)?;
    let active = store.active_model().await?;
    let mut specs = Vec::new();
    if let Some(a) = active.as_ref().filter(|a| a.version != target.version) {
        match ModelSpec::from_dir(Path::new(&a.model_dir)) {
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
        save_every: config.index.save_every.max(1),
        min_free_bytes: config.daemon.min_free_disk_bytes,
        index_dir: config.index_dir(),
        kind: IndexKind::parse(&config.index.kind),
        hnsw_m: config.index.hnsw_m,
        ef_search: config.index.ef_search,
    };
    let ort_lib = config.resolve(&config.embed.onnxruntime_library);
    let (tx, thread, init) = spawn_worker(specs, serving.version.clone(), ort_lib, threads, cfg, config.embed.queue_capacity)?;
    let (outcomes, settings) = init.await.map_err(|_| anyhow::anyhow!("the compute worker died while starting"))??;
    // Recorded only once the model loads, so a broken model folder leaves no trace in the database.
    store.register_model(&target.version, target.dims, &target.dir.display().to_string()).await?;
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
            serving_version: RwLock::new(intern(&serving.version)),
            serving_dims: AtomicUsize::new(serving.dims),
            target_version: intern(&target.version),
            target_dims: target.dims,
            settings,
            thread: Mutex::new(Some(thread)),
        }),
    };
    for o in outcomes {
        reconcile(&handle, store, &o.version, o.rebuild).await?;
    }
    Ok(handle)
}

/// Makes a version's index hold exactly the stored vectors of that version.
pub(crate) async fn reconcile(handle: &ComputeHandle, store: &crate::store::Store, version: &str, rebuild: Option<String>) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
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
    if rebuild.is_some() || !missing.is_empty() || !extra.is_empty() {
        handle.save(rebuild.is_some()).await?;
        tracing::info!(version, vectors = db.len(), ms = started.elapsed().as_millis() as u64, "index ready");
    }
    Ok(())
}

impl crate::app::App {
    /// The compute worker, started on first use (loads the model and the index).
    pub async fn compute(&self) -> anyhow::Result<ComputeHandle> {
        let h = self.compute.get_or_try_init(|| start(self)).await?;
        Ok(h.clone())
    }

    /// The worker if it has been started (does not start it).
    pub fn compute_if_started(&self) -> Option<ComputeHandle> {
        self.compute.get().cloned()
    }

    /// Persists the index and stops the compute worker (if it was started). Call before the process exits.
    pub async fn shutdown(&self) -> anyhow::Result<()> {
        if let Some(h) = self.compute.get() {
            h.shutdown().await?;
        }
        Ok(())
    }
}
