//! Salesforce field-level security (E6, M5; issue 14, item 7): a mapped
//! field the integration user cannot see, default-mapped standard fields
//! such as `MobilePhone` included, is reported once as `field-not-found`,
//! left out of the queries, and everything else syncs. Whether `describe`
//! leaves the field out or only the query refuses it.

use crmsync_host::config::Config;
use crmsync_host::store::ContactStore;
use crmsync_tests::hubspot_server::HubSpotServer;
use crmsync_tests::salesforce_server::{Record, SalesforceServer};
use crmsync_tests::*;
use serde_json::json;

const PEOPLE: usize = 480;

fn people(server: &SalesforceServer, describe_shows_hidden: bool) {
    let mut state = server.state();
    state.hidden_fields = vec!["MobilePhone".into()];
    state.describe_shows_hidden = describe_shows_hidden;
    state.batch_size = 100;
    state.leads = (0..PEOPLE / 2)
        .map(|i| {
            Record::new(
                &format!("00Q{i:012}"),
                &[
                    ("LastName", json!(format!("Lead {i}"))),
                    ("Email", json!(format!("lead{i}@fls.example"))),
                    ("Company", json!("FLS")),
                    ("IsConverted", json!(false)),
                ],
                1_717_200_000_000,
            )
        })
        .collect();
    state.contacts = (0..PEOPLE / 2)
        .map(|i| {
            Record::new(
                &format!("003{i:012}"),
                &[
                    ("LastName", json!(format!("Contact {i}"))),
                    ("Email", json!(format!("contact{i}@fls.example"))),
                ],
                1_717_200_000_000,
            )
        })
        .collect();
}

fn field_errors(config: &Config, run_id: i64) -> Vec<(String, Option<String>)> {
    ContactStore::open(&config.store_path)
        .unwrap()
        .errors(run_id)
        .unwrap()
        .into_iter()
        .map(|e| (e.category, e.field))
        .collect()
}

fn into_the_store(describe_shows_hidden: bool) {
    let dir = tempfile::tempdir().unwrap();
    let server = SalesforceServer::start(TOKEN);
    people(&server, describe_shows_hidden);
    let path = write_config(
        dir.path(),
        "fls",
        &format!(
            "[source]\nsystem = \"salesforce\"\nbase_url = \"{}\"\ntoken_env = \"{}\"\n",
            server.instance_url,
            token_env()
        ),
    );
    let config = Config::load(&path).unwrap();
    let report = sync(&config, &live_options()).unwrap();
    assert_eq!(report.status, "completed", "{report:#?}");
    assert_eq!(report.counts.created, PEOPLE as u64, "{report:#?}");
    assert_eq!(
        field_errors(&config, report.run_id),
        [("field-not-found".to_owned(), Some("MobilePhone".to_owned()))],
        "reported once"
    );
    assert_eq!(contacts_by_external_id(&config).len(), PEOPLE);
}

#[test]
fn a_field_hidden_from_describe_is_reported_once_and_every_person_syncs() {
    into_the_store(false);
}

#[test]
fn a_field_only_the_query_refuses_is_reported_once_and_every_person_syncs() {
    into_the_store(true);
}

fn into_hubspot(describe_shows_hidden: bool) {
    let dir = tempfile::tempdir().unwrap();
    let salesforce = SalesforceServer::start(TOKEN);
    let hubspot = HubSpotServer::start(TOKEN);
    people(&salesforce, describe_shows_hidden);
    let path = write_config(
        dir.path(),
        "flscrm",
        &crm_sync_toml(
            ("salesforce", &salesforce.instance_url),
            ("hubspot", &hubspot.base_url),
            "",
            "[mapping]\nMobilePhone = \"mobilephone\"",
        ),
    );
    let config = Config::load(&path).unwrap();
    let report = sync(&config, &live_options()).unwrap();
    assert_eq!(report.status, "completed", "{report:#?}");
    let written = report.written.clone().unwrap();
    assert_eq!(written.to_destination.created, PEOPLE as u64, "{report:#?}");
    assert_eq!(
        field_errors(&config, report.run_id),
        [("field-not-found".to_owned(), Some("MobilePhone".to_owned()))],
        "reported once"
    );
    assert_eq!(hubspot.state().contacts.len(), PEOPLE);
}

#[test]
fn a_hidden_field_in_a_sync_into_a_crm_is_reported_once_and_every_person_syncs() {
    into_hubspot(false);
}

#[test]
fn a_field_only_the_query_refuses_in_a_sync_into_a_crm_is_dropped_and_every_person_syncs() {
    into_hubspot(true);
}
