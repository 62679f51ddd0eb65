//! The group's background task: announce this instance and read the members every second,
//! read and apply the fleet's admin states every 200 ms, write changes made here, and follow
//! reloads (a new fingerprint; a `state` changed in the file is a fleet-wide change). One task
//! per process, stopped by the shutdown signal (it then deletes its own member entry, so the
//! others see it leave at once rather than after 3 s).

use super::fleet::{self, Stamped, POLL_EVERY, WRITE_SCRIPT};
use super::members::{self, Member, ANNOUNCE_EVERY, ANNOUNCE_SCRIPT, FORGET_AFTER_MS};
use super::{lock, Group, Local};
use crate::config::AdminState;
use crate::shutdown::Shutdown;
use crate::store::RedisHandle;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::watch;
use tokio::time::{interval, MissedTickBehavior};

/// Run until `shutdown`; returns at once with the memory store (there is no group).
pub async fn run(
    group: Arc<Group>,
    local: impl Fn() -> Local + Send + 'static,
    mut reloads: watch::Receiver<u64>,
    mut shutdown: Shutdown,
) {
    let Some(redis) = group.redis.clone() else { return };
    let mut t = Task { keys: Keys::new(redis.prefix()), redis, group, local, file_states: HashMap::new(), seen: None };
    t.file_states = file_states(&(t.local)());
    reloads.borrow_and_update();
    let mut announce = interval(ANNOUNCE_EVERY);
    let mut poll = interval(POLL_EVERY);
    announce.set_missed_tick_behavior(MissedTickBehavior::Delay);
    poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // What the fleet says goes first: a (re)started instance applies it before announcing.
    t.sync_states(&mut reloads).await;
    loop {
        tokio::select! {
            biased;
            _ = shutdown.wait() => break,
            Ok(()) = reloads.changed() => t.reloaded().await,
            _ = t.group.wake.notified() => t.flush().await,
            _ = poll.tick() => t.sync_states(&mut reloads).await,
            _ = announce.tick() => t.announce().await,
        }
    }
    t.leave().await;
}

struct Keys {
    members: String,
    states: String,
}

impl Keys {
    fn new(prefix: &str) -> Keys {
        Keys { members: format!("{prefix}group:members"), states: format!("{prefix}group:state") }
    }
}

struct Task<F> {
    redis: RedisHandle,
    keys: Keys,
    group: Arc<Group>,
    local: F,
    /// Each backend's `state` in the file as last loaded, to tell a reload that changed it.
    file_states: HashMap<String, AdminState>,
    /// Members with a fingerprint unlike ours, already warned about; `None` before the first
    /// announce Redis answered.
    seen: Option<HashSet<(String, String)>>,
}

fn file_states(local: &Local) -> HashMap<String, AdminState> {
    local.file_states.iter().cloned().collect()
}

impl<F: Fn() -> Local> Task<F> {
    async fn announce(&mut self) {
        let card = lock(&self.group.card).clone();
        let Ok(json) = serde_json::to_string(&card) else { return };
        let mut eval = redis::cmd("EVAL");
        eval.arg(ANNOUNCE_SCRIPT).arg(1).arg(&self.keys.members).arg(&self.group.name).arg(json).arg(FORGET_AFTER_MS);
        // Redis unreachable: keep the members last known (and log no leave).
        let Some(answer) = self.redis.query::<Vec<String>>(&eval).await else { return };
        let now = members::parse(&answer);
        let before = std::mem::replace(&mut *lock(&self.group.members), now.clone());
        self.log_changes(&before, &now, &card.config);
        self.group.publish_gauges();
    }

    fn log_changes(&mut self, before: &[Member], now: &[Member], ours: &str) {
        let me = self.group.name.as_str();
        let first = self.seen.is_none();
        let warned = self.seen.get_or_insert_with(HashSet::new);
        if first {
            let names: Vec<&str> = now.iter().map(|m| m.name.as_str()).collect();
            tracing::info!(instance = me, members = ?names, "joined the group");
        } else {
            let (joined, left) = members::changes(before, now, me);
            for m in joined {
                tracing::info!(instance = %m.name, admin = ?m.card.admin, version = %m.card.version, "an instance joined the group");
            }
            for m in left {
                tracing::info!(instance = %m.name, "an instance left the group (silent for 3 s, or stopped)");
            }
        }
        let mismatched: HashSet<(String, String)> =
            now.iter().filter(|m| m.card.config != ours).map(|m| (m.name.clone(), m.card.config.clone())).collect();
        for (name, config) in mismatched.difference(warned) {
            tracing::warn!(
                instance = %name, theirs = %config, ours,
                "an instance of the group has a different config fingerprint (backends, session mode, cookie, secrets or key_prefix differ)"
            );
        }
        *warned = mismatched;
    }

    /// Write pending changes, then read the fleet's states and apply them.
    async fn sync_states(&mut self, reloads: &mut watch::Receiver<u64>) {
        self.flush().await;
        let cmd = redis::cmd("HGETALL").arg(&self.keys.states).clone();
        let Some(stored) = self.redis.query::<HashMap<String, String>>(&cmd).await else { return };
        if reloads.has_changed().unwrap_or(false) {
            // A reload landed meanwhile: its file changes must become pending before this read
            // is applied, or it would undo them for a moment.
            return;
        }
        let stored: Vec<(String, String)> = stored.into_iter().collect();
        let wanted = fleet::merge(&stored, &lock(&self.group.pending));
        for b in (self.local)().backends {
            let Some(w) = wanted.get(&*b.name) else { continue };
            let before = b.state();
            if before != w.state {
                b.set_state(w.state);
                tracing::info!(backend = %b.name, from = before.as_str(), to = w.state.as_str(), by = %w.by, "backend state set fleet-wide");
            }
        }
    }

    /// Write this instance's pending changes (each unless Redis holds a newer one); a change
    /// stays pending while Redis cannot be asked.
    async fn flush(&mut self) {
        let pending: Vec<(String, Stamped)> =
            lock(&self.group.pending).iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for (backend, change) in pending {
            let mut eval = redis::cmd("EVAL");
            eval.arg(WRITE_SCRIPT)
                .arg(1)
                .arg(&self.keys.states)
                .arg(&backend)
                .arg(change.state.as_str())
                .arg(change.stamp_ms)
                .arg(&change.by);
            if self.redis.query::<Option<String>>(&eval).await.is_none() {
                return;
            }
            let mut pending = lock(&self.group.pending);
            if pending.get(&backend) == Some(&change) {
                pending.remove(&backend);
            }
        }
    }

    /// A reload: a new fingerprint, and a `state` the file changed is a fleet-wide change.
    async fn reloaded(&mut self) {
        let local = (self.local)();
        lock(&self.group.card).config = local.fingerprint.clone();
        let now = file_states(&local);
        for (name, state) in &now {
            if self.file_states.get(name).is_some_and(|old| old != state) {
                tracing::info!(backend = %name, to = state.as_str(), "backend state changed in the reloaded file: applied fleet-wide");
                let change = Stamped { state: *state, stamp_ms: crate::store::unix_ms(), by: self.group.name.clone() };
                lock(&self.group.pending).insert(name.clone(), change);
            }
        }
        self.file_states = now;
        self.group.publish_gauges();
        self.flush().await;
    }

    /// Shutting down: delete our entry so the others see us leave now.
    async fn leave(&self) {
        let cmd = redis::cmd("HDEL").arg(&self.keys.members).arg(&self.group.name).clone();
        let _ = self.redis.query::<i64>(&cmd).await;
    }
}
