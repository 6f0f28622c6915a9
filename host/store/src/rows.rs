//! Rows as contacts and accounts share them: links, `seen` bookkeeping for
//! the sweep (X6), and records that stop syncing.

use super::*;

impl ContactStore {
    /// The id of the record linked to `external_id`.
    pub(crate) fn linked_id(&self, records: Records, external_id: &str) -> Result<Option<i64>> {
        let sql = per_table!(records, "SELECT id FROM ", " WHERE external_id = ?1");
        Ok(self
            .conn
            .prepare_cached(sql)?
            .query_row([external_id], |r| r.get(0))
            .optional()?)
    }

    /// Inserts a record linked to `external_id`; its handles are the caller's.
    pub(crate) fn insert_row(
        &self,
        records: Records,
        external_id: &str,
        name: &Option<String>,
        fields: &Fields,
        seen: Option<SeenBy<'_>>,
    ) -> Result<i64> {
        let sql = per_table!(
            records,
            "INSERT INTO ",
            " (external_id, name, fields, created_at, updated_at, seen_sync, seen_run)
             VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6)"
        );
        self.conn.prepare_cached(sql)?.execute(params![
            external_id,
            name,
            serde_json::to_string(fields)?,
            now_text(),
            seen.map(|s| s.sync),
            seen.map(|s| s.run_id)
        ])?;
        Ok(self.conn.last_insert_rowid())
    }

    pub(crate) fn read_row(&self, records: Records, id: i64) -> Result<Row> {
        let sql = per_table!(
            records,
            "SELECT external_id, name, fields, syncing FROM ",
            " WHERE id = ?1"
        );
        let (external_id, name, fields, syncing): (Option<String>, Option<String>, String, bool) =
            self.conn
                .prepare_cached(sql)?
                .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .with_context(|| {
                    format!(
                        "destination {} {id} disappeared during the run",
                        records.noun()
                    )
                })?;
        Ok(Row {
            external_id,
            name,
            fields: parse_fields(id, &fields)?,
            syncing,
        })
    }

    /// Writes an updated row (syncing again, `seen` recorded when given).
    pub(crate) fn write_row(
        &self,
        records: Records,
        id: i64,
        row: &Row,
        seen: Option<SeenBy<'_>>,
    ) -> Result<()> {
        let sql = per_table!(
            records,
            "UPDATE ",
            " SET external_id = ?2, name = ?3, fields = ?4, syncing = 1, updated_at = ?5,
                  seen_sync = COALESCE(?6, seen_sync), seen_run = COALESCE(?7, seen_run)
             WHERE id = ?1"
        );
        self.conn.prepare_cached(sql)?.execute(params![
            id,
            row.external_id,
            row.name,
            serde_json::to_string(&row.fields)?,
            now_text(),
            seen.map(|s| s.sync),
            seen.map(|s| s.run_id)
        ])?;
        Ok(())
    }

    /// Records `seen` on an unchanged row: the sweep (X6) knows it is still read.
    pub(crate) fn note_seen(
        &self,
        records: Records,
        id: i64,
        seen: Option<SeenBy<'_>>,
    ) -> Result<()> {
        if let Some(seen) = seen {
            let sql = per_table!(
                records,
                "UPDATE ",
                " SET seen_sync = ?2, seen_run = ?3 WHERE id = ?1"
            );
            self.conn
                .prepare_cached(sql)?
                .execute(params![id, seen.sync, seen.run_id])?;
        }
        Ok(())
    }

    /// Adds a contact the destination already had, not linked to any source
    /// record. Handles must already be normalised.
    pub fn insert_unlinked(&self, data: &ContactData) -> Result<i64> {
        let fields = serde_json::to_string(&data.fields)?;
        self.conn
            .prepare_cached(&format!(
                "INSERT INTO contacts (external_id, name, fields, created_at, updated_at) VALUES (NULL, ?1, ?2, {NOW}, {NOW})"
            ))?
            .execute(params![data.name, fields])?;
        let id = self.conn.last_insert_rowid();
        let emails: Vec<_> = data.emails.iter().map(|e| (e.clone(), false)).collect();
        let phones: Vec<_> = data.phones.iter().map(|p| (p.clone(), false)).collect();
        self.write_handles(id, &emails, &phones)?;
        Ok(id)
    }

    pub(crate) fn write_handles(
        &self,
        id: i64,
        emails: &[(String, bool)],
        phones: &[(String, bool)],
    ) -> Result<()> {
        let rows: Vec<_> = crate::batches::handle_rows(
            id,
            emails.iter().map(|(v, f)| (v.as_str(), *f)),
            phones.iter().map(|(v, f)| (v.as_str(), *f)),
        )
        .collect();
        self.insert_handle_rows(&rows)
    }
}
