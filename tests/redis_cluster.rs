//! A Redis Cluster of three masters (real `redis-server` processes in cluster mode on
//! loopback, joined with `redis-cli --cluster create`): pins, reassignments, events, unpins
//! and the group work as on one server.

mod common;

use std::time::Instant;

use common::*;

const PREFIX: &str = "clustertest:";

/// Three cluster-mode servers sharing the 16384 slots, no replicas.
async fn redis_cluster() -> Vec<RedisServer> {
    let args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000"];
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(RedisServer::start_with(&args).await);
    }
    let addrs: Vec<String> = nodes.iter().map(|n| format!("{HOST}:{}", n.port)).collect();
    let out = std::process::Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .expect("run redis-cli --cluster create");
    assert!(out.status.success(), "redis-cli --cluster create: {}", String::from_utf8_lossy(&out.stdout));
    let dl = Deadline::after(secs(15));
    for n in &nodes {
        loop {
            let info: String = n.query(&redis::cmd("CLUSTER").arg("INFO").clone()).await.unwrap_or_default();
            if info.contains("cluster_state:ok") {
                break;
            }
            assert!(!dl.expired(), "cluster not ok on port {}: {info}", n.port);
            sleep_ms(100).await;
        }
    }
    nodes
}

fn instance(bs: &[TestBackend], nodes: &[RedisServer], name: &str) -> BalancerBuilder {
    // Two of the three as seeds: the client learns the third from them.
    let seeds: Vec<String> = nodes[..2].iter().map(|n| format!("{HOST}:{}", n.port)).collect();
    let seeds: Vec<&str> = seeds.iter().map(String::as_str).collect();
    balancer(&refs(bs))
        .set("balance.algorithm", "round_robin")
        .set("health.enabled", false)
        .set("cluster.store", "redis")
        .set("cluster.redis_url", format!("redis://{HOST}/0"))
        .set("cluster.redis_cluster", strings(&seeds))
        .set("cluster.key_prefix", PREFIX)
        .set("cluster.redis_timeout", "1s")
        .set("cluster.instance_name", name)
}

async fn served_by(u: &User, lb: &Balancer, path: &str) -> String {
    let r = u.get(&lb.url(path)).await;
    assert_eq!(r.status, 200, "{}", r.describe());
    r.backend().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pins_moves_events_and_the_group_work_on_a_redis_cluster() {
    let nodes = redis_cluster().await;
    let bs = TestBackend::start_many(&["app1", "app2", "app3"]).await;
    let a = instance(&bs, &nodes, "lb-a").start().await;
    let b = instance(&bs, &nodes, "lb-b").start().await;

    let mut users = Vec::new();
    for i in 0..60 {
        let u = User::new();
        let backend = served_by(&u, &a, &format!("/start/{i}")).await;
        users.push((u, backend));
    }
    users.sort_by(|x, y| x.1.cmp(&y.1));
    for (i, (u, backend)) in users.iter().enumerate() {
        assert_eq!(&served_by(u, &b, &format!("/other/{i}")).await, backend, "session {i} through b");
    }
    let mut per_node = Vec::new();
    for n in &nodes {
        let keys: Vec<String> = n.query(redis::cmd("KEYS").arg(format!("{PREFIX}pin:*"))).await.unwrap();
        per_node.push(keys.len());
    }
    assert_eq!(per_node.iter().sum::<usize>(), 60, "every pin in the cluster: {per_node:?}");
    assert!(per_node.iter().all(|&n| n > 0), "pins spread over the three masters: {per_node:?}");

    // A move through `a` reaches `b` through the event channel (b never tries the dead one).
    let victim = users[0].1.clone();
    bs.iter().find(|t| t.name() == victim).unwrap().stop().await;
    for (i, (u, _)) in users.iter().filter(|(_, b)| *b == victim).enumerate() {
        let new = served_by(u, &a, &format!("/moved/{i}")).await;
        assert_ne!(new, victim);
        let cookie = u.cookie(&b.url("/"), COOKIE).expect("session cookie");
        let moved = Instant::now();
        while b.session(&cookie).await.as_deref() != Some(new.as_str()) {
            assert!(moved.elapsed() < ms(500), "b still has session {i} on {victim}");
        }
        assert_eq!(served_by(u, &b, &format!("/after/{i}")).await, new);
    }
    assert_eq!(b.metric("stickylb_session_reassignments_total").await.unwrap_or(0.0), 0.0);

    // An unpin through `b` is heard by `a`.
    let (u, _) = users.iter().find(|(_, b)| *b != victim).unwrap();
    let cookie = u.cookie(&a.url("/"), COOKIE).unwrap();
    assert!(a.session(&cookie).await.is_some());
    assert_eq!(b.admin_delete(&format!("/api/sessions/{}", pct(&cookie))).await, 200);
    let deleted = Instant::now();
    while a.session(&cookie).await.is_some() {
        assert!(deleted.elapsed() < ms(500), "a still has the deleted pin");
    }

    // The group: both listed, a drain through one shows on the other.
    let c = b.cluster().await;
    assert_eq!((c["redis"].as_str(), c["consistent"].as_bool()), (Some("up"), Some(true)), "{c}");
    let dl = Deadline::after(secs(5));
    while b.cluster().await["members"].as_array().map_or(0, Vec::len) != 2 {
        assert!(!dl.expired(), "both members listed");
        sleep_ms(50).await;
    }
    let alive = bs.iter().find(|t| t.name() != victim).unwrap().name().to_string();
    assert_eq!(a.admin_post(&format!("/api/backends/{alive}/drain")).await, 200);
    let dl = Deadline::after(secs(1));
    while b.state_of(&alive).await != "drain" {
        assert!(!dl.expired(), "drain through a shows on b");
        sleep_ms(20).await;
    }
}
