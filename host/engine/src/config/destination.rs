//! `[destination]`: where a sync writes. The embedded store by default; or a
//! CRM (HubSpot, Salesforce), with each mapped field's direction and conflict
//! rule (M6) so the sync can run both ways.

use super::{
    AuthConfig, OAuthEnv, Origin, SourceSystem, SyncObject, parse_auth, parse_type,
    salesforce_objects,
};
use crate::bindings::crmsync::sync::types::{
    ConflictRule, Direction, FieldMapping, FieldTarget, FieldType, SalesforceObject,
};
use crate::rate_limit::{HUBSPOT_DEFAULT, RateLimit};
use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::collections::BTreeMap;

/// The property a Salesforce person read gains: `lead` or `contact` (X8).
pub const RECORD_TYPE: &str = "record_type";

/// The `[destination]` table as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDestination {
    system: Option<String>,
    base_url: Option<String>,
    token_env: Option<String>,
    oauth: Option<OAuthEnv>,
    rate_limit: Option<String>,
    api_version: Option<String>,
    objects: Option<Vec<String>>,
    /// The direction of every mapping that does not name its own.
    direction: Option<String>,
    /// The conflict rule of every `both` mapping that does not name its own.
    conflict: Option<String>,
    /// Plain `http://` to a host other than loopback (a TLS-terminating proxy).
    #[serde(default)]
    allow_plain_http: bool,
}

/// A CRM a sync writes to (and, two-way, reads from).
#[derive(Debug, Clone)]
pub struct CrmDestination {
    pub system: SourceSystem,
    pub base_url: String,
    /// The origin the component may call for the destination.
    pub origin: Origin,
    pub auth: AuthConfig,
    pub rate_limit: Option<RateLimit>,
    /// People (contacts, Leads) or companies (HubSpot companies, Salesforce
    /// Accounts): a config's `[companies]` part is a sync of its own.
    pub object: SyncObject,
    /// The mapped fields, in config order.
    pub fields: Vec<SyncField>,
    /// `destination.direction` and `destination.conflict` (or their
    /// defaults): what a link the sync keeps itself, a contact's company,
    /// follows.
    pub direction: Direction,
    pub conflict: ConflictRule,
}

/// One mapped field between two CRMs.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncField {
    /// The source's property (HubSpot) or field (Salesforce) name.
    pub source: String,
    /// The destination's.
    pub destination: String,
    pub value_type: FieldType,
    pub direction: Direction,
    /// Used when `direction` is `both` and both sides changed.
    pub conflict: ConflictRule,
    /// `type = "owner"`: the values are owner ids (`hubspot_owner_id`,
    /// `OwnerId`), carried across by the owners' emails.
    pub owner: bool,
}

impl CrmDestination {
    /// The field whose values are the handle records are matched by across
    /// the two CRMs: the one mapping the source's standard email field (X3),
    /// or for companies its domain (HubSpot `domain`, Salesforce `Website`).
    pub fn handle_field(&self, source: &SourceSystem) -> Option<&SyncField> {
        let concept = match self.object {
            SyncObject::Contacts => Concept::Email,
            SyncObject::Companies => Concept::Domain,
        };
        self.fields
            .iter()
            .find(|f| f.source == standard(source, concept))
    }

    /// Whether any field flows back to the source: then the destination is
    /// read too, and records it has alone are created at the source.
    pub fn two_way(&self) -> bool {
        self.fields
            .iter()
            .any(|f| matches!(f.direction, Direction::ToSource | Direction::Both))
    }

    /// The OAuth token endpoint of the destination.
    pub fn token_url(&self) -> String {
        super::token_url(&self.system, &self.base_url)
    }
}

/// The standard fields both CRMs have, for the default mappings.
#[derive(Clone, Copy)]
enum Concept {
    FirstName,
    LastName,
    Email,
    Phone,
    Title,
    Company,
    CompanyName,
    Domain,
    CompanyPhone,
}

const PERSON_CONCEPTS: [Concept; 6] = [
    Concept::FirstName,
    Concept::LastName,
    Concept::Email,
    Concept::Phone,
    Concept::Title,
    Concept::Company,
];

/// A company's name, domain and phone: what both CRMs hold alike. Industry
/// is left out on purpose: the two CRMs' picklists have different values.
const COMPANY_CONCEPTS: [Concept; 3] =
    [Concept::CompanyName, Concept::Domain, Concept::CompanyPhone];

fn standard(system: &SourceSystem, concept: Concept) -> &'static str {
    match (system, concept) {
        (SourceSystem::Hubspot, Concept::FirstName) => "firstname",
        (SourceSystem::Hubspot, Concept::LastName) => "lastname",
        (SourceSystem::Hubspot, Concept::Email) => "email",
        (SourceSystem::Hubspot, Concept::Phone) => "phone",
        (SourceSystem::Hubspot, Concept::Title) => "jobtitle",
        (SourceSystem::Hubspot, Concept::Company) => "company",
        (SourceSystem::Salesforce { .. }, Concept::FirstName) => "FirstName",
        (SourceSystem::Salesforce { .. }, Concept::LastName) => "LastName",
        (SourceSystem::Salesforce { .. }, Concept::Email) => "Email",
        (SourceSystem::Salesforce { .. }, Concept::Phone) => "Phone",
        (SourceSystem::Salesforce { .. }, Concept::Title) => "Title",
        // Leads only: a Lead needs it, and writes to Contacts leave it out.
        (SourceSystem::Salesforce { .. }, Concept::Company) => "Company",
        (SourceSystem::Hubspot, Concept::CompanyName) => "name",
        (SourceSystem::Hubspot, Concept::Domain) => "domain",
        (SourceSystem::Hubspot, Concept::CompanyPhone) => "phone",
        (SourceSystem::Salesforce { .. }, Concept::CompanyName) => "Name",
        (SourceSystem::Salesforce { .. }, Concept::Domain) => "Website",
        (SourceSystem::Salesforce { .. }, Concept::CompanyPhone) => "Phone",
    }
}

/// Whether the table names a CRM. `system = "store"` (the default) takes
/// no other key: they would be silently unused.
pub(super) fn names_crm(raw: &RawDestination) -> Result<bool> {
    if raw.system.as_deref().is_some_and(|s| s != "store") {
        return Ok(true);
    }
    let set = [
        ("base_url", raw.base_url.is_some()),
        ("token_env", raw.token_env.is_some()),
        ("oauth", raw.oauth.is_some()),
        ("rate_limit", raw.rate_limit.is_some()),
        ("api_version", raw.api_version.is_some()),
        ("objects", raw.objects.is_some()),
        ("direction", raw.direction.is_some()),
        ("conflict", raw.conflict.is_some()),
    ];
    if let Some((key, _)) = set.iter().find(|(_, set)| *set) {
        bail!(
            "destination.{key}: only for a CRM destination; set destination.system to \"hubspot\" \
             or \"salesforce\", or remove it (the store needs none)"
        );
    }
    Ok(false)
}

/// Whether `[destination]` lists Salesforce Accounts: then the sync has a
/// company part, as it has with a `[companies]` table.
pub(super) fn lists_accounts(raw: &RawDestination) -> bool {
    raw.objects
        .as_ref()
        .is_some_and(|objects| objects.iter().any(|o| o == "Account"))
}

/// Parses a `[destination]` naming a CRM for `object`'s part of the sync,
/// with its `mapping` (`[mapping]` for people, `[companies.mapping]` for
/// companies: source property = destination field, or a table with
/// `field`, `type`, `options`, `direction`, `conflict`). `source` reads
/// that part's objects.
pub(super) fn parse(
    raw: &RawDestination,
    source: &SourceSystem,
    mapping: &BTreeMap<String, toml::Value>,
    object: SyncObject,
) -> Result<CrmDestination> {
    let mapping_key = match object {
        SyncObject::Contacts => "mapping",
        SyncObject::Companies => "companies.mapping",
    };
    let system = match raw.system.as_deref() {
        Some("hubspot") => {
            if raw.api_version.is_some() || raw.objects.is_some() {
                bail!(
                    "destination.api_version, destination.objects: Salesforce keys; this \
                     destination is HubSpot"
                );
            }
            SourceSystem::Hubspot
        }
        Some("salesforce") => {
            let SourceSystem::Salesforce {
                api_version,
                objects,
            } = salesforce_objects(
                raw.api_version.as_deref(),
                raw.objects.as_deref(),
                "destination",
            )?
            else {
                unreachable!("salesforce_objects gives a Salesforce system")
            };
            // People go to Leads and Contacts; Accounts are the company part's.
            let objects: Vec<SalesforceObject> = match object {
                SyncObject::Contacts => objects
                    .into_iter()
                    .filter(|o| *o != SalesforceObject::Account)
                    .collect(),
                SyncObject::Companies => vec![SalesforceObject::Account],
            };
            if objects.is_empty() {
                bail!(
                    "destination.objects: a sync into a CRM writes people; list \"Lead\" or \
                     \"Contact\" beside \"Account\""
                );
            }
            SourceSystem::Salesforce {
                api_version,
                objects,
            }
        }
        other => bail!(
            "destination.system: unsupported system {:?} (supported: \"store\", \"hubspot\", \
             \"salesforce\")",
            other.unwrap_or_default()
        ),
    };
    let base_url = match (&raw.base_url, &system) {
        (Some(url), _) => url.trim_end_matches('/').to_owned(),
        (None, SourceSystem::Hubspot) => super::DEFAULT_HUBSPOT_BASE_URL.to_owned(),
        (None, SourceSystem::Salesforce { .. }) => bail!(
            "destination.base_url: a Salesforce destination needs the org's instance URL \
             (e.g. \"https://acme.my.salesforce.com\")"
        ),
    };
    let origin = Origin::parse(&base_url).context("destination.base_url")?;
    origin
        .require_tls(raw.allow_plain_http)
        .context("destination.base_url")?;
    let auth = parse_auth(raw.token_env.clone(), raw.oauth.clone(), "destination")?;
    let rate_limit = match (&raw.rate_limit, &system) {
        (Some(text), _) => RateLimit::parse(text).context("destination.rate_limit")?,
        (None, SourceSystem::Hubspot) => Some(HUBSPOT_DEFAULT),
        (None, SourceSystem::Salesforce { .. }) => None,
    };
    let direction = parse_direction(raw.direction.as_deref().unwrap_or("to_destination"))
        .context("destination.direction")?;
    let default_conflict = match raw.conflict.as_deref() {
        Some(text) => parse_conflict(text, source, &system).context("destination.conflict")?,
        // HubSpot's Salesforce connector defaults to "prefer Salesforce unless blank".
        None => match (source, &system) {
            (SourceSystem::Salesforce { .. }, SourceSystem::Hubspot) => {
                ConflictRule::PreferSourceUnlessBlank
            }
            (SourceSystem::Hubspot, SourceSystem::Salesforce { .. }) => {
                ConflictRule::PreferDestinationUnlessBlank
            }
            _ => ConflictRule::MostRecent,
        },
    };
    let concepts: &[Concept] = match object {
        SyncObject::Contacts => &PERSON_CONCEPTS,
        SyncObject::Companies => &COMPANY_CONCEPTS,
    };
    let mut fields: Vec<SyncField> = concepts
        .iter()
        .map(|c| SyncField {
            source: standard(source, *c).to_owned(),
            destination: standard(&system, *c).to_owned(),
            value_type: FieldType::Text,
            direction,
            conflict: default_conflict,
            owner: false,
        })
        // Company is a Lead field: without Leads there is nothing to fill.
        .filter(|f| f.destination != "Company" || writes_leads(&system))
        .filter(|f| f.source != "Company" || writes_leads(source))
        .collect();
    for (property, target) in mapping {
        if property.trim().is_empty() {
            bail!("{mapping_key}: a source property name must not be empty");
        }
        let key = format!("{mapping_key}.{property}");
        let field = match target {
            toml::Value::String(field) => SyncField {
                source: property.clone(),
                destination: field.clone(),
                value_type: FieldType::Text,
                direction,
                conflict: default_conflict,
                owner: false,
            },
            toml::Value::Table(_) => {
                let table: RawField = target
                    .clone()
                    .try_into()
                    .map_err(|e| anyhow::anyhow!("{key}: {}", e.message()))?;
                let owner = table.value_type.as_deref() == Some("owner");
                if owner && table.options.is_some() {
                    bail!("{key}: an owner field takes no options: its values are the CRM's users");
                }
                SyncField {
                    source: property.clone(),
                    destination: table.field,
                    owner,
                    value_type: if owner {
                        FieldType::Text
                    } else {
                        parse_type(table.value_type.as_deref(), table.options)
                            .with_context(|| key.clone())?
                    },
                    direction: match table.direction.as_deref() {
                        Some(text) => parse_direction(text).with_context(|| key.clone())?,
                        None => direction,
                    },
                    conflict: match table.conflict.as_deref() {
                        Some(text) => {
                            parse_conflict(text, source, &system).with_context(|| key.clone())?
                        }
                        None => default_conflict,
                    },
                }
            }
            other => bail!(
                "{key}: expected a destination field name or a table {{ field = \"...\", \
                 direction = \"...\" }}, got {other}"
            ),
        };
        fields.retain(|f| f.source != field.source);
        if field.destination.is_empty() {
            // An empty target drops a default mapping.
            continue;
        }
        if let Some(taken) = fields.iter().find(|f| f.destination == field.destination) {
            bail!(
                "{key}: destination field {:?} is already filled from {:?}",
                field.destination,
                taken.source
            );
        }
        fields.push(field);
    }
    if fields.is_empty() {
        bail!("{mapping_key}: every field is unmapped; map at least one");
    }
    Ok(CrmDestination {
        system,
        base_url,
        origin,
        auth,
        rate_limit,
        object,
        fields,
        direction,
        conflict: default_conflict,
    })
}

fn writes_leads(system: &SourceSystem) -> bool {
    match system {
        SourceSystem::Salesforce { objects, .. } => objects.contains(&SalesforceObject::Lead),
        SourceSystem::Hubspot => false,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawField {
    field: String,
    #[serde(rename = "type")]
    value_type: Option<String>,
    options: Option<Vec<String>>,
    direction: Option<String>,
    conflict: Option<String>,
}

fn parse_direction(text: &str) -> Result<Direction> {
    Ok(match text {
        "to_destination" => Direction::ToDestination,
        "to_source" => Direction::ToSource,
        "both" => Direction::Both,
        other => bail!(
            "direction: unknown direction {other:?} (expected \"to_destination\", \"to_source\" \
             or \"both\")"
        ),
    })
}

/// A conflict rule; `hubspot_wins`, `salesforce_wins` and
/// `prefer_salesforce_unless_blank` name a system, which must be one side.
fn parse_conflict(
    text: &str,
    source: &SourceSystem,
    destination: &SourceSystem,
) -> Result<ConflictRule> {
    let is_salesforce = |s: &SourceSystem| matches!(s, SourceSystem::Salesforce { .. });
    let side = |salesforce: bool| -> Result<bool> {
        // true: the source side.
        match (
            is_salesforce(source) == salesforce,
            is_salesforce(destination) == salesforce,
        ) {
            (true, false) => Ok(true),
            (false, true) => Ok(false),
            _ => bail!(
                "conflict: {text:?} names a system that is not exactly one side of this sync; use \
                 \"source_wins\" or \"destination_wins\""
            ),
        }
    };
    let wins = |source_side: bool| {
        if source_side {
            ConflictRule::SourceWins
        } else {
            ConflictRule::DestinationWins
        }
    };
    Ok(match text {
        "source_wins" => ConflictRule::SourceWins,
        "destination_wins" => ConflictRule::DestinationWins,
        "most_recent" => ConflictRule::MostRecent,
        "prefer_source_unless_blank" => ConflictRule::PreferSourceUnlessBlank,
        "prefer_destination_unless_blank" => ConflictRule::PreferDestinationUnlessBlank,
        "hubspot_wins" => wins(side(false)?),
        "salesforce_wins" => wins(side(true)?),
        "prefer_salesforce_unless_blank" => {
            if side(true)? {
                ConflictRule::PreferSourceUnlessBlank
            } else {
                ConflictRule::PreferDestinationUnlessBlank
            }
        }
        other => bail!(
            "conflict: unknown rule {other:?} (expected \"source_wins\", \"destination_wins\", \
             \"most_recent\", \"hubspot_wins\", \"salesforce_wins\", \
             \"prefer_salesforce_unless_blank\", \"prefer_source_unless_blank\" or \
             \"prefer_destination_unless_blank\")"
        ),
    })
}

/// What one side reads for the sync's fields: each field under its key
/// (the source's name), typed, plus the handle (the email, M3, or a
/// company's domain, normalised) and, for Salesforce people, the record
/// type that says which object an id is.
pub fn read_mappings(
    crm: &CrmDestination,
    side: impl Fn(&SyncField) -> &str,
    source: &SourceSystem,
    salesforce: bool,
) -> Vec<FieldMapping> {
    let fields = &crm.fields;
    let mut mappings: Vec<FieldMapping> = fields
        .iter()
        .map(|f| FieldMapping {
            source: side(f).to_owned(),
            target: FieldTarget::Custom(f.source.clone()),
            value_type: f.value_type.clone(),
        })
        .collect();
    if let Some(handle) = crm.handle_field(source) {
        mappings.push(FieldMapping {
            source: side(handle).to_owned(),
            target: match crm.object {
                SyncObject::Contacts => FieldTarget::Email,
                SyncObject::Companies => FieldTarget::Domain,
            },
            value_type: FieldType::Text,
        });
    }
    if salesforce && crm.object == SyncObject::Contacts {
        mappings.push(FieldMapping {
            source: RECORD_TYPE.to_owned(),
            target: FieldTarget::Custom(RECORD_TYPE.to_owned()),
            value_type: FieldType::Text,
        });
    }
    mappings
}
