//! The `crmsync` command line: its commands and their output, and the daemon
//! that runs syncs on their schedules, over the engine (`crmsync-engine`).

pub mod cli;
pub mod daemon;
pub mod fleet;
pub mod serve;
pub mod summary;

// The engine's, the runtime's and the store's modules, under the names the
// command line's modules (and the tests and bench) use: one crate to name.
pub use crmsync_engine::{
    api_bounds, auth, bindings, bridge, cassette, code_cache, config, connections, held, http,
    lease, notify, observer, options, origin, paging, rate_limit, report, retry, run_errors, runs,
    runtime, schedule, status, store, store_location, sync, test_hooks, untrusted,
};
