//! A run's ends in the store: where an incremental run starts reading, and
//! how a pass's run is closed by how it stopped. Shared by the pass into
//! the store (`sync`) and the pass into a CRM (`bridge`).

use crate::config::Config;
use crate::retry::Stop;
use crate::run_errors::error_row;
use crate::store::{ErrorRow, Store};
use anyhow::Result;
use std::collections::BTreeMap;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Ends a pass's run by how it stopped, and says so: `completed`,
/// `interrupted` (resumable: what was committed stays), or `failed` with the
/// classified error recorded. The pass's open transaction, if a stop left
/// one, is rolled back first, so the error and the run's end are committed.
/// A host or component failure is recorded on the run and returned.
pub(crate) fn end_run(
    store: &dyn Store,
    config: &Config,
    run_id: i64,
    outcome: Result<(), Stop>,
) -> Result<(&'static str, Option<ErrorRow>)> {
    match outcome {
        Ok(()) => Ok(("completed", None)),
        Err(Stop::Interrupted) => Ok(("interrupted", None)),
        Err(Stop::Classified(error)) => {
            store.rollback();
            let row = error_row(run_id, &error);
            store.record_error(run_id, &row)?;
            store.finish_run(run_id, Some(&row.message))?;
            Ok(("failed", Some(row)))
        }
        Err(Stop::Internal(error)) => {
            store.rollback();
            store.finish_run(run_id, Some(&format!("{error:#}")))?;
            Err(error.context(format!("sync {:?} (run {run_id}) failed", config.name)))
        }
    }
}

/// A run's errors counted by category, for its report.
pub(crate) fn errors_by_category(store: &dyn Store, run_id: i64) -> Result<BTreeMap<String, u64>> {
    store.error_counts(run_id)
}

/// Where an incremental run starts reading (R4): the lookback before the
/// bookmark the last completed run left, if it was left under the same
/// `fingerprint` and an incremental run may be made at all.
pub(crate) fn incremental_since(
    store: &dyn Store,
    config: &Config,
    fingerprint: &str,
    allowed: bool,
) -> Result<Option<i64>> {
    Ok(store
        .bookmark(&config.name)?
        .filter(|b| allowed && b.fingerprint == fingerprint)
        .map(|b| (b.modified_ms - config.source.lookback.as_millis() as i64).max(0)))
}
