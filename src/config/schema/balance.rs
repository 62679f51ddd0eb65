//! `[balance]`: how a new (or reassigned) session picks a backend, and connect retries.

use super::defaults;
use serde::Deserialize;
use std::time::Duration;

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
    /// Consistent hashing with bounded loads (hash), and the load bound of preferred
    /// affinity: at most this factor times the mean in-flight requests per weight.
    pub bounded_load: f64,
}

impl Default for BalanceConfig {
    fn default() -> Self {
        Self {
            algorithm: Algorithm::default(),
            retries: defaults::RETRIES,
            connect_timeout: defaults::CONNECT_TIMEOUT,
            bounded_load: defaults::BOUNDED_LOAD,
        }
    }
}
