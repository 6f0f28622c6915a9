//! Destination accounts (S3): HubSpot companies as the embedded store keeps
//! them, matched by external id then domain, and the contact -> account link.

use super::{Change, ContactStore, DirectoryEntry, Fields, Records, SeenBy};
use crate::lookups::text_list;
use crate::rules::parse_fields;
use anyhow::Result;
use rusqlite::{OptionalExtension, params};
use serde::Serialize;

/// An account's new content, from the mapping (domains already normalised).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AccountData {
    pub name: Option<String>,
    pub domains: Vec<String>,
    pub fields: Fields,
}

/// A destination account as `crmsync accounts --json` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AccountRow {
    pub id: i64,
    pub external_id: Option<String>,
    pub name: Option<String>,
    pub domains: Vec<String>,
    pub fields: Fields,
    /// `false` once the company was archived, or stopped matching the filters.
    pub syncing: bool,
    /// Destination contacts linked to this account.
    pub contacts: u64,
    pub created_at: String,
    pub updated_at: String,
}

/// The account a destination contact belongs to, as `contacts --json` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountRef {
    pub id: i64,
    /// The source company's id.
    pub external_id: Option<String>,
    pub name: Option<String>,
}

impl ContactStore {
    /// The account linked to the source company `external_id`.
    pub fn find_account_by_external_id(&self, external_id: &str) -> Result<Option<DirectoryEntry>> {
        self.linked_id(Records::Accounts, external_id)?
            .map(|id| self.account_entry(id))
            .transpose()
    }

    /// Accounts holding the normalised `domain`.
    pub fn find_accounts_by_domain(&self, domain: &str) -> Result<Vec<DirectoryEntry>> {
        let ids: Vec<i64> = self
            .conn
            .prepare_cached(
                "SELECT account_id FROM account_domains WHERE domain = ?1 ORDER BY account_id",
            )?
            .query_map([domain], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        ids.into_iter().map(|id| self.account_entry(id)).collect()
    }

    fn account_entry(&self, id: i64) -> Result<DirectoryEntry> {
        let external_id = self
            .conn
            .prepare_cached("SELECT external_id FROM accounts WHERE id = ?1")?
            .query_row([id], |r| r.get(0))?;
        Ok(crate::rules::account_entry(
            id,
            external_id,
            self.domains(id)?,
        ))
    }

    /// Every account linked to one of `external_ids` or holding one of
    /// `domains`, each once, by id (`find-accounts-page`).
    pub fn find_accounts_page(
        &self,
        external_ids: &[&str],
        domains: &[&str],
    ) -> Result<Vec<DirectoryEntry>> {
        let mut stmt = self.conn.prepare_cached(
            // Joins driven by the key lists, as `find_page`'s (lookups.rs).
            "SELECT a.id FROM rarray(?1) AS k CROSS JOIN accounts AS a ON a.external_id = k.value \
             UNION ALL SELECT d.account_id FROM rarray(?2) AS k \
               CROSS JOIN account_domains AS d ON d.domain = k.value",
        )?;
        let found = stmt.query_map(params![text_list(external_ids), text_list(domains)], |r| {
            r.get::<_, i64>(0)
        })?;
        let ids = found.collect::<rusqlite::Result<std::collections::BTreeSet<i64>>>()?;
        ids.into_iter().map(|id| self.account_entry(id)).collect()
    }

    fn domains(&self, id: i64) -> Result<Vec<String>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT domain FROM account_domains WHERE account_id = ?1 ORDER BY position",
            )?
            .query_map([id], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?)
    }

    /// Creates an account linked to the company `external_id`.
    pub fn create_account(
        &self,
        external_id: &str,
        data: &AccountData,
        seen: Option<SeenBy<'_>>,
    ) -> Result<i64> {
        self.fenced(|| {
            let id = self.insert_row(
                Records::Accounts,
                external_id,
                &data.name,
                &data.fields,
                seen,
            )?;
            self.write_domains(id, &data.domains)?;
            Ok(id)
        })
    }

    /// Updates account `id` from the company and links it to `external_id`.
    /// The company's domains replace the account's; empty source values never
    /// erase a field; nothing is written when nothing changes.
    pub fn update_account(
        &self,
        id: i64,
        external_id: &str,
        data: &AccountData,
        seen: Option<SeenBy<'_>>,
    ) -> Result<Change> {
        self.fenced(|| {
            let old = self.read_row(Records::Accounts, id)?;
            let old_domains = self.domains(id)?;
            let new = old.updated(external_id, &data.name, &data.fields);
            let domains = crate::rules::kept_domains(&data.domains, &old_domains);
            if new == old && domains == old_domains {
                self.note_seen(Records::Accounts, id, seen)?;
                return Ok(Change::Unchanged);
            }
            self.write_row(Records::Accounts, id, &new, seen)?;
            self.conn
                .prepare_cached("DELETE FROM account_domains WHERE account_id = ?1")?
                .execute([id])?;
            self.write_domains(id, &domains)?;
            Ok(Change::Updated)
        })
    }

    fn write_domains(&self, id: i64, domains: &[String]) -> Result<()> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT OR IGNORE INTO account_domains (account_id, domain, position) VALUES (?1, ?2, ?3)",
        )?;
        for (position, domain) in domains.iter().enumerate() {
            stmt.execute(params![id, domain, position as i64])?;
        }
        Ok(())
    }

    /// The source ids of the companies synced and still syncing, oldest
    /// account first: the companies whose contacts a "from synced companies"
    /// sync reads (S2).
    pub fn synced_company_ids(&self) -> Result<Vec<String>> {
        Ok(self
            .conn
            .prepare("SELECT external_id FROM accounts WHERE external_id IS NOT NULL AND syncing = 1 ORDER BY id")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?)
    }

    /// Links contact `id` to the account of the first of `company_ids` the
    /// store holds, or to none when it holds none of them (the contact keeps
    /// syncing, unlinked). Whether the link changed.
    pub fn link_account(&self, contact_id: i64, company_ids: &[String]) -> Result<bool> {
        self.fenced(|| {
            let mut account: Option<i64> = None;
            for company in company_ids {
                account = self
                    .conn
                    .prepare_cached("SELECT id FROM accounts WHERE external_id = ?1")?
                    .query_row([company], |r| r.get(0))
                    .optional()?;
                if account.is_some() {
                    break;
                }
            }
            Ok(self
                .conn
                .prepare_cached(
                    "UPDATE contacts SET account_id = ?2 WHERE id = ?1 AND account_id IS NOT ?2",
                )?
                .execute(params![contact_id, account])?
                == 1)
        })
    }

    /// Every destination account, in creation order.
    pub fn accounts(&self) -> Result<Vec<AccountRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT a.id, a.external_id, a.name, a.fields, a.syncing, a.created_at, a.updated_at,
                    (SELECT COUNT(*) FROM contacts c WHERE c.account_id = a.id)
             FROM accounts a ORDER BY a.id",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    AccountRow {
                        id: r.get(0)?,
                        external_id: r.get(1)?,
                        name: r.get(2)?,
                        domains: Vec::new(),
                        fields: Fields::new(),
                        syncing: r.get(4)?,
                        created_at: r.get(5)?,
                        updated_at: r.get(6)?,
                        contacts: r.get(7)?,
                    },
                    r.get::<_, String>(3)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(mut account, fields)| {
                account.domains = self.domains(account.id)?;
                account.fields = parse_fields(account.id, &fields)?;
                Ok(account)
            })
            .collect()
    }

    /// Destination accounts linked to a source company.
    pub fn linked_accounts(&self) -> Result<u64> {
        Ok(self.conn.query_row(
            "SELECT COUNT(*) FROM accounts WHERE external_id IS NOT NULL",
            [],
            |r| r.get(0),
        )?)
    }

    /// The account contact `id` belongs to, if any.
    pub fn account_of(&self, contact_id: i64) -> Result<Option<AccountRef>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT a.id, a.external_id, a.name FROM contacts c JOIN accounts a ON a.id = c.account_id
                 WHERE c.id = ?1",
            )?
            .query_row([contact_id], |r| {
                Ok(AccountRef {
                    id: r.get(0)?,
                    external_id: r.get(1)?,
                    name: r.get(2)?,
                })
            })
            .optional()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ContactData;

    fn company(name: &str, domains: &[&str]) -> AccountData {
        AccountData {
            name: Some(name.into()),
            domains: domains.iter().map(|d| (*d).into()).collect(),
            fields: Fields::new(),
        }
    }

    #[test]
    fn accounts_are_found_by_id_and_domain_and_contacts_link_to_them() {
        let s = ContactStore::open_in_memory().unwrap();
        let acme = s
            .create_account("c1", &company("Acme", &["acme.com", "acme.io"]), None)
            .unwrap();
        assert_eq!(
            s.find_account_by_external_id("c1").unwrap().unwrap().id,
            acme
        );
        assert_eq!(s.find_accounts_by_domain("acme.io").unwrap()[0].id, acme);
        assert!(s.find_account_by_external_id("c2").unwrap().is_none());
        assert_eq!(
            s.update_account(acme, "c1", &company("Acme", &["acme.com", "acme.io"]), None)
                .unwrap(),
            Change::Unchanged
        );
        assert_eq!(
            s.update_account(acme, "c1", &company("Acme Inc", &[]), None)
                .unwrap(),
            Change::Updated
        );
        assert_eq!(
            s.accounts().unwrap()[0].domains,
            ["acme.com", "acme.io"],
            "kept"
        );

        let contact = s
            .create(
                "p1",
                &ContactData {
                    emails: vec!["a@acme.com".into()],
                    ..Default::default()
                },
                None,
            )
            .unwrap();
        assert!(
            s.link_account(contact, &["c9".into(), "c1".into()])
                .unwrap()
        );
        assert!(
            !s.link_account(contact, &["c1".into()]).unwrap(),
            "unchanged"
        );
        let account = s.account_of(contact).unwrap().unwrap();
        assert_eq!(
            (account.id, account.name.as_deref()),
            (acme, Some("Acme Inc"))
        );
        assert_eq!(s.accounts().unwrap()[0].contacts, 1);
        assert!(s.link_account(contact, &["c9".into()]).unwrap(), "unlinked");
        assert!(s.account_of(contact).unwrap().is_none());

        assert!(s.stop_syncing(Records::Accounts, "c1").unwrap());
        assert!(s.synced_company_ids().unwrap().is_empty());
    }
}
