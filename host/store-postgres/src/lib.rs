//! The shared store on PostgreSQL: the same traits as the embedded SQLite
//! store (`crmsync_store::interface`), so a runner holds either as
//! `&dyn Store`, and the same contract suite proves both.
//!
//! Each store lives in its own PostgreSQL schema (a *namespace*), so many
//! syncs, each with its own destination directory, share one database; two
//! syncs that name the same namespace share a directory, as two syncs sharing
//! one SQLite file do.
//!
//! Text the source sent (ids, names, handles, cursors, error messages) is
//! stored as `bytea` holding UTF-8: PostgreSQL's `text` cannot hold U+0000,
//! which an API may send, and the store loses nothing SQLite keeps. Fields
//! are JSON text (serde escapes U+0000 there).
//!
//! This file holds the connection, the namespace and its migrations, the
//! statement cache, transactions and the fence; `held` keeps a page's
//! writes back to its commit, so a page is two round trips; the traits are
//! implemented by subject in `directory`, `reading`, `links`, `runs` and
//! `control`.

use anyhow::{Context, Result, bail};
use crmsync_store::{Lease, LeaseLost};
use postgres::types::ToSql;
use postgres::{Client, NoTls, Row, Statement};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;

mod control;
mod directory;
pub mod fleet;
mod held;
mod links;
mod reading;
mod runs;
mod schema;

/// A statement's parameters.
type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// One store (namespace) in a PostgreSQL database, on its own connection.
pub struct PgStore {
    client: RefCell<Client>,
    /// Prepared once per connection: the per-record statements are the same
    /// few texts, and a prepared statement saves PostgreSQL a parse and plan.
    statements: RefCell<HashMap<&'static str, Statement>>,
    /// Whether `begin` opened a transaction not yet ended.
    in_transaction: Cell<bool>,
    /// Whether that transaction's `BEGIN` was sent: `begin` sends nothing,
    /// and its writes wait in `held` until another statement needs it.
    begun: Cell<bool>,
    /// The open transaction's writes not sent yet (`held`).
    held: RefCell<held::Held>,
    /// The lease this connection's writes are fenced with.
    fence: RefCell<Option<Lease>>,
    /// Whether a statement of the open transaction already took the share
    /// lock on the lease's row (the checkpoint does): held to the commit,
    /// it makes the commit's own fence check redundant.
    fence_held: Cell<bool>,
    namespace: String,
    /// Contacts this connection created since it last refreshed the
    /// planner's statistics, and how many the tables held then.
    growth: Cell<(u64, u64)>,
    /// Contact ids taken from the table's sequence and not used yet.
    reserved: RefCell<Vec<i64>>,
    /// That sequence (its OID), looked up once: naming it by text made
    /// PostgreSQL look it up for every id (5 ms for 1,000 against 0.9).
    id_sequence: Cell<Option<u32>>,
}

/// Contact ids taken from the sequence at a time: one round trip for ten
/// pages of new contacts. Ids a connection reserved and never used are gaps.
const IDS_AT_A_TIME: usize = 1_000;

/// Statistics are refreshed once the contacts created reach this many and
/// the count at the last refresh: so about log2(n) times as a store fills.
const ANALYZE_AFTER: u64 = 2_000;

impl PgStore {
    /// Connects to `url` (`postgresql://user@host:port/db`) and opens the
    /// store `namespace`, creating or upgrading its schema.
    pub fn connect(url: &str, namespace: &str) -> Result<Self> {
        check_namespace(namespace)?;
        let client = Client::connect(url, NoTls)
            .with_context(|| format!("cannot connect to the PostgreSQL store {}", redact(url)))?;
        let store = PgStore {
            client: RefCell::new(client),
            statements: RefCell::new(HashMap::new()),
            in_transaction: Cell::new(false),
            begun: Cell::new(false),
            held: RefCell::new(held::Held::default()),
            fence: RefCell::new(None),
            fence_held: Cell::new(false),
            namespace: namespace.to_owned(),
            growth: Cell::new((0, 0)),
            reserved: RefCell::new(Vec::new()),
            id_sequence: Cell::new(None),
        };
        schema::migrate(&mut store.client.borrow_mut(), namespace)
            .with_context(|| format!("cannot use the PostgreSQL store namespace {namespace:?}"))?;
        Ok(store)
    }

    /// The namespace (PostgreSQL schema) this store lives in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn prepared(&self, sql: &'static str) -> Result<Statement> {
        if let Some(statement) = self.statements.borrow().get(sql) {
            return Ok(statement.clone());
        }
        let statement = self
            .client
            .borrow_mut()
            .prepare(sql)
            .with_context(|| format!("cannot prepare {sql}"))?;
        self.statements.borrow_mut().insert(sql, statement.clone());
        Ok(statement)
    }

    fn execute(&self, sql: &'static str, params: Params<'_>) -> Result<u64> {
        self.ensure_begun()?;
        let statement = self.prepared(sql)?;
        Ok(self.client.borrow_mut().execute(&statement, params)?)
    }

    fn query(&self, sql: &'static str, params: Params<'_>) -> Result<Vec<Row>> {
        self.ensure_begun()?;
        self.read(sql, params)
    }

    /// A read that need not wait for the open transaction's `BEGIN`: it
    /// sees the same committed rows outside it (READ COMMITTED), unless the
    /// transaction holds writes it must see.
    fn read(&self, sql: &'static str, params: Params<'_>) -> Result<Vec<Row>> {
        if self.holds_writes() {
            self.ensure_begun()?;
        }
        let statement = self.prepared(sql)?;
        Ok(self.client.borrow_mut().query(&statement, params)?)
    }

    fn query_opt(&self, sql: &'static str, params: Params<'_>) -> Result<Option<Row>> {
        self.ensure_begun()?;
        let statement = self.prepared(sql)?;
        Ok(self.client.borrow_mut().query_opt(&statement, params)?)
    }

    fn query_one(&self, sql: &'static str, params: Params<'_>) -> Result<Row> {
        self.ensure_begun()?;
        let statement = self.prepared(sql)?;
        Ok(self.client.borrow_mut().query_one(&statement, params)?)
    }

    /// `n` contact ids from the table's sequence, as its default would take
    /// them, in ascending order.
    fn reserve_ids(&self, n: usize) -> Result<Vec<i64>> {
        let mut reserved = self.reserved.borrow_mut();
        if reserved.len() < n {
            let sequence = match self.id_sequence.get() {
                Some(oid) => oid,
                None => {
                    let oid: u32 = self.read(
                        "SELECT pg_get_serial_sequence('contacts', 'id')::regclass::oid",
                        &[],
                    )?[0]
                        .get(0);
                    self.id_sequence.set(Some(oid));
                    oid
                }
            };
            // Sequences are outside transactions: no need to begin one.
            let more = self.read(
                "SELECT nextval($1::oid::regclass) FROM generate_series(1, $2::int)",
                &[&sequence, &(n.max(IDS_AT_A_TIME) as i32)],
            )?;
            // Taken from the back: keep the unused ones in descending order.
            let mut more: Vec<i64> = more.iter().map(|row| row.get(0)).collect();
            more.sort_unstable_by(|a, b| b.cmp(a));
            more.extend(reserved.drain(..));
            *reserved = more;
        }
        let at = reserved.len() - n;
        let mut ids = reserved.split_off(at);
        ids.reverse();
        Ok(ids)
    }

    /// Notes `created` new contacts; when the tables have about doubled
    /// since the planner last saw them, refreshes its statistics, which also
    /// makes every connection plan its statements again: a store filled
    /// within one run otherwise keeps the plans of an empty one (the look-ups
    /// of a page went from 2 ms to 26 ms over a first sync of 100,000
    /// contacts, until autovacuum's own ANALYZE came by).
    fn grew(&self, created: u64) -> Result<()> {
        let (since, at) = self.growth.get();
        let since = since + created;
        if since < ANALYZE_AFTER.max(at) {
            self.growth.set((since, at));
            return Ok(());
        }
        // Only the columns the store's statements look rows up by: the
        // others' statistics plan nothing (autovacuum's own ANALYZE keeps
        // them), and leaving them out takes a third off each refresh
        // (186-191 ms -> 125-129 ms at 100,000 contacts).
        // A sample of 3,000 rows (target 10) instead of 30,000: these
        // columns are unique or nearly so, or hold a few values, and the
        // plans only choose between an index and a scan. The refreshes were
        // a tenth of the server's time over a first sync of 100,000.
        // `RESET` leaves the session's own target to autovacuum's later
        // ANALYZE; a failure rolls the `SET` back with the transaction.
        self.client.borrow_mut().batch_execute(
            "SET default_statistics_target = 10;
             ANALYZE contacts (id, external_id, seen_sync, seen_run),
                     handles (contact_id, kind, value);
             RESET default_statistics_target",
        )?;
        self.growth.set((0, at + since));
        Ok(())
    }

    /// Runs a write: inside the open transaction as it is; outside one, on a
    /// fenced connection, in a transaction of its own, so that it too lands
    /// only while the lease holds.
    fn fenced<T>(&self, write: impl FnOnce() -> Result<T>) -> Result<T> {
        if self.in_transaction.get() || self.fence.borrow().is_none() {
            return write();
        }
        self.begin_transaction()?;
        match write() {
            Ok(value) => {
                self.commit_transaction()?;
                Ok(value)
            }
            Err(error) => {
                self.rollback_transaction();
                Err(error)
            }
        }
    }

    /// Opens a transaction; its `BEGIN` waits for its first statement
    /// (`held`), so a page that only reads and writes what it can hold is
    /// one statement at its commit.
    fn begin_transaction(&self) -> Result<()> {
        self.in_transaction.set(true);
        self.begun.set(false);
        self.fence_held.set(false);
        *self.held.borrow_mut() = held::Held::default();
        Ok(())
    }

    fn commit_transaction(&self) -> Result<()> {
        if self.holding() {
            self.in_transaction.set(false);
            return self.commit_held();
        }
        // The fence check takes a share lock on the lease's row: a takeover
        // (an UPDATE of that row) waits for this commit, or has already
        // committed and is seen here. Either way no write lands after the
        // lease changed hands. A lock taken earlier in the transaction is
        // held until now, so it proves the same.
        if !self.fence_held.get()
            && let Err(lost) = self.check_fence_now()
        {
            self.rollback_transaction();
            return Err(lost);
        }
        self.in_transaction.set(false);
        self.begun.set(false);
        self.fence_held.set(false);
        self.client.borrow_mut().batch_execute("COMMIT")?;
        Ok(())
    }

    fn rollback_transaction(&self) {
        self.fence_held.set(false);
        *self.held.borrow_mut() = held::Held::default();
        let begun = self.begun.replace(false);
        if self.in_transaction.replace(false) && begun {
            // A failed rollback means a broken connection; it rolls back on close.
            let _ = self.client.borrow_mut().batch_execute("ROLLBACK");
        }
    }

    fn check_fence_now(&self) -> Result<()> {
        let Some(lease) = self.fence.borrow().clone() else {
            return Ok(());
        };
        let holds = self
            .query_opt(held::LEASE_ROW, &[&lease.sync, &lease.owner, &lease.token])?
            .is_some();
        if holds {
            return Ok(());
        }
        Err(self.lost(&lease)?.into())
    }

    /// `lease` is another's now: who holds the sync instead.
    fn lost(&self, lease: &Lease) -> Result<LeaseLost> {
        let holder: Option<String> = self
            .query_opt(
                "SELECT lease_owner FROM sync_control WHERE sync = $1",
                &[&lease.sync],
            )?
            .and_then(|row| row.get(0));
        Ok(LeaseLost {
            sync: lease.sync.clone(),
            holder: holder.unwrap_or_else(|| "nobody".to_owned()),
        })
    }

    /// The sync's control row, created empty when missing.
    fn ensure_control(&self, sync: &str) -> Result<()> {
        self.execute(
            "INSERT INTO sync_control (sync) VALUES ($1) ON CONFLICT (sync) DO NOTHING",
            &[&sync],
        )?;
        Ok(())
    }

    /// Wakes the fleet's idle runners (see [`fleet::CHANNEL`]).
    fn notify_fleet(&self) -> Result<()> {
        self.client
            .borrow_mut()
            .batch_execute(&format!("NOTIFY {}", fleet::CHANNEL))?;
        Ok(())
    }
}

/// A namespace must be a plain lower-case identifier: it becomes a schema
/// name in SQL text.
pub fn check_namespace(namespace: &str) -> Result<()> {
    let mut chars = namespace.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    if !first_ok
        || namespace.len() > 63
        || !namespace
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        bail!(
            "store namespace {namespace:?} must be 1-63 lower-case letters, digits or '_', starting with a letter or '_'"
        );
    }
    Ok(())
}

/// The namespace a sync named `sync` gets by default: its name folded to a
/// plain identifier.
pub fn default_namespace(sync: &str) -> String {
    let mut namespace: String = sync
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(55)
        .collect();
    namespace.insert_str(0, "crmsync_");
    namespace
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Text the source sent, as stored (see the module doc).
fn bytes(text: &str) -> &[u8] {
    text.as_bytes()
}

fn opt_bytes(text: &Option<String>) -> Option<&[u8]> {
    text.as_deref().map(str::as_bytes)
}

/// Stored source text back as a string.
fn text(stored: Vec<u8>) -> Result<String> {
    String::from_utf8(stored).context("the store holds text that is not UTF-8")
}

fn opt_text(stored: Option<Vec<u8>>) -> Result<Option<String>> {
    stored.map(text).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crmsync_store::interface::{Directory, Leases, Reading, Runs, Transactions};
    use crmsync_store::rules::Row;
    use crmsync_store::{ContactData, Counts, DirectoryEntry, Handle, Records, RunMode};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// The throwaway server `scripts/test.sh` starts (`scripts/postgres.sh`).
    /// Never skipped: without it the PostgreSQL tests fail, naming how to get one.
    pub(crate) fn server() -> String {
        std::env::var("CRMSYNC_TEST_POSTGRES_URL").expect(
            "CRMSYNC_TEST_POSTGRES_URL is not set: run the tests with `bash scripts/test.sh`, \
             or set it to the URL `bash scripts/postgres.sh start` prints",
        )
    }

    /// A namespace no other test (or earlier run) uses.
    fn fresh(what: &str) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        format!(
            "test_{what}_{}_{nanos}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        )
    }

    #[test]
    fn postgres_meets_the_store_contract() {
        let url = server();
        crmsync_store::contract::contract(|| PgStore::connect(&url, &fresh("contract")).unwrap());
    }

    #[test]
    fn a_runner_that_lost_its_lease_cannot_commit_on_another_connection() {
        let url = server();
        let namespace = fresh("fence");
        let a = PgStore::connect(&url, &namespace).unwrap();
        let b = PgStore::connect(&url, &namespace).unwrap();
        let alive = |_: &str| false;
        let lease = a
            .acquire_lease("s", "a", 0, 1_000, &alive)
            .unwrap()
            .unwrap();
        a.fence(lease);
        a.begin().unwrap();
        a.create("1", &ContactData::default(), None).unwrap();
        // `a` stalls past its TTL; `b` takes the sync over.
        let taken = b
            .acquire_lease("s", "b", 5_000, 1_000, &alive)
            .unwrap()
            .unwrap();
        assert!(a.commit().is_err(), "a's commit is refused");
        assert!(
            b.find_by_external_id("1").unwrap().is_none(),
            "nothing of a's landed"
        );
        b.fence(taken);
        b.create("1", &ContactData::default(), None).unwrap();
        assert_eq!(a.linked_contacts().unwrap(), 1);
    }

    /// Two connections to a fresh namespace; the first holds sync `s`'s
    /// lease until 1,000 (unix ms), is fenced with it and has started a run.
    fn a_fenced_run(what: &str) -> (PgStore, PgStore, i64) {
        let url = server();
        let namespace = fresh(what);
        let a = PgStore::connect(&url, &namespace).unwrap();
        let b = PgStore::connect(&url, &namespace).unwrap();
        let lease = a
            .acquire_lease("s", "a", 0, 1_000, &|_: &str| false)
            .unwrap()
            .unwrap();
        let run = a.start_run("s", RunMode::Full, 0).unwrap().id;
        a.fence(lease);
        (a, b, run)
    }

    #[test]
    fn a_page_whose_lease_was_taken_before_its_commit_lands_nothing() {
        let (a, b, run) = a_fenced_run("fence_page");
        let alive = |_: &str| false;
        let page = Counts {
            pages: 1,
            ..Counts::default()
        };
        // The takeover comes while the page's writes are held to its commit,
        // or just before a later statement of the page (the look-up of its
        // second part) sends them; either way the page is refused whole.
        for (later_statement, at) in [(false, 0), (true, 20_000)] {
            a.begin().unwrap();
            a.find_page(&["x"], &[], &[]).unwrap();
            a.create("1", &ContactData::default(), None).unwrap();
            a.checkpoint(run, Some("next"), &page, None).unwrap();
            let taken = b
                .acquire_lease("s", "b", at + 5_000, 1_000, &alive)
                .unwrap()
                .unwrap();
            let refused = if later_statement {
                let refused = a.find_page(&["1"], &[], &[]).unwrap_err();
                a.rollback();
                refused
            } else {
                a.commit().unwrap_err()
            };
            let lost = refused.downcast_ref::<LeaseLost>().expect("a LeaseLost");
            assert_eq!(lost.holder, "b");
            assert!(b.find_by_external_id("1").unwrap().is_none());
            assert_eq!(
                b.runs("s").unwrap()[0].counts.pages,
                0,
                "no checkpoint landed"
            );
            b.release_lease(&taken).unwrap();
            let again = a
                .acquire_lease("s", "a", at + 10_000, 1_000, &alive)
                .unwrap()
                .unwrap();
            a.fence(again);
        }
    }

    #[test]
    fn a_page_of_creates_and_its_checkpoint_land_together_at_its_commit() {
        let (a, b, run) = a_fenced_run("held_page");
        a.begin().unwrap();
        let data = ContactData {
            emails: vec!["ada@x.io".into()],
            ..ContactData::default()
        };
        let made = a.create_many(&[("1", &data), ("2", &data)], None).unwrap();
        let page = Counts {
            pages: 1,
            created: 2,
            ..Counts::default()
        };
        a.checkpoint(run, Some("next"), &page, None).unwrap();
        assert!(
            b.find_by_external_id("1").unwrap().is_none(),
            "not before the commit"
        );
        assert_eq!(b.runs("s").unwrap()[0].counts.pages, 0);
        a.commit().unwrap();
        assert_eq!(b.find_by_external_id("1").unwrap().unwrap().id, made[0]);
        assert_eq!(
            ids(b.find_by_handle(Handle::Email, "ada@x.io").unwrap()),
            made
        );
        assert_eq!(b.runs("s").unwrap()[0].counts.created, 2);
        // A page that fails is rolled back whole, held or sent.
        a.begin().unwrap();
        a.create("3", &data, None).unwrap();
        a.rollback();
        assert!(b.find_by_external_id("3").unwrap().is_none());
    }

    #[test]
    fn two_connections_opening_one_new_namespace_both_succeed() {
        let url = server();
        let namespace = fresh("race");
        let opened: Vec<_> = (0..4)
            .map(|_| {
                let (url, namespace) = (url.clone(), namespace.clone());
                std::thread::spawn(move || PgStore::connect(&url, &namespace).map(|_| ()))
            })
            .collect();
        for thread in opened {
            thread.join().unwrap().unwrap();
        }
        let store = PgStore::connect(&url, &namespace).unwrap();
        let run = store.start_run("s", RunMode::Full, 1).unwrap();
        assert_eq!(store.runs("s").unwrap()[0].id, run.id);
    }

    fn ids(entries: Vec<DirectoryEntry>) -> Vec<i64> {
        entries.into_iter().map(|e| e.id).collect()
    }

    /// Handles whose contact is gone: none, ever (no foreign key says so since schema 2).
    fn orphan_handles(store: &PgStore) -> i64 {
        store
            .client
            .borrow_mut()
            .query_one(
                "SELECT COUNT(*) FROM handles h
                 WHERE NOT EXISTS (SELECT 1 FROM contacts c WHERE c.id = h.contact_id)",
                &[],
            )
            .unwrap()
            .get(0)
    }

    #[test]
    fn a_folded_contact_takes_its_handles_with_it() {
        let url = server();
        let store = PgStore::connect(&url, &fresh("fold")).unwrap();
        let data = |email: &str| ContactData {
            emails: vec![email.into()],
            phones: vec!["+15550100".into()],
            ..ContactData::default()
        };
        store.create("1", &data("a@x.io"), None).unwrap();
        store.create("2", &data("b@x.io"), None).unwrap();
        assert_eq!(store.absorb_merged("1", &["2".into()]).unwrap(), 1);
        assert_eq!(orphan_handles(&store), 0);
        // What the sync brought to the absorbed contact is not carried over (rules::fold_handles).
        assert!(
            store
                .find_by_handle(Handle::Email, "b@x.io")
                .unwrap()
                .is_empty()
        );
        let survivor = store.find_by_external_id("1").unwrap().unwrap();
        assert_eq!(
            ids(store.find_by_handle(Handle::Phone, "+15550100").unwrap()),
            [survivor.id]
        );
    }

    #[test]
    fn an_update_of_a_contact_removed_meanwhile_fails_and_writes_no_handles() {
        let url = server();
        let namespace = fresh("gone");
        let store = PgStore::connect(&url, &namespace).unwrap();
        let id = store.create("1", &ContactData::default(), None).unwrap();
        // Another connection removes the row between this one's read and write.
        let other = PgStore::connect(&url, &namespace).unwrap();
        let data = ContactData {
            emails: vec!["new@x.io".into()],
            ..ContactData::default()
        };
        other
            .client
            .borrow_mut()
            .execute("DELETE FROM contacts WHERE id = $1", &[&id])
            .unwrap();
        let row = Row {
            external_id: Some("1".into()),
            name: None,
            fields: Default::default(),
            syncing: true,
        };
        let error = store
            .write_row(Records::Contacts, id, &row, None)
            .unwrap_err();
        assert!(error.to_string().contains("disappeared"), "{error}");
        assert!(store.update(id, "1", &data, None).is_err());
        assert_eq!(orphan_handles(&store), 0);
    }

    #[test]
    fn the_page_look_up_keeps_one_plan_and_it_uses_the_indexes_as_the_store_fills() {
        let url = server();
        let store = PgStore::connect(&url, &fresh("plans")).unwrap();
        let look_up = |store: &PgStore| store.find_page(&["x"], &["x@x.io"], &["+15550100"]);
        assert!(look_up(&store).unwrap().is_empty());
        let data: Vec<ContactData> = (0..5_000)
            .map(|i| ContactData {
                emails: vec![format!("c{i}@x.io")],
                phones: vec![format!("+1555{i:07}")],
                ..ContactData::default()
            })
            .collect();
        let ids: Vec<String> = (0..5_000).map(|i| i.to_string()).collect();
        for (ids, data) in ids.chunks(100).zip(data.chunks(100)) {
            let batch: Vec<(&str, &ContactData)> =
                ids.iter().map(String::as_str).zip(data).collect();
            store.create_many(&batch, None).unwrap();
        }
        assert!(look_up(&store).unwrap().is_empty());
        // The connection's cached plan of the look-up, as it runs now: one
        // plan for every execution (no planning per page), on the indexes.
        let mut client = store.client.borrow_mut();
        let (name, generic): (String, i64) = client
            .query_one(
                "SELECT name, generic_plans FROM pg_prepared_statements
                 WHERE statement LIKE 'SELECT id FROM contacts WHERE external_id = ANY%'",
                &[],
            )
            .map(|row| (row.get(0), row.get(1)))
            .unwrap();
        assert!(generic >= 2, "{generic} generic plans");
        let plan: Vec<String> = client
            .query(
                &format!("EXPLAIN EXECUTE {name}('{{\\x78}}', '{{\\x78}}', '{{\\x78}}')"),
                &[],
            )
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        let plan = plan.join("\n");
        assert!(!plan.contains("Seq Scan"), "{plan}");
        assert!(plan.contains("Index"), "{plan}");
    }

    #[test]
    fn reserved_ids_never_collide_and_follow_the_order_of_creation() {
        let url = server();
        let namespace = fresh("ids");
        let (a, b) = (
            PgStore::connect(&url, &namespace).unwrap(),
            PgStore::connect(&url, &namespace).unwrap(),
        );
        let data = ContactData::default();
        let mut made = Vec::new();
        // Interleaved, and past one reservation of `a`'s.
        for round in 0..(IDS_AT_A_TIME / 100 + 2) {
            for (name, store) in [("a", &a), ("b", &b)] {
                let ids: Vec<String> = (0..100).map(|i| format!("{name}{round}.{i}")).collect();
                let batch: Vec<(&str, &ContactData)> =
                    ids.iter().map(|id| (id.as_str(), &data)).collect();
                made.push((name, store.create_many(&batch, None).unwrap()));
            }
        }
        made.push(("a", vec![a.create("single", &data, None).unwrap()]));
        let mut all: Vec<i64> = made.iter().flat_map(|(_, ids)| ids.clone()).collect();
        let count = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), count, "no id twice");
        for name in ["a", "b"] {
            let of: Vec<i64> = made
                .iter()
                .filter(|(n, _)| *n == name)
                .flat_map(|(_, ids)| ids.clone())
                .collect();
            assert!(of.windows(2).all(|w| w[0] < w[1]), "{name}: {of:?}");
        }
        assert_eq!(a.linked_contacts().unwrap(), count as u64);
    }

    #[test]
    fn a_schema_1_namespace_is_upgraded_to_the_current_handles() {
        let url = server();
        let namespace = fresh("upgrade");
        let store = PgStore::connect(&url, &namespace).unwrap();
        store
            .client
            .borrow_mut()
            .batch_execute(
                "ALTER TABLE handles ADD CONSTRAINT handles_contact_id_fkey
                     FOREIGN KEY (contact_id) REFERENCES contacts(id) ON DELETE CASCADE;
                 CREATE INDEX handles_by_value ON handles (kind, value);
                 ALTER TABLE handles ALTER COLUMN kind TYPE TEXT COLLATE \"default\";
                 ALTER TABLE contacts ALTER COLUMN seen_sync TYPE TEXT COLLATE \"default\";
                 UPDATE crmsync_meta SET version = 1",
            )
            .unwrap();
        drop(store);
        let store = PgStore::connect(&url, &namespace).unwrap();
        let mut client = store.client.borrow_mut();
        let keys: i64 = client
            .query_one(
                "SELECT COUNT(*) FROM pg_constraint
                 WHERE conrelid = 'handles'::regclass AND contype = 'f'",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(keys, 0);
        let indexes: Vec<String> = client
            .query(
                "SELECT indexname FROM pg_indexes
                 WHERE schemaname = current_schema() AND tablename = 'handles' ORDER BY 1",
                &[],
            )
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        assert_eq!(indexes, ["handles_by_value_kind", "handles_pkey"]);
        let collations: Vec<String> = client
            .query(
                "SELECT table_name || '.' || column_name || ' ' || collation_name
                 FROM information_schema.columns
                 WHERE table_schema = current_schema() AND column_name IN ('kind', 'seen_sync')
                   AND table_name IN ('handles', 'contacts', 'accounts')
                 ORDER BY 1",
                &[],
            )
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        assert_eq!(
            collations,
            [
                "accounts.seen_sync C",
                "contacts.seen_sync C",
                "handles.kind C"
            ]
        );
        let version: i64 = client
            .query_one("SELECT version FROM crmsync_meta", &[])
            .unwrap()
            .get(0);
        assert_eq!(version, schema::SCHEMA_VERSION);
    }

    #[test]
    fn namespaces_are_plain_identifiers() {
        assert!(check_namespace("crmsync_demo").is_ok());
        for bad in ["", "Demo", "a-b", "a;drop", "9lives", &"x".repeat(64)] {
            assert!(check_namespace(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            default_namespace("HubSpot → Front"),
            "crmsync_hubspot___front"
        );
        assert_eq!(default_namespace("9"), "crmsync_9");
        assert!(check_namespace(&default_namespace(&"é".repeat(100))).is_ok());
    }

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            redact("postgresql://sync:s3cret@db:5432/crm"),
            "postgresql://sync:***@db:5432/crm"
        );
        assert_eq!(
            redact("postgresql://sync@db/crm"),
            "postgresql://sync@db/crm"
        );
    }
}
