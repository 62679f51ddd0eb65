//! The admin API's handlers: JSON views of the process, the backends and the sessions; backend
//! state changes; reload; the metrics scrape. Routing and access checks happen before these.

use super::prometheus::{self, Format};
use super::reply::{error, json, AdminResponse};
use super::session_count;
use crate::balance::Backend;
use crate::config::{AdminState, Algorithm, SessionMode};
use crate::metrics::Reassign;
use crate::state::Shared;
use crate::store::AffinityStore;
use http::{HeaderValue, StatusCode};
use serde::Serialize;
use std::sync::atomic::Ordering::Relaxed;

/// `drain` / `maint` / `enable` in `POST /api/backends/{name}/{action}`.
pub fn parse_action(action: &str) -> Option<AdminState> {
    match action {
        "drain" => Some(AdminState::Drain),
        "maint" => Some(AdminState::Maint),
        "enable" => Some(AdminState::Active),
        _ => None,
    }
}

/// One backend as `GET /api/backends` shows it.
#[derive(Serialize)]
struct BackendView<'a> {
    name: &'a str,
    address: String,
    /// Administrative state: active, drain or maint.
    state: &'static str,
    /// Passes health checks and is not ejected by passive checks.
    healthy: bool,
    /// Ejected by passive checks (consecutive connect errors or timeouts on real traffic).
    ejected: bool,
    /// Whether active health checks probe this backend.
    health_checks: bool,
    /// Requests being forwarded to it right now.
    active_requests: usize,
    /// Sessions pinned to it (as the store counts them by name).
    sessions: u64,
    weight: u32,
    max_connections: usize,
    /// Responses sent for it since start (counters survive reloads), in total and per class.
    requests: u64,
    responses: Classes,
}

#[derive(Serialize)]
struct Classes {
    #[serde(rename = "1xx")]
    informational: u64,
    #[serde(rename = "2xx")]
    success: u64,
    #[serde(rename = "3xx")]
    redirect: u64,
    #[serde(rename = "4xx")]
    client_error: u64,
    #[serde(rename = "5xx")]
    server_error: u64,
}

fn view(b: &Backend, sessions: u64) -> BackendView<'_> {
    let [informational, success, redirect, client_error, server_error] = b.responses.classes();
    BackendView {
        name: &b.name,
        address: b.addr.to_string(),
        state: b.state().as_str(),
        healthy: b.is_healthy(),
        ejected: b.health.is_ejected(),
        health_checks: b.check.enabled,
        active_requests: b.in_flight(),
        sessions,
        weight: b.weight,
        max_connections: b.max_connections,
        requests: b.responses.total(),
        responses: Classes { informational, success, redirect, client_error, server_error },
    }
}

/// `GET /api/backends`: every backend of the running config, in config order (the router swept
/// expired pins first, so the session counts are current).
pub fn backends(shared: &Shared) -> AdminResponse {
    let snap = shared.snapshot();
    let sessions = shared.store.sessions();
    let views: Vec<BackendView> =
        snap.pool.backends().iter().map(|b| view(b, session_count(&sessions, &b.name))).collect();
    json(StatusCode::OK, &views)
}

/// `GET /api/backends/{name}`.
pub fn backend(shared: &Shared, name: &str) -> AdminResponse {
    let snap = shared.snapshot();
    match snap.pool.get(name) {
        Some(b) => json(StatusCode::OK, &view(b, session_count(&shared.store.sessions(), name))),
        None => unknown_backend(name),
    }
}

fn unknown_backend(name: &str) -> AdminResponse {
    error(StatusCode::NOT_FOUND, &format!("no backend named {name:?}"))
}

/// `POST /api/backends/{name}/{drain|maint|enable}`: answers the backend's new view. The state
/// holds until changed again; a reload keeps it unless the file's `state` for it changed. With
/// Redis the change goes to every instance of the group (`group::fleet`).
pub fn set_state(shared: &Shared, name: &str, state: AdminState) -> AdminResponse {
    let snap = shared.snapshot();
    let Some(b) = snap.pool.get(name) else {
        return unknown_backend(name);
    };
    let before = b.state();
    b.set_state(state);
    shared.group.changed(name, state);
    tracing::info!(
        backend = name,
        from = before.as_str(),
        to = state.as_str(),
        "backend state changed through the admin API"
    );
    json(StatusCode::OK, &view(b, session_count(&shared.store.sessions(), name)))
}

/// `GET` / `DELETE /api/sessions/{id}`: `id` is a session key, or a whole insert-mode cookie
/// value (its signature is checked and the key inside used).
pub async fn session(shared: &Shared, id: &str, delete: bool) -> AdminResponse {
    let snap = shared.snapshot();
    let key = snap.session.codec.as_ref().and_then(|c| c.verify(id)).map(|v| v.id).unwrap_or_else(|| id.to_owned());
    let Some(backend) = shared.store.get(&key).await else {
        return error(StatusCode::NOT_FOUND, "no such session");
    };
    if delete {
        shared.store.unpin(&key).await;
        tracing::info!(backend = %backend, "session pin deleted through the admin API");
        return json(StatusCode::OK, &serde_json::json!({ "id": key, "backend": &*backend, "deleted": true }));
    }
    json(StatusCode::OK, &serde_json::json!({ "id": key, "backend": &*backend }))
}

/// `POST /api/reload`: as SIGHUP; 400 with every error when the file is rejected.
pub fn reload(shared: &Shared) -> AdminResponse {
    match shared.reload() {
        Ok(()) => {
            let snap = shared.snapshot();
            let generation = *shared.reloads().borrow();
            let listen: Vec<String> = snap.config.server.listen.iter().map(ToString::to_string).collect();
            let body = serde_json::json!({
                "reloaded": true,
                "generation": generation,
                "backends": snap.pool.backends().len(),
                "listen": listen,
            });
            json(StatusCode::OK, &body)
        }
        Err(e) => {
            let errors = e.messages();
            for m in &errors {
                tracing::error!("reload rejected, keeping the running config: {m}");
            }
            let message = format!("config rejected, the previous one keeps running: {}", errors.join("; "));
            json(StatusCode::BAD_REQUEST, &serde_json::json!({ "error": message, "errors": errors }))
        }
    }
}

/// `GET /metrics`: Prometheus text, or OpenMetrics when the scraper asks for it.
pub fn metrics(shared: &Shared, accept: Option<&HeaderValue>) -> AdminResponse {
    let format = Format::from_accept(accept.and_then(|v| v.to_str().ok()));
    let body = prometheus::encode(shared.snapshot(), shared.metrics.clone(), shared.store.sessions(), format);
    super::reply::metrics(body, format.content_type())
}

/// `GET /api/status`: the process at a glance, for the status page's header; `sessions` is
/// the live pin count.
pub fn status(shared: &Shared, sessions: u64) -> AdminResponse {
    let snap = shared.snapshot();
    let m = &shared.metrics;
    let (reloads_ok, reloads_failed, last_ok) = m.reloads();
    let reassigned: u64 = Reassign::ALL.iter().map(|&r| m.reassignments(r)).sum();
    let listen: Vec<String> = snap.config.server.listen.iter().map(ToString::to_string).collect();
    let body = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": m.started.elapsed().as_secs(),
        // Monotonic server time, so that the status page computes rates over the time that
        // really passed between two polls (whatever the network or the browser's timers did).
        "uptime_ms": m.started.elapsed().as_millis() as u64,
        "generation": *shared.reloads().borrow(),
        "config_file": shared.config_path.as_ref().map(|p| p.display().to_string()),
        "listen": listen,
        "algorithm": algorithm_name(snap.config.balance.algorithm),
        "session_mode": mode_name(snap.session.mode),
        "affinity": match snap.config.session.affinity {
            crate::config::Affinity::Strict => "strict",
            crate::config::Affinity::Preferred => "preferred",
        },
        "bounded_load": snap.config.balance.bounded_load,
        "moved_for_overload": m.reassignments(Reassign::Overload),
        "sessions": sessions,
        "active_connections": m.active_connections.load(Relaxed).max(0),
        "unrouted_requests": m.unrouted.total(),
        "reassignments": reassigned,
        "cookies_rejected": m.cookie_rejected.load(Relaxed),
        "reloads": { "succeeded": reloads_ok, "failed": reloads_failed, "last_succeeded": last_ok },
    });
    json(StatusCode::OK, &body)
}

fn algorithm_name(a: Algorithm) -> &'static str {
    match a {
        Algorithm::RoundRobin => "round_robin",
        Algorithm::LeastConnections => "least_connections",
        Algorithm::RandomTwo => "random_two",
        Algorithm::Hash => "hash",
    }
}

fn mode_name(m: SessionMode) -> &'static str {
    match m {
        SessionMode::Insert => "insert",
        SessionMode::Learn => "learn",
        SessionMode::Header => "header",
        SessionMode::Soap => "soap",
        SessionMode::None => "none",
    }
}
