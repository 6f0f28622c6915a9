//! The bounds every number an API sends is clamped to before the host lets it
//! size memory or time.
//!
//! An answer is input, not configuration: `X-HubSpot-RateLimit-Max:
//! 4000000000` with `Remaining: 0` once made the limiter book one slot per
//! advertised request (the runner passed 2 GB within a second), and an
//! `expires_in` near `u64::MAX` overflows an `Instant`. The bounds are wide
//! enough for every documented value (HubSpot's tiers run 100-250 requests per
//! 10 s, search 5 per second; OAuth tokens live 30 minutes to a few hours) and
//! narrow enough that no answer can make a run hold much memory or wait long.

use std::time::Duration;

/// The most requests per window an API may advertise.
pub const MAX_RATE_LIMIT_REQUESTS: u64 = 10_000;

/// The shortest and longest rate-limit window an API may advertise.
pub const RATE_LIMIT_WINDOW: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(60));

/// The longest an access token is trusted to live, whatever `expires_in` says.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// An advertised request budget per window, at least one.
pub fn rate_limit_requests(advertised: u64) -> u32 {
    advertised.clamp(1, MAX_RATE_LIMIT_REQUESTS) as u32
}

/// An advertised `Remaining`: never more than the budget in force.
pub fn rate_limit_remaining(advertised: u64, budget: u32) -> u32 {
    advertised.min(u64::from(budget)) as u32
}

/// An advertised rate-limit window.
pub fn rate_limit_window(advertised_ms: u64) -> Duration {
    Duration::from_millis(advertised_ms).clamp(RATE_LIMIT_WINDOW.0, RATE_LIMIT_WINDOW.1)
}

/// An OAuth answer's `expires_in` (seconds).
pub fn token_lifetime(expires_in: u64) -> Duration {
    Duration::from_secs(expires_in).min(MAX_TOKEN_LIFETIME)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_numbers_are_clamped_and_documented_ones_kept() {
        assert_eq!(rate_limit_requests(4_000_000_000), 10_000);
        assert_eq!(rate_limit_requests(u64::MAX), 10_000);
        assert_eq!(rate_limit_requests(0), 1);
        assert_eq!(rate_limit_requests(190), 190);
        assert_eq!(rate_limit_remaining(u64::MAX, 190), 190);
        assert_eq!(rate_limit_remaining(7, 190), 7);
        assert_eq!(rate_limit_window(u64::MAX), Duration::from_secs(60));
        assert_eq!(rate_limit_window(0), Duration::from_millis(100));
        assert_eq!(rate_limit_window(10_000), Duration::from_secs(10));
        assert_eq!(token_lifetime(u64::MAX), MAX_TOKEN_LIFETIME);
        assert_eq!(token_lifetime(1800), Duration::from_secs(1800));
    }
}
