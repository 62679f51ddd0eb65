//! Every default of the schema, named: the README, the example config (`config/stickylb.toml`)
//! and the code agree because they all read from here. Re-exported as `config::defaults`.

use std::time::Duration;

// ---- [server]
pub const LISTEN: &str = "0.0.0.0:8080";
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
pub const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// 0 = unlimited.
pub const MAX_BODY_BYTES: u64 = 0;
pub const MAX_CONNECTIONS: usize = 10_000;
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// 0 = one worker per CPU this process may run on.
pub const THREADS: usize = 0;

// ---- [session]
pub const COOKIE: &str = "STICKYLB";
pub const HEADER: &str = "X-Session-Id";
pub const SESSION_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
pub const SESSION_MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);
pub const MAX_ENTRIES: u64 = 1_000_000;
pub const COOKIE_PATH: &str = "/";
/// Empty = a host-only cookie.
pub const COOKIE_DOMAIN: &str = "";
pub const COOKIE_HTTP_ONLY: bool = true;
pub const STRIP_COOKIE: bool = true;

// ---- [balance]
pub const RETRIES: u32 = 2;
/// `balance.bounded_load`: 1.25 as Mirrokni et al. and HAProxy's `hash-balance-factor 125`.
pub const BOUNDED_LOAD: f64 = 1.25;
/// `session.soap_max_bytes`.
pub const SOAP_MAX_BYTES: usize = 65536;
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

// ---- [health], [passive]
pub const HEALTH_ENABLED: bool = true;
pub const HEALTH_PATH: &str = "/health";
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(2);
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
pub const HEALTHY_THRESHOLD: u32 = 2;
pub const UNHEALTHY_THRESHOLD: u32 = 3;
/// `expect_status = "200-399"`: the lowest and the highest passing status.
pub const EXPECT_STATUS_LOW: u16 = 200;
pub const EXPECT_STATUS_HIGH: u16 = 399;
pub const PASSIVE_FAILURES: u32 = 5;
pub const EJECTION_TIME: Duration = Duration::from_secs(30);

// ---- [[backend]]
pub const WEIGHT: u32 = 1;
/// 0 = unlimited.
pub const BACKEND_MAX_CONNECTIONS: usize = 0;
pub const SLOW_START: Duration = Duration::ZERO;

// ---- [admin]
pub const ADMIN_LISTEN: &str = "127.0.0.1:9090";
/// Empty = no token required.
pub const ADMIN_TOKEN: &str = "";

// ---- [cluster]
pub const REDIS_URL: &str = "redis://127.0.0.1:6379/0";
pub const KEY_PREFIX: &str = "stickylb:";
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(200);

// ---- [log]
pub const LOG_LEVEL: &str = "info";
pub const ACCESS_LOG: bool = true;
pub const DEBUG_HEADERS: bool = false;
