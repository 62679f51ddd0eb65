//! Power of two choices: two backends drawn at random by weight, the less loaded one wins.
//! Almost as good as least connections, without looking at every backend.

use super::Backend;
use rand::Rng;
use std::sync::Arc;

pub fn select(backends: &[Arc<Backend>], ok: impl Fn(&Backend) -> bool) -> Option<&Arc<Backend>> {
    let mut rng = rand::thread_rng();
    let first = draw(backends, &ok, None, &mut rng)?;
    let Some(second) = draw(backends, &ok, Some(first), &mut rng) else {
        return Some(first);
    };
    let load = |b: &Backend| b.in_flight() as f64 / b.effective_weight();
    Some(if load(second) < load(first) { second } else { first })
}

/// One backend drawn with probability proportional to its effective weight.
fn draw<'a>(
    backends: &'a [Arc<Backend>],
    ok: &impl Fn(&Backend) -> bool,
    not: Option<&Arc<Backend>>,
    rng: &mut impl Rng,
) -> Option<&'a Arc<Backend>> {
    let eligible = |b: &&Arc<Backend>| ok(b) && not.is_none_or(|n| !Arc::ptr_eq(n, b));
    let total: f64 = backends.iter().filter(eligible).map(|b| b.effective_weight()).sum();
    if total <= 0.0 {
        return None;
    }
    let mut x = rng.gen::<f64>() * total;
    let mut last = None;
    for b in backends.iter().filter(eligible) {
        last = Some(b);
        x -= b.effective_weight();
        if x < 0.0 {
            return Some(b);
        }
    }
    last
}
