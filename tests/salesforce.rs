//! Salesforce as a source (S1, X8) through the real component against the
//! loopback server: SOQL paging by `nextRecordsUrl`, Leads and Contacts as one
//! set of people with their record type, lead conversion without a
//! duplicate, incremental windows on `SystemModstamp`, deletes, a missing
//! field (E6) and an invalid session.

use crmsync_host::config::Config;
use crmsync_host::store::ContactStore;
use crmsync_tests::salesforce_server::{Record, SalesforceServer};
use crmsync_tests::*;
use serde_json::json;

/// 2024-06-01T00:00:00Z.
const JUNE: u64 = 1_717_200_000_000;

fn lead(id: &str, first: &str, email: &str, status: &str, at: u64) -> Record {
    Record::new(
        id,
        &[
            ("FirstName", json!(first)),
            ("LastName", json!("Lead")),
            ("Email", json!(email)),
            ("Status", json!(status)),
            ("IsConverted", json!(false)),
        ],
        at,
    )
}

fn contact(id: &str, first: &str, email: &str, account: Option<&str>, at: u64) -> Record {
    Record::new(
        id,
        &[
            ("FirstName", json!(first)),
            ("LastName", json!("Contact")),
            ("Email", json!(email)),
            ("AccountId", json!(account)),
        ],
        at,
    )
}

fn config(dir: &std::path::Path, name: &str, server: &SalesforceServer, extra: &str) -> Config {
    let path = write_config(
        dir,
        name,
        &format!(
            "[source]\nsystem = \"salesforce\"\nbase_url = \"{}\"\ntoken_env = \"{}\"\nlookback = \"0s\"\n{extra}",
            server.instance_url,
            token_env()
        ),
    );
    Config::load(&path).unwrap()
}

fn field<'a>(row: &'a crmsync_host::store::ContactRow, name: &str) -> Option<&'a str> {
    row.fields.get(name).and_then(|v| v.as_str())
}

#[test]
fn leads_and_contacts_sync_as_people_with_their_record_type() {
    let dir = tempfile::tempdir().unwrap();
    let server = SalesforceServer::start(TOKEN);
    {
        let mut state = server.state();
        state.batch_size = 2;
        state.leads = vec![
            lead(
                "00Q1",
                "Ada",
                "ada@example.com",
                "Open - Not Contacted",
                JUNE,
            ),
            lead(
                "00Q2",
                "Bea",
                "bea@example.com",
                "Working - Contacted",
                JUNE + 1,
            ),
            lead(
                "00Q3",
                "Cal",
                "cal@example.com",
                "Open - Not Contacted",
                JUNE + 2,
            ),
        ];
        state.contacts = vec![contact(
            "0031",
            "Dan",
            "dan@example.com",
            Some("0011"),
            JUNE,
        )];
    }
    let config = config(dir.path(), "people", &server, "");
    let report = sync(&config, &live_options()).unwrap();
    assert_eq!((report.counts.created, report.counts.pages), (4, 3));

    let contacts = contacts_by_external_id(&config);
    assert_eq!(field(&contacts["00Q1"], "record_type"), Some("lead"));
    assert_eq!(
        field(&contacts["00Q2"], "lead_status"),
        Some("Working - Contacted")
    );
    assert_eq!(field(&contacts["0031"], "record_type"), Some("contact"));
    assert_eq!(contacts["0031"].emails, ["dan@example.com"]);

    // The deleted-records listing is read on its own thread beside the pages,
    // so it may reach the server first; the pages' order is what is checked.
    let queries: Vec<String> = server
        .queries()
        .into_iter()
        .filter(|q| !q.contains("WHERE IsDeleted = true"))
        .collect();
    assert_eq!(
        queries[0],
        "SELECT Id, SystemModstamp, LastModifiedDate, IsDeleted, FirstName, LastName, Email, Phone, MobilePhone, Status, IsConverted, ConvertedContactId, ConvertedAccountId FROM Lead \
         WHERE IsConverted = false ORDER BY SystemModstamp ASC, Id ASC"
    );
    assert!(queries.iter().any(|q| q.starts_with(
        "SELECT Id, SystemModstamp, LastModifiedDate, IsDeleted, FirstName, LastName, Email, Phone, MobilePhone, AccountId FROM Contact"
    )));
    // Three Leads at two per page: the second page came from nextRecordsUrl.
    let locators = server
        .state()
        .seen
        .iter()
        .filter(|s| s.path.contains("/query/01g"))
        .count();
    assert_eq!(locators, 1);
    assert!(
        server
            .state()
            .seen
            .iter()
            .all(|s| s.authorization.as_deref() == Some(&format!("Bearer {TOKEN}")))
    );
}

#[test]
fn a_converted_lead_updates_its_contact_instead_of_making_a_second_one() {
    let dir = tempfile::tempdir().unwrap();
    let server = SalesforceServer::start(TOKEN);
    server.state().leads = vec![lead(
        "00Q1",
        "Ada",
        "ada@example.com",
        "Working - Contacted",
        JUNE,
    )];
    let config = config(dir.path(), "convert", &server, "");
    sync(&config, &live_options()).unwrap();
    let before = contacts_by_external_id(&config);
    let id = before["00Q1"].id;

    // Converted in Salesforce: the Lead points at its new Contact.
    let now = crmsync_tests::hubspot_server::now_ms();
    {
        let mut state = server.state();
        state.edit(
            "Lead",
            "00Q1",
            &[
                ("IsConverted", json!(true)),
                ("ConvertedContactId", json!("0039")),
                ("Status", json!("Closed - Converted")),
            ],
            now,
        );
        state
            .contacts
            .push(contact("0039", "Ada", "ada@example.com", Some("0011"), now));
    }
    let report = sync(&config, &live_options()).unwrap();
    assert_eq!(report.mode, "incremental");
    assert_eq!(report.counts.created, 0, "no second contact");
    assert_eq!(report.counts.failed, 0, "no email-taken");
    assert_eq!(report.merged, 1);

    let after = contacts_by_external_id(&config);
    assert_eq!(after.len(), 1);
    let person = &after["0039"];
    assert_eq!(person.id, id, "the same destination contact, relinked");
    assert_eq!(field(person, "record_type"), Some("contact"));
    let queries = server.queries();
    assert!(
        queries
            .iter()
            .any(|q| q.contains("SystemModstamp >= ") && q.contains("FROM Contact")),
        "{queries:?}"
    );
    assert!(
        queries
            .iter()
            .any(|q| q.contains("ConvertedContactId IN ('0039')"))
    );

    // Nothing changed since: nothing is written (X7).
    let again = sync(&config, &live_options()).unwrap();
    assert_eq!((again.counts.created, again.counts.updated), (0, 0));
}

#[test]
fn a_deleted_contact_stops_syncing_and_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let server = SalesforceServer::start(TOKEN);
    server.state().contacts = vec![
        contact("0031", "Dan", "dan@example.com", None, JUNE),
        contact("0032", "Eve", "eve@example.com", None, JUNE),
    ];
    let config = config(dir.path(), "deleted", &server, "objects = [\"Contact\"]\n");
    sync(&config, &live_options()).unwrap();
    server.state().contacts[1].deleted = true;
    let report = sync(&config, &live_options()).unwrap();
    assert_eq!(report.stopped_syncing, 1);
    let contacts = contacts_by_external_id(&config);
    assert!(contacts["0031"].syncing && !contacts["0032"].syncing);
    assert!(
        server
            .queries()
            .iter()
            .any(|q| q == "SELECT Id FROM Contact WHERE IsDeleted = true ORDER BY Id")
    );
    assert!(
        server
            .state()
            .seen
            .iter()
            .any(|s| s.path.ends_with("/queryAll"))
    );
}

#[test]
fn a_mapped_field_salesforce_lacks_is_reported_once_and_the_rest_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let server = SalesforceServer::start(TOKEN);
    server.state().contacts = vec![contact("0031", "Dan", "dan@example.com", None, JUNE)];
    let config = config(
        dir.path(),
        "missing",
        &server,
        "objects = [\"Contact\"]\n[mapping]\nTitle = \"title\"\nShoe_Size__c = \"shoe_size\"\n",
    );
    let report = sync(&config, &live_options()).unwrap();
    assert_eq!(report.counts.created, 1);
    let store = ContactStore::open(&config.store_path).unwrap();
    let errors = store.errors(report.run_id).unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].category, "field-not-found");
    assert_eq!(errors[0].field.as_deref(), Some("Shoe_Size__c"));
    assert!(server.queries().iter().all(|q| !q.contains("Shoe_Size__c")));
}

#[test]
fn an_invalid_session_stops_the_sync_with_a_reconnect_resolution() {
    let dir = tempfile::tempdir().unwrap();
    let server = SalesforceServer::start("another-token");
    let config = config(dir.path(), "session", &server, "");
    let report = sync(&config, &live_options()).unwrap();
    let error = report.error.unwrap();
    assert_eq!(error.category, "auth-expired");
    assert!(
        error.message.contains("INVALID_SESSION_ID"),
        "{}",
        error.message
    );
    assert!(error.resolution.contains("reconnect Salesforce"));
}

#[test]
fn accounts_sync_first_and_contacts_link_to_their_account() {
    let dir = tempfile::tempdir().unwrap();
    let server = SalesforceServer::start(TOKEN);
    {
        let mut state = server.state();
        state.accounts = vec![
            Record::new(
                "0011",
                &[
                    ("Name", json!("Acme")),
                    ("Website", json!("https://www.acme.example")),
                ],
                JUNE,
            ),
            Record::new(
                "0012",
                &[("Name", json!("Globex")), ("Website", json!(null))],
                JUNE,
            ),
        ];
        state.contacts = vec![
            contact("0031", "Dan", "dan@acme.example", Some("0011"), JUNE),
            contact("0032", "Eve", "eve@example.org", Some("0099"), JUNE),
        ];
        state.leads = vec![lead(
            "00Q1",
            "Ada",
            "ada@example.com",
            "Open - Not Contacted",
            JUNE,
        )];
    }
    let config = config(
        dir.path(),
        "accounts",
        &server,
        "objects = [\"Lead\", \"Contact\", \"Account\"]\n[companies.mapping]\nIndustry = \"industry\"\n",
    );
    let report = sync(&config, &live_options()).unwrap();
    let accounts = report.companies.as_ref().unwrap();
    assert_eq!(accounts.counts.created, 2);
    assert_eq!(report.counts.created, 3);

    let store = ContactStore::open(&config.store_path).unwrap();
    let rows = store.accounts().unwrap();
    assert_eq!(rows[0].domains, ["acme.example"]);
    assert_eq!(
        rows[1].domains,
        Vec::<String>::new(),
        "no website, no domain: still synced"
    );
    let contacts = contacts_by_external_id(&config);
    let account = |id: &str| {
        contacts[id]
            .account
            .as_ref()
            .and_then(|a| a.external_id.clone())
    };
    assert_eq!(account("0031").as_deref(), Some("0011"));
    assert_eq!(account("0032"), None, "its Account is not synced: unlinked");
    assert_eq!(account("00Q1"), None);
    assert!(
        server
            .queries()
            .iter()
            .any(|q| q
                .starts_with("SELECT Id, SystemModstamp, LastModifiedDate, IsDeleted, Name, Website, Industry FROM Account"))
    );
}

#[test]
fn fields_lists_what_leads_and_contacts_both_have() {
    let dir = tempfile::tempdir().unwrap();
    let server = SalesforceServer::start(TOKEN);
    config(
        dir.path(),
        "catalogue",
        &server,
        "[mapping]\nTitle = \"title\"\n",
    );
    let path = dir.path().join("catalogue.toml");
    let component = component_path().display().to_string();
    let (_, out) = crmsync(&[
        "fields",
        "--config",
        path.to_str().unwrap(),
        "--component",
        &component,
        "--json",
    ])
    .unwrap();
    let fields: serde_json::Value = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = fields
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"Title") && names.contains(&"Email"),
        "{names:?}"
    );
    assert!(!names.contains(&"Status"), "Leads only: {names:?}");
    assert!(!names.contains(&"AccountId"), "Contacts only: {names:?}");
    let title = fields
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "Title")
        .unwrap();
    assert_eq!(title["mapped_to"], "title");
}

#[test]
fn oauth_sessions_are_refreshed_at_start_and_when_they_expire_mid_run() {
    let dir = tempfile::tempdir().unwrap();
    let server = SalesforceServer::start("not-issued-yet");
    {
        let mut state = server.state();
        state.batch_size = 1;
        state.refresh_token = Some("sf-refresh".into());
        state.requests_per_session = Some(4);
        state.contacts = (1..=5)
            .map(|i| {
                contact(
                    &format!("003{i}"),
                    "P",
                    &format!("p{i}@example.com"),
                    None,
                    JUNE + i,
                )
            })
            .collect();
    }
    for (name, refresh) in [("refreshed", "sf-refresh"), ("revoked", "a-revoked-one")] {
        let prefix = format!("CRMSYNC_SF_{}", name.to_uppercase());
        set_env(&format!("{prefix}_ID"), "client-id");
        set_env(&format!("{prefix}_SECRET"), "client-secret");
        set_env(&format!("{prefix}_REFRESH"), refresh);
        let path = write_config(
            dir.path(),
            name,
            &format!(
                "[source]\nsystem = \"salesforce\"\nbase_url = \"{}\"\nobjects = [\"Contact\"]\n\
                 [source.oauth]\nclient_id_env = \"{prefix}_ID\"\nclient_secret_env = \"{prefix}_SECRET\"\n\
                 refresh_token_env = \"{prefix}_REFRESH\"\n",
                server.instance_url
            ),
        );
        let config = Config::load(&path).unwrap();
        let report = sync(&config, &live_options()).unwrap();
        if refresh == "sf-refresh" {
            assert_eq!(report.status, "completed", "{:?}", report.error);
            assert_eq!(report.counts.created, 5);
            assert!(server.state().issued >= 3, "refreshed at start and mid-run");
        } else {
            let error = report.error.unwrap();
            assert_eq!(error.category, "auth-expired");
            assert!(error.message.contains("invalid_grant"), "{}", error.message);
            assert!(error.resolution.contains("Reconnect Salesforce"));
        }
    }
    let token_requests = server
        .state()
        .seen
        .iter()
        .filter(|s| s.path == "/services/oauth2/token")
        .count();
    assert!(token_requests >= 4);
}

#[test]
fn a_run_resumed_after_its_query_locator_expired_reads_the_object_again() {
    let dir = tempfile::tempdir().unwrap();
    let server = SalesforceServer::start(TOKEN);
    {
        let mut state = server.state();
        state.batch_size = 2;
        state.contacts = (1..=12)
            .map(|i| {
                contact(
                    &format!("003{i:02}"),
                    "P",
                    &format!("p{i}@example.com"),
                    None,
                    JUNE + i,
                )
            })
            .collect();
    }
    let config = config(dir.path(), "expired", &server, "objects = [\"Contact\"]\n");
    let mut options = live_options();
    let stop = options.stop.clone();
    options.progress = Some(std::sync::Arc::new(move |_: &_| {
        stop.store(true, std::sync::atomic::Ordering::Relaxed)
    }));
    let interrupted = sync(&config, &options).unwrap();
    assert_eq!(interrupted.status, "interrupted");
    assert!(interrupted.counts.seen < 12);

    // Longer than a locator lives: the stored nextRecordsUrl is refused.
    server.state().expire_locators();
    let resumed = sync(&config, &live_options()).unwrap();
    assert!(resumed.resumed);
    assert_eq!(resumed.status, "completed", "{:?}", resumed.error);
    let contacts = contacts_by_external_id(&config);
    assert_eq!(contacts.len(), 12, "nothing lost, nothing doubled");
    assert!(
        server
            .state()
            .seen
            .iter()
            .any(|s| s.path.contains("/query/01g") && s.soql.is_none())
    );
}
