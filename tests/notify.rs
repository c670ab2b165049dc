//! Notification outbox tests: a real webhook receiver on 127.0.0.1 (axum), the real SQLite store, the real
//! dispatcher, and the real `newsd` binary killed with SIGKILL between sending and marking.

use std::collections::HashSet;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use newsd::analysis::doc::{Analogue, AnalysisDoc, ArticleRef, Story, StoryStatus};
use newsd::config::TargetConfig;
use newsd::notify::config::TargetKind;
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

/// Points `var` at the receiver's `/hook/name` (names are unique per test: tests in one process share env vars).
fn set_env(var: &str, value: &str) {
    // SAFETY-ish: every test uses its own variable names, so concurrent tests never race on the same variable.
    unsafe { std::env::set_var(var, value) };
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
                market_impact: Some("Bonds up, banks down.".into()),
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
            })
            .collect(),
        changes: vec!["3 new stories".into()],
        continuing: vec![],
        outlook: None,
        note: None,
        previous_analysis_id: None,
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

/// Runs dispatcher passes until nothing is pending (or `max_passes`), returning every report.
async fn dispatch_until_idle(app: &App, max_passes: usize) -> Vec<(i64, newsd::notify::DispatchReport)> {
    let mut out = Vec::new();
    for _ in 0..max_passes {
        let before = now_ms();
        let r = newsd::notify::run_dispatch(app).await.unwrap();
        let pending = r.pending_after;
        out.push((before, r));
        if pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_through_500_and_429_then_every_message_arrives_once_within_limits() {
    let rx = WebhookReceiver::start(SECRET).await.unwrap();
    set_env("NEWSD_T1_SLACK", &rx.url("slack"));
    set_env("NEWSD_T1_DISCORD", &rx.url("discord"));
    set_env("NEWSD_T1_HOOK", &rx.url("hook"));
    set_env("NEWSD_T1_SECRET", SECRET);
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

    let passes = dispatch_until_idle(&app, 200).await;
    let last = &passes.last().unwrap().1;
    assert_eq!(last.pending_after, 0, "everything delivered after recovery: {last:#?}");
    // 429 Retry-After: 1 was honoured (next attempt at least 1 s after the pass started, not the 20-100 ms backoff).
    let mut saw_429 = 0;
    for (before, r) in &passes {
        for res in r.results.iter().filter(|x| x.http_status == Some(429)) {
            assert_eq!(res.outcome, "retry");
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
    let r = newsd::notify::run_dispatch(&app).await.unwrap();
    assert_eq!(r.attempted, 0);
    assert_eq!(rx.received().len(), seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_after_max_attempts_or_a_permanent_4xx_and_alerts_the_ops_target() {
    let rx = WebhookReceiver::start(SECRET).await.unwrap();
    set_env("NEWSD_T2_BAD", &rx.url("bad"));
    set_env("NEWSD_T2_GONE", &rx.url("gone"));
    set_env("NEWSD_T2_OPS", &rx.url("ops"));
    set_env("NEWSD_T2_SECRET", SECRET);
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
    dispatch_until_idle(&app, 100).await;

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

    // The same alert is not enqueued twice within the dedup period; another one is.
    let before = app.store.outbox_counts().await.unwrap();
    newsd::notify::enqueue_ops_alert(&app, "source_failing", "source x failed 5 runs").await.unwrap();
    newsd::notify::enqueue_ops_alert(&app, "source_failing", "source x failed 5 runs").await.unwrap();
    newsd::notify::enqueue_ops_alert(&app, "schedule_refused", "bad cron").await.unwrap();
    assert_eq!(app.store.outbox_counts().await.unwrap().pending, before.pending + 2);

    // Re-queueing dead letters sends them again.
    rx.clear_script("bad");
    assert_eq!(app.store.requeue_dead(Some("bad"), now_ms()).await.unwrap(), 1);
    dispatch_until_idle(&app, 20).await;
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
    assert_eq!(app.store.scalar_i64("SELECT COUNT(*) FROM analyses").await.unwrap(), 0);
    assert_eq!(app.store.scalar_i64("SELECT COUNT(*) FROM notifications").await.unwrap(), 0);
    store_analysis(&app, &doc, &["slack"]).await;
    assert_eq!(app.store.scalar_i64("SELECT COUNT(*) FROM analyses").await.unwrap(), 1);
    assert_eq!(app.store.scalar_i64("SELECT COUNT(*) FROM notifications").await.unwrap(), 1);
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
