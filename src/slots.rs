//! Connection slots: the `server.max_connections` limit, shared by every worker thread, and
//! what happens at it. A slot is a semaphore permit held for a client connection's life (an
//! upgraded connection's tunnel keeps it). At the limit, a new connection evicts the oldest
//! connection that has not sent a complete request head yet (slow or idle-before-first-request
//! clients, as slowloris opens them), so that normal clients are still answered; connections
//! that have started a request are never evicted. At shutdown the slots are the drain counter.
//!
//! The registry of connections is touched when a connection opens and closes, never per
//! request (a request only sets its connection's `started` flag). It imports nothing else of
//! the crate.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

pub struct Slots {
    permits: Arc<Semaphore>,
    max: usize,
    /// Open connections by age (ids increase), for eviction.
    open: Mutex<BTreeMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
}

/// One open connection as the slots see it.
#[derive(Debug, Default)]
pub struct Conn {
    /// A complete request head arrived: never evicted.
    started: AtomicBool,
    evicted: AtomicBool,
    evict: Notify,
}

impl Conn {
    /// A request head was read on this connection.
    pub fn started(&self) {
        if !self.started.load(Relaxed) {
            self.started.store(true, Relaxed);
        }
    }

    /// Resolves when the connection is evicted to make room.
    pub async fn evicted(&self) {
        self.evict.notified().await
    }
}

/// A connection's hold on its slot: the permit, and its entry in the registry (removed on drop).
pub struct Held {
    pub permit: OwnedSemaphorePermit,
    pub conn: Arc<Conn>,
    id: u64,
    slots: Arc<Slots>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.slots.lock().remove(&self.id);
    }
}

impl Slots {
    pub fn new(max: usize) -> Arc<Slots> {
        Arc::new(Slots {
            permits: Arc::new(Semaphore::new(max)),
            max,
            open: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Conn>>> {
        // A std Mutex: held for a map operation only, never across an await.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for a newly accepted connection: at once if one is free; at the limit, after
    /// evicting the oldest connection that has not started a request (if any; else it waits
    /// for a slot to free). `None` once the slots are closed (shutdown).
    pub async fn acquire(self: &Arc<Self>) -> Option<Held> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(tokio::sync::TryAcquireError::Closed) => return None,
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                self.evict_one();
                self.permits.clone().acquire_owned().await.ok()?
            }
        };
        let id = self.next_id.fetch_add(1, Relaxed);
        let conn = Arc::new(Conn::default());
        self.lock().insert(id, conn.clone());
        Some(Held { permit, conn, id, slots: self.clone() })
    }

    /// Ask the oldest connection that has not sent a complete head to close. Returns whether
    /// one was found.
    fn evict_one(&self) -> bool {
        let open = self.lock();
        let victim = open.values().find(|c| !c.started.load(Relaxed) && !c.evicted.swap(true, Relaxed));
        match victim {
            Some(c) => {
                c.evict.notify_one();
                true
            }
            None => false,
        }
    }

    /// Connections open now (tunnels included).
    pub fn open(&self) -> usize {
        self.max - self.permits.available_permits()
    }

    /// Wait until every connection has finished, at most `timeout`; the slots are given back
    /// at once, so that every worker thread can wait the same way.
    pub async fn drain(&self, timeout: Duration) -> bool {
        let all = u32::try_from(self.max).unwrap_or(u32::MAX);
        match tokio::time::timeout(timeout, self.permits.acquire_many(all)).await {
            Ok(Ok(permits)) => {
                drop(permits);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn at_the_limit_the_oldest_connection_without_a_request_is_evicted() {
        let slots = Slots::new(3);
        let a = slots.acquire().await.unwrap();
        let b = slots.acquire().await.unwrap();
        let c = slots.acquire().await.unwrap();
        a.conn.started();
        assert_eq!(slots.open(), 3);
        let (slots2, b_conn) = (slots.clone(), b.conn.clone());
        let waiting = tokio::spawn(async move { slots2.acquire().await.map(|h| h.conn.started.load(Relaxed)) });
        // b (the oldest that never started a request) is told to go; a, which did, is not.
        tokio::time::timeout(Duration::from_secs(1), b_conn.evicted()).await.expect("b evicted");
        assert!(!a.conn.evicted.load(Relaxed) && !c.conn.evicted.load(Relaxed));
        drop(b);
        assert_eq!(waiting.await.unwrap(), Some(false), "the new connection got b's slot");
        drop((a, c));
    }

    #[tokio::test]
    async fn with_every_connection_busy_a_new_one_waits_for_a_slot() {
        let slots = Slots::new(1);
        let a = slots.acquire().await.unwrap();
        a.conn.started();
        assert!(!slots.evict_one());
        let slots2 = slots.clone();
        let waiting = tokio::spawn(async move { slots2.acquire().await.is_some() });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        drop(a);
        assert!(waiting.await.unwrap());
    }

    #[tokio::test]
    async fn drain_gives_the_slots_back_for_the_next_waiter() {
        let slots = Slots::new(2);
        assert!(slots.drain(Duration::from_millis(50)).await);
        assert!(slots.drain(Duration::from_millis(50)).await, "a second worker drains too");
        let held = slots.acquire().await.unwrap();
        assert!(!slots.drain(Duration::from_millis(20)).await, "an open connection times the drain out");
        assert_eq!(slots.open(), 1);
        drop(held);
    }
}
