//! The runner's memory stays bounded whatever the APIs send (issue 14, items
//! 4 and 6): a server advertising a rate limit of four billion requests with
//! none remaining leaves it where it was, and a two-way run holding ten times
//! the destination records grows it only by its bounded caches.
//!
//! Each run is this test binary re-executed as a child (`CRMSYNC_BOUNDS_CHILD`
//! set), which prints its peak resident memory, so the figure is the sync's
//! own and not the test binary's.

use crmsync_host::config::Config;
use crmsync_host::runtime::{Runtime, Sandbox};
use crmsync_host::sync::run_sync;
use crmsync_tests::hubspot_server::{Contact, HubSpotServer};
use crmsync_tests::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const CHILD: &str = "CRMSYNC_BOUNDS_CHILD";

/// In a child process: one sync pass, then `peak-rss-kb <n>` on stdout.
#[test]
fn bounds_child() {
    let Ok(config) = std::env::var(CHILD) else {
        return; // not a child: nothing to do
    };
    let component = std::env::var("CRMSYNC_BOUNDS_COMPONENT").expect("component path");
    let runtime =
        Runtime::load(Path::new(&component), Sandbox::default()).expect("component loads");
    let config = Config::load(Path::new(&config)).expect("config loads");
    let report = run_sync(&runtime, &config, &live_options()).expect("sync runs");
    assert_eq!(report.status, "completed", "{report:#?}");
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let peak = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .expect("VmHWM in /proc/self/status");
    println!("peak-rss-kb {}", peak.trim().trim_end_matches(" kB"));
}

/// Runs `config` in a child; its peak RSS in KiB.
fn peak_rss_kb(config: &Path) -> u64 {
    // Built (once per binary) before the clock starts: on CI's two cores the
    // build alone takes two minutes, and it is not the child's time.
    let component = component_path();
    let started = Instant::now();
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "bounds::bounds_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, config)
        .env("CRMSYNC_BOUNDS_COMPONENT", component)
        .env(token_env(), TOKEN)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the child sync failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(started.elapsed() < Duration::from_secs(120));
    stdout
        .lines()
        // The harness prints the test's name on the same line.
        .find_map(|l| l.split("peak-rss-kb ").nth(1))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak-rss-kb line in {stdout}"))
}

#[test]
fn absurd_rate_limit_headers_keep_the_runners_memory_flat() {
    let dir = tempfile::tempdir().unwrap();
    let server = HubSpotServer::start(TOKEN);
    {
        let mut state = server.state();
        state.contacts = (1..=300)
            .map(|i| Contact::new(i, &[("email", Some(&format!("p{i}@bounds.example")))]))
            .collect();
        state.page_size = Some(100);
    }
    let config = |name: &str| {
        hubspot_config(dir.path(), name, &server.base_url, token_env(), "", "");
        dir.path().join(format!("{name}.toml"))
    };
    let calm = peak_rss_kb(&config("calm"));
    server.state().extra_headers = vec![
        ("X-HubSpot-RateLimit-Max".into(), "4000000000".into()),
        ("X-HubSpot-RateLimit-Remaining".into(), "0".into()),
        // Short, so that waiting out "nothing remaining" keeps the test quick.
        (
            "X-HubSpot-RateLimit-Interval-Milliseconds".into(),
            "200".into(),
        ),
    ];
    let bombed = peak_rss_kb(&config("bombed"));
    eprintln!("peak RSS: {calm} KiB with sane headers, {bombed} KiB under the header bomb");
    assert!(
        bombed < calm + 32 * 1024,
        "the header bomb grew the runner from {calm} KiB to {bombed} KiB"
    );
}

/// A two-way run's first pass reads the destination's whole side before the
/// source's: it waits in a temporary database, so ten times the records
/// cost the runner next to no memory (issue 14, item 6).
#[test]
fn a_two_way_sync_does_not_hold_the_destination_side_in_memory() {
    use crmsync_tests::salesforce_server::{Record, SalesforceServer};
    let dir = tempfile::tempdir().unwrap();
    let hubspot = HubSpotServer::start(TOKEN);
    let peak = |name: &str, records: usize| {
        let salesforce = SalesforceServer::start(TOKEN);
        // People without an email: read and held, never created on the
        // other side (E1), so the run is all reading.
        salesforce.state().contacts = (0..records)
            .map(|i| {
                Record::new(
                    &format!("003{i:012}"),
                    &[
                        (
                            "LastName",
                            serde_json::json!(format!("Held {i} {}", "x".repeat(200))),
                        ),
                        (
                            "Title",
                            serde_json::json!("A title long enough to weigh something"),
                        ),
                    ],
                    1_717_200_000_000,
                )
            })
            .collect();
        write_config(
            dir.path(),
            name,
            &crm_sync_toml(
                ("hubspot", &hubspot.base_url),
                ("salesforce", &salesforce.instance_url),
                "",
                "objects = [\"Contact\"]\ndirection = \"both\"",
            ),
        );
        peak_rss_kb(&dir.path().join(format!("{name}.toml")))
    };
    let small = peak("small", 4_000);
    let large = peak("large", 40_000);
    eprintln!("peak RSS: {small} KiB with 4,000 destination records held, {large} KiB with 40,000");
    // What may grow is bounded: the store's page cache (16 MiB), filling
    // with the 36,000 more errors the records without an email make, and the
    // temporary database's (4 MiB). Held in memory, the records alone had
    // added 47 MiB (57.8 to 105.2 MiB).
    assert!(
        large < small + 20 * 1024,
        "36,000 more held records grew the runner from {small} KiB to {large} KiB"
    );
}
