//! Checks that serde cannot express (unique names, secret lengths, cross-field rules), and the
//! error type that points at `FILE:LINE:COL`. All errors of a file are collected, not just the
//! first, so an operator fixes them in one round.

use super::schema::*;
use serde::{Deserialize, Deserializer};
use std::collections::HashSet;
use std::fmt;
use std::ops::Range;
use std::time::Duration;

/// A config that cannot be used; `Display` gives one `FILE:LINE:COL: message` per line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: {message}")]
    Io { file: String, message: String },
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

impl ConfigError {
    /// An error at a byte span of the file (or at 1:1 when the span is unknown).
    pub fn at_span(file: &str, text: &str, span: Option<Range<usize>>, message: &str) -> Self {
        ConfigError::Invalid(vec![located(file, text, span.map(|s| s.start), message)])
    }

    /// Every message, one per entry.
    pub fn messages(&self) -> Vec<String> {
        match self {
            ConfigError::Io { .. } => vec![self.to_string()],
            ConfigError::Invalid(v) => v.clone(),
        }
    }
}

fn located(file: &str, text: &str, offset: Option<usize>, message: &str) -> String {
    let (line, col) = offset.map(|o| line_col(text, o)).unwrap_or((1, 1));
    let message = message.trim().replace('\n', " ");
    format!("{file}:{line}:{col}: {message}")
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Byte offset of `key = ...` inside `[section]` (best effort, for keys serde does not span).
fn key_offset(text: &str, section: &str, key: &str) -> Option<usize> {
    let mut offset = 0;
    let mut in_section = section.is_empty();
    for line in text.split_inclusive('\n') {
        let t = line.trim_start();
        if t.starts_with('[') {
            let name = t.trim_start_matches('[').split(']').next().unwrap_or("").trim();
            in_section = name == section;
        } else if in_section {
            if let Some(rest) = t.strip_prefix(key) {
                if rest.trim_start().starts_with('=') {
                    return Some(offset + (line.len() - t.len()));
                }
            }
        }
        offset += line.len();
    }
    None
}

/// The address of a backend: `host:port` or `http://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendAddr {
    /// `host:port`, as used in upstream URIs.
    pub authority: http::uri::Authority,
}

impl fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.authority.as_str())
    }
}

impl BackendAddr {
    pub fn parse(s: &str) -> Result<Self, String> {
        let rest = s.trim();
        if rest.starts_with("https://") {
            return Err(format!("invalid backend address {s:?}: https:// backends are not supported yet"));
        }
        let rest = rest.strip_prefix("http://").unwrap_or(rest).trim_end_matches('/');
        let authority: http::uri::Authority = rest
            .parse()
            .map_err(|_| format!("invalid backend address {s:?}: expected host:port or http://host:port"))?;
        if authority.port_u16().is_none() || authority.host().is_empty() || rest.contains('@') {
            return Err(format!("invalid backend address {s:?}: expected host:port (the port is required)"));
        }
        Ok(Self { authority })
    }
}

impl<'de> Deserialize<'de> for BackendAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        BackendAddr::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Minimum HMAC key length for cookie signing.
pub const MIN_SECRET_BYTES: usize = 32;
/// Maximum backend weight.
pub const MAX_WEIGHT: u32 = 10_000;

struct Checker<'a> {
    file: &'a str,
    text: &'a str,
    errors: Vec<String>,
}

impl Checker<'_> {
    fn at(&mut self, offset: Option<usize>, message: impl AsRef<str>) {
        self.errors.push(located(self.file, self.text, offset, message.as_ref()));
    }
    fn key(&mut self, section: &str, key: &str, message: impl AsRef<str>) {
        let off = key_offset(self.text, section, key);
        self.at(off, message);
    }
    fn positive(&mut self, section: &str, key: &str, d: Duration) {
        if d.is_zero() {
            self.key(section, key, format!("{section}.{key} must be greater than 0"));
        }
    }
}

/// Validate a parsed config; also resolves `secret_file` / `STICKYLB_SECRET` into
/// `session.resolved_secret`.
pub fn validate(mut config: Config, file: &str, text: &str) -> Result<Config, ConfigError> {
    let mut c = Checker { file, text, errors: Vec::new() };
    check_server(&mut c, &mut config.server);
    check_session(&mut c, &mut config.session);
    check_backends(&mut c, &config.backends);
    c.positive("balance", "connect_timeout", config.balance.connect_timeout);
    c.positive("health", "interval", config.health.interval);
    c.positive("health", "timeout", config.health.timeout);
    if !config.health.path.starts_with('/') {
        c.key("health", "path", "health.path must start with '/'");
    }
    check_cluster(&mut c, &config.cluster);
    if config.log.level.parse::<tracing_subscriber::EnvFilter>().is_err() {
        c.key("log", "level", format!("invalid log level {:?}", config.log.level));
    }
    if c.errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::Invalid(c.errors))
    }
}

fn check_server(c: &mut Checker, s: &mut ServerConfig) {
    c.positive("server", "request_timeout", s.request_timeout);
    c.positive("server", "header_read_timeout", s.header_read_timeout);
    c.positive("server", "idle_timeout", s.idle_timeout);
    c.positive("server", "shutdown_timeout", s.shutdown_timeout);
    if s.max_connections == 0 {
        c.key("server", "max_connections", "server.max_connections must be greater than 0");
    }
    if s.max_header_bytes < 1024 {
        c.key("server", "max_header_bytes", "server.max_header_bytes must be at least 1024");
    }
    let unique: HashSet<_> = s.listen.iter().collect();
    if unique.len() != s.listen.len() {
        c.key("server", "listen", "server.listen has the same address twice");
    }
    if let Some(tls) = &mut s.tls {
        match crate::tls::server_config(tls.cert.get_ref(), tls.key.get_ref()) {
            Ok(config) => tls.server_config = Some(config),
            Err(crate::tls::TlsFileError::Cert(e)) => {
                c.at(Some(tls.cert.span().start), format!("server.tls.cert: {e}"))
            }
            Err(crate::tls::TlsFileError::Key(e)) => c.at(Some(tls.key.span().start), format!("server.tls.key: {e}")),
        }
    }
}

fn check_session(c: &mut Checker, s: &mut SessionConfig) {
    if s.cookie.is_empty() || !s.cookie.bytes().all(is_token_byte) {
        c.key("session", "cookie", format!("invalid cookie name {:?}", s.cookie));
    }
    if s.mode == SessionMode::Header && http::HeaderName::from_bytes(s.header.as_bytes()).is_err() {
        c.key("session", "header", format!("invalid header name {:?}", s.header));
    }
    c.positive("session", "idle_timeout", s.idle_timeout);
    c.positive("session", "max_lifetime", s.max_lifetime);
    if s.max_entries == 0 {
        c.key("session", "max_entries", "session.max_entries must be greater than 0");
    }
    s.resolved_secret = resolve_secret(c, s);
    for old in &s.previous_secrets {
        if old.get_ref().len() < MIN_SECRET_BYTES {
            c.at(Some(old.span().start), format!("previous secret must be at least {MIN_SECRET_BYTES} bytes"));
        }
    }
}

fn resolve_secret(c: &mut Checker, s: &SessionConfig) -> Option<String> {
    let (secret, offset) = if let Some(secret) = &s.secret {
        (secret.get_ref().clone(), Some(secret.span().start))
    } else if let Some(path) = &s.secret_file {
        match std::fs::read_to_string(path.get_ref()) {
            Ok(text) => (text.trim_end_matches(['\r', '\n']).to_string(), Some(path.span().start)),
            Err(e) => {
                c.at(Some(path.span().start), format!("cannot read secret_file {}: {e}", path.get_ref().display()));
                return None;
            }
        }
    } else if let Ok(env) = std::env::var("STICKYLB_SECRET") {
        (env, None)
    } else {
        return None;
    };
    if secret.len() < MIN_SECRET_BYTES {
        let what = if offset.is_some() { "session secret" } else { "STICKYLB_SECRET" };
        c.at(offset, format!("{what} must be at least {MIN_SECRET_BYTES} bytes (got {})", secret.len()));
        return None;
    }
    Some(secret)
}

fn check_cluster(c: &mut Checker, cl: &ClusterConfig) {
    c.positive("cluster", "redis_timeout", cl.redis_timeout);
    if cl.store == StoreKind::Redis {
        if !(cl.redis_url.starts_with("redis://") || cl.redis_url.starts_with("rediss://")) {
            c.key("cluster", "redis_url", "cluster.redis_url must start with redis:// or rediss://");
        } else if let Err(e) = redis::Client::open(cl.redis_url.as_str()) {
            c.key("cluster", "redis_url", format!("invalid cluster.redis_url: {e}"));
        }
        if cl.snapshot_file.is_some() {
            c.key(
                "cluster",
                "snapshot_file",
                "cluster.snapshot_file is for store = \"memory\"; with store = \"redis\" pins live in Redis",
            );
        }
    }
    if cl.key_prefix.chars().any(char::is_whitespace) {
        c.key("cluster", "key_prefix", "cluster.key_prefix must not contain whitespace");
    }
    if let Some(dir) = cl.snapshot_file.as_ref().and_then(|f| f.parent()).filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            c.key(
                "cluster",
                "snapshot_file",
                format!("cluster.snapshot_file: directory {} does not exist", dir.display()),
            );
        }
    }
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn check_backends(c: &mut Checker, backends: &[BackendConfig]) {
    if backends.is_empty() {
        c.at(None, "at least one [[backend]] is required");
    }
    let mut seen = HashSet::new();
    for b in backends {
        let name = b.name.get_ref();
        if name.is_empty() || !name.bytes().all(|ch| ch.is_ascii_alphanumeric() || b"-_.".contains(&ch)) {
            c.at(
                Some(b.name.span().start),
                format!("invalid backend name {name:?}: use letters, digits, '-', '_', '.'"),
            );
        } else if !seen.insert(name.as_str()) {
            c.at(Some(b.name.span().start), format!("duplicate backend name {name:?}"));
        }
        let w = *b.weight.get_ref();
        if w == 0 || w > MAX_WEIGHT {
            c.at(Some(b.weight.span().start), format!("backend weight must be between 1 and {MAX_WEIGHT}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse;

    const MIN: &str = "[[backend]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n";

    #[test]
    fn minimal_config_is_valid() {
        let c = parse(MIN, "t.toml").unwrap();
        assert_eq!(c.backends.len(), 1);
        assert_eq!(c.backends[0].address.to_string(), "127.0.0.1:1");
    }

    #[test]
    fn typo_points_at_line() {
        let text = format!("[server]\nrequest_timout = \"5s\"\n{MIN}");
        let e = parse(&text, "t.toml").unwrap_err().to_string();
        assert!(e.starts_with("t.toml:2:1: unknown field `request_timout`"), "{e}");
    }

    #[test]
    fn duplicate_names_and_bad_duration_are_all_reported() {
        let text = format!("[health]\ninterval = \"5 parsecs\"\n{MIN}");
        let e = parse(&text, "t.toml").unwrap_err().to_string();
        assert!(e.contains("t.toml:2:"), "{e}");
        let text = format!("{MIN}{MIN}");
        let e = parse(&text, "t.toml").unwrap_err().to_string();
        assert!(e.contains("t.toml:5:8: duplicate backend name \"a\""), "{e}");
    }

    #[test]
    fn addresses() {
        use super::BackendAddr;
        assert!(BackendAddr::parse("http://app:80").is_ok());
        assert!(BackendAddr::parse("[::1]:8080").is_ok());
        assert!(BackendAddr::parse("app").is_err());
        assert!(BackendAddr::parse("https://app:443").is_err());
    }

    #[test]
    fn short_secret_rejected() {
        let text = format!("[session]\nsecret = \"short\"\n{MIN}");
        let e = parse(&text, "t.toml").unwrap_err().to_string();
        assert!(e.contains("t.toml:2:10: session secret must be at least 32 bytes"), "{e}");
    }

    #[test]
    fn cluster_keys_are_checked() {
        let text = format!(
            "[cluster]\nstore = \"redis\"\nredis_url = \"redis://\"\nsnapshot_file = \"pins.jsonl\"\nredis_timeout = \"0s\"\n{MIN}"
        );
        let e = parse(&text, "t.toml").unwrap_err().to_string();
        assert!(e.contains("t.toml:5:1: cluster.redis_timeout must be greater than 0"), "{e}");
        assert!(e.contains("t.toml:3:1: invalid cluster.redis_url"), "{e}");
        assert!(e.contains("t.toml:4:1: cluster.snapshot_file is for store = \"memory\""), "{e}");
        let text = format!("[cluster]\nsnapshot_file = \"/no/such/dir/pins.jsonl\"\n{MIN}");
        let e = parse(&text, "t.toml").unwrap_err().to_string();
        assert!(e.contains("t.toml:2:1: cluster.snapshot_file: directory /no/such/dir does not exist"), "{e}");
        let text = format!("[cluster]\nstore = \"redis\"\nredis_url = \"redis://10.0.0.1:6379/2\"\n{MIN}");
        assert!(parse(&text, "t.toml").is_ok());
    }

    #[test]
    fn no_backend() {
        let e = parse("", "t.toml").unwrap_err().to_string();
        assert!(e.contains("at least one [[backend]]"), "{e}");
    }
}
