//! Pairing a HubSpot batch write's answer with its inputs by content, never by
//! position.
//!
//! HubSpot's `batch/create` returns its results in no particular order (HubSpot
//! has said the API cannot keep the input order), and the v3 answers carry no
//! `objectWriteTraceId` in successful results. Pairing by position linked one
//! person's record to another's contact. So a result is placed by, in order:
//! its trace id when it carries one; its id (an update names its record); the
//! value of the property HubSpot keeps unique per record (a contact's email, a
//! company's domain), normalised as matching normalises it. A create whose
//! result cannot be placed that way is re-read rather than guessed (see
//! [`Placement::rereads`]); inputs without such a value are sent one per
//! request by the caller ([`split_creates`]), where the lone result is theirs.

use crate::mapping::{normalize_domain, normalize_email};
use crate::types::{FieldData, OutgoingRecord, WriteOutcome};
use serde_json::{Map, Value};
use std::collections::HashSet;

/// The HubSpot property that pairs a created record of `object` with its
/// result: `email` for contacts (unique per contact), `domain` for companies.
pub fn key_property(object: &str) -> &'static str {
    if object == "companies" {
        "domain"
    } else {
        "email"
    }
}

/// A key property's value as it compares: normalised as a handle.
fn normalise(object: &str, value: &str) -> Option<String> {
    if object == "companies" {
        normalize_domain(value)
    } else {
        normalize_email(value)
    }
}

/// The content key of an outgoing record: its key property's value, normalised.
pub fn outgoing_key(object: &str, record: &OutgoingRecord) -> Option<String> {
    let property = key_property(object);
    record
        .values
        .iter()
        .find(|v| v.name == property)
        .and_then(|v| match &v.value {
            Some(FieldData::Text(text)) => normalise(object, text),
            _ => None,
        })
}

/// The content key of a record HubSpot answered with (`properties` of a
/// batch write or batch read result).
pub fn answered_key(object: &str, properties: &Map<String, Value>) -> Option<String> {
    properties
        .get(key_property(object))
        .and_then(Value::as_str)
        .and_then(|text| normalise(object, text))
}

/// Splits creates into those a batch answer can be paired with by content (a
/// key no other create of the group shares) and those that must go one per
/// request: no key (a company without a domain), or a key shared with another
/// create, whose two results no content could tell apart.
pub fn split_creates<'a>(
    object: &str,
    creates: &[&'a OutgoingRecord],
) -> (Vec<&'a OutgoingRecord>, Vec<&'a OutgoingRecord>) {
    let keys: Vec<Option<String>> = creates.iter().map(|r| outgoing_key(object, r)).collect();
    let mut seen = HashSet::new();
    let shared: HashSet<&String> = keys.iter().flatten().filter(|k| !seen.insert(*k)).collect();
    let (pairable, alone): (Vec<_>, Vec<_>) = creates
        .iter()
        .zip(&keys)
        .partition(|(_, key)| key.as_ref().is_some_and(|k| !shared.contains(k)));
    (
        pairable.into_iter().map(|(r, _)| *r).collect(),
        alone.into_iter().map(|(r, _)| *r).collect(),
    )
}

/// The outcomes of one batch as far as its answer placed them.
#[derive(Debug)]
pub struct Placement<'a> {
    object: &'a str,
    batch: &'a [&'a OutgoingRecord],
    /// Per input, in the batch's order.
    pub outcomes: Vec<Option<WriteOutcome>>,
    /// Ids of results no input could be paired with.
    pub unplaced: Vec<String>,
    /// Ids of every successful result: what this write created or updated.
    pub answered: HashSet<String>,
}

impl<'a> Placement<'a> {
    /// Nothing placed yet.
    pub fn new(object: &'a str, batch: &'a [&'a OutgoingRecord]) -> Self {
        Placement {
            object,
            batch,
            outcomes: vec![None; batch.len()],
            unplaced: Vec::new(),
            answered: HashSet::new(),
        }
    }

    /// Places a successful result: by trace id, then by id (an update), then
    /// by content (a create); a result none of these place is kept unplaced.
    pub fn place_result(
        &mut self,
        id: String,
        trace_id: Option<&str>,
        properties: &Map<String, Value>,
    ) {
        self.answered.insert(id.clone());
        let open = |i: usize, outcomes: &[Option<WriteOutcome>]| outcomes[i].is_none();
        let by_trace = trace_id.and_then(|trace| {
            (0..self.batch.len()).find(|&i| self.batch[i].key == trace && open(i, &self.outcomes))
        });
        let by_id = || {
            (0..self.batch.len()).find(|&i| {
                self.batch[i].id.as_deref() == Some(id.as_str()) && open(i, &self.outcomes)
            })
        };
        let place = by_trace
            .or_else(by_id)
            .or_else(|| self.by_content(properties));
        match place {
            Some(i) => self.outcomes[i] = Some(WriteOutcome::Written(id)),
            None => self.unplaced.push(id),
        }
    }

    /// The open create whose key the answered properties hold.
    fn by_content(&self, properties: &Map<String, Value>) -> Option<usize> {
        let key = answered_key(self.object, properties)?;
        (0..self.batch.len()).find(|&i| {
            self.outcomes[i].is_none()
                && self.batch[i].id.is_none()
                && outgoing_key(self.object, self.batch[i]).as_ref() == Some(&key)
        })
    }

    /// Places a record read back after the write by content: `Written` when
    /// this write's answer named it, `Exists` when it did not (the record was
    /// there before: the caller pairs it unless it is another's and writes
    /// the values to it as an update).
    pub fn place_reread(&mut self, id: String, properties: &Map<String, Value>) {
        let Some(i) = self.by_content(properties) else {
            return;
        };
        self.unplaced.retain(|u| *u != id);
        self.outcomes[i] = Some(if self.answered.contains(&id) {
            WriteOutcome::Written(id)
        } else {
            WriteOutcome::Exists(id)
        });
    }

    /// A batch of one create and one unplaced result: the result is its.
    pub fn place_lone(&mut self) {
        if self.batch.len() == 1
            && self.batch[0].id.is_none()
            && self.outcomes[0].is_none()
            && self.unplaced.len() == 1
        {
            self.outcomes[0] = self.unplaced.pop().map(WriteOutcome::Written);
        }
    }

    /// What to read back to place the creates still open: the unplaced
    /// results' ids (their key property tells whose they are), and the open
    /// creates' emails (contacts only: email is a unique id property of
    /// HubSpot contacts, so a contact the answer left out is found too).
    pub fn rereads(&self) -> (Vec<String>, Vec<String>) {
        let open: Vec<usize> = (0..self.batch.len())
            .filter(|&i| self.outcomes[i].is_none() && self.batch[i].id.is_none())
            .collect();
        if open.is_empty() {
            return (Vec::new(), Vec::new());
        }
        let emails = if self.object == "contacts" {
            open.iter()
                .filter_map(|&i| outgoing_key(self.object, self.batch[i]))
                .collect()
        } else {
            Vec::new()
        };
        (self.unplaced.clone(), emails)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::OutgoingValue;
    use serde_json::json;

    fn create(key: &str, email: Option<&str>) -> OutgoingRecord {
        OutgoingRecord {
            key: key.into(),
            id: None,
            company: None,
            values: email
                .map(|e| OutgoingValue {
                    name: "email".into(),
                    value: Some(FieldData::Text(e.into())),
                })
                .into_iter()
                .collect(),
        }
    }

    fn props(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn results_in_any_order_are_placed_by_their_normalised_email() {
        let records = [
            create("a", Some("Ann@X.io")),
            create("b", Some("bo@x.io")),
            create("c", Some(" cy@x.io")),
        ];
        let batch: Vec<&OutgoingRecord> = records.iter().collect();
        let mut placement = Placement::new("contacts", &batch);
        placement.place_result("3".into(), None, &props(json!({"email": "cy@x.io"})));
        placement.place_result("1".into(), None, &props(json!({"email": "ann@x.io"})));
        placement.place_result("2".into(), None, &props(json!({"email": "BO@x.io"})));
        assert_eq!(
            placement.outcomes,
            vec![
                Some(WriteOutcome::Written("1".into())),
                Some(WriteOutcome::Written("2".into())),
                Some(WriteOutcome::Written("3".into())),
            ]
        );
        assert!(placement.unplaced.is_empty());
    }

    #[test]
    fn a_result_without_its_key_is_left_to_a_reread_never_guessed() {
        let records = [create("a", Some("ann@x.io")), create("b", Some("bo@x.io"))];
        let batch: Vec<&OutgoingRecord> = records.iter().collect();
        let mut placement = Placement::new("contacts", &batch);
        placement.place_result("2".into(), None, &props(json!({"email": "bo@x.io"})));
        placement.place_result("1".into(), None, &props(json!({})));
        placement.place_lone();
        assert_eq!(placement.outcomes[0], None);
        assert_eq!(
            placement.rereads(),
            (vec!["1".to_owned()], vec!["ann@x.io".to_owned()])
        );
        placement.place_reread("1".into(), &props(json!({"email": "ann@x.io"})));
        assert_eq!(
            placement.outcomes[0],
            Some(WriteOutcome::Written("1".into()))
        );
        // A contact the answer never named is one that was there before.
        let mut placement = Placement::new("contacts", &batch);
        placement.place_result("2".into(), None, &props(json!({"email": "bo@x.io"})));
        placement.place_reread("77".into(), &props(json!({"email": "ann@x.io"})));
        assert_eq!(
            placement.outcomes[0],
            Some(WriteOutcome::Exists("77".into()))
        );
    }

    #[test]
    fn creates_without_a_unique_key_go_alone() {
        let records = [
            create("a", Some("ann@x.io")),
            create("b", None),
            create("c", Some("ANN@x.io")),
            create("d", Some("dee@x.io")),
        ];
        let creates: Vec<&OutgoingRecord> = records.iter().collect();
        let (pairable, alone) = split_creates("contacts", &creates);
        let keys = |r: &[&OutgoingRecord]| r.iter().map(|r| r.key.clone()).collect::<Vec<_>>();
        assert_eq!(keys(&pairable), ["d"]);
        assert_eq!(keys(&alone), ["a", "b", "c"]);
    }

    #[test]
    fn companies_pair_by_domain_as_matching_normalises_it() {
        let record = OutgoingRecord {
            values: vec![OutgoingValue {
                name: "domain".into(),
                value: Some(FieldData::Text("https://www.Acme.io/".into())),
            }],
            ..create("001A", None)
        };
        let other = OutgoingRecord {
            values: vec![OutgoingValue {
                name: "domain".into(),
                value: Some(FieldData::Text("globex.example".into())),
            }],
            ..create("001B", None)
        };
        let batch = [&record, &other];
        let mut placement = Placement::new("companies", &batch);
        placement.place_result(
            "9".into(),
            None,
            &props(json!({"domain": "globex.example"})),
        );
        placement.place_result("8".into(), None, &props(json!({"domain": "acme.io"})));
        assert_eq!(
            placement.outcomes,
            vec![
                Some(WriteOutcome::Written("8".into())),
                Some(WriteOutcome::Written("9".into()))
            ]
        );
    }
}
