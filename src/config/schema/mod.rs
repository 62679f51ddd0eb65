//! The config schema: serde structs with named defaults, one file per section. Unknown keys
//! are rejected everywhere (`deny_unknown_fields`), durations are human strings (`"250ms"`,
//! `"30s"`), and values that a later check must point at keep their source span
//! (`toml::Spanned`). Everything is re-exported at `crate::config::*`.

mod admin;
mod backend;
mod balance;
mod cluster;
mod de;
pub mod defaults;
mod health;
mod log;
mod server;
mod session;

pub use admin::AdminConfig;
pub use backend::{AdminState, BackendConfig};
pub use balance::{Algorithm, BalanceConfig};
pub use cluster::{ClusterConfig, StoreKind};
pub use health::{HealthConfig, HealthOverride, PassiveConfig, StatusRange};
pub use log::{LogConfig, LogFormat};
pub use server::{ServerConfig, TlsConfig};
pub use session::{Affinity, OnBackendDown, SameSite, SessionConfig, SessionMode};

use serde::Deserialize;

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

#[cfg(test)]
mod tests {
    use super::*;

    /// The example config shows every key with its default: it must parse to `Config::default()`
    /// section by section (backends aside), so the file and the named defaults cannot drift.
    #[test]
    fn the_example_config_shows_the_defaults() {
        let text = include_str!("../../../config/stickylb.toml");
        let example: Config = toml::from_str(text).expect("the example config parses");
        let default = Config::default();
        let sections = |c: &Config| {
            [
                format!("{:?}", c.server),
                format!("{:?}", c.session),
                format!("{:?}", c.balance),
                format!("{:?}", c.health),
                format!("{:?}", c.passive),
                format!("{:?}", c.admin),
                format!("{:?}", c.cluster),
                format!("{:?}", c.log),
            ]
        };
        for (e, d) in sections(&example).iter().zip(sections(&default).iter()) {
            assert_eq!(e, d);
        }
        let b = &example.backends[0];
        assert_eq!(*b.weight.get_ref(), defaults::WEIGHT);
        assert_eq!(b.max_connections, defaults::BACKEND_MAX_CONNECTIONS);
        assert_eq!(b.slow_start, defaults::SLOW_START);
    }
}
