//! What a daemon tells whoever watches its runs — the console's live view
//! and its metrics — and the one request a watcher may hand back: read
//! everything on the sync's next run (the console's "Full re-sync").

use crate::report::SyncReport;
use crate::store::Counts;

/// Told of every run a daemon starts, as it goes and when it ends. Calls
/// come from the runs' own threads, so they must be quick and must not block.
pub trait RunObserver: Send + Sync {
    /// A run of `sync` (the config's name) starts.
    fn started(&self, _sync: &str) {}
    /// A page was committed; `counts` are the run's so far.
    fn progress(&self, _sync: &str, _counts: &Counts) {}
    /// The run ended with a report, or with the error that stopped it.
    fn finished(&self, _sync: &str, _outcome: Result<&SyncReport, &anyhow::Error>) {}
    /// The run did not happen after all: another process holds the sync.
    /// `full` says whether it was to read everything (a request taken by
    /// [`RunObserver::take_full`] that the watcher may want to keep).
    fn skipped(&self, _sync: &str, _full: bool) {}
    /// Whether the next run of `sync` reads every record (a full re-sync was
    /// asked for); asking takes the request.
    fn take_full(&self, _sync: &str) -> bool {
        false
    }
}

/// Watches nothing: the plain daemon's observer.
pub struct Unobserved;

impl RunObserver for Unobserved {}
