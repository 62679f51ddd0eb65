//! Table time: `u32` ticks of 1/16 s since the table was made, and conversions from and to
//! durations and milliseconds.

use std::time::{Duration, Instant};

/// Ticks per second: fine enough for sub-second test timeouts, coarse enough that a `u32`
/// lasts 8.5 years.
const TICKS_PER_SEC: u64 = 16;
pub(super) const NANOS_PER_TICK: u32 = (1_000_000_000 / TICKS_PER_SEC) as u32;
/// Ages are wrapping differences of ticks, meaningful below 2^31 ticks (4 years): longer
/// limits are clamped to that, and every pin is swept long before its age could wrap.
const MAX_AGE: u32 = i32::MAX as u32;

/// Table time: ticks since the table was made.
pub(super) struct Clock {
    pub start: Instant,
}

impl Clock {
    pub fn now(&self) -> u32 {
        let e = self.start.elapsed();
        // Wraps after 8.5 years; ages are wrapping differences, so that is harmless.
        (e.as_secs().wrapping_mul(TICKS_PER_SEC) as u32).wrapping_add(e.subsec_nanos() / NANOS_PER_TICK)
    }
}

/// Whole ticks in `d`, rounded up (so that nothing expires early), at most [`MAX_AGE`].
pub(super) fn ticks_ceil(d: Duration) -> u32 {
    let t = d.as_secs().saturating_mul(TICKS_PER_SEC) + u64::from(d.subsec_nanos().div_ceil(NANOS_PER_TICK));
    t.min(u64::from(MAX_AGE)) as u32
}

/// Milliseconds -> ticks, rounded down, at most [`MAX_AGE`].
pub(super) fn ms_to_ticks(ms: u64) -> u32 {
    (ms.saturating_mul(TICKS_PER_SEC) / 1000).min(u64::from(MAX_AGE)) as u32
}

pub(super) fn ticks_to_ms(t: u32) -> u64 {
    u64::from(t) * 1000 / TICKS_PER_SEC
}
