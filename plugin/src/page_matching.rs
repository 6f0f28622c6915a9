//! Matching a whole page (`match-page`): one `find-page` look-up for every
//! id and handle of the page, then each record decided by the same rules as
//! `match-contact` (X1-X5) against that snapshot, with the outcomes of the
//! page's earlier records applied to it as the host will apply them.
//!
//! Applying an outcome to the snapshot follows the store's rules: a create
//! is a new contact holding the record's handles, linked to it; an update or
//! a link links the contact to the record, replaces the handles the sync
//! brought before (`from-source`) with the record's and keeps the rest. A
//! contact the page creates is named `page:<index>` if a later record of the
//! same page is matched to it (the same source id twice).

use crate::matching::{Directory, match_account, match_contact};
use crate::types::{DestinationContact, HandleKind, MappedContact, MatchOutcome};
use std::collections::HashMap;

/// The page's contacts (or accounts) as the host holds them, with the
/// page's earlier outcomes applied, indexed by every key a look-up asks by:
/// a page's look-ups then cost a hash probe each, not a scan of the page.
struct Snapshot {
    contacts: Vec<DestinationContact>,
    /// Position in `contacts` by destination id.
    by_id: HashMap<String, usize>,
    /// Positions in `contacts` by linked source id, email, phone and domain.
    by_key: [HashMap<String, Vec<usize>>; 4],
}

/// What a [`Snapshot`] indexes contacts by.
#[derive(Clone, Copy)]
enum Key {
    Linked = 0,
    Email = 1,
    Phone = 2,
    Domain = 3,
}

impl Snapshot {
    fn new(contacts: Vec<DestinationContact>) -> Self {
        let mut snapshot = Snapshot {
            contacts: Vec::with_capacity(contacts.len()),
            by_id: HashMap::new(),
            by_key: Default::default(),
        };
        for contact in contacts {
            snapshot.push(contact);
        }
        snapshot
    }

    fn push(&mut self, contact: DestinationContact) {
        let at = self.contacts.len();
        self.by_id.insert(contact.id.clone(), at);
        self.contacts.push(contact);
        self.index(at);
    }

    fn keys(contact: &DestinationContact) -> impl Iterator<Item = (Key, &String)> {
        let linked = contact.external_id.iter().map(|e| (Key::Linked, e));
        let emails = contact.emails.iter().map(|e| (Key::Email, e));
        let phones = contact.phones.iter().map(|p| (Key::Phone, p));
        let domains = contact.domains.iter().map(|d| (Key::Domain, d));
        linked.chain(emails).chain(phones).chain(domains)
    }

    fn index(&mut self, at: usize) {
        for (key, value) in Self::keys(&self.contacts[at]) {
            let holders = self.by_key[key as usize].entry(value.clone()).or_default();
            if !holders.contains(&at) {
                holders.push(at);
            }
        }
    }

    fn unindex(&mut self, at: usize) {
        for (key, value) in Self::keys(&self.contacts[at]) {
            if let Some(holders) = self.by_key[key as usize].get_mut(value.as_str()) {
                holders.retain(|&i| i != at);
            }
        }
    }

    fn holding(&self, key: Key, value: &str) -> Vec<DestinationContact> {
        let Some(holders) = self.by_key[key as usize].get(value) else {
            return Vec::new();
        };
        let mut found: Vec<&DestinationContact> =
            holders.iter().map(|&i| &self.contacts[i]).collect();
        // The order the host's own look-ups answer in: by id (created ones last).
        if found.len() > 1 {
            found.sort_by_key(|c| order(&c.id));
        }
        found.into_iter().cloned().collect()
    }

    fn linked(&self, external_id: &str) -> Option<DestinationContact> {
        self.holding(Key::Linked, external_id).into_iter().next()
    }

    /// Applies record `index`'s outcome, as the host will.
    fn apply(
        &mut self,
        index: usize,
        record: &MappedContact,
        outcome: &MatchOutcome,
        accounts: bool,
    ) {
        let handles: Vec<String> = if accounts {
            record.domains.clone()
        } else {
            record
                .emails
                .iter()
                .chain(&record.phones)
                .cloned()
                .collect()
        };
        let split = |handles: &[String]| -> (Vec<String>, Vec<String>, Vec<String>) {
            if accounts {
                (Vec::new(), Vec::new(), handles.to_vec())
            } else {
                let emails = handles
                    .iter()
                    .filter(|h| record.emails.contains(h))
                    .cloned();
                let phones = handles
                    .iter()
                    .filter(|h| record.phones.contains(h))
                    .cloned();
                (emails.collect(), phones.collect(), Vec::new())
            }
        };
        match outcome {
            MatchOutcome::Create => {
                let (emails, phones, domains) = split(&handles);
                self.push(DestinationContact {
                    id: format!("page:{index}"),
                    external_id: Some(record.external_id.clone()),
                    emails,
                    phones,
                    domains,
                    from_source: handles,
                });
            }
            MatchOutcome::Update(id) | MatchOutcome::Link(id) => {
                let Some(&at) = self.by_id.get(id.as_str()) else {
                    return;
                };
                self.unindex(at);
                self.update(at, record, handles, accounts);
                self.index(at);
            }
            MatchOutcome::Skip(_) => {}
        }
    }

    /// An update or a link of the contact at `at`, by the store's rules.
    fn update(&mut self, at: usize, record: &MappedContact, handles: Vec<String>, accounts: bool) {
        let contact = &mut self.contacts[at];
        contact.external_id = Some(record.external_id.clone());
        {
            if accounts {
                // An account's domains are the company's (kept when it sends none).
                if !record.domains.is_empty() {
                    contact.domains = record.domains.clone();
                    contact.from_source = record.domains.clone();
                }
                return;
            }
            let kept = |old: &[String]| -> Vec<String> {
                old.iter()
                    .filter(|h| !contact.from_source.contains(h))
                    .cloned()
                    .collect()
            };
            let mut emails = record.emails.clone();
            emails.extend(
                kept(&contact.emails)
                    .into_iter()
                    .filter(|e| !record.emails.contains(e)),
            );
            let mut phones = record.phones.clone();
            phones.extend(
                kept(&contact.phones)
                    .into_iter()
                    .filter(|p| !record.phones.contains(p)),
            );
            contact.emails = emails;
            contact.phones = phones;
            contact.from_source = handles;
        }
    }
}

/// Ids in the host's order: its own numerically, the page's after them.
fn order(id: &str) -> (u8, u64, String) {
    match id.strip_prefix("page:") {
        Some(index) => (1, index.parse().unwrap_or(u64::MAX), String::new()),
        None => match id.parse::<u64>() {
            Ok(n) => (0, n, String::new()),
            Err(_) => (0, u64::MAX, id.to_owned()),
        },
    }
}

impl Directory for Snapshot {
    fn find_by_external_id(&mut self, external_id: &str) -> Option<DestinationContact> {
        self.linked(external_id)
    }

    fn find_by_handle(&mut self, kind: HandleKind, handle: &str) -> Vec<DestinationContact> {
        let key = match kind {
            HandleKind::Email => Key::Email,
            HandleKind::Phone => Key::Phone,
            HandleKind::Domain => Key::Domain,
        };
        self.holding(key, handle)
    }

    fn find_account_by_external_id(&mut self, external_id: &str) -> Option<DestinationContact> {
        self.linked(external_id)
    }

    fn find_accounts_by_domain(&mut self, domain: &str) -> Vec<DestinationContact> {
        self.holding(Key::Domain, domain)
    }

    fn find_page(&mut self, _: &[String], _: &[String], _: &[String]) -> Vec<DestinationContact> {
        self.contacts.clone()
    }

    fn find_accounts_page(&mut self, _: &[String], _: &[String]) -> Vec<DestinationContact> {
        self.contacts.clone()
    }
}

/// `match-page`: one outcome per contact, in order.
pub fn match_page(directory: &mut impl Directory, contacts: &[MappedContact]) -> Vec<MatchOutcome> {
    let external_ids: Vec<String> = contacts.iter().map(|c| c.external_id.clone()).collect();
    let emails: Vec<String> = unique(contacts.iter().flat_map(|c| c.emails.iter()));
    let phones: Vec<String> = unique(contacts.iter().flat_map(|c| c.phones.iter()));
    let mut snapshot = Snapshot::new(directory.find_page(&external_ids, &emails, &phones));
    contacts
        .iter()
        .enumerate()
        .map(|(index, contact)| {
            let outcome = match_contact(&mut snapshot, contact);
            snapshot.apply(index, contact, &outcome, false);
            outcome
        })
        .collect()
}

/// `match-accounts-page`: one outcome per company, in order.
pub fn match_accounts_page(
    directory: &mut impl Directory,
    accounts: &[MappedContact],
) -> Vec<MatchOutcome> {
    let external_ids: Vec<String> = accounts.iter().map(|a| a.external_id.clone()).collect();
    let domains: Vec<String> = unique(accounts.iter().flat_map(|a| a.domains.iter()));
    let mut snapshot = Snapshot::new(directory.find_accounts_page(&external_ids, &domains));
    accounts
        .iter()
        .enumerate()
        .map(|(index, account)| {
            let outcome = match_account(&mut snapshot, account);
            snapshot.apply(index, account, &outcome, true);
            outcome
        })
        .collect()
}

fn unique<'a>(values: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    values.filter(|v| seen.insert(*v)).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host's store, as the reference: contacts with flagged handles
    /// (`true`: brought by the sync), updated by the store's own rule.
    #[derive(Clone, Default)]
    struct Store {
        contacts: Vec<StoredContact>,
        next: u64,
    }

    /// A handle and whether the sync brought it.
    type Flagged = (String, bool);
    /// Id, linked source id, emails, phones.
    type StoredContact = (u64, Option<String>, Vec<Flagged>, Vec<Flagged>);

    impl Store {
        fn entry(&self, i: usize) -> DestinationContact {
            let (id, ext, emails, phones) = &self.contacts[i];
            DestinationContact {
                id: id.to_string(),
                external_id: ext.clone(),
                emails: emails.iter().map(|(e, _)| e.clone()).collect(),
                phones: phones.iter().map(|(p, _)| p.clone()).collect(),
                domains: Vec::new(),
                from_source: emails
                    .iter()
                    .chain(phones)
                    .filter(|(_, s)| *s)
                    .map(|(h, _)| h.clone())
                    .collect(),
            }
        }

        fn select(&self, pick: impl Fn(&DestinationContact) -> bool) -> Vec<DestinationContact> {
            let mut found: Vec<_> = (0..self.contacts.len())
                .map(|i| self.entry(i))
                .filter(|c| pick(c))
                .collect();
            found.sort_by_key(|c| c.id.parse::<u64>().unwrap());
            found
        }

        /// `merge_handles` of the store: the record's, then the contact's own.
        fn merge(new: &[String], old: &[(String, bool)]) -> Vec<(String, bool)> {
            let mut merged: Vec<(String, bool)> = new.iter().map(|h| (h.clone(), true)).collect();
            for (value, from_source) in old {
                if !from_source && !new.contains(value) {
                    merged.push((value.clone(), false));
                }
            }
            merged
        }

        /// Applies an outcome as the host does; the id of a create.
        fn apply(&mut self, record: &MappedContact, outcome: &MatchOutcome) -> Option<u64> {
            match outcome {
                MatchOutcome::Create => {
                    self.next += 1;
                    let flagged = |hs: &[String]| hs.iter().map(|h| (h.clone(), true)).collect();
                    self.contacts.push((
                        1000 + self.next,
                        Some(record.external_id.clone()),
                        flagged(&record.emails),
                        flagged(&record.phones),
                    ));
                    Some(1000 + self.next)
                }
                MatchOutcome::Update(id) | MatchOutcome::Link(id) => {
                    let id: u64 = id.parse().unwrap();
                    let contact = self.contacts.iter_mut().find(|c| c.0 == id).unwrap();
                    contact.1 = Some(record.external_id.clone());
                    contact.2 = Self::merge(&record.emails, &contact.2);
                    contact.3 = Self::merge(&record.phones, &contact.3);
                    None
                }
                MatchOutcome::Skip(_) => None,
            }
        }
    }

    impl Directory for Store {
        fn find_by_external_id(&mut self, ext: &str) -> Option<DestinationContact> {
            self.select(|c| c.external_id.as_deref() == Some(ext))
                .into_iter()
                .next()
        }
        fn find_by_handle(&mut self, kind: HandleKind, handle: &str) -> Vec<DestinationContact> {
            self.select(|c| match kind {
                HandleKind::Email => c.emails.iter().any(|e| e == handle),
                _ => c.phones.iter().any(|p| p == handle),
            })
        }
        fn find_account_by_external_id(&mut self, _: &str) -> Option<DestinationContact> {
            None
        }
        fn find_accounts_by_domain(&mut self, _: &str) -> Vec<DestinationContact> {
            Vec::new()
        }
        fn find_page(
            &mut self,
            ids: &[String],
            emails: &[String],
            phones: &[String],
        ) -> Vec<DestinationContact> {
            self.select(|c| {
                c.external_id.as_ref().is_some_and(|e| ids.contains(e))
                    || c.emails.iter().any(|e| emails.contains(e))
                    || c.phones.iter().any(|p| phones.contains(p))
            })
        }
        fn find_accounts_page(&mut self, _: &[String], _: &[String]) -> Vec<DestinationContact> {
            Vec::new()
        }
    }

    fn pick(rng: &mut fastrand::Rng, from: &[&str]) -> Vec<String> {
        let mut picked: Vec<String> = from
            .iter()
            .filter(|_| rng.u8(..4) == 0)
            .map(|s| (*s).to_owned())
            .collect();
        picked.dedup();
        picked
    }

    #[test]
    fn a_page_is_decided_as_its_records_one_by_one_would_be() {
        const EMAILS: &[&str] = &["a@x.io", "b@x.io", "c@x.io", "d@x.io"];
        const PHONES: &[&str] = &["+1", "+2", "+3"];
        const IDS: &[&str] = &["s1", "s2", "s3", "s4", "s5"];
        let mut rng = fastrand::Rng::with_seed(0x9A6E);
        for _ in 0..20_000 {
            let mut store = Store::default();
            for id in 1..=rng.u64(0..5) {
                let linked = rng.bool().then(|| IDS[rng.usize(..IDS.len())].to_owned());
                let flag = |rng: &mut fastrand::Rng| linked.is_some() && rng.bool();
                let emails = pick(&mut rng, EMAILS)
                    .into_iter()
                    .map(|e| (e, flag(&mut rng)))
                    .collect();
                let phones = pick(&mut rng, PHONES)
                    .into_iter()
                    .map(|p| (p, flag(&mut rng)))
                    .collect();
                store.contacts.push((id, linked, emails, phones));
            }
            let page: Vec<MappedContact> = (0..rng.usize(1..7))
                .map(|_| MappedContact {
                    external_id: IDS[rng.usize(..IDS.len())].to_owned(),
                    name: None,
                    emails: pick(&mut rng, EMAILS),
                    phones: pick(&mut rng, PHONES),
                    domains: Vec::new(),
                    fields: Vec::new(),
                })
                .collect();
            // One by one, each applied before the next is asked.
            let mut sequential = store.clone();
            let mut created: Vec<Option<u64>> = Vec::new();
            let mut expected = Vec::new();
            for record in &page {
                let outcome = match_contact(&mut sequential, record);
                created.push(sequential.apply(record, &outcome));
                expected.push(outcome);
            }
            // The page at once, its `page:<index>` names read as that create's id.
            let paged: Vec<MatchOutcome> = match_page(&mut store, &page)
                .into_iter()
                .map(|outcome| {
                    let resolve = |id: String| match id.strip_prefix("page:") {
                        Some(index) => created[index.parse::<usize>().unwrap()]
                            .unwrap()
                            .to_string(),
                        None => id,
                    };
                    match outcome {
                        MatchOutcome::Update(id) => MatchOutcome::Update(resolve(id)),
                        MatchOutcome::Link(id) => MatchOutcome::Link(resolve(id)),
                        other => other,
                    }
                })
                .collect();
            assert_eq!(paged, expected, "page {page:?}");
        }
    }
}

#[cfg(test)]
mod account_tests {
    use super::*;

    /// Accounts only: `find-accounts-page` answers from a fixed list.
    struct Accounts(Vec<DestinationContact>);

    impl Directory for Accounts {
        fn find_by_external_id(&mut self, _: &str) -> Option<DestinationContact> {
            None
        }
        fn find_by_handle(&mut self, _: HandleKind, _: &str) -> Vec<DestinationContact> {
            Vec::new()
        }
        fn find_account_by_external_id(&mut self, _: &str) -> Option<DestinationContact> {
            unreachable!("match-accounts-page asks find-accounts-page only")
        }
        fn find_accounts_by_domain(&mut self, _: &str) -> Vec<DestinationContact> {
            unreachable!("match-accounts-page asks find-accounts-page only")
        }
        fn find_page(
            &mut self,
            _: &[String],
            _: &[String],
            _: &[String],
        ) -> Vec<DestinationContact> {
            Vec::new()
        }
        fn find_accounts_page(&mut self, _: &[String], _: &[String]) -> Vec<DestinationContact> {
            self.0.clone()
        }
    }

    fn company(id: &str, domains: &[&str]) -> MappedContact {
        MappedContact {
            external_id: id.into(),
            name: None,
            emails: vec![],
            phones: vec![],
            domains: domains.iter().map(|d| (*d).into()).collect(),
            fields: vec![],
        }
    }

    #[test]
    fn companies_of_one_page_see_each_others_domains() {
        let existing = DestinationContact {
            id: "7".into(),
            external_id: None,
            emails: vec![],
            phones: vec![],
            domains: vec!["acme.io".into()],
            from_source: vec![],
        };
        let outcomes = match_accounts_page(
            &mut Accounts(vec![existing]),
            &[
                company("c1", &["acme.io"]),        // links the unlinked account
                company("c2", &["acme.io"]),        // then finds it taken
                company("c3", &["new.io"]),         // creates
                company("c3", &["new.io", "b.io"]), // updates what c3 created
                company("c4", &[]),                 // no domain: created, matched by id alone
            ],
        );
        assert!(
            matches!(&outcomes[0], MatchOutcome::Link(id) if id == "7"),
            "{outcomes:?}"
        );
        assert!(matches!(&outcomes[1], MatchOutcome::Skip(e) if e.message.contains("acme.io")));
        assert!(matches!(outcomes[2], MatchOutcome::Create));
        assert!(matches!(&outcomes[3], MatchOutcome::Update(id) if id == "page:2"));
        assert!(matches!(outcomes[4], MatchOutcome::Create));
    }
}
