//! The `crmsync` command line as an operator uses it: bundled cassettes,
//! recording, JSON output shapes, config errors.

use crmsync_host::cli::Exit;
use crmsync_tests::hubspot_server::{Contact, HubSpotServer};
use crmsync_tests::*;
use serde_json::Value;
use std::path::Path;

fn fixture(name: &str) -> String {
    workspace()
        .join("fixtures")
        .join("hubspot")
        .join(name)
        .display()
        .to_string()
}

fn run_json(args: &[&str]) -> Value {
    let (exit, out) = crmsync(args).unwrap();
    assert_eq!(exit, Exit::Success);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn replay_config(dir: &Path, name: &str, source_extra: &str) -> String {
    write_config(
        dir,
        name,
        &format!("[source]\nsystem = \"hubspot\"\n{source_extra}\n"),
    )
    .display()
    .to_string()
}

#[test]
fn the_bundled_cassette_replays_with_every_tricky_record_handled() {
    let dir = tempfile::tempdir().unwrap();
    let config = replay_config(dir.path(), "demo", "");
    let component = component_path().display().to_string();
    let sync_args = [
        "sync",
        "--config",
        &config,
        "--component",
        &component,
        "--replay",
        &fixture("contacts.json"),
    ];

    let (exit, summary) = crmsync(&sync_args).unwrap();

    assert_eq!(exit, Exit::Success);
    assert!(
        summary.contains("seen 10  created 7  updated 0  skipped 0  failed 3"),
        "{summary}"
    );
    assert!(
        summary.contains("email-taken")
            && summary.contains("missing-handle")
            && summary.contains("phone-taken")
    );

    let contacts = run_json(&["contacts", "--config", &config, "--json"]);
    let contacts = contacts.as_array().unwrap();
    let by_id = |id: &str| {
        contacts
            .iter()
            .find(|c| c["external_id"] == id)
            .unwrap_or_else(|| panic!("{id} missing"))
    };
    assert_eq!(
        by_id("102")["emails"],
        serde_json::json!([
            "grace.hopper@example.com",
            "grace@navy.example",
            "ghopper@example.org"
        ])
    );
    assert_eq!(by_id("102")["phones"], serde_json::json!(["+12125550142"]));
    assert_eq!(by_id("103")["emails"], serde_json::json!([]));
    assert_eq!(
        by_id("109")["phones"],
        serde_json::json!(["+17575550199"]),
        "the same phone twice is kept once"
    );
    assert_eq!(by_id("110")["name"], Value::Null);
    assert_eq!(
        by_id("107")["name"],
        "Robert'); DROP TABLE contacts;-- \u{202e}evil\u{0} 🙂 \"quoted\""
    );
    for c in contacts {
        for key in ["external_id", "name", "emails", "phones", "fields"] {
            assert!(c.get(key).is_some(), "contacts --json lacks {key}");
        }
    }

    let errors = run_json(&["errors", "--config", &config, "--json"]);
    let mut categories: Vec<(String, String)> = errors
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["record_id"].as_str().unwrap().to_owned(),
                e["category"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    categories.sort();
    assert_eq!(
        categories,
        [
            ("104".into(), "missing-handle".into()),
            ("105".into(), "email-taken".into()),
            ("106".into(), "phone-taken".into())
        ]
    );
    assert!(errors[0]["message"].as_str().is_some() && errors[0]["resolution"].as_str().is_some());

    // A second pass over the same cassette changes nothing (X7).
    let again = run_json(&[&sync_args[..], &["--json"]].concat());
    assert_eq!(
        (
            again["created"].as_u64(),
            again["updated"].as_u64(),
            again["skipped"].as_u64()
        ),
        (Some(0), Some(0), Some(7))
    );

    let runs = run_json(&["runs", "--config", &config, "--json"]);
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 2);
    for key in [
        "started_at",
        "ended_at",
        "seen",
        "created",
        "updated",
        "skipped",
        "failed",
    ] {
        assert!(runs[0].get(key).is_some(), "runs --json lacks {key}");
    }
    assert_eq!(runs[1]["created"], 7);
}

/// A store the last landed release wrote (schema 8, `fixtures/stores/`:
/// the bundled cassette replayed by commit 98bc0f3) opens in this one,
/// migrates to the current schema, keeps every contact and syncs on
/// without making anyone twice (issue 15, item 7).
#[test]
fn a_store_written_by_the_last_release_opens_and_syncs_on() {
    let dir = tempfile::tempdir().unwrap();
    let config = replay_config(dir.path(), "demo", "");
    std::fs::copy(
        workspace().join("fixtures/stores/schema-8-demo.sqlite"),
        dir.path().join("demo.sqlite"),
    )
    .unwrap();

    let contacts = run_json(&["contacts", "--config", &config, "--json"]);
    let contacts = contacts.as_array().unwrap();
    assert_eq!(contacts.len(), 7, "{contacts:?}");
    let grace = contacts.iter().find(|c| c["external_id"] == "102").unwrap();
    assert_eq!(grace["phones"], serde_json::json!(["+12125550142"]));

    let component = component_path().display().to_string();
    let again = run_json(&[
        "sync",
        "--config",
        &config,
        "--component",
        &component,
        "--replay",
        &fixture("contacts.json"),
        "--json",
    ]);
    assert_eq!(
        (again["created"].as_u64(), again["updated"].as_u64()),
        (Some(0), Some(0)),
        "{again}"
    );
    let runs = run_json(&["runs", "--config", &config, "--json"]);
    assert_eq!(runs.as_array().unwrap().len(), 2, "{runs}");
    assert_eq!(
        run_json(&["contacts", "--config", &config, "--json"])
            .as_array()
            .unwrap()
            .len(),
        7
    );
}

#[test]
fn the_list_cassette_replays_members_only() {
    let dir = tempfile::tempdir().unwrap();
    let config = replay_config(dir.path(), "list", "list_id = \"42\"");
    let component = component_path().display().to_string();
    let report = run_json(&[
        "sync",
        "--config",
        &config,
        "--component",
        &component,
        "--replay",
        &fixture("list-42.json"),
        "--json",
    ]);
    assert_eq!(report["created"], 3);
    let contacts = run_json(&["contacts", "--config", &config, "--json"]);
    let ids: Vec<&str> = contacts
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["external_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["101", "103", "109"]);
}

#[test]
fn a_recorded_live_run_replays_to_the_same_contacts_and_holds_no_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = HubSpotServer::start(TOKEN);
    server.state().contacts = (1..=15)
        .map(|i| {
            Contact::new(
                i,
                &[
                    ("firstname", Some("R")),
                    ("email", Some(&format!("r{i}@example.com"))),
                ],
            )
        })
        .collect();
    server.state().page_size = Some(4);
    let live = write_config(
        dir.path(),
        "live",
        &format!(
            "[source]\nsystem = \"hubspot\"\nbase_url = \"{}\"\ntoken_env = \"{}\"\n",
            server.base_url,
            token_env()
        ),
    );
    let cassette = dir.path().join("recorded.json");
    let component = component_path().display().to_string();
    let (exit, _) = crmsync(&[
        "sync",
        "--config",
        live.to_str().unwrap(),
        "--component",
        &component,
        "--record",
        cassette.to_str().unwrap(),
    ])
    .unwrap();
    assert_eq!(exit, Exit::Success);
    let recorded = std::fs::read_to_string(&cassette).unwrap();
    assert!(!recorded.contains(TOKEN), "the cassette holds the token");
    drop(server);

    let replay = replay_config(dir.path(), "replayed", "");
    let report = run_json(&[
        "sync",
        "--config",
        &replay,
        "--component",
        &component,
        "--replay",
        cassette.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(report["created"], 15);
    let strip = |v: Value| -> Vec<(Value, Value)> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|c| (c["external_id"].clone(), c["emails"].clone()))
            .collect()
    };
    assert_eq!(
        strip(run_json(&["contacts", "--config", &replay, "--json"])),
        strip(run_json(&[
            "contacts",
            "--config",
            live.to_str().unwrap(),
            "--json"
        ]))
    );
}

#[test]
fn a_bad_config_is_one_error_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[source]\nsystem = \"hubspot\"\nlist = \"1\"\n", "list"),
        ("[source]\nsystem = \"pipedrive\"\n", "source.system"),
        ("[source]\nsystem = \"salesforce\"\n", "source.base_url"),
        (
            "[source]\nsystem = \"hubspot\"\nbase_url = \"api.hubapi.com\"\n",
            "source.base_url",
        ),
        (
            "[source]\nsystem = \"hubspot\"\n[store]\npath = \"\"\n",
            "store.path",
        ),
        (
            "[source]\nsystem = \"hubspot\"\n[mapping]\nfirstname = 3\n",
            "mapping",
        ),
    ];
    for (i, (text, key)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let error = crmsync(&["runs", "--config", path.to_str().unwrap()]).unwrap_err();
        let message = format!("{error:#}");
        assert!(message.contains(key), "{text:?}: {message}");
        assert!(
            message.contains(&format!("bad{i}.toml")),
            "the file is named: {message}"
        );
    }
}

#[test]
fn a_missing_token_variable_is_a_clear_fatal_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "notoken",
        "[source]\nsystem = \"hubspot\"\nbase_url = \"http://127.0.0.1:9\"\ntoken_env = \"CRMSYNC_TEST_UNSET_VARIABLE\"\n",
    );
    let component = component_path().display().to_string();
    let error = crmsync(&[
        "sync",
        "--config",
        config.to_str().unwrap(),
        "--component",
        &component,
    ])
    .unwrap_err();
    assert_eq!(
        format!("{error:#}"),
        "source.token_env: environment variable CRMSYNC_TEST_UNSET_VARIABLE is not set"
    );
}

#[test]
fn a_sync_stopped_by_a_sync_level_error_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let server = HubSpotServer::start(TOKEN);
    let config = write_config(
        dir.path(),
        "gone",
        &format!(
            "[source]\nsystem = \"hubspot\"\nbase_url = \"{}\"\ntoken_env = \"{}\"\nlist_id = \"5\"\n",
            server.base_url,
            token_env()
        ),
    );
    let component = component_path().display().to_string();
    let (exit, out) = crmsync(&[
        "sync",
        "--config",
        config.to_str().unwrap(),
        "--component",
        &component,
    ])
    .unwrap();
    assert_eq!(exit, Exit::SyncFailed);
    assert!(out.contains("stopped: [list-not-found]"), "{out}");
    let errors = run_json(&["errors", "--config", config.to_str().unwrap(), "--json"]);
    assert_eq!(errors[0]["category"], "list-not-found");
    assert_eq!(errors[0]["record_id"], Value::Null);
}

#[test]
fn fields_lists_the_source_catalogue_with_the_current_mapping() {
    let dir = tempfile::tempdir().unwrap();
    let server = HubSpotServer::start(TOKEN);
    server.state().deleted_properties.push("company".into());
    let config = write_config(
        dir.path(),
        "fields",
        &format!(
            "[source]\nsystem = \"hubspot\"\nbase_url = \"{}\"\ntoken_env = \"{}\"\nproperties = [\"firstname\", \"email\", \"jobtitle\", \"company\"]\n[mapping]\njobtitle = \"title\"\n",
            server.base_url,
            token_env()
        ),
    );
    let component = component_path().display().to_string();
    let fields = run_json(&[
        "fields",
        "--config",
        config.to_str().unwrap(),
        "--component",
        &component,
        "--json",
    ]);

    let field = |name: &str| {
        fields
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing: {fields}"))
            .clone()
    };
    assert_eq!(field("email")["mapped_to"], "email");
    assert_eq!(field("firstname")["mapped_to"], "first_name");
    assert_eq!(field("jobtitle")["mapped_to"], "title");
    assert_eq!(field("lastmodifieddate")["mapped_to"], Value::Null);
    assert_eq!(field("lastmodifieddate")["exists"], true);
    // Mapped but deleted at the source: listed, flagged (E6).
    assert_eq!(field("company")["exists"], false);
    assert_eq!(field("company")["mapped_to"], "company");
    // The catalogue request carried the host's credentials, not the component's.
    let catalogue = server.requests_to("/crm/v3/properties/contacts");
    assert_eq!(catalogue.len(), 1);
    assert_eq!(
        catalogue[0].authorization.as_deref(),
        Some(format!("Bearer {TOKEN}").as_str())
    );
}

#[test]
fn fields_lists_the_company_part_with_declared_types() {
    let dir = tempfile::tempdir().unwrap();
    let server = HubSpotServer::start(TOKEN);
    let config = write_config(
        dir.path(),
        "company-fields",
        &format!(
            "[source]\nsystem = \"hubspot\"\nbase_url = \"{}\"\ntoken_env = \"{}\"\n\
             [companies.mapping]\nindustry = {{ field = \"industry\", type = \"picklist\", options = [\"TECH\"] }}\n",
            server.base_url,
            token_env()
        ),
    );
    let component = component_path().display().to_string();
    let fields = run_json(&[
        "fields",
        "--config",
        config.to_str().unwrap(),
        "--component",
        &component,
        "--json",
        "--companies",
    ]);
    let mapped: Vec<(&str, &str)> = fields
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| Some((f["name"].as_str()?, f["mapped_to"].as_str()?)))
        .collect();
    assert_eq!(
        mapped,
        [
            ("domain", "domain"),
            ("hs_additional_domains", "domain"),
            ("industry", "industry (picklist)"),
            ("name", "name")
        ]
    );
    assert_eq!(server.requests_to("/crm/v3/properties/companies").len(), 1);
}

#[test]
fn every_example_config_loads() {
    let mut loaded = 0;
    for entry in std::fs::read_dir(workspace().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            crmsync_host::config::Config::load(&path)
                .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            loaded += 1;
        }
    }
    assert!(loaded >= 3, "examples/ holds the documented configs");
}

/// The README's minimal config is one the runner takes as it is.
#[test]
fn the_readmes_minimal_config_loads() {
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let after = &readme[readme
        .find("A minimal sync")
        .expect("the README's minimal config")..];
    let start = after.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let toml = &after[start..start + after[start..].find("```").unwrap()];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hubspot.toml");
    std::fs::write(&path, toml).unwrap();
    let config = crmsync_host::config::Config::load(&path).unwrap();
    assert_eq!(config.name, "hubspot");
    assert_eq!(config.source.base_url, "https://api.hubapi.com");
}

/// Runner identity: every API request says which crmsync and which runner
/// sent it (so the CRM's audit log does too), and the run records its runner.
#[test]
fn a_runner_names_itself_in_every_request_and_on_its_runs() {
    let dir = tempfile::tempdir().unwrap();
    let server = HubSpotServer::start(TOKEN);
    server.state().contacts = (1..=3)
        .map(|i| Contact::new(i, &[("email", Some(&format!("r{i}@example.com")))]))
        .collect();
    let path = write_config(
        dir.path(),
        "runner",
        &format!(
            "[source]\nsystem = \"hubspot\"\nbase_url = \"{}\"\ntoken_env = \"{}\"\n",
            server.base_url,
            token_env()
        ),
    );
    let path = path.to_str().unwrap();
    run_json(&["sync", "--config", path, "--json", "--runner-id", "edge-7"]);
    let expected = format!("crmsync/{} runner/edge-7", env!("CARGO_PKG_VERSION"));
    let seen = server.state().seen.clone();
    assert!(!seen.is_empty());
    for request in &seen {
        assert_eq!(
            request.user_agent.as_deref(),
            Some(expected.as_str()),
            "{}",
            request.path
        );
    }
    let runs = run_json(&["runs", "--config", path, "--json"]);
    assert_eq!(runs[0]["runner"], "edge-7", "{runs}");
    let (_, human) = crmsync(&["runs", "--config", path]).unwrap();
    assert!(human.contains("  by edge-7"), "{human}");
}
