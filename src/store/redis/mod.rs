//! The cluster affinity store: pins shared by every instance through Redis, with a local
//! cache in front so that the hot path usually does not wait on Redis.
//!
//! Client: the `redis` crate (redis-rs) with `tokio-comp` and `connection-manager`. It is the
//! de-facto standard Rust client, its `ConnectionManager` is a cheap-to-clone multiplexed
//! connection that reconnects by itself, and RESP3 push messages give pub/sub on a plain
//! connection; `fred` would also do (it has its own reconnect policies and pools), but it is a
//! much larger dependency whose extras (cluster routing, pools, client-side caching) this
//! store does not need. Version 0.32 keeps the crate's MSRV (1.80).
//!
//! In Redis: `{key_prefix}pin:{session}` = `"{created_ms}:{backend name}"` (see
//! [`pin::PinValue`]), expiring after the idle timeout (cut to what is left of the lifetime);
//! reassignments and unpins are published on `{key_prefix}events` ([`events`]).
//!
//! Locally: a moka table of [`pin::LocalPin`]s (idle timeout, lifetime from the pin's
//! creation, `session.max_entries` bound). A cached pin is served without asking Redis; once
//! per refresh window (a quarter of the idle timeout) its use syncs it in the background: the
//! Redis expiry is refreshed and the value checked. So a cached pin outlives Redis's by at
//! most that window, and events make reassignments visible at once.
//!
//! Concurrency between instances: a new session is pinned with `SET NX` (the loser adopts the
//! winner's pin), and a reassignment is a compare-and-set in one Lua script ("move from the
//! backend I saw, unless someone moved it already", then PUBLISH), so two instances noticing
//! the same dead backend, one of them before it heard the other's event, end with one choice
//! instead of overwriting each other and bouncing the session.
//!
//! Redis down or slow: every call is bounded by `cluster.redis_timeout`; a failure puts the
//! [`link::Link`] down and requests are served from the local table (new pins go there,
//! marked for write-back) with one probe per 500ms. Back up, pins made meanwhile are written
//! back when next used: a new session only if Redis has none (another instance's pin wins), a
//! reassignment always (it is newer).
//!
//! Backend names are resolved through the request's pool. A name the pool does not have (a
//! backend removed from this instance's config, or one only another instance knows) is still
//! returned, as a detached placeholder backend of that name that takes no traffic: treating it
//! as "no pin" would make `pin_if_absent` adopt the same stale pin on every request and the
//! session would never be re-pinned, whereas a pin to a missing backend makes the proxy
//! reassign the session (counted as `removed`, with `X-Stickylb-Previous-Backend`).
//!
//! Per-instance views: `len()` and each backend's `sessions` count the pins in this
//! instance's local cache (the sessions it has seen recently), not all pins in Redis.

mod commands;
mod events;
mod link;
mod pin;

use super::expiry::LifetimeExpiry;
use super::{unix_ms, AffinityStore};
use crate::balance::{Backend, Pool};
use crate::config::{AdminState, BackendAddr, BackendConfig, ClusterConfig, HealthConfig, SessionConfig};
use crate::metrics::Metrics;
use link::Link;
use moka::notification::RemovalCause;
use moka::ops::compute::Op as CacheOp;
use moka::policy::EvictionPolicy;
use moka::sync::Cache;
use pin::{LocalPin, Pending, PinValue, Verdict};
use redis::aio::ConnectionManager;
use redis::{Client, ProtocolVersion, RedisResult};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, OnceCell};
use tokio::task::JoinHandle;

pub struct RedisStore {
    inner: Arc<Inner>,
    /// The event listener task; stopped at shutdown or when the store is dropped.
    listener: Mutex<Option<JoinHandle<()>>>,
}

/// Key names under the configured prefix.
struct Keys {
    prefix: String,
    channel: String,
}

impl Keys {
    fn pin(&self, session: &str) -> String {
        format!("{}pin:{session}", self.prefix)
    }
}

/// What the request path, the background syncs and the event listener share.
struct Inner {
    local: Cache<String, Arc<LocalPin>>,
    client: Client,
    /// The same server with RESP3, for the event listener's push messages.
    events_client: Client,
    /// Made on first use (not at start: Redis may be down then), then reconnects by itself.
    conn: OnceCell<ConnectionManager>,
    keys: Keys,
    link: Link,
    timeout: Duration,
    idle_timeout: Duration,
    max_lifetime: Duration,
    refresh_window_ms: u64,
    /// Identifies this process's own events, which it has applied already.
    instance: u64,
    /// Bumped at every (re)subscription to the event channel; see [`events`].
    epoch: AtomicU64,
    /// Bumped whenever an event drops a cached pin, so that a Redis read that raced the event
    /// is not cached.
    forgotten: AtomicU64,
    metrics: Arc<Metrics>,
}

impl RedisStore {
    pub fn new(session: &SessionConfig, cluster: &ClusterConfig, metrics: Arc<Metrics>) -> RedisResult<RedisStore> {
        let client = Client::open(cluster.redis_url.as_str())?;
        let mut info = client.get_connection_info().clone();
        info.redis.protocol = ProtocolVersion::RESP3;
        let events_client = Client::open(info)?;
        let local = Cache::builder()
            .max_capacity(session.max_entries)
            .time_to_idle(session.idle_timeout)
            .expire_after(LifetimeExpiry { max_lifetime: session.max_lifetime })
            .eviction_policy(EvictionPolicy::lru())
            .eviction_listener(|_key, pin: Arc<LocalPin>, _cause: RemovalCause| {
                pin.backend.sessions.fetch_sub(1, Relaxed);
            })
            .build();
        let inner = Inner {
            local,
            client,
            events_client,
            conn: OnceCell::new(),
            keys: Keys { prefix: cluster.key_prefix.clone(), channel: format!("{}events", cluster.key_prefix) },
            link: Link::new(metrics.clone()),
            timeout: cluster.redis_timeout,
            idle_timeout: session.idle_timeout,
            max_lifetime: session.max_lifetime,
            refresh_window_ms: (session.idle_timeout / pin::REFRESH_FRACTION).as_millis() as u64,
            instance: rand::random(),
            epoch: AtomicU64::new(0),
            forgotten: AtomicU64::new(0),
            metrics,
        };
        Ok(RedisStore { inner: Arc::new(inner), listener: Mutex::new(None) })
    }

    /// Start the event listener (it reconnects with backoff until `shutdown` flips).
    pub fn start(&self, shutdown: watch::Receiver<bool>) {
        let task = tokio::spawn(events::listen(self.inner.clone(), shutdown));
        if let Some(old) = self.lock_listener().replace(task) {
            old.abort();
        }
    }

    /// Stop the event listener.
    pub fn stop(&self) {
        if let Some(task) = self.lock_listener().take() {
            task.abort();
        }
    }

    fn lock_listener(&self) -> std::sync::MutexGuard<'_, Option<JoinHandle<()>>> {
        // A std Mutex: held for a swap only, never across an await.
        self.listener.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.stop();
    }
}

impl AffinityStore for RedisStore {
    async fn get(&self, key: &str, pool: &Pool) -> Option<Arc<Backend>> {
        let inner = &self.inner;
        if let Some(pin) = inner.local.get(key) {
            let epoch = inner.epoch.load(Relaxed);
            if pin.claim_sync(unix_ms(), inner.refresh_window_ms, epoch) && inner.link.usable() {
                tokio::spawn(inner.clone().sync(key.to_owned(), pin.clone()));
            }
            return Some(pin.backend.clone());
        }
        if !inner.link.usable() {
            return None;
        }
        // Boxed: the miss path's state is large and inline it would make every lookup's future
        // (a hit included) that large to build and move.
        Box::pin(inner.read(key, pool)).await
    }

    async fn pin(&self, key: &str, backend: &Arc<Backend>) {
        let inner = &self.inner;
        let (now, epoch) = (unix_ms(), inner.epoch.load(Relaxed));
        let pin = LocalPin::new(backend.clone(), now, Pending::Replace, now, epoch);
        inner.cache(key, pin.clone());
        if inner.link.usable() && inner.write_replace(key, &pin.value()).await {
            pin.synced(epoch);
        }
    }

    async fn reassign(&self, key: &str, from: &Arc<Backend>, to: &Arc<Backend>, pool: &Pool) -> Arc<Backend> {
        let inner = &self.inner;
        let (now, epoch) = (unix_ms(), inner.epoch.load(Relaxed));
        let ours = LocalPin::new(to.clone(), now, Pending::Replace, now, epoch);
        let moved = if inner.link.usable() { inner.move_pin(key, &from.name, &ours.value()).await } else { None };
        match moved.map(|held| held.as_deref().and_then(PinValue::decode)) {
            // Another instance moved it first: adopt its choice.
            Some(Some(won)) => {
                let winner = resolve(pool, &won.backend);
                inner.cache(key, LocalPin::new(winner.clone(), won.created_ms, Pending::Nothing, now, epoch));
                winner
            }
            Some(None) => {
                ours.synced(epoch);
                inner.cache(key, ours);
                to.clone()
            }
            // Redis unreachable: a reassignment is newer than what Redis holds; written back later.
            None => {
                inner.cache(key, ours);
                to.clone()
            }
        }
    }

    async fn pin_if_absent(&self, key: &str, backend: &Arc<Backend>, pool: &Pool) -> Arc<Backend> {
        let inner = &self.inner;
        let (now, epoch) = (unix_ms(), inner.epoch.load(Relaxed));
        let ours = PinValue { created_ms: now, backend: backend.name.to_string() };
        let held = if inner.link.usable() { inner.set_if_absent(key, &ours).await } else { None };
        match held {
            Some(Some(raw)) => match PinValue::decode(&raw) {
                Some(won) => {
                    let winner =
                        if won.backend == ours.backend { backend.clone() } else { resolve(pool, &won.backend) };
                    inner.cache(key, LocalPin::new(winner.clone(), won.created_ms, Pending::Nothing, now, epoch));
                    winner
                }
                // Not a value of ours under our key: overwrite it on the next sync.
                None => inner.cache_if_absent(key, backend, Pending::Replace, now, epoch),
            },
            // Unpinned between our SET and GET, or Redis unreachable: keep ours for write-back.
            Some(None) | None => inner.cache_if_absent(key, backend, Pending::Create, now, epoch),
        }
    }

    async fn unpin(&self, key: &str) {
        let inner = &self.inner;
        inner.local.invalidate(key);
        if inner.link.usable() {
            inner.delete(key).await;
        }
    }

    fn len(&self) -> u64 {
        self.inner.local.run_pending_tasks();
        self.inner.local.entry_count()
    }
}

impl Inner {
    /// A pin this instance has not cached: read it from Redis (refreshing its idle expiry).
    async fn read(self: &Arc<Self>, key: &str, pool: &Pool) -> Option<Arc<Backend>> {
        let (epoch, forgotten) = (self.epoch.load(Relaxed), self.forgotten.load(Relaxed));
        let raw = self.get_and_expire(key, self.idle_timeout).await?;
        let theirs = PinValue::decode(&raw?)?;
        let now = unix_ms();
        let ttl = pin::ttl(theirs.created_ms, now, self.idle_timeout, self.max_lifetime)?;
        if ttl < self.idle_timeout {
            // The refresh above went past the pin's lifetime: cut it back, off the request path.
            tokio::spawn(self.clone().expire(key.to_owned(), ttl));
        }
        let backend = resolve(pool, &theirs.backend);
        if self.forgotten.load(Relaxed) == forgotten {
            self.cache(key, LocalPin::new(backend.clone(), theirs.created_ms, Pending::Nothing, now, epoch));
        }
        Some(backend)
    }

    /// Background sync of a cached pin: write back what Redis does not know, otherwise
    /// refresh its expiry and check that Redis still agrees.
    async fn sync(self: Arc<Self>, key: String, pin: Arc<LocalPin>) {
        let epoch = self.epoch.load(Relaxed);
        let ours = pin.value();
        let verdict = match pin.pending() {
            Pending::Replace => {
                if self.write_replace(&key, &ours).await {
                    pin.synced(epoch);
                }
                return;
            }
            Pending::Create => Verdict::Missing,
            Pending::Nothing => match self.refresh(&key, &ours).await {
                Some(theirs) => pin::compare(&ours.backend, theirs.as_ref()),
                None => return,
            },
        };
        let verdict = match verdict {
            Verdict::Missing => match self.set_if_absent(&key, &ours).await {
                Some(held) => pin::compare(&ours.backend, held.as_deref().and_then(PinValue::decode).as_ref()),
                None => return,
            },
            v => v,
        };
        match verdict {
            Verdict::Agree => pin.synced(epoch),
            Verdict::Differs => self.drop_cached(&key, &pin),
            // Deleted again between our SET and GET: leave it pending.
            Verdict::Missing => {}
        }
    }

    /// Put a pin in the local cache, replacing any other (the eviction listener uncounts it).
    fn cache(&self, key: &str, pin: Arc<LocalPin>) {
        pin.backend.sessions.fetch_add(1, Relaxed);
        self.local.insert(key.to_owned(), pin);
    }

    /// Cache `backend` for `key` unless a pin is cached already; returns the cached backend.
    fn cache_if_absent(
        &self,
        key: &str,
        backend: &Arc<Backend>,
        pending: Pending,
        now: u64,
        epoch: u64,
    ) -> Arc<Backend> {
        let entry = self.local.entry(key.to_owned()).or_insert_with(|| {
            backend.sessions.fetch_add(1, Relaxed);
            LocalPin::new(backend.clone(), now, pending, now, epoch)
        });
        entry.into_value().backend.clone()
    }

    /// Drop the cached pin of `key` if it is still `pin` (not one cached since).
    fn drop_cached(&self, key: &str, pin: &Arc<LocalPin>) {
        self.local.entry_by_ref(key).and_compute_with(|cached| match cached {
            Some(e) if Arc::ptr_eq(e.value(), pin) => CacheOp::Remove,
            _ => CacheOp::Nop,
        });
    }

    /// Another instance changed `key`: drop our cached pin.
    fn forget(&self, key: &str) {
        self.forgotten.fetch_add(1, Relaxed);
        self.local.invalidate(key);
    }
}

/// The pool's backend of that name, or a detached placeholder (see the module doc).
fn resolve(pool: &Pool, name: &str) -> Arc<Backend> {
    pool.get(name).cloned().unwrap_or_else(|| detached(name))
}

/// A backend that is in no pool: it keeps a pin's name so the proxy can reassign it.
fn detached(name: &str) -> Arc<Backend> {
    let cfg = BackendConfig {
        name: toml::Spanned::new(0..0, name.to_owned()),
        address: BackendAddr::parse("detached.invalid:1").expect("a valid placeholder address"),
        weight: toml::Spanned::new(0..0, 1),
        max_connections: 0,
        state: AdminState::Maint,
        slow_start: Duration::ZERO,
        health: Default::default(),
    };
    Arc::new(Backend::new(&cfg, &HealthConfig::default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> Pool {
        let text = "[[backend]]\nname = \"app1\"\naddress = \"127.0.0.1:1\"\n";
        Pool::new(&crate::config::parse(text, "t").unwrap(), None)
    }

    #[test]
    fn names_resolve_through_the_pool_and_unknown_ones_are_detached() {
        let pool = pool();
        let known = resolve(&pool, "app1");
        assert!(Arc::ptr_eq(&known, &pool.backends()[0]));
        let gone = resolve(&pool, "app9");
        assert_eq!(&*gone.name, "app9");
        assert!(pool.current(&gone).is_none(), "the proxy sees a removed backend and reassigns");
        assert!(!gone.serves_pinned() && !gone.accepts_new());
    }

    #[test]
    fn keys_live_under_the_prefix() {
        let keys = Keys { prefix: "lb:".into(), channel: "lb:events".into() };
        assert_eq!(keys.pin("abc"), "lb:pin:abc");
    }
}
