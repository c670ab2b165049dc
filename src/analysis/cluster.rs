//! Grouping articles into stories: average-link agglomerative clustering on cosine similarity (vectors are
//! L2-normalised, so a dot product is the cosine).

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// L2-normalised mean of vectors.
pub fn centroid(vectors: &[&[f32]]) -> Vec<f32> {
    let dims = vectors.first().map(|v| v.len()).unwrap_or(0);
    let mut c = vec![0f32; dims];
    for v in vectors {
        for (a, b) in c.iter_mut().zip(v.iter()) {
            *a += b;
        }
    }
    let norm = c.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        c.iter_mut().for_each(|x| *x /= norm);
    }
    c
}

/// Clusters `vectors` (indices into the slice): repeatedly merges the two clusters whose average pairwise
/// similarity is highest, while it is at least `threshold`. Average link avoids single-link chaining (a story
/// about A, an article mentioning A and B, a story about B) without complete link's over-splitting.
/// O(n^2) memory and O(n^3) worst-case time: fine for a window of up to a few thousand articles.
pub fn average_link(vectors: &[Vec<f32>], threshold: f32) -> Vec<Vec<usize>> {
    let n = vectors.len();
    if n == 0 {
        return Vec::new();
    }
    // sum[i][j]: sum of pairwise similarities between clusters i and j (only for live clusters).
    let mut sum = vec![vec![0f32; n]; n];
    for i in 0..n {
        for j in (i + 1)..n {
            let s = dot(&vectors[i], &vectors[j]);
            sum[i][j] = s;
            sum[j][i] = s;
        }
    }
    let mut members: Vec<Vec<usize>> = (0..n).map(|i| vec![i]).collect();
    let mut live: Vec<bool> = vec![true; n];
    loop {
        let mut best = (f32::MIN, 0, 0);
        for i in 0..n {
            if !live[i] {
                continue;
            }
            for j in (i + 1)..n {
                if !live[j] {
                    continue;
                }
                let avg = sum[i][j] / (members[i].len() * members[j].len()) as f32;
                if avg > best.0 {
                    best = (avg, i, j);
                }
            }
        }
        let (avg, a, b) = best;
        if avg < threshold {
            break;
        }
        // Merge b into a.
        let moved = std::mem::take(&mut members[b]);
        members[a].extend(moved);
        live[b] = false;
        for k in 0..n {
            if live[k] && k != a {
                let s = sum[a][k] + sum[b][k];
                sum[a][k] = s;
                sum[k][a] = s;
            }
        }
    }
    let mut out: Vec<Vec<usize>> = members.into_iter().zip(live).filter(|(_, l)| *l).map(|(m, _)| m).collect();
    for m in &mut out {
        m.sort_unstable();
    }
    out.sort_by_key(|m| m[0]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    #[test]
    fn groups_close_vectors_and_keeps_distant_ones_apart() {
        let v = vec![
            unit(&[1.0, 0.0, 0.0]),
            unit(&[0.95, 0.1, 0.0]),
            unit(&[0.0, 1.0, 0.0]),
            unit(&[0.9, 0.0, 0.1]),
            unit(&[0.0, 0.0, 1.0]),
            unit(&[0.05, 0.97, 0.0]),
        ];
        let c = average_link(&v, 0.8);
        assert_eq!(c, vec![vec![0, 1, 3], vec![2, 5], vec![4]]);
        assert_eq!(average_link(&v, 0.9999).len(), 6);
        assert_eq!(average_link(&[], 0.5).len(), 0);
    }

    #[test]
    fn average_link_does_not_chain() {
        // a ~ m ~ b, but a and b are unrelated: single link would put all three together.
        let a = unit(&[1.0, 0.0]);
        let b = unit(&[0.0, 1.0]);
        let m = unit(&[1.0, 1.0]);
        let c = average_link(&[a, m, b], 0.7);
        assert_eq!(c.len(), 2, "{c:?}");
    }

    #[test]
    fn centroid_is_normalised() {
        let c = centroid(&[&[1.0, 0.0], &[0.0, 1.0]]);
        assert!((dot(&c, &c) - 1.0).abs() < 1e-6);
    }
}
