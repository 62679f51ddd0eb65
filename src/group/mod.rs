//! The group: the instances that share one Redis, seen from this one.
//!
//! This module owns three things: **membership** (every instance announces itself every
//! second; one silent for 3 s has left; joins and leaves are logged: `members`), the
//! **config fingerprint** that tells whether the members agree on what they must share
//! (`fingerprint`), and the **fleet-wide admin state** of backends (a drain
//! on one instance holds on all: `fleet`). The admin API reads [`Group::report`] and tells
//! [`Group::changed`]; [`run`] is the background task that talks to Redis.
//!
//! It uses the store's Redis connection through [`RedisHandle`] (so Sentinel and Cluster
//! routing, the timeout and the up/down view are the store's) and writes only a backend's
//! admin state (`balance::Backend::set_state`) and the two group gauges in `metrics`. It must
//! not import `state`, `admin`, `proxy`, `sticky` or `server`: the caller hands it the current
//! backends and config as a [`Local`] through a closure. With the memory store there is no
//! group: `members` is this instance alone and admin state stays per instance.

mod fingerprint;
mod fleet;
mod members;
mod task;

pub use fingerprint::fingerprint;
pub use members::{Card, Member};
pub use task::run;

use crate::balance::Backend;
use crate::config::{AdminState, Config};
use crate::metrics::Metrics;
use crate::store::RedisHandle;
use fleet::Stamped;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// What the group task needs to know of the running config, read again whenever it needs it
/// (the caller builds it from the current snapshot).
pub struct Local {
    /// The backends of the current pool.
    pub backends: Vec<Arc<Backend>>,
    /// Each backend's `state` as the file says.
    pub file_states: Vec<(String, AdminState)>,
    /// [`fingerprint`] of the current config.
    pub fingerprint: String,
}

/// This instance's membership and what it knows of the others.
pub struct Group {
    name: String,
    /// None with the memory store.
    redis: Option<RedisHandle>,
    /// What this instance announces; its fingerprint follows reloads. A std Mutex, as the
    /// ones below: held for a copy or an insert, never across an `.await`.
    card: Mutex<Card>,
    /// The members as of the last announce (this instance included once Redis answered).
    members: Mutex<Vec<Member>>,
    /// Admin state changes made here that Redis has not taken yet (see `fleet`).
    pending: Mutex<HashMap<String, Stamped>>,
    /// Wakes the task when a change is pending.
    wake: Notify,
    metrics: Arc<Metrics>,
}

/// `GET /api/cluster`.
#[derive(Debug, Serialize)]
pub struct Report {
    #[serde(rename = "self")]
    pub me: String,
    pub store: &'static str,
    /// `up` while the last call to Redis succeeded; `down` otherwise and with the memory store.
    pub redis: &'static str,
    /// Every member's fingerprint equals this instance's.
    pub consistent: bool,
    pub members: Vec<Member>,
}

impl Group {
    pub fn new(config: &Config, redis: Option<RedisHandle>, metrics: Arc<Metrics>) -> Group {
        let card = Card {
            admin: config.admin.listen.map(|a| a.to_string()),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            config: fingerprint(config),
            started: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        };
        let group = Group {
            name: instance_name(config),
            redis,
            card: Mutex::new(card),
            members: Mutex::new(Vec::new()),
            pending: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            metrics,
        };
        group.publish_gauges();
        group
    }

    /// This instance's name in the group.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A backend's admin state was changed here (admin API) and applied locally: make it
    /// fleet-wide. Nothing to do with the memory store.
    pub fn changed(&self, backend: &str, state: AdminState) {
        if self.redis.is_none() {
            return;
        }
        let change = Stamped { state, stamp_ms: crate::store::unix_ms(), by: self.name.clone() };
        lock(&self.pending).insert(backend.to_owned(), change);
        self.wake.notify_one();
    }

    /// The group as this instance sees it (members sorted by name, this one always listed).
    pub fn report(&self) -> Report {
        let card = lock(&self.card).clone();
        let mut members = match self.redis {
            Some(_) => lock(&self.members).clone(),
            None => Vec::new(),
        };
        match members.iter_mut().find(|m| m.name == self.name) {
            Some(me) => me.card = card.clone(),
            None => {
                members.push(Member { name: self.name.clone(), card: card.clone(), last_seen_ms: 0 });
                members.sort_by(|a, b| a.name.cmp(&b.name));
            }
        }
        let up = self.redis.as_ref().is_some_and(RedisHandle::is_up);
        Report {
            me: self.name.clone(),
            store: if self.redis.is_some() { "redis" } else { "memory" },
            redis: if up { "up" } else { "down" },
            consistent: members.iter().all(|m| m.card.config == card.config),
            members,
        }
    }

    /// `stickylb_cluster_members` and `stickylb_cluster_config_consistent` from the report.
    fn publish_gauges(&self) {
        let r = self.report();
        self.metrics.cluster_members.store(r.members.len() as i64, Relaxed);
        self.metrics.cluster_config_consistent.store(i64::from(r.consistent), Relaxed);
    }
}

/// `cluster.instance_name`, or the host name and the first listen port.
fn instance_name(config: &Config) -> String {
    if !config.cluster.instance_name.is_empty() {
        return config.cluster.instance_name.clone();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "localhost".into());
    match config.server.listen.first() {
        Some(addr) => format!("{host}:{}", addr.port()),
        None => host,
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:8123\"\n{extra}\n[[backend]]\nname = \"a\"\naddress = \"127.0.0.1:9\"\n"
        );
        crate::config::parse(&text, "t").unwrap()
    }

    #[test]
    fn the_default_name_is_the_host_and_the_first_listen_port() {
        assert!(instance_name(&config("")).ends_with(":8123"));
        assert_eq!(instance_name(&config("[cluster]\ninstance_name = \"lb-1\"")), "lb-1");
    }

    #[test]
    fn with_the_memory_store_the_group_is_this_instance_alone_and_consistent() {
        let metrics = Arc::new(Metrics::default());
        let g = Group::new(&config("[cluster]\ninstance_name = \"solo\""), None, metrics.clone());
        g.changed("a", AdminState::Drain);
        assert!(lock(&g.pending).is_empty(), "nothing to share");
        let r = g.report();
        assert_eq!((r.me.as_str(), r.store, r.redis, r.consistent), ("solo", "memory", "down", true));
        assert_eq!(r.members.len(), 1);
        assert_eq!(r.members[0].card.config, fingerprint(&config("[cluster]\ninstance_name = \"x\"")));
        assert_eq!(metrics.cluster_members.load(Relaxed), 1);
        assert_eq!(metrics.cluster_config_consistent.load(Relaxed), 1);
    }
}
