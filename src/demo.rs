//! `stickylb demo`: three small stateful demo backends on loopback plus the balancer, with no
//! config file, so a newcomer sees stickiness at once.
//!
//! Each demo backend keeps its own in-memory sessions (like a servlet container): it sets a
//! `DEMO_SESSION` cookie and counts that client's hits. Behind stickylb the counter goes
//! 1, 2, 3... on one backend; without stickiness it would restart on every other node.

use crate::config::{self, Config};
use bytes::Bytes;
use http::{header, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

/// Start one demo backend on 127.0.0.1 (any free port); returns its address.
pub async fn start_backend(name: &'static str) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    // A std Mutex: it is never held across an `.await`.
    let sessions: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let sessions = sessions.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let sessions = sessions.clone();
                    async move { Ok::<_, Infallible>(answer(name, &sessions, req)) }
                });
                let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    Ok(addr)
}

fn answer(name: &str, sessions: &Mutex<HashMap<String, u64>>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.uri().path() == "/health" {
        return Response::new(Full::new(Bytes::from_static(b"ok\n")));
    }
    let existing = req
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .flatten()
        .find(|c| c.name() == "DEMO_SESSION")
        .map(|c| c.value().to_owned());
    let mut table = sessions.lock().unwrap_or_else(|e| e.into_inner());
    let (id, fresh) = match existing.filter(|id| table.contains_key(id)) {
        Some(id) => (id, false),
        None => (crate::session::CookieCodec::new_id(), true),
    };
    let hits = table.entry(id.clone()).or_insert(0);
    *hits += 1;
    let body = format!("backend {name}: hit {hits} of this session (session {})\n", &id[..8]);
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain"));
    if fresh {
        if let Ok(v) = header::HeaderValue::from_str(&format!("DEMO_SESSION={id}; Path=/; HttpOnly")) {
            resp.headers_mut().insert(header::SET_COOKIE, v);
        }
    }
    resp
}

/// The demo's config: the balancer on `listen`, admin on `admin`, three demo backends.
pub fn config(listen: SocketAddr, admin: SocketAddr, backends: &[SocketAddr]) -> Result<Config, config::ConfigError> {
    let mut text = format!(
        "[server]\nlisten = \"{listen}\"\nshutdown_timeout = \"5s\"\n\n[session]\nmode = \"insert\"\n\n\
         [balance]\nalgorithm = \"round_robin\"\n\n[health]\ninterval = \"1s\"\n\n[admin]\nlisten = \"{admin}\"\n\n\
         [log]\ndebug_headers = true\n"
    );
    for (i, addr) in backends.iter().enumerate() {
        text.push_str(&format!("\n[[backend]]\nname = \"demo{}\"\naddress = \"{addr}\"\n", i + 1));
    }
    config::parse(&text, "(demo config)")
}
