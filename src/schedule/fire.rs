//! What firing a job answers: accepted at once (started, queued, skipped), and how the run ended. Shared by the
//! daemon's executor and the HTTP API (which fires "run now" through it).

/// What happened to a fire at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum FireAccepted {
    /// The run started (after its jitter, if any).
    Started,
    /// The previous run is still running; this one runs after it (`overlap = "queue"`).
    Queued,
    /// The previous run is still running (`overlap = "skip"`, or one run is already queued): recorded as skipped.
    Skipped,
    /// The daemon is stopping: nothing was started.
    Stopping,
}

/// How a fired run ended (sent to whoever fired it with `daemon::executor::Executor::fire_tracked`).
#[derive(Debug, Clone)]
pub struct RunEnd {
    pub run_id: Option<i64>,
    pub outcome: crate::store::RunOutcome,
    pub counters: Option<serde_json::Value>,
    pub error: Option<String>,
}
