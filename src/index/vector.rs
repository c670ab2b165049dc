//! One FAISS index of one model version: inner product over L2-normalised vectors (= cosine), ids = article ids.
//!
//! "flat" is `IDMap2,Flat` (exact, supports removal). "hnsw" is `IDMap,HNSW{m}` (approximate; FAISS cannot remove
//! from it, so removed ids become tombstones filtered at search with an `IDSelectorNot(IDSelectorBatch)` and the
//! index is rebuilt by `reindex`).
//!
//! "sq8" is `IDMap2,SQ8`: FAISS's scalar quantizer, one byte per dimension (4x smaller than flat), supports removal
//! like flat; scores are inner products against the decoded vectors. "hnsw_sq8" is `IDMap,HNSW{m}_SQ8` (FAISS's
//! `IndexHNSWSQ`): the HNSW graph over 8-bit vectors, with hnsw's tombstones, duplicates, efSearch and rebuilds.
//! Measured (`newsd bench search`, 100k x 384, 1 thread, 2-core Xeon under load): sq8 is 392 bytes/vector against
//! flat's 1544 but FAISS's own SQ8 search is only ~1.2x faster than flat: FAISS 1.12's AVX2 SQ8 inner-product loop
//! decodes then accumulates into one register (three dependent FMAs per 8 dimensions), so it is bound by FMA
//! latency, not by memory as flat is. So a trained sq8 index is searched by newsd's own exact scan over the FAISS
//! codes (`index::sq8scan`: the same scores, up to float rounding, as FAISS's SQ8 search, with independent
//! accumulators and AVX-512/AVX2/scalar chosen at run time); `search_faiss` keeps FAISS's search callable.
//! hnsw_sq8 holds model + 100k index in ~275 MiB RSS against hnsw's ~420 MiB.
//!
//! The scalar quantizer must be trained (a range per dimension) before it holds anything, but vectors arrive a
//! few at a time, so training on the first add would fix the range from a handful of vectors. Instead an sq8 kind
//! starts *staging*: an exact `IDMap2,Flat` (removal is physical, no tombstones) until it holds
//! `SQ8_TRAIN_THRESHOLD` vectors; then the quantized index is trained on the range of every vector held, widened
//! by a margin so later vectors rarely clip (see `sq8_training_rows`), the vectors are added to it with their ids
//! and the flat is dropped. A staging index is saved and loaded as what it is (a flat file under an sq8 manifest)
//! and converts when an add brings it to the threshold.
//!
//! Files: each save writes a new generation `index.<n>.faiss` (a uniquely named temporary file, fsync, rename), then
//! `manifest.json` (the same way), which names that file; then the previous generation is deleted. A reader reads
//! the manifest first and then the file it names, so it never pairs a manifest with another save's file; if the
//! owner replaced the file in between, the reader sees the manifest changed and reads again. The manifest lets the
//! next start tell a good file from a missing, truncated, foreign or stale one. Only the process holding the
//! index lock saves (see `index::owner`).

use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use faiss::index::IndexImpl;
use faiss::{Idx, Index, MetricType};
use serde::{Deserialize, Serialize};

use super::sq8scan::{self, ScanPath, Sq8Affine};
use crate::compute::error::ComputeError;

/// The index file of manifests before format 2 (one fixed name, rewritten in place).
pub const INDEX_FILE: &str = "index.faiss";
pub const MANIFEST_FILE: &str = "manifest.json";
const MANIFEST_FORMAT: u32 = 2;

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

/// `index.kind`; serialised (manifest, status) as in the config: "flat", "sq8", "hnsw", "hnsw_sq8".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IndexKind {
    Flat,
    Sq8,
    Hnsw,
    HnswSq8,
}

impl IndexKind {
    /// The config's `index.kind` (validated there; anything else is flat).
    pub fn parse(s: &str) -> IndexKind {
        match s.to_ascii_lowercase().as_str() {
            "sq8" => IndexKind::Sq8,
            "hnsw" => IndexKind::Hnsw,
            "hnsw_sq8" => IndexKind::HnswSq8,
            _ => IndexKind::Flat,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            IndexKind::Flat => "flat",
            IndexKind::Sq8 => "sq8",
            IndexKind::Hnsw => "hnsw",
            IndexKind::HnswSq8 => "hnsw_sq8",
        }
    }

    /// A graph: FAISS cannot remove from it (tombstones), searches use efSearch, the config's `hnsw_m` shapes it.
    pub fn is_hnsw(self) -> bool {
        matches!(self, IndexKind::Hnsw | IndexKind::HnswSq8)
    }

    /// 8-bit scalar-quantized vectors (trained once `SQ8_TRAIN_THRESHOLD` vectors are held; staging before).
    pub fn is_sq8(self) -> bool {
        matches!(self, IndexKind::Sq8 | IndexKind::HnswSq8)
    }

    /// The FAISS factory description of the kind's final form (sq8 kinds stage as `IDMap2,Flat` first).
    pub fn description(self, hnsw_m: u32) -> String {
        match self {
            IndexKind::Flat => "IDMap2,Flat".to_string(),
            IndexKind::Sq8 => "IDMap2,SQ8".to_string(),
            IndexKind::Hnsw => format!("IDMap,HNSW{hnsw_m}"),
            IndexKind::HnswSq8 => format!("IDMap,HNSW{hnsw_m}_SQ8"),
        }
    }
}

impl std::fmt::Display for IndexKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An sq8 kind holds an exact flat index until it has this many vectors, then trains the quantizer on them.
/// 2,000 L2-normalised vectors give each dimension's range well (384 dims: over 5 vectors per quantization
/// level); the flat costs at most 2,000 x dims x 4 bytes (3 MB at 384 dims) until then. A full rebuild adds pages
/// of 2,000, so it trains on the first page.
pub const SQ8_TRAIN_THRESHOLD: usize = 2000;

/// The trained range per dimension is the range seen, widened by this share of its span on each side (and at
/// least `SQ8_MIN_MARGIN`), capped to [-1, 1] (the vectors are L2-normalised). Values past the range are clipped
/// to its end when encoded: with 2,000 training vectors the extremes of 100k later ones exceed the seen range by
/// a fraction of its span; the margin costs resolution (steps of span x 1.2 / 255 instead of span / 255), which
/// is far below the spread between neighbours' scores.
const SQ8_MARGIN: f32 = 0.10;
const SQ8_MIN_MARGIN: f32 = 0.01;

/// Two training rows per dimension, its widened minimum and maximum: FAISS's SQ8 (`RS_minmax`) trains each
/// dimension's range as the minimum and maximum of its training values, so these two rows set exactly that range.
fn sq8_training_rows(vectors: &[f32], dims: usize) -> Vec<f32> {
    let mut lo = vec![f32::INFINITY; dims];
    let mut hi = vec![f32::NEG_INFINITY; dims];
    for row in vectors.chunks_exact(dims) {
        for (i, &x) in row.iter().enumerate() {
            lo[i] = lo[i].min(x);
            hi[i] = hi[i].max(x);
        }
    }
    let mut rows = vec![0f32; 2 * dims];
    for i in 0..dims {
        let (l, h) = if lo[i] <= hi[i] { (lo[i], hi[i]) } else { (-1.0, 1.0) };
        let margin = ((h - l) * SQ8_MARGIN).max(SQ8_MIN_MARGIN);
        rows[i] = (l - margin).max(-1.0);
        rows[dims + i] = (h + margin).min(1.0);
    }
    rows
}

/// Written beside the index file after each save.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format: u32,
    pub model_version: String,
    pub kind: IndexKind,
    pub dims: usize,
    pub hnsw_m: u32,
    /// Vectors in the file (including tombstoned ones for hnsw).
    pub count: u64,
    pub max_id: i64,
    /// Order-independent checksum of the ids in the file (see `id_checksum`).
    pub checksum: String,
    pub file_bytes: u64,
    pub saved_at: i64,
    /// The index file this manifest describes, in the same folder (format 1: always `index.faiss`).
    #[serde(default = "legacy_index_file")]
    pub index_file: String,
    /// Increases with every save (0 for format 1).
    #[serde(default)]
    pub generation: u64,
    /// The embeddings change sequence number the saved vectors include (0: unknown, reconciled by ids at start).
    #[serde(default)]
    pub seq: i64,
}

fn legacy_index_file() -> String {
    INDEX_FILE.to_string()
}

impl Manifest {
    /// The index file's path, if the manifest names a plain file in `dir` (nothing else is trusted).
    pub fn index_path(&self, dir: &Path) -> Option<PathBuf> {
        let name = Path::new(&self.index_file);
        let plain = name.file_name().is_some_and(|n| n == name.as_os_str()) && self.index_file.ends_with(".faiss");
        plain.then(|| dir.join(name))
    }
}

/// Order-independent checksum of a set of ids: wrapping sum of a 64-bit mix of each id. Cheap to maintain
/// incrementally and to compute from the database.
pub fn id_hash(id: i64) -> u64 {
    let mut z = (id as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub fn id_checksum<'a>(ids: impl IntoIterator<Item = &'a i64>) -> u64 {
    ids.into_iter().fold(0u64, |acc, id| acc.wrapping_add(id_hash(*id)))
}

fn fail(what: &str, e: impl std::fmt::Display) -> ComputeError {
    ComputeError::Failed(format!("{what}: {e}"))
}

/// `IDSelectorNot(IDSelectorBatch(tombstones))` wrapped in search parameters; all three freed on drop.
struct TombstoneFilter {
    batch: *mut faiss_sys::FaissIDSelectorBatch,
    not: *mut faiss_sys::FaissIDSelectorNot,
    params: *mut faiss_sys::FaissSearchParameters,
}

// The pointers are owned by this value and used only by the thread that owns the index.
unsafe impl Send for TombstoneFilter {}

impl TombstoneFilter {
    fn new(ids: &HashSet<i64>) -> Result<TombstoneFilter, ComputeError> {
        let list: Vec<faiss_sys::idx_t> = ids.iter().copied().collect();
        let mut f = TombstoneFilter { batch: std::ptr::null_mut(), not: std::ptr::null_mut(), params: std::ptr::null_mut() };
        unsafe {
            if faiss_sys::faiss_IDSelectorBatch_new(&mut f.batch, list.len(), list.as_ptr()) != 0 {
                return Err(ComputeError::Failed("creating the tombstone selector".into()));
            }
            if faiss_sys::faiss_IDSelectorNot_new(&mut f.not, f.batch as *const faiss_sys::FaissIDSelector) != 0 {
                return Err(ComputeError::Failed("creating the tombstone selector".into()));
            }
            if faiss_sys::faiss_SearchParameters_new(&mut f.params, f.not as *mut faiss_sys::FaissIDSelector) != 0 {
                return Err(ComputeError::Failed("creating search parameters".into()));
            }
        }
        Ok(f)
    }
}

impl Drop for TombstoneFilter {
    fn drop(&mut self) {
        unsafe {
            if !self.params.is_null() {
                faiss_sys::faiss_SearchParameters_free(self.params);
            }
            if !self.not.is_null() {
                faiss_sys::faiss_IDSelector_free(self.not as *mut faiss_sys::FaissIDSelector);
            }
            if !self.batch.is_null() {
                faiss_sys::faiss_IDSelector_free(self.batch as *mut faiss_sys::FaissIDSelector);
            }
        }
    }
}

pub struct VectorIndex {
    pub version: String,
    pub kind: IndexKind,
    pub dims: usize,
    pub hnsw_m: u32,
    pub ef_search: u32,
    pub dir: PathBuf,
    index: IndexImpl,
    /// Ids physically in the FAISS index.
    ids: HashSet<i64>,
    checksum: u64,
    max_id: i64,
    /// hnsw only: ids in the file that must not be returned (removed or replaced).
    tombstones: HashSet<i64>,
    filter: Option<TombstoneFilter>,
    /// hnsw only: ids added twice (vector replaced): searches de-duplicate.
    duplicates: usize,
    /// sq8 kinds: still the exact `IDMap2,Flat` that precedes training (see the module comment).
    staging: bool,
    /// `sq8` once trained: how the quantizer decodes each dimension, for the scan over its codes (`search`).
    /// Read from the index itself (see `sq8_affine`), never from the manifest; None: searches go to FAISS.
    sq8_decode: Option<Sq8Affine>,
    /// Additions and removals since the last save.
    pub unsaved: usize,
    /// Generation of the last save this process made or loaded.
    generation: u64,
    /// The embeddings change sequence number this index has applied (see `store::EmbeddingChange`); saved in the
    /// manifest so a restarted replica follows on from there.
    pub seq: i64,
}

impl VectorIndex {
    /// An empty index.
    pub fn new(version: &str, kind: IndexKind, dims: usize, hnsw_m: u32, ef_search: u32, dir: PathBuf) -> Result<VectorIndex, ComputeError> {
        let staging = kind.is_sq8();
        let description = if staging { IndexKind::Flat.description(hnsw_m) } else { kind.description(hnsw_m) };
        let index = faiss::index_factory(dims as u32, &description, MetricType::InnerProduct)
            .map_err(|e| fail(&format!("creating FAISS index {description}"), e))?;
        let mut v = VectorIndex {
            version: version.to_string(),
            kind,
            dims,
            hnsw_m,
            ef_search,
            dir,
            index,
            ids: HashSet::new(),
            checksum: 0,
            max_id: 0,
            tombstones: HashSet::new(),
            filter: None,
            duplicates: 0,
            staging,
            sq8_decode: None,
            unsaved: 0,
            generation: 0,
            seq: 0,
        };
        v.apply_ef_search()?;
        Ok(v)
    }

    /// Removed ids stay in the file as tombstones (a graph), rather than being deleted from it.
    fn tombstoning(&self) -> bool {
        self.kind.is_hnsw() && !self.staging
    }

    /// sq8 kinds: whether the index is still the exact flat that precedes training.
    pub fn is_staging(&self) -> bool {
        self.staging
    }

    fn apply_ef_search(&mut self) -> Result<(), ComputeError> {
        if self.kind.is_hnsw() && !self.staging {
            let ps = faiss::index::autotune::ParameterSpace::new().map_err(|e| fail("FAISS parameter space", e))?;
            ps.set_index_parameter(&self.index, "efSearch", self.ef_search as f64).map_err(|e| fail("setting efSearch", e))?;
        }
        Ok(())
    }

    /// Loads the saved index if its manifest and file agree with each other and with what is expected.
    /// `Err(reason)` says why it cannot be used (the caller rebuilds and logs the reason). Never panics on a bad file.
    pub fn load(version: &str, kind: IndexKind, dims: usize, hnsw_m: u32, ef_search: u32, dir: PathBuf) -> Result<VectorIndex, String> {
        let manifest_path = dir.join(MANIFEST_FILE);
        let mut text = read_manifest_text(&manifest_path, &dir)?;
        // The owner may save (new file, new manifest, old file deleted) while this reads: when a load fails and the
        // manifest has changed since it was read, read again. Bounded: a file that is bad stays bad.
        for _ in 0..5 {
            match VectorIndex::load_from(&text, version, kind, dims, hnsw_m, ef_search, dir.clone()) {
                Ok(v) => return Ok(v),
                Err(reason) => match read_manifest_text(&manifest_path, &dir) {
                    Ok(now) if now != text => text = now,
                    _ => return Err(reason),
                },
            }
        }
        Err("the index was replaced repeatedly while it was being read".into())
    }

    #[allow(clippy::too_many_arguments)]
    fn load_from(text: &str, version: &str, kind: IndexKind, dims: usize, hnsw_m: u32, ef_search: u32, dir: PathBuf) -> Result<VectorIndex, String> {
        let m: Manifest = serde_json::from_str(text).map_err(|e| format!("manifest corrupt: {e}"))?;
        let index_path = m.index_path(&dir).ok_or_else(|| format!("manifest names an invalid index file {:?}", m.index_file))?;
        if m.model_version != version {
            return Err(format!("saved index is for model version {:?}, not {version:?}", m.model_version));
        }
        if m.kind != kind || (kind.is_hnsw() && m.hnsw_m != hnsw_m) {
            return Err(format!("saved index is {:?} (m={}), the config asks for {:?} (m={hnsw_m})", m.kind, m.hnsw_m, kind));
        }
        if m.dims != dims {
            return Err(format!("saved index has {} dimensions, the model has {dims}", m.dims));
        }
        let bytes = std::fs::metadata(&index_path).map_err(|e| format!("index file missing: {e}"))?.len();
        if bytes != m.file_bytes {
            return Err(format!("index file is {bytes} bytes, the manifest says {} (truncated or replaced)", m.file_bytes));
        }
        let path = index_path.to_str().ok_or("index path is not UTF-8")?;
        let index = faiss::read_index(path).map_err(|e| format!("index file unreadable: {e}"))?;
        if index.d() as usize != dims {
            return Err(format!("index file has {} dimensions, the model has {dims}", index.d()));
        }
        if index.metric_type() != MetricType::InnerProduct {
            return Err("index file does not use inner product".into());
        }
        let ids = id_map(&index).ok_or("index file is not an id-mapped index")?;
        if ids.len() as u64 != m.count || index.ntotal() != m.count {
            return Err(format!("index file holds {} vectors, the manifest says {}", index.ntotal(), m.count));
        }
        let set: HashSet<i64> = ids.iter().copied().collect();
        let checksum = id_checksum(&set);
        if format!("{checksum:016x}") != m.checksum {
            return Err("index ids do not match the manifest checksum".into());
        }
        // The file's structure must be what the kind makes: flat inside for flat (and staging sq8 kinds), the
        // trained quantizer for sq8, a graph for the hnsw kinds.
        let (inner_flat, inner_sq, trained) = inner_type(&index).ok_or("index file is not an id-mapped index")?;
        let staging = kind.is_sq8() && inner_flat;
        let fits = match kind {
            IndexKind::Flat => inner_flat,
            IndexKind::Sq8 => inner_flat || (inner_sq && trained),
            IndexKind::Hnsw => !inner_flat && !inner_sq,
            IndexKind::HnswSq8 => inner_flat || (!inner_sq && trained),
        };
        if !fits {
            return Err(format!("index file does not hold a {kind} index"));
        }
        let duplicates = ids.len() - set.len();
        if duplicates > 0 && !(kind.is_hnsw() && !staging) {
            return Err(format!("index file holds {duplicates} duplicate ids"));
        }
        let max_id = set.iter().copied().max().unwrap_or(0);
        let mut v = VectorIndex {
            version: version.to_string(),
            kind,
            dims,
            hnsw_m,
            ef_search,
            dir,
            index,
            ids: set,
            checksum,
            max_id,
            tombstones: HashSet::new(),
            filter: None,
            duplicates,
            staging,
            sq8_decode: None,
            unsaved: 0,
            generation: m.generation,
            seq: m.seq,
        };
        v.apply_ef_search().map_err(|e| e.to_string())?;
        v.set_sq8_decode();
        Ok(v)
    }

    /// Ids that searches can return.
    pub fn live_ids(&self) -> impl Iterator<Item = &i64> {
        self.ids.iter().filter(|id| !self.tombstones.contains(id))
    }

    pub fn contains(&self, id: i64) -> bool {
        self.ids.contains(&id) && !self.tombstones.contains(&id)
    }

    pub fn len(&self) -> usize {
        self.ids.len() - self.tombstones.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn tombstones(&self) -> usize {
        self.tombstones.len() + self.duplicates
    }

    pub fn max_id(&self) -> i64 {
        self.max_id
    }

    /// Adds vectors (`vectors.len() == ids.len() * dims`); an id already present is replaced.
    pub fn add(&mut self, ids: &[i64], vectors: &[f32]) -> Result<(), ComputeError> {
        if ids.len() * self.dims != vectors.len() {
            return Err(ComputeError::Failed(format!("{} ids but {} floats ({} dims)", ids.len(), vectors.len(), self.dims)));
        }
        if ids.is_empty() {
            return Ok(());
        }
        // Replace: drop the old vectors first (flat, sq8), or remember that searches must de-duplicate (hnsw).
        let present: Vec<i64> = ids.iter().copied().filter(|id| self.ids.contains(id)).collect();
        let mut changed_tombstones = false;
        if !present.is_empty() {
            if self.tombstoning() {
                for id in &present {
                    if self.tombstones.remove(id) {
                        changed_tombstones = true;
                    }
                }
                self.duplicates += present.len();
            } else {
                self.remove_physical(&present)?;
            }
        }
        let labels: Vec<Idx> = ids.iter().map(|&id| Idx::new(id as u64)).collect();
        self.index.add_with_ids(vectors, &labels).map_err(|e| fail("adding to the FAISS index", e))?;
        for &id in ids {
            if self.ids.insert(id) {
                self.checksum = self.checksum.wrapping_add(id_hash(id));
            }
            self.max_id = self.max_id.max(id);
        }
        if changed_tombstones {
            self.rebuild_filter()?;
        }
        self.unsaved += ids.len();
        if self.staging && self.ids.len() >= SQ8_TRAIN_THRESHOLD {
            self.train_sq8()?;
        }
        Ok(())
    }

    /// Ends staging: trains the kind's quantized index on the vectors the flat holds (their range plus a margin,
    /// see `sq8_training_rows`), adds them with their ids and replaces the flat with it.
    fn train_sq8(&mut self) -> Result<(), ComputeError> {
        let started = std::time::Instant::now();
        let (labels, vectors) = flat_contents(&self.index, self.dims).ok_or_else(|| ComputeError::Failed("staging index is not a flat".into()))?;
        let description = self.kind.description(self.hnsw_m);
        let mut index = faiss::index_factory(self.dims as u32, &description, MetricType::InnerProduct)
            .map_err(|e| fail(&format!("creating FAISS index {description}"), e))?;
        index.train(&sq8_training_rows(&vectors, self.dims)).map_err(|e| fail("training the scalar quantizer", e))?;
        let labels: Vec<Idx> = labels.iter().map(|&id| Idx::new(id as u64)).collect();
        index.add_with_ids(&vectors, &labels).map_err(|e| fail(&format!("adding to the FAISS index {description}"), e))?;
        drop(vectors);
        self.index = index;
        self.staging = false;
        self.apply_ef_search()?;
        self.set_sq8_decode();
        tracing::info!(
            version = %self.version,
            kind = %self.kind,
            vectors = labels.len(),
            ms = started.elapsed().as_millis() as u64,
            "trained the 8-bit scalar quantizer on the vectors held and moved them into it"
        );
        Ok(())
    }

    fn remove_physical(&mut self, ids: &[i64]) -> Result<usize, ComputeError> {
        let labels: Vec<Idx> = ids.iter().map(|&id| Idx::new(id as u64)).collect();
        let sel = faiss::selector::IdSelector::batch(&labels).map_err(|e| fail("id selector", e))?;
        let n = self.index.remove_ids(&sel).map_err(|e| fail("removing from the FAISS index", e))?;
        for id in ids {
            if self.ids.remove(id) {
                self.checksum = self.checksum.wrapping_sub(id_hash(*id));
            }
        }
        Ok(n)
    }

    /// Removes ids (absent ones are ignored); returns how many were live.
    pub fn remove(&mut self, ids: &[i64]) -> Result<usize, ComputeError> {
        let present: Vec<i64> = ids.iter().copied().filter(|id| self.contains(*id)).collect();
        if present.is_empty() {
            return Ok(0);
        }
        if self.tombstoning() {
            self.tombstones.extend(present.iter().copied());
            self.rebuild_filter()?;
        } else {
            self.remove_physical(&present)?;
        }
        self.unsaved += present.len();
        Ok(present.len())
    }

    fn rebuild_filter(&mut self) -> Result<(), ComputeError> {
        self.filter = None;
        if !self.tombstones.is_empty() {
            self.filter = Some(TombstoneFilter::new(&self.tombstones)?);
        }
        Ok(())
    }

    /// Sets (or clears) the decode the sq8 scan needs, from the index as it now is: a trained `sq8` index gets it,
    /// every other kind or state none. Without it (a quantizer this code does not recognise) searches use FAISS.
    fn set_sq8_decode(&mut self) {
        self.sq8_decode = None;
        if self.kind == IndexKind::Sq8 && !self.staging {
            self.sq8_decode = sq8_affine(&self.index, self.dims);
            if self.sq8_decode.is_none() {
                tracing::warn!(version = %self.version, "cannot read the 8-bit quantizer's ranges: sq8 searches use FAISS's own (slower) search");
            }
        }
    }

    /// The kernel `search` uses for a trained sq8 index (None: FAISS searches this index).
    pub fn sq8_scan_path(&self) -> Option<ScanPath> {
        self.sq8_decode.as_ref().map(|_| ScanPath::detect())
    }

    /// Top-k by inner product (= cosine for normalised vectors), skipping excluded and removed ids. A trained sq8
    /// index is scanned by `search_scan` (same scores as FAISS's SQ8 search, faster); everything else by FAISS.
    pub fn search(&mut self, query: &[f32], k: usize, filter: &SearchFilter) -> Result<Vec<Hit>, ComputeError> {
        if let Some(path) = self.sq8_scan_path() {
            return self.search_scan(query, k, filter, path);
        }
        self.search_faiss(query, k, filter)
    }

    /// A trained sq8 index: every code scored against the query with the given kernel (the affine decode folded
    /// into per-query weights, see `sq8scan`), the best k kept, excluded ids skipped, rows mapped to ids. The codes
    /// and id map are read from FAISS at every search: removals compact both, so no pointer outlives a call.
    pub fn search_scan(&self, query: &[f32], k: usize, filter: &SearchFilter, path: ScanPath) -> Result<Vec<Hit>, ComputeError> {
        if query.len() != self.dims {
            return Err(ComputeError::Failed(format!("query has {} dimensions, the index {}", query.len(), self.dims)));
        }
        let decode = self.sq8_decode.as_ref().ok_or_else(|| ComputeError::Failed("not a trained sq8 index".into()))?;
        let (codes, ids) = sq8_rows(&self.index, self.dims).ok_or_else(|| ComputeError::Failed("cannot read the sq8 codes".into()))?;
        if k == 0 || ids.is_empty() {
            return Ok(Vec::new());
        }
        let span = tracing::debug_span!("search", k, vectors = ids.len(), scan = path.as_str());
        let _enter = span.enter();
        let started = std::time::Instant::now();
        let (weights, bias) = decode.query(query);
        let exclude: HashSet<i64> = filter.exclude.iter().copied().filter(|id| self.ids.contains(id)).collect();
        let top = sq8scan::top_k(path, &weights, bias, codes, self.dims, k, |row| !exclude.is_empty() && exclude.contains(&ids[row]));
        let hits: Vec<Hit> = top.into_iter().map(|(row, score)| Hit { article_id: ids[row], score }).collect();
        tracing::debug!(k, hits = hits.len(), us = started.elapsed().as_micros() as u64, "search done");
        Ok(hits)
    }

    /// Top-k through FAISS's own search (every kind; for sq8 the comparison with `search_scan`).
    pub fn search_faiss(&mut self, query: &[f32], k: usize, filter: &SearchFilter) -> Result<Vec<Hit>, ComputeError> {
        if query.len() != self.dims {
            return Err(ComputeError::Failed(format!("query has {} dimensions, the index {}", query.len(), self.dims)));
        }
        let total = self.index.ntotal() as usize;
        if k == 0 || total == 0 {
            return Ok(Vec::new());
        }
        let excluded = filter.exclude.iter().filter(|id| self.ids.contains(id)).count();
        let want = (k + excluded + self.duplicates.min(4 * k)).min(total);
        let span = tracing::debug_span!("search", k, fetched = want, vectors = total);
        let _enter = span.enter();
        let started = std::time::Instant::now();
        let result = match &self.filter {
            Some(f) => unsafe {
                let mut distances = vec![0f32; want];
                let mut labels = vec![-1 as faiss_sys::idx_t; want];
                let code = faiss_sys::faiss_Index_search_with_params(
                    self.index.inner_ptr(),
                    1,
                    query.as_ptr(),
                    want as faiss_sys::idx_t,
                    f.params,
                    distances.as_mut_ptr(),
                    labels.as_mut_ptr(),
                );
                if code != 0 {
                    return Err(ComputeError::Failed("FAISS search failed".into()));
                }
                labels.into_iter().zip(distances).collect::<Vec<_>>()
            },
            None => {
                let r = self.index.search(query, want).map_err(|e| fail("FAISS search", e))?;
                r.labels.iter().map(|l| l.get().map(|v| v as i64).unwrap_or(-1)).zip(r.distances).collect()
            }
        };
        let exclude: HashSet<i64> = filter.exclude.iter().copied().collect();
        let mut seen = HashSet::new();
        let mut hits = Vec::with_capacity(k);
        for (id, score) in result {
            if id < 0 || exclude.contains(&id) || self.tombstones.contains(&id) || !seen.insert(id) {
                continue;
            }
            hits.push(Hit { article_id: id, score });
            if hits.len() == k {
                break;
            }
        }
        tracing::debug!(k, hits = hits.len(), us = started.elapsed().as_micros() as u64, "search done");
        Ok(hits)
    }

    /// Saves a new generation: index to a uniquely named temporary file, fsync, rename to `index.<n>.faiss`; then
    /// the manifest naming it the same way; then the folder; then the previous generation's file is deleted.
    /// Call only in the process holding the index lock.
    pub fn save(&mut self, min_free_bytes: u64) -> Result<(), ComputeError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| fail(&format!("creating {}", self.dir.display()), e))?;
        let needed = (self.ids.len() as u64 + self.duplicates as u64) * (self.dims as u64 * 4 + 8) * 2;
        if let Ok(free) = fs2::available_space(&self.dir) {
            if free < min_free_bytes.max(needed) {
                return Err(ComputeError::Failed(format!(
                    "not saving the index to {}: only {free} bytes free (need {} with the configured reserve)",
                    self.dir.display(),
                    min_free_bytes.max(needed)
                )));
            }
        }
        let span = tracing::debug_span!("index_save", vectors = self.ids.len());
        let _enter = span.enter();
        // After the current file on disk, which another owner may have written since this process loaded it.
        let generation = self.generation.max(read_manifest(&self.dir).map(|m| m.generation).unwrap_or(0)) + 1;
        let name = format!("index.{generation}.faiss");
        let final_path = self.dir.join(&name);
        let tmp = tempfile::Builder::new()
            .prefix(".index.")
            .suffix(".tmp")
            .tempfile_in(&self.dir)
            .map_err(|e| fail(&format!("creating a temporary file in {}", self.dir.display()), e))?;
        let tmp_path = tmp.path().to_path_buf();
        faiss::write_index(&self.index, tmp_path.to_str().ok_or_else(|| ComputeError::Failed("index path is not UTF-8".into()))?)
            .map_err(|e| fail(&format!("writing {}", tmp_path.display()), e))?;
        // FAISS wrote through its own descriptor; syncing ours flushes the same inode.
        tmp.as_file().sync_all().map_err(|e| fail(&format!("fsync {}", tmp_path.display()), e))?;
        let file_bytes = std::fs::metadata(&tmp_path).map_err(|e| fail(&format!("{}", tmp_path.display()), e))?.len();
        tmp.persist(&final_path).map_err(|e| fail(&format!("renaming {} to {}", tmp_path.display(), final_path.display()), e.error))?;
        let m = Manifest {
            format: MANIFEST_FORMAT,
            model_version: self.version.clone(),
            kind: self.kind,
            dims: self.dims,
            hnsw_m: self.hnsw_m,
            count: self.index.ntotal(),
            max_id: self.max_id,
            checksum: format!("{:016x}", self.checksum),
            file_bytes,
            saved_at: crate::store::now_ms(),
            index_file: name.clone(),
            generation,
            seq: self.seq,
        };
        write_atomic(&self.dir.join(MANIFEST_FILE), serde_json::to_string_pretty(&m).unwrap_or_default().as_bytes())?;
        sync_dir(&self.dir);
        self.generation = generation;
        self.unsaved = 0;
        remove_leftovers(&self.dir, &name);
        tracing::debug!(dir = %self.dir.display(), vectors = m.count, bytes = file_bytes, generation, "index saved");
        Ok(())
    }
}

/// Deletes index files other than `keep` and temporary files a crashed save left. Owner only: no other process
/// writes here, and a reader that loses its file to this re-reads the manifest.
pub fn remove_leftovers(dir: &Path, keep: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let stale_index = name.starts_with("index.") && name.ends_with(".faiss") && name != keep;
        let stale_tmp = name.ends_with(".tmp");
        if stale_index || stale_tmp {
            if let Err(e) = std::fs::remove_file(entry.path()) {
                tracing::debug!("removing {}: {e}", entry.path().display());
            }
        }
    }
}

fn read_manifest_text(manifest_path: &Path, dir: &Path) -> Result<String, String> {
    match std::fs::read_to_string(manifest_path) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(if dir.join(INDEX_FILE).exists() { "manifest missing".into() } else { "no saved index".into() })
        }
        Err(e) => Err(format!("manifest unreadable: {e}")),
    }
}

/// The id map of an `IDMap`/`IDMap2` index.
fn id_map(index: &IndexImpl) -> Option<Vec<i64>> {
    unsafe {
        let p = faiss_sys::faiss_IndexIDMap_cast(index.inner_ptr());
        if p.is_null() {
            return None;
        }
        let mut ptr = std::ptr::null_mut();
        let mut n = 0usize;
        faiss_sys::faiss_IndexIDMap_id_map(p, &mut ptr, &mut n);
        if n == 0 {
            return Some(Vec::new());
        }
        if ptr.is_null() {
            return None;
        }
        Some(std::slice::from_raw_parts(ptr as *const i64, n).to_vec())
    }
}

/// A trained `IDMap2,SQ8` index's codes (`n x dims` bytes, row-major) and id map (row -> id), borrowed from FAISS:
/// valid until the index is next changed (the borrow of `index` sees to that).
///
/// FAISS's C API has no accessor for `IndexScalarQuantizer::codes`, but `faiss_IndexFlat_xb` (c_api/IndexFlat_c.cpp)
/// is `reinterpret_cast<IndexFlat*>(index)->get_xb()` = `(float*)codes.data()` with size `codes.size() / 4`, and
/// `codes` is a member of `IndexFlatCodes`, the single, non-virtual base of both `IndexFlat` and
/// `IndexScalarQuantizer` (neither declares a member before it), so the same call yields the scalar quantizer's
/// code bytes. The sizes are checked against `ntotal` and the code size before anything is read.
fn sq8_rows(index: &IndexImpl, dims: usize) -> Option<(&[u8], &[i64])> {
    unsafe {
        let p = faiss_sys::faiss_IndexIDMap_cast(index.inner_ptr());
        if p.is_null() {
            return None;
        }
        let sub = faiss_sys::faiss_IndexIDMap_sub_index(p);
        if sub.is_null() || faiss_sys::faiss_IndexScalarQuantizer_cast(sub).is_null() {
            return None;
        }
        let mut code_size = 0usize;
        if faiss_sys::faiss_Index_sa_code_size(sub, &mut code_size) != 0 || code_size != dims {
            return None;
        }
        let n = faiss_sys::faiss_Index_ntotal(sub) as usize;
        let (mut id_ptr, mut n_ids) = (std::ptr::null_mut(), 0usize);
        faiss_sys::faiss_IndexIDMap_id_map(p, &mut id_ptr, &mut n_ids);
        let (mut code_ptr, mut words) = (std::ptr::null_mut(), 0usize);
        faiss_sys::faiss_IndexFlat_xb(sub as *mut faiss_sys::FaissIndexFlat, &mut code_ptr, &mut words);
        if n_ids != n || words != n * dims / 4 {
            return None;
        }
        if n == 0 {
            return Some((&[], &[]));
        }
        if id_ptr.is_null() || code_ptr.is_null() {
            return None;
        }
        Some((std::slice::from_raw_parts(code_ptr as *const u8, n * dims), std::slice::from_raw_parts(id_ptr as *const i64, n)))
    }
}

/// How a trained `IDMap2,SQ8` index decodes each dimension, as FAISS itself decodes: the 256 codes whose bytes are
/// all 0, all 1, ..., all 255 through `sa_decode` (FAISS's `vmin + (c + 0.5) / 255 * vdiff` per dimension), fitted
/// to one line per dimension. Read from the index rather than kept elsewhere (e.g. the training rows of
/// `train_sq8` in the manifest) because the quantizer inside the file is what encoded the codes: this cannot
/// disagree with them, needs no manifest change, and works for files saved before the scan existed or by another
/// version. None when the index is not an 8-bit scalar quantizer of `dims` bytes per vector.
fn sq8_affine(index: &IndexImpl, dims: usize) -> Option<Sq8Affine> {
    unsafe {
        let p = faiss_sys::faiss_IndexIDMap_cast(index.inner_ptr());
        if p.is_null() {
            return None;
        }
        let sub = faiss_sys::faiss_IndexIDMap_sub_index(p);
        if sub.is_null() || faiss_sys::faiss_IndexScalarQuantizer_cast(sub).is_null() || faiss_sys::faiss_Index_is_trained(sub) == 0 {
            return None;
        }
        let mut code_size = 0usize;
        if faiss_sys::faiss_Index_sa_code_size(sub, &mut code_size) != 0 || code_size != dims {
            return None;
        }
        let codes: Vec<u8> = (0..256usize).flat_map(|c| std::iter::repeat_n(c as u8, dims)).collect();
        let mut decoded = vec![0f32; 256 * dims];
        if faiss_sys::faiss_Index_sa_decode(sub, 256, codes.as_ptr(), decoded.as_mut_ptr()) != 0 {
            return None;
        }
        Sq8Affine::from_decoded_levels(&decoded, dims)
    }
}

/// What an `IDMap`/`IDMap2` index holds: (a flat index, a scalar-quantizer index, trained).
fn inner_type(index: &IndexImpl) -> Option<(bool, bool, bool)> {
    unsafe {
        let p = faiss_sys::faiss_IndexIDMap_cast(index.inner_ptr());
        if p.is_null() {
            return None;
        }
        let sub = faiss_sys::faiss_IndexIDMap_sub_index(p);
        if sub.is_null() {
            return None;
        }
        let flat = !faiss_sys::faiss_IndexFlat_cast(sub).is_null();
        let sq = !faiss_sys::faiss_IndexScalarQuantizer_cast(sub).is_null();
        Some((flat, sq, faiss_sys::faiss_Index_is_trained(sub) != 0))
    }
}

/// The ids and vectors (row-major, in the same order) of an id-mapped flat index.
fn flat_contents(index: &IndexImpl, dims: usize) -> Option<(Vec<i64>, Vec<f32>)> {
    let ids = id_map(index)?;
    unsafe {
        let p = faiss_sys::faiss_IndexIDMap_cast(index.inner_ptr());
        let flat = faiss_sys::faiss_IndexFlat_cast(faiss_sys::faiss_IndexIDMap_sub_index(p));
        if flat.is_null() {
            return None;
        }
        let mut ptr = std::ptr::null_mut();
        let mut n = 0usize;
        faiss_sys::faiss_IndexFlat_xb(flat, &mut ptr, &mut n);
        if n != ids.len() * dims || (n > 0 && ptr.is_null()) {
            return None;
        }
        let vectors = if n == 0 { Vec::new() } else { std::slice::from_raw_parts(ptr as *const f32, n).to_vec() };
        Some((ids, vectors))
    }
}

pub fn read_manifest(dir: &Path) -> Option<Manifest> {
    std::fs::read_to_string(dir.join(MANIFEST_FILE)).ok().and_then(|t| serde_json::from_str(&t).ok())
}

/// The index file a folder's manifest names (the legacy `index.faiss` when there is no readable manifest).
pub fn index_path(dir: &Path) -> PathBuf {
    read_manifest(dir).and_then(|m| m.index_path(dir)).unwrap_or_else(|| dir.join(INDEX_FILE))
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Writes a small file atomically: a uniquely named temporary file beside it (so concurrent writers cannot take
/// each other's), fsync, rename.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), ComputeError> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".newsd.")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| fail(&format!("creating a temporary file in {}", dir.display()), e))?;
    tmp.write_all(data).and_then(|_| tmp.as_file().sync_all()).map_err(|e| fail(&format!("writing {}", tmp.path().display()), e))?;
    tmp.persist(path).map_err(|e| fail(&format!("renaming to {}", path.display()), e.error))?;
    Ok(())
}

/// The folder of a model version's index under the index directory.
pub fn version_dir(index_dir: &Path, version: &str) -> PathBuf {
    let safe: String = version.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
    index_dir.join(safe)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    const DIMS: usize = 64;

    /// Clustered, L2-normalised vectors (like embeddings: neighbours are close, dimensions have unequal ranges).
    fn vectors(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut centres = rand::rngs::StdRng::seed_from_u64(99);
        let centres: Vec<Vec<f32>> =
            (0..25).map(|_| (0..DIMS).map(|i| (centres.random::<f32>() - 0.5) * (1.0 + (i % 7) as f32)).collect()).collect();
        let mut out = Vec::with_capacity(n * DIMS);
        for _ in 0..n {
            let c = &centres[rng.random_range(0..centres.len())];
            let mut v: Vec<f32> = c.iter().enumerate().map(|(i, x)| x + (1.0 + (i % 7) as f32) * (rng.random::<f32>() - 0.5)).collect();
            crate::embed::model::normalize(&mut v);
            out.extend(v);
        }
        out
    }

    fn index(kind: IndexKind, dir: &Path) -> VectorIndex {
        VectorIndex::new("v1", kind, DIMS, 16, 64, dir.to_path_buf()).unwrap()
    }

    /// Exact top-k by inner product over (ids, vectors).
    fn exact(ids: &[i64], data: &[f32], q: &[f32], k: usize) -> Vec<(i64, f32)> {
        let mut all: Vec<(i64, f32)> = ids.iter().zip(data.chunks_exact(DIMS)).map(|(&id, v)| (id, v.iter().zip(q).map(|(a, b)| a * b).sum())).collect();
        all.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap());
        all.truncate(k);
        all
    }

    #[test]
    fn kinds_parse_and_serialise_as_in_the_config() {
        for name in ["flat", "sq8", "hnsw", "hnsw_sq8"] {
            let kind = IndexKind::parse(name);
            assert_eq!(kind.as_str(), name);
            assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{name}\""));
            assert_eq!(serde_json::from_str::<IndexKind>(&format!("\"{name}\"")).unwrap(), kind);
        }
        assert!(IndexKind::HnswSq8.is_hnsw() && IndexKind::HnswSq8.is_sq8() && !IndexKind::Sq8.is_hnsw());
    }

    #[test]
    fn sq8_trains_at_the_threshold_keeps_every_id_and_matches_exact_search() {
        for kind in [IndexKind::Sq8, IndexKind::HnswSq8] {
            let dir = tempfile::tempdir().unwrap();
            let mut v = index(kind, dir.path());
            let n = SQ8_TRAIN_THRESHOLD + 3000;
            let data = vectors(n, 1);
            let ids: Vec<i64> = (1..=n as i64).collect();
            // One at a time at first (as the embedder trickles them in), then in batches, across the threshold.
            for i in 0..50 {
                v.add(&ids[i..i + 1], &data[i * DIMS..(i + 1) * DIMS]).unwrap();
            }
            let mut at = 50;
            while at < SQ8_TRAIN_THRESHOLD - 1 {
                let end = (at + 300).min(SQ8_TRAIN_THRESHOLD - 1);
                v.add(&ids[at..end], &data[at * DIMS..end * DIMS]).unwrap();
                at = end;
            }
            assert!(v.is_staging(), "{kind}: still exact below the threshold");
            v.add(&ids[at..at + 1], &data[at * DIMS..(at + 1) * DIMS]).unwrap();
            at += 1;
            assert!(!v.is_staging(), "{kind}: trained at {SQ8_TRAIN_THRESHOLD} vectors");
            assert_eq!(v.len(), SQ8_TRAIN_THRESHOLD);
            assert!(ids[..at].iter().all(|id| v.contains(*id)), "{kind}: every id kept through training");
            v.add(&ids[at..], &data[at * DIMS..]).unwrap();
            assert_eq!(v.len(), n);
            assert_eq!(v.tombstones(), 0);

            // Queries near stored vectors: recall@10 and scores against exact search.
            let queries = vectors(100, 2);
            let (mut found, mut worst) = (0usize, 0f32);
            for q in queries.chunks_exact(DIMS) {
                let truth = exact(&ids, &data, q, 10);
                let hits = v.search(q, 10, &SearchFilter::default()).unwrap();
                assert_eq!(hits.len(), 10);
                found += hits.iter().filter(|h| truth.iter().any(|t| t.0 == h.article_id)).count();
                for h in &hits {
                    let i = (h.article_id - 1) as usize;
                    let score: f32 = data[i * DIMS..(i + 1) * DIMS].iter().zip(q).map(|(a, b)| a * b).sum();
                    worst = worst.max((score - h.score).abs());
                }
            }
            let recall = found as f64 / 1000.0;
            let floor = if kind == IndexKind::Sq8 { 0.95 } else { 0.9 };
            assert!(recall >= floor, "{kind}: recall@10 {recall} against exact search (scores off by up to {worst})");
            assert!(worst < 0.02, "{kind}: an 8-bit score is off by {worst}");
        }
    }

    #[test]
    fn sq8_removes_and_replaces_physically() {
        let dir = tempfile::tempdir().unwrap();
        let mut v = index(IndexKind::Sq8, dir.path());
        let n = SQ8_TRAIN_THRESHOLD + 500;
        let data = vectors(n, 3);
        let ids: Vec<i64> = (1..=n as i64).collect();
        v.add(&ids, &data).unwrap();
        assert!(!v.is_staging());
        // Removal: gone from the file, not tombstoned; searches never return it.
        let q = &data[..DIMS];
        assert_eq!(v.search(q, 1, &SearchFilter::default()).unwrap()[0].article_id, 1);
        assert_eq!(v.remove(&[1, 2, 3, 999_999]).unwrap(), 3);
        assert_eq!((v.len(), v.tombstones(), v.index.ntotal() as usize), (n - 3, 0, n - 3));
        assert!(v.search(q, 20, &SearchFilter::default()).unwrap().iter().all(|h| h.article_id > 3));
        // Replacement: one vector per id.
        v.add(&[5], &data[..DIMS]).unwrap();
        assert_eq!((v.len(), v.index.ntotal() as usize), (n - 3, n - 3));
        assert_eq!(v.search(q, 1, &SearchFilter::default()).unwrap()[0].article_id, 5);
        // Removing below the threshold does not go back to staging; removing in staging is physical too.
        let mut small = index(IndexKind::HnswSq8, dir.path());
        small.add(&ids[..10], &data[..10 * DIMS]).unwrap();
        assert_eq!(small.remove(&[1]).unwrap(), 1);
        assert_eq!((small.len(), small.tombstones(), small.index.ntotal()), (9, 0, 9));
    }

    #[test]
    fn hnsw_sq8_tombstones_after_training() {
        let dir = tempfile::tempdir().unwrap();
        let mut v = index(IndexKind::HnswSq8, dir.path());
        let n = SQ8_TRAIN_THRESHOLD + 100;
        let data = vectors(n, 4);
        let ids: Vec<i64> = (1..=n as i64).collect();
        v.add(&ids, &data).unwrap();
        assert_eq!(v.remove(&[1]).unwrap(), 1);
        assert_eq!((v.len(), v.tombstones(), v.index.ntotal() as usize), (n - 1, 1, n));
        assert!(v.search(&data[..DIMS], 10, &SearchFilter::default()).unwrap().iter().all(|h| h.article_id != 1));
        v.add(&[2], &data[DIMS..2 * DIMS]).unwrap();
        let hits = v.search(&data[DIMS..2 * DIMS], 10, &SearchFilter::default()).unwrap();
        assert_eq!(hits.iter().filter(|h| h.article_id == 2).count(), 1, "a replaced vector is returned once");
    }

    #[test]
    fn sq8_kinds_save_and_load_staging_and_trained() {
        for kind in [IndexKind::Sq8, IndexKind::HnswSq8] {
            for n in [300, SQ8_TRAIN_THRESHOLD + 700] {
                let dir = tempfile::tempdir().unwrap();
                let mut v = index(kind, dir.path());
                let data = vectors(n + SQ8_TRAIN_THRESHOLD, 5);
                let ids: Vec<i64> = (1..=(n + SQ8_TRAIN_THRESHOLD) as i64).collect();
                v.add(&ids[..n], &data[..n * DIMS]).unwrap();
                let queries = vectors(20, 6);
                let before: Vec<Vec<Hit>> = queries.chunks_exact(DIMS).map(|q| v.search(q, 10, &SearchFilter::default()).unwrap()).collect();
                v.save(0).unwrap();
                let m = read_manifest(dir.path()).unwrap();
                assert_eq!((m.kind, m.count as usize), (kind, n));

                let mut back = VectorIndex::load("v1", kind, DIMS, 16, 64, dir.path().to_path_buf()).unwrap();
                assert_eq!(back.is_staging(), n < SQ8_TRAIN_THRESHOLD, "{kind} n={n}");
                assert_eq!(back.len(), n);
                let after: Vec<Vec<Hit>> = queries.chunks_exact(DIMS).map(|q| back.search(q, 10, &SearchFilter::default()).unwrap()).collect();
                assert_eq!(before, after, "{kind} n={n}: the same results after a reload");

                // Other kinds (and another graph degree) refuse the file: the caller rebuilds.
                for other in [IndexKind::Flat, IndexKind::Hnsw, if kind == IndexKind::Sq8 { IndexKind::HnswSq8 } else { IndexKind::Sq8 }] {
                    assert!(VectorIndex::load("v1", other, DIMS, 16, 64, dir.path().to_path_buf()).is_err());
                }
                if kind.is_hnsw() {
                    assert!(VectorIndex::load("v1", kind, DIMS, 32, 64, dir.path().to_path_buf()).is_err());
                }

                // A reloaded index goes on: a staging one trains when it reaches the threshold.
                back.add(&ids[n..], &data[n * DIMS..]).unwrap();
                assert!(!back.is_staging());
                assert_eq!(back.len(), n + SQ8_TRAIN_THRESHOLD);
                assert!(ids.iter().all(|id| back.contains(*id)));
                back.save(0).unwrap();
                let again = VectorIndex::load("v1", kind, DIMS, 16, 64, dir.path().to_path_buf()).unwrap();
                assert!(!again.is_staging());
                assert_eq!(again.len(), n + SQ8_TRAIN_THRESHOLD);
            }
        }
    }

    /// Random L2-normalised vectors of any dimension (uniform in the cube, then normalised).
    fn random_unit(n: usize, dims: usize, rng: &mut impl Rng) -> Vec<f32> {
        let mut out = Vec::with_capacity(n * dims);
        for _ in 0..n {
            let mut v: Vec<f32> = (0..dims).map(|_| rng.random::<f32>() - 0.5).collect();
            crate::embed::model::normalize(&mut v);
            out.extend(v);
        }
        out
    }

    /// The scan's hits against FAISS's own SQ8 search: scores rank by rank within float rounding, and the same ids
    /// except where two scores tie within that rounding (then either order is right).
    fn assert_same_hits(scan: &[Hit], faiss: &[Hit], what: &str) {
        const TOL: f32 = 2e-5;
        assert_eq!(scan.len(), faiss.len(), "{what}: hit count");
        for (i, (a, b)) in scan.iter().zip(faiss).enumerate() {
            assert!((a.score - b.score).abs() <= TOL, "{what}: rank {i} scores {} (scan) vs {} (FAISS)", a.score, b.score);
        }
        let Some(last) = faiss.last() else { return };
        for (x, y, who) in [(scan, faiss, "scan"), (faiss, scan, "FAISS")] {
            for h in x.iter().filter(|h| h.score > last.score + TOL) {
                assert!(y.iter().any(|o| o.article_id == h.article_id), "{what}: {who} returns {} ({}), the other does not", h.article_id, h.score);
            }
        }
        let mut ids: Vec<i64> = scan.iter().map(|h| h.article_id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), scan.len(), "{what}: an id returned twice");
    }

    #[test]
    fn sq8_scan_matches_faiss_search_on_every_simd_path() {
        let paths = ScanPath::available();
        assert!(paths.contains(&ScanPath::Scalar));
        eprintln!("sq8 scan paths this CPU runs: {paths:?}; searches use {:?}", ScanPath::detect());
        // 64 dims: whole SIMD registers (and FAISS's 8-wide code); 100: a tail past the last register.
        for dims in [64usize, 100] {
            let mut rng = rand::rngs::StdRng::seed_from_u64(dims as u64);
            let dir = tempfile::tempdir().unwrap();
            let mut v = VectorIndex::new("v1", IndexKind::Sq8, dims, 16, 64, dir.path().to_path_buf()).unwrap();
            let n = SQ8_TRAIN_THRESHOLD + 2500;
            let data = random_unit(n, dims, &mut rng);
            // Ids unlike row numbers, so a wrong row -> id mapping shows.
            let ids: Vec<i64> = (0..n as i64).map(|i| 1_000 + 7 * i).collect();
            v.add(&ids, &data).unwrap();
            assert!(!v.is_staging() && v.sq8_scan_path() == Some(ScanPath::detect()));
            // Queries: stored vectors nudged (near neighbours, like real searches) and random ones.
            let mut queries = random_unit(10, dims, &mut rng);
            for i in 0..10 {
                let mut q: Vec<f32> = data[i * 97 * dims..(i * 97 + 1) * dims].iter().map(|x| x + 0.05 * (rng.random::<f32>() - 0.5)).collect();
                crate::embed::model::normalize(&mut q);
                queries.extend(q);
            }
            let check = |v: &mut VectorIndex, what: &str| {
                for (qi, q) in queries.chunks_exact(dims).enumerate() {
                    let none = SearchFilter::default();
                    let faiss = v.search_faiss(q, 10, &none).unwrap();
                    assert_eq!(faiss.len(), 10);
                    for &path in &paths {
                        let scan = v.search_scan(q, 10, &none, path).unwrap();
                        assert_same_hits(&scan, &faiss, &format!("{what} dims={dims} query {qi} {}", path.as_str()));
                    }
                    assert_same_hits(&v.search(q, 10, &none).unwrap(), &faiss, &format!("{what} dims={dims} query {qi} search"));
                    // Excluding the best three (and an id that is not there) returns the next ones.
                    let filter = SearchFilter { exclude: vec![faiss[0].article_id, faiss[1].article_id, faiss[2].article_id, 5] };
                    let faiss_ex = v.search_faiss(q, 10, &filter).unwrap();
                    for &path in &paths {
                        let scan = v.search_scan(q, 10, &filter, path).unwrap();
                        assert!(scan.iter().all(|h| !filter.exclude.contains(&h.article_id)));
                        assert_same_hits(&scan, &faiss_ex, &format!("{what} dims={dims} query {qi} {} excluding", path.as_str()));
                    }
                    // k past the index size: every vector once.
                    if qi == 0 {
                        let all = v.search(q, v.len() + 10, &none).unwrap();
                        assert_eq!(all.len(), v.len());
                        assert!(all.windows(2).all(|w| w[0].score >= w[1].score));
                    }
                }
            };
            check(&mut v, "trained");

            // Removal compacts the codes and the id map (FAISS remove_ids): remove the best hits of some queries
            // and every third id of a stretch, then replace a vector (remove + add at the end).
            let mut gone: Vec<i64> = ids[100..400].iter().copied().step_by(3).collect();
            for q in queries.chunks_exact(dims).take(5) {
                gone.extend(v.search_faiss(q, 2, &SearchFilter::default()).unwrap().iter().map(|h| h.article_id));
            }
            gone.sort_unstable();
            gone.dedup();
            assert_eq!(v.remove(&gone).unwrap(), gone.len());
            v.add(&ids[7..8], &data[0..dims]).unwrap();
            assert_eq!(v.len(), n - gone.len());
            check(&mut v, "after removal");
            for q in queries.chunks_exact(dims) {
                assert!(v.search(q, 20, &SearchFilter::default()).unwrap().iter().all(|h| !gone.contains(&h.article_id)));
            }

            // After a save and load the decode is read back from the file: the same results.
            let before: Vec<Vec<Hit>> = queries.chunks_exact(dims).map(|q| v.search(q, 10, &SearchFilter::default()).unwrap()).collect();
            let decode = v.sq8_decode.clone().unwrap();
            v.save(0).unwrap();
            let mut back = VectorIndex::load("v1", IndexKind::Sq8, dims, 16, 64, dir.path().to_path_buf()).unwrap();
            assert_eq!(back.sq8_decode.as_ref(), Some(&decode), "the decode read from the loaded file");
            let after: Vec<Vec<Hit>> = queries.chunks_exact(dims).map(|q| back.search(q, 10, &SearchFilter::default()).unwrap()).collect();
            assert_eq!(before, after);
            check(&mut back, "after save + load");
        }
    }

    #[test]
    fn only_trained_sq8_is_scanned() {
        let dir = tempfile::tempdir().unwrap();
        let data = vectors(SQ8_TRAIN_THRESHOLD + 10, 8);
        let ids: Vec<i64> = (1..=(SQ8_TRAIN_THRESHOLD + 10) as i64).collect();
        for kind in [IndexKind::Flat, IndexKind::Sq8, IndexKind::Hnsw, IndexKind::HnswSq8] {
            let mut v = index(kind, dir.path());
            v.add(&ids[..100], &data[..100 * DIMS]).unwrap();
            assert_eq!(v.sq8_scan_path(), None, "{kind} below the threshold");
            assert!(v.search_scan(&data[..DIMS], 10, &SearchFilter::default(), ScanPath::Scalar).is_err());
            v.add(&ids[100..], &data[100 * DIMS..]).unwrap();
            assert_eq!(v.sq8_scan_path().is_some(), kind == IndexKind::Sq8, "{kind}");
        }
    }

    #[test]
    fn training_rows_widen_the_seen_range_within_unit_bounds() {
        let data = [0.5f32, -0.2, 0.1, 0.9, 0.3, -0.99];
        let rows = sq8_training_rows(&data, 2);
        // dim 0: 0.1..0.5 (span 0.4, margin 0.04); dim 1: -0.99..0.9 (margin 0.189, capped at -1 and 1).
        assert!((rows[0] - 0.06).abs() < 1e-6 && (rows[2] - 0.54).abs() < 1e-6);
        assert_eq!((rows[1], rows[3]), (-1.0, 1.0));
        // A constant dimension still gets a range.
        let rows = sq8_training_rows(&[0.2, 0.2], 1);
        assert!(rows[0] < 0.2 && rows[1] > 0.2);
    }
}
