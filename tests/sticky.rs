//! Sticky sessions: insert (signed cookie), learn (backend cookie), header, hash; cookie
//! attributes, tampering, key rotation, expiry, table bound, least_connections.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;

/// Changes one alphanumeric character as near the middle of `v` as possible.
fn tamper(v: &str) -> String {
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut b = v.as_bytes().to_vec();
    let mid = b.len() / 2;
    for off in 0..b.len() {
        for i in [mid + off, mid.wrapping_sub(off)] {
            if i < b.len() {
                if let Some(p) = ALNUM.iter().position(|&c| c == b[i]) {
                    b[i] = ALNUM[(p + 1) % ALNUM.len()];
                    return String::from_utf8(b).unwrap();
                }
            }
        }
    }
    panic!("nothing to tamper with in {v:?}");
}

/// One cookieless request: (backend, value of the new STICKYLB cookie).
async fn fresh_session(c: &reqwest::Client, lb: &Balancer, path: &str) -> (String, String) {
    let r = get(c, &lb.url(path)).await;
    assert_eq!(r.status, 200, "{path}: {}", r.describe());
    let sc = r.set_cookie(COOKIE).unwrap_or_else(|| panic!("{path}: no Set-Cookie {COOKIE}: {:?}", r.set_cookies()));
    (r.backend().expect("backend"), cookie_value(&sc))
}

fn assert_share(counts: &std::collections::BTreeMap<String, usize>, name: &str, expect: f64) {
    let got = *counts.get(name).unwrap_or(&0) as f64;
    assert!((got - expect).abs() <= expect * 0.25, "{name} got {got} sessions, want {expect} +-25% (all: {counts:?})");
}

// ------------------------------------------------------------------------------------ insert

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_always_reaches_the_same_backend() {
    let bs = three().await;
    let lb = balancer(&refs(&bs)).set("balance.algorithm", "round_robin").start().await;
    let u = User::new();
    let mut seen = Vec::new();
    for i in 0..50 {
        let r = u.get(&lb.url(&format!("/page/{i}"))).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.describe());
        seen.push(r.backend().expect("backend"));
    }
    let c = counts(seen);
    assert_eq!(c.len(), 1, "one user's 50 requests went to {c:?}");
    assert!(u.cookie(&lb.url("/"), COOKIE).is_some(), "no {COOKIE} cookie kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_users_spread_evenly_with_round_robin() {
    let bs = three().await;
    let lb = balancer(&refs(&bs)).set("balance.algorithm", "round_robin").start().await;
    let c = plain_client();
    let mut backends = Vec::new();
    for i in 0..300 {
        backends.push(fresh_session(&c, &lb, &format!("/new/{i}")).await.0);
    }
    let spread = counts(backends);
    for b in &bs {
        assert_share(&spread, b.name(), 100.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_shape_the_spread_of_new_sessions() {
    let bs = three().await;
    let lb =
        balancer(&refs(&bs)).set("balance.algorithm", "round_robin").backend_set("app1", "weight", 3).start().await;
    let c = plain_client();
    let mut backends = Vec::new();
    for i in 0..300 {
        backends.push(fresh_session(&c, &lb, &format!("/new/{i}")).await.0);
    }
    let spread = counts(backends);
    assert_share(&spread, "app1", 180.0);
    assert_share(&spread, "app2", 60.0);
    assert_share(&spread, "app3", 60.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_cookie_only_when_the_session_is_new() {
    let bs = three().await;
    let lb = balancer(&refs(&bs)).start().await;
    let u = User::new();
    let first = u.get(&lb.url("/one")).await;
    assert!(first.set_cookie(COOKIE).is_some(), "first answer: no Set-Cookie {COOKIE}");
    for i in 0..3 {
        let r = u.get(&lb.url(&format!("/again/{i}"))).await;
        assert_eq!(r.status, 200);
        assert!(r.set_cookie(COOKIE).is_none(), "request {} of a known session got {:?}", i + 2, r.set_cookie(COOKIE));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_cookie_is_ignored_reissued_and_counted() {
    let bs = three().await;
    let lb = balancer(&refs(&bs)).set("balance.algorithm", "round_robin").start().await;
    let c = plain_client();
    let (pinned, v) = fresh_session(&c, &lb, "/owner").await;
    let t = tamper(&v);
    let before = lb.metric("stickylb_cookie_rejected_total").await.unwrap_or(0.0);

    let mut backends = Vec::new();
    for i in 0..6 {
        let r = get_with(&c, &lb.url(&format!("/tampered/{i}")), &[("cookie", &format!("{COOKIE}={t}"))]).await;
        assert_eq!(r.status, 200, "tampered request {i}: {}", r.describe());
        let sc = r.set_cookie(COOKIE).unwrap_or_else(|| panic!("tampered request {i}: no fresh {COOKIE} cookie"));
        let nv = cookie_value(&sc);
        assert!(nv != t && nv != v, "tampered request {i}: re-issued the old value {nv:?}");
        backends.push(r.backend().unwrap());
    }
    let spread = counts(backends);
    assert!(
        spread.get(&pinned) != Some(&6),
        "all 6 tampered requests went to the original pin {pinned}: the cookie was trusted"
    );
    assert_eq!(lb.session(&t).await, None, "a tampered value got pinned");

    let after = lb
        .metric("stickylb_cookie_rejected_total")
        .await
        .expect("stickylb_cookie_rejected_total missing from /metrics");
    assert!(after >= before + 6.0, "stickylb_cookie_rejected_total went {before} -> {after} over 6 tampered cookies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn previous_secrets_still_verify_after_key_rotation() {
    let bs = three().await;
    let hashed = |secret: &str| balancer(&refs(&bs)).set("balance.algorithm", "hash").set("session.secret", secret);
    let old = hashed(SECRET).start().await;
    let rotated = hashed(SECRET_B).set("session.previous_secrets", strings(&[SECRET])).start().await;
    let stranger = hashed(SECRET_B).start().await;
    let c = plain_client();

    let (backend, v) = fresh_session(&c, &old, "/signed-by-old").await;
    let cookie = format!("{COOKIE}={v}");

    // The rotated instance has no pin for it yet; it must verify the old signature and
    // re-pin under the same id (no new cookie) — hash makes the backend the same.
    assert_eq!(rotated.session(&v).await, None, "fresh instance already knows {v}");
    let r = get_with(&c, &rotated.url("/after-rotation"), &[("cookie", &cookie)]).await;
    assert_eq!(r.status, 200, "{}", r.describe());
    assert!(
        r.set_cookie(COOKIE).is_none(),
        "cookie signed with a previous secret was rejected: got {:?}",
        r.set_cookie(COOKIE)
    );
    assert_eq!(r.backend().as_deref(), Some(backend.as_str()), "hash re-pin moved the session");
    assert_eq!(
        rotated.session(&v).await.as_deref(),
        Some(backend.as_str()),
        "no pin for the accepted cookie on the rotated instance"
    );

    // Control: without previous_secrets the same cookie is not trusted.
    let r = get_with(&c, &stranger.url("/no-rotation"), &[("cookie", &cookie)]).await;
    assert_eq!(r.status, 200, "{}", r.describe());
    let sc = r.set_cookie(COOKIE).expect("an untrusted cookie must be replaced");
    assert_ne!(cookie_value(&sc), v);
    assert_eq!(stranger.session(&v).await, None, "an untrusted cookie got pinned");
}

/// A worker keeps the cookie values it verified (so a pinned client is not hashed again): a
/// reload with a new secret must still refuse every one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_with_a_new_secret_refuses_cookies_verified_before_it() {
    let bs = three().await;
    let config = |secret: &str| balancer(&refs(&bs)).set("session.secret", secret);
    let lb = config(SECRET).start().await;
    let c = plain_client();
    let (backend, v) = fresh_session(&c, &lb, "/first").await;
    let cookie = format!("{COOKIE}={v}");
    for i in 0..4 {
        let r = get_with(&c, &lb.url("/kept"), &[("cookie", &cookie)]).await;
        assert!(r.set_cookie(COOKIE).is_none(), "request {i} before the reload: cookie replaced: {}", r.describe());
        assert_eq!(r.backend().as_deref(), Some(backend.as_str()), "request {i} before the reload");
    }

    std::fs::write(&lb.config_path, config(SECRET_B).render(lb.port, lb.admin_port)).expect("rewrite config");
    let r = lb.reload().await;
    assert_eq!(r.status, 200, "{}", r.describe());
    let before = lb.metric("stickylb_cookie_rejected_total").await.unwrap_or(0.0);
    for i in 0..4 {
        let r = get_with(&c, &lb.url("/after-reload"), &[("cookie", &cookie)]).await;
        assert_eq!(r.status, 200, "{}", r.describe());
        let sc =
            r.set_cookie(COOKIE).unwrap_or_else(|| panic!("request {i} after the reload: the old cookie was trusted"));
        assert_ne!(cookie_value(&sc), v);
    }
    let after = lb.metric("stickylb_cookie_rejected_total").await.unwrap_or(0.0);
    assert!(after >= before + 4.0, "stickylb_cookie_rejected_total went {before} -> {after} over 4 refused cookies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_attributes_are_exactly_as_configured() {
    let bs = three().await;
    let lb = balancer(&refs(&bs))
        .set("session.cookie_path", "/app")
        .set("session.cookie_domain", "example.test")
        .set("session.cookie_secure", true)
        .set("session.cookie_http_only", true)
        .set("session.cookie_same_site", "Strict")
        .set("session.cookie_max_age", "1h")
        .start()
        .await;
    let r = get(&plain_client(), &lb.url("/app/x")).await;
    let sc = r.set_cookie(COOKIE).expect("Set-Cookie");
    let a = cookie_attrs(&sc);
    let val = |k: &str| a.get(k).cloned().flatten();
    assert_eq!(val("path").as_deref(), Some("/app"), "{sc}");
    assert_eq!(
        val("domain").map(|d| d.trim_start_matches('.').to_ascii_lowercase()).as_deref(),
        Some("example.test"),
        "{sc}"
    );
    assert!(a.contains_key("secure"), "no Secure: {sc}");
    assert!(a.contains_key("httponly"), "no HttpOnly: {sc}");
    assert_eq!(val("samesite").map(|s| s.to_ascii_lowercase()).as_deref(), Some("strict"), "{sc}");
    assert_eq!(val("max-age").as_deref(), Some("3600"), "{sc}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_cookie_attributes() {
    let bs = three().await;
    let lb = balancer(&refs(&bs)).start().await;
    let r = get(&plain_client(), &lb.url("/x")).await;
    let sc = r.set_cookie(COOKIE).expect("Set-Cookie");
    let a = cookie_attrs(&sc);
    assert_eq!(a.get("path").cloned().flatten().as_deref(), Some("/"), "{sc}");
    assert!(a.contains_key("httponly"), "no HttpOnly: {sc}");
    assert_eq!(a.get("samesite").cloned().flatten().map(|s| s.to_ascii_lowercase()).as_deref(), Some("lax"), "{sc}");
    for absent in ["max-age", "expires", "secure", "domain"] {
        assert!(!a.contains_key(absent), "default cookie has {absent}: {sc}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_cookie_is_stripped_and_other_cookies_pass_untouched() {
    let bs = three().await;
    let lb = balancer(&refs(&bs)).start().await;
    let c = plain_client();
    let (pinned, v) = fresh_session(&c, &lb, "/first").await;
    let owner = bs.iter().find(|b| b.name() == pinned).unwrap();

    let r = get_with(&c, &lb.url("/mixed"), &[("cookie", &format!("a=1; {COOKIE}={v}; b=two"))]).await;
    assert_eq!(r.backend().as_deref(), Some(pinned.as_str()), "cookie not honoured");
    let seen = owner.last_seen().unwrap().header("cookie").unwrap_or_default();
    assert_eq!(
        parse_cookie_header(&seen),
        vec![("a".to_string(), "1".to_string()), ("b".to_string(), "two".to_string())],
        "backend saw Cookie: {seen:?}"
    );

    let r = get_with(&c, &lb.url("/only-ours"), &[("cookie", &format!("{COOKIE}={v}"))]).await;
    assert_eq!(r.backend().as_deref(), Some(pinned.as_str()));
    let seen = owner.last_seen().unwrap().header("cookie").unwrap_or_default();
    assert!(seen.trim().is_empty(), "backend saw Cookie: {seen:?}");
}

// ------------------------------------------------------------------------------------ learn / header

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learn_mode_routes_by_the_backends_own_cookie_and_path_parameter() {
    let bs = three().await;
    let lb = learn_jsessionid(&refs(&bs)).start().await;
    let c = plain_client();

    let u1 = User::new();
    let login = u1.get(&lb.url("/login")).await;
    assert_eq!(login.status, 200, "{}", login.describe());
    let x = login.backend().unwrap();
    let sid = u1.cookie(&lb.url("/"), "JSESSIONID").expect("JSESSIONID kept");
    for i in 0..10 {
        let r = u1.get(&lb.url(&format!("/app/{i}"))).await;
        assert_eq!(r.backend().as_deref(), Some(x.as_str()), "request {i} left {x}");
    }
    for k in 0..5 {
        let r = get(&c, &lb.url(&format!("/x;jsessionid={sid}?k={k}"))).await;
        assert_eq!(
            r.backend().as_deref(),
            Some(x.as_str()),
            ";jsessionid= path parameter not routed to {x}: {}",
            r.describe()
        );
    }

    let u2 = User::new();
    let login2 = u2.get(&lb.url("/login")).await;
    let y = login2.backend().unwrap();
    assert_ne!(y, x, "round_robin sent the second login to the same backend");
    for i in 0..10 {
        let r = u2.get(&lb.url(&format!("/app/{i}"))).await;
        assert_eq!(r.backend().as_deref(), Some(y.as_str()), "second session left {y}");
    }
    // The first session is still where it was learned.
    let r = u1.get(&lb.url("/app/last")).await;
    assert_eq!(r.backend().as_deref(), Some(x.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_mode_routes_by_the_session_header() {
    let bs = three().await;
    let lb = balancer(&refs(&bs))
        .set("session.mode", "header")
        .set("session.header", "X-Session-Id")
        .set("balance.algorithm", "round_robin")
        .start()
        .await;
    let c = plain_client();

    let mut owners = Vec::new();
    for _ in 0..2 {
        let login = get(&c, &lb.url("/login")).await;
        assert_eq!(login.status, 200, "{}", login.describe());
        let sid = login.header("x-session-id").expect("X-Session-Id from the backend");
        owners.push((login.backend().unwrap(), sid));
    }
    assert_ne!(owners[0].0, owners[1].0, "round_robin sent both logins to one backend");
    for i in 0..10 {
        for (owner, sid) in &owners {
            let r = get_with(&c, &lb.url(&format!("/app/{i}")), &[("x-session-id", sid)]).await;
            assert_eq!(
                r.backend().as_deref(),
                Some(owner.as_str()),
                "X-Session-Id learned from {owner} went elsewhere"
            );
        }
    }
}

// ------------------------------------------------------------------------------------ table

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_pin_is_forgotten_and_the_cookie_repins_under_the_same_id() {
    let bs = three().await;
    let lb = balancer(&refs(&bs)).set("session.idle_timeout", "500ms").start().await;
    let u = User::new();
    let r = u.get(&lb.url("/a")).await;
    let v = cookie_value(&r.set_cookie(COOKIE).expect("Set-Cookie"));
    assert_eq!(lb.session(&v).await, r.backend(), "pin not visible via the admin API");
    assert_eq!(lb.session("no-such-session").await, None);

    sleep_ms(1500).await;
    assert_eq!(lb.session(&v).await, None, "pin still there after 1.5 s idle (idle_timeout 500ms)");

    let r = u.get(&lb.url("/b")).await;
    assert_eq!(r.status, 200, "{}", r.describe());
    assert!(
        r.set_cookie(COOKIE).is_none(),
        "expired pin of a valid cookie got a new cookie {:?}",
        r.set_cookie(COOKIE)
    );
    assert_eq!(lb.session(&v).await, r.backend(), "not re-pinned under the same id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_table_stays_within_max_entries() {
    let bs = three().await;
    let lb = Arc::new(balancer(&refs(&bs)).set("session.max_entries", 1000).start().await);
    let c = plain_client();
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..32 {
        let (c, lb, next) = (c.clone(), lb.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut last = None;
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= 5000 {
                    return last;
                }
                let r = get(&c, &lb.url(&format!("/s/{i}"))).await;
                assert_eq!(r.status, 200, "{}", r.describe());
                let sc = r.set_cookie(COOKIE).expect("a new session per cookieless request");
                last = Some((i, cookie_value(&sc)));
            }
        }));
    }
    let mut newest = (0, String::new());
    for w in workers {
        let got = tokio::time::timeout(secs(60), w).await.expect("5000 requests took > 60 s");
        if let Some((i, v)) = got.expect("worker") {
            if i >= newest.0 {
                newest = (i, v);
            }
        }
    }

    let dl = Deadline::after(secs(3));
    let total = loop {
        let total = lb.total_sessions().await;
        if total <= 1000 || dl.expired() {
            break total;
        }
        sleep_ms(100).await;
    };
    assert!(total <= 1000, "{total} sessions held with max_entries = 1000");
    assert!(total > 0, "sessions not counted in /api/backends");
    assert!(lb.session(&newest.1).await.is_some(), "the most recent session was evicted");
}

// ------------------------------------------------------------------------------------ algorithms

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_sends_a_key_to_the_same_backend_from_independent_instances() {
    let bs = three().await;
    let cfg = || {
        balancer(&refs(&bs))
            .set("session.mode", "header")
            .set("session.header", "X-Session-Id")
            .set("balance.algorithm", "hash")
    };
    let one = cfg().start().await;
    let two = cfg().start().await;
    let c = plain_client();
    let mut used = Vec::new();
    for k in 0..200 {
        let key = format!("key-{k}");
        let h = [("x-session-id", key.as_str())];
        let (u1, u2) = (one.url("/h"), two.url("/h"));
        let (a, b) = tokio::join!(get_with(&c, &u1, &h), get_with(&c, &u2, &h));
        assert_eq!(a.status, 200, "{}", a.describe());
        assert_eq!(
            a.backend(),
            b.backend(),
            "{key}: instance one chose {:?}, instance two {:?}",
            a.backend(),
            b.backend()
        );
        used.push(a.backend().unwrap());
    }
    let spread = counts(used);
    assert!(spread.len() > 1, "hash put all 200 keys on one backend: {spread:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_steers_new_sessions_away_from_a_slow_backend() {
    let bs = TestBackend::start_many(&["slow", "fast1", "fast2"]).await;
    bs[0].set_delay(ms(300));
    let lb = Arc::new(balancer(&refs(&bs)).set("balance.algorithm", "least_connections").start().await);
    let c = plain_client();
    let mut tasks = Vec::new();
    // 6 waves of 10 concurrent new sessions, 100 ms apart, so the slow backend's requests
    // are still in flight when the next waves arrive.
    for w in 0..6 {
        for i in 0..10 {
            let (c, lb) = (c.clone(), lb.clone());
            tasks.push(tokio::spawn(async move { get(&c, &lb.url(&format!("/lc/{w}/{i}"))).await }));
        }
        sleep_ms(100).await;
    }
    let mut backends = Vec::new();
    for t in tasks {
        let r = tokio::time::timeout(secs(20), t).await.expect("request hung").expect("task");
        assert_eq!(r.status, 200, "{}", r.describe());
        backends.push(r.backend().unwrap());
    }
    let spread = counts(backends);
    let slow = *spread.get("slow").unwrap_or(&0);
    assert!(slow * 4 < 60, "slow backend got {slow} of 60 new sessions under least_connections: {spread:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_at_max_connections_takes_no_new_sessions_but_keeps_its_own() {
    let bs = TestBackend::start_many(&["small", "big"]).await;
    let lb = Arc::new(
        balancer(&refs(&bs))
            .set("balance.algorithm", "round_robin")
            .backend_set("small", "max_connections", 1)
            .start()
            .await,
    );
    // A session pinned to "small" (round robin: one of the first two new sessions lands there).
    let pinned = User::new();
    let mut own = String::new();
    for i in 0..4 {
        let u = User::new();
        if u.get(&lb.url(&format!("/find/{i}"))).await.backend().as_deref() == Some("small") {
            own = u.cookie(&lb.url("/"), COOKIE).expect("cookie");
            break;
        }
    }
    assert!(!own.is_empty(), "no session landed on small");
    pinned.add_cookie(&lb.url("/"), &format!("{COOKIE}={own}"));

    // Hold small's one connection with a slow request.
    let holder = {
        let (lb, u) = (lb.clone(), User::new());
        u.add_cookie(&lb.url("/"), &format!("{COOKIE}={own}"));
        tokio::spawn(async move { u.get(&lb.url("/slow?ms=1500")).await })
    };
    assert!(bs[0].wait_inflight(1, secs(5)).await, "the slow request did not reach small");

    let c = plain_client();
    for i in 0..6 {
        let (backend, _) = fresh_session(&c, &lb, &format!("/new/{i}")).await;
        assert_eq!(backend, "big", "new session {i} went to a backend at its max_connections");
    }
    // The pinned session still reaches its own backend (the limit steers only new sessions).
    let r = pinned.get(&lb.url("/mine")).await;
    assert_eq!(r.backend().as_deref(), Some("small"), "{}", r.describe());
    assert_eq!(holder.await.unwrap().status, 200);
}
