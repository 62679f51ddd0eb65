//! Response body framing for the lean client ([`super::h1`]): how long the body is, and a
//! decoder that turns what the backend sends into frames — data as slices of the connection's
//! read buffer (no copy), chunked bodies unwrapped (their trailers become a trailers frame),
//! close-delimited bodies read until the backend closes. It knows nothing of pools or
//! requests: it reads from the buffer and asks for more.

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body::Frame;
use std::io;
use std::task::{ready, Poll};

/// A chunk-size line may be this long (extensions included).
const MAX_CHUNK_LINE: usize = 4096;
/// Trailers may be this long, in this many lines.
const MAX_TRAILER_BYTES: usize = 64 * 1024;
const MAX_TRAILER_LINES: usize = 100;

/// How a response body ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 1xx, 204, 304).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the backend closes the connection (which then cannot be reused).
    Close,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Bytes left of a Content-Length body.
    Length(u64),
    /// A chunk-size line is next.
    ChunkSize,
    /// Bytes left of the current chunk.
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// The trailer section after the last chunk.
    Trailers,
    /// Until the connection closes.
    Close,
    /// The body ended; `clean`: at a message boundary (the connection may carry another).
    Done { clean: bool },
}

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("backend closed the connection inside the body")]
    Incomplete,
    #[error("invalid chunked body: {0}")]
    Chunked(&'static str),
    #[error("reading the body: {0}")]
    Io(#[from] io::Error),
}

/// Decodes one response body from a read buffer.
#[derive(Debug)]
pub struct Decoder {
    state: State,
}

/// What the decoder needs from the connection: more bytes in `buf` (`Ok(0)` = closed).
pub type Fill<'a> = dyn FnMut(&mut BytesMut) -> Poll<io::Result<usize>> + 'a;

impl Decoder {
    pub fn new(framing: Framing) -> Decoder {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => State::Done { clean: true },
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::ChunkSize,
            Framing::Close => State::Close,
        };
        Decoder { state }
    }

    pub fn is_end(&self) -> bool {
        matches!(self.state, State::Done { .. })
    }

    /// The body ended where the next message can start.
    pub fn ended_cleanly(&self) -> bool {
        self.state == State::Done { clean: true }
    }

    /// Bytes left, when known.
    pub fn remaining(&self) -> Option<u64> {
        match self.state {
            State::Length(n) => Some(n),
            State::Done { .. } => Some(0),
            _ => None,
        }
    }

    /// The next frame; `None` at the end. After an error the body is over (not cleanly).
    pub fn poll_frame(
        &mut self,
        buf: &mut BytesMut,
        fill: &mut Fill<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let r = self.step(buf, fill);
        if let Poll::Ready(Some(Err(_))) = &r {
            self.state = State::Done { clean: false };
        }
        r
    }

    fn step(&mut self, buf: &mut BytesMut, fill: &mut Fill<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        loop {
            match self.state {
                State::Done { .. } => return Poll::Ready(None),
                State::Length(left) | State::ChunkData(left) => {
                    if buf.is_empty() && ready!(fill(buf))? == 0 {
                        return Poll::Ready(Some(Err(BodyError::Incomplete)));
                    }
                    let n = (buf.len() as u64).min(left);
                    let data = buf.split_to(n as usize).freeze();
                    self.state = match (self.state, left - n) {
                        (State::Length(_), 0) => State::Done { clean: true },
                        (State::Length(_), rest) => State::Length(rest),
                        (_, 0) => State::ChunkEnd,
                        (_, rest) => State::ChunkData(rest),
                    };
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::Close => {
                    if buf.is_empty() && ready!(fill(buf))? == 0 {
                        self.state = State::Done { clean: false };
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(buf.split().freeze()))));
                }
                State::ChunkSize => match httparse::parse_chunk_size(buf) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        buf.advance(used);
                        self.state = if size == 0 { State::Trailers } else { State::ChunkData(size) };
                    }
                    Ok(httparse::Status::Partial) if buf.len() > MAX_CHUNK_LINE => {
                        return Poll::Ready(Some(Err(BodyError::Chunked("chunk-size line too long"))))
                    }
                    Ok(httparse::Status::Partial) => ready!(more(buf, fill))?,
                    Err(_) => return Poll::Ready(Some(Err(BodyError::Chunked("invalid chunk size")))),
                },
                State::ChunkEnd => {
                    if buf.len() < 2 {
                        ready!(more(buf, fill))?;
                        continue;
                    }
                    if &buf[..2] != b"\r\n" {
                        return Poll::Ready(Some(Err(BodyError::Chunked("no CRLF after chunk data"))));
                    }
                    buf.advance(2);
                    self.state = State::ChunkSize;
                }
                State::Trailers => {
                    let mut lines = [httparse::EMPTY_HEADER; MAX_TRAILER_LINES];
                    match httparse::parse_headers(buf, &mut lines) {
                        Ok(httparse::Status::Complete((used, fields))) => {
                            let trailers = trailer_map(fields);
                            buf.advance(used);
                            self.state = State::Done { clean: true };
                            return Poll::Ready(match trailers {
                                Ok(t) if t.is_empty() => None,
                                Ok(t) => Some(Ok(Frame::trailers(t))),
                                Err(e) => Some(Err(e)),
                            });
                        }
                        Ok(httparse::Status::Partial) if buf.len() > MAX_TRAILER_BYTES => {
                            return Poll::Ready(Some(Err(BodyError::Chunked("trailers too large"))))
                        }
                        Ok(httparse::Status::Partial) => ready!(more(buf, fill))?,
                        Err(_) => return Poll::Ready(Some(Err(BodyError::Chunked("invalid trailers")))),
                    }
                }
            }
        }
    }
}

/// Read more for an incomplete piece of framing: closed there, the body is cut short.
fn more(buf: &mut BytesMut, fill: &mut Fill<'_>) -> Poll<Result<(), BodyError>> {
    match ready!(fill(buf)) {
        Ok(0) => Poll::Ready(Err(BodyError::Incomplete)),
        Ok(_) => Poll::Ready(Ok(())),
        Err(e) => Poll::Ready(Err(e.into())),
    }
}

fn trailer_map(fields: &[httparse::Header<'_>]) -> Result<HeaderMap, BodyError> {
    let mut map = HeaderMap::with_capacity(fields.len());
    for f in fields {
        let name = HeaderName::from_bytes(f.name.as_bytes()).map_err(|_| BodyError::Chunked("invalid trailer name"))?;
        let value = HeaderValue::from_bytes(f.value).map_err(|_| BodyError::Chunked("invalid trailer value"))?;
        map.append(name, value);
    }
    Ok(map)
}
