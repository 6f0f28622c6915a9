//! Test harness: the real component, built once per test binary, and a
//! loopback HTTP servers that speak HubSpot's and Salesforce's documented shapes.

pub mod hubspot_server;
pub mod loopback;
pub mod salesforce_server;

use anyhow::{Context, Result};
use crmsync_host::config::Config;
use crmsync_host::runtime::{Runtime, Sandbox};
use crmsync_host::sync::{RetryPolicy, SyncOptions, SyncReport, run_sync};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds the component (wasm32-wasip2, the `component` profile) into its own
/// target folder so the build cannot contend with the cargo that runs the
/// tests, and so a test never runs a stale component.
pub fn component_path() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| build_guest("crmsync-plugin", crmsync_host::runtime::COMPONENT_FILE))
}

/// The deliberately hostile component of the sandbox tests (`tests/misbehaving`).
pub fn misbehaving_component_path() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| build_guest("crmsync-misbehaving", "crmsync_misbehaving.wasm"))
}

fn build_guest(package: &str, file: &str) -> PathBuf {
    let target_dir = workspace().join("target").join("test-plugin");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(workspace())
        // As host/runtime/build.rs builds the component the runner carries,
        // argument for argument, so neither build invalidates the other's.
        .args(["rustc", "--locked", "--profile", "component"])
        .args(["-p", package, "--lib", "--crate-type", "cdylib"])
        .args(["--target", "wasm32-wasip2", "--target-dir"])
        .arg(&target_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building {package} failed");
    target_dir
        .join("wasm32-wasip2")
        .join("component")
        .join(file)
}

/// The component loaded once per test binary.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        Runtime::load(component_path(), Sandbox::default()).expect("the component loads")
    })
}

/// Retries that do not slow the tests down.
pub fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
        ..RetryPolicy::default()
    }
}

/// Options for a live run against a loopback server, with fast retries.
pub fn live_options() -> SyncOptions {
    SyncOptions {
        retry: fast_retries(),
        ..SyncOptions::default()
    }
}

/// A config file in `dir` with the given TOML body (a `[store]` pointing into `dir` is added).
pub fn write_config(dir: &Path, name: &str, body: &str) -> PathBuf {
    write_config_in(dir, name, body, &format!("path = \"{name}.sqlite\""))
}

/// Writes config `name` with `store` as its `[store]` table's keys.
pub fn write_config_in(dir: &Path, name: &str, body: &str, store: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let text = format!("{body}\n[store]\n{store}\n");
    std::fs::write(&path, text).expect("config written");
    path
}

/// The throwaway PostgreSQL `scripts/test.sh` starts. Never skipped: without
/// it the PostgreSQL tests fail, naming how to get one.
pub fn postgres_url() -> String {
    std::env::var("CRMSYNC_TEST_POSTGRES_URL").expect(
        "CRMSYNC_TEST_POSTGRES_URL is not set: run the tests with `bash scripts/test.sh`, \
         or set it to the URL `bash scripts/postgres.sh start` prints",
    )
}

/// `[store]` keys of a PostgreSQL store in a namespace no other test (or
/// earlier run) uses.
pub fn postgres_store(name: &str) -> String {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .subsec_nanos();
    let next = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(20)
        .collect();
    format!(
        "url = \"{}\"\nnamespace = \"t_{name}_{}_{nanos}_{next}\"",
        postgres_url(),
        std::process::id()
    )
}

/// The TOML of a sync from one CRM into another, each `(system, base URL)`
/// reached with [`TOKEN`]; `source_extra` goes in `[source]`, `extra` after
/// the `[destination]` keys (more `[destination]` keys, or other tables).
pub fn crm_sync_toml(
    source: (&str, &str),
    destination: (&str, &str),
    source_extra: &str,
    extra: &str,
) -> String {
    let env = token_env();
    format!(
        "[source]\nsystem = \"{}\"\nbase_url = \"{}\"\ntoken_env = \"{env}\"\n{source_extra}\n\
         [destination]\nsystem = \"{}\"\nbase_url = \"{}\"\ntoken_env = \"{env}\"\n{extra}\n",
        source.0, source.1, destination.0, destination.1
    )
}

/// A HubSpot config against `base_url` with a private-app token from `token_env`.
pub fn hubspot_config(
    dir: &Path,
    name: &str,
    base_url: &str,
    token_env: &str,
    extra_source: &str,
    extra: &str,
) -> Config {
    let store = format!("path = \"{name}.sqlite\"");
    hubspot_config_in(dir, name, base_url, token_env, extra_source, extra, &store)
}

/// [`hubspot_config`] with `store` as its `[store]` keys.
pub fn hubspot_config_in(
    dir: &Path,
    name: &str,
    base_url: &str,
    token_env: &str,
    extra_source: &str,
    extra: &str,
    store: &str,
) -> Config {
    let path = write_config_in(
        dir,
        name,
        &format!(
            "[source]\nsystem = \"hubspot\"\nbase_url = \"{base_url}\"\ntoken_env = \"{token_env}\"\n{extra_source}\n{extra}"
        ),
        store,
    );
    Config::load(&path).expect("config loads")
}

/// One sync pass with `options`.
pub fn sync(config: &Config, options: &SyncOptions) -> Result<SyncReport> {
    run_sync(runtime(), config, options).with_context(|| format!("sync {}", config.name))
}

/// Runs the `crmsync` command line in-process and returns its output.
pub fn crmsync(args: &[&str]) -> Result<(crmsync_host::cli::Exit, String)> {
    use clap::Parser;
    let mut argv = vec!["crmsync"];
    argv.extend_from_slice(args);
    let cli = crmsync_host::cli::Cli::try_parse_from(argv)?;
    let mut out = Vec::new();
    let exit = crmsync_host::cli::run(cli, &mut out)?;
    Ok((exit, String::from_utf8(out)?))
}

/// The token every loopback server accepts by default.
pub const TOKEN: &str = "pat-na1-test-token";

/// The environment variable holding [`TOKEN`]; set once per test binary.
pub fn token_env() -> &'static str {
    static SET: OnceLock<()> = OnceLock::new();
    SET.get_or_init(|| set_env("CRMSYNC_TEST_TOKEN", TOKEN));
    "CRMSYNC_TEST_TOKEN"
}

/// Sets an environment variable for this test binary. Each test uses its own
/// variable names, and Rust's env functions serialise access to the environment.
pub fn set_env(name: &str, value: &str) {
    // SAFETY: only Rust code (which locks the environment) reads it in these tests.
    unsafe { std::env::set_var(name, value) };
}

/// Contacts as `crmsync contacts --json` shows them, keyed by external id.
pub fn contacts_by_external_id(
    config: &Config,
) -> BTreeMap<String, crmsync_host::store::ContactRow> {
    config
        .store
        .open()
        .expect("store opens")
        .contacts()
        .expect("contacts read")
        .into_iter()
        .filter_map(|c| Some((c.external_id.clone()?, c)))
        .collect()
}

/// A fresh instance of `runtime` whose HTTP may reach `base_url`'s origin
/// (through `mode`, with `bearer` added) and whose directory is `store`.
pub fn instance_with(
    runtime: &Runtime,
    base_url: &str,
    mode: crmsync_host::http::HttpMode,
    bearer: Option<&str>,
    store: crmsync_host::store::ContactStore,
) -> crmsync_host::runtime::Instance {
    use crmsync_host::http::{Hooks, HttpLimits, HttpStats, Token};
    let hooks = Hooks::new(
        crmsync_host::config::Origin::parse(base_url).expect("a valid base URL"),
        mode,
        std::sync::Arc::new(std::sync::Mutex::new(Token {
            value: bearer.map(str::to_owned),
            generation: 0,
        })),
        HttpLimits::default(),
        std::sync::Arc::new(HttpStats::default()),
    );
    let state = crmsync_host::runtime::HostState::new(hooks, Box::new(store), runtime.sandbox());
    runtime
        .instantiate(state)
        .expect("the component instantiates")
}

/// An instance of `runtime` that reaches `base_url` live, sending `bearer`,
/// over an empty in-memory directory.
pub fn live_instance(
    runtime: &Runtime,
    base_url: &str,
    bearer: &str,
) -> crmsync_host::runtime::Instance {
    instance_with(
        runtime,
        base_url,
        crmsync_host::http::HttpMode::Live,
        Some(bearer),
        crmsync_host::store::ContactStore::open_in_memory().expect("an in-memory store"),
    )
}

/// Every contact of the HubSpot at `base_url`, unfiltered, with HubSpot's
/// default properties.
pub fn all_hubspot_contacts(
    base_url: &str,
) -> crmsync_host::bindings::crmsync::sync::types::Source {
    use crmsync_host::bindings::crmsync::sync::types::{HubspotScope, HubspotSource, Source};
    Source::HubspotContacts(HubspotSource {
        base_url: base_url.to_owned(),
        scope: HubspotScope::All,
        properties: vec![],
        filters: vec![],
        with_companies: false,
    })
}
