//! Exact top-k scan over FAISS SQ8 codes (`index.kind = "sq8"` once trained), with SIMD chosen at run time.
//!
//! FAISS 1.12 decodes component `d` of an 8-bit non-uniform code `c` as `vmin_d + (c_d + 0.5) / 255 * vdiff_d`
//! (`Codec8bit::decode_component`, `QuantizerTemplate<_, NON_UNIFORM, 1>::reconstruct_component`), an affine
//! function of the byte: `lo_d + step_d * c_d`. So the inner product of a query with a stored vector is
//! `sum_d (q_d * step_d) * c_d + sum_d q_d * lo_d`: one dot product of a per-query weight vector with the bytes,
//! plus a per-query constant. FAISS's own SQ8 search computes the same sum but decodes each component and
//! accumulates into one register (a dependent FMA chain, compiled for AVX2 only); this scan converts the bytes to
//! f32 and accumulates into four independent registers, which leaves it bound by reading the codes (d bytes per
//! vector, a quarter of a flat index's floats).
//!
//! The kernel is picked once per process ([`ScanPath::detect`]): AVX-512F (16 lanes) where the CPU has it, else
//! AVX2+FMA (8 lanes), else portable scalar code. The environment variable `NEWSD_SQ8_SCAN` (`scalar`, `avx2`,
//! `avx512`) forces a path for measurements; a path the CPU lacks falls back to the best available one.

use std::collections::BinaryHeap;
use std::sync::OnceLock;

/// Which kernel scores the codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanPath {
    Scalar,
    Avx2,
    Avx512,
}

impl ScanPath {
    pub fn as_str(self) -> &'static str {
        match self {
            ScanPath::Scalar => "scalar",
            ScanPath::Avx2 => "avx2",
            ScanPath::Avx512 => "avx512",
        }
    }

    /// Whether this CPU can run the path.
    pub fn supported(self) -> bool {
        match self {
            ScanPath::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            ScanPath::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            ScanPath::Avx512 => is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// Every path this CPU can run, slowest first (tests force each).
    pub fn available() -> Vec<ScanPath> {
        [ScanPath::Scalar, ScanPath::Avx2, ScanPath::Avx512].into_iter().filter(|p| p.supported()).collect()
    }

    /// The path searches use: the widest the CPU runs (or `NEWSD_SQ8_SCAN`), detected once per process.
    pub fn detect() -> ScanPath {
        static PATH: OnceLock<ScanPath> = OnceLock::new();
        *PATH.get_or_init(|| {
            let best = *ScanPath::available().last().unwrap_or(&ScanPath::Scalar);
            let forced = std::env::var("NEWSD_SQ8_SCAN").ok().and_then(|v| match v.trim().to_ascii_lowercase().as_str() {
                "scalar" => Some(ScanPath::Scalar),
                "avx2" => Some(ScanPath::Avx2),
                "avx512" => Some(ScanPath::Avx512),
                _ => None,
            });
            match forced {
                Some(p) if p.supported() => p,
                _ => best,
            }
        })
    }
}

/// The affine decode of each dimension, `x_d(c) = lo_d + step_d * c`, as FAISS's quantizer applies it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sq8Affine {
    lo: Vec<f64>,
    step: Vec<f64>,
}

impl Sq8Affine {
    /// From FAISS's own decoding of the 256 codes: `decoded` is 256 rows of `dims` floats, row `c` the decode of
    /// the code whose every byte is `c`. A least-squares line per dimension (in f64) averages out the f32 rounding
    /// of the individual decoded values.
    pub fn from_decoded_levels(decoded: &[f32], dims: usize) -> Option<Sq8Affine> {
        if dims == 0 || decoded.len() != 256 * dims {
            return None;
        }
        let mean_c = 127.5f64;
        let var_c: f64 = (0..256).map(|c| (c as f64 - mean_c).powi(2)).sum();
        let mut lo = vec![0f64; dims];
        let mut step = vec![0f64; dims];
        for d in 0..dims {
            let mean_x = (0..256).map(|c| decoded[c * dims + d] as f64).sum::<f64>() / 256.0;
            let cov: f64 = (0..256).map(|c| (c as f64 - mean_c) * (decoded[c * dims + d] as f64 - mean_x)).sum();
            step[d] = cov / var_c;
            lo[d] = mean_x - step[d] * mean_c;
            if !lo[d].is_finite() || !step[d].is_finite() {
                return None;
            }
        }
        Some(Sq8Affine { lo, step })
    }

    pub fn dims(&self) -> usize {
        self.lo.len()
    }

    /// A query's weights (one per dimension, multiplied with the code bytes) and constant term.
    pub fn query(&self, q: &[f32]) -> (Vec<f32>, f32) {
        let weights = q.iter().zip(&self.step).map(|(&x, &s)| (x as f64 * s) as f32).collect();
        let bias = q.iter().zip(&self.lo).map(|(&x, &l)| x as f64 * l).sum::<f64>() as f32;
        (weights, bias)
    }
}

/// A scored row; ordered so that a `BinaryHeap` of them pops the lowest score (the one to evict).
#[derive(Clone, Copy, PartialEq)]
struct Scored {
    score: f32,
    row: usize,
}

impl Eq for Scored {}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scored {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Reversed: the heap's top is the lowest score (on ties, the highest row).
        other.score.total_cmp(&self.score).then(self.row.cmp(&other.row))
    }
}

/// Rows scored per kernel call: 1,024 x d bytes of codes (384 KiB at 384 dims) and 4 KiB of scores.
const BLOCK_ROWS: usize = 1024;

/// The `k` best rows of `codes` (`n x dims` bytes, row-major) by `<weights, row> + bias`, best first, skipping
/// rows for which `skip(row)` is true (checked only for rows that would enter the top k).
pub fn top_k(path: ScanPath, weights: &[f32], bias: f32, codes: &[u8], dims: usize, k: usize, skip: impl Fn(usize) -> bool) -> Vec<(usize, f32)> {
    assert_eq!(weights.len(), dims, "one weight per dimension");
    assert!(dims > 0 && codes.len() % dims == 0, "codes are whole rows");
    assert!(path.supported(), "the {} scan needs CPU features this machine lacks", path.as_str());
    if k == 0 {
        return Vec::new();
    }
    let n = codes.len() / dims;
    let mut heap: BinaryHeap<Scored> = BinaryHeap::with_capacity(k + 1);
    let mut scores = vec![0f32; BLOCK_ROWS.min(n)];
    let mut start = 0;
    while start < n {
        let rows = BLOCK_ROWS.min(n - start);
        let out = &mut scores[..rows];
        score_rows(path, weights, &codes[start * dims..(start + rows) * dims], dims, out);
        for (i, &s) in out.iter().enumerate() {
            let s = s + bias;
            if heap.len() == k && heap.peek().is_some_and(|worst| s <= worst.score) {
                continue;
            }
            if s.is_nan() || skip(start + i) {
                continue;
            }
            heap.push(Scored { score: s, row: start + i });
            if heap.len() > k {
                heap.pop();
            }
        }
        start += rows;
    }
    // Ascending in `Scored`'s reversed order = best score first.
    heap.into_sorted_vec().into_iter().map(|s| (s.row, s.score)).collect()
}

/// `out[r] = <weights, codes row r>` for every row of `codes` (`out.len()` rows), with the given kernel.
pub fn score_rows(path: ScanPath, weights: &[f32], codes: &[u8], dims: usize, out: &mut [f32]) {
    assert!(weights.len() == dims && codes.len() == out.len() * dims);
    match path {
        #[cfg(target_arch = "x86_64")]
        ScanPath::Avx512 if path.supported() => unsafe { x86::rows_avx512(weights, codes, dims, out) },
        #[cfg(target_arch = "x86_64")]
        ScanPath::Avx2 if path.supported() => unsafe { x86::rows_avx2(weights, codes, dims, out) },
        _ => rows_scalar(weights, codes, dims, out),
    }
}

/// Portable: eight independent accumulators per row (which the compiler may also vectorise).
fn rows_scalar(weights: &[f32], codes: &[u8], dims: usize, out: &mut [f32]) {
    for (row, o) in codes.chunks_exact(dims).zip(out.iter_mut()) {
        let mut acc = [0f32; 8];
        let mut w8 = weights.chunks_exact(8);
        let mut c8 = row.chunks_exact(8);
        for (w, c) in (&mut w8).zip(&mut c8) {
            for j in 0..8 {
                acc[j] += w[j] * c[j] as f32;
            }
        }
        let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
        for (w, &c) in w8.remainder().iter().zip(c8.remainder()) {
            s += w * c as f32;
        }
        *o = s;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Safety: the CPU must have AVX-512F; `weights.len() == dims`, `codes.len() == out.len() * dims`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn rows_avx512(weights: &[f32], codes: &[u8], dims: usize, out: &mut [f32]) {
        let w = weights.as_ptr();
        let full = dims / 16 * 16;
        for (r, o) in out.iter_mut().enumerate() {
            let row = codes.as_ptr().add(r * dims);
            let load = |i: usize| _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(row.add(i) as *const __m128i)));
            let (mut a0, mut a1, mut a2, mut a3) = (_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps());
            let mut i = 0;
            while i + 64 <= full {
                a0 = _mm512_fmadd_ps(load(i), _mm512_loadu_ps(w.add(i)), a0);
                a1 = _mm512_fmadd_ps(load(i + 16), _mm512_loadu_ps(w.add(i + 16)), a1);
                a2 = _mm512_fmadd_ps(load(i + 32), _mm512_loadu_ps(w.add(i + 32)), a2);
                a3 = _mm512_fmadd_ps(load(i + 48), _mm512_loadu_ps(w.add(i + 48)), a3);
                i += 64;
            }
            while i < full {
                a0 = _mm512_fmadd_ps(load(i), _mm512_loadu_ps(w.add(i)), a0);
                i += 16;
            }
            let mut s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
            for j in full..dims {
                s += *w.add(j) * *row.add(j) as f32;
            }
            *o = s;
        }
    }

    /// Safety: the CPU must have AVX2 and FMA; `weights.len() == dims`, `codes.len() == out.len() * dims`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn rows_avx2(weights: &[f32], codes: &[u8], dims: usize, out: &mut [f32]) {
        let w = weights.as_ptr();
        let full = dims / 8 * 8;
        for (r, o) in out.iter_mut().enumerate() {
            let row = codes.as_ptr().add(r * dims);
            let load = |i: usize| _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(row.add(i) as *const __m128i)));
            let (mut a0, mut a1, mut a2, mut a3) = (_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps());
            let mut i = 0;
            while i + 32 <= full {
                a0 = _mm256_fmadd_ps(load(i), _mm256_loadu_ps(w.add(i)), a0);
                a1 = _mm256_fmadd_ps(load(i + 8), _mm256_loadu_ps(w.add(i + 8)), a1);
                a2 = _mm256_fmadd_ps(load(i + 16), _mm256_loadu_ps(w.add(i + 16)), a2);
                a3 = _mm256_fmadd_ps(load(i + 24), _mm256_loadu_ps(w.add(i + 24)), a3);
                i += 32;
            }
            while i < full {
                a0 = _mm256_fmadd_ps(load(i), _mm256_loadu_ps(w.add(i)), a0);
                i += 8;
            }
            let a = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
            let h = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
            let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
            let h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
            let mut s = _mm_cvtss_f32(h);
            for j in full..dims {
                s += *w.add(j) * *row.add(j) as f32;
            }
            *o = s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Every kernel agrees with an f64 reference, for dimensions with and without a SIMD tail.
    #[test]
    fn every_available_kernel_matches_the_reference() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for dims in [1, 7, 16, 37, 64, 100, 384] {
            let rows = 300;
            let weights: Vec<f32> = (0..dims).map(|_| rng.random::<f32>() - 0.5).collect();
            let codes: Vec<u8> = (0..rows * dims).map(|_| rng.random::<u8>()).collect();
            let reference: Vec<(f64, f64)> = codes
                .chunks_exact(dims)
                .map(|r| r.iter().zip(&weights).map(|(&c, &w)| (c as f64 * w as f64, (c as f64 * w as f64).abs())).fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1)))
                .collect();
            for path in ScanPath::available() {
                let mut out = vec![0f32; rows];
                score_rows(path, &weights, &codes, dims, &mut out);
                for (o, (r, magnitude)) in out.iter().zip(&reference) {
                    assert!((*o as f64 - r).abs() <= 1e-5 * magnitude, "{} dims={dims}: {o} vs {r}", path.as_str());
                }
            }
        }
    }

    #[test]
    fn top_k_keeps_the_best_rows_in_order_and_skips() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        let dims = 48;
        let rows = 3000;
        let weights: Vec<f32> = (0..dims).map(|_| rng.random::<f32>() - 0.5).collect();
        let codes: Vec<u8> = (0..rows * dims).map(|_| rng.random::<u8>()).collect();
        let mut all = vec![0f32; rows];
        score_rows(ScanPath::Scalar, &weights, &codes, dims, &mut all);
        let mut order: Vec<usize> = (0..rows).collect();
        order.sort_by(|&a, &b| all[b].total_cmp(&all[a]));
        for path in ScanPath::available() {
            let top = top_k(path, &weights, 0.25, &codes, dims, 10, |_| false);
            assert_eq!(top.iter().map(|t| t.0).collect::<Vec<_>>(), order[..10].to_vec(), "{}", path.as_str());
            assert!(top.iter().all(|&(r, s)| (s - (all[r] + 0.25)).abs() < 1e-3));
            let skipped = top_k(path, &weights, 0.0, &codes, dims, 10, |r| r == order[0] || r == order[3]);
            let want: Vec<usize> = order.iter().copied().filter(|&r| r != order[0] && r != order[3]).take(10).collect();
            assert_eq!(skipped.iter().map(|t| t.0).collect::<Vec<_>>(), want);
            assert_eq!(top_k(path, &weights, 0.0, &codes, dims, rows + 5, |_| false).len(), rows);
        }
    }

    #[test]
    fn the_affine_fit_recovers_the_decode() {
        let dims = 5;
        let (vmin, vdiff) = ([-0.3f32, 0.0, 0.1, -1.0, 0.25], [0.6f32, 0.01, 0.5, 2.0, 0.0]);
        let mut decoded = vec![0f32; 256 * dims];
        for c in 0..256 {
            for d in 0..dims {
                decoded[c * dims + d] = vmin[d] + ((c as f32 + 0.5) / 255.0) * vdiff[d];
            }
        }
        let a = Sq8Affine::from_decoded_levels(&decoded, dims).unwrap();
        for d in 0..dims {
            let lo = vmin[d] as f64 + 0.5 / 255.0 * vdiff[d] as f64;
            assert!((a.lo[d] - lo).abs() < 1e-7 && (a.step[d] - vdiff[d] as f64 / 255.0).abs() < 1e-9, "dim {d}");
        }
        assert!(Sq8Affine::from_decoded_levels(&decoded[1..], dims).is_none());
    }
}
