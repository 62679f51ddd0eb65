//! What `stickylb health` probes for a config: the admin API's `/healthz`, or, with the admin
//! API off, the first client listener. A listener on an unspecified address (`0.0.0.0`, `::`)
//! is probed on the loopback address of its family.

use super::Config;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The probe `stickylb health` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthProbe {
    /// `GET /healthz` on the admin listener; healthy = 200.
    Admin(SocketAddr),
    /// The first client listener (admin API off): plain HTTP, healthy = any HTTP answer; with
    /// TLS on, healthy = the TCP connection is accepted.
    Listener { addr: SocketAddr, tls: bool },
}

impl HealthProbe {
    /// The probe for a config.
    pub fn for_config(config: &Config) -> HealthProbe {
        match config.admin.listen {
            Some(addr) => HealthProbe::Admin(reachable(addr)),
            None => {
                let addr =
                    config.server.listen.first().copied().unwrap_or_else(|| {
                        crate::config::defaults::LISTEN.parse().expect("valid default listen address")
                    });
                HealthProbe::Listener { addr: reachable(addr), tls: config.server.tls.is_some() }
            }
        }
    }

    /// The address probed.
    pub fn addr(&self) -> SocketAddr {
        match *self {
            HealthProbe::Admin(addr) | HealthProbe::Listener { addr, .. } => addr,
        }
    }
}

/// `addr`, with an unspecified IP replaced by the loopback address of its family.
fn reachable(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

#[cfg(test)]
mod tests {
    use super::super::tests::MIN;
    use super::*;
    use crate::config::parse;

    fn probe(extra: &str) -> HealthProbe {
        HealthProbe::for_config(&parse(&format!("{extra}\n{MIN}"), "t.toml").unwrap())
    }

    #[test]
    fn the_admin_listener_is_probed_when_there_is_one() {
        assert_eq!(probe(""), HealthProbe::Admin("127.0.0.1:9090".parse().unwrap()));
        assert_eq!(probe("[admin]\nlisten = \"0.0.0.0:9191\""), HealthProbe::Admin("127.0.0.1:9191".parse().unwrap()));
        assert_eq!(probe("[admin]\nlisten = \"[::]:9191\""), HealthProbe::Admin("[::1]:9191".parse().unwrap()));
        assert_eq!(probe("[admin]\nlisten = \"10.1.2.3:9191\"").addr(), "10.1.2.3:9191".parse().unwrap());
    }

    #[test]
    fn without_admin_the_first_client_listener_is_probed() {
        let p = probe("[server]\nlisten = [\"0.0.0.0:8081\", \"127.0.0.1:8082\"]\n[admin]\nlisten = \"\"");
        assert_eq!(p, HealthProbe::Listener { addr: "127.0.0.1:8081".parse().unwrap(), tls: false });
    }
}
