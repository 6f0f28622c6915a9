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
//!
//! The snapshot borrows every string from the directory's answer and from
//! the page itself, so deciding a page copies no handle: a lookup that finds
//! nobody (most of them) allocates nothing, and only a hit builds the
//! `destination-contact` the rules read.

use crate::matching::{Directory, match_account_keys, match_contact_keys};
use crate::page_keys::{RecordKeys, unpack};
use crate::types::{DestinationContact, HandleKind, MappedContact, MatchOutcome, PageKeys};
use rustc_hash::{FxHashMap, FxHashSet};
use smallvec::SmallVec;

/// A snapshot's index: keys are short strings hashed once per look-up, and
/// SipHash's flooding resistance buys nothing against a page of 100 records
/// (FxHash is several times faster in wasm).
type Index<'a, V> = FxHashMap<&'a str, V>;

/// A contact's handles of one kind: a record's list as it came, or the
/// directory's, or a merge of a record's with the ones a contact kept.
enum Handles<'a> {
    Of(&'a [&'a str]),
    Merged(Vec<&'a str>),
}

impl<'a> Handles<'a> {
    fn of_directory(list: &'a [String]) -> Self {
        Handles::Merged(list.iter().map(String::as_str).collect())
    }

    fn as_slice(&self) -> &[&'a str] {
        match self {
            Handles::Of(list) => list,
            Handles::Merged(list) => list,
        }
    }

    fn to_vec(&self) -> Vec<&'a str> {
        self.as_slice().to_vec()
    }

    fn owned(&self) -> Vec<String> {
        self.to_vec().into_iter().map(str::to_owned).collect()
    }
}

/// Which handles the linked record brought (`from-source`): the directory's
/// word for a contact it holds, every handle of the record that last
/// created or updated it in this page.
#[derive(Clone, Copy)]
enum FromSource<'a> {
    Directory(&'a [String]),
    /// A record's emails, phones and domains.
    Record([&'a [&'a str]; 3]),
}

impl<'a> FromSource<'a> {
    /// Every handle it names, whichever kind.
    fn handles(self) -> Box<dyn Iterator<Item = &'a str> + 'a> {
        match self {
            FromSource::Directory(list) => Box::new(list.iter().map(String::as_str)),
            FromSource::Record(lists) => {
                Box::new(lists.into_iter().flat_map(|list| list.iter().copied()))
            }
        }
    }

    fn contains(self, handle: &str) -> bool {
        self.handles().any(|h| h == handle)
    }

    fn owned(self) -> Vec<String> {
        self.handles().map(str::to_owned).collect()
    }
}

/// Which contact an entry is: one the directory holds, or the create of
/// the page's `i`th record (`page:<i>`).
#[derive(Clone, Copy, PartialEq)]
enum Name<'a> {
    Directory(&'a str),
    Page(usize),
}

impl<'a> Name<'a> {
    /// Where the host's own look-ups would place it: by id, numerically
    /// where the id is a number, the page's creates after the directory's.
    fn order(self) -> (u8, u64, &'a str) {
        match self {
            Name::Directory(id) => match id.parse::<u64>() {
                Ok(n) => (0, n, ""),
                Err(_) => (0, u64::MAX, id),
            },
            Name::Page(index) => (1, index as u64, ""),
        }
    }
}

/// One contact of the snapshot, as the page's earlier outcomes left it.
struct Entry<'a> {
    name: Name<'a>,
    external_id: Option<&'a str>,
    emails: Handles<'a>,
    phones: Handles<'a>,
    domains: Handles<'a>,
    from_source: FromSource<'a>,
}

impl Entry<'_> {
    fn contact(&self) -> DestinationContact {
        DestinationContact {
            id: match self.name {
                Name::Directory(id) => id.to_owned(),
                Name::Page(index) => format!("page:{index}"),
            },
            external_id: self.external_id.map(str::to_owned),
            emails: self.emails.owned(),
            phones: self.phones.owned(),
            domains: self.domains.owned(),
            from_source: self.from_source.owned(),
        }
    }
}

/// What a [`Snapshot`] indexes contacts by.
#[derive(Clone, Copy)]
enum Key {
    Linked = 0,
    Email = 1,
    Phone = 2,
    Domain = 3,
}

/// The page's contacts (or accounts) as the host holds them, with the
/// page's earlier outcomes applied, indexed by every key a look-up asks by.
struct Snapshot<'a> {
    /// Companies and accounts (whose updates replace domains), not people.
    accounts: bool,
    entries: Vec<Entry<'a>>,
    /// Position in `entries` by the directory's id.
    by_id: Index<'a, usize>,
    /// Positions in `entries` by linked source id, email, phone and domain
    /// (almost always one: inline, no allocation).
    by_key: [Index<'a, SmallVec<[usize; 1]>>; 4],
}

impl<'a> Snapshot<'a> {
    /// The directory's answer, indexed; sized for the page's `records` too
    /// that are not `alone`, whose creates join it (a page of creates never
    /// rehashes).
    fn new(
        directory: &'a [DestinationContact],
        records: &[RecordKeys],
        alone: &[bool],
        accounts: bool,
    ) -> Self {
        fn sized<'a, V>(count: usize) -> Index<'a, V> {
            Index::with_capacity_and_hasher(count, Default::default())
        }
        let joining = || records.iter().zip(alone).filter(|(_, alone)| !**alone);
        let handles = |of: fn(&DestinationContact) -> usize, own: fn(&RecordKeys) -> usize| {
            sized(
                directory.iter().map(of).sum::<usize>()
                    + joining().map(|(r, _)| own(r)).sum::<usize>(),
            )
        };
        let mut snapshot = Snapshot {
            accounts,
            entries: Vec::with_capacity(directory.len() + joining().count()),
            by_id: sized(directory.len()),
            by_key: [
                sized(directory.len() + joining().count()),
                handles(|c| c.emails.len(), |r| r.emails.len()),
                handles(|c| c.phones.len(), |r| r.phones.len()),
                handles(|c| c.domains.len(), |r| r.domains.len()),
            ],
        };
        for contact in directory {
            snapshot
                .by_id
                .insert(contact.id.as_str(), snapshot.entries.len());
            snapshot.push(Entry {
                name: Name::Directory(&contact.id),
                external_id: contact.external_id.as_deref(),
                emails: Handles::of_directory(&contact.emails),
                phones: Handles::of_directory(&contact.phones),
                domains: Handles::of_directory(&contact.domains),
                from_source: FromSource::Directory(&contact.from_source),
            });
        }
        snapshot
    }

    fn push(&mut self, entry: Entry<'a>) {
        self.entries.push(entry);
        self.index(self.entries.len() - 1);
    }

    /// Calls `visit` with each key `entry` is found by.
    fn each_key(entry: &Entry<'a>, mut visit: impl FnMut(Key, &'a str)) {
        if let Some(linked) = entry.external_id {
            visit(Key::Linked, linked);
        }
        for (key, handles) in [
            (Key::Email, &entry.emails),
            (Key::Phone, &entry.phones),
            (Key::Domain, &entry.domains),
        ] {
            handles.as_slice().iter().for_each(|h| visit(key, h));
        }
    }

    fn index(&mut self, at: usize) {
        let by_key = &mut self.by_key;
        Self::each_key(&self.entries[at], |key, value| {
            let holders = by_key[key as usize].entry(value).or_default();
            if !holders.contains(&at) {
                holders.push(at);
            }
        });
    }

    fn unindex(&mut self, at: usize) {
        let by_key = &mut self.by_key;
        Self::each_key(&self.entries[at], |key, value| {
            if let Some(holders) = by_key[key as usize].get_mut(value) {
                holders.retain(|i| *i != at);
            }
        });
    }

    fn holding(&self, key: Key, value: &str) -> Vec<DestinationContact> {
        let Some(holders) = self.by_key[key as usize].get(value) else {
            return Vec::new();
        };
        let mut found: Vec<&Entry> = holders.iter().map(|&i| &self.entries[i]).collect();
        found.sort_by_cached_key(|e| e.name.order());
        found.into_iter().map(Entry::contact).collect()
    }

    fn linked(&self, external_id: &str) -> Option<DestinationContact> {
        self.holding(Key::Linked, external_id).into_iter().next()
    }

    /// Applies record `index`'s outcome, as the host will.
    fn apply<'k: 'a>(&mut self, index: usize, record: &'a RecordKeys<'k>, outcome: &MatchOutcome) {
        match outcome {
            MatchOutcome::Create => self.push(Entry {
                name: Name::Page(index),
                external_id: Some(record.external_id),
                emails: Handles::Of(record.emails.as_slice()),
                phones: Handles::Of(record.phones.as_slice()),
                domains: Handles::Of(record.domains.as_slice()),
                from_source: FromSource::Record(record.lists()),
            }),
            MatchOutcome::Update(id) | MatchOutcome::Link(id) => {
                let at = match id.strip_prefix("page:").map(str::parse) {
                    Some(Ok(created)) => {
                        let name = Name::Page(created);
                        self.entries.iter().position(|e| e.name == name)
                    }
                    Some(Err(_)) => None,
                    None => self.by_id.get(id.as_str()).copied(),
                };
                let Some(at) = at else {
                    return;
                };
                self.unindex(at);
                self.update(at, record);
                self.index(at);
            }
            MatchOutcome::Skip(_) => {}
        }
    }

    /// An update or a link of the entry at `at` by `record`, by the store's
    /// rules: a company's domains replace the account's (kept when it sends
    /// none); a person's handles replace the ones the sync brought before,
    /// and the contact's own stay after them.
    fn update<'k: 'a>(&mut self, at: usize, record: &'a RecordKeys<'k>) {
        let accounts = self.accounts;
        let entry = &mut self.entries[at];
        entry.external_id = Some(record.external_id);
        if accounts {
            if !record.domains.is_empty() {
                entry.domains = Handles::Of(record.domains.as_slice());
                entry.from_source = FromSource::Record(record.lists());
            }
            return;
        }
        let merged = |new: &'a [&'a str], old: &Handles<'a>, from_source: FromSource| {
            let kept: Vec<&'a str> = old
                .to_vec()
                .into_iter()
                .filter(|h| !from_source.contains(h) && !new.iter().any(|n| n == h))
                .collect();
            if kept.is_empty() {
                Handles::Of(new)
            } else {
                let mut all: Vec<&'a str> = new.to_vec();
                all.extend(kept);
                Handles::Merged(all)
            }
        };
        entry.emails = merged(record.emails.as_slice(), &entry.emails, entry.from_source);
        entry.phones = merged(record.phones.as_slice(), &entry.phones, entry.from_source);
        entry.from_source = FromSource::Record(record.lists());
    }
}

impl Directory for Snapshot<'_> {
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
        self.entries.iter().map(Entry::contact).collect()
    }

    fn find_accounts_page(&mut self, _: &[String], _: &[String]) -> Vec<DestinationContact> {
        self.entries.iter().map(Entry::contact).collect()
    }
}

/// `match-page`: one outcome per contact, in order.
pub fn match_page(directory: &mut impl Directory, contacts: &[MappedContact]) -> Vec<MatchOutcome> {
    let external_ids: Vec<String> = contacts.iter().map(|c| c.external_id.clone()).collect();
    let emails: Vec<String> = unique(contacts.iter().flat_map(|c| c.emails.iter()));
    let phones: Vec<String> = unique(contacts.iter().flat_map(|c| c.phones.iter()));
    let held = directory.find_page(&external_ids, &emails, &phones);
    let records: Vec<RecordKeys> = contacts.iter().map(RecordKeys::of).collect();
    decide::<People>(&held, &records)
}

/// `match-accounts-page`: one outcome per company, in order.
pub fn match_accounts_page(
    directory: &mut impl Directory,
    accounts: &[MappedContact],
) -> Vec<MatchOutcome> {
    let external_ids: Vec<String> = accounts.iter().map(|a| a.external_id.clone()).collect();
    let domains: Vec<String> = unique(accounts.iter().flat_map(|a| a.domains.iter()));
    let held = directory.find_accounts_page(&external_ids, &domains);
    let records: Vec<RecordKeys> = accounts.iter().map(RecordKeys::of).collect();
    decide::<Companies>(&held, &records)
}

/// `match-keys-page`: [`match_page`] for a packed page.
pub fn match_keys_page(directory: &mut impl Directory, keys: &PageKeys) -> Vec<MatchOutcome> {
    let records = unpack(keys);
    let held = directory.find_page_keys(keys);
    decide::<People>(&held, &records)
}

/// `match-accounts-keys-page`: [`match_accounts_page`] for a packed page.
pub fn match_accounts_keys_page(
    directory: &mut impl Directory,
    keys: &PageKeys,
) -> Vec<MatchOutcome> {
    let records = unpack(keys);
    let held = directory.find_accounts_page_keys(keys);
    decide::<Companies>(&held, &records)
}

/// How a page's records are matched: people by their source id, emails and
/// phones (X1-X5), companies by their source id and domains (S3).
trait Rule {
    /// Companies, whose updates replace an account's domains.
    const ACCOUNTS: bool;

    /// The outcome of one record against `directory`.
    fn decide(directory: &mut impl Directory, record: &RecordKeys) -> MatchOutcome;
}

/// [`match_contact_keys`].
struct People;

impl Rule for People {
    const ACCOUNTS: bool = false;

    fn decide(directory: &mut impl Directory, record: &RecordKeys) -> MatchOutcome {
        match_contact_keys(directory, record)
    }
}

/// [`match_account_keys`].
struct Companies;

impl Rule for Companies {
    const ACCOUNTS: bool = true;

    fn decide(directory: &mut impl Directory, record: &RecordKeys) -> MatchOutcome {
        match_account_keys(directory, record)
    }
}

/// Each record decided by `R` against `held` with the earlier outcomes
/// applied.
///
/// A record that shares no key with `held` or with another record of the
/// page (most of a first sync's) finds nobody in the snapshot, and no later
/// record can find what it becomes: it is decided against [`Nobody`] and
/// stays out of the snapshot.
fn decide<R: Rule>(held: &[DestinationContact], records: &[RecordKeys]) -> Vec<MatchOutcome> {
    let alone = alone(held, records);
    let mut snapshot = Snapshot::new(held, records, &alone, R::ACCOUNTS);
    records
        .iter()
        .zip(alone)
        .enumerate()
        .map(|(index, (record, alone))| {
            if alone {
                return R::decide(&mut Nobody, record);
            }
            let outcome = R::decide(&mut snapshot, record);
            snapshot.apply(index, record, &outcome);
            outcome
        })
        .collect()
}

/// Which records share none of their keys (source id, emails, phones,
/// domains, each kind apart) with a contact of `held` or with another
/// record. Each key is hashed once: the first holder of a key is noted, and
/// whoever meets it later is not alone, nor is that first holder.
fn alone(held: &[DestinationContact], records: &[RecordKeys]) -> Vec<bool> {
    /// The holder of a key `held` has.
    const HELD: usize = usize::MAX;
    let mut counts = [0; 4];
    for contact in held {
        counts[Key::Linked as usize] += usize::from(contact.external_id.is_some());
        counts[Key::Email as usize] += contact.emails.len();
        counts[Key::Phone as usize] += contact.phones.len();
        counts[Key::Domain as usize] += contact.domains.len();
    }
    for record in records {
        counts[Key::Linked as usize] += 1;
        counts[Key::Email as usize] += record.emails.len();
        counts[Key::Phone as usize] += record.phones.len();
        counts[Key::Domain as usize] += record.domains.len();
    }
    let mut first: [Index<'_, usize>; 4] =
        counts.map(|count| Index::with_capacity_and_hasher(count, Default::default()));
    let mut alone = vec![true; records.len()];
    let mut meet = |key: Key, value, holder: usize| {
        use std::collections::hash_map::Entry as Slot;
        match first[key as usize].entry(value) {
            Slot::Vacant(slot) => {
                slot.insert(holder);
            }
            Slot::Occupied(slot) => {
                for met in [*slot.get(), holder] {
                    if met != HELD {
                        alone[met] = false;
                    }
                }
            }
        }
    };
    for contact in held {
        if let Some(linked) = &contact.external_id {
            meet(Key::Linked, linked.as_str(), HELD);
        }
        for (key, handles) in [
            (Key::Email, &contact.emails),
            (Key::Phone, &contact.phones),
            (Key::Domain, &contact.domains),
        ] {
            handles.iter().for_each(|h| meet(key, h.as_str(), HELD));
        }
    }
    for (at, record) in records.iter().enumerate() {
        meet(Key::Linked, record.external_id, at);
        for (key, handles) in [
            (Key::Email, &record.emails),
            (Key::Phone, &record.phones),
            (Key::Domain, &record.domains),
        ] {
            handles.iter().for_each(|h| meet(key, h, at));
        }
    }
    alone
}

/// A directory that holds nobody: what a record that is alone in its page
/// (see [`decide`]) is matched against.
struct Nobody;

impl Directory for Nobody {
    fn find_by_external_id(&mut self, _: &str) -> Option<DestinationContact> {
        None
    }

    fn find_by_handle(&mut self, _: HandleKind, _: &str) -> Vec<DestinationContact> {
        Vec::new()
    }

    fn find_account_by_external_id(&mut self, _: &str) -> Option<DestinationContact> {
        None
    }

    fn find_accounts_by_domain(&mut self, _: &str) -> Vec<DestinationContact> {
        Vec::new()
    }

    fn find_page(&mut self, _: &[String], _: &[String], _: &[String]) -> Vec<DestinationContact> {
        Vec::new()
    }

    fn find_accounts_page(&mut self, _: &[String], _: &[String]) -> Vec<DestinationContact> {
        Vec::new()
    }
}

/// Each value once, in order (FxHash, as the snapshot's index).
fn unique<'a>(values: impl Iterator<Item = &'a String>) -> Vec<String> {
    let (low, _) = values.size_hint();
    let mut seen = FxHashSet::with_capacity_and_hasher(low, Default::default());
    values
        .filter(|v| seen.insert(v.as_str()))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matching::match_contact;
    use crate::page_keys::pack;

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

    fn as_strs(pool: &[String]) -> Vec<&str> {
        pool.iter().map(String::as_str).collect()
    }

    /// Some of `from`: each with a chance of one in four, or in a wide key
    /// space one or two at random.
    fn pick(rng: &mut fastrand::Rng, from: &[&str], wide: bool) -> Vec<String> {
        let mut picked: Vec<String> = if wide {
            (0..rng.usize(0..3))
                .map(|_| from[rng.usize(..from.len())].to_owned())
                .collect()
        } else {
            from.iter()
                .filter(|_| rng.u8(..4) == 0)
                .map(|s| (*s).to_owned())
                .collect()
        };
        picked.sort();
        picked.dedup();
        picked
    }

    #[test]
    fn a_page_is_decided_as_its_records_one_by_one_would_be() {
        let mut rng = fastrand::Rng::with_seed(0x9A6E);
        // Records alone in their page (decided against nobody) and records
        // that meet others, both many times over.
        let (mut alone_seen, mut met_seen) = (0, 0);
        for round in 0..20_000 {
            // Small key spaces make pages whose records meet each other and
            // the store's contacts; wide ones, pages of mostly new records.
            let wide = round % 2 == 1;
            let pool = |prefix: &str, small: usize| -> Vec<String> {
                let size = if wide { small * 12 } else { small };
                (1..=size).map(|i| format!("{prefix}{i}")).collect()
            };
            let (ids, emails, phones) = (pool("s", 5), pool("e@", 4), pool("+", 3));
            let (ids, emails, phones) = (as_strs(&ids), as_strs(&emails), as_strs(&phones));
            let mut store = Store::default();
            for id in 1..=rng.u64(0..5) {
                let linked = rng.bool().then(|| ids[rng.usize(..ids.len())].to_owned());
                let flag = |rng: &mut fastrand::Rng| linked.is_some() && rng.bool();
                let emails = pick(&mut rng, &emails, wide)
                    .into_iter()
                    .map(|e| (e, flag(&mut rng)))
                    .collect();
                let phones = pick(&mut rng, &phones, wide)
                    .into_iter()
                    .map(|p| (p, flag(&mut rng)))
                    .collect();
                store.contacts.push((id, linked, emails, phones));
            }
            let page: Vec<MappedContact> = (0..rng.usize(1..7))
                .map(|_| MappedContact {
                    external_id: ids[rng.usize(..ids.len())].to_owned(),
                    name: None,
                    emails: pick(&mut rng, &emails, wide),
                    phones: pick(&mut rng, &phones, wide),
                    domains: Vec::new(),
                    fields: Vec::new(),
                })
                .collect();
            let records: Vec<RecordKeys> = page.iter().map(RecordKeys::of).collect();
            for alone in alone(&store.select(|_| true), &records) {
                *if alone {
                    &mut alone_seen
                } else {
                    &mut met_seen
                } += 1;
            }
            // One by one, each applied before the next is asked.
            let mut sequential = store.clone();
            let mut created: Vec<Option<u64>> = Vec::new();
            let mut expected = Vec::new();
            for record in &page {
                let outcome = match_contact(&mut sequential, record);
                created.push(sequential.apply(record, &outcome));
                expected.push(outcome);
            }
            // Packed, the same page decides the same way (through `find-page-keys`
            // unpacked to `find-page`'s strings by default).
            let packed = match_keys_page(&mut store.clone(), &pack(&page));
            assert_eq!(
                packed,
                match_page(&mut store.clone(), &page),
                "page {page:?}"
            );
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
        assert!(
            alone_seen > 20_000 && met_seen > 20_000,
            "{alone_seen} alone, {met_seen} met"
        );
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
        let page = [
            company("c1", &["acme.io"]),        // links the unlinked account
            company("c2", &["acme.io"]),        // then finds it taken
            company("c3", &["new.io"]),         // creates
            company("c3", &["new.io", "b.io"]), // updates what c3 created
            company("c4", &[]),                 // no domain: created, matched by id alone
        ];
        let outcomes = match_accounts_page(&mut Accounts(vec![existing.clone()]), &page);
        let packed = crate::page_keys::pack(&page);
        assert_eq!(
            match_accounts_keys_page(&mut Accounts(vec![existing]), &packed),
            outcomes
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
