//! Pairing records across the two CRMs of a sync between CRMs (X1-X5, X8):
//! by stored link, then with an unlinked record of the other CRM read this
//! run, then with one a look-up of its handle found there; merged records'
//! links followed to their survivor.
//!
//! The host gathers what the decisions need (links from its store, the
//! records it read and holds, what a look-up found) and applies the
//! outcomes; every choice is made here, so an embedding platform pairs
//! exactly as the runner does.

use crate::errors;
use crate::types::{
    Counterpart, CrmSide, LinkState, LinkedPair, MergedRecord, Pairing, PairingRules, ReadRecord,
    UnpairedRecord,
};
use std::collections::{HashMap, HashSet};

/// `pair-read`: each record by its link, else with the first of its read
/// counterparts that is free, else left to look up.
pub fn pair_read(rules: &PairingRules, records: &[ReadRecord]) -> Vec<Pairing> {
    let mut taken: HashSet<&str> = HashSet::new();
    records
        .iter()
        .map(|record| {
            if let Some(link) = &record.link {
                if let Some(id) = &link.counterpart_id {
                    taken.insert(id);
                }
                return by_link(rules.side, link);
            }
            let free = record.read_counterparts.iter().find(|c| {
                !c.linked
                    && !taken.contains(c.id.as_str())
                    && c.handles.iter().any(|h| record.handles.contains(h))
            });
            match free {
                Some(counterpart) => {
                    taken.insert(&counterpart.id);
                    Pairing::Paired(counterpart.id.clone())
                }
                None => Pairing::LookUp(record.handles.first().cloned()),
            }
        })
        .collect()
}

/// A linked record read on `side`: its pair syncs, stays stopped, or resumes.
///
/// A pair a deletion stopped resumes when the deleting CRM's record is read
/// live again (restored), and stays stopped when the other CRM's is (nothing
/// to write to). A pair stopped otherwise (its source record stopped
/// matching) resumes when the source record is read, matching again; a
/// destination record read alone does not restart it.
fn by_link(side: CrmSide, link: &LinkState) -> Pairing {
    let resume = match (link.syncing, link.stopped_by) {
        (true, _) => false,
        (false, Some(by)) if by == side => true,
        (false, Some(_)) => return Pairing::Skipped,
        (false, None) if side == CrmSide::Source => true,
        (false, None) => return Pairing::Skipped,
    };
    Pairing::Linked(LinkedPair {
        counterpart_id: link.counterpart_id.clone(),
        resume,
    })
}

/// `pair-looked-up`: each record with the found record holding its first
/// handle exactly, unless that one is linked or taken already.
pub fn pair_looked_up(
    rules: &PairingRules,
    records: &[UnpairedRecord],
    found: &[Counterpart],
    taken: &[String],
) -> Vec<Pairing> {
    let mut by_handle: HashMap<&str, &Counterpart> = HashMap::new();
    for counterpart in found {
        for handle in &counterpart.handles {
            by_handle.entry(handle.as_str()).or_insert(counterpart);
        }
    }
    let mut taken: HashSet<&str> = taken.iter().map(String::as_str).collect();
    records
        .iter()
        .map(|record| {
            let Some(handle) = record.handles.first() else {
                return if !rules.companies && rules.handle_mapped {
                    Pairing::Rejected(errors::missing_email(&record.id))
                } else {
                    Pairing::Create
                };
            };
            match by_handle.get(handle.as_str()) {
                None => Pairing::Create,
                Some(counterpart) if counterpart.linked || !taken.insert(&counterpart.id) => {
                    Pairing::Rejected(errors::handle_taken_across(
                        rules.companies,
                        &record.id,
                        handle,
                        &counterpart.id,
                    ))
                }
                Some(counterpart) => Pairing::Paired(counterpart.id.clone()),
            }
        })
        .collect()
}

/// `fold-merges`: a survivor without a link takes over the first merged
/// record's link (a Lead converted into a Contact, contacts merged), so its
/// counterpart is updated rather than doubled.
pub fn fold_merges(records: &[MergedRecord]) -> Vec<Option<String>> {
    records
        .iter()
        .map(|record| {
            if record.linked {
                return None;
            }
            record
                .merged
                .iter()
                .find(|m| m.linked && m.id != record.id)
                .map(|m| m.id.clone())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ErrorCategory, MergedId};

    const PEOPLE_FROM_SOURCE: PairingRules = PairingRules {
        side: CrmSide::Source,
        companies: false,
        handle_mapped: true,
    };

    fn counterpart(id: &str, handles: &[&str], linked: bool) -> Counterpart {
        Counterpart {
            id: id.into(),
            handles: handles.iter().map(|h| (*h).to_owned()).collect(),
            linked,
        }
    }

    fn read(
        id: &str,
        handles: &[&str],
        link: Option<LinkState>,
        held: &[Counterpart],
    ) -> ReadRecord {
        ReadRecord {
            id: id.into(),
            handles: handles.iter().map(|h| (*h).to_owned()).collect(),
            link,
            read_counterparts: held.to_vec(),
        }
    }

    fn unpaired(id: &str, handles: &[&str]) -> UnpairedRecord {
        UnpairedRecord {
            id: id.into(),
            handles: handles.iter().map(|h| (*h).to_owned()).collect(),
        }
    }

    fn link(counterpart: Option<&str>, syncing: bool, stopped_by: Option<CrmSide>) -> LinkState {
        LinkState {
            counterpart_id: counterpart.map(str::to_owned),
            syncing,
            stopped_by,
        }
    }

    fn category(pairing: &Pairing) -> Option<ErrorCategory> {
        match pairing {
            Pairing::Rejected(error) => Some(error.category),
            _ => None,
        }
    }

    #[test]
    fn a_linked_record_pairs_by_its_link_before_any_email() {
        let held = [counterpart("d9", &["a@x.io"], false)];
        let out = pair_read(
            &PEOPLE_FROM_SOURCE,
            &[read(
                "1",
                &["a@x.io"],
                Some(link(Some("d1"), true, None)),
                &held,
            )],
        );
        assert_eq!(
            out,
            [Pairing::Linked(LinkedPair {
                counterpart_id: Some("d1".into()),
                resume: false
            })]
        );
    }

    #[test]
    fn a_stopped_link_resumes_on_the_deleting_side_and_stays_stopped_on_the_other() {
        use CrmSide::{Destination, Source};
        let cases = [
            (Source, Some(Source), Some(true)),
            (Source, Some(Destination), None),
            (Source, None, Some(true)),
            (Destination, Some(Destination), Some(true)),
            (Destination, Some(Source), None),
            (Destination, None, None),
        ];
        for (side, stopped_by, expect) in cases {
            let rules = PairingRules {
                side,
                ..PEOPLE_FROM_SOURCE
            };
            let out = pair_read(
                &rules,
                &[read(
                    "1",
                    &[],
                    Some(link(Some("2"), false, stopped_by)),
                    &[],
                )],
            );
            let got = match &out[0] {
                Pairing::Linked(pair) => Some(pair.resume),
                Pairing::Skipped => None,
                other => panic!("{other:?}"),
            };
            assert_eq!(got, expect, "read on {side:?}, stopped by {stopped_by:?}");
        }
    }

    #[test]
    fn a_read_counterpart_is_taken_once_and_never_when_linked_or_not_sharing_a_handle() {
        let shared = counterpart("d1", &["a@x.io"], false);
        let linked = counterpart("d0", &["a@x.io"], true);
        let stranger = counterpart("d2", &["z@x.io"], false);
        let out = pair_read(
            &PEOPLE_FROM_SOURCE,
            &[
                read(
                    "1",
                    &["a@x.io"],
                    None,
                    &[linked.clone(), stranger.clone(), shared.clone()],
                ),
                read("2", &["a@x.io", "b@x.io"], None, &[shared]),
                read("3", &[], None, &[]),
            ],
        );
        assert_eq!(
            out,
            [
                Pairing::Paired("d1".into()),
                Pairing::LookUp(Some("a@x.io".into())),
                Pairing::LookUp(None),
            ]
        );
    }

    #[test]
    fn a_linked_records_counterpart_is_taken_for_the_rest_of_the_page() {
        let d1 = counterpart("d1", &["a@x.io"], false);
        let out = pair_read(
            &PEOPLE_FROM_SOURCE,
            &[
                read("1", &["a@x.io"], Some(link(Some("d1"), true, None)), &[]),
                read("2", &["a@x.io"], None, &[d1]),
            ],
        );
        assert_eq!(out[1], Pairing::LookUp(Some("a@x.io".into())));
    }

    #[test]
    fn looked_up_records_pair_create_or_are_rejected_as_the_rules_say() {
        let found = [
            counterpart("d1", &["a@x.io"], false),
            counterpart("d2", &["b@x.io"], true),
            counterpart("d3", &["c@x.io"], false),
        ];
        let out = pair_looked_up(
            &PEOPLE_FROM_SOURCE,
            &[
                unpaired("1", &["a@x.io"]),
                unpaired("2", &["a@x.io"]),
                unpaired("3", &["b@x.io"]),
                unpaired("4", &["c@x.io"]),
                unpaired("5", &["new@x.io"]),
                unpaired("6", &[]),
            ],
            &found,
            &["d3".into()],
        );
        assert_eq!(out[0], Pairing::Paired("d1".into()));
        assert_eq!(category(&out[1]), Some(ErrorCategory::EmailTaken));
        assert_eq!(category(&out[2]), Some(ErrorCategory::EmailTaken));
        assert_eq!(category(&out[3]), Some(ErrorCategory::EmailTaken));
        assert_eq!(out[4], Pairing::Create);
        assert_eq!(category(&out[5]), Some(ErrorCategory::MissingHandle));
        let Pairing::Rejected(error) = &out[1] else {
            unreachable!()
        };
        assert_eq!(error.record_id.as_deref(), Some("2"));
        assert_eq!(error.field.as_deref(), Some("email"));
        assert!(error.message.contains("d1"), "{}", error.message);
    }

    #[test]
    fn only_a_found_records_exact_handle_pairs() {
        // A look-up by domain finds every website containing it.
        let found = [counterpart("a1", &["shop.acme.io"], false)];
        let companies = PairingRules {
            companies: true,
            ..PEOPLE_FROM_SOURCE
        };
        let out = pair_looked_up(&companies, &[unpaired("c1", &["acme.io"])], &found, &[]);
        assert_eq!(out, [Pairing::Create]);
    }

    #[test]
    fn without_a_handle_a_company_or_an_unmapped_email_is_created_not_rejected() {
        for rules in [
            PairingRules {
                companies: true,
                ..PEOPLE_FROM_SOURCE
            },
            PairingRules {
                handle_mapped: false,
                ..PEOPLE_FROM_SOURCE
            },
        ] {
            let out = pair_looked_up(&rules, &[unpaired("1", &[])], &[], &[]);
            assert_eq!(out, [Pairing::Create], "{rules:?}");
        }
        let out = pair_looked_up(
            &PairingRules {
                companies: true,
                ..PEOPLE_FROM_SOURCE
            },
            &[unpaired("c1", &["acme.io"])],
            &[counterpart("a1", &["acme.io"], true)],
            &[],
        );
        assert_eq!(category(&out[0]), Some(ErrorCategory::DomainTaken));
    }

    #[test]
    fn a_survivor_without_a_link_takes_the_first_linked_merged_records() {
        let merged = |ids: &[(&str, bool)]| -> Vec<MergedId> {
            ids.iter()
                .map(|(id, linked)| MergedId {
                    id: (*id).into(),
                    linked: *linked,
                })
                .collect()
        };
        let out = fold_merges(&[
            MergedRecord {
                id: "5".into(),
                linked: false,
                merged: merged(&[("3", false), ("4", true), ("2", true)]),
            },
            MergedRecord {
                id: "6".into(),
                linked: true,
                merged: merged(&[("1", true)]),
            },
            MergedRecord {
                id: "7".into(),
                linked: false,
                merged: merged(&[("8", false)]),
            },
        ]);
        assert_eq!(out, [Some("4".into()), None, None]);
    }
}
