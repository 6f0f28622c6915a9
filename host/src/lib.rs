//! crmsync's runner: drives the sync component (`crmsync-runtime`) through
//! passes into its store (`crmsync-store`) or into another CRM, with
//! retries, leases, schedules and notifications, and the `crmsync` command
//! line.

pub mod bridge;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod held;
pub mod lease;
pub mod notify;
pub mod options;
pub mod paging;
pub mod report;
pub mod retry;
pub mod run_errors;
pub mod runs;
pub mod schedule;
pub mod summary;
pub mod sync;
pub mod test_hooks;

// The runtime's and the store's modules, under the names the runner's own
// modules (and its tests) use.
pub use crmsync_runtime::{
    api_bounds, auth, bindings, cassette, code_cache, http, origin, rate_limit, runtime,
};
/// The destination store (`crmsync-store`).
pub use crmsync_store as store;
