//! The lean client against hyper's, on the same bytes: generated responses (every framing,
//! 1xx first, HEAD/204/304, HTTP/1.0, `Connection` variants, trailers, odd reason phrases,
//! written in pieces) and a list of hostile ones. Both must agree on the status, version,
//! headers (as the proxy forwards them), reason phrase, body, trailers, whether the connection
//! can carry the next request — or both refuse the response.

use super::decode::Decoder;
use super::h1::{Outgoing, H1};
use super::Body;
use bytes::Bytes;
use http::{HeaderMap, Method, Request};
use http_body_util::BodyExt;
use proptest::prelude::*;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What a client made of one response: `Err` when it refused it.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    status: u16,
    version: http::Version,
    headers: Vec<(String, Vec<u8>)>,
    reason: Option<Vec<u8>>,
    body: Vec<u8>,
    trailers: Option<Vec<(String, Vec<u8>)>>,
    /// A second request on the same connection was answered.
    reused: bool,
}

impl Seen {
    fn of(p: &http::response::Parts, body: Vec<u8>, trailers: Option<Vec<(String, Vec<u8>)>>, reused: bool) -> Seen {
        let reason = p.extensions.get::<hyper::ext::ReasonPhrase>().map(|r| r.as_bytes().to_vec());
        Seen {
            status: p.status.as_u16(),
            version: p.version,
            headers: forwarded(&p.headers),
            reason,
            body,
            trailers,
            reused,
        }
    }
}

const SECOND: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

/// A backend that answers the first request on each connection with `pieces` (a short pause
/// between them), then closes if `close`, else answers a second request with [`SECOND`].
async fn backend(pieces: Vec<Vec<u8>>, close: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let pieces = pieces.clone();
            tokio::spawn(async move {
                if !read_head(&mut s).await {
                    return;
                }
                for p in &pieces {
                    if s.write_all(p).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                if close {
                    return;
                }
                if read_head(&mut s).await {
                    let _ = s.write_all(SECOND).await;
                }
                let _ = s.read(&mut [0u8; 64]).await;
            });
        }
    });
    addr
}

async fn read_head(s: &mut TcpStream) -> bool {
    let mut seen = Vec::new();
    let mut b = [0u8; 1024];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut b).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => seen.extend_from_slice(&b[..n]),
        }
    }
    true
}

/// The fields as the proxy forwards them (hop-by-hop ones out): the lean client already
/// leaves out a `Connection` that names no other field, and `Keep-Alive`; hyper's keeps them.
fn forwarded(h: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    let mut h = h.clone();
    crate::proxy::headers::strip_hop_by_hop(&mut h);
    list(&h)
}

fn list(h: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    h.iter().map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec())).collect()
}

async fn collect(mut body: Body) -> Result<(Vec<u8>, Option<Vec<(String, Vec<u8>)>>, Body), ()> {
    let mut data = Vec::new();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| ())?;
        match frame.into_data() {
            Ok(d) => data.extend_from_slice(&d),
            Err(f) => trailers = f.into_trailers().ok().map(|t| list(&t)),
        }
    }
    Ok((data, trailers, body))
}

fn request(method: &Method) -> http::request::Parts {
    Request::builder().method(method.clone()).uri("/x").header("host", "b").body(()).unwrap().into_parts().0
}

/// The lean client; `pass_through`: a plain head's fields stay bytes (read back here as the
/// client would read the lines the server writes from them).
async fn lean(addr: SocketAddr, method: &Method, pass_through: bool) -> Result<Seen, ()> {
    let parts = request(method);
    let out = Outgoing { parts: &parts, forwarding: None, host: "b", previous: None, pass_through };
    let mut h1 = H1::new(TcpStream::connect(addr).await.unwrap());
    h1.write_request(out).await.map_err(|_| ())?;
    let mut head = h1.read_head(*method == Method::HEAD, pass_through).await.map_err(|_| ())?;
    // Nothing strips a passed-through head's fields: they must be the forwarded ones as they are.
    let raw = head.raw.take().map(|raw| {
        assert!(head.parts.headers.is_empty(), "a passed-through head's fields are not in the map");
        list(&raw.to_map())
    });
    let body = Body::Lean(super::body::LeanBody::new(h1, Decoder::new(head.framing), head.keep_alive));
    let (body, trailers, mut rest) = collect(body).await?;
    let reused = match rest.take_conn() {
        Some(mut again) => {
            let get = request(&Method::GET);
            let out = Outgoing { parts: &get, forwarding: None, host: "b", previous: None, pass_through };
            again.write_request(out).await.is_ok()
                && again.read_head(false, pass_through).await.is_ok_and(|h| h.parts.status == 200)
        }
        None => false,
    };
    let mut seen = Seen::of(&head.parts, body, trailers, reused);
    if let Some(fields) = raw {
        seen.headers = fields;
    }
    Ok(seen)
}

async fn hyper(addr: SocketAddr, method: &Method) -> Result<Seen, ()> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .max_headers(crate::proxy::MAX_HEADER_LINES)
        .handshake::<_, http_body_util::Empty<Bytes>>(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|_| ())?;
    tokio::spawn(conn);
    let req = Request::builder().method(method.clone()).uri("/x").header("host", "b").body(Default::default()).unwrap();
    let resp = sender.send_request(req).await.map_err(|_| ())?;
    let (p, body) = resp.into_parts();
    let (body, trailers, _) = collect(Body::Hyper(body)).await?;
    let again = Request::builder().uri("/x").header("host", "b").body(Default::default()).unwrap();
    let reused = match tokio::time::timeout(Duration::from_secs(2), async {
        sender.ready().await.ok()?;
        sender.send_request(again).await.ok()
    })
    .await
    {
        Ok(Some(r)) => r.status() == 200,
        _ => false,
    };
    Ok(Seen::of(&p, body, trailers, reused))
}

/// Both clients on the same response bytes (the lean one twice: its head in a map, and
/// passed through when plain). Asserts that the lean client's two ways agree.
fn compare(bytes: &[u8], splits: &[usize], close: bool, method: Method) -> (Result<Seen, ()>, Result<Seen, ()>) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut pieces = Vec::new();
        let mut at = 0;
        for &s in splits.iter().filter(|&&s| s > 0 && s < bytes.len()) {
            if s > at {
                pieces.push(bytes[at..s].to_vec());
                at = s;
            }
        }
        pieces.push(bytes[at..].to_vec());
        let addr = backend(pieces, close).await;
        let t = Duration::from_secs(5);
        let l = tokio::time::timeout(t, lean(addr, &method, false)).await.expect("lean client hung");
        let raw = tokio::time::timeout(t, lean(addr, &method, true)).await.expect("lean client hung");
        assert_eq!(l, raw, "head in a map / passed through: {:?}", String::from_utf8_lossy(bytes));
        let h = tokio::time::timeout(t, hyper(addr, &method)).await.expect("hyper client hung");
        (l, h)
    })
}

#[derive(Debug, Clone)]
enum Framing {
    Length,
    Chunked { sizes: Vec<usize>, ext: bool, trailers: Vec<(String, String)> },
    Close,
}

#[derive(Debug, Clone)]
struct Case {
    status: u16,
    http10: bool,
    informational: bool,
    reason: Option<String>,
    connection: Option<&'static str>,
    headers: Vec<(String, String)>,
    framing: Framing,
    body: Vec<u8>,
    head: bool,
    splits: Vec<usize>,
}

impl Case {
    fn bytes(&self) -> Vec<u8> {
        let mut b = Vec::new();
        if self.informational {
            b.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        let reason = self.reason.clone().unwrap_or_else(|| {
            http::StatusCode::from_u16(self.status).ok().and_then(|s| s.canonical_reason()).unwrap_or("X").to_owned()
        });
        let v = if self.http10 { "1.0" } else { "1.1" };
        b.extend_from_slice(format!("HTTP/{v} {} {reason}\r\n", self.status).as_bytes());
        for (k, v) in &self.headers {
            b.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        if let Some(c) = self.connection {
            b.extend_from_slice(format!("connection: {c}\r\n").as_bytes());
        }
        let no_body = self.head || matches!(self.status, 204 | 304);
        match &self.framing {
            Framing::Length => b.extend_from_slice(format!("content-length: {}\r\n\r\n", self.body.len()).as_bytes()),
            Framing::Chunked { .. } => b.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n"),
            Framing::Close => b.extend_from_slice(b"\r\n"),
        }
        if no_body {
            return b;
        }
        match &self.framing {
            Framing::Chunked { sizes, ext, trailers } => {
                let mut rest = &self.body[..];
                for &n in sizes {
                    let n = n.min(rest.len());
                    if n == 0 {
                        break;
                    }
                    let e = if *ext { ";name=value" } else { "" };
                    b.extend_from_slice(format!("{n:x}{e}\r\n").as_bytes());
                    b.extend_from_slice(&rest[..n]);
                    b.extend_from_slice(b"\r\n");
                    rest = &rest[n..];
                }
                if !rest.is_empty() {
                    b.extend_from_slice(format!("{:X}\r\n", rest.len()).as_bytes());
                    b.extend_from_slice(rest);
                    b.extend_from_slice(b"\r\n");
                }
                b.extend_from_slice(b"0\r\n");
                for (k, v) in trailers {
                    b.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
                }
                b.extend_from_slice(b"\r\n");
            }
            _ => b.extend_from_slice(&self.body),
        }
        b
    }

    /// The backend closes after the response when its body runs to the close.
    fn closes(&self) -> bool {
        matches!(self.framing, Framing::Close) || self.connection == Some("close")
    }
}

fn token() -> impl Strategy<Value = String> {
    "x-[a-z0-9-]{1,12}"
}

fn case() -> impl Strategy<Value = Case> {
    let framing = prop_oneof![
        Just(Framing::Length),
        (
            prop::collection::vec(1usize..300, 0..6),
            any::<bool>(),
            prop::collection::vec((token(), "[ -~]{0,20}"), 0..3)
        )
            .prop_map(|(sizes, ext, trailers)| Framing::Chunked { sizes, ext, trailers }),
        Just(Framing::Close),
    ];
    (
        prop::sample::select(vec![200u16, 201, 204, 206, 299, 304, 404, 500, 503]),
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.15),
        prop::option::weighted(0.3, "[A-Za-z ]{0,16}"),
        prop::sample::select(vec![None, Some("close"), Some("keep-alive"), Some("Keep-Alive, x-foo")]),
        prop::collection::vec((token(), "[!-~][ -~]{0,30}"), 0..6),
        framing,
        prop::collection::vec(any::<u8>(), 0..2000),
        prop::bool::weighted(0.2),
        prop::collection::vec(0usize..2500, 0..4),
    )
        .prop_map(|(status, http10, informational, reason, connection, headers, framing, body, head, splits)| {
            Case { status, http10, informational, reason, connection, headers, framing, body, head, splits }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn lean_and_hyper_agree_on_generated_responses(c in case()) {
        let method = if c.head { Method::HEAD } else { Method::GET };
        let mut splits = c.splits.clone();
        splits.sort_unstable();
        let (lean, hyper) = compare(&c.bytes(), &splits, c.closes(), method);
        prop_assert_eq!(lean, hyper, "response bytes: {:?}", String::from_utf8_lossy(&c.bytes()));
    }
}

/// Responses a backend should not send: both clients refuse them, or read them the same way.
const HOSTILE: &[&[u8]] = &[
    b"HTTP/1.1 200 OK\r\ncontent-length: abc\r\n\r\nxx",
    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nxxx",
    b"HTTP/1.1 200 OK\r\ncontent-length: 2, 2\r\n\r\nxx",
    b"HTTP/1.1 200 OK\r\ncontent-length: +2\r\n\r\nxx",
    b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n2\r\nxx\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n2\r\nxx\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\nxx",
    b"HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nxx\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nxx\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nxxyy0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nxx\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nffffffffffffffffff\r\nxx\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
    b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nx-a : b\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nx-a: b\r\n folded\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nx-a: b\x00c\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 99 Odd\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 1000 Odd\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/2.0 200 OK\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\ncontent-length: 2\n\nxx",
    b"HTTP/1.1 200\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\nconnection: upgrade\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nxxEXTRA",
    b"garbage\r\n\r\n",
    b"",
];

#[test]
fn lean_and_hyper_agree_on_hostile_responses() {
    for bytes in HOSTILE {
        let (lean, hyper) = compare(bytes, &[], true, Method::GET);
        assert_eq!(lean.is_ok(), hyper.is_ok(), "{:?}: lean {lean:?}, hyper {hyper:?}", String::from_utf8_lossy(bytes));
        if let (Ok(l), Ok(h)) = (&lean, &hyper) {
            assert_eq!(
                (l.status, &l.headers, &l.body),
                (h.status, &h.headers, &h.body),
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }
}

#[test]
fn many_header_lines_are_read_up_to_the_limit() {
    let mut ok = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..500 {
        ok.extend_from_slice(format!("x-h{i}: v\r\n").as_bytes());
    }
    ok.extend_from_slice(b"content-length: 0\r\n\r\n");
    let (lean, hyper) = compare(&ok, &[], false, Method::GET);
    assert_eq!(lean.as_ref().map(|s| s.headers.len()), Ok(501));
    assert_eq!(lean, hyper);
    let mut too_many = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..600 {
        too_many.extend_from_slice(format!("x-h{i}: v\r\n").as_bytes());
    }
    too_many.extend_from_slice(b"\r\n");
    let (lean, hyper) = compare(&too_many, &[], true, Method::GET);
    assert!(lean.is_err() && hyper.is_err(), "lean {lean:?}, hyper {hyper:?}");
}

/// The lean client consumes this hop's own `Connection` (and `Keep-Alive`) rather than handing
/// them on to be stripped; a `Connection` naming another field stays, for the proxy to strip
/// that field too.
#[test]
fn the_lean_client_keeps_only_a_connection_field_that_names_another() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let names = |bytes: &'static [u8]| {
        rt.block_on(async {
            let addr = backend(vec![bytes.to_vec()], true).await;
            let parts = request(&Method::GET);
            let mut h1 = H1::new(TcpStream::connect(addr).await.unwrap());
            let out = Outgoing { parts: &parts, forwarding: None, host: "b", previous: None, pass_through: false };
            h1.write_request(out).await.unwrap();
            let head = h1.read_head(false, false).await.unwrap();
            (head.parts.headers.keys().map(|k| k.as_str().to_owned()).collect::<Vec<_>>(), head.keep_alive)
        })
    };
    let own =
        b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive\r\nKeep-Alive: timeout=5\r\nx-a: 1\r\ncontent-length: 0\r\n\r\n";
    assert_eq!(names(own), (vec!["x-a".to_owned(), "content-length".to_owned()], true));
    let closing = b"HTTP/1.1 200 OK\r\nconnection: close , keep-alive\r\ncontent-length: 0\r\n\r\n";
    assert_eq!(names(closing), (vec!["content-length".to_owned()], false));
    let naming = b"HTTP/1.1 200 OK\r\nconnection: close, x-a\r\nx-a: 1\r\ncontent-length: 0\r\n\r\n";
    assert_eq!(names(naming), (vec!["connection".to_owned(), "x-a".to_owned(), "content-length".to_owned()], false));
}

/// A `Connection` token is read from visible ASCII only, as hyper does: `close` followed by a
/// non-breaking space is no `close` (a text trim would take it for one).
#[test]
fn a_connection_value_outside_visible_ascii_closes_nothing() {
    let bytes = b"HTTP/1.1 200 OK\r\nconnection: close\xc2\xa0\r\ncontent-length: 2\r\n\r\nok";
    let (lean, hyper) = compare(bytes, &[], false, Method::GET);
    assert_eq!(hyper.as_ref().map(|s| s.reused), Ok(true));
    assert_eq!(lean, hyper);
}

/// A parsed response head has room for the one field the proxy adds to most responses (a new
/// session's `Set-Cookie`): adding it does not grow the map, which would allocate twice.
#[test]
fn a_response_head_has_room_for_one_more_field() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    for fields in 0..12 {
        let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
        (0..fields).for_each(|i| head.extend_from_slice(format!("x-{i}: v\r\n").as_bytes()));
        head.extend_from_slice(b"content-length: 0\r\n\r\n");
        let map = rt.block_on(async {
            let addr = backend(vec![head], true).await;
            let parts = request(&Method::GET);
            let mut h1 = H1::new(TcpStream::connect(addr).await.unwrap());
            let out = Outgoing { parts: &parts, forwarding: None, host: "b", previous: None, pass_through: false };
            h1.write_request(out).await.unwrap();
            h1.read_head(false, false).await.unwrap().parts.headers
        });
        assert_eq!(map.len(), fields + 1);
        assert!(map.capacity() > map.len(), "{} fields, room for {}", map.len(), map.capacity());
    }
}
