//! Redis high availability through Sentinel: a master, a replica and three sentinels (real
//! `redis-server` processes on loopback), two stickylb instances that find the master through
//! the sentinels, and the master killed while they serve.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

const MASTER: &str = "stickymaster";
const PREFIX: &str = "sentineltest:";

/// The master's port as `sentinel` says.
async fn master_port(sentinel: &RedisServer) -> Option<u16> {
    let cmd = redis::cmd("SENTINEL").arg("get-master-addr-by-name").arg(MASTER).clone();
    let addr: Option<(String, u16)> = sentinel.query(&cmd).await.ok()?;
    addr.map(|(_, port)| port)
}

/// How many replicas and other sentinels `sentinel` knows of.
async fn known(sentinel: &RedisServer) -> (usize, usize) {
    let count = |what: &'static str| async move {
        let cmd = redis::cmd("SENTINEL").arg(what).arg(MASTER).clone();
        sentinel.query::<Vec<redis::Value>>(&cmd).await.map_or(0, |v| v.len())
    };
    (count("replicas").await, count("sentinels").await)
}

async fn wait_until<F: std::future::Future<Output = bool>>(within: Duration, what: &str, mut check: impl FnMut() -> F) {
    let dl = Deadline::after(within);
    while !check().await {
        assert!(!dl.expired(), "{what}: not within {within:?}");
        sleep_ms(100).await;
    }
}

fn instance(bs: &[TestBackend], sentinels: &[RedisServer], name: &str) -> BalancerBuilder {
    let addrs: Vec<String> = sentinels.iter().map(|s| format!("{HOST}:{}", s.port)).collect();
    let addrs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    balancer(&refs(bs))
        .set("balance.algorithm", "round_robin")
        .set("health.enabled", false)
        .set("cluster.store", "redis")
        // Only the database number (and a password, if any) is taken from here.
        .set("cluster.redis_url", format!("redis://{HOST}:1/0"))
        .set("cluster.sentinels", strings(&addrs))
        .set("cluster.sentinel_master", MASTER)
        .set("cluster.key_prefix", PREFIX)
        .set("cluster.redis_timeout", "500ms")
        .set("cluster.instance_name", name)
}

/// A master, its replica in sync, and three sentinels that know both and each other.
async fn replicated() -> (RedisServer, RedisServer, Vec<RedisServer>) {
    let master = RedisServer::start().await;
    let port = master.port.to_string();
    let replica = RedisServer::start_with(&["--replicaof", HOST, &port]).await;
    wait_until(secs(10), "replica in sync", || async {
        let info: String = replica.query(redis::cmd("INFO").arg("replication")).await.unwrap_or_default();
        info.contains("master_link_status:up")
    })
    .await;
    let mut sentinels = Vec::new();
    for _ in 0..3 {
        sentinels.push(RedisServer::start_sentinel(MASTER, master.port).await);
    }
    for s in &sentinels {
        wait_until(secs(15), "sentinels know the replica and each other", || async { known(s).await == (1, 2) }).await;
    }
    (master, replica, sentinels)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_master_killed_under_load_fails_no_request_and_moves_no_session() {
    let (mut master, replica, sentinels) = replicated().await;

    let bs = TestBackend::start_many(&["app1", "app2", "app3"]).await;
    let a = Arc::new(instance(&bs, &sentinels, "lb-a").start().await);
    let b = Arc::new(instance(&bs, &sentinels, "lb-b").start().await);
    let mut users = Vec::new();
    for i in 0..30 {
        let u = User::new();
        let r = u.get(&a.url(&format!("/start/{i}"))).await;
        assert_eq!(r.status, 200, "{}", r.describe());
        let backend = r.backend().unwrap();
        assert_eq!(u.get(&b.url("/check")).await.backend().as_deref(), Some(backend.as_str()), "session {i} via b");
        users.push((u, backend));
    }
    let users = Arc::new(users);

    // Load: every session, through both instances in turn, until told to stop.
    let (stop, sent, failed) =
        (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (a, b, users, stop, sent, failed) =
            (a.clone(), b.clone(), users.clone(), stop.clone(), sent.clone(), failed.clone());
        tokio::spawn(async move {
            let mut problems = Vec::new();
            for round in 0.. {
                if stop.load(Relaxed) {
                    break;
                }
                for (i, (u, backend)) in users.iter().enumerate() {
                    let lb = if (round + i) % 2 == 0 { &a } else { &b };
                    sent.fetch_add(1, Relaxed);
                    match u.try_get(&lb.url(&format!("/load/{round}/{i}"))).await {
                        Ok(r) if r.status == 200 && r.backend().as_deref() == Some(backend.as_str()) => {}
                        Ok(r) => {
                            failed.fetch_add(1, Relaxed);
                            problems.push(format!("session {i} via port {}: {}", lb.port, r.describe()));
                        }
                        Err(e) => {
                            failed.fetch_add(1, Relaxed);
                            problems.push(format!("session {i} via port {}: {e}", lb.port));
                        }
                    }
                }
            }
            problems
        })
    };
    sleep_ms(300).await;
    let old = master.port;
    let killed = Instant::now();
    master.kill();
    wait_until(secs(20), "a sentinel promoted the replica", || async {
        master_port(&sentinels[0]).await.is_some_and(|p| p != old)
    })
    .await;
    let promoted = killed.elapsed();
    assert_eq!(master_port(&sentinels[0]).await, Some(replica.port));
    // Both instances reach the new master (the group task talks to Redis every 200 ms).
    for lb in [&a, &b] {
        wait_until(secs(10), "instance back on Redis", || async { lb.cluster().await["redis"] == "up" }).await;
    }
    let recovered = killed.elapsed();
    sleep_ms(500).await;
    stop.store(true, Relaxed);
    let problems = load.await.unwrap();
    eprintln!(
        "failover: replica promoted {promoted:?} after the kill, both instances on the new master after {recovered:?}; \
         {} requests, {} failed",
        sent.load(Relaxed),
        failed.load(Relaxed)
    );
    assert!(
        problems.is_empty(),
        "{} of {} requests failed or moved:\n{}",
        problems.len(),
        sent.load(Relaxed),
        problems.join("\n")
    );

    // A session made after the failover on one instance routes the same on the other.
    for i in 0..6 {
        let u = User::new();
        let backend = u.get(&b.url(&format!("/after/{i}"))).await.backend().unwrap();
        assert_eq!(u.get(&a.url("/other")).await.backend(), Some(backend), "new session {i} through a");
    }
    let pins: Vec<String> = replica.query(redis::cmd("KEYS").arg(format!("{PREFIX}pin:*"))).await.unwrap();
    assert!(pins.len() >= 36, "pins on the new master: {}", pins.len());
}

/// A master that stops answering (stopped, not killed: no connection error ever comes) is
/// left once the sentinels replace it: a call that gets no answer within
/// `cluster.redis_timeout` makes the next one ask the sentinels again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_that_stops_answering_is_left_for_the_one_the_sentinels_promote() {
    let (mut master, replica, sentinels) = replicated().await;
    let bs = TestBackend::start_many(&["app1", "app2"]).await;
    let lb = instance(&bs, &sentinels, "lb-stopped").start().await;
    let u = User::new();
    let backend = u.get(&lb.url("/before")).await.backend().unwrap();

    let old = master.port;
    let pid = master.pid().expect("master runs").to_string();
    let signal = |sig: &str| std::process::Command::new("kill").args([sig, &pid]).status().expect("kill runs");
    assert!(signal("-STOP").success());
    // Meanwhile the session is served by the local pin.
    let during = u.get(&lb.url("/during")).await;
    assert_eq!((during.status, during.backend()), (200, Some(backend.clone())), "{}", during.describe());
    wait_until(secs(20), "a sentinel promoted the replica", || async {
        master_port(&sentinels[0]).await.is_some_and(|p| p != old)
    })
    .await;
    // The calls that time out on the stopped master (the group's, every 200 ms, and the
    // requests') make the instance ask the sentinels again.
    wait_until(secs(10), "instance on the new master", || async { lb.cluster().await["redis"] == "up" }).await;
    assert_eq!(u.get(&lb.url("/after")).await.backend(), Some(backend), "the session kept its backend");
    let v = User::new();
    assert_eq!(v.get(&lb.url("/new")).await.status, 200);
    let pins: Vec<String> = replica.query(redis::cmd("KEYS").arg(format!("{PREFIX}pin:*"))).await.unwrap();
    assert_eq!(pins.len(), 2, "both sessions' pins on the new master: {pins:?}");
    assert!(signal("-CONT").success());
    master.kill();
}
