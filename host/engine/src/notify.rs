//! Telling the sync's owner when a run needs attention (the E rules'
//! "notified of errors"): a webhook `POST` of the run summary, retried, and/or
//! a command that gets the summary on standard input.

use crate::http::{HttpLimits, send_blocking};
use crate::report::SyncReport;
use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::Full;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

/// `[notify]` in a sync's config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// `POST`ed the run summary as JSON.
    pub webhook: Option<String>,
    /// Run with the run summary as JSON on standard input: program and arguments.
    #[serde(default)]
    pub command: Vec<String>,
    /// `"problems"` (default): runs that failed or recorded errors; `"always"`: every run.
    #[serde(default)]
    pub on: NotifyOn,
}

/// Which runs notify.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifyOn {
    #[default]
    Problems,
    Always,
}

/// What a notification carries.
#[derive(Debug, Serialize)]
pub struct Notification<'a> {
    pub event: &'static str,
    #[serde(flatten)]
    pub report: &'a SyncReport,
}

/// Webhook attempts before giving up (the run itself is never failed by this).
const WEBHOOK_ATTEMPTS: u32 = 4;

impl NotifyConfig {
    /// Whether this config notifies anyone.
    pub fn is_set(&self) -> bool {
        self.webhook.is_some() || !self.command.is_empty()
    }

    /// Notifies about `report` if it calls for it. A failed notification is
    /// logged, never fatal: the run itself is already recorded.
    pub fn after_run(&self, report: &SyncReport) {
        // A config's [companies] part reports inside the contacts' report.
        let parts = || std::iter::once(report).chain(report.companies.as_deref());
        let failed = parts().any(|part| part.error.is_some());
        let problems = failed || parts().any(|part| !part.errors_by_category.is_empty());
        if !self.is_set() || (self.on == NotifyOn::Problems && !problems) {
            return;
        }
        let event = if failed {
            "sync.failed"
        } else if problems {
            "sync.completed_with_errors"
        } else {
            "sync.completed"
        };
        let body = match serde_json::to_vec(&Notification { event, report }) {
            Ok(body) => body,
            Err(e) => return tracing::warn!("cannot encode the notification: {e}"),
        };
        if let Some(url) = &self.webhook
            && let Err(e) = post_with_retries(url, &body)
        {
            // A webhook URL's path is often its secret (Slack's are): never logged.
            tracing::warn!("notification to webhook {} failed: {e:#}", redacted(url));
        }
        if !self.command.is_empty()
            && let Err(e) = run_command(&self.command, &body)
        {
            tracing::warn!("notify command {:?} failed: {e:#}", self.command[0]);
        }
    }
}

/// A URL as logs may show it: scheme and host, never the path or query.
fn redacted(url: &str) -> String {
    match url.parse::<http::Uri>() {
        Ok(uri) => format!(
            "{}://{}/…",
            uri.scheme_str().unwrap_or("?"),
            uri.host().unwrap_or("?")
        ),
        Err(_) => "(unreadable URL)".to_owned(),
    }
}

fn post_with_retries(url: &str, body: &[u8]) -> Result<()> {
    let mut last = None;
    for attempt in 0..WEBHOOK_ATTEMPTS {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(200 * 2u64.pow(attempt - 1)));
        }
        let request = http::Request::post(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(
                http::header::USER_AGENT,
                concat!("crmsync/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(Bytes::copy_from_slice(body)))
            .context("invalid webhook URL")?;
        match send_blocking(request, HttpLimits::default()) {
            Ok((status, _, _)) if status.is_success() => return Ok(()),
            // A 4xx other than 408/429 will not change on retry.
            Ok((status, _, _)) if status.is_client_error() && status != 408 && status != 429 => {
                bail!("answered HTTP {}", status.as_u16())
            }
            Ok((status, _, _)) => last = Some(format!("answered HTTP {}", status.as_u16())),
            Err(e) => last = Some(e.to_string()),
        }
    }
    bail!(
        "{} after {WEBHOOK_ATTEMPTS} attempts",
        last.unwrap_or_default()
    )
}

fn run_command(command: &[String], body: &[u8]) -> Result<()> {
    let mut child = Command::new(&command[0])
        .args(&command[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .context("cannot start it")?;
    child.stdin.take().expect("piped stdin").write_all(body)?;
    let status = child.wait()?;
    if !status.success() {
        bail!("exited with {status}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_webhook_url_is_logged_as_its_scheme_and_host_only() {
        let url = "https://hooks.slack.com/services/T000/B000/XXXXSECRETXXXX?token=abc";
        let shown = redacted(url);
        assert_eq!(shown, "https://hooks.slack.com/…");
        assert!(!shown.contains("SECRET") && !shown.contains("abc"));
    }
}
