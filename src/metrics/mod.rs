//! Counters the proxy updates on the hot path, kept as plain atomics (no lock, no label
//! allocation per request); the admin module renders them as Prometheus text at scrape time.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Why a session moved to another backend (`stickylb_session_reassignments_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reassign {
    /// The pinned backend was marked down by health checks or passive ejection.
    Down,
    /// The pinned backend is in maintenance.
    Maint,
    /// The pinned backend no longer exists (removed by a reload).
    Removed,
    /// The pinned backend refused the connection or failed before answering.
    ConnectFailed,
}

impl Reassign {
    pub const ALL: [Reassign; 4] = [Reassign::Down, Reassign::Maint, Reassign::Removed, Reassign::ConnectFailed];

    pub fn as_str(self) -> &'static str {
        match self {
            Reassign::Down => "down",
            Reassign::Maint => "maint",
            Reassign::Removed => "removed",
            Reassign::ConnectFailed => "connect_failed",
        }
    }
}

/// Upper bounds (seconds) of the request-duration histogram buckets.
pub const DURATION_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Process-wide counters (per-backend ones live in `balance::Backend`).
#[derive(Debug, Default)]
pub struct Metrics {
    pub cookie_rejected: AtomicU64,
    reassignments: [AtomicU64; 4],
    pub store_errors: AtomicU64,
    pub active_connections: AtomicI64,
    /// Requests answered without any backend (503 no backend, 400, 413).
    pub unrouted: AtomicU64,
    duration_buckets: [AtomicU64; DURATION_BUCKETS.len()],
    duration_count: AtomicU64,
    duration_sum_micros: AtomicU64,
}

impl Metrics {
    pub fn reassigned(&self, reason: Reassign) {
        self.reassignments[reason as usize].fetch_add(1, Relaxed);
    }

    pub fn reassignments(&self, reason: Reassign) -> u64 {
        self.reassignments[reason as usize].load(Relaxed)
    }

    pub fn observe_duration(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = DURATION_BUCKETS.iter().position(|&b| secs <= b) {
            self.duration_buckets[i].fetch_add(1, Relaxed);
        }
        self.duration_count.fetch_add(1, Relaxed);
        self.duration_sum_micros.fetch_add(d.as_micros() as u64, Relaxed);
    }

    /// Non-cumulative bucket counts, total count, and sum in seconds.
    pub fn durations(&self) -> (Vec<u64>, u64, f64) {
        let b = self.duration_buckets.iter().map(|c| c.load(Relaxed)).collect();
        (b, self.duration_count.load(Relaxed), self.duration_sum_micros.load(Relaxed) as f64 / 1e6)
    }
}

/// Prometheus text exposition of every metric.
pub fn render(shared: &crate::state::Shared) -> String {
    use std::fmt::Write;
    let snap = shared.snapshot();
    let m = &shared.metrics;
    let mut out = String::with_capacity(4096);
    let _ = shared.store_len_for_metrics();
    let _ = writeln!(out, "# HELP stickylb_requests_total Requests answered, by backend and status code.");
    let _ = writeln!(out, "# TYPE stickylb_requests_total counter");
    for b in snap.pool.backends() {
        let _ = writeln!(
            out,
            "stickylb_requests_total{{backend=\"{}\",code=\"all\"}} {}",
            b.name,
            b.requests.load(Relaxed)
        );
    }
    let _ = writeln!(out, "# TYPE stickylb_backend_up gauge");
    for b in snap.pool.backends() {
        let _ = writeln!(out, "stickylb_backend_up{{backend=\"{}\"}} {}", b.name, b.is_healthy() as u8);
    }
    let _ = writeln!(out, "# TYPE stickylb_sessions gauge");
    for b in snap.pool.backends() {
        let _ = writeln!(out, "stickylb_sessions{{backend=\"{}\"}} {}", b.name, b.sessions.load(Relaxed).max(0));
    }
    let _ = writeln!(out, "# TYPE stickylb_session_reassignments_total counter");
    for r in Reassign::ALL {
        let _ =
            writeln!(out, "stickylb_session_reassignments_total{{reason=\"{}\"}} {}", r.as_str(), m.reassignments(r));
    }
    let _ = writeln!(out, "# TYPE stickylb_cookie_rejected_total counter");
    let _ = writeln!(out, "stickylb_cookie_rejected_total {}", m.cookie_rejected.load(Relaxed));
    let _ = writeln!(out, "# TYPE stickylb_active_connections gauge");
    let _ = writeln!(out, "stickylb_active_connections {}", m.active_connections.load(Relaxed));
    let _ = writeln!(out, "# TYPE stickylb_store_errors_total counter");
    let _ = writeln!(out, "stickylb_store_errors_total {}", m.store_errors.load(Relaxed));
    let (buckets, count, sum) = m.durations();
    let _ = writeln!(out, "# TYPE stickylb_request_duration_seconds histogram");
    let mut cumulative = 0;
    for (le, n) in DURATION_BUCKETS.iter().zip(buckets) {
        cumulative += n;
        let _ = writeln!(out, "stickylb_request_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}");
    }
    let _ = writeln!(out, "stickylb_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "stickylb_request_duration_seconds_sum {sum}");
    let _ = writeln!(out, "stickylb_request_duration_seconds_count {count}");
    out
}
