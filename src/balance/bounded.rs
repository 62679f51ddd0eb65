//! Bounded load (Mirrokni, Thorup and Zadimoghaddam's consistent hashing with bounded loads,
//! HAProxy's `hash-balance-factor`): a backend takes one more request only while its in-flight
//! requests stay within `factor` times the mean per unit of weight, rounded up. Used by the
//! `hash` algorithm for new sessions and by preferred affinity for pinned ones.

use super::Backend;
use std::sync::Arc;

/// The load bound of one moment: mean in-flight requests per weight over the backends that
/// take new sessions, counting the request being placed.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    per_weight: f64,
    factor: f64,
}

impl Bound {
    /// The bound over `backends` (those that accept new sessions) with `factor`.
    pub fn new(backends: &[Arc<Backend>], factor: f64) -> Bound {
        let (mut load, mut weight) = (1usize, 0u64);
        for b in backends.iter().filter(|b| b.accepts_new()) {
            load += b.in_flight();
            weight += u64::from(b.weight);
        }
        Bound { per_weight: load as f64 / weight.max(1) as f64, factor }
    }

    /// The most in-flight requests a backend of `weight` may have, this one included.
    pub fn capacity(self, weight: u32) -> usize {
        (self.factor * self.per_weight * f64::from(weight)).ceil().max(1.0) as usize
    }

    /// `backend` can take one more request within the bound.
    pub fn admits(self, backend: &Backend) -> bool {
        backend.in_flight() < self.capacity(backend.weight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::Pool;

    fn pool(weights: &[u32]) -> Pool {
        let mut text = String::new();
        for (i, w) in weights.iter().enumerate() {
            text.push_str(&format!(
                "[[backend]]\nname = \"b{i}\"\naddress = \"127.0.0.1:{}\"\nweight = {w}\n",
                9000 + i
            ));
        }
        Pool::new(&crate::config::parse(&text, "t").unwrap(), None)
    }

    #[test]
    fn idle_backends_admit_one_request_each() {
        let p = pool(&[1, 1, 1]);
        let bound = Bound::new(p.backends(), 1.25);
        assert!(p.backends().iter().all(|b| bound.admits(b)));
        assert_eq!(bound.capacity(1), 1, "ceil(1.25 * 1/3)");
    }

    #[test]
    fn a_backend_over_the_bound_is_not_admitted() {
        let p = pool(&[1, 1, 1]);
        let b = p.backends();
        let _held: Vec<_> = (0..5).map(|_| b[0].start_request()).chain([b[1].start_request()]).collect();
        let bound = Bound::new(b, 1.25);
        // 6 in flight + this one over 3 weights: capacity ceil(1.25 * 7/3) = 3.
        assert_eq!(bound.capacity(1), 3);
        assert!(!bound.admits(&b[0]), "5 in flight");
        assert!(bound.admits(&b[1]) && bound.admits(&b[2]));
    }

    #[test]
    fn capacity_follows_the_weight() {
        let p = pool(&[1, 3]);
        let b = p.backends();
        let _held: Vec<_> = (0..7).map(|_| b[1].start_request()).collect();
        let bound = Bound::new(b, 1.25);
        // (7 + 1) / 4 = 2 per weight: weight 1 -> 3, weight 3 -> 8.
        assert_eq!((bound.capacity(1), bound.capacity(3)), (3, 8));
        assert!(bound.admits(&b[1]), "7 < 8");
    }

    #[test]
    fn hashing_sends_a_key_to_its_next_choice_when_the_first_is_over_the_bound() {
        let text = "[balance]\nalgorithm = \"hash\"\n[[backend]]\nname = \"b0\"\naddress = \"127.0.0.1:9000\"\n\
                    [[backend]]\nname = \"b1\"\naddress = \"127.0.0.1:9001\"\n[[backend]]\nname = \"b2\"\naddress = \"127.0.0.1:9002\"\n";
        let p = Pool::new(&crate::config::parse(text, "t").unwrap(), None);
        let first = p.select(Some("session-42"), &[]).unwrap();
        assert_eq!(p.select(Some("session-42"), &[]).unwrap().name, first.name, "stable while within the bound");
        let _held: Vec<_> = (0..4).map(|_| first.start_request()).collect();
        let next = p.select(Some("session-42"), &[]).unwrap();
        assert_ne!(next.name, first.name, "over the bound: the next choice");
        assert!(Bound::new(p.backends(), 1.25).admits(&next));
    }
}
