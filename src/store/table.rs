//! The compact affinity table behind [`super::MemoryStore`] and the Redis store's local cache:
//! session key -> a small `Copy` value ([`Value`]: a `u32` backend-name id for the memory store,
//! see [`super::names`]; a packed pin with sync state for the Redis cache), with idle expiry, a
//! lifetime counted from each pin's creation and an approximately-LRU size bound. It owns the
//! memory layout, expiry and eviction; what the values mean is the caller's, told through
//! [`Counts`] (by the backend-name id each value names).
//!
//! Layout: 20 bytes a pin plus the value (24 with a `u32`, 28 with the Redis cache's 8 bytes),
//! plus hashbrown's control byte, so 1M memory-store pins fit in about 55 MB:
//! - The key is not kept: a pin is found by 96 bits of a keyed SipHash-1-3 of it ([`PinKey`],
//!   see [`super::pin_key`]).
//!   The hash key is random per table (or adopted from a snapshot), so clients cannot make keys
//!   collide on purpose; by chance, two of 10M sessions share a `PinKey` with probability
//!   about 10^-15, and the cost would be one session following the other's pin.
//! - Times are `u32` ticks of 1/16 s since the table was made (see [`Clock`]).
//! - 16 to 256 shards, each a `Mutex` over a hashbrown table; the shard is picked by key bits
//!   that hashbrown does not use, so threads rarely meet and no lock is global.
//!
//! Expired pins are dropped when looked up, by a cursor that walks a few buckets of the shard
//! on each new pin (so churn cannot fill the table with dead pins), and by a full sweep when
//! [`Table::len`] is asked (the admin API and metrics ask, so that session counts are current).
//! A shard at its share of `max_entries` evicts, Redis-style, the least recently used of a
//! few sampled pins.

pub(crate) use super::pin_key::{HashKey, PinKey};
use hashbrown::HashTable;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Told about every pin that enters or leaves the table, whatever the reason (replacement,
/// removal, expiry, eviction, the table being dropped), so that per-id counts stay exact.
pub(crate) trait Counts: Send + Sync {
    fn added(&self, id: u32);
    fn removed(&self, id: u32);
}

/// What a pin holds: a small `Copy` value, counted by the id it names.
pub(crate) trait Value: Copy + Send {
    fn id(self) -> u32;
}

impl Value for u32 {
    fn id(self) -> u32 {
        self
    }
}

/// Table time as [`Table::modify`] shows it to the caller: now and the pin's creation, in ticks.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stamp {
    pub now: u32,
    pub created: u32,
}

impl Stamp {
    /// Milliseconds from tick `t` to now (whole ticks).
    pub fn ms_since(self, t: u32) -> u64 {
        ticks_to_ms(self.now.wrapping_sub(t))
    }

    /// The pin's creation time, Unix ms, to the tick.
    pub fn created_ms(self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.ms_since(self.created))
    }
}

/// The table's limits, from `[session]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub idle_timeout: Duration,
    pub max_lifetime: Duration,
    pub max_entries: u64,
}

/// Ticks per second: fine enough for sub-second test timeouts, coarse enough that a `u32`
/// lasts 8.5 years.
const TICKS_PER_SEC: u64 = 16;
const NANOS_PER_TICK: u32 = (1_000_000_000 / TICKS_PER_SEC) as u32;
/// Ages are wrapping differences of ticks, meaningful below 2^31 ticks (4 years): longer
/// limits are clamped to that, and every pin is swept long before its age could wrap.
const MAX_AGE: u32 = i32::MAX as u32;

/// Table time: ticks since the table was made.
struct Clock {
    start: Instant,
}

impl Clock {
    fn now(&self) -> u32 {
        let e = self.start.elapsed();
        // Wraps after 8.5 years; ages are wrapping differences, so that is harmless.
        (e.as_secs().wrapping_mul(TICKS_PER_SEC) as u32).wrapping_add(e.subsec_nanos() / NANOS_PER_TICK)
    }
}

/// Whole ticks in `d`, rounded up (so that nothing expires early), at most [`MAX_AGE`].
fn ticks_ceil(d: Duration) -> u32 {
    let t = d.as_secs().saturating_mul(TICKS_PER_SEC) + u64::from(d.subsec_nanos().div_ceil(NANOS_PER_TICK));
    t.min(u64::from(MAX_AGE)) as u32
}

/// Milliseconds -> ticks, rounded down, at most [`MAX_AGE`].
fn ms_to_ticks(ms: u64) -> u32 {
    (ms.saturating_mul(TICKS_PER_SEC) / 1000).min(u64::from(MAX_AGE)) as u32
}

fn ticks_to_ms(t: u32) -> u64 {
    u64::from(t) * 1000 / TICKS_PER_SEC
}

/// One pin: 20 bytes plus the value, 4-byte aligned for values up to that.
#[derive(Clone, Copy, Debug)]
struct Slot<V> {
    key: PinKey,
    value: V,
    /// Tick of the last lookup (idle expiry and LRU eviction).
    used: u32,
    /// Tick of creation, possibly before the table was made (wrapping), for a loaded pin.
    created: u32,
}

const _: () = assert!(std::mem::size_of::<Slot<u32>>() == 24);
const _: () = assert!(std::mem::size_of::<Slot<[u16; 4]>>() == 28);

/// Buckets the amortised sweep looks at per new pin: over twice the pins a shard gains, so
/// the cursor laps the shard faster than churn can fill it with dead pins.
const SWEEP_STEP: usize = 16;
/// Pins compared per eviction (Redis samples 5).
const EVICTION_SAMPLES: usize = 8;

/// One shard's pins. Aligned to two cache lines so that neighbouring shards' locks do not share
/// one (adjacent-line prefetch).
#[repr(align(128))]
struct Shard<V>(Mutex<Pins<V>>);

struct Pins<V> {
    slots: HashTable<Slot<V>>,
    /// This shard's share of `max_entries`.
    cap: usize,
    /// Next bucket for the amortised sweep.
    cursor: usize,
    /// xorshift state for eviction samples.
    rng: u32,
}

impl<V> Pins<V> {
    fn random(&mut self) -> u32 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 17;
        self.rng ^= self.rng << 5;
        self.rng
    }
}

/// A pin as [`Table::entries`] shows it, times as Unix ms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry<V = u32> {
    pub key: PinKey,
    pub value: V,
    pub created_ms: u64,
    pub used_ms: u64,
}

pub(crate) struct Table<C: Counts, V: Value = u32> {
    shards: Box<[Shard<V>]>,
    mask: usize,
    hash_key: HashKey,
    clock: Clock,
    idle: u32,
    lifetime: u32,
    /// Tick of the last full sweep (one per tick is enough: pins expire on tick boundaries).
    swept_at: AtomicU32,
    counts: C,
}

impl<C: Counts, V: Value> Table<C, V> {
    pub fn new(limits: Limits, hash_key: HashKey, counts: C) -> Table<C, V> {
        let max = limits.max_entries.max(1);
        let n = shard_count(max);
        let shards = (0..n)
            .map(|i| {
                // Shares of max_entries that add up to it exactly.
                let cap = (max / n as u64 + u64::from((i as u64) < max % n as u64)) as usize;
                let rng = rand::random::<u32>() | 1;
                Shard(Mutex::new(Pins { slots: HashTable::new(), cap, cursor: 0, rng }))
            })
            .collect();
        Table {
            shards,
            mask: n - 1,
            hash_key,
            clock: Clock { start: Instant::now() },
            idle: ticks_ceil(limits.idle_timeout),
            lifetime: ticks_ceil(limits.max_lifetime),
            swept_at: AtomicU32::new(0),
            counts,
        }
    }

    pub fn hash_key(&self) -> HashKey {
        self.hash_key
    }

    pub fn counts(&self) -> &C {
        &self.counts
    }

    /// The table's name for session key `key`.
    pub fn key(&self, key: &str) -> PinKey {
        self.hash_key.pin_key(key)
    }

    /// Table time now, in ticks (for values that keep times, compared through [`Stamp`]).
    pub fn now(&self) -> u32 {
        self.clock.now()
    }

    /// The value pinned to `key`, refreshing its idle expiry.
    pub fn get(&self, key: PinKey) -> Option<V> {
        let now = self.clock.now();
        self.live(&mut self.lock(key), key, now).map(|s| s.value)
    }

    /// Under the shard lock, `decide` sees the live value of `key` (refreshed) or `None`; if it
    /// returns a value, `key` is (re)pinned to it as a new pin. Returns the value that holds.
    pub fn update(&self, key: PinKey, decide: impl FnOnce(Option<V>) -> Option<V>) -> Option<V> {
        self.update_at(key, None, decide)
    }

    /// [`update`](Self::update) for a pin created at `created_ms` (Unix ms; `None` or a time
    /// ahead of ours: now), which keeps only what is left of its lifetime. A pin whose lifetime
    /// is over is not made: the current value (if any) holds.
    pub fn update_at(
        &self,
        key: PinKey,
        created_ms: Option<u64>,
        decide: impl FnOnce(Option<V>) -> Option<V>,
    ) -> Option<V> {
        let now = self.clock.now();
        let created = created_ms.map_or(now, |ms| self.tick_at(now, super::unix_ms(), ms));
        let mut pins = self.lock(key);
        let current = self.live(&mut pins, key, now).map(|s| s.value);
        match decide(current) {
            Some(value) => {
                let slot = Slot { key, value, used: now, created };
                if self.expired(&slot, now) {
                    return current;
                }
                self.put(&mut pins, slot, now);
                Some(value)
            }
            None => current,
        }
    }

    /// Under the shard lock, `change` sees the live value of `key` (refreshed) and may change
    /// it in place: the pin keeps its creation time. `None` if there is no live pin.
    pub fn modify<R>(&self, key: PinKey, change: impl FnOnce(&mut V, Stamp) -> R) -> Option<R> {
        let now = self.clock.now();
        let mut pins = self.lock(key);
        let slot = self.live(&mut pins, key, now)?;
        let before = slot.value.id();
        let result = change(&mut slot.value, Stamp { now, created: slot.created });
        if slot.value.id() != before {
            self.counts.added(slot.value.id());
            self.counts.removed(before);
        }
        Some(result)
    }

    /// Pin `key` to `value` with the given times (Unix ms: a saved pin, or one made elsewhere
    /// earlier), replacing any pin; not pinned (false) if those times are past the limits.
    pub fn restore(&self, key: PinKey, value: V, created_ms: u64, used_ms: u64) -> bool {
        let (now, now_ms) = (self.clock.now(), super::unix_ms());
        let slot = Slot {
            key,
            value,
            used: self.tick_at(now, now_ms, used_ms),
            created: self.tick_at(now, now_ms, created_ms),
        };
        let live = !self.expired(&slot, now);
        if live {
            self.put(&mut self.lock(key), slot, now);
        }
        live
    }

    /// Forget `key`; returns the value it was pinned to.
    pub fn remove(&self, key: PinKey) -> Option<V> {
        self.remove_if(key, |_, _| true)
    }

    /// Forget `key` if `drop` says so of its value (and creation time, as a [`Stamp`]); returns
    /// the value removed.
    pub fn remove_if(&self, key: PinKey, drop: impl FnOnce(V, Stamp) -> bool) -> Option<V> {
        let now = self.clock.now();
        let mut pins = self.lock(key);
        let entry = pins.slots.find_entry(key.placement(), |s| s.key == key).ok()?;
        let s = *entry.get();
        if !drop(s.value, Stamp { now, created: s.created }) {
            return None;
        }
        entry.remove();
        self.counts.removed(s.value.id());
        Some(s.value)
    }

    /// Live pins, after dropping the expired ones (at most one full sweep per tick).
    pub fn len(&self) -> u64 {
        let now = self.clock.now();
        if self.swept_at.swap(now, Relaxed) != now {
            self.sweep(now);
        }
        self.shards.iter().map(|s| lock(s).slots.len() as u64).sum()
    }

    /// No pins at all, expired or not (no sweep).
    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(|s| lock(s).slots.is_empty())
    }

    /// Every live pin, one shard at a time (each shard is copied under its lock, so writers
    /// wait for one shard's copy at most).
    pub fn entries(&self) -> impl Iterator<Item = Entry<V>> + '_ {
        let (now, now_ms) = (self.clock.now(), super::unix_ms());
        let at = move |t: u32| now_ms.saturating_sub(ticks_to_ms(now.wrapping_sub(t)));
        self.shards.iter().flat_map(move |shard| {
            let pins = lock(shard);
            let live = pins.slots.iter().filter(|s| !self.expired(s, now));
            let entries =
                live.map(|s| Entry { key: s.key, value: s.value, created_ms: at(s.created), used_ms: at(s.used) });
            entries.collect::<Vec<_>>()
        })
    }

    /// The tick of Unix time `ms`, given that tick `now` is Unix time `now_ms` (possibly
    /// before the table was made: wrapping; a time ahead of `now_ms` is now).
    fn tick_at(&self, now: u32, now_ms: u64, ms: u64) -> u32 {
        now.wrapping_sub(ms_to_ticks(now_ms.saturating_sub(ms)))
    }

    fn lock(&self, key: PinKey) -> MutexGuard<'_, Pins<V>> {
        lock(&self.shards[key.shard(self.mask)])
    }

    fn expired(&self, s: &Slot<V>, now: u32) -> bool {
        now.wrapping_sub(s.used) > self.idle || now.wrapping_sub(s.created) > self.lifetime
    }

    /// The live pin of `key`, refreshed; an expired pin is dropped.
    fn live<'p>(&self, pins: &'p mut Pins<V>, key: PinKey, now: u32) -> Option<&'p mut Slot<V>> {
        let entry = pins.slots.find_entry(key.placement(), |s| s.key == key).ok()?;
        if self.expired(entry.get(), now) {
            self.counts.removed(entry.remove().0.value.id());
            return None;
        }
        let slot = entry.into_mut();
        // Only write when the tick changed: repeated lookups leave the line clean.
        if slot.used != now {
            slot.used = now;
        }
        Some(slot)
    }

    /// Insert or replace `slot`; a new pin first sweeps a few buckets and makes room.
    fn put(&self, pins: &mut Pins<V>, slot: Slot<V>, now: u32) {
        self.counts.added(slot.value.id());
        if let Some(old) = pins.slots.find_mut(slot.key.placement(), |s| s.key == slot.key) {
            self.counts.removed(old.value.id());
            *old = slot;
            return;
        }
        self.sweep_some(pins, now);
        while pins.slots.len() >= pins.cap {
            self.evict_one(pins, now);
        }
        pins.slots.insert_unique(slot.key.placement(), slot, |s| s.key.placement());
    }

    /// The amortised sweep: drop the expired pins among the next [`SWEEP_STEP`] buckets.
    fn sweep_some(&self, pins: &mut Pins<V>, now: u32) {
        let buckets = pins.slots.num_buckets();
        for _ in 0..SWEEP_STEP.min(buckets) {
            // The cursor may point past the end after a shrink; it just starts over.
            let i = pins.cursor % buckets;
            pins.cursor = i + 1;
            if let Ok(entry) = pins.slots.get_bucket_entry(i) {
                if self.expired(entry.get(), now) {
                    self.counts.removed(entry.remove().0.value.id());
                }
            }
        }
    }

    /// Drop the least recently used of [`EVICTION_SAMPLES`] pins found from a random bucket on
    /// (an expired one first). The shard must not be empty.
    fn evict_one(&self, pins: &mut Pins<V>, now: u32) {
        let buckets = pins.slots.num_buckets();
        let mut i = pins.random() as usize & (buckets - 1);
        let (mut victim, mut oldest, mut seen) = (i, 0u32, 0);
        for _ in 0..buckets {
            if let Some(s) = pins.slots.get_bucket(i) {
                let age = if self.expired(s, now) { u32::MAX } else { now.wrapping_sub(s.used) };
                if seen == 0 || age > oldest {
                    (victim, oldest) = (i, age);
                }
                seen += 1;
                if seen == EVICTION_SAMPLES {
                    break;
                }
            }
            i = (i + 1) & (buckets - 1);
        }
        if let Ok(entry) = pins.slots.get_bucket_entry(victim) {
            self.counts.removed(entry.remove().0.value.id());
        }
    }

    /// Drop every expired pin, and give memory back after a large drop.
    fn sweep(&self, now: u32) {
        for shard in self.shards.iter() {
            let mut pins = lock(shard);
            pins.slots.retain(|s| {
                let dead = self.expired(s, now);
                if dead {
                    self.counts.removed(s.value.id());
                }
                !dead
            });
            if pins.slots.len() * 4 < pins.slots.capacity() {
                let keep = pins.slots.len() * 2;
                pins.slots.shrink_to(keep, |s| s.key.placement());
            }
        }
    }
}

impl<C: Counts, V: Value> Drop for Table<C, V> {
    /// The pins go with the table: give their counts back.
    fn drop(&mut self) {
        for shard in self.shards.iter_mut() {
            let pins = shard.0.get_mut().unwrap_or_else(|e| e.into_inner());
            for s in pins.slots.iter() {
                self.counts.removed(s.value.id());
            }
        }
    }
}

/// About 1k pins a shard or more, so that each shard's share of `max_entries` stays close to
/// its fill (the bound holds per shard); at least 16 shards so that threads rarely meet; at
/// most 256; never more shards than `max_entries`, so that every share is at least one.
fn shard_count(max_entries: u64) -> usize {
    let n = (max_entries / 1024).next_power_of_two().clamp(16, 256);
    let floor_pow2 = 1u64 << (63 - max_entries.max(1).leading_zeros());
    n.min(floor_pow2) as usize
}

fn lock<V>(shard: &Shard<V>) -> MutexGuard<'_, Pins<V>> {
    // A panic under the lock leaves the pins consistent (every change is one hashbrown call).
    shard.0.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicI64;
    use std::sync::Arc;

    /// Per-value counts, as the backends' session counters.
    #[derive(Default)]
    struct Tally([AtomicI64; 4]);

    impl Counts for Arc<Tally> {
        fn added(&self, v: u32) {
            self.0[v as usize].fetch_add(1, Relaxed);
        }
        fn removed(&self, v: u32) {
            self.0[v as usize].fetch_sub(1, Relaxed);
        }
    }

    impl Tally {
        fn get(&self) -> [i64; 4] {
            [0, 1, 2, 3].map(|i| self.0[i].load(Relaxed))
        }
    }

    fn table(idle_ms: u64, lifetime_ms: u64, max_entries: u64) -> (Table<Arc<Tally>>, Arc<Tally>) {
        let limits = Limits {
            idle_timeout: Duration::from_millis(idle_ms),
            max_lifetime: Duration::from_millis(lifetime_ms),
            max_entries,
        };
        let tally = Arc::new(Tally::default());
        (Table::new(limits, HashKey::random(), tally.clone()), tally)
    }

    const HOUR: u64 = 3_600_000;

    #[test]
    fn replace_remove_and_compare_and_set_keep_counts_exact() {
        let (t, tally) = table(HOUR, HOUR, 1000);
        let k = t.key("s");
        assert_eq!(t.update(k, |_| Some(1)), Some(1));
        assert_eq!(t.update(k, |_| Some(2)), Some(2), "replaced");
        assert_eq!(t.update(k, |cur| cur.is_none().then_some(3)), Some(2), "present: kept");
        assert_eq!(tally.get(), [0, 0, 1, 0]);
        assert_eq!(t.remove(k), Some(2));
        assert_eq!(t.remove(k), None);
        assert_eq!(t.get(k), None);
        assert_eq!(t.update(k, |cur| cur.is_none().then_some(3)), Some(3), "absent: pinned");
        assert_eq!((t.len(), tally.get()), (1, [0, 0, 0, 1]));
        drop(t);
        assert_eq!(tally.get(), [0; 4], "dropping the table gives the counts back");
    }

    #[test]
    fn modify_keeps_the_creation_time_and_recounts_a_changed_id() {
        let (t, tally) = table(HOUR, HOUR, 1000);
        let k = t.key("s");
        assert_eq!(t.modify(k, |v, _| *v), None, "no pin");
        let now = crate::store::unix_ms();
        t.restore(k, 1, now - 60_000, now);
        let created = t.modify(k, |v, at| {
            *v = 2;
            at.created_ms(crate::store::unix_ms())
        });
        assert!(created.unwrap().abs_diff(now - 60_000) < 200, "{created:?}");
        assert_eq!((t.get(k), tally.get()), (Some(2), [0, 0, 1, 0]));
        assert_eq!(t.remove_if(k, |v, _| v == 1), None, "kept");
        assert_eq!(t.remove_if(k, |v, _| v == 2), Some(2));
        assert_eq!((t.len(), tally.get()), (0, [0; 4]));
    }

    #[test]
    fn a_pin_made_with_an_earlier_creation_keeps_only_the_rest_of_its_lifetime() {
        let (t, tally) = table(HOUR, 2_000, 1000);
        let now = crate::store::unix_ms();
        assert_eq!(t.update_at(t.key("dead"), Some(now - 2_100), |_| Some(1)), None, "not made");
        assert_eq!(t.update_at(t.key("old"), Some(now - 1_500), |_| Some(1)), Some(1));
        assert_eq!(t.update_at(t.key("ahead"), Some(now + HOUR), |_| Some(2)), Some(2), "counts as now");
        assert_eq!(t.update_at(t.key("old"), Some(now - 3_000), |_| Some(3)), Some(1), "the live pin holds");
        assert_eq!((t.len(), tally.get()), (2, [0, 1, 1, 0]));
        std::thread::sleep(Duration::from_millis(1_000));
        assert_eq!((t.get(t.key("old")), t.get(t.key("ahead"))), (None, Some(2)));
    }

    /// Sleeps past the next tick, so that what follows is more recent than what came before.
    fn next_tick() {
        std::thread::sleep(Duration::from_nanos(u64::from(NANOS_PER_TICK) + 5_000_000));
    }

    #[test]
    fn the_size_bound_holds_and_evicts_the_least_recently_used() {
        let (t, tally) = table(HOUR, HOUR, 1000);
        let old: Vec<PinKey> = (0..1000).map(|i| t.key(&format!("old{i}"))).collect();
        old.iter().for_each(|&k| _ = t.update(k, |_| Some(0)));
        next_tick();
        for i in 0..4000 {
            let k = t.key(&format!("new{i}"));
            t.update(k, |_| Some(1 + i % 3));
            assert!(t.len() <= 1000);
        }
        let n = t.len();
        assert!(n > 900, "the shards fill to near the bound: {n}");
        assert_eq!(tally.get().iter().sum::<i64>() as u64, n, "evictions were uncounted");
        assert!(t.get(t.key("new3999")).is_some(), "the newest pin stays");
        assert!(old.iter().filter(|&&k| t.get(k).is_some()).count() < 50, "old pins went first");
    }

    #[test]
    fn lru_eviction_spares_pins_in_use() {
        let (t, _) = table(HOUR, HOUR, 1024);
        (0..1024).for_each(|i| _ = t.update(t.key(&format!("first{i}")), |_| Some(1)));
        next_tick();
        let hot: Vec<PinKey> = (0..32).map(|i| t.key(&format!("hot{i}"))).collect();
        hot.iter().for_each(|&k| _ = t.update(k, |_| Some(0)));
        // A tick at a time: the hot pins are used, and 32 new pins push older ones out.
        for round in 0..30 {
            next_tick();
            hot.iter().for_each(|&k| assert!(t.get(k).is_some(), "hot pin evicted in round {round}"));
            (0..32).for_each(|i| _ = t.update(t.key(&format!("cold{round}-{i}")), |_| Some(1)));
        }
        assert!((0..1024).filter(|i| t.get(t.key(&format!("first{i}"))).is_some()).count() < 200);
    }

    #[test]
    fn idle_pins_expire_and_lookups_refresh_them() {
        let (t, tally) = table(300, HOUR, 1000);
        let (used, idle) = (t.key("used"), t.key("idle"));
        t.update(used, |_| Some(1));
        t.update(idle, |_| Some(2));
        for _ in 0..6 {
            std::thread::sleep(Duration::from_millis(100));
            assert!(t.get(used).is_some());
        }
        assert_eq!(t.len(), 1, "the idle pin was swept");
        assert_eq!(tally.get(), [0, 1, 0, 0]);
        assert_eq!(t.get(idle), None);
    }

    #[test]
    fn lifetime_counts_from_creation_even_for_restored_pins() {
        let (t, tally) = table(HOUR, HOUR, 1000);
        let now = crate::store::unix_ms();
        t.restore(t.key("old"), 1, now - HOUR + 100, now);
        t.restore(t.key("dead"), 1, now - HOUR - 1000, now);
        t.update(t.key("new"), |_| Some(2));
        assert!(t.get(t.key("old")).is_some());
        assert_eq!(t.get(t.key("dead")), None, "restored past its lifetime: not kept");
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(t.get(t.key("old")), None, "lifetime over although in use");
        assert_eq!((t.len(), tally.get()), (1, [0, 0, 1, 0]));
    }

    #[test]
    fn churn_with_short_idle_does_not_grow_the_table() {
        let (t, tally) = table(100, HOUR, 1_000_000);
        for round in 0..6 {
            for i in 0..20_000 {
                t.update(t.key(&format!("{round}-{i}")), |_| Some(0));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        let held: usize = t.shards.iter().map(|s| lock(s).slots.len()).sum();
        assert!(held < 45_000, "{held} pins held, most of them dead");
        assert_eq!(t.len(), 0);
        assert_eq!(tally.get(), [0; 4]);
        let buckets: usize = t.shards.iter().map(|s| lock(s).slots.num_buckets()).sum();
        assert!(buckets < 20_000, "memory given back after the sweep: {buckets} buckets");
    }

    #[test]
    fn entries_report_unix_times() {
        let (t, _) = table(HOUR, HOUR, 1000);
        let now = crate::store::unix_ms();
        t.restore(t.key("a"), 3, now - 60_000, now - 5_000);
        let e: Vec<Entry> = t.entries().collect();
        assert_eq!(e.len(), 1);
        assert_eq!((e[0].key, e[0].value), (t.key("a"), 3));
        assert!(e[0].created_ms.abs_diff(now - 60_000) < 200, "{e:?}");
        assert!(e[0].used_ms.abs_diff(now - 5_000) < 200, "{e:?}");
    }

    #[test]
    fn shard_counts() {
        assert_eq!(shard_count(1), 1);
        assert_eq!(shard_count(10), 8);
        assert_eq!(shard_count(1000), 16);
        assert_eq!(shard_count(100_000), 128);
        assert_eq!(shard_count(1_000_000), 256);
        let (t, _) = table(HOUR, HOUR, 1000);
        assert_eq!(t.shards.iter().map(|s| lock(s).cap).sum::<usize>(), 1000);
    }

    #[test]
    fn two_threads_pin_and_look_up_together() {
        let (t, tally) = table(HOUR, HOUR, 100_000);
        std::thread::scope(|s| {
            for th in 0..2u32 {
                let t = &t;
                s.spawn(move || {
                    for i in 0..20_000 {
                        let k = t.key(&format!("{}", i % 5000));
                        t.update(k, |cur| cur.is_none().then_some(th));
                        assert!(t.get(k).is_some());
                    }
                });
            }
        });
        assert_eq!(t.len(), 5000);
        assert_eq!(tally.get().iter().sum::<i64>(), 5000);
    }
}
