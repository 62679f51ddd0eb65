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
//! Locally: a [`cache::LocalCache`], the memory store's compact table holding an 8-byte
//! [`pin::LocalPin`] per session (backend name id, pending write-back, epoch and time of the
//! last sync; the table keeps creation and last use), with the idle timeout, the lifetime from
//! the pin's creation and the `session.max_entries` bound: under 70 bytes a cached pin where
//! moka took over 400. A cached pin is served without asking Redis; once per refresh window (a
//! quarter of the idle timeout) its use syncs it in the background: the Redis expiry is
//! refreshed and the value checked. So a cached pin outlives Redis's by at most that window,
//! and events make reassignments visible at once. The claim of a sync is a check-and-update
//! under the pin's shard lock, so concurrent uses do not both sync it, and a sync's outcome
//! applies only to the pin it claimed, unchanged since (not to one cached meanwhile). Times in
//! the cache are table ticks of 1/16 s: a pin's creation time, which a write-back sends to
//! Redis, is kept to the tick.
//!
//! Concurrency between instances: a new session is pinned with `SET NX` (the loser adopts the
//! winner's pin), and a reassignment is a compare-and-set in one Lua script ("move from the
//! backend I saw, unless someone moved it already", then PUBLISH), so two instances noticing
//! the same dead backend, one of them before it heard the other's event, end with one choice
//! instead of overwriting each other and bouncing the session.
//!
//! Redis down or slow: every call is bounded by `cluster.redis_timeout`; a failure puts the
//! [`link::Link`] down and requests are served from the local table (new pins go there,
//! marked for write-back) with one probe per 500ms. Once the instance knows Redis is up again,
//! a cached pin Redis may disagree with because of the outage (made or moved meanwhile, or
//! last synced before the link came back: [`pin::Epochs`]) is reconciled on its next use
//! *before* that request is routed, within `cluster.redis_timeout`: a new session is written
//! only if Redis has none (another instance's pin wins), a reassignment always (it is newer),
//! and a pin cached from before follows Redis (written back if Redis lost it). So the first
//! request of a session on every instance goes where Redis says. If Redis fails again
//! meanwhile, the request goes by the local pin.
//!
//! Pins are backend names. A name this instance's config does not have (a backend removed
//! here, or one only another instance knows) is still returned: the caller reassigns the
//! session. (Treating it as "no pin" would make `pin_if_absent` adopt the same stale pin on
//! every request, and the session would never be re-pinned.)
//!
//! Per-instance views: `len()` and `sessions()` count the pins in this instance's local cache
//! (the sessions it has seen recently), not all pins in Redis.

mod cache;
mod commands;
mod connect;
mod events;
mod handle;
mod link;
mod pin;

use super::{unix_ms, AffinityStore};
use crate::config::{ClusterConfig, SessionConfig};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
pub use handle::RedisHandle;

use cache::{Claim, Found, LocalCache};
use connect::{Connector, Topology};
use link::Link;
use pin::{Held, Next, Pending, PinValue, Step, Verdict};
use redis::RedisResult;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
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
    /// Put together without `format!` (see [`PinValue::encode`]).
    fn pin(&self, session: &str) -> String {
        let mut key = String::with_capacity(self.prefix.len() + 4 + session.len());
        key.push_str(&self.prefix);
        key.push_str("pin:");
        key.push_str(session);
        key
    }
}

/// What the request path, the background syncs and the event listener share.
struct Inner {
    local: LocalCache,
    /// One server, Sentinel or Cluster ([`connect`]); connects on first use (not at start:
    /// Redis may be down then), then reconnects by itself.
    redis: Connector,
    keys: Keys,
    link: Link,
    timeout: Duration,
    idle_timeout: Duration,
    max_lifetime: Duration,
    /// Identifies this process's own events, which it has applied already.
    instance: u64,
    /// Bumped whenever an event drops a cached pin, so that a Redis read that raced the event
    /// is not cached.
    forgotten: AtomicU64,
    metrics: Arc<Metrics>,
}

impl RedisStore {
    pub fn new(session: &SessionConfig, cluster: &ClusterConfig, metrics: Arc<Metrics>) -> RedisResult<RedisStore> {
        let inner = Inner {
            local: LocalCache::new(session),
            redis: Connector::new(Topology::new(cluster)?),
            keys: Keys { prefix: cluster.key_prefix.clone(), channel: format!("{}events", cluster.key_prefix) },
            link: Link::new(metrics.clone()),
            timeout: cluster.redis_timeout,
            idle_timeout: session.idle_timeout,
            max_lifetime: session.max_lifetime,
            instance: rand::random(),
            forgotten: AtomicU64::new(0),
            metrics,
        };
        Ok(RedisStore { inner: Arc::new(inner), listener: Mutex::new(None) })
    }

    /// Start the event listener (it reconnects with backoff until `shutdown` flips).
    pub fn start(&self, shutdown: Shutdown) {
        let task = tokio::spawn(events::listen(self.inner.clone(), shutdown));
        if let Some(old) = self.lock_listener().replace(task) {
            old.abort();
        }
    }

    /// A handle on the store's connection for the group (membership, fleet-wide state).
    pub fn handle(&self) -> RedisHandle {
        RedisHandle::new(self.inner.clone())
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
    async fn get(&self, key: &str) -> Option<Arc<str>> {
        let inner = &self.inner;
        // The link first: seeing it up, we see the epoch of its recovery (see `link`).
        let up = inner.link.is_up();
        if let Some((backend, found)) = inner.local.get(key, inner.link.epochs(), up) {
            match found {
                Found::Serve => {}
                Found::Sync(claim) => {
                    if inner.link.usable() {
                        tokio::spawn(inner.clone().sync(key.to_owned(), claim));
                    }
                }
                // Boxed, as the miss path below: rare, and large inline.
                Found::Reconcile(claim) => return Some(Box::pin(inner.reconcile(key, claim, backend)).await),
            }
            return Some(backend);
        }
        if !inner.link.usable() {
            return None;
        }
        // Boxed: the miss path's state is large and inline it would make every lookup's future
        // (a hit included) that large to build and move.
        Box::pin(inner.read(key)).await
    }

    async fn pin(&self, key: &str, backend: &str) {
        let inner = &self.inner;
        let (now, epoch) = (unix_ms(), inner.link.epochs().now);
        let usable = inner.link.usable();
        // During an outage a learned pin is written back only if Redis has none: an id is its
        // backend's own, so two instances that learned it elsewhere keep the first one written
        // back (a move, by contrast, is newer than Redis and overwrites: see `reassign`).
        let pending = if usable { Pending::Replace } else { Pending::Create };
        let (_, cached) = inner.local.put(key, backend, now, pending, epoch);
        let ours = PinValue { created_ms: now, backend: backend.to_owned() };
        if usable && inner.write_replace(key, &ours).await {
            if let Some(pin) = cached {
                inner.local.synced(key, pin, epoch);
            }
        }
    }

    async fn reassign(&self, key: &str, from: &str, to: &str) -> Arc<str> {
        let inner = &self.inner;
        let (now, epoch) = (unix_ms(), inner.link.epochs().now);
        let ours = PinValue { created_ms: now, backend: to.to_owned() };
        let moved = if inner.link.usable() { inner.move_pin(key, from, &ours).await } else { None };
        let (name, _) = match moved.map(|held| held.as_deref().and_then(PinValue::decode)) {
            // Another instance moved it first: adopt its choice.
            Some(Some(won)) => inner.local.put(key, &won.backend, won.created_ms, Pending::Nothing, epoch),
            Some(None) => inner.local.put(key, to, now, Pending::Nothing, epoch),
            // Redis unreachable: a reassignment is newer than what Redis holds; written back later.
            None => inner.local.put(key, to, now, Pending::Replace, epoch),
        };
        name
    }

    async fn pin_if_absent(&self, key: &str, backend: &str, created_ms: Option<u64>) -> Arc<str> {
        let inner = &self.inner;
        let (now, epoch) = (unix_ms(), inner.link.epochs().now);
        let ours = PinValue { created_ms: created_ms.map_or(now, |c| c.min(now)), backend: backend.to_owned() };
        if pin::ttl(ours.created_ms, now, inner.idle_timeout, inner.max_lifetime).is_none() {
            // Its lifetime is over: nothing to pin (the local cache would not keep it either).
            return inner.local.put_if_absent(key, backend, Some(ours.created_ms), Pending::Create, epoch);
        }
        let held = if inner.link.usable() { inner.set_if_absent(key, &ours).await } else { None };
        match held {
            Some(Held::Pin(won)) => inner.local.put(key, &won.backend, won.created_ms, Pending::Nothing, epoch).0,
            // Not a value of ours under our key: overwrite it on the next sync.
            Some(Held::Foreign) => inner.local.put_if_absent(key, backend, created_ms, Pending::Replace, epoch),
            // Unpinned between our SET and GET, or Redis unreachable: keep ours for write-back.
            Some(Held::Nothing) | None => inner.local.put_if_absent(key, backend, created_ms, Pending::Create, epoch),
        }
    }

    async fn unpin(&self, key: &str) {
        let inner = &self.inner;
        inner.local.remove(key);
        if inner.link.usable() {
            inner.delete(key).await;
        }
    }

    fn len(&self) -> u64 {
        self.inner.local.len()
    }

    fn sessions(&self) -> Vec<(Arc<str>, u64)> {
        self.inner.local.sessions()
    }
}

impl Inner {
    /// A pin this instance has not cached: read it from Redis (refreshing its idle expiry).
    async fn read(self: &Arc<Self>, key: &str) -> Option<Arc<str>> {
        let (epoch, forgotten) = (self.link.epochs().now, self.forgotten.load(Relaxed));
        let raw = self.get_and_expire(key, self.idle_timeout).await?;
        let theirs = PinValue::decode(&raw?)?;
        let now = unix_ms();
        let ttl = pin::ttl(theirs.created_ms, now, self.idle_timeout, self.max_lifetime)?;
        if ttl < self.idle_timeout {
            // The refresh above went past the pin's lifetime: cut it back, off the request path.
            tokio::spawn(self.clone().expire(key.to_owned(), ttl));
        }
        if self.forgotten.load(Relaxed) != forgotten {
            // An event raced the read: answer it, but do not cache what may be stale already.
            return Some(self.local.interned(&theirs.backend));
        }
        Some(self.local.put(key, &theirs.backend, theirs.created_ms, Pending::Nothing, epoch).0)
    }

    /// A cached pin Redis may disagree with because of an outage, now that Redis is up (see
    /// the module doc): settle it with Redis before answering, within `cluster.redis_timeout`;
    /// `cached` (its backend) if Redis fails again meanwhile.
    async fn reconcile(self: &Arc<Self>, key: &str, claim: Claim, cached: Arc<str>) -> Arc<str> {
        let epoch = self.link.epochs().now;
        let ours = claim.value();
        let settle = async {
            let mut step = pin::reconcile_from(claim.pending());
            loop {
                let held = match step {
                    Step::Offer => self.set_if_absent(key, &ours).await?,
                    Step::Write => self.write_replace(key, &ours).await.then(|| Held::Pin(ours.clone()))?,
                    Step::Read => match self.refresh(key, &ours).await? {
                        Some(theirs) => Held::Pin(theirs),
                        None => Held::Nothing,
                    },
                };
                match pin::reconcile_next(step, &ours.backend, held) {
                    Next::Then(next) => step = next,
                    next => return Some(next),
                }
            }
        };
        let next = match tokio::time::timeout(self.timeout, settle).await {
            Ok(next) => next,
            Err(_) => {
                self.link.failed(&format_args!("reconciling a pin: no answer within {:?}", self.timeout));
                None
            }
        };
        match next {
            Some(Next::Ours) => {
                self.local.claim_synced(key, &claim, epoch);
                cached
            }
            Some(Next::Theirs(theirs)) => self.local.adopt(key, &claim, &theirs, epoch),
            // Redis failed (or lost our pin again): route by ours, still marked unsure.
            Some(Next::Unsure | Next::Then(_)) | None => cached,
        }
    }

    /// Background sync of a cached pin whose use claimed it: write back what Redis does not
    /// know, otherwise refresh its expiry and check that Redis still agrees.
    async fn sync(self: Arc<Self>, key: String, claim: Claim) {
        let epoch = self.link.epochs().now;
        let ours = claim.value();
        let verdict = match claim.pending() {
            Pending::Replace => {
                if self.write_replace(&key, &ours).await {
                    self.local.claim_synced(&key, &claim, epoch);
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
                Some(Held::Pin(theirs)) => pin::compare(&ours.backend, Some(&theirs)),
                Some(Held::Foreign | Held::Nothing) => pin::compare(&ours.backend, None),
                None => return,
            },
            v => v,
        };
        match verdict {
            Verdict::Agree => self.local.claim_synced(&key, &claim, epoch),
            Verdict::Differs => self.local.drop_claimed(&key, &claim),
            // Deleted again between our SET and GET: leave it pending.
            Verdict::Missing => {}
        }
    }

    /// Another instance changed `key`: drop our cached pin.
    fn forget(&self, key: &str) {
        self.forgotten.fetch_add(1, Relaxed);
        self.local.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_live_under_the_prefix() {
        let keys = Keys { prefix: "lb:".into(), channel: "lb:events".into() };
        assert_eq!(keys.pin("abc"), "lb:pin:abc");
    }
}
