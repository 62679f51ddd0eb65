//! Connections to the backends: one pool of HTTP/1.1 keep-alive connections per worker thread,
//! and the two clients that use them.
//!
//! Requests without a body that are no upgrade (nearly all) go through the lean client
//! ([`h1`]): written into the socket and answered on the request's own task, the response
//! body decoded in place ([`decode`], [`body`]). The others go through hyper's client, which
//! streams request bodies while the response arrives and hands upgraded sockets to tunnels.
//! `differential.rs` holds the two to the same framing on generated responses.
//!
//! Each worker runs its own single-threaded runtime, so its pools need no lock and no shared
//! state: a connection is checked out by popping it from the thread's list for that backend
//! address, and given back when the response body has been read to its end (only then can
//! HTTP/1.1 carry the next request). A connection that is not ready (closed by the backend, or
//! still sending a request body) is skipped; idle ones are dropped after [`IDLE_TIMEOUT`].
//!
//! This replaced hyper-util's pooled client, which on this path hashed the authority per byte,
//! went through a shared `Mutex`, and spawned a task per request to return the connection.

mod body;
mod decode;
#[cfg(test)]
mod differential;
mod h1;
mod pool;
pub mod raw;
pub mod spans;

pub use body::Body;
pub use h1::Outgoing;
#[doc(hidden)] // public for the fuzz harness (fuzz/server_checks.rs)
pub use h1::{parse_head, Head, ReadError};

use super::request_body::{BoxError, UpstreamBody};
use super::ProxyError;
use h1::H1;
use http::uri::Authority;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use pool::{Pool, Pooled, Status};
use std::cell::RefCell;
use std::time::Duration;

/// How long an idle connection is kept.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

thread_local! {
    /// Idle connections of each client, by backend authority (`host:port`, as configured).
    static HYPER: RefCell<Pool<SendRequest<UpstreamBody>>> = RefCell::new(Pool::new());
    static LEAN: RefCell<Pool<Box<H1>>> = RefCell::new(Pool::new());
}

impl Pooled for SendRequest<UpstreamBody> {
    fn status(&self) -> Status {
        if self.is_closed() {
            Status::Closed
        } else if self.is_ready() {
            Status::Ready
        } else {
            Status::Busy
        }
    }

    fn known_closed(&self) -> bool {
        self.is_closed()
    }
}

impl Pooled for Box<H1> {
    fn status(&self) -> Status {
        if self.is_usable() {
            Status::Ready
        } else {
            Status::Closed
        }
    }

    fn known_closed(&self) -> bool {
        false
    }
}

/// Which client a request goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Client {
    Lean,
    Hyper,
}

enum Kind {
    Hyper(SendRequest<UpstreamBody>),
    /// The lean connection; it travels with the response body once a response came.
    Lean(Option<Box<H1>>),
}

/// A connection to one backend, checked out of this thread's pool or newly opened.
pub struct Conn {
    kind: Kind,
    /// It carried requests before: the backend may have closed it just as this one was sent.
    pub reused: bool,
}

/// Why an attempt on a connection failed.
pub enum SendError {
    /// The connection was closed before the request was written; hyper's request comes back
    /// unsent, to go out on another connection (the lean client writes it again from the head).
    Unsent(Option<Box<Request<UpstreamBody>>>),
    /// The request may have reached the backend.
    Failed(BoxError),
}

impl Conn {
    /// A ready connection to `authority` for `client`: an idle pooled one, or a new one
    /// (`fresh`, or none idle).
    pub async fn checkout(
        authority: &Authority,
        client: Client,
        fresh: bool,
        connect_timeout: Duration,
    ) -> Result<Conn, ProxyError> {
        let key = authority.as_str();
        if !fresh {
            let pooled = match client {
                Client::Lean => LEAN.with_borrow_mut(|p| p.take(key)).map(|c| Kind::Lean(Some(c))),
                Client::Hyper => HYPER.with_borrow_mut(|p| p.take(key)).map(Kind::Hyper),
            };
            if let Some(kind) = pooled {
                return Ok(Conn { kind, reused: true });
            }
        }
        let stream = connect(authority, connect_timeout).await?;
        let kind = match client {
            Client::Lean => Kind::Lean(Some(H1::new(stream))),
            Client::Hyper => Kind::Hyper(handshake(authority, stream).await?),
        };
        Ok(Conn { kind, reused: false })
    }

    /// Send `req` through hyper's client; the response's body must be read to its end before
    /// [`Conn::release`].
    pub async fn send(&mut self, req: Request<UpstreamBody>) -> Result<Response<Body>, SendError> {
        let Kind::Hyper(sender) = &mut self.kind else { unreachable!("a hyper request on a lean connection") };
        match sender.try_send_request(req).await {
            Ok(resp) => Ok(resp.map(Body::Hyper)),
            Err(mut e) => Err(match e.take_message() {
                Some(req) => SendError::Unsent(Some(Box::new(req))),
                None => SendError::Failed(e.into_error().into()),
            }),
        }
    }

    /// Send a request without a body through the lean client. The connection moves into the
    /// response body.
    pub async fn send_lean(&mut self, out: Outgoing<'_>) -> Result<Response<Body>, SendError> {
        let Kind::Lean(Some(h1)) = &mut self.kind else { unreachable!("a lean request without a lean connection") };
        if let Err(e) = h1.write_request(out).await {
            tracing::debug!(error = %e, "writing the request failed");
            return Err(SendError::Unsent(None));
        }
        let head = h1
            .read_head(out.parts.method == http::Method::HEAD, out.pass_through)
            .await
            .map_err(|e| SendError::Failed(e.into()))?;
        h1.raw = head.raw;
        let Kind::Lean(conn) = &mut self.kind else { unreachable!() };
        let body = body::LeanBody::new(
            conn.take().expect("checked above"),
            decode::Decoder::new(head.framing),
            head.keep_alive,
        );
        Ok(Response::from_parts(head.parts, Body::Lean(body)))
    }

    /// Give the connection to `authority` back to this thread's pool: the response `body` was
    /// read to the end.
    pub fn release(self, authority: &Authority, body: &mut Body) {
        match self.kind {
            Kind::Hyper(sender) if !sender.is_closed() => HYPER.with_borrow_mut(|p| p.put(authority.as_str(), sender)),
            Kind::Hyper(_) => {}
            Kind::Lean(_) => {
                if let Some(conn) = body.take_conn() {
                    LEAN.with_borrow_mut(|p| p.put(authority.as_str(), conn));
                }
            }
        }
    }
}

/// Open a connection (TCP_NODELAY).
async fn connect(authority: &Authority, timeout: Duration) -> Result<tokio::net::TcpStream, ProxyError> {
    let connecting = tokio::net::TcpStream::connect(authority.as_str());
    let stream = match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(backend = %authority, error = %e, "connect failed");
            return Err(ProxyError::Connect);
        }
        Err(_) => {
            tracing::debug!(backend = %authority, "connect timed out");
            return Err(ProxyError::Connect);
        }
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Start hyper's HTTP/1.1 driver for `stream` on this thread's runtime.
async fn handshake(
    authority: &Authority,
    stream: tokio::net::TcpStream,
) -> Result<SendRequest<UpstreamBody>, ProxyError> {
    let mut builder = http1::Builder::new();
    builder.max_headers(super::MAX_HEADER_LINES);
    let (sender, conn) = builder.handshake(TokioIo::new(stream)).await.map_err(|e| {
        tracing::debug!(backend = %authority, error = %e, "handshake failed");
        ProxyError::Connect
    })?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upstream connection ended");
        }
    });
    Ok(sender)
}
