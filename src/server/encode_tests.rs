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
    let r = head(&mut dst, &mut parts, body, head_request, keep_alive);
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
    head(&mut dst, &mut parts, None, false, true).unwrap();
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
