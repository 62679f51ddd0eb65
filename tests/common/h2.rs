//! The HTTP/2 client role: [`H2Conn`], one HTTP/2 connection through hyper's client, cleartext
//! with prior knowledge (h2c) or over TLS with ALPN `h2`. It sends header fields exactly as
//! given, so several `cookie` fields stay several (reqwest would send one), and its
//! [`Reply`] keeps every field received as its own value.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http2::SendRequest;
use hyper::{Request, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::client::Reply;
use super::net::HOST;
use super::time::secs;
use super::tls::{tls_connect, TestCert};

/// One HTTP/2 connection; closed on drop.
pub struct H2Conn {
    send: SendRequest<Empty<Bytes>>,
    /// `scheme://authority` of every request.
    base: String,
    conn: JoinHandle<()>,
}

impl H2Conn {
    /// h2c: HTTP/2 over plain TCP, without an upgrade (prior knowledge).
    pub async fn h2c(addr: SocketAddr) -> H2Conn {
        let tcp = TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        H2Conn::handshake(tcp, format!("http://{HOST}:{}", addr.port())).await
    }

    /// HTTPS with ALPN `h2` only, trusting `cert`.
    pub async fn tls(addr: SocketAddr, cert: &TestCert) -> H2Conn {
        let tls = tls_connect(addr, cert, &[b"h2"]).await;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "the server did not choose h2");
        H2Conn::handshake(tls, format!("https://localhost:{}", addr.port())).await
    }

    async fn handshake<I>(io: I, base: String) -> H2Conn
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .unwrap_or_else(|e| panic!("HTTP/2 handshake with {base}: {e}"));
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        H2Conn { send, base, conn }
    }

    /// GET `path` with these header fields, each sent as its own field in this order (a name
    /// given twice is sent twice).
    pub async fn get(&mut self, path: &str, fields: &[(&str, &str)]) -> Reply {
        let mut req = Request::get(format!("{}{path}", self.base)).version(Version::HTTP_2);
        for (name, value) in fields {
            req = req.header(*name, *value);
        }
        let req = req.body(Empty::new()).expect("request");
        let answer = async {
            let resp = self.send.send_request(req).await.map_err(|e| format!("{e:?}"))?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.map_err(|e| format!("reading the body: {e}"))?.to_bytes();
            Ok::<_, String>(Reply { status: parts.status.as_u16(), headers: parts.headers, body })
        };
        match tokio::time::timeout(secs(15), answer).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => panic!("GET {path} over HTTP/2: {e}"),
            Err(_) => panic!("GET {path} over HTTP/2: no answer within 15 s"),
        }
    }
}

impl Drop for H2Conn {
    fn drop(&mut self) {
        self.conn.abort();
    }
}
