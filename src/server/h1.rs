//! The server's own HTTP/1.1 path: a client connection's requests without a body (nearly
//! all) read, handed to the handler (`proxy::handle`; the benchmarks' floor forwards only)
//! and answered on the connection's task, with no dispatcher, channel or body machinery per
//! request.
//!
//! Each head is parsed in place ([`super::head`]); the response head is written by hyper's
//! rules ([`super::encode`]) and its body framed here (length, chunked, until close). The
//! first head this path does not serve — a body, an upgrade, HTTP/1.0, HTTP/2's preface, bad
//! input — ends it: the connection goes to hyper's server with the bytes read so far
//! ([`End::Hyper`]), for the rest of its life. Timeouts, graceful shutdown and the
//! connection slot behave as under hyper: the head timer (the shorter of
//! `header_read_timeout` and `idle_timeout`) runs while a head is awaited, an idle connection
//! closes at shutdown, a busy one finishes its response with `Connection: close`. A
//! response is written after the worker's other ready connections had their turn (one
//! `yield_now`), so that the responses of one poll go out together.

use super::encode::{self, Framing};
use super::head::{self, Parsed};
use crate::proxy::upstream::raw::PassThrough;
use crate::proxy::upstream::spans::Spans;
use crate::shutdown::Shutdown;
use crate::wait::Rare;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, Response};
use http_body::{Body, Frame};
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Room made in the read buffer before a read.
const READ_SIZE: usize = 8192;
/// Body bytes gathered behind the head before a write; larger data is written as it is.
const GATHER: usize = 64 * 1024;

/// How the path ended.
pub enum End {
    /// The connection is done (closed by either side, timed out, or shut down).
    Closed,
    /// hyper's server takes the connection over, beginning with these bytes.
    Hyper(BytesMut),
}

/// What a connection's heads may take: as hyper's builder has them (`super::builder`).
#[derive(Clone, Copy)]
pub struct Limits {
    /// Waiting for a head (also on an idle connection): the shorter of `header_read_timeout`
    /// and `idle_timeout`.
    pub head_timeout: Duration,
    /// Bytes of an incomplete head before hyper's server takes it (and answers 431).
    pub max_buf: usize,
}

impl Limits {
    pub fn of(cfg: &crate::config::ServerConfig) -> Limits {
        Limits {
            head_timeout: cfg.header_read_timeout.min(cfg.idle_timeout),
            max_buf: cfg.max_header_bytes.saturating_mul(2).max(8192),
        }
    }
}

/// Serve `io`'s requests with `handle` until the connection ends or hyper must take it over.
/// `shutdown` closes it when idle, and makes the response in flight its last.
pub async fn serve<I, B, H, F>(io: &mut I, limits: Limits, shutdown: &Shutdown, mut handle: H) -> End
where
    I: AsyncRead + AsyncWrite + Unpin,
    H: FnMut(http::request::Parts) -> F,
    F: Future<Output = Response<B>>,
    B: Body<Data = Bytes> + Unpin + PassThrough,
{
    let Limits { head_timeout, max_buf } = limits;
    let mut stop = {
        let mut shutdown = shutdown.clone();
        Rare::new(async move { shutdown.wait().await })
    };
    let mut buf = BytesMut::with_capacity(READ_SIZE);
    let mut out = Vec::with_capacity(READ_SIZE);
    let mut spans = Spans::new();
    // The last response's emptied map carries the next request's fields (as hyper does).
    let mut headers = HeaderMap::new();
    // The head timer: one sleep for the connection's life, moved on for each head awaited
    // (moving a registered sleep to a later deadline only stores it; no lock, no shared list).
    let mut timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
    loop {
        let mut armed = false;
        let request = loop {
            match head::parse(&mut buf, &mut headers, &mut spans) {
                Parsed::Request(r) => break r,
                Parsed::Hyper => return End::Hyper(buf),
                Parsed::Partial if buf.len() >= max_buf => return End::Hyper(buf),
                Parsed::Partial => {}
            }
            if buf.capacity() - buf.len() < READ_SIZE / 4 {
                buf.reserve(READ_SIZE);
            }
            if !armed {
                let deadline = tokio::time::Instant::now() + head_timeout;
                match &mut timer {
                    Some(t) => t.as_mut().reset(deadline),
                    None => timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
                }
                armed = true;
            }
            let timer = timer.as_mut().expect("armed above");
            let idle = buf.is_empty();
            let read = tokio::select! {
                biased;
                r = io.read_buf(&mut buf) => r,
                () = timer => return End::Closed,
                () = &mut stop, if idle => return End::Closed,
            };
            match read {
                Ok(0) if buf.is_empty() => return End::Closed,
                // Cut inside a head: hyper's server says what it says to that.
                Ok(0) => return End::Hyper(buf),
                Ok(_) => {}
                Err(_) => return End::Closed,
            }
        };
        let head_request = request.parts.method == Method::HEAD;
        let response = handle(request.parts).await;
        let keep_alive = request.keep_alive && !shutdown.is_stopping();
        let (mut parts, body) = response.into_parts();
        let length = (!body.is_end_stream()).then(|| body.size_hint().exact());
        let encoded = encode::head(&mut out, &mut parts, body.raw_fields(), length, head_request, keep_alive);
        headers = parts.headers;
        let Ok(encoded) = encoded else { return End::Closed };
        // The response leaves after the other connections made ready by the same poll had
        // their turn, as HAProxy's loop does its sends after its reads: the client then finds
        // several responses per wake-up instead of being woken for each (wrk's `epoll_wait`
        // per request 0.5 -> 0.2, README "Where the rest goes"). One scheduler turn later.
        tokio::task::yield_now().await;
        let clean = match encoded.framing {
            Framing::Length(0) => {
                end(body);
                flush(io, &mut out).await
            }
            framing => write_body(io, &mut out, body, framing, request.trailers).await,
        };
        if !clean || encoded.last {
            let _ = io.shutdown().await;
            return End::Closed;
        }
    }
}

/// Write the body after the head in `out`; false when the connection cannot go on (a write
/// failed, the body failed or ended short of its length).
async fn write_body<I, B>(io: &mut I, out: &mut Vec<u8>, mut body: B, framing: Framing, trailers: bool) -> bool
where
    I: AsyncWrite + Unpin,
    B: Body<Data = Bytes> + Unpin,
{
    let mut remaining = match framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    loop {
        let frame = match ready_frame(&mut body).await {
            Some(frame) => frame,
            None => {
                // Send what is gathered while the body waits for its backend.
                if !flush(io, out).await {
                    return false;
                }
                std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
            }
        };
        let data = match frame {
            None => break,
            // What was gathered and not written yet is dropped with the connection (as hyper
            // drops its buffered head): a client sees no response rather than a cut one.
            Some(Err(_)) => return false,
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(frame) => {
                    if let (Framing::Chunked(Some(allowed)), Ok(fields), true) =
                        (&framing, frame.into_trailers(), trailers)
                    {
                        end_chunks(out, Some((allowed, &fields)));
                        return flush(io, out).await;
                    }
                    continue;
                }
            },
        };
        if data.is_empty() {
            continue;
        }
        match &framing {
            Framing::Length(_) => {
                let take = data.len().min(usize::try_from(remaining).unwrap_or(usize::MAX));
                remaining -= take as u64;
                if !gather(io, out, data.slice(..take)).await {
                    return false;
                }
                if remaining == 0 {
                    // All of it: what a body sends beyond its length is not sent (as hyper).
                    return flush(io, out).await;
                }
            }
            Framing::Chunked(_) => {
                chunk_size(out, data.len());
                if !gather(io, out, data).await {
                    return false;
                }
                out.extend_from_slice(b"\r\n");
            }
            Framing::Close => {
                if !gather(io, out, data).await {
                    return false;
                }
            }
        }
    }
    match framing {
        Framing::Length(_) if remaining > 0 => false,
        Framing::Chunked(_) => {
            end_chunks(out, None);
            flush(io, out).await
        }
        _ => flush(io, out).await,
    }
}

/// A body with nothing to send, polled once before it is dropped: a backend's ended body
/// whose head was passed through gives its connection back then (the head was in it).
fn end<B: Body + Unpin>(mut body: B) {
    if body.is_end_stream() {
        let _ = Pin::new(&mut body).poll_frame(&mut std::task::Context::from_waker(std::task::Waker::noop()));
    }
}

/// A chunk's size line: upper-case hex, as hyper writes it.
fn chunk_size(out: &mut Vec<u8>, n: usize) {
    let digits = (usize::BITS - n.leading_zeros()).div_ceil(4).max(1);
    for i in (0..digits).rev() {
        out.push(b"0123456789ABCDEF"[(n >> (i * 4)) & 0xf]);
    }
    out.extend_from_slice(b"\r\n");
}

/// The last chunk, with the trailer fields the response announced.
fn end_chunks(out: &mut Vec<u8>, trailers: Option<(&Vec<http::HeaderName>, &HeaderMap)>) {
    out.extend_from_slice(b"0\r\n");
    if let Some((allowed, fields)) = trailers {
        for (name, value) in fields {
            if allowed.contains(name) && encode::is_valid_trailer(name) {
                crate::proxy::headers::push_line(out, name.as_str(), value.as_bytes());
            }
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// The body's next frame if it is ready now; `None` if it is not.
async fn ready_frame<B: Body + Unpin>(body: &mut B) -> Option<Option<Result<Frame<B::Data>, B::Error>>> {
    std::future::poll_fn(|cx| {
        Poll::Ready(match Pin::new(&mut *body).poll_frame(cx) {
            Poll::Ready(frame) => Some(frame),
            Poll::Pending => None,
        })
    })
    .await
}

/// Add `data` behind `out`, or write both when that would make `out` large.
async fn gather<I: AsyncWrite + Unpin>(io: &mut I, out: &mut Vec<u8>, data: Bytes) -> bool {
    if out.len() + data.len() <= GATHER {
        out.extend_from_slice(&data);
        return true;
    }
    flush(io, out).await && io.write_all(&data).await.is_ok()
}

/// Write what `out` holds.
async fn flush<I: AsyncWrite + Unpin>(io: &mut I, out: &mut Vec<u8>) -> bool {
    if out.is_empty() {
        return true;
    }
    let ok = io.write_all(out).await.is_ok() && io.flush().await.is_ok();
    out.clear();
    ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;
    use tokio::io::{duplex, DuplexStream, ReadBuf};

    type Log = Rc<RefCell<Vec<String>>>;

    impl PassThrough for http_body_util::Full<Bytes> {}

    /// The server's side of a connection, logging each write.
    struct Logged {
        io: DuplexStream,
        name: &'static str,
        log: Log,
    }

    impl AsyncRead for Logged {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.io).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Logged {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            data: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.log.borrow_mut().push(format!("write {}", self.name));
            Pin::new(&mut self.io).poll_write(cx, data)
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.io).poll_flush(cx)
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.io).poll_shutdown(cx)
        }
    }

    #[test]
    fn responses_made_ready_by_one_poll_are_written_after_all_of_them_were_handled() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let log: Log = Rc::default();
        tokio::task::LocalSet::new().block_on(&rt, async {
            let (_trigger, shutdown) = Shutdown::new();
            let limits = Limits { head_timeout: Duration::from_secs(5), max_buf: 65536 };
            let mut clients = Vec::new();
            let mut servers = Vec::new();
            for name in ["a", "b"] {
                let (mut client, server) = duplex(4096);
                client.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.expect("request");
                clients.push(client);
                let (log, shutdown) = (log.clone(), shutdown.clone());
                servers.push(tokio::task::spawn_local(async move {
                    let mut io = Logged { io: server, name, log: log.clone() };
                    serve(&mut io, limits, &shutdown, |_| {
                        log.borrow_mut().push(format!("handled {name}"));
                        std::future::ready(Response::new(http_body_util::Full::new(Bytes::from_static(b"ok"))))
                    })
                    .await
                }));
            }
            for server in servers {
                assert!(matches!(server.await.expect("server task"), End::Closed));
            }
            for mut client in clients {
                let mut answer = String::new();
                client.read_to_string(&mut answer).await.expect("response");
                assert!(answer.starts_with("HTTP/1.1 200 OK\r\n") && answer.ends_with("\r\n\r\nok"), "{answer:?}");
            }
        });
        let log = log.borrow();
        let handled_b = log.iter().position(|l| l == "handled b").expect("b handled");
        let wrote_a = log.iter().position(|l| l == "write a").expect("a written");
        assert!(handled_b < wrote_a, "a was written before b (ready in the same poll) was handled: {log:?}");
    }

    /// The connection's one head timer is moved on for each head: a handler slower than the
    /// head timeout (the timer's old deadline passes meanwhile) does not close the connection,
    /// the next head gets the whole timeout, and an idle connection still closes after it.
    #[test]
    fn each_head_gets_the_whole_head_timeout_even_after_a_handler_slower_than_it() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            let (_trigger, shutdown) = Shutdown::new();
            let head_timeout = Duration::from_millis(150);
            let limits = Limits { head_timeout, max_buf: 65536 };
            let (mut client, mut server) = duplex(4096);
            let served = tokio::spawn(async move {
                serve(&mut server, limits, &shutdown, |_| async {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    Response::new(http_body_util::Full::new(Bytes::from_static(b"ok")))
                })
                .await
            });
            let mut answer = [0u8; 256];
            let mut answered = std::time::Instant::now();
            for round in 0..2 {
                client.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("request");
                let n = client.read(&mut answer).await.expect("response");
                let text = String::from_utf8_lossy(&answer[..n]);
                assert!(text.starts_with("HTTP/1.1 200 OK\r\n") && text.ends_with("ok"), "round {round}: {text:?}");
                answered = std::time::Instant::now();
                // Idle for most of the timeout before the next head: it counts from now.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(matches!(served.await.expect("server task"), End::Closed));
            // The server's wait began just before the client read its answer.
            let idle = answered.elapsed();
            let least = head_timeout - Duration::from_millis(20);
            assert!(idle >= least && idle < Duration::from_secs(2), "closed after {idle:?} idle");
        });
    }
}
