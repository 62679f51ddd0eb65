//! `[server]` and `[server.tls]`: the client listeners, their timeouts and limits, and the
//! worker threads.

use super::de::one_or_many;
use super::defaults;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    #[serde(deserialize_with = "one_or_many")]
    pub listen: Vec<SocketAddr>,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    pub max_header_bytes: usize,
    /// 0 = unlimited.
    pub max_body_bytes: u64,
    pub max_connections: usize,
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Extra key: worker threads, each with its own runtime and sockets; 0 = one per CPU
    /// this process may run on.
    pub threads: usize,
    /// `[server.tls]`: every client listener speaks HTTPS (HTTP/2 and HTTP/1.1 by ALPN).
    pub tls: Option<TlsConfig>,
    /// Extra key: peers (addresses or CIDR ranges) whose `X-Forwarded-Proto` and
    /// `X-Forwarded-Host` are kept (a TLS terminator or proxy in front); from anyone else
    /// stickylb sets them itself.
    pub trusted_proxies: Vec<String>,
    /// `trusted_proxies`, parsed by validation.
    #[serde(skip)]
    pub trusted: Vec<crate::config::IpRange>,
}

/// `[server.tls]`: PEM files, paths relative to the working directory (as `secret_file`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, leaf first.
    pub cert: Spanned<PathBuf>,
    /// The private key of the leaf certificate.
    pub key: Spanned<PathBuf>,
    /// Built from the files by validation.
    #[serde(skip)]
    pub server_config: Option<std::sync::Arc<rustls::ServerConfig>>,
}

impl ServerConfig {
    /// The number of worker threads to run.
    pub fn workers(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: vec![defaults::LISTEN.parse().expect("valid default")],
            request_timeout: defaults::REQUEST_TIMEOUT,
            header_read_timeout: defaults::HEADER_READ_TIMEOUT,
            idle_timeout: defaults::CLIENT_IDLE_TIMEOUT,
            max_header_bytes: defaults::MAX_HEADER_BYTES,
            max_body_bytes: defaults::MAX_BODY_BYTES,
            max_connections: defaults::MAX_CONNECTIONS,
            shutdown_timeout: defaults::SHUTDOWN_TIMEOUT,
            tls: None,
            threads: defaults::THREADS,
            trusted_proxies: Vec::new(),
            trusted: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_follow_threads() {
        let mut s = ServerConfig::default();
        assert!(s.workers() >= 1);
        s.threads = 3;
        assert_eq!(s.workers(), 3);
    }
}
