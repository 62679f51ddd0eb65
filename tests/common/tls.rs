//! TLS: self-signed [`TestCert`]s for `[server.tls]` and a client connection that trusts one.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use super::config::BalancerBuilder;
use super::data::write_file;

/// A self-signed certificate for localhost / 127.0.0.1, written as PEM files.
pub struct TestCert {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub der: CertificateDer<'static>,
}

/// A new certificate as `dir/name.crt` and `dir/name.key` (overwriting earlier ones).
pub fn make_cert(dir: &Path, name: &str) -> TestCert {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("generate a test certificate");
    let cert = write_file(dir, &format!("{name}.crt"), &made.cert.pem());
    let key = write_file(dir, &format!("{name}.key"), &made.key_pair.serialize_pem());
    TestCert { cert, key, der: made.cert.der().clone() }
}

/// The builder with `[server.tls]` serving `cert`.
pub fn with_tls(b: BalancerBuilder, cert: &TestCert) -> BalancerBuilder {
    b.set("server.tls.cert", cert.cert.to_str().unwrap()).set("server.tls.key", cert.key.to_str().unwrap())
}

/// A TLS connection to `addr` (as `localhost`) trusting only `cert`, offering `alpn`.
pub async fn tls_connect(addr: SocketAddr, cert: &TestCert, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    let mut roots = RootCertStore::empty();
    roots.add(cert.der.clone()).unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake with stickylb")
}
