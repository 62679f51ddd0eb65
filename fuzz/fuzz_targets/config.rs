//! `cargo fuzz run config`: the property is `checks::config` (fuzz/checks.rs), which the test suite
//! also runs over fuzz/corpus/config and fuzz/regressions/config (tests/fuzz_corpus.rs).
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::config(data));
