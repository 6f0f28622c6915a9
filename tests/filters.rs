//! Filters (S4) and typed custom fields (M1, M4, M5) through the real
//! component against the loopback server: what is pushed into the search
//! API, what the component decides itself, records that stop matching, values
//! that do not convert, and a mapped property deleted at the source.

use crmsync_host::config::Config;
use crmsync_host::store::ContactStore;
use crmsync_tests::hubspot_server::{Contact, HubSpotServer, Seen};
use crmsync_tests::*;
use serde_json::{Value, json};

fn contact(id: u64, country: &str, revenue: Option<&str>, since: Option<&str>) -> Contact {
    Contact::new(
        id,
        &[
            ("email", Some(&format!("c{id}@example.com"))),
            ("country", Some(country)),
            ("annualrevenue", revenue),
            ("customer_since", since),
            ("tags", Some("vip;new")),
        ],
    )
}

fn server() -> HubSpotServer {
    let server = HubSpotServer::start(TOKEN);
    {
        let mut state = server.state();
        state.custom_properties = vec![
            ("country".into(), "string".into()),
            ("annualrevenue".into(), "number".into()),
            ("customer_since".into(), "date".into()),
            ("tags".into(), "enumeration".into()),
        ];
        state.contacts = vec![
            contact(1, "France", Some("2500000"), Some("2021-03-04")),
            contact(2, "france", Some("90000"), Some("2023-11-30")),
            contact(3, "Spain", Some("7000000"), Some("2019-01-01")),
            contact(4, "FRANCE", Some("a lot"), Some("31/12/2020")),
            contact(5, "Germany", None, None),
        ];
    }
    server
}

const MAPPING: &str = "[mapping]\ncountry = \"country\"\n\
    annualrevenue = { field = \"revenue\", type = \"number\" }\n\
    customer_since = { field = \"customer_since\", type = \"date\" }\n\
    tags = { field = \"tags\", type = \"multi_select\", options = [\"vip\", \"new\"] }\n";

fn config(dir: &std::path::Path, name: &str, server: &HubSpotServer, filters: &str) -> Config {
    hubspot_config(
        dir,
        name,
        &server.base_url,
        token_env(),
        "rate_limit = \"none\"\nsearch_rate_limit = \"none\"\n",
        &format!("{MAPPING}{filters}"),
    )
}

fn searches(server: &HubSpotServer) -> Vec<Seen> {
    server.requests_to("/crm/v3/objects/contacts/search")
}

fn synced(config: &Config) -> Vec<String> {
    contacts_by_external_id(config)
        .into_iter()
        .filter(|(_, c)| c.syncing)
        .map(|(id, _)| id)
        .collect()
}

#[test]
fn typed_fields_convert_and_a_bad_value_is_a_field_error() {
    let dir = tempfile::tempdir().unwrap();
    let server = server();
    let config = config(dir.path(), "typed", &server, "");
    let report = sync(&config, &live_options()).unwrap();
    assert_eq!(report.counts.created, 5, "bad values do not stop a record");

    let contacts = contacts_by_external_id(&config);
    let one = &contacts["1"].fields;
    assert_eq!(one["revenue"], json!(2_500_000.0));
    assert_eq!(one["customer_since"], json!("2021-03-04"));
    assert_eq!(one["tags"], json!(["vip", "new"]));
    assert_eq!(one["country"], json!("France"));
    let four = &contacts["4"].fields;
    assert!(!four.contains_key("revenue") && !four.contains_key("customer_since"));
    assert_eq!(
        four["country"],
        json!("FRANCE"),
        "the rest of the record synced"
    );

    let (_, out) = crmsync(&[
        "errors",
        "--config",
        dir.path().join("typed.toml").to_str().unwrap(),
        "--json",
    ])
    .unwrap();
    let errors: Vec<Value> = serde_json::from_str(&out).unwrap();
    let mut fields: Vec<(&str, &str, &str)> = errors
        .iter()
        .map(|e| {
            (
                e["record_id"].as_str().unwrap(),
                e["field"].as_str().unwrap(),
                e["scope"].as_str().unwrap(),
            )
        })
        .collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            ("4", "annualrevenue", "field"),
            ("4", "customer_since", "field")
        ]
    );
    for error in &errors {
        assert_eq!(error["category"], "validation");
        let message = error["message"].as_str().unwrap();
        assert!(
            message.contains("a lot") || message.contains("31/12/2020"),
            "{message}"
        );
        assert!(error["resolution"].as_str().unwrap().contains("[mapping."));
    }
}

#[test]
fn pushable_filters_go_into_the_search_request_of_a_full_run() {
    let dir = tempfile::tempdir().unwrap();
    let server = server();
    let filters = "[[filter]]\nfield = \"country\"\nop = \"equals\"\nvalue = \"France\"\n\
                   [[filter]]\nfield = \"annualrevenue\"\nop = \"gt\"\nvalue = 100000\n\
                   [[filter]]\nfield = \"email\"\nop = \"ends_with\"\nvalue = \"@example.com\"\n";
    let config = config(dir.path(), "pushed", &server, filters);
    let report = sync(&config, &live_options()).unwrap();

    assert_eq!(synced(&config), ["1"]);
    assert_eq!(report.counts.seen, 1, "only matching records were read");
    assert!(server.live_pages().is_empty(), "no listing: search did it");
    let searches = searches(&server);
    assert_eq!(searches.len(), 1);
    let body: Value = serde_json::from_str(&searches[0].body).unwrap();
    let filters = &body["filterGroups"][0]["filters"];
    assert_eq!(
        filters[1],
        json!({"propertyName": "country", "operator": "EQ", "value": "France"})
    );
    assert_eq!(
        filters[2],
        json!({"propertyName": "annualrevenue", "operator": "GT", "value": "100000"})
    );
    assert_eq!(
        filters.as_array().unwrap().len(),
        3,
        "ends_with is not pushed: {filters}"
    );
}

#[test]
fn filters_the_api_cannot_evaluate_are_applied_by_the_component() {
    let dir = tempfile::tempdir().unwrap();
    let server = server();
    let filters = "[[filter]]\nfield = \"country\"\nop = \"not_in\"\nvalue = [\"spain\", \"germany\"]\n\
                   [[filter]]\nfield = \"email\"\nop = \"not_contains\"\nvalue = \"C2@\"\n";
    let config = config(dir.path(), "local", &server, filters);
    let report = sync(&config, &live_options()).unwrap();
    assert_eq!(synced(&config), ["1", "4"]);
    assert_eq!(report.counts.seen, 2);
    assert!(
        searches(&server).is_empty(),
        "nothing to push: the listing is read"
    );
    assert_eq!(server.live_pages().len(), 1);
}

#[test]
fn a_record_that_stops_matching_stops_syncing_and_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let server = server();
    // Not pushable (negative), so incremental runs see every change.
    let filters = "[[filter]]\nfield = \"country\"\nop = \"not_equals\"\nvalue = \"Spain\"\n";
    let config = config(dir.path(), "leaving", &server, filters);
    sync(&config, &live_options()).unwrap();
    assert_eq!(synced(&config), ["1", "2", "4", "5"]);

    server
        .state()
        .put(contact(2, "Spain", Some("90000"), Some("2023-11-30")));
    server
        .state()
        .put(contact(3, "Portugal", Some("7000000"), Some("2019-01-01")));
    let report = sync(&config, &live_options()).unwrap();
    assert_eq!(report.mode, "incremental");
    assert_eq!(report.stopped_syncing, 1);
    assert_eq!(report.counts.created, 1, "3 matches now");
    assert_eq!(synced(&config), ["1", "3", "4", "5"]);
    let kept = &contacts_by_external_id(&config)["2"];
    assert!(!kept.syncing, "kept at the destination, flagged");
    assert_eq!(kept.fields["country"], json!("france"), "not overwritten");

    // Matching again brings it back.
    server
        .state()
        .put(contact(2, "France", Some("90000"), Some("2023-11-30")));
    sync(&config, &live_options()).unwrap();
    assert!(contacts_by_external_id(&config)["2"].syncing);
}

#[test]
fn a_changed_filter_makes_the_next_run_full() {
    let dir = tempfile::tempdir().unwrap();
    let server = server();
    let first = config(dir.path(), "refilter", &server, "");
    sync(&first, &live_options()).unwrap();
    let narrowed = config(
        dir.path(),
        "refilter",
        &server,
        "[[filter]]\nfield = \"country\"\nop = \"in\"\nvalue = [\"spain\", \"GERMANY\"]\n",
    );
    let report = sync(&narrowed, &live_options()).unwrap();
    assert_eq!(report.mode, "full");
    assert_eq!(report.stopped_syncing, 3, "1, 2 and 4 no longer match");
    assert_eq!(synced(&narrowed), ["3", "5"]);
    let body: Value = serde_json::from_str(&searches(&server)[0].body).unwrap();
    assert_eq!(
        body["filterGroups"][0]["filters"][1],
        json!({"propertyName": "country", "operator": "IN", "values": ["spain", "germany"]})
    );
}

#[test]
fn a_deleted_property_is_reported_once_and_the_other_fields_sync() {
    let dir = tempfile::tempdir().unwrap();
    let server = server();
    server.state().deleted_properties = vec!["annualrevenue".into()];
    let config = config(dir.path(), "deleted", &server, "");
    let report = sync(&config, &live_options()).unwrap();
    assert_eq!(report.counts.created, 5);
    let contacts = contacts_by_external_id(&config);
    assert!(contacts.values().all(|c| !c.fields.contains_key("revenue")));
    assert_eq!(contacts["3"].fields["customer_since"], json!("2019-01-01"));
    let store = ContactStore::open(&config.store_path).unwrap();
    let run = store.runs(&config.name).unwrap()[0].id;
    let errors = store.errors(run).unwrap();
    let e6: Vec<_> = errors
        .iter()
        .filter(|e| e.category == "field-not-found")
        .collect();
    assert_eq!(e6.len(), 1, "once per run, not per record: {errors:?}");
    assert_eq!(e6[0].field.as_deref(), Some("annualrevenue"));
    assert!(e6[0].resolution.contains("annualrevenue"));
}

/// Pushing filters into the search API must select exactly what the component
/// alone would: a full run through search and one through a list (batch read,
/// where nothing can be pushed) sync the same contacts, for random data and
/// random pushable filters, including values of the wrong case or type.
#[test]
fn pushed_down_filters_select_what_the_component_alone_would() {
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let countries = [
        Some("France"),
        Some("FRANCE"),
        Some("spain"),
        Some("Spain"),
        None,
    ];
    let revenues = [
        None,
        Some("0"),
        Some("99999"),
        Some("100000"),
        Some("100000.5"),
        Some("250000"),
        Some("abc"),
    ];
    let days = [
        None,
        Some("2021-03-04"),
        Some("2023-11-30"),
        Some("2019-01-01"),
        Some("31/12/2020"),
    ];
    let pool = [
        "field = \"country\"\nop = \"equals\"\nvalue = \"France\"",
        "field = \"country\"\nop = \"in\"\nvalue = [\"FRANCE\", \"spain\"]",
        "field = \"country\"\nop = \"is_empty\"",
        "field = \"country\"\nop = \"is_not_empty\"",
        "field = \"annualrevenue\"\nop = \"gt\"\nvalue = 100000",
        "field = \"annualrevenue\"\nop = \"lt\"\nvalue = 100000",
        "field = \"annualrevenue\"\nop = \"equals\"\nvalue = 100000",
        "field = \"annualrevenue\"\nop = \"in\"\nvalue = [0, 250000]",
        "field = \"customer_since\"\nop = \"gt\"\nvalue = \"2021-03-04\"",
        "field = \"customer_since\"\nop = \"lt\"\nvalue = \"2023-11-30\"",
    ];
    for round in 0..12 {
        let dir = tempfile::tempdir().unwrap();
        let server = server();
        {
            let mut state = server.state();
            state.contacts = (1..=40)
                .map(|id| {
                    Contact::new(
                        id,
                        &[
                            ("email", Some(&format!("r{id}@example.com"))),
                            ("country", countries[rng.usize(..countries.len())]),
                            ("annualrevenue", revenues[rng.usize(..revenues.len())]),
                            ("customer_since", days[rng.usize(..days.len())]),
                        ],
                    )
                })
                .collect();
            state.lists.insert("7".into(), (1..=40).collect());
        }
        let mut filters = String::new();
        for _ in 0..rng.usize(1..=3) {
            filters.push_str(&format!("[[filter]]\n{}\n", pool[rng.usize(..pool.len())]));
        }
        let pushed = config(dir.path(), "pushed", &server, &filters);
        sync(&pushed, &live_options()).unwrap();
        let local = hubspot_config(
            dir.path(),
            "local",
            &server.base_url,
            token_env(),
            "rate_limit = \"none\"\nsearch_rate_limit = \"none\"\nlist_id = \"7\"\n",
            &format!("{MAPPING}{filters}"),
        );
        sync(&local, &live_options()).unwrap();
        assert!(
            !searches(&server).is_empty(),
            "round {round}: nothing was pushed"
        );
        assert_eq!(synced(&pushed), synced(&local), "round {round}:\n{filters}");
    }
}
