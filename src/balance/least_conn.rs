//! Weighted least connections: fewest in-flight requests per unit of (slow-start ramped)
//! weight; ties broken by a rotating start so equal backends share new sessions evenly.

use super::round_robin::Schedule;
use super::Backend;
use std::sync::Arc;

pub fn select<'a>(
    backends: &'a [Arc<Backend>],
    rr: &Schedule,
    ok: impl Fn(&Backend) -> bool,
) -> Option<&'a Arc<Backend>> {
    let n = backends.len();
    let start = rr.rotate(n);
    let mut best: Option<(&Arc<Backend>, f64)> = None;
    for i in 0..n {
        let b = &backends[(start + i) % n];
        if !ok(b) {
            continue;
        }
        let load = (b.in_flight() as f64 + 1.0) / b.effective_weight();
        if best.is_none_or(|(_, l)| load < l) {
            best = Some((b, load));
        }
    }
    best.map(|(b, _)| b)
}
