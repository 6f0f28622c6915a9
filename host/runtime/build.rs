//! Builds the sync component (`plugin/`, `wasm32-wasip2`, the workspace's
//! `component` profile: release with LTO) so the runner carries it: a copied
//! or `cargo install`ed `crmsync` needs no checkout. The same way wasmtime's
//! test-programs artifacts crate builds its guests: a nested cargo build into
//! a target folder of its own, so it never waits on the lock of the build
//! that runs this script.
//!
//! The folder is the one the integration tests build the component into
//! (`target/test-plugin`), so a test run builds it once, not twice.

use sha2::Digest;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let workspace = manifest
        .ancestors()
        .nth(2)
        .expect("host/runtime/ sits in the workspace")
        .to_owned();
    for watched in ["plugin/src", "plugin/Cargo.toml", "wit", "Cargo.lock"] {
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join(watched).display()
        );
    }
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"))
        .join("test-plugin");
    let component = build_component(&workspace, &target_dir);
    println!(
        "cargo:rustc-env=CRMSYNC_EMBEDDED_COMPONENT_BUILT_AT={}",
        component.display()
    );
    // What is embedded is a copy in OUT_DIR, hashed here: the digest is of the
    // very bytes `include_bytes!` reads, even if a test run rebuilds
    // `target/test-plugin` meanwhile. The digest names the compiled artifact
    // in the code cache, so a start does not hash the component again.
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap()).join("crmsync_plugin.wasm");
    let bytes = std::fs::read(&component)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", component.display()));
    std::fs::write(&out, &bytes).unwrap_or_else(|e| panic!("cannot write {}: {e}", out.display()));
    let digest = out.with_extension("sha256");
    std::fs::write(&digest, sha2::Sha256::digest(&bytes))
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", digest.display()));
    println!(
        "cargo:rustc-env=CRMSYNC_EMBEDDED_COMPONENT={}",
        out.display()
    );
    println!(
        "cargo:rustc-env=CRMSYNC_EMBEDDED_COMPONENT_SHA256={}",
        digest.display()
    );
}

fn build_component(workspace: &Path, target_dir: &Path) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace)
        // `rustc --crate-type cdylib` with the `component` profile: the
        // plugin is also an `rlib` (the bench and unit tests link it
        // natively), and cargo applies no LTO to a package built as both
        // (Cargo.toml says why the component wants it).
        .args(["rustc", "--locked", "--profile", "component"])
        .args(["-p", "crmsync-plugin", "--lib", "--crate-type", "cdylib"])
        .args(["--target", "wasm32-wasip2", "--target-dir"])
        .arg(target_dir);
    // The outer build's flags and wrappers are for the host: clippy's driver
    // or coverage flags on the guest would change its fingerprint and
    // rebuild it on every alternation between `cargo clippy` and `cargo test`.
    for variable in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        command.env_remove(variable);
    }
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo to build the sync component: {e}"));
    assert!(
        status.success(),
        "building the sync component failed (is the wasm32-wasip2 target installed? \
         `rustup target add wasm32-wasip2`)"
    );
    let component = target_dir
        .join("wasm32-wasip2")
        .join("component")
        .join("crmsync_plugin.wasm");
    assert!(component.is_file(), "{} was not built", component.display());
    component
}
