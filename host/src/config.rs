//! The sync configuration: one TOML file per sync (see `examples/hubspot.toml`).
//!
//! Every problem is reported once, naming the key. Unknown keys are errors:
//! a misspelt `list_id` that silently synced every contact would be worse than
//! a refusal.

use crate::bindings::crmsync::sync::types::{FieldMapping, FieldTarget};
use crate::notify::NotifyConfig;
use crate::rate_limit::{HUBSPOT_DEFAULT, HUBSPOT_SEARCH_DEFAULT, RateLimit};
use crate::schedule::{DEFAULT_SCHEDULE, Schedule, parse_duration};
use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Default cap on one API answer: a HubSpot page of 100 contacts with many
/// properties is well under 1 MiB.
pub const DEFAULT_MAX_RESPONSE_MB: u32 = 32;

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
    /// The properties the user named (`source.properties`, `[mapping]` keys).
    /// Only these are checked against the source's catalogue (E6): the
    /// default ones are HubSpot-defined and cannot be deleted.
    pub chosen_properties: Vec<String>,
    pub store_path: PathBuf,
    /// When the daemon runs the sync by itself (R1).
    pub schedule: Schedule,
    /// Who hears about runs that need attention.
    pub notify: NotifyConfig,
}

/// Where records come from and how to authenticate.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub base_url: String,
    /// The origin (`scheme://host[:port]`) the component may call.
    pub origin: Origin,
    pub auth: AuthConfig,
    pub list_id: Option<String>,
    /// The account's request budget (`None`: unlimited, for local servers).
    pub rate_limit: Option<RateLimit>,
    /// The search API's own budget, used by incremental runs.
    pub search_rate_limit: Option<RateLimit>,
    /// Incremental runs re-read changes this far before the bookmark.
    pub lookback: std::time::Duration,
    /// Larger answers fail the request instead of filling memory.
    pub max_response_bytes: usize,
}

/// How the host authenticates to the source. The values are names of
/// environment variables; secrets never live in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthConfig {
    /// A private-app access token.
    Token { env: String },
    /// OAuth 2 refresh-token grant.
    OAuth(OAuthEnv),
    /// Neither configured: requests go out without credentials (a local
    /// test server); HubSpot itself answers 401, reported as `auth-invalid`.
    None,
}

/// The environment variables holding the OAuth client and refresh token.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthEnv {
    pub client_id_env: String,
    pub client_secret_env: String,
    pub refresh_token_env: String,
}

/// `scheme://host:port` of an allowed API host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub https: bool,
    pub host: String,
    pub port: u16,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    name: Option<String>,
    schedule: Option<String>,
    source: RawSource,
    #[serde(default)]
    mapping: BTreeMap<String, String>,
    store: Option<RawStore>,
    #[serde(default)]
    notify: NotifyConfig,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    system: String,
    base_url: Option<String>,
    token_env: Option<String>,
    oauth: Option<OAuthEnv>,
    list_id: Option<toml::Value>,
    rate_limit: Option<String>,
    search_rate_limit: Option<String>,
    lookback: Option<String>,
    max_response_mb: Option<u32>,
    #[serde(default)]
    properties: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    path: Option<PathBuf>,
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
            Origin::parse(url).context("notify.webhook")?;
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
        if source.system != "hubspot" {
            bail!(
                "source.system: unsupported system {:?} (supported: \"hubspot\")",
                source.system
            );
        }
        let base_url = source
            .base_url
            .unwrap_or_else(|| DEFAULT_HUBSPOT_BASE_URL.to_owned())
            .trim_end_matches('/')
            .to_owned();
        let origin = Origin::parse(&base_url).context("source.base_url")?;
        let auth = match (source.token_env, source.oauth) {
            (Some(_), Some(_)) => {
                bail!("source: set either source.token_env or source.oauth, not both")
            }
            (Some(env), None) if env.trim().is_empty() => {
                bail!("source.token_env: must name an environment variable")
            }
            (Some(env), None) => AuthConfig::Token { env },
            (None, Some(oauth)) => {
                for (key, value) in [
                    ("client_id_env", &oauth.client_id_env),
                    ("client_secret_env", &oauth.client_secret_env),
                    ("refresh_token_env", &oauth.refresh_token_env),
                ] {
                    if value.trim().is_empty() {
                        bail!("source.oauth.{key}: must name an environment variable");
                    }
                }
                AuthConfig::OAuth(oauth)
            }
            (None, None) => AuthConfig::None,
        };
        let rate_limit = match &source.rate_limit {
            Some(text) => RateLimit::parse(text).context("source.rate_limit")?,
            None => Some(HUBSPOT_DEFAULT),
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

        let mappings = effective_mappings(&source.properties, &raw.mapping)?;
        let mut chosen_properties: Vec<String> = Vec::new();
        for property in source.properties.iter().chain(raw.mapping.keys()) {
            if mappings.iter().any(|m| &m.source == property)
                && !chosen_properties.contains(property)
            {
                chosen_properties.push(property.clone());
            }
        }

        let store_path = raw
            .store
            .and_then(|s| s.path)
            .unwrap_or_else(|| PathBuf::from(format!("{name}.sqlite")));
        if store_path.as_os_str().is_empty() {
            bail!("store.path: must not be empty");
        }
        let store_path = if store_path.is_absolute() {
            store_path
        } else {
            dir.join(store_path)
        };

        Ok(Config {
            name,
            source: SourceConfig {
                base_url,
                origin,
                auth,
                list_id,
                rate_limit,
                search_rate_limit,
                lookback,
                max_response_bytes,
            },
            mappings,
            chosen_properties,
            store_path,
            schedule,
            notify: raw.notify,
        })
    }
}

/// The source properties `mappings` read, each once, in mapping order.
pub fn mapped_properties(mappings: &[FieldMapping]) -> Vec<String> {
    let mut properties: Vec<String> = Vec::new();
    for m in mappings {
        if !properties.contains(&m.source) {
            properties.push(m.source.clone());
        }
    }
    properties
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

/// The default HubSpot mappings, then each `source.properties` entry (to a
/// field of the same name unless it has a default), then `[mapping]`, which
/// replaces the target of a property already mapped. An empty target drops it.
fn effective_mappings(
    properties: &[String],
    mapping: &BTreeMap<String, String>,
) -> Result<Vec<FieldMapping>> {
    let mut mappings: Vec<FieldMapping> = default_mappings();
    if !properties.is_empty() {
        for (index, property) in properties.iter().enumerate() {
            if property.trim().is_empty() {
                bail!("source.properties[{index}]: a property name must not be empty");
            }
        }
        // An explicit property list chooses which fields sync (M1): defaults
        // outside it are dropped.
        mappings.retain(|m| properties.contains(&m.source));
        for property in properties {
            if !mappings.iter().any(|m| &m.source == property) {
                mappings.push(FieldMapping {
                    source: property.clone(),
                    target: FieldTarget::Custom(property.clone()),
                });
            }
        }
    }
    for (source, target) in mapping {
        if source.trim().is_empty() {
            bail!("mapping: a source property name must not be empty");
        }
        let target = match target.as_str() {
            "" => {
                mappings.retain(|m| &m.source != source);
                continue;
            }
            "name" => FieldTarget::FullName,
            "first_name" => FieldTarget::FirstName,
            "last_name" => FieldTarget::LastName,
            "email" => FieldTarget::Email,
            "phone" => FieldTarget::Phone,
            custom if custom.trim().is_empty() => {
                bail!("mapping.{source}: the destination field name must not be blank")
            }
            custom => FieldTarget::Custom(custom.to_owned()),
        };
        match mappings.iter_mut().find(|m| &m.source == source) {
            Some(existing) => existing.target = target,
            None => mappings.push(FieldMapping {
                source: source.clone(),
                target,
            }),
        }
    }
    Ok(mappings)
}

/// A mapping target as the config spells it (`first_name`, `email`, a field name).
pub fn target_name(target: &FieldTarget) -> String {
    match target {
        FieldTarget::FirstName => "first_name".to_owned(),
        FieldTarget::LastName => "last_name".to_owned(),
        FieldTarget::FullName => "name".to_owned(),
        FieldTarget::Email => "email".to_owned(),
        FieldTarget::Phone => "phone".to_owned(),
        FieldTarget::Custom(name) => name.clone(),
    }
}

/// HubSpot's standard contact fields and where they land (M1, M2, M3).
pub fn default_mappings() -> Vec<FieldMapping> {
    [
        ("firstname", FieldTarget::FirstName),
        ("lastname", FieldTarget::LastName),
        ("email", FieldTarget::Email),
        ("hs_additional_emails", FieldTarget::Email),
        ("phone", FieldTarget::Phone),
        ("mobilephone", FieldTarget::Phone),
    ]
    .into_iter()
    .map(|(source, target)| FieldMapping {
        source: source.to_owned(),
        target,
    })
    .collect()
}

impl Origin {
    /// Parses the origin of an `http://` or `https://` URL.
    pub fn parse(url: &str) -> Result<Self> {
        let uri: http::Uri = url
            .parse()
            .with_context(|| format!("{url:?} is not a valid URL"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => bail!("{url:?} is not an http:// or https:// URL"),
        };
        let Some(authority) = uri.authority() else {
            bail!("{url:?} has no host");
        };
        if authority.as_str().contains('@') {
            bail!("{url:?} carries credentials; they belong in environment variables");
        }
        Ok(Origin {
            https,
            host: authority.host().to_ascii_lowercase(),
            port: authority.port_u16().unwrap_or(if https { 443 } else { 80 }),
        })
    }

    /// Whether a request URI goes to this origin.
    pub fn allows(&self, uri: &http::Uri) -> bool {
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return false,
        };
        let Some(host) = uri.host() else {
            return false;
        };
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        https == self.https && host.eq_ignore_ascii_case(&self.host) && port == self.port
    }
}

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
    fn origins_match_scheme_host_and_port() {
        let o = Origin::parse("http://127.0.0.1:8080/base").unwrap();
        assert!(
            o.allows(
                &"http://127.0.0.1:8080/crm/v3/objects/contacts"
                    .parse()
                    .unwrap()
            )
        );
        assert!(!o.allows(&"http://127.0.0.1:8081/x".parse().unwrap()));
        assert!(!o.allows(&"https://127.0.0.1:8080/x".parse().unwrap()));
        assert!(!o.allows(&"http://evil.example:8080/x".parse().unwrap()));
        let o = Origin::parse("https://API.hubapi.com").unwrap();
        assert!(o.allows(&"https://api.hubapi.com/crm".parse().unwrap()));
        assert!(Origin::parse("https://user:pw@api.hubapi.com").is_err());
    }
}
