//! The in-memory affinity table: a moka concurrent cache (lock-free reads, sharded writes)
//! with time-to-idle, a per-pin lifetime and an LRU size bound. An eviction listener keeps
//! each backend's session count right whatever removed a pin (expiry, size, replace, unpin).
//! With `cluster.snapshot_file`, the table is saved on graceful shutdown and loaded at start
//! (see [`super::snapshot`] for what survives).

use super::expiry::{Created, LifetimeExpiry};
use super::snapshot::{self, SavedPin};
use super::{unix_ms, AffinityStore};
use crate::balance::{Backend, Pool};
use crate::config::SessionConfig;
use moka::notification::RemovalCause;
use moka::ops::compute::Op as CacheOp;
use moka::policy::EvictionPolicy;
use moka::sync::Cache;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

pub struct MemoryStore {
    cache: Cache<String, Pin>,
    idle_timeout: Duration,
    max_lifetime: Duration,
    /// Where pins are saved on shutdown and loaded from at start.
    snapshot_file: Option<PathBuf>,
}

/// One pin. The creation time bounds its lifetime and is what a snapshot keeps.
#[derive(Clone)]
struct Pin {
    backend: Arc<Backend>,
    created_ms: u64,
}

impl Created for Pin {
    fn created_ms(&self) -> u64 {
        self.created_ms
    }
}

impl MemoryStore {
    pub fn new(cfg: &SessionConfig) -> MemoryStore {
        let cache = Cache::builder()
            .max_capacity(cfg.max_entries)
            .time_to_idle(cfg.idle_timeout)
            .expire_after(LifetimeExpiry { max_lifetime: cfg.max_lifetime })
            .eviction_policy(EvictionPolicy::lru())
            .eviction_listener(|_key, pin: Pin, _cause: RemovalCause| {
                pin.backend.sessions.fetch_sub(1, Relaxed);
            })
            .build();
        MemoryStore { cache, idle_timeout: cfg.idle_timeout, max_lifetime: cfg.max_lifetime, snapshot_file: None }
    }

    /// Save pins to `file` on [`save_snapshot`](Self::save_snapshot) and load them in
    /// [`load_snapshot`](Self::load_snapshot).
    pub fn with_snapshot_file(mut self, file: Option<PathBuf>) -> MemoryStore {
        self.snapshot_file = file;
        self
    }

    pub fn get_sync(&self, key: &str) -> Option<Arc<Backend>> {
        self.cache.get(key).map(|p| p.backend)
    }

    pub fn pin_sync(&self, key: &str, backend: &Arc<Backend>) {
        self.insert(key.to_owned(), backend.clone(), unix_ms());
    }

    fn insert(&self, key: String, backend: Arc<Backend>, created_ms: u64) {
        backend.sessions.fetch_add(1, Relaxed);
        self.cache.insert(key, Pin { backend, created_ms });
    }

    /// Every live pin (for snapshots and the admin API); O(n).
    pub fn iter(&self) -> impl Iterator<Item = (Arc<String>, Arc<Backend>)> + '_ {
        self.cache.iter().map(|(k, p)| (k, p.backend))
    }

    /// Write every live pin to the snapshot file, if one is configured. Errors are logged:
    /// a failed save must not turn a clean shutdown into a failing one.
    pub fn save_snapshot(&self) {
        let Some(path) = &self.snapshot_file else { return };
        let pins = self.cache.iter().map(|(k, p)| SavedPin {
            key: k.as_str().to_owned(),
            backend: p.backend.name.to_string(),
            created_ms: p.created_ms,
        });
        match snapshot::save(path, unix_ms(), pins) {
            Ok(n) => tracing::info!(file = %path.display(), pins = n, "session pins saved"),
            Err(e) => tracing::error!(file = %path.display(), error = %e, "cannot save the session snapshot"),
        }
    }

    /// Load the snapshot file, if one is configured and present: pins still within their idle
    /// timeout and lifetime whose backend is in `pool`. A missing or bad file starts empty.
    pub fn load_snapshot(&self, pool: &Pool) {
        let Some(path) = &self.snapshot_file else { return };
        let limits = snapshot::Limits { idle_timeout: self.idle_timeout, max_lifetime: self.max_lifetime };
        let (mut loaded, mut skipped) = (0u64, 0u64);
        let result = snapshot::load(path, unix_ms(), limits, |pin| match pool.get(&pin.backend) {
            Some(b) => {
                self.insert(pin.key, b.clone(), pin.created_ms);
                loaded += 1;
            }
            None => skipped += 1,
        });
        match result {
            Ok(Some(expired)) => tracing::info!(
                file = %path.display(), pins = loaded, expired, unknown_backend = skipped,
                "session pins restored from the snapshot"
            ),
            Ok(None) => tracing::info!(file = %path.display(), "no session snapshot yet; starting empty"),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot read the session snapshot; starting empty")
            }
        }
    }
}

impl AffinityStore for MemoryStore {
    async fn get(&self, key: &str, _pool: &Pool) -> Option<Arc<Backend>> {
        self.get_sync(key)
    }

    async fn pin(&self, key: &str, backend: &Arc<Backend>) {
        self.pin_sync(key, backend)
    }

    async fn reassign(&self, key: &str, from: &Arc<Backend>, to: &Arc<Backend>, _pool: &Pool) -> Arc<Backend> {
        let mut holds = to.clone();
        self.cache.entry_by_ref(key).and_compute_with(|cached| match cached {
            // Compared by name: the pool may have been rebuilt by a reload since the pin.
            Some(e) if e.value().backend.name != from.name => {
                holds = e.into_value().backend;
                CacheOp::Nop
            }
            _ => {
                to.sessions.fetch_add(1, Relaxed);
                CacheOp::Put(Pin { backend: to.clone(), created_ms: unix_ms() })
            }
        });
        holds
    }

    async fn pin_if_absent(&self, key: &str, backend: &Arc<Backend>, _pool: &Pool) -> Arc<Backend> {
        let entry = self.cache.entry(key.to_owned()).or_insert_with(|| {
            backend.sessions.fetch_add(1, Relaxed);
            Pin { backend: backend.clone(), created_ms: unix_ms() }
        });
        entry.into_value().backend
    }

    async fn unpin(&self, key: &str) {
        self.cache.invalidate(key);
    }

    fn len(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(backends: &[&str], extra: &str) -> crate::config::Config {
        let mut text = format!("[session]\n{extra}\n");
        for (i, b) in backends.iter().enumerate() {
            text.push_str(&format!("[[backend]]\nname = \"{b}\"\naddress = \"127.0.0.1:{}\"\n", 9000 + i));
        }
        crate::config::parse(&text, "t").unwrap()
    }

    #[test]
    fn a_pin_created_before_it_entered_the_table_keeps_only_its_remaining_lifetime() {
        let cfg = config(&["a"], "max_lifetime = \"1h\"");
        let pool = Pool::new(&cfg, None);
        let store = MemoryStore::new(&cfg.session);
        let a = &pool.backends()[0];
        store.insert("old".into(), a.clone(), unix_ms() - 3_600_000 + 50);
        store.insert("new".into(), a.clone(), unix_ms());
        assert!(store.get_sync("old").is_some());
        std::thread::sleep(Duration::from_millis(120));
        assert!(store.get_sync("old").is_none(), "lifetime over");
        assert!(store.get_sync("new").is_some());
        // moka's timer wheel removes (and uncounts) per-entry expirations within about a second.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while store.len() != 1 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(store.len(), 1);
        assert_eq!(a.sessions.load(Relaxed), 1, "the expired pin was uncounted");
    }

    #[test]
    fn a_reassignment_only_moves_a_session_from_where_it_is() {
        let cfg = config(&["a", "b", "c"], "");
        let pool = Pool::new(&cfg, None);
        let [a, b, c] = [0, 1, 2].map(|i| pool.backends()[i].clone());
        let store = MemoryStore::new(&cfg.session);
        store.pin_sync("s", &a);
        let moved = |from, to| ready(store.reassign("s", from, to, &pool)).name.to_string();
        assert_eq!(moved(&a, &b), "b", "pinned to a: moved");
        assert_eq!(moved(&a, &c), "b", "moved away from a already: the first move holds");
        assert_eq!(store.get_sync("s").unwrap().name.as_ref(), "b");
        store.cache.invalidate("s");
        assert_eq!(moved(&a, &c), "c", "no pin any more: pinned");
        assert_eq!(store.len(), 1);
        assert_eq!([&a, &b, &c].map(|x| x.sessions.load(Relaxed)), [0, 0, 1]);
    }

    /// Polls a future that never waits (the memory store's) to its result.
    fn ready<F: std::future::Future>(f: F) -> F::Output {
        let mut f = std::pin::pin!(f);
        let waker = std::task::Waker::from(std::sync::Arc::new(NoWake));
        match f.as_mut().poll(&mut std::task::Context::from_waker(&waker)) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("the memory store waited"),
        }
    }

    struct NoWake;
    impl std::task::Wake for NoWake {
        fn wake(self: std::sync::Arc<Self>) {}
    }

    #[test]
    fn snapshot_round_trip_skips_backends_that_are_gone() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pins.jsonl");
        let before = config(&["a", "b"], "");
        let pool = Pool::new(&before, None);
        let store = MemoryStore::new(&before.session).with_snapshot_file(Some(file.clone()));
        store.pin_sync("s1", &pool.backends()[0]);
        store.pin_sync("s2", &pool.backends()[1]);
        store.save_snapshot();

        let after = config(&["a", "c"], "");
        let pool = Pool::new(&after, None);
        let store = MemoryStore::new(&after.session).with_snapshot_file(Some(file));
        store.load_snapshot(&pool);
        assert_eq!(store.get_sync("s1").map(|b| b.name.to_string()).as_deref(), Some("a"));
        assert!(store.get_sync("s2").is_none(), "backend b no longer exists");
        assert_eq!(pool.backends()[0].sessions.load(Relaxed), 1);
    }
}
