//! The node affinity table: session key -> backend.
//!
//! This module owns the [`AffinityStore`] trait and its implementations: [`MemoryStore`] (one
//! process, a compact table of hashed keys, bounded, idle and lifetime expiry, optionally saved
//! to a snapshot file across restarts) and [`RedisStore`] (several instances sharing pins through Redis, with a local
//! cache in front and pub/sub to hear other instances' reassignments). It does not decide
//! anything: the session module asks, the proxy pins.
//!
//! Besides the per-request calls, [`Store::start`] (before serving: load the snapshot, start
//! the Redis event listener) and [`Store::stop`] (after the server drained: save the snapshot,
//! stop the listener) are the store's whole life cycle.

mod backends;
mod expiry;
mod memory;
mod pin_key;
mod redis;
mod snapshot;
mod table;

pub use memory::MemoryStore;
pub use pin_key::PinKey;
pub use redis::RedisStore;

use crate::balance::{Backend, Pool};
use crate::config::{Config, SessionConfig, StoreKind};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use std::future::Future;
use std::sync::Arc;

/// What every affinity table offers. Values are backends; a pin may outlive its backend's
/// place in the pool (after a reload), so callers map it through `Pool::current`.
pub trait AffinityStore: Send + Sync {
    /// The backend `key` is pinned to, refreshing its idle expiry. `pool` resolves backend
    /// names for stores that keep names (Redis); a pin to a backend that is not in the pool
    /// any more may still be returned (the caller reassigns it).
    fn get(&self, key: &str, pool: &Pool) -> impl Future<Output = Option<Arc<Backend>>> + Send;
    /// Pin `key` to `backend`, replacing any previous pin (the backend itself named the
    /// session, as in learn mode).
    fn pin(&self, key: &str, backend: &Arc<Backend>) -> impl Future<Output = ()> + Send;
    /// Move `key` from `from` to `to`, unless it is not pinned to `from` any more (another
    /// request or instance moved it first); returns the pin that holds afterwards. A
    /// compare-and-set, so that two instances noticing the same dead backend do not overwrite
    /// each other's choice and bounce the session.
    fn reassign(
        &self,
        key: &str,
        from: &Arc<Backend>,
        to: &Arc<Backend>,
        pool: &Pool,
    ) -> impl Future<Output = Arc<Backend>> + Send;
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
    /// No live pins.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The configured store.
pub enum Store {
    Memory(MemoryStore),
    Redis(RedisStore),
}

impl Store {
    pub fn from_config(config: &Config, metrics: Arc<Metrics>) -> Store {
        match config.cluster.store {
            StoreKind::Memory => Store::Memory(
                MemoryStore::new(&config.session).with_snapshot_file(config.cluster.snapshot_file.clone()),
            ),
            StoreKind::Redis => match RedisStore::new(&config.session, &config.cluster, metrics) {
                Ok(store) => Store::Redis(store),
                // Validation parsed the same URL, so only a config built in code gets here.
                Err(e) => {
                    tracing::error!("invalid cluster.redis_url ({e}); using the in-memory store");
                    Store::Memory(MemoryStore::new(&config.session))
                }
            },
        }
    }

    /// Before serving: load the memory store's snapshot (pins resolved through `pool`), or
    /// start the Redis store's event listener (stopped when `shutdown` flips or the store is
    /// dropped).
    pub fn start(&self, pool: &Pool, shutdown: Shutdown) {
        match self {
            Store::Memory(m) => m.load_snapshot(pool),
            Store::Redis(r) => r.start(shutdown),
        }
    }

    /// After the server drained: save the memory store's snapshot, stop the Redis listener.
    pub fn stop(&self) {
        match self {
            Store::Memory(m) => m.save_snapshot(),
            Store::Redis(r) => r.stop(),
        }
    }

    /// Limits of the table changed in a reload (only takes effect for a new table).
    pub fn same_limits(a: &SessionConfig, b: &SessionConfig) -> bool {
        a.idle_timeout == b.idle_timeout && a.max_lifetime == b.max_lifetime && a.max_entries == b.max_entries
    }

    /// The `[cluster]` settings are read once at start; a reload that changes them only
    /// takes effect after a restart.
    pub fn same_cluster(a: &Config, b: &Config) -> bool {
        let (a, b) = (&a.cluster, &b.cluster);
        a.store == b.store
            && a.redis_url == b.redis_url
            && a.key_prefix == b.key_prefix
            && a.snapshot_file == b.snapshot_file
            && a.redis_timeout == b.redis_timeout
    }
}

impl AffinityStore for Store {
    async fn get(&self, key: &str, pool: &Pool) -> Option<Arc<Backend>> {
        match self {
            Store::Memory(m) => m.get(key, pool).await,
            Store::Redis(r) => r.get(key, pool).await,
        }
    }
    async fn pin(&self, key: &str, backend: &Arc<Backend>) {
        match self {
            Store::Memory(m) => m.pin(key, backend).await,
            Store::Redis(r) => r.pin(key, backend).await,
        }
    }
    async fn reassign(&self, key: &str, from: &Arc<Backend>, to: &Arc<Backend>, pool: &Pool) -> Arc<Backend> {
        match self {
            Store::Memory(m) => m.reassign(key, from, to, pool).await,
            Store::Redis(r) => r.reassign(key, from, to, pool).await,
        }
    }
    async fn pin_if_absent(&self, key: &str, backend: &Arc<Backend>, pool: &Pool) -> Arc<Backend> {
        match self {
            Store::Memory(m) => m.pin_if_absent(key, backend, pool).await,
            Store::Redis(r) => r.pin_if_absent(key, backend, pool).await,
        }
    }
    async fn unpin(&self, key: &str) {
        match self {
            Store::Memory(m) => m.unpin(key).await,
            Store::Redis(r) => r.unpin(key).await,
        }
    }
    fn len(&self) -> u64 {
        match self {
            Store::Memory(m) => m.len(),
            Store::Redis(r) => r.len(),
        }
    }
}

/// Wall-clock milliseconds since the Unix epoch: pin creation times are shared between
/// instances (Redis) and across restarts (snapshots), so they cannot use the process clock.
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
