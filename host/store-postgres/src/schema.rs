//! The namespace's schema and its migrations.
//!
//! Migrations run under a transaction-scoped advisory lock keyed by the
//! namespace, so runners starting together on one database never race to
//! create or upgrade the same schema; `crmsync_meta.version` says which
//! schema a namespace has, and a newer one than this build knows is refused.

use anyhow::{Result, bail};
use postgres::Client;

/// Bumped with every schema change. 1: the first PostgreSQL schema (SQLite's 10).
/// 2: `handles.contact_id` without a foreign key. 3: handles looked up by
/// value first; byte-wise collation for the indexed text columns (see
/// [`UPGRADES`]).
pub const SCHEMA_VERSION: i64 = 3;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS crmsync_meta (
    version     BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS accounts (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    external_id BYTEA UNIQUE,
    name        BYTEA,
    fields      TEXT NOT NULL DEFAULT '{}',
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    syncing     BOOLEAN NOT NULL DEFAULT TRUE,
    seen_sync   TEXT COLLATE \"C\",
    seen_run    BIGINT
);
CREATE TABLE IF NOT EXISTS account_domains (
    account_id  BIGINT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    domain      BYTEA NOT NULL,
    position    BIGINT NOT NULL,
    PRIMARY KEY (account_id, domain)
);
CREATE INDEX IF NOT EXISTS account_domains_by_domain ON account_domains (domain);
CREATE TABLE IF NOT EXISTS contacts (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    external_id BYTEA UNIQUE,
    name        BYTEA,
    fields      TEXT NOT NULL DEFAULT '{}',
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    syncing     BOOLEAN NOT NULL DEFAULT TRUE,
    seen_sync   TEXT COLLATE \"C\",
    seen_run    BIGINT,
    account_id  BIGINT REFERENCES accounts(id) ON DELETE SET NULL
);
CREATE INDEX IF NOT EXISTS contacts_by_seen ON contacts (seen_sync, seen_run);
CREATE INDEX IF NOT EXISTS accounts_by_seen ON accounts (seen_sync, seen_run);
CREATE TABLE IF NOT EXISTS handles (
    contact_id  BIGINT NOT NULL,
    kind        TEXT COLLATE \"C\" NOT NULL CHECK (kind IN ('email', 'phone')),
    value       BYTEA NOT NULL,
    position    BIGINT NOT NULL,
    from_source BOOLEAN NOT NULL,
    PRIMARY KEY (contact_id, kind, value)
);
CREATE INDEX IF NOT EXISTS handles_by_value_kind ON handles (value, kind);
CREATE TABLE IF NOT EXISTS runs (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sync         TEXT NOT NULL,
    started_at   TEXT NOT NULL,
    ended_at     TEXT,
    status       TEXT NOT NULL CHECK (status IN ('running', 'completed', 'failed')),
    cursor       BYTEA,
    pages        BIGINT NOT NULL DEFAULT 0,
    seen         BIGINT NOT NULL DEFAULT 0,
    created      BIGINT NOT NULL DEFAULT 0,
    updated      BIGINT NOT NULL DEFAULT 0,
    skipped      BIGINT NOT NULL DEFAULT 0,
    failed       BIGINT NOT NULL DEFAULT 0,
    resumed      BIGINT NOT NULL DEFAULT 0,
    error        BYTEA,
    mode         TEXT NOT NULL DEFAULT 'full',
    window_since BIGINT,
    window_until BIGINT NOT NULL,
    newest_ms    BIGINT,
    runner       TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_sync ON runs (sync, id);
CREATE TABLE IF NOT EXISTS record_errors (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id      BIGINT NOT NULL REFERENCES runs(id),
    record_id   BYTEA,
    category    TEXT NOT NULL,
    scope       TEXT NOT NULL,
    field       BYTEA,
    retryable   BOOLEAN NOT NULL,
    message     BYTEA NOT NULL,
    resolution  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS record_errors_by_run ON record_errors (run_id);
CREATE TABLE IF NOT EXISTS links (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sync             TEXT NOT NULL,
    source_id        BYTEA,
    source_kind      TEXT,
    destination_id   BYTEA,
    destination_kind TEXT,
    email            BYTEA,
    agreed           TEXT NOT NULL DEFAULT '{}',
    updated_at       TEXT NOT NULL,
    syncing          BIGINT NOT NULL DEFAULT 1
);
CREATE UNIQUE INDEX IF NOT EXISTS links_by_source ON links (sync, source_id);
CREATE UNIQUE INDEX IF NOT EXISTS links_by_destination ON links (sync, destination_id);
CREATE TABLE IF NOT EXISTS write_intents (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sync        TEXT NOT NULL,
    side        TEXT NOT NULL,
    link        TEXT NOT NULL,
    written     TEXT NOT NULL,
    created_ms  BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS write_intents_by_sync ON write_intents (sync, id);
CREATE TABLE IF NOT EXISTS sync_control (
    sync        TEXT PRIMARY KEY,
    paused      BOOLEAN NOT NULL DEFAULT FALSE,
    triggered   BOOLEAN NOT NULL DEFAULT FALSE,
    lease_owner TEXT,
    lease_until BIGINT,
    lease_token BIGINT NOT NULL DEFAULT 0,
    bookmark_ms BIGINT,
    fingerprint TEXT
);
";

/// What each version changes in a namespace an older one made, after
/// [`SCHEMA`] (which only adds what is missing) has run: `(version, sql)`.
///
/// 2 drops the foreign key from `handles` to `contacts`. Checked row by
/// row it was a third of the server's time inserting a page of new contacts
/// (each check locks the contact's row and logs that lock: 1.0–1.4 ms of
/// 2.2–3.8 ms for 100 contacts and 200 handles, measured in one session).
/// The store keeps what it guarded: handles are written only in the
/// statement that creates their contact or after the `UPDATE` that locks
/// its row (which fails when the row is gone), and the one place that
/// deletes a contact deletes its handles in the same transaction.
///
/// 3 replaces the look-up index on `(kind, value)` by one on `(value,
/// kind)`, as SQLite's schema 12 does: led by the kind, every comparison on
/// the way down compared two equal kinds first (text, under the database's
/// collation) before the value that decides. And the text columns indexes
/// compare (`handles.kind`, `seen_sync`) compare byte-wise (`COLLATE "C"`):
/// under a database's locale each comparison is a `strcoll` call, and
/// every contact's insert into `contacts_by_seen` compares its sync's name
/// with equal ones all the way down. Only order and speed differ: equality
/// is the same. The bench's PostgreSQL run: 23,500-24,500 -> 27,200-27,700
/// contacts/s for the index; then, alternating four runs each with and
/// without the collation, medians 22,700 -> 25,200 (3 of 4 pairs won).
const UPGRADES: &[(i64, &str)] = &[
    (
        2,
        "ALTER TABLE handles DROP CONSTRAINT IF EXISTS handles_contact_id_fkey",
    ),
    (
        3,
        "DROP INDEX IF EXISTS handles_by_value;
         ALTER TABLE handles ALTER COLUMN kind TYPE TEXT COLLATE \"C\";
         ALTER TABLE contacts ALTER COLUMN seen_sync TYPE TEXT COLLATE \"C\";
         ALTER TABLE accounts ALTER COLUMN seen_sync TYPE TEXT COLLATE \"C\"",
    ),
];

/// Creates or upgrades `namespace` and points the connection's
/// `search_path` at it. `namespace` is already checked to be a plain identifier.
pub fn migrate(client: &mut Client, namespace: &str) -> Result<()> {
    let mut transaction = client.transaction()?;
    transaction.execute(
        "SELECT pg_advisory_xact_lock(hashtext('crmsync schema ' || $1::text))",
        &[&namespace],
    )?;
    transaction.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS \"{namespace}\"; SET LOCAL search_path TO \"{namespace}\""
    ))?;
    let exists: bool = transaction
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM information_schema.tables
                            WHERE table_schema = $1 AND table_name = 'crmsync_meta')",
            &[&namespace],
        )?
        .get(0);
    let version: i64 = if exists {
        transaction
            .query_opt("SELECT version FROM crmsync_meta", &[])?
            .map_or(0, |row| row.get(0))
    } else {
        0
    };
    if version > SCHEMA_VERSION {
        bail!(
            "the store was written by a newer crmsync (schema {version}, this one knows {SCHEMA_VERSION})"
        );
    }
    if version < SCHEMA_VERSION {
        transaction.batch_execute(SCHEMA)?;
        for (_, sql) in UPGRADES.iter().filter(|(to, _)| version < *to) {
            transaction.batch_execute(sql)?;
        }
        // The fleet's tables, which pause and trigger update too: created
        // with the first namespace of a database, not at every connection.
        crate::fleet::create_schema(&mut transaction)?;
        transaction.execute("DELETE FROM crmsync_meta", &[])?;
        transaction.execute(
            "INSERT INTO crmsync_meta (version) VALUES ($1)",
            &[&SCHEMA_VERSION],
        )?;
    }
    transaction.commit()?;
    // One plan per prepared statement, made at its first execution and kept
    // until the planner's statistics of its tables change: `PgStore::grew`
    // refreshes them as a store fills (as autovacuum does later), and that
    // invalidates the plans made from the old ones, so a plan made while the
    // tables were small does not outlive them. Planning at every execution
    // cost a page of 100 new contacts 0.2 ms for its look-up and 2.3 ms for
    // its insert (measured in the server's log), more than either ran for.
    client.batch_execute(&format!(
        "SET search_path TO \"{namespace}\"; SET plan_cache_mode = force_generic_plan"
    ))?;
    Ok(())
}
