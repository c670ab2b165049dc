//! Corpus test: every feed in tests/fixtures/feeds (the feedparser 6.0.11 test suite and the feed-rs 3.0.0
//! fixtures, see the README there) through `parse_feed`, with the HTTP Content-Type the feedparser tests name in
//! their `Header:` comment. Prints how many are read, and asserts a floor on each collection.

use std::path::{Path, PathBuf};

use newsd::crawl::feed::parse_feed;

#[derive(Default, Debug)]
struct Tally {
    files: usize,
    read: usize,
    /// Read, and the feed's own test expects entries (`entries[` in its `Expect:` line), but none came out.
    no_items_but_expected: usize,
    expected_items: usize,
    items: usize,
    recovered: usize,
    failures: Vec<String>,
    empty: Vec<String>,
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else if matches!(p.extension().and_then(|e| e.to_str()), Some("xml" | "json" | "rdf" | "atom" | "rss")) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The feedparser test header (an XML comment before the root): `Header: Content-type: ...` and `Expect: ...`.
/// UTF-16/32 files are read by dropping the zero bytes; the header is ASCII.
fn header(bytes: &[u8], name: &str) -> Option<String> {
    let head: String = bytes.iter().take(4096).filter(|b| **b != 0 && b.is_ascii()).map(|b| *b as char).collect();
    head.lines().find_map(|l| {
        let rest = l.trim().strip_prefix(name)?.trim();
        Some(rest.to_string())
    })
}

fn run(dir: &str) -> Tally {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/feeds").join(dir);
    let mut t = Tally::default();
    for path in files(&root) {
        let bytes = std::fs::read(&path).unwrap();
        let rel = path.strip_prefix(&root).unwrap().display().to_string();
        let content_type = header(&bytes, "Header:")
            .and_then(|h| h.split_once(':').filter(|(k, _)| k.trim().eq_ignore_ascii_case("content-type")).map(|(_, v)| v.trim().to_string()));
        let expects_entries = header(&bytes, "Expect:").is_some_and(|e| e.contains("entries["));
        t.files += 1;
        t.expected_items += expects_entries as usize;
        let url = format!("http://example.com/{rel}");
        match parse_feed(&bytes, content_type.as_deref(), &url) {
            Ok(f) => {
                t.read += 1;
                let n = f.items.len() + f.skipped_items;
                t.items += f.items.len();
                t.recovered += f.recovered.is_some() as usize;
                if n == 0 && expects_entries {
                    t.no_items_but_expected += 1;
                    t.empty.push(rel);
                }
            }
            Err(e) => t.failures.push(format!("{rel}: {e}")),
        }
    }
    println!(
        "{dir}: {} of {} read ({} after repair or leniently), {} items; {} of {} expecting entries gave none",
        t.read, t.files, t.recovered, t.items, t.no_items_but_expected, t.expected_items
    );
    for f in t.failures.iter().take(30) {
        println!("  failed: {f}");
    }
    for f in t.empty.iter().take(30) {
        println!("  no items: {f}");
    }
    t
}

#[test]
fn feedparser_wellformed_feeds_are_all_read() {
    let t = run("feedparser/wellformed");
    assert_eq!(t.files, 1739, "the fixture set changed");
    assert_eq!(t.read, t.files, "every well-formed feed is read: {:#?}", t.failures);
    assert!(t.no_items_but_expected <= FLOOR_WELLFORMED_EMPTY, "{} feeds lost their entries: {:#?}", t.no_items_but_expected, t.empty);
}

/// Well-formed feeds whose test expects an entry but that give none (see the printed list for which).
const FLOOR_WELLFORMED_EMPTY: usize = 0;

#[test]
fn feedparser_encoding_and_entity_feeds_are_read() {
    let enc = run("feedparser/encoding");
    assert!(enc.read >= enc.files - FLOOR_ENCODING_FAILED, "{:#?}", enc.failures);
    assert_eq!(enc.no_items_but_expected, 0, "{:#?}", enc.empty);
    let ent = run("feedparser/entities");
    // attr_amp.xml ends inside its `</feed` end tag and has no entries: an error, not an empty feed.
    assert!(ent.read >= ent.files - 1, "{:#?}", ent.failures);
    assert_eq!(ent.no_items_but_expected, 0, "{:#?}", ent.empty);
}

/// The 21 EBCDIC feeds (cp037, cp500, cp875, ibm1140, ...): no EBCDIC decoder in encoding_rs, and no news feed
/// is served in EBCDIC.
const FLOOR_ENCODING_FAILED: usize = 21;

#[test]
fn feedparser_illformed_feeds_keep_their_items() {
    let t = run("feedparser/illformed");
    // Ill-formed on purpose; a lenient reader keeps what they hold.
    assert!(t.read >= t.files - FLOOR_ILLFORMED_FAILED, "{:#?}", t.failures);
    assert_eq!(t.no_items_but_expected, 0, "{:#?}", t.empty);
}

/// An empty document, `<rss ...></rss` cut inside its end tag, and a feed cut inside the first item's CDATA:
/// nothing to recover, so an error is the right answer.
const FLOOR_ILLFORMED_FAILED: usize = 3;

#[test]
fn feed_rs_fixtures_are_read_with_their_items() {
    let t = run("feed-rs");
    assert!(t.files >= 70, "{}", t.files);
    // xml/xml_sample_{1,2}.xml are plain XML for feed-rs's own XML tests, not feeds.
    assert!(t.read >= t.files - 2, "{:#?}", t.failures);
    assert!(t.items >= 75, "{} items", t.items);
}

/// Counts this thread's heap bytes (current and peak), so the memory test below measures only its own parse while
/// the corpus tests run beside it.
mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    pub struct Counting;

    thread_local! {
        static CURRENT: Cell<isize> = const { Cell::new(0) };
        static PEAK: Cell<isize> = const { Cell::new(0) };
    }

    fn add(delta: isize) {
        let _ = CURRENT.try_with(|c| {
            let now = c.get() + delta;
            c.set(now);
            let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
        });
    }

    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let p = unsafe { System.alloc(layout) };
            if !p.is_null() {
                add(layout.size() as isize);
            }
            p
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            unsafe { System.dealloc(ptr, layout) };
            add(-(layout.size() as isize));
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let p = unsafe { System.realloc(ptr, layout, new_size) };
            if !p.is_null() {
                add(new_size as isize - layout.size() as isize);
            }
            p
        }
    }

    /// Peak heap bytes above the starting point while `f` runs on this thread.
    pub fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
        let start = CURRENT.with(|c| c.get());
        PEAK.with(|p| p.set(start));
        let out = f();
        let peak = PEAK.with(|p| p.get());
        (out, (peak - start).max(0) as usize)
    }
}

#[global_allocator]
static ALLOC: counting::Counting = counting::Counting;

#[test]
fn a_100k_item_feed_is_cut_before_it_is_parsed() {
    use newsd::crawl::feed::{parse_feed_with, FeedOptions};
    let mut doc = String::from("<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>Huge</title>");
    for i in 0..100_000 {
        doc.push_str(&format!(
            "<item><title>Item {i}</title><link>http://e.com/a/{i}</link><guid>http://e.com/a/{i}</guid><description>&lt;p&gt;The text of item {i}, long enough to matter.&lt;/p&gt;</description><pubDate>Tue, 10 Jan 2017 10:00:00 GMT</pubDate></item>\n"
        ));
    }
    doc.push_str("</channel></rss>");
    let (cut, cut_peak) = counting::peak_during(|| parse_feed_with(doc.as_bytes(), None, "http://e.com/f", &FeedOptions { max_items: 500 }).unwrap());
    let (cut_items, cut_truncated) = (cut.items.len(), cut.truncated);
    drop(cut);
    // What the crawler did before: parse everything, keep 500.
    let (whole, whole_peak) = counting::peak_during(|| parse_feed_with(doc.as_bytes(), None, "http://e.com/f", &FeedOptions { max_items: usize::MAX }).unwrap());
    let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
    println!(
        "100,000-item feed ({:.1} MiB): peak heap while parsing {:.1} MiB cut at 500 items, {:.1} MiB parsed whole ({} items)",
        mib(doc.len()),
        mib(cut_peak),
        mib(whole_peak),
        whole.items.len()
    );
    assert_eq!(cut_items, 500);
    assert!(cut_truncated);
    assert_eq!(whole.items.len(), 100_000);
    // One decoded copy of the document plus 500 items; the whole parse is many times that.
    assert!(cut_peak < doc.len() * 2 + (8 << 20), "cut parse peaked at {cut_peak} bytes for a {}-byte feed", doc.len());
    assert!(cut_peak * 4 < whole_peak, "cut {cut_peak} vs whole {whole_peak}");
}
