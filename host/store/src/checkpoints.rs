//! WAL checkpoints on a thread of their own, so a connection that commits
//! page after page does not copy its log into the database file, nor wait on
//! that copy's two `fsync`s, between its pages.
//!
//! SQLite checkpoints on the committing connection by default: once the log
//! holds 1,000 frames (4 MiB), the commit that crossed that line copies them
//! and syncs both files before it returns. A first sync's applier commits a
//! page of 100 contacts about every millisecond, so every 30-odd pages one of
//! them carried a checkpoint (about 90 `fsync`s over 100,000 contacts).
//!
//! A connection that has committed [`START_AFTER`] times starts a
//! [`Checkpointer`]: a thread with its own connection that runs a `PASSIVE`
//! checkpoint (it never waits on, nor blocks, the writer) after every
//! [`EVERY`] commits. Such a checkpoint copies the frames committed before it
//! started; the log restarts from its beginning only once every frame is
//! copied when the writer begins a transaction, which a writer that never
//! pauses would not see. So the writer keeps SQLite's own checkpoint, at
//! [`BACKSTOP_FRAMES`]: by then the thread has copied all but the last few
//! commits, the writer copies that tail, and its next transaction restarts
//! the log. The log stays under about 33 MiB of disk (4 MiB without the
//! thread).
//!
//! Short-lived connections (a status read, a lease heartbeat) never commit
//! that often and never start the thread.

use anyhow::Result;
use rusqlite::Connection;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// Commits a connection makes before it starts its checkpointer.
pub(crate) const START_AFTER: u64 = 16;

/// Commits between two background checkpoints: about 1,000 frames (SQLite's
/// own interval) when each commit is a page of 100 contacts. Measured against
/// 16: the pages every commit touches (the b-trees' upper levels and last
/// leaves) are copied half as often, 2.4% less of the run's CPU.
const EVERY: u64 = 32;

/// Where the writer checkpoints itself once a checkpointer runs (32 MiB of
/// log), instead of SQLite's 1,000 frames.
pub(crate) const BACKSTOP_FRAMES: i64 = 8_000;

/// The writer's commit count, and whether the thread should stop.
#[derive(Default)]
struct State {
    commits: u64,
    stop: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// Checkpoints the thread has run to the end.
    finished: AtomicU64,
}

/// A thread checkpointing one database file's log while its writer commits.
/// Dropping it stops the thread (a checkpoint under way finishes first).
pub(crate) struct Checkpointer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Opens a second connection to `path` and starts the thread.
    pub(crate) fn start(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        let shared = Arc::new(Shared::default());
        let thread = std::thread::Builder::new()
            .name("crmsync-checkpoint".into())
            .spawn({
                let shared = Arc::clone(&shared);
                let path = path.to_owned();
                move || run(&conn, &shared, &path)
            })?;
        Ok(Checkpointer {
            shared,
            thread: Some(thread),
        })
    }

    /// The writer committed: every [`EVERY`] commits, the thread checkpoints.
    pub(crate) fn committed(&self) {
        let mut state = self.shared.state.lock().expect("checkpointer state");
        state.commits += 1;
        if state.commits.is_multiple_of(EVERY) {
            self.shared.wake.notify_one();
        }
    }

    /// How many checkpoints the thread has run to the end.
    #[cfg(test)]
    pub(crate) fn finished(&self) -> u64 {
        self.shared.finished.load(Ordering::Relaxed)
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.shared.state.lock().expect("checkpointer state").stop = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            // A panic there has been reported on stderr already; the log is
            // still checkpointed by the writer and on the last close.
            let _ = thread.join();
        }
    }
}

fn run(conn: &Connection, shared: &Shared, path: &Path) {
    let mut done = 0;
    loop {
        {
            let state = shared.state.lock().expect("checkpointer state");
            let state = shared
                .wake
                .wait_while(state, |s| !s.stop && s.commits < done + EVERY)
                .expect("checkpointer state");
            if state.stop {
                return;
            }
            done = state.commits;
        }
        // `PASSIVE` takes no lock the writer waits on; when the writer's own
        // checkpoint holds the file's checkpoint lock this one is busy and
        // the next one copies what it left.
        let checkpointed = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, i64>(2)?,
            ))
        });
        match checkpointed {
            Ok((busy, log, copied)) => {
                shared.finished.fetch_add(1, Ordering::Relaxed);
                tracing::trace!(path = %path.display(), busy, log, copied, "background checkpoint");
            }
            Err(error) => {
                tracing::debug!(path = %path.display(), %error, "background checkpoint failed");
            }
        }
    }
}
