//! Response builders of the admin API (JSON, JSON errors, text, the status page) and path
//! decoding. Every API answer is `no-store`: it is live state.

use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;

pub type AdminResponse = Response<Full<Bytes>>;

/// The status page's security policy: nothing from outside, inline script and style only,
/// requests only back to this listener, never framed (its buttons change backend states).
const PAGE_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                        connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> AdminResponse {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    r
}

pub fn json<T: Serialize>(status: StatusCode, value: &T) -> AdminResponse {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    respond(status, "application/json", Bytes::from(body))
}

/// `{"error": message}` with `status`.
pub fn error(status: StatusCode, message: &str) -> AdminResponse {
    json(status, &serde_json::json!({ "error": message }))
}

pub fn unauthorized() -> AdminResponse {
    let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token (Authorization: Bearer TOKEN)");
    r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"stickylb admin\""));
    r
}

/// 405 with the `Allow` header listing what the resource answers.
pub fn method_not_allowed(allowed: &[Method]) -> AdminResponse {
    let list: Vec<&str> = allowed.iter().map(Method::as_str).collect();
    let list = list.join(", ");
    let mut r = error(StatusCode::METHOD_NOT_ALLOWED, &format!("method not allowed; use {list}"));
    if let Ok(v) = HeaderValue::from_str(&list) {
        r.headers_mut().insert(header::ALLOW, v);
    }
    r
}

pub fn text(status: StatusCode, body: &'static str) -> AdminResponse {
    respond(status, "text/plain; charset=utf-8", Bytes::from_static(body.as_bytes()))
}

pub fn metrics(body: String, content_type: &'static str) -> AdminResponse {
    respond(StatusCode::OK, content_type, Bytes::from(body))
}

/// The self-contained status page (markup, style and script in one file, no data: it polls
/// the JSON API).
pub fn status_page() -> AdminResponse {
    let mut r = respond(StatusCode::OK, "text/html; charset=utf-8", Bytes::from_static(include_bytes!("status.html")));
    let h = r.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(PAGE_CSP));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    r
}

/// Percent-decode one path segment (`None` for a bad escape or non-UTF-8 result). Session ids
/// are cookie values, which may hold `+`, `/` and `=`.
pub fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).filter(|h| h.iter().all(u8::is_ascii_hexdigit))?;
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Bb%2fc%3D").as_deref(), Some("a+b/c="));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decode("%E2%9C%93").as_deref(), Some("\u{2713}"));
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(percent_decode("bad%g1"), None);
        assert_eq!(percent_decode("bad%+1"), None, "from_str_radix would take the sign");
        assert_eq!(percent_decode("%FF"), None);
    }
}
