//! When a sync runs by itself (R1): a fixed interval (`"15m"`, `"24h"`, `"2s"`)
//! or a cron expression (`"0 6 * * MON-FRI"`, UTC).

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use std::str::FromStr;
use std::time::Duration;

/// Front's and HubSpot's syncs run every 24 hours unless told otherwise.
pub const DEFAULT_SCHEDULE: &str = "24h";

/// A sync's schedule.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// The next run starts this long after the previous one started.
    Every(Duration),
    /// The next run starts at the next time the expression matches (UTC).
    Cron(Box<croner::Cron>),
}

/// Parses a duration as `humantime` reads it: a number and a unit (`"90s"`,
/// `"15m"`, `"24h"`, `"1d"`), or several (`"1h 30m"`).
pub fn parse_duration(text: &str) -> Result<Duration> {
    let text = text.trim();
    humantime::parse_duration(text)
        .with_context(|| format!("{text:?} is not a duration such as \"15m\" or \"24h\""))
}

impl Schedule {
    /// Parses an interval (see [`parse_duration`]) or a cron expression
    /// (five or six fields).
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        if text.contains(char::is_whitespace) {
            let cron = croner::Cron::from_str(text)
                .with_context(|| format!("{text:?} is not a cron expression"))?;
            return Ok(Schedule::Cron(Box::new(cron)));
        }
        let interval = parse_duration(text).with_context(|| {
            format!("{text:?} is neither an interval such as \"15m\" nor a cron expression")
        })?;
        if interval.is_zero() {
            bail!("{text:?}: the interval must be longer than zero");
        }
        Ok(Schedule::Every(interval))
    }

    /// When the next run is due: `previous_start` is when the last run
    /// started (`None` if the sync never ran: due at once).
    pub fn next_run(
        &self,
        previous_start: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> DateTime<Utc> {
        let Some(previous) = previous_start else {
            return now;
        };
        match self {
            Schedule::Every(interval) => {
                previous + chrono::Duration::from_std(*interval).unwrap_or(chrono::Duration::MAX)
            }
            Schedule::Cron(cron) => cron
                .find_next_occurrence(&previous, false)
                // An expression with no future match (30 February) never runs by itself.
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, h, m, s).unwrap()
    }

    #[test]
    fn intervals_parse_with_units() {
        for (text, secs) in [
            ("2s", 2),
            ("15m", 900),
            ("24h", 86_400),
            ("1d", 86_400),
            ("1w", 604_800),
            ("1h30m", 5_400),
        ] {
            match Schedule::parse(text).unwrap() {
                Schedule::Every(d) => assert_eq!(d, Duration::from_secs(secs), "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        // A number too large for any duration is an error, not an overflow.
        for bad in [
            "",
            "15",
            "0m",
            "15 minutes",
            "m",
            "1x",
            "99999999999999999999999d",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_interval_counts_from_the_previous_start_and_a_first_run_is_due_now() {
        let every = Schedule::parse("15m").unwrap();
        assert_eq!(every.next_run(None, at(9, 0, 0)), at(9, 0, 0));
        assert_eq!(every.next_run(Some(at(9, 0, 0)), at(9, 1, 0)), at(9, 15, 0));
    }

    #[test]
    fn cron_runs_at_the_next_matching_minute() {
        let weekday_mornings = Schedule::parse("0 6 * * MON-FRI").unwrap();
        // 2026-11-23 is a Monday.
        assert_eq!(
            weekday_mornings.next_run(Some(at(6, 0, 0)), at(7, 0, 0)),
            Utc.with_ymd_and_hms(2026, 11, 24, 6, 0, 0).unwrap()
        );
        let quarter_hours = Schedule::parse("*/15 * * * *").unwrap();
        assert_eq!(
            quarter_hours.next_run(Some(at(9, 7, 30)), at(9, 8, 0)),
            at(9, 15, 0)
        );
    }
}
