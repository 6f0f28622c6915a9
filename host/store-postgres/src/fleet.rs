//! The fleet: many runners sharing one database's syncs. Each due run is
//! claimed by exactly one runner with `SELECT … FOR UPDATE SKIP LOCKED`, as
//! PostgreSQL job queues (River, Oban) claim jobs; runners keep a heartbeat
//! row, and a claim by a runner whose heartbeat stopped is free again, so a
//! killed runner's syncs are picked up by the others (and resumed from their
//! checkpoints once the sync's own lease lets them in).
//!
//! The claim only says who should run a sync now; the sync's lease and its
//! fencing token (in the sync's namespace) still guarantee that two runners
//! never write one sync at once. Pause and trigger live in the namespace
//! too; `PgStore` mirrors them here (and notifies) so one query finds every
//! due run and a trigger wakes an idle runner at once.

use anyhow::{Context, Result};
use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, NoTls};
use serde::Serialize;
use std::time::Duration;

/// The channel runners listen on: a trigger, resume or finished run.
pub const CHANNEL: &str = "crmsync_fleet";

/// A runner whose heartbeat is older than this is gone; its claims are free.
pub const RUNNER_TTL: Duration = Duration::from_secs(15);

/// How often a runner's heartbeat is written.
pub const RUNNER_HEARTBEAT: Duration = Duration::from_secs(3);

/// The fleet's tables, shared by every namespace of the database.
pub(crate) const SCHEMA: &str = "
CREATE SCHEMA IF NOT EXISTS crmsync_fleet;
CREATE TABLE IF NOT EXISTS crmsync_fleet.syncs (
    key          TEXT PRIMARY KEY,
    namespace    TEXT NOT NULL,
    sync         TEXT NOT NULL,
    next_due_ms  BIGINT NOT NULL,
    paused       BOOLEAN NOT NULL DEFAULT FALSE,
    claimed_by   TEXT,
    claimed_ms   BIGINT
);
CREATE INDEX IF NOT EXISTS syncs_by_due ON crmsync_fleet.syncs (next_due_ms);
CREATE TABLE IF NOT EXISTS crmsync_fleet.runners (
    id           TEXT PRIMARY KEY,
    started_ms   BIGINT NOT NULL,
    heartbeat_ms BIGINT NOT NULL,
    concurrency  BIGINT NOT NULL
);
";

/// A sync's key in the fleet: its namespace and name.
pub fn key(namespace: &str, sync: &str) -> String {
    format!("{namespace}/{sync}")
}

/// One runner's membership of the fleet of one database.
pub struct Fleet {
    client: Client,
    runner: String,
    /// To reconnect after the database restarted or the connection dropped.
    url: String,
    concurrency: usize,
}

/// A live runner, as `crmsync runners --json` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunnerRow {
    pub id: String,
    pub started_ms: i64,
    pub heartbeat_ms: i64,
    pub concurrency: i64,
    /// The syncs it has claimed (`namespace/sync`).
    pub holds: Vec<String>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Fleet {
    /// Connects to `url` as runner `runner`, creating the fleet's tables if
    /// needed and writing the runner's first heartbeat.
    pub fn join(url: &str, runner: &str, concurrency: usize) -> Result<Self> {
        let mut client = connect(url)?;
        ensure_schema(&mut client)?;
        let now = now_ms();
        client.execute(
            "INSERT INTO crmsync_fleet.runners (id, started_ms, heartbeat_ms, concurrency)
             VALUES ($1, $2, $2, $3)
             ON CONFLICT (id) DO UPDATE SET started_ms = $2, heartbeat_ms = $2, concurrency = $3",
            &[&runner, &now, &(concurrency as i64)],
        )?;
        Ok(Fleet {
            client,
            runner: runner.to_owned(),
            url: url.to_owned(),
            concurrency,
        })
    }

    /// Connects again if the connection is gone (a database restart, a
    /// network cut), rejoining as the same runner; whether it had to.
    pub fn reconnect_if_closed(&mut self) -> Result<bool> {
        if !self.client.is_closed() {
            return Ok(false);
        }
        *self = Fleet::join(&self.url, &self.runner, self.concurrency)?;
        Ok(true)
    }

    /// Adds a sync to the fleet (a no-op for one already there, whose due
    /// time another runner may have moved); its pause flag is refreshed.
    pub fn register(
        &mut self,
        namespace: &str,
        sync: &str,
        next_due_ms: i64,
        paused: bool,
    ) -> Result<()> {
        self.client.execute(
            "INSERT INTO crmsync_fleet.syncs (key, namespace, sync, next_due_ms, paused)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (key) DO UPDATE SET paused = EXCLUDED.paused",
            &[
                &key(namespace, sync),
                &namespace,
                &sync,
                &next_due_ms,
                &paused,
            ],
        )?;
        Ok(())
    }

    /// Claims up to `limit` of `keys` that are due, not paused and not held
    /// by a live runner; each is claimed by this runner alone.
    pub fn claim(&mut self, keys: &[String], limit: usize) -> Result<Vec<String>> {
        if limit == 0 || keys.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let stale = now - RUNNER_TTL.as_millis() as i64;
        let mut transaction = self.client.transaction()?;
        let claimable: Vec<String> = transaction
            .query(
                "SELECT s.key FROM crmsync_fleet.syncs s
                 LEFT JOIN crmsync_fleet.runners r ON r.id = s.claimed_by
                 WHERE s.key = ANY($1) AND NOT s.paused AND s.next_due_ms <= $2
                   AND (s.claimed_by IS NULL OR r.id IS NULL OR r.heartbeat_ms < $3)
                 ORDER BY s.next_due_ms
                 LIMIT $4
                 FOR UPDATE OF s SKIP LOCKED",
                &[&keys, &now, &stale, &(limit as i64)],
            )?
            .iter()
            .map(|row| row.get(0))
            .collect();
        if !claimable.is_empty() {
            transaction.execute(
                "UPDATE crmsync_fleet.syncs SET claimed_by = $2, claimed_ms = $3 WHERE key = ANY($1)",
                &[&claimable, &self.runner, &now],
            )?;
        }
        transaction.commit()?;
        Ok(claimable)
    }

    /// Ends this runner's claim of `key`: next due at `next_due_ms` when the
    /// run happened, unchanged (`None`) when it did not (so another runner,
    /// or this one, tries again).
    pub fn finish(&mut self, key: &str, next_due_ms: Option<i64>) -> Result<()> {
        self.client.execute(
            "UPDATE crmsync_fleet.syncs
             SET claimed_by = NULL, claimed_ms = NULL, next_due_ms = COALESCE($3, next_due_ms)
             WHERE key = $1 AND claimed_by = $2",
            &[&key, &self.runner, &next_due_ms],
        )?;
        Ok(())
    }

    /// When the soonest of `keys` is due (unix ms), if any is not paused.
    pub fn next_due(&mut self, keys: &[String]) -> Result<Option<i64>> {
        Ok(self
            .client
            .query_one(
                "SELECT min(next_due_ms) FROM crmsync_fleet.syncs
                 WHERE key = ANY($1) AND NOT paused AND claimed_by IS NULL",
                &[&keys],
            )?
            .get(0))
    }

    /// Renews this runner's heartbeat.
    pub fn heartbeat(&mut self) -> Result<()> {
        self.client.execute(
            "UPDATE crmsync_fleet.runners SET heartbeat_ms = $2 WHERE id = $1",
            &[&self.runner, &now_ms()],
        )?;
        Ok(())
    }

    /// Leaves the fleet (a drain): every claim released, due as it was, and
    /// the runner's row removed; the others are woken to take over.
    pub fn leave(&mut self) -> Result<()> {
        let mut transaction = self.client.transaction()?;
        transaction.execute(
            "UPDATE crmsync_fleet.syncs SET claimed_by = NULL, claimed_ms = NULL WHERE claimed_by = $1",
            &[&self.runner],
        )?;
        transaction.execute(
            "DELETE FROM crmsync_fleet.runners WHERE id = $1",
            &[&self.runner],
        )?;
        transaction.execute(&format!("NOTIFY {CHANNEL}"), &[])?;
        transaction.commit()?;
        Ok(())
    }

    /// Wakes the fleet's idle runners (a run ended, so due times moved).
    pub fn notify(&mut self) -> Result<()> {
        self.client.batch_execute(&format!("NOTIFY {CHANNEL}"))?;
        Ok(())
    }
}

/// Live runners of the database at `url` and what each holds.
pub fn runners(url: &str) -> Result<Vec<RunnerRow>> {
    let mut client = connect(url)?;
    ensure_schema(&mut client)?;
    let stale = now_ms() - RUNNER_TTL.as_millis() as i64;
    Ok(client
        .query(
            "SELECT r.id, r.started_ms, r.heartbeat_ms, r.concurrency,
                    COALESCE(array_agg(s.key ORDER BY s.key) FILTER (WHERE s.key IS NOT NULL), '{}')
             FROM crmsync_fleet.runners r
             LEFT JOIN crmsync_fleet.syncs s ON s.claimed_by = r.id
             WHERE r.heartbeat_ms >= $1
             GROUP BY r.id ORDER BY r.id",
            &[&stale],
        )?
        .iter()
        .map(|row| RunnerRow {
            id: row.get(0),
            started_ms: row.get(1),
            heartbeat_ms: row.get(2),
            concurrency: row.get(3),
            holds: row.get(4),
        })
        .collect())
}

/// A connection that waits for the fleet's notifications.
pub struct Listener {
    client: Client,
}

impl Listener {
    /// Listens on [`CHANNEL`] of the database at `url`.
    pub fn listen(url: &str) -> Result<Self> {
        let mut client = connect(url)?;
        client.batch_execute(&format!("LISTEN {CHANNEL}"))?;
        Ok(Listener { client })
    }

    /// Waits up to `timeout` for a notification; whether one came.
    /// Whether the connection is gone (listen again on a new one).
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    pub fn wait(&mut self, timeout: Duration) -> Result<bool> {
        let woken = self
            .client
            .notifications()
            .timeout_iter(timeout)
            .next()?
            .is_some();
        if woken {
            // Several at once wake once: drain what already arrived.
            let mut notifications = self.client.notifications();
            let mut pending = notifications.iter();
            while pending.next()?.is_some() {}
        }
        Ok(woken)
    }
}

fn connect(url: &str) -> Result<Client> {
    Client::connect(url, NoTls).with_context(|| {
        format!(
            "cannot connect to the PostgreSQL fleet database {}",
            crate::redact(url)
        )
    })
}

/// Creates the fleet's tables once per database, whoever comes first.
pub(crate) fn ensure_schema(client: &mut Client) -> Result<()> {
    let mut transaction = client.transaction()?;
    create_schema(&mut transaction)?;
    transaction.commit()?;
    Ok(())
}

/// The fleet's tables, inside `transaction`, under the fleet's advisory lock.
pub(crate) fn create_schema(transaction: &mut postgres::Transaction<'_>) -> Result<()> {
    transaction.execute(
        "SELECT pg_advisory_xact_lock(hashtext('crmsync fleet'))",
        &[],
    )?;
    transaction.batch_execute(SCHEMA)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::server;

    #[test]
    fn a_due_sync_is_claimed_by_one_runner_until_it_finishes_or_its_runner_is_gone() {
        let url = server();
        let ns = format!("claims_{}", std::process::id());
        let mut a = Fleet::join(&url, &format!("{ns}-a"), 4).unwrap();
        let mut b = Fleet::join(&url, &format!("{ns}-b"), 4).unwrap();
        a.register(&ns, "s", 0, false).unwrap();
        b.register(&ns, "s", 0, false).unwrap();
        let keys = [key(&ns, "s")];
        assert_eq!(a.claim(&keys, 4).unwrap(), keys);
        assert!(
            b.claim(&keys, 4).unwrap().is_empty(),
            "held by a live runner"
        );
        a.finish(&keys[0], Some(i64::MAX)).unwrap();
        assert!(b.claim(&keys, 4).unwrap().is_empty(), "not due");
        a.finish(&keys[0], None).unwrap();
        // Due again, claimed by b; b's heartbeat goes stale: a may take it.
        b.client
            .execute(
                "UPDATE crmsync_fleet.syncs SET next_due_ms = 0 WHERE key = $1",
                &[&keys[0]],
            )
            .unwrap();
        assert_eq!(b.claim(&keys, 4).unwrap(), keys);
        assert!(a.claim(&keys, 4).unwrap().is_empty());
        b.client
            .execute(
                "UPDATE crmsync_fleet.runners SET heartbeat_ms = 0 WHERE id = $1",
                &[&b.runner],
            )
            .unwrap();
        assert_eq!(a.claim(&keys, 4).unwrap(), keys, "b is gone");
        a.leave().unwrap();
        assert!(!runners(&url).unwrap().iter().any(|r| r.id == a.runner));
    }

    #[test]
    fn a_runner_whose_connection_was_cut_reconnects_and_rejoins() {
        let url = server();
        let runner = format!("cut_{}", std::process::id());
        let mut fleet = Fleet::join(&url, &runner, 2).unwrap();
        let pid: i32 = fleet
            .client
            .query_one("SELECT pg_backend_pid()", &[])
            .unwrap()
            .get(0);
        let mut admin = connect(&url).unwrap();
        admin
            .execute("SELECT pg_terminate_backend($1)", &[&pid])
            .unwrap();
        assert!(fleet.heartbeat().is_err(), "the connection is gone");
        assert!(fleet.reconnect_if_closed().unwrap());
        fleet.heartbeat().unwrap();
        assert!(runners(&url).unwrap().iter().any(|r| r.id == runner));
        assert!(!fleet.reconnect_if_closed().unwrap(), "connected");
    }
}
