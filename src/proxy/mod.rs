//! The per-request service: find the session, pick the backend, forward, learn, answer.
//!
//! One request: limits -> session key -> store lookup -> [`decide`] -> (balance and pin) ->
//! forward on a connection from this worker's pool (`upstream`) -> on a refused connection,
//! reassign and retry -> learn the backend's session id (learn/header modes) -> `Set-Cookie`
//! only if new -> metrics and access log. Errors become plain-text responses through [`ProxyError`].

mod body;
mod error;
pub mod headers;
mod tunnel;
mod upstream;

pub use body::{Lease, RequestBody, ResponseBody, UpstreamBody};
pub use error::ProxyError;

use crate::balance::Backend;
use crate::config::{OnBackendDown, SessionMode};
use crate::metrics::Reassign;
use crate::session::{decide, CookieCodec, Decision, Learned};
use crate::state::{Shared, Snapshot};
use crate::store::AffinityStore;
use http::{header, HeaderName, HeaderValue, Method, Request, Response, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::OwnedSemaphorePermit;
use tunnel::UpgradeRequest;
use upstream::{Conn, SendError};

/// Names the backend a session was moved away from.
pub const PREVIOUS_BACKEND: HeaderName = HeaderName::from_static("x-stickylb-previous-backend");
/// Names the backend that served (with `log.debug_headers`).
pub const BACKEND_HEADER: HeaderName = HeaderName::from_static("x-stickylb-backend");

/// The scheme clients reached us by, told to the backends in the forwarding headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Http,
    Https,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Http => "http",
            Proto::Https => "https",
        }
    }
}

/// What a request knows of the client connection it came on.
#[derive(Clone)]
pub struct ClientConn {
    pub peer: SocketAddr,
    pub proto: Proto,
    /// The connection's `max_connections` permit; an upgrade takes it for its tunnel.
    permit: Arc<std::sync::Mutex<Option<OwnedSemaphorePermit>>>,
}

impl ClientConn {
    pub fn new(peer: SocketAddr, proto: Proto, permit: OwnedSemaphorePermit) -> ClientConn {
        ClientConn { peer, proto, permit: Arc::new(std::sync::Mutex::new(Some(permit))) }
    }

    /// Take the connection's permit, to outlive the connection (an upgraded one).
    fn take_permit(&self) -> Option<OwnedSemaphorePermit> {
        self.permit.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Facts about one request, gathered for the access log.
struct Outcome {
    backend: Option<Arc<str>>,
    status: u16,
}

/// Handle one client request. Never fails: errors are answered.
pub async fn handle(shared: Arc<Shared>, req: Request<Incoming>, conn: ClientConn) -> Response<ResponseBody> {
    let started = Instant::now();
    let snap = shared.snapshot();
    let method = req.method().clone();
    // Only for the access log, and a reference-counted clone rather than a copy.
    let path = if snap.config.log.access_log { req.uri().path_and_query().cloned() } else { None };
    let (response, outcome) = match proxy(&shared, &snap, req, &conn, started).await {
        Ok((resp, backend)) => {
            let status = resp.status().as_u16();
            (resp, Outcome { backend: Some(backend), status })
        }
        Err((e, backend)) => {
            let status = e.status().as_u16();
            error::count_error(&shared.metrics, &snap.pool, backend.as_deref(), status);
            (e.response(), Outcome { backend, status })
        }
    };
    let elapsed = started.elapsed();
    shared.metrics.observe_duration(elapsed);
    if snap.config.log.access_log {
        access_log(&method, path.as_ref().map_or("/", |p| p.as_str()), &outcome, elapsed, &response);
    }
    response
}

fn access_log(method: &Method, path: &str, o: &Outcome, elapsed: Duration, resp: &Response<ResponseBody>) {
    let bytes = resp.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).unwrap_or("-");
    tracing::info!(
        target: "access",
        method = %method,
        path,
        status = o.status,
        backend = o.backend.as_deref().unwrap_or("-"),
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        bytes,
    );
}

type Failure = (ProxyError, Option<Arc<str>>);

/// Where this request goes and what the session needs afterwards.
struct Route {
    backend: Arc<Backend>,
    /// The session key to pin (insert id, or the application's id).
    key: Option<String>,
    /// A new insert-mode session: send `Set-Cookie`.
    new_cookie: bool,
    /// The backend the session was moved away from.
    previous: Option<Arc<str>>,
    /// The session was already pinned to `backend` (not a new or moved one).
    pinned: bool,
}

async fn proxy(
    shared: &Shared,
    snap: &Snapshot,
    req: Request<Incoming>,
    conn: &ClientConn,
    started: Instant,
) -> Result<(Response<ResponseBody>, Arc<str>), Failure> {
    let cfg = &snap.config;
    let (mut parts, body) = req.into_parts();
    if head_size(&parts) > cfg.server.max_header_bytes {
        return Err((ProxyError::HeadersTooLarge, None));
    }
    if exceeds_limit(&parts.headers, cfg.server.max_body_bytes) {
        return Err((ProxyError::BodyTooLarge, None));
    }
    let extracted = snap.session.extract(&mut parts.headers, &parts.uri);
    if extracted.rejected {
        shared.metrics.cookie_rejected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let mut route = route(shared, snap, extracted.key).await?;
    let mut upgrade = UpgradeRequest::take(&mut parts);
    prepare_upstream(&mut parts, conn.peer, conn.proto)?;
    if let Some(u) = &upgrade {
        u.restore_headers(&mut parts.headers);
    }
    let body = RequestBody::new(body, cfg.server.max_body_bytes);
    let deadline = started + cfg.server.request_timeout;
    let mut failed: Vec<Arc<Backend>> = Vec::new();
    loop {
        let result = forward(snap, &parts, &body, &route, deadline).await;
        match result {
            Ok(resp) => {
                route.backend.record_success();
                let name = route.backend.name.clone();
                return Ok((respond(shared, snap, resp, &route, upgrade.take(), conn).await, name));
            }
            Err(e) => {
                let name = Some(route.backend.name.clone());
                if body.too_large() {
                    return Err((ProxyError::BodyTooLarge, name));
                }
                if body.client_failed() {
                    return Err((ProxyError::BadRequest, name));
                }
                note_failure(shared, snap, &route.backend, e);
                let retry = matches!(e, ProxyError::Connect)
                    || (e == ProxyError::Upstream && is_idempotent(&parts.method) && body.is_empty());
                if !retry || !body.replayable() || failed.len() as u32 >= cfg.balance.retries {
                    return Err((e, name));
                }
                if route.pinned && snap.session.on_backend_down == OnBackendDown::Reject {
                    // The session's own backend is gone and moving it is not allowed.
                    return Err((ProxyError::NoBackend, name));
                }
                failed.push(route.backend.clone());
                route = reroute(shared, snap, route, &failed).await.ok_or((e, name))?;
            }
        }
    }
}

/// The size of the request head as HTTP/1.1 would write it (request line, `name: value` lines).
/// hyper bounds its read buffer, not the head, and not below 8 KiB: `max_header_bytes` is
/// enforced exactly here.
fn head_size(parts: &http::request::Parts) -> usize {
    let line = parts.method.as_str().len() + parts.uri.path_and_query().map_or(1, |p| p.as_str().len()) + 12;
    parts.headers.iter().fold(line, |n, (k, v)| n + k.as_str().len() + v.len() + 4) + 2
}

/// A Content-Length above the configured limit (0 = none).
fn exceeds_limit(headers: &http::HeaderMap, limit: u64) -> bool {
    limit != 0
        && headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .is_some_and(|n| n > limit)
}

fn is_idempotent(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE)
}

/// Decide the backend for a request with session key `key`.
async fn route(shared: &Shared, snap: &Snapshot, key: Option<String>) -> Result<Route, Failure> {
    let mode = snap.session.mode;
    let pinned = match &key {
        Some(k) => shared.store.get(k, &snap.pool).await,
        None => None,
    };
    match decide(pinned, &snap.pool, snap.session.on_backend_down) {
        Decision::Pinned(backend) => Ok(Route { backend, key, new_cookie: false, previous: None, pinned: true }),
        Decision::Reject { from } => Err((ProxyError::NoBackend, Some(from.name.clone()))),
        Decision::Reassign { from } => {
            shared.metrics.reassigned(reassign_reason(snap, &from));
            let chosen = snap.pool.select(key.as_deref(), &[]).ok_or((ProxyError::NoBackend, None))?;
            let backend = match &key {
                // Another instance may have moved this session already: adopt its choice.
                Some(k) => {
                    let won = shared.store.reassign(k, &from, &chosen, &snap.pool).await;
                    snap.pool.current(&won).filter(|b| b.serves_pinned()).cloned().unwrap_or(chosen)
                }
                None => chosen,
            };
            Ok(Route { backend, key, new_cookie: false, previous: Some(from.name.clone()), pinned: false })
        }
        Decision::New => {
            let (key, new_cookie) = match (mode, key) {
                (SessionMode::Insert, None) => (Some(CookieCodec::new_id()), true),
                (_, key) => (key, false),
            };
            let chosen = snap.pool.select(key.as_deref(), &[]).ok_or((ProxyError::NoBackend, None))?;
            let backend = match &key {
                // Another instance may have pinned this session meanwhile: adopt its choice.
                Some(k) => {
                    let won = shared.store.pin_if_absent(k, &chosen, &snap.pool).await;
                    snap.pool.current(&won).filter(|b| b.serves_pinned()).cloned().unwrap_or(chosen)
                }
                None => chosen,
            };
            Ok(Route { backend, key, new_cookie, previous: None, pinned: false })
        }
    }
}

fn reassign_reason(snap: &Snapshot, from: &Arc<Backend>) -> Reassign {
    match snap.pool.current(from) {
        None => Reassign::Removed,
        Some(b) if b.state() == crate::config::AdminState::Maint => Reassign::Maint,
        Some(_) => Reassign::Down,
    }
}

/// After a failed attempt: pick another backend and move the session there.
async fn reroute(shared: &Shared, snap: &Snapshot, route: Route, failed: &[Arc<Backend>]) -> Option<Route> {
    let mut backend = snap.pool.select(route.key.as_deref(), failed)?;
    shared.metrics.reassigned(Reassign::ConnectFailed);
    if let Some(k) = &route.key {
        if snap.session.mode != SessionMode::None {
            // Another instance may have moved this session already: adopt its choice.
            let won = shared.store.reassign(k, &route.backend, &backend, &snap.pool).await;
            let usable = |b: &&Arc<Backend>| b.serves_pinned() && !failed.iter().any(|f| Arc::ptr_eq(f, b));
            if let Some(b) = snap.pool.current(&won).filter(usable) {
                backend = b.clone();
            }
        }
    }
    let previous = route.previous.or_else(|| Some(route.backend.name.clone()));
    Some(Route { backend, key: route.key, new_cookie: route.new_cookie, previous, pinned: false })
}

fn note_failure(shared: &Shared, snap: &Snapshot, backend: &Backend, e: ProxyError) {
    let _ = shared;
    if matches!(e, ProxyError::Connect | ProxyError::Timeout) {
        let p = &snap.config.passive;
        if backend.record_failure(p.consecutive_failures.get(), p.ejection_time) {
            tracing::warn!(backend = %backend.name, "backend ejected after {} consecutive failures", p.consecutive_failures);
        }
    }
}

/// Rewrite the request head for the upstream hop (done once; each attempt clones it).
fn prepare_upstream(parts: &mut http::request::Parts, client: SocketAddr, proto: Proto) -> Result<(), Failure> {
    // HTTP/2 requests carry the host in the URI authority only.
    if !parts.headers.contains_key(header::HOST) {
        if let Some(auth) = parts.uri.authority() {
            let v = HeaderValue::from_str(auth.as_str()).map_err(|_| (ProxyError::BadRequest, None))?;
            parts.headers.insert(header::HOST, v);
        }
    }
    headers::join_cookies(&mut parts.headers);
    headers::strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(PREVIOUS_BACKEND);
    headers::add_forwarded(&mut parts.headers, client, proto.as_str());
    Ok(())
}

/// One attempt against `route.backend`, bounded by the request deadline.
async fn forward(
    snap: &Snapshot,
    parts: &http::request::Parts,
    body: &RequestBody,
    route: &Route,
    deadline: Instant,
) -> Result<(Response<Incoming>, Lease), ProxyError> {
    let guard = route.backend.start_request();
    match tokio::time::timeout_at(deadline.into(), send_upstream(snap, parts, body, route)).await {
        Err(_) => Err(ProxyError::Timeout),
        Ok(Ok((resp, conn))) => Ok((resp, Lease { guard, conn })),
        Ok(Err(e)) => Err(e),
    }
}

/// Send the request to `route.backend` on a pooled connection. If the backend closed that
/// connection before the request went out, or (for a request that is safe to repeat) before
/// it answered, the request goes again on a new connection to the same backend: an idle
/// keep-alive connection timing out is no reason to move the session.
async fn send_upstream(
    snap: &Snapshot,
    parts: &http::request::Parts,
    body: &RequestBody,
    route: &Route,
) -> Result<(Response<Incoming>, Conn), ProxyError> {
    let authority = &route.backend.addr.authority;
    let connect_timeout = snap.config.balance.connect_timeout;
    let mut conn = Conn::checkout(authority, false, connect_timeout).await?;
    let mut req = upstream_request(parts, body, route)?;
    loop {
        match conn.send(req).await {
            Ok(resp) => return Ok((resp, conn)),
            Err(SendError::Unsent(unsent)) if conn.reused => req = *unsent,
            Err(SendError::Failed(e)) if conn.reused && is_idempotent(&parts.method) && body.is_empty() => {
                tracing::debug!(backend = %route.backend.name, error = %e, "reused connection failed; sending again");
                req = upstream_request(parts, body, route)?;
            }
            Err(SendError::Unsent(_)) => return Err(ProxyError::Connect),
            Err(SendError::Failed(e)) => {
                tracing::debug!(backend = %route.backend.name, error = ?e, "upstream request failed");
                return Err(ProxyError::Upstream);
            }
        }
        conn = Conn::checkout(authority, true, connect_timeout).await?;
    }
}

/// The request of one attempt: the prepared head, in origin form, and the shared body.
fn upstream_request(
    parts: &http::request::Parts,
    body: &RequestBody,
    route: &Route,
) -> Result<Request<UpstreamBody>, ProxyError> {
    let mut req = Request::new(body.attempt());
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = origin_form(&parts.uri)?;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = parts.headers.clone();
    if let Some(prev) = &route.previous {
        if let Ok(v) = HeaderValue::from_str(prev) {
            req.headers_mut().insert(PREVIOUS_BACKEND, v);
        }
    }
    Ok(req)
}

/// The request target as an HTTP/1.1 origin server expects it (`/path?query`); HTTP/2
/// requests carry scheme and authority in the URI.
fn origin_form(uri: &Uri) -> Result<Uri, ProxyError> {
    if uri.scheme().is_none() && uri.authority().is_none() {
        return Ok(uri.clone());
    }
    let pq = uri.path_and_query().map_or("/", |p| p.as_str());
    Uri::try_from(pq).map_err(|_| ProxyError::BadRequest)
}

/// The client's response: hop-by-hop headers out, session learned, cookie in if new; a 101 to
/// an upgrade request becomes a tunnel.
async fn respond(
    shared: &Shared,
    snap: &Snapshot,
    (resp, lease): (Response<Incoming>, Lease),
    route: &Route,
    upgrade: Option<UpgradeRequest>,
    conn: &ClientConn,
) -> Response<ResponseBody> {
    let backend = lease.guard.backend().clone();
    let (mut parts, body) = resp.into_parts();
    let switched = parts.status == http::StatusCode::SWITCHING_PROTOCOLS;
    let protocol = if switched { parts.headers.get(header::UPGRADE).cloned() } else { None };
    headers::strip_hop_by_hop(&mut parts.headers);
    match snap.session.learn(&parts.headers) {
        Some(Learned::Pin(id)) => shared.store.pin(&id, &backend).await,
        Some(Learned::Forget) => {
            if let Some(k) = &route.key {
                shared.store.unpin(k).await;
            }
        }
        None => {}
    }
    if route.new_cookie {
        if let Some(sc) = route.key.as_deref().and_then(|id| snap.session.set_cookie(id)) {
            parts.headers.append(header::SET_COOKIE, sc);
        }
    }
    if snap.config.log.debug_headers {
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
        upgrade.tunnel(&mut parts.headers, protocol, backend_side, lease, conn.take_permit());
        return Response::from_parts(parts, ResponseBody::Text(None));
    }
    backend.responses.count(parts.status.as_u16());
    let lease = if body.is_end_stream() {
        // Nothing to stream (HEAD, 204, 304, empty): the connection is free now.
        lease.release();
        None
    } else {
        Some(lease)
    };
    Response::from_parts(parts, ResponseBody::Upstream(body, lease))
}
