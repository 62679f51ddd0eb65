//! Scrape-time exposition: a `prometheus_client` [`Collector`] over one config snapshot and
//! the process-wide [`Metrics`], encoded as Prometheus text (0.0.4) or OpenMetrics text.
//!
//! A registry is built per scrape around the snapshot current at that moment, so backends
//! added or removed by a reload appear and disappear from `/metrics` at once, and nothing here
//! has to follow reloads.

use crate::config::AdminState;
use crate::metrics::{Metrics, Reassign};
use crate::state::Snapshot;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use std::fmt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// Metric-name prefix of every series.
const PREFIX: &str = "stickylb";
/// The `backend` label of responses no backend was involved in.
pub const NO_BACKEND: &str = "none";

/// The exposition format of a scrape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The classic text format, `text/plain; version=0.0.4`.
    Prometheus,
    /// OpenMetrics 1.0 text, for scrapers that ask for it in `Accept`.
    OpenMetrics,
}

impl Format {
    /// Pick the format from a request's `Accept` header.
    pub fn from_accept(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// Every metric, as text in `format`.
/// `sessions`: the store's session counts by backend name.
pub fn encode(
    snapshot: Arc<Snapshot>,
    metrics: Arc<Metrics>,
    sessions: Vec<(Arc<str>, u64)>,
    format: Format,
) -> String {
    let mut registry = Registry::with_prefix(PREFIX);
    registry.register_collector(Box::new(Scrape { snapshot, metrics, sessions }));
    let mut out = String::with_capacity(8192);
    // Writing into a String cannot fail, and our collector returns no error of its own.
    let _ = match format {
        Format::Prometheus => prometheus_client::encoding::prometheus_text::encode(&mut out, &registry),
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &registry),
    };
    out
}

/// What one scrape reads.
struct Scrape {
    snapshot: Arc<Snapshot>,
    metrics: Arc<Metrics>,
    /// Session counts by backend name, from the store.
    sessions: Vec<(Arc<str>, u64)>,
}

impl fmt::Debug for Scrape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scrape").field("backends", &self.snapshot.pool.backends().len()).finish()
    }
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        self.requests(&mut enc)?;
        self.duration(&mut enc)?;
        self.backends(&mut enc)?;
        self.sessions(&mut enc)?;
        self.process(&mut enc)
    }
}

/// One descriptor and its unlabelled sample.
fn single(enc: &mut DescriptorEncoder, name: &str, help: &str, metric: impl EncodeMetric) -> fmt::Result {
    let m = enc.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(m)
}

impl Scrape {
    fn requests(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let help =
            "Responses sent to clients, by backend (\"none\" when no backend was involved) and exact status code";
        let mut m = enc.encode_descriptor("requests", help, None, MetricType::Counter)?;
        let per_backend = self.snapshot.pool.backends().iter().map(|b| (&*b.name, &*b.responses));
        for (backend, counters) in per_backend.chain([(NO_BACKEND, &self.metrics.unrouted)]) {
            for (code, n) in counters.nonzero() {
                let labels = ([("backend", backend)], [("code", code)]);
                ConstCounter::new(n).encode(m.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }

    fn duration(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let help = "Time from a request's head being read to its response head being sent";
        let mut m = enc.encode_descriptor("request_duration", help, Some(&Unit::Seconds), MetricType::Histogram)?;
        let (buckets, count, sum) = self.metrics.durations();
        m.encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, count, &buckets, None)
    }

    fn backends(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let backends = self.snapshot.pool.backends();
        let help = "1 if the backend passes health checks and is not ejected, else 0";
        let mut m = enc.encode_descriptor("backend_up", help, None, MetricType::Gauge)?;
        for b in backends {
            ConstGauge::new(b.is_healthy() as i64).encode(m.encode_family(&[("backend", &*b.name)])?)?;
        }
        let help = "Administrative state: 1 for the backend's current state (active, drain or maint), 0 for the others";
        let mut m = enc.encode_descriptor("backend_state", help, None, MetricType::Gauge)?;
        for b in backends {
            let current = b.state();
            for s in [AdminState::Active, AdminState::Drain, AdminState::Maint] {
                let labels = [("backend", &*b.name), ("state", s.as_str())];
                ConstGauge::new((s == current) as i64).encode(m.encode_family(&labels)?)?;
            }
        }
        let help = "Requests being forwarded to the backend right now";
        let mut m = enc.encode_descriptor("backend_active_requests", help, None, MetricType::Gauge)?;
        for b in backends {
            ConstGauge::new(b.in_flight() as i64).encode(m.encode_family(&[("backend", &*b.name)])?)?;
        }
        Ok(())
    }

    fn sessions(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let mut m = enc.encode_descriptor("sessions", "Sessions pinned to the backend", None, MetricType::Gauge)?;
        for b in self.snapshot.pool.backends() {
            let n = super::session_count(&self.sessions, &b.name) as i64;
            ConstGauge::new(n).encode(m.encode_family(&[("backend", &*b.name)])?)?;
        }
        let help = "Sessions moved to another backend, by why their backend could not serve them";
        let mut m = enc.encode_descriptor("session_reassignments", help, None, MetricType::Counter)?;
        for r in Reassign::ALL {
            ConstCounter::new(self.metrics.reassignments(r)).encode(m.encode_family(&[("reason", r.as_str())])?)?;
        }
        let help = "Session cookies whose signature did not verify (ignored, never used for routing)";
        single(enc, "cookie_rejected", help, ConstCounter::new(self.metrics.cookie_rejected.load(Relaxed)))?;
        let help = "Failed operations on the session store (the local table kept serving)";
        single(enc, "store_errors", help, ConstCounter::new(self.metrics.store_errors.load(Relaxed)))
    }

    fn process(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let m = &self.metrics;
        let help = "Open client connections";
        single(enc, "active_connections", help, ConstGauge::new(m.active_connections.load(Relaxed)))?;
        let (ok, failed, last_ok) = m.reloads();
        let help = "Configuration reloads (SIGHUP or POST /api/reload), by result";
        let mut d = enc.encode_descriptor("config_reloads", help, None, MetricType::Counter)?;
        ConstCounter::new(ok).encode(d.encode_family(&[("result", "success")])?)?;
        ConstCounter::new(failed).encode(d.encode_family(&[("result", "failure")])?)?;
        let help = "1 if the last reload was applied (or none was tried), 0 if it was rejected";
        single(enc, "config_last_reload_successful", help, ConstGauge::new(last_ok as i64))?;
        let help = "Instances in the group as this one sees them (itself included; 1 with the memory store)";
        single(enc, "cluster_members", help, ConstGauge::new(m.cluster_members.load(Relaxed)))?;
        let help = "1 if every member of the group has this instance's config fingerprint, else 0";
        let consistent = ConstGauge::new(m.cluster_config_consistent.load(Relaxed));
        single(enc, "cluster_config_consistent", help, consistent)?;
        let help = "When the process started, in seconds since the Unix epoch";
        single(enc, "start_time_seconds", help, ConstGauge::new(m.started_unix))?;
        let info = Info::new([("version", env!("CARGO_PKG_VERSION"))]);
        single(enc, "build", "The running stickylb version", info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn snapshot(backends: &[&str], previous: Option<&Snapshot>) -> Snapshot {
        let mut text = String::from("[health]\nenabled = false\n");
        for (i, name) in backends.iter().enumerate() {
            text.push_str(&format!("[[backend]]\nname = \"{name}\"\naddress = \"127.0.0.1:{}\"\n", 9001 + i));
        }
        Snapshot::new(crate::config::parse(&text, "t").unwrap(), previous)
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    #[test]
    fn prometheus_text_has_exact_series_from_the_atomics() {
        let snap = Arc::new(snapshot(&["a", "b"], None));
        let metrics = Arc::new(Metrics::default());
        let a = snap.pool.get("a").unwrap();
        a.responses.count(200);
        a.responses.count(200);
        a.responses.count(502);
        metrics.unrouted.count(503);
        metrics.reassigned(Reassign::Removed);
        metrics.cookie_rejected.fetch_add(3, Relaxed);
        metrics.observe_duration(Duration::from_micros(800));
        metrics.observe_duration(Duration::from_secs(20));
        snap.pool.get("b").unwrap().set_state(AdminState::Drain);

        let text = encode(snap, metrics, Vec::new(), Format::Prometheus);
        let l = lines(&text);
        for want in [
            "# TYPE stickylb_requests_total counter",
            "stickylb_requests_total{backend=\"a\",code=\"200\"} 2",
            "stickylb_requests_total{backend=\"a\",code=\"502\"} 1",
            "stickylb_requests_total{backend=\"none\",code=\"503\"} 1",
            "# TYPE stickylb_request_duration_seconds histogram",
            "stickylb_request_duration_seconds_bucket{le=\"0.0005\"} 0",
            "stickylb_request_duration_seconds_bucket{le=\"0.001\"} 1",
            "stickylb_request_duration_seconds_bucket{le=\"10\"} 1",
            "stickylb_request_duration_seconds_bucket{le=\"+Inf\"} 2",
            "stickylb_request_duration_seconds_sum 20.0008",
            "stickylb_request_duration_seconds_count 2",
            "stickylb_backend_up{backend=\"b\"} 1",
            "stickylb_backend_state{backend=\"b\",state=\"drain\"} 1",
            "stickylb_backend_state{backend=\"b\",state=\"active\"} 0",
            "stickylb_sessions{backend=\"a\"} 0",
            "stickylb_session_reassignments_total{reason=\"removed\"} 1",
            "stickylb_session_reassignments_total{reason=\"down\"} 0",
            "# TYPE stickylb_cookie_rejected_total counter",
            "stickylb_cookie_rejected_total 3",
            "stickylb_active_connections 0",
            "stickylb_store_errors_total 0",
            "stickylb_cluster_members 1",
            "stickylb_cluster_config_consistent 1",
        ] {
            assert!(l.contains(&want), "missing {want:?} in\n{text}");
        }
        let build = format!("stickylb_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
        assert!(l.contains(&build.as_str()), "missing {build:?}");
        assert!(!text.contains("backend=\"b\",code="), "b answered nothing, so it has no request series");
        assert!(!text.contains("# EOF"), "the 0.0.4 format has no EOF marker");
    }

    #[test]
    fn openmetrics_names_counter_families_without_total_and_ends_with_eof() {
        let text = encode(Arc::new(snapshot(&["a"], None)), Arc::default(), Vec::new(), Format::OpenMetrics);
        assert!(lines(&text).contains(&"# TYPE stickylb_requests counter"), "{text}");
        assert!(lines(&text).contains(&"# UNIT stickylb_request_duration_seconds seconds"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn counters_follow_a_backend_through_a_reload_and_leave_with_it() {
        let first = snapshot(&["a", "b"], None);
        first.pool.get("a").unwrap().responses.count(204);
        let second = Arc::new(snapshot(&["a"], Some(&first)));
        // A request still running on the old snapshot counts in the new one too.
        first.pool.get("a").unwrap().responses.count(204);
        let text = encode(second, Arc::default(), Vec::new(), Format::Prometheus);
        assert!(lines(&text).contains(&"stickylb_requests_total{backend=\"a\",code=\"204\"} 2"), "{text}");
        assert!(!text.contains("backend=\"b\""), "a removed backend is still exported:\n{text}");
    }

    #[test]
    fn format_follows_the_accept_header() {
        assert_eq!(Format::from_accept(None), Format::Prometheus);
        assert_eq!(Format::from_accept(Some("text/plain;version=0.0.4")), Format::Prometheus);
        let prometheus_server = "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4";
        assert_eq!(Format::from_accept(Some(prometheus_server)), Format::OpenMetrics);
    }
}
