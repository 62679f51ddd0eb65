//! The properties of the server's own HTTP/1.1 path that its fuzz targets check (beside
//! `checks.rs`, which holds the others): `fuzz/fuzz_targets/request_head.rs`,
//! `response_head.rs` and `backend_head.rs` call the function of the same name, and `tests/fuzz_corpus.rs` replays
//! `fuzz/corpus/NAME/` and `fuzz/regressions/NAME/` through it. A property that fails panics.
#![allow(dead_code)] // each fuzz target uses one function

use bytes::BytesMut;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Version};
use stickylb::proxy::upstream::spans::{Spans, STACK_HEADERS};
use stickylb::proxy::upstream::{self, Head};
use stickylb::server::encode::{self, Framing};
use stickylb::server::head::{self, Parsed};

/// Request bytes: the own path serves a head exactly when httparse reads a complete HTTP/1.1
/// head it may serve, and takes exactly that head out of the buffer; anything else is left
/// as it was for hyper's server.
pub fn request_head(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    let mut spans = Spans::new();
    let parsed = head::parse(&mut buf, &mut HeaderMap::new(), &mut spans);
    let mut lines = [httparse::EMPTY_HEADER; STACK_HEADERS];
    let mut reference = httparse::Request::new(&mut lines);
    let verdict = reference.parse(data);
    match parsed {
        Parsed::Partial => {
            assert!(matches!(verdict, Ok(httparse::Status::Partial)), "partial, httparse says {verdict:?}");
            assert_eq!(&buf[..], data);
        }
        Parsed::Hyper => assert_eq!(&buf[..], data, "a head left to hyper is left untouched"),
        Parsed::Request(r) => {
            let Ok(httparse::Status::Complete(len)) = verdict else { panic!("served, httparse says {verdict:?}") };
            assert_eq!(&buf[..], &data[len..], "exactly the head was taken");
            assert_eq!(reference.version, Some(1));
            assert_eq!(Some(r.parts.method.as_str()), reference.method);
            assert_ne!(r.parts.method, http::Method::CONNECT);
            // The `http` types drop a fragment (`#...`), hyper's server alike.
            let target = reference.path.map(|p| p.split('#').next().unwrap_or(p));
            assert_eq!(Some(r.parts.uri.to_string().as_str()), target);
            assert!(r.parts.uri.path().starts_with('/'));
            assert_eq!(r.parts.version, Version::HTTP_11);
            let fields: Vec<(String, &[u8])> =
                r.parts.headers.iter().map(|(n, v)| (n.as_str().to_owned(), v.as_bytes())).collect();
            let expected: Vec<(String, &[u8])> =
                reference.headers.iter().map(|h| (h.name.to_ascii_lowercase(), h.value)).collect();
            let mut sorted = (fields.clone(), expected);
            sorted.0.sort();
            sorted.1.sort();
            assert_eq!(sorted.0, sorted.1, "every field, as sent");
            for name in ["content-length", "transfer-encoding", "upgrade", "expect"] {
                assert!(!r.parts.headers.contains_key(name), "a request with {name} was served");
            }
        }
    }
}

/// Response parts from bytes: flags, status, then `name: value` lines.
fn response(data: &[u8]) -> (http::response::Parts, encode::BodyLength, bool, bool) {
    let byte = |i: usize| data.get(i).copied().unwrap_or(0);
    let flags = byte(0);
    let status = StatusCode::from_u16(100 + (u16::from(byte(1)) << 8 | u16::from(byte(2))) % 900).expect("100-999");
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = status;
    parts.version = if flags & 1 == 1 { Version::HTTP_10 } else { Version::HTTP_11 };
    if flags & 2 == 2 {
        if let Ok(r) = hyper::ext::ReasonPhrase::try_from(b"Some Reason".as_slice()) {
            parts.extensions.insert(r);
        }
    }
    let known = u64::from(byte(3));
    let body = match flags >> 2 & 3 {
        0 => None,
        1 => Some(None),
        _ => Some(Some(known)),
    };
    for line in data.get(4..).unwrap_or_default().split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(&line[..colon]), HeaderValue::from_bytes(line[colon + 1..].trim_ascii()))
        else {
            continue;
        };
        parts.headers.append(name, value);
    }
    (parts, body, flags & 16 == 16, flags & 32 == 32)
}

/// Response parts: the encoder writes a head httparse reads whole, with the status, every
/// ordinary field in order, at most one length, never a length beside chunked framing, and
/// `Connection: close` on a connection's last response; or it refuses (conflicting lengths).
pub fn response_head(data: &[u8]) {
    let (mut parts, body, head_request, keep_alive) = response(data);
    let ordinary = |h: &HeaderMap| -> Vec<(String, Vec<u8>)> {
        let special = ["content-length", "transfer-encoding", "connection", "trailer", "date"];
        h.iter()
            .filter(|(n, _)| !special.contains(&n.as_str()))
            .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect()
    };
    let informational = parts.status.is_informational() && parts.status != StatusCode::SWITCHING_PROTOCOLS;
    let before = ordinary(&parts.headers);
    let fields = parts.headers.len();
    let status = parts.status;
    let mut out = Vec::new();
    let Ok(encoded) = encode::head(&mut out, &mut parts, None, body, head_request, keep_alive) else { return };
    let mut lines = vec![httparse::EMPTY_HEADER; fields + 16];
    let mut r = httparse::Response::new(&mut lines);
    let parsed = r.parse(&out);
    assert_eq!(parsed, Ok(httparse::Status::Complete(out.len())), "{:?}", String::from_utf8_lossy(&out));
    if informational {
        assert_eq!(r.code, Some(500));
        assert!(encoded.last);
        return;
    }
    assert_eq!(r.code, Some(status.as_u16()));
    let after: Vec<(String, Vec<u8>)> = r
        .headers
        .iter()
        .filter(|h| !["content-length", "transfer-encoding", "connection", "trailer", "date"].contains(&h.name))
        .map(|h| (h.name.to_owned(), h.value.to_vec()))
        .collect();
    assert_eq!(after, before, "the ordinary fields, in order");
    let count = |name: &str| r.headers.iter().filter(|h| h.name == name).count();
    assert!(count("content-length") <= 1, "{:?}", String::from_utf8_lossy(&out));
    if matches!(encoded.framing, Framing::Chunked(_)) {
        assert_eq!(count("content-length"), 0, "{:?}", String::from_utf8_lossy(&out));
        assert_eq!(count("transfer-encoding"), 1);
    }
    if !keep_alive {
        assert!(encoded.last);
        let close = r
            .headers
            .iter()
            .filter(|h| h.name == "connection")
            .any(|h| h.value.split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close")));
        assert!(close, "a last response says close: {:?}", String::from_utf8_lossy(&out));
    }
}

/// A backend's response head, read by the lean client both ways — its fields in a map, and
/// passed through as bytes when it is plain — gives the same result: both refuse it, or both
/// read the same status, version, framing and keep-alive; the lines passed through are the
/// fields the proxy forwards from the map (hop-by-hop ones out), each ending in CRLF; and the
/// server's encoder writes the two alike, as a client reads fields. The first byte holds the
/// flags (HEAD, keep-alive, what is known of the body); the rest is the backend's bytes.
pub fn backend_head(data: &[u8]) {
    let Some((&flags, bytes)) = data.split_first() else { return };
    let (head_request, keep_alive) = (flags & 1 == 1, flags & 2 == 2);
    let body: encode::BodyLength = match (flags >> 2) & 3 {
        0 => None,
        1 => Some(None),
        _ => Some(Some(u64::from(flags >> 4))),
    };
    let in_map = upstream::parse_head(&mut BytesMut::from(bytes), head_request, false);
    let passed = upstream::parse_head(&mut BytesMut::from(bytes), head_request, true);
    let (mut m, mut r) = match (in_map, passed) {
        (Ok(Some(m)), Ok(Some(r))) => (m, r),
        (Ok(None), Ok(None)) | (Err(_), Err(_)) => return,
        (m, r) => panic!(
            "the two ways disagree: map {:?}, passed through {:?}",
            m.map(|h| h.is_some()),
            r.map(|h| h.is_some())
        ),
    };
    let facts = |h: &Head| (h.parts.status, h.parts.version, h.framing, h.keep_alive);
    assert_eq!(facts(&m), facts(&r));
    // As the proxy does before writing a response (nothing is left to strip in a passed-through one).
    stickylb::proxy::headers::strip_hop_by_hop(&mut m.parts.headers);
    stickylb::proxy::headers::strip_hop_by_hop(&mut r.parts.headers);
    let forwarded = fields(&m.parts.headers);
    match &r.raw {
        None => assert_eq!(fields(&r.parts.headers), forwarded, "a head not passed through is the map's"),
        Some(raw) => {
            assert!(r.parts.headers.is_empty(), "a passed-through head's fields are not in the map");
            let mut lines = Vec::new();
            raw.write(&mut lines, false);
            let text = String::from_utf8_lossy(&lines);
            assert!(text.is_empty() || text.ends_with("\r\n"), "{text:?}");
            let mut read = HeaderMap::new();
            for line in lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let line = line.strip_suffix(b"\r").expect("every line ends in CRLF");
                let colon = line.iter().position(|&b| b == b':').expect("name: value");
                let name = HeaderName::from_bytes(&line[..colon]).expect("a valid name");
                read.append(name, HeaderValue::from_bytes(line[colon + 1..].trim_ascii()).expect("a valid value"));
            }
            assert_eq!(fields(&read), forwarded, "the lines passed through are the fields forwarded");
            // What learning reads of them (`RawFields::fields`) is the same.
            let mut listed = HeaderMap::new();
            for (name, value) in raw.fields() {
                let name = HeaderName::from_bytes(name).expect("a valid name");
                listed.append(name, HeaderValue::from_bytes(value).expect("a valid value"));
            }
            assert_eq!(fields(&listed), forwarded, "the fields listed are the fields forwarded");
        }
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let ea = encode::head(&mut a, &mut m.parts, None, body, head_request, keep_alive);
    let eb = encode::head(&mut b, &mut r.parts, r.raw.as_ref(), body, head_request, keep_alive);
    assert_eq!(ea, eb);
    if ea.is_ok() {
        assert_eq!(as_read(&a), as_read(&b), "{:?} / {:?}", String::from_utf8_lossy(&a), String::from_utf8_lossy(&b));
    }
}

fn fields(h: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    h.iter().map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec())).collect()
}

/// An encoded head as a client reads it: the status line, then the fields by name (lower
/// case) in order of first appearance, each name's values in order; `Date` values blanked
/// (the encoder's own changes each second).
fn as_read(out: &[u8]) -> (Vec<u8>, Vec<(String, Vec<u8>)>) {
    let mut lines = out.split(|&b| b == b'\n');
    let status = lines.next().unwrap_or_default().to_vec();
    let mut map = HeaderMap::new();
    for line in lines.map(|l| l.strip_suffix(b"\r").unwrap_or(l)).filter(|l| !l.is_empty()) {
        let colon = line.iter().position(|&b| b == b':').expect("name: value");
        let name = HeaderName::from_bytes(&line[..colon]).expect("a valid name");
        let value = if name == http::header::DATE { b"*" } else { line[colon + 1..].trim_ascii() };
        map.append(name, HeaderValue::from_bytes(value).expect("a valid value"));
    }
    (status, fields(&map))
}
