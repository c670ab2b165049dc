//! Notification outbox tests: a real webhook receiver on 127.0.0.1 (axum), the real SQLite store, the real
//! dispatcher, and the real `newsd` binary killed with SIGKILL between sending and marking.

use std::collections::HashSet;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use newsd::analysis::doc::{Analogue, AnalysisDoc, ArticleRef, Impact, Story, StoryStatus};
use newsd::config::TargetConfig;
use newsd::notify::config::TargetKind;
use newsd::notify::{Credentials, DeliveryOutcome, DispatchReport, Dispatcher, TargetSecrets};
use newsd::store::{now_ms, NewAnalysis};
use newsd::testkit::{Reply, WebhookReceiver};
use newsd::{App, Config};

const SECRET: &str = "test-signing-secret";

fn target(name: &str, kind: TargetKind, url_env: &str, secret_env: Option<&str>) -> TargetConfig {
    TargetConfig {
        name: name.into(),
        kind,
        url_env: url_env.into(),
        secret_env: secret_env.map(str::to_string),
        template: None,
        username: Some("newsd".into()),
    }
}

/// Secrets for the targets, given directly (the config only names environment variables, which these tests
/// never set: `set_var` beside threads that read the environment is undefined behaviour).
fn creds(entries: &[(&str, String, Option<&str>)]) -> Credentials {
    entries.iter().fold(Credentials::new(), |c, (name, url, key)| {
        let s = TargetSecrets::new(url.clone());
        c.with(name, match key {
            Some(k) => s.with_signing_key(*k),
            None => s,
        })
    })
}

/// One count from SQL, through the app's pool.
async fn count(app: &App, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(app.store.pool()).await.unwrap()
}

async fn app_with(dir: &Path, tweak: impl FnOnce(&mut Config)) -> App {
    let mut c = Config::default();
    c.data_dir = dir.to_path_buf();
    c.notify.backoff_base = Duration::from_millis(20);
    c.notify.backoff_max = Duration::from_millis(100);
    c.notify.retry_after_max = Duration::from_secs(2);
    c.notify.timeout = Duration::from_secs(5);
    tweak(&mut c);
    App::open(c).await.unwrap()
}

/// A large analysis (many stories with long texts) so that Slack and Discord messages must be split.
fn sample_doc(stories: usize) -> AnalysisDoc {
    let day = 86_400_000;
    let t0 = 1_487_000_000_000;
    AnalysisDoc {
        profile: "markets".into(),
        mode: "builtin".into(),
        model: None,
        as_of: t0,
        window_from: t0 - day,
        window_to: t0,
        window_articles: stories * 3,
        summary: "Oil & gas <majors> lead the day.".into(),
        nothing_significant: false,
        stories: (1..=stories)
            .map(|i| Story {
                rank: i,
                headline: format!("Story {i}: central bank *surprises* markets"),
                status: if i % 2 == 0 { StoryStatus::Recurring } else { StoryStatus::New },
                single_source: i % 3 == 0,
                sources: if i % 3 == 0 { vec!["bbc".into()] } else { vec!["bbc".into(), "cnn".into()] },
                articles: (0..3)
                    .map(|j| ArticleRef {
                        id: (i * 10 + j) as i64,
                        title: format!("Article {i}.{j} about rates"),
                        source: "bbc".into(),
                        url: format!("https://news.example/{i}/{j}?a=1&b=2"),
                        published_at: Some(t0 - 3_600_000),
                    })
                    .collect(),
                already_reported: vec![],
                first_published: Some(t0 - 7_200_000),
                last_published: Some(t0 - 3_600_000),
                analysis: format!("Analysis of story {i}. ") + &"Markets moved on the news and analysts weighed in. ".repeat(12),
                market_impact: vec![Impact {
                    asset: "Bonds".into(),
                    direction: "up".into(),
                    confidence: "low".into(),
                    cited_ids: vec![(i * 10) as i64],
                }],
                history: vec![Analogue {
                    article: ArticleRef {
                        id: 1000 + i as i64,
                        title: format!("Earlier story {i}"),
                        source: "cnn".into(),
                        url: format!("https://news.example/old/{i}"),
                        published_at: Some(t0 - 30 * day),
                    },
                    score: 0.71,
                    note: None,
                }],
                score: 5.0,
                ..Story::default()
            })
            .collect(),
        changes: vec!["3 new stories".into()],
        continuing: vec![],
        outlook: None,
        note: None,
        previous_analysis_id: None,
        ..AnalysisDoc::default()
    }
}

fn new_analysis(doc: &AnalysisDoc) -> NewAnalysis {
    NewAnalysis {
        profile: doc.profile.clone(),
        created_at: now_ms(),
        as_of: doc.as_of,
        window_from: doc.window_from,
        window_to: doc.window_to,
        mode: doc.mode.clone(),
        model: None,
        template: "market_analysis.j2".into(),
        template_hash: "x".into(),
        prompt: None,
        llm_error: None,
        doc: serde_json::to_string(doc).unwrap(),
        text: doc.summary.clone(),
        article_ids: doc.article_ids(),
        stories: doc.stories.len() as i64,
    }
}

/// Stores an analysis and its notifications for `targets` in one transaction (the real outbox path).
async fn store_analysis(app: &App, doc: &AnalysisDoc, targets: &[&str]) -> i64 {
    let targets: Vec<String> = targets.iter().map(|s| s.to_string()).collect();
    let run_key = uuid::Uuid::new_v4().to_string();
    let (id, _) = app
        .store
        .save_analysis(&new_analysis(doc), |id| newsd::notify::analysis_notifications(app, id, &run_key, doc, &targets))
        .await
        .unwrap();
    id
}

/// One pass as the daemon runs it: the dispatcher, then the operations alerts for its dead letters.
async fn pass(app: &App, creds: &Credentials) -> DispatchReport {
    let mut r = Dispatcher::new(creds.clone()).run(app).await.unwrap();
    newsd::ops::alert_dead_letters(app, &r.dead_letters).await;
    r.pending_after = app.store.outbox_counts().await.unwrap().pending;
    r
}

/// Runs dispatcher passes until nothing is pending (or `max_passes`), returning every report.
async fn dispatch_until_idle(app: &App, creds: &Credentials, max_passes: usize) -> Vec<(i64, DispatchReport)> {
    let mut out = Vec::new();
    for _ in 0..max_passes {
        let before = now_ms();
        let r = pass(app, creds).await;
        let pending = r.pending_after;
        out.push((before, r));
        if pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    out
}

async fn store_many(app: &App, n: usize, targets: &[&str]) -> Vec<i64> {
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(store_analysis(app, &sample_doc(1), targets).await);
    }
    ids
}

/// Idempotency keys of the pending/delivered rows of `target`, oldest first.
async fn keys_of(app: &App, target: &str) -> Vec<String> {
    app.store.notifications(None).await.unwrap().into_iter().filter(|r| r.target == target).map(|r| r.idempotency_key).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_through_500_and_429_then_every_message_arrives_once_within_limits() {
    let rx = WebhookReceiver::start(SECRET).await.unwrap();
    let creds = creds(&[("slack", rx.url("slack"), None), ("discord", rx.url("discord"), None), ("hook", rx.url("hook"), Some(SECRET))]);
    let dir = tempfile::tempdir().unwrap();
    let app = app_with(dir.path(), |c| {
        c.notify.targets = vec![
            target("slack", TargetKind::Slack, "NEWSD_T1_SLACK", None),
            target("discord", TargetKind::Discord, "NEWSD_T1_DISCORD", None),
            target("hook", TargetKind::Webhook, "NEWSD_T1_HOOK", Some("NEWSD_T1_SECRET")),
        ];
        c.notify.max_attempts = 10;
    })
    .await;
    let doc = sample_doc(60);
    let id = store_analysis(&app, &doc, &["slack", "discord", "hook"]).await;
    let rows = app.store.notifications(Some(id)).await.unwrap();
    let slack_rows = rows.iter().filter(|r| r.target == "slack").count();
    let discord_rows = rows.iter().filter(|r| r.target == "discord").count();
    assert!(slack_rows >= 2, "60 stories need more than 50 Slack blocks: {slack_rows} message(s)");
    assert!(discord_rows >= 2, "and more than one Discord message: {discord_rows}");
    assert_eq!(rows.iter().filter(|r| r.target == "hook").count(), 1);

    rx.script("slack", [Reply::Status(500), Reply::Status(500), Reply::TooMany(1)]);
    rx.script("discord", [Reply::TooMany(1), Reply::Status(503)]);
    rx.script("hook", [Reply::Status(500), Reply::Status(502)]);

    let passes = dispatch_until_idle(&app, &creds, 200).await;
    let last = &passes.last().unwrap().1;
    assert_eq!(last.pending_after, 0, "everything delivered after recovery: {last:#?}");
    // 429 Retry-After: 1 was honoured (next attempt at least 1 s after the pass started, not the 20-100 ms backoff).
    let mut saw_429 = 0;
    for (before, r) in &passes {
        for res in r.results.iter().filter(|x| x.http_status == Some(429)) {
            assert_eq!(res.outcome, DeliveryOutcome::Retry);
            assert!(res.next_attempt_at.unwrap() >= before + 1000, "{res:?}");
            saw_429 += 1;
        }
    }
    assert_eq!(saw_429, 2);

    let rows = app.store.notifications(Some(id)).await.unwrap();
    assert!(rows.iter().all(|r| r.status == "delivered"), "{rows:#?}");
    for name in ["slack", "discord", "hook"] {
        let expected: Vec<String> = rows.iter().filter(|r| r.target == name).map(|r| r.idempotency_key.clone()).collect();
        let accepted = rx.accepted_unique(name);
        let got: Vec<String> = accepted.iter().map(|r| r.idempotency_key.clone().unwrap()).collect();
        assert_eq!(got, expected, "{name}: every message once, in order");
        let ok_answers = rx.received_at(name).iter().filter(|r| r.answered == Some(200)).count();
        assert_eq!(ok_answers, expected.len(), "{name}: no message accepted twice");
    }
    // Slack limits and (i/N) labels.
    let slack = rx.accepted_unique("slack");
    for (i, m) in slack.iter().enumerate() {
        let blocks = m.body["blocks"].as_array().unwrap();
        assert!(blocks.len() <= 50);
        for b in blocks.iter().filter(|b| b["type"] == "section") {
            assert!(b["text"]["text"].as_str().unwrap().chars().count() <= 3000);
        }
        assert_eq!(blocks.last().unwrap()["elements"][0]["text"], format!("({}/{})", i + 1, slack.len()));
        // Untrusted text is escaped for mrkdwn; links are real links.
        let all: String = blocks.iter().filter_map(|b| b["text"]["text"].as_str()).collect::<Vec<_>>().join("\n");
        assert!(!all.contains("<majors>"));
    }
    let first_text = slack[0].body["blocks"][1]["text"]["text"].as_str().unwrap();
    assert!(first_text.contains("Oil &amp; gas &lt;majors&gt;"), "{first_text}");
    // Discord limits.
    let discord = rx.accepted_unique("discord");
    for (i, m) in discord.iter().enumerate() {
        assert!(m.body["content"].as_str().unwrap().chars().count() <= 2000);
        assert!(m.body["content"].as_str().unwrap().ends_with(&format!("({}/{})", i + 1, discord.len())));
        let embeds = m.body["embeds"].as_array().unwrap();
        assert!(!embeds.is_empty() && embeds.len() <= 10);
        let total: usize = embeds.iter().map(|e| e["description"].as_str().unwrap().chars().count()).sum();
        assert!(total <= 6000);
        assert!(embeds.iter().all(|e| e["description"].as_str().unwrap().chars().count() <= 2000));
    }
    // Generic webhook: signed, carries the key and the whole structured analysis.
    for r in rx.received_at("hook") {
        assert_eq!(r.signature_ok, Some(true), "HMAC over timestamp.body verifies: {r:?}");
        assert_eq!(r.body["idempotency_key"].as_str(), r.idempotency_key.as_deref());
    }
    let hook = &rx.accepted_unique("hook")[0];
    assert_eq!(hook.body["analysis"]["stories"].as_array().unwrap().len(), 60);
    assert_eq!(hook.body["analysis_id"], id);
    let attempts: Vec<_> = rx.received_at("hook").iter().map(|r| r.attempt.clone().unwrap()).collect();
    assert_eq!(attempts, ["1", "2", "3"]);

    // A message marked delivered is never sent again.
    let seen = rx.received().len();
    let r = pass(&app, &creds).await;
    assert_eq!(r.attempted, 0);
    assert_eq!(rx.received().len(), seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_after_max_attempts_or_a_permanent_4xx_and_alerts_the_ops_target() {
    let rx = WebhookReceiver::start(SECRET).await.unwrap();
    let creds = creds(&[("bad", rx.url("bad"), Some(SECRET)), ("gone", rx.url("gone"), None), ("ops", rx.url("ops"), None)]);
    let dir = tempfile::tempdir().unwrap();
    let app = app_with(dir.path(), |c| {
        c.notify.targets = vec![
            target("bad", TargetKind::Webhook, "NEWSD_T2_BAD", Some("NEWSD_T2_SECRET")),
            target("gone", TargetKind::Discord, "NEWSD_T2_GONE", None),
            target("ops", TargetKind::Slack, "NEWSD_T2_OPS", None),
        ];
        c.notify.ops_target = Some("ops".into());
        c.notify.max_attempts = 3;
    })
    .await;
    rx.script("bad", std::iter::repeat_n(Reply::Status(500), 10));
    rx.script("gone", [Reply::Status(404)]);
    let id = store_analysis(&app, &sample_doc(2), &["bad", "gone"]).await;
    dispatch_until_idle(&app, &creds, 100).await;

    let rows = app.store.notifications(Some(id)).await.unwrap();
    let bad = rows.iter().find(|r| r.target == "bad").unwrap();
    assert_eq!((bad.status.as_str(), bad.attempts), ("dead", 3), "{bad:?}");
    assert_eq!(rx.received_at("bad").len(), 3);
    let gone = rows.iter().find(|r| r.target == "gone").unwrap();
    assert_eq!((gone.status.as_str(), gone.attempts), ("dead", 1), "a 404 is permanent: {gone:?}");
    assert_eq!(rx.received_at("gone").len(), 1);

    let ops = rx.accepted_unique("ops");
    assert_eq!(ops.len(), 2, "one alert per dead letter: {ops:?}");
    let texts: Vec<String> = ops.iter().map(|o| o.body["blocks"][0]["text"]["text"].as_str().unwrap().to_string()).collect();
    assert!(texts.iter().all(|t| t.contains("notification_dead")));
    assert!(texts.iter().any(|t| t.contains(&bad.idempotency_key)), "{texts:?}");
    assert!(texts.iter().any(|t| t.contains("HTTP 404")), "{texts:?}");

    // The same alert is not recorded or queued twice within the one repeat window; another one is.
    let before = app.store.outbox_counts().await.unwrap();
    let recorded = app.store.ops_alerts(100).await.unwrap().len();
    newsd::ops::alert(&app, "source_failing", "source x failed 5 runs").await;
    newsd::ops::alert(&app, "source_failing", "source x failed 5 runs").await;
    newsd::ops::alert(&app, "schedule_refused", "bad cron").await;
    assert_eq!(app.store.outbox_counts().await.unwrap().pending, before.pending + 2);
    assert_eq!(app.store.ops_alerts(100).await.unwrap().len(), recorded + 2);

    // Re-queueing dead letters sends them again.
    rx.clear_script("bad");
    assert_eq!(app.store.requeue_dead(Some("bad"), now_ms()).await.unwrap(), 1);
    dispatch_until_idle(&app, &creds, 20).await;
    let bad = app.store.notifications(Some(id)).await.unwrap().into_iter().find(|r| r.target == "bad").unwrap();
    assert_eq!(bad.status, "delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analysis_and_notifications_are_written_together_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_with(dir.path(), |c| {
        c.notify.targets = vec![target("slack", TargetKind::Slack, "NEWSD_T3_UNUSED", None)];
    })
    .await;
    let doc = sample_doc(1);
    let err = app
        .store
        .save_analysis(&new_analysis(&doc), |id| {
            newsd::notify::analysis_notifications(&app, id, "k", &doc, &["slack".into(), "nope".into()])
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
    assert_eq!(count(&app, "SELECT COUNT(*) FROM analyses").await, 0);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM notifications").await, 0);
    store_analysis(&app, &doc, &["slack"]).await;
    assert_eq!(count(&app, "SELECT COUNT(*) FROM analyses").await, 1);
    assert_eq!(count(&app, "SELECT COUNT(*) FROM notifications").await, 1);
}

/// `kill -9` of the real binary after the receiver got a message and before the dispatcher marked it: the message
/// is sent again after restart with the same idempotency key (and body); delivered ones are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_between_send_and_mark_resends_with_the_same_idempotency_key() {
    let rx = WebhookReceiver::start(SECRET).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = dir.path().join("newsd.toml");
    std::fs::write(
        &cfg_path,
        format!(
            "data_dir = {:?}\n[logging]\nfiles = false\n[notify]\ntimeout = \"2s\"\nbackoff_base = \"50ms\"\n\
             [[notify.targets]]\nname = \"hook\"\nkind = \"webhook\"\nurl_env = \"NEWSD_CRASH_URL\"\n\
             secret_env = \"NEWSD_CRASH_SECRET\"\n",
            dir.path().join("data").display().to_string()
        ),
    )
    .unwrap();
    let app = App::load(&cfg_path).await.unwrap();
    let mut keys = Vec::new();
    for _ in 0..3 {
        let id = store_analysis(&app, &sample_doc(1), &["hook"]).await;
        keys.push(app.store.notifications(Some(id)).await.unwrap()[0].idempotency_key.clone());
    }
    // First message answered, second one received and then never answered: the process is killed meanwhile.
    rx.script("hook", [Reply::Ok, Reply::Stall]);
    let run = || {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_newsd"));
        cmd.args(["-c", cfg_path.to_str().unwrap(), "notify", "--json"])
            .env("NEWSD_CRASH_URL", rx.url("hook"))
            .env("NEWSD_CRASH_SECRET", SECRET)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    };
    let mut child = run().spawn().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while rx.received().len() < 2 {
        assert!(std::time::Instant::now() < deadline, "the receiver never got the second message");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let rows = app.store.notifications(None).await.unwrap();
    assert_eq!(rows[0].status, "delivered");
    assert_eq!((rows[1].status.as_str(), rows[1].attempts), ("pending", 1), "sent but not marked: {:?}", rows[1]);
    assert_eq!((rows[2].status.as_str(), rows[2].attempts), ("pending", 0));

    // After the claim's lease (timeout 2 s + 2 s) the restarted dispatcher sends what was not marked delivered.
    tokio::time::sleep(newsd::notify::lease_for(&app.config.notify) + Duration::from_millis(200)).await;
    let out = run().output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["delivered"], 2, "{report:#}");

    let received = rx.received();
    let got: Vec<String> = received.iter().map(|r| r.idempotency_key.clone().unwrap()).collect();
    assert_eq!(got, [keys[0].clone(), keys[1].clone(), keys[1].clone(), keys[2].clone()], "re-sent with the same key, delivered one not re-sent");
    assert_eq!(received[1].body, received[2].body, "same body");
    assert!(received.iter().all(|r| r.signature_ok == Some(true)));
    let unique: HashSet<&String> = got.iter().collect();
    let duplicates = got.len() - unique.len();
    println!(
        "crash test: {} deliveries for {} messages: {duplicates} duplicate(s) seen without deduplication, 0 with \
         deduplication by Idempotency-Key",
        got.len(),
        keys.len()
    );
    assert_eq!(duplicates, 1);
    assert_eq!(rx.accepted_unique("hook").len(), 3);
    assert!(app.store.notifications(None).await.unwrap().iter().all(|r| r.status == "delivered"));

    // A third run sends nothing.
    let out = run().output().unwrap();
    assert!(out.status.success());
    assert_eq!(rx.received().len(), 4);
}

/// A receiver rate-limiting every message three times ("come back in 0.2 s") with `notify.max_attempts = 2`:
/// the 429s are not failures, so nothing is dead-lettered, and every message arrives once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_429s_do_not_use_up_attempts_and_every_message_arrives_once_in_order() {
    let rx = WebhookReceiver::start(SECRET).await.unwrap();
    let creds = creds(&[("hook", rx.url("hook"), Some(SECRET))]);
    let dir = tempfile::tempdir().unwrap();
    let app = app_with(dir.path(), |c| {
        c.notify.targets = vec![target("hook", TargetKind::Webhook, "NEWSD_UNSET_URL", Some("NEWSD_UNSET_SECRET"))];
        c.notify.max_attempts = 2;
    })
    .await;
    const N: usize = 5;
    store_many(&app, N, &["hook"]).await;
    for _ in 0..N {
        rx.script("hook", [Reply::TooManyAfter("0.2".into()), Reply::TooManyAfter("0.2".into()), Reply::TooManyAfter("0.2".into()), Reply::Ok]);
    }
    let passes = dispatch_until_idle(&app, &creds, 400).await;
    let last = &passes.last().unwrap().1;
    assert_eq!(last.pending_after, 0, "{last:#?}");
    assert_eq!(last.dead_total, 0, "a 429 with Retry-After never dead-letters");
    let mut limited = 0;
    for (before, r) in &passes {
        for res in r.results.iter().filter(|x| x.http_status == Some(429)) {
            assert_eq!(res.outcome, DeliveryOutcome::Retry);
            assert!(res.next_attempt_at.unwrap() >= before + 200, "Retry-After honoured: {res:?}");
            limited += 1;
        }
    }
    assert_eq!(limited, 3 * N);
    let keys = keys_of(&app, "hook").await;
    let accepted: Vec<String> = rx.accepted_unique("hook").iter().map(|r| r.idempotency_key.clone().unwrap()).collect();
    assert_eq!(accepted, keys, "every message once, in order");
    assert_eq!(rx.received_at("hook").iter().filter(|r| r.answered == Some(200)).count(), N);
    let rows = app.store.notifications(None).await.unwrap();
    assert!(rows.iter().all(|r| r.status == "delivered" && r.attempts == 1), "rate-limited sends not counted: {rows:#?}");
    assert!(rx.received_at("hook").iter().all(|r| r.attempt.as_deref() == Some("1")));
}

/// The receiver goes down (connections refused) with a long backoff configured (10 s doubling): while down the
/// first message waits and the rest wait behind it; once it is back, a probe sees it and the whole queue drains
/// in the next passes, well before the first message's backoff would have ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_outage_the_queue_drains_once_the_target_answers_not_at_the_backoff_time() {
    let mut rx = WebhookReceiver::start(SECRET).await.unwrap();
    let creds = creds(&[("hook", rx.url("hook"), Some(SECRET))]);
    let dir = tempfile::tempdir().unwrap();
    let app = app_with(dir.path(), |c| {
        c.notify.targets = vec![target("hook", TargetKind::Webhook, "NEWSD_UNSET_URL", Some("NEWSD_UNSET_SECRET"))];
        c.notify.backoff_base = Duration::from_secs(10);
        c.notify.backoff_max = Duration::from_secs(600);
        c.notify.max_attempts = 5;
        c.notify.timeout = Duration::from_secs(2);
    })
    .await;
    const N: usize = 8;
    store_many(&app, N, &["hook"]).await;
    rx.go_down().await;
    let first = pass(&app, &creds).await;
    assert_eq!((first.attempted, first.retried), (1, 1), "only the oldest is tried: {first:#?}");
    let failed_at = now_ms();
    let next = first.results[0].next_attempt_at.unwrap();
    assert!(next >= failed_at + 7_000, "the backoff is long (10 s +-25%): {}", next - failed_at);
    assert!(first.results[0].error.as_deref().unwrap().contains("error sending request"), "{:?}", first.results[0]);
    // Passes during the outage: the probe finds it still down; nothing is sent or counted.
    for _ in 0..5 {
        let r = pass(&app, &creds).await;
        assert_eq!((r.attempted, r.probes_answered), (0, 0), "{r:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    rx.come_back().await.unwrap();
    let back = std::time::Instant::now();
    let mut probes = 0;
    while app.store.outbox_counts().await.unwrap().pending > 0 {
        // Generous bound: the backoff alone would hold the queue for 7.5 s or more.
        assert!(back.elapsed() < Duration::from_secs(4), "the queue did not drain after the target came back");
        probes += pass(&app, &creds).await.probes_answered;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drained_in = back.elapsed();
    assert!(now_ms() < next, "drained before the first message's backoff ended");
    assert_eq!(probes, 1);
    println!("outage test: {N} messages drained {} ms after the target came back (backoff was {} ms)", drained_in.as_millis(), next - failed_at);
    let keys = keys_of(&app, "hook").await;
    let accepted: Vec<String> = rx.accepted_unique("hook").iter().map(|r| r.idempotency_key.clone().unwrap()).collect();
    assert_eq!(accepted, keys, "once each, in order");
    assert_eq!(rx.received_at("hook").len(), N, "no message sent twice");
    let rows = app.store.notifications(None).await.unwrap();
    assert_eq!(rows.iter().map(|r| r.attempts).collect::<Vec<_>>(), [vec![2], vec![1; N - 1]].concat(), "probes are not attempts");
}

/// Two dispatchers (two apps on one database, as the daemon's analyze job and its notify job, or the CLI beside
/// the daemon) run at once against a slow receiver that sometimes fails: per target, one message in flight at a
/// time, in order, each accepted exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_dispatchers_at_once_keep_each_targets_order_and_never_send_twice() {
    let rx = WebhookReceiver::start(SECRET).await.unwrap();
    let creds = creds(&[("a", rx.url("a"), Some(SECRET)), ("b", rx.url("b"), None)]);
    let dir = tempfile::tempdir().unwrap();
    let tweak = |c: &mut Config| {
        c.notify.targets = vec![
            target("a", TargetKind::Webhook, "NEWSD_UNSET_URL", Some("NEWSD_UNSET_SECRET")),
            target("b", TargetKind::Slack, "NEWSD_UNSET_URL", None),
        ];
        c.notify.max_attempts = 20;
    };
    let app1 = app_with(dir.path(), tweak).await;
    let app2 = app_with(dir.path(), tweak).await;
    const N: usize = 12;
    store_many(&app1, N, &["a", "b"]).await;
    for name in ["a", "b"] {
        let script: Vec<Reply> =
            (0..N).flat_map(|i| if i % 4 == 1 { vec![Reply::Status(500), Reply::Slow(15)] } else { vec![Reply::Slow(15)] }).collect();
        rx.script(name, script);
    }
    let run = |app: App, creds: Credentials| async move {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut attempted = 0;
        while app.store.outbox_counts().await.unwrap().pending > 0 {
            assert!(std::time::Instant::now() < deadline, "not drained");
            attempted += pass(&app, &creds).await.attempted;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        attempted
    };
    let (n1, n2) = tokio::join!(tokio::spawn(run(app1.clone(), creds.clone())), tokio::spawn(run(app2.clone(), creds.clone())));
    let (n1, n2) = (n1.unwrap(), n2.unwrap());
    println!("two dispatchers: {n1} and {n2} sends");
    for name in ["a", "b"] {
        assert_eq!(rx.max_in_flight(name), 1, "{name}: one message in flight at a time");
        let keys = keys_of(&app1, name).await;
        let received = rx.received_at(name);
        let order: Vec<usize> =
            received.iter().map(|r| keys.iter().position(|k| Some(k) == r.idempotency_key.as_ref()).unwrap()).collect();
        assert!(order.windows(2).all(|w| w[0] <= w[1]), "{name}: in order: {order:?}");
        assert_eq!(received.iter().filter(|r| r.answered == Some(200)).count(), N, "{name}: each accepted once");
        let accepted: Vec<String> = rx.accepted_unique(name).iter().map(|r| r.idempotency_key.clone().unwrap()).collect();
        assert_eq!(accepted, keys);
    }
    assert_eq!(n1 + n2, 2 * (N + N / 4), "every send accounted for: {n1} + {n2}");
}

/// A stop request (daemon shutdown) while a message is in flight: that message is finished and recorded, the
/// pass ends before the next one, nothing is left half-sent, and no operations alert is raised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_request_ends_the_pass_between_messages_without_failure_or_alert() {
    let rx = WebhookReceiver::start(SECRET).await.unwrap();
    let creds = creds(&[("hook", rx.url("hook"), Some(SECRET)), ("ops", rx.url("ops"), None)]);
    let dir = tempfile::tempdir().unwrap();
    let app = app_with(dir.path(), |c| {
        c.notify.targets = vec![
            target("hook", TargetKind::Webhook, "NEWSD_UNSET_URL", Some("NEWSD_UNSET_SECRET")),
            target("ops", TargetKind::Slack, "NEWSD_UNSET_URL", None),
        ];
        c.notify.ops_target = Some("ops".into());
    })
    .await;
    const N: usize = 5;
    store_many(&app, N, &["hook"]).await;
    rx.script("hook", std::iter::repeat_n(Reply::Slow(400), N));
    let stop = tokio_util::sync::CancellationToken::new();
    let dispatcher = Dispatcher::new(creds.clone()).with_stop(stop.clone());
    let app2 = app.clone();
    let handle = tokio::spawn(async move { dispatcher.run(&app2).await });
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while rx.received().is_empty() {
        assert!(std::time::Instant::now() < deadline, "nothing sent");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.cancel();
    let report = handle.await.unwrap().expect("a requested stop is not an error");
    assert!(report.stopped, "{report:#?}");
    assert_eq!((report.attempted, report.delivered, report.dead), (1, 1, 0), "the message in flight finished: {report:#?}");
    assert!(report.dead_letters.is_empty());
    let rows = app.store.notifications(None).await.unwrap();
    assert_eq!(rows[0].status, "delivered");
    for r in &rows[1..] {
        assert_eq!((r.status.as_str(), r.attempts, r.last_error.as_deref()), ("pending", 0, None), "untouched: {r:?}");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(rx.received().len(), 1, "nothing sent after the stop");
    assert_eq!(rx.received()[0].answered, Some(200));
    assert!(app.store.ops_alerts(10).await.unwrap().is_empty(), "no operations alert");
    assert!(rows.iter().all(|r| r.category != "ops"), "no alert queued");
    // The next pass sends the rest, once each, in order.
    dispatch_until_idle(&app, &creds, 20).await;
    let keys = keys_of(&app, "hook").await;
    let got: Vec<String> = rx.received_at("hook").iter().map(|r| r.idempotency_key.clone().unwrap()).collect();
    assert_eq!(got, keys);
}

/// Slack/Discord webhook URLs are credentials. Targets whose URL carries a distinctive token point at a closed
/// port and at a server that drops connections; every message is dead-lettered and alerted to the operations
/// target through the real binary (`notify --json`, debug logging), and `notify test` fails: the token appears in
/// no output, log line, database or log file byte, nor in the alerts the operations target receives, while the
/// errors still say what went wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_url_tokens_never_reach_output_logs_database_or_alerts() {
    let rx = WebhookReceiver::start(SECRET).await.unwrap();
    let closed = newsd::testkit::webhook::closed_port().unwrap();
    let dropping = newsd::testkit::webhook::dropping_server().await.unwrap();
    const TOKEN_A: &str = "TokAq7Zr9SeCrEt1";
    const TOKEN_B: &str = "TokBx3Lm8SeCrEt2";
    let url_a = format!("http://{closed}/services/T0/B0/{TOKEN_A}");
    let url_b = format!("http://{dropping}/api/webhooks/1/{TOKEN_B}?wait=true");
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = dir.path().join("newsd.toml");
    std::fs::write(
        &cfg_path,
        format!(
            "data_dir = {:?}\n[logging]\nfiles = false\n[notify]\ntimeout = \"2s\"\nmax_attempts = 1\nops_target = \"ops\"\n\
             [[notify.targets]]\nname = \"closed\"\nkind = \"slack\"\nurl_env = \"NEWSD_LEAK_A\"\n\
             [[notify.targets]]\nname = \"dropping\"\nkind = \"discord\"\nurl_env = \"NEWSD_LEAK_B\"\n\
             [[notify.targets]]\nname = \"ops\"\nkind = \"webhook\"\nurl_env = \"NEWSD_LEAK_OPS\"\nsecret_env = \"NEWSD_LEAK_SECRET\"\n",
            dir.path().join("data").display().to_string()
        ),
    )
    .unwrap();
    let app = App::load(&cfg_path).await.unwrap();
    store_analysis(&app, &sample_doc(1), &["closed", "dropping"]).await;
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_newsd"))
            .args(["-c", cfg_path.to_str().unwrap()])
            .args(args)
            .env("NEWSD_LEAK_A", &url_a)
            .env("NEWSD_LEAK_B", &url_b)
            .env("NEWSD_LEAK_OPS", rx.url("ops"))
            .env("NEWSD_LEAK_SECRET", SECRET)
            .env("RUST_LOG", "debug")
            .output()
            .unwrap()
    };
    let mut outputs = Vec::new();
    let first = run(&["notify", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(report["dead"], 2, "{report:#}");
    for r in report["results"].as_array().unwrap() {
        let e = r["error"].as_str().unwrap();
        assert!(e.contains("error sending request"), "the error still says what failed: {e}");
    }
    outputs.push(first);
    // The dead-letter alerts were queued; this pass delivers them to the operations target.
    let second = run(&["notify", "--json"]);
    assert!(second.status.success(), "{}", String::from_utf8_lossy(&second.stderr));
    outputs.push(second);
    for target in ["closed", "dropping"] {
        let out = run(&["notify", "test", target]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("error sending request"), "{}", String::from_utf8_lossy(&out.stderr));
        outputs.push(out);
    }
    let alerts = rx.accepted_unique("ops");
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    assert!(alerts.iter().all(|a| a.body["message"].as_str().unwrap().contains("dead-lettered")));

    let mut haystacks: Vec<(String, Vec<u8>)> = Vec::new();
    for (i, o) in outputs.iter().enumerate() {
        haystacks.push((format!("run {i} stdout"), o.stdout.clone()));
        haystacks.push((format!("run {i} stderr"), o.stderr.clone()));
    }
    for a in rx.received() {
        haystacks.push(("an alert received by the operations target".into(), a.body.to_string().into_bytes()));
    }
    let mut files = vec![dir.path().join("data")];
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            haystacks.push((p.display().to_string(), std::fs::read(&p).unwrap()));
        }
    }
    // Every text column of the outbox and the alerts table, read back too.
    for r in app.store.notifications(None).await.unwrap() {
        haystacks.push((format!("notification {}", r.id), serde_json::to_vec(&r).unwrap()));
    }
    for a in app.store.ops_alerts(100).await.unwrap() {
        haystacks.push((format!("ops alert {}", a.id), format!("{} {}", a.kind, a.message).into_bytes()));
    }
    let find = |hay: &[u8], needle: &str| hay.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(haystacks.iter().any(|(_, h)| find(h, "dead-lettered")), "the search does see the alerts");
    for (what, hay) in &haystacks {
        for token in [TOKEN_A, TOKEN_B] {
            assert!(!find(hay, token), "the URL token {token} leaked into {what}: {}", String::from_utf8_lossy(hay));
        }
    }
}
