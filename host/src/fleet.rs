//! The daemon's side of a fleet: membership of one database's fleet
//! (`crmsync-store-postgres`'s `fleet`), its heartbeat and wake-up threads,
//! and which of the daemon's syncs it claims.
//!
//! Syncs whose store is PostgreSQL are not scheduled by the daemon alone:
//! their due times live in the database, every runner given the same
//! configs registers them, and each due run is claimed by one runner.

use anyhow::Result;
use crmsync_store_postgres::fleet::{Fleet, Listener, RUNNER_HEARTBEAT, key};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// This runner in one database's fleet.
pub struct Membership {
    /// The database, as configs name it.
    pub url: String,
    fleet: Fleet,
    /// The daemon's syncs on this database: fleet key to the daemon's entry.
    entries: HashMap<String, usize>,
    stop: Arc<AtomicBool>,
    helpers: Vec<JoinHandle<()>>,
}

impl Membership {
    /// Joins the fleet of `url` as `runner`; `wake` is called when another
    /// process triggers, resumes or finishes a sync (LISTEN/NOTIFY).
    pub fn join(
        url: &str,
        runner: &str,
        concurrency: usize,
        wake: Box<dyn Fn() + Send>,
    ) -> Result<Self> {
        let fleet = Fleet::join(url, runner, concurrency)?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut helpers = Vec::new();
        {
            // Its own connection, so a long claim or finish never delays a beat.
            let mut beat = Fleet::join(url, runner, concurrency)?;
            let stop = stop.clone();
            helpers.push(
                std::thread::Builder::new()
                    .name("fleet heartbeat".into())
                    .spawn(move || {
                        while !sleep_unless(&stop, RUNNER_HEARTBEAT) {
                            if let Err(error) = beat.heartbeat() {
                                tracing::warn!("fleet heartbeat: {error:#}");
                                let _ = beat.reconnect_if_closed();
                            }
                        }
                    })?,
            );
        }
        {
            let mut listener = Listener::listen(url)?;
            let stop = stop.clone();
            let url = url.to_owned();
            helpers.push(
                std::thread::Builder::new()
                    .name("fleet listener".into())
                    .spawn(move || {
                        while !stop.load(Ordering::Relaxed) {
                            match listener.wait(Duration::from_millis(500)) {
                                Ok(true) => wake(),
                                Ok(false) => {}
                                Err(error) => {
                                    tracing::warn!("fleet listener: {error:#}");
                                    std::thread::sleep(Duration::from_secs(1));
                                    if listener.is_closed()
                                        && let Ok(again) = Listener::listen(&url)
                                    {
                                        listener = again;
                                        // What was notified meanwhile is lost: look now.
                                        wake();
                                    }
                                }
                            }
                        }
                    })?,
            );
        }
        Ok(Membership {
            url: url.to_owned(),
            fleet,
            entries: HashMap::new(),
            stop,
            helpers,
        })
    }

    /// Adds the daemon's entry `index` (sync `sync` in `namespace`).
    pub fn register(
        &mut self,
        index: usize,
        namespace: &str,
        sync: &str,
        next_due_ms: i64,
        paused: bool,
    ) -> Result<()> {
        self.fleet.register(namespace, sync, next_due_ms, paused)?;
        self.entries.insert(key(namespace, sync), index);
        Ok(())
    }

    /// Claims up to `limit` due syncs among those `idle` says are not
    /// running here; the claimed entries' indexes.
    pub fn claim(&mut self, limit: usize, idle: impl Fn(usize) -> bool) -> Result<Vec<usize>> {
        let keys: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, index)| idle(**index))
            .map(|(key, _)| key.clone())
            .collect();
        Ok(self
            .retrying(|fleet| fleet.claim(&keys, limit))?
            .iter()
            .filter_map(|key| self.entries.get(key).copied())
            .collect())
    }

    /// Ends the claim of sync `sync` in `namespace` (see [`Fleet::finish`]) and
    /// wakes the other runners.
    pub fn finish(&mut self, namespace: &str, sync: &str, next_due_ms: Option<i64>) -> Result<()> {
        let key = key(namespace, sync);
        self.retrying(|fleet| fleet.finish(&key, next_due_ms))?;
        self.fleet.notify()
    }

    /// How long until the soonest of this daemon's syncs here is due.
    pub fn until_due(&mut self, now_ms: i64) -> Result<Option<Duration>> {
        let keys: Vec<String> = self.entries.keys().cloned().collect();
        Ok(self
            .retrying(|fleet| fleet.next_due(&keys))?
            .map(|due| Duration::from_millis(due.saturating_sub(now_ms).max(0) as u64)))
    }

    /// Runs `call` on the fleet connection, once more on a new connection
    /// when the old one was gone.
    fn retrying<T>(&mut self, mut call: impl FnMut(&mut Fleet) -> Result<T>) -> Result<T> {
        match call(&mut self.fleet) {
            Err(_) if self.fleet.reconnect_if_closed()? => call(&mut self.fleet),
            result => result,
        }
    }

    /// Leaves the fleet: claims released for the others, helpers stopped.
    pub fn leave(mut self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        for helper in self.helpers.drain(..) {
            let _ = helper.join();
        }
        self.fleet.leave()
    }
}

/// Sleeps `period` unless `stop` is set first; whether it was.
fn sleep_unless(stop: &AtomicBool, period: Duration) -> bool {
    let step = Duration::from_millis(100);
    let mut slept = Duration::ZERO;
    while slept < period {
        if stop.load(Ordering::Relaxed) {
            return true;
        }
        std::thread::sleep(step);
        slept += step;
    }
    stop.load(Ordering::Relaxed)
}
