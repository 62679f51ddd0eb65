//! The in-memory affinity table: a compact sharded table ([`super::table`]: hashed keys, backend
//! ids, idle and lifetime expiry, sampled-LRU size bound) over a registry of backend ids
//! ([`super::backends`]) that turns ids back into backends and keeps each backend's session
//! count exact, whatever removed a pin (expiry, size, replace, unpin, reassign).
//! With `cluster.snapshot_file`, the table is saved on graceful shutdown and loaded at start
//! (see [`super::snapshot`] for what survives).

use super::backends::BackendIds;
use super::snapshot::{self, SavedPin};
use super::table::{HashKey, Limits, PinKey, Table};
use super::{unix_ms, AffinityStore};
use crate::balance::{Backend, Pool};
use crate::config::SessionConfig;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct MemoryStore {
    table: Table<BackendIds>,
    limits: Limits,
    /// Where pins are saved on shutdown and loaded from at start.
    snapshot_file: Option<PathBuf>,
}

impl MemoryStore {
    pub fn new(cfg: &SessionConfig) -> MemoryStore {
        let limits =
            Limits { idle_timeout: cfg.idle_timeout, max_lifetime: cfg.max_lifetime, max_entries: cfg.max_entries };
        MemoryStore { table: Table::new(limits, HashKey::random(), BackendIds::default()), limits, snapshot_file: None }
    }

    /// Save pins to `file` on [`save_snapshot`](Self::save_snapshot) and load them in
    /// [`load_snapshot`](Self::load_snapshot). The table takes the hash key the file was saved
    /// with (if it is still empty), so that the saved hashes find their sessions again.
    pub fn with_snapshot_file(mut self, file: Option<PathBuf>) -> MemoryStore {
        let saved_key = file.as_deref().and_then(snapshot::hash_key).and_then(|k| HashKey::from_hex(&k));
        if let Some(key) = saved_key.filter(|&k| k != self.table.hash_key() && self.table.is_empty()) {
            self.table = Table::new(self.limits, key, BackendIds::default());
        }
        self.snapshot_file = file;
        self
    }

    fn ids(&self) -> &BackendIds {
        self.table.counts()
    }

    pub fn get_sync(&self, key: &str) -> Option<Arc<Backend>> {
        let id = self.table.get(self.table.key(key))?;
        Some(self.ids().get(id))
    }

    pub fn pin_sync(&self, key: &str, backend: &Arc<Backend>) {
        let id = self.ids().id(backend);
        self.table.update(self.table.key(key), |_| Some(id));
    }

    /// Every live pin (for snapshots); O(n). Session keys are not kept, only their hashes.
    pub fn iter(&self) -> impl Iterator<Item = (PinKey, Arc<Backend>)> + '_ {
        self.table.entries().map(|e| (e.key, self.ids().get(e.value)))
    }

    /// Write every live pin to the snapshot file, if one is configured. Errors are logged:
    /// a failed save must not turn a clean shutdown into a failing one.
    pub fn save_snapshot(&self) {
        let Some(path) = &self.snapshot_file else { return };
        let pins = self.table.entries().map(|e| SavedPin {
            key: None,
            hash: Some(e.key.to_hex()),
            backend: self.ids().get(e.value).name.to_string(),
            created_ms: e.created_ms,
            used_ms: Some(e.used_ms),
        });
        match snapshot::save(path, unix_ms(), &self.table.hash_key().to_hex(), pins) {
            Ok(n) => tracing::info!(file = %path.display(), pins = n, "session pins saved"),
            Err(e) => tracing::error!(file = %path.display(), error = %e, "cannot save the session snapshot"),
        }
    }

    /// Load the snapshot file, if one is configured and present: pins still within their idle
    /// timeout and lifetime whose backend is in `pool`. A missing or bad file starts empty.
    pub fn load_snapshot(&self, pool: &Pool) {
        let Some(path) = &self.snapshot_file else { return };
        let (mut loaded, mut skipped) = (0u64, 0u64);
        let result = self.load_from(path, pool, |ok| if ok { loaded += 1 } else { skipped += 1 });
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

    /// Restore the live pins of `path`; `counted(false)` for each pin whose backend is gone (or
    /// whose hash is unreadable).
    fn load_from(&self, path: &Path, pool: &Pool, mut counted: impl FnMut(bool)) -> std::io::Result<Option<u64>> {
        let limits =
            snapshot::Limits { idle_timeout: self.limits.idle_timeout, max_lifetime: self.limits.max_lifetime };
        let hash_key = self.table.hash_key().to_hex();
        snapshot::load(path, unix_ms(), limits, &hash_key, |pin| {
            let key = match (&pin.key, &pin.hash) {
                (Some(key), _) => Some(self.table.key(key)),
                (None, Some(hash)) => PinKey::from_hex(hash),
                (None, None) => None,
            };
            match (key, pool.get(&pin.backend)) {
                (Some(key), Some(b)) => {
                    let used_ms = pin.used_ms.unwrap_or(pin.created_ms);
                    self.table.restore(key, self.ids().id(b), pin.created_ms, used_ms);
                    counted(true);
                }
                _ => counted(false),
            }
        })
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
        let ids = self.ids();
        let to_id = ids.id(to);
        // Compared by name: the pool may have been rebuilt by a reload since the pin.
        let holds = self.table.update(self.table.key(key), |current| match current {
            Some(id) if !ids.has_name(id, &from.name) => None,
            _ => Some(to_id),
        });
        holds.map_or_else(|| to.clone(), |id| ids.get(id))
    }

    async fn pin_if_absent(&self, key: &str, backend: &Arc<Backend>, _pool: &Pool) -> Arc<Backend> {
        let ids = self.ids();
        let id = ids.id(backend);
        let holds = self.table.update(self.table.key(key), |current| current.is_none().then_some(id));
        holds.map_or_else(|| backend.clone(), |id| ids.get(id))
    }

    async fn unpin(&self, key: &str) {
        self.table.remove(self.table.key(key));
    }

    fn len(&self) -> u64 {
        self.table.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;
    use std::time::Duration;

    fn config(backends: &[&str], extra: &str) -> crate::config::Config {
        let mut text = format!("[session]\n{extra}\n");
        for (i, b) in backends.iter().enumerate() {
            text.push_str(&format!("[[backend]]\nname = \"{b}\"\naddress = \"127.0.0.1:{}\"\n", 9000 + i));
        }
        crate::config::parse(&text, "t").unwrap()
    }

    fn sessions(pool: &Pool) -> Vec<i64> {
        pool.backends().iter().map(|b| b.sessions.load(Relaxed)).collect()
    }

    fn name(b: Option<Arc<Backend>>) -> Option<String> {
        b.map(|b| b.name.to_string())
    }

    #[test]
    fn a_pin_created_before_it_entered_the_table_keeps_only_its_remaining_lifetime() {
        let cfg = config(&["a"], "max_lifetime = \"1h\"");
        let pool = Pool::new(&cfg, None);
        let store = MemoryStore::new(&cfg.session);
        let a = &pool.backends()[0];
        let now = unix_ms();
        store.table.restore(store.table.key("old"), store.ids().id(a), now - 3_600_000 + 50, now);
        store.pin_sync("new", a);
        assert!(store.get_sync("old").is_some());
        // Times are 1/16 s ticks: wait out the 50 ms and the rounding.
        std::thread::sleep(Duration::from_millis(250));
        assert!(store.get_sync("old").is_none(), "lifetime over");
        assert!(store.get_sync("new").is_some());
        assert_eq!(store.len(), 1);
        assert_eq!(a.sessions.load(Relaxed), 1, "the expired pin was uncounted");
    }

    #[test]
    fn idle_pins_expire_and_are_uncounted() {
        let cfg = config(&["a", "b"], "idle_timeout = \"200ms\"");
        let pool = Pool::new(&cfg, None);
        let store = MemoryStore::new(&cfg.session);
        store.pin_sync("kept", &pool.backends()[0]);
        store.pin_sync("idle", &pool.backends()[1]);
        for _ in 0..4 {
            std::thread::sleep(Duration::from_millis(100));
            assert!(store.get_sync("kept").is_some());
        }
        assert_eq!(store.len(), 1, "the idle pin was swept");
        assert_eq!(sessions(&pool), [1, 0]);
        assert!(store.get_sync("idle").is_none());
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
        ready(store.unpin("s"));
        assert_eq!(moved(&a, &c), "c", "no pin any more: pinned");
        assert_eq!(store.len(), 1);
        assert_eq!([&a, &b, &c].map(|x| x.sessions.load(Relaxed)), [0, 0, 1]);
    }

    #[test]
    fn counts_stay_exact_through_replace_unpin_pin_if_absent_and_eviction() {
        let cfg = config(&["a", "b"], "max_entries = 100");
        let pool = Pool::new(&cfg, None);
        let [a, b] = [0, 1].map(|i| pool.backends()[i].clone());
        let store = MemoryStore::new(&cfg.session);
        store.pin_sync("s", &a);
        store.pin_sync("s", &b);
        assert_eq!(sessions(&pool), [0, 1], "replaced");
        assert_eq!(ready(store.pin_if_absent("s", &a, &pool)).name.as_ref(), "b", "present: kept");
        assert_eq!(ready(store.pin_if_absent("t", &a, &pool)).name.as_ref(), "a", "absent: pinned");
        assert_eq!(sessions(&pool), [1, 1]);
        ready(store.unpin("s"));
        ready(store.unpin("s"));
        assert_eq!(sessions(&pool), [1, 0]);
        for i in 0..1000 {
            store.pin_sync(&format!("k{i}"), &pool.backends()[i % 2]);
        }
        let n = store.len();
        assert!(n <= 100 && n > 80, "{n} pins for max_entries = 100");
        assert_eq!(sessions(&pool).iter().sum::<i64>() as u64, n, "evictions uncounted");
    }

    #[test]
    fn a_pin_to_a_removed_backend_is_still_returned_for_reassignment() {
        let before = config(&["a", "b"], "");
        let old = Pool::new(&before, None);
        let store = MemoryStore::new(&before.session);
        store.pin_sync("s", &old.backends()[1]);
        drop(old);
        let new = Pool::new(&config(&["a"], ""), None);
        let pinned = store.get_sync("s").expect("still pinned");
        assert_eq!(&*pinned.name, "b");
        assert!(new.current(&pinned).is_none(), "the caller sees it is gone");
        let to = ready(store.reassign("s", &pinned, &new.backends()[0], &new));
        assert_eq!((&*to.name, pinned.sessions.load(Relaxed)), ("a", 0));
    }

    #[test]
    fn two_threads_pin_and_look_up_together() {
        let cfg = config(&["a", "b"], "");
        let pool = Pool::new(&cfg, None);
        let store = MemoryStore::new(&cfg.session);
        std::thread::scope(|s| {
            for t in 0..2 {
                let (store, pool) = (&store, &pool);
                s.spawn(move || {
                    for i in 0..20_000 {
                        let key = format!("s{}", i % 3000);
                        let won = ready(store.pin_if_absent(&key, &pool.backends()[t], pool));
                        assert_eq!(store.get_sync(&key).map(|b| b.name.clone()), Some(won.name.clone()));
                    }
                });
            }
        });
        assert_eq!(store.len(), 3000);
        assert_eq!(sessions(&pool).iter().sum::<i64>(), 3000);
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
        assert_eq!(name(store.get_sync("s1")).as_deref(), Some("a"));
        assert!(store.get_sync("s2").is_none(), "backend b no longer exists");
        assert_eq!(sessions(&pool), [1, 0]);
    }

    #[test]
    fn a_version_1_snapshot_with_session_keys_loads() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pins.jsonl");
        let now = unix_ms();
        let lines = [
            format!(r#"{{"format":"stickylb-pins","version":1,"saved_at_ms":{now}}}"#),
            format!(r#"{{"key":"s1","backend":"a","created_ms":{now}}}"#),
            format!(r#"{{"key":"s2","backend":"b","created_ms":{}}}"#, now - 1000),
        ];
        std::fs::write(&file, lines.join("\n") + "\n").unwrap();
        let cfg = config(&["a", "b"], "");
        let pool = Pool::new(&cfg, None);
        let store = MemoryStore::new(&cfg.session).with_snapshot_file(Some(file));
        store.load_snapshot(&pool);
        assert_eq!(name(store.get_sync("s1")).as_deref(), Some("a"));
        assert_eq!(name(store.get_sync("s2")).as_deref(), Some("b"));
        assert_eq!(sessions(&pool), [1, 1]);
    }

    #[test]
    fn a_snapshot_keeps_creation_and_last_use() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pins.jsonl");
        let cfg = config(&["a"], "max_lifetime = \"1h\"");
        let pool = Pool::new(&cfg, None);
        let store = MemoryStore::new(&cfg.session).with_snapshot_file(Some(file.clone()));
        let now = unix_ms();
        store.table.restore(store.table.key("s"), store.ids().id(&pool.backends()[0]), now - 600_000, now - 60_000);
        store.save_snapshot();
        let again = MemoryStore::new(&cfg.session).with_snapshot_file(Some(file));
        again.load_snapshot(&pool);
        let e: Vec<_> = again.table.entries().collect();
        assert_eq!(e.len(), 1);
        assert!(e[0].created_ms.abs_diff(now - 600_000) < 200, "{e:?}");
        assert!(e[0].used_ms.abs_diff(now - 60_000) < 200, "{e:?}");
        assert_eq!(again.iter().next().map(|(k, b)| (k, b.name.to_string())), Some((again.table.key("s"), "a".into())));
    }
}
