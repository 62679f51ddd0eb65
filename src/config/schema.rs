//! The config schema: serde structs with named defaults. Unknown keys are rejected everywhere
//! (`deny_unknown_fields`), durations are human strings (`"250ms"`, `"30s"`), and values that
//! a later check must point at keep their source span (`toml::Spanned`).

use super::BackendAddr;
use serde::{Deserialize, Deserializer};
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

/// Named defaults: every default of the schema lives here, so the README, the example config
/// and the code agree.
pub mod defaults {
    use std::time::Duration;
    pub const LISTEN: &str = "0.0.0.0:8080";
    pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
    pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
    pub const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
    pub const MAX_HEADER_BYTES: usize = 64 * 1024;
    pub const MAX_CONNECTIONS: usize = 10_000;
    pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
    pub const COOKIE: &str = "STICKYLB";
    pub const HEADER: &str = "X-Session-Id";
    pub const SESSION_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
    pub const SESSION_MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);
    pub const MAX_ENTRIES: u64 = 1_000_000;
    pub const RETRIES: u32 = 2;
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
    pub const HEALTH_PATH: &str = "/health";
    pub const HEALTH_INTERVAL: Duration = Duration::from_secs(2);
    pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
    pub const HEALTHY_THRESHOLD: u32 = 2;
    pub const UNHEALTHY_THRESHOLD: u32 = 3;
    pub const PASSIVE_FAILURES: u32 = 5;
    pub const EJECTION_TIME: Duration = Duration::from_secs(30);
    pub const ADMIN_LISTEN: &str = "127.0.0.1:9090";
    pub const REDIS_URL: &str = "redis://127.0.0.1:6379/0";
    pub const KEY_PREFIX: &str = "stickylb:";
    pub const REDIS_TIMEOUT: Duration = Duration::from_millis(200);
}

/// The whole config file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub session: SessionConfig,
    #[serde(default)]
    pub balance: BalanceConfig,
    #[serde(default)]
    pub health: HealthConfig,
    #[serde(default)]
    pub passive: PassiveConfig,
    #[serde(default, rename = "backend")]
    pub backends: Vec<BackendConfig>,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub cluster: ClusterConfig,
    #[serde(default)]
    pub log: LogConfig,
}

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
            max_body_bytes: 0,
            max_connections: defaults::MAX_CONNECTIONS,
            shutdown_timeout: defaults::SHUTDOWN_TIMEOUT,
            tls: None,
            threads: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SessionMode {
    #[default]
    Insert,
    Learn,
    Header,
    None,
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
    /// The signing secret after `secret` / `secret_file` / `STICKYLB_SECRET` were resolved.
    #[serde(skip)]
    pub resolved_secret: Option<String>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            mode: SessionMode::Insert,
            cookie: defaults::COOKIE.into(),
            header: defaults::HEADER.into(),
            idle_timeout: defaults::SESSION_IDLE_TIMEOUT,
            max_lifetime: defaults::SESSION_MAX_LIFETIME,
            max_entries: defaults::MAX_ENTRIES,
            secret: None,
            secret_file: None,
            previous_secrets: Vec::new(),
            cookie_path: "/".into(),
            cookie_domain: String::new(),
            cookie_secure: None,
            cookie_http_only: true,
            cookie_same_site: SameSite::Lax,
            cookie_max_age: None,
            on_backend_down: OnBackendDown::Reassign,
            strip_cookie: true,
            resolved_secret: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    RoundRobin,
    #[default]
    LeastConnections,
    RandomTwo,
    Hash,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BalanceConfig {
    pub algorithm: Algorithm,
    pub retries: u32,
    /// Extra key: how long a TCP connect to a backend may take before it counts as refused
    /// (and the request is retried on another backend).
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
}

impl Default for BalanceConfig {
    fn default() -> Self {
        Self { algorithm: Algorithm::default(), retries: defaults::RETRIES, connect_timeout: defaults::CONNECT_TIMEOUT }
    }
}

/// An inclusive range of HTTP status codes, written `"200-399"` or `"200"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusRange {
    pub low: u16,
    pub high: u16,
}

impl StatusRange {
    pub fn contains(&self, status: u16) -> bool {
        (self.low..=self.high).contains(&status)
    }
}

impl<'de> Deserialize<'de> for StatusRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_status_range(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid status range {s:?}: expected \"200\" or \"200-399\" with codes 100-599"
            ))
        })
    }
}

fn parse_status_range(s: &str) -> Option<StatusRange> {
    let (low, high) = match s.split_once('-') {
        Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
        None => {
            let v = s.trim().parse().ok()?;
            (v, v)
        }
    };
    let valid = (100..=599).contains(&low) && (100..=599).contains(&high) && low <= high;
    valid.then_some(StatusRange { low, high })
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Extra key: `false` turns active probes off (passive ejection still works).
    pub enabled: bool,
    pub path: String,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    pub healthy_threshold: NonZeroU32,
    pub unhealthy_threshold: NonZeroU32,
    pub expect_status: StatusRange,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            path: defaults::HEALTH_PATH.into(),
            interval: defaults::HEALTH_INTERVAL,
            timeout: defaults::HEALTH_TIMEOUT,
            healthy_threshold: NonZeroU32::new(defaults::HEALTHY_THRESHOLD).expect("non-zero"),
            unhealthy_threshold: NonZeroU32::new(defaults::UNHEALTHY_THRESHOLD).expect("non-zero"),
            expect_status: StatusRange { low: 200, high: 399 },
        }
    }
}

/// Per-backend overrides of `[health]`; absent keys inherit.
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HealthOverride {
    pub enabled: Option<bool>,
    pub path: Option<String>,
    #[serde(with = "humantime_serde")]
    pub interval: Option<Duration>,
    #[serde(with = "humantime_serde")]
    pub timeout: Option<Duration>,
    pub healthy_threshold: Option<NonZeroU32>,
    pub unhealthy_threshold: Option<NonZeroU32>,
    pub expect_status: Option<StatusRange>,
}

impl HealthConfig {
    /// This config with a backend's overrides applied.
    pub fn with_override(&self, o: &HealthOverride) -> HealthConfig {
        HealthConfig {
            enabled: o.enabled.unwrap_or(self.enabled),
            path: o.path.clone().unwrap_or_else(|| self.path.clone()),
            interval: o.interval.unwrap_or(self.interval),
            timeout: o.timeout.unwrap_or(self.timeout),
            healthy_threshold: o.healthy_threshold.unwrap_or(self.healthy_threshold),
            unhealthy_threshold: o.unhealthy_threshold.unwrap_or(self.unhealthy_threshold),
            expect_status: o.expect_status.unwrap_or(self.expect_status),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PassiveConfig {
    pub consecutive_failures: NonZeroU32,
    #[serde(with = "humantime_serde")]
    pub ejection_time: Duration,
}

impl Default for PassiveConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: NonZeroU32::new(defaults::PASSIVE_FAILURES).expect("non-zero"),
            ejection_time: defaults::EJECTION_TIME,
        }
    }
}

/// Administrative state of a backend, set in config or through the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AdminState {
    /// Takes new and pinned sessions.
    #[default]
    Active,
    /// Keeps its pinned sessions, takes no new ones.
    Drain,
    /// Takes no traffic; its sessions are reassigned.
    Maint,
}

impl AdminState {
    pub fn as_str(self) -> &'static str {
        match self {
            AdminState::Active => "active",
            AdminState::Drain => "drain",
            AdminState::Maint => "maint",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    pub name: Spanned<String>,
    pub address: BackendAddr,
    #[serde(default = "default_weight")]
    pub weight: Spanned<u32>,
    /// 0 = unlimited.
    #[serde(default)]
    pub max_connections: usize,
    #[serde(default)]
    pub state: AdminState,
    #[serde(default, with = "humantime_serde")]
    pub slow_start: Duration,
    #[serde(default)]
    pub health: HealthOverride,
}

fn default_weight() -> Spanned<u32> {
    Spanned::new(0..0, 1)
}

impl BackendConfig {
    pub fn name(&self) -> &str {
        self.name.get_ref()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// `None` (written as `""`) = no admin listener.
    #[serde(deserialize_with = "optional_addr")]
    pub listen: Option<SocketAddr>,
    pub token: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self { listen: Some(defaults::ADMIN_LISTEN.parse().expect("valid default")), token: String::new() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    #[default]
    Memory,
    Redis,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    pub store: StoreKind,
    pub redis_url: String,
    pub key_prefix: String,
    #[serde(deserialize_with = "optional_path")]
    pub snapshot_file: Option<PathBuf>,
    /// Extra key: how long a request may wait on Redis before using the local table.
    #[serde(with = "humantime_serde")]
    pub redis_timeout: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            store: StoreKind::Memory,
            redis_url: defaults::REDIS_URL.into(),
            key_prefix: defaults::KEY_PREFIX.into(),
            snapshot_file: None,
            redis_timeout: defaults::REDIS_TIMEOUT,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
    pub access_log: bool,
    /// Extra key: add `X-Stickylb-Backend: <name>` to responses.
    pub debug_headers: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: "info".into(), format: LogFormat::Text, access_log: true, debug_headers: false }
    }
}

// ---- small deserializers ------------------------------------------------------------------

/// `listen = "a:1"` or `listen = ["a:1", "b:2"]`.
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let list = match OneOrMany::deserialize(d)
        .map_err(|_| serde::de::Error::custom("expected an address \"host:port\" or a list of them"))?
    {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    };
    if list.is_empty() {
        return Err(serde::de::Error::custom("at least one listen address is required"));
    }
    list.iter()
        .map(|s| {
            s.parse::<SocketAddr>()
                .map_err(|_| serde::de::Error::custom(format!("invalid listen address {s:?}: expected IP:PORT")))
        })
        .collect()
}

/// `""` = none, otherwise a human duration.
fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    if s.trim().is_empty() {
        return Ok(None);
    }
    humantime::parse_duration(s.trim())
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("invalid duration {s:?}: {e}")))
}

/// `""` = none, otherwise an IP:PORT.
fn optional_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let s = String::deserialize(d)?;
    if s.trim().is_empty() {
        return Ok(None);
    }
    s.trim()
        .parse()
        .map(Some)
        .map_err(|_| serde::de::Error::custom(format!("invalid address {s:?}: expected IP:PORT or \"\"")))
}

/// `""` = none.
fn optional_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let s = String::deserialize(d)?;
    Ok((!s.trim().is_empty()).then(|| PathBuf::from(s)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_ranges() {
        assert_eq!(parse_status_range("200-399"), Some(StatusRange { low: 200, high: 399 }));
        assert_eq!(parse_status_range("204"), Some(StatusRange { low: 204, high: 204 }));
        assert_eq!(parse_status_range("399-200"), None);
        assert_eq!(parse_status_range("abc"), None);
        assert_eq!(parse_status_range("99"), None);
    }
}
