//! Backend health, in one home: the [`Health`] value every backend carries (active checks'
//! view, passive ejection, probe streak, slow start; thresholds and transition logs), and the
//! active probe tasks ([`run`]).
//!
//! It must not import the balancer, the state or the proxy: the caller hands it the
//! [`Target`]s to watch (from the current config snapshot) and a reload signal, and the
//! proxy reports real-traffic failures into each backend's [`Health`].

mod probe;
mod state;

pub use state::{slow_start_ramp, Health, Transition, SLOW_START_FLOOR};

use crate::config::HealthConfig;
use crate::shutdown::Shutdown;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// One backend to watch.
pub struct Target {
    pub name: Arc<str>,
    /// `host:port` to probe.
    pub authority: String,
    /// `[health]` with the backend's overrides.
    pub check: HealthConfig,
    pub health: Arc<Health>,
}

/// Watch the targets `targets()` lists until `shutdown`; lists them again after every reload.
/// Backends with active checks get a probe task; the others a watcher that logs the end of a
/// passive ejection when its time is over.
pub async fn run(targets: impl Fn() -> Vec<Target>, mut reloads: watch::Receiver<u64>, mut shutdown: Shutdown) {
    loop {
        let mut tasks = JoinSet::new();
        for target in targets() {
            if target.check.enabled {
                tasks.spawn(probe::check_forever(target));
            } else {
                tasks.spawn(probe::watch_ejection(target));
            }
        }
        tokio::select! {
            _ = shutdown.wait() => return,
            changed = reloads.changed() => if changed.is_err() { return },
        }
        tasks.abort_all();
    }
}
