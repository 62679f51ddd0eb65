//! Criterion benchmarks of the affinity stores' hot path: a lookup of an existing pin in the
//! memory store vs a local-cache hit in the Redis store, and (when `redis-server` is on PATH,
//! started here on a free loopback port) a Redis store lookup that misses the local cache and
//! goes to Redis (GET + PEXPIRE round trip). `store_new_pin/memory_full`: a new session's pin
//! into a memory store at its `max_entries` (1M pins; each new pin evicts one), the steady
//! state of a busy server, where the table's cache and TLB misses show (instruction counts do
//! not see them).
//!
//! `cargo bench --bench store` measures; under `cargo test --all-targets` each case runs once.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use std::future::Future;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};
use std::time::{Duration, Instant};
use stickylb::config::{self, Config};
use stickylb::metrics::Metrics;
use stickylb::store::{AffinityStore, MemoryStore, RedisStore};

/// Pins in each table.
const PINS: usize = 10_000;
/// The backends the pins name (as in [`config`]).
const BACKENDS: [&str; 3] = ["app1", "app2", "app3"];

fn config(redis_port: u16, max_entries: usize) -> Config {
    let mut text = format!(
        "[session]\nmax_entries = {max_entries}\n[cluster]\nstore = \"redis\"\n\
         redis_url = \"redis://127.0.0.1:{redis_port}/0\"\nkey_prefix = \"bench:\"\nredis_timeout = \"1s\"\n"
    );
    for i in 1..=3 {
        text.push_str(&format!("[[backend]]\nname = \"app{i}\"\naddress = \"127.0.0.1:{}\"\n", 9000 + i));
    }
    config::parse(&text, "bench").expect("valid bench config")
}

fn keys() -> Vec<String> {
    (0..PINS).map(|i| format!("session-{i:08}")).collect()
}

/// Polls a future that must finish without waiting (a hot-path lookup) to its result.
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(&noop_waker())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the lookup waited"),
    }
}

fn noop_waker() -> Waker {
    const VTABLE: RawWakerVTable =
        RawWakerVTable::new(|_| RawWaker::new(std::ptr::null(), &VTABLE), |_| {}, |_| {}, |_| {});
    // SAFETY: every vtable function ignores the (null) data pointer.
    unsafe { Waker::from_raw(RawWaker::new(std::ptr::null(), &VTABLE)) }
}

/// A `redis-server` on a free loopback port, killed on drop; `None` if it is not installed.
struct RedisServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    fn start() -> Option<RedisServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
        let dir = tempfile::tempdir().ok()?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let server = RedisServer { child, port, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Some(server)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Redis store whose local cache holds every key (pinned through Redis when it is up,
/// locally otherwise: the hit path is the same).
fn filled_redis_store(rt: &tokio::runtime::Runtime, cfg: &Config, keys: &[String]) -> RedisStore {
    let store = RedisStore::new(&cfg.session, &cfg.cluster, Arc::new(Metrics::default())).expect("redis url");
    rt.block_on(async {
        for (i, k) in keys.iter().enumerate() {
            store.pin_if_absent(k, BACKENDS[i % 3], None).await;
        }
    });
    store
}

fn hot_path(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let _in_runtime = rt.enter();
    let redis = RedisServer::start();
    // Without a server, a closed port: the Redis store then pins into its local table.
    let port = redis.as_ref().map_or(1, |r| r.port);
    let cfg = config(port, 1_000_000);
    let keys = keys();

    let memory = MemoryStore::new(&cfg.session);
    for (i, k) in keys.iter().enumerate() {
        memory.pin_sync(k, BACKENDS[i % 3]);
    }
    let cached = filled_redis_store(&rt, &cfg, &keys);

    let mut g = c.benchmark_group("store_get_existing_pin");
    let mut i = 0;
    g.bench_function("memory", |b| {
        b.iter(|| {
            i = (i + 7919) % PINS;
            black_box(ready(memory.get(black_box(&keys[i]))))
        })
    });
    g.bench_function("redis_local_cache_hit", |b| {
        b.iter(|| {
            i = (i + 7919) % PINS;
            black_box(ready(cached.get(black_box(&keys[i]))))
        })
    });
    g.finish();

    new_pin(c, &cfg);

    let Some(_redis) = redis else {
        eprintln!("redis-server is not on PATH: skipping the cache-miss benchmark");
        return;
    };
    // A one-entry local cache over the same Redis: lookups of the 10k keys miss it and read
    // Redis.
    let miss_cfg = config(port, 1);
    let missing = RedisStore::new(&miss_cfg.session, &miss_cfg.cluster, Arc::new(Metrics::default())).unwrap();
    c.bench_function("store_get_redis_cache_miss_round_trip", |b| {
        b.iter(|| {
            i = (i + 7919) % PINS;
            let found = rt.block_on(missing.get(black_box(&keys[i])));
            assert!(found.is_some(), "the pin is in Redis");
            black_box(found)
        })
    });
}

/// New pins into a full memory store (fresh keys, as insert mode's random ids are).
fn new_pin(c: &mut Criterion, cfg: &Config) {
    const BATCH: u64 = 4096;
    // 1M pins when measuring; under `cargo test --all-targets` (one run of each case) 10k.
    let full: u64 = if std::env::args().any(|a| a == "--bench") { 1_000_000 } else { 10_000 };
    let mut session = cfg.session.clone();
    session.max_entries = full;
    let memory = MemoryStore::new(&session);
    let mut n = 0u64;
    // 32 hex digits that look random (an odd multiplier is a bijection on u128).
    let mut next = move || {
        n += 1;
        format!("{:032x}", u128::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835))
    };
    for i in 0..full {
        memory.pin_sync(&next(), BACKENDS[i as usize % 3]);
    }
    let mut g = c.benchmark_group("store_new_pin");
    g.throughput(criterion::Throughput::Elements(BATCH));
    g.bench_function("memory_full", |b| {
        b.iter_batched_ref(
            || (0..BATCH).map(|_| next()).collect::<Vec<_>>(),
            |keys| {
                for (i, k) in keys.iter().enumerate() {
                    black_box(ready(memory.pin_if_absent(black_box(k), BACKENDS[i % 3], None)));
                }
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
