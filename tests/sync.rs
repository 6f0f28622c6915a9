//! One-way HubSpot contact sync through the real component: paging, list
//! source, matching rules X1-X7, record errors E1-E3, hostile strings.

use crmsync_host::store::ContactStore;
use crmsync_tests::hubspot_server::{Contact, HubSpotServer};
use crmsync_tests::*;

fn server_with(contacts: Vec<Contact>) -> HubSpotServer {
    let server = HubSpotServer::start(TOKEN);
    server.state().contacts = contacts;
    server
}

fn person(id: u64, first: &str, email: Option<&str>, phone: Option<&str>) -> Contact {
    Contact::new(
        id,
        &[
            ("firstname", Some(first)),
            ("lastname", Some("Test")),
            ("email", email),
            ("phone", phone),
        ],
    )
}

#[test]
fn a_full_sync_reads_every_page_and_creates_linked_contacts() {
    let dir = tempfile::tempdir().unwrap();
    let contacts = (1..=250)
        .map(|i| {
            person(
                i,
                &format!("P{i}"),
                Some(&format!("p{i}@example.com")),
                None,
            )
        })
        .collect();
    let server = server_with(contacts);
    let config = hubspot_config(dir.path(), "all", &server.base_url, token_env(), "", "");

    let report = sync(&config, &live_options()).unwrap();

    assert_eq!(report.status, "completed");
    assert_eq!(
        (
            report.counts.pages,
            report.counts.seen,
            report.counts.created
        ),
        (3, 250, 250)
    );
    let pages = server.live_pages();
    assert_eq!(pages.len(), 3);
    assert_eq!(pages[0].query.get("limit").map(String::as_str), Some("100"));
    assert_eq!(pages[0].query.get("after"), None);
    assert_eq!(
        pages[1].query.get("after").map(String::as_str),
        Some("cur-100")
    );
    assert_eq!(
        pages[0].query.get("properties").map(String::as_str),
        Some(
            "firstname,lastname,email,hs_additional_emails,phone,mobilephone,hs_merged_object_ids"
        )
    );
    // The host, not the component, added the credentials.
    assert!(
        server
            .state()
            .seen
            .iter()
            .all(|s| s.authorization.as_deref() == Some("Bearer pat-na1-test-token"))
    );
    let stored = contacts_by_external_id(&config);
    assert_eq!(stored.len(), 250);
    assert_eq!(stored["42"].name.as_deref(), Some("P42 Test"));
    assert_eq!(stored["42"].emails, ["p42@example.com"]);
}

#[test]
fn x7_a_second_pass_with_no_source_change_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with(vec![
        person(1, "Ada", Some("ada@example.com"), Some("+44 20 7946 0018")),
        person(2, "Bob", Some("bob@example.com"), None),
        person(3, "Dup", Some(" ADA@example.com"), None),
    ]);
    let config = hubspot_config(dir.path(), "idem", &server.base_url, token_env(), "", "");
    let first = sync(&config, &live_options()).unwrap();
    let before = ContactStore::open(&config.store_path)
        .unwrap()
        .contacts()
        .unwrap();

    let second = sync(&config, &live_options()).unwrap();

    assert_eq!((first.counts.created, first.counts.failed), (2, 1));
    assert_eq!(
        (
            second.counts.created,
            second.counts.updated,
            second.counts.skipped,
            second.counts.failed
        ),
        (0, 0, 2, 1)
    );
    assert_eq!(
        ContactStore::open(&config.store_path)
            .unwrap()
            .contacts()
            .unwrap(),
        before
    );
}

#[test]
fn a_list_source_reads_memberships_then_batch_reads_their_properties() {
    let dir = tempfile::tempdir().unwrap();
    let contacts: Vec<Contact> = (1..=300)
        .map(|i| person(i, "L", Some(&format!("l{i}@example.com")), None))
        .collect();
    let server = server_with(contacts);
    // 260 members, one of which (9999) no longer exists.
    server
        .state()
        .lists
        .insert("77".into(), (1..=259).chain([9999]).collect());
    let config = hubspot_config(
        dir.path(),
        "list",
        &server.base_url,
        token_env(),
        "list_id = \"77\"",
        "",
    );

    let report = sync(&config, &live_options()).unwrap();

    assert_eq!(report.status, "completed", "{report:?}");
    assert_eq!(report.counts.created, 259);
    let memberships = server.requests_to("/crm/v3/lists/77/memberships");
    assert_eq!(memberships.len(), 2);
    assert_eq!(
        memberships[0].query.get("limit").map(String::as_str),
        Some("250")
    );
    let batches = server.requests_to("/crm/v3/objects/contacts/batch/read");
    assert_eq!(batches.len(), 4, "250 members in batches of 100, then 10");
    assert!(
        server
            .state()
            .seen
            .iter()
            .all(|s| s.path != "/crm/v3/objects/contacts"
                || s.query.get("archived").map(String::as_str) == Some("true")),
        "no listing of all contacts"
    );
    let stored = contacts_by_external_id(&config);
    assert!(
        stored.contains_key("259") && !stored.contains_key("260") && !stored.contains_key("9999")
    );
}

#[test]
fn x2_an_email_change_at_the_source_updates_the_linked_contact() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with(vec![person(5, "Eve", Some("eve@old.example"), None)]);
    let config = hubspot_config(dir.path(), "x2", &server.base_url, token_env(), "", "");
    sync(&config, &live_options()).unwrap();
    let id_before = contacts_by_external_id(&config)["5"].id;

    server
        .state()
        .put(person(5, "Eve", Some("Eve@New.example "), None));
    let report = sync(&config, &live_options()).unwrap();

    assert_eq!((report.counts.created, report.counts.updated), (0, 1));
    let stored = contacts_by_external_id(&config);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored["5"].id, id_before);
    assert_eq!(stored["5"].emails, ["eve@new.example"]);
}

#[test]
fn x3_contacts_that_existed_before_the_sync_are_linked_by_email_or_phone() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with(vec![
        person(10, "Mail", Some("Shared@Example.com"), None),
        person(11, "Phone", None, Some("+1 (555) 010-0001")),
        person(12, "New", Some("new@example.com"), None),
    ]);
    let config = hubspot_config(dir.path(), "x3", &server.base_url, token_env(), "", "");
    let existing = dir.path().join("existing.json");
    std::fs::write(
        &existing,
        r#"[{"name": "Front Mail", "emails": [" shared@example.com"], "fields": {"tier": "gold"}},
            {"name": "Front Phone", "phones": ["+1.555.010.0001"]}]"#,
    )
    .unwrap();
    let config_path = dir.path().join("x3.toml");
    let (_, out) = crmsync(&[
        "import",
        "--config",
        config_path.to_str().unwrap(),
        "--component",
        component_path().to_str().unwrap(),
        existing.to_str().unwrap(),
    ])
    .unwrap();
    assert!(out.contains("imported 2 contacts"), "{out}");

    let report = sync(&config, &live_options()).unwrap();

    assert_eq!((report.counts.created, report.counts.updated), (1, 2));
    let all = ContactStore::open(&config.store_path)
        .unwrap()
        .contacts()
        .unwrap();
    assert_eq!(all.len(), 3, "no duplicate of the pre-existing contacts");
    let mail = all
        .iter()
        .find(|c| c.external_id.as_deref() == Some("10"))
        .unwrap();
    assert_eq!(mail.fields["tier"], "gold");
    assert_eq!(mail.name.as_deref(), Some("Mail Test"));
    let phone = all
        .iter()
        .find(|c| c.external_id.as_deref() == Some("11"))
        .unwrap();
    assert_eq!(phone.phones, ["+15550100001"]);
    // X7 holds for linked pre-existing contacts too.
    let again = sync(&config, &live_options()).unwrap();
    assert_eq!(
        (
            again.counts.created,
            again.counts.updated,
            again.counts.skipped
        ),
        (0, 0, 3)
    );
}

#[test]
fn x4_handles_taken_by_another_linked_contact_are_e2_and_e3() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with(vec![
        person(
            20,
            "First",
            Some("same@example.com"),
            Some("+1 212 555 0100"),
        ),
        person(21, "CaseDup", Some("  SAME@Example.COM "), None),
        person(
            22,
            "PhoneDup",
            Some("other@example.com"),
            Some("+1 (212) 555-0100"),
        ),
    ]);
    let config = hubspot_config(dir.path(), "x4", &server.base_url, token_env(), "", "");

    let report = sync(&config, &live_options()).unwrap();

    assert_eq!((report.counts.created, report.counts.failed), (1, 2));
    assert_eq!(report.errors_by_category.get("email-taken"), Some(&1));
    assert_eq!(report.errors_by_category.get("phone-taken"), Some(&1));
    let errors = ContactStore::open(&config.store_path)
        .unwrap()
        .errors(report.run_id)
        .unwrap();
    let e2 = errors.iter().find(|e| e.category == "email-taken").unwrap();
    assert_eq!(e2.record_id.as_deref(), Some("21"));
    assert!(
        e2.message.contains("same@example.com") && e2.message.contains("20"),
        "{}",
        e2.message
    );
    assert!(e2.resolution.contains("unique email"));
    let e3 = errors.iter().find(|e| e.category == "phone-taken").unwrap();
    assert_eq!(e3.record_id.as_deref(), Some("22"));
    assert_eq!(contacts_by_external_id(&config).len(), 1);
}

/// A page naming one record twice (a list read while the record changed):
/// the page is matched in one call, and the second copy updates the
/// contact the first created (`page:<i>`) instead of making another.
#[test]
fn a_record_twice_in_one_page_is_one_contact_holding_its_later_values() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with(vec![
        person(30, "Early", Some("ann@example.com"), None),
        person(31, "Other", Some("bob@example.com"), None),
        person(30, "Later", Some("ann.b@example.com"), None),
    ]);
    let config = hubspot_config(dir.path(), "twice", &server.base_url, token_env(), "", "");

    let report = sync(&config, &live_options()).unwrap();

    assert_eq!(
        (
            report.counts.created,
            report.counts.updated,
            report.counts.failed
        ),
        (2, 1, 0),
        "{report:#?}"
    );
    let contacts = contacts_by_external_id(&config);
    assert_eq!(contacts.len(), 2);
    assert_eq!(contacts["30"].emails, ["ann.b@example.com"]);
}

#[test]
fn e1_contacts_without_a_handle_are_not_synced_and_phone_only_ones_are() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with(vec![
        Contact::new(
            30,
            &[
                ("firstname", Some("No")),
                ("lastname", Some("Handle")),
                ("email", Some("  ")),
                ("phone", None),
            ],
        ),
        Contact::new(31, &[("phone", Some("(415) 555-0101"))]),
        Contact::new(
            32,
            &[
                ("email", Some("x@example.com")),
                ("hs_additional_emails", Some("y@example.com;X@example.com")),
            ],
        ),
    ]);
    let config = hubspot_config(dir.path(), "e1", &server.base_url, token_env(), "", "");

    let report = sync(&config, &live_options()).unwrap();

    assert_eq!((report.counts.created, report.counts.failed), (2, 1));
    assert_eq!(report.errors_by_category.get("missing-handle"), Some(&1));
    let stored = contacts_by_external_id(&config);
    assert_eq!(stored["31"].phones, ["4155550101"]);
    assert_eq!(stored["31"].name, None);
    assert_eq!(stored["32"].emails, ["x@example.com", "y@example.com"]);
}

#[test]
fn hostile_strings_are_stored_and_read_back_verbatim() {
    let dir = tempfile::tempdir().unwrap();
    let hostile = [
        "O'Brien \"the\" `tick`",
        "Robert'); DROP TABLE contacts;--",
        "\u{202E}\u{200F}rtl mark",
        "nul\u{0}inside",
        "emoji 🙂👩‍👩‍👧 ",
    ];
    let long = "n".repeat(5000);
    let mut contacts: Vec<Contact> = hostile
        .iter()
        .enumerate()
        .map(|(i, h)| {
            Contact::new(
                40 + i as u64,
                &[
                    ("firstname", Some(h)),
                    ("email", Some(&format!("h{i}@example.com"))),
                    ("jobtitle", Some(h)),
                ],
            )
        })
        .collect();
    contacts.push(Contact::new(
        50,
        &[
            ("lastname", Some(&long)),
            ("email", Some("long@example.com")),
        ],
    ));
    let server = server_with(contacts);
    let config = hubspot_config(
        dir.path(),
        "hostile",
        &server.base_url,
        token_env(),
        "",
        "[mapping]\njobtitle = \"title\"\n",
    );

    let report = sync(&config, &live_options()).unwrap();

    assert_eq!(report.counts.created, 6);
    let stored = contacts_by_external_id(&config);
    for (i, h) in hostile.iter().enumerate() {
        let c = &stored[&(40 + i).to_string()];
        // Names are trimmed at the ends (M2); everything inside is kept.
        assert_eq!(c.name.as_deref(), Some(h.trim()));
        assert_eq!(c.fields["title"], *h, "custom fields are verbatim");
    }
    assert_eq!(stored["50"].name.as_deref(), Some(long.as_str()));
    // And through the CLI's JSON, byte for byte.
    let (_, out) = crmsync(&[
        "contacts",
        "--config",
        dir.path().join("hostile.toml").to_str().unwrap(),
        "--json",
    ])
    .unwrap();
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let nul = json
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["external_id"] == "43")
        .unwrap();
    assert_eq!(nul["fields"]["title"], "nul\u{0}inside");
}

#[test]
fn x6_a_contact_archived_at_the_source_stops_syncing_and_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with(
        (1..=5)
            .map(|i| person(i, "A", Some(&format!("a{i}@example.com")), None))
            .collect(),
    );
    let config = hubspot_config(dir.path(), "x6", &server.base_url, token_env(), "", "");
    sync(&config, &live_options()).unwrap();

    server.state().set_archived(3, true);
    let report = sync(&config, &live_options()).unwrap();

    assert_eq!(report.stopped_syncing, 1);
    assert_eq!(report.mode, "incremental");
    let stored = contacts_by_external_id(&config);
    assert_eq!(stored.len(), 5, "never deleted");
    assert!(!stored["3"].syncing);
    assert!(stored["1"].syncing);
    let archived_listing = server.requests_to("/crm/v3/objects/contacts");
    assert!(
        archived_listing
            .iter()
            .any(|r| r.query.get("archived").map(String::as_str) == Some("true"))
    );

    // Idempotent, and a contact restored at the source syncs again.
    assert_eq!(sync(&config, &live_options()).unwrap().stopped_syncing, 0);
    server.state().set_archived(3, false);
    let restored = sync(&config, &live_options()).unwrap();
    assert_eq!(restored.counts.updated, 1);
    assert!(contacts_by_external_id(&config)["3"].syncing);
}

/// `count` people in pages of 10, each answer `latency_ms` after its request.
fn slow_pages(count: u64, latency_ms: u64) -> HubSpotServer {
    let server = server_with(
        (1..=count)
            .map(|i| person(i, "P", Some(&format!("p{i}@example.com")), None))
            .collect(),
    );
    let mut state = server.state();
    state.page_size = Some(10);
    state.latency = Some(std::time::Duration::from_millis(latency_ms));
    drop(state);
    server
}

#[test]
fn x6_the_archived_listing_is_read_while_the_pages_are_not_after_them() {
    let dir = tempfile::tempdir().unwrap();
    // Four pages, each a round trip of at least 50 ms after the one before.
    let server = slow_pages(40, 50);
    let config = hubspot_config(dir.path(), "overlap", &server.base_url, token_env(), "", "");

    let report = sync(&config, &live_options()).unwrap();

    assert_eq!(report.counts.created, 40);
    let order: Vec<bool> = server
        .requests_to("/crm/v3/objects/contacts")
        .iter()
        .map(|r| r.query.get("archived").map(String::as_str) == Some("true"))
        .collect();
    assert_eq!(order.len(), 5, "{order:?}");
    // Asked for with the first page: one round trip in a run of five, not
    // a fifth after the last page.
    assert!(order[..2].contains(&true), "{order:?}");
}

/// How many of this process's open files are `path`: SQLite opens a store's
/// file once for each connection to it.
fn connections_to(path: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    entries
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| target == path)
        .count()
}

#[test]
fn a_run_reads_and_writes_its_store_through_one_connection() {
    let dir = tempfile::tempdir().unwrap();
    let server = slow_pages(50, 30);
    let config = hubspot_config(dir.path(), "one", &server.base_url, token_env(), "", "");
    let path = std::fs::canonicalize(dir.path())
        .unwrap()
        .join(config.store_path.file_name().expect("the store is a file"));
    let done = std::sync::atomic::AtomicBool::new(false);

    let (report, most) = std::thread::scope(|scope| {
        let watching = scope.spawn(|| {
            let mut most = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                most = most.max(connections_to(&path));
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            most
        });
        let report = sync(&config, &live_options()).unwrap();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (report, watching.join().unwrap())
    });

    assert_eq!(report.counts.created, 50);
    // The reader's connection is the applier's while the pages flow: one,
    // where there were two (and for a shared PostgreSQL, two backends).
    assert_eq!(most, 1, "connections to {} at once", path.display());
}

#[test]
fn x6_a_contact_that_left_the_list_stops_syncing_and_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with(
        (1..=5)
            .map(|i| person(i, "L", Some(&format!("l{i}@example.com")), None))
            .collect(),
    );
    server.state().lists.insert("9".into(), vec![1, 2, 3, 4, 5]);
    let config = hubspot_config(
        dir.path(),
        "left",
        &server.base_url,
        token_env(),
        "list_id = \"9\"",
        "",
    );
    sync(&config, &live_options()).unwrap();

    server.state().lists.insert("9".into(), vec![1, 2, 4, 5]);
    let report = sync(&config, &live_options()).unwrap();

    assert_eq!(report.stopped_syncing, 1);
    let stored = contacts_by_external_id(&config);
    assert_eq!(stored.len(), 5, "never deleted");
    assert!(!stored["3"].syncing && stored["2"].syncing);

    // Back in the list: it syncs again.
    server.state().lists.insert("9".into(), vec![1, 2, 3, 4, 5]);
    let back = sync(&config, &live_options()).unwrap();
    assert_eq!((back.counts.updated, back.stopped_syncing), (1, 0));
    assert!(contacts_by_external_id(&config)["3"].syncing);
}
