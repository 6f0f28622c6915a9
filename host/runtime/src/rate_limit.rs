//! Proactive rate limiting of the source API (R5): requests are spaced so the
//! API's rolling-window limit is never reached, instead of waiting for 429s.
//!
//! HubSpot limits private apps per rolling window (100 or 190 requests per
//! 10 s by tier) and reports the budget on every answer in
//! `X-HubSpot-RateLimit-Max`, `-Remaining` and `-Interval-Milliseconds`. The
//! limiter keeps a log of its own send times over the window, adopts the
//! advertised window, and treats a lower `Remaining` than its own count
//! implies as requests other clients of the same account made.

use crate::api_bounds;
use anyhow::{Context, Result, bail};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `requests` per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub requests: u32,
    pub window: Duration,
}

/// HubSpot's lowest private-app tier: 100 requests per rolling 10 s.
pub const HUBSPOT_DEFAULT: RateLimit = RateLimit {
    requests: 100,
    window: Duration::from_secs(10),
};

/// HubSpot's search endpoints have their own budget: five requests per
/// second per account, on top of the general one.
pub const HUBSPOT_SEARCH_DEFAULT: RateLimit = RateLimit {
    requests: 5,
    window: Duration::from_secs(1),
};

/// The limiters of one source account: its general budget, and the search
/// API's own (search requests book on both).
#[derive(Debug, Clone, Default)]
pub struct AccountLimiters {
    pub api: Option<Arc<Limiter>>,
    pub search: Option<Arc<Limiter>>,
}

impl AccountLimiters {
    /// Fresh limiters for the given budgets (`None`: unlimited).
    pub fn new(api: Option<RateLimit>, search: Option<RateLimit>) -> Self {
        AccountLimiters {
            api: api.map(|limit| Arc::new(Limiter::new(limit))),
            search: search.map(|limit| Arc::new(Limiter::new(limit))),
        }
    }
}

impl RateLimit {
    /// Parses `"190/10s"`, `"5/1s"`, `"100/500ms"`, `"600/1m"`; `"none"` is no limit.
    pub fn parse(text: &str) -> Result<Option<Self>> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("none") {
            return Ok(None);
        }
        let Some((count, window)) = text.split_once('/') else {
            bail!(
                "expected \"<requests>/<window>\" such as \"190/10s\", or \"none\"; got {text:?}"
            );
        };
        let requests: u32 = count
            .trim()
            .parse()
            .with_context(|| format!("{count:?} is not a number of requests"))?;
        let window = window.trim();
        let (number, unit) = window.split_at(
            window
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(window.len()),
        );
        let number: u64 = if number.is_empty() {
            1
        } else {
            number
                .parse()
                .with_context(|| format!("{window:?} is not a window"))?
        };
        let window = match unit {
            "ms" => Duration::from_millis(number),
            "s" => Duration::from_secs(number),
            "m" => Duration::from_secs(number * 60),
            _ => bail!("window {window:?} needs a unit: ms, s or m"),
        };
        if requests == 0 || window.is_zero() {
            bail!("{text:?} allows no request at all");
        }
        Ok(Some(RateLimit { requests, window }))
    }
}

/// 1% of the window (at least 5 ms): network delay varies, and a request
/// that reaches the API just inside the previous window would be a 429.
fn margin(window: Duration) -> Duration {
    (window / 100).max(Duration::from_millis(5))
}

/// A sliding-window limiter shared by every request to one source account.
#[derive(Debug)]
pub struct Limiter {
    state: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    limit: RateLimit,
    /// Send times (ours, or other clients' inferred from `Remaining`) within the window.
    sent: VecDeque<Instant>,
}

impl Limiter {
    pub fn new(limit: RateLimit) -> Self {
        Limiter {
            state: Mutex::new(Window {
                limit,
                sent: VecDeque::new(),
            }),
        }
    }

    /// Reserves a slot for a request: returns how long to wait before sending
    /// it (zero when it may go now). The slot is booked at `now + wait`.
    pub fn reserve(&self, now: Instant) -> Duration {
        let mut w = self.state.lock().expect("limiter lock");
        let window = w.limit.window;
        while w.sent.front().is_some_and(|&t| t + window <= now) {
            w.sent.pop_front();
        }
        let wait = if w.sent.len() < w.limit.requests as usize {
            Duration::ZERO
        } else {
            // The slot frees when the request `requests` places back leaves the
            // window, plus a margin for the API seeing requests later than we send them.
            let blocking = w.sent[w.sent.len() - w.limit.requests as usize];
            (blocking + window + margin(window)).saturating_duration_since(now)
        };
        let at = now + wait;
        // Keep the log ordered: a reservation never precedes an earlier one.
        let at = w.sent.back().map_or(at, |&last| at.max(last));
        w.sent.push_back(at);
        at.saturating_duration_since(now)
    }

    /// Moves the request booked at `booked` to `answered`, when its answer
    /// came: the API counted it somewhere in between, so spacing later
    /// requests from the answer is what guarantees the API never sees more
    /// than the limit, whatever the network and scheduling delays.
    pub fn answered(&self, booked: Instant, answered: Instant) {
        let mut w = self.state.lock().expect("limiter lock");
        if let Some(entry) = w.sent.iter_mut().find(|t| **t == booked) {
            *entry = answered.max(booked);
        }
        w.sent.make_contiguous().sort();
    }

    /// Adjusts to what the API reported on an answer received at `now`: its
    /// budget, what is left of it, and its window in milliseconds. Each is
    /// clamped first ([`api_bounds`]): an answer must not size the log or the waits.
    pub fn observe(
        &self,
        now: Instant,
        max: Option<u64>,
        remaining: Option<u64>,
        interval_ms: Option<u64>,
    ) {
        let mut w = self.state.lock().expect("limiter lock");
        if let (Some(max), Some(interval)) = (max, interval_ms) {
            w.limit = RateLimit {
                requests: api_bounds::rate_limit_requests(max),
                window: api_bounds::rate_limit_window(interval),
            };
        }
        let remaining = remaining.map(|r| api_bounds::rate_limit_remaining(r, w.limit.requests));
        if let Some(remaining) = remaining {
            let window = w.limit.window;
            let in_window = w
                .sent
                .iter()
                .filter(|&&t| t + window > now && t <= now)
                .count();
            let allowed = w.limit.requests as usize;
            let ours_left = allowed.saturating_sub(in_window);
            // Others used part of the budget: book their requests as sent now.
            for _ in remaining as usize..ours_left {
                w.sent.push_back(now);
            }
            w.sent.make_contiguous().sort();
        }
    }

    /// The limit in force.
    pub fn limit(&self) -> RateLimit {
        self.state.lock().expect("limiter lock").limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_with_units_and_none() {
        assert_eq!(
            RateLimit::parse("190/10s").unwrap(),
            Some(RateLimit {
                requests: 190,
                window: Duration::from_secs(10)
            })
        );
        assert_eq!(
            RateLimit::parse("5/s").unwrap(),
            Some(RateLimit {
                requests: 5,
                window: Duration::from_secs(1)
            })
        );
        assert_eq!(
            RateLimit::parse(" 100 / 500ms ").unwrap(),
            Some(RateLimit {
                requests: 100,
                window: Duration::from_millis(500)
            })
        );
        assert_eq!(RateLimit::parse("none").unwrap(), None);
        for bad in ["100", "0/10s", "10/0s", "ten/10s", "10/10h", ""] {
            assert!(RateLimit::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn requests_within_the_budget_go_at_once_and_the_next_waits_for_the_window() {
        let limiter = Limiter::new(RateLimit {
            requests: 3,
            window: Duration::from_secs(10),
        });
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(limiter.reserve(t0 + Duration::from_secs(i)), Duration::ZERO);
        }
        // The 4th may go when the 1st (at t0) leaves the window: t0 + 10 s (+ 1% margin).
        assert_eq!(
            limiter.reserve(t0 + Duration::from_secs(4)),
            Duration::from_millis(6_100)
        );
        // The 5th when the 2nd leaves: t0 + 11 s.
        assert_eq!(
            limiter.reserve(t0 + Duration::from_secs(4)),
            Duration::from_millis(7_100)
        );
    }

    #[test]
    fn a_long_run_never_exceeds_the_limit_in_any_window() {
        let limit = RateLimit {
            requests: 10,
            window: Duration::from_millis(1000),
        };
        let limiter = Limiter::new(limit);
        let t0 = Instant::now();
        let mut now = t0;
        let mut sent = Vec::new();
        for _ in 0..95 {
            let wait = limiter.reserve(now);
            now += wait;
            sent.push(now);
            now += Duration::from_millis(3); // the request itself takes a little time
        }
        for (i, &t) in sent.iter().enumerate() {
            let in_window = sent[i..]
                .iter()
                .take_while(|&&u| u < t + limit.window)
                .count();
            assert!(in_window <= 10, "{in_window} requests within one window");
        }
        // And it is not slower than it must be: 95 requests at 10/s take about 9 s.
        let elapsed = *sent.last().unwrap() - t0;
        assert!(elapsed < Duration::from_millis(9_400), "{elapsed:?}");
    }

    #[test]
    fn a_slow_answer_pushes_the_next_window_back() {
        let limiter = Limiter::new(RateLimit {
            requests: 1,
            window: Duration::from_secs(1),
        });
        let t0 = Instant::now();
        assert_eq!(limiter.reserve(t0), Duration::ZERO);
        // The answer took 300 ms: the API may have counted the request as late as that.
        limiter.answered(t0, t0 + Duration::from_millis(300));
        assert_eq!(
            limiter.reserve(t0 + Duration::from_millis(400)),
            Duration::from_millis(910)
        );
    }

    #[test]
    fn headers_adopt_the_advertised_window_and_others_usage() {
        let limiter = Limiter::new(HUBSPOT_DEFAULT);
        let t0 = Instant::now();
        limiter.observe(t0, Some(190), None, Some(10_000));
        assert_eq!(
            limiter.limit(),
            RateLimit {
                requests: 190,
                window: Duration::from_secs(10)
            }
        );
        // We sent one; the API says 2 remain: the others took 187.
        assert_eq!(limiter.reserve(t0), Duration::ZERO);
        limiter.observe(t0, None, Some(2), None);
        assert_eq!(limiter.reserve(t0), Duration::ZERO);
        assert_eq!(limiter.reserve(t0), Duration::ZERO);
        assert_eq!(limiter.reserve(t0), Duration::from_millis(10_100));
    }

    #[test]
    fn an_absurd_advertised_budget_is_clamped_before_it_sizes_the_log() {
        let limiter = Limiter::new(HUBSPOT_DEFAULT);
        let t0 = Instant::now();
        limiter.reserve(t0);
        // Four billion requests per window, none left, an hour-long window:
        // unclamped, the log would take one slot per advertised request (64 GB).
        limiter.observe(t0, Some(4_000_000_000), Some(0), Some(u64::MAX));
        let limit = limiter.limit();
        assert_eq!(limit.requests, 10_000);
        assert_eq!(limit.window, Duration::from_secs(60));
        assert!(limiter.state.lock().unwrap().sent.len() <= 10_000);
        // And the wait it imposes is at most one window.
        assert!(limiter.reserve(t0) <= limit.window + margin(limit.window));
        // Remaining above the budget books nobody.
        let limiter = Limiter::new(HUBSPOT_DEFAULT);
        limiter.observe(t0, None, Some(u64::MAX), None);
        assert!(limiter.state.lock().unwrap().sent.is_empty());
    }
}
