//! Counters the proxy updates on the hot path (their Prometheus exposition is the admin API's,
//! `admin::prometheus`). This module must not import any other module of the crate but
//! `config`: everything else counts into it.
//!
//! The hot path only touches plain atomics: [`Metrics`] (process-wide) and the
//! [`StatusCounters`] each `balance::Backend` owns. No lock is taken and nothing is allocated
//! per request; labels exist only at scrape time, when the admin API walks the current snapshot
//! through a `prometheus_client` [`Collector`](prometheus_client::collector::Collector). This
//! is why `prometheus_client`'s own `Family` and `Histogram` are not used: `Family` takes a
//! `RwLock` per lookup and `Histogram::observe` a lock per observation.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Why a session moved to another backend (`stickylb_session_reassignments_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reassign {
    /// The pinned backend was marked down by its active health checks.
    Down,
    /// The pinned backend is passively ejected (consecutive failures on real traffic).
    Ejected,
    /// The pinned backend is in maintenance.
    Maint,
    /// The pinned backend no longer exists (removed by a reload).
    Removed,
    /// The pinned backend refused the connection (nothing was sent to it).
    ConnectFailed,
    /// Preferred affinity: the pinned backend was over the load bound or at its
    /// `max_connections`.
    Overload,
}

impl Reassign {
    pub const ALL: [Reassign; 6] = [
        Reassign::Down,
        Reassign::Ejected,
        Reassign::Maint,
        Reassign::Removed,
        Reassign::ConnectFailed,
        Reassign::Overload,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reassign::Down => "down",
            Reassign::Ejected => "ejected",
            Reassign::Maint => "maint",
            Reassign::Removed => "removed",
            Reassign::ConnectFailed => "connect_failed",
            Reassign::Overload => "overload",
        }
    }
}

/// Upper bounds (seconds) of the request-duration histogram buckets: sub-millisecond for
/// cached answers up to 10 s for slow uploads; slower requests land in the `+Inf` bucket.
pub const DURATION_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The lowest and highest status code `http::StatusCode` can hold.
const FIRST_CODE: u16 = 100;
const LAST_CODE: u16 = 999;

/// Responses counted by exact status code: one atomic per possible code (7 KiB), so that
/// counting is a single `fetch_add` with no map and no label allocation.
#[derive(Debug)]
pub struct StatusCounters {
    counts: Box<[AtomicU64]>,
}

impl Default for StatusCounters {
    fn default() -> Self {
        let counts = (FIRST_CODE..=LAST_CODE).map(|_| AtomicU64::new(0)).collect();
        StatusCounters { counts }
    }
}

impl StatusCounters {
    /// Count one response with `status`.
    pub fn count(&self, status: u16) {
        if let Some(c) = status.checked_sub(FIRST_CODE).and_then(|i| self.counts.get(i as usize)) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// `(code, count)` of every code seen at least once, in code order.
    pub fn nonzero(&self) -> impl Iterator<Item = (u16, u64)> + '_ {
        self.counts.iter().zip(FIRST_CODE..).map(|(c, code)| (code, c.load(Relaxed))).filter(|&(_, n)| n > 0)
    }

    /// Responses of every code.
    pub fn total(&self) -> u64 {
        self.nonzero().map(|(_, n)| n).sum()
    }

    /// Responses per class: index 0 = 1xx ... 4 = 5xx (codes 600-999 are not counted here).
    pub fn classes(&self) -> [u64; 5] {
        let mut out = [0; 5];
        for (code, n) in self.nonzero() {
            if let Some(slot) = out.get_mut(usize::from(code / 100) - 1) {
                *slot += n;
            }
        }
        out
    }
}

/// Process-wide counters (per-backend ones live in `balance::Backend`).
#[derive(Debug)]
pub struct Metrics {
    pub cookie_rejected: AtomicU64,
    reassignments: [AtomicU64; Reassign::ALL.len()],
    pub store_errors: AtomicU64,
    pub active_connections: AtomicI64,
    /// Responses sent without any backend (no backend available, bad request, body too
    /// large): `stickylb_requests_total{backend="none"}`.
    pub unrouted: StatusCounters,
    /// Non-cumulative: one slot per bound of [`DURATION_BUCKETS`] plus one for slower
    /// requests. The total count is their sum, so a scrape never sees buckets and count
    /// disagree.
    duration_buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    duration_sum_micros: AtomicU64,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    /// 1 if the last reload was applied (also before the first one), 0 if it was rejected.
    last_reload_ok: AtomicU64,
    /// When the process started, for uptime (monotonic) and the start-time metric (wall).
    pub started: Instant,
    pub started_unix: f64,
    /// Set by `group`: the members this instance sees (itself included), and 1 if they all
    /// share its config fingerprint.
    pub cluster_members: AtomicI64,
    pub cluster_config_consistent: AtomicI64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            cookie_rejected: AtomicU64::new(0),
            reassignments: Default::default(),
            store_errors: AtomicU64::new(0),
            active_connections: AtomicI64::new(0),
            unrouted: StatusCounters::default(),
            duration_buckets: Default::default(),
            duration_sum_micros: AtomicU64::new(0),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            last_reload_ok: AtomicU64::new(1),
            started: Instant::now(),
            started_unix: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64()),
            cluster_members: AtomicI64::new(1),
            cluster_config_consistent: AtomicI64::new(1),
        }
    }
}

impl Metrics {
    pub fn reassigned(&self, reason: Reassign) {
        self.reassignments[reason as usize].fetch_add(1, Relaxed);
    }

    pub fn reassignments(&self, reason: Reassign) -> u64 {
        self.reassignments[reason as usize].load(Relaxed)
    }

    /// One request's total time, from its head being read to its response head being sent.
    pub fn observe_duration(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let slot = DURATION_BUCKETS.iter().position(|&b| secs <= b).unwrap_or(DURATION_BUCKETS.len());
        self.duration_buckets[slot].fetch_add(1, Relaxed);
        self.duration_sum_micros.fetch_add(d.as_micros() as u64, Relaxed);
    }

    /// `(upper bound, non-cumulative count)` per finite bucket, the total count, and the sum in
    /// seconds.
    pub fn durations(&self) -> (Vec<(f64, u64)>, u64, f64) {
        let counts: Vec<u64> = self.duration_buckets.iter().map(|c| c.load(Relaxed)).collect();
        let buckets = DURATION_BUCKETS.iter().copied().zip(counts.iter().copied()).collect();
        let sum = self.duration_sum_micros.load(Relaxed) as f64 / 1e6;
        (buckets, counts.iter().sum(), sum)
    }

    /// Count a reload attempt.
    pub fn reloaded(&self, ok: bool) {
        let counter = if ok { &self.reloads_ok } else { &self.reloads_failed };
        counter.fetch_add(1, Relaxed);
        self.last_reload_ok.store(ok as u64, Relaxed);
    }

    /// Reloads applied, reloads rejected, and whether the last one was applied.
    pub fn reloads(&self) -> (u64, u64, bool) {
        (self.reloads_ok.load(Relaxed), self.reloads_failed.load(Relaxed), self.last_reload_ok.load(Relaxed) == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_counters_count_exact_codes_and_classes() {
        let c = StatusCounters::default();
        for code in [200, 200, 404, 502, 100, 999] {
            c.count(code);
        }
        c.count(99); // impossible codes are ignored, not a panic
        c.count(1000);
        let seen: Vec<(u16, u64)> = c.nonzero().collect();
        assert_eq!(seen, vec![(100, 1), (200, 2), (404, 1), (502, 1), (999, 1)]);
        assert_eq!(c.total(), 6);
        assert_eq!(c.classes(), [1, 2, 0, 1, 1]);
    }

    #[test]
    fn durations_fill_buckets_and_overflow() {
        let m = Metrics::default();
        m.observe_duration(Duration::from_micros(100)); // <= 0.0005
        m.observe_duration(Duration::from_millis(7)); // <= 0.01
        m.observe_duration(Duration::from_secs(30)); // +Inf only
        let (buckets, count, sum) = m.durations();
        assert_eq!(count, 3);
        assert_eq!(buckets.len(), DURATION_BUCKETS.len());
        assert_eq!(buckets[0], (0.0005, 1));
        assert_eq!(buckets[4], (0.01, 1));
        assert_eq!(buckets.iter().map(|b| b.1).sum::<u64>(), 2, "the 30 s request is in no finite bucket");
        assert!((sum - 30.0071).abs() < 1e-9, "sum {sum}");
    }

    #[test]
    fn reloads_are_counted() {
        let m = Metrics::default();
        assert_eq!(m.reloads(), (0, 0, true));
        m.reloaded(false);
        assert_eq!(m.reloads(), (0, 1, false));
        m.reloaded(true);
        assert_eq!(m.reloads(), (1, 1, true));
    }
}
