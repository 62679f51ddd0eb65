//! `[log]`: level (a tracing level or an `EnvFilter` directive list), text or JSON lines, the
//! access log, and debug headers.

use super::defaults;
use serde::Deserialize;

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
        Self {
            level: defaults::LOG_LEVEL.into(),
            format: LogFormat::default(),
            access_log: defaults::ACCESS_LOG,
            debug_headers: defaults::DEBUG_HEADERS,
        }
    }
}
