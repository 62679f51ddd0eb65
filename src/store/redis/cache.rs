//! The Redis store's local cache: session key -> [`LocalPin`] in the compact table of the
//! memory store ([`crate::store::table`]: hashed keys, idle expiry, lifetime from the pin's
//! creation, sampled-LRU `session.max_entries` bound), a 24-byte slot a pin in an array kept
//! 70% to 87.5% full (27 to 35 bytes a pin). Backend names are kept as ids ([`Names`]), which also keep each name's
//! session count exact, whatever removed a cached pin.
//!
//! It owns what the store's protocol needs from its cache: deciding on a lookup whether the
//! pin is served, synced in the background or reconciled first (and claiming that), and
//! applying a sync's outcome only to the very pin that was synced (not to one cached for the
//! same session since).

use super::pin::{Check, Epochs, LocalPin, Pending, PinValue};
use crate::config::SessionConfig;
use crate::store::names::Names;
use crate::store::table::{HashKey, Limits, Table};
use std::sync::Arc;

pub(super) struct LocalCache {
    table: Table<Names, LocalPin>,
    /// How long a synced pin is served before its next sync (a quarter of the idle timeout).
    refresh_window_ms: u64,
}

/// A sync of a cached pin that a lookup claimed: what to tell Redis, and which pin it was.
pub(super) struct Claim {
    /// The pin as the claim left it: the sync's outcome applies only while it is unchanged.
    pin: LocalPin,
    backend: Arc<str>,
    created_ms: u64,
}

impl Claim {
    pub fn value(&self) -> PinValue {
        PinValue { created_ms: self.created_ms, backend: self.backend.to_string() }
    }

    pub fn pending(&self) -> Pending {
        self.pin.pending()
    }
}

/// What a lookup found to do besides answering (see [`Check`]).
pub(super) enum Found {
    Serve,
    Sync(Claim),
    Reconcile(Claim),
}

impl LocalCache {
    pub fn new(session: &SessionConfig) -> LocalCache {
        let limits = Limits {
            idle_timeout: session.idle_timeout,
            max_lifetime: session.max_lifetime,
            max_entries: session.max_entries,
        };
        LocalCache {
            table: Table::new(limits, HashKey::random(), Names::default()),
            refresh_window_ms: (session.idle_timeout / super::pin::REFRESH_FRACTION).as_millis() as u64,
        }
    }

    /// The cached backend name of `key` (refreshing the pin's idle expiry), and what this
    /// lookup must do with Redis, claimed (`link_up`: the instance knows Redis is up).
    pub fn get(&self, key: &str, epochs: Epochs, link_up: bool) -> Option<(Arc<str>, Found)> {
        let window = self.refresh_window_ms;
        let (pin, check, at) = self.table.modify(self.table.key(key), |pin, at| {
            let check = pin.check(at, window, epochs, link_up);
            (*pin, check, at)
        })?;
        let backend = self.names().get(pin.backend());
        // The creation time is only needed (and the clock read) when Redis is asked.
        let claim = || Claim { pin, backend: backend.clone(), created_ms: at.created_ms(super::unix_ms()) };
        let found = match check {
            Check::Serve => Found::Serve,
            Check::Sync => Found::Sync(claim()),
            Check::Reconcile => Found::Reconcile(claim()),
        };
        Some((backend, found))
    }

    /// Cache a pin of `key` to `backend` created at `created_ms` (Unix ms; another instance may
    /// have made it earlier), replacing any other. Returns the interned name, and the pin as
    /// cached, to tell it apart from pins cached later (`None` if it was not: its lifetime is
    /// over).
    pub fn put(
        &self,
        key: &str,
        backend: &str,
        created_ms: u64,
        pending: Pending,
        epoch: u64,
    ) -> (Arc<str>, Option<LocalPin>) {
        let (name, id) = self.intern(backend);
        let Some(id) = id else { return (name, None) };
        let pin = LocalPin::new(id, pending, self.table.now(), epoch);
        let cached = self.table.restore(self.table.key(key), pin, created_ms, super::unix_ms());
        (name, cached.then_some(pin))
    }

    /// Cache a new pin of `key` to `backend` (created at `created_ms`, Unix ms; `None`: now)
    /// unless one is cached already; returns the cached backend name (`backend`'s if the
    /// pin's lifetime is over: not cached).
    pub fn put_if_absent(
        &self,
        key: &str,
        backend: &str,
        created_ms: Option<u64>,
        pending: Pending,
        epoch: u64,
    ) -> Arc<str> {
        let (name, id) = self.intern(backend);
        let Some(id) = id else { return name };
        let ours = LocalPin::new(id, pending, self.table.now(), epoch);
        let held = self.table.update_at(self.table.key(key), created_ms, |cached| cached.is_none().then_some(ours));
        held.map_or(name, |pin| self.names().get(pin.backend()))
    }

    /// Redis agrees with `pin` as of `epoch`, if it is still the cached pin of `key`.
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

    /// After a claimed reconciliation: Redis holds `theirs`; cache it in place of the claimed
    /// pin (if that is still the cached one) as in sync as of `epoch`. Returns its name.
    pub fn adopt(&self, key: &str, claim: &Claim, theirs: &PinValue, epoch: u64) -> Arc<str> {
        let (name, id) = self.intern(&theirs.backend);
        if let Some(id) = id {
            let pin = LocalPin::new(id, Pending::Nothing, self.table.now(), epoch);
            let replace = |cached: Option<LocalPin>| (cached == Some(claim.pin)).then_some(pin);
            self.table.update_at(self.table.key(key), Some(theirs.created_ms), replace);
        }
        name
    }

    /// Forget the cached pin of `key`.
    pub fn remove(&self, key: &str) {
        self.table.remove(self.table.key(key));
    }

    /// Live cached pins (sweeps expired ones, at most once a tick).
    pub fn len(&self) -> u64 {
        self.table.len()
    }

    /// Cached pins per backend name.
    pub fn sessions(&self) -> Vec<(Arc<str>, u64)> {
        self.names().sessions()
    }

    /// The interned `name` (without caching anything).
    pub fn interned(&self, name: &str) -> Arc<str> {
        self.names().get(self.names().id(name))
    }

    fn names(&self) -> &Names {
        self.table.counts()
    }

    /// The interned `name` and its compact id; no id (not cached: served through Redis alone)
    /// past 2^16 names, which takes that many distinct backend names seen by one process.
    fn intern(&self, name: &str) -> (Arc<str>, Option<u16>) {
        let id = self.names().id(name);
        let small = u16::try_from(id).ok();
        if small.is_none() {
            tracing::warn!(backend = %name, "over 65536 backend names: not caching this pin locally");
        }
        (self.names().get(id), small)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const EPOCH_1: Epochs = Epochs { now: 1, recovered: 0 };

    fn setup() -> crate::config::Config {
        let text = "[session]\nidle_timeout = \"4s\"\n[[backend]]\nname = \"app1\"\naddress = \"127.0.0.1:1\"\n";
        crate::config::parse(text, "t").unwrap()
    }

    fn sessions(cache: &LocalCache) -> Vec<u64> {
        let all = cache.sessions();
        ["app1", "app2"].iter().map(|n| all.iter().find(|(name, _)| &**name == *n).map_or(0, |&(_, c)| c)).collect()
    }

    fn claim_of(found: Found) -> Option<Claim> {
        match found {
            Found::Sync(c) | Found::Reconcile(c) => Some(c),
            Found::Serve => None,
        }
    }

    #[test]
    fn a_lookup_claims_a_due_sync_once_with_the_pin_as_redis_should_see_it() {
        let cfg = setup();
        let cache = LocalCache::new(&cfg.session);
        let created_ms = super::super::unix_ms() - 60_000;
        cache.put("s", "app2", created_ms, Pending::Create, 1);
        assert_eq!(sessions(&cache), [0, 1]);
        let (b, found) = cache.get("s", EPOCH_1, false).unwrap();
        assert_eq!(&*b, "app2");
        assert!(matches!(found, Found::Serve), "not due yet");
        std::thread::sleep(Duration::from_millis(super::super::pin::RETRY_MS + 70));
        let Found::Sync(claim) = cache.get("s", EPOCH_1, false).unwrap().1 else {
            panic!("pending: retried at the probe pace")
        };
        assert!(matches!(cache.get("s", EPOCH_1, false).unwrap().1, Found::Serve), "claimed once");
        assert_eq!(claim.pending(), Pending::Create);
        let value = claim.value();
        assert_eq!(value.backend, "app2");
        assert!(value.created_ms.abs_diff(created_ms) < 200, "to the tick: {value:?}");
        cache.claim_synced("s", &claim, 1);
        assert_eq!(cache.table.get(cache.table.key("s")).unwrap().pending(), Pending::Nothing);
    }

    #[test]
    fn with_redis_up_an_outage_pin_is_reconciled_and_the_reconciliation_adopts_redis_pin() {
        let cfg = setup();
        let cache = LocalCache::new(&cfg.session);
        let now = super::super::unix_ms();
        cache.put("s", "app1", now, Pending::Create, 1);
        let (b, found) = cache.get("s", EPOCH_1, true).unwrap();
        let Found::Reconcile(claim) = found else { panic!("a pin made during the outage, Redis up") };
        assert_eq!(&*b, "app1");
        let theirs = PinValue { created_ms: now - 5_000, backend: "app2".into() };
        assert_eq!(&*cache.adopt("s", &claim, &theirs, 1), "app2");
        let (b, found) = cache.get("s", EPOCH_1, true).unwrap();
        assert!(matches!((&*b, found), ("app2", Found::Serve)), "in sync now");
        assert_eq!(sessions(&cache), [0, 1]);
        // An outcome for a pin that is not cached any more changes nothing.
        assert_eq!(&*cache.adopt("s", &claim, &PinValue { created_ms: now, backend: "app1".into() }, 1), "app1");
        assert_eq!(&*cache.get("s", EPOCH_1, true).unwrap().0, "app2");
    }

    #[test]
    fn a_sync_outcome_applies_only_to_the_pin_it_synced() {
        let cfg = setup();
        let cache = LocalCache::new(&cfg.session);
        let now = super::super::unix_ms();
        let old = cache.put("s", "app1", now, Pending::Replace, 1).1.unwrap();
        cache.put("s", "app2", now, Pending::Replace, 1);
        cache.synced("s", old, 1);
        assert_eq!(cache.table.get(cache.table.key("s")).unwrap().pending(), Pending::Replace, "not the old pin's");
        let claim = Claim { pin: old, backend: "app1".into(), created_ms: now };
        cache.drop_claimed("s", &claim);
        assert_eq!(cache.len(), 1, "the newer pin stays");
        assert_eq!(sessions(&cache), [0, 1]);
        cache.remove("s");
        assert_eq!((cache.len(), sessions(&cache)), (0, vec![0, 0]));
    }

    #[test]
    fn put_if_absent_keeps_the_cached_pin_and_expired_lifetimes_are_not_cached() {
        let cfg = setup();
        let cache = LocalCache::new(&cfg.session);
        let first = cache.put_if_absent("s", "app1", None, Pending::Create, 1);
        assert_eq!(&*first, "app1");
        assert!(Arc::ptr_eq(&cache.put_if_absent("s", "app2", None, Pending::Create, 1), &first), "interned");
        let long_ago = super::super::unix_ms() - cfg.session.max_lifetime.as_millis() as u64 - 1_000;
        assert_eq!(cache.put("t", "app2", long_ago, Pending::Nothing, 1).1, None);
        assert_eq!(&*cache.put_if_absent("u", "app2", Some(long_ago), Pending::Create, 1), "app2");
        assert_eq!((cache.len(), sessions(&cache)), (1, vec![1, 0]));
        assert!(claim_of(cache.get("s", EPOCH_1, true).unwrap().1).is_some(), "pending: reconciled with Redis up");
    }
}
