//! A pin's lifetime, counted from when it was *created*, which may be before it entered this
//! process (another instance made it, or a snapshot saved it): what the Redis store's expiries
//! and the snapshot loader cut to.

use std::time::Duration;

/// How much of `max_lifetime` a pin created at `created_ms` has left at `now_ms` (zero once
/// it is over; the full lifetime if the clocks disagree and it seems to come from the future).
pub(crate) fn remaining_lifetime(created_ms: u64, max_lifetime: Duration, now_ms: u64) -> Duration {
    max_lifetime.saturating_sub(Duration::from_millis(now_ms.saturating_sub(created_ms)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetime_counts_from_creation() {
        let day = Duration::from_secs(86_400);
        assert_eq!(remaining_lifetime(1_000, day, 1_000), day);
        assert_eq!(remaining_lifetime(1_000, day, 61_000), day - Duration::from_secs(60));
        assert_eq!(remaining_lifetime(0, day, 86_400_000), Duration::ZERO);
        assert_eq!(remaining_lifetime(0, day, 99_999_999_999), Duration::ZERO);
        // A creation time slightly ahead of our clock (another instance's clock) is not an error.
        assert_eq!(remaining_lifetime(5_000, day, 1_000), day);
    }
}
