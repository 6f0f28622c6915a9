//! Syncs into a CRM and two-way HubSpot <-> Salesforce syncs (M6, X8, E9,
//! R6), through the real component against both loopback servers: edits on
//! both sides converge, each conflict rule picks its side, the sync's own
//! writes are not echoed back, a rejected record is named while the rest of
//! its batch lands, and a converted Lead keeps its one HubSpot contact.

use crmsync_host::config::Config;
use crmsync_host::store::{ContactStore, LinkSide};
use crmsync_host::sync::{SyncOptions, SyncReport};
use crmsync_tests::hubspot_server::{Contact, HubSpotServer};
use crmsync_tests::salesforce_server::{Record, SalesforceServer};
use crmsync_tests::*;
use serde_json::{Value, json};

fn config(
    dir: &std::path::Path,
    name: &str,
    hubspot: &HubSpotServer,
    salesforce: &SalesforceServer,
    destination: &str,
    mapping: &str,
) -> Config {
    let path = write_config(
        dir,
        name,
        &format!(
            "[source]\nsystem = \"hubspot\"\nbase_url = \"{}\"\ntoken_env = \"{}\"\nlookback = \"0s\"\n\
             [destination]\nsystem = \"salesforce\"\nbase_url = \"{}\"\ntoken_env = \"{}\"\n{destination}\n\
             [mapping]\n{mapping}\n",
            hubspot.base_url,
            token_env(),
            salesforce.instance_url,
            token_env()
        ),
    );
    Config::load(&path).unwrap()
}

fn servers() -> (HubSpotServer, SalesforceServer) {
    (HubSpotServer::start(TOKEN), SalesforceServer::start(TOKEN))
}

fn hubspot_contact(id: u64, props: &[(&str, &str)]) -> Contact {
    let props: Vec<(&str, Option<&str>)> = props.iter().map(|(k, v)| (*k, Some(*v))).collect();
    Contact::new(id, &props).modified_at(now_ms())
}

fn now_ms() -> u64 {
    crmsync_tests::hubspot_server::now_ms()
}

fn person(id: &str, fields: &[(&str, &str)]) -> Record {
    let fields: Vec<(&str, Value)> = fields.iter().map(|(k, v)| (*k, json!(v))).collect();
    Record::new(id, &fields, now_ms())
}

fn run(config: &Config) -> SyncReport {
    let report = sync(config, &live_options()).unwrap();
    assert_eq!(report.status, "completed", "{report:#?}");
    report
}

/// Writes a run made to each side: (to Salesforce, to HubSpot).
fn writes(report: &SyncReport) -> (u64, u64) {
    let written = report.written.as_ref().expect("a sync into a CRM");
    (
        written.to_destination.created + written.to_destination.updated,
        written.to_source.created + written.to_source.updated,
    )
}

fn hubspot_value(server: &HubSpotServer, email: &str, property: &str) -> Option<String> {
    server
        .state()
        .by_email(email)
        .unwrap_or_else(|| panic!("HubSpot holds {email}"))
        .properties
        .get(property)
        .cloned()
        .flatten()
}

fn salesforce_value(server: &SalesforceServer, email: &str, field: &str) -> Option<String> {
    server
        .state()
        .person_by_email(email)
        .unwrap_or_else(|| panic!("Salesforce holds {email}"))
        .fields
        .get(field)
        .and_then(|v| v.as_str().map(str::to_owned))
}

/// The ids of every live Salesforce person (unconverted Leads and Contacts).
fn salesforce_people(server: &SalesforceServer) -> Vec<String> {
    let state = server.state();
    state
        .leads
        .iter()
        .filter(|l| l.fields.get("IsConverted") != Some(&json!(true)))
        .chain(&state.contacts)
        .map(|r| r.id.clone())
        .collect()
}

const BOTH: &str = "direction = \"both\"";

#[test]
fn a_two_way_sync_converges_after_edits_on_both_sides_without_echoes_or_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let (hubspot, salesforce) = servers();
    {
        let mut hs = hubspot.state();
        hs.put(hubspot_contact(
            1,
            &[
                ("firstname", "Ann"),
                ("lastname", "Ames"),
                ("email", "ann@acme.io"),
                ("jobtitle", "CTO"),
            ],
        ));
        hs.put(hubspot_contact(
            2,
            &[
                ("firstname", "Bo"),
                ("lastname", "Berg"),
                ("email", "bo@beta.io"),
                ("company", "Beta"),
            ],
        ));
        let mut sf = salesforce.state();
        sf.contacts.push(person(
            "003A",
            &[
                ("FirstName", "Ann"),
                ("LastName", "Ames"),
                ("Email", "ann@acme.io"),
                ("Title", "VP"),
            ],
        ));
        sf.leads.push(person(
            "00QC",
            &[
                ("FirstName", "Cy"),
                ("LastName", "Cole"),
                ("Email", "cy@cole.io"),
                ("Company", "Cole"),
                ("IsConverted", "false"),
            ],
        ));
    }
    let config = config(dir.path(), "both", &hubspot, &salesforce, BOTH, "");

    // First run: Ann is matched by email (Salesforce's title wins: the
    // default "prefer Salesforce unless blank"); Bo becomes a Lead; Cy a
    // HubSpot contact.
    let first = run(&config);
    assert_eq!(first.mode, "full");
    // Cy's new HubSpot contact was made, not read, by this full run: it syncs.
    assert_eq!(first.stopped_syncing, 0, "{first:#?}");
    assert_eq!(
        hubspot_value(&hubspot, "ann@acme.io", "jobtitle").as_deref(),
        Some("VP")
    );
    assert_eq!(
        salesforce_value(&salesforce, "bo@beta.io", "Company").as_deref(),
        Some("Beta")
    );
    assert!(
        salesforce
            .state()
            .person_by_email("bo@beta.io")
            .unwrap()
            .id
            .starts_with("00Q")
    );
    assert_eq!(
        hubspot_value(&hubspot, "cy@cole.io", "lastname").as_deref(),
        Some("Cole")
    );
    assert_eq!(
        hubspot_value(&hubspot, "cy@cole.io", "company").as_deref(),
        Some("Cole")
    );
    assert_eq!(hubspot.state().contacts.len(), 3);
    assert_eq!(salesforce_people(&salesforce).len(), 3);

    // Second run, nothing edited: it reads back its own writes (newer than
    // its bookmark) and writes nothing — no echo.
    let (hs_writes, sf_writes) = (hubspot.state().writes, salesforce.state().writes);
    let second = run(&config);
    assert_eq!(second.mode, "incremental");
    assert!(second.counts.seen >= 3, "the echoes were read: {second:#?}");
    assert_eq!(writes(&second), (0, 0), "{second:#?}");
    assert_eq!(
        (hubspot.state().writes, salesforce.state().writes),
        (hs_writes, sf_writes)
    );

    // Edits on both sides: a phone in HubSpot, a title in Salesforce, and
    // Bo's title on both (Salesforce's wins).
    let bo_lead = salesforce
        .state()
        .person_by_email("bo@beta.io")
        .unwrap()
        .id
        .clone();
    hubspot.state().edit(1, &[("phone", Some("+1 555 0100"))]);
    hubspot.state().edit(2, &[("jobtitle", Some("Founder"))]);
    let cy_contact = hubspot.state().by_email("cy@cole.io").unwrap().id;
    {
        let now = salesforce.state().tick();
        salesforce
            .state()
            .edit("Lead", "00QC", &[("Title", json!("Boss"))], now);
        salesforce
            .state()
            .edit("Lead", &bo_lead, &[("Title", json!("CEO"))], now);
    }
    let third = run(&config);
    assert_eq!(writes(&third), (1, 2), "{third:#?}");
    assert_eq!(
        salesforce_value(&salesforce, "ann@acme.io", "Phone").as_deref(),
        Some("+1 555 0100")
    );
    assert_eq!(
        hubspot_value(&hubspot, "cy@cole.io", "jobtitle").as_deref(),
        Some("Boss")
    );
    assert_eq!(
        hubspot_value(&hubspot, "bo@beta.io", "jobtitle").as_deref(),
        Some("CEO")
    );
    assert_eq!(
        salesforce_value(&salesforce, "bo@beta.io", "Title").as_deref(),
        Some("CEO")
    );

    // Converged: another run writes nothing, and both sides agree.
    let fourth = run(&config);
    assert_eq!(writes(&fourth), (0, 0), "{fourth:#?}");
    for email in ["ann@acme.io", "bo@beta.io", "cy@cole.io"] {
        for (property, field) in [
            ("firstname", "FirstName"),
            ("lastname", "LastName"),
            ("jobtitle", "Title"),
            ("phone", "Phone"),
        ] {
            assert_eq!(
                hubspot_value(&hubspot, email, property),
                salesforce_value(&salesforce, email, field),
                "{email} {property}"
            );
        }
    }
    assert_eq!(hubspot.state().contacts.len(), 3, "no duplicates");
    assert_eq!(salesforce_people(&salesforce).len(), 3, "no duplicates");

    // Cy's Lead is converted: the link follows it to the new Contact, and a
    // later edit of the Contact updates Cy's one HubSpot contact (X8).
    let cy = salesforce.state().convert_lead("00QC");
    let converted = run(&config);
    assert_eq!(converted.merged, 1, "{converted:#?}");
    assert_eq!(writes(&converted), (0, 0), "{converted:#?}");
    {
        let now = salesforce.state().tick();
        salesforce
            .state()
            .edit("Contact", &cy, &[("Title", json!("Chair"))], now);
    }
    let after = run(&config);
    assert_eq!(writes(&after), (0, 1), "{after:#?}");
    assert_eq!(
        hubspot.state().contacts.len(),
        3,
        "the conversion made no second contact"
    );
    assert_eq!(
        hubspot.state().by_email("cy@cole.io").unwrap().id,
        cy_contact
    );
    assert_eq!(
        hubspot_value(&hubspot, "cy@cole.io", "jobtitle").as_deref(),
        Some("Chair")
    );
    let store = ContactStore::open(&config.store_path).unwrap();
    let link = store
        .link("both", LinkSide::Destination, &cy)
        .unwrap()
        .unwrap();
    assert_eq!(
        link.source_id.as_deref(),
        Some(cy_contact.to_string().as_str())
    );
    assert_eq!(link.destination_kind.as_deref(), Some("contact"));
}

#[test]
fn each_conflict_rule_resolves_its_field() {
    let dir = tempfile::tempdir().unwrap();
    let (hubspot, salesforce) = servers();
    {
        let mut hs = hubspot.state();
        hs.put(hubspot_contact(
            1,
            &[
                ("firstname", "Ann"),
                ("lastname", "Ames"),
                ("email", "ann@acme.io"),
                ("jobtitle", "CTO"),
                ("phone", "+1 1"),
                ("mobilephone", "+1 2"),
                ("company", "Acme"),
            ],
        ));
        let mut sf = salesforce.state();
        sf.leads.push(person(
            "00QA",
            &[
                ("FirstName", "Ann"),
                ("LastName", "Ames"),
                ("Email", "ann@acme.io"),
                ("Title", "CTO"),
                ("Phone", "+1 1"),
                ("MobilePhone", "+1 2"),
                ("Company", "Acme"),
                ("IsConverted", "false"),
            ],
        ));
    }
    let config = config(
        dir.path(),
        "rules",
        &hubspot,
        &salesforce,
        BOTH,
        "jobtitle = { field = \"Title\", conflict = \"hubspot_wins\" }\n\
         phone = { field = \"Phone\", conflict = \"salesforce_wins\" }\n\
         firstname = { field = \"FirstName\", conflict = \"most_recent\" }\n\
         mobilephone = { field = \"MobilePhone\", conflict = \"prefer_salesforce_unless_blank\" }\n\
         company = { field = \"Company\", conflict = \"prefer_salesforce_unless_blank\" }\n",
    );
    let first = run(&config);
    assert_eq!(
        writes(&first),
        (0, 0),
        "equal records only link: {first:#?}"
    );

    // Both sides change every field; Salesforce's edit is the later one.
    hubspot.state().edit(
        1,
        &[
            ("jobtitle", Some("HS title")),
            ("phone", Some("+1 100")),
            ("firstname", Some("Annie")),
            ("mobilephone", Some("+1 200")),
            ("company", Some("HS Co")),
        ],
    );
    std::thread::sleep(std::time::Duration::from_millis(5));
    {
        let now = salesforce.state().tick();
        salesforce.state().edit(
            "Lead",
            "00QA",
            &[
                ("Title", json!("SF title")),
                ("Phone", json!("+1 300")),
                ("FirstName", json!("Anna")),
                ("MobilePhone", Value::Null),
                ("Company", json!("SF Co")),
            ],
            now,
        );
    }
    let second = run(&config);
    assert_eq!(writes(&second), (1, 1), "one update each way: {second:#?}");
    let both = |property: &str, field: &str| {
        let hs = hubspot_value(&hubspot, "ann@acme.io", property);
        assert_eq!(
            hs,
            salesforce_value(&salesforce, "ann@acme.io", field),
            "{property} agrees"
        );
        hs
    };
    assert_eq!(
        both("jobtitle", "Title").as_deref(),
        Some("HS title"),
        "hubspot_wins"
    );
    assert_eq!(
        both("phone", "Phone").as_deref(),
        Some("+1 300"),
        "salesforce_wins"
    );
    assert_eq!(
        both("firstname", "FirstName").as_deref(),
        Some("Anna"),
        "most_recent"
    );
    assert_eq!(
        both("mobilephone", "MobilePhone").as_deref(),
        Some("+1 200"),
        "prefer Salesforce, which is blank"
    );
    assert_eq!(
        both("company", "Company").as_deref(),
        Some("SF Co"),
        "prefer Salesforce"
    );
    let third = run(&config);
    assert_eq!(writes(&third), (0, 0), "{third:#?}");
}

#[test]
fn a_rejected_record_is_named_and_the_rest_of_its_batch_lands() {
    let dir = tempfile::tempdir().unwrap();
    let (hubspot, salesforce) = servers();
    {
        let mut hs = hubspot.state();
        for (id, email, company) in [(1, "a@x.io", "A"), (2, "b@x.io", ""), (3, "c@x.io", "C")] {
            let mut props = vec![("lastname", "Li"), ("email", email)];
            if !company.is_empty() {
                props.push(("company", company));
            }
            hs.put(hubspot_contact(id, &props));
        }
    }
    // One-way (the default direction): HubSpot contacts become Leads.
    let config = config(dir.path(), "oneway", &hubspot, &salesforce, "", "");
    let report = run(&config);
    assert_eq!(writes(&report), (2, 0), "{report:#?}");
    assert_eq!(report.counts.failed, 1);
    let posts: Vec<_> = salesforce
        .state()
        .seen
        .iter()
        .filter(|s| s.method == "POST" && s.path.ends_with("/composite/sobjects"))
        .map(|s| serde_json::from_str::<Value>(&s.body).unwrap())
        .collect();
    assert_eq!(posts.len(), 1, "one collection request for the batch");
    assert_eq!(posts[0]["records"].as_array().unwrap().len(), 3);
    assert_eq!(posts[0]["allOrNone"], json!(false));
    assert!(salesforce.state().person_by_email("a@x.io").is_some());
    assert!(salesforce.state().person_by_email("c@x.io").is_some());
    assert!(salesforce.state().person_by_email("b@x.io").is_none());
    let store = ContactStore::open(&config.store_path).unwrap();
    let errors = store.errors(report.run_id).unwrap();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].category, "validation");
    assert_eq!(errors[0].record_id.as_deref(), Some("2"));
    assert_eq!(errors[0].field.as_deref(), Some("Company"));
    assert!(
        errors[0].message.contains("REQUIRED_FIELD_MISSING"),
        "{}",
        errors[0].message
    );
    // One-way: Salesforce is not read back, and nothing flows to HubSpot.
    let again = run(&config);
    assert_eq!(writes(&again), (0, 0), "{again:#?}");
    assert!(
        !salesforce
            .queries()
            .iter()
            .any(|q| q.contains("SystemModstamp >="))
    );
}

#[test]
fn salesforce_into_hubspot_names_a_rejected_email_and_keeps_one_contact_through_conversion() {
    let dir = tempfile::tempdir().unwrap();
    let (hubspot, salesforce) = servers();
    {
        let mut sf = salesforce.state();
        sf.leads.push(person(
            "00Q1",
            &[
                ("LastName", "One"),
                ("Email", "one@x.io"),
                ("Company", "X"),
                ("IsConverted", "false"),
            ],
        ));
        sf.leads.push(person(
            "00Q2",
            &[
                ("LastName", "Two"),
                ("Email", "two-at-x.io"),
                ("Company", "X"),
                ("IsConverted", "false"),
            ],
        ));
        sf.leads.push(person(
            "00Q4",
            &[
                ("LastName", "Four"),
                ("Email", "four@x.io"),
                ("Company", "X"),
                ("IsConverted", "false"),
            ],
        ));
        sf.contacts.push(person(
            "0033",
            &[("LastName", "Three"), ("Email", "three@x.io")],
        ));
    }
    let path = write_config(
        dir.path(),
        "intohubspot",
        &format!(
            "[source]\nsystem = \"salesforce\"\nbase_url = \"{}\"\ntoken_env = \"{}\"\nlookback = \"0s\"\n\
             [destination]\nsystem = \"hubspot\"\nbase_url = \"{}\"\ntoken_env = \"{}\"\n",
            salesforce.instance_url,
            token_env(),
            hubspot.base_url,
            token_env()
        ),
    );
    let config = Config::load(&path).unwrap();
    let report = run(&config);
    assert_eq!(writes(&report), (3, 0), "{report:#?}");
    // Written page by page: the Leads' page in one batch (the bad email
    // refused in its 207, the other created), then the Contacts' page.
    let creates: Vec<_> = hubspot.requests_to("/crm/v3/objects/contacts/batch/create");
    assert_eq!(creates.len(), 2, "one batch create per source page");
    let leads: Value = serde_json::from_str(&creates[0].body).unwrap();
    assert_eq!(leads["inputs"].as_array().unwrap().len(), 3);
    let store = ContactStore::open(&config.store_path).unwrap();
    let errors = store.errors(report.run_id).unwrap();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].record_id.as_deref(), Some("00Q2"));
    assert_eq!(errors[0].field.as_deref(), Some("email"));
    assert_eq!(hubspot.state().contacts.len(), 3);
    let one = hubspot.state().by_email("one@x.io").unwrap().id;

    // Two updates in one batch, one of them invalid: HubSpot refuses the
    // batch whole; each record is sent alone, so the valid one lands.
    {
        let now = salesforce.state().tick();
        salesforce
            .state()
            .edit("Lead", "00Q1", &[("Title", json!("Lead title"))], now);
        salesforce
            .state()
            .edit("Lead", "00Q4", &[("Email", json!("four-at-x.io"))], now);
    }
    let updates = run(&config);
    assert_eq!(writes(&updates), (1, 0), "{updates:#?}");
    // (00Q2 may be refused again: SOQL windows start at whole seconds, so
    // a record changed in the second before the last run is read again.)
    let errors = store.errors(updates.run_id).unwrap();
    let three = errors
        .iter()
        .find(|e| e.record_id.as_deref() == Some("00Q4"))
        .unwrap_or_else(|| panic!("00Q4 is refused: {errors:#?}"));
    assert_eq!(three.field.as_deref(), Some("email"));
    assert_eq!(
        hubspot_value(&hubspot, "one@x.io", "jobtitle").as_deref(),
        Some("Lead title")
    );
    assert_eq!(
        hubspot
            .requests_to("/crm/v3/objects/contacts/batch/update")
            .len(),
        3,
        "the batch, then each record alone"
    );

    // The Lead is converted; its Contact updates the same HubSpot contact.
    let contact = salesforce.state().convert_lead("00Q1");
    {
        let now = salesforce.state().tick();
        salesforce
            .state()
            .edit("Contact", &contact, &[("Title", json!("Buyer"))], now);
    }
    let converted = run(&config);
    assert_eq!(converted.merged, 1, "{converted:#?}");
    assert_eq!(hubspot.state().contacts.len(), 3, "no second contact");
    assert_eq!(
        hubspot_value(&hubspot, "one@x.io", "jobtitle").as_deref(),
        Some("Buyer")
    );
    assert_eq!(hubspot.state().by_email("one@x.io").unwrap().id, one);
}

#[test]
fn a_counterpart_found_by_email_is_linked_not_created_again() {
    let dir = tempfile::tempdir().unwrap();
    let (hubspot, salesforce) = servers();
    hubspot.state().put(hubspot_contact(
        1,
        &[
            ("lastname", "Ames"),
            ("email", "ann@acme.io"),
            ("company", "A"),
        ],
    ));
    let config = config(dir.path(), "lookup", &hubspot, &salesforce, BOTH, "");
    run(&config);
    // A second HubSpot contact appears whose email a Salesforce Lead already
    // has, untouched since long ago (not in any window): found by email.
    salesforce.state().leads.push(Record::new(
        "00QOLD",
        &[
            ("LastName", json!("Old")),
            ("Email", json!("old@x.io")),
            ("Company", json!("O")),
            ("IsConverted", json!(false)),
        ],
        1_600_000_000_000,
    ));
    hubspot.state().put(hubspot_contact(
        2,
        &[("lastname", "Old"), ("email", "old@x.io")],
    ));
    let report = run(&config);
    assert_eq!(
        salesforce_people(&salesforce).len(),
        2,
        "linked, not created: {report:#?}"
    );
    let store = ContactStore::open(&config.store_path).unwrap();
    let link = store
        .link("lookup", LinkSide::Source, "2")
        .unwrap()
        .unwrap();
    assert_eq!(link.destination_id.as_deref(), Some("00QOLD"));
    assert!(
        salesforce
            .queries()
            .iter()
            .any(|q| q.contains("Email IN ('old@x.io')"))
    );
}

#[test]
fn destination_config_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let load = |body: &str| {
        let path = write_config(dir.path(), "bad", body);
        format!("{:#}", Config::load(&path).unwrap_err())
    };
    let source = "[source]\nsystem = \"hubspot\"\n";
    let error = load(&format!("{source}[destination]\nsystem = \"pipedrive\"\n"));
    assert!(error.contains("destination.system"), "{error}");
    let error = load(&format!("{source}[destination]\nsystem = \"salesforce\"\n"));
    assert!(error.contains("destination.base_url"), "{error}");
    let error = load(&format!(
        "{source}[destination]\nsystem = \"salesforce\"\nbase_url = \"http://127.0.0.1:1\"\ndirection = \"sideways\"\n"
    ));
    assert!(error.contains("destination.direction"), "{error}");
    let error = load(&format!(
        "{source}[destination]\nsystem = \"hubspot\"\n[mapping]\nemail = {{ field = \"email\", conflict = \"salesforce_wins\" }}\n"
    ));
    assert!(
        error.contains("mapping.email") && error.contains("not exactly one side"),
        "{error}"
    );
    let error = load(&format!(
        "{source}[destination]\nsystem = \"store\"\ndirection = \"both\"\n"
    ));
    assert!(error.contains("destination.direction"), "{error}");
    let error = load(&format!(
        "{source}contacts = \"synced_companies\"\n[destination]\nsystem = \"salesforce\"\nbase_url = \"http://127.0.0.1:1\"\n"
    ));
    assert!(error.contains("source.contacts"), "{error}");
    let error = load(&format!(
        "{source}[destination]\nsystem = \"salesforce\"\nbase_url = \"http://127.0.0.1:1\"\n\
         [[filter]]\nfield = \"lifecyclestage\"\nop = \"is_empty\"\n"
    ));
    assert!(
        error.contains("filter[0]") && error.contains("lifecyclestage"),
        "{error}"
    );
    let salesforce = "[destination]\nsystem = \"salesforce\"\nbase_url = \"http://127.0.0.1:1\"\n";
    let error = load(&format!(
        "{source}{salesforce}[companies]\nproperties = [\"industry\"]\n"
    ));
    assert!(error.contains("companies.properties"), "{error}");
    let error = load(&format!(
        "{source}{salesforce}[companies.mapping]\nname = {{ field = \"Name\", direction = \"up\" }}\n"
    ));
    assert!(error.contains("companies.mapping.name"), "{error}");
    let error = load(&format!("{source}{salesforce}objects = [\"Account\"]\n"));
    assert!(
        error.contains("destination.objects") && error.contains("\"Lead\""),
        "{error}"
    );
    let error = load(
        "[source]\nsystem = \"salesforce\"\nbase_url = \"http://127.0.0.1:2\"\n\
         [destination]\nsystem = \"hubspot\"\n[companies]\n",
    );
    assert!(
        error.contains("source.objects") && error.contains("Account"),
        "{error}"
    );
    // Accounts listed on the Salesforce side are the company part.
    let path = write_config(
        dir.path(),
        "good",
        &format!(
            "{source}[destination]\nsystem = \"salesforce\"\nbase_url = \"http://127.0.0.1:1\"\nobjects = [\"Contact\", \"Account\"]\n"
        ),
    );
    let config = Config::load(&path).unwrap();
    let part = config.companies.as_ref().expect("a company part");
    let crm = part.destination.as_ref().unwrap();
    let fields: Vec<(&str, &str)> = crm
        .fields
        .iter()
        .map(|f| (f.source.as_str(), f.destination.as_str()))
        .collect();
    assert_eq!(
        fields,
        [("name", "Name"), ("domain", "Website"), ("phone", "Phone")]
    );
}

#[test]
fn the_command_line_reports_both_sides_and_lists_the_links() {
    let dir = tempfile::tempdir().unwrap();
    let (hubspot, salesforce) = servers();
    hubspot.state().put(hubspot_contact(
        1,
        &[
            ("lastname", "Ames"),
            ("email", "ann@acme.io"),
            ("company", "Acme"),
        ],
    ));
    salesforce.state().contacts.push(person(
        "003B",
        &[("LastName", "Berg"), ("Email", "bo@beta.io")],
    ));
    let config = config(dir.path(), "cli", &hubspot, &salesforce, BOTH, "");
    let path = dir.path().join("cli.toml");
    let path = path.to_str().unwrap();
    let component = component_path().to_str().unwrap();
    let (exit, out) = crmsync(&["sync", "--config", path, "--component", component]).unwrap();
    assert_eq!(exit, crmsync_host::cli::Exit::Success, "{out}");
    assert!(
        out.contains(
            "written to the destination: created 1 updated 0;  to the source: created 1 updated 0"
        ),
        "{out}"
    );
    let (_, out) = crmsync(&["links", "--config", path]).unwrap();
    assert!(out.contains("2 links"), "{out}");
    assert!(out.contains("<-> 003B (contact)"), "{out}");
    assert!(out.contains("ann@acme.io"), "{out}");
    // `fields` names the other CRM's field and the way each one flows.
    let (_, fields) = crmsync(&["fields", "--config", path, "--component", component]).unwrap();
    let jobtitle = fields
        .lines()
        .find(|l| l.starts_with("jobtitle"))
        .unwrap_or_default();
    assert!(jobtitle.ends_with("<-> Title"), "{fields}");
    let (_, json) = crmsync(&["links", "--config", path, "--json"]).unwrap();
    let links: Vec<Value> = serde_json::from_str(&json).unwrap();
    let ann = links
        .iter()
        .find(|l| l["email"] == json!("ann@acme.io"))
        .unwrap();
    assert_eq!(ann["source_id"], json!("1"));
    assert_eq!(ann["agreed"]["lastname"], json!({"text": "Ames"}));
    let (_, status) = crmsync(&["status", "--config", path]).unwrap();
    assert!(status.contains("synced: 2"), "{status}");
    assert_eq!(config.name, "cli");
}

#[test]
fn a_scheduled_run_picks_up_new_records_and_a_lead_status_change_on_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let (hubspot, salesforce) = servers();
    hubspot
        .state()
        .custom_properties
        .push(("salesforce_lead_status".into(), "string".into()));
    salesforce.state().leads.push(person(
        "00QL",
        &[
            ("LastName", "Lane"),
            ("Email", "lane@x.io"),
            ("Company", "L"),
            ("Status", "Open"),
            ("IsConverted", "false"),
        ],
    ));
    let config = config(
        dir.path(),
        "triggers",
        &hubspot,
        &salesforce,
        BOTH,
        "salesforce_lead_status = { field = \"Status\", direction = \"to_source\" }\n",
    );
    run(&config);
    assert_eq!(
        hubspot_value(&hubspot, "lane@x.io", "salesforce_lead_status").as_deref(),
        Some("Open")
    );
    // Between runs: the Lead's status changes, a Lead and a HubSpot contact
    // are created.
    {
        let now = salesforce.state().tick();
        salesforce
            .state()
            .edit("Lead", "00QL", &[("Status", json!("Working"))], now);
        salesforce.state().leads.push(person(
            "00QN",
            &[
                ("LastName", "New"),
                ("Email", "new-lead@x.io"),
                ("Company", "N"),
                ("Status", "Open"),
                ("IsConverted", "false"),
            ],
        ));
    }
    hubspot.state().put(hubspot_contact(
        40,
        &[
            ("lastname", "Fresh"),
            ("email", "fresh@x.io"),
            ("company", "F"),
        ],
    ));
    let report = run(&config);
    assert_eq!(report.mode, "incremental");
    assert_eq!(
        hubspot_value(&hubspot, "lane@x.io", "salesforce_lead_status").as_deref(),
        Some("Working")
    );
    assert_eq!(
        hubspot_value(&hubspot, "new-lead@x.io", "lastname").as_deref(),
        Some("New")
    );
    assert_eq!(
        salesforce_value(&salesforce, "fresh@x.io", "LastName").as_deref(),
        Some("Fresh")
    );
    // A HubSpot edit of a to_source field does not flow to Salesforce.
    let lane = hubspot.state().by_email("lane@x.io").unwrap().id;
    hubspot
        .state()
        .edit(lane, &[("salesforce_lead_status", Some("Closed"))]);
    let after = run(&config);
    assert_eq!(writes(&after), (0, 0), "{after:#?}");
    assert_eq!(
        salesforce_value(&salesforce, "lane@x.io", "Status").as_deref(),
        Some("Working")
    );
}

#[test]
fn a_second_record_with_a_linked_email_is_email_taken_not_a_second_link() {
    let dir = tempfile::tempdir().unwrap();
    let (hubspot, salesforce) = servers();
    {
        let mut hs = hubspot.state();
        hs.put(hubspot_contact(
            1,
            &[("lastname", "Dee"), ("email", "dup@x.io"), ("company", "D")],
        ));
        hs.put(hubspot_contact(
            2,
            &[("lastname", "Dee"), ("email", "DUP@x.io"), ("company", "D")],
        ));
    }
    salesforce.state().leads.push(person(
        "00QD",
        &[
            ("LastName", "Dee"),
            ("Email", "dup@x.io"),
            ("Company", "D"),
            ("IsConverted", "false"),
        ],
    ));
    let config = config(dir.path(), "dup", &hubspot, &salesforce, BOTH, "");
    let report = run(&config);
    assert_eq!(report.counts.failed, 1, "{report:#?}");
    assert_eq!(report.errors_by_category.get("email-taken"), Some(&1));
    assert_eq!(salesforce_people(&salesforce).len(), 1, "no second Lead");
    let store = ContactStore::open(&config.store_path).unwrap();
    assert_eq!(store.links("dup").unwrap().len(), 1);
    let errors = store.errors(report.run_id).unwrap();
    assert_eq!(errors[0].record_id.as_deref(), Some("2"));
    assert!(errors[0].message.contains("00QD"), "{}", errors[0].message);
}

#[test]
fn a_salesforce_destination_with_oauth_gets_its_session_from_the_refresh_token() {
    let dir = tempfile::tempdir().unwrap();
    let (hubspot, salesforce) = servers();
    {
        let mut sf = salesforce.state();
        sf.valid_tokens.clear();
        sf.refresh_token = Some("sf-refresh".into());
    }
    set_env("TWO_WAY_SF_CLIENT", "client");
    set_env("TWO_WAY_SF_SECRET", "secret");
    set_env("TWO_WAY_SF_REFRESH", "sf-refresh");
    hubspot.state().put(hubspot_contact(
        1,
        &[
            ("lastname", "Ames"),
            ("email", "ann@acme.io"),
            ("company", "Acme"),
        ],
    ));
    let path = write_config(
        dir.path(),
        "oauth",
        &format!(
            "[source]\nsystem = \"hubspot\"\nbase_url = \"{}\"\ntoken_env = \"{}\"\n\
             [destination]\nsystem = \"salesforce\"\nbase_url = \"{}\"\n\
             [destination.oauth]\nclient_id_env = \"TWO_WAY_SF_CLIENT\"\n\
             client_secret_env = \"TWO_WAY_SF_SECRET\"\nrefresh_token_env = \"TWO_WAY_SF_REFRESH\"\n",
            hubspot.base_url,
            token_env(),
            salesforce.instance_url,
        ),
    );
    let config = Config::load(&path).unwrap();
    let report = run(&config);
    assert_eq!(writes(&report), (1, 0), "{report:#?}");
    assert_eq!(salesforce.state().issued, 1);
    let sent = salesforce
        .state()
        .seen
        .last()
        .unwrap()
        .authorization
        .clone();
    assert_eq!(sent.as_deref(), Some("Bearer 00Dsession!1"));
    // The HubSpot side kept its own token: credentials never cross sides.
    assert!(
        hubspot
            .state()
            .seen
            .iter()
            .all(|s| s.authorization.as_deref() == Some(&format!("Bearer {TOKEN}")[..]))
    );
}

#[test]
fn the_bundled_two_way_cassette_replays_the_demo() {
    let dir = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string(workspace().join("examples/two-way.toml"))
        .unwrap()
        .replace("../target/demo/two-way.sqlite", "two-way.sqlite");
    let path = dir.path().join("two-way.toml");
    std::fs::write(&path, example).unwrap();
    let path = path.to_str().unwrap();
    let cassette = workspace().join("fixtures/two-way/hubspot-salesforce.json");
    let (exit, out) = crmsync(&[
        "sync",
        "--config",
        path,
        "--component",
        component_path().to_str().unwrap(),
        "--replay",
        cassette.to_str().unwrap(),
    ])
    .unwrap();
    assert_eq!(exit, crmsync_host::cli::Exit::Success, "{out}");
    assert!(
        out.contains(
            "written to the destination: created 1 updated 1;  to the source: created 1 updated 1"
        ),
        "{out}"
    );
    let (_, links) = crmsync(&["links", "--config", path, "--json"]).unwrap();
    let links: Vec<Value> = serde_json::from_str(&links).unwrap();
    let (companies, links): (Vec<Value>, Vec<Value>) = links
        .into_iter()
        .partition(|l| l["part"] == json!("companies"));
    // Acme matched by domain (www and path aside), Globex created in HubSpot.
    assert_eq!(companies.len(), 2, "{companies:#?}");
    assert_eq!(companies[0]["destination_id"], json!("001Dm00000AcmAAA"));
    assert_eq!(companies[0]["email"], json!("acme.io"));
    assert_eq!(companies[0]["agreed"]["name"], json!({"text": "Acme Inc."}));
    assert_eq!(companies[1]["destination_id"], json!("001Dm00000GlxAAA"));
    let by_email = |email: &str| {
        links
            .iter()
            .find(|l| l["email"] == json!(email))
            .unwrap_or_else(|| panic!("{email} is linked: {links:#?}"))
    };
    // Matched by email; Salesforce's title won (prefer Salesforce unless blank).
    assert_eq!(
        by_email("ann@acme.io")["destination_id"],
        json!("003Dm00000AnnAAA")
    );
    assert_eq!(
        by_email("ann@acme.io")["agreed"]["jobtitle"],
        json!({"text": "VP Engineering"})
    );
    // Ann's company is her Contact's Account now.
    assert_eq!(
        by_email("ann@acme.io")["agreed"]["@company"],
        json!({"text": companies[0]["id"].to_string()})
    );
    // Created each way.
    assert_eq!(by_email("bo@beta.io")["destination_kind"], json!("lead"));
    assert_eq!(
        by_email("cy@cole.io")["destination_id"],
        json!("00QDm00000CyCAAA")
    );
    assert_eq!(links.len(), 3);
    let (_, errors) = crmsync(&["errors", "--config", path]).unwrap();
    assert!(errors.contains("missing-handle"), "{errors}");
    assert!(errors.contains("REQUIRED_FIELD_MISSING"), "{errors}");
}

#[test]
fn a_mapped_field_deleted_on_one_side_is_reported_and_clears_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (hubspot, salesforce) = servers();
    hubspot.state().put(hubspot_contact(
        1,
        &[
            ("lastname", "Ames"),
            ("email", "ann@acme.io"),
            ("jobtitle", "CTO"),
            ("company", "Acme"),
        ],
    ));
    let config = config(
        dir.path(),
        "deleted",
        &hubspot,
        &salesforce,
        BOTH,
        "mobilephone = \"Shoe_Size__c\"\n",
    );
    let first = run(&config);
    let store = ContactStore::open(&config.store_path).unwrap();
    let errors = store.errors(first.run_id).unwrap();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].category, "field-not-found");
    assert_eq!(errors[0].field.as_deref(), Some("Shoe_Size__c"));
    assert_eq!(
        salesforce_value(&salesforce, "ann@acme.io", "Title").as_deref(),
        Some("CTO")
    );

    // HubSpot deletes the jobtitle property: its values read as nothing.
    // Left in, that nothing would clear Salesforce's Title.
    {
        let mut hs = hubspot.state();
        hs.deleted_properties.push("jobtitle".into());
    }
    hubspot
        .state()
        .edit(1, &[("jobtitle", None), ("lastname", Some("Ames-Lee"))]);
    let second = run(&config);
    let errors = store.errors(second.run_id).unwrap();
    assert!(
        errors
            .iter()
            .any(|e| e.category == "field-not-found" && e.field.as_deref() == Some("jobtitle")),
        "{errors:#?}"
    );
    assert_eq!(
        salesforce_value(&salesforce, "ann@acme.io", "LastName").as_deref(),
        Some("Ames-Lee"),
        "the other fields go on"
    );
    assert_eq!(
        salesforce_value(&salesforce, "ann@acme.io", "Title").as_deref(),
        Some("CTO"),
        "a deleted property clears nothing"
    );
}

#[test]
fn a_counterpart_deleted_at_the_destination_is_reported_and_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (hubspot, salesforce) = servers();
    {
        let mut sf = salesforce.state();
        sf.contacts.push(person(
            "003A",
            &[("LastName", "Ames"), ("Email", "ann@acme.io")],
        ));
        sf.contacts.push(person(
            "003B",
            &[("LastName", "Berg"), ("Email", "bo@beta.io")],
        ));
    }
    let path = write_config(
        dir.path(),
        "gone",
        &format!(
            "[source]\nsystem = \"salesforce\"\nbase_url = \"{}\"\ntoken_env = \"{}\"\nlookback = \"0s\"\n\
             [destination]\nsystem = \"hubspot\"\nbase_url = \"{}\"\ntoken_env = \"{}\"\n",
            salesforce.instance_url,
            token_env(),
            hubspot.base_url,
            token_env()
        ),
    );
    let config = Config::load(&path).unwrap();
    run(&config);
    // Ann's HubSpot contact is deleted (archived); both Salesforce records change.
    let ann = hubspot.state().by_email("ann@acme.io").unwrap().id;
    hubspot.state().set_archived(ann, true);
    {
        let now = salesforce.state().tick();
        salesforce
            .state()
            .edit("Contact", "003A", &[("Title", json!("CEO"))], now);
        salesforce
            .state()
            .edit("Contact", "003B", &[("Title", json!("VP"))], now);
    }
    let report = run(&config);
    assert_eq!(writes(&report), (1, 0), "{report:#?}");
    assert_eq!(
        hubspot_value(&hubspot, "bo@beta.io", "jobtitle").as_deref(),
        Some("VP")
    );
    let store = ContactStore::open(&config.store_path).unwrap();
    let errors = store.errors(report.run_id).unwrap();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].record_id.as_deref(), Some("003A"));
    assert!(
        errors[0].message.contains("no record"),
        "{}",
        errors[0].message
    );
}

fn account(server: &SalesforceServer, name: &str) -> Option<Record> {
    server
        .state()
        .accounts
        .iter()
        .find(|a| a.fields.get("Name") == Some(&json!(name)))
        .cloned()
}

fn company_value(server: &HubSpotServer, id: u64, property: &str) -> Option<String> {
    server
        .state()
        .companies
        .iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("HubSpot holds company {id}"))
        .properties
        .get(property)
        .cloned()
        .flatten()
}

#[test]
fn companies_and_accounts_sync_both_ways_matched_by_domain() {
    let dir = tempfile::tempdir().unwrap();
    let (hubspot, salesforce) = servers();
    {
        let mut hs = hubspot.state();
        for company in [
            hubspot_contact(9001, &[("name", "Acme"), ("domain", "acme.com")]),
            hubspot_contact(9002, &[("name", "Globex"), ("domain", "globex.example")]),
            hubspot_contact(9003, &[("name", "Initech")]),
            // A second company claiming Acme's domain.
            hubspot_contact(9004, &[("name", "Acme Europe"), ("domain", "ACME.com")]),
        ] {
            hs.companies.push(company);
        }
        let mut sf = salesforce.state();
        let now = sf.tick();
        sf.accounts.push(Record::new(
            "001A",
            &[
                ("Name", json!("Acme Corp")),
                ("Website", json!("https://www.acme.com/about")),
            ],
            now,
        ));
        sf.accounts.push(Record::new(
            "001U",
            &[
                ("Name", json!("Umbrella")),
                ("Website", json!("umbrella.io")),
            ],
            now,
        ));
    }
    let config = config(
        dir.path(),
        "firms",
        &hubspot,
        &salesforce,
        BOTH,
        "\n[companies]\n",
    );
    let companies = config.companies.as_ref().expect("a company part");
    assert_eq!(companies.name, "firms.companies");

    let first = run(&config);
    let part = first.companies.as_deref().expect("the company part ran");
    assert_eq!(part.status, "completed", "{part:#?}");
    // Globex and Initech become Accounts; Umbrella a HubSpot company; Acme
    // is paired by domain and takes Salesforce's name (prefer Salesforce).
    assert_eq!(writes(part), (2, 2), "{part:#?}");
    assert_eq!(part.errors_by_category.get("domain-taken"), Some(&1));
    assert_eq!(
        company_value(&hubspot, 9001, "name").as_deref(),
        Some("Acme Corp")
    );
    // The same domain written two ways is no conflict: both keep theirs.
    assert_eq!(
        company_value(&hubspot, 9001, "domain").as_deref(),
        Some("acme.com")
    );
    assert_eq!(
        account(&salesforce, "Acme Corp").unwrap().fields["Website"],
        json!("https://www.acme.com/about")
    );
    assert_eq!(
        account(&salesforce, "Globex").unwrap().fields["Website"],
        json!("globex.example")
    );
    assert!(
        account(&salesforce, "Initech").is_some(),
        "no domain, still created"
    );
    assert!(
        account(&salesforce, "Acme Europe").is_none(),
        "domain taken"
    );
    let umbrella = hubspot
        .state()
        .companies
        .iter()
        .find(|c| c.properties.get("name") == Some(&Some("Umbrella".into())))
        .map(|c| c.id)
        .expect("Umbrella created in HubSpot");
    assert_eq!(
        company_value(&hubspot, umbrella, "domain").as_deref(),
        Some("umbrella.io")
    );
    assert_eq!(salesforce.state().accounts.len(), 4);
    assert_eq!(hubspot.state().companies.len(), 5);
    let searches = hubspot.requests_to("/crm/v3/objects/companies/search");
    assert!(
        searches
            .iter()
            .any(|s| s.body.contains("\"operator\":\"IN\"") && s.body.contains("umbrella.io")),
        "Umbrella was looked up by domain: {searches:#?}"
    );

    // Nothing edited: the sync's own writes come back as no change.
    let second = run(&config);
    let part = second.companies.as_deref().unwrap();
    assert_eq!(writes(part), (0, 0), "{part:#?}");

    // An edit on each side flows to the other.
    let now = salesforce.state().tick();
    salesforce
        .state()
        .edit("Account", "001U", &[("Phone", json!("+1 555 0199"))], now);
    {
        let mut hs = hubspot.state();
        let now = hs.tick();
        let globex = hs.companies.iter_mut().find(|c| c.id == 9002).unwrap();
        globex
            .properties
            .insert("name".into(), Some("Globex Inc".into()));
        globex.modified = now;
    }
    let third = run(&config);
    let part = third.companies.as_deref().unwrap();
    assert_eq!(writes(part), (1, 1), "{part:#?}");
    assert_eq!(
        company_value(&hubspot, umbrella, "phone").as_deref(),
        Some("+1 555 0199")
    );
    assert!(account(&salesforce, "Globex Inc").is_some());
    let fourth = run(&config);
    assert_eq!(writes(fourth.companies.as_deref().unwrap()), (0, 0));

    // `crmsync links` lists both parts.
    let path = dir.path().join("firms.toml");
    let path = path.to_str().unwrap();
    let (_, out) = crmsync(&["links", "--config", path]).unwrap();
    assert!(out.contains("4 company links"), "{out}");
    let (_, json) = crmsync(&["links", "--config", path, "--json"]).unwrap();
    let links: Vec<Value> = serde_json::from_str(&json).unwrap();
    let acme = links
        .iter()
        .find(|l| l["part"] == json!("companies") && l["source_id"] == json!("9001"))
        .unwrap_or_else(|| panic!("{links:#?}"));
    assert_eq!(acme["destination_id"], json!("001A"));
    assert_eq!(
        acme["email"],
        json!("acme.com"),
        "the domain it was matched by"
    );
}

#[test]
fn a_contacts_company_follows_it_across_as_account_id_and_primary_association() {
    let dir = tempfile::tempdir().unwrap();
    let (hubspot, salesforce) = servers();
    {
        let mut hs = hubspot.state();
        hs.companies.push(hubspot_contact(
            9001,
            &[("name", "Acme"), ("domain", "acme.com")],
        ));
        hs.put(hubspot_contact(
            1,
            &[
                ("firstname", "Ann"),
                ("lastname", "Ames"),
                ("email", "ann@acme.io"),
            ],
        ));
        hs.put(hubspot_contact(
            2,
            &[("lastname", "Berg"), ("email", "bo@beta.io")],
        ));
        hs.associations.push((1, 9001, true));
        let mut sf = salesforce.state();
        let now = sf.tick();
        sf.accounts.push(Record::new(
            "001A",
            &[("Name", json!("Acme")), ("Website", json!("acme.com"))],
            now,
        ));
        sf.accounts.push(Record::new(
            "001U",
            &[
                ("Name", json!("Umbrella")),
                ("Website", json!("umbrella.io")),
            ],
            now,
        ));
        sf.contacts.push(person(
            "003A",
            &[
                ("FirstName", "Ann"),
                ("LastName", "Ames"),
                ("Email", "ann@acme.io"),
            ],
        ));
        sf.contacts.push(person(
            "003C",
            &[
                ("LastName", "Cole"),
                ("Email", "cy@umbrella.io"),
                ("AccountId", "001U"),
            ],
        ));
    }
    // People are created as Contacts (no Leads synced), which have an Account.
    let config = config(
        dir.path(),
        "linked",
        &hubspot,
        &salesforce,
        &format!("{BOTH}\nobjects = [\"Contact\", \"Account\"]"),
        "",
    );
    let first = run(&config);
    assert_eq!(first.companies.as_deref().unwrap().status, "completed");
    let umbrella = hubspot
        .state()
        .companies
        .iter()
        .find(|c| c.properties.get("domain") == Some(&Some("umbrella.io".into())))
        .map(|c| c.id)
        .expect("Umbrella became a HubSpot company first");
    // Ann's HubSpot company is her Salesforce Contact's Account now.
    assert_eq!(
        salesforce
            .state()
            .person_by_email("ann@acme.io")
            .unwrap()
            .fields["AccountId"],
        json!("001A")
    );
    // Cy came from Salesforce with his Account: created in HubSpot with the
    // company as his primary one, in the create request itself.
    let cy = hubspot.state().by_email("cy@umbrella.io").unwrap().id;
    assert!(hubspot.state().associations.contains(&(cy, umbrella, true)));
    let creates: Vec<Value> = hubspot
        .requests_to("/crm/v3/objects/contacts/batch/create")
        .iter()
        .map(|s| serde_json::from_str(&s.body).unwrap())
        .collect();
    assert_eq!(
        creates[0]["inputs"][0]["associations"],
        json!([{"to": {"id": umbrella.to_string()},
                "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 1}]}])
    );
    // Bo has no company, and his new Salesforce Contact has no Account.
    assert_eq!(
        salesforce
            .state()
            .person_by_email("bo@beta.io")
            .unwrap()
            .fields
            .get("AccountId"),
        None
    );
    let second = run(&config);
    assert_eq!(writes(&second), (0, 0), "{second:#?}");

    // Bo joins Umbrella in Salesforce: HubSpot associates him with it.
    let bo = salesforce
        .state()
        .person_by_email("bo@beta.io")
        .unwrap()
        .id
        .clone();
    let now = salesforce.state().tick();
    salesforce
        .state()
        .edit("Contact", &bo, &[("AccountId", json!("001U"))], now);
    let third = run(&config);
    assert_eq!(writes(&third), (0, 1), "{third:#?}");
    assert!(hubspot.state().associations.contains(&(2, umbrella, true)));
    let associate = hubspot.requests_to("/crm/v4/associations/contacts/companies/batch/create");
    assert_eq!(associate.len(), 1, "one association request for the batch");
    let fourth = run(&config);
    assert_eq!(writes(&fourth), (0, 0), "{fourth:#?}");
}

#[test]
fn a_create_hubspot_refuses_as_an_existing_contact_pairs_with_it_instead() {
    let dir = tempfile::tempdir().unwrap();
    let (hubspot, salesforce) = servers();
    {
        let mut hs = hubspot.state();
        // Ann's old address is only an additional email: the look-up by
        // (primary) email misses her, and HubSpot refuses a second contact.
        hs.put(hubspot_contact(
            7,
            &[
                ("lastname", "Ames"),
                ("email", "ann@new.io"),
                ("hs_additional_emails", "ann@old.io"),
            ],
        ));
        // Linked to Salesforce's Cy below: not Bo's to take.
        hs.put(hubspot_contact(
            8,
            &[
                ("lastname", "Cole"),
                ("email", "cy@x.io"),
                ("hs_additional_emails", "bo@x.io"),
            ],
        ));
        let mut sf = salesforce.state();
        sf.contacts.push(person(
            "003A",
            &[
                ("LastName", "Ames"),
                ("Email", "Ann@Old.io"),
                ("Title", "VP"),
            ],
        ));
        sf.contacts.push(person(
            "003C",
            &[("LastName", "Cole"), ("Email", "cy@x.io")],
        ));
        sf.contacts.push(person(
            "003D",
            &[("LastName", "Berg"), ("Email", "bo@x.io")],
        ));
    }
    let path = write_config(
        dir.path(),
        "existing",
        &format!(
            "[source]\nsystem = \"salesforce\"\nbase_url = \"{}\"\ntoken_env = \"{}\"\nobjects = [\"Contact\"]\n\
             [destination]\nsystem = \"hubspot\"\nbase_url = \"{}\"\ntoken_env = \"{}\"\n",
            salesforce.instance_url,
            token_env(),
            hubspot.base_url,
            token_env()
        ),
    );
    let config = Config::load(&path).unwrap();
    let report = run(&config);
    assert_eq!(
        hubspot.state().contacts.len(),
        2,
        "no second contact: {report:#?}"
    );
    assert_eq!(
        hubspot_value(&hubspot, "ann@old.io", "jobtitle").as_deref(),
        Some("VP")
    );
    let store = ContactStore::open(&config.store_path).unwrap();
    let ann = store
        .link("existing", LinkSide::Source, "003A")
        .unwrap()
        .expect("Ann is linked");
    assert_eq!(ann.destination_id.as_deref(), Some("7"));
    // Bo's email is Cy's contact's: taken (X4), not a second link to it.
    let errors = store.errors(report.run_id).unwrap();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].category, "email-taken");
    assert_eq!(errors[0].record_id.as_deref(), Some("003D"));
    assert!(
        store
            .link("existing", LinkSide::Source, "003D")
            .unwrap()
            .is_none()
    );
    // Settled: the next full run writes nothing more for Ann.
    let again = sync(
        &config,
        &SyncOptions {
            full: true,
            ..live_options()
        },
    )
    .unwrap();
    assert_eq!(again.written.unwrap().to_destination.created, 0);
}

#[test]
fn owners_are_carried_across_by_email_and_an_owner_change_is_a_field_change() {
    let dir = tempfile::tempdir().unwrap();
    let (hubspot, salesforce) = servers();
    {
        let mut hs = hubspot.state();
        hs.owners = vec![
            (101, "sam@acme.io".into()),
            (102, "kim@acme.io".into()),
            (103, "lee@acme.io".into()),
        ];
        hs.put(hubspot_contact(
            1,
            &[
                ("lastname", "Ames"),
                ("email", "ann@acme.io"),
                ("hubspot_owner_id", "101"),
            ],
        ));
        // Lee has no Salesforce user.
        hs.put(hubspot_contact(
            2,
            &[
                ("lastname", "Berg"),
                ("email", "bo@beta.io"),
                ("company", "Beta"),
                ("hubspot_owner_id", "103"),
            ],
        ));
        let mut sf = salesforce.state();
        for (id, email) in [("005S", "sam@acme.io"), ("005K", "Kim@Acme.io")] {
            sf.users
                .push(person(id, &[("Email", email), ("IsActive", "true")]));
        }
        sf.users.push(person(
            "005Z",
            &[("Email", "gone@acme.io"), ("IsActive", "false")],
        ));
        sf.contacts.push(person(
            "003A",
            &[
                ("LastName", "Ames"),
                ("Email", "ann@acme.io"),
                ("OwnerId", "005S"),
            ],
        ));
        sf.contacts.push(person(
            "003C",
            &[
                ("LastName", "Cole"),
                ("Email", "cy@cole.io"),
                ("OwnerId", "005K"),
            ],
        ));
    }
    let config = config(
        dir.path(),
        "owners",
        &hubspot,
        &salesforce,
        BOTH,
        "hubspot_owner_id = { field = \"OwnerId\", type = \"owner\" }",
    );
    let first = run(&config);
    // Ann's owners are the same person: nothing to write for her owner.
    assert_eq!(
        salesforce_value(&salesforce, "ann@acme.io", "OwnerId").as_deref(),
        Some("005S")
    );
    // Cy's Salesforce owner is HubSpot's Kim (emails compare ignoring case).
    assert_eq!(
        hubspot_value(&hubspot, "cy@cole.io", "hubspot_owner_id").as_deref(),
        Some("102")
    );
    // Bo's owner has no Salesforce user: Bo is created, his owner reported.
    assert!(salesforce.state().person_by_email("bo@beta.io").is_some());
    assert_eq!(salesforce_value(&salesforce, "bo@beta.io", "OwnerId"), None);
    let store = ContactStore::open(&config.store_path).unwrap();
    let errors = store.errors(first.run_id).unwrap();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].category, "validation");
    assert_eq!(errors[0].field.as_deref(), Some("OwnerId"));
    assert_eq!(errors[0].record_id.as_deref(), Some("2"));
    assert!(
        errors[0].message.contains("lee@acme.io"),
        "{}",
        errors[0].message
    );
    let users = salesforce
        .queries()
        .into_iter()
        .filter(|q| q.contains("FROM User"))
        .collect::<Vec<_>>();
    assert_eq!(
        users,
        ["SELECT Id, Email FROM User WHERE IsActive = true ORDER BY Id"]
    );
    let second = run(&config);
    assert_eq!(writes(&second), (0, 0), "{second:#?}");

    // Ann is reassigned in Salesforce, Cy in HubSpot: each flows across.
    let now = salesforce.state().tick();
    salesforce
        .state()
        .edit("Contact", "003A", &[("OwnerId", json!("005K"))], now);
    let cy = hubspot.state().by_email("cy@cole.io").unwrap().id;
    hubspot
        .state()
        .edit(cy, &[("hubspot_owner_id", Some("101"))]);
    let third = run(&config);
    assert_eq!(writes(&third), (1, 1), "{third:#?}");
    assert_eq!(
        hubspot_value(&hubspot, "ann@acme.io", "hubspot_owner_id").as_deref(),
        Some("102")
    );
    assert_eq!(
        salesforce_value(&salesforce, "cy@cole.io", "OwnerId").as_deref(),
        Some("005S")
    );
    let fourth = run(&config);
    assert_eq!(writes(&fourth), (0, 0), "{fourth:#?}");
}

#[test]
fn filters_and_a_list_choose_which_source_records_sync_into_the_crm() {
    let dir = tempfile::tempdir().unwrap();
    let (hubspot, salesforce) = servers();
    {
        let mut hs = hubspot.state();
        for (id, name, company) in [(1, "ann", "Acme"), (2, "bo", "Beta"), (3, "cy", "acme")] {
            let email = format!("{name}@x.io");
            hs.put(hubspot_contact(
                id,
                &[("lastname", name), ("email", &email), ("company", company)],
            ));
        }
        hs.lists.insert("42".into(), vec![1, 2]);
    }
    // Filters: only Acme's people (text compares ignoring case, as HubSpot's do).
    let filtered = config(
        dir.path(),
        "acme",
        &hubspot,
        &salesforce,
        BOTH,
        "\n[[filter]]\nfield = \"company\"\nop = \"equals\"\nvalue = \"Acme\"\n",
    );
    let first = run(&filtered);
    assert_eq!(writes(&first), (2, 0), "{first:#?}");
    assert!(salesforce.state().person_by_email("bo@x.io").is_none());
    // Cy leaves Acme: his Lead is kept, and stops syncing either way.
    hubspot.state().edit(3, &[("company", Some("Initech"))]);
    let second = run(&filtered);
    assert_eq!(second.stopped_syncing, 1, "{second:#?}");
    assert_eq!(writes(&second), (0, 0), "{second:#?}");
    assert_eq!(
        salesforce_value(&salesforce, "cy@x.io", "Company").as_deref(),
        Some("acme")
    );
    let cy = salesforce
        .state()
        .person_by_email("cy@x.io")
        .unwrap()
        .id
        .clone();
    let now = salesforce.state().tick();
    salesforce
        .state()
        .edit("Lead", &cy, &[("Title", json!("Chief"))], now);
    let third = run(&filtered);
    assert_eq!(writes(&third), (0, 0), "not written back: {third:#?}");
    assert_eq!(hubspot_value(&hubspot, "cy@x.io", "jobtitle"), None);
    // Back at Acme: he syncs again.
    hubspot.state().edit(3, &[("company", Some("ACME"))]);
    let fourth = run(&filtered);
    // (Salesforce's title may come along: its window starts at a whole second.)
    assert_eq!(writes(&fourth).0, 1, "{fourth:#?}");
    assert_eq!(
        salesforce_value(&salesforce, "cy@x.io", "Company").as_deref(),
        Some("ACME")
    );
    let (_, json) = crmsync(&[
        "links",
        "--config",
        dir.path().join("acme.toml").to_str().unwrap(),
        "--json",
    ])
    .unwrap();
    assert!(!json.contains("\"syncing\": false"), "{json}");

    // A list: its members, read whole every run; one who leaves stops syncing.
    let path = write_config(
        dir.path(),
        "listed",
        &format!(
            "[source]\nsystem = \"hubspot\"\nbase_url = \"{}\"\ntoken_env = \"{}\"\nlist_id = \"42\"\n\
             [destination]\nsystem = \"salesforce\"\nbase_url = \"{}\"\ntoken_env = \"{}\"\n",
            hubspot.base_url,
            token_env(),
            salesforce.instance_url,
            token_env()
        ),
    );
    let listed = Config::load(&path).unwrap();
    let first = run(&listed);
    assert_eq!(first.mode, "full");
    assert!(
        salesforce.state().person_by_email("bo@x.io").is_some(),
        "a member"
    );
    hubspot.state().lists.insert("42".into(), vec![2]);
    let second = run(&listed);
    assert_eq!(second.mode, "full", "lists are read whole");
    assert_eq!(second.stopped_syncing, 1, "Ann left the list: {second:#?}");
}

#[test]
fn a_record_deleted_on_either_side_stops_its_pair_syncing_and_nothing_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (hubspot, salesforce) = servers();
    {
        let mut hs = hubspot.state();
        hs.put(hubspot_contact(
            1,
            &[("lastname", "Ames"), ("email", "ann@acme.io")],
        ));
        hs.put(hubspot_contact(
            2,
            &[("lastname", "Berg"), ("email", "bo@beta.io")],
        ));
        let mut sf = salesforce.state();
        sf.contacts.push(person(
            "003A",
            &[("LastName", "Ames"), ("Email", "ann@acme.io")],
        ));
        sf.contacts.push(person(
            "003B",
            &[("LastName", "Berg"), ("Email", "bo@beta.io")],
        ));
    }
    let config = config(dir.path(), "deletes", &hubspot, &salesforce, BOTH, "");
    run(&config);
    // Ann is deleted in HubSpot, Bo in Salesforce (the recycle bin).
    hubspot.state().set_archived(1, true);
    salesforce.state().contacts[1].deleted = true;
    let report = run(&config);
    assert_eq!(report.stopped_syncing, 2, "{report:#?}");
    let queries = salesforce.queries();
    assert!(
        queries.contains(&"SELECT Id FROM Contact WHERE IsDeleted = true ORDER BY Id".to_owned()),
        "{queries:#?}"
    );
    // Their counterparts live on, and their edits go nowhere (no 404s).
    let now = salesforce.state().tick();
    salesforce
        .state()
        .edit("Contact", "003A", &[("Title", json!("CEO"))], now);
    hubspot.state().edit(2, &[("jobtitle", Some("VP"))]);
    let after = run(&config);
    assert_eq!(writes(&after), (0, 0), "{after:#?}");
    assert_eq!(after.counts.failed, 0, "{after:#?}");
    let c = after.counts;
    assert_eq!(
        c.seen,
        c.created + c.updated + c.skipped + c.failed,
        "{c:?}"
    );
    // Bo is restored from the recycle bin and edited: the pair syncs again.
    {
        let mut sf = salesforce.state();
        sf.contacts[1].deleted = false;
        let now = sf.tick();
        sf.edit("Contact", "003B", &[("Title", json!("COO"))], now);
    }
    let restored = run(&config);
    assert_eq!(writes(&restored), (0, 1), "{restored:#?}");
    assert_eq!(
        hubspot_value(&hubspot, "bo@beta.io", "jobtitle").as_deref(),
        Some("COO")
    );
    assert!(
        hubspot
            .state()
            .contacts
            .iter()
            .any(|c| c.id == 2 && !c.archived)
    );
    assert!(
        salesforce
            .state()
            .contacts
            .iter()
            .any(|c| c.id == "003A" && !c.deleted)
    );
}
