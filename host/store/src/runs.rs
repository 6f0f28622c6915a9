//! Runs, checkpoints and errors: a run's row doubles as its checkpoint, and
//! its errors are counted in SQL for the report.

use super::*;

impl ContactStore {
    /// The sync's interrupted run, if it has one, as it was checkpointed.
    pub fn interrupted_run(&self, sync: &str) -> Result<Option<OpenRun>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT id, cursor, pages, seen, created, updated, skipped, failed, mode, window_since,
                        COALESCE(window_until, CAST(strftime('%s', started_at) AS INTEGER) * 1000), newest_ms
                 FROM runs WHERE sync = ?1 AND status = 'running' ORDER BY id DESC LIMIT 1",
            )?
            .query_row([sync], |r| {
                let mode: String = r.get(8)?;
                let since: Option<i64> = r.get(9)?;
                Ok(OpenRun {
                    id: r.get(0)?,
                    cursor: r.get(1)?,
                    counts: Counts::from_row(r, 2)?,
                    resumed: true,
                    mode: match (mode.as_str(), since) {
                        ("incremental", Some(since_ms)) => RunMode::Incremental { since_ms },
                        _ => RunMode::Full,
                    },
                    started_ms: r.get(10)?,
                    newest_ms: r.get(11)?,
                })
            })
            .optional()?)
    }

    /// Counts one more resumption of an interrupted run.
    pub fn resume_run(&self, run_id: i64) -> Result<()> {
        self.fenced(|| {
            self.conn.execute(
                "UPDATE runs SET resumed = resumed + 1 WHERE id = ?1",
                [run_id],
            )?;
            Ok(())
        })
    }

    /// Records that `runner` runs run `run_id` now.
    pub fn note_runner(&self, run_id: i64, runner: &str) -> Result<()> {
        self.fenced(|| {
            self.conn
                .prepare_cached("UPDATE runs SET runner = ?2 WHERE id = ?1")?
                .execute(params![run_id, runner])?;
            Ok(())
        })
    }

    /// Starts a new run of `sync`, begun at `started_ms`.
    pub fn start_run(&self, sync: &str, mode: RunMode, started_ms: i64) -> Result<OpenRun> {
        self.fenced(|| {
            let (mode_name, since) = match mode {
                RunMode::Full => ("full", None),
                RunMode::Incremental { since_ms } => ("incremental", Some(since_ms)),
            };
            self.conn.execute(
                &format!(
                    "INSERT INTO runs (sync, started_at, status, mode, window_since, window_until)
                     VALUES (?1, {NOW}, 'running', ?2, ?3, ?4)"
                ),
                params![sync, mode_name, since, started_ms],
            )?;
            Ok(OpenRun {
                id: self.conn.last_insert_rowid(),
                cursor: None,
                counts: Counts::default(),
                resumed: false,
                mode,
                started_ms,
                newest_ms: None,
            })
        })
    }

    /// Records the run's progress, its next cursor and the newest source
    /// modification read so far; call inside the page's transaction.
    pub fn checkpoint(
        &self,
        run_id: i64,
        cursor: Option<&str>,
        counts: &Counts,
        newest_ms: Option<i64>,
    ) -> Result<()> {
        self.fenced(|| {
            self.conn
                .prepare_cached(
                    "UPDATE runs SET cursor = ?2, pages = ?3, seen = ?4, created = ?5, updated = ?6, skipped = ?7, failed = ?8,
                            newest_ms = ?9
                     WHERE id = ?1",
                )?
                .execute(params![
                    run_id,
                    cursor,
                    counts.pages,
                    counts.seen,
                    counts.created,
                    counts.updated,
                    counts.skipped,
                    counts.failed,
                    newest_ms
                ])?;
            Ok(())
        })
    }

    /// The bookmark the sync's last completed run left, if any.
    pub fn bookmark(&self, sync: &str) -> Result<Option<Bookmark>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT bookmark_ms, fingerprint FROM sync_control
                 WHERE sync = ?1 AND bookmark_ms IS NOT NULL AND fingerprint IS NOT NULL",
            )?
            .query_row([sync], |r| {
                Ok(Bookmark {
                    modified_ms: r.get(0)?,
                    fingerprint: r.get(1)?,
                })
            })
            .optional()?)
    }

    /// Completes a run and stores where the next incremental run starts; call
    /// inside the last page's transaction.
    pub fn complete_run(&self, run_id: i64, sync: &str, bookmark: &Bookmark) -> Result<()> {
        self.fenced(|| {
            self.ensure_control(sync)?;
            self.conn.execute(
                "UPDATE sync_control SET bookmark_ms = ?2, fingerprint = ?3 WHERE sync = ?1",
                params![sync, bookmark.modified_ms, bookmark.fingerprint],
            )?;
            self.finish_run(run_id, None)
        })
    }

    /// Ends a run: `error` is `None` for a completed run, the fatal message otherwise.
    pub fn finish_run(&self, run_id: i64, error: Option<&str>) -> Result<()> {
        self.fenced(|| {
            let status = if error.is_some() {
                "failed"
            } else {
                "completed"
            };
            self.conn.execute(
                &format!("UPDATE runs SET status = ?2, error = ?3, cursor = NULL, ended_at = {NOW} WHERE id = ?1"),
                params![run_id, status, error],
            )?;
            Ok(())
        })
    }

    /// Records one classified error of a run.
    pub fn record_error(&self, run_id: i64, error: &ErrorRow) -> Result<()> {
        self.fenced(|| {
            self.conn
                .prepare_cached(
                    "INSERT INTO record_errors (run_id, record_id, category, scope, field, retryable, message, resolution)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?
                .execute(params![
                    run_id,
                    error.record_id,
                    error.category,
                    error.scope,
                    error.field,
                    error.retryable,
                    error.message,
                    error.resolution
                ])?;
            Ok(())
        })
    }
}
