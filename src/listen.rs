//! Listening sockets: binding (SO_REUSEADDR, SO_REUSEPORT for the worker threads, a deep
//! backlog), binding the new addresses of a reload, and accepting with a back-off on errors.
//! It owns sockets only: what is served on them is the server's and the admin API's business.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// Accept one connection; on an error (EMFILE and friends) log, back off a little instead of
/// spinning, and return `None`.
pub async fn accept(listener: &TcpListener, what: &str) -> Option<(TcpStream, SocketAddr)> {
    match listener.accept().await {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(error = %e, "{what} accept failed");
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
    }
}

/// Bind a listener with SO_REUSEADDR (a restart does not wait for TIME_WAIT), SO_REUSEPORT
/// (every worker thread accepts on its own socket of the same address, and the kernel spreads
/// connections over them) and a deep backlog.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    TcpListener::from_std(socket.into())
}

/// Bind `addr` for the first time in this process: fails (`AddrInUse`) when another socket
/// already listens there. SO_REUSEPORT would otherwise let a second balancer started on the
/// same port share it silently and take part of the connections; a plain bind (without
/// SO_REUSEPORT) is refused by the kernel while anything listens on the address, so it finds
/// out before the real, shareable socket is made.
pub fn bind_exclusive(addr: SocketAddr) -> std::io::Result<TcpListener> {
    if addr.port() != 0 {
        let probe = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
        probe.set_reuse_address(true)?;
        if addr.is_ipv6() {
            probe.set_only_v6(true)?;
        }
        probe.bind(&addr.into()).map_err(|e| {
            let why = if e.kind() == std::io::ErrorKind::AddrInUse { "address already in use" } else { "cannot bind" };
            std::io::Error::new(e.kind(), format!("{why} (is another stickylb or server running on {addr}?): {e}"))
        })?;
    }
    bind(addr)
}

/// Bind the addresses of `wanted` that are not in `bound` (for a reload, before it swaps the
/// config). On error, the address that failed; the sockets bound so far are closed.
pub fn bind_new(
    bound: &[SocketAddr],
    wanted: &[SocketAddr],
) -> Result<Vec<(SocketAddr, TcpListener)>, (SocketAddr, std::io::Error)> {
    wanted
        .iter()
        .filter(|a| !bound.contains(a))
        .map(|&addr| bind_exclusive(addr).map(|l| (addr, l)).map_err(|e| (addr, e)))
        .collect()
}
