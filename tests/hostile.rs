//! Hostile input: malformed, mutated and hostile requests (a seeded random mix, so a failure
//! reproduces) are answered with an error status or a closed connection, never a hang or a
//! crash, and the balancer keeps serving ordinary users throughout.

mod common;

use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Requests that are wrong in the ways that matter to a proxy.
const NASTY: &[&[u8]] = &[
    b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 7\r\n\r\nabc",
    b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\nx\r\n",
    b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked, identity\r\n\r\n0\r\n\r\n",
    b"GET /\x00\x01 HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET / HTTP/9.9\r\nHost: t\r\n\r\n",
    b"G\xc3\x89T / HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: t\r\nBad Header: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: t\r\n folded: continuation\r\n\r\n",
    b"GET / HTTP/1.1\nHost: t\n\n",
    b"\r\n\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: t\r\nCookie: STICKYLB=\xff\xfe; STICKYLB===\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: t\r\nConnection: upgrade\r\nUpgrade: \r\n\r\n",
    b"CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n",
    b"GET http://evil.test/ HTTP/1.1\r\nHost: t\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
];

/// A valid request, for mutating.
const VALID: &[u8] =
    b"POST /form?a=1 HTTP/1.1\r\nHost: app.test\r\nCookie: a=1; STICKYLB=x\r\nContent-Length: 4\r\n\r\nbody";

fn mutate(rng: &mut StdRng) -> Vec<u8> {
    let mut req = VALID.to_vec();
    for _ in 0..rng.gen_range(1..6) {
        let i = rng.gen_range(0..req.len());
        match rng.gen_range(0..4) {
            0 => req[i] = rng.gen(),
            1 => {
                req.remove(i);
            }
            2 => req.insert(i, *[b'\r', b'\n', b':', b' ', 0, b';', b'"'].get(rng.gen_range(0..7)).unwrap()),
            _ => req.splice(i..i, std::iter::repeat_n(b'a', rng.gen_range(1..3000))).for_each(drop),
        }
    }
    req
}

fn random_bytes(rng: &mut StdRng) -> Vec<u8> {
    (0..rng.gen_range(1..2048)).map(|_| rng.gen()).collect()
}

/// Send `data`, then read until the balancer answers and closes or goes quiet. Returns the
/// status of the first response, if one came. Panics if the connection hangs.
async fn throw(addr: std::net::SocketAddr, data: &[u8]) -> Option<u16> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    let _ = s.write_all(data).await;
    let _ = s.shutdown().await; // EOF: nothing more is coming
    let mut got = Vec::new();
    let read = tokio::time::timeout(secs(15), s.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "no answer and no close within 15 s for {:?}", String::from_utf8_lossy(data));
    let text = String::from_utf8_lossy(&got);
    text.strip_prefix("HTTP/1.1 ").and_then(|r| r.get(..3)).and_then(|c| c.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_random_requests_get_errors_or_closes_and_users_are_unaffected() {
    let b = TestBackend::start("app1").await;
    let mut lb = balancer(&[&b])
        .set("server.max_header_bytes", 4096)
        .set("server.header_read_timeout", "2s")
        .start_binary()
        .await;
    let addr = lb.addr();
    let user = User::new();
    let mut rng = StdRng::seed_from_u64(0x5EED_0001);
    let mut statuses = std::collections::BTreeMap::new();
    for i in 0..300 {
        let data = match i % 3 {
            0 => NASTY[(i / 3) % NASTY.len()].to_vec(),
            1 => mutate(&mut rng),
            _ => random_bytes(&mut rng),
        };
        if let Some(status) = throw(addr, &data).await {
            assert!(
                status == 101 || (200..600).contains(&status),
                "odd status {status} for {:?}",
                String::from_utf8_lossy(&data)
            );
            *statuses.entry(status).or_insert(0) += 1;
            // The only backend is up: a 5xx would blame it for the client's bytes.
            assert!(status < 500, "{status} for {:?}", String::from_utf8_lossy(&data));
        }
        if i % 25 == 0 {
            let r = user.get(&lb.url(&format!("/ordinary/{i}"))).await;
            assert_eq!(r.status, 200, "an ordinary user after {i} hostile requests: {}", r.describe());
            assert!(lb.is_running(), "stickylb exited after {:?}", String::from_utf8_lossy(&data));
        }
    }
    eprintln!("statuses of the answered hostile requests: {statuses:?}");
    assert!(statuses.keys().any(|&s| s == 400), "no 400 among {statuses:?}");
    assert!(lb.is_running(), "stickylb exited");
    let log = lb.log_tail(400);
    assert!(!log.contains("panicked"), "a panic in the log:\n{log}");
    let r = user.get(&lb.url("/still-here")).await;
    assert_eq!(r.status, 200);
}
