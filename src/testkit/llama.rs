//! A real LLM for tests: llama.cpp's `llama-server`, built from source by `scripts/setup.sh --llm`.

use std::time::Duration;

/// A running llama-server, killed on drop.
pub struct Llama {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl Drop for Llama {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last 30 lines of a log file.
pub fn log_tail(p: &std::path::Path) -> String {
    let t = std::fs::read_to_string(p).unwrap_or_default();
    t.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// Starts llama.cpp's `llama-server` (built by `scripts/setup.sh --llm`, or `NEWSD_LLAMA_SERVER`) with the tiny
/// gemma-3-270m model (or `NEWSD_LLAMA_MODEL`) on a free 127.0.0.1 port, 4k context, seed 7, and waits until it
/// is healthy; returns it and its origin (`http://127.0.0.1:PORT`). Panics with what to run when it is not built.
pub async fn start(dir: &std::path::Path) -> (Llama, String) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin = std::env::var_os("NEWSD_LLAMA_SERVER").map(Into::into).unwrap_or_else(|| root.join(".cache/llama/llama-server"));
    let model = std::env::var_os("NEWSD_LLAMA_MODEL")
        .map(Into::into)
        .unwrap_or_else(|| root.join(".cache/llama/gemma-3-270m-q4_k_m.gguf"));
    for (what, p) in [("llama-server", &bin), ("the gemma-3-270m model", &model)] {
        assert!(
            p.is_file(),
            "{what} not found at {}: run `scripts/setup.sh --llm` (CI runs it; it builds llama.cpp once per machine)",
            p.display()
        );
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let log = dir.join("llama-server.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = std::process::Command::new(&bin)
        .args(["-m"])
        .arg(&model)
        .args(["--host", "127.0.0.1", "--port", &port.to_string(), "-t", "2", "-c", "4096", "-np", "1"])
        .args(["--no-jinja", "--chat-template", "gemma", "--no-webui", "--seed", "7"])
        // No weight repacking: on an AVX-512/AMX Xeon (2026-12-07) this build of llama-server (GGML_NATIVE) crashed
        // with SIGSEGV right after "threadpool init" in every start with repacking on, and ran with it off. Repacking
        // only changes the weights' memory layout for speed; the tests need an answer, not its speed.
        .arg("--no-repack")
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
    let mut llama = Llama { child, log };
    let origin = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(r) = http.get(format!("{origin}/health")).send().await {
            if r.status().is_success() {
                break;
            }
        }
        if let Ok(Some(status)) = llama.child.try_wait() {
            panic!("llama-server exited ({status}):\n{}", log_tail(&llama.log));
        }
        assert!(std::time::Instant::now() < deadline, "llama-server not healthy after 120 s:\n{}", log_tail(&llama.log));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    (llama, origin)
}

