//! `cargo fuzz run request_head`: the property is `server_checks::request_head` (fuzz/server_checks.rs), which the
//! test suite also runs over fuzz/corpus/request_head and fuzz/regressions/request_head (tests/fuzz_corpus.rs).
#![no_main]

#[path = "../server_checks.rs"]
mod server_checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| server_checks::request_head(data));
