//! The properties the fuzz targets check, in one place: each `fuzz/fuzz_targets/NAME.rs` calls
//! the function of the same name, and `tests/fuzz_corpus.rs` replays every file of
//! `fuzz/corpus/NAME/` and `fuzz/regressions/NAME/` through it. A property that fails panics.
//!
//! Inputs are plain bytes, decoded here (no `arbitrary`), so that a corpus file means the same
//! to the fuzzer and to the test suite.
#![allow(dead_code)] // each fuzz target uses one function

use http::header::{COOKIE, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;
use stickylb::proxy::forwarding::add_forwarded;
use stickylb::proxy::headers::{strip_hop_by_hop, Seen};
use stickylb::session::{CookieCodec, Learned, Route, SessionPolicy, Verified};

/// The insert cookie's name in every policy here (the default).
const NAME: &str = "STICKYLB";
/// The learn-mode cookie and path parameter.
const LEARN: &str = "JSESSIONID";
/// The header-mode header.
const HEADER: &str = "x-session-id";
/// In `session_key` inputs, this byte (never valid in a header) stands for a validly signed
/// insert cookie value, so that the fuzzer can place real cookies anywhere.
const SIGNED_MARK: u8 = 0x01;

/// The session policies the checks use, built once.
struct Policies {
    /// Insert mode, `strip_cookie` on (the default).
    insert: SessionPolicy,
    /// Insert mode, `strip_cookie` off.
    insert_keep: SessionPolicy,
    learn: SessionPolicy,
    header: SessionPolicy,
    /// The id and route of the signed value [`SIGNED_MARK`] stands for.
    signed: (String, Route, String),
}

fn policies() -> &'static Policies {
    static POLICIES: OnceLock<Policies> = OnceLock::new();
    POLICIES.get_or_init(|| {
        let policy = |session: &str| {
            let text = format!(
                "[session]\nsecret = \"fuzzing-secret-0123456789abcdef0123456789\"\n{session}\n\
                 [[backend]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n"
            );
            let config = stickylb::config::parse(&text, "fuzz.toml").expect("the checks' own config is valid");
            SessionPolicy::new(&config.session, false)
        };
        let insert = policy("mode = \"insert\"");
        let id = "0123456789abcdef0123456789abcdef".to_owned();
        let route = Route { backend: "app-1".into(), created_ms: 1_764_300_000_000 };
        let value = codec(&insert).signed_route_value(&id, &route);
        Policies {
            insert,
            insert_keep: policy("mode = \"insert\"\nstrip_cookie = false"),
            learn: policy(&format!("mode = \"learn\"\ncookie = \"{LEARN}\"")),
            header: policy(&format!("mode = \"header\"\nheader = \"{HEADER}\"")),
            signed: (id, route, value),
        }
    })
}

fn codec(policy: &SessionPolicy) -> &CookieCodec {
    policy.codec.as_ref().expect("insert mode has a codec")
}

/// Reads an input front to back; past its end every read gives zeros / nothing.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> u8 {
        let (&b, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        b
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }

    fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        let head = self.take(8);
        b[..head.len()].copy_from_slice(head);
        u64::from_le_bytes(b)
    }

    /// Up to the next `\n` (consumed, not returned).
    fn line(&mut self) -> &'a [u8] {
        let end = self.0.iter().position(|&b| b == b'\n').unwrap_or(self.0.len());
        let line = self.take(end);
        self.take(1);
        line
    }

    fn rest(&mut self) -> &'a [u8] {
        self.take(self.0.len())
    }
}

/// HTTP's optional whitespace around a field value or a cookie pair.
fn trim_ows(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|&c| c != b' ' && c != b'\t').unwrap_or(b.len());
    let end = b.iter().rposition(|&c| c != b' ' && c != b'\t').map_or(start, |e| e + 1);
    &b[start..end]
}

/// The `name=value` pairs of Cookie header bytes, as RFC 6265 5.4 reads them: split at `;`,
/// whitespace around name and value dropped, a quoted value unquoted. The checks' own reading,
/// independent of the balancer's.
fn cookie_pairs(value: &[u8]) -> Vec<(&[u8], &[u8])> {
    value
        .split(|&b| b == b';')
        .filter_map(|pair| {
            let eq = pair.iter().position(|&b| b == b'=')?;
            let v = trim_ows(&pair[eq + 1..]);
            let v = v.strip_prefix(b"\"").and_then(|v| v.strip_suffix(b"\"")).unwrap_or(v);
            Some((trim_ows(&pair[..eq]), v))
        })
        .collect()
}

/// The non-empty pieces between `;` of every Cookie header, trimmed, whose name is not `name`:
/// what must reach the backend, byte for byte and in order, after our cookie is stripped.
fn other_cookie_pieces(headers: &HeaderMap, name: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for v in headers.get_all(COOKIE) {
        for piece in v.as_bytes().split(|&b| b == b';').map(trim_ows) {
            let piece_name = trim_ows(piece.split(|&b| b == b'=').next().unwrap_or(b""));
            if !piece.is_empty() && piece_name != name.as_bytes() {
                out.push(piece.to_vec());
            }
        }
    }
    out
}

/// A verified cookie was signed by us: signing what it says again gives the same bytes.
fn assert_resigns(codec: &CookieCodec, verified: &Verified, value: &str) {
    assert!(verified.id.len() == 32 && verified.id.bytes().all(|b| b.is_ascii_hexdigit()), "{verified:?}");
    let again = match &verified.route {
        Some(route) => codec.signed_route_value(&verified.id, route),
        None => codec.signed_value(&verified.id),
    };
    assert_eq!(again, value, "a value that verifies must be exactly what we sign");
}

/// A session key must be usable as a header value (it is logged, stored, and may be sent on)
/// and carry no surrounding whitespace.
fn assert_valid_key(key: &str) {
    assert!(!key.is_empty(), "empty key");
    assert!(HeaderValue::from_str(key).is_ok(), "key {key:?} is not a valid header value");
    assert_eq!(key, key.trim_matches([' ', '\t']), "key with surrounding whitespace");
}

/// A backend name from input bytes, in the alphabet config validation allows.
fn backend_name(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.";
    let name: String = bytes.iter().map(|&b| ALPHABET[b as usize % ALPHABET.len()] as char).collect();
    if name.is_empty() {
        "b".into()
    } else {
        name
    }
}

/// Target `cookie`: the insert cookie. Any text given to `verify` either fails or is a value we
/// signed; a new cookie for any id and any valid backend name verifies to that id and route,
/// also from inside a Cookie header among other pairs, and is stripped from it.
pub fn cookie(data: &[u8]) {
    let p = policies();
    let codec = codec(&p.insert);

    // 1. The input as a cookie value.
    let text = String::from_utf8_lossy(data);
    if let Some(v) = codec.verify(text.as_bytes()) {
        assert_resigns(codec, &v, &text);
    }

    // 2. A new session from the input: id, creation time, backend name.
    let mut input = Input(data);
    let prefix_len = input.byte() as usize;
    let id: String = input.take(16).iter().map(|b| format!("{b:02x}")).collect::<String>();
    let id = format!("{id:0<32}");
    let created_ms = input.u64();
    let name_len = input.byte() as usize * 2;
    let route = Route { backend: backend_name(input.take(name_len)).into(), created_ms };
    let set_cookie = codec.set_cookie(&id, &route);
    let set_cookie = set_cookie.to_str().expect("Set-Cookie is visible ASCII");
    let (pair, _attributes) = set_cookie.split_once(';').unwrap_or((set_cookie, ""));
    let (name, value) = pair.split_once('=').expect("name=value");
    assert_eq!(name, NAME);
    assert_eq!(value, codec.signed_route_value(&id, &route));
    let expected = Verified {
        id: id.clone(),
        route: Some(Route { backend: route.backend.clone(), created_ms: created_ms / 1000 * 1000 }),
    };
    assert_eq!(codec.verify(value), Some(expected.clone()), "a new cookie must verify: {value}");

    // 3. The new cookie sent back among other cookies (the rest of the input around it).
    let rest = input.rest();
    let (before, after) = rest.split_at(prefix_len.min(rest.len()));
    let mut header = before.to_vec();
    header.extend_from_slice(format!(";{NAME}={value};").as_bytes());
    header.extend_from_slice(after);
    let Ok(header) = HeaderValue::from_bytes(&header) else { return };
    let mut headers = HeaderMap::new();
    headers.insert(COOKIE, header);
    let others = other_cookie_pieces(&headers, NAME);
    let got = p.insert.extract(&mut headers, &Uri::from_static("/"));
    assert_eq!(got.key.as_deref(), Some(id.as_str()), "the cookie was not found in {rest:?}");
    assert_eq!(got.route, expected.route);
    assert!(!got.rejected);
    assert_stripped(&headers, &others);
}

/// After stripping: at most one Cookie header, none of our pairs, the others unchanged.
fn assert_stripped(headers: &HeaderMap, others: &[Vec<u8>]) {
    let left: Vec<_> = headers.get_all(COOKIE).iter().collect();
    assert!(left.len() <= 1, "stripping leaves one Cookie header: {left:?}");
    let pieces: Vec<Vec<u8>> = match left.first() {
        Some(v) => v.as_bytes().split(|&b| b == b';').map(trim_ows).map(<[u8]>::to_vec).collect(),
        None => Vec::new(),
    };
    assert!(
        pieces.iter().all(|p| trim_ows(p.split(|&b| b == b'=').next().unwrap_or(b"")) != NAME.as_bytes()),
        "our cookie was forwarded: {left:?}"
    );
    assert_eq!(pieces, others, "the other cookies must be forwarded byte for byte");
}

/// A request from session-key input: byte 0 picks the mode, the first line is the request
/// target, each further line `name:value` a header (invalid ones skipped; each [`SIGNED_MARK`]
/// in a value becomes a validly signed insert cookie value).
fn request(data: &[u8]) -> (u8, Uri, HeaderMap) {
    let p = policies();
    let mut input = Input(data);
    let mode = input.byte() % 4;
    let uri = Uri::try_from(input.line()).unwrap_or_else(|_| Uri::from_static("/"));
    let mut headers = HeaderMap::new();
    while !input.0.is_empty() {
        let line = input.line();
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let Ok(name) = HeaderName::from_bytes(trim_ows(&line[..colon])) else { continue };
        let mut value = Vec::new();
        for &b in trim_ows(&line[colon + 1..]) {
            match b {
                SIGNED_MARK => value.extend_from_slice(p.signed.2.as_bytes()),
                _ => value.push(b),
            }
        }
        if let Ok(value) = HeaderValue::from_bytes(&value) {
            headers.append(name, value);
        }
    }
    (mode, uri, headers)
}

/// Target `session_key`: key extraction in every mode, and learning from a response. Never a
/// panic; a key is always a valid header value the request carried (insert: a value we signed);
/// a validly signed insert cookie in any Cookie header is found; stripping removes exactly our
/// cookie; a response's learned session is a valid value too.
pub fn session_key(data: &[u8]) {
    let p = policies();
    let (mode, uri, headers) = request(data);
    let policy = match mode {
        0 => &p.insert,
        1 => &p.insert_keep,
        2 => &p.learn,
        _ => &p.header,
    };
    let mut after = headers.clone();
    let got = policy.extract(&mut after, &uri);
    if let Some(key) = &got.key {
        assert_valid_key(key);
    }
    let carried = |key: &str| {
        let in_header = headers.iter().any(|(_, v)| v.as_bytes().windows(key.len()).any(|w| w == key.as_bytes()));
        in_header || uri.path().contains(key)
    };
    match mode {
        0 | 1 => {
            let ours: Vec<&[u8]> = headers
                .get_all(COOKIE)
                .iter()
                .flat_map(|v| cookie_pairs(v.as_bytes()))
                .filter(|(n, _)| *n == NAME.as_bytes())
                .map(|(_, v)| v)
                .collect();
            let codec = codec(policy);
            if let Some(key) = &got.key {
                let route = got.route.clone();
                let verified = Verified { id: key.clone(), route };
                let value = ours.iter().find_map(|v| {
                    let v = std::str::from_utf8(v).ok()?;
                    (codec.verify(v).as_ref() == Some(&verified)).then_some(v)
                });
                assert_resigns(codec, &verified, value.expect("the key comes from one of our cookies"));
            }
            if ours.contains(&p.signed.2.as_bytes()) {
                assert!(got.key.is_some(), "a validly signed cookie was not found");
            }
            assert_eq!(got.rejected, !ours.is_empty() && got.key.is_none());
            if mode == 1 || ours.is_empty() {
                assert_eq!(after, headers, "headers changed without our cookie to strip");
            } else {
                assert_stripped(&after, &other_cookie_pieces(&headers, NAME));
            }
        }
        _ => {
            assert_eq!(after, headers, "learn and header modes do not change the request");
            assert!(got.route.is_none() && !got.rejected);
            if let Some(key) = &got.key {
                assert!(carried(key), "key {key:?} is not in the request");
            }
        }
    }
    // The same headers as a backend's response.
    if let Some(Learned::Pin(key)) = policy.learn(&headers) {
        assert_valid_key(&key);
        assert!(carried(&key), "learned key {key:?} is not in the response");
    }
}

/// A finding of the campaign, fixed in `config::collect`: some TOML syntax errors, a control
/// character in a comment for one, came out with an empty message (`fuzz.toml:1:4: `);
/// regression input fuzz/regressions/config/empty-message-control-char-in-comment. Every error
/// must now say something.
const TOLERATE_EMPTY_TOML_MESSAGE: bool = false;

/// Target `config`: any text, through parse and validation. Never a panic; every error is
/// `fuzz.toml:LINE:COL: message` with a line and column inside the text; a config that
/// validates builds its backend pool and session policy, and its insert cookie verifies for
/// every backend.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    // Validation reads the files a config names (secret_file, TLS certificate and key): keep
    // the fuzzer away from device files that never end or block.
    if ["/dev/", "/proc/", "/sys/"].iter().any(|d| text.contains(d)) {
        return;
    }
    let config = match stickylb::config::parse(&text, "fuzz.toml") {
        Ok(config) => config,
        Err(e) => {
            let lines = text.split('\n').count();
            let messages = e.messages();
            assert!(!messages.is_empty(), "an error without a message");
            for m in messages {
                let rest = m.strip_prefix("fuzz.toml:").unwrap_or_else(|| panic!("no file name: {m:?}"));
                let mut parts = rest.splitn(3, ':');
                let line: usize = parts.next().and_then(|l| l.parse().ok()).unwrap_or_else(|| panic!("no line: {m:?}"));
                let col: usize =
                    parts.next().and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no column: {m:?}"));
                assert!((1..=lines).contains(&line) && col >= 1, "position outside the text: {m:?}");
                let message = parts.next().and_then(|msg| msg.strip_prefix(' '));
                let message = message.unwrap_or_else(|| panic!("no message: {m:?}"));
                assert!(!message.is_empty() || TOLERATE_EMPTY_TOML_MESSAGE, "empty message: {m:?}");
                assert!(!m.contains('\n'), "one line per message: {m:?}");
            }
            return;
        }
    };
    let pool = stickylb::balance::Pool::new(&config, None);
    assert_eq!(pool.backends().len(), config.backends.len());
    let chosen = pool.select(Some("fuzz"), &[]);
    assert!(chosen.is_none_or(|b| b.accepts_new()));
    for tls in [false, true] {
        let policy = SessionPolicy::new(&config.session, tls);
        let Some(codec) = &policy.codec else { continue };
        let id = CookieCodec::new_id();
        for b in pool.backends() {
            let route = Route { backend: b.name.clone(), created_ms: 1_764_300_000_000 };
            let set_cookie = codec.set_cookie(&id, &route);
            let value = codec.signed_route_value(&id, &route);
            assert!(set_cookie.as_bytes().starts_with(format!("{}={value}", codec.name()).as_bytes()));
            let verified = codec.verify(&value);
            assert_eq!(verified, Some(Verified { id: id.clone(), route: Some(route) }), "backend {:?}", b.name);
        }
    }
}

/// The headers of `h` that `keep` accepts, by name, each with its values in order (the order
/// between different names means nothing, and `HeaderMap` changes it on removal).
fn by_name(h: &HeaderMap, keep: impl Fn(&HeaderName) -> bool) -> Vec<(HeaderName, Vec<HeaderValue>)> {
    let mut out: Vec<_> =
        h.keys().filter(|n| keep(n)).map(|n| (n.clone(), h.get_all(n).iter().cloned().collect())).collect();
    out.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    out
}

/// The fixed hop-by-hop headers (RFC 9110 7.6.1) besides those `Connection` names and `Proxy-*`.
const HOP_BY_HOP: [&str; 6] = ["connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade"];

/// Target `forward_headers`: the rewrite of a request's headers for the backend. Byte 0 picks
/// the scheme, then a client address (IPv4 or IPv6 and port), then `name:value` lines.
/// `strip_hop_by_hop` leaves no hop-by-hop header (fixed list, `Proxy-*`, those `Connection`
/// names) and every other header as it was; `add_forwarded` then leaves exactly one
/// `X-Forwarded-For` ending with the client's address after what the client sent, one
/// `X-Forwarded-Proto`, `X-Forwarded-Host` = `Host` (or none), one `Forwarded` ending with this
/// hop's element, and everything else as it was.
pub fn forward_headers(data: &[u8]) {
    let mut input = Input(data);
    let flags = input.byte();
    let proto = if flags & 1 == 1 { "https" } else { "http" };
    let ip = if flags & 2 == 2 {
        let mut b = [0u8; 16];
        let head = input.take(16);
        b[..head.len()].copy_from_slice(head);
        IpAddr::V6(Ipv6Addr::from(b))
    } else {
        let mut b = [0u8; 4];
        let head = input.take(4);
        b[..head.len()].copy_from_slice(head);
        IpAddr::V4(Ipv4Addr::from(b))
    };
    let client = SocketAddr::new(ip, u16::from(input.byte()) << 8 | u16::from(input.byte()));
    let mut headers = HeaderMap::new();
    while !input.0.is_empty() {
        let line = input.line();
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(trim_ows(&line[..colon])), HeaderValue::from_bytes(trim_ows(&line[colon + 1..])))
        else {
            continue;
        };
        headers.append(name, value);
    }

    // strip_hop_by_hop
    let named: Vec<HeaderName> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b',').map(trim_ows))
        .filter_map(|t| HeaderName::from_bytes(t).ok())
        .collect();
    let hop =
        |n: &HeaderName| HOP_BY_HOP.contains(&n.as_str()) || n.as_str().starts_with("proxy-") || named.contains(n);
    let before = by_name(&headers, |n| !hop(n));
    strip_hop_by_hop(&mut headers);
    let stripped: Vec<_> = headers.keys().filter(|n| hop(n)).collect();
    assert!(stripped.is_empty(), "hop-by-hop headers left: {stripped:?}");
    assert_eq!(by_name(&headers, |n| !hop(n)), before, "end-to-end headers must stay as they were");

    // add_forwarded
    let xff = HeaderName::from_static("x-forwarded-for");
    let fwd = HeaderName::from_static("forwarded");
    let ours = ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded"];
    let others = |h: &HeaderMap| by_name(h, |n| !ours.contains(&n.as_str()));
    let prior = |name: &HeaderName| -> Vec<String> {
        headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).map(str::to_owned).collect()
    };
    let (prior_xff, prior_fwd) = (prior(&xff), prior(&fwd));
    let host = headers.get(HOST).cloned();
    let before = others(&headers);
    let seen = Seen::of(&headers);
    add_forwarded(&mut headers, &seen, client, proto);
    assert_eq!(others(&headers), before, "add_forwarded changed other headers");
    let one = |name: &str| -> String {
        let all: Vec<_> = headers.get_all(name).iter().collect();
        assert_eq!(all.len(), 1, "{name}: {all:?}");
        all[0].to_str().unwrap_or_else(|_| panic!("{name} is not visible ASCII: {:?}", all[0])).to_owned()
    };
    let ip = client.ip().to_string();
    let mut expected_xff = prior_xff;
    expected_xff.push(ip.clone());
    assert_eq!(one("x-forwarded-for"), expected_xff.join(", "));
    assert_eq!(one("x-forwarded-proto"), proto);
    match &host {
        Some(h) => assert_eq!(headers.get_all("x-forwarded-host").iter().collect::<Vec<_>>(), [h]),
        None => assert!(!headers.contains_key("x-forwarded-host")),
    }
    let forwarded = one("forwarded");
    let element = forwarded.strip_prefix(&prior_fwd.iter().map(|f| format!("{f}, ")).collect::<String>());
    let element = element.unwrap_or_else(|| panic!("the client's Forwarded list must come first: {forwarded:?}"));
    let node = if client.is_ipv6() { format!("for=\"[{ip}]\"") } else { format!("for={ip}") };
    assert!(element.starts_with(&node), "{element:?} for {ip}");
    assert!(element.ends_with(&format!(";proto={proto}")), "{element:?}");
}
