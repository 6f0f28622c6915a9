//! A page's writes held back to its commit and sent as one statement.
//!
//! A page of a first sync looks its keys up, writes its new contacts and its
//! checkpoint, and commits: on the synchronous client that was five round
//! trips (begin, look-up, insert, checkpoint, commit), each waited for. Now
//! `begin` sends nothing; the look-up runs on its own (in READ COMMITTED a
//! read sees the same committed rows in a transaction or out of one); the new
//! contacts and the checkpoint are held; and the commit sends them as one
//! statement, atomic on its own, with the fence's check in it: two round
//! trips a page. Any other statement of the transaction first sends `BEGIN`
//! and what is held, in order, so it runs as it did and reads what the page
//! wrote.

use crate::{PgStore, Result};
use postgres::error::SqlState;
use postgres::types::ToSql;
use std::sync::OnceLock;

/// A statement's parameter.
type Param<'a> = &'a (dyn ToSql + Sync);

/// A page's new contacts and their handles, as the insert binds them.
pub(crate) struct NewContacts {
    pub ids: Vec<i64>,
    pub external_ids: Vec<Vec<u8>>,
    pub names: Vec<Option<Vec<u8>>>,
    pub fields: Vec<String>,
    pub now: String,
    pub seen_sync: Option<String>,
    pub seen_run: Option<i64>,
    /// Each handle's contact id, then the handles themselves.
    pub owners: Vec<i64>,
    pub kinds: Vec<&'static str>,
    pub values: Vec<Vec<u8>>,
    pub positions: Vec<i64>,
    pub flags: Vec<bool>,
}

impl NewContacts {
    fn params(&self) -> [Param<'_>; 12] {
        [
            &self.ids,
            &self.external_ids,
            &self.names,
            &self.fields,
            &self.now,
            &self.seen_sync,
            &self.seen_run,
            &self.owners,
            &self.kinds,
            &self.values,
            &self.positions,
            &self.flags,
        ]
    }
}

/// A run's cursor and counts after a page.
pub(crate) struct Checkpoint {
    pub run_id: i64,
    pub cursor: Option<Vec<u8>>,
    /// Pages, seen, created, updated, skipped, failed.
    pub counts: [i64; 6],
    pub newest_ms: Option<i64>,
}

impl Checkpoint {
    fn params(&self) -> [Param<'_>; 9] {
        let [pages, seen, created, updated, skipped, failed] = &self.counts;
        [
            &self.run_id,
            &self.cursor,
            pages,
            seen,
            created,
            updated,
            skipped,
            failed,
            &self.newest_ms,
        ]
    }
}

/// What the open transaction holds back (at most one of each, in this order).
#[derive(Default)]
pub(crate) struct Held {
    contacts: Option<NewContacts>,
    checkpoint: Option<Checkpoint>,
}

/// A page's new contacts (`$1`–`$7`) as the CTE `created`.
macro_rules! created_cte {
    () => {
        "created AS (
             INSERT INTO contacts (id, external_id, name, fields, created_at, updated_at,
                                   seen_sync, seen_run)
             OVERRIDING SYSTEM VALUE
             SELECT id, external_id, name, fields, $5, $5, $6, $7
             FROM unnest($1::bigint[], $2::bytea[], $3::bytea[], $4::text[])
                  AS i (id, external_id, name, fields))"
    };
}

/// Their handles (`$8`–`$12`).
macro_rules! insert_handles {
    () => {
        "INSERT INTO handles (contact_id, kind, value, position, from_source)
         SELECT * FROM unnest($8::bigint[], $9::text[], $10::bytea[], $11::bigint[],
                              $12::boolean[])"
    };
}

/// Inserts a page's contacts and their handles.
const INSERT_CONTACTS: &str = concat!("WITH ", created_cte!(), " ", insert_handles!());

/// The checkpoint (`$1` the run, then cursor, counts, newest).
const CHECKPOINT: &str = "UPDATE runs SET cursor = $2, pages = $3, seen = $4, created = $5,
            updated = $6, skipped = $7, failed = $8, newest_ms = $9
     WHERE id = $1";

/// The lease's row, share-locked, while `$1`–`$3` (sync, owner, token) hold it.
pub(crate) const LEASE_ROW: &str = "SELECT 1 FROM sync_control
     WHERE sync = $1 AND lease_owner = $2 AND lease_token = $3 FOR SHARE";

/// The checkpoint that also takes the fence's share lock (`$10`–`$12`).
fn checkpoint_fenced() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        format!(
            "{CHECKPOINT} AND EXISTS ({})",
            shift_parameters(LEASE_ROW, 9)
        )
    })
}

/// The held writes as one statement: contacts and handles, checkpoint and
/// fence as each is present. It returns the handles and runs written, and
/// divides by the lease rows it locked, so a lost lease aborts it whole.
fn held_sql(contacts: bool, checkpoint: bool, fenced: bool) -> &'static str {
    static SQL: OnceLock<Vec<String>> = OnceLock::new();
    let all = SQL.get_or_init(|| {
        (0..8)
            .map(|bits| build_held_sql(bits & 1 != 0, bits & 2 != 0, bits & 4 != 0))
            .collect()
    });
    &all[usize::from(contacts) | usize::from(checkpoint) << 1 | usize::from(fenced) << 2]
}

fn build_held_sql(contacts: bool, checkpoint: bool, fenced: bool) -> String {
    let mut parts = Vec::new();
    let mut results = Vec::new();
    let mut used = 0;
    // Each part's own `$n`, shifted past the parts before it.
    let mut shifted = |text: &str, count: usize| {
        let shifted = shift_parameters(text, used);
        used += count;
        shifted
    };
    if contacts {
        parts.push(shifted(
            concat!(
                created_cte!(),
                ", handled AS (",
                insert_handles!(),
                " RETURNING 1)"
            ),
            12,
        ));
        results.push("(SELECT count(*) FROM handled)");
    } else {
        results.push("0::bigint");
    }
    if checkpoint {
        parts.push(format!(
            "checkpointed AS ({} RETURNING 1)",
            shifted(CHECKPOINT, 9)
        ));
        results.push("(SELECT count(*) FROM checkpointed)");
    } else {
        results.push("0::bigint");
    }
    if fenced {
        parts.push(format!("fence AS ({})", shifted(LEASE_ROW, 3)));
        results.push("1 / (SELECT count(*) FROM fence)");
    }
    format!("WITH {} SELECT {}", parts.join(", "), results.join(", "))
}

/// `text` with every placeholder `$n` as `$(n + by)`.
fn shift_parameters(text: &str, by: usize) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..=at]);
        rest = &rest[at + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        match rest[..digits].parse::<usize>() {
            Ok(n) => out.push_str(&(n + by).to_string()),
            Err(_) => out.push_str(&rest[..digits]),
        }
        rest = &rest[digits..];
    }
    out.push_str(rest);
    out
}

impl PgStore {
    /// Whether a transaction is open with nothing sent for it yet.
    pub(crate) fn holding(&self) -> bool {
        self.in_transaction.get() && !self.begun.get()
    }

    /// Whether a read now must go through the open transaction: it holds
    /// writes the read has to see.
    pub(crate) fn holds_writes(&self) -> bool {
        let held = self.held.borrow();
        held.contacts.is_some() || held.checkpoint.is_some()
    }

    /// Holds `contacts` if the open transaction has sent nothing and holds
    /// nothing yet; otherwise gives them back to be written now.
    pub(crate) fn hold_contacts(&self, contacts: NewContacts) -> Option<NewContacts> {
        if self.holding() && !self.holds_writes() {
            self.held.borrow_mut().contacts = Some(contacts);
            return None;
        }
        Some(contacts)
    }

    /// Holds `checkpoint` if the open transaction has sent nothing and holds
    /// no checkpoint yet; otherwise gives it back to be written now.
    pub(crate) fn hold_checkpoint(&self, checkpoint: Checkpoint) -> Option<Checkpoint> {
        let mut held = self.held.borrow_mut();
        if self.holding() && held.checkpoint.is_none() {
            held.checkpoint = Some(checkpoint);
            return None;
        }
        Some(checkpoint)
    }

    /// Sends `BEGIN` and what the open transaction held, before any other
    /// statement of it.
    pub(crate) fn ensure_begun(&self) -> Result<()> {
        if !self.holding() {
            return Ok(());
        }
        self.client.borrow_mut().batch_execute("BEGIN")?;
        self.begun.set(true);
        let held = std::mem::take(&mut *self.held.borrow_mut());
        if let Some(contacts) = held.contacts {
            self.insert_contacts(&contacts)?;
        }
        if let Some(checkpoint) = held.checkpoint {
            self.write_checkpoint(&checkpoint)?;
        }
        Ok(())
    }

    /// Writes a page's contacts and handles now.
    pub(crate) fn insert_contacts(&self, contacts: &NewContacts) -> Result<()> {
        let written = self.execute(INSERT_CONTACTS, &contacts.params())?;
        self.landed(contacts, written)
    }

    /// `contacts` were written with `written` handles: all of them, or an
    /// error; the planner's statistics follow the growth.
    fn landed(&self, contacts: &NewContacts, written: u64) -> Result<()> {
        anyhow::ensure!(
            written == contacts.kinds.len() as u64,
            "wrote {written} handles of {}",
            contacts.kinds.len()
        );
        self.grew(contacts.ids.len() as u64)
    }

    /// Writes a checkpoint now; on a fenced connection it takes the fence's
    /// share lock, which the commit then need not take again.
    pub(crate) fn write_checkpoint(&self, checkpoint: &Checkpoint) -> Result<()> {
        let params = checkpoint.params();
        let Some(lease) = self.fence.borrow().clone() else {
            self.execute(CHECKPOINT, &params)?;
            return Ok(());
        };
        let mut all = params.to_vec();
        all.extend([&lease.sync as Param<'_>, &lease.owner, &lease.token]);
        if self.execute(checkpoint_fenced(), &all)? == 1 {
            self.fence_held.set(true);
        } else {
            // Nothing written: the lease is lost (an error here), or the
            // run is gone and the commit checks the fence as before.
            self.check_fence_now()?;
        }
        Ok(())
    }

    /// Commits a transaction that sent nothing: its held writes, if any, as
    /// one statement outside any transaction block.
    pub(crate) fn commit_held(&self) -> Result<()> {
        if !self.holds_writes() {
            // Nothing to write, but a fenced commit still answers for its lease.
            return self.check_fence_now();
        }
        let held = std::mem::take(&mut *self.held.borrow_mut());
        let lease = self.fence.borrow().clone();
        let mut params: Vec<Param<'_>> = Vec::with_capacity(24);
        if let Some(contacts) = &held.contacts {
            params.extend(contacts.params());
        }
        if let Some(checkpoint) = &held.checkpoint {
            params.extend(checkpoint.params());
        }
        if let Some(lease) = &lease {
            params.extend([&lease.sync as Param<'_>, &lease.owner, &lease.token]);
        }
        let sql = held_sql(
            held.contacts.is_some(),
            held.checkpoint.is_some(),
            lease.is_some(),
        );
        let row = match self.query_one(sql, &params) {
            Ok(row) => row,
            Err(error) => {
                let fence_failed = error
                    .downcast_ref::<postgres::Error>()
                    .and_then(postgres::Error::code)
                    == Some(&SqlState::DIVISION_BY_ZERO);
                return match (fence_failed, &lease) {
                    (true, Some(lease)) => Err(self.lost(lease)?.into()),
                    _ => Err(error),
                };
            }
        };
        match &held.contacts {
            Some(contacts) => self.landed(contacts, row.get::<_, i64>(0) as u64),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_part_of_the_held_statement_numbers_its_parameters_after_the_last() {
        let all = build_held_sql(true, true, true);
        assert!(all.contains("$12::boolean[]"), "{all}");
        assert!(all.contains("SET cursor = $14"), "{all}");
        assert!(all.contains("WHERE id = $13"), "{all}");
        assert!(all.contains("lease_token = $24"), "{all}");
        assert!(!all.contains("$25"), "{all}");
        let checkpoint_only = build_held_sql(false, true, true);
        assert!(
            checkpoint_only.contains("WHERE id = $1 RETURNING"),
            "{checkpoint_only}"
        );
        assert!(checkpoint_only.contains("sync = $10"), "{checkpoint_only}");
        assert!(!build_held_sql(true, false, false).contains("fence"));
    }
}
