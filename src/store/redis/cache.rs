//! The Redis store's local cache: session key -> [`LocalPin`] in the compact table of the
//! memory store ([`crate::store::table`]: hashed keys, idle expiry, lifetime from the pin's
//! creation, sampled-LRU `session.max_entries` bound), 28 bytes a pin plus hashbrown's control
//! byte and free space. Backends are kept as ids ([`BackendIds`]), which also keep each
//! backend's session count exact, whatever removed a cached pin.
//!
//! It owns what the store's protocol needs from its cache: claiming a pin's sync on a lookup,
//! and applying a sync's outcome only to the very pin that was synced (not to one cached for
//! the same session since). It also owns the placeholders for backend names the pool does not
//! have, one per name, so that pins to them keep one id each.

use super::pin::{LocalPin, Pending, PinValue};
use crate::balance::{Backend, Pool};
use crate::config::{AdminState, BackendAddr, BackendConfig, HealthConfig, SessionConfig};
use crate::store::backends::BackendIds;
use crate::store::table::{HashKey, Limits, Table};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub(super) struct LocalCache {
    table: Table<BackendIds, LocalPin>,
    /// How long a synced pin is served before its next sync (a quarter of the idle timeout).
    refresh_window_ms: u64,
    /// Placeholders for names the pool does not have, by name (see [`resolve`](Self::resolve)).
    detached: Mutex<HashMap<String, Arc<Backend>>>,
}

/// A sync of a cached pin that a lookup claimed: what to tell Redis, and which pin it was.
pub(super) struct Claim {
    /// The pin as the claim left it: the sync's outcome applies only while it is unchanged.
    pin: LocalPin,
    backend: Arc<Backend>,
    created_ms: u64,
}

impl Claim {
    pub fn value(&self) -> PinValue {
        PinValue { created_ms: self.created_ms, backend: self.backend.name.to_string() }
    }

    pub fn pending(&self) -> Pending {
        self.pin.pending()
    }
}

impl LocalCache {
    pub fn new(session: &SessionConfig) -> LocalCache {
        let limits = Limits {
            idle_timeout: session.idle_timeout,
            max_lifetime: session.max_lifetime,
            max_entries: session.max_entries,
        };
        LocalCache {
            table: Table::new(limits, HashKey::random(), BackendIds::default()),
            refresh_window_ms: (session.idle_timeout / super::pin::REFRESH_FRACTION).as_millis() as u64,
            detached: Mutex::new(HashMap::new()),
        }
    }

    /// The cached backend of `key` (refreshing the pin's idle expiry), and the sync with Redis
    /// this lookup claimed, if one is due (`epoch`: the current subscription epoch).
    pub fn get(&self, key: &str, epoch: u64) -> Option<(Arc<Backend>, Option<Claim>)> {
        let window = self.refresh_window_ms;
        let (pin, claimed) = self.table.modify(self.table.key(key), |pin, at| {
            let claimed = pin.claim_sync(at, window, epoch).then_some(at);
            (*pin, claimed)
        })?;
        let backend = self.ids().get(pin.backend());
        // The creation time is only needed (and the clock read) when a sync goes to Redis.
        let claim =
            claimed.map(|at| Claim { pin, backend: backend.clone(), created_ms: at.created_ms(super::unix_ms()) });
        Some((backend, claim))
    }

    /// Cache a pin of `key` to `backend` created at `created_ms` (Unix ms; another instance may
    /// have made it earlier), replacing any other. Returns the pin as cached, to tell it apart
    /// from pins cached later; `None` if it was not (its lifetime is over).
    pub fn put(
        &self,
        key: &str,
        backend: &Arc<Backend>,
        created_ms: u64,
        pending: Pending,
        epoch: u64,
    ) -> Option<LocalPin> {
        let pin = LocalPin::new(self.id(backend)?, pending, self.table.now(), epoch);
        self.table.restore(self.table.key(key), pin, created_ms, super::unix_ms()).then_some(pin)
    }

    /// Cache a new pin of `key` to `backend` unless one is cached already; returns the cached
    /// backend.
    pub fn put_if_absent(&self, key: &str, backend: &Arc<Backend>, pending: Pending, epoch: u64) -> Arc<Backend> {
        let Some(id) = self.id(backend) else { return backend.clone() };
        let ours = LocalPin::new(id, pending, self.table.now(), epoch);
        let held = self.table.update(self.table.key(key), |cached| cached.is_none().then_some(ours));
        held.map_or_else(|| backend.clone(), |pin| self.ids().get(pin.backend()))
    }

    /// Redis agrees with `pin` as of subscription `epoch`, if it is still the cached pin of `key`.
    pub fn synced(&self, key: &str, pin: LocalPin, epoch: u64) {
        self.table.modify(self.table.key(key), |cached, _| {
            if *cached == pin {
                cached.synced(epoch);
            }
        });
    }

    /// After a claimed sync: Redis agrees with the claimed pin (see [`synced`](Self::synced)).
    pub fn claim_synced(&self, key: &str, claim: &Claim, epoch: u64) {
        self.synced(key, claim.pin, epoch);
    }

    /// After a claimed sync: Redis has another pin; drop ours if it is still the claimed one.
    pub fn drop_claimed(&self, key: &str, claim: &Claim) {
        self.table.remove_if(self.table.key(key), |cached, _| cached == claim.pin);
    }

    /// Forget the cached pin of `key`.
    pub fn remove(&self, key: &str) {
        self.table.remove(self.table.key(key));
    }

    /// Live cached pins (sweeps expired ones, at most once a tick).
    pub fn len(&self) -> u64 {
        self.table.len()
    }

    /// The pool's backend of that name, or the detached placeholder of that name (see the
    /// store's module doc), the same one every time so that its pins keep one id and one count.
    pub fn resolve(&self, pool: &Pool, name: &str) -> Arc<Backend> {
        if let Some(b) = pool.get(name) {
            return b.clone();
        }
        let mut detached = self.detached.lock().unwrap_or_else(|e| e.into_inner());
        detached.entry(name.to_owned()).or_insert_with(|| detached_backend(name)).clone()
    }

    fn ids(&self) -> &BackendIds {
        self.table.counts()
    }

    /// The compact id of `backend`; `None` (not cached: served through Redis alone) past 2^16
    /// backend counters, which takes that many address changes in one process.
    fn id(&self, backend: &Arc<Backend>) -> Option<u16> {
        let id = u16::try_from(self.ids().id(backend)).ok();
        if id.is_none() {
            tracing::warn!(backend = %backend.name, "over 65536 backend counters: not caching this pin locally");
        }
        id
    }
}

/// A backend that is in no pool: it keeps a pin's name so the proxy can reassign it.
fn detached_backend(name: &str) -> Arc<Backend> {
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
    use std::sync::atomic::Ordering::Relaxed;

    fn setup() -> (crate::config::Config, Pool) {
        let text = "[session]\nidle_timeout = \"4s\"\n[[backend]]\nname = \"app1\"\naddress = \"127.0.0.1:1\"\n\
                    [[backend]]\nname = \"app2\"\naddress = \"127.0.0.1:2\"\n";
        let cfg = crate::config::parse(text, "t").unwrap();
        let pool = Pool::new(&cfg, None);
        (cfg, pool)
    }

    fn sessions(pool: &Pool) -> Vec<i64> {
        pool.backends().iter().map(|b| b.sessions.load(Relaxed)).collect()
    }

    #[test]
    fn names_resolve_through_the_pool_and_unknown_ones_to_one_placeholder() {
        let (cfg, pool) = setup();
        let cache = LocalCache::new(&cfg.session);
        let known = cache.resolve(&pool, "app1");
        assert!(Arc::ptr_eq(&known, &pool.backends()[0]));
        let gone = cache.resolve(&pool, "app9");
        assert_eq!(&*gone.name, "app9");
        assert!(pool.current(&gone).is_none(), "the proxy sees a removed backend and reassigns");
        assert!(!gone.serves_pinned() && !gone.accepts_new());
        assert!(Arc::ptr_eq(&gone, &cache.resolve(&pool, "app9")), "one placeholder per name");
    }

    #[test]
    fn a_lookup_claims_a_due_sync_once_with_the_pin_as_redis_should_see_it() {
        let (cfg, pool) = setup();
        let cache = LocalCache::new(&cfg.session);
        let created_ms = super::super::unix_ms() - 60_000;
        cache.put("s", &pool.backends()[1], created_ms, Pending::Create, 1);
        assert_eq!(sessions(&pool), [0, 1]);
        let (b, claim) = cache.get("s", 1).unwrap();
        assert_eq!(&*b.name, "app2");
        assert!(claim.is_none(), "not due yet");
        std::thread::sleep(Duration::from_millis(super::super::pin::RETRY_MS + 70));
        let claim = cache.get("s", 1).unwrap().1.expect("pending: retried at the probe pace");
        assert!(cache.get("s", 1).unwrap().1.is_none(), "claimed once");
        assert_eq!(claim.pending(), Pending::Create);
        let value = claim.value();
        assert_eq!(value.backend, "app2");
        assert!(value.created_ms.abs_diff(created_ms) < 200, "to the tick: {value:?}");
        cache.claim_synced("s", &claim, 1);
        assert_eq!(cache.table.get(cache.table.key("s")).unwrap().pending(), Pending::Nothing);
    }

    #[test]
    fn a_sync_outcome_applies_only_to_the_pin_it_synced() {
        let (cfg, pool) = setup();
        let (app1, app2) = (&pool.backends()[0], &pool.backends()[1]);
        let cache = LocalCache::new(&cfg.session);
        let now = super::super::unix_ms();
        let old = cache.put("s", app1, now, Pending::Replace, 1).unwrap();
        cache.put("s", app2, now, Pending::Replace, 1);
        cache.synced("s", old, 1);
        assert_eq!(cache.table.get(cache.table.key("s")).unwrap().pending(), Pending::Replace, "not the old pin's");
        let claim = Claim { pin: old, backend: app1.clone(), created_ms: now };
        cache.drop_claimed("s", &claim);
        assert_eq!(cache.len(), 1, "the newer pin stays");
        assert_eq!(sessions(&pool), [0, 1]);
        cache.remove("s");
        assert_eq!((cache.len(), sessions(&pool)), (0, vec![0, 0]));
    }

    #[test]
    fn put_if_absent_keeps_the_cached_pin_and_expired_lifetimes_are_not_cached() {
        let (cfg, pool) = setup();
        let (app1, app2) = (&pool.backends()[0], &pool.backends()[1]);
        let cache = LocalCache::new(&cfg.session);
        assert!(Arc::ptr_eq(&cache.put_if_absent("s", app1, Pending::Create, 1), app1));
        assert!(Arc::ptr_eq(&cache.put_if_absent("s", app2, Pending::Create, 1), app1));
        let long_ago = super::super::unix_ms() - cfg.session.max_lifetime.as_millis() as u64 - 1_000;
        assert_eq!(cache.put("t", app2, long_ago, Pending::Nothing, 1), None);
        assert_eq!((cache.len(), sessions(&pool)), (1, vec![1, 0]));
    }
}
