//! Whether Redis is usable right now, as the request path sees it.
//!
//! While Redis answers, every call goes to it. After a failure (an error or a call exceeding
//! `cluster.redis_timeout`) the link is down: requests stop waiting on Redis and use the local
//! table, and only one caller per [`PROBE_INTERVAL_MS`] tries Redis again; its success brings
//! the link back. The outage is logged once when it starts and once when it ends; every
//! failed call counts in `stickylb_store_errors_total`.

use crate::clock::now_ms;
use crate::metrics::Metrics;
use std::fmt::Display;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// While the link is down, at most one call per this many milliseconds tries Redis.
pub(super) const PROBE_INTERVAL_MS: u64 = 500;

pub(super) struct Link {
    down: AtomicBool,
    /// Process-clock time after which the next probe may go (while down).
    next_probe_ms: AtomicU64,
    metrics: Arc<Metrics>,
}

impl Link {
    /// A link assumed up until a call says otherwise.
    pub fn new(metrics: Arc<Metrics>) -> Link {
        Link { down: AtomicBool::new(false), next_probe_ms: AtomicU64::new(0), metrics }
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
        if self.down.load(Relaxed) && self.down.swap(false, Relaxed) {
            tracing::info!(
                "Redis is reachable again: pins are shared again; pins made meanwhile are written back as they are used"
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
}
