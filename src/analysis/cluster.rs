//! Grouping articles into stories. Vectors are L2-normalised, so a dot product is the cosine.
//!
//! Two passes:
//! 1. [`average_link`]: average-link agglomerative clustering on cosine similarity, cut where the best average
//!    similarity falls below the threshold. Computed with the nearest-neighbour chain algorithm on a condensed
//!    similarity matrix: O(n^2) time and memory (the textbook greedy loop is O(n^3)). Average link is reducible,
//!    so the chain finds the same hierarchy as the greedy loop, and the cut gives the same partition.
//! 2. [`merge_stories`]: average link on short news vectors misses merges (a speech and its fact-check, a press
//!    conference and the reactions to it land in separate clusters). Two stories are merged when their centroids
//!    are close (a lower threshold than the first pass: `threshold - 0.05` by default) AND they share
//!    distinctive named entities (2 of the 5 most mentioned entities of each story, leaving out those ubiquitous
//!    in the window). Repeated, closest pair first, until no pair qualifies. Deterministic.
//!
//! [`best_previous_match`] links a story to the story of an earlier analysis it updates.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet};

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
    normalize(&mut c);
    c
}

fn normalize(c: &mut [f32]) {
    let norm = c.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        c.iter_mut().for_each(|x| *x /= norm);
    }
}

/// Parameters of [`stories`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StoryParams {
    /// First pass: average-link cosine at or above which articles are one story (the profile's
    /// `cluster_threshold`).
    pub threshold: f32,
    /// Second pass: centroid cosine at or above which two stories that share entities are merged (below
    /// `threshold`).
    pub merge_threshold: f32,
    /// Second pass: distinctive entities two stories must share to be merged.
    pub min_shared_entities: usize,
    /// Entities mentioned by more than this share of the window's articles are ubiquitous ("trump" on a US news
    /// day) and never count as shared.
    pub max_entity_share: f32,
    /// Entities kept per story: the most mentioned among its articles (ties: the rarer in the window first).
    pub top_entities: usize,
}

impl StoryParams {
    /// Defaults around a first-pass threshold: the second pass merges at `threshold - 0.05` when 2 of the 5
    /// top entities are shared, ignoring entities in more than 20% of the window's articles. Measured on
    /// hand-labelled corpus days (tests/stories.rs): with 0.6, pair precision stays at the single pass's
    /// (0.88) while recall goes from 0.38 to 0.60; a lower merge threshold (0.5) or more entities per story (8)
    /// gain a little recall for much precision.
    pub fn new(threshold: f32) -> StoryParams {
        StoryParams {
            threshold,
            merge_threshold: threshold - 0.05,
            min_shared_entities: 2,
            max_entity_share: 0.2,
            top_entities: 5,
        }
    }
}

impl Default for StoryParams {
    fn default() -> StoryParams {
        StoryParams::new(0.6)
    }
}

/// Groups articles into stories: [`average_link`] at `params.threshold`, then [`merge_stories`].
/// `entities[i]` are the (lower-cased) named entities of article `i`, one item per mention (as
/// `words::entities` gives them; may be empty, then only the first pass applies). Returns groups of indices,
/// members sorted, groups ordered by their first member.
pub fn stories(vectors: &[Vec<f32>], entities: &[Vec<String>], params: &StoryParams) -> Vec<Vec<usize>> {
    let groups = average_link(vectors, params.threshold);
    merge_stories(vectors, entities, groups, params)
}

/// Clusters `vectors` (indices into the slice): repeatedly merges the two clusters whose average pairwise
/// similarity is highest, while it is at least `threshold`. Average link avoids single-link chaining (a story
/// about A, an article mentioning A and B, a story about B) without complete link's over-splitting.
/// Nearest-neighbour chain: O(n^2) time, n(n-1)/2 similarities in memory. Members sorted, groups ordered by
/// their first member.
pub fn average_link(vectors: &[Vec<f32>], threshold: f32) -> Vec<Vec<usize>> {
    let n = vectors.len();
    if n == 0 {
        return Vec::new();
    }
    // Condensed upper triangle: sim(i, j), i < j, at i*n - i*(i+1)/2 + (j - i - 1).
    let at = |i: usize, j: usize| -> usize {
        let (i, j) = if i < j { (i, j) } else { (j, i) };
        i * n - i * (i + 1) / 2 + (j - i - 1)
    };
    let mut sim = vec![0f32; n * (n - 1) / 2];
    for i in 0..n {
        for j in (i + 1)..n {
            sim[at(i, j)] = dot(&vectors[i], &vectors[j]);
        }
    }
    let mut size = vec![1usize; n];
    let mut members: Vec<Vec<usize>> = (0..n).map(|i| vec![i]).collect();
    // Clusters that may still merge: not merged into another and not retired (retired: no neighbour at or above
    // the threshold; an average with a merged cluster lies between the averages with its parts, so a retired
    // cluster can never come back above the threshold).
    let mut active = vec![true; n];
    let mut remaining = n;
    let mut next_start = 0;
    let mut chain: Vec<usize> = Vec::new();
    while remaining > 0 {
        if chain.is_empty() {
            while !active[next_start] {
                next_start += 1;
            }
            chain.push(next_start);
        }
        let a = *chain.last().unwrap();
        let prev = (chain.len() >= 2).then(|| chain[chain.len() - 2]);
        // The most similar active neighbour; ties go to the previous chain element (so the chain ends), then to
        // the lowest index.
        let mut best: Option<(f32, usize)> = prev.map(|p| (sim[at(a, p)], p));
        for k in 0..n {
            if k == a || !active[k] || Some(k) == prev {
                continue;
            }
            let s = sim[at(a, k)];
            if best.is_none_or(|(b, _)| s > b) {
                best = Some((s, k));
            }
        }
        match best {
            Some((s, b)) if s >= threshold => {
                if Some(b) == prev {
                    // Reciprocal nearest neighbours: merge b into the lower slot.
                    chain.pop();
                    chain.pop();
                    let (x, y) = if a < b { (a, b) } else { (b, a) };
                    let (nx, ny) = (size[x] as f64, size[y] as f64);
                    for k in 0..n {
                        if k != x && k != y && active[k] {
                            let merged = (nx * sim[at(x, k)] as f64 + ny * sim[at(y, k)] as f64) / (nx + ny);
                            sim[at(x, k)] = merged as f32;
                        }
                    }
                    size[x] += size[y];
                    let moved = std::mem::take(&mut members[y]);
                    members[x].extend(moved);
                    active[y] = false;
                    remaining -= 1;
                } else {
                    chain.push(b);
                }
            }
            _ => {
                // Nothing left to merge with (NaN similarities included).
                chain.pop();
                active[a] = false;
                remaining -= 1;
            }
        }
    }
    finish(members.into_iter().filter(|m| !m.is_empty()).collect())
}

/// Sorted members, groups ordered by their first member.
fn finish(mut groups: Vec<Vec<usize>>) -> Vec<Vec<usize>> {
    for m in &mut groups {
        m.sort_unstable();
    }
    groups.retain(|m| !m.is_empty());
    groups.sort_by_key(|m| m[0]);
    groups
}

/// Window statistics for entity selection: how many articles mention each entity, and which are ubiquitous.
struct EntityStats<'a> {
    df: HashMap<&'a str, usize>,
    max_df: usize,
}

impl<'a> EntityStats<'a> {
    fn new(entities: &'a [Vec<String>], params: &StoryParams) -> EntityStats<'a> {
        let mut df: HashMap<&str, usize> = HashMap::new();
        for es in entities {
            let uniq: HashSet<&str> = es.iter().map(|e| e.as_str()).filter(|e| !e.is_empty()).collect();
            for e in uniq {
                *df.entry(e).or_default() += 1;
            }
        }
        // An entity in two articles is never ubiquitous, whatever the window size.
        let max_df = ((params.max_entity_share.max(0.0) * entities.len() as f32).floor() as usize).max(2);
        EntityStats { df, max_df }
    }

    fn ubiquitous(&self, e: &str) -> bool {
        self.df.get(e).copied().unwrap_or(0) > self.max_df
    }

    /// The story's distinctive entities from its per-entity counts (articles, mentions): the non-ubiquitous ones
    /// mentioned by the most member articles, then mentioned most often, then those mentioned elsewhere in the
    /// window (an entity only this story mentions can link it to nothing), then by name.
    fn top(&self, counts: &HashMap<&'a str, Count>, k: usize) -> Vec<&'a str> {
        let mut es: Vec<(&'a str, Count)> =
            counts.iter().filter(|(e, _)| !self.ubiquitous(e)).map(|(e, c)| (*e, *c)).collect();
        es.sort_by(|a, b| {
            (b.1.articles, b.1.mentions)
                .cmp(&(a.1.articles, a.1.mentions))
                .then_with(|| self.df.get(b.0).cmp(&self.df.get(a.0)))
                .then_with(|| a.0.cmp(b.0))
        });
        es.truncate(k);
        es.into_iter().map(|(e, _)| e).collect()
    }
}

/// How many member articles mention an entity, and how many times in all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Count {
    articles: usize,
    mentions: usize,
}

fn entity_counts<'a>(entities: &'a [Vec<String>], members: &[usize]) -> HashMap<&'a str, Count> {
    let mut counts: HashMap<&str, Count> = HashMap::new();
    for &i in members {
        let Some(es) = entities.get(i) else { continue };
        let mut seen: HashSet<&str> = HashSet::new();
        for e in es.iter().map(|e| e.as_str()).filter(|e| !e.is_empty()) {
            let c = counts.entry(e).or_default();
            c.mentions += 1;
            if seen.insert(e) {
                c.articles += 1;
            }
        }
    }
    counts
}

/// The distinctive entities of a story (articles `members` of the window whose entities are `entities`): those
/// mentioned by the most of its articles, then most often (an entity listed twice for one article counts as two
/// mentions), leaving out those ubiquitous in the window; at most `params.top_entities`, most mentioned first.
/// What [`merge_stories`] compares, and what [`best_previous_match`] wants for each story.
pub fn story_entities(entities: &[Vec<String>], members: &[usize], params: &StoryParams) -> Vec<String> {
    let stats = EntityStats::new(entities, params);
    stats.top(&entity_counts(entities, members), params.top_entities).into_iter().map(str::to_string).collect()
}

struct Story<'a> {
    members: Vec<usize>,
    sum: Vec<f32>,
    centroid: Vec<f32>,
    counts: HashMap<&'a str, Count>,
    top: HashSet<&'a str>,
}

fn make_story<'a>(
    stats: &EntityStats<'a>,
    params: &StoryParams,
    members: Vec<usize>,
    sum: Vec<f32>,
    counts: HashMap<&'a str, Count>,
) -> Story<'a> {
    let mut centroid = sum.clone();
    normalize(&mut centroid);
    let top = stats.top(&counts, params.top_entities).into_iter().collect();
    Story { members, sum, centroid, counts, top }
}

/// A candidate merge, ordered by similarity, then by the lower ids (so the heap pops deterministically).
struct Candidate {
    sim: f32,
    a: usize,
    b: usize,
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        self.sim.total_cmp(&other.sim).then_with(|| other.a.cmp(&self.a)).then_with(|| other.b.cmp(&self.b))
    }
}

/// Second pass over `groups` (from [`average_link`]): merges two stories when their centroids' cosine is at
/// least `params.merge_threshold` and they share at least `params.min_shared_entities` of their distinctive
/// entities ([`story_entities`]); closest pair first, centroids and entities recomputed after each merge, until
/// no pair qualifies. Candidate pairs live in a heap, so a window of n articles costs O(n^2) comparisons.
/// With `min_shared_entities` 0 the entity condition always holds. Members sorted, groups ordered by their first
/// member.
pub fn merge_stories(
    vectors: &[Vec<f32>],
    entities: &[Vec<String>],
    groups: Vec<Vec<usize>>,
    params: &StoryParams,
) -> Vec<Vec<usize>> {
    let stats = EntityStats::new(entities, params);
    let dims = vectors.first().map(|v| v.len()).unwrap_or(0);
    let make = |members: Vec<usize>, sum: Vec<f32>, counts| make_story(&stats, params, members, sum, counts);
    let mut stories: Vec<Option<Story>> = finish(groups)
        .into_iter()
        .map(|members| {
            let mut sum = vec![0f32; dims];
            for &i in &members {
                for (a, b) in sum.iter_mut().zip(&vectors[i]) {
                    *a += b;
                }
            }
            let counts = entity_counts(entities, &members);
            Some(make(members, sum, counts))
        })
        .collect();
    let qualifies = |x: &Story, y: &Story| -> Option<f32> {
        let s = dot(&x.centroid, &y.centroid);
        (s >= params.merge_threshold && x.top.intersection(&y.top).count() >= params.min_shared_entities).then_some(s)
    };
    let mut heap = BinaryHeap::new();
    for a in 0..stories.len() {
        for b in (a + 1)..stories.len() {
            if let Some(sim) = qualifies(stories[a].as_ref().unwrap(), stories[b].as_ref().unwrap()) {
                heap.push(Candidate { sim, a, b });
            }
        }
    }
    while let Some(Candidate { a, b, .. }) = heap.pop() {
        // Stale: one side was merged since (merged stories get new ids, so ids are never reused).
        if stories[a].is_none() || stories[b].is_none() {
            continue;
        }
        let x = stories[a].take().unwrap();
        let y = stories[b].take().unwrap();
        let mut members = x.members;
        members.extend(y.members);
        let sum: Vec<f32> = x.sum.iter().zip(&y.sum).map(|(p, q)| p + q).collect();
        let mut counts = x.counts;
        for (e, c) in y.counts {
            let t = counts.entry(e).or_default();
            t.articles += c.articles;
            t.mentions += c.mentions;
        }
        let merged = make(members, sum, counts);
        let id = stories.len();
        for (k, other) in stories.iter().enumerate() {
            if let Some(sim) = other.as_ref().and_then(|o| qualifies(o, &merged)) {
                heap.push(Candidate { sim, a: k, b: id });
            }
        }
        stories.push(Some(merged));
    }
    finish(stories.into_iter().flatten().map(|s| s.members).collect())
}

/// A story as [`best_previous_match`] sees it: its article ids, its centroid (None when its vectors are gone)
/// and its distinctive entities ([`story_entities`]).
#[derive(Debug, Clone, Copy)]
pub struct StoryKey<'a> {
    pub articles: &'a [i64],
    pub centroid: Option<&'a [f32]>,
    pub entities: &'a [String],
}

/// The earlier story (index into `previous`) that `draft` updates: one sharing articles with it (the most shared
/// articles, then the closest centroid), else one whose centroid is at least `min_similarity` close AND that
/// shares at least `min_shared_entities` entities (the closest); else None. Ties go to the lower index.
pub fn best_previous_match(
    draft: &StoryKey,
    previous: &[StoryKey],
    min_similarity: f32,
    min_shared_entities: usize,
) -> Option<usize> {
    let mine: HashSet<i64> = draft.articles.iter().copied().collect();
    let my_entities: HashSet<&str> = draft.entities.iter().map(|e| e.as_str()).collect();
    // (shared articles, similarity, index): larger is better, except the index.
    let mut best: Option<(usize, f32, usize)> = None;
    for (i, p) in previous.iter().enumerate() {
        let theirs: HashSet<i64> = p.articles.iter().copied().collect();
        let shared = theirs.iter().filter(|id| mine.contains(id)).count();
        let sim = match (draft.centroid, p.centroid) {
            (Some(a), Some(b)) => dot(a, b),
            _ => f32::NEG_INFINITY,
        };
        let qualifies = shared > 0 || {
            let common: HashSet<&str> = p.entities.iter().map(|e| e.as_str()).filter(|e| my_entities.contains(e)).collect();
            sim >= min_similarity && common.len() >= min_shared_entities
        };
        if !qualifies {
            continue;
        }
        let better = match best {
            None => true,
            Some((bs, bsim, _)) => shared > bs || (shared == bs && sim > bsim),
        };
        if better {
            best = Some((shared, sim, i));
        }
    }
    best.map(|(_, _, i)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    /// The textbook greedy average link (O(n^3)): the reference the chain algorithm must reproduce.
    fn average_link_reference(vectors: &[Vec<f32>], threshold: f32) -> Vec<Vec<usize>> {
        let n = vectors.len();
        if n == 0 {
            return Vec::new();
        }
        // sum[i][j]: sum of pairwise similarities between clusters i and j (only for live clusters).
        let mut sum = vec![vec![0f64; n]; n];
        for i in 0..n {
            for j in (i + 1)..n {
                let s = dot(&vectors[i], &vectors[j]) as f64;
                sum[i][j] = s;
                sum[j][i] = s;
            }
        }
        let mut members: Vec<Vec<usize>> = (0..n).map(|i| vec![i]).collect();
        let mut live: Vec<bool> = vec![true; n];
        loop {
            let mut best = (f64::MIN, 0, 0);
            for i in 0..n {
                if !live[i] {
                    continue;
                }
                for j in (i + 1)..n {
                    if !live[j] {
                        continue;
                    }
                    let avg = sum[i][j] / (members[i].len() * members[j].len()) as f64;
                    if avg > best.0 {
                        best = (avg, i, j);
                    }
                }
            }
            let (avg, a, b) = best;
            if avg < threshold as f64 {
                break;
            }
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
        finish(members.into_iter().zip(live).filter(|(_, l)| *l).map(|(m, _)| m).collect())
    }

    /// Deterministic pseudo-random numbers (xorshift64*), uniform in [-1, 1).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> f32 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
            ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        }
    }

    /// `n` unit vectors around `topics` random centres (noise `spread`), so there is real structure to find.
    fn random_vectors(rng: &mut Rng, n: usize, dims: usize, topics: usize, spread: f32) -> Vec<Vec<f32>> {
        let centres: Vec<Vec<f32>> = (0..topics).map(|_| unit(&(0..dims).map(|_| rng.next()).collect::<Vec<_>>())).collect();
        (0..n)
            .map(|i| {
                let c = &centres[i % topics];
                unit(&c.iter().map(|x| x + spread * rng.next()).collect::<Vec<_>>())
            })
            .collect()
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
        assert_eq!(average_link(&v[..1], 0.5), vec![vec![0]]);
        // Everything merges at a threshold below every similarity.
        assert_eq!(average_link(&v, -1.0), vec![vec![0, 1, 2, 3, 4, 5]]);
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
    fn chain_algorithm_equals_the_greedy_reference_on_random_data() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut compared = 0;
        let mut nontrivial = 0;
        for round in 0..40 {
            let n = 5 + round * 3;
            let dims = 4 + round % 13;
            let topics = 1 + round % 7;
            let spread = 0.3 + 0.1 * (round % 8) as f32;
            let v = random_vectors(&mut rng, n, dims, topics, spread);
            for threshold in [0.2f32, 0.45, 0.6, 0.75, 0.9] {
                let fast = average_link(&v, threshold);
                let slow = average_link_reference(&v, threshold);
                assert_eq!(fast, slow, "n {n} dims {dims} topics {topics} threshold {threshold}");
                compared += 1;
                if fast.len() > 1 && fast.len() < n {
                    nontrivial += 1;
                }
            }
        }
        assert_eq!(compared, 200);
        assert!(nontrivial >= 100, "{nontrivial} of 200 comparisons had structure");
    }

    #[test]
    fn chain_algorithm_handles_a_large_window_quickly() {
        let mut rng = Rng(42);
        let v = random_vectors(&mut rng, 3000, 32, 150, 0.15);
        let started = std::time::Instant::now();
        let groups = average_link(&v, 0.6);
        let elapsed = started.elapsed();
        assert_eq!(groups.iter().map(|g| g.len()).sum::<usize>(), 3000);
        assert!(groups.len() >= 100 && groups.len() < 3000, "{} groups", groups.len());
        // The O(n^3) loop takes minutes at this size; the chain a fraction of a second in release builds.
        assert!(elapsed.as_secs_f64() < 20.0, "{elapsed:?}");
    }

    fn ents(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// Two halves of one event (centroid cosine ~0.57: split by a 0.6 first pass), plus 20 filler articles so the
    /// event's entities are not ubiquitous (all fillers mention "washington", which is).
    fn halves(second_half_entities: &[&str]) -> (Vec<Vec<f32>>, Vec<Vec<String>>) {
        let mut v = vec![
            unit(&[1.0, 0.05, 0.0, 0.0, 0.0]),
            unit(&[1.0, 0.0, 0.05, 0.0, 0.0]),
            unit(&[0.55, 0.835, 0.0, 0.0, 0.0]),
            unit(&[0.55, 0.82, 0.05, 0.0, 0.0]),
        ];
        let mut e = vec![
            ents(&["federal reserve", "yellen", "washington"]),
            ents(&["federal reserve", "yellen", "dollar"]),
            ents(second_half_entities),
            ents(second_half_entities),
        ];
        for i in 0..20 {
            let mut f = vec![0.0f32; 5];
            f[2 + i % 3] = 1.0;
            f[(3 + i) % 5] += 0.3;
            v.push(unit(&f));
            e.push(ents(&[&format!("filler{i}"), "washington"]));
        }
        (v, e)
    }

    #[test]
    fn second_pass_merges_halves_that_share_entities() {
        let (v, e) = halves(&["yellen", "federal reserve", "markets"]);
        let params = StoryParams::new(0.6);
        let first = average_link(&v, params.threshold);
        assert!(first.contains(&vec![0, 1]) && first.contains(&vec![2, 3]), "{first:?}");
        let merged = stories(&v, &e, &params);
        assert!(merged.contains(&vec![0, 1, 2, 3]), "{merged:?}");
        // Nothing else merged.
        assert_eq!(merged.len(), first.len() - 1, "{merged:?}");
        // Deterministic.
        assert_eq!(stories(&v, &e, &params), merged);
    }

    #[test]
    fn second_pass_keeps_close_but_entity_disjoint_stories_apart() {
        let (v, e) = halves(&["ecb", "draghi", "frankfurt"]);
        let params = StoryParams::new(0.6);
        let first = average_link(&v, params.threshold);
        assert_eq!(stories(&v, &e, &params), first);
        // One shared entity is not enough at the default of 2.
        let (v, e) = halves(&["ecb", "yellen", "frankfurt"]);
        assert_eq!(stories(&v, &e, &params), first);
        let lenient = StoryParams { min_shared_entities: 1, ..params };
        assert!(stories(&v, &e, &lenient).contains(&vec![0, 1, 2, 3]));
    }

    #[test]
    fn second_pass_ignores_ubiquitous_entities_and_distant_centroids() {
        // The halves share only "washington", which every article mentions.
        let (v, e) = halves(&["washington", "ecb", "lagarde"]);
        let params = StoryParams { min_shared_entities: 1, ..StoryParams::new(0.6) };
        assert_eq!(stories(&v, &e, &params), average_link(&v, params.threshold));
        // Sharing entities is not enough when the centroids are far apart.
        let (v, e) = halves(&["yellen", "federal reserve"]);
        let strict = StoryParams { merge_threshold: 0.9, ..StoryParams::new(0.6) };
        assert_eq!(stories(&v, &e, &strict), average_link(&v, strict.threshold));
    }

    #[test]
    fn second_pass_repeats_until_stable() {
        // A-B qualify; C is too far from A and shares one entity with each of A and B, but two with A+B, whose
        // centroid is close enough: only the repeated pass finds A+B+C.
        let v = vec![
            unit(&[1.0, 0.0, 0.0, 0.0, 0.0, 0.0]),
            unit(&[0.8, 0.6, 0.0, 0.0, 0.0, 0.0]),
            unit(&[0.5, 0.5, 0.707, 0.0, 0.0, 0.0]),
            unit(&[0.0, 0.0, 0.0, 1.0, 0.0, 0.0]),
            unit(&[0.0, 0.0, 0.0, 0.0, 1.0, 0.0]),
            unit(&[0.0, 0.0, 0.0, 0.0, 0.0, 1.0]),
        ];
        let e = vec![
            ents(&["alpha", "beta", "delta"]),
            ents(&["alpha", "beta", "gamma"]),
            ents(&["gamma", "delta"]),
            ents(&["x1"]),
            ents(&["x2"]),
            ents(&["x3"]),
        ];
        let params = StoryParams { threshold: 0.9, merge_threshold: 0.55, min_shared_entities: 2, max_entity_share: 0.5, top_entities: 8 };
        assert_eq!(average_link(&v, 0.9).len(), 6);
        let s = stories(&v, &e, &params);
        assert_eq!(s, vec![vec![0, 1, 2], vec![3], vec![4], vec![5]]);
        // Without A, B and C share one entity: no merge.
        let s = stories(&v[1..], &e[1..], &params);
        assert_eq!(s.len(), 5, "{s:?}");
    }

    #[test]
    fn story_entities_prefer_the_most_mentioned_and_skip_ubiquitous() {
        let e = vec![
            ents(&["trump", "fed", "yellen"]),
            ents(&["trump", "fed"]),
            ents(&["trump", "oscars"]),
            ents(&["trump", "fillon"]),
            ents(&["trump", "wilders"]),
        ];
        let params = StoryParams { top_entities: 2, max_entity_share: 0.5, ..StoryParams::default() };
        assert_eq!(story_entities(&e, &[0, 1], &params), ents(&["fed", "yellen"]));
    }

    #[test]
    fn previous_match_needs_shared_articles_or_a_close_centroid_with_shared_entities() {
        let c1 = unit(&[1.0, 0.0, 0.0]);
        let c2 = unit(&[0.9, 0.3, 0.0]);
        let c3 = unit(&[0.0, 1.0, 0.0]);
        let e_fed = ents(&["fed", "yellen", "rates"]);
        let e_other = ents(&["oscars", "hollywood"]);
        let prev = [
            StoryKey { articles: &[1, 2], centroid: Some(&c3), entities: &e_other },
            StoryKey { articles: &[3, 4], centroid: Some(&c2), entities: &e_fed },
            StoryKey { articles: &[5], centroid: Some(&c1), entities: &e_other },
            StoryKey { articles: &[6, 7], centroid: None, entities: &e_fed },
        ];
        // Shared articles win, whatever the centroid.
        let d = StoryKey { articles: &[2, 9], centroid: Some(&c1), entities: &e_fed };
        assert_eq!(best_previous_match(&d, &prev, 0.8, 2), Some(0));
        // The most shared articles win.
        let d = StoryKey { articles: &[2, 6, 7], centroid: Some(&c1), entities: &e_fed };
        assert_eq!(best_previous_match(&d, &prev, 0.8, 2), Some(3));
        // No shared articles: the close centroid with shared entities (1), not the closer one without (2).
        let d = StoryKey { articles: &[10], centroid: Some(&c1), entities: &e_fed };
        assert_eq!(best_previous_match(&d, &prev, 0.8, 2), Some(1));
        // Too far, or too few shared entities: none.
        assert_eq!(best_previous_match(&d, &prev, 0.99, 2), None);
        assert_eq!(best_previous_match(&d, &prev, 0.8, 4), None);
        let d = StoryKey { articles: &[10], centroid: None, entities: &e_fed };
        assert_eq!(best_previous_match(&d, &prev, 0.0, 1), None);
        assert_eq!(best_previous_match(&d, &[], 0.0, 0), None);
    }

    #[test]
    fn centroid_is_normalised() {
        let c = centroid(&[&[1.0, 0.0], &[0.0, 1.0]]);
        assert!((dot(&c, &c) - 1.0).abs() < 1e-6);
    }
}
