//! One sync pass: fetch pages through the component, map and match each
//! record, apply the outcome to the store, checkpoint after every page
//! (several pages to a commit while the applier is behind the reader).

use crate::auth::Credentials;
use crate::bindings::crmsync::sync::types::{
    Failure, FieldData, FieldMapping, FieldType, HubspotScope, HubspotSource, MappedContact,
    MappedPage, MappedRecord, MatchOutcome, SalesforceScope, SalesforceSource, Source, TimeWindow,
};
use crate::commit_groups::{MOST_OPEN, PageWriter, apply_in_groups};
use crate::config::{Config, SourceSystem, SyncObject, mapped_properties, target_name, type_name};
use crate::http::{Hooks, HttpLimits, HttpMode, HttpStats};
use crate::lease::{LeaseKeeper, LeaseWatch};
use crate::paging::Paging;
use crate::rate_limit::AccountLimiters;
use crate::retry::{Retry, Retrying, Stop, auth_stop, check_lease, with_retries};
use crate::run_errors::hidden_field;
use crate::runs::{end_run, errors_by_category, incremental_since};
use crate::runtime::{HostState, Instance, Runtime};
use crate::store::{
    AccountData, Bookmark, Change, ContactData, ContactStore, Counts, DynStore, ErrorRow, OpenRun,
    Records, RunMode, SeenBy, Store,
};
use anyhow::{Context, Result};
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

// What callers of a pass name through `sync` (the CLI, the daemon, tests).
pub use crate::options::{Progress, SyncOptions, lease_owner};
pub use crate::paging::MAX_RECORDS_PER_SYNC;
pub use crate::report::SyncReport;
pub use crate::retry::RetryPolicy;
pub use crate::run_errors::{category_name, error_row};
pub use crate::runs::now_ms;

/// Another process is running the sync.
#[derive(Debug, thiserror::Error)]
#[error("sync {sync:?} is already running (lease held by {holder}); wait for that run or stop it")]
pub struct Busy {
    pub sync: String,
    pub holder: String,
}

/// Runs one pass of `config`'s sync: its `[companies]` part first, if it has
/// one, then its own records. A failed company part does not stop the
/// contacts, unless they come from the synced companies (E5).
pub fn run_sync(runtime: &Runtime, config: &Config, options: &SyncOptions) -> Result<SyncReport> {
    run_sync_lending(runtime, config, options, &mut None)
}

/// [`run_sync`], lent `connection`: an open connection to `config`'s store
/// that the caller keeps between runs (a daemon's, for its schedule's
/// reads). Each part reads through it instead of opening one of its own,
/// and puts it back when it ends; a part that fails drops it.
pub fn run_sync_lending(
    runtime: &Runtime,
    config: &Config,
    options: &SyncOptions,
    connection: &mut Option<DynStore>,
) -> Result<SyncReport> {
    let companies = match &config.companies {
        Some(part) => {
            let mut elsewhere = None;
            let lent = if part.store == config.store {
                &mut *connection
            } else {
                &mut elsewhere
            };
            Some(Box::new(run_part(runtime, part, options, lent)?))
        }
        None => None,
    };
    if companies
        .as_ref()
        .is_some_and(|c| c.status == "interrupted")
    {
        // Asked to stop: the contacts wait for the next pass.
        let mut report = *companies.expect("checked above");
        report.sync = config.name.clone();
        return Ok(report);
    }
    let mut report = run_part(runtime, config, options, connection)?;
    report.companies = companies;
    Ok(report)
}

/// Runs one pass of one object's sync (contacts, or a company part),
/// through `connection` if it was lent one.
fn run_part(
    runtime: &Runtime,
    config: &Config,
    options: &SyncOptions,
    connection: &mut Option<DynStore>,
) -> Result<SyncReport> {
    let started = Instant::now();
    let credentials = credentials(config, options)?;
    let store = match connection.take() {
        Some(store) => store,
        None => config.store.open()?,
    };
    let keeper = match LeaseKeeper::acquire(
        &*store,
        &config.store,
        &config.name,
        &options.lease_owner,
        options.lease,
    )? {
        Ok(keeper) => keeper,
        Err(holder) => {
            *connection = Some(store);
            return Err(Busy {
                sync: config.name.clone(),
                holder,
            }
            .into());
        }
    };
    store.fence(keeper.lease().clone());
    // The run has started: a trigger waiting for it is answered (R1). Taken
    // only now, so a trigger that met a busy sync waits for the next run.
    store.take_trigger(&config.name)?;
    let (report, store) = match &config.destination {
        Some(crm) => crate::bridge::run(runtime, config, crm, options, store, keeper, started)?,
        None => run_leased(
            runtime,
            config,
            options,
            credentials,
            store,
            keeper,
            started,
        )?,
    };
    *connection = Some(store);
    Ok(report)
}

fn run_leased(
    runtime: &Runtime,
    config: &Config,
    options: &SyncOptions,
    credentials: Credentials,
    store: DynStore,
    keeper: LeaseKeeper,
    started: Instant,
) -> Result<(SyncReport, DynStore)> {
    let stats = Arc::new(HttpStats::default());
    let limiters = options.limiters.clone().unwrap_or_else(|| {
        AccountLimiters::new(config.source.rate_limit, config.source.search_rate_limit)
    });
    let hooks = || source_hooks(config, options, &credentials, &stats, &limiters);
    // Two instances, so reading the next page overlaps applying this one: the
    // reader fetches and maps; the applier matches and writes. The run's one
    // connection is the reader's before and after the pages, the applier's
    // during them (see `Pass::run`).
    let mut instance = runtime.instantiate(HostState::new(hooks(), store, runtime.sandbox()))?;
    let run = open_run(instance.state().store()?, config, options)?;
    if run.resumed {
        tracing::info!(run = run.id, cursor = ?run.cursor, "resuming an interrupted run");
    }
    tracing::info!(run = run.id, mode = ?run.mode, "sync {:?}", config.name);

    let tally = Tally {
        counts: run.counts,
        stopped_syncing: 0,
        merged: 0,
        relinked: 0,
        newest_ms: run.newest_ms,
    };
    // The applier's instance is made on its own thread, while the reader's
    // first request is out: nothing read waits for it.
    let (run_id, mode, started_ms) = (run.id, run.mode, run.started_ms);
    let applier = move |tally| -> Result<Applier<'_>> {
        Ok(Applier {
            instance: runtime.instantiate(HostState::without_store(hooks(), runtime.sandbox()))?,
            config,
            options,
            run_id,
            tally,
            mode,
            started_ms,
            before: None,
        })
    };
    let mut pass = Pass {
        instance: &mut instance,
        config,
        options,
        credentials: &credentials,
        run_id: run.id,
        read: run.counts.seen,
        lease: keeper.watch(),
        mappings: config.mappings.clone(),
        mode: run.mode,
        started_ms: run.started_ms,
        stats: &stats,
        company_ids: None,
        dropped: Vec::new(),
    };
    let (outcome, tally) = pass.run(run.cursor, tally, applier);
    let Tally {
        counts,
        stopped_syncing,
        merged,
        ..
    } = tally;
    let store = instance.state().store()?;
    let (status, error) = end_run(store, config, run.id, outcome)?;
    let errors_by_category = errors_by_category(store, run.id)?;
    keeper.release(store)?;
    let report = SyncReport {
        sync: config.name.clone(),
        run_id: run.id,
        status: status.to_owned(),
        resumed: run.resumed,
        mode: run.mode.name().to_owned(),
        counts,
        errors_by_category,
        requests: stats.sent.load(Ordering::Relaxed),
        rate_limited: stats.rate_limited.load(Ordering::Relaxed),
        retries: stats.retries.load(Ordering::Relaxed),
        elapsed_ms: started.elapsed().as_millis() as u64,
        stopped_syncing,
        merged,
        error,
        companies: None,
        written: None,
    };
    let store = instance
        .into_state()
        .into_store()
        .context("the pass kept the run's store")?;
    Ok((report, store))
}

/// The credentials for `config`'s source, from the environment; a replay
/// sends nothing, so it needs none.
fn credentials(config: &Config, options: &SyncOptions) -> Result<Credentials> {
    Ok(match options.http_mode {
        HttpMode::Replay(_) => Credentials::none(),
        _ => Credentials::from_config(&config.source.auth, &config.token_url(), |var| {
            std::env::var(var).ok()
        })?
        .with_user_agent(&options.user_agent()),
    })
}

/// The HTTP hooks for `config`'s source: its origin only, the credentials
/// added, its limits and rate limiters.
fn source_hooks(
    config: &Config,
    options: &SyncOptions,
    credentials: &Credentials,
    stats: &Arc<HttpStats>,
    limiters: &AccountLimiters,
) -> Hooks {
    Hooks::new(
        config.source.origin.clone(),
        options.http_mode.clone(),
        credentials.bearer(),
        HttpLimits {
            max_response_bytes: config.source.max_response_bytes,
            ..options.http_limits
        },
        stats.clone(),
    )
    .with_limiters(limiters.clone())
    .with_user_agent(&options.user_agent())
}

/// One source property and what the sync does with it (`crmsync fields`).
#[derive(Debug, Clone, Serialize)]
pub struct SourceField {
    pub name: String,
    pub label: String,
    /// The source's type name (HubSpot: `string`, `number`, `enumeration`, ...).
    pub value_type: String,
    /// An enumeration's allowed values.
    pub options: Vec<String>,
    /// Where the sync maps it (the config's spelling), if it does.
    pub mapped_to: Option<String>,
    /// `false` for a mapped property the source does not define (E6).
    pub exists: bool,
}

/// The source's property catalogue with the sync's current mapping, so a
/// user can pick fields (M1): every property the source defines, then any
/// mapped one it does not (E6).
pub fn source_fields(
    runtime: &Runtime,
    config: &Config,
    options: &SyncOptions,
) -> Result<Vec<SourceField>> {
    let credentials = credentials(config, options)?;
    credentials.ensure_fresh()?;
    let stats = Arc::new(HttpStats::default());
    let limiters = AccountLimiters::new(config.source.rate_limit, config.source.search_rate_limit);
    let hooks = source_hooks(config, options, &credentials, &stats, &limiters);
    let mut instance = runtime.instantiate(HostState::new(
        hooks,
        Box::new(ContactStore::open_in_memory()?),
        runtime.sandbox(),
    ))?;
    let source = unfiltered_source(config, HubspotScope::All);
    let definitions = instance
        .list_properties(&source)?
        .map_err(|e| anyhow::anyhow!("{}\n  fix: {}", e.message, e.resolution))?;
    let mapped_to = |name: &str| {
        // A sync into a CRM: the other CRM's field, and which way it flows.
        if let Some(crm) = &config.destination {
            let field = crm.fields.iter().find(|f| f.source == name)?;
            let flow = match field.direction {
                crate::bindings::crmsync::sync::types::Direction::ToDestination => "->",
                crate::bindings::crmsync::sync::types::Direction::ToSource => "<-",
                crate::bindings::crmsync::sync::types::Direction::Both => "<->",
            };
            let owner = if field.owner { " (owner)" } else { "" };
            return Some(format!("{flow} {}{owner}", field.destination));
        }
        let targets: Vec<String> = config
            .mappings
            .iter()
            .filter(|m| m.source == name)
            .map(|m| match m.value_type {
                FieldType::Text => target_name(&m.target),
                ref typed => format!("{} ({})", target_name(&m.target), type_name(typed)),
            })
            .collect();
        (!targets.is_empty()).then(|| targets.join(", "))
    };
    let mut fields: Vec<SourceField> = definitions
        .into_iter()
        .map(|d| SourceField {
            mapped_to: mapped_to(&d.name),
            name: d.name,
            label: d.label,
            value_type: d.value_type,
            options: d.options,
            exists: true,
        })
        .collect();
    fields.sort_by(|a, b| a.name.cmp(&b.name));
    for property in mapped_properties(&config.mappings) {
        if !fields.iter().any(|f| f.name == property) {
            fields.push(SourceField {
                mapped_to: mapped_to(&property),
                label: String::new(),
                value_type: String::new(),
                options: Vec::new(),
                exists: false,
                name: property,
            });
        }
    }
    Ok(fields)
}

/// The contract's source for `config`'s system and object. A read is
/// described in HubSpot's terms and carried over to Salesforce's, whose
/// scopes are all, modified and deleted (list and company scopes are HubSpot
/// choices the config refuses for Salesforce).
fn source_of(config: &Config, read: HubspotSource) -> Source {
    match (&config.source.system, config.object) {
        (
            SourceSystem::Salesforce {
                api_version,
                objects,
            },
            _,
        ) => Source::Salesforce(SalesforceSource {
            instance_url: read.base_url,
            api_version: api_version.clone(),
            objects: objects.clone(),
            scope: match read.scope {
                HubspotScope::Archived => SalesforceScope::Deleted,
                HubspotScope::Modified(window) => SalesforceScope::Modified(window),
                _ => SalesforceScope::All,
            },
            fields: read.properties,
            filters: read.filters,
        }),
        (SourceSystem::Hubspot, SyncObject::Contacts) => Source::HubspotContacts(read),
        (SourceSystem::Hubspot, SyncObject::Companies) => Source::HubspotCompanies(read),
    }
}

/// `scope` of `config`'s source with no properties, filters or associations:
/// for the property catalogue and the archived listing, which need only ids.
fn unfiltered_source(config: &Config, scope: HubspotScope) -> Source {
    source_of(
        config,
        HubspotSource {
            base_url: config.source.base_url.clone(),
            scope,
            properties: Vec::new(),
            filters: Vec::new(),
            with_companies: false,
        },
    )
}

/// Resumes the sync's interrupted run, or starts a new one: incremental when
/// the last completed run left a bookmark for the same scope and mappings
/// (R4), full otherwise. List-sourced syncs always run full: the search API
/// cannot filter by list membership, and membership itself must be re-read
/// (a contact that left the list stops syncing). So do contacts of synced
/// companies, for the same reason (association is no search filter).
fn open_run(store: &dyn Store, config: &Config, options: &SyncOptions) -> Result<OpenRun> {
    // A cassette is a fixed snapshot with no notion of "since": replays read it whole.
    let full = options.full || matches!(options.http_mode, HttpMode::Replay(_));
    let run = open_or_resume(store, config, full)?;
    store.note_runner(run.id, &options.runner)?;
    Ok(run)
}

fn open_or_resume(store: &dyn Store, config: &Config, full: bool) -> Result<OpenRun> {
    let chosen_by_membership =
        config.source.list_id.is_some() || config.source.from_synced_companies.is_some();
    let since_ms = incremental_since(
        store,
        config,
        &fingerprint(config),
        !full && !chosen_by_membership,
    )?;
    if let Some(run) = store.interrupted_run(&config.name)? {
        let superseded = matches!(run.mode, RunMode::Incremental { .. }) && since_ms.is_none();
        if !superseded {
            store.resume_run(run.id)?;
            return Ok(run);
        }
        // Its bookmark never advanced, so nothing is lost by not finishing it.
        store.finish_run(
            run.id,
            Some("superseded by a full run (sync --full, or the scope or mappings changed)"),
        )?;
    }
    store.start_run(&config.name, RunMode::since(since_ms), now_ms())
}

/// What a sync reads: its source account, scope and mappings. A bookmark
/// left under another fingerprint is not used (the next run is full), so a
/// newly mapped property is filled in for records that did not change.
fn fingerprint(config: &Config) -> String {
    let mappings: Vec<String> = config
        .mappings
        .iter()
        .map(|m| match m.value_type {
            FieldType::Text => format!("{}>{}", m.source, target_name(&m.target)),
            ref typed => format!("{}>{}:{typed:?}", m.source, target_name(&m.target)),
        })
        .collect();
    let mut fingerprint = format!(
        "{} list={} {}",
        config.source.base_url,
        config.source.list_id.as_deref().unwrap_or("*"),
        mappings.join(",")
    );
    // A changed filter changes which records sync: the next run reads all.
    if !config.filters.is_empty() {
        fingerprint.push_str(&format!(" filters={:?}", config.filters));
    }
    // Newly linked companies must be read for records that did not change.
    if config.links_companies() {
        fingerprint.push_str(" with=companies");
    }
    if let SourceSystem::Salesforce { objects, .. } = &config.source.system {
        fingerprint.push_str(&format!(" salesforce={objects:?}"));
    }
    fingerprint
}

/// The reading side of a pass: fetches and maps pages through its own
/// instance, retries, keeps the lease and the credentials.
struct Pass<'a> {
    instance: &'a mut Instance,
    config: &'a Config,
    options: &'a SyncOptions,
    credentials: &'a Credentials,
    run_id: i64,
    /// Records read so far in the run (S5's limit).
    read: u64,
    /// Whether the pass still holds its lease (the keeper renews it).
    lease: LeaseWatch,
    /// The config's mappings less the properties the source no longer has (E6).
    mappings: Vec<FieldMapping>,
    mode: RunMode,
    /// When the run started (unix ms): the end of an incremental window.
    started_ms: i64,
    stats: &'a HttpStats,
    /// The synced companies whose contacts a full run reads (S2), once read.
    company_ids: Option<Vec<String>>,
    /// E6 errors found while the store is lent to the applier, recorded
    /// once the pass has it back.
    dropped: Vec<ErrorRow>,
}

/// Pages read but not yet applied: one being applied, one waiting. The
/// reader stays at most this far ahead, so memory stays flat.
const PAGES_AHEAD: usize = 1;

impl Pass<'_> {
    /// Reads pages from `cursor` to the end while the applier that `applier`
    /// makes (on its own thread, from `tally`) applies them: fetching and
    /// mapping page N+1 overlaps matching and writing page N. Checkpoints are
    /// the applier's, so a stop or a crash resumes after the last applied
    /// page, as without the overlap. Returns the applier's tally.
    fn run<'b>(
        &mut self,
        cursor: Option<String>,
        tally: Tally,
        applier: impl FnOnce(Tally) -> Result<Applier<'b>> + Send,
    ) -> (Result<(), Stop>, Tally) {
        // The catalogue check (E6) drops mappings, so the source read is built after it.
        let source = self
            .dependency()
            .and_then(|()| self.check_properties())
            .and_then(|()| self.source());
        let source = match source {
            Ok(source) => source,
            Err(stop) => return (Err(stop), tally),
        };
        // The run's connection goes to the applier while pages flow: the
        // reader does not read the store meanwhile, and one connection a run
        // is one schema parse and one page cache, and for a shared
        // PostgreSQL one backend.
        let Some(store) = self.instance.state().take_store() else {
            let error = anyhow::anyhow!("the pass has no store to apply pages to");
            return (Err(Stop::Internal(error)), tally);
        };
        let (pages, received) =
            std::sync::mpsc::sync_channel::<(MappedPage, Option<String>)>(PAGES_AHEAD);
        let archived = ArchivedListing {
            config: self.config,
            credentials: self.credentials.clone(),
            lease: self.lease.clone(),
            stats: self.stats,
            policy: self.options.retry,
        };
        std::thread::scope(|scope| {
            let applying = scope.spawn(move || {
                let mut applier = match applier(tally) {
                    Ok(applier) => applier,
                    Err(error) => return (Err(Stop::Internal(error)), tally, store),
                };
                applier.instance.state().put_store(store);
                let applied = archived
                    .stop_syncing(&mut applier.instance)
                    .map_err(Stop::Internal)
                    .and_then(|stopped| {
                        applier.tally.stopped_syncing += stopped;
                        let most = applier.instance.state().store()?.pages_per_transaction();
                        apply_in_groups(&mut applier, &received, most, MOST_OPEN)
                    });
                let store = applier
                    .instance
                    .state()
                    .take_store()
                    .expect("given to the applier above");
                if applied.is_err() {
                    // A step that failed inside a transaction may have left it
                    // open; the pass ends the run through this connection.
                    store.rollback();
                }
                (applied, applier.tally, store)
            });
            let read = self.read_pages(&source, cursor, &pages);
            drop(pages);
            let (applied, tally, store) = applying.join().expect("the applier thread panicked");
            self.instance.state().put_store(store);
            // E6 errors found while the applier had the store.
            let recorded = self.record_dropped().map_err(Stop::Internal);
            // The applier's failure explains a reader that stopped for it.
            (applied.and(read).and(recorded), tally)
        })
    }

    /// Fetches pages and hands them to the applier until the last one, a
    /// stop, or an applier that stopped taking them.
    fn read_pages(
        &mut self,
        source: &Source,
        mut cursor: Option<String>,
        pages: &std::sync::mpsc::SyncSender<(MappedPage, Option<String>)>,
    ) -> Result<(), Stop> {
        let mut source = source.clone();
        let mut mappings = self.mappings.clone();
        let mut paging = Paging::resumed(
            match self.config.object {
                SyncObject::Contacts => "contacts",
                SyncObject::Companies => "companies",
            },
            cursor.as_deref(),
            self.read,
        );
        loop {
            if self.options.stop.load(Ordering::Relaxed) {
                return Err(Stop::Interrupted);
            }
            let page = match self.fetch(&source, cursor.as_deref(), &mappings) {
                // A field the catalogue showed but the query may not read
                // (Salesforce field-level security): dropped, the page read again.
                Err(Stop::Classified(error)) if hidden_field(&error, &mappings).is_some() => {
                    let field = hidden_field(&error, &mappings).expect("checked").to_owned();
                    tracing::warn!("{field}: {}", error.message);
                    self.drop_property(&field)?;
                    mappings = self.mappings.clone();
                    source = self.source()?;
                    continue;
                }
                page => page?,
            };
            let next = paging
                .advance(page.records.len(), page.next_cursor.as_deref())
                .map_err(Stop::Classified)?;
            self.read = paging.records();
            if pages.send((page, next.clone())).is_err() {
                // The applier stopped; its error is the run's.
                return Ok(());
            }
            match next {
                Some(next) => cursor = Some(next),
                None => return Ok(()),
            }
        }
    }

    /// E5: contacts of synced companies need a company sync that has not
    /// failed (its newest run) and has completed at least once.
    fn dependency(&mut self) -> Result<(), Stop> {
        let Some(companies) = &self.config.source.from_synced_companies else {
            return Ok(());
        };
        let runs = self.instance.state().store()?.runs(companies)?;
        let usable = runs.first().is_some_and(|newest| newest.status != "failed")
            && runs.iter().any(|run| run.status == "completed");
        if usable {
            return Ok(());
        }
        let error = self
            .instance
            .classify_error(&Failure::DependencyFailed(companies.clone()))?;
        Err(Stop::Classified(error))
    }

    /// The source as the component reads it, requesting the mapped properties.
    fn source(&mut self) -> Result<Source, Stop> {
        let scope = match (self.mode, &self.config.source.list_id) {
            (RunMode::Incremental { since_ms }, _) => HubspotScope::Modified(TimeWindow {
                since: since_ms.max(0) as u64,
                until: self.started_ms.max(0) as u64,
            }),
            (RunMode::Full, Some(list)) => HubspotScope::ListMembers(list.clone()),
            (RunMode::Full, None) if self.config.source.from_synced_companies.is_some() => {
                let ids = match &self.company_ids {
                    Some(ids) => ids.clone(),
                    None => self.instance.state().store()?.synced_company_ids()?,
                };
                self.company_ids = Some(ids.clone());
                HubspotScope::CompaniesContacts(ids)
            }
            (RunMode::Full, None) => HubspotScope::All,
        };
        Ok(source_of(
            self.config,
            HubspotSource {
                base_url: self.config.source.base_url.clone(),
                scope,
                properties: mapped_properties(&self.mappings),
                // A filter on a property the source dropped (E6) cannot be
                // evaluated; it stays, and that property reads as empty.
                filters: self.config.filters.clone(),
                with_companies: self.config.links_companies(),
            },
        ))
    }

    /// E6: a mapped property the source does not define stops syncing, once
    /// reported; the other fields go on. The catalogue is advisory: if it
    /// cannot be read (older API, missing schema scope), nothing is dropped.
    fn check_properties(&mut self) -> Result<(), Stop> {
        // HubSpot's default properties cannot be deleted; Salesforce's
        // standard fields can be hidden by field-level security (E6, M5), so
        // there every mapped field is checked.
        let checked: Vec<String> = match self.config.source.system {
            SourceSystem::Hubspot => self.config.chosen_properties.clone(),
            SourceSystem::Salesforce { .. } => mapped_properties(&self.mappings),
        };
        // Nothing to check, no request: a sync of HubSpot's default
        // properties starts paging one round trip sooner (issue 18's portals
        // are bound by their sequential round trips).
        if checked.is_empty() {
            return Ok(());
        }
        self.credentials
            .ensure_fresh()
            .map_err(|e| auth_stop(&self.config.source.system, e))?;
        let source = unfiltered_source(self.config, HubspotScope::All);
        let known = match self.instance.list_properties(&source)? {
            Ok(definitions) => definitions,
            Err(error) => {
                tracing::warn!("mapped properties not checked: {}", error.message);
                return Ok(());
            }
        };
        let missing: Vec<String> = checked
            .into_iter()
            .filter(|p| !known.iter().any(|d| &d.name == p))
            .collect();
        for property in &missing {
            self.drop_property(property)?;
        }
        Ok(())
    }

    /// E6 for one property the source will not show: reported once, left
    /// out of the reads from now on; the other fields go on.
    fn drop_property(&mut self, property: &str) -> Result<(), Stop> {
        let error = self
            .instance
            .classify_error(&Failure::FieldNotFound(property.to_owned()))?;
        let row = error_row(self.run_id, &error);
        match self.instance.state().store() {
            Ok(store) => store.record_error(self.run_id, &row)?,
            // Lent to the applier: recorded when the pass has it back.
            Err(_) => self.dropped.push(row),
        }
        self.mappings.retain(|m| m.source != property);
        Ok(())
    }

    /// Records the E6 errors found while the store was lent, once the pass
    /// has it back (whatever became of the pages).
    fn record_dropped(&mut self) -> Result<()> {
        let store = self.instance.state().store()?;
        for row in self.dropped.drain(..) {
            store.record_error(self.run_id, &row)?;
        }
        Ok(())
    }

    /// Fetches and maps one page, retrying what can be retried.
    fn fetch(
        &mut self,
        source: &Source,
        cursor: Option<&str>,
        mappings: &[FieldMapping],
    ) -> Result<MappedPage, Stop> {
        let policy = self.options.retry;
        with_retries(self, &policy, Retry::All, |pass| {
            pass.instance.fetch_mapped_page(source, cursor, mappings)
        })
    }
}

impl Retrying for Pass<'_> {
    fn credentials(&self) -> &Credentials {
        self.credentials
    }

    fn system(&self) -> &SourceSystem {
        &self.config.source.system
    }

    fn before_attempt(&mut self) -> Result<(), Stop> {
        check_lease(&self.lease)
    }

    fn stats(&self) -> &HttpStats {
        self.stats
    }

    fn rejected_generation(&mut self) -> Option<u64> {
        self.instance.state().take_rejected_generation()
    }
}

/// X6's archived listing: the source's archived records, and the
/// destination records linked to them marked as no longer syncing (never
/// deleted). It runs on the applier's instance before the first page
/// arrives, so its round trips overlap the reader's instead of following
/// the last page. Pages are sequential (each needs the cursor the one
/// before sent back), so after them it was one more round trip a run had
/// to wait for: 51 for a portal of 50 pages, 2 for a run of one.
/// Best effort: a source that cannot list archived records only delays this.
struct ArchivedListing<'a> {
    config: &'a Config,
    /// The pass's, shared: an expired token is refreshed once for both.
    credentials: Credentials,
    lease: LeaseWatch,
    stats: &'a HttpStats,
    policy: RetryPolicy,
}

impl ArchivedListing<'_> {
    /// Lists every archived record through `instance` and marks what they
    /// are linked to; how many stopped syncing.
    fn stop_syncing(&self, instance: &mut Instance) -> Result<u64> {
        let source = unfiltered_source(self.config, HubspotScope::Archived);
        let mut cursor: Option<String> = None;
        let mut paging = Paging::new("archived records");
        let mut stopped = 0;
        loop {
            let mut reader = ArchivedReader {
                listing: self,
                instance: &mut *instance,
            };
            let page = match with_retries(&mut reader, &self.policy, Retry::All, |reader| {
                reader
                    .instance
                    .fetch_mapped_page(&source, cursor.as_deref(), &[])
            }) {
                Ok(page) => page,
                Err(Stop::Classified(error)) => {
                    tracing::warn!("archived records not checked: {}", error.message);
                    return Ok(stopped);
                }
                Err(Stop::Interrupted) => return Ok(stopped),
                Err(Stop::Internal(error)) => return Err(error),
            };
            let store = instance.state().store()?;
            store.begin()?;
            for record in &page.records {
                let id = &record.contact.external_id;
                stopped += u64::from(store.stop_syncing(records_of(self.config), id)?);
            }
            store.commit()?;
            match paging.advance(page.records.len(), page.next_cursor.as_deref()) {
                Ok(Some(next)) => cursor = Some(next),
                Ok(None) => return Ok(stopped),
                Err(error) => {
                    tracing::warn!("archived records not all checked: {}", error.message);
                    return Ok(stopped);
                }
            }
        }
    }
}

/// The listing's requests, retried as the pass's are.
struct ArchivedReader<'a, 'b> {
    listing: &'a ArchivedListing<'b>,
    instance: &'a mut Instance,
}

impl Retrying for ArchivedReader<'_, '_> {
    fn credentials(&self) -> &Credentials {
        &self.listing.credentials
    }

    fn system(&self) -> &SourceSystem {
        &self.listing.config.source.system
    }

    fn before_attempt(&mut self) -> Result<(), Stop> {
        check_lease(&self.listing.lease)
    }

    fn stats(&self) -> &HttpStats {
        self.listing.stats
    }

    fn rejected_generation(&mut self) -> Option<u64> {
        self.instance.state().take_rejected_generation()
    }
}

/// The writing side of a pass: matches each mapped record through its own
/// instance (whose directory is the run's connection, lent by the reader
/// while pages flow) and applies
/// the outcome, each page with its checkpoint, in one transaction or, while
/// behind the reader, several pages to one.
struct Applier<'a> {
    instance: Instance,
    config: &'a Config,
    options: &'a SyncOptions,
    run_id: i64,
    /// What it has counted so far.
    tally: Tally,
    mode: RunMode,
    /// When the run started (unix ms).
    started_ms: i64,
    /// The tally when the open transaction began, restored if it rolls back.
    before: Option<Tally>,
}

/// What an applier counts as it applies pages.
#[derive(Clone, Copy)]
struct Tally {
    counts: Counts,
    /// Contacts marked no longer syncing by this pass (X6).
    stopped_syncing: u64,
    /// Contacts folded or relinked by source merges (X6).
    merged: u64,
    /// Contacts whose account (company link) changed (S3).
    relinked: u64,
    /// The newest source modification read so far (for the next bookmark).
    newest_ms: Option<i64>,
}

impl PageWriter for Applier<'_> {
    type Page = (MappedPage, Option<String>);

    fn begin(&mut self) -> Result<(), Stop> {
        self.instance.state().store()?.begin()?;
        self.before = Some(self.tally);
        Ok(())
    }

    fn apply(&mut self, (page, next): Self::Page) -> Result<bool, Stop> {
        self.apply_records(&page, next.as_deref())?;
        Ok(next.is_none())
    }

    fn commit(&mut self) -> Result<(), Stop> {
        if let Err(error) = self.instance.state().store()?.commit() {
            // The store rolled back: nothing since the transaction began happened.
            self.undo_tally();
            return Err(error.into());
        }
        self.before = None;
        if let Some(progress) = &self.options.progress {
            progress(&self.tally.counts);
        }
        Ok(())
    }

    fn roll_back(&mut self) {
        if let Ok(store) = self.instance.state().store() {
            store.rollback();
        }
        self.undo_tally();
    }
}

impl Applier<'_> {
    /// Where the next incremental run starts (R4): the newest modification
    /// read, but never after this run's start, so changes made while it ran
    /// are read again. A window that held nothing keeps the old bookmark.
    fn next_bookmark(&mut self) -> Result<i64> {
        Ok(match (self.tally.newest_ms, self.mode) {
            (Some(newest), _) => newest.min(self.started_ms),
            (None, RunMode::Full) => self.started_ms,
            (None, RunMode::Incremental { since_ms }) => self
                .instance
                .state()
                .store()?
                .bookmark(&self.config.name)?
                .map_or(since_ms, |b| b.modified_ms),
        })
    }

    /// Back to the tally of the open transaction's start, when its writes
    /// were rolled back.
    fn undo_tally(&mut self) {
        if let Some(tally) = self.before.take() {
            self.tally = tally;
        }
    }

    fn apply_records(&mut self, page: &MappedPage, next: Option<&str>) -> Result<(), Stop> {
        // A page is decided in one `match-page` call, except that a record
        // folding merged source records (X6) starts a new call: its merge
        // lands after the records before it are applied and before it is
        // matched, as when records were matched one by one.
        let mut start = 0;
        for (index, record) in page.records.iter().enumerate() {
            self.tally.counts.seen += 1;
            if let Some(modified) = record.modified_at {
                let modified = i64::try_from(modified).unwrap_or(i64::MAX);
                self.tally.newest_ms =
                    Some(self.tally.newest_ms.map_or(modified, |n| n.max(modified)));
            }
            if index > start && !record.merged_ids.is_empty() {
                self.apply_run(&page.records[start..index])?;
                start = index;
            }
        }
        self.apply_run(&page.records[start..])?;
        // S4: a record that no longer matches the filters stops syncing;
        // its contact is kept, flagged like an archived one (X6).
        for id in &page.excluded {
            let store = self.instance.state().store()?;
            self.tally.stopped_syncing +=
                u64::from(store.stop_syncing(records_of(self.config), id)?);
        }
        self.tally.counts.pages += 1;
        let bookmark = match next {
            Some(_) => None,
            None => Some(Bookmark {
                modified_ms: self.next_bookmark()?,
                fingerprint: fingerprint(self.config),
            }),
        };
        let store = self.instance.state().store()?;
        store.checkpoint(self.run_id, next, &self.tally.counts, self.tally.newest_ms)?;
        if let Some(bookmark) = bookmark {
            if self.mode == RunMode::Full {
                // Only a complete pass knows what the source no longer has.
                self.tally.stopped_syncing += store.stop_syncing_unseen(
                    records_of(self.config),
                    &self.config.name,
                    self.run_id,
                )?;
            }
            // Completing the run with its last page's writes: a crash between the
            // two would otherwise leave a finished run looking unstarted.
            store.complete_run(self.run_id, &self.config.name, &bookmark)?;
        }
        Ok(())
    }
}

impl Applier<'_> {
    /// Matches `records` in one call and applies their outcomes in order.
    /// Only the first may fold merged records; its merge comes first.
    fn apply_run(&mut self, records: &[MappedRecord]) -> Result<(), Stop> {
        let Some(first) = records.first() else {
            return Ok(());
        };
        if !first.merged_ids.is_empty() {
            let survivor = &first.contact.external_id;
            let store = self.instance.state().store()?;
            let absorbed = store.absorb_merged(survivor, &first.merged_ids)?;
            if absorbed > 0 {
                tracing::info!(%survivor, merged = ?first.merged_ids, "merged at the source");
            }
            self.tally.merged += absorbed;
        }
        let mapped: Vec<&MappedContact> = records.iter().map(|r| &r.contact).collect();
        let outcomes = match self.config.object {
            SyncObject::Contacts => self.instance.match_keys_page(&mapped)?,
            SyncObject::Companies => self.instance.match_accounts_keys_page(&mapped)?,
        };
        // The ids this call created, by record, for outcomes naming `page:<i>`.
        let mut created = Vec::with_capacity(records.len());
        // Contacts to create, written together when the next outcome is not
        // a create (or at the end): the order of writes stays the order of
        // outcomes, and a page of new contacts is one batch.
        let mut pending = Vec::new();
        for (index, (record, outcome)) in records.iter().zip(outcomes).enumerate() {
            for error in &record.field_errors {
                let store = self.instance.state().store()?;
                store.record_error(self.run_id, &error_row(self.run_id, error))?;
            }
            if self.config.object == SyncObject::Contacts && matches!(outcome, MatchOutcome::Create)
            {
                pending.push(index);
                created.push(None);
                continue;
            }
            self.create_contacts(records, &mut pending, &mut created)?;
            let id = match self.config.object {
                SyncObject::Contacts => {
                    self.apply_contact(record, outcome, &created)?;
                    None
                }
                SyncObject::Companies => self.apply_account(record, outcome, &created)?,
            };
            created.push(id);
        }
        self.create_contacts(records, &mut pending, &mut created)
    }

    /// Creates the contacts of `records` at `pending` in one batch (X5), and
    /// links each to its company's account (S3); their ids go to `created`.
    fn create_contacts(
        &mut self,
        records: &[MappedRecord],
        pending: &mut Vec<usize>,
        created: &mut [Option<i64>],
    ) -> Result<(), Stop> {
        if pending.is_empty() {
            return Ok(());
        }
        let store = self.instance.state().store()?;
        let seen = Some(SeenBy {
            sync: &self.config.name,
            run_id: self.run_id,
        });
        let data: Vec<ContactData> = pending
            .iter()
            .map(|&i| contact_data(&records[i].contact))
            .collect();
        let batch: Vec<(&str, &ContactData)> = pending
            .iter()
            .zip(&data)
            .map(|(&i, data)| (records[i].contact.external_id.as_str(), data))
            .collect();
        let ids = store.create_many(&batch, seen)?;
        for (&i, id) in pending.iter().zip(ids) {
            self.tally.counts.created += 1;
            created[i] = Some(id);
            self.link_company(id, &records[i])?;
        }
        pending.clear();
        Ok(())
    }

    /// Links contact `id` to its company's account when the sync reads
    /// companies (S3).
    fn link_company(&mut self, id: i64, record: &MappedRecord) -> Result<(), Stop> {
        let store = self.instance.state().store()?;
        if self.config.links_companies() && store.link_account(id, &record.company_ids)? {
            self.tally.relinked += 1;
        }
        Ok(())
    }

    /// Applies one contact's update, link or skip (X1-X6), and links it to
    /// its company's account (S3). Creates are batched: see
    /// [`Applier::create_contacts`].
    fn apply_contact(
        &mut self,
        record: &MappedRecord,
        outcome: MatchOutcome,
        created: &[Option<i64>],
    ) -> Result<(), Stop> {
        let mapped = &record.contact;
        let store = self.instance.state().store()?;
        // Recorded with the write, so the sweep (X6) knows the record is still there.
        let seen = Some(SeenBy {
            sync: &self.config.name,
            run_id: self.run_id,
        });
        let id = match outcome {
            MatchOutcome::Create => unreachable!("apply_run batches every create"),
            MatchOutcome::Update(id) | MatchOutcome::Link(id) => {
                let id = destination_id(&id, created)?;
                match store.update(id, &mapped.external_id, &contact_data(mapped), seen)? {
                    Change::Updated => self.tally.counts.updated += 1,
                    Change::Unchanged => self.tally.counts.skipped += 1,
                }
                id
            }
            MatchOutcome::Skip(error) => {
                tracing::debug!(record = %mapped.external_id, "{}", error.message);
                store.record_error(self.run_id, &error_row(self.run_id, &error))?;
                self.tally.counts.failed += 1;
                // Even a skipped record is still at the source: its contact
                // (if linked) must not be swept as gone.
                store.mark_seen(
                    Records::Contacts,
                    &mapped.external_id,
                    &self.config.name,
                    self.run_id,
                )?;
                return Ok(());
            }
        };
        self.link_company(id, record)
    }

    /// Applies one company's outcome to the destination's accounts (S3).
    /// The id it created, if any.
    fn apply_account(
        &mut self,
        record: &MappedRecord,
        outcome: MatchOutcome,
        created: &[Option<i64>],
    ) -> Result<Option<i64>, Stop> {
        let mapped = &record.contact;
        let store = self.instance.state().store()?;
        let seen = Some(SeenBy {
            sync: &self.config.name,
            run_id: self.run_id,
        });
        let data = AccountData {
            name: mapped.name.clone(),
            domains: mapped.domains.clone(),
            fields: fields_json(mapped),
        };
        match outcome {
            MatchOutcome::Create => {
                let id = store.create_account(&mapped.external_id, &data, seen)?;
                self.tally.counts.created += 1;
                return Ok(Some(id));
            }
            MatchOutcome::Update(id) | MatchOutcome::Link(id) => {
                let id = destination_id(&id, created)?;
                match store.update_account(id, &mapped.external_id, &data, seen)? {
                    Change::Updated => self.tally.counts.updated += 1,
                    Change::Unchanged => self.tally.counts.skipped += 1,
                }
            }
            MatchOutcome::Skip(error) => {
                store.record_error(self.run_id, &error_row(self.run_id, &error))?;
                self.tally.counts.failed += 1;
                store.mark_seen(
                    Records::Accounts,
                    &mapped.external_id,
                    &self.config.name,
                    self.run_id,
                )?;
            }
        }
        Ok(None)
    }
}

/// The destination records a sync of `config`'s object writes.
fn records_of(config: &Config) -> Records {
    match config.object {
        SyncObject::Contacts => Records::Contacts,
        SyncObject::Companies => Records::Accounts,
    }
}

/// A destination id the component passed back: one the directory gave it,
/// or `page:<i>`, the record the `i`th of the same call created.
fn destination_id(id: &str, created: &[Option<i64>]) -> Result<i64> {
    if let Some(index) = id.strip_prefix("page:") {
        return index
            .parse::<usize>()
            .ok()
            .and_then(|i| created.get(i).copied().flatten())
            .with_context(|| {
                format!("the component named {id:?}, which no earlier record of the page created")
            });
    }
    id.parse()
        .with_context(|| format!("the component named an unknown destination record {id:?}"))
}

fn fields_json(mapped: &MappedContact) -> crate::store::Fields {
    mapped
        .fields
        .iter()
        .map(|f| (f.name.clone(), field_json(&f.value)))
        .collect()
}

fn contact_data(mapped: &MappedContact) -> ContactData {
    ContactData {
        name: mapped.name.clone(),
        emails: mapped.emails.clone(),
        phones: mapped.phones.clone(),
        fields: fields_json(mapped),
    }
}

/// A typed field value as the store keeps it (M4).
pub fn field_json(value: &FieldData) -> serde_json::Value {
    match value {
        FieldData::Text(text) | FieldData::Date(text) | FieldData::DateTime(text) => {
            serde_json::Value::String(text.clone())
        }
        FieldData::Number(number) => serde_json::Number::from_f64(*number)
            .map_or(serde_json::Value::Null, serde_json::Value::Number),
        FieldData::Boolean(flag) => serde_json::Value::Bool(*flag),
        FieldData::Multi(values) => values.clone().into(),
    }
}
