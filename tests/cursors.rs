//! A paging cursor that repeats is a failure of the run, never the end of the
//! data (issue 14, item 6): taking it as the end made the sweep after a
//! complete read stop syncing every record after it.

use crmsync_host::config::Config;
use crmsync_host::store::{ContactStore, LinkSide};
use crmsync_host::sync::SyncOptions;
use crmsync_tests::hubspot_server::{Contact, HubSpotServer};
use crmsync_tests::salesforce_server::SalesforceServer;
use crmsync_tests::*;

const CONTACTS: u64 = 400;

fn server() -> HubSpotServer {
    let server = HubSpotServer::start(TOKEN);
    {
        let mut state = server.state();
        state.contacts = (1..=CONTACTS)
            .map(|i| {
                Contact::new(
                    i,
                    &[
                        ("lastname", Some(&i.to_string())),
                        ("email", Some(&format!("p{i}@cursor.example"))),
                        // A Salesforce Lead needs its Company.
                        ("company", Some("Acme")),
                    ],
                )
            })
            .collect();
        state.page_size = Some(100);
    }
    server
}

fn full() -> SyncOptions {
    SyncOptions {
        full: true,
        ..live_options()
    }
}

#[test]
fn a_cursor_cycle_fails_a_store_sync_and_stops_syncing_nobody() {
    let dir = tempfile::tempdir().unwrap();
    let server = server();
    let config = hubspot_config(dir.path(), "cycle", &server.base_url, token_env(), "", "");
    assert_eq!(sync(&config, &live_options()).unwrap().status, "completed");
    // The page after cur-200 points back at cur-100: paging would go round for ever.
    server.state().cursor_loop = Some(("cur-200".into(), "cur-100".into()));
    let report = sync(&config, &full()).unwrap();
    assert_eq!(report.status, "failed", "{report:#?}");
    let error = report.error.clone().expect("the run's error");
    assert_eq!(error.category, "invalid-response");
    assert!(error.message.contains("cur-100"), "{}", error.message);
    assert!(
        contacts_by_external_id(&config).values().all(|c| c.syncing),
        "an incomplete read marked contacts as no longer syncing"
    );
    assert_eq!(report.stopped_syncing, 0);
}

#[test]
fn a_cursor_that_does_not_advance_fails_a_sync_into_a_crm_and_sweeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let hubspot = server();
    let salesforce = SalesforceServer::start(TOKEN);
    let path = write_config(
        dir.path(),
        "stuck",
        &crm_sync_toml(
            ("hubspot", &hubspot.base_url),
            ("salesforce", &salesforce.instance_url),
            "lookback = \"0s\"",
            "",
        ),
    );
    let config = Config::load(&path).unwrap();
    let first = sync(&config, &live_options()).unwrap();
    assert_eq!(first.status, "completed", "{first:#?}");
    assert_eq!(first.written.unwrap().to_destination.created, CONTACTS);
    hubspot.state().cursor_loop = Some(("cur-200".into(), "cur-200".into()));
    let report = sync(&config, &full()).unwrap();
    assert_eq!(report.status, "failed", "{report:#?}");
    let error = report.error.clone().expect("the run's error");
    assert_eq!(error.category, "invalid-response");
    assert!(error.message.contains("a second time"), "{}", error.message);
    let store = ContactStore::open(&config.store_path).unwrap();
    for id in 1..=CONTACTS {
        let link = store
            .link(&config.name, LinkSide::Source, &id.to_string())
            .unwrap()
            .unwrap();
        assert!(
            link.syncing,
            "contact {id} stopped syncing after an incomplete read"
        );
    }
}
