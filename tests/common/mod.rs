//! A small DSL for stickylb's end-to-end tests, so each test reads like prose.
//!
//! - [`TestBackend`]: a tiny hyper HTTP/1.1 server on a real loopback socket that says who it is,
//!   echoes what it received (headers, body hash) and counts connections, requests and probes.
//!   It can be stopped like a killed process and restarted on the same port.
//! - [`balancer`] / [`Balancer`]: writes a config for the given backends, runs the real
//!   `stickylb` binary, waits for its ports, kills it on drop; admin API helpers.
//! - [`User`] (a cookie-keeping client, one per simulated browser), [`plain_client`], [`Reply`],
//!   [`RawConn`] (byte-exact HTTP/1.1 for hop-by-hop checks), [`run_cli`], [`free_port`].
//!
//! Everything talks to 127.0.0.1 only, every wait has a deadline, and every task or process
//! started here is stopped when its owner is dropped.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fs::{self, File};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use reqwest::cookie::CookieStore;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;

/// The loopback host every socket in these tests uses.
pub const HOST: &str = "127.0.0.1";
/// A session secret of more than 32 bytes (insert mode needs >= 32).
pub const SECRET: &str = "test-secret-0123456789abcdef0123456789abcdef";
/// Another valid secret, for key-rotation tests.
pub const SECRET_B: &str = "second-secret-fedcba9876543210fedcba9876543210";
/// The default insert-mode cookie name.
pub const COOKIE: &str = "STICKYLB";
/// Seed of the deterministic `/big` payload.
pub const BIG_SEED: u64 = 0x0057_17C4;
/// Cap of `/slow?ms=` and of `/big?bytes=`, so a typo cannot hang or exhaust a test.
const MAX_SLOW_MS: u64 = 30_000;
const MAX_BIG_BYTES: usize = 256 * 1024 * 1024;
/// Frame size of streamed `/big` bodies.
const STREAM_CHUNK: usize = 64 * 1024;

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

pub async fn sleep_ms(n: u64) {
    tokio::time::sleep(ms(n)).await
}

/// A point in time after which a bounded loop gives up.
#[derive(Clone, Copy, Debug)]
pub struct Deadline(Instant);

impl Deadline {
    pub fn after(d: Duration) -> Self {
        Deadline(Instant::now() + d)
    }
    pub fn expired(&self) -> bool {
        Instant::now() >= self.0
    }
}

/// A loopback port that was free a moment ago (bind :0, read, drop).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind((HOST, 0)).expect("bind 127.0.0.1:0").local_addr().unwrap().port()
}

/// `n` deterministic pseudo-random bytes (xorshift64*); the same (n, seed) gives the same bytes.
pub fn pattern_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 8);
    let mut x = seed | 1;
    while out.len() < n {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(n);
    out
}

/// The bytes `/big?bytes=n` answers with.
pub fn big_bytes(n: usize) -> Vec<u8> {
    pattern_bytes(n, BIG_SEED)
}

pub fn sha256_hex(b: &[u8]) -> String {
    format!("{:x}", Sha256::digest(b))
}

/// Percent-encode everything but RFC 3986 unreserved characters (for ids in admin paths).
pub fn pct(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn random_hex() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    sha256_hex(format!("{n}/{t}/{}", std::process::id()).as_bytes())[..32].to_string()
}

// ------------------------------------------------------------------------------------ backend

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
/// with hop-by-hop headers), anything else: JSON echo
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
            let sid = random_hex();
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

// ------------------------------------------------------------------------------------ config

/// A TOML value for [`BalancerBuilder::set`].
#[derive(Clone, Debug)]
pub enum Toml {
    Str(String),
    Int(i64),
    Bool(bool),
    /// Written verbatim (arrays, inline tables).
    Raw(String),
}

impl Toml {
    fn render(&self) -> String {
        match self {
            // TOML basic strings accept JSON's escapes for the text these tests write.
            Toml::Str(s) => serde_json::to_string(s).unwrap(),
            Toml::Int(i) => i.to_string(),
            Toml::Bool(b) => b.to_string(),
            Toml::Raw(r) => r.clone(),
        }
    }
}

impl From<&str> for Toml {
    fn from(s: &str) -> Self {
        Toml::Str(s.to_string())
    }
}
impl From<String> for Toml {
    fn from(s: String) -> Self {
        Toml::Str(s)
    }
}
impl From<i64> for Toml {
    fn from(i: i64) -> Self {
        Toml::Int(i)
    }
}
impl From<i32> for Toml {
    fn from(i: i32) -> Self {
        Toml::Int(i as i64)
    }
}
impl From<u32> for Toml {
    fn from(i: u32) -> Self {
        Toml::Int(i as i64)
    }
}
impl From<bool> for Toml {
    fn from(b: bool) -> Self {
        Toml::Bool(b)
    }
}

/// A TOML array of strings.
pub fn strings(items: &[&str]) -> Toml {
    let inner: Vec<String> = items.iter().map(|s| Toml::from(*s).render()).collect();
    Toml::Raw(format!("[{}]", inner.join(", ")))
}

/// Order in which config sections are written.
const SECTIONS: [&str; 8] = ["server", "session", "balance", "health", "passive", "admin", "cluster", "log"];

/// One `[[backend]]`: name, address, extra keys.
type BackendEntry = (String, String, Vec<(String, Toml)>);

/// Builds a stickylb config around some backends and starts the binary.
pub struct BalancerBuilder {
    sections: BTreeMap<String, Vec<(String, Toml)>>,
    backends: Vec<BackendEntry>,
    raw: String,
}

/// A balancer in front of `backends` (in this order), with loopback listen/admin ports,
/// `shutdown_timeout = "10s"` and a fixed [`SECRET`]; override anything with `set`.
pub fn balancer(backends: &[&TestBackend]) -> BalancerBuilder {
    let mut b = BalancerBuilder { sections: BTreeMap::new(), backends: Vec::new(), raw: String::new() };
    for be in backends {
        b = b.backend_at(be.name(), &be.address());
    }
    b.set("server.shutdown_timeout", "10s").set("session.secret", SECRET)
}

impl BalancerBuilder {
    /// Sets `section.key = value` (replacing an earlier value of the same key).
    pub fn set(mut self, dotted: &str, value: impl Into<Toml>) -> Self {
        let (section, key) = dotted.rsplit_once('.').unwrap_or_else(|| panic!("set({dotted:?}): want section.key"));
        let entries = self.sections.entry(section.to_string()).or_default();
        entries.retain(|(k, _)| k != key);
        entries.push((key.to_string(), value.into()));
        self
    }

    /// Removes `section.key` (e.g. to drop the default secret).
    pub fn unset(mut self, dotted: &str) -> Self {
        if let Some((section, key)) = dotted.rsplit_once('.') {
            if let Some(entries) = self.sections.get_mut(section) {
                entries.retain(|(k, _)| k != key);
            }
        }
        self
    }

    /// Sets a key of one `[[backend]]` entry.
    pub fn backend_set(mut self, name: &str, key: &str, value: impl Into<Toml>) -> Self {
        let b =
            self.backends.iter_mut().find(|(n, _, _)| n == name).unwrap_or_else(|| panic!("no backend named {name}"));
        b.2.retain(|(k, _)| k != key);
        b.2.push((key.to_string(), value.into()));
        self
    }

    /// Adds a `[[backend]]` at an arbitrary address (e.g. a port nobody listens on).
    pub fn backend_at(mut self, name: &str, address: &str) -> Self {
        self.backends.push((name.to_string(), address.to_string(), Vec::new()));
        self
    }

    /// Appends raw TOML text (for sections not otherwise set through this builder).
    pub fn raw(mut self, toml: &str) -> Self {
        self.raw.push_str(toml);
        self.raw.push('\n');
        self
    }

    /// The config text for the given ports.
    pub fn render(&self, listen_port: u16, admin_port: u16) -> String {
        let mut sections = self.sections.clone();
        let srv = sections.entry("server".into()).or_default();
        srv.retain(|(k, _)| k != "listen");
        srv.insert(0, ("listen".into(), Toml::from(format!("{HOST}:{listen_port}"))));
        let adm = sections.entry("admin".into()).or_default();
        adm.retain(|(k, _)| k != "listen");
        adm.insert(0, ("listen".into(), Toml::from(format!("{HOST}:{admin_port}"))));

        let mut out = String::new();
        let mut names: Vec<String> = SECTIONS.iter().map(|s| s.to_string()).collect();
        names.extend(sections.keys().filter(|k| !SECTIONS.contains(&k.as_str())).cloned());
        for name in names {
            let Some(entries) = sections.get(&name) else {
                continue;
            };
            if entries.is_empty() {
                continue;
            }
            out.push_str(&format!("[{name}]\n"));
            for (k, v) in entries {
                out.push_str(&format!("{k} = {}\n", v.render()));
            }
            out.push('\n');
        }
        for (name, address, extra) in &self.backends {
            out.push_str("[[backend]]\n");
            out.push_str(&format!("name = {}\n", Toml::from(name.as_str()).render()));
            out.push_str(&format!("address = {}\n", Toml::from(address.as_str()).render()));
            for (k, v) in extra {
                out.push_str(&format!("{k} = {}\n", v.render()));
            }
            out.push('\n');
        }
        out.push_str(&self.raw);
        out
    }

    /// Writes the config, starts `stickylb --config FILE` and waits (<= 10 s) until both the
    /// listen and the admin port accept connections.
    pub async fn start(self) -> Balancer {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let admin_port = free_port();
        let config_path = dir.path().join("stickylb.toml");
        fs::write(&config_path, self.render(port, admin_port)).expect("write config");
        let log_path = dir.path().join("stickylb.log");
        let log = File::create(&log_path).expect("create log");
        let log2 = log.try_clone().expect("clone log");
        let child = Command::new(bin())
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .env("RUST_BACKTRACE", "1")
            .spawn()
            .expect("spawn stickylb");
        let mut lb = Balancer { child, port, admin_port, config_path, log_path, exit: None, _dir: dir };
        let dl = Deadline::after(secs(10));
        loop {
            if let Some(st) = lb.child.try_wait().expect("try_wait") {
                lb.exit = Some(st);
                panic!(
                    "stickylb exited during startup with {st}\n--- config ---\n{}\n--- output tail ---\n{}",
                    lb.config_text(),
                    lb.log_tail(40)
                );
            }
            if port_open(port).await && port_open(admin_port).await {
                break;
            }
            if dl.expired() {
                panic!(
                    "stickylb did not listen on {port} (admin {admin_port}) within 10 s\n--- config ---\n{}\n--- output tail ---\n{}",
                    lb.config_text(),
                    lb.log_tail(40)
                );
            }
            sleep_ms(20).await;
        }
        lb
    }
}

/// True when a TCP connect to the loopback port succeeds within 500 ms.
pub async fn port_open(port: u16) -> bool {
    matches!(tokio::time::timeout(ms(500), TcpStream::connect((HOST, port))).await, Ok(Ok(_)))
}

/// Path of the binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_stickylb")
}

// ------------------------------------------------------------------------------------ balancer

/// A running `stickylb` process; killed (SIGKILL) and reaped on drop.
pub struct Balancer {
    child: Child,
    pub port: u16,
    pub admin_port: u16,
    pub config_path: PathBuf,
    log_path: PathBuf,
    exit: Option<ExitStatus>,
    _dir: tempfile::TempDir,
}

impl Balancer {
    pub fn url(&self, path: &str) -> String {
        format!("http://{HOST}:{}{}", self.port, path)
    }
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{HOST}:{}{}", self.admin_port, path)
    }
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    pub fn config_text(&self) -> String {
        fs::read_to_string(&self.config_path).unwrap_or_default()
    }
    /// The last `n` lines of the process's stdout+stderr.
    pub fn log_tail(&self, n: usize) -> String {
        let text = fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Sends a signal by name (`"TERM"`, `"HUP"`, ...) with the `kill` utility.
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill").arg(format!("-{sig}")).arg(self.pid().to_string()).status().expect("run kill");
        assert!(st.success(), "kill -{sig} {} failed", self.pid());
    }

    /// Waits for the process to exit; `None` if it still runs after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let dl = Deadline::after(timeout);
        loop {
            if let Some(st) = self.exit {
                return Some(st);
            }
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                self.exit = Some(st);
                return Some(st);
            }
            if dl.expired() {
                return None;
            }
            sleep_ms(20).await;
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.exit.is_none() && matches!(self.child.try_wait(), Ok(None))
    }

    // ---- admin API

    async fn admin_get(&self, path: &str) -> Reply {
        get(&plain_client(), &self.admin_url(path)).await
    }

    /// GET /api/backends as JSON objects.
    pub async fn backends(&self) -> Vec<Value> {
        let r = self.admin_get("/api/backends").await;
        assert_eq!(r.status, 200, "GET /api/backends: {}", r.describe());
        match r.json() {
            Value::Array(a) => a,
            other => panic!("GET /api/backends is not a JSON array: {other}"),
        }
    }

    /// The /api/backends entry of one backend.
    pub async fn backend(&self, name: &str) -> Value {
        self.backends()
            .await
            .into_iter()
            .find(|b| b["name"] == name)
            .unwrap_or_else(|| panic!("backend {name} missing from /api/backends"))
    }

    /// `healthy` of one backend per the admin API.
    pub async fn healthy(&self, name: &str) -> bool {
        let b = self.backend(name).await;
        b["healthy"].as_bool().unwrap_or_else(|| panic!("no boolean `healthy` in {b}"))
    }

    /// Polls the admin API until `healthy` of `name` is `want`; false on timeout.
    pub async fn wait_healthy(&self, name: &str, want: bool, timeout: Duration) -> bool {
        let dl = Deadline::after(timeout);
        loop {
            if self.healthy(name).await == want {
                return true;
            }
            if dl.expired() {
                return false;
            }
            sleep_ms(20).await;
        }
    }

    /// Sum of `sessions` over all backends.
    pub async fn total_sessions(&self) -> u64 {
        self.backends()
            .await
            .iter()
            .map(|b| b["sessions"].as_u64().unwrap_or_else(|| panic!("no integer `sessions` in {b}")))
            .sum()
    }

    /// GET /api/sessions/{id}: `Some(backend)` on 200, `None` on 404 (other answers panic).
    pub async fn session(&self, id: &str) -> Option<String> {
        let r = self.admin_get(&format!("/api/sessions/{}", pct(id))).await;
        match r.status {
            200 => Some(
                r.json()["backend"]
                    .as_str()
                    .unwrap_or_else(|| panic!("no `backend` in session answer {}", r.describe()))
                    .to_string(),
            ),
            404 => None,
            _ => panic!("GET /api/sessions/{id}: {}", r.describe()),
        }
    }

    /// POST to an admin path, returns the status.
    pub async fn admin_post(&self, path: &str) -> u16 {
        let r = plain_client().post(self.admin_url(path)).send().await.unwrap_or_else(|e| panic!("POST {path}: {e}"));
        r.status().as_u16()
    }

    /// DELETE an admin path, returns the status.
    pub async fn admin_delete(&self, path: &str) -> u16 {
        let r =
            plain_client().delete(self.admin_url(path)).send().await.unwrap_or_else(|e| panic!("DELETE {path}: {e}"));
        r.status().as_u16()
    }

    /// The value of a metric in GET /metrics, summed over label sets; `None` if absent.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let r = self.admin_get("/metrics").await;
        assert_eq!(r.status, 200, "GET /metrics: {}", r.describe());
        metric_value(&r.text(), name)
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        if self.exit.is_none() {
            if let Ok(None) = self.child.try_wait() {
                let _ = self.child.kill();
            }
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- stickylb (port {}) config ---\n{}\n--- stickylb output tail ---\n{}\n---",
                self.port,
                self.config_text(),
                self.log_tail(30)
            );
        }
    }
}

/// Sums the samples of `name` (any labels) in Prometheus text; `None` if there are none.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    let mut total = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let value = if let Some(labels) = rest.strip_prefix('{') {
            labels.split_once('}').map(|(_, v)| v)
        } else if rest.starts_with(' ') {
            Some(rest)
        } else {
            None
        };
        if let Some(v) = value.and_then(|v| v.split_whitespace().next()) {
            if let Ok(x) = v.parse::<f64>() {
                total = Some(total.unwrap_or(0.0) + x);
            }
        }
    }
    total
}

// ------------------------------------------------------------------------------------ clients

/// A client without a cookie store (and without proxies from the environment).
pub fn plain_client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().timeout(secs(15)).build().expect("reqwest client")
}

/// One simulated browser: a client with its own cookie jar.
pub struct User {
    pub client: reqwest::Client,
    jar: Arc<reqwest::cookie::Jar>,
}

impl Default for User {
    fn default() -> Self {
        Self::new()
    }
}

impl User {
    pub fn new() -> User {
        let jar = Arc::new(reqwest::cookie::Jar::default());
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(secs(15))
            .cookie_provider(jar.clone())
            .build()
            .expect("reqwest client");
        User { client, jar }
    }

    pub async fn get(&self, url: &str) -> Reply {
        get(&self.client, url).await
    }

    pub async fn try_get(&self, url: &str) -> Result<Reply, String> {
        try_get(&self.client, url).await
    }

    /// The value of cookie `name` this user would send to `url`.
    pub fn cookie(&self, url: &str, name: &str) -> Option<String> {
        let u: reqwest::Url = url.parse().expect("url");
        let header = self.jar.cookies(&u)?;
        parse_cookie_header(header.to_str().ok()?).into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// Puts a cookie into the jar as if `url` had set it (`"a=1"`).
    pub fn add_cookie(&self, url: &str, cookie: &str) {
        let u: reqwest::Url = url.parse().expect("url");
        self.jar.add_cookie_str(cookie, &u);
    }
}

/// `"a=1; b=2"` -> `[("a","1"), ("b","2")]`.
pub fn parse_cookie_header(h: &str) -> Vec<(String, String)> {
    h.split(';')
        .filter_map(|p| {
            let p = p.trim();
            if p.is_empty() {
                return None;
            }
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Some((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

/// `NAME=VALUE; attrs` -> VALUE.
pub fn cookie_value(set_cookie: &str) -> String {
    let first = set_cookie.split(';').next().unwrap_or("");
    first.split_once('=').map(|(_, v)| v.trim()).unwrap_or("").to_string()
}

/// Attributes of a Set-Cookie header: lower-cased name -> value (`None` for flags).
pub fn cookie_attrs(set_cookie: &str) -> BTreeMap<String, Option<String>> {
    set_cookie
        .split(';')
        .skip(1)
        .filter_map(|p| {
            let p = p.trim();
            if p.is_empty() {
                return None;
            }
            Some(match p.split_once('=') {
                Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.trim().to_string())),
                None => (p.to_ascii_lowercase(), None),
            })
        })
        .collect()
}

/// A finished response, body read.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub async fn read(resp: reqwest::Response) -> Result<Reply, String> {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(|e| format!("reading body: {e}"))?;
        Ok(Reply { status, headers, body })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// Which backend answered (the echo's `backend`), if it was one.
    pub fn backend(&self) -> Option<String> {
        self.json()["backend"].as_str().map(str::to_string)
    }

    /// A request header as the backend saw it (from the echo).
    pub fn seen_header(&self, name: &str) -> Option<String> {
        self.json()["headers"][name.to_ascii_lowercase()].as_str().map(str::to_string)
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
    }

    /// All raw Set-Cookie headers.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers.get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).map(str::to_string).collect()
    }

    /// The raw Set-Cookie header that sets `name`, if any.
    pub fn set_cookie(&self, name: &str) -> Option<String> {
        self.set_cookies().into_iter().find(|sc| sc.split_once('=').map(|(n, _)| n.trim() == name).unwrap_or(false))
    }

    /// One line for assertion messages.
    pub fn describe(&self) -> String {
        let t = self.text();
        let t: String = t.chars().take(160).collect();
        format!("{} {:?}", self.status, t)
    }
}

/// GET with a client; panics (with the URL) on a transport error.
pub async fn get(client: &reqwest::Client, url: &str) -> Reply {
    try_get(client, url).await.unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// GET with a client; transport errors as `Err(text)`.
pub async fn try_get(client: &reqwest::Client, url: &str) -> Result<Reply, String> {
    let resp = client.get(url).send().await.map_err(|e| format!("{e:?}"))?;
    Reply::read(resp).await
}

/// GET with extra request headers; panics on a transport error.
pub async fn get_with(client: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut rb = client.get(url);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let resp = rb.send().await.unwrap_or_else(|e| panic!("GET {url}: {e:?}"));
    Reply::read(resp).await.unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

// ------------------------------------------------------------------------------------ raw HTTP

/// A response read byte-exactly from a raw connection.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    /// Header names lower-cased, in wire order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<String> {
        let vals: Vec<&str> =
            self.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect();
        (!vals.is_empty()).then(|| vals.join(", "))
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One client TCP connection speaking hand-written HTTP/1.1 (for hop-by-hop checks, where
/// client libraries might add or drop headers on their own).
pub struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawConn {
    pub async fn connect(addr: SocketAddr) -> RawConn {
        let stream = tokio::time::timeout(secs(5), TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        RawConn { stream, buf: Vec::new() }
    }

    pub async fn send(&mut self, data: &[u8]) {
        tokio::time::timeout(secs(10), self.stream.write_all(data)).await.expect("write timed out").expect("write");
    }

    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16384];
        let n =
            tokio::time::timeout(secs(10), self.stream.read(&mut chunk)).await.expect("read timed out").unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    async fn line(&mut self) -> String {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let l = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return l;
            }
            assert!(self.fill().await, "connection closed mid-line");
        }
    }

    async fn exact(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.fill().await, "connection closed mid-body");
        }
        self.buf.drain(..n).collect()
    }

    /// Reads one response (Content-Length, chunked, or until close).
    pub async fn response(&mut self) -> RawResponse {
        let status_line = self.line().await;
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let l = self.line().await;
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').unwrap_or((&l, ""));
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
        let mut resp = RawResponse { status, headers, body: Vec::new() };
        let chunked =
            resp.header("transfer-encoding").map(|t| t.to_ascii_lowercase().contains("chunked")).unwrap_or(false);
        if status == 204 || status == 304 || (100..200).contains(&status) {
        } else if chunked {
            loop {
                let size_line = self.line().await;
                let size = usize::from_str_radix(size_line.split(';').next().unwrap().trim(), 16)
                    .unwrap_or_else(|_| panic!("bad chunk size {size_line:?}"));
                if size == 0 {
                    while !self.line().await.is_empty() {}
                    break;
                }
                let mut data = self.exact(size).await;
                resp.body.append(&mut data);
                self.line().await;
            }
        } else if let Some(cl) = resp.header("content-length") {
            let n: usize = cl.trim().parse().expect("content-length");
            resp.body = self.exact(n).await;
        } else {
            while self.fill().await {}
            resp.body = std::mem::take(&mut self.buf);
        }
        resp
    }
}

// ------------------------------------------------------------------------------------ CLI

/// The outcome of one `stickylb` command line run.
#[derive(Debug)]
pub struct CliOutput {
    /// `None` when killed by a signal (or killed by us after the timeout).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `stickylb ARGS` to completion (killed after `timeout`).
pub fn run_cli(args: &[&str], timeout: Duration) -> CliOutput {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let mut child = Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap())
        .spawn()
        .expect("spawn stickylb");
    let dl = Deadline::after(timeout);
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break Some(st);
        }
        if dl.expired() {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(ms(10));
    };
    let stdout = fs::read_to_string(&out_path).unwrap_or_default();
    let mut stderr = fs::read_to_string(&err_path).unwrap_or_default();
    if status.is_none() {
        stderr.push_str(&format!("\n(killed: still running after {timeout:?})"));
    }
    CliOutput { code: status.and_then(|s| s.code()), stdout, stderr }
}

/// Writes a file into `dir` and returns its path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, text).expect("write file");
    p
}

/// How many times each value occurs.
pub fn counts<I: IntoIterator<Item = String>>(items: I) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for i in items {
        *m.entry(i).or_insert(0) += 1;
    }
    m
}
