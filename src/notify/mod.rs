//! Notifications (issue 5). Filled in by the notification work.
pub mod config;
