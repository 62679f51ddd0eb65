//! The balancer role: [`Balancer`], a running stickylb in front of test backends, with its
//! URLs and admin API helpers. It runs either in this test process ([`BalancerBuilder::start`],
//! the default: see `in_process.rs`) or as the real `stickylb` binary
//! ([`BalancerBuilder::start_binary`], for tests of signals, the log and the exit status: see
//! `binary.rs`). Both are stopped when the `Balancer` is dropped; a panicking test prints the
//! config (and the binary's log tail).
//!
//! [`BalancerBuilder::start`]: super::BalancerBuilder::start
//! [`BalancerBuilder::start_binary`]: super::BalancerBuilder::start_binary

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use serde_json::Value;

use super::binary::Process;
use super::client::{get, plain_client, Reply};
use super::in_process::InProcess;
use super::metrics::metric_value;
use super::net::HOST;
use super::time::{sleep_ms, Deadline};

/// A running balancer; stopped on drop.
pub struct Balancer {
    pub port: u16,
    pub admin_port: u16,
    pub config_path: PathBuf,
    engine: Engine,
    _dir: tempfile::TempDir,
}

/// What runs the balancer.
pub(super) enum Engine {
    InProcess(InProcess),
    Binary(Process),
}

impl Balancer {
    pub(super) fn new(
        port: u16,
        admin_port: u16,
        config_path: PathBuf,
        engine: Engine,
        dir: tempfile::TempDir,
    ) -> Self {
        Balancer { port, admin_port, config_path, engine, _dir: dir }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{HOST}:{}{}", self.port, path)
    }
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{HOST}:{}{}", self.admin_port, path)
    }
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
    pub fn config_text(&self) -> String {
        std::fs::read_to_string(&self.config_path).unwrap_or_default()
    }

    /// Whether it still runs: the process has not exited, or the in-process runtime thread has
    /// not ended.
    pub fn is_running(&mut self) -> bool {
        match &mut self.engine {
            Engine::InProcess(p) => p.is_running(),
            Engine::Binary(p) => p.is_running(),
        }
    }

    /// The process, for what only the binary has; a clear panic for an in-process balancer.
    fn process(&self, what: &str) -> &Process {
        match &self.engine {
            Engine::Binary(p) => p,
            Engine::InProcess(_) => panic!(
                "{what} needs the real stickylb binary, and this balancer runs in-process: \
                 start it with .start_binary() instead of .start()"
            ),
        }
    }

    /// The process's id (binary only).
    pub fn pid(&self) -> u32 {
        self.process("pid()").pid()
    }

    /// The last `n` lines of the process's stdout+stderr (binary only).
    pub fn log_tail(&self, n: usize) -> String {
        self.process("log_tail()").log_tail(n)
    }

    /// Sends a signal by name (`"TERM"`, `"HUP"`, ...) with the `kill` utility (binary only).
    pub fn signal(&self, sig: &str) {
        self.process("signal()").signal(sig)
    }

    /// Waits for the process to exit; `None` if it still runs after `timeout` (binary only).
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.process("wait_exit()");
        let Engine::Binary(p) = &mut self.engine else { unreachable!() };
        p.wait_exit(timeout).await
    }

    // ---- admin API

    pub async fn admin_get(&self, path: &str) -> Reply {
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

    /// GET /api/cluster as JSON.
    pub async fn cluster(&self) -> Value {
        let r = self.admin_get("/api/cluster").await;
        assert_eq!(r.status, 200, "GET /api/cluster: {}", r.describe());
        r.json()
    }

    /// The `state` of one backend per GET /api/backends.
    pub async fn state_of(&self, name: &str) -> String {
        let b = self.backend(name).await;
        b["state"].as_str().unwrap_or_else(|| panic!("no string `state` in {b}")).to_string()
    }

    /// POST to an admin path, returns the status.
    pub async fn admin_post(&self, path: &str) -> u16 {
        let r = plain_client().post(self.admin_url(path)).send().await.unwrap_or_else(|e| panic!("POST {path}: {e}"));
        r.status().as_u16()
    }

    /// POST /api/reload: the answer (200, or 400 with the config's errors in its JSON body).
    pub async fn reload(&self) -> Reply {
        let r = plain_client().post(self.admin_url("/api/reload")).send().await.expect("POST /api/reload");
        Reply::read(r).await.expect("POST /api/reload: reading the answer")
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
        let log = match &mut self.engine {
            Engine::InProcess(p) => {
                p.stop();
                None
            }
            Engine::Binary(p) => {
                p.kill();
                Some(p.log_tail(30))
            }
        };
        if std::thread::panicking() {
            let how = if log.is_some() { "binary" } else { "in-process" };
            eprintln!("--- stickylb ({how}, port {}) config ---\n{}", self.port, self.config_text());
            if let Some(log) = log {
                eprintln!("--- stickylb output tail ---\n{log}");
            }
            eprintln!("---");
        }
    }
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
