//! The address of a backend: `host:port` or `http://host:port`.

use serde::{Deserialize, Deserializer};
use std::fmt;
use std::net::IpAddr;

/// The address of a backend: `host:port` or `http://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendAddr {
    /// `host:port`, as used in upstream URIs.
    pub authority: http::uri::Authority,
}

impl fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.authority.as_str())
    }
}

impl BackendAddr {
    pub fn parse(s: &str) -> Result<Self, String> {
        let rest = s.trim();
        if rest.starts_with("https://") {
            return Err(format!("invalid backend address {s:?}: https:// backends are not supported yet"));
        }
        let rest = rest.strip_prefix("http://").unwrap_or(rest).trim_end_matches('/');
        let authority: http::uri::Authority = rest
            .parse()
            .map_err(|_| format!("invalid backend address {s:?}: expected host:port or http://host:port"))?;
        if authority.port_u16().is_none() || authority.host().is_empty() || rest.contains('@') {
            return Err(format!("invalid backend address {s:?}: expected host:port (the port is required)"));
        }
        if authority.port_u16() == Some(0) {
            return Err(format!("invalid backend address {s:?}: port 0 is not a port to connect to"));
        }
        let host = authority.host().trim_start_matches('[').trim_end_matches(']');
        if host.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified()) {
            return Err(format!(
                "invalid backend address {s:?}: {host} means \"any address\" for listening, not an address to connect to"
            ));
        }
        Ok(Self { authority })
    }
}

impl<'de> Deserialize<'de> for BackendAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        BackendAddr::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::BackendAddr;

    #[test]
    fn addresses() {
        assert!(BackendAddr::parse("http://app:80").is_ok());
        assert!(BackendAddr::parse("[::1]:8080").is_ok());
        assert!(BackendAddr::parse("app").is_err());
        assert!(BackendAddr::parse("https://app:443").is_err());
        for bad in ["127.0.0.1:0", "app:0", "0.0.0.0:80", "[::]:80", "http://[::]:80", "http://0.0.0.0:80/"] {
            assert!(BackendAddr::parse(bad).is_err(), "{bad} accepted");
        }
        assert!(BackendAddr::parse("0.0.0.0:80").unwrap_err().contains("not an address to connect to"));
        assert!(BackendAddr::parse("app:0").unwrap_err().contains("port 0"));
    }
}
