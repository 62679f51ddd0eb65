//! The admin API on its own listener: health of the process, Prometheus metrics, backend
//! state changes (drain / maint / enable), session lookups, reload, and the status page.
//!
//! It owns no state: it reads the snapshot and the store, and writes only a backend's admin
//! state (an atomic in `balance::Backend`) and pins.

use crate::config::AdminState;
use crate::state::Shared;
use crate::store::AffinityStore;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde::Serialize;
use std::convert::Infallible;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

type AdminResponse = Response<Full<Bytes>>;

/// Serve the admin API on `listener` until shutdown.
pub async fn run(listener: TcpListener, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, _) = tokio::select! {
            _ = crate::server::stopped(&mut shutdown) => return,
            r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
        };
        let shared = shared.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(route(&shared, req).await) }
            });
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

async fn route(shared: &Shared, req: Request<Incoming>) -> AdminResponse {
    let path = req.uri().path().trim_end_matches('/').to_owned();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let method = req.method().clone();
    if segments.as_slice() != ["healthz"] && !authorized(shared, &req) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    }
    match (&method, segments.as_slice()) {
        (&Method::GET, ["healthz"]) => text(StatusCode::OK, "ok\n"),
        (&Method::GET, ["metrics"]) => metrics(shared),
        (&Method::GET, ["api", "backends"]) => json(StatusCode::OK, &backends(shared)),
        (&Method::POST, ["api", "backends", name, action]) => set_state(shared, name, action),
        (&Method::GET, ["api", "sessions", id]) => session(shared, id, false).await,
        (&Method::DELETE, ["api", "sessions", id]) => session(shared, id, true).await,
        (&Method::POST, ["api", "reload"]) => reload(shared),
        (&Method::GET, []) => status_page(),
        (_, ["healthz"] | ["metrics"] | ["api", ..]) => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        _ => error(StatusCode::NOT_FOUND, "not found"),
    }
}

/// `Authorization: Bearer TOKEN`, compared in constant time, when a token is configured.
fn authorized(shared: &Shared, req: &Request<Incoming>) -> bool {
    let snap = shared.snapshot();
    let token = snap.config.admin.token.as_bytes();
    if token.is_empty() {
        return true;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .as_bytes();
    constant_time_eq(given, token)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Serialize)]
struct BackendView {
    name: String,
    address: String,
    state: &'static str,
    healthy: bool,
    active_requests: usize,
    sessions: i64,
    weight: u32,
    requests: u64,
    failures: u64,
}

fn backends(shared: &Shared) -> Vec<BackendView> {
    // Let pending evictions run so that session counts are current.
    let _ = shared.store.len();
    shared
        .snapshot()
        .pool
        .backends()
        .iter()
        .map(|b| BackendView {
            name: b.name.to_string(),
            address: b.addr.to_string(),
            state: b.state().as_str(),
            healthy: b.is_healthy(),
            active_requests: b.in_flight(),
            sessions: b.sessions.load(Relaxed).max(0),
            weight: b.weight,
            requests: b.requests.load(Relaxed),
            failures: b.failures.load(Relaxed),
        })
        .collect()
}

fn set_state(shared: &Shared, name: &str, action: &str) -> AdminResponse {
    let state = match action {
        "drain" => AdminState::Drain,
        "maint" => AdminState::Maint,
        "enable" => AdminState::Active,
        _ => return error(StatusCode::NOT_FOUND, "unknown action: use drain, maint or enable"),
    };
    let snap = shared.snapshot();
    let Some(b) = snap.pool.get(name) else {
        return error(StatusCode::NOT_FOUND, &format!("no backend named {name:?}"));
    };
    b.set_state(state);
    tracing::info!(backend = name, state = state.as_str(), "backend state changed through the admin API");
    json(StatusCode::OK, &serde_json::json!({ "name": name, "state": state.as_str() }))
}

async fn session(shared: &Shared, id: &str, delete: bool) -> AdminResponse {
    let snap = shared.snapshot();
    // Accept a whole insert-mode cookie value as well as a bare session id.
    let key = snap.session.codec.as_ref().and_then(|c| c.verify(id)).unwrap_or_else(|| id.to_owned());
    let Some(backend) = shared.store.get(&key, &snap.pool).await else {
        return error(StatusCode::NOT_FOUND, "no such session");
    };
    if delete {
        shared.store.unpin(&key).await;
    }
    json(StatusCode::OK, &serde_json::json!({ "id": key, "backend": &*backend.name, "deleted": delete }))
}

fn reload(shared: &Shared) -> AdminResponse {
    match shared.reload() {
        Ok(()) => json(StatusCode::OK, &serde_json::json!({ "reloaded": true })),
        Err(e) => {
            tracing::error!("reload rejected: {e}");
            json(StatusCode::BAD_REQUEST, &serde_json::json!({ "error": "invalid config", "errors": e.messages() }))
        }
    }
}

fn metrics(shared: &Shared) -> AdminResponse {
    let body = crate::metrics::render(shared);
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    r
}

fn status_page() -> AdminResponse {
    let mut r = Response::new(Full::new(Bytes::from_static(include_bytes!("status.html"))));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    r
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> AdminResponse {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn error(status: StatusCode, message: &str) -> AdminResponse {
    json(status, &serde_json::json!({ "error": message }))
}

fn text(status: StatusCode, body: &'static str) -> AdminResponse {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}
