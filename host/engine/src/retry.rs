//! The retry engine of a pass (E4, E8, E10): one API call through the
//! component tried until it succeeds or fails for good, and how a pass stops.

use crate::auth::{AuthError, Credentials};
use crate::bindings::crmsync::sync::types::{ErrorCategory, SyncError};
use crate::config::SourceSystem;
use crate::http::HttpStats;
use crate::lease::LeaseWatch;
use crate::run_errors::sync_level;
use anyhow::Result;
use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How failed page fetches are retried (E4, E8, E10).
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts at one page for transient failures, the first included.
    pub max_attempts: u32,
    /// First backoff delay; doubles each attempt, with jitter (see [`RetryPolicy::backoff`]).
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// Rate-limit waits for one page before giving up (they are not failures).
    pub max_rate_limit_waits: u32,
    /// The longest advertised rate-limit delay honoured as is.
    pub max_rate_limit_delay: Duration,
    /// Retrying one request stops once this much time has passed since its
    /// first attempt. Well under the lease's life ([`crate::lease::LEASE_TTL`]),
    /// though the heartbeat keeps the lease through retries anyway.
    pub max_total: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_rate_limit_waits: 30,
            max_rate_limit_delay: Duration::from_secs(60),
            max_total: Duration::from_secs(120),
        }
    }
}

/// Why a pass stopped early.
pub(crate) enum Stop {
    /// Asked to stop (a daemon shutting down); the run stays resumable.
    Interrupted,
    /// A classified, sync-level error: recorded for the user.
    Classified(SyncError),
    /// The host or the component itself failed.
    Internal(anyhow::Error),
}

impl From<anyhow::Error> for Stop {
    fn from(error: anyhow::Error) -> Self {
        Stop::Internal(error)
    }
}

/// The pass's lease, still its own: losing it (the pass was stuck past the
/// lease's life and another process took over) stops the pass before its
/// next request; its commits are fenced as well.
pub(crate) fn check_lease(lease: &LeaseWatch) -> Result<(), Stop> {
    lease
        .check()
        .map_err(|lost| Stop::Internal(anyhow::Error::new(lost)))
}

/// Something that calls an API through the component and can be retried:
/// it holds the credentials of one CRM.
pub(crate) trait Retrying {
    fn credentials(&self) -> &Credentials;
    /// The CRM called, for the reconnect advice of E8.
    fn system(&self) -> &SourceSystem;
    /// Runs before every attempt (a pass checks it still holds its lease).
    fn before_attempt(&mut self) -> Result<(), Stop> {
        Ok(())
    }
    /// The counters the pass reports; a retry is counted there.
    fn stats(&self) -> &HttpStats;
    /// The oldest token generation a `401` answer of this caller's instance
    /// was sent with since the last call (`HostState::take_rejected_generation`).
    fn rejected_generation(&mut self) -> Option<u64>;
}

/// Which failures [`with_retries`] tries again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Reads and updates: sending again changes nothing more.
    All,
    /// Creates: only failures that say the request was not processed (rate
    /// limits, expired sessions); after a 5xx or a timeout the records may
    /// exist, and the next run finds them by email instead of creating twice.
    NotProcessed,
}

/// Calls `attempt` until it succeeds or fails for good: expired OAuth
/// sessions are refreshed once (E8), rate limits waited out (E4), transient
/// failures retried with backoff (E10).
pub(crate) fn with_retries<R: Retrying, T>(
    caller: &mut R,
    policy: &RetryPolicy,
    retry: Retry,
    mut attempt: impl FnMut(&mut R) -> Result<Result<T, SyncError>>,
) -> Result<T, Stop> {
    let mut attempts = 0;
    let mut delays = policy.backoff();
    let mut rate_limit_waits = 0;
    let mut refreshed = false;
    let started = Instant::now();
    loop {
        caller.before_attempt()?;
        let system = caller.system().clone();
        caller
            .credentials()
            .ensure_fresh()
            .map_err(|e| auth_stop(&system, e))?;
        let generation = caller.credentials().generation();
        let error = match attempt(caller)? {
            Ok(answer) => return Ok(answer),
            Err(error) => error,
        };
        if started.elapsed() >= policy.max_total {
            tracing::warn!("giving up after {:?} of retries", started.elapsed());
            return Err(Stop::Classified(error));
        }
        match error.category {
            ErrorCategory::AuthExpired if caller.credentials().can_refresh() && !refreshed => {
                // Another reader of the run may have refreshed since the
                // request was sent: then its token is the one to retry with,
                // and this attempt's one refresh is kept for a token that
                // expires again. The request may have left before this
                // attempt began (the component's request ahead, sent during
                // the call before), on a token older than `generation`.
                let sent_with = caller
                    .rejected_generation()
                    .map_or(generation, |rejected| rejected.min(generation));
                refreshed = caller
                    .credentials()
                    .refresh_unless_newer(sent_with)
                    .map_err(|e| auth_stop(&system, e))?;
            }
            // A static token that expired stays expired: waiting cannot help.
            ErrorCategory::AuthExpired => return Err(Stop::Classified(error)),
            ErrorCategory::RateLimited
                if error.retryable && rate_limit_waits < policy.max_rate_limit_waits =>
            {
                rate_limit_waits += 1;
                let delay = error
                    .retry_after_ms
                    .map(Duration::from_millis)
                    .unwrap_or(Duration::from_secs(1))
                    .min(policy.max_rate_limit_delay);
                tracing::info!(?delay, "rate limited; waiting");
                caller.stats().retries.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(delay);
            }
            _ if retry == Retry::All
                && error.retryable
                && let Some(delay) = delays.next() =>
            {
                attempts += 1;
                tracing::warn!(attempt = attempts, ?delay, "{}; retrying", error.message);
                caller.stats().retries.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(delay);
            }
            _ => return Err(Stop::Classified(error)),
        }
    }
}

impl RetryPolicy {
    /// The waits between attempts at one request after transient failures
    /// (E10), one fewer than `max_attempts`: each drawn from `[d/2, d)`,
    /// where `d` doubles from `base_delay` up to `max_delay`, so many
    /// runners do not retry in lockstep. backon adds a jitter of up to its
    /// current delay, hence its delays are half of ours.
    pub fn backoff(&self) -> ExponentialBackoff {
        ExponentialBuilder::new()
            .with_min_delay(self.base_delay / 2)
            .with_max_delay(self.max_delay / 2)
            .with_factor(2.0)
            .with_jitter()
            .with_max_times(self.max_attempts.saturating_sub(1) as usize)
            .build()
    }
}

pub(crate) fn auth_stop(system: &SourceSystem, error: AuthError) -> Stop {
    let resolution = match system {
        SourceSystem::Hubspot => {
            "Reconnect HubSpot: create a new refresh token (or private-app token), put it in the \
             environment variable the config names, and run the sync again."
        }
        SourceSystem::Salesforce { .. } => {
            "Reconnect Salesforce: create a new refresh token (or access token) for the \
             integration user, put it in the environment variable the config names, and run the \
             sync again."
        }
    };
    Stop::Classified(sync_level(
        ErrorCategory::AuthExpired,
        error.to_string(),
        resolution,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_capped() {
        let policy = RetryPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(700),
            ..RetryPolicy::default()
        };
        for _ in 0..50 {
            let delays: Vec<Duration> = policy.backoff().collect();
            // Six attempts: five waits.
            assert_eq!(delays.len(), 5, "{delays:?}");
            let first = delays[0];
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let late = delays[4];
            assert!(late >= Duration::from_millis(350) && late <= Duration::from_millis(700));
        }
    }
}
