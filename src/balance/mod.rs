//! Backend selection: which backend a *new* session goes to.
//!
//! This module owns the [`Backend`] run-time state and the [`Pool`] (the backend set of one
//! config snapshot), and one file per algorithm. Selection only looks at backends that accept
//! new sessions (healthy, `active`, not full, not excluded by the caller); health and admin
//! state are decided elsewhere (`health`, `admin`) and only read here.

mod backend;
mod hash;
mod least_conn;
mod random_two;
mod round_robin;

pub use backend::{Backend, InFlight};
pub use hash::stable_hash;

use crate::config::{Algorithm, Config};
use std::sync::Arc;

/// The backends of one config snapshot plus the selection algorithm's state.
#[derive(Debug)]
pub struct Pool {
    backends: Vec<Arc<Backend>>,
    algorithm: Algorithm,
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
        Pool { rr: round_robin::Schedule::new(&weights), backends, algorithm: config.balance.algorithm }
    }

    pub fn backends(&self) -> &[Arc<Backend>] {
        &self.backends
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Backend>> {
        self.backends.iter().find(|b| &*b.name == name)
    }

    /// The current backend for a pinned one: the same object, or the backend of the same name
    /// if the pool was rebuilt since the pin was made. `None` if it no longer exists.
    pub fn current(&self, pinned: &Arc<Backend>) -> Option<&Arc<Backend>> {
        self.backends.iter().find(|b| Arc::ptr_eq(b, pinned)).or_else(|| self.get(&pinned.name))
    }

    /// Choose a backend for a new session. `key` is the session key when known (the `hash`
    /// algorithm needs it); `exclude` lists backends that just failed for this request.
    pub fn select(&self, key: Option<&str>, exclude: &[Arc<str>]) -> Option<Arc<Backend>> {
        let ok = |b: &Backend| b.accepts_new() && !exclude.iter().any(|e| **e == *b.name);
        match (self.algorithm, key) {
            (Algorithm::RoundRobin, _) | (Algorithm::Hash, None) => self.rr.select(&self.backends, ok),
            (Algorithm::LeastConnections, _) => least_conn::select(&self.backends, &self.rr, ok),
            (Algorithm::RandomTwo, _) => random_two::select(&self.backends, ok),
            (Algorithm::Hash, Some(key)) => hash::select(&self.backends, key, ok),
        }
        .cloned()
    }
}
