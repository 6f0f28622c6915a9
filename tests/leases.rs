//! The sync's lease is fenced and kept alive by heartbeats (issue 14, item
//! 3): a runner whose lease another process took over stops without writing
//! to the store or to a CRM, and a runner waiting out a long rate limit keeps
//! its lease however long the wait.

use crmsync_host::config::Config;
use crmsync_host::lease::LeaseTiming;
use crmsync_host::store::ContactStore;
use crmsync_host::sync::{SyncOptions, now_ms, run_sync_lending};
use crmsync_tests::hubspot_server::{Contact, Fault, HubSpotServer};
use crmsync_tests::salesforce_server::SalesforceServer;
use crmsync_tests::*;
use std::time::{Duration, Instant};

fn slow_server(contacts: u64) -> HubSpotServer {
    let server = HubSpotServer::start(TOKEN);
    {
        let mut state = server.state();
        state.contacts = (1..=contacts)
            .map(|i| {
                Contact::new(
                    i,
                    &[
                        ("lastname", Some(&i.to_string())),
                        ("email", Some(&format!("p{i}@lease.example"))),
                        ("company", Some("Acme")),
                    ],
                )
            })
            .collect();
        state.page_size = Some(50);
        state.latency = Some(Duration::from_millis(60));
    }
    server
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Another process takes the lease of `sync` over, as after its expiry.
fn take_over(config: &Config, sync: &str) {
    let store = ContactStore::open(&config.store_path).unwrap();
    let far = now_ms() + 24 * 3600 * 1000;
    store
        .acquire_lease(sync, "thief:1", far, 60_000, |_| false)
        .unwrap()
        .expect("an expired lease is free");
}

#[test]
fn a_runner_that_lost_its_lease_stops_without_writing_to_its_store() {
    let dir = tempfile::tempdir().unwrap();
    let server = slow_server(1_000);
    let config = hubspot_config(
        dir.path(),
        "fenced",
        &server.base_url,
        token_env(),
        "rate_limit = \"none\"",
        "",
    );
    let running = {
        let config = config.clone();
        std::thread::spawn(move || sync(&config, &live_options()))
    };
    wait_for("two pages applied", || {
        ContactStore::open(&config.store_path)
            .and_then(|s| s.contacts())
            .is_ok_and(|c| c.len() >= 100)
    });
    take_over(&config, "fenced");
    let written = ContactStore::open(&config.store_path)
        .unwrap()
        .contacts()
        .unwrap()
        .len();
    let outcome = running.join().unwrap();
    let error = format!("{:#}", outcome.expect_err("the pass stops"));
    assert!(error.contains("lost the lease"), "{error}");
    assert_eq!(
        ContactStore::open(&config.store_path)
            .unwrap()
            .contacts()
            .unwrap()
            .len(),
        written,
        "a page was committed after the lease changed hands"
    );
    assert!(written < 1_000);
}

#[test]
fn a_runner_that_lost_its_lease_writes_nothing_more_into_the_crm() {
    let dir = tempfile::tempdir().unwrap();
    let hubspot = slow_server(1_000);
    let salesforce = SalesforceServer::start(TOKEN);
    let path = write_config(
        dir.path(),
        "fencedcrm",
        &crm_sync_toml(
            ("hubspot", &hubspot.base_url),
            ("salesforce", &salesforce.instance_url),
            "rate_limit = \"none\"",
            "",
        ),
    );
    let config = Config::load(&path).unwrap();
    let running = {
        let config = config.clone();
        std::thread::spawn(move || sync(&config, &live_options()))
    };
    wait_for("two pages written", || {
        salesforce.state().leads.len() >= 100
    });
    take_over(&config, "fencedcrm");
    let written = salesforce.state().leads.len();
    let outcome = running.join().unwrap();
    let error = format!("{:#}", outcome.expect_err("the pass stops"));
    assert!(error.contains("lost the lease"), "{error}");
    assert_eq!(
        salesforce.state().leads.len(),
        written,
        "records were written to the CRM after the lease changed hands"
    );
}

#[test]
fn the_heartbeat_keeps_the_lease_through_a_rate_limit_wait_longer_than_its_life() {
    let dir = tempfile::tempdir().unwrap();
    let server = slow_server(200);
    // Mid-run, a 429 asks for four seconds: twice the lease's life. The
    // life leaves the heartbeat (every 100 ms) nearly two seconds of slack:
    // with one second, a CI machine's stall once let it lapse.
    server.state().faults.push_back(Fault {
        path_prefix: "/crm/v3/objects/contacts".into(),
        ..Fault::rate_limited("", Some("4"))
    });
    let config = hubspot_config(
        dir.path(),
        "beating",
        &server.base_url,
        token_env(),
        "rate_limit = \"none\"",
        "",
    );
    let options = SyncOptions {
        lease: LeaseTiming {
            ttl: Duration::from_secs(2),
            heartbeat: Duration::from_millis(100),
        },
        ..live_options()
    };
    let running = {
        let config = config.clone();
        std::thread::spawn(move || sync(&config, &options))
    };
    // Another runner keeps asking for the lease while the first one waits.
    let store = ContactStore::open(&config.store_path).unwrap();
    wait_for("the run to take its lease", || {
        running.is_finished() || store.control("beating").unwrap().lease_owner.is_some()
    });
    let started = Instant::now();
    let mut asked = 0;
    while !running.is_finished() {
        if let Ok(Ok(stolen)) =
            store.acquire_lease("beating", "thief:1", now_ms(), 2_000, |_| false)
        {
            // Released, or the run would see itself fenced instead of failing here.
            store.release_lease(&stolen).unwrap();
            panic!("the lease was free {:?} into the run", started.elapsed());
        }
        asked += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    let report = running.join().unwrap().unwrap();
    assert_eq!(report.status, "completed", "{report:#?}");
    assert_eq!(report.counts.created, 200);
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "the wait happened"
    );
    assert!(asked > 40);
}

/// A daemon lends its held connection to each run (issue 18): the run reads
/// through it and hands it back, with no fence of the run's lease left on
/// it, and hands it back too when another process holds the lease.
#[test]
fn a_lent_connection_comes_back_from_the_run_unfenced() {
    let dir = tempfile::tempdir().unwrap();
    let server = slow_server(120);
    server.state().latency = None;
    let config = hubspot_config(
        dir.path(),
        "lending",
        &server.base_url,
        token_env(),
        "rate_limit = \"none\"",
        "",
    );
    let mut lent = Some(config.store.open().unwrap());
    let report = run_sync_lending(runtime(), &config, &live_options(), &mut lent).unwrap();
    assert_eq!(
        (report.status.as_str(), report.counts.created),
        ("completed", 120)
    );
    let connection = lent.take().expect("handed back");
    // Another holder comes and goes: a fence of the run's lease would now
    // refuse every commit through the lent connection.
    let other = ContactStore::open(&config.store_path).unwrap();
    let stolen = other
        .acquire_lease("lending", "thief:1", now_ms(), 60_000, |_| false)
        .unwrap()
        .unwrap();
    other.release_lease(&stolen).unwrap();
    connection.begin().unwrap();
    connection.request_trigger("lending").unwrap();
    connection.commit().unwrap();

    // Busy: the connection comes back all the same.
    let held = other
        .acquire_lease("lending", "thief:1", now_ms(), 60_000, |_| false)
        .unwrap()
        .unwrap();
    let mut lent = Some(connection);
    let busy = run_sync_lending(runtime(), &config, &live_options(), &mut lent);
    assert!(format!("{:#}", busy.unwrap_err()).contains("already running"));
    assert!(lent.is_some(), "handed back when the lease is another's");
    other.release_lease(&held).unwrap();
}
