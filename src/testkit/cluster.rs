//! Checks of the cluster's shared state that both backends must pass (run by the SQLite unit test in
//! `store::cluster` and by the PostgreSQL integration test): fire claims, leases, host slots, the embeddings change
//! sequence with deletions. Panics on the first failure.

use crate::config::SourceConfig;
use crate::store::{embed_lease_kind, now_ms, FireClaim, NewArticle, PageStatus, Store, SOURCE_LEASE};

fn article(url: &str, source_id: i64) -> NewArticle {
    NewArticle {
        url: url.into(),
        source_id,
        title: format!("title {url}"),
        body: "body".into(),
        published_at: None,
        fetched_at: now_ms(),
        content_hash: format!("hash {url}"),
        language: None,
        extraction: "feed".into(),
        page_status: PageStatus::NoPage,
        page_attempts: 0,
        page_error: None,
        charset: None,
    }
}

pub async fn cluster_store_checks(store: &Store) {
    // Fire claims: the first node wins; later claims see the winner; the winner claiming again still wins.
    assert_eq!(store.claim_fire("crawl", 1000, "a").await.unwrap(), FireClaim::Won);
    assert_eq!(store.claim_fire("crawl", 1000, "b").await.unwrap(), FireClaim::Taken { node: "a".into() });
    assert_eq!(store.claim_fire("crawl", 1000, "a").await.unwrap(), FireClaim::Won);
    assert_eq!(store.claim_fire("crawl", 2000, "b").await.unwrap(), FireClaim::Won);
    assert_eq!(store.claim_fire("embed", 1000, "b").await.unwrap(), FireClaim::Won, "another job, same time");

    // Leases: one holder at a time until it runs out or is given back.
    assert!(store.claim_lease(SOURCE_LEASE, 7, "a/1", "a", 60_000).await.unwrap());
    assert!(!store.claim_lease(SOURCE_LEASE, 7, "b/2", "b", 60_000).await.unwrap());
    assert_eq!(store.lease_holder(SOURCE_LEASE, 7).await.unwrap().as_deref(), Some("a"));
    assert!(store.claim_lease(SOURCE_LEASE, 7, "a/1", "a", 60_000).await.unwrap(), "the holder renews");
    store.release_leases(SOURCE_LEASE, &[7], "b/2").await.unwrap();
    assert!(!store.claim_lease(SOURCE_LEASE, 7, "b/2", "b", 60_000).await.unwrap(), "only the holder gives it back");
    store.release_leases(SOURCE_LEASE, &[7], "a/1").await.unwrap();
    assert!(store.claim_lease(SOURCE_LEASE, 7, "b/2", "b", 1).await.unwrap());
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert!(store.claim_lease(SOURCE_LEASE, 7, "a/1", "a", 60_000).await.unwrap(), "an expired lease is taken over");

    // Host slots: consecutive reservations are spaced by the interval; a pause pushes the next slot past it.
    let first = store.reserve_host_slot("example.com:80", 1000).await.unwrap();
    let second = store.reserve_host_slot("example.com:80", 1000).await.unwrap();
    assert_eq!(second - first, 1000, "one interval apart");
    let until = now_ms() + 60_000;
    assert_eq!(store.host_paused_until("example.com:80").await.unwrap(), 0);
    store.pause_host("example.com:80", until).await.unwrap();
    assert_eq!(store.host_paused_until("example.com:80").await.unwrap(), until);
    store.pause_host("example.com:80", until - 1000).await.unwrap();
    assert_eq!(store.host_paused_until("example.com:80").await.unwrap(), until, "a shorter pause does not shorten it");
    assert_eq!(store.host_paused_until("nowhere:1").await.unwrap(), 0);
    assert!(store.reserve_host_slot("example.com:80", 1000).await.unwrap() >= until, "after the pause");
    assert!(store.reserve_host_slot("other.org:443", 1000).await.unwrap() <= now_ms(), "other hosts are not affected");

    // The embeddings change sequence: stores and replacements in order, deletions as tombstones.
    let src = SourceConfig {
        name: "s".into(),
        url: "http://example.com/feed".into(),
        enabled: true,
        full_text: false,
        selectors: None,
        language: None,
        min_interval: None,
        allow_private_addresses: None,
    };
    let sid = store.sync_sources(&[src]).await.unwrap()["s"].id;
    let ids = store.insert_articles(&[article("http://e/1", sid), article("http://e/2", sid), article("http://e/3", sid)]).await.unwrap();
    assert_eq!(store.embedding_seq().await.unwrap(), 0);
    // Claims: two holders take disjoint articles.
    let kind = embed_lease_kind("v1");
    let a = store.claim_pending_embeddings("v1", 0, None, 2, "a/1", "a", 60_000).await.unwrap();
    let b = store.claim_pending_embeddings("v1", 0, None, 10, "b/2", "b", 60_000).await.unwrap();
    assert_eq!(a.iter().map(|p| p.id).collect::<Vec<_>>(), ids[..2].to_vec());
    assert_eq!(b.iter().map(|p| p.id).collect::<Vec<_>>(), ids[2..].to_vec(), "the other holder skips leased articles");
    let items: Vec<(i64, String)> = a.iter().chain(b.iter()).map(|p| (p.id, p.content_hash.clone())).collect();
    let vectors = vec![vec![1.0f32, 0.0], vec![0.0, 1.0], vec![0.6, 0.8]];
    store.store_embeddings("v1", &items, &vectors).await.unwrap();
    store.release_leases(&kind, &ids, "a/1").await.unwrap();
    store.release_leases(&kind, &ids, "b/2").await.unwrap();
    let (changes, reached) = store.embedding_changes("v1", 0, 100).await.unwrap();
    assert_eq!(changes.iter().map(|c| c.article_id).collect::<Vec<_>>(), ids, "in store order");
    assert!(changes.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(reached, store.embedding_seq().await.unwrap());
    assert!(store.claim_pending_embeddings("v1", 0, None, 10, "a/1", "a", 60_000).await.unwrap().is_empty(), "all embedded");
    // A replaced vector comes again with a new number; a deleted one as a deletion; nothing before `reached`.
    store.store_embeddings("v1", &[(ids[0], "new".into())], &[vec![0.0, -1.0]]).await.unwrap();
    store.delete_embeddings(&[ids[1]]).await.unwrap();
    let (changes, next) = store.embedding_changes("v1", reached, 100).await.unwrap();
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert_eq!((changes[0].article_id, changes[0].vector.clone()), (ids[0], Some(vec![0.0, -1.0])));
    assert_eq!((changes[1].article_id, changes[1].vector.clone()), (ids[1], None));
    assert!(next > reached);
    // Paging: with a page of one, every change still arrives exactly once, in order.
    let mut at = 0;
    let mut seen = Vec::new();
    loop {
        let (page, to) = store.embedding_changes("v1", at, 1).await.unwrap();
        seen.extend(page.iter().map(|c| (c.article_id, c.vector.is_some())));
        if to == at {
            break;
        }
        at = to;
    }
    assert_eq!(seen, vec![(ids[2], true), (ids[0], true), (ids[1], false)], "the current state of each change, in order");
    // Deleting articles (cascade) records their vectors' deletions too.
    store.delete_articles(&[ids[2]]).await.unwrap();
    let (changes, _) = store.embedding_changes("v1", next, 100).await.unwrap();
    assert_eq!(changes.iter().map(|c| (c.article_id, c.vector.is_none())).collect::<Vec<_>>(), vec![(ids[2], true)]);
    // Other model versions' changes are not this version's.
    assert!(store.embedding_changes("v2", 0, 100).await.unwrap().0.is_empty());

    // Nodes and run owners: a start repairs this node's and dead nodes' runs, never a live node's.
    store.register_node("a", "h", 1, "0").await.unwrap();
    store.register_node("b", "h", 2, "0").await.unwrap();
    let mine = store.start_job_run("j", "notify", "schedule", "a", None).await.unwrap();
    let theirs = store.start_job_run("j", "notify", "schedule", "b", None).await.unwrap();
    assert_eq!(store.running_elsewhere("j", "a", 0).await.unwrap().map(|r| r.0), Some(theirs));
    assert_eq!(store.interrupt_runs_at_start("a", 0, "restart").await.unwrap(), 1);
    let runs = store.job_runs(Some("j"), 10).await.unwrap();
    let outcome = |id: i64| runs.iter().find(|r| r.id == id).unwrap().outcome.as_str().to_string();
    assert_eq!((outcome(mine).as_str(), outcome(theirs).as_str()), ("interrupted", "running"));
    // b's heartbeat is older than the cut-off: dead; its run is repaired by a live node.
    assert_eq!(store.running_elsewhere("j", "a", now_ms() + 1000).await.unwrap(), None, "a dead node's run does not count");
    assert_eq!(store.interrupt_dead_nodes_runs("a", now_ms() + 1000, "dead").await.unwrap(), 1);
    store.heartbeat("a", &Default::default()).await.unwrap();
    let nodes = store.nodes().await.unwrap();
    assert_eq!(nodes.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(nodes[0].leases, 1, "a still holds the source lease");
    store.stop_node("a", 1).await.unwrap();
    assert!(store.lease_holder(SOURCE_LEASE, 7).await.unwrap().is_none(), "a clean stop gives leases back");
}
