//! Walking a source's pages: every cursor must be new, and a sync reads at
//! most S5's 1,000,000 records.
//!
//! A cursor that repeats (the same one again, or one from earlier pages) is
//! not the end of the data: taking it as the end made the sweep that follows
//! a complete read (X6) stop syncing every pair not read. It is an
//! `invalid-response` failure of the run, so nothing after an incomplete
//! read treats it as complete. Store syncs, syncs into a CRM and their
//! look-ups all page through here.

use crate::bindings::crmsync::sync::types::{ErrorCategory, SyncError};
use crate::run_errors::sync_level;
use std::collections::HashSet;

/// S5: a sync stops, rather than silently truncating, past this many records.
pub const MAX_RECORDS_PER_SYNC: u64 = 1_000_000;

/// The cursors and records one read has seen.
#[derive(Debug, Default)]
pub struct Paging {
    seen: HashSet<String>,
    records: u64,
    /// What is read, for messages (`contacts`, `HubSpot companies`).
    what: String,
}

impl Paging {
    /// A read of `what` from its first page.
    pub fn new(what: &str) -> Self {
        Self::resumed(what, None, 0)
    }

    /// A read of `what` resumed at `start` (a checkpoint's cursor) after
    /// `records` were read before the interruption.
    pub fn resumed(what: &str, start: Option<&str>, records: u64) -> Self {
        Paging {
            seen: start.into_iter().map(str::to_owned).collect(),
            records,
            what: what.to_owned(),
        }
    }

    /// Counts a page of `records` and takes its `next` cursor: `Ok(None)` at
    /// the end, `Ok(Some(next))` to go on, or the run's failure when the
    /// cursor repeats or the read passes [`MAX_RECORDS_PER_SYNC`].
    pub fn advance(
        &mut self,
        records: usize,
        next: Option<&str>,
    ) -> Result<Option<String>, SyncError> {
        self.records += records as u64;
        if self.records > MAX_RECORDS_PER_SYNC {
            return Err(sync_level(
                ErrorCategory::Validation,
                format!(
                    "the source has more than {MAX_RECORDS_PER_SYNC} {} for this sync",
                    self.what
                ),
                "A sync is limited to 1,000,000 records: split it (for example with \
                 source.list_id or a [[filter]]).",
            ));
        }
        let Some(next) = next else {
            return Ok(None);
        };
        if !self.seen.insert(next.to_owned()) {
            return Err(sync_level(
                ErrorCategory::InvalidResponse,
                format!(
                    "the source returned the paging cursor {next:?} of {} a second time; \
                     paging would never end, and the data after it was never read",
                    self.what
                ),
                "Report this to the source's support; crmsync stopped the run rather than loop \
                 or treat an incomplete read as complete (nothing was marked as no longer syncing).",
            ));
        }
        Ok(Some(next.to_owned()))
    }

    /// Records read so far.
    pub fn records(&self) -> u64 {
        self.records
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_cursors_go_on_and_the_last_page_ends() {
        let mut paging = Paging::new("contacts");
        assert_eq!(
            paging.advance(100, Some("a")).unwrap().as_deref(),
            Some("a")
        );
        assert_eq!(
            paging.advance(100, Some("b")).unwrap().as_deref(),
            Some("b")
        );
        assert_eq!(paging.advance(3, None).unwrap(), None);
        assert_eq!(paging.records(), 203);
    }

    #[test]
    fn a_repeated_cursor_is_a_failure_never_an_end() {
        let mut paging = Paging::new("contacts");
        paging.advance(100, Some("a")).unwrap();
        let error = paging.advance(100, Some("a")).unwrap_err();
        assert_eq!(error.category, ErrorCategory::InvalidResponse);
        // A cycle through an earlier cursor too, and the cursor a run resumed from.
        let mut paging = Paging::resumed("contacts", Some("start"), 0);
        paging.advance(100, Some("a")).unwrap();
        paging.advance(100, Some("b")).unwrap();
        assert!(paging.advance(100, Some("a")).is_err());
        let mut paging = Paging::resumed("contacts", Some("start"), 0);
        assert!(paging.advance(100, Some("start")).is_err());
    }

    #[test]
    fn more_than_a_million_records_stop_the_read() {
        let mut paging = Paging::new("contacts");
        paging.advance(999_999, Some("a")).unwrap();
        paging.advance(1, Some("b")).unwrap();
        let error = paging.advance(1, Some("c")).unwrap_err();
        assert_eq!(error.category, ErrorCategory::Validation);
        assert!(
            error.message.contains("1000000 contacts"),
            "{}",
            error.message
        );
    }
}
