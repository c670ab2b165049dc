//! Story grouping measured on hand-labelled days of the real corpus: every article of three days (all outlets)
//! embedded with the real model, grouped by the single-pass average link and by the two-pass `cluster::stories`,
//! and scored against `tests/fixtures/story_labels.toml` by pairs (precision: of the article pairs put in one
//! story, the share that are one event; recall: of the pairs that are one event, the share put in one story).
//! Nothing is mocked. `NEWSD_STORIES_VERBOSE=1` prints every multi-article story and every missed or wrong pair.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use chrono::NaiveDate;
use newsd::analysis::cluster::{self, StoryParams};
use newsd::analysis::words;
use newsd::embed::model::{Model, ModelSpec};
use newsd::testkit::corpus::{self, CorpusArticle};

#[derive(serde::Deserialize)]
struct Labels {
    day: Vec<Day>,
}

#[derive(serde::Deserialize)]
struct Day {
    date: NaiveDate,
    #[serde(default)]
    unsure: Vec<i64>,
    #[serde(default)]
    event: Vec<Event>,
}

#[derive(serde::Deserialize)]
struct Event {
    name: String,
    articles: Vec<i64>,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn labels() -> Labels {
    let path = root().join("tests/fixtures/story_labels.toml");
    toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Named entities as the analysis extracts them: `words::entities` over the title and the first 2,000
/// characters of the body.
fn entities(a: &CorpusArticle) -> Vec<String> {
    let head: String = a.text.chars().take(2000).collect();
    words::entities(&format!("{}\n{}", a.title, head))
}

/// Pairwise counts of a grouping against the labels, over the labelled (not unsure) articles.
#[derive(Default, Clone, Copy)]
struct Score {
    true_positive: usize,
    predicted: usize,
    actual: usize,
    missed_merges: usize,
    wrong_merges: usize,
}

impl Score {
    fn add(&mut self, o: Score) {
        self.true_positive += o.true_positive;
        self.predicted += o.predicted;
        self.actual += o.actual;
        self.missed_merges += o.missed_merges;
        self.wrong_merges += o.wrong_merges;
    }
    fn precision(&self) -> f64 {
        if self.predicted == 0 {
            1.0
        } else {
            self.true_positive as f64 / self.predicted as f64
        }
    }
    fn recall(&self) -> f64 {
        if self.actual == 0 {
            1.0
        } else {
            self.true_positive as f64 / self.actual as f64
        }
    }
}

fn score(ids: &[i64], groups: &[Vec<usize>], event_of: &HashMap<i64, usize>, unsure: &HashSet<i64>) -> (Score, Vec<(i64, i64, bool)>) {
    let mut story_of = vec![usize::MAX; ids.len()];
    for (g, members) in groups.iter().enumerate() {
        for &i in members {
            story_of[i] = g;
        }
    }
    let mut s = Score::default();
    let mut errors = Vec::new();
    for i in 0..ids.len() {
        if unsure.contains(&ids[i]) {
            continue;
        }
        for j in (i + 1)..ids.len() {
            if unsure.contains(&ids[j]) {
                continue;
            }
            let same_event = event_of[&ids[i]] == event_of[&ids[j]];
            let same_story = story_of[i] == story_of[j];
            s.actual += same_event as usize;
            s.predicted += same_story as usize;
            s.true_positive += (same_event && same_story) as usize;
            if same_event != same_story {
                errors.push((ids[i], ids[j], same_story));
            }
        }
    }
    // Story-level counts, as a reader sees them: an event spread over k stories is k-1 missed merges; a story
    // holding articles of k events is k-1 wrong merges.
    let mut stories_of_event: HashMap<usize, HashSet<usize>> = HashMap::new();
    let mut events_of_story: HashMap<usize, HashSet<usize>> = HashMap::new();
    for i in (0..ids.len()).filter(|&i| !unsure.contains(&ids[i])) {
        stories_of_event.entry(event_of[&ids[i]]).or_default().insert(story_of[i]);
        events_of_story.entry(story_of[i]).or_default().insert(event_of[&ids[i]]);
    }
    s.missed_merges = stories_of_event.values().map(|x| x.len() - 1).sum();
    s.wrong_merges = events_of_story.values().map(|x| x.len() - 1).sum();
    (s, errors)
}

#[test]
fn two_pass_stories_beat_single_pass_average_link_on_labelled_days() {
    let verbose = std::env::var_os("NEWSD_STORIES_VERBOSE").is_some();
    let labels = labels();
    let all = corpus::load().expect("the test corpus is fetched by scripts/setup.sh (see README)");
    // NEWSD_TEST_MODEL_DIR and NEWSD_STORIES_THRESHOLD measure another model (e.g. multilingual-e5-small, whose
    // cosines run higher) at its own threshold; NEWSD_STORIES_SWEEP prints two-pass scores over thresholds.
    let model_dir = std::env::var_os("NEWSD_TEST_MODEL_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("models/all-MiniLM-L6-v2"));
    let spec = ModelSpec::from_dir(&model_dir).unwrap();
    let max_tokens = spec.max_tokens;
    let mut model = Model::load(spec, &root().join("models/onnxruntime/libonnxruntime.so.1.32.0"), 2).unwrap();
    let threshold = std::env::var("NEWSD_STORIES_THRESHOLD").ok().and_then(|t| t.parse().ok()).unwrap_or(newsd::analysis::config::Thresholds::default().cluster);
    // NEWSD_STORIES_SWEEP=FROM: 12 thresholds from FROM in steps of 0.01.
    let sweep: Vec<f32> = match std::env::var("NEWSD_STORIES_SWEEP").ok().and_then(|t| t.parse::<f32>().ok()) {
        Some(from) => (0..12).map(|i| from + 0.01 * i as f32).collect(),
        None => Vec::new(),
    };
    let mut swept: Vec<Score> = sweep.iter().map(|_| Score::default()).collect();
    let params = StoryParams::new(threshold);
    println!("profile default cluster_threshold {threshold}; {params:?}");

    let mut total_old = Score::default();
    let mut total_new = Score::default();
    let mut labelled_articles = 0;
    let mut multi_outlet_events = 0;
    for day in &labels.day {
        let articles: Vec<&CorpusArticle> = all.iter().filter(|a| a.published.map(|p| p.date_naive()) == Some(day.date)).collect();
        let ids: Vec<i64> = articles.iter().map(|a| a.id).collect();
        let by_id: HashMap<i64, &CorpusArticle> = articles.iter().map(|a| (a.id, *a)).collect();

        // The labels are well formed: every id is an article of that day, in at most one event.
        let mut event_of: HashMap<i64, usize> = HashMap::new();
        for (e, event) in day.event.iter().enumerate() {
            assert!(event.articles.len() >= 2, "{}: {:?} has one article", day.date, event.name);
            let mut outlets: HashSet<&str> = HashSet::new();
            for id in &event.articles {
                let a = by_id.get(id).unwrap_or_else(|| panic!("{}: article {id} ({}) is not of that day", day.date, event.name));
                outlets.insert(&a.source);
                assert!(event_of.insert(*id, e).is_none(), "{}: article {id} in two events", day.date);
            }
            multi_outlet_events += (outlets.len() >= 2) as usize;
        }
        let unsure: HashSet<i64> = day.unsure.iter().copied().collect();
        for id in &unsure {
            assert!(by_id.contains_key(id) && !event_of.contains_key(id), "{}: unsure article {id}", day.date);
        }
        // Every other article is an event of its own.
        for (k, id) in ids.iter().enumerate() {
            event_of.entry(*id).or_insert(day.event.len() + k);
        }
        labelled_articles += ids.len() - unsure.len();

        // Embedded as the embed task does (title, blank line, body; the tokenizer truncates).
        let texts: Vec<String> = articles.iter().map(|a| newsd::embed::article_text(&a.title, &a.text, max_tokens)).collect();
        let mut vectors: Vec<Vec<f32>> = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(16) {
            let encodings: Vec<_> = chunk.iter().map(|t| model.tokenize_as(newsd::embed::model::TextKind::Passage, t).unwrap()).collect();
            vectors.extend(model.infer(&encodings.iter().collect::<Vec<_>>()).unwrap());
        }
        let ents: Vec<Vec<String>> = articles.iter().map(|a| entities(a)).collect();

        let old = cluster::average_link(&vectors, threshold);
        let new = cluster::stories(&vectors, &ents, &params);
        let (s_old, _) = score(&ids, &old, &event_of, &unsure);
        let (s_new, errors) = score(&ids, &new, &event_of, &unsure);
        println!(
            "{}: {} articles ({} unsure), {} labelled events; single pass: {} stories, precision {:.3} recall {:.3}, {} missed / {} wrong merges; two passes: {} stories, precision {:.3} recall {:.3}, {} missed / {} wrong merges",
            day.date,
            ids.len(),
            unsure.len(),
            day.event.len(),
            old.len(),
            s_old.precision(),
            s_old.recall(),
            s_old.missed_merges,
            s_old.wrong_merges,
            new.len(),
            s_new.precision(),
            s_new.recall(),
            s_new.missed_merges,
            s_new.wrong_merges
        );
        if verbose {
            let title = |id: i64| format!("{id} {} | {}", by_id[&id].source, by_id[&id].title.chars().take(70).collect::<String>());
            for g in new.iter().filter(|g| g.len() > 1) {
                println!("  story:");
                for &i in g {
                    println!("    {}", title(ids[i]));
                }
            }
            for (a, b, together) in &errors {
                println!("  {} {} / {}", if *together { "WRONG" } else { "MISSED" }, title(*a), title(*b));
            }
        }
        total_old.add(s_old);
        total_new.add(s_new);
        for (th, acc) in sweep.iter().zip(swept.iter_mut()) {
            acc.add(score(&ids, &cluster::stories(&vectors, &ents, &StoryParams::new(*th)), &event_of, &unsure).0);
        }
    }
    for (th, s) in sweep.iter().zip(&swept) {
        println!("sweep: threshold {th:.2}: precision {:.3} recall {:.3}, {} missed / {} wrong merges", s.precision(), s.recall(), s.missed_merges, s.wrong_merges);
    }
    println!(
        "all days: {labelled_articles} labelled articles, {} same-event pairs; single pass: precision {:.3} recall {:.3}, {} missed / {} wrong merges; two passes: precision {:.3} recall {:.3}, {} missed / {} wrong merges",
        total_new.actual,
        total_old.precision(),
        total_old.recall(),
        total_old.missed_merges,
        total_old.wrong_merges,
        total_new.precision(),
        total_new.recall(),
        total_new.missed_merges,
        total_new.wrong_merges
    );
    assert!(total_new.missed_merges < total_old.missed_merges, "missed merges {} vs {}", total_new.missed_merges, total_old.missed_merges);
    assert!(labelled_articles >= 60 && multi_outlet_events >= 10, "{labelled_articles} articles, {multi_outlet_events} multi-outlet events");
    // Floors from the measurement (single pass: precision 0.884, recall 0.384; two passes: precision 0.885, recall
    // 0.598), with a margin for float differences between machines: the second pass finds missed merges and
    // keeps the precision of the first.
    assert!(total_new.precision() >= 0.85, "two-pass precision {:.3}", total_new.precision());
    assert!(total_new.precision() >= total_old.precision() - 0.03, "two-pass precision {:.3} vs single pass {:.3}", total_new.precision(), total_old.precision());
    assert!(total_new.recall() >= 0.55, "two-pass recall {:.3}", total_new.recall());
    assert!(total_new.recall() >= total_old.recall() + 0.15, "recall {:.3} vs single pass {:.3}", total_new.recall(), total_old.recall());
}
