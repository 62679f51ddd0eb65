//! How the store reaches Redis: one server (`cluster.redis_url`), the master that Redis
//! Sentinel names (`cluster.sentinels` + `cluster.sentinel_master`), or a Redis Cluster
//! (`cluster.redis_cluster`). The rest of the store sees one [`Conn`] either way.
//!
//! - **One server**: a `ConnectionManager` that reconnects to the same address by itself.
//! - **Sentinel**: the master's address is asked of the sentinels (`SENTINEL
//!   get-master-addr-by-name`, each in turn until one answers), then a `ConnectionManager` to
//!   it. redis-rs does not follow a failover (redis-rs#1438), so the store does: a call that
//!   fails on a lost connection, or is refused with `READONLY` (the old master came back as a
//!   replica), drops the connection, and the next call asks the sentinels again. Meanwhile the
//!   link is down and requests use the local table, so a failover costs no request; the first
//!   probe after the sentinels promoted a replica finds it. The database number and password
//!   still come from `redis_url`.
//! - **Cluster**: redis-rs's `cluster_async` connection, which follows slots and failovers by
//!   itself. What must be atomic touches one key (a pin and its compare-and-set script; the
//!   group's hashes), and the event channel is classic pub/sub, which a cluster delivers to
//!   subscribers on every node: the listener subscribes on any one of the seed nodes.

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Client, ConnectionAddr, ConnectionInfo, ErrorKind, ProtocolVersion, RedisError, RedisFuture, RedisResult};
use redis::{Cmd, IntoConnectionInfo, Pipeline, Value};
use std::sync::Arc;
use std::time::Duration;

use crate::config::ClusterConfig;

/// How long (re)connecting may take in the background.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A connection to whatever `[cluster]` names; cheap to clone (multiplexed).
#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Where Redis is.
pub(super) enum Topology {
    Single(Client),
    Sentinel { sentinels: Vec<Client>, master: String, info: ConnectionInfo },
    Cluster { client: ClusterClient, seeds: Vec<ConnectionInfo> },
}

impl Topology {
    pub fn new(cluster: &ClusterConfig) -> RedisResult<Topology> {
        let info = cluster.redis_url.as_str().into_connection_info()?;
        let at = |node: &str| -> RedisResult<ConnectionInfo> {
            let (host, port) = node.rsplit_once(':').ok_or_else(|| invalid(node))?;
            let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
            let port = port.parse().map_err(|_| invalid(node))?;
            Ok(ConnectionInfo { addr: ConnectionAddr::Tcp(host, port), redis: info.redis.clone() })
        };
        if !cluster.sentinels.is_empty() {
            let sentinels = cluster
                .sentinels
                .iter()
                .map(|s| {
                    // A sentinel has no database and (usually) not the master's password.
                    let mut i = at(s)?;
                    i.redis = Default::default();
                    Client::open(i)
                })
                .collect::<RedisResult<_>>()?;
            return Ok(Topology::Sentinel { sentinels, master: cluster.sentinel_master.clone(), info });
        }
        if !cluster.redis_cluster.is_empty() {
            let seeds: Vec<ConnectionInfo> = cluster.redis_cluster.iter().map(|n| at(n)).collect::<RedisResult<_>>()?;
            let client = ClusterClient::builder(seeds.clone())
                .connection_timeout(CONNECT_TIMEOUT)
                .response_timeout(cluster.redis_timeout)
                .retries(1)
                .build()?;
            return Ok(Topology::Cluster { client, seeds });
        }
        Ok(Topology::Single(Client::open(info)?))
    }

    /// A new connection for the request path.
    pub async fn connect(&self) -> RedisResult<Conn> {
        // No response timeout of the client's own: every call is bounded by
        // `cluster.redis_timeout` around it (`Inner::call`), and a second timer per command
        // cost a new session ~600 instructions.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_number_of_retries(1)
            .set_max_delay(500);
        match self {
            Topology::Single(client) => {
                Ok(Conn::Single(ConnectionManager::new_with_config(client.clone(), config).await?))
            }
            Topology::Sentinel { .. } => {
                let client = Client::open(self.master().await?)?;
                Ok(Conn::Single(ConnectionManager::new_with_config(client, config).await?))
            }
            Topology::Cluster { client, .. } => Ok(Conn::Cluster(client.get_async_connection().await?)),
        }
    }

    /// After this error, should the next call connect anew? Only with Sentinel (the others
    /// reconnect by themselves): the master may have moved.
    pub fn should_reconnect(&self, e: &RedisError) -> bool {
        self.reconnects_after_silence()
            && (e.is_io_error()
                || e.is_connection_dropped()
                || e.is_connection_refusal()
                || e.is_timeout()
                || matches!(e.kind(), ErrorKind::ReadOnly | ErrorKind::MasterDown))
    }

    /// After a call got no answer in time, should the next one connect anew? Only with
    /// Sentinel: a master that stopped answering may have been replaced (and a stopped one
    /// never answers with an error that [`Self::should_reconnect`] would see).
    pub fn reconnects_after_silence(&self) -> bool {
        matches!(self, Topology::Sentinel { .. })
    }

    /// A RESP3 client for the event listener: the server, the current master, or one of the
    /// cluster's seed nodes (`attempt` picks which, so that a dead seed is not tried forever).
    pub async fn events_client(&self, attempt: u32) -> RedisResult<Client> {
        let mut info = match self {
            Topology::Single(client) => client.get_connection_info().clone(),
            Topology::Sentinel { .. } => self.master().await?,
            Topology::Cluster { seeds, .. } => {
                let mut seed = seeds[attempt as usize % seeds.len()].clone();
                seed.redis.db = 0;
                seed
            }
        };
        info.redis.protocol = ProtocolVersion::RESP3;
        Client::open(info)
    }

    /// The master's address as the first sentinel that answers says, with `redis_url`'s
    /// database and password.
    async fn master(&self) -> RedisResult<ConnectionInfo> {
        let Topology::Sentinel { sentinels, master, info } = self else { unreachable!("not Sentinel") };
        let mut last = None;
        for sentinel in sentinels {
            let ask = async {
                let mut c = sentinel.get_multiplexed_async_connection().await?;
                let addr: Option<(String, u16)> =
                    redis::cmd("SENTINEL").arg("get-master-addr-by-name").arg(master).query_async(&mut c).await?;
                addr.ok_or_else(|| RedisError::from((ErrorKind::MasterNameNotFoundBySentinel, "unknown master name")))
            };
            match tokio::time::timeout(CONNECT_TIMEOUT, ask).await {
                Ok(Ok((host, port))) => {
                    return Ok(ConnectionInfo { addr: ConnectionAddr::Tcp(host, port), redis: info.redis.clone() })
                }
                Ok(Err(e)) => last = Some(e),
                Err(_) => {
                    last = Some(RedisError::from(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "sentinel did not answer in time",
                    )))
                }
            }
        }
        Err(last.unwrap_or_else(|| RedisError::from((ErrorKind::MasterNameNotFoundBySentinel, "no sentinel"))))
    }
}

fn invalid(node: &str) -> RedisError {
    RedisError::from((ErrorKind::InvalidClientConfig, "not host:port", node.to_owned()))
}

/// The current connection, made on first use and again after [`Connector::reset`].
pub(super) struct Connector {
    pub topology: Topology,
    current: arc_swap::ArcSwapOption<Conn>,
    /// One connect at a time; a tokio Mutex because connecting awaits.
    making: tokio::sync::Mutex<()>,
}

impl Connector {
    pub fn new(topology: Topology) -> Connector {
        Connector { topology, current: Default::default(), making: tokio::sync::Mutex::new(()) }
    }

    pub async fn get(&self) -> RedisResult<Conn> {
        if let Some(c) = self.current.load_full() {
            return Ok((*c).clone());
        }
        let _one = self.making.lock().await;
        if let Some(c) = self.current.load_full() {
            return Ok((*c).clone());
        }
        let conn = self.topology.connect().await?;
        self.current.store(Some(Arc::new(conn.clone())));
        Ok(conn)
    }

    /// Forget the connection (Sentinel: the master may have moved).
    pub fn reset(&self) {
        self.current.store(None);
    }
}
