//! The destination records a two-way run has read and not yet paired, kept
//! in a temporary SQLite database rather than in memory.
//!
//! A two-way run reads the destination's changes first (its whole side on a
//! first or full run) and holds each record until the source record that
//! pairs with it comes by, or the source is read to the end. Held in memory,
//! a million destination records were the run's largest state by far; in a
//! private temporary database (SQLite's empty file name: its pages spill to a
//! file deleted on close) a run holds a bounded page cache whatever the
//! destination's size.

use crate::bindings::crmsync::sync::types::MappedRecord;
use anyhow::{Context, Result};
use rusqlite::{Connection, OptionalExtension, params};

/// Pages of the page cache the held records may use in memory (4 MiB).
const CACHE_KIB: i64 = 4 * 1024;

/// Held destination records, by id and by handle (email or domain).
pub struct Held {
    db: Connection,
    len: u64,
}

impl Held {
    /// An empty holding.
    pub fn new() -> Result<Self> {
        let db = Connection::open("").context("cannot open a temporary database")?;
        db.pragma_update(None, "cache_size", -CACHE_KIB)?;
        db.pragma_update(None, "journal_mode", "OFF")?;
        db.pragma_update(None, "synchronous", "OFF")?;
        db.execute_batch(
            "CREATE TABLE held (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, record BLOB NOT NULL);
             CREATE TABLE held_handles (handle TEXT NOT NULL, seq INTEGER NOT NULL);
             CREATE INDEX held_by_handle ON held_handles (handle, seq);",
        )?;
        Ok(Held { db, len: 0 })
    }

    /// Holds `records`, each under its `handles` (the first record read
    /// with an id is kept).
    pub fn add(
        &mut self,
        records: &[MappedRecord],
        handles: impl Fn(&MappedRecord) -> &[String],
    ) -> Result<()> {
        let tx = self.db.transaction()?;
        for record in records {
            let inserted = tx
                .prepare_cached("INSERT OR IGNORE INTO held (id, record) VALUES (?1, ?2)")?
                .execute(params![
                    record.contact.external_id,
                    serde_json::to_vec(record)?
                ])?;
            if inserted == 0 {
                continue;
            }
            self.len += 1;
            let seq = tx.last_insert_rowid();
            for handle in handles(record) {
                tx.prepare_cached("INSERT INTO held_handles (handle, seq) VALUES (?1, ?2)")?
                    .execute(params![handle, seq])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Records held so far (taken ones included).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was ever held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Takes the record with this id, if it is still held.
    pub fn take(&mut self, id: &str) -> Result<Option<MappedRecord>> {
        let record: Option<Vec<u8>> = self
            .db
            .prepare_cached("DELETE FROM held WHERE id = ?1 RETURNING record")?
            .query_row([id], |r| r.get(0))
            .optional()?;
        record
            .map(|bytes| serde_json::from_slice(&bytes).context("a held record reads back"))
            .transpose()
    }

    /// Held records sharing one of these handles, as `(id, handle)`, in
    /// handle order, each handle's records in reading order.
    pub fn with_handles(&self, handles: &[String]) -> Result<Vec<(String, String)>> {
        let mut found = Vec::new();
        let mut statement = self.db.prepare_cached(
            "SELECT held.id FROM held_handles JOIN held ON held.seq = held_handles.seq
             WHERE held_handles.handle = ?1 ORDER BY held_handles.seq",
        )?;
        for handle in handles {
            for id in statement.query_map([handle], |r| r.get::<_, String>(0))? {
                found.push((id?, handle.clone()));
            }
        }
        Ok(found)
    }

    /// Takes up to `limit` of the records no one took, in reading order.
    pub fn take_rest(&mut self, limit: usize) -> Result<Vec<MappedRecord>> {
        let rows: Vec<(i64, Vec<u8>)> = self
            .db
            .prepare_cached("SELECT seq, record FROM held ORDER BY seq LIMIT ?1")?
            .query_map([limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut records = Vec::with_capacity(rows.len());
        for (seq, bytes) in rows {
            self.db
                .prepare_cached("DELETE FROM held WHERE seq = ?1")?
                .execute([seq])?;
            records.push(serde_json::from_slice(&bytes).context("a held record reads back")?);
        }
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::crmsync::sync::types::{FieldData, FieldValue, MappedContact};

    fn record(id: &str, emails: &[&str]) -> MappedRecord {
        MappedRecord {
            contact: MappedContact {
                external_id: id.into(),
                name: Some(format!("Person {id}")),
                emails: emails.iter().map(|e| (*e).to_owned()).collect(),
                phones: Vec::new(),
                domains: Vec::new(),
                fields: vec![FieldValue {
                    name: "n".into(),
                    value: FieldData::Number(1.5),
                }],
            },
            field_errors: Vec::new(),
            modified_at: Some(7),
            merged_ids: vec!["old".into()],
            company_ids: Vec::new(),
        }
    }

    #[test]
    fn records_are_taken_by_id_found_by_handle_and_the_rest_drained() {
        let mut held = Held::new().unwrap();
        fn emails(r: &MappedRecord) -> &[String] {
            &r.contact.emails
        }
        held.add(
            &[record("1", &["a@x.io"]), record("2", &["b@x.io", "a@x.io"])],
            emails,
        )
        .unwrap();
        held.add(&[record("3", &[]), record("1", &["dup@x.io"])], emails)
            .unwrap();
        assert_eq!(held.len(), 3);
        let found = |held: &Held| -> Vec<String> {
            let found = held.with_handles(&["a@x.io".into()]).unwrap();
            assert!(found.iter().all(|(_, handle)| handle == "a@x.io"));
            found.into_iter().map(|(id, _)| id).collect()
        };
        assert_eq!(found(&held), ["1", "2"]);
        assert_eq!(held.take("1").unwrap(), Some(record("1", &["a@x.io"])));
        assert_eq!(held.take("1").unwrap(), None);
        assert_eq!(found(&held), ["2"]);
        assert_eq!(
            held.take_rest(1).unwrap(),
            [record("2", &["b@x.io", "a@x.io"])]
        );
        assert_eq!(held.take_rest(10).unwrap(), [record("3", &[])]);
        assert!(held.take_rest(10).unwrap().is_empty());
    }
}
