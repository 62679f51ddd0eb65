//! Memory benchmark: resident memory of the affinity table after pinning 1M and 10M sessions
//! (insert-mode ids, 3 backends). `cargo bench --bench memory` prints one line per size.
//! Under `cargo test --all-targets` it pins 10k sessions only, to stay fast.

use stickylb::balance::Pool;
use stickylb::config;
use stickylb::session::CookieCodec;
use stickylb::store::{AffinityStore, MemoryStore};

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
    let mut text = String::from("[session]\nmax_entries = 20000000\nidle_timeout = \"1h\"\n");
    for i in 1..=3 {
        text.push_str(&format!("[[backend]]\nname = \"app{i}\"\naddress = \"127.0.0.1:{}\"\n", 9000 + i));
    }
    let cfg = config::parse(&text, "bench").expect("valid bench config");
    let pool = Pool::new(&cfg, None);
    let backends = pool.backends();
    println!("{:>12} {:>12} {:>14} {:>12}", "pins", "rss_MiB", "bytes_per_pin", "len_sweep_ms");
    for &n in sizes {
        let before = rss_bytes();
        let store = MemoryStore::new(&cfg.session);
        for i in 0..n {
            store.pin_sync(&CookieCodec::new_id(), &backends[i as usize % backends.len()]);
        }
        let live = store.len();
        // `len` sweeps expired pins (at most every 1/16 s); the admin API and metrics call it.
        std::thread::sleep(std::time::Duration::from_millis(100));
        let t = std::time::Instant::now();
        store.len();
        let sweep = t.elapsed();
        let grown = rss_bytes().saturating_sub(before);
        println!(
            "{:>12} {:>12.1} {:>14} {:>12.1}",
            live,
            grown as f64 / (1 << 20) as f64,
            grown / live.max(1),
            sweep.as_secs_f64() * 1000.0
        );
        drop(store);
    }
}
