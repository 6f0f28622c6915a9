//! Creates a sync into a CRM has sent, or is about to send, whose records no
//! look-up could find again: recorded before the request, forgotten in the
//! transaction that links the created record (or once the CRM said it made
//! none). One left behind by a crash is resolved by the next run, which
//! looks for the record among those modified since and links it, so a kill
//! between a write and its commit never creates a record twice.
//!
//! People are found again by email and companies by domain (X3); an intent
//! is only needed for a record without one, such as a company without a
//! domain.

use super::{ContactStore, Link, LinkSide};
use anyhow::Result;
use rusqlite::params;
use std::collections::BTreeMap;

/// A create that may have landed without its link.
#[derive(Debug, Clone, PartialEq)]
pub struct Intent {
    /// `None` until recorded.
    pub id: Option<i64>,
    /// Where the record is created.
    pub side: LinkSide,
    /// The pair's link as it will be once created: the other side's id (and
    /// kinds, email, agreed values), this side's id missing.
    pub link: Link,
    /// The values the create writes, by field key (tagged JSON as in
    /// [`Link::agreed`]): how the created record is recognised.
    pub written: BTreeMap<String, serde_json::Value>,
    /// When the create was about to be sent (unix ms).
    pub created_ms: i64,
}

impl ContactStore {
    /// Records `intents` of `sync` (one transaction, committed before the
    /// request goes out); their ids are set.
    pub fn record_intents(&self, sync: &str, intents: &mut [Intent]) -> Result<()> {
        self.fenced(|| {
            for intent in intents.iter_mut() {
                self.conn
                    .prepare_cached(
                        "INSERT INTO write_intents (sync, side, link, written, created_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?
                    .execute(params![
                        sync,
                        crate::rules::side_name(intent.side),
                        serde_json::to_string(&intent.link)?,
                        serde_json::to_string(&intent.written)?,
                        intent.created_ms
                    ])?;
                intent.id = Some(self.conn.last_insert_rowid());
            }
            Ok(())
        })
    }

    /// The intents of `sync` still pending, oldest first.
    pub fn intents(&self, sync: &str) -> Result<Vec<Intent>> {
        let mut statement = self.conn.prepare_cached(
            "SELECT id, side, link, written, created_ms FROM write_intents WHERE sync = ?1 ORDER BY id",
        )?;
        let rows = statement.query_map([sync], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })?;
        let mut intents = Vec::new();
        for row in rows {
            let (id, side, link, written, created_ms) = row?;
            intents.push(Intent {
                id: Some(id),
                side: crate::rules::side_from_name(&side),
                link: serde_json::from_str(&link)?,
                written: serde_json::from_str(&written)?,
                created_ms,
            });
        }
        Ok(intents)
    }

    /// The create of intent `id` is settled: linked, refused, or never landed.
    pub fn forget_intent(&self, id: i64) -> Result<()> {
        self.fenced(|| {
            self.conn
                .prepare_cached("DELETE FROM write_intents WHERE id = ?1")?
                .execute([id])?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intents_round_trip_and_are_forgotten() {
        let store = ContactStore::open_in_memory().unwrap();
        let mut intents = vec![Intent {
            id: None,
            side: LinkSide::Destination,
            link: Link {
                source_id: Some("9001".into()),
                ..Link::default()
            },
            written: BTreeMap::from([("name".to_owned(), serde_json::json!({"text": "Initech"}))]),
            created_ms: 5,
        }];
        store.record_intents("s", &mut intents).unwrap();
        assert!(intents[0].id.is_some());
        assert_eq!(store.intents("s").unwrap(), intents);
        assert!(store.intents("other").unwrap().is_empty());
        store.forget_intent(intents[0].id.unwrap()).unwrap();
        assert!(store.intents("s").unwrap().is_empty());
    }
}
