//! Links between two CRMs' records and the create intents of syncs into a
//! CRM, on PostgreSQL.

use crate::{PgStore, bytes, opt_bytes, opt_text};
use anyhow::Result;
use crmsync_store::interface::{Intents, Links};
use crmsync_store::rules::{
    link_from_state, link_state, now_text, side_from_name, side_name, stopped_code,
};
use crmsync_store::{Intent, Link, LinkSide};
use std::collections::HashSet;

fn read_link(row: &postgres::Row) -> Result<Link> {
    let (syncing, stopped_at) = link_from_state(row.get(8));
    Ok(Link {
        id: row.get(0),
        source_id: opt_text(row.get(1))?,
        source_kind: row.get(2),
        destination_id: opt_text(row.get(3))?,
        destination_kind: row.get(4),
        email: opt_text(row.get(5))?,
        agreed: serde_json::from_str(row.get(6)).unwrap_or_default(),
        updated_at: row.get(7),
        syncing,
        stopped_at,
    })
}

/// One statement per side, as `&'static str` keys of the statement cache.
macro_rules! per_side {
    ($side:expr, $before:literal, $after:literal) => {
        match $side {
            LinkSide::Source => concat!($before, "source_id", $after),
            LinkSide::Destination => concat!($before, "destination_id", $after),
        }
    };
}

impl Links for PgStore {
    fn link(&self, sync: &str, side: LinkSide, id: &str) -> Result<Option<Link>> {
        let sql = per_side!(
            side,
            "SELECT id, source_id, source_kind, destination_id, destination_kind, email, agreed,
                    updated_at, syncing FROM links WHERE sync = $1 AND ",
            " = $2"
        );
        self.query_opt(sql, &[&sync, &bytes(id)])?
            .map(|row| read_link(&row))
            .transpose()
    }

    fn link_by_id(&self, id: i64) -> Result<Option<Link>> {
        self.query_opt(
            "SELECT id, source_id, source_kind, destination_id, destination_kind, email, agreed,
                    updated_at, syncing FROM links WHERE id = $1",
            &[&id],
        )?
        .map(|row| read_link(&row))
        .transpose()
    }

    fn save_link(&self, sync: &str, link: &Link) -> Result<i64> {
        self.fenced(|| {
            let agreed = serde_json::to_string(&link.agreed)?;
            let now = now_text();
            let state = link_state(link);
            match link.id {
                Some(id) => {
                    self.execute(
                        "UPDATE links SET source_id = $2, source_kind = $3, destination_id = $4,
                                destination_kind = $5, email = $6, agreed = $7, updated_at = $8,
                                syncing = $9
                         WHERE id = $1",
                        &[
                            &id,
                            &opt_bytes(&link.source_id),
                            &link.source_kind,
                            &opt_bytes(&link.destination_id),
                            &link.destination_kind,
                            &opt_bytes(&link.email),
                            &agreed,
                            &now,
                            &state,
                        ],
                    )?;
                    Ok(id)
                }
                None => Ok(self
                    .query_one(
                        "INSERT INTO links (sync, source_id, source_kind, destination_id,
                                destination_kind, email, agreed, updated_at, syncing)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
                        &[
                            &sync,
                            &opt_bytes(&link.source_id),
                            &link.source_kind,
                            &opt_bytes(&link.destination_id),
                            &link.destination_kind,
                            &opt_bytes(&link.email),
                            &agreed,
                            &now,
                            &state,
                        ],
                    )?
                    .get(0)),
            }
        })
    }

    fn relink(
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
            let sql = match side {
                LinkSide::Source => {
                    "UPDATE links SET source_id = $3, source_kind = $4 WHERE sync = $1 AND source_id = $2"
                }
                LinkSide::Destination => {
                    "UPDATE links SET destination_id = $3, destination_kind = $4
                     WHERE sync = $1 AND destination_id = $2"
                }
            };
            Ok(self.execute(sql, &[&sync, &bytes(merged), &bytes(survivor), &kind])? > 0)
        })
    }

    fn set_link_syncing(
        &self,
        sync: &str,
        side: LinkSide,
        id: &str,
        syncing: bool,
    ) -> Result<bool> {
        self.fenced(|| {
            let (to, from) = if syncing {
                (1, stopped_code(side))
            } else {
                (stopped_code(side), 1)
            };
            let sql = per_side!(
                side,
                "UPDATE links SET syncing = $3 WHERE sync = $1 AND ",
                " = $2 AND syncing = $4"
            );
            Ok(self.execute(sql, &[&sync, &bytes(id), &to, &from])? > 0)
        })
    }

    fn stop_syncing_unread(&self, sync: &str, read: &HashSet<String>) -> Result<u64> {
        self.fenced(|| {
            let read: Vec<&[u8]> = read.iter().map(|id| bytes(id)).collect();
            self.execute(
                "UPDATE links SET syncing = 0
                 WHERE sync = $1 AND syncing = 1 AND source_id IS NOT NULL
                       AND NOT (source_id = ANY($2))",
                &[&sync, &read],
            )
        })
    }

    fn linked_pairs(&self, sync: &str) -> Result<u64> {
        let row = self.query_one(
            "SELECT COUNT(*) FROM links
             WHERE sync = $1 AND source_id IS NOT NULL AND destination_id IS NOT NULL",
            &[&sync],
        )?;
        Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
    }

    fn links(&self, sync: &str) -> Result<Vec<Link>> {
        self.query(
            "SELECT id, source_id, source_kind, destination_id, destination_kind, email, agreed,
                    updated_at, syncing FROM links WHERE sync = $1 ORDER BY id",
            &[&sync],
        )?
        .iter()
        .map(read_link)
        .collect()
    }
}

impl Intents for PgStore {
    fn record_intents(&self, sync: &str, intents: &mut [Intent]) -> Result<()> {
        self.fenced(|| {
            for intent in intents.iter_mut() {
                let row = self.query_one(
                    "INSERT INTO write_intents (sync, side, link, written, created_ms)
                     VALUES ($1, $2, $3, $4, $5) RETURNING id",
                    &[
                        &sync,
                        &side_name(intent.side),
                        &serde_json::to_string(&intent.link)?,
                        &serde_json::to_string(&intent.written)?,
                        &intent.created_ms,
                    ],
                )?;
                intent.id = Some(row.get(0));
            }
            Ok(())
        })
    }

    fn intents(&self, sync: &str) -> Result<Vec<Intent>> {
        self.query(
            "SELECT id, side, link, written, created_ms FROM write_intents
             WHERE sync = $1 ORDER BY id",
            &[&sync],
        )?
        .into_iter()
        .map(|row| {
            Ok(Intent {
                id: Some(row.get(0)),
                side: side_from_name(row.get(1)),
                link: serde_json::from_str(row.get(2))?,
                written: serde_json::from_str(row.get(3))?,
                created_ms: row.get(4),
            })
        })
        .collect()
    }

    fn forget_intent(&self, id: i64) -> Result<()> {
        self.fenced(|| {
            self.execute("DELETE FROM write_intents WHERE id = $1", &[&id])?;
            Ok(())
        })
    }
}
