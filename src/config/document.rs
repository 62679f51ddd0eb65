//! The file as a tree of spans: where every key and value of the TOML text sits, by dotted
//! path (`server.listen`, `backend.1.name`). Used to point validation errors at their key,
//! and to take a key = value pair (or a `[[backend]]` table) out of the text after serde
//! rejected it, so that the next parse reports the next problem (see `config::collect`).
//!
//! The tree is read through toml's own serde deserializer, with the `toml::Spanned` protocol
//! (a struct with serde_spanned's reserved name and fields), so it sees the exact spans toml
//! reports in its errors; values without a span (implicit tables of dotted keys) are walked
//! through without one.

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;
use std::ops::Range;

// serde_spanned's protocol, as toml's deserializer recognises it.
const SPANNED: &str = "$__serde_spanned_private_Spanned";
const START: &str = "$__serde_spanned_private_start";
const END: &str = "$__serde_spanned_private_end";
const VALUE: &str = "$__serde_spanned_private_value";
const FIELDS: &[&str] = &[START, END, VALUE];

/// One key = value pair or one array element of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    /// Dotted path; array elements by index: `backend.0.name`.
    pub path: String,
    pub key: Option<Range<usize>>,
    pub value: Option<Range<usize>>,
    /// Inside an inline table or array: removing it must also remove a comma.
    pub inline: bool,
}

impl Entry {
    /// From the key (or the table header) to the end of the value.
    fn extent(&self) -> Option<Range<usize>> {
        match (&self.key, &self.value) {
            (Some(k), Some(v)) => Some(k.start.min(v.start)..k.end.max(v.end)),
            (Some(s), None) | (None, Some(s)) => Some(s.clone()),
            (None, None) => None,
        }
    }
}

/// Every entry of a file that is valid TOML (not necessarily a valid config).
#[derive(Debug, Default)]
pub(super) struct Document {
    entries: Vec<Entry>,
}

impl Document {
    /// Reads the spans of `text`; fails with toml's error for text that is not TOML.
    pub fn parse(text: &str) -> Result<Document, toml::de::Error> {
        let root: Node = toml::from_str(text)?;
        let mut doc = Document::default();
        if let Kind::Table(pairs) = &root.kind {
            doc.walk_table(text, "", pairs, false);
        }
        Ok(doc)
    }

    /// `inline`: the table is an inline table `{ ... }` (or a dotted key inside one).
    fn walk_table(&mut self, text: &str, prefix: &str, pairs: &[(Key, Node)], inline: bool) {
        for (key, node) in pairs {
            let path = if prefix.is_empty() { key.name.clone() } else { format!("{prefix}.{}", key.name) };
            self.entries.push(Entry { path: path.clone(), key: key.span.clone(), value: node.span.clone(), inline });
            self.walk_value(text, &path, node, inline);
        }
    }

    fn walk_value(&mut self, text: &str, path: &str, node: &Node, parent_inline: bool) {
        match &node.kind {
            Kind::Table(pairs) => {
                let inline = match &node.span {
                    Some(s) => text.get(s.clone()).is_some_and(|v| v.starts_with('{')),
                    None => parent_inline,
                };
                self.walk_table(text, path, pairs, inline);
            }
            Kind::Array(items) => {
                // An array of tables starts where its first element (a `[[name]]` header)
                // starts; an inline array starts at its `[`, before its first element.
                let of_tables = matches!((&node.span, items.first().and_then(|i| i.span.as_ref())),
                    (Some(a), Some(first)) if a.start == first.start);
                for (i, item) in items.iter().enumerate() {
                    let path = format!("{path}.{i}");
                    self.entries.push(Entry {
                        path: path.clone(),
                        key: None,
                        value: item.span.clone(),
                        inline: !of_tables,
                    });
                    self.walk_value(text, &path, item, !of_tables);
                }
            }
            Kind::Leaf => {}
        }
    }

    /// The entry at a dotted path.
    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.path == path)
    }

    /// Where the key at `path` starts (or its value, for array elements).
    pub fn key_offset(&self, path: &str) -> Option<usize> {
        let e = self.get(path)?;
        e.key.as_ref().or(e.value.as_ref()).map(|s| s.start)
    }

    /// Where the value at `path` starts.
    pub fn value_offset(&self, path: &str) -> Option<usize> {
        self.get(path)?.value.as_ref().map(|s| s.start)
    }

    /// The smallest entry around `span` (an error's span), and the bytes to blank to take it
    /// out of the text while keeping the text valid TOML: its dotted-key prefix and, inside an
    /// inline table or array, one comma.
    pub fn removable(&self, text: &str, span: &Range<usize>) -> Option<(String, Range<usize>)> {
        let entry = self
            .entries
            .iter()
            // Equal extents (a one-element array of tables and its element): the deepest.
            .rev()
            .filter_map(|e| e.extent().map(|x| (e, x)))
            .filter(|(_, x)| x.start <= span.start && span.end <= x.end && (span.start < x.end || x.is_empty()))
            .min_by_key(|(_, x)| x.len())?;
        let (entry, mut range) = (entry.0, entry.1);
        if entry.key.is_some() {
            range.start = dotted_prefix_start(text, range.start);
        }
        if entry.inline {
            range = with_comma(text, range);
        }
        Some((entry.path.clone(), range))
    }
}

/// For `a.b.key = 1`, where `a` starts (given where `key` starts).
fn dotted_prefix_start(text: &str, key_start: usize) -> usize {
    let bytes = text.as_bytes();
    let before = |i: usize| {
        let mut j = i;
        while j > 0 && matches!(bytes[j - 1], b' ' | b'\t') {
            j -= 1;
        }
        j
    };
    let mut start = key_start;
    loop {
        let j = before(start);
        if j == 0 || bytes[j - 1] != b'.' {
            return start;
        }
        let mut k = before(j - 1);
        while k > 0 && (bytes[k - 1].is_ascii_alphanumeric() || matches!(bytes[k - 1], b'_' | b'-' | b'"' | b'\'')) {
            k -= 1;
        }
        if k == before(j - 1) {
            return start;
        }
        start = k;
    }
}

/// `range` and the comma after it (or, for the last item, the comma before it).
fn with_comma(text: &str, range: Range<usize>) -> Range<usize> {
    let bytes = text.as_bytes();
    let mut end = range.end;
    while end < bytes.len() && bytes[end].is_ascii_whitespace() {
        end += 1;
    }
    if end < bytes.len() && bytes[end] == b',' {
        return range.start..end + 1;
    }
    let mut start = range.start;
    while start > 0 && bytes[start - 1].is_ascii_whitespace() {
        start -= 1;
    }
    if start > 0 && bytes[start - 1] == b',' {
        return start - 1..range.end;
    }
    range
}

/// `text` with `range` replaced by spaces (newlines kept), so that every other offset, line
/// and column stays where it was. False when there was nothing left to blank.
pub(super) fn blank(text: &mut String, range: Range<usize>) -> bool {
    let range = range.start.min(text.len())..range.end.min(text.len());
    if !text.is_char_boundary(range.start) || !text.is_char_boundary(range.end) {
        return false;
    }
    let changed = text[range.clone()].bytes().any(|b| !matches!(b, b' ' | b'\n'));
    let blanked: String = text[range.clone()]
        .chars()
        .map(|c| if c == '\n' { "\n".to_owned() } else { " ".repeat(c.len_utf8()) })
        .collect();
    text.replace_range(range, &blanked);
    changed
}

// ---- the span tree, read through serde --------------------------------------------------

struct Key {
    span: Option<Range<usize>>,
    name: String,
}

struct Node {
    span: Option<Range<usize>>,
    kind: Kind,
}

enum Kind {
    Table(Vec<(Key, Node)>),
    Array(Vec<Node>),
    Leaf,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E>(self, s: &str) -> Result<Key, E> {
                Ok(Key { span: None, name: s.to_owned() })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Key, A::Error> {
                let (mut start, mut end, mut name) = (0, 0, String::new());
                while let Some(field) = map.next_key::<String>()? {
                    match field.as_str() {
                        START => start = map.next_value()?,
                        END => end = map.next_value()?,
                        _ => name = map.next_value()?,
                    }
                }
                Ok(Key { span: Some(start..end), name })
            }
        }
        d.deserialize_struct(SPANNED, FIELDS, KeyVisitor)
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_struct(SPANNED, FIELDS, NodeVisitor)
    }
}

/// The value inside a span: read as itself, not asked for a span again.
struct Unspanned(Node);

impl<'de> Deserialize<'de> for Unspanned {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor).map(Unspanned)
    }
}

struct NodeVisitor;

impl NodeVisitor {
    fn leaf<E>(self) -> Result<Node, E> {
        Ok(Node { span: None, kind: Kind::Leaf })
    }
}

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any TOML value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Node, E> {
        self.leaf()
    }
    fn visit_i64<E>(self, _: i64) -> Result<Node, E> {
        self.leaf()
    }
    fn visit_u64<E>(self, _: u64) -> Result<Node, E> {
        self.leaf()
    }
    fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
        self.leaf()
    }
    fn visit_str<E>(self, _: &str) -> Result<Node, E> {
        self.leaf()
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node { span: None, kind: Kind::Array(items) })
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut pairs = Vec::new();
        let (mut start, mut end) = (None, None);
        while let Some(key) = map.next_key::<Key>()? {
            match (&key.span, key.name.as_str()) {
                (None, START) => start = Some(map.next_value::<usize>()?),
                (None, END) => end = Some(map.next_value::<usize>()?),
                (None, VALUE) => {
                    let mut node = map.next_value::<Unspanned>()?.0;
                    node.span = start.zip(end).map(|(s, e)| s..e);
                    return Ok(node);
                }
                _ => {
                    let value = map.next_value()?;
                    pairs.push((key, value));
                }
            }
        }
        Ok(Node { span: None, kind: Kind::Table(pairs) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "a.b = 17\n[server]\nlisten = [\"x\", \"y\"]\n[server.tls]\ncert = \"c\"\n\
                        [[backend]]\nname = \"n\"\nhealth = { path = \"/p\", interval = \"1s\" }\n";

    #[test]
    fn paths_find_keys_and_values() {
        let doc = Document::parse(TEXT).unwrap();
        let at = |path: &str| doc.key_offset(path).map(|o| &TEXT[o..o + 4]);
        assert_eq!(at("server.listen"), Some("list"));
        assert_eq!(at("server.tls.cert"), Some("cert"));
        assert_eq!(at("backend.0.name"), Some("name"));
        assert_eq!(at("backend.0.health.interval"), Some("inte"));
        assert_eq!(at("a.b"), Some("b = "));
        assert_eq!(doc.value_offset("server.listen.1").map(|o| &TEXT[o..o + 3]), Some("\"y\""));
        assert_eq!(at("server.threads"), None);
    }

    #[test]
    fn removal_keeps_the_text_valid_and_every_offset_in_place() {
        let doc = Document::parse(TEXT).unwrap();
        let remove = |needle: &str| {
            let at = TEXT.find(needle).unwrap();
            let (path, range) = doc.removable(TEXT, &(at..at + needle.len())).unwrap();
            let mut text = TEXT.to_owned();
            assert!(blank(&mut text, range));
            assert_eq!(text.len(), TEXT.len());
            assert_eq!(text.lines().count(), TEXT.lines().count());
            let after = Document::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert!(!text.contains(needle) && after.entries.len() < doc.entries.len(), "{path} still there:\n{text}");
            (path, text)
        };
        assert_eq!(remove("17").0, "a.b");
        assert!(remove("17").1.starts_with("        \n"));
        assert_eq!(remove("\"y\"").0, "server.listen.1");
        assert_eq!(remove("\"x\"").0, "server.listen.0");
        assert_eq!(remove("\"/p\"").0, "backend.0.health.path");
        assert_eq!(remove("\"1s\"").0, "backend.0.health.interval");
        // A missing key is reported at the whole [[backend]] table: the table goes.
        let table = &TEXT[TEXT.find("[[backend]]").unwrap()..TEXT.len() - 1];
        assert_eq!(remove(table).0, "backend.0");
    }

    #[test]
    fn blanking_twice_reports_nothing_left() {
        let mut text = "a = 1\n".to_owned();
        assert!(blank(&mut text, 0..5));
        assert!(!blank(&mut text, 0..5));
        assert_eq!(text, "     \n");
    }
}
