//! The LLM side of the market brief (issue 11, items 8-10 and its bad input): structured output with fallback and
//! memory, grounding, neutralised links, the prompt budget and refused answers, against the local fake
//! OpenAI-compatible server; and one real LLM (llama.cpp's `llama-server` with gemma-3-270m, built by
//! `scripts/setup.sh --llm`) that must produce a schema-valid answer newsd accepts.
//!
//! cargo test --release --features test-hooks --test llm

use std::time::Duration;

use newsd::analysis::config::LlmConfig;
use newsd::analysis::llm::{self, AskOutcome, LlmError, ResponseFormat, StoryInput, Trim};
use newsd::testkit::llm::LlmProxy;
use newsd::testkit::{LlmReply, LlmServer};
use serde_json::{json, Value};

const WINDOW_FROM: i64 = 1_486_425_600_000; // 2017-02-07

fn cfg(base_url: String) -> LlmConfig {
    LlmConfig {
        base_url,
        model: "test-model".into(),
        temperature: 0.0,
        timeout: Duration::from_secs(20),
        retries: 1,
        retry_backoff: Duration::from_millis(10),
        seed: Some(7),
        ..LlmConfig::default()
    }
}

fn stories() -> Vec<StoryInput> {
    vec![
        StoryInput {
            rank: 1,
            article_ids: vec![102, 101],
            history_ids: vec![(90, Some(WINDOW_FROM - 86_400_000)), (91, Some(WINDOW_FROM + 1000)), (92, None)],
            texts: vec![
                (101, "OPEC ministers met in Vienna on Thursday and agreed to extend output cuts by nine months, sources said.".into()),
                (102, "Oil prices were little changed after the OPEC meeting; Saudi Arabia backed the deal.".into()),
                (90, "OPEC agreed its first output cut since 2008 in Algiers.".into()),
            ],
        },
        StoryInput {
            rank: 2,
            article_ids: vec![201],
            history_ids: vec![],
            texts: vec![(201, "The Federal Reserve kept interest rates unchanged at 0.75 percent, Janet Yellen said.".into())],
        },
    ]
}

/// A valid answer for [`stories`], with `analysis1` as story 1's text.
fn answer(analysis1: &str) -> String {
    json!({
        "summary": "OPEC agreed to extend output cuts and the Federal Reserve kept rates unchanged.",
        "stories": [
            {"story": 1, "cited_ids": [101], "analysis": analysis1,
             "market_impact": [{"asset": "Oil", "direction": "up", "confidence": "medium", "cited_ids": [102]}],
             "analogues": [{"id": 90, "note": "OPEC cut output in Algiers before."}]},
            {"story": 2, "cited_ids": [201], "analysis": "The Federal Reserve kept rates at 0.75 percent.",
             "market_impact": [], "analogues": []}
        ],
        "outlook": "Watch whether OPEC members comply."
    })
    .to_string()
}

async fn ask(c: &LlmConfig) -> Result<AskOutcome, LlmError> {
    llm::ask(c, "system prompt", "user prompt", WINDOW_FROM, &stories()).await
}

fn formats(server: &LlmServer) -> Vec<String> {
    server.requests().iter().map(|b| LlmReply::format_of(b).to_string()).collect()
}

#[tokio::test]
async fn the_schema_sent_has_the_given_ids_as_enums_and_the_answer_is_accepted() {
    let server = LlmServer::start(|_, _| LlmReply::Content(answer("OPEC ministers agreed in Vienna to extend output cuts."))).await.unwrap();
    let c = cfg(server.base_url());
    let out = ask(&c).await.unwrap();
    let req = &server.requests()[0];
    assert_eq!(req["max_tokens"], llm::answer_tokens(&c, 2));
    assert_eq!(req["max_tokens"], 610);
    assert_eq!(req["temperature"], 0.0);
    assert_eq!(req["seed"], 7);
    let rf = &req["response_format"];
    assert_eq!(rf["type"], "json_schema");
    assert_eq!(rf["json_schema"]["name"], "market_brief");
    assert_eq!(rf["json_schema"]["strict"], true);
    let schema = &rf["json_schema"]["schema"];
    assert_eq!(schema["properties"]["stories"]["maxItems"], 2);
    let branches = schema["properties"]["stories"]["items"]["anyOf"].as_array().unwrap();
    let p1 = &branches[0]["properties"];
    assert_eq!(p1["story"]["enum"], json!([1]));
    assert_eq!(p1["cited_ids"]["items"]["enum"], json!([101, 102]));
    assert_eq!(p1["market_impact"]["items"]["properties"]["cited_ids"]["items"]["enum"], json!([101, 102]));
    assert_eq!(p1["market_impact"]["items"]["properties"]["direction"]["enum"], json!(["up", "down", "mixed", "none"]));
    assert_eq!(p1["market_impact"]["items"]["properties"]["confidence"]["enum"], json!(["low", "medium", "high"]));
    assert!(p1["market_impact"]["items"]["properties"]["asset"]["maxLength"].as_u64().unwrap() <= 64);
    // Only the earlier article dated before the window is an analogue candidate.
    assert_eq!(p1["analogues"]["items"]["properties"]["id"]["enum"], json!([90]));
    assert_eq!(branches[1]["properties"]["story"]["enum"], json!([2]));
    assert_eq!(branches[1]["properties"]["cited_ids"]["items"]["enum"], json!([201]));
    assert_eq!(branches[1]["properties"]["analogues"]["maxItems"], 0);
    for b in branches {
        assert_eq!(b["additionalProperties"], false);
        assert!(b["properties"]["analysis"]["maxLength"].is_u64());
    }
    assert_eq!(out.response_format, ResponseFormat::JsonSchema);
    assert_eq!(out.attempts, 1);
    assert_eq!(out.model.as_deref(), Some("test-model"));
    assert_eq!(out.citations, vec![(1, vec![101, 102]), (2, vec![201])]);
    assert!(out.dropped_claims.is_empty(), "{:?}", out.dropped_claims);
    assert_eq!(out.answer.stories[0].market_impact[0].direction, llm::Direction::Up);
    assert_eq!(out.answer.stories[0].analogues[0].note.as_deref(), Some("OPEC cut output in Algiers before."));
    assert_eq!(llm::remembered_format(&c), Some(ResponseFormat::JsonSchema));
}

#[tokio::test]
async fn a_refused_schema_falls_back_to_json_object_then_prompt_only_and_is_remembered() {
    let good = answer("OPEC ministers agreed in Vienna to extend output cuts.");
    // Refuses json_schema only.
    let g = good.clone();
    let s1 = LlmServer::start(move |b, _| {
        if LlmReply::format_of(b) == "json_schema" { LlmReply::refuse_format(b) } else { LlmReply::Content(g.clone()) }
    })
    .await
    .unwrap();
    let c1 = cfg(s1.base_url());
    let out = ask(&c1).await.unwrap();
    assert_eq!(out.response_format, ResponseFormat::JsonObject);
    assert_eq!(out.attempts, 2);
    assert_eq!(formats(&s1), ["json_schema", "json_object"]);
    assert_eq!(llm::remembered_format(&c1), Some(ResponseFormat::JsonObject));
    let again = ask(&c1).await.unwrap();
    assert_eq!((again.response_format, again.attempts), (ResponseFormat::JsonObject, 1));
    assert_eq!(formats(&s1), ["json_schema", "json_object", "json_object"], "the next call starts at what worked");

    // Refuses any response_format.
    let g = good.clone();
    let s2 = LlmServer::start(move |b, _| {
        if b.get("response_format").is_some() { LlmReply::refuse_format(b) } else { LlmReply::Content(g.clone()) }
    })
    .await
    .unwrap();
    let c2 = cfg(s2.base_url());
    let out = ask(&c2).await.unwrap();
    assert_eq!((out.response_format, out.attempts), (ResponseFormat::PromptOnly, 3));
    assert_eq!(formats(&s2), ["json_schema", "json_object", ""]);
    ask(&c2).await.unwrap();
    assert_eq!(formats(&s2), ["json_schema", "json_object", "", ""]);
    // Another model behind the same endpoint learns on its own; the first endpoint's memory is untouched.
    let other = LlmConfig { model: "other".into(), ..c2.clone() };
    assert_eq!(llm::remembered_format(&other), None);
    assert_eq!(llm::remembered_format(&c1), Some(ResponseFormat::JsonObject));
    llm::forget_format(&c2);
    assert_eq!(llm::remembered_format(&c2), None);

    // json_mode = false: never a response_format.
    let s3 = LlmServer::start(move |_, _| LlmReply::Content(good.clone())).await.unwrap();
    let c3 = LlmConfig { json_mode: false, ..cfg(s3.base_url()) };
    assert_eq!(ask(&c3).await.unwrap().response_format, ResponseFormat::PromptOnly);
    assert_eq!(formats(&s3), [""]);
}

#[tokio::test]
async fn a_400_about_the_context_or_to_prompt_only_is_an_error_not_a_fallback() {
    let s = LlmServer::start(|_, _| LlmReply::Status(400, r#"{"error":{"message":"the request exceeds the available context size"}}"#.into()))
        .await
        .unwrap();
    let c = cfg(s.base_url());
    let e = ask(&c).await.unwrap_err();
    assert!(matches!(&e, LlmError::Status { status: 400, .. }), "{e}");
    assert_eq!(formats(&s), ["json_schema"]);
    assert_eq!(llm::remembered_format(&c), None);

    let s = LlmServer::start(|b, _| LlmReply::refuse_format(b)).await.unwrap();
    let e = ask(&cfg(s.base_url())).await.unwrap_err();
    assert!(e.to_string().contains("HTTP 400"), "{e}");
    assert_eq!(formats(&s), ["json_schema", "json_object", ""], "each format refused in turn, then the 400 is the error");
}

#[tokio::test]
async fn invented_figures_are_dropped_and_reported() {
    let s = LlmServer::start(|_, _| {
        LlmReply::Content(answer(
            "Brent jumped 7.3% to $61.20 after the deal. OPEC ministers agreed in Vienna to extend output cuts. \
             Goldman Sachs raised its forecast to $70.",
        ))
    })
    .await
    .unwrap();
    let out = ask(&cfg(s.base_url())).await.unwrap();
    assert_eq!(out.answer.stories[0].analysis, "OPEC ministers agreed in Vienna to extend output cuts.");
    let dropped = out.dropped_claims.join("\n");
    assert!(dropped.contains("story 1 analysis: \"Brent jumped 7.3% to $61.20 after the deal.\""), "{dropped}");
    assert!(dropped.contains("7.3, 61.20"), "{dropped}");
    assert!(dropped.contains("Goldman, Sachs"), "{dropped}");
    assert_eq!(out.dropped_claims.len(), 2, "{dropped}");
    // Grounded in what the story's cited article says: 0.75 percent is in article 201.
    assert_eq!(out.answer.stories[1].analysis, "The Federal Reserve kept rates at 0.75 percent.");
}

#[tokio::test]
async fn a_summary_with_nothing_grounded_is_asked_again_once() {
    let s = LlmServer::start(|_, n| {
        let mut a: Value = serde_json::from_str(&answer("OPEC ministers agreed in Vienna to extend output cuts.")).unwrap();
        if n == 0 {
            a["summary"] = json!("Brent rose 12% as JPMorgan upgraded energy stocks.");
        }
        LlmReply::Content(a.to_string())
    })
    .await
    .unwrap();
    let out = ask(&cfg(s.base_url())).await.unwrap();
    assert_eq!(out.attempts, 2);
    assert!(out.answer.summary.starts_with("OPEC agreed"));
    assert!(s.user_prompt(1).contains("was rejected") && s.user_prompt(1).contains("JPMorgan"), "{}", s.user_prompt(1));
}

#[tokio::test]
async fn links_and_mentions_written_by_the_model_are_neutralised() {
    let s = LlmServer::start(|_, _| {
        let mut a: Value = serde_json::from_str(&answer(
            "OPEC ministers agreed in Vienna to extend output cuts, see [the statement](https://opec.example/x) \
             and https://evil.example/phish <@U123ABC> @everyone <!channel> <https://x.example|click here>.",
        ))
        .unwrap();
        a["outlook"] = json!("Watch OPEC at www.evil.example/p @here");
        LlmReply::Content(a.to_string())
    })
    .await
    .unwrap();
    let out = ask(&cfg(s.base_url())).await.unwrap();
    let text = format!("{} {}", out.answer.stories[0].analysis, out.answer.outlook.clone().unwrap_or_default());
    for bad in ["http", "www.", "](", "<@", "<!", "@everyone", "@here", "example/"] {
        assert!(!text.contains(bad), "{bad:?} left in {text:?}");
    }
    assert!(text.contains("the statement") && text.contains("click here") && text.contains("@\u{200B}everyone"), "{text}");
    assert!(!text.contains("U123ABC"), "a user mention is removed: {text}");
}

#[tokio::test]
async fn prose_and_invalid_ids_are_retried_once_then_refused() {
    // Prose first, then a valid answer: accepted on the retry, which lists the problem.
    let s = LlmServer::start(|_, n| {
        if n == 0 {
            LlmReply::Content("Markets were calm; I would not worry.".into())
        } else {
            LlmReply::Content(answer("OPEC ministers agreed in Vienna to extend output cuts."))
        }
    })
    .await
    .unwrap();
    let out = ask(&cfg(s.base_url())).await.unwrap();
    assert_eq!(out.attempts, 2);
    assert!(s.user_prompt(1).contains("was rejected: the answer contains no JSON object"));
    // An id that was not given, twice: refused with both times' reason.
    let s = LlmServer::start(|_, _| LlmReply::Content(answer("OPEC met.").replace("[101]", "[999]"))).await.unwrap();
    let e = ask(&cfg(s.base_url())).await.unwrap_err();
    assert!(matches!(&e, LlmError::Invalid(_)) && e.to_string().contains("invalid LLM answer twice") && e.to_string().contains("999"), "{e}");
    assert_eq!(s.requests().len(), 2);
}

#[tokio::test]
async fn server_errors_are_retried_then_reported() {
    let s = LlmServer::start(|_, _| LlmReply::Status(500, "model crashed".into())).await.unwrap();
    let e = ask(&cfg(s.base_url())).await.unwrap_err();
    assert!(matches!(&e, LlmError::Request { attempts: 2, .. }) && e.to_string().contains("HTTP 500"), "{e}");
    assert_eq!(s.requests().len(), 2, "retries = 1");
    // A 500 then an answer: the retry succeeds.
    let s = LlmServer::start(|_, n| {
        if n == 0 { LlmReply::Status(503, "busy".into()) } else { LlmReply::Content(answer("OPEC met in Vienna.")) }
    })
    .await
    .unwrap();
    assert_eq!(ask(&cfg(s.base_url())).await.unwrap().response_format, ResponseFormat::JsonSchema);
}

/// Each bad answer is refused with a clear error after one request (a retry would not fix it).
#[tokio::test]
async fn truncated_huge_non_utf8_and_deeply_nested_answers_are_refused() {
    let deep_content = format!("{{\"summary\":{}1{}}}", "[".repeat(5_000), "]".repeat(5_000));
    let deep_body = format!("{{\"choices\":{}{}}}", "[".repeat(5_000), "]".repeat(5_000));
    let full = answer("OPEC met.");
    let cases: Vec<(&str, LlmReply, &str)> = vec![
        ("cut at max_tokens", LlmReply::Truncated(full[..full.len() / 2].to_string()), "cut at max_tokens (610)"),
        ("content JSON cut", LlmReply::Content(full[..full.len() / 2].to_string()), "truncated"),
        (
            "body cut",
            LlmReply::Raw { status: 200, content_type: "application/json".into(), body: br#"{"choices":[{"message":{"content":"{\"su"#.to_vec() },
            "truncated",
        ),
        ("huge content", LlmReply::Content(format!("{{\"summary\":\"{}\"}}", "x".repeat(200_000))), "more than the 65536 accepted"),
        (
            "huge body",
            LlmReply::Raw { status: 200, content_type: "application/json".into(), body: vec![b' '; llm::RESPONSE_BODY_LIMIT + 10] },
            "body",
        ),
        (
            "not UTF-8",
            LlmReply::Raw {
                status: 200,
                content_type: "application/json".into(),
                body: [br#"{"choices":[{"message":{"content":"caf"#.as_slice(), b"\xe9\xff", br#""}}]}"#].concat(),
            },
            "not UTF-8",
        ),
        ("nested content", LlmReply::Content(deep_content), "nested deeper than 32 levels"),
        ("nested body", LlmReply::Raw { status: 200, content_type: "application/json".into(), body: deep_body.into_bytes() }, "nested deeper"),
    ];
    for (what, reply, expect) in cases {
        let r = reply.clone();
        let s = LlmServer::start(move |_, _| r.clone()).await.unwrap();
        let e = ask(&cfg(s.base_url())).await.expect_err(what);
        assert!(matches!(&e, LlmError::Refused(_)), "{what}: {e}");
        assert!(e.to_string().contains(expect), "{what}: {e}");
        assert_eq!(s.requests().len(), 1, "{what}: not retried");
    }
}

#[test]
fn a_4k_context_fits_eight_stories() {
    let c = LlmConfig { context_tokens: 4096, ..cfg("http://127.0.0.1:9/v1".into()) };
    let excerpt = "The central bank raised its policy rate by 25 basis points to 1.25%, citing inflation. ".repeat(20);
    let render = |t: &Trim| -> Result<(String, String), std::convert::Infallible> {
        let mut u = String::new();
        for s in 1..=t.stories {
            u.push_str(&format!("\n## Story {s}: {} recent articles\n", t.articles_per_story));
            for a in 0..t.articles_per_story {
                let ex: String = excerpt.chars().take(t.excerpt_chars).collect();
                u.push_str(&format!("<<<NEWS id={}{a} source=reuters published=2017-02-07\nTitle: Bank raises rates\n{ex}\nNEWS>>>\n", s * 100));
            }
            for h in 0..t.history_items {
                u.push_str(&format!("<<<NEWS id={h} source=bbc published=2016-12-01 similarity=0.61\nTitle: Earlier hike\nNEWS>>>\n"));
            }
        }
        Ok((format!("You are a careful analyst.\n{}", llm::ANSWER_SCHEMA), u))
    };
    let f = llm::fit_prompt(&c, Trim { excerpt_chars: 600, history_items: 5, articles_per_story: 5, stories: 8 }, render).unwrap();
    assert!(f.fits, "{f:?}");
    assert_eq!(f.trim.stories, 8, "{:?}", f.trim);
    assert_eq!(f.answer_tokens, 1690);
    assert!(f.prompt_tokens + f.answer_tokens + llm::RETRY_RESERVE_TOKENS <= 4096, "{f:?}");
    assert_eq!(llm::estimate_prompt_tokens(&f.system, &f.user), f.prompt_tokens);
}

// ------------------------------------------------------------------------------------------------------------------
// The real LLM

/// Two stories from the real corpus (2 articles each, and an earlier article for the first).
fn corpus_stories() -> (Vec<StoryInput>, Vec<(usize, Vec<(i64, String, String)>)>) {
    let corpus = newsd::testkit::corpus::load().expect("the news corpus (scripts/setup.sh fetches it)");
    let pick = |word: &str, n: usize, before: bool| -> Vec<&newsd::testkit::CorpusArticle> {
        let mut v: Vec<_> = corpus
            .iter()
            .filter(|a| a.title.contains(word) && a.text.len() > 400)
            .filter(|a| a.published.is_some_and(|p| (p.timestamp_millis() < WINDOW_FROM) == before))
            .collect();
        v.sort_by_key(|a| (a.published, a.id));
        v.into_iter().take(n).collect()
    };
    let groups = [("Trump", pick("Trump", 2, false), pick("Trump", 1, true)), ("China", pick("China", 2, false), vec![])];
    let mut inputs = Vec::new();
    let mut shown = Vec::new();
    for (rank, (_, recent, earlier)) in groups.iter().enumerate() {
        assert_eq!(recent.len(), 2);
        let text = |a: &newsd::testkit::CorpusArticle| format!("{} ({}) {}", a.title, a.source, a.text);
        inputs.push(StoryInput {
            rank: rank + 1,
            article_ids: recent.iter().map(|a| a.id).collect(),
            history_ids: earlier.iter().map(|a| (a.id, a.published.map(|p| p.timestamp_millis()))).collect(),
            texts: recent.iter().chain(earlier.iter()).map(|a| (a.id, text(a))).collect(),
        });
        shown.push((rank + 1, recent.iter().chain(earlier.iter()).map(|a| (a.id, a.title.clone(), a.text.clone())).collect()));
    }
    (inputs, shown)
}

/// A real OpenAI-compatible server (llama.cpp) with a tiny base model: the json_schema request is accepted, decoding
/// is constrained to it, and the answer passes newsd's checks with only given ids (mode would be "llm"). The model's
/// prose is nonsense; grounding may drop any of it, which the outcome reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_llama_server_answers_the_schema_with_valid_ids() {
    let dir = tempfile::tempdir().unwrap();
    let (_llama, origin) = newsd::testkit::llama::start(dir.path()).await;
    let proxy = LlmProxy::start(&origin).await.unwrap();
    let c = LlmConfig {
        base_url: proxy.base_url(),
        model: "gemma-3-270m".into(),
        temperature: 0.0,
        seed: Some(7),
        context_tokens: 4096,
        timeout: Duration::from_secs(600),
        retries: 0,
        ..LlmConfig::default()
    };
    let (inputs, shown) = corpus_stories();
    let render = |t: &Trim| -> Result<(String, String), std::convert::Infallible> {
        let system = format!(
            "You are a careful financial markets analyst. Explain what each story means for markets. Cite articles by \
             their numeric id only. Answer with ONE JSON object in this format:\n{}",
            llm::ANSWER_SCHEMA
        );
        let mut user = String::from("Market analysis. Window: 2017-02-07 to 2017-02-08.\n");
        for (rank, arts) in shown.iter().take(t.stories) {
            user.push_str(&format!("\n## Story {rank}\n"));
            for (id, title, text) in arts.iter().take(t.articles_per_story + t.history_items) {
                let ex: String = text.chars().take(t.excerpt_chars).collect();
                user.push_str(&format!("<<<NEWS id={id}\nTitle: {title}\n{ex}\nNEWS>>>\n"));
            }
        }
        user.push_str("\nWrite the analysis now as one JSON object.");
        Ok((system, user))
    };
    let fitted = llm::fit_prompt(&c, Trim { excerpt_chars: 2000, history_items: 1, articles_per_story: 2, stories: 2 }, render).unwrap();
    assert!(fitted.fits && fitted.trim.stories == 2, "{fitted:?}");
    let started = std::time::Instant::now();
    let out = llm::ask(&c, &fitted.system, &fitted.user, WINDOW_FROM, &inputs)
        .await
        .unwrap_or_else(|e| panic!("the real LLM's answer was not accepted: {e}\n{:?}", proxy.exchanges().last().map(|x| String::from_utf8_lossy(&x.response).to_string())));
    let ex = proxy.exchanges();
    println!(
        "real LLM: {:.1}s, {} request(s), usage {:?}, estimate {} prompt tokens, trim {:?}\nanswer: {}\ndropped: {:#?}",
        started.elapsed().as_secs_f64(),
        ex.len(),
        out.usage,
        fitted.prompt_tokens,
        fitted.trim,
        serde_json::to_string(&out.answer).unwrap(),
        out.dropped_claims
    );
    // The request carried the schema with the given ids.
    let rf = &ex[0].request["response_format"];
    assert_eq!(rf["type"], "json_schema");
    let branches = &rf["json_schema"]["schema"]["properties"]["stories"]["items"]["anyOf"];
    let mut ids1 = inputs[0].article_ids.clone();
    ids1.sort();
    assert_eq!(branches[0]["properties"]["cited_ids"]["items"]["enum"], json!(ids1));
    assert_eq!(ex[0].request["max_tokens"], 610);
    // Accepted in json_schema mode with only given ids.
    assert_eq!(out.response_format, ResponseFormat::JsonSchema);
    assert!(!out.answer.stories.is_empty());
    for (rank, ids) in &out.citations {
        let given = &inputs[rank - 1].article_ids;
        assert!(!ids.is_empty() && ids.iter().all(|i| given.contains(i)), "story {rank}: {ids:?} not in {given:?}");
    }
    // The estimate is conservative against the server's own count.
    let (prompt_tokens, _) = out.usage.expect("llama.cpp reports usage");
    assert!(fitted.prompt_tokens >= prompt_tokens, "estimate {} < actual {prompt_tokens}", fitted.prompt_tokens);
}
