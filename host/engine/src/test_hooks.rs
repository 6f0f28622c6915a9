//! Fault injection for the crash tests, off unless its variable is set.
//!
//! `CRMSYNC_ABORT_AFTER_WRITES=N` aborts the process right after its Nth
//! write to a CRM has been answered, before the store commits what it
//! learned: the one window a random kill rarely hits, and the one where a
//! create can land without its link. Reading the variable costs once per
//! process; nothing else changes when it is not set.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The variable naming the write after which to abort.
pub const ABORT_AFTER_WRITES: &str = "CRMSYNC_ABORT_AFTER_WRITES";

/// Called after each write to a CRM returns, before its results commit.
pub fn after_write() {
    static LIMIT: OnceLock<Option<u64>> = OnceLock::new();
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let Some(limit) = *LIMIT.get_or_init(|| {
        std::env::var(ABORT_AFTER_WRITES)
            .ok()
            .and_then(|n| n.parse().ok())
    }) else {
        return;
    };
    if WRITES.fetch_add(1, Ordering::Relaxed) + 1 >= limit {
        // No destructor, no commit: as a kill would leave it.
        std::process::abort();
    }
}
