//! Body types. Request bodies stream to the backend through [`UpstreamBody`], which can be
//! handed to a second backend if the first refused the connection before reading any of it,
//! and which enforces `max_body_bytes` on bodies without a Content-Length. Responses stream
//! back as [`ResponseBody`]. Nothing is buffered whole.

use super::upstream::Conn;
use crate::balance::InFlight;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
#[error("request body exceeds the configured limit")]
pub struct TooLarge;

/// The request body shared between the attempts of one request.
#[derive(Debug)]
struct Slot {
    body: Option<Incoming>,
    /// A frame was read: the body cannot be sent again.
    started: bool,
    read: u64,
    /// Reading the client's body failed (bad chunked framing, cut short): the client's fault.
    failed: bool,
}

/// A handle the proxy keeps to learn whether an attempt consumed the body, and to make the
/// body of the next attempt.
#[derive(Clone, Debug)]
pub struct RequestBody {
    slot: Option<Arc<Mutex<Slot>>>,
    limit: u64,
}

impl RequestBody {
    /// `limit` 0 = unlimited. An empty request body needs no sharing at all.
    pub fn new(body: Incoming, limit: u64) -> RequestBody {
        let slot = (!body.is_end_stream())
            .then(|| Arc::new(Mutex::new(Slot { body: Some(body), started: false, read: 0, failed: false })));
        RequestBody { slot, limit }
    }

    /// The body for one attempt.
    pub fn attempt(&self) -> UpstreamBody {
        UpstreamBody { slot: self.slot.clone(), limit: self.limit }
    }

    /// No byte of the body was read yet (or there is none): safe to send again.
    pub fn replayable(&self) -> bool {
        self.slot.as_ref().is_none_or(|s| !lock(s).started)
    }

    pub fn is_empty(&self) -> bool {
        self.slot.is_none()
    }

    /// The body went over the limit.
    pub fn too_large(&self) -> bool {
        self.limit != 0 && self.slot.as_ref().is_some_and(|s| lock(s).read > self.limit)
    }

    /// The client's body could not be read (malformed or cut short): an attempt that failed
    /// because of it is the client's fault, not the backend's.
    pub fn client_failed(&self) -> bool {
        self.slot.as_ref().is_some_and(|s| lock(s).failed)
    }
}

fn lock(slot: &Mutex<Slot>) -> std::sync::MutexGuard<'_, Slot> {
    // A poisoned slot only means a panic elsewhere mid-poll; the data is still consistent.
    slot.lock().unwrap_or_else(|e| e.into_inner())
}

/// The body of one upstream attempt.
#[derive(Debug)]
pub struct UpstreamBody {
    slot: Option<Arc<Mutex<Slot>>>,
    limit: u64,
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let limit = self.limit;
        let Some(slot) = &self.slot else { return Poll::Ready(None) };
        let mut slot = lock(slot);
        slot.started = true;
        let Some(body) = slot.body.as_mut() else { return Poll::Ready(None) };
        let frame = match Pin::new(body).poll_frame(cx) {
            Poll::Ready(Some(Ok(f))) => f,
            Poll::Ready(Some(Err(e))) => {
                slot.failed = true;
                return Poll::Ready(Some(Err(e.into())));
            }
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        if let Some(data) = frame.data_ref() {
            slot.read += data.len() as u64;
            if limit != 0 && slot.read > limit {
                return Poll::Ready(Some(Err(TooLarge.into())));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        match &self.slot {
            None => true,
            Some(s) => lock(s).body.as_ref().is_none_or(|b| b.is_end_stream()),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.slot {
            None => SizeHint::with_exact(0),
            Some(s) => lock(s).body.as_ref().map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint()),
        }
    }
}

/// A response body: the backend's, streamed, or a short text of our own.
pub enum ResponseBody {
    /// The backend's body, and what it holds until it has been read to the end.
    Upstream(Incoming, Option<Lease>),
    Text(Option<Bytes>),
}

/// What a backend's response holds while its body streams: the in-flight count of the
/// request, and the connection, which goes back to the pool only after a complete body.
pub struct Lease {
    pub guard: InFlight,
    pub conn: Conn,
}

impl Lease {
    /// The body was read to its end: the connection can carry the next request.
    pub fn release(self) {
        self.conn.release(&self.guard.backend().addr.authority);
    }
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResponseBody::Upstream(b, _) => f.debug_tuple("Upstream").field(b).finish(),
            ResponseBody::Text(t) => f.debug_tuple("Text").field(t).finish(),
        }
    }
}

impl ResponseBody {
    pub fn text(s: impl Into<Bytes>) -> ResponseBody {
        ResponseBody::Text(Some(s.into()))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ResponseBody::Upstream(b, lease) => {
                let r = Pin::new(&mut *b).poll_frame(cx);
                match &r {
                    // hyper stops polling once `is_end_stream` says so: release after the last frame.
                    Poll::Ready(None) => lease.take().map_or((), Lease::release),
                    Poll::Ready(Some(Ok(_))) if b.is_end_stream() => lease.take().map_or((), Lease::release),
                    // The connection is closed with the lease: it cannot carry another request.
                    Poll::Ready(Some(Err(_))) => drop(lease.take()),
                    _ => {}
                }
                r
            }
            ResponseBody::Text(t) => Poll::Ready(t.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Upstream(b, _) => b.is_end_stream(),
            ResponseBody::Text(t) => t.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Upstream(b, _) => b.size_hint(),
            ResponseBody::Text(t) => SizeHint::with_exact(t.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}
