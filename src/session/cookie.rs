//! Our own session cookie (insert mode): random ids, HMAC-SHA256 signatures through the
//! `cookie` crate's signed jar, key rotation, and the configured attributes.

use crate::config::{SameSite, SessionConfig};
use cookie::{Cookie, CookieJar, Key};
use http::HeaderValue;
use std::time::Duration;

/// Length of a session id: 16 random bytes as lowercase hex (128 bits, URL-safe).
pub const ID_LEN: usize = 32;

/// The random key used when no secret is configured: one per process, so that it survives
/// reloads (but not restarts, and is not shared between instances).
fn process_key() -> &'static Key {
    static KEY: std::sync::OnceLock<Key> = std::sync::OnceLock::new();
    KEY.get_or_init(Key::generate)
}

/// Signs and verifies the insert-mode cookie.
pub struct CookieCodec {
    name: String,
    /// The signing key first, then `previous_secrets` (verify only).
    keys: Vec<Key>,
    path: String,
    domain: String,
    secure: bool,
    http_only: bool,
    same_site: cookie::SameSite,
    max_age: Option<Duration>,
}

impl CookieCodec {
    /// `secret` None = a random per-process key (cookies then do not survive a restart and
    /// are not shared between instances; the caller warns about it).
    pub fn new(cfg: &SessionConfig, secret: Option<&str>, tls: bool) -> CookieCodec {
        let mut keys = vec![secret.map(|s| Key::derive_from(s.as_bytes())).unwrap_or_else(|| process_key().clone())];
        keys.extend(cfg.previous_secrets.iter().map(|s| Key::derive_from(s.get_ref().as_bytes())));
        CookieCodec {
            name: cfg.cookie.clone(),
            keys,
            path: cfg.cookie_path.clone(),
            domain: cfg.cookie_domain.clone(),
            secure: cfg.cookie_secure.unwrap_or(tls),
            http_only: cfg.cookie_http_only,
            same_site: match cfg.cookie_same_site {
                SameSite::Strict => cookie::SameSite::Strict,
                SameSite::Lax => cookie::SameSite::Lax,
                SameSite::None => cookie::SameSite::None,
            },
            max_age: cfg.cookie_max_age,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A fresh random session id.
    pub fn new_id() -> String {
        let bytes: [u8; ID_LEN / 2] = rand::random();
        let mut s = String::with_capacity(ID_LEN);
        for b in bytes {
            s.push(char::from_digit((b >> 4) as u32, 16).unwrap_or('0'));
            s.push(char::from_digit((b & 15) as u32, 16).unwrap_or('0'));
        }
        s
    }

    /// The signed cookie value for `id` (what the client sends back).
    pub fn signed_value(&self, id: &str) -> String {
        let mut jar = CookieJar::new();
        jar.signed_mut(&self.keys[0]).add(Cookie::new(self.name.clone(), id.to_owned()));
        jar.get(&self.name).map(|c| c.value().to_owned()).unwrap_or_default()
    }

    /// The `Set-Cookie` header for session `id`.
    pub fn set_cookie(&self, id: &str) -> HeaderValue {
        let mut c = Cookie::build((self.name.clone(), self.signed_value(id)))
            .path(self.path.clone())
            .http_only(self.http_only)
            .same_site(self.same_site);
        if self.secure {
            c = c.secure(true);
        }
        if !self.domain.is_empty() {
            c = c.domain(self.domain.clone());
        }
        if let Some(age) = self.max_age {
            c = c.max_age(cookie::time::Duration::seconds(age.as_secs() as i64));
        }
        HeaderValue::from_str(&c.build().to_string()).expect("cookie text is a valid header value")
    }

    /// The session id inside a cookie value, if its signature verifies with the current or a
    /// previous key and it has our id format. Anything else is treated as no cookie at all.
    pub fn verify(&self, value: &str) -> Option<String> {
        let jar = CookieJar::new();
        self.keys.iter().find_map(|key| {
            let cookie = Cookie::new(self.name.clone(), value.to_owned());
            let id = jar.signed(key).verify(cookie)?.value().to_owned();
            is_id(&id).then_some(id)
        })
    }
}

fn is_id(s: &str) -> bool {
    s.len() == ID_LEN && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec(secret: &str, previous: &[&str]) -> CookieCodec {
        let cfg = SessionConfig {
            previous_secrets: previous.iter().map(|s| toml::Spanned::new(0..0, s.to_string())).collect(),
            ..SessionConfig::default()
        };
        CookieCodec::new(&cfg, Some(secret), false)
    }

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn round_trip_and_tamper() {
        let c = codec(A, &[]);
        let id = CookieCodec::new_id();
        let v = c.signed_value(&id);
        assert_eq!(c.verify(&v).as_deref(), Some(id.as_str()));
        let mut t: Vec<char> = v.chars().collect();
        let mid = t.len() / 2;
        t[mid] = if t[mid] == 'a' { 'b' } else { 'a' };
        assert_eq!(c.verify(&t.into_iter().collect::<String>()), None);
        assert_eq!(c.verify(&id), None, "an unsigned id is not trusted");
    }

    #[test]
    fn previous_secret_verifies() {
        let old = codec(A, &[]);
        let new = codec(B, &[A]);
        let v = old.signed_value("0123456789abcdef0123456789abcdef");
        assert!(new.verify(&v).is_some());
        assert!(codec(B, &[]).verify(&v).is_none());
    }

    #[test]
    fn attributes() {
        let cfg = SessionConfig {
            cookie_path: "/app".into(),
            cookie_domain: "example.test".into(),
            cookie_secure: Some(true),
            cookie_same_site: SameSite::Strict,
            cookie_max_age: Some(Duration::from_secs(3600)),
            ..SessionConfig::default()
        };
        let c = CookieCodec::new(&cfg, Some(A), false);
        let h = c.set_cookie("0123456789abcdef0123456789abcdef");
        let h = h.to_str().unwrap();
        for part in
            ["STICKYLB=", "Path=/app", "Domain=example.test", "Secure", "HttpOnly", "SameSite=Strict", "Max-Age=3600"]
        {
            assert!(h.contains(part), "{part} missing in {h}");
        }
    }

    #[test]
    fn ids_are_random_hex() {
        let a = CookieCodec::new_id();
        assert!(is_id(&a));
        assert_ne!(a, CookieCodec::new_id());
    }
}
