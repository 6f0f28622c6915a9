//! One sync's status (R2): its state, last and next run, records at the
//! source and synced, open errors — what `crmsync status`, the console and
//! its JSON API show, read from the sync's store.

use crate::config::{Config, SyncObject};
use crate::store::{Control, ErrorRow, RunRow, Store};
use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;

/// When the sync is next due by its schedule.
pub fn next_run(config: &Config, last: Option<&RunRow>) -> DateTime<Utc> {
    let last_start = last.and_then(|r| {
        DateTime::parse_from_rfc3339(&r.started_at)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    });
    config.schedule.next_run(last_start, Utc::now())
}

/// One sync's status (R2), as `crmsync status` shows it.
#[derive(Debug, Serialize)]
pub struct Status {
    pub sync: String,
    /// `idle`, `running`, `paused` or `failed` (the last run failed).
    pub state: String,
    pub last_run: Option<RunRow>,
    pub next_run_at: Option<String>,
    /// Records the source had at the last completed full run (incremental
    /// runs read changes only, so they cannot count the source).
    pub records_at_source: Option<u64>,
    /// That full run.
    pub records_at_source_run: Option<i64>,
    /// Destination contacts linked to a source record.
    pub records_synced: u64,
    /// The last run's errors by category.
    pub open_errors: BTreeMap<String, u64>,
    pub control: Control,
    /// The `[companies]` part's own status (its records are accounts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub companies: Option<Box<Status>>,
}

/// The status of `config`'s sync.
pub fn status(config: &Config) -> Result<Status> {
    let store = config.store.open()?;
    let control = store.control(&config.name)?;
    let runs = store.runs(&config.name)?;
    let last = runs.first().cloned();
    let lease_live = control
        .lease_until
        .is_some_and(|until| until > crate::runs::now_ms());
    let state = if control.paused {
        "paused"
    } else if lease_live {
        "running"
    } else if last.as_ref().is_some_and(|r| r.status == "failed") {
        "failed"
    } else {
        "idle"
    };
    let last_full = runs
        .iter()
        .find(|r| r.status == "completed" && r.mode == "full");
    let open_errors = match &last {
        Some(run) => store.error_counts(run.id)?,
        None => BTreeMap::new(),
    };
    Ok(Status {
        sync: config.name.clone(),
        state: state.to_owned(),
        next_run_at: (!control.paused).then(|| {
            next_run(config, last.as_ref()).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        }),
        records_at_source: last_full.map(|r| r.counts.seen),
        records_at_source_run: last_full.map(|r| r.id),
        records_synced: match (&config.destination, config.object) {
            (Some(_), _) => store.linked_pairs(&config.name)?,
            (None, SyncObject::Contacts) => store.linked_contacts()?,
            (None, SyncObject::Companies) => store.linked_accounts()?,
        },
        open_errors,
        last_run: last,
        control,
        companies: config
            .companies
            .as_deref()
            .map(status)
            .transpose()?
            .map(Box::new),
    })
}

/// The sync names a config's runs are stored under: its `[companies]` part
/// (run first), then itself.
pub fn parts(config: &Config) -> Vec<&str> {
    config
        .companies
        .iter()
        .map(|part| part.name.as_str())
        .chain([config.name.as_str()])
        .collect()
}

/// Every run of the config's parts, newest first.
pub fn runs(config: &Config, store: &dyn Store) -> Result<Vec<RunRow>> {
    let mut runs = Vec::new();
    for name in parts(config) {
        runs.extend(store.runs(name)?);
    }
    runs.sort_by_key(|r| std::cmp::Reverse(r.id));
    Ok(runs)
}

/// The errors of run `run`, or of the last run of each part when `None`;
/// with the ids of the runs they are from.
pub fn errors(
    config: &Config,
    store: &dyn Store,
    run: Option<i64>,
) -> Result<(Vec<i64>, Vec<ErrorRow>)> {
    let run_ids: Vec<i64> = match run {
        Some(id) => vec![id],
        None => {
            let mut ids = Vec::new();
            for name in parts(config) {
                ids.extend(store.runs(name)?.first().map(|r| r.id));
            }
            ids
        }
    };
    let mut errors = Vec::new();
    for id in &run_ids {
        errors.extend(store.errors(*id)?);
    }
    Ok((run_ids, errors))
}
