//! The in-memory affinity table: a moka concurrent cache (lock-free reads, sharded writes)
//! with time-to-idle, time-to-live and an LRU size bound. An eviction listener keeps each
//! backend's session count right whatever removed a pin (expiry, size, replace, unpin).

use super::AffinityStore;
use crate::balance::{Backend, Pool};
use crate::config::SessionConfig;
use moka::notification::RemovalCause;
use moka::policy::EvictionPolicy;
use moka::sync::Cache;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

pub struct MemoryStore {
    cache: Cache<String, Arc<Backend>>,
}

impl MemoryStore {
    pub fn new(cfg: &SessionConfig) -> MemoryStore {
        let cache = Cache::builder()
            .max_capacity(cfg.max_entries)
            .time_to_idle(cfg.idle_timeout)
            .time_to_live(cfg.max_lifetime)
            .eviction_policy(EvictionPolicy::lru())
            .eviction_listener(|_key, backend: Arc<Backend>, _cause: RemovalCause| {
                backend.sessions.fetch_sub(1, Relaxed);
            })
            .build();
        MemoryStore { cache }
    }

    pub fn get_sync(&self, key: &str) -> Option<Arc<Backend>> {
        self.cache.get(key)
    }

    pub fn pin_sync(&self, key: &str, backend: &Arc<Backend>) {
        backend.sessions.fetch_add(1, Relaxed);
        self.cache.insert(key.to_owned(), backend.clone());
    }

    /// Every live pin (for snapshots and the admin API); O(n).
    pub fn iter(&self) -> impl Iterator<Item = (Arc<String>, Arc<Backend>)> + '_ {
        self.cache.iter()
    }
}

impl AffinityStore for MemoryStore {
    async fn get(&self, key: &str, _pool: &Pool) -> Option<Arc<Backend>> {
        self.get_sync(key)
    }

    async fn pin(&self, key: &str, backend: &Arc<Backend>) {
        self.pin_sync(key, backend)
    }

    async fn pin_if_absent(&self, key: &str, backend: &Arc<Backend>, _pool: &Pool) -> Arc<Backend> {
        let entry = self.cache.entry(key.to_owned()).or_insert_with(|| {
            backend.sessions.fetch_add(1, Relaxed);
            backend.clone()
        });
        entry.into_value()
    }

    async fn unpin(&self, key: &str) {
        self.cache.invalidate(key);
    }

    fn len(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }
}
