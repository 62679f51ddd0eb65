//! Health and failover: reassignment of pinned sessions, active-check thresholds, passive
//! ejection, drain / maint, on_backend_down = "reject", no eligible backend at all.

mod common;

use std::sync::Arc;
use std::time::Instant;

use common::*;

fn named<'a>(bs: &'a [TestBackend], name: &str) -> &'a TestBackend {
    bs.iter().find(|b| b.name() == name).unwrap_or_else(|| panic!("no backend {name}"))
}

/// Round-robin balancing with fast active checks (a dead backend is noticed in ~200-300 ms).
fn fast(bs: &[TestBackend]) -> BalancerBuilder {
    balancer(&refs(bs))
        .set("balance.algorithm", "round_robin")
        .set("health.interval", "100ms")
        .set("health.timeout", "100ms")
        .set("health.healthy_threshold", 1)
        .set("health.unhealthy_threshold", 2)
}

/// One user per backend (round robin over three): returns users ordered as `bs`.
async fn one_user_per_backend(lb: &Balancer, bs: &[TestBackend]) -> Vec<User> {
    let mut users: Vec<(String, User)> = Vec::new();
    for i in 0..bs.len() {
        let u = User::new();
        let r = u.get(&lb.url(&format!("/hello/{i}"))).await;
        assert_eq!(r.status, 200, "{}", r.describe());
        users.push((r.backend().unwrap(), u));
    }
    let mut out = Vec::new();
    for b in bs {
        let i = users
            .iter()
            .position(|(n, _)| n == b.name())
            .unwrap_or_else(|| panic!("round_robin gave no new session to {}", b.name()));
        out.push(users.remove(i).1);
    }
    out
}

/// `n` cookieless requests; the backends that answered (all must be 200).
async fn fresh_requests(lb: &Balancer, n: usize) -> Vec<String> {
    let c = plain_client();
    let mut out = Vec::new();
    for i in 0..n {
        let r = get(&c, &lb.url(&format!("/fresh/{i}"))).await;
        assert_eq!(r.status, 200, "fresh request {i}: {}", r.describe());
        out.push(r.backend().unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_session_moves_when_its_backend_dies_and_stays_moved() {
    let bs = three().await;
    let lb = fast(&bs).start().await;
    let u = User::new();
    let first = u.get(&lb.url("/start")).await;
    let old = first.backend().expect("backend");
    let old_b = named(&bs, &old);

    old_b.stop().await;
    let r = u.get(&lb.url("/after-stop")).await;
    assert_eq!(r.status, 200, "first request after {old} died: {}", r.describe());
    let new = r.backend().unwrap();
    assert_ne!(new, old);
    let seen = named(&bs, &new).last_seen().unwrap();
    assert_eq!(
        seen.header("x-stickylb-previous-backend").as_deref(),
        Some(old.as_str()),
        "reassigned request lacks X-Stickylb-Previous-Backend: {old}"
    );
    for i in 0..10 {
        let r = u.get(&lb.url(&format!("/moved/{i}"))).await;
        assert_eq!(r.backend().as_deref(), Some(new.as_str()), "request {i} after the move");
    }

    old_b.restart().await;
    assert!(lb.wait_healthy(&old, true, secs(5)).await, "{old} not healthy again 5 s after restart");
    for i in 0..10 {
        let r = u.get(&lb.url(&format!("/back/{i}"))).await;
        assert_eq!(
            r.backend().as_deref(),
            Some(new.as_str()),
            "session went back to {old} after its recovery (request {i})"
        );
    }
    assert_eq!(old_b.requests(), 1, "{old} got requests after the move");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_users_see_no_errors_when_a_backend_dies() {
    let bs = three().await;
    let lb = Arc::new(fast(&bs).start().await);
    let end = Instant::now() + secs(3);
    let mut tasks = Vec::new();
    for n in 0..20 {
        let lb = lb.clone();
        tasks.push(tokio::spawn(async move {
            let u = User::new();
            let (mut ok, mut bad, mut last) = (0usize, Vec::new(), None);
            let mut i = 0;
            while Instant::now() < end {
                match u.try_get(&lb.url(&format!("/loop/{n}/{i}"))).await {
                    Ok(r) if (200..300).contains(&r.status) => {
                        ok += 1;
                        last = r.backend();
                    }
                    Ok(r) => bad.push(format!("user {n}: {}", r.describe())),
                    Err(e) => bad.push(format!("user {n}: transport error {e}")),
                }
                i += 1;
                sleep_ms(10).await;
            }
            (ok, bad, last)
        }));
    }
    sleep_ms(1000).await;
    let victim = &bs[1];
    let served_before = victim.requests();
    victim.stop().await;

    let mut failures = Vec::new();
    for t in tasks {
        let (ok, bad, last) = tokio::time::timeout(secs(30), t).await.expect("user loop hung").expect("task");
        assert!(ok > 0, "a user got no answer at all");
        assert_ne!(last.as_deref(), Some(victim.name()), "a user ended on the dead backend");
        failures.extend(bad);
    }
    assert!(served_before > 0, "the victim had no sessions before it died");
    assert!(
        failures.is_empty(),
        "{} failed requests while {} died, e.g. {:?}",
        failures.len(),
        victim.name(),
        &failures[..failures.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_thresholds_need_consecutive_results() {
    let bs = TestBackend::start_many(&["steady", "flaky"]).await;
    let flaky = &bs[1];
    let lb = balancer(&refs(&bs))
        .set("health.interval", "100ms")
        .set("health.timeout", "100ms")
        .set("health.unhealthy_threshold", 3)
        .set("health.healthy_threshold", 2)
        .set("passive.consecutive_failures", 1_000_000)
        .start()
        .await;
    let probes = Deadline::after(secs(5));
    while flaky.probes_ok() < 2 {
        assert!(!probes.expired(), "no active health probes within 5 s");
        sleep_ms(20).await;
    }

    // Two failing probes (fewer than 3), then passes: stays healthy throughout.
    flaky.fail_next_probes(2);
    let ok0 = flaky.probes_ok();
    let dl = Deadline::after(secs(5));
    while !(flaky.probes_failed() >= 2 && flaky.probes_ok() >= ok0 + 2) {
        assert!(
            lb.healthy("flaky").await,
            "marked unhealthy after {} failed probes (unhealthy_threshold = 3)",
            flaky.probes_failed()
        );
        assert!(!dl.expired(), "blip phase did not complete within 5 s");
        sleep_ms(10).await;
    }
    assert!(lb.healthy("flaky").await, "unhealthy after a 2-probe blip");

    // Persistent failure: unhealthy, but only once 3 probes in a row failed.
    let failed0 = flaky.probes_failed();
    flaky.fail_health(true);
    let dl = Deadline::after(secs(5));
    loop {
        let healthy = lb.healthy("flaky").await;
        let failed = flaky.probes_failed() - failed0;
        if !healthy {
            assert!(failed >= 3, "unhealthy after only {failed} failed probes (threshold 3)");
            break;
        }
        assert!(!dl.expired(), "still healthy after {failed} failed probes");
        sleep_ms(10).await;
    }

    // Recovery: healthy again only after 2 passing probes.
    let ok0 = flaky.probes_ok();
    flaky.fail_health(false);
    let dl = Deadline::after(secs(5));
    loop {
        let healthy = lb.healthy("flaky").await;
        let passed = flaky.probes_ok() - ok0;
        if healthy {
            assert!(passed >= 2, "healthy again after only {passed} passing probes (threshold 2)");
            break;
        }
        assert!(!dl.expired(), "still unhealthy after {passed} passing probes");
        sleep_ms(10).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_ejection_without_active_checks() {
    let bs = TestBackend::start_many(&["alive", "dies"]).await;
    let (alive, dies) = (&bs[0], &bs[1]);
    let lb = balancer(&refs(&bs))
        .set("session.mode", "none")
        .set("balance.algorithm", "round_robin")
        .set("health.enabled", false)
        .set("passive.consecutive_failures", 2)
        .set("passive.ejection_time", "2s")
        .start()
        .await;
    let c = plain_client();

    dies.stop().await;
    let mut ejected = false;
    for i in 0..20 {
        let r = get(&c, &lb.url(&format!("/p/{i}"))).await;
        assert_eq!(r.status, 200, "request {i} (connect failures are retried): {}", r.describe());
        assert_eq!(r.backend().as_deref(), Some("alive"));
        if !lb.healthy("dies").await {
            ejected = true;
            break;
        }
    }
    assert!(ejected, "20 requests with 2 consecutive_failures did not eject a dead backend");
    let ejected_at = Instant::now();

    // Listening again, but ejected: gets nothing until ejection_time has passed.
    dies.restart().await;
    let before = alive.requests();
    fresh_requests(&lb, 10).await;
    assert!(!lb.healthy("dies").await, "re-admitted well before ejection_time (2s)");
    assert_eq!(dies.requests(), 0, "an ejected backend got new requests");
    assert_eq!(alive.requests(), before + 10);

    let dl = Deadline::after(secs(6));
    loop {
        let _ = get(&c, &lb.url("/poll")).await;
        if lb.healthy("dies").await {
            break;
        }
        assert!(!dl.expired(), "not re-admitted 6 s after ejection (ejection_time 2s)");
        sleep_ms(50).await;
    }
    assert!(ejected_at.elapsed() >= ms(1500), "re-admitted after {:?} (ejection_time 2s)", ejected_at.elapsed());
    let backends = fresh_requests(&lb, 6).await;
    assert!(backends.iter().any(|b| b == "dies"), "re-admitted backend gets no new sessions: {backends:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_draining_by_config_gets_no_new_sessions() {
    let bs = three().await;
    let lb = fast(&bs).backend_set("app3", "state", "drain").start().await;
    assert_eq!(lb.backend("app3").await["state"], "drain");
    let spread = counts(fresh_requests(&lb, 50).await);
    assert!(!spread.contains_key("app3"), "draining backend got new sessions: {spread:?}");
    assert_eq!(bs[2].requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_at_runtime_keeps_pinned_sessions_and_takes_no_new_ones() {
    let bs = three().await;
    let lb = fast(&bs).start().await;
    let users = one_user_per_backend(&lb, &bs).await;

    assert_eq!(lb.admin_post("/api/backends/app2/drain").await, 200);
    assert_eq!(lb.backend("app2").await["state"], "drain");
    assert_eq!(lb.admin_post("/api/backends/nope/drain").await, 404);

    for i in 0..10 {
        let r = users[1].get(&lb.url(&format!("/pinned/{i}"))).await;
        assert_eq!(
            r.backend().as_deref(),
            Some("app2"),
            "session pinned to a draining backend was moved (request {i})"
        );
    }
    let spread = counts(fresh_requests(&lb, 50).await);
    assert!(!spread.contains_key("app2"), "draining backend got new sessions: {spread:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maint_moves_pinned_sessions_and_enable_brings_the_backend_back() {
    let bs = three().await;
    let lb = fast(&bs).start().await;
    let users = one_user_per_backend(&lb, &bs).await;

    assert_eq!(lb.admin_post("/api/backends/app2/maint").await, 200);
    assert_eq!(lb.backend("app2").await["state"], "maint");
    let served = bs[1].requests();

    let r = users[1].get(&lb.url("/moved")).await;
    assert_eq!(r.status, 200, "{}", r.describe());
    let new = r.backend().unwrap();
    assert_ne!(new, "app2", "session stayed on a backend in maintenance");
    assert_eq!(named(&bs, &new).last_seen().unwrap().header("x-stickylb-previous-backend").as_deref(), Some("app2"));
    for i in 0..5 {
        let r = users[1].get(&lb.url(&format!("/moved/{i}"))).await;
        assert_eq!(r.backend().as_deref(), Some(new.as_str()));
    }
    let spread = counts(fresh_requests(&lb, 50).await);
    assert!(!spread.contains_key("app2"), "backend in maintenance got new sessions: {spread:?}");
    assert_eq!(bs[1].requests(), served, "backend in maintenance got requests");

    assert_eq!(lb.admin_post("/api/backends/app2/enable").await, 200);
    assert_eq!(lb.backend("app2").await["state"], "active");
    let spread = counts(fresh_requests(&lb, 6).await);
    assert!(spread.contains_key("app2"), "enabled backend gets no new sessions: {spread:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_backend_down_reject_answers_503_for_pinned_sessions() {
    let bs = three().await;
    let lb = fast(&bs).set("session.on_backend_down", "reject").start().await;
    let u = User::new();
    let pinned = u.get(&lb.url("/start")).await.backend().unwrap();
    let b = named(&bs, &pinned);
    b.stop().await;

    let r = u.get(&lb.url("/refused")).await;
    assert_eq!(r.status, 503, "pinned backend refusing connections: {}", r.describe());
    assert!(lb.wait_healthy(&pinned, false, secs(5)).await, "{pinned} never marked down");
    let r = u.get(&lb.url("/down")).await;
    assert_eq!(r.status, 503, "pinned backend marked down: {}", r.describe());

    let r = get(&plain_client(), &lb.url("/newcomer")).await;
    assert_eq!(r.status, 200, "new sessions must still be served: {}", r.describe());
    assert_ne!(r.backend(), Some(pinned));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_eligible_backend_gives_503_then_service_resumes_by_itself() {
    let bs = TestBackend::start_many(&["app1", "app2"]).await;
    let lb = fast(&bs).set("session.mode", "none").start().await;
    for b in &bs {
        b.stop().await;
    }
    for b in &bs {
        assert!(lb.wait_healthy(b.name(), false, secs(5)).await, "{} never marked down", b.name());
    }
    let r = get(&plain_client(), &lb.url("/nobody")).await;
    assert_eq!(r.status, 503, "{}", r.describe());
    assert!(!r.text().trim().is_empty(), "503 without a body");
    let ctype = r.header("content-type").unwrap_or_default();
    assert!(ctype.starts_with("text/plain"), "content-type {ctype:?}");

    bs[0].restart().await;
    let dl = Deadline::after(secs(5));
    let c = plain_client();
    loop {
        let r = get(&c, &lb.url("/again")).await;
        if r.status == 200 {
            assert_eq!(r.backend().as_deref(), Some("app1"));
            break;
        }
        assert!(!dl.expired(), "no service 5 s after a backend came back: {}", r.describe());
        sleep_ms(50).await;
    }
}

/// A backend whose keep-alive connections each carry one answer: the next request on the same
/// connection is read and the connection closed unanswered, as when a server's keep-alive
/// timeout fires just as the proxy reuses the connection. Aborted on drop.
struct OneAnswerPerConnection {
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl OneAnswerPerConnection {
    /// `close_at_once`: each connection is closed right after its answer (keep-alive was
    /// promised), as a backend whose idle timeout is shorter than the client's pause does: the
    /// proxy must find the idle connection closed before using it.
    async fn spawn(name: &'static str, close_at_once: bool) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind((HOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let mut got = Vec::new();
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    let body = format!("served-by-{name}");
                    let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                    let _ = s.write_all(format!("{head}{body}").as_bytes()).await;
                    if !close_at_once {
                        // Keep the connection open until the next request starts, then drop it.
                        let _ = s.read(&mut buf).await;
                    }
                });
            }
        });
        OneAnswerPerConnection { addr, task }
    }
}

/// Backends `a` and `b` of that kind behind a balancer without health checks (the backends
/// are kept alive with it), and the answer of a first request.
async fn two_of_a_kind(close_at_once: bool) -> ([OneAnswerPerConnection; 2], Balancer, User, Reply) {
    let backends = [
        OneAnswerPerConnection::spawn("a", close_at_once).await,
        OneAnswerPerConnection::spawn("b", close_at_once).await,
    ];
    let lb = balancer(&[])
        .backend_at("a", &backends[0].addr.to_string())
        .backend_at("b", &backends[1].addr.to_string())
        .set("health.enabled", false)
        .start()
        .await;
    let u = User::new();
    let first = u.get(&lb.url("/one")).await;
    assert_eq!(first.status, 200, "{}", first.describe());
    (backends, lb, u, first)
}

impl Drop for OneAnswerPerConnection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_closing_a_reused_connection_does_not_move_the_session() {
    let (_backends, lb, u, first) = two_of_a_kind(false).await;
    for i in 0..10 {
        let r = u.get(&lb.url(&format!("/again/{i}"))).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.describe());
        assert_eq!(r.text(), first.text(), "request {i} left its backend: {}", r.describe());
    }
}

/// A request that is never sent twice (DELETE, no body) must not meet a pooled connection the
/// backend already closed: the pool sees the close before reusing it (a 502 here means the
/// idle check missed it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_the_backend_closed_is_not_reused() {
    let (_backends, lb, u, first) = two_of_a_kind(true).await;
    for i in 0..10 {
        // Time for the backend's FIN to arrive before the next request.
        sleep_ms(30).await;
        let resp = u.client.delete(lb.url(&format!("/item/{i}"))).send().await.expect("DELETE");
        let r = Reply::read(resp).await.expect("reply");
        assert_eq!(r.status, 200, "DELETE {i}: {}", r.describe());
        assert_eq!(r.text(), first.text(), "DELETE {i} left its backend: {}", r.describe());
    }
}
