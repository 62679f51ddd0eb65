//! Sessions never land on the wrong backend (issue 11): a flood over the table bound, a
//! restart without snapshot, backends that fail after accepting the connection, a backend
//! that dies and comes back, and a moved session's new cookie.

mod common;

use common::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

// ------------------------------------------------------------------------------------ flood

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_far_over_the_table_bound_moves_no_insert_session() {
    let bs = three().await;
    let lb = balancer(&refs(&bs))
        .set("session.max_entries", 200)
        .set("balance.algorithm", "round_robin")
        .set("log.access_log", false)
        .start()
        .await;
    let mut users = Vec::new();
    for i in 0..30 {
        let u = User::new();
        let b = served_by(&u, &lb, &format!("/login/{i}")).await;
        users.push((u, b));
    }
    let (active, idle) = users.split_at(15);
    // 4,000 cookieless requests: twenty times the bound, while half the sessions keep working.
    let flood = plain_client();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..8 {
        let (c, url) = (flood.clone(), lb.url(&format!("/flood/{t}")));
        tasks.spawn(async move {
            for _ in 0..500 {
                assert_eq!(get(&c, &url).await.status, 200);
            }
        });
    }
    for round in 0..5 {
        for (u, b) in active {
            assert_eq!(&served_by(u, &lb, &format!("/active/{round}")).await, b, "an active session during the flood");
        }
    }
    while let Some(t) = tasks.join_next().await {
        t.expect("flood task");
    }
    assert!(lb.total_sessions().await <= 200, "the table stays bounded");
    for (u, b) in active.iter().chain(idle) {
        assert_eq!(&served_by(u, &lb, "/after").await, b, "every session still on its backend after the flood");
    }
    let moved = lb.metric("stickylb_session_reassignments_total").await.unwrap_or(0.0);
    assert_eq!(moved, 0.0, "nothing was reassigned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invented_learn_ids_create_no_pins_and_evict_nobody() {
    let bs = three().await;
    let lb = balancer(&refs(&bs))
        .set("session.mode", "learn")
        .set("session.cookie", "JSESSIONID")
        // The sharded table bounds each shard: far above the 20 sessions, far below the flood.
        .set("session.max_entries", 1000)
        .set("log.access_log", false)
        .start()
        .await;
    let mut users = Vec::new();
    for i in 0..20 {
        let u = User::new();
        let b = served_by(&u, &lb, &format!("/login?n={i}")).await;
        users.push((u, b));
    }
    assert_eq!(lb.total_sessions().await, 20);
    let c = plain_client();
    for i in 0..2_000 {
        let r = get_with(&c, &lb.url("/x"), &[("Cookie", &format!("JSESSIONID=invented-{i}"))]).await;
        assert_eq!(r.status, 200);
    }
    assert_eq!(lb.total_sessions().await, 20, "no invented id was pinned");
    assert_eq!(lb.session("invented-7").await, None);
    for (u, b) in &users {
        assert_eq!(&served_by(u, &lb, "/after").await, b);
    }
}

// ------------------------------------------------------------------------------------ restart

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_sessions_keep_their_backend_across_a_restart_without_snapshot() {
    let bs = three().await;
    let builder = || balancer(&refs(&bs)).set("balance.algorithm", "round_robin");
    let mut first = builder().start_binary().await;
    let mut users = Vec::new();
    for i in 0..12 {
        let u = User::new();
        let b = served_by(&u, &first, &format!("/start/{i}")).await;
        users.push((u, b));
    }
    first.signal("TERM");
    first.wait_exit(secs(10)).await.expect("the first instance stops");
    // A new process with an empty table, its round robin starting over one step ahead.
    let second = builder().start().await;
    served_by(&User::new(), &second, "/skew").await;
    for (u, b) in users.iter().rev() {
        assert_eq!(&served_by(u, &second, "/again").await, b, "the cookie names the session's backend");
    }
    assert_eq!(second.metric("stickylb_session_reassignments_total").await.unwrap_or(0.0), 0.0);
}

// ------------------------------------------------------------------------------------ after send

/// How the flaky backend treats requests once broken.
#[derive(Clone, Copy)]
enum Breakage {
    /// Read the request, then close without an answer.
    Close,
    /// Answer with something that is not HTTP.
    Garbage,
    /// Send half of the headers, then close.
    HalfResponse,
}

/// A backend on a raw socket: answers like a well-behaved one (`x-backend: flaky`) until
/// broken, then fails each request after reading it. Counts the requests it read.
struct Flaky {
    port: u16,
    broken: Arc<AtomicBool>,
    requests: Arc<AtomicUsize>,
}

impl Flaky {
    async fn start(how: Breakage) -> Flaky {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (broken, requests) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
        let (b, r) = (broken.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let (b, r) = (b.clone(), r.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    let mut have = Vec::new();
                    loop {
                        let n = match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        have.extend_from_slice(&buf[..n]);
                        let Some(end) = have.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                        let head = String::from_utf8_lossy(&have[..end]).to_lowercase();
                        let body_len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
                            .unwrap_or(0);
                        if have.len() < end + 4 + body_len {
                            continue;
                        }
                        have.drain(..end + 4 + body_len);
                        let health = head.starts_with("get /health");
                        if !health {
                            r.fetch_add(1, Ordering::SeqCst);
                        }
                        if !b.load(Ordering::SeqCst) || health {
                            let body = "{\"backend\":\"flaky\"}";
                            let resp = format!(
                                "HTTP/1.1 200 OK\r\nx-backend: flaky\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                                body.len()
                            );
                            if s.write_all(resp.as_bytes()).await.is_err() {
                                return;
                            }
                            continue;
                        }
                        let _ = match how {
                            Breakage::Close => return,
                            Breakage::Garbage => s.write_all(b"\x00\x01garbage, not HTTP at all\r\n\r\n").await,
                            Breakage::HalfResponse => s.write_all(b"HTTP/1.1 200 OK\r\nx-backend: fla").await,
                        };
                        return;
                    }
                });
            }
        });
        Flaky { port, broken, requests }
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// A session pinned to the flaky backend (round robin over app1, flaky, app2).
async fn session_on_flaky(lb: &Balancer) -> User {
    for _ in 0..6 {
        let u = User::new();
        if served_by(&u, lb, "/start").await == "flaky" {
            return u;
        }
    }
    panic!("round robin never chose the flaky backend");
}

async fn check_after_send(how: Breakage) {
    let bs = TestBackend::start_many(&["app1", "app2"]).await;
    let flaky = Flaky::start(how).await;
    let lb = balancer(&[&bs[0]])
        .backend_at("flaky", &flaky.address())
        .backend_at("app2", &bs[1].address())
        .set("balance.algorithm", "round_robin")
        .set("passive.consecutive_failures", 100)
        .start()
        .await;
    let user = session_on_flaky(&lb).await;
    let before = (bs[0].requests(), bs[1].requests(), flaky.requests.load(Ordering::SeqCst));
    flaky.broken.store(true, Ordering::SeqCst);

    let r = user.get(&lb.url("/get")).await;
    assert_eq!(r.status, 502, "{}", r.describe());
    let tried = flaky.requests.load(Ordering::SeqCst) - before.2;
    assert!((1..=2).contains(&tried), "a GET runs at most twice on its backend, ran {tried} times");
    assert_eq!((bs[0].requests(), bs[1].requests()), (before.0, before.1), "no other backend saw it");

    let posted = flaky.requests.load(Ordering::SeqCst);
    let c = &user.client;
    let r = c.post(lb.url("/post")).body("payload").send().await.expect("POST answered");
    assert_eq!(r.status().as_u16(), 502);
    assert_eq!(flaky.requests.load(Ordering::SeqCst) - posted, 1, "a POST is never sent again");
    assert_eq!((bs[0].requests(), bs[1].requests()), (before.0, before.1), "nor to another backend");

    flaky.broken.store(false, Ordering::SeqCst);
    assert_eq!(served_by(&user, &lb, "/healed").await, "flaky", "the session stayed pinned");
    assert_eq!(lb.metric("stickylb_session_reassignments_total").await.unwrap_or(0.0), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_closing_after_reading_the_request_keeps_its_session() {
    check_after_send(Breakage::Close).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_answering_garbage_keeps_its_session() {
    check_after_send(Breakage::Garbage).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_closing_mid_response_keeps_its_session() {
    check_after_send(Breakage::HalfResponse).await;
}

// ------------------------------------------------------------------------------------ recovery

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_and_restarted_backend_takes_new_sessions_within_a_few_probes() {
    let bs = three().await;
    let lb = balancer(&refs(&bs))
        .set("balance.algorithm", "round_robin")
        .set("health.interval", "200ms")
        .set("health.healthy_threshold", 2)
        .set("passive.consecutive_failures", 1)
        .set("passive.ejection_time", "60s")
        .start_binary()
        .await;
    bs[1].stop().await;
    // Traffic ejects it passively (a refused connection) long before its 60 s are over.
    for i in 0..6 {
        assert_eq!(User::new().get(&lb.url(&format!("/while-down/{i}"))).await.status, 200);
    }
    assert!(lb.wait_healthy("app2", false, secs(5)).await, "app2 is out");
    bs[1].restart().await;
    let back = Deadline::after(secs(3));
    assert!(lb.wait_healthy("app2", true, secs(3)).await, "app2 rejoins on its probes, not its ejection time");
    let mut counts = std::collections::BTreeMap::new();
    for i in 0..9 {
        *counts.entry(served_by(&User::new(), &lb, &format!("/new/{i}")).await).or_insert(0) += 1;
    }
    assert!(counts.get("app2").copied().unwrap_or(0) >= 2, "app2 takes new sessions again: {counts:?}");
    assert!(!back.expired() || counts.contains_key("app2"));
    let log = lb.log_tail(400);
    assert_eq!(log.matches("backend ejected").count(), 1, "ejection logged once\n{log}");
    assert_eq!(log.matches("backend is up").count(), 1, "return logged once\n{log}");
}

// ------------------------------------------------------------------------------------ moved

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_sessions_new_cookie_alone_routes_to_its_new_backend() {
    let bs = three().await;
    let lb = balancer(&refs(&bs)).set("balance.algorithm", "round_robin").start().await;
    let u = User::new();
    let first = served_by(&u, &lb, "/start").await;
    assert_eq!(lb.admin_post(&format!("/api/backends/{first}/maint")).await, 200);
    let r = u.get(&lb.url("/moved")).await;
    let moved = r.backend().expect("backend");
    assert_ne!(moved, first);
    assert_eq!(r.seen_header("x-stickylb-previous-backend").as_deref(), Some(first.as_str()));
    assert!(r.set_cookie(COOKIE).is_some(), "a moved session gets a new cookie");
    // Forget the pin everywhere, bring the old backend back: only the cookie is left to route.
    let id_cookie = u.cookie(&lb.url("/"), COOKIE).expect("cookie");
    assert_eq!(lb.admin_delete(&format!("/api/sessions/{}", pct(&id_cookie))).await, 200);
    assert_eq!(lb.admin_post(&format!("/api/backends/{first}/enable")).await, 200);
    for i in 0..4 {
        assert_eq!(served_by(&u, &lb, &format!("/alone/{i}")).await, moved, "the new cookie names {moved}");
    }
}
