//! The floor of stickylb's stack, for benchmarks: a proxy with nothing but forwarding, on
//! the same runtime layout (one `current_thread` runtime per CPU, SO_REUSEPORT listeners),
//! the same HTTP/1.1 server (`server::h1`, stickylb's own path for requests without a body)
//! and the same upstream client (`proxy::upstream`'s lean one) as stickylb — no session,
//! table, cookie, header rewrite, limits, metrics or logs. Round robin over the backends.
//!
//!     cargo build --release --example floor
//!     target/release/examples/floor 127.0.0.1:8090 127.0.0.1:9101,127.0.0.1:9102
//!
//! `benches/peers-floor.sh` plugs it into peers.sh. Not a product: it answers 502 to any
//! backend failure and forwards requests without a body only (it closes a connection at the
//! first other request).

use http::uri::Authority;
use hyper::Response;
use std::cell::Cell;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;
use stickylb::proxy::upstream::raw::{PassThrough, RawFields};
use stickylb::proxy::upstream::{Body, Client, Conn, Outgoing};
use stickylb::server::h1;
use stickylb::shutdown::Shutdown;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(backends)) = (args.next(), args.next()) else {
        eprintln!("usage: floor LISTEN_ADDR BACKEND,BACKEND,...");
        std::process::exit(2);
    };
    let listen: SocketAddr = listen.parse().expect("a listen address");
    let backends: Vec<Authority> = backends.split(',').map(|b| b.parse().expect("host:port")).collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let backends = backends.clone();
            std::thread::spawn(move || worker(listen, backends))
        })
        .collect();
    workers.into_iter().for_each(|w| w.join().expect("worker"));
}

fn worker(listen: SocketAddr, backends: Vec<Authority>) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let listener = stickylb::listen::bind(listen).expect("bind");
        let backends = Rc::new(backends);
        let next = Rc::new(Cell::new(0usize));
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            let (backends, next) = (backends.clone(), next.clone());
            tokio::task::spawn_local(async move {
                let mut stream = stream;
                // Never triggered (a dropped trigger would stop the connection).
                let (_trigger, shutdown) = Shutdown::new();
                let limits = h1::Limits { head_timeout: Duration::from_secs(60), max_buf: 16 * 1024 };
                let handle = |parts| {
                    let i = next.get();
                    next.set(i.wrapping_add(1));
                    forward(parts, backends[i % backends.len()].clone())
                };
                // A request this path does not serve ends the connection.
                let _ = h1::serve(&mut stream, limits, &shutdown, handle).await;
            });
        }
    });
}

async fn forward(parts: http::request::Parts, authority: Authority) -> Response<Released> {
    let bad = || {
        let mut r = Response::new(Released { body: None, conn: None });
        *r.status_mut() = http::StatusCode::BAD_GATEWAY;
        r
    };
    let Ok(mut conn) = Conn::checkout(&authority, Client::Lean, false, Duration::from_secs(2)).await else {
        return bad();
    };
    let out =
        Outgoing { parts: &parts, forwarding: None, host: authority.as_str(), previous: None, pass_through: true };
    match conn.send_lean(out).await {
        Ok(resp) => resp.map(|mut body| {
            // A head passed through is in the connection: it goes back once the server wrote it.
            if http_body::Body::is_end_stream(&body) && body.raw_fields().is_none() {
                conn.release(&authority, &mut body);
                return Released { body: Some(body), conn: None };
            }
            Released { body: Some(body), conn: Some((conn, authority)) }
        }),
        Err(_) => bad(),
    }
}

/// The backend's body; its connection goes back to the pool at the end.
struct Released {
    body: Option<Body>,
    conn: Option<(Conn, Authority)>,
}

impl PassThrough for Released {
    fn raw_fields(&self) -> Option<&RawFields> {
        self.body.as_ref()?.raw_fields()
    }
}

impl http_body::Body for Released {
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let Some(body) = this.body.as_mut() else { return Poll::Ready(None) };
        let r = Pin::new(&mut *body).poll_frame(cx);
        if matches!(r, Poll::Ready(None)) || body.is_end_stream() {
            if let Some((conn, authority)) = this.conn.take() {
                conn.release(&authority, body);
            }
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(http_body::Body::is_end_stream)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.as_ref().map_or_else(|| http_body::SizeHint::with_exact(0), http_body::Body::size_hint)
    }
}
