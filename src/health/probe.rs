//! Active probes: one task per backend, a plain `GET health.path` on a fresh connection
//! (nothing shared with the proxy's pool, so a pooled connection's error never counts as a
//! probe result and vice versa), every `interval` with a little jitter.

use super::Target;
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use rand::Rng;
use std::time::Duration;
use tokio::net::TcpStream;

/// How often a backend without active checks looks whether its passive ejection is over.
const EJECTION_WATCH: Duration = Duration::from_millis(250);

pub(super) async fn check_forever(target: Target) {
    loop {
        tokio::time::sleep(jittered(target.check.interval)).await;
        let ok = probe(&target).await;
        target.health.probe_result(&target.name, &target.check, ok);
        target.health.ejection_expired(&target.name);
    }
}

/// No active checks: only log (once) that an ejection ran out.
pub(super) async fn watch_ejection(target: Target) {
    loop {
        tokio::time::sleep(EJECTION_WATCH).await;
        target.health.ejection_expired(&target.name);
    }
}

/// `interval` +- 10 %, so probes of many backends (and instances) do not align.
fn jittered(interval: Duration) -> Duration {
    let f = rand::thread_rng().gen_range(0.9..1.1);
    interval.mul_f64(f)
}

/// One probe: connect, `GET path`, status in the expected range, all within the timeout.
async fn probe(target: &Target) -> bool {
    let h = &target.check;
    let authority = target.authority.as_str();
    let attempt = async {
        let stream = TcpStream::connect(authority).await.ok()?;
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.ok()?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = http::Request::get(h.path.as_str())
            .header(http::header::HOST, authority)
            .header(http::header::USER_AGENT, "stickylb-health")
            .header(http::header::CONNECTION, "close")
            .body(Empty::<Bytes>::new())
            .ok()?;
        let resp = sender.send_request(req).await.ok()?;
        Some(h.expect_status.contains(resp.status().as_u16()))
    };
    matches!(tokio::time::timeout(h.timeout, attempt).await, Ok(Some(true)))
}
