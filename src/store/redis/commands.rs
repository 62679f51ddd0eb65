//! The Redis commands the store sends, each one call bounded by `cluster.redis_timeout` and
//! reported to the [`Link`](super::link::Link): a failure answers `None` (or `false`) and the
//! caller carries on with its local table. Writes that other instances must hear about go in
//! one Lua script with their PUBLISH, so that events arrive in the order of the writes. Each
//! script names one key (the pin; the channel is an argument, not a key): a Redis Cluster
//! runs it on the pin's node, and refuses the MULTI of a key with PUBLISH that one server
//! would take.

use super::connect::Conn;
use super::events;
use super::pin::{self, Held, PinValue};
use super::{unix_ms, Inner};
use redis::RedisResult;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Move a pin unless it was moved already, and publish the move, atomically. KEYS: the pin
/// (the only key, so that a Redis Cluster runs it on the pin's node). ARGV: the backend name
/// it moves from, the new value, its expiry (ms), the event, the event channel. Returns nil when moved, otherwise the value that holds. A missing pin (expired)
/// or one that is not ours to parse is overwritten.
const MOVE_SCRIPT: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur then
  local sep = string.find(cur, ':', 1, true)
  if sep and string.sub(cur, sep + 1) ~= ARGV[1] then
    return cur
  end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('PUBLISH', ARGV[5], ARGV[4])
return false
"#;

/// Overwrite a pin and publish it. KEYS: the pin. ARGV: the value, its expiry (ms), the
/// channel, the event.
const REPLACE_SCRIPT: &str = r#"
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
"#;

/// Delete a pin and publish it. KEYS: the pin. ARGV: the channel, the event.
const DELETE_SCRIPT: &str = r#"
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1
"#;

impl Inner {
    /// GET the pin and set its expiry to `ttl`, in one round trip; `None` if Redis could not
    /// be asked.
    pub(super) async fn get_and_expire(&self, key: &str, ttl: Duration) -> Option<Option<String>> {
        let redis_key = self.keys.pin(key);
        let mut get = redis::pipe();
        get.get(&redis_key).cmd("PEXPIRE").arg(&redis_key).arg(ttl.as_millis() as u64).ignore();
        let (raw,): (Option<String>,) = self.call(|c| pipe_query(&get, c)).await?;
        Some(raw)
    }

    /// Refresh a cached pin's expiry and read what Redis holds; `None` if Redis could not be
    /// asked.
    pub(super) async fn refresh(&self, key: &str, ours: &PinValue) -> Option<Option<PinValue>> {
        let Some(ttl) = pin::ttl(ours.created_ms, unix_ms(), self.idle_timeout, self.max_lifetime) else {
            return Some(None);
        };
        let raw = self.get_and_expire(key, ttl).await?;
        Some(raw.as_deref().and_then(PinValue::decode))
    }

    /// `SET key value NX PX ttl`, and `GET key` only if a pin held already: what holds
    /// afterwards (`value` if we won, as it is: not read back); `None` if Redis could not be
    /// asked. A new session's id is fresh, so its pin costs Redis one command; a learned id
    /// another instance pinned first costs a second round trip.
    pub(super) async fn set_if_absent(&self, key: &str, value: &PinValue) -> Option<Held> {
        let ttl = pin::ttl(value.created_ms, unix_ms(), self.idle_timeout, self.max_lifetime)?;
        let redis_key = self.keys.pin(key);
        let ours = value.encode();
        // Room for every argument at once (the command's buffers grew four times).
        let mut set = redis::Cmd::with_capacity(6, 3 + redis_key.len() + ours.len() + 4 + 20);
        set.arg("SET").arg(&redis_key).arg(&ours).arg("NX").arg("PX").arg(ttl.as_millis() as u64);
        if self.call(|c| cmd_query::<bool>(&set, c)).await? {
            return Some(Held::Pin(value.clone()));
        }
        let mut get = redis::cmd("GET");
        get.arg(&redis_key);
        self.call(|c| cmd_query::<Option<String>>(&get, c)).await.map(|raw| Held::from_raw(raw.as_deref()))
    }

    /// Overwrite the pin and tell the other instances, atomically (one script) so that the event
    /// order is the write order. True if Redis took it.
    pub(super) async fn write_replace(&self, key: &str, value: &PinValue) -> bool {
        let Some(ttl) = pin::ttl(value.created_ms, unix_ms(), self.idle_timeout, self.max_lifetime) else {
            return false;
        };
        let mut eval = redis::cmd("EVAL");
        eval.arg(REPLACE_SCRIPT)
            .arg(1)
            .arg(self.keys.pin(key))
            .arg(value.encode())
            .arg(ttl.as_millis() as u64)
            .arg(&self.keys.channel)
            .arg(events::encode(events::Op::Pin, self.instance, key));
        self.call(|c| cmd_query::<()>(&eval, c)).await.is_some()
    }

    /// Move the pin from backend `from` to `value` unless another move came first: `Some(None)`
    /// if moved, `Some(Some(v))` with the pin that holds otherwise, `None` if Redis could not
    /// be asked.
    pub(super) async fn move_pin(&self, key: &str, from: &str, value: &PinValue) -> Option<Option<String>> {
        let ttl = pin::ttl(value.created_ms, unix_ms(), self.idle_timeout, self.max_lifetime)?;
        let mut eval = redis::cmd("EVAL");
        eval.arg(MOVE_SCRIPT)
            .arg(1)
            .arg(self.keys.pin(key))
            .arg(from)
            .arg(value.encode())
            .arg(ttl.as_millis() as u64)
            .arg(events::encode(events::Op::Pin, self.instance, key))
            .arg(&self.keys.channel);
        self.call(|c| cmd_query(&eval, c)).await
    }

    /// Delete the pin and tell the other instances.
    pub(super) async fn delete(&self, key: &str) {
        let mut eval = redis::cmd("EVAL");
        eval.arg(DELETE_SCRIPT).arg(1).arg(self.keys.pin(key)).arg(&self.keys.channel).arg(events::encode(
            events::Op::Unpin,
            self.instance,
            key,
        ));
        self.call(|c| cmd_query::<()>(&eval, c)).await;
    }

    pub(super) async fn expire(self: Arc<Self>, key: String, ttl: Duration) {
        let mut cmd = redis::cmd("PEXPIRE");
        cmd.arg(self.keys.pin(&key)).arg(ttl.as_millis() as u64);
        self.call(|c| cmd_query::<()>(&cmd, c)).await;
    }

    /// Run one Redis call bounded by `cluster.redis_timeout`, reporting to the link; `None`
    /// if it failed (a request never fails because of Redis).
    pub(super) async fn call<T, F, Fut>(&self, f: F) -> Option<T>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let attempt = async {
            let conn = self.redis.get().await?;
            match f(conn.clone()).await {
                // Sentinel: the master may have moved; ask the sentinels again and retry once.
                Err(e) if self.redis.topology.should_reconnect(&e) => {
                    self.redis.reset();
                    f(self.redis.get().await?).await
                }
                // The manager answers the first call after a lost connection with that loss and
                // reconnects meanwhile: one more try (within the same time budget) uses the new one.
                Err(e) if is_connection_error(&e) => f(conn.clone()).await,
                other => other,
            }
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok(v)) => {
                self.link.succeeded();
                Some(v)
            }
            Ok(Err(e)) => {
                self.link.failed(&e);
                None
            }
            Err(_) => {
                if self.redis.topology.reconnects_after_silence() {
                    self.redis.reset();
                }
                self.link.failed(&format_args!("no answer within {:?} (cluster.redis_timeout)", self.timeout));
                None
            }
        }
    }
}

async fn pipe_query<T: redis::FromRedisValue>(p: &redis::Pipeline, mut c: Conn) -> RedisResult<T> {
    p.query_async(&mut c).await
}

async fn cmd_query<T: redis::FromRedisValue>(cmd: &redis::Cmd, mut c: Conn) -> RedisResult<T> {
    cmd.query_async(&mut c).await
}

fn is_connection_error(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal()
}
