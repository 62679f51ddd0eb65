//! The client's response: hop-by-hop headers out, what the router learned in (a `Set-Cookie`
//! naming the session's backend), the debug header, counters; a 101 to an upgrade request
//! becomes a tunnel.

use super::response_body::{Lease, ResponseBody};
use super::tunnel::UpgradeRequest;
use super::upstream;
use super::{headers, soap, ClientConn, ProxyError, BACKEND_HEADER};
use crate::config::SessionMode;
use crate::sticky::{Plan, Router};
use http::{header, HeaderValue, Response};
use http_body::Body as _;

pub async fn respond(
    router: &Router<'_>,
    (resp, lease): (Response<upstream::Body>, Lease),
    plan: &Plan,
    upgrade: Option<UpgradeRequest>,
    conn: &ClientConn,
) -> Response<ResponseBody> {
    let backend = lease.guard.backend().clone();
    let (mut parts, mut body) = resp.into_parts();
    let switched = parts.status == http::StatusCode::SWITCHING_PROTOCOLS;
    let protocol = if switched { parts.headers.get(header::UPGRADE).cloned() } else { None };
    let _ = headers::strip_hop_by_hop(&mut parts.headers);
    if let Some(cookie) = router.learn(plan, &parts.headers).await {
        parts.headers.append(header::SET_COOKIE, cookie);
    }
    if router.snap.config.log.debug_headers {
        if let Ok(v) = HeaderValue::from_str(&backend.name) {
            parts.headers.insert(BACKEND_HEADER, v);
        }
    }
    if switched {
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
    if router.snap.session.mode == SessionMode::Soap && soap::is_xml(&parts.headers) && !body.is_end_stream() {
        // SOAP server-initiated sessions: the envelope's ReplyTo hands out a ServiceGroupId.
        let max = router.snap.config.session.soap_max_bytes;
        // Boxed: the rare path must not make every response's future larger.
        return match Box::pin(soap::read_response(body, lease, max)).await {
            Some((issued, body)) => {
                if let Some(id) = issued {
                    router.learn_issued(plan, &id).await;
                }
                Response::from_parts(parts, body)
            }
            None => ProxyError::Upstream.response(),
        };
    }
    let lease = if body.is_end_stream() {
        // Nothing to stream (HEAD, 204, 304, empty): the connection is free now.
        lease.release(&mut body);
        None
    } else {
        Some(lease)
    };
    Response::from_parts(parts, ResponseBody::Upstream(body, lease))
}
