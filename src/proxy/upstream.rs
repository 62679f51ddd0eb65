//! Connections to the backends: one pool of HTTP/1.1 keep-alive connections per worker thread.
//!
//! Each worker runs its own single-threaded runtime, so its pool needs no lock and no shared
//! state: a connection is checked out by popping it from the thread's list for that backend
//! address, and given back when the response body has been read to its end (only then can
//! HTTP/1.1 carry the next request). A connection that is not ready (closed by the backend, or
//! still sending a request body) is skipped; idle ones are dropped after [`IDLE_TIMEOUT`].
//!
//! This replaces hyper-util's pooled client, which on this path hashed the authority per byte,
//! went through a shared `Mutex`, and spawned a task per request to return the connection.

use super::request_body::UpstreamBody;
use super::ProxyError;
use http::uri::Authority;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Idle connections kept per backend address and worker thread.
const MAX_IDLE_PER_BACKEND: usize = 1024;
/// How long an idle connection is kept.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Pooled connections looked at before opening a new one.
const MAX_SKIPPED: usize = 8;

thread_local! {
    /// Idle connections by backend authority (`host:port`, as configured).
    static POOL: RefCell<HashMap<Box<str>, Vec<Idle>>> = RefCell::new(HashMap::new());
}

struct Idle {
    sender: SendRequest<UpstreamBody>,
    since: Instant,
}

/// A connection to one backend, checked out of this thread's pool or newly opened.
pub struct Conn {
    sender: SendRequest<UpstreamBody>,
    /// It carried requests before: the backend may have closed it just as this one was sent.
    pub reused: bool,
}

/// Why an attempt on a connection failed.
pub enum SendError {
    /// The connection was closed before the request was written; the request comes back
    /// unsent, to go out on another connection.
    Unsent(Box<Request<UpstreamBody>>),
    /// The request may have reached the backend.
    Failed(hyper::Error),
}

impl Conn {
    /// A ready connection to `authority`: an idle pooled one, or a new one (`fresh`, or none idle).
    pub async fn checkout(authority: &Authority, fresh: bool, connect_timeout: Duration) -> Result<Conn, ProxyError> {
        if !fresh {
            if let Some(sender) = take_idle(authority) {
                return Ok(Conn { sender, reused: true });
            }
        }
        let sender = connect(authority, connect_timeout).await?;
        Ok(Conn { sender, reused: false })
    }

    /// Send `req`; the response's body must be read to its end before [`Conn::release`].
    pub async fn send(&mut self, req: Request<UpstreamBody>) -> Result<Response<Incoming>, SendError> {
        self.sender.try_send_request(req).await.map_err(|mut e| match e.take_message() {
            Some(req) => SendError::Unsent(Box::new(req)),
            None => SendError::Failed(e.into_error()),
        })
    }

    /// Give the connection to `authority` back to this thread's pool: its response was read
    /// to the end.
    pub fn release(self, authority: &Authority) {
        if self.sender.is_closed() {
            return;
        }
        POOL.with_borrow_mut(|pool| {
            let idle = match pool.get_mut(authority.as_str()) {
                Some(idle) => idle,
                None => pool.entry(authority.as_str().into()).or_default(),
            };
            let now = Instant::now();
            drop_expired(idle, now);
            if idle.len() < MAX_IDLE_PER_BACKEND {
                idle.push(Idle { sender: self.sender, since: now });
            }
        });
    }
}

/// The most recently used ready connection to `authority`. Closed and expired connections
/// found on the way are dropped; busy ones (still sending a request body) stay.
fn take_idle(authority: &Authority) -> Option<SendRequest<UpstreamBody>> {
    POOL.with_borrow_mut(|pool| {
        let idle = pool.get_mut(authority.as_str())?;
        let now = Instant::now();
        let mut i = idle.len();
        let mut skipped = 0;
        while i > 0 && skipped < MAX_SKIPPED {
            i -= 1;
            let c = &idle[i];
            if c.sender.is_closed() || now.duration_since(c.since) > IDLE_TIMEOUT {
                idle.remove(i);
            } else if c.sender.is_ready() {
                return Some(idle.remove(i).sender);
            } else {
                skipped += 1;
            }
        }
        None
    })
}

/// Drop the oldest idle connections while they are past the idle timeout or closed.
fn drop_expired(idle: &mut Vec<Idle>, now: Instant) {
    let stale = idle.iter().take_while(|c| c.sender.is_closed() || now.duration_since(c.since) > IDLE_TIMEOUT).count();
    if stale > 0 {
        idle.drain(..stale);
    }
}

/// Open a connection (TCP_NODELAY) and start its HTTP/1.1 driver on this thread's runtime.
async fn connect(authority: &Authority, timeout: Duration) -> Result<SendRequest<UpstreamBody>, ProxyError> {
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
