//! `[[backend]]`: one upstream server, its weight, limits, admin state and health overrides.

use super::defaults;
use super::health::HealthOverride;
use crate::config::BackendAddr;
use serde::Deserialize;
use std::time::Duration;
use toml::Spanned;

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
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    #[serde(default)]
    pub state: AdminState,
    #[serde(default = "default_slow_start", with = "humantime_serde")]
    pub slow_start: Duration,
    #[serde(default)]
    pub health: HealthOverride,
    /// The servlet container's `jvmRoute` (Tomcat, JBoss, WildFly): a learn-mode session id
    /// `ID.ROUTE` goes to the backend with this route.
    #[serde(default)]
    pub route: Option<Spanned<String>>,
}

fn default_weight() -> Spanned<u32> {
    Spanned::new(0..0, defaults::WEIGHT)
}

fn default_max_connections() -> usize {
    defaults::BACKEND_MAX_CONNECTIONS
}

fn default_slow_start() -> Duration {
    defaults::SLOW_START
}

impl BackendConfig {
    pub fn name(&self) -> &str {
        self.name.get_ref()
    }
}
