//! The store's interface: what a sync keeps, as traits a backend implements.
//!
//! Each trait is one subject of the store (the destination directory, reading it back, links
//! between two CRMs, runs and checkpoints, leases, pause and trigger, create
//! intents, transactions); [`Store`] is all of them. [`ContactStore`] (SQLite)
//! is the embedded backend; the shared one (PostgreSQL, `crmsync-store-postgres`) implements the
//! same traits and runs the same contract suite (`contract.rs`). The
//! traits are object safe, so a runner can hold `&dyn Store`.

use crate::{
    AccountData, AccountRow, Bookmark, Change, ContactData, ContactRow, ContactStore, Control,
    Counts, DirectoryEntry, ErrorRow, Handle, Intent, Lease, Link, LinkSide, OpenRun, Records,
    RunMode, RunRow, SeenBy,
};
use anyhow::Result;
use std::collections::BTreeMap;

/// The destination directory: contacts and accounts as matching and the sync's writes see them (X1-X5, S3).
pub trait Directory {
    /// The contact linked to this source record, if any.
    fn find_by_external_id(&self, external_id: &str) -> Result<Option<DirectoryEntry>>;
    /// Every contact holding this normalised handle, linked or not, by id.
    fn find_by_handle(&self, kind: Handle, value: &str) -> Result<Vec<DirectoryEntry>>;
    /// Every contact linked to one of the ids or holding one of the handles, each once (`find-page`).
    fn find_page(
        &self,
        external_ids: &[&str],
        emails: &[&str],
        phones: &[&str],
    ) -> Result<Vec<DirectoryEntry>>;
    /// The account linked to this source company, if any.
    fn find_account_by_external_id(&self, external_id: &str) -> Result<Option<DirectoryEntry>>;
    /// Every account holding this normalised domain.
    fn find_accounts_by_domain(&self, domain: &str) -> Result<Vec<DirectoryEntry>>;
    /// Accounts linked to one of the ids or holding one of the domains (`find-accounts-page`).
    fn find_accounts_page(
        &self,
        external_ids: &[&str],
        domains: &[&str],
    ) -> Result<Vec<DirectoryEntry>>;
    /// Creates a contact linked to `external_id`, its handles brought by the sync (X5).
    fn create(
        &self,
        external_id: &str,
        data: &ContactData,
        seen: Option<SeenBy<'_>>,
    ) -> Result<i64>;
    /// Creates contacts as [`Directory::create`] does, in order; their ids
    /// in the same order. A backend where each statement is a round trip
    /// (PostgreSQL) writes them all in one.
    fn create_many(
        &self,
        contacts: &[(&str, &ContactData)],
        seen: Option<SeenBy<'_>>,
    ) -> Result<Vec<i64>> {
        contacts
            .iter()
            .map(|(external_id, data)| self.create(external_id, data, seen))
            .collect()
    }
    /// Updates (or links, X3) contact `id`: the sync's handles replaced, the contact's own kept.
    fn update(
        &self,
        id: i64,
        external_id: &str,
        data: &ContactData,
        seen: Option<SeenBy<'_>>,
    ) -> Result<Change>;
    /// Creates an account linked to a source company.
    fn create_account(
        &self,
        external_id: &str,
        data: &AccountData,
        seen: Option<SeenBy<'_>>,
    ) -> Result<i64>;
    /// Updates (or links) account `id`.
    fn update_account(
        &self,
        id: i64,
        external_id: &str,
        data: &AccountData,
        seen: Option<SeenBy<'_>>,
    ) -> Result<Change>;
    /// Notes that run `run_id` read the record linked to `external_id`.
    fn mark_seen(&self, records: Records, external_id: &str, sync: &str, run_id: i64)
    -> Result<()>;
    /// Stops the contact or account linked to `external_id` syncing (X6).
    fn stop_syncing(&self, records: Records, external_id: &str) -> Result<bool>;
    /// Stops every record a complete run did not read (X6).
    fn stop_syncing_unseen(&self, records: Records, sync: &str, run_id: i64) -> Result<u64>;
    /// Folds the contacts linked to merged source records into the survivor's.
    fn absorb_merged(&self, survivor: &str, merged_ids: &[String]) -> Result<u64>;
    /// Adds a contact the destination already had, linked to nothing (seeding, tests).
    fn insert_unlinked(&self, data: &ContactData) -> Result<i64>;
    /// Puts contact `contact_id` in the account linked to the first of its
    /// companies the store has (none: no account); whether that changed (S3).
    fn link_account(&self, contact_id: i64, company_ids: &[String]) -> Result<bool>;
    /// Source ids of the companies synced and still syncing (E5's filter).
    fn synced_company_ids(&self) -> Result<Vec<String>>;
}

/// Reading the store back, as the CLI and the console list it.
pub trait Reading {
    /// Every destination contact, in creation order.
    fn contacts(&self) -> Result<Vec<ContactRow>> {
        self.contacts_after(0, None)
    }
    /// The destination contacts after id `after`, in creation order, at
    /// most `limit` of them.
    fn contacts_after(&self, after: i64, limit: Option<u32>) -> Result<Vec<ContactRow>>;
    /// Every destination account, in creation order.
    fn accounts(&self) -> Result<Vec<AccountRow>>;
    /// Destination contacts linked to a source record.
    fn linked_contacts(&self) -> Result<u64>;
    /// Destination accounts linked to a source company.
    fn linked_accounts(&self) -> Result<u64>;
    /// The sync's runs, newest first.
    fn runs(&self, sync: &str) -> Result<Vec<RunRow>>;
    /// A run's errors, in the order they happened.
    fn errors(&self, run_id: i64) -> Result<Vec<ErrorRow>>;
    /// A run's errors counted by category.
    fn error_counts(&self, run_id: i64) -> Result<BTreeMap<String, u64>>;
}

/// Links between the records of two CRMs (X1, X6, X8).
pub trait Links {
    /// The link holding `id` on `side`, if any.
    fn link(&self, sync: &str, side: LinkSide, id: &str) -> Result<Option<Link>>;
    /// A link by its own id.
    fn link_by_id(&self, id: i64) -> Result<Option<Link>>;
    /// Saves a link (new when it has no id); returns its id.
    fn save_link(&self, sync: &str, link: &Link) -> Result<i64>;
    /// Moves the link of a merged record to its survivor, unless the survivor has one.
    fn relink(
        &self,
        sync: &str,
        side: LinkSide,
        merged: &str,
        survivor: &str,
        kind: Option<&str>,
    ) -> Result<bool>;
    /// Stops or resumes the pair holding `id` on `side`; whether a link changed.
    fn set_link_syncing(&self, sync: &str, side: LinkSide, id: &str, syncing: bool)
    -> Result<bool>;
    /// Stops the pairs whose source record a full read did not see.
    fn stop_syncing_unread(
        &self,
        sync: &str,
        read: &std::collections::HashSet<String>,
    ) -> Result<u64>;
    /// How many pairs the sync holds.
    fn linked_pairs(&self, sync: &str) -> Result<u64>;
    /// Every link of the sync.
    fn links(&self, sync: &str) -> Result<Vec<Link>>;
}

/// Run history, checkpoints, bookmarks and error rows (R1-R5).
pub trait Runs {
    /// The sync's run that never finished, to resume from its checkpoint.
    fn interrupted_run(&self, sync: &str) -> Result<Option<OpenRun>>;
    /// Marks an interrupted run as running again.
    fn resume_run(&self, run_id: i64) -> Result<()>;
    /// Records which runner runs the run now (its start, or a resume elsewhere).
    fn note_runner(&self, run_id: i64, runner: &str) -> Result<()>;
    /// Starts a run.
    fn start_run(&self, sync: &str, mode: RunMode, started_ms: i64) -> Result<OpenRun>;
    /// The run's cursor and counts after a page; commits with the page's writes.
    fn checkpoint(
        &self,
        run_id: i64,
        cursor: Option<&str>,
        counts: &Counts,
        newest_ms: Option<i64>,
    ) -> Result<()>;
    /// Where the sync's next incremental run starts.
    fn bookmark(&self, sync: &str) -> Result<Option<Bookmark>>;
    /// A run read everything: its bookmark moves.
    fn complete_run(&self, run_id: i64, sync: &str, bookmark: &Bookmark) -> Result<()>;
    /// Ends a run, with the error that ended it, if any.
    fn finish_run(&self, run_id: i64, error: Option<&str>) -> Result<()>;
    /// Records a failure of the run.
    fn record_error(&self, run_id: i64, error: &ErrorRow) -> Result<()>;
}

/// One runner inside a sync at a time: leases with fencing tokens.
pub trait Leases {
    /// Takes the sync's lease, or names its live holder.
    fn acquire_lease(
        &self,
        sync: &str,
        owner: &str,
        now_ms: i64,
        ttl_ms: i64,
        is_gone: &dyn Fn(&str) -> bool,
    ) -> Result<Result<Lease, String>>;
    /// Extends a held lease.
    fn renew_lease(&self, lease: &Lease, now_ms: i64, ttl_ms: i64) -> Result<()>;
    /// Gives a lease up; a connection fenced with it is fenced no more.
    fn release_lease(&self, lease: &Lease) -> Result<()>;
    /// Makes every later commit check that `lease` still holds.
    fn fence(&self, lease: Lease);
    /// Fails with `LeaseLost` once the fenced lease is another's.
    fn check_fence(&self) -> Result<()>;
}

/// Pause and trigger requests, per sync.
pub trait Controls {
    /// The sync's pause flag, trigger and lease holder.
    fn control(&self, sync: &str) -> Result<Control>;
    /// Pauses or resumes the sync.
    fn set_paused(&self, sync: &str, paused: bool) -> Result<()>;
    /// Asks for a run now.
    fn request_trigger(&self, sync: &str) -> Result<()>;
    /// Takes a pending trigger; whether there was one.
    fn take_trigger(&self, sync: &str) -> Result<bool>;
}

/// Creates a run may have sent before it was killed, settled by the next run.
pub trait Intents {
    /// Records creates about to be sent; sets their ids.
    fn record_intents(&self, sync: &str, intents: &mut [Intent]) -> Result<()>;
    /// The creates left unsettled.
    fn intents(&self, sync: &str) -> Result<Vec<Intent>>;
    /// Settles one.
    fn forget_intent(&self, id: i64) -> Result<()>;
}

/// A page's writes and its checkpoint commit together, or not at all.
pub trait Transactions {
    /// Starts a transaction; look-ups see its writes.
    fn begin(&self) -> Result<()>;
    /// Commits it while the fence holds; otherwise rolls back with `LeaseLost`.
    fn commit(&self) -> Result<()>;
    /// Abandons the open transaction, if any.
    fn rollback(&self);
    /// How many pages a pass may apply in one transaction while its reader
    /// is ahead of it. More than one only where a look-up sees every write
    /// of the open transaction, the earlier pages' too.
    fn pages_per_transaction(&self) -> usize {
        1
    }
}

/// A store a pass holds for its run: either backend, movable to the thread
/// that uses it.
pub type DynStore = Box<dyn Store + Send>;

/// Everything a sync keeps: one backend.
pub trait Store:
    Directory + Reading + Links + Runs + Leases + Controls + Intents + Transactions
{
}

impl<T: Directory + Reading + Links + Runs + Leases + Controls + Intents + Transactions> Store
    for T
{
}

// The SQLite backend: each trait method is the inherent method of the same name.

impl Directory for ContactStore {
    fn find_by_external_id(&self, external_id: &str) -> Result<Option<DirectoryEntry>> {
        ContactStore::find_by_external_id(self, external_id)
    }
    fn find_by_handle(&self, kind: Handle, value: &str) -> Result<Vec<DirectoryEntry>> {
        ContactStore::find_by_handle(self, kind, value)
    }
    fn find_page(
        &self,
        external_ids: &[&str],
        emails: &[&str],
        phones: &[&str],
    ) -> Result<Vec<DirectoryEntry>> {
        ContactStore::find_page(self, external_ids, emails, phones)
    }
    fn find_account_by_external_id(&self, external_id: &str) -> Result<Option<DirectoryEntry>> {
        ContactStore::find_account_by_external_id(self, external_id)
    }
    fn find_accounts_by_domain(&self, domain: &str) -> Result<Vec<DirectoryEntry>> {
        ContactStore::find_accounts_by_domain(self, domain)
    }
    fn find_accounts_page(
        &self,
        external_ids: &[&str],
        domains: &[&str],
    ) -> Result<Vec<DirectoryEntry>> {
        ContactStore::find_accounts_page(self, external_ids, domains)
    }
    fn create(
        &self,
        external_id: &str,
        data: &ContactData,
        seen: Option<SeenBy<'_>>,
    ) -> Result<i64> {
        ContactStore::create(self, external_id, data, seen)
    }
    fn create_many(
        &self,
        contacts: &[(&str, &ContactData)],
        seen: Option<SeenBy<'_>>,
    ) -> Result<Vec<i64>> {
        ContactStore::create_many(self, contacts, seen)
    }
    fn update(
        &self,
        id: i64,
        external_id: &str,
        data: &ContactData,
        seen: Option<SeenBy<'_>>,
    ) -> Result<Change> {
        ContactStore::update(self, id, external_id, data, seen)
    }
    fn create_account(
        &self,
        external_id: &str,
        data: &AccountData,
        seen: Option<SeenBy<'_>>,
    ) -> Result<i64> {
        ContactStore::create_account(self, external_id, data, seen)
    }
    fn update_account(
        &self,
        id: i64,
        external_id: &str,
        data: &AccountData,
        seen: Option<SeenBy<'_>>,
    ) -> Result<Change> {
        ContactStore::update_account(self, id, external_id, data, seen)
    }
    fn mark_seen(
        &self,
        records: Records,
        external_id: &str,
        sync: &str,
        run_id: i64,
    ) -> Result<()> {
        ContactStore::mark_seen(self, records, external_id, sync, run_id)
    }
    fn stop_syncing(&self, records: Records, external_id: &str) -> Result<bool> {
        ContactStore::stop_syncing(self, records, external_id)
    }
    fn stop_syncing_unseen(&self, records: Records, sync: &str, run_id: i64) -> Result<u64> {
        ContactStore::stop_syncing_unseen(self, records, sync, run_id)
    }
    fn absorb_merged(&self, survivor: &str, merged_ids: &[String]) -> Result<u64> {
        ContactStore::absorb_merged(self, survivor, merged_ids)
    }
    fn insert_unlinked(&self, data: &ContactData) -> Result<i64> {
        ContactStore::insert_unlinked(self, data)
    }
    fn link_account(&self, contact_id: i64, company_ids: &[String]) -> Result<bool> {
        ContactStore::link_account(self, contact_id, company_ids)
    }
    fn synced_company_ids(&self) -> Result<Vec<String>> {
        ContactStore::synced_company_ids(self)
    }
}

impl Reading for ContactStore {
    fn contacts_after(&self, after: i64, limit: Option<u32>) -> Result<Vec<ContactRow>> {
        ContactStore::contacts_after(self, after, limit)
    }
    fn accounts(&self) -> Result<Vec<AccountRow>> {
        ContactStore::accounts(self)
    }
    fn linked_contacts(&self) -> Result<u64> {
        ContactStore::linked_contacts(self)
    }
    fn linked_accounts(&self) -> Result<u64> {
        ContactStore::linked_accounts(self)
    }
    fn runs(&self, sync: &str) -> Result<Vec<RunRow>> {
        ContactStore::runs(self, sync)
    }
    fn errors(&self, run_id: i64) -> Result<Vec<ErrorRow>> {
        ContactStore::errors(self, run_id)
    }
    fn error_counts(&self, run_id: i64) -> Result<BTreeMap<String, u64>> {
        ContactStore::error_counts(self, run_id)
    }
}

impl Links for ContactStore {
    fn link(&self, sync: &str, side: LinkSide, id: &str) -> Result<Option<Link>> {
        ContactStore::link(self, sync, side, id)
    }
    fn link_by_id(&self, id: i64) -> Result<Option<Link>> {
        ContactStore::link_by_id(self, id)
    }
    fn save_link(&self, sync: &str, link: &Link) -> Result<i64> {
        ContactStore::save_link(self, sync, link)
    }
    fn relink(
        &self,
        sync: &str,
        side: LinkSide,
        merged: &str,
        survivor: &str,
        kind: Option<&str>,
    ) -> Result<bool> {
        ContactStore::relink(self, sync, side, merged, survivor, kind)
    }
    fn set_link_syncing(
        &self,
        sync: &str,
        side: LinkSide,
        id: &str,
        syncing: bool,
    ) -> Result<bool> {
        ContactStore::set_link_syncing(self, sync, side, id, syncing)
    }
    fn stop_syncing_unread(
        &self,
        sync: &str,
        read: &std::collections::HashSet<String>,
    ) -> Result<u64> {
        ContactStore::stop_syncing_unread(self, sync, read)
    }
    fn linked_pairs(&self, sync: &str) -> Result<u64> {
        ContactStore::linked_pairs(self, sync)
    }
    fn links(&self, sync: &str) -> Result<Vec<Link>> {
        ContactStore::links(self, sync)
    }
}

impl Runs for ContactStore {
    fn interrupted_run(&self, sync: &str) -> Result<Option<OpenRun>> {
        ContactStore::interrupted_run(self, sync)
    }
    fn resume_run(&self, run_id: i64) -> Result<()> {
        ContactStore::resume_run(self, run_id)
    }
    fn note_runner(&self, run_id: i64, runner: &str) -> Result<()> {
        ContactStore::note_runner(self, run_id, runner)
    }
    fn start_run(&self, sync: &str, mode: RunMode, started_ms: i64) -> Result<OpenRun> {
        ContactStore::start_run(self, sync, mode, started_ms)
    }
    fn checkpoint(
        &self,
        run_id: i64,
        cursor: Option<&str>,
        counts: &Counts,
        newest_ms: Option<i64>,
    ) -> Result<()> {
        ContactStore::checkpoint(self, run_id, cursor, counts, newest_ms)
    }
    fn bookmark(&self, sync: &str) -> Result<Option<Bookmark>> {
        ContactStore::bookmark(self, sync)
    }
    fn complete_run(&self, run_id: i64, sync: &str, bookmark: &Bookmark) -> Result<()> {
        ContactStore::complete_run(self, run_id, sync, bookmark)
    }
    fn finish_run(&self, run_id: i64, error: Option<&str>) -> Result<()> {
        ContactStore::finish_run(self, run_id, error)
    }
    fn record_error(&self, run_id: i64, error: &ErrorRow) -> Result<()> {
        ContactStore::record_error(self, run_id, error)
    }
}

impl Leases for ContactStore {
    fn acquire_lease(
        &self,
        sync: &str,
        owner: &str,
        now_ms: i64,
        ttl_ms: i64,
        is_gone: &dyn Fn(&str) -> bool,
    ) -> Result<Result<Lease, String>> {
        ContactStore::acquire_lease(self, sync, owner, now_ms, ttl_ms, is_gone)
    }
    fn renew_lease(&self, lease: &Lease, now_ms: i64, ttl_ms: i64) -> Result<()> {
        ContactStore::renew_lease(self, lease, now_ms, ttl_ms)
    }
    fn release_lease(&self, lease: &Lease) -> Result<()> {
        ContactStore::release_lease(self, lease)
    }
    fn fence(&self, lease: Lease) {
        ContactStore::fence(self, lease)
    }
    fn check_fence(&self) -> Result<()> {
        ContactStore::check_fence(self)
    }
}

impl Controls for ContactStore {
    fn control(&self, sync: &str) -> Result<Control> {
        ContactStore::control(self, sync)
    }
    fn set_paused(&self, sync: &str, paused: bool) -> Result<()> {
        ContactStore::set_paused(self, sync, paused)
    }
    fn request_trigger(&self, sync: &str) -> Result<()> {
        ContactStore::request_trigger(self, sync)
    }
    fn take_trigger(&self, sync: &str) -> Result<bool> {
        ContactStore::take_trigger(self, sync)
    }
}

impl Intents for ContactStore {
    fn record_intents(&self, sync: &str, intents: &mut [Intent]) -> Result<()> {
        ContactStore::record_intents(self, sync, intents)
    }
    fn intents(&self, sync: &str) -> Result<Vec<Intent>> {
        ContactStore::intents(self, sync)
    }
    fn forget_intent(&self, id: i64) -> Result<()> {
        ContactStore::forget_intent(self, id)
    }
}

impl Transactions for ContactStore {
    fn begin(&self) -> Result<()> {
        ContactStore::begin(self)
    }
    fn commit(&self) -> Result<()> {
        ContactStore::commit(self)
    }
    fn rollback(&self) {
        ContactStore::rollback(self)
    }
    fn pages_per_transaction(&self) -> usize {
        crate::PAGES_PER_TRANSACTION
    }
}
