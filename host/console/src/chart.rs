//! The run history chart of a sync's page: seen, created, updated and
//! failed per run, oldest to newest, as a small inline SVG of grouped bars
//! (no script, no library; it renders wherever the page does).

use crmsync_engine::store::RunRow;
use maud::{Markup, html};

/// The runs charted at most (the newest).
pub const RUNS: usize = 30;

/// A series: its label (also its CSS class) and the count it draws.
type Series = (&'static str, fn(&RunRow) -> u64);

const SERIES: [Series; 4] = [
    ("seen", |r| r.counts.seen),
    ("created", |r| r.counts.created),
    ("updated", |r| r.counts.updated),
    ("failed", |r| r.counts.failed),
];

/// The chart of `runs` (newest first, as the store lists them).
pub fn history(runs: &[RunRow]) -> Markup {
    let shown: Vec<&RunRow> = runs.iter().take(RUNS).rev().collect();
    let top = shown
        .iter()
        .flat_map(|r| SERIES.iter().map(move |(_, value)| value(r)))
        .max()
        .unwrap_or(0)
        .max(1);
    let (height, group, bar) = (120.0_f64, 4.0 * 7.0 + 6.0, 7.0);
    // Always room for RUNS groups: a new sync's few runs keep their width.
    let width = RUNS as f64 * group;
    html! {
        figure.chart {
            svg viewBox=(format!("0 0 {width} {}", height + 14.0)) role="img"
                aria-label="Records seen, created, updated and failed per run" {
                @for (i, run) in shown.iter().enumerate() {
                    @for (j, (label, value)) in SERIES.iter().enumerate() {
                        @let h = value(run) as f64 / top as f64 * height;
                        rect class=(label) x=(format!("{:.1}", i as f64 * group + j as f64 * bar))
                            y=(format!("{:.1}", height - h)) width=(bar - 1.0) height=(format!("{h:.1}")) {
                            title { "run " (run.id) ": " (value(run)) " " (label) }
                        }
                    }
                    text x=(format!("{:.1}", i as f64 * group)) y=(height + 12.0) { (run.id) }
                }
            }
            figcaption {
                @for (label, _) in SERIES {
                    span.key { span class=(format!("swatch {label}")) {} (label) }
                }
                " — the last " (shown.len()) " runs, largest " (top)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crmsync_engine::store::Counts;

    #[test]
    fn bars_scale_to_the_largest_count_and_the_newest_runs() {
        let runs: Vec<RunRow> = (1..=40)
            .rev()
            .map(|id| RunRow {
                id,
                counts: Counts {
                    seen: id as u64 * 10,
                    created: id as u64,
                    ..Counts::default()
                },
                ..RunRow::default()
            })
            .collect();
        let svg = history(&runs).into_string();
        assert_eq!(svg.matches("<rect").count(), RUNS * 4);
        assert!(svg.contains("run 40: 400 seen"));
        assert!(!svg.contains("run 10:"));
        // The largest bar is full height.
        assert!(
            svg.contains("y=\"0.0\" width=\"6\" height=\"120.0\""),
            "{svg}"
        );
    }
}
