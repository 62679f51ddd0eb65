//! The sticky router: the one home of "where does this request go, and what does its session
//! need afterwards".
//!
//! [`Router::plan`] looks the session up (table first, then the insert cookie's signed
//! route), decides ([`decide::decide`]), balances new and moved sessions and pins them
//! (adopting another instance's choice when it won a race). [`Router::replan`] takes a failed
//! attempt and answers retry-on-the-same-backend, move, reject or give up
//! ([`decide::after_failure`]). [`Router::learn`] reads the backend's response: the
//! application's session id in learn/header mode (only ids a backend issued are pinned), and
//! the `Set-Cookie` naming the session's backend in insert mode.
//!
//! It is the only caller of the store on the request path (through `pins`); the proxy only
//! applies its plans. It owns no I/O of its own besides the store.

pub mod decide;
mod pins;

use crate::balance::Backend;
use crate::config::{Affinity, SessionMode};
use crate::metrics::{Metrics, Reassign};
use crate::session::{CookieCodec, Extracted, Learned, Route};
use crate::state::Snapshot;
use crate::store::Store;
use decide::{Attempt, Decision, Failure, Found, Next, Source};
use http::{HeaderMap, HeaderValue};
use std::sync::Arc;

/// Where one request goes and what its session needs afterwards.
#[derive(Debug)]
pub struct Plan {
    pub backend: Arc<Backend>,
    /// The session key (insert id, or the application's id).
    key: Option<String>,
    /// Insert mode: when the session was created (Unix ms), for its cookie.
    created_ms: u64,
    /// Insert mode: the backend the client's cookie names (`None`: no cookie, or one of the
    /// first format); a `Set-Cookie` is sent when it is not `backend`.
    cookie_names: Option<Arc<str>>,
    /// The backend the session was moved away from (sent as `X-Stickylb-Previous-Backend`).
    pub previous: Option<Arc<str>>,
    /// The session already lived on `backend` (not a new or moved one).
    pinned: bool,
    /// Sent once more to `backend` after a failure.
    resent: bool,
    /// Backends this request left after they refused it.
    refused: Vec<Arc<str>>,
}

impl Plan {
    /// The request already went to `backend` a second time (a pooled connection failed and
    /// the request was sent again on a new one): it gets no further resend.
    pub fn mark_resent(&mut self) {
        self.resent = true;
    }
}

/// What [`Router::locate`] found.
struct Located {
    decision: Decision,
    /// Where the session's backend came from (none: a new session).
    source: Option<Source>,
    /// Preferred affinity: where an overloaded backend's session goes.
    unloaded: Option<Arc<Backend>>,
}

/// Why no backend could be planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoBackend {
    /// The session's backend, when the request was refused because of it.
    pub from: Option<Arc<str>>,
}

/// The request, as [`Router::replan`] needs to know it.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts {
    pub safe: bool,
    pub replayable: bool,
}

/// A router over one config snapshot and the process's store.
pub struct Router<'a> {
    pub snap: &'a Snapshot,
    pub store: &'a Store,
    pub metrics: &'a Metrics,
}

impl Router<'_> {
    /// Plan a request carrying `session`.
    pub async fn plan(&self, session: Extracted) -> Result<Plan, NoBackend> {
        let (snap, pool) = (self.snap, &self.snap.pool);
        let Extracted { key, route, client_chosen, .. } = session;
        let table = match &key {
            Some(k) => pins::lookup(self.store, k).await,
            None => None,
        };
        let now = crate::store::unix_ms();
        let max_lifetime = snap.config.session.max_lifetime.as_millis() as u64;
        let fresh = route.as_ref().filter(|r| decide::cookie_route_fresh(r.created_ms, now, max_lifetime));
        let Located { decision, source, unloaded } = self.locate(key.as_deref(), table.as_deref(), fresh);
        // No table pin behind it: a move pins (pin_if_absent) rather than compare-and-sets.
        let from_cookie = source.is_some_and(|s| s != Source::Table);
        let restore = source == Some(Source::Cookie);
        let created_ms = fresh.map_or(now, |r| r.created_ms);
        let cookie_names = route.map(|r| r.backend);
        let plan = |backend, key| Plan {
            backend,
            key,
            created_ms,
            cookie_names,
            previous: None,
            pinned: false,
            resent: false,
            refused: Vec::new(),
        };
        let insert = snap.session.mode == SessionMode::Insert;
        match decision {
            Decision::Pinned(backend) => {
                let mut plan = Plan { pinned: true, ..plan(backend, key) };
                if restore {
                    // The table lost the pin (flood, restart, new instance, Redis down): restore it.
                    self.pin_new(&mut plan, Some(created_ms)).await;
                }
                Ok(plan)
            }
            Decision::Reject { from } => Err(NoBackend { from: Some(from) }),
            Decision::Move { from, reason } => {
                self.metrics.reassigned(reason);
                let to = match unloaded {
                    Some(to) => to,
                    None => pool.select(key.as_deref(), std::slice::from_ref(&from)).ok_or(NoBackend { from: None })?,
                };
                let mut plan = plan(to, key);
                self.move_pin(&mut plan, &from, from_cookie).await;
                plan.previous = Some(from);
                Ok(plan)
            }
            Decision::New => {
                // A verified cookie whose pin and route are gone keeps its id (re-pinned).
                let key = if insert { Some(key.unwrap_or_else(CookieCodec::new_id)) } else { key };
                let to = pool.select(key.as_deref(), &[]).ok_or(NoBackend { from: None })?;
                let mut plan = plan(to, key);
                if insert || client_chosen {
                    self.pin_new(&mut plan, None).await;
                }
                // learn / header / SOAP ServiceGroupId: a value the client sent that has no pin
                // is not pinned; the backend's answer may issue one (see `learn`).
                Ok(plan)
            }
        }
    }

    /// Where the session is (table pin, else the cookie's fresh route, else a servlet route)
    /// and the decision for it; with preferred affinity, an overloaded backend's session moves
    /// to a backend within the bound — if there is one; otherwise it stays.
    fn locate(&self, key: Option<&str>, table: Option<&str>, fresh: Option<&Route>) -> Located {
        let (snap, pool) = (self.snap, &self.snap.pool);
        let servlet = match (key, snap.session.mode) {
            (Some(k), SessionMode::Learn) if table.is_none() => decide::servlet_route(k, pool),
            _ => None,
        };
        let found = match (table, fresh, servlet) {
            (Some(name), _, _) => Some(Found { backend: name, source: Source::Table }),
            (None, Some(r), _) => Some(Found { backend: &r.backend, source: Source::Cookie }),
            (None, None, Some(b)) => Some(Found { backend: &b.name, source: Source::ServletRoute }),
            (None, None, None) => None,
        };
        let source = found.map(|f| f.source);
        let mut decision = decide::decide(found, pool, snap.session.on_backend_down);
        let mut unloaded = None;
        if let (Decision::Pinned(b), Affinity::Preferred) = (&decision, snap.config.session.affinity) {
            let now = pool.bound();
            if decide::overloaded(b.as_ref(), now) {
                unloaded = pool.select_where(key, std::slice::from_ref(&b.name), Some(now));
                if unloaded.is_some() {
                    decision = Decision::Move { from: b.name.clone(), reason: Reassign::Overload };
                }
            }
        }
        Located { decision, source, unloaded }
    }

    /// Pin a new or restored session; adopt the pin another instance made first if its backend
    /// can serve the session.
    async fn pin_new(&self, plan: &mut Plan, created_ms: Option<u64>) {
        let Some(key) = &plan.key else { return };
        let won = pins::pin_new(self.store, key, &plan.backend.name, created_ms).await;
        self.adopt(plan, &won, &[]);
    }

    /// Move the session of `plan` away from `from` to `plan.backend`.
    async fn move_pin(&self, plan: &mut Plan, from: &Arc<str>, from_cookie_only: bool) {
        let Some(key) = &plan.key else { return };
        if self.snap.session.mode == SessionMode::None {
            return;
        }
        let won = if from_cookie_only {
            pins::pin_new(self.store, key, &plan.backend.name, None).await
        } else {
            pins::move_pin(self.store, key, from, &plan.backend.name).await
        };
        let refused = plan.refused.clone();
        self.adopt(plan, &won, &refused);
    }

    /// Another instance (or request) may have pinned or moved the session first: follow its
    /// choice when that backend serves pinned sessions and did not just refuse this request.
    fn adopt(&self, plan: &mut Plan, won: &str, refused: &[Arc<str>]) {
        if *plan.backend.name == *won || refused.iter().any(|r| **r == *won) {
            return;
        }
        if let Some(b) = self.snap.pool.get(won).filter(|b| b.serves_pinned()) {
            plan.backend = b.clone();
        }
    }

    /// After a failed attempt: the same plan again (resend), a moved plan, or the status to
    /// answer with. Failures count toward the backend's passive ejection, except a refusal of a
    /// backend whose own state made us leave it anyway.
    pub async fn replan(&self, mut plan: Plan, failure: Failure, req: RequestFacts) -> Result<Plan, Answer> {
        plan.backend.health.record_failure(&plan.backend.name, &self.snap.config.passive);
        let attempt = Attempt {
            safe: req.safe,
            replayable: req.replayable,
            resent: plan.resent,
            moves: plan.refused.len() as u32,
            retries: self.snap.config.balance.retries,
            pinned: plan.pinned,
            on_down: self.snap.session.on_backend_down,
        };
        match decide::after_failure(failure, attempt) {
            Next::SameBackend => {
                plan.resent = true;
                Ok(plan)
            }
            Next::Reject => Err(Answer::NoBackend),
            Next::GiveUp => Err(match failure {
                Failure::Timeout => Answer::Timeout,
                Failure::Refused => Answer::Refused,
                Failure::AfterConnect { .. } => Answer::BadGateway,
            }),
            Next::Move => {
                let from = plan.backend.name.clone();
                plan.refused.push(from.clone());
                let next = self.snap.pool.select(plan.key.as_deref(), &plan.refused).ok_or(Answer::Refused)?;
                self.metrics.reassigned(Reassign::ConnectFailed);
                plan.backend = next;
                plan.resent = false;
                plan.pinned = false;
                self.move_pin(&mut plan, &from, false).await;
                plan.previous.get_or_insert(from);
                Ok(plan)
            }
        }
    }

    /// A backend issued session `id` in its response body (SOAP `ServiceGroupId`): pin it.
    pub async fn learn_issued(&self, plan: &Plan, id: &str) {
        pins::pin(self.store, id, &plan.backend.name).await;
    }

    /// What the backend's response teaches: pins for ids a backend issued (learn / header),
    /// and the insert cookie to send when the client's does not name the session's backend.
    /// [`Router::learned`], kept ([`Router::keep`]), then [`Router::insert_cookie`], as the
    /// proxy's `respond` composes them; the decision's tests take them together.
    #[cfg(test)]
    pub async fn learn(&self, plan: &Plan, headers: &HeaderMap) -> Option<HeaderValue> {
        if let Some(learned) = self.learned(headers) {
            self.keep(plan, learned).await;
        }
        self.insert_cookie(plan)
    }

    /// Whether the backend's response issued or deleted an id (learn and header modes): the
    /// proxy awaits [`Router::keep`] only then.
    pub fn learned(&self, headers: &HeaderMap) -> Option<Learned> {
        self.snap.session.learn(headers)
    }

    /// [`Router::learned`] from a response head's fields as bytes (one passed through).
    pub fn learned_from<'a>(&self, fields: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> Option<Learned> {
        self.snap.session.learn_from(fields)
    }

    /// Pin an id the backend issued, or forget the request's.
    pub async fn keep(&self, plan: &Plan, learned: Learned) {
        match learned {
            Learned::Pin(id) => pins::pin(self.store, &id, &plan.backend.name).await,
            Learned::Forget => {
                if let Some(k) = &plan.key {
                    pins::unpin(self.store, k).await;
                }
            }
        }
    }

    /// The insert cookie to send when the client's does not name the session's backend.
    pub fn insert_cookie(&self, plan: &Plan) -> Option<HeaderValue> {
        let session = &self.snap.session;
        if session.mode != SessionMode::Insert || plan.cookie_names.as_deref() == Some(&*plan.backend.name) {
            return None;
        }
        let route = Route { backend: plan.backend.name.clone(), created_ms: plan.created_ms };
        session.set_cookie(plan.key.as_deref()?, &route)
    }
}

/// How a request that could not be served is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 503: no backend may serve it.
    NoBackend,
    /// 502: the backends refused the connection.
    Refused,
    /// 502: the backend failed after accepting the connection.
    BadGateway,
    /// 504.
    Timeout,
}

#[cfg(test)]
mod tests;
