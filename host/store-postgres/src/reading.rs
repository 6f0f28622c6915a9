//! Reading the store back, as the CLI and the console list it.

use crate::{PgStore, opt_text, text};
use anyhow::Result;
use crmsync_store::interface::Reading;
use crmsync_store::rules::parse_fields;
use crmsync_store::{AccountRef, AccountRow, ContactRow, Counts, ErrorRow, RunRow};
use std::collections::BTreeMap;

/// Stored counts are `BIGINT`; they are never negative.
fn count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// `pages, seen, created, updated, skipped, failed` from column `first` on.
pub(crate) fn counts(row: &postgres::Row, first: usize) -> Counts {
    let at = |i: usize| count(row.get(first + i));
    Counts {
        pages: at(0),
        seen: at(1),
        created: at(2),
        updated: at(3),
        skipped: at(4),
        failed: at(5),
    }
}

impl Reading for PgStore {
    fn contacts_after(&self, after: i64, limit: Option<u32>) -> Result<Vec<ContactRow>> {
        // PostgreSQL reads `LIMIT NULL` as none.
        let limit = limit.map(i64::from);
        let rows = self.query(
            "SELECT c.id, c.external_id, c.name, c.fields, c.created_at, c.updated_at, c.syncing,
                    a.id, a.external_id, a.name
             FROM contacts c LEFT JOIN accounts a ON a.id = c.account_id
             WHERE c.id > $1 ORDER BY c.id LIMIT $2",
            &[&after, &limit],
        )?;
        let ids: Vec<i64> = rows.iter().map(|row| row.get(0)).collect();
        let mut handles = self.handles_of(&ids)?;
        rows.into_iter()
            .map(|row| {
                let id: i64 = row.get(0);
                let (emails, phones) = handles.remove(&id).unwrap_or_default();
                let account_id: Option<i64> = row.get(7);
                Ok(ContactRow {
                    id,
                    external_id: opt_text(row.get(1))?,
                    name: opt_text(row.get(2))?,
                    emails: emails.into_iter().map(|(v, _)| v).collect(),
                    phones: phones.into_iter().map(|(v, _)| v).collect(),
                    fields: parse_fields(id, row.get(3))?,
                    account: match account_id {
                        Some(account) => Some(AccountRef {
                            id: account,
                            external_id: opt_text(row.get(8))?,
                            name: opt_text(row.get(9))?,
                        }),
                        None => None,
                    },
                    syncing: row.get(6),
                    created_at: row.get(4),
                    updated_at: row.get(5),
                })
            })
            .collect()
    }

    fn accounts(&self) -> Result<Vec<AccountRow>> {
        let rows = self.query(
            "SELECT a.id, a.external_id, a.name, a.fields, a.syncing, a.created_at, a.updated_at,
                    (SELECT COUNT(*) FROM contacts c WHERE c.account_id = a.id)
             FROM accounts a ORDER BY a.id",
            &[],
        )?;
        let ids: Vec<i64> = rows.iter().map(|row| row.get(0)).collect();
        let mut domains = self.domains_of(&ids)?;
        rows.into_iter()
            .map(|row| {
                let id: i64 = row.get(0);
                Ok(AccountRow {
                    id,
                    external_id: opt_text(row.get(1))?,
                    name: opt_text(row.get(2))?,
                    domains: domains.remove(&id).unwrap_or_default(),
                    fields: parse_fields(id, row.get(3))?,
                    syncing: row.get(4),
                    contacts: count(row.get(7)),
                    created_at: row.get(5),
                    updated_at: row.get(6),
                })
            })
            .collect()
    }

    fn linked_contacts(&self) -> Result<u64> {
        let row = self.query_one(
            "SELECT COUNT(*) FROM contacts WHERE external_id IS NOT NULL",
            &[],
        )?;
        Ok(count(row.get(0)))
    }

    fn linked_accounts(&self) -> Result<u64> {
        let row = self.query_one(
            "SELECT COUNT(*) FROM accounts WHERE external_id IS NOT NULL",
            &[],
        )?;
        Ok(count(row.get(0)))
    }

    fn runs(&self, sync: &str) -> Result<Vec<RunRow>> {
        self.query(
            "SELECT id, sync, started_at, ended_at, status, pages, seen, created, updated, skipped,
                    failed, resumed, error, mode, runner
             FROM runs WHERE sync = $1 ORDER BY id DESC",
            &[&sync],
        )?
        .into_iter()
        .map(|row| {
            Ok(RunRow {
                id: row.get(0),
                sync: row.get(1),
                started_at: row.get(2),
                ended_at: row.get(3),
                status: row.get(4),
                counts: counts(&row, 5),
                resumed: count(row.get(11)),
                error: opt_text(row.get(12))?,
                mode: row.get(13),
                runner: row.get(14),
            })
        })
        .collect()
    }

    fn errors(&self, run_id: i64) -> Result<Vec<ErrorRow>> {
        self.query(
            "SELECT run_id, record_id, category, scope, field, retryable, message, resolution
             FROM record_errors WHERE run_id = $1 ORDER BY id",
            &[&run_id],
        )?
        .into_iter()
        .map(|row| {
            Ok(ErrorRow {
                run_id: row.get(0),
                record_id: opt_text(row.get(1))?,
                category: row.get(2),
                scope: row.get(3),
                field: opt_text(row.get(4))?,
                retryable: row.get(5),
                message: text(row.get(6))?,
                resolution: row.get(7),
            })
        })
        .collect()
    }

    fn error_counts(&self, run_id: i64) -> Result<BTreeMap<String, u64>> {
        Ok(self
            .query(
                "SELECT category, COUNT(*) FROM record_errors WHERE run_id = $1 GROUP BY category",
                &[&run_id],
            )?
            .into_iter()
            .map(|row| (row.get(0), count(row.get(1))))
            .collect())
    }
}
