//! TLS termination for the client listeners (`[server.tls]`): loading the certificate chain
//! and private key (PEM) into a rustls server config that offers HTTP/2 and HTTP/1.1 through
//! ALPN, and the handshake of one accepted connection.
//!
//! The config is built when the config file is validated, so `stickylb check` and a reload
//! report a missing or mismatched certificate at its key; a reload with new files takes effect
//! for new connections (certificate rotation without a restart).

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// The rustls server config for `cert` (a PEM chain, leaf first) and `key` (a PEM private key:
/// PKCS#8, PKCS#1 or SEC1). The error names the file at fault.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsFileError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsFileError::Cert(format!("cannot read certificates from {}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(TlsFileError::Cert(format!("no certificate found in {}", cert.display())));
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| TlsFileError::Key(format!("cannot read a private key from {}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsFileError::Cert(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| TlsFileError::Key(format!("{} does not fit {}: {e}", key.display(), cert.display())))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Which of the two files a TLS setup error is about.
#[derive(Debug)]
pub enum TlsFileError {
    Cert(String),
    Key(String),
}

/// Complete the TLS handshake of a client connection within `timeout`; `None` (logged at
/// debug) if the client spoke something else, went away or was too slow.
pub async fn accept(config: Arc<ServerConfig>, stream: TcpStream, timeout: Duration) -> Option<TlsStream<TcpStream>> {
    match tokio::time::timeout(timeout, TlsAcceptor::from(config).accept(stream)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!("TLS handshake timed out");
            None
        }
    }
}
