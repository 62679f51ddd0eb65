//! Request bodies: they stream to the backend through [`UpstreamBody`], which can be handed to
//! another attempt if the first ended before reading any of it, and which enforces
//! `max_body_bytes` on bodies without a Content-Length. Nothing is buffered whole.

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
