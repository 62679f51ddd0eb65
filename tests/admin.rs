//! Operations: the admin API (shapes, status codes, token, methods), draining through it,
//! Prometheus metrics (grammar and exact counts), hot reload (SIGHUP and API), access log and
//! debug header, and the status page rendered by headless Chromium.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::Value;

const TOKEN: &str = "admin-t0ken-4f9c2e7d";

// ------------------------------------------------------------------------------------ helpers

/// Any admin request: method, path, optional bearer token, optional extra headers.
async fn call(lb: &Balancer, method: Method, path: &str, token: Option<&str>, headers: &[(&str, &str)]) -> Reply {
    let mut rb = plain_client().request(method.clone(), lb.admin_url(path));
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let resp = rb.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    Reply::read(resp).await.unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

async fn admin(lb: &Balancer, method: Method, path: &str) -> Reply {
    call(lb, method, path, None, &[]).await
}

/// The reply is `status` with a JSON body `{"error": "<non-empty>", ...}`.
fn assert_json_error(r: &Reply, status: u16, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.describe());
    assert_eq!(r.header("content-type").as_deref(), Some("application/json"), "{what}: error is not JSON");
    let msg = r.json()["error"].as_str().map(str::to_string);
    assert!(msg.is_some_and(|m| !m.is_empty()), "{what}: no `error` string in {}", r.describe());
}

/// Writes `builder`'s config for this balancer's ports over its config file.
fn rewrite_config(lb: &Balancer, builder: &BalancerBuilder) {
    std::fs::write(&lb.config_path, builder.render(lb.port, lb.admin_port)).expect("rewrite config");
}

/// The config generation (successful reloads so far) per `/api/status`.
async fn generation(lb: &Balancer) -> u64 {
    let r = admin(lb, Method::GET, "/api/status").await;
    r.json()["generation"].as_u64().unwrap_or_else(|| panic!("no generation in {}", r.describe()))
}

async fn wait_generation(lb: &Balancer, want: u64) {
    let dl = Deadline::after(secs(5));
    while generation(lb).await < want {
        assert!(!dl.expired(), "config generation did not reach {want} within 5 s");
        sleep_ms(20).await;
    }
}

/// A new user whose session is pinned to `name` (fresh users are tried until one lands there).
async fn user_on(lb: &Balancer, name: &str) -> User {
    for _ in 0..30 {
        let u = User::new();
        let r = u.get(&lb.url("/")).await;
        if r.status == 200 && r.backend().as_deref() == Some(name) {
            return u;
        }
    }
    panic!("no fresh user landed on {name} in 30 tries");
}

/// Which backend `u`'s next request reaches, and the previous-backend header it carried.
async fn next_hop(lb: &Balancer, u: &User) -> (String, Option<String>) {
    let r = u.get(&lb.url("/where")).await;
    assert_eq!(r.status, 200, "{}", r.describe());
    (r.backend().expect("backend"), r.seen_header("x-stickylb-previous-backend"))
}

/// Backends of `n` cookieless requests.
async fn fresh_backends(lb: &Balancer, n: usize) -> Vec<String> {
    let c = plain_client();
    let mut out = Vec::new();
    for i in 0..n {
        let r = get(&c, &lb.url(&format!("/fresh/{i}"))).await;
        assert_eq!(r.status, 200, "{}", r.describe());
        out.push(r.backend().expect("backend"));
    }
    out
}

async fn scrape(lb: &Balancer) -> String {
    let r = admin(lb, Method::GET, "/metrics").await;
    assert_eq!(r.status, 200, "GET /metrics: {}", r.describe());
    r.text()
}

// ------------------------------------------------------------------- Prometheus text grammar

#[test]
fn the_grammar_checker_rejects_what_prometheus_would() {
    let ok = "# HELP a_total Things.\n# TYPE a_total counter\na_total{x=\"1\",y=\"q\\\"\\n\"} 3\n";
    assert_eq!(parse_exposition(ok)[0].labels["y"], "q\"\n");
    for bad in [
        "a_total 1\n",                                     // no TYPE
        "# TYPE a counter\na{x=1} 1\n",                    // unquoted label value
        "# TYPE a counter\na{x=\"1\"}1\n",                 // no space before the value
        "# TYPE a counter\na one\n",                       // not a number
        "# TYPE a gauge\n# TYPE a gauge\n",                // TYPE twice
        "# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\na 2\n", // family interleaved
        "# TYPE h histogram\nh_bucket 1\n",                // bucket without le
        "# TYPE a gauge\na{x=\"1\"} 1\na{x=\"1\"} 2\n",    // series twice
        "# TYPE a wibble\n",                               // unknown type
        "# TYPE 1a gauge\n",                               // bad name
    ] {
        assert!(std::panic::catch_unwind(|| parse_exposition(bad)).is_err(), "accepted {bad:?}");
    }
}

// ------------------------------------------------------------------------------------ API

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_with_its_status_and_json_shape() {
    let bs = TestBackend::start_many(&["app1", "app2"]).await;
    let lb = balancer(&refs(&bs)).start().await;

    let r = admin(&lb, Method::GET, "/healthz").await;
    assert_eq!((r.status, r.text().as_str()), (200, "ok\n"));

    let r = admin(&lb, Method::GET, "/api/backends").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type").as_deref(), Some("application/json"));
    let list = r.json();
    let list = list.as_array().expect("a JSON list");
    assert_eq!(list.len(), 2);
    for (b, want) in list.iter().zip(&bs) {
        assert_eq!(b["name"], want.name());
        assert_eq!(b["address"], want.address());
        assert_eq!(b["state"], "active");
        assert_eq!(b["healthy"], true);
        assert_eq!(b["weight"], 1);
        assert_eq!(b["active_requests"], 0);
        assert_eq!(b["sessions"], 0);
        assert_eq!(b["requests"], 0);
        for class in ["1xx", "2xx", "3xx", "4xx", "5xx"] {
            assert_eq!(b["responses"][class], 0, "responses.{class} in {b}");
        }
    }
    let r = admin(&lb, Method::GET, "/api/backends/app2").await;
    assert_eq!((r.status, r.json()["name"].clone()), (200, Value::from("app2")));
    assert_json_error(&admin(&lb, Method::GET, "/api/backends/nope").await, 404, "GET unknown backend");

    let r = admin(&lb, Method::GET, "/api/status").await;
    assert_eq!(r.status, 200);
    let s = r.json();
    assert_eq!(s["generation"], 0);
    assert_eq!(s["listen"], serde_json::json!([lb.addr().to_string()]));
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    assert!(s["uptime_ms"].is_u64() && s["sessions"].is_u64() && s["active_connections"].is_u64(), "{s}");

    // Sessions: a real one by its cookie value (percent-encoded in the path), then deleted.
    let u = User::new();
    let served = u.get(&lb.url("/")).await.backend().expect("backend");
    let cookie = u.cookie(&lb.url("/"), COOKIE).expect("session cookie");
    let path = format!("/api/sessions/{}", pct(&cookie));
    let r = admin(&lb, Method::GET, &path).await;
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(r.json()["backend"], served.as_str());
    assert!(r.json()["id"].as_str().is_some_and(|id| id.len() >= 32), "{}", r.describe());
    assert_eq!(lb.backend(&served).await["sessions"], 1);
    let r = admin(&lb, Method::DELETE, &path).await;
    assert_eq!((r.status, r.json()["deleted"].clone()), (200, Value::Bool(true)), "{}", r.describe());
    assert_json_error(&admin(&lb, Method::GET, &path).await, 404, "GET deleted session");
    assert_json_error(&admin(&lb, Method::DELETE, &path).await, 404, "DELETE deleted session");
    assert_json_error(&admin(&lb, Method::GET, "/api/sessions/no-such-session").await, 404, "GET unknown session");
    assert_eq!(lb.backend(&served).await["sessions"], 0);

    // State changes answer the backend's new view.
    for (action, state) in [("drain", "drain"), ("maint", "maint"), ("enable", "active")] {
        let r = admin(&lb, Method::POST, &format!("/api/backends/app1/{action}")).await;
        assert_eq!(r.status, 200, "{action}: {}", r.describe());
        assert_eq!((r.json()["name"].clone(), r.json()["state"].clone()), (Value::from("app1"), Value::from(state)));
        assert_eq!(lb.backend("app1").await["state"], state);
    }
    assert_json_error(&admin(&lb, Method::POST, "/api/backends/nope/drain").await, 404, "drain unknown backend");
    assert_json_error(&admin(&lb, Method::POST, "/api/backends/app1/explode").await, 404, "unknown action");

    let r = admin(&lb, Method::POST, "/api/reload").await;
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!((r.json()["reloaded"].clone(), r.json()["generation"].clone()), (Value::Bool(true), Value::from(1)));

    let r = admin(&lb, Method::GET, "/metrics").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type").as_deref(), Some("text/plain; version=0.0.4; charset=utf-8"));
    let r = call(&lb, Method::GET, "/metrics", None, &[("accept", "application/openmetrics-text;version=1.0.0")]).await;
    assert!(r.header("content-type").is_some_and(|t| t.starts_with("application/openmetrics-text")), "{:?}", r.headers);
    assert!(r.text().ends_with("# EOF\n"), "OpenMetrics must end with # EOF");

    let r = admin(&lb, Method::GET, "/").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type").as_deref(), Some("text/html; charset=utf-8"));
    let page = r.text();
    assert!(page.contains("<script>") && page.contains("/api/backends"), "not the status page");
    for external in ["http://", "https://", "src=", "<link"] {
        assert!(!page.contains(external), "the status page refers to something external ({external})");
    }
    assert!(r.header("content-security-policy").is_some_and(|c| c.contains("default-src 'none'")));

    assert_json_error(&admin(&lb, Method::GET, "/nope").await, 404, "unknown path");
    assert_json_error(&admin(&lb, Method::GET, "/api/nope").await, 404, "unknown API path");

    for (method, path, allow) in [
        (Method::GET, "/api/reload", "POST"),
        (Method::POST, "/metrics", "GET"),
        (Method::DELETE, "/healthz", "GET"),
        (Method::PUT, "/api/backends", "GET"),
        (Method::POST, "/api/backends/app1", "GET"),
        (Method::GET, "/api/backends/app1/drain", "POST"),
        (Method::POST, "/api/sessions/x", "GET, DELETE"),
        (Method::POST, "/", "GET"),
    ] {
        let r = admin(&lb, method.clone(), path).await;
        assert_json_error(&r, 405, &format!("{method} {path}"));
        assert_eq!(r.header("allow").as_deref(), Some(allow), "{method} {path}: Allow header");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_every_endpoint_but_healthz() {
    let b = TestBackend::start("app1").await;
    let lb = balancer(&[&b]).set("admin.token", TOKEN).start().await;
    let guarded = [
        (Method::GET, "/metrics", 200),
        (Method::GET, "/api/status", 200),
        (Method::GET, "/api/backends", 200),
        (Method::GET, "/api/backends/app1", 200),
        (Method::POST, "/api/backends/app1/drain", 200),
        (Method::POST, "/api/backends/app1/enable", 200),
        (Method::GET, "/api/sessions/nope", 404),
        (Method::DELETE, "/api/sessions/nope", 404),
        (Method::POST, "/api/reload", 200),
        (Method::GET, "/api/no-such-thing", 404),
    ];
    for (method, path, ok) in guarded {
        let what = format!("{method} {path}");
        let r = call(&lb, method.clone(), path, None, &[]).await;
        assert_json_error(&r, 401, &format!("{what} without a token"));
        assert!(r.header("www-authenticate").is_some_and(|v| v.starts_with("Bearer")), "{what}: WWW-Authenticate");
        assert_json_error(&call(&lb, method.clone(), path, Some("wrong"), &[]).await, 401, &format!("{what} wrong"));
        let almost = &TOKEN[..TOKEN.len() - 1];
        assert_json_error(&call(&lb, method.clone(), path, Some(almost), &[]).await, 401, &format!("{what} prefix"));
        let basic = call(&lb, method.clone(), path, None, &[("authorization", &format!("Basic {TOKEN}"))]).await;
        assert_json_error(&basic, 401, &format!("{what} with another scheme"));
        let r = call(&lb, method.clone(), path, Some(TOKEN), &[]).await;
        assert_eq!(r.status, ok, "{what} with the token: {}", r.describe());
    }
    // A refused state change changed nothing.
    assert_eq!(call(&lb, Method::POST, "/api/backends/app1/maint", None, &[]).await.status, 401);
    let r = call(&lb, Method::GET, "/api/backends/app1", Some(TOKEN), &[]).await;
    assert_eq!(r.json()["state"], "active");
    // Open: the liveness probe, and the page's static shell (no data; it reads the token from
    // its URL fragment to call the API).
    let r = call(&lb, Method::GET, "/healthz", None, &[]).await;
    assert_eq!((r.status, r.text().as_str()), (200, "ok\n"));
    let r = call(&lb, Method::GET, "/", None, &[]).await;
    assert_eq!(r.status, 200);
    assert!(!r.text().contains("app1"), "the page shell must not carry data");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_cannot_change_state_for_another_origin() {
    let b = TestBackend::start("app1").await;
    let lb = balancer(&[&b]).start().await;
    let evil = [("origin", "http://evil.example")];
    assert_json_error(&call(&lb, Method::POST, "/api/backends/app1/maint", None, &evil).await, 403, "cross-origin");
    assert_json_error(&call(&lb, Method::POST, "/api/reload", None, &evil).await, 403, "cross-origin reload");
    assert_eq!(lb.backend("app1").await["state"], "active");
    let own = format!("http://127.0.0.1:{}", lb.admin_port);
    let r = call(&lb, Method::POST, "/api/backends/app1/drain", None, &[("origin", &own)]).await;
    assert_eq!(r.status, 200, "same-origin POST (the status page's buttons): {}", r.describe());
    // Reads are not state changes.
    assert_eq!(call(&lb, Method::GET, "/api/backends", None, &evil).await.status, 200);
}

// ------------------------------------------------------------------------------------ drain

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_maint_and_enable_through_the_api() {
    let bs = TestBackend::start_many(&["app1", "app2"]).await;
    let lb = balancer(&refs(&bs)).set("balance.algorithm", "round_robin").start().await;
    let on1 = user_on(&lb, "app1").await;
    let on2 = user_on(&lb, "app2").await;

    assert_eq!(admin(&lb, Method::POST, "/api/backends/app2/drain").await.status, 200);
    let fresh = counts(fresh_backends(&lb, 20).await);
    assert_eq!(fresh.get("app1"), Some(&20), "new sessions while app2 drains: {fresh:?}");
    for _ in 0..5 {
        assert_eq!(next_hop(&lb, &on2).await, ("app2".to_string(), None), "a pinned session left the draining backend");
    }

    assert_eq!(admin(&lb, Method::POST, "/api/backends/app2/maint").await.status, 200);
    assert_eq!(next_hop(&lb, &on2).await, ("app1".to_string(), Some("app2".to_string())), "maint must move pins");
    assert_eq!(next_hop(&lb, &on2).await, ("app1".to_string(), None), "the moved session must stay moved");

    assert_eq!(admin(&lb, Method::POST, "/api/backends/app2/enable").await.status, 200);
    let fresh = counts(fresh_backends(&lb, 10).await);
    assert_eq!(fresh.get("app2"), Some(&5), "round robin after enable: {fresh:?}");
    assert_eq!(next_hop(&lb, &on1).await, ("app1".to_string(), None), "app1's user was disturbed");
    assert_eq!(next_hop(&lb, &on2).await, ("app1".to_string(), None), "enable must not move sessions back");
}

// ------------------------------------------------------------------------------------ metrics

/// What the client saw, as `backend,code` -> count (what `stickylb_requests_total` must say).
#[derive(Default)]
struct Tally(BTreeMap<String, f64>);

impl Tally {
    fn add(&mut self, backend: &str, code: u16) {
        *self.0.entry(format!("backend={backend},code={code}")).or_default() += 1.0;
    }
    fn total(&self) -> f64 {
        self.0.values().sum()
    }
    /// A response whose backend the debug header names; 502s can only come from `ghost`.
    fn reply(&mut self, r: &Reply) {
        let backend = match r.status {
            502 => "ghost".to_string(),
            _ => r.header("x-stickylb-backend").unwrap_or_else(|| panic!("no backend header: {}", r.describe())),
        };
        self.add(&backend, r.status);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_valid_prometheus_text_and_count_every_response_exactly() {
    let bs = TestBackend::start_many(&["app1", "app2"]).await;
    let ghost = format!("127.0.0.1:{}", free_port());
    let lb = balancer(&refs(&bs))
        .backend_at("ghost", &ghost)
        .set("balance.algorithm", "round_robin")
        .set("balance.retries", 0)
        .set("health.enabled", false)
        .set("passive.consecutive_failures", 1000)
        .set("server.request_timeout", "1s")
        .set("server.max_body_bytes", 1000)
        .set("log.debug_headers", true)
        .start()
        .await;
    let before = parse_exposition(&scrape(&lb).await);
    assert!(series(&before, "stickylb_requests_total").is_empty(), "requests counted before any");

    let mut tally = Tally::default();
    let c = plain_client();
    for i in 0..24 {
        let path = ["/", "/status?code=404", "/status?code=201"][i % 3];
        let r = get(&c, &lb.url(path)).await;
        assert!([200, 404, 201, 502].contains(&r.status), "{path}: {}", r.describe());
        tally.reply(&r);
    }
    // A forged cookie: ignored, counted as rejected, the request served as new.
    let r = get_with(&c, &lb.url("/"), &[("cookie", "STICKYLB=forged.value")]).await;
    tally.reply(&r);
    // 504 on app1: a user pinned there asks for more than request_timeout.
    let u = loop {
        let u = User::new();
        let r = u.get(&lb.url("/")).await;
        tally.reply(&r);
        if r.status == 200 && r.backend().as_deref() == Some("app1") {
            break u;
        }
    };
    let r = u.get(&lb.url("/slow?ms=3000")).await;
    assert_eq!(r.status, 504, "{}", r.describe());
    tally.add("app1", 504);
    // 413 before any backend is chosen, and 503 when none is left: backend="none".
    let big = c.post(lb.url("/upload")).body(vec![b'x'; 2000]).send().await.expect("POST");
    assert_eq!(big.status().as_u16(), 413);
    tally.add("none", 413);
    for name in ["app1", "app2", "ghost"] {
        assert_eq!(admin(&lb, Method::POST, &format!("/api/backends/{name}/maint")).await.status, 200);
    }
    for _ in 0..2 {
        assert_eq!(get(&c, &lb.url("/")).await.status, 503);
        tally.add("none", 503);
    }

    let text = scrape(&lb).await;
    let samples = parse_exposition(&text);
    assert_eq!(series(&samples, "stickylb_requests_total"), tally.0, "requests by backend and code\n{text}");
    assert!(tally.0.contains_key("backend=ghost,code=502"), "round robin never reached ghost: {:?}", tally.0);

    for (family, ty) in [
        ("stickylb_requests_total", "counter"),
        ("stickylb_request_duration_seconds", "histogram"),
        ("stickylb_backend_up", "gauge"),
        ("stickylb_sessions", "gauge"),
        ("stickylb_session_reassignments_total", "counter"),
        ("stickylb_cookie_rejected_total", "counter"),
        ("stickylb_active_connections", "gauge"),
        ("stickylb_store_errors_total", "counter"),
    ] {
        assert_eq!(type_of(&text, family).as_deref(), Some(ty), "# TYPE of {family}");
    }

    // The histogram saw every response; buckets are cumulative; the 504 took >= 1 s.
    let count = series(&samples, "stickylb_request_duration_seconds_count")[""];
    assert_eq!(count, tally.total(), "histogram count");
    let buckets: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| s.name == "stickylb_request_duration_seconds_bucket")
        .map(|s| (parse_value(&s.labels["le"]).expect("le"), s.value))
        .collect();
    assert!(buckets.len() >= 10, "too few buckets: {buckets:?}");
    assert!(buckets.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1), "not cumulative: {buckets:?}");
    assert_eq!(buckets.last().copied(), Some((f64::INFINITY, count)));
    let under_half_second = buckets.iter().find(|b| b.0 == 0.5).expect("le=0.5 bucket").1;
    assert!(under_half_second <= count - 1.0, "the 1 s timeout is in the 0.5 s bucket");
    assert!(series(&samples, "stickylb_request_duration_seconds_sum")[""] >= 1.0);

    let up = series(&samples, "stickylb_backend_up");
    assert_eq!(up.len(), 3);
    assert!(up.values().all(|&v| v == 1.0), "backend_up: {up:?}");
    let state = series(&samples, "stickylb_backend_state");
    assert_eq!(state.get("backend=app2,state=maint"), Some(&1.0));
    assert_eq!(state.get("backend=app2,state=active"), Some(&0.0));
    let sessions = series(&samples, "stickylb_sessions");
    for b in lb.backends().await {
        let name = b["name"].as_str().unwrap();
        assert_eq!(sessions[&format!("backend={name}")], b["sessions"].as_f64().unwrap(), "sessions of {name}");
    }
    let reasons: BTreeSet<String> = series(&samples, "stickylb_session_reassignments_total").into_keys().collect();
    let want: BTreeSet<String> = ["connect_failed", "down", "ejected", "maint", "overload", "removed"]
        .iter()
        .map(|r| format!("reason={r}"))
        .collect();
    assert_eq!(reasons, want);
    assert_eq!(series(&samples, "stickylb_cookie_rejected_total")[""], 1.0);
    assert_eq!(series(&samples, "stickylb_store_errors_total")[""], 0.0);
    assert!(series(&samples, "stickylb_active_connections")[""] >= 0.0);

    // The admin API agrees with the metrics.
    for b in lb.backends().await {
        let name = b["name"].as_str().unwrap();
        let total: f64 =
            tally.0.iter().filter(|(k, _)| k.starts_with(&format!("backend={name},"))).map(|(_, v)| v).sum();
        assert_eq!(b["requests"].as_f64(), Some(total), "requests of {name} in /api/backends");
    }
}

// ------------------------------------------------------------------------------------ reload

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_a_backend_keeping_pins_health_runtime_state_and_counters() {
    let bs = TestBackend::start_many(&["app1", "app2", "sick"]).await;
    bs[2].fail_health(true);
    let config = |backends: &[&TestBackend]| {
        balancer(backends)
            .set("balance.algorithm", "round_robin")
            .set("health.interval", "300ms")
            .set("health.healthy_threshold", 1)
            .set("health.unhealthy_threshold", 1)
    };
    let lb = config(&[&bs[0], &bs[2]]).start().await;
    assert!(lb.wait_healthy("sick", false, secs(5)).await, "sick never went down");
    let old = User::new();
    assert_eq!(next_hop(&lb, &old).await.0, "app1");
    assert_eq!(admin(&lb, Method::POST, "/api/backends/app1/drain").await.status, 200);

    rewrite_config(&lb, &config(&[&bs[0], &bs[1], &bs[2]]));
    let r = admin(&lb, Method::POST, "/api/reload").await;
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(r.json()["backends"], 3);

    // At once, before any new probe could have run: health is kept, not reset to up.
    assert_eq!(lb.backend("sick").await["healthy"], false, "a reload forgot that sick is down");
    let names: Vec<Value> = lb.backends().await.iter().map(|b| b["name"].clone()).collect();
    assert_eq!(names, vec![Value::from("app1"), Value::from("app2"), Value::from("sick")]);
    assert_eq!(lb.backend("app1").await["state"], "drain", "a reload forgot the admin API's drain");
    assert_eq!(lb.backend("app1").await["requests"], 1, "a reload reset app1's counters");
    let fresh = counts(fresh_backends(&lb, 10).await);
    assert_eq!(fresh.get("app2"), Some(&10), "new sessions must reach the new backend: {fresh:?}");
    assert_eq!(next_hop(&lb, &old).await, ("app1".to_string(), None), "the pin to app1 was lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_removing_a_backend_moves_its_sessions_with_the_previous_backend_header() {
    let bs = TestBackend::start_many(&["app1", "app2"]).await;
    let lb = balancer(&refs(&bs)).set("balance.algorithm", "round_robin").start_binary().await;
    let on1 = user_on(&lb, "app1").await;
    let on2 = user_on(&lb, "app2").await;
    // A request in flight on app2 during the reload finishes there, on the old snapshot.
    let (client, url) = (on2.client.clone(), lb.url("/slow?ms=1500"));
    let in_flight = tokio::spawn(async move { get(&client, &url).await });
    assert!(bs[1].wait_inflight(1, secs(5)).await, "the slow request did not reach app2");

    rewrite_config(&lb, &balancer(&[&bs[0]]).set("balance.algorithm", "round_robin"));
    lb.signal("HUP");
    wait_generation(&lb, 1).await;
    let r = in_flight.await.unwrap();
    assert_eq!((r.status, r.backend().as_deref()), (200, Some("app2")), "the in-flight request: {}", r.describe());

    assert_eq!(lb.backends().await.len(), 1);
    assert_eq!(next_hop(&lb, &on2).await, ("app1".to_string(), Some("app2".to_string())));
    assert_eq!(next_hop(&lb, &on2).await, ("app1".to_string(), None), "the moved session must stay moved");
    assert_eq!(next_hop(&lb, &on1).await, ("app1".to_string(), None), "app1's session was disturbed");
    let cookie = on2.cookie(&lb.url("/"), COOKIE).expect("cookie");
    assert_eq!(lb.session(&cookie).await.as_deref(), Some("app1"), "the pin was not updated");
    let removed = metric_value(&scrape(&lb).await, "stickylb_session_reassignments_total{reason=\"removed\"}");
    assert_eq!(removed, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_config_is_rejected_and_the_running_one_keeps_serving() {
    let bs = TestBackend::start_many(&["app1", "app2"]).await;
    let lb = balancer(&[&bs[0]]).start_binary().await;
    let u = User::new();
    assert_eq!(next_hop(&lb, &u).await.0, "app1");

    // An unknown key on a known line.
    let mut text = lb.config_text();
    let at = text.find("[session]\n").expect("[session]") + "[session]\n".len();
    text.insert_str(at, "sesion_mode = \"insert\"\n");
    let line = text[..at].lines().count() + 1;
    std::fs::write(&lb.config_path, &text).unwrap();

    let r = admin(&lb, Method::POST, "/api/reload").await;
    assert_json_error(&r, 400, "reload of a broken file");
    let want = format!("stickylb.toml:{line}:");
    let message = r.json()["error"].as_str().unwrap_or_default().to_string();
    assert!(message.contains(&want) && message.contains("sesion_mode"), "error {message:?} lacks {want}");
    let errors = r.json()["errors"].clone();
    assert!(errors.as_array().is_some_and(|e| e.iter().any(|m| m.as_str().unwrap_or("").contains(&want))), "{errors}");

    let rejections = |lb: &Balancer| lb.log_tail(1000).lines().filter(|l| l.contains("reload rejected")).count();
    // The log is written by a log thread: give the line a moment to reach the file.
    let dl = Deadline::after(secs(5));
    while rejections(&lb) == 0 {
        assert!(!dl.expired(), "the API's rejection was not logged:\n{}", lb.log_tail(20));
        sleep_ms(20).await;
    }
    let by_api = rejections(&lb);
    lb.signal("HUP");
    let dl = Deadline::after(secs(5));
    while rejections(&lb) == by_api {
        assert!(!dl.expired(), "SIGHUP with a broken file logged no rejection:\n{}", lb.log_tail(20));
        sleep_ms(50).await;
    }
    let last = lb.log_tail(1000).lines().rfind(|l| l.contains("reload rejected")).unwrap_or("").to_string();
    assert!(last.contains(&want), "the SIGHUP rejection lacks the error position {want}: {last}");
    assert_eq!(next_hop(&lb, &u).await, ("app1".to_string(), None), "the old config stopped serving");
    assert_eq!(generation(&lb).await, 0);
    let text = scrape(&lb).await;
    assert_eq!(metric_value(&text, "stickylb_config_reloads_total{result=\"failure\"}"), Some(2.0));
    assert_eq!(metric_value(&text, "stickylb_config_last_reload_successful"), Some(0.0));

    // Fixed: the next reload applies.
    rewrite_config(&lb, &balancer(&refs(&bs)));
    assert_eq!(admin(&lb, Method::POST, "/api/reload").await.status, 200);
    assert_eq!(lb.backends().await.len(), 2);
    assert_eq!(metric_value(&scrape(&lb).await, "stickylb_config_last_reload_successful"), Some(1.0));
}

/// What the load loop saw.
#[derive(Default)]
struct Load {
    ok: AtomicUsize,
    failures: Mutex<Vec<String>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_see_no_failure_during_ten_reloads() {
    let bs = TestBackend::start_many(&["app1", "app2", "app3"]).await;
    let config = |n: usize, weight: u32| {
        balancer(&refs(&bs[..n])).set("balance.algorithm", "round_robin").backend_set("app1", "weight", weight)
    };
    let lb = config(3, 1).start_binary().await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = Arc::new(Load::default());
    let mut clients = Vec::new();
    for i in 0..4 {
        let (stop, load, url) = (stop.clone(), load.clone(), lb.url(&format!("/loop/{i}")));
        clients.push(tokio::spawn(async move {
            // Half keep their session and connection; half come fresh every time, on a new
            // connection (so that a listener closed even briefly would refuse one).
            let user = User::new();
            let fresh = reqwest::Client::builder().no_proxy().pool_max_idle_per_host(0).build().unwrap();
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) && n < 5000 {
                n += 1;
                let r = if i % 2 == 0 { user.try_get(&url).await } else { try_get(&fresh, &url).await };
                match r {
                    Ok(r) if r.status == 200 => {
                        load.ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(r) => load.failures.lock().unwrap().push(r.describe()),
                    Err(e) => load.failures.lock().unwrap().push(e),
                }
            }
        }));
    }
    for i in 0..10u64 {
        sleep_ms(150).await;
        // Alternately drop app3 (its sessions move) and bring it back, with another weight.
        let next = if i % 2 == 0 { config(2, 2) } else { config(3, 1) };
        rewrite_config(&lb, &next);
        if i % 2 == 0 {
            lb.signal("HUP");
        } else {
            let r = admin(&lb, Method::POST, "/api/reload").await;
            assert_eq!(r.status, 200, "reload {i}: {}", r.describe());
        }
        wait_generation(&lb, i + 1).await;
    }
    sleep_ms(150).await;
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.expect("client task");
    }
    let failures = load.failures.lock().unwrap().clone();
    let ok = load.ok.load(Ordering::SeqCst);
    assert!(
        failures.is_empty(),
        "{} of {} requests failed during reloads: {:?}",
        failures.len(),
        ok + failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(ok >= 100, "only {ok} requests during 10 reloads");
    assert_eq!(generation(&lb).await, 10);
}

/// `listen = "127.0.0.1:P"` of the config text replaced by a list of ports.
fn with_listen(text: &str, port: u16, ports: &[u16]) -> String {
    let list: Vec<String> = ports.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    let from = format!("listen = \"127.0.0.1:{port}\"\n");
    assert!(text.contains(&from), "no {from:?} in the config");
    text.replacen(&from, &format!("listen = [{}]\n", list.join(", ")), 1)
}

async fn get_on(port: u16) -> Result<Reply, String> {
    try_get(&plain_client(), &format!("http://127.0.0.1:{port}/on/{port}")).await
}

async fn raw_get(conn: &mut RawConn, path: &str) -> u16 {
    conn.send(format!("GET {path} HTTP/1.1\r\nHost: lb\r\n\r\n").as_bytes()).await;
    conn.response().await.status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_addresses_follow_reloads_and_unchanged_ones_keep_their_sockets() {
    let b = TestBackend::start("app1").await;
    let lb = balancer(&[&b]).start().await;
    let (p, q) = (lb.port, free_port());
    let original = lb.config_text();
    let mut kept = RawConn::connect(lb.addr()).await;
    assert_eq!(raw_get(&mut kept, "/before").await, 200);

    std::fs::write(&lb.config_path, with_listen(&original, p, &[p, q])).unwrap();
    let r = admin(&lb, Method::POST, "/api/reload").await;
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(get_on(q).await.map(|r| r.status), Ok(200), "the added address does not serve");
    assert_eq!(get_on(p).await.map(|r| r.status), Ok(200), "the old address stopped serving");
    assert_eq!(raw_get(&mut kept, "/after-add").await, 200, "a connection from before the reload broke");

    // An address that cannot be bound rejects the whole reload.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let t = taken.local_addr().unwrap().port();
    std::fs::write(&lb.config_path, with_listen(&original, p, &[p, q, t])).unwrap();
    let r = admin(&lb, Method::POST, "/api/reload").await;
    assert_json_error(&r, 400, "reload with a taken address");
    assert!(r.json()["error"].as_str().unwrap().contains(&format!("127.0.0.1:{t}")), "{}", r.describe());
    assert_eq!(generation(&lb).await, 1);
    assert_eq!(get_on(q).await.map(|r| r.status), Ok(200));

    // Dropping the original address: it stops accepting; open connections finish normally.
    std::fs::write(&lb.config_path, with_listen(&original, p, &[q])).unwrap();
    assert_eq!(admin(&lb, Method::POST, "/api/reload").await.status, 200);
    let dl = Deadline::after(secs(3));
    while get_on(p).await.is_ok() {
        assert!(!dl.expired(), "the removed address still accepts");
        sleep_ms(20).await;
    }
    assert_eq!(get_on(q).await.map(|r| r.status), Ok(200));
    assert_eq!(raw_get(&mut kept, "/after-remove").await, 200, "an open connection was cut by the reload");
    drop(taken);
}

// ------------------------------------------------------------------------------------ logs

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_lines_and_the_debug_backend_header() {
    let b = TestBackend::start("app1").await;
    let lb = balancer(&[&b]).start_binary().await;
    let r = get(&plain_client(), &lb.url("/logged/path?q=1")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-stickylb-backend"), None, "the debug header is on by default");
    let dl = Deadline::after(secs(5));
    let line = loop {
        if let Some(l) = lb.log_tail(50).lines().find(|l| l.contains("/logged/path?q=1")).map(str::to_string) {
            break l;
        }
        assert!(!dl.expired(), "no access-log line:\n{}", lb.log_tail(20));
        sleep_ms(50).await;
    };
    for part in ["access", "GET", "status=200", "app1", "duration_ms="] {
        assert!(line.contains(part), "access-log line lacks {part:?}: {line}");
    }
    // The backend's Content-Length, also when its head was passed through as bytes.
    let n = r.body.len();
    assert!(n > 0 && [format!("bytes={n}"), format!("bytes=\"{n}\"")].iter().any(|p| line.contains(p)), "{line}");

    let quiet = balancer(&[&b]).set("log.debug_headers", true).set("log.access_log", false).start_binary().await;
    let r = get(&plain_client(), &quiet.url("/quiet/path")).await;
    assert_eq!(r.header("x-stickylb-backend").as_deref(), Some("app1"));
    sleep_ms(300).await;
    assert!(!quiet.log_tail(50).contains("/quiet/path"), "access_log = false still logs requests");
}

// ------------------------------------------------------------------------------------ page

/// Runs headless Chromium with `args` (plus the usual sandbox-free flags and a fresh profile),
/// killed (its whole process group) if it runs longer than `timeout`. Returns stdout.
fn chromium(args: &[String], timeout: Duration) -> String {
    use std::os::unix::process::CommandExt;
    let found = Command::new("chromium").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    assert!(
        found.is_ok_and(|s| s.success()),
        "chromium is missing: install it (apt-get install -y chromium; scripts/test does) - the status page test needs it"
    );
    let profile = tempfile::tempdir().expect("tempdir");
    let out = tempfile::NamedTempFile::new().expect("tempfile");
    let mut child = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage"])
        .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.reopen().expect("reopen"))
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("spawn chromium");
    let dl = Deadline::after(timeout);
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        if dl.expired() {
            // Its renderer and helpers are in its process group.
            let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", child.id())]).status();
            let _ = child.wait();
            panic!("chromium did not finish within {timeout:?}");
        }
        std::thread::sleep(ms(50));
    }
    std::fs::read_to_string(out.path()).unwrap_or_default()
}

fn dump_dom(url: &str) -> String {
    chromium(&["--virtual-time-budget=5000".into(), "--dump-dom".into(), url.into()], secs(60))
}

/// The `<tr>` start tag of one backend's row in the rendered DOM.
fn row_tag<'a>(dom: &'a str, name: &str) -> Option<&'a str> {
    let start = dom.find(&format!("data-backend=\"{name}\""))?;
    let open = dom[..start].rfind("<tr")?;
    let close = start + dom[start..].find('>')?;
    Some(&dom[open..=close])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_renders_every_backend_in_headless_chromium() {
    let bs = TestBackend::start_many(&["app1", "app2", "app3"]).await;
    let lb = balancer(&refs(&bs)).set("balance.algorithm", "round_robin").start().await;
    fresh_backends(&lb, 9).await;
    assert_eq!(admin(&lb, Method::POST, "/api/backends/app2/drain").await.status, 200);
    assert_eq!(admin(&lb, Method::POST, "/api/backends/app3/maint").await.status, 200);

    let url = lb.admin_url("/");
    let dom = tokio::task::spawn_blocking(move || dump_dom(&url)).await.unwrap();
    assert!(dom.contains("data-state=\"ready\""), "the page's script did not render the API data:\n{dom}");
    for (name, state) in [("app1", "active"), ("app2", "drain"), ("app3", "maint")] {
        let row = row_tag(&dom, name).unwrap_or_else(|| panic!("no row for {name} in the DOM:\n{dom}"));
        assert!(row.contains(&format!("data-state=\"{state}\"")), "{name} should be {state}: {row}");
        assert!(dom.contains(&format!(">{}<", state.to_uppercase())), "no {state} badge");
    }
    assert!(dom.contains(">Total<"), "no totals row");

    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("status.png");
    let (shot, url) = (png.clone(), lb.admin_url("/"));
    tokio::task::spawn_blocking(move || {
        let args = [
            format!("--screenshot={}", shot.display()),
            "--window-size=1200,700".into(),
            "--virtual-time-budget=5000".into(),
            url,
        ];
        chromium(&args, secs(60))
    })
    .await
    .unwrap();
    let bytes = std::fs::read(&png).expect("no screenshot written");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 10_000, "not a real screenshot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_reads_the_token_from_its_url_fragment() {
    let b = TestBackend::start("app1").await;
    let lb = balancer(&[&b]).set("admin.token", TOKEN).start().await;
    let url = lb.admin_url(&format!("/#token={TOKEN}"));
    let dom = tokio::task::spawn_blocking(move || dump_dom(&url)).await.unwrap();
    assert!(dom.contains("data-state=\"ready\"") && row_tag(&dom, "app1").is_some(), "with the token:\n{dom}");

    let url = lb.admin_url("/");
    let dom = tokio::task::spawn_blocking(move || dump_dom(&url)).await.unwrap();
    assert!(row_tag(&dom, "app1").is_none(), "data shown without the token");
    assert!(dom.contains("requires a token") && !dom.contains("<form id=\"auth\" hidden"), "no token prompt:\n{dom}");
}
