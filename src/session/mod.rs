//! Sessions: finding a request's session key.
//!
//! This module owns key extraction for the four modes (insert: our signed cookie, with the
//! route it names; learn: the application's own cookie or `;jsessionid=` path parameter;
//! header; none), learning keys from backend responses, and the insert cookie itself. It
//! decides nothing and never touches the network, the store or the balancer: the sticky
//! router (`sticky`) does that with what this module finds.

mod cookie;
pub mod soap;
mod verified;

pub use self::cookie::{CookieCodec, Route, Verified, ID_LEN};

use crate::config::{OnBackendDown, SessionConfig, SessionMode};
use ::cookie::Cookie;
use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderName, HeaderValue, Uri};

/// The session settings of one config snapshot.
pub struct SessionPolicy {
    pub mode: SessionMode,
    pub on_backend_down: OnBackendDown,
    cookie_name: String,
    /// `;name=` lowercased, for servlet-style URL rewriting (learn mode).
    path_param: String,
    header: HeaderName,
    strip_cookie: bool,
    /// Insert mode only.
    pub codec: Option<CookieCodec>,
}

/// The session key a request carries.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Extracted {
    /// A verified insert-mode id, or the application's session id in learn/header mode.
    pub key: Option<String>,
    /// Insert mode: the backend and creation time the verified cookie names.
    pub route: Option<Route>,
    /// The client chose the key (Synapse `ClientID`): pin it on the first request that
    /// carries it, rather than waiting for a backend to issue it.
    pub client_chosen: bool,
    /// Our cookie was present but failed verification (counted, then ignored).
    pub rejected: bool,
}

/// What a backend response says about the session (learn and header modes).
#[derive(Debug, PartialEq, Eq)]
pub enum Learned {
    /// The backend created or confirmed session `V`: pin it to this backend.
    Pin(String),
    /// The backend deleted its session cookie: forget the request's pin.
    Forget,
}

impl SessionPolicy {
    pub fn new(cfg: &SessionConfig, tls: bool) -> SessionPolicy {
        let codec =
            (cfg.mode == SessionMode::Insert).then(|| CookieCodec::new(cfg, cfg.resolved_secret.as_deref(), tls));
        SessionPolicy {
            mode: cfg.mode,
            on_backend_down: cfg.on_backend_down,
            cookie_name: cfg.cookie.clone(),
            path_param: format!(";{}=", cfg.cookie.to_ascii_lowercase()),
            header: HeaderName::from_bytes(cfg.header.as_bytes()).unwrap_or(HeaderName::from_static("x-session-id")),
            strip_cookie: cfg.strip_cookie,
            codec,
        }
    }

    /// Find the session key of a request; in insert mode also strip our cookie from the
    /// headers when `strip_cookie` is on (other cookies are forwarded untouched).
    pub fn extract(&self, headers: &mut HeaderMap, uri: &Uri) -> Extracted {
        match self.mode {
            // SOAP keys are in the body: the proxy reads them with [`soap::request_key`].
            SessionMode::None | SessionMode::Soap => Extracted::default(),
            SessionMode::Insert => self.extract_insert(headers),
            SessionMode::Learn => Extracted {
                key: cookie_value(headers, &self.cookie_name).or_else(|| self.path_parameter(uri)),
                ..Extracted::default()
            },
            SessionMode::Header => Extracted {
                key: headers
                    .get(&self.header)
                    .and_then(|v| v.to_str().ok())
                    .filter(|v| !v.is_empty())
                    .map(str::to_owned),
                ..Extracted::default()
            },
        }
    }

    fn extract_insert(&self, headers: &mut HeaderMap) -> Extracted {
        let Some(codec) = &self.codec else { return Extracted::default() };
        let mut out = Extracted::default();
        let (mut present, mut others) = (false, false);
        for value in headers.get_all(COOKIE) {
            for pair in segments(value.as_bytes()) {
                let Some((name, value)) = name_value(pair) else {
                    others |= !pair.is_empty();
                    continue;
                };
                if name != self.cookie_name.as_bytes() {
                    others = true;
                    continue;
                }
                present = true;
                if out.key.is_none() {
                    if let Some(v) = codec.verify(value) {
                        out.key = Some(v.id);
                        out.route = v.route;
                    }
                }
            }
        }
        out.rejected = present && out.key.is_none();
        if present && self.strip_cookie {
            if others {
                strip_cookie(headers, &self.cookie_name);
            } else {
                // Only our cookie (the usual case): the header goes, nothing is rebuilt.
                headers.remove(COOKIE);
            }
        }
        out
    }

    /// `;jsessionid=V` in the path (name case-insensitive), as servlet URL rewriting writes it.
    fn path_parameter(&self, uri: &Uri) -> Option<String> {
        let path = uri.path();
        if !path.contains(';') {
            return None;
        }
        let lower = path.to_ascii_lowercase();
        let start = lower.find(&self.path_param)? + self.path_param.len();
        let rest = &path[start..];
        let end = rest.find([';', '/', '?']).unwrap_or(rest.len());
        let v = &rest[..end];
        (!v.is_empty()).then(|| v.to_owned())
    }

    /// What a backend response teaches about its session (learn and header modes).
    pub fn learn(&self, headers: &HeaderMap) -> Option<Learned> {
        self.learn_from(headers.iter().map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes())))
    }

    /// [`SessionPolicy::learn`] from a response's fields as (name, value) bytes in order, the
    /// names in any case: a map's, or a head passed through as it came
    /// (`proxy::upstream::raw`). The first `Set-Cookie` of the cookie's name, or the first
    /// field of the header's, as a map's `get_all` and `get` find them.
    pub fn learn_from<'a>(&self, mut fields: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> Option<Learned> {
        match self.mode {
            SessionMode::Learn => fields.find_map(|(name, v)| {
                if !name.eq_ignore_ascii_case(SET_COOKIE.as_str().as_bytes()) {
                    return None;
                }
                let c = Cookie::parse(visible_ascii(v)?).ok()?;
                if c.name() != self.cookie_name {
                    return None;
                }
                let deleted = c.value().is_empty() || c.max_age().is_some_and(|a| a.is_zero() || a.is_negative());
                Some(if deleted { Learned::Forget } else { Learned::Pin(c.value().to_owned()) })
            }),
            SessionMode::Header => fields
                .find(|(name, _)| name.eq_ignore_ascii_case(self.header.as_str().as_bytes()))
                .and_then(|(_, v)| visible_ascii(v))
                .filter(|v| !v.is_empty())
                .map(|v| Learned::Pin(v.to_owned())),
            _ => None,
        }
    }

    /// `Set-Cookie` naming `route` for insert-mode session `id`.
    pub fn set_cookie(&self, id: &str, route: &Route) -> Option<HeaderValue> {
        self.codec.as_ref().map(|c| c.set_cookie(id, route))
    }
}

/// A field value as text when it is only visible ASCII and tabs (`HeaderValue::to_str`'s rule).
fn visible_ascii(v: &[u8]) -> Option<&str> {
    v.iter().all(|&b| b == b'\t' || (32..127).contains(&b)).then(|| std::str::from_utf8(v).ok()).flatten()
}

/// The `;`-separated pieces of a Cookie header, trimmed.
fn segments(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    // `split` on `;`, with the separator found by `memchr` (a ~100-byte cookie was searched a
    // byte at a time, a visible share of a pinned request's instructions).
    let mut rest = Some(bytes);
    std::iter::from_fn(move || {
        let r = rest?;
        Some(match memchr::memchr(b';', r) {
            Some(i) => {
                rest = Some(&r[i + 1..]);
                &r[..i]
            }
            None => {
                rest = None;
                r
            }
        })
    })
    .map(<[u8]>::trim_ascii)
}

/// A piece's name and value (RFC 6265 5.4), without parsing what does not matter here:
/// whitespace around both is trimmed, and a value's surrounding quotes removed. Bytes, not
/// text: another cookie's non-ASCII value (UTF-8 in the wild) must not hide ours.
fn name_value(pair: &[u8]) -> Option<(&[u8], &[u8])> {
    let eq = memchr::memchr(b'=', pair)?;
    let value = pair[eq + 1..].trim_ascii();
    let value = value.strip_prefix(b"\"").and_then(|v| v.strip_suffix(b"\"")).unwrap_or(value);
    Some((pair[..eq].trim_ascii(), value))
}

/// The `name=value` pairs of a Cookie header.
fn cookie_pairs(bytes: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    segments(bytes).filter_map(name_value)
}

/// The value of cookie `name` in the request's Cookie headers (a value that is not UTF-8 is
/// not a session id).
fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get_all(COOKIE).iter().find_map(|v| {
        let (_, value) = cookie_pairs(v.as_bytes()).find(|&(n, v)| n == name.as_bytes() && !v.is_empty())?;
        std::str::from_utf8(value).ok().map(str::to_owned)
    })
}

/// Remove cookie `name` from the request, keeping the other pairs byte for byte, in one
/// Cookie header (as HTTP/1.1 wants, also when HTTP/2 sent several).
fn strip_cookie(headers: &mut HeaderMap, name: &str) {
    let ours = |pair: &[u8]| pair.split(|&b| b == b'=').next().map(<[u8]>::trim_ascii) == Some(name.as_bytes());
    let mut kept = Vec::new();
    for v in headers.get_all(COOKIE) {
        for pair in segments(v.as_bytes()) {
            if pair.is_empty() || ours(pair) {
                continue;
            }
            if !kept.is_empty() {
                kept.extend_from_slice(b"; ");
            }
            kept.extend_from_slice(pair);
        }
    }
    match HeaderValue::from_bytes(&kept) {
        Ok(v) if !kept.is_empty() => {
            headers.insert(COOKIE, v);
        }
        _ => {
            headers.remove(COOKIE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    fn policy(mode: &str, extra: &str) -> SessionPolicy {
        let text = format!(
            "[session]\nmode = \"{mode}\"\nsecret = \"0123456789abcdef0123456789abcdef\"\n{extra}\n[[backend]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n"
        );
        SessionPolicy::new(&parse(&text, "t").unwrap().session, false)
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn cookie_segments_are_what_splitting_on_semicolons_gives() {
        for v in
            [&b""[..], b";", b";;", b"a", b"a;b", b" a ; b ", b"a;", b";a", b"a=1; b=2;; c", b"x=\"q;r\"", b"\xff;\t;"]
        {
            let expected: Vec<&[u8]> = v.split(|&b| b == b';').map(<[u8]>::trim_ascii).collect();
            assert_eq!(segments(v).collect::<Vec<_>>(), expected, "{v:?}");
        }
    }

    #[test]
    fn insert_valid_cookie_is_extracted_and_stripped() {
        let p = policy("insert", "");
        let id = CookieCodec::new_id();
        let v = p.codec.as_ref().unwrap().signed_value(&id);
        let mut h = headers(&[("cookie", &format!("a=1; STICKYLB={v}; b=2"))]);
        let e = p.extract(&mut h, &Uri::from_static("/"));
        assert_eq!(e, Extracted { key: Some(id), ..Extracted::default() });
        assert_eq!(h.get(COOKIE).unwrap(), "a=1; b=2");
    }

    #[test]
    fn stripping_merges_cookie_headers_and_keeps_other_pairs_verbatim() {
        let p = policy("insert", "");
        let id = CookieCodec::new_id();
        let v = p.codec.as_ref().unwrap().signed_value(&id);
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("a=1;  weird = x y "));
        h.append(COOKIE, HeaderValue::from_str(&format!(" STICKYLB=\"{v}\" ; flag; b=\"q\"")).unwrap());
        let e = p.extract(&mut h, &Uri::from_static("/"));
        assert_eq!(e, Extracted { key: Some(id), ..Extracted::default() }, "a quoted value is unquoted");
        let left: Vec<_> = h.get_all(COOKIE).iter().collect();
        assert_eq!(left, ["a=1; weird = x y; flag; b=\"q\""]);

        let mut only_ours = headers(&[("cookie", &format!("STICKYLB={v}"))]);
        p.extract(&mut only_ours, &Uri::from_static("/"));
        assert!(only_ours.get(COOKIE).is_none(), "no empty Cookie header is forwarded");
    }

    #[test]
    fn insert_tampered_cookie_is_rejected() {
        let p = policy("insert", "");
        let mut h = headers(&[("cookie", "STICKYLB=forged")]);
        let e = p.extract(&mut h, &Uri::from_static("/"));
        assert_eq!(e, Extracted { rejected: true, ..Extracted::default() });
        assert!(h.get(COOKIE).is_none());
    }

    #[test]
    fn learn_from_cookie_and_path_parameter() {
        let p = policy("learn", "cookie = \"JSESSIONID\"");
        let mut h = headers(&[("cookie", "JSESSIONID=abc")]);
        assert_eq!(p.extract(&mut h, &Uri::from_static("/")).key.as_deref(), Some("abc"));
        let mut h = HeaderMap::new();
        let uri = Uri::from_static("/x;JSessionId=def?q=1");
        assert_eq!(p.extract(&mut h, &uri).key.as_deref(), Some("def"));
        let learned = p.learn(&headers(&[("set-cookie", "JSESSIONID=xyz; Path=/")]));
        // A head passed through is read as bytes, its names as the backend wrote them.
        let raw: [(&[u8], &[u8]); 3] =
            [(b"Set-Cookie", b"other=1"), (b"SET-COOKIE", b"JSESSIONID=xyz; Path=/"), (b"set-cookie", b"JSESSIONID=2")];
        assert_eq!(p.learn_from(raw.into_iter()), learned);
        let hidden: [(&[u8], &[u8]); 1] = [(b"Set-Cookie", "JSESSIONID=caf\u{e9}".as_bytes())];
        assert_eq!(p.learn_from(hidden.into_iter()), None, "only visible ASCII is read, as `to_str` reads it");
        assert_eq!(learned, Some(Learned::Pin("xyz".into())));
        let gone = p.learn(&headers(&[("set-cookie", "JSESSIONID=; Max-Age=0")]));
        assert_eq!(gone, Some(Learned::Forget));
    }

    #[test]
    fn header_mode() {
        let p = policy("header", "");
        let mut h = headers(&[("x-session-id", "s1")]);
        assert_eq!(p.extract(&mut h, &Uri::from_static("/")).key.as_deref(), Some("s1"));
        assert_eq!(p.learn(&headers(&[("x-session-id", "s2")])), Some(Learned::Pin("s2".into())));
        let raw: [(&[u8], &[u8]); 2] = [(b"X-Session-Id", b"s2"), (b"x-session-id", b"s3")];
        assert_eq!(p.learn_from(raw.into_iter()), Some(Learned::Pin("s2".into())), "the first, in any case");
        let empty: [(&[u8], &[u8]); 2] = [(b"X-Session-Id", b""), (b"x-session-id", b"s3")];
        assert_eq!(p.learn_from(empty.into_iter()), None, "the first field only, as `get` finds it");
    }
}
