//! Header rewriting for both directions: hop-by-hop headers out, split `Cookie` fields joined
//! into one for the HTTP/1.1 hop (this hop's forwarding fields are `super::forwarding`'s).
//! [`Seen`] is one pass over a request's fields, so that each edit looks a field up only when
//! it is there. It owns no policy about where a request goes and touches nothing but the
//! header map it is given.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::cell::RefCell;

// Statics, not consts: a `const` name is built (and its drop run) at each use.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static FORWARDED: HeaderName = HeaderName::from_static("forwarded");
pub static PREVIOUS_BACKEND: HeaderName = HeaderName::from_static("x-stickylb-previous-backend");

thread_local! {
    /// Emptied request maps, kept on each worker's thread for a later backend response's
    /// fields: the map a response is parsed into then allocates nothing.
    static SPARE: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
}
/// At most this many spare maps a thread, each of at most [`SPARE_MAX_CAPACITY`] fields (a
/// request with hundreds of fields does not keep its large map alive).
const SPARE_MAPS: usize = 4;
const SPARE_MAX_CAPACITY: usize = 64;

/// An empty map with room for `n` fields: a spare one when this thread has one.
pub fn map_with_capacity(n: usize) -> HeaderMap {
    match SPARE.with_borrow_mut(Vec::pop) {
        Some(mut map) => {
            map.reserve(n);
            map
        }
        None => HeaderMap::with_capacity(n),
    }
}

/// Keep `map`'s allocation (emptied) for [`map_with_capacity`].
pub fn recycle(mut map: HeaderMap) {
    if map.capacity() == 0 || map.capacity() > SPARE_MAX_CAPACITY {
        return;
    }
    map.clear();
    SPARE.with_borrow_mut(|spare| {
        if spare.len() < SPARE_MAPS {
            spare.push(map);
        }
    });
}

/// `token` is one of a `Connection` value's. Only a value of visible ASCII is read, as hyper
/// reads it (`HeaderValue::to_str`). `v` is as httparse passed it: tabs, spaces, visible ASCII
/// and bytes from 0x80.
pub fn has_token(v: &[u8], token: &str) -> bool {
    let token = token.as_bytes();
    if !v.contains(&b',') {
        // The usual value is one token: matching it trimmed also means it was all ASCII.
        return v.trim_ascii().eq_ignore_ascii_case(token);
    }
    v.is_ascii() && v.split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// `name: value\r\n`, as both HTTP/1.1 writers (the lean client's request head, the server's
/// response head) write a field.
pub fn push_line(buf: &mut Vec<u8>, name: &str, value: &[u8]) {
    buf.extend_from_slice(name.as_bytes());
    buf.extend_from_slice(b": ");
    buf.extend_from_slice(value);
    buf.extend_from_slice(b"\r\n");
}

/// `chunked` is the last transfer coding of this field.
pub fn last_coding_is_chunked(v: &HeaderValue) -> bool {
    v.to_str().ok().and_then(|s| s.rsplit(',').next()).is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"))
}

/// One more Content-Length field: every comma-separated part must be the same number.
pub fn add_length(found: &mut Option<Result<u64, ()>>, v: &HeaderValue) {
    if let Some(Err(())) = found {
        return;
    }
    let b = v.as_bytes();
    if !b.is_empty() && b.len() <= 19 && b.iter().all(u8::is_ascii_digit) {
        // The usual value, one number (19 digits cannot overflow): read without the general
        // path's UTF-8 check, split and trim, which were most of its cost.
        let n = b.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
        *found = Some(if found.is_none_or(|f| f == Ok(n)) { Ok(n) } else { Err(()) });
        return;
    }
    add_length_general(found, v);
}

/// [`add_length`] for any value: visible ASCII, comma-separated numbers, spaces around them.
fn add_length_general(found: &mut Option<Result<u64, ()>>, v: &HeaderValue) {
    if let Some(Err(())) = found {
        return;
    }
    let Ok(s) = v.to_str() else {
        *found = Some(Err(()));
        return;
    };
    for part in s.split(',').map(str::trim) {
        let digits = !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
        match part.parse::<u64>() {
            Ok(n) if digits && found.is_none_or(|f| f == Ok(n)) => *found = Some(Ok(n)),
            _ => {
                *found = Some(Err(()));
                return;
            }
        }
    }
}

/// What one pass over a request's fields found: what the upstream hop's edits need to know,
/// so that each is a lookup only when the field is there at all.
#[derive(Default)]
pub struct Seen {
    pub hosts: usize,
    /// The first `Host`.
    pub host: Option<HeaderValue>,
    pub cookies: usize,
    pub forwarded_for: bool,
    pub forwarded: bool,
    pub forwarded_proto: bool,
    pub forwarded_host: bool,
    pub previous_backend: bool,
}

impl Seen {
    pub fn of(headers: &HeaderMap) -> Seen {
        let mut seen = Seen::default();
        for (k, v) in headers {
            if k == header::HOST {
                seen.hosts += 1;
                seen.host.get_or_insert_with(|| v.clone());
            } else if k == header::COOKIE {
                seen.cookies += 1;
            } else if k.as_str().starts_with("x-") || k == FORWARDED {
                seen.forwarded_for |= k == X_FORWARDED_FOR;
                seen.forwarded |= k == FORWARDED;
                seen.forwarded_proto |= k == X_FORWARDED_PROTO;
                seen.forwarded_host |= k == X_FORWARDED_HOST;
                seen.previous_backend |= k == PREVIOUS_BACKEND;
            }
        }
        seen
    }
}

/// The fixed hop-by-hop headers (RFC 9110 7.6.1), besides those `Connection` names. A
/// `static`, not a `const`: a `const` array of names is built (and dropped) at each use.
static HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Remove hop-by-hop headers: those the `Connection` header names, the fixed list, and every
/// `Proxy-*` header. One pass over the names finds which are there (usually none, or only
/// `Connection`); only those are looked up and removed. True if `Connection` named a field
/// that was there (which may be any field: what a [`Seen`] saw before may have changed).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) -> bool {
    let mut named = false;
    let (mut present, mut proxy) = (0u8, false);
    for k in headers.keys() {
        // A match on the text (length first), in HOP_BY_HOP's order.
        let bit = match k.as_str() {
            "connection" => 1,
            "keep-alive" => 2,
            "te" => 4,
            "trailer" => 8,
            "transfer-encoding" => 16,
            "upgrade" => 32,
            name => {
                proxy |= name.starts_with("proxy-");
                0
            }
        };
        present |= bit;
    }
    if present & 1 != 0 {
        // The names listed in Connection go too; taken out first so the map can change.
        let mut listed = headers.get_all(header::CONNECTION).iter();
        let (first, rest) = (listed.next().cloned(), listed.cloned().collect::<Vec<_>>());
        for value in first.iter().chain(&rest) {
            // Bytes: one non-ASCII token must not keep the others' headers in.
            for token in value.as_bytes().split(|&b| b == b',') {
                let token = token.trim_ascii();
                // The fixed names (`keep-alive`, ...) go below if they are there at all.
                if HOP_BY_HOP.iter().any(|h| token.eq_ignore_ascii_case(h.as_str().as_bytes())) {
                    continue;
                }
                if let Ok(name) = HeaderName::from_bytes(token) {
                    named |= headers.remove(name).is_some();
                }
            }
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    if proxy {
        let names: Vec<HeaderName> = headers.keys().filter(|k| k.as_str().starts_with("proxy-")).cloned().collect();
        for name in names {
            headers.remove(name);
        }
    }
    named
}

/// Join every `Cookie` field into one, in order, separated by `"; "` (RFC 9113 8.2.3: HTTP/2
/// clients may split the cookie into several fields, which must be one before an HTTP/1.1
/// hop). Several `Cookie` lines from an HTTP/1.1 client are joined the same way, as nginx
/// does: a backend reading only the first line would otherwise miss cookies. Empty fields are
/// skipped (and a Cookie made only of empty fields is removed). With at most one field
/// nothing changes and nothing is allocated.
pub fn join_cookies(headers: &mut HeaderMap) {
    let fields = headers.get_all(header::COOKIE);
    let mut iter = fields.iter();
    if iter.next().is_none() || iter.next().is_none() {
        return;
    }
    let mut joined = Vec::with_capacity(fields.iter().map(|v| v.len() + 2).sum());
    let mut sensitive = false;
    for value in fields {
        sensitive |= value.is_sensitive();
        let crumb = value.as_bytes().trim_ascii();
        if crumb.is_empty() {
            continue;
        }
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(crumb);
    }
    // Each field was a valid value and "; " is valid text, so this cannot fail.
    match HeaderValue::from_maybe_shared(bytes::Bytes::from(joined)) {
        Ok(mut value) if !value.is_empty() => {
            value.set_sensitive(sensitive);
            headers.insert(header::COOKIE, value);
        }
        _ => {
            headers.remove(header::COOKIE);
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    #[test]
    fn content_lengths_read_as_the_general_path_reads_them() {
        let values: &[&[u8]] = &[
            b"0",
            b"5",
            b"007",
            b"12345",
            b"1844674407370955161",
            b"9999999999999999999",
            b"18446744073709551615",
            b"18446744073709551616",
            b"00000000000000000001",
            b"",
            b" 5",
            b"5 ",
            b"5,5",
            b"5, 5",
            b"5, 6",
            b"+5",
            b"-5",
            b"5a",
            b"0x5",
            b",",
            b"5,",
            b"\t5",
            b"\xff5",
        ];
        let mut firsts = vec![None, Some(Ok(5)), Some(Ok(6)), Some(Err(()))];
        firsts.extend(values.iter().map(|v| {
            let mut f = None;
            add_length_general(&mut f, &HeaderValue::from_bytes(v).unwrap());
            f
        }));
        for first in &firsts {
            for v in values {
                let v = HeaderValue::from_bytes(v).unwrap();
                let (mut fast, mut general) = (*first, *first);
                add_length(&mut fast, &v);
                add_length_general(&mut general, &v);
                assert_eq!(fast, general, "{v:?} after {first:?}");
            }
        }
    }

    #[test]
    fn a_recycled_map_comes_back_empty_with_its_room() {
        let mut used = HeaderMap::with_capacity(40);
        used.append(header::HOST, HeaderValue::from_static("a"));
        let room = used.capacity();
        assert!(room > HeaderMap::<HeaderValue>::with_capacity(2).capacity());
        recycle(used);
        let again = map_with_capacity(2);
        assert!(again.is_empty());
        assert_eq!(again.capacity(), room, "the recycled map, not a new one");
        assert_eq!(
            map_with_capacity(2).capacity(),
            HeaderMap::<HeaderValue>::with_capacity(2).capacity(),
            "only one was kept"
        );
    }

    #[test]
    fn a_large_map_is_not_kept() {
        recycle(HeaderMap::with_capacity(500));
        assert_eq!(map_with_capacity(1).capacity(), HeaderMap::<HeaderValue>::with_capacity(1).capacity());
    }

    /// A header map of `lines`, in order (repeated names appended).
    pub(in crate::proxy) fn map(lines: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for &(name, value) in lines {
            h.append(name, HeaderValue::from_static(value));
        }
        h
    }

    #[test]
    fn hop_by_hop_and_named_headers_go() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Foo"),
            ("x-foo", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("proxy-authorization", "x"),
            ("x-keep", "1"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-keep"));

        // Odd Connection lists (empty and invalid tokens, several headers) do no harm.
        let mut h = map(&[
            ("connection", " , bad name ,close"),
            ("connection", "X-Second, Keep-Alive"),
            ("x-second", "1"),
            ("close", "named by Connection too"),
            ("keep-alive", "timeout=5"),
            ("x-keep", "1"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().collect::<Vec<_>>(), ["x-keep"]);

        // Each kind alone is found by the one-pass check.
        for name in ["proxy-connection", "connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade"] {
            let mut h = HeaderMap::new();
            h.insert("x-keep", HeaderValue::from_static("1"));
            h.insert(HeaderName::from_static(name), HeaderValue::from_static("x"));
            strip_hop_by_hop(&mut h);
            assert_eq!(h.len(), 1, "{name} stayed: {h:?}");
        }
    }

    fn cookies(h: &HeaderMap) -> Vec<&str> {
        h.get_all(header::COOKIE).iter().map(|v| v.to_str().unwrap()).collect()
    }

    #[test]
    fn split_cookie_fields_become_one_in_order() {
        let mut h =
            map(&[("cookie", "a=1"), ("x-other", "kept"), ("cookie", "STICKYLB=v.sig; b=2"), ("cookie", "c=3")]);
        join_cookies(&mut h);
        assert_eq!(cookies(&h), ["a=1; STICKYLB=v.sig; b=2; c=3"]);
        assert_eq!(h["x-other"], "kept");
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn one_cookie_field_or_none_is_left_alone() {
        let mut h = HeaderMap::new();
        join_cookies(&mut h);
        assert!(h.is_empty());
        // Untouched, even an odd single field (the same value object, not a rebuilt one).
        let one = HeaderValue::from_static(" a=1;  b=2 ");
        h.insert("cookie", one.clone());
        let before = h["cookie"].as_bytes().as_ptr();
        join_cookies(&mut h);
        assert_eq!(cookies(&h), [" a=1;  b=2 "]);
        assert_eq!(h["cookie"].as_bytes().as_ptr(), before, "a single field was rebuilt");
    }

    #[test]
    fn empty_cookie_fields_are_skipped() {
        let mut h = HeaderMap::new();
        for v in ["", "a=1", "  ", " b=2 ", ""] {
            h.append("cookie", HeaderValue::from_str(v).unwrap());
        }
        join_cookies(&mut h);
        assert_eq!(cookies(&h), ["a=1; b=2"]);

        let mut h = map(&[("cookie", ""), ("cookie", " ")]);
        join_cookies(&mut h);
        assert!(!h.contains_key("cookie"), "a Cookie of nothing: {h:?}");
    }

    #[test]
    fn a_sensitive_cookie_field_keeps_the_joined_one_sensitive() {
        let mut h = HeaderMap::new();
        let mut secret = HeaderValue::from_static("session=s3cret");
        secret.set_sensitive(true);
        h.append("cookie", HeaderValue::from_static("a=1"));
        h.append("cookie", secret);
        join_cookies(&mut h);
        assert_eq!(cookies(&h), ["a=1; session=s3cret"]);
        assert!(h["cookie"].is_sensitive());
    }

    #[test]
    fn one_pass_sees_hosts_cookies_and_our_own_header() {
        let h = map(&[
            ("host", "a.test"),
            ("host", "b.test"),
            ("cookie", "a=1"),
            ("cookie", "b=2"),
            ("x-stickylb-previous-backend", "app1"),
        ]);
        let seen = Seen::of(&h);
        assert_eq!((seen.hosts, seen.cookies), (2, 2));
        assert_eq!(seen.host.unwrap(), "a.test");
        assert!(seen.previous_backend && !seen.forwarded_for && !seen.forwarded_proto);
    }
}
