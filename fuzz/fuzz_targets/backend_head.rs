//! `cargo fuzz run backend_head`: the property is `server_checks::backend_head` (fuzz/server_checks.rs), which the
//! test suite also runs over fuzz/corpus/backend_head and fuzz/regressions/backend_head (tests/fuzz_corpus.rs).
#![no_main]

#[path = "../server_checks.rs"]
mod server_checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| server_checks::backend_head(data));
