//! The pure half of the Redis store: how a pin is written in Redis, what the local cache
//! keeps about it, and the decisions taken about both (when to refresh, what to do with what
//! Redis said). No I/O here, so all of it is unit-tested.

use crate::balance::Backend;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// A local pin is re-synced with Redis when this fraction of the idle timeout has passed
/// since the last sync: Redis's idle expiry stays refreshed without a write per request, and
/// a local entry outlives Redis's by at most this window.
pub(super) const REFRESH_FRACTION: u32 = 4;

/// How soon a pin Redis does not agree with yet (made during an outage, or cached before a
/// resubscription) is tried again; the same pace as the outage probe.
pub(super) const RETRY_MS: u64 = 500;

/// What Redis holds for one session: `"{created_ms}:{backend}"`. Backend names cannot
/// contain ':' (config validation), and the creation time leads so that the value splits at
/// the first ':'. The creation time (Unix ms) is what bounds the pin's lifetime on every
/// instance, whoever refreshed it last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PinValue {
    pub created_ms: u64,
    pub backend: String,
}

impl PinValue {
    pub fn encode(&self) -> String {
        format!("{}:{}", self.created_ms, self.backend)
    }

    /// `None` for anything we did not write.
    pub fn decode(raw: &str) -> Option<PinValue> {
        let (created, backend) = raw.split_once(':')?;
        let created_ms = created.parse().ok()?;
        (!backend.is_empty()).then(|| PinValue { created_ms, backend: backend.to_owned() })
    }
}

/// The expiry to give a pin in Redis when it is written or refreshed at `now_ms`: the idle
/// timeout, cut to what is left of the lifetime; `None` once the lifetime is over.
pub(super) fn ttl(created_ms: u64, now_ms: u64, idle: Duration, max_lifetime: Duration) -> Option<Duration> {
    let left = super::super::expiry::remaining_lifetime(created_ms, max_lifetime, now_ms);
    (!left.is_zero()).then(|| idle.min(left))
}

/// What Redis does not know yet about a local pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Pending {
    /// Redis has (or had, when last synced) this very pin.
    Nothing = 0,
    /// A new session pinned while Redis was unreachable: write back only if Redis has no pin
    /// (another instance may have pinned it meanwhile; its pin wins).
    Create = 1,
    /// A reassignment made while Redis was unreachable: newer than what Redis holds, so it
    /// overwrites it (and is published).
    Replace = 2,
}

/// One entry of the local cache.
#[derive(Debug)]
pub(super) struct LocalPin {
    pub backend: Arc<Backend>,
    pub created_ms: u64,
    /// When this instance last synced (or tried to sync) the pin with Redis, Unix ms.
    synced_ms: AtomicU64,
    /// The subscription epoch of the last successful sync: an entry from an older epoch may
    /// have missed an event, so it is verified on its next use.
    epoch: AtomicU64,
    pending: AtomicU8,
}

impl LocalPin {
    pub fn new(backend: Arc<Backend>, created_ms: u64, pending: Pending, now_ms: u64, epoch: u64) -> Arc<LocalPin> {
        Arc::new(LocalPin {
            backend,
            created_ms,
            synced_ms: AtomicU64::new(now_ms),
            epoch: AtomicU64::new(epoch),
            pending: AtomicU8::new(pending as u8),
        })
    }

    pub fn value(&self) -> PinValue {
        PinValue { created_ms: self.created_ms, backend: self.backend.name.to_string() }
    }

    pub fn pending(&self) -> Pending {
        match self.pending.load(Relaxed) {
            1 => Pending::Create,
            2 => Pending::Replace,
            _ => Pending::Nothing,
        }
    }

    /// Whether this use of the pin should sync it with Redis; if so, the caller has claimed
    /// the sync (concurrent uses of the same pin do not sync it twice).
    pub fn claim_sync(&self, now_ms: u64, window_ms: u64, epoch: u64) -> bool {
        let last = self.synced_ms.load(Relaxed);
        let unsure = self.pending() != Pending::Nothing || self.epoch.load(Relaxed) != epoch;
        sync_due(now_ms.saturating_sub(last), window_ms, unsure)
            && self.synced_ms.compare_exchange(last, now_ms, Relaxed, Relaxed).is_ok()
    }

    /// Redis now agrees with this pin (as of subscription `epoch`).
    pub fn synced(&self, epoch: u64) {
        self.pending.store(Pending::Nothing as u8, Relaxed);
        self.epoch.store(epoch, Relaxed);
    }
}

impl super::super::expiry::Created for Arc<LocalPin> {
    fn created_ms(&self) -> u64 {
        self.created_ms
    }
}

/// Whether a pin last synced `since_ms` ago should sync now: once per refresh window, or
/// sooner (every [`RETRY_MS`]) while Redis may not agree with it (`unsure`).
pub(super) fn sync_due(since_ms: u64, window_ms: u64, unsure: bool) -> bool {
    since_ms >= window_ms || (unsure && since_ms >= RETRY_MS)
}

/// How Redis's pin for a session compares with ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Same backend: nothing to do.
    Agree,
    /// Redis has no pin (expired there, deleted, or Redis lost its data): write ours back.
    Missing,
    /// Another instance moved the session: drop ours, the next request reads theirs.
    Differs,
}

pub(super) fn compare(ours: &str, theirs: Option<&PinValue>) -> Verdict {
    match theirs {
        None => Verdict::Missing,
        Some(v) if v.backend == ours => Verdict::Agree,
        Some(_) => Verdict::Differs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn values_round_trip_and_foreign_values_are_rejected() {
        let v = PinValue { created_ms: 1_732_000_000_123, backend: "app-1.eu_west".into() };
        assert_eq!(v.encode(), "1732000000123:app-1.eu_west");
        assert_eq!(PinValue::decode(&v.encode()), Some(v));
        for bad in ["", "app1", ":app1", "12:", "x12:app1", "-1:app1"] {
            assert_eq!(PinValue::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn ttl_is_the_idle_timeout_cut_to_the_remaining_lifetime() {
        let (idle, life) = (30 * MIN, 24 * 60 * MIN);
        assert_eq!(ttl(0, 0, idle, life), Some(idle));
        let near_end = life.as_millis() as u64 - 60_000;
        assert_eq!(ttl(0, near_end, idle, life), Some(MIN));
        assert_eq!(ttl(0, life.as_millis() as u64, idle, life), None);
    }

    #[test]
    fn a_synced_pin_refreshes_once_per_window() {
        let window = 1_000;
        assert!(!sync_due(0, window, false));
        assert!(!sync_due(999, window, false));
        assert!(sync_due(1_000, window, false));
    }

    #[test]
    fn an_unsure_pin_is_retried_at_the_probe_pace() {
        let window = 450_000;
        assert!(!sync_due(RETRY_MS - 1, window, true));
        assert!(sync_due(RETRY_MS, window, true));
        assert!(!sync_due(RETRY_MS, window, false));
    }

    fn backend(name: &str) -> Arc<Backend> {
        let text = format!("[[backend]]\nname = \"{name}\"\naddress = \"127.0.0.1:1\"\n");
        let cfg = crate::config::parse(&text, "t").unwrap();
        Arc::new(Backend::new(&cfg.backends[0], &cfg.health))
    }

    #[test]
    fn only_one_concurrent_use_claims_the_sync() {
        let pin = LocalPin::new(backend("a"), 0, Pending::Nothing, 0, 1);
        assert!(!pin.claim_sync(999, 1_000, 1), "not due yet");
        assert!(pin.claim_sync(1_000, 1_000, 1));
        assert!(!pin.claim_sync(1_000, 1_000, 1), "already claimed");
        assert!(pin.claim_sync(2_000, 1_000, 1));
    }

    #[test]
    fn a_new_epoch_or_a_pending_write_makes_the_pin_unsure() {
        let pin = LocalPin::new(backend("a"), 0, Pending::Create, 0, 1);
        assert!(pin.claim_sync(RETRY_MS, 1_000_000, 1), "pending write-back");
        pin.synced(1);
        assert_eq!(pin.pending(), Pending::Nothing);
        assert!(!pin.claim_sync(2 * RETRY_MS, 1_000_000, 1));
        assert!(pin.claim_sync(2 * RETRY_MS, 1_000_000, 2), "resubscribed since: verify");
    }

    #[test]
    fn verdicts() {
        let v = |b: &str| PinValue { created_ms: 1, backend: b.into() };
        assert_eq!(compare("a", Some(&v("a"))), Verdict::Agree);
        assert_eq!(compare("a", Some(&v("b"))), Verdict::Differs);
        assert_eq!(compare("a", None), Verdict::Missing);
    }
}
