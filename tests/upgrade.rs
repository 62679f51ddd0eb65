//! Protocol upgrades (WebSocket): the 101 handshake passes through to the session's backend,
//! the connection then carries bytes both ways until closed, and an upgrade the backend
//! declines is an ordinary response.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A raw HTTP/1.1 backend named `name`. A request with `Upgrade: echo` gets a 101 and then
/// every chunk it receives back prefixed with `name:`; one with `Upgrade: nope` gets a 426;
/// anything else gets `200 name`. Each request head it saw is recorded. Aborted on drop.
struct UpgradeBackend {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl UpgradeBackend {
    async fn start(name: &'static str) -> Self {
        let listener = TcpListener::bind((HOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = heads.clone();
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(serve(s, name, seen.clone()));
            }
        });
        UpgradeBackend { addr, heads, task }
    }

    fn upgrade_heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().iter().filter(|h| h.contains("upgrade:")).cloned().collect()
    }
}

impl Drop for UpgradeBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut s: TcpStream, name: &'static str, heads: Arc<Mutex<Vec<String>>>) {
    loop {
        let Some(head) = read_head(&mut s).await else { return };
        let lower = head.to_ascii_lowercase();
        heads.lock().unwrap().push(lower.clone());
        if lower.contains("upgrade: echo") {
            let _ =
                s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n").await;
            let mut buf = [0u8; 4096];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 || s.write_all(&[name.as_bytes(), b":", &buf[..n]].concat()).await.is_err() {
                    return;
                }
            }
            return;
        }
        let (status, body) =
            if lower.contains("upgrade: nope") { ("426 Upgrade Required", "no") } else { ("200 OK", name) };
        let resp = format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\n\r\n{body}", body.len());
        if s.write_all(resp.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// One request head (through the blank line), or None at EOF.
async fn read_head(s: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// Reads from `s` until `want` has arrived (5 s at most).
async fn read_until(s: &mut TcpStream, want: &str) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Deadline::after(secs(5));
    while !String::from_utf8_lossy(&got).contains(want) {
        assert!(!deadline.expired(), "waited for {want:?}, got {:?}", String::from_utf8_lossy(&got));
        match tokio::time::timeout(secs(5), s.read(&mut buf)).await {
            Ok(Ok(0)) => panic!("closed before {want:?}; got {:?}", String::from_utf8_lossy(&got)),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            other => panic!("read failed: {other:?}"),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

async fn two_backends() -> (UpgradeBackend, UpgradeBackend, Balancer) {
    let a = UpgradeBackend::start("a").await;
    let b = UpgradeBackend::start("b").await;
    let lb = balancer(&[])
        .backend_at("a", &a.addr.to_string())
        .backend_at("b", &b.addr.to_string())
        .set("health.enabled", false)
        .set("balance.algorithm", "round_robin")
        .start()
        .await;
    (a, b, lb)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_follows_its_session_and_carries_bytes_both_ways() {
    let (a, b, lb) = two_backends().await;
    let u = User::new();
    let first = u.get(&lb.url("/page")).await;
    assert_eq!(first.status, 200);
    let backend = first.text();
    let cookie = u.cookie(&lb.url("/"), COOKIE).expect("session cookie");

    for round in 0..3 {
        let mut s = TcpStream::connect(lb.addr()).await.unwrap();
        let req = format!(
            "GET /chat HTTP/1.1\r\nHost: t\r\nConnection: keep-alive, Upgrade\r\nUpgrade: echo\r\nCookie: {COOKIE}={cookie}\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let head = read_until(&mut s, "\r\n\r\n").await.to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 101"), "round {round}: {head}");
        assert!(head.contains("upgrade: echo") && head.contains("connection: upgrade"), "{head}");
        for msg in ["hello", "second message"] {
            s.write_all(msg.as_bytes()).await.unwrap();
            let echoed = read_until(&mut s, msg).await;
            assert_eq!(echoed, format!("{backend}:{msg}"), "round {round}: the tunnel reached another backend");
        }
    }
    let upgraded = if backend == "a" { &a } else { &b };
    let heads = upgraded.upgrade_heads();
    assert_eq!(heads.len(), 3, "{heads:?}");
    assert!(heads.iter().all(|h| h.contains("connection: upgrade") && h.contains("x-forwarded-for:")), "{heads:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_upgrade_is_an_ordinary_response_and_the_connection_stays_usable() {
    let (_a, _b, lb) = two_backends().await;
    let mut conn = RawConn::connect(lb.addr()).await;
    conn.send(b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: nope\r\n\r\n").await;
    let r = conn.response().await;
    assert_eq!(r.status, 426, "{}", r.text());
    conn.send(b"GET /next HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(conn.response().await.status, 200);
}

/// Opens a tunnel through `lb` to a backend that echoes, checked with one message.
async fn open_tunnel(lb: &Balancer) -> TcpStream {
    let mut s = TcpStream::connect(lb.addr()).await.unwrap();
    s.write_all(b"GET /chat HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n").await.unwrap();
    let head = read_until(&mut s, "\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s.write_all(b"ping").await.unwrap();
    read_until(&mut s, "ping").await;
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_tunnel_counts_as_a_connection_and_is_drained_at_shutdown() {
    let a = UpgradeBackend::start("a").await;
    let mut lb = balancer(&[])
        .backend_at("a", &a.addr.to_string())
        .set("health.enabled", false)
        .set("server.max_connections", 1)
        .set("server.shutdown_timeout", "20s")
        .start_binary()
        .await;
    let mut tunnel = open_tunnel(&lb).await;

    // The tunnel holds the only connection slot: another client waits.
    let waiting = tokio::spawn({
        let url = lb.url("/after-tunnel");
        async move { get(&plain_client(), &url).await }
    });
    sleep_ms(500).await;
    assert!(!waiting.is_finished(), "a second connection was served beside the tunnel at max_connections = 1");

    // SIGTERM: the tunnel keeps working while the balancer drains.
    lb.signal("TERM");
    sleep_ms(300).await;
    tunnel.write_all(b"still there").await.unwrap();
    assert_eq!(read_until(&mut tunnel, "still there").await, "a:still there");
    assert!(lb.is_running(), "stickylb exited with a tunnel open");

    drop(tunnel);
    let exit = lb.wait_exit(secs(10)).await.expect("stickylb still running after the tunnel closed");
    assert!(exit.success(), "exit status {exit}");
    let _ = waiting.await;
}
