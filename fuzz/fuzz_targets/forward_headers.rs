//! `cargo fuzz run forward_headers`: the property is `checks::forward_headers` (fuzz/checks.rs), which the test suite
//! also runs over fuzz/corpus/forward_headers and fuzz/regressions/forward_headers (tests/fuzz_corpus.rs).
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::forward_headers(data));
