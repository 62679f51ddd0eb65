//! SOAP mode's look at bodies: which requests and responses are inspected (POST / responses
//! with an XML content type), and the bounded read of a response's first bytes before it is
//! answered. The XML itself is read by `session::soap`; the pins are the router's.

use super::request_body::RequestBody;
use super::response_body::{Lease, ResponseBody};
use super::upstream;
use super::ProxyError;
use crate::session::soap::{self as envelope, SoapKey};
use crate::session::Extracted;
use bytes::Bytes;
use http::{header, request, HeaderMap, Method};
use http_body::Body as _;
use http_body_util::BodyExt;
use std::collections::VecDeque;

/// `text/xml` (SOAP 1.1), `application/soap+xml` (SOAP 1.2), `application/xml` or any `+xml`.
pub fn is_xml(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "text/xml" || essence == "application/xml" || essence.ends_with("+xml")
}

/// Only a POST with an XML body can carry a SOAP envelope.
pub fn inspects_request(parts: &request::Parts) -> bool {
    parts.method == Method::POST && is_xml(&parts.headers)
}

/// Peek at up to `max` bytes of the request body (which is then forwarded whole) and read its
/// session key into `session`. A body that breaks off is the client's fault (400), one over
/// `max_body_bytes` a 413.
pub async fn request_key(body: &RequestBody, max: usize, session: &mut Extracted) -> Result<(), ProxyError> {
    let Some(prefix) = body.peek(max).await else {
        return Err(if body.too_large() { ProxyError::BodyTooLarge } else { ProxyError::BadRequest });
    };
    read_request_key(&prefix, session);
    Ok(())
}

/// The session key of a request envelope's first bytes, into `session`: a `ServiceGroupId`
/// (pinned when a backend hands it out) or a `ClientID` (pinned on its first request).
fn read_request_key(prefix: &[u8], session: &mut Extracted) {
    match envelope::request_key(prefix) {
        Some(SoapKey::ServiceGroup(id)) => session.key = Some(id),
        Some(SoapKey::Client(id)) => {
            session.key = Some(id);
            session.client_chosen = true;
        }
        None => {}
    }
}

/// Read up to `max` bytes of a response body: the `ServiceGroupId` it hands out, if any, and
/// the body to send on (the bytes read first, then the rest). `None` when the backend's body
/// failed while it was read (nothing was sent to the client yet).
pub async fn read_response(
    mut body: upstream::Body,
    lease: Lease,
    max: usize,
) -> Option<(Option<String>, ResponseBody)> {
    let mut prefix = VecDeque::new();
    let mut seen = bytes::BytesMut::new();
    while seen.len() < max && !body.is_end_stream() {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    seen.extend_from_slice(&data);
                    prefix.push_back(data);
                }
            }
            Some(Err(_)) => return None,
            None => break,
        }
    }
    let seen: Bytes = seen.freeze();
    let id = envelope::response_service_group(&seen[..seen.len().min(max)]);
    let lease = if body.is_end_stream() {
        lease.release(&mut body);
        None
    } else {
        Some(lease)
    };
    Some((id, ResponseBody::Peeked(prefix, body, lease)))
}
