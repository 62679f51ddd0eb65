//! This worker thread's idle connections, by backend authority: taken most recently used
//! first, dropped when closed or idle for longer than [`super::IDLE_TIMEOUT`]. Generic over
//! the client's connection type; what "ready" means is the connection's.

use std::collections::HashMap;
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
    fn status(&self) -> Status;
}

struct Idle<T> {
    conn: T,
    since: Instant,
}

pub struct Pool<T> {
    idle: HashMap<Box<str>, Vec<Idle<T>>>,
}

impl<T: Pooled> Pool<T> {
    pub fn new() -> Pool<T> {
        Pool { idle: HashMap::new() }
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
            .take_while(|c| {
                now.duration_since(c.since) > super::IDLE_TIMEOUT || matches!(c.conn.status(), Status::Closed)
            })
            .count();
        if stale > 0 {
            idle.drain(..stale);
        }
        if idle.len() < MAX_IDLE_PER_BACKEND {
            idle.push(Idle { conn, since: now });
        }
    }
}
