//! Our own session cookie (insert mode): random ids, HMAC-SHA256 signatures, key rotation,
//! and the configured attributes.
//!
//! The signed value has the `cookie` crate's signed-jar format (base64 of the HMAC-SHA256 of
//! the payload, then the payload), and keys are derived from the secret the same way. The
//! payload is `ID~CREATED~BACKEND`: the session id, the session's creation time (Unix
//! seconds) and the name of the backend it is pinned to, all under the signature, so nobody
//! can forge or alter the backend a cookie names. Cookies of the first format (payload = the
//! id alone) still verify, without a route. Signing and verifying are done here with HMAC states keyed once at
//! start, which halves the hashing per request and allocates nothing but the id; a value a
//! worker verified before is found in its kept values (`verified.rs`) without hashing.

use crate::config::{SameSite, SessionConfig};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use cookie::{Cookie, Key};
use hmac::{Hmac, Mac};
use http::HeaderValue;
use sha2::Sha256;
use std::sync::Arc;

/// Length of the base64 (padded) HMAC-SHA256 that starts a signed value.
const DIGEST_B64_LEN: usize = 44;

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
    /// HMAC states keyed with the signing key first, then `previous_secrets` (verify only).
    macs: Vec<Hmac<Sha256>>,
    /// `; Path=...; HttpOnly; ...`: everything of the `Set-Cookie` value after `name=value`.
    attributes: String,
    /// Unique per codec built (each snapshot's): what the workers' kept verified cookies
    /// ([`super::verified`]) were verified under.
    generation: u64,
}

/// The last codec generation given out.
static GENERATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl CookieCodec {
    /// `secret` None = a random per-process key (cookies then do not survive a restart and
    /// are not shared between instances; the caller warns about it).
    pub fn new(cfg: &SessionConfig, secret: Option<&str>, tls: bool) -> CookieCodec {
        let mut keys = vec![secret.map(|s| Key::derive_from(s.as_bytes())).unwrap_or_else(|| process_key().clone())];
        keys.extend(cfg.previous_secrets.iter().map(|s| Key::derive_from(s.get_ref().as_bytes())));
        let macs = keys
            .iter()
            .map(|k| Hmac::<Sha256>::new_from_slice(k.signing()).expect("HMAC takes a key of any length"))
            .collect();
        let generation = GENERATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        CookieCodec { name: cfg.cookie.clone(), macs, attributes: attributes(cfg, tls), generation }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A fresh random session id.
    pub fn new_id() -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let bytes: [u8; ID_LEN / 2] = rand::random();
        let mut hex = [0u8; ID_LEN];
        for (pair, b) in hex.chunks_exact_mut(2).zip(bytes) {
            pair.copy_from_slice(&[HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
        // Hex digits are text.
        std::str::from_utf8(&hex).unwrap_or_default().to_owned()
    }

    /// The signed cookie value of the first format: the id alone, no route (tests, benches).
    pub fn signed_value(&self, id: &str) -> String {
        let mut out = Vec::with_capacity(DIGEST_B64_LEN + id.len());
        self.push_signed(&mut out, |o| o.extend_from_slice(id.as_bytes()));
        text(out)
    }

    /// The signed cookie value naming `route` (what the client sends back).
    pub fn signed_route_value(&self, id: &str, route: &Route) -> String {
        let mut out = Vec::with_capacity(DIGEST_B64_LEN + payload_len(id, route));
        self.push_signed(&mut out, |o| push_payload(o, id, route));
        text(out)
    }

    /// Push a signed value: room for the digest, the payload `push` writes, then the digest
    /// of that payload into its room. Bytes throughout: no text checks, no payload moved.
    fn push_signed(&self, out: &mut Vec<u8>, push: impl FnOnce(&mut Vec<u8>)) {
        let at = out.len();
        out.resize(at + DIGEST_B64_LEN, 0);
        push(out);
        let (digest, payload) = out[at..].split_at_mut(DIGEST_B64_LEN);
        let mut mac = self.macs[0].clone();
        mac.update(payload);
        // 32 bytes are exactly 44 base64 characters: the room is filled.
        let n = BASE64.encode_slice(mac.finalize().into_bytes(), digest).unwrap_or(0);
        debug_assert_eq!(n, DIGEST_B64_LEN);
    }

    /// The `Set-Cookie` header for session `id`, pinned to `route`: put together in one buffer
    /// that becomes the header value (no payload string, no copy into the value).
    pub fn set_cookie(&self, id: &str, route: &Route) -> HeaderValue {
        // Exactly the length: a `Bytes` made from a full `Vec` needs no allocation of its own.
        let len = self.name.len() + 1 + DIGEST_B64_LEN + payload_len(id, route) + self.attributes.len();
        let mut v = Vec::with_capacity(len);
        v.extend_from_slice(self.name.as_bytes());
        v.push(b'=');
        self.push_signed(&mut v, |o| push_payload(o, id, route));
        v.extend_from_slice(self.attributes.as_bytes());
        debug_assert_eq!(v.len(), v.capacity());
        HeaderValue::from_maybe_shared(bytes::Bytes::from(v)).expect("cookie text is a valid header value")
    }

    /// The session inside a cookie value, if its signature verifies with the current or a
    /// previous key and it has one of our payload formats. Anything else is treated as no
    /// cookie at all. A value this worker verified before under this codec is not hashed again
    /// ([`super::verified`]).
    ///
    /// Bytes, as a `Cookie` field holds them: a kept value is matched as they are, and only a
    /// value checked in full is read as text (for a pinned client, that UTF-8 check of its
    /// cookie cost more than matching it).
    pub fn verify(&self, value: impl AsRef<[u8]>) -> Option<Verified> {
        let value = value.as_ref();
        if let Some(kept) = super::verified::get(self.generation, value) {
            return Some(kept);
        }
        let verified = self.check(std::str::from_utf8(value).ok()?)?;
        super::verified::put(self.generation, value, &verified);
        Some(verified)
    }

    /// [`Self::verify`] without the kept values: the signature checked in full.
    fn check(&self, value: &str) -> Option<Verified> {
        let (digest, payload) = (value.get(..DIGEST_B64_LEN)?, value.get(DIGEST_B64_LEN..)?);
        let verified = parse_payload(payload)?;
        let mut tag = [0u8; 33];
        let n = BASE64.decode_slice(digest, &mut tag).ok()?;
        let tag = &tag[..n];
        self.macs.iter().find_map(|mac| {
            let mut mac = mac.clone();
            mac.update(payload.as_bytes());
            // Constant-time comparison.
            mac.verify_slice(tag).ok()
        })?;
        Some(verified)
    }
}

/// The `Set-Cookie` attributes, rendered once by the `cookie` crate.
fn attributes(cfg: &SessionConfig, tls: bool) -> String {
    let mut c = Cookie::build((cfg.cookie.clone(), "v"))
        .path(cfg.cookie_path.clone())
        .http_only(cfg.cookie_http_only)
        .same_site(match cfg.cookie_same_site {
            SameSite::Strict => cookie::SameSite::Strict,
            SameSite::Lax => cookie::SameSite::Lax,
            SameSite::None => cookie::SameSite::None,
        });
    if cfg.cookie_secure.unwrap_or(tls) {
        c = c.secure(true);
    }
    if !cfg.cookie_domain.is_empty() {
        c = c.domain(cfg.cookie_domain.clone());
    }
    if let Some(age) = cfg.cookie_max_age {
        c = c.max_age(cookie::time::Duration::seconds(age.as_secs() as i64));
    }
    let text = c.build().to_string();
    text[cfg.cookie.len() + 2..].to_owned()
}

/// Where a cookie says its session lives: the backend's name and the session's creation time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Shared: a route is cloned out of the kept verified cookies and into a plan.
    pub backend: Arc<str>,
    /// Unix milliseconds (kept to the second in the cookie).
    pub created_ms: u64,
}

/// A cookie that verified: the session id and, for cookies of the current format, its route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub id: String,
    pub route: Option<Route>,
}

/// Separates the payload's fields: in neither a hex id, a number nor a backend name.
const SEP: char = '~';

/// The length of [`push_payload`]'s text.
fn payload_len(id: &str, route: &Route) -> usize {
    let digits = (route.created_ms / 1000).checked_ilog10().map_or(1, |d| d as usize + 1);
    id.len() + 1 + digits + 1 + route.backend.len()
}

/// Push `ID~CREATED~BACKEND` (the creation time in seconds).
fn push_payload(out: &mut Vec<u8>, id: &str, route: &Route) {
    let mut digits = [0u8; 20];
    let mut n = route.created_ms / 1000;
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(id.as_bytes());
    out.push(SEP as u8);
    out.extend_from_slice(&digits[i..]);
    out.push(SEP as u8);
    out.extend_from_slice(route.backend.as_bytes());
}

/// A signed value as text (for the callers that want a `String`): an id or payload given as
/// text, and base64, are text.
fn text(v: Vec<u8>) -> String {
    String::from_utf8(v).expect("a signed value is text")
}

/// `ID` or `ID~CREATED~BACKEND`; anything else is no payload of ours.
fn parse_payload(payload: &str) -> Option<Verified> {
    let id = payload.get(..ID_LEN).filter(|id| is_id(id))?;
    let rest = &payload[ID_LEN..];
    let route = if rest.is_empty() {
        None
    } else {
        let rest = rest.strip_prefix(SEP)?;
        let at = rest.bytes().position(|b| b == SEP as u8)?;
        let (created, backend) = (&rest[..at], &rest[at + 1..]);
        if !is_backend_name(backend) || !created.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let secs: u64 = created.parse().ok()?;
        Some(Route { backend: Arc::from(backend), created_ms: secs.checked_mul(1000)? })
    };
    Some(Verified { id: id.to_owned(), route })
}

/// A backend name as config validation allows it (of any length, as there).
fn is_backend_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

fn is_id(s: &str) -> bool {
    s.len() == ID_LEN && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
    fn new_ids_are_random_lowercase_hex_using_every_digit() {
        let ids: Vec<String> = (0..64).map(|_| CookieCodec::new_id()).collect();
        assert!(ids.iter().all(|id| is_id(id) && !id.bytes().any(|b| b.is_ascii_uppercase())), "{ids:?}");
        let digits: std::collections::HashSet<u8> = ids.iter().flat_map(|id| id.bytes()).collect();
        assert_eq!(digits.len(), 16);
        let pairs_differ = ids.iter().any(|id| id.as_bytes().chunks(2).any(|p| p[0] != p[1]));
        assert!(pairs_differ, "each byte's two nibbles are written, not one of them twice");
        assert_ne!(ids[0], ids[1]);
    }

    #[test]
    fn round_trip_and_tamper() {
        let c = codec(A, &[]);
        let id = CookieCodec::new_id();
        let v = c.signed_value(&id);
        assert_eq!(c.verify(&v).map(|v| v.id), Some(id.clone()));
        let mut t: Vec<char> = v.chars().collect();
        let mid = t.len() / 2;
        t[mid] = if t[mid] == 'a' { 'b' } else { 'a' };
        assert_eq!(c.verify(t.into_iter().collect::<String>()), None);
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
    fn a_cookie_kept_as_verified_is_rejected_by_a_codec_with_another_secret() {
        let a = codec(A, &[]);
        let v = a.signed_route_value(&CookieCodec::new_id(), &Route { backend: "app1".into(), created_ms: 5_000 });
        assert!(a.verify(&v).is_some() && a.verify(&v).is_some(), "verified, then found kept");
        assert!(codec(B, &[]).verify(&v).is_none(), "a reload with a new secret trusts nothing kept");
        assert!(a.verify(&v).is_some());
    }

    #[test]
    fn a_tampered_copy_of_a_kept_cookie_is_rejected() {
        let c = codec(A, &[]);
        let v = c.signed_route_value(&CookieCodec::new_id(), &Route { backend: "app1".into(), created_ms: 5_000 });
        assert!(c.verify(&v).is_some());
        let forged = v.replace("~app1", "~app2");
        assert_eq!(forged.len(), v.len());
        assert!(c.verify(&forged).is_none(), "same slot, other backend: checked in full and refused");
        assert_eq!(c.verify(&v).unwrap().route.unwrap().backend.as_ref(), "app1");
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
        let h = c.set_cookie("0123456789abcdef0123456789abcdef", &route("a"));
        let h = h.to_str().unwrap();
        for part in
            ["STICKYLB=", "Path=/app", "Domain=example.test", "Secure", "HttpOnly", "SameSite=Strict", "Max-Age=3600"]
        {
            assert!(h.contains(part), "{part} missing in {h}");
        }
    }

    #[test]
    fn values_signed_by_the_cookie_crate_verify_and_ours_verify_there() {
        use cookie::CookieJar;
        let c = codec(A, &[]);
        let key = Key::derive_from(A.as_bytes());
        let id = CookieCodec::new_id();
        let mut jar = CookieJar::new();
        jar.signed_mut(&key).add(Cookie::new("STICKYLB", id.clone()));
        let theirs = jar.get("STICKYLB").unwrap().value().to_owned();
        assert_eq!(theirs, c.signed_value(&id), "same format");
        assert_eq!(c.verify(&theirs).map(|v| v.id), Some(id.clone()));
        let ours = Cookie::new("STICKYLB", c.signed_value(&id));
        assert_eq!(CookieJar::new().signed(&key).verify(ours).unwrap().value(), id);
    }

    #[test]
    fn set_cookie_is_name_signed_value_and_attributes() {
        let c = codec(A, &[]);
        let id = CookieCodec::new_id();
        let h = c.set_cookie(&id, &route("app-1.eu"));
        let signed = format!("STICKYLB={};", c.signed_route_value(&id, &route("app-1.eu")));
        assert!(h.to_str().unwrap().starts_with(&signed), "{h:?} is not {signed}...");
        let parsed = Cookie::parse(h.to_str().unwrap().to_owned()).unwrap();
        assert_eq!(parsed.name(), "STICKYLB");
        assert_eq!(c.verify(parsed.value()), Some(Verified { id, route: Some(route("app-1.eu")) }));
        assert_eq!(parsed.path(), Some("/"));
    }

    #[test]
    fn malformed_values_are_rejected_without_panicking() {
        let c = codec(A, &[]);
        let v = c.signed_value(&CookieCodec::new_id());
        for bad in ["", "x", &v[..43], &v[..44], &v[..v.len() - 1], &format!("{v}0"), "é".repeat(30).as_str()] {
            assert_eq!(c.verify(bad), None, "{bad:?}");
        }
        let mut multibyte = v.clone();
        multibyte.replace_range(10..11, "é");
        assert_eq!(c.verify(&multibyte), None);
    }

    fn route(backend: &str) -> Route {
        Route { backend: backend.into(), created_ms: 1_764_300_000_000 }
    }

    #[test]
    fn the_route_round_trips_under_the_signature() {
        let c = codec(A, &[]);
        let id = CookieCodec::new_id();
        let v = c.signed_route_value(&id, &route("app2"));
        assert_eq!(c.verify(&v), Some(Verified { id: id.clone(), route: Some(route("app2")) }));
        assert!(v.ends_with("~1764300000~app2"), "{v}");
        let forged = v.replace("~app2", "~app3");
        assert_eq!(c.verify(&forged), None, "the named backend cannot be altered");
        let older = v.replace("~1764300000~", "~1000000000~");
        assert_eq!(c.verify(&older), None, "nor the creation time");
        assert_eq!(codec(B, &[]).verify(&v), None, "nor signed with another key");
        assert!(codec(B, &[A]).verify(&v).is_some(), "a previous key still verifies");
    }

    #[test]
    fn first_format_cookies_verify_without_a_route() {
        let c = codec(A, &[]);
        let id = CookieCodec::new_id();
        assert_eq!(c.verify(c.signed_value(&id)), Some(Verified { id, route: None }));
    }

    #[test]
    fn malformed_payloads_are_rejected() {
        let c = codec(A, &[]);
        let id = CookieCodec::new_id();
        for payload in [
            format!("{id}~"),
            format!("{id}~12"),
            format!("{id}~~app"),
            format!("{id}~x1~app"),
            format!("{id}~1~"),
            format!("{id}~1~a;b"),
            format!("{id}~99999999999999999999~a"),
            format!("{}~1~a", &id[1..]),
        ] {
            let mut signed = Vec::new();
            c.push_signed(&mut signed, |o| o.extend_from_slice(payload.as_bytes()));
            let signed = text(signed);
            assert_eq!(c.verify(&signed), None, "{payload:?}");
        }
    }

    #[test]
    fn ids_are_random_hex() {
        let a = CookieCodec::new_id();
        assert!(is_id(&a));
        assert_ne!(a, CookieCodec::new_id());
    }
}
