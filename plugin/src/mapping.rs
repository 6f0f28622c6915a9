//! Field mapping (M1-M4): source properties to a destination contact.

use crate::types::{
    FieldData, FieldMapping, FieldTarget, FieldType, FieldValue, MappedContact, MappedPage,
    MappedRecord, Page, SourceRecord,
};
use crate::{errors, phones, values};

/// Maps every record of a page (see `fetch-mapped-page`).
pub fn map_page(page: Page, mappings: &[FieldMapping]) -> MappedPage {
    // A page's records list their properties in one order, as the API
    // sends them, so each mapping's property is looked for first where the
    // record before had it.
    let mut at = vec![0; mappings.len()];
    MappedPage {
        records: page
            .records
            .into_iter()
            .map(|record| map_record(record, mappings, &mut at))
            .collect(),
        excluded: page.excluded,
        next_cursor: page.next_cursor,
    }
}

/// Maps one record. Handles are normalised and de-duplicated (M3), the name is
/// merged (M2), plain fields are converted to their declared type (M4); a
/// value that does not convert is a field error and the field is left out.
pub fn map_fields(record: SourceRecord, mappings: &[FieldMapping]) -> MappedRecord {
    map_record(record, mappings, &mut vec![0; mappings.len()])
}

/// [`map_fields`], looking for the property of `mappings[i]` at `at[i]`
/// first and leaving there where it was found.
fn map_record(record: SourceRecord, mappings: &[FieldMapping], at: &mut [usize]) -> MappedRecord {
    let mut first = None;
    let mut last = None;
    let mut full = None;
    let mut emails: Vec<String> = Vec::new();
    let mut phones: Vec<String> = Vec::new();
    let mut domains: Vec<String> = Vec::new();
    let mut fields: Vec<FieldValue> = Vec::new();
    let mut field_errors = Vec::new();

    for (mapping, at) in mappings.iter().zip(at) {
        let Some(value) = property(&record, &mapping.source, at) else {
            continue;
        };
        match &mapping.target {
            FieldTarget::FirstName => first = first.or(name_part(value)),
            FieldTarget::LastName => last = last.or(name_part(value)),
            FieldTarget::FullName => full = full.or(name_part(value)),
            FieldTarget::Email => {
                for email in value.split(';').filter_map(normalize_email) {
                    push_unique(&mut emails, email);
                }
            }
            FieldTarget::Phone => {
                let phone = match &mapping.value_type {
                    // With a default region: E.164, else M3's rule, reported.
                    FieldType::Phone(region) => match phones::e164(value, region) {
                        Ok(phone) => Some(phone),
                        Err(why) => {
                            field_errors.push(errors::field_validation(
                                &record.id,
                                &mapping.source,
                                "phone",
                                value,
                                &format!("{why}; matched by its digits instead"),
                            ));
                            normalize_phone(value)
                        }
                    },
                    _ => normalize_phone(value),
                };
                if let Some(phone) = phone {
                    push_unique(&mut phones, phone);
                }
            }
            FieldTarget::Domain => {
                for domain in value.split(';').filter_map(normalize_domain) {
                    push_unique(&mut domains, domain);
                }
            }
            FieldTarget::Custom(name) => {
                // Two properties mapped to one field: the first non-empty one wins.
                if fields.iter().any(|f| &f.name == name) {
                    continue;
                }
                match values::convert(value, &mapping.value_type) {
                    Ok(FieldData::Multi(selected)) if selected.is_empty() => {}
                    Ok(converted) => fields.push(FieldValue {
                        name: name.clone(),
                        value: converted,
                    }),
                    Err(why) => field_errors.push(errors::field_validation(
                        &record.id,
                        &mapping.source,
                        name,
                        value,
                        &why,
                    )),
                }
            }
        }
    }

    // The parts stay borrowed from the record until the one name is built.
    let name = match (full, first, last) {
        (Some(full), _, _) => Some(full.to_owned()),
        (None, Some(first), Some(last)) => Some([first, " ", last].concat()),
        (None, first, last) => first.or(last).map(str::to_owned),
    };

    MappedRecord {
        contact: MappedContact {
            external_id: record.id,
            name,
            emails,
            phones,
            domains,
            fields,
        },
        field_errors,
        modified_at: record.modified_at,
        merged_ids: record.merged_ids,
        company_ids: record.company_ids,
    }
}

/// A property's value, `None` when absent, null or empty (all mean "no value"
/// in HubSpot's API). It is looked for at `at` first; `at` is left where it
/// was found.
fn property<'a>(record: &'a SourceRecord, name: &str, at: &mut usize) -> Option<&'a str> {
    let properties = &record.properties;
    let found = match properties.get(*at) {
        Some(p) if same_name(&p.name, name) => p,
        _ => {
            *at = properties.iter().position(|p| same_name(&p.name, name))?;
            &properties[*at]
        }
    };
    found.value.as_deref().filter(|v| !v.is_empty())
}

/// `a == b`, eight bytes at a time. In the component `==` on strings calls
/// wasi-libc's `memcmp`, a loop over single bytes, which counted 1,500
/// instructions a record on the bench's path (4%), nearly all of them here.
fn same_name(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let (mut left, mut right) = (a.chunks_exact(8), b.chunks_exact(8));
    let word = |bytes: &[u8]| u64::from_ne_bytes(bytes.try_into().expect("eight bytes"));
    (&mut left).zip(&mut right).all(|(x, y)| word(x) == word(y))
        && left
            .remainder()
            .iter()
            .zip(right.remainder())
            .all(|(x, y)| x == y)
}

/// A name part with surrounding whitespace removed; blank parts count as absent (M2).
fn name_part(value: &str) -> Option<&str> {
    let trimmed = value.trim();
    (!trimmed.is_empty()).then_some(trimmed)
}

/// M3: emails compare after trimming and lower-casing.
pub fn normalize_email(raw: &str) -> Option<String> {
    let trimmed = raw.trim();
    (!trimmed.is_empty()).then(|| trimmed.to_lowercase())
}

/// M3: a leading `+` is kept, every other non-digit removed. A value with no
/// digit is not a phone number.
pub fn normalize_phone(raw: &str) -> Option<String> {
    let trimmed = raw.trim();
    let plus = trimmed.starts_with('+');
    let mut phone = String::with_capacity(trimmed.len());
    if plus {
        phone.push('+');
    }
    phone.extend(trimmed.chars().filter(char::is_ascii_digit));
    (phone.len() > usize::from(plus)).then_some(phone)
}

/// S3: a company domain compares lower-cased, without scheme, `www.`,
/// credentials, port, path or trailing dot (`https://www.Acme.com/about` is
/// `acme.com`). A value with no dot is not a domain.
pub fn normalize_domain(raw: &str) -> Option<String> {
    let text = raw.trim().to_lowercase();
    let text = text
        .split_once("://")
        .map_or(text.as_str(), |(_, rest)| rest);
    let host = text.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit_once('@').map_or(host, |(_, host)| host);
    let host = host.split(':').next().unwrap_or("").trim_end_matches('.');
    let host = host.strip_prefix("www.").unwrap_or(host);
    (host.contains('.') && !host.starts_with('.') && !host.contains(char::is_whitespace))
        .then(|| host.to_owned())
}

fn push_unique(values: &mut Vec<String>, value: String) {
    if !values.contains(&value) {
        values.push(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ErrorCategory, ErrorScope, FieldType, Property};

    fn record(props: &[(&str, Option<&str>)]) -> SourceRecord {
        SourceRecord {
            id: "101".into(),
            properties: props
                .iter()
                .map(|(n, v)| Property {
                    name: (*n).into(),
                    value: v.map(Into::into),
                })
                .collect(),
            modified_at: None,
            merged_ids: Vec::new(),
            company_ids: Vec::new(),
        }
    }

    /// HubSpot's standard contact mappings, as the host configures them by default.
    fn defaults() -> Vec<FieldMapping> {
        [
            ("firstname", FieldTarget::FirstName),
            ("lastname", FieldTarget::LastName),
            ("email", FieldTarget::Email),
            ("hs_additional_emails", FieldTarget::Email),
            ("phone", FieldTarget::Phone),
            ("mobilephone", FieldTarget::Phone),
        ]
        .into_iter()
        .map(|(source, target)| FieldMapping {
            source: source.to_owned(),
            target,
            value_type: FieldType::Text,
        })
        .collect()
    }

    fn map(props: &[(&str, Option<&str>)]) -> MappedContact {
        map_fields(record(props), &defaults()).contact
    }

    /// map_page looks for a property where the record before had it: records
    /// listing their properties in other orders, or lacking some, map as
    /// they do alone.
    #[test]
    fn a_page_maps_each_record_as_it_maps_alone_whatever_its_property_order() {
        let records = vec![
            record(&[
                ("email", Some("a@example.com")),
                ("firstname", Some("Ada")),
                ("lastname", Some("Lovelace")),
                ("phone", Some("+1 415 555 0101")),
            ]),
            record(&[
                ("phone", Some("+1 415 555 0102")),
                ("lastname", Some("Hopper")),
                ("email", Some("g@example.com")),
            ]),
            record(&[
                ("firstname", Some("Alan")),
                ("email", Some("t@example.com")),
            ]),
            record(&[]),
            record(&[
                ("lastname", Some("Liskov")),
                ("firstname", Some("Barbara")),
                ("mobilephone", Some("+1 415 555 0103")),
                ("email", Some("b@example.com")),
            ]),
        ];
        let alone: Vec<_> = records
            .iter()
            .map(|r| map_fields(r.clone(), &defaults()))
            .collect();
        let page = Page {
            records,
            excluded: Vec::new(),
            next_cursor: None,
        };
        assert_eq!(map_page(page, &defaults()).records, alone);
        assert_eq!(alone[1].contact.name.as_deref(), Some("Hopper"));
        assert_eq!(alone[4].contact.phones, ["+14155550103"]);
    }

    #[test]
    fn names_compare_as_strings_do_at_every_length() {
        let names = [
            "",
            "a",
            "email",
            "lastname",
            "firstname",
            "mobilephone",
            "hs_additional_emails",
        ];
        for a in names {
            for b in names {
                assert_eq!(same_name(a, b), a == b, "{a:?} {b:?}");
            }
            // One byte changed anywhere, in the words or in the tail.
            for at in 0..a.len() {
                let mut changed = a.as_bytes().to_vec();
                changed[at] ^= 1;
                let changed = String::from_utf8(changed).unwrap();
                assert!(!same_name(a, &changed), "{a:?} {changed:?}");
            }
        }
    }

    #[test]
    fn first_and_last_merge_into_one_name() {
        let c = map(&[("firstname", Some("Ada")), ("lastname", Some("Lovelace"))]);
        assert_eq!(c.name.as_deref(), Some("Ada Lovelace"));
        assert_eq!(c.external_id, "101");
    }

    #[test]
    fn one_part_alone_is_the_name_and_none_is_no_name() {
        assert_eq!(
            map(&[("lastname", Some("Hopper"))]).name.as_deref(),
            Some("Hopper")
        );
        assert_eq!(
            map(&[("firstname", Some(" Grace "))]).name.as_deref(),
            Some("Grace")
        );
        assert_eq!(
            map(&[("firstname", Some("  ")), ("lastname", None)]).name,
            None
        );
        assert_eq!(map(&[]).name, None);
    }

    #[test]
    fn emails_are_trimmed_lowercased_split_and_deduplicated() {
        let c = map(&[
            ("email", Some("  Ada@Example.COM ")),
            (
                "hs_additional_emails",
                Some("ada@example.com; second@Example.com;;third@x.io "),
            ),
        ]);
        assert_eq!(
            c.emails,
            ["ada@example.com", "second@example.com", "third@x.io"]
        );
    }

    #[test]
    fn phones_keep_a_leading_plus_and_only_digits() {
        let c = map(&[
            ("phone", Some("+1 (555) 010-0199")),
            ("mobilephone", Some("+1.555.010.0199")),
        ]);
        assert_eq!(c.phones, ["+15550100199"]);
        let c = map(&[("phone", Some("(555) 010-0199 ext. 7"))]);
        assert_eq!(c.phones, ["55501001997"]);
        let c = map(&[("phone", Some("n/a"))]);
        assert!(c.phones.is_empty());
    }

    #[test]
    fn null_and_empty_properties_are_absent() {
        let c = map(&[("email", None), ("phone", Some("")), ("firstname", None)]);
        assert!(c.emails.is_empty() && c.phones.is_empty() && c.name.is_none());
    }

    #[test]
    fn custom_fields_keep_their_value_verbatim() {
        let hostile = "Robert'); DROP TABLE contacts;-- \u{202E}\u{0}🙂";
        let mut mappings = defaults();
        mappings.push(FieldMapping {
            source: "jobtitle".into(),
            target: FieldTarget::Custom("title".into()),
            value_type: FieldType::Text,
        });
        let c = map_fields(record(&[("jobtitle", Some(hostile))]), &mappings).contact;
        assert_eq!(c.fields.len(), 1);
        assert_eq!(c.fields[0].name, "title");
        assert_eq!(c.fields[0].value, FieldData::Text(hostile.into()));
    }

    #[test]
    fn a_value_that_does_not_convert_is_a_field_error_and_the_rest_syncs() {
        let mut mappings = defaults();
        for (source, field, value_type) in [
            ("annualrevenue", "revenue", FieldType::Number),
            (
                "hs_lead_status",
                "status",
                FieldType::Picklist(vec!["NEW".into()]),
            ),
            ("tags", "tags", FieldType::MultiSelect(Vec::new())),
        ] {
            mappings.push(FieldMapping {
                source: source.into(),
                target: FieldTarget::Custom(field.into()),
                value_type,
            });
        }
        let mapped = map_fields(
            record(&[
                ("email", Some("ada@example.com")),
                ("annualrevenue", Some("a lot")),
                ("hs_lead_status", Some("NEW")),
                ("tags", Some(" ; ")),
            ]),
            &mappings,
        );
        assert_eq!(mapped.contact.emails, ["ada@example.com"]);
        assert_eq!(
            mapped.contact.fields,
            [FieldValue {
                name: "status".into(),
                value: FieldData::Text("NEW".into())
            }],
            "an empty multi-select is no value"
        );
        let [error] = &mapped.field_errors[..] else {
            panic!("{:?}", mapped.field_errors)
        };
        assert_eq!(error.category, ErrorCategory::Validation);
        assert_eq!(error.scope, ErrorScope::Field);
        assert_eq!(error.field.as_deref(), Some("annualrevenue"));
        assert_eq!(error.record_id.as_deref(), Some("101"));
        assert!(
            error.message.contains("\"a lot\"") && error.message.contains("revenue"),
            "{}",
            error.message
        );
    }

    #[test]
    fn domains_are_bare_lower_case_hosts() {
        for (raw, want) in [
            ("Acme.com", Some("acme.com")),
            ("https://www.Acme.com/about?x=1", Some("acme.com")),
            ("http://user@shop.acme.co.uk:8080/", Some("shop.acme.co.uk")),
            (" acme.com. ", Some("acme.com")),
            ("localhost", None),
            ("", None),
            ("not a domain.com", None),
        ] {
            assert_eq!(normalize_domain(raw).as_deref(), want, "{raw:?}");
        }
        let mapping = [FieldMapping {
            source: "domain".into(),
            target: FieldTarget::Domain,
            value_type: FieldType::Text,
        }];
        let c = map_fields(
            record(&[("domain", Some("acme.com; www.ACME.com;initech.com"))]),
            &mapping,
        );
        assert_eq!(c.contact.domains, ["acme.com", "initech.com"]);
    }

    #[test]
    fn unmapped_properties_are_ignored() {
        let c = map(&[("hs_object_id", Some("101")), ("favourite", Some("x"))]);
        assert!(c.fields.is_empty());
    }

    #[test]
    fn with_a_default_region_phones_in_any_format_are_one_e164_handle() {
        let mappings: Vec<FieldMapping> = defaults()
            .into_iter()
            .map(|m| match m.target {
                FieldTarget::Phone => FieldMapping {
                    value_type: FieldType::Phone("US".into()),
                    ..m
                },
                _ => m,
            })
            .collect();
        let national = map_fields(record(&[("phone", Some("(415) 555-0101"))]), &mappings);
        let international = map_fields(
            record(&[
                ("phone", Some("+1 415-555-0101")),
                ("mobilephone", Some("415.555.0101")),
            ]),
            &mappings,
        );
        assert_eq!(national.contact.phones, ["+14155550101"]);
        assert_eq!(international.contact.phones, ["+14155550101"]);
        assert!(national.field_errors.is_empty() && international.field_errors.is_empty());
        // Without the setting, M3 as before: two handles.
        let digits = map_fields(record(&[("phone", Some("(415) 555-0101"))]), &defaults());
        assert_eq!(digits.contact.phones, ["4155550101"]);
        // What does not parse falls back to M3's rule and is reported on the field.
        let odd = map_fields(record(&[("phone", Some("ext. 12"))]), &mappings);
        assert_eq!(odd.contact.phones, ["12"]);
        assert_eq!(odd.field_errors.len(), 1);
        let error = &odd.field_errors[0];
        assert_eq!(error.category, ErrorCategory::Validation);
        assert_eq!(error.scope, ErrorScope::Field);
        assert_eq!(error.field.as_deref(), Some("phone"));
        assert!(error.message.contains("ext. 12"), "{}", error.message);
    }
}
