//! The `crmsync` binary carries its component (issue 15, item 4): copied
//! out of the checkout, with the checkout hidden, it replays a cassette into
//! its store. A test of the binary itself, so it lives beside it; it links
//! nothing of wasmtime (the runner's own tests are in `tests/`).

use std::path::Path;
use std::process::Command;

/// The checkout: what the copied binary must not need.
fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// Whether this machine lets this process hide the checkout behind an empty
/// mount of its own (a user and mount namespace): tried exactly as the test
/// then does it.
fn can_hide_the_checkout() -> bool {
    Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c"])
        .arg(r#"mount -t tmpfs none "$1""#)
        .arg("sh")
        .arg(workspace())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn the_binary_copied_out_of_the_checkout_syncs_with_the_component_it_carries() {
    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("crmsync");
    std::fs::copy(env!("CARGO_BIN_EXE_crmsync"), &binary).unwrap();
    let cassette = dir.path().join("contacts.json");
    std::fs::copy(
        workspace().join("fixtures/hubspot/contacts.json"),
        &cassette,
    )
    .unwrap();
    let config = dir.path().join("demo.toml");
    std::fs::write(&config, "[source]\nsystem = \"hubspot\"\n").unwrap();

    let sync = [
        binary.to_str().unwrap(),
        "sync",
        "--config",
        config.to_str().unwrap(),
        "--replay",
        cassette.to_str().unwrap(),
    ];
    let mut command = if can_hide_the_checkout() {
        // An empty tmpfs over the checkout, for this process only: had the
        // binary looked for `target/…/crmsync_plugin.wasm` or `wit/`, it
        // would find nothing.
        let mut command = Command::new("unshare");
        command
            .args(["--user", "--map-root-user", "--mount", "sh", "-c"])
            .arg(r#"mount -t tmpfs none "$1" && test ! -e "$1/Cargo.toml" && shift && exec "$@""#)
            .arg("sh")
            .arg(workspace())
            .args(sync);
        command
    } else {
        eprintln!("no user namespaces here: the copy runs beside the checkout, not hidden from it");
        let mut command = Command::new(sync[0]);
        command.args(&sync[1..]);
        command
    };
    let output = command
        .current_dir(dir.path())
        .env("CRMSYNC_CACHE_DIR", dir.path().join("cache"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("seen 10  created 7  updated 0  skipped 0  failed 3"),
        "{stdout}"
    );
    // The store beside the config, as `store.path` defaults.
    assert!(dir.path().join("demo.sqlite").is_file());
}
