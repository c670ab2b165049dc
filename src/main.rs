//! The `newsd` command line. Every command is a thin wrapper over a library function; `--json` prints one JSON
//! document on stdout (logs go to stderr) so users can script it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use newsd::logging::{self, LogMode};
use newsd::{App, Config};

#[derive(Debug, Parser)]
#[command(name = "newsd", version, about = "Watches the news and tells you what it means for the market")]
struct Cli {
    /// Configuration file.
    #[arg(long, short = 'c', global = true, default_value = "newsd.toml", env = "NEWSD_CONFIG")]
    config: PathBuf,
    /// Do the work in this process even when a daemon runs on the data directory (`search`, `status` and
    /// `analyze` otherwise ask the running daemon through its API, which holds the model and the index).
    #[arg(long, global = true)]
    local: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One crawl pass over all enabled sources (or the named ones); prints a per-source summary.
    Crawl {
        /// Only this source (repeatable).
        #[arg(long = "source", short = 's')]
        sources: Vec<String>,
        /// Fetch even sources that are backing off or inside their minimum interval.
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// Fetch one page and print what would be stored (for tuning selectors). Stores nothing.
    Extract {
        url: String,
        /// Use this source's selectors.
        #[arg(long)]
        source: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Sources with health and counts, pending work.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Run a market analysis now: stories of the profile's window, similar past articles, the LLM (or the
    /// built-in analysis); stores it and queues its notifications.
    Analyze {
        /// Analysis profile (default: analysis.default_profile, else the first).
        #[arg(long)]
        profile: Option<String>,
        /// Print the rendered prompt; call no LLM, store and send nothing.
        #[arg(long)]
        dry_run: bool,
        /// Analyse as of this time (RFC 3339 or YYYY-MM-DD) instead of now, to replay the past.
        #[arg(long)]
        at: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Deliver pending notifications now (retries that are due, in order), or manage the outbox.
    Notify {
        #[command(subcommand)]
        action: Option<NotifyAction>,
        #[arg(long, global = true)]
        json: bool,
    },
    /// Embed every article that has no vector for the current model version and add it to the index.
    Embed {
        #[arg(long)]
        json: bool,
    },
    /// Embed everything for the configured (new) model version with a progress bar, then switch searches to it.
    Reembed {
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
        #[arg(long)]
        json: bool,
    },
    /// Semantic search over the indexed articles.
    Search {
        query: String,
        /// Number of results.
        #[arg(short = 'k', long, default_value_t = 10)]
        k: usize,
        /// Only articles published within this long (e.g. "7d", "12h").
        #[arg(long, value_parser = humantime::parse_duration)]
        since: Option<std::time::Duration>,
        #[arg(long)]
        json: bool,
    },
    /// Remove articles older than index.retention from the index (and the database with index.prune_database).
    Prune {
        #[arg(long)]
        json: bool,
    },
    /// Rebuild the index from the stored vectors.
    Reindex {
        #[arg(long)]
        json: bool,
    },
    /// Benchmarks that print figures.
    #[command(subcommand)]
    Bench(newsd::bench::BenchCommand),
    /// Run the daemon: jobs from the schedule files until SIGTERM/SIGINT (schedule edits and SIGHUP reload).
    Run,
    /// Schedule files.
    #[command(subcommand)]
    Schedules(SchedulesCommand),
}

#[derive(Debug, Subcommand)]
enum SchedulesCommand {
    /// Validate the schedule files and print each job's next fire times (exit 1 when invalid).
    Check {
        /// Schedules directory (default: daemon.schedules_dir from the config).
        dir: Option<PathBuf>,
        /// Fire times shown per job.
        #[arg(long, default_value_t = 3)]
        next: usize,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum NotifyAction {
    /// Send a test message to one target now (outside the outbox).
    Test { target: String },
    /// Put dead-lettered notifications back in the queue (all, or one target's).
    Requeue {
        #[arg(long)]
        target: Option<String>,
    },
}

fn main() -> ExitCode {
    newsd::memory::limit_arenas();
    let cli = Cli::parse();
    // Thread budget for OpenMP/BLAS before any thread exists (the runtime below starts some).
    let threads = Config::load(&cli.config).map(|c| c.embed.threads).unwrap_or(1);
    newsd::compute::pin_thread_env(threads);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    // Don't wait on tasks still running after the daemon's shutdown grace period (they were cancelled).
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    Ok(Config::load(&cli.config)?)
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Bench(cmd) => {
            let config = if cli.config.exists() { load_config(&cli)? } else { Config::default() };
            let _guard = logging::init(&config, LogMode::Cli)?;
            newsd::bench::run(cmd).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Crawl { sources, force, json } => {
            let config = load_config(&cli)?;
            let _guard = logging::init(&config, LogMode::Cli)?;
            let app = App::open(config).await?;
            let opts = newsd::crawl::CrawlOptions { sources: sources.clone(), force: *force };
            let report = app.crawler()?.crawl(&opts).await?;
            if *json {
                print_json(&report)?;
            } else {
                println!("{:<24} {:<13} {:>6} {:>6} {:>6} {:>7}  error", "source", "status", "items", "new", "dup", "pagefail");
                for r in &report.sources {
                    println!(
                        "{:<24} {:<13} {:>6} {:>6} {:>6} {:>7}  {}",
                        r.name,
                        serde_json::to_value(r.status)?.as_str().unwrap_or(""),
                        r.items,
                        r.new,
                        r.duplicate,
                        r.pages_failed,
                        r.error.as_deref().or(r.recovered.as_deref()).unwrap_or("")
                    );
                }
                let t = &report.totals;
                println!(
                    "{} sources: {} fetched, {} not modified, {} failed, {} deferred; {} new articles, {} duplicates ({} ms)",
                    t.sources, t.fetched, t.not_modified, t.failed, t.deferred, t.new, t.duplicate, report.duration_ms
                );
            }
            // Partial failure is normal operation (one dead source); the exit code says whether everything failed.
            let all_failed = report.totals.sources > 0 && report.totals.failed == report.totals.sources;
            Ok(if all_failed { ExitCode::from(2) } else { ExitCode::SUCCESS })
        }
        Command::Extract { url, source, json } => {
            let config = if cli.config.exists() { load_config(&cli)? } else { Config::default() };
            let _guard = logging::init(&config, LogMode::Cli)?;
            let selectors = match source {
                Some(name) => Some(
                    config
                        .source(name)
                        .ok_or_else(|| anyhow::anyhow!("unknown source {name:?} in {}", config.path.display()))?
                        .selectors
                        .clone()
                        .unwrap_or_default(),
                ),
                None => None,
            };
            let fetcher = newsd::crawl::Fetcher::new(&config.crawl)?;
            let page = match fetcher.fetch(url, None).await? {
                newsd::crawl::Fetched::Body(p) => p,
                newsd::crawl::Fetched::NotModified => anyhow::bail!("{url}: unexpected 304 Not Modified"),
            };
            let e = newsd::crawl::extract(&page.body, page.content_type.as_deref(), &page.final_url, selectors.as_ref())?;
            if *json {
                print_json(&serde_json::json!({
                    "url": url,
                    "final_url": page.final_url,
                    "title": e.title,
                    "body": e.body,
                    "published": e.published.map(|d| d.to_rfc3339()),
                    "charset": e.charset,
                    "method": e.method,
                    "body_chars": e.body.chars().count(),
                }))?;
            } else {
                println!("url:       {}", page.final_url);
                println!("title:     {}", e.title);
                println!("published: {}", e.published.map(|d| d.to_rfc3339()).unwrap_or_else(|| "unknown".into()));
                println!("charset:   {}", e.charset);
                println!("method:    {}", e.method);
                println!("body ({} characters):\n{}", e.body.chars().count(), e.body);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Analyze { profile, dry_run, at, json } => {
            let config = load_config(&cli)?;
            let _guard = logging::init(&config, LogMode::Cli)?;
            let app = App::open(config).await?;
            let as_of = at.as_deref().map(newsd::analysis::parse_time).transpose()?;
            let opts = newsd::analysis::AnalyzeOptions { profile: profile.clone(), dry_run: *dry_run, as_of };
            // A real analysis "now" runs as a job of the daemon when one runs (its model and index, its run
            // history); dry runs and replays (--at) stay local.
            let client = if *dry_run || as_of.is_some() { None } else { daemon_client(&cli, &app).await };
            let report = match client {
                Some(c) => {
                    let q: Vec<(&str, String)> = profile.iter().map(|p| ("profile", p.clone())).collect();
                    let answer: serde_json::Value = c.post("/api/analyze", &q).await?;
                    match answer.get("report").filter(|r| !r.is_null()) {
                        Some(r) => Ok(serde_json::from_value::<newsd::analysis::AnalyzeReport>(r.clone())?),
                        None => Err(anyhow::anyhow!(
                            "the daemon's analysis job {} did not finish in time or failed: {}",
                            answer.get("job").and_then(|j| j.as_str()).unwrap_or("?"),
                            answer.get("error").and_then(|j| j.as_str()).unwrap_or("still running; see `newsd status`")
                        )),
                    }
                }
                None => newsd::analysis::run_analyze_with(&app, &opts).await,
            };
            app.shutdown().await?;
            let report = report?;
            if *json {
                print_json(&report)?;
            } else if *dry_run {
                match &report.prompt {
                    Some(p) => println!("[system]\n{}\n\n[user]\n{}", p.system, p.user),
                    None => println!("(no prompt: {})", report.doc.summary),
                }
                eprintln!(
                    "dry run: {} articles, {} stories; template {} (sha256 {}); nothing stored or sent",
                    report.window_articles, report.stories, report.template, &report.template_hash[..12]
                );
            } else {
                println!("{}", report.text);
                eprintln!(
                    "analysis {} ({}): {} articles, {} stories, {} notification(s) queued{}",
                    report.analysis_id.unwrap_or_default(),
                    report.mode,
                    report.window_articles,
                    report.stories,
                    report.notifications,
                    report.llm_error.as_deref().map(|e| format!("; LLM failed: {e}")).unwrap_or_default()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Embed { json } => {
            let config = load_config(&cli)?;
            let _guard = logging::init(&config, LogMode::Cli)?;
            let app = App::open(config).await?;
            let report = newsd::embed::run_embed(&app).await;
            app.shutdown().await?;
            let report = report?;
            if *json {
                print_json(&report)?;
            } else {
                println!(
                    "embedded {} articles in {:.1} s ({:.1} articles/s, {} thread(s)); index: {} vectors, model {}; {} pending{}",
                    report.embedded,
                    report.duration_ms as f64 / 1000.0,
                    report.articles_per_sec,
                    report.threads,
                    report.index_size,
                    report.serving_version,
                    report.pending,
                    if report.switched { "; switched to the new model" } else { "" }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Notify { action, json } => {
            let config = load_config(&cli)?;
            let _guard = logging::init(&config, LogMode::Cli)?;
            let app = App::open(config).await?;
            match action {
                None => {
                    let mut report = newsd::notify::run_dispatch(&app).await?;
                    newsd::ops::alert_dead_letters(&app, &report.dead_letters).await;
                    // The alerts just queued are pending too.
                    report.pending_after = app.store.outbox_counts().await?.pending;
                    if *json {
                        print_json(&report)?;
                    } else {
                        for r in &report.results {
                            println!(
                                "{:>6} {:<20} {:<9} attempt {:>2} {}",
                                r.id,
                                r.target,
                                r.outcome,
                                r.attempt,
                                r.error.as_deref().unwrap_or("")
                            );
                        }
                        println!(
                            "{} sent: {} delivered, {} to retry, {} dead-lettered, {} deferred; {} pending, {} dead in total",
                            report.attempted, report.delivered, report.retried, report.dead, report.deferred,
                            report.pending_after, report.dead_total
                        );
                    }
                    Ok(if report.attempted > 0 && report.delivered == 0 { ExitCode::from(2) } else { ExitCode::SUCCESS })
                }
                Some(NotifyAction::Test { target }) => {
                    let status = newsd::notify::send_test(&app, target).await?;
                    if *json {
                        print_json(&serde_json::json!({"target": target, "status": status}))?;
                    } else {
                        println!("{target}: delivered (HTTP {status})");
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Some(NotifyAction::Requeue { target }) => {
                    let n = app.store.requeue_dead(target.as_deref(), newsd::store::now_ms()).await?;
                    if *json {
                        print_json(&serde_json::json!({"requeued": n}))?;
                    } else {
                        println!("{n} notification(s) re-queued");
                    }
                    Ok(ExitCode::SUCCESS)
                }
            }
        }
        Command::Reembed { quiet, json } => {
            let config = load_config(&cli)?;
            let _guard = logging::init(&config, LogMode::Cli)?;
            let app = App::open(config).await?;
            let report = newsd::embed::run_reembed(&app, !*quiet && !*json).await;
            app.shutdown().await?;
            let report = report?;
            if *json {
                print_json(&report)?;
            } else if *quiet {
                println!("re-embedded {} articles ({:.1} articles/s)", report.embedded, report.articles_per_sec);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Search { query, k, since, json } => {
            let config = load_config(&cli)?;
            let _guard = logging::init(&config, LogMode::Cli)?;
            let app = App::open(config).await?;
            let report = match daemon_client(&cli, &app).await {
                Some(c) => {
                    let mut q = vec![("q", query.clone()), ("k", k.to_string())];
                    if let Some(d) = since {
                        q.push(("since", format!("{}s", d.as_secs())));
                    }
                    c.get::<newsd::index::SearchReport>("/api/search", &q).await
                }
                None => newsd::index::search(&app, query, *k, *since).await,
            };
            app.shutdown().await?;
            let report = report?;
            if *json {
                print_json(&report)?;
            } else {
                for (i, r) in report.results.iter().enumerate() {
                    println!("{:>2}. {:.3}  {}  [{}, {}]", i + 1, r.score, r.title, r.source, newsd::status::fmt_ms(r.published_at));
                    println!("           {}", r.url);
                }
                if report.results.is_empty() && report.index_size == 0 {
                    println!("no results: the index is empty (`newsd crawl`, then `newsd embed`, fill it)");
                } else if report.results.is_empty() {
                    println!("no results");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Prune { json } => {
            let config = load_config(&cli)?;
            let _guard = logging::init(&config, LogMode::Cli)?;
            let app = App::open(config).await?;
            let report = newsd::index::run_prune(&app).await;
            app.shutdown().await?;
            let report = report?;
            if *json {
                print_json(&report)?;
            } else if report.retention_secs.is_none() {
                println!("index.retention is not set: nothing to prune");
            } else {
                println!(
                    "pruned {} articles from the index ({} vectors, {} articles deleted); index: {} vectors",
                    report.removed_from_index, report.vectors_deleted, report.articles_deleted, report.index_size
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Reindex { json } => {
            let config = load_config(&cli)?;
            let _guard = logging::init(&config, LogMode::Cli)?;
            let app = App::open(config).await?;
            let report = newsd::index::run_reindex(&app).await;
            app.shutdown().await?;
            let report = report?;
            if *json {
                print_json(&report)?;
            } else {
                for v in &report.versions {
                    println!("rebuilt {:?} index of model {}: {} vectors", v.kind, v.version, v.vectors);
                }
                println!("({} ms)", report.duration_ms);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run => {
            let config = load_config(&cli)?;
            let _guard = logging::init(&config, LogMode::Daemon)?;
            newsd::daemon::run(config).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Schedules(SchedulesCommand::Check { dir, next, json }) => {
            let config = if cli.config.exists() { Some(load_config(&cli)?) } else { None };
            let _guard = logging::init(config.as_ref().unwrap_or(&Config::default()), LogMode::Cli)?;
            let dir = dir.clone().unwrap_or_else(|| config.as_ref().map(|c| c.schedules_dir()).unwrap_or_else(|| PathBuf::from("schedules")));
            schedules_check(&dir, config.as_ref(), *next, *json)
        }
        Command::Status { json } => {
            let config = load_config(&cli)?;
            let _guard = logging::init(&config, LogMode::Cli)?;
            let app = App::open(config).await?;
            let status = match daemon_client(&cli, &app).await {
                Some(c) => c.get::<newsd::status::Status>("/api/status", &[]).await?,
                None => newsd::status::collect(&app).await?,
            };
            if *json {
                print_json(&status)?;
            } else {
                newsd::status::print_human(&status);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The running daemon's API, unless `--local` (printed to stderr so scripts reading stdout see the same output).
async fn daemon_client(cli: &Cli, app: &App) -> Option<newsd::api::client::DaemonClient> {
    if cli.local {
        return None;
    }
    let c = newsd::api::client::DaemonClient::find(app).await?;
    tracing::debug!(daemon = c.base(), "asking the running daemon");
    Some(c)
}

fn schedules_check(dir: &std::path::Path, config: Option<&Config>, next: usize, json: bool) -> anyhow::Result<ExitCode> {
    let now = chrono::Utc::now();
    match newsd::schedule::load_dir(dir, config) {
        Ok(set) => {
            if json {
                let jobs: Vec<serde_json::Value> = set
                    .jobs
                    .values()
                    .map(|j| {
                        let mut v = serde_json::to_value(j).unwrap_or_default();
                        let fires: Vec<String> = if j.enabled { j.next_fires(now, next).iter().map(|t| t.to_rfc3339()).collect() } else { Vec::new() };
                        v["next"] = serde_json::json!(fires);
                        v
                    })
                    .collect();
                print_json(&serde_json::json!({ "ok": true, "dir": dir, "files": set.files, "jobs": jobs }))?;
            } else {
                println!("{}: {} jobs in {} files, valid", dir.display(), set.jobs.len(), set.files.len());
                for j in set.jobs.values() {
                    let task = serde_json::to_value(&j.task).unwrap_or_default();
                    let params: Vec<String> = task
                        .as_object()
                        .map(|o| o.iter().filter(|(k, _)| *k != "task").map(|(k, v)| format!("{k}={v}")).collect())
                        .unwrap_or_default();
                    println!(
                        "{:<24} {:<8} {:<20} {:<16} {}{}",
                        j.name,
                        j.task.name(),
                        j.cron,
                        j.timezone.name(),
                        if j.enabled { "" } else { "DISABLED " },
                        params.join(" ")
                    );
                    if j.enabled {
                        for t in j.next_fires(now, next) {
                            println!("{:<24} next {}", "", t.to_rfc3339());
                        }
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            if json {
                print_json(&serde_json::json!({ "ok": false, "dir": dir, "errors": errors.0 }))?;
            } else {
                eprintln!("{errors}");
            }
            Ok(ExitCode::FAILURE)
        }
    }
}
