//! The sandbox holds against a hostile component (`tests/misbehaving`): time
//! and memory limits stop it, the host goes on, and it reaches no
//! environment, no filesystem, no other host and no credential.

use crmsync_host::bindings::crmsync::sync::types::{
    Failure, FieldMapping, MappedContact, Source, SourceRecord,
};
use crmsync_host::runtime::{Instance, Runtime, Sandbox};
use crmsync_tests::hubspot_server::HubSpotServer;
use crmsync_tests::*;
use std::time::{Duration, Instant};

const SECRET: &str = "secret-token-the-guest-must-not-see";

fn sandbox() -> Sandbox {
    Sandbox {
        max_memory_bytes: 32 * 1024 * 1024,
        fetch_time_limit: Duration::from_millis(2_000),
        call_time_limit: Duration::from_millis(200),
    }
}

fn instance(runtime: &Runtime, server: &HubSpotServer) -> Instance {
    live_instance(runtime, &server.base_url, SECRET)
}

fn source(server: &HubSpotServer) -> Source {
    all_hubspot_contacts(&server.base_url)
}

#[test]
fn the_component_sees_no_environment_filesystem_other_host_or_credential() {
    let runtime = Runtime::load(misbehaving_component_path(), sandbox()).unwrap();
    let server = HubSpotServer::start(SECRET);
    crmsync_tests::set_env("CRMSYNC_SANDBOX_SECRET", SECRET);

    let report = instance(&runtime, &server)
        .fetch_page(&source(&server), None)
        .unwrap()
        .unwrap_err()
        .message;

    assert!(report.contains("env: []"), "{report}");
    assert!(
        report.contains("fs: ") && !report.contains("entries"),
        "{report}"
    );
    assert!(
        report.contains("allowed: status 404"),
        "the configured host is reachable: {report}"
    );
    assert!(
        report.contains("other host: denied: ErrorCode::HttpRequestDenied"),
        "{report}"
    );
    assert!(
        report.contains("own authorization: failed: HeaderError::Forbidden"),
        "{report}"
    );
    assert!(!report.contains(SECRET));
    let seen = server.state().seen.clone();
    assert_eq!(seen.len(), 1, "only the allowed request reached the server");
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some(&*format!("Bearer {SECRET}")),
        "the host added the token"
    );
}

#[test]
fn a_component_that_spins_forever_is_stopped_and_the_host_goes_on() {
    let runtime = Runtime::load(misbehaving_component_path(), sandbox()).unwrap();
    let server = HubSpotServer::start(TOKEN);
    let mut spinning = instance(&runtime, &server);

    let started = Instant::now();
    let error = spinning.list_properties(&source(&server)).unwrap_err();

    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stopped after {:?}",
        started.elapsed()
    );
    assert_eq!(
        format!("{error:#}"),
        "the sync component failed in list-properties: it ran past its time limit and was stopped"
    );
    // Writing to a CRM is bounded the same way.
    let error = instance(&runtime, &server)
        .write_records(
            &crmsync_host::bindings::crmsync::sync::types::Destination::HubspotContacts(
                server.base_url.clone(),
            ),
            &[],
        )
        .unwrap_err();
    assert_eq!(
        format!("{error:#}"),
        "the sync component failed in write-records: it ran past its time limit and was stopped"
    );
    let fresh = instance(&runtime, &server)
        .classify_error(&Failure::Transport("x".into()))
        .unwrap();
    assert_eq!(fresh.message, "classified");
}

#[test]
fn a_component_that_allocates_without_bound_hits_its_memory_cap() {
    let runtime = Runtime::load(misbehaving_component_path(), sandbox()).unwrap();
    let server = HubSpotServer::start(TOKEN);
    let record = SourceRecord {
        id: "1".into(),
        properties: vec![],
        modified_at: None,
        merged_ids: Vec::new(),
        company_ids: Vec::new(),
    };

    let error = instance(&runtime, &server)
        .map_fields(&record, &Vec::<FieldMapping>::new())
        .unwrap_err();

    assert_eq!(
        format!("{error:#}"),
        "the sync component failed in map-fields: it exceeded its memory limit of 32 MiB and was stopped"
    );
    let fresh = instance(&runtime, &server)
        .classify_error(&Failure::Transport("x".into()))
        .unwrap();
    assert_eq!(fresh.message, "classified");
}

#[test]
fn a_panicking_component_is_a_clear_error() {
    let runtime = Runtime::load(misbehaving_component_path(), sandbox()).unwrap();
    let server = HubSpotServer::start(TOKEN);
    let contact = MappedContact {
        external_id: "1".into(),
        name: None,
        emails: vec![],
        phones: vec![],
        domains: vec![],
        fields: vec![],
    };

    let error = instance(&runtime, &server)
        .match_contact(&contact)
        .unwrap_err();

    let error = format!("{error:#}");
    assert!(
        error.starts_with("the sync component failed in match-contact: it trapped"),
        "{error}"
    );
}
