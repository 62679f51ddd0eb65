//! Memory benchmark: resident memory of the affinity tables after pinning 1M and 10M sessions
//! (insert-mode ids, 3 backends): the memory store's table, and the Redis store's local cache
//! (1M only). `cargo bench --bench memory` prints one line per table and size, each table
//! measured in a child process of its own (`-- memory`, `-- redis_cache`) so that memory one
//! freed is not reused by the next. Under `cargo test --all-targets` it pins 10k sessions
//! only, to stay fast.
//!
//! The Redis store is pointed at a closed port: after its first call fails it is in outage
//! mode and pins into its local cache without round trips (one refused probe per 500ms), so
//! what grows is the cache alone.

use std::sync::Arc;
use stickylb::config::{self, Config};
use stickylb::metrics::Metrics;
use stickylb::session::CookieCodec;
use stickylb::store::{AffinityStore, MemoryStore, RedisStore};

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let sizes: &[u64] = if full { &[1_000_000, 10_000_000] } else { &[10_000] };
    let mut text = String::from(
        "[session]\nmax_entries = 20000000\nidle_timeout = \"1h\"\n\
         [cluster]\nredis_url = \"redis://127.0.0.1:1/0\"\nredis_timeout = \"1s\"\n",
    );
    for i in 1..=3 {
        text.push_str(&format!("[[backend]]\nname = \"app{i}\"\naddress = \"127.0.0.1:{}\"\n", 9000 + i));
    }
    let cfg = config::parse(&text, "bench").expect("valid bench config");
    let backends: Vec<&str> = cfg.backends.iter().map(|b| b.name()).collect();
    let only = |table: &str| std::env::args().any(|a| a == table);
    let (memory, redis) = (only("memory"), only("redis_cache"));
    if full && !memory && !redis {
        println!("{:>12} {:>12} {:>12} {:>14} {:>12}", "table", "pins", "rss_MiB", "bytes_per_pin", "len_sweep_ms");
        return ["memory", "redis_cache"].iter().for_each(|table| in_child(table));
    }
    if memory || !full {
        for &n in sizes {
            let store = MemoryStore::new(&cfg.session);
            measure("memory", &store, n, |key, backend| store.pin_sync(key, backend), &backends);
        }
    }
    if redis || !full {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let store = redis_cache(&cfg);
        measure("redis_cache", &store, sizes[0], |key, backend| rt.block_on(store.pin(key, backend)), &backends);
    }
}

/// Run this benchmark again for one table, its lines going to our output.
fn in_child(table: &str) {
    let exe = std::env::current_exe().expect("the benchmark's path");
    let status = std::process::Command::new(exe).args(["--bench", table]).status().expect("run the benchmark");
    assert!(status.success(), "the {table} measurement failed");
}

/// A Redis store with nothing listening at its URL.
fn redis_cache(cfg: &Config) -> RedisStore {
    RedisStore::new(&cfg.session, &cfg.cluster, Arc::new(Metrics::default())).expect("valid redis url")
}

/// Pin `n` new sessions through `pin` and print the RSS growth per live pin of `store`.
fn measure<S: AffinityStore>(name: &str, store: &S, n: u64, pin: impl Fn(&str, &str), backends: &[&str]) {
    let before = rss_bytes();
    for i in 0..n {
        pin(&CookieCodec::new_id(), backends[i as usize % backends.len()]);
    }
    let live = store.len();
    // `len` sweeps expired pins (at most every 1/16 s); the admin API and metrics call it.
    std::thread::sleep(std::time::Duration::from_millis(100));
    let t = std::time::Instant::now();
    store.len();
    let sweep = t.elapsed();
    let grown = rss_bytes().saturating_sub(before);
    println!(
        "{:>12} {:>12} {:>12.1} {:>14} {:>12.1}",
        name,
        live,
        grown as f64 / (1 << 20) as f64,
        grown / live.max(1),
        sweep.as_secs_f64() * 1000.0
    );
}
