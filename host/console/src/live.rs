//! What the console knows of runs as they happen, from the daemon's
//! observer calls: which syncs run now and how far each got, the full
//! re-syncs asked for, and every figure `/metrics` exposes.

use crate::webhooks::Refusal;
use chrono::{DateTime, SecondsFormat, Utc};
use crmsync_engine::observer::RunObserver;
use crmsync_engine::report::SyncReport;
use crmsync_engine::store::Counts;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

/// A run in progress, as the console's live view shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Progress {
    pub started_at: String,
    #[serde(flatten)]
    pub counts: Counts,
}

/// The run duration histogram's buckets, in seconds: from a quiet
/// incremental run to a first full sync of a large portal.
const DURATION_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
];

/// Runs in progress, full re-syncs asked for, and the metrics recorder.
pub struct Live {
    running: Mutex<BTreeMap<String, Progress>>,
    full: Mutex<BTreeSet<String>>,
    recorder: PrometheusRecorder,
}

impl Default for Live {
    fn default() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("crmsync_run_duration_seconds".into()),
                &DURATION_BUCKETS,
            )
            .expect("the buckets are not empty")
            .build_recorder();
        let live = Live {
            running: Mutex::default(),
            full: Mutex::default(),
            recorder,
        };
        live.record(|| {
            metrics::describe_counter!("crmsync_runs_total", "Sync runs ended, by outcome.");
            metrics::describe_counter!(
                "crmsync_records_total",
                "Source records a run handled, by outcome."
            );
            metrics::describe_counter!(
                "crmsync_errors_total",
                "Errors runs recorded, by category."
            );
            metrics::describe_counter!(
                "crmsync_api_requests_total",
                "HTTP requests runs sent to CRM APIs (retries included)."
            );
            metrics::describe_counter!(
                "crmsync_api_rate_limited_total",
                "Answers of 429 Too Many Requests."
            );
            metrics::describe_counter!(
                "crmsync_api_retries_total",
                "Requests sent again after a rate limit or a transient failure."
            );
            metrics::describe_counter!(
                "crmsync_lease_takeovers_total",
                "Runs that took over an interrupted run (its runner died or lost its lease)."
            );
            metrics::describe_histogram!(
                "crmsync_run_duration_seconds",
                metrics::Unit::Seconds,
                "How long runs took."
            );
            metrics::describe_gauge!("crmsync_syncs_running", "Syncs running now.");
            metrics::describe_counter!(
                "crmsync_webhook_deliveries_total",
                "HubSpot webhook deliveries received, by outcome."
            );
            metrics::describe_counter!(
                "crmsync_webhook_triggers_total",
                "Runs asked for by webhook events, after debouncing."
            );
            metrics::gauge!("crmsync_syncs_running").set(0.0);
        });
        live
    }
}

impl Live {
    fn record(&self, f: impl FnOnce()) {
        metrics::with_local_recorder(&self.recorder, f)
    }

    /// Every metric in Prometheus' text exposition format.
    pub fn render_metrics(&self) -> String {
        self.recorder.handle().render()
    }

    /// The run of `sync` in progress, if one is.
    pub fn running(&self, sync: &str) -> Option<Progress> {
        self.running.lock().expect("live lock").get(sync).cloned()
    }

    /// Asks for the next run of `sync` to read every record.
    pub fn request_full(&self, sync: &str) {
        self.full.lock().expect("live lock").insert(sync.to_owned());
    }

    /// Counts a webhook delivery: accepted, or why it was refused.
    pub fn webhook_delivery(&self, outcome: Result<(), &Refusal>) {
        let outcome = match outcome {
            Ok(()) => "accepted",
            Err(refusal) => refusal.label(),
        };
        self.record(|| {
            metrics::counter!("crmsync_webhook_deliveries_total", "outcome" => outcome).increment(1)
        });
    }

    /// Counts a run asked for by webhook events.
    pub fn webhook_trigger(&self, sync: &str) {
        let sync = sync.to_owned();
        self.record(|| {
            metrics::counter!("crmsync_webhook_triggers_total", "sync" => sync).increment(1)
        });
    }

    /// `sync` runs no more here.
    fn ended(&self, sync: &str) {
        let running = {
            let mut running = self.running.lock().expect("live lock");
            running.remove(sync);
            running.len()
        };
        self.set_running_gauge(running);
    }

    fn set_running_gauge(&self, running: usize) {
        self.record(|| metrics::gauge!("crmsync_syncs_running").set(running as f64));
    }

    fn record_report(&self, report: &SyncReport) {
        let sync = report.sync.clone();
        self.record(|| {
            let counter = |name: &'static str, value: u64| {
                metrics::counter!(name, "sync" => sync.clone()).increment(value)
            };
            metrics::counter!("crmsync_runs_total", "sync" => sync.clone(), "outcome" => report.status.clone())
                .increment(1);
            let c = &report.counts;
            for (outcome, n) in [
                ("seen", c.seen),
                ("created", c.created),
                ("updated", c.updated),
                ("skipped", c.skipped),
                ("failed", c.failed),
            ] {
                metrics::counter!("crmsync_records_total", "sync" => sync.clone(), "outcome" => outcome)
                    .increment(n);
            }
            for (category, n) in &report.errors_by_category {
                metrics::counter!("crmsync_errors_total", "sync" => sync.clone(), "category" => category.clone())
                    .increment(*n);
            }
            counter("crmsync_api_requests_total", report.requests);
            counter("crmsync_api_rate_limited_total", report.rate_limited);
            counter("crmsync_api_retries_total", report.retries);
            if report.resumed {
                counter("crmsync_lease_takeovers_total", 1);
            }
            metrics::histogram!("crmsync_run_duration_seconds", "sync" => sync.clone())
                .record(report.elapsed_ms as f64 / 1000.0);
        });
        if let Some(companies) = &report.companies {
            self.record_report(companies);
        }
    }
}

fn now_text() -> String {
    let now: DateTime<Utc> = Utc::now();
    now.to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl RunObserver for Live {
    fn started(&self, sync: &str) {
        let running = {
            let mut running = self.running.lock().expect("live lock");
            running.insert(
                sync.to_owned(),
                Progress {
                    started_at: now_text(),
                    counts: Counts::default(),
                },
            );
            running.len()
        };
        self.set_running_gauge(running);
    }

    fn progress(&self, sync: &str, counts: &Counts) {
        if let Some(progress) = self.running.lock().expect("live lock").get_mut(sync) {
            progress.counts = *counts;
        }
    }

    fn finished(&self, sync: &str, outcome: Result<&SyncReport, &anyhow::Error>) {
        self.ended(sync);
        match outcome {
            Ok(report) => self.record_report(report),
            Err(_) => {
                let sync = sync.to_owned();
                self.record(|| {
                    metrics::counter!("crmsync_runs_total", "sync" => sync, "outcome" => "error")
                        .increment(1)
                });
            }
        }
    }

    fn skipped(&self, sync: &str, full: bool) {
        self.ended(sync);
        if full {
            self.request_full(sync);
        }
    }

    fn take_full(&self, sync: &str) -> bool {
        self.full.lock().expect("live lock").remove(sync)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_seen_live_and_counted_when_it_ends() {
        let live = Live::default();
        live.started("people");
        live.progress(
            "people",
            &Counts {
                pages: 1,
                seen: 100,
                ..Counts::default()
            },
        );
        assert_eq!(live.running("people").unwrap().counts.seen, 100);
        let report = SyncReport {
            sync: "people".into(),
            status: "completed".into(),
            resumed: true,
            counts: Counts {
                seen: 100,
                created: 90,
                failed: 10,
                ..Counts::default()
            },
            errors_by_category: [("validation".to_owned(), 10)].into(),
            requests: 7,
            rate_limited: 2,
            retries: 3,
            elapsed_ms: 1500,
            ..SyncReport::default()
        };
        live.finished("people", Ok(&report));
        assert!(live.running("people").is_none());
        let text = live.render_metrics();
        for line in [
            "crmsync_runs_total{sync=\"people\",outcome=\"completed\"} 1",
            "crmsync_records_total{sync=\"people\",outcome=\"created\"} 90",
            "crmsync_errors_total{sync=\"people\",category=\"validation\"} 10",
            "crmsync_api_rate_limited_total{sync=\"people\"} 2",
            "crmsync_api_retries_total{sync=\"people\"} 3",
            "crmsync_lease_takeovers_total{sync=\"people\"} 1",
            "crmsync_run_duration_seconds_bucket{sync=\"people\",le=\"2.5\"} 1",
            "crmsync_syncs_running 0",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }

    #[test]
    fn a_full_resync_is_taken_once_and_kept_when_the_run_was_skipped() {
        let live = Live::default();
        live.request_full("people");
        assert!(live.take_full("people"));
        assert!(!live.take_full("people"));
        live.skipped("people", true);
        assert!(live.take_full("people"));
    }
}
