//! The next page is requested as soon as its cursor is read (issue 18,
//! item 5): the component sends it ahead, the host runs it in the
//! background, and the next `fetch-page` for that cursor takes its answer.
//! A request for anything else is sent fresh; no page is asked for twice.

use crmsync_host::bindings::crmsync::sync::types::{Page, Source};
use crmsync_host::runtime::Instance;
use crmsync_tests::hubspot_server::{Contact, HubSpotServer};
use crmsync_tests::*;
use std::time::{Duration, Instant};

fn server(contacts: u64) -> HubSpotServer {
    let server = HubSpotServer::start(TOKEN);
    {
        let mut state = server.state();
        state.contacts = (1..=contacts)
            .map(|i| Contact::new(i, &[("email", Some(&format!("p{i}@ahead.example")))]))
            .collect();
        state.page_size = Some(100);
    }
    server
}

fn instance(server: &HubSpotServer) -> Instance {
    live_instance(runtime(), &server.base_url, TOKEN)
}

fn source(server: &HubSpotServer) -> Source {
    all_hubspot_contacts(&server.base_url)
}

fn fetch(instance: &mut Instance, source: &Source, cursor: Option<&str>) -> Page {
    instance.fetch_page(source, cursor).unwrap().unwrap()
}

fn ids(page: &Page) -> Vec<&str> {
    page.records.iter().map(|r| r.id.as_str()).collect()
}

/// Listing requests the server received for the page after `cursor`.
fn requests_after(server: &HubSpotServer, cursor: &str) -> usize {
    server
        .live_pages()
        .iter()
        .filter(|s| s.query.get("after").map(String::as_str) == Some(cursor))
        .count()
}

#[test]
fn the_next_page_is_requested_before_the_host_asks_for_it_and_only_once() {
    let server = server(250);
    let mut instance = instance(&server);
    let source = source(&server);
    let first = fetch(&mut instance, &source, None);
    let cursor = first.next_cursor.clone().expect("a second page");
    // No call into the component is running: the request is the host's,
    // in the background. Ten seconds is far more than loopback needs.
    let deadline = Instant::now() + Duration::from_secs(10);
    while requests_after(&server, &cursor) == 0 {
        assert!(
            Instant::now() < deadline,
            "the page after {cursor} was not requested ahead"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let second = fetch(&mut instance, &source, Some(&cursor));
    assert_eq!(ids(&second).first(), Some(&"101"));
    assert_eq!(
        requests_after(&server, &cursor),
        1,
        "the page was read twice"
    );
    let last = fetch(&mut instance, &source, second.next_cursor.as_deref());
    assert_eq!(last.records.len(), 50);
    assert_eq!(last.next_cursor, None);
    assert_eq!(server.live_pages().len(), 3);
}

#[test]
fn a_request_for_another_page_is_sent_fresh_not_answered_ahead() {
    let server = server(250);
    let mut instance = instance(&server);
    let source = source(&server);
    let first = fetch(&mut instance, &source, None);
    // The host asks for the first page again (a retry, a new run on a kept
    // instance): the second page, sent ahead, is not its answer.
    let again = fetch(&mut instance, &source, None);
    assert_eq!(ids(&again), ids(&first));
    // Only the newest request ahead is kept; the page it was for still
    // reads right.
    let second = fetch(&mut instance, &source, first.next_cursor.as_deref());
    assert_eq!(ids(&second).first(), Some(&"101"));
}

#[test]
fn a_sync_reads_each_page_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(250);
    let config = hubspot_config(dir.path(), "ahead", &server.base_url, token_env(), "", "");
    let report = sync(&config, &live_options()).unwrap();
    assert_eq!(report.status, "completed", "{report:#?}");
    assert_eq!(report.counts.created, 250);
    let cursors: Vec<Option<String>> = server
        .live_pages()
        .iter()
        .map(|s| s.query.get("after").cloned())
        .collect();
    assert_eq!(cursors.len(), 3, "{cursors:?}");
}

/// A request sent ahead leaves on the token of its time. When it meets an
/// expired session after the other reader refreshed, the host knows which
/// token it carried, so the retry loop sends it again instead of
/// refreshing a second time (E8).
#[test]
fn a_401_to_a_request_sent_ahead_names_the_token_it_left_with() {
    use crmsync_host::http::{Hooks, HttpLimits, HttpMode, HttpStats, Token};
    use crmsync_host::runtime::HostState;
    use std::sync::{Arc, Mutex};
    let server = server(250);
    {
        let mut state = server.state();
        state.valid_tokens = vec!["access-1".into(), "access-2".into()];
        // The first page is the token's one request; the second page's
        // request, sent ahead, meets EXPIRED_AUTHENTICATION.
        state.requests_per_token = Some(1);
    }
    let bearer = Arc::new(Mutex::new(Token {
        value: Some("access-1".into()),
        generation: 1,
    }));
    let hooks = Hooks::new(
        crmsync_host::config::Origin::parse(&server.base_url).unwrap(),
        HttpMode::Live,
        bearer.clone(),
        HttpLimits::default(),
        Arc::new(HttpStats::default()),
    );
    let store = crmsync_host::store::ContactStore::open_in_memory().unwrap();
    let mut instance = runtime()
        .instantiate(HostState::new(hooks, Box::new(store), runtime().sandbox()))
        .unwrap();
    let source = source(&server);
    let first = fetch(&mut instance, &source, None);
    let cursor = first.next_cursor.clone().expect("a second page");
    // The other reader refreshes while the request ahead is on its way.
    *bearer.lock().unwrap() = Token {
        value: Some("access-2".into()),
        generation: 2,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while requests_after(&server, &cursor) == 0 {
        assert!(Instant::now() < deadline, "the request ahead never left");
        std::thread::sleep(Duration::from_millis(5));
    }
    let expired = instance.fetch_page(&source, Some(&cursor)).unwrap();
    assert_eq!(
        expired.unwrap_err().category,
        crmsync_host::bindings::crmsync::sync::types::ErrorCategory::AuthExpired
    );
    assert_eq!(instance.state().take_rejected_generation(), Some(1));
    assert_eq!(instance.state().take_rejected_generation(), None);
    // Sent again, on the current token, the page reads.
    let second = fetch(&mut instance, &source, Some(&cursor));
    assert_eq!(ids(&second).first(), Some(&"101"));
}
