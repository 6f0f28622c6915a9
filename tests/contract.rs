//! The contract's shared expectations (`fixtures/expectations/`), run through
//! wasmtime. `tests/jco/contract.test.js` runs the same files through jco.

use crmsync_host::bindings::crmsync::sync::types::{
    Counterpart, CrmSide, ErrorScope, Failure, FieldMapping, FieldTarget, FieldType,
    HandleConflict, HandleKind, HttpFailure, HubspotScope, HubspotSource, LinkState, MappedContact,
    MatchOutcome, MergedId, MergedRecord, Pairing, PairingRules, Property, ReadRecord, Source,
    SourceRecord, SyncError, UnpairedRecord,
};
use crmsync_host::cassette::Cassette;
use crmsync_host::http::HttpMode;
use crmsync_host::store::{ContactData, ContactStore};
use crmsync_host::sync::{category_name, field_json};
use crmsync_tests::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

fn cases(file: &str) -> Vec<Value> {
    let path = workspace().join("fixtures").join("expectations").join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str::<Value>(&text)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn text(value: &Value) -> String {
    value
        .as_str()
        .unwrap_or_else(|| panic!("expected a string, got {value}"))
        .to_owned()
}

fn opt_text(value: &Value) -> Option<String> {
    value.as_str().map(str::to_owned)
}

fn texts(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| a.iter().map(text).collect())
        .unwrap_or_default()
}

fn target(value: &Value) -> FieldTarget {
    match value {
        Value::String(s) => match s.as_str() {
            "first-name" => FieldTarget::FirstName,
            "last-name" => FieldTarget::LastName,
            "full-name" => FieldTarget::FullName,
            "email" => FieldTarget::Email,
            "phone" => FieldTarget::Phone,
            other => panic!("unknown target {other}"),
        },
        Value::Object(o) => FieldTarget::Custom(text(&o["custom"])),
        other => panic!("unknown target {other}"),
    }
}

/// A fresh instance with no network and `store` as its directory.
fn instance(store: ContactStore) -> crmsync_host::runtime::Instance {
    let cassette = Arc::new(Mutex::new(Cassette::new(None)));
    instance_with(
        runtime(),
        "http://replay.invalid",
        HttpMode::Replay(cassette),
        None,
        store,
    )
}

fn error_json(error: &SyncError) -> Value {
    json!({
        "category": category_name(error.category),
        "retryable": error.retryable,
        "retry_after_ms": error.retry_after_ms,
        "scope": match error.scope { ErrorScope::Record => "record", ErrorScope::Field => "field", ErrorScope::Sync => "sync" },
    })
}

#[test]
fn map_fields_meets_the_shared_expectations() {
    let mut instance = instance(ContactStore::open_in_memory().unwrap());
    for case in cases("map-fields.json") {
        let record = SourceRecord {
            id: text(&case["record"]["id"]),
            properties: case["record"]["properties"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(name, value)| Property {
                    name: name.clone(),
                    value: opt_text(value),
                })
                .collect(),
            modified_at: None,
            merged_ids: Vec::new(),
            company_ids: Vec::new(),
        };
        let mappings: Vec<FieldMapping> = case["mappings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| FieldMapping {
                source: text(&m[0]),
                target: target(&m[1]),
                value_type: FieldType::Text,
            })
            .collect();
        let mapped = instance.map_fields(&record, &mappings).unwrap().contact;
        let fields: BTreeMap<String, serde_json::Value> = mapped
            .fields
            .iter()
            .map(|f| (f.name.clone(), field_json(&f.value)))
            .collect();
        let got = json!({"external_id": mapped.external_id, "name": mapped.name, "emails": mapped.emails,
                         "phones": mapped.phones, "fields": fields});
        assert_eq!(got, case["expect"], "{}", case["name"]);
    }
}

/// A case's `directory` in a fresh store; store ids to the case's names.
fn directory_store(case: &Value) -> (ContactStore, BTreeMap<String, String>) {
    let store = ContactStore::open_in_memory().unwrap();
    let mut names = BTreeMap::new();
    for entry in case["directory"].as_array().unwrap() {
        let data = ContactData {
            name: None,
            emails: texts(&entry["emails"]),
            phones: texts(&entry["phones"]),
            fields: BTreeMap::new(),
        };
        let id = match opt_text(&entry["external_id"]) {
            Some(external_id) => store.create(&external_id, &data, None).unwrap(),
            None => store.insert_unlinked(&data).unwrap(),
        };
        names.insert(id.to_string(), text(&entry["id"]));
    }
    (store, names)
}

fn mapped_contact(contact: &Value) -> MappedContact {
    MappedContact {
        external_id: text(&contact["external_id"]),
        name: None,
        emails: texts(&contact["emails"]),
        phones: texts(&contact["phones"]),
        domains: vec![],
        fields: vec![],
    }
}

/// An outcome as the expectations write it, ids by the case's names
/// (`page:<i>` stays as it is).
fn outcome_json(outcome: MatchOutcome, names: &BTreeMap<String, String>) -> Value {
    let name = |id: String| names.get(&id).cloned().unwrap_or(id);
    match outcome {
        MatchOutcome::Update(id) => json!({"outcome": "update", "id": name(id)}),
        MatchOutcome::Link(id) => json!({"outcome": "link", "id": name(id)}),
        MatchOutcome::Create => json!({"outcome": "create"}),
        MatchOutcome::Skip(error) => {
            json!({"outcome": "skip", "category": category_name(error.category)})
        }
    }
}

#[test]
fn match_contact_meets_the_shared_expectations() {
    for case in cases("match-contact.json") {
        let (store, names) = directory_store(&case);
        let contact = mapped_contact(&case["contact"]);
        let got = outcome_json(instance(store).match_contact(&contact).unwrap(), &names);
        assert_eq!(got, case["expect"], "{}", case["name"]);
    }
}

#[test]
fn match_page_meets_the_shared_expectations() {
    for case in cases("match-page.json") {
        let (store, names) = directory_store(&case);
        let contacts: Vec<MappedContact> = case["contacts"]
            .as_array()
            .unwrap()
            .iter()
            .map(mapped_contact)
            .collect();
        let mut instance = instance(store);
        // The runner's call (packed keys) and an embedder's (a list of
        // mapped contacts) decide alike, through each one's look-up.
        let listed = instance.match_page(&contacts).unwrap();
        let refs: Vec<&MappedContact> = contacts.iter().collect();
        let packed = instance.match_keys_page(&refs).unwrap();
        assert_eq!(packed, listed, "{}", case["name"]);
        let got: Vec<Value> = listed
            .into_iter()
            .map(|outcome| outcome_json(outcome, &names))
            .collect();
        assert_eq!(Value::from(got), case["expect"], "{}", case["name"]);
    }
}

fn crm_side(value: &Value) -> CrmSide {
    match value.as_str() {
        Some("source") => CrmSide::Source,
        Some("destination") => CrmSide::Destination,
        other => panic!("unknown side {other:?}"),
    }
}

fn pairing_rules(value: &Value) -> PairingRules {
    PairingRules {
        side: crm_side(&value["side"]),
        companies: value["companies"].as_bool().unwrap(),
        handle_mapped: value["handle_mapped"].as_bool().unwrap(),
    }
}

fn counterparts(value: &Value) -> Vec<Counterpart> {
    let list = value.as_array().map(Vec::as_slice).unwrap_or_default();
    list.iter()
        .map(|c| Counterpart {
            id: text(&c["id"]),
            handles: texts(&c["handles"]),
            linked: c["linked"].as_bool().unwrap(),
        })
        .collect()
}

fn pairing_json(pairing: Pairing) -> Value {
    match pairing {
        Pairing::Linked(pair) => json!({
            "pairing": "linked", "counterpart_id": pair.counterpart_id, "resume": pair.resume
        }),
        Pairing::Skipped => json!({"pairing": "skipped"}),
        Pairing::Paired(id) => json!({"pairing": "paired", "id": id}),
        Pairing::Create => json!({"pairing": "create"}),
        Pairing::LookUp(handle) => json!({"pairing": "look-up", "handle": handle}),
        Pairing::Rejected(error) => {
            json!({"pairing": "rejected", "category": category_name(error.category)})
        }
    }
}

#[test]
fn pairing_across_crms_meets_the_shared_expectations() {
    let mut instance = instance(ContactStore::open_in_memory().unwrap());
    for case in cases("pairing.json") {
        let records = case["records"].as_array().unwrap();
        let got: Value = match case["call"].as_str().unwrap() {
            "pair-read" => {
                let records: Vec<ReadRecord> = records
                    .iter()
                    .map(|r| ReadRecord {
                        id: text(&r["id"]),
                        handles: texts(&r["handles"]),
                        link: (!r["link"].is_null()).then(|| LinkState {
                            counterpart_id: opt_text(&r["link"]["counterpart_id"]),
                            syncing: r["link"]["syncing"].as_bool().unwrap(),
                            stopped_by: (!r["link"]["stopped_by"].is_null())
                                .then(|| crm_side(&r["link"]["stopped_by"])),
                        }),
                        read_counterparts: counterparts(&r["read_counterparts"]),
                    })
                    .collect();
                let rules = pairing_rules(&case["rules"]);
                let out = instance.pair_read(&rules, &records).unwrap();
                out.into_iter().map(pairing_json).collect()
            }
            "pair-looked-up" => {
                let records: Vec<UnpairedRecord> = records
                    .iter()
                    .map(|r| UnpairedRecord {
                        id: text(&r["id"]),
                        handles: texts(&r["handles"]),
                    })
                    .collect();
                let out = instance
                    .pair_looked_up(
                        &pairing_rules(&case["rules"]),
                        &records,
                        &counterparts(&case["found"]),
                        &texts(&case["taken"]),
                    )
                    .unwrap();
                out.into_iter().map(pairing_json).collect()
            }
            "fold-merges" => {
                let records: Vec<MergedRecord> = records
                    .iter()
                    .map(|r| MergedRecord {
                        id: text(&r["id"]),
                        linked: r["linked"].as_bool().unwrap(),
                        merged: r["merged"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|m| MergedId {
                                id: text(&m["id"]),
                                linked: m["linked"].as_bool().unwrap(),
                            })
                            .collect(),
                    })
                    .collect();
                json!(instance.fold_merges(&records).unwrap())
            }
            other => panic!("unknown call {other}"),
        };
        assert_eq!(got, case["expect"], "{}", case["name"]);
    }
}

#[test]
fn classify_error_meets_the_shared_expectations() {
    let mut instance = instance(ContactStore::open_in_memory().unwrap());
    for case in cases("classify-error.json") {
        let (kind, value) = case["failure"].as_object().unwrap().iter().next().unwrap();
        let failure = match kind.as_str() {
            "http" => Failure::Http(HttpFailure {
                status: value["status"].as_u64().unwrap() as u16,
                retry_after: opt_text(&value["retry_after"]),
                body: text(&value["body"]),
            }),
            "transport" => Failure::Transport(text(value)),
            "invalid_response" => Failure::InvalidResponse(text(value)),
            "missing_handle" => Failure::MissingHandle(text(value)),
            "field_not_found" => Failure::FieldNotFound(text(value)),
            "handle_taken" => Failure::HandleTaken(HandleConflict {
                record_id: text(&value["record_id"]),
                kind: if value["kind"] == "email" {
                    HandleKind::Email
                } else {
                    HandleKind::Phone
                },
                handle: text(&value["handle"]),
                owner_external_id: text(&value["owner_external_id"]),
            }),
            other => panic!("unknown failure {other}"),
        };
        let error = instance.classify_error(&failure).unwrap();
        assert_eq!(error_json(&error), case["expect"], "{}", case["name"]);
        assert!(
            !error.message.is_empty() && !error.resolution.is_empty(),
            "{}",
            case["name"]
        );
    }
}

#[test]
fn fetch_page_meets_the_shared_expectations() {
    for case in cases("fetch-page.json") {
        let path = workspace()
            .join("fixtures")
            .join("hubspot")
            .join(text(&case["cassette"]));
        let cassette = Arc::new(Mutex::new(Cassette::load(&path).unwrap()));
        let base_url = "https://api.hubapi.com";
        let mut instance = instance_with(
            runtime(),
            base_url,
            HttpMode::Replay(cassette),
            None,
            ContactStore::open_in_memory().unwrap(),
        );
        let source = Source::HubspotContacts(HubspotSource {
            base_url: base_url.into(),
            scope: match opt_text(&case["source"]["list_id"]) {
                Some(list) => HubspotScope::ListMembers(list),
                None => HubspotScope::All,
            },
            properties: texts(&case["source"]["properties"]),
            filters: Vec::new(),
            with_companies: false,
        });
        let got = match instance
            .fetch_page(&source, opt_text(&case["cursor"]).as_deref())
            .unwrap()
        {
            Ok(page) => {
                json!({"ids": page.records.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
                               "next_cursor": page.next_cursor})
            }
            Err(error) => json!({"error": category_name(error.category)}),
        };
        assert_eq!(got, case["expect"], "{}", case["name"]);
    }
}

/// The WIT of every `crmsync:sync` interface `world` imports or exports, by
/// direction, printed without docs.
fn crmsync_interfaces(
    resolve: &wit_parser::Resolve,
    world: wit_parser::WorldId,
) -> BTreeMap<String, String> {
    let mut printed = BTreeMap::new();
    let world = &resolve.worlds[world];
    for (direction, items) in [("import", &world.imports), ("export", &world.exports)] {
        for item in items.values() {
            let wit_parser::WorldItem::Interface { id, .. } = item else {
                continue;
            };
            let name = resolve.id_of(*id).unwrap_or_default();
            if !name.starts_with("crmsync:sync/") {
                continue;
            }
            let mut printer = wit_component::WitPrinter::default();
            printer.emit_docs(false);
            printer.print_interface(resolve, *id).unwrap();
            printed.insert(
                format!("{direction} {name}"),
                normalise(&printer.output.to_string()),
            );
        }
    }
    printed
}

/// Each type or function is one blank-line separated block; encoding does
/// not keep their order (nor that of a `use` list), so compare them sorted.
fn normalise(wit: &str) -> String {
    let mut blocks: Vec<String> = wit
        .split("\n\n")
        .map(|block| {
            let block = block.trim();
            match block
                .strip_prefix("use types.{")
                .and_then(|rest| rest.strip_suffix("};"))
            {
                Some(names) => {
                    let mut names: Vec<&str> = names.split(", ").collect();
                    names.sort();
                    format!("use types.{{{}}};", names.join(", "))
                }
                None => block.to_owned(),
            }
        })
        .collect();
    blocks.sort();
    blocks.join("\n\n")
}

#[test]
fn the_built_component_implements_exactly_the_published_wit() {
    let mut published = wit_parser::Resolve::default();
    let (package, _) = published.push_dir(workspace().join("wit")).unwrap();
    let world = published.select_world(&[package], Some("plugin")).unwrap();
    let expected = crmsync_interfaces(&published, world);

    let bytes = std::fs::read(component_path()).unwrap();
    let wit_parser::decoding::DecodedWasm::Component(built, built_world) =
        wit_parser::decoding::decode(&bytes).unwrap()
    else {
        panic!("the build output is not a component");
    };
    let actual = crmsync_interfaces(&built, built_world);

    assert_eq!(
        expected.keys().collect::<Vec<_>>(),
        [
            "export crmsync:sync/sync@0.8.0",
            "import crmsync:sync/directory@0.8.0",
            "import crmsync:sync/types@0.8.0"
        ]
    );
    assert_eq!(
        actual, expected,
        "the component's crmsync interfaces drifted from wit/"
    );

    // Everything else it imports is a standard WASI interface a host already has.
    let standard = [
        "wasi:io/",
        "wasi:clocks/",
        "wasi:http/types@",
        "wasi:http/outgoing-handler@",
        "wasi:cli/",
        "wasi:random/",
    ];
    for item in built.worlds[built_world].imports.values() {
        if let wit_parser::WorldItem::Interface { id, .. } = item {
            let name = built.id_of(*id).unwrap_or_default();
            assert!(
                name.starts_with("crmsync:sync/") || standard.iter().any(|p| name.starts_with(p)),
                "unexpected import {name}: no filesystem, sockets or other capability may creep in"
            );
        }
    }
}
