//! The compact affinity table behind [`super::MemoryStore`] and the Redis store's local cache:
//! session key -> a small `Copy` value ([`Value`]: a `u32` backend-name id for the memory store,
//! see [`super::names`]; a packed pin with sync state for the Redis cache), with idle expiry, a
//! lifetime counted from each pin's creation and an approximately-LRU size bound. It owns the
//! memory layout, expiry and eviction; what the values mean is the caller's, told through
//! [`Counts`] (by the backend-name id each value names).
//!
//! Layout: a slot is 16 bytes plus the value (20 with a `u32`, 24 with the Redis cache's 8
//! bytes), in an open-addressing array kept 70% to 87.5% full ([`slots`]), so a memory-store
//! pin takes 23 to 29 bytes (`cargo bench --bench memory`: 10M pins in 232 MiB, 24 bytes a pin;
//! 1M in 28 MiB, 29 bytes a pin; the Redis cache's 1M in 33 MiB):
//! - The key is not kept: a pin is found by 72 bits of a keyed SipHash-1-3 of it ([`PinKey`],
//!   see [`super::pin_key`]): 64 stored in its slot, 8 (the tag) picking its shard (and kept
//!   in a byte beside the slot in tables of fewer than 256 shards).
//!   The hash key is random per table (or adopted from a snapshot), so clients cannot make keys
//!   collide on purpose; by chance, two of 10M sessions share a `PinKey` with probability
//!   about n^2/2^73 = 1.1 * 10^-8 (10^-10 at 1M), and the cost would be one session following
//!   the other's pin. Snapshots keep writing 24 hex digits a pin (see [`super::pin_key`]):
//!   files saved with 96-bit keys still load, but a file saved now finds no sessions in a build
//!   from before 72-bit keys.
//! - Times are `u32` ticks of 1/16 s since the table was made (see [`clock`]).
//! - 16 to 256 shards, each a `Mutex` over its own array; the shard is picked by the tag, which
//!   the placement in the array does not use, so threads rarely meet and no lock is global.
//!
//! Expired pins are dropped when looked up, by a cursor that walks a few buckets of the shard
//! on each new pin (so churn cannot fill the table with dead pins), and by a full sweep when
//! [`Table::len`] is asked (the admin API and metrics ask, so that session counts are current).
//! A shard at its share of `max_entries` evicts, Redis-style, the least recently used of a
//! few sampled pins: those in the buckets the sweep has just walked (in cache, and as random as
//! any, since a pin's bucket follows its key's hash).

mod clock;
mod slots;

pub(crate) use super::pin_key::{HashKey, PinKey};
#[cfg(test)]
use clock::NANOS_PER_TICK;
use clock::{ms_to_ticks, ticks_ceil, ticks_to_ms, Clock};
use slots::{Key, Slot, Slots};
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Told about every pin that enters or leaves the table, whatever the reason (replacement,
/// removal, expiry, eviction, the table being dropped), so that per-id counts stay exact.
pub(crate) trait Counts: Send + Sync {
    fn added(&self, id: u32);
    fn removed(&self, id: u32);
}

/// What a pin holds: a small `Copy` value, counted by the id it names (the default fills
/// empty slots and is never read).
pub(crate) trait Value: Copy + Default + Send {
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
    slots: Slots<V>,
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
                let slots = Slots::new(n < 256);
                Shard(Mutex::new(Pins { slots, cap, cursor: 0, rng }))
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
        self.live(&mut self.lock(key), Key::of(key), now).map(|s| s.value)
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
        let current = self.live(&mut pins, Key::of(key), now).map(|s| s.value);
        match decide(current) {
            Some(value) => {
                let slot = Slot::new(value, now, created);
                if self.expired(&slot, now) {
                    return current;
                }
                if current.is_some() {
                    self.put(&mut pins, Key::of(key), slot, now);
                } else {
                    // `live` found no pin (or dropped an expired one): no second walk.
                    self.add(&mut pins, Key::of(key), slot, now);
                }
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
        let slot = self.live(&mut pins, Key::of(key), now)?;
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
        let slot = Slot::new(value, self.tick_at(now, now_ms, used_ms), self.tick_at(now, now_ms, created_ms));
        let live = !self.expired(&slot, now);
        if live {
            self.put(&mut self.lock(key), Key::of(key), slot, now);
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
        let at = pins.slots.find(Key::of(key))?;
        let s = *pins.slots.at(at);
        if !drop(s.value, Stamp { now, created: s.created }) {
            return None;
        }
        pins.slots.remove(at);
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
        self.shards.iter().enumerate().flat_map(move |(n, shard)| {
            let pins = lock(shard);
            let live = pins.slots.iter().filter(|(_, s)| !self.expired(s, now));
            let entries = live.map(|(i, s)| Entry {
                key: pins.slots.key_at(i, n as u8),
                value: s.value,
                created_ms: at(s.created),
                used_ms: at(s.used),
            });
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
    fn live<'p>(&self, pins: &'p mut Pins<V>, key: Key, now: u32) -> Option<&'p mut Slot<V>> {
        let at = pins.slots.find(key)?;
        if self.expired(pins.slots.at(at), now) {
            self.counts.removed(pins.slots.remove(at).value.id());
            return None;
        }
        let slot = pins.slots.at(at);
        // Only write when the tick changed: repeated lookups leave the line clean.
        if slot.used != now {
            slot.used = now;
        }
        Some(slot)
    }

    /// Insert or replace `slot`; a new pin first sweeps a few buckets and makes room.
    fn put(&self, pins: &mut Pins<V>, key: Key, slot: Slot<V>, now: u32) {
        if let Some(at) = pins.slots.find(key) {
            self.counts.added(slot.value.id());
            let old = pins.slots.at(at);
            self.counts.removed(old.value.id());
            (old.value, old.used, old.created) = (slot.value, slot.used, slot.created);
            return;
        }
        self.add(pins, key, slot, now);
    }

    /// Insert `slot` for `key`, which has no pin: first sweep a few buckets and make room.
    fn add(&self, pins: &mut Pins<V>, key: Key, slot: Slot<V>, now: u32) {
        self.counts.added(slot.value.id());
        let swept = self.sweep_some(pins, now);
        // The first sample from where the sweep just looked: those buckets are in cache, and as
        // random a sample as any (a pin's bucket follows its key's hash, not its age).
        let mut from = Some(swept);
        while pins.slots.len() >= pins.cap {
            let start = from.take().unwrap_or_else(|| {
                let buckets = pins.slots.num_buckets() as u64;
                ((u64::from(pins.random()) * buckets) >> 32) as usize
            });
            self.evict_from(pins, start, now);
        }
        let limit = pins.cap;
        pins.slots.insert(key, slot, limit);
    }

    /// The amortised sweep: drop the expired pins among the next [`SWEEP_STEP`] buckets;
    /// returns the first of them.
    fn sweep_some(&self, pins: &mut Pins<V>, now: u32) -> usize {
        let buckets = pins.slots.num_buckets();
        // The cursor may point past the end after a resize; it just starts over. (Not a
        // division per bucket: those were a tenth of a new pin's `put`.)
        let start = if pins.cursor < buckets { pins.cursor } else { 0 };
        let mut i = start;
        for _ in 0..SWEEP_STEP.min(buckets) {
            match pins.slots.get(i) {
                // The removal shifts the next pin of the run into bucket i: the cursor stays.
                Some(s) if self.expired(s, now) => self.counts.removed(pins.slots.remove(i).value.id()),
                _ => i = if i + 1 == buckets { 0 } else { i + 1 },
            }
        }
        pins.cursor = i;
        start
    }

    /// Drop the least recently used of [`EVICTION_SAMPLES`] pins found from bucket `i` on (an
    /// expired one first). The shard must not be empty.
    fn evict_from(&self, pins: &mut Pins<V>, mut i: usize, now: u32) {
        let buckets = pins.slots.num_buckets();
        let (mut victim, mut oldest, mut seen) = (None, 0u32, 0);
        for _ in 0..buckets {
            if let Some(s) = pins.slots.get(i) {
                let age = if self.expired(s, now) { u32::MAX } else { now.wrapping_sub(s.used) };
                if seen == 0 || age > oldest {
                    (victim, oldest) = (Some(i), age);
                }
                seen += 1;
                if seen == EVICTION_SAMPLES {
                    break;
                }
            }
            i = if i + 1 == buckets { 0 } else { i + 1 };
        }
        if let Some(victim) = victim {
            self.counts.removed(pins.slots.remove(victim).value.id());
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
            if pins.slots.len() * 4 < pins.slots.num_buckets() {
                let keep = pins.slots.len() * 2;
                pins.slots.shrink_to(keep);
            }
        }
    }
}

impl<C: Counts, V: Value> Drop for Table<C, V> {
    /// The pins go with the table: give their counts back.
    fn drop(&mut self) {
        for shard in self.shards.iter_mut() {
            let pins = shard.0.get_mut().unwrap_or_else(|e| e.into_inner());
            for (_, s) in pins.slots.iter() {
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
    // A panic under the lock leaves the pins consistent: `Counts` and the caller's closures run
    // before or after a change of the array, never within one.
    shard.0.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests;
