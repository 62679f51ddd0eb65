//! One backend's run-time state: identity from config, and the counters and flags that the
//! health checker, the proxy and the admin API share. Everything mutable is an atomic, so the
//! hot path never locks.

use crate::clock::now_ms;
use crate::config::{AdminState, BackendAddr, BackendConfig, HealthConfig};
use crate::metrics::StatusCounters;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering::*};
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
    /// `[health]` with this backend's overrides applied.
    pub health: HealthConfig,
    state: AtomicU8,
    healthy: AtomicBool,
    /// Passive ejection deadline (process-clock ms); 0 = not ejected.
    ejected_until: AtomicU64,
    /// When the backend last came back up (process-clock ms); 0 = never went down.
    recovered_at: AtomicU64,
    consecutive_failures: AtomicU32,
    in_flight: AtomicUsize,
    /// The state the config file gave; a reload only overrides a run-time change (admin API)
    /// when the file's value itself changed.
    config_state: AdminState,
    /// Pins currently pointing here (maintained by the affinity store); shared with the
    /// reconfigured copies of this backend so counts survive a reload.
    pub sessions: Arc<AtomicI64>,
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
            health: health.with_override(&cfg.health),
            state: AtomicU8::new(state_to_u8(cfg.state)),
            config_state: cfg.state,
            healthy: AtomicBool::new(true),
            ejected_until: AtomicU64::new(0),
            recovered_at: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            in_flight: AtomicUsize::new(0),
            sessions: Arc::new(AtomicI64::new(0)),
            responses: Arc::default(),
        }
    }

    /// A copy for a reloaded config: same name and address, new settings, same live state.
    pub fn reconfigured(&self, cfg: &BackendConfig, health: &HealthConfig) -> Self {
        let mut b = Backend::new(cfg, health);
        b.sessions = self.sessions.clone();
        if cfg.state == self.config_state {
            b.set_state(self.state());
        }
        b.healthy.store(self.healthy.load(Relaxed), Relaxed);
        b.ejected_until.store(self.ejected_until.load(Relaxed), Relaxed);
        b.recovered_at.store(self.recovered_at.load(Relaxed), Relaxed);
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

    /// Health as the active checker (or passive ejection) sees it.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Relaxed) && !self.is_ejected()
    }

    pub fn is_ejected(&self) -> bool {
        let until = self.ejected_until.load(Relaxed);
        until != 0 && now_ms() < until
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

    /// Flip the active-health state; returns true if it changed.
    pub fn set_healthy(&self, up: bool) -> bool {
        let was = self.healthy.swap(up, Relaxed);
        if up && !was {
            self.recovered_at.store(now_ms(), Relaxed);
            self.consecutive_failures.store(0, Relaxed);
        }
        was != up
    }

    /// Record a connect error or timeout on real traffic. Returns true when this failure
    /// ejected the backend.
    pub fn record_failure(&self, threshold: u32, ejection: Duration) -> bool {
        let n = self.consecutive_failures.fetch_add(1, Relaxed) + 1;
        if n < threshold || self.is_ejected() {
            return false;
        }
        self.consecutive_failures.store(0, Relaxed);
        self.ejected_until.store(now_ms() + ejection.as_millis() as u64, Relaxed);
        if self.health.enabled {
            // Active checks must see it pass again before it takes traffic.
            self.healthy.store(false, Relaxed);
        }
        self.recovered_at.store(now_ms() + ejection.as_millis() as u64, Relaxed);
        true
    }

    /// A request reached the backend and got an answer.
    pub fn record_success(&self) {
        if self.consecutive_failures.load(Relaxed) != 0 {
            self.consecutive_failures.store(0, Relaxed);
        }
    }

    /// Share of new sessions during slow start: ramps from 5% to 100% over `slow_start`.
    pub fn slow_start_factor(&self) -> f64 {
        let since = self.recovered_at.load(Relaxed);
        if self.slow_start.is_zero() || since == 0 {
            return 1.0;
        }
        let now = now_ms();
        if now <= since {
            return 0.05;
        }
        let f = (now - since) as f64 / self.slow_start.as_millis() as f64;
        f.clamp(0.05, 1.0)
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
