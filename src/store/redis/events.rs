//! Group communication between instances: the `{key_prefix}events` pub/sub channel.
//!
//! An instance that moves a session to another backend (or forgets it) publishes an event;
//! every other instance drops its cached pin for that session at once, so its next request
//! reads the new pin from Redis instead of routing to the backend the session was moved away
//! from. New pins are not published: nobody can have cached a pin that did not exist.
//!
//! The listener is one background task with its own connection (RESP3, so subscription
//! messages arrive as push messages next to a PING that detects a dead connection). When the
//! connection is lost it reconnects with exponential backoff and resubscribes; events sent
//! meanwhile are lost, so a successful (re)subscription starts a new *epoch*: every cached pin
//! from an older epoch is verified against Redis on its next use.

use super::Inner;
use crate::shutdown::Shutdown;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, PushInfo, PushKind, Value};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

/// First and longest pause between reconnection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often the listener checks that its connection is alive.
const PING_EVERY: Duration = Duration::from_secs(5);
/// Budget for connecting and subscribing (background only: no request waits on it).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// What happened to a session, as published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    /// Moved to another backend.
    Pin,
    /// Forgotten.
    Unpin,
}

/// `"{op} {instance:016x} {session key}"`: the key comes last because it may contain spaces.
pub(super) fn encode(op: Op, instance: u64, key: &str) -> String {
    let op = match op {
        Op::Pin => "pin",
        Op::Unpin => "unpin",
    };
    format!("{op} {instance:016x} {key}")
}

/// The sender and session of an event; `None` for anything else.
pub(super) fn decode(payload: &str) -> Option<(Op, u64, &str)> {
    let (op, rest) = payload.split_once(' ')?;
    let (instance, key) = rest.split_once(' ')?;
    let op = match op {
        "pin" => Op::Pin,
        "unpin" => Op::Unpin,
        _ => return None,
    };
    Some((op, u64::from_str_radix(instance, 16).ok()?, key))
}

/// The pause before reconnection attempt `attempt` (0-based): doubling from [`BACKOFF_MIN`]
/// up to [`BACKOFF_MAX`], less up to a quarter at random so that instances do not retry in
/// step.
pub(super) fn backoff(attempt: u32, jitter: f64) -> Duration {
    let full = BACKOFF_MIN.saturating_mul(1 << attempt.min(16)).min(BACKOFF_MAX);
    full.mul_f64(1.0 - 0.25 * jitter.clamp(0.0, 1.0))
}

/// The listener task: subscribe, apply events, reconnect after losses; returns on shutdown.
pub(super) async fn listen(inner: Arc<Inner>, mut shutdown: Shutdown) {
    let mut attempt = 0u32;
    loop {
        let subscribed = tokio::select! {
            r = subscribe(&inner, attempt) => r,
            _ = shutdown.wait() => return,
        };
        match subscribed {
            Ok((conn, pushes)) => {
                // Events published while we were not listening are lost: re-verify cached pins.
                inner.link.resubscribed();
                if attempt > 0 {
                    tracing::info!(
                        "Redis event channel subscribed again; cached pins are re-verified as they are used"
                    );
                }
                attempt = 0;
                let why = tokio::select! {
                    why = pump(&inner, conn, pushes) => why,
                    _ = shutdown.wait() => return,
                };
                inner.link.failed(&format_args!("event subscription lost: {why}"));
            }
            Err(e) if attempt == 0 => inner.link.failed(&format_args!("cannot subscribe to the event channel: {e}")),
            Err(e) => {
                inner.metrics.store_errors.fetch_add(1, Relaxed);
                tracing::debug!(error = %e, attempt, "Redis event channel: still cannot subscribe");
            }
        }
        let pause = backoff(attempt, rand::random());
        attempt = attempt.saturating_add(1);
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.wait() => return,
        }
    }
}

/// A connection subscribed to the event channel, and its push messages.
async fn subscribe(
    inner: &Inner,
    attempt: u32,
) -> redis::RedisResult<(MultiplexedConnection, UnboundedReceiver<PushInfo>)> {
    let (tx, rx) = unbounded_channel();
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(CONNECT_TIMEOUT)
        .set_response_timeout(CONNECT_TIMEOUT)
        .set_push_sender(tx);
    let attempt = async {
        let client = inner.redis.topology.events_client(attempt).await?;
        let mut conn = client.get_multiplexed_async_connection_with_config(&config).await?;
        conn.subscribe(&inner.keys.channel).await?;
        Ok((conn, rx))
    };
    tokio::time::timeout(CONNECT_TIMEOUT, attempt).await.unwrap_or_else(|_| Err(timed_out()))
}

/// Apply events until the connection is lost; returns why it ended.
async fn pump(inner: &Inner, mut conn: MultiplexedConnection, mut pushes: UnboundedReceiver<PushInfo>) -> String {
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    loop {
        tokio::select! {
            push = pushes.recv() => match push {
                None => return "connection closed".into(),
                Some(p) if p.kind == PushKind::Disconnection => return "disconnected".into(),
                Some(p) if p.kind == PushKind::Message => apply(inner, &p.data),
                Some(_) => {}
            },
            _ = ping.tick() => {
                let pong = tokio::time::timeout(CONNECT_TIMEOUT, redis::cmd("PING").query_async::<()>(&mut conn)).await;
                match pong {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return format!("ping failed: {e}"),
                    Err(_) => return "ping timed out".into(),
                }
            }
        }
    }
}

/// One message `[channel, payload]`: drop the cached pin unless we sent it ourselves.
fn apply(inner: &Inner, data: &[Value]) {
    let Some(Value::BulkString(payload)) = data.get(1) else { return };
    let Some((op, sender, key)) = std::str::from_utf8(payload).ok().and_then(decode) else {
        tracing::debug!("ignoring a malformed event on the Redis event channel");
        return;
    };
    if sender != inner.instance {
        inner.forget(key);
        tracing::trace!(?op, key, "session changed on another instance; cached pin dropped");
    }
}

fn timed_out() -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_with_spaces_in_keys() {
        let e = encode(Op::Pin, 0xdead_beef, "a session key");
        assert_eq!(e, "pin 00000000deadbeef a session key");
        assert_eq!(decode(&e), Some((Op::Pin, 0xdead_beef, "a session key")));
        assert_eq!(decode(&encode(Op::Unpin, u64::MAX, "k")), Some((Op::Unpin, u64::MAX, "k")));
        for bad in ["", "pin", "pin 12", "move 12 k", "pin zz k"] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_a_cap_with_bounded_jitter() {
        assert_eq!(backoff(0, 0.0), BACKOFF_MIN);
        assert_eq!(backoff(1, 0.0), BACKOFF_MIN * 2);
        assert_eq!(backoff(30, 0.0), BACKOFF_MAX);
        assert_eq!(backoff(30, 1.0), BACKOFF_MAX.mul_f64(0.75));
    }
}
