//! # stickylb
//!
//! A layer-7 reverse-proxy load balancer with sticky sessions for stateful web applications.
//!
//! ## The map of the house
//! Each top-level module owns one concept; none imports another in a cycle (the order below
//! goes from the modules that import nothing of the crate to those that use the others).
//! - [`clock`], [`shutdown`], [`slots`], [`wait`], [`listen`], [`tls`]: small leaves — the
//!   process clock, the shutdown signal every task takes, the `max_connections` slots (and
//!   eviction of connections that never sent a request), cheap waiting (such signals polled
//!   only when they wake, a connection's timers reused), listening sockets, HTTPS termination.
//! - [`config`]: the TOML file -> typed, validated [`config::Config`] (once; the hot path never
//!   reads raw config).
//! - [`metrics`]: the counters the hot path bumps (plain atomics).
//! - [`health`]: a backend's health (active probes, passive ejection, thresholds, slow start,
//!   transition logs) — one home.
//! - [`balance`]: a backend's identity and admin state, the [`balance::Pool`] of one snapshot,
//!   and one file per selection algorithm.
//! - [`session`]: finding the session key (insert cookie with its signed route, learn, header)
//!   and the insert cookie itself. Decides nothing.
//! - [`store`]: the node affinity table (session -> backend), in memory or in Redis.
//! - [`group`]: the instances sharing one Redis — membership, the config fingerprint they
//!   must agree on, and backends' admin state made fleet-wide.
//! - [`state`]: the shared state: an immutable [`state::Snapshot`] (config, pool, session
//!   policy) swapped atomically on reload, the store, the metrics, the slots.
//! - [`sticky`]: the sticky router — where a request goes (`plan`), what follows a failed
//!   attempt (`replan`), what a response teaches (`learn`); pure decisions with a unit test per
//!   case. The only caller of the store on the request path.
//! - [`proxy`]: the per-request service that applies the router's plans: headers, limits,
//!   forwarding over a per-worker pool, errors -> status, upgrades.
//! - [`server`]: the accept loops, the client connections' HTTP/1.1 path (hyper's server for
//!   the rest) and graceful shutdown of the client listeners.
//! - [`admin`]: the operator's API, status page and Prometheus exposition.
//! - [`demo`](mod@demo), [`logging`]: `stickylb demo`, log setup. This file wires them together.
//!
//! ## One request
//! `server` accepts (a slot from `slots`) and reads the head (its own HTTP/1.1 path; hyper's
//! server for bodies, upgrades and HTTP/2) -> `proxy::handle`: limits (head size, body size,
//! Host rules) -> `session` finds the key (and the cookie's route) -> `sticky::Router::plan`
//! (table pin, else the cookie's route, else balance; pin) -> `proxy` forwards on a pooled
//! connection -> on a failure `Router::replan` (same backend once more, move, or answer) ->
//! `Router::learn` (pins a backend-issued id; the `Set-Cookie` naming the backend when the
//! client's cookie does not) -> metrics and access log.

pub mod admin;
pub mod balance;
pub mod clock;
pub mod config;
pub mod demo;
pub mod group;
pub mod health;
pub mod listen;
pub mod logging;
pub mod metrics;
pub mod proxy;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod slots;
pub mod state;
pub mod sticky;
pub mod store;
pub mod tls;
pub mod wait;

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
    if config.session.mode == SessionMode::Insert {
        tracing::info!(source = %config.session.secret_source, "session cookie secret");
    }
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
    start_group(&shared, &shutdown);
    let workers = shared.snapshot().config.server.workers();
    let slots = shared.slots.clone();
    let listen = shared.snapshot().config.server.listen.clone();
    let server = server::Server::bind(shared.clone(), shutdown.clone(), slots.clone(), &listen, true)?;
    let addrs = server.local_addrs();
    let extra_workers = spawn_workers(workers - 1, &shared, &shutdown, &slots, &addrs)?;
    let admin = match admin_addr {
        Some(addr) => {
            let listener = listen::bind_exclusive(addr)
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
    let watched = shared.clone();
    let targets = move || {
        let snapshot = watched.snapshot();
        let backends = snapshot.pool.backends().iter();
        backends
            .map(|b| health::Target {
                name: b.name.clone(),
                authority: b.addr.authority.to_string(),
                check: b.check.clone(),
                health: b.health.clone(),
            })
            .collect()
    };
    tokio::spawn(health::run(targets, shared.reloads(), shutdown.clone()));
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

/// The group task (Redis store only): membership and fleet-wide admin state, over the current
/// snapshot.
fn start_group(shared: &Arc<Shared>, shutdown: &Shutdown) {
    let watched = shared.clone();
    let local = move || {
        let snap = watched.snapshot();
        group::Local {
            backends: snap.pool.backends().to_vec(),
            file_states: snap.config.backends.iter().map(|b| (b.name().to_owned(), b.state)).collect(),
            fingerprint: group::fingerprint(&snap.config),
        }
    };
    tokio::spawn(group::run(shared.group.clone(), local, shared.reloads(), shutdown.clone()));
}

/// Start `n` more worker threads, each a single-threaded tokio runtime accepting on its own
/// SO_REUSEPORT sockets of `addrs`: no work stealing between cores, and each thread's
/// connections (client and upstream) stay on it. Shared state is the snapshot, the store and
/// the atomics. Bind errors are reported before any thread serves.
fn spawn_workers(
    n: usize,
    shared: &Arc<Shared>,
    shutdown: &Shutdown,
    slots: &Arc<slots::Slots>,
    addrs: &[SocketAddr],
) -> Result<Vec<std::thread::JoinHandle<()>>, RunError> {
    let mut threads = Vec::with_capacity(n);
    for i in 1..=n {
        let (shared, shutdown, slots, addrs) = (shared.clone(), shutdown.clone(), slots.clone(), addrs.to_vec());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new().name(format!("stickylb-worker-{i}")).spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => return drop(ready_tx.send(Err(e))),
            };
            runtime.block_on(async move {
                match server::Server::bind(shared, shutdown, slots, &addrs, false) {
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
pub async fn demo(listen: SocketAddr, admin: SocketAddr, kind: demo::Kind) -> Result<(), RunError> {
    let mut backends = Vec::new();
    let replicated = demo::Sessions::default();
    for name in ["demo1", "demo2", "demo3"] {
        // Replicating backends share one session table; the others keep their own.
        let sessions = if kind == demo::Kind::Preferred { replicated.clone() } else { demo::Sessions::default() };
        backends.push(demo::start_backend(name, kind, sessions).await?);
    }
    let config = demo::config(listen, admin, &backends, kind)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    let _log = logging::init(&config.log);
    let hint = match kind {
        demo::Kind::Soap => format!(
            "curl -s -H 'Content-Type: text/xml' --data-binary @envelope.xml http://{listen}/ (see README: SOAP sessions)"
        ),
        _ => format!("curl -c jar -b jar http://{listen}/"),
    };
    tracing::info!("demo ({kind:?}): try `{hint}` a few times; status page on http://{admin}/");
    run(config, None).await
}
