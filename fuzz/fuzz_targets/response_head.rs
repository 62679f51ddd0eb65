//! `cargo fuzz run response_head`: the property is `server_checks::response_head` (fuzz/server_checks.rs), which the
//! test suite also runs over fuzz/corpus/response_head and fuzz/regressions/response_head (tests/fuzz_corpus.rs).
#![no_main]

#[path = "../server_checks.rs"]
mod server_checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| server_checks::response_head(data));
