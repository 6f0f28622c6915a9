//! What a pass did, as the CLI, the daemon, notifications and `--json`
//! report it: plain data, below everything that runs or shows a pass.

use crate::store::{Counts, ErrorRow};
use serde::Serialize;
use std::collections::BTreeMap;

/// What a pass did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncReport {
    pub sync: String,
    pub run_id: i64,
    /// `completed`, or `failed` when a sync-level error stopped it.
    pub status: String,
    /// Whether this pass continued a run that had been interrupted.
    pub resumed: bool,
    /// `full` (every record in scope) or `incremental` (changes since the last run, R4).
    pub mode: String,
    #[serde(flatten)]
    pub counts: Counts,
    pub errors_by_category: BTreeMap<String, u64>,
    /// HTTP requests the component sent (retries included).
    pub requests: u64,
    /// Of those, answers of `429 Too Many Requests` (E4).
    pub rate_limited: u64,
    /// Requests sent again after a rate limit or a transient failure.
    pub retries: u64,
    pub elapsed_ms: u64,
    /// Destination contacts whose source record was archived, marked no longer syncing (X6).
    pub stopped_syncing: u64,
    /// Destination contacts folded into, or relinked to, a merge's surviving record (X6).
    pub merged: u64,
    /// The error that stopped the sync, if one did.
    pub error: Option<ErrorRow>,
    /// The `[companies]` part's pass, run first (S3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub companies: Option<Box<SyncReport>>,
    /// A sync into a CRM: what it wrote to each side.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub written: Option<Written>,
}

/// What a run into a CRM wrote, per side.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Written {
    pub to_destination: WriteCounts,
    pub to_source: WriteCounts,
}

/// Records created and updated on one side.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct WriteCounts {
    pub created: u64,
    pub updated: u64,
}
