//! The table's behaviour through its API: counts, expiry, eviction, sweeping, sharding.

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

/// A full shard evicts one of the pins the sweep has just walked past (buckets in cache), not
/// one from elsewhere in the array.
#[test]
fn a_full_shard_evicts_where_the_sweep_just_looked() {
    let (t, _) = table(HOUR, HOUR, 2048);
    (0..4096).for_each(|i| _ = t.update(t.key(&format!("fill{i}")), |_| Some(0)));
    let shard = 3;
    let keys = (0..).map(|i| t.key(&format!("new{i}"))).filter(|k| k.shard(t.mask) == shard);
    for (round, key) in keys.take(20).enumerate() {
        let (before, window) = {
            let pins = lock(&t.shards[shard]);
            assert_eq!(pins.slots.len(), pins.cap, "the shard is full");
            let at: Vec<(usize, PinKey)> =
                pins.slots.iter().map(|(i, _)| (i, pins.slots.key_at(i, shard as u8))).collect();
            (at, (pins.cursor, pins.slots.num_buckets()))
        };
        t.update(key, |_| Some(1));
        let pins = lock(&t.shards[shard]);
        let now: std::collections::HashSet<PinKey> =
            pins.slots.iter().map(|(i, _)| pins.slots.key_at(i, shard as u8)).collect();
        let gone: Vec<usize> = before.iter().filter(|(_, k)| !now.contains(k)).map(|&(i, _)| i).collect();
        let (cursor, buckets) = window;
        let offset = |i: usize| (i + buckets - cursor % buckets) % buckets;
        assert!(
            gone.len() == 1 && offset(gone[0]) < SWEEP_STEP,
            "round {round}: evicted from buckets {gone:?}, the sweep looked at {cursor}.. of {buckets}"
        );
    }
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
fn an_expired_pin_pinned_again_is_one_new_pin_counted_once() {
    let (t, tally) = table(100, HOUR, 1000);
    let k = t.key("back");
    t.update(k, |_| Some(1));
    std::thread::sleep(Duration::from_millis(250));
    // The lookup drops the expired pin; the new one is added in its place, not beside it.
    assert_eq!(t.update(k, |current| current.map_or(Some(2), |_| panic!("expired pin seen"))), Some(2));
    assert_eq!(t.update(k, |current| current.filter(|_| false)), Some(2), "found again");
    let held = || t.shards.iter().map(|s| lock(s).slots.len()).sum::<usize>();
    assert_eq!((held(), tally.get()), (1, [0, 0, 1, 0]));
    // A live pin changed is replaced in place.
    assert_eq!(t.update(k, |_| Some(3)), Some(3));
    assert_eq!((held(), tally.get(), t.get(k)), (1, [0, 0, 0, 1], Some(3)));
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

/// A table's entries, restored into a table of another shard count (a snapshot loaded after
/// `max_entries` changed), under the same hash key.
fn moved(from: &Table<Arc<Tally>>, max_entries: u64) -> (Table<Arc<Tally>>, Arc<Tally>) {
    let tally = Arc::new(Tally::default());
    let limits =
        Limits { idle_timeout: Duration::from_millis(HOUR), max_lifetime: Duration::from_millis(HOUR), max_entries };
    let to = Table::new(limits, from.hash_key(), tally.clone());
    for e in from.entries() {
        assert!(to.restore(PinKey::from_hex(&e.key.to_hex()).unwrap(), e.value, e.created_ms, e.used_ms));
    }
    (to, tally)
}

#[test]
fn saved_keys_find_their_sessions_in_tables_of_more_or_fewer_shards() {
    let (small, _) = table(HOUR, HOUR, 1000);
    // 300 pins in 16 shards of 62 or 63: none is evicted.
    let keys: Vec<String> = (0..300).map(|i| format!("s{i}")).collect();
    keys.iter().enumerate().for_each(|(i, k)| _ = small.update(small.key(k), |_| Some(i as u32 % 4)));
    let (big, tally) = moved(&small, 1_000_000);
    assert_eq!((small.shards.len(), big.shards.len()), (16, 256));
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(big.get(big.key(k)), Some(i as u32 % 4), "{k} lost going to 256 shards");
    }
    let (back, _) = moved(&big, 1000);
    assert!(keys.iter().all(|k| back.get(back.key(k)).is_some()), "lost going back to 16 shards");
    assert_eq!((big.len(), tally.get().iter().sum::<i64>()), (300, 300));
}
