//! Failures through the real component: rate limits (E4), transient faults
//! (E10), deleted fields (E6) and lists (E7), tokens (E8).

use crmsync_host::store::ContactStore;
use crmsync_tests::hubspot_server::{Contact, Fault, HubSpotServer};
use crmsync_tests::*;
use std::time::Instant;

fn server_with_contacts(n: u64) -> HubSpotServer {
    let server = HubSpotServer::start(TOKEN);
    server.state().contacts = (1..=n)
        .map(|i| {
            Contact::new(
                i,
                &[
                    ("firstname", Some("F")),
                    ("email", Some(&format!("c{i}@example.com"))),
                ],
            )
        })
        .collect();
    server.state().page_size = Some(10);
    server
}

const CONTACTS: &str = "/crm/v3/objects/contacts";

#[test]
fn e4_a_429_waits_for_retry_after_then_the_page_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_contacts(25);
    server
        .state()
        .faults
        .push_back(Fault::rate_limited(CONTACTS, Some("1")));
    let config = hubspot_config(dir.path(), "e4", &server.base_url, token_env(), "", "");

    let started = Instant::now();
    let report = sync(&config, &live_options()).unwrap();

    assert!(
        started.elapsed().as_millis() >= 1000,
        "waited for Retry-After"
    );
    assert_eq!(report.status, "completed");
    assert_eq!(report.counts.created, 25);
    assert!(
        report.errors_by_category.is_empty(),
        "a 429 is never a per-record failure"
    );
    assert_eq!(
        server.live_pages().len(),
        4,
        "3 pages + 1 rate-limited attempt"
    );
}

#[test]
fn e10_server_errors_and_truncated_bodies_are_retried() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_contacts(25);
    {
        let mut state = server.state();
        state.faults.push_back(Fault::server_error(CONTACTS, 503));
        state.faults.push_back(Fault::server_error(CONTACTS, 502));
        state.faults.push_back(Fault::truncated(CONTACTS));
    }
    let config = hubspot_config(dir.path(), "e10", &server.base_url, token_env(), "", "");

    let report = sync(&config, &live_options()).unwrap();

    assert_eq!(report.status, "completed");
    assert_eq!(report.counts.created, 25);
    assert_eq!(server.live_pages().len(), 6);
}

#[test]
fn e10_persistent_server_errors_stop_the_sync_after_bounded_retries() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_contacts(5);
    for _ in 0..20 {
        server
            .state()
            .faults
            .push_back(Fault::server_error(CONTACTS, 500));
    }
    let config = hubspot_config(dir.path(), "down", &server.base_url, token_env(), "", "");

    let report = sync(&config, &live_options()).unwrap();

    assert_eq!(report.status, "failed");
    let error = report.error.unwrap();
    assert_eq!(error.category, "transient");
    assert_eq!(server.live_pages().len(), 6, "max_attempts, then stop");
    let runs = ContactStore::open(&config.store_path)
        .unwrap()
        .runs("down")
        .unwrap();
    assert_eq!(runs[0].status, "failed");
}

#[test]
fn e7_a_deleted_list_stops_the_whole_sync() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_contacts(3);
    let config = hubspot_config(
        dir.path(),
        "e7",
        &server.base_url,
        token_env(),
        "list_id = \"404\"",
        "",
    );

    let report = sync(&config, &live_options()).unwrap();

    assert_eq!(report.status, "failed");
    let error = report.error.unwrap();
    assert_eq!(
        (error.category.as_str(), error.scope.as_str()),
        ("list-not-found", "sync")
    );
    assert!(error.resolution.contains("source.list_id"));
    assert_eq!(report.counts.seen, 0);
    assert_eq!(
        server.requests_to("/crm/v3/lists/404/memberships").len(),
        1,
        "not retried"
    );
}

#[test]
fn e6_a_deleted_property_stops_syncing_once_and_the_other_fields_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_contacts(12);
    // jobtitle was deleted; a server whose catalogue also lacks a HubSpot-
    // defined default (mobilephone) does not make the default an E6 error.
    server
        .state()
        .deleted_properties
        .extend(["jobtitle".into(), "mobilephone".into()]);
    let config = hubspot_config(
        dir.path(),
        "e6",
        &server.base_url,
        token_env(),
        "",
        "[mapping]\njobtitle = \"title\"\n",
    );

    let report = sync(&config, &live_options()).unwrap();

    assert_eq!(report.status, "completed");
    assert_eq!(report.counts.created, 12);
    assert_eq!(
        report.errors_by_category.get("field-not-found"),
        Some(&1),
        "{:?}",
        ContactStore::open(&config.store_path)
            .unwrap()
            .errors(report.run_id)
            .unwrap()
    );
    let errors = ContactStore::open(&config.store_path)
        .unwrap()
        .errors(report.run_id)
        .unwrap();
    assert_eq!(errors[0].field.as_deref(), Some("jobtitle"));
    assert_eq!(errors[0].scope, "field");
    let page = &server.live_pages()[0];
    assert!(
        !page.query["properties"].contains("jobtitle"),
        "the deleted property is no longer requested"
    );
}

#[test]
fn e8_an_invalid_token_stops_the_sync_with_auth_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_contacts(3);
    set_env("CRMSYNC_TEST_BAD_TOKEN", "revoked-token");
    let config = hubspot_config(
        dir.path(),
        "bad",
        &server.base_url,
        "CRMSYNC_TEST_BAD_TOKEN",
        "",
        "",
    );

    let report = sync(&config, &live_options()).unwrap();

    let error = report.error.unwrap();
    assert_eq!(error.category, "auth-invalid");
    assert!(error.resolution.contains("Reconnect HubSpot"));
    assert_eq!(server.live_pages().len(), 1, "not retried");
}

fn oauth_config(
    dir: &std::path::Path,
    server: &HubSpotServer,
    name: &str,
    refresh: &str,
) -> crmsync_host::config::Config {
    let prefix = format!("CRMSYNC_TEST_{}", name.to_uppercase());
    set_env(&format!("{prefix}_ID"), "client-id");
    set_env(&format!("{prefix}_SECRET"), "client-secret");
    set_env(&format!("{prefix}_REFRESH"), refresh);
    let path = write_config(
        dir,
        name,
        &format!(
            "[source]\nsystem = \"hubspot\"\nbase_url = \"{}\"\n[source.oauth]\nclient_id_env = \"{prefix}_ID\"\nclient_secret_env = \"{prefix}_SECRET\"\nrefresh_token_env = \"{prefix}_REFRESH\"\n",
            server.base_url
        ),
    );
    crmsync_host::config::Config::load(&path).unwrap()
}

#[test]
fn e8_oauth_tokens_are_refreshed_at_start_and_once_when_they_expire_mid_run() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_contacts(25);
    server.state().refresh_token = Some("refresh-1".into());
    let config = oauth_config(dir.path(), &server, "oauth", "refresh-1");

    // Each access token serves two requests, then expires: the run must
    // refresh mid-way and lose no page. The archived listing runs while the
    // pages are read, so which request meets the expiry varies: the third
    // request on the first token is rejected, and so is the next page's
    // request ahead when it left on that token before the refresh landed.
    // Every order makes one refresh.
    server.state().requests_per_token = Some(2);

    let first = sync(&config, &live_options()).unwrap();

    assert_eq!(first.status, "completed", "{first:?}");
    assert_eq!(first.counts.created, 25);
    let refreshes = server.requests_to("/oauth/v1/token");
    // One at start, one when a request met EXPIRED_AUTHENTICATION (both
    // readers share the token: a request sent on the expired token after
    // the other reader refreshed, even one sent ahead before the call that
    // reads it, does not refresh again).
    assert_eq!(refreshes.len(), 2);
    let listed = server.requests_to("/crm/v3/objects/contacts").len();
    assert!(
        (5..=6).contains(&listed),
        "3 pages + the archived listing + 1 or 2 rejected with EXPIRED_AUTHENTICATION: {listed}"
    );
    assert!(refreshes[0].body.contains("grant_type=refresh_token"));
    assert!(refreshes[0].body.contains("refresh_token=refresh-1"));
    // Token refreshes name the runner too, as every API request does.
    assert!(
        refreshes.iter().all(|r| r
            .user_agent
            .as_deref()
            .is_some_and(|a| a.contains(" runner/"))),
        "{refreshes:?}"
    );
    let sent_tokens: Vec<_> = server
        .requests_to("/crm/")
        .iter()
        .map(|s| s.authorization.clone().unwrap_or_default())
        .collect();
    assert!(
        sent_tokens.iter().all(|t| t.starts_with("Bearer access-")),
        "{sent_tokens:?}"
    );
}

#[test]
fn e8_a_failed_refresh_stops_with_auth_expired_and_asks_to_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_contacts(3);
    server.state().refresh_token = Some("the-real-one".into());
    let config = oauth_config(dir.path(), &server, "revoked", "a-revoked-one");

    let report = sync(&config, &live_options()).unwrap();

    let error = report.error.unwrap();
    assert_eq!(error.category, "auth-expired");
    assert!(
        error.message.contains("BAD_REFRESH_TOKEN"),
        "{}",
        error.message
    );
    assert!(error.resolution.contains("Reconnect HubSpot"));
    assert!(server.live_pages().is_empty());
}

#[test]
fn without_configured_credentials_requests_carry_none_and_a_401_is_auth_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_contacts(3);
    let path = write_config(
        dir.path(),
        "anon",
        &format!(
            "[source]\nsystem = \"hubspot\"\nbase_url = \"{}\"\n",
            server.base_url
        ),
    );
    let config = crmsync_host::config::Config::load(&path).unwrap();

    let report = sync(&config, &live_options()).unwrap();

    assert_eq!(report.error.unwrap().category, "auth-invalid");
    assert!(
        server
            .state()
            .seen
            .iter()
            .all(|s| s.authorization.is_none())
    );
}

#[test]
fn r5_requests_are_spaced_to_the_limit_instead_of_meeting_429s() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_contacts(500); // 50 pages of 10
    server.state().enforce_limit = Some((10, std::time::Duration::from_secs(1)));
    let config = hubspot_config(
        dir.path(),
        "r5",
        &server.base_url,
        token_env(),
        "rate_limit = \"10/1s\"",
        "",
    );

    let started = Instant::now();
    let report = sync(&config, &live_options()).unwrap();
    let elapsed = started.elapsed().as_secs_f64();

    assert_eq!(report.status, "completed");
    assert_eq!(report.counts.created, 500);
    // 51 requests (50 pages and the archived listing; the default properties
    // need no catalogue check) at 10 per second: the last may go at 5 s. No
    // 429, and within 10% of that minimum.
    assert_eq!(server.state().refused, 0, "429s met");
    assert_eq!(report.requests, 51);
    assert!((5.0..5.5).contains(&elapsed), "took {elapsed:.2} s");
}

#[test]
fn e4_without_a_limiter_the_same_server_answers_429s_and_the_sync_still_completes() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_contacts(300); // 30 pages of 10
    server.state().enforce_limit = Some((10, std::time::Duration::from_secs(1)));
    let config = hubspot_config(
        dir.path(),
        "nolimit",
        &server.base_url,
        token_env(),
        "rate_limit = \"none\"",
        "",
    );

    let report = sync(&config, &live_options()).unwrap();

    assert_eq!(report.status, "completed");
    assert_eq!(report.counts.created, 300);
    assert!(
        report.errors_by_category.is_empty(),
        "429s are never record errors"
    );
    assert!(server.state().refused > 0, "the server enforces its limit");
}

#[test]
fn e10_a_server_faulting_on_a_third_of_requests_still_syncs_every_record() {
    use crmsync_tests::hubspot_server::RandomFaults;
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_contacts(400); // 40 pages of 10
    server.state().random_faults = Some(RandomFaults {
        rate: 0.10,
        stall: std::time::Duration::from_millis(400),
        rng: fastrand::Rng::with_seed(7),
    });
    let config = hubspot_config(
        dir.path(),
        "faulty",
        &server.base_url,
        token_env(),
        "rate_limit = \"none\"",
        "",
    );
    let mut options = live_options();
    options.retry.max_attempts = 15;
    options.http_limits.first_byte_timeout = std::time::Duration::from_millis(200);

    let report = sync(&config, &options).unwrap();

    assert_eq!(report.status, "completed", "{:?}", report.error);
    assert_eq!(report.counts.created, 400);
    assert!(report.errors_by_category.is_empty());
    let served = server.state().faults_served.clone();
    for kind in [
        "server error",
        "truncated body",
        "malformed body",
        "stall past the timeout",
    ] {
        assert!(
            served.get(kind).copied().unwrap_or(0) >= 1,
            "no {kind} injected: {served:?}"
        );
    }
    let requests = server.requests_to("/crm/").len();
    let faults: usize = served.values().sum();
    eprintln!("{faults} faults in {requests} requests ({served:?}); 400 of 400 records synced");
    assert!(
        faults * 100 / requests >= 30,
        "{faults} faults in {requests} requests"
    );
}

#[test]
fn an_oversized_answer_is_refused_once_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_contacts(3);
    server.state().faults.push_back(Fault {
        path_prefix: CONTACTS.into(),
        status: 200,
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: format!(
            "{{\"results\":[],\"padding\":\"{}\"}}",
            "x".repeat(2 * 1024 * 1024)
        ),
    });
    let config = hubspot_config(
        dir.path(),
        "big",
        &server.base_url,
        token_env(),
        "max_response_mb = 1",
        "",
    );

    let report = sync(&config, &live_options()).unwrap();

    let error = report.error.unwrap();
    assert_eq!(error.category, "invalid-response");
    assert!(error.message.contains("size limit"), "{}", error.message);
    assert_eq!(server.live_pages().len(), 1);
}

#[test]
fn e8_a_token_close_to_expiry_is_refreshed_before_it_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_contacts(25);
    {
        let mut state = server.state();
        state.refresh_token = Some("refresh-2".into());
        // Inside the one-minute margin: every request needs a fresh token.
        state.expires_in = 30;
    }
    let config = oauth_config(dir.path(), &server, "shortlived", "refresh-2");

    let report = sync(&config, &live_options()).unwrap();

    assert_eq!(report.status, "completed");
    // Three pages and the archived listing, each after its own refresh; no
    // 401 met.
    assert_eq!(server.requests_to("/oauth/v1/token").len(), 4);
    assert_eq!(server.live_pages().len(), 3);
}
