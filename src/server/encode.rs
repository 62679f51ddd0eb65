//! The response head of the server's own HTTP/1.1 path, written by hyper's server's rules
//! (hyper 1.x `proto::h1::role::Server::encode`, lower-case names): the status line with the
//! backend's reason phrase, a backend's field lines passed through as it wrote them (when they
//! were: `proxy::upstream::raw`), the fields in the map's order, the body's framing chosen from
//! its length the way hyper chooses it (HEAD, 204, 304; `Content-Length`, chunked or until
//! close), `Connection: close` added when the connection ends after it, and a cached `Date`.
//! The body's bytes are [`super::h1`]'s. Owns no I/O.

use crate::proxy::headers::{add_length, has_token, last_coding_is_chunked, push_line};
use crate::proxy::upstream::raw::RawFields;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{response, StatusCode, Version};
use std::cell::RefCell;
use std::time::{Duration, SystemTime};

/// How the body goes out.
#[derive(Debug, PartialEq, Eq)]
pub enum Framing {
    /// Exactly this many bytes (0: none, whatever the body holds).
    Length(u64),
    /// Chunked; the trailer fields a `Trailer` field announced (sent only to a client that
    /// accepts trailers).
    Chunked(Option<Vec<HeaderName>>),
    /// Until the connection closes.
    Close,
}

/// A written head.
#[derive(Debug, PartialEq, Eq)]
pub struct Encoded {
    pub framing: Framing,
    /// The connection ends after this response.
    pub last: bool,
}

/// What is known of the body when its head is written: `None` an empty body (it is not read),
/// `Some(None)` a length not known in advance, `Some(Some(n))` exactly `n` bytes.
pub type BodyLength = Option<Option<u64>>;

/// A head hyper's server would refuse to write (conflicting lengths): the connection closes.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused;

/// Write `parts` (emptying its map, which the caller may reuse) into `dst`, after the
/// backend's fields passed through as bytes (`raw`, if they were). `head_request`: the
/// request was HEAD; `keep_alive`: the connection may carry another request.
pub fn head(
    dst: &mut Vec<u8>,
    parts: &mut response::Parts,
    raw: Option<&RawFields>,
    body: BodyLength,
    head_request: bool,
    keep_alive: bool,
) -> Result<Encoded, Refused> {
    let status = parts.status;
    let mut last = !keep_alive;
    if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
        // hyper's server cannot send a 1xx as the response: it answers 500 and closes.
        parts.headers.clear();
        dst.extend_from_slice(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n");
        date_line(dst);
        return Ok(Encoded { framing: Framing::Length(0), last: true });
    }
    if status == StatusCode::SWITCHING_PROTOCOLS {
        last = true;
    }
    if !keep_alive {
        add_close(&mut parts.headers);
    }
    status_line(dst, parts);
    let v10 = parts.version == Version::HTTP_10;
    let chunkable = !v10 && can_have_body(head_request, status);
    let mut framing = Framing::Length(0);
    let mut trailer_fields: Option<Vec<HeaderName>> = None;
    let (mut wrote_len, mut wrote_date, mut te_not_chunked) = (false, false, false);
    let mut prev_len: Option<u64> = None;
    // A line of values joined with ", " (length, codings, connection, trailer) is open: `Some`,
    // and whether it is the `Transfer-Encoding` line.
    let mut open: Option<bool> = None;
    let mut current: Option<HeaderName> = None;
    if let Some(raw) = raw {
        // The same rules as for the map's fields below, for the only ones a passed-through
        // head may have that they concern: one `Content-Length` (a number) and `Date`.
        wrote_date = raw.has_date();
        match raw.length() {
            // No body and not HEAD: the length goes (and `content-length: 0` comes below).
            Some(_) if body.is_none() && !head_request => raw.write(dst, true),
            Some(n) => {
                framing = match body {
                    Some(Some(known)) => Framing::Length(known),
                    Some(None) => {
                        prev_len = Some(n);
                        Framing::Length(n)
                    }
                    None => Framing::Length(0),
                };
                wrote_len = true;
                raw.write(dst, false);
            }
            None => raw.write(dst, false),
        }
    }
    for (name, value) in parts.headers.drain() {
        if let Some(n) = name {
            if let Some(te) = open.take() {
                end_joined(dst, te && te_not_chunked);
            }
            current = Some(n);
        }
        let Some(name) = current.as_ref() else { continue };
        let joining = open.is_some();
        match *name {
            header::CONTENT_LENGTH => {
                if wrote_len && !joining {
                    return Err(Refused);
                }
                match body {
                    Some(Some(known)) => {
                        if !joining {
                            framing = Framing::Length(known);
                            open_joined(dst, &mut open, name, &value);
                            wrote_len = true;
                        }
                        continue;
                    }
                    Some(None) => {
                        let len = parse_length(&value).ok_or(Refused)?;
                        match prev_len {
                            Some(prev) if prev != len => return Err(Refused),
                            Some(_) => {}
                            None => {
                                framing = Framing::Length(len);
                                open_joined(dst, &mut open, name, &value);
                                (wrote_len, prev_len) = (true, Some(len));
                            }
                        }
                        continue;
                    }
                    // No body, a length claimed: kept only on a response to HEAD.
                    None if !head_request => continue,
                    None => wrote_len = true,
                }
            }
            header::TRANSFER_ENCODING => {
                if wrote_len && !joining {
                    return Err(Refused);
                }
                if !chunkable {
                    continue;
                }
                wrote_len = true;
                te_not_chunked = !last_coding_is_chunked(&value);
                if joining {
                    add_joined(dst, &value);
                } else {
                    framing = Framing::Chunked(None);
                    open_joined(dst, &mut open, name, &value);
                }
                continue;
            }
            header::CONNECTION => {
                last |= has_token(value.as_bytes(), "close");
                join(dst, &mut open, name, &value);
                continue;
            }
            header::DATE => wrote_date = true,
            header::TRAILER => {
                if !chunkable {
                    continue;
                }
                join(dst, &mut open, name, &value);
                if let Ok(v) = value.to_str() {
                    let names = v.split(',').filter_map(|s| HeaderName::from_bytes(s.trim().as_bytes()).ok());
                    trailer_fields.get_or_insert_with(Vec::new).extend(names);
                }
                continue;
            }
            _ => {}
        }
        if let Some(te) = open.take() {
            end_joined(dst, te && te_not_chunked);
        }
        push_line(dst, name.as_str(), value.as_bytes());
    }
    if let Some(te) = open.take() {
        end_joined(dst, te && te_not_chunked);
    }
    if !wrote_len {
        framing = match body {
            Some(None) if chunkable => {
                dst.extend_from_slice(b"transfer-encoding: chunked\r\n");
                Framing::Chunked(None)
            }
            Some(None) => Framing::Close,
            None | Some(Some(0)) => {
                if can_have_length(status) && !head_request {
                    dst.extend_from_slice(b"content-length: 0\r\n");
                }
                Framing::Length(0)
            }
            Some(Some(n)) if can_have_length(status) => {
                dst.extend_from_slice(b"content-length: ");
                dst.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
                dst.extend_from_slice(b"\r\n");
                Framing::Length(n)
            }
            Some(Some(_)) => Framing::Length(0),
        };
    }
    if !can_have_body(head_request, status) {
        framing = Framing::Length(0);
    }
    if wrote_date {
        dst.extend_from_slice(b"\r\n");
    } else {
        date_line(dst);
    }
    if let (Framing::Chunked(allowed), Some(fields)) = (&mut framing, trailer_fields) {
        *allowed = Some(fields);
    }
    last |= framing == Framing::Close;
    Ok(Encoded { framing, last })
}

/// A trailer field hyper's server sends (when announced and accepted).
pub fn is_valid_trailer(name: &HeaderName) -> bool {
    !matches!(
        *name,
        header::AUTHORIZATION
            | header::CACHE_CONTROL
            | header::CONTENT_ENCODING
            | header::CONTENT_LENGTH
            | header::CONTENT_RANGE
            | header::CONTENT_TYPE
            | header::HOST
            | header::MAX_FORWARDS
            | header::SET_COOKIE
            | header::TRAILER
            | header::TRANSFER_ENCODING
            | header::TE
    )
}

fn status_line(dst: &mut Vec<u8>, parts: &response::Parts) {
    let reason = parts.extensions.get::<hyper::ext::ReasonPhrase>();
    if parts.version != Version::HTTP_10 && parts.status == StatusCode::OK && reason.is_none() {
        dst.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        return;
    }
    dst.extend_from_slice(if parts.version == Version::HTTP_10 { b"HTTP/1.0 " } else { b"HTTP/1.1 " });
    dst.extend_from_slice(parts.status.as_str().as_bytes());
    dst.push(b' ');
    match reason {
        Some(r) => dst.extend_from_slice(r.as_bytes()),
        None => dst.extend_from_slice(parts.status.canonical_reason().unwrap_or("<none>").as_bytes()),
    }
    dst.extend_from_slice(b"\r\n");
}

/// hyper's `Connection: close` on a response after which an HTTP/1.1 connection ends.
fn add_close(headers: &mut HeaderMap) {
    match headers.entry(header::CONNECTION) {
        header::Entry::Occupied(mut e) => {
            if !e.iter().any(|v| has_token(v.as_bytes(), "close")) {
                e.append(HeaderValue::from_static("close"));
            }
        }
        header::Entry::Vacant(e) => {
            e.insert(HeaderValue::from_static("close"));
        }
    }
}

fn open_joined(dst: &mut Vec<u8>, open: &mut Option<bool>, name: &HeaderName, value: &HeaderValue) {
    dst.extend_from_slice(name.as_str().as_bytes());
    dst.extend_from_slice(b": ");
    dst.extend_from_slice(value.as_bytes());
    *open = Some(*name == header::TRANSFER_ENCODING);
}

fn add_joined(dst: &mut Vec<u8>, value: &HeaderValue) {
    dst.extend_from_slice(b", ");
    dst.extend_from_slice(value.as_bytes());
}

/// Add `value` to the open line of `name`, or open one.
fn join(dst: &mut Vec<u8>, open: &mut Option<bool>, name: &HeaderName, value: &HeaderValue) {
    if open.is_some() {
        add_joined(dst, value);
    } else {
        open_joined(dst, open, name, value);
    }
}

/// End an open line; `chunked`: a `Transfer-Encoding` whose last coding was not chunked
/// gets it added (hyper sends chunked then).
fn end_joined(dst: &mut Vec<u8>, chunked: bool) {
    dst.extend_from_slice(if chunked { b", chunked\r\n" } else { b"\r\n" });
}

/// A `Content-Length` value as hyper reads it (`1, 1` is 1; differing values are none).
fn parse_length(v: &HeaderValue) -> Option<u64> {
    let mut found = None;
    add_length(&mut found, v);
    found.and_then(Result::ok)
}

fn can_have_body(head_request: bool, status: StatusCode) -> bool {
    !head_request && !status.is_informational() && !matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED)
}

fn can_have_length(status: StatusCode) -> bool {
    !status.is_informational() && !matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED)
}

thread_local! {
    /// The `Date` line of the current second, formatted once a second per worker.
    static DATE: RefCell<(SystemTime, Vec<u8>)> = const { RefCell::new((SystemTime::UNIX_EPOCH, Vec::new())) };
}

/// `date: <now>\r\n\r\n`: the head's last field and its end.
fn date_line(dst: &mut Vec<u8>) {
    let now = SystemTime::now();
    DATE.with_borrow_mut(|(next, line)| {
        if now >= *next {
            let secs = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            let second = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
            *next = second + Duration::from_secs(1);
            line.clear();
            line.extend_from_slice(b"date: ");
            line.extend_from_slice(httpdate::fmt_http_date(second).as_bytes());
            line.extend_from_slice(b"\r\n\r\n");
        }
        dst.extend_from_slice(line);
    });
}

#[cfg(test)]
#[path = "encode_tests.rs"]
mod tests;
