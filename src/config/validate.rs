//! Checks that serde cannot express (unique names, secret lengths, cross-field rules). Every
//! problem is recorded, not just the first, so an operator fixes them in one round.

use super::collect::Problems;
use super::document::Document;
use super::schema::*;
use std::collections::HashSet;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::time::Duration;

/// Minimum HMAC key length for cookie signing.
pub const MIN_SECRET_BYTES: usize = 32;
/// Maximum backend weight.
pub const MAX_WEIGHT: u32 = 10_000;
/// Most worker threads `server.threads` may ask for.
pub const MAX_THREADS: usize = 1024;

/// Where validation records problems, and how it finds the position of a key.
pub(super) struct Checker<'p, 'a> {
    problems: &'p mut Problems<'a>,
    doc: &'p Document,
    /// Dotted paths taken out of the text after a type error: their defaults stand in.
    removed: &'p [String],
    /// Reads an environment variable (the process's, or a test's).
    pub env: &'p dyn Fn(&str) -> Option<OsString>,
}

impl<'p, 'a> Checker<'p, 'a> {
    pub fn new(
        problems: &'p mut Problems<'a>,
        doc: &'p Document,
        removed: &'p [String],
        env: &'p dyn Fn(&str) -> Option<OsString>,
    ) -> Self {
        Self { problems, doc, removed, env }
    }
    pub fn at(&mut self, offset: Option<usize>, message: impl AsRef<str>) {
        self.problems.at(offset, message.as_ref());
    }
    /// A problem at the key `path` (dotted), or at 1:1 when the file does not have it.
    fn key(&mut self, path: &str, message: impl AsRef<str>) {
        let offset = self.doc.key_offset(path);
        self.at(offset, message);
    }
    /// A problem at the value of `path`.
    fn value(&mut self, path: &str, message: impl AsRef<str>) {
        let offset = self.doc.value_offset(path).or_else(|| self.doc.key_offset(path));
        self.at(offset, message);
    }
    /// A problem outside the file: `message` names where (an environment variable).
    pub fn outside(&mut self, message: String) {
        self.problems.outside(message);
    }
    /// True when `path` (or a part of it) was taken out after a type error.
    fn was_removed(&self, path: &str) -> bool {
        self.removed.iter().any(|r| r == path || r.starts_with(&format!("{path}.")))
    }
    fn positive(&mut self, path: &str, d: Duration) {
        if d.is_zero() {
            self.key(path, format!("{path} must be greater than 0"));
        }
    }
}

/// Validate a parsed config; also resolves the session secrets (`config::secret`).
pub(super) fn validate(mut config: Config, c: &mut Checker) -> Config {
    check_server(c, &mut config.server);
    check_session(c, &mut config.session);
    check_backends(c, &config.backends);
    c.positive("balance.connect_timeout", config.balance.connect_timeout);
    let bound = config.balance.bounded_load;
    if !(bound.is_finite() && bound > 1.0 && bound <= 100.0) {
        c.value("balance.bounded_load", "balance.bounded_load must be greater than 1 (e.g. 1.25) and at most 100");
    }
    c.positive("health.interval", config.health.interval);
    c.positive("health.timeout", config.health.timeout);
    if !config.health.path.starts_with('/') {
        c.key("health.path", "health.path must start with '/'");
    }
    check_cluster(c, &config.cluster);
    check_admin_listen(c, &config);
    if let Err(e) = check_log_level(&config.log.level) {
        c.value("log.level", e);
    }
    config
}

fn check_server(c: &mut Checker, s: &mut ServerConfig) {
    c.positive("server.request_timeout", s.request_timeout);
    c.positive("server.header_read_timeout", s.header_read_timeout);
    c.positive("server.idle_timeout", s.idle_timeout);
    c.positive("server.shutdown_timeout", s.shutdown_timeout);
    if s.max_connections == 0 {
        c.key("server.max_connections", "server.max_connections must be greater than 0");
    }
    if s.max_header_bytes < 1024 {
        c.key("server.max_header_bytes", "server.max_header_bytes must be at least 1024");
    }
    s.trusted.clear();
    for (i, text) in s.trusted_proxies.iter().enumerate() {
        match super::IpRange::parse(text) {
            Ok(r) => s.trusted.push(r),
            Err(e) => c.value(&format!("server.trusted_proxies.{i}"), format!("server.trusted_proxies: {e}")),
        }
    }
    if s.threads > MAX_THREADS {
        c.value("server.threads", format!("server.threads must be at most {MAX_THREADS} (0 = one per CPU)"));
    }
    let unique: HashSet<_> = s.listen.iter().collect();
    if unique.len() != s.listen.len() {
        c.key("server.listen", "server.listen has the same address twice");
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

/// Two listeners of this process on one port would share it silently (SO_REUSEPORT): client
/// traffic would reach the admin API. IPv6 sockets are IPv6-only, so families never overlap.
fn check_admin_listen(c: &mut Checker, config: &Config) {
    let Some(admin) = config.admin.listen else { return };
    if c.was_removed("admin.listen") || c.was_removed("server.listen") {
        return;
    }
    let overlaps = |l: &SocketAddr| {
        l.port() == admin.port()
            && admin.port() != 0
            && l.is_ipv4() == admin.is_ipv4()
            && (l.ip() == admin.ip() || l.ip().is_unspecified() || admin.ip().is_unspecified())
    };
    if let Some(l) = config.server.listen.iter().find(|l| overlaps(l)) {
        let message = format!(
            "admin.listen {admin} overlaps server.listen {l}: the admin API needs a port of its own \
             (or admin.listen = \"\" to turn it off)"
        );
        let path = if c.doc.key_offset("admin.listen").is_some() { "admin.listen" } else { "server.listen" };
        c.value(path, message);
    }
}

/// `log.level`: a level word, or `EnvFilter` directives (`info,stickylb=debug`) whose levels
/// are all level words. A bare word that is not a level would be read by `EnvFilter` as a
/// target name and silently log nothing of ours.
pub(super) fn check_log_level(level: &str) -> Result<(), String> {
    const HELP: &str = "use error, warn, info, debug, trace or off, or directives such as \"info,stickylb=debug\"";
    if level.trim().is_empty() {
        return Err(format!("log.level is empty: {HELP}"));
    }
    for directive in level.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let word = directive.rsplit_once('=').map_or(directive, |(_, w)| w).trim();
        if word.is_empty() || word.parse::<tracing_subscriber::filter::LevelFilter>().is_err() {
            return Err(format!("unknown log level {word:?} in log.level {level:?}: {HELP}"));
        }
    }
    level.parse::<tracing_subscriber::EnvFilter>().map(drop).map_err(|e| format!("invalid log.level {level:?}: {e}"))
}

fn check_session(c: &mut Checker, s: &mut SessionConfig) {
    if s.cookie.is_empty() || !s.cookie.bytes().all(is_token_byte) {
        c.key("session.cookie", format!("invalid cookie name {:?}", s.cookie));
    }
    if s.mode == SessionMode::Header && http::HeaderName::from_bytes(s.header.as_bytes()).is_err() {
        c.key("session.header", format!("invalid header name {:?}", s.header));
    }
    c.positive("session.idle_timeout", s.idle_timeout);
    c.positive("session.max_lifetime", s.max_lifetime);
    if s.max_entries == 0 {
        c.key("session.max_entries", "session.max_entries must be greater than 0");
    }
    if !(256..=16 << 20).contains(&s.soap_max_bytes) {
        c.value("session.soap_max_bytes", "session.soap_max_bytes must be between 256 and 16777216");
    }
    super::secret::resolve(c, s);
}

fn check_cluster(c: &mut Checker, cl: &ClusterConfig) {
    c.positive("cluster.redis_timeout", cl.redis_timeout);
    if cl.store == StoreKind::Redis {
        if !(cl.redis_url.starts_with("redis://") || cl.redis_url.starts_with("rediss://")) {
            c.key("cluster.redis_url", "cluster.redis_url must start with redis:// or rediss://");
        } else if let Err(e) = redis::Client::open(cl.redis_url.as_str()) {
            c.key("cluster.redis_url", format!("invalid cluster.redis_url: {e}"));
        }
        if cl.snapshot_file.is_some() {
            c.key(
                "cluster.snapshot_file",
                "cluster.snapshot_file is for store = \"memory\"; with store = \"redis\" pins live in Redis",
            );
        }
    }
    check_redis_topology(c, cl);
    if cl.instance_name.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
        c.key("cluster.instance_name", "cluster.instance_name must not contain whitespace");
    }
    if cl.key_prefix.chars().any(char::is_whitespace) {
        c.key("cluster.key_prefix", "cluster.key_prefix must not contain whitespace");
    }
    if let Some(dir) = cl.snapshot_file.as_ref().and_then(|f| f.parent()).filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            c.key(
                "cluster.snapshot_file",
                format!("cluster.snapshot_file: directory {} does not exist", dir.display()),
            );
        }
    }
}

/// `sentinels` + `sentinel_master`, or `redis_cluster`: each a list of `host:port`, only with
/// `store = "redis"`, not both.
fn check_redis_topology(c: &mut Checker, cl: &ClusterConfig) {
    for (key, list) in [("cluster.sentinels", &cl.sentinels), ("cluster.redis_cluster", &cl.redis_cluster)] {
        if list.is_empty() {
            continue;
        }
        if cl.store != StoreKind::Redis {
            c.key(key, format!("{key} needs store = \"redis\""));
        }
        for node in list {
            if !is_host_port(node) {
                c.value(key, format!("{key}: {node:?} is not host:port"));
            }
        }
    }
    if !cl.sentinels.is_empty() && !cl.redis_cluster.is_empty() {
        c.key("cluster.redis_cluster", "cluster.redis_cluster and cluster.sentinels exclude each other");
    }
    if !cl.sentinels.is_empty() && cl.sentinel_master.trim().is_empty() {
        c.key("cluster.sentinels", "cluster.sentinels needs cluster.sentinel_master (the master's name)");
    }
    if cl.sentinels.is_empty() && !cl.sentinel_master.is_empty() {
        c.key("cluster.sentinel_master", "cluster.sentinel_master needs cluster.sentinels");
    }
}

/// `host:port` with a non-empty host and a port from 1 to 65535 (`[v6]:port` too).
fn is_host_port(s: &str) -> bool {
    let Some((host, port)) = s.rsplit_once(':') else { return false };
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    !host.is_empty() && !host.contains(char::is_whitespace) && port.parse::<u16>().is_ok_and(|p| p != 0)
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn check_backends(c: &mut Checker, backends: &[BackendConfig]) {
    // A backend table taken out after a type error still counts: it was there.
    if backends.is_empty() && !c.was_removed("backend") {
        c.at(None, "at least one [[backend]] is required");
    }
    let mut seen = HashSet::new();
    let mut routes = HashSet::new();
    for b in backends {
        if let Some(route) = &b.route {
            let r = route.get_ref();
            if r.is_empty() || r.contains('.') || !r.bytes().all(|ch| ch.is_ascii_alphanumeric() || b"-_".contains(&ch))
            {
                c.at(Some(route.span().start), format!("invalid route {r:?}: use letters, digits, '-', '_' (no '.')"));
            } else if !routes.insert(r.as_str()) {
                c.at(Some(route.span().start), format!("duplicate route {r:?}: each backend needs its own"));
            }
        }
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
