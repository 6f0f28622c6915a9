//! The integration tests: the real component, loaded by the real runner, against loopback
//! HubSpot- and Salesforce-shaped servers. Each module is one area of the product; they share one
//! binary so the component is built and compiled once (see `tests/Cargo.toml`).

mod bounds;
mod cli;
mod companies;
mod console;
mod contract;
mod crash;
mod cursors;
mod daemon;
mod embed_wasmtime;
mod failures;
mod field_security;
mod filters;
mod fleet;
mod incremental;
mod leases;
mod notify;
mod paging_ahead;
mod pairing;
mod phones;
mod postgres;
mod salesforce;
mod sandbox;
mod sync;
mod two_way;
