//! HTTP/1.1 protocol upgrades (WebSocket and any other `Upgrade:` protocol) passed through.
//!
//! An upgrade request is routed like any other (so a WebSocket follows its session's pin); its
//! `Connection: upgrade` and `Upgrade` headers, hop-by-hop otherwise, go to the backend. When the
//! backend answers `101 Switching Protocols`, the client gets the 101 and both connections become
//! one byte tunnel until either side closes it. The request stays counted in flight on the
//! backend for the tunnel's life, so `least_connections` sees open WebSockets. Any other answer
//! is an ordinary response.

use super::response_body::Lease;
use http::header::{self, HeaderMap, HeaderValue};
use http::{request, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

/// What an upgrade request needs later: the protocol it asked for and the client's side of
/// the connection, available once the client has been answered with 101.
pub struct UpgradeRequest {
    protocol: HeaderValue,
    client: OnUpgrade,
}

impl UpgradeRequest {
    /// The upgrade a request asks for, if any: HTTP/1.1 with `Upgrade` and `Connection: upgrade`.
    /// Takes the client connection's upgrade handle out of the request.
    pub fn take(parts: &mut request::Parts) -> Option<UpgradeRequest> {
        if parts.version != Version::HTTP_11 || !connection_has_upgrade(&parts.headers) {
            return None;
        }
        let protocol = parts.headers.get(header::UPGRADE)?.clone();
        let client = parts.extensions.remove::<OnUpgrade>()?;
        Some(UpgradeRequest { protocol, client })
    }

    /// Put back the headers that hop-by-hop stripping removed, for the upstream hop.
    pub fn restore_headers(&self, headers: &mut HeaderMap) {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, self.protocol.clone());
    }

    /// The backend switched protocols (to `protocol`, from its 101): give the client's 101 its
    /// upgrade headers back and join the two connections in a task that ends when either side
    /// closes. The tunnel keeps the client connection's `max_connections` slot, so it counts
    /// toward the limit and a graceful shutdown waits for it up to `shutdown_timeout`.
    pub fn tunnel(
        self,
        client_headers: &mut HeaderMap,
        protocol: Option<HeaderValue>,
        backend: OnUpgrade,
        lease: Lease,
        slot: Option<crate::slots::Held>,
    ) {
        let protocol = protocol.unwrap_or_else(|| self.protocol.clone());
        client_headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        client_headers.insert(header::UPGRADE, protocol);
        let client = self.client;
        tokio::spawn(async move {
            let (client, backend) = match tokio::try_join!(client, backend) {
                Ok(both) => both,
                Err(e) => {
                    tracing::debug!(error = %e, "upgrade did not complete");
                    return;
                }
            };
            let _slot = slot;
            let (mut client, mut backend) = (TokioIo::new(client), TokioIo::new(backend));
            match tokio::io::copy_bidirectional(&mut client, &mut backend).await {
                Ok((up, down)) => tracing::debug!(up, down, "tunnel closed"),
                Err(e) => tracing::debug!(error = %e, "tunnel ended with an error"),
            }
            // The connection carried the tunnel: it is not reusable, and the request ends now.
            drop(lease);
        });
    }
}

fn connection_has_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}
