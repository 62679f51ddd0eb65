//! Hardening from the outside (SPEC "Hostile input, limits and startup"): a listen address
//! another process holds, header lines beyond hyper's default of 100, Host rules, DNS rebinding.

mod common;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_balancer_on_a_held_port_exits_1_naming_the_address() {
    let bs = TestBackend::start_many(&["app1"]).await;
    let first = balancer(&[&bs[0]]).set("server.threads", 2).start().await;
    let config = balancer(&[&bs[0]]).render(first.port, free_port());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("second.toml");
    std::fs::write(&path, config).unwrap();
    let mut child = std::process::Command::new(bin())
        .arg("--config")
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("runs");
    let dl = Deadline::after(secs(10));
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if dl.expired() {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("the second balancer kept running on a port the first one holds");
        }
        sleep_ms(50).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{}", first.port)), "names the address: {stderr}");
    // The first one still has its port to itself.
    for _ in 0..20 {
        assert_eq!(User::new().get(&first.url("/")).await.status, 200);
    }
}

/// A raw HTTP/1.1 exchange (the request asks to close): everything the balancer answered.
async fn raw_head(port: u16, request: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(secs(5), s.read_to_end(&mut out)).await.expect("an answer").unwrap();
    String::from_utf8_lossy(&out).to_string()
}

/// The status line of a raw exchange.
async fn status_line(port: u16, request: &[u8]) -> String {
    raw_head(port, request).await.lines().next().unwrap_or("").to_string()
}

/// A raw backend that answers every request with 200 and as many header lines of its own as
/// the request had (so both directions carry them), then closes.
async fn mirror_backend() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut have = Vec::new();
                let mut buf = vec![0u8; 65536];
                while !have.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => have.extend_from_slice(&buf[..n]),
                    }
                }
                let lines = String::from_utf8_lossy(&have).lines().filter(|l| l.starts_with("x-h")).count();
                let mut resp = format!("HTTP/1.1 200 OK\r\ncontent-length: 0\r\nx-request-lines: {lines}\r\n");
                for i in 0..lines {
                    resp.push_str(&format!("x-r{i}: {i}\r\n"));
                }
                resp.push_str("connection: close\r\n\r\n");
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_short_header_lines_are_forwarded_both_ways() {
    let port = mirror_backend().await;
    let lb =
        balancer(&[]).backend_at("mirror", &format!("127.0.0.1:{port}")).set("health.enabled", false).start().await;
    let mut req = String::from("GET /many HTTP/1.1\r\nHost: x\r\n");
    for i in 0..500 {
        req.push_str(&format!("x-h{i}: {i}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    let head = raw_head(lb.port, req.as_bytes()).await;
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("x-request-lines: 500"), "all 500 lines reached the backend");
    assert!(head.contains("x-r499: 499"), "and its 500 came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_rules_http11_needs_one_host_http10_may_have_none() {
    let bs = TestBackend::start_many(&["app1"]).await;
    let lb = balancer(&[&bs[0]]).start().await;
    let none = status_line(lb.port, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert!(none.starts_with("HTTP/1.1 400"), "{none}");
    let two = status_line(lb.port, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n").await;
    assert!(two.starts_with("HTTP/1.1 400"), "{two}");
    let old = status_line(lb.port, b"GET /old HTTP/1.0\r\n\r\n").await;
    assert!(old.contains(" 200 "), "{old}");
    let seen = bs[0].last_seen().expect("forwarded");
    assert_eq!(seen.header("host"), Some(bs[0].address()), "HTTP/1.0 gets the backend's host:port");
    let absolute =
        status_line(lb.port, b"GET http://a.example/abs HTTP/1.1\r\nHost: b.example\r\nConnection: close\r\n\r\n")
            .await;
    assert!(absolute.contains(" 200 "), "{absolute}");
    let seen = bs[0].last_seen().expect("forwarded");
    assert_eq!(seen.header("host").as_deref(), Some("a.example"), "the absolute form's authority wins");
    assert_eq!(seen.path, "/abs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_the_admin_api_refuses_foreign_host_names() {
    let bs = TestBackend::start_many(&["app1"]).await;
    let lb = balancer(&[&bs[0]]).start().await;
    let admin = lb.admin_url("/api/backends/app1/maint");
    let c = plain_client();
    let rebound = c
        .post(&admin)
        .header("Host", "evil.example:9090")
        .header("Origin", "http://evil.example:9090")
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status().as_u16(), 403);
    let reload = c.post(lb.admin_url("/api/reload")).header("Host", "evil.example").send().await.unwrap();
    assert_eq!(reload.status().as_u16(), 403);
    assert_eq!(lb.backend("app1").await["state"], "active", "nothing changed");
    for host in ["localhost:9090", "127.0.0.1"] {
        let r = c.get(lb.admin_url("/api/backends")).header("Host", host).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{host}");
    }
    assert_eq!(lb.admin_post("/api/backends/app1/drain").await, 200, "the usual client still works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_holding_every_slot_do_not_keep_a_normal_client_waiting() {
    let bs = TestBackend::start_many(&["app1"]).await;
    let lb = balancer(&[&bs[0]]).set("server.max_connections", 20).set("server.threads", 2).start().await;
    // 40 clients that open a connection and send half a request head, then nothing.
    let mut slow = Vec::new();
    for _ in 0..40 {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", lb.port)).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: slow\r\nX-Slow: ").await.unwrap();
        slow.push(s);
    }
    sleep_ms(100).await;
    for i in 0..5 {
        let started = std::time::Instant::now();
        let r =
            tokio::time::timeout(secs(3), User::new().get(&lb.url(&format!("/normal/{i}")))).await.expect("answered");
        assert_eq!(r.status, 200);
        assert!(started.elapsed() < ms(1000), "request {i} took {:?}", started.elapsed());
    }
    drop(slow);
}

/// A connection accepted a moment ago has not had the time to be slow: a newer one at the limit
/// waits rather than close it before its request arrives (with two workers, a readiness probe
/// accepted by the other worker did just that to a test's first connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_limit_a_connection_just_opened_is_not_closed_by_a_newer_one() {
    let bs = TestBackend::start_many(&["app1"]).await;
    let lb = balancer(&[&bs[0]]).set("server.max_connections", 1).set("server.threads", 2).start().await;
    let mut first = RawConn::connect(lb.addr()).await;
    sleep_ms(10).await;
    let mut second = RawConn::connect(lb.addr()).await;
    sleep_ms(30).await;
    first.send(b"GET /first HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(first.response().await.status, 200, "the first connection was served");
    drop(first);
    second.send(b"GET /second HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(second.response().await.status, 200, "the second one took the slot after it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_two_workers_logs_the_real_number_of_open_connections() {
    let bs = TestBackend::start_many(&["app1"]).await;
    let mut lb = balancer(&[&bs[0]]).set("server.threads", 2).start_binary().await;
    let mut pending = Vec::new();
    for _ in 0..2 {
        let url = lb.url("/slow?ms=800");
        pending.push(tokio::spawn(async move { User::new().get(&url).await.status }));
    }
    assert!(bs[0].wait_inflight(2, secs(5)).await);
    lb.signal("TERM");
    lb.wait_exit(secs(10)).await.expect("exits");
    for p in pending {
        assert_eq!(p.await.unwrap(), 200, "in-flight requests finish");
    }
    let log = lb.log_tail(100);
    let line = log.lines().find(|l| l.contains("waiting for open connections")).unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("open=2"), "{line}");
    assert_eq!(log.matches("waiting for open connections").count(), 1, "logged once\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_trusted_proxies_may_set_the_forwarded_scheme_and_host() {
    let bs = TestBackend::start_many(&["app1"]).await;
    let claims =
        [("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "shop.example"), ("X-Forwarded-For", "203.0.113.7")];
    let c = plain_client();
    let plain = balancer(&[&bs[0]]).start().await;
    let r = get_with(&c, &plain.url("/"), &claims).await;
    assert_eq!(r.seen_header("x-forwarded-proto").as_deref(), Some("http"), "a client's claim is not taken");
    assert_eq!(r.seen_header("x-forwarded-host"), Some(format!("127.0.0.1:{}", plain.port)));
    assert_eq!(r.seen_header("x-forwarded-for").as_deref(), Some("203.0.113.7, 127.0.0.1"), "appended to");
    let behind = balancer(&[&bs[0]]).set("server.trusted_proxies", strings(&["127.0.0.0/8"])).start().await;
    let r = get_with(&c, &behind.url("/"), &claims).await;
    assert_eq!(r.seen_header("x-forwarded-proto").as_deref(), Some("https"), "a trusted proxy's scheme is kept");
    assert_eq!(r.seen_header("x-forwarded-host").as_deref(), Some("shop.example"));
    assert_eq!(r.seen_header("x-forwarded-for").as_deref(), Some("203.0.113.7, 127.0.0.1"));
}

/// Every request of a keep-alive connection gets the whole `request_timeout`, also when the
/// previous request's deadline has passed meanwhile (a connection's timers are reused from
/// one request to the next: each reuse must move the deadline).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_of_a_keep_alive_connection_gets_its_own_request_timeout() {
    let bs = TestBackend::start_many(&["app1"]).await;
    let lb = balancer(&[&bs[0]]).set("server.request_timeout", "400ms").start().await;
    let mut conn = RawConn::connect(lb.addr()).await;
    let ask = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
    conn.send(ask("/first").as_bytes()).await;
    assert_eq!(conn.response().await.status, 200);
    sleep_ms(300).await;
    // It ends ~550 ms after the first began: past that one's deadline, within its own.
    conn.send(ask("/slow?ms=250").as_bytes()).await;
    assert_eq!(conn.response().await.status, 200, "cut short by the first request's deadline");
    sleep_ms(600).await; // the kept timer fires unused meanwhile
    let t0 = std::time::Instant::now();
    conn.send(ask("/slow?ms=3000").as_bytes()).await;
    assert_eq!(conn.response().await.status, 504);
    let took = t0.elapsed();
    assert!(took >= ms(350) && took < ms(2000), "504 after {took:?} (request_timeout 400ms)");
}

/// An idle keep-alive connection is closed `idle_timeout` after its last request, however
/// many came before (hyper's idle timer is one of the connection's reused timers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_connection_closes_when_idle_for_its_timeout_not_counted_from_its_start() {
    let bs = TestBackend::start_many(&["app1"]).await;
    let lb = balancer(&[&bs[0]]).set("server.idle_timeout", "500ms").start().await;
    let mut conn = RawConn::connect(lb.addr()).await;
    for i in 0..4 {
        conn.send(format!("GET /{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes()).await;
        assert_eq!(conn.response().await.status, 200, "request {i}, ~{} ms after the first", i * 300);
        sleep_ms(300).await;
    }
    // Open 1.2 s by now; idle for 300 ms of its 500.
    let t0 = std::time::Instant::now();
    assert!(conn.closes_within(secs(5)).await, "the idle connection was not closed within 5 s");
    assert!(t0.elapsed() >= ms(100), "closed after {:?} more, before its 500 ms idle", t0.elapsed());
}
