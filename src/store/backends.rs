//! Backend ids for the compact affinity table: the table stores a `u32` per pin instead of an
//! `Arc<Backend>`, and this registry turns ids back into backends and keeps each backend's
//! session count.
//!
//! An id stands for one session *counter* (`Backend::sessions`), not one `Backend` object: a
//! reload rebuilds the pool with new `Backend` objects that share their predecessor's counter
//! (same name and address), and those keep the id, while a backend re-created with a new
//! address gets a new counter and so a new id. Every pin therefore gives back its count to the
//! counter it took it from, whatever reloads happened in between. Ids are never reused; a
//! process makes one per backend and per address change, so `u32` does not run out.

use super::table::Counts;
use crate::balance::Backend;
use arc_swap::ArcSwap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

/// Id -> backend, read lock-free on every lookup; written only when a backend is seen for the
/// first time or in a new pool.
#[derive(Default)]
pub(crate) struct BackendIds {
    /// Index = id. Each slot holds the most recent `Backend` seen with that counter, so that
    /// lookups after a reload usually return the object of the current pool.
    by_id: ArcSwap<Vec<Arc<Backend>>>,
    /// Serialises writers (readers never wait for it).
    write: Mutex<()>,
}

impl BackendIds {
    /// The id of `backend`'s session counter, registering it on first sight.
    pub fn id(&self, backend: &Arc<Backend>) -> u32 {
        let known = self.by_id.load();
        match known.iter().position(|b| Arc::ptr_eq(&b.sessions, &backend.sessions)) {
            Some(id) if Arc::ptr_eq(&known[id], backend) => id as u32,
            _ => self.register(backend),
        }
    }

    /// Slow path of [`id`](Self::id): a new counter, or a new `Backend` object for a known one.
    fn register(&self, backend: &Arc<Backend>) -> u32 {
        let _writer = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let mut list = Vec::clone(&self.by_id.load());
        let id = match list.iter().position(|b| Arc::ptr_eq(&b.sessions, &backend.sessions)) {
            Some(id) => {
                list[id] = backend.clone();
                id
            }
            None => {
                list.push(backend.clone());
                list.len() - 1
            }
        };
        self.by_id.store(Arc::new(list));
        u32::try_from(id).expect("fewer than 2^32 backend counters")
    }

    /// The backend of `id` (ids only come from [`id`](Self::id), so it exists).
    pub fn get(&self, id: u32) -> Arc<Backend> {
        self.by_id.load()[id as usize].clone()
    }

    /// Whether the backend of `id` is called `name` (without cloning the `Arc`).
    pub fn has_name(&self, id: u32, name: &str) -> bool {
        *self.by_id.load()[id as usize].name == *name
    }
}

impl Counts for BackendIds {
    fn added(&self, id: u32) {
        self.by_id.load()[id as usize].sessions.fetch_add(1, Relaxed);
    }

    fn removed(&self, id: u32) {
        self.by_id.load()[id as usize].sessions.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::Pool;

    fn pool(backends: &[(&str, u16)], previous: Option<&Pool>) -> Pool {
        let mut text = String::new();
        for (name, port) in backends {
            text.push_str(&format!("[[backend]]\nname = \"{name}\"\naddress = \"127.0.0.1:{port}\"\n"));
        }
        Pool::new(&crate::config::parse(&text, "t").unwrap(), previous)
    }

    #[test]
    fn a_reloaded_backend_keeps_its_id_and_a_moved_one_gets_a_new_one() {
        let ids = BackendIds::default();
        let before = pool(&[("a", 9001), ("b", 9002)], None);
        let (a, b) = (ids.id(&before.backends()[0]), ids.id(&before.backends()[1]));
        assert_ne!(a, b);
        // "a" keeps its address (same counter), "b" moves (new counter).
        let after = pool(&[("a", 9001), ("b", 9003)], Some(&before));
        assert_eq!(ids.id(&after.backends()[0]), a);
        assert!(Arc::ptr_eq(&ids.get(a), &after.backends()[0]), "the newest object is returned");
        let b2 = ids.id(&after.backends()[1]);
        assert_ne!(b2, b);
        assert!(ids.has_name(b, "b") && ids.has_name(b2, "b"));
        ids.added(b);
        assert_eq!(before.backends()[1].sessions.load(Relaxed), 1);
        assert_eq!(after.backends()[1].sessions.load(Relaxed), 0, "the old pin counts on the old counter");
    }
}
