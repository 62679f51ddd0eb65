//! The error type of a config that cannot be used, and how a byte offset of the file becomes
//! `FILE:LINE:COL` (1-based; the column counts characters, as editors do).

use std::ops::Range;

/// A config that cannot be used; `Display` gives one `FILE:LINE:COL: message` per line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: {message}")]
    Io { file: String, message: String },
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

impl ConfigError {
    /// An error at a byte span of the file (or at 1:1 when the span is unknown).
    pub fn at_span(file: &str, text: &str, span: Option<Range<usize>>, message: &str) -> Self {
        ConfigError::Invalid(vec![located(file, text, span.map(|s| s.start), message)])
    }

    /// Every message, one per entry.
    pub fn messages(&self) -> Vec<String> {
        match self {
            ConfigError::Io { .. } => vec![self.to_string()],
            ConfigError::Invalid(v) => v.clone(),
        }
    }
}

/// `FILE:LINE:COL: message` for a byte offset of `text` (1:1 when unknown), on one line.
pub(super) fn located(file: &str, text: &str, offset: Option<usize>, message: &str) -> String {
    let (line, col) = offset.map(|o| line_col(text, o)).unwrap_or((1, 1));
    let message = message.trim().replace('\n', " ");
    format!("{file}:{line}:{col}: {message}")
}

/// 1-based line and column of a byte offset.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// The file's text, and the byte offset and value of its first byte that is not UTF-8, if
/// any: the rest of the file is still checked, with such bytes read as U+FFFD (the offset is
/// the same in both, since everything before it is unchanged).
pub(super) fn decode(bytes: &[u8]) -> (String, Option<(usize, u8)>) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (text.to_owned(), None),
        Err(e) => (String::from_utf8_lossy(bytes).into_owned(), Some((e.valid_up_to(), bytes[e.valid_up_to()]))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_columns_are_one_based_and_count_characters() {
        let text = "ab\ncé = 1\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 3), (2, 1));
        assert_eq!(line_col(text, text.find('=').unwrap()), (2, 4));
        assert_eq!(located("f", text, None, "x\ny"), "f:1:1: x y");
    }

    #[test]
    fn the_first_bad_byte_is_located() {
        let (text, bad) = decode(b"[log]\nlevel = \"in\xfffo\"\n");
        let (offset, byte) = bad.expect("a bad byte");
        assert_eq!((line_col(&text, offset), byte), ((2, 12), 0xff));
        assert!(text.contains('\u{fffd}'));
        assert_eq!(decode(b"a = 1\n"), ("a = 1\n".to_string(), None));
    }
}
