//! A small handle on the store's Redis connection for other parts of the process (the group:
//! membership and fleet-wide admin state), so that they share the store's connection (one
//! multiplexed connection, Sentinel or Cluster routing included), its timeout and its view of
//! whether Redis is up, instead of opening connections of their own.
//!
//! Calls through the handle follow the request path's rules: while the link is down only the
//! probe slot may try Redis, each call is bounded by `cluster.redis_timeout`, and a failure
//! puts the link down (and counts in `stickylb_store_errors_total`).

use super::Inner;
use redis::FromRedisValue;
use std::sync::Arc;

/// Cheap to clone; keeps the store's shared state alive.
#[derive(Clone)]
pub struct RedisHandle {
    inner: Arc<Inner>,
}

impl RedisHandle {
    pub(super) fn new(inner: Arc<Inner>) -> RedisHandle {
        RedisHandle { inner }
    }

    /// `cluster.key_prefix`.
    pub fn prefix(&self) -> &str {
        &self.inner.keys.prefix
    }

    /// The last call to Redis succeeded.
    pub fn is_up(&self) -> bool {
        self.inner.link.is_up()
    }

    /// Run one command; `None` if Redis could not be asked now (link down and not our turn to
    /// probe, an error, or no answer in time).
    pub async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Option<T> {
        if !self.inner.link.usable() {
            return None;
        }
        self.inner.call(|mut c| async move { cmd.query_async(&mut c).await }).await
    }
}
