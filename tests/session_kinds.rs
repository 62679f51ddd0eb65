//! The seed's other session kinds (issue 13): servlet routes (`ID.ROUTE`, mod_jk style) and
//! preferred affinity for session-replicating backends. SOAP sessions: tests/soap.rs.

mod common;

use common::*;

/// Learn mode on JSESSIONID with a route per backend (node1..node3).
fn routed(bs: &[TestBackend]) -> BalancerBuilder {
    let mut b = learn_jsessionid(&refs(bs));
    for (i, be) in bs.iter().enumerate() {
        b = b.backend_set(be.name(), "route", format!("node{}", i + 1).as_str());
    }
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_suffix_routes_the_first_request_the_same_on_two_instances_without_a_shared_store() {
    let bs = three().await;
    let (a, b) = (routed(&bs).start().await, routed(&bs).start().await);
    // B's round robin a step ahead: choosing on their own, the two would disagree.
    get(&plain_client(), &b.url("/skew")).await;
    let c = plain_client();
    for i in 0..6 {
        let route = i % 3 + 1;
        let id = format!("{:X}{i}.node{route}", std::process::id());
        let want = format!("app{route}");
        for lb in [&a, &b] {
            let by_cookie = get_with(&c, &lb.url("/r"), &[("Cookie", &format!("JSESSIONID={id}"))]).await;
            assert_eq!(by_cookie.backend().as_deref(), Some(want.as_str()), "{id} by cookie via port {}", lb.port);
            let by_path = get(&c, &lb.url(&format!("/shop;jsessionid={id}?x=1"))).await;
            assert_eq!(by_path.backend().as_deref(), Some(want.as_str()), "{id} by path parameter");
        }
    }
    assert_eq!(a.total_sessions().await, 0, "routes need no pins");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_route_suffix_is_just_balanced() {
    let bs = three().await;
    let lb = routed(&bs).start().await;
    let c = plain_client();
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..6 {
        let r = get_with(&c, &lb.url("/u"), &[("Cookie", &format!("JSESSIONID=ABC{i}.node9"))]).await;
        assert_eq!(r.status, 200);
        seen.insert(r.backend().unwrap());
    }
    assert!(seen.len() > 1, "balanced, not stuck on one backend: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_routes_backend_is_in_maint_the_session_moves_and_stays_moved() {
    let bs = three().await;
    let lb = routed(&bs).start().await;
    let c = plain_client();
    let h = [("Cookie", "JSESSIONID=F00D.node2")];
    assert_eq!(get_with(&c, &lb.url("/a"), &h).await.backend().as_deref(), Some("app2"));
    assert_eq!(lb.admin_post("/api/backends/app2/maint").await, 200);
    let moved = get_with(&c, &lb.url("/b"), &h).await;
    let to = moved.backend().unwrap();
    assert_ne!(to, "app2");
    assert_eq!(moved.seen_header("x-stickylb-previous-backend").as_deref(), Some("app2"));
    assert_eq!(lb.admin_post("/api/backends/app2/enable").await, 200);
    for i in 0..3 {
        let r = get_with(&c, &lb.url(&format!("/c/{i}")), &h).await;
        assert_eq!(r.backend().as_deref(), Some(to.as_str()), "the pin wins over the route until a new id");
    }
    // The application issues a new id with its own route (Tomcat's JvmRouteBinderValve):
    let fresh = format!("BEEF.{}", ["node1", "node2", "node3"][to[3..].parse::<usize>().unwrap() - 1]);
    let r = get_with(&c, &lb.url("/d"), &[("Cookie", &format!("JSESSIONID={fresh}"))]).await;
    assert_eq!(r.backend().as_deref(), Some(to.as_str()));
}

/// Concurrent requests from users whose sessions are spread over the three backends, while
/// app1 is slow: for each user, its backend and the previous-backend header of each request
/// that did not reach it; and the moves counted with reason "overload".
async fn load_with_a_slow_backend(affinity: &str) -> (Vec<(String, Vec<Option<String>>)>, f64) {
    let bs = three().await;
    let lb = balancer(&refs(&bs))
        .set("session.affinity", affinity)
        .set("balance.algorithm", "round_robin")
        .set("log.access_log", false)
        .start()
        .await;
    let mut users = Vec::new();
    for i in 0..9 {
        let u = User::new();
        let home = u.get(&lb.url(&format!("/start/{i}"))).await.backend().unwrap();
        users.push((u, home));
    }
    bs[0].set_delay(ms(300));
    let mut tasks = tokio::task::JoinSet::new();
    for (u, home) in users {
        let url = lb.url("/work");
        tasks.spawn(async move {
            let mut moves = Vec::new();
            let mut at = home.clone();
            for _ in 0..8 {
                let r = u.get(&url).await;
                assert_eq!(r.status, 200);
                let now = r.backend().unwrap();
                if now != at {
                    moves.push(r.seen_header("x-stickylb-previous-backend"));
                    at = now;
                }
            }
            (home, moves)
        });
    }
    let mut out = Vec::new();
    while let Some(r) = tasks.join_next().await {
        out.push(r.unwrap());
    }
    let overload = lb.metric("stickylb_session_reassignments_total{reason=\"overload\"}").await.unwrap_or(0.0);
    let status = lb.admin_get("/api/status").await.json();
    assert_eq!(status["affinity"], affinity, "the status page shows the affinity");
    assert_eq!(status["moved_for_overload"].as_f64(), Some(overload), "and the moves for load");
    (out, overload)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preferred_affinity_sheds_sessions_from_an_overloaded_backend() {
    let (users, overload) = load_with_a_slow_backend("preferred").await;
    let from_slow = users.iter().filter(|(home, moves)| home == "app1" && !moves.is_empty()).count();
    assert!(from_slow >= 2, "sessions left the slow backend: {users:?}");
    for (home, moves) in &users {
        let first = moves.first().cloned().flatten();
        assert!(
            moves.is_empty() || first.as_deref() == Some(home.as_str()),
            "a move names where it came from: {home} {moves:?}"
        );
    }
    assert!(overload >= from_slow as f64, "counted as reason=\"overload\": {overload}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_affinity_under_the_same_load_moves_nothing() {
    let (users, overload) = load_with_a_slow_backend("strict").await;
    assert!(users.iter().all(|(_, moves)| moves.is_empty()), "{users:?}");
    assert_eq!(overload, 0.0);
}
