//! The worker thread: owns the models and the FAISS indexes, answers the handle's requests in order, and embeds
//! in coalesced, length-sorted batches with searches answered between them.

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;

use tokio::sync::{mpsc, oneshot};

use super::error::ComputeError;
use super::handle::{TextKind, EngineInfo, Reply, Request};
use super::threads::{self, ThreadSettings};
use crate::embed::model::{Model, ModelSpec};
use crate::index::owner::{self, IndexLock};
use crate::index::vector::{version_dir, IndexKind, VectorIndex};

pub(super) struct WorkerConfig {
    pub batch_size: usize,
    /// Padded tokens per inference batch (`embed.batch_tokens`).
    pub batch_tokens: usize,
    pub save_every: usize,
    pub min_free_bytes: u64,
    pub index_dir: PathBuf,
    pub kind: IndexKind,
    pub hnsw_m: u32,
    pub ef_search: u32,
    /// Vectors in the serving index, kept current by the worker after every change, so a search need not ask
    /// the worker for it (one round trip less behind an embedding batch).
    pub serving_vectors: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

struct Engine {
    model: Model,
    index: VectorIndex,
}

struct EmbedJob {
    id: u64,
    version: String,
    kind: TextKind,
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
    /// Held while this process writes the index files; `None` while another process holds them (changes stay in
    /// memory; taken over at a later save once the other process is gone).
    owner: Option<IndexLock>,
    told_not_owner: bool,
}

/// How an engine's saved index fared at start.
pub(super) struct LoadOutcome {
    pub version: String,
    /// None: the saved index was loaded; Some(reason): starting from an empty index.
    pub rebuild: Option<String>,
    /// The change sequence number the loaded index includes (0: unknown or empty).
    pub seq: i64,
}

pub(super) type Init = oneshot::Receiver<Result<(Vec<LoadOutcome>, ThreadSettings), ComputeError>>;

/// How long the idle worker polls its queue before it sleeps (see `Worker::poll_briefly`).
const IDLE_SPIN: std::time::Duration = std::time::Duration::from_micros(200);

impl Worker {
    fn engine(&mut self, version: &str) -> Result<&mut Engine, ComputeError> {
        self.engines
            .iter_mut()
            .find(|e| e.index.version == version)
            .ok_or_else(|| ComputeError::Failed(format!("no index for model version {version:?} in the compute worker")))
    }

    /// True when this process may write the index files: it holds the index lock, or takes it now.
    fn owns_index(&mut self) -> bool {
        if self.owner.is_none() {
            match owner::try_acquire(&self.cfg.index_dir) {
                Ok(Some(lock)) => {
                    if self.told_not_owner {
                        tracing::info!(lock = %lock.path.display(), "the other process released the index; this one saves it now");
                    }
                    self.owner = Some(lock);
                    self.told_not_owner = false;
                }
                Ok(None) => {
                    if !self.told_not_owner {
                        tracing::info!(
                            dir = %self.cfg.index_dir.display(),
                            "another newsd process owns the index files; this one keeps its index changes in memory"
                        );
                        self.told_not_owner = true;
                    }
                }
                Err(e) => tracing::warn!("{e}"),
            }
        }
        self.owner.is_some()
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
                Err(mpsc::error::TryRecvError::Disconnected) => return None,
                Err(mpsc::error::TryRecvError::Empty) if started.elapsed() >= IDLE_SPIN => return None,
                Err(mpsc::error::TryRecvError::Empty) => std::hint::spin_loop(),
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
        let changes_index = matches!(req, Request::Add { .. } | Request::Remove { .. } | Request::Reset { .. } | Request::Activate { .. });
        self.handle_request(req);
        if changes_index {
            self.publish_size();
        }
    }

    fn publish_size(&self) {
        let n = self.engines.iter().find(|e| e.index.version == self.serving).map(|e| e.index.len()).unwrap_or(0);
        self.cfg.serving_vectors.store(n, std::sync::atomic::Ordering::Relaxed);
    }

    fn handle_request(&mut self, req: Request) {
        match req {
            Request::Embed { version, kind, texts, reply } => {
                let version = version.unwrap_or_else(|| self.serving.clone());
                if !self.engines.iter().any(|e| e.index.version == version) {
                    let _ = reply.send(Err(ComputeError::Failed(format!("no model loaded for version {version:?}"))));
                    return;
                }
                self.next_job += 1;
                let n = texts.len();
                self.jobs.push_back(EmbedJob { id: self.next_job, version, kind, texts, out: vec![Vec::new(); n], taken: 0, done: 0, reply: Some(reply) });
            }
            Request::Search { query, k, filter, reply } => {
                let serving = self.serving.clone();
                let r = self.engine(&serving).and_then(|e| e.index.search(&query, k, &filter));
                let _ = reply.send(r);
            }
            Request::Add { version, ids, vectors, reply } => {
                let save_every = self.cfg.save_every.max(1);
                let r = self.engine(&version).and_then(|e| e.index.add(&ids, &vectors));
                if r.is_ok() && self.engine(&version).is_ok_and(|e| e.index.unsaved >= save_every) && self.owns_index() {
                    let min_free = self.cfg.min_free_bytes;
                    if let Ok(e) = self.engine(&version) {
                        if let Err(err) = e.index.save(min_free) {
                            tracing::warn!(version = %e.index.version, "saving the index: {err}");
                        }
                    }
                }
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
                let owner = self.owns_index();
                let r = if owner { self.engine(&version).and_then(|e| e.index.save(min_free)) } else { Ok(()) };
                if r.is_ok() {
                    let old: Vec<PathBuf> =
                        self.engines.iter().filter(|e| e.index.version != version).map(|e| e.index.dir.clone()).collect();
                    self.engines.retain(|e| e.index.version == version);
                    self.serving = version.clone();
                    // Only the owner deletes files; another process may still be reading the old version's index.
                    for dir in old.iter().filter(|_| owner) {
                        if let Err(e) = std::fs::remove_dir_all(dir) {
                            tracing::warn!("removing the old index {}: {e}", dir.display());
                        }
                    }
                    tracing::info!(version = %version, "searches now use model version {version}");
                }
                let _ = reply.send(r);
            }
            Request::Info { reply } => {
                let serving = self.serving.clone();
                let owner = self.owner.is_some();
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
                        owner,
                        seq: e.index.seq,
                    })
                    .collect();
                let _ = reply.send(Ok(infos));
            }
            Request::SetSeq { version, seq, reply } => {
                let r = self.engine(&version).map(|e| {
                    if seq > e.index.seq {
                        e.index.seq = seq;
                    }
                });
                let _ = reply.send(r);
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

    /// Saves the indexes with unsaved changes (all with `force`) if this process owns the index files; otherwise
    /// the changes stay in memory (the owner, or the next process to start, brings the files up to date).
    fn save_all(&mut self, force: bool) -> Result<(), ComputeError> {
        if !self.engines.iter().any(|e| force || e.index.unsaved > 0) || !self.owns_index() {
            return Ok(());
        }
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
        // A caller that gave up (a cancelled job, a dropped future) no longer wants its vectors: skip its texts.
        self.jobs.retain(|j| j.reply.as_ref().is_some_and(|r| !r.is_closed()));
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
                    match engine.model.tokenize_as(job.kind, &job.texts[t]) {
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
        let lengths: Vec<usize> = items.iter().map(|(_, _, enc)| enc.get_ids().len()).collect();
        for range in attention_batches(&lengths, batch, self.cfg.batch_tokens.max(1)) {
            let chunk = &items[range];
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

/// The attention cells (texts x tokens^2) one batch may hold: `embed.batch_size` texts of 256 tokens. Attention
/// activations grow with the square of the length, so a model that reads 512 tokens (multilingual-e5-small) would
/// need 4x the memory per batch of 8 long articles (~300 MB more RSS, measured); its long texts run in smaller
/// batches instead, at the same cost per token.
const ATTENTION_TOKENS: usize = 256;

/// Splits texts sorted by token count (`lengths`, ascending) into consecutive batches of at most `batch` texts
/// whose padded tokens (texts x longest) stay within `batch_tokens` and whose padded attention (texts x longest^2)
/// stays within `batch` x 256^2; a text longer than that runs alone.
///
/// Why a token budget: on one CPU thread, a batch of 8 full-length articles (8 x 256 tokens) runs slower per token
/// than one article at a time, because every activation tensor between the matrix products (12 MB at the
/// feed-forward width) falls out of the core's L2 cache; measured on an AVX-512 Xeon, 1 thread (`newsd bench
/// embed --batch-size 8` vs `--batch-size 1`, 300 articles): fp32 14.3 vs 17.5 articles/s, int8 22.2 vs 33.3.
/// Short texts (queries, titles) still batch up to `batch` at a time.
pub(super) fn attention_batches(lengths: &[usize], batch: usize, batch_tokens: usize) -> Vec<std::ops::Range<usize>> {
    let budget = batch.max(1) * ATTENTION_TOKENS * ATTENTION_TOKENS;
    let mut out = Vec::new();
    let mut start = 0;
    while start < lengths.len() {
        let mut end = start + 1;
        // Sorted ascending: the last text of a batch is its longest (the padded length).
        while end < lengths.len()
            && end - start < batch.max(1)
            && (end + 1 - start) * lengths[end] <= batch_tokens
            && (end + 1 - start) * lengths[end] * lengths[end] <= budget
        {
            end += 1;
        }
        out.push(start..end);
        start = end;
    }
    out
}

/// Starts the worker thread: takes the index lock if no other process holds it, loads the models and the saved
/// indexes there, and reports what it found.
pub(super) fn spawn(
    specs: Vec<ModelSpec>,
    serving: String,
    ort_lib: PathBuf,
    threads: usize,
    cfg: WorkerConfig,
    queue: usize,
) -> Result<(mpsc::Sender<Request>, std::thread::JoinHandle<()>, Init), ComputeError> {
    let (tx, rx) = mpsc::channel(queue.max(1));
    let (init_tx, init_rx) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("newsd-compute".into())
        .spawn(move || {
            threads::set_library_threads(threads);
            let settings = threads::current(threads);
            let lock = match owner::try_acquire(&cfg.index_dir) {
                Ok(lock) => lock,
                Err(e) => {
                    tracing::warn!("{e}; this process keeps its index changes in memory");
                    None
                }
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
                outcomes.push(LoadOutcome { version, rebuild, seq: index.seq });
                engines.push(Engine { model, index });
            }
            let _ = init_tx.send(Ok((outcomes, settings)));
            let mut worker =
                Worker { engines, serving, cfg, rx, jobs: VecDeque::new(), next_job: 0, stop: false, owner: lock, told_not_owner: false };
            if worker.owner.is_none() {
                worker.owns_index();
            }
            worker.publish_size();
            worker.run();
        })
        .map_err(|e| ComputeError::Unavailable(format!("starting the compute thread: {e}")))?;
    Ok((tx, thread, init_rx))
}

#[cfg(test)]
mod tests {
    use super::attention_batches;

    #[test]
    fn short_texts_fill_whole_batches_and_long_ones_run_in_smaller_ones() {
        // 256 tokens or fewer: plain batches of 8.
        let short = vec![100; 20];
        assert_eq!(attention_batches(&short, 8, usize::MAX), vec![0..8, 8..16, 16..20]);
        // 512 tokens: a quarter of the attention budget each, so 2 per batch.
        let long = vec![512; 5];
        assert_eq!(attention_batches(&long, 8, usize::MAX), vec![0..2, 2..4, 4..5]);
        // Mixed (sorted): the short ones batch fully; the long tail splits.
        let mut mixed = vec![64; 10];
        mixed.extend([300, 300, 300, 300, 512, 512, 512]);
        let b = attention_batches(&mixed, 8, usize::MAX);
        let covered: usize = b.iter().map(|r| r.len()).sum();
        assert_eq!(covered, mixed.len());
        for r in &b {
            let longest = mixed[r.end - 1];
            assert!(r.len() == 1 || r.len() * longest * longest <= 8 * 256 * 256, "{r:?}");
            assert!(r.len() <= 8);
        }
        // A text longer than the whole budget still runs (alone).
        assert_eq!(attention_batches(&[2000, 3000], 1, usize::MAX), vec![0..1, 1..2]);
        assert!(attention_batches(&[], 8, 256).is_empty());
        // The token budget: full-length articles one at a time, half-length ones in pairs, queries up to 8.
        assert_eq!(attention_batches(&[256, 256, 256], 8, 256), vec![0..1, 1..2, 2..3]);
        assert_eq!(attention_batches(&[128, 128, 128], 8, 256), vec![0..2, 2..3]);
        assert_eq!(attention_batches(&[12; 10], 8, 256), vec![0..8, 8..10]);
        // A text longer than the budget still runs (alone).
        assert_eq!(attention_batches(&[20, 400], 8, 256), vec![0..1, 1..2]);
    }
}
