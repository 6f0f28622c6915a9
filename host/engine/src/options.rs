//! How to run a pass: HTTP mode and limits, retries, the lease, progress,
//! shared rate limiters. Plain settings, set by the CLI and the daemon.

use crate::http::{HttpLimits, HttpMode};
use crate::lease::LeaseTiming;
use crate::rate_limit::AccountLimiters;
use crate::retry::RetryPolicy;
use crate::store::Counts;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// How to run a pass.
#[derive(Clone)]
pub struct SyncOptions {
    pub http_mode: HttpMode,
    pub http_limits: HttpLimits,
    pub retry: RetryPolicy,
    /// Set to stop after the current page; the run stays resumable.
    pub stop: Arc<AtomicBool>,
    /// Who holds the sync's lease while this pass runs (see [`lease_owner`]).
    pub lease_owner: String,
    /// How long the lease lives and how often it is renewed.
    pub lease: LeaseTiming,
    /// Called with the run's counters after every commit (a page, or
    /// several while the applier is behind the reader).
    pub progress: Option<Progress>,
    /// The source account's limiters, when several syncs share the account
    /// (the daemon); otherwise each pass makes its own from the config.
    pub limiters: Option<AccountLimiters>,
    /// Read every record even when an incremental run would do (`sync --full`).
    pub full: bool,
    /// This runner's id (`--runner-id`; default host name and pid): on its
    /// runs, in its `User-Agent`, in the fleet's runner list.
    pub runner: String,
}

/// A progress callback (see [`SyncOptions::progress`]).
pub type Progress = Arc<dyn Fn(&Counts) + Send + Sync>;

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            http_mode: HttpMode::Live,
            http_limits: HttpLimits::default(),
            retry: RetryPolicy::default(),
            stop: Arc::new(AtomicBool::new(false)),
            lease_owner: lease_owner(),
            lease: LeaseTiming::default(),
            progress: None,
            limiters: None,
            full: false,
            runner: runner_id(),
        }
    }
}

impl SyncOptions {
    /// The `User-Agent` every API request carries: the CRMs' audit logs
    /// then say which runner made a change.
    pub fn user_agent(&self) -> String {
        format!(
            "crmsync/{} runner/{}",
            env!("CARGO_PKG_VERSION"),
            self.runner
        )
    }
}

/// The default runner id: `<host name>-<pid>`.
pub fn runner_id() -> String {
    format!("{}-{}", crate::lease::hostname(), std::process::id())
}

/// This process, as a lease holder (see [`crate::lease::holder_id`]).
pub fn lease_owner() -> String {
    crate::lease::holder_id()
}
