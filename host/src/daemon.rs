//! The daemon (R1): runs every configured sync on its schedule until told to
//! stop, honouring pause and trigger from other processes (state lives in
//! each sync's store) and re-reading each config before every run, so edits
//! take effect at the next run.

use crate::config::{Config, SyncObject};
use crate::rate_limit::AccountLimiters;
use crate::runtime::Runtime;
use crate::store::{Control, RunRow};
use crate::sync::{Busy, SyncOptions, run_sync};
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How often the daemon looks for triggers, pauses and due runs.
pub const POLL: Duration = Duration::from_millis(500);

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

/// Runs the syncs of `paths` until `options.stop` is set. A run in progress
/// stops after its current page and resumes from there next time.
pub fn run_daemon(
    runtime: &Runtime,
    paths: &[PathBuf],
    options: &SyncOptions,
    out: &mut dyn Write,
) -> Result<()> {
    let files = config_files(paths)?;
    // Configs are checked once up front so a typo fails the start, not a run hours later.
    for file in &files {
        Config::load(file)?;
    }
    writeln!(
        out,
        "crmsync daemon: {} sync(s); stop with SIGTERM or Ctrl-C",
        files.len()
    )?;
    let mut limiters = Limiters::default();
    while !options.stop.load(Ordering::Relaxed) {
        for file in &files {
            if options.stop.load(Ordering::Relaxed) {
                break;
            }
            if let Err(error) = run_if_due(runtime, file, options, &mut limiters, out) {
                tracing::error!(config = %file.display(), "{error:#}");
                writeln!(out, "{}: {error:#}", file.display())?;
            }
        }
        let mut waited = Duration::ZERO;
        while waited < POLL && !options.stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
            waited += Duration::from_millis(50);
        }
    }
    writeln!(out, "crmsync daemon: stopped")?;
    Ok(())
}

/// One rate limiter per source account (API origin and credentials), shared
/// by every sync of the daemon that uses it (R5: the budget is the account's).
#[derive(Default)]
struct Limiters(HashMap<String, AccountLimiters>);

impl Limiters {
    fn for_config(&mut self, config: &Config) -> AccountLimiters {
        let account = format!("{} {:?}", config.source.base_url, config.source.auth);
        self.0
            .entry(account)
            .or_insert_with(|| {
                AccountLimiters::new(config.source.rate_limit, config.source.search_rate_limit)
            })
            .clone()
    }
}

fn run_if_due(
    runtime: &Runtime,
    file: &Path,
    options: &SyncOptions,
    limiters: &mut Limiters,
    out: &mut dyn Write,
) -> Result<()> {
    let config = Config::load(file)?;
    let store = config.store.open()?;
    let control = store.control(&config.name)?;
    if control.paused {
        return Ok(());
    }
    let last = store.runs(&config.name)?.into_iter().next();
    let interrupted = last
        .as_ref()
        .is_some_and(|r| r.status == "running" && control.lease_owner.is_none());
    // Seen, not taken: the run takes it when it starts, so a trigger that
    // finds the sync busy (a manual `sync`, another daemon) is not lost.
    let triggered = control.triggered;
    let due = next_run(&config, last.as_ref()) <= Utc::now();
    if !(due || triggered || interrupted) {
        return Ok(());
    }
    drop(store);
    let options = SyncOptions {
        limiters: Some(limiters.for_config(&config)),
        ..options.clone()
    };
    match run_sync(runtime, &config, &options) {
        Ok(report) => {
            crate::summary::write_summary(out, &report, file)?;
            config.notify.after_run(&report);
            Ok(())
        }
        // Another process runs it (a manual `sync`, another daemon): its turn.
        Err(error) if error.downcast_ref::<Busy>().is_some() => {
            tracing::debug!("{error}");
            Ok(())
        }
        Err(error) => Err(error),
    }
}

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
        .is_some_and(|until| until > crate::sync::now_ms());
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
