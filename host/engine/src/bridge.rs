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
use crate::store::{Bookmark, ContactStore, Counts, Intent, Link, LinkSide, RunMode};
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

impl Retrying for Side {
    fn credentials(&mut self) -> &mut Credentials {
        &mut self.credentials
    }

    fn system(&self) -> &SourceSystem {
        &self.system
    }

    fn before_attempt(&mut self) -> Result<(), Stop> {
        check_lease(&self.lease)
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
pub fn run(
    runtime: &Runtime,
    config: &Config,
    crm: &CrmDestination,
    options: &SyncOptions,
    store: ContactStore,
    keeper: &LeaseKeeper,
    started: Instant,
) -> Result<SyncReport> {
    let stats = Arc::new(HttpStats::default());
    let replay = matches!(options.http_mode, HttpMode::Replay(_));
    let env = |var: &str| std::env::var(var).ok();
    let credentials =
        |auth: &crate::config::AuthConfig, token_url: &str, table: &str| -> Result<Credentials> {
            if replay {
                return Ok(Credentials::none());
            }
            Credentials::from_config(auth, token_url, env).map_err(|e| match e {
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
    };
    let source_limiters = options.limiters.clone().unwrap_or_else(|| {
        AccountLimiters::new(config.source.rate_limit, config.source.search_rate_limit)
    });
    let destination_limiters = AccountLimiters::new(
        crm.rate_limit,
        crm.rate_limit.map(|_| HUBSPOT_SEARCH_DEFAULT),
    );
    let instance = |hooks| -> Result<Instance> {
        runtime.instantiate(HostState::new(
            hooks,
            ContactStore::open_in_memory()?,
            runtime.sandbox(),
        ))
    };
    let is_salesforce = |s: &SourceSystem| matches!(s, SourceSystem::Salesforce { .. });
    // People of a config with a company part carry their company across.
    let company_part = match crm.object {
        SyncObject::Contacts => config.companies.as_ref().map(|part| part.name.clone()),
        SyncObject::Companies => None,
    };
    let mut source = Side {
        system: config.source.system.clone(),
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
    let since_ms = incremental_since(&store, config, &fingerprint, incremental)?;
    if let Some(old) = store.interrupted_run(&config.name)? {
        // Its window is read again in full by this run: nothing is lost.
        store.finish_run(
            old.id,
            Some("interrupted; its window is read again by the next run"),
        )?;
    }
    let mode = RunMode::since(since_ms);
    let run = store.start_run(&config.name, mode, now_ms())?;
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
        store: &store,
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
    let (status, error) = end_run(&store, config, run.id, outcome)?;
    store.checkpoint(run.id, None, &pass.counts, None)?;
    Ok(SyncReport {
        sync: config.name.clone(),
        run_id: run.id,
        status: status.to_owned(),
        resumed: false,
        mode: mode.name().to_owned(),
        counts: pass.counts,
        errors_by_category: errors_by_category(&store, run.id)?,
        requests: stats.sent.load(Ordering::Relaxed),
        elapsed_ms: started.elapsed().as_millis() as u64,
        stopped_syncing: pass.stopped_syncing,
        merged: pass.merged,
        error,
        companies: None,
        written: Some(pass.written),
    })
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

/// The owners of both CRMs, by id and by email: an owner field's value is
/// the owner's email while reconciled, so it means the same on both sides.
#[derive(Default)]
struct Owners {
    /// Per side (source, destination): owner id -> email.
    email: [HashMap<String, String>; 2],
    /// Per side: email -> owner id (the first owner listed with it).
    id: [HashMap<String, String>; 2],
}

impl Owners {
    fn index(side: LinkSide) -> usize {
        match side {
            LinkSide::Source => 0,
            LinkSide::Destination => 1,
        }
    }

    fn add(&mut self, side: LinkSide, owners: Vec<Owner>) {
        let i = Self::index(side);
        for owner in owners {
            if let Some(email) = owner.email {
                self.email[i].insert(owner.id.clone(), email.clone());
                self.id[i].entry(email).or_insert(owner.id);
            }
        }
    }

    /// An owner id of `side` as the email both sides know it by; an owner
    /// with no email stays its id (it cannot be carried across).
    fn email_of(&self, side: LinkSide, id: &str) -> String {
        self.email[Self::index(side)]
            .get(id)
            .cloned()
            .unwrap_or_else(|| id.to_owned())
    }

    /// The owner of `side` with this email.
    fn id_of(&self, side: LinkSide, email: &str) -> Option<&String> {
        self.id[Self::index(side)].get(&email.to_lowercase())
    }
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
    store: &'a ContactStore,
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
                self.follow_merges(&page, LinkSide::Destination)?;
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
            self.follow_merges(&page.records, LinkSide::Source)?;
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

    /// Creates a crashed run recorded and never linked (see
    /// [`crate::store::Intent`]): each side's records modified since the
    /// oldest are read once, and a record not linked to anything whose values
    /// are those the create wrote is linked as the pair's, with the values
    /// both sides then agreed on. One not found is forgotten once the
    /// side's reads have had time to show it (the create never landed: at
    /// once for Salesforce, after a minute for HubSpot's search index), and
    /// until then its record is not created again and the run keeps its
    /// bookmark, so the next run reads that record again.
    fn resolve_intents(&mut self, source: &mut Side, destination: &mut Side) -> Result<(), Stop> {
        let intents = self.store.intents(&self.config.name)?;
        for side in [source, destination] {
            let mine: Vec<&Intent> = intents
                .iter()
                .filter(|i| i.side == side.link_side)
                .collect();
            let Some(oldest) = mine.iter().map(|i| i.created_ms).min() else {
                continue;
            };
            let other_id = |intent: &Intent| match intent.side {
                LinkSide::Destination => intent.link.source_id.clone(),
                LinkSide::Source => intent.link.destination_id.clone(),
            };
            let window = TimeWindow {
                since: (oldest - CLOCK_MARGIN_MS).max(0) as u64,
                until: (now_ms() + CLOCK_MARGIN_MS).max(0) as u64,
            };
            let recent = match side.read(self.options, HubspotScope::Modified(window)) {
                Ok(records) => records,
                Err(Stop::Classified(error)) => {
                    tracing::warn!("earlier creates not checked: {}", error.message);
                    self.blocked.extend(mine.iter().filter_map(|i| other_id(i)));
                    continue;
                }
                Err(stop) => return Err(stop),
            };
            let mut claimed: HashSet<&str> = HashSet::new();
            for intent in mine {
                let mut found = None;
                for record in &recent {
                    let id = record.contact.external_id.as_str();
                    if !claimed.contains(id)
                        && written_matches(&intent.written, record)
                        && self
                            .store
                            .link(&self.config.name, side.link_side, id)?
                            .is_none()
                    {
                        found = Some(id);
                        break;
                    }
                }
                let intent_id = intent.id.expect("a recorded intent");
                match found {
                    Some(id) => {
                        claimed.insert(id);
                        let mut link = intent.link.clone();
                        match side.link_side {
                            LinkSide::Destination => link.destination_id = Some(id.to_owned()),
                            LinkSide::Source => link.source_id = Some(id.to_owned()),
                        }
                        tracing::info!(
                            "linked {id}, created by an interrupted run for {}",
                            other_id(intent).unwrap_or_default()
                        );
                        self.store.begin()?;
                        self.store.save_link(&self.config.name, &link)?;
                        self.store.forget_intent(intent_id)?;
                        self.store.commit()?;
                    }
                    None if now_ms() - intent.created_ms > side.search_lag_ms() => {
                        self.store.forget_intent(intent_id)?;
                    }
                    None => self.blocked.extend(other_id(intent)),
                }
            }
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

    /// Both CRMs' owners; `None` (with the error recorded) when one side's
    /// cannot be read, such as a HubSpot token without the owners scope.
    fn read_owners(
        &mut self,
        source: &mut Side,
        destination: &mut Side,
    ) -> Result<Option<Owners>, Stop> {
        let mut owners = Owners::default();
        for side in [source, destination] {
            let read = side.source(HubspotScope::All);
            match with_retries(side, &self.options.retry, Retry::All, |side| {
                side.instance.list_owners(&read)
            }) {
                Ok(list) => owners.add(side.link_side, list),
                Err(Stop::Classified(mut error)) => {
                    error.scope = ErrorScope::Field;
                    error.message = format!(
                        "owners were not synced this run: {} (owner fields need the CRM's users)",
                        error.message
                    );
                    self.store
                        .record_error(self.run_id, &error_row(self.run_id, &error))?;
                    return Ok(None);
                }
                Err(stop) => return Err(stop),
            }
        }
        Ok(Some(owners))
    }

    /// Owner fields in a step's plans: each email written becomes the
    /// owner's id on the side it goes to. An owner that side has no user for
    /// (or a cleared one: records always have an owner) is not written, is
    /// reported on the field, and stays as agreed before, so it is no change
    /// to echo back.
    fn place_owners(&mut self, step: &[Pair], plans: &mut [Reconciled]) -> Result<()> {
        let owner_fields: Vec<&SyncField> = self.crm.fields.iter().filter(|f| f.owner).collect();
        if owner_fields.is_empty() {
            return Ok(());
        }
        for (pair, plan) in step.iter().zip(plans.iter_mut()) {
            let base = agreed_values(&pair.link.agreed);
            for towards in [LinkSide::Destination, LinkSide::Source] {
                let values = match towards {
                    LinkSide::Destination => &mut plan.to_destination,
                    LinkSide::Source => &mut plan.to_source,
                };
                let mut unplaced = Vec::new();
                values.retain_mut(|value| {
                    let Some(field) = owner_fields.iter().find(|f| f.source == value.name) else {
                        return true;
                    };
                    let email = match &value.value {
                        Some(FieldData::Text(email)) => email.clone(),
                        _ => {
                            unplaced.push((field.source.clone(), None));
                            return false;
                        }
                    };
                    match self.owners.id_of(towards, &email) {
                        Some(id) => {
                            value.value = Some(FieldData::Text(id.clone()));
                            true
                        }
                        None => {
                            unplaced.push((field.source.clone(), Some(email)));
                            false
                        }
                    }
                });
                for (key, email) in unplaced {
                    plan.agreed.retain(|v| v.name != key);
                    plan.agreed
                        .extend(base.iter().filter(|v| v.name == key).cloned());
                    let Some(email) = email else { continue };
                    let record = match towards {
                        LinkSide::Destination => pair.link.source_id.clone().or(source_id(pair)),
                        LinkSide::Source => {
                            pair.link.destination_id.clone().or(destination_id(pair))
                        }
                    };
                    let field = self.field_name(&key, towards);
                    let system = match (towards, &self.crm.system, &self.config.source.system) {
                        (LinkSide::Destination, SourceSystem::Hubspot, _)
                        | (LinkSide::Source, _, SourceSystem::Hubspot) => "HubSpot",
                        _ => "Salesforce",
                    };
                    let error = record_error(
                        ErrorCategory::Validation,
                        ErrorScope::Field,
                        record.as_deref(),
                        &field,
                        format!(
                            "the owner of record {} ({email}) is no {system} user, so {field} was \
                             not changed",
                            record.as_deref().unwrap_or("?")
                        ),
                        format!(
                            "Owners are matched by email: give the {system} user the email \
                             {email}, or change the record's owner."
                        ),
                    );
                    self.store
                        .record_error(self.run_id, &error_row(self.run_id, &error))?;
                }
            }
        }
        Ok(())
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

    /// X8: a Lead converted into a Contact (or HubSpot contacts merged) moves
    /// the link to the survivor, so its counterpart is updated, not doubled.
    fn follow_merges(&mut self, records: &[MappedRecord], side: LinkSide) -> Result<()> {
        for record in records {
            for merged in &record.merged_ids {
                let kind = kind_of(record);
                if self.store.relink(
                    &self.config.name,
                    side,
                    merged,
                    &record.contact.external_id,
                    kind.as_deref(),
                )? {
                    self.merged += 1;
                }
            }
        }
        Ok(())
    }

    /// Pairs a page of source records: by stored link (X1, X2), then by
    /// email with an unlinked destination record read this run (X3), then by
    /// email looked up on the destination; a record left alone gets its
    /// counterpart created (X5) unless it has no email to match it by later
    /// (E1), or its email's record is linked to another (X4, E2).
    fn pair_source_page(
        &mut self,
        destination: &mut Side,
        records: Vec<MappedRecord>,
        held: &mut Held,
    ) -> Result<Vec<Pair>, Stop> {
        let sync = self.config.name.clone();
        let mut pairs = Vec::new();
        let mut alone = Vec::new();
        for record in records {
            if let Some(mut link) =
                self.store
                    .link(&sync, LinkSide::Source, &record.contact.external_id)?
            {
                match (link.syncing, link.stopped_at) {
                    (true, _) => {}
                    // Its destination record was deleted: nothing to write to.
                    (false, Some(LinkSide::Destination)) => {
                        self.counts.skipped += 1;
                        continue;
                    }
                    // Read matching again: it syncs again.
                    (false, _) => self.resume(&mut link, LinkSide::Source)?,
                }
                let counterpart = match link.destination_id.as_deref() {
                    Some(id) => held.take(id)?,
                    None => None,
                };
                pairs.push(Pair {
                    link,
                    source: Some(record),
                    destination: counterpart,
                });
                continue;
            }
            let mut counterpart = None;
            for id in held.with_handles(handles(&record, self.crm.object))? {
                if self
                    .store
                    .link(&sync, LinkSide::Destination, &id)?
                    .is_none()
                {
                    counterpart = held.take(&id)?;
                    break;
                }
            }
            match counterpart {
                Some(counterpart) => pairs.push(new_pair(Some(record), Some(counterpart))),
                None => alone.push(record),
            }
        }
        // A counterpart already paired on this page is taken, as a linked one is.
        let taken: HashSet<String> = pairs
            .iter()
            .filter_map(|p| p.link.destination_id.clone())
            .collect();
        let found = self.match_elsewhere(destination, alone, LinkSide::Source, taken)?;
        for pair in &found {
            if let Some(id) = &pair.link.destination_id {
                held.take(id)?;
            }
        }
        pairs.extend(found);
        Ok(pairs)
    }

    /// The destination records no source record took: their links, or
    /// (two-way) a counterpart looked up on the source or created there.
    fn pair_held(
        &mut self,
        source: &mut Side,
        records: Vec<MappedRecord>,
        two_way: bool,
    ) -> Result<Vec<Pair>, Stop> {
        let sync = self.config.name.clone();
        let mut pairs = Vec::new();
        let mut alone = Vec::new();
        for record in records {
            match self
                .store
                .link(&sync, LinkSide::Destination, &record.contact.external_id)?
            {
                // Read live again after its deletion (restored): it syncs again.
                Some(mut link) if link.stopped_at == Some(LinkSide::Destination) => {
                    self.resume(&mut link, LinkSide::Destination)?;
                    pairs.push(Pair {
                        link,
                        source: None,
                        destination: Some(record),
                    });
                }
                // Its source record no longer syncs: nothing flows back to it.
                Some(link) if !link.syncing => self.counts.skipped += 1,
                Some(link) => pairs.push(Pair {
                    link,
                    source: None,
                    destination: Some(record),
                }),
                None => alone.push(record),
            }
        }
        if two_way {
            pairs.extend(self.match_elsewhere(
                source,
                alone,
                LinkSide::Destination,
                HashSet::new(),
            )?);
        }
        Ok(pairs)
    }

    /// Records of `side` with no counterpart among the records read: looks
    /// their emails up on `other`. `taken` are `other`'s records already
    /// paired this run.
    fn match_elsewhere(
        &mut self,
        other: &mut Side,
        records: Vec<MappedRecord>,
        side: LinkSide,
        mut taken: HashSet<String>,
    ) -> Result<Vec<Pair>, Stop> {
        let object = self.crm.object;
        // Sorted: the same records make the same requests (replayable, testable).
        let wanted: Vec<String> = records
            .iter()
            .filter_map(|r| handles(r, object).first().cloned())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let found = if wanted.is_empty() {
            Vec::new()
        } else {
            other.lookup(self.options, &wanted)?
        };
        // A look-up by domain finds every Website containing it: only exact
        // (normalised) handles count.
        let mut by_handle: HashMap<&str, &MappedRecord> = HashMap::new();
        for record in &found {
            for handle in handles(record, object) {
                by_handle.entry(handle.as_str()).or_insert(record);
            }
        }
        let mut pairs = Vec::new();
        for record in records {
            let id = record.contact.external_id.clone();
            let Some(handle) = handles(&record, object).first().cloned() else {
                let handle_mapped = self.crm.handle_field(&self.config.source.system).is_some();
                if object == SyncObject::Contacts && handle_mapped {
                    // As HubSpot's connector: no email, no counterpart
                    // created (it could never be matched again).
                    self.reject(missing_email(&id))?;
                    continue;
                }
                // A company needs no domain (as in a sync into the store):
                // its link alone pairs it from now on.
                pairs.push(match side {
                    LinkSide::Source => new_pair(Some(record), None),
                    LinkSide::Destination => new_pair(None, Some(record)),
                });
                continue;
            };
            let counterpart = by_handle.get(handle.as_str()).copied().cloned();
            if let Some(counterpart) = &counterpart {
                let other_id = &counterpart.contact.external_id;
                let linked = self
                    .store
                    .link(&self.config.name, other.link_side, other_id)?
                    .is_some();
                if linked || !taken.insert(other_id.clone()) {
                    self.reject(handle_taken(object, &id, &handle, other_id))?;
                    continue;
                }
            }
            pairs.push(match side {
                LinkSide::Source => new_pair(Some(record), counterpart),
                LinkSide::Destination => new_pair(counterpart, Some(record)),
            });
        }
        Ok(pairs)
    }

    /// Reconciles a step of pairs, writes both ways, commits their links.
    fn apply_step(
        &mut self,
        source: &mut Side,
        destination: &mut Side,
        rules: &[FieldRule],
        mut step: Vec<Pair>,
    ) -> Result<(), Stop> {
        self.step_intents.clear();
        let mut inputs: Vec<ReconcileInput> = Vec::with_capacity(step.len());
        for pair in &step {
            let base = agreed_values(&pair.link.agreed);
            let state = |record: &Option<MappedRecord>, side| -> Result<Option<SideState>> {
                record
                    .as_ref()
                    .map(|r| self.side_state(r, &base, side))
                    .transpose()
            };
            inputs.push(ReconcileInput {
                source: state(&pair.source, LinkSide::Source)?,
                destination: state(&pair.destination, LinkSide::Destination)?,
                base,
            });
        }
        let mut plans = source.instance.reconcile(rules, &inputs)?;
        self.place_owners(&step, &mut plans)?;
        // Writes to a CRM cannot be rolled back: none once the lease is another's.
        self.store.check_fence()?;
        let mut rejected = vec![false; step.len()];
        let mut wrote = vec![false; step.len()];
        // Pairs with a write planned that did not happen (the run stopped
        // first): linked if a create landed, but their agreed values stay.
        let mut incomplete = vec![false; step.len()];
        let mut outcomes = Vec::new();
        let mut stopped = None;
        for (towards, side) in [
            (LinkSide::Destination, &mut *destination),
            (LinkSide::Source, &mut *source),
        ] {
            if stopped.is_some() {
                for (index, plan) in plans.iter().enumerate() {
                    let planned = match towards {
                        LinkSide::Destination => &plan.to_destination,
                        LinkSide::Source => &plan.to_source,
                    };
                    incomplete[index] |= !planned.is_empty();
                }
                continue;
            }
            let mut attempted = Vec::new();
            if let Err(stop) = self.write_side(
                side,
                towards,
                &mut step,
                &plans,
                &mut outcomes,
                &mut attempted,
            ) {
                stopped = Some(stop);
            }
            for index in attempted {
                incomplete[index] |= !outcomes.iter().any(|(i, _)| *i == index);
            }
        }
        for (index, ok) in outcomes {
            if ok {
                wrote[index] = true;
            } else {
                rejected[index] = true;
            }
        }
        // What landed is committed even when the run stops here: a later
        // request's failure never loses the ids of the records created before.
        self.store.begin()?;
        for id in self.settled_intents.drain(..) {
            self.store.forget_intent(id)?;
        }
        for (index, (pair, plan)) in step.iter_mut().zip(&plans).enumerate() {
            let linked = pair.link.source_id.is_some() && pair.link.destination_id.is_some();
            if !linked {
                continue;
            }
            let agreed = agreed_json(&plan.agreed);
            let email = pair.handle(self.crm.object);
            if !rejected[index] && !incomplete[index] {
                if pair.link.agreed == agreed && pair.link.email == email && pair.link.id.is_some()
                {
                    if !wrote[index] {
                        self.counts.skipped += 1;
                    }
                    continue;
                }
                pair.link.agreed = agreed;
            }
            pair.link.email = email;
            self.store.save_link(&self.config.name, &pair.link)?;
            if !wrote[index] && !rejected[index] && !incomplete[index] {
                self.counts.skipped += 1;
            }
        }
        self.store
            .checkpoint(self.run_id, None, &self.counts, None)?;
        self.store.commit()?;
        match stopped {
            Some(stop) => Err(stop),
            None => Ok(()),
        }
    }

    /// Writes the plans' values for `towards` through `side`: pushes (pair
    /// index, written) to `outcomes` for every pair whose write was answered,
    /// and the index of every pair it tried to write to `attempted`. On a
    /// stop, what was answered before it is in `outcomes` all the same.
    fn write_side(
        &mut self,
        side: &mut Side,
        towards: LinkSide,
        step: &mut [Pair],
        plans: &[Reconciled],
        outcomes: &mut Vec<(usize, bool)>,
        attempted: &mut Vec<usize>,
    ) -> Result<(), Stop> {
        // Outgoing records grouped by where they go (Salesforce: per object).
        let mut batches: BTreeMap<Batch, Vec<(usize, OutgoingRecord)>> = BTreeMap::new();
        for (index, (pair, plan)) in step.iter().zip(plans).enumerate() {
            let (values, id, kind, key) = match towards {
                LinkSide::Destination => (
                    &plan.to_destination,
                    pair.link.destination_id.clone(),
                    pair.link.destination_kind.clone(),
                    pair.link.source_id.clone().or(source_id(pair)),
                ),
                LinkSide::Source => (
                    &plan.to_source,
                    pair.link.source_id.clone(),
                    pair.link.source_kind.clone(),
                    pair.link.destination_id.clone().or(destination_id(pair)),
                ),
            };
            if values.is_empty() {
                continue;
            }
            let Some(key) = key else { continue };
            let create = id.is_none();
            // A create recorded by a crashed run that may have landed: not
            // sent again until that run's record is found or known absent.
            if create && self.blocked.contains(&key) {
                continue;
            }
            let kind = if create {
                side.create_kind().map(str::to_owned)
            } else {
                kind
            };
            // A field the record's Salesforce object lacks (a Contact's
            // `Company`) is not written; with nothing else, neither is the record.
            let absent = absent_fields(kind.as_deref());
            let company = match values.iter().find(|v| v.name == COMPANY_KEY) {
                Some(_) if kind.as_deref() == Some("lead") => None,
                Some(v) => self.company_id(v.value.as_ref(), towards)?,
                None => None,
            };
            let values: Vec<OutgoingValue> = values
                .iter()
                .filter(|v| v.name != COMPANY_KEY)
                .map(|v| OutgoingValue {
                    name: self.field_name(&v.name, towards),
                    value: v.value.clone(),
                })
                .filter(|v| !absent.contains(&v.name.as_str()))
                .collect();
            if values.is_empty() && company.is_none() {
                continue;
            }
            batches.entry((create, kind)).or_default().push((
                index,
                OutgoingRecord {
                    key,
                    id,
                    values,
                    company,
                },
            ));
        }
        let mut queue: std::collections::VecDeque<_> = batches.into_iter().collect();
        while let Some(((create, kind), batch)) = queue.pop_front() {
            let destination = side.destination(kind.as_deref());
            attempted.extend(batch.iter().map(|(index, _)| *index));
            if create {
                self.record_intents(step, plans, &batch, towards, kind.as_deref())?;
            }
            let retry = if create {
                Retry::NotProcessed
            } else {
                Retry::All
            };
            // Sent until every record is answered: what a failed request
            // carried is sent again (as far as `retry` allows), what landed
            // is kept whatever happens after.
            let mut pending: Vec<(usize, OutgoingRecord)> = batch;
            let mut answered = Vec::new();
            let sent = with_retries(side, &self.options.retry, retry, |side| {
                let records: Vec<OutgoingRecord> = pending.iter().map(|(_, r)| r.clone()).collect();
                let results = match side.instance.write_records(&destination, &records)? {
                    Ok(results) => results,
                    Err(error) => return Ok(Err(error)),
                };
                crate::test_hooks::after_write();
                let mut failure = None;
                let mut unanswered = Vec::new();
                for (entry, result) in pending.drain(..).zip(results) {
                    match result.outcome {
                        WriteOutcome::Failed(error) => {
                            failure.get_or_insert(error);
                            unanswered.push(entry);
                        }
                        outcome => answered.push((entry, outcome)),
                    }
                }
                pending = unanswered;
                Ok(failure.map_or(Ok(()), Err))
            });
            // Creates the CRM refused as existing records: written as updates.
            let mut existing = Vec::new();
            for ((index, record), outcome) in answered {
                // Another pair of this step holds it (paired before, or found
                // existing a moment ago): its link is not saved yet.
                let paired_in_step = |id: &str| {
                    step.iter().enumerate().any(|(i, p)| {
                        let held = match towards {
                            LinkSide::Destination => &p.link.destination_id,
                            LinkSide::Source => &p.link.source_id,
                        };
                        i != index && held.as_deref() == Some(id)
                    })
                };
                let taken = match &outcome {
                    WriteOutcome::Exists(id) => {
                        paired_in_step(id)
                            || self.store.link(&self.config.name, towards, id)?.is_some()
                    }
                    _ => false,
                };
                // Answered: whatever it says, the create's intent is settled.
                if let Some(intent) = self.step_intents.remove(&(index, towards)) {
                    self.settled_intents.push(intent);
                }
                let pair = &mut step[index];
                match outcome {
                    WriteOutcome::Exists(id) => {
                        if taken {
                            // X4: the record holding the handle is another's.
                            let handle = pair.handle(self.crm.object).unwrap_or_default();
                            self.reject(handle_taken(self.crm.object, &record.key, &handle, &id))?;
                            outcomes.push((index, false));
                            continue;
                        }
                        // X3: the record was there all along (the look-up
                        // missed it: a secondary email, the search index).
                        self.link_to(&mut pair.link, towards, &id, kind.clone());
                        existing.push((
                            index,
                            OutgoingRecord {
                                id: Some(id),
                                ..record.clone()
                            },
                        ));
                    }
                    WriteOutcome::Written(id) => {
                        let counts = match towards {
                            LinkSide::Destination => &mut self.written.to_destination,
                            LinkSide::Source => &mut self.written.to_source,
                        };
                        if create {
                            counts.created += 1;
                            self.counts.created += 1;
                            self.link_to(&mut pair.link, towards, &id, kind.clone());
                        } else {
                            counts.updated += 1;
                            self.counts.updated += 1;
                        }
                        outcomes.push((index, true));
                    }
                    WriteOutcome::Rejected(error) => {
                        self.reject(error)?;
                        outcomes.push((index, false));
                    }
                    WriteOutcome::Failed(_) => unreachable!("failed results stay pending"),
                }
            }
            sent?;
            if !existing.is_empty() {
                queue.push_back(((false, kind), existing));
            }
        }
        Ok(())
    }

    /// Before creates are sent: an intent for each record no look-up could
    /// find again (no email, no domain), committed before the request, so a
    /// kill before its link commits is resolved by the next run instead of
    /// creating the record twice.
    fn record_intents(
        &mut self,
        step: &[Pair],
        plans: &[Reconciled],
        batch: &[(usize, OutgoingRecord)],
        towards: LinkSide,
        kind: Option<&str>,
    ) -> Result<(), Stop> {
        let handle = self
            .crm
            .handle_field(&self.config.source.system)
            .map(|f| f.source.clone());
        // Owners are written as the other CRM's ids: not how the record is recognised.
        let owners: HashSet<&str> = self
            .crm
            .fields
            .iter()
            .filter(|f| f.owner)
            .map(|f| f.source.as_str())
            .collect();
        let mut intents = Vec::new();
        let mut indexes = Vec::new();
        for (index, _) in batch {
            let plan = &plans[*index];
            let values = match towards {
                LinkSide::Destination => &plan.to_destination,
                LinkSide::Source => &plan.to_source,
            };
            let keyed = handle
                .as_ref()
                .is_some_and(|h| values.iter().any(|v| &v.name == h && v.value.is_some()));
            if keyed {
                continue;
            }
            let written: Vec<FieldValue> = values
                .iter()
                .filter(|v| v.name != COMPANY_KEY && !owners.contains(v.name.as_str()))
                .filter_map(|v| {
                    Some(FieldValue {
                        name: v.name.clone(),
                        value: v.value.clone()?,
                    })
                })
                .collect();
            let mut link = step[*index].link.clone();
            match towards {
                LinkSide::Destination => {
                    link.source_id = link.source_id.or(source_id(&step[*index]));
                    link.destination_kind = kind.map(str::to_owned);
                }
                LinkSide::Source => {
                    link.destination_id = link.destination_id.or(destination_id(&step[*index]));
                    link.source_kind = kind.map(str::to_owned);
                }
            }
            link.agreed = agreed_json(&plan.agreed);
            link.email = step[*index].handle(self.crm.object);
            intents.push(Intent {
                id: None,
                side: towards,
                link,
                written: agreed_json(&written),
                created_ms: now_ms(),
            });
            indexes.push(*index);
        }
        if intents.is_empty() {
            return Ok(());
        }
        self.store.record_intents(&self.config.name, &mut intents)?;
        for (index, intent) in indexes.into_iter().zip(intents) {
            if let Some(id) = intent.id {
                self.step_intents.insert((index, towards), id);
            }
        }
        Ok(())
    }

    /// Links the pair to its record `id` (of `kind`) on `towards`: one the
    /// run created, or found there. A record the run puts at the source
    /// counts as read by it (the full-run sweep keeps its link).
    fn link_to(&mut self, link: &mut Link, towards: LinkSide, id: &str, kind: Option<String>) {
        match towards {
            LinkSide::Destination => {
                link.destination_id = Some(id.to_owned());
                link.destination_kind = kind;
            }
            LinkSide::Source => {
                if let Some(ids) = &mut self.read_ids {
                    ids.insert(id.to_owned());
                }
                link.source_id = Some(id.to_owned());
                link.source_kind = kind;
            }
        }
    }

    /// A record's values for `reconcile`. A field its Salesforce object does
    /// not have keeps the agreed value: not read is not blanked.
    fn side_state(
        &self,
        record: &MappedRecord,
        base: &[FieldValue],
        side: LinkSide,
    ) -> Result<SideState> {
        let mut values: Vec<FieldValue> = record
            .contact
            .fields
            .iter()
            .filter(|f| f.name != RECORD_TYPE)
            .cloned()
            .collect();
        // The handle compares as a handle: an email whatever its case (HubSpot
        // lower-cases what it is sent), a company's domain whatever URL holds
        // it (`https://www.acme.com/` in a Website is HubSpot's `acme.com`);
        // so neither is a conflict, and what is written is the normalised form.
        if let Some(handle) = self.crm.handle_field(&self.config.source.system) {
            values.retain(|v| v.name != handle.source);
            if let Some(normalised) = handles(record, self.crm.object).first() {
                values.push(FieldValue {
                    name: handle.source.clone(),
                    value: FieldData::Text(normalised.clone()),
                });
            }
        }
        // An owner is its email while reconciled (ids differ between CRMs).
        for field in self.crm.fields.iter().filter(|f| f.owner) {
            if let Some(value) = values.iter_mut().find(|v| v.name == field.source)
                && let FieldData::Text(id) = &value.value
            {
                value.value = FieldData::Text(self.owners.email_of(side, id));
            }
        }
        let absent = absent_fields(kind_of(record).as_deref());
        for field in &self.crm.fields {
            let name = match side {
                LinkSide::Source => &field.source,
                LinkSide::Destination => &field.destination,
            };
            if absent.contains(&name.as_str()) {
                values.retain(|v| v.name != field.source);
                values.extend(base.iter().filter(|v| v.name == field.source).cloned());
            }
        }
        if let Some(part) = &self.company_part {
            values.retain(|v| v.name != COMPANY_KEY);
            if kind_of(record).as_deref() == Some("lead") {
                // A Lead has no Account (its company is text): not read, not blank.
                values.extend(base.iter().filter(|v| v.name == COMPANY_KEY).cloned());
            } else {
                // The first of its companies (HubSpot's primary first) that syncs.
                for company in &record.company_ids {
                    if let Some(link) = self.store.link(part, side, company)?
                        && let Some(id) = link.id
                    {
                        values.push(FieldValue {
                            name: COMPANY_KEY.to_owned(),
                            value: FieldData::Text(id.to_string()),
                        });
                        break;
                    }
                }
            }
        }
        Ok(SideState {
            values,
            modified_at: record.modified_at,
        })
    }

    /// The company a plan's `@company` value names, by its id on `towards`.
    /// A cleared company is `None`: associations are left as they are.
    fn company_id(&self, value: Option<&FieldData>, towards: LinkSide) -> Result<Option<String>> {
        let Some(FieldData::Text(link)) = value else {
            return Ok(None);
        };
        let Ok(link) = link.parse::<i64>() else {
            return Ok(None);
        };
        Ok(self.store.link_by_id(link)?.and_then(|link| match towards {
            LinkSide::Source => link.source_id,
            LinkSide::Destination => link.destination_id,
        }))
    }

    /// A field key (the source's name) as `towards` spells it.
    fn field_name(&self, key: &str, towards: LinkSide) -> String {
        match towards {
            LinkSide::Source => key.to_owned(),
            LinkSide::Destination => self
                .crm
                .fields
                .iter()
                .find(|f| f.source == key)
                .map_or_else(|| key.to_owned(), |f| f.destination.clone()),
        }
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

/// Whether `record` holds every value an earlier create wrote (text
/// compared trimmed, other types exactly).
fn written_matches(written: &BTreeMap<String, serde_json::Value>, record: &MappedRecord) -> bool {
    !written.is_empty()
        && agreed_values(written).iter().all(|value| {
            record
                .contact
                .fields
                .iter()
                .find(|f| f.name == value.name)
                .is_some_and(|f| match (&f.value, &value.value) {
                    (FieldData::Text(read), FieldData::Text(sent)) => read.trim() == sent.trim(),
                    (read, sent) => read == sent,
                })
        })
}

fn source_id(pair: &Pair) -> Option<String> {
    pair.source.as_ref().map(|r| r.contact.external_id.clone())
}

fn destination_id(pair: &Pair) -> Option<String> {
    pair.destination
        .as_ref()
        .map(|r| r.contact.external_id.clone())
}

/// A pair of records never linked before (one may be missing: created).
fn new_pair(source: Option<MappedRecord>, destination: Option<MappedRecord>) -> Pair {
    let link = Link {
        source_id: source.as_ref().map(|r| r.contact.external_id.clone()),
        source_kind: source.as_ref().and_then(kind_of),
        destination_id: destination.as_ref().map(|r| r.contact.external_id.clone()),
        destination_kind: destination.as_ref().and_then(kind_of),
        ..Link::default()
    };
    Pair {
        link,
        source,
        destination,
    }
}

/// Salesforce fields only Leads have, and only Contacts: a record of the
/// other object reads them as absent, which is no change (a converted Lead's
/// Contact has no `Company`; its Account is the company).
const LEAD_ONLY: &[&str] = &["Company", "Status", "LeadSource", "Industry", "Rating"];
const CONTACT_ONLY: &[&str] = &["AccountId", "ReportsToId", "Department", "Birthdate"];

/// The fields a Salesforce record of `kind` does not have.
fn absent_fields(kind: Option<&str>) -> &'static [&'static str] {
    match kind {
        Some("contact") => LEAD_ONLY,
        Some("lead") => CONTACT_ONLY,
        _ => &[],
    }
}

/// Agreed values as stored: `{"text": "..."}`, `{"number": 1.5}`, ... so
/// their type survives the round trip.
fn agreed_json(values: &[FieldValue]) -> BTreeMap<String, serde_json::Value> {
    values
        .iter()
        .map(|v| {
            let tagged = match &v.value {
                FieldData::Text(t) => serde_json::json!({ "text": t }),
                FieldData::Number(n) => serde_json::json!({ "number": n }),
                FieldData::Boolean(b) => serde_json::json!({ "boolean": b }),
                FieldData::Date(d) => serde_json::json!({ "date": d }),
                FieldData::DateTime(t) => serde_json::json!({ "date_time": t }),
                FieldData::Multi(m) => serde_json::json!({ "multi": m }),
            };
            (v.name.clone(), tagged)
        })
        .collect()
}

fn agreed_values(agreed: &BTreeMap<String, serde_json::Value>) -> Vec<FieldValue> {
    agreed
        .iter()
        .filter_map(|(name, tagged)| {
            let (tag, value) = tagged.as_object()?.iter().next()?;
            let text = || value.as_str().map(str::to_owned);
            let value = match tag.as_str() {
                "text" => FieldData::Text(text()?),
                "number" => FieldData::Number(value.as_f64()?),
                "boolean" => FieldData::Boolean(value.as_bool()?),
                "date" => FieldData::Date(text()?),
                "date_time" => FieldData::DateTime(text()?),
                "multi" => FieldData::Multi(
                    value
                        .as_array()?
                        .iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect(),
                ),
                _ => return None,
            };
            Some(FieldValue {
                name: name.clone(),
                value,
            })
        })
        .collect()
}

/// E1 for a sync into a CRM: no email, so no counterpart is created.
fn missing_email(id: &str) -> SyncError {
    record_error(
        ErrorCategory::MissingHandle,
        ErrorScope::Record,
        Some(id),
        "email",
        format!("record {id} has no email, so no counterpart was created for it on the other side"),
        format!(
            "Add an email to record {id}: records are matched across the two CRMs by email, and \
             one without could be created twice."
        ),
    )
}

/// E2 (X4) across two CRMs: the record holding this email (or, for
/// companies, domain) on the other side is linked to another record already.
fn handle_taken(object: SyncObject, id: &str, handle: &str, other: &str) -> SyncError {
    let (category, what) = match object {
        SyncObject::Contacts => (ErrorCategory::EmailTaken, "email"),
        SyncObject::Companies => (ErrorCategory::DomainTaken, "domain"),
    };
    record_error(
        category,
        ErrorScope::Record,
        Some(id),
        what,
        format!(
            "{what} {handle} of record {id} belongs to record {other} on the other side, which is \
             already linked to another record, so record {id} was not synced"
        ),
        format!(
            "Two records share the {what} {handle}: merge them, or give record {id} its own {what}."
        ),
    )
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
