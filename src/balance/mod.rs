//! Backend selection: which backend a *new* session goes to.
//!
//! This module owns the [`Backend`] run-time state and the [`Pool`] (the backend set of one
//! config snapshot), and one file per algorithm. Selection only looks at backends that accept
//! new sessions (healthy, `active`, not full, not excluded by the caller); health and admin
//! state are decided elsewhere (`health`, `admin`) and only read here.

mod backend;
mod bounded;
mod hash;
mod least_conn;
mod random_two;
mod round_robin;

pub use backend::{Backend, InFlight};
pub use bounded::Bound;
pub use hash::stable_hash;

use crate::config::{Algorithm, Config};
use std::sync::Arc;

/// The backends of one config snapshot plus the selection algorithm's state.
#[derive(Debug)]
pub struct Pool {
    backends: Vec<Arc<Backend>>,
    algorithm: Algorithm,
    /// `balance.bounded_load`.
    bounded_load: f64,
    rr: round_robin::Schedule,
}

impl Pool {
    /// Build the pool for `config`, reusing live backends of `previous` whose name and address
    /// are unchanged (their health, counters and admin state survive a reload).
    pub fn new(config: &Config, previous: Option<&Pool>) -> Pool {
        let backends: Vec<Arc<Backend>> = config
            .backends
            .iter()
            .map(|bc| {
                let old = previous.and_then(|p| p.get(bc.name())).filter(|b| b.addr == bc.address);
                match old {
                    Some(old) => Arc::new(old.reconfigured(bc, &config.health)),
                    None => Arc::new(Backend::new(bc, &config.health)),
                }
            })
            .collect();
        let weights: Vec<u32> = backends.iter().map(|b| b.weight).collect();
        Pool {
            rr: round_robin::Schedule::new(&weights),
            backends,
            algorithm: config.balance.algorithm,
            bounded_load: config.balance.bounded_load,
        }
    }

    pub fn backends(&self) -> &[Arc<Backend>] {
        &self.backends
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Backend>> {
        self.backends.iter().find(|b| &*b.name == name)
    }

    /// The backend whose servlet `route` (jvmRoute) is `route`.
    pub fn by_route(&self, route: &str) -> Option<&Arc<Backend>> {
        self.backends.iter().find(|b| b.route.as_deref() == Some(route))
    }

    /// The load bound of this moment (`balance.bounded_load`).
    pub fn bound(&self) -> Bound {
        Bound::new(&self.backends, self.bounded_load)
    }

    /// Choose a backend for a new session. `key` is the session key when known (the `hash`
    /// algorithm needs it); `exclude` lists backends that just failed for this request.
    /// The `hash` algorithm keeps to the load bound (consistent hashing with bounded loads):
    /// a key whose first choice is over it goes to its next choice within it.
    /// When no backend is within the bound (the others excluded or unavailable), the bound
    /// gives way: a new session is never refused for it.
    pub fn select(&self, key: Option<&str>, exclude: &[Arc<str>]) -> Option<Arc<Backend>> {
        if self.algorithm == Algorithm::Hash {
            if let Some(b) = self.select_where(key, exclude, Some(self.bound())) {
                return Some(b);
            }
        }
        self.select_where(key, exclude, None)
    }

    /// As [`select`](Self::select), among the backends `bound` admits (if given).
    pub fn select_where(&self, key: Option<&str>, exclude: &[Arc<str>], bound: Option<Bound>) -> Option<Arc<Backend>> {
        let ok = |b: &Backend| {
            b.accepts_new() && !exclude.iter().any(|e| **e == *b.name) && bound.is_none_or(|l| l.admits(b))
        };
        match (self.algorithm, key) {
            (Algorithm::RoundRobin, _) | (Algorithm::Hash, None) => self.rr.select(&self.backends, ok),
            (Algorithm::LeastConnections, _) => least_conn::select(&self.backends, &self.rr, ok),
            (Algorithm::RandomTwo, _) => random_two::select(&self.backends, ok),
            (Algorithm::Hash, Some(key)) => hash::select(&self.backends, key, ok),
        }
        .cloned()
    }
}
