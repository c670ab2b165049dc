//! `newsd bench e2e --nodes 1,2,3`: the pipeline as a cluster: N real daemon processes (this binary, `newsd run`)
//! on one fresh PostgreSQL schema, crawling the corpus from local servers (one loopback address per outlet) and
//! embedding it on a 1-second schedule, timed from start until every article is stored, embedded and in every
//! node's index. Reports articles/hour per cluster size (the 1-node run is the same run's baseline), how the runs
//! were shared, and any duplicated work (pages fetched twice, fires run twice). On a 2-core machine the nodes share
//! the cores: more nodes cannot be faster here; the point is that the work is not duplicated.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::testkit::{corpus, NewsServer};

/// Runs the cluster benchmark for each size in `sizes`.
pub async fn run(sizes: &[usize], limit: Option<usize>, postgres: &str) -> anyhow::Result<()> {
    let mut all = corpus::load()?;
    if let Some(n) = limit {
        all.truncate(n);
    }
    let mut outlets: Vec<String> = all.iter().map(|a| a.source.clone()).collect();
    outlets.sort();
    outlets.dedup();
    let admin = sqlx::PgPool::connect(postgres)
        .await
        .map_err(|e| anyhow::anyhow!("bench e2e --nodes needs PostgreSQL at {} (--postgres URL): {e}", crate::store::redact(postgres)))?;
    println!("{}", super::cpu_summary());
    println!("corpus {} articles, {} outlets; schedule: crawl and embed every second on every node", all.len(), outlets.len());
    let mut baseline: Option<f64> = None;
    for &n in sizes {
        let mut servers = Vec::new();
        for (i, name) in outlets.iter().enumerate() {
            let mine: Vec<_> = all.iter().filter(|a| &a.source == name).cloned().collect();
            servers.push((name.clone(), NewsServer::start_on(format!("127.0.0.{}:0", i + 2).parse()?, mine).await?));
        }
        let schema = format!("newsd_bench_{}_{}", n, rand::random::<u32>());
        sqlx::query(&format!("CREATE SCHEMA {schema}")).execute(&admin).await?;
        let url = format!("{postgres}{}options=-c%20search_path%3D{schema}", if postgres.contains('?') { "&" } else { "?" });
        let dir = tempfile::tempdir()?;
        let mut children: Vec<Child> = Vec::new();
        let t = Instant::now();
        for i in 0..n {
            let node_dir = dir.path().join(format!("node-{i}"));
            std::fs::create_dir_all(node_dir.join("schedules"))?;
            let root = std::env::current_dir()?;
            let mut toml = format!(
                "data_dir = \"data\"\n[store]\nurl = \"{url}\"\n[crawl]\nper_host_interval = \"0s\"\nmax_items_per_feed = 10000\n\
                 allow_private_addresses = true\n[embed]\nmodel_dir = \"{}\"\nonnxruntime_library = \"{}\"\n[daemon]\n\
                 http_listen = \"off\"\n[cluster]\nnode_id = \"bench-{i}\"\nheartbeat = \"1s\"\nnode_timeout = \"10s\"\n\
                 follow_interval = \"1s\"\n[logging]\nfiles = false\n",
                root.join("models/all-MiniLM-L6-v2").display(),
                root.join("models/onnxruntime/libonnxruntime.so.1.32.0").display()
            );
            for (name, s) in &servers {
                toml.push_str(&format!("[[sources]]\nname = \"{name}\"\nurl = \"{}\"\nfull_text = true\n", s.url(&format!("/feeds/{name}"))));
            }
            std::fs::write(node_dir.join("newsd.toml"), toml)?;
            std::fs::write(
                node_dir.join("schedules/jobs.toml"),
                "[[job]]\nname = \"crawl\"\ncron = \"* * * * * *\"\ntask = \"crawl\"\n\
                 [[job]]\nname = \"embed\"\ncron = \"* * * * * *\"\ntask = \"embed\"\n",
            )?;
            let log = std::fs::File::create(node_dir.join("daemon.log"))?;
            children.push(
                Command::new(std::env::current_exe()?)
                    .args(["-c", node_dir.join("newsd.toml").to_str().unwrap_or_default(), "run"])
                    .env("RUST_LOG", "warn")
                    .stdout(Stdio::from(log.try_clone()?))
                    .stderr(Stdio::from(log))
                    .spawn()?,
            );
        }
        let pg = sqlx::PgPool::connect(&url).await?;
        let q = |sql: &'static str| {
            let pg = pg.clone();
            async move { sqlx::query_scalar::<_, Option<i64>>(sql).fetch_one(&pg).await.ok().flatten().unwrap_or(0) }
        };
        let deadline = Instant::now() + Duration::from_secs(3600);
        // Done when every feed was read, nothing is pending, every stored article is in every index, and that held
        // for 3 s with no new article (the time is when it first held).
        let mut held: Option<(i64, f64)> = None;
        let (secs, stored) = loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let stored = q("SELECT COUNT(*) FROM articles").await;
            let pending = q("SELECT COUNT(*) FROM articles WHERE page_status = 'pending'").await;
            let vectors = q("SELECT COUNT(*) FROM embeddings").await;
            let lagging = q("SELECT COUNT(*) FROM nodes WHERE index_vectors < (SELECT COUNT(*) FROM embeddings) OR index_lag > 0").await;
            let nodes = q("SELECT COUNT(*) FROM nodes").await;
            let feeds_read = servers.iter().all(|(name, s)| s.hits(&format!("/feeds/{name}")) > 0);
            let now = t.elapsed().as_secs_f64();
            if feeds_read && stored > 0 && pending == 0 && vectors == stored && nodes == n as i64 && lagging == 0 {
                match held {
                    Some((count, since)) if count == stored => {
                        if now - since >= 3.0 {
                            break (since, stored);
                        }
                    }
                    _ => held = Some((stored, now)),
                }
            } else {
                held = None;
            }
            if Instant::now() > deadline || children.iter_mut().any(|c| c.try_wait().ok().flatten().is_some()) {
                anyhow::bail!("{n} nodes: not done ({stored} stored, {pending} pages pending, {vectors} vectors); logs in {}", dir.path().display());
            }
        };
        let pages: usize = servers.iter().map(|(_, s)| s.requests().iter().filter(|(p, _)| p.starts_with("/articles/")).count()).sum();
        let distinct: usize = servers
            .iter()
            .map(|(_, s)| s.requests().iter().filter(|(p, _)| p.starts_with("/articles/")).map(|(p, _)| p.clone()).collect::<std::collections::HashSet<_>>().len())
            .sum();
        let doubled_fires = q("SELECT COUNT(*) FROM (SELECT job, scheduled_at FROM job_runs WHERE scheduled_at IS NOT NULL GROUP BY job, scheduled_at HAVING COUNT(*) > 1) d").await;
        let shares: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT job, node, COUNT(*) FROM job_runs WHERE outcome = 'ok' GROUP BY job, node ORDER BY job, node",
        )
        .fetch_all(&pg)
        .await?;
        let skipped = q("SELECT COUNT(*) FROM job_runs WHERE outcome = 'skipped'").await;
        let retried = q("SELECT COUNT(*) FROM articles WHERE page_attempts > 1").await;
        // Bytes per article in PostgreSQL (tables with their indexes and TOAST), for sizing.
        let sizes: Vec<(String, i64)> = sqlx::query_as(
            "SELECT relname::TEXT, pg_total_relation_size(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = current_schema() AND c.relkind = 'r' AND relname IN ('articles', 'embeddings', 'job_runs') ORDER BY relname",
        )
        .fetch_all(&pg)
        .await?;
        let per_article: Vec<String> =
            sizes.iter().map(|(t, b)| format!("{t} {:.0} B/article ({:.1} MiB)", *b as f64 / stored.max(1) as f64, *b as f64 / 1048576.0)).collect();
        for mut c in children {
            // SAFETY: a plain signal to our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
        pg.close().await;
        sqlx::query(&format!("DROP SCHEMA {schema} CASCADE")).execute(&admin).await?;
        let per_hour = stored as f64 / secs * 3600.0;
        let ratio = baseline.map(|b| format!(" = {:.2}x the 1-node run", per_hour / b)).unwrap_or_default();
        if baseline.is_none() {
            baseline = Some(per_hour);
        }
        let share: Vec<String> = shares.iter().map(|(job, node, c)| format!("{job}@{node}:{c}")).collect();
        println!(
            "RESULT e2e cluster {n} node(s): {stored} articles crawled + embedded + in every node's index in {secs:.1} s = {per_hour:.0} articles/hour{ratio}; \
             page requests {pages} for {distinct} pages ({} repeated: retries of {retried} pages that failed, up to crawl.max_page_attempts), fires run twice: {doubled_fires}, fires skipped (a run of the job still running, on any node): {skipped}; ok runs by node: {}; PostgreSQL: {}",
            pages - distinct,
            share.join(" "),
            per_article.join(", ")
        );
    }
    admin.close().await;
    Ok(())
}
