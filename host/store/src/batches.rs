//! A page of new contacts in a few multi-row `INSERT`s (contacts, then their
//! handles) rather than one statement per contact and per handle.
//!
//! Each execution pays SQLite's statement set-up (opening a cursor on every
//! index, seeking from the root, halting and resetting); a statement of
//! [`ROWS`] rows pays it once. Measured with callgrind over 20,000 contacts
//! of two handles each, their handles went from 600 to 480 million
//! instructions (the store's whole page, look-ups included, 1,335 → 1,197).
//! The contacts' ids are given, not left to SQLite: a multi-row insert would
//! need `RETURNING` to learn them, and that cost more than it saved (445
//! million instructions against 270 for one statement each). Under the
//! transaction's write lock (`BEGIN IMMEDIATE`) the next ids are the table's
//! largest plus one, which is what SQLite itself would choose. With given
//! ids, `create_many` over a first sync of 20,000 contacts went from 587 to
//! 553 million instructions (callgrind, collecting in it alone).

use super::*;
use rusqlite::ToSql;
use std::sync::OnceLock;

/// Rows per multi-row statement: a page of 100 contacts is four of them and
/// its 200 handles eight. The statements are prepared once; fewer rows than
/// this go one statement each.
const ROWS: usize = 25;

/// An `INSERT … VALUES` of `N` columns, prepared for [`ROWS`] rows and for
/// one.
struct Insert<const N: usize> {
    head: &'static str,
    statements: OnceLock<[String; 2]>,
}

impl<const N: usize> Insert<N> {
    const fn new(head: &'static str) -> Self {
        Insert {
            head,
            statements: OnceLock::new(),
        }
    }

    /// The statement of [`ROWS`] rows and the statement of one.
    fn sql(&self) -> &[String; 2] {
        self.statements.get_or_init(|| {
            let row = format!("({})", vec!["?"; N].join(", "));
            let values =
                |rows: usize| format!("{} VALUES {}", self.head, vec![&*row; rows].join(", "));
            [values(ROWS), values(1)]
        })
    }
}

/// A handle already held is kept as it is.
static HANDLES: Insert<5> =
    Insert::new("INSERT OR IGNORE INTO handles (contact_id, kind, value, position, from_source)");

/// New contacts, ids given.
static CONTACTS: Insert<8> = Insert::new(
    "INSERT INTO contacts (id, external_id, name, fields, created_at, updated_at, seen_sync, seen_run)",
);

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
        // In a transaction even without a fence: the new ids are read from
        // the table, then written.
        self.transacted(|| {
            let ids = self.insert_contact_rows(contacts, seen)?;
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

    /// Inserts the contacts of a page, [`ROWS`] to a statement, with the
    /// ids that follow the table's largest; returns them in order.
    fn insert_contact_rows(
        &self,
        contacts: &[(&str, &ContactData)],
        seen: Option<SeenBy<'_>>,
    ) -> Result<Vec<i64>> {
        let largest: i64 = self
            .conn
            .prepare_cached("SELECT COALESCE(MAX(id), 0) FROM contacts")?
            .query_row([], |r| r.get(0))?;
        let ids = (1..=contacts.len() as i64)
            .map(|n| largest.checked_add(n).context("contact ids are exhausted"))
            .collect::<Result<Vec<i64>>>()?;
        let now = now_text();
        let (sync, run_id) = (seen.map(|s| s.sync), seen.map(|s| s.run_id));
        let fields = contacts
            .iter()
            .map(|(_, data)| serde_json::to_string(&data.fields))
            .collect::<Result<Vec<String>, _>>()?;
        let rows: Vec<[&dyn ToSql; 8]> = contacts
            .iter()
            .enumerate()
            .map(|(at, (external_id, data))| {
                [
                    &ids[at] as &dyn ToSql,
                    external_id,
                    &data.name,
                    &fields[at],
                    &now,
                    &now,
                    &sync,
                    &run_id,
                ]
            })
            .collect();
        self.insert_batched(&CONTACTS, &rows)?;
        Ok(ids)
    }

    /// Inserts handle rows, [`ROWS`] to a statement (a handle already
    /// held is kept as it is).
    pub(crate) fn insert_handle_rows(&self, rows: &[HandleRow<'_>]) -> Result<()> {
        let rows: Vec<[&dyn ToSql; 5]> = rows
            .iter()
            .map(|(id, kind, value, position, from_source)| {
                [id as &dyn ToSql, kind, value, position, from_source]
            })
            .collect();
        self.insert_batched(&HANDLES, &rows)
    }

    /// Runs `insert` for `rows`: [`ROWS`] to a statement, and each row left
    /// over in a statement of its own.
    fn insert_batched<const N: usize>(
        &self,
        insert: &Insert<N>,
        rows: &[[&dyn ToSql; N]],
    ) -> Result<()> {
        let [many, one] = insert.sql();
        let mut chunks = rows.chunks_exact(ROWS);
        if chunks.len() > 0 {
            let mut stmt = self.conn.prepare_cached(many)?;
            for chunk in &mut chunks {
                stmt.execute(chunk.as_flattened())?;
            }
        }
        if !chunks.remainder().is_empty() {
            let mut stmt = self.conn.prepare_cached(one)?;
            for row in chunks.remainder() {
                stmt.execute(&row[..])?;
            }
        }
        Ok(())
    }
}
