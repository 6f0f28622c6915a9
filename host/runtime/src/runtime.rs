//! Loading and running the sync component in wasmtime, inside a sandbox:
//! no preopened folders, no environment, a memory cap and a time limit per
//! call, and outgoing HTTP only through [`crate::http::Hooks`].

use crate::bindings::Plugin;
use crate::bindings::PluginPre;
use crate::bindings::crmsync::sync::directory;
use crate::bindings::crmsync::sync::types::{
    Counterpart, Destination, DestinationContact, Failure, FieldMapping, FieldRule, HandleKind,
    MappedContact, MappedPage, MappedRecord, MatchOutcome, MergedRecord, OutgoingRecord, Owner,
    Page, PageKeys, Pairing, PairingRules, PropertyDefinition, ReadRecord, ReconcileInput,
    Reconciled, Source, SourceRecord, SyncError, UnpairedRecord, WriteResult,
};
use crate::code_cache;
use crate::http::Hooks;
use crate::page_keys;
use crate::store::{DirectoryEntry, DynStore, Handle};
use anyhow::{Context, Result, anyhow, bail};
use std::path::Path;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// The component file name cargo produces.
pub const COMPONENT_FILE: &str = "crmsync_plugin.wasm";

/// The sync component built with this runner (`host/runtime/build.rs`), so the
/// binary needs no checkout; `--component` loads another.
pub static EMBEDDED_COMPONENT: &[u8] = include_bytes!(env!("CRMSYNC_EMBEDDED_COMPONENT"));

/// `EMBEDDED_COMPONENT`'s SHA-256, taken by the build script.
static EMBEDDED_COMPONENT_SHA256: &[u8; 32] =
    include_bytes!(env!("CRMSYNC_EMBEDDED_COMPONENT_SHA256"));

/// Where `host/runtime/build.rs` built it: for tools that run beside the checkout
/// (the bench hands it to child runs), not for the runner.
pub const EMBEDDED_COMPONENT_BUILT_AT: &str = env!("CRMSYNC_EMBEDDED_COMPONENT_BUILT_AT");

/// How often the epoch advances; the granularity of call time limits.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Limits on the component.
#[derive(Debug, Clone, Copy)]
pub struct Sandbox {
    /// Linear memory the component may grow to.
    pub max_memory_bytes: usize,
    /// Time limit of a `fetch-page` call (it includes the HTTP round trips).
    pub fetch_time_limit: Duration,
    /// Time limit of every other call (pure computation and lookups).
    pub call_time_limit: Duration,
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox {
            max_memory_bytes: 256 * 1024 * 1024,
            fetch_time_limit: Duration::from_secs(300),
            call_time_limit: Duration::from_secs(10),
        }
    }
}

/// A compiled component, ready to instantiate many times.
pub struct Runtime {
    engine: Engine,
    pre: PluginPre<HostState>,
    sandbox: Sandbox,
}

/// Everything the component's imports reach, one per instance.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    hooks: Hooks,
    limits: StoreLimits,
    /// The destination the `directory` import reads; `None` while lent
    /// (see [`HostState::take_store`]) or for an instance that has none.
    store: Option<DynStore>,
}

impl HostState {
    /// A state with no filesystem, no environment and no arguments: the
    /// component reaches the world only through `hooks` and `store`.
    pub fn new(hooks: Hooks, store: DynStore, sandbox: &Sandbox) -> Self {
        let mut state = Self::without_store(hooks, sandbox);
        state.store = Some(store);
        state
    }

    /// A state with no store: for an instance whose component never reads
    /// the destination (it fetches, or writes into another CRM), or that is
    /// given one later ([`HostState::put_store`]). Its `directory` imports
    /// fail the call.
    pub fn without_store(hooks: Hooks, sandbox: &Sandbox) -> Self {
        HostState {
            wasi: WasiCtx::builder().inherit_stderr().build(),
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            hooks,
            limits: StoreLimitsBuilder::new()
                .memory_size(sandbox.max_memory_bytes)
                .instances(16)
                .trap_on_grow_failure(true)
                .build(),
            store: None,
        }
    }

    /// The store, unless it was taken.
    pub fn store(&self) -> Result<&(dyn crate::store::Store + Send)> {
        self.store
            .as_deref()
            .context("this instance's store is lent to another thread (or it has none)")
    }

    /// Takes the store out, to lend it to another instance (a pass's
    /// applier) on another thread; [`HostState::put_store`] gives it back.
    pub fn take_store(&mut self) -> Option<DynStore> {
        self.store.take()
    }

    /// Gives this state `store`, replacing any it had.
    pub fn put_store(&mut self, store: DynStore) {
        self.store = Some(store);
    }

    /// The store, ending the state.
    pub fn into_store(self) -> Option<DynStore> {
        self.store
    }

    /// See [`Hooks::take_rejected_generation`].
    pub fn take_rejected_generation(&self) -> Option<u64> {
        self.hooks.take_rejected_generation()
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

impl crate::bindings::crmsync::sync::types::Host for HostState {}

impl HostState {
    /// The store, for a `directory` import: an instance without one fails the call.
    fn directory(&self) -> wasmtime::Result<&(dyn crate::store::Store + Send)> {
        self.store().map_err(to_wasmtime)
    }
}

impl directory::Host for HostState {
    fn find_by_external_id(
        &mut self,
        external_id: String,
    ) -> wasmtime::Result<Option<DestinationContact>> {
        let found = self
            .directory()?
            .find_by_external_id(&external_id)
            .map_err(to_wasmtime)?;
        Ok(found.map(destination_contact))
    }

    fn find_by_handle(
        &mut self,
        kind: HandleKind,
        handle: String,
    ) -> wasmtime::Result<Vec<DestinationContact>> {
        let kind = match kind {
            HandleKind::Email => Handle::Email,
            HandleKind::Phone => Handle::Phone,
            // Contacts hold no domains; accounts are asked through their own lookup.
            HandleKind::Domain => return Ok(Vec::new()),
        };
        let found = self
            .directory()?
            .find_by_handle(kind, &handle)
            .map_err(to_wasmtime)?;
        Ok(found.into_iter().map(destination_contact).collect())
    }

    fn find_account_by_external_id(
        &mut self,
        external_id: String,
    ) -> wasmtime::Result<Option<DestinationContact>> {
        let found = self
            .directory()?
            .find_account_by_external_id(&external_id)
            .map_err(to_wasmtime)?;
        Ok(found.map(destination_contact))
    }

    fn find_accounts_by_domain(
        &mut self,
        domain: String,
    ) -> wasmtime::Result<Vec<DestinationContact>> {
        let found = self
            .directory()?
            .find_accounts_by_domain(&domain)
            .map_err(to_wasmtime)?;
        Ok(found.into_iter().map(destination_contact).collect())
    }

    fn find_page(
        &mut self,
        external_ids: Vec<String>,
        emails: Vec<String>,
        phones: Vec<String>,
    ) -> wasmtime::Result<Vec<DestinationContact>> {
        let found = self
            .directory()?
            .find_page(&strs(&external_ids), &strs(&emails), &strs(&phones))
            .map_err(to_wasmtime)?;
        Ok(found.into_iter().map(destination_contact).collect())
    }

    fn find_page_keys(&mut self, keys: PageKeys) -> wasmtime::Result<Vec<DestinationContact>> {
        let keys = page_keys::read(&keys).map_err(to_wasmtime)?;
        let found = self
            .directory()?
            .find_page(&keys.external_ids, &keys.emails, &keys.phones)
            .map_err(to_wasmtime)?;
        Ok(found.into_iter().map(destination_contact).collect())
    }

    fn find_accounts_page_keys(
        &mut self,
        keys: PageKeys,
    ) -> wasmtime::Result<Vec<DestinationContact>> {
        let keys = page_keys::read(&keys).map_err(to_wasmtime)?;
        let found = self
            .directory()?
            .find_accounts_page(&keys.external_ids, &keys.domains)
            .map_err(to_wasmtime)?;
        Ok(found.into_iter().map(destination_contact).collect())
    }

    fn find_accounts_page(
        &mut self,
        external_ids: Vec<String>,
        domains: Vec<String>,
    ) -> wasmtime::Result<Vec<DestinationContact>> {
        let found = self
            .directory()?
            .find_accounts_page(&strs(&external_ids), &strs(&domains))
            .map_err(to_wasmtime)?;
        Ok(found.into_iter().map(destination_contact).collect())
    }
}

fn destination_contact(entry: DirectoryEntry) -> DestinationContact {
    DestinationContact {
        id: entry.id.to_string(),
        external_id: entry.external_id,
        emails: entry.emails,
        phones: entry.phones,
        domains: entry.domains,
        from_source: entry.from_source,
    }
}

/// The store's look-ups take borrowed keys; `find-page`'s arrive owned.
fn strs(values: &[String]) -> Vec<&str> {
    values.iter().map(String::as_str).collect()
}

/// A component answering a page with more or fewer outcomes than records
/// broke the contract; nothing of the page is applied.
fn one_per_record(
    export: &str,
    records: usize,
    outcomes: Vec<MatchOutcome>,
) -> Result<Vec<MatchOutcome>> {
    if outcomes.len() != records {
        bail!(
            "the sync component broke its contract in {export}: {} outcomes for {records} records",
            outcomes.len()
        );
    }
    Ok(outcomes)
}

fn to_wasmtime(error: anyhow::Error) -> wasmtime::Error {
    wasmtime::Error::msg(format!("{error:#}"))
}

fn from_wasmtime(error: wasmtime::Error) -> anyhow::Error {
    anyhow!("{error:?}")
}

/// The embedded component with the digest its build took.
fn embedded_component() -> code_cache::Digested<'static> {
    code_cache::Digested::with_sha256(EMBEDDED_COMPONENT, *EMBEDDED_COMPONENT_SHA256)
}

impl Runtime {
    /// Compiles the component at `path`, or loads it from the compiled-code cache.
    pub fn load(path: &Path, sandbox: Sandbox) -> Result<Self> {
        Self::load_on(engine()?, path, sandbox)
    }

    /// The component this runner was built with (`EMBEDDED_COMPONENT`).
    pub fn load_embedded(sandbox: Sandbox) -> Result<Self> {
        Self::compile(
            engine()?,
            embedded_component(),
            "the embedded component",
            sandbox,
        )
    }

    /// The component at `path` compiled without the checks its calls'
    /// time limits rest on (wasmtime's epoch interruption, a test of the
    /// epoch at every function entry and loop header), so that a call can
    /// run for ever. For measurement only: the bench times it to tell what
    /// those checks cost from what the component's own code costs. Never
    /// for a sync.
    pub fn load_without_time_limits(path: &Path) -> Result<Self> {
        Self::load_on(uninterruptible_engine()?, path, Sandbox::default())
    }

    /// [`Runtime::load`] on `engine`.
    fn load_on(engine: Engine, path: &Path, sandbox: Sandbox) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| {
            format!(
                "cannot read the sync component {} (build it with `cargo rustc --profile component -p crmsync-plugin --lib --crate-type cdylib --target wasm32-wasip2`, or leave out --component to use the one this runner carries)",
                path.display()
            )
        })?;
        let component = code_cache::Digested::new(&bytes);
        Self::compile(engine, component, &path.display().to_string(), sandbox)
    }

    /// Compiles a component (named `what` in errors) for `engine`, or loads it
    /// from the cache.
    fn compile(
        engine: Engine,
        component: code_cache::Digested<'_>,
        what: &str,
        sandbox: Sandbox,
    ) -> Result<Self> {
        let component = code_cache::load(&engine, component, code_cache::cache_dir().as_deref())
            .with_context(|| format!("{what} is not a valid crmsync component"))?;
        let mut linker: Linker<HostState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(from_wasmtime)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_sync(&mut linker).map_err(from_wasmtime)?;
        Plugin::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |state| state)
            .map_err(from_wasmtime)?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(from_wasmtime)
            .with_context(|| format!("{what} does not fit crmsync's host (its imports differ)"))?;
        let pre = PluginPre::new(pre).map_err(from_wasmtime)?;
        Ok(Runtime {
            engine,
            pre,
            sandbox,
        })
    }

    /// The limits each instance runs under.
    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    /// A fresh instance with its own state.
    pub fn instantiate(&self, state: HostState) -> Result<Instance> {
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limits);
        store.set_epoch_deadline(ticks(self.sandbox.call_time_limit));
        let plugin = self.pre.instantiate(&mut store).map_err(from_wasmtime)?;
        Ok(Instance {
            store,
            plugin,
            sandbox: self.sandbox,
            _ticking: Ticking::start(),
        })
    }
}

/// The engine of [`Runtime::load_without_time_limits`]: as [`engine`]'s,
/// without epoch interruption (its compiled code is cached apart, as the
/// cache's key holds the engine's settings).
fn uninterruptible_engine() -> Result<Engine> {
    static ENGINE: OnceLock<std::result::Result<Engine, String>> = OnceLock::new();
    ENGINE
        .get_or_init(|| Engine::new(&Config::new()).map_err(|e| format!("{e:?}")))
        .clone()
        .map_err(|e| anyhow!("cannot start wasmtime: {e}"))
}

/// One engine per process: compiled code and the epoch ticker are shared.
pub(crate) fn engine() -> Result<Engine> {
    static ENGINE: OnceLock<std::result::Result<Engine, String>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let mut config = Config::new();
            config.epoch_interruption(true);
            // `perf` names the component's functions from /tmp/perf-<pid>.map
            // when this is set (profiling the bench: docs/performance.md).
            if std::env::var_os("CRMSYNC_PERF_MAP").is_some() {
                config.profiler(wasmtime::ProfilingStrategy::PerfMap);
            }
            let engine = Engine::new(&config).map_err(|e| format!("{e:?}"))?;
            let weak = engine.weak();
            std::thread::Builder::new()
                .name("crmsync-epoch".into())
                .spawn(move || {
                    while let Some(engine) = weak.upgrade() {
                        engine.increment_epoch();
                        drop(engine);
                        std::thread::sleep(EPOCH_TICK);
                        let (count, wake) = &INSTANCES;
                        let mut live = count.lock().expect("instance count");
                        while *live == 0 {
                            live = wake.wait(live).expect("instance count");
                        }
                    }
                })
                .map_err(|e| e.to_string())?;
            Ok(engine)
        })
        .clone()
        .map_err(|e| anyhow!("cannot start wasmtime: {e}"))
}

fn ticks(limit: Duration) -> u64 {
    (limit.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
}

/// An instantiated component and its state. After any error from a call the
/// instance must be dropped: a trapped component is not resumable.
pub struct Instance {
    store: Store<HostState>,
    plugin: Plugin,
    sandbox: Sandbox,
    /// Keeps the epoch advancing while this instance exists.
    _ticking: Ticking,
}

/// How many instances exist: the epoch ticker sleeps while there are none,
/// so an idle runner (a daemon between runs) is not woken 100 times a
/// second. Deadlines are set at each call from the epoch then, so a pause
/// while no instance (and so no call) exists changes no limit.
static INSTANCES: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());

/// One live instance, counted in [`INSTANCES`].
struct Ticking;

impl Ticking {
    fn start() -> Self {
        let (count, wake) = &INSTANCES;
        *count.lock().expect("instance count") += 1;
        wake.notify_all();
        Ticking
    }
}

impl Drop for Ticking {
    fn drop(&mut self) {
        *INSTANCES.0.lock().expect("instance count") -= 1;
    }
}

impl Instance {
    /// The host state, e.g. to write to the store between calls.
    pub fn state(&mut self) -> &mut HostState {
        self.store.data_mut()
    }

    /// Ends the instance, handing its host state (and so its store) back.
    pub fn into_state(self) -> HostState {
        self.store.into_data()
    }

    /// `fetch-page`. The outer error means the component failed (trap, time or memory limit).
    pub fn fetch_page(
        &mut self,
        source: &Source,
        cursor: Option<&str>,
    ) -> Result<Result<Page, SyncError>> {
        self.store
            .set_epoch_deadline(ticks(self.sandbox.fetch_time_limit));
        self.plugin
            .crmsync_sync_sync()
            .call_fetch_page(&mut self.store, source, cursor)
            .map_err(|e| component_failed("fetch-page", &self.sandbox, e))
    }

    /// `fetch-mapped-page`. The outer error means the component failed.
    pub fn fetch_mapped_page(
        &mut self,
        source: &Source,
        cursor: Option<&str>,
        mappings: &[FieldMapping],
    ) -> Result<Result<MappedPage, SyncError>> {
        self.store
            .set_epoch_deadline(ticks(self.sandbox.fetch_time_limit));
        self.plugin
            .crmsync_sync_sync()
            .call_fetch_mapped_page(&mut self.store, source, cursor, mappings)
            .map_err(|e| component_failed("fetch-mapped-page", &self.sandbox, e))
    }

    /// `list-properties`.
    pub fn list_properties(
        &mut self,
        source: &Source,
    ) -> Result<Result<Vec<PropertyDefinition>, SyncError>> {
        self.store
            .set_epoch_deadline(ticks(self.sandbox.fetch_time_limit));
        self.plugin
            .crmsync_sync_sync()
            .call_list_properties(&mut self.store, source)
            .map_err(|e| component_failed("list-properties", &self.sandbox, e))
    }

    /// `list-owners`; it sends requests, so it has `fetch-page`'s time limit.
    pub fn list_owners(&mut self, source: &Source) -> Result<Result<Vec<Owner>, SyncError>> {
        self.store
            .set_epoch_deadline(ticks(self.sandbox.fetch_time_limit));
        self.plugin
            .crmsync_sync_sync()
            .call_list_owners(&mut self.store, source)
            .map_err(|e| component_failed("list-owners", &self.sandbox, e))
    }

    /// `map-fields`.
    pub fn map_fields(
        &mut self,
        record: &SourceRecord,
        mappings: &[FieldMapping],
    ) -> Result<MappedRecord> {
        self.store
            .set_epoch_deadline(ticks(self.sandbox.call_time_limit));
        self.plugin
            .crmsync_sync_sync()
            .call_map_fields(&mut self.store, record, mappings)
            .map_err(|e| component_failed("map-fields", &self.sandbox, e))
    }

    /// `match-contact`.
    pub fn match_contact(&mut self, contact: &MappedContact) -> Result<MatchOutcome> {
        self.store
            .set_epoch_deadline(ticks(self.sandbox.call_time_limit));
        self.plugin
            .crmsync_sync_sync()
            .call_match_contact(&mut self.store, contact)
            .map_err(|e| component_failed("match-contact", &self.sandbox, e))
    }

    /// `match-account`.
    pub fn match_account(&mut self, account: &MappedContact) -> Result<MatchOutcome> {
        self.store
            .set_epoch_deadline(ticks(self.sandbox.call_time_limit));
        self.plugin
            .crmsync_sync_sync()
            .call_match_account(&mut self.store, account)
            .map_err(|e| component_failed("match-account", &self.sandbox, e))
    }

    /// `match-page`: a whole page's outcomes, in order.
    pub fn match_page(&mut self, contacts: &[MappedContact]) -> Result<Vec<MatchOutcome>> {
        self.store
            .set_epoch_deadline(ticks(self.sandbox.call_time_limit));
        let outcomes = self
            .plugin
            .crmsync_sync_sync()
            .call_match_page(&mut self.store, contacts)
            .map_err(|e| component_failed("match-page", &self.sandbox, e))?;
        one_per_record("match-page", contacts.len(), outcomes)
    }

    /// `match-keys-page` on `contacts`, packed here: how the runner matches
    /// a page (`match-page`'s outcomes for a fraction of its copying).
    pub fn match_keys_page(&mut self, contacts: &[&MappedContact]) -> Result<Vec<MatchOutcome>> {
        self.store
            .set_epoch_deadline(ticks(self.sandbox.call_time_limit));
        let outcomes = self
            .plugin
            .crmsync_sync_sync()
            .call_match_keys_page(&mut self.store, &page_keys::pack(contacts))
            .map_err(|e| component_failed("match-keys-page", &self.sandbox, e))?;
        one_per_record("match-keys-page", contacts.len(), outcomes)
    }

    /// `match-accounts-keys-page` on `accounts`, packed here.
    pub fn match_accounts_keys_page(
        &mut self,
        accounts: &[&MappedContact],
    ) -> Result<Vec<MatchOutcome>> {
        self.store
            .set_epoch_deadline(ticks(self.sandbox.call_time_limit));
        let outcomes = self
            .plugin
            .crmsync_sync_sync()
            .call_match_accounts_keys_page(&mut self.store, &page_keys::pack(accounts))
            .map_err(|e| component_failed("match-accounts-keys-page", &self.sandbox, e))?;
        one_per_record("match-accounts-keys-page", accounts.len(), outcomes)
    }

    /// `match-accounts-page`.
    pub fn match_accounts_page(&mut self, accounts: &[MappedContact]) -> Result<Vec<MatchOutcome>> {
        self.store
            .set_epoch_deadline(ticks(self.sandbox.call_time_limit));
        let outcomes = self
            .plugin
            .crmsync_sync_sync()
            .call_match_accounts_page(&mut self.store, accounts)
            .map_err(|e| component_failed("match-accounts-page", &self.sandbox, e))?;
        one_per_record("match-accounts-page", accounts.len(), outcomes)
    }

    /// `write-records`. Time-limited as a page fetch is: it sends requests.
    pub fn write_records(
        &mut self,
        destination: &Destination,
        records: &[OutgoingRecord],
    ) -> Result<Result<Vec<WriteResult>, SyncError>> {
        self.store
            .set_epoch_deadline(ticks(self.sandbox.fetch_time_limit));
        self.plugin
            .crmsync_sync_sync()
            .call_write_records(&mut self.store, destination, records)
            .map_err(|e| component_failed("write-records", &self.sandbox, e))
    }

    /// `reconcile`.
    pub fn reconcile(
        &mut self,
        rules: &[FieldRule],
        records: &[ReconcileInput],
    ) -> Result<Vec<Reconciled>> {
        self.store
            .set_epoch_deadline(ticks(self.sandbox.call_time_limit));
        self.plugin
            .crmsync_sync_sync()
            .call_reconcile(&mut self.store, rules, records)
            .map_err(|e| component_failed("reconcile", &self.sandbox, e))
    }

    /// `pair-read`.
    pub fn pair_read(
        &mut self,
        rules: &PairingRules,
        records: &[ReadRecord],
    ) -> Result<Vec<Pairing>> {
        self.store
            .set_epoch_deadline(ticks(self.sandbox.call_time_limit));
        self.plugin
            .crmsync_sync_sync()
            .call_pair_read(&mut self.store, *rules, records)
            .map_err(|e| component_failed("pair-read", &self.sandbox, e))
    }

    /// `pair-looked-up`.
    pub fn pair_looked_up(
        &mut self,
        rules: &PairingRules,
        records: &[UnpairedRecord],
        found: &[Counterpart],
        taken: &[String],
    ) -> Result<Vec<Pairing>> {
        self.store
            .set_epoch_deadline(ticks(self.sandbox.call_time_limit));
        self.plugin
            .crmsync_sync_sync()
            .call_pair_looked_up(&mut self.store, *rules, records, found, taken)
            .map_err(|e| component_failed("pair-looked-up", &self.sandbox, e))
    }

    /// `fold-merges`.
    pub fn fold_merges(&mut self, records: &[MergedRecord]) -> Result<Vec<Option<String>>> {
        self.store
            .set_epoch_deadline(ticks(self.sandbox.call_time_limit));
        self.plugin
            .crmsync_sync_sync()
            .call_fold_merges(&mut self.store, records)
            .map_err(|e| component_failed("fold-merges", &self.sandbox, e))
    }

    /// `classify-error`.
    pub fn classify_error(&mut self, failure: &Failure) -> Result<SyncError> {
        self.store
            .set_epoch_deadline(ticks(self.sandbox.call_time_limit));
        self.plugin
            .crmsync_sync_sync()
            .call_classify_error(&mut self.store, failure)
            .map_err(|e| component_failed("classify-error", &self.sandbox, e))
    }
}

fn component_failed(call: &str, sandbox: &Sandbox, error: wasmtime::Error) -> anyhow::Error {
    let root = error.root_cause().to_string();
    let reason = match error.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => "it ran past its time limit and was stopped".to_owned(),
        _ if root.contains("growing memory") => format!(
            "it exceeded its memory limit of {} MiB and was stopped",
            sandbox.max_memory_bytes / (1024 * 1024)
        ),
        Some(trap) => format!("it trapped ({trap})"),
        // Host errors raised inside the call (e.g. a store failure in an import) keep their text.
        None => root,
    };
    anyhow!("the sync component failed in {call}: {reason}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The build script's digest names the embedded component's compiled
    /// code: it must be the digest of the bytes embedded, or a start could
    /// load another component's code.
    #[test]
    fn the_build_time_digest_is_the_embedded_components() {
        let embedded = embedded_component();
        let hashed = code_cache::Digested::new(EMBEDDED_COMPONENT);
        assert_eq!(embedded.sha256(), hashed.sha256());
    }

    /// Syncs run on the engine whose code checks the epoch (the time
    /// limits); only the bench's measurement engine leaves the checks out,
    /// and its compiled code is cached under another key.
    #[test]
    fn only_the_measurement_engine_runs_without_time_limits() {
        let (checked, unchecked) = (engine().unwrap(), uninterruptible_engine().unwrap());
        assert!(checked.get_epoch_interruption());
        assert!(!unchecked.get_epoch_interruption());
        let key = |engine: &Engine| {
            use std::hash::{DefaultHasher, Hash, Hasher};
            let mut hasher = DefaultHasher::new();
            engine.precompile_compatibility_hash().hash(&mut hasher);
            hasher.finish()
        };
        assert_ne!(key(&checked), key(&unchecked));
    }
}
