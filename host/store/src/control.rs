//! Control: pause, resume and trigger, as any process sets them and the
//! daemon reads them.

use super::*;

impl ContactStore {
    /// The sync's control state (defaults when it never had any).
    pub fn control(&self, sync: &str) -> Result<Control> {
        Ok(self
            .conn
            .prepare_cached("SELECT paused, triggered, lease_owner, lease_until FROM sync_control WHERE sync = ?1")?
            .query_row([sync], |r| {
                Ok(Control {
                    paused: r.get(0)?,
                    triggered: r.get(1)?,
                    lease_owner: r.get(2)?,
                    lease_until: r.get(3)?,
                })
            })
            .optional()?
            .unwrap_or_default())
    }

    pub(crate) fn ensure_control(&self, sync: &str) -> Result<()> {
        self.conn
            .prepare_cached("INSERT OR IGNORE INTO sync_control (sync) VALUES (?1)")?
            .execute([sync])?;
        Ok(())
    }

    /// Pauses or resumes the sync's scheduled runs.
    pub fn set_paused(&self, sync: &str, paused: bool) -> Result<()> {
        self.ensure_control(sync)?;
        self.conn.execute(
            "UPDATE sync_control SET paused = ?2 WHERE sync = ?1",
            params![sync, paused],
        )?;
        Ok(())
    }

    /// Asks the daemon to run the sync now.
    pub fn request_trigger(&self, sync: &str) -> Result<()> {
        self.ensure_control(sync)?;
        self.conn.execute(
            "UPDATE sync_control SET triggered = 1 WHERE sync = ?1",
            [sync],
        )?;
        Ok(())
    }

    /// Consumes a pending trigger: whether there was one.
    pub fn take_trigger(&self, sync: &str) -> Result<bool> {
        Ok(self.conn.execute(
            "UPDATE sync_control SET triggered = 0 WHERE sync = ?1 AND triggered = 1",
            [sync],
        )? == 1)
    }

    /// Destination contacts linked to a source record.
    pub fn linked_contacts(&self) -> Result<u64> {
        Ok(self.conn.query_row(
            "SELECT COUNT(*) FROM contacts WHERE external_id IS NOT NULL",
            [],
            |r| r.get(0),
        )?)
    }
}
