//! The config fingerprint: a hash of what every instance of a group must share, so that an
//! instance started with another backend list, cookie or secret shows up as a mismatch
//! instead of silently routing the same session elsewhere.
//!
//! In it: every backend's name, address and route (in name order, so that the order of the
//! file does not matter), the session mode and cookie name, a hash of the signing secrets as
//! resolved after validation (current and previous; never the secrets themselves), and
//! `cluster.key_prefix`. Not in it: what may differ per instance (listen and admin addresses,
//! weights, limits, timeouts, health checks, admin state, log settings).

use crate::config::{Config, SessionMode};
use sha2::{Digest, Sha256};
use std::sync::OnceLock;

/// Hex digits of the fingerprint shown (64 bits: enough to tell configs apart, short to read).
const HEX_DIGITS: usize = 16;

/// The fingerprint of `config`, as lowercase hex.
pub fn fingerprint(config: &Config) -> String {
    let mut h = Sha256::new();
    let mut field = |label: &str, value: &[u8]| {
        // Length-prefixed, so that no two different inputs concatenate to the same bytes.
        for part in [label.as_bytes(), value] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
    };
    let mut backends: Vec<_> = config.backends.iter().collect();
    backends.sort_by(|a, b| a.name().cmp(b.name()));
    for b in backends {
        field("backend", b.name().as_bytes());
        field("address", b.address.to_string().as_bytes());
        // Two instances that map a jvmRoute to different backends must not look consistent.
        field("route", b.route.as_ref().map_or("", |r| r.get_ref().as_str()).as_bytes());
    }
    field("mode", format!("{:?}", config.session.mode).as_bytes());
    field("cookie", config.session.cookie.as_bytes());
    field("secrets", &secrets_hash(config));
    field("key_prefix", config.cluster.key_prefix.as_bytes());
    hex(&h.finalize()[..HEX_DIGITS / 2])
}

/// A hash of the signing secrets as resolved. Without a configured secret an insert-mode
/// instance signs with a random per-process key that no other instance can verify, so it gets
/// a per-process value too: it never looks consistent with anyone.
fn secrets_hash(config: &Config) -> Vec<u8> {
    static PROCESS_NONCE: OnceLock<u64> = OnceLock::new();
    let s = &config.session;
    let mut h = Sha256::new();
    h.update(b"stickylb group secrets v1");
    match &s.resolved_secret {
        Some(secret) => {
            h.update((secret.len() as u64).to_be_bytes());
            h.update(secret.as_bytes());
        }
        None if s.mode == SessionMode::Insert => {
            h.update(b"random key ");
            h.update(PROCESS_NONCE.get_or_init(rand::random).to_be_bytes());
        }
        None => h.update(b"none"),
    }
    for p in &s.previous_secrets {
        h.update((p.get_ref().len() as u64).to_be_bytes());
        h.update(p.get_ref().as_bytes());
    }
    h.finalize().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef-group";

    fn config(extra: &str, backends: &[(&str, &str)]) -> Config {
        let mut text = format!("[session]\nsecret = \"{SECRET}\"\n{extra}\n");
        for (name, addr) in backends {
            text.push_str(&format!("[[backend]]\nname = \"{name}\"\naddress = \"{addr}\"\n"));
        }
        crate::config::parse(&text, "t").unwrap()
    }

    const AB: [(&str, &str); 2] = [("a", "127.0.0.1:9001"), ("b", "127.0.0.1:9002")];

    #[test]
    fn the_same_shared_settings_give_the_same_fingerprint_whatever_differs_per_instance() {
        let one = fingerprint(&config("", &AB));
        assert_eq!(one.len(), HEX_DIGITS);
        assert!(one.bytes().all(|b| b.is_ascii_hexdigit()));
        let reordered = fingerprint(&config("[balance]\nalgorithm = \"hash\"\n", &[AB[1], AB[0]]));
        assert_eq!(one, reordered, "backend order, algorithm: per instance");
    }

    #[test]
    fn backends_addresses_mode_cookie_secrets_and_prefix_each_change_it() {
        let base = fingerprint(&config("", &AB));
        let others = [
            config("", &AB[..1]),
            config("", &[AB[0], ("b", "127.0.0.1:9003")]),
            config("", &[AB[0], ("c", "127.0.0.1:9002")]),
            config("[cluster]\nkey_prefix = \"other:\"", &AB),
        ];
        for (i, c) in others.iter().enumerate() {
            assert_ne!(fingerprint(c), base, "variant {i}");
        }
        let mut c = config("", &AB);
        c.session.cookie = "OTHER".into();
        assert_ne!(fingerprint(&c), base, "cookie name");
        let mut c = config("", &AB);
        c.session.mode = SessionMode::Learn;
        assert_ne!(fingerprint(&c), base, "mode");
        let mut c = config("", &AB);
        c.session.resolved_secret = Some(format!("{SECRET}-rotated"));
        assert_ne!(fingerprint(&c), base, "secret");
        let mut c = config("", &AB);
        c.session.previous_secrets.push(toml::Spanned::new(0..0, SECRET.into()));
        assert_ne!(fingerprint(&c), base, "previous secrets");
        let mut c = config("", &AB);
        c.backends[0].route = Some(toml::Spanned::new(0..0, "node1".into()));
        assert_ne!(fingerprint(&c), base, "a servlet route");
    }

    #[test]
    fn the_fingerprint_does_not_reveal_the_secret() {
        let c = config("", &AB);
        assert!(!fingerprint(&c).contains(SECRET));
        assert!(!hex(&secrets_hash(&c)).contains(&hex(SECRET.as_bytes())[..16]));
    }
}
