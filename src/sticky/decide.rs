//! The sticky decisions as pure functions of what the request carries and the backends'
//! state: where a request goes ([`decide`]) and what happens after a failed attempt
//! ([`after_failure`]). No I/O, no store: each case has a unit test named after it.

use crate::balance::{Backend, Pool};
use crate::config::{AdminState, OnBackendDown};
use crate::metrics::Reassign;
use std::sync::Arc;

/// Where the session's pin came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The affinity table (authoritative).
    Table,
    /// The insert cookie's signed route, with no pin in the table (evicted, expired, a fresh
    /// instance, Redis unreachable, a restart without snapshot).
    Cookie,
    /// A servlet route suffix (`ID.ROUTE`, learn mode) naming a backend's `route`, with no pin.
    ServletRoute,
}

/// A pin found for the request: a backend name and where it came from.
#[derive(Debug, Clone, Copy)]
pub struct Found<'a> {
    pub backend: &'a str,
    pub source: Source,
}

/// Where a request goes.
#[derive(Debug)]
pub enum Decision {
    /// The session's backend serves it.
    Pinned(Arc<Backend>),
    /// No usable pin: balance, then pin (or not, in learn/header mode) the choice.
    New,
    /// The session's backend cannot serve it: balance among the others and move the pin; the
    /// upstream request names `from`.
    Move { from: Arc<str>, reason: Reassign },
    /// As `Move`, but `on_backend_down = "reject"`: answer 503.
    Reject { from: Arc<str> },
}

/// Why a pinned backend cannot serve its sessions now, if it cannot.
pub fn unavailable(backend: Option<&Arc<Backend>>) -> Option<Reassign> {
    let Some(b) = backend else { return Some(Reassign::Removed) };
    if b.state() == AdminState::Maint {
        Some(Reassign::Maint)
    } else if !b.health.probe_up() {
        Some(Reassign::Down)
    } else if b.health.is_ejected() {
        Some(Reassign::Ejected)
    } else {
        None
    }
}

/// The sticky decision: the table's pin wins; without one, the cookie's route (already
/// checked for age by the caller); without either, a new session.
pub fn decide(found: Option<Found<'_>>, pool: &Pool, on_down: OnBackendDown) -> Decision {
    let Some(found) = found else { return Decision::New };
    let backend = pool.get(found.backend);
    match unavailable(backend) {
        None => Decision::Pinned(backend.expect("available backends exist").clone()),
        Some(reason) => {
            let from: Arc<str> = backend.map_or_else(|| Arc::from(found.backend), |b| b.name.clone());
            match on_down {
                OnBackendDown::Reassign => Decision::Move { from, reason },
                OnBackendDown::Reject => Decision::Reject { from },
            }
        }
    }
}

/// The backend a servlet session id (`ID.ROUTE`, as Tomcat's jvmRoute writes it) names: the
/// text after the last `.` when a backend has that `route`.
pub fn servlet_route<'a>(key: &str, pool: &'a Pool) -> Option<&'a Arc<Backend>> {
    let (_, route) = key.rsplit_once('.')?;
    (!route.is_empty()).then(|| pool.by_route(route))?
}

/// Preferred affinity: whether a pinned backend is too loaded to keep the session (at its
/// `max_connections`, or over the load bound).
pub fn overloaded(backend: &Backend, bound: crate::balance::Bound) -> bool {
    backend.is_full() || !bound.admits(backend)
}

/// Whether a cookie created at `created_ms` may still route its session (it is younger than
/// `max_lifetime`; a pin would have expired by now otherwise).
pub fn cookie_route_fresh(created_ms: u64, now_ms: u64, max_lifetime_ms: u64) -> bool {
    now_ms.saturating_sub(created_ms) < max_lifetime_ms && created_ms <= now_ms.saturating_add(60_000)
}

/// How an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The connection could not be made (refused, unreachable, connect timeout): nothing
    /// reached the backend.
    Refused,
    /// The backend accepted the connection, then reset or closed it, or answered something
    /// that cannot be parsed. `sent`: the request (or part of it) may have reached it.
    AfterConnect { sent: bool },
    /// The request's deadline passed while the backend had it.
    Timeout,
}

/// What the request is and has been through, for [`after_failure`].
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    /// GET, HEAD or OPTIONS without a body: safe to run twice.
    pub safe: bool,
    /// The body can be sent again (empty, or still fully buffered).
    pub replayable: bool,
    /// Already sent once more to the same backend after a failure.
    pub resent: bool,
    /// Moves to other backends so far, and how many `balance.retries` allows.
    pub moves: u32,
    pub retries: u32,
    /// The session already lived on this backend (pinned by table or cookie).
    pub pinned: bool,
    pub on_down: OnBackendDown,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Send once more to the same backend over a new connection.
    SameBackend,
    /// Move the session to another backend (nothing reached this one).
    Move,
    /// The session's backend refused and moving is not allowed: 503.
    Reject,
    /// Answer the failure (502, or 504 for a timeout).
    GiveUp,
}

/// After a failed attempt. Only a refused connection moves a session: a failure after the
/// backend accepted the connection never sends the request to another backend (it may have
/// run there); a safe request may go once more to the same backend.
pub fn after_failure(failure: Failure, a: Attempt) -> Next {
    match failure {
        Failure::Timeout => Next::GiveUp,
        Failure::AfterConnect { sent } => {
            if (a.safe || !sent) && a.replayable && !a.resent {
                Next::SameBackend
            } else {
                Next::GiveUp
            }
        }
        Failure::Refused if !a.replayable || a.moves >= a.retries => Next::GiveUp,
        Failure::Refused if a.pinned && a.on_down == OnBackendDown::Reject => Next::Reject,
        Failure::Refused => Next::Move,
    }
}

#[cfg(test)]
mod tests;
