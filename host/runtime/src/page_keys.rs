//! The runner's side of `page-keys`: packing a page's contacts for
//! `match-keys-page`, and reading the keys the component hands back in
//! `find-page-keys`.
//!
//! The component is not trusted to keep the contract: a span it sends outside
//! its text, or off a character boundary, fails the call with an error
//! instead of panicking the runner.

use crate::bindings::crmsync::sync::types::{MappedContact, PageKeys};
use anyhow::{Context, Result, bail, ensure};

/// The keys of `contacts`, packed (`page-keys`): each record's id, emails,
/// phones and domains.
pub fn pack(contacts: &[&MappedContact]) -> PageKeys {
    let keys: usize = contacts
        .iter()
        .map(|c| 1 + handles(c).map(Vec::len).iter().sum::<usize>())
        .sum();
    let mut packed = PageKeys {
        text: Vec::with_capacity(keys * 16),
        ends: Vec::with_capacity(keys),
        counts: Vec::with_capacity(3 * contacts.len()),
    };
    for contact in contacts {
        packed
            .counts
            .extend(handles(contact).map(|list| list.len() as u32));
        let keys =
            std::iter::once(&contact.external_id).chain(handles(contact).into_iter().flatten());
        for key in keys {
            packed.text.extend_from_slice(key.as_bytes());
            packed.ends.push(packed.text.len() as u32);
        }
    }
    packed
}

fn handles(contact: &MappedContact) -> [&Vec<String>; 3] {
    [&contact.emails, &contact.phones, &contact.domains]
}

/// A packed page's source ids and its handles of each kind, read in place.
#[derive(Debug, Default, PartialEq)]
pub struct Keys<'a> {
    pub external_ids: Vec<&'a str>,
    pub emails: Vec<&'a str>,
    pub phones: Vec<&'a str>,
    pub domains: Vec<&'a str>,
}

/// Reads `keys`, refusing anything the contract rules out.
pub fn read(keys: &PageKeys) -> Result<Keys<'_>> {
    let text = std::str::from_utf8(&keys.text).context("page-keys: text is not UTF-8")?;
    ensure!(
        keys.counts.len().is_multiple_of(3),
        "page-keys: {} counts, not three a record",
        keys.counts.len()
    );
    let records = keys.counts.len() / 3;
    let expected = records as u64 + keys.counts.iter().map(|&n| u64::from(n)).sum::<u64>();
    ensure!(
        expected == keys.ends.len() as u64,
        "page-keys: {} ends for {expected} keys",
        keys.ends.len()
    );
    let mut read = Keys {
        external_ids: Vec::with_capacity(records),
        ..Keys::default()
    };
    let mut start = 0;
    let mut ends = keys.ends.iter();
    let mut next = || -> Result<&str> {
        let end = *ends.next().context("counted above")? as usize;
        let Some(key) = text.get(start..end) else {
            bail!(
                "page-keys: a key from byte {start} to {end} of {} descends, passes the text or splits a character",
                text.len()
            );
        };
        start = end;
        Ok(key)
    };
    for counts in keys.counts.chunks_exact(3) {
        read.external_ids.push(next()?);
        for (list, &count) in [&mut read.emails, &mut read.phones, &mut read.domains]
            .into_iter()
            .zip(counts)
        {
            for _ in 0..count {
                list.push(next()?);
            }
        }
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contact(id: &str, emails: &[&str], phones: &[&str]) -> MappedContact {
        MappedContact {
            external_id: id.into(),
            name: None,
            emails: emails.iter().map(|s| (*s).into()).collect(),
            phones: phones.iter().map(|s| (*s).into()).collect(),
            domains: Vec::new(),
            fields: Vec::new(),
        }
    }

    #[test]
    fn a_packed_page_reads_back() {
        let (a, b) = (
            contact("1", &["a@x.io"], &["+1"]),
            contact("ü", &["b@x.io", "c@x.io"], &[]),
        );
        let keys = pack(&[&a, &b]);
        assert_eq!(
            read(&keys).unwrap(),
            Keys {
                external_ids: vec!["1", "ü"],
                emails: vec!["a@x.io", "b@x.io", "c@x.io"],
                phones: vec!["+1"],
                domains: vec![],
            }
        );
    }

    #[test]
    fn keys_the_contract_rules_out_are_an_error_not_a_panic() {
        let base = pack(&[&contact("ü", &["a@x.io"], &[])]);
        let broken: [fn(&mut PageKeys); 6] = [
            |k| k.ends[0] = 1,          // inside a character
            |k| k.ends[1] = 99,         // past the text
            |k| k.ends = vec![5, 2],    // descending
            |k| k.counts[1] = 1,        // more keys than ends
            |k| k.counts[2] = u32::MAX, // a huge count
            |k| k.text[0] = 0xFF,       // not UTF-8
        ];
        for breaking in broken {
            let mut keys = base.clone();
            breaking(&mut keys);
            assert!(read(&keys).is_err(), "{keys:?}");
        }
        let mut not_threes = base;
        not_threes.counts.pop();
        assert!(read(&not_threes).is_err());
    }
}
