//! `cargo fuzz run cookie`: the property is `checks::cookie` (fuzz/checks.rs), which the test suite
//! also runs over fuzz/corpus/cookie and fuzz/regressions/cookie (tests/fuzz_corpus.rs).
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::cookie(data));
