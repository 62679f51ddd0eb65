//! The server's own HTTP/1.1 path against hyper's server, on the same bytes.
//!
//! A client connection starts on stickylb's own path (requests without a body); its first
//! request with a body (here `Content-Length: 0`) hands it to hyper's server for good. So the
//! same request can be sent both ways: on a fresh connection (own path) and on one that began
//! with such a request (hyper). A scripted backend answers both alike, and the client must read
//! the same bytes from both — status line, fields in order, framing, body, trailers, closing —
//! but for the `Date` value. Responses are generated (every framing, HEAD, 204/304, HTTP/1.0,
//! reason phrases, trailers, bodies past the own path's write gathering) from a fixed seed, so
//! a failure reproduces; requests are mutated the same way (the own path must refuse nothing
//! hyper serves and serve nothing hyper refuses).
//!
//! In every session mode but SOAP, the own path passes a plain response head through as the
//! backend wrote it (its names' case, its order) where hyper's server writes the fields from a
//! map (lower-case, grouped by name): there the two are compared as a client reads fields. In
//! SOAP mode both write from a map, and are compared byte for byte.

mod common;

use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the backend answers to every request but its health probes.
#[derive(Clone, Default)]
struct Script {
    reply: Vec<u8>,
    /// Close the connection after the reply.
    close: bool,
}

/// A backend answering each request head with the current script; `conns` counts the
/// connections that carried a request other than a health probe.
async fn scripted(script: Arc<Mutex<Script>>, conns: Arc<AtomicUsize>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (script, conns) = (script.clone(), conns.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut counted = false;
                loop {
                    let Some(end) = read_head(&mut s, &mut buf).await else { return };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end);
                    let Script { reply, close } = if head.starts_with("GET /health") {
                        Script { reply: b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec(), close: false }
                    } else {
                        if !std::mem::replace(&mut counted, true) {
                            conns.fetch_add(1, Ordering::SeqCst);
                        }
                        script.lock().unwrap().clone()
                    };
                    if s.write_all(&reply).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// The end of the next request head in `buf` (reading more as needed); `None` at EOF.
async fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(i + 4);
        }
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Send `bytes` on a new connection and read until the balancer closes it: the responses as
/// [`decoded`].
async fn exchange(lb: SocketAddr, bytes: &[u8], head: bool, as_read: bool) -> Vec<u8> {
    decoded(&exchange_raw(lb, bytes).await, head, as_read)
}

/// Send `bytes` on a new connection and read until the balancer closes it.
async fn exchange_raw(lb: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(lb).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(secs(10), s.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the balancer did not close after {:?}", String::from_utf8_lossy(bytes));
    got
}

fn find(bytes: &[u8], what: &[u8]) -> Option<usize> {
    bytes.windows(what.len()).position(|w| w == what)
}

/// The responses in `bytes`: each head as sent (the `Date` value blanked; `as_read`: its
/// fields as a client reads them, see [`as_read`]), then its body with chunked framing taken
/// off (where a body's chunks end depends on when its pieces arrived, not on the server) —
/// the chunk data, the last chunk's trailer lines — and whatever follows.
fn decoded(mut bytes: &[u8], head: bool, as_read: bool) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = find(bytes, b"\r\n\r\n") {
        let text = String::from_utf8_lossy(&bytes[..end + 4]).into_owned();
        bytes = &bytes[end + 4..];
        let lower = text.to_ascii_lowercase();
        let status: u16 = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        let field = |name: &str| lower.split("\r\n").find_map(|l| l.strip_prefix(name)).map(str::trim);
        let blanked = blank_dates(&text);
        out.extend_from_slice(if as_read { self::as_read(&blanked) } else { blanked }.as_bytes());
        if head || matches!(status, 204 | 304) {
            continue;
        }
        if field("transfer-encoding:").is_some_and(|v| v.ends_with("chunked")) {
            out.extend_from_slice(b"[chunked]");
            while let Some(line_end) = find(bytes, b"\r\n") {
                let size = usize::from_str_radix(&String::from_utf8_lossy(&bytes[..line_end]), 16).unwrap_or(0);
                bytes = &bytes[line_end + 2..];
                if size == 0 {
                    let end = if bytes.starts_with(b"\r\n") {
                        2
                    } else {
                        find(bytes, b"\r\n\r\n").map_or(bytes.len(), |e| e + 4)
                    };
                    out.extend_from_slice(b"[trailers]");
                    out.extend_from_slice(&bytes[..end]);
                    bytes = &bytes[end..];
                    break;
                }
                let take = size.min(bytes.len());
                out.extend_from_slice(&bytes[..take]);
                bytes = &bytes[(take + 2).min(bytes.len())..];
            }
        } else if let Some(n) = field("content-length:").and_then(|v| v.parse::<usize>().ok()) {
            out.extend_from_slice(&bytes[..n.min(bytes.len())]);
            bytes = &bytes[n.min(bytes.len())..];
        } else {
            out.extend_from_slice(bytes);
            bytes = &[];
        }
    }
    out.extend_from_slice(b"[rest]");
    out.extend_from_slice(bytes);
    out
}

/// A head's fields as a client reads them: names in lower case, the values of a name together
/// in order, the names in the order they first came (as a map holds them).
fn as_read(head: &str) -> String {
    let mut lines = head.split("\r\n");
    let mut out = format!("{}\r\n", lines.next().unwrap_or(""));
    let mut fields: Vec<(String, Vec<&str>)> = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        let name = name.to_ascii_lowercase();
        match fields.iter_mut().find(|(n, _)| *n == name) {
            Some((_, values)) => values.push(value.trim()),
            None => fields.push((name, vec![value.trim()])),
        }
    }
    for (name, values) in fields {
        values.iter().for_each(|v| out.push_str(&format!("{name}: {v}\r\n")));
    }
    out + "\r\n"
}

fn blank_dates(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("\r\ndate: ") {
        let end = i + 8 + rest[i + 8..].find("\r\n").unwrap_or(rest.len() - i - 8);
        out.push_str(&rest[..i + 8]);
        out.push('*');
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// `rest` after a first request on the own path, and after one that hands the connection to
/// hyper's server (the same request with `Content-Length: 0`): what the client reads of each.
/// `as_read`: compared as a client reads fields (a passed-through head keeps the backend's
/// case and order).
async fn both(lb: SocketAddr, method: &str, rest: &[u8], as_read: bool) -> (Vec<u8>, Vec<u8>) {
    let first = format!("{method} /first HTTP/1.1\r\nhost: t\r\n");
    let own = [format!("{first}\r\n").as_bytes(), rest].concat();
    let handed = [format!("{first}content-length: 0\r\n\r\n").as_bytes(), rest].concat();
    let head = method == "HEAD";
    (exchange(lb, &own, head, as_read).await, exchange(lb, &handed, head, as_read).await)
}

/// A balancer on a scripted backend in session `mode` (learn, SOAP or none: no new session's
/// cookie that would tell the two paths apart).
async fn setup_in(mode: &str) -> (Arc<Mutex<Script>>, Balancer, Arc<AtomicUsize>) {
    let script = Arc::new(Mutex::new(Script::default()));
    let conns = Arc::new(AtomicUsize::new(0));
    let addr = scripted(script.clone(), conns.clone()).await;
    let lb = balancer(&[])
        .backend_at("s1", &addr.to_string())
        .set("session.mode", mode)
        .set("session.cookie", "JSESSIONID")
        .set("server.header_read_timeout", "3s")
        .set("server.request_timeout", "5s")
        // Refused responses must not eject the only backend between the two connections.
        .set("passive.consecutive_failures", 1_000_000)
        .start()
        .await;
    (script, lb, conns)
}

/// SOAP mode: both paths write the response from a map (SOAP reads the response's body), so
/// the own path's encoder is held to hyper's byte for byte.
async fn setup() -> (Arc<Mutex<Script>>, Balancer) {
    let (script, lb, _) = setup_in("soap").await;
    (script, lb)
}

/// Equal, or a panic showing where they part (the bodies can be long).
fn same(own: &[u8], hyper: &[u8], what: &str, reply: &[u8]) {
    if own == hyper {
        return;
    }
    let (own, hyper) = (&*String::from_utf8_lossy(own), &*String::from_utf8_lossy(hyper));
    let at = own.chars().zip(hyper.chars()).take_while(|(a, b)| a == b).count();
    let around = |s: &str| s.chars().skip(at.saturating_sub(120)).take(240).collect::<String>();
    let head = String::from_utf8_lossy(&reply[..reply.len().min(400)]).into_owned();
    panic!(
        "{what}: the own path and hyper's differ at char {at} (lengths {} / {})\nown:   {:?}\nhyper: {:?}\nthe backend sent (start): {head:?}",
        own.len(),
        hyper.len(),
        around(own),
        around(hyper)
    );
}

/// One generated backend response.
struct Case {
    text: Vec<u8>,
    /// The backend closes after it.
    close: bool,
    head: bool,
}

fn token(rng: &mut StdRng) -> String {
    let n = rng.gen_range(1..10);
    let name = format!("x-{}", (0..n).map(|_| rng.gen_range(b'a'..=b'z') as char).collect::<String>());
    if rng.gen_bool(0.3) {
        name.to_ascii_uppercase()
    } else {
        name
    }
}

fn text(rng: &mut StdRng, max: usize) -> String {
    let n = rng.gen_range(0..=max);
    (0..n).map(|_| rng.gen_range(b' '..=b'~') as char).collect::<String>().trim().to_owned()
}

fn case(rng: &mut StdRng) -> Case {
    let status = [200u16, 201, 204, 206, 299, 304, 404, 500, 503][rng.gen_range(0..9)];
    let http10 = rng.gen_bool(0.15);
    let head = rng.gen_bool(0.15);
    let reason = if rng.gen_bool(0.3) { "Odd Reason".to_owned() } else { canonical(status) };
    let body_len = if rng.gen_bool(0.1) { rng.gen_range(60_000..150_000) } else { rng.gen_range(0..3000) };
    let body: Vec<u8> = (0..body_len).map(|_| rng.gen()).collect();
    let no_body = head || matches!(status, 204 | 304);
    let mut t = format!("HTTP/1.{} {status} {reason}\r\n", if http10 { 0 } else { 1 }).into_bytes();
    for _ in 0..rng.gen_range(0..5) {
        t.extend_from_slice(format!("{}: {}{}\r\n", token(rng), rng.gen_range('a'..='z'), text(rng, 30)).as_bytes());
    }
    if rng.gen_bool(0.3) {
        t.extend_from_slice(b"Set-Cookie: JSESSIONID=abc.node1; Path=/\r\nX-Between: 1\r\nset-cookie: other=1\r\n");
    }
    let framing = if http10 { rng.gen_range(0..2) * 2 } else { rng.gen_range(0..3) };
    let mut close = false;
    match framing {
        0 => t.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes()),
        1 => {
            let trailers = rng.gen_bool(0.5);
            if trailers {
                t.extend_from_slice(b"trailer: x-sum, content-type\r\n");
            }
            t.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
            if !no_body {
                for piece in body.chunks(rng.gen_range(1..5000)) {
                    t.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                    t.extend_from_slice(piece);
                    t.extend_from_slice(b"\r\n");
                }
                t.extend_from_slice(b"0\r\n");
                if trailers {
                    t.extend_from_slice(b"x-sum: 42\r\ncontent-type: text/x\r\nx-unannounced: 1\r\n");
                }
                t.extend_from_slice(b"\r\n");
            }
        }
        _ => {
            t.extend_from_slice(b"\r\n");
            close = !no_body;
        }
    }
    if !no_body && framing != 1 {
        t.extend_from_slice(&body);
    }
    Case { text: t, close, head }
}

fn canonical(status: u16) -> String {
    http::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("X").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_servers_send_the_same_bytes_for_generated_responses() {
    let (script, lb) = setup().await;
    generated(&script, &lb, false).await;
}

/// The same generated responses in modes whose own path passes plain heads through (learn
/// mode reading them for its cookie).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_servers_send_the_same_fields_for_generated_responses_passed_through() {
    for mode in ["learn", "none"] {
        let (script, lb, _) = setup_in(mode).await;
        generated(&script, &lb, true).await;
    }
}

async fn generated(script: &Mutex<Script>, lb: &Balancer, as_read: bool) {
    let mut rng = StdRng::seed_from_u64(0x5e1f);
    for i in 0..96 {
        let c = case(&mut rng);
        *script.lock().unwrap() = Script { reply: c.text.clone(), close: c.close };
        let method = if c.head { "HEAD" } else { "GET" };
        let te = if rng.gen_bool(0.5) { "te: trailers\r\n" } else { "" };
        let rest = format!(
            "{method} /b?q=1 HTTP/1.1\r\nhost: t\r\n{te}cookie: a=1\r\n\r\n{method} /c HTTP/1.1\r\nhost: t\r\n{te}connection: close\r\n\r\n"
        );
        let (own, hyper) = both(lb.addr(), method, rest.as_bytes(), as_read).await;
        assert!(own.starts_with(b"HTTP/1."), "case {i}: no response: {:?}", String::from_utf8_lossy(&own));
        same(&own, &hyper, &format!("case {i}"), &c.text);
    }
}

/// Backend responses the lean client refuses, or reads in its own way.
const HOSTILE: &[&[u8]] = &[
    b"HTTP/1.1 200 OK\r\ncontent-length: abc\r\n\r\nxx",
    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nxxx",
    b"HTTP/1.1 200 OK\r\ncontent-length: 2, 2\r\n\r\nxx",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n2\r\nxx\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nx-a: b\r\n folded\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 103 Early Hints\r\nlink: x\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
    b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\nconnection: upgrade\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nconnection: close, x-hop\r\nx-hop: 1\r\nkeep-alive: timeout=5\r\ncontent-length: 2\r\n\r\nok",
    b"garbage\r\n\r\n",
];

/// Bodies the backend cuts short or breaks after a good head: whether a client sees the head
/// and the first bytes before the connection closes, or nothing, depends on whether the
/// failure arrives before the gathered bytes go out — in either server alike.
const CUT: &[&[u8]] = &[
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nxxyy0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_servers_send_the_same_bytes_for_hostile_responses() {
    for (mode, as_read) in [("none", true), ("learn", true), ("soap", false)] {
        let (script, lb, _) = setup_in(mode).await;
        for (i, reply) in HOSTILE.iter().enumerate() {
            *script.lock().unwrap() = Script { reply: reply.to_vec(), close: true };
            let rest = b"GET /b HTTP/1.1\r\nhost: t\r\n\r\nGET /c HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n";
            let (own, hyper) = both(lb.addr(), "GET", rest, as_read).await;
            same(&own, &hyper, &format!("{mode} mode, hostile case {i}"), reply);
        }
    }
    let (script, lb) = setup().await;
    for (i, reply) in CUT.iter().enumerate() {
        *script.lock().unwrap() = Script { reply: reply.to_vec(), close: true };
        let (own, hyper) = both(lb.addr(), "GET", b"GET /b HTTP/1.1\r\nhost: t\r\n\r\n", false).await;
        for (path, got) in [("own", &own), ("hyper", &hyper)] {
            let text = String::from_utf8_lossy(got);
            // Nothing, or the head and what came of the body; never a complete response.
            let cut = text == "[rest]" || (text.starts_with("HTTP/1.1 200 OK\r\n") && !text.contains("[trailers]"));
            assert!(cut, "cut case {i}, {path}: {text:?}");
        }
    }
}

/// A request for mutating: every part of a head the own path reads.
const VALID: &[u8] = b"GET /p?x=1 HTTP/1.1\r\nHost: app.test\r\nCookie: a=1; JSESSIONID=abc.n1\r\nConnection: keep-alive\r\nTE: trailers\r\nAccept: */*\r\n\r\n";

fn mutate(rng: &mut StdRng) -> Vec<u8> {
    const BYTES: &[u8] = b"\r\n \t:,/?\x00\x7f\x80\xff\x01aZ0%";
    let mut req = VALID.to_vec();
    for _ in 0..rng.gen_range(1..4) {
        let at = rng.gen_range(0..req.len());
        let byte = if rng.gen_bool(0.7) { BYTES[rng.gen_range(0..BYTES.len())] } else { rng.gen() };
        match rng.gen_range(0..4) {
            0 => req[at] = byte,
            1 => drop(req.remove(at)),
            2 => req.insert(at, byte),
            _ => {
                // A line repeated, or a known field added.
                let extra: &[u8] = [&b"Host: other\r\n"[..], b"Connection: close\r\n", b"X-Forwarded-For: 1.2.3.4\r\n"]
                    [rng.gen_range(0..3)];
                let line_start = find(&req[16..], b"\r\n").map_or(16, |i| i + 18);
                req.splice(line_start..line_start, extra.iter().copied());
            }
        }
    }
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_servers_answer_mutated_requests_alike() {
    let (script, lb) = setup().await;
    *script.lock().unwrap() =
        Script { reply: b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(), close: false };
    let mut rng = StdRng::seed_from_u64(0xba5e);
    let mut served = 0;
    for i in 0..160 {
        let mut rest = mutate(&mut rng);
        rest.extend_from_slice(b"GET /c HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n");
        let (own, hyper) = both(lb.addr(), "GET", &rest, false).await;
        same(&own, &hyper, &format!("mutation {i} ({:?})", String::from_utf8_lossy(&rest)), b"");
        served += usize::from(own.windows(15).filter(|w| w == b"HTTP/1.1 200 OK").count() >= 2);
    }
    assert!(served > 40, "too few mutations were served ({served}): the test would not compare much");
}

/// In insert mode (the default) the own path writes a plain backend head as the backend wrote
/// it — names' case, order, repeated fields apart — and adds the session's cookie after it;
/// hyper's server (a connection that began with a body) writes the same fields from a map.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_head_reaches_the_client_as_the_backend_wrote_it() {
    let (script, lb, _) = setup_in("insert").await;
    let fields = "Server: Test/1.0\r\nSet-Cookie: a=1\r\nX-Mixed-Case: 2\r\nset-cookie: b=2\r\nContent-Length: 2\r\n";
    let reply = format!("HTTP/1.1 200 OK\r\n{fields}Connection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\nok");
    *script.lock().unwrap() = Script { reply: reply.into_bytes(), close: false };
    let own = exchange_raw(lb.addr(), b"GET / HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n").await;
    let own = String::from_utf8_lossy(&own).into_owned();
    // The setup names the cookie JSESSIONID.
    assert!(own.starts_with(&format!("HTTP/1.1 200 OK\r\n{fields}set-cookie: JSESSIONID=")), "{own:?}");
    assert!(!own.to_ascii_lowercase().contains("keep-alive"), "this hop's own fields stay out: {own:?}");
    assert!(own.contains("\r\nconnection: close\r\n") && own.ends_with("\r\n\r\nok"), "{own:?}");
    let handed = b"POST / HTTP/1.1\r\nhost: t\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
    let hyper = String::from_utf8_lossy(&exchange_raw(lb.addr(), handed).await).into_owned();
    assert!(
        hyper.starts_with("HTTP/1.1 200 OK\r\nserver: Test/1.0\r\nset-cookie: a=1\r\nset-cookie: b=2\r\n"),
        "{hyper:?}"
    );
}

/// A passed-through head lives in the backend connection until it is written; a response
/// without a body (HEAD, 204, 304, an empty one) still gives the connection back to the pool
/// after that: one client connection's requests use one backend connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_without_a_body_passed_through_keep_their_backend_connection() {
    let (script, lb, conns) = setup_in("none").await;
    for (reply, method) in [
        ("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", "GET"),
        ("HTTP/1.1 204 No Content\r\nx-a: 1\r\n\r\n", "GET"),
        ("HTTP/1.1 304 Not Modified\r\netag: \"x\"\r\n\r\n", "GET"),
        ("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", "HEAD"),
    ] {
        *script.lock().unwrap() = Script { reply: reply.as_bytes().to_vec(), close: false };
        let before = conns.load(Ordering::SeqCst);
        let one = format!("{method} / HTTP/1.1\r\nhost: t\r\n\r\n");
        let last = format!("{method} / HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n");
        let got = exchange_raw(lb.addr(), format!("{one}{one}{one}{last}").as_bytes()).await;
        let got = String::from_utf8_lossy(&got).into_owned();
        assert_eq!(got.matches("HTTP/1.1 ").count(), 4, "{got:?}");
        assert!(conns.load(Ordering::SeqCst) - before <= 1, "{reply:?} to {method}: a backend connection per request");
    }
}
