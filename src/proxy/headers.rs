//! Header rewriting for both directions: hop-by-hop headers out, forwarding headers in, split
//! `Cookie` fields joined into one for the HTTP/1.1 hop.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::fmt::Write;
use std::net::{IpAddr, SocketAddr};

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
/// `Proxy-*` header. One pass finds whether there is anything to remove at all, which there
/// usually is not.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let (mut fixed, mut proxy) = (false, false);
    for k in headers.keys() {
        fixed |= HOP_BY_HOP.contains(k);
        proxy |= k.as_str().starts_with("proxy-");
    }
    if fixed {
        // The names listed in Connection go too; taken out first so the map can change.
        let mut listed = headers.get_all(header::CONNECTION).iter();
        let (first, rest) = (listed.next().cloned(), listed.cloned().collect::<Vec<_>>());
        for name in &HOP_BY_HOP {
            headers.remove(name);
        }
        for value in first.iter().chain(&rest) {
            // Bytes: one non-ASCII token must not keep the others' headers in.
            for token in value.as_bytes().split(|&b| b == b',') {
                if let Ok(name) = HeaderName::from_bytes(token.trim_ascii()) {
                    headers.remove(name);
                }
            }
        }
    }
    if proxy {
        let names: Vec<HeaderName> = headers.keys().filter(|k| k.as_str().starts_with("proxy-")).cloned().collect();
        for name in names {
            headers.remove(name);
        }
    }
}

/// Join every `Cookie` field into one, in order, separated by `"; "` (RFC 9113 8.2.3: HTTP/2
/// clients may split the cookie into several fields, which must be one before an HTTP/1.1
/// hop). Several `Cookie` lines from an HTTP/1.1 client are joined the same way, as nginx
/// does: a backend reading only the first line would otherwise miss cookies. Empty fields are
/// skipped (and a Cookie made only of empty fields is removed). With at most one field
/// nothing changes and nothing is allocated.
pub fn join_cookies(headers: &mut HeaderMap) {
    let fields = headers.get_all(header::COOKIE);
    let mut iter = fields.iter();
    if iter.next().is_none() || iter.next().is_none() {
        return;
    }
    let mut joined = Vec::with_capacity(fields.iter().map(|v| v.len() + 2).sum());
    let mut sensitive = false;
    for value in fields {
        sensitive |= value.is_sensitive();
        let crumb = value.as_bytes().trim_ascii();
        if crumb.is_empty() {
            continue;
        }
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(crumb);
    }
    // Each field was a valid value and "; " is valid text, so this cannot fail.
    match HeaderValue::from_maybe_shared(bytes::Bytes::from(joined)) {
        Ok(mut value) if !value.is_empty() => {
            value.set_sensitive(sensitive);
            headers.insert(header::COOKIE, value);
        }
        _ => {
            headers.remove(header::COOKIE);
        }
    }
}

/// Add `X-Forwarded-For` (appended to any list the client sent), `X-Forwarded-Proto`,
/// `X-Forwarded-Host` and an RFC 7239 `Forwarded` element for this hop.
pub fn add_forwarded(headers: &mut HeaderMap, client: SocketAddr, proto: &'static str) {
    let mut ip = IpText::default();
    ip.write(client.ip());
    let ip = ip.as_str();
    let mut xff = String::with_capacity(48);
    for v in headers.get_all(&X_FORWARDED_FOR) {
        if let Ok(s) = v.to_str() {
            xff.push_str(s);
            xff.push_str(", ");
        }
    }
    xff.push_str(ip);
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
    if client.is_ipv6() {
        fwd.push_str("for=\"[");
        fwd.push_str(ip);
        fwd.push_str("]\"");
    } else {
        fwd.push_str("for=");
        fwd.push_str(ip);
    }
    if let Some(h) = host.as_ref().and_then(|h| h.to_str().ok()) {
        if h.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\') {
            fwd.push_str(";host=\"");
            fwd.push_str(h);
            fwd.push('"');
        }
    }
    fwd.push_str(";proto=");
    fwd.push_str(proto);
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

/// An IP address as text on the stack: IPv4 written by hand (the formatting machinery was a
/// visible share of the per-request cost), IPv6 through `Display`.
struct IpText {
    buf: [u8; 48],
    len: usize,
}

impl Default for IpText {
    fn default() -> Self {
        IpText { buf: [0; 48], len: 0 }
    }
}

impl IpText {
    fn write(&mut self, ip: IpAddr) {
        match ip {
            IpAddr::V4(v4) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        self.push(b'.');
                    }
                    if octet >= 100 {
                        self.push(b'0' + octet / 100);
                    }
                    if octet >= 10 {
                        self.push(b'0' + octet / 10 % 10);
                    }
                    self.push(b'0' + octet % 10);
                }
            }
            IpAddr::V6(v6) => {
                let _ = write!(self, "{v6}");
            }
        }
    }

    fn push(&mut self, b: u8) {
        if self.len < self.buf.len() {
            self.buf[self.len] = b;
            self.len += 1;
        }
    }

    fn as_str(&self) -> &str {
        // Only ASCII digits, dots, colons and hex letters are ever written.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl Write for IpText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        s.bytes().for_each(|b| self.push(b));
        Ok(())
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

        // Odd Connection lists (empty and invalid tokens, several headers) do no harm.
        let mut h = HeaderMap::new();
        h.append("connection", HeaderValue::from_static(" , bad name ,close"));
        h.append("connection", HeaderValue::from_static("X-Second"));
        h.insert("x-second", HeaderValue::from_static("1"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().collect::<Vec<_>>(), ["x-keep"]);

        // Each kind alone is found by the one-pass check.
        for name in ["proxy-connection", "keep-alive", "transfer-encoding", "upgrade", "trailer"] {
            let mut h = HeaderMap::new();
            h.insert("x-keep", HeaderValue::from_static("1"));
            h.insert(HeaderName::from_static(name), HeaderValue::from_static("x"));
            strip_hop_by_hop(&mut h);
            assert_eq!(h.len(), 1, "{name} stayed: {h:?}");
        }
    }

    fn cookies(h: &HeaderMap) -> Vec<&str> {
        h.get_all(header::COOKIE).iter().map(|v| v.to_str().unwrap()).collect()
    }

    #[test]
    fn split_cookie_fields_become_one_in_order() {
        let mut h = HeaderMap::new();
        h.append("cookie", HeaderValue::from_static("a=1"));
        h.insert("x-other", HeaderValue::from_static("kept"));
        h.append("cookie", HeaderValue::from_static("STICKYLB=v.sig; b=2"));
        h.append("cookie", HeaderValue::from_static("c=3"));
        join_cookies(&mut h);
        assert_eq!(cookies(&h), ["a=1; STICKYLB=v.sig; b=2; c=3"]);
        assert_eq!(h["x-other"], "kept");
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn one_cookie_field_or_none_is_left_alone() {
        let mut h = HeaderMap::new();
        join_cookies(&mut h);
        assert!(h.is_empty());
        // Untouched, even an odd single field (the same value object, not a rebuilt one).
        let one = HeaderValue::from_static(" a=1;  b=2 ");
        h.insert("cookie", one.clone());
        let before = h["cookie"].as_bytes().as_ptr();
        join_cookies(&mut h);
        assert_eq!(cookies(&h), [" a=1;  b=2 "]);
        assert_eq!(h["cookie"].as_bytes().as_ptr(), before, "a single field was rebuilt");
    }

    #[test]
    fn empty_cookie_fields_are_skipped() {
        let mut h = HeaderMap::new();
        for v in ["", "a=1", "  ", " b=2 ", ""] {
            h.append("cookie", HeaderValue::from_str(v).unwrap());
        }
        join_cookies(&mut h);
        assert_eq!(cookies(&h), ["a=1; b=2"]);

        let mut h = HeaderMap::new();
        h.append("cookie", HeaderValue::from_static(""));
        h.append("cookie", HeaderValue::from_static(" "));
        join_cookies(&mut h);
        assert!(!h.contains_key("cookie"), "a Cookie of nothing: {h:?}");
    }

    #[test]
    fn a_sensitive_cookie_field_keeps_the_joined_one_sensitive() {
        let mut h = HeaderMap::new();
        let mut secret = HeaderValue::from_static("session=s3cret");
        secret.set_sensitive(true);
        h.append("cookie", HeaderValue::from_static("a=1"));
        h.append("cookie", secret);
        join_cookies(&mut h);
        assert_eq!(cookies(&h), ["a=1; session=s3cret"]);
        assert!(h["cookie"].is_sensitive());
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
        assert_eq!(h["x-forwarded-for"], "::1");
    }

    #[test]
    fn ipv4_text_matches_display() {
        for ip in ["0.0.0.0", "1.2.3.4", "9.10.99.100", "127.0.0.1", "255.255.255.255", "10.200.5.250"] {
            let addr: IpAddr = ip.parse().unwrap();
            let mut t = IpText::default();
            t.write(addr);
            assert_eq!(t.as_str(), addr.to_string());
        }
        let v6: IpAddr = "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap();
        let mut t = IpText::default();
        t.write(v6);
        assert_eq!(t.as_str(), v6.to_string());
    }
}
