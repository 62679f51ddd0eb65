//! A small DSL for stickylb's end-to-end tests, so each test reads like prose; one file per
//! role (after linkerd2-proxy's integration DSL). Everything is re-exported here, so a test
//! says `use common::*;` and finds:
//!
//! - `backend.rs`: [`TestBackend`], a named HTTP/1.1 backend that echoes what it saw and can
//!   be stopped and restarted like a process; [`refs`].
//! - `config.rs`: [`balancer`] / [`BalancerBuilder`], the config around some backends.
//! - `balancer.rs`: [`Balancer`], URLs and admin API helpers; `in_process.rs` starts it in
//!   this process through the library ([`BalancerBuilder::start`], the default), `binary.rs`
//!   as the real binary ([`BalancerBuilder::start_binary`], for signals, logs, exit codes).
//! - `client.rs`: [`User`] (a cookie-keeping client), [`plain_client`], [`Reply`], cookies.
//! - `raw.rs`: [`RawConn`], byte-exact HTTP/1.1.
//! - `redis_server.rs`: [`RedisServer`], a real `redis-server` on loopback.
//! - `h2.rs`: [`H2Conn`], HTTP/2 (h2c or TLS) that sends header fields exactly as given.
//! - `tls.rs`: [`TestCert`], self-signed certificates for `[server.tls]`; [`tls_connect`].
//! - `metrics.rs`: [`metric_value`] and a Prometheus text-format checker.
//! - `cli.rs`: [`run_cli`]; `net.rs`: [`HOST`], [`free_port`]; `time.rs`: [`Deadline`];
//!   `data.rs`: deterministic bytes, hashes, [`counts`].
//!
//! Everything talks to 127.0.0.1 only, every wait has a deadline, and every task, thread or
//! process started here is stopped when its owner is dropped.
#![allow(dead_code, unused_imports)]

mod backend;
mod balancer;
mod binary;
mod cli;
mod client;
mod config;
mod data;
mod h2;
mod in_process;
mod metrics;
mod net;
mod raw;
mod redis_server;
mod time;
mod tls;

pub use backend::*;
pub use balancer::*;
pub use cli::*;
pub use client::*;
pub use config::*;
pub use data::*;
pub use h2::*;
pub use metrics::*;
pub use net::*;
pub use raw::*;
pub use redis_server::*;
pub use time::*;
pub use tls::*;
