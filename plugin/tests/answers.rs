//! Property tests of the Salesforce readers and the write-answer parsers:
//! for any body (mutated real answers, random bytes, wrong types) they return
//! a value or a classified error, never a panic; and a HubSpot batch answer,
//! in whatever order and with whatever fields left out, never pairs a record
//! with a result that is not its own. Seeded, bounded, deterministic.

use crmsync_plugin::errors::classify_salesforce;
use crmsync_plugin::salesforce::{parse_describe, parse_query_page};
use crmsync_plugin::types::{
    ErrorCategory, FieldData, HttpFailure, OutgoingRecord, OutgoingValue, SalesforceObject,
    WriteOutcome,
};
use crmsync_plugin::writes::{read_hubspot_answer, read_salesforce_answer};
use serde_json::{Value, json};
use std::collections::HashSet;

const QUERY: &str = r#"{"totalSize":3,"done":false,"nextRecordsUrl":"/services/data/v60.0/query/01gXX-2000","records":[{"attributes":{"type":"Lead","url":"/x"},"Id":"00Q1","SystemModstamp":"2024-06-01T12:00:00.000+0000","Email":"a@x.io","IsConverted":false,"Status":"Open"},{"attributes":{"type":"Lead"},"Id":"00Q2","Email":null,"AnnualRevenue":12.5,"Owner":{"Email":"o@x.io"}}]}"#;
const DESCRIBE: &str = r#"{"name":"Lead","fields":[{"name":"Email","label":"Email","type":"email","picklistValues":[]},{"name":"Status","label":"Status","type":"picklist","picklistValues":[{"value":"Open","active":true},{"value":"Old","active":false}]}]}"#;
const SAVED: &str = r#"[{"id":"00Q1","success":true,"errors":[]},{"success":false,"errors":[{"statusCode":"REQUIRED_FIELD_MISSING","message":"Required fields are missing: [Company]","fields":["Company"]}]}]"#;
const HUBSPOT_207: &str = r#"{"status":"COMPLETE","results":[{"id":"1","properties":{"email":"a@x.io"}},{"id":"3","objectWriteTraceId":"c"}],"numErrors":1,"errors":[{"status":"error","category":"VALIDATION_ERROR","message":"Property values were not valid: [{\"isValid\":false,\"name\":\"email\"}]","context":{"objectWriteTraceId":["b"]},"errors":[{"message":"bad","context":{"propertyName":["email"]}}]}]}"#;
const SALESFORCE_ERROR: &str = r#"[{"message":"No such column 'Foo__c' on entity 'Lead'.","errorCode":"INVALID_FIELD","fields":["Foo__c"]}]"#;

fn mutate(rng: &mut fastrand::Rng, input: &[u8]) -> Vec<u8> {
    let mut bytes = input.to_vec();
    for _ in 0..rng.usize(1..8) {
        if bytes.is_empty() {
            bytes.push(rng.u8(..));
            continue;
        }
        let at = rng.usize(..bytes.len());
        match rng.u8(0..6) {
            0 => bytes[at] = rng.u8(..),
            1 => {
                bytes.remove(at);
            }
            2 => bytes.insert(at, *b"{}[]\",:0n\\".get(rng.usize(..10)).unwrap()),
            3 => bytes.truncate(at),
            4 => {
                let end = rng.usize(at..bytes.len());
                let chunk = bytes[at..end].to_vec();
                bytes.splice(at..at, chunk);
            }
            _ => bytes[at] = b"0123456789tfn\""[rng.usize(..14)],
        }
    }
    bytes
}

fn create(key: &str, email: &str) -> OutgoingRecord {
    OutgoingRecord {
        key: key.into(),
        id: None,
        company: None,
        values: vec![OutgoingValue {
            name: "email".into(),
            value: Some(FieldData::Text(email.into())),
        }],
    }
}

fn classified(error: &crmsync_plugin::types::SyncError) {
    assert!(!error.message.is_empty() && !error.resolution.is_empty());
}

/// Every parser of an answer, on one body: a value or a classified error.
fn check(body: &[u8], batch: &[&OutgoingRecord]) {
    for object in [
        SalesforceObject::Lead,
        SalesforceObject::Contact,
        SalesforceObject::Account,
    ] {
        if let Err(error) = parse_query_page(body, object) {
            assert_eq!(
                error.category,
                ErrorCategory::InvalidResponse,
                "{}",
                error.message
            );
        }
    }
    if let Err(error) = parse_describe(body) {
        assert_eq!(
            error.category,
            ErrorCategory::InvalidResponse,
            "{}",
            error.message
        );
    }
    match read_salesforce_answer(body, batch) {
        Ok(results) => assert_eq!(results.len(), batch.len()),
        Err(error) => assert_eq!(error.category, ErrorCategory::InvalidResponse),
    }
    for object in ["contacts", "companies"] {
        if let Err(error) = read_hubspot_answer(body, object, batch) {
            assert_eq!(error.category, ErrorCategory::InvalidResponse);
        }
    }
    for status in [400, 401, 403, 404, 500, 503] {
        classified(&classify_salesforce(&HttpFailure {
            status,
            retry_after: None,
            body: String::from_utf8_lossy(body).into_owned(),
        }));
    }
}

#[test]
fn readers_of_answers_never_panic_on_mutated_answers_or_random_bytes() {
    let records = [
        create("a", "a@x.io"),
        create("b", "b@x.io"),
        create("c", "c@x.io"),
    ];
    let batch: Vec<&OutgoingRecord> = records.iter().collect();
    let seeds = [QUERY, DESCRIBE, SAVED, HUBSPOT_207, SALESFORCE_ERROR];
    let mut rng = fastrand::Rng::with_seed(0x5A1E5F0);
    for i in 0..20_000 {
        check(&mutate(&mut rng, seeds[i % seeds.len()].as_bytes()), &batch);
    }
    for _ in 0..3_000 {
        let bytes: Vec<u8> = (0..rng.usize(0..200)).map(|_| rng.u8(..)).collect();
        check(&bytes, &batch);
    }
    let deep = format!("{}{}", "[".repeat(50_000), "]".repeat(50_000));
    check(deep.as_bytes(), &batch);
    check(
        br#"{"records":[{"Id":1e999,"Email":18446744073709551616}]}"#,
        &batch,
    );
}

/// A HubSpot batch-create answer for `emails` (created as ids 100+i): in a
/// random order, each result keeping its email (in any case), its trace id,
/// both or neither, with unrelated results mixed in.
fn shuffled_answer(rng: &mut fastrand::Rng, emails: &[String]) -> Value {
    let mut results: Vec<Value> = emails
        .iter()
        .enumerate()
        .map(|(i, email)| {
            let mut result = json!({ "id": format!("{}", 100 + i) });
            if rng.bool() {
                let shown = if rng.bool() {
                    email.to_uppercase()
                } else {
                    email.clone()
                };
                result["properties"] =
                    json!({ "email": shown, "hs_object_id": format!("{}", 100 + i) });
            } else if rng.bool() {
                result["properties"] = json!({});
            }
            if rng.u8(..4) == 0 {
                result["objectWriteTraceId"] = json!(format!("k{i}"));
            }
            result
        })
        .collect();
    // A result that is no input's: another email, or no email at all.
    if rng.bool() {
        results.push(json!({"id": "999", "properties": {"email": "stranger@x.io"}}));
    }
    rng.shuffle(&mut results);
    json!({ "status": "COMPLETE", "results": results })
}

#[test]
fn a_shuffled_hubspot_answer_never_pairs_a_record_with_another_ones_result() {
    let mut rng = fastrand::Rng::with_seed(0xBA7C4);
    for _ in 0..5_000 {
        let n = rng.usize(1..12);
        let emails: Vec<String> = (0..n).map(|i| format!("p{i}@x.io")).collect();
        let records: Vec<OutgoingRecord> = emails
            .iter()
            .enumerate()
            .map(|(i, e)| create(&format!("k{i}"), e))
            .collect();
        let batch: Vec<&OutgoingRecord> = records.iter().collect();
        let answer = shuffled_answer(&mut rng, &emails).to_string();
        let placement = read_hubspot_answer(answer.as_bytes(), "contacts", &batch).unwrap();
        let mut used = HashSet::new();
        for (i, outcome) in placement.outcomes.iter().enumerate() {
            if let Some(WriteOutcome::Written(id)) = outcome {
                // Input i was created as 100 + i: nothing else is its result.
                assert_eq!(*id, format!("{}", 100 + i), "input {i} of {n}: {answer}");
                assert!(used.insert(id.clone()), "{id} given twice: {answer}");
            }
        }
        // What could not be placed is left for a read-back, never guessed.
        for id in &placement.unplaced {
            assert!(!used.contains(id));
        }
    }
}
