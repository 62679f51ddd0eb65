//! Whether Redis is usable right now, as the request path sees it.
//!
//! While Redis answers, every call goes to it. After a failure (an error or a call exceeding
//! `cluster.redis_timeout`) the link is down: requests stop waiting on Redis and use the local
//! table, and only one caller per [`PROBE_INTERVAL_MS`] tries Redis again; its success brings
//! the link back. The outage is logged once when it starts and once when it ends; every
//! failed call counts in `stickylb_store_errors_total`.
//!
//! The link also counts the [`Epochs`] that cached pins are judged by: a new one at every
//! recovery (and at every resubscription of the event listener, which tells it). A recovery's
//! epoch starts before the link shows as up, so whoever sees it up sees that epoch too.

use super::pin::Epochs;
use crate::clock::now_ms;
use crate::metrics::Metrics;
use std::fmt::Display;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::sync::Arc;

/// While the link is down, at most one call per this many milliseconds tries Redis.
pub(super) const PROBE_INTERVAL_MS: u64 = 500;

pub(super) struct Link {
    down: AtomicBool,
    /// Process-clock time after which the next probe may go (while down).
    next_probe_ms: AtomicU64,
    /// [`Epochs`] packed in one word, so that one load reads a consistent pair: the current
    /// epoch in the low 32 bits, the latest recovery's in the high 32 (2^32 epochs do not
    /// happen: each needs a lost connection).
    epochs: AtomicU64,
    metrics: Arc<Metrics>,
}

impl Link {
    /// A link assumed up until a call says otherwise.
    pub fn new(metrics: Arc<Metrics>) -> Link {
        Link { down: AtomicBool::new(false), next_probe_ms: AtomicU64::new(0), epochs: AtomicU64::new(0), metrics }
    }

    /// Up as far as this instance knows (no probe claimed): the last call to Redis succeeded.
    pub fn is_up(&self) -> bool {
        // Acquire: pairs with the recovery's Release, so a caller that sees the link up reads
        // the recovery's epoch afterwards.
        !self.down.load(Acquire)
    }

    pub fn epochs(&self) -> Epochs {
        let packed = self.epochs.load(Acquire);
        Epochs { now: packed & u64::from(u32::MAX), recovered: packed >> 32 }
    }

    /// The event listener (re)subscribed: events sent meanwhile are lost.
    pub fn resubscribed(&self) {
        self.new_epoch(false);
    }

    fn new_epoch(&self, recovery: bool) {
        let _ = self.epochs.fetch_update(AcqRel, Acquire, |packed| {
            let now = u64::from((packed as u32).wrapping_add(1));
            let recovered = if recovery { now } else { packed >> 32 };
            Some(recovered << 32 | now)
        });
    }

    /// May this call go to Redis? Always while up (one atomic load); while down, only the
    /// one caller that claims the next probe slot.
    pub fn usable(&self) -> bool {
        if !self.down.load(Relaxed) {
            return true;
        }
        let now = now_ms();
        let next = self.next_probe_ms.load(Relaxed);
        now >= next && self.next_probe_ms.compare_exchange(next, now + PROBE_INTERVAL_MS, Relaxed, Relaxed).is_ok()
    }

    /// A call to Redis succeeded.
    pub fn succeeded(&self) {
        if !self.down.load(Relaxed) {
            return;
        }
        // Before the link shows as up (two callers may both start one: harmless).
        self.new_epoch(true);
        if self.down.swap(false, Release) {
            tracing::info!(
                "Redis is reachable again: pins are shared again; cached pins are reconciled with Redis on their next use"
            );
        }
    }

    /// A call to Redis failed or timed out.
    pub fn failed(&self, why: &dyn Display) {
        self.metrics.store_errors.fetch_add(1, Relaxed);
        self.next_probe_ms.store(now_ms() + PROBE_INTERVAL_MS, Relaxed);
        if !self.down.swap(true, Relaxed) {
            tracing::error!(
                error = %why,
                "Redis is unreachable: serving sessions from this instance's local table, retrying every {PROBE_INTERVAL_MS}ms"
            );
        } else {
            tracing::debug!(error = %why, "Redis still unreachable");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_link_lets_one_probe_through_per_interval_and_counts_errors() {
        let metrics = Arc::new(Metrics::default());
        let link = Link::new(metrics.clone());
        assert!(link.usable() && link.usable(), "up: every call goes");
        link.failed(&"refused");
        link.failed(&"refused");
        assert_eq!(metrics.store_errors.load(Relaxed), 2);
        assert!(link.down.load(Relaxed));
        assert!(!link.usable(), "no probe before the interval");
        link.next_probe_ms.store(0, Relaxed);
        assert!(link.usable(), "the first caller after the interval probes");
        assert!(!link.usable(), "and only that one");
        link.succeeded();
        assert!(!link.down.load(Relaxed) && link.usable());
    }

    #[test]
    fn a_recovery_starts_an_epoch_before_the_link_shows_up_and_resubscriptions_start_others() {
        let link = Link::new(Arc::new(Metrics::default()));
        assert_eq!(link.epochs(), Epochs { now: 0, recovered: 0 });
        link.resubscribed();
        link.succeeded();
        assert_eq!(link.epochs(), Epochs { now: 1, recovered: 0 }, "up all along: no recovery");
        link.failed(&"refused");
        assert!(!link.is_up());
        link.succeeded();
        assert!(link.is_up());
        assert_eq!(link.epochs(), Epochs { now: 2, recovered: 2 });
        link.resubscribed();
        assert_eq!(link.epochs(), Epochs { now: 3, recovered: 2 });
    }
}
