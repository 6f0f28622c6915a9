//! The syncs a console serves: its config files, each found by its sync's
//! name, and what each one's store says — status, runs, errors, contacts —
//! read when asked (the store is the truth; several runners may share it).

use crate::live::{Live, Progress};
use anyhow::{Context, Result, bail};
use crmsync_engine::config::{Config, SourceSystem, config_files};
use crmsync_engine::status::{Status, status};
use serde::Serialize;
use std::path::PathBuf;

/// One served sync.
#[derive(Debug, Clone)]
pub struct Served {
    pub name: String,
    pub file: PathBuf,
}

impl Served {
    /// Its config, read again (edits show at once).
    pub fn config(&self) -> Result<Config> {
        Config::load(&self.file)
    }
}

/// Every served sync, in the order of their files.
#[derive(Debug, Clone)]
pub struct Catalog {
    syncs: Vec<Served>,
}

/// A sync as the console's list, its page and `GET /api/syncs` show it:
/// `crmsync status --json` with its name, source and live progress.
#[derive(Debug, Serialize)]
pub struct SyncView {
    pub name: String,
    /// `hubspot` or `salesforce`.
    pub system: &'static str,
    /// The HubSpot portal whose webhooks trigger it (`source.portal_id`).
    pub portal_id: Option<u64>,
    #[serde(flatten)]
    pub status: Status,
    /// The run in progress in this runner, if one is.
    pub progress: Option<Progress>,
}

impl Catalog {
    /// Reads the configs of `paths` (files, or folders of `*.toml`). Names
    /// address syncs in URLs, so two configs naming one sync are refused.
    pub fn load(paths: &[PathBuf]) -> Result<Catalog> {
        let mut syncs: Vec<Served> = Vec::new();
        for file in config_files(paths)? {
            let config = Config::load(&file)?;
            if let Some(other) = syncs.iter().find(|s| s.name == config.name) {
                bail!(
                    "{} and {} both name the sync {:?}: give one a different `name` to serve both",
                    other.file.display(),
                    file.display(),
                    config.name
                );
            }
            syncs.push(Served {
                name: config.name,
                file,
            });
        }
        Ok(Catalog { syncs })
    }

    /// Every served sync.
    pub fn syncs(&self) -> &[Served] {
        &self.syncs
    }

    /// The config of the sync named `name`, read again (edits show at once).
    pub fn config(&self, name: &str) -> Result<Option<Config>> {
        self.syncs
            .iter()
            .find(|s| s.name == name)
            .map(Served::config)
            .transpose()
    }

    /// The syncs reading HubSpot portal `portal`.
    pub fn for_portal(&self, portal: u64) -> Vec<Config> {
        self.syncs
            .iter()
            .filter_map(|served| match served.config() {
                Ok(config) => Some(config),
                Err(error) => {
                    tracing::warn!("webhook: {error:#}");
                    None
                }
            })
            .filter(|config| {
                matches!(config.source.system, SourceSystem::Hubspot)
                    && config.source.portal_id == Some(portal)
            })
            .collect()
    }

    /// The view of `config`'s sync.
    pub fn view(&self, config: &Config, live: &Live) -> Result<SyncView> {
        let status = status(config)
            .with_context(|| format!("reading the store of sync {:?}", config.name))?;
        Ok(SyncView {
            name: config.name.clone(),
            system: match config.source.system {
                SourceSystem::Hubspot => "hubspot",
                SourceSystem::Salesforce { .. } => "salesforce",
            },
            portal_id: config.source.portal_id,
            status,
            progress: live.running(&config.name),
        })
    }
}
