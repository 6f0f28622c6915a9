//! The embedded destination and sync state, on SQLite (WAL).
//!
//! Destination contacts carry their handles in their own table, indexed by
//! normalised value, so the matcher's lookups are index hits. Each handle
//! remembers whether the sync brought it (`from_source`): an update replaces
//! the sync's handles and keeps the ones the contact had before it was linked.
//!
//! Run rows double as checkpoints: a page's writes and the run's next cursor
//! commit in one transaction (R3), so a killed run resumes after its last page.

use anyhow::{Context, Result, bail};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

mod accounts;
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
/// 10: `write_intents`.
const SCHEMA_VERSION: i64 = 10;

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
    contact_id  INTEGER NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
    kind        TEXT NOT NULL CHECK (kind IN ('email', 'phone')),
    value       TEXT NOT NULL,
    position    INTEGER NOT NULL,
    from_source INTEGER NOT NULL,
    PRIMARY KEY (contact_id, kind, value)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS handles_by_value ON handles (kind, value);
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
    newest_ms    INTEGER
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

/// The time as `NOW` writes it, computed here: the per-record writes bind it
/// rather than have SQLite compute a date for every row.
fn now_text() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The run that read a record, recorded with the write that applies it
/// (see [`ContactStore::stop_syncing_unseen`]).
#[derive(Debug, Clone, Copy)]
pub struct SeenBy<'a> {
    pub sync: &'a str,
    pub run_id: i64,
}

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
    fn as_str(self) -> &'static str {
        match self {
            Handle::Email => "email",
            Handle::Phone => "phone",
        }
    }
}

/// A stored handle value and whether the sync brought it (`from_source`).
type FlaggedHandle = (String, bool);

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
    fn noun(self) -> &'static str {
        match self {
            Records::Contacts => "contact",
            Records::Accounts => "account",
        }
    }
}

/// One statement over either record table, written once: `$before`, the
/// table's name, `$after`, as a `&'static str` (so `prepare_cached` keys stay
/// allocation-free on the per-record path).
macro_rules! per_table {
    ($records:expr, $before:literal, $after:literal) => {
        match $records {
            Records::Contacts => concat!($before, "contacts", $after),
            Records::Accounts => concat!($before, "accounts", $after),
        }
    };
}

/// A record's row, as a sync compares and writes it.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    external_id: Option<String>,
    name: Option<String>,
    fields: Fields,
    syncing: bool,
}

impl Row {
    /// The row after the source record `external_id` updated it: it is linked
    /// and syncing; a source value replaces, an absent one never erases
    /// (HubSpot reports "cleared" and "never set" alike).
    fn updated(&self, external_id: &str, name: &Option<String>, fields: &Fields) -> Row {
        let mut merged = self.fields.clone();
        merged.extend(fields.iter().map(|(k, v)| (k.clone(), v.clone())));
        Row {
            external_id: Some(external_id.to_owned()),
            name: name.clone().or_else(|| self.name.clone()),
            fields: merged,
            syncing: true,
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
}

impl ContactStore {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the store's folder {}", dir.display()))?;
        }
        // Opening can meet SQLITE_BUSY without SQLite's busy handler being
        // asked (another process switching a new file to WAL, or recovering
        // its WAL index): transient, so it is retried for a few seconds.
        let mut attempts = 0;
        loop {
            let conn = Connection::open(path)
                .with_context(|| format!("cannot open the store {}", path.display()))?;
            match Self::init(conn) {
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
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Self> {
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
        Ok(())
    }

    /// Runs a write: inside the open transaction as it is; outside one, on a
    /// fenced connection, in a transaction of its own, so that it too lands
    /// only while the lease holds.
    fn fenced<T>(&self, write: impl FnOnce() -> Result<T>) -> Result<T> {
        if !self.conn.is_autocommit() || self.fence.borrow().is_none() {
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

    // ----- the matcher's lookups -------------------------------------------------

    /// The contact linked to `external_id`.
    pub fn find_by_external_id(&self, external_id: &str) -> Result<Option<DirectoryEntry>> {
        self.linked_id(Records::Contacts, external_id)?
            .map(|id| self.directory_entry(id))
            .transpose()
    }

    /// Contacts holding the normalised handle `value`.
    pub fn find_by_handle(&self, kind: Handle, value: &str) -> Result<Vec<DirectoryEntry>> {
        let ids: Vec<i64> = self
            .conn
            .prepare_cached("SELECT DISTINCT contact_id FROM handles WHERE kind = ?1 AND value = ?2 ORDER BY contact_id")?
            .query_map(params![kind.as_str(), value], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        ids.into_iter().map(|id| self.directory_entry(id)).collect()
    }

    fn directory_entry(&self, id: i64) -> Result<DirectoryEntry> {
        let external_id = self
            .conn
            .prepare_cached("SELECT external_id FROM contacts WHERE id = ?1")?
            .query_row([id], |r| r.get(0))?;
        let (emails, phones) = self.handles(id)?;
        let from_source = emails
            .iter()
            .chain(&phones)
            .filter(|(_, brought)| *brought)
            .map(|(v, _)| v.clone())
            .collect();
        Ok(DirectoryEntry {
            id,
            external_id,
            emails: emails.into_iter().map(|(v, _)| v).collect(),
            phones: phones.into_iter().map(|(v, _)| v).collect(),
            domains: Vec::new(),
            from_source,
        })
    }

    /// Every contact linked to one of `external_ids` or holding one of the
    /// handles, each once, by id: all a page's matching needs (`find-page`).
    pub fn find_page(
        &self,
        external_ids: &[String],
        emails: &[String],
        phones: &[String],
    ) -> Result<Vec<DirectoryEntry>> {
        let mut ids = std::collections::BTreeSet::new();
        for external_id in external_ids {
            ids.extend(self.linked_id(Records::Contacts, external_id)?);
        }
        let mut stmt = self
            .conn
            .prepare_cached("SELECT contact_id FROM handles WHERE kind = ?1 AND value = ?2")?;
        for (kind, values) in [(Handle::Email, emails), (Handle::Phone, phones)] {
            for value in values {
                let found = stmt.query_map(params![kind.as_str(), value], |r| r.get(0))?;
                for id in found {
                    ids.insert(id?);
                }
            }
        }
        ids.into_iter().map(|id| self.directory_entry(id)).collect()
    }

    /// A contact's emails and phones in order, each with its `from_source` flag.
    fn handles(&self, id: i64) -> Result<(Vec<FlaggedHandle>, Vec<FlaggedHandle>)> {
        let mut emails = Vec::new();
        let mut phones = Vec::new();
        let mut stmt = self.conn.prepare_cached(
            "SELECT kind, value, from_source FROM handles WHERE contact_id = ?1 ORDER BY position",
        )?;
        let mut rows = stmt.query([id])?;
        while let Some(row) = rows.next()? {
            let kind: String = row.get(0)?;
            let entry = (row.get::<_, String>(1)?, row.get::<_, bool>(2)?);
            if kind == "email" {
                emails.push(entry);
            } else {
                phones.push(entry);
            }
        }
        Ok((emails, phones))
    }

    // ----- applying match outcomes -------------------------------------------------

    /// Creates a contact linked to `external_id` (X5).
    pub fn create(
        &self,
        external_id: &str,
        data: &ContactData,
        seen: Option<SeenBy<'_>>,
    ) -> Result<i64> {
        self.fenced(|| {
            let id = self.insert_row(
                Records::Contacts,
                external_id,
                &data.name,
                &data.fields,
                seen,
            )?;
            let emails: Vec<_> = data.emails.iter().map(|e| (e.clone(), true)).collect();
            let phones: Vec<_> = data.phones.iter().map(|p| (p.clone(), true)).collect();
            self.write_handles(id, &emails, &phones)?;
            Ok(id)
        })
    }

    /// Updates contact `id` from the source and links it to `external_id`
    /// (X2, X3). The source's handles replace the ones it brought before; the
    /// contact's own handles stay. Empty source values never erase a
    /// destination value. Nothing is written when nothing changes (X7),
    /// except that `seen` is recorded.
    pub fn update(
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
            self.conn
                .prepare_cached("DELETE FROM handles WHERE contact_id = ?1")?
                .execute([id])?;
            self.write_handles(id, &emails, &phones)?;
            Ok(Change::Updated)
        })
    }

    /// X6: the source record linked to this contact or account was archived
    /// (or stopped matching the filters). It stays, marked as no longer
    /// syncing. Whether anything changed.
    pub fn stop_syncing(&self, records: Records, external_id: &str) -> Result<bool> {
        self.fenced(|| {
            let sql = per_table!(
                records,
                "UPDATE ",
                " SET syncing = 0, updated_at = ?2 WHERE external_id = ?1 AND syncing = 1"
            );
            Ok(self
                .conn
                .prepare_cached(sql)?
                .execute(params![external_id, now_text()])?
                == 1)
        })
    }

    /// A merge at the source (X6): the records `merged_ids` were merged into
    /// `survivor`. Their destination contacts become one contact linked to
    /// `survivor`: the survivor's own contact if it has one (the others are
    /// folded into it and removed), else the first of theirs, relinked.
    /// Returns how many destination contacts were folded or relinked.
    pub fn absorb_merged(&self, survivor: &str, merged_ids: &[String]) -> Result<u64> {
        self.fenced(|| {
            let mut keep = self.linked_id(Records::Contacts, survivor)?;
            let mut changed = 0;
            for merged in merged_ids.iter().filter(|m| *m != survivor) {
                let Some(absorbed) = self.linked_id(Records::Contacts, merged)? else {
                    continue;
                };
                match keep {
                    None => {
                        self.conn
                            .prepare_cached(&format!(
                                "UPDATE contacts SET external_id = ?2, updated_at = {NOW} WHERE id = ?1"
                            ))?
                            .execute(params![absorbed, survivor])?;
                        keep = Some(absorbed);
                    }
                    Some(into) => self.fold_into(absorbed, into)?,
                }
                changed += 1;
            }
            Ok(changed)
        })
    }

    /// Moves what contact `from` had of its own (handles the sync did not
    /// bring, fields and a name `into` lacks) to `into`, then removes `from`.
    /// The sync's handles are not moved: the survivor's record brings them.
    fn fold_into(&self, from: i64, into: i64) -> Result<()> {
        let read = |id: i64| -> Result<(Option<String>, Fields)> {
            let (name, fields): (Option<String>, String) = self
                .conn
                .prepare_cached("SELECT name, fields FROM contacts WHERE id = ?1")?
                .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok((name, parse_fields(id, &fields)?))
        };
        let (from_name, from_fields) = read(from)?;
        let (into_name, mut fields) = read(into)?;
        for (key, value) in from_fields {
            fields.entry(key).or_insert(value);
        }
        let (from_emails, from_phones) = self.handles(from)?;
        let (mut emails, mut phones) = self.handles(into)?;
        for (own, all) in [(from_emails, &mut emails), (from_phones, &mut phones)] {
            for (value, from_source) in own {
                if !from_source && !all.iter().any(|(v, _)| *v == value) {
                    all.push((value, false));
                }
            }
        }
        self.conn
            .prepare_cached("DELETE FROM contacts WHERE id = ?1")?
            .execute([from])?;
        self.conn
            .prepare_cached(&format!(
                "UPDATE contacts SET name = ?2, fields = ?3, updated_at = {NOW} WHERE id = ?1"
            ))?
            .execute(params![
                into,
                into_name.or(from_name),
                serde_json::to_string(&fields)?
            ])?;
        self.conn
            .prepare_cached("DELETE FROM handles WHERE contact_id = ?1")?
            .execute([into])?;
        self.write_handles(into, &emails, &phones)
    }

    /// Records that run `run_id` of `sync` read the source record linked to
    /// `external_id` (whatever became of it), for `stop_syncing_unseen`.
    pub fn mark_seen(
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
                " SET seen_sync = ?2, seen_run = ?3 WHERE external_id = ?1"
            );
            self.conn
                .prepare_cached(sql)?
                .execute(params![external_id, sync, run_id])?;
            Ok(())
        })
    }

    /// At the end of a complete pass: records this sync linked earlier whose
    /// source record the pass no longer read (it left the list, or was
    /// deleted) stop syncing (X6). They are kept. Returns how many.
    pub fn stop_syncing_unseen(&self, records: Records, sync: &str, run_id: i64) -> Result<u64> {
        self.fenced(|| {
            let sql = per_table!(
                records,
                "UPDATE ",
                " SET syncing = 0, updated_at = ?3 WHERE seen_sync = ?1 AND seen_run <> ?2 AND syncing = 1"
            );
            Ok(self.conn.execute(sql, params![sync, run_id, now_text()])? as u64)
        })
    }

    // ----- rows, as contacts and accounts share them -----------------------------------

    /// The id of the record linked to `external_id`.
    fn linked_id(&self, records: Records, external_id: &str) -> Result<Option<i64>> {
        let sql = per_table!(records, "SELECT id FROM ", " WHERE external_id = ?1");
        Ok(self
            .conn
            .prepare_cached(sql)?
            .query_row([external_id], |r| r.get(0))
            .optional()?)
    }

    /// Inserts a record linked to `external_id`; its handles are the caller's.
    fn insert_row(
        &self,
        records: Records,
        external_id: &str,
        name: &Option<String>,
        fields: &Fields,
        seen: Option<SeenBy<'_>>,
    ) -> Result<i64> {
        let sql = per_table!(
            records,
            "INSERT INTO ",
            " (external_id, name, fields, created_at, updated_at, seen_sync, seen_run)
             VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6)"
        );
        self.conn.prepare_cached(sql)?.execute(params![
            external_id,
            name,
            serde_json::to_string(fields)?,
            now_text(),
            seen.map(|s| s.sync),
            seen.map(|s| s.run_id)
        ])?;
        Ok(self.conn.last_insert_rowid())
    }

    fn read_row(&self, records: Records, id: i64) -> Result<Row> {
        let sql = per_table!(
            records,
            "SELECT external_id, name, fields, syncing FROM ",
            " WHERE id = ?1"
        );
        let (external_id, name, fields, syncing): (Option<String>, Option<String>, String, bool) =
            self.conn
                .prepare_cached(sql)?
                .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .with_context(|| {
                    format!(
                        "destination {} {id} disappeared during the run",
                        records.noun()
                    )
                })?;
        Ok(Row {
            external_id,
            name,
            fields: parse_fields(id, &fields)?,
            syncing,
        })
    }

    /// Writes an updated row (syncing again, `seen` recorded when given).
    fn write_row(
        &self,
        records: Records,
        id: i64,
        row: &Row,
        seen: Option<SeenBy<'_>>,
    ) -> Result<()> {
        let sql = per_table!(
            records,
            "UPDATE ",
            " SET external_id = ?2, name = ?3, fields = ?4, syncing = 1, updated_at = ?5,
                  seen_sync = COALESCE(?6, seen_sync), seen_run = COALESCE(?7, seen_run)
             WHERE id = ?1"
        );
        self.conn.prepare_cached(sql)?.execute(params![
            id,
            row.external_id,
            row.name,
            serde_json::to_string(&row.fields)?,
            now_text(),
            seen.map(|s| s.sync),
            seen.map(|s| s.run_id)
        ])?;
        Ok(())
    }

    /// Records `seen` on an unchanged row: the sweep (X6) knows it is still read.
    fn note_seen(&self, records: Records, id: i64, seen: Option<SeenBy<'_>>) -> Result<()> {
        if let Some(seen) = seen {
            let sql = per_table!(
                records,
                "UPDATE ",
                " SET seen_sync = ?2, seen_run = ?3 WHERE id = ?1"
            );
            self.conn
                .prepare_cached(sql)?
                .execute(params![id, seen.sync, seen.run_id])?;
        }
        Ok(())
    }

    /// Adds a contact the destination already had, not linked to any source
    /// record. Handles must already be normalised.
    pub fn insert_unlinked(&self, data: &ContactData) -> Result<i64> {
        let fields = serde_json::to_string(&data.fields)?;
        self.conn
            .prepare_cached(&format!(
                "INSERT INTO contacts (external_id, name, fields, created_at, updated_at) VALUES (NULL, ?1, ?2, {NOW}, {NOW})"
            ))?
            .execute(params![data.name, fields])?;
        let id = self.conn.last_insert_rowid();
        let emails: Vec<_> = data.emails.iter().map(|e| (e.clone(), false)).collect();
        let phones: Vec<_> = data.phones.iter().map(|p| (p.clone(), false)).collect();
        self.write_handles(id, &emails, &phones)?;
        Ok(id)
    }

    fn write_handles(
        &self,
        id: i64,
        emails: &[(String, bool)],
        phones: &[(String, bool)],
    ) -> Result<()> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT OR IGNORE INTO handles (contact_id, kind, value, position, from_source) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let all = emails
            .iter()
            .map(|h| (Handle::Email, h))
            .chain(phones.iter().map(|h| (Handle::Phone, h)));
        for (position, (kind, (value, from_source))) in all.enumerate() {
            stmt.execute(params![
                id,
                kind.as_str(),
                value,
                position as i64,
                from_source
            ])?;
        }
        Ok(())
    }

    // ----- runs, checkpoints and errors ----------------------------------------------

    /// The sync's interrupted run, if it has one, as it was checkpointed.
    pub fn interrupted_run(&self, sync: &str) -> Result<Option<OpenRun>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT id, cursor, pages, seen, created, updated, skipped, failed, mode, window_since,
                        COALESCE(window_until, CAST(strftime('%s', started_at) AS INTEGER) * 1000), newest_ms
                 FROM runs WHERE sync = ?1 AND status = 'running' ORDER BY id DESC LIMIT 1",
            )?
            .query_row([sync], |r| {
                let mode: String = r.get(8)?;
                let since: Option<i64> = r.get(9)?;
                Ok(OpenRun {
                    id: r.get(0)?,
                    cursor: r.get(1)?,
                    counts: Counts::from_row(r, 2)?,
                    resumed: true,
                    mode: match (mode.as_str(), since) {
                        ("incremental", Some(since_ms)) => RunMode::Incremental { since_ms },
                        _ => RunMode::Full,
                    },
                    started_ms: r.get(10)?,
                    newest_ms: r.get(11)?,
                })
            })
            .optional()?)
    }

    /// Counts one more resumption of an interrupted run.
    pub fn resume_run(&self, run_id: i64) -> Result<()> {
        self.fenced(|| {
            self.conn.execute(
                "UPDATE runs SET resumed = resumed + 1 WHERE id = ?1",
                [run_id],
            )?;
            Ok(())
        })
    }

    /// Starts a new run of `sync`, begun at `started_ms`.
    pub fn start_run(&self, sync: &str, mode: RunMode, started_ms: i64) -> Result<OpenRun> {
        self.fenced(|| {
            let (mode_name, since) = match mode {
                RunMode::Full => ("full", None),
                RunMode::Incremental { since_ms } => ("incremental", Some(since_ms)),
            };
            self.conn.execute(
                &format!(
                    "INSERT INTO runs (sync, started_at, status, mode, window_since, window_until)
                     VALUES (?1, {NOW}, 'running', ?2, ?3, ?4)"
                ),
                params![sync, mode_name, since, started_ms],
            )?;
            Ok(OpenRun {
                id: self.conn.last_insert_rowid(),
                cursor: None,
                counts: Counts::default(),
                resumed: false,
                mode,
                started_ms,
                newest_ms: None,
            })
        })
    }

    /// Records the run's progress, its next cursor and the newest source
    /// modification read so far; call inside the page's transaction.
    pub fn checkpoint(
        &self,
        run_id: i64,
        cursor: Option<&str>,
        counts: &Counts,
        newest_ms: Option<i64>,
    ) -> Result<()> {
        self.fenced(|| {
            self.conn
                .prepare_cached(
                    "UPDATE runs SET cursor = ?2, pages = ?3, seen = ?4, created = ?5, updated = ?6, skipped = ?7, failed = ?8,
                            newest_ms = ?9
                     WHERE id = ?1",
                )?
                .execute(params![
                    run_id,
                    cursor,
                    counts.pages,
                    counts.seen,
                    counts.created,
                    counts.updated,
                    counts.skipped,
                    counts.failed,
                    newest_ms
                ])?;
            Ok(())
        })
    }

    /// The bookmark the sync's last completed run left, if any.
    pub fn bookmark(&self, sync: &str) -> Result<Option<Bookmark>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT bookmark_ms, fingerprint FROM sync_control
                 WHERE sync = ?1 AND bookmark_ms IS NOT NULL AND fingerprint IS NOT NULL",
            )?
            .query_row([sync], |r| {
                Ok(Bookmark {
                    modified_ms: r.get(0)?,
                    fingerprint: r.get(1)?,
                })
            })
            .optional()?)
    }

    /// Completes a run and stores where the next incremental run starts; call
    /// inside the last page's transaction.
    pub fn complete_run(&self, run_id: i64, sync: &str, bookmark: &Bookmark) -> Result<()> {
        self.fenced(|| {
            self.ensure_control(sync)?;
            self.conn.execute(
                "UPDATE sync_control SET bookmark_ms = ?2, fingerprint = ?3 WHERE sync = ?1",
                params![sync, bookmark.modified_ms, bookmark.fingerprint],
            )?;
            self.finish_run(run_id, None)
        })
    }

    /// Ends a run: `error` is `None` for a completed run, the fatal message otherwise.
    pub fn finish_run(&self, run_id: i64, error: Option<&str>) -> Result<()> {
        self.fenced(|| {
            let status = if error.is_some() {
                "failed"
            } else {
                "completed"
            };
            self.conn.execute(
                &format!("UPDATE runs SET status = ?2, error = ?3, cursor = NULL, ended_at = {NOW} WHERE id = ?1"),
                params![run_id, status, error],
            )?;
            Ok(())
        })
    }

    /// Records one classified error of a run.
    pub fn record_error(&self, run_id: i64, error: &ErrorRow) -> Result<()> {
        self.fenced(|| {
            self.conn
                .prepare_cached(
                    "INSERT INTO record_errors (run_id, record_id, category, scope, field, retryable, message, resolution)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?
                .execute(params![
                    run_id,
                    error.record_id,
                    error.category,
                    error.scope,
                    error.field,
                    error.retryable,
                    error.message,
                    error.resolution
                ])?;
            Ok(())
        })
    }

    // ----- control: pause, trigger, lease --------------------------------------------

    /// The sync's control state (defaults when it never had any).
    pub fn control(&self, sync: &str) -> Result<Control> {
        Ok(self
            .conn
            .prepare_cached("SELECT paused, triggered, lease_owner, lease_until FROM sync_control WHERE sync = ?1")?
            .query_row([sync], |r| {
                Ok(Control {
                    paused: r.get(0)?,
                    triggered: r.get(1)?,
                    lease_owner: r.get(2)?,
                    lease_until: r.get(3)?,
                })
            })
            .optional()?
            .unwrap_or_default())
    }

    pub(crate) fn ensure_control(&self, sync: &str) -> Result<()> {
        self.conn
            .prepare_cached("INSERT OR IGNORE INTO sync_control (sync) VALUES (?1)")?
            .execute([sync])?;
        Ok(())
    }

    /// Pauses or resumes the sync's scheduled runs.
    pub fn set_paused(&self, sync: &str, paused: bool) -> Result<()> {
        self.ensure_control(sync)?;
        self.conn.execute(
            "UPDATE sync_control SET paused = ?2 WHERE sync = ?1",
            params![sync, paused],
        )?;
        Ok(())
    }

    /// Asks the daemon to run the sync now.
    pub fn request_trigger(&self, sync: &str) -> Result<()> {
        self.ensure_control(sync)?;
        self.conn.execute(
            "UPDATE sync_control SET triggered = 1 WHERE sync = ?1",
            [sync],
        )?;
        Ok(())
    }

    /// Consumes a pending trigger: whether there was one.
    pub fn take_trigger(&self, sync: &str) -> Result<bool> {
        Ok(self.conn.execute(
            "UPDATE sync_control SET triggered = 0 WHERE sync = ?1 AND triggered = 1",
            [sync],
        )? == 1)
    }

    /// Destination contacts linked to a source record.
    pub fn linked_contacts(&self) -> Result<u64> {
        Ok(self.conn.query_row(
            "SELECT COUNT(*) FROM contacts WHERE external_id IS NOT NULL",
            [],
            |r| r.get(0),
        )?)
    }

    // ----- reading ---------------------------------------------------------------

    /// Every destination contact, in creation order.
    pub fn contacts(&self) -> Result<Vec<ContactRow>> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, external_id, name, fields, created_at, updated_at, syncing FROM contacts ORDER BY id")?;
        let rows = stmt
            .query_map([], |r| {
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
            "SELECT id, sync, started_at, ended_at, status, pages, seen, created, updated, skipped, failed, resumed, error, mode
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

/// A contact's stored `fields` column.
fn parse_fields(id: i64, text: &str) -> Result<Fields> {
    serde_json::from_str(text)
        .with_context(|| format!("destination contact {id} has unreadable fields"))
}

/// The sync's new handles first, then the contact's own handles (those the
/// sync did not bring) that the source does not also have.
fn merge_handles(from_source: &[String], old: &[FlaggedHandle]) -> Vec<FlaggedHandle> {
    let mut merged: Vec<FlaggedHandle> = from_source.iter().map(|h| (h.clone(), true)).collect();
    for (value, old_from_source) in old {
        if !old_from_source && !from_source.contains(value) {
            merged.push((value.clone(), false));
        }
    }
    merged
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
}
