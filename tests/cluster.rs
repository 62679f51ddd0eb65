//! Several instances: pins shared through a real `redis-server` (started here on a free
//! loopback port, its own directory, no persistence), reassignments heard through pub/sub,
//! racing first requests, a Redis outage and its recovery; and the memory store's snapshot
//! across a restart.
//!
//! `redis-server` must be installed (scripts/test installs it): without it these tests fail,
//! they do not skip.

mod common;

use std::path::Path;
use std::time::Instant;

use common::*;

// ------------------------------------------------------------------------------------ helpers

const PREFIX: &str = "lbtest:";

async fn three() -> Vec<TestBackend> {
    TestBackend::start_many(&["app1", "app2", "app3"]).await
}

/// One instance of a Redis-backed cluster: round robin (so that two instances choosing on
/// their own would disagree) and no active health checks (so an instance only learns about a
/// moved session from the other instance).
fn instance(bs: &[TestBackend], redis_url: &str) -> BalancerBuilder {
    balancer(&refs(bs))
        .set("balance.algorithm", "round_robin")
        .set("health.enabled", false)
        .set("cluster.store", "redis")
        .set("cluster.redis_url", redis_url)
        .set("cluster.key_prefix", PREFIX)
        .set("cluster.redis_timeout", "1s")
}

/// GET `path` through `lb` as `user`: the backend that answered (asserting a 200).
async fn served_by(user: &User, lb: &Balancer, path: &str) -> String {
    let r = user.get(&lb.url(path)).await;
    assert_eq!(r.status, 200, "{path} through port {}: {}", lb.port, r.describe());
    r.backend().unwrap_or_else(|| panic!("no backend in {}", r.describe()))
}

/// `n` users, each with a session made through `lb`, and the backend of each.
async fn sessions(lb: &Balancer, n: usize) -> Vec<(User, String)> {
    let mut out = Vec::new();
    for i in 0..n {
        let u = User::new();
        let b = served_by(&u, lb, &format!("/start/{i}")).await;
        out.push((u, b));
    }
    out
}

/// The sessions grouped by backend: an instance that ignored the shared pins and just went
/// round robin could not serve this order right by chance, as it could the creation order.
fn by_backend(users: &[(User, String)]) -> Vec<&(User, String)> {
    let mut v: Vec<&(User, String)> = users.iter().collect();
    v.sort_by(|x, y| x.1.cmp(&y.1));
    v
}

/// Waits until `lb`'s log says it reached Redis again, sending it requests meanwhile (an
/// instance only notices by trying).
async fn wait_reconnected(lb: &Balancer) {
    let dl = Deadline::after(secs(10));
    while !lb.log_tail(500).contains("Redis is reachable again") {
        assert!(!dl.expired(), "port {} never reached Redis again\n{}", lb.port, lb.log_tail(20));
        served_by(&User::new(), lb, "/probe").await;
        sleep_ms(100).await;
    }
}

/// As [`wait_reconnected`], for an instance in header mode: its probes are requests of new
/// sessions (a request without one does not ask the store).
async fn wait_reconnected_header(lb: &Balancer, client: &reqwest::Client) {
    let dl = Deadline::after(secs(10));
    for i in 0.. {
        if lb.log_tail(500).contains("Redis is reachable again") {
            return;
        }
        assert!(!dl.expired(), "port {} never reached Redis again\n{}", lb.port, lb.log_tail(20));
        let key = format!("probe-{}-{}-{i}", std::process::id(), lb.port);
        get_with(client, &lb.url("/probe"), &[("X-Session-Id", &key)]).await;
        sleep_ms(100).await;
    }
}

fn pin_pattern() -> String {
    format!("{PREFIX}pin:*")
}

// ------------------------------------------------------------------------------------ tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_made_through_one_instance_keeps_its_backend_through_the_other() {
    let redis = RedisServer::start().await;
    let bs = three().await;
    let a = instance(&bs, &redis.url()).start().await;
    let b = instance(&bs, &redis.url()).start().await;
    let users = sessions(&a, 100).await;
    for (i, (u, backend)) in by_backend(&users).into_iter().enumerate() {
        assert_eq!(&served_by(u, &b, &format!("/other/{i}")).await, backend, "session {i} through B");
    }
    let spread = counts(users.iter().map(|(_, b)| b.clone()));
    assert_eq!(spread.len(), 3, "round robin used every backend: {spread:?}");
    assert_eq!(redis.keys(&pin_pattern()).await.len(), 100, "every pin is in Redis");
}

/// How many times Redis ran `command` since its statistics were reset.
async fn calls(redis: &RedisServer, command: &str) -> u64 {
    let info: String = redis.query(redis::cmd("INFO").arg("commandstats")).await.expect("INFO");
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |rest| rest.split(',').next().unwrap_or_default().parse().expect("a count"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_session_costs_redis_one_command_and_its_later_requests_none() {
    let redis = RedisServer::start().await;
    let bs = three().await;
    let a = instance(&bs, &redis.url()).start().await;
    served_by(&User::new(), &a, "/first").await;
    let _: () = redis.query(redis::cmd("CONFIG").arg("RESETSTAT")).await.expect("RESETSTAT");
    let users = sessions(&a, 20).await;
    for (i, (u, backend)) in users.iter().enumerate() {
        assert_eq!(&served_by(u, &a, &format!("/again/{i}")).await, backend, "session {i}");
    }
    assert_eq!(calls(&redis, "set").await, 20, "one SET NX a new session");
    assert_eq!(calls(&redis, "get").await, 0, "no read-back of a pin just made, no read of a cached one");
    assert_eq!(redis.keys(&pin_pattern()).await.len(), 21);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reassignment_through_one_instance_reaches_the_other_within_100ms() {
    let redis = RedisServer::start().await;
    let bs = three().await;
    let a = instance(&bs, &redis.url()).start().await;
    let b = instance(&bs, &redis.url()).start().await;
    let users = sessions(&a, 30).await;
    for (i, (u, backend)) in users.iter().enumerate() {
        // B caches the pin it is about to be told to forget.
        assert_eq!(&served_by(u, &b, &format!("/warm/{i}")).await, backend, "session {i} through B");
    }
    let victim = users[0].1.clone();
    bs.iter().find(|t| t.name() == victim).unwrap().stop().await;

    let moved: Vec<&(User, String)> = users.iter().filter(|(_, b)| *b == victim).collect();
    assert!(moved.len() >= 5, "enough sessions on {victim}: {}", moved.len());
    for (i, (u, _)) in moved.iter().enumerate() {
        let new = served_by(u, &a, &format!("/moved/{i}")).await;
        assert_ne!(new, victim, "A reassigned the session");
        let answered = Instant::now();
        // B's view of the session (a cached pin shows until the event drops it) must follow
        // through pub/sub alone: a later request through B would also be rescued by the
        // compare-and-set of its own reassignment, which would hide a deaf listener.
        let cookie = u.cookie(&b.url("/"), COOKIE).expect("session cookie");
        while b.session(&cookie).await.as_deref() != Some(new.as_str()) {
            assert!(answered.elapsed() < ms(100), "B still routes session {i} to {victim} 100 ms after A moved it");
        }
        let gap = answered.elapsed();
        let r = u.get(&b.url(&format!("/after/{i}"))).await;
        assert!(gap < ms(100), "B asked {gap:?} after A's answer");
        assert_eq!(r.status, 200, "{}", r.describe());
        assert_eq!(r.backend().as_deref(), Some(new.as_str()), "B follows A's reassignment");
    }
    // B never tried the dead backend itself: it had dropped its cached pins on the event.
    assert_eq!(b.metric("stickylb_session_reassignments_total").await.unwrap_or(0.0), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reassignment_adopts_a_move_another_instance_made_first() {
    let redis = RedisServer::start().await;
    let bs = three().await;
    let b = instance(&bs, &redis.url()).set("session.mode", "header").start().await;
    let client = plain_client();
    let run = std::process::id();
    let mut on_app1 = Vec::new();
    for i in 0..30 {
        let key = format!("cas-{run}-{i}");
        let r = get_with(&client, &b.url("/start"), &[("X-Session-Id", &key)]).await;
        if r.backend().as_deref() == Some("app1") {
            on_app1.push(key);
        }
    }
    assert!(on_app1.len() >= 5, "sessions on app1: {}", on_app1.len());
    // Another instance moved them while B's event was lost: B still has app1 cached. (The
    // value is the store's `created_ms:backend` encoding.)
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    let targets = ["app2", "app2", "app3", "app2", "app3", "app3", "app3", "app2", "app2", "app3"];
    for (key, target) in on_app1.iter().zip(targets.iter().cycle()) {
        redis.set(&format!("{PREFIX}pin:{key}"), &format!("{now}:{target}"), 60_000).await;
    }
    bs[0].stop().await;
    for (key, target) in on_app1.iter().zip(targets.iter().cycle()) {
        let r = get_with(&client, &b.url("/next"), &[("X-Session-Id", key)]).await;
        assert_eq!(r.status, 200, "{}", r.describe());
        assert_eq!(r.backend().as_deref(), Some(*target), "{key}: B adopts the move made first, not its own choice");
    }
}

/// Header mode pins only ids a backend issued: racing first requests with ids the clients
/// invented create no pin on either instance (each is balanced on its own), while an id a
/// backend issues through one instance routes the same through both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_invented_ids_on_two_instances_create_no_pins_and_issued_ids_agree() {
    let redis = RedisServer::start().await;
    let bs = three().await;
    let a = instance(&bs, &redis.url()).set("session.mode", "header").start().await;
    let b = instance(&bs, &redis.url()).set("session.mode", "header").start().await;
    let client = plain_client();
    let run = std::process::id();
    let mut races = tokio::task::JoinSet::new();
    for i in 0..50 {
        let (c, ua, ub) = (client.clone(), a.url("/race"), b.url("/race"));
        races.spawn(async move {
            let key = format!("race-{run}-{i}");
            let h = [("X-Session-Id", key.as_str())];
            let (ra, rb) = tokio::join!(get_with(&c, &ua, &h), get_with(&c, &ub, &h));
            (ra.status, rb.status)
        });
    }
    while let Some(r) = races.join_next().await {
        assert_eq!(r.expect("race task"), (200, 200));
    }
    assert_eq!(redis.keys(&pin_pattern()).await.len(), 0, "no invented id was pinned");
    for i in 0..10 {
        let login = get(&client, &a.url(&format!("/login?n={i}"))).await;
        let sid = login.header("x-session-id").expect("the backend issued an id");
        let h = [("X-Session-Id", sid.as_str())];
        for lb in [&b, &a, &b] {
            let r = get_with(&client, &lb.url("/next"), &h).await;
            assert_eq!(r.backend(), login.backend(), "{sid} through port {}", lb.port);
        }
    }
    assert_eq!(redis.keys(&pin_pattern()).await.len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_is_served_from_the_local_tables_and_reconciled_after() {
    let mut redis = RedisServer::start().await;
    let bs = three().await;
    let a = instance(&bs, &redis.url()).set("cluster.redis_timeout", "200ms").start_binary().await;
    let b = instance(&bs, &redis.url()).set("cluster.redis_timeout", "200ms").start_binary().await;
    let on_a = sessions(&a, 20).await;
    let on_b = sessions(&b, 20).await;

    redis.kill();
    let (old_a, old_b) = (by_backend(&on_a), by_backend(&on_b));
    let mut new_users = Vec::new();
    for i in 0..100 {
        let (u, backend) = old_a[i % old_a.len()];
        assert_eq!(&served_by(u, &a, &format!("/outage/a/{i}")).await, backend, "A, old session {i}");
        let (u, backend) = old_b[i % old_b.len()];
        assert_eq!(&served_by(u, &b, &format!("/outage/b/{i}")).await, backend, "B, old session {i}");
        if i % 10 == 0 {
            // New sessions during the outage are pinned locally (2 of the 200 requests per 20).
            let u = User::new();
            let backend = served_by(&u, &a, "/outage/new").await;
            new_users.push((u, backend));
        }
    }
    for (u, backend) in &new_users {
        assert_eq!(&served_by(u, &a, "/outage/new/again").await, backend, "a session made during the outage");
    }
    for lb in [&a, &b] {
        let errors = lb.metric("stickylb_store_errors_total").await.expect("stickylb_store_errors_total");
        assert!(errors > 0.0, "store errors counted on port {}: {errors}", lb.port);
    }

    redis.restart().await;
    // Pins made or cached before and during the outage are written back as they are used.
    let dl = Deadline::after(secs(20));
    let want = on_a.len() + new_users.len();
    loop {
        for (u, backend) in on_a.iter().chain(&new_users) {
            assert_eq!(&served_by(u, &a, "/recovering").await, backend);
        }
        let n = redis.keys(&pin_pattern()).await.len();
        if n >= want {
            break;
        }
        assert!(!dl.expired(), "only {n} of {want} pins written back to Redis after 20 s\n{}", a.log_tail(20));
        sleep_ms(200).await;
    }
    // Reconciled: B, which never saw these sessions, finds their pins.
    wait_reconnected(&b).await;
    let written_back: Vec<(User, String)> = on_a.into_iter().chain(new_users).collect();
    for (i, (u, backend)) in by_backend(&written_back).into_iter().enumerate() {
        assert_eq!(&served_by(u, &b, "/reconciled").await, backend, "session {i} through B after the outage");
    }
    // And new pins reach Redis again.
    let before = redis.keys(&pin_pattern()).await.len();
    sessions(&b, 5).await;
    assert_eq!(redis.keys(&pin_pattern()).await.len(), before + 5, "{}", b.log_tail(40));
    assert!(a.log_tail(200).contains("Redis is reachable again"), "{}", a.log_tail(30));
}

/// During an outage, each instance pins the same new session on its own (header mode: the
/// backend each instance's round robin chose issues the same id — `/login?sid=` — and each
/// instance pins it there; only sessions the two pinned to different backends are kept). When Redis is back and each instance knows it (it reached Redis for
/// other sessions), the session's first request on either instance already goes where Redis
/// says: the instance asked first writes its pin back (`SET NX`), the other adopts it. A
/// stale outage-local pin routes nothing, not even the one request that would only trigger a
/// background sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_outage_the_first_request_of_a_session_on_every_instance_goes_where_redis_says() {
    let mut redis = RedisServer::start().await;
    let bs = three().await;
    let start = || instance(&bs, &redis.url()).set("session.mode", "header").set("cluster.redis_timeout", "200ms");
    let (a, b) = (start().start_binary().await, start().start_binary().await);
    let client = plain_client();
    redis.kill();
    let run = std::process::id();
    let mut split = Vec::new();
    for i in 0..30 {
        let key = format!("split-{run}-{i}");
        let h = [("X-Session-Id", key.as_str())];
        let issue = format!("/login?sid={key}");
        let on_a = get_with(&client, &a.url(&issue), &h).await.backend().expect("A: backend");
        let on_b = get_with(&client, &b.url(&issue), &h).await.backend().expect("B: backend");
        if on_a == on_b {
            // The two round robins start at random places: a request without a session moves
            // B's a step, so that the next session lands on different backends.
            get(&client, &b.url("/no-session")).await;
            continue;
        }
        // Each instance keeps its own outage pin while Redis is down.
        assert_eq!(get_with(&client, &a.url("/outage/again"), &h).await.backend().as_ref(), Some(&on_a));
        assert_eq!(get_with(&client, &b.url("/outage/again"), &h).await.backend().as_ref(), Some(&on_b));
        split.push(key);
        if split.len() == 6 {
            break;
        }
    }
    assert_eq!(split.len(), 6, "sessions pinned to different backends by A and B during the outage");

    redis.restart().await;
    wait_reconnected_header(&a, &client).await;
    wait_reconnected_header(&b, &client).await;
    for (i, key) in split.iter().enumerate() {
        let h = [("X-Session-Id", key.as_str())];
        // Either instance may be asked first: the first one's pin is the one Redis keeps.
        let (first, second) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let r1 = get_with(&client, &first.url("/after"), &h).await.backend().expect("first: backend");
        let r2 = get_with(&client, &second.url("/after"), &h).await.backend().expect("second: backend");
        let held = redis.get(&format!("{PREFIX}pin:{key}")).await.expect("the pin is in Redis again");
        let in_redis = held.split_once(':').map(|(_, b)| b.to_string());
        assert_eq!(Some(&r1), in_redis.as_ref(), "{key}: first request through port {}", first.port);
        assert_eq!(r2, r1, "{key}: the first request through port {} goes where Redis says", second.port);
        for lb in [&a, &b] {
            let r = get_with(&client, &lb.url("/later"), &h).await;
            assert_eq!(r.backend().as_ref(), Some(&r1), "{key}: a later request through port {}", lb.port);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_starts_without_redis_and_uses_it_once_it_is_up() {
    let port = free_port();
    let bs = three().await;
    let a = instance(&bs, &format!("redis://{HOST}:{port}/0")).start().await;
    let early = sessions(&a, 10).await;
    let redis = RedisServer::start_on(port).await;
    let dl = Deadline::after(secs(15));
    while redis.keys(&pin_pattern()).await.len() < early.len() {
        for (u, backend) in &early {
            assert_eq!(&served_by(u, &a, "/later").await, backend);
        }
        assert!(
            !dl.expired(),
            "pins never reached Redis (store errors: {:?})",
            a.metric("stickylb_store_errors_total").await
        );
        sleep_ms(200).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_keeps_sessions_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pins.jsonl");
    let bs = three().await;
    let config = |file: &Path| {
        balancer(&refs(&bs))
            .set("balance.algorithm", "round_robin")
            .set("cluster.snapshot_file", file.display().to_string())
    };
    let mut first = config(&file).start_binary().await;
    let users = sessions(&first, 100).await;
    assert_eq!(counts(users.iter().map(|(_, b)| b.clone())).len(), 3);

    first.signal("TERM");
    let st = first.wait_exit(secs(15)).await.expect("stickylb exits after SIGTERM");
    assert!(st.success(), "exit status {st}\n{}", first.log_tail(20));
    assert!(file.is_file(), "snapshot written: {}", first.log_tail(20));

    let second = config(&file).start().await;
    assert_eq!(second.total_sessions().await, 100, "every pin restored");
    for (i, (u, backend)) in by_backend(&users).into_iter().enumerate() {
        assert_eq!(&served_by(u, &second, &format!("/again/{i}")).await, backend, "session {i} after the restart");
    }
}

/// Sessions born on one instance while Redis is down are routed the same by the other one,
/// by the backend their cookie names: during the outage, and on their first request after
/// Redis is back (issue 11: 11/20 and 16/20 went elsewhere before the cookie carried its route).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_born_during_an_outage_agree_across_instances_by_their_cookie() {
    let mut redis = RedisServer::start().await;
    let bs = three().await;
    let a = instance(&bs, &redis.url()).set("cluster.redis_timeout", "200ms").start_binary().await;
    let b = instance(&bs, &redis.url()).set("cluster.redis_timeout", "200ms").start_binary().await;
    // B's round robin one step ahead of A's: choosing on its own, B would disagree.
    served_by(&User::new(), &b, "/skew").await;
    redis.kill();
    let born = sessions(&a, 20).await;
    for round in 0..3 {
        for (i, (u, backend)) in by_backend(&born).into_iter().enumerate() {
            assert_eq!(&served_by(u, &b, &format!("/outage/{round}/{i}")).await, backend, "B during the outage, {i}");
        }
    }
    redis.restart().await;
    wait_reconnected(&b).await;
    wait_reconnected(&a).await;
    for (i, (u, backend)) in by_backend(&born).into_iter().enumerate() {
        assert_eq!(&served_by(u, &b, &format!("/back/{i}")).await, backend, "B's first request after the outage, {i}");
        assert_eq!(&served_by(u, &a, &format!("/back/{i}")).await, backend, "A after the outage, {i}");
    }
}
