//! crmsync's runner: loads the sync component (`wit/sync.wit`) in wasmtime and
//! supplies what it may not hold itself — HTTP to the configured API host with
//! the credentials added, the destination store, the clock and retries.

pub mod api_bounds;
pub mod auth;
pub mod bridge;
pub mod cassette;
pub mod cli;
pub mod code_cache;
pub mod config;
pub mod daemon;
pub mod held;
pub mod http;
pub mod lease;
pub mod notify;
pub mod options;
pub mod origin;
pub mod paging;
pub mod rate_limit;
pub mod report;
pub mod retry;
pub mod run_errors;
pub mod runs;
pub mod runtime;
pub mod schedule;
/// The destination store (`crmsync-store`), under the name the runner's modules use.
pub use crmsync_store as store;
pub mod summary;
pub mod sync;
pub mod test_hooks;

/// Host-side bindings of the contract, generated from `wit/`.
pub mod bindings {
    wasmtime::component::bindgen!({
        world: "plugin",
        path: "../wit",
        // Store failures in the directory import trap the call instead of
        // being swallowed: matching on a half-read directory would be wrong.
        imports: { default: trappable },
        // Serde: a two-way run keeps the destination records it has read in a
        // temporary database, not in memory (`held`).
        additional_derives: [PartialEq, serde::Serialize, serde::Deserialize],
    });
}
