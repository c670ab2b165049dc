//! Keeping the daemon's resident memory flat over weeks (glibc's malloc; no-ops elsewhere).
//!
//! glibc gives each thread that allocates concurrently its own arena (up to 8 per core) and keeps what is freed
//! inside them for reuse. The daemon runs every job on a short-lived blocking thread (and the runtime, SQLite and
//! the compute worker have threads of their own), so each job's garbage lands in whichever arena its thread got,
//! and the arenas' free pages are only returned when their top chunk happens to be free: resident memory creeps
//! up run after run with constant data (`newsd bench soak` measured it). Two arenas and a trim after each job
//! keep it flat.

/// Limits malloc to two arenas. Call first thing in `main`, before any thread exists. `MALLOC_ARENA_MAX` in the
/// environment (glibc reads it itself) is left to win.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only changes malloc's parameters; called before other threads exist.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

/// Returns the free pages of every malloc arena to the kernel (after a job: its buffers are garbage now).
/// A few milliseconds for a few hundred MB of heap.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim is thread-safe (it locks each arena in turn).
    unsafe {
        libc::malloc_trim(0);
    }
}
