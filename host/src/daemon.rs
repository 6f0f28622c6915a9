//! The daemon (R1): runs every configured sync on its schedule until told to
//! stop, many at once, honouring pause and trigger from other processes
//! (state lives in each sync's store) and re-reading each config before
//! every run, so edits take effect at the next run. An idle daemon keeps
//! each sync's next due time in memory and looks at a SQLite store only
//! when its files changed.

use crate::config::Config;
use crate::fleet::Membership;
use crate::observer::{RunObserver, Unobserved};
use crate::rate_limit::AccountLimiters;
use crate::runtime::Runtime;
use crate::status::next_run;
use crate::store::{Counts, DynStore, Store};
use crate::store_location::StoreLocation;
use crate::sync::{Busy, SyncOptions, SyncReport, run_sync_lending};
use anyhow::Result;
use chrono::{DateTime, Utc};
use crmsync_store_postgres::redact;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// How often the daemon looks for triggers, pauses and due runs.
pub const POLL: Duration = Duration::from_millis(500);

/// Syncs a daemon runs at once unless told otherwise: most of a sync's time
/// is spent waiting for its API, so a runner holds many.
pub const DEFAULT_CONCURRENCY: usize = 16;

pub use crate::config::config_files;

/// One configured sync, as the scheduler tracks it between looks.
struct Entry {
    file: PathBuf,
    name: String,
    /// The store and sync name: two entries with one key never run at once.
    key: String,
    store: StoreLocation,
    /// The fleet (index into the daemon's memberships) scheduling it, for a
    /// PostgreSQL store; SQLite stores are scheduled here.
    fleet: Option<usize>,
    /// When the schedule next makes it due; `None` until its store was read.
    next_due: Option<DateTime<Utc>>,
    /// What the store looked like when last read (see [`Stamp`]).
    stamp: Option<Stamp>,
    /// When the scheduler last compared the store's files with `stamp`.
    looked: Option<Instant>,
    running: bool,
}

/// A SQLite store's files' sizes and modification times: while they stay
/// the same, nobody paused, resumed or triggered the sync, so the idle
/// daemon looks at its store with two `stat`s instead of opening it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp(Vec<Option<(std::time::SystemTime, u64)>>);

impl Stamp {
    fn of(store: &StoreLocation) -> Option<Stamp> {
        let StoreLocation::Sqlite(path) = store else {
            return None;
        };
        let mut wal = path.clone().into_os_string();
        wal.push("-wal");
        let stat = |p: &Path| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        };
        Some(Stamp(vec![stat(path), stat(Path::new(&wal))]))
    }
}

/// What reaches the scheduler while it waits.
enum Event {
    /// A worker's run ended: its entry, and the report (or the error that
    /// stopped the run); no report when it was not due after all.
    Finished {
        index: usize,
        outcome: Result<Option<Box<SyncReport>>>,
        /// When it is next due, as the store says after the run (never,
        /// while paused); `None` when the store could not be read.
        next_due: Option<DateTime<Utc>>,
    },
    /// Another process changed a fleet's schedule (a trigger, a resume, a run's end).
    Wake,
}

/// The longest an idle daemon with only fleet syncs sleeps between looks
/// (notifications wake it sooner; this covers a lost connection).
const FLEET_IDLE: Duration = Duration::from_secs(5);

/// Runs the syncs of `paths` until `options.stop` is set, up to
/// `concurrency` at once, each on its own thread under its account's rate
/// limiter, so a slow or failing portal holds up no other. A run in
/// progress stops after its current page and resumes from there next time.
///
/// Syncs whose store is PostgreSQL join that database's fleet: every runner
/// given the same configs shares them, each due run claimed by one runner
/// (see [`crate::fleet`]). On stop, the runs in flight finish their pages,
/// their leases and claims are released, and the daemon leaves the fleet.
pub fn run_daemon(
    runtime: &Runtime,
    paths: &[PathBuf],
    options: &SyncOptions,
    concurrency: usize,
    out: &mut dyn Write,
) -> Result<()> {
    run_observed(
        runtime,
        paths,
        options,
        concurrency,
        Arc::new(Unobserved),
        out,
    )
}

/// [`run_daemon`], telling `observer` of every run (the console watches
/// this way).
pub fn run_observed(
    runtime: &Runtime,
    paths: &[PathBuf],
    options: &SyncOptions,
    concurrency: usize,
    observer: Arc<dyn RunObserver>,
    out: &mut dyn Write,
) -> Result<()> {
    let concurrency = concurrency.max(1);
    let files = config_files(paths)?;
    let (events, inbox) = mpsc::channel::<Event>();
    let mut fleets: Vec<Membership> = Vec::new();
    // Configs are checked once up front so a typo fails the start, not a run hours later.
    let mut entries = Vec::with_capacity(files.len());
    for file in &files {
        let config = Config::load(file)?;
        let fleet = match &config.store {
            StoreLocation::Sqlite(_) => None,
            StoreLocation::Postgres { url, namespace } => {
                let at = match fleets.iter().position(|f| &f.url == url) {
                    Some(at) => at,
                    None => {
                        let wake = events.clone();
                        fleets.push(Membership::join(
                            url,
                            &options.runner,
                            concurrency,
                            Box::new(move || {
                                let _ = wake.send(Event::Wake);
                            }),
                        )?);
                        fleets.len() - 1
                    }
                };
                let (next_due, paused) = read_schedule(&config)?;
                fleets[at].register(
                    entries.len(),
                    namespace,
                    &config.name,
                    next_due.timestamp_millis(),
                    paused,
                )?;
                Some(at)
            }
        };
        entries.push(Entry {
            file: file.clone(),
            name: config.name.clone(),
            key: format!("{}|{}", config.store, config.name),
            store: config.store.clone(),
            fleet,
            next_due: None,
            stamp: None,
            looked: None,
            running: false,
        });
    }
    writeln!(
        out,
        "crmsync daemon {}: {} sync(s), up to {concurrency} at once{}; stop with SIGTERM or Ctrl-C",
        options.runner,
        files.len(),
        if fleets.is_empty() {
            ""
        } else {
            ", sharing PostgreSQL syncs with the fleet"
        }
    )?;
    let limiters = Limiters::default();
    let workers = Workers {
        runtime,
        options,
        limiters: &limiters,
        observer,
    };
    let local = entries.iter().any(|e| e.fleet.is_none());
    let result = std::thread::scope(|scope| -> Result<()> {
        let mut running = 0usize;
        loop {
            let stopping = options.stop.load(Ordering::Relaxed);
            if stopping && running == 0 {
                break;
            }
            if !stopping {
                // One pass is linear in the syncs: a runner may hold thousands.
                let mut busy: HashSet<String> = entries
                    .iter()
                    .filter(|e| e.running)
                    .map(|e| e.key.clone())
                    .collect();
                let (now, instant) = (Utc::now(), Instant::now());
                for (index, entry) in entries.iter_mut().enumerate() {
                    if running >= concurrency {
                        break;
                    }
                    if entry.fleet.is_some() || entry.running || busy.contains(&entry.key) {
                        continue;
                    }
                    if worth_a_run(entry, now, instant) {
                        busy.insert(entry.key.clone());
                        start(scope, &workers, &events, entry, index)?;
                        running += 1;
                    }
                }
                for fleet in &mut fleets {
                    let free = concurrency.saturating_sub(running);
                    match fleet.claim(free, |index| !entries[index].running) {
                        Ok(claimed) => {
                            for index in claimed {
                                start(scope, &workers, &events, &mut entries[index], index)?;
                                running += 1;
                            }
                        }
                        Err(error) => {
                            tracing::warn!("fleet claim: {error:#}");
                            writeln!(out, "fleet {}: {error:#}", redact(&fleet.url))?;
                        }
                    }
                }
            }
            // Wait for a run to end, a wake-up, or the next look.
            let wait = if local {
                POLL
            } else {
                let now = Utc::now().timestamp_millis();
                let mut wait = FLEET_IDLE;
                for fleet in &mut fleets {
                    if let Ok(Some(until)) = fleet.until_due(now) {
                        wait = wait.min(until.max(Duration::from_millis(20)));
                    }
                }
                wait
            };
            let deadline = std::time::Instant::now() + wait;
            while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
                match inbox.recv_timeout(left.min(Duration::from_millis(100))) {
                    Ok(Event::Finished {
                        index,
                        outcome,
                        next_due,
                    }) => {
                        running -= 1;
                        let entry = &mut entries[index];
                        entry.running = false;
                        // As the worker left the store (closed, so its WAL
                        // checkpoint is not mistaken for another's change).
                        entry.next_due = next_due;
                        entry.stamp = Stamp::of(&entry.store);
                        entry.looked = Some(Instant::now());
                        let ran = matches!(outcome, Ok(Some(_)));
                        match outcome {
                            Ok(Some(report)) => {
                                crate::summary::write_summary(out, &report, &entry.file)?;
                            }
                            Ok(None) => {}
                            Err(error) => report_error(out, &entry.file, &error)?,
                        }
                        if let (Some(at), StoreLocation::Postgres { namespace, .. }) =
                            (entry.fleet, &entry.store)
                        {
                            let next_due =
                                next_due.filter(|_| ran).map(|due| due.timestamp_millis());
                            if let Err(error) = fleets[at].finish(namespace, &entry.name, next_due)
                            {
                                report_error(out, &entry.file, &error)?;
                            }
                        }
                        // A slot is free: look again at once.
                        break;
                    }
                    Ok(Event::Wake) => {
                        if !options.stop.load(Ordering::Relaxed) {
                            break;
                        }
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
                if options.stop.load(Ordering::Relaxed) && running == 0 {
                    break;
                }
            }
        }
        Ok(())
    });
    // A drain: every run in flight has ended; the fleet takes over the rest.
    for fleet in fleets {
        if let Err(error) = fleet.leave() {
            writeln!(out, "leaving the fleet: {error:#}")?;
        }
    }
    result?;
    writeln!(out, "crmsync daemon: stopped")?;
    Ok(())
}

/// When `config`'s sync is next due (now, when triggered or interrupted),
/// and whether it is paused, as its store says: the one rule the scheduler,
/// its workers and the fleet's registration share.
fn read_schedule(config: &Config) -> Result<(DateTime<Utc>, bool)> {
    read_schedule_in(&*config.store.open()?, config)
}

/// [`read_schedule`] through a connection already open.
fn read_schedule_in(store: &dyn Store, config: &Config) -> Result<(DateTime<Utc>, bool)> {
    let control = store.control(&config.name)?;
    let last = store.runs(&config.name)?.into_iter().next();
    let interrupted = last
        .as_ref()
        .is_some_and(|r| r.status == "running" && control.lease_owner.is_none());
    let due = if control.triggered || interrupted {
        Utc::now()
    } else {
        next_run(config, last.as_ref())
    };
    Ok((due, control.paused))
}

/// What every run's thread shares.
struct Workers<'env> {
    runtime: &'env Runtime,
    options: &'env SyncOptions,
    limiters: &'env Limiters,
    observer: Arc<dyn RunObserver>,
}

/// Runs entry `index`'s sync on a thread of its own; its end comes back as
/// an [`Event::Finished`].
fn start<'scope, 'env>(
    scope: &'scope std::thread::Scope<'scope, 'env>,
    workers: &'scope Workers<'env>,
    events: &mpsc::Sender<Event>,
    entry: &mut Entry,
    index: usize,
) -> Result<()> {
    let file = entry.file.clone();
    // A fleet's claim says the run is due (or was left interrupted by a
    // runner that is gone): no second guess.
    let claimed = entry.fleet.is_some();
    let done = events.clone();
    entry.running = true;
    std::thread::Builder::new()
        .name(format!("sync {}", entry.name))
        .spawn_scoped(scope, move || {
            // Read again for each run: edits take effect at the next run.
            let (outcome, next_due) = match Config::load(&file) {
                Ok(config) => {
                    // A SQLite store's connection held across the run, for
                    // the schedule's reads before and after it, and lent to
                    // the run, which then opens none of its own: SQLite
                    // checkpoints and deletes its log once a run (when this
                    // one closes) instead of after each part of it. A
                    // PostgreSQL store is not held: connections to a shared
                    // server are the scarcer thing.
                    let anchor = RefCell::new(match &config.store {
                        StoreLocation::Sqlite(_) => config.store.open().ok(),
                        StoreLocation::Postgres { .. } => None,
                    });
                    let schedule = |config: &Config| match &*anchor.borrow() {
                        Some(store) => read_schedule_in(&**store, config),
                        None => read_schedule(config),
                    };
                    let outcome = run_if_due(workers, &config, claimed, schedule, &anchor);
                    if let Ok(Some(report)) = &outcome {
                        // Here, not on the scheduler thread: a webhook may be slow.
                        config.notify.after_run(report);
                    }
                    let next_due = schedule(&config).ok().map(|(due, paused)| {
                        if paused {
                            DateTime::<Utc>::MAX_UTC
                        } else {
                            due
                        }
                    });
                    // Closed before the scheduler stamps the store's files.
                    drop(anchor);
                    (outcome.map(|ran| ran.map(Box::new)), next_due)
                }
                Err(error) => (Err(error), None),
            };
            let _ = done.send(Event::Finished {
                index,
                outcome,
                next_due,
            });
        })?;
    Ok(())
}

fn report_error(out: &mut dyn Write, file: &Path, error: &anyhow::Error) -> Result<()> {
    tracing::error!(config = %file.display(), "{error:#}");
    writeln!(out, "{}: {error:#}", file.display())?;
    Ok(())
}

/// Whether the entry may be due at `now`: its schedule says so, its store
/// changed since its worker last read it (a trigger, a resume), or it was
/// never read. The worker decides for certain; the scheduler thread opens
/// no store. The store's files are looked at most twice a [`POLL`] (so a
/// trigger is still seen within one), not on every pass: a pass follows
/// every run's end, and with thousands of syncs those looks were most of
/// a runner's scheduling work.
fn worth_a_run(entry: &mut Entry, now: DateTime<Utc>, instant: Instant) -> bool {
    let known = entry.next_due.is_some() && entry.stamp.is_some();
    if !known || entry.next_due.is_some_and(|due| due <= now) {
        return true;
    }
    if entry
        .looked
        .is_some_and(|looked| instant.saturating_duration_since(looked) < POLL / 2)
    {
        return false;
    }
    entry.looked = Some(instant);
    Stamp::of(&entry.store) != entry.stamp
}

/// One rate limiter per source account (API origin and credentials), shared
/// by every sync of the daemon that uses it (R5: the budget is the account's).
#[derive(Default)]
struct Limiters(Mutex<HashMap<String, AccountLimiters>>);

impl Limiters {
    fn for_config(&self, config: &Config) -> AccountLimiters {
        let account = format!("{} {:?}", config.source.base_url, config.source.auth);
        self.0
            .lock()
            .expect("limiters lock")
            .entry(account)
            .or_insert_with(|| {
                AccountLimiters::new(config.source.rate_limit, config.source.search_rate_limit)
            })
            .clone()
    }
}

/// Runs `config`'s sync if it is `claimed` (by the fleet), due, triggered
/// or interrupted, and not paused (read again here, through `schedule`:
/// another process may have run or paused it); its report when it ran.
fn run_if_due(
    workers: &Workers<'_>,
    config: &Config,
    claimed: bool,
    schedule: impl Fn(&Config) -> Result<(DateTime<Utc>, bool)>,
    anchor: &RefCell<Option<DynStore>>,
) -> Result<Option<SyncReport>> {
    let Workers {
        runtime,
        options,
        limiters,
        observer,
    } = workers;
    // A trigger is seen, not taken: the run takes it when it starts, so one
    // that finds the sync busy (a manual `sync`, another daemon) is not lost.
    let (due, paused) = schedule(config)?;
    if paused || !(claimed || due <= Utc::now()) {
        return Ok(None);
    }
    let watching = observer.clone();
    let name = config.name.clone();
    let options = SyncOptions {
        limiters: Some(limiters.for_config(config)),
        full: options.full || observer.take_full(&config.name),
        progress: Some(Arc::new(move |counts: &Counts| {
            watching.progress(&name, counts)
        })),
        ..(*options).clone()
    };
    observer.started(&config.name);
    let outcome = run_sync_lending(runtime, config, &options, &mut anchor.borrow_mut());
    match &outcome {
        // Another process runs it (a manual `sync`, another daemon): its turn.
        Err(error) if error.downcast_ref::<Busy>().is_some() => {
            tracing::debug!("{error}");
            observer.skipped(&config.name, options.full);
            return Ok(None);
        }
        Ok(report) => observer.finished(&config.name, Ok(report)),
        Err(error) => observer.finished(&config.name, Err(error)),
    }
    outcome.map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(store: &Path, next_due: DateTime<Utc>) -> Entry {
        let store = StoreLocation::Sqlite(store.to_owned());
        Entry {
            file: PathBuf::from("sync.toml"),
            name: "s".into(),
            key: "k".into(),
            stamp: Stamp::of(&store),
            store,
            fleet: None,
            next_due: Some(next_due),
            looked: None,
            running: false,
        }
    }

    #[test]
    fn a_changed_store_is_seen_at_the_next_look_and_looks_are_spaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite");
        std::fs::write(&path, b"one").unwrap();
        let (now, start) = (Utc::now(), Instant::now());
        let mut entry = entry(&path, now + chrono::Duration::hours(1));
        assert!(!worth_a_run(&mut entry, now, start), "unchanged, not due");
        // A trigger from another process rewrites the store.
        std::fs::write(&path, b"trigger").unwrap();
        assert!(
            !worth_a_run(&mut entry, now, start + POLL / 4),
            "looked at too recently to look again"
        );
        assert!(
            worth_a_run(&mut entry, now, start + POLL),
            "seen within a POLL"
        );
    }

    #[test]
    fn a_due_or_never_read_sync_is_worth_a_run_without_a_look() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite");
        let now = Utc::now();
        let mut due = entry(&path, now - chrono::Duration::seconds(1));
        assert!(worth_a_run(&mut due, now, Instant::now()));
        let mut unread = entry(&path, now);
        unread.next_due = None;
        assert!(worth_a_run(&mut unread, now, Instant::now()));
        assert_eq!((due.looked, unread.looked), (None, None));
    }
}
