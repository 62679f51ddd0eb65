//! The router's only door to the affinity store: lookups and pin changes by backend name.
//! Every call the request path makes to the store is here.

use crate::store::{AffinityStore, Store};
use std::sync::Arc;

/// The backend name `key` is pinned to.
pub async fn lookup(store: &Store, key: &str) -> Option<Arc<str>> {
    store.get(key).await
}

/// Pin `key` to `backend` unless pinned already (a new session, or a pin restored from a
/// cookie's route created at `created_ms`); returns the name that holds.
pub async fn pin_new(store: &Store, key: &str, backend: &str, created_ms: Option<u64>) -> Arc<str> {
    store.pin_if_absent(key, backend, created_ms).await
}

/// Move `key` from `from` to `to` unless someone moved it first; returns the name that holds.
pub async fn move_pin(store: &Store, key: &str, from: &str, to: &str) -> Arc<str> {
    store.reassign(key, from, to).await
}

/// Pin `key` to `backend`, replacing any pin (a backend issued the session).
pub async fn pin(store: &Store, key: &str, backend: &str) {
    store.pin(key, backend).await
}

/// Forget `key` (the backend deleted its session).
pub async fn unpin(store: &Store, key: &str) {
    store.unpin(key).await
}
