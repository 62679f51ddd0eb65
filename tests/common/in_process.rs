//! The balancer in this test process, through the library: `stickylb::launch` on a thread of
//! its own with a single-threaded tokio runtime, as `main` runs it (the binary's main thread
//! is worker 0; `server.threads` > 1 adds the library's own worker threads beside it).
//!
//! A thread of its own rather than the test's runtime: a `#[tokio::test]` runtime may be
//! single-threaded and it also runs the test backends, so sharing it would let a busy test
//! starve the balancer (or the reverse); and the upstream connection pool is thread-local, so
//! each balancer gets its own pool that ends with its thread.
//!
//! Dropping it is like killing the process: the shutdown trigger fires (every listener stops
//! accepting), then the runtime is dropped with everything on it, so its open connections
//! close at once. The library's extra worker threads (`server.threads` > 1) cannot be killed
//! from outside: they drain their connections as on SIGTERM (at most `shutdown_timeout`, and
//! at once when idle), then end. No log subscriber is installed (it would be process-wide): a
//! test that reads the log starts the binary instead.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::JoinHandle;

use stickylb::config::Config;
use stickylb::shutdown::{Shutdown, Trigger};
use tokio::sync::oneshot;

use super::balancer::{Balancer, Engine};
use super::config::BalancerBuilder;
use super::net::free_port;

/// Attempts at finding two free ports that are still free when the balancer binds them.
const PORT_ATTEMPTS: usize = 5;

impl BalancerBuilder {
    /// Writes the config (so that `/api/reload` can read it again), loads it and starts the
    /// balancer in this process; it serves as soon as this returns. For tests of signals, the
    /// log or the exit status use [`start_binary`](BalancerBuilder::start_binary).
    pub async fn start(self) -> Balancer {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("stickylb.toml");
        for attempt in 1..=PORT_ATTEMPTS {
            let (port, admin_port) = (free_port(), free_port());
            let text = self.render(port, admin_port);
            std::fs::write(&config_path, &text).expect("write config");
            let config = stickylb::config::load(&config_path).unwrap_or_else(|e| {
                panic!("the test config is invalid: {}\n--- config ---\n{text}", e.messages().join("\n"))
            });
            match InProcess::launch(config, config_path.clone()) {
                Ok(engine) => return Balancer::new(port, admin_port, config_path, Engine::InProcess(engine), dir),
                // Another socket took a port between free_port() and the bind: try others.
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && attempt < PORT_ATTEMPTS => continue,
                Err(e) => panic!("stickylb did not start in-process: {e}\n--- config ---\n{text}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }
}

/// A balancer running on its own thread and runtime.
pub(super) struct InProcess {
    trigger: Trigger,
    kill: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl InProcess {
    /// Starts the balancer; returns once it listens (or with the error that stopped it).
    fn launch(config: Config, path: PathBuf) -> std::io::Result<InProcess> {
        let (trigger, shutdown) = Shutdown::new();
        let (kill, killed) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = mpsc::channel::<std::io::Result<(Vec<SocketAddr>, Option<SocketAddr>)>>();
        let thread = std::thread::Builder::new().name("stickylb-in-process".into()).spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => return drop(ready_tx.send(Err(e))),
            };
            runtime.block_on(async move {
                match stickylb::launch(config, Some(path), shutdown) {
                    Ok(running) => {
                        let _ = ready_tx.send(Ok((running.addrs.clone(), running.admin)));
                        tokio::select! {
                            _ = running.wait() => {}
                            _ = killed => {}
                        }
                    }
                    Err(e) => drop(ready_tx.send(Err(io_error(e)))),
                }
            });
            // Connections, probes and the rest still on the runtime go with it, unwaited.
            runtime.shutdown_background();
        })?;
        let engine = InProcess { trigger, kill: Some(kill), thread: Some(thread) };
        match ready_rx.recv() {
            Ok(Ok(_)) => Ok(engine),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(std::io::Error::other("the balancer thread died during startup")),
        }
    }

    /// Whether the runtime thread still runs.
    pub(super) fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Fire the shutdown trigger, drop the runtime, join the thread; idempotent.
    pub(super) fn stop(&mut self) {
        self.trigger.stop();
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The I/O error inside (its kind tells a taken port), or the error as text.
fn io_error(e: stickylb::RunError) -> std::io::Error {
    #[allow(unreachable_patterns)]
    match e {
        stickylb::RunError::Io(e) => e,
        other => std::io::Error::other(other.to_string()),
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.stop();
    }
}
