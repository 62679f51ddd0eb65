//! One attempt against the planned backend, on a connection from this worker's pool, and what
//! its failure was: refused (nothing reached the backend), after the connection was made
//! (it may have run there), or out of time.

use super::forwarding::Forwarding;
use super::request_body::RequestBody;
use super::response_body::Lease;
use super::upstream::{self, Client, Conn, Outgoing, SendError};
use super::{request, ProxyError};
use crate::sticky::decide::Failure;
use crate::sticky::Plan;
use crate::wait::sleeps::Reused;
use http::{header, request::Parts, Method, Response};
use std::time::Duration;

/// Why an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptError {
    /// The backend failed: the router decides what follows. `resent`: the request already
    /// went to it twice (a reused keep-alive connection failed, then a new one).
    Backend { failure: Failure, resent: bool },
    /// The request itself is at fault (its head cannot be sent).
    Request(ProxyError),
}

/// One attempt against `plan.backend`, bounded by `deadline` (the request's, on one of the
/// connection's reused sleeps).
pub async fn attempt(
    parts: &Parts,
    forwarding: &Forwarding,
    body: &RequestBody,
    plan: &Plan,
    connect_timeout: Duration,
    pass_through: bool,
    deadline: Reused,
) -> Result<(Response<upstream::Body>, Lease), AttemptError> {
    let guard = plan.backend.start_request();
    let sent = tokio::select! {
        // The attempt first: an answer that is there is taken, not a deadline that just passed.
        biased;
        sent = send(parts, forwarding, body, plan, connect_timeout, pass_through) => sent,
        () = deadline => return Err(AttemptError::Backend { failure: Failure::Timeout, resent: false }),
    };
    sent.map(|(resp, conn)| (resp, Lease { guard, conn }))
}

/// Send the request on a pooled connection. If the backend closed that connection before the
/// request went out, or (for a safe request) before it answered, the request goes again on a
/// new connection to the same backend: an idle keep-alive connection timing out is no reason
/// to move the session, and counts as the one resend a safe request gets.
async fn send(
    parts: &Parts,
    forwarding: &Forwarding,
    body: &RequestBody,
    plan: &Plan,
    connect_timeout: Duration,
    pass_through: bool,
) -> Result<(Response<upstream::Body>, Conn), AttemptError> {
    let backend = &plan.backend;
    let authority = &backend.addr.authority;
    let client = client_for(parts, body);
    let refused = |_| AttemptError::Backend { failure: Failure::Refused, resent: false };
    let mut conn = Conn::checkout(authority, client, false, connect_timeout).await.map_err(refused)?;
    let previous = plan.previous.as_deref();
    let build = || request::attempt(parts, forwarding, body, backend, previous).map_err(AttemptError::Request);
    let lean = Outgoing { parts, forwarding: Some(forwarding), host: authority.as_str(), previous, pass_through };
    // hyper's client takes the request (and gives it back if unsent); the lean one writes the head.
    let mut req = match client {
        Client::Hyper => Some(build()?),
        Client::Lean => None,
    };
    let safe = request::is_safe(&parts.method) && body.is_empty();
    let mut resent = false;
    loop {
        let sent = match req.take() {
            Some(r) => conn.send(r).await,
            None => conn.send_lean(lean).await,
        };
        match sent {
            Ok(resp) => return Ok((resp, conn)),
            Err(SendError::Unsent(unsent)) if conn.reused => req = unsent.map(|r| *r),
            Err(SendError::Failed(e)) if conn.reused && safe && !resent => {
                tracing::debug!(backend = %backend.name, error = %e, "reused connection failed; sending again");
                resent = true;
                req = if client == Client::Hyper { Some(build()?) } else { None };
            }
            Err(SendError::Unsent(_)) => {
                tracing::debug!(backend = %backend.name, "connection closed before the request was sent");
                return Err(AttemptError::Backend { failure: Failure::AfterConnect { sent: false }, resent });
            }
            Err(SendError::Failed(e)) => {
                tracing::debug!(backend = %backend.name, error = ?e, "upstream request failed");
                return Err(AttemptError::Backend { failure: Failure::AfterConnect { sent: true }, resent });
            }
        }
        // A refused reconnect says the backend is gone: that is a refusal (a documented reason
        // to move the session), whatever the pooled connection did before. Only a safe request
        // can have been sent on it, and it runs at most twice all the same.
        conn = Conn::checkout(authority, client, true, connect_timeout)
            .await
            .map_err(|_| AttemptError::Backend { failure: Failure::Refused, resent })?;
    }
}

/// The lean client takes requests without a body that are no upgrade (after
/// [`request::prepare`], only an upgrade request still has an `Upgrade` header); hyper's the rest.
fn client_for(parts: &Parts, body: &RequestBody) -> Client {
    if body.is_empty() && parts.method != Method::CONNECT && !parts.headers.contains_key(header::UPGRADE) {
        Client::Lean
    } else {
        Client::Hyper
    }
}
