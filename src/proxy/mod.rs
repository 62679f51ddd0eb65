//! The per-request service: the request as a straight line.
//!
//! [`handle`]: limits -> session key -> [`Router::plan`] -> `forward` (and
//! [`Router::replan`] on a failure) -> `respond` (with [`Router::learn`]) -> metrics and
//! access log. Where a request goes is the sticky router's decision (`sticky`); this module
//! only applies it, and never touches the store. Errors become plain-text responses through
//! [`ProxyError`].

mod error;
mod forward;
pub mod forwarding;
pub mod headers;
mod request;
mod request_body;
mod respond;
mod response_body;
mod soap;
mod tunnel;
#[doc(hidden)] // public for examples/floor.rs, the stack's floor in benchmarks
pub mod upstream;

pub use error::ProxyError;
pub use request_body::{RequestBody, UpstreamBody};
pub use response_body::{Lease, ResponseBody};

use crate::config::SessionMode;
use crate::slots::{Conn as SlotConn, Held};
use crate::state::{Shared, Snapshot};
use crate::sticky::decide::Failure;
use crate::sticky::{Answer, NoBackend, RequestFacts, Router};
use crate::wait::Sleeps;
use forward::AttemptError;
use http::{header, HeaderName, Method, Response};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tunnel::UpgradeRequest;
use upstream::raw::PassThrough as _;

/// Header lines a request or a backend response may have (hyper's default is 100): a head
/// within `max_header_bytes` must not be refused for its number of lines (SPEC: >= 500).
/// Above 100, hyper allocates its parse arrays per message (~16 KB each here), so this stays
/// near the contract's floor rather than at `max_header_bytes / 4`.
pub const MAX_HEADER_LINES: usize = 512;

/// Names the backend a session was moved away from.
pub use headers::PREVIOUS_BACKEND;
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
    /// The connection's `max_connections` slot; an upgrade takes it for its tunnel.
    held: Arc<std::sync::Mutex<Option<Held>>>,
    /// The slot's flag that a request started (the connection is then never evicted).
    pub slot: Arc<SlotConn>,
    /// The connection's timers (hyper's header-read timer, the request deadlines), reused.
    pub sleeps: Arc<Sleeps>,
}

impl ClientConn {
    pub fn new(peer: SocketAddr, proto: Proto, held: Held) -> ClientConn {
        let slot = held.conn.clone();
        ClientConn { peer, proto, held: Arc::new(std::sync::Mutex::new(Some(held))), slot, sleeps: Sleeps::new() }
    }

    /// Take the connection's slot, to outlive the connection (an upgraded one).
    fn take_slot(&self) -> Option<Held> {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Facts about one request, gathered for the access log.
struct Outcome {
    backend: Option<Arc<str>>,
    status: u16,
}

/// Handle one client request: its head, and its body from hyper's server (`None` from the
/// server's own HTTP/1.1 path, which serves only requests without one). Never fails: errors
/// are answered.
pub async fn handle(
    shared: &Shared,
    mut parts: http::request::Parts,
    body: Option<Incoming>,
    conn: &ClientConn,
) -> Response<ResponseBody> {
    let started = Instant::now();
    let snap = shared.snapshot();
    let method = parts.method.clone();
    // Only for the access log, and a reference-counted clone rather than a copy.
    let path = if snap.config.log.access_log { parts.uri.path_and_query().cloned() } else { None };
    let router = Router { snap: &snap, store: &shared.store, metrics: &shared.metrics };
    let served = serve(&router, &mut parts, body, conn, started).await;
    // Its emptied map holds a later backend response's fields (no allocation for those).
    headers::recycle(std::mem::take(&mut parts.headers));
    let (response, outcome) = match served {
        Ok((resp, backend)) => {
            let status = resp.status().as_u16();
            (resp, Outcome { backend: Some(backend), status })
        }
        Err(Refusal { error, backend }) => {
            let status = error.status().as_u16();
            error::count_error(&shared.metrics, &snap.pool, backend.as_deref(), status);
            (error.response(), Outcome { backend, status })
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
    let bytes = match resp.body().raw_fields() {
        Some(raw) => raw.length_text(),
        None => resp.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()),
    }
    .unwrap_or("-");
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

/// A request answered with an error, and the backend it concerned.
struct Refusal {
    error: ProxyError,
    backend: Option<Arc<str>>,
}

impl From<ProxyError> for Refusal {
    fn from(error: ProxyError) -> Refusal {
        Refusal { error, backend: None }
    }
}

/// Serve one request: plan, forward (replanning after failures), respond.
async fn serve(
    router: &Router<'_>,
    parts: &mut http::request::Parts,
    body: Option<Incoming>,
    conn: &ClientConn,
    started: Instant,
) -> Result<(Response<ResponseBody>, Arc<str>), Refusal> {
    let snap: &Snapshot = router.snap;
    let cfg = &snap.config;
    request::check_limits(parts, &cfg.server)?;
    // The server's own HTTP/1.1 path (no body from hyper) writes a backend's plain response
    // head as it came (learning reads its fields as bytes); SOAP mode reads its body too.
    let pass_through = body.is_none() && snap.session.mode != SessionMode::Soap;
    let mut session = snap.session.extract(&mut parts.headers, &parts.uri);
    if session.rejected {
        router.metrics.cookie_rejected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let mut upgrade = UpgradeRequest::take(parts);
    let trusted = !cfg.server.trusted.is_empty() && cfg.server.trusted.iter().any(|r| r.contains(conn.peer.ip()));
    let forwarding = request::prepare(parts, conn.peer, conn.proto, trusted)?;
    if let Some(u) = &upgrade {
        u.restore_headers(&mut parts.headers);
    }
    let body = RequestBody::new(body, cfg.server.max_body_bytes);
    if snap.session.mode == SessionMode::Soap && soap::inspects_request(parts) {
        soap::request_key(&body, cfg.session.soap_max_bytes, &mut session).await?;
    }
    let mut plan = router
        .plan(session)
        .await
        .map_err(|NoBackend { from }| Refusal { error: ProxyError::NoBackend, backend: from })?;
    let deadline = started + cfg.server.request_timeout;
    loop {
        let failure = match forward::attempt(
            parts,
            &forwarding,
            &body,
            &plan,
            cfg.balance.connect_timeout,
            pass_through,
            conn.sleeps.until(deadline),
        )
        .await
        {
            Ok(resp) => {
                plan.backend.health.record_success();
                let name = plan.backend.name.clone();
                let response = match respond::respond(router, resp, &plan, upgrade.take(), conn) {
                    respond::Responded::Now(response) => response,
                    respond::Responded::Later(response) => response.await,
                };
                return Ok((response, name));
            }
            Err(AttemptError::Request(e)) => return Err(e.into()),
            Err(AttemptError::Backend { failure, resent }) => {
                if resent {
                    plan.mark_resent();
                }
                failure
            }
        };
        let backend = Some(plan.backend.name.clone());
        if body.too_large() {
            return Err(Refusal { error: ProxyError::BodyTooLarge, backend });
        }
        if body.client_failed() {
            return Err(Refusal { error: ProxyError::BadRequest, backend });
        }
        let facts =
            RequestFacts { safe: request::is_safe(&parts.method) && body.is_empty(), replayable: body.replayable() };
        plan = router
            .replan(plan, failure, facts)
            .await
            .map_err(|answer| Refusal { error: answer_error(answer, failure), backend })?;
    }
}

/// The status of a request the router gave up on.
fn answer_error(answer: Answer, failure: Failure) -> ProxyError {
    match (answer, failure) {
        (Answer::NoBackend, _) => ProxyError::NoBackend,
        (Answer::Timeout, _) | (_, Failure::Timeout) => ProxyError::Timeout,
        (Answer::Refused, _) => ProxyError::Connect,
        (Answer::BadGateway, _) => ProxyError::Upstream,
    }
}
#[cfg(test)]
mod tests {
    fn future_size<A, B, C, D, F>(_: impl Fn(A, B, C, D) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// hyper moves each request's future into place (a copy of all of it), and each await
    /// moves the callee's future into its caller's: a rare path's large future (the Redis
    /// store's, SOAP's) inlined here made every request copy ~20 KB. Those are boxed; this
    /// keeps it so (unoptimised sizes; about half of what they were).
    #[test]
    fn the_request_future_stays_small() {
        let handle = future_size(super::handle);
        assert!(handle <= 4096, "proxy::handle's future is {handle} bytes");
    }

    /// A response is moved several times on its way from `respond` to the server's encoder;
    /// the lean connection it carries is boxed so that it moves as a pointer (it was 376 bytes).
    #[test]
    fn a_response_stays_small() {
        let response = std::mem::size_of::<http::Response<super::ResponseBody>>();
        assert!(response <= 256, "a response is {response} bytes");
    }
}
