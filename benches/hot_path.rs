//! Criterion benchmarks of the per-request hot path pieces: cookie parse + verify, affinity
//! table lookups at several sizes (1 and 2 threads), backend selection per algorithm, and
//! header rewriting.
//!
//! `cargo bench --bench hot_path` runs them all (the 10M-pin table needs ~0.4 GB and a while to
//! fill). Under `cargo test --all-targets` (no `--bench` flag) every benchmark runs once on
//! small tables so CI stays fast.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use http::{HeaderMap, HeaderValue, Uri};
use std::sync::Arc;
use stickylb::balance::Pool;
use stickylb::config::{self, Config};
use stickylb::proxy::headers;
use stickylb::session::{CookieCodec, Route, SessionPolicy};
use stickylb::store::MemoryStore;

const SECRET: &str = "bench-secret-0123456789abcdef0123456789abcdef";

fn full_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn config(algorithm: &str, max_entries: u64) -> Config {
    let mut text = format!(
        "[session]\nsecret = \"{SECRET}\"\nmax_entries = {max_entries}\n[balance]\nalgorithm = \"{algorithm}\"\n"
    );
    for i in 1..=3 {
        text.push_str(&format!("[[backend]]\nname = \"app{i}\"\naddress = \"127.0.0.1:{}\"\n", 9000 + i));
    }
    config::parse(&text, "bench").expect("valid bench config")
}

fn cookie(c: &mut Criterion) {
    let cfg = config("round_robin", 1000);
    let policy = SessionPolicy::new(&cfg.session, false);
    let codec = policy.codec.as_ref().expect("insert mode");
    let value = codec.signed_value(&CookieCodec::new_id());
    let route = Route { backend: "app2".into(), created_ms: 1_764_300_000_000 };
    let routed = codec.signed_route_value(&CookieCodec::new_id(), &route);
    let header = HeaderValue::from_str(&format!("lang=en; STICKYLB={routed}; theme=dark")).unwrap();
    let uri = Uri::from_static("/app/page");
    let mut g = c.benchmark_group("cookie");
    // The first cookie format (id only) and the current one (id, creation time, backend).
    g.bench_function("verify", |b| b.iter(|| codec.verify(black_box(&value))));
    g.bench_function("verify_with_route", |b| b.iter(|| codec.verify(black_box(&routed))));
    g.bench_function("extract_and_strip", |b| {
        b.iter(|| {
            let mut h = HeaderMap::new();
            h.insert(http::header::COOKIE, header.clone());
            policy.extract(black_box(&mut h), &uri)
        })
    });
    g.bench_function("sign_id_only", |b| b.iter(|| codec.signed_value(black_box(&value[44..]))));
    g.bench_function("sign_with_route", |b| b.iter(|| codec.signed_route_value(black_box(&value[44..]), &route)));
    g.bench_function("sign_new_session", |b| b.iter(|| codec.set_cookie(&CookieCodec::new_id(), &route)));
    g.finish();
}

/// SOAP mode's per-request work: the session key of a ~1 KB request envelope, and the
/// ServiceGroupId of a response envelope.
fn soap(c: &mut Criterion) {
    use stickylb::session::soap;
    let request = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="{}"><soapenv:Header><wsa:To xmlns:wsa="{}">http://127.0.0.1:8080/axis2/services/Echo</wsa:To><axis2:ServiceGroupId xmlns:axis2="{}">urn:uuid:0123456789abcdef0123456789abcdef</axis2:ServiceGroupId></soapenv:Header><soapenv:Body><m:echo xmlns:m="urn:app">{}</m:echo></soapenv:Body></soapenv:Envelope>"#,
        soap::SOAP11,
        soap::WSA,
        soap::AXIS2,
        "x".repeat(600)
    );
    let response = format!(
        r#"<soapenv:Envelope xmlns:soapenv="{}"><soapenv:Header><wsa:ReplyTo xmlns:wsa="{}"><wsa:Address>{}/anonymous</wsa:Address><wsa:ReferenceParameters><axis2:ServiceGroupId xmlns:axis2="{}">urn:uuid:0123456789abcdef</axis2:ServiceGroupId></wsa:ReferenceParameters></wsa:ReplyTo></soapenv:Header><soapenv:Body/></soapenv:Envelope>"#,
        soap::SOAP11,
        soap::WSA,
        soap::WSA,
        soap::AXIS2
    );
    let mut g = c.benchmark_group("soap");
    g.bench_function("request_key_1k_envelope", |b| b.iter(|| soap::request_key(black_box(request.as_bytes()))));
    g.bench_function("response_service_group", |b| {
        b.iter(|| soap::response_service_group(black_box(response.as_bytes())))
    });
    g.finish();
}

fn affinity(c: &mut Criterion) {
    // BENCH_MAX_PINS (e.g. 1000000) skips the larger tables.
    let max: u64 = std::env::var("BENCH_MAX_PINS").ok().and_then(|v| v.parse().ok()).unwrap_or(u64::MAX);
    let all: &[u64] = if full_run() { &[1_000, 100_000, 1_000_000, 10_000_000] } else { &[1_000] };
    let sizes: Vec<u64> = all.iter().copied().filter(|&n| n <= max).collect();
    let cfg = config("round_robin", 20_000_000);
    let pool = Pool::new(&cfg, None);
    let backends = pool.backends().to_vec();
    let mut g = c.benchmark_group("affinity_lookup");
    for &n in &sizes {
        let store = Arc::new(MemoryStore::new(&cfg.session));
        let keys: Vec<String> = (0..n).map(|_| CookieCodec::new_id()).collect();
        for (i, k) in keys.iter().enumerate() {
            store.pin_sync(k, &backends[i % backends.len()].name);
        }
        let probe: Vec<&String> = keys.iter().step_by((n as usize / 1024).max(1)).collect();
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(BenchmarkId::new("1_thread", n), &n, |b, _| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % probe.len();
                store.get_sync(black_box(probe[i]))
            })
        });
        // Two threads: this thread measures while another hammers the same table.
        g.bench_with_input(BenchmarkId::new("2_threads", n), &n, |b, _| {
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let other = {
                let (store, stop) = (store.clone(), stop.clone());
                let keys: Vec<String> = probe.iter().map(|k| k.to_string()).collect();
                std::thread::spawn(move || {
                    let mut i = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        i = (i + 1) % keys.len();
                        black_box(store.get_sync(&keys[i]));
                    }
                })
            };
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % probe.len();
                store.get_sync(black_box(probe[i]))
            });
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let _ = other.join();
        });
    }
    g.finish();
}

fn selection(c: &mut Criterion) {
    let mut g = c.benchmark_group("select");
    for algorithm in ["round_robin", "least_connections", "random_two", "hash"] {
        let pool = Pool::new(&config(algorithm, 1000), None);
        let key = CookieCodec::new_id();
        g.bench_function(algorithm, |b| b.iter(|| pool.select(Some(black_box(&key)), &[])));
    }
    g.finish();
}

fn header_rewrite(c: &mut Criterion) {
    let mut base = HeaderMap::new();
    for (k, v) in [
        ("host", "app.example.com"),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36"),
        ("accept", "text/html,application/xhtml+xml"),
        ("accept-language", "en-US,en;q=0.9"),
        ("connection", "keep-alive"),
        ("cookie", "lang=en; theme=dark"),
    ] {
        base.insert(k, HeaderValue::from_static(v));
    }
    let client: std::net::SocketAddr = "127.0.0.1:50000".parse().unwrap();
    c.bench_function("headers/request_rewrite", |b| {
        b.iter(|| {
            let mut h = base.clone();
            let seen = headers::Seen::of(&h);
            let _ = headers::strip_hop_by_hop(&mut h);
            stickylb::proxy::forwarding::add_forwarded(&mut h, &seen, client, "http");
            h
        })
    });
}

criterion_group!(benches, cookie, soap, affinity, selection, header_rewrite);
criterion_main!(benches);
