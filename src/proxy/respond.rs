//! The client's response: hop-by-hop headers out, what the router learned in (a `Set-Cookie`
//! naming the session's backend), the debug header, counters; a 101 to an upgrade request
//! becomes a tunnel.

use super::response_body::{Lease, ResponseBody};
use super::tunnel::UpgradeRequest;
use super::upstream;
use super::upstream::raw::PassThrough as _;
use super::{headers, soap, ClientConn, ProxyError, BACKEND_HEADER};
use crate::config::SessionMode;
use crate::sticky::{Plan, Router};
use http::{header, HeaderValue, Response};
use http_body::Body as _;
use std::future::Future;
use std::pin::Pin;

/// The client's response: ready at once, or — when the backend's response issued or deleted
/// an id to keep in the store, or a SOAP body must be read — a future of it. Most responses
/// await nothing, and a future made and moved into the caller's for each of them was a
/// visible share of the copies per request.
#[allow(clippy::large_enum_variant)] // returned once per response; boxing it would allocate
pub enum Responded<'a> {
    Now(Response<ResponseBody>),
    Later(Pin<Box<dyn Future<Output = Response<ResponseBody>> + Send + 'a>>),
}

pub fn respond<'a>(
    router: &'a Router<'a>,
    (resp, lease): (Response<upstream::Body>, Lease),
    plan: &'a Plan,
    upgrade: Option<UpgradeRequest>,
    conn: &'a ClientConn,
) -> Responded<'a> {
    let (mut parts, body) = resp.into_parts();
    let switched = parts.status == http::StatusCode::SWITCHING_PROTOCOLS;
    let protocol = if switched { parts.headers.get(header::UPGRADE).cloned() } else { None };
    let _ = headers::strip_hop_by_hop(&mut parts.headers);
    let learned = match body.raw_fields() {
        Some(raw) => router.learned_from(raw.fields()),
        None => router.learned(&parts.headers),
    };
    if let Some(cookie) = router.insert_cookie(plan) {
        parts.headers.append(header::SET_COOKIE, cookie);
    }
    if router.snap.config.log.debug_headers {
        if let Ok(v) = HeaderValue::from_str(&lease.guard.backend().name) {
            parts.headers.insert(BACKEND_HEADER, v);
        }
    }
    let soap = !switched
        && router.snap.session.mode == SessionMode::Soap
        && soap::is_xml(&parts.headers)
        && !body.is_end_stream();
    if learned.is_none() && !soap {
        return Responded::Now(finish(parts, body, lease, upgrade, protocol, conn));
    }
    Responded::Later(Box::pin(async move {
        if let Some(learned) = learned {
            router.keep(plan, learned).await;
        }
        if !soap {
            return finish(parts, body, lease, upgrade, protocol, conn);
        }
        // SOAP server-initiated sessions: the envelope's ReplyTo hands out a ServiceGroupId.
        lease.guard.backend().responses.count(parts.status.as_u16());
        match soap::read_response(body, lease, router.snap.config.session.soap_max_bytes).await {
            Some((issued, body)) => {
                if let Some(id) = issued {
                    router.learn_issued(plan, &id).await;
                }
                Response::from_parts(parts, body)
            }
            None => ProxyError::Upstream.response(),
        }
    }))
}

/// The response once nothing is left to await: a 101 to an upgrade request becomes a tunnel;
/// a body with nothing to stream frees the connection at once.
fn finish(
    mut parts: http::response::Parts,
    mut body: upstream::Body,
    lease: Lease,
    upgrade: Option<UpgradeRequest>,
    protocol: Option<HeaderValue>,
    conn: &ClientConn,
) -> Response<ResponseBody> {
    let backend = lease.guard.backend();
    if parts.status == http::StatusCode::SWITCHING_PROTOCOLS {
        let backend_side = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
        let Some((upgrade, backend_side)) = upgrade.zip(backend_side) else {
            tracing::debug!(backend = %backend.name, "backend switched protocols unasked");
            backend.responses.count(ProxyError::Upstream.status().as_u16());
            return ProxyError::Upstream.response();
        };
        backend.responses.count(parts.status.as_u16());
        upgrade.tunnel(&mut parts.headers, protocol, backend_side, lease, conn.take_slot());
        return Response::from_parts(parts, ResponseBody::Text(None));
    }
    backend.responses.count(parts.status.as_u16());
    let lease = if body.is_end_stream() && body.raw_fields().is_none() {
        // Nothing to stream (HEAD, 204, 304, empty): the connection is free now. (A head
        // passed through is in the connection: it is given back once the server polled the
        // ended body, after writing the head.)
        lease.release(&mut body);
        None
    } else {
        Some(lease)
    };
    Response::from_parts(parts, ResponseBody::Upstream(body, lease))
}
