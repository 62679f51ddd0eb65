//! Request bodies: they stream to the backend through [`UpstreamBody`], which can be handed to
//! another attempt if the first ended before reading any of it, and which enforces
//! `max_body_bytes` on bodies without a Content-Length. Nothing is buffered whole: SOAP mode
//! peeks at a bounded prefix ([`RequestBody::peek`]), which every attempt sends first.

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
    /// Data read by [`RequestBody::peek`], sent first by every attempt.
    prefix: Vec<Bytes>,
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
    pub fn new(body: Option<Incoming>, limit: u64) -> RequestBody {
        let slot = body.filter(|b| !b.is_end_stream()).map(|body| {
            Arc::new(Mutex::new(Slot { body: Some(body), prefix: Vec::new(), started: false, read: 0, failed: false }))
        });
        RequestBody { slot, limit }
    }

    /// The body for one attempt.
    pub fn attempt(&self) -> UpstreamBody {
        UpstreamBody { slot: self.slot.clone(), limit: self.limit, next: 0 }
    }

    /// Read up to `max` bytes of the body without consuming it (attempts send them first):
    /// what was read, or less when the body ends sooner. `None` when reading failed (the
    /// client's fault; `client_failed` then says so) or went over `max_body_bytes`.
    pub async fn peek(&self, max: usize) -> Option<Bytes> {
        use http_body_util::BodyExt;
        let Some(slot) = &self.slot else { return Some(Bytes::new()) };
        let Some(mut body) = lock(slot).body.take() else { return Some(Bytes::new()) };
        let mut buf = bytes::BytesMut::new();
        let mut result = Some(());
        while buf.len() < max && !body.is_end_stream() {
            match body.frame().await {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let mut s = lock(slot);
                        s.read += data.len() as u64;
                        buf.extend_from_slice(&data);
                        s.prefix.push(data);
                        if self.limit != 0 && s.read > self.limit {
                            result = None;
                            break;
                        }
                    }
                    // Trailers before `max`: the prefix is all the data there is; put nothing
                    // back (trailers are hop-by-hop for an HTTP/1.1 backend without TE).
                    Err(_) => break,
                },
                Some(Err(_)) => {
                    lock(slot).failed = true;
                    result = None;
                    break;
                }
                None => break,
            }
        }
        let mut s = lock(slot);
        s.body = (!body.is_end_stream()).then_some(body);
        let n = buf.len().min(max);
        result.map(|()| buf.freeze().slice(..n))
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
    /// The next peeked frame this attempt sends.
    next: usize,
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let (limit, next) = (self.limit, self.next);
        let Some(slot) = &self.slot else { return Poll::Ready(None) };
        let mut slot = lock(slot);
        if let Some(data) = slot.prefix.get(next).cloned() {
            drop(slot);
            self.get_mut().next += 1;
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
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
            Some(s) => {
                let s = lock(s);
                self.next >= s.prefix.len() && s.body.as_ref().is_none_or(|b| b.is_end_stream())
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.slot {
            None => SizeHint::with_exact(0),
            Some(s) => {
                let s = lock(s);
                let peeked: u64 = s.prefix.iter().skip(self.next).map(|d| d.len() as u64).sum();
                let rest = s.body.as_ref().map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint());
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower() + peeked);
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + peeked);
                }
                hint
            }
        }
    }
}
