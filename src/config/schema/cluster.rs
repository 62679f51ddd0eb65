//! `[cluster]`: where pins live (this process's memory, or Redis shared by every instance),
//! the memory store's snapshot file, how Redis is found (one server, through Sentinel, or a
//! Redis Cluster), and this instance's name in the group.

use super::de::optional_path;
use super::defaults;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

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
    /// This instance's name in the group (`GET /api/cluster`); empty = host name and the
    /// first listen port.
    pub instance_name: String,
    /// Sentinels (`host:port`) that know the master named `sentinel_master`; empty = connect
    /// to `redis_url`'s host directly. The database and password still come from `redis_url`.
    pub sentinels: Vec<String>,
    pub sentinel_master: String,
    /// Seed nodes (`host:port`) of a Redis Cluster; empty = not a cluster.
    pub redis_cluster: Vec<String>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            store: StoreKind::default(),
            redis_url: defaults::REDIS_URL.into(),
            key_prefix: defaults::KEY_PREFIX.into(),
            snapshot_file: None,
            redis_timeout: defaults::REDIS_TIMEOUT,
            instance_name: String::new(),
            sentinels: Vec::new(),
            sentinel_master: String::new(),
            redis_cluster: Vec::new(),
        }
    }
}
