//! tracing setup: stderr for CLI commands (stdout stays clean for --json), stdout plus daily rolling files for the
//! daemon. Level and filters come from the config, overridden by RUST_LOG.

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::{fmt, layer::SubscriberExt, util::SubscriberInitExt, EnvFilter, Layer};

use crate::config::Config;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogMode {
    /// One-shot command: human logs on stderr.
    Cli,
    /// Long-running daemon: stdout and rolling files.
    Daemon,
}

/// Keep the returned guard alive for the life of the process (it flushes the file writer on drop).
pub fn init(config: &Config, mode: LogMode) -> anyhow::Result<Option<WorkerGuard>> {
    // tokio-cron-scheduler logs every job it adds at INFO; keep it to warnings unless the filter names it.
    let level = if config.logging.level.contains("tokio_cron_scheduler") {
        config.logging.level.clone()
    } else {
        format!("{},tokio_cron_scheduler=warn", config.logging.level)
    };
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&level));
    // Colours only on a terminal (not in journald or redirected output).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let json = config.logging.json;
    let console = match (mode, json) {
        (LogMode::Cli, false) => fmt::layer().with_writer(std::io::stderr).with_target(false).boxed(),
        (LogMode::Cli, true) => fmt::layer().json().with_writer(std::io::stderr).boxed(),
        (LogMode::Daemon, false) => fmt::layer().with_writer(std::io::stdout).with_ansi(ansi).boxed(),
        (LogMode::Daemon, true) => fmt::layer().json().with_writer(std::io::stdout).boxed(),
    };
    let mut guard = None;
    let file_layer = if mode == LogMode::Daemon && config.logging.files {
        let dir = config.log_dir();
        std::fs::create_dir_all(&dir).map_err(|e| anyhow::anyhow!("creating log directory {}: {e}", dir.display()))?;
        let appender = tracing_appender::rolling::Builder::new()
            .rotation(tracing_appender::rolling::Rotation::DAILY)
            .filename_prefix("newsd")
            .filename_suffix("log")
            .max_log_files(config.logging.keep_files.max(1))
            .build(&dir)?;
        let (writer, g) = tracing_appender::non_blocking(appender);
        guard = Some(g);
        Some(if json { fmt::layer().json().with_writer(writer).with_ansi(false).boxed() } else { fmt::layer().with_writer(writer).with_ansi(false).boxed() })
    } else {
        None
    };
    tracing_subscriber::registry()
        .with(console.with_filter(filter()))
        .with(file_layer.map(|l| l.with_filter(filter())))
        .try_init()
        .ok();
    Ok(guard)
}
