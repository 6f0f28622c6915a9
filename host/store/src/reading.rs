//! Reading the store back: contacts, runs and errors, as the CLI lists them.

use super::*;

impl ContactStore {
    /// Every destination contact, in creation order.
    pub fn contacts(&self) -> Result<Vec<ContactRow>> {
        self.contacts_after(0, None)
    }

    /// The destination contacts after id `after`, in creation order, at most
    /// `limit` of them (a page of the console's API).
    pub fn contacts_after(&self, after: i64, limit: Option<u32>) -> Result<Vec<ContactRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, external_id, name, fields, created_at, updated_at, syncing FROM contacts
             WHERE id > ?1 ORDER BY id LIMIT ?2",
        )?;
        // SQLite reads a negative limit as none.
        let limit = limit.map_or(-1, i64::from);
        let rows = stmt
            .query_map(rusqlite::params![after, limit], |r| {
                Ok((
                    ContactRow {
                        id: r.get(0)?,
                        external_id: r.get(1)?,
                        name: r.get(2)?,
                        emails: Vec::new(),
                        phones: Vec::new(),
                        fields: BTreeMap::new(),
                        account: None,
                        created_at: r.get(4)?,
                        updated_at: r.get(5)?,
                        syncing: r.get(6)?,
                    },
                    r.get::<_, String>(3)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(mut contact, fields)| {
                let (emails, phones) = self.handles(contact.id)?;
                contact.emails = emails.into_iter().map(|(v, _)| v).collect();
                contact.phones = phones.into_iter().map(|(v, _)| v).collect();
                contact.fields = parse_fields(contact.id, &fields)?;
                contact.account = self.account_of(contact.id)?;
                Ok(contact)
            })
            .collect()
    }

    /// The sync's runs, newest first.
    pub fn runs(&self, sync: &str) -> Result<Vec<RunRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, sync, started_at, ended_at, status, pages, seen, created, updated, skipped, failed, resumed, error, mode, runner
             FROM runs WHERE sync = ?1 ORDER BY id DESC",
        )?;
        let rows = stmt
            .query_map([sync], |r| {
                Ok(RunRow {
                    id: r.get(0)?,
                    sync: r.get(1)?,
                    started_at: r.get(2)?,
                    ended_at: r.get(3)?,
                    status: r.get(4)?,
                    counts: Counts::from_row(r, 5)?,
                    resumed: r.get(11)?,
                    error: r.get(12)?,
                    mode: r.get(13)?,
                    runner: r.get(14)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// A run's errors counted by category, in SQL: a run with a million
    /// record errors is counted without reading them into memory.
    pub fn error_counts(&self, run_id: i64) -> Result<BTreeMap<String, u64>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT category, COUNT(*) FROM record_errors WHERE run_id = ?1 GROUP BY category",
        )?;
        let rows = statement.query_map([run_id], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The errors recorded by run `run_id`, in the order they happened.
    pub fn errors(&self, run_id: i64) -> Result<Vec<ErrorRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT run_id, record_id, category, scope, field, retryable, message, resolution
             FROM record_errors WHERE run_id = ?1 ORDER BY id",
        )?;
        let rows = stmt
            .query_map([run_id], |r| {
                Ok(ErrorRow {
                    run_id: r.get(0)?,
                    record_id: r.get(1)?,
                    category: r.get(2)?,
                    scope: r.get(3)?,
                    field: r.get(4)?,
                    retryable: r.get(5)?,
                    message: r.get(6)?,
                    resolution: r.get(7)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }
}
