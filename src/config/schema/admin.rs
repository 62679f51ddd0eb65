//! `[admin]`: where the admin API, `/metrics`, `/healthz` and the status page listen, and
//! their bearer token.

use super::de::optional_addr;
use super::defaults;
use serde::Deserialize;
use std::net::SocketAddr;

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
        Self {
            listen: Some(defaults::ADMIN_LISTEN.parse().expect("valid default")),
            token: defaults::ADMIN_TOKEN.into(),
        }
    }
}
