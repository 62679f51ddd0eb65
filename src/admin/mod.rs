//! The admin API on its own listener: process health, Prometheus metrics, backend state
//! changes (drain / maint / enable, fleet-wide with Redis), session lookups, reload, the group
//! (`/api/cluster`), and the live status page.
//!
//! It owns no state: it reads the snapshot, the store (pins, and session counts by backend
//! name) and the metrics, and writes only a backend's admin state (an atomic in
//! `balance::Backend`), pins, and (through reload) the snapshot. Routing and access control
//! live here; the handlers are in `api`.
//!
//! Access: with `admin.token` set, every path but `/healthz` and the status page's static
//! shell (`/`, which holds no data and reads the token from its URL fragment) needs
//! `Authorization: Bearer TOKEN`. State-changing requests that a browser marks as coming
//! from another origin are refused, so a web page cannot drive the API through the
//! operator's browser (CSRF) when no token is set.
//!
//! `admin.listen` is bound once at start: a reload that changes it logs a warning and the
//! change takes effect after a restart. `admin.token` changes take effect at once.

mod api;
pub mod prometheus;
mod reply;

use self::reply::{error, AdminResponse};
use crate::shutdown::Shutdown;
use crate::state::Shared;
use http::{header, HeaderValue, Method, Request, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// How long an admin client may take to send a request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serve the admin API on `listener` until shutdown.
pub async fn run(listener: TcpListener, shared: Arc<Shared>, mut shutdown: Shutdown) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    let bound_for = shared.snapshot().config.admin.listen;
    let mut reloads = shared.reloads();
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.wait() => return,
            Ok(()) = reloads.changed() => {
                warn_if_moved(&shared, bound_for);
                continue;
            }
            c = crate::listen::accept(&listener, "admin") => match c { Some(c) => c, None => continue },
        };
        let shared = shared.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(answer(&shared, req).await) }
            });
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

fn warn_if_moved(shared: &Shared, bound_for: Option<SocketAddr>) {
    let wanted = shared.snapshot().config.admin.listen;
    if wanted != bound_for {
        tracing::warn!(
            running = ?bound_for,
            configured = ?wanted,
            "admin.listen changed; the admin API keeps its current address until a restart"
        );
    }
}

/// What an admin path names (segments already percent-decoded).
#[derive(Debug, PartialEq, Eq)]
enum Resource {
    Health,
    Metrics,
    Page,
    Status,
    Backends,
    Backend(String),
    BackendAction(String, crate::config::AdminState),
    Session(String),
    Reload,
    Cluster,
}

impl Resource {
    fn parse(path: &str) -> Option<Resource> {
        let segments: Vec<String> =
            path.split('/').filter(|s| !s.is_empty()).map(reply::percent_decode).collect::<Option<_>>()?;
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        Some(match segments.as_slice() {
            [] => Resource::Page,
            ["healthz"] => Resource::Health,
            ["metrics"] => Resource::Metrics,
            ["api", "status"] => Resource::Status,
            ["api", "backends"] => Resource::Backends,
            ["api", "backends", name] => Resource::Backend(name.to_string()),
            ["api", "backends", name, action] => Resource::BackendAction(name.to_string(), api::parse_action(action)?),
            ["api", "sessions", id] => Resource::Session(id.to_string()),
            ["api", "reload"] => Resource::Reload,
            ["api", "cluster"] => Resource::Cluster,
            _ => return None,
        })
    }

    /// Methods the resource answers (HEAD is served as GET).
    fn allows(&self) -> &'static [Method] {
        match self {
            Resource::BackendAction(..) | Resource::Reload => &[Method::POST],
            Resource::Session(_) => &[Method::GET, Method::DELETE],
            _ => &[Method::GET],
        }
    }

    /// Reachable without the token: the liveness probe, and the status page's static shell.
    fn is_open(&self) -> bool {
        matches!(self, Resource::Health | Resource::Page)
    }
}

/// Sweep expired pins so that the store's per-backend counts are current, and return the live
/// session count. The sweep visits every pin (tens of ms at 10M), so it runs on the blocking
/// pool: the admin API shares its thread with a proxy worker.
async fn sweep_sessions(shared: &Arc<Shared>) -> u64 {
    let shared = shared.clone();
    tokio::task::spawn_blocking(move || shared.store_len_for_metrics()).await.unwrap_or(0)
}

/// The count of backend `name` in the store's per-name session counts (0 if it has none).
fn session_count(sessions: &[(Arc<str>, u64)], name: &str) -> u64 {
    sessions.iter().find(|(n, _)| &**n == name).map_or(0, |&(_, count)| count)
}

/// Answer one admin request: access control, then the resource.
async fn answer(shared: &Arc<Shared>, req: Request<Incoming>) -> AdminResponse {
    let method = if req.method() == Method::HEAD { Method::GET } else { req.method().clone() };
    let resource = Resource::parse(req.uri().path());
    let open = resource.as_ref().is_some_and(Resource::is_open);
    if shared.snapshot().config.admin.token.is_empty() && !host_allowed(req.headers().get(header::HOST)) {
        // Without a token, a page on another site must not reach the API through DNS
        // rebinding (its name resolving to this address): only IP literals and localhost.
        return error(StatusCode::FORBIDDEN, "admin API: Host must be an IP address or localhost");
    }
    if !open && !authorized(shared, &req) {
        return reply::unauthorized();
    }
    let Some(resource) = resource else {
        return error(StatusCode::NOT_FOUND, "not found");
    };
    if !resource.allows().contains(&method) {
        return reply::method_not_allowed(resource.allows());
    }
    if method != Method::GET && is_cross_origin(&req) {
        return error(StatusCode::FORBIDDEN, "cross-origin request refused");
    }
    match resource {
        Resource::Health => reply::text(StatusCode::OK, "ok\n"),
        Resource::Metrics => {
            sweep_sessions(shared).await;
            api::metrics(shared, req.headers().get(header::ACCEPT))
        }
        Resource::Page => reply::status_page(),
        Resource::Status => api::status(shared, sweep_sessions(shared).await),
        Resource::Backends => {
            sweep_sessions(shared).await;
            api::backends(shared)
        }
        Resource::Backend(name) => {
            sweep_sessions(shared).await;
            api::backend(shared, &name)
        }
        Resource::BackendAction(name, state) => api::set_state(shared, &name, state),
        Resource::Session(id) => api::session(shared, &id, method == Method::DELETE).await,
        Resource::Reload => api::reload(shared),
        Resource::Cluster => reply::json(StatusCode::OK, &shared.group.report()),
    }
}

/// `Authorization: Bearer TOKEN` (scheme case-insensitive), compared in constant time, when a
/// token is configured.
fn authorized(shared: &Shared, req: &Request<Incoming>) -> bool {
    let snap = shared.snapshot();
    let token = snap.config.admin.token.as_bytes();
    if token.is_empty() {
        return true;
    }
    let given = req.headers().get(header::AUTHORIZATION).and_then(bearer_token).unwrap_or_default();
    constant_time_eq(given, token)
}

fn bearer_token(value: &HeaderValue) -> Option<&[u8]> {
    let v = value.as_bytes();
    let (scheme, rest) = v.split_at(v.iter().position(|&b| b == b' ')?);
    scheme.eq_ignore_ascii_case(b"bearer").then(|| rest.trim_ascii())
}

/// Equality whose running time depends only on the length of `given` (the caller's input),
/// never on where `secret` differs or how long it is.
pub fn constant_time_eq(given: &[u8], secret: &[u8]) -> bool {
    if secret.is_empty() {
        return given.is_empty();
    }
    let mut diff = u8::from(given.len() != secret.len());
    for (i, g) in given.iter().enumerate() {
        diff |= g ^ secret[i % secret.len()];
    }
    std::hint::black_box(diff) == 0
}

/// A `Host` the admin API answers without a token: an IP literal (v4, or v6 in brackets) or
/// `localhost`, with any port; no `Host` at all (HTTP/1.0 tools) too.
fn host_allowed(host: Option<&HeaderValue>) -> bool {
    let Some(host) = host else { return true };
    let Ok(host) = host.to_str() else { return false };
    let name = match host.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((ip, rest)) if rest.is_empty() || rest.starts_with(':') => {
                return ip.parse::<std::net::Ipv6Addr>().is_ok()
            }
            _ => return false,
        },
        None => host.rsplit_once(':').map_or(host, |(name, _port)| name),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::Ipv4Addr>().is_ok()
}

/// A browser-sent `Origin` that is not this listener's own (`http://` + `Host`). Clients
/// that send no `Origin` (curl, scripts) are not browsers acting for another site.
fn is_cross_origin(req: &Request<Incoming>) -> bool {
    let Some(origin) = req.headers().get(header::ORIGIN) else { return false };
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    let origin = origin.to_str().unwrap_or("");
    !matches!(origin.strip_prefix("http://"), Some(o) if o.eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rebinding_defence_allows_ip_literals_and_localhost_only() {
        let ok = |h: &str| host_allowed(Some(&HeaderValue::from_str(h).unwrap()));
        for good in ["127.0.0.1:9090", "127.0.0.1", "10.1.2.3:80", "[::1]:9090", "[::1]", "localhost:9090", "LOCALHOST"]
        {
            assert!(ok(good), "{good}");
        }
        for bad in
            ["evil.example:9090", "evil.example", "127.0.0.1.evil.example", "[::1", "[::1]x", "localhost.evil:1", ""]
        {
            assert!(!ok(bad), "{bad}");
        }
        assert!(host_allowed(None));
    }
    use crate::config::AdminState;

    #[test]
    fn token_compare_accepts_only_the_exact_token() {
        assert!(constant_time_eq(b"s3cret-token", b"s3cret-token"));
        assert!(!constant_time_eq(b"s3cret-tokeN", b"s3cret-token"));
        assert!(!constant_time_eq(b"s3cret-token-", b"s3cret-token"), "a longer guess");
        assert!(!constant_time_eq(b"s3cret", b"s3cret-token"), "a prefix");
        assert!(!constant_time_eq(b"", b"s3cret-token"));
        assert!(!constant_time_eq(b"s3cret-tokens3cret-token", b"s3cret-token"), "the token twice");
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"x", b""));
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_required() {
        let t = |v: &'static str| bearer_token(&HeaderValue::from_static(v)).map(<[u8]>::to_vec);
        assert_eq!(t("Bearer abc"), Some(b"abc".to_vec()));
        assert_eq!(t("bearer  abc "), Some(b"abc".to_vec()));
        assert_eq!(t("Basic abc"), None);
        assert_eq!(t("abc"), None);
    }

    #[test]
    fn paths_name_resources_with_decoded_segments() {
        assert_eq!(Resource::parse("/"), Some(Resource::Page));
        assert_eq!(Resource::parse("/healthz/"), Some(Resource::Health));
        assert_eq!(Resource::parse("/api/backends/app%201"), Some(Resource::Backend("app 1".into())));
        assert_eq!(
            Resource::parse("/api/backends/a/maint"),
            Some(Resource::BackendAction("a".into(), AdminState::Maint))
        );
        assert_eq!(Resource::parse("/api/backends/a/explode"), None);
        assert_eq!(Resource::parse("/api/sessions/ab%2Bc%3D"), Some(Resource::Session("ab+c=".into())));
        assert_eq!(Resource::parse("/api/sessions/%zz"), None);
        assert_eq!(Resource::parse("/nope"), None);
    }
}
