//! The request head of the server's own HTTP/1.1 path ([`super::h1`]): parsed in place with
//! `httparse` (the parser hyper uses), its header values slices of the read buffer.
//!
//! It decides which requests that path serves: HTTP/1.1, origin-form target, no body
//! (no `Content-Length`, no `Transfer-Encoding`), no `Upgrade`, no `Expect`, not `CONNECT`, at
//! most [`STACK_HEADERS`] lines — nearly every request. Anything else, including every head
//! that does not parse, is left in the buffer for hyper's server, which then takes the
//! connection over with those bytes: its answers to bad or unusual input stay what they were.
//! Owns no I/O and no policy beyond that choice.

use crate::proxy::headers::has_token;
use crate::proxy::upstream::spans::{Span, Spans, STACK_HEADERS};
use bytes::BytesMut;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, Version};

/// hyper's server answers 414 above this (its `MAX_URI_LEN`): such a target goes to it.
const MAX_TARGET: usize = (u16::MAX - 1) as usize;

/// What the buffer holds.
#[allow(clippy::large_enum_variant)] // moved once per request; a box would allocate
pub enum Parsed {
    /// A head this path serves, taken out of the buffer.
    Request(Request),
    /// An incomplete head (or nothing yet): read more.
    Partial,
    /// Something hyper's server must see: the buffer is left as it was.
    Hyper,
}

/// A request without a body, as the proxy takes it.
pub struct Request {
    pub parts: http::request::Parts,
    /// The client did not ask to close (`Connection: close`).
    pub keep_alive: bool,
    /// The client accepts trailers (`TE: trailers`): hyper's server sends them only then.
    pub trailers: bool,
}

/// What the parse found, as positions in the buffer.
struct Located {
    len: usize,
    method: Span,
    target: Span,
    keep_alive: bool,
    trailers: bool,
}

/// Parse the head at the start of `buf`. The header map is `headers` (a recycled, empty map)
/// when a request is returned.
pub fn parse(buf: &mut BytesMut, headers: &mut HeaderMap, spans: &mut Spans) -> Parsed {
    let located = match locate(buf, spans) {
        Ok(Some(l)) => l,
        Ok(None) => return Parsed::Partial,
        Err(()) => return Parsed::Hyper,
    };
    let head = buf.split_to(located.len).freeze();
    match build(&head, &located, spans, headers) {
        Some(parts) => Parsed::Request(Request { parts, keep_alive: located.keep_alive, trailers: located.trailers }),
        None => {
            // Put the head back for hyper (a copy, on this rare path only).
            let mut back = BytesMut::with_capacity(head.len() + buf.len());
            back.extend_from_slice(&head);
            back.extend_from_slice(buf);
            *buf = back;
            headers.clear();
            Parsed::Hyper
        }
    }
}

/// `Err` for anything hyper's server must take.
fn locate(buf: &[u8], spans: &mut Spans) -> Result<Option<Located>, ()> {
    // Not initialised first (1.5 KB): httparse writes the lines it returns.
    let mut lines = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_HEADERS];
    let mut r = httparse::Request::new(&mut []);
    let len = match r.parse_with_uninit_headers(buf, &mut lines) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(()),
    };
    let (Some(method), Some(target), Some(1)) = (r.method, r.path, r.version) else { return Err(()) };
    if method == "CONNECT" || !target.starts_with('/') || target.len() > MAX_TARGET {
        return Err(());
    }
    let (mut keep_alive, mut trailers) = (true, false);
    for h in r.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"connection") {
            keep_alive &= !has_token(h.value, "close");
        } else if name.eq_ignore_ascii_case(b"te") {
            trailers |= has_token(h.value, "trailers");
        } else if [&b"content-length"[..], b"transfer-encoding", b"upgrade", b"expect"]
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n))
        {
            return Err(());
        }
    }
    spans.fill(r.headers.iter().map(|h| (Span::of(buf, h.name.as_bytes()), Span::of(buf, h.value))));
    Ok(Some(Located {
        len,
        method: Span::of(buf, method.as_bytes()),
        target: Span::of(buf, target.as_bytes()),
        keep_alive,
        trailers,
    }))
}

/// The request's parts, its target and header values slices of `head`; `None` for what
/// hyper's server must answer (a target or a field the `http` types refuse).
fn build(head: &bytes::Bytes, l: &Located, spans: &Spans, headers: &mut HeaderMap) -> Option<http::request::Parts> {
    let method = Method::from_bytes(&head[l.method.range()]).ok()?;
    let uri = Uri::from_maybe_shared(head.slice(l.target.range())).ok()?;
    headers.reserve(spans.as_slice().len());
    for &(name, value) in spans.as_slice() {
        let name = HeaderName::from_bytes(&head[name.range()]).ok()?;
        let value = HeaderValue::from_maybe_shared(head.slice(value.range())).ok()?;
        headers.append(name, value);
    }
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    parts.headers = std::mem::take(headers);
    Some(parts)
}

#[cfg(test)]
mod tests {
    use super::{parse, Parsed};
    use crate::proxy::upstream::spans::Spans;
    use bytes::BytesMut;
    use http::HeaderMap;

    fn run(bytes: &[u8]) -> (Parsed, BytesMut) {
        let mut buf = BytesMut::from(bytes);
        let parsed = parse(&mut buf, &mut HeaderMap::new(), &mut Spans::new());
        (parsed, buf)
    }

    fn goes_to_hyper(bytes: &[u8]) {
        let (parsed, buf) = run(bytes);
        assert!(matches!(parsed, Parsed::Hyper), "{:?} was not left to hyper", String::from_utf8_lossy(bytes));
        assert_eq!(&buf[..], bytes, "the bytes are left as they were");
    }

    #[test]
    fn a_get_is_served_and_taken_out_of_the_buffer_leaving_the_next_request() {
        let (parsed, buf) = run(b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nCookie: s=1\r\nX: \xe9\r\n\r\nGET /next");
        let Parsed::Request(r) = parsed else { panic!("not served") };
        assert_eq!(r.parts.method, http::Method::GET);
        assert_eq!(r.parts.uri, "/a?b=1");
        assert_eq!(r.parts.version, http::Version::HTTP_11);
        assert_eq!(r.parts.headers.len(), 3);
        assert_eq!(r.parts.headers["cookie"], "s=1");
        assert_eq!(r.parts.headers["x"].as_bytes(), b"\xe9");
        assert!(r.keep_alive && !r.trailers);
        assert_eq!(&buf[..], b"GET /next");
    }

    #[test]
    fn connection_close_and_te_trailers_are_read_as_hyper_reads_them() {
        let (parsed, _) = run(b"HEAD / HTTP/1.1\r\nConnection: keep-alive, Close\r\nTE: gzip, trailers\r\n\r\n");
        let Parsed::Request(r) = parsed else { panic!("not served") };
        assert!(!r.keep_alive && r.trailers);
    }

    #[test]
    fn an_incomplete_head_waits_for_more() {
        assert!(matches!(run(b"GET / HTTP/1.1\r\nHost: x\r\n").0, Parsed::Partial));
        assert!(matches!(run(b"").0, Parsed::Partial));
    }

    #[test]
    fn bodies_upgrades_expect_connect_http10_and_other_targets_go_to_hyper() {
        goes_to_hyper(b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nab");
        goes_to_hyper(b"GET / HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
        goes_to_hyper(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
        goes_to_hyper(b"GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
        goes_to_hyper(b"PUT / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n");
        goes_to_hyper(b"CONNECT h:443 HTTP/1.1\r\n\r\n");
        goes_to_hyper(b"GET / HTTP/1.0\r\n\r\n");
        goes_to_hyper(b"GET http://h/ HTTP/1.1\r\n\r\n");
        goes_to_hyper(b"OPTIONS * HTTP/1.1\r\n\r\n");
        goes_to_hyper(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    }

    #[test]
    fn bad_heads_go_to_hyper_untouched() {
        goes_to_hyper(b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n");
        goes_to_hyper(b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n");
        goes_to_hyper(b"GET / HTTP/1.1\r\nY: folded\r\n  more\r\n\r\n");
        goes_to_hyper(b"G\x01T / HTTP/1.1\r\n\r\n");
        goes_to_hyper(b"GET /a b HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn a_target_the_uri_type_refuses_is_put_back_for_hyper() {
        goes_to_hyper(b"GET /a<b HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn more_lines_than_the_stack_holds_go_to_hyper() {
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..49 {
            head.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        goes_to_hyper(&head);
    }
}
