//! `stickylb demo`: three small stateful demo backends on loopback plus the balancer, with no
//! config file, so a newcomer sees stickiness at once — in each session kind ([`Kind`]).
//!
//! Each demo backend keeps its own in-memory sessions (like a servlet container) and counts a
//! session's hits. Behind stickylb the counter goes 1, 2, 3... on one backend; without
//! stickiness it would restart on every other node.
//! - `insert`: the backends set a `DEMO_SESSION` cookie; stickylb inserts its own cookie.
//! - `servlet`: the backends are a Tomcat cluster with jvmRoutes `node1..3`: they issue
//!   `JSESSIONID=ID.nodeN`, and stickylb (learn mode) routes by that suffix.
//! - `soap`: the backends are Axis2-like SOAP services: a new session's response hands out a
//!   `ServiceGroupId` in its `ReplyTo`, which the client sends back as a SOAP header.
//! - `preferred`: the backends replicate their sessions (one shared table), so stickylb uses
//!   preferred affinity: a session leaves a backend that is over the load bound.

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

/// Which session kind the demo shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kind {
    #[default]
    Insert,
    Servlet,
    Soap,
    Preferred,
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Kind, String> {
        match s {
            "insert" => Ok(Kind::Insert),
            "servlet" => Ok(Kind::Servlet),
            "soap" => Ok(Kind::Soap),
            "preferred" => Ok(Kind::Preferred),
            _ => Err(format!("unknown demo mode {s:?}: insert, servlet, soap or preferred")),
        }
    }
}

/// A demo backend's session table: hits by session id. A std Mutex: never held across an
/// `.await`. Replicating backends (`preferred`) share one.
pub type Sessions = Arc<Mutex<HashMap<String, u64>>>;

/// Start one demo backend on 127.0.0.1 (any free port); returns its address.
pub async fn start_backend(name: &'static str, kind: Kind, sessions: Sessions) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let sessions = sessions.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let sessions = sessions.clone();
                    async move {
                        Ok::<_, Infallible>(match kind {
                            Kind::Soap => soap_answer(name, &sessions, req).await,
                            _ => answer(name, kind, &sessions, req),
                        })
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    Ok(addr)
}

fn answer(
    name: &str,
    kind: Kind,
    sessions: &Mutex<HashMap<String, u64>>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    if req.uri().path() == "/health" {
        return Response::new(Full::new(Bytes::from_static(b"ok\n")));
    }
    let cookie = if kind == Kind::Servlet { "JSESSIONID" } else { "DEMO_SESSION" };
    let existing = req
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .flatten()
        .find(|c| c.name() == cookie)
        .map(|c| c.value().to_owned());
    let mut table = sessions.lock().unwrap_or_else(|e| e.into_inner());
    let (id, fresh) = match existing.filter(|id| table.contains_key(id)) {
        Some(id) => (id, false),
        // A servlet container writes its jvmRoute into the id: `ID.node2`.
        None if kind == Kind::Servlet => {
            (format!("{}.node{}", crate::session::CookieCodec::new_id(), &name[4..]), true)
        }
        None => (crate::session::CookieCodec::new_id(), true),
    };
    let hits = table.entry(id.clone()).or_insert(0);
    *hits += 1;
    let body = format!("backend {name}: hit {hits} of this session (session {})\n", &id[..8]);
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain"));
    if fresh {
        if let Ok(v) = header::HeaderValue::from_str(&format!("{cookie}={id}; Path=/; HttpOnly")) {
            resp.headers_mut().insert(header::SET_COOKIE, v);
        }
    }
    resp
}

/// The SOAP demo service: a request without a known `ServiceGroupId` starts a service group,
/// handed out in the response's `ReplyTo / ReferenceParameters` as Axis2 does.
async fn soap_answer(
    name: &str,
    sessions: &Mutex<HashMap<String, u64>>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    use http_body_util::BodyExt;
    if req.uri().path() == "/health" {
        return Response::new(Full::new(Bytes::from_static(b"ok\n")));
    }
    let limit = http_body_util::Limited::new(req.into_body(), 1 << 20);
    let body = limit.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let sent = match crate::session::soap::request_key(&body) {
        Some(crate::session::soap::SoapKey::ServiceGroup(id)) => Some(id),
        _ => None,
    };
    let mut table = sessions.lock().unwrap_or_else(|e| e.into_inner());
    let (id, fresh) = match sent.filter(|id| table.contains_key(id)) {
        Some(id) => (id, false),
        None => (format!("urn:uuid:{}", crate::session::CookieCodec::new_id()), true),
    };
    let hits = table.entry(id.clone()).or_insert(0);
    *hits += 1;
    let reply_to = if fresh {
        format!(
            "<wsa:ReplyTo xmlns:wsa=\"{wsa}\"><wsa:Address>{wsa}/anonymous</wsa:Address><wsa:ReferenceParameters>\
             <axis2:ServiceGroupId xmlns:axis2=\"{axis2}\">{id}</axis2:ServiceGroupId></wsa:ReferenceParameters></wsa:ReplyTo>",
            wsa = crate::session::soap::WSA,
            axis2 = crate::session::soap::AXIS2,
        )
    } else {
        String::new()
    };
    let text = format!(
        "<?xml version=\"1.0\"?>\n<soapenv:Envelope xmlns:soapenv=\"{soap}\"><soapenv:Header>{reply_to}</soapenv:Header>\
         <soapenv:Body><demo:hit xmlns:demo=\"urn:stickylb-demo\" backend=\"{name}\" hit=\"{hits}\" group=\"{id}\"/>\
         </soapenv:Body></soapenv:Envelope>\n",
        soap = crate::session::soap::SOAP11,
    );
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/xml; charset=utf-8"));
    resp
}

/// The demo's config: the balancer on `listen`, admin on `admin`, three demo backends.
pub fn config(
    listen: SocketAddr,
    admin: SocketAddr,
    backends: &[SocketAddr],
    kind: Kind,
) -> Result<Config, config::ConfigError> {
    let session = match kind {
        Kind::Insert => "mode = \"insert\"",
        Kind::Servlet => "mode = \"learn\"\ncookie = \"JSESSIONID\"",
        Kind::Soap => "mode = \"soap\"",
        Kind::Preferred => "mode = \"insert\"\naffinity = \"preferred\"",
    };
    let mut text = format!(
        "[server]\nlisten = \"{listen}\"\nshutdown_timeout = \"5s\"\n\n[session]\n{session}\n\n\
         [balance]\nalgorithm = \"round_robin\"\n\n[health]\ninterval = \"1s\"\n\n[admin]\nlisten = \"{admin}\"\n\n\
         [log]\ndebug_headers = true\n"
    );
    for (i, addr) in backends.iter().enumerate() {
        text.push_str(&format!("\n[[backend]]\nname = \"demo{}\"\naddress = \"{addr}\"\n", i + 1));
        if kind == Kind::Servlet {
            text.push_str(&format!("route = \"node{}\"\n", i + 1));
        }
    }
    config::parse(&text, "(demo config)")
}
