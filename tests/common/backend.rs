//! The backend role: [`TestBackend`], a tiny hyper HTTP/1.1 server on a real loopback socket
//! that says who it is, echoes what it received (headers, body hash) and counts connections,
//! requests and probes. It can be stopped like a killed process and restarted on the same port.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinHandle;

use super::data::{big_bytes, sha256_hex};
use super::time::{secs, sleep_ms, Deadline};

/// Cap of `/slow?ms=` and of `/big?bytes=`, so a typo cannot hang or exhaust a test.
const MAX_SLOW_MS: u64 = 30_000;
const MAX_BIG_BYTES: usize = 256 * 1024 * 1024;
/// Frame size of streamed `/big` bodies.
const STREAM_CHUNK: usize = 64 * 1024;

/// The Set-Cookie fields `/set-cookies` answers with, in order (an `Expires` date has a comma,
/// which is why Set-Cookie fields can never be joined into one).
pub const THREE_SET_COOKIES: [&str; 3] =
    ["theme=dark; Path=/", "lang=en; Path=/; Expires=Wed, 21 Oct 2037 07:28:00 GMT", "cart=3; Path=/shop; HttpOnly"];

/// `&[TestBackend]` as the `&[&TestBackend]` that [`balancer`](super::balancer) takes.
pub fn refs(bs: &[TestBackend]) -> Vec<&TestBackend> {
    bs.iter().collect()
}

/// The usual three backends, `app1`..`app3`.
pub async fn three() -> Vec<TestBackend> {
    TestBackend::start_many(&["app1", "app2", "app3"]).await
}

fn random_hex() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    sha256_hex(format!("{n}/{t}/{}", std::process::id()).as_bytes())[..32].to_string()
}

/// One request as a backend saw it (health probes are not recorded).
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl Seen {
    /// The value of a request header (names compared case-insensitively; repeats joined ", ").
    pub fn header(&self, name: &str) -> Option<String> {
        let vals: Vec<&str> =
            self.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect();
        (!vals.is_empty()).then(|| vals.join(", "))
    }

    /// Every field of a request header, one value per field as received.
    pub fn fields(&self, name: &str) -> Vec<String> {
        self.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone()).collect()
    }
}

struct BackendState {
    name: String,
    connections: AtomicUsize,
    requests: AtomicUsize,
    inflight: AtomicUsize,
    probes_ok: AtomicUsize,
    probes_failed: AtomicUsize,
    health_failing: AtomicBool,
    fail_next_probes: AtomicUsize,
    delay_ms: AtomicU64,
    seen: Mutex<Vec<Seen>>,
    conns: Mutex<Vec<JoinHandle<()>>>,
}

/// A tiny HTTP/1.1 backend on 127.0.0.1 with a name. Routes:
/// `/health` (200, or 503 while failing), `/login` (Set-Cookie JSESSIONID + X-Session-Id),
/// `/slow?ms=N`, `/big?bytes=N` (streamed [`big_bytes`]), `/status?code=N`, `/hop` (answers
/// with hop-by-hop headers), `/set-cookies` (three Set-Cookie fields, [`THREE_SET_COOKIES`]),
/// anything else: JSON echo
/// `{"backend","method","path","headers","body_sha256","body_len"}`.
pub struct TestBackend {
    state: Arc<BackendState>,
    addr: SocketAddr,
    acceptor: Mutex<Option<JoinHandle<()>>>,
}

impl TestBackend {
    /// Starts a backend on a fresh loopback port.
    pub async fn start(name: &str) -> TestBackend {
        let listener = bind_listener(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind backend");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(BackendState {
            name: name.to_string(),
            connections: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
            inflight: AtomicUsize::new(0),
            probes_ok: AtomicUsize::new(0),
            probes_failed: AtomicUsize::new(0),
            health_failing: AtomicBool::new(false),
            fail_next_probes: AtomicUsize::new(0),
            delay_ms: AtomicU64::new(0),
            seen: Mutex::new(Vec::new()),
            conns: Mutex::new(Vec::new()),
        });
        let acceptor = tokio::spawn(accept_loop(listener, state.clone()));
        TestBackend { state, addr, acceptor: Mutex::new(Some(acceptor)) }
    }

    /// Starts several backends named as given.
    pub async fn start_many(names: &[&str]) -> Vec<TestBackend> {
        let mut out = Vec::new();
        for n in names {
            out.push(TestBackend::start(n).await);
        }
        out
    }

    pub fn name(&self) -> &str {
        &self.state.name
    }
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
    /// `127.0.0.1:PORT`, as written into the balancer config.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// TCP connections accepted since start (restarts included).
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }
    /// Requests other than `/health` received since start.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }
    /// Requests other than `/health` being handled right now.
    pub fn inflight(&self) -> usize {
        self.state.inflight.load(Ordering::SeqCst)
    }
    /// Health probes answered 200.
    pub fn probes_ok(&self) -> usize {
        self.state.probes_ok.load(Ordering::SeqCst)
    }
    /// Health probes answered 503.
    pub fn probes_failed(&self) -> usize {
        self.state.probes_failed.load(Ordering::SeqCst)
    }
    /// Every non-health request seen, in arrival order.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }
    /// The most recent non-health request.
    pub fn last_seen(&self) -> Option<Seen> {
        self.state.seen.lock().unwrap().last().cloned()
    }
    /// Every `X-Stickylb-Previous-Backend` value seen, in order.
    pub fn previous_backend_headers(&self) -> Vec<String> {
        self.seen().iter().filter_map(|s| s.header("x-stickylb-previous-backend")).collect()
    }

    /// While true, `/health` answers 503.
    pub fn fail_health(&self, failing: bool) {
        self.state.health_failing.store(failing, Ordering::SeqCst);
    }
    /// The next `n` health probes answer 503, then 200 again (no timing involved).
    pub fn fail_next_probes(&self, n: usize) {
        self.state.fail_next_probes.store(n, Ordering::SeqCst);
    }
    /// An artificial delay before answering every non-health request.
    pub fn set_delay(&self, d: Duration) {
        self.state.delay_ms.store(d.as_millis() as u64, Ordering::SeqCst);
    }

    /// Waits until at least `n` non-health requests are in flight; false on timeout.
    pub async fn wait_inflight(&self, n: usize, timeout: Duration) -> bool {
        let dl = Deadline::after(timeout);
        while self.inflight() < n {
            if dl.expired() {
                return false;
            }
            sleep_ms(10).await;
        }
        true
    }

    /// Like a killed process: the listener is closed and every open connection aborted.
    pub async fn stop(&self) {
        let acceptor = self.acceptor.lock().unwrap().take();
        if let Some(a) = acceptor {
            a.abort();
            let _ = a.await; // the listener is dropped once this returns
        }
        let conns: Vec<JoinHandle<()>> = std::mem::take(&mut *self.state.conns.lock().unwrap());
        for c in &conns {
            c.abort();
        }
        for c in conns {
            let _ = c.await;
        }
    }

    /// Listens again on the same port (after [`stop`](Self::stop)).
    pub async fn restart(&self) {
        assert!(!self.is_running(), "restart() of a running backend");
        // The port may briefly be unavailable (e.g. an outgoing socket borrowed it).
        let dl = Deadline::after(secs(5));
        let listener = loop {
            match bind_listener(self.addr) {
                Ok(l) => break l,
                Err(e) if dl.expired() => panic!("cannot rebind {}: {e}", self.addr),
                Err(_) => sleep_ms(20).await,
            }
        };
        let task = tokio::spawn(accept_loop(listener, self.state.clone()));
        *self.acceptor.lock().unwrap() = Some(task);
    }

    pub fn is_running(&self) -> bool {
        self.acceptor.lock().unwrap().is_some()
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        if let Some(a) = self.acceptor.lock().unwrap().take() {
            a.abort();
        }
        for c in self.state.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

fn bind_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let s = TcpSocket::new_v4()?;
    s.set_reuseaddr(true)?;
    s.bind(addr)?;
    s.listen(1024)
}

async fn accept_loop(listener: TcpListener, st: Arc<BackendState>) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(_) => {
                sleep_ms(5).await;
                continue;
            }
        };
        st.connections.fetch_add(1, Ordering::SeqCst);
        let st2 = st.clone();
        let conn = tokio::spawn(async move {
            let svc = service_fn(move |req| handle(st2.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
        });
        let mut conns = st.conns.lock().unwrap();
        conns.retain(|c| !c.is_finished());
        conns.push(conn);
    }
}

struct InflightGuard(Arc<BackendState>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::SeqCst);
    }
}

fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then(|| v.to_string())
    })
}

async fn handle(st: Arc<BackendState>, req: Request<Incoming>) -> Result<Response<TestBody>, Infallible> {
    let (parts, mut body) = req.into_parts();
    let path = parts.uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
    let route = parts.uri.path().split(';').next().unwrap_or("").to_string();
    let query = parts.uri.query().unwrap_or("").to_string();

    // Read (and hash) the whole request body first, as a real application would.
    let mut hasher = Sha256::new();
    let mut body_len = 0usize;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    hasher.update(d);
                    body_len += d.len();
                }
            }
            Err(_) => return Ok(text(400, "bad request body")),
        }
    }
    let body_sha256 = format!("{:x}", hasher.finalize());

    if route == "/health" {
        let failing = st.health_failing.load(Ordering::SeqCst)
            || st.fail_next_probes.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
        let (code, ok) = if failing {
            st.probes_failed.fetch_add(1, Ordering::SeqCst);
            (503, false)
        } else {
            st.probes_ok.fetch_add(1, Ordering::SeqCst);
            (200, true)
        };
        let b = json!({"ok": ok, "backend": st.name}).to_string();
        return Ok(build(code, "application/json", &[], Bytes::from(b)));
    }

    st.requests.fetch_add(1, Ordering::SeqCst);
    st.inflight.fetch_add(1, Ordering::SeqCst);
    let _guard = InflightGuard(st.clone());
    let mut headers_seen = Vec::new();
    let mut headers = serde_json::Map::new();
    for (k, v) in parts.headers.iter() {
        let v = v.to_str().unwrap_or("<non-ascii>").to_string();
        headers_seen.push((k.as_str().to_string(), v.clone()));
        let merged = match headers.get(k.as_str()) {
            Some(Value::String(prev)) => format!("{prev}, {v}"),
            _ => v,
        };
        headers.insert(k.as_str().to_string(), Value::String(merged));
    }
    st.seen.lock().unwrap().push(Seen { method: parts.method.to_string(), path: path.clone(), headers: headers_seen });

    let delay = st.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        sleep_ms(delay).await;
    }

    let mut echo = json!({
        "backend": st.name,
        "method": parts.method.as_str(),
        "path": path,
        "headers": headers,
        "body_sha256": body_sha256,
        "body_len": body_len,
    });
    let backend_hdr = [("x-backend", st.name.clone())];
    match route.as_str() {
        "/slow" => {
            let n = query_param(&query, "ms").and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            sleep_ms(n.min(MAX_SLOW_MS)).await;
        }
        "/big" => {
            let n = query_param(&query, "bytes").and_then(|v| v.parse::<usize>().ok()).unwrap_or(0).min(MAX_BIG_BYTES);
            return Ok(build(200, "application/octet-stream", &backend_hdr, Bytes::from(big_bytes(n))));
        }
        "/login" => {
            // `?sid=` issues a chosen id (two backends issuing the same one), else a random one.
            let sid = query_param(&query, "sid").unwrap_or_else(random_hex);
            echo["session"] = Value::String(sid.clone());
            let extra = [
                ("x-backend", st.name.clone()),
                ("set-cookie", format!("JSESSIONID={sid}; Path=/")),
                ("x-session-id", sid),
            ];
            return Ok(build(200, "application/json", &extra, echo.to_string().into()));
        }
        "/status" => {
            let code = query_param(&query, "code").and_then(|v| v.parse::<u16>().ok()).unwrap_or(200);
            return Ok(build(code, "application/json", &backend_hdr, echo.to_string().into()));
        }
        "/set-cookies" => {
            let mut extra = vec![("x-backend", st.name.clone())];
            extra.extend(THREE_SET_COOKIES.iter().map(|c| ("set-cookie", c.to_string())));
            return Ok(build(200, "application/json", &extra, echo.to_string().into()));
        }
        "/hop" => {
            let extra = [
                ("x-backend", st.name.clone()),
                ("connection", "X-Bar".to_string()),
                ("x-bar", "1".to_string()),
                ("keep-alive", "timeout=5, max=100".to_string()),
                ("x-kept", "yes".to_string()),
            ];
            return Ok(build(200, "application/json", &extra, echo.to_string().into()));
        }
        _ => {}
    }
    Ok(build(200, "application/json", &backend_hdr, echo.to_string().into()))
}

fn text(code: u16, msg: &str) -> Response<TestBody> {
    build(code, "text/plain", &[], Bytes::from(msg.to_string()))
}

fn build(code: u16, ctype: &str, extra: &[(&str, String)], body: Bytes) -> Response<TestBody> {
    let mut b =
        Response::builder().status(StatusCode::from_u16(code).unwrap_or(StatusCode::OK)).header("content-type", ctype);
    for (k, v) in extra {
        b = b.header(*k, v.as_str());
    }
    b.body(TestBody { data: body }).unwrap()
}

/// A response body sent in frames of [`STREAM_CHUNK`] bytes with an exact length.
pub struct TestBody {
    data: Bytes,
}

impl Body for TestBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.data.is_empty() {
            return Poll::Ready(None);
        }
        let n = STREAM_CHUNK.min(this.data.len());
        Poll::Ready(Some(Ok(Frame::data(this.data.split_to(n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.len() as u64)
    }
}
