//! `[session]`: how a client is tied to a backend (mode, cookie or header name), how long a
//! pin lives, the cookie's attributes, and the signing secrets (resolved by `config::secret`).

use super::de::optional_duration;
use super::defaults;
use crate::config::SecretSource;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SessionMode {
    #[default]
    Insert,
    Learn,
    Header,
    /// SOAP-level sessions: Axis2 `ServiceGroupId` / Synapse `ClientID` in the envelope's Header.
    Soap,
    None,
}

/// How strictly a pinned session sticks to its backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Affinity {
    /// Backends keep sessions in memory: a session leaves its backend only when that one
    /// cannot serve it.
    #[default]
    Strict,
    /// Backends replicate sessions: a session also leaves a backend that is over the load
    /// bound (`balance.bounded_load`) or at its `max_connections`.
    Preferred,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum SameSite {
    Strict,
    #[default]
    Lax,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnBackendDown {
    #[default]
    Reassign,
    Reject,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    pub mode: SessionMode,
    pub cookie: String,
    pub header: String,
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub max_lifetime: Duration,
    pub max_entries: u64,
    pub secret: Option<Spanned<String>>,
    pub secret_file: Option<Spanned<PathBuf>>,
    /// After validation: the file's list, or `STICKYLB_PREVIOUS_SECRETS` when that is set
    /// (its entries then carry an empty span).
    pub previous_secrets: Vec<Spanned<String>>,
    pub cookie_path: String,
    pub cookie_domain: String,
    /// `None` = follow TLS (true when TLS is on).
    pub cookie_secure: Option<bool>,
    pub cookie_http_only: bool,
    pub cookie_same_site: SameSite,
    #[serde(deserialize_with = "optional_duration")]
    pub cookie_max_age: Option<Duration>,
    pub on_backend_down: OnBackendDown,
    /// Remove our own cookie from the request before forwarding (insert mode).
    pub strip_cookie: bool,
    /// SOAP mode: how much of a request or response body is inspected for the session.
    pub soap_max_bytes: usize,
    pub affinity: Affinity,
    /// The signing secret after `STICKYLB_SECRET` / `secret` / `secret_file` were resolved
    /// (the first one set wins); `None` = a random per-process key.
    #[serde(skip)]
    pub resolved_secret: Option<String>,
    /// Where `resolved_secret` came from, for the startup log (never the value).
    #[serde(skip)]
    pub secret_source: SecretSource,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            mode: SessionMode::default(),
            cookie: defaults::COOKIE.into(),
            header: defaults::HEADER.into(),
            idle_timeout: defaults::SESSION_IDLE_TIMEOUT,
            max_lifetime: defaults::SESSION_MAX_LIFETIME,
            max_entries: defaults::MAX_ENTRIES,
            secret: None,
            secret_file: None,
            previous_secrets: Vec::new(),
            cookie_path: defaults::COOKIE_PATH.into(),
            cookie_domain: defaults::COOKIE_DOMAIN.into(),
            cookie_secure: None,
            cookie_http_only: defaults::COOKIE_HTTP_ONLY,
            cookie_same_site: SameSite::default(),
            cookie_max_age: None,
            on_backend_down: OnBackendDown::default(),
            strip_cookie: defaults::STRIP_COOKIE,
            soap_max_bytes: defaults::SOAP_MAX_BYTES,
            affinity: Affinity::default(),
            resolved_secret: None,
            secret_source: SecretSource::default(),
        }
    }
}
