//! One backend's health as a value beside its identity (pingora-load-balancing's model):
//! the active checks' view, passive ejection, the probe streak, and the slow-start ramp.
//!
//! Every field is an atomic: the proxy reads [`Health::ready`] on every request, the probe
//! task and the proxy write. The thresholds come in as arguments from the config snapshot of
//! the moment, so one `Health` is shared by a backend's reconfigured copies across reloads.
//! Every transition (down, ejected, up) is logged here, once.

use crate::clock::now_ms;
use crate::config::{HealthConfig, PassiveConfig};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Share of new sessions a backend gets at the start of its slow start.
pub const SLOW_START_FLOOR: f64 = 0.05;

#[derive(Debug)]
pub struct Health {
    /// The active checks' view (true while checks are off).
    probe_up: AtomicBool,
    /// Consecutive probe passes / failures; written by the backend's probe task only.
    passes: AtomicU32,
    fails: AtomicU32,
    /// Passive ejection deadline (process-clock ms); 0 = not ejected.
    ejected_until: AtomicU64,
    /// Consecutive failures on real traffic (connect errors, timeouts, failures after send).
    failures: AtomicU32,
    /// When the backend last came back (process-clock ms); 0 = never went away.
    recovered_at: AtomicU64,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            probe_up: AtomicBool::new(true),
            passes: AtomicU32::new(0),
            fails: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            failures: AtomicU32::new(0),
            recovered_at: AtomicU64::new(0),
        }
    }
}

/// What a probe or a failure changed, for the caller's tests (the log line is written here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Up,
    Down,
    Ejected,
}

impl Health {
    /// May take traffic: the active checks say up and no passive ejection is running.
    pub fn ready(&self) -> bool {
        self.probe_up.load(Relaxed) && !self.is_ejected()
    }

    /// The active checks' view alone.
    pub fn probe_up(&self) -> bool {
        self.probe_up.load(Relaxed)
    }

    pub fn is_ejected(&self) -> bool {
        let until = self.ejected_until.load(Relaxed);
        until != 0 && now_ms() < until
    }

    /// When the running ejection ends (process-clock ms), if one runs.
    pub fn ejected_until(&self) -> Option<u64> {
        let until = self.ejected_until.load(Relaxed);
        (until != 0 && now_ms() < until).then_some(until)
    }

    /// Count one active probe result; flips the state after the configured streak. A
    /// passively ejected backend is back as soon as `healthy_threshold` probes after its
    /// ejection passed: it does not wait out `ejection_time`.
    pub fn probe_result(&self, name: &str, check: &HealthConfig, ok: bool) -> Option<Transition> {
        if ok {
            self.fails.store(0, Relaxed);
            let passes = self.passes.fetch_add(1, Relaxed) + 1;
            if passes < check.healthy_threshold.get() {
                return None;
            }
            let was_down = !self.probe_up.swap(true, Relaxed);
            let was_ejected = self.ejected_until.swap(0, Relaxed) != 0 && !was_down;
            if was_down || was_ejected {
                self.came_back();
                tracing::info!(backend = %name, "backend is up ({passes} health checks passed)");
                return Some(Transition::Up);
            }
        } else {
            self.passes.store(0, Relaxed);
            let fails = self.fails.fetch_add(1, Relaxed) + 1;
            if fails >= check.unhealthy_threshold.get() && self.probe_up.swap(false, Relaxed) {
                tracing::warn!(backend = %name, "backend is down (failed {fails} health checks)");
                return Some(Transition::Down);
            }
        }
        None
    }

    /// Count a failure on real traffic. Returns `Ejected` when this failure ejected the
    /// backend (for `passive.ejection_time`, or until the active checks pass again).
    pub fn record_failure(&self, name: &str, passive: &PassiveConfig) -> Option<Transition> {
        let n = self.failures.fetch_add(1, Relaxed) + 1;
        if n < passive.consecutive_failures.get() || self.is_ejected() {
            return None;
        }
        self.failures.store(0, Relaxed);
        // The probe streak starts over: the checks must see it pass again to end the ejection.
        self.passes.store(0, Relaxed);
        self.ejected_until.store(now_ms() + passive.ejection_time.as_millis() as u64, Relaxed);
        tracing::warn!(backend = %name, "backend ejected after {n} consecutive failures");
        Some(Transition::Ejected)
    }

    /// A request reached the backend and got an answer.
    pub fn record_success(&self) {
        if self.failures.load(Relaxed) != 0 {
            self.failures.store(0, Relaxed);
        }
    }

    /// An ejection ended by its time (no active checks): log it once and start the ramp.
    /// Returns whether this call saw it end.
    pub fn ejection_expired(&self, name: &str) -> bool {
        let until = self.ejected_until.load(Relaxed);
        if until == 0 || now_ms() < until || self.ejected_until.compare_exchange(until, 0, Relaxed, Relaxed).is_err() {
            return false;
        }
        self.came_back();
        tracing::info!(backend = %name, "backend is up (ejection time over)");
        true
    }

    fn came_back(&self) {
        self.recovered_at.store(now_ms(), Relaxed);
        self.failures.store(0, Relaxed);
    }

    /// Share of new sessions during slow start: ramps from [`SLOW_START_FLOOR`] to 1 over
    /// `slow_start` after the backend came back.
    pub fn slow_start_factor(&self, slow_start: Duration) -> f64 {
        let since = self.recovered_at.load(Relaxed);
        if slow_start.is_zero() || since == 0 {
            return 1.0;
        }
        slow_start_ramp(now_ms().saturating_sub(since), slow_start)
    }

    /// Mark the backend as having just come back (tests; a reload's new backend does not ramp).
    #[cfg(test)]
    pub(crate) fn recovered_ms_ago(&self, ms: u64) {
        self.recovered_at.store(now_ms().saturating_sub(ms).max(1), Relaxed);
    }
}

/// The slow-start share `elapsed_ms` after recovery.
pub fn slow_start_ramp(elapsed_ms: u64, slow_start: Duration) -> f64 {
    (elapsed_ms as f64 / slow_start.as_millis().max(1) as f64).clamp(SLOW_START_FLOOR, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    fn configs() -> (HealthConfig, PassiveConfig) {
        let text = "[health]\nhealthy_threshold = 2\nunhealthy_threshold = 3\n[passive]\nconsecutive_failures = 2\nejection_time = \"1h\"\n[[backend]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n";
        let c = parse(text, "t").unwrap();
        (c.health, c.passive)
    }

    #[test]
    fn down_after_unhealthy_threshold_failures_and_up_after_healthy_threshold_passes() {
        let (check, _) = configs();
        let h = Health::default();
        assert_eq!(h.probe_result("a", &check, false), None);
        assert_eq!(h.probe_result("a", &check, false), None);
        assert!(h.ready(), "two failures with unhealthy_threshold = 3");
        assert_eq!(h.probe_result("a", &check, true), None);
        h.probe_result("a", &check, false);
        h.probe_result("a", &check, false);
        assert!(h.ready(), "a pass resets the failure streak");
        assert_eq!(h.probe_result("a", &check, false), Some(Transition::Down));
        assert_eq!(h.probe_result("a", &check, false), None, "down is reported once");
        assert!(!h.ready());
        assert_eq!(h.probe_result("a", &check, true), None);
        assert!(!h.ready(), "one pass with healthy_threshold = 2");
        assert_eq!(h.probe_result("a", &check, true), Some(Transition::Up));
        assert!(h.ready());
        assert_eq!(h.probe_result("a", &check, true), None, "up is reported once");
    }

    #[test]
    fn ejected_backend_rejoins_after_healthy_threshold_passes_not_ejection_time() {
        let (check, passive) = configs();
        let h = Health::default();
        for _ in 0..5 {
            h.probe_result("a", &check, true);
        }
        assert_eq!(h.record_failure("a", &passive), None);
        assert_eq!(h.record_failure("a", &passive), Some(Transition::Ejected));
        assert!(!h.ready() && h.is_ejected(), "ejected for an hour");
        assert_eq!(h.probe_result("a", &check, true), None, "the streak started over at the ejection");
        assert!(!h.ready());
        assert_eq!(h.probe_result("a", &check, true), Some(Transition::Up));
        assert!(h.ready() && !h.is_ejected());
    }

    #[test]
    fn ejected_backend_that_then_fails_its_checks_is_reported_down() {
        let (check, passive) = configs();
        let h = Health::default();
        h.record_failure("a", &passive);
        h.record_failure("a", &passive);
        for _ in 0..2 {
            assert_eq!(h.probe_result("a", &check, false), None);
        }
        assert_eq!(h.probe_result("a", &check, false), Some(Transition::Down));
        h.probe_result("a", &check, true);
        assert_eq!(h.probe_result("a", &check, true), Some(Transition::Up), "one up for down and ejected");
        assert!(h.ready());
    }

    #[test]
    fn success_resets_the_passive_failure_count() {
        let (_, passive) = configs();
        let h = Health::default();
        h.record_failure("a", &passive);
        h.record_success();
        assert_eq!(h.record_failure("a", &passive), None, "not consecutive");
        assert!(h.ready());
    }

    #[test]
    fn slow_start_ramps_from_the_floor_to_full_weight() {
        let ramp = Duration::from_secs(10);
        let h = Health::default();
        assert_eq!(h.slow_start_factor(ramp), 1.0, "never went away");
        h.recovered_ms_ago(0);
        assert!(h.slow_start_factor(ramp) <= 0.06, "just back: the floor");
        assert_eq!(h.slow_start_factor(Duration::ZERO), 1.0, "no slow start configured");
        assert_eq!(slow_start_ramp(1, ramp), SLOW_START_FLOOR);
        assert!((slow_start_ramp(5_000, ramp) - 0.5).abs() < 1e-9, "half way");
        assert_eq!(slow_start_ramp(20_000, ramp), 1.0);
    }
}
