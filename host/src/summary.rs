//! The human summary of a pass, as `crmsync sync` and the daemon print it.

use crate::report::SyncReport;
use anyhow::Result;
use std::io::Write;
use std::path::Path;

/// The human summary of a pass.
pub fn write_summary(out: &mut dyn Write, report: &SyncReport, config: &Path) -> Result<()> {
    if let Some(companies) = &report.companies {
        write_summary(out, companies, config)?;
    }
    let c = &report.counts;
    writeln!(
        out,
        "sync {:?}: {} run {} {}{} in {:.2} s ({} pages, {} requests)",
        report.sync,
        report.mode,
        report.run_id,
        report.status,
        if report.resumed { " (resumed)" } else { "" },
        report.elapsed_ms as f64 / 1000.0,
        c.pages,
        report.requests
    )?;
    writeln!(
        out,
        "  seen {}  created {}  updated {}  skipped {}  failed {}",
        c.seen, c.created, c.updated, c.skipped, c.failed
    )?;
    if report.stopped_syncing > 0 {
        writeln!(
            out,
            "  {} records archived at the source or no longer matching the filters: kept, no longer syncing",
            report.stopped_syncing
        )?;
    }
    if let Some(written) = &report.written {
        writeln!(
            out,
            "  written to the destination: created {} updated {};  to the source: created {} updated {}",
            written.to_destination.created,
            written.to_destination.updated,
            written.to_source.created,
            written.to_source.updated
        )?;
    }
    if report.merged > 0 {
        writeln!(
            out,
            "  {} records merged (or Leads converted): one record each, linked to the survivor",
            report.merged
        )?;
    }
    if !report.errors_by_category.is_empty() {
        writeln!(out, "  errors by category:")?;
        for (category, count) in &report.errors_by_category {
            writeln!(out, "    {category:<18} {count}")?;
        }
        writeln!(
            out,
            "  details: crmsync errors --config {}",
            config.display()
        )?;
    }
    if let Some(error) = &report.error {
        writeln!(
            out,
            "  stopped: [{}] {}\n  fix: {}",
            error.category, error.message, error.resolution
        )?;
    }
    Ok(())
}
