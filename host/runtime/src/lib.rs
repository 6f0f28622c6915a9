//! crmsync's runtime: the sync component (`wit/sync.wit`, embedded at build
//! time) loaded in wasmtime under its sandbox, and what the runner supplies
//! it — HTTP to the allowed API hosts with credentials added, rate limits,
//! recorded cassettes — with the compiled-code cache. It runs no sync; the
//! engine (`crmsync-host`) drives it.

pub mod api_bounds;
pub mod auth;
pub mod cassette;
pub mod code_cache;
pub mod connections;
pub mod http;
pub mod origin;
pub mod page_keys;
pub mod rate_limit;
pub mod runtime;
/// The destination store the component's `directory` import reads.
pub use crmsync_store as store;

/// Host-side bindings of the contract, generated from `wit/`.
pub mod bindings {
    wasmtime::component::bindgen!({
        world: "plugin",
        path: "../../wit",
        // Store failures in the directory import trap the call instead of
        // being swallowed: matching on a half-read directory would be wrong.
        imports: { default: trappable },
        // Serde: a two-way run keeps the destination records it has read in a
        // temporary database, not in memory (`held`).
        additional_derives: [PartialEq, serde::Serialize, serde::Deserialize],
    });
}
