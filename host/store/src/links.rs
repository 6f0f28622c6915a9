//! Links between two CRMs' records (a sync into a CRM): which source record
//! is which destination record, and the values both last agreed on, which
//! is how a two-way run tells a change from the echo of its own write (M6).

use super::ContactStore;
use anyhow::Result;
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One linked pair (or a record whose counterpart is not created yet).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Link {
    /// The link's own id; `None` until saved.
    pub id: Option<i64>,
    pub source_id: Option<String>,
    /// Salesforce: `lead` or `contact`; `None` for HubSpot.
    pub source_kind: Option<String>,
    pub destination_id: Option<String>,
    pub destination_kind: Option<String>,
    /// The normalised email the pair was matched by (X3), if any.
    pub email: Option<String>,
    /// Field key -> the value both sides hold, as the sync last wrote or
    /// found it (tagged JSON: `{"text": "..."}`, `{"number": 1.5}`, ...).
    pub agreed: BTreeMap<String, serde_json::Value>,
    pub updated_at: String,
    /// `false` once the source record stopped matching the sync's filters or
    /// list, or either record was deleted (X6): kept, not written either way,
    /// until the side that stopped it reads its record (matching) again.
    pub syncing: bool,
    /// The side whose record stopped the pair; `None` while it syncs.
    pub stopped_at: Option<LinkSide>,
}

impl Default for Link {
    fn default() -> Self {
        Link {
            id: None,
            source_id: None,
            source_kind: None,
            destination_id: None,
            destination_kind: None,
            email: None,
            agreed: BTreeMap::new(),
            updated_at: String::new(),
            syncing: true,
            stopped_at: None,
        }
    }
}

/// Which side of the pair an id belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkSide {
    Source,
    Destination,
}

impl LinkSide {
    /// The link columns holding this side's id and kind.
    pub fn columns(self) -> (&'static str, &'static str) {
        match self {
            LinkSide::Source => ("source_id", "source_kind"),
            LinkSide::Destination => ("destination_id", "destination_kind"),
        }
    }
}

const COLUMNS: &str = "id, source_id, source_kind, destination_id, destination_kind, email, agreed, \
                       updated_at, syncing";

fn read_link(row: &rusqlite::Row<'_>) -> rusqlite::Result<Link> {
    let agreed: String = row.get(6)?;
    let (syncing, stopped_at) = crate::rules::link_from_state(row.get(8)?);
    Ok(Link {
        id: row.get(0)?,
        source_id: row.get(1)?,
        source_kind: row.get(2)?,
        destination_id: row.get(3)?,
        destination_kind: row.get(4)?,
        email: row.get(5)?,
        agreed: serde_json::from_str(&agreed).unwrap_or_default(),
        updated_at: row.get(7)?,
        syncing,
        stopped_at,
    })
}

impl ContactStore {
    /// The link of `sync` holding `id` on `side`.
    pub fn link(&self, sync: &str, side: LinkSide, id: &str) -> Result<Option<Link>> {
        let (column, _) = side.columns();
        Ok(self
            .conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM links WHERE sync = ?1 AND {column} = ?2"
            ))?
            .query_row(params![sync, id], read_link)
            .optional()?)
    }

    /// The link with this id, of any sync (a contact's company names its
    /// company link by id).
    pub fn link_by_id(&self, id: i64) -> Result<Option<Link>> {
        Ok(self
            .conn
            .prepare_cached(&format!("SELECT {COLUMNS} FROM links WHERE id = ?1"))?
            .query_row(params![id], read_link)
            .optional()?)
    }

    /// Inserts or updates a link; returns its id.
    pub fn save_link(&self, sync: &str, link: &Link) -> Result<i64> {
        self.fenced(|| {
            let agreed = serde_json::to_string(&link.agreed)?;
            let now = super::now_text();
            match link.id {
                Some(id) => {
                    self.conn
                        .prepare_cached(
                            "UPDATE links SET source_id = ?2, source_kind = ?3, destination_id = ?4,
                                    destination_kind = ?5, email = ?6, agreed = ?7, updated_at = ?8,
                                    syncing = ?9
                             WHERE id = ?1",
                        )?
                        .execute(params![
                            id,
                            link.source_id,
                            link.source_kind,
                            link.destination_id,
                            link.destination_kind,
                            link.email,
                            agreed,
                            now,
                            crate::rules::link_state(link)
                        ])?;
                    Ok(id)
                }
                None => {
                    self.conn
                        .prepare_cached(
                            "INSERT INTO links (sync, source_id, source_kind, destination_id,
                                    destination_kind, email, agreed, updated_at, syncing)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                        )?
                        .execute(params![
                            sync,
                            link.source_id,
                            link.source_kind,
                            link.destination_id,
                            link.destination_kind,
                            link.email,
                            agreed,
                            now,
                            crate::rules::link_state(link)
                        ])?;
                    Ok(self.conn.last_insert_rowid())
                }
            }
        })
    }

    /// A record merged into another (a Salesforce Lead converted into a
    /// Contact, HubSpot contacts merged): the link moves to the survivor, so
    /// the counterpart is updated, never doubled (X8). Returns whether a
    /// link moved; none does when the survivor is linked already.
    pub fn relink(
        &self,
        sync: &str,
        side: LinkSide,
        merged: &str,
        survivor: &str,
        kind: Option<&str>,
    ) -> Result<bool> {
        self.fenced(|| {
            if self.link(sync, side, survivor)?.is_some() {
                return Ok(false);
            }
            let (id_column, kind_column) = side.columns();
            let moved = self
                .conn
                .prepare_cached(&format!(
                    "UPDATE links SET {id_column} = ?3, {kind_column} = ?4 WHERE sync = ?1 AND {id_column} = ?2"
                ))?
                .execute(params![sync, merged, survivor, kind])?;
            Ok(moved > 0)
        })
    }

    /// Stops the pair holding `id` on `side` (its record stopped matching,
    /// or was deleted: filters, lists, X6), or resumes a pair that side
    /// stopped; returns whether a link changed.
    pub fn set_link_syncing(
        &self,
        sync: &str,
        side: LinkSide,
        id: &str,
        syncing: bool,
    ) -> Result<bool> {
        self.fenced(|| {
            let (column, _) = side.columns();
            let (to, from) = if syncing {
                (1, crate::rules::stopped_code(side))
            } else {
                (crate::rules::stopped_code(side), 1)
            };
            Ok(self
                .conn
                .prepare_cached(&format!(
                    "UPDATE links SET syncing = ?3 WHERE sync = ?1 AND {column} = ?2 AND syncing = ?4"
                ))?
                .execute(params![sync, id, to, from])?
                > 0)
        })
    }

    /// After a complete run: links whose source record the run did not read
    /// stop syncing (it was deleted, or left the list). Returns how many.
    pub fn stop_syncing_unread(
        &self,
        sync: &str,
        read: &std::collections::HashSet<String>,
    ) -> Result<u64> {
        self.fenced(|| {
            let linked: Vec<String> = self
                .conn
                .prepare("SELECT source_id FROM links WHERE sync = ?1 AND syncing = 1 AND source_id IS NOT NULL")?
                .query_map([sync], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let mut stopped = 0;
            for id in linked.iter().filter(|id| !read.contains(*id)) {
                stopped += u64::from(self.set_link_syncing(sync, LinkSide::Source, id, false)?);
            }
            Ok(stopped)
        })
    }

    /// Records of `sync` linked on both sides (`crmsync status`).
    pub fn linked_pairs(&self, sync: &str) -> Result<u64> {
        Ok(self.conn.query_row(
            "SELECT COUNT(*) FROM links WHERE sync = ?1 AND source_id IS NOT NULL
                 AND destination_id IS NOT NULL",
            [sync],
            |r| r.get(0),
        )?)
    }

    /// Every link of `sync`, oldest first (`crmsync links`).
    pub fn links(&self, sync: &str) -> Result<Vec<Link>> {
        let mut statement = self.conn.prepare(&format!(
            "SELECT {COLUMNS} FROM links WHERE sync = ?1 ORDER BY id"
        ))?;
        let rows = statement.query_map([sync], read_link)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}
