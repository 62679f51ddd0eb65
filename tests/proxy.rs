//! Foundation: proxying, forwarded and hop-by-hop headers, streaming bodies, keep-alive,
//! error statuses, `stickylb check`, graceful SIGTERM, body limits. Real sockets; the real
//! binary where the process is the point (SIGTERM, `check`).

mod common;

use common::*;
use tokio::net::TcpStream;

const MB10: usize = 10 * 1024 * 1024;

/// A plain balancer (no stickiness) in front of `backends`.
fn plain(backends: &[&TestBackend]) -> BalancerBuilder {
    balancer(backends).set("session.mode", "none")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_reaches_a_backend_and_its_answer_comes_back() {
    let bs = TestBackend::start_many(&["app1", "app2"]).await;
    let lb = plain(&[&bs[0], &bs[1]]).start().await;
    let c = plain_client();

    let r = get(&c, &lb.url("/hello?x=1")).await;
    assert_eq!(r.status, 200, "{}", r.describe());
    let j = r.json();
    assert!(
        matches!(j["backend"].as_str(), Some("app1") | Some("app2")),
        "answer not from a backend: {}",
        r.describe()
    );
    assert_eq!(j["path"], "/hello?x=1", "path/query not forwarded as sent");
    assert_eq!(j["method"], "GET");

    // The backend's own status and body pass through untouched.
    let r = get(&c, &lb.url("/status?code=418")).await;
    assert_eq!(r.status, 418, "backend status not passed through: {}", r.describe());
    assert_eq!(r.json()["path"], "/status?code=418", "backend body not passed through");
    assert_eq!(bs[0].requests() + bs[1].requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_request_bodies_arrive_byte_identical() {
    let b = TestBackend::start("app1").await;
    let lb = plain(&[&b]).start().await;

    // 10 MB with Content-Length.
    let data = pattern_bytes(MB10, 7);
    let want = sha256_hex(&data);
    let resp = plain_client().post(lb.url("/upload")).body(data).send().await.expect("POST 10 MB");
    let r = Reply::read(resp).await.expect("read answer");
    assert_eq!(r.status, 200, "{}", r.describe());
    let j = r.json();
    assert_eq!(j["body_len"], MB10, "backend got a different length");
    assert_eq!(j["body_sha256"], want.as_str(), "backend got different bytes");

    // 1 MB chunked (no Content-Length): streamed through as well.
    let data = pattern_bytes(1024 * 1024, 11);
    let mut req = b"POST /chunked HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for chunk in data.chunks(100_000) {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let mut conn = RawConn::connect(lb.addr()).await;
    conn.send(&req).await;
    let r = conn.response().await;
    assert_eq!(r.status, 200, "chunked POST: {}", r.text());
    assert_eq!(r.json()["body_len"], data.len(), "chunked body length");
    assert_eq!(r.json()["body_sha256"], sha256_hex(&data).as_str(), "chunked body bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_response_streams_back_byte_identical() {
    let b = TestBackend::start("app1").await;
    let lb = plain(&[&b]).start().await;
    let r = get(&plain_client(), &lb.url(&format!("/big?bytes={MB10}"))).await;
    assert_eq!(r.status, 200, "status {}", r.status);
    assert_eq!(r.body.len(), MB10, "response length");
    assert_eq!(sha256_hex(&r.body), sha256_hex(&big_bytes(MB10)), "response bytes differ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_are_added_and_hop_by_hop_headers_removed() {
    let b = TestBackend::start("app1").await;
    let lb = plain(&[&b]).start().await;

    let host = "app.example.test:8443";
    let mut conn = RawConn::connect(lb.addr()).await;
    conn.send(
        format!(
            "GET /fwd HTTP/1.1\r\nHost: {host}\r\nConnection: keep-alive, X-Foo\r\nX-Foo: 1\r\n\
             Keep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: x\r\n\
             X-Normal: kept\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    let r = conn.response().await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = b.last_seen().expect("backend saw the request");

    let xff = seen.header("x-forwarded-for").unwrap_or_default();
    assert!(xff.contains("127.0.0.1"), "X-Forwarded-For = {xff:?}");
    assert_eq!(
        seen.header("x-forwarded-proto").map(|v| v.to_ascii_lowercase()),
        Some("http".to_string()),
        "X-Forwarded-Proto"
    );
    let fwd = seen.header("forwarded").unwrap_or_default().to_ascii_lowercase();
    assert!(fwd.contains("for=") && fwd.contains("127.0.0.1"), "Forwarded = {fwd:?}");
    assert_eq!(seen.header("host").as_deref(), Some(host), "Host not preserved");
    assert_eq!(seen.header("x-forwarded-host").as_deref(), Some(host), "X-Forwarded-Host");
    assert_eq!(seen.header("x-normal").as_deref(), Some("kept"), "an end-to-end header was lost");
    for h in ["connection", "keep-alive", "x-foo", "te", "proxy-authorization"] {
        assert!(seen.header(h).is_none(), "hop-by-hop request header {h}: {:?} reached the backend", seen.header(h));
    }
}

/// A request without a body (written by the lean upstream client) and one with a body
/// (through hyper's client) carry the same forwarding fields, each once: the client's own
/// claims replaced or appended to, never doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_with_and_without_a_body_carry_the_same_forwarding_fields() {
    let b = TestBackend::start("app1").await;
    let lb = plain(&[&b]).start().await;
    let claims = "X-Forwarded-For: 203.0.113.7\r\nForwarded: for=203.0.113.7\r\nX-Forwarded-Proto: https\r\n\
                  X-Forwarded-Host: spoofed.example\r\n";
    let mut conn = RawConn::connect(lb.addr()).await;
    let mut fields = Vec::new();
    for head in [
        format!("GET /fwd HTTP/1.1\r\nHost: app.test\r\n{claims}\r\n"),
        format!("POST /fwd HTTP/1.1\r\nHost: app.test\r\n{claims}Content-Length: 5\r\n\r\nhello"),
    ] {
        conn.send(head.as_bytes()).await;
        let r = conn.response().await;
        assert_eq!(r.status, 200, "{}", r.text());
        let seen = b.last_seen().expect("backend saw the request");
        let named = ["x-forwarded-for", "forwarded", "x-forwarded-proto", "x-forwarded-host"].map(|n| seen.fields(n));
        fields.push((seen.method, named));
    }
    let expected = [
        vec!["203.0.113.7, 127.0.0.1".to_string()],
        vec!["for=203.0.113.7, for=127.0.0.1;host=\"app.test\";proto=http".to_string()],
        vec!["http".to_string()],
        vec!["app.test".to_string()],
    ];
    assert_eq!(fields, [("GET".to_string(), expected.clone()), ("POST".to_string(), expected)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_response_headers_do_not_reach_the_client() {
    let b = TestBackend::start("app1").await;
    let lb = plain(&[&b]).start().await;
    let req = b"GET /hop HTTP/1.1\r\nHost: t\r\n\r\n";

    // The backend really sends them (so the check below means something).
    let mut direct = RawConn::connect(format!("{HOST}:{}", b.port()).parse().unwrap()).await;
    direct.send(req).await;
    let d = direct.response().await;
    assert_eq!(d.header("x-bar").as_deref(), Some("1"), "test backend: {:?}", d.headers);
    assert!(d.header("keep-alive").is_some(), "test backend: {:?}", d.headers);

    let mut conn = RawConn::connect(lb.addr()).await;
    conn.send(req).await;
    let r = conn.response().await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-kept").as_deref(), Some("yes"), "end-to-end header lost");
    assert!(r.header("x-bar").is_none(), "X-Bar (named in Connection) leaked: {:?}", r.headers);
    assert!(r.header("keep-alive").is_none(), "Keep-Alive leaked: {:?}", r.headers);
    let connection = r.header("connection").unwrap_or_default().to_ascii_lowercase();
    assert!(!connection.contains("x-bar"), "backend's Connection header leaked: {connection:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_kept_alive_on_both_sides() {
    let b = TestBackend::start("app1").await;
    // No health probes, so every backend connection is one the proxy opened for requests.
    let lb = plain(&[&b]).set("health.enabled", false).start().await;

    let c = plain_client();
    for i in 0..100 {
        let r = get(&c, &lb.url(&format!("/ka/{i}"))).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.describe());
    }
    assert_eq!(b.requests(), 100);
    assert!(
        b.connections() <= 5,
        "100 sequential requests used {} backend connections (no upstream keep-alive)",
        b.connections()
    );

    // Client side: two requests on one connection are both answered.
    let mut conn = RawConn::connect(lb.addr()).await;
    for i in 0..2 {
        conn.send(format!("GET /raw/{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes()).await;
        let r = conn.response().await;
        assert_eq!(r.status, 200, "request {i} on one client connection: {}", r.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_not_listening_gives_502_with_a_text_body() {
    let dead = format!("{HOST}:{}", free_port());
    let lb =
        balancer(&[]).backend_at("ghost", &dead).set("session.mode", "none").set("health.enabled", false).start().await;
    let t0 = std::time::Instant::now();
    let r = get(&plain_client(), &lb.url("/nobody")).await;
    assert_eq!(r.status, 502, "{}", r.describe());
    assert!(!r.text().trim().is_empty(), "502 without a body");
    let ctype = r.header("content-type").unwrap_or_default();
    assert!(ctype.starts_with("text/plain"), "content-type {ctype:?}");
    assert!(t0.elapsed() < secs(5), "502 took {:?}", t0.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_backend_in_maintenance_gives_503() {
    let b = TestBackend::start("app1").await;
    let lb = plain(&[&b]).backend_set("app1", "state", "maint").start().await;
    let r = get(&plain_client(), &lb.url("/x")).await;
    assert_eq!(r.status, 503, "{}", r.describe());
    assert!(!r.text().trim().is_empty(), "503 without a body");
    let ctype = r.header("content-type").unwrap_or_default();
    assert!(ctype.starts_with("text/plain"), "content-type {ctype:?}");
    assert_eq!(b.requests(), 0, "a backend in maintenance got a request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_slower_than_request_timeout_gives_504() {
    let b = TestBackend::start("app1").await;
    let lb = plain(&[&b]).set("server.request_timeout", "300ms").start().await;
    let t0 = std::time::Instant::now();
    let r = get(&plain_client(), &lb.url("/slow?ms=2000")).await;
    let took = t0.elapsed();
    assert_eq!(r.status, 504, "{}", r.describe());
    assert!(!r.text().trim().is_empty(), "504 without a body");
    assert!(took < ms(1500), "504 only after {took:?} (timeout 300ms)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_larger_than_max_body_bytes_gives_413() {
    let b = TestBackend::start("app1").await;
    let lb = plain(&[&b]).set("server.max_body_bytes", 1024).start().await;
    let c = plain_client();

    let small = Reply::read(c.post(lb.url("/small")).body(vec![b'a'; 512]).send().await.unwrap()).await.unwrap();
    assert_eq!(small.status, 200, "512 bytes under a 1024 limit: {}", small.describe());

    let resp = c.post(lb.url("/big-upload")).body(vec![b'a'; 4096]).send().await.expect("POST 4096 bytes");
    let r = Reply::read(resp).await.expect("read answer");
    assert_eq!(r.status, 413, "{}", r.describe());
    assert_eq!(b.requests(), 1, "the oversized request reached the backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_inflight_request_refuses_new_ones_and_exits_0() {
    let b = TestBackend::start("app1").await;
    let mut lb = plain(&[&b]).set("server.shutdown_timeout", "10s").start_binary().await;
    let url = lb.url("/slow?ms=1500");
    let slow = tokio::spawn(async move { try_get(&plain_client(), &url).await });
    assert!(b.wait_inflight(1, secs(5)).await, "the slow request never reached the backend");

    lb.signal("TERM");
    let dl = Deadline::after(secs(1));
    let refused = loop {
        match tokio::time::timeout(ms(300), TcpStream::connect(lb.addr())).await {
            Ok(Err(_)) => break true,
            _ if dl.expired() => break false,
            _ => sleep_ms(20).await,
        }
    };
    assert!(refused, "new connections still accepted 1 s after SIGTERM");
    assert!(!slow.is_finished(), "the in-flight request ended before the refusal was observed");

    let r = tokio::time::timeout(secs(12), slow)
        .await
        .expect("in-flight request did not finish")
        .expect("task")
        .unwrap_or_else(|e| panic!("in-flight request failed after SIGTERM: {e}"));
    assert_eq!(r.status, 200, "in-flight request after SIGTERM: {}", r.describe());
    assert_eq!(r.backend().as_deref(), Some("app1"));

    let st = lb.wait_exit(secs(10)).await.expect("still running 10 s after SIGTERM");
    assert_eq!(st.code(), Some(0), "exit status after SIGTERM: {st}");
}

// ------------------------------------------------------------------------------ stickylb check

fn check(path: &std::path::Path) -> CliOutput {
    run_cli(&["check", "--config", path.to_str().unwrap()], secs(10))
}

/// Writes `lines` as a config and returns (path, 1-based line of the first line containing
/// `marker`).
fn config_with(dir: &std::path::Path, lines: &[&str], marker: &str) -> (std::path::PathBuf, usize) {
    let line = lines.iter().position(|l| l.contains(marker)).expect("marker in config") + 1;
    (write_file(dir, "bad.toml", &(lines.join("\n") + "\n")), line)
}

fn assert_rejected_at(out: &CliOutput, path: &std::path::Path, lines: &[usize]) {
    assert_eq!(out.code, Some(2), "exit code; stderr: {}", out.stderr);
    assert!(out.stderr.contains("error: "), "stderr: {}", out.stderr);
    let p = path.display().to_string();
    assert!(
        lines.iter().any(|l| out.stderr.contains(&format!("{p}:{l}:"))),
        "stderr does not point at {p}:{lines:?}: {}",
        out.stderr
    );
}

#[test]
fn check_accepts_the_example_config() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/stickylb.toml");
    assert!(path.is_file(), "{} is missing", path.display());
    let out = check(&path);
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    assert!(out.stdout.contains("config ok"), "stdout: {:?}", out.stdout);
}

#[test]
fn check_rejects_a_misspelled_key_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let (path, line) = config_with(
        dir.path(),
        &[
            "# one misspelled key",
            "[server]",
            "listen = \"127.0.0.1:18080\"",
            "shutdown_timeout = \"5s\"",
            "request_timout = \"5s\"",
            "",
            "[[backend]]",
            "name = \"app1\"",
            "address = \"127.0.0.1:18081\"",
        ],
        "request_timout",
    );
    let out = check(&path);
    assert_rejected_at(&out, &path, &[line]);
    assert!(out.stderr.contains("request_timout"), "stderr: {}", out.stderr);
}

#[test]
fn check_rejects_a_duplicate_backend_name_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let lines = [
        "[server]",
        "listen = \"127.0.0.1:18080\"",
        "",
        "[[backend]]",
        "name = \"app1\"",
        "address = \"127.0.0.1:18081\"",
        "",
        "[[backend]]",
        "name = \"app1\" # duplicate",
        "address = \"127.0.0.1:18082\"",
    ];
    let (path, line) = config_with(dir.path(), &lines, "# duplicate");
    let out = check(&path);
    // The duplicate `name` line, or the `[[backend]]` header right above it.
    assert_rejected_at(&out, &path, &[line, line - 1]);
}

#[test]
fn check_rejects_a_bad_duration_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let (path, line) = config_with(
        dir.path(),
        &[
            "[server]",
            "listen = \"127.0.0.1:18080\"",
            "",
            "[health]",
            "interval = \"2s\"",
            "timeout = \"5 parsecs\"",
            "",
            "[[backend]]",
            "name = \"app1\"",
            "address = \"127.0.0.1:18081\"",
        ],
        "parsecs",
    );
    let out = check(&path);
    assert_rejected_at(&out, &path, &[line]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodiless_answers_free_the_backend_connection_for_the_next_request() {
    let b = TestBackend::start("app1").await;
    let lb = plain(&[&b]).set("health.enabled", false).start().await;
    let c = plain_client();
    for i in 0..30 {
        let head = c.head(lb.url(&format!("/head/{i}"))).send().await.unwrap();
        assert_eq!(head.status(), 200, "HEAD {i}");
        let r = get(&c, &lb.url("/status?code=204")).await;
        assert_eq!(r.status, 204, "204 {i}");
    }
    assert_eq!(b.requests(), 60);
    assert!(b.connections() <= 5, "60 sequential bodiless answers used {} backend connections", b.connections());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_response_does_not_hurt_the_next_requests() {
    let b = TestBackend::start("app1").await;
    let lb = plain(&[&b]).set("health.enabled", false).start().await;
    for round in 0..3 {
        let mut conn = RawConn::connect(lb.addr()).await;
        conn.send(format!("GET /big?bytes={} HTTP/1.1\r\nHost: t\r\n\r\n", 64 * 1024 * 1024).as_bytes()).await;
        sleep_ms(50).await;
        drop(conn); // gone with most of the 64 MiB unread
        let c = plain_client();
        for i in 0..10 {
            let r = get(&c, &lb.url(&format!("/after/{round}/{i}"))).await;
            assert_eq!(r.status, 200, "round {round} request {i}: {}", r.describe());
        }
    }
    let deadline = Deadline::after(secs(5));
    while b.inflight() > 0 && !deadline.expired() {
        sleep_ms(20).await;
    }
    assert_eq!(b.inflight(), 0, "the abandoned responses were not cancelled upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_heads_over_max_header_bytes_get_431() {
    let b = TestBackend::start("app1").await;
    let lb = plain(&[&b]).set("server.max_header_bytes", 4096).start().await;
    let send = |size: usize| {
        let addr = lb.addr();
        async move {
            let mut conn = RawConn::connect(addr).await;
            let filler = "a".repeat(size);
            conn.send(format!("GET /h HTTP/1.1\r\nHost: t\r\nX-Filler: {filler}\r\n\r\n").as_bytes()).await;
            conn.response().await
        }
    };
    assert_eq!(send(3000).await.status, 200, "a head under the limit");
    let r = send(5000).await;
    assert_eq!(r.status, 431, "a head just over the limit: {}", r.text());
    assert!(r.header("content-type").unwrap_or_default().starts_with("text/plain"), "{:?}", r.headers);
    assert!(r.text().contains("431"), "body {:?}", r.text());
    assert_eq!(send(40_000).await.status, 431, "a head far over the limit");
    assert_eq!(b.requests(), 1, "an oversized head reached the backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_too_slow_to_send_its_head_is_disconnected_and_others_are_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let b = TestBackend::start("app1").await;
    let lb = plain(&[&b]).set("server.header_read_timeout", "500ms").start().await;
    let mut slow = tokio::net::TcpStream::connect(lb.addr()).await.unwrap();
    slow.write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\n").await.unwrap();
    let t0 = std::time::Instant::now();
    // Meanwhile an ordinary client is served.
    assert_eq!(get(&plain_client(), &lb.url("/normal")).await.status, 200);
    let mut buf = Vec::new();
    let read = tokio::time::timeout(secs(5), slow.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the slow client was not disconnected within 5 s");
    assert!(t0.elapsed() >= ms(400), "disconnected after {:?}, before header_read_timeout", t0.elapsed());
    assert_eq!(b.requests(), 1, "the incomplete request reached the backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_max_connections_every_new_connection_is_served_when_a_slot_frees() {
    let b = TestBackend::start("app1").await;
    // Two worker threads, each accepting on its own socket of the address: the one slot must
    // reach a connection whichever socket the kernel gives it to.
    let lb = plain(&[&b]).set("server.max_connections", 1).set("server.threads", 2).start().await;
    for i in 0..12 {
        let mut conn = RawConn::connect(lb.addr()).await;
        conn.send(format!("GET /one/{i} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes()).await;
        let r = tokio::time::timeout(secs(5), conn.response()).await;
        assert!(r.is_ok(), "connection {i} was not served within 5 s while the only slot was free");
        assert_eq!(r.unwrap().status, 200);
    }
}
