//! A page of new contacts: one statement per contact, and their handles in a
//! few multi-row `INSERT`s rather than one statement per handle.
//!
//! Each execution pays SQLite's statement set-up (opening a cursor on every
//! index, seeking from the root, halting and resetting); a statement of
//! [`ROWS`] rows pays it once. Measured with callgrind over 20,000 contacts
//! of two handles each, their handles went from 600 to 480 million
//! instructions (the store's whole page, look-ups included, 1,335 → 1,197).
//! The contacts stay one statement each: a multi-row insert needs
//! `RETURNING` for their ids, and that cost more than it saved (445 million
//! against 270 for one statement each).

use super::*;
use rusqlite::ToSql;
use std::sync::OnceLock;

/// Rows per multi-row statement: a page of 100 contacts is four of them and
/// its 200 handles eight. The statements are prepared once; fewer rows than
/// this go one statement each.
const ROWS: usize = 25;

/// `INSERT OR IGNORE INTO handles … VALUES (…), …` for [`ROWS`] rows.
fn handles_sql() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        format!(
            "INSERT OR IGNORE INTO handles (contact_id, kind, value, position, from_source) VALUES {}",
            vec!["(?, ?, ?, ?, ?)"; ROWS].join(", ")
        )
    })
}

/// One handle row: contact, kind, value, position, whether the sync brought it.
pub(crate) type HandleRow<'a> = (i64, &'static str, &'a str, i64, bool);

/// Contact `id`'s handle rows in their order: its emails, then its phones,
/// numbered across both.
pub(crate) fn handle_rows<'a>(
    id: i64,
    emails: impl IntoIterator<Item = (&'a str, bool)>,
    phones: impl IntoIterator<Item = (&'a str, bool)>,
) -> impl Iterator<Item = HandleRow<'a>> {
    let emails = emails.into_iter().map(|h| (Handle::Email, h));
    let phones = phones.into_iter().map(|h| (Handle::Phone, h));
    emails
        .chain(phones)
        .enumerate()
        .map(move |(position, (kind, (value, from_source)))| {
            (id, kind.as_str(), value, position as i64, from_source)
        })
}

impl ContactStore {
    /// Creates the contacts of a page, each linked to its external id, with
    /// their handles (X5); their ids come back in the order given.
    pub fn create_many(
        &self,
        contacts: &[(&str, &ContactData)],
        seen: Option<SeenBy<'_>>,
    ) -> Result<Vec<i64>> {
        self.fenced(|| {
            let ids = contacts
                .iter()
                .map(|(external_id, data)| {
                    self.insert_row(
                        Records::Contacts,
                        external_id,
                        &data.name,
                        &data.fields,
                        seen,
                    )
                })
                .collect::<Result<Vec<i64>>>()?;
            let handles: Vec<HandleRow<'_>> = contacts
                .iter()
                .zip(&ids)
                .flat_map(|((_, data), &id)| {
                    handle_rows(
                        id,
                        data.emails.iter().map(|e| (e.as_str(), true)),
                        data.phones.iter().map(|p| (p.as_str(), true)),
                    )
                })
                .collect();
            self.insert_handle_rows(&handles)?;
            Ok(ids)
        })
    }

    /// Inserts handle rows, [`ROWS`] to a statement (a handle already
    /// held is kept as it is).
    pub(crate) fn insert_handle_rows(&self, rows: &[HandleRow<'_>]) -> Result<()> {
        let mut chunks = rows.chunks_exact(ROWS);
        if chunks.len() > 0 {
            let mut stmt = self.conn.prepare_cached(handles_sql())?;
            for chunk in &mut chunks {
                let mut values: Vec<&dyn ToSql> = Vec::with_capacity(ROWS * 5);
                for (id, kind, value, position, from_source) in chunk {
                    values.extend([id as &dyn ToSql, kind, value, position, from_source]);
                }
                stmt.execute(&values[..])?;
            }
        }
        let mut stmt = self.conn.prepare_cached(
            "INSERT OR IGNORE INTO handles (contact_id, kind, value, position, from_source) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for row in chunks.remainder() {
            stmt.execute(params![row.0, row.1, row.2, row.3, row.4])?;
        }
        Ok(())
    }
}
