//! The request side of one hop: limits checked before anything is routed, the head rewritten
//! once for the upstream hop (host, hop-by-hop) with its forwarding fields made, and each
//! attempt's request built from them.

use super::forwarding::{self, Forwarding};
use super::headers::{self, Seen, PREVIOUS_BACKEND, X_FORWARDED_HOST, X_FORWARDED_PROTO};
use super::request_body::{RequestBody, UpstreamBody};
use super::{Proto, ProxyError};
use crate::balance::Backend;
use http::{header, request, HeaderMap, HeaderValue, Method, Request, Uri, Version};
use std::net::SocketAddr;

/// The size of the request head as HTTP/1.1 would write it (request line, `name: value` lines).
/// hyper bounds its read buffer, not the head, and not below 8 KiB: `max_header_bytes` is
/// enforced exactly here.
pub fn head_size(parts: &request::Parts) -> usize {
    let line = parts.method.as_str().len() + parts.uri.path_and_query().map_or(1, |p| p.as_str().len()) + 12;
    parts.headers.iter().fold(line, |n, (k, v)| n + k.as_str().len() + v.len() + 4) + 2
}

/// The limits a request head is checked against before anything else: its size (431) and a
/// declared body size (413).
pub fn check_limits(parts: &request::Parts, server: &crate::config::ServerConfig) -> Result<(), ProxyError> {
    if head_size(parts) > server.max_header_bytes {
        return Err(ProxyError::HeadersTooLarge);
    }
    if exceeds_limit(&parts.headers, server.max_body_bytes) {
        return Err(ProxyError::BodyTooLarge);
    }
    Ok(())
}

/// A Content-Length above the configured limit (0 = none).
pub fn exceeds_limit(headers: &HeaderMap, limit: u64) -> bool {
    limit != 0
        && headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .is_some_and(|n| n > limit)
}

/// GET, HEAD and OPTIONS: safe to run twice (with no body).
pub fn is_safe(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The `Host` the backend sees: an absolute-form or HTTP/2 target's authority wins; HTTP/1.1
/// needs exactly one `Host`; HTTP/1.0 may have none (then the attempt sets the backend's).
fn settle_host(parts: &mut request::Parts, seen: &mut Seen) -> Result<(), ProxyError> {
    if let Some(auth) = parts.uri.authority() {
        let v = HeaderValue::from_str(auth.as_str()).map_err(|_| ProxyError::BadRequest)?;
        parts.headers.insert(header::HOST, v.clone());
        seen.host = Some(v);
        return Ok(());
    }
    match (parts.version, seen.hosts) {
        (_, 0) if parts.version <= Version::HTTP_10 => Ok(()),
        (_, 1) => Ok(()),
        _ => Err(ProxyError::BadRequest),
    }
}

/// Rewrite the request head for the upstream hop (done once; each attempt clones it) and make
/// its forwarding fields, which each attempt adds (see [`Forwarding`]).
/// `trusted`: the peer is one of `server.trusted_proxies`, whose `X-Forwarded-Proto` and
/// `X-Forwarded-Host` (the scheme and host its client used) are kept.
pub fn prepare(
    parts: &mut request::Parts,
    client: SocketAddr,
    proto: Proto,
    trusted: bool,
) -> Result<Forwarding, ProxyError> {
    let mut seen = Seen::of(&parts.headers);
    settle_host(parts, &mut seen)?;
    // HTTP/2 clients may split their cookies over several fields (RFC 9113 8.2.3); an
    // HTTP/1.1 backend gets one Cookie header.
    if seen.cookies > 1 {
        headers::join_cookies(&mut parts.headers);
    }
    if headers::strip_hop_by_hop(&mut parts.headers) {
        // Connection named a field that was there (even Host): look again.
        seen = Seen::of(&parts.headers);
    }
    if seen.previous_backend {
        parts.headers.remove(&PREVIOUS_BACKEND);
    }
    let h = &mut parts.headers;
    let kept = trusted.then(|| {
        let scheme = if seen.forwarded_proto { h.get(&X_FORWARDED_PROTO).cloned() } else { None };
        (scheme, if seen.forwarded_host { h.get(&X_FORWARDED_HOST).cloned() } else { None })
    });
    let mut forwarding = forwarding::forwarding(h, &seen, client, proto.as_str());
    if let Some((scheme, host)) = kept {
        forwarding.keep(scheme, host);
    }
    Ok(forwarding)
}

/// The request of one attempt (for hyper's client): the prepared head with its forwarding
/// fields, in origin form, and the shared body.
pub fn attempt(
    parts: &request::Parts,
    forwarding: &Forwarding,
    body: &RequestBody,
    backend: &Backend,
    previous: Option<&str>,
) -> Result<Request<UpstreamBody>, ProxyError> {
    let mut req = Request::new(body.attempt());
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = origin_form(&parts.uri)?;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = parts.headers.clone();
    forwarding.insert_into(req.headers_mut());
    if !req.headers().contains_key(header::HOST) {
        // HTTP/1.0 without Host: the backend's own name.
        if let Ok(v) = HeaderValue::from_str(backend.addr.authority.as_str()) {
            req.headers_mut().insert(header::HOST, v);
        }
    }
    if let Some(prev) = previous {
        if let Ok(v) = HeaderValue::from_str(prev) {
            req.headers_mut().insert(&PREVIOUS_BACKEND, v);
        }
    }
    Ok(req)
}

/// The request target as an HTTP/1.1 origin server expects it (`/path?query`); HTTP/2 and
/// absolute-form requests carry scheme and authority in the URI.
fn origin_form(uri: &Uri) -> Result<Uri, ProxyError> {
    if uri.scheme().is_none() && uri.authority().is_none() {
        return Ok(uri.clone());
    }
    let pq = uri.path_and_query().map_or("/", |p| p.as_str());
    Uri::try_from(pq).map_err(|_| ProxyError::BadRequest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(version: Version, uri: &str, hosts: &[&str]) -> request::Parts {
        let mut b = Request::builder().version(version).uri(uri);
        for h in hosts {
            b = b.header(header::HOST, *h);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn settle(p: &mut request::Parts) -> Result<(), ProxyError> {
        settle_host(p, &mut Seen::of(&p.headers))
    }

    #[test]
    fn http11_needs_exactly_one_host() {
        assert_eq!(settle(&mut parts(Version::HTTP_11, "/", &[])), Err(ProxyError::BadRequest));
        assert_eq!(settle(&mut parts(Version::HTTP_11, "/", &["a", "b"])), Err(ProxyError::BadRequest));
        assert_eq!(settle(&mut parts(Version::HTTP_11, "/", &["a"])), Ok(()));
    }

    #[test]
    fn http10_without_host_is_forwarded() {
        assert_eq!(settle(&mut parts(Version::HTTP_10, "/", &[])), Ok(()));
    }

    #[test]
    fn absolute_form_authority_is_the_host() {
        let mut p = parts(Version::HTTP_11, "http://a.example/x", &["b.example"]);
        settle(&mut p).unwrap();
        assert_eq!(p.headers.get_all(header::HOST).iter().collect::<Vec<_>>(), ["a.example"]);
        assert_eq!(origin_form(&p.uri).unwrap(), "/x");
    }

    #[test]
    fn fields_named_by_connection_are_gone_before_the_forwarding_headers_are_made() {
        let mut p = parts(Version::HTTP_11, "/", &["app.test"]);
        p.headers.insert(header::CONNECTION, HeaderValue::from_static("host, x-forwarded-for"));
        p.headers.insert("x-forwarded-for", HeaderValue::from_static("10.9.9.9"));
        let forwarding = prepare(&mut p, "127.0.0.1:4000".parse().unwrap(), Proto::Http, false).unwrap();
        forwarding.insert_into(&mut p.headers);
        assert!(!p.headers.contains_key(header::HOST) && !p.headers.contains_key("x-forwarded-host"), "{p:?}");
        assert_eq!(p.headers["x-forwarded-for"], "127.0.0.1");
        assert_eq!(p.headers["forwarded"], "for=127.0.0.1;proto=http");
    }

    #[test]
    fn only_get_head_and_options_are_safe() {
        assert!(is_safe(&Method::GET) && is_safe(&Method::HEAD) && is_safe(&Method::OPTIONS));
        assert!(!is_safe(&Method::POST) && !is_safe(&Method::PUT) && !is_safe(&Method::DELETE));
    }
}
