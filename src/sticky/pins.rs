//! The router's only door to the affinity store: lookups and pin changes by backend name.
//! Every call the request path makes to the store is here.

use crate::balance::{Backend, Pool};
use crate::store::{AffinityStore, Store};
use std::sync::Arc;

/// The backend name `key` is pinned to.
pub async fn lookup(store: &Store, key: &str, pool: &Pool) -> Option<Arc<str>> {
    store.get(key, pool).await.map(|b| b.name.clone())
}

/// Pin `key` to `backend` unless pinned already (a new session, or a pin restored from a
/// cookie's route); returns the name that holds.
pub async fn pin_new(
    store: &Store,
    key: &str,
    backend: &Arc<Backend>,
    _created_ms: Option<u64>,
    pool: &Pool,
) -> Arc<str> {
    store.pin_if_absent(key, backend, pool).await.name.clone()
}

/// Move `key` from `from` to `to` unless someone moved it first; returns the name that holds.
pub async fn move_pin(store: &Store, key: &str, from: &str, to: &Arc<Backend>, pool: &Pool) -> Arc<str> {
    match pool.get(from) {
        Some(from) => store.reassign(key, from, to, pool).await.name.clone(),
        None => {
            store.pin(key, to).await;
            to.name.clone()
        }
    }
}

/// Pin `key` to `backend`, replacing any pin (a backend issued the session).
pub async fn pin(store: &Store, key: &str, backend: &Arc<Backend>) {
    store.pin(key, backend).await
}

/// Forget `key` (the backend deleted its session).
pub async fn unpin(store: &Store, key: &str) {
    store.unpin(key).await
}
