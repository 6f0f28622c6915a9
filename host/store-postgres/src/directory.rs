//! The destination directory on PostgreSQL: look-ups (a page's in one
//! query over arrays), creating, updating and linking contacts and accounts,
//! folding merged records, and the sweep's `seen` bookkeeping.

use crate::held::NewContacts;
use crate::{PgStore, bytes, opt_bytes, opt_text, text};
use anyhow::{Context, Result};
use crmsync_store::interface::Directory;
use crmsync_store::rules::{
    FlaggedHandle, Row, account_entry, contact_entry, fold_handles, kept_domains, merge_handles,
    now_text, parse_fields,
};
use crmsync_store::{
    AccountData, Change, ContactData, DirectoryEntry, Fields, Handle, Records, SeenBy,
};
use std::collections::BTreeMap;

/// One statement over either record table, as a `&'static str` (the
/// statement cache's key).
macro_rules! per_table {
    ($records:expr, $before:literal, $after:literal) => {
        match $records {
            Records::Contacts => concat!($before, "contacts", $after),
            Records::Accounts => concat!($before, "accounts", $after),
        }
    };
}

/// A contact's emails and phones, each with its `from_source` flag.
type Handles = (Vec<FlaggedHandle>, Vec<FlaggedHandle>);

impl PgStore {
    fn linked_id(&self, records: Records, external_id: &str) -> Result<Option<i64>> {
        let sql = per_table!(records, "SELECT id FROM ", " WHERE external_id = $1");
        Ok(self
            .query_opt(sql, &[&bytes(external_id)])?
            .map(|row| row.get(0)))
    }

    /// The handles of contacts `ids` in order, each with its `from_source` flag.
    pub(crate) fn handles_of(&self, ids: &[i64]) -> Result<BTreeMap<i64, Handles>> {
        let mut handles: BTreeMap<i64, Handles> = BTreeMap::new();
        for row in self.read(
            "SELECT contact_id, kind, value, from_source FROM handles
             WHERE contact_id = ANY($1) ORDER BY contact_id, position",
            &[&ids],
        )? {
            let entry = handles.entry(row.get(0)).or_default();
            let kind: &str = row.get(1);
            let handle = (text(row.get(2))?, row.get(3));
            if kind == "email" {
                entry.0.push(handle);
            } else {
                entry.1.push(handle);
            }
        }
        Ok(handles)
    }

    fn handles(&self, id: i64) -> Result<Handles> {
        Ok(self.handles_of(&[id])?.remove(&id).unwrap_or_default())
    }

    /// Directory entries of contacts `ids`, by id.
    fn entries(&self, ids: &[i64]) -> Result<Vec<DirectoryEntry>> {
        // A page of new records finds nobody: two statements saved.
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut handles = self.handles_of(ids)?;
        let mut entries = Vec::with_capacity(ids.len());
        for row in self.read(
            "SELECT id, external_id FROM contacts WHERE id = ANY($1) ORDER BY id",
            &[&ids],
        )? {
            let id: i64 = row.get(0);
            let (emails, phones) = handles.remove(&id).unwrap_or_default();
            entries.push(contact_entry(id, opt_text(row.get(1))?, emails, phones));
        }
        Ok(entries)
    }

    pub(crate) fn domains_of(&self, ids: &[i64]) -> Result<BTreeMap<i64, Vec<String>>> {
        let mut domains: BTreeMap<i64, Vec<String>> = BTreeMap::new();
        for row in self.query(
            "SELECT account_id, domain FROM account_domains
             WHERE account_id = ANY($1) ORDER BY account_id, position",
            &[&ids],
        )? {
            domains
                .entry(row.get(0))
                .or_default()
                .push(text(row.get(1))?);
        }
        Ok(domains)
    }

    fn account_entries(&self, ids: &[i64]) -> Result<Vec<DirectoryEntry>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut domains = self.domains_of(ids)?;
        let mut entries = Vec::with_capacity(ids.len());
        for row in self.query(
            "SELECT id, external_id FROM accounts WHERE id = ANY($1) ORDER BY id",
            &[&ids],
        )? {
            let id: i64 = row.get(0);
            let domains = domains.remove(&id).unwrap_or_default();
            entries.push(account_entry(id, opt_text(row.get(1))?, domains));
        }
        Ok(entries)
    }

    fn insert_row(
        &self,
        records: Records,
        external_id: Option<&str>,
        name: &Option<String>,
        fields: &Fields,
        seen: Option<SeenBy<'_>>,
    ) -> Result<i64> {
        let sql = per_table!(
            records,
            "INSERT INTO ",
            " (external_id, name, fields, created_at, updated_at, seen_sync, seen_run)
             VALUES ($1, $2, $3, $4, $4, $5, $6) RETURNING id"
        );
        Ok(self
            .query_one(
                sql,
                &[
                    &external_id.map(bytes),
                    &opt_bytes(name),
                    &serde_json::to_string(fields)?,
                    &now_text(),
                    &seen.map(|s| s.sync),
                    &seen.map(|s| s.run_id),
                ],
            )?
            .get(0))
    }

    fn read_row(&self, records: Records, id: i64) -> Result<Row> {
        let sql = per_table!(
            records,
            "SELECT external_id, name, fields, syncing FROM ",
            " WHERE id = $1"
        );
        let row = self.query_opt(sql, &[&id])?.with_context(|| {
            format!(
                "destination {} {id} disappeared during the run",
                records.noun()
            )
        })?;
        Ok(Row {
            external_id: opt_text(row.get(0))?,
            name: opt_text(row.get(1))?,
            fields: parse_fields(id, row.get(2))?,
            syncing: row.get(3),
        })
    }

    /// Writes a row read before; fails when it is gone by now.
    pub(crate) fn write_row(
        &self,
        records: Records,
        id: i64,
        row: &Row,
        seen: Option<SeenBy<'_>>,
    ) -> Result<()> {
        let sql = per_table!(
            records,
            "UPDATE ",
            " SET external_id = $2, name = $3, fields = $4, syncing = TRUE, updated_at = $5,
                  seen_sync = COALESCE($6, seen_sync), seen_run = COALESCE($7, seen_run)
             WHERE id = $1"
        );
        let written = self.execute(
            sql,
            &[
                &id,
                &opt_bytes(&row.external_id),
                &opt_bytes(&row.name),
                &serde_json::to_string(&row.fields)?,
                &now_text(),
                &seen.map(|s| s.sync),
                &seen.map(|s| s.run_id),
            ],
        )?;
        // The row is locked now, so its handles can follow; had another
        // connection removed it since it was read, they would be orphans.
        anyhow::ensure!(
            written == 1,
            "destination {} {id} disappeared during the run",
            records.noun()
        );
        Ok(())
    }

    fn note_seen(&self, records: Records, id: i64, seen: Option<SeenBy<'_>>) -> Result<()> {
        if let Some(seen) = seen {
            let sql = per_table!(
                records,
                "UPDATE ",
                " SET seen_sync = $2, seen_run = $3 WHERE id = $1"
            );
            self.execute(sql, &[&id, &seen.sync, &seen.run_id])?;
        }
        Ok(())
    }

    /// Writes a contact's handles in one statement (arrays unnested).
    fn write_handles(
        &self,
        id: i64,
        emails: &[FlaggedHandle],
        phones: &[FlaggedHandle],
    ) -> Result<()> {
        let rows = HandleRows::of(emails, phones);
        if rows.kinds.is_empty() {
            return Ok(());
        }
        self.execute(
            "INSERT INTO handles (contact_id, kind, value, position, from_source)
             SELECT $1::bigint, * FROM unnest($2::text[], $3::bytea[], $4::bigint[], $5::boolean[])
             ON CONFLICT DO NOTHING",
            &[&id, &rows.kinds, &rows.values, &rows.positions, &rows.flags],
        )?;
        Ok(())
    }

    fn replace_handles(
        &self,
        id: i64,
        emails: &[FlaggedHandle],
        phones: &[FlaggedHandle],
    ) -> Result<()> {
        self.execute("DELETE FROM handles WHERE contact_id = $1", &[&id])?;
        self.write_handles(id, emails, phones)
    }

    fn write_domains(&self, id: i64, domains: &[String]) -> Result<()> {
        self.execute("DELETE FROM account_domains WHERE account_id = $1", &[&id])?;
        let values: Vec<&[u8]> = domains.iter().map(|d| bytes(d)).collect();
        let positions: Vec<i64> = (0..domains.len() as i64).collect();
        self.execute(
            "INSERT INTO account_domains (account_id, domain, position)
             SELECT $1::bigint, * FROM unnest($2::bytea[], $3::bigint[])
             ON CONFLICT DO NOTHING",
            &[&id, &values, &positions],
        )?;
        Ok(())
    }

    /// Moves what contact `from` had of its own to `into`, then removes `from`.
    fn fold_into(&self, from: i64, into: i64) -> Result<()> {
        let from_row = self.read_row(Records::Contacts, from)?;
        let into_row = self.read_row(Records::Contacts, into)?;
        let mut fields = into_row.fields;
        for (key, value) in from_row.fields {
            fields.entry(key).or_insert(value);
        }
        let (from_emails, from_phones) = self.handles(from)?;
        let (mut emails, mut phones) = self.handles(into)?;
        fold_handles(from_emails, &mut emails);
        fold_handles(from_phones, &mut phones);
        // The row first: deleting it waits for any writer holding its lock,
        // so the handles deleted after it include any that writer added.
        self.execute("DELETE FROM contacts WHERE id = $1", &[&from])?;
        self.execute("DELETE FROM handles WHERE contact_id = $1", &[&from])?;
        let written = self.execute(
            "UPDATE contacts SET name = $2, fields = $3, updated_at = $4 WHERE id = $1",
            &[
                &into,
                &opt_bytes(&into_row.name.or(from_row.name)),
                &serde_json::to_string(&fields)?,
                &now_text(),
            ],
        )?;
        anyhow::ensure!(
            written == 1,
            "destination contact {into} disappeared during the run"
        );
        self.replace_handles(into, &emails, &phones)
    }
}

/// A contact's handles as the parallel arrays `unnest` inserts, in order:
/// emails, then phones.
#[derive(Default)]
struct HandleRows<'a> {
    kinds: Vec<&'static str>,
    values: Vec<&'a [u8]>,
    positions: Vec<i64>,
    flags: Vec<bool>,
}

impl<'a> HandleRows<'a> {
    /// A handle listed twice keeps its first place, as SQLite's one insert
    /// at a time does: one multi-row insert resolves a conflict in whatever
    /// order its plan reads the rows, so repeats are dropped here.
    fn of(emails: &'a [FlaggedHandle], phones: &'a [FlaggedHandle]) -> Self {
        let mut all: Vec<(Handle, &FlaggedHandle)> =
            Vec::with_capacity(emails.len() + phones.len());
        for (kind, handles) in [(Handle::Email, emails), (Handle::Phone, phones)] {
            let mut seen = std::collections::HashSet::with_capacity(handles.len());
            all.extend(
                handles
                    .iter()
                    .filter(|(value, _)| seen.insert(value.as_str()))
                    .map(|handle| (kind, handle)),
            );
        }
        HandleRows {
            kinds: all.iter().map(|(kind, _)| kind.as_str()).collect(),
            values: all.iter().map(|(_, (v, _))| bytes(v)).collect(),
            positions: (0..all.len() as i64).collect(),
            flags: all.iter().map(|(_, (_, f))| *f).collect(),
        }
    }
}

fn all_bytes<'a>(values: &[&'a str]) -> Vec<&'a [u8]> {
    values.iter().map(|v| bytes(v)).collect()
}

fn flagged(values: &[String], from_source: bool) -> Vec<FlaggedHandle> {
    values.iter().map(|v| (v.clone(), from_source)).collect()
}

impl Directory for PgStore {
    fn find_by_external_id(&self, external_id: &str) -> Result<Option<DirectoryEntry>> {
        match self.linked_id(Records::Contacts, external_id)? {
            Some(id) => Ok(self.entries(&[id])?.pop()),
            None => Ok(None),
        }
    }

    fn find_by_handle(&self, kind: Handle, value: &str) -> Result<Vec<DirectoryEntry>> {
        let ids: Vec<i64> = self
            .query(
                "SELECT DISTINCT contact_id FROM handles WHERE kind = $1 AND value = $2",
                &[&kind.as_str(), &bytes(value)],
            )?
            .iter()
            .map(|row| row.get(0))
            .collect();
        self.entries(&ids)
    }

    fn find_page(
        &self,
        external_ids: &[&str],
        emails: &[&str],
        phones: &[&str],
    ) -> Result<Vec<DirectoryEntry>> {
        let ids: Vec<i64> = self
            .read(
                "SELECT id FROM contacts WHERE external_id = ANY($1)
                 UNION SELECT contact_id FROM handles WHERE kind = 'email' AND value = ANY($2)
                 UNION SELECT contact_id FROM handles WHERE kind = 'phone' AND value = ANY($3)",
                &[
                    &all_bytes(external_ids),
                    &all_bytes(emails),
                    &all_bytes(phones),
                ],
            )?
            .iter()
            .map(|row| row.get(0))
            .collect();
        self.entries(&ids)
    }

    fn find_account_by_external_id(&self, external_id: &str) -> Result<Option<DirectoryEntry>> {
        match self.linked_id(Records::Accounts, external_id)? {
            Some(id) => Ok(self.account_entries(&[id])?.pop()),
            None => Ok(None),
        }
    }

    fn find_accounts_by_domain(&self, domain: &str) -> Result<Vec<DirectoryEntry>> {
        self.find_accounts_page(&[], &[domain])
    }

    fn find_accounts_page(
        &self,
        external_ids: &[&str],
        domains: &[&str],
    ) -> Result<Vec<DirectoryEntry>> {
        let ids: Vec<i64> = self
            .query(
                "SELECT id FROM accounts WHERE external_id = ANY($1)
                 UNION SELECT account_id FROM account_domains WHERE domain = ANY($2)",
                &[&all_bytes(external_ids), &all_bytes(domains)],
            )?
            .iter()
            .map(|row| row.get(0))
            .collect();
        self.account_entries(&ids)
    }

    fn create(
        &self,
        external_id: &str,
        data: &ContactData,
        seen: Option<SeenBy<'_>>,
    ) -> Result<i64> {
        // One statement either way; and a connection's contacts then take
        // their ids in the order it created them.
        Ok(self.create_many(&[(external_id, data)], seen)?[0])
    }

    fn create_many(
        &self,
        contacts: &[(&str, &ContactData)],
        seen: Option<SeenBy<'_>>,
    ) -> Result<Vec<i64>> {
        if contacts.is_empty() {
            return Ok(Vec::new());
        }
        self.fenced(|| {
            // Every row and every handle in one statement: a page of creates
            // is one round trip, not one per contact. The ids are reserved
            // beforehand (`reserve_ids`), so handles name their contact
            // directly: letting the insert number the rows and joining its
            // `RETURNING` back to the input cost a page of 100 about 0.5 ms
            // of 2.0 (the server's log). New contacts' handles cannot
            // conflict (`HandleRows` drops repeats): no `ON CONFLICT`.
            let ids = self.reserve_ids(contacts.len())?;
            let mut owners: Vec<i64> = Vec::new();
            let handles: Vec<(Vec<FlaggedHandle>, Vec<FlaggedHandle>)> = contacts
                .iter()
                .map(|(_, data)| (flagged(&data.emails, true), flagged(&data.phones, true)))
                .collect();
            let mut rows = HandleRows::default();
            for ((emails, phones), id) in handles.iter().zip(&ids) {
                let of = HandleRows::of(emails, phones);
                owners.extend(std::iter::repeat_n(*id, of.kinds.len()));
                rows.kinds.extend(of.kinds);
                rows.values.extend(of.values);
                rows.positions.extend(of.positions);
                rows.flags.extend(of.flags);
            }
            let rows = NewContacts {
                ids: ids.clone(),
                external_ids: contacts
                    .iter()
                    .map(|(id, _)| id.as_bytes().to_vec())
                    .collect(),
                names: contacts
                    .iter()
                    .map(|(_, data)| data.name.as_ref().map(|n| n.as_bytes().to_vec()))
                    .collect(),
                fields: contacts
                    .iter()
                    .map(|(_, data)| serde_json::to_string(&data.fields))
                    .collect::<Result<Vec<String>, _>>()?,
                now: now_text(),
                seen_sync: seen.map(|s| s.sync.to_owned()),
                seen_run: seen.map(|s| s.run_id),
                owners,
                kinds: rows.kinds,
                values: rows.values.iter().map(|v| v.to_vec()).collect(),
                positions: rows.positions,
                flags: rows.flags,
            };
            // A page's creates wait for its commit (`held`) when they can.
            if let Some(rows) = self.hold_contacts(rows) {
                self.insert_contacts(&rows)?;
            }
            Ok(ids)
        })
    }

    fn update(
        &self,
        id: i64,
        external_id: &str,
        data: &ContactData,
        seen: Option<SeenBy<'_>>,
    ) -> Result<Change> {
        self.fenced(|| {
            let old = self.read_row(Records::Contacts, id)?;
            let (old_emails, old_phones) = self.handles(id)?;
            let new = old.updated(external_id, &data.name, &data.fields);
            let emails = merge_handles(&data.emails, &old_emails);
            let phones = merge_handles(&data.phones, &old_phones);
            if new == old && emails == old_emails && phones == old_phones {
                self.note_seen(Records::Contacts, id, seen)?;
                return Ok(Change::Unchanged);
            }
            self.write_row(Records::Contacts, id, &new, seen)?;
            self.replace_handles(id, &emails, &phones)?;
            Ok(Change::Updated)
        })
    }

    fn create_account(
        &self,
        external_id: &str,
        data: &AccountData,
        seen: Option<SeenBy<'_>>,
    ) -> Result<i64> {
        self.fenced(|| {
            let id = self.insert_row(
                Records::Accounts,
                Some(external_id),
                &data.name,
                &data.fields,
                seen,
            )?;
            self.write_domains(id, &data.domains)?;
            Ok(id)
        })
    }

    fn update_account(
        &self,
        id: i64,
        external_id: &str,
        data: &AccountData,
        seen: Option<SeenBy<'_>>,
    ) -> Result<Change> {
        self.fenced(|| {
            let old = self.read_row(Records::Accounts, id)?;
            let old_domains = self.domains_of(&[id])?.remove(&id).unwrap_or_default();
            let new = old.updated(external_id, &data.name, &data.fields);
            let domains = kept_domains(&data.domains, &old_domains);
            if new == old && domains == old_domains {
                self.note_seen(Records::Accounts, id, seen)?;
                return Ok(Change::Unchanged);
            }
            self.write_row(Records::Accounts, id, &new, seen)?;
            self.write_domains(id, &domains)?;
            Ok(Change::Updated)
        })
    }

    fn mark_seen(
        &self,
        records: Records,
        external_id: &str,
        sync: &str,
        run_id: i64,
    ) -> Result<()> {
        self.fenced(|| {
            let sql = per_table!(
                records,
                "UPDATE ",
                " SET seen_sync = $2, seen_run = $3 WHERE external_id = $1"
            );
            self.execute(sql, &[&bytes(external_id), &sync, &run_id])?;
            Ok(())
        })
    }

    fn stop_syncing(&self, records: Records, external_id: &str) -> Result<bool> {
        self.fenced(|| {
            let sql = per_table!(
                records,
                "UPDATE ",
                " SET syncing = FALSE, updated_at = $2 WHERE external_id = $1 AND syncing"
            );
            Ok(self.execute(sql, &[&bytes(external_id), &now_text()])? == 1)
        })
    }

    fn stop_syncing_unseen(&self, records: Records, sync: &str, run_id: i64) -> Result<u64> {
        self.fenced(|| {
            let sql = per_table!(
                records,
                "UPDATE ",
                " SET syncing = FALSE, updated_at = $3
                 WHERE seen_sync = $1 AND seen_run <> $2 AND syncing"
            );
            self.execute(sql, &[&sync, &run_id, &now_text()])
        })
    }

    fn absorb_merged(&self, survivor: &str, merged_ids: &[String]) -> Result<u64> {
        self.fenced(|| {
            let mut keep = self.linked_id(Records::Contacts, survivor)?;
            let mut changed = 0;
            for merged in merged_ids.iter().filter(|m| *m != survivor) {
                let Some(absorbed) = self.linked_id(Records::Contacts, merged)? else {
                    continue;
                };
                match keep {
                    None => {
                        self.execute(
                            "UPDATE contacts SET external_id = $2, updated_at = $3 WHERE id = $1",
                            &[&absorbed, &bytes(survivor), &now_text()],
                        )?;
                        keep = Some(absorbed);
                    }
                    Some(into) => self.fold_into(absorbed, into)?,
                }
                changed += 1;
            }
            Ok(changed)
        })
    }

    fn insert_unlinked(&self, data: &ContactData) -> Result<i64> {
        self.fenced(|| {
            let id = self.insert_row(Records::Contacts, None, &data.name, &data.fields, None)?;
            self.write_handles(
                id,
                &flagged(&data.emails, false),
                &flagged(&data.phones, false),
            )?;
            Ok(id)
        })
    }

    fn link_account(&self, contact_id: i64, company_ids: &[String]) -> Result<bool> {
        self.fenced(|| {
            let mut account: Option<i64> = None;
            for company in company_ids {
                account = self.linked_id(Records::Accounts, company)?;
                if account.is_some() {
                    break;
                }
            }
            Ok(self.execute(
                "UPDATE contacts SET account_id = $2
                 WHERE id = $1 AND account_id IS DISTINCT FROM $2",
                &[&contact_id, &account],
            )? == 1)
        })
    }

    fn synced_company_ids(&self) -> Result<Vec<String>> {
        self.query(
            "SELECT external_id FROM accounts WHERE external_id IS NOT NULL AND syncing ORDER BY id",
            &[],
        )?
        .into_iter()
        .map(|row| text(row.get(0)))
        .collect()
    }
}
