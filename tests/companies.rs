//! Companies (S3) and "contacts of synced companies" (S2, E5) through the
//! real component against the loopback server: accounts matched by id then
//! domain, contacts linked to their primary company's account, associations
//! read at no extra request on the listing and through v4 elsewhere, and a
//! failed company sync stopping the contacts that depend on it.

use crmsync_host::config::Config;
use crmsync_host::store::ContactStore;
use crmsync_tests::hubspot_server::{Contact, Fault, HubSpotServer};
use crmsync_tests::*;
use serde_json::{Value, json};

fn company(id: u64, name: &str, domain: Option<&str>) -> Contact {
    Contact::new(
        id,
        &[
            ("name", Some(name)),
            ("domain", domain),
            ("industry", Some("SOFTWARE")),
        ],
    )
}

fn person(id: u64, email: &str) -> Contact {
    Contact::new(id, &[("firstname", Some("P")), ("email", Some(email))])
}

/// Three companies; contacts 1-2 at Acme (1's primary), 3 at Initech, 4 at
/// Umbrella (a company the filter leaves out), 5 at none.
fn server() -> HubSpotServer {
    let server = HubSpotServer::start(TOKEN);
    {
        let mut state = server.state();
        state.companies = vec![
            company(101, "Acme", Some("https://www.Acme.com/")),
            company(102, "Initech", Some("initech.com")),
            company(103, "Umbrella", Some("umbrella.example")),
        ];
        state.contacts = vec![
            person(1, "ada@acme.com"),
            person(2, "bob@acme.com"),
            person(3, "cy@initech.com"),
            person(4, "dee@umbrella.example"),
            person(5, "eve@example.org"),
        ];
        state.associations = vec![
            (1, 102, false),
            (1, 101, true),
            (2, 101, true),
            (3, 102, true),
            (4, 103, true),
        ];
    }
    server
}

fn config(dir: &std::path::Path, name: &str, server: &HubSpotServer, extra: &str) -> Config {
    config_with(dir, name, server, "", extra)
}

fn config_with(
    dir: &std::path::Path,
    name: &str,
    server: &HubSpotServer,
    source: &str,
    extra: &str,
) -> Config {
    hubspot_config(
        dir,
        name,
        &server.base_url,
        token_env(),
        &format!("rate_limit = \"none\"\nsearch_rate_limit = \"none\"\n{source}"),
        extra,
    )
}

/// Points config `name` (written by [`config_with`]) at `store` instead of its own file.
fn share_store(dir: &std::path::Path, name: &str, store: &str) -> Config {
    let path = dir.join(format!("{name}.toml"));
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace(&format!("{name}.sqlite"), store)).unwrap();
    Config::load(&path).unwrap()
}

const COMPANIES: &str = "[companies]\n[companies.mapping]\nindustry = \"industry\"\n\
    [[companies.filter]]\nfield = \"name\"\nop = \"not_equals\"\nvalue = \"Umbrella\"\n";

fn account_of(config: &Config, external_id: &str) -> Option<String> {
    contacts_by_external_id(config)[external_id]
        .account
        .as_ref()
        .and_then(|a| a.external_id.clone())
}

fn run_json(args: &[&str]) -> Value {
    let (_, out) = crmsync(args).unwrap();
    serde_json::from_str(&out).unwrap()
}

#[test]
fn companies_sync_first_and_contacts_link_to_their_primary_company() {
    let dir = tempfile::tempdir().unwrap();
    let server = server();
    let config = config(dir.path(), "linked", &server, COMPANIES);
    let report = sync(&config, &live_options()).unwrap();

    let companies = report.companies.as_ref().expect("the company part ran");
    assert_eq!(
        (companies.sync.as_str(), companies.status.as_str()),
        ("linked.companies", "completed")
    );
    assert_eq!(companies.counts.created, 2, "Umbrella is filtered out");
    assert_eq!(report.counts.created, 5);

    let path = dir.path().join("linked.toml");
    let accounts = run_json(&["accounts", "--config", path.to_str().unwrap(), "--json"]);
    let summary: Vec<(&str, &str, &Value, u64)> = accounts
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["external_id"].as_str().unwrap(),
                a["name"].as_str().unwrap(),
                &a["domains"],
                a["contacts"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("101", "Acme", &json!(["acme.com"]), 2),
            ("102", "Initech", &json!(["initech.com"]), 1)
        ]
    );
    assert_eq!(accounts[0]["fields"]["industry"], "SOFTWARE");

    assert_eq!(
        account_of(&config, "1").as_deref(),
        Some("101"),
        "primary first"
    );
    assert_eq!(account_of(&config, "2").as_deref(), Some("101"));
    assert_eq!(account_of(&config, "3").as_deref(), Some("102"));
    assert_eq!(
        account_of(&config, "4"),
        None,
        "its company is not synced: unlinked, still syncing"
    );
    assert!(contacts_by_external_id(&config)["4"].syncing);
    assert_eq!(account_of(&config, "5"), None);

    let status = run_json(&["status", "--config", path.to_str().unwrap(), "--json"]);
    assert_eq!(status["records_synced"], 5);
    assert_eq!(status["companies"]["sync"], "linked.companies");
    assert_eq!(status["companies"]["records_synced"], 2);
    assert_eq!(status["companies"]["last_run"]["created"], 2);

    // Associations came with the listing: no v4 request.
    assert!(server.requests_to("/crm/v4/").is_empty());
    let listing = &server.live_pages()[0];
    assert_eq!(listing.query["associations"], "companies");
}

#[test]
fn an_incremental_run_reads_associations_through_v4_and_relinks() {
    let dir = tempfile::tempdir().unwrap();
    let server = server();
    let config = config(dir.path(), "moves", &server, COMPANIES);
    sync(&config, &live_options()).unwrap();

    {
        let mut state = server.state();
        state.associations.retain(|(contact, _, _)| *contact != 2);
        state.associations.push((2, 102, true));
    }
    server.state().put(person(2, "bob@initech.com"));
    let report = sync(&config, &live_options()).unwrap();
    assert_eq!(report.mode, "incremental");
    assert_eq!(account_of(&config, "2").as_deref(), Some("102"));
    let v4 = server.requests_to("/crm/v4/associations/contacts/companies/batch/read");
    assert_eq!(v4.len(), 1, "one association read for the changed page");
}

#[test]
fn a_domain_links_an_existing_account_and_a_taken_domain_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let server = server();
    server
        .state()
        .companies
        .push(company(104, "Acme Duplicate", Some("acme.com")));
    let config = config(dir.path(), "domains", &server, COMPANIES);
    let report = sync(&config, &live_options()).unwrap();
    let companies = report.companies.unwrap();
    assert_eq!(companies.counts.failed, 1);
    assert_eq!(companies.errors_by_category["domain-taken"], 1);
    let path = dir.path().join("domains.toml");
    let errors = run_json(&["errors", "--config", path.to_str().unwrap(), "--json"]);
    let error = errors
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["category"] == "domain-taken")
        .unwrap();
    assert_eq!(error["record_id"], "104");
    assert!(error["resolution"].as_str().unwrap().contains("acme.com"));
}

#[test]
fn contacts_of_synced_companies_are_read_through_their_associations() {
    let dir = tempfile::tempdir().unwrap();
    let server = server();
    let config = config_with(
        dir.path(),
        "members",
        &server,
        "contacts = \"synced_companies\"\n",
        COMPANIES,
    );
    assert_eq!(
        config.source.from_synced_companies.as_deref(),
        Some("members.companies")
    );
    let report = sync(&config, &live_options()).unwrap();

    assert_eq!(report.counts.created, 3, "Acme's two and Initech's one");
    let contacts = contacts_by_external_id(&config);
    assert_eq!(contacts.keys().collect::<Vec<_>>(), ["1", "2", "3"]);
    assert_eq!(account_of(&config, "1").as_deref(), Some("101"));
    assert_eq!(account_of(&config, "3").as_deref(), Some("102"));
    assert!(server.live_pages().is_empty(), "no contact listing");
    let v4 = server.requests_to("/crm/v4/associations/companies/contacts/batch/read");
    let asked: Value = serde_json::from_str(&v4[0].body).unwrap();
    assert_eq!(asked["inputs"], json!([{"id": "101"}, {"id": "102"}]));

    // A contact leaving its company stops syncing at the next run.
    server
        .state()
        .associations
        .retain(|(contact, _, _)| *contact != 2);
    let report = sync(&config, &live_options()).unwrap();
    assert_eq!(report.mode, "full");
    assert_eq!(report.stopped_syncing, 1);
    assert!(!contacts_by_external_id(&config)["2"].syncing);
}

#[test]
fn a_failed_company_sync_stops_the_contacts_that_depend_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = server();
    let config = config_with(
        dir.path(),
        "dependent",
        &server,
        "contacts = \"synced_companies\"\n",
        COMPANIES,
    );
    let path = dir.path().join("dependent.toml");
    server.state().faults.push_back(Fault {
        path_prefix: "/crm/v3/objects/companies".into(),
        status: 403,
        headers: vec![],
        body: json!({"status": "error", "category": "MISSING_SCOPES",
                     "message": "This app hasn't been granted all required scopes to make this call.",
                     "errors": [{"message": "One or more of the following scopes are required.",
                                 "context": {"requiredGranularScopes": ["crm.objects.companies.read"]}}]})
        .to_string(),
    });
    let (exit, out) = crmsync(&[
        "sync",
        "--config",
        path.to_str().unwrap(),
        "--component",
        component_path().to_str().unwrap(),
    ])
    .unwrap();
    assert_eq!(exit, crmsync_host::cli::Exit::SyncFailed);
    assert!(out.contains("dependent.companies"), "{out}");

    let store = ContactStore::open(&config.store_path).unwrap();
    let run = &store.runs("dependent").unwrap()[0];
    assert_eq!(run.status, "failed");
    assert_eq!(run.counts.seen, 0, "no contact was read");
    assert!(server.requests_to("/crm/v4/").is_empty());

    let errors = run_json(&["errors", "--config", path.to_str().unwrap(), "--json"]);
    let categories: Vec<&str> = errors
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["category"].as_str().unwrap())
        .collect();
    assert_eq!(categories, ["permission-denied", "dependency-failed"]);
    let e5 = &errors[1];
    assert!(
        e5["resolution"]
            .as_str()
            .unwrap()
            .contains("dependent.companies")
    );
    assert!(
        e5["resolution"]
            .as_str()
            .unwrap()
            .contains("crmsync errors")
    );

    // Once the company sync works, the contacts follow.
    let report = sync(&config, &live_options()).unwrap();
    assert_eq!(report.status, "completed");
    assert_eq!(report.counts.created, 3);
}

#[test]
fn a_company_sync_of_its_own_feeds_another_configs_contacts() {
    let dir = tempfile::tempdir().unwrap();
    let server = server();
    config_with(
        dir.path(),
        "crm-companies",
        &server,
        "object = \"companies\"\n",
        "[mapping]\nindustry = \"industry\"\n",
    );
    let companies = share_store(dir.path(), "crm-companies", "shared.sqlite");
    config_with(
        dir.path(),
        "crm-contacts",
        &server,
        "contacts = \"synced_companies\"\ncompanies_sync = \"crm-companies\"\n",
        "",
    );
    let contacts = share_store(dir.path(), "crm-contacts", "shared.sqlite");

    // Before the company sync ever ran, the contacts cannot.
    let early = sync(&contacts, &live_options()).unwrap();
    assert_eq!(early.error.unwrap().category, "dependency-failed");

    let report = sync(&companies, &live_options()).unwrap();
    assert_eq!(report.counts.created, 3);
    let report = sync(&contacts, &live_options()).unwrap();
    assert_eq!(report.counts.created, 4, "every company's contacts");
    assert_eq!(account_of(&contacts, "4").as_deref(), Some("103"));
}

#[test]
fn the_bundled_companies_cassette_replays_into_linked_accounts() {
    let dir = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string(workspace().join("examples/companies.toml")).unwrap();
    let path = dir.path().join("companies.toml");
    std::fs::write(
        &path,
        example.replace("../target/demo/companies.sqlite", "replayed.sqlite"),
    )
    .unwrap();
    let cassette = workspace().join("fixtures/hubspot/companies.json");
    let (exit, out) = crmsync(&[
        "sync",
        "--config",
        path.to_str().unwrap(),
        "--replay",
        cassette.to_str().unwrap(),
        "--component",
        component_path().to_str().unwrap(),
    ])
    .unwrap();
    assert_eq!(exit, crmsync_host::cli::Exit::Success, "{out}");

    let accounts = run_json(&["accounts", "--config", path.to_str().unwrap(), "--json"]);
    let names: Vec<(&str, &Value, &Value)> = accounts
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["external_id"].as_str().unwrap(),
                &a["domains"],
                &a["fields"],
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            (
                "9001",
                &json!(["acme.example", "acme.io"]),
                &json!({"industry": "COMPUTER_SOFTWARE", "employees": 250.0})
            ),
            (
                "9002",
                &json!(["globex.example"]),
                &json!({"industry": "FINANCIAL_SERVICES", "employees": 12000.0})
            ),
            (
                "9003",
                &json!([]),
                &json!({"industry": "COMPUTER_SOFTWARE", "employees": 80.0})
            ),
        ]
    );
    let config = Config::load(&path).unwrap();
    let links: Vec<(String, Option<String>)> = contacts_by_external_id(&config)
        .into_iter()
        .map(|(id, c)| (id, c.account.and_then(|a| a.external_id)))
        .collect();
    let expected: Vec<(String, Option<String>)> = [
        ("201", "9001"),
        ("202", "9001"),
        ("203", "9002"),
        ("204", "9003"),
    ]
    .iter()
    .map(|(c, a)| (c.to_string(), Some(a.to_string())))
    .collect();
    assert_eq!(links, expected);
    let errors = run_json(&["errors", "--config", path.to_str().unwrap(), "--json"]);
    assert_eq!(errors[0]["category"], "domain-taken");
    assert_eq!(errors[0]["record_id"], "9004");
}
