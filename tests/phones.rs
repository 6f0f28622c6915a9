//! `matching.default_region` (M3; issue 14, item 10): phones parsed and
//! matched in E.164, so `(415) 555-0101` and `+1 415-555-0101` are one
//! person; without the setting, M3's digits rule as before.

use crmsync_host::config::Config;
use crmsync_tests::hubspot_server::{Contact, HubSpotServer};
use crmsync_tests::*;

fn config(dir: &std::path::Path, server: &HubSpotServer, matching: &str) -> Config {
    hubspot_config(dir, "phones", &server.base_url, token_env(), "", matching)
}

#[test]
fn with_a_default_region_one_number_in_two_formats_is_one_person() {
    let dir = tempfile::tempdir().unwrap();
    let server = HubSpotServer::start(TOKEN);
    server.state().contacts = vec![
        Contact::new(
            1,
            &[
                ("firstname", Some("Ann")),
                ("phone", Some("+1 (415) 555-0101")),
            ],
        ),
        Contact::new(2, &[("firstname", Some("Bo")), ("phone", Some("ext. 12"))]),
    ];
    let config = config(dir.path(), &server, "[matching]\ndefault_region = \"us\"\n");
    // The destination knew Ann already, by her phone in another format.
    let known = dir.path().join("known.json");
    std::fs::write(
        &known,
        r#"[{"name": "Ann (imported)", "phones": ["415.555.0101"]}]"#,
    )
    .unwrap();
    let config_arg = dir.path().join("phones.toml");
    let (_, said) = crmsync(&[
        "import",
        "--config",
        config_arg.to_str().unwrap(),
        "--component",
        component_path().to_str().unwrap(),
        known.to_str().unwrap(),
    ])
    .unwrap();
    assert!(said.contains("imported 1"), "{said}");

    let report = sync(&config, &live_options()).unwrap();
    assert_eq!(report.status, "completed", "{report:#?}");
    assert_eq!(
        (report.counts.created, report.counts.updated),
        (1, 1),
        "{report:#?}"
    );
    let contacts = contacts_by_external_id(&config);
    assert_eq!(
        contacts["1"].phones,
        ["+14155550101"],
        "Ann matched her imported contact"
    );
    assert_eq!(contacts.len(), 2);
    // Bo's phone does not parse: kept by its digits, and reported on the field.
    assert_eq!(contacts["2"].phones, ["12"]);
    let errors = crmsync_host::store::ContactStore::open(&config.store_path)
        .unwrap()
        .errors(report.run_id)
        .unwrap();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].record_id.as_deref(), Some("2"));
    assert_eq!(errors[0].field.as_deref(), Some("phone"));
    assert_eq!(errors[0].scope, "field");
}

#[test]
fn without_a_default_region_phones_compare_by_their_digits_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let server = HubSpotServer::start(TOKEN);
    server.state().contacts = vec![
        Contact::new(1, &[("phone", Some("(415) 555-0101"))]),
        Contact::new(2, &[("phone", Some("+1 415-555-0101"))]),
    ];
    let digits = config(dir.path(), &server, "");
    let report = sync(&digits, &live_options()).unwrap();
    assert_eq!(
        report.counts.created, 2,
        "two handles: 4155550101 and +14155550101"
    );
    // With the region, the second is the first's number: phone-taken, not a second person.
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &server, "[matching]\ndefault_region = \"US\"\n");
    let report = sync(&config, &live_options()).unwrap();
    assert_eq!(report.counts.created, 1, "{report:#?}");
    assert_eq!(
        report.errors_by_category.get("phone-taken"),
        Some(&1),
        "{report:#?}"
    );
}

#[test]
fn a_default_region_that_is_no_region_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        "bad",
        "[source]\nsystem = \"hubspot\"\n[matching]\ndefault_region = \"United States\"\n",
    );
    let error = format!("{:#}", Config::load(&path).unwrap_err());
    assert!(error.contains("matching.default_region"), "{error}");
}
