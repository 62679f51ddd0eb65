//! Small deserializers shared by the sections: listen lists, and `""` meaning "none" for
//! durations, addresses and paths.

use serde::{Deserialize, Deserializer};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// `listen = "a:1"` or `listen = ["a:1", "b:2"]`.
pub(super) fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let list = match OneOrMany::deserialize(d)
        .map_err(|_| serde::de::Error::custom("expected an address \"host:port\" or a list of them"))?
    {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    };
    if list.is_empty() {
        return Err(serde::de::Error::custom("at least one listen address is required"));
    }
    list.iter()
        .map(|s| {
            s.parse::<SocketAddr>()
                .map_err(|_| serde::de::Error::custom(format!("invalid listen address {s:?}: expected IP:PORT")))
        })
        .collect()
}

/// `""` = none, otherwise a human duration.
pub(super) fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    if s.trim().is_empty() {
        return Ok(None);
    }
    humantime::parse_duration(s.trim())
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("invalid duration {s:?}: {e}")))
}

/// `""` = none, otherwise an IP:PORT.
pub(super) fn optional_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let s = String::deserialize(d)?;
    if s.trim().is_empty() {
        return Ok(None);
    }
    s.trim()
        .parse()
        .map(Some)
        .map_err(|_| serde::de::Error::custom(format!("invalid address {s:?}: expected IP:PORT or \"\"")))
}

/// `""` = none.
pub(super) fn optional_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let s = String::deserialize(d)?;
    Ok((!s.trim().is_empty()).then(|| PathBuf::from(s)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct T {
        #[serde(default, deserialize_with = "one_or_many")]
        listen: Vec<SocketAddr>,
        #[serde(default, deserialize_with = "optional_duration")]
        age: Option<Duration>,
        #[serde(default, deserialize_with = "optional_addr")]
        admin: Option<SocketAddr>,
        #[serde(default, deserialize_with = "optional_path")]
        file: Option<PathBuf>,
    }

    fn t(text: &str) -> Result<T, String> {
        toml::from_str(text).map_err(|e| e.message().to_string())
    }

    #[test]
    fn listen_is_one_address_or_a_list() {
        assert_eq!(t("listen = \"127.0.0.1:1\"").unwrap().listen.len(), 1);
        assert_eq!(t("listen = [\"127.0.0.1:1\", \"[::1]:2\"]").unwrap().listen.len(), 2);
        assert!(t("listen = []").unwrap_err().contains("at least one"));
        assert!(t("listen = \"localhost:1\"").unwrap_err().contains("expected IP:PORT"));
        assert!(t("listen = 5").unwrap_err().contains("or a list of them"));
    }

    #[test]
    fn empty_strings_mean_none() {
        let v = t("age = \"\"\nadmin = \" \"\nfile = \"\"").unwrap();
        assert_eq!((v.age, v.admin, v.file), (None, None, None));
        let v = t("age = \"8h\"\nadmin = \"127.0.0.1:9\"\nfile = \"p\"").unwrap();
        assert_eq!(v.age, Some(Duration::from_secs(8 * 3600)));
        assert_eq!(v.admin, Some("127.0.0.1:9".parse().unwrap()));
        assert_eq!(v.file, Some(PathBuf::from("p")));
        assert!(t("age = \"soon\"").unwrap_err().contains("invalid duration"));
        assert!(t("admin = \"x\"").unwrap_err().contains("expected IP:PORT or \"\""));
    }
}
