//! The in-memory affinity table: a compact sharded table ([`super::table`]: hashed keys, name
//! ids, idle and lifetime expiry, sampled-LRU size bound) over a registry of backend names
//! ([`super::names`]) that turns ids back into names and keeps each name's session count
//! exact, whatever removed a pin (expiry, size, replace, unpin, reassign).
//! With `cluster.snapshot_file`, the table is saved on graceful shutdown and loaded at start
//! (see [`super::snapshot`] for what survives).

use super::names::Names;
use super::snapshot::{self, SavedPin};
use super::table::{HashKey, Limits, PinKey, Table};
use super::{unix_ms, AffinityStore};
use crate::config::SessionConfig;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct MemoryStore {
    table: Table<Names>,
    limits: Limits,
    /// Where pins are saved on shutdown and loaded from at start.
    snapshot_file: Option<PathBuf>,
}

impl MemoryStore {
    pub fn new(cfg: &SessionConfig) -> MemoryStore {
        let limits =
            Limits { idle_timeout: cfg.idle_timeout, max_lifetime: cfg.max_lifetime, max_entries: cfg.max_entries };
        MemoryStore { table: Table::new(limits, HashKey::random(), Names::default()), limits, snapshot_file: None }
    }

    /// Save pins to `file` on [`save_snapshot`](Self::save_snapshot) and load them in
    /// [`load_snapshot`](Self::load_snapshot). The table takes the hash key the file was saved
    /// with (if it is still empty), so that the saved hashes find their sessions again.
    pub fn with_snapshot_file(mut self, file: Option<PathBuf>) -> MemoryStore {
        let saved_key = file.as_deref().and_then(snapshot::hash_key).and_then(|k| HashKey::from_hex(&k));
        if let Some(key) = saved_key.filter(|&k| k != self.table.hash_key() && self.table.is_empty()) {
            self.table = Table::new(self.limits, key, Names::default());
        }
        self.snapshot_file = file;
        self
    }

    fn names(&self) -> &Names {
        self.table.counts()
    }

    pub fn get_sync(&self, key: &str) -> Option<Arc<str>> {
        let id = self.table.get(self.table.key(key))?;
        Some(self.names().get(id))
    }

    pub fn pin_sync(&self, key: &str, backend: &str) {
        let id = self.names().id(backend);
        self.table.update(self.table.key(key), |_| Some(id));
    }

    /// Every live pin (for snapshots); O(n). Session keys are not kept, only their hashes.
    pub fn iter(&self) -> impl Iterator<Item = (PinKey, Arc<str>)> + '_ {
        self.table.entries().map(|e| (e.key, self.names().get(e.value)))
    }

    /// Write every live pin to the snapshot file, if one is configured. Errors are logged:
    /// a failed save must not turn a clean shutdown into a failing one.
    pub fn save_snapshot(&self) {
        let Some(path) = &self.snapshot_file else { return };
        let pins = self.table.entries().map(|e| SavedPin {
            key: None,
            hash: Some(e.key.to_hex()),
            backend: self.names().get(e.value).to_string(),
            created_ms: e.created_ms,
            used_ms: Some(e.used_ms),
        });
        match snapshot::save(path, unix_ms(), &self.table.hash_key().to_hex(), pins) {
            Ok(n) => tracing::info!(file = %path.display(), pins = n, "session pins saved"),
            Err(e) => tracing::error!(file = %path.display(), error = %e, "cannot save the session snapshot"),
        }
    }

    /// Load the snapshot file, if one is configured and present: pins still within their idle
    /// timeout and lifetime whose backend name `known` accepts (the running config has it). A
    /// missing or bad file starts empty.
    pub fn load_snapshot(&self, known: impl Fn(&str) -> bool) {
        let Some(path) = &self.snapshot_file else { return };
        let (mut loaded, mut skipped) = (0u64, 0u64);
        let result = self.load_from(path, known, |ok| if ok { loaded += 1 } else { skipped += 1 });
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
    fn load_from(
        &self,
        path: &Path,
        known: impl Fn(&str) -> bool,
        mut counted: impl FnMut(bool),
    ) -> std::io::Result<Option<u64>> {
        let limits =
            snapshot::Limits { idle_timeout: self.limits.idle_timeout, max_lifetime: self.limits.max_lifetime };
        let hash_key = self.table.hash_key().to_hex();
        snapshot::load(path, unix_ms(), limits, &hash_key, |pin| {
            let key = match (&pin.key, &pin.hash) {
                (Some(key), _) => Some(self.table.key(key)),
                (None, Some(hash)) => PinKey::from_hex(hash),
                (None, None) => None,
            };
            match key.filter(|_| known(&pin.backend)) {
                Some(key) => {
                    let used_ms = pin.used_ms.unwrap_or(pin.created_ms);
                    self.table.restore(key, self.names().id(&pin.backend), pin.created_ms, used_ms);
                    counted(true);
                }
                None => counted(false),
            }
        })
    }
}

impl AffinityStore for MemoryStore {
    async fn get(&self, key: &str) -> Option<Arc<str>> {
        self.get_sync(key)
    }

    async fn pin(&self, key: &str, backend: &str) {
        self.pin_sync(key, backend)
    }

    async fn reassign(&self, key: &str, from: &str, to: &str) -> Arc<str> {
        let names = self.names();
        let (from, to) = (names.lookup(from), names.id(to));
        let holds = self.table.update(self.table.key(key), |current| match current {
            Some(id) if Some(id) != from => None,
            _ => Some(to),
        });
        names.get(holds.unwrap_or(to))
    }

    async fn pin_if_absent(&self, key: &str, backend: &str, created_ms: Option<u64>) -> Arc<str> {
        let names = self.names();
        let id = names.id(backend);
        let holds = self.table.update_at(self.table.key(key), created_ms, |current| current.is_none().then_some(id));
        names.get(holds.unwrap_or(id))
    }

    async fn unpin(&self, key: &str) {
        self.table.remove(self.table.key(key));
    }

    fn len(&self) -> u64 {
        self.table.len()
    }

    fn sessions(&self) -> Vec<(Arc<str>, u64)> {
        self.names().sessions()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn config(extra: &str) -> crate::config::Config {
        let text = format!("[session]\n{extra}\n[[backend]]\nname = \"a\"\naddress = \"127.0.0.1:9000\"\n");
        crate::config::parse(&text, "t").unwrap()
    }

    /// The store's session counts of `names`, in that order.
    fn sessions<const N: usize>(store: &MemoryStore, names: [&str; N]) -> [u64; N] {
        let all = store.sessions();
        names.map(|n| all.iter().find(|(name, _)| &**name == n).map_or(0, |&(_, c)| c))
    }

    fn name(b: Option<Arc<str>>) -> Option<String> {
        b.map(|b| b.to_string())
    }

    #[test]
    fn a_pin_created_before_it_entered_the_table_keeps_only_its_remaining_lifetime() {
        let cfg = config("max_lifetime = \"1h\"");
        let store = MemoryStore::new(&cfg.session);
        let now = unix_ms();
        store.table.restore(store.table.key("old"), store.names().id("a"), now - 3_600_000 + 50, now);
        store.pin_sync("new", "a");
        assert!(store.get_sync("old").is_some());
        // Times are 1/16 s ticks: wait out the 50 ms and the rounding.
        std::thread::sleep(Duration::from_millis(250));
        assert!(store.get_sync("old").is_none(), "lifetime over");
        assert!(store.get_sync("new").is_some());
        assert_eq!(store.len(), 1);
        assert_eq!(sessions(&store, ["a"]), [1], "the expired pin was uncounted");
    }

    #[test]
    fn pin_if_absent_counts_the_lifetime_from_the_sessions_creation() {
        let store = MemoryStore::new(&config("max_lifetime = \"2s\"").session);
        let now = unix_ms();
        let over = ready(store.pin_if_absent("over", "a", Some(now - 2_100)));
        assert_eq!((&*over, store.get_sync("over")), ("a", None), "answered, not stored");
        ready(store.pin_if_absent("old", "a", Some(now - 1_500)));
        assert!(store.get_sync("old").is_some());
        std::thread::sleep(Duration::from_millis(1_000));
        assert!(store.get_sync("old").is_none(), "lifetime over");
        assert_eq!(sessions(&store, ["a"]), [0]);
    }

    #[test]
    fn idle_pins_expire_and_are_uncounted() {
        let cfg = config("idle_timeout = \"200ms\"");
        let store = MemoryStore::new(&cfg.session);
        store.pin_sync("kept", "a");
        store.pin_sync("idle", "b");
        for _ in 0..4 {
            std::thread::sleep(Duration::from_millis(100));
            assert!(store.get_sync("kept").is_some());
        }
        assert_eq!(store.len(), 1, "the idle pin was swept");
        assert_eq!(sessions(&store, ["a", "b"]), [1, 0]);
        assert!(store.get_sync("idle").is_none());
    }

    #[test]
    fn a_reassignment_only_moves_a_session_from_where_it_is() {
        let store = MemoryStore::new(&config("").session);
        store.pin_sync("s", "a");
        let moved = |from, to| ready(store.reassign("s", from, to)).to_string();
        assert_eq!(moved("a", "b"), "b", "pinned to a: moved");
        assert_eq!(moved("a", "c"), "b", "moved away from a already: the first move holds");
        assert_eq!(store.get_sync("s").as_deref(), Some("b"));
        ready(store.unpin("s"));
        assert_eq!(moved("a", "c"), "c", "no pin any more: pinned");
        assert_eq!(moved("never-seen", "a"), "c", "from a name never pinned: kept");
        assert_eq!(store.len(), 1);
        assert_eq!(sessions(&store, ["a", "b", "c"]), [0, 0, 1]);
    }

    #[test]
    fn counts_stay_exact_through_replace_unpin_pin_if_absent_and_eviction() {
        let store = MemoryStore::new(&config("max_entries = 100").session);
        store.pin_sync("s", "a");
        store.pin_sync("s", "b");
        assert_eq!(sessions(&store, ["a", "b"]), [0, 1], "replaced");
        assert_eq!(&*ready(store.pin_if_absent("s", "a", None)), "b", "present: kept");
        assert_eq!(&*ready(store.pin_if_absent("t", "a", None)), "a", "absent: pinned");
        assert_eq!(sessions(&store, ["a", "b"]), [1, 1]);
        ready(store.unpin("s"));
        ready(store.unpin("s"));
        assert_eq!(sessions(&store, ["a", "b"]), [1, 0]);
        for i in 0..1000 {
            store.pin_sync(&format!("k{i}"), ["a", "b"][i % 2]);
        }
        let n = store.len();
        assert!(n <= 100 && n > 80, "{n} pins for max_entries = 100");
        assert_eq!(sessions(&store, ["a", "b"]).iter().sum::<u64>(), n, "evictions uncounted");
    }

    #[test]
    fn a_pin_is_to_a_name_and_lookups_hand_back_the_interned_name() {
        let store = MemoryStore::new(&config("").session);
        store.pin_sync("s", "b");
        let (first, again) = (store.get_sync("s").unwrap(), store.get_sync("s").unwrap());
        assert!(Arc::ptr_eq(&first, &again), "no allocation per lookup");
        // Whatever the caller's config says of "b" now (moved, removed), the pin names it; the
        // caller reassigns a name it does not have.
        let to = ready(store.reassign("s", &first, "a"));
        assert_eq!((&*to, sessions(&store, ["a", "b"])), ("a", [1, 0]));
    }

    #[test]
    fn two_threads_pin_and_look_up_together() {
        let store = MemoryStore::new(&config("").session);
        std::thread::scope(|s| {
            for t in 0..2 {
                let store = &store;
                s.spawn(move || {
                    for i in 0..20_000 {
                        let key = format!("s{}", i % 3000);
                        let won = ready(store.pin_if_absent(&key, ["a", "b"][t], None));
                        assert_eq!(store.get_sync(&key), Some(won));
                    }
                });
            }
        });
        assert_eq!(store.len(), 3000);
        assert_eq!(sessions(&store, ["a", "b"]).iter().sum::<u64>(), 3000);
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
        let cfg = config("");
        let store = MemoryStore::new(&cfg.session).with_snapshot_file(Some(file.clone()));
        store.pin_sync("s1", "a");
        store.pin_sync("s2", "b");
        store.save_snapshot();

        let store = MemoryStore::new(&cfg.session).with_snapshot_file(Some(file));
        store.load_snapshot(|name| ["a", "c"].contains(&name));
        assert_eq!(name(store.get_sync("s1")).as_deref(), Some("a"));
        assert!(store.get_sync("s2").is_none(), "backend b no longer exists");
        assert_eq!(sessions(&store, ["a", "c"]), [1, 0]);
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
        let store = MemoryStore::new(&config("").session).with_snapshot_file(Some(file));
        store.load_snapshot(|name| ["a", "b"].contains(&name));
        assert_eq!(name(store.get_sync("s1")).as_deref(), Some("a"));
        assert_eq!(name(store.get_sync("s2")).as_deref(), Some("b"));
        assert_eq!(sessions(&store, ["a", "b"]), [1, 1]);
    }

    #[test]
    fn a_snapshot_keeps_creation_and_last_use() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pins.jsonl");
        let cfg = config("max_lifetime = \"1h\"");
        let store = MemoryStore::new(&cfg.session).with_snapshot_file(Some(file.clone()));
        let now = unix_ms();
        store.table.restore(store.table.key("s"), store.names().id("a"), now - 600_000, now - 60_000);
        store.save_snapshot();
        let again = MemoryStore::new(&cfg.session).with_snapshot_file(Some(file));
        again.load_snapshot(|name| name == "a");
        let e: Vec<_> = again.table.entries().collect();
        assert_eq!(e.len(), 1);
        assert!(e[0].created_ms.abs_diff(now - 600_000) < 200, "{e:?}");
        assert!(e[0].used_ms.abs_diff(now - 60_000) < 200, "{e:?}");
        assert_eq!(again.iter().next().map(|(k, b)| (k, b.to_string())), Some((again.table.key("s"), "a".into())));
    }
}
