//! crmsync's sync logic, built as a WebAssembly component (`wit/sync.wit`).
//!
//! The logic is plain Rust over the contract's generated types, so it is unit
//! tested natively; only [`component`] (the export glue) and `wasi_http`
//! (the HTTP client) are specific to `wasm32`.

pub mod allocator;
pub mod associations;
pub mod counterparts;
pub mod errors;
pub mod filters;
pub mod hubspot;
pub mod mapping;
pub mod matching;
pub mod page_keys;
pub mod page_matching;
pub mod pairing;
pub mod phones;
pub mod reconcile;
pub mod salesforce;
pub mod transport;
pub mod values;
pub mod writes;

/// The contract's types, generated from `wit/` on every target.
pub mod bindings {
    wit_bindgen::generate!({
        world: "plugin",
        path: "../wit",
        pub_export_macro: true,
        generate_all,
        additional_derives: [PartialEq],
    });
}

pub use bindings::crmsync::sync::types;

#[cfg(target_arch = "wasm32")]
mod component;
#[cfg(target_arch = "wasm32")]
mod wasi_http;

/// The component's allocator: size classes in front of Talc, which grows
/// linear memory as needed (`allocator`).
#[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOCATOR: allocator::SizeClasses<talc::wasm::WasmDynamicTalc> =
    allocator::SizeClasses::new(talc::wasm::new_wasm_dynamic_allocator());
