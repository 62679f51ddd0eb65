//! Backend names for the compact affinity tables: a table stores a small id per pin instead of
//! a name, and this registry turns ids back into names and counts each name's pins.
//!
//! A pin is to a backend *name*, whatever address that name has now: a reload that moves a
//! backend keeps its pins, and a name the running config does not have (a removed backend, or
//! one only another instance knows) is interned like any other and handed back to the caller,
//! who resolves it against its pool. Each name is interned once, so a lookup returns a
//! reference count of the same `Arc<str>` and never allocates. Ids are never reused; a process
//! makes one per distinct name it has seen, so `u32` does not run out.

use super::table::Counts;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// Id <-> name, read lock-free on every lookup; written only when a name is seen for the
/// first time.
#[derive(Default)]
pub(crate) struct Names {
    known: ArcSwap<Known>,
    /// Serialises writers (readers never wait for it).
    write: Mutex<()>,
}

/// One version of the registry: appended to (copied) when a name is new.
#[derive(Default)]
struct Known {
    /// Index = id.
    by_id: Vec<Arc<Name>>,
    by_name: HashMap<Arc<str>, u32>,
}

struct Name {
    name: Arc<str>,
    /// Live pins naming it. Shared by every version of the registry (the `Arc<Name>` is).
    sessions: AtomicI64,
}

impl Names {
    /// The id of `name`, interning it on first sight.
    pub fn id(&self, name: &str) -> u32 {
        self.lookup(name).unwrap_or_else(|| self.register(name))
    }

    /// The id of `name` if it was ever interned.
    pub fn lookup(&self, name: &str) -> Option<u32> {
        self.known.load().by_name.get(name).copied()
    }

    /// Slow path of [`id`](Self::id).
    fn register(&self, name: &str) -> u32 {
        let _writer = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let known = self.known.load();
        if let Some(&id) = known.by_name.get(name) {
            return id;
        }
        let id = u32::try_from(known.by_id.len()).expect("fewer than 2^32 backend names");
        let entry = Arc::new(Name { name: Arc::from(name), sessions: AtomicI64::new(0) });
        let mut by_id = known.by_id.clone();
        let mut by_name = known.by_name.clone();
        by_name.insert(entry.name.clone(), id);
        by_id.push(entry);
        self.known.store(Arc::new(Known { by_id, by_name }));
        id
    }

    /// The name of `id` (ids only come from [`id`](Self::id), so it exists): the interned
    /// `Arc`, cloned.
    pub fn get(&self, id: u32) -> Arc<str> {
        self.known.load().by_id[id as usize].name.clone()
    }

    /// Live pins per name, for every name ever interned (zero for most past ones).
    pub fn sessions(&self) -> Vec<(Arc<str>, u64)> {
        let known = self.known.load();
        known.by_id.iter().map(|n| (n.name.clone(), n.sessions.load(Relaxed).max(0) as u64)).collect()
    }
}

impl Counts for Names {
    fn added(&self, id: u32) {
        self.known.load().by_id[id as usize].sessions.fetch_add(1, Relaxed);
    }

    fn removed(&self, id: u32) {
        self.known.load().by_id[id as usize].sessions.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_interned_once_and_keeps_its_id_and_count() {
        let names = Names::default();
        let (a, b) = (names.id("a"), names.id("b"));
        assert_ne!(a, b);
        assert_eq!((names.id("a"), names.lookup("b"), names.lookup("c")), (a, Some(b), None));
        assert!(Arc::ptr_eq(&names.get(a), &names.get(a)), "the same Arc every time");
        assert_eq!(&*names.get(b), "b");
        names.added(b);
        names.added(b);
        names.removed(b);
        // Interning another name copies the registry; counts live in the shared entries.
        names.id("c");
        assert_eq!(names.sessions(), [("a".into(), 0), ("b".into(), 1), ("c".into(), 0)]);
    }
}
