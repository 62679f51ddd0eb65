//! `cargo fuzz run session_key`: the property is `checks::session_key` (fuzz/checks.rs), which the test suite
//! also runs over fuzz/corpus/session_key and fuzz/regressions/session_key (tests/fuzz_corpus.rs).
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::session_key(data));
