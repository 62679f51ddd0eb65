//! Connection slots: the `server.max_connections` limit, shared by every worker thread, and
//! what happens at it. A slot is a semaphore permit held for a client connection's life (an
//! upgraded connection's tunnel keeps it). At the limit, a new connection evicts the oldest
//! connection that has not sent a complete request head yet (slow or idle-before-first-request
//! clients, as slowloris opens them), so that normal clients are still answered; connections
//! that have started a request are never evicted, nor are those younger than
//! [`EVICTION_GRACE`]: those have not had the time to be slow (their head may be on its way), and
//! evicting them would let a burst of new connections close each other before any is served.
//! At shutdown the slots are the drain counter.
//!
//! The registry of connections is touched when a connection opens and closes, never per
//! request (a request only sets its connection's `started` flag). It imports nothing else of
//! the crate.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// How long a connection may go without a complete request head before a new connection may
/// take its place at the limit: a round trip or two for a distant client (its TLS handshake
/// included), well under the second within which a normal client is answered while slow ones
/// hold every slot.
pub const EVICTION_GRACE: Duration = Duration::from_millis(250);
/// How long a connection waiting at the limit waits for a slot before it looks for a connection
/// to evict again.
const ASK_AGAIN: Duration = Duration::from_millis(100);

pub struct Slots {
    permits: Arc<Semaphore>,
    max: usize,
    /// Open connections by age (ids increase), for eviction.
    open: Mutex<BTreeMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
}

/// One open connection as the slots see it.
#[derive(Debug)]
pub struct Conn {
    opened: Instant,
    /// A complete request head arrived: never evicted.
    started: AtomicBool,
    evicted: AtomicBool,
    evict: Notify,
}

/// What [`Slots::evict_one`] did.
#[derive(Debug, PartialEq, Eq)]
enum Eviction {
    /// Asked the oldest connection without a request to close.
    Asked,
    /// The oldest connection without a request is younger than the grace: ask again after this.
    After(Duration),
    /// Every connection has started a request (or was asked already).
    NoneToAsk,
}

impl Conn {
    fn new(opened: Instant) -> Conn {
        Conn { opened, started: AtomicBool::new(false), evicted: AtomicBool::new(false), evict: Notify::new() }
    }

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
    /// evicting the oldest connection that has not started a request (if any, once it is
    /// older than [`EVICTION_GRACE`]; else it waits for a slot to free), looking again every
    /// 100 ms while it waits. `None` once the slots are closed (shutdown).
    pub async fn acquire(self: &Arc<Self>) -> Option<Held> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(tokio::sync::TryAcquireError::Closed) => return None,
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                // One wait for the whole time, so that this connection keeps its place in the
                // queue. The slot an eviction frees goes to the first waiter, which may be
                // another connection's: without a slot by then, ask again (another connection
                // may be old enough, or have come, by then).
                let acquire = self.permits.clone().acquire_owned();
                tokio::pin!(acquire);
                loop {
                    let wait = match self.evict_one(Instant::now()) {
                        Eviction::After(young) => young,
                        Eviction::Asked | Eviction::NoneToAsk => ASK_AGAIN,
                    };
                    tokio::select! {
                        p = &mut acquire => break p.ok()?,
                        () = tokio::time::sleep(wait) => {}
                    }
                }
            }
        };
        let id = self.next_id.fetch_add(1, Relaxed);
        let conn = Arc::new(Conn::new(Instant::now()));
        self.lock().insert(id, conn.clone());
        Some(Held { permit, conn, id, slots: self.clone() })
    }

    /// Ask the oldest connection that has not sent a complete head to close, if it is older
    /// than [`EVICTION_GRACE`] at `now`.
    fn evict_one(&self, now: Instant) -> Eviction {
        let open = self.lock();
        // Ids follow the order of opening: the first candidate is the oldest.
        let Some(c) = open.values().find(|c| !c.started.load(Relaxed) && !c.evicted.load(Relaxed)) else {
            return Eviction::NoneToAsk;
        };
        let age = now.saturating_duration_since(c.opened);
        if age < EVICTION_GRACE {
            return Eviction::After(EVICTION_GRACE - age);
        }
        // Set under the registry's lock: no other eviction asks it too.
        c.evicted.store(true, Relaxed);
        c.evict.notify_one();
        Eviction::Asked
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
        tokio::time::timeout(Duration::from_secs(5), b_conn.evicted()).await.expect("b evicted");
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
        assert_eq!(slots.evict_one(Instant::now() + EVICTION_GRACE), Eviction::NoneToAsk);
        let slots2 = slots.clone();
        let waiting = tokio::spawn(async move { slots2.acquire().await.is_some() });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        drop(a);
        assert!(waiting.await.unwrap());
    }

    #[tokio::test]
    async fn a_connection_younger_than_the_grace_is_asked_to_go_only_once_it_is_older() {
        let ms = Duration::from_millis;
        let slots = Slots::new(1);
        let a = slots.acquire().await.unwrap();
        let opened = a.conn.opened;
        assert_eq!(slots.evict_one(opened + ms(100)), Eviction::After(EVICTION_GRACE - ms(100)));
        assert!(!a.conn.evicted.load(Relaxed), "a connection whose head may be on its way stays");
        assert_eq!(slots.evict_one(opened + EVICTION_GRACE), Eviction::Asked);
        assert!(a.conn.evicted.load(Relaxed));
        assert_eq!(slots.evict_one(opened + EVICTION_GRACE), Eviction::NoneToAsk, "asked once");
    }

    #[tokio::test]
    async fn a_new_connection_at_the_limit_takes_the_place_of_a_young_one_once_it_has_aged() {
        let slots = Slots::new(1);
        let a = slots.acquire().await.unwrap();
        let (slots2, a_conn) = (slots.clone(), a.conn.clone());
        let waiting = tokio::spawn(async move { slots2.acquire().await.is_some() });
        tokio::time::timeout(Duration::from_secs(5), a_conn.evicted()).await.expect("evicted once old enough");
        assert!(a_conn.opened.elapsed() >= EVICTION_GRACE, "evicted after {:?}", a_conn.opened.elapsed());
        drop(a);
        assert!(waiting.await.unwrap(), "the new connection got the slot");
    }

    #[tokio::test]
    async fn a_waiter_whose_freed_slot_went_to_another_asks_the_next_connection_to_go() {
        let slots = Slots::new(2);
        let a = slots.acquire().await.unwrap();
        let b = slots.acquire().await.unwrap();
        tokio::time::sleep(EVICTION_GRACE).await;
        // Another waiter, first in the semaphore's queue, that asks no connection to go itself.
        let other = tokio::spawn(slots.permits.clone().acquire_owned());
        tokio::time::sleep(Duration::from_millis(10)).await;
        let (slots2, a_conn, b_conn) = (slots.clone(), a.conn.clone(), b.conn.clone());
        let waiting = tokio::spawn(async move { slots2.acquire().await.is_some() });
        tokio::time::timeout(Duration::from_secs(5), a_conn.evicted()).await.expect("a asked to go");
        drop(a);
        let _taken = other.await.unwrap().expect("a's slot went to the first waiter");
        tokio::time::timeout(Duration::from_secs(5), b_conn.evicted()).await.expect("asked again: b");
        drop(b);
        assert!(waiting.await.unwrap(), "b's slot went to the waiter that asked");
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
