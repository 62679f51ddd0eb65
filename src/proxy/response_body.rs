//! Response bodies: the backend's, streamed to the client while they hold the backend's
//! in-flight count and connection ([`Lease`]), or a short text of our own.

use super::request_body::BoxError;
use super::upstream::raw::{PassThrough, RawFields};
use super::upstream::{self, Conn};
use crate::balance::InFlight;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A response body: the backend's, streamed, or a short text of our own.
pub enum ResponseBody {
    /// The backend's body, and what it holds until it has been read to the end.
    Upstream(upstream::Body, Option<Lease>),
    /// The same, of which a prefix was read already (SOAP mode looked at it): sent first.
    Peeked(VecDeque<Bytes>, upstream::Body, Option<Lease>),
    Text(Option<Bytes>),
}

/// What a backend's response holds while its body streams: the in-flight count of the
/// request, and the connection, which goes back to the pool only after a complete body.
pub struct Lease {
    pub guard: InFlight,
    pub conn: Conn,
}

impl Lease {
    /// `body` was read to its end: the connection can carry the next request.
    pub fn release(self, body: &mut upstream::Body) {
        self.conn.release(&self.guard.backend().addr.authority, body);
    }
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResponseBody::Upstream(b, _) => f.debug_tuple("Upstream").field(b).finish(),
            ResponseBody::Peeked(p, b, _) => f.debug_tuple("Peeked").field(p).field(b).finish(),
            ResponseBody::Text(t) => f.debug_tuple("Text").field(t).finish(),
        }
    }
}

impl ResponseBody {
    pub fn text(s: impl Into<Bytes>) -> ResponseBody {
        ResponseBody::Text(Some(s.into()))
    }
}

impl PassThrough for ResponseBody {
    fn raw_fields(&self) -> Option<&RawFields> {
        match self {
            ResponseBody::Upstream(b, _) => b.raw_fields(),
            ResponseBody::Peeked(..) | ResponseBody::Text(_) => None,
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ResponseBody::Upstream(b, lease) => poll_upstream(b, lease, cx),
            ResponseBody::Peeked(prefix, b, lease) => match prefix.pop_front() {
                Some(data) => {
                    if prefix.is_empty() && b.is_end_stream() {
                        if let Some(lease) = lease.take() {
                            lease.release(b);
                        }
                    }
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
                None => poll_upstream(b, lease, cx),
            },
            ResponseBody::Text(t) => Poll::Ready(t.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Upstream(b, _) => b.is_end_stream(),
            ResponseBody::Peeked(p, b, _) => p.is_empty() && b.is_end_stream(),
            ResponseBody::Text(t) => t.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Upstream(b, _) => b.size_hint(),
            ResponseBody::Peeked(p, b, _) => {
                let peeked: u64 = p.iter().map(|d| d.len() as u64).sum();
                let rest = b.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower() + peeked);
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + peeked);
                }
                hint
            }
            ResponseBody::Text(t) => SizeHint::with_exact(t.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

/// Stream the backend's body; give the connection back after its last frame.
fn poll_upstream(
    b: &mut upstream::Body,
    lease: &mut Option<Lease>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    let r = Pin::new(&mut *b).poll_frame(cx);
    match &r {
        // hyper stops polling once `is_end_stream` says so: release after the last frame.
        Poll::Ready(None) => lease.take().map_or((), |l| l.release(b)),
        Poll::Ready(Some(Ok(_))) if b.is_end_stream() => lease.take().map_or((), |l| l.release(b)),
        // The connection is closed with the lease: it cannot carry another request.
        Poll::Ready(Some(Err(_))) => drop(lease.take()),
        _ => {}
    }
    r
}
