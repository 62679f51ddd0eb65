//! Smooth weighted round robin (the nginx algorithm), precomputed into a schedule at snapshot
//! build time so that selection is one atomic increment: no lock, no allocation.

use super::Backend;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

/// Longest schedule kept; weights are scaled down proportionally beyond it.
const MAX_SCHEDULE: u64 = 4096;

#[derive(Debug)]
pub struct Schedule {
    order: Vec<u16>,
    next: AtomicUsize,
}

impl Schedule {
    pub fn new(weights: &[u32]) -> Schedule {
        let total: u64 = weights.iter().map(|&w| w as u64).sum();
        let scale = if total > MAX_SCHEDULE { total as f64 / MAX_SCHEDULE as f64 } else { 1.0 };
        let weights: Vec<i64> = weights.iter().map(|&w| ((w as f64 / scale).round() as i64).max(1)).collect();
        let total: i64 = weights.iter().sum();
        let mut current = vec![0i64; weights.len()];
        let mut order = Vec::with_capacity(total as usize);
        for _ in 0..total {
            for (c, w) in current.iter_mut().zip(&weights) {
                *c += w;
            }
            let best = (0..current.len()).max_by_key(|&i| (current[i], std::cmp::Reverse(i))).unwrap_or(0);
            current[best] -= total;
            order.push(best as u16);
        }
        Schedule { order, next: AtomicUsize::new(rand::random::<u16>() as usize) }
    }

    /// Next backend in the schedule that passes `ok` (skipping the others in order).
    pub fn select<'a>(&self, backends: &'a [Arc<Backend>], ok: impl Fn(&Backend) -> bool) -> Option<&'a Arc<Backend>> {
        let len = self.order.len();
        if len == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Relaxed);
        (0..len)
            .map(|i| &backends[self.order[(start + i) % len] as usize])
            .find(|b| ok(b) && slow_start_admits(b))
            .or_else(|| backends.iter().find(|b| ok(b)))
    }

    /// A rotating start index for tie-breaking in other algorithms.
    pub fn rotate(&self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            self.next.fetch_add(1, Relaxed) % n
        }
    }
}

/// During slow start a backend takes only its ramped share of its turns.
fn slow_start_admits(b: &Backend) -> bool {
    let f = b.slow_start_factor();
    f >= 1.0 || rand::random::<f64>() < f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smooth_weighted_order() {
        let s = Schedule::new(&[5, 1, 1]);
        assert_eq!(s.order, vec![0, 0, 1, 0, 2, 0, 0]);
        let s = Schedule::new(&[1, 1, 1]);
        assert_eq!(s.order, vec![0, 1, 2]);
    }

    #[test]
    fn huge_weights_are_scaled() {
        let s = Schedule::new(&[10_000, 10_000]);
        assert!(s.order.len() as u64 <= MAX_SCHEDULE + 2);
    }
}
