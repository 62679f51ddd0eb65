//! Per-entry lifetime for the moka table of the Redis store's local cache: a pin lives at most
//! `session.max_lifetime` from when it was *created*, which may be before it entered this table
//! (read from Redis after another instance made it). moka's builder-level time-to-live counts
//! from insertion, so the lifetime is computed per entry at insertion instead; idle expiry
//! stays moka's `time_to_idle`. [`remaining_lifetime`] is also what the snapshot loader uses.

use super::unix_ms;
use moka::Expiry;
use std::time::{Duration, Instant};

/// A table value that knows when its pin was made.
pub(crate) trait Created {
    /// Wall-clock creation time, Unix milliseconds.
    fn created_ms(&self) -> u64;
}

/// Expires each entry `max_lifetime` after its creation time.
pub(crate) struct LifetimeExpiry {
    pub max_lifetime: Duration,
}

impl<V: Created> Expiry<String, V> for LifetimeExpiry {
    fn expire_after_create(&self, _key: &String, value: &V, _at: Instant) -> Option<Duration> {
        Some(remaining_lifetime(value.created_ms(), self.max_lifetime, unix_ms()))
    }

    fn expire_after_update(&self, _key: &String, value: &V, _at: Instant, _left: Option<Duration>) -> Option<Duration> {
        Some(remaining_lifetime(value.created_ms(), self.max_lifetime, unix_ms()))
    }
}

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
