//! The balancer's shared state: the immutable config snapshot (swapped atomically on
//! reload), the affinity store and the metrics (upstream clients are per worker thread, in
//! `proxy`). One `Arc<Shared>` is handed to every connection; the hot path reads the snapshot
//! with one atomic load.

use crate::balance::Pool;
use crate::config::{self, Config, ConfigError};
use crate::group::Group;
use crate::metrics::Metrics;
use crate::session::SessionPolicy;
use crate::store::Store;
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Everything derived from one config file, never mutated after it is built.
pub struct Snapshot {
    pub config: Config,
    pub pool: Pool,
    pub session: SessionPolicy,
}

impl Snapshot {
    pub fn new(config: Config, previous: Option<&Snapshot>) -> Snapshot {
        let pool = Pool::new(&config, previous.map(|p| &p.pool));
        let session = SessionPolicy::new(&config.session, config.server.tls.is_some());
        Snapshot { config, pool, session }
    }
}

pub struct Shared {
    snapshot: ArcSwap<Snapshot>,
    pub store: Store,
    /// The other instances sharing the store's Redis, and the fleet-wide admin state.
    pub group: Arc<Group>,
    pub metrics: Arc<Metrics>,
    /// The file reloads read; `None` for configs built in code (demo).
    pub config_path: Option<PathBuf>,
    /// Bumped on every successful reload, for tasks that follow the config (health checks,
    /// listeners).
    reloaded: watch::Sender<u64>,
    /// Held while a reload runs: SIGHUP and the admin API may ask at once, and each reload
    /// builds on the snapshot it replaces. A std Mutex: reloads never `.await`.
    reloading: Mutex<()>,
    /// Sockets a reload bound for new listen addresses, until the server's accept loops take
    /// them. Binding before the swap makes a reload whose address cannot be bound fail whole.
    fresh_listeners: Mutex<Vec<(SocketAddr, TcpListener)>>,
    /// `server.max_connections` slots, one per open client connection (an upgraded one,
    /// now a tunnel, included); shutdown drains by taking them all back.
    pub slots: Arc<crate::slots::Slots>,
}

impl Shared {
    pub fn new(config: Config, config_path: Option<PathBuf>) -> Arc<Shared> {
        let metrics = Arc::new(Metrics::default());
        let store = Store::from_config(&config, metrics.clone());
        let group = Arc::new(Group::new(&config, store.redis(), metrics.clone()));
        let slots = crate::slots::Slots::new(config.server.max_connections);
        let snapshot = Snapshot::new(config, None);
        Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(snapshot),
            store,
            group,
            metrics,
            config_path,
            reloaded: watch::channel(0).0,
            reloading: Mutex::new(()),
            fresh_listeners: Mutex::new(Vec::new()),
            slots,
        })
    }

    /// The current snapshot (one atomic load and reference count).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Subscribe to reloads.
    pub fn reloads(&self) -> watch::Receiver<u64> {
        self.reloaded.subscribe()
    }

    /// Re-read the config file; on error the running config stays. Counted in the metrics.
    pub fn reload(&self) -> Result<(), ConfigError> {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
        let result = self.load_and_apply();
        self.metrics.reloaded(result.is_ok());
        result
    }

    fn load_and_apply(&self) -> Result<(), ConfigError> {
        let Some(path) = &self.config_path else {
            return Err(ConfigError::Io { file: "(built-in config)".into(), message: "nothing to reload".into() });
        };
        let config = config::load(path)?;
        let mut fresh = self.fresh_listeners.lock().unwrap_or_else(|e| e.into_inner());
        let mut bound = self.snapshot().config.server.listen.clone();
        bound.extend(fresh.iter().map(|(addr, _)| *addr));
        let new = crate::listen::bind_new(&bound, &config.server.listen).map_err(|(addr, e)| {
            ConfigError::Invalid(vec![format!("{}: server.listen: cannot listen on {addr}: {e}", path.display())])
        })?;
        fresh.extend(new);
        drop(fresh);
        self.apply(config);
        Ok(())
    }

    /// The sockets reloads bound for new listen addresses since the last call.
    pub fn take_fresh_listeners(&self) -> Vec<(SocketAddr, TcpListener)> {
        std::mem::take(&mut *self.fresh_listeners.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Swap in a new validated config.
    pub fn apply(&self, config: Config) {
        let old = self.snapshot();
        if !crate::store::Store::same_limits(&old.config.session, &config.session) {
            tracing::warn!("session table limits changed; they take effect after a restart");
        }
        if !crate::store::Store::same_cluster(&old.config, &config) {
            tracing::warn!("[cluster] settings changed; they take effect after a restart");
        }
        let next = Snapshot::new(config, Some(&old));
        self.snapshot.store(Arc::new(next));
        self.reloaded.send_modify(|n| *n += 1);
        tracing::info!("configuration reloaded");
    }
}

impl Shared {
    /// Let the store run pending evictions so that per-backend session counts are current.
    pub fn store_len_for_metrics(&self) -> u64 {
        use crate::store::AffinityStore;
        self.store.len()
    }
}
