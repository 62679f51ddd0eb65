//! The proxy's errors and their one mapping to an HTTP status with a short plain-text body.

use super::response_body::ResponseBody;
use crate::balance::Pool;
use crate::metrics::Metrics;
use http::{header, HeaderValue, Response, StatusCode};

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("no backend available")]
    NoBackend,
    #[error("backend refused the connection")]
    Connect,
    #[error("backend failed to answer")]
    Upstream,
    #[error("backend did not answer in time")]
    Timeout,
    #[error("request body too large")]
    BodyTooLarge,
    #[error("request header fields too large")]
    HeadersTooLarge,
    #[error("bad request")]
    BadRequest,
}

impl ProxyError {
    pub fn status(self) -> StatusCode {
        match self {
            ProxyError::NoBackend => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Connect | ProxyError::Upstream => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::BadRequest => StatusCode::BAD_REQUEST,
        }
    }

    pub fn response(self) -> Response<ResponseBody> {
        let body = format!("{} {}\n", self.status().as_u16(), self);
        let mut r = Response::new(ResponseBody::text(body));
        *r.status_mut() = self.status();
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    }
}
/// Count a response that was answered with an error: on the backend it concerned when it is in
/// `pool` (a 502 after a refused connection, a 504, a 503 of a rejected pinned session), else
/// under `backend="none"`. Errors are rare, so the lookup by name is off the fast path.
pub fn count_error(metrics: &Metrics, pool: &Pool, backend: Option<&str>, status: u16) {
    match backend.and_then(|name| pool.get(name)) {
        Some(b) => b.responses.count(status),
        None => metrics.unrouted.count(status),
    }
}
