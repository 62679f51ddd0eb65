//! Unit tests of the response head encoder (`encode.rs`), one per rule of hyper's server.

use super::{head, BodyLength, Encoded, Framing, Refused};
use http::{HeaderValue, Response, StatusCode, Version};

fn encode(
    resp: Response<()>,
    body: BodyLength,
    head_request: bool,
    keep_alive: bool,
) -> (String, Result<Encoded, Refused>) {
    let (mut parts, ()) = resp.into_parts();
    let mut dst = Vec::new();
    let r = head(&mut dst, &mut parts, None, body, head_request, keep_alive);
    assert!(parts.headers.is_empty(), "the map is emptied for reuse");
    let text = String::from_utf8(dst).unwrap();
    // The date's value changes: keep its name only.
    let text = match text.find("date: ") {
        Some(i) => format!("{}date: *\r\n\r\n", &text[..i]),
        None => text,
    };
    (text, r)
}

fn with(status: u16, fields: &[(&str, &str)]) -> Response<()> {
    let mut b = Response::builder().status(status);
    for (n, v) in fields {
        b = b.header(*n, *v);
    }
    b.body(()).unwrap()
}

fn ok(framing: Framing, last: bool) -> Result<Encoded, Refused> {
    Ok(Encoded { framing, last })
}

#[test]
fn a_known_length_body_is_sent_with_its_content_length_and_a_date() {
    let (t, r) = encode(with(200, &[("x-a", "1"), ("content-length", "5")]), Some(Some(5)), false, true);
    assert_eq!(t, "HTTP/1.1 200 OK\r\nx-a: 1\r\ncontent-length: 5\r\ndate: *\r\n\r\n");
    assert_eq!(r, ok(Framing::Length(5), false));
}

#[test]
fn a_known_length_without_the_field_gets_one() {
    let (t, r) = encode(with(404, &[]), Some(Some(12)), false, true);
    assert_eq!(t, "HTTP/1.1 404 Not Found\r\ncontent-length: 12\r\ndate: *\r\n\r\n");
    assert_eq!(r, ok(Framing::Length(12), false));
}

#[test]
fn an_unknown_length_is_chunked_and_an_http10_response_is_sent_until_close() {
    let (t, r) = encode(with(200, &[]), Some(None), false, true);
    assert_eq!(t, "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ndate: *\r\n\r\n");
    assert_eq!(r, ok(Framing::Chunked(None), false));
    let mut old = with(200, &[]);
    *old.version_mut() = Version::HTTP_10;
    let (t, r) = encode(old, Some(None), false, true);
    assert_eq!(t, "HTTP/1.0 200 OK\r\ndate: *\r\n\r\n");
    assert_eq!(r, ok(Framing::Close, true));
}

#[test]
fn an_unknown_length_with_a_content_length_field_uses_the_field() {
    let (t, r) = encode(with(200, &[("content-length", "7")]), Some(None), false, true);
    assert_eq!(t, "HTTP/1.1 200 OK\r\ncontent-length: 7\r\ndate: *\r\n\r\n");
    assert_eq!(r, ok(Framing::Length(7), false));
    let (_, r) = encode(with(200, &[("content-length", "x")]), Some(None), false, true);
    assert_eq!(r, Err(Refused));
}

#[test]
fn an_empty_body_gets_content_length_zero_except_on_head_204_and_304() {
    let (t, r) = encode(with(200, &[("content-length", "9")]), None, false, true);
    assert_eq!(t, "HTTP/1.1 200 OK\r\ncontent-length: 0\r\ndate: *\r\n\r\n");
    assert_eq!(r, ok(Framing::Length(0), false));
    let (t, _) = encode(with(200, &[("content-length", "9")]), None, true, true);
    assert_eq!(t, "HTTP/1.1 200 OK\r\ncontent-length: 9\r\ndate: *\r\n\r\n", "HEAD keeps the length it was told");
    let (t, _) = encode(with(204, &[]), None, false, true);
    assert_eq!(t, "HTTP/1.1 204 No Content\r\ndate: *\r\n\r\n");
    let (t, r) = encode(with(304, &[("etag", "\"a\"")]), Some(Some(3)), false, true);
    assert_eq!(t, "HTTP/1.1 304 Not Modified\r\netag: \"a\"\r\ndate: *\r\n\r\n");
    assert_eq!(r, ok(Framing::Length(0), false));
}

#[test]
fn a_head_response_keeps_its_length_but_sends_no_body() {
    let (t, r) = encode(with(200, &[]), Some(Some(40)), true, true);
    assert_eq!(t, "HTTP/1.1 200 OK\r\ncontent-length: 40\r\ndate: *\r\n\r\n");
    assert_eq!(r, ok(Framing::Length(0), false));
}

#[test]
fn a_closing_connection_says_so_once() {
    let (t, r) = encode(with(200, &[]), None, false, false);
    assert_eq!(t, "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\ndate: *\r\n\r\n");
    assert_eq!(r, ok(Framing::Length(0), true));
    let (t, _) = encode(with(200, &[("connection", "Close")]), None, false, false);
    assert!(t.contains("connection: Close\r\n") && !t.contains("close\r\n"), "{t}");
}

#[test]
fn a_connection_close_from_the_handler_ends_the_connection() {
    let (t, r) = encode(with(503, &[("connection", "close")]), Some(Some(3)), false, true);
    assert_eq!(t, "HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 3\r\ndate: *\r\n\r\n");
    assert_eq!(r, ok(Framing::Length(3), true));
}

#[test]
fn repeated_fields_are_written_line_by_line_and_list_fields_joined() {
    let mut resp = with(200, &[("set-cookie", "a=1"), ("set-cookie", "b=2"), ("vary", "x")]);
    resp.headers_mut().append("connection", HeaderValue::from_static("x-one"));
    resp.headers_mut().append("connection", HeaderValue::from_static("x-two"));
    let (t, _) = encode(resp, None, false, true);
    assert_eq!(
        t,
        "HTTP/1.1 200 OK\r\nset-cookie: a=1\r\nset-cookie: b=2\r\nvary: x\r\nconnection: x-one, x-two\r\ncontent-length: 0\r\ndate: *\r\n\r\n"
    );
}

#[test]
fn the_reason_phrase_the_backend_gave_is_kept() {
    let mut resp = with(200, &[]);
    resp.extensions_mut().insert(hyper::ext::ReasonPhrase::from_static(b"Fine"));
    let (t, _) = encode(resp, None, false, true);
    assert!(t.starts_with("HTTP/1.1 200 Fine\r\n"), "{t}");
    let (t, _) = encode(with(599, &[]), None, false, true);
    assert!(t.starts_with("HTTP/1.1 599 <none>\r\n"), "{t}");
}

#[test]
fn a_date_field_given_is_kept_instead_of_ours() {
    let (mut parts, ()) = with(200, &[("date", "Sun, 06 Nov 1994 08:49:37 GMT")]).into_parts();
    let mut dst = Vec::new();
    head(&mut dst, &mut parts, None, None, false, true).unwrap();
    assert_eq!(dst, b"HTTP/1.1 200 OK\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\ncontent-length: 0\r\n\r\n");
}

#[test]
fn a_trailer_field_announces_the_trailers_a_chunked_body_may_send() {
    let (t, r) = encode(with(200, &[("trailer", "x-sum, Content-Type")]), Some(None), false, true);
    assert_eq!(t, "HTTP/1.1 200 OK\r\ntrailer: x-sum, Content-Type\r\ntransfer-encoding: chunked\r\ndate: *\r\n\r\n");
    assert_eq!(r, ok(Framing::Chunked(Some(vec!["x-sum".parse().unwrap(), http::header::CONTENT_TYPE])), false));
}

#[test]
fn a_transfer_coding_not_ending_in_chunked_gets_chunked_added() {
    let (t, r) = encode(with(200, &[("transfer-encoding", "gzip")]), Some(None), false, true);
    assert_eq!(t, "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\ndate: *\r\n\r\n");
    assert_eq!(r, ok(Framing::Chunked(None), false));
}

#[test]
fn a_1xx_as_the_final_response_becomes_a_500_and_closes() {
    let (t, r) = encode(with(103, &[("link", "x")]), None, false, true);
    assert_eq!(t, "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\ndate: *\r\n\r\n");
    assert_eq!(r, ok(Framing::Length(0), true));
    let _ = StatusCode::OK;
}

/// A backend's head parsed by the lean client: its fields in the map, or passed through.
fn parsed(bytes: &[u8], head_request: bool, pass_through: bool) -> crate::proxy::upstream::Head {
    let mut buf = bytes::BytesMut::from(bytes);
    let head = crate::proxy::upstream::parse_head(&mut buf, head_request, pass_through);
    head.ok().flatten().expect("a complete, valid head")
}

/// What a client reads of an encoded head: status line, then the fields grouped by name in
/// order of first appearance (the map's order; a passed-through head keeps the backend's),
/// names lower-cased, our own `Date`'s value left out.
fn read_back(out: &[u8]) -> (String, Vec<(String, String)>) {
    let text = String::from_utf8(out.to_vec()).unwrap();
    let (status, rest) = text.split_once("\r\n").unwrap();
    let mut map = http::HeaderMap::new();
    for line in rest.split("\r\n").filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').unwrap();
        map.append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value.trim()).unwrap(),
        );
    }
    let fields = map.iter().map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()));
    (
        status.to_owned(),
        fields.map(|(n, v)| if n == "date" && v.len() == 29 { (n, "*".into()) } else { (n, v) }).collect(),
    )
}

/// The encoder writes a passed-through head as it writes the same head from a map: the same
/// status line, fields (with the proxy's own added), length and date, framing and end.
#[test]
fn a_passed_through_head_is_written_as_its_map_would_be() {
    let fields = [
        "Server: nginx\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Type: text/plain\r\nContent-Length: 14\r\nConnection: keep-alive\r\n",
        "content-length: 0\r\n",
        "",
        "X-A: 1\r\nSet-Cookie: a=1\r\nx-a: 2\r\nSet-Cookie: b=2\r\nKeep-Alive: timeout=5\r\nConnection: close\r\n",
        "Connection: keep-alive\r\nContent-Length: 5\r\nKeep-Alive: timeout=5\r\nX-Trail: v  \r\n",
        "x-empty:\r\nContent-Length: 007\r\nx-obs: caf\u{e9}\r\n",
    ];
    let statuses = ["HTTP/1.1 200 OK", "HTTP/1.0 200 OK", "HTTP/1.1 404 Not Found", "HTTP/1.1 204 No Content"];
    let more = ["HTTP/1.1 304 Not Modified", "HTTP/1.1 200 Fine", "HTTP/1.1 599 Odd"];
    let bodies: [super::BodyLength; 5] = [None, Some(None), Some(Some(0)), Some(Some(14)), Some(Some(5))];
    let mut compared = 0;
    for (f, status) in fields.iter().flat_map(|f| statuses.iter().chain(&more).map(move |s| (f, s))) {
        let bytes = format!("{status}\r\n{f}\r\n");
        for (body, head_request, keep_alive, ours) in bodies
            .iter()
            .flat_map(|b| [(b, false), (b, true)])
            .flat_map(|(b, h)| [(b, h, true, false), (b, h, false, false), (b, h, true, true), (b, h, false, true)])
        {
            let mut outs = Vec::new();
            for pass_through in [false, true] {
                let mut head = parsed(bytes.as_bytes(), head_request, pass_through);
                assert_eq!(head.raw.is_some(), pass_through, "{bytes:?} is plain");
                if ours {
                    head.parts.headers.append("set-cookie", HeaderValue::from_static("STICKYLB=x; Path=/"));
                    head.parts.headers.insert("x-stickylb-backend", HeaderValue::from_static("b1"));
                }
                let mut out = Vec::new();
                let r = head_of(&mut out, &mut head, *body, head_request, keep_alive);
                outs.push((read_back(&out), r));
            }
            assert_eq!(outs[0], outs[1], "{bytes:?}, body {body:?}, HEAD {head_request}, keep-alive {keep_alive}");
            compared += 1;
        }
    }
    assert_eq!(compared, fields.len() * 7 * 5 * 8);
}

fn head_of(
    out: &mut Vec<u8>,
    h: &mut crate::proxy::upstream::Head,
    body: super::BodyLength,
    head_request: bool,
    keep_alive: bool,
) -> Result<Encoded, Refused> {
    head(out, &mut h.parts, h.raw.as_ref(), body, head_request, keep_alive)
}

/// Heads with a field the proxy or the encoder edits or joins are not passed through.
#[test]
fn a_head_with_fields_to_edit_goes_through_the_map() {
    for fields in [
        "transfer-encoding: chunked\r\n",
        "Connection: close, x-a\r\nx-a: 1\r\n",
        "content-length: 1\r\ncontent-length: 1\r\n",
        "content-length: 1, 1\r\n",
        "trailer: x-sum\r\ncontent-length: 1\r\n",
        "upgrade: h2c\r\ncontent-length: 1\r\n",
        "te: trailers\r\ncontent-length: 1\r\n",
        "Proxy-Authenticate: Basic\r\ncontent-length: 1\r\n",
        "proxy-: x\r\ncontent-length: 1\r\n",
        "connection: keep-alive\r\nconnection: keep-alive\r\nkeep-alive: timeout=5\r\ncontent-length: 1\r\n",
        "x-a: 1\ncontent-length: 1\r\n",
        "X-Stickylb-Backend: spoofed\r\ncontent-length: 1\r\n",
    ] {
        let bytes = format!("HTTP/1.1 200 OK\r\n{fields}\r\n");
        let head = parsed(bytes.as_bytes(), false, true);
        assert!(head.raw.is_none(), "{bytes:?} passed through");
        assert!(!head.parts.headers.is_empty(), "{bytes:?}");
    }
    let switching = parsed(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n", false, true);
    assert!(switching.raw.is_none());
    let plain = parsed(b"HTTP/1.1 200 OK\r\nServer: x\r\nContent-Length: 1\r\n\r\n", false, true);
    let raw = plain.raw.as_ref().expect("passed through");
    let mut lines = Vec::new();
    raw.write(&mut lines, false);
    assert_eq!(lines, b"Server: x\r\nContent-Length: 1\r\n", "as the backend wrote them");
}
