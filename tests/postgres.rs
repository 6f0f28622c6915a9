//! Syncs whose store is PostgreSQL (`[store] url`): the same passes, the same
//! CLI, the same crash safety as on the embedded SQLite store, through the
//! real component, against the throwaway server `scripts/test.sh` starts.

use crmsync_host::config::Config;
use crmsync_host::store::LinkSide;
use crmsync_tests::hubspot_server::{Contact, HubSpotServer};
use crmsync_tests::salesforce_server::SalesforceServer;
use crmsync_tests::*;

fn people(count: u64) -> Vec<Contact> {
    (1..=count)
        .map(|i| {
            Contact::new(
                i,
                &[
                    ("firstname", Some("P")),
                    ("lastname", Some(&i.to_string())),
                    ("email", Some(&format!("p{i}@example.com"))),
                ],
            )
        })
        .collect()
}

#[test]
fn a_sync_into_postgres_creates_once_then_changes_nothing_and_the_cli_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = HubSpotServer::start(TOKEN);
    server.state().contacts = people(250);
    let store = postgres_store("one_way");
    let config = hubspot_config_in(
        dir.path(),
        "one_way",
        &server.base_url,
        token_env(),
        "",
        "",
        &store,
    );

    let first = sync(&config, &live_options()).unwrap();
    assert_eq!(first.status, "completed");
    assert_eq!((first.counts.pages, first.counts.created), (3, 250));
    let again = sync(&config, &live_options()).unwrap();
    assert_eq!((again.counts.created, again.counts.skipped), (0, 250), "X7");
    let stored = contacts_by_external_id(&config);
    assert_eq!(stored.len(), 250);
    assert_eq!(stored["42"].emails, ["p42@example.com"]);

    let path = dir.path().join("one_way.toml");
    let path = path.to_str().unwrap();
    let (_, status) = crmsync(&["status", "--config", path, "--json"]).unwrap();
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["records_synced"], 250, "{status}");
    assert_eq!(status["state"], "idle");
    let (_, runs) = crmsync(&["runs", "--config", path, "--json"]).unwrap();
    let runs: serde_json::Value = serde_json::from_str(&runs).unwrap();
    assert_eq!(runs.as_array().unwrap().len(), 2, "{runs}");
    crmsync(&["pause", "--config", path]).unwrap();
    let (_, status) = crmsync(&["status", "--config", path, "--json"]).unwrap();
    assert!(status.contains("\"paused\""), "{status}");
}

#[test]
fn r3_a_sync_into_postgres_killed_at_random_points_loses_nothing_and_duplicates_nothing() {
    crate::crash::killed_at_random_points(5_000, 8, &postgres_store);
}

#[test]
fn a_sync_into_a_crm_keeps_its_links_in_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let hubspot = HubSpotServer::start(TOKEN);
    let salesforce = SalesforceServer::start(TOKEN);
    hubspot.state().contacts = (1..=30)
        .map(|i| {
            Contact::new(
                i,
                &[
                    ("lastname", Some(&i.to_string())),
                    ("email", Some(&format!("p{i}@example.com"))),
                    ("company", Some("Acme")),
                ],
            )
        })
        .collect();
    let body = crm_sync_toml(
        ("hubspot", &hubspot.base_url),
        ("salesforce", &salesforce.instance_url),
        "lookback = \"0s\"",
        "",
    );
    let path = write_config_in(dir.path(), "into_crm", &body, &postgres_store("into_crm"));
    let config = Config::load(&path).unwrap();

    let created = |report: &crmsync_host::sync::SyncReport| {
        report
            .written
            .as_ref()
            .expect("a sync into a CRM")
            .to_destination
            .created
    };
    let first = sync(&config, &live_options()).unwrap();
    assert_eq!(
        (first.status.as_str(), created(&first)),
        ("completed", 30),
        "{first:#?}"
    );
    let again = sync(&config, &live_options()).unwrap();
    assert_eq!(created(&again), 0, "linked, not created twice");
    assert_eq!(salesforce.state().leads.len(), 30);
    let store = config.store.open().unwrap();
    assert_eq!(store.linked_pairs("into_crm").unwrap(), 30);
    let link = store
        .link("into_crm", LinkSide::Source, "7")
        .unwrap()
        .unwrap();
    assert!(link.destination_id.is_some());
}

#[test]
fn a_bad_store_url_is_named_in_the_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let body =
        "[source]\nsystem = \"hubspot\"\nbase_url = \"http://127.0.0.1:9\"\ntoken_env = \"X\"\n";
    for (store, expected) in [
        ("url = \"mysql://u:secret@h/db\"", "store.url"),
        (
            "url = \"postgresql://u@h/db\"\npath = \"x.sqlite\"",
            "set path (an embedded SQLite file) or url",
        ),
        (
            "url = \"postgresql://u@h/db\"\nnamespace = \"Bad-Name\"",
            "store.namespace",
        ),
        ("namespace = \"crm\"", "only a PostgreSQL store"),
        (
            "url_env = \"CRMSYNC_TEST_NO_SUCH_VAR\"",
            "CRMSYNC_TEST_NO_SUCH_VAR is not set",
        ),
    ] {
        let path = write_config_in(dir.path(), "bad", body, store);
        let error = format!("{:#}", Config::load(&path).unwrap_err());
        assert!(error.contains(expected), "{store}: {error}");
        assert!(
            !error.contains("secret"),
            "the password is never shown: {error}"
        );
    }
}
