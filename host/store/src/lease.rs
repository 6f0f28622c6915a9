//! The sync's lease in the store, and the fence every commit of a pass checks.
//!
//! One process runs a sync at a time: it holds the lease (`sync_control`'s
//! `lease_owner`, `lease_until`). Each time the lease changes hands its
//! `lease_token` grows, and a pass keeps the token it acquired: a commit that
//! finds another token (the lease expired and another process took it over)
//! rolls back instead, so a runner that lost its lease stops without writing.
//! When a lease is free is decided in `rules::claim`, shared by every
//! backend; taking a free lease is a compare-and-set on what was read, and a
//! fence holds while `(owner, token)` is still the row's.

use super::ContactStore;
use anyhow::Result;
use rusqlite::{OptionalExtension, params};

/// A held lease: the proof a pass carries into each of its commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub sync: String,
    pub owner: String,
    /// Grows each time the lease changes hands.
    pub token: i64,
}

/// This pass's lease is another's now: nothing more of it may be written.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "lost the lease of sync {sync:?} (now held by {holder}); stopped without writing, so two \
     processes never write one sync"
)]
pub struct LeaseLost {
    pub sync: String,
    pub holder: String,
}

impl ContactStore {
    /// Takes (or renews) the lease that lets one process run `sync`, until
    /// `now_ms + ttl_ms`. A lease whose holder `is_gone`, or that expired, is
    /// taken over with a new token. `Err(holder)` when someone else has it.
    pub fn acquire_lease(
        &self,
        sync: &str,
        owner: &str,
        now_ms: i64,
        ttl_ms: i64,
        is_gone: impl Fn(&str) -> bool,
    ) -> Result<Result<Lease, String>> {
        self.ensure_control(sync)?;
        let (holder, until, token): (Option<String>, Option<i64>, i64) = self.conn.query_row(
            "SELECT lease_owner, lease_until, lease_token FROM sync_control WHERE sync = ?1",
            [sync],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        let new_token =
            match crate::rules::claim(holder.as_deref(), until, token, owner, now_ms, &is_gone) {
                crate::rules::Claim::Take { token } => token,
                crate::rules::Claim::Held(holder) => return Ok(Err(holder)),
            };
        // Compare-and-set on the state read above, so two processes cannot both win.
        let changed = self.conn.execute(
            "UPDATE sync_control SET lease_owner = ?2, lease_until = ?3, lease_token = ?4
             WHERE sync = ?1 AND lease_owner IS ?5 AND lease_until IS ?6 AND lease_token = ?7",
            params![
                sync,
                owner,
                now_ms + ttl_ms,
                new_token,
                holder,
                until,
                token
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

    /// Extends `lease` to `now_ms + ttl_ms` if it is still this holder's
    /// (same owner, same token); [`LeaseLost`] when it is not.
    pub fn renew_lease(&self, lease: &Lease, now_ms: i64, ttl_ms: i64) -> Result<()> {
        let changed = self.conn.execute(
            "UPDATE sync_control SET lease_until = ?4
             WHERE sync = ?1 AND lease_owner = ?2 AND lease_token = ?3",
            params![lease.sync, lease.owner, lease.token, now_ms + ttl_ms],
        )?;
        if changed == 1 {
            Ok(())
        } else {
            Err(self.lost(lease)?.into())
        }
    }

    /// Gives the lease back, if `lease` still holds it; a connection fenced
    /// with it is fenced no more.
    pub fn release_lease(&self, lease: &Lease) -> Result<()> {
        self.conn.execute(
            "UPDATE sync_control SET lease_owner = NULL, lease_until = NULL
             WHERE sync = ?1 AND lease_owner = ?2 AND lease_token = ?3",
            params![lease.sync, lease.owner, lease.token],
        )?;
        let mut fence = self.fence.borrow_mut();
        if fence.as_ref() == Some(lease) {
            *fence = None;
        }
        Ok(())
    }

    /// Fences this connection with `lease`: from now on every commit made
    /// through it first checks, inside its transaction, that the lease is
    /// still this holder's, and writes outside a transaction get one.
    pub fn fence(&self, lease: Lease) {
        *self.fence.borrow_mut() = Some(lease);
    }

    /// [`LeaseLost`] unless the fence holds (inside a transaction, until
    /// it commits). A pass checks it before each step of writes it sends
    /// to a CRM, which no store transaction can take back.
    pub fn check_fence(&self) -> Result<()> {
        let Some(lease) = self.fence.borrow().clone() else {
            return Ok(());
        };
        let holds: bool = self
            .conn
            .prepare_cached(
                "SELECT COUNT(*) > 0 FROM sync_control
                 WHERE sync = ?1 AND lease_owner = ?2 AND lease_token = ?3",
            )?
            .query_row(params![lease.sync, lease.owner, lease.token], |r| r.get(0))?;
        if holds {
            Ok(())
        } else {
            Err(self.lost(&lease)?.into())
        }
    }

    fn lost(&self, lease: &Lease) -> Result<LeaseLost> {
        let holder: Option<String> = self
            .conn
            .query_row(
                "SELECT lease_owner FROM sync_control WHERE sync = ?1",
                [&lease.sync],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        Ok(LeaseLost {
            sync: lease.sync.clone(),
            holder: holder.unwrap_or_else(|| "nobody".to_owned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: i64 = 1_000;

    fn never_gone(_: &str) -> bool {
        false
    }

    #[test]
    fn a_takeover_changes_the_token_and_the_old_holder_cannot_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite");
        let old = ContactStore::open(&path).unwrap();
        let new = ContactStore::open(&path).unwrap();
        let first = old
            .acquire_lease("s", "a", 0, TTL, never_gone)
            .unwrap()
            .unwrap();
        let run = old.start_run("s", crate::RunMode::Full, 0).unwrap().id;
        old.fence(first.clone());
        // Renewing keeps the token; another holder waits.
        let renewed = old
            .acquire_lease("s", "a", 500, TTL, never_gone)
            .unwrap()
            .unwrap();
        assert_eq!(renewed.token, first.token);
        assert_eq!(
            new.acquire_lease("s", "b", 600, TTL, never_gone).unwrap(),
            Err("a".to_owned())
        );
        // Expired: b takes over with a new token.
        let second = new
            .acquire_lease("s", "b", 5_000, TTL, never_gone)
            .unwrap()
            .unwrap();
        assert!(second.token > first.token);
        // a's commit is refused inside its own transaction, and nothing lands.
        old.begin().unwrap();
        old.record_error(run, &crate::ErrorRow::default()).unwrap();
        let lost = old.commit().unwrap_err();
        assert!(lost.downcast_ref::<LeaseLost>().is_some(), "{lost:#}");
        assert!(old.errors(run).unwrap().is_empty());
        // A write outside a transaction is fenced too.
        assert!(old.record_error(run, &crate::ErrorRow::default()).is_err());
        assert!(old.renew_lease(&first, 5_100, TTL).is_err());
        // b's writes go through.
        new.fence(second.clone());
        new.record_error(run, &crate::ErrorRow::default()).unwrap();
        assert_eq!(new.errors(run).unwrap().len(), 1);
        // a's expired lease, taken again by a, is a new token as well.
        new.release_lease(&second).unwrap();
        let again = old
            .acquire_lease("s", "a", 6_000, TTL, never_gone)
            .unwrap()
            .unwrap();
        assert!(again.token > second.token);
    }
}
