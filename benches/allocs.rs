//! Heap allocations per proxied request: a counting global allocator (atomic counters of
//! allocations and bytes, around the system allocator) while keep-alive requests go through an
//! in-process balancer (`stickylb::launch`, one worker, memory store, insert mode, health
//! probes off, no admin listener, no log subscriber) to in-process loopback backends.
//!
//! The backends (raw TCP, one thread per connection, `200` with a `backend-N` body) and the
//! client (raw TCP writing `GET / HTTP/1.1`) work in fixed buffers and allocate nothing per
//! request; the `direct` row (the same client straight to a backend, measured the same way)
//! shows it, and is subtracted from the balancer rows anyway. Counts are taken between two
//! snapshots around N requests on one warmed-up connection (the balancer's upstream connection
//! already pooled), so what is left is the balancer's work per request, plus whatever its
//! background tasks happened to allocate meanwhile (amortised over N).
//!
//! Rows: `pinned` sends the STICKYLB cookie of a first response (table lookup + HMAC check);
//! `new-session` sends no cookie (a new session, a pin and a `Set-Cookie` per request).
//! `realloc` counts as one allocation of its new size.
//!
//! `cargo bench --bench allocs` runs 50,000 requests per row; under `cargo test --all-targets`
//! (no `--bench` flag) 200, and the run fails if a row allocates more than 200 times per
//! request or answers wrong.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc;
use std::time::Instant;

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; the counters only observe.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(layout.size() as u64, Relaxed);
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(layout.size() as u64, Relaxed);
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(new_size as u64, Relaxed);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn snapshot() -> (u64, u64) {
    (ALLOCS.load(Relaxed), BYTES.load(Relaxed))
}

const BUF: usize = 16 * 1024;
const HEAD_END: &[u8] = b"\r\n\r\n";
const LIMIT_PER_REQUEST: f64 = 200.0;

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A keep-alive HTTP/1.1 backend on a free loopback port answering every request (bodiless, as
/// the balancer forwards a GET) with `200` and `body`; no allocation per request.
fn backend(body: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a backend");
    let addr = listener.local_addr().expect("backend address");
    let response: &'static [u8] =
        format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}", body.len())
            .leak()
            .as_bytes();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || serve(conn, response));
        }
    });
    addr
}

fn serve(mut conn: TcpStream, response: &[u8]) {
    let _ = conn.set_nodelay(true);
    let mut buf = [0u8; BUF];
    let mut len = 0;
    loop {
        while let Some(end) = find(&buf[..len], HEAD_END) {
            if conn.write_all(response).is_err() {
                return;
            }
            buf.copy_within(end + HEAD_END.len()..len, 0);
            len -= end + HEAD_END.len();
        }
        match conn.read(&mut buf[len..]) {
            Ok(0) | Err(_) => return,
            Ok(n) => len += n,
        }
    }
}

/// One response read into `buf`: its status, whether it set a cookie, and its body's range.
struct Response {
    status: u16,
    sets_cookie: bool,
    body: std::ops::Range<usize>,
}

/// Writes `request` and reads one response with a `Content-Length` into `buf`; no allocation.
fn exchange(conn: &mut TcpStream, request: &[u8], buf: &mut [u8]) -> Response {
    conn.write_all(request).expect("write a request");
    let mut len = 0;
    let head = loop {
        if let Some(end) = find(&buf[..len], HEAD_END) {
            break end;
        }
        let n = conn.read(&mut buf[len..]).expect("read a response");
        assert!(n > 0, "the connection closed before a response");
        len += n;
    };
    let status = std::str::from_utf8(&buf[9..12]).ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    let (mut length, mut sets_cookie) = (None, false);
    for line in buf[..head].split(|&b| b == b'\n').skip(1) {
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"content-length") {
            length = std::str::from_utf8(value).ok().and_then(|v| v.parse::<usize>().ok());
        } else if name.eq_ignore_ascii_case(b"set-cookie") {
            sets_cookie = true;
        }
    }
    let start = head + HEAD_END.len();
    let end = start + length.expect("a Content-Length response");
    while len < end {
        let n = conn.read(&mut buf[len..end]).expect("read a body");
        assert!(n > 0, "the connection closed in a body");
        len += n;
    }
    Response { status, sets_cookie, body: start..end }
}

/// The `NAME=VALUE` of the first `Set-Cookie` of one answer to `GET /` (allocates: setup only).
fn first_cookie(addr: SocketAddr) -> String {
    let mut conn = TcpStream::connect(addr).expect("connect to the balancer");
    let mut buf = [0u8; BUF];
    let r = exchange(&mut conn, b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n", &mut buf);
    assert_eq!(r.status, 200);
    let head = String::from_utf8_lossy(&buf[..r.body.start]).into_owned();
    let line = head.lines().find(|l| l.to_ascii_lowercase().starts_with("set-cookie:")).expect("a Set-Cookie");
    line["set-cookie:".len()..].trim().split(';').next().expect("NAME=VALUE").to_string()
}

/// The balancer on a thread of its own (a current-thread runtime, as `main` runs worker 0).
struct Balancer {
    addr: SocketAddr,
    trigger: stickylb::shutdown::Trigger,
    kill: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Balancer {
    fn start(backends: &[SocketAddr]) -> Balancer {
        let mut text = String::from(
            "[server]\nlisten = \"127.0.0.1:0\"\nthreads = 1\n\
             [session]\nmode = \"insert\"\ncookie = \"STICKYLB\"\n\
             secret = \"allocs-benchmark-secret-not-for-production-0123456789\"\n\
             [balance]\nalgorithm = \"round_robin\"\n[health]\nenabled = false\n\
             [admin]\nlisten = \"\"\n[log]\nlevel = \"warn\"\naccess_log = false\n",
        );
        for (i, addr) in backends.iter().enumerate() {
            text.push_str(&format!("[[backend]]\nname = \"s{}\"\naddress = \"{addr}\"\n", i + 1));
        }
        let config = stickylb::config::parse(&text, "allocs")
            .unwrap_or_else(|e| panic!("invalid bench config: {}", e.messages().join("\n")));
        let (trigger, shutdown) = stickylb::shutdown::Shutdown::new();
        let (kill, killed) = tokio::sync::oneshot::channel::<()>();
        let (ready, addr) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                let running = stickylb::launch(config, None, shutdown).expect("launch the balancer");
                ready.send(running.addrs[0]).expect("report the address");
                tokio::select! {
                    _ = running.wait() => {}
                    _ = killed => {}
                }
            });
            runtime.shutdown_background();
        });
        let addr = addr.recv().expect("the balancer started");
        Balancer { addr, trigger, kill: Some(kill), thread: Some(thread) }
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.trigger.stop();
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What one row measured: allocations and bytes per request, requests per second.
struct Row {
    allocs: f64,
    bytes: f64,
    rps: f64,
}

/// `n` requests (after `warm` unmeasured ones) on one connection to `addr`; `check` sees each
/// response (and the body's bytes) and must not allocate.
fn measure(addr: SocketAddr, request: &[u8], warm: u64, n: u64, check: impl Fn(&Response, &[u8])) -> Row {
    let mut conn = TcpStream::connect(addr).expect("connect");
    conn.set_nodelay(true).expect("TCP_NODELAY");
    let mut buf = [0u8; BUF];
    for _ in 0..warm {
        let r = exchange(&mut conn, request, &mut buf);
        check(&r, &buf[r.body.clone()]);
    }
    let (a0, b0) = snapshot();
    let t = Instant::now();
    for _ in 0..n {
        let r = exchange(&mut conn, request, &mut buf);
        check(&r, &buf[r.body.clone()]);
    }
    let secs = t.elapsed().as_secs_f64();
    let (a1, b1) = snapshot();
    Row { allocs: (a1 - a0) as f64 / n as f64, bytes: (b1 - b0) as f64 / n as f64, rps: n as f64 / secs }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (warm, n) = if full { (2_000, 50_000) } else { (50, 200) };
    let backends = [backend("backend-1\n"), backend("backend-2\n"), backend("backend-3\n")];
    let balancer = Balancer::start(&backends);

    let plain = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n";
    let ok = |r: &Response, _: &[u8]| assert_eq!(r.status, 200, "a request failed");
    let direct = measure(backends[0], plain, warm, n, ok);

    let cookie = first_cookie(balancer.addr);
    let pinned_to = cookie.rsplit('~').next().expect("the cookie names its backend").to_string();
    let want = format!("backend-{}\n", pinned_to.trim_start_matches('s'));
    let pinned_request = format!("GET / HTTP/1.1\r\nHost: bench\r\nCookie: {cookie}\r\n\r\n");
    let pinned = measure(balancer.addr, pinned_request.as_bytes(), warm, n, |r, body| {
        assert_eq!(r.status, 200, "a pinned request failed");
        assert!(!r.sets_cookie, "a pinned request got a new cookie");
        assert_eq!(body, want.as_bytes(), "a pinned request left its backend");
    });
    let new_session = measure(balancer.addr, plain, warm, n, |r, _| {
        assert_eq!(r.status, 200, "a new-session request failed");
        assert!(r.sets_cookie, "a new session got no cookie");
    });
    drop(balancer);

    println!("allocations per request, {n} keep-alive requests per row (after {warm} unmeasured)");
    println!("{:<12} {:>12} {:>12} {:>10}   (net = row - direct)", "row", "allocs/req", "bytes/req", "req/s");
    let print = |name: &str, r: &Row| println!("{name:<12} {:>12.2} {:>12.0} {:>10.0}", r.allocs, r.bytes, r.rps);
    print("direct", &direct);
    for (name, row) in [("pinned", &pinned), ("new-session", &new_session)] {
        let net = Row { allocs: row.allocs - direct.allocs, bytes: row.bytes - direct.bytes, rps: row.rps };
        print(name, &net);
        assert!(
            net.allocs < LIMIT_PER_REQUEST,
            "{name}: {:.1} allocations per request, over the bound of {LIMIT_PER_REQUEST}",
            net.allocs
        );
    }
}
