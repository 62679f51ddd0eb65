//! Header rewriting for both directions: hop-by-hop headers out, forwarding headers in.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::fmt::Write;
use std::net::SocketAddr;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// The fixed hop-by-hop headers (RFC 9110 7.6.1), besides those `Connection` names.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Remove hop-by-hop headers: those the `Connection` header names, the fixed list, and every
/// `Proxy-*` header.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if let Some(conn) = headers.get(header::CONNECTION) {
        let named: Vec<HeaderName> = conn
            .to_str()
            .unwrap_or("")
            .split(',')
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if headers.keys().any(|k| k.as_str().starts_with("proxy-")) {
        let proxy: Vec<HeaderName> = headers.keys().filter(|k| k.as_str().starts_with("proxy-")).cloned().collect();
        for name in proxy {
            headers.remove(name);
        }
    }
}

/// Add `X-Forwarded-For` (appended to any list the client sent), `X-Forwarded-Proto`,
/// `X-Forwarded-Host` and an RFC 7239 `Forwarded` element for this hop.
pub fn add_forwarded(headers: &mut HeaderMap, client: SocketAddr, proto: &'static str) {
    let ip = client.ip();
    let mut xff = String::with_capacity(48);
    for v in headers.get_all(&X_FORWARDED_FOR) {
        if let Ok(s) = v.to_str() {
            xff.push_str(s);
            xff.push_str(", ");
        }
    }
    let _ = write!(xff, "{ip}");
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert(X_FORWARDED_FOR, v);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    let host = headers.get(header::HOST).cloned();
    let mut fwd = String::with_capacity(64);
    for v in headers.get_all(&FORWARDED) {
        if let Ok(s) = v.to_str() {
            fwd.push_str(s);
            fwd.push_str(", ");
        }
    }
    if ip.is_ipv6() {
        let _ = write!(fwd, "for=\"[{ip}]\"");
    } else {
        let _ = write!(fwd, "for={ip}");
    }
    if let Some(h) = host.as_ref().and_then(|h| h.to_str().ok()) {
        if h.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\') {
            let _ = write!(fwd, ";host=\"{h}\"");
        }
    }
    let _ = write!(fwd, ";proto={proto}");
    if let Ok(v) = HeaderValue::from_str(&fwd) {
        headers.insert(FORWARDED, v);
    }
    match host {
        Some(h) => {
            headers.insert(X_FORWARDED_HOST, h);
        }
        None => {
            headers.remove(X_FORWARDED_HOST);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("keep-alive, X-Foo"));
        h.insert("x-foo", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("proxy-authorization", HeaderValue::from_static("x"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-keep"));
    }

    #[test]
    fn forwarded_headers() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("app.test:8443"));
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        add_forwarded(&mut h, "127.0.0.1:5000".parse().unwrap(), "http");
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "app.test:8443");
        assert_eq!(h["forwarded"], "for=127.0.0.1;host=\"app.test:8443\";proto=http");
        let mut h = HeaderMap::new();
        add_forwarded(&mut h, "[::1]:5000".parse().unwrap(), "http");
        assert_eq!(h["forwarded"], "for=\"[::1]\";proto=http");
    }
}
