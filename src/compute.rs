//! The compute worker: one OS thread owns the ONNX session and the FAISS index; async code reaches it through a
//! bounded queue. (Interface fixed here; the embedding work fills in the bodies.)

use std::collections::HashMap;

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

/// Cheap to clone; every clone talks to the same worker thread.
#[derive(Clone)]
pub struct ComputeHandle {
    _private: (),
}

impl ComputeHandle {
    /// Embeds texts (L2-normalised vectors, `dims()` long), batched and queued behind other requests.
    pub async fn embed(&self, _texts: Vec<String>) -> Result<Vec<Vec<f32>>, ComputeError> {
        Err(ComputeError::Unavailable("not built yet".into()))
    }

    /// Top-k articles by cosine similarity from the live index.
    pub async fn search(&self, _query: Vec<f32>, _k: usize, _filter: SearchFilter) -> Result<Vec<Hit>, ComputeError> {
        Err(ComputeError::Unavailable("not built yet".into()))
    }

    pub fn dims(&self) -> usize {
        384
    }

    pub fn model_version(&self) -> &str {
        ""
    }
}

impl crate::store::Store {
    /// Stored vectors of these articles for a model version (missing ids are absent from the map).
    pub async fn vectors(&self, _ids: &[i64], _model_version: &str) -> crate::store::Result<HashMap<i64, Vec<f32>>> {
        Ok(HashMap::new())
    }
}

impl crate::app::App {
    /// The compute worker, started on first use (loads the model and the index).
    pub async fn compute(&self) -> anyhow::Result<ComputeHandle> {
        anyhow::bail!("compute worker not built yet")
    }
}
