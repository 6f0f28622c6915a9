//! Records `fixtures/two-way/hubspot-salesforce.json`, the demo's cassette:
//! the first run of `examples/two-way.toml` between the loopback HubSpot and
//! Salesforce servers, seeded with a few people who show what a two-way run
//! does (a pair matched by email with a conflict, a record created each way,
//! one refused by Salesforce, one with no email), and companies (one matched
//! by domain, whose contact gets its Account; one created in HubSpot).
//!
//! `cargo run -p crmsync-tests --example record_two_way` (after building the
//! component) rewrites the file; `tests/two_way.rs` replays it.

use crmsync_tests::hubspot_server::{Contact, HubSpotServer};
use crmsync_tests::salesforce_server::{Record, SalesforceServer};
use crmsync_tests::*;
use serde_json::json;

fn main() -> anyhow::Result<()> {
    let hubspot = HubSpotServer::start(TOKEN);
    let salesforce = SalesforceServer::start(TOKEN);
    {
        let mut hs = hubspot.state();
        let people: [&[(&str, Option<&str>)]; 4] = [
            &[
                ("firstname", Some("Ann")),
                ("lastname", Some("Ames")),
                ("email", Some("ann@acme.io")),
                ("jobtitle", Some("CTO")),
                ("company", Some("Acme")),
            ],
            &[
                ("firstname", Some("Bo")),
                ("lastname", Some("Berg")),
                ("email", Some("bo@beta.io")),
                ("jobtitle", Some("Founder")),
                ("company", Some("Beta")),
            ],
            // No company: Salesforce refuses the Lead (E9, naming Company).
            &[
                ("firstname", Some("Dee")),
                ("lastname", Some("Diaz")),
                ("email", Some("dee@delta.io")),
            ],
            // No email: never created on the other side (E1).
            &[
                ("firstname", Some("Eve")),
                ("lastname", Some("Eng")),
                ("phone", Some("+1 555 0199")),
            ],
        ];
        for (i, properties) in people.iter().enumerate() {
            hs.put(Contact::new(i as u64 + 1, properties));
        }
        // Ann's company, which Salesforce knows by its website.
        hs.companies.push(Contact::new(
            9001,
            &[("name", Some("Acme")), ("domain", Some("acme.io"))],
        ));
        hs.associations.push((1, 9001, true));
        let mut sf = salesforce.state();
        sf.contacts.push(Record::new(
            "003Dm00000AnnAAA",
            &[
                ("FirstName", json!("Ann")),
                ("LastName", json!("Ames")),
                ("Email", json!("ann@acme.io")),
                ("Title", json!("VP Engineering")),
            ],
            1_717_200_000_000,
        ));
        sf.accounts.push(Record::new(
            "001Dm00000AcmAAA",
            &[
                ("Name", json!("Acme Inc.")),
                ("Website", json!("https://www.acme.io/")),
            ],
            1_717_200_000_000,
        ));
        // Only in Salesforce: becomes a HubSpot company.
        sf.accounts.push(Record::new(
            "001Dm00000GlxAAA",
            &[
                ("Name", json!("Globex")),
                ("Website", json!("globex.example")),
            ],
            1_717_200_000_000,
        ));
        sf.leads.push(Record::new(
            "00QDm00000CyCAAA",
            &[
                ("FirstName", json!("Cy")),
                ("LastName", json!("Cole")),
                ("Email", json!("cy@cole.io")),
                ("Company", json!("Cole & Co")),
                ("Title", json!("Buyer")),
                ("Status", json!("Open - Not Contacted")),
                ("IsConverted", json!(false)),
            ],
            1_717_200_000_000,
        ));
    }
    set_env("DEMO_HUBSPOT_TOKEN", TOKEN);
    set_env("DEMO_SF_TOKEN", TOKEN);
    let dir = tempfile::tempdir()?;
    let example = std::fs::read_to_string(workspace().join("examples/two-way.toml"))?
        .replace("https://api.hubapi.com", &hubspot.base_url)
        .replace("https://demo.my.salesforce.com", &salesforce.instance_url)
        .replace("../target/demo/two-way.sqlite", "two-way.sqlite");
    let config = dir.path().join("two-way.toml");
    std::fs::write(&config, example)?;
    let out = workspace().join("fixtures/two-way/hubspot-salesforce.json");
    let (exit, summary) = crmsync(&[
        "sync",
        "--config",
        config.to_str().expect("a UTF-8 path"),
        "--component",
        component_path().to_str().expect("a UTF-8 path"),
        "--record",
        out.to_str().expect("a UTF-8 path"),
    ])?;
    println!("{summary}\n{exit:?}: recorded {}", out.display());
    Ok(())
}
