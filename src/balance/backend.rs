//! One backend: identity from config (name, address, weight, limits), its admin state, its
//! in-flight count and response counters, and — beside it, owned by `health` — its
//! [`Health`]. Everything mutable is an atomic, so the hot path never locks.

use crate::config::{AdminState, BackendAddr, BackendConfig, HealthConfig};
use crate::health::Health;
use crate::metrics::StatusCounters;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering::*};
use std::sync::Arc;
use std::time::Duration;

/// A backend server. Kept across reloads (by name, when its address is unchanged) so that its
/// health and counters survive.
#[derive(Debug)]
pub struct Backend {
    pub name: Arc<str>,
    pub addr: BackendAddr,
    pub weight: u32,
    pub max_connections: usize,
    pub slow_start: Duration,
    /// The servlet container's jvmRoute (learn mode: `ID.ROUTE` session ids).
    pub route: Option<Arc<str>>,
    /// `[health]` with this backend's overrides applied.
    pub check: HealthConfig,
    /// Active and passive health; shared with the reconfigured copies of this backend.
    pub health: Arc<Health>,
    state: AtomicU8,
    in_flight: AtomicUsize,
    /// The state the config file gave; a reload only overrides a run-time change (admin API)
    /// when the file's value itself changed.
    config_state: AdminState,
    /// Responses by status code (the backend's, or ours on 502/503/504); shared with the
    /// reconfigured copies of this backend, so that requests still running on an old snapshot
    /// count too and the counters survive a reload.
    pub responses: Arc<StatusCounters>,
}

impl Backend {
    pub fn new(cfg: &BackendConfig, health: &HealthConfig) -> Self {
        Backend {
            name: Arc::from(cfg.name()),
            addr: cfg.address.clone(),
            weight: *cfg.weight.get_ref(),
            max_connections: cfg.max_connections,
            slow_start: cfg.slow_start,
            route: cfg.route.as_ref().map(|r| Arc::from(r.get_ref().as_str())),
            check: health.with_override(&cfg.health),
            health: Arc::default(),
            state: AtomicU8::new(state_to_u8(cfg.state)),
            config_state: cfg.state,
            in_flight: AtomicUsize::new(0),
            responses: Arc::default(),
        }
    }

    /// A copy for a reloaded config: same name and address, new settings, same live state.
    pub fn reconfigured(&self, cfg: &BackendConfig, health: &HealthConfig) -> Self {
        let mut b = Backend::new(cfg, health);
        if cfg.state == self.config_state {
            b.set_state(self.state());
        }
        b.health = self.health.clone();
        b.responses = self.responses.clone();
        b
    }

    pub fn state(&self) -> AdminState {
        match self.state.load(Relaxed) {
            1 => AdminState::Drain,
            2 => AdminState::Maint,
            _ => AdminState::Active,
        }
    }

    pub fn set_state(&self, s: AdminState) {
        self.state.store(state_to_u8(s), Relaxed);
    }

    /// Health as the active checker and passive ejection see it.
    pub fn is_healthy(&self) -> bool {
        self.health.ready()
    }

    /// May serve sessions already pinned here.
    pub fn serves_pinned(&self) -> bool {
        self.state() != AdminState::Maint && self.is_healthy()
    }

    /// May take new sessions.
    pub fn accepts_new(&self) -> bool {
        self.state() == AdminState::Active && self.is_healthy() && !self.is_full()
    }

    pub fn is_full(&self) -> bool {
        self.max_connections != 0 && self.in_flight.load(Relaxed) >= self.max_connections
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Relaxed)
    }

    /// Count a request in flight until the guard drops.
    pub fn start_request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Relaxed);
        InFlight(self.clone())
    }

    /// Share of new sessions during slow start (see `health`).
    pub fn slow_start_factor(&self) -> f64 {
        self.health.slow_start_factor(self.slow_start)
    }

    /// Effective weight for selection (configured weight times the slow-start ramp).
    pub fn effective_weight(&self) -> f64 {
        self.weight as f64 * self.slow_start_factor()
    }
}

fn state_to_u8(s: AdminState) -> u8 {
    match s {
        AdminState::Active => 0,
        AdminState::Drain => 1,
        AdminState::Maint => 2,
    }
}

/// Decrements the backend's in-flight count when dropped (also when a request is cancelled).
#[derive(Debug)]
pub struct InFlight(Arc<Backend>);

impl InFlight {
    pub fn backend(&self) -> &Arc<Backend> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}
