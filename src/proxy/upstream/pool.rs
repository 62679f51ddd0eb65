//! This worker thread's idle connections, by backend authority: taken most recently used
//! first, dropped when closed or idle for longer than [`super::IDLE_TIMEOUT`]. Generic over
//! the client's connection type; what "ready" means is the connection's.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Instant;

/// Idle connections kept per backend address and worker thread.
const MAX_IDLE_PER_BACKEND: usize = 1024;
/// Pooled connections looked at before opening a new one.
const MAX_SKIPPED: usize = 8;

/// What a pooled connection says of itself.
pub enum Status {
    Ready,
    /// Still busy (sending a request body); may be ready later.
    Busy,
    Closed,
}

pub trait Pooled {
    /// Checked when the connection is taken (may cost a system call).
    fn status(&self) -> Status;
    /// Known to be closed without asking the socket (checked when others are put back).
    fn known_closed(&self) -> bool;
}

struct Idle<T> {
    conn: T,
    since: Instant,
}

pub struct Pool<T> {
    idle: HashMap<Box<str>, Vec<Idle<T>>, BuildHasherDefault<Fnv>>,
}

/// FNV-1a: the keys are the configured backends' addresses, few and not chosen by clients, so
/// a keyed hash (SipHash, ~150 instructions per lookup here, two lookups a request) buys nothing.
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl<T: Pooled> Pool<T> {
    pub fn new() -> Pool<T> {
        Pool { idle: HashMap::default() }
    }

    /// The most recently used ready connection to `authority`. Closed and expired connections
    /// found on the way are dropped; busy ones stay.
    pub fn take(&mut self, authority: &str) -> Option<T> {
        let idle = self.idle.get_mut(authority)?;
        let now = Instant::now();
        let mut i = idle.len();
        let mut skipped = 0;
        while i > 0 && skipped < MAX_SKIPPED {
            i -= 1;
            let c = &idle[i];
            if now.duration_since(c.since) > super::IDLE_TIMEOUT {
                idle.remove(i);
                continue;
            }
            match c.conn.status() {
                Status::Closed => drop(idle.remove(i)),
                Status::Ready => return Some(idle.remove(i).conn),
                Status::Busy => skipped += 1,
            }
        }
        None
    }

    /// Keep `conn` for the next request to `authority`.
    pub fn put(&mut self, authority: &str, conn: T) {
        let idle = match self.idle.get_mut(authority) {
            Some(idle) => idle,
            None => self.idle.entry(authority.into()).or_default(),
        };
        let now = Instant::now();
        // The oldest idle connections go while they are past the idle timeout or closed.
        let stale = idle
            .iter()
            .take_while(|c| now.duration_since(c.since) > super::IDLE_TIMEOUT || c.conn.known_closed())
            .count();
        if stale > 0 {
            idle.drain(..stale);
        }
        if idle.len() < MAX_IDLE_PER_BACKEND {
            idle.push(Idle { conn, since: now });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    /// A connection with a fixed status that counts how often it was asked.
    struct Fake {
        id: u32,
        status: fn() -> Status,
        asked: Rc<Cell<u32>>,
    }

    impl Pooled for Fake {
        fn status(&self) -> Status {
            self.asked.set(self.asked.get() + 1);
            (self.status)()
        }
        fn known_closed(&self) -> bool {
            false
        }
    }

    fn fake(id: u32, status: fn() -> Status, asked: &Rc<Cell<u32>>) -> Fake {
        Fake { id, status, asked: asked.clone() }
    }

    #[test]
    fn take_gives_the_most_recent_ready_one_and_drops_closed_ones() {
        let asked = Rc::new(Cell::new(0));
        let mut pool = Pool::new();
        pool.put("b:1", fake(1, || Status::Ready, &asked));
        pool.put("b:1", fake(2, || Status::Busy, &asked));
        pool.put("b:1", fake(3, || Status::Closed, &asked));
        assert_eq!(pool.take("b:1").map(|c| c.id), Some(1), "closed 3 dropped, busy 2 skipped");
        assert_eq!(pool.take("b:1").map(|c| c.id), None, "only the busy one is left");
        assert_eq!(pool.take("other:1").map(|c| c.id), None);
    }

    #[test]
    fn putting_back_asks_no_idle_connection_for_its_status() {
        // Asking the lean client's connection costs a system call: only `take` may.
        let asked = Rc::new(Cell::new(0));
        let mut pool = Pool::new();
        for id in 0..10 {
            pool.put("b:1", fake(id, || Status::Ready, &asked));
        }
        assert_eq!(asked.get(), 0);
        assert_eq!(pool.take("b:1").map(|c| c.id), Some(9));
        assert_eq!(asked.get(), 1);
    }
}
