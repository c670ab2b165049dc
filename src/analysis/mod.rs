//! Periodic market analysis (issue 5). Filled in by the analysis work.
pub mod config;
