//! Field mapping (M1-M3): source properties to a destination contact.

use crate::types::{
    FieldMapping, FieldTarget, FieldValue, MappedContact, MappedPage, MappedRecord, Page,
    SourceRecord,
};

/// Maps every record of a page (see `fetch-mapped-page`).
pub fn map_page(page: Page, mappings: &[FieldMapping]) -> MappedPage {
    MappedPage {
        records: page
            .records
            .into_iter()
            .map(|record| MappedRecord {
                contact: map_fields(&record, mappings),
                modified_at: record.modified_at,
                merged_ids: record.merged_ids,
            })
            .collect(),
        next_cursor: page.next_cursor,
    }
}

/// Maps one record. Handles are normalised and de-duplicated (M3), the name is
/// merged (M2), plain fields keep their value verbatim.
pub fn map_fields(record: &SourceRecord, mappings: &[FieldMapping]) -> MappedContact {
    let mut first = None;
    let mut last = None;
    let mut full = None;
    let mut emails: Vec<String> = Vec::new();
    let mut phones: Vec<String> = Vec::new();
    let mut fields: Vec<FieldValue> = Vec::new();

    for mapping in mappings {
        let Some(value) = property(record, &mapping.source) else {
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
                if let Some(phone) = normalize_phone(value) {
                    push_unique(&mut phones, phone);
                }
            }
            FieldTarget::Custom(name) => {
                // Two properties mapped to one field: the first non-empty one wins.
                if !fields.iter().any(|f| &f.name == name) {
                    fields.push(FieldValue {
                        name: name.clone(),
                        value: value.to_owned(),
                    });
                }
            }
        }
    }

    let name = full.or(match (first, last) {
        (Some(first), Some(last)) => Some(format!("{first} {last}")),
        (first, last) => first.or(last),
    });

    MappedContact {
        external_id: record.id.clone(),
        name,
        emails,
        phones,
        fields,
    }
}

/// A property's value, `None` when absent, null or empty (all mean "no value"
/// in HubSpot's API).
fn property<'a>(record: &'a SourceRecord, name: &str) -> Option<&'a str> {
    record
        .properties
        .iter()
        .find(|p| p.name == name)
        .and_then(|p| p.value.as_deref())
        .filter(|v| !v.is_empty())
}

/// A name part with surrounding whitespace removed; blank parts count as absent (M2).
fn name_part(value: &str) -> Option<String> {
    let trimmed = value.trim();
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
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
    let digits: String = trimmed.chars().filter(char::is_ascii_digit).collect();
    if digits.is_empty() {
        return None;
    }
    Some(if trimmed.starts_with('+') {
        format!("+{digits}")
    } else {
        digits
    })
}

fn push_unique(values: &mut Vec<String>, value: String) {
    if !values.contains(&value) {
        values.push(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Property;

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
        })
        .collect()
    }

    fn map(props: &[(&str, Option<&str>)]) -> MappedContact {
        map_fields(&record(props), &defaults())
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
        });
        let c = map_fields(&record(&[("jobtitle", Some(hostile))]), &mappings);
        assert_eq!(c.fields.len(), 1);
        assert_eq!(c.fields[0].name, "title");
        assert_eq!(c.fields[0].value, hostile);
    }

    #[test]
    fn unmapped_properties_are_ignored() {
        let c = map(&[("hs_object_id", Some("101")), ("favourite", Some("x"))]);
        assert!(c.fields.is_empty());
    }
}
