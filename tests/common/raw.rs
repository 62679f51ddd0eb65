//! Raw HTTP/1.1: [`RawConn`] writes hand-made bytes and reads responses byte-exactly, for
//! hop-by-hop and framing checks where client libraries would add or drop headers on their own.

use std::net::SocketAddr;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::time::secs;

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

    /// Whether the other side closes the connection within `limit`, sending nothing more.
    pub async fn closes_within(&mut self, limit: std::time::Duration) -> bool {
        let mut chunk = [0u8; 1024];
        matches!(tokio::time::timeout(limit, self.stream.read(&mut chunk)).await, Ok(Ok(0) | Err(_)))
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
