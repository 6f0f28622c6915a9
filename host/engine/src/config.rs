//! The sync configuration: one TOML file per sync (see `examples/hubspot.toml`).
//!
//! Every problem is reported once, naming the key. Unknown keys are errors:
//! a misspelt `list_id` that silently synced every contact would be worse than
//! a refusal.

use crate::bindings::crmsync::sync::types::{
    FieldMapping, FieldTarget, FieldType, Filter, FilterOp, SalesforceObject,
};
use crate::notify::NotifyConfig;
use crate::rate_limit::{HUBSPOT_DEFAULT, HUBSPOT_SEARCH_DEFAULT, RateLimit};
use crate::schedule::{DEFAULT_SCHEDULE, Schedule, parse_duration};
use crate::store_location::StoreLocation;
use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod destination;

use destination::RawDestination;
mod filters;
mod mappings;
pub use destination::{CrmDestination, RECORD_TYPE, SyncField, read_mappings};
use filters::parse_filters;
use mappings::effective_mappings;
use mappings::parse_type;
pub use mappings::{
    default_company_mappings, default_mappings, default_salesforce_account_mappings,
    default_salesforce_mappings, mapped_properties, target_name, type_name,
};

pub use crate::auth::{AuthConfig, OAuthEnv};
pub use crate::http::DEFAULT_MAX_RESPONSE_MB;
pub use crate::origin::Origin;

/// How far before the last run's newest change an incremental run starts
/// reading (R4): HubSpot's search index lags writes by seconds, and the
/// clocks of this host and HubSpot may differ.
pub const DEFAULT_LOOKBACK: &str = "5m";

/// HubSpot's public API root.
pub const DEFAULT_HUBSPOT_BASE_URL: &str = "https://api.hubapi.com";

/// A validated sync configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The sync's name (default: the config file's stem); keys its state in the store.
    pub name: String,
    pub source: SourceConfig,
    /// Effective mappings: HubSpot defaults, then `source.properties`, then `[mapping]`.
    pub mappings: Vec<FieldMapping>,
    /// `[[filter]]` entries (S4), typed as their property's mapping.
    pub filters: Vec<Filter>,
    /// What the sync reads: contacts into destination contacts, or companies
    /// into destination accounts (S3).
    pub object: SyncObject,
    /// The `[companies]` part: a company sync (named `<name>.companies`,
    /// same source and store) run before the contacts in every pass.
    pub companies: Option<Box<Config>>,
    /// The properties the user named (`source.properties`, `[mapping]` keys).
    /// Only these are checked against the source's catalogue (E6): the
    /// default ones are HubSpot-defined and cannot be deleted.
    pub chosen_properties: Vec<String>,
    /// The SQLite file of an embedded store (`store.path`, default
    /// `<name>.sqlite` beside the config); unused when `store` is PostgreSQL.
    pub store_path: PathBuf,
    /// Where the sync's state lives: `store_path`, or `store.url`'s namespace.
    pub store: StoreLocation,
    /// When the daemon runs the sync by itself (R1).
    pub schedule: Schedule,
    /// Who hears about runs that need attention.
    pub notify: NotifyConfig,
    /// A CRM the sync writes to, instead of the embedded store (`[destination]`).
    pub destination: Option<CrmDestination>,
    /// `matching.default_region`: phones are parsed and matched in E.164,
    /// national numbers read as this region's (ISO 3166-1, upper case).
    pub phone_region: Option<String>,
}

/// The CRM a source reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSystem {
    Hubspot,
    /// The REST API at this version, reading these objects in order.
    Salesforce {
        api_version: String,
        objects: Vec<SalesforceObject>,
    },
}

/// The Salesforce REST API version used unless `source.api_version` says otherwise.
pub const DEFAULT_SALESFORCE_API_VERSION: &str = "v60.0";

fn salesforce_system(source: &RawSource, companies_table: bool) -> Result<SourceSystem> {
    let system = salesforce_objects(
        source.api_version.as_deref(),
        source.objects.as_deref(),
        "source",
    )?;
    if let SourceSystem::Salesforce { objects, .. } = &system
        && companies_table
        && !objects.contains(&SalesforceObject::Account)
    {
        bail!(
            "companies: a Salesforce source's company part reads Accounts: add \"Account\" to \
             source.objects"
        );
    }
    Ok(system)
}

/// `<table>.api_version` and `<table>.objects` of a Salesforce side.
fn salesforce_objects(
    api_version: Option<&str>,
    objects: Option<&[String]>,
    table: &str,
) -> Result<SourceSystem> {
    let api_version = api_version
        .map(str::to_owned)
        .unwrap_or_else(|| DEFAULT_SALESFORCE_API_VERSION.to_owned());
    let digits = api_version.strip_prefix('v').unwrap_or("");
    if digits.split_once('.').is_none_or(|(major, minor)| {
        major.is_empty()
            || minor.is_empty()
            || !major
                .bytes()
                .chain(minor.bytes())
                .all(|b| b.is_ascii_digit())
    }) {
        bail!("{table}.api_version: expected a version such as \"v60.0\", got {api_version:?}");
    }
    let names = objects
        .map(<[String]>::to_vec)
        .unwrap_or_else(|| vec!["Lead".into(), "Contact".into()]);
    if names.is_empty() {
        bail!("{table}.objects: name at least one of \"Lead\", \"Contact\"");
    }
    let mut objects = Vec::new();
    for name in &names {
        let object = match name.as_str() {
            "Lead" => SalesforceObject::Lead,
            "Contact" => SalesforceObject::Contact,
            "Account" => SalesforceObject::Account,
            other => bail!(
                "{table}.objects: unknown object {other:?} (expected \"Lead\", \"Contact\" or \"Account\")"
            ),
        };
        if objects.contains(&object) {
            bail!("{table}.objects: {name:?} is listed twice");
        }
        objects.push(object);
    }
    // Leads first: a Lead converted during the run is then found by its Contact.
    objects.sort_by_key(|o| *o != SalesforceObject::Lead);
    Ok(SourceSystem::Salesforce {
        api_version,
        objects,
    })
}

/// `<table>.token_env` or `<table>.oauth` (names of environment variables).
fn parse_auth(
    token_env: Option<String>,
    oauth: Option<OAuthEnv>,
    table: &str,
) -> Result<AuthConfig> {
    Ok(match (token_env, oauth) {
        (Some(_), Some(_)) => {
            bail!("{table}: set either {table}.token_env or {table}.oauth, not both")
        }
        (Some(env), None) if env.trim().is_empty() => {
            bail!("{table}.token_env: must name an environment variable")
        }
        (Some(env), None) => AuthConfig::Token { env },
        (None, Some(oauth)) => {
            for (key, value) in [
                ("client_id_env", &oauth.client_id_env),
                ("client_secret_env", &oauth.client_secret_env),
                ("refresh_token_env", &oauth.refresh_token_env),
            ] {
                if value.trim().is_empty() {
                    bail!("{table}.oauth.{key}: must name an environment variable");
                }
            }
            AuthConfig::OAuth(oauth)
        }
        (None, None) => AuthConfig::None,
    })
}

/// The OAuth token endpoint of a CRM at `base_url`.
fn token_url(system: &SourceSystem, base_url: &str) -> String {
    match system {
        SourceSystem::Hubspot => format!("{base_url}/oauth/v1/token"),
        SourceSystem::Salesforce { .. } => format!("{base_url}/services/oauth2/token"),
    }
}

/// Where records come from and how to authenticate.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// HubSpot or Salesforce.
    pub system: SourceSystem,
    pub base_url: String,
    /// The origin (`scheme://host[:port]`) the component may call.
    pub origin: Origin,
    pub auth: AuthConfig,
    pub list_id: Option<String>,
    /// `source.portal_id`: the HubSpot account (portal, hub id) read, so a
    /// webhook for that portal triggers this sync (R6) and the console links
    /// each record to its HubSpot page.
    pub portal_id: Option<u64>,
    /// `source.contacts = "synced_companies"`: the contacts of the companies
    /// this company sync (the `[companies]` part, or `source.companies_sync`)
    /// has synced (S2). Its failure stops this sync (E5).
    pub from_synced_companies: Option<String>,
    /// The account's request budget (`None`: unlimited, for local servers).
    pub rate_limit: Option<RateLimit>,
    /// The search API's own budget, used by incremental runs.
    pub search_rate_limit: Option<RateLimit>,
    /// Incremental runs re-read changes this far before the bookmark.
    pub lookback: std::time::Duration,
    /// Larger answers fail the request instead of filling memory.
    pub max_response_bytes: usize,
}

/// The HubSpot object a sync reads (S3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncObject {
    /// Contacts, into destination contacts.
    Contacts,
    /// Companies, into destination accounts.
    Companies,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    name: Option<String>,
    schedule: Option<String>,
    source: RawSource,
    /// `property = "target"`, or a table `{ field, type, options }`.
    #[serde(default)]
    mapping: BTreeMap<String, toml::Value>,
    #[serde(default)]
    filter: Vec<RawFilter>,
    companies: Option<RawCompanies>,
    destination: Option<RawDestination>,
    store: Option<RawStore>,
    #[serde(default)]
    notify: NotifyConfig,
    #[serde(default)]
    matching: RawMatching,
}

/// `[matching]`: how handles are compared (M3).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMatching {
    /// An ISO 3166-1 region (`"US"`): phones are parsed and matched in E.164.
    default_region: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    system: String,
    base_url: Option<String>,
    token_env: Option<String>,
    oauth: Option<OAuthEnv>,
    list_id: Option<toml::Value>,
    portal_id: Option<toml::Value>,
    rate_limit: Option<String>,
    search_rate_limit: Option<String>,
    lookback: Option<String>,
    max_response_mb: Option<u32>,
    #[serde(default)]
    properties: Vec<String>,
    /// `"contacts"` (default) or `"companies"`.
    object: Option<String>,
    /// Salesforce: `"v60.0"` by default.
    api_version: Option<String>,
    /// Salesforce: `["Lead", "Contact"]` by default.
    objects: Option<Vec<String>>,
    /// `"all"` (default) or `"synced_companies"`.
    contacts: Option<String>,
    companies_sync: Option<String>,
    /// Plain `http://` to a host other than loopback (a TLS-terminating proxy).
    #[serde(default)]
    allow_plain_http: bool,
}

/// `[companies]`: the company part of a contact sync.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCompanies {
    #[serde(default)]
    properties: Vec<String>,
    #[serde(default)]
    mapping: BTreeMap<String, toml::Value>,
    #[serde(default)]
    filter: Vec<RawFilter>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFilter {
    field: String,
    op: String,
    value: Option<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTypedMapping {
    field: String,
    #[serde(rename = "type")]
    value_type: Option<String>,
    options: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStore {
    path: Option<PathBuf>,
    /// A PostgreSQL URL, for a store shared by many syncs and runners.
    url: Option<String>,
    /// The environment variable holding that URL (so a password stays out of the file).
    url_env: Option<String>,
    /// The PostgreSQL schema; default `crmsync_<name>`.
    namespace: Option<String>,
}

/// The config files named: files as given, folders as their `*.toml` files.
pub fn config_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut in_dir: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("cannot read the config folder {}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "toml"))
                .collect();
            in_dir.sort();
            files.extend(in_dir);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

impl Config {
    /// Reads and validates a config file. Relative paths in it are relative to the file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "sync".into());
        let dir = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, &stem, dir).with_context(|| format!("invalid config {}", path.display()))
    }

    /// Parses config text; `default_name` and `dir` stand in for the file's stem and folder.
    pub fn parse(text: &str, default_name: &str, dir: &Path) -> Result<Self> {
        let raw: RawConfig = parse_toml(text)?;

        let name = raw.name.unwrap_or_else(|| default_name.to_owned());
        if name.trim().is_empty() {
            bail!("name: must not be empty");
        }

        let schedule = Schedule::parse(raw.schedule.as_deref().unwrap_or(DEFAULT_SCHEDULE))
            .context("schedule")?;

        if let Some(url) = &raw.notify.webhook {
            Origin::parse(url)
                .and_then(|o| o.require_tls(false))
                .context("notify.webhook")?;
        }
        if raw
            .notify
            .command
            .first()
            .is_some_and(|program| program.trim().is_empty())
        {
            bail!("notify.command: the first element must name a program");
        }

        let source = raw.source;
        let system = match source.system.as_str() {
            "hubspot" => {
                if source.api_version.is_some() || source.objects.is_some() {
                    bail!(
                        "source.api_version, source.objects: Salesforce keys; this source is HubSpot"
                    );
                }
                SourceSystem::Hubspot
            }
            "salesforce" => salesforce_system(&source, raw.companies.is_some())?,
            other => bail!(
                "source.system: unsupported system {other:?} (supported: \"hubspot\", \"salesforce\")"
            ),
        };
        let base_url = match (&source.base_url, &system) {
            (Some(url), _) => url.clone(),
            (None, SourceSystem::Hubspot) => DEFAULT_HUBSPOT_BASE_URL.to_owned(),
            (None, SourceSystem::Salesforce { .. }) => bail!(
                "source.base_url: a Salesforce source needs the org's instance URL \
                 (e.g. \"https://acme.my.salesforce.com\")"
            ),
        }
        .trim_end_matches('/')
        .to_owned();
        let origin = Origin::parse(&base_url).context("source.base_url")?;
        origin
            .require_tls(source.allow_plain_http)
            .context("source.base_url")?;
        let auth = parse_auth(source.token_env.clone(), source.oauth.clone(), "source")?;
        let rate_limit = match (&source.rate_limit, &system) {
            (Some(text), _) => RateLimit::parse(text).context("source.rate_limit")?,
            (None, SourceSystem::Hubspot) => Some(HUBSPOT_DEFAULT),
            // Salesforce limits requests per rolling 24 hours, not per second:
            // a run's few large pages are no burst (REQUEST_LIMIT_EXCEEDED stops it).
            (None, SourceSystem::Salesforce { .. }) => None,
        };
        let search_rate_limit = match &source.search_rate_limit {
            Some(text) => RateLimit::parse(text).context("source.search_rate_limit")?,
            None => Some(HUBSPOT_SEARCH_DEFAULT),
        };
        let lookback = parse_duration(source.lookback.as_deref().unwrap_or(DEFAULT_LOOKBACK))
            .context("source.lookback")?;
        let max_response_bytes = match source.max_response_mb {
            None => DEFAULT_MAX_RESPONSE_MB as usize * 1024 * 1024,
            Some(0) => bail!("source.max_response_mb: must be at least 1"),
            Some(mb) => mb as usize * 1024 * 1024,
        };
        let list_id = match source.list_id {
            None => None,
            Some(toml::Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_owned()),
            Some(toml::Value::Integer(i)) if i > 0 => Some(i.to_string()),
            Some(other) => bail!("source.list_id: expected a list id such as \"123\", got {other}"),
        };

        let portal_id = match source.portal_id {
            None => None,
            Some(toml::Value::Integer(i)) if i > 0 => Some(i as u64),
            Some(toml::Value::String(s)) if s.trim().parse::<u64>().is_ok_and(|n| n > 0) => {
                s.trim().parse().ok()
            }
            Some(other) => bail!(
                "source.portal_id: expected the HubSpot account's id (hub id) such as 62515, got {other}"
            ),
        };

        if matches!(system, SourceSystem::Salesforce { .. })
            && (list_id.is_some()
                || portal_id.is_some()
                || source.object.is_some()
                || source.contacts.is_some())
        {
            bail!(
                "source: list_id, portal_id, object and contacts are HubSpot choices; a Salesforce source \
                 reads source.objects"
            );
        }
        let object = match (source.object.as_deref(), &system) {
            (_, SourceSystem::Salesforce { objects, .. })
                if objects == &[SalesforceObject::Account] =>
            {
                SyncObject::Companies
            }
            (None | Some("contacts"), _) => SyncObject::Contacts,
            (Some("companies"), _) => SyncObject::Companies,
            (Some(other), _) => bail!(
                "source.object: unknown object {other:?} (expected \"contacts\" or \"companies\")"
            ),
        };
        // Salesforce Accounts beside people are the company part, as
        // `[companies]` is for HubSpot; the people part reads the rest.
        let (system, salesforce_accounts) = match system {
            SourceSystem::Salesforce {
                api_version,
                objects,
            } if objects.len() > 1 && objects.contains(&SalesforceObject::Account) => (
                SourceSystem::Salesforce {
                    api_version: api_version.clone(),
                    objects: objects
                        .into_iter()
                        .filter(|o| *o != SalesforceObject::Account)
                        .collect(),
                },
                Some(SourceSystem::Salesforce {
                    api_version,
                    objects: vec![SalesforceObject::Account],
                }),
            ),
            system => (system, None),
        };
        let (destination, company_crm) = match &raw.destination {
            Some(table) if destination::names_crm(table)? => {
                let companies = raw.companies.as_ref();
                let refused = [
                    ("source.contacts", source.contacts.is_some()),
                    ("source.companies_sync", source.companies_sync.is_some()),
                    ("source.object", object != SyncObject::Contacts),
                    ("source.properties", !source.properties.is_empty()),
                    (
                        "companies.properties",
                        companies.is_some_and(|c| !c.properties.is_empty()),
                    ),
                    (
                        "companies.filter",
                        companies.is_some_and(|c| !c.filter.is_empty()),
                    ),
                ];
                if let Some((key, _)) = refused.iter().find(|(_, set)| *set) {
                    bail!(
                        "{key}: a sync into a CRM (destination.system) syncs what [mapping] and \
                         [companies.mapping] map; {key} is for syncs into the store"
                    );
                }
                let people =
                    destination::parse(table, &system, &raw.mapping, SyncObject::Contacts)?;
                // Companies sync between the CRMs when either side lists
                // Salesforce Accounts or the config has a `[companies]` table.
                let company_part = companies.is_some()
                    || salesforce_accounts.is_some()
                    || destination::lists_accounts(table);
                let company_crm = if company_part {
                    let accounts_source = match (&salesforce_accounts, &system) {
                        (Some(accounts), _) => accounts.clone(),
                        (None, SourceSystem::Hubspot) => SourceSystem::Hubspot,
                        (None, SourceSystem::Salesforce { .. }) => bail!(
                            "source.objects: the company part reads Salesforce Accounts: add \
                             \"Account\" to source.objects"
                        ),
                    };
                    let empty = BTreeMap::new();
                    let mapping = companies.map_or(&empty, |c| &c.mapping);
                    Some(destination::parse(
                        table,
                        &accounts_source,
                        mapping,
                        SyncObject::Companies,
                    )?)
                } else {
                    None
                };
                (Some(people), company_crm)
            }
            _ => (None, None),
        };
        // A part of a sync into a CRM: each side reads the fields under their
        // keys; `filters` (S4) choose the source records that sync across.
        let crm_part = |crm: &CrmDestination, system: &SourceSystem, filters: &[RawFilter]| {
            let mappings = read_mappings(
                crm,
                |f| &f.source,
                system,
                matches!(system, SourceSystem::Salesforce { .. }),
            );
            Ok::<_, anyhow::Error>(Part {
                filters: parse_filters(filters, &mappings, "filter")?,
                mappings,
                chosen_properties: crm.fields.iter().map(|f| f.source.clone()).collect(),
            })
        };
        let part = match &destination {
            Some(crm) => crm_part(crm, &system, &raw.filter)?,
            None => parse_part(
                object,
                match (&system, object) {
                    (SourceSystem::Salesforce { .. }, SyncObject::Companies) => {
                        default_salesforce_account_mappings()
                    }
                    (SourceSystem::Salesforce { .. }, SyncObject::Contacts) => {
                        default_salesforce_mappings()
                    }
                    (SourceSystem::Hubspot, SyncObject::Contacts) => default_mappings(),
                    (SourceSystem::Hubspot, SyncObject::Companies) => default_company_mappings(),
                },
                &source.properties,
                &raw.mapping,
                &raw.filter,
                ("source.properties", "mapping", "filter"),
            )?,
        };
        let companies_name = format!("{name}.companies");
        let empty = RawCompanies::default();
        let companies_table = raw
            .companies
            .as_ref()
            .or(salesforce_accounts.as_ref().map(|_| &empty));
        let companies_part = match (companies_table, object) {
            _ if destination.is_some() => company_crm
                .as_ref()
                .map(|crm| {
                    let system = salesforce_accounts
                        .as_ref()
                        .unwrap_or(&SourceSystem::Hubspot);
                    crm_part(crm, system, &[])
                })
                .transpose()?,
            (None, _) => None,
            (Some(_), SyncObject::Companies) => {
                bail!(
                    "companies: a company sync (source.object = \"companies\") has no company part"
                )
            }
            (Some(companies), SyncObject::Contacts) => Some(parse_part(
                SyncObject::Companies,
                if salesforce_accounts.is_some() {
                    default_salesforce_account_mappings()
                } else {
                    default_company_mappings()
                },
                &companies.properties,
                &companies.mapping,
                &companies.filter,
                (
                    "companies.properties",
                    "companies.mapping",
                    "companies.filter",
                ),
            )?),
        };
        let from_synced_companies = match (source.contacts.as_deref(), object) {
            (None | Some("all"), _) => {
                if source.companies_sync.is_some() {
                    bail!(
                        "source.companies_sync: only used with source.contacts = \"synced_companies\""
                    );
                }
                None
            }
            (Some("synced_companies"), SyncObject::Companies) => {
                bail!("source.contacts: a company sync reads companies, not contacts")
            }
            (Some("synced_companies"), SyncObject::Contacts) => {
                if list_id.is_some() {
                    bail!(
                        "source.contacts: \"synced_companies\" and source.list_id choose the contacts \
                         two ways; keep one"
                    );
                }
                Some(match (&source.companies_sync, &companies_part) {
                    (Some(_), Some(_)) => bail!(
                        "source.companies_sync: this config has its own [companies] part; name \
                         another sync only without one"
                    ),
                    (Some(sync), None) if sync.trim().is_empty() => {
                        bail!("source.companies_sync: must name a company sync")
                    }
                    (Some(sync), None) => sync.trim().to_owned(),
                    (None, Some(_)) => companies_name.clone(),
                    (None, None) => bail!(
                        "source.contacts: \"synced_companies\" needs the companies: add a \
                         [companies] table, or name the company sync in source.companies_sync"
                    ),
                })
            }
            (Some(other), _) => bail!(
                "source.contacts: unknown choice {other:?} (expected \"all\" or \"synced_companies\")"
            ),
        };

        let raw_store = raw.store.unwrap_or_default();
        let store_url = match (&raw_store.url, &raw_store.url_env) {
            (Some(_), Some(_)) => bail!("store: set url or url_env, not both"),
            (Some(url), None) => Some(url.clone()),
            (None, Some(var)) => Some(std::env::var(var).map_err(|_| {
                anyhow::anyhow!("store.url_env: the environment variable {var} is not set")
            })?),
            (None, None) => None,
        };
        if store_url.is_some() && raw_store.path.is_some() {
            bail!("store: set path (an embedded SQLite file) or url (PostgreSQL), not both");
        }
        if store_url.is_none() && raw_store.namespace.is_some() {
            bail!("store.namespace: only a PostgreSQL store (store.url) has namespaces");
        }
        let store_path = raw_store
            .path
            .unwrap_or_else(|| PathBuf::from(format!("{name}.sqlite")));
        if store_path.as_os_str().is_empty() {
            bail!("store.path: must not be empty");
        }
        let store_path = if store_path.is_absolute() {
            store_path
        } else {
            dir.join(store_path)
        };
        let store = match store_url {
            None => StoreLocation::Sqlite(store_path.clone()),
            Some(url) => {
                if !(url.starts_with("postgresql://") || url.starts_with("postgres://")) {
                    bail!(
                        "store.url: {:?} is not a PostgreSQL URL (expected postgresql://user@host:port/db)",
                        crmsync_store_postgres::redact(&url)
                    );
                }
                let namespace = match raw_store.namespace {
                    Some(namespace) => {
                        crmsync_store_postgres::check_namespace(&namespace)
                            .context("store.namespace")?;
                        namespace
                    }
                    None => crmsync_store_postgres::default_namespace(&name),
                };
                StoreLocation::Postgres { url, namespace }
            }
        };

        let phone_region = match raw.matching.default_region.as_deref().map(str::trim) {
            None => None,
            Some(region)
                if region.len() == 2 && region.bytes().all(|b| b.is_ascii_alphabetic()) =>
            {
                Some(region.to_ascii_uppercase())
            }
            Some(other) => bail!(
                "matching.default_region: {other:?} is not a region; use an ISO 3166-1 code such as \"US\""
            ),
        };
        let mut part = part;
        if let Some(region) = &phone_region {
            for mapping in &mut part.mappings {
                if mapping.target == FieldTarget::Phone {
                    mapping.value_type = FieldType::Phone(region.clone());
                }
            }
        }
        let config = Config {
            phone_region,
            name,
            source: SourceConfig {
                system,
                base_url,
                origin,
                auth,
                list_id,
                portal_id,
                from_synced_companies,
                rate_limit,
                search_rate_limit,
                lookback,
                max_response_bytes,
            },
            mappings: part.mappings,
            filters: part.filters,
            object,
            companies: None,
            chosen_properties: part.chosen_properties,
            store_path,
            store,
            schedule,
            notify: raw.notify,
            destination,
        };
        let companies = companies_part.map(|part| {
            Box::new(Config {
                name: companies_name,
                source: SourceConfig {
                    system: salesforce_accounts
                        .clone()
                        .unwrap_or_else(|| config.source.system.clone()),
                    list_id: None,
                    from_synced_companies: None,
                    ..config.source.clone()
                },
                mappings: part.mappings,
                filters: part.filters,
                object: SyncObject::Companies,
                companies: None,
                chosen_properties: part.chosen_properties,
                destination: company_crm,
                ..config.clone()
            })
        });
        Ok(Config {
            companies,
            ..config
        })
    }

    /// The source's OAuth token endpoint.
    pub fn token_url(&self) -> String {
        token_url(&self.source.system, &self.source.base_url)
    }

    /// Whether contacts read their companies too (S3): when companies sync
    /// beside them, or the contacts come from synced companies.
    pub fn links_companies(&self) -> bool {
        self.object == SyncObject::Contacts
            && (self.companies.is_some() || self.source.from_synced_companies.is_some())
    }
}

/// What one object of a sync reads: mappings, filters, chosen properties.
struct Part {
    mappings: Vec<FieldMapping>,
    filters: Vec<Filter>,
    chosen_properties: Vec<String>,
}

/// Reads the properties, mapping and filters of the contact or company part;
/// `keys` are the config keys they came from, for errors.
fn parse_part(
    object: SyncObject,
    defaults: Vec<FieldMapping>,
    properties: &[String],
    mapping: &BTreeMap<String, toml::Value>,
    filters: &[RawFilter],
    keys: (&str, &str, &str),
) -> Result<Part> {
    let (properties_key, mapping_key, filter_key) = keys;
    let mappings = effective_mappings(object, defaults, properties, mapping).map_err(|e| {
        // Errors name `source.properties` / `mapping`; a company part's keys differ.
        let text = format!("{e:#}")
            .replacen("source.properties", properties_key, 1)
            .replacen("mapping", mapping_key, 1);
        anyhow::anyhow!(text)
    })?;
    let filters = parse_filters(filters, &mappings, filter_key)?;
    let mut chosen_properties: Vec<String> = Vec::new();
    for property in properties.iter().chain(mapping.keys()) {
        if mappings.iter().any(|m| &m.source == property) && !chosen_properties.contains(property) {
            chosen_properties.push(property.clone());
        }
    }
    Ok(Part {
        mappings,
        filters,
        chosen_properties,
    })
}

/// Deserialises TOML, reporting the failing key's path and line.
fn parse_toml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    let deserializer = toml::Deserializer::parse(text)
        .map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let line = inner
            .span()
            .map(|span| {
                format!(
                    " (line {})",
                    text[..span.start.min(text.len())].lines().count().max(1)
                )
            })
            .unwrap_or_default();
        let message = inner.message().trim_end().to_owned();
        if path == "." {
            anyhow::anyhow!("{message}{line}")
        } else {
            anyhow::anyhow!("{path}: {message}{line}")
        }
    })
}

/// The twelve operators as the config spells them (S4).
pub const FILTER_OPERATORS: [&str; 12] = [
    "equals",
    "not_equals",
    "contains",
    "not_contains",
    "gt",
    "lt",
    "is_empty",
    "is_not_empty",
    "starts_with",
    "ends_with",
    "in",
    "not_in",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config> {
        Config::parse(text, "contacts", Path::new("/etc/crmsync"))
    }

    fn err(text: &str) -> String {
        format!("{:#}", parse(text).unwrap_err())
    }

    #[test]
    fn a_minimal_config_gets_defaults() {
        let c = parse("[source]\nsystem = \"hubspot\"\ntoken_env = \"HUBSPOT_TOKEN\"\n").unwrap();
        assert_eq!(c.name, "contacts");
        assert_eq!(c.source.base_url, "https://api.hubapi.com");
        assert_eq!(
            c.source.origin,
            Origin {
                https: true,
                host: "api.hubapi.com".into(),
                port: 443
            }
        );
        assert_eq!(
            c.source.auth,
            AuthConfig::Token {
                env: "HUBSPOT_TOKEN".into()
            }
        );
        assert_eq!(c.store_path, Path::new("/etc/crmsync/contacts.sqlite"));
        assert_eq!(c.source.rate_limit, Some(HUBSPOT_DEFAULT));
        assert_eq!(
            mapped_properties(&c.mappings),
            [
                "firstname",
                "lastname",
                "email",
                "hs_additional_emails",
                "phone",
                "mobilephone"
            ]
        );
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key() {
        let e = err("[source]\nsystem = \"hubspot\"\nlistid = \"1\"\n");
        assert!(e.contains("listid"), "{e}");
        let e = err("colour = 1\n[source]\nsystem = \"hubspot\"\n");
        assert!(e.contains("colour"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        assert!(err("[source]\nsystem = \"pipedrive\"\n").contains("source.system"));
        assert!(
            err("[source]\nsystem = \"hubspot\"\nbase_url = \"ftp://x\"\n")
                .contains("source.base_url")
        );
        assert!(err("[source]\nsystem = \"hubspot\"\nlist_id = true\n").contains("source.list_id"));
        assert!(
            err("[source]\nsystem = \"hubspot\"\nportal_id = -3\n").contains("source.portal_id")
        );
        let portal = |v: &str| {
            parse(&format!(
                "[source]\nsystem = \"hubspot\"\nportal_id = {v}\n"
            ))
            .unwrap()
            .source
            .portal_id
        };
        assert_eq!(portal("62515"), Some(62515));
        assert_eq!(portal("\"62515\""), Some(62515));
        assert!(err("[source]\nsystem = \"hubspot\"\ntoken_env = \"A\"\n[source.oauth]\nclient_id_env = \"B\"\nclient_secret_env = \"C\"\nrefresh_token_env = \"D\"\n").contains("not both"));
        assert!(
            err("[source]\nsystem = \"hubspot\"\n[mapping]\njobtitle = \" \"\n")
                .contains("mapping.jobtitle")
        );
        assert!(err("[source]\n").contains("system"));
        assert!(
            err("schedule = \"sometimes\"\n[source]\nsystem = \"hubspot\"\n").contains("schedule")
        );
        assert!(
            err("[source]\nsystem = \"hubspot\"\nrate_limit = \"fast\"\n")
                .contains("source.rate_limit")
        );
    }

    #[test]
    fn mapping_replaces_extends_and_drops_defaults() {
        let c = parse(
            "[source]\nsystem = \"hubspot\"\nlist_id = 42\n[mapping]\njobtitle = \"title\"\nmobilephone = \"\"\ncompany = \"name\"\n",
        )
        .unwrap();
        assert_eq!(c.source.list_id.as_deref(), Some("42"));
        assert_eq!(c.source.portal_id, None);
        assert!(!c.mappings.iter().any(|m| m.source == "mobilephone"));
        assert!(
            c.mappings
                .iter()
                .any(|m| m.source == "jobtitle" && m.target == FieldTarget::Custom("title".into()))
        );
        assert!(
            c.mappings
                .iter()
                .any(|m| m.source == "company" && m.target == FieldTarget::FullName)
        );
    }

    #[test]
    fn an_explicit_property_list_chooses_what_syncs() {
        let c = parse("[source]\nsystem = \"hubspot\"\nproperties = [\"email\", \"jobtitle\"]\n")
            .unwrap();
        assert_eq!(mapped_properties(&c.mappings), ["email", "jobtitle"]);
        assert_eq!(c.mappings[1].target, FieldTarget::Custom("jobtitle".into()));
    }

    #[test]
    fn mappings_declare_types() {
        let c = parse(
            "[source]\nsystem = \"hubspot\"\n[mapping]\njobtitle = \"title\"\n\
             annualrevenue = { field = \"revenue\", type = \"number\" }\n\
             [mapping.hs_lead_status]\nfield = \"status\"\ntype = \"picklist\"\noptions = [\"NEW\", \"OPEN\"]\n",
        )
        .unwrap();
        let typed = |source: &str| {
            c.mappings
                .iter()
                .find(|m| m.source == source)
                .unwrap()
                .value_type
                .clone()
        };
        assert_eq!(typed("jobtitle"), FieldType::Text);
        assert_eq!(typed("annualrevenue"), FieldType::Number);
        assert_eq!(
            typed("hs_lead_status"),
            FieldType::Picklist(vec!["NEW".into(), "OPEN".into()])
        );
        for (text, key) in [
            ("x = { field = \"y\", type = \"money\" }", "mapping.x"),
            ("x = { field = \"y\", type = \"picklist\" }", "mapping.x"),
            (
                "x = { field = \"y\", type = \"number\", options = [\"1\"] }",
                "mapping.x",
            ),
            ("x = { field = \"email\", type = \"number\" }", "mapping.x"),
            ("x = { field = \"y\", colour = 1 }", "mapping.x"),
            ("x = 3", "mapping.x"),
        ] {
            let e = err(&format!(
                "[source]\nsystem = \"hubspot\"\n[mapping]\n{text}\n"
            ));
            assert!(e.contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn filters_take_the_twelve_operators_typed_as_their_field() {
        let mut text = String::from(
            "[source]\nsystem = \"hubspot\"\n[mapping]\ncountry = \"country\"\n\
             score = { field = \"score\", type = \"number\" }\n",
        );
        for op in FILTER_OPERATORS {
            let (field, value) = match op {
                "is_empty" | "is_not_empty" => ("country", String::new()),
                "in" | "not_in" => ("country", "value = [\"FR\", \"DE\"]".to_owned()),
                "gt" | "lt" => ("score", "value = 10".to_owned()),
                _ => ("email", "value = \"@acme.com\"".to_owned()),
            };
            text.push_str(&format!(
                "[[filter]]\nfield = \"{field}\"\nop = \"{op}\"\n{value}\n"
            ));
        }
        let c = parse(&text).unwrap();
        assert_eq!(c.filters.len(), 12);
        assert_eq!(c.filters[4].op, FilterOp::GreaterThan("10".into()));
        assert_eq!(c.filters[4].value_type, FieldType::Number);
        assert_eq!(c.filters[0].value_type, FieldType::Text, "a handle is text");
        assert_eq!(
            c.filters[10].op,
            FilterOp::IsAnyOf(vec!["FR".into(), "DE".into()])
        );
    }

    #[test]
    fn a_bad_filter_is_an_error_naming_it() {
        let head = "[source]\nsystem = \"hubspot\"\n[mapping]\nscore = { field = \"score\", type = \"number\" }\n\
                    [[filter]]\nfield = \"email\"\nop = \"is_not_empty\"\n";
        for (filter, says) in [
            (
                "field = \"jobtitle\"\nop = \"equals\"\nvalue = \"x\"",
                "not selected for sync",
            ),
            (
                "field = \"email\"\nop = \"like\"\nvalue = \"x\"",
                "unknown operator",
            ),
            ("field = \"email\"\nop = \"equals\"", "needs a value"),
            (
                "field = \"email\"\nop = \"is_empty\"\nvalue = \"x\"",
                "takes no value",
            ),
            ("field = \"email\"\nop = \"in\"\nvalue = \"x\"", "list"),
            ("field = \"email\"\nop = \"in\"\nvalue = []", "list"),
            (
                "field = \"score\"\nop = \"gt\"\nvalue = \"lots\"",
                "not a number",
            ),
        ] {
            let e = err(&format!("{head}[[filter]]\n{filter}\n"));
            assert!(e.contains("filter[1]") && e.contains(says), "{filter}: {e}");
        }
    }

    #[test]
    fn a_companies_part_is_its_own_sync_run_first() {
        let c = parse(
            "[source]\nsystem = \"hubspot\"\ncontacts = \"synced_companies\"\n\
             [companies]\nproperties = [\"name\", \"domain\", \"industry\"]\n\
             [[companies.filter]]\nfield = \"industry\"\nop = \"equals\"\nvalue = \"SOFTWARE\"\n",
        )
        .unwrap();
        let part = c.companies.as_deref().unwrap();
        assert_eq!(part.name, "contacts.companies");
        assert_eq!(part.object, SyncObject::Companies);
        assert_eq!(part.store_path, c.store_path);
        assert_eq!(
            mapped_properties(&part.mappings),
            ["name", "domain", "industry"]
        );
        assert_eq!(part.mappings[1].target, FieldTarget::Domain);
        assert_eq!(part.filters.len(), 1);
        assert_eq!(
            c.source.from_synced_companies.as_deref(),
            Some("contacts.companies")
        );
        assert!(c.links_companies() && !part.links_companies());
        assert_eq!(
            c.mappings,
            default_mappings(),
            "the contact part keeps its own"
        );
    }

    #[test]
    fn company_choices_that_contradict_are_errors_naming_the_key() {
        let head = "[source]\nsystem = \"hubspot\"\n";
        for (text, key) in [
            ("contacts = \"synced_companies\"\n", "source.contacts"),
            ("contacts = \"friends\"\n", "source.contacts"),
            ("object = \"deals\"\n", "source.object"),
            ("companies_sync = \"x\"\n", "source.companies_sync"),
            (
                "contacts = \"synced_companies\"\nlist_id = 4\n[companies]\n",
                "source.contacts",
            ),
            (
                "contacts = \"synced_companies\"\ncompanies_sync = \"x\"\n[companies]\n",
                "source.companies_sync",
            ),
            ("object = \"companies\"\n[companies]\n", "companies"),
            (
                "object = \"companies\"\n[mapping]\nname = \"email\"\n",
                "mapping.name",
            ),
            (
                "[companies]\n[[companies.filter]]\nfield = \"email\"\nop = \"is_empty\"\n",
                "companies.filter[0]",
            ),
        ] {
            let e = err(&format!("{head}{text}"));
            assert!(e.contains(key), "{text}: {e}");
        }
        let c = parse(&format!(
            "{head}contacts = \"synced_companies\"\ncompanies_sync = \"crm-companies\"\n"
        ))
        .unwrap();
        assert_eq!(
            c.source.from_synced_companies.as_deref(),
            Some("crm-companies")
        );
        assert!(c.companies.is_none() && c.links_companies());
    }

    #[test]
    fn a_salesforce_source_reads_leads_then_contacts_by_default() {
        let c = parse(
            "[source]\nsystem = \"salesforce\"\nbase_url = \"https://acme.my.salesforce.com/\"\n\
             token_env = \"SF_TOKEN\"\nobjects = [\"Contact\", \"Lead\"]\n",
        )
        .unwrap();
        assert_eq!(
            c.source.system,
            SourceSystem::Salesforce {
                api_version: "v60.0".into(),
                objects: vec![SalesforceObject::Lead, SalesforceObject::Contact],
            }
        );
        assert_eq!(c.source.rate_limit, None);
        assert_eq!(
            c.token_url(),
            "https://acme.my.salesforce.com/services/oauth2/token"
        );
        assert_eq!(
            mapped_properties(&c.mappings),
            [
                "FirstName",
                "LastName",
                "Email",
                "Phone",
                "MobilePhone",
                "record_type",
                "lead_status"
            ]
        );
        let head = "[source]\nsystem = \"salesforce\"\n";
        for (text, key) in [
            ("", "source.base_url"),
            (
                "base_url = \"https://x\"\napi_version = \"60\"\n",
                "source.api_version",
            ),
            ("base_url = \"https://x\"\n[companies]\n", "add \"Account\""),
            (
                "base_url = \"https://x\"\nobjects = [\"Opportunity\"]\n",
                "source.objects",
            ),
            ("base_url = \"https://x\"\nobjects = []\n", "source.objects"),
            ("base_url = \"https://x\"\nlist_id = 4\n", "HubSpot choices"),
            (
                "base_url = \"https://x\"\nportal_id = 4\n",
                "HubSpot choices",
            ),
        ] {
            let e = err(&format!("{head}{text}"));
            assert!(e.contains(key), "{text}: {e}");
        }
        assert!(
            err("[source]\nsystem = \"hubspot\"\nobjects = [\"Lead\"]\n")
                .contains("Salesforce keys")
        );
        let both = parse(
            "[source]\nsystem = \"salesforce\"\nbase_url = \"https://x\"\nobjects = [\"Contact\", \"Account\"]\n",
        )
        .unwrap();
        let accounts = both.companies.as_deref().unwrap();
        assert_eq!(accounts.object, SyncObject::Companies);
        assert_eq!(
            accounts.source.system,
            SourceSystem::Salesforce {
                api_version: "v60.0".into(),
                objects: vec![SalesforceObject::Account]
            }
        );
        assert_eq!(mapped_properties(&accounts.mappings), ["Name", "Website"]);
        assert!(both.links_companies());
        let only = parse(
            "[source]\nsystem = \"salesforce\"\nbase_url = \"https://x\"\nobjects = [\"Account\"]\n",
        )
        .unwrap();
        assert_eq!(
            (only.object, only.companies.is_none()),
            (SyncObject::Companies, true)
        );
    }

    #[test]
    fn plain_http_is_for_loopback_only_unless_allowed_and_names_the_key() {
        for loopback in [
            "http://127.0.0.1:9",
            "http://127.8.9.1",
            "http://localhost:80",
            "http://[::1]:8080",
        ] {
            parse(&format!(
                "[source]\nsystem = \"hubspot\"\nbase_url = \"{loopback}\"\ntoken_env = \"T\"\n"
            ))
            .unwrap_or_else(|e| panic!("{loopback}: {e:#}"));
        }
        let message = err(
            "[source]\nsystem = \"hubspot\"\nbase_url = \"http://api.example.com\"\ntoken_env = \"T\"\n",
        );
        assert!(
            message.starts_with("source.base_url: plain http://"),
            "{message}"
        );
        assert!(message.contains("allow_plain_http"), "{message}");
        let message = err(
            "[source]\nsystem = \"hubspot\"\nbase_url = \"https://api.hubapi.com\"\n\
             [destination]\nsystem = \"salesforce\"\nbase_url = \"http://10.0.0.5\"\ntoken_env = \"T\"\n",
        );
        assert!(
            message.starts_with("destination.base_url: plain http://"),
            "{message}"
        );
        let message = err(
            "notify = { webhook = \"http://hooks.example.com/x\" }\n[source]\nsystem = \"hubspot\"\n",
        );
        assert!(
            message.starts_with("notify.webhook: plain http://"),
            "{message}"
        );
        // The documented opt-in for a TLS-terminating proxy on a private network.
        parse("[source]\nsystem = \"hubspot\"\nbase_url = \"http://crm-proxy.internal\"\nallow_plain_http = true\n")
            .unwrap();
    }
}
