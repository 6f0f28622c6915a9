//! Pause, trigger and the lease on PostgreSQL, and the page transaction a
//! fenced commit ends.

use crate::{PgStore, fleet};
use anyhow::Result;
use crmsync_store::interface::{Controls, Leases, Transactions};
use crmsync_store::rules::{Claim, claim};
use crmsync_store::{Control, Lease};

impl Controls for PgStore {
    fn control(&self, sync: &str) -> Result<Control> {
        Ok(self
            .query_opt(
                "SELECT paused, triggered, lease_owner, lease_until FROM sync_control WHERE sync = $1",
                &[&sync],
            )?
            .map(|row| Control {
                paused: row.get(0),
                triggered: row.get(1),
                lease_owner: row.get(2),
                lease_until: row.get(3),
            })
            .unwrap_or_default())
    }

    fn set_paused(&self, sync: &str, paused: bool) -> Result<()> {
        self.execute(
            "INSERT INTO sync_control (sync, paused) VALUES ($1, $2)
             ON CONFLICT (sync) DO UPDATE SET paused = EXCLUDED.paused",
            &[&sync, &paused],
        )?;
        // The fleet's copy, so its one due-runs query skips paused syncs;
        // a resume wakes idle runners.
        self.execute(
            "UPDATE crmsync_fleet.syncs SET paused = $2 WHERE key = $1",
            &[&fleet::key(&self.namespace, sync), &paused],
        )?;
        self.notify_fleet()
    }

    fn request_trigger(&self, sync: &str) -> Result<()> {
        self.execute(
            "INSERT INTO sync_control (sync, triggered) VALUES ($1, TRUE)
             ON CONFLICT (sync) DO UPDATE SET triggered = TRUE",
            &[&sync],
        )?;
        // Due now for the fleet, and every idle runner woken to claim it.
        self.execute(
            "UPDATE crmsync_fleet.syncs SET next_due_ms = 0 WHERE key = $1",
            &[&fleet::key(&self.namespace, sync)],
        )?;
        self.notify_fleet()
    }

    fn take_trigger(&self, sync: &str) -> Result<bool> {
        Ok(self.execute(
            "UPDATE sync_control SET triggered = FALSE WHERE sync = $1 AND triggered",
            &[&sync],
        )? == 1)
    }
}

impl Leases for PgStore {
    fn acquire_lease(
        &self,
        sync: &str,
        owner: &str,
        now_ms: i64,
        ttl_ms: i64,
        is_gone: &dyn Fn(&str) -> bool,
    ) -> Result<Result<Lease, String>> {
        self.ensure_control(sync)?;
        let row = self.query_one(
            "SELECT lease_owner, lease_until, lease_token FROM sync_control WHERE sync = $1",
            &[&sync],
        )?;
        let (holder, until, token): (Option<String>, Option<i64>, i64) =
            (row.get(0), row.get(1), row.get(2));
        let new_token = match claim(holder.as_deref(), until, token, owner, now_ms, is_gone) {
            Claim::Take { token } => token,
            Claim::Held(holder) => return Ok(Err(holder)),
        };
        // Compare-and-set on the state read above, so two runners cannot both win.
        let changed = self.execute(
            "UPDATE sync_control SET lease_owner = $2, lease_until = $3, lease_token = $4
             WHERE sync = $1 AND lease_owner IS NOT DISTINCT FROM $5
                   AND lease_until IS NOT DISTINCT FROM $6 AND lease_token = $7",
            &[
                &sync,
                &owner,
                &(now_ms + ttl_ms),
                &new_token,
                &holder,
                &until,
                &token,
            ],
        )?;
        Ok(if changed == 1 {
            Ok(Lease {
                sync: sync.to_owned(),
                owner: owner.to_owned(),
                token: new_token,
            })
        } else {
            Err(self.control(sync)?.lease_owner.unwrap_or_default())
        })
    }

    fn renew_lease(&self, lease: &Lease, now_ms: i64, ttl_ms: i64) -> Result<()> {
        let changed = self.execute(
            "UPDATE sync_control SET lease_until = $4
             WHERE sync = $1 AND lease_owner = $2 AND lease_token = $3",
            &[&lease.sync, &lease.owner, &lease.token, &(now_ms + ttl_ms)],
        )?;
        if changed == 1 {
            return Ok(());
        }
        Err(self.lost(lease)?.into())
    }

    fn release_lease(&self, lease: &Lease) -> Result<()> {
        self.execute(
            "UPDATE sync_control SET lease_owner = NULL, lease_until = NULL
             WHERE sync = $1 AND lease_owner = $2 AND lease_token = $3",
            &[&lease.sync, &lease.owner, &lease.token],
        )?;
        let mut fence = self.fence.borrow_mut();
        if fence.as_ref() == Some(lease) {
            *fence = None;
        }
        Ok(())
    }

    fn fence(&self, lease: Lease) {
        *self.fence.borrow_mut() = Some(lease);
    }

    fn check_fence(&self) -> Result<()> {
        self.check_fence_now()
    }
}

// One page to a transaction (the trait's default): a page's look-up runs
// outside the transaction and sees committed rows only (see `held`), so a
// second page in the same transaction would not see the first's contacts.
impl Transactions for PgStore {
    fn begin(&self) -> Result<()> {
        self.begin_transaction()
    }

    fn commit(&self) -> Result<()> {
        self.commit_transaction()
    }

    fn rollback(&self) {
        self.rollback_transaction()
    }
}
