//! Active health checks: one probe task per backend, restarted when the config reloads.
//!
//! A probe is a plain `GET health.path` on a fresh connection (nothing shared with the
//! proxy's pool, so a pooled connection's error never counts as a probe result and vice
//! versa). State flips only after `healthy_threshold` / `unhealthy_threshold` consecutive
//! results, and is logged once per change. Passive ejection lives in `balance::Backend`.

use crate::balance::Backend;
use crate::shutdown::Shutdown;
use crate::state::Shared;
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// Run health checks until `shutdown`; follows reloads.
pub async fn run(shared: Arc<Shared>, mut shutdown: Shutdown) {
    let mut reloads = shared.reloads();
    loop {
        let mut probes = JoinSet::new();
        for backend in shared.snapshot().pool.backends() {
            if backend.health.enabled {
                probes.spawn(check_forever(backend.clone()));
            }
        }
        tokio::select! {
            _ = shutdown.wait() => return,
            changed = reloads.changed() => if changed.is_err() { return },
        }
        probes.abort_all();
    }
}

/// Consecutive results of one backend's probes.
#[derive(Debug, Default)]
struct Streak {
    passes: u32,
    fails: u32,
}

async fn check_forever(backend: Arc<Backend>) {
    let mut streak = Streak::default();
    loop {
        tokio::time::sleep(jittered(backend.health.interval)).await;
        let ok = probe(&backend).await;
        apply(&backend, &mut streak, ok);
    }
}

/// `interval` +- 10 %, so probes of many backends (and instances) do not align.
fn jittered(interval: Duration) -> Duration {
    let f = rand::thread_rng().gen_range(0.9..1.1);
    interval.mul_f64(f)
}

/// Count one result and flip the backend's state once the threshold is reached.
fn apply(backend: &Backend, streak: &mut Streak, ok: bool) {
    let h = &backend.health;
    if ok {
        streak.passes += 1;
        streak.fails = 0;
        if streak.passes >= h.healthy_threshold.get() && backend.set_healthy(true) {
            tracing::info!(backend = %backend.name, "backend is up");
        }
    } else {
        streak.fails += 1;
        streak.passes = 0;
        if streak.fails >= h.unhealthy_threshold.get() && backend.set_healthy(false) {
            tracing::warn!(backend = %backend.name, "backend is down (failed {} health checks)", streak.fails);
        }
    }
}

/// One probe: connect, `GET path`, status in the expected range, all within the timeout.
async fn probe(backend: &Backend) -> bool {
    let h = &backend.health;
    let attempt = async {
        let stream = TcpStream::connect(backend.addr.authority.as_str()).await.ok()?;
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.ok()?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = http::Request::get(h.path.as_str())
            .header(http::header::HOST, backend.addr.authority.as_str())
            .header(http::header::USER_AGENT, "stickylb-health")
            .header(http::header::CONNECTION, "close")
            .body(Empty::<Bytes>::new())
            .ok()?;
        let resp = sender.send_request(req).await.ok()?;
        Some(h.expect_status.contains(resp.status().as_u16()))
    };
    matches!(tokio::time::timeout(h.timeout, attempt).await, Ok(Some(true)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    fn backend() -> Backend {
        let text = "[health]\nhealthy_threshold = 2\nunhealthy_threshold = 3\n[[backend]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n";
        let c = parse(text, "t").unwrap();
        Backend::new(&c.backends[0], &c.health)
    }

    #[test]
    fn thresholds() {
        let b = backend();
        let mut s = Streak::default();
        apply(&b, &mut s, false);
        apply(&b, &mut s, false);
        assert!(b.is_healthy(), "two failures with unhealthy_threshold = 3");
        apply(&b, &mut s, true);
        apply(&b, &mut s, false);
        apply(&b, &mut s, false);
        assert!(b.is_healthy(), "a pass resets the failure streak");
        apply(&b, &mut s, false);
        assert!(!b.is_healthy());
        apply(&b, &mut s, true);
        assert!(!b.is_healthy(), "one pass with healthy_threshold = 2");
        apply(&b, &mut s, true);
        assert!(b.is_healthy());
    }
}
