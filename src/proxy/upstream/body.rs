//! A backend's response body as the proxy streams it: hyper's (requests with a body, upgrades)
//! or the lean client's, read from the connection it came on by the client connection's task.

use super::decode::{BodyError, Decoder};
use super::h1::{self, H1};
use super::raw::{PassThrough, RawFields};
use crate::proxy::request_body::BoxError;
use bytes::{Bytes, BytesMut};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A backend's response body.
#[derive(Debug)]
pub enum Body {
    Hyper(Incoming),
    Lean(LeanBody),
}

/// A body read by the lean client: the connection travels with it, and goes back to the pool
/// only once the body ended where the next response can start.
pub struct LeanBody {
    conn: Option<Box<H1>>,
    decoder: Decoder,
    keep_alive: bool,
}

impl std::fmt::Debug for LeanBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeanBody").field("decoder", &self.decoder).field("keep_alive", &self.keep_alive).finish()
    }
}

impl LeanBody {
    pub fn new(conn: Box<H1>, decoder: Decoder, keep_alive: bool) -> LeanBody {
        LeanBody { conn: Some(conn), decoder, keep_alive }
    }
}

impl Body {
    /// The lean connection, if its body ended cleanly and it may carry another request.
    /// A head passed through is written by then, and is dropped.
    pub fn take_conn(&mut self) -> Option<Box<H1>> {
        match self {
            Body::Lean(b) if b.keep_alive && b.decoder.ended_cleanly() => {
                let mut conn = b.conn.take()?;
                conn.raw = None;
                Some(conn)
            }
            _ => None,
        }
    }
}

impl PassThrough for Body {
    fn raw_fields(&self) -> Option<&RawFields> {
        match self {
            Body::Lean(b) => b.conn.as_ref()?.raw.as_ref(),
            Body::Hyper(_) => None,
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Body::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Body::Lean(b) => {
                let Some(conn) = b.conn.as_mut() else { return Poll::Ready(None) };
                let (stream, buf) = conn.split();
                let mut fill = |buf: &mut BytesMut| h1::fill(stream, buf, cx);
                let r = b.decoder.poll_frame(buf, &mut fill);
                if let Poll::Ready(Some(Err(_))) = &r {
                    b.conn = None;
                }
                r.map_err(|e: BodyError| e.into())
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Hyper(b) => b.is_end_stream(),
            Body::Lean(b) => b.decoder.is_end(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Hyper(b) => b.size_hint(),
            Body::Lean(b) => b.decoder.remaining().map_or_else(SizeHint::new, SizeHint::with_exact),
        }
    }
}
