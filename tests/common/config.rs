//! The balancer's config: [`balancer`] gives a [`BalancerBuilder`] around some backends, whose
//! `set` / `backend_set` / `raw` calls override the defaults below; `render` writes the TOML.
//! Starting it is the balancer role's business ([`BalancerBuilder::start`] in-process,
//! [`BalancerBuilder::start_binary`] as the real `stickylb` process).

use std::collections::BTreeMap;

use super::backend::TestBackend;
use super::net::HOST;

/// A session secret of more than 32 bytes (insert mode needs >= 32).
pub const SECRET: &str = "test-secret-0123456789abcdef0123456789abcdef";
/// Another valid secret, for key-rotation tests.
pub const SECRET_B: &str = "second-secret-fedcba9876543210fedcba9876543210";
/// The default insert-mode cookie name.
pub const COOKIE: &str = "STICKYLB";

/// A TOML value for [`BalancerBuilder::set`].
#[derive(Clone, Debug)]
pub enum Toml {
    Str(String),
    Int(i64),
    Bool(bool),
    /// Written verbatim (arrays, inline tables).
    Raw(String),
}

impl Toml {
    fn render(&self) -> String {
        match self {
            // TOML basic strings accept JSON's escapes for the text these tests write.
            Toml::Str(s) => serde_json::to_string(s).unwrap(),
            Toml::Int(i) => i.to_string(),
            Toml::Bool(b) => b.to_string(),
            Toml::Raw(r) => r.clone(),
        }
    }
}

impl From<&str> for Toml {
    fn from(s: &str) -> Self {
        Toml::Str(s.to_string())
    }
}
impl From<String> for Toml {
    fn from(s: String) -> Self {
        Toml::Str(s)
    }
}
impl From<i64> for Toml {
    fn from(i: i64) -> Self {
        Toml::Int(i)
    }
}
impl From<i32> for Toml {
    fn from(i: i32) -> Self {
        Toml::Int(i as i64)
    }
}
impl From<u32> for Toml {
    fn from(i: u32) -> Self {
        Toml::Int(i as i64)
    }
}
impl From<bool> for Toml {
    fn from(b: bool) -> Self {
        Toml::Bool(b)
    }
}

/// A TOML array of strings.
pub fn strings(items: &[&str]) -> Toml {
    let inner: Vec<String> = items.iter().map(|s| Toml::from(*s).render()).collect();
    Toml::Raw(format!("[{}]", inner.join(", ")))
}

/// Order in which config sections are written.
const SECTIONS: [&str; 8] = ["server", "session", "balance", "health", "passive", "admin", "cluster", "log"];

/// One `[[backend]]`: name, address, extra keys.
type BackendEntry = (String, String, Vec<(String, Toml)>);

/// Builds a stickylb config around some backends.
pub struct BalancerBuilder {
    sections: BTreeMap<String, Vec<(String, Toml)>>,
    backends: Vec<BackendEntry>,
    raw: String,
}

/// A balancer in front of `backends` (in this order), with loopback listen/admin ports,
/// `shutdown_timeout = "10s"` and a fixed [`SECRET`]; override anything with `set`.
pub fn balancer(backends: &[&TestBackend]) -> BalancerBuilder {
    let mut b = BalancerBuilder { sections: BTreeMap::new(), backends: Vec::new(), raw: String::new() };
    for be in backends {
        b = b.backend_at(be.name(), &be.address());
    }
    b.set("server.shutdown_timeout", "10s").set("session.secret", SECRET)
}

/// Learn mode on the servlet cookie `JSESSIONID`, round robin: the setup of the
/// application-cookie tests.
pub fn learn_jsessionid(backends: &[&TestBackend]) -> BalancerBuilder {
    balancer(backends)
        .set("session.mode", "learn")
        .set("session.cookie", "JSESSIONID")
        .set("balance.algorithm", "round_robin")
}

impl BalancerBuilder {
    /// Sets `section.key = value` (replacing an earlier value of the same key).
    pub fn set(mut self, dotted: &str, value: impl Into<Toml>) -> Self {
        let (section, key) = dotted.rsplit_once('.').unwrap_or_else(|| panic!("set({dotted:?}): want section.key"));
        let entries = self.sections.entry(section.to_string()).or_default();
        entries.retain(|(k, _)| k != key);
        entries.push((key.to_string(), value.into()));
        self
    }

    /// Removes `section.key` (e.g. to drop the default secret).
    pub fn unset(mut self, dotted: &str) -> Self {
        if let Some((section, key)) = dotted.rsplit_once('.') {
            if let Some(entries) = self.sections.get_mut(section) {
                entries.retain(|(k, _)| k != key);
            }
        }
        self
    }

    /// Sets a key of one `[[backend]]` entry.
    pub fn backend_set(mut self, name: &str, key: &str, value: impl Into<Toml>) -> Self {
        let b =
            self.backends.iter_mut().find(|(n, _, _)| n == name).unwrap_or_else(|| panic!("no backend named {name}"));
        b.2.retain(|(k, _)| k != key);
        b.2.push((key.to_string(), value.into()));
        self
    }

    /// Adds a `[[backend]]` at an arbitrary address (e.g. a port nobody listens on).
    pub fn backend_at(mut self, name: &str, address: &str) -> Self {
        self.backends.push((name.to_string(), address.to_string(), Vec::new()));
        self
    }

    /// Appends raw TOML text (for sections not otherwise set through this builder).
    pub fn raw(mut self, toml: &str) -> Self {
        self.raw.push_str(toml);
        self.raw.push('\n');
        self
    }

    /// The config text for the given ports.
    pub fn render(&self, listen_port: u16, admin_port: u16) -> String {
        let mut sections = self.sections.clone();
        let srv = sections.entry("server".into()).or_default();
        srv.retain(|(k, _)| k != "listen");
        srv.insert(0, ("listen".into(), Toml::from(format!("{HOST}:{listen_port}"))));
        let adm = sections.entry("admin".into()).or_default();
        adm.retain(|(k, _)| k != "listen");
        adm.insert(0, ("listen".into(), Toml::from(format!("{HOST}:{admin_port}"))));

        let mut out = String::new();
        let mut names: Vec<String> = SECTIONS.iter().map(|s| s.to_string()).collect();
        names.extend(sections.keys().filter(|k| !SECTIONS.contains(&k.as_str())).cloned());
        for name in names {
            let Some(entries) = sections.get(&name) else {
                continue;
            };
            if entries.is_empty() {
                continue;
            }
            out.push_str(&format!("[{name}]\n"));
            for (k, v) in entries {
                out.push_str(&format!("{k} = {}\n", v.render()));
            }
            out.push('\n');
        }
        for (name, address, extra) in &self.backends {
            out.push_str("[[backend]]\n");
            out.push_str(&format!("name = {}\n", Toml::from(name.as_str()).render()));
            out.push_str(&format!("address = {}\n", Toml::from(address.as_str()).render()));
            for (k, v) in extra {
                out.push_str(&format!("{k} = {}\n", v.render()));
            }
            out.push('\n');
        }
        out.push_str(&self.raw);
        out
    }
}
