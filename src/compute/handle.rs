//! The async side of the compute worker: a cheap-to-clone handle that queues requests and awaits their replies.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use super::error::ComputeError;
use super::threads::ThreadSettings;
use crate::index::vector::{Hit, IndexKind, SearchFilter};

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
    /// This process holds the index lock and writes the index files (see `index::owner`); otherwise its changes
    /// stay in memory.
    pub owner: bool,
    /// The embeddings change sequence number the index has applied.
    pub seq: i64,
}

pub use crate::embed::model::{Similarity, TextKind};

pub(super) type Reply<T> = oneshot::Sender<Result<T, ComputeError>>;

pub(super) enum Request {
    Embed { version: Option<String>, kind: TextKind, texts: Vec<String>, reply: Reply<Vec<Vec<f32>>> },
    Search { query: Vec<f32>, k: usize, filter: SearchFilter, reply: Reply<Vec<Hit>> },
    Add { version: String, ids: Vec<i64>, vectors: Vec<f32>, reply: Reply<()> },
    Remove { version: Option<String>, ids: Vec<i64>, reply: Reply<usize> },
    Reset { version: String, reply: Reply<()> },
    Save { force: bool, reply: Reply<()> },
    Activate { version: String, reply: Reply<()> },
    Info { reply: Reply<Vec<EngineInfo>> },
    LiveIds { version: String, reply: Reply<Vec<i64>> },
    SetSeq { version: String, seq: i64, reply: Reply<()> },
    Shutdown { reply: Reply<()> },
}

pub(super) struct Shared {
    pub tx: mpsc::Sender<Request>,
    /// Switched once at most (`activate`); an `Arc<str>` so readers clone it cheaply.
    pub serving_version: RwLock<Arc<str>>,
    pub serving_dims: AtomicUsize,
    /// The serving model's declared similarity levels (switched with the version).
    pub serving_similarity: RwLock<Similarity>,
    pub target_similarity: Similarity,
    pub target_version: Arc<str>,
    pub target_dims: usize,
    /// Vectors in the serving index (published by the worker after each change).
    pub serving_vectors: Arc<AtomicUsize>,
    pub settings: ThreadSettings,
    pub thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// One `compute::follow` pass at a time (two would apply the same changes, and an older read could land last).
    pub follow_lock: tokio::sync::Mutex<()>,
}

/// Cheap to clone; every clone talks to the same worker thread.
#[derive(Clone)]
pub struct ComputeHandle {
    pub(super) shared: Arc<Shared>,
}

/// How long a search polls for its answer before it parks (see `ComputeHandle::search`).
const REPLY_SPIN: std::time::Duration = std::time::Duration::from_micros(500);

fn stopped() -> ComputeError {
    ComputeError::Unavailable("the compute worker has stopped".into())
}

fn no_answer() -> ComputeError {
    ComputeError::Unavailable("the compute worker stopped before answering".into())
}

impl ComputeHandle {
    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Request) -> Result<T, ComputeError> {
        let (tx, rx) = oneshot::channel();
        self.shared.tx.send(make(tx)).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| no_answer())?
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
        self.call(|reply| Request::Embed { version: None, kind: TextKind::Passage, texts, reply }).await
    }

    /// Embeds a search query (with the model's query prefix, e.g. e5's "query: "; documents get "passage: ").
    pub async fn embed_query(&self, query: &str) -> Result<Vec<f32>, ComputeError> {
        let mut v: Vec<Vec<f32>> =
            self.call(|reply| Request::Embed { version: None, kind: TextKind::Query, texts: vec![query.to_string()], reply }).await?;
        Ok(v.pop().unwrap_or_default())
    }

    /// [`Self::embed_query`] that does not wait for room in the queue: with the queue full it fails at once with
    /// [`ComputeError::Busy`] (explicit backpressure for the HTTP API; the CLI and the jobs wait instead).
    pub async fn try_embed_query(&self, query: &str) -> Result<Vec<f32>, ComputeError> {
        let (tx, rx) = oneshot::channel();
        let request = Request::Embed { version: None, kind: TextKind::Query, texts: vec![query.to_string()], reply: tx };
        match self.shared.tx.try_send(request) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => return Err(ComputeError::Busy(self.shared.tx.max_capacity())),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(stopped()),
        }
        let mut v = rx.await.map_err(|_| no_answer())??;
        Ok(v.pop().unwrap_or_default())
    }

    /// Embeds with a given model version (the serving one or the one being built).
    pub async fn embed_with(&self, version: &str, texts: Vec<String>) -> Result<Vec<Vec<f32>>, ComputeError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        self.call(|reply| Request::Embed { version: Some(version.to_string()), kind: TextKind::Passage, texts, reply }).await
    }

    /// Top-k articles by cosine similarity from the live index.
    pub async fn search(&self, query: Vec<f32>, k: usize, filter: SearchFilter) -> Result<Vec<Hit>, ComputeError> {
        let (tx, mut rx) = oneshot::channel();
        let request = Request::Search { query, k, filter, reply: tx };
        self.shared.tx.send(request).await.map_err(|_| stopped())?;
        // An HNSW search takes ~0.15 ms (p99 ~0.3): poll for the answer that long before parking this task, since
        // waking a parked runtime thread costs tens of microseconds on virtual machines. Bounded, so a slow (Flat)
        // search or one queued behind an embedding batch costs at most REPLY_SPIN of this thread's time.
        let started = std::time::Instant::now();
        while started.elapsed() < REPLY_SPIN {
            match rx.try_recv() {
                Ok(answer) => return answer,
                Err(oneshot::error::TryRecvError::Empty) => std::hint::spin_loop(),
                Err(oneshot::error::TryRecvError::Closed) => break,
            }
        }
        rx.await.map_err(|_| no_answer())?
    }

    /// [`Self::search`] that fails with [`ComputeError::Busy`] instead of waiting for room in the queue.
    pub async fn try_search(&self, query: Vec<f32>, k: usize, filter: SearchFilter) -> Result<Vec<Hit>, ComputeError> {
        let (tx, rx) = oneshot::channel();
        match self.shared.tx.try_send(Request::Search { query, k, filter, reply: tx }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => return Err(ComputeError::Busy(self.shared.tx.max_capacity())),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(stopped()),
        }
        rx.await.map_err(|_| no_answer())?
    }

    /// Vectors in the serving index as of the worker's last change (no round trip to the worker).
    pub fn serving_vectors(&self) -> usize {
        self.shared.serving_vectors.load(Ordering::Relaxed)
    }

    pub fn dims(&self) -> usize {
        self.shared.serving_dims.load(Ordering::Relaxed)
    }

    /// The serving model's declared similarity levels (`[similarity]` in its `newsd-model.toml`).
    pub fn similarity(&self) -> Similarity {
        *self.shared.serving_similarity.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The model version that serves searches (the vectors `embed` returns).
    pub fn model_version(&self) -> String {
        self.shared.serving_version.read().unwrap_or_else(|e| e.into_inner()).to_string()
    }

    /// The configured model version (equal to `model_version()` unless a new model is being embedded).
    pub fn target_version(&self) -> &str {
        &self.shared.target_version
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

    /// Saves indexes with unsaved changes (all of them with `force`). A process that does not own the index
    /// (another process holds the index lock) keeps its changes in memory and returns Ok.
    pub async fn save(&self, force: bool) -> Result<(), ComputeError> {
        self.call(|reply| Request::Save { force, reply }).await
    }

    /// Switches searches to `version` and drops the other versions' models and indexes.
    pub async fn activate(&self, version: &str) -> Result<(), ComputeError> {
        self.call(|reply| Request::Activate { version: version.to_string(), reply }).await?;
        let mut v = self.shared.serving_version.write().unwrap_or_else(|e| e.into_inner());
        *v = Arc::from(version);
        self.shared.serving_dims.store(self.shared.target_dims, Ordering::Relaxed);
        *self.shared.serving_similarity.write().unwrap_or_else(|e| e.into_inner()) = self.shared.target_similarity;
        Ok(())
    }

    pub async fn info(&self) -> Result<Vec<EngineInfo>, ComputeError> {
        self.call(|reply| Request::Info { reply }).await
    }

    /// Records that a version's index holds every stored change up to `seq` (after applying them).
    pub async fn set_seq(&self, version: &str, seq: i64) -> Result<(), ComputeError> {
        self.call(|reply| Request::SetSeq { version: version.to_string(), seq, reply }).await
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
