//! The compute subsystem's error: the model (embed/model.rs), the index (index/vector.rs) and the worker all
//! return it, so it lives in a leaf module that imports nothing of theirs.

#[derive(Debug, thiserror::Error)]
pub enum ComputeError {
    /// The worker, the model or the runtime cannot be reached or loaded (a missing file, a stopped thread).
    #[error("compute worker is not available: {0}")]
    Unavailable(String),
    /// The worker's queue is full: the caller asked not to wait (the HTTP API answers 503 with Retry-After).
    #[error("the compute worker's queue is full ({0} requests waiting); try again shortly")]
    Busy(usize),
    /// One request failed (inference, a FAISS call, an index file); the worker keeps serving.
    #[error("{0}")]
    Failed(String),
}
