//! Incremental runs (R4) and source merges (X6) through the real component,
//! against the loopback server's documented search API: only changes are
//! fetched, the 10,000-result cap and timestamp ties lose and repeat
//! nothing, the lookback catches late-indexed changes, the search budget
//! holds, and merged contacts leave one destination contact.

use crmsync_host::config::Config;
use crmsync_host::store::ContactStore;
use crmsync_host::sync::SyncOptions;
use crmsync_tests::hubspot_server::{Contact, HubSpotServer, OLD_MODIFICATION_MS, Seen, now_ms};
use crmsync_tests::*;
use serde_json::Value;
use std::time::Duration;

const HOUR_MS: u64 = 3_600_000;

fn person(id: u64, first: &str) -> Contact {
    Contact::new(
        id,
        &[
            ("firstname", Some(first)),
            ("lastname", Some("Test")),
            ("email", Some(&format!("p{id}@example.com"))),
        ],
    )
}

/// `count` contacts, each modified an hour after the previous one (long ago).
fn server_with_history(count: u64) -> HubSpotServer {
    let server = HubSpotServer::start(TOKEN);
    server.state().contacts = (1..=count)
        .map(|i| person(i, &format!("P{i}")).modified_at(OLD_MODIFICATION_MS + i * HOUR_MS))
        .collect();
    server
}

/// A sync of `server` with no rate limits (these tests count requests, not time).
fn config(dir: &std::path::Path, name: &str, server: &HubSpotServer, extra: &str) -> Config {
    hubspot_config(
        dir,
        name,
        &server.base_url,
        token_env(),
        &format!("rate_limit = \"none\"\nsearch_rate_limit = \"none\"\n{extra}"),
        "",
    )
}

fn searches(server: &HubSpotServer) -> Vec<Seen> {
    server.requests_to("/crm/v3/objects/contacts/search")
}

fn body(seen: &Seen) -> Value {
    serde_json::from_str(&seen.body).unwrap()
}

#[test]
fn an_incremental_run_fetches_only_the_changed_records() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_history(1_000);
    let config = config(dir.path(), "changes", &server, "");
    let first = sync(&config, &live_options()).unwrap();
    assert_eq!((first.mode.as_str(), first.counts.created), ("full", 1_000));
    let listing_pages = server.live_pages().len();
    assert_eq!(listing_pages, 10);

    for id in [7, 500, 999] {
        server.state().put(person(id, "Edited"));
    }
    let before = now_ms();
    let second = sync(&config, &live_options()).unwrap();

    assert_eq!(second.mode, "incremental");
    assert_eq!(second.counts.updated, 3);
    // The newest old record (1,000) is inside the lookback and read again, unchanged.
    assert_eq!((second.counts.seen, second.counts.skipped), (4, 1));
    assert_eq!(server.live_pages().len(), listing_pages, "no full listing");
    let searches = searches(&server);
    assert_eq!(searches.len(), 1, "one search page for three changes");
    let query = body(&searches[0]);
    let filters = &query["filterGroups"][0]["filters"];
    let bound = |i: usize| {
        filters[i]["value"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    assert_eq!(filters[0]["operator"], "GTE");
    // Since: the first run's newest change (record 1,000), less the 5-minute lookback.
    assert_eq!(bound(0), OLD_MODIFICATION_MS + 1_000 * HOUR_MS - 300_000);
    assert_eq!(filters[1]["operator"], "LTE");
    assert!(
        (before..=now_ms()).contains(&bound(1)),
        "until: the run's start"
    );
    assert_eq!(
        query["sorts"],
        serde_json::json!([{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}])
    );
    assert_eq!(query["limit"], 200);
    let stored = contacts_by_external_id(&config);
    assert_eq!(stored["500"].name.as_deref(), Some("Edited Test"));

    // `sync --full` reads everything again.
    let (_, out) = crmsync(&[
        "sync",
        "--config",
        dir.path().join("changes.toml").to_str().unwrap(),
        "--full",
        "--json",
        "--component",
        component_path().to_str().unwrap(),
    ])
    .unwrap();
    let full: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (full["mode"].as_str(), full["seen"].as_u64()),
        (Some("full"), Some(1_000))
    );
    assert_eq!(server.live_pages().len(), 2 * listing_pages);
}

#[test]
fn more_than_10000_changes_in_one_window_are_all_read_once() {
    let dir = tempfile::tempdir().unwrap();
    let count = 10_050;
    let server = server_with_history(count);
    let config = config(dir.path(), "bulk", &server, "");
    sync(&config, &live_options()).unwrap();

    // A bulk update: every contact changed within a few seconds, seven per millisecond.
    let start = now_ms() - 60_000;
    for contact in server.state().contacts.iter_mut() {
        contact
            .properties
            .insert("firstname".into(), Some("Bulk".into()));
        contact.modified = start + contact.id / 7;
    }
    let report = sync(&config, &live_options()).unwrap();

    assert_eq!(report.status, "completed", "{:?}", report.error);
    assert_eq!((report.counts.updated, report.counts.seen), (count, count));
    let searches = searches(&server);
    // 200 per page, by key: 51 pages, and never an offset the API would refuse.
    // Each query starts at the last time read, so a page repeats the few
    // records sharing it: about 52 pages for 10,050 records.
    assert!((51..=55).contains(&searches.len()), "{}", searches.len());
    assert!(searches.iter().all(|s| body(s).get("after").is_none()));
    let stored = ContactStore::open(&config.store_path)
        .unwrap()
        .contacts()
        .unwrap();
    assert_eq!(stored.len(), count as usize);
    assert!(
        stored
            .iter()
            .all(|c| c.name.as_deref() == Some("Bulk Test"))
    );
}

#[test]
fn records_sharing_a_timestamp_across_page_boundaries_are_applied_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_history(600);
    let config = config(dir.path(), "ties", &server, "");
    sync(&config, &live_options()).unwrap();

    // 450 contacts changed in the same millisecond (an import), across three pages.
    let at = now_ms() - 10_000;
    for contact in server.state().contacts.iter_mut().filter(|c| c.id % 4 != 0) {
        contact
            .properties
            .insert("firstname".into(), Some("Tied".into()));
        contact.modified = at;
    }
    let report = sync(&config, &live_options()).unwrap();

    assert_eq!(report.counts.updated, 450);
    // Only record 600 (the old newest, inside the lookback) besides the 450.
    assert_eq!((report.counts.seen, report.counts.skipped), (451, 1));
    let searches = searches(&server);
    assert!(
        searches
            .iter()
            .any(|s| body(s)["sorts"][0]["propertyName"] == "hs_object_id"),
        "the tie was drained in id order"
    );
    let stored = contacts_by_external_id(&config);
    let tied = stored
        .values()
        .filter(|c| c.name.as_deref() == Some("Tied Test"));
    assert_eq!(tied.count(), 450);
}

#[test]
fn the_lookback_window_catches_changes_the_search_index_showed_late() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_history(20);
    let with_lookback = config(dir.path(), "lookback", &server, "");
    // Each sync has its own store (named after it).
    let without = config(dir.path(), "nolookback", &server, "lookback = \"0s\"");
    sync(&with_lookback, &live_options()).unwrap();
    sync(&without, &live_options()).unwrap();

    // A is changed first but reaches the search index late; B is indexed at once.
    let now = now_ms();
    {
        let mut state = server.state();
        let a = state.contacts.iter_mut().find(|c| c.id == 3).unwrap();
        a.properties.insert("firstname".into(), Some("Late".into()));
        a.modified = now - 60_000;
        a.indexed = false;
        let b = state.contacts.iter_mut().find(|c| c.id == 4).unwrap();
        b.properties
            .insert("firstname".into(), Some("Prompt".into()));
        b.modified = now - 30_000;
    }
    for config in [&with_lookback, &without] {
        assert_eq!(sync(config, &live_options()).unwrap().counts.updated, 1);
    }
    server.state().contacts[2].indexed = true;
    let caught = sync(&with_lookback, &live_options()).unwrap();
    let missed = sync(&without, &live_options()).unwrap();

    assert_eq!(
        caught.counts.updated, 1,
        "A is inside the 5-minute lookback"
    );
    assert_eq!(
        contacts_by_external_id(&with_lookback)["3"].name.as_deref(),
        Some("Late Test")
    );
    // Without a lookback the late change is behind the bookmark: lost until a full run.
    assert_eq!(missed.counts.updated, 0);
    assert_eq!(
        contacts_by_external_id(&without)["3"].name.as_deref(),
        Some("P3 Test")
    );
}

#[test]
fn the_bookmark_is_never_after_the_run_start() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_history(3);
    // The source's clock runs an hour ahead of ours.
    server.state().contacts[2].modified = now_ms() + HOUR_MS;
    let config = config(dir.path(), "skew", &server, "");
    let before = now_ms() as i64;
    sync(&config, &live_options()).unwrap();
    let bookmark = ContactStore::open(&config.store_path)
        .unwrap()
        .bookmark("skew")
        .unwrap()
        .unwrap();
    assert!(
        (before..=now_ms() as i64).contains(&bookmark.modified_ms),
        "min(run start, newest change)"
    );

    // Without skew the bookmark is the newest change read.
    server.state().contacts[2].modified = OLD_MODIFICATION_MS + 3 * HOUR_MS;
    sync(&config, &live_options()).unwrap();
    let bookmark = ContactStore::open(&config.store_path)
        .unwrap()
        .bookmark("skew")
        .unwrap()
        .unwrap();
    assert!(bookmark.modified_ms <= now_ms() as i64);
}

#[test]
fn an_interrupted_incremental_run_resumes_its_window_or_yields_to_a_full_run() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_history(300);
    server.state().page_size = Some(10);
    let config = config(dir.path(), "resume", &server, "");
    sync(&config, &live_options()).unwrap();
    // Pages slower to fetch than to apply, as a real API's are: the applier
    // commits each time it catches up with the reader, so the stop below
    // (asked at the first commit) comes after the few pages read by then,
    // not after a group of pages that a loopback server's speed piled up.
    server.state().latency = Some(Duration::from_millis(20));
    let changed_at = now_ms() - 60_000;
    for contact in server.state().contacts.iter_mut().filter(|c| c.id <= 120) {
        contact
            .properties
            .insert("firstname".into(), Some("New".into()));
        contact.modified = changed_at + contact.id;
    }
    let stop_after_first_page = || {
        let mut options = live_options();
        let stop = options.stop.clone();
        options.progress = Some(std::sync::Arc::new(move |_: &_| {
            stop.store(true, std::sync::atomic::Ordering::Relaxed)
        }));
        options
    };

    let interrupted = sync(&config, &stop_after_first_page()).unwrap();
    assert_eq!(
        (interrupted.status.as_str(), interrupted.mode.as_str()),
        ("interrupted", "incremental")
    );
    // Stopped after the first commit's pages (those read before the applier
    // was ready: at most the page in hand and the one waiting) and the ones
    // already read ahead of it (two more at most), of the window's 12.
    assert!(
        (1..=5).contains(&interrupted.counts.pages),
        "{}",
        interrupted.counts.pages
    );
    // Time passes and more changes arrive; the resumed run keeps its window.
    server.state().put(person(250, "After"));
    let resumed = sync(&config, &live_options()).unwrap();
    assert!(resumed.resumed);
    assert_eq!(
        (resumed.status.as_str(), resumed.mode.as_str()),
        ("completed", "incremental")
    );
    assert_eq!(
        resumed.counts.updated, 120,
        "each change applied once across the two passes"
    );
    let next = sync(&config, &live_options()).unwrap();
    assert_eq!(
        next.counts.updated, 1,
        "the later change, in the next window"
    );

    // An interrupted incremental run gives way to `--full`.
    server.state().put(person(5, "Again"));
    assert_eq!(
        sync(&config, &stop_after_first_page()).unwrap().status,
        "interrupted"
    );
    let full = sync(
        &config,
        &SyncOptions {
            full: true,
            ..live_options()
        },
    )
    .unwrap();
    assert!(!full.resumed);
    assert_eq!((full.mode.as_str(), full.counts.seen), ("full", 300));
    let runs = ContactStore::open(&config.store_path)
        .unwrap()
        .runs("resume")
        .unwrap();
    assert!(runs[1].error.as_deref().unwrap().contains("superseded"));
}

#[test]
fn a_changed_mapping_or_scope_makes_the_next_run_full() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_history(5);
    let config = config(dir.path(), "remap", &server, "");
    sync(&config, &live_options()).unwrap();
    assert_eq!(sync(&config, &live_options()).unwrap().mode, "incremental");

    let remapped = hubspot_config(
        dir.path(),
        "remap",
        &server.base_url,
        token_env(),
        "rate_limit = \"none\"\nsearch_rate_limit = \"none\"",
        "[mapping]\njobtitle = \"title\"\n",
    );
    let report = sync(&remapped, &live_options()).unwrap();
    assert_eq!(
        report.mode, "full",
        "unchanged records must get the new field"
    );
    assert_eq!(
        sync(&remapped, &live_options()).unwrap().mode,
        "incremental"
    );
}

#[test]
fn search_requests_stay_within_five_per_second() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_history(700);
    server.state().page_size = Some(50);
    let config = hubspot_config(
        dir.path(),
        "budget",
        &server.base_url,
        token_env(),
        "rate_limit = \"none\"",
        "",
    );
    sync(&config, &live_options()).unwrap();
    let changed_at = now_ms() - 120_000;
    for contact in server.state().contacts.iter_mut() {
        contact.modified = changed_at + contact.id;
    }
    let report = sync(&config, &live_options()).unwrap();

    assert_eq!(report.counts.seen, 700);
    let arrivals: Vec<_> = searches(&server).iter().map(|s| s.at).collect();
    assert!((14..=16).contains(&arrivals.len()), "{}", arrivals.len());
    for (i, first) in arrivals.iter().enumerate() {
        let within = arrivals[i..]
            .iter()
            .take_while(|t| t.duration_since(*first) < Duration::from_secs(1))
            .count();
        assert!(within <= 5, "{within} search requests within one second");
    }
}

#[test]
fn a_merge_at_the_source_leaves_one_contact_linked_to_the_survivor() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_history(4);
    let config = config(dir.path(), "merge", &server, "");
    sync(&config, &live_options()).unwrap();
    assert_eq!(contacts_by_external_id(&config).len(), 4);

    // 2 is merged into 1 (the survivor keeps its id and takes 2's email as an
    // additional one); 3 and 4 are merged into a new record 9.
    {
        let mut state = server.state();
        state.contacts.retain(|c| c.id == 1);
        let mut survivor = person(1, "P1");
        survivor
            .properties
            .insert("hs_merged_object_ids".into(), Some("2".into()));
        survivor
            .properties
            .insert("hs_additional_emails".into(), Some("p2@example.com".into()));
        state.put(survivor);
        let mut new = Contact::new(
            9,
            &[
                ("firstname", Some("Merged")),
                ("email", Some("p3@example.com")),
                ("hs_additional_emails", Some("p4@example.com")),
                ("hs_merged_object_ids", Some("3;4")),
            ],
        );
        new.modified = now_ms();
        state.contacts.push(new);
    }
    let report = sync(&config, &live_options()).unwrap();

    assert_eq!(report.merged, 3);
    assert_eq!(
        report.counts.failed, 0,
        "no handle conflict with the merged contacts"
    );
    let stored = contacts_by_external_id(&config);
    let mut ids: Vec<&str> = stored.keys().map(String::as_str).collect();
    ids.sort();
    assert_eq!(ids, ["1", "9"], "no duplicate remains");
    assert_eq!(stored["1"].emails, ["p1@example.com", "p2@example.com"]);
    assert_eq!(stored["9"].emails, ["p3@example.com", "p4@example.com"]);
    assert_eq!(stored["9"].name.as_deref(), Some("Merged"));
    // Nothing more to merge on the next run.
    assert_eq!(sync(&config, &live_options()).unwrap().merged, 0);
}
