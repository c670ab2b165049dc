//! newsd: crawls news, stores it, embeds and indexes it, analyses it on schedule and notifies.
//!
//! One module per pipeline stage, each with a narrow surface; `app` wires the shared parts, `daemon` runs them on
//! schedules. Every task is a plain async function the CLI, the scheduler and the tests all call.

pub mod analysis;
pub mod api;
pub mod app;
pub mod bench;
pub mod cluster;
pub mod compute;
pub mod config;
pub mod crawl;
pub mod embed;
pub mod index;
pub mod daemon;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod net;
pub mod notify;
pub mod ops;
pub mod schedule;
pub mod status;
pub mod store;
pub mod tasks;
pub mod testkit;

pub use app::App;
pub use config::Config;
