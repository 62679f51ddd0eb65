//! The Redis role: [`RedisServer`], a real `redis-server` child process on a free loopback
//! port, in its own directory, without persistence; killed (SIGKILL, by its PID) on drop.
//! `redis-server` must be installed (scripts/test installs it): tests that need it fail
//! without it, they do not skip.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use super::net::{free_port, HOST};
use super::time::{ms, secs, sleep_ms, Deadline};

/// A `redis-server` child process on 127.0.0.1; killed (SIGKILL) on drop.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    /// Arguments after the common ones (`--replicaof`, cluster mode).
    extra: Vec<String>,
    /// A Sentinel (`redis-server sentinel.conf --sentinel`) with this config text.
    sentinel_conf: Option<String>,
}

fn redis_server_binary() -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("redis-server"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "redis-server is not installed, and the cluster tests need a real one: \
                 run scripts/test (it installs it) or `apt-get install redis-server`"
            )
        })
}

impl RedisServer {
    /// On a free port (another one if the port was taken before redis-server could bind it).
    pub async fn start() -> RedisServer {
        Self::start_with(&[]).await
    }

    /// With extra `redis-server` arguments (e.g. `["--replicaof", HOST, "6379"]`).
    pub async fn start_with(extra: &[&str]) -> RedisServer {
        Self::start_kind(extra.iter().map(|s| s.to_string()).collect(), None).await
    }

    /// A Sentinel watching the master `name` on `master_port` (quorum 2, down after 1 s).
    pub async fn start_sentinel(name: &str, master_port: u16) -> RedisServer {
        let conf = format!(
            "sentinel monitor {name} {HOST} {master_port} 2\n\
             sentinel down-after-milliseconds {name} 1000\n\
             sentinel failover-timeout {name} 10000\n\
             sentinel parallel-syncs {name} 1\n"
        );
        Self::start_kind(Vec::new(), Some(conf)).await
    }

    async fn start_kind(extra: Vec<String>, sentinel_conf: Option<String>) -> RedisServer {
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("tempdir");
            let (extra, sentinel_conf) = (extra.clone(), sentinel_conf.clone());
            let mut r = RedisServer { child: None, port: free_port(), dir, extra, sentinel_conf };
            if r.try_spawn().await {
                return r;
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    pub async fn start_on(port: u16) -> RedisServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut r = RedisServer { child: None, port, dir, extra: Vec::new(), sentinel_conf: None };
        r.spawn().await;
        r
    }

    pub async fn spawn(&mut self) {
        assert!(self.try_spawn().await, "redis-server exited at start on port {}: {}", self.port, self.log());
    }

    /// Starts redis-server and waits until it answers; false if it exited (port taken).
    pub async fn try_spawn(&mut self) -> bool {
        assert!(self.child.is_none(), "redis-server already running");
        let log = std::fs::File::create(self.dir.path().join("redis.log")).expect("redis log");
        let mut cmd = Command::new(redis_server_binary());
        if let Some(conf) = &self.sentinel_conf {
            // Sentinel rewrites its file: it lives in our directory.
            let path = self.dir.path().join("sentinel.conf");
            std::fs::write(&path, conf).expect("write sentinel.conf");
            cmd.arg(path).arg("--sentinel");
        }
        cmd.args(["--port", &self.port.to_string(), "--bind", HOST]);
        if self.sentinel_conf.is_none() {
            cmd.args(["--save", "", "--appendonly", "no"]);
        }
        let child = cmd
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let dl = Deadline::after(secs(10));
        while !self.answers_ping().await {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return false;
            }
            assert!(!dl.expired(), "redis-server did not answer on port {} within 10 s: {}", self.port, self.log());
            sleep_ms(20).await;
        }
        true
    }

    pub async fn answers_ping(&self) -> bool {
        let Ok(client) = redis::Client::open(self.url()) else { return false };
        let ping = async {
            let mut c = client.get_multiplexed_async_connection().await?;
            redis::cmd("PING").query_async::<String>(&mut c).await
        };
        matches!(tokio::time::timeout(ms(500), ping).await, Ok(Ok(_)))
    }

    pub fn url(&self) -> String {
        format!("redis://{HOST}:{}/0", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// Like a crash: SIGKILL, then reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start again on the same port (empty: nothing is persisted).
    pub async fn restart(&mut self) {
        self.spawn().await;
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Runs one command with a fresh connection.
    pub async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        let client = redis::Client::open(self.url())?;
        let run = async {
            let mut c = client.get_multiplexed_async_connection().await?;
            cmd.query_async(&mut c).await
        };
        tokio::time::timeout(secs(2), run).await.unwrap_or_else(|_| Err(std::io::Error::other("timed out").into()))
    }

    /// Keys matching `pattern`, read with a fresh connection.
    pub async fn keys(&self, pattern: &str) -> Vec<String> {
        let client = redis::Client::open(self.url()).expect("redis url");
        let mut c = client.get_multiplexed_async_connection().await.expect("connect to redis-server");
        redis::cmd("KEYS").arg(pattern).query_async(&mut c).await.expect("KEYS")
    }
}

impl RedisServer {
    /// `SET key value PX ms` with a fresh connection (nothing published).
    pub async fn set(&self, key: &str, value: &str, ttl_ms: u64) {
        let client = redis::Client::open(self.url()).expect("redis url");
        let mut c = client.get_multiplexed_async_connection().await.expect("connect to redis-server");
        redis::cmd("SET").arg(key).arg(value).arg("PX").arg(ttl_ms).query_async::<()>(&mut c).await.expect("SET");
    }
}

impl RedisServer {
    /// `GET key` with a fresh connection.
    pub async fn get(&self, key: &str) -> Option<String> {
        let client = redis::Client::open(self.url()).expect("redis url");
        let mut c = client.get_multiplexed_async_connection().await.expect("connect to redis-server");
        redis::cmd("GET").arg(key).query_async(&mut c).await.expect("GET")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
