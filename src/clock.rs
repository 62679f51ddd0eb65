//! A monotonic process clock in milliseconds, cheap enough to read on the hot path and small
//! enough to keep in an atomic (ejection deadlines, recovery times).

use std::sync::OnceLock;
use std::time::Instant;

static START: OnceLock<Instant> = OnceLock::new();

/// Milliseconds since the process clock started; never 0, so 0 can mean "never".
pub fn now_ms() -> u64 {
    let start = *START.get_or_init(Instant::now);
    start.elapsed().as_millis() as u64 + 1
}
