//! crmsync's engine: one sync pass of a config into its store or into
//! another CRM, one-way or both ways — reading pages through the component,
//! applying its decisions, checkpointing, retrying, keeping the lease — and
//! the configs and notifications around a pass. It prints nothing; the
//! `crmsync` binary (`crmsync-host`) shows what it did.

pub mod bridge;
mod commit_groups;
pub mod config;
pub mod held;
pub mod lease;
pub mod notify;
pub mod observer;
pub mod options;
pub mod paging;
pub mod report;
pub mod retry;
pub mod run_errors;
pub mod runs;
pub mod schedule;
pub mod status;
pub mod store_location;
pub mod sync;
pub mod test_hooks;
pub mod untrusted;

// The runtime's and the store's modules, under the names the engine's
// modules use.
pub use crmsync_runtime::{
    api_bounds, auth, bindings, cassette, code_cache, connections, http, origin, rate_limit,
    runtime,
};
/// The destination store (`crmsync-store`).
pub use crmsync_store as store;
