//! # stickylb
//!
//! A layer-7 reverse-proxy load balancer with sticky sessions for stateful web applications.
//!
//! ## The map of the house
//! - [`config`]: the TOML file -> typed, validated [`config::Config`] (once; the hot path never
//!   reads raw config).
//! - [`state`]: the shared state: an immutable [`state::Snapshot`] swapped atomically on
//!   reload, the affinity store, the metrics.
//! - [`server`]: listeners, connection limit, graceful shutdown; [`tls`]: HTTPS termination.
//! - [`proxy`]: the per-request service: headers, forwarding, retries, errors -> status.
//! - [`session`]: finding the session key (insert / learn / header) and the sticky decision.
//! - [`store`]: the node affinity table (session -> backend), in memory or in Redis.
//! - [`balance`]: backends' run-time state and the selection algorithms.
//! - [`health`]: active probes (passive ejection is counted in [`balance::Backend`]).
//! - [`admin`] and [`metrics`]: the operator's API, status page and Prometheus metrics.
//!
//! ## One request
//! accept -> limits/timeouts -> session key -> store lookup -> pinned backend serves?
//! use it : balance among those that take new sessions (and pin) -> forward over the pool ->
//! on a refused connection, reassign and retry -> `Set-Cookie` only if new -> metrics and
//! access log.

pub mod admin;
pub mod balance;
pub mod clock;
pub mod config;
pub mod demo;
pub mod health;
pub mod listen;
pub mod logging;
pub mod metrics;
pub mod proxy;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod state;
pub mod store;
pub mod tls;

use config::{Config, SessionMode};
use shutdown::{Shutdown, Trigger};
use state::Shared;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// Why the balancer could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Run the balancer until SIGTERM/SIGINT; SIGHUP reloads `path`.
pub async fn run(config: Config, path: Option<PathBuf>) -> Result<(), RunError> {
    let (trigger, shutdown) = Shutdown::new();
    let running = launch(config, path, shutdown)?;
    tokio::spawn(handle_signals(running.shared.clone(), trigger));
    running.wait().await;
    Ok(())
}

/// A started balancer.
pub struct Running {
    pub shared: Arc<Shared>,
    /// The client-facing addresses actually bound.
    pub addrs: Vec<SocketAddr>,
    /// The admin address actually bound.
    pub admin: Option<SocketAddr>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Wait until the balancer has shut down and drained.
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Bind everything and start serving; returns at once.
pub fn launch(config: Config, path: Option<PathBuf>, shutdown: Shutdown) -> Result<Running, RunError> {
    if config.session.mode == SessionMode::Insert && config.session.resolved_secret.is_none() {
        tracing::warn!(
            "no session.secret configured: using a random per-process key; cookies will not survive a restart \
             and cannot be shared between instances"
        );
    }
    let admin_addr = config.admin.listen;
    let shared = Shared::new(config, path);
    // Before the first request: restore the snapshot / start listening to other instances.
    let snap = shared.snapshot();
    shared.store.start(|name| snap.pool.get(name).is_some(), shutdown.clone());
    let workers = shared.snapshot().config.server.workers();
    let permits = shared.permits.clone();
    let listen = shared.snapshot().config.server.listen.clone();
    let server = server::Server::bind(shared.clone(), shutdown.clone(), permits.clone(), &listen, true)?;
    let addrs = server.local_addrs();
    let extra_workers = spawn_workers(workers - 1, &shared, &shutdown, &permits, &addrs)?;
    let admin = match admin_addr {
        Some(addr) => {
            let listener = listen::bind(addr)
                .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on admin address {addr}: {e}")))?;
            let bound = listener.local_addr()?;
            if !bound.ip().is_loopback() && shared.snapshot().config.admin.token.is_empty() {
                tracing::warn!(%bound, "the admin API listens on a non-loopback address without admin.token");
            }
            tracing::info!(addr = %bound, "admin API listening");
            tokio::spawn(admin::run(listener, shared.clone(), shutdown.clone()));
            Some(bound)
        }
        None => None,
    };
    tokio::spawn(health::run(shared.clone(), shutdown.clone()));
    let stopping = shared.clone();
    let task = tokio::spawn(async move {
        server.run().await;
        for worker in extra_workers {
            let _ = tokio::task::spawn_blocking(move || worker.join()).await;
        }
        // Drained: no request can change a pin any more, so this is the table's final state.
        stopping.store.stop();
    });
    Ok(Running { shared, addrs, admin, task })
}

/// Start `n` more worker threads, each a single-threaded tokio runtime accepting on its own
/// SO_REUSEPORT sockets of `addrs`: no work stealing between cores, and each thread's
/// connections (client and upstream) stay on it. Shared state is the snapshot, the store and
/// the atomics. Bind errors are reported before any thread serves.
fn spawn_workers(
    n: usize,
    shared: &Arc<Shared>,
    shutdown: &Shutdown,
    permits: &Arc<tokio::sync::Semaphore>,
    addrs: &[SocketAddr],
) -> Result<Vec<std::thread::JoinHandle<()>>, RunError> {
    let mut threads = Vec::with_capacity(n);
    for i in 1..=n {
        let (shared, shutdown, permits, addrs) = (shared.clone(), shutdown.clone(), permits.clone(), addrs.to_vec());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new().name(format!("stickylb-worker-{i}")).spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => return drop(ready_tx.send(Err(e))),
            };
            runtime.block_on(async move {
                match server::Server::bind(shared, shutdown, permits, &addrs, false) {
                    Ok(server) => {
                        let _ = ready_tx.send(Ok(()));
                        server.run().await;
                    }
                    Err(e) => drop(ready_tx.send(Err(e))),
                }
            });
        })?;
        ready_rx.recv().map_err(|_| std::io::Error::other("worker thread died"))??;
        threads.push(thread);
    }
    Ok(threads)
}

/// SIGTERM / SIGINT: graceful shutdown. SIGHUP: reload.
async fn handle_signals(shared: Arc<Shared>, shutdown: Trigger) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup()))
    else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading configuration");
                if let Err(e) = shared.reload() {
                    for m in e.messages() {
                        tracing::error!("reload rejected, keeping the running config: {m}");
                    }
                }
            }
        }
    }
    tracing::info!("shutting down: no new connections, finishing in-flight requests");
    shutdown.stop();
}

/// `stickylb demo`: demo backends plus the balancer.
pub async fn demo(listen: SocketAddr, admin: SocketAddr) -> Result<(), RunError> {
    let mut backends = Vec::new();
    for name in ["demo1", "demo2", "demo3"] {
        backends.push(demo::start_backend(name).await?);
    }
    let config = demo::config(listen, admin, &backends)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    let _log = logging::init(&config.log);
    tracing::info!("demo: try `curl -c jar -b jar http://{listen}/` a few times; status page on http://{admin}/");
    run(config, None).await
}
