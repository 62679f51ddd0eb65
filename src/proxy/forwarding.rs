//! This hop's forwarding fields — `X-Forwarded-For`, `X-Forwarded-Proto`, `Forwarded`,
//! `X-Forwarded-Host` — made once per request from what the client sent ([`Seen`]) and its
//! address, and kept out of the header map: the lean upstream client writes them into each
//! attempt's head as they are, hyper's client gets them inserted into its copy. Values are put
//! together on the stack. Touches nothing but the header map it is given.

use super::headers::{Seen, FORWARDED, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use std::fmt::Write;
use std::net::{IpAddr, SocketAddr};

/// Push the values of `name` the request has (if `present`), each followed by ", ": the list
/// this hop's element is appended to.
fn push_list_so_far(line: &mut Line, headers: &HeaderMap, name: &HeaderName, present: bool) {
    if present {
        for s in headers.get_all(name).iter().filter_map(|v| v.to_str().ok()) {
            line.push(s);
            line.push(", ");
        }
    }
}

/// This hop's forwarding fields: `X-Forwarded-For` (appended to any list the client sent),
/// `X-Forwarded-Proto`, an RFC 7239 `Forwarded` element (appended likewise) and
/// `X-Forwarded-Host`. Made once per request, kept out of the header map: the lean client
/// writes them into each attempt's head as they are (no header value made, no map insert),
/// hyper's client gets them inserted into its copy of the map ([`Forwarding::insert_into`]).
pub struct Forwarding {
    /// The `X-Forwarded-For` value, then the `Forwarded` value (only text is pushed).
    text: Line,
    xff_len: usize,
    proto: HeaderValue,
    host: Option<HeaderValue>,
}

/// Make this hop's forwarding fields and take the client's own out of `headers`. `seen` is
/// what the request had before (its `Host` is the one forwarded).
pub fn forwarding(headers: &mut HeaderMap, seen: &Seen, client: SocketAddr, proto: &'static str) -> Forwarding {
    let mut ip = Line::default();
    ip.push_ip(client.ip());
    let ip = ip.as_bytes();
    let mut text = Line::default();
    push_list_so_far(&mut text, headers, &X_FORWARDED_FOR, seen.forwarded_for);
    text.push_bytes(ip);
    let xff_len = text.as_bytes().len();
    push_list_so_far(&mut text, headers, &FORWARDED, seen.forwarded);
    if client.is_ipv6() {
        text.push("for=\"[");
        text.push_bytes(ip);
        text.push("]\"");
    } else {
        text.push("for=");
        text.push_bytes(ip);
    }
    if let Some(h) = seen.host.as_ref().map(HeaderValue::as_bytes) {
        // Visible ASCII only (what `to_str` would also require), and nothing a quoted string escapes.
        if h.iter().all(|&b| b.is_ascii_graphic() && b != b'"' && b != b'\\') {
            text.push(";host=\"");
            text.push_bytes(h);
            text.push("\"");
        }
    }
    text.push(";proto=");
    text.push(proto);
    // The client's own go: ours replace them (a trusted peer's scheme and host are put back
    // through `Forwarding::keep`).
    for (name, present) in [
        (&X_FORWARDED_FOR, seen.forwarded_for),
        (&FORWARDED, seen.forwarded),
        (&X_FORWARDED_PROTO, seen.forwarded_proto),
        (&X_FORWARDED_HOST, seen.forwarded_host),
    ] {
        if present {
            headers.remove(name);
        }
    }
    Forwarding { text, xff_len, proto: HeaderValue::from_static(proto), host: seen.host.clone() }
}

impl Forwarding {
    /// A trusted peer's `X-Forwarded-Proto` and `X-Forwarded-Host` (its client's scheme and
    /// host), kept in place of ours where it sent them.
    pub fn keep(&mut self, proto: Option<HeaderValue>, host: Option<HeaderValue>) {
        if let Some(p) = proto {
            self.proto = p;
        }
        if host.is_some() {
            self.host = host;
        }
    }

    /// The fields, in order: name and value.
    pub fn fields(&self) -> impl Iterator<Item = (&'static HeaderName, &[u8])> {
        let (xff, fwd) = self.text.as_bytes().split_at(self.xff_len);
        [
            (&X_FORWARDED_FOR, Some(xff)),
            (&X_FORWARDED_PROTO, Some(self.proto.as_bytes())),
            (&FORWARDED, Some(fwd)),
            (&X_FORWARDED_HOST, self.host.as_ref().map(HeaderValue::as_bytes)),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name, value?)))
    }

    /// Put the fields into a header map (which has none of them: [`forwarding`] took them out).
    pub fn insert_into(&self, headers: &mut HeaderMap) {
        headers.reserve(4);
        for (name, value) in self.fields() {
            // Only visible text was pushed: this cannot fail.
            if let Ok(v) = HeaderValue::from_bytes(value) {
                headers.append(name, v);
            }
        }
    }
}

/// [`forwarding`] for a header map that keeps them (tests, benches): the fields made and put in.
pub fn add_forwarded(headers: &mut HeaderMap, seen: &Seen, client: SocketAddr, proto: &'static str) {
    forwarding(headers, seen, client, proto).insert_into(headers);
}

/// A header value (or an IP address) being put together: on the stack while it fits (always,
/// but for long forwarding chains), then on the heap. IPv4 addresses are written by hand (the
/// formatting machinery was a visible share of the per-request cost), IPv6 through `Display`.
struct Line {
    stack: [u8; 160],
    len: usize,
    heap: Vec<u8>,
}

impl Default for Line {
    fn default() -> Self {
        Line { stack: [0; 160], len: 0, heap: Vec::new() }
    }
}

impl Line {
    fn push(&mut self, s: &str) {
        self.push_bytes(s.as_bytes());
    }

    fn push_bytes(&mut self, b: &[u8]) {
        if self.heap.is_empty() && self.len + b.len() <= self.stack.len() {
            self.stack[self.len..self.len + b.len()].copy_from_slice(b);
            self.len += b.len();
        } else {
            if self.heap.is_empty() {
                self.heap.extend_from_slice(&self.stack[..self.len]);
            }
            self.heap.extend_from_slice(b);
        }
    }

    fn push_ip(&mut self, ip: IpAddr) {
        match ip {
            IpAddr::V4(v4) => {
                // Put together in a register-sized buffer and pushed once: a push per digit
                // was a copy call each.
                let (mut text, mut n) = ([0u8; 15], 0);
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        text[n] = b'.';
                        n += 1;
                    }
                    if octet >= 100 {
                        text[n] = b'0' + octet / 100;
                        n += 1;
                    }
                    if octet >= 10 {
                        text[n] = b'0' + octet / 10 % 10;
                        n += 1;
                    }
                    text[n] = b'0' + octet % 10;
                    n += 1;
                }
                self.push_bytes(&text[..n]);
            }
            IpAddr::V6(v6) => {
                let _ = write!(self, "{v6}");
            }
        }
    }

    fn as_bytes(&self) -> &[u8] {
        if self.heap.is_empty() {
            &self.stack[..self.len]
        } else {
            &self.heap
        }
    }

    #[cfg(test)]
    fn as_str(&self) -> &str {
        // Only text is ever pushed.
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.push(s);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::headers::tests::map;

    #[test]
    fn forwarded_headers() {
        let mut h = map(&[("host", "app.test:8443"), ("x-forwarded-for", "10.0.0.1")]);
        let seen = Seen::of(&h);
        add_forwarded(&mut h, &seen, "127.0.0.1:5000".parse().unwrap(), "http");
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "app.test:8443");
        assert_eq!(h["forwarded"], "for=127.0.0.1;host=\"app.test:8443\";proto=http");
        let mut h = HeaderMap::new();
        let seen = Seen::of(&h);
        add_forwarded(&mut h, &seen, "[::1]:5000".parse().unwrap(), "http");
        assert_eq!(h["forwarded"], "for=\"[::1]\";proto=http");
        assert_eq!(h["x-forwarded-for"], "::1");
    }

    #[test]
    fn forwarded_chains_are_appended_and_a_hostless_request_keeps_no_forwarded_host() {
        let mut h = HeaderMap::new();
        let long = "10.0.0.1, ".repeat(30) + "10.0.0.2";
        h.insert("x-forwarded-for", HeaderValue::from_str(&long).unwrap());
        h.append("forwarded", HeaderValue::from_static("for=10.0.0.1"));
        h.append("forwarded", HeaderValue::from_static("for=10.0.0.2;proto=https"));
        h.insert("x-forwarded-host", HeaderValue::from_static("spoofed.test"));
        let seen = Seen::of(&h);
        assert!(seen.forwarded_for && seen.forwarded && seen.forwarded_host && seen.host.is_none());
        add_forwarded(&mut h, &seen, "192.168.1.20:5000".parse().unwrap(), "https");
        // Longer than the stack line: the heap takes over, nothing is cut.
        assert_eq!(h["x-forwarded-for"], format!("{long}, 192.168.1.20").as_str());
        assert_eq!(h["forwarded"], "for=10.0.0.1, for=10.0.0.2;proto=https, for=192.168.1.20;proto=https");
        assert_eq!(h.get_all("forwarded").iter().count(), 1);
        assert!(!h.contains_key("x-forwarded-host"), "{h:?}");
        assert_eq!(h["x-forwarded-proto"], "https");
    }

    #[test]
    fn a_host_a_quoted_string_cannot_carry_is_left_out_of_forwarded() {
        for host in [&b"a\"b.test"[..], b"a\\b.test", b"a b.test", b"a\tb.test", b"caf\xc3\xa9.test", b"\xffx.test"] {
            let mut h = HeaderMap::new();
            h.insert("host", HeaderValue::from_bytes(host).unwrap());
            let seen = Seen::of(&h);
            add_forwarded(&mut h, &seen, "127.0.0.1:5000".parse().unwrap(), "http");
            assert_eq!(h["forwarded"], "for=127.0.0.1;proto=http", "{host:?}");
        }
    }

    #[test]
    fn ipv4_text_matches_display() {
        for ip in ["0.0.0.0", "1.2.3.4", "9.10.99.100", "127.0.0.1", "255.255.255.255", "10.200.5.250"] {
            let addr: IpAddr = ip.parse().unwrap();
            let mut t = Line::default();
            t.push_ip(addr);
            assert_eq!(t.as_str(), addr.to_string());
        }
        let v6: IpAddr = "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap();
        let mut t = Line::default();
        t.push_ip(v6);
        assert_eq!(t.as_str(), v6.to_string());
    }
}
