//! Listeners, the accept loop, the connection limit and graceful shutdown.
//!
//! Each listen address has its own accept task. A semaphore with `max_connections` permits
//! caps open client connections (at the limit an accepted connection waits for a slot and its
//! accept loop takes no more, as HAProxy's maxconn does) and doubles as the drain counter at
//! shutdown: when all permits are back, every connection has finished. On reload, addresses that left the config stop accepting and new
//! ones are bound; unchanged ones keep their sockets. With `[server.tls]` every accepted
//! connection first completes a TLS handshake (bounded by `header_read_timeout`).

use crate::listen::{accept, bind, bind_exclusive};
use crate::proxy::{self, ClientConn, Proto};
use crate::shutdown::{Shutdown, Trigger};
use crate::state::Shared;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// Header lines a request or a backend response may have (hyper's default is 100): a head
/// within `max_header_bytes` must not be refused for its number of lines (SPEC: >= 500).
pub const MAX_HEADER_LINES: usize = 1000;

/// The HTTP/1.1 + h2c connection builder for client connections.
fn builder(shared: &Shared) -> auto::Builder<TokioExecutor> {
    let cfg = &shared.snapshot().config.server;
    let mut b = auto::Builder::new(TokioExecutor::new());
    // hyper starts the header timer whenever it waits for a request head, including on an
    // idle keep-alive connection, so the shorter of the two timeouts closes idle connections.
    let head_timeout = cfg.header_read_timeout.min(cfg.idle_timeout);
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(head_timeout)
        // A head within max_header_bytes is never refused for its number of lines.
        .max_headers(MAX_HEADER_LINES)
        // Room above the limit, so that a head a little too large reaches the proxy's exact
        // check and gets a 431 with a text body; hyper answers a bare 431 beyond this.
        .max_buf_size(cfg.max_header_bytes.saturating_mul(2).max(8192))
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(None)
        .max_header_list_size(u32::try_from(cfg.max_header_bytes.saturating_mul(2)).unwrap_or(u32::MAX));
    b
}

/// Runs the client-facing listeners of one worker thread until `shutdown` flips to true,
/// then drains. Each worker has its own `Server` with its own sockets of the same addresses;
/// they share the connection limit.
pub struct Server {
    shared: Arc<Shared>,
    /// The primary worker adopts the sockets a reload bound; the others bind their own.
    primary: bool,
    permits: Arc<Semaphore>,
    max_connections: usize,
    shutdown: Shutdown,
    loops: HashMap<SocketAddr, (Trigger, JoinHandle<()>)>,
}

impl Server {
    /// Bind `addrs` (an error if any cannot be bound). `permits` is the process-wide
    /// connection limit shared by all workers.
    pub fn bind(
        shared: Arc<Shared>,
        shutdown: Shutdown,
        permits: Arc<Semaphore>,
        addrs: &[SocketAddr],
        primary: bool,
    ) -> std::io::Result<Server> {
        let max_connections = shared.snapshot().config.server.max_connections;
        let mut server = Server { shared, primary, permits, max_connections, shutdown, loops: HashMap::new() };
        for &addr in addrs {
            let bound = if primary { bind_exclusive(addr) } else { bind(addr) };
            let listener = bound.map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
            let bound = listener.local_addr()?;
            server.start(bound, listener);
        }
        Ok(server)
    }

    /// The addresses actually bound (useful with port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.loops.keys().copied().collect()
    }

    fn start(&mut self, addr: SocketAddr, listener: TcpListener) {
        if self.primary {
            tracing::info!(%addr, "listening");
        }
        let (stop_tx, stop_rx) = Shutdown::new();
        let task = tokio::spawn(accept_loop(
            listener,
            self.shared.clone(),
            self.permits.clone(),
            stop_rx,
            self.shutdown.clone(),
        ));
        let bound = addr;
        self.loops.insert(bound, (stop_tx, task));
    }

    /// Serve until shutdown; follow reloads (rebinding changed listen addresses).
    pub async fn run(mut self) {
        let mut reloads = self.shared.reloads();
        let mut shutdown = self.shutdown.clone();
        loop {
            tokio::select! {
                _ = shutdown.wait() => break,
                changed = reloads.changed() => {
                    if changed.is_err() { break; }
                    self.rebind();
                }
            }
        }
        for (stop, task) in self.loops.into_values() {
            stop.stop();
            let _ = task.await;
        }
        let timeout = self.shared.snapshot().config.server.shutdown_timeout;
        drain(&self.permits, self.max_connections, timeout).await;
    }

    fn rebind(&mut self) {
        // Sockets the reload bound already; any it bound for an address a later reload
        // dropped again are closed with `fresh`.
        let mut fresh: HashMap<SocketAddr, TcpListener> =
            if self.primary { self.shared.take_fresh_listeners().into_iter().collect() } else { HashMap::new() };
        let wanted = self.shared.snapshot().config.server.listen.clone();
        let gone: Vec<SocketAddr> = self.loops.keys().filter(|a| !wanted.contains(a)).copied().collect();
        for addr in gone {
            if let Some((stop, _)) = self.loops.remove(&addr) {
                tracing::info!(%addr, "no longer listening");
                stop.stop();
            }
        }
        for addr in wanted {
            if self.loops.contains_key(&addr) {
                continue;
            }
            match fresh.remove(&addr).map_or_else(|| bind(addr), Ok) {
                Ok(listener) => self.start(addr, listener),
                Err(e) => tracing::error!(%addr, error = %e, "cannot listen on new address"),
            }
        }
    }
}

/// Wait until every connection has finished, at most `timeout`.
async fn drain(permits: &Semaphore, max: usize, timeout: Duration) {
    let open = max - permits.available_permits();
    if open > 0 {
        tracing::info!(open, "waiting for open connections to finish");
    }
    match tokio::time::timeout(timeout, permits.acquire_many(max as u32)).await {
        Ok(_) => tracing::info!("all connections finished"),
        Err(_) => tracing::warn!("shutdown timeout reached; closing remaining connections"),
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
    mut stop: Shutdown,
    shutdown: Shutdown,
) {
    let builder = Arc::new(builder(&shared));
    loop {
        // Accept, then wait for a permit: a loop waiting in accept() holds no permit that a
        // connection given to another worker's socket might need. At the limit each loop holds
        // one accepted connection until a slot frees, and accepts nothing more meanwhile.
        let (stream, peer) = tokio::select! {
            _ = stop.wait() => return,
            c = accept(&listener, "client") => match c { Some(c) => c, None => continue },
        };
        let permit = tokio::select! {
            _ = stop.wait() => return,
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let shared = shared.clone();
        let builder = builder.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let tls = shared.snapshot().config.server.tls.as_ref().and_then(|t| t.server_config.clone());
            match tls {
                None => {
                    let conn = ClientConn::new(peer, Proto::Http, permit);
                    serve_connection(stream, conn, shared, &builder, shutdown).await;
                }
                Some(config) => {
                    let timeout = shared.snapshot().config.server.header_read_timeout;
                    if let Some(stream) = crate::tls::accept(config, stream, timeout).await {
                        let conn = ClientConn::new(peer, Proto::Https, permit);
                        serve_connection(stream, conn, shared, &builder, shutdown).await;
                    }
                }
            }
        });
    }
}

/// Serve one client connection. Its permit (in `conn`) is given back when the connection
/// ends, unless an upgrade handed it to a tunnel.
async fn serve_connection<I>(
    stream: I,
    conn: ClientConn,
    shared: Arc<Shared>,
    builder: &auto::Builder<TokioExecutor>,
    mut shutdown: Shutdown,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let metrics_shared = shared.clone();
    metrics_shared.metrics.active_connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let service = service_fn(move |req| {
        let shared = shared.clone();
        let conn = conn.clone();
        async move { Ok::<_, Infallible>(proxy::handle(shared, req, conn).await) }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => log_conn_error(r),
        _ = shutdown.wait() => {
            conn.as_mut().graceful_shutdown();
            log_conn_error(conn.await);
        }
    }
    metrics_shared.metrics.active_connections.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
}

fn log_conn_error(r: Result<(), Box<dyn std::error::Error + Send + Sync>>) {
    if let Err(e) = r {
        tracing::debug!(error = %e, "client connection ended with an error");
    }
}
