//! A backend response head passed through as bytes: when the head is *plain* — no field the
//! proxy or the server's encoder must edit or join — its field lines are written to the
//! client as the backend sent them (its names' case included), instead of being parsed into a
//! `HeaderMap` and encoded again. Most responses are plain (nginx's, Tomcat's with a length).
//!
//! Plain means, besides what the parse already checked (names are tokens, values what
//! `HeaderValue` accepts, as `httparse` checks both): every line ends in CRLF; no
//! `Transfer-Encoding`, `TE`, `Trailer`, `Upgrade` or `Proxy-*` field; a `Connection` only of
//! `keep-alive` and `close` (this hop's own, left out like `Keep-Alive`); at most one
//! `Content-Length`, one number; no `X-Stickylb-Backend` (the debug header replaces it); not
//! a 1xx or 101. Anything else goes through the map, as before.
//! The fields the proxy adds (a new session's `Set-Cookie`, the debug header, `Connection:
//! close`) go in the response's map, written after these lines by the encoder
//! (`server::encode`), which applies the same rules to both; learning reads the lines through
//! [`RawFields::fields`]. Owns no I/O.

use super::spans::Span;
use bytes::Bytes;

/// The field lines of a plain head, and what the encoder needs to know of them.
pub struct RawFields {
    head: Bytes,
    /// The field lines: from the first one's start to the end of the last one's CRLF.
    lines: Span,
    /// Lines left out (this hop's `Connection` and `Keep-Alive`), in order.
    cut: [Span; 2],
    cuts: u8,
    /// The `Content-Length` line (with its CRLF), its value's text and its number.
    length: Option<(Span, Span, u64)>,
    date: bool,
}

/// What a body carrying a backend's response can say of its head: its fields as bytes, when
/// they were passed through (the server's encoder writes them; learning and the access log
/// read them on the way).
pub trait PassThrough {
    fn raw_fields(&self) -> Option<&RawFields> {
        None
    }
}

/// `head[at..at + 2]` is CRLF (two byte compares: a slice compare calls `memcmp`).
fn crlf(head: &[u8], at: usize) -> bool {
    head.get(at) == Some(&b'\r') && head.get(at + 1) == Some(&b'\n')
}

impl RawFields {
    /// The head's field lines passed through, if it is plain (else `head` back); and whether
    /// the connection may carry another request (`http11`: the response is HTTP/1.1, kept
    /// alive by default). `lines`: each field's name and value in `head`.
    pub fn plain(head: Bytes, lines: &[(Span, Span)], http11: bool) -> Result<(RawFields, bool), Bytes> {
        match RawFields::check(&head, lines, http11) {
            Some((raw, keep_alive)) => Ok((RawFields { head, ..raw }, keep_alive)),
            None => Err(head),
        }
    }

    fn check(head: &[u8], lines: &[(Span, Span)], http11: bool) -> Option<(RawFields, bool)> {
        let end = head.len().checked_sub(2)?;
        if !crlf(head, end) {
            return None;
        }
        let start = lines.first().map_or(end, |(name, _)| name.start());
        let mut raw = RawFields {
            head: Bytes::new(),
            lines: Span::new(start, end),
            cut: [Span::default(); 2],
            cuts: 0,
            length: None,
            date: false,
        };
        let (mut keep_alive, mut close) = (http11, false);
        for (i, &(name, value)) in lines.iter().enumerate() {
            let line_end = lines.get(i + 1).map_or(end, |(next, _)| next.start());
            if line_end < name.start() + 2 || !crlf(head, line_end - 2) {
                return None; // a bare LF: not passed on as it came
            }
            let line = Span::new(name.start(), line_end);
            let n = &head[name.range()];
            let v = &head[value.range()];
            let is = |known: &str| n.eq_ignore_ascii_case(known.as_bytes());
            match n.len() {
                10 if is("connection") => {
                    if !super::h1::names_nothing_else(v) {
                        return None;
                    }
                    super::h1::connection(v, &mut close, &mut keep_alive);
                    raw.cut(line)?;
                }
                10 if is("keep-alive") => raw.cut(line)?,
                2 | 7 | 17 if is("te") || is("trailer") || is("upgrade") || is("transfer-encoding") => return None,
                14 if is("content-length") => {
                    if raw.length.is_some() || v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
                        return None;
                    }
                    let number = v.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
                    raw.length = Some((line, value, number));
                }
                4 if is("date") => raw.date = true,
                // The debug header replaces a backend's field of its name (in the map).
                18 if is("x-stickylb-backend") => return None,
                // `HeaderName`'s limit is 64 KiB; such a name goes the general way.
                len if len > 1024 || (len >= 6 && n[..6].eq_ignore_ascii_case(b"proxy-")) => return None,
                _ => {}
            }
        }
        Some((raw, keep_alive))
    }

    fn cut(&mut self, line: Span) -> Option<()> {
        let slot = self.cut.get_mut(usize::from(self.cuts))?;
        *slot = line;
        self.cuts += 1;
        Some(())
    }

    /// The whole head, status line included.
    pub fn head(&self) -> &Bytes {
        &self.head
    }

    /// The fields passed through, as (name, value) bytes in order: the name as the backend
    /// wrote it, the value without the whitespace around it (as `httparse` gives it).
    pub fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let cut = self.cut;
        let cuts = usize::from(self.cuts);
        let mut at = self.lines.start();
        let end = self.lines.range().end;
        std::iter::from_fn(move || loop {
            if at >= end {
                return None;
            }
            let start = at;
            let len = memchr::memchr(b'\n', &self.head[start..end])?;
            at = start + len + 1;
            if cut[..cuts].iter().any(|c| c.start() == start) {
                continue;
            }
            let line = &self.head[start..start + len - 1]; // without its CRLF
            let colon = memchr::memchr(b':', line)?;
            return Some((&line[..colon], line[colon + 1..].trim_ascii()));
        })
    }

    /// The `Content-Length` as a number, if the head has one.
    pub fn length(&self) -> Option<u64> {
        self.length.map(|(_, _, n)| n)
    }

    /// The `Content-Length` value as the backend wrote it.
    pub fn length_text(&self) -> Option<&str> {
        self.length.and_then(|(_, v, _)| std::str::from_utf8(&self.head[v.range()]).ok())
    }

    /// The backend sent a `Date`.
    pub fn has_date(&self) -> bool {
        self.date
    }

    /// The fields as a client reads the lines [`RawFields::write`] writes.
    #[cfg(test)]
    pub fn to_map(&self) -> http::HeaderMap {
        let mut lines = Vec::new();
        self.write(&mut lines, false);
        let mut map = http::HeaderMap::new();
        for line in lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let line = line.strip_suffix(b"\r").expect("every line ends in CRLF");
            let colon = line.iter().position(|&b| b == b':').expect("name: value");
            let name = http::HeaderName::from_bytes(&line[..colon]).expect("a valid name");
            let value = http::HeaderValue::from_bytes(line[colon + 1..].trim_ascii()).expect("a valid value");
            map.append(name, value);
        }
        map
    }

    /// Write the field lines into `dst` as they came, but the cut ones, and the
    /// `Content-Length` line when `without_length`.
    pub fn write(&self, dst: &mut Vec<u8>, without_length: bool) {
        let mut cut = [Span::default(); 3];
        let n = usize::from(self.cuts);
        cut[..n].copy_from_slice(&self.cut[..n]);
        let mut n = n;
        if let (true, Some((line, _, _))) = (without_length, self.length) {
            cut[n] = line;
            n += 1;
            cut[..n].sort_unstable_by_key(|s| s.start());
        }
        let mut at = self.lines.start();
        for s in &cut[..n] {
            dst.extend_from_slice(&self.head[at..s.start()]);
            at = s.range().end;
        }
        dst.extend_from_slice(&self.head[at..self.lines.range().end]);
    }
}
