//! What matching reads of a record (its source id and normalised handles),
//! borrowed either from a `mapped-contact` or from a packed `page-keys`, and
//! the packing itself.
//!
//! A `list<mapped-contact>` crosses the component boundary as one guest
//! allocation per string and per list, eight for a contact with one email and
//! one phone, each a call from the host into the guest's allocator; that was
//! most of what `match-page` cost in wasm beyond its native build.
//! `page-keys` carries the same keys as a byte buffer and two lists of
//! integers, three copies a page, and matching reads the strings in place.

use crate::types::{HandleKind, MappedContact, PageKeys};
use smallvec::SmallVec;

/// A record's handles of one kind (almost always at most two: inline).
pub type KeyList<'a> = SmallVec<[&'a str; 2]>;

/// One record's keys, borrowed.
#[derive(Debug, Default)]
pub struct RecordKeys<'a> {
    pub external_id: &'a str,
    pub emails: KeyList<'a>,
    pub phones: KeyList<'a>,
    pub domains: KeyList<'a>,
}

impl<'a> RecordKeys<'a> {
    /// The keys of a mapped contact.
    pub fn of(contact: &'a MappedContact) -> Self {
        let list = |values: &'a [String]| values.iter().map(String::as_str).collect();
        RecordKeys {
            external_id: &contact.external_id,
            emails: list(&contact.emails),
            phones: list(&contact.phones),
            domains: list(&contact.domains),
        }
    }

    /// Its emails, phones and domains.
    pub fn lists(&self) -> [&[&'a str]; 3] {
        [&self.emails, &self.phones, &self.domains]
    }

    /// The handles of one kind.
    pub fn handles(&self, kind: HandleKind) -> &[&'a str] {
        match kind {
            HandleKind::Email => &self.emails,
            HandleKind::Phone => &self.phones,
            HandleKind::Domain => &self.domains,
        }
    }
}

/// A page's keys, packed: each record's id, emails, phones and domains. The
/// runner packs its own bindings' records (`host/runtime/src/page_keys.rs`);
/// this one serves the tests and the bench's native build.
pub fn pack(contacts: &[MappedContact]) -> PageKeys {
    fn lists(c: &MappedContact) -> [&Vec<String>; 3] {
        [&c.emails, &c.phones, &c.domains]
    }
    let keys: usize = contacts
        .iter()
        .map(|c| 1 + lists(c).map(Vec::len).iter().sum::<usize>())
        .sum();
    let mut packed = PageKeys {
        text: Vec::with_capacity(keys * 16),
        ends: Vec::with_capacity(keys),
        counts: Vec::with_capacity(3 * contacts.len()),
    };
    for contact in contacts {
        packed
            .counts
            .extend(lists(contact).map(|list| list.len() as u32));
        for key in std::iter::once(&contact.external_id).chain(lists(contact).into_iter().flatten())
        {
            packed.text.extend_from_slice(key.as_bytes());
            packed.ends.push(packed.text.len() as u32);
        }
    }
    packed
}

/// The records of a packed page, reading their strings in place.
///
/// # Panics
/// On keys the contract rules out (see `page-keys`): the contract says the
/// call traps, since only a broken caller sends them.
pub fn unpack(keys: &PageKeys) -> Vec<RecordKeys<'_>> {
    let text = std::str::from_utf8(&keys.text).expect("page-keys: text is not UTF-8");
    assert!(
        keys.counts.len().is_multiple_of(3),
        "page-keys: counts hold three counts a record"
    );
    let records = keys.counts.len() / 3;
    let expected = records as u64 + keys.counts.iter().map(|&n| u64::from(n)).sum::<u64>();
    assert_eq!(
        expected,
        keys.ends.len() as u64,
        "page-keys: ends hold one end per key"
    );
    let mut ends = keys.ends.iter();
    let mut start = 0;
    let mut next = || {
        let end = *ends.next().expect("counted above") as usize;
        let key = text
            .get(start..end)
            .expect("page-keys: ends descend, pass the text or split a character");
        start = end;
        key
    };
    keys.counts
        .chunks_exact(3)
        .map(|counts| {
            let external_id = next();
            // Pushed one by one: `collect` into a `SmallVec` costs several
            // times as much for lists of none, one or two.
            let mut take = |n: u32| {
                let mut list = KeyList::new();
                for _ in 0..n {
                    list.push(next());
                }
                list
            };
            RecordKeys {
                external_id,
                emails: take(counts[0]),
                phones: take(counts[1]),
                domains: take(counts[2]),
            }
        })
        .collect()
}

/// Every source id and the handles of each of `kinds` of a packed page, as
/// `find-page` takes them (each handle once).
pub fn strings(keys: &PageKeys, kinds: &[HandleKind]) -> (Vec<String>, Vec<Vec<String>>) {
    let records = unpack(keys);
    let ids = records.iter().map(|r| r.external_id.to_owned()).collect();
    let by_kind = kinds
        .iter()
        .map(|&kind| {
            let mut seen = rustc_hash::FxHashSet::default();
            records
                .iter()
                .flat_map(|r| r.handles(kind).iter().copied())
                .filter(|h| seen.insert(*h))
                .map(str::to_owned)
                .collect()
        })
        .collect();
    (ids, by_kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contact(id: &str, emails: &[&str], phones: &[&str], domains: &[&str]) -> MappedContact {
        let owned = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect();
        MappedContact {
            external_id: id.into(),
            name: Some("ignored".into()),
            emails: owned(emails),
            phones: owned(phones),
            domains: owned(domains),
            fields: Vec::new(),
        }
    }

    #[test]
    fn a_packed_page_reads_back_as_its_records_keys() {
        let page = [
            contact("1", &["a@x.io", "é@x.io"], &["+1555"], &[]),
            contact("ünï", &[], &[], &["acme.com"]),
            contact("3", &[], &["+1666", "+1777"], &[]),
        ];
        let keys = pack(&page);
        let records = unpack(&keys);
        assert_eq!(records.len(), 3);
        for (record, contact) in records.iter().zip(&page) {
            let expected = RecordKeys::of(contact);
            assert_eq!(record.external_id, expected.external_id);
            for kind in [HandleKind::Email, HandleKind::Phone, HandleKind::Domain] {
                assert_eq!(record.handles(kind), expected.handles(kind));
            }
        }
        let (ids, handles) = strings(&keys, &[HandleKind::Email, HandleKind::Phone]);
        assert_eq!(ids, ["1", "ünï", "3"]);
        assert_eq!(handles[0], ["a@x.io", "é@x.io"]);
        assert_eq!(handles[1], ["+1555", "+1666", "+1777"]);
    }

    #[test]
    fn keys_the_contract_rules_out_trap() {
        let base = pack(&[contact("ü", &["a@x.io"], &[], &[])]);
        type Breaking = fn(&mut PageKeys);
        let broken: [(&str, Breaking); 5] = [
            ("inside a character", |k| k.ends[0] = 1),
            ("past the text", |k| k.ends[1] = 99),
            ("more handles than ends", |k| k.counts[1] = 1),
            ("counts not in threes", |k| {
                k.counts.pop();
            }),
            ("a huge count", |k| k.counts[2] = u32::MAX),
        ];
        for (what, breaking) in broken {
            let mut keys = base.clone();
            breaking(&mut keys);
            let result = std::panic::catch_unwind(|| unpack(&keys).len());
            assert!(result.is_err(), "{what}: {keys:?}");
        }
    }
}
