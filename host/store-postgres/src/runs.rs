//! Runs, checkpoints, bookmarks and error rows on PostgreSQL: a run's row
//! doubles as its checkpoint, written in the page's transaction.

use crate::held::Checkpoint;
use crate::reading::counts;
use crate::{PgStore, opt_bytes, opt_text};
use anyhow::Result;
use crmsync_store::interface::Runs;
use crmsync_store::rules::now_text;
use crmsync_store::{Bookmark, Counts, ErrorRow, OpenRun, RunMode};

/// A count as stored.
fn stored(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

impl Runs for PgStore {
    fn interrupted_run(&self, sync: &str) -> Result<Option<OpenRun>> {
        let Some(row) = self.query_opt(
            "SELECT id, cursor, pages, seen, created, updated, skipped, failed, mode, window_since,
                    window_until, newest_ms
             FROM runs WHERE sync = $1 AND status = 'running' ORDER BY id DESC LIMIT 1",
            &[&sync],
        )?
        else {
            return Ok(None);
        };
        let mode: &str = row.get(8);
        let since: Option<i64> = row.get(9);
        Ok(Some(OpenRun {
            id: row.get(0),
            cursor: opt_text(row.get(1))?,
            counts: counts(&row, 2),
            resumed: true,
            mode: match (mode, since) {
                ("incremental", Some(since_ms)) => RunMode::Incremental { since_ms },
                _ => RunMode::Full,
            },
            started_ms: row.get(10),
            newest_ms: row.get(11),
        }))
    }

    fn resume_run(&self, run_id: i64) -> Result<()> {
        self.fenced(|| {
            self.execute(
                "UPDATE runs SET resumed = resumed + 1 WHERE id = $1",
                &[&run_id],
            )?;
            Ok(())
        })
    }

    fn note_runner(&self, run_id: i64, runner: &str) -> Result<()> {
        self.fenced(|| {
            self.execute(
                "UPDATE runs SET runner = $2 WHERE id = $1",
                &[&run_id, &runner],
            )?;
            Ok(())
        })
    }

    fn start_run(&self, sync: &str, mode: RunMode, started_ms: i64) -> Result<OpenRun> {
        self.fenced(|| {
            let (mode_name, since) = match mode {
                RunMode::Full => ("full", None),
                RunMode::Incremental { since_ms } => ("incremental", Some(since_ms)),
            };
            let row = self.query_one(
                "INSERT INTO runs (sync, started_at, status, mode, window_since, window_until)
                 VALUES ($1, $2, 'running', $3, $4, $5) RETURNING id",
                &[&sync, &now_text(), &mode_name, &since, &started_ms],
            )?;
            Ok(OpenRun {
                id: row.get(0),
                cursor: None,
                counts: Counts::default(),
                resumed: false,
                mode,
                started_ms,
                newest_ms: None,
            })
        })
    }

    fn checkpoint(
        &self,
        run_id: i64,
        cursor: Option<&str>,
        counts: &Counts,
        newest_ms: Option<i64>,
    ) -> Result<()> {
        let checkpoint = Checkpoint {
            run_id,
            cursor: cursor.map(|c| c.as_bytes().to_vec()),
            counts: [
                stored(counts.pages),
                stored(counts.seen),
                stored(counts.created),
                stored(counts.updated),
                stored(counts.skipped),
                stored(counts.failed),
            ],
            newest_ms,
        };
        self.fenced(|| match self.hold_checkpoint(checkpoint) {
            // Every page's transaction checkpoints: it waits for the commit
            // (`held`), or takes the fence's lock now, which the commit then
            // need not take again.
            Some(checkpoint) => self.write_checkpoint(&checkpoint),
            None => Ok(()),
        })
    }

    fn bookmark(&self, sync: &str) -> Result<Option<Bookmark>> {
        Ok(self
            .query_opt(
                "SELECT bookmark_ms, fingerprint FROM sync_control
                 WHERE sync = $1 AND bookmark_ms IS NOT NULL AND fingerprint IS NOT NULL",
                &[&sync],
            )?
            .map(|row| Bookmark {
                modified_ms: row.get(0),
                fingerprint: row.get(1),
            }))
    }

    fn complete_run(&self, run_id: i64, sync: &str, bookmark: &Bookmark) -> Result<()> {
        self.fenced(|| {
            self.ensure_control(sync)?;
            self.execute(
                "UPDATE sync_control SET bookmark_ms = $2, fingerprint = $3 WHERE sync = $1",
                &[&sync, &bookmark.modified_ms, &bookmark.fingerprint],
            )?;
            self.finish_run(run_id, None)
        })
    }

    fn finish_run(&self, run_id: i64, error: Option<&str>) -> Result<()> {
        self.fenced(|| {
            let status = if error.is_some() {
                "failed"
            } else {
                "completed"
            };
            self.execute(
                "UPDATE runs SET status = $2, error = $3, cursor = NULL, ended_at = $4 WHERE id = $1",
                &[&run_id, &status, &error.map(str::as_bytes), &now_text()],
            )?;
            Ok(())
        })
    }

    fn record_error(&self, run_id: i64, error: &ErrorRow) -> Result<()> {
        self.fenced(|| {
            self.execute(
                "INSERT INTO record_errors (run_id, record_id, category, scope, field, retryable,
                        message, resolution)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    &run_id,
                    &opt_bytes(&error.record_id),
                    &error.category,
                    &error.scope,
                    &opt_bytes(&error.field),
                    &error.retryable,
                    &error.message.as_bytes(),
                    &error.resolution,
                ],
            )?;
            Ok(())
        })
    }
}
