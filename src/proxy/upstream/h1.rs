//! The lean HTTP/1.1 client: one keep-alive connection to a backend, driven by the request's
//! own task. The request head is written straight into the socket from the prepared head (no
//! copy of the header map, no channel, no connection task), the response head is parsed in
//! place with `httparse` (the parser hyper uses) and its header values are slices of the read
//! buffer — or, for a plain head the server's own path will write, its field lines are kept as
//! bytes ([`super::raw`]); the body is read by [`super::decode`] from the same buffer. This hop's own fields
//! (`Keep-Alive`, a `Connection` naming no other field) are read and left out of the parts:
//! the proxy would only strip them.
//!
//! It serves requests without a body that are no upgrade (nearly all of them: GET, HEAD, ...);
//! the others go through hyper's client ([`super::Conn::Hyper`]), which can stream a request
//! body while the response arrives and hand the socket over to a tunnel. Framing follows
//! hyper's client exactly (RFC 9112 6.3, checked by `differential.rs`): 1xx other than 101
//! are skipped; HEAD, 204 and 304 have no body; a 101 ends the connection; Transfer-Encoding
//! (chunked last: chunked, else until close; refused from HTTP/1.0) wins over Content-Length;
//! differing or invalid lengths are an error; otherwise the body lasts until the backend
//! closes.

use super::decode::Framing;
use super::raw::RawFields;
use super::spans::{Span, Spans, STACK_HEADERS};
use crate::proxy::headers::{add_length, has_token, last_coding_is_chunked, push_line as line};
use bytes::{Bytes, BytesMut};
use http::{header, request, HeaderName, HeaderValue, StatusCode, Version};
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A response head may be this long (hyper's client reads up to ~400 KB before giving up).
const MAX_HEAD_BYTES: usize = 8192 + 4096 * 100;
/// Room made in the read buffer before each read.
const READ_SIZE: usize = 8192;

/// One connection to a backend, with its read buffer (what the backend sent and nobody
/// consumed yet) and its write buffer (reused for every request head).
pub struct H1 {
    stream: TcpStream,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    /// The current response's head, when it was passed through ([`super::raw`]); dropped
    /// when the connection goes back to the pool (it holds part of the read buffer).
    pub raw: Option<RawFields>,
}

/// Why a response could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("connection closed before a response")]
    Closed,
    #[error("reading the response: {0}")]
    Io(#[from] io::Error),
    #[error("invalid response head: {0}")]
    Invalid(&'static str),
}

/// The response head, its body's framing and whether the connection can carry another request.
/// A plain head's fields are in `raw`, and `parts.headers` is empty (with room for the fields
/// the proxy adds).
pub struct Head {
    pub parts: http::response::Parts,
    pub framing: Framing,
    pub keep_alive: bool,
    pub raw: Option<RawFields>,
}

/// What the request head is written from: the prepared client head, this hop's forwarding
/// fields, the `Host` for a request without one (HTTP/1.0), the backend a session moved away from.
#[derive(Clone, Copy)]
pub struct Outgoing<'a> {
    pub parts: &'a request::Parts,
    pub forwarding: Option<&'a crate::proxy::forwarding::Forwarding>,
    pub host: &'a str,
    pub previous: Option<&'a str>,
    /// A plain response head may be passed through as bytes ([`super::raw`]): only the
    /// server's own HTTP/1.1 path writes it, and only learning reads its fields on the way.
    pub pass_through: bool,
}

impl H1 {
    /// Boxed: the connection moves with every response (in its body, then back to the pool),
    /// and a pointer moves for less than its ~90 bytes. One allocation a connection.
    pub fn new(stream: TcpStream) -> Box<H1> {
        Box::new(H1 { stream, rbuf: BytesMut::with_capacity(READ_SIZE), wbuf: Vec::with_capacity(1024), raw: None })
    }

    /// An idle pooled connection can carry a request: the backend did not close it and sent
    /// nothing unasked (both would make the next response ambiguous).
    pub fn is_usable(&self) -> bool {
        self.rbuf.is_empty()
            && matches!(self.stream.try_read(&mut [0u8; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Write the request head (the request has no body).
    pub async fn write_request(&mut self, out: Outgoing<'_>) -> io::Result<()> {
        self.wbuf.clear();
        encode_head(&mut self.wbuf, out);
        self.stream.write_all(&self.wbuf).await
    }

    /// Read the response head to a request (`head_request`: it was a HEAD; `pass_through`: a
    /// plain head's fields may stay bytes).
    pub async fn read_head(&mut self, head_request: bool, pass_through: bool) -> Result<Head, ReadError> {
        let mut received = false;
        loop {
            if !self.rbuf.is_empty() {
                received = true;
                if let Some(head) = parse_head(&mut self.rbuf, head_request, pass_through)? {
                    return Ok(head);
                }
                if self.rbuf.len() >= MAX_HEAD_BYTES {
                    return Err(ReadError::Invalid("head too large"));
                }
            }
            if std::future::poll_fn(|cx| self.poll_fill(cx)).await? == 0 {
                return Err(if received {
                    ReadError::Invalid("connection closed inside the head")
                } else {
                    ReadError::Closed
                });
            }
        }
    }

    /// Read more of what the backend sent into the buffer: how many bytes (0 = it closed).
    pub fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        fill(&mut self.stream, &mut self.rbuf, cx)
    }

    /// The socket and the read buffer, apart (a body decoder consumes the one, fills from the other).
    pub fn split(&mut self) -> (&mut TcpStream, &mut BytesMut) {
        (&mut self.stream, &mut self.rbuf)
    }
}

/// Read what `stream` has into `buf`: how many bytes (0 = the backend closed).
///
/// Through `AsyncRead::poll_read`, not `try_read_buf`: a read that does not fill the space
/// given shows the socket drained, and tokio then clears its readiness, so the pool's check
/// of an idle connection ([`H1::is_usable`]) needs no system call (`try_read` answers from
/// that readiness). With `try_read_buf` the readiness stayed set and every checkout made a
/// `recvfrom` that found nothing.
pub fn fill(stream: &mut TcpStream, buf: &mut BytesMut, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < READ_SIZE / 4 {
        buf.reserve(READ_SIZE);
    }
    tokio_util::io::poll_read_buf(Pin::new(stream), cx, buf)
}

/// `METHOD target HTTP/1.1`, the prepared headers, the forwarding fields, then `Host` and the
/// previous backend.
fn encode_head(buf: &mut Vec<u8>, out: Outgoing<'_>) {
    let p = out.parts;
    buf.extend_from_slice(p.method.as_str().as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(p.uri.path_and_query().map_or("/", |pq| pq.as_str()).as_bytes());
    buf.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &p.headers {
        line(buf, name.as_str(), value.as_bytes());
    }
    for (name, value) in out.forwarding.into_iter().flat_map(|f| f.fields()) {
        line(buf, name.as_str(), value);
    }
    if !p.headers.contains_key(header::HOST) {
        line(buf, "host", out.host.as_bytes());
    }
    if let Some(prev) = out.previous.filter(|v| HeaderValue::from_str(v).is_ok()) {
        line(buf, super::super::PREVIOUS_BACKEND.as_str(), prev.as_bytes());
    }
    buf.extend_from_slice(b"\r\n");
}

/// What `httparse` found, as positions in the buffer (the header lines' in a [`Spans`]).
struct Parsed {
    len: usize,
    status: u16,
    version: u8,
    reason: Span,
}

/// Parse a complete head at the start of `buf` (skipping 1xx informational ones) and take it
/// out of the buffer; `None` while it is incomplete.
pub fn parse_head(buf: &mut BytesMut, head_request: bool, pass_through: bool) -> Result<Option<Head>, ReadError> {
    let mut spans = Spans::new();
    loop {
        let Some(p) = locate(buf, &mut spans)? else { return Ok(None) };
        let bytes = buf.split_to(p.len).freeze();
        if matches!(p.status, 100 | 102..=199) {
            continue;
        }
        return build(bytes, p, &spans, head_request, pass_through).map(Some);
    }
}

fn locate(buf: &[u8], spans: &mut Spans) -> Result<Option<Parsed>, ReadError> {
    // Not initialised first (1.5 KB): httparse writes the lines it returns.
    let mut small = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_HEADERS];
    match locate_with(buf, &mut small, spans) {
        Err(httparse::Error::TooManyHeaders) => {
            let mut large = vec![MaybeUninit::uninit(); crate::proxy::MAX_HEADER_LINES];
            locate_with(buf, &mut large, spans)
        }
        r => r,
    }
    .map_err(|e| ReadError::Invalid(invalid(e)))
}

fn locate_with<'b>(
    buf: &'b [u8],
    headers: &mut [MaybeUninit<httparse::Header<'b>>],
    spans: &mut Spans,
) -> Result<Option<Parsed>, httparse::Error> {
    let mut r = httparse::Response::new(&mut []);
    // The default configuration, as `Response::parse` uses.
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut r, buf, headers)?;
    let httparse::Status::Complete(len) = parsed else { return Ok(None) };
    spans.fill(r.headers.iter().map(|h| (Span::of(buf, h.name.as_bytes()), Span::of(buf, h.value))));
    Ok(Some(Parsed {
        len,
        status: r.code.unwrap_or(0),
        version: r.version.unwrap_or(1),
        reason: r.reason.map_or(Span::default(), |s| Span::of(buf, s.as_bytes())),
    }))
}

fn invalid(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::TooManyHeaders => "too many header lines",
        httparse::Error::Status => "invalid status",
        httparse::Error::Version => "invalid version",
        _ => "invalid head",
    }
}

/// The response parts from a parsed head: its fields passed through (`pass_through` and a
/// plain head), or in the map with values that are slices of `bytes`.
fn build(bytes: Bytes, p: Parsed, spans: &Spans, head_request: bool, pass_through: bool) -> Result<Head, ReadError> {
    let status = StatusCode::from_u16(p.status).map_err(|_| ReadError::Invalid("invalid status"))?;
    let version = if p.version == 1 { Version::HTTP_11 } else { Version::HTTP_10 };
    let bytes = match pass_through && status != StatusCode::SWITCHING_PROTOCOLS {
        true => match RawFields::plain(bytes, spans.as_slice(), version == Version::HTTP_11) {
            Ok((raw, keep_alive)) => return passed_through(raw, keep_alive, &p, status, version, head_request),
            Err(bytes) => bytes,
        },
        false => bytes,
    };
    // One more than the backend sent: room for the `Set-Cookie` a new session's response gets
    // (a map at capacity would allocate twice again to grow).
    let mut headers = crate::proxy::headers::map_with_capacity(spans.as_slice().len() + 1);
    let mut keep_alive = version == Version::HTTP_11;
    let mut close = false;
    // What framing needs, gathered on the way (no lookups afterwards).
    let (mut chunked_te, mut length) = (None, None);
    for &(name, value) in spans.as_slice() {
        let raw = &bytes[name.range()];
        if raw.eq_ignore_ascii_case(b"connection") {
            let value = &bytes[value.range()];
            connection(value, &mut close, &mut keep_alive);
            if names_nothing_else(value) {
                // This hop's own (hop-by-hop: the proxy would strip it): consumed here.
                continue;
            }
        } else if raw.eq_ignore_ascii_case(b"keep-alive") {
            continue; // hop-by-hop, and only ever about this connection
        }
        let name = HeaderName::from_bytes(raw).map_err(|_| ReadError::Invalid("invalid header name"))?;
        let value = HeaderValue::from_maybe_shared(bytes.slice(value.range()))
            .map_err(|_| ReadError::Invalid("invalid header value"))?;
        if name == header::TRANSFER_ENCODING {
            // Whether the last coding of the last field is chunked.
            chunked_te = Some(last_coding_is_chunked(&value));
        } else if name == header::CONTENT_LENGTH {
            add_length(&mut length, &value);
        }
        headers.append(name, value);
    }
    let mut parts = parts(status, version, &bytes, p.reason);
    parts.headers = headers;
    let (framing, upgrade) = framing(&parts, head_request, chunked_te, length)?;
    Ok(Head { parts, framing, keep_alive: keep_alive && !upgrade, raw: None })
}

/// The head of a plain response: its fields stay in `raw`; the map is empty, with room for
/// what the proxy adds (a new session's `Set-Cookie`, the debug header).
fn passed_through(
    raw: RawFields,
    keep_alive: bool,
    p: &Parsed,
    status: StatusCode,
    version: Version,
    head_request: bool,
) -> Result<Head, ReadError> {
    let mut parts = parts(status, version, raw.head(), p.reason);
    parts.headers = crate::proxy::headers::map_with_capacity(2);
    let length = raw.length().map(Ok);
    let (framing, _) = framing(&parts, head_request, None, length)?;
    Ok(Head { parts, framing, keep_alive, raw: Some(raw) })
}

/// Status, version and, when it is not the usual one, the backend's reason phrase.
fn parts(status: StatusCode, version: Version, bytes: &Bytes, reason: Span) -> http::response::Parts {
    let mut response = http::Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = version;
    if Some(&bytes[reason.range()]) != status.canonical_reason().map(str::as_bytes) {
        if let Ok(r) = hyper::ext::ReasonPhrase::try_from(bytes.slice(reason.range())) {
            response.extensions_mut().insert(r);
        }
    }
    response.into_parts().0
}

/// The body's framing (RFC 9112 6.3, as hyper's client decides it), and whether the response
/// switches protocols.
/// The body's framing, from what [`build`] gathered: `chunked_te`, whether the last transfer
/// coding is chunked (None: no Transfer-Encoding); `length`, the Content-Length fields.
fn framing(
    parts: &http::response::Parts,
    head_request: bool,
    chunked_te: Option<bool>,
    length: Option<Result<u64, ()>>,
) -> Result<(Framing, bool), ReadError> {
    match parts.status.as_u16() {
        101 => return Ok((Framing::Empty, true)),
        204 | 304 => return Ok((Framing::Empty, false)),
        _ if head_request => return Ok((Framing::Empty, false)),
        _ => {}
    }
    if let Some(chunked) = chunked_te {
        if parts.version == Version::HTTP_10 {
            return Err(ReadError::Invalid("transfer-encoding in an HTTP/1.0 response"));
        }
        return Ok((if chunked { Framing::Chunked } else { Framing::Close }, false));
    }
    match length {
        Some(Ok(n)) => Ok((Framing::Length(n), false)),
        Some(Err(())) => Err(ReadError::Invalid("invalid content-length")),
        None => Ok((Framing::Close, false)),
    }
}

/// What a `Connection` field says of the backend connection: `close` ends it (whatever
/// follows); `keep-alive` keeps an HTTP/1.0 one (`keep_alive` starts as "HTTP/1.1").
pub(super) fn connection(v: &[u8], close: &mut bool, keep_alive: &mut bool) {
    if *close || has_token(v, "close") {
        (*close, *keep_alive) = (true, false);
    } else if !*keep_alive {
        *keep_alive = has_token(v, "keep-alive");
    }
}

/// A `Connection` value of only `keep-alive` and `close`: it names no other field for the
/// proxy to strip.
pub(super) fn names_nothing_else(v: &[u8]) -> bool {
    v.split(|&b| b == b',').all(|t| {
        let t = t.trim_ascii();
        t.is_empty() || t.eq_ignore_ascii_case(b"keep-alive") || t.eq_ignore_ascii_case(b"close")
    })
}
