//! The fuzz targets' inputs replayed by the normal test suite: every file of
//! `fuzz/corpus/TARGET/` (the seed corpus) and `fuzz/regressions/TARGET/` (every input that
//! once failed) goes through the same check the fuzz target runs (`fuzz/checks.rs`).

#[path = "../fuzz/checks.rs"]
mod checks;
#[path = "../fuzz/server_checks.rs"]
mod server_checks;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// The files of `fuzz/{corpus,regressions}/target`, sorted.
fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for kind in ["corpus", "regressions"] {
        let Ok(dir) = std::fs::read_dir(root.join(kind).join(target)) else { continue };
        files.extend(dir.map(|e| e.expect("readable directory").path()).filter(|p| p.is_file()));
    }
    files.sort();
    files
}

/// Every input through `check`; all failures are reported, each with its file.
fn replay(target: &str, check: fn(&[u8])) {
    let files = inputs(target);
    assert!(!files.is_empty(), "no seed corpus for {target}");
    let failed: Vec<String> = files
        .iter()
        .filter_map(|file| {
            let data = std::fs::read(file).expect("readable input");
            catch_unwind(AssertUnwindSafe(|| check(&data))).err().map(|_| file.display().to_string())
        })
        .collect();
    assert!(failed.is_empty(), "{} of {} inputs failed: {failed:#?}", failed.len(), files.len());
}

#[test]
fn cookie() {
    replay("cookie", checks::cookie);
}

#[test]
fn session_key() {
    replay("session_key", checks::session_key);
}

#[test]
fn config() {
    replay("config", checks::config);
}

#[test]
fn forward_headers() {
    replay("forward_headers", checks::forward_headers);
}

#[test]
fn request_head() {
    replay("request_head", server_checks::request_head);
}

#[test]
fn response_head() {
    replay("response_head", server_checks::response_head);
}

#[test]
fn backend_head() {
    replay("backend_head", server_checks::backend_head);
}
