//! A sync into a CRM (`[destination]` naming HubSpot or Salesforce): one-way,
//! or two-way when some mapped field flows back (M6).
//!
//! A run reads what changed since the last run on the source and, two-way,
//! on the destination; pairs records through the stored links, then by email
//! (X1-X5, either way); asks the component what to write where
//! (`reconcile`); writes through the component (`write-records`); and stores
//! the links with the values both sides now agree on. Those agreed values are
//! what makes the next run read the sync's own writes as no change (no echo).
//!
//! The same pass syncs a config's company part (HubSpot companies <->
//! Salesforce Accounts, paired by domain instead of email) before its
//! people. Values that mean different things on each side are reconciled in
//! a side-neutral form: a handle normalised, an owner as its email, a
//! contact's company as the id of the company link both sides share.
//!
//! A run is not resumed page by page like a run into the store: its window
//! ends where it started and the bookmark only moves when it completes, so a
//! crashed or stopped run is simply run again. Links and agreed values commit
//! with each step of writes (what landed before a failure included), so what
//! was written is not written again; a create whose answer was lost is found
//! by email or domain instead of created twice, and one of a record without
//! either is recorded as an intent first and resolved by the next run.
//!
//! This file holds a run's course and its two sides; by subject: `pairing`
//! (records across the CRMs), `writes` (a step of writes and what commits
//! with it), `owners`, and `intents` (resolving what a killed run left).

use crate::auth::{AuthError, Credentials};
use crate::bindings::crmsync::sync::types::{
    Destination, ErrorCategory, ErrorScope, Failure, FieldData, FieldRule, FieldTarget, FieldValue,
    Filter, HubspotScope, HubspotSource, MappedPage, MappedRecord, OutgoingRecord, OutgoingValue,
    Owner, ReconcileInput, Reconciled, SalesforceDestination, SalesforceObject, SalesforceScope,
    SalesforceSource, SideState, Source, SyncError, TimeWindow, WriteOutcome,
};
use crate::config::{
    Config, CrmDestination, SourceSystem, SyncField, SyncObject, mapped_properties, read_mappings,
};
use crate::held::Held;
use crate::http::{Hooks, HttpLimits, HttpMode, HttpStats};
use crate::lease::{LeaseKeeper, LeaseWatch};
use crate::options::SyncOptions;
use crate::paging::Paging;
use crate::rate_limit::{AccountLimiters, HUBSPOT_SEARCH_DEFAULT};
use crate::report::SyncReport;
pub use crate::report::{WriteCounts, Written};
use crate::retry::{Retry, Retrying, Stop, check_lease, with_retries};
use crate::run_errors::{error_row, hidden_field};
use crate::runs::{end_run, errors_by_category, incremental_since, now_ms};
use crate::runtime::{HostState, Instance, Runtime};
use crate::store::{Bookmark, Counts, DynStore, Intent, Link, LinkSide, RunMode, Store};
use anyhow::Result;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

pub use crate::config::RECORD_TYPE;

/// The key of a contact's company among a pair's values: the id of the
/// company part's link both CRMs' companies share, so the value is the same
/// on both sides. Not a property name either CRM can have.
pub const COMPANY_KEY: &str = "@company";

/// Pairs reconciled and written per step; each step's links commit together.
const STEP: usize = 200;

/// How far apart the runner's clock and a CRM's may be, for windows that
/// compare the two.
const CLOCK_MARGIN_MS: i64 = 5 * 60 * 1000;

/// How long HubSpot's search may take to show a record just created (its
/// index lags by seconds): an earlier create not found after this never landed.
const HUBSPOT_INDEX_LAG_MS: i64 = 60 * 1000;

/// Emails or domains per look-up (the component's limit).
const HANDLES_PER_LOOKUP: usize = 100;

/// One CRM of the sync: its component instance, credentials and reads.
struct Side {
    system: SourceSystem,
    /// The pass's counters (both sides share them).
    stats: Arc<HttpStats>,
    base_url: String,
    instance: Instance,
    credentials: Credentials,
    /// What a read of this side maps: every field under its key (M4 types).
    mappings: Vec<FieldMapping>,
    link_side: LinkSide,
    /// People, or companies (a config's company part).
    object: SyncObject,
    /// People whose companies sync too: HubSpot reads their associations.
    with_companies: bool,
    /// The source side's filters (S4), applied to its reads, not to look-ups.
    filters: Vec<Filter>,
    /// The source side's list (S2): its full reads read the list's members.
    list_id: Option<String>,
    /// Whether the pass still holds the sync's lease.
    lease: LeaseWatch,
    /// Fields this side's queries refused mid-run (Salesforce field-level
    /// security): their keys and errors, for the pass to report and leave
    /// out on both sides.
    hidden: Vec<(String, SyncError)>,
}

use crate::bindings::crmsync::sync::types::FieldMapping;

mod intents;
mod owners;
mod pairing;
mod writes;
use owners::Owners;
use pairing::{destination_id, source_id};
use writes::{agreed_values, written_matches};

impl Retrying for Side {
    fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    fn system(&self) -> &SourceSystem {
        &self.system
    }

    fn before_attempt(&mut self) -> Result<(), Stop> {
        check_lease(&self.lease)
    }

    fn stats(&self) -> &HttpStats {
        &self.stats
    }

    fn rejected_generation(&mut self) -> Option<u64> {
        self.instance.state().take_rejected_generation()
    }
}

impl Side {
    /// A read of this side's people in `scope` (HubSpot's terms, carried
    /// over to Salesforce's).
    fn source(&self, scope: HubspotScope) -> Source {
        let fields = mapped_properties(&self.mappings);
        // A look-up finds a counterpart wherever it stands: a filter there
        // would make a second record of one that does not match.
        let filters = match scope {
            HubspotScope::Emails(_) | HubspotScope::Domains(_) => Vec::new(),
            _ => self.filters.clone(),
        };
        match &self.system {
            SourceSystem::Hubspot => {
                let scope = match (scope, &self.list_id) {
                    (HubspotScope::All, Some(list)) => HubspotScope::ListMembers(list.clone()),
                    (scope, _) => scope,
                };
                let read = HubspotSource {
                    base_url: self.base_url.clone(),
                    scope,
                    properties: fields,
                    filters,
                    with_companies: self.with_companies,
                };
                match self.object {
                    SyncObject::Contacts => Source::HubspotContacts(read),
                    SyncObject::Companies => Source::HubspotCompanies(read),
                }
            }
            SourceSystem::Salesforce {
                api_version,
                objects,
            } => Source::Salesforce(SalesforceSource {
                instance_url: self.base_url.clone(),
                api_version: api_version.clone(),
                objects: objects.clone(),
                scope: match scope {
                    HubspotScope::Modified(window) => SalesforceScope::Modified(window),
                    HubspotScope::Emails(emails) => SalesforceScope::Emails(emails),
                    HubspotScope::Domains(domains) => SalesforceScope::Domains(domains),
                    HubspotScope::Archived => SalesforceScope::Deleted,
                    _ => SalesforceScope::All,
                },
                fields,
                filters,
            }),
        }
    }

    /// Every record of `scope`.
    fn read(
        &mut self,
        options: &SyncOptions,
        scope: HubspotScope,
    ) -> Result<Vec<MappedRecord>, Stop> {
        let mut records = Vec::new();
        self.read_pages(options, scope, |page| {
            records.extend(page);
            Ok(())
        })?;
        Ok(records)
    }

    /// The records of `scope`, handed to `each` a page at a time.
    fn read_pages(
        &mut self,
        options: &SyncOptions,
        scope: HubspotScope,
        mut each: impl FnMut(Vec<MappedRecord>) -> Result<(), Stop>,
    ) -> Result<(), Stop> {
        let mut cursor: Option<String> = None;
        let mut paging = Paging::new(self.what());
        loop {
            if options.stop.load(Ordering::Relaxed) {
                return Err(Stop::Interrupted);
            }
            let page = self.fetch(options, &scope, cursor.as_deref())?;
            let next = paging
                .advance(page.records.len(), page.next_cursor.as_deref())
                .map_err(Stop::Classified)?;
            each(page.records)?;
            match next {
                Some(next) => cursor = Some(next),
                None => return Ok(()),
            }
        }
    }

    /// One page of `scope` from `cursor`, retried as it can be. A mapped
    /// field the query refuses as one it cannot see (field-level security
    /// the catalogue did not show) is left out of this side's reads and
    /// kept in [`Side::hidden`], and the page read again without it.
    fn fetch(
        &mut self,
        options: &SyncOptions,
        scope: &HubspotScope,
        cursor: Option<&str>,
    ) -> Result<MappedPage, Stop> {
        loop {
            let source = self.source(scope.clone());
            let mappings = self.mappings.clone();
            match with_retries(self, &options.retry, Retry::All, |side| {
                side.instance.fetch_mapped_page(&source, cursor, &mappings)
            }) {
                Err(Stop::Classified(error)) if hidden_field(&error, &mappings).is_some() => {
                    let field = hidden_field(&error, &mappings).expect("checked").to_owned();
                    tracing::warn!("{field}: {}", error.message);
                    let key =
                        self.mappings
                            .iter()
                            .find(|m| m.source == field)
                            .and_then(|m| match &m.target {
                                FieldTarget::Custom(key) => Some(key.clone()),
                                _ => None,
                            });
                    self.mappings.retain(|m| m.source != field);
                    let error = self
                        .instance
                        .classify_error(&Failure::FieldNotFound(field.clone()))?;
                    self.hidden.push((key.unwrap_or(field), error));
                }
                page => return page,
            }
        }
    }

    /// How long this side's reads may take to show a record just created:
    /// HubSpot's search index lags by seconds; SOQL reads what is committed.
    fn search_lag_ms(&self) -> i64 {
        match self.system {
            SourceSystem::Hubspot => HUBSPOT_INDEX_LAG_MS,
            SourceSystem::Salesforce { .. } => 0,
        }
    }

    /// What this side's records are, for messages.
    fn what(&self) -> &'static str {
        match (&self.system, self.object) {
            (SourceSystem::Hubspot, SyncObject::Contacts) => "HubSpot contacts",
            (SourceSystem::Hubspot, SyncObject::Companies) => "HubSpot companies",
            (SourceSystem::Salesforce { .. }, SyncObject::Contacts) => "Salesforce people",
            (SourceSystem::Salesforce { .. }, SyncObject::Companies) => "Salesforce Accounts",
        }
    }

    /// The records holding these handles (the counterpart look-up of X3):
    /// people by email, companies by domain.
    fn lookup(
        &mut self,
        options: &SyncOptions,
        handles: &[String],
    ) -> Result<Vec<MappedRecord>, Stop> {
        let mut found = Vec::new();
        for chunk in handles.chunks(HANDLES_PER_LOOKUP) {
            let scope = match self.object {
                SyncObject::Contacts => HubspotScope::Emails(chunk.to_vec()),
                SyncObject::Companies => HubspotScope::Domains(chunk.to_vec()),
            };
            found.extend(self.read(options, scope)?);
        }
        Ok(found)
    }

    /// Where records of `kind` are written on this side.
    fn destination(&self, kind: Option<&str>) -> Destination {
        match (&self.system, self.object) {
            (SourceSystem::Hubspot, SyncObject::Contacts) => {
                Destination::HubspotContacts(self.base_url.clone())
            }
            (SourceSystem::Hubspot, SyncObject::Companies) => {
                Destination::HubspotCompanies(self.base_url.clone())
            }
            (SourceSystem::Salesforce { api_version, .. }, object) => {
                Destination::Salesforce(SalesforceDestination {
                    instance_url: self.base_url.clone(),
                    api_version: api_version.clone(),
                    object: match (object, kind) {
                        (SyncObject::Companies, _) => SalesforceObject::Account,
                        (SyncObject::Contacts, Some("lead")) => SalesforceObject::Lead,
                        (SyncObject::Contacts, _) => SalesforceObject::Contact,
                    },
                })
            }
        }
    }

    /// The kind new records are created as: Salesforce Leads if this side
    /// syncs Leads (as HubSpot's connector does), else Contacts.
    fn create_kind(&self) -> Option<&'static str> {
        if self.object == SyncObject::Companies {
            // One object: Accounts need no kind to tell them apart.
            return None;
        }
        match &self.system {
            SourceSystem::Salesforce { objects, .. }
                if objects.contains(&SalesforceObject::Lead) =>
            {
                Some("lead")
            }
            SourceSystem::Salesforce { .. } => Some("contact"),
            SourceSystem::Hubspot => None,
        }
    }
}

/// The handles a record is matched by across the CRMs: a person's emails
/// (X3), a company's domains.
fn handles(record: &MappedRecord, object: SyncObject) -> &[String] {
    match object {
        SyncObject::Contacts => &record.contact.emails,
        SyncObject::Companies => &record.contact.domains,
    }
}

/// The Salesforce record type of a read record (`lead`/`contact`).
fn kind_of(record: &MappedRecord) -> Option<String> {
    record
        .contact
        .fields
        .iter()
        .find(|f| f.name == RECORD_TYPE)
        .and_then(|f| match &f.value {
            FieldData::Text(kind) => Some(kind.clone()),
            _ => None,
        })
}

/// Writes that go out together: creates or updates, of one Salesforce object.
type Batch = (bool, Option<String>);

/// A linked pair being reconciled this run.
#[derive(Default)]
struct Pair {
    link: Link,
    source: Option<MappedRecord>,
    destination: Option<MappedRecord>,
}

impl Pair {
    /// The handle the pair is known by (stored in the link's `email`).
    fn handle(&self, object: SyncObject) -> Option<String> {
        let first = |r: &Option<MappedRecord>| handles(r.as_ref()?, object).first().cloned();
        first(&self.source)
            .or_else(|| first(&self.destination))
            .or_else(|| self.link.email.clone())
    }
}

/// Runs one pass of a sync into a CRM; the caller holds the sync's lease.
/// Hands `store` back with the report.
pub fn run(
    runtime: &Runtime,
    config: &Config,
    crm: &CrmDestination,
    options: &SyncOptions,
    store: DynStore,
    keeper: LeaseKeeper,
    started: Instant,
) -> Result<(SyncReport, DynStore)> {
    let stats = Arc::new(HttpStats::default());
    let replay = matches!(options.http_mode, HttpMode::Replay(_));
    let env = |var: &str| std::env::var(var).ok();
    let credentials =
        |auth: &crate::config::AuthConfig, token_url: &str, table: &str| -> Result<Credentials> {
            if replay {
                return Ok(Credentials::none());
            }
            Credentials::from_config(auth, token_url, env)
                .map(|credentials| credentials.with_user_agent(&options.user_agent()))
                .map_err(|e| match e {
                    AuthError::MissingVariable { key, var } => anyhow::anyhow!(
                        "{}: environment variable {var} is not set",
                        key.replacen("source", table, 1)
                    ),
                    other => other.into(),
                })
        };
    let source_credentials = credentials(&config.source.auth, &config.token_url(), "source")?;
    let destination_credentials = credentials(&crm.auth, &crm.token_url(), "destination")?;
    let limits = HttpLimits {
        max_response_bytes: config.source.max_response_bytes,
        ..options.http_limits
    };
    let hooks = |origin: &crate::config::Origin, credentials: &Credentials, limiters| {
        Hooks::new(
            origin.clone(),
            options.http_mode.clone(),
            credentials.bearer(),
            limits,
            stats.clone(),
        )
        .with_limiters(limiters)
        .with_user_agent(&options.user_agent())
    };
    let source_limiters = options.limiters.clone().unwrap_or_else(|| {
        AccountLimiters::new(config.source.rate_limit, config.source.search_rate_limit)
    });
    let destination_limiters = AccountLimiters::new(
        crm.rate_limit,
        crm.rate_limit.map(|_| HUBSPOT_SEARCH_DEFAULT),
    );
    // The component reads no destination directory here (both sides are
    // CRMs, read and written through the API): its instances need no store.
    let instance = |hooks| -> Result<Instance> {
        runtime.instantiate(HostState::without_store(hooks, runtime.sandbox()))
    };
    let is_salesforce = |s: &SourceSystem| matches!(s, SourceSystem::Salesforce { .. });
    // People of a config with a company part carry their company across.
    let company_part = match crm.object {
        SyncObject::Contacts => config.companies.as_ref().map(|part| part.name.clone()),
        SyncObject::Companies => None,
    };
    let mut source = Side {
        system: config.source.system.clone(),
        stats: stats.clone(),
        base_url: config.source.base_url.clone(),
        instance: instance(hooks(
            &config.source.origin,
            &source_credentials,
            source_limiters,
        ))?,
        credentials: source_credentials,
        mappings: config.mappings.clone(),
        link_side: LinkSide::Source,
        object: crm.object,
        with_companies: company_part.is_some(),
        filters: config.filters.clone(),
        list_id: config.source.list_id.clone(),
        lease: keeper.watch(),
        hidden: Vec::new(),
    };
    let mut destination = Side {
        system: crm.system.clone(),
        stats: stats.clone(),
        base_url: crm.base_url.clone(),
        instance: instance(hooks(
            &crm.origin,
            &destination_credentials,
            destination_limiters,
        ))?,
        credentials: destination_credentials,
        mappings: read_mappings(
            crm,
            |f| &f.destination,
            &config.source.system,
            is_salesforce(&crm.system),
        ),
        link_side: LinkSide::Destination,
        object: crm.object,
        with_companies: company_part.is_some(),
        filters: Vec::new(),
        list_id: None,
        lease: keeper.watch(),
        hidden: Vec::new(),
    };

    let fingerprint = fingerprint(config, crm, company_part.is_some());
    // A cassette is a fixed snapshot with no notion of "since": replays read it whole.
    // A list's members are re-read whole: membership is no search filter,
    // and a contact that left the list must stop syncing.
    let incremental = !options.full && !replay && config.source.list_id.is_none();
    let since_ms = incremental_since(&*store, config, &fingerprint, incremental)?;
    if let Some(old) = store.interrupted_run(&config.name)? {
        // Its window is read again in full by this run: nothing is lost.
        store.finish_run(
            old.id,
            Some("interrupted; its window is read again by the next run"),
        )?;
    }
    let mode = RunMode::since(since_ms);
    let run = store.start_run(&config.name, mode, now_ms())?;
    store.note_runner(run.id, &options.runner)?;
    tracing::info!(
        run = run.id,
        ?mode,
        "sync {:?} into {:?}",
        config.name,
        crm.base_url
    );
    let mut pass = Bridge {
        config,
        crm,
        owners: Owners::default(),
        company_part,
        options,
        store: &*store,
        run_id: run.id,
        counts: Counts::default(),
        written: Written::default(),
        stopped_syncing: 0,
        read_ids: None,
        merged: 0,
        lease: keeper.watch(),
        blocked: HashSet::new(),
        step_intents: HashMap::new(),
        settled_intents: Vec::new(),
    };
    let scope = match mode {
        RunMode::Incremental { since_ms } => HubspotScope::Modified(TimeWindow {
            since: since_ms as u64,
            until: run.started_ms.max(0) as u64,
        }),
        RunMode::Full => HubspotScope::All,
    };
    let outcome = pass.run(&mut source, &mut destination, scope);
    // Completed: the next window starts where this one ended.
    if outcome.is_ok() && pass.blocked.is_empty() {
        store.complete_run(
            run.id,
            &config.name,
            &Bookmark {
                modified_ms: run.started_ms,
                fingerprint,
            },
        )?;
    } else if outcome.is_ok() {
        // Creates held back for an earlier run's intent: the bookmark stays,
        // so the next run reads this window again, and those records with it.
        store.finish_run(run.id, None)?;
    }
    let (status, error) = end_run(&*store, config, run.id, outcome)?;
    store.checkpoint(run.id, None, &pass.counts, None)?;
    let errors_by_category = errors_by_category(&*store, run.id)?;
    keeper.release(&*store)?;
    let report = SyncReport {
        sync: config.name.clone(),
        run_id: run.id,
        status: status.to_owned(),
        resumed: false,
        mode: mode.name().to_owned(),
        counts: pass.counts,
        errors_by_category,
        requests: stats.sent.load(Ordering::Relaxed),
        rate_limited: stats.rate_limited.load(Ordering::Relaxed),
        retries: stats.retries.load(Ordering::Relaxed),
        elapsed_ms: started.elapsed().as_millis() as u64,
        stopped_syncing: pass.stopped_syncing,
        merged: pass.merged,
        error,
        companies: None,
        written: Some(pass.written),
    };
    Ok((report, store))
}

/// What the bookmark was read under: both CRMs, the fields, the filters and
/// list, and whether contacts carry their company. Another one makes the next
/// run full, so a newly mapped field (or a newly linked company) is filled
/// everywhere.
fn fingerprint(config: &Config, crm: &CrmDestination, with_companies: bool) -> String {
    let fields: Vec<String> = crm
        .fields
        .iter()
        .map(|f| {
            format!(
                "{}>{}:{:?}:{:?}:{:?}{}",
                f.source,
                f.destination,
                f.value_type,
                f.direction,
                f.conflict,
                if f.owner { ":owner" } else { "" }
            )
        })
        .collect();
    format!(
        "{} {:?} -> {} {:?} {} filters={:?} list={:?}{}",
        config.source.base_url,
        config.source.system,
        crm.base_url,
        crm.system,
        fields.join(","),
        config.filters,
        config.source.list_id,
        if with_companies {
            " with=companies"
        } else {
            ""
        }
    )
}

/// One pass's state.
struct Bridge<'a> {
    config: &'a Config,
    crm: &'a CrmDestination,
    /// Both CRMs' owners, when a field carries owners across.
    owners: Owners,
    /// The company part's sync name, when people carry their company.
    company_part: Option<String>,
    options: &'a SyncOptions,
    store: &'a dyn Store,
    run_id: i64,
    counts: Counts,
    written: Written,
    /// Links whose source record stopped matching, or was not read by a
    /// complete full run (X6).
    stopped_syncing: u64,
    /// A full run's source records: those it read, and those it made at the
    /// source (a destination record's counterpart). Links of any other
    /// source record stop syncing when the run completes.
    read_ids: Option<HashSet<String>>,
    /// Links moved to a merge's or a lead conversion's survivor (X8).
    merged: u64,
    /// Whether the pass still holds the sync's lease.
    lease: LeaseWatch,
    /// Records whose create a crashed run may have made (an unresolved
    /// intent), by their id on the other side: not created again this run.
    blocked: HashSet<String>,
    /// This step's recorded intents, by (pair index, side created on).
    step_intents: HashMap<(usize, LinkSide), i64>,
    /// Intents answered this step, forgotten when its links commit.
    settled_intents: Vec<i64>,
}

impl Bridge<'_> {
    /// Streams the source's pages past the destination's changes (held in
    /// a temporary database, see [`Held`]), writing and committing as it
    /// goes; then the destination records no source record took, a step at
    /// a time.
    fn run(
        &mut self,
        source: &mut Side,
        destination: &mut Side,
        scope: HubspotScope,
    ) -> Result<(), Stop> {
        let two_way = self.crm.two_way();
        let mut dropped = self.check_fields(source)?;
        dropped.extend(self.check_fields(destination)?);
        if self
            .crm
            .fields
            .iter()
            .any(|f| f.owner && !dropped.contains(&f.source))
        {
            match self.read_owners(source, destination)? {
                Some(owners) => self.owners = owners,
                // Unreadable users: owner fields sit the run out, on both sides.
                None => dropped.extend(
                    self.crm
                        .fields
                        .iter()
                        .filter(|f| f.owner)
                        .map(|f| f.source.clone()),
                ),
            }
        }
        for side in [&mut *source, &mut *destination] {
            side.mappings.retain(
                |m| !matches!(&m.target, FieldTarget::Custom(key) if dropped.contains(key)),
            );
        }
        self.resolve_intents(source, destination)?;
        // The destination's changes wait for their source records in a
        // temporary database, not in memory, whatever the destination's size.
        let mut held = Held::new()?;
        if two_way {
            let object = self.crm.object;
            destination.read_pages(self.options, scope.clone(), |page| {
                self.counts.seen += page.len() as u64;
                self.follow_merges(&mut source.instance, LinkSide::Destination, &page)?;
                held.add(&page, |r| handles(r, object))?;
                Ok(())
            })?;
        }
        let mut rules: Vec<FieldRule> = self
            .crm
            .fields
            .iter()
            .filter(|f| !dropped.contains(&f.source))
            .map(|f| FieldRule {
                name: f.source.clone(),
                direction: f.direction,
                conflict: f.conflict,
            })
            .chain(self.company_part.as_ref().map(|_| FieldRule {
                name: COMPANY_KEY.to_owned(),
                direction: self.crm.direction,
                conflict: self.crm.conflict,
            }))
            .collect();
        // A full read sees every live source record: links it does not
        // read at all stop syncing when it completes (X6).
        self.read_ids = matches!(scope, HubspotScope::All).then(HashSet::new);
        let mut cursor: Option<String> = None;
        let mut paging = Paging::new(source.what());
        loop {
            if self.options.stop.load(Ordering::Relaxed) {
                return Err(Stop::Interrupted);
            }
            check_lease(&self.lease)?;
            let page = source.fetch(self.options, &scope, cursor.as_deref())?;
            let next = paging
                .advance(page.records.len(), page.next_cursor.as_deref())
                .map_err(Stop::Classified)?;
            self.counts.pages += 1;
            self.counts.seen += page.records.len() as u64;
            self.follow_merges(&mut source.instance, LinkSide::Source, &page.records)?;
            for id in &page.excluded {
                self.stopped_syncing += u64::from(self.store.set_link_syncing(
                    &self.config.name,
                    LinkSide::Source,
                    id,
                    false,
                )?);
            }
            if let Some(ids) = &mut self.read_ids {
                ids.extend(page.records.iter().map(|r| r.contact.external_id.clone()));
            }
            let pairs = self.pair_source_page(destination, page.records, &mut held)?;
            self.apply(source, destination, &mut rules, pairs)?;
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        // The destination records no source record took, a step at a time.
        loop {
            let rest = held.take_rest(STEP)?;
            if rest.is_empty() {
                break;
            }
            let pairs = self.pair_held(source, rest, two_way)?;
            self.apply(source, destination, &mut rules, pairs)?;
        }
        if let Some(ids) = self.read_ids.take() {
            self.stopped_syncing += self.store.stop_syncing_unread(&self.config.name, &ids)?;
        }
        self.stop_syncing_deleted(source)?;
        if two_way {
            self.stop_syncing_deleted(destination)?;
        }
        Ok(())
    }

    /// X6 after a completed run: pairs whose record one side deleted
    /// (HubSpot's archived listing, Salesforce's recycle bin) stop syncing
    /// both ways, kept; nothing is deleted on the other side. Advisory, as in
    /// a sync into the store: a side that cannot list its deletions only
    /// delays this.
    fn stop_syncing_deleted(&mut self, side: &mut Side) -> Result<(), Stop> {
        let link_side = side.link_side;
        let read = side.read_pages(self.options, HubspotScope::Archived, |page| {
            for record in &page {
                self.stopped_syncing += u64::from(self.store.set_link_syncing(
                    &self.config.name,
                    link_side,
                    &record.contact.external_id,
                    false,
                )?);
            }
            Ok(())
        });
        match read {
            Err(Stop::Classified(error)) => {
                tracing::warn!("deleted records not read: {}", error.message);
                Ok(())
            }
            other => other,
        }
    }

    /// E6 on one side: a mapped field the CRM does not have (deleted or
    /// renamed) is reported and left out of the run, on both sides: read as
    /// blank, it would clear the other side's values. Returns the keys of the
    /// fields left out. Advisory, as in a sync into the store: a catalogue
    /// that cannot be read leaves everything in.
    fn check_fields(&mut self, side: &mut Side) -> Result<HashSet<String>, Stop> {
        let mut catalogues = vec![side.source(HubspotScope::All)];
        if let Source::Salesforce(all) = &catalogues[0] {
            // Each object's own fields: a Lead's `Company` is no Contact's.
            catalogues = all
                .objects
                .iter()
                .map(|object| {
                    Source::Salesforce(SalesforceSource {
                        objects: vec![*object],
                        ..all.clone()
                    })
                })
                .collect();
        }
        let mut known: HashSet<String> = HashSet::new();
        for catalogue in &catalogues {
            match with_retries(side, &self.options.retry, Retry::All, |side| {
                side.instance.list_properties(catalogue)
            }) {
                Ok(definitions) => known.extend(definitions.into_iter().map(|d| d.name)),
                Err(Stop::Classified(error)) => {
                    tracing::warn!("mapped fields not checked: {}", error.message);
                    return Ok(HashSet::new());
                }
                Err(stop) => return Err(stop),
            }
        }
        let mut dropped = HashSet::new();
        for field in &self.crm.fields {
            let name = match side.link_side {
                LinkSide::Source => &field.source,
                LinkSide::Destination => &field.destination,
            };
            if !known.contains(name) {
                let error = side
                    .instance
                    .classify_error(&Failure::FieldNotFound(name.clone()))?;
                self.store
                    .record_error(self.run_id, &error_row(self.run_id, &error))?;
                dropped.insert(field.source.clone());
            }
        }
        Ok(dropped)
    }

    /// Reconciles and writes `pairs` a step at a time.
    fn apply(
        &mut self,
        source: &mut Side,
        destination: &mut Side,
        rules: &mut Vec<FieldRule>,
        pairs: Vec<Pair>,
    ) -> Result<(), Stop> {
        self.leave_out_hidden(source, destination, rules)?;
        let mut pairs = pairs.into_iter().peekable();
        while pairs.peek().is_some() {
            check_lease(&self.lease)?;
            let step: Vec<Pair> = pairs.by_ref().take(STEP).collect();
            self.apply_step(source, destination, rules, step)?;
        }
        Ok(())
    }

    /// E6 for the fields either side's queries refused since the last step:
    /// each reported once and left out of the rest of the run on both sides
    /// (read as blank on one side, it would clear the other's values).
    fn leave_out_hidden(
        &mut self,
        source: &mut Side,
        destination: &mut Side,
        rules: &mut Vec<FieldRule>,
    ) -> Result<(), Stop> {
        let hidden: Vec<(String, SyncError)> = source
            .hidden
            .drain(..)
            .chain(destination.hidden.drain(..))
            .collect();
        for (key, error) in hidden {
            self.store
                .record_error(self.run_id, &error_row(self.run_id, &error))?;
            rules.retain(|r| r.name != key);
            for side in [&mut *source, &mut *destination] {
                side.mappings
                    .retain(|m| !matches!(&m.target, FieldTarget::Custom(k) if *k == key));
            }
        }
        Ok(())
    }

    /// A pair that `side` stopped syncs again: that side read its record
    /// live (and matching) again.
    fn resume(&mut self, link: &mut Link, side: LinkSide) -> Result<()> {
        let id = match side {
            LinkSide::Source => &link.source_id,
            LinkSide::Destination => &link.destination_id,
        };
        if let Some(id) = id {
            self.store
                .set_link_syncing(&self.config.name, side, id, true)?;
        }
        link.syncing = true;
        link.stopped_at = None;
        Ok(())
    }

    /// Records a record's failure (it is not synced; the run goes on).
    fn reject(&mut self, error: SyncError) -> Result<()> {
        self.counts.failed += 1;
        self.store
            .record_error(self.run_id, &error_row(self.run_id, &error))
    }
}

/// A record's failure (or one field's, by `scope`): no retry helps.
fn record_error(
    category: ErrorCategory,
    scope: ErrorScope,
    id: Option<&str>,
    field: &str,
    message: String,
    resolution: String,
) -> SyncError {
    SyncError {
        category,
        retryable: false,
        retry_after_ms: None,
        scope,
        record_id: id.map(str::to_owned),
        field: Some(field.to_owned()),
        message,
        resolution,
    }
}

#[cfg(test)]
mod tests {
    use super::writes::agreed_json;
    use super::*;

    #[test]
    fn agreed_values_keep_their_type_through_the_store() {
        let values = vec![
            FieldValue {
                name: "a".into(),
                value: FieldData::Number(1.5),
            },
            FieldValue {
                name: "b".into(),
                value: FieldData::Multi(vec!["x".into(), "y".into()]),
            },
            FieldValue {
                name: "c".into(),
                value: FieldData::Boolean(false),
            },
            FieldValue {
                name: "d".into(),
                value: FieldData::DateTime("2024-06-01T00:00:00.000Z".into()),
            },
        ];
        let stored = serde_json::to_string(&agreed_json(&values)).unwrap();
        let read: BTreeMap<String, serde_json::Value> = serde_json::from_str(&stored).unwrap();
        assert_eq!(agreed_values(&read), values);
    }
}
