//! docs/grafana-dashboard.json queries only metrics that `/metrics` exposes: a renamed or
//! removed metric breaks this test, not an operator's dashboard.

mod common;

use std::collections::BTreeSet;

use common::*;

/// Every `stickylb_*` name in `text` (PromQL or exposition).
fn names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("stickylb_") {
        let tail = &rest[at..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

/// The PromQL expressions of every panel target and template query.
fn queries(dashboard: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dashboard];
    while let Some(v) = stack.pop() {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                        _ => stack.push(v),
                    }
                }
            }
            serde_json::Value::Array(a) => stack.extend(a),
            _ => {}
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_grafana_dashboard_queries_exists() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/grafana-dashboard.json");
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let wanted: BTreeSet<String> = queries(&dashboard).iter().flat_map(|q| names(q)).collect();
    assert!(wanted.len() >= 10, "the dashboard queries too little: {wanted:?}");

    let bs = TestBackend::start_many(&["app1"]).await;
    let lb = balancer(&refs(&bs)).set("health.enabled", false).start().await;
    assert_eq!(User::new().get(&lb.url("/")).await.status, 200);
    let r = get(&plain_client(), &lb.admin_url("/metrics")).await;
    assert_eq!(r.status, 200);
    let exposed = names(&r.text());
    let missing: Vec<&String> = wanted.iter().filter(|n| !exposed.contains(*n)).collect();
    assert!(missing.is_empty(), "the dashboard queries metrics /metrics does not have: {missing:?}\n{}", r.text());
}
