//! Property tests (proptest) of the two tables the balancer decides with: backend selection
//! (`balance::Pool`) and the affinity table (`store::MemoryStore`), driven by random operation
//! sequences against a simple model.

use proptest::prelude::*;
use std::sync::Arc;
use stickylb::balance::{Backend, InFlight, Pool};
use stickylb::config::{AdminState, Config};

/// A config with one backend per `(weight, max_connections)`, named `b0`, `b1`, ...; health
/// flips on one probe, passive ejection after one failure lasts an hour.
fn config(backends: &[(u32, usize)], algorithm: &str, session: &str) -> Config {
    let mut text = format!(
        "[balance]\nalgorithm = \"{algorithm}\"\n[health]\nhealthy_threshold = 1\nunhealthy_threshold = 1\n\
         [passive]\nconsecutive_failures = 1\nejection_time = \"1h\"\n[session]\n{session}\n"
    );
    for (i, (weight, max)) in backends.iter().enumerate() {
        text.push_str(&format!(
            "[[backend]]\nname = \"b{i}\"\naddress = \"127.0.0.1:{}\"\nweight = {weight}\nmax_connections = {max}\n",
            9000 + i
        ));
    }
    stickylb::config::parse(&text, "properties.toml").expect("valid test config")
}

const ALGORITHMS: [&str; 4] = ["round_robin", "least_connections", "random_two", "hash"];

mod balancing {
    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        State(usize, AdminState),
        /// An active health-check result.
        Probe(usize, bool),
        /// A failure on real traffic (passive ejection).
        Fail(usize),
        /// A request starts on a backend and stays in flight.
        Start(usize),
        /// The n-th request in flight (modulo their number) ends.
        Finish(usize),
        /// Choose a backend for a new session: session key number, bit mask of backends excluded
        /// by the caller; `start`: a request starts on the chosen backend and stays in flight.
        Select {
            key: Option<u8>,
            exclude: u8,
            start: bool,
        },
    }

    fn op(n: usize) -> impl Strategy<Value = Op> {
        let state = prop_oneof![Just(AdminState::Active), Just(AdminState::Drain), Just(AdminState::Maint)];
        prop_oneof![
            1 => (0..n, state).prop_map(|(i, s)| Op::State(i, s)),
            1 => (0..n, any::<bool>()).prop_map(|(i, ok)| Op::Probe(i, ok)),
            1 => (0..n).prop_map(Op::Fail),
            2 => (0..n).prop_map(Op::Start),
            2 => any::<usize>().prop_map(Op::Finish),
            6 => (proptest::option::of(any::<u8>()), any::<u8>(), any::<bool>())
                .prop_map(|(key, exclude, start)| Op::Select { key, exclude, start }),
        ]
    }

    fn scenario() -> impl Strategy<Value = (Vec<(u32, usize)>, usize, Vec<Op>)> {
        (prop::collection::vec((1u32..=20, 0usize..4), 1..=6), 0..ALGORITHMS.len()).prop_flat_map(
            |(backends, algorithm)| {
                let n = backends.len();
                (Just(backends), Just(algorithm), prop::collection::vec(op(n), 1..120))
            },
        )
    }

    /// `a` is no more loaded than `b`, loads being `(in_flight + extra) / weight` (compared
    /// exactly, by cross-multiplying).
    fn not_more_loaded(a: &Backend, b: &Backend, extra: usize) -> bool {
        (a.in_flight() + extra) as u64 * u64::from(b.weight) <= (b.in_flight() + extra) as u64 * u64::from(a.weight)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Under any sequence of state changes, health results, failures and load, selection
        /// only returns a backend that takes new sessions (active, healthy, not full) and that
        /// the caller did not exclude; it returns none only when no backend qualifies; least
        /// connections picks a least loaded backend per weight; the power of two choices
        /// never picks the one backend more loaded than every other eligible one; the hash of a
        /// key is stable while nothing changes.
        #[test]
        fn selection_only_returns_eligible_backends((backends, algorithm, ops) in scenario()) {
            let algorithm = ALGORITHMS[algorithm];
            let cfg = config(&backends, algorithm, "");
            let pool = Pool::new(&cfg, None);
            let all = pool.backends();
            let mut running: Vec<InFlight> = Vec::new();
            for op in ops {
                match op {
                    Op::State(i, s) => all[i].set_state(s),
                    Op::Probe(i, ok) => _ = all[i].health.probe_result(&all[i].name, &all[i].check, ok),
                    Op::Fail(i) => _ = all[i].health.record_failure(&all[i].name, &cfg.passive),
                    Op::Start(i) => running.push(all[i].start_request()),
                    Op::Finish(n) => {
                        if !running.is_empty() {
                            running.swap_remove(n % running.len());
                        }
                    }
                    Op::Select { key, exclude, start } => {
                        let excluded: Vec<Arc<str>> =
                            all.iter().enumerate().filter(|(i, _)| exclude & (1 << i) != 0).map(|(_, b)| b.name.clone()).collect();
                        let eligible: Vec<&Arc<Backend>> =
                            all.iter().filter(|b| b.accepts_new() && !excluded.contains(&b.name)).collect();
                        let key = key.map(|k| format!("session-{k}"));
                        let chosen = pool.select(key.as_deref(), &excluded);
                        let Some(chosen) = chosen else {
                            prop_assert!(eligible.is_empty(), "none chosen among {} eligible", eligible.len());
                            continue;
                        };
                        prop_assert!(eligible.iter().any(|b| Arc::ptr_eq(b, &chosen)), "{} is not eligible", chosen.name);
                        match algorithm {
                            "least_connections" => {
                                for b in &eligible {
                                    prop_assert!(not_more_loaded(&chosen, b, 1), "{} chosen over less loaded {}", chosen.name, b.name);
                                }
                            }
                            "random_two" if eligible.len() >= 2 => {
                                let others = eligible.iter().filter(|b| !Arc::ptr_eq(b, &chosen));
                                let mut others = others.map(|b| not_more_loaded(&chosen, b, 0));
                                prop_assert!(others.any(|ok| ok), "{} is more loaded than every other eligible backend", chosen.name);
                            }
                            "hash" if key.is_some() => {
                                let again = pool.select(key.as_deref(), &excluded).map(|b| b.name.clone());
                                prop_assert_eq!(again, Some(chosen.name.clone()), "the same key moved");
                            }
                            _ => {}
                        }
                        if start {
                            running.push(chosen.start_request());
                        }
                    }
                }
            }
        }

        /// Least connections with requests that never end: after every selection, each
        /// backend's in-flight count per weight is within one request of every other's.
        #[test]
        fn least_connections_keeps_load_within_one_request(
            weights in prop::collection::vec(1u32..=20, 1..=6),
            n in 1usize..300,
        ) {
            let backends: Vec<(u32, usize)> = weights.iter().map(|&w| (w, 0)).collect();
            let pool = Pool::new(&config(&backends, "least_connections", ""), None);
            let mut running = Vec::new();
            for _ in 0..n {
                running.push(pool.select(None, &[]).expect("all eligible").start_request());
                for a in pool.backends() {
                    for b in pool.backends() {
                        // in_a / w_a <= (in_b + 1) / w_b
                        let (ia, ib) = (a.in_flight() as u64, b.in_flight() as u64 + 1);
                        prop_assert!(ia * u64::from(b.weight) <= ib * u64::from(a.weight), "{} vs {}", a.name, b.name);
                    }
                }
            }
        }

        /// Selection through a full backend: with every selected request kept in flight, no
        /// backend ever exceeds its `max_connections`, whatever the algorithm; when all are full,
        /// nothing is chosen.
        #[test]
        fn selection_never_overfills_a_backend(
            backends in prop::collection::vec((1u32..=20, 1usize..5), 1..=6),
            algorithm in 0..ALGORITHMS.len(),
            n in 1usize..40,
        ) {
            let pool = Pool::new(&config(&backends, ALGORITHMS[algorithm], ""), None);
            let capacity: usize = backends.iter().map(|b| b.1).sum();
            let mut running = Vec::new();
            for i in 0..n {
                let key = format!("k{i}");
                match pool.select(Some(&key), &[]) {
                    Some(b) => running.push(b.start_request()),
                    None => prop_assert_eq!(running.len(), capacity, "none chosen with room left"),
                }
                for b in pool.backends() {
                    prop_assert!(b.in_flight() <= b.max_connections, "{} over its limit", b.name);
                }
            }
        }

        /// Smooth weighted round robin: over whole cycles, every backend gets exactly its weight's
        /// share (small weights: the schedule is exact).
        #[test]
        fn round_robin_shares_follow_small_weights_exactly(
            weights in prop::collection::vec(1u32..=20, 1..=6),
            cycles in 1u32..4,
        ) {
            let backends: Vec<(u32, usize)> = weights.iter().map(|&w| (w, 0)).collect();
            let pool = Pool::new(&config(&backends, "round_robin", ""), None);
            let total: u32 = weights.iter().sum();
            let mut counts = vec![0u32; weights.len()];
            for _ in 0..total * cycles {
                let b = pool.select(None, &[]).expect("all eligible");
                counts[pool.backends().iter().position(|x| Arc::ptr_eq(x, &b)).unwrap()] += 1;
            }
            let expected: Vec<u32> = weights.iter().map(|w| w * cycles).collect();
            prop_assert_eq!(counts, expected);
        }

        /// Large weights are scaled into a bounded schedule: shares still follow the weights.
        #[test]
        fn round_robin_shares_follow_large_weights(weights in prop::collection::vec(1u32..=10_000, 2..=6)) {
            let backends: Vec<(u32, usize)> = weights.iter().map(|&w| (w, 0)).collect();
            let pool = Pool::new(&config(&backends, "round_robin", ""), None);
            let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
            let n = 20_000u64;
            let mut counts = vec![0u64; weights.len()];
            for _ in 0..n {
                let b = pool.select(None, &[]).expect("all eligible");
                counts[pool.backends().iter().position(|x| Arc::ptr_eq(x, &b)).unwrap()] += 1;
            }
            for (c, &w) in counts.iter().zip(&weights) {
                let ideal = (n * u64::from(w)) as f64 / total as f64;
                // The scaled schedule rounds each weight (about 1/4096 of the total), plus a
                // partial cycle: 0.5% of the selections and a few more.
                prop_assert!((*c as f64 - ideal).abs() <= n as f64 * 0.005 + 8.0, "{counts:?} for {weights:?}");
            }
        }

        /// Random picks (power of two choices without load, and key hashing) follow the weights
        /// statistically: each share within 6 standard deviations of its weight's.
        #[test]
        fn random_and_hash_shares_follow_weights(
            weights in prop::collection::vec(1u32..=20, 2..=5),
            hash in any::<bool>(),
        ) {
            let backends: Vec<(u32, usize)> = weights.iter().map(|&w| (w, 0)).collect();
            let pool = Pool::new(&config(&backends, if hash { "hash" } else { "random_two" }, ""), None);
            let total: u32 = weights.iter().sum();
            let n = 3000u32;
            let mut counts = vec![0u32; weights.len()];
            for i in 0..n {
                let b = pool.select(Some(&format!("key-{i}")), &[]).expect("all eligible");
                counts[pool.backends().iter().position(|x| Arc::ptr_eq(x, &b)).unwrap()] += 1;
            }
            for (c, &w) in counts.iter().zip(&weights) {
                let p = f64::from(w) / f64::from(total);
                let sigma = (f64::from(n) * p * (1.0 - p)).sqrt();
                prop_assert!((f64::from(*c) - f64::from(n) * p).abs() <= 6.0 * sigma + 1.0, "{counts:?} for {weights:?}");
            }
        }

        /// Rendezvous hashing: taking backends out of the choice only moves the keys that were
        /// on them.
        #[test]
        fn hash_moves_only_the_keys_of_removed_backends(
            weights in prop::collection::vec(1u32..=20, 2..=6),
            exclude in any::<u8>(),
        ) {
            let backends: Vec<(u32, usize)> = weights.iter().map(|&w| (w, 0)).collect();
            let pool = Pool::new(&config(&backends, "hash", ""), None);
            let excluded: Vec<Arc<str>> = pool.backends().iter().enumerate()
                .filter(|(i, _)| exclude & (1 << i) != 0).map(|(_, b)| b.name.clone()).collect();
            for i in 0..200 {
                let key = format!("key-{i}");
                let before = pool.select(Some(&key), &[]).expect("all eligible").name.clone();
                let after = pool.select(Some(&key), &excluded).map(|b| b.name.clone());
                if !excluded.contains(&before) {
                    prop_assert_eq!(after, Some(before));
                } else {
                    prop_assert!(after.is_none_or(|a| !excluded.contains(&a)));
                }
            }
        }
    }
}

/// The memory store's affinity table, written against its API where pins name an
/// `Arc<Backend>` (`pin_sync` / `get_sync` and the `AffinityStore` methods).
mod affinity_table {
    use super::*;
    use std::collections::HashMap;
    use std::time::Duration;
    use stickylb::store::{AffinityStore, MemoryStore};

    /// Polls a future that never waits (the memory store's) to its result.
    fn ready<F: std::future::Future>(f: F) -> F::Output {
        struct NoWake;
        impl std::task::Wake for NoWake {
            fn wake(self: Arc<Self>) {}
        }
        let waker = std::task::Waker::from(Arc::new(NoWake));
        match std::pin::pin!(f).poll(&mut std::task::Context::from_waker(&waker)) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("the memory store waited"),
        }
    }

    const BACKENDS: usize = 3;
    const KEYS: usize = 40;

    #[derive(Debug, Clone)]
    enum Op {
        Pin(usize, usize),
        PinIfAbsent(usize, usize),
        Reassign(usize, usize, usize),
        Unpin(usize),
        Get(usize),
        /// A config reload: a new pool whose backends share their predecessors' counters.
        Reload,
    }

    fn op() -> impl Strategy<Value = Op> {
        let (k, b) = (0..KEYS, 0..BACKENDS);
        prop_oneof![
            3 => (k.clone(), b.clone()).prop_map(|(k, b)| Op::Pin(k, b)),
            3 => (k.clone(), b.clone()).prop_map(|(k, b)| Op::PinIfAbsent(k, b)),
            2 => (k.clone(), b.clone(), b).prop_map(|(k, f, t)| Op::Reassign(k, f, t)),
            2 => k.clone().prop_map(Op::Unpin),
            2 => k.prop_map(Op::Get),
            1 => Just(Op::Reload),
        ]
    }

    fn name(b: &str) -> usize {
        b[1..].parse().expect("backends are b0, b1, ...")
    }

    /// The store's live-pin count of backend `i`.
    fn count(store: &MemoryStore, i: usize) -> u64 {
        let want = format!("b{i}");
        store.sessions().iter().find(|(n, _)| **n == *want).map_or(0, |(_, c)| *c)
    }

    /// Runs `ops` on a store of `max_entries` and checks it against a model (key -> backend)
    /// after every step. Returns how many pins the table evicted to stay within its bound.
    fn run(max_entries: u64, ops: Vec<Op>) -> Result<usize, TestCaseError> {
        let cfg = config(&[(1, 0); BACKENDS], "round_robin", &format!("max_entries = {max_entries}"));
        let store = MemoryStore::new(&cfg.session);
        let mut model: HashMap<usize, usize> = HashMap::new();
        let mut evicted = 0;
        for op in ops {
            let b = |i: usize| format!("b{i}");
            let key = |k: usize| format!("session-{k}");
            match op {
                Op::Pin(k, to) => {
                    store.pin_sync(&key(k), &b(to));
                    model.insert(k, to);
                    prop_assert_eq!(store.get_sync(&key(k)).map(|x| name(&x)), Some(to), "a new pin reads back");
                }
                Op::PinIfAbsent(k, to) => {
                    let holds = ready(store.pin_if_absent(&key(k), &b(to), None));
                    let expected = *model.entry(k).or_insert(to);
                    prop_assert_eq!(name(&holds), expected);
                }
                Op::Reassign(k, from, to) => {
                    let holds = ready(store.reassign(&key(k), &b(from), &b(to)));
                    let expected = match model.get(&k) {
                        Some(&current) if current != from => current,
                        _ => to,
                    };
                    model.insert(k, expected);
                    prop_assert_eq!(name(&holds), expected);
                }
                Op::Unpin(k) => {
                    ready(store.unpin(&key(k)));
                    model.remove(&k);
                    prop_assert!(store.get_sync(&key(k)).is_none(), "an unpinned key reads back");
                }
                Op::Get(k) => {
                    let got = ready(store.get(&key(k))).map(|x| name(&x));
                    prop_assert!(got.is_none() || got == model.get(&k).copied(), "{k} reads {got:?}");
                }
                // Pins are to names: a reload changes nothing for the store.
                Op::Reload => {}
            }
            // Every pin the model knows reads back its backend, or was evicted (and then stays
            // gone). Nothing expires here (the default idle timeout is 30 minutes).
            for (k, want) in model.clone() {
                match store.get_sync(&key(k)) {
                    Some(got) => prop_assert_eq!(name(&got), want, "session-{} moved", k),
                    None => {
                        model.remove(&k);
                        evicted += 1;
                    }
                }
            }
            let len = store.len();
            prop_assert!(len <= max_entries, "{len} pins for max_entries = {max_entries}");
            prop_assert_eq!(len, model.len() as u64, "pins the model does not know");
            for i in 0..BACKENDS {
                let pins = model.values().filter(|&&v| v == i).count() as u64;
                prop_assert_eq!(count(&store, i), pins, "session count of b{}", i);
                prop_assert_eq!(store.iter().filter(|(_, x)| name(x) == i).count() as u64, pins);
            }
        }
        Ok(evicted)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// A small table (shards of a few pins, so evictions are frequent): the bound holds,
        /// pins read back their backend until unpinned or evicted, `pin_if_absent` and
        /// `reassign` keep or move them as a compare-and-set, and per-backend session counts
        /// equal the live pins.
        #[test]
        fn bounded_table_agrees_with_the_model(max_entries in 1u64..=64, ops in prop::collection::vec(op(), 1..150)) {
            run(max_entries, ops)?;
        }

        /// A table with room for every key (each shard's share exceeds the 40 keys): nothing is
        /// ever lost.
        #[test]
        fn roomy_table_never_loses_a_pin(ops in prop::collection::vec(op(), 1..150)) {
            prop_assert_eq!(run(1024, ops)?, 0, "a pin was evicted below the bound");
        }
    }

    proptest! {
        // These sleep through timeouts: a few cases only.
        #![proptest_config(ProptestConfig { cases: 3, ..ProptestConfig::default() })]

        /// Idle expiry: pins used more often than the idle timeout stay, the others go (and are
        /// uncounted); the lifetime ends even pins in use.
        #[test]
        fn idle_pins_expire_and_used_ones_stay_until_their_lifetime(
            pins in prop::collection::vec((0..KEYS, 0..BACKENDS, any::<bool>()), 1..30),
        ) {
            let session = "idle_timeout = \"300ms\"\nmax_lifetime = \"900ms\"";
            let cfg = config(&[(1, 0); BACKENDS], "round_robin", session);
            let store = MemoryStore::new(&cfg.session);
            let mut model: HashMap<usize, (usize, bool)> = HashMap::new();
            for (k, b, used) in pins {
                store.pin_sync(&format!("s{k}"), &format!("b{b}"));
                model.insert(k, (b, used));
            }
            for _ in 0..5 {
                std::thread::sleep(Duration::from_millis(100));
                for (k, &(b, used)) in &model {
                    if used {
                        let got = store.get_sync(&format!("s{k}")).map(|x| name(&x));
                        prop_assert_eq!(got, Some(b), "a pin in use expired");
                    }
                }
            }
            // 500 ms in: the idle timeout (300 ms, in whole 1/16 s ticks) is over for unused pins.
            let live: Vec<_> = model.iter().filter(|(_, &(_, used))| used).collect();
            prop_assert_eq!(store.len(), live.len() as u64);
            for i in 0..BACKENDS {
                let n = live.iter().filter(|(_, &(b, _))| b == i).count() as u64;
                prop_assert_eq!(count(&store, i), n);
            }
            for (k, &(_, used)) in &model {
                prop_assert_eq!(store.get_sync(&format!("s{k}")).is_some(), used);
            }
            // Past the lifetime, in use or not.
            std::thread::sleep(Duration::from_millis(550));
            prop_assert_eq!(store.len(), 0);
            prop_assert!((0..BACKENDS).all(|i| count(&store, i) == 0));
        }
    }
}
