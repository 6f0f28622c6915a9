//! Holding a sync's lease while a pass runs: who this process is, whether
//! another holder is still alive, and the heartbeat that keeps the lease
//! while the pass works, retries or waits.
//!
//! The lease's rule (free, taken, renewed, fenced) is the store's
//! ([`crate::store::Lease`]); this module is the process side of it. A
//! holder's liveness is judged by its heartbeats: the keeper renews the lease
//! every [`HEARTBEAT`], so a lease not renewed for [`LEASE_TTL`] belongs to a
//! dead or stuck process and may be taken over. Only a holder of this very
//! kernel boot and PID namespace can be known dead sooner, from its pid and
//! start time: a pid seen from another namespace (another container) means
//! another process, so hostname and pid alone are not enough.

use crate::store::{DynStore, Lease, LeaseLost};
use crate::store_location::StoreLocation;
use anyhow::Result;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

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

/// A held lease and its heartbeat thread; released when dropped.
pub struct LeaseKeeper {
    lease: Lease,
    location: StoreLocation,
    watch: LeaseWatch,
    stop: Arc<(Mutex<bool>, Condvar)>,
    /// The heartbeat thread; it hands its store connection back when it
    /// stops, and the lease is given back through it.
    heartbeat: Option<JoinHandle<DynStore>>,
}

impl LeaseKeeper {
    /// Takes the lease of `sync` in the store at `location` for `owner`
    /// and starts renewing it; `Err(holder)` when another process holds it.
    pub fn acquire(
        location: &StoreLocation,
        sync: &str,
        owner: &str,
        timing: LeaseTiming,
    ) -> Result<Result<Self, String>> {
        let store = location.open()?;
        let ttl = timing.ttl.as_millis() as i64;
        let lease = match store.acquire_lease(sync, owner, now_ms(), ttl, &holder_is_gone)? {
            Ok(lease) => lease,
            Err(holder) => return Ok(Err(holder)),
        };
        let watch = LeaseWatch::default();
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let heartbeat = {
            let (lease, watch, stop) = (lease.clone(), watch.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("lease {sync}"))
                .spawn(move || beat(store, &lease, timing, &watch, &stop))?
        };
        Ok(Ok(LeaseKeeper {
            lease,
            location: location.clone(),
            watch,
            stop,
            heartbeat: Some(heartbeat),
        }))
    }

    /// The lease, to fence the pass's store connections with.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// A watch on the lease for the pass's workers.
    pub fn watch(&self) -> LeaseWatch {
        self.watch.clone()
    }

    /// Stops the heartbeat and gives the lease back.
    pub fn release(mut self) -> Result<()> {
        self.give_back()
    }

    /// Stops the heartbeat and gives the lease back through the heartbeat's
    /// own connection. Opening another would cost a connection's set-up, and
    /// for SQLite, the last connection to a file closing twice: each a
    /// checkpoint, and the log deleted and made again.
    fn give_back(&mut self) -> Result<()> {
        let (stopped, wake) = &*self.stop;
        *stopped.lock().expect("heartbeat lock") = true;
        wake.notify_all();
        let store = match self.heartbeat.take().map(JoinHandle::join) {
            Some(Ok(store)) => store,
            // The heartbeat panicked (or was already stopped): a fresh connection.
            _ => self.location.open()?,
        };
        store.release_lease(&self.lease)
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        if self.heartbeat.is_some()
            && let Err(error) = self.give_back()
        {
            tracing::warn!(
                "the lease of {:?} was not released: {error:#}",
                self.lease.sync
            );
        }
    }
}

/// Renews `lease` every heartbeat until told to stop or the lease is lost;
/// hands `store` back.
fn beat(
    store: DynStore,
    lease: &Lease,
    timing: LeaseTiming,
    watch: &LeaseWatch,
    stop: &(Mutex<bool>, Condvar),
) -> DynStore {
    let ttl = timing.ttl.as_millis() as i64;
    let (stopped, wake) = stop;
    let mut guard = stopped.lock().expect("heartbeat lock");
    loop {
        let (next, _) = wake
            .wait_timeout_while(guard, timing.heartbeat, |stopped| !*stopped)
            .expect("heartbeat lock");
        guard = next;
        if *guard {
            return store;
        }
        match store.renew_lease(lease, now_ms(), ttl) {
            Ok(()) => {}
            Err(error) => match error.downcast::<LeaseLost>() {
                Ok(lost) => {
                    tracing::error!("{lost}");
                    *watch.lost.lock().expect("lease watch lock") = Some(lost);
                    return store;
                }
                // A busy or unreadable store: the next beat tries again,
                // well before the lease runs out.
                Err(error) => tracing::warn!("the lease was not renewed: {error:#}"),
            },
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
        let keeper = LeaseKeeper::acquire(&location, "s", "a", LeaseTiming::default())
            .unwrap()
            .unwrap();
        let watch = keeper.watch();
        assert!(watch.check().is_ok());
        assert_eq!(
            LeaseKeeper::acquire(&location, "s", "b", LeaseTiming::default())
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
        // One beat later, the watch says so.
        beat_once(&keeper);
        assert!(watch.check().is_err());
        keeper.release().unwrap();
        assert_eq!(
            other.control("s").unwrap().lease_owner.as_deref(),
            Some("b")
        );
        other.release_lease(&taken).unwrap();
    }

    /// What the heartbeat thread does each [`HEARTBEAT`], now.
    fn beat_once(keeper: &LeaseKeeper) {
        let store = keeper.location.open().unwrap();
        if let Err(error) = store.renew_lease(&keeper.lease, now_ms(), 1_000)
            && let Ok(lost) = error.downcast::<LeaseLost>()
        {
            *keeper.watch.lost.lock().unwrap() = Some(lost);
        }
    }
}
