//! Applying match outcomes: creating, updating and linking destination
//! contacts, and folding the contacts of records merged at the source (X6).

use super::*;

impl ContactStore {
    /// Creates a contact linked to `external_id` (X5).
    pub fn create(
        &self,
        external_id: &str,
        data: &ContactData,
        seen: Option<SeenBy<'_>>,
    ) -> Result<i64> {
        Ok(self.create_many(&[(external_id, data)], seen)?[0])
    }

    /// Updates contact `id` from the source and links it to `external_id`
    /// (X2, X3). The source's handles replace the ones it brought before; the
    /// contact's own handles stay. Empty source values never erase a
    /// destination value. Nothing is written when nothing changes (X7),
    /// except that `seen` is recorded.
    pub fn update(
        &self,
        id: i64,
        external_id: &str,
        data: &ContactData,
        seen: Option<SeenBy<'_>>,
    ) -> Result<Change> {
        self.fenced(|| {
            let old = self.read_row(Records::Contacts, id)?;
            let (old_emails, old_phones) = self.handles(id)?;
            let new = old.updated(external_id, &data.name, &data.fields);
            let emails = merge_handles(&data.emails, &old_emails);
            let phones = merge_handles(&data.phones, &old_phones);
            if new == old && emails == old_emails && phones == old_phones {
                self.note_seen(Records::Contacts, id, seen)?;
                return Ok(Change::Unchanged);
            }
            self.write_row(Records::Contacts, id, &new, seen)?;
            self.conn
                .prepare_cached("DELETE FROM handles WHERE contact_id = ?1")?
                .execute([id])?;
            self.write_handles(id, &emails, &phones)?;
            Ok(Change::Updated)
        })
    }

    /// X6: the source record linked to this contact or account was archived
    /// (or stopped matching the filters). It stays, marked as no longer
    /// syncing. Whether anything changed.
    pub fn stop_syncing(&self, records: Records, external_id: &str) -> Result<bool> {
        self.fenced(|| {
            let sql = per_table!(
                records,
                "UPDATE ",
                " SET syncing = 0, updated_at = ?2 WHERE external_id = ?1 AND syncing = 1"
            );
            Ok(self
                .conn
                .prepare_cached(sql)?
                .execute(params![external_id, now_text()])?
                == 1)
        })
    }

    /// A merge at the source (X6): the records `merged_ids` were merged into
    /// `survivor`. Their destination contacts become one contact linked to
    /// `survivor`: the survivor's own contact if it has one (the others are
    /// folded into it and removed), else the first of theirs, relinked.
    /// Returns how many destination contacts were folded or relinked.
    pub fn absorb_merged(&self, survivor: &str, merged_ids: &[String]) -> Result<u64> {
        self.fenced(|| {
            let mut keep = self.linked_id(Records::Contacts, survivor)?;
            let mut changed = 0;
            for merged in merged_ids.iter().filter(|m| *m != survivor) {
                let Some(absorbed) = self.linked_id(Records::Contacts, merged)? else {
                    continue;
                };
                match keep {
                    None => {
                        self.conn
                            .prepare_cached(&format!(
                                "UPDATE contacts SET external_id = ?2, updated_at = {NOW} WHERE id = ?1"
                            ))?
                            .execute(params![absorbed, survivor])?;
                        keep = Some(absorbed);
                    }
                    Some(into) => self.fold_into(absorbed, into)?,
                }
                changed += 1;
            }
            Ok(changed)
        })
    }

    /// Moves what contact `from` had of its own (handles the sync did not
    /// bring, fields and a name `into` lacks) to `into`, then removes `from`.
    /// The sync's handles are not moved: the survivor's record brings them.
    pub(crate) fn fold_into(&self, from: i64, into: i64) -> Result<()> {
        let read = |id: i64| -> Result<(Option<String>, Fields)> {
            let (name, fields): (Option<String>, String) = self
                .conn
                .prepare_cached("SELECT name, fields FROM contacts WHERE id = ?1")?
                .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok((name, parse_fields(id, &fields)?))
        };
        let (from_name, from_fields) = read(from)?;
        let (into_name, mut fields) = read(into)?;
        for (key, value) in from_fields {
            fields.entry(key).or_insert(value);
        }
        let (from_emails, from_phones) = self.handles(from)?;
        let (mut emails, mut phones) = self.handles(into)?;
        crate::rules::fold_handles(from_emails, &mut emails);
        crate::rules::fold_handles(from_phones, &mut phones);
        self.conn
            .prepare_cached("DELETE FROM contacts WHERE id = ?1")?
            .execute([from])?;
        // No foreign key cascades this (see `HANDLES_V12`).
        self.conn
            .prepare_cached("DELETE FROM handles WHERE contact_id = ?1")?
            .execute([from])?;
        self.conn
            .prepare_cached(&format!(
                "UPDATE contacts SET name = ?2, fields = ?3, updated_at = {NOW} WHERE id = ?1"
            ))?
            .execute(params![
                into,
                into_name.or(from_name),
                serde_json::to_string(&fields)?
            ])?;
        self.conn
            .prepare_cached("DELETE FROM handles WHERE contact_id = ?1")?
            .execute([into])?;
        self.write_handles(into, &emails, &phones)
    }

    /// Records that run `run_id` of `sync` read the source record linked to
    /// `external_id` (whatever became of it), for `stop_syncing_unseen`.
    pub fn mark_seen(
        &self,
        records: Records,
        external_id: &str,
        sync: &str,
        run_id: i64,
    ) -> Result<()> {
        self.fenced(|| {
            let sql = per_table!(
                records,
                "UPDATE ",
                " SET seen_sync = ?2, seen_run = ?3 WHERE external_id = ?1"
            );
            self.conn
                .prepare_cached(sql)?
                .execute(params![external_id, sync, run_id])?;
            Ok(())
        })
    }

    /// At the end of a complete pass: records this sync linked earlier whose
    /// source record the pass no longer read (it left the list, or was
    /// deleted) stop syncing (X6). They are kept. Returns how many.
    pub fn stop_syncing_unseen(&self, records: Records, sync: &str, run_id: i64) -> Result<u64> {
        self.fenced(|| {
            let sql = per_table!(
                records,
                "UPDATE ",
                " SET syncing = 0, updated_at = ?3 WHERE seen_sync = ?1 AND seen_run <> ?2 AND syncing = 1"
            );
            Ok(self.conn.execute(sql, params![sync, run_id, now_text()])? as u64)
        })
    }
}
