//! HTTPS termination (`[server.tls]`): HTTP/1.1 and HTTP/2 chosen by ALPN, the forwarding
//! headers and the cookie's `Secure` flag follow TLS, a client that does not speak TLS is
//! dropped without harm, and `check` points at a bad certificate or key.

mod common;

use std::path::Path;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, Response, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// One GET over a new TLS connection offering `alpn`; the answer and the HTTP version used.
async fn https_get(
    lb: &Balancer,
    cert: &TestCert,
    alpn: &[&[u8]],
    path: &str,
    cookie: Option<&str>,
) -> Response<Bytes> {
    let tls = tls_connect(lb.addr(), cert, alpn).await;
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let mut req = Request::get(format!("https://localhost:{}{path}", lb.addr().port()));
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let req = if h2 { req } else { req.header("host", "localhost") }.body(Empty::<Bytes>::new()).unwrap();
    let resp = if h2 {
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
        tokio::spawn(conn);
        send.send_request(req).await.unwrap()
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
        tokio::spawn(conn);
        send.send_request(req).await.unwrap()
    };
    let (parts, body) = resp.into_parts();
    Response::from_parts(parts, body.collect().await.unwrap().to_bytes())
}

fn header(r: &Response<Bytes>, name: &str) -> String {
    r.headers().get(name).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_over_http1_and_http2_keeps_the_session_and_tells_the_backend() {
    let dir = tempfile::tempdir().unwrap();
    let cert = make_cert(dir.path(), "server");
    let bs = TestBackend::start_many(&["app1", "app2"]).await;
    let lb = with_tls(balancer(&[&bs[0], &bs[1]]), &cert).start().await;

    let first = https_get(&lb, &cert, &[b"http/1.1"], "/tls/one", None).await;
    assert_eq!(first.status(), 200, "{}", String::from_utf8_lossy(first.body()));
    assert_eq!(first.version(), Version::HTTP_11);
    let set_cookie = header(&first, "set-cookie");
    assert!(set_cookie.starts_with("STICKYLB="), "no session cookie: {set_cookie:?}");
    let attrs = cookie_attrs(&set_cookie);
    assert!(attrs.contains_key("secure"), "the cookie is Secure over TLS: {set_cookie}");

    let served_by = |r: &Response<Bytes>| {
        serde_json::from_slice::<serde_json::Value>(r.body()).unwrap()["backend"].as_str().unwrap().to_string()
    };
    let backend = served_by(&first);
    let seen = bs.iter().find(|b| b.name() == backend).unwrap().last_seen().unwrap();
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("https"));
    assert!(seen.header("forwarded").unwrap_or_default().ends_with(";proto=https"), "{:?}", seen.header("forwarded"));

    let cookie = format!("STICKYLB={}", cookie_value(&set_cookie));
    for i in 0..5 {
        let r = https_get(&lb, &cert, &[b"h2", b"http/1.1"], &format!("/tls/h2/{i}"), Some(&cookie)).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.version(), Version::HTTP_2, "ALPN h2 was offered");
        assert_eq!(served_by(&r), backend, "request {i} over HTTP/2 left the session's backend");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_tls_is_dropped_and_others_are_still_served() {
    let dir = tempfile::tempdir().unwrap();
    let cert = make_cert(dir.path(), "server");
    let b = TestBackend::start("app1").await;
    let mut lb = with_tls(balancer(&[&b]), &cert).start().await;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut plain = tokio::net::TcpStream::connect(lb.addr()).await.unwrap();
    plain.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(secs(5), plain.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the connection was not closed");
    assert!(!buf.starts_with(b"HTTP/"), "answered plain HTTP on the TLS port");

    let r = https_get(&lb, &cert, &[b"http/1.1"], "/after", None).await;
    assert_eq!(r.status(), 200);
    assert!(lb.is_running(), "stickylb exited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_serves_a_renewed_certificate_to_new_connections() {
    let dir = tempfile::tempdir().unwrap();
    let old = make_cert(dir.path(), "live");
    let b = TestBackend::start("app1").await;
    let lb = with_tls(balancer(&[&b]), &old).start().await;
    assert_eq!(https_get(&lb, &old, &[b"http/1.1"], "/old", None).await.status(), 200);

    // Renewal writes new files over the old ones; the operator reloads.
    let renewed = make_cert(dir.path(), "live");
    assert_ne!(renewed.der, old.der);
    let reload = lb.reload().await;
    assert_eq!(reload.status, 200, "{}", reload.describe());
    let r = https_get(&lb, &renewed, &[b"http/1.1"], "/renewed", None).await;
    assert_eq!(r.status(), 200, "a client trusting only the renewed certificate");
}

#[test]
fn check_points_at_a_missing_certificate_and_at_a_key_that_does_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let good = make_cert(dir.path(), "good");
    let other = make_cert(dir.path(), "other");
    let config = |cert: &Path, key: &Path| {
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:18443\"\n\n[server.tls]\ncert = {:?}\nkey = {:?}\n\n[[backend]]\nname = \"a\"\naddress = \"127.0.0.1:18081\"\n",
            cert.to_str().unwrap(),
            key.to_str().unwrap()
        );
        write_file(dir.path(), "tls.toml", &text)
    };
    let check = |path: &Path| run_cli(&["check", "--config", path.to_str().unwrap()], secs(10));

    let ok = check(&config(&good.cert, &good.key));
    assert_eq!(ok.code, Some(0), "stderr: {}", ok.stderr);

    let path = config(&dir.path().join("missing.crt"), &good.key);
    let out = check(&path);
    assert_eq!(out.code, Some(2), "stderr: {}", out.stderr);
    assert!(out.stderr.contains(&format!("{}:5:", path.display())), "not at the cert line: {}", out.stderr);
    assert!(out.stderr.contains("server.tls.cert"), "{}", out.stderr);

    let path = config(&good.cert, &other.key);
    let out = check(&path);
    assert_eq!(out.code, Some(2), "stderr: {}", out.stderr);
    assert!(out.stderr.contains(&format!("{}:6:", path.display())), "not at the key line: {}", out.stderr);
    assert!(out.stderr.contains("server.tls.key"), "{}", out.stderr);
}
