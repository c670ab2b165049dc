//! A sentence-embedding model: ONNX Runtime session + HuggingFace tokenizer, mean or CLS pooling, L2 normalisation.
//!
//! Any sentence-transformers-style folder works: `model.onnx` + `tokenizer.json`, with dims / pooling / max tokens /
//! version from an optional `newsd-model.toml`, the model's own `config.json` / `sentence_bert_config.json`, or the
//! `[embed]` section of the config (which wins).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use tokenizers::{Encoding, Tokenizer, TruncationParams};

use crate::compute::error::ComputeError;
use crate::config::{Config, Precision};

/// The fp32 graph in a model folder.
pub const FP32_FILE: &str = "model.onnx";
/// The int8 graph `scripts/setup.sh` makes from it (`scripts/quantize.py`).
pub const INT8_FILE: &str = "model.int8.onnx";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    Mean,
    Cls,
}

/// Everything needed to load a model and to know what its vectors are.
#[derive(Debug, Clone, Serialize)]
pub struct ModelSpec {
    pub dir: PathBuf,
    /// Which graph of the folder runs: [`FP32_FILE`] or [`INT8_FILE`].
    pub precision: Precision,
    pub dims: usize,
    pub pooling: Pooling,
    pub max_tokens: usize,
    pub normalize: bool,
    /// Stored with every vector; a new version means re-embedding into a new index. Unless set in
    /// `newsd-model.toml` or the config: `<folder>-<first 16 hex digits of the sha256 of model.onnx>` (int8:
    /// `int8_version` of `newsd-model.toml`, else `<folder>-int8-<16 hex digits of the sha256 of
    /// model.int8.onnx>`).
    pub version: String,
    /// The identity versions before the sha256 used (`<folder>-<model.onnx size>`), when `version` was derived
    /// from the file: a database made then keeps its vectors (see [`ModelSpec::adopt_legacy_version`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub legacy_version: Option<String>,
    /// Prefixes the model was trained with (`newsd-model.toml`): e5 wants "query: " and "passage: ".
    #[serde(skip_serializing_if = "String::is_empty")]
    pub query_prefix: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub passage_prefix: String,
    pub similarity: Similarity,
}

/// Cache of model file digests in the data directory (hashing a 90 MB model costs ~0.3 s per process start).
pub const DIGEST_CACHE: &str = "model-digests.json";

/// A cached digest, valid while the file keeps its size and modification time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct DigestEntry {
    size: u64,
    mtime_ns: u64,
    sha256: String,
}

/// The sha256 (hex) of a file, from the process's memory, the cache file (keyed by path, size and mtime) or by
/// reading the file; a computed digest is written back to the cache file (best effort).
pub fn file_digest(path: &Path, cache: Option<&Path>) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    use std::collections::HashMap;
    static MEMORY: std::sync::Mutex<Option<HashMap<String, DigestEntry>>> = std::sync::Mutex::new(None);
    let meta = std::fs::metadata(path)?;
    let mtime_ns = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_nanos() as u64).unwrap_or(0);
    let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()).display().to_string();
    let fresh = |e: &DigestEntry| e.size == meta.len() && e.mtime_ns == mtime_ns;
    if let Some(e) = MEMORY.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert_with(HashMap::new).get(&key).filter(|e| fresh(e)) {
        return Ok(e.sha256.clone());
    }
    let mut on_disk: HashMap<String, DigestEntry> =
        cache.and_then(|c| std::fs::read_to_string(c).ok()).and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
    let entry = match on_disk.get(&key).filter(|e| fresh(e)) {
        Some(e) => e.clone(),
        None => {
            let mut hasher = Sha256::new();
            std::io::copy(&mut std::fs::File::open(path)?, &mut hasher)?;
            let e = DigestEntry { size: meta.len(), mtime_ns, sha256: hex::encode(hasher.finalize()) };
            if let Some(c) = cache {
                on_disk.insert(key.clone(), e.clone());
                let text = serde_json::to_string_pretty(&on_disk).unwrap_or_default();
                if let Err(err) = c.parent().map_or(Ok(()), std::fs::create_dir_all).map_err(|e| e.to_string()).and_then(|_| {
                    crate::index::vector::write_atomic(c, text.as_bytes()).map_err(|e| e.to_string())
                }) {
                    tracing::debug!("model digest cache {}: {err}", c.display());
                }
            }
            e
        }
    };
    MEMORY.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert_with(HashMap::new).insert(key, entry.clone());
    Ok(entry.sha256)
}

/// `newsd-model.toml` in a model folder (every field optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelFile {
    dims: Option<usize>,
    pooling: Option<String>,
    max_tokens: Option<usize>,
    normalize: Option<bool>,
    version: Option<String>,
    /// The version of the int8 graph's vectors (default: from the folder name and the graph's digest).
    int8_version: Option<String>,
    /// Similarity levels that mean something for this model's cosines (see [`Similarity`]).
    similarity: Option<Similarity>,
    /// Put before search queries (e5: "query: ").
    query_prefix: Option<String>,
    /// Put before documents (e5: "passage: ").
    passage_prefix: Option<String>,
}

/// Cosine levels for this model's vectors, declared in `[similarity]` of `newsd-model.toml`: models differ (e5's
/// unrelated news sits at ~0.8, MiniLM's at ~0.2), so analysis profiles take these unless they set their own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Similarity {
    /// Articles this close (average link) are one story.
    pub story: Option<f32>,
    /// Earlier articles this close are a story's history.
    pub history: Option<f32>,
    /// A story whose closest earlier episode is this close is recurring.
    pub recurring: Option<f32>,
    /// This close is a repost, not history.
    pub duplicate: Option<f32>,
}

/// What a text is to the model: models trained with prefixes (e5) embed queries and documents differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    /// An article (or any document searched over).
    Passage,
    /// A search query.
    Query,
}

fn missing(path: &Path, what: &str) -> ComputeError {
    ComputeError::Unavailable(format!(
        "{what} not found at {}: run `scripts/setup.sh` to fetch the default model and ONNX Runtime (or point [embed] in the config at your own)",
        path.display()
    ))
}

fn parse_pooling(s: &str) -> Result<Pooling, ComputeError> {
    match s.to_ascii_lowercase().as_str() {
        "mean" => Ok(Pooling::Mean),
        "cls" => Ok(Pooling::Cls),
        other => Err(ComputeError::Failed(format!("unknown pooling {other:?} (expected \"mean\" or \"cls\")"))),
    }
}

impl ModelSpec {
    /// The model the config asks for.
    pub fn from_config(config: &Config) -> Result<ModelSpec, ComputeError> {
        let e = &config.embed;
        let mut spec =
            ModelSpec::from_dir_as(&config.resolve(&e.model_dir), e.precision, Some(&config.data_dir().join(DIGEST_CACHE)))?;
        if let Some(d) = e.dims {
            spec.dims = d;
        }
        if let Some(t) = e.max_tokens {
            spec.max_tokens = t;
        }
        if let Some(p) = &e.pooling {
            spec.pooling = parse_pooling(p)?;
        }
        if let Some(v) = &e.model_version {
            spec.version = match e.precision {
                Precision::Fp32 => v.clone(),
                Precision::Int8 => format!("{v}-int8"),
            };
            spec.legacy_version = None;
        }
        Ok(spec)
    }

    /// What the database records as this model's location ([`ModelSpec::from_registered`] reads it back): the
    /// folder for fp32 (as always), the int8 graph's file for int8.
    pub fn registered_path(&self) -> String {
        match self.precision {
            Precision::Fp32 => self.dir.display().to_string(),
            Precision::Int8 => self.dir.join(INT8_FILE).display().to_string(),
        }
    }

    /// The model a database row names (see [`ModelSpec::registered_path`]).
    pub fn from_registered(path: &Path, digest_cache: Option<&Path>) -> Result<ModelSpec, ComputeError> {
        match (path.file_name().and_then(|n| n.to_str()), path.parent()) {
            (Some(INT8_FILE), Some(dir)) => ModelSpec::from_dir_as(dir, Precision::Int8, digest_cache),
            _ => ModelSpec::from_dir_as(path, Precision::Fp32, digest_cache),
        }
    }

    /// Keeps the identity an existing database knows this model by: when `active` (the database's model version)
    /// is this model's pre-sha256 identity, vectors made with it stay valid and nothing is re-embedded. (A model
    /// file swapped for another of the same size is not detected for such a database, as before; any other change
    /// of the file gives a new version.)
    pub fn adopt_legacy_version(&mut self, active: Option<&str>) {
        if let (Some(legacy), Some(active)) = (&self.legacy_version, active) {
            if legacy == active && self.version != active {
                tracing::debug!(version = %active, sha256_version = %self.version, "the database knows this model by its older identity; keeping it");
                self.version = active.to_string();
            }
        }
    }

    /// Reads a model folder's own settings (without loading the model).
    pub fn from_dir(dir: &Path) -> Result<ModelSpec, ComputeError> {
        ModelSpec::from_dir_cached(dir, None)
    }

    /// [`ModelSpec::from_dir`], with the model file's digest cached in `digest_cache` across processes.
    pub fn from_dir_cached(dir: &Path, digest_cache: Option<&Path>) -> Result<ModelSpec, ComputeError> {
        ModelSpec::from_dir_as(dir, Precision::Fp32, digest_cache)
    }

    /// [`ModelSpec::from_dir_cached`] for the graph of the given precision.
    pub fn from_dir_as(dir: &Path, precision: Precision, digest_cache: Option<&Path>) -> Result<ModelSpec, ComputeError> {
        if !dir.is_dir() {
            return Err(missing(dir, "model folder"));
        }
        let mf: ModelFile = match std::fs::read_to_string(dir.join("newsd-model.toml")) {
            Ok(text) => toml::from_str(&text).map_err(|e| {
                ComputeError::Failed(format!("{}: {}", dir.join("newsd-model.toml").display(), e.message()))
            })?,
            Err(_) => ModelFile::default(),
        };
        let json = |name: &str| -> Option<serde_json::Value> {
            std::fs::read_to_string(dir.join(name)).ok().and_then(|t| serde_json::from_str(&t).ok())
        };
        let dims = mf
            .dims
            .or_else(|| json("config.json").and_then(|c| c.get("hidden_size")?.as_u64()).map(|v| v as usize))
            .unwrap_or(384);
        let max_tokens = mf
            .max_tokens
            .or_else(|| json("sentence_bert_config.json").and_then(|c| c.get("max_seq_length")?.as_u64()).map(|v| v as usize))
            .unwrap_or(256);
        let pooling = match &mf.pooling {
            Some(p) => parse_pooling(p)?,
            None => match json("1_Pooling/config.json") {
                Some(c) if c.get("pooling_mode_cls_token").and_then(|v| v.as_bool()) == Some(true) => Pooling::Cls,
                _ => Pooling::Mean,
            },
        };
        let name = dir.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "model".into());
        let (version, legacy_version) = match (precision, mf.version) {
            (Precision::Int8, _) => {
                let model = dir.join(INT8_FILE);
                if !model.exists() {
                    return Err(ComputeError::Unavailable(format!(
                        "embed.precision = \"int8\" needs {}: run `scripts/setup.sh`, which makes it from {FP32_FILE} with ONNX Runtime's quantization tools",
                        model.display()
                    )));
                }
                // The int8 graph is made by setup from the fp32 one; a new recipe gives new vectors, so its version
                // names the file's digest unless the folder declares one.
                let version = match mf.int8_version {
                    Some(v) => v,
                    None => match file_digest(&model, digest_cache) {
                        Ok(sha) => format!("{name}-int8-{}", &sha[..16]),
                        Err(e) => return Err(ComputeError::Failed(format!("reading {}: {e}", model.display()))),
                    },
                };
                (version, None)
            }
            (Precision::Fp32, Some(v)) => (v, None),
            (Precision::Fp32, None) => {
                let model = dir.join(FP32_FILE);
                let size = std::fs::metadata(&model).map(|m| m.len()).unwrap_or(0);
                let legacy = format!("{name}-{size}");
                // An unreadable model file fails to load later, with its path; its version does not matter.
                match file_digest(&model, digest_cache) {
                    Ok(sha) => (format!("{name}-{}", &sha[..16]), Some(legacy)),
                    Err(_) => (legacy, None),
                }
            }
        };
        Ok(ModelSpec {
            dir: dir.to_path_buf(),
            precision,
            dims,
            pooling,
            max_tokens: max_tokens.max(8),
            normalize: mf.normalize.unwrap_or(true),
            version,
            legacy_version,
            similarity: mf.similarity.unwrap_or_default(),
            query_prefix: mf.query_prefix.unwrap_or_default(),
            passage_prefix: mf.passage_prefix.unwrap_or_default(),
        })
    }

    pub fn model_path(&self) -> PathBuf {
        self.dir.join(match self.precision {
            Precision::Fp32 => FP32_FILE,
            Precision::Int8 => INT8_FILE,
        })
    }

    pub fn tokenizer_path(&self) -> PathBuf {
        self.dir.join("tokenizer.json")
    }
}

/// The process-wide ONNX Runtime environment (ort allows one per process).
fn environment(lib: &Path) -> Result<ort::environment::Environment, ComputeError> {
    static ENV: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let builder = ort::init_from(lib).map_err(|e| format!("loading ONNX Runtime from {}: {e}", lib.display()))?;
        builder.with_name("newsd").build().map_err(|e| format!("starting ONNX Runtime: {e}"))
    })
    .clone()
    .map_err(ComputeError::Unavailable)
}

/// A loaded model. Not shared: the compute worker owns it.
pub struct Model {
    pub spec: ModelSpec,
    session: ort::session::Session,
    tokenizer: Tokenizer,
    cls_id: Option<u32>,
    has_token_type_ids: bool,
    output: String,
    pub threads: usize,
}

impl Model {
    /// Loads the model with `threads` intra-op threads and one inter-op thread (sequential execution).
    pub fn load(spec: ModelSpec, ort_lib: &Path, threads: usize) -> Result<Model, ComputeError> {
        if !ort_lib.exists() {
            return Err(missing(ort_lib, "ONNX Runtime library"));
        }
        for (p, what) in [(spec.model_path(), "model file"), (spec.tokenizer_path(), "tokenizer file")] {
            if !p.exists() {
                return Err(missing(&p, what));
            }
        }
        let env = environment(ort_lib)?;
        let failed = |what: &str, e: &dyn std::fmt::Display| ComputeError::Failed(format!("{what}: {e}"));
        let session = ort::session::Session::builder(&env)
            .map_err(|e| failed("session options", &e))?
            .with_intra_threads(threads)
            .map_err(|e| failed("intra-op threads", &e))?
            .with_inter_threads(1)
            .map_err(|e| failed("inter-op threads", &e))?
            .with_parallel_execution(false)
            .map_err(|e| failed("execution mode", &e))?
            .with_intra_op_spinning(false)
            .map_err(|e| failed("intra-op spinning", &e))?
            // Input shapes vary batch to batch: memory patterns would only be recomputed (and kept) per shape.
            .with_memory_pattern(false)
            .map_err(|e| failed("memory pattern", &e))?
            .commit_from_file(spec.model_path())
            .map_err(|e| failed(&format!("loading {}", spec.model_path().display()), &e))?;
        let mut tokenizer = Tokenizer::from_file(spec.tokenizer_path())
            .map_err(|e| failed(&format!("loading {}", spec.tokenizer_path().display()), &e))?;
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: spec.max_tokens, ..Default::default() }))
            .map_err(|e| failed("tokenizer truncation", &e))?;
        // We pad ourselves, per batch, to the longest sequence in it.
        tokenizer.with_padding(None);
        let inputs: Vec<String> = session.inputs().iter().map(|i| i.name().to_string()).collect();
        for need in ["input_ids", "attention_mask"] {
            if !inputs.iter().any(|i| i == need) {
                return Err(ComputeError::Failed(format!(
                    "{}: model has no {need:?} input (inputs: {inputs:?})",
                    spec.model_path().display()
                )));
            }
        }
        let outputs: Vec<String> = session.outputs().iter().map(|o| o.name().to_string()).collect();
        let output = ["last_hidden_state", "token_embeddings", "sentence_embedding"]
            .iter()
            .find(|n| outputs.iter().any(|o| o == *n))
            .map(|s| s.to_string())
            .or_else(|| outputs.first().cloned())
            .ok_or_else(|| ComputeError::Failed(format!("{}: model has no output", spec.model_path().display())))?;
        let cls_id = tokenizer.token_to_id("[CLS]").or_else(|| tokenizer.token_to_id("<s>"));
        Ok(Model { has_token_type_ids: inputs.iter().any(|i| i == "token_type_ids"), spec, session, tokenizer, cls_id, output, threads })
    }

    /// Tokenizes (with special tokens, truncated to max_tokens, unpadded).
    pub fn tokenize(&self, text: &str) -> Result<Encoding, ComputeError> {
        self.tokenizer.encode(text, true).map_err(|e| ComputeError::Failed(format!("tokenizing: {e}")))
    }

    /// Tokenizes a query or a document with the model's prefix for it.
    pub fn tokenize_as(&self, kind: TextKind, text: &str) -> Result<Encoding, ComputeError> {
        let prefix = match kind {
            TextKind::Passage => &self.spec.passage_prefix,
            TextKind::Query => &self.spec.query_prefix,
        };
        if prefix.is_empty() {
            self.tokenize(text)
        } else {
            self.tokenize(&format!("{prefix}{text}"))
        }
    }

    pub fn cls_token(&self) -> Option<u32> {
        self.cls_id
    }

    /// Runs one batch (padded to its longest sequence) and returns pooled, normalised vectors in input order.
    pub fn infer(&mut self, batch: &[&Encoding]) -> Result<Vec<Vec<f32>>, ComputeError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let b = batch.len();
        let t = batch.iter().map(|e| e.get_ids().len()).max().unwrap_or(1).max(1);
        let mut ids = vec![0i64; b * t];
        let mut mask = vec![0i64; b * t];
        let mut types = vec![0i64; b * t];
        for (row, enc) in batch.iter().enumerate() {
            for (j, ((&id, &m), &ty)) in enc.get_ids().iter().zip(enc.get_attention_mask()).zip(enc.get_type_ids()).enumerate() {
                ids[row * t + j] = id as i64;
                mask[row * t + j] = m as i64;
                types[row * t + j] = ty as i64;
            }
        }
        let span = tracing::debug_span!("inference", texts = b, tokens = t, padded = b * t);
        let _enter = span.enter();
        let started = std::time::Instant::now();
        let failed = |e: ort::Error| ComputeError::Failed(format!("inference: {e}"));
        fn to_tensor(v: &[i64], b: usize, t: usize) -> Result<ort::value::TensorRef<'_, i64>, ComputeError> {
            ort::value::TensorRef::from_array_view(([b, t], v)).map_err(|e| ComputeError::Failed(format!("inference input: {e}")))
        }
        let outputs = if self.has_token_type_ids {
            self.session.run(ort::inputs![
                "input_ids" => to_tensor(&ids, b, t)?,
                "attention_mask" => to_tensor(&mask, b, t)?,
                "token_type_ids" => to_tensor(&types, b, t)?
            ])
        } else {
            self.session.run(ort::inputs!["input_ids" => to_tensor(&ids, b, t)?, "attention_mask" => to_tensor(&mask, b, t)?])
        }
        .map_err(failed)?;
        let (shape, data) = outputs[self.output.as_str()].try_extract_tensor::<f32>().map_err(failed)?;
        let shape: Vec<i64> = shape.iter().copied().collect();
        let dims = self.spec.dims;
        let mut out = Vec::with_capacity(b);
        match shape.as_slice() {
            // Already pooled: [batch, dims].
            [bb, d] if *bb as usize == b && *d as usize == dims => {
                for row in 0..b {
                    out.push(data[row * dims..(row + 1) * dims].to_vec());
                }
            }
            [bb, tt, d] if *bb as usize == b && *tt as usize == t && *d as usize == dims => {
                for row in 0..b {
                    let mut v = vec![0f32; dims];
                    match self.spec.pooling {
                        Pooling::Cls => v.copy_from_slice(&data[row * t * dims..row * t * dims + dims]),
                        Pooling::Mean => {
                            let mut n = 0f32;
                            for j in 0..t {
                                if mask[row * t + j] == 0 {
                                    continue;
                                }
                                n += 1.0;
                                let tok = &data[(row * t + j) * dims..(row * t + j + 1) * dims];
                                for (acc, x) in v.iter_mut().zip(tok) {
                                    *acc += *x;
                                }
                            }
                            let n = n.max(1e-9);
                            v.iter_mut().for_each(|x| *x /= n);
                        }
                    }
                    out.push(v);
                }
            }
            other => {
                return Err(ComputeError::Failed(format!(
                    "model output {:?} has shape {other:?}; expected [{b}, {t}, {dims}] or [{b}, {dims}] (check [embed] dims)",
                    self.output
                )))
            }
        }
        if self.spec.normalize {
            for v in &mut out {
                normalize(v);
            }
        }
        tracing::debug!(texts = b, tokens = t, ms = started.elapsed().as_secs_f64() * 1000.0, "inference done");
        Ok(out)
    }
}

/// L2-normalises in place (a zero vector stays zero).
pub fn normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 1e-12 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn settings_come_from_the_models_own_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("bge-small");
        write(&dir, "model.onnx", "0123456789");
        write(&dir, "config.json", r#"{"hidden_size": 512, "num_attention_heads": 8}"#);
        write(&dir, "sentence_bert_config.json", r#"{"max_seq_length": 128, "do_lower_case": false}"#);
        write(&dir, "1_Pooling/config.json", r#"{"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": false}"#);
        let spec = ModelSpec::from_dir(&dir).unwrap();
        assert_eq!((spec.dims, spec.max_tokens, spec.pooling, spec.normalize), (512, 128, Pooling::Cls, true));
        // Without a declared version, the folder name and the model file's sha256 identify the vectors; the older
        // identity (folder name and size) is kept for databases made with it.
        assert_eq!(spec.version, "bge-small-84d89877f0d4041e");
        assert_eq!(spec.legacy_version.as_deref(), Some("bge-small-10"));
        let mut adopted = spec.clone();
        adopted.adopt_legacy_version(Some("bge-small-10"));
        assert_eq!(adopted.version, "bge-small-10");
        let mut other = spec.clone();
        other.adopt_legacy_version(Some("bge-small-11"));
        assert_eq!(other.version, "bge-small-84d89877f0d4041e", "another size is another model");

        // Same size, other bytes: another version (the old identity could not tell them apart).
        write(&dir, "model.onnx", "9876543210");
        // (Timestamps are coarse: make the rewrite visibly newer, as a real model download is.)
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(10);
        std::fs::File::options().write(true).open(dir.join("model.onnx")).unwrap().set_modified(later).unwrap();
        let swapped = ModelSpec::from_dir(&dir).unwrap();
        assert_ne!(swapped.version, spec.version);
        assert_eq!(swapped.legacy_version, spec.legacy_version);

        // The digest cache: written once, reused while size and mtime match.
        let cache = tmp.path().join("state").join(DIGEST_CACHE);
        write(&dir, "other.onnx", "0123456789");
        let d1 = file_digest(&dir.join("other.onnx"), Some(&cache)).unwrap();
        assert_eq!(d1, "84d89877f0d4041efb6bf91a16f0248f2fd573e6af05c19f96bedb9f882f7882");
        assert!(std::fs::read_to_string(&cache).unwrap().contains(&d1));
        assert_eq!(file_digest(&dir.join("other.onnx"), Some(&cache)).unwrap(), d1);
    }

    #[test]
    fn newsd_model_toml_overrides_the_model_files_and_the_config_overrides_both() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("m");
        write(&dir, "config.json", r#"{"hidden_size": 512}"#);
        write(&dir, "1_Pooling/config.json", r#"{"pooling_mode_cls_token": true}"#);
        write(&dir, "newsd-model.toml", "dims = 384\npooling = \"mean\"\nversion = \"mini-v1\"\nnormalize = false\n");
        let spec = ModelSpec::from_dir(&dir).unwrap();
        assert_eq!((spec.dims, spec.pooling, spec.version.as_str(), spec.normalize), (384, Pooling::Mean, "mini-v1", false));
        assert_eq!(spec.max_tokens, 256, "default when nothing says");

        let mut config = Config::default();
        config.embed.model_dir = dir.clone();
        config.embed.pooling = Some("CLS".into());
        config.embed.max_tokens = Some(64);
        config.embed.model_version = Some("mini-v2".into());
        let spec = ModelSpec::from_config(&config).unwrap();
        assert_eq!((spec.dims, spec.pooling, spec.max_tokens, spec.version.as_str()), (384, Pooling::Cls, 64, "mini-v2"));
    }

    #[test]
    fn the_int8_graph_has_its_own_version_and_is_found_again_from_the_database() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("mini");
        write(&dir, "model.onnx", "fp32 graph");
        write(&dir, "newsd-model.toml", "version = \"mini-fp32-1\"\n");
        let err = ModelSpec::from_dir_as(&dir, Precision::Int8, None).unwrap_err().to_string();
        assert!(err.contains("model.int8.onnx") && err.contains("scripts/setup.sh"), "{err}");
        write(&dir, "model.int8.onnx", "int8 graph");
        let fp32 = ModelSpec::from_dir_as(&dir, Precision::Fp32, None).unwrap();
        let int8 = ModelSpec::from_dir_as(&dir, Precision::Int8, None).unwrap();
        assert_eq!(fp32.version, "mini-fp32-1");
        assert!(int8.version.starts_with("mini-int8-") && int8.version.len() == "mini-int8-".len() + 16, "{}", int8.version);
        assert_eq!(int8.model_path(), dir.join("model.int8.onnx"));
        assert_eq!(fp32.model_path(), dir.join("model.onnx"));
        // What the database records leads back to the same graph (a switch-over serves the old one meanwhile).
        for spec in [&fp32, &int8] {
            let again = ModelSpec::from_registered(Path::new(&spec.registered_path()), None).unwrap();
            assert_eq!((again.precision, again.version.as_str()), (spec.precision, spec.version.as_str()));
        }
        // Another int8 graph (a new quantization recipe) is another version.
        write(&dir, "model.int8.onnx", "int8 graph, recipe 2");
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(10);
        std::fs::File::options().write(true).open(dir.join("model.int8.onnx")).unwrap().set_modified(later).unwrap();
        assert_ne!(ModelSpec::from_dir_as(&dir, Precision::Int8, None).unwrap().version, int8.version);
        // A config-declared version gets the precision appended.
        let mut config = Config::default();
        config.embed.model_dir = dir.clone();
        config.embed.model_version = Some("mine".into());
        config.embed.precision = Precision::Int8;
        assert_eq!(ModelSpec::from_config(&config).unwrap().version, "mine-int8");
    }

    #[test]
    fn bad_model_settings_are_refused_with_the_file_named() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("m");
        write(&dir, "newsd-model.toml", "dimz = 3\n");
        let err = ModelSpec::from_dir(&dir).unwrap_err().to_string();
        assert!(err.contains("newsd-model.toml") && err.contains("dimz"), "{err}");
        write(&dir, "newsd-model.toml", "pooling = \"max\"\n");
        let err = ModelSpec::from_dir(&dir).unwrap_err().to_string();
        assert!(err.contains("unknown pooling \"max\""), "{err}");
        let err = ModelSpec::from_dir(&tmp.path().join("absent")).unwrap_err().to_string();
        assert!(err.contains("model folder not found") && err.contains("scripts/setup.sh"), "{err}");
    }
}
