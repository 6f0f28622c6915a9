//! The matcher's look-ups: a destination contact by its link or by a handle, and
//! every contact a page's ids and handles find (`find-page`), each with the
//! handles the linked source record brought.

use super::*;

impl ContactStore {
    /// The contact linked to `external_id`.
    pub fn find_by_external_id(&self, external_id: &str) -> Result<Option<DirectoryEntry>> {
        self.linked_id(Records::Contacts, external_id)?
            .map(|id| self.directory_entry(id))
            .transpose()
    }

    /// Contacts holding the normalised handle `value`.
    pub fn find_by_handle(&self, kind: Handle, value: &str) -> Result<Vec<DirectoryEntry>> {
        let ids: Vec<i64> = self
            .conn
            .prepare_cached("SELECT DISTINCT contact_id FROM handles WHERE kind = ?1 AND value = ?2 ORDER BY contact_id")?
            .query_map(params![kind.as_str(), value], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        ids.into_iter().map(|id| self.directory_entry(id)).collect()
    }

    pub(crate) fn directory_entry(&self, id: i64) -> Result<DirectoryEntry> {
        let external_id = self
            .conn
            .prepare_cached("SELECT external_id FROM contacts WHERE id = ?1")?
            .query_row([id], |r| r.get(0))?;
        let (emails, phones) = self.handles(id)?;
        Ok(crate::rules::contact_entry(id, external_id, emails, phones))
    }

    /// Every contact linked to one of `external_ids` or holding one of the
    /// handles, each once, by id: all a page's matching needs (`find-page`).
    /// One statement for the page: ~300 point queries each paid SQLite's
    /// per-statement cost (a third of the page's matching time).
    ///
    /// Each list of keys drives a join (`CROSS JOIN` keeps it the outer
    /// loop) and the parts are concatenated (`UNION ALL`): `IN rarray(?)`
    /// copied each list into a temporary b-tree first and `UNION` built
    /// another to drop repeats, four temporary databases a page for a
    /// look-up that mostly finds nobody. Repeats are dropped here instead.
    pub fn find_page(
        &self,
        external_ids: &[&str],
        emails: &[&str],
        phones: &[&str],
    ) -> Result<Vec<DirectoryEntry>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT c.id FROM rarray(?1) AS k CROSS JOIN contacts AS c ON c.external_id = k.value \
             UNION ALL SELECT h.contact_id FROM rarray(?2) AS k \
               CROSS JOIN handles AS h ON h.value = k.value AND h.kind = 'email' \
             UNION ALL SELECT h.contact_id FROM rarray(?3) AS k \
               CROSS JOIN handles AS h ON h.value = k.value AND h.kind = 'phone'",
        )?;
        let found = stmt.query_map(
            params![
                text_list(external_ids),
                text_list(emails),
                text_list(phones)
            ],
            |r| r.get::<_, i64>(0),
        )?;
        let ids = found.collect::<rusqlite::Result<std::collections::BTreeSet<i64>>>()?;
        ids.into_iter().map(|id| self.directory_entry(id)).collect()
    }

    /// A contact's emails and phones in order, each with its `from_source` flag.
    pub(crate) fn handles(&self, id: i64) -> Result<(Vec<FlaggedHandle>, Vec<FlaggedHandle>)> {
        let mut emails = Vec::new();
        let mut phones = Vec::new();
        let mut stmt = self.conn.prepare_cached(
            "SELECT kind, value, from_source FROM handles WHERE contact_id = ?1 ORDER BY position",
        )?;
        let mut rows = stmt.query([id])?;
        while let Some(row) = rows.next()? {
            let kind: String = row.get(0)?;
            let entry = (row.get::<_, String>(1)?, row.get::<_, bool>(2)?);
            if kind == "email" {
                emails.push(entry);
            } else {
                phones.push(entry);
            }
        }
        Ok((emails, phones))
    }
}

/// `values` as the argument of SQLite's `rarray()` table-valued function
/// (rusqlite's `array` module, loaded on every connection), so a page's keys
/// are one `IN rarray(?)` instead of one statement each.
pub(crate) fn text_list(values: &[&str]) -> std::rc::Rc<Vec<rusqlite::types::Value>> {
    std::rc::Rc::new(
        values
            .iter()
            .map(|v| rusqlite::types::Value::Text((*v).to_owned()))
            .collect(),
    )
}
