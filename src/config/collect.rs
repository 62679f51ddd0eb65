//! Reading a config file so that every problem is reported at once, type errors included.
//!
//! serde stops at the first error, so the text is checked in rounds: each error is recorded
//! with its position, then the key = value pair it points at (or the `[[backend]]` table that
//! lacks a key) is blanked out of a working copy of the text — replaced by spaces, so that
//! every other offset, line and column stays the same — and the copy is parsed again, until
//! it deserializes. A TOML syntax error blanks its line(s). The config that finally
//! deserializes (removed keys take their defaults) then goes through validation, whose
//! problems join the list. Problems come out in file order, one `FILE:LINE:COL: message`
//! each; problems that are not in the file (an environment variable) are named by it.

use super::document::{blank, Document};
use super::error::{decode, located};
use super::validate::{self, Checker};
use super::{Config, ConfigError};
use std::ffi::OsString;
use std::ops::Range;

/// More problems than this in one file: the rest are not looked for.
const MAX_PROBLEMS: usize = 64;

/// The problems found so far, each with the byte offset it sorts by.
pub(super) struct Problems<'a> {
    file: &'a str,
    text: &'a str,
    list: Vec<(usize, String)>,
}

impl<'a> Problems<'a> {
    pub fn new(file: &'a str, text: &'a str) -> Self {
        Self { file, text, list: Vec::new() }
    }

    /// A problem at a byte offset of the file (1:1 when unknown).
    pub fn at(&mut self, offset: Option<usize>, message: &str) {
        self.list.push((offset.unwrap_or(0), located(self.file, self.text, offset, message)));
    }

    /// A problem outside the file (its message names where it is).
    pub fn outside(&mut self, message: String) {
        self.list.push((0, message));
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    fn into_error(mut self) -> ConfigError {
        self.list.sort_by_key(|(offset, _)| *offset);
        ConfigError::Invalid(self.list.into_iter().map(|(_, m)| m).collect())
    }
}

/// Check a file's bytes (which may not be UTF-8).
pub(super) fn check_bytes(bytes: &[u8], file: &str) -> Result<Config, ConfigError> {
    let (text, bad) = decode(bytes);
    let mut problems = Problems::new(file, &text);
    if let Some((offset, byte)) = bad {
        problems.at(Some(offset), &format!("the file is not UTF-8 (byte 0x{byte:02x} here); save it as UTF-8"));
    }
    check(&text, problems, &process_env)
}

/// The process's environment.
pub(super) fn process_env(name: &str) -> Option<OsString> {
    std::env::var_os(name)
}

/// Check config text; `problems` may already hold some (bad bytes); `env` reads the
/// environment variables that override the file.
pub(super) fn check<'a>(
    text: &'a str,
    mut problems: Problems<'a>,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<Config, ConfigError> {
    let mut work = text.to_owned();
    if !syntax(&mut work, &mut problems) {
        return Err(problems.into_error());
    }
    let (config, removed) = data(&mut work, &mut problems);
    let Some(config) = config else {
        return Err(problems.into_error());
    };
    let doc = Document::parse(&work).unwrap_or_default();
    let mut checker = Checker::new(&mut problems, &doc, &removed, env);
    let config = validate::validate(config, &mut checker);
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(problems.into_error())
    }
}

/// Syntax errors, each line blanked after it is recorded; false when the text could not be
/// made into valid TOML. An error on the first line with content after the lines just blanked
/// is taken as a consequence of the previous one (an unclosed array, table or string goes on
/// failing line after line): it is not reported, and checking stops there.
fn syntax(work: &mut String, problems: &mut Problems) -> bool {
    let mut blanked_to: Option<usize> = None;
    for _ in 0..MAX_PROBLEMS {
        let e = match Document::parse(work) {
            Ok(_) => return true,
            Err(e) => e,
        };
        let span = e.span().unwrap_or(0..0);
        let lines = whole_lines(work, &span);
        if let Some(end) = blanked_to {
            let between = work.get(end..lines.start).unwrap_or("x");
            if between.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with('#')) {
                return false;
            }
        }
        // toml has no words for some errors (a control character in a comment).
        let message = e.message().trim();
        problems.at(Some(span.start), if message.is_empty() { "invalid TOML syntax here" } else { message });
        if !blank(work, lines.clone()) {
            return false;
        }
        blanked_to = Some(lines.end);
    }
    false
}

/// Type errors, unknown keys, missing keys: each recorded, then its pair blanked. Returns the
/// config once the text deserializes, and the paths of what was taken out.
fn data(work: &mut String, problems: &mut Problems) -> (Option<Config>, Vec<String>) {
    let mut removed = Vec::new();
    for _ in 0..MAX_PROBLEMS {
        let Ok(doc) = Document::parse(work) else { break };
        let e = match toml::from_str::<Config>(work) {
            Ok(config) => return (Some(config), removed),
            Err(e) => e,
        };
        let removable = e.span().and_then(|s| doc.removable(work, &s));
        // A table that lacks a key this loop took out (its value was wrong) was reported then.
        let consequence = removable.as_ref().is_some_and(|(table, _)| {
            missing_field(e.message()).is_some_and(|key| removed.contains(&format!("{table}.{key}")))
        });
        if !consequence {
            problems.at(e.span().map(|s| s.start), e.message());
        }
        let Some((path, range)) = removable else { break };
        if !blank(work, range) {
            break;
        }
        removed.push(path);
    }
    (None, removed)
}

/// The key of serde's "missing field `key`" message.
fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

/// The lines `span` touches, newline excluded.
fn whole_lines(text: &str, span: &Range<usize>) -> Range<usize> {
    let floor = |mut i: usize| {
        i = i.min(text.len());
        while !text.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    let start = text[..floor(span.start)].rfind('\n').map_or(0, |i| i + 1);
    let from = floor(span.end.saturating_sub(1).max(span.start)).max(start);
    let end = text[from..].find('\n').map_or(text.len(), |i| from + i);
    start..end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_lines_cover_the_span_and_no_newline() {
        let text = "a = 1\nb = [\n2]\nc = 3\n";
        assert_eq!(&text[whole_lines(text, &(6..7))], "b = [");
        assert_eq!(&text[whole_lines(text, &(8..14))], "b = [\n2]");
        assert_eq!(&text[whole_lines(text, &(5..5))], "a = 1");
        assert_eq!(&text[whole_lines(text, &(22..22))], "");
    }
}
