//! The embedded destination and sync state, on SQLite (WAL).
//!
//! Destination contacts carry their handles in their own table, indexed by
//! normalised value, so the matcher's lookups are index hits. Each handle
//! remembers whether the sync brought it (`from_source`): an update replaces
//! the sync's handles and keeps the ones the contact had before it was linked.
//!
//! Run rows double as checkpoints: a page's writes and the run's next cursor
//! commit in one transaction (R3), so a killed run resumes after its last page.
//!
//! This file holds the schema, its migrations and the shared types; `fresh`
//! makes a new store's file from the migrated schema's image; the
//! store's methods live by subject: `lookups` (the matcher's), `outcomes`
//! (applying them), `rows` (shared by contacts and accounts), `accounts`,
//! `links`, `intents`, `runs` (checkpoints and errors), `control`, `lease`,
//! `reading`.

use anyhow::{Context, Result, bail};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One statement over either record table, written once: `$before`, the
/// table's name, `$after`, as a `&'static str` (so `prepare_cached` keys stay
/// allocation-free on the per-record path). Defined before the modules, which
/// use it.
macro_rules! per_table {
    ($records:expr, $before:literal, $after:literal) => {
        match $records {
            Records::Contacts => concat!($before, "contacts", $after),
            Records::Accounts => concat!($before, "accounts", $after),
        }
    };
}

mod accounts;
mod batches;
mod checkpoints;
use checkpoints::Checkpointer;
#[cfg(any(test, feature = "contract"))]
pub mod contract;
pub mod interface;
pub use interface::{DynStore, Store};
mod control;
mod fresh;
mod lookups;
mod outcomes;
mod reading;
mod rows;
pub mod rules;
use rules::{FlaggedHandle, Row, merge_handles, now_text, parse_fields};
mod runs;
pub use accounts::{AccountData, AccountRef, AccountRow};
mod intents;
pub use intents::Intent;
mod lease;
pub use lease::{Lease, LeaseLost};
mod links;
pub use links::{Link, LinkSide};

/// Bumped with every schema change; `open` refuses a newer store.
/// 2: `sync_control` (pause, trigger, lease). 3: `contacts.syncing`.
/// 4: `contacts.seen_sync`, `contacts.seen_run`. 5: incremental runs (`runs.mode`,
/// `window_since`, `window_until`, `newest_ms`; `sync_control.bookmark_ms`, `fingerprint`).
/// 6: accounts. 7: `links` (syncs into a CRM). 9: `sync_control.lease_token`.
/// 10: `write_intents`. 11: `runs.runner`. 12: `handles` without a foreign
/// key, looked up by value before kind (see [`HANDLES_V12`]).
const SCHEMA_VERSION: i64 = 12;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS contacts (
    id          INTEGER PRIMARY KEY,
    external_id TEXT UNIQUE,
    name        TEXT,
    fields      TEXT NOT NULL DEFAULT '{}',
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    syncing     INTEGER NOT NULL DEFAULT 1,
    seen_sync   TEXT,
    seen_run    INTEGER
);
CREATE TABLE IF NOT EXISTS handles (
    contact_id  INTEGER NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('email', 'phone')),
    value       TEXT NOT NULL,
    position    INTEGER NOT NULL,
    from_source INTEGER NOT NULL,
    PRIMARY KEY (contact_id, kind, value)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS handles_by_value_kind ON handles (value, kind);
CREATE TABLE IF NOT EXISTS runs (
    id          INTEGER PRIMARY KEY,
    sync        TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    ended_at    TEXT,
    status      TEXT NOT NULL CHECK (status IN ('running', 'completed', 'failed')),
    cursor      TEXT,
    pages       INTEGER NOT NULL DEFAULT 0,
    seen        INTEGER NOT NULL DEFAULT 0,
    created     INTEGER NOT NULL DEFAULT 0,
    updated     INTEGER NOT NULL DEFAULT 0,
    skipped     INTEGER NOT NULL DEFAULT 0,
    failed      INTEGER NOT NULL DEFAULT 0,
    resumed     INTEGER NOT NULL DEFAULT 0,
    error       TEXT,
    mode         TEXT NOT NULL DEFAULT 'full',
    window_since INTEGER,
    window_until INTEGER,
    newest_ms    INTEGER,
    runner       TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_sync ON runs (sync, id);
CREATE TABLE IF NOT EXISTS accounts (
    id          INTEGER PRIMARY KEY,
    external_id TEXT UNIQUE,
    name        TEXT,
    fields      TEXT NOT NULL DEFAULT '{}',
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    syncing     INTEGER NOT NULL DEFAULT 1,
    seen_sync   TEXT,
    seen_run    INTEGER
);
CREATE TABLE IF NOT EXISTS account_domains (
    account_id  INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    domain      TEXT NOT NULL,
    position    INTEGER NOT NULL,
    PRIMARY KEY (account_id, domain)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS account_domains_by_domain ON account_domains (domain);
CREATE TABLE IF NOT EXISTS record_errors (
    id          INTEGER PRIMARY KEY,
    run_id      INTEGER NOT NULL REFERENCES runs(id),
    record_id   TEXT,
    category    TEXT NOT NULL,
    scope       TEXT NOT NULL,
    field       TEXT,
    retryable   INTEGER NOT NULL,
    message     TEXT NOT NULL,
    resolution  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS record_errors_by_run ON record_errors (run_id);
CREATE TABLE IF NOT EXISTS links (
    id               INTEGER PRIMARY KEY,
    sync             TEXT NOT NULL,
    source_id        TEXT,
    source_kind      TEXT,
    destination_id   TEXT,
    destination_kind TEXT,
    email            TEXT,
    agreed           TEXT NOT NULL DEFAULT '{}',
    updated_at       TEXT NOT NULL,
    syncing          INTEGER NOT NULL DEFAULT 1
);
CREATE UNIQUE INDEX IF NOT EXISTS links_by_source ON links (sync, source_id);
CREATE UNIQUE INDEX IF NOT EXISTS links_by_destination ON links (sync, destination_id);
CREATE TABLE IF NOT EXISTS write_intents (
    id          INTEGER PRIMARY KEY,
    sync        TEXT NOT NULL,
    side        TEXT NOT NULL,
    link        TEXT NOT NULL,
    written     TEXT NOT NULL,
    created_ms  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS write_intents_by_sync ON write_intents (sync, id);
CREATE TABLE IF NOT EXISTS sync_control (
    sync        TEXT PRIMARY KEY,
    paused      INTEGER NOT NULL DEFAULT 0,
    triggered   INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until INTEGER,
    lease_token INTEGER NOT NULL DEFAULT 0,
    bookmark_ms INTEGER,
    fingerprint TEXT
);
";

/// Schema 12's `handles`, for stores made before it. Two changes, measured
/// with callgrind over a page-by-page first sync of 20,000 contacts (the
/// store's whole work, look-ups included: 1,200 million instructions, then
/// 1,046):
/// - the look-up index leads with the value: led by the kind, every
///   comparison on the way down first found two equal kinds and took
///   SQLite's slow path for the rest of the key (-70 million);
/// - no foreign key to `contacts`: checking it was a look-up per handle
///   written (-84 million). SQLite writes one transaction at a time, so a
///   contact cannot vanish under one being written; the one place that
///   deletes contacts (folding a merged record) deletes their handles too.
const HANDLES_V12: &str = "
CREATE TABLE handles_v12 (
    contact_id  INTEGER NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('email', 'phone')),
    value       TEXT NOT NULL,
    position    INTEGER NOT NULL,
    from_source INTEGER NOT NULL,
    PRIMARY KEY (contact_id, kind, value)
) WITHOUT ROWID;
INSERT INTO handles_v12 SELECT contact_id, kind, value, position, from_source FROM handles;
DROP TABLE handles;
ALTER TABLE handles_v12 RENAME TO handles;
CREATE INDEX handles_by_value_kind ON handles (value, kind);
";

/// Columns added after a table's first version: `(table, column, declaration)`.
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    // Links made before filters on syncs into a CRM all synced.
    ("links", "syncing", "INTEGER NOT NULL DEFAULT 1"),
    // Before X6 every contact was syncing.
    ("contacts", "syncing", "INTEGER NOT NULL DEFAULT 1"),
    // Contacts no run has seen yet are never swept (see `stop_syncing_unseen`).
    ("contacts", "seen_sync", "TEXT"),
    ("contacts", "seen_run", "INTEGER"),
    // Runs before R4 were all full runs.
    ("runs", "mode", "TEXT NOT NULL DEFAULT 'full'"),
    ("runs", "window_since", "INTEGER"),
    ("runs", "window_until", "INTEGER"),
    ("runs", "newest_ms", "INTEGER"),
    // No bookmark: the next run is a full one.
    ("sync_control", "bookmark_ms", "INTEGER"),
    ("sync_control", "fingerprint", "TEXT"),
    // Runs before runner ids name no runner.
    ("runs", "runner", "TEXT"),
    // Leases before fencing: token 0, the next holder takes 1.
    ("sync_control", "lease_token", "INTEGER NOT NULL DEFAULT 0"),
    // Before S3 no contact belonged to an account.
    (
        "contacts",
        "account_id",
        "INTEGER REFERENCES accounts(id) ON DELETE SET NULL",
    ),
];

const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

/// The run that read a record, recorded with the write that applies it
/// (see [`ContactStore::stop_syncing_unseen`]).
#[derive(Debug, Clone, Copy)]
pub struct SeenBy<'a> {
    pub sync: &'a str,
    pub run_id: i64,
}

/// Pages a pass applies in one transaction while its reader is ahead (see
/// [`interface::Transactions::pages_per_transaction`]). Each commit writes every page
/// of the b-trees it dirtied to the log, and a page of new contacts dirties
/// leaves all over the handles' index (emails are in no order): one commit
/// for sixteen pages writes the shared leaves and the tables' tails once.
/// Sampled with `perf` over 100,000 contacts, the applier thread's CPU went
/// down 9% with four pages to a commit and 13–17% with sixteen; sixty-four
/// gained nothing more. A failure rolls back the pages since the last
/// commit, which the resumed run reads again.
pub const PAGES_PER_TRANSACTION: usize = 16;

/// Attempts at opening a store that another process has locked (50 ms apart).
const OPEN_RETRIES: u32 = 100;

/// Whether `error` is SQLite's "database is busy/locked".
fn is_busy(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<rusqlite::Error>(),
            Some(rusqlite::Error::SqliteFailure(e, _))
                if matches!(e.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
        )
    })
}

/// A handle kind, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handle {
    Email,
    Phone,
}

impl Handle {
    /// The kind as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Handle::Email => "email",
            Handle::Phone => "phone",
        }
    }
}

/// What the matcher sees of a destination contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryEntry {
    pub id: i64,
    pub external_id: Option<String>,
    pub emails: Vec<String>,
    pub phones: Vec<String>,
    /// Accounts' domains; empty for contacts.
    pub domains: Vec<String>,
    /// Which of those handles the linked source record brought: an update
    /// replaces these and keeps the others (see `merge_handles`).
    pub from_source: Vec<String>,
}

/// A contact's new content, from the mapping (handles already normalised).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContactData {
    pub name: Option<String>,
    pub emails: Vec<String>,
    pub phones: Vec<String>,
    pub fields: Fields,
}

/// A contact's plain fields: JSON values as the mapping typed them (M4:
/// text, number, boolean, date strings, lists for multi-selects).
pub type Fields = BTreeMap<String, serde_json::Value>;

/// The destination's two kinds of record. Their rows have one shape
/// (external id, name, fields, syncing, the run that last read them); each
/// keeps its own handles (emails and phones; domains).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Records {
    Contacts,
    Accounts,
}

impl Records {
    /// One record of this kind, as messages name it: "contact", "account".
    pub fn noun(self) -> &'static str {
        match self {
            Records::Contacts => "contact",
            Records::Accounts => "account",
        }
    }
}

/// What updating a contact did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Updated,
    Unchanged,
}

/// A destination contact as `crmsync contacts --json` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContactRow {
    pub id: i64,
    pub external_id: Option<String>,
    pub name: Option<String>,
    pub emails: Vec<String>,
    pub phones: Vec<String>,
    pub fields: Fields,
    /// The account (synced company) the contact belongs to (S3).
    pub account: Option<AccountRef>,
    /// `false` once the linked source record was archived (X6): kept, no longer synced.
    pub syncing: bool,
    pub created_at: String,
    pub updated_at: String,
}

/// Per-run counters (R2). `seen` = created + updated + skipped + failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub pages: u64,
    pub seen: u64,
    pub created: u64,
    pub updated: u64,
    /// Seen and already up to date.
    pub skipped: u64,
    /// Not synced because of an error.
    pub failed: u64,
}

impl Counts {
    /// The columns `pages, seen, created, updated, skipped, failed` of a `runs`
    /// row, starting at column `first`.
    fn from_row(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Self> {
        Ok(Counts {
            pages: row.get(first)?,
            seen: row.get(first + 1)?,
            created: row.get(first + 2)?,
            updated: row.get(first + 3)?,
            skipped: row.get(first + 4)?,
            failed: row.get(first + 5)?,
        })
    }
}

/// A run as `crmsync runs --json` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RunRow {
    pub id: i64,
    pub sync: String,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub status: String,
    /// `full` or `incremental` (R4).
    pub mode: String,
    #[serde(flatten)]
    pub counts: Counts,
    /// How many times the run was resumed after an interruption.
    pub resumed: u64,
    /// The fatal error's message, for failed runs.
    pub error: Option<String>,
    /// The runner that ran it last (`--runner-id`), if known.
    pub runner: Option<String>,
}

/// A recorded error as `crmsync errors --json` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ErrorRow {
    pub run_id: i64,
    pub record_id: Option<String>,
    pub category: String,
    pub scope: String,
    pub field: Option<String>,
    pub retryable: bool,
    pub message: String,
    pub resolution: String,
}

/// A sync's control state, shared by every process using the store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Control {
    pub paused: bool,
    /// A `crmsync trigger` is waiting for the daemon.
    pub triggered: bool,
    /// Who is running the sync now, and until when (unix ms) the lease holds.
    pub lease_owner: Option<String>,
    pub lease_until: Option<i64>,
}

/// How a run reads the source (R4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    /// Every record in scope; contacts it does not read stop syncing (X6).
    Full,
    /// Records modified from `since_ms` up to the run's start.
    Incremental { since_ms: i64 },
}

impl RunMode {
    /// `full` or `incremental`, as reports say.
    pub fn name(self) -> &'static str {
        match self {
            RunMode::Full => "full",
            RunMode::Incremental { .. } => "incremental",
        }
    }

    /// Incremental from `since_ms` when there is one, else full.
    pub fn since(since_ms: Option<i64>) -> Self {
        match since_ms {
            Some(since_ms) => RunMode::Incremental { since_ms },
            None => RunMode::Full,
        }
    }
}

/// A run that is under way, fresh or resumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenRun {
    pub id: i64,
    pub cursor: Option<String>,
    pub counts: Counts,
    pub resumed: bool,
    pub mode: RunMode,
    /// When the run started (unix ms): the upper end of an incremental window.
    pub started_ms: i64,
    /// The newest source modification the run has read so far.
    pub newest_ms: Option<i64>,
}

/// Where the next incremental run starts, left by the last completed run (R4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bookmark {
    /// Source modifications from this time (unix ms, less the lookback) are read next.
    pub modified_ms: i64,
    /// What the sync read (scope and mappings) when the bookmark was set; a
    /// different one needs a full run.
    pub fingerprint: String,
}

/// The SQLite file behind one or more syncs.
pub struct ContactStore {
    conn: Connection,
    /// The lease this connection's writes are fenced with (see [`lease`]).
    fence: std::cell::RefCell<Option<Lease>>,
    /// Who checkpoints this file's log for this connection (see [`checkpoints`]).
    checkpoints: std::cell::RefCell<Checkpoints>,
}

/// A connection's checkpointing: SQLite's own on commit until the connection
/// has committed often enough to start a [`Checkpointer`].
enum Checkpoints {
    /// A file store: its path and the commits so far.
    Counting(PathBuf, u64),
    /// A thread checkpoints; the connection's own checkpoint is the backstop.
    Background(Checkpointer),
    /// In memory (no log), or the thread could not start.
    Own,
}

impl ContactStore {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the store's folder {}", dir.display()))?;
        }
        fresh::create(path);
        // Opening can meet SQLITE_BUSY without SQLite's busy handler being
        // asked (another process switching a new file to WAL, or recovering
        // its WAL index): transient, so it is retried for a few seconds.
        let mut attempts = 0;
        loop {
            let conn = Connection::open(path)
                .with_context(|| format!("cannot open the store {}", path.display()))?;
            match Self::init(conn, Checkpoints::Counting(path.to_owned(), 0)) {
                Ok(store) => return Ok(store),
                Err(error) if attempts < OPEN_RETRIES && is_busy(&error) => {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(error) => {
                    return Err(error.context(format!("cannot use the store {}", path.display())));
                }
            }
        }
    }

    /// An in-memory store, for tests and dry runs.
    pub fn open_in_memory() -> Result<Self> {
        Self::init(Connection::open_in_memory()?, Checkpoints::Own)
    }

    fn init(conn: Connection, checkpoints: Checkpoints) -> Result<Self> {
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // Opening an up-to-date store writes nothing, so readers (`status`,
        // `contacts`) never wait on a running sync.
        let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            conn.pragma_update(None, "journal_mode", "WAL")?;
        }
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // 16 MiB of page cache (the default is 2): the handle index of a large
        // destination stays in memory while a run looks handles up.
        conn.pragma_update(None, "cache_size", -16_384)?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // `rarray()`: a page's look-ups bind its keys as one list (lookups.rs).
        rusqlite::vtab::array::load_module(&conn)?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            bail!(
                "the store was written by a newer crmsync (schema {version}, this one knows {SCHEMA_VERSION})"
            );
        }
        if version < SCHEMA_VERSION {
            Self::migrate(&conn)?;
        }
        Ok(ContactStore {
            conn,
            fence: std::cell::RefCell::new(None),
            checkpoints: std::cell::RefCell::new(checkpoints),
        })
    }

    /// Creates or upgrades the schema, in one write transaction so two
    /// processes opening an old store cannot both migrate it.
    fn migrate(conn: &Connection) -> Result<()> {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let result = (|| -> Result<()> {
            let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
            if version >= SCHEMA_VERSION {
                return Ok(());
            }
            conn.execute_batch(SCHEMA)?;
            // Tables an older schema created lack the later columns; the
            // defaults say what older rows meant.
            for (table, column, declaration) in ADDED_COLUMNS {
                let exists: bool = conn.query_row(
                    &format!(
                        "SELECT COUNT(*) > 0 FROM pragma_table_info('{table}') WHERE name = ?1"
                    ),
                    [column],
                    |r| r.get(0),
                )?;
                if !exists {
                    conn.execute_batch(&format!(
                        "ALTER TABLE {table} ADD COLUMN {column} {declaration}"
                    ))?;
                }
            }
            let keyed: bool = conn.query_row(
                "SELECT COUNT(*) > 0 FROM pragma_foreign_key_list('handles')",
                [],
                |r| r.get(0),
            )?;
            if keyed {
                conn.execute_batch(HANDLES_V12)?;
            }
            conn.execute_batch("DROP INDEX IF EXISTS handles_by_value")?;
            conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            Ok(())
        })();
        match result {
            Ok(()) => conn.execute_batch("COMMIT")?,
            Err(error) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(error);
            }
        }
        Ok(())
    }

    /// Starts a transaction; the matcher's lookups see its writes.
    pub fn begin(&self) -> Result<()> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        Ok(())
    }

    /// Commits the open transaction, if this connection's fence still
    /// holds; otherwise rolls it back and fails with [`LeaseLost`].
    pub fn commit(&self) -> Result<()> {
        if let Err(lost) = self.check_fence() {
            self.rollback();
            return Err(lost);
        }
        self.conn.execute_batch("COMMIT")?;
        self.committed();
        Ok(())
    }

    /// Counts a commit toward starting the checkpointer, or tells it.
    fn committed(&self) {
        let mut checkpoints = self.checkpoints.borrow_mut();
        match &mut *checkpoints {
            Checkpoints::Background(checkpointer) => checkpointer.committed(),
            Checkpoints::Counting(path, commits) => {
                *commits += 1;
                if *commits < checkpoints::START_AFTER {
                    return;
                }
                *checkpoints = match Checkpointer::start(path) {
                    Ok(checkpointer) => {
                        // Alone, this would let the log grow eight times
                        // larger; beside the thread it copies only the tail.
                        if let Err(error) = self.conn.pragma_update(
                            None,
                            "wal_autocheckpoint",
                            checkpoints::BACKSTOP_FRAMES,
                        ) {
                            tracing::debug!(%error, "the writer's checkpoint stays at 1,000 frames");
                        }
                        Checkpoints::Background(checkpointer)
                    }
                    Err(error) => {
                        tracing::debug!(%error, "no background checkpoints: SQLite's own on commit");
                        Checkpoints::Own
                    }
                };
            }
            Checkpoints::Own => {}
        }
    }

    /// Runs a write: inside the open transaction as it is; outside one, on a
    /// fenced connection, in a transaction of its own, so that it too lands
    /// only while the lease holds.
    fn fenced<T>(&self, write: impl FnOnce() -> Result<T>) -> Result<T> {
        if self.fence.borrow().is_none() {
            return write();
        }
        self.transacted(write)
    }

    /// Runs a write inside the open transaction, or in one of its own: for
    /// writes of several statements that must land together (or read what
    /// they then write, as a page's new ids do).
    fn transacted<T>(&self, write: impl FnOnce() -> Result<T>) -> Result<T> {
        if !self.conn.is_autocommit() {
            return write();
        }
        self.begin()?;
        match write() {
            Ok(value) => {
                self.commit()?;
                Ok(value)
            }
            Err(error) => {
                self.rollback();
                Err(error)
            }
        }
    }

    /// Abandons the open transaction, if any.
    pub fn rollback(&self) {
        if !self.conn.is_autocommit() {
            // A failed rollback leaves SQLite to roll back on close; nothing better to do.
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(name: Option<&str>, emails: &[&str], phones: &[&str]) -> ContactData {
        ContactData {
            name: name.map(Into::into),
            emails: emails.iter().map(|e| (*e).into()).collect(),
            phones: phones.iter().map(|p| (*p).into()).collect(),
            fields: BTreeMap::new(),
        }
    }

    /// `.cargo/config.toml` builds SQLite without its two process-wide
    /// mutexes (the shared page cache, the allocation count); a build that
    /// lost those options would still pass every other test, only slower
    /// with many syncs at once.
    #[test]
    fn sqlite_is_built_without_process_wide_mutexes() {
        let s = ContactStore::open_in_memory().unwrap();
        let mut statement = s.conn.prepare("PRAGMA compile_options").unwrap();
        let options: Vec<String> = statement
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(
            !options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"),
            "{options:?}"
        );
        for wanted in ["DEFAULT_MEMSTATUS=0", "DEFAULT_PCACHE_INITSZ=0"] {
            assert!(options.iter().any(|o| o == wanted), "{wanted}: {options:?}");
        }
    }

    #[test]
    fn created_contacts_are_found_by_external_id_and_handles() {
        let s = ContactStore::open_in_memory().unwrap();
        let id = s
            .create("101", &data(Some("Ada"), &["a@x.io"], &["+1555"]), None)
            .unwrap();
        let by_ext = s.find_by_external_id("101").unwrap().unwrap();
        assert_eq!(by_ext.id, id);
        assert_eq!(
            s.find_by_handle(Handle::Email, "a@x.io").unwrap(),
            vec![by_ext.clone()]
        );
        assert_eq!(
            s.find_by_handle(Handle::Phone, "+1555").unwrap(),
            vec![by_ext]
        );
        assert!(
            s.find_by_handle(Handle::Phone, "a@x.io")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn an_identical_update_changes_nothing() {
        let s = ContactStore::open_in_memory().unwrap();
        let id = s
            .create("101", &data(Some("Ada"), &["a@x.io"], &[]), None)
            .unwrap();
        let before = s.contacts().unwrap();
        assert_eq!(
            s.update(id, "101", &data(Some("Ada"), &["a@x.io"], &[]), None)
                .unwrap(),
            Change::Unchanged
        );
        assert_eq!(s.contacts().unwrap(), before);
    }

    #[test]
    fn an_email_change_replaces_the_synced_email() {
        let s = ContactStore::open_in_memory().unwrap();
        let id = s
            .create("101", &data(None, &["old@x.io"], &[]), None)
            .unwrap();
        assert_eq!(
            s.update(id, "101", &data(None, &["new@x.io"], &[]), None)
                .unwrap(),
            Change::Updated
        );
        assert_eq!(s.contacts().unwrap()[0].emails, ["new@x.io"]);
        assert!(
            s.find_by_handle(Handle::Email, "old@x.io")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn linking_keeps_the_contacts_own_handles_and_name() {
        let s = ContactStore::open_in_memory().unwrap();
        let id = s
            .insert_unlinked(&data(Some("Front Name"), &["own@x.io", "shared@x.io"], &[]))
            .unwrap();
        assert_eq!(
            s.update(id, "7", &data(None, &["shared@x.io"], &["+1"]), None)
                .unwrap(),
            Change::Updated
        );
        let c = &s.contacts().unwrap()[0];
        assert_eq!(c.external_id.as_deref(), Some("7"));
        assert_eq!(c.name.as_deref(), Some("Front Name"));
        assert_eq!(c.emails, ["shared@x.io", "own@x.io"]);
        assert_eq!(c.phones, ["+1"]);
        // A second identical pass is a no-op, and the own handle survives source changes.
        assert_eq!(
            s.update(id, "7", &data(None, &["shared@x.io"], &["+1"]), None)
                .unwrap(),
            Change::Unchanged
        );
        s.update(id, "7", &data(None, &["moved@x.io"], &[]), None)
            .unwrap();
        assert_eq!(s.contacts().unwrap()[0].emails, ["moved@x.io", "own@x.io"]);
    }

    #[test]
    fn an_archived_source_record_stops_its_contact_syncing_until_it_returns() {
        let s = ContactStore::open_in_memory().unwrap();
        let id = s
            .create("101", &data(Some("Ada"), &["a@x.io"], &[]), None)
            .unwrap();
        assert!(s.stop_syncing(Records::Contacts, "101").unwrap());
        assert!(
            !s.stop_syncing(Records::Contacts, "101").unwrap(),
            "already stopped"
        );
        assert!(
            !s.stop_syncing(Records::Contacts, "999").unwrap(),
            "not linked here"
        );
        assert!(!s.contacts().unwrap()[0].syncing);
        // Restored at the source: the next update syncs it again.
        assert_eq!(
            s.update(id, "101", &data(Some("Ada"), &["a@x.io"], &[]), None)
                .unwrap(),
            Change::Updated
        );
        assert!(s.contacts().unwrap()[0].syncing);
    }

    #[test]
    fn contacts_a_complete_pass_did_not_read_stop_syncing() {
        let s = ContactStore::open_in_memory().unwrap();
        for ext in ["1", "2"] {
            s.create(ext, &data(None, &[&format!("{ext}@x.io")], &[]), None)
                .unwrap();
            s.mark_seen(Records::Contacts, ext, "list", 1).unwrap();
        }
        s.insert_unlinked(&data(None, &["own@x.io"], &[])).unwrap();
        s.mark_seen(Records::Contacts, "1", "list", 2).unwrap();
        assert_eq!(
            s.stop_syncing_unseen(Records::Contacts, "other", 2)
                .unwrap(),
            0,
            "another sync's contacts are not touched"
        );
        assert_eq!(
            s.stop_syncing_unseen(Records::Contacts, "list", 2).unwrap(),
            1
        );
        let syncing: Vec<bool> = s.contacts().unwrap().iter().map(|c| c.syncing).collect();
        assert_eq!(
            syncing,
            [true, false, true],
            "unlinked contacts are never swept"
        );
    }

    #[test]
    fn a_schema_1_store_is_upgraded_in_place() {
        let dir = std::env::temp_dir().join(format!("crmsync-migrate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("old.sqlite");
        let _ = std::fs::remove_file(&path);
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE contacts (id INTEGER PRIMARY KEY, external_id TEXT UNIQUE, name TEXT,
                     fields TEXT NOT NULL DEFAULT '{}', created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
                 INSERT INTO contacts (external_id, name, created_at, updated_at) VALUES ('7', 'Old', 'x', 'x');
                 PRAGMA user_version = 1;",
            )
            .unwrap();
        }
        let s = ContactStore::open(&path).unwrap();
        let c = &s.contacts().unwrap()[0];
        assert!(c.syncing && c.name.as_deref() == Some("Old"));
        s.mark_seen(Records::Contacts, "7", "demo", 1).unwrap();
        drop(s);
        ContactStore::open(&path).unwrap(); // already current: opens without migrating
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The single number `sql` selects.
    fn count(s: &ContactStore, sql: &str) -> i64 {
        s.conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn a_schema_11_store_keeps_its_handles_without_the_foreign_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v11.sqlite");
        {
            let s = ContactStore::open(&path).unwrap();
            s.create("1", &data(Some("Ada"), &["a@x.io"], &["+15550100"]), None)
                .unwrap();
            // Back to schema 11's handles: keyed to contacts, by kind first.
            s.conn
                .execute_batch(
                    "CREATE TABLE old (contact_id INTEGER NOT NULL REFERENCES contacts(id)
                         ON DELETE CASCADE, kind TEXT NOT NULL, value TEXT NOT NULL,
                         position INTEGER NOT NULL, from_source INTEGER NOT NULL,
                         PRIMARY KEY (contact_id, kind, value)) WITHOUT ROWID;
                     INSERT INTO old SELECT * FROM handles;
                     DROP TABLE handles;
                     ALTER TABLE old RENAME TO handles;
                     CREATE INDEX handles_by_value ON handles (kind, value);
                     PRAGMA user_version = 11;",
                )
                .unwrap();
        }
        let s = ContactStore::open(&path).unwrap();
        assert_eq!(
            count(
                &s,
                "SELECT COUNT(*) FROM pragma_foreign_key_list('handles')"
            ),
            0
        );
        let indexes: Vec<String> = s
            .conn
            .prepare("SELECT name FROM pragma_index_list('handles') WHERE origin = 'c'")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(indexes, ["handles_by_value_kind"]);
        let found = s.find_by_handle(Handle::Phone, "+15550100").unwrap();
        assert_eq!(found[0].emails, ["a@x.io"]);
    }

    #[test]
    fn a_folded_contact_leaves_no_handles_behind() {
        let s = ContactStore::open_in_memory().unwrap();
        let a = s.create("1", &data(None, &["a@x.io"], &[]), None).unwrap();
        let own = s
            .insert_unlinked(&data(None, &["own@x.io"], &["+1555"]))
            .unwrap();
        s.update(own, "2", &data(None, &["b@x.io"], &[]), None)
            .unwrap();
        assert_eq!(s.absorb_merged("1", &["2".into()]).unwrap(), 1);
        let orphans =
            "SELECT COUNT(*) FROM handles WHERE contact_id NOT IN (SELECT id FROM contacts)";
        assert_eq!(count(&s, orphans), 0);
        // The absorbed contact's own handles moved to the survivor.
        assert_eq!(
            s.find_by_handle(Handle::Email, "own@x.io").unwrap()[0].id,
            a
        );
    }

    #[test]
    fn merged_records_leave_one_contact_linked_to_the_survivor() {
        let s = ContactStore::open_in_memory().unwrap();
        // Only a merged-away record had a contact: it is relinked.
        let a = s
            .create("1", &data(Some("Ada"), &["a@x.io"], &[]), None)
            .unwrap();
        assert_eq!(s.absorb_merged("9", &["1".into(), "5".into()]).unwrap(), 1);
        assert_eq!(s.find_by_external_id("9").unwrap().unwrap().id, a);
        assert_eq!(s.find_by_external_id("1").unwrap(), None);

        // Both had one: the absorbed one's own handles and fields move over.
        let b = s
            .create("2", &data(None, &["b@x.io"], &["+1555"]), None)
            .unwrap();
        let mut own = data(None, &["own@x.io"], &[]);
        own.fields.insert("note".into(), "vip".into());
        let extra = s.insert_unlinked(&own).unwrap();
        s.update(extra, "3", &data(None, &["c@x.io"], &[]), None)
            .unwrap();
        assert_eq!(s.absorb_merged("2", &["3".into()]).unwrap(), 1);
        let contacts = s.contacts().unwrap();
        assert_eq!(contacts.len(), 2, "{contacts:?}");
        let survivor = contacts.iter().find(|c| c.id == b).unwrap();
        assert_eq!(survivor.external_id.as_deref(), Some("2"));
        assert_eq!(survivor.emails, ["b@x.io", "own@x.io"]);
        assert_eq!(survivor.fields["note"], "vip");
        assert!(
            s.find_by_handle(Handle::Email, "c@x.io")
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            s.absorb_merged("2", &["3".into()]).unwrap(),
            0,
            "idempotent"
        );
    }

    #[test]
    fn runs_resume_from_their_checkpoint() {
        let s = ContactStore::open_in_memory().unwrap();
        assert_eq!(s.interrupted_run("demo").unwrap(), None);
        let mode = RunMode::Incremental { since_ms: 1_000 };
        let run = s.start_run("demo", mode, 5_000).unwrap();
        assert!(!run.resumed);
        let counts = Counts {
            pages: 1,
            seen: 100,
            created: 100,
            ..Counts::default()
        };
        s.checkpoint(run.id, Some("c2"), &counts, Some(4_000))
            .unwrap();
        let again = s.interrupted_run("demo").unwrap().unwrap();
        s.resume_run(again.id).unwrap();
        assert_eq!(
            again,
            OpenRun {
                id: run.id,
                cursor: Some("c2".into()),
                counts,
                resumed: true,
                mode,
                started_ms: 5_000,
                newest_ms: Some(4_000),
            }
        );
        assert_eq!(s.bookmark("demo").unwrap(), None);
        let bookmark = Bookmark {
            modified_ms: 4_000,
            fingerprint: "all".into(),
        };
        s.complete_run(run.id, "demo", &bookmark).unwrap();
        assert_eq!(s.interrupted_run("demo").unwrap(), None);
        assert_eq!(s.bookmark("demo").unwrap(), Some(bookmark));
        assert_eq!(s.runs("demo").unwrap()[0].resumed, 1);
        assert_eq!(s.runs("demo").unwrap()[0].status, "completed");
    }

    #[test]
    fn one_process_at_a_time_holds_a_syncs_lease() {
        let s = ContactStore::open_in_memory().unwrap();
        let alive = |_: &str| false;
        let token = |r: Result<Lease, String>| r.map(|l| (l.owner, l.token));
        assert_eq!(
            token(s.acquire_lease("demo", "a", 1_000, 60_000, alive).unwrap()),
            Ok(("a".into(), 1))
        );
        assert_eq!(
            token(s.acquire_lease("demo", "b", 2_000, 60_000, alive).unwrap()),
            Err("a".into())
        );
        assert_eq!(
            token(s.acquire_lease("demo", "a", 3_000, 60_000, alive).unwrap()),
            Ok(("a".into(), 1)),
            "renewal"
        );
        assert_eq!(
            token(s.acquire_lease("demo", "b", 70_000, 60_000, alive).unwrap()),
            Ok(("b".into(), 2)),
            "expired"
        );
        let c = s
            .acquire_lease("demo", "c", 71_000, 60_000, |holder| holder == "b")
            .unwrap()
            .expect("holder gone");
        assert_eq!(c.token, 3);
        s.release_lease(&c).unwrap();
        assert_eq!(s.control("demo").unwrap().lease_owner, None);
    }

    #[test]
    fn pause_and_trigger_are_stored_per_sync() {
        let s = ContactStore::open_in_memory().unwrap();
        assert_eq!(s.control("demo").unwrap(), Control::default());
        s.set_paused("demo", true).unwrap();
        s.request_trigger("demo").unwrap();
        assert!(s.control("demo").unwrap().paused);
        assert!(s.take_trigger("demo").unwrap());
        assert!(!s.take_trigger("demo").unwrap());
        assert!(!s.control("other").unwrap().paused);
    }

    #[test]
    fn hostile_strings_round_trip() {
        let s = ContactStore::open_in_memory().unwrap();
        let hostile = format!(
            "O'Brien \"; DROP TABLE contacts;-- \u{200F}\u{0}🙂{}",
            "x".repeat(5000)
        );
        let mut d = data(Some(&hostile), &["a@x.io"], &[]);
        d.fields.insert(hostile.clone(), hostile.clone().into());
        s.create(&hostile, &d, None).unwrap();
        let c = &s.contacts().unwrap()[0];
        assert_eq!(c.name.as_deref(), Some(hostile.as_str()));
        assert_eq!(c.external_id.as_deref(), Some(hostile.as_str()));
        assert_eq!(c.fields[&hostile], hostile);
    }

    /// A writer that commits page after page without pause: the thread
    /// copies the log while the writer goes on, and the writer's backstop
    /// still restarts it, so the log file (whose length is the most frames
    /// it ever held) stays near the backstop (the bound allows for the writer's
    /// checkpoint meeting the thread's, busy, for a while on a loaded
    /// machine). Without the backstop the 1,600 pages' log reaches about
    /// 130 MiB.
    #[test]
    fn a_busy_writer_is_checkpointed_in_the_background_and_its_log_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("busy.sqlite");
        let s = ContactStore::open(&path).unwrap();
        let mut next = 0;
        for _ in 0..1_600 {
            let page: Vec<(String, ContactData)> = (next..next + 100)
                .map(|n| {
                    let email = format!("person{n}@example.com");
                    (n.to_string(), data(Some("A Person"), &[&email], &[]))
                })
                .collect();
            next += 100;
            let refs: Vec<(&str, &ContactData)> =
                page.iter().map(|(id, d)| (id.as_str(), d)).collect();
            s.create_many(&refs, None).unwrap();
        }
        let started = std::time::Instant::now();
        let finished = || match &*s.checkpoints.borrow() {
            Checkpoints::Background(checkpointer) => checkpointer.finished(),
            _ => panic!("a connection that committed 1,600 times checkpoints in the background"),
        };
        while finished() == 0 && started.elapsed() < std::time::Duration::from_secs(20) {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(finished() > 0, "the thread ran no checkpoint");
        let log = std::fs::metadata(dir.path().join("busy.sqlite-wal"))
            .unwrap()
            .len();
        let bound = (checkpoints::BACKSTOP_FRAMES as u64 + 8_000) * (4096 + 24);
        assert!(log <= bound, "the log reached {log} bytes (bound {bound})");
        assert_eq!(count(&s, "SELECT COUNT(*) FROM contacts"), 160_000);
        drop(s);
        let again = ContactStore::open(&path).unwrap();
        assert_eq!(count(&again, "SELECT COUNT(*) FROM handles"), 160_000);
    }
}
