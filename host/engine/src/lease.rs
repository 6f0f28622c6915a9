//! Holding a sync's lease while a pass runs: who this process is, whether
//! another holder is still alive, and the heartbeat that keeps the lease
//! while the pass works, retries or waits (started by the process's one
//! lease clock when a lease's first beat is due).
//!
//! The lease's rule (free, taken, renewed, fenced) is the store's
//! ([`crate::store::Lease`]); this module is the process side of it. A
//! holder's liveness is judged by its heartbeats: the keeper renews the lease
//! every [`HEARTBEAT`], so a lease not renewed for [`LEASE_TTL`] belongs to a
//! dead or stuck process and may be taken over. Only a holder of this very
//! kernel boot and PID namespace can be known dead sooner, from its pid and
//! start time: a pid seen from another namespace (another container) means
//! another process, so hostname and pid alone are not enough.

use crate::store::{DynStore, Lease, LeaseLost, Store};
use crate::store_location::StoreLocation;
use anyhow::Result;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A lease not renewed for this long is free. Well above the longest a pass
/// can go without its heartbeat thread running, and above the retry budget
/// of one request (`RetryPolicy::max_total`, 2 minutes).
pub const LEASE_TTL: Duration = Duration::from_secs(5 * 60);

/// How often a held lease is renewed.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// A lease's life and its heartbeat ([`LEASE_TTL`], [`HEARTBEAT`] by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    pub ttl: Duration,
    pub heartbeat: Duration,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        LeaseTiming {
            ttl: LEASE_TTL,
            heartbeat: HEARTBEAT,
        }
    }
}

/// This process as a lease holder: `host:pid/boot/pidns/start`, the kernel's
/// boot id, PID namespace and the process's start time (clock ticks since
/// boot) telling this pid apart from any other process that has or will have
/// it. Where `/proc` cannot say, the parts are `-`.
pub fn holder_id() -> String {
    let me = Identity::current();
    format!(
        "{}:{}/{}/{}/{}",
        hostname(),
        std::process::id(),
        me.boot,
        me.pid_namespace,
        me.start.as_deref().unwrap_or("-")
    )
}

/// Whether `holder` is a process known to be gone: one of this boot and PID
/// namespace whose pid no longer runs the process that started at its start
/// time. Any other holder (another machine or container, an older holder
/// format) is alive until its heartbeats stop and the lease expires.
pub fn holder_is_gone(holder: &str) -> bool {
    let Some((_, process)) = holder.rsplit_once(':') else {
        return false;
    };
    let parts: Vec<&str> = process.split('/').collect();
    let [pid, boot, pid_namespace, start] = parts[..] else {
        return false;
    };
    let me = Identity::current();
    if boot == "-" || boot != me.boot || pid_namespace == "-" || pid_namespace != me.pid_namespace {
        return false;
    }
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    if start == "-" {
        return false;
    }
    start_time(&format!("/proc/{pid}/stat")).as_deref() != Some(start)
}

/// What tells this process apart from every other one.
struct Identity {
    boot: String,
    pid_namespace: String,
    start: Option<String>,
}

impl Identity {
    fn current() -> Self {
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|b| b.trim().to_owned())
            .unwrap_or_else(|_| "-".to_owned());
        // `pid:[4026531836]`: the namespace's inode.
        let pid_namespace = std::fs::read_link("/proc/self/ns/pid")
            .ok()
            .and_then(|link| {
                let text = link.to_string_lossy().into_owned();
                let digits: String = text.chars().filter(char::is_ascii_digit).collect();
                (!digits.is_empty()).then_some(digits)
            })
            .unwrap_or_else(|| "-".to_owned());
        Identity {
            boot,
            pid_namespace,
            start: start_time("/proc/self/stat"),
        }
    }
}

/// Field 22 of a `/proc/<pid>/stat`: the process's start time since boot.
fn start_time(stat: &str) -> Option<String> {
    let text = std::fs::read_to_string(stat).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &text[text.rfind(')')? + 1..];
    rest.split_whitespace().nth(19).map(str::to_owned)
}

/// This machine's host name (`localhost` where `/proc` cannot say).
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

/// Milliseconds since the Unix epoch, as lease times are kept.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Whether the lease a pass holds is still its own: cheap to clone into
/// whatever does the pass's work, checked before each attempt at a request.
#[derive(Clone, Debug, Default)]
pub struct LeaseWatch {
    lost: Arc<Mutex<Option<LeaseLost>>>,
}

impl LeaseWatch {
    /// [`LeaseLost`] once the heartbeat found the lease another's.
    pub fn check(&self) -> Result<(), LeaseLost> {
        match &*self.lost.lock().expect("lease watch lock") {
            Some(lost) => Err(lost.clone()),
            None => Ok(()),
        }
    }
}

/// A held lease; released when dropped.
///
/// Its heartbeat costs nothing until its first beat is due: the process's
/// one [`Clock`] then starts a thread for it, which opens its own
/// connection. Most passes end sooner than one [`HEARTBEAT`], so they take
/// and give back the lease through their own connection and never start a
/// thread or open another connection for it.
pub struct LeaseKeeper {
    heart: Arc<Heart>,
    /// Whether the lease was given back through the pass's connection.
    released: bool,
}

impl LeaseKeeper {
    /// Takes the lease of `sync` for `owner` through `store`, a connection
    /// to the store at `location`, and keeps renewing it;
    /// `Err(holder)` when another process holds it.
    pub fn acquire(
        store: &dyn Store,
        location: &StoreLocation,
        sync: &str,
        owner: &str,
        timing: LeaseTiming,
    ) -> Result<Result<Self, String>> {
        let ttl = timing.ttl.as_millis() as i64;
        let lease = match store.acquire_lease(sync, owner, now_ms(), ttl, &holder_is_gone)? {
            Ok(lease) => lease,
            Err(holder) => return Ok(Err(holder)),
        };
        let heart = Arc::new(Heart {
            lease,
            location: location.clone(),
            timing,
            watch: LeaseWatch::default(),
            state: Mutex::new(HeartState::default()),
            wake: Condvar::new(),
        });
        if let Err(error) = CLOCK.schedule(Instant::now() + timing.heartbeat, heart.clone()) {
            store.release_lease(&heart.lease)?;
            return Err(anyhow::Error::new(error).context("starting the lease's clock"));
        }
        Ok(Ok(LeaseKeeper {
            heart,
            released: false,
        }))
    }

    /// The lease, to fence the pass's store connections with.
    pub fn lease(&self) -> &Lease {
        &self.heart.lease
    }

    /// A watch on the lease for the pass's workers.
    pub fn watch(&self) -> LeaseWatch {
        self.heart.watch.clone()
    }

    /// Stops the heartbeat and gives the lease back through `store`, a
    /// connection the pass already holds (another would cost its set-up,
    /// and for SQLite a checkpoint when it closes as the file's last).
    pub fn release(mut self, store: &dyn Store) -> Result<()> {
        self.released = true;
        self.heart.stop();
        store.release_lease(&self.heart.lease)
    }
}

impl Drop for LeaseKeeper {
    /// A pass that ended before giving the lease back (an error on its way):
    /// given back through a connection of its own.
    fn drop(&mut self) {
        if self.released {
            return;
        }
        self.heart.stop();
        let given_back = self
            .heart
            .location
            .open()
            .and_then(|store| store.release_lease(&self.heart.lease));
        if let Err(error) = given_back {
            tracing::warn!(
                "the lease of {:?} was not released: {error:#}",
                self.heart.lease.sync
            );
        }
    }
}

/// One held lease's heartbeat, shared by its keeper, the clock and the
/// thread that renews it.
struct Heart {
    lease: Lease,
    location: StoreLocation,
    timing: LeaseTiming,
    watch: LeaseWatch,
    state: Mutex<HeartState>,
    /// Wakes the heartbeat thread when the keeper stops it.
    wake: Condvar,
}

/// Whether a heart was stopped, and its thread once the clock started one.
#[derive(Default)]
struct HeartState {
    stopped: bool,
    thread: Option<JoinHandle<()>>,
}

impl Heart {
    /// Starts its heartbeat thread, unless its keeper stopped it first or
    /// it has one.
    fn start(self: &Arc<Self>) -> std::io::Result<()> {
        let mut state = self.state.lock().expect("heart lock");
        if !state.stopped && state.thread.is_none() {
            let heart = self.clone();
            state.thread = Some(
                std::thread::Builder::new()
                    .name(format!("lease {}", self.lease.sync))
                    .spawn(move || heart.beat())?,
            );
        }
        Ok(())
    }

    /// Stops the heartbeat: the clock forgets the heart, and a running
    /// thread ends after its current beat.
    fn stop(self: &Arc<Self>) {
        let thread = {
            let mut state = self.state.lock().expect("heart lock");
            state.stopped = true;
            state.thread.take()
        };
        self.wake.notify_all();
        CLOCK.forget(self);
        if let Some(thread) = thread {
            // A panicked heartbeat has nothing more to say.
            let _ = thread.join();
        }
    }

    /// Renews the lease now and every heartbeat after, through a connection
    /// of its own, until stopped or the lease is lost.
    fn beat(&self) {
        let ttl = self.timing.ttl.as_millis() as i64;
        let mut store: Option<DynStore> = None;
        loop {
            let connection = match store.take() {
                Some(store) => Ok(store),
                None => self.location.open(),
            };
            match connection {
                Ok(connection) => match connection.renew_lease(&self.lease, now_ms(), ttl) {
                    Ok(()) => store = Some(connection),
                    Err(error) => match error.downcast::<LeaseLost>() {
                        Ok(lost) => {
                            tracing::error!("{lost}");
                            *self.watch.lost.lock().expect("lease watch lock") = Some(lost);
                            return;
                        }
                        // A busy or unreadable store: the next beat tries
                        // again, well before the lease runs out.
                        Err(error) => {
                            tracing::warn!("the lease was not renewed: {error:#}");
                            store = Some(connection);
                        }
                    },
                },
                Err(error) => tracing::warn!("the lease was not renewed: {error:#}"),
            }
            let state = self.state.lock().expect("heart lock");
            let (state, _) = self
                .wake
                .wait_timeout_while(state, self.timing.heartbeat, |state| !state.stopped)
                .expect("heart lock");
            if state.stopped {
                return;
            }
        }
    }
}

/// The process's one timer for leases: it holds each lease until its first
/// beat is due, then starts the lease's heartbeat thread. It does no I/O
/// itself, so a slow store delays no other lease's beats.
struct Clock {
    dial: Mutex<Dial>,
    /// Wakes the clock's thread when a lease is added or forgotten.
    wake: Condvar,
}

/// The leases waiting for their first beat, and whether the clock's thread
/// was started.
struct Dial {
    waiting: Vec<(Instant, Arc<Heart>)>,
    running: bool,
}

static CLOCK: Clock = Clock {
    dial: Mutex::new(Dial {
        waiting: Vec::new(),
        running: false,
    }),
    wake: Condvar::new(),
};

impl Clock {
    /// Starts `heart`'s heartbeat at `first_beat`; starts the clock's own
    /// thread at its first use.
    fn schedule(&'static self, first_beat: Instant, heart: Arc<Heart>) -> std::io::Result<()> {
        let mut dial = self.dial.lock().expect("clock lock");
        if !dial.running {
            std::thread::Builder::new()
                .name("lease clock".into())
                .spawn(move || self.run())?;
            dial.running = true;
        }
        dial.waiting.push((first_beat, heart));
        self.wake.notify_all();
        Ok(())
    }

    /// Drops `heart` if it is still waiting for its first beat.
    fn forget(&self, heart: &Arc<Heart>) {
        let mut dial = self.dial.lock().expect("clock lock");
        dial.waiting
            .retain(|(_, waiting)| !Arc::ptr_eq(waiting, heart));
    }

    fn run(&self) {
        let mut dial = self.dial.lock().expect("clock lock");
        loop {
            let now = Instant::now();
            let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut dial.waiting)
                .into_iter()
                .partition(|(first_beat, _)| *first_beat <= now);
            dial.waiting = waiting;
            for (_, heart) in due {
                if let Err(error) = heart.start() {
                    // Out of threads for now: the next beat's time tries again.
                    tracing::warn!(
                        "the lease of {:?} was not renewed: {error}",
                        heart.lease.sync
                    );
                    dial.waiting.push((now + heart.timing.heartbeat, heart));
                }
            }
            dial = match dial.waiting.iter().map(|(first_beat, _)| *first_beat).min() {
                Some(next) => {
                    self.wake
                        .wait_timeout(dial, next.saturating_duration_since(now))
                        .expect("clock lock")
                        .0
                }
                None => self.wake.wait(dial).expect("clock lock"),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_finished_one_is_gone() {
        let me = holder_id();
        assert!(!holder_is_gone(&me), "{me}");
        // A process that ran and exited: same boot and namespace, pid free or reused.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let (host, process) = me.rsplit_once(':').unwrap();
        let mut parts: Vec<&str> = process.split('/').collect();
        let pid_text = pid.to_string();
        parts[0] = &pid_text;
        let gone = format!("{host}:{}", parts.join("/"));
        assert!(holder_is_gone(&gone), "{gone}");
        // Our pid with another start time: the pid was reused, the holder is gone.
        let reused = me.rsplit_once('/').unwrap().0.to_owned() + "/1";
        assert!(holder_is_gone(&reused), "{reused}");
        // Another namespace, another boot, or the old `host:pid` form: judged by heartbeats.
        let elsewhere = me.replace(&format!("/{}/", parts[2]), "/1/");
        assert!(!holder_is_gone(&elsewhere), "{elsewhere}");
        assert!(!holder_is_gone(&format!("{host}:{pid}")));
    }

    #[test]
    fn the_heartbeat_notices_a_lost_lease() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite");
        let location = StoreLocation::Sqlite(path.clone());
        let mine = location.open().unwrap();
        let keeper = LeaseKeeper::acquire(&*mine, &location, "s", "a", LeaseTiming::default())
            .unwrap()
            .unwrap();
        let watch = keeper.watch();
        assert!(watch.check().is_ok());
        assert_eq!(
            LeaseKeeper::acquire(&*mine, &location, "s", "b", LeaseTiming::default())
                .unwrap()
                .err(),
            Some("a".to_owned())
        );
        // Another process takes it over (as after an expiry).
        let other = crate::store::ContactStore::open(&path).unwrap();
        let taken = other
            .acquire_lease(
                "s",
                "b",
                now_ms() + LEASE_TTL.as_millis() as i64 + 1,
                1_000,
                |_| false,
            )
            .unwrap()
            .unwrap();
        // At the next beat, the watch says so.
        keeper.heart.start().unwrap();
        wait_for(|| watch.check().is_err());
        keeper.release(&*mine).unwrap();
        assert_eq!(
            other.control("s").unwrap().lease_owner.as_deref(),
            Some("b")
        );
        other.release_lease(&taken).unwrap();
    }

    /// A pass shorter than a heartbeat starts no thread and opens no
    /// connection for its lease; a longer one is renewed from its first
    /// beat on, through a connection of the heartbeat's own.
    #[test]
    fn the_heartbeat_starts_when_its_first_beat_is_due() {
        let dir = tempfile::tempdir().unwrap();
        let location = StoreLocation::Sqlite(dir.path().join("s.sqlite"));
        let mine = location.open().unwrap();
        let slow = LeaseTiming {
            ttl: Duration::from_secs(60),
            heartbeat: Duration::from_secs(3600),
        };
        let short = LeaseKeeper::acquire(&*mine, &location, "short", "a", slow)
            .unwrap()
            .unwrap();
        let heart = short.heart.clone();
        assert!(waiting(&heart));
        short.release(&*mine).unwrap();
        assert!(!waiting(&heart), "the clock forgets a released lease");
        assert!(heart.state.lock().unwrap().thread.is_none());
        assert_eq!(mine.control("short").unwrap().lease_owner, None);

        let fast = LeaseTiming {
            ttl: Duration::from_secs(60),
            heartbeat: Duration::from_millis(20),
        };
        let long = LeaseKeeper::acquire(&*mine, &location, "long", "a", fast)
            .unwrap()
            .unwrap();
        let until = |store: &dyn Store| store.control("long").unwrap().lease_until.unwrap();
        let first = until(&*mine);
        wait_for(|| until(&*mine) > first);
        assert!(long.heart.state.lock().unwrap().thread.is_some());
        assert!(!waiting(&long.heart));
        let heart = long.heart.clone();
        long.release(&*mine).unwrap();
        assert!(heart.state.lock().unwrap().thread.is_none(), "joined");
        assert_eq!(mine.control("long").unwrap().lease_owner, None);
    }

    /// A keeper dropped on a pass's error path still gives its lease back.
    #[test]
    fn a_dropped_keeper_gives_its_lease_back() {
        let dir = tempfile::tempdir().unwrap();
        let location = StoreLocation::Sqlite(dir.path().join("s.sqlite"));
        let mine = location.open().unwrap();
        let keeper = LeaseKeeper::acquire(&*mine, &location, "s", "a", LeaseTiming::default())
            .unwrap()
            .unwrap();
        assert_eq!(mine.control("s").unwrap().lease_owner.as_deref(), Some("a"));
        drop(keeper);
        assert_eq!(mine.control("s").unwrap().lease_owner, None);
    }

    fn waiting(heart: &Arc<Heart>) -> bool {
        let dial = CLOCK.dial.lock().unwrap();
        dial.waiting.iter().any(|(_, h)| Arc::ptr_eq(h, heart))
    }

    fn wait_for(mut done: impl FnMut() -> bool) {
        let started = Instant::now();
        while !done() {
            assert!(started.elapsed() < Duration::from_secs(30), "timed out");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
