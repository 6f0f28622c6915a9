//! What every backend decides the same way, whatever its SQL: how an update
//! merges a record's row and handles, how a link's state is coded, and when
//! a lease is free to take. SQLite (this crate) and PostgreSQL
//! (`crmsync-store-postgres`) both call these, so the two cannot drift.

use crate::{DirectoryEntry, Fields, Link, LinkSide};
use anyhow::{Context, Result};

/// A stored handle value and whether the sync brought it (`from_source`).
pub type FlaggedHandle = (String, bool);

/// A record's row, as a sync compares and writes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub external_id: Option<String>,
    pub name: Option<String>,
    pub fields: Fields,
    pub syncing: bool,
}

impl Row {
    /// The row after the source record `external_id` updated it: it is linked
    /// and syncing; a source value replaces, an absent one never erases
    /// (HubSpot reports "cleared" and "never set" alike).
    pub fn updated(&self, external_id: &str, name: &Option<String>, fields: &Fields) -> Row {
        let mut merged = self.fields.clone();
        merged.extend(fields.iter().map(|(k, v)| (k.clone(), v.clone())));
        Row {
            external_id: Some(external_id.to_owned()),
            name: name.clone().or_else(|| self.name.clone()),
            fields: merged,
            syncing: true,
        }
    }
}

/// The sync's new handles first, then the contact's own handles (those the
/// sync did not bring) that the source does not also have.
pub fn merge_handles(from_source: &[String], old: &[FlaggedHandle]) -> Vec<FlaggedHandle> {
    let mut merged: Vec<FlaggedHandle> = from_source.iter().map(|h| (h.clone(), true)).collect();
    for (value, old_from_source) in old {
        if !old_from_source && !from_source.contains(value) {
            merged.push((value.clone(), false));
        }
    }
    merged
}

/// What the matcher sees of contact `id`: its handles, and which of them
/// the linked source record brought.
pub fn contact_entry(
    id: i64,
    external_id: Option<String>,
    emails: Vec<FlaggedHandle>,
    phones: Vec<FlaggedHandle>,
) -> DirectoryEntry {
    let from_source = emails
        .iter()
        .chain(&phones)
        .filter(|(_, brought)| *brought)
        .map(|(v, _)| v.clone())
        .collect();
    DirectoryEntry {
        id,
        external_id,
        emails: emails.into_iter().map(|(v, _)| v).collect(),
        phones: phones.into_iter().map(|(v, _)| v).collect(),
        domains: Vec::new(),
        from_source,
    }
}

/// What the matcher sees of account `id`: every domain is the sync's (a
/// company's domains replace its account's whole list).
pub fn account_entry(id: i64, external_id: Option<String>, domains: Vec<String>) -> DirectoryEntry {
    DirectoryEntry {
        id,
        external_id,
        emails: Vec::new(),
        phones: Vec::new(),
        from_source: domains.clone(),
        domains,
    }
}

/// An account's domains after an update: a company read without domains
/// keeps the ones it had (an absent value never erases).
pub fn kept_domains(new: &[String], old: &[String]) -> Vec<String> {
    if new.is_empty() {
        old.to_vec()
    } else {
        new.to_vec()
    }
}

/// Folds what a merged-away contact had of its own into the survivor's
/// handles: its handles the sync did not bring, unless the survivor has them.
pub fn fold_handles(own: Vec<FlaggedHandle>, into: &mut Vec<FlaggedHandle>) {
    for (value, from_source) in own {
        if !from_source && !into.iter().any(|(v, _)| *v == value) {
            into.push((value, false));
        }
    }
}

/// A record's stored `fields` column.
pub fn parse_fields(id: i64, text: &str) -> Result<Fields> {
    serde_json::from_str(text)
        .with_context(|| format!("destination record {id} has unreadable fields"))
}

/// The time as records store it (RFC 3339, milliseconds, UTC).
pub fn now_text() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A link's stored state: 1 syncing; stopped by its source (0) or its
/// destination (2), so a resume on one side does not undo the other's stop.
pub fn link_state(link: &Link) -> i64 {
    match (link.syncing, link.stopped_at) {
        (true, _) => 1,
        (false, side) => stopped_code(side.unwrap_or(LinkSide::Source)),
    }
}

/// The state of a link stopped on `side`.
pub fn stopped_code(side: LinkSide) -> i64 {
    match side {
        LinkSide::Source => 0,
        LinkSide::Destination => 2,
    }
}

/// `(syncing, stopped_at)` of a stored state.
pub fn link_from_state(state: i64) -> (bool, Option<LinkSide>) {
    match state {
        1 => (true, None),
        0 => (false, Some(LinkSide::Source)),
        2 => (false, Some(LinkSide::Destination)),
        _ => (false, None),
    }
}

/// A link side as stored (write intents).
pub fn side_name(side: LinkSide) -> &'static str {
    match side {
        LinkSide::Source => "source",
        LinkSide::Destination => "destination",
    }
}

/// The side a stored name says.
pub fn side_from_name(name: &str) -> LinkSide {
    if name == "source" {
        LinkSide::Source
    } else {
        LinkSide::Destination
    }
}

/// What taking a lease decides from its row as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Free (or ours): set `(owner, until, token)` by compare-and-set on what was read.
    Take { token: i64 },
    /// Someone else holds it.
    Held(String),
}

/// The lease rule: free when it has no holder, when it expired, or when its
/// holder is known to be gone; a renewal by a live holder keeps its token,
/// any other taking bumps it (an expired lease of our own may have been
/// another's since).
pub fn claim(
    holder: Option<&str>,
    until: Option<i64>,
    token: i64,
    owner: &str,
    now_ms: i64,
    is_gone: &dyn Fn(&str) -> bool,
) -> Claim {
    let renewal = holder == Some(owner) && until.is_some_and(|u| u >= now_ms);
    let free = renewal
        || match (holder, until) {
            (None, _) => true,
            (Some(_), Some(until)) if until < now_ms => true,
            (Some(holder), _) => is_gone(holder),
        };
    match (free, renewal) {
        (false, _) => Claim::Held(holder.unwrap_or_default().to_owned()),
        (true, true) => Claim::Take { token },
        (true, false) => Claim::Take { token: token + 1 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_states_round_trip() {
        for (syncing, stopped_at) in [
            (true, None),
            (false, Some(LinkSide::Source)),
            (false, Some(LinkSide::Destination)),
        ] {
            let link = Link {
                syncing,
                stopped_at,
                ..Link::default()
            };
            assert_eq!(link_from_state(link_state(&link)), (syncing, stopped_at));
        }
    }

    #[test]
    fn a_lease_is_taken_when_free_expired_or_gone_and_renewed_with_its_token() {
        let alive = |_: &str| false;
        assert_eq!(
            claim(None, None, 0, "a", 10, &alive),
            Claim::Take { token: 1 }
        );
        assert_eq!(
            claim(Some("a"), Some(20), 1, "a", 10, &alive),
            Claim::Take { token: 1 }
        );
        assert_eq!(
            claim(Some("a"), Some(20), 1, "b", 10, &alive),
            Claim::Held("a".into())
        );
        assert_eq!(
            claim(Some("a"), Some(5), 1, "b", 10, &alive),
            Claim::Take { token: 2 }
        );
        assert_eq!(
            claim(Some("a"), Some(20), 1, "b", 10, &|h| h == "a"),
            Claim::Take { token: 2 }
        );
    }
}
