//! Listeners, the accept loop, the connection limit and graceful shutdown.
//!
//! Each listen address has its own accept task. The connection slots ([`crate::slots`]) cap
//! open client connections: at the limit an accepted connection evicts the oldest one that has
//! not sent a request head yet, or waits for a slot (its accept loop takes no more meanwhile,
//! as HAProxy's maxconn does); at shutdown they are the drain counter. On reload, addresses
//! that left the config stop accepting and new ones are bound; unchanged ones keep their
//! sockets. With `[server.tls]` every accepted
//! connection first completes a TLS handshake (bounded by `header_read_timeout`).
//!
//! A connection's HTTP/1.1 requests without a body are served by our own path ([`h1`]:
//! [`head`] parses, [`encode`] writes the response head by hyper's rules); the first request
//! it does not serve hands the connection, with the bytes read so far ([`prefixed`]), to
//! hyper's HTTP/1.1 + h2c server for the rest of its life (bodies, upgrades, HTTP/1.0,
//! HTTP/2, every refusal of bad input).

// Public for the benchmarks' floor (examples/floor.rs) and the fuzz targets (fuzz/server_checks.rs).
#[doc(hidden)]
pub mod encode;
#[doc(hidden)]
pub mod h1;
#[doc(hidden)]
pub mod head;
mod prefixed;

use crate::listen::{accept, bind, bind_exclusive};
use crate::proxy::{self, ClientConn, Proto};
use crate::shutdown::{Shutdown, Trigger};
use crate::slots::Slots;
use crate::state::Shared;
use crate::wait::{ConnTimer, Rare};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The HTTP/1.1 + h2c connection builder for client connections.
fn builder(shared: &Shared) -> auto::Builder<TokioExecutor> {
    let cfg = &shared.snapshot().config.server;
    let mut b = auto::Builder::new(TokioExecutor::new());
    // hyper starts the header timer whenever it waits for a request head, including on an
    // idle keep-alive connection, so the shorter of the two timeouts closes idle connections.
    let head_timeout = cfg.header_read_timeout.min(cfg.idle_timeout);
    // The HTTP/1 timer is set per connection (serve_connection): its sleeps are reused.
    b.http1()
        .header_read_timeout(head_timeout)
        // A head within max_header_bytes is never refused for its number of lines.
        .max_headers(proxy::MAX_HEADER_LINES)
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
    slots: Arc<Slots>,
    shutdown: Shutdown,
    loops: HashMap<SocketAddr, (Trigger, JoinHandle<()>)>,
}

impl Server {
    /// Bind `addrs` (an error if any cannot be bound). `slots` is the process-wide connection
    /// limit shared by all workers.
    pub fn bind(
        shared: Arc<Shared>,
        shutdown: Shutdown,
        slots: Arc<Slots>,
        addrs: &[SocketAddr],
        primary: bool,
    ) -> std::io::Result<Server> {
        let mut server = Server { shared, primary, slots, shutdown, loops: HashMap::new() };
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
            self.slots.clone(),
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
        // Every worker waits for the drain (its runtime carries its connections); one logs.
        let open = self.shared.metrics.active_connections.load(std::sync::atomic::Ordering::Relaxed);
        if self.primary && open > 0 {
            tracing::info!(open, "waiting for open connections to finish");
        }
        let drained = self.slots.drain(timeout).await;
        if self.primary {
            if drained {
                tracing::info!("all connections finished");
            } else {
                tracing::warn!("shutdown timeout reached; closing remaining connections");
            }
        }
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

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    slots: Arc<Slots>,
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
        let held = tokio::select! {
            _ = stop.wait() => return,
            held = slots.acquire() => match held { Some(h) => h, None => return },
        };
        let shared = shared.clone();
        let builder = builder.clone();
        let shutdown = shutdown.clone();
        let slot = held.conn.clone();
        let serve = async move {
            let _ = stream.set_nodelay(true);
            let tls = shared.snapshot().config.server.tls.as_ref().and_then(|t| t.server_config.clone());
            match tls {
                None => {
                    let conn = ClientConn::new(peer, Proto::Http, held);
                    serve_connection(stream, conn, shared, &builder, shutdown).await;
                }
                Some(config) => {
                    let timeout = shared.snapshot().config.server.header_read_timeout;
                    if let Some(stream) = crate::tls::accept(config, stream, timeout).await {
                        let conn = ClientConn::new(peer, Proto::Https, held);
                        serve_connection(stream, conn, shared, &builder, shutdown).await;
                    }
                }
            }
        };
        tokio::spawn(async move {
            tokio::select! {
                () = serve => {}
                // At the limit, a connection that never sent a request head makes room: it is
                // dropped (closed), which gives its slot back.
                () = Rare::new(slot.evicted()) => tracing::debug!(%peer, "connection without a request closed to make room"),
            }
        });
    }
}

/// Counts an open client connection in the metrics while it lives (also when it is dropped).
struct Counted(Arc<Shared>);

impl Counted {
    fn new(shared: Arc<Shared>) -> Counted {
        shared.metrics.active_connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Counted(shared)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.metrics.active_connections.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Serve one client connection. Its slot (in `conn`) is given back when the connection ends,
/// unless an upgrade handed it to a tunnel.
async fn serve_connection<I>(
    mut stream: I,
    conn: ClientConn,
    shared: Arc<Shared>,
    builder: &auto::Builder<TokioExecutor>,
    mut shutdown: Shutdown,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let _counted = Counted::new(shared.clone());
    let limits = h1::Limits::of(&shared.snapshot().config.server);
    let handle = |parts| {
        conn.slot.started();
        proxy::handle(&shared, parts, None, &conn)
    };
    let read = match h1::serve(&mut stream, limits, &shutdown, handle).await {
        h1::End::Closed => return,
        h1::End::Hyper(read) => read,
    };
    // hyper's header-read timer on the connection's sleeps, which the request deadlines share.
    let mut builder = builder.clone();
    builder.http1().timer(ConnTimer(conn.sleeps.clone()));
    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let shared = shared.clone();
        let conn = conn.clone();
        conn.slot.started();
        async move {
            let (parts, body) = req.into_parts();
            Ok::<_, Infallible>(proxy::handle(&shared, parts, Some(body), &conn).await)
        }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(prefixed::Prefixed::new(read, stream)), service);
    tokio::pin!(conn);
    tokio::select! {
        // The connection first: no random branch order to draw on every wake-up.
        biased;
        r = conn.as_mut() => log_conn_error(r),
        // Polled only when the shutdown wakes it, not at each of the connection's wake-ups.
        _ = Rare::new(shutdown.wait()) => {
            conn.as_mut().graceful_shutdown();
            log_conn_error(conn.await);
        }
    }
}

fn log_conn_error(r: Result<(), Box<dyn std::error::Error + Send + Sync>>) {
    if let Err(e) = r {
        tracing::debug!(error = %e, "client connection ended with an error");
    }
}
