//! Property tests of the page parsers and the mapping: for any input —
//! mutated real pages, random bytes, deep nesting, wrong types, invalid
//! UTF-8 — parsing returns a page or a classified error (never a panic), and
//! mapping keeps its invariants. Seeded, bounded, deterministic.

use crmsync_plugin::hubspot::{
    Listing, parse_batch_read, parse_memberships, parse_objects_page, parse_properties,
};
use crmsync_plugin::mapping::map_fields;
use crmsync_plugin::types::{
    ErrorCategory, FieldData, FieldMapping, FieldTarget, FieldType, Property, SourceRecord,
};

const PAGE: &str = r#"{"results":[{"id":"1","properties":{"email":"A@x.io","firstname":"Ada","phone":"+1 (555) 010","hs_additional_emails":"b@x.io;c@x.io"},"createdAt":"2024-01-01T00:00:00Z","updatedAt":"2024-01-02T00:00:00Z","archived":false},{"id":"2","properties":{"email":null}}],"paging":{"next":{"after":"2","link":"x"}}}"#;
const MEMBERS: &str = r#"{"results":[{"recordId":"1","membershipTimestamp":"2024-01-01T00:00:00Z"},{"recordId":"2"}],"paging":{"next":{"after":"m2"}}}"#;

fn mutate(rng: &mut fastrand::Rng, input: &[u8]) -> Vec<u8> {
    let mut bytes = input.to_vec();
    for _ in 0..rng.usize(1..8) {
        if bytes.is_empty() {
            bytes.push(rng.u8(..));
            continue;
        }
        let at = rng.usize(..bytes.len());
        match rng.u8(0..6) {
            0 => bytes[at] = rng.u8(..), // any byte, invalid UTF-8 included
            1 => {
                bytes.remove(at);
            }
            2 => bytes.insert(at, *b"{}[]\",:0n\\".get(rng.usize(..10)).unwrap()),
            3 => bytes.truncate(at), // cut short
            4 => {
                let end = rng.usize(at..bytes.len());
                let chunk = bytes[at..end].to_vec();
                bytes.splice(at..at, chunk); // duplicate a span
            }
            _ => bytes[at] = b"0123456789tfn\""[rng.usize(..14)], // wrong value types
        }
    }
    bytes
}

fn check(body: &[u8]) {
    // Each parser answers Ok or a classified invalid-response; a panic fails the test.
    for result in [
        parse_objects_page(body, Listing::Live).map(|_| ()),
        parse_batch_read(body).map(|_| ()),
        parse_memberships(body).map(|_| ()),
        parse_properties(body).map(|_| ()),
    ] {
        if let Err(error) = result {
            assert_eq!(
                error.category,
                ErrorCategory::InvalidResponse,
                "{}",
                error.message
            );
            assert!(!error.message.is_empty() && !error.resolution.is_empty());
        }
    }
}

#[test]
fn parsers_never_panic_on_mutated_pages() {
    let mut rng = fastrand::Rng::with_seed(0xC0FFEE);
    for i in 0..20_000 {
        let seed = if i % 2 == 0 { PAGE } else { MEMBERS };
        check(&mutate(&mut rng, seed.as_bytes()));
    }
}

#[test]
fn parsers_never_panic_on_random_bytes_deep_nesting_or_huge_numbers() {
    let mut rng = fastrand::Rng::with_seed(42);
    for _ in 0..5_000 {
        let bytes: Vec<u8> = (0..rng.usize(0..200)).map(|_| rng.u8(..)).collect();
        check(&bytes);
    }
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    check(deep.as_bytes());
    let deep_object = format!(
        "{{\"results\":[{}1{}]}}",
        "{\"a\":".repeat(10_000),
        "}".repeat(10_000)
    );
    check(deep_object.as_bytes());
    check(br#"{"results":[{"id":1e999,"properties":{"email":18446744073709551616}}]}"#);
    check(b"\xff\xfe{\"results\":[]}");
}

#[test]
fn mapping_keeps_its_invariants_for_any_values() {
    let mut rng = fastrand::Rng::with_seed(7);
    let alphabet: Vec<char> = " \t;@+-().0123456789aAzZ\u{0}\u{202E}\u{200F}é🙂,"
        .chars()
        .collect();
    let mappings: Vec<FieldMapping> = [
        ("firstname", FieldTarget::FirstName),
        ("lastname", FieldTarget::LastName),
        ("email", FieldTarget::Email),
        ("hs_additional_emails", FieldTarget::Email),
        ("phone", FieldTarget::Phone),
        ("mobilephone", FieldTarget::Phone),
        ("jobtitle", FieldTarget::Custom("title".into())),
        ("annualrevenue", FieldTarget::Custom("revenue".into())),
    ]
    .into_iter()
    .map(|(source, target)| FieldMapping {
        value_type: if source == "annualrevenue" {
            FieldType::Number
        } else {
            FieldType::Text
        },
        source: source.into(),
        target,
    })
    .collect();
    for _ in 0..20_000 {
        let mut value = || -> Option<String> {
            rng.bool().then(|| {
                (0..rng.usize(0..24))
                    .map(|_| alphabet[rng.usize(..alphabet.len())])
                    .collect()
            })
        };
        let properties = [
            "firstname",
            "lastname",
            "email",
            "hs_additional_emails",
            "phone",
            "mobilephone",
            "jobtitle",
            "annualrevenue",
        ]
        .iter()
        .map(|name| Property {
            name: (*name).into(),
            value: value(),
        })
        .collect();
        let record = SourceRecord {
            id: "r".into(),
            properties,
            modified_at: None,
            merged_ids: Vec::new(),
            company_ids: Vec::new(),
        };
        let mapped = map_fields(record.clone(), &mappings);
        // A typed value either converts or is one field error, never both.
        let revenue = record.properties.iter().find(|p| p.name == "annualrevenue");
        let raw = revenue
            .and_then(|p| p.value.as_deref())
            .filter(|v| !v.is_empty());
        let converted = mapped.contact.fields.iter().any(|f| f.name == "revenue");
        assert_eq!(
            raw.is_some(),
            converted || !mapped.field_errors.is_empty(),
            "{raw:?}"
        );
        assert!(!converted || mapped.field_errors.is_empty());
        let mapped = mapped.contact;

        for email in &mapped.emails {
            assert!(
                !email.is_empty() && email.trim() == email && !email.contains(';'),
                "{email:?}"
            );
            assert_eq!(*email, email.to_lowercase());
        }
        for phone in &mapped.phones {
            let digits = phone.strip_prefix('+').unwrap_or(phone);
            assert!(
                !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()),
                "{phone:?}"
            );
        }
        let mut unique = mapped.emails.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), mapped.emails.len(), "duplicate emails");
        let mut unique = mapped.phones.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), mapped.phones.len(), "duplicate phones");
        if let Some(name) = &mapped.name {
            assert!(!name.is_empty() && name.trim() == name, "{name:?}");
        }
        // Custom fields are verbatim: whatever the source sent, non-empty.
        let title = record
            .properties
            .iter()
            .find(|p| p.name == "jobtitle")
            .and_then(|p| p.value.clone());
        assert_eq!(
            mapped
                .fields
                .iter()
                .find(|f| f.name == "title")
                .map(|f| f.value.clone()),
            title.filter(|t| !t.is_empty()).map(FieldData::Text)
        );
    }
}
