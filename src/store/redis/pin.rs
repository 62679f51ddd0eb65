//! The pure half of the Redis store: how a pin is written in Redis, what the local cache
//! keeps about it, and the decisions taken about both (when to refresh, when a lookup must ask
//! Redis before answering, what to do with what Redis said). No I/O here, so all of it is
//! unit-tested.

use crate::store::table::{Stamp, Value};
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
    /// Put together without `format!`: its machinery was ~900 instructions of a new
    /// session's pin.
    pub fn encode(&self) -> String {
        let mut digits = itoa::Buffer::new();
        let created = digits.format(self.created_ms);
        let mut out = String::with_capacity(created.len() + 1 + self.backend.len());
        out.push_str(created);
        out.push(':');
        out.push_str(&self.backend);
        out
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

/// Bits of the epoch a cached pin keeps (see [`Epochs`]). An epoch is compared with the
/// current one and the latest recovery's, and a pin synced more than a refresh window ago
/// syncs anyway: mistaking an old epoch for a recent one would take a multiple of 2^14 new
/// epochs, each after a lost connection and a backoff of at least 75ms, so 20 minutes of a
/// flapping Redis, and would only serve that pin once more from the cache before its check, as
/// the store does when it has no events.
const EPOCH_BITS: u32 = 14;
const EPOCH_MASK: u16 = (1 << EPOCH_BITS) - 1;

/// What a cached pin may have missed, counted in epochs. A new epoch starts at every
/// (re)subscription to the event channel (events sent meanwhile are lost) and every time the
/// link to Redis comes back up (other instances pinned and moved sessions meanwhile, and
/// write back what they did as they use it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Epochs {
    /// The current epoch.
    pub now: u64,
    /// The epoch the latest recovery of the link started.
    pub recovered: u64,
}

/// What a lookup of a cached pin does before answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Check {
    /// Answer from the cache.
    Serve,
    /// Answer from the cache and sync with Redis in the background (claimed: the pin records it).
    Sync,
    /// Ask Redis first: the pin may be stale because of an outage, and Redis is up.
    Reconcile,
}

/// One entry of the local cache, packed into 8 bytes; the table keeps its creation and
/// last-use times. It is a `Copy` value changed in place under its shard's lock, so claiming
/// a sync is one check-and-update that two concurrent uses cannot both win.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct LocalPin {
    /// The backend name's id (see `store::names`).
    backend: u16,
    /// [`Pending`] in the low 2 bits; above, the low [`EPOCH_BITS`] bits of the epoch of the
    /// last successful sync: a pin from an older epoch may have missed an event, so it is
    /// verified on its next use, before answering if it predates the latest recovery.
    state: u16,
    /// Table tick of the last sync with Redis or attempt at one (at first, of the caching).
    synced: u32,
}

impl LocalPin {
    pub fn new(backend: u16, pending: Pending, now: u32, epoch: u64) -> LocalPin {
        LocalPin { backend, state: pending as u16 | epoch_bits(epoch) << 2, synced: now }
    }

    pub fn backend(self) -> u32 {
        u32::from(self.backend)
    }

    pub fn pending(self) -> Pending {
        match self.state & 3 {
            1 => Pending::Create,
            2 => Pending::Replace,
            _ => Pending::Nothing,
        }
    }

    fn same_epoch(self, epoch: u64) -> bool {
        self.state >> 2 == epoch_bits(epoch)
    }

    /// Last synced before the link to Redis last came back up: Redis may hold another pin now.
    fn synced_before_recovery(self, epochs: Epochs) -> bool {
        let ago = |epoch: u16| epoch_bits(epochs.now).wrapping_sub(epoch) & EPOCH_MASK;
        ago(self.state >> 2) > ago(epoch_bits(epochs.recovered))
    }

    /// What this lookup (`at`) must do before answering with the pin; `link_up`: the instance
    /// knows Redis is up. Once it does, a pin that Redis may disagree with because of an
    /// outage (made or moved meanwhile, or last synced before it) is reconciled before it
    /// routes anything; otherwise a due sync is claimed as by [`claim_sync`](Self::claim_sync).
    pub fn check(&mut self, at: Stamp, window_ms: u64, epochs: Epochs, link_up: bool) -> Check {
        if link_up && (self.pending() != Pending::Nothing || self.synced_before_recovery(epochs)) {
            self.synced = at.now;
            Check::Reconcile
        } else if self.claim_sync(at, window_ms, epochs.now) {
            Check::Sync
        } else {
            Check::Serve
        }
    }

    /// Whether this use of the pin (`at`) should sync it with Redis; if so, the pin records
    /// the claim, so that the next uses do not sync it again before their time.
    pub fn claim_sync(&mut self, at: Stamp, window_ms: u64, epoch: u64) -> bool {
        let unsure = self.pending() != Pending::Nothing || !self.same_epoch(epoch);
        let due = sync_due(at.ms_since(self.synced), window_ms, unsure);
        if due {
            self.synced = at.now;
        }
        due
    }

    /// Redis now agrees with this pin (as of subscription `epoch`).
    pub fn synced(&mut self, epoch: u64) {
        self.state = Pending::Nothing as u16 | epoch_bits(epoch) << 2;
    }
}

impl Value for LocalPin {
    fn id(self) -> u32 {
        self.backend()
    }
}

fn epoch_bits(epoch: u64) -> u16 {
    epoch as u16 & EPOCH_MASK
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

/// A step in reconciling a pin that may be stale because of an outage (see [`Check::Reconcile`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// `SET NX` ours, then read what holds.
    Offer,
    /// Overwrite with ours (and publish it).
    Write,
    /// Read what Redis holds (refreshing its expiry).
    Read,
}

/// What Redis holds for a session, as a step read it back (or, after a [`Step::Write`], ours).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Held {
    Nothing,
    /// A value we did not write.
    Foreign,
    Pin(PinValue),
}

impl Held {
    pub fn from_raw(raw: Option<&str>) -> Held {
        match raw {
            None => Held::Nothing,
            Some(raw) => PinValue::decode(raw).map_or(Held::Foreign, Held::Pin),
        }
    }
}

/// Where reconciling goes after a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Next {
    /// Redis holds our pin: route by it, now in sync.
    Ours,
    /// Redis holds another pin: route by that one and cache it.
    Theirs(PinValue),
    Then(Step),
    /// Redis lost our pin between our write and our read: route by ours, still unsure.
    Unsure,
}

/// The first step for a pin with `pending` write-back: a pin made during the outage is offered
/// (a pin another instance made meanwhile wins, as with racing new sessions); a move made
/// during the outage is newer than what Redis holds, so it is written; a pin merely cached
/// from before the outage is read: Redis's pin wins.
pub(super) fn reconcile_from(pending: Pending) -> Step {
    match pending {
        Pending::Create => Step::Offer,
        Pending::Replace => Step::Write,
        Pending::Nothing => Step::Read,
    }
}

/// After `step` found `held` (ours names backend `ours`): Redis lost a pin we read -> offer
/// ours back; a value that is not ours to parse -> overwrite it.
pub(super) fn reconcile_next(step: Step, ours: &str, held: Held) -> Next {
    match held {
        Held::Pin(v) if v.backend == ours => Next::Ours,
        Held::Pin(v) => Next::Theirs(v),
        Held::Foreign => Next::Then(Step::Write),
        Held::Nothing if step == Step::Read => Next::Then(Step::Offer),
        Held::Nothing => Next::Unsure,
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
        assert_eq!(PinValue { created_ms: 0, backend: "a".into() }.encode(), "0:a");
        assert_eq!(PinValue { created_ms: u64::MAX, backend: "a".into() }.encode(), "18446744073709551615:a");
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

    /// Table time at `ms` milliseconds (ticks of 1/16 s).
    fn at(ms: u64) -> Stamp {
        Stamp { now: (ms * 16 / 1000) as u32, created: 0 }
    }

    #[test]
    fn only_one_use_claims_the_sync() {
        let mut pin = LocalPin::new(7, Pending::Nothing, 0, 1);
        assert!(!pin.claim_sync(at(999), 1_000, 1), "not due yet");
        assert!(pin.claim_sync(at(1_000), 1_000, 1));
        assert!(!pin.claim_sync(at(1_000), 1_000, 1), "already claimed");
        assert!(pin.claim_sync(at(2_000), 1_000, 1));
        assert_eq!((pin.backend(), pin.id()), (7, 7), "the backend id is what the table counts");
    }

    #[test]
    fn a_new_epoch_or_a_pending_write_makes_the_pin_unsure() {
        let mut pin = LocalPin::new(1, Pending::Create, 0, 1);
        assert_eq!(pin.pending(), Pending::Create);
        assert!(pin.claim_sync(at(RETRY_MS), 1_000_000, 1), "pending write-back");
        pin.synced(1);
        assert_eq!(pin.pending(), Pending::Nothing);
        assert!(!pin.claim_sync(at(2 * RETRY_MS), 1_000_000, 1));
        assert!(pin.claim_sync(at(2 * RETRY_MS), 1_000_000, 2), "resubscribed since: verify");
        assert_eq!(LocalPin::new(1, Pending::Replace, 0, 1).pending(), Pending::Replace);
    }

    #[test]
    fn epochs_are_compared_on_their_low_bits() {
        let mut pin = LocalPin::new(1, Pending::Nothing, 0, 5);
        assert!(pin.same_epoch(5) && !pin.same_epoch(6));
        assert!(pin.same_epoch(5 + (1 << EPOCH_BITS)), "wraps: see EPOCH_BITS");
        pin.synced(u64::MAX);
        assert!(pin.same_epoch(u64::MAX) && pin.pending() == Pending::Nothing && pin.backend() == 1);
    }

    const NO_RECOVERY: Epochs = Epochs { now: 1, recovered: 0 };

    #[test]
    fn with_redis_up_a_pin_made_or_moved_during_the_outage_is_reconciled_before_answering() {
        for pending in [Pending::Create, Pending::Replace] {
            let mut pin = LocalPin::new(1, pending, 0, 1);
            assert_eq!(pin.check(at(0), 1_000_000, NO_RECOVERY, true), Check::Reconcile, "{pending:?}");
            assert_eq!(pin.check(at(0), 1_000_000, NO_RECOVERY, true), Check::Reconcile, "until it is synced");
            pin.synced(1);
            assert_eq!(pin.check(at(0), 1_000_000, NO_RECOVERY, true), Check::Serve);
        }
    }

    #[test]
    fn with_redis_down_a_pin_made_during_the_outage_is_served_and_synced_in_the_background() {
        let mut pin = LocalPin::new(1, Pending::Create, 0, 1);
        assert_eq!(pin.check(at(0), 1_000_000, NO_RECOVERY, false), Check::Serve);
        assert_eq!(pin.check(at(RETRY_MS), 1_000_000, NO_RECOVERY, false), Check::Sync, "at the probe pace");
    }

    #[test]
    fn a_pin_synced_before_redis_came_back_is_reconciled_and_one_synced_after_is_served() {
        let back = Epochs { now: 7, recovered: 6 };
        for epoch in [1, 5] {
            let mut before = LocalPin::new(1, Pending::Nothing, 0, epoch);
            assert_eq!(before.check(at(0), 1_000_000, back, true), Check::Reconcile, "synced in epoch {epoch}");
        }
        for epoch in [6, 7] {
            let mut after = LocalPin::new(1, Pending::Nothing, 0, epoch);
            let check = after.check(at(0), 1_000_000, back, true);
            assert_ne!(check, Check::Reconcile, "synced in epoch {epoch}");
        }
        // Synced after the recovery, but before a resubscription: verified in the background.
        assert_eq!(LocalPin::new(1, Pending::Nothing, 0, 6).check(at(RETRY_MS), 1_000_000, back, true), Check::Sync);
        assert_eq!(LocalPin::new(1, Pending::Nothing, 0, 7).check(at(RETRY_MS), 1_000_000, back, true), Check::Serve);
    }

    #[test]
    fn recoveries_are_compared_across_the_epoch_wrap() {
        let wrap = 1u64 << EPOCH_BITS;
        let back = Epochs { now: wrap + 1, recovered: wrap };
        assert!(LocalPin::new(1, Pending::Nothing, 0, wrap - 1).synced_before_recovery(back));
        assert!(!LocalPin::new(1, Pending::Nothing, 0, wrap).synced_before_recovery(back));
        assert!(!LocalPin::new(1, Pending::Nothing, 0, wrap + 1).synced_before_recovery(back));
        let never = Epochs { now: 3, recovered: 0 };
        assert!(!LocalPin::new(1, Pending::Nothing, 0, 1).synced_before_recovery(never), "no recovery yet");
    }

    fn pin_of(backend: &str) -> Held {
        Held::Pin(PinValue { created_ms: 1, backend: backend.into() })
    }

    #[test]
    fn a_pin_made_during_the_outage_is_offered_and_another_instances_pin_wins() {
        let step = reconcile_from(Pending::Create);
        assert_eq!(step, Step::Offer);
        assert_eq!(reconcile_next(step, "a", pin_of("a")), Next::Ours, "ours was first");
        assert_eq!(
            reconcile_next(step, "a", pin_of("b")),
            Next::Theirs(PinValue { created_ms: 1, backend: "b".into() })
        );
        assert_eq!(reconcile_next(step, "a", Held::Nothing), Next::Unsure, "deleted between SET and GET");
        assert_eq!(reconcile_next(step, "a", Held::Foreign), Next::Then(Step::Write));
    }

    #[test]
    fn a_move_made_during_the_outage_overwrites_redis() {
        let step = reconcile_from(Pending::Replace);
        assert_eq!(step, Step::Write);
        assert_eq!(reconcile_next(step, "a", pin_of("a")), Next::Ours, "written");
    }

    #[test]
    fn a_pin_cached_before_the_outage_follows_redis_or_is_written_back_if_redis_has_none() {
        let step = reconcile_from(Pending::Nothing);
        assert_eq!(step, Step::Read);
        assert_eq!(reconcile_next(step, "a", pin_of("a")), Next::Ours);
        assert_eq!(
            reconcile_next(step, "a", pin_of("b")),
            Next::Theirs(PinValue { created_ms: 1, backend: "b".into() })
        );
        assert_eq!(reconcile_next(step, "a", Held::Nothing), Next::Then(Step::Offer), "Redis lost it: offered");
        assert_eq!(reconcile_next(step, "a", Held::Foreign), Next::Then(Step::Write));
        assert_eq!(Held::from_raw(Some("12:b")), Held::Pin(PinValue { created_ms: 12, backend: "b".into() }));
        assert_eq!((Held::from_raw(Some("junk")), Held::from_raw(None)), (Held::Foreign, Held::Nothing));
    }

    #[test]
    fn a_cached_pin_is_8_bytes() {
        assert_eq!(std::mem::size_of::<LocalPin>(), 8);
    }

    #[test]
    fn verdicts() {
        let v = |b: &str| PinValue { created_ms: 1, backend: b.into() };
        assert_eq!(compare("a", Some(&v("a"))), Verdict::Agree);
        assert_eq!(compare("a", Some(&v("b"))), Verdict::Differs);
        assert_eq!(compare("a", None), Verdict::Missing);
    }
}
