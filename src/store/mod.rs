//! The node affinity table: session key -> backend.
//!
//! This module owns the [`AffinityStore`] trait and its implementations: [`MemoryStore`] (one
//! process, bounded, idle and lifetime expiry) and, for several balancer instances, a Redis
//! store. It does not decide anything: the session module asks, the proxy pins.

mod memory;

pub use memory::MemoryStore;

use crate::balance::{Backend, Pool};
use crate::config::{Config, SessionConfig};
use crate::metrics::Metrics;
use std::future::Future;
use std::sync::Arc;

/// What every affinity table offers. Values are backends; a pin may outlive its backend's
/// place in the pool (after a reload), so callers map it through `Pool::current`.
pub trait AffinityStore: Send + Sync {
    /// The backend `key` is pinned to, refreshing its idle expiry. `pool` resolves backend
    /// names for stores that keep names (Redis); a pin to a backend that is not in the pool
    /// any more may still be returned (the caller reassigns it).
    fn get(&self, key: &str, pool: &Pool) -> impl Future<Output = Option<Arc<Backend>>> + Send;
    /// Pin `key` to `backend`, replacing any previous pin (a reassignment).
    fn pin(&self, key: &str, backend: &Arc<Backend>) -> impl Future<Output = ()> + Send;
    /// Pin `key` to `backend` unless it is pinned already; returns the pin that holds (another
    /// instance may have won the race for a new session).
    fn pin_if_absent(
        &self,
        key: &str,
        backend: &Arc<Backend>,
        pool: &Pool,
    ) -> impl Future<Output = Arc<Backend>> + Send;
    /// Forget the pin of `key`.
    fn unpin(&self, key: &str) -> impl Future<Output = ()> + Send;
    /// Number of live pins (after pending evictions have run).
    fn len(&self) -> u64;
}

/// The configured store.
pub enum Store {
    Memory(MemoryStore),
}

impl Store {
    pub fn from_config(config: &Config, metrics: Arc<Metrics>) -> Store {
        let _ = metrics;
        Store::Memory(MemoryStore::new(&config.session))
    }

    /// Limits of the table changed in a reload (only takes effect for a new table).
    pub fn same_limits(a: &SessionConfig, b: &SessionConfig) -> bool {
        a.idle_timeout == b.idle_timeout && a.max_lifetime == b.max_lifetime && a.max_entries == b.max_entries
    }
}

impl AffinityStore for Store {
    async fn get(&self, key: &str, pool: &Pool) -> Option<Arc<Backend>> {
        match self {
            Store::Memory(m) => m.get(key, pool).await,
        }
    }
    async fn pin(&self, key: &str, backend: &Arc<Backend>) {
        match self {
            Store::Memory(m) => m.pin(key, backend).await,
        }
    }
    async fn pin_if_absent(&self, key: &str, backend: &Arc<Backend>, pool: &Pool) -> Arc<Backend> {
        match self {
            Store::Memory(m) => m.pin_if_absent(key, backend, pool).await,
        }
    }
    async fn unpin(&self, key: &str) {
        match self {
            Store::Memory(m) => m.unpin(key).await,
        }
    }
    fn len(&self) -> u64 {
        match self {
            Store::Memory(m) => m.len(),
        }
    }
}
