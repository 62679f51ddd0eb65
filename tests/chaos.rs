//! Chaos, short variant for CI (< 15 s): three backends and cookie-keeping users; during the
//! run one backend is killed and restarted, one turns slow, one answers 500 to some requests.
//! No GET fails, only the killed backend's sessions move (each move names it in
//! `X-Stickylb-Previous-Backend`), and sessions on the other backends never move.
//! `scripts/chaos` runs a longer variant (CHAOS_SECS).

mod common;

use common::*;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// What one user saw.
#[derive(Default, Debug)]
struct Seen {
    requests: usize,
    failed: Vec<String>,
    /// (backend before, backend after, previous-backend header the backend received)
    moves: Vec<(String, String, Option<String>)>,
    errors_passed_through: usize,
}

async fn user_loop(
    lb_url: String,
    u: User,
    mut home: String,
    stop: Arc<AtomicBool>,
    five_hundreds: bool,
) -> (String, Seen) {
    let mut seen = Seen::default();
    let start = home.clone();
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) && i < 2_000 {
        i += 1;
        let path = if five_hundreds && i % 3 == 0 { "/status?code=500".to_string() } else { format!("/chaos/{i}") };
        let r = match u.try_get(&format!("{lb_url}{path}")).await {
            Ok(r) => r,
            Err(e) => {
                seen.failed.push(e);
                continue;
            }
        };
        seen.requests += 1;
        match r.status {
            200 => {}
            500 if path.starts_with("/status") => seen.errors_passed_through += 1,
            s => {
                seen.failed.push(format!("{path}: {s} {}", r.describe()));
                continue;
            }
        }
        let backend = r.backend().unwrap_or_default();
        if backend != home {
            seen.moves.push((home.clone(), backend.clone(), r.seen_header("x-stickylb-previous-backend")));
            home = backend;
        }
        sleep_ms(5).await;
    }
    (start, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_loses_no_get_and_moves_only_the_killed_backends_sessions() {
    let secs_total: u64 = std::env::var("CHAOS_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(6).clamp(4, 600);
    let bs = TestBackend::start_many(&["app1", "app2", "app3"]).await;
    let lb = balancer(&bs.iter().collect::<Vec<_>>())
        .set("balance.algorithm", "round_robin")
        .set("health.interval", "200ms")
        .set("passive.consecutive_failures", 2)
        .set("log.access_log", false)
        .start()
        .await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..24 {
        let u = User::new();
        let r = u.get(&lb.url(&format!("/start/{i}"))).await;
        assert_eq!(r.status, 200);
        let home = r.backend().unwrap();
        let five_hundreds = home == "app3";
        tasks.spawn(user_loop(lb.url(""), u, home, stop.clone(), five_hundreds));
    }
    let phase = ms(secs_total * 1000 / 6);
    sleep_ms(phase.as_millis() as u64).await;
    bs[0].stop().await; // app1 killed
    bs[1].set_delay(ms(150)); // app2 slow
    sleep_ms(2 * phase.as_millis() as u64).await;
    bs[0].restart().await;
    sleep_ms(2 * phase.as_millis() as u64).await;
    bs[1].set_delay(ms(0));
    sleep_ms(phase.as_millis() as u64).await;
    stop.store(true, Ordering::Relaxed);

    let (mut requests, mut passed_500) = (0, 0);
    let mut moved_from = BTreeMap::new();
    while let Some(r) = tasks.join_next().await {
        let (start, seen) = r.expect("user task");
        assert!(seen.failed.is_empty(), "a user of {start} saw failures: {:?}", seen.failed);
        requests += seen.requests;
        passed_500 += seen.errors_passed_through;
        for (from, to, previous) in &seen.moves {
            assert_eq!(from, "app1", "only the killed backend's sessions move ({from} -> {to})");
            assert_eq!(previous.as_deref(), Some("app1"), "the move named the previous backend");
            *moved_from.entry(from.clone()).or_insert(0) += 1;
        }
        if start != "app1" {
            assert!(seen.moves.is_empty(), "a session on {start} moved: {:?}", seen.moves);
        } else {
            assert_eq!(seen.moves.len(), 1, "an app1 session moved once and stayed: {:?}", seen.moves);
        }
    }
    assert!(requests > 24 * 10, "the run did work: {requests} requests");
    assert!(passed_500 > 0, "the backend's own 500s are passed through, not failover");
    assert_eq!(moved_from.get("app1"), Some(&8), "every app1 session (8 of 24) moved: {moved_from:?}");
}
