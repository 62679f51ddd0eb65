//! The node affinity table: session key -> backend *name*.
//!
//! This module owns the [`AffinityStore`] trait and its implementations: [`MemoryStore`] (one
//! process, a compact table of hashed keys, bounded, idle and lifetime expiry, optionally saved
//! to a snapshot file across restarts) and [`RedisStore`] (several instances sharing pins through Redis, with a local
//! cache in front and pub/sub to hear other instances' reassignments). It does not decide
//! anything and knows nothing of the balancer: pins name backends, and the caller resolves a
//! name against its pool (a name the pool does not have is a removed backend, for the caller
//! to reassign). It must not import `balance`, `state`, `proxy` or `server`.
//!
//! Besides the per-request calls, [`Store::start`] (before serving: load the snapshot, start
//! the Redis event listener) and [`Store::stop`] (after the server drained: save the snapshot,
//! stop the listener) are the store's whole life cycle.

mod expiry;
mod memory;
mod names;
mod pin_key;
mod redis;
mod snapshot;
mod table;

pub use memory::MemoryStore;
pub use pin_key::PinKey;
pub use redis::{RedisHandle, RedisStore};

use crate::config::{Config, SessionConfig, StoreKind};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use std::future::Future;
use std::sync::Arc;

/// What every affinity table offers. Values are backend names, interned: a lookup hands back
/// a reference count of the store's own `Arc<str>`. A pin is to the name, so it survives a
/// change of that backend's address; a pin to a name the current config does not have is
/// still returned (the caller reassigns it).
pub trait AffinityStore: Send + Sync {
    /// The backend name `key` is pinned to, refreshing its idle expiry.
    fn get(&self, key: &str) -> impl Future<Output = Option<Arc<str>>> + Send;
    /// Pin `key` to `backend`, replacing any previous pin (the backend itself issued the
    /// session, as in learn mode).
    fn pin(&self, key: &str, backend: &str) -> impl Future<Output = ()> + Send;
    /// Move `key` from `from` to `to`, unless it is not pinned to `from` any more (another
    /// request or instance moved it first); returns the name that holds afterwards. A
    /// compare-and-set, so that two instances noticing the same dead backend do not overwrite
    /// each other's choice and bounce the session.
    fn reassign(&self, key: &str, from: &str, to: &str) -> impl Future<Output = Arc<str>> + Send;
    /// Pin `key` to `backend` unless it is pinned already; returns the name that holds (another
    /// instance may have won the race for a new session). `created_ms` (Unix ms) is when the
    /// session was created, if before now (`None`: now): a pin restored from a cookie that
    /// names its backend and creation time keeps only what is left of `max_lifetime`. A pin
    /// whose lifetime is over is not stored (`backend` is returned all the same).
    fn pin_if_absent(&self, key: &str, backend: &str, created_ms: Option<u64>)
        -> impl Future<Output = Arc<str>> + Send;
    /// Forget the pin of `key`.
    fn unpin(&self, key: &str) -> impl Future<Output = ()> + Send;
    /// Number of live pins (after pending evictions have run).
    fn len(&self) -> u64;
    /// No live pins.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Live pins per backend name, as this instance sees them (memory: exact; Redis: the
    /// pins in its local cache), for every name the store has seen. Counted as pins come and
    /// go; expired pins leave at the next sweep, which [`len`](Self::len) runs (call it first
    /// for current counts). Not for the request path: it copies the list.
    fn sessions(&self) -> Vec<(Arc<str>, u64)>;
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

    /// Before serving: load the memory store's snapshot (pins to the backend names `known`
    /// accepts; the others are dropped), or start the Redis store's event listener (stopped
    /// when `shutdown` flips or the store is dropped).
    pub fn start(&self, known: impl Fn(&str) -> bool, shutdown: Shutdown) {
        match self {
            Store::Memory(m) => m.load_snapshot(known),
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

    /// The Redis connection, for the group; `None` with the memory store.
    pub fn redis(&self) -> Option<RedisHandle> {
        match self {
            Store::Memory(_) => None,
            Store::Redis(r) => Some(r.handle()),
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
            && a.instance_name == b.instance_name
            && a.sentinels == b.sentinels
            && a.sentinel_master == b.sentinel_master
            && a.redis_cluster == b.redis_cluster
    }
}

/// The Redis store's futures are boxed: they are several KB, and an unboxed one would make
/// every request's future that large (moved, i.e. copied, at each await) even with the memory
/// store. A Redis round trip dwarfs the allocation.
impl AffinityStore for Store {
    async fn get(&self, key: &str) -> Option<Arc<str>> {
        match self {
            Store::Memory(m) => m.get(key).await,
            Store::Redis(r) => Box::pin(r.get(key)).await,
        }
    }
    async fn pin(&self, key: &str, backend: &str) {
        match self {
            Store::Memory(m) => m.pin(key, backend).await,
            Store::Redis(r) => Box::pin(r.pin(key, backend)).await,
        }
    }
    async fn reassign(&self, key: &str, from: &str, to: &str) -> Arc<str> {
        match self {
            Store::Memory(m) => m.reassign(key, from, to).await,
            Store::Redis(r) => Box::pin(r.reassign(key, from, to)).await,
        }
    }
    async fn pin_if_absent(&self, key: &str, backend: &str, created_ms: Option<u64>) -> Arc<str> {
        match self {
            Store::Memory(m) => m.pin_if_absent(key, backend, created_ms).await,
            Store::Redis(r) => Box::pin(r.pin_if_absent(key, backend, created_ms)).await,
        }
    }
    async fn unpin(&self, key: &str) {
        match self {
            Store::Memory(m) => m.unpin(key).await,
            Store::Redis(r) => Box::pin(r.unpin(key)).await,
        }
    }
    fn len(&self) -> u64 {
        match self {
            Store::Memory(m) => m.len(),
            Store::Redis(r) => r.len(),
        }
    }
    fn sessions(&self) -> Vec<(Arc<str>, u64)> {
        match self {
            Store::Memory(m) => m.sessions(),
            Store::Redis(r) => r.sessions(),
        }
    }
}

/// Wall-clock milliseconds since the Unix epoch: pin creation times are shared between
/// instances (Redis) and across restarts (snapshots), so they cannot use the process clock.
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
