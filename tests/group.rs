//! The group: several instances on one real `redis-server` list each other (`/api/cluster`),
//! notice one that dies, flag one whose config differs, and share backends' admin state
//! (drain through one instance holds on all, across a restart, a reload and an outage).

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const PREFIX: &str = "grouptest:";

/// One instance of the group: round robin, no active health checks, a Redis store.
fn instance(bs: &[TestBackend], redis: &RedisServer, name: &str) -> BalancerBuilder {
    balancer(&refs(bs))
        .set("balance.algorithm", "round_robin")
        .set("health.enabled", false)
        .set("cluster.store", "redis")
        .set("cluster.redis_url", redis.url())
        .set("cluster.key_prefix", PREFIX)
        .set("cluster.redis_timeout", "1s")
        .set("cluster.instance_name", name)
}

fn member_names(cluster: &Value) -> Vec<String> {
    let members = cluster["members"].as_array().unwrap_or_else(|| panic!("no `members` array in {cluster}"));
    members.iter().map(|m| m["name"].as_str().unwrap_or_default().to_string()).collect()
}

/// Polls `/api/cluster` of `lb` until `want` holds; panics with the last answer after `within`.
async fn wait_cluster(lb: &Balancer, within: Duration, what: &str, want: impl Fn(&Value) -> bool) -> Duration {
    let started = Instant::now();
    loop {
        let c = lb.cluster().await;
        if want(&c) {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "port {}: {what} not within {within:?}; last answer {c}", lb.port);
        sleep_ms(50).await;
    }
}

/// Polls `/api/backends` of `lb` until `backend` shows `state`; how long that took.
async fn wait_state(lb: &Balancer, backend: &str, state: &str, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if lb.state_of(backend).await == state {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "port {}: {backend} not {state} within {within:?}", lb.port);
        sleep_ms(20).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_list_each_other_notice_one_that_dies_and_flag_a_different_config() {
    let redis = RedisServer::start().await;
    let bs = TestBackend::start_many(&["app1", "app2", "app3"]).await;
    // `a` and `c` are real processes: `a` for its log, `c` to die without a word (SIGKILL).
    let a = instance(&bs, &redis, "lb-a").start_binary().await;
    let b = instance(&bs, &redis, "lb-b").start().await;
    let c = instance(&bs, &redis, "lb-c").start_binary().await;
    let all = ["lb-a", "lb-b", "lb-c"];
    for lb in [&a, &b, &c] {
        wait_cluster(lb, secs(5), "three members", |c| member_names(c) == all).await;
    }
    let view = b.cluster().await;
    assert_eq!(view["self"], "lb-b");
    assert_eq!((view["store"].as_str(), view["redis"].as_str()), (Some("redis"), Some("up")), "{view}");
    assert_eq!(view["consistent"], true, "{view}");
    let fingerprints: Vec<&Value> = view["members"].as_array().unwrap().iter().map(|m| &m["config"]).collect();
    assert!(fingerprints.iter().all(|f| *f == fingerprints[0] && f.as_str().is_some_and(|s| s.len() == 16)));
    let lb_a = &view["members"][0];
    assert_eq!(lb_a["admin"], format!("{HOST}:{}", a.admin_port), "{lb_a}");
    assert_eq!(lb_a["version"], env!("CARGO_PKG_VERSION"));
    assert!(lb_a["started"].as_str().is_some_and(|s| s.ends_with('Z')), "{lb_a}");
    assert!(lb_a["last_seen_ms"].as_u64().is_some_and(|ms| ms <= 3000), "{lb_a}");
    assert_eq!(b.metric("stickylb_cluster_members").await, Some(3.0));
    let page = get(&plain_client(), &b.admin_url("/")).await.text();
    assert!(page.contains("api(\"/api/cluster\")") && page.contains("mismatch"), "the status page shows the group");
    assert_eq!(b.metric("stickylb_cluster_config_consistent").await, Some(1.0));

    drop(c);
    let gone = |c: &Value| member_names(c) == ["lb-a", "lb-b"];
    let took = wait_cluster(&a, secs(5), "lb-c gone", gone).await;
    wait_cluster(&b, secs(1), "lb-c gone", gone).await;
    eprintln!("a killed instance left the group's list after {took:?}");

    // A fourth instance with one backend less: everyone sees the mismatch.
    let d = instance(&bs[..2], &redis, "lb-d").start().await;
    for lb in [&a, &b, &d] {
        wait_cluster(lb, secs(5), "lb-d flagged", |c| member_names(c).len() == 3 && c["consistent"] == false).await;
    }
    assert_eq!(b.metric("stickylb_cluster_config_consistent").await, Some(0.0));
    let log = a.log_tail(500);
    // `b` starts while `a` does: `a`'s first reading of the group may already list it, and then
    // that line is its one join.
    let first = log.lines().find(|l| l.contains("joined the group instance=\"lb-a\"")).unwrap_or_default();
    for (name, at_start) in [("lb-b", first.contains("\"lb-b\"")), ("lb-d", false)] {
        let needle = format!("instance={name}");
        let joins = log.lines().filter(|l| l.contains("an instance joined the group") && l.contains(&needle)).count();
        assert_eq!(joins + usize::from(at_start), 1, "{name} joined once in a's log:\n{log}");
    }
    let leaves = log.lines().filter(|l| l.contains("left the group") && l.contains("instance=lb-c")).count();
    assert_eq!(leaves, 1, "lb-c left once in a's log:\n{log}");
    assert!(log.contains("different config fingerprint"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_through_one_instance_holds_on_all_across_a_restart_until_enabled_through_another() {
    let redis = RedisServer::start().await;
    let bs = TestBackend::start_many(&["app1", "app2", "app3"]).await;
    let one = instance(&bs, &redis, "lb-1").start().await;
    let two = instance(&bs, &redis, "lb-2").start().await;
    let three = instance(&bs, &redis, "lb-3").start().await;

    assert_eq!(one.admin_post("/api/backends/app1/drain").await, 200);
    let (t2, t3) =
        tokio::join!(wait_state(&two, "app1", "drain", secs(1)), wait_state(&three, "app1", "drain", secs(1)));
    eprintln!("drain through lb-1 seen on lb-2 after {t2:?}, on lb-3 after {t3:?}");
    for i in 0..12 {
        let backend = User::new().get(&two.url(&format!("/new/{i}"))).await.backend();
        assert_ne!(backend.as_deref(), Some("app1"), "new session {i} through lb-2 went to the drained backend");
    }

    drop(two);
    let two = instance(&bs, &redis, "lb-2").start().await;
    wait_state(&two, "app1", "drain", ms(500)).await;
    for i in 0..6 {
        let backend = User::new().get(&two.url(&format!("/restarted/{i}"))).await.backend();
        assert_ne!(backend.as_deref(), Some("app1"), "new session {i} through the restarted lb-2");
    }

    assert_eq!(three.admin_post("/api/backends/app1/enable").await, 200);
    for lb in [&one, &two, &three] {
        wait_state(lb, "app1", "active", secs(1)).await;
    }
    // And a `state` changed in a reloaded file is a fleet-wide change too.
    let text = std::fs::read_to_string(&one.config_path).unwrap();
    let app3 = format!("name = \"app3\"\naddress = \"{}\"\n", bs[2].address());
    assert!(text.contains(&app3), "{text}");
    std::fs::write(&one.config_path, text.replace(&app3, &format!("{app3}state = \"maint\"\n"))).unwrap();
    assert_eq!(one.reload().await.status, 200);
    for lb in [&one, &two, &three] {
        wait_state(lb, "app3", "maint", secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_made_during_a_redis_outage_reaches_the_others_when_redis_returns() {
    let mut redis = RedisServer::start().await;
    let bs = TestBackend::start_many(&["app1", "app2"]).await;
    let one = instance(&bs, &redis, "lb-1").start().await;
    let two = instance(&bs, &redis, "lb-2").start().await;
    wait_cluster(&one, secs(5), "two members", |c| member_names(c).len() == 2).await;
    redis.kill();
    wait_cluster(&one, secs(3), "redis down", |c| c["redis"] == "down").await;
    assert_eq!(one.admin_post("/api/backends/app2/maint").await, 200, "works without Redis");
    assert_eq!(one.state_of("app2").await, "maint");
    assert_eq!(two.state_of("app2").await, "active", "two cannot know yet");
    redis.restart().await;
    // Redis came back empty: lb-1 writes its change back, lb-2 reads it.
    wait_state(&two, "app2", "maint", secs(5)).await;
    wait_cluster(&two, secs(5), "both back", |c| c["redis"] == "up" && member_names(c).len() == 2).await;
}
