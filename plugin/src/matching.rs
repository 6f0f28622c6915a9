//! Matching a mapped contact to the destination (X1-X5), as Front's HubSpot
//! sync documents it.
//!
//! Order: no handle -> E1; linked by external id -> update (X2); otherwise a
//! contact sharing a handle -> link it if unlinked (X3), skip if linked to
//! another source record (X4); nothing -> create (X5).
//!
//! A handle belongs to at most one linked contact: an update or link that would
//! give a linked contact's email or phone to a second linked contact is skipped
//! with E2/E3 instead, so "email taken" means the same thing on every path.

use crate::errors;
use crate::page_keys::{KeyList, RecordKeys};
use crate::types::{
    DestinationContact, HandleConflict, HandleKind, MappedContact, MatchOutcome, PageKeys,
};

/// The lookups matching needs (the `directory` import).
pub trait Directory {
    fn find_by_external_id(&mut self, external_id: &str) -> Option<DestinationContact>;
    fn find_by_handle(&mut self, kind: HandleKind, handle: &str) -> Vec<DestinationContact>;
    fn find_account_by_external_id(&mut self, external_id: &str) -> Option<DestinationContact>;
    fn find_accounts_by_domain(&mut self, domain: &str) -> Vec<DestinationContact>;
    /// Contacts linked to one of `external_ids` or holding one of the handles.
    fn find_page(
        &mut self,
        external_ids: &[String],
        emails: &[String],
        phones: &[String],
    ) -> Vec<DestinationContact>;
    /// Accounts linked to one of `external_ids` or holding one of `domains`.
    fn find_accounts_page(
        &mut self,
        external_ids: &[String],
        domains: &[String],
    ) -> Vec<DestinationContact>;
    /// [`Directory::find_page`] for a packed page (`find-page-keys`); by
    /// default its strings, unpacked.
    fn find_page_keys(&mut self, keys: &PageKeys) -> Vec<DestinationContact> {
        let (ids, handles) =
            crate::page_keys::strings(keys, &[HandleKind::Email, HandleKind::Phone]);
        self.find_page(&ids, &handles[0], &handles[1])
    }
    /// [`Directory::find_accounts_page`] for a packed page (`find-accounts-page-keys`).
    fn find_accounts_page_keys(&mut self, keys: &PageKeys) -> Vec<DestinationContact> {
        let (ids, handles) = crate::page_keys::strings(keys, &[HandleKind::Domain]);
        self.find_accounts_page(&ids, &handles[0])
    }
}

/// Decides how `contact` lands in the destination.
pub fn match_contact(directory: &mut impl Directory, contact: &MappedContact) -> MatchOutcome {
    match_contact_keys(directory, &RecordKeys::of(contact))
}

/// [`match_contact`] on a record's keys, which are all it reads.
pub fn match_contact_keys(directory: &mut impl Directory, contact: &RecordKeys) -> MatchOutcome {
    let id = contact.external_id;
    if contact.emails.is_empty() && contact.phones.is_empty() {
        return MatchOutcome::Skip(errors::missing_handle(id));
    }
    let linked = directory.find_by_external_id(id);
    match_by_handles(
        id,
        linked,
        &[
            (HandleKind::Email, &contact.emails),
            (HandleKind::Phone, &contact.phones),
        ],
        |kind, handle| directory.find_by_handle(kind, handle),
    )
}

/// Decides how a company lands among the destination's accounts (S3): the
/// same rules with domains as the only handle, and no handle is no error (a
/// company without a domain is matched by its id alone).
pub fn match_account(directory: &mut impl Directory, account: &MappedContact) -> MatchOutcome {
    match_account_keys(directory, &RecordKeys::of(account))
}

/// [`match_account`] on a company's keys.
pub fn match_account_keys(directory: &mut impl Directory, account: &RecordKeys) -> MatchOutcome {
    let id = account.external_id;
    let linked = directory.find_account_by_external_id(id);
    match_by_handles(
        id,
        linked,
        &[(HandleKind::Domain, &account.domains)],
        |_, domain| directory.find_accounts_by_domain(domain),
    )
}

/// X2-X5 once the linked record (if any) is known: a handle held by a record
/// linked elsewhere skips, else the linked one is updated, else the first
/// unlinked holder is linked, else a new record is created.
fn match_by_handles(
    id: &str,
    linked: Option<DestinationContact>,
    handles: &[(HandleKind, &KeyList)],
    mut holders_of: impl FnMut(HandleKind, &str) -> Vec<DestinationContact>,
) -> MatchOutcome {
    let mut first_unlinked: Option<String> = None;
    for &(kind, handles) in handles {
        for &handle in handles.iter() {
            for holder in holders_of(kind, handle) {
                if linked.as_ref().is_some_and(|l| l.id == holder.id) {
                    continue;
                }
                match holder.external_id {
                    Some(owner) if owner != id => {
                        return MatchOutcome::Skip(errors::handle_taken(&HandleConflict {
                            record_id: id.to_owned(),
                            kind,
                            handle: handle.to_owned(),
                            owner_external_id: owner,
                        }));
                    }
                    Some(_) => {}
                    None => {
                        first_unlinked.get_or_insert(holder.id);
                    }
                }
            }
        }
    }

    match (linked, first_unlinked) {
        (Some(linked), _) => MatchOutcome::Update(linked.id),
        (None, Some(unlinked)) => MatchOutcome::Link(unlinked),
        (None, None) => MatchOutcome::Create,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ErrorCategory;

    /// An in-memory destination, as a host would keep it: contacts, accounts.
    #[derive(Default)]
    struct Memory(Vec<DestinationContact>, Vec<DestinationContact>);

    impl Memory {
        fn with(mut self, id: &str, ext: Option<&str>, emails: &[&str], phones: &[&str]) -> Self {
            self.0.push(DestinationContact {
                id: id.into(),
                external_id: ext.map(Into::into),
                emails: emails.iter().map(|e| (*e).into()).collect(),
                phones: phones.iter().map(|p| (*p).into()).collect(),
                domains: vec![],
                from_source: vec![],
            });
            self
        }

        fn account(mut self, id: &str, ext: Option<&str>, domains: &[&str]) -> Self {
            self.1.push(DestinationContact {
                id: id.into(),
                external_id: ext.map(Into::into),
                emails: vec![],
                phones: vec![],
                domains: domains.iter().map(|d| (*d).into()).collect(),
                from_source: vec![],
            });
            self
        }
    }

    impl Directory for Memory {
        fn find_by_external_id(&mut self, external_id: &str) -> Option<DestinationContact> {
            self.0
                .iter()
                .find(|c| c.external_id.as_deref() == Some(external_id))
                .cloned()
        }
        fn find_by_handle(&mut self, kind: HandleKind, handle: &str) -> Vec<DestinationContact> {
            self.0
                .iter()
                .filter(|c| match kind {
                    HandleKind::Email => c.emails.iter().any(|e| e == handle),
                    HandleKind::Phone => c.phones.iter().any(|p| p == handle),
                    HandleKind::Domain => false,
                })
                .cloned()
                .collect()
        }
        fn find_account_by_external_id(&mut self, external_id: &str) -> Option<DestinationContact> {
            self.1
                .iter()
                .find(|c| c.external_id.as_deref() == Some(external_id))
                .cloned()
        }
        fn find_accounts_by_domain(&mut self, domain: &str) -> Vec<DestinationContact> {
            self.1
                .iter()
                .filter(|c| c.domains.iter().any(|d| d == domain))
                .cloned()
                .collect()
        }
        fn find_page(
            &mut self,
            _: &[String],
            _: &[String],
            _: &[String],
        ) -> Vec<DestinationContact> {
            self.0.clone()
        }
        fn find_accounts_page(&mut self, _: &[String], _: &[String]) -> Vec<DestinationContact> {
            self.1.clone()
        }
    }

    fn company(ext: &str, domains: &[&str]) -> MappedContact {
        MappedContact {
            domains: domains.iter().map(|d| (*d).into()).collect(),
            ..contact(ext, &[], &[])
        }
    }

    #[test]
    fn accounts_match_by_id_then_domain_and_need_no_handle() {
        let mut d = Memory::default()
            .account("a1", Some("c1"), &["acme.com"])
            .account("a2", None, &["initech.com"])
            .account("a3", Some("c3"), &["globex.com"])
            .with("p1", None, &[], &[]);
        assert_eq!(
            match_account(&mut d, &company("c1", &["new.acme.com"])),
            MatchOutcome::Update("a1".into())
        );
        assert_eq!(
            match_account(&mut d, &company("c2", &["initech.com"])),
            MatchOutcome::Link("a2".into())
        );
        assert_eq!(
            match_account(&mut d, &company("c9", &[])),
            MatchOutcome::Create
        );
        assert_eq!(
            category(match_account(&mut d, &company("c4", &["globex.com"]))),
            ErrorCategory::DomainTaken
        );
        // Accounts and contacts are separate: a contact's id never matches a company.
        assert_eq!(
            match_account(&mut d, &company("p1", &[])),
            MatchOutcome::Create
        );
    }

    fn contact(ext: &str, emails: &[&str], phones: &[&str]) -> MappedContact {
        MappedContact {
            external_id: ext.into(),
            name: None,
            emails: emails.iter().map(|e| (*e).into()).collect(),
            phones: phones.iter().map(|p| (*p).into()).collect(),
            domains: vec![],
            fields: vec![],
        }
    }

    fn category(outcome: MatchOutcome) -> ErrorCategory {
        match outcome {
            MatchOutcome::Skip(e) => e.category,
            other => panic!("expected a skip, got {other:?}"),
        }
    }

    #[test]
    fn e1_no_handle_is_skipped() {
        let mut d = Memory::default().with("d1", Some("1"), &["a@x.io"], &[]);
        assert_eq!(
            category(match_contact(&mut d, &contact("1", &[], &[]))),
            ErrorCategory::MissingHandle
        );
    }

    #[test]
    fn x2_linked_contact_is_updated_even_when_its_handles_changed() {
        let mut d = Memory::default().with("d1", Some("1"), &["old@x.io"], &[]);
        let out = match_contact(&mut d, &contact("1", &["new@x.io"], &[]));
        assert_eq!(out, MatchOutcome::Update("d1".into()));
    }

    #[test]
    fn x3_unlinked_contact_sharing_a_handle_is_linked() {
        let mut d = Memory::default().with("d7", None, &[], &["+15550100"]);
        let out = match_contact(&mut d, &contact("2", &["b@x.io"], &["+15550100"]));
        assert_eq!(out, MatchOutcome::Link("d7".into()));
    }

    #[test]
    fn x3_prefers_the_email_match_over_the_phone_match() {
        let mut d = Memory::default()
            .with("dp", None, &[], &["+15550100"])
            .with("de", None, &["b@x.io"], &[]);
        let out = match_contact(&mut d, &contact("2", &["b@x.io"], &["+15550100"]));
        assert_eq!(out, MatchOutcome::Link("de".into()));
    }

    #[test]
    fn x4_email_owned_by_another_linked_contact_is_e2() {
        let mut d = Memory::default().with("d1", Some("1"), &["a@x.io"], &[]);
        let out = match_contact(&mut d, &contact("2", &["a@x.io"], &[]));
        match out {
            MatchOutcome::Skip(e) => {
                assert_eq!(e.category, ErrorCategory::EmailTaken);
                assert_eq!(e.record_id.as_deref(), Some("2"));
                assert!(e.message.contains("a@x.io"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn x4_phone_owned_by_another_linked_contact_is_e3() {
        let mut d = Memory::default().with("d1", Some("1"), &[], &["+15550100"]);
        let out = match_contact(&mut d, &contact("2", &["new@x.io"], &["+15550100"]));
        assert_eq!(category(out), ErrorCategory::PhoneTaken);
    }

    #[test]
    fn x4_a_taken_handle_blocks_even_when_another_handle_matches_an_unlinked_contact() {
        let mut d = Memory::default().with("free", None, &["b@x.io"], &[]).with(
            "d1",
            Some("1"),
            &[],
            &["+15550100"],
        );
        let out = match_contact(&mut d, &contact("2", &["b@x.io"], &["+15550100"]));
        assert_eq!(category(out), ErrorCategory::PhoneTaken);
    }

    #[test]
    fn an_update_that_would_steal_a_linked_handle_is_skipped() {
        let mut d = Memory::default()
            .with("d1", Some("1"), &["a@x.io"], &[])
            .with("d2", Some("2"), &["b@x.io"], &[]);
        let out = match_contact(&mut d, &contact("2", &["a@x.io"], &[]));
        assert_eq!(category(out), ErrorCategory::EmailTaken);
    }

    #[test]
    fn x5_nothing_matched_creates() {
        let mut d = Memory::default().with("d1", Some("1"), &["a@x.io"], &[]);
        assert_eq!(
            match_contact(&mut d, &contact("3", &["c@x.io"], &[])),
            MatchOutcome::Create
        );
    }

    #[test]
    fn x7_matching_again_after_create_updates_the_same_contact() {
        let mut d = Memory::default().with("d9", Some("3"), &["c@x.io"], &["+1555"]);
        assert_eq!(
            match_contact(&mut d, &contact("3", &["c@x.io"], &["+1555"])),
            MatchOutcome::Update("d9".into())
        );
    }
}
